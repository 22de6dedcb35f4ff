//! # etlkit-core
//!
//! The traits every etlkit stage implements — [`Source`], [`Transform`], [`Sink`] — and the
//! [`Pipeline`] runtime that connects them with bounded channels, re-batches to
//! [`PipelineConfig::batch_size`], runs transforms in parallel on a dedicated pool and sink writes on
//! `workers` concurrent tasks, and returns [`LoadStats`]. This crate does no database or file-format
//! I/O; those live in the other `etlkit-*` crates.
//!
//! Arrow [`RecordBatch`](arrow_array::RecordBatch) is the unit that flows between stages.
//!
//! ```
//! use std::sync::Arc;
//! use arrow_array::{Int64Array, RecordBatch};
//! use etlkit_core::{MemorySink, MemorySource, Pipeline, PipelineConfig};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let batch = RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from_iter_values(0..10_000)) as _)])?;
//! let source = MemorySource::new(batch.schema(), vec![batch])?;
//! let sink = Arc::new(MemorySink::new());
//! let config = PipelineConfig { batch_size: 4096, workers: 2, ..Default::default() };
//! let stats = Pipeline::new(source, sink.clone()).config(config).run().await?;
//! assert_eq!(stats.rows_written, 10_000);
//! assert_eq!(stats.batches, 3); // 4096 + 4096 + 1808
//! assert_eq!(sink.committed_rows(), 10_000);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! Invariants the runtime keeps (see `docs/architecture.md`):
//! - every [`PipelineConfig`] knob is honoured; nothing is capped behind the user's back;
//! - memory is bounded by a few batches per stage whatever the input size;
//! - rows read + added = written + rejected + de-duplicated + filtered, or the run fails;
//! - the first error stops every stage promptly and is the error returned; no task outlives the run.

mod batch;
pub mod cast;
mod config;
mod context;
mod error;
mod origin;
mod pipeline;
mod sink;
mod source;
mod stats;
mod transform;

pub use batch::{Rebatcher, batch_bytes};
pub use cast::cast_strict;
pub use config::PipelineConfig;
pub use context::{Context, LogRejects, MemoryRejects, RejectSink, Rejected};
pub use error::{BoxError, Error, Report, Reported, Result, Stage};
pub use origin::{Origins, RowOrigin};
pub use pipeline::Pipeline;
pub use sink::{MemorySink, NullSink, Sink};
pub use source::{BatchStream, MemorySource, Source, StreamSource, TrackedStream};
pub use stats::{LoadStats, Progress};
pub use transform::{FnTransform, Transform, TransformProperties};

/// Re-exported so users and sibling crates agree on the Arrow version.
pub use arrow_array;
/// Re-exported so users and sibling crates agree on the Arrow version.
pub use arrow_schema;

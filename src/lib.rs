//! # etlkit
//!
//! Embeddable ETL that is fast because it is columnar and honest about its knobs: read CSV, Parquet or
//! PostgreSQL, fingerprint rows, resolve star-schema keys, and bulk-load into PostgreSQL (binary COPY)
//! or Neo4j-compatible graph servers (batched `UNWIND` over Bolt).
//!
//! This facade re-exports the workspace crates behind cargo features:
//!
//! | feature | crate | default |
//! |---|---|---|
//! | (always) | [`core`] — traits, pipeline runtime, config, stats, errors | yes |
//! | `csv`, `parquet` | `source` — streaming readers | yes |
//! | `hash` | `hash` — row fingerprints and de-duplication | yes |
//! | `postgres` | `postgres` — COPY sink, upsert, source, dimension store, star sink | yes |
//! | `replicate` | `replicate` — PostgreSQL → PostgreSQL schema replication | no |
//! | `datafusion` | `datafusion` — PostgreSQL as a DataFusion table, the row hash as SQL functions | no |
//! | `ballista` | `ballista` — the same on an Apache Ballista cluster (implies `datafusion`) | no |
//! | `dimcache` | `dimcache` — dimension key cache | no |
//! | `star` | `star` — star-schema jobs: files into dimensions and a fact table (the API for applications) | yes |
//! | `neo4j` | `neo4j` — graph sink | no |
//! | `transform` | `transform` — `DedupByKey`, `Explode`, `RowNumbers` | no |
//! | `graph` | `graph` — the graph job from any source (implies `neo4j`, `transform`) | no |
//!
//! The most used core items are also at the top level: [`Pipeline`], [`PipelineConfig`], [`Source`],
//! [`Transform`], [`Sink`], [`LoadStats`], [`Error`].
//!
//! The Arrow crates that etlkit's APIs take and return are re-exported under [`arrow`] at the exact
//! version etlkit uses, so a job needs no dependency but `etlkit` (and `tokio` to run it):
//!
//! ```
//! use std::sync::Arc;
//! use etlkit::arrow::array::{Array, BooleanArray, Int64Array, RecordBatch};
//! use etlkit::{FnTransform, MemorySink, MemorySource, Pipeline};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let batch = RecordBatch::try_from_iter([("qty", Arc::new(Int64Array::from(vec![3, -1, 7])) as _)])?;
//! let positive = FnTransform::same_schema("positive", |b: RecordBatch| {
//!     let qty = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
//!     let keep: BooleanArray = qty.iter().map(|v| v.map(|v| v > 0)).collect();
//!     Ok(etlkit::arrow::select::filter::filter_record_batch(&b, &keep)?)
//! });
//! let sink = Arc::new(MemorySink::new());
//! let stats = Pipeline::new(MemorySource::new(batch.schema(), vec![batch])?, sink.clone())
//!     .transform(positive)
//!     .run()
//!     .await
//!     .map_err(|e| e.report().to_string())?;
//! assert_eq!((stats.rows_written, stats.rows_filtered), (2, 1));
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

pub use etlkit_core as core;
pub use etlkit_core::{
    Context, Error, FnTransform, LoadStats, LogRejects, MemoryRejects, MemorySink, MemorySource, NullSink,
    Pipeline, PipelineConfig, Progress, RejectSink, Rejected, Report, Reported, Sink, Source, Stage,
    StreamSource, Transform, TransformProperties,
};

/// The Arrow crates of etlkit's public APIs, at the version etlkit is built with.
pub mod arrow {
    /// Buffers (`arrow-buffer`).
    pub use arrow_buffer as buffer;
    /// Casts and value parsing (`arrow-cast`).
    pub use arrow_cast as cast;
    /// Comparison and sorting kernels (`arrow-ord`).
    pub use arrow_ord as ord;
    /// Filter, take, concat and other selection kernels (`arrow-select`).
    pub use arrow_select as select;
    /// Arrays and [`RecordBatch`](array::RecordBatch) (`arrow-array`).
    pub use etlkit_core::arrow_array as array;
    /// Schemas, fields and data types (`arrow-schema`).
    pub use etlkit_core::arrow_schema as schema;
}

#[cfg(feature = "ballista")]
pub use etlkit_ballista as ballista;
#[cfg(feature = "datafusion")]
pub use etlkit_datafusion as datafusion;
#[cfg(feature = "dimcache")]
pub use etlkit_dimcache as dimcache;
#[cfg(feature = "graph")]
pub use etlkit_graph as graph;
#[cfg(feature = "hash")]
pub use etlkit_hash as hash;
#[cfg(feature = "neo4j")]
pub use etlkit_neo4j as neo4j;
#[cfg(feature = "postgres")]
pub use etlkit_postgres as postgres;
#[cfg(feature = "replicate")]
pub use etlkit_replicate as replicate;
#[cfg(any(feature = "csv", feature = "parquet"))]
pub use etlkit_source as source;
#[cfg(feature = "star")]
pub use etlkit_star as star;
#[cfg(feature = "transform")]
pub use etlkit_transform as transform;

/// The README's code blocks, compiled and run as doctests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

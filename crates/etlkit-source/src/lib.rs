//! # etlkit-source
//!
//! Streaming readers that turn CSV and Parquet files into Arrow `RecordBatch`es for an etlkit
//! [`Pipeline`](etlkit_core::Pipeline): [`ParquetSource`] and [`CsvSource`], both implementing
//! [`etlkit_core::Source`].
//!
//! - **Bounded memory.** Decoding runs on dedicated threads (never on the async executor) and hands
//!   batches over bounded channels; [`ReadMetrics::peak_in_flight`] shows the bound holds. Dropping
//!   the stream cancels the read.
//! - **Errors a person can act on.** Bad input fails with a [`SourceError`] naming the file, the
//!   1-based line (CSV: the physical line, header = line 1; Parquet: the row number within the
//!   file), the column and the value — or, with [`OnError::Reject`], the row goes to
//!   [`Context::reject`](etlkit_core::Context::reject) with the same details (and, for CSV, the row's
//!   original bytes) and reading continues (rows read = good + rejected). For Parquet, bad values
//!   are those that do not convert to a type pinned with `ParquetSourceConfig::column_types`, or
//!   that the conversion would change ([`etlkit_core::cast_strict`]: `2.5` into an integer, nanoseconds into
//!   microseconds).
//! - **Types**: CSV column types are inferred from the start of every file (or given, or pinned per
//!   column with `CsvSourceConfig::column_types`); timestamps parse straight into the column's unit,
//!   so years 0001–9999 load.
//! - **Inputs** are one file, a list, a directory or a glob ([`Input`]), read in sorted order.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use etlkit_core::{Context, Source};
//! use etlkit_source::{CsvSource, CsvSourceConfig, Input};
//! use futures::StreamExt;
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("trips.csv");
//! std::fs::write(&path, "id,fare,pickup\n1,2.5,2024-01-01 10:00:00\n2,NA,01/02/2024 11:30:00\n")?;
//!
//! let source = CsvSource::open(CsvSourceConfig { input: Input::File(path), ..Default::default() })?;
//! let schema = source.schema();
//! assert_eq!(schema.field(0).data_type(), &arrow_schema::DataType::Int64);
//! let batches: Vec<_> = futures::executor::block_on(Box::new(source).into_stream(Context::default()).collect());
//! let batch = batches.into_iter().next().unwrap()?;
//! assert_eq!(batch.num_rows(), 2);
//! assert_eq!(batch.column(1).null_count(), 1); // `NA` is a NULL marker by default
//! # Ok(()) }
//! ```

#[cfg(feature = "csv")]
mod csv_source;
mod error;
mod files;
mod input;
mod metrics;
#[cfg(feature = "parquet")]
mod parquet_source;
mod rejects;

#[cfg(feature = "csv")]
pub use csv_source::{CSV_EXTENSIONS, CsvSource, CsvSourceConfig};
pub use error::{BadRow, OnError, Result, SourceError};
pub use files::{FileFormat, OpenOptions, list_inputs, open_file, run_each};
pub use input::Input;
pub use metrics::ReadMetrics;
#[cfg(feature = "parquet")]
pub use parquet_source::{PARQUET_EXTENSIONS, ParquetSource, ParquetSourceConfig, Shard};
pub use rejects::{FileRejects, FileRejectsConfig};

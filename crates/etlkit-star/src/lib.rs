//! # etlkit-star
//!
//! Star-schema jobs as a library: declare the input files, the target columns they map onto, the
//! row hash, the dimensions (with roles, attribute lookups, an unknown member and a ready date
//! dimension) and the fact table as plain config structs, then [`StarJob::run`] loads them into
//! PostgreSQL and returns a [`StarReport`] of that run. The same job run twice inserts nothing the
//! second time.
//!
//! This is the API boundary for applications: it composes `etlkit-source` (reading any mix of CSV
//! and Parquet files), `etlkit-hash` (row hashes, in-memory de-duplication), `etlkit-dimcache`
//! (surrogate keys) and `etlkit-postgres` (dimension tables, and `PgStarSink`, which commits each
//! batch's rows and facts in one transaction through the one binary-COPY path).
//!
//! - **Inputs** ([`InputsConfig`], [`TargetColumn`]): files, directories and globs; each file read by
//!   its own pipeline, its columns matched to the target columns by name or alias (ignoring case and
//!   underscores by default) and cast strictly; bad rows rejected or fatal. A target column no file
//!   column matches is an error unless declared optional, and then the report lists which files
//!   lacked it.
//! - **De-duplication** ([`RowHash`], [`DedupStrategy`]): a seen-set seeded from the table, split into
//!   digest-range passes when it does not fit the memory budget, or a merge in the database.
//! - **Rows**: the fact table alone (the default), plus a normalized rows table (every target column,
//!   written with the facts), or a rows view that reads every target column back from the fact table
//!   and its dimensions, so that each value is stored once.
//! - **Bulk loads** ([`BulkPolicy`]): drop and rebuild the row-hash UNIQUE constraint and the other
//!   indexes, pause autovacuum, under an exclusive advisory lock held on a session every batch checks
//!   before it commits; a crashed bulk load is restored by the next run.
//!
//! ```no_run
//! use etlkit_star::{DimensionConfig, FactConfig, InputsConfig, StarJob, StarJobConfig, TargetColumn};
//! use etlkit_star::arrow_schema::{DataType, Field};
//! use etlkit_postgres::{DatabaseUrl, TableRef};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let job = StarJob::new(StarJobConfig {
//!     inputs: InputsConfig { inputs: vec!["orders/*.csv".into()], ..Default::default() },
//!     columns: vec![
//!         TargetColumn::new("order_id", DataType::Int64),
//!         TargetColumn::new("customer", DataType::Utf8).aliases(["client"]),
//!         TargetColumn::new("ordered_at", DataType::Timestamp(etlkit_star::arrow_schema::TimeUnit::Microsecond, None)),
//!         TargetColumn::new("amount", DataType::Float64),
//!     ],
//!     dimensions: vec![
//!         DimensionConfig::new("dim_customer", vec![Field::new("customer", DataType::Utf8, false)], "customer_key")
//!             .role(["customer"], "customer_key"),
//!         DimensionConfig::date("dim_date").role(["ordered_at"], "order_date_key"),
//!     ],
//!     fact: FactConfig {
//!         table: TableRef::new("fact_order"),
//!         measures: vec!["amount".into()],
//!         degenerate: vec!["order_id".into()],
//!         foreign_keys: true,
//!     },
//!     ..Default::default()
//! })?;
//! let report = job.run(&DatabaseUrl::new("postgres://etl@localhost/shop")).await?;
//! println!("{}", report.line());
//! # Ok(()) }
//! ```

mod bulk;
mod dedup;
mod dimensions;
mod error;
mod inputs;
mod job;
mod report;

pub use bulk::{BulkPolicy, BulkWhen};
pub use dedup::{DedupStrategy, MAX_DEDUP_PASSES, RowHash};
pub use dimensions::{AttributeLookup, DimensionConfig, DimensionKind, DimensionRole};
pub use error::{Result, StarError};
pub use inputs::{InputsConfig, MissingColumns, NameMatching, TargetColumn};
pub use job::{FactConfig, StarJob, StarJobConfig};
pub use report::StarReport;

/// Re-exported: column types of [`TargetColumn`] and dimension keys.
pub use arrow_schema;
/// Re-exported: hash algorithms of [`RowHash`].
pub use etlkit_hash::Algorithm;
/// Re-exported: the database URL and table names the job takes.
pub use etlkit_postgres::{DatabaseUrl, TableRef};
/// Re-exported: inputs and the bad-row policy of [`InputsConfig`].
pub use etlkit_source::{Input, OnError, OpenOptions};

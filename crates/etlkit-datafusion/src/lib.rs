//! # etlkit-datafusion
//!
//! etlkit inside [Apache DataFusion](https://datafusion.apache.org): PostgreSQL as a SQL table whose
//! scans are partitioned binary `COPY` reads of one snapshot and whose `INSERT INTO` stages each
//! input partition by binary `COPY` in parallel and commits them in one transaction ([`PgTable`]),
//! and etlkit's row fingerprint as SQL functions ([`etlkit_row_hash`](udf::ROW_HASH) and its BLAKE3
//! variant). It builds on etlkit-postgres (catalog types, [`PgSource`](etlkit_postgres::PgSource)'s
//! decoder, [`CopyEncoder`](etlkit_postgres::CopyEncoder), the one COPY-in path) and etlkit-hash
//! ([`RowHasher`](etlkit_hash::RowHasher)). Nothing else in etlkit depends on this crate; the facade
//! exposes it behind the `datafusion` feature. See `docs/datafusion.md`.
//!
//! ```no_run
//! use etlkit_datafusion::{PgConnector, PgTable, PgTableOptions};
//! use etlkit_datafusion::datafusion::prelude::*;
//! use etlkit_postgres::{DatabaseUrl, TableRef};
//! use std::sync::Arc;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let ctx = SessionContext::new();
//! etlkit_datafusion::register_functions(&ctx);
//! let pg = PgConnector::new("default", DatabaseUrl::new("postgres://etl@127.0.0.1/etl"), 8);
//! let trips = PgTable::new(pg, TableRef::new("trips"), PgTableOptions::default()).await?;
//! ctx.register_table("trips", Arc::new(trips))?;
//! ctx.register_parquet("raw", "trips.parquet", ParquetReadOptions::default()).await?;
//! ctx.sql("INSERT INTO trips SELECT * FROM raw").await?.collect().await?;
//! # Ok(()) }
//! ```

pub mod codec;
mod connector;
mod error;
mod graph;
mod scan;
mod table;
pub mod udf;
mod write;

pub use connector::{PgConnector, url_variable};
pub use error::DfError;
pub use graph::{GraphInsertExec, GraphTable, GraphTarget};
pub use scan::{PgScanExec, ScanPartitioning, SnapshotHolder};
pub use table::{PgTable, PgTableOptions};
pub use udf::{register_row_hash, row_hash_blake3_udf, row_hash_udf};
pub use write::{CommitProtocol, PgCommitExec, PgWriteExec, WriteMode, WriteTarget, recover_prepared};

/// Re-exported: the DataFusion this crate is built with.
pub use datafusion;

/// Registers etlkit's SQL functions on a session context.
pub fn register_functions(ctx: &datafusion::prelude::SessionContext) {
    ctx.register_udf(row_hash_udf());
    ctx.register_udf(row_hash_blake3_udf());
}

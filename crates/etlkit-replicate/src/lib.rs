//! # etlkit-replicate
//!
//! Database replication: every table of a schema (or a chosen few) streamed from one PostgreSQL
//! database into another, in foreign-key order, tables in parallel, with verification and resume.
//! Built on `etlkit-postgres` (connections, identifiers, its one COPY-in path and its
//! [`RetryPolicy`]); [`ReplicationError`] is this crate's one error type.
//!
//! ```no_run
//! use etlkit_postgres::DatabaseUrl;
//! use etlkit_replicate::{ReplicateConfig, TableProgress, replicate};
//!
//! # async fn run() -> Result<(), etlkit_replicate::ReplicationError> {
//! let config = ReplicateConfig {
//!     source: DatabaseUrl::new("postgres://etl@db1/shop"),
//!     target: DatabaseUrl::new("postgres://etl@db2/shop_copy"),
//!     verify: true,
//!     ..Default::default()
//! };
//! let report = replicate(&config, &|p: &TableProgress<'_>| {
//!     println!("{} {} rows ({:.0} rows/s)", p.table, p.rows, p.rows_per_second())
//! })
//! .await?;
//! println!("{} rows in {:?}, verified: {}", report.rows, report.elapsed, report.verified);
//! # Ok(()) }
//! ```
//!
//! ## What [`replicate`] does, in order
//!
//! 1. **Snapshot, catalog and locks.** A coordinator session on the source opens a `REPEATABLE READ`
//!    transaction and exports its snapshot (`pg_export_snapshot`); every table is read — and verified —
//!    in that one snapshot, so the copy is consistent across tables even while the source is written
//!    to (as `pg_dump -j` does). Tables, columns (types, defaults, identity with its sequence options,
//!    generated columns, collations), primary keys, unique, check, exclusion and foreign-key
//!    constraints, indexes and the sequences behind defaults are read from the catalog. Then, as
//!    `pg_dump` does, the coordinator locks every selected table in `ACCESS SHARE` mode and holds the
//!    locks until the run ends: `TRUNCATE` and table-rewriting `ALTER TABLE` are not MVCC-safe (a
//!    table truncated after the snapshot looks empty in it), so they wait for the run instead. A lock
//!    not granted within [`ReplicateConfig::lock_timeout`], or a table truncated or rewritten between
//!    the snapshot and its lock, is [`ReplicationError::SourceBusy`] naming the table (run again).
//!    Every source session runs with `row_security = off`, and tables where row-level security applies
//!    to the source role are refused ([`ReplicationError::RowSecurity`]): a copy would hold only the
//!    rows the policies show, and verification, reading as the same role, would agree with it.
//! 2. **Plan.** Foreign keys between the selected tables give dependency levels (topological order);
//!    a foreign-key cycle between tables becomes one unit of the plan. A table starts once every table
//!    it references is finished (a superset of "level by level"), biggest first, at most `workers` at a
//!    time. So at any moment the finished tables reference only finished tables.
//! 3. **What to copy, and checks before writing.** Every selected table is copied, except — with
//!    [`ReplicateConfig::resume`] — the ones the ledger records as finished. A table that is copied is
//!    emptied first, so every selected table referencing it (by a foreign key in the source or the
//!    target) is copied too. A foreign key the target enforces inside a cycle of tables to copy is
//!    dropped (post-data re-creates it) when an earlier run replicated the whole cycle (a re-sync);
//!    otherwise the cycle cannot be loaded table by table and [`ReplicationError::ForeignKeyCycle`]
//!    is returned. A table that tables outside the run reference with rows of theirs cannot be
//!    emptied: [`ReplicationError::StillReferenced`]. Both before anything is written.
//! 4. **Pre-data** (one transaction): the schema, sequences used by defaults and every missing table
//!    (columns, defaults, identity, `NOT NULL`, validated `CHECK`s) are created; existing tables are
//!    used as they are. The tables to copy are forgotten by the ledger and emptied: one `TRUNCATE`
//!    of all of them, except tables that a table outside the run references, which are emptied with
//!    `DELETE` afterwards, referencing tables first.
//! 5. **Data.** Per table, one target transaction: `TRUNCATE` again (or `DELETE` when another
//!    table's foreign key references it), `COPY ... FROM STDIN (FORMAT binary, FREEZE)` fed straight
//!    from the source's `COPY (SELECT ...) TO STDOUT (FORMAT binary)` — bytes are forwarded, never
//!    decoded, through `etlkit-postgres`'s COPY-in path ([`etlkit_postgres::copy_in`]) — then the
//!    ledger row, then `COMMIT`. Memory per table in flight: about five `chunk_bytes` buffers. A
//!    table whose copy fails with a retryable error (a lost connection, a deadlock) is copied again
//!    in a new transaction from the same snapshot, as [`ReplicateConfig::retry`] allows.
//! 6. **Post-data**: primary keys, unique and exclusion constraints, unvalidated checks and secondary
//!    indexes (in parallel across `workers`), then foreign keys (in parallel; deadlocks retried as
//!    [`ReplicateConfig::retry`] allows); each
//!    only when the target lacks an object of that name. Building indexes and checking foreign keys
//!    once after the load is much cheaper than maintaining them row by row — and it is what lets
//!    cycles load. Finally sequences are set to the source's values.
//! 7. **Verify** (optional): per table, row count and an order-independent checksum computed by each
//!    server (see [`Checksum`]) must match. A run where any table differs fails with
//!    [`ReplicationError::VerificationFailed`], naming those tables and carrying the whole report.
//!
//! ## Resume
//!
//! The ledger table (default `etlkit.replication_ledger` in the target: a schema of its own, not the
//! user's `public`) records each finished table — with the row count and a content fingerprint of
//! the rows copied — in the same transaction as its data. A run that dies midway leaves unfinished
//! tables rolled back; the next run copies them from scratch and skips the finished ones whose
//! source is unchanged. To know that, a resumed run reads every finished table from the source once
//! more (binary `COPY` in its snapshot, fingerprinted in this process, nothing written — about the
//! reading half of a copy) and compares row count and fingerprint with the ledger: a table whose
//! source changed is copied again ([`TableStatus::Recopied`]), and so are the selected tables that
//! reference it. The fingerprint is the sum of a 64-bit hash of every tuple's binary `COPY` bytes:
//! independent of row order, sensitive to any value (NULLs included) — a change detector, not a
//! cryptographic one. It sees changes to the source only; a target changed behind the ledger's back
//! is what `verify` catches. Post-data and sequences are idempotent and run every time. With
//! [`ReplicateConfig::resume`] set to `false`, every selected table is emptied and copied again — a
//! full re-sync, whatever the foreign keys between the tables.
//!
//! ## Limits
//!
//! Ordinary tables only: partitioned tables, partitions and tables in an inheritance hierarchy
//! (parents and children) are refused by name. On tables with row-level security the source role
//! must bypass it: a superuser, a role with `BYPASSRLS`, or the tables' owner when they do not
//! `FORCE ROW LEVEL SECURITY`. While a run goes on, `TRUNCATE`, `ALTER TABLE`, `VACUUM FULL` and
//! other exclusive locks on its source tables wait for it. User-defined types (enums, domains),
//! extensions, views, functions, triggers, grants and comments are not created — create
//! them in the target first. The target schema has the source schema's name.

mod config;
mod empty;
mod error;
mod ledger;
mod pipe;
mod plan;
mod report;
mod run;
mod schema;
mod verify;

pub use config::ReplicateConfig;
pub use error::{PostDataFailed, ReplicationError, Result};
pub use report::{ReplicationReport, TableProgress, TableReport, TableStatus, Verification};
pub use run::{pipe_table, replicate};
pub use verify::Checksum;

/// Re-exported: the retry policy of [`ReplicateConfig::retry`].
pub use etlkit_postgres::RetryPolicy;

/// Quotes and joins column names with `, `.
fn column_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names.into_iter().map(etlkit_postgres::quote_ident).collect::<Vec<_>>().join(", ")
}

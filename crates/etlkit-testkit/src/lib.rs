//! # etlkit-testkit
//!
//! Throwaway **real** servers and test data for etlkit's tests, examples and benches (dev-dependency
//! only; etlkit tests never mock a database).
//!
//! - [`PgServer`]: a PostgreSQL cluster started on demand (one per test process, shared), with
//!   [`PgServer::fresh_database`] giving each test its own empty database.
//! - [`BoltServer`]: an ArcadeDB server speaking Bolt (Neo4j protocol 4.4), started from the
//!   `arcadedb-embedded` Python package, with [`BoltServer::fresh_database`].
//! - [`taxi`]: NYC TLC yellow-trip data (19 columns, TLC 2024 Parquet types), deterministic per seed, with
//!   NULLs and planted duplicates; [`taxi::write_parquet`] / [`taxi::write_csv`] put it in files.
//!
//! ```no_run
//! # fn main() -> etlkit_testkit::Result<()> {
//! let pg = etlkit_testkit::PgServer::start()?; // blocking; fine inside #[tokio::test]
//! let url = pg.fresh_database()?; // postgres://postgres@127.0.0.1:PORT/etl_t_0
//! let bolt = etlkit_testkit::BoltServer::start()?;
//! let db = bolt.fresh_database()?; // BoltDatabase { uri, user, password, name }
//! # let _ = (url, db); Ok(()) }
//! ```
//!
//! ## Using servers you already run
//!
//! | variable | effect |
//! |---|---|
//! | `DATABASE_URL` | [`PgServer`] uses this server (`postgres://user[:pw]@host:port/db`) instead of starting one; databases it creates are dropped when the handle is dropped. |
//! | `BOLT_URI`, `BOLT_USER`, `BOLT_PASSWORD` | [`BoltServer`] uses this Bolt server. |
//! | `BOLT_HTTP_URL` | with `BOLT_URI`: ArcadeDB's HTTP API (`http://host:port`) used to create databases; without it every test gets the database `BOLT_DATABASE` (default `neo4j`). |
//! | `ETLKIT_ARCADEDB_DIR` | an ArcadeDB directory with `jars/` (and `jre/`) instead of the Python package. |
//! | `ETLKIT_ARCADEDB_HEAP` | JVM heap of the throwaway ArcadeDB (default `1g`). |
//!
//! `scripts/pg-up` and `scripts/bolt-up` start the same servers for a person and print these variables.
//! `scripts/setup` installs PostgreSQL and `arcadedb-embedded` when missing.
//!
//! ## How servers are found, started and stopped
//!
//! - **PostgreSQL**: binaries from `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`, else
//!   `PATH`. `initdb` runs once per process (trust auth, UTF8, locale C) into a template directory that is
//!   copied for each start (the template stays until the process exits). The server listens on 127.0.0.1 only, on a free port (retried on collision),
//!   with its Unix socket in its own temp dir. When the process runs as root, `initdb` and `postgres` run
//!   as the OS user `postgres`.
//! - **ArcadeDB**: `python3 -c 'import arcadedb_embedded'` locates the package; its bundled JRE runs
//!   `com.arcadedb.server.ArcadeDBServer` with the Bolt plugin, Bolt and HTTP bound to 127.0.0.1 on free
//!   ports, a random root password and a temp root directory.
//! - **No orphans**: each server runs under a small `/bin/sh` watchdog holding the read end of a pipe
//!   whose write end only this process holds. Dropping the last handle closes it — and so does the
//!   kernel when the process ends in *any* way (statics never dropped, `SIGKILL`, abort). The watchdog
//!   then stops the server (PostgreSQL fast shutdown / JVM `SIGTERM`, `SIGKILL` after 20 s) and deletes its
//!   directory. Dropping a handle blocks until the server is gone.
//! - **Sharing**: [`PgServer::start`] / [`BoltServer::start`] return the process's shared server while any
//!   handle to it is alive, and start a new one otherwise. Keep a handle in a
//!   `static LazyLock<Arc<PgServer>>` to keep one server for a whole test binary.
//!   [`PgServer::start_dedicated`] / [`BoltServer::start_dedicated`] give a server of one's own.
//!
//! ## The throwaway PostgreSQL is tuned for speed, not durability
//!
//! It runs with the settings in [`postgres::THROWAWAY_SETTINGS`]: `fsync=off`, `synchronous_commit=off`,
//! `full_page_writes=off`, `shared_buffers=256MB`, `max_connections=200`, `max_wal_size=8GB`,
//! `checkpoint_timeout=30min`, `wal_level=logical` (for replication tests), `max_prepared_transactions=64`
//! (for two-phase `INSERT INTO` tests). Benchmarks run against it must
//! say so; numbers against a durable server will be lower.

mod bolt;
mod error;
mod lifeline;
pub mod postgres;
mod process;
pub mod taxi;
pub mod users;

pub use bolt::{
    BoltDatabase, BoltServer, DEFAULT_DATABASE as BOLT_DEFAULT_DATABASE, DEFAULT_HEAP as BOLT_DEFAULT_HEAP,
};
pub use error::{BoxError, Error, Result};
pub use postgres::PgServer;
pub use process::{Process, free_port};

/// Runs `fut` to completion on a private current-thread Tokio runtime on a helper thread, so blocking
/// callers inside another runtime (e.g. `#[tokio::test]`) do not trip Tokio's nested-runtime check.
pub(crate) fn block_on<F>(fut: F) -> F::Output
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cannot build a Tokio runtime")
                .block_on(fut)
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A few bits that differ between runs (sub-second clock), for names on shared external servers.
pub(crate) fn unique_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
}

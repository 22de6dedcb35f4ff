//! [`PgRejects`]: a [`RejectSink`] that stores rejected rows in a PostgreSQL table.

use std::sync::Mutex;

use async_trait::async_trait;
use etlkit_core::{RejectSink, Rejected, Stage};
use sqlx::{AssertSqlSafe, PgPool};

use crate::error::{PgError, Result};
use crate::identifier::{TableRef, quote_ident};

/// The stage name [`PgRejects`] errors carry inside [`etlkit_core::Error`].
const STAGE_NAME: &str = "postgres rejects";

/// Rows per `INSERT` statement inside a flush's one transaction (each statement binds seven
/// parameters, six of them arrays of this many elements).
const ROWS_PER_INSERT: usize = 10_000;

/// Bytes counted per buffered row on top of its strings and raw bytes (the `Rejected` struct and
/// its allocations), for [`PgRejectsConfig::max_buffered_bytes`].
const ROW_OVERHEAD_BYTES: usize = 128;

/// Configuration of a [`PgRejects`]. Build with `PgRejectsConfig { table, ..Default::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgRejectsConfig {
    /// The table rejected rows go to. Default: `etlkit_rejects` (through `search_path`).
    pub table: TableRef,
    /// Create the table when it does not exist (columns in [`PgRejects`]). Default: `true`.
    pub create_table: bool,
    /// Stored in the `run_label` column of every row, e.g. a job name and date, to tell runs
    /// apart. Must not contain a NUL byte. Default: `None` (NULL).
    pub run_label: Option<String>,
    /// The most rejected rows held in memory before [`flush`](RejectSink::flush) stores them: one
    /// more fails the run (so this is also a limit on rejects per run). Default: 100 000.
    pub max_buffered_rows: usize,
    /// The most bytes of rejected rows (strings, raw bytes and 128 bytes a row) held in memory
    /// before [`flush`](RejectSink::flush): a row that would pass it fails the run. Default:
    /// 256 MiB.
    pub max_buffered_bytes: usize,
}

impl Default for PgRejectsConfig {
    fn default() -> Self {
        PgRejectsConfig {
            table: TableRef::new("etlkit_rejects"),
            create_table: true,
            run_label: None,
            max_buffered_rows: 100_000,
            max_buffered_bytes: 256 << 20,
        }
    }
}

impl PgRejectsConfig {
    /// Checks the configuration: a table name PostgreSQL keeps whole, limits above zero, no NUL
    /// byte in `run_label`.
    pub fn validate(&self) -> Result<()> {
        self.table.validate("table")?;
        if self.max_buffered_rows == 0 {
            return Err(PgError::InvalidConfig {
                field: "max_buffered_rows",
                reason: "must be at least 1".into(),
            });
        }
        if self.max_buffered_bytes == 0 {
            return Err(PgError::InvalidConfig {
                field: "max_buffered_bytes",
                reason: "must be at least 1".into(),
            });
        }
        if self.run_label.as_deref().is_some_and(|l| l.contains('\0')) {
            return Err(PgError::InvalidConfig {
                field: "run_label",
                reason: "contains a NUL byte, which PostgreSQL text cannot store".into(),
            });
        }
        Ok(())
    }
}

/// A [`RejectSink`] that keeps rejected rows in memory and inserts them into a PostgreSQL table
/// when the pipeline flushes it (once, before the sink commits), all in one transaction: a run's
/// rejects are stored whole or not at all, and a run whose rejects cannot be stored commits no
/// data.
///
/// The table (created when missing and [`PgRejectsConfig::create_table`] is set):
///
/// ```sql
/// CREATE TABLE IF NOT EXISTS etlkit_rejects (
///     origin      text NOT NULL,          -- file path, table or stage name
///     line        bigint,                 -- 1-based physical line (header = line 1) or row number
///     "column"    text,                   -- the offending column
///     value       text,                   -- the offending value
///     reason      text NOT NULL,          -- why the row was rejected
///     raw         bytea,                  -- the row's original bytes, exactly
///     run_label   text,                   -- PgRejectsConfig::run_label
///     rejected_at timestamptz NOT NULL DEFAULT now()  -- when the flush stored the row
/// )
/// ```
///
/// - `raw` keeps the input bytes exactly, whatever their encoding. PostgreSQL `text` cannot hold a
///   NUL byte, so a NUL in `origin`, `column`, `value` or `reason` is stored as U+FFFD (the
///   `raw` bytes still have it).
/// - Memory: [`reject`](RejectSink::reject) only appends to a buffer behind a mutex (cheap from
///   any thread). The buffer is bounded by [`PgRejectsConfig::max_buffered_rows`] and
///   [`PgRejectsConfig::max_buffered_bytes`]; a reject past either fails the run (nothing is
///   committed) with [`PgError::InvalidConfig`] naming the limit.
/// - [`flush`](RejectSink::flush) with nothing buffered does not touch the database. It inserts
///   through bind parameters only (`INSERT … SELECT … FROM UNNEST($1::text[], …)`,
///   10 000 rows a statement, one transaction), and the table name is quoted. When it fails, the
///   rows stay buffered, so a later `flush` can store them.
/// - [`prepare`](PgRejects::prepare) creates the table and checks that it can be written before a
///   run, so an unusable table fails at once rather than after the whole input has been read.
///
/// Errors are [`PgError`]s inside an [`etlkit_core::Error`] for the stage named
/// `postgres rejects`.
///
/// ```no_run
/// use std::sync::Arc;
/// use etlkit_core::{MemorySource, Pipeline};
/// use etlkit_postgres::{DatabaseUrl, PgCopySink, PgRejects, PgRejectsConfig, PgSinkConfig, TableRef, connect};
/// # async fn run(source: MemorySource) -> Result<(), Box<dyn std::error::Error>> {
/// let pool = connect(&DatabaseUrl::new("postgres://postgres@127.0.0.1/etl"), 3, "etlkit").await?;
/// let rejects = PgRejects::new(pool.clone(), PgRejectsConfig {
///     table: TableRef::qualified("etl", "trip_rejects"),
///     run_label: Some("trips 2024-01".into()),
///     ..Default::default()
/// })?;
/// rejects.prepare().await?; // fail now, not after the load, if the table is unusable
/// let sink = Arc::new(PgCopySink::new(pool, PgSinkConfig { table: TableRef::new("trips"), ..Default::default() })?);
/// let stats = Pipeline::new(source, sink).rejects(Arc::new(rejects)).run().await?;
/// println!("{} rows rejected, stored in etl.trip_rejects", stats.rows_rejected);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PgRejects {
    pool: PgPool,
    config: PgRejectsConfig,
    buffer: Mutex<Buffer>,
}

#[derive(Debug, Default)]
struct Buffer {
    rows: Vec<Rejected>,
    bytes: usize,
}

fn row_bytes(row: &Rejected) -> usize {
    ROW_OVERHEAD_BYTES
        + row.origin.len()
        + row.column.as_ref().map_or(0, String::len)
        + row.value.as_ref().map_or(0, String::len)
        + row.reason.len()
        + row.raw.as_ref().map_or(0, Vec::len)
}

/// Text PostgreSQL can store: NUL bytes become U+FFFD.
fn pg_text(s: &str) -> String {
    if s.contains('\0') { s.replace('\0', "\u{fffd}") } else { s.to_owned() }
}

impl PgRejects {
    /// A reject sink writing to `config.table` through `pool`. Validates the configuration; does
    /// not connect (see [`prepare`](PgRejects::prepare)).
    pub fn new(pool: PgPool, config: PgRejectsConfig) -> Result<Self> {
        config.validate()?;
        Ok(PgRejects { pool, config, buffer: Mutex::new(Buffer::default()) })
    }

    /// The table rejected rows go to.
    pub fn table(&self) -> &TableRef {
        &self.config.table
    }

    /// Rows buffered and not yet stored.
    pub fn buffered_rows(&self) -> usize {
        self.lock().rows.len()
    }

    /// Creates the table when missing (if [`PgRejectsConfig::create_table`]) and checks that rows
    /// can be inserted into it (a zero-row `INSERT` in a transaction that is rolled back), so an
    /// incompatible or missing table is reported before a run starts. Optional: `flush` does the
    /// same work itself.
    pub async fn prepare(&self) -> Result<()> {
        let quoted = self.config.table.quoted();
        if self.config.create_table {
            let mut conn = self.pool.acquire().await.map_err(|e| PgError::db("connecting", &quoted, e))?;
            self.create_table(&mut conn).await?;
        }
        let mut tx = self.pool.begin().await.map_err(|e| PgError::db("connecting", &quoted, e))?;
        self.insert(&mut tx, &[]).await?;
        tx.rollback().await.map_err(|e| PgError::db("rolling back the reject table check", &quoted, e))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        // The buffer is a plain Vec and a counter: a panic elsewhere cannot leave it inconsistent.
        self.buffer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn create_table(&self, conn: &mut sqlx::PgConnection) -> Result<()> {
        let quoted = self.config.table.quoted();
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {quoted} ({} text NOT NULL, {} bigint, {} text, {} text, \
             {} text NOT NULL, {} bytea, {} text, {} timestamptz NOT NULL DEFAULT now())",
            quote_ident("origin"),
            quote_ident("line"),
            quote_ident("column"),
            quote_ident("value"),
            quote_ident("reason"),
            quote_ident("raw"),
            quote_ident("run_label"),
            quote_ident("rejected_at"),
        );
        match sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn).await {
            Ok(_) => Ok(()),
            // Two runs creating the table at once: the loser sees duplicate_table (42P07) or a
            // unique violation on the catalog (23505); the table exists either way.
            Err(sqlx::Error::Database(db)) if matches!(db.code().as_deref(), Some("42P07" | "23505")) => {
                Ok(())
            }
            Err(e) => Err(PgError::db("creating the reject table", quoted, e)),
        }
    }

    /// Inserts `rows` (any number, possibly none) on `conn`, `ROWS_PER_INSERT` a statement. An
    /// error naming a row counts rows from 1 in the order they were rejected.
    async fn insert(&self, conn: &mut sqlx::PgConnection, rows: &[Rejected]) -> Result<()> {
        let quoted = self.config.table.quoted();
        let sql = format!(
            "INSERT INTO {quoted} ({}, {}, {}, {}, {}, {}, {}) \
             SELECT o, l, c, v, r, w, $7::text \
             FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::bytea[]) \
             AS u(o, l, c, v, r, w)",
            quote_ident("origin"),
            quote_ident("line"),
            quote_ident("column"),
            quote_ident("value"),
            quote_ident("reason"),
            quote_ident("raw"),
            quote_ident("run_label"),
        );
        let empty: [Rejected; 0] = [];
        let chunks: Vec<&[Rejected]> =
            if rows.is_empty() { vec![&empty[..]] } else { rows.chunks(ROWS_PER_INSERT).collect() };
        for (first, chunk) in chunks.into_iter().enumerate().map(|(i, c)| (i * ROWS_PER_INSERT, c)) {
            let mut origin = Vec::with_capacity(chunk.len());
            let mut line = Vec::with_capacity(chunk.len());
            let mut column = Vec::with_capacity(chunk.len());
            let mut value = Vec::with_capacity(chunk.len());
            let mut reason = Vec::with_capacity(chunk.len());
            let mut raw = Vec::with_capacity(chunk.len());
            for (i, row) in chunk.iter().enumerate() {
                origin.push(pg_text(&row.origin));
                line.push(match row.line {
                    Some(l) => Some(i64::try_from(l).map_err(|_| PgError::InvalidValue {
                        origin: None,
                        row: (first + i + 1) as u64,
                        column: "line".into(),
                        value: l.to_string(),
                        reason: "is out of range for bigint".into(),
                    })?),
                    None => None,
                });
                column.push(row.column.as_deref().map(pg_text));
                value.push(row.value.as_deref().map(pg_text));
                reason.push(pg_text(&row.reason));
                raw.push(row.raw.clone());
            }
            sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(origin)
                .bind(line)
                .bind(column)
                .bind(value)
                .bind(reason)
                .bind(raw)
                .bind(self.config.run_label.clone())
                .execute(&mut *conn)
                .await
                .map_err(|e| PgError::db("inserting rejected rows", quoted.clone(), e))?;
        }
        Ok(())
    }

    /// Stores `rows` in one transaction (creating the table first when configured).
    async fn store(&self, rows: &[Rejected]) -> Result<()> {
        let quoted = self.config.table.quoted();
        let mut tx = self.pool.begin().await.map_err(|e| PgError::db("connecting", &quoted, e))?;
        if self.config.create_table {
            self.create_table(&mut tx).await?;
        }
        self.insert(&mut tx, rows).await?;
        tx.commit().await.map_err(|e| PgError::db("committing rejected rows", quoted, e))
    }
}

#[async_trait]
impl RejectSink for PgRejects {
    fn reject(&self, row: Rejected) -> etlkit_core::Result<()> {
        let size = row_bytes(&row);
        let mut buffer = self.lock();
        let (max_rows, max_bytes) = (self.config.max_buffered_rows, self.config.max_buffered_bytes);
        let limit = if buffer.rows.len() >= max_rows {
            Some(("max_buffered_rows", format!("{max_rows} rejected rows are already buffered")))
        } else if buffer.bytes + size > max_bytes {
            Some((
                "max_buffered_bytes",
                format!("{} bytes of rejected rows are already buffered", buffer.bytes),
            ))
        } else {
            None
        };
        if let Some((field, what)) = limit {
            let reason = format!(
                "reached: {what} for {} (the next one is {row}); raise the limit or fix the input",
                self.config.table
            );
            return Err(PgError::InvalidConfig { field, reason }.into_stage(Stage::Sink, STAGE_NAME));
        }
        buffer.rows.push(row);
        buffer.bytes += size;
        Ok(())
    }

    async fn flush(&self) -> etlkit_core::Result<()> {
        let rows = {
            let mut buffer = self.lock();
            buffer.bytes = 0;
            std::mem::take(&mut buffer.rows)
        };
        if rows.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.store(&rows).await {
            // Keep them (ahead of any rejected meanwhile) for a later flush.
            let mut buffer = self.lock();
            let newer = std::mem::replace(&mut buffer.rows, rows);
            buffer.rows.extend(newer);
            buffer.bytes = buffer.rows.iter().map(row_bytes).sum();
            return Err(e.into_stage(Stage::Sink, STAGE_NAME));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_bytes_become_replacement_characters_in_text() {
        assert_eq!(pg_text("a\0b"), "a\u{fffd}b");
        assert_eq!(pg_text("plain"), "plain");
    }

    #[test]
    fn limits_and_labels_are_validated() {
        let bad = |c: PgRejectsConfig| match c.validate() {
            Err(PgError::InvalidConfig { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(bad(PgRejectsConfig { max_buffered_rows: 0, ..Default::default() }), "max_buffered_rows");
        assert_eq!(
            bad(PgRejectsConfig { max_buffered_bytes: 0, ..Default::default() }),
            "max_buffered_bytes"
        );
        assert_eq!(bad(PgRejectsConfig { run_label: Some("a\0".into()), ..Default::default() }), "run_label");
        assert_eq!(bad(PgRejectsConfig { table: TableRef::new(""), ..Default::default() }), "table");
        PgRejectsConfig::default().validate().unwrap();
    }
}

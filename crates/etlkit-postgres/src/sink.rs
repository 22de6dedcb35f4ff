//! [`PgCopySink`]: Arrow batches into an existing table by binary COPY, in all-or-nothing commit
//! units, over up to `workers` connections at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_array::UInt32Array;
use arrow_schema::SchemaRef;
use arrow_select::take::take_record_batch;
use async_trait::async_trait;
use etlkit_core::{Context, LoadStats, Origins, Rejected, Sink, Stage};
use sqlx::pool::PoolConnection;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Postgres, Row};

use crate::catalog::table_columns;
use crate::conform::{Conformer, NanosPolicy, NulPolicy};
use crate::copy::{CopyFlow, EncodedBatches, TupleEncoder, copy_in};
use crate::error::{PgError, RefusedRow, Result};
use crate::identifier::{TableRef, column_list, quote_ident};
use crate::merge::{OnConflict, merge_sql};
use crate::retry::RetryPolicy;
use crate::run_plan::RunPlan;

/// How rows reach the target table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WriteMode {
    /// COPY straight into the table. The default.
    #[default]
    Append,
    /// `TRUNCATE` the table and load it in one transaction, committed by `finish` (the table is
    /// locked exclusively until then; on error or `abort` the old contents stay). Loads over one connection, whatever `workers` is, because the truncating
    /// transaction holds an exclusive lock; `rows_per_transaction` and retries do not apply.
    Truncate,
    /// COPY into a staging table in the same transaction, then merge into the target with
    /// `INSERT ... SELECT DISTINCT ON (key) ... ON CONFLICT (key)`. Needs a unique index or primary
    /// key on exactly `key`. Loads over one connection, whatever `workers` is (conversion still runs
    /// in parallel), so batches merge in the order they are written: among rows with the same key,
    /// the last one written wins (the last in the input with
    /// [`PipelineConfig::preserve_order`](etlkit_core::PipelineConfig)). A NULL in a key column is
    /// an invalid value (see [`InvalidRows`]): NULL keys never conflict, so the row would be
    /// inserted again by every run.
    Upsert {
        /// The conflict key columns.
        key: Vec<String>,
        /// What to do with existing keys.
        on_conflict: OnConflict,
    },
}

/// What the sink does with a row holding a value its column cannot store (out of range, not a
/// UUID, a NUL byte in text, nanoseconds under [`NanosPolicy::Reject`], ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InvalidRows {
    /// Fail the write with [`PgError::InvalidValue`] naming the row, column and value. The default.
    #[default]
    Fail,
    /// Send the row to the run's reject output ([`Context::reject`], with the same row number,
    /// column, value and reason) and load the others.
    Reject,
}

/// Opt-in settings for big loads. All off by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BulkTuning {
    /// `SET LOCAL synchronous_commit = off` in every load transaction: commits do not wait for the
    /// WAL flush. A crash can lose the last few commits (never corrupt them).
    pub synchronous_commit_off: bool,
    /// Drop the table's secondary indexes (not primary keys, unique or constraint indexes) in
    /// `start`, and rebuild them from their saved definitions in `finish` (and in `abort`).
    pub rebuild_indexes: bool,
    /// `ANALYZE` the table after `finish` committed.
    pub analyze: bool,
    /// Upsert only: stage into a regular `UNLOGGED` table (in shared buffers, dropped at the end
    /// of its unit) instead of a `TEMP` table (in the session's `temp_buffers`, 8 MB by default).
    /// Faster for large units; needs `CREATE` on the target's schema.
    pub unlogged_staging: bool,
}

/// Configuration of a [`PgCopySink`]. Build with struct syntax over [`Default`], then
/// [`validate`](Self::validate) (the sink's constructor does).
#[derive(Debug, Clone, PartialEq)]
pub struct PgSinkConfig {
    /// The target table; it must exist (see [`create_table_if_not_exists`](crate::create_table_if_not_exists)).
    /// Default: empty (must be set).
    pub table: TableRef,
    /// Append, truncate or upsert. Default: [`WriteMode::Append`].
    pub mode: WriteMode,
    /// Rows per commit unit, per connection: when a connection's open transaction holds at least
    /// this many rows after a write, it is committed. `0` means one transaction per connection for
    /// the whole run, committed by `finish`. Default: 500 000.
    pub rows_per_transaction: u64,
    /// Bytes of encoded COPY data per message sent to the server. Default: 4 MiB.
    pub send_buffer_bytes: usize,
    /// Whole-unit retries after a retryable error (lost connection, deadlock, serialization
    /// failure) and the back-off between them. Retrying needs the unit's batches, so with
    /// `retry.max_retries > 0` each connection keeps its open unit's batches in memory (bounded by
    /// `rows_per_transaction`). In `Append` mode a failed `COMMIT` is never retried (it may have
    /// committed). Default: [`RetryPolicy::default`] (2 retries, 100 ms doubling up to 5 s).
    pub retry: RetryPolicy,
    /// Timestamps with nanoseconds. Default: [`NanosPolicy::Reject`].
    pub nanos: NanosPolicy,
    /// Text with NUL bytes. Default: [`NulPolicy::Reject`].
    pub nul: NulPolicy,
    /// Rows with values that cannot be stored: fail, or reject them and load the rest. Default:
    /// [`InvalidRows::Fail`].
    pub invalid_rows: InvalidRows,
    /// Opt-in bulk-load settings. Default: all off.
    pub tuning: BulkTuning,
    /// Client-side limit for one COPY, merge or commit (server `statement_timeout` does not bound
    /// COPY). Default: 10 minutes.
    pub timeout: Duration,
}

impl Default for PgSinkConfig {
    fn default() -> Self {
        PgSinkConfig {
            table: TableRef::new(""),
            mode: WriteMode::Append,
            rows_per_transaction: 500_000,
            send_buffer_bytes: 4 << 20,
            retry: RetryPolicy::default(),
            nanos: NanosPolicy::Reject,
            nul: NulPolicy::Reject,
            invalid_rows: InvalidRows::Fail,
            tuning: BulkTuning::default(),
            timeout: Duration::from_secs(600),
        }
    }
}

impl PgSinkConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| Err(PgError::InvalidConfig { field, reason: reason.to_owned() });
        self.table.validate("table")?;
        self.retry.validate()?;
        if self.send_buffer_bytes < 8 << 10 || self.send_buffer_bytes > 512 << 20 {
            return bad("send_buffer_bytes", "must be between 8 KiB and 512 MiB");
        }
        if self.timeout.is_zero() {
            return bad("timeout", "must be positive");
        }
        if let WriteMode::Upsert { key, on_conflict } = &self.mode {
            if key.is_empty() {
                return bad("mode", "Upsert needs at least one key column");
            }
            if let OnConflict::DoUpdate { compare: crate::merge::ChangeDetection::HashColumn(h) } =
                on_conflict
                && key.contains(h)
            {
                return bad("mode", "the hash column cannot be a key column");
            }
        } else if self.tuning.unlogged_staging {
            return bad("tuning.unlogged_staging", "only applies to WriteMode::Upsert");
        }
        Ok(())
    }
}

/// What `start` worked out once per run.
#[derive(Debug)]
struct Plan {
    conformer: Conformer,
    columns: Vec<String>,
}

/// Per-connection state: a checked-out connection, its open transaction and commit unit.
struct Writer {
    conn: Option<PoolConnection<Postgres>>,
    encoder: TupleEncoder,
    /// The COPY send buffer, reused by every COPY of this writer.
    buf: bytes::BytesMut,
    in_tx: bool,
    unit_rows: u64,
    /// The open unit's batches (with their rows' origins), kept to replay it after a retryable error.
    retained: Vec<Tracked>,
    stage: Option<String>,
    truncated: bool,
}

impl Drop for Writer {
    /// A writer dropped with a transaction open (a cancelled run: its `write` future was dropped,
    /// possibly in the middle of a COPY) must not hand its connection back to the pool in that state:
    /// the connection is closed instead, which rolls the transaction back.
    fn drop(&mut self) {
        if self.in_tx
            && let Some(conn) = self.conn.as_mut()
        {
            conn.close_on_drop();
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    inserted: u64,
    updated: u64,
    unchanged: u64,
    duplicate_keys: u64,
    transactions: u64,
}

static STAGE_SEQ: AtomicU64 = AtomicU64::new(0);

/// Writes Arrow batches into an existing PostgreSQL table by binary `COPY`.
///
/// - Column types come from the table's catalog; input columns are matched by name and cast to
///   them (range-checked, and a fraction is never cut off into an integer column: a value that
///   does not fit fails with row, column and value, or — with
///   [`InvalidRows::Reject`] — goes to [`Context::reject`] while the other rows load; `write`
///   returns the rows accepted).
/// - Durability: when `write` returns `Ok`, the batch is in an open transaction on one of the
///   sink's connections; it is committed when that connection's unit reaches
///   [`PgSinkConfig::rows_per_transaction`] rows or by `finish`. `abort` (or any error) rolls back
///   every open unit: a unit is all-or-nothing.
/// - `write` may run concurrently (the pipeline's `workers`): in append mode each concurrent call
///   uses its own connection and its own COPY, so the pool needs at least `workers` connections
///   (truncate and upsert loads write over one connection, in order).
/// - `finish` returns counters `inserted`, `updated`, `unchanged`, `duplicate_keys` (rows that lost
///   to a later row with the same key in the same unit; upsert only), `transactions`,
///   `connections` and `copy_messages` (COPY data messages sent, each about
///   [`PgSinkConfig::send_buffer_bytes`]), and `retries`. Rows written = inserted + updated + unchanged + duplicate_keys.
pub struct PgCopySink {
    pool: PgPool,
    config: PgSinkConfig,
    quoted: String,
    plan: RunPlan<Plan>,
    idle: Mutex<Vec<Writer>>,
    serial_gate: tokio::sync::Mutex<()>,
    rows_seen: AtomicU64,
    retries: AtomicU64,
    copy_messages: AtomicU64,
    connections: AtomicUsize,
    tally: Mutex<Tally>,
    dropped_indexes: Mutex<Vec<String>>,
}

impl std::fmt::Debug for PgCopySink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The pool (and its connect options, which may hold a password) is deliberately left out.
        f.debug_struct("PgCopySink").field("config", &self.config).finish_non_exhaustive()
    }
}

impl PgCopySink {
    /// A sink writing through `pool` (which should allow at least `workers` connections).
    pub fn new(pool: PgPool, config: PgSinkConfig) -> Result<Self> {
        config.validate()?;
        let quoted = config.table.quoted();
        Ok(PgCopySink {
            pool,
            config,
            quoted,
            plan: RunPlan::new(),
            idle: Mutex::new(Vec::new()),
            serial_gate: tokio::sync::Mutex::new(()),
            rows_seen: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            copy_messages: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            tally: Mutex::new(Tally::default()),
            dropped_indexes: Mutex::new(Vec::new()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PgSinkConfig {
        &self.config
    }

    /// The plan for a batch of `schema`: this run's (made by `start`), or a new one when `write` is
    /// called first.
    async fn plan(&self, schema: &SchemaRef) -> Result<Arc<Plan>> {
        match self.plan.for_batch(schema, &self.quoted)? {
            Some(plan) => Ok(plan),
            None => Ok(self.plan.set(schema, self.make_plan(schema).await?)),
        }
    }

    /// Reads the table's columns and plans how `schema`'s columns are converted into them.
    async fn make_plan(&self, schema: &SchemaRef) -> Result<Plan> {
        let mut conn =
            self.pool.acquire().await.map_err(|e| PgError::db("connecting", self.quoted.clone(), e))?;
        let table = table_columns(&mut conn, &self.config.table).await?;
        let mut conformer =
            Conformer::plan(&self.quoted, &table, schema, self.config.nanos, self.config.nul.clone())?;
        if let WriteMode::Upsert { key, .. } = &self.config.mode {
            conformer.require(key);
        }
        let columns: Vec<String> = conformer.column_names().map(str::to_owned).collect();
        if let WriteMode::Upsert { key, .. } = &self.config.mode
            && let Some(k) = key.iter().find(|k| !columns.contains(k))
        {
            return Err(PgError::InvalidConfig {
                field: "mode",
                reason: format!("upsert key column `{k}` is not among the input columns"),
            });
        }
        if let WriteMode::Upsert { key, .. } = &self.config.mode
            && !crate::catalog::has_unique_index_on(&mut conn, &self.config.table, key).await?
        {
            // ON CONFLICT would only fail at the first merge, after a whole unit was staged.
            return Err(PgError::InvalidConfig {
                field: "mode",
                reason: format!(
                    "upsert key ({}) has no unique index or constraint on table {}: add one (e.g. \
                             `ALTER TABLE {} ADD UNIQUE ({})`) or use WriteMode::Append",
                    key.join(", "),
                    self.quoted,
                    self.quoted,
                    crate::identifier::column_list(key.iter().map(String::as_str)),
                ),
            });
        }
        // Check the encoders build now rather than on the first write.
        TupleEncoder::new(&conformer)?;
        Ok(Plan { conformer, columns })
    }

    fn retain(&self) -> bool {
        self.config.retry.max_retries > 0 && self.config.mode != WriteMode::Truncate
    }

    async fn new_writer(&self, plan: &Plan) -> Result<Writer> {
        let conn =
            self.pool.acquire().await.map_err(|e| PgError::db("connecting", self.quoted.clone(), e))?;
        self.connections.fetch_add(1, Ordering::Relaxed);
        let encoder = TupleEncoder::new(&plan.conformer)?;
        Ok(Writer {
            conn: Some(conn),
            encoder,
            buf: bytes::BytesMut::new(),
            in_tx: false,
            unit_rows: 0,
            retained: Vec::new(),
            stage: None,
            truncated: false,
        })
    }

    fn take_idle(&self) -> Option<Writer> {
        self.idle.lock().expect("sink state poisoned").pop()
    }

    fn put_idle(&self, w: Writer) {
        self.idle.lock().expect("sink state poisoned").push(w);
    }

    /// Opens a transaction (and the staging table) on `w` when none is open.
    async fn begin(&self, w: &mut Writer, plan: &Plan) -> Result<()> {
        if w.in_tx {
            return Ok(());
        }
        if w.conn.is_none() {
            w.conn = Some(
                self.pool.acquire().await.map_err(|e| PgError::db("connecting", self.quoted.clone(), e))?,
            );
            self.connections.fetch_add(1, Ordering::Relaxed);
        }
        let conn = w.conn.as_mut().expect("connection present");
        let mut sql = String::from("BEGIN");
        if self.config.tuning.synchronous_commit_off {
            sql.push_str("; SET LOCAL synchronous_commit = off");
        }
        if self.config.mode == WriteMode::Truncate && !w.truncated {
            sql.push_str(&format!("; TRUNCATE {}", self.quoted));
        }
        exec(conn, sql).await.map_err(|e| PgError::db("beginning a transaction", self.quoted.clone(), e))?;
        w.in_tx = true;
        w.truncated = self.config.mode == WriteMode::Truncate;
        if matches!(self.config.mode, WriteMode::Upsert { .. }) {
            let n = STAGE_SEQ.fetch_add(1, Ordering::Relaxed);
            let cols = column_list(plan.columns.iter().map(String::as_str));
            let (stage, ddl) = if self.config.tuning.unlogged_staging {
                let name = format!("etlkit_stage_{}_{n}", std::process::id());
                let stage = match &self.config.table.schema {
                    Some(s) => format!("{}.{}", quote_ident(s), quote_ident(&name)),
                    None => quote_ident(&name),
                };
                let ddl = format!(
                    "CREATE UNLOGGED TABLE {stage} AS SELECT {cols} FROM {} WITH NO DATA",
                    self.quoted
                );
                (stage, ddl)
            } else {
                let stage = format!("pg_temp.{}", quote_ident(&format!("etlkit_stage_{n}")));
                let ddl = format!(
                    "CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {cols} FROM {} WITH NO DATA",
                    self.quoted
                );
                (stage, ddl)
            };
            exec(conn, ddl).await.map_err(|e| PgError::db("creating the staging table", stage.clone(), e))?;
            w.stage = Some(stage);
        }
        Ok(())
    }

    async fn copy(&self, w: &mut Writer, plan: &Plan, batches: &[Tracked]) -> Result<u64> {
        let target = w.stage.clone().unwrap_or_else(|| self.quoted.clone());
        let statement = format!(
            "COPY {target} ({}) FROM STDIN (FORMAT binary)",
            column_list(plan.columns.iter().map(String::as_str))
        );
        let conn = w.conn.as_mut().expect("connection present");
        let data: Vec<RecordBatch> = batches.iter().map(|(b, _)| b.clone()).collect();
        copy_in(
            conn,
            &statement,
            &target,
            &mut EncodedBatches::new(&mut w.encoder, &data),
            &mut w.buf,
            &CopyFlow {
                send_buffer: self.config.send_buffer_bytes,
                timeout: Some(self.config.timeout),
                messages: Some(&self.copy_messages),
            },
        )
        .await
        .map_err(|e| refused_row(e, batches))
    }

    async fn timed<T>(&self, action: &'static str, f: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.config.timeout, f).await {
            Ok(r) => r,
            Err(_) => Err(PgError::Timeout { action, seconds: self.config.timeout.as_secs_f64() }),
        }
    }

    /// Merges (upsert), commits, and counts the unit. `committing` is set once COMMIT was sent.
    async fn commit_unit(&self, w: &mut Writer, plan: &Plan, committing: &mut bool) -> Result<()> {
        if !w.in_tx {
            return Ok(());
        }
        let mut unit = Tally { transactions: 1, ..Tally::default() };
        let conn = w.conn.as_mut().expect("connection present");
        if let (WriteMode::Upsert { key, on_conflict }, Some(stage)) = (&self.config.mode, &w.stage) {
            let cols: Vec<&str> = plan.columns.iter().map(String::as_str).collect();
            let sql = merge_sql(&self.quoted, stage, &cols, key, on_conflict);
            let row = self
                .timed("merge", async {
                    sqlx::query(AssertSqlSafe(sql))
                        .fetch_one(&mut **conn)
                        .await
                        .map_err(|e| PgError::db("merging the staging table", self.quoted.clone(), e))
                })
                .await?;
            let (distinct, inserted, updated): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
            unit.inserted = inserted as u64;
            unit.updated = updated as u64;
            unit.unchanged = (distinct - inserted - updated) as u64;
            unit.duplicate_keys = w.unit_rows - distinct as u64;
            if self.config.tuning.unlogged_staging {
                exec(conn, format!("DROP TABLE {stage}"))
                    .await
                    .map_err(|e| PgError::db("dropping the staging table", stage.clone(), e))?;
            }
        } else {
            unit.inserted = w.unit_rows;
        }
        *committing = true;
        self.timed("COMMIT", async {
            exec(conn, "COMMIT".into()).await.map_err(|e| PgError::db("committing", self.quoted.clone(), e))
        })
        .await?;
        w.in_tx = false;
        w.stage = None;
        w.unit_rows = 0;
        w.retained.clear();
        let mut t = self.tally.lock().expect("sink state poisoned");
        t.inserted += unit.inserted;
        t.updated += unit.updated;
        t.unchanged += unit.unchanged;
        t.duplicate_keys += unit.duplicate_keys;
        t.transactions += unit.transactions;
        Ok(())
    }

    /// Throws away `w`'s connection and open unit (the server rolls it back).
    async fn discard(&self, w: &mut Writer) {
        if let Some(conn) = w.conn.take() {
            // Closing (not returning) the connection: it may be mid-COPY or broken.
            let _ = conn.close().await;
        }
        w.in_tx = false;
        w.stage = None;
        w.truncated = false;
    }

    /// One step of work on `w`, retried as a whole unit on retryable errors.
    async fn run_step(
        &self,
        w: &mut Writer,
        plan: &Plan,
        batch: Option<&Tracked>,
        commit: bool,
    ) -> Result<()> {
        let mut attempt = 0u32;
        let mut copied = batch.is_none();
        let mut replay = false;
        loop {
            let mut committing = false;
            let res: Result<()> = async {
                if replay {
                    self.begin(w, plan).await?;
                    if !w.retained.is_empty() {
                        let retained = std::mem::take(&mut w.retained);
                        let r = self.copy(w, plan, &retained).await;
                        w.retained = retained;
                        r?;
                    }
                }
                if !copied {
                    let batch = batch.expect("batch present when not copied");
                    self.begin(w, plan).await?;
                    self.copy(w, plan, std::slice::from_ref(batch)).await?;
                    copied = true;
                    w.unit_rows += batch.0.num_rows() as u64;
                    if self.retain() {
                        w.retained.push(batch.clone());
                    }
                }
                if commit {
                    self.commit_unit(w, plan, &mut committing).await?;
                }
                Ok(())
            }
            .await;
            match res {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let ambiguous_commit =
                        committing && !matches!(self.config.mode, WriteMode::Upsert { .. });
                    let wait = self
                        .config
                        .retry
                        .next_retry(attempt, &e)
                        .filter(|_| self.retain() && !ambiguous_commit);
                    self.discard(w).await;
                    let Some(wait) = wait else {
                        w.retained.clear();
                        w.unit_rows = 0;
                        return Err(e);
                    };
                    attempt += 1;
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(table = %self.quoted, attempt, error = %e, "retrying commit unit");
                    tokio::time::sleep(wait).await;
                    replay = true;
                }
            }
        }
    }

    /// Casts and validates `batch`; with [`InvalidRows::Reject`], rows with a value that cannot be
    /// stored go to `ctx.reject` and the rest is returned. Returns the batch to load and the number
    /// of rejected rows.
    fn conform(
        &self,
        plan: &Plan,
        batch: &RecordBatch,
        first_row: u64,
        ctx: &Context,
    ) -> etlkit_core::Result<(Tracked, u64)> {
        let stage = |e: PgError| e.into_stage(Stage::Sink, self.name());
        if self.config.invalid_rows == InvalidRows::Fail {
            // Name the input row (file and line) rather than the sink's own count.
            let conformed = plan.conformer.conform(batch, first_row).map_err(|e| e.at_origin(ctx, first_row));
            return Ok(((conformed.map_err(stage)?, ctx.origins().cloned()), 0));
        }
        let mut keep: Vec<u32> = (0..batch.num_rows() as u32).collect();
        let mut current = batch.clone();
        let mut rejected = 0;
        loop {
            match plan.conformer.conform(&current, 1) {
                Ok(c) => {
                    let kept: Vec<usize> = keep.iter().map(|&k| k as usize).collect();
                    return Ok(((c, ctx.origins().map(|o| o.take(&kept))), rejected));
                }
                Err(PgError::InvalidValue { row, column, value, reason, .. }) => {
                    let original = keep.remove((row - 1) as usize);
                    let at = ctx.origin(original as usize);
                    ctx.reject(Rejected {
                        origin: at.map_or_else(|| self.name(), |o| o.source.to_owned()),
                        line: Some(at.map_or(first_row + original as u64, |o| o.line)),
                        column: Some(column),
                        value: Some(value),
                        reason,
                        raw: None,
                    })?;
                    rejected += 1;
                    current = take_record_batch(batch, &UInt32Array::from(keep.clone()))?;
                }
                Err(e) => return Err(stage(e)),
            }
        }
    }

    async fn write_batch(&self, batch: RecordBatch, ctx: &Context) -> etlkit_core::Result<u64> {
        let stage = |e: PgError| e.into_stage(Stage::Sink, self.name());
        let n = batch.num_rows() as u64;
        if n == 0 {
            return Ok(0);
        }
        let plan = self.plan(&batch.schema()).await.map_err(stage)?;
        let plan = &*plan;
        let first_row = self.rows_seen.fetch_add(n, Ordering::Relaxed) + 1;
        let (conformed, rejected) = self.conform(plan, &batch, first_row, ctx)?;
        drop(batch);
        let n = n - rejected;
        if n == 0 {
            return Ok(0);
        }
        // Truncate: one transaction holds the table. Upsert: one connection, so units merge in
        // the order their batches came and a later row always wins over an earlier one.
        let _gate = if matches!(self.config.mode, WriteMode::Truncate | WriteMode::Upsert { .. }) {
            Some(self.serial_gate.lock().await)
        } else {
            None
        };
        let mut w = match self.take_idle() {
            Some(w) => w,
            None => self.new_writer(plan).await.map_err(stage)?,
        };
        let unit_full = self.config.mode != WriteMode::Truncate
            && self.config.rows_per_transaction > 0
            && w.unit_rows + n >= self.config.rows_per_transaction;
        let r = self.run_step(&mut w, plan, Some(&conformed), unit_full).await;
        self.put_idle(w);
        r.map(|()| n).map_err(stage)
    }

    async fn drop_secondary_indexes(&self) -> Result<()> {
        let mut conn =
            self.pool.acquire().await.map_err(|e| PgError::db("connecting", self.quoted.clone(), e))?;
        let rows = sqlx::query(
            "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i \
             WHERE i.indrelid = to_regclass($1) AND NOT i.indisprimary AND NOT i.indisunique \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)",
        )
        .bind(&self.quoted)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| PgError::db("listing indexes", self.quoted.clone(), e))?;
        for r in rows {
            let (name, def): (String, String) = (r.get(0), r.get(1));
            // `regclass::text` is already quoted and schema-qualified as needed.
            exec(&mut conn, format!("DROP INDEX {name}"))
                .await
                .map_err(|e| PgError::db("dropping an index", name.clone(), e))?;
            tracing::info!(table = %self.quoted, index = %name, "dropped secondary index for the load");
            self.dropped_indexes.lock().expect("sink state poisoned").push(def);
        }
        Ok(())
    }

    async fn rebuild_indexes(&self) -> Result<()> {
        let defs = std::mem::take(&mut *self.dropped_indexes.lock().expect("sink state poisoned"));
        if defs.is_empty() {
            return Ok(());
        }
        let mut conn =
            self.pool.acquire().await.map_err(|e| PgError::db("connecting", self.quoted.clone(), e))?;
        for (i, def) in defs.iter().enumerate() {
            if let Err(e) = exec(&mut conn, def.clone()).await {
                // Keep the ones not yet rebuilt so a later call can try again.
                self.dropped_indexes.lock().expect("sink state poisoned").extend(defs[i..].iter().cloned());
                return Err(PgError::db("rebuilding an index", self.quoted.clone(), e));
            }
        }
        Ok(())
    }

    async fn finish_inner(&self) -> Result<LoadStats> {
        let writers = std::mem::take(&mut *self.idle.lock().expect("sink state poisoned"));
        let mut first_err = None;
        if let Some(plan) = self.plan.current() {
            let plan = &*plan;
            for mut w in writers {
                if first_err.is_none() {
                    if let Err(e) = self.run_step(&mut w, plan, None, true).await {
                        first_err = Some(e);
                    }
                } else {
                    self.discard(&mut w).await;
                }
            }
        }
        if let Some(e) = first_err {
            let _ = self.rebuild_indexes().await;
            return Err(e);
        }
        if self.config.mode == WriteMode::Truncate
            && self.tally.lock().expect("sink state poisoned").transactions == 0
        {
            // No rows written (none read, or every one rejected): the table must still end up empty.
            let mut conn =
                self.pool.acquire().await.map_err(|e| PgError::db("connecting", self.quoted.clone(), e))?;
            exec(&mut conn, format!("TRUNCATE {}", self.quoted))
                .await
                .map_err(|e| PgError::db("truncating", self.quoted.clone(), e))?;
        }
        self.rebuild_indexes().await?;
        if self.config.tuning.analyze {
            let mut conn =
                self.pool.acquire().await.map_err(|e| PgError::db("connecting", self.quoted.clone(), e))?;
            exec(&mut conn, format!("ANALYZE {}", self.quoted))
                .await
                .map_err(|e| PgError::db("analyzing", self.quoted.clone(), e))?;
        }
        let t = self.tally.lock().expect("sink state poisoned");
        let mut stats = LoadStats::default();
        stats.retries = self.retries.load(Ordering::Relaxed);
        let mut counters = BTreeMap::new();
        counters.insert("inserted".to_owned(), t.inserted);
        counters.insert("updated".to_owned(), t.updated);
        counters.insert("unchanged".to_owned(), t.unchanged);
        counters.insert("duplicate_keys".to_owned(), t.duplicate_keys);
        counters.insert("transactions".to_owned(), t.transactions);
        counters.insert("connections".to_owned(), self.connections.load(Ordering::Relaxed) as u64);
        counters.insert("copy_messages".to_owned(), self.copy_messages.load(Ordering::Relaxed));
        stats.counters = counters;
        Ok(stats)
    }

    /// Rolls back every idle connection's open unit (closing the connection if that fails) and
    /// forgets the connections.
    async fn roll_back_open_units(&self) {
        let writers = std::mem::take(&mut *self.idle.lock().expect("sink state poisoned"));
        for mut w in writers {
            if w.in_tx
                && let Some(conn) = w.conn.as_mut()
            {
                match exec(conn, "ROLLBACK".into()).await {
                    Ok(()) => w.in_tx = false,
                    Err(_) => self.discard(&mut w).await,
                }
            }
        }
    }

    /// Stats so far (the same counters `finish` returns, for committed units only).
    pub fn committed_counts(&self) -> (u64, u64, u64) {
        let t = self.tally.lock().expect("sink state poisoned");
        (t.inserted, t.updated, t.unchanged)
    }
}

#[async_trait]
impl Sink for PgCopySink {
    fn name(&self) -> String {
        format!("postgres-copy:{}", self.quoted)
    }

    async fn start(&self, schema: &SchemaRef) -> etlkit_core::Result<()> {
        // A run cancelled without `finish` or `abort` (its future dropped) leaves its open units on
        // idle connections: they belong to no run now, and must not be committed by this one.
        self.roll_back_open_units().await;
        // A new plan for each run: its schema (and the table) may differ from the last run's.
        let plan = self.make_plan(schema).await.map_err(|e| e.into_stage(Stage::Sink, self.name()))?;
        self.plan.set(schema, plan);
        // Counters describe one run: a sink used for a second run starts from zero.
        *self.tally.lock().expect("sink state poisoned") = Tally::default();
        for c in [&self.rows_seen, &self.retries, &self.copy_messages] {
            c.store(0, Ordering::Relaxed);
        }
        self.connections.store(0, Ordering::Relaxed);
        if self.config.tuning.rebuild_indexes {
            self.drop_secondary_indexes().await.map_err(|e| e.into_stage(Stage::Sink, self.name()))?;
        }
        Ok(())
    }

    async fn write(&self, batch: RecordBatch, ctx: &Context) -> etlkit_core::Result<u64> {
        self.write_batch(batch, ctx).await
    }

    async fn finish(&self) -> etlkit_core::Result<LoadStats> {
        self.finish_inner().await.map_err(|e| e.into_stage(Stage::Sink, self.name()))
    }

    async fn abort(&self) {
        self.roll_back_open_units().await;
        if let Err(e) = self.rebuild_indexes().await {
            tracing::error!(table = %self.quoted, error = %e, "could not rebuild dropped indexes after abort");
        }
    }
}

/// A batch with the origins of its rows (file and line), when known.
type Tracked = (RecordBatch, Option<Origins>);

/// A COPY error that PostgreSQL tied to one data row (its context says `COPY t, line N[, column c]`,
/// N counting the rows of that COPY): names the input row (file and line), the column and the value.
fn refused_row(e: PgError, batches: &[Tracked]) -> PgError {
    let located = match &e {
        PgError::Database { source: sqlx::Error::Database(db), .. } => {
            db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().and_then(|pg| {
                Some((pg.message().to_owned(), pg.code().to_owned(), copy_position(pg.r#where()?)?))
            })
        }
        _ => None,
    };
    let Some((message, code, (line, column))) = located else { return e };
    let mut row = (line - 1) as usize;
    for (batch, origins) in batches {
        if row >= batch.num_rows() {
            row -= batch.num_rows();
            continue;
        }
        let value = column.as_deref().and_then(|c| batch.column_by_name(c)).map(|a| {
            let v = arrow_cast::display::array_value_to_string(a, row).unwrap_or_default();
            let v = if v.len() > 200 { format!("{}...", &v[..v.floor_char_boundary(200)]) } else { v };
            format!("{v:?}")
        });
        let origin = origins.as_ref().and_then(|o| o.get(row)).map(|o| o.to_string());
        return PgError::RowRefused(Box::new(RefusedRow {
            origin,
            row: line,
            column,
            value,
            message,
            code: Some(code),
        }));
    }
    e
}

/// `(line, column)` from a COPY error context such as `COPY people, line 3, column name: "..."`.
fn copy_position(context: &str) -> Option<(u64, Option<String>)> {
    let first = context.lines().find(|l| l.starts_with("COPY "))?;
    let after = &first[first.find(", line ")? + ", line ".len()..];
    let digits = after.find(|c: char| !c.is_ascii_digit()).unwrap_or(after.len());
    let line: u64 = after[..digits].parse().ok()?;
    let column = after[digits..].strip_prefix(", column ").map(|rest| match rest.find(": ") {
        Some(end) => rest[..end].to_owned(),
        None => rest.to_owned(),
    });
    (line >= 1).then_some((line, column))
}

/// Runs SQL built from quoted identifiers only (never values) over the simple query protocol, so
/// several `;`-separated statements may be sent at once.
pub(crate) async fn exec(conn: &mut PgConnection, sql: String) -> sqlx::Result<()> {
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await.map(|_| ())
}

//! `INSERT INTO` a PostgreSQL table: [`PgWriteExec`] (one staging table per input partition, filled by
//! binary COPY, in parallel) and [`PgCommitExec`] (one transaction moving every staged row into the
//! table). DataFusion's `DataSinkExec` needs a single input partition; this pair keeps the COPYs
//! parallel and the commit single, like iceberg-rust's write and commit plans.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, Partitioning, PlanProperties,
};
use etlkit_postgres::bytes::BytesMut;
use etlkit_postgres::copy_in::{CopyData, CopyFlow, copy_in};
use etlkit_postgres::sqlx::{self, Executor, PgConnection, Row};
use etlkit_postgres::{CopyEncoder, NanosPolicy, NulPolicy, PgError, TableColumn, TableRef, quote_ident};
use futures::StreamExt;
use tokio::sync::watch;

use crate::connector::PgConnector;
use crate::error::{DfError, Result};

/// How the commit step moves staged rows into the table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WriteMode {
    /// `INSERT INTO table SELECT * FROM staging`.
    Append,
    /// `TRUNCATE table`, then append, in the same transaction.
    Overwrite,
    /// `INSERT ... ON CONFLICT (key) DO UPDATE SET` every other column (`DO NOTHING` when the key is
    /// every column).
    Upsert {
        /// The conflict key (needs a unique index).
        key: Vec<String>,
    },
}

/// How the parallel partitions of one `INSERT INTO` become one all-or-nothing result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum CommitProtocol {
    /// Each partition COPYs into an unlogged staging table; then ONE transaction moves every staged
    /// row into the table (`INSERT ... SELECT`) and drops the staging tables. Readers see all rows
    /// at once. Every row is written twice on the server. All write modes.
    #[default]
    Staged,
    /// Each partition COPYs straight into the table in a transaction of its own and `PREPARE`s it
    /// (two-phase commit); the commit step then `COMMIT PREPARED`s every partition's transaction.
    /// Every row is written once, as fast as parallel COPYs into the table, but the partitions
    /// become visible one after another (within milliseconds) rather than at one instant. Append
    /// only; the server needs `max_prepared_transactions` of at least the number of partitions
    /// (and PostgreSQL 13 or later). A failure before the commit step begins rolls every partition
    /// back; once it began (the run is `committing`), the commit is only ever finished: a
    /// transaction another session committed counts as committed, a lost connection is replaced,
    /// and what this process cannot finish ([`DfError::CommitUnfinished`](crate::DfError::CommitUnfinished)) or a
    /// crash leaves is finished (or a run abandoned before its commit rolled back) by the next
    /// `INSERT INTO` planned on the same database, or by [`recover_prepared`](crate::recover_prepared).
    TwoPhase,
}

/// Everything a write needs to know, shared by the write and commit plans: a recipe (connector
/// name, table, columns, mode, run id), never a connection or a password.
#[derive(Debug)]
pub struct WriteTarget {
    /// Where connections come from.
    pub connector: Arc<PgConnector>,
    /// The target table.
    pub table: TableRef,
    /// The schema holding the target (and the staging tables).
    pub namespace: String,
    /// The columns the `INSERT` writes (catalog), in table order: every column, unless the
    /// statement named its columns and left some out.
    pub columns: Vec<TableColumn>,
    /// The table's columns the `INSERT` left out (a column list without them): they are not written,
    /// so a new row gets the column's PostgreSQL `DEFAULT` and an upsert leaves an existing row's
    /// value unchanged.
    pub omitted: Vec<String>,
    /// How rows are committed.
    pub mode: WriteMode,
    /// Names this query's staging tables: `etlkit_stage_<run>_<partition>_<unique>`.
    pub run: String,
    /// Bytes per COPY message.
    pub send_buffer: usize,
    /// How the partitions commit.
    pub commit: CommitProtocol,
}

impl WriteTarget {
    fn stage_prefix(&self) -> String {
        format!("etlkit_stage_{}_", self.run)
    }

    /// A staging table for one execution of `partition`. The name is unique per execution, not
    /// just per partition: a distributed engine may run a partition twice (a retried task), or
    /// number each task's only partition 0 (Ballista does).
    fn stage(&self, partition: usize) -> TableRef {
        let unique = &run_id()[..8];
        TableRef::qualified(self.namespace.clone(), format!("{}{partition}_{unique}", self.stage_prefix()))
    }

    fn column_list(&self) -> String {
        self.columns.iter().map(|c| quote_ident(&c.name)).collect::<Vec<_>>().join(", ")
    }
}

/// A fresh run id: 16 hex digits from the clock, the process id and a counter.
pub(crate) fn run_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let mixed = nanos
        ^ (u64::from(std::process::id()) << 40)
        ^ COUNTER.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!("{:016x}", mixed.wrapping_mul(0xbf58_476d_1ce4_e5b9))
}

/// Within one process: whether the query was aborted and how many partitions are still writing, so
/// that the commit step, after a failure, waits for every partition before sweeping staging tables.
#[derive(Debug)]
pub(crate) struct RunState {
    tx: watch::Sender<(bool, usize)>,
}

impl RunState {
    fn new() -> Arc<Self> {
        Arc::new(RunState { tx: watch::Sender::new((false, 0)) })
    }

    /// Registers a running partition; `false` when the run is already aborted.
    fn enter(self: &Arc<Self>) -> Option<Running> {
        let mut ok = false;
        self.tx.send_modify(|(aborted, running)| {
            if !*aborted {
                *running += 1;
                ok = true;
            }
        });
        ok.then(|| Running(self.clone()))
    }

    fn aborted(&self) -> bool {
        self.tx.borrow().0
    }

    async fn abort_and_wait(&self) {
        self.tx.send_modify(|s| s.0 = true);
        let mut rx = self.tx.subscribe();
        let _ = rx.wait_for(|s| s.1 == 0).await;
    }
}

struct Running(Arc<RunState>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.tx.send_modify(|s| s.1 -= 1);
    }
}

/// What a write partition reports: its staging table (or prepared transaction), its rows, and (two-phase)
/// the id of its prepared transaction (`xid8`), by which the commit step learns whether a
/// transaction that is no longer prepared was committed.
fn staged_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("staging_table", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("xact", DataType::UInt64, true),
    ]))
}

fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("count", DataType::UInt64, false)]))
}

fn properties(schema: SchemaRef, partitions: usize) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(schema),
        Partitioning::UnknownPartitioning(partitions),
        EmissionType::Final,
        Boundedness::Bounded,
    ))
}

/// Writes each input partition into its own staging table by binary COPY (or, two-phase, into the
/// table in a prepared transaction); yields one row per partition: `(staging_table, rows, xact)`,
/// `xact` being the prepared transaction's id (two-phase only).
#[derive(Debug)]
pub struct PgWriteExec {
    input: Arc<dyn ExecutionPlan>,
    target: Arc<WriteTarget>,
    state: Arc<RunState>,
    properties: Arc<PlanProperties>,
}

impl PgWriteExec {
    /// Stages `input` for `target`.
    pub fn new(input: Arc<dyn ExecutionPlan>, target: Arc<WriteTarget>) -> Self {
        let partitions = input.properties().output_partitioning().partition_count();
        PgWriteExec {
            input,
            target,
            state: RunState::new(),
            properties: properties(staged_schema(), partitions),
        }
    }

    /// The write recipe.
    pub fn target(&self) -> &Arc<WriteTarget> {
        &self.target
    }
}

impl DisplayAs for PgWriteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.target.commit {
            CommitProtocol::Staged => {
                write!(f, "PgWriteExec: table={}, staging={}*", self.target.table, self.target.stage_prefix())
            }
            CommitProtocol::TwoPhase => write!(
                f,
                "PgWriteExec: table={}, commit=TwoPhase, prepared={}*",
                self.target.table,
                self.target.stage_prefix()
            ),
        }
    }
}

/// [`CopyData`] from a DataFusion stream, encoded by etlkit-postgres's [`CopyEncoder`].
struct StreamData<'a> {
    input: SendableRecordBatchStream,
    encoder: &'a mut CopyEncoder,
    state: &'a RunState,
    table: String,
    header: bool,
    failure: Option<DataFusionError>,
}

impl CopyData for StreamData<'_> {
    async fn fill(&mut self, buf: &mut BytesMut, want: usize) -> etlkit_postgres::Result<bool> {
        if !self.header {
            self.encoder.write_header(buf);
            self.header = true;
        }
        while buf.len() < want {
            if self.state.aborted() {
                self.failure = Some(DfError::Aborted { table: self.table.clone(), cause: None }.into());
                return Err(PgError::InvalidConfig {
                    field: "input",
                    reason: "the query was aborted".into(),
                });
            }
            match self.input.next().await {
                None => {
                    self.encoder.write_trailer(buf);
                    return Ok(false);
                }
                Some(Err(e)) => {
                    self.failure = Some(e);
                    return Err(PgError::InvalidConfig { field: "input", reason: "the input failed".into() });
                }
                Some(Ok(batch)) => self.encoder.write_batch(&batch, buf)?,
            }
        }
        Ok(true)
    }
}

async fn exec(conn: &mut PgConnection, sql: String, action: &'static str, table: &str) -> Result<u64> {
    conn.execute(sqlx::AssertSqlSafe(sql))
        .await
        .map(|r| r.rows_affected())
        .map_err(|e| DfError::db(action, table.to_owned(), e))
}

/// The run ledger: a row per `INSERT INTO` (`run`, `target`, `state`, `planned`, `cause`, `gids`).
/// Partitions may run in other processes (Ballista executors), where no in-memory state reaches
/// them, so the database decides whether a run may still commit:
/// - [`open_run`] writes the row (`open`) when the query is planned;
/// - [`CommitProtocol::Staged`]: a partition commits its staging table only while holding a share
///   lock on the row in state `open` ([`hold_open_run`], inside its staging transaction); the commit
///   transaction deletes the row first and commits nothing if it was no longer `open`: a run whose
///   row is gone was committed (what a lost `COMMIT` and a retried commit step check);
/// - [`CommitProtocol::TwoPhase`]: a partition prepares its transaction only while the run is `open`
///   and, once prepared, rolls itself back if the run has been aborted or is gone meanwhile
///   ([`two_phase_end`]); the commit step sets `committing` (only from `open`) with the prepared
///   transactions it commits (`gids`), commits each of them, rolls back any other of the run's (a
///   retried task's duplicate), and deletes the row. A `committing` run is only ever finished, never
///   rolled back: by its commit step, a retried commit step, or [`resolve_prepared`];
/// - a failure ([`close_run`]) sets `aborted` with its cause (only from `open`; this waits for
///   staged partitions committing at that moment) and then, unless the run is `committing`, rolls
///   back the run's prepared transactions and drops its staging tables, so no partition can leave
///   anything behind afterwards; partitions still running then fail with that cause.
const LEDGER: &str = "etlkit.datafusion_runs";

/// Records `run` as open (creating the ledger when missing), resolves prepared transactions left by
/// interrupted two-phase runs on this database ([`recover_prepared`]), and forgets aborted runs
/// planned more than a day ago and any other run but a `committing` one planned more than 7 days
/// ago.
pub(crate) async fn open_run(target: &WriteTarget) -> Result<()> {
    let table = target.table.quoted();
    let pool = target.connector.pool().await?;
    let mut conn = pool.acquire().await.map_err(|e| DfError::db("connecting", table.clone(), e))?;
    let (exists, has_gids): (bool, bool) = sqlx::query_as(
        "SELECT to_regclass('etlkit.datafusion_runs') IS NOT NULL, EXISTS (SELECT 1 FROM pg_attribute \
         WHERE attrelid = to_regclass('etlkit.datafusion_runs') AND attname = 'gids' AND NOT attisdropped)",
    )
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| DfError::db("reading the run ledger", table.clone(), e))?;
    if !exists {
        exec(
            &mut conn,
            format!(
                "CREATE SCHEMA IF NOT EXISTS etlkit; CREATE TABLE IF NOT EXISTS {LEDGER} \
                 (run text PRIMARY KEY, target text NOT NULL, state text NOT NULL DEFAULT 'open', \
                  planned timestamptz NOT NULL DEFAULT now(), cause text, gids text[])"
            ),
            "creating the run ledger",
            &table,
        )
        .await?;
    } else if !has_gids {
        // A ledger made before the commit step recorded its transactions.
        exec(
            &mut conn,
            format!("ALTER TABLE {LEDGER} ADD COLUMN IF NOT EXISTS gids text[]"),
            "upgrading the run ledger",
            &table,
        )
        .await?;
    }
    resolve_prepared(&mut conn, &table).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH stale AS (DELETE FROM {LEDGER} WHERE (planned < now() - interval '7 days' AND state <> 'committing') \
                        OR (state = 'aborted' AND planned < now() - interval '1 day')) \
         INSERT INTO {LEDGER} (run, target) VALUES ($1, $2)"
    )))
    .bind(&target.run)
    .bind(&table)
    .execute(&mut *conn)
    .await
    .map_err(|e| DfError::db("recording the run", table, e))?;
    Ok(())
}

/// Resolves the prepared transactions that two-phase `INSERT INTO` runs left on the database of
/// `pool` (a process that crashed between `PREPARE` and the end of the commit step): commits those
/// a run's commit step had begun to commit, rolls back the others (a committing run's duplicates,
/// runs aborted, gone, or planned over a day ago and never committed). Returns how many it
/// resolved. Also run whenever an `INSERT INTO` on a [`PgTable`](crate::PgTable) is planned.
pub async fn recover_prepared(pool: &etlkit_postgres::sqlx::PgPool) -> Result<u64> {
    let mut conn = pool.acquire().await.map_err(|e| DfError::db("connecting", "recovery", e))?;
    resolve_prepared(&mut conn, "recovery").await
}

async fn resolve_prepared(conn: &mut PgConnection, table: &str) -> Result<u64> {
    let ledger: bool = sqlx::query_scalar("SELECT to_regclass('etlkit.datafusion_runs') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| DfError::db("reading the run ledger", table.to_owned(), e))?;
    if !ledger {
        return Ok(0);
    }
    // gid = etlkit_stage_<run>_<partition>_<unique>; the run is the 16 hex digits after the prefix.
    // `listed`: the commit step chose this transaction (ledgers of older versions list none).
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT p.gid, r.state, r.planned < now() - interval '1 day', r.gids IS NULL OR p.gid = ANY (r.gids), r.run \
         FROM pg_prepared_xacts p LEFT JOIN {LEDGER} r ON r.run = substr(p.gid, 14, 16) \
         WHERE p.database = current_database() AND left(p.gid, 13) = 'etlkit_stage_'"
    )))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| DfError::db("listing prepared transactions", table.to_owned(), e))?;
    let mut resolved = 0;
    for row in rows {
        let gid: String = row.get(0);
        let state: Option<String> = row.get(1);
        let old: Option<bool> = row.get(2);
        let listed: Option<bool> = row.get(3);
        let run: Option<String> = row.get(4);
        let verb = match (state.as_deref(), old) {
            // Its commit began: only ever finished.
            (Some("committing"), _) if listed != Some(false) => "COMMIT",
            (Some("open"), Some(false)) => continue, // a run in progress
            (Some("open"), _) => {
                // Abandoned: abort it first, so that its commit cannot begin while this rolls back.
                let aborted = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "UPDATE {LEDGER} SET state = 'aborted', cause = 'abandoned: planned over a day ago and never committed' \
                     WHERE run = $1 AND state = 'open'"
                )))
                .bind(&run)
                .execute(&mut *conn)
                .await
                .map_err(|e| DfError::db("aborting an abandoned run", table.to_owned(), e))?
                .rows_affected();
                if aborted != 1 {
                    continue; // its commit began meanwhile: the next resolution finishes it
                }
                "ROLLBACK"
            }
            _ => "ROLLBACK",
        };
        check_gid(&gid)?;
        match exec(conn, format!("{verb} PREPARED '{gid}'"), "resolving a prepared transaction", table).await
        {
            Ok(_) => resolved += 1,
            Err(e) => tracing::warn!(gid, error = %e, "prepared transaction not resolved"),
        }
    }
    // Runs whose commit finished everywhere.
    exec(
        conn,
        format!(
            "DELETE FROM {LEDGER} r WHERE r.state = 'committing' AND NOT EXISTS (SELECT 1 FROM pg_prepared_xacts p \
             WHERE p.database = current_database() AND substr(p.gid, 14, 16) = r.run)"
        ),
        "cleaning the run ledger",
        table,
    )
    .await?;
    Ok(resolved)
}

/// Transaction ids are our own staging names; anything else is refused before it reaches SQL.
fn check_gid(gid: &str) -> Result<()> {
    if gid.len() < 64 && gid.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        Ok(())
    } else {
        Err(DfError::InvalidConfig {
            field: "gid",
            reason: format!("{gid:?} is not an etlkit transaction id"),
        })
    }
}

/// Inside a partition's staging transaction, before its `COMMIT`: share-locks the run's ledger row,
/// or fails when the run is no longer open (another partition failed, or it was committed).
async fn hold_open_run(conn: &mut PgConnection, target: &WriteTarget) -> Result<()> {
    let table = target.table.quoted();
    let open = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT 1 FROM {LEDGER} WHERE run = $1 AND state = 'open' FOR SHARE"
    )))
    .bind(&target.run)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| DfError::db("checking the run", table.clone(), e))?;
    match open {
        Some(_) => Ok(()),
        None => Err(aborted(conn, target).await),
    }
}

/// The error for a run that is no longer open, with the failure the ledger recorded (if any).
async fn aborted(conn: &mut PgConnection, target: &WriteTarget) -> DfError {
    let cause: Option<String> =
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT cause FROM {LEDGER} WHERE run = $1")))
            .bind(&target.run)
            .fetch_optional(&mut *conn)
            .await
            .ok()
            .flatten()
            .flatten();
    DfError::Aborted { table: target.table.quoted(), cause }
}

/// The run's state (`None`: no longer in the ledger).
async fn run_state(conn: &mut PgConnection, target: &WriteTarget) -> Result<Option<String>> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT state FROM {LEDGER} WHERE run = $1")))
        .bind(&target.run)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| DfError::db("checking the run", target.table.quoted(), e))
}

/// A two-phase partition's last step, in its open transaction: prepares it as `gid` if the run is
/// still open, then, should the run have been aborted meanwhile, rolls its own prepared transaction
/// back (the aborting process may have listed the prepared transactions before this one existed).
/// Returns the transaction's id (`xid8`).
async fn two_phase_end(conn: &mut PgConnection, target: &WriteTarget, gid: &str) -> Result<u64> {
    let table = target.table.quoted();
    if run_state(conn, target).await?.as_deref() != Some("open") {
        return Err(aborted(conn, target).await);
    }
    check_gid(gid)?;
    let xact: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| DfError::db("reading the partition's transaction id", table.clone(), e))?;
    let xact: u64 = xact.parse().map_err(|_| DfError::InvalidConfig {
        field: "xact",
        reason: format!("{xact:?} is not a transaction id"),
    })?;
    exec(conn, format!("PREPARE TRANSACTION '{gid}'"), "preparing the partition's transaction", &table)
        .await?;
    match run_state(conn, target).await?.as_deref() {
        Some("open" | "committing") => Ok(xact),
        _ => {
            let _ = exec(
                conn,
                format!("ROLLBACK PREPARED '{gid}'"),
                "rolling back a prepared transaction",
                &table,
            )
            .await;
            Err(aborted(conn, target).await)
        }
    }
}

/// Rolls back every prepared transaction of the run except those named in `keep`.
async fn rollback_prepared(conn: &mut PgConnection, target: &WriteTarget, keep: &[String]) -> Result<()> {
    let table = target.table.quoted();
    let gids: Vec<String> = sqlx::query_scalar(
        "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND left(gid, length($1)) = $1",
    )
    .bind(target.stage_prefix())
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| DfError::db("listing prepared transactions", table.clone(), e))?;
    for gid in gids.into_iter().filter(|g| !keep.contains(g)) {
        check_gid(&gid)?;
        // Gone already (its own partition rolled it back): fine.
        let _ =
            exec(conn, format!("ROLLBACK PREPARED '{gid}'"), "rolling back a prepared transaction", &table)
                .await;
    }
    Ok(())
}

/// Ends the run after a failure: no partition commits anything after this returns; then, unless the
/// run's commit has begun (`committing`: it is only ever finished, by its commit step or
/// [`resolve_prepared`]), the run's prepared transactions are rolled back and its staging tables
/// dropped.
async fn close_run(target: &WriteTarget, cause: &DataFusionError) {
    let table = target.table.quoted();
    let cause: String = error_chain(cause).chars().take(2000).collect();
    let closed = async {
        let pool = target.connector.pool().await?;
        let mut conn = pool.acquire().await.map_err(|e| DfError::db("connecting", table.clone(), e))?;
        abort_if_open(&mut conn, target, &cause).await?;
        // Read after the UPDATE, which waited for whoever held the row: `committing` is final.
        if run_state(&mut conn, target).await?.as_deref() == Some("committing") {
            return Ok(());
        }
        rollback_prepared(&mut conn, target, &[]).await?;
        drop(conn);
        // The row stays (`aborted`, with the cause) so partitions still running report the cause;
        // `open_run` forgets it after a day.
        sweep(target).await
    }
    .await;
    if let Err(e) = closed {
        tracing::warn!(table = %target.table, error = %e, "staging tables or prepared transactions may be left behind");
    }
}

/// An error's messages down its source chain, each once, `: `-separated (the cause a run records).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let message = err.to_string();
        if !out.contains(&message) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&message);
        }
        cur = err.source();
    }
    out
}

/// A partition's prepared transaction, as its write task reported it.
#[derive(Debug, Clone)]
struct Prepared {
    gid: String,
    /// Its `xid8` (`None` from a task that did not report one).
    xact: Option<u64>,
}

/// A transaction's status (`committed`, `aborted`, `in progress`; `None`: unknown or too old).
async fn xact_status(
    conn: &mut PgConnection,
    xact: Option<u64>,
) -> std::result::Result<Option<String>, sqlx::Error> {
    let Some(xact) = xact else { return Ok(None) };
    sqlx::query_scalar("SELECT pg_xact_status($1::text::xid8)::text")
        .bind(xact.to_string())
        .fetch_one(&mut *conn)
        .await
}

/// Commits one prepared transaction of a committing run: `Ok(true)` once it is committed, here or
/// by another session ([`resolve_prepared`]), `Ok(false)` if another session rolled it back. A lost
/// connection is replaced and the commit tried again, as [`RetryPolicy::default`](etlkit_postgres::RetryPolicy)
/// says; `Err` says why it is
/// still prepared or unknown.
async fn finish_prepared(
    pool: &etlkit_postgres::sqlx::PgPool,
    conn: &mut etlkit_postgres::sqlx::pool::PoolConnection<etlkit_postgres::sqlx::Postgres>,
    p: &Prepared,
) -> std::result::Result<bool, String> {
    let mut attempt = 0u64;
    loop {
        attempt += 1;
        let err = match conn.execute(sqlx::AssertSqlSafe(format!("COMMIT PREPARED '{}'", p.gid))).await {
            Ok(_) => return Ok(true),
            Err(e) => e,
        };
        if let sqlx::Error::Database(db) = &err {
            if db.code().as_deref() != Some("42704") {
                return Err(format!("COMMIT PREPARED: {err}"));
            }
            // No longer prepared: ended by another session (or by an attempt whose answer was lost).
            return match xact_status(conn, p.xact).await {
                Ok(Some(s)) if s == "committed" => Ok(true),
                Ok(Some(s)) if s == "aborted" => Ok(false),
                Ok(s) => Err(format!("no longer prepared and its status is {s:?}")),
                Err(e) => Err(format!("no longer prepared and its status could not be read: {e}")),
            };
        }
        // The connection failed: the commit may or may not have reached the server. Again, on a
        // new connection: a transaction that did commit is then "not prepared" and its status says so.
        tracing::warn!(gid = %p.gid, attempt, error = %err, "COMMIT PREPARED failed; retrying on a new connection");
        conn.close_on_drop();
        let retry = etlkit_postgres::RetryPolicy::default();
        if attempt > u64::from(retry.max_retries) {
            return Err(format!("COMMIT PREPARED: {err}"));
        }
        tokio::time::sleep(retry.backoff(attempt as u32)).await;
        match pool.acquire().await {
            Ok(c) => *conn = c,
            Err(e) => return Err(format!("COMMIT PREPARED: {err}; reconnecting: {e}")),
        }
    }
}

/// The two-phase commit step: `committing` (recording the transactions it commits), then `COMMIT
/// PREPARED` each partition's transaction, roll back any other of the run's, and forget the run.
/// Once `committing`, the run is only ever finished: a transaction another session committed
/// meanwhile counts as committed (its `xid8` says so), a lost connection is replaced, a retried
/// commit step finishes what the first began (and reports success when the first one finished),
/// and a commit that still cannot finish is [`DfError::CommitUnfinished`], never retryable, the rest
/// left to [`resolve_prepared`].
async fn commit_prepared(target: &WriteTarget, parts: &[Prepared]) -> Result<()> {
    let table = target.table.quoted();
    for p in parts {
        check_gid(&p.gid)?;
    }
    let gids: Vec<String> = parts.iter().map(|p| p.gid.clone()).collect();
    let pool = target.connector.pool().await?;
    let mut conn = pool.acquire().await.map_err(|e| DfError::db("connecting", table.clone(), e))?;
    let started = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {LEDGER} SET state = 'committing', gids = $2 WHERE run = $1 AND state = 'open'"
    )))
    .bind(&target.run)
    .bind(&gids)
    .execute(&mut *conn)
    .await
    .map_err(|e| DfError::db("starting the commit", table.clone(), e))?
    .rows_affected();
    if started != 1 {
        match run_state(&mut conn, target).await?.as_deref() {
            // A retried commit step: finish what the first one began.
            Some("committing") => {}
            // Gone: a commit step that finished forgets the run; true if each transaction committed.
            None => {
                let mut all = true;
                for p in parts {
                    let status = xact_status(&mut conn, p.xact)
                        .await
                        .map_err(|e| DfError::db("checking a partition's transaction", table.clone(), e))?;
                    all &= status.as_deref() == Some("committed");
                }
                if all {
                    return Ok(());
                }
                return Err(aborted(&mut conn, target).await);
            }
            _ => return Err(aborted(&mut conn, target).await),
        }
    }
    // From here the run commits: whatever this step cannot finish, `resolve_prepared` does.
    let mut committed = 0;
    let mut failures = Vec::new();
    for p in parts {
        match finish_prepared(&pool, &mut conn, p).await {
            Ok(true) => committed += 1,
            Ok(false) => failures.push(format!("{} was rolled back by another session", p.gid)),
            Err(reason) => failures.push(format!("{}: {reason}", p.gid)),
        }
    }
    if !failures.is_empty() {
        return Err(DfError::CommitUnfinished {
            table,
            committed,
            partitions: parts.len(),
            reason: failures.join("; "),
        });
    }
    // Every partition is committed: what follows is cleanup, which `resolve_prepared` also does.
    let cleanup = async {
        rollback_prepared(&mut conn, target, &gids).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {LEDGER} WHERE run = $1")))
            .bind(&target.run)
            .execute(&mut *conn)
            .await
            .map_err(|e| DfError::db("closing the run", table.clone(), e))?;
        Ok::<_, DfError>(())
    };
    if let Err(e) = cleanup.await {
        tracing::warn!(table = %target.table, error = %e, "committed; the run's leftovers are resolved by the next INSERT INTO");
    }
    Ok(())
}

async fn write_partition(
    target: Arc<WriteTarget>,
    state: Arc<RunState>,
    partition: usize,
    input: SendableRecordBatchStream,
) -> DfResult<RecordBatch> {
    let table = target.table.quoted();
    let Some(_running) = state.enter() else {
        return Err(DfError::Aborted { table, cause: None }.into());
    };
    let stage = target.stage(partition);
    let pool = target.connector.pool().await?;
    let mut conn = pool.acquire().await.map_err(|e| DfError::db("connecting", stage.quoted(), e))?;
    // Only the columns the INSERT gives (DataFusion fills the ones a column list leaves out with
    // NULL; those are not written, so PostgreSQL's DEFAULT or the existing value stays).
    let given: Vec<usize> = input
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| target.columns.iter().any(|c| &c.name == f.name()))
        .map(|(i, _)| i)
        .collect();
    let input: SendableRecordBatchStream = if given.len() == input.schema().fields().len() {
        input
    } else {
        let schema = Arc::new(input.schema().project(&given)?);
        let projected = input.map(move |b| b.and_then(|b| Ok(b.project(&given)?)));
        Box::pin(RecordBatchStreamAdapter::new(schema, projected))
    };
    let schema = input.schema();
    let mut data_failure = None;
    let two_phase = target.commit == CommitProtocol::TwoPhase;
    // Staged: the staging table is created and filled in one transaction: `COPY ... FREEZE` writes
    // the rows frozen and all-visible (no hint-bit pass when the commit step reads them), and a
    // failure rolls the table away with it. Two-phase: COPY straight into the table, then PREPARE;
    // a key repeated in another partition waits on that partition's prepared transaction, which
    // only the commit step ends: the lock timeout turns that wait into an error.
    let result: Result<(u64, Option<u64>)> = async {
        exec(&mut conn, "BEGIN".into(), "staging", &table).await?;
        let into = if two_phase {
            exec(&mut conn, "SET LOCAL lock_timeout = '30s'".into(), "staging", &table).await?;
            table.clone()
        } else {
            exec(
                &mut conn,
                format!("CREATE UNLOGGED TABLE {} (LIKE {table} INCLUDING DEFAULTS)", stage.quoted()),
                "creating a staging table",
                &table,
            )
            .await?;
            if !target.omitted.is_empty() {
                // Columns the INSERT leaves out are not staged: the commit leaves them to the table.
                let drops: Vec<String> =
                    target.omitted.iter().map(|c| format!("DROP COLUMN {}", quote_ident(c))).collect();
                exec(
                    &mut conn,
                    format!("ALTER TABLE {} {}", stage.quoted(), drops.join(", ")),
                    "creating a staging table",
                    &table,
                )
                .await?;
            }
            stage.quoted()
        };
        let mut encoder =
            CopyEncoder::new(&target.columns, &schema, NanosPolicy::default(), NulPolicy::default())?;
        let statement = format!(
            "COPY {into} ({}) FROM STDIN (FORMAT binary{})",
            encoder.column_names().iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", "),
            if two_phase { "" } else { ", FREEZE" }
        );
        let mut data = StreamData {
            input,
            encoder: &mut encoder,
            state: &state,
            table: table.clone(),
            header: false,
            failure: None,
        };
        let mut buf = BytesMut::new();
        let r =
            copy_in(&mut conn, &statement, &into, &mut data, &mut buf, &CopyFlow::new(target.send_buffer))
                .await;
        data_failure = data.failure.take();
        let rows = r?;
        let xact = if two_phase {
            Some(two_phase_end(&mut conn, &target, &stage.name).await?)
        } else {
            hold_open_run(&mut conn, &target).await?;
            exec(&mut conn, "COMMIT".into(), "committing a staging table", &table).await?;
            None
        };
        Ok((rows, xact))
    }
    .await;
    match result {
        Ok((rows, xact)) => {
            tracing::debug!(stage = %stage, rows, "staged");
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(vec![stage.name.clone()])),
                Arc::new(UInt64Array::from(vec![rows])),
                Arc::new(UInt64Array::from(vec![xact])),
            ];
            RecordBatch::try_new(staged_schema(), columns)
                .map_err(|source| DfError::Arrow { what: "staged rows".into(), source }.into())
        }
        Err(e) => {
            // Rolling back drops the staging table created in the same transaction.
            let drop_sql = format!("DROP TABLE IF EXISTS {}", stage.quoted());
            let rolled_back =
                exec(&mut conn, "ROLLBACK".into(), "rolling back a staging table", &table).await.is_ok();
            if !rolled_back
                || exec(&mut conn, drop_sql.clone(), "dropping a staging table", &table).await.is_err()
            {
                conn.close_on_drop();
                drop(conn);
                if let Ok(mut c) = pool.acquire().await {
                    let _ = exec(&mut c, drop_sql, "dropping a staging table", &table).await;
                }
            }
            let failure: DataFusionError = data_failure.unwrap_or_else(|| e.into());
            close_run(&target, &failure).await;
            Err(failure)
        }
    }
}

impl ExecutionPlan for PgWriteExec {
    fn name(&self) -> &str {
        "PgWriteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = children.swap_remove(0);
        let partitions = input.properties().output_partitioning().partition_count();
        Ok(Arc::new(PgWriteExec {
            input,
            target: self.target.clone(),
            state: self.state.clone(),
            properties: properties(staged_schema(), partitions),
        }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        // The COPY runs as its own task: a cancelled query does not cut it off between creating and
        // dropping its staging table. The commit step waits for every such task after a failure.
        let task = tokio::spawn(write_partition(self.target.clone(), self.state.clone(), partition, input));
        let fut = async move { task.await.map_err(|e| DataFusionError::External(Box::new(e)))? };
        Ok(Box::pin(RecordBatchStreamAdapter::new(staged_schema(), futures::stream::once(fut))))
    }
}

/// Moves every staged row into the table in one transaction and drops the staging tables (or,
/// two-phase, commits every partition's prepared transaction); yields DataFusion's one-row `count`.
/// After any failure (a partition, the commit), it stops the other partitions, waits for them, and
/// closes the run: drops every staging table and rolls back every prepared transaction of it, unless
/// its two-phase commit had begun (that is only ever finished).
#[derive(Debug)]
pub struct PgCommitExec {
    input: Arc<dyn ExecutionPlan>,
    target: Arc<WriteTarget>,
    state: Option<Arc<RunState>>,
    properties: Arc<PlanProperties>,
}

impl PgCommitExec {
    /// Commits what `input` (a [`PgWriteExec`], possibly behind a coalesce) staged.
    pub fn new(input: Arc<dyn ExecutionPlan>, target: Arc<WriteTarget>) -> Self {
        let state = find_state(&input);
        PgCommitExec { input, target, state, properties: properties(count_schema(), 1) }
    }

    /// The write recipe.
    pub fn target(&self) -> &Arc<WriteTarget> {
        &self.target
    }
}

fn find_state(plan: &Arc<dyn ExecutionPlan>) -> Option<Arc<RunState>> {
    if let Some(w) = (plan.as_ref() as &dyn std::any::Any).downcast_ref::<PgWriteExec>() {
        return Some(w.state.clone());
    }
    plan.children().into_iter().find_map(find_state)
}

impl DisplayAs for PgCommitExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PgCommitExec: table={}, mode={:?}, commit={:?}",
            self.target.table, self.target.mode, self.target.commit
        )
    }
}

/// Drops every staging table of the run (in the target's schema, named with the run's prefix).
async fn sweep(target: &WriteTarget) -> Result<()> {
    let table = target.table.quoted();
    let pool = target.connector.pool().await?;
    let mut conn = pool.acquire().await.map_err(|e| DfError::db("connecting", table.clone(), e))?;
    let prefix = target.stage_prefix();
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind = 'r' AND left(c.relname, length($2)) = $2",
    )
    .bind(&target.namespace)
    .bind(&prefix)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| DfError::db("listing staging tables", table.clone(), e))?;
    for n in names {
        let stage = TableRef::qualified(target.namespace.clone(), n);
        exec(
            &mut conn,
            format!("DROP TABLE IF EXISTS {}", stage.quoted()),
            "dropping a staging table",
            &table,
        )
        .await?;
    }
    Ok(())
}

/// What the staged commit transaction found.
enum Moved {
    /// It moved this many rows; `COMMIT` comes next.
    Rows(u64),
    /// The run is gone from the ledger: an earlier commit step of this run committed (this one is
    /// a retry of it).
    Earlier,
}

/// The staged commit: one transaction deletes the run's ledger row (only from `open`), moves every
/// staged row into the table with ONE `INSERT ... SELECT` over all staging tables (so that an
/// upsert meeting a key twice fails, whichever partitions staged it), drops the staging tables and
/// commits. A retried commit step of a run that committed reports `staged_rows` (the rows the
/// partitions staged: what the commit moved, but for `DO NOTHING` upserts, which count only the
/// rows they inserted). A `COMMIT` whose answer is lost is settled by the ledger ([`settle_commit`]).
async fn commit(target: &WriteTarget, staged: &[String], staged_rows: u64) -> Result<u64> {
    let table = target.table.quoted();
    let pool = target.connector.pool().await?;
    let mut conn = pool.acquire().await.map_err(|e| DfError::db("connecting", table.clone(), e))?;
    let cols = target.column_list();
    let conflict = match &target.mode {
        WriteMode::Upsert { key } => {
            let key_list = key.iter().map(|k| quote_ident(k)).collect::<Vec<_>>().join(", ");
            let set: Vec<String> = target
                .columns
                .iter()
                .filter(|c| !key.contains(&c.name))
                .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(&c.name)))
                .collect();
            if set.is_empty() {
                format!(" ON CONFLICT ({key_list}) DO NOTHING")
            } else {
                format!(" ON CONFLICT ({key_list}) DO UPDATE SET {}", set.join(", "))
            }
        }
        _ => String::new(),
    };
    let started = std::time::Instant::now();
    let work = async {
        exec(&mut conn, "BEGIN".into(), "starting the commit", &table).await?;
        // The run must still be open: a partition that failed (in any process) has closed it.
        let open = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {LEDGER} WHERE run = $1 AND state = 'open'"
        )))
        .bind(&target.run)
        .execute(&mut *conn)
        .await
        .map_err(|e| DfError::db("closing the run", table.clone(), e))?
        .rows_affected();
        if open != 1 {
            return match run_state(&mut conn, target).await? {
                None => Ok(Moved::Earlier),
                Some(_) => Err(aborted(&mut conn, target).await),
            };
        }
        if target.mode == WriteMode::Overwrite {
            exec(&mut conn, format!("TRUNCATE {table}"), "truncating", &table).await?;
        }
        let mut rows = 0;
        if !staged.is_empty() {
            let stages: Vec<String> = staged
                .iter()
                .map(|n| TableRef::qualified(target.namespace.clone(), n.clone()).quoted())
                .collect();
            let select = stages
                .iter()
                .map(|s| format!("SELECT {cols} FROM {s}"))
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            rows = exec(
                &mut conn,
                format!("INSERT INTO {table} ({cols}) {select}{conflict}"),
                "moving staged rows",
                &table,
            )
            .await?;
            exec(&mut conn, format!("DROP TABLE {}", stages.join(", ")), "dropping staging tables", &table)
                .await?;
        }
        Ok::<Moved, DfError>(Moved::Rows(rows))
    };
    let rows = match work.await {
        Ok(Moved::Rows(rows)) => rows,
        Ok(Moved::Earlier) => {
            if exec(&mut conn, "ROLLBACK".into(), "rolling back", &table).await.is_err() {
                conn.close_on_drop();
            }
            tracing::debug!(table = %target.table, run = %target.run, "committed by an earlier attempt");
            return Ok(staged_rows);
        }
        Err(e) => {
            if exec(&mut conn, "ROLLBACK".into(), "rolling back", &table).await.is_err() {
                conn.close_on_drop();
            }
            return Err(e);
        }
    };
    if let Err(e) = exec(&mut conn, "COMMIT".into(), "committing", &table).await {
        conn.close_on_drop();
        drop(conn);
        return settle_commit(target, e, rows).await;
    }
    tracing::debug!(table = %target.table, rows, staged = staged.len(), seconds = started.elapsed().as_secs_f64(), "committed");
    Ok(rows)
}

/// Sets the run `aborted` (with its cause) if it is still `open`; waits for whoever holds its row.
async fn abort_if_open(conn: &mut PgConnection, target: &WriteTarget, cause: &str) -> Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {LEDGER} SET state = 'aborted', cause = $2 WHERE run = $1 AND state = 'open'"
    )))
    .bind(&target.run)
    .bind(cause)
    .execute(&mut *conn)
    .await
    .map_err(|e| DfError::db("aborting the run", target.table.quoted(), e))?;
    Ok(())
}

/// The staged commit's `COMMIT` failed with `err`: the server may have committed all the same (a
/// connection lost after the server committed). The ledger tells, on a new connection: the run is
/// aborted if still `open` (waiting, at most a minute, for the lost transaction to end); its row
/// gone means the commit transaction, which deleted it, committed. Returns `rows` when committed,
/// `err` when not (retrying can then help: nothing was committed), and
/// [`DfError::CommitOutcomeUnknown`] (never retryable) when the ledger cannot be read.
async fn settle_commit(target: &WriteTarget, err: DfError, rows: u64) -> Result<u64> {
    let table = target.table.quoted();
    let cause: String = error_chain(&err).chars().take(2000).collect();
    let checked = async {
        let pool = target.connector.pool().await?;
        let mut conn = pool.acquire().await.map_err(|e| DfError::db("connecting", table.clone(), e))?;
        exec(&mut conn, "BEGIN".into(), "checking the run", &table).await?;
        exec(&mut conn, "SET LOCAL lock_timeout = '60s'".into(), "checking the run", &table).await?;
        abort_if_open(&mut conn, target, &cause).await?;
        let state = run_state(&mut conn, target).await?;
        exec(&mut conn, "COMMIT".into(), "checking the run", &table).await?;
        Ok::<_, DfError>(state)
    };
    match checked.await {
        Ok(None) => {
            tracing::warn!(table = %target.table, run = %target.run, error = %err, "COMMIT failed on the client, but the server committed");
            Ok(rows)
        }
        Ok(Some(_)) => Err(err),
        Err(check) => Err(DfError::CommitOutcomeUnknown {
            table,
            run: target.run.clone(),
            reason: format!("{cause}; then checking the run ledger: {}", error_chain(&check)),
        }),
    }
}

impl ExecutionPlan for PgCommitExec {
    fn name(&self) -> &str {
        "PgCommitExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = children.swap_remove(0);
        let state = find_state(&input).or_else(|| self.state.clone());
        Ok(Arc::new(PgCommitExec {
            input,
            target: self.target.clone(),
            state,
            properties: self.properties.clone(),
        }))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "PgCommitExec has one partition, not {partition}"
            )));
        }
        let mut input = self.input.execute(0, context)?;
        let target = self.target.clone();
        let state = self.state.clone();
        let fut = async move {
            let mut staged = Vec::new();
            let mut staged_rows = 0u64;
            let mut failure = None;
            while let Some(b) = input.next().await {
                match b {
                    Ok(b) => {
                        let names = b.column(0).as_any().downcast_ref::<StringArray>();
                        let xacts = b.columns().get(2).and_then(|c| c.as_any().downcast_ref::<UInt64Array>());
                        if let Some(names) = names {
                            staged.extend(names.iter().enumerate().filter_map(|(i, n)| {
                                let xact = xacts.filter(|x| x.is_valid(i)).map(|x| x.value(i));
                                n.map(|gid| Prepared { gid: gid.to_owned(), xact })
                            }));
                        }
                        if let Some(rows) = b.column(1).as_any().downcast_ref::<UInt64Array>() {
                            staged_rows += rows.iter().flatten().sum::<u64>();
                        }
                    }
                    Err(e) => {
                        // Keep reading: every partition ends on its own once one has failed, and
                        // the error to report is the cause, not another partition's "aborted".
                        let aborted = matches!(DfError::find(&e), Some(DfError::Aborted { .. }));
                        if let Some(state) = &state {
                            state.tx.send_modify(|s| s.0 = true);
                        }
                        match &failure {
                            None => failure = Some((e, aborted)),
                            Some((_, true)) if !aborted => failure = Some((e, false)),
                            _ => {}
                        }
                    }
                }
            }
            drop(input);
            let result = match failure {
                Some((e, _)) => Err(e),
                None => match target.commit {
                    CommitProtocol::Staged => {
                        let names: Vec<String> = staged.into_iter().map(|p| p.gid).collect();
                        commit(&target, &names, staged_rows).await
                    }
                    CommitProtocol::TwoPhase => commit_prepared(&target, &staged).await.map(|()| staged_rows),
                }
                .map_err(DataFusionError::from),
            };
            match result {
                Ok(rows) => {
                    RecordBatch::try_new(count_schema(), vec![Arc::new(UInt64Array::from(vec![rows]))])
                        .map_err(|source| DfError::Arrow { what: "count".into(), source }.into())
                }
                Err(e) => {
                    if let Some(state) = &state {
                        state.abort_and_wait().await;
                    }
                    close_run(&target, &e).await;
                    Err(e)
                }
            }
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(count_schema(), futures::stream::once(fut))))
    }
}

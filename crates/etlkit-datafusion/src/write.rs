//! `INSERT INTO` a PostgreSQL table: [`PgWriteExec`] (one staging table per input partition, filled by
//! binary COPY, in parallel) and [`PgCommitExec`] (one transaction moving every staged row into the
//! table). DataFusion's `DataSinkExec` needs a single input partition; this pair keeps the COPYs
//! parallel and the commit single, like iceberg-rust's write and commit plans.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
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
    /// only; the server needs `max_prepared_transactions` of at least the number of partitions.
    /// A failure anywhere rolls every partition back; a commit interrupted by a crash is finished
    /// (or a run abandoned before its commit rolled back) by the next `INSERT INTO` planned on the
    /// same database, or by [`recover_prepared`](crate::recover_prepared).
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
    /// The target's columns (catalog).
    pub columns: Vec<TableColumn>,
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

fn staged_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("staging_table", DataType::Utf8, false),
        Field::new("rows", DataType::UInt64, false),
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

/// Writes each input partition into its own staging table by binary COPY; yields one row per
/// partition: `(staging_table, rows)`.
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

/// The run ledger: a row per `INSERT INTO` (`run`, `target`, `state`, `planned`). Partitions may run
/// in other processes (Ballista executors), where no in-memory state reaches them, so the database
/// decides whether a run may still commit:
/// - [`open_run`] writes the row (`open`) when the query is planned;
/// - [`CommitProtocol::Staged`]: a partition commits its staging table only while holding a share
///   lock on the row in state `open` ([`hold_open_run`], inside its staging transaction); the commit
///   transaction deletes the row first and commits nothing if it was no longer `open`;
/// - [`CommitProtocol::TwoPhase`]: a partition prepares its transaction only while the run is `open`
///   and, once prepared, rolls itself back if the run has been aborted or is gone meanwhile
///   ([`two_phase_end`]); the commit step sets `committing` (only from `open`), commits every
///   partition's prepared transaction, rolls back any other of the run's (a retried task's
///   duplicate), and deletes the row;
/// - a failure ([`close_run`]) sets `aborted` with its cause (only from `open`; this waits for
///   staged partitions committing at that moment), rolls back the run's prepared transactions and
///   drops its staging tables, so no partition can leave anything behind afterwards; partitions
///   still running then fail with that cause.
const LEDGER: &str = "etlkit.datafusion_runs";

/// Records `run` as open (creating the ledger when missing), resolves prepared transactions left by
/// interrupted two-phase runs on this database ([`recover_prepared`]), and forgets aborted runs
/// planned more than a day ago and any run planned more than 7 days ago.
pub(crate) async fn open_run(target: &WriteTarget) -> Result<()> {
    let table = target.table.quoted();
    let pool = target.connector.pool().await?;
    let mut conn = pool.acquire().await.map_err(|e| DfError::db("connecting", table.clone(), e))?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('etlkit.datafusion_runs') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| DfError::db("reading the run ledger", table.clone(), e))?;
    if !exists {
        exec(
            &mut conn,
            format!(
                "CREATE SCHEMA IF NOT EXISTS etlkit; CREATE TABLE IF NOT EXISTS {LEDGER} \
                 (run text PRIMARY KEY, target text NOT NULL, state text NOT NULL DEFAULT 'open', \
                  planned timestamptz NOT NULL DEFAULT now(), cause text)"
            ),
            "creating the run ledger",
            &table,
        )
        .await?;
    }
    resolve_prepared(&mut conn, &table).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH stale AS (DELETE FROM {LEDGER} WHERE planned < now() - interval '7 days' \
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
/// of runs whose commit had begun, rolls back the others (runs aborted, gone, or planned over a day
/// ago and never committed). Returns how many it resolved. Also run whenever an `INSERT INTO` on a
/// [`PgTable`](crate::PgTable) is planned.
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
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT p.gid, r.state, r.planned < now() - interval '1 day' FROM pg_prepared_xacts p \
         LEFT JOIN {LEDGER} r ON r.run = substr(p.gid, 14, 16) \
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
        let verb = match (state.as_deref(), old) {
            (Some("committing"), _) => "COMMIT",
            (Some("open"), Some(false)) => continue, // a run in progress
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
async fn two_phase_end(conn: &mut PgConnection, target: &WriteTarget, gid: &str) -> Result<()> {
    let table = target.table.quoted();
    if run_state(conn, target).await?.as_deref() != Some("open") {
        return Err(aborted(conn, target).await);
    }
    check_gid(gid)?;
    exec(conn, format!("PREPARE TRANSACTION '{gid}'"), "preparing the partition's transaction", &table)
        .await?;
    match run_state(conn, target).await?.as_deref() {
        Some("open" | "committing") => Ok(()),
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

/// Ends the run after a failure: no partition commits anything after this returns; then the run's
/// prepared transactions are rolled back and its staging tables dropped.
async fn close_run(target: &WriteTarget, cause: &DataFusionError) {
    let table = target.table.quoted();
    let cause: String = error_chain(cause).chars().take(2000).collect();
    let closed = async {
        let pool = target.connector.pool().await?;
        let mut conn = pool.acquire().await.map_err(|e| DfError::db("connecting", table.clone(), e))?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {LEDGER} SET state = 'aborted', cause = $2 WHERE run = $1 AND state = 'open'"
        )))
        .bind(&target.run)
        .bind(&cause)
        .execute(&mut *conn)
        .await
        .map_err(|e| DfError::db("aborting the run", table.clone(), e))?;
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

/// The two-phase commit step: `committing`, then `COMMIT PREPARED` each partition's transaction,
/// roll back any other of the run's, and forget the run.
async fn commit_prepared(target: &WriteTarget, gids: &[String]) -> Result<()> {
    let table = target.table.quoted();
    let pool = target.connector.pool().await?;
    let mut conn = pool.acquire().await.map_err(|e| DfError::db("connecting", table.clone(), e))?;
    let started = sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {LEDGER} SET state = 'committing' WHERE run = $1 AND state = 'open'"
    )))
    .bind(&target.run)
    .execute(&mut *conn)
    .await
    .map_err(|e| DfError::db("starting the commit", table.clone(), e))?
    .rows_affected();
    if started != 1 {
        return Err(aborted(&mut conn, target).await);
    }
    // From here the run commits: an interrupted loop is finished by `resolve_prepared`.
    for gid in gids {
        check_gid(gid)?;
        exec(&mut conn, format!("COMMIT PREPARED '{gid}'"), "committing a partition", &table).await?;
    }
    rollback_prepared(&mut conn, target, gids).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {LEDGER} WHERE run = $1")))
        .bind(&target.run)
        .execute(&mut *conn)
        .await
        .map_err(|e| DfError::db("closing the run", table, e))?;
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
    let schema = input.schema();
    let mut data_failure = None;
    let two_phase = target.commit == CommitProtocol::TwoPhase;
    // Staged: the staging table is created and filled in one transaction: `COPY ... FREEZE` writes
    // the rows frozen and all-visible (no hint-bit pass when the commit step reads them), and a
    // failure rolls the table away with it. Two-phase: COPY straight into the table, then PREPARE;
    // a key repeated in another partition waits on that partition's prepared transaction, which
    // only the commit step ends: the lock timeout turns that wait into an error.
    let result: Result<u64> = async {
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
        if two_phase {
            two_phase_end(&mut conn, &target, &stage.name).await?;
        } else {
            hold_open_run(&mut conn, &target).await?;
            exec(&mut conn, "COMMIT".into(), "committing a staging table", &table).await?;
        }
        Ok(rows)
    }
    .await;
    match result {
        Ok(rows) => {
            tracing::debug!(stage = %stage, rows, "staged");
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from(vec![stage.name.clone()])),
                Arc::new(UInt64Array::from(vec![rows])),
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

/// Moves every staged row into the table in one transaction and drops the staging tables; yields
/// DataFusion's one-row `count`. After any failure (a partition, the commit), it stops the other
/// partitions, waits for them, and drops every staging table of the run.
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

async fn commit(target: &WriteTarget, staged: &[String]) -> Result<u64> {
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
            return Err(aborted(&mut conn, target).await);
        }
        if target.mode == WriteMode::Overwrite {
            exec(&mut conn, format!("TRUNCATE {table}"), "truncating", &table).await?;
        }
        let mut rows = 0;
        for name in staged {
            let stage = TableRef::qualified(target.namespace.clone(), name.clone());
            rows += exec(
                &mut conn,
                format!("INSERT INTO {table} ({cols}) SELECT {cols} FROM {}{conflict}", stage.quoted()),
                "moving staged rows",
                &table,
            )
            .await?;
        }
        if !staged.is_empty() {
            let list = staged
                .iter()
                .map(|n| TableRef::qualified(target.namespace.clone(), n.clone()).quoted())
                .collect::<Vec<_>>()
                .join(", ");
            exec(&mut conn, format!("DROP TABLE {list}"), "dropping staging tables", &table).await?;
        }
        exec(&mut conn, "COMMIT".into(), "committing", &table).await?;
        Ok::<u64, DfError>(rows)
    };
    match work.await {
        Ok(rows) => {
            tracing::debug!(table = %target.table, rows, staged = staged.len(), seconds = started.elapsed().as_secs_f64(), "committed");
            Ok(rows)
        }
        Err(e) => {
            if exec(&mut conn, "ROLLBACK".into(), "rolling back", &table).await.is_err() {
                conn.close_on_drop();
            }
            Err(e)
        }
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
                        if let Some(names) = names {
                            staged.extend(names.iter().flatten().map(str::to_owned));
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
                    CommitProtocol::Staged => commit(&target, &staged).await,
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

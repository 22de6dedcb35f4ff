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
use etlkit_postgres::sqlx::{self, Executor, PgConnection};
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
        write!(f, "PgWriteExec: table={}, staging={}*", self.target.table, self.target.stage_prefix())
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
                self.failure = Some(DfError::Aborted { table: self.table.clone() }.into());
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

/// The run ledger: a row per `INSERT INTO` that may still commit. Partitions may run in other
/// processes (Ballista executors), where no in-memory state reaches them, so the database decides:
/// - [`open_run`] writes the row when the query is planned;
/// - a partition commits its staging table only while holding a share lock on the row
///   ([`hold_open_run`], inside its staging transaction);
/// - a failure deletes the row ([`close_run`]; that waits for partitions committing at that moment)
///   and then drops every staging table of the run, so no partition can leave one behind later;
/// - the commit step deletes the row in its own transaction, and finds nothing to commit if a
///   failure got there first.
const LEDGER: &str = "etlkit.datafusion_runs";

/// Records `run` as open (creating the ledger when missing) and forgets runs planned more than 7
/// days ago that never ran.
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
                 (run text PRIMARY KEY, target text NOT NULL, planned timestamptz NOT NULL DEFAULT now())"
            ),
            "creating the run ledger",
            &table,
        )
        .await?;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH stale AS (DELETE FROM {LEDGER} WHERE planned < now() - interval '7 days') \
         INSERT INTO {LEDGER} (run, target) VALUES ($1, $2)"
    )))
    .bind(&target.run)
    .bind(&table)
    .execute(&mut *conn)
    .await
    .map_err(|e| DfError::db("recording the run", table, e))?;
    Ok(())
}

/// Inside a partition's staging transaction, before its `COMMIT`: share-locks the run's ledger row,
/// or fails when the run is no longer open (another partition failed, or it was committed).
async fn hold_open_run(conn: &mut PgConnection, target: &WriteTarget) -> Result<()> {
    let table = target.table.quoted();
    let open = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT 1 FROM {LEDGER} WHERE run = $1 FOR SHARE")))
        .bind(&target.run)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| DfError::db("checking the run", table.clone(), e))?;
    match open {
        Some(_) => Ok(()),
        None => Err(DfError::Aborted { table }),
    }
}

/// Ends the run after a failure: no partition commits a staging table after this returns, and
/// then every staging table of the run is dropped.
async fn close_run(target: &WriteTarget) {
    let table = target.table.quoted();
    let closed = async {
        let pool = target.connector.pool().await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {LEDGER} WHERE run = $1")))
            .bind(&target.run)
            .execute(&pool)
            .await
            .map_err(|e| DfError::db("closing the run", table.clone(), e))?;
        sweep(target).await
    }
    .await;
    if let Err(e) = closed {
        tracing::warn!(table = %target.table, error = %e, "staging tables may be left behind");
    }
}

async fn write_partition(
    target: Arc<WriteTarget>,
    state: Arc<RunState>,
    partition: usize,
    input: SendableRecordBatchStream,
) -> DfResult<RecordBatch> {
    let table = target.table.quoted();
    let Some(_running) = state.enter() else {
        return Err(DfError::Aborted { table }.into());
    };
    let stage = target.stage(partition);
    let pool = target.connector.pool().await?;
    let mut conn = pool.acquire().await.map_err(|e| DfError::db("connecting", stage.quoted(), e))?;
    let schema = input.schema();
    let mut data_failure = None;
    // Created and filled in one transaction: `COPY ... FREEZE` writes the rows frozen and all-visible
    // (no hint-bit pass when the commit step reads them), and a failure rolls the table away with it.
    let result: Result<u64> = async {
        exec(&mut conn, "BEGIN".into(), "staging", &table).await?;
        exec(
            &mut conn,
            format!("CREATE UNLOGGED TABLE {} (LIKE {table} INCLUDING DEFAULTS)", stage.quoted()),
            "creating a staging table",
            &table,
        )
        .await?;
        let mut encoder =
            CopyEncoder::new(&target.columns, &schema, NanosPolicy::default(), NulPolicy::default())?;
        let statement = format!(
            "COPY {} ({}) FROM STDIN (FORMAT binary, FREEZE)",
            stage.quoted(),
            encoder.column_names().iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ")
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
        let r = copy_in(
            &mut conn,
            &statement,
            &stage.quoted(),
            &mut data,
            &mut buf,
            &CopyFlow::new(target.send_buffer),
        )
        .await;
        data_failure = data.failure.take();
        let rows = r?;
        hold_open_run(&mut conn, &target).await?;
        exec(&mut conn, "COMMIT".into(), "committing a staging table", &table).await?;
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
            close_run(&target).await;
            Err(data_failure.unwrap_or_else(|| e.into()))
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
        write!(f, "PgCommitExec: table={}, mode={:?}", self.target.table, self.target.mode)
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
        let open = sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {LEDGER} WHERE run = $1")))
            .bind(&target.run)
            .execute(&mut *conn)
            .await
            .map_err(|e| DfError::db("closing the run", table.clone(), e))?
            .rows_affected();
        if open != 1 {
            return Err(DfError::Aborted { table: table.clone() });
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
            let mut failure = None;
            while let Some(b) = input.next().await {
                match b {
                    Ok(b) => {
                        let names = b.column(0).as_any().downcast_ref::<StringArray>();
                        if let Some(names) = names {
                            staged.extend(names.iter().flatten().map(str::to_owned));
                        }
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            drop(input);
            let result = match failure {
                Some(e) => Err(e),
                None => commit(&target, &staged).await.map_err(DataFusionError::from),
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
                    close_run(&target).await;
                    Err(e)
                }
            }
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(count_schema(), futures::stream::once(fut))))
    }
}

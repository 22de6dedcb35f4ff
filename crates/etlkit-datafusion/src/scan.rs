//! [`PgScanExec`]: the partitioned, snapshot-consistent binary COPY read of a [`PgTable`](crate::PgTable).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::util::display::array_value_to_string;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result as DfResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use etlkit_core::{Context, Source, cast_strict};
use etlkit_postgres::sqlx::{Connection, PgConnection};
use etlkit_postgres::{PgSource, PgSourceConfig, SourceQuery, TableRef, quote_ident};
use futures::{StreamExt, TryStreamExt};
use tokio::sync::Mutex;

use crate::connector::PgConnector;
use crate::error::DfError;

/// How the rows of a scan are split into partitions: one predicate per partition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ScanPartitioning {
    /// One partition, the whole table.
    Whole,
    /// Ranges of a single-column integer key: `(key, bounds)`, partition `i` reads
    /// `bounds[i-1] <= key < bounds[i]` (open below for the first, above for the last).
    KeyRanges(String, Vec<i64>),
    /// ctid page ranges: partition `i` reads pages `bounds[i-1] <= page < bounds[i]` (open at the ends).
    PageRanges(Vec<i64>),
}

impl ScanPartitioning {
    pub(crate) fn key_ranges(key: &str, lo: i64, hi: i64, partitions: usize) -> Self {
        let span = (hi as i128 - lo as i128 + 1).max(1);
        let n = (partitions as i128).min(span);
        if n <= 1 {
            return ScanPartitioning::Whole;
        }
        let bounds = (1..n).map(|i| (lo as i128 + span * i / n) as i64).collect();
        ScanPartitioning::KeyRanges(key.to_owned(), bounds)
    }

    pub(crate) fn page_ranges(pages: i64, partitions: usize) -> Self {
        let n = (partitions as i64).min(pages.max(1));
        if n <= 1 {
            return ScanPartitioning::Whole;
        }
        ScanPartitioning::PageRanges((1..n).map(|i| pages * i / n).collect())
    }

    /// The number of partitions.
    pub fn count(&self) -> usize {
        match self {
            ScanPartitioning::Whole => 1,
            ScanPartitioning::KeyRanges(_, b) | ScanPartitioning::PageRanges(b) => b.len() + 1,
        }
    }

    /// The `WHERE` predicate of partition `i` (`None`: every row).
    pub fn predicate(&self, i: usize) -> Option<String> {
        let (expr, bounds, lit): (String, &Vec<i64>, fn(i64) -> String) = match self {
            ScanPartitioning::Whole => return None,
            ScanPartitioning::KeyRanges(k, b) => (quote_ident(k), b, |v| v.to_string()),
            ScanPartitioning::PageRanges(b) => ("ctid".into(), b, |p| format!("'({p},0)'::tid")),
        };
        let lower = i.checked_sub(1).and_then(|j| bounds.get(j)).map(|v| format!("{expr} >= {}", lit(*v)));
        let upper = bounds.get(i).map(|v| format!("{expr} < {}", lit(*v)));
        match (lower, upper) {
            (Some(l), Some(u)) => Some(format!("{l} AND {u}")),
            (l, u) => l.or(u),
        }
    }
}

/// Keeps the transaction that exported a scan's snapshot open until every partition has imported it
/// (or the plan is dropped).
pub struct SnapshotHolder {
    id: String,
    conn: Mutex<Option<PgConnection>>,
    pending: AtomicUsize,
}

impl fmt::Debug for SnapshotHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotHolder").field("id", &self.id).finish_non_exhaustive()
    }
}

impl SnapshotHolder {
    pub(crate) fn new(conn: PgConnection, id: String) -> Arc<Self> {
        Arc::new(SnapshotHolder { id, conn: Mutex::new(Some(conn)), pending: AtomicUsize::new(usize::MAX) })
    }

    /// A snapshot exported by another process (a decoded plan): partitions import `id`; the
    /// exporting transaction is the other process's to keep open.
    pub(crate) fn exported_elsewhere(id: String) -> Arc<Self> {
        Arc::new(SnapshotHolder { id, conn: Mutex::new(None), pending: AtomicUsize::new(usize::MAX) })
    }

    /// The exported snapshot's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn expect(&self, partitions: usize) {
        let _ = self.pending.compare_exchange(usize::MAX, partitions, Ordering::SeqCst, Ordering::SeqCst);
    }

    async fn imported(&self) {
        if self.pending.fetch_sub(1, Ordering::SeqCst) == 1
            && let Some(conn) = self.conn.lock().await.take()
        {
            let _ = conn.close().await;
        }
    }
}

/// Reads a PostgreSQL table in partitions by binary COPY (see [`PgTable`](crate::PgTable)).
#[derive(Debug)]
pub struct PgScanExec {
    connector: Arc<PgConnector>,
    table: TableRef,
    schema: SchemaRef,
    partitioning: ScanPartitioning,
    limit: Option<usize>,
    batch_size: usize,
    snapshot: Option<Arc<SnapshotHolder>>,
    properties: Arc<PlanProperties>,
}

impl PgScanExec {
    /// A scan of `schema`'s columns of `table`. Without a `snapshot`, each partition reads with its
    /// own snapshot (consistent per partition only).
    pub fn new(
        connector: Arc<PgConnector>,
        table: TableRef,
        schema: SchemaRef,
        partitioning: ScanPartitioning,
        limit: Option<usize>,
        batch_size: usize,
        snapshot: Option<Arc<SnapshotHolder>>,
    ) -> Self {
        if let Some(s) = &snapshot {
            s.expect(partitioning.count());
        }
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitioning.count()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        PgScanExec {
            connector,
            table,
            schema,
            partitioning,
            limit,
            batch_size: batch_size.max(1),
            snapshot,
            properties,
        }
    }

    /// The connector.
    pub fn connector(&self) -> &Arc<PgConnector> {
        &self.connector
    }
    /// The table.
    pub fn table(&self) -> &TableRef {
        &self.table
    }
    /// The partitioning.
    pub fn partitioning(&self) -> &ScanPartitioning {
        &self.partitioning
    }
    /// The pushed-down limit.
    pub fn limit(&self) -> Option<usize> {
        self.limit
    }
    /// Rows per batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
    /// The snapshot every partition imports, if any.
    pub fn snapshot_id(&self) -> Option<&str> {
        self.snapshot.as_ref().map(|s| s.id())
    }

    /// The `SELECT` partition `i` runs inside `COPY (...) TO STDOUT (FORMAT binary)`.
    pub fn partition_sql(&self, i: usize) -> String {
        let cols = if self.schema.fields().is_empty() {
            // No column needed (count(*)): one constant per row.
            "true AS etlkit_row".to_owned()
        } else {
            self.schema.fields().iter().map(|f| quote_ident(f.name())).collect::<Vec<_>>().join(", ")
        };
        let mut sql = format!("SELECT {cols} FROM {}", self.table.quoted());
        if let Some(p) = self.partitioning.predicate(i) {
            sql.push_str(" WHERE ");
            sql.push_str(&p);
        }
        if let Some(n) = self.limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        sql
    }
}

impl DisplayAs for PgScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PgScanExec: table={}, partitions={}, columns=[{}]",
            self.table,
            self.partitioning.count(),
            self.schema.fields().iter().map(|c| c.name().as_str()).collect::<Vec<_>>().join(", ")
        )?;
        if let Some(n) = self.limit {
            write!(f, ", limit={n}")?;
        }
        Ok(())
    }
}

/// Casts a batch PgSource decoded from a query to the table's catalog types (a query's `numeric`
/// comes as text; the table's `numeric(p,s)` is `Decimal128(p,s)`) with etlkit's one strict cast
/// ([`etlkit_core::cast_strict`]): a value that does not convert (`NaN`, `Infinity`) is an error
/// naming the table, column and value, never a NULL.
fn conform(batch: RecordBatch, schema: &SchemaRef, table: &str) -> Result<RecordBatch, DfError> {
    let rows = batch.num_rows();
    let columns: Vec<ArrayRef> = if schema.fields().is_empty() {
        Vec::new()
    } else {
        schema
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(f, c)| {
                let arrow = |source| DfError::Arrow { what: format!("column `{}`", f.name()), source };
                let (converted, bad) = cast_strict(c, f.data_type()).map_err(arrow)?;
                match bad.first() {
                    None => Ok(converted),
                    Some((row, reason)) => Err(DfError::InvalidValue {
                        table: table.to_owned(),
                        column: f.name().clone(),
                        value: array_value_to_string(c, *row).map_err(arrow)?,
                        reason: reason.clone(),
                    }),
                }
            })
            .collect::<Result<_, _>>()?
    };
    RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(rows)),
    )
    .map_err(|source| DfError::Arrow { what: "scan batch".into(), source })
}

/// Closes a partition's one-connection snapshot pool (ending its read-only transaction) when the
/// partition's stream is dropped: a sqlx pool keeps its connections until closed.
struct ClosePool(Option<etlkit_postgres::sqlx::PgPool>);

impl Drop for ClosePool {
    fn drop(&mut self) {
        if let (Some(pool), Ok(rt)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            rt.spawn(async move { pool.close().await });
        }
    }
}

impl ExecutionPlan for PgScanExec {
    fn name(&self) -> &str {
        "PgScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(&self, partition: usize, _context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        let sql = self.partition_sql(partition);
        let connector = self.connector.clone();
        let snapshot = self.snapshot.clone();
        let schema = self.schema.clone();
        let batch_size = self.batch_size;
        let table = self.table.quoted();
        let open = async move {
            let pool = match &snapshot {
                Some(s) => {
                    let pool = connector.snapshot_pool(s.id()).await;
                    s.imported().await;
                    let pool = pool?;
                    // The import happens on first connect: make sure it has happened before the
                    // exporting transaction may end.
                    pool.acquire()
                        .await
                        .map_err(|e| DfError::db("importing the scan snapshot", "scan", e))?;
                    pool
                }
                None => connector.pool().await?,
            };
            let guard = snapshot.is_some().then(|| ClosePool(Some(pool.clone())));
            let source = PgSource::new(pool, PgSourceConfig { query: SourceQuery::Query(sql), batch_size })
                .await
                .map_err(DfError::from)?;
            let stream = Box::new(source)
                .into_stream(Context::default())
                .map_err(|e| datafusion::error::DataFusionError::from(DfError::Core(e)))
                .and_then(move |b| {
                    // Holds the snapshot pool until the stream is dropped (then closes it).
                    let _guard = &guard;
                    let schema = schema.clone();
                    let table = table.clone();
                    async move { conform(b, &schema, &table).map_err(Into::into) }
                });
            Ok::<_, datafusion::error::DataFusionError>(stream)
        };
        let stream = futures::stream::once(open).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream.boxed())))
    }
}

//! [`PgTable`]: a PostgreSQL table as a DataFusion [`TableProvider`].

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::common::ScalarValue;
use datafusion::common::metadata::FieldMetadata;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use etlkit_postgres::sqlx::{self, Connection, Executor, Row};
use etlkit_postgres::{PgSource, PgSourceConfig, PgType, SourceQuery, TableColumn, TableRef, table_columns};

use crate::connector::PgConnector;
use crate::error::{DfError, Result};
use crate::scan::{PgScanExec, ScanPartitioning, SnapshotHolder};
use crate::write::{CommitProtocol, PgCommitExec, PgWriteExec, WriteMode, WriteTarget, open_run, run_id};

/// How a [`PgTable`] reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgTableOptions {
    /// Scan partitions (concurrent `COPY TO` streams, each on its own connection). `0` (the
    /// default): the session's `target_partitions`.
    pub scan_partitions: usize,
    /// Rows per batch a scan yields. `0` (the default): the session's `batch_size`.
    pub batch_size: usize,
    /// When not empty, `INSERT INTO` upserts on these columns (`INSERT ... ON CONFLICT (key) DO
    /// UPDATE`); they need a unique index. `REPLACE INTO` / `InsertOp::Replace` upserts on this key,
    /// or on the primary key when it is empty.
    pub upsert_key: Vec<String>,
    /// Bytes per COPY message when writing. Default 1 MiB.
    pub send_buffer: usize,
    /// How the partitions of an `INSERT INTO` commit: [`CommitProtocol::Staged`] (the default: one
    /// transaction, every row written twice) or [`CommitProtocol::TwoPhase`] (append only; every
    /// row written once; needs `max_prepared_transactions` on the server).
    pub commit: CommitProtocol,
}

impl Default for PgTableOptions {
    fn default() -> Self {
        PgTableOptions {
            scan_partitions: 0,
            batch_size: 0,
            upsert_key: Vec::new(),
            send_buffer: 1 << 20,
            commit: CommitProtocol::Staged,
        }
    }
}

/// The field metadata key that marks a column an `INSERT` column list left out (see
/// [`PgTable`]'s `get_column_default`).
const OMITTED: &str = "etlkit.omitted";

/// What DataFusion fills a column an `INSERT` column list leaves out with: NULL, marked so that
/// `insert_into` sees which columns were left out (DataFusion keeps a literal's metadata on the
/// input's field) and writes only the others.
fn omitted_markers(schema: &SchemaRef) -> Vec<Expr> {
    let marker =
        FieldMetadata::from(std::collections::BTreeMap::from([(OMITTED.to_owned(), "true".to_owned())]));
    schema.fields().iter().map(|_| Expr::Literal(ScalarValue::Null, Some(marker.clone()))).collect()
}

/// A PostgreSQL table for DataFusion SQL.
///
/// - `SELECT`: a partitioned binary `COPY (SELECT ...) TO STDOUT` read. Partitions are ranges of a
///   single-column integer primary key, or else ctid page ranges; every partition runs in a
///   transaction importing one snapshot exported when the query was planned, so together they read
///   one consistent state of the table. Projection and `LIMIT` are pushed into the SQL. Types come
///   from the catalog exactly as [`PgSource`] maps them (its decoder does the reading).
/// - `INSERT INTO` (append, `INSERT OVERWRITE` (truncate then insert), upsert on a key): each input
///   partition binary-COPYs into its own unlogged staging table through etlkit-postgres's COPY-in
///   path and [`CopyEncoder`](etlkit_postgres::CopyEncoder); then one commit step moves every staged
///   row into the table in one transaction and drops the staging tables. A query that fails anywhere
///   leaves the table unchanged and no staging table behind. Columns a column list leaves out
///   (`INSERT INTO t (id, name) ...`) are not written: a new row gets the column's PostgreSQL
///   `DEFAULT`, an upserted existing row keeps its value.
#[derive(Debug)]
pub struct PgTable {
    connector: Arc<PgConnector>,
    table: TableRef,
    /// The schema holding the table (staging tables are created there).
    namespace: String,
    columns: Vec<TableColumn>,
    primary_key: Vec<String>,
    int_key: Option<String>,
    schema: SchemaRef,
    /// One marker per column: what an `INSERT` column list leaving the column out fills it with.
    omitted: Vec<Expr>,
    options: PgTableOptions,
    /// Decoded from a plan sent by another process (a Ballista scheduler): scans are one stream.
    remote: bool,
}

impl PgTable {
    /// Reads `table`'s catalog (columns, types, primary key) through `connector`.
    pub async fn new(connector: Arc<PgConnector>, table: TableRef, options: PgTableOptions) -> Result<Self> {
        table.validate("table")?;
        if options.send_buffer == 0 {
            return Err(DfError::InvalidConfig { field: "send_buffer", reason: "must be positive".into() });
        }
        let pool = connector.pool().await?;
        let mut conn = pool.acquire().await.map_err(|e| DfError::db("connecting", table.quoted(), e))?;
        let columns = table_columns(&mut conn, &table).await?;
        let quoted = table.quoted();
        let namespace: String = sqlx::query(
            "SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = to_regclass($1)",
        )
        .bind(&quoted)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| DfError::db("reading the catalog", quoted.clone(), e))?
        .get(0);
        let pk_rows = sqlx::query(
            "SELECT a.attname::text, a.atttypid::int8 FROM pg_index i \
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) ON true \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY k.ord",
        )
        .bind(&quoted)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| DfError::db("reading the primary key", quoted.clone(), e))?;
        drop(conn);
        let primary_key: Vec<String> = pk_rows.iter().map(|r| r.get::<String, _>(0)).collect();
        let int_key = match pk_rows.as_slice() {
            [r] if matches!(
                PgType::from_oid(r.get::<i64, _>(1) as u32, -1),
                Some(PgType::Int2 | PgType::Int4 | PgType::Int8)
            ) =>
            {
                Some(r.get::<String, _>(0))
            }
            _ => None,
        };
        // The Arrow schema exactly as PgSource types the table.
        let source =
            PgSource::new(pool, PgSourceConfig { query: SourceQuery::Table(table.clone()), batch_size: 1 })
                .await?;
        let schema = etlkit_core::Source::schema(&source);
        Ok(PgTable {
            connector,
            table,
            namespace,
            columns,
            primary_key,
            int_key,
            omitted: omitted_markers(&schema),
            schema,
            options,
            remote: false,
        })
    }

    /// A table from parts already read (a decoded plan: see [`crate::codec`]). Its scans are one
    /// stream: a distributed engine splits only the leaf types it knows among its tasks (Ballista
    /// 55: files, memory, its own shuffle reads) and would run every partition of an unknown leaf in
    /// every task; the engine repartitions the stream for the stages after it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn from_parts(
        connector: Arc<PgConnector>,
        table: TableRef,
        namespace: String,
        columns: Vec<TableColumn>,
        primary_key: Vec<String>,
        int_key: Option<String>,
        schema: SchemaRef,
        options: PgTableOptions,
    ) -> Self {
        PgTable {
            connector,
            table,
            namespace,
            columns,
            primary_key,
            int_key,
            omitted: omitted_markers(&schema),
            schema,
            options,
            remote: true,
        }
    }

    /// The table.
    pub fn table(&self) -> &TableRef {
        &self.table
    }

    /// The connector the table reads and writes through.
    pub fn connector(&self) -> &Arc<PgConnector> {
        &self.connector
    }

    /// The schema (namespace) holding the table.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The single-column integer primary key scans split on, if any.
    pub fn int_key(&self) -> Option<&str> {
        self.int_key.as_deref()
    }

    /// The options.
    pub fn options(&self) -> &PgTableOptions {
        &self.options
    }

    /// The table's columns as the catalog describes them.
    pub fn columns(&self) -> &[TableColumn] {
        &self.columns
    }

    /// The primary key columns (empty when there is none).
    pub fn primary_key(&self) -> &[String] {
        &self.primary_key
    }

    /// How a scan of `partitions` partitions would be split (primary-key or ctid ranges).
    pub fn partitioning(&self) -> &'static str {
        if self.int_key.is_some() { "primary-key ranges" } else { "ctid page ranges" }
    }

    async fn plan_scan(
        &self,
        partitions: usize,
        limit: Option<usize>,
    ) -> Result<(Arc<SnapshotHolder>, ScanPartitioning)> {
        let quoted = self.table.quoted();
        let db = |action| move |e| DfError::db(action, self.table.quoted(), e);
        let mut conn = sqlx::PgConnection::connect(self.connector.url().expose())
            .await
            .map_err(db("connecting for the scan snapshot"))?;
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await
            .map_err(db("starting the scan transaction"))?;
        let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
            .fetch_one(&mut conn)
            .await
            .map_err(db("exporting the scan snapshot"))?;
        let partitions = if limit.is_some() { 1 } else { partitions.max(1) };
        let ranges = if partitions == 1 {
            ScanPartitioning::Whole
        } else if let Some(key) = &self.int_key {
            let q = etlkit_postgres::quote_ident(key);
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT min({q})::int8, max({q})::int8 FROM {quoted}"
            )))
            .fetch_one(&mut conn)
            .await
            .map_err(db("reading the key range"))?;
            match (row.get::<Option<i64>, _>(0), row.get::<Option<i64>, _>(1)) {
                (Some(lo), Some(hi)) => ScanPartitioning::key_ranges(key, lo, hi, partitions),
                _ => ScanPartitioning::Whole,
            }
        } else {
            let pages: i64 = sqlx::query_scalar(
                "SELECT (pg_relation_size(to_regclass($1)) / current_setting('block_size')::int8)::int8",
            )
            .bind(&quoted)
            .fetch_one(&mut conn)
            .await
            .map_err(db("reading the table size"))?;
            ScanPartitioning::page_ranges(pages, partitions)
        };
        Ok((SnapshotHolder::new(conn, snapshot), ranges))
    }

    /// Two-phase commit prepares one transaction per partition: the server must allow that many.
    async fn check_prepared_transactions(&self, partitions: usize) -> Result<()> {
        let pool = self.connector.pool().await?;
        let allowed: String = sqlx::query_scalar("SELECT current_setting('max_prepared_transactions')")
            .fetch_one(&pool)
            .await
            .map_err(|e| DfError::db("reading max_prepared_transactions", self.table.quoted(), e))?;
        let allowed: usize = allowed.parse().unwrap_or(0);
        if allowed < partitions {
            return Err(DfError::InvalidConfig {
                field: "commit",
                reason: format!(
                    "two-phase commit of {partitions} partitions needs max_prepared_transactions >= {partitions} \
                     on the server (it is {allowed}; set it in postgresql.conf and restart), or CommitProtocol::Staged"
                ),
            });
        }
        Ok(())
    }

    fn write_mode(&self, op: InsertOp) -> Result<WriteMode> {
        Ok(match op {
            InsertOp::Append if self.options.upsert_key.is_empty() => WriteMode::Append,
            InsertOp::Append => WriteMode::Upsert { key: self.options.upsert_key.clone() },
            InsertOp::Overwrite => WriteMode::Overwrite,
            InsertOp::Replace => {
                let key = if self.options.upsert_key.is_empty() {
                    self.primary_key.clone()
                } else {
                    self.options.upsert_key.clone()
                };
                if key.is_empty() {
                    return Err(DfError::InvalidConfig {
                        field: "upsert_key",
                        reason: format!(
                            "REPLACE INTO {} needs a key: the table has no primary key",
                            self.table
                        ),
                    });
                }
                WriteMode::Upsert { key }
            }
        })
    }
}

#[async_trait]
impl TableProvider for PgTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    /// A marked NULL: DataFusion fills a column an `INSERT` column list leaves out with it, and
    /// [`insert_into`](TableProvider::insert_into) then leaves that column to PostgreSQL (its
    /// `DEFAULT` for new rows; upserted rows keep their value).
    fn get_column_default(&self, column: &str) -> Option<&Expr> {
        self.schema.index_of(column).ok().and_then(|i| self.omitted.get(i))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let partitions = match self.options.scan_partitions {
            _ if self.remote => 1,
            0 => state.config().target_partitions(),
            n => n,
        };
        let batch_size = match self.options.batch_size {
            0 => state.config().batch_size(),
            n => n,
        };
        let indices: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let schema = Arc::new(self.schema.project(&indices)?);
        // One stream needs no shared snapshot: its own transaction is consistent.
        let (snapshot, ranges) = if partitions <= 1 || limit.is_some() {
            (None, ScanPartitioning::Whole)
        } else {
            let (snapshot, ranges) = self.plan_scan(partitions, limit).await?;
            (Some(snapshot), ranges)
        };
        Ok(Arc::new(PgScanExec::new(
            self.connector.clone(),
            self.table.clone(),
            schema,
            ranges,
            limit,
            batch_size,
            snapshot,
        )))
    }

    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mode = self.write_mode(insert_op)?;
        if self.options.commit == CommitProtocol::TwoPhase {
            if mode != WriteMode::Append {
                return Err(DfError::InvalidConfig {
                    field: "commit",
                    reason: format!(
                        "two-phase commit appends only; {mode:?} into {} needs CommitProtocol::Staged",
                        self.table
                    ),
                }
                .into());
            }
            let partitions = input
                .properties()
                .output_partitioning()
                .partition_count()
                .max(state.config().target_partitions());
            self.check_prepared_transactions(partitions).await?;
        }
        // Columns a column list left out come marked (`get_column_default`): not written.
        let omitted: Vec<String> = input
            .schema()
            .fields()
            .iter()
            .filter(|f| f.metadata().contains_key(OMITTED))
            .map(|f| f.name().clone())
            .collect();
        let target = Arc::new(WriteTarget {
            connector: self.connector.clone(),
            table: self.table.clone(),
            namespace: self.namespace.clone(),
            columns: self.columns.iter().filter(|c| !omitted.contains(&c.name)).cloned().collect(),
            omitted,
            mode,
            run: run_id(),
            send_buffer: self.options.send_buffer,
            commit: self.options.commit,
        });
        open_run(&target).await?;
        let write: Arc<dyn ExecutionPlan> = Arc::new(PgWriteExec::new(input, target.clone()));
        let staged: Arc<dyn ExecutionPlan> = if write.properties().output_partitioning().partition_count() > 1
        {
            Arc::new(CoalescePartitionsExec::new(write))
        } else {
            write
        };
        Ok(Arc::new(PgCommitExec::new(staged, target)))
    }
}

//! [`PgStarSink`]: star-schema loading into PostgreSQL. Each batch goes, with surrogate keys resolved
//! by a [`StarSchema`], into a fact table and (optionally) into a row table of the normalized source
//! rows — both in ONE transaction, so the two tables always gain exactly the same rows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use bytes::BytesMut;
use etlkit_core::{Context, LoadStats, Sink, Stage};
use etlkit_dimcache::StarSchema;
use sqlx::{AssertSqlSafe, PgConnection, PgPool, Row};

use crate::catalog::{TableColumn, table_columns};
use crate::conform::{NanosPolicy, NulPolicy};
use crate::copy::{CopyEncoder, CopyFlow, EncodedBatches, copy_in};
use crate::error::{PgError, Result};
use crate::identifier::{TableRef, column_list, quote_ident};
use crate::retry::RetryPolicy;
use crate::run_plan::RunPlan;
use crate::sink::exec;

static STAGE_SEQ: AtomicU64 = AtomicU64::new(0);

/// How [`PgStarSink`] writes a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StarLoadMode {
    /// Binary `COPY` straight into both tables: the fastest path, for rows already known to be new
    /// (e.g. after an in-memory de-duplication seeded from the row table). When
    /// [`PgStarConfig::conflict_key`] is set and a batch hits a unique violation (another process
    /// loaded some of the same rows meanwhile), that batch is redone in [`StarLoadMode::Merge`].
    /// The default.
    #[default]
    Copy,
    /// `COPY` both into temporary staging tables, then insert the rows whose
    /// [`conflict_key`](PgStarConfig::conflict_key) is not in the row table yet
    /// (`INSERT ... ON CONFLICT (key) DO NOTHING RETURNING key`) and the fact rows of exactly those
    /// rows, in one statement. De-duplicates against the database with constant client memory.
    /// Rows are inserted in key order, so concurrent merges of overlapping rows wait for each other
    /// instead of deadlocking.
    Merge,
}

/// Configuration of a [`PgStarSink`]. Build with struct syntax over [`Default`].
#[derive(Debug, Clone, PartialEq)]
pub struct PgStarConfig {
    /// Table receiving the batch's rows (e.g. `yellow_taxi_trips`); it must exist. `None`: a
    /// facts-only load (the fact table is the only table written). Default: `None`.
    pub rows_table: Option<TableRef>,
    /// Batch columns written to `rows_table`, in order; empty means every column. Default: empty.
    pub rows_columns: Vec<String>,
    /// The fact table, receiving [`StarSchema::output_schema`] batches; it must exist. Default:
    /// empty (must be set).
    pub fact_table: TableRef,
    /// A column in both tables that identifies a row (e.g. `row_hash`), with a unique constraint in
    /// `rows_table` (in `fact_table` for a facts-only load). Required by [`StarLoadMode::Merge`];
    /// enables the fallback of [`StarLoadMode::Copy`]. Must be in `rows_columns` (when not empty)
    /// and among the fact columns. Default: `None`.
    pub conflict_key: Option<String>,
    /// A bulk load: the caller holds the tables exclusively (see `load_lock`) and may have dropped
    /// the `conflict_key`'s UNIQUE constraint. A batch that fails in [`StarLoadMode::Copy`] is then
    /// retried by `COPY` again, never through the merge path (which needs the constraint); after a
    /// failure while committing, the batch counts as committed when its first `conflict_key` value
    /// (a binary row hash) is in the table, and is copied again otherwise. Default: `false`.
    pub bulk: bool,
    /// `(pid, key)`: the backend that holds the load's advisory lock on `key` (taken with
    /// `pg_advisory_lock(key)` or `pg_advisory_lock_shared(key)` on a connection of its own). Every
    /// batch transaction checks, just before `COMMIT` and while holding its row locks, that this
    /// backend still holds that lock, and fails (not retried, nothing committed) when it does not:
    /// a lost lock session (terminated backend, `idle_session_timeout`, network drop) stops the
    /// load before another run can overlap it. Default: `None` (no check).
    pub load_lock: Option<(i32, i64)>,
    /// Copy or merge. Default: [`StarLoadMode::Copy`].
    pub mode: StarLoadMode,
    /// Bytes of COPY data per message. Default: 4 MiB.
    pub send_buffer_bytes: usize,
    /// Retries of a batch's transaction after a retryable error (lost connection, deadlock,
    /// serialization failure), and the back-off. A failed `COMMIT` is not retried in `Copy` mode
    /// without a `conflict_key` (it may have committed). Default: [`RetryPolicy::default`].
    pub retry: RetryPolicy,
    /// Client-side limit for one batch's transaction. Default: 10 minutes.
    pub timeout: Duration,
    /// Timestamps with nanoseconds. Default: [`NanosPolicy::Reject`].
    pub nanos: NanosPolicy,
    /// Text with NUL bytes. Default: [`NulPolicy::Reject`].
    pub nul: NulPolicy,
    /// `SET LOCAL synchronous_commit = off` in every transaction (a crash may lose the last commits,
    /// never corrupt them). Default: `false`.
    pub synchronous_commit_off: bool,
}

impl Default for PgStarConfig {
    fn default() -> Self {
        PgStarConfig {
            rows_table: None,
            rows_columns: Vec::new(),
            fact_table: TableRef::new(""),
            conflict_key: None,
            bulk: false,
            load_lock: None,
            mode: StarLoadMode::Copy,
            send_buffer_bytes: 4 << 20,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(600),
            nanos: NanosPolicy::Reject,
            nul: NulPolicy::Reject,
            synchronous_commit_off: false,
        }
    }
}

impl PgStarConfig {
    /// Checks every field (column existence is checked against the batches in `start`).
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| Err(PgError::InvalidConfig { field, reason: reason.to_owned() });
        if let Some(rows) = &self.rows_table {
            rows.validate("rows_table")?;
        }
        self.fact_table.validate("fact_table")?;
        self.retry.validate()?;
        if self.rows_table.as_ref() == Some(&self.fact_table) {
            return bad("fact_table", "must differ from rows_table");
        }
        if self.rows_table.is_none() && !self.rows_columns.is_empty() {
            return bad("rows_columns", "must be empty without a rows_table");
        }
        if self.bulk && self.mode != StarLoadMode::Copy {
            return bad("bulk", "needs StarLoadMode::Copy (the merge path needs the UNIQUE constraint)");
        }
        if self.send_buffer_bytes < 8 << 10 || self.send_buffer_bytes > 512 << 20 {
            return bad("send_buffer_bytes", "must be between 8 KiB and 512 MiB");
        }
        if self.timeout.is_zero() {
            return bad("timeout", "must be positive");
        }
        if self.mode == StarLoadMode::Merge && self.conflict_key.is_none() {
            return bad("conflict_key", "must be set for StarLoadMode::Merge");
        }
        if let Some(k) = &self.conflict_key
            && !self.rows_columns.is_empty()
            && !self.rows_columns.contains(k)
        {
            return bad("conflict_key", "must be one of rows_columns");
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Plan {
    /// Catalog columns of the rows table (`None`: facts-only).
    rows_table: Option<Vec<TableColumn>>,
    fact_table: Vec<TableColumn>,
    /// Indices of `rows_columns` in the input batch.
    rows_projection: Vec<usize>,
}

#[derive(Debug, Default)]
struct Tally {
    rows_inserted: u64,
    fact_inserted: u64,
    conflicts: u64,
    transactions: u64,
    merged_batches: u64,
}

/// Loads a star schema: for each batch, its fact rows (built by [`StarSchema::fact_batch`], which
/// resolves and creates dimension members through the dimension caches) into
/// [`PgStarConfig::fact_table`] and, when [`PgStarConfig::rows_table`] is set, its rows into that
/// table, in one transaction per batch.
///
/// - `write` may run concurrently (the pipeline's `workers`); each call checks out its own
///   connection, so the pool needs `workers` connections plus those of the dimension stores.
/// - When `write` returns `Ok` the batch is committed. New dimension members are committed before
///   (by the store), so a failed batch can leave unreferenced members; a re-run reuses them.
/// - `write` returns the batch's row count; rows not inserted because their
///   [`conflict_key`](PgStarConfig::conflict_key) already existed are counted as `conflicts`.
/// - `finish` returns counters `rows_inserted`, `fact_inserted` (always equal; for a facts-only load
///   both count fact rows), `conflicts`,
///   `transactions` and `merged_batches` (batches written by the merge path), and `retries`.
///
/// ```no_run
/// use std::sync::Arc;
/// use etlkit_core::{MemorySource, Pipeline, PipelineConfig};
/// use etlkit_core::arrow_array::{FixedSizeBinaryArray, Float64Array, Int32Array, RecordBatch};
/// use etlkit_core::arrow_schema::{DataType, Field};
/// use etlkit_dimcache::{DimensionCache, DimensionSpec, FactRole, StarSchema};
/// use etlkit_postgres::{DatabaseUrl, PgDimensionConfig, PgDimensionStore, PgStarConfig, PgStarSink,
///     StarLoadMode, TableRef, connect};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = connect(&DatabaseUrl::new("postgres://postgres@127.0.0.1/etl"), 4, "etlkit").await?;
/// // Tables `trips (pu int, dropoff int, fare float8, row_hash bytea UNIQUE)` and
/// // `facts (pu_key int8, do_key int8, fare float8, row_hash bytea)` exist; dim_location is created.
/// let store = Arc::new(PgDimensionStore::new(pool.clone(), PgDimensionConfig::default())?);
/// let spec = DimensionSpec::new("dim_location", vec![Field::new("LocationID", DataType::Int32, false)], "location_key");
/// let locations = Arc::new(DimensionCache::open(spec, store).await?);
/// let role = |src: &str, fact: &str| FactRole {
///     cache: locations.clone(), // role-playing: pickup and drop-off share one dimension
///     source_columns: vec![src.into()],
///     attribute_columns: vec![],
///     fact_column: fact.into(),
/// };
/// let batch = RecordBatch::try_from_iter([
///     ("pu", Arc::new(Int32Array::from(vec![Some(132), None])) as _),
///     ("dropoff", Arc::new(Int32Array::from(vec![161, 132])) as _),
///     ("fare", Arc::new(Float64Array::from(vec![70.0, 12.5])) as _),
///     ("row_hash", Arc::new(FixedSizeBinaryArray::try_from_iter([[1u8; 32], [2u8; 32]].into_iter())?) as _),
/// ])?;
/// let star = StarSchema::new(&batch.schema(), vec![role("pu", "pu_key"), role("dropoff", "do_key")],
///     vec!["fare".into(), "row_hash".into()])?;
/// let config = PgStarConfig {
///     rows_table: Some(TableRef::new("trips")),
///     fact_table: TableRef::new("facts"),
///     conflict_key: Some("row_hash".into()),
///     mode: StarLoadMode::Merge, // rows already in `trips` are skipped, with their facts
///     ..Default::default()
/// };
/// let sink = Arc::new(PgStarSink::new(pool, star, config)?);
/// let source = MemorySource::new(batch.schema(), vec![batch])?;
/// let stats = Pipeline::new(source, sink).config(PipelineConfig::default()).run().await?;
/// assert_eq!(stats.counter("rows_inserted"), stats.counter("fact_inserted"));
/// # Ok(()) }
/// ```
pub struct PgStarSink {
    pool: PgPool,
    star: StarSchema,
    config: PgStarConfig,
    plan: RunPlan<Plan>,
    tally: Mutex<Tally>,
    retries: AtomicU64,
    /// Dimension members created before this run ([`StarSchema::created_marks`] at `start`).
    marks: Mutex<Vec<u64>>,
    /// Send buffers of finished COPYs, reused (one per concurrent writer at most), so each COPY
    /// does not allocate and fault in a fresh multi-MiB buffer.
    buffers: Mutex<Vec<BytesMut>>,
}

impl std::fmt::Debug for PgStarSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStarSink").field("config", &self.config).finish_non_exhaustive()
    }
}

fn is_unique_violation(e: &PgError) -> bool {
    matches!(e, PgError::Database { source: sqlx::Error::Database(db), .. } if db.code().as_deref() == Some("23505"))
}

impl PgStarSink {
    /// A sink writing through `pool`.
    pub fn new(pool: PgPool, star: StarSchema, config: PgStarConfig) -> Result<Self> {
        config.validate()?;
        if let Some(k) = &config.conflict_key
            && star.output_schema().index_of(k).is_err()
        {
            return Err(PgError::InvalidConfig {
                field: "conflict_key",
                reason: format!("`{k}` is not a fact column (add it to the star schema's measures)"),
            });
        }
        Ok(PgStarSink {
            pool,
            star,
            config,
            plan: RunPlan::new(),
            tally: Mutex::new(Tally::default()),
            marks: Mutex::new(Vec::new()),
            retries: AtomicU64::new(0),
            buffers: Mutex::new(Vec::new()),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PgStarConfig {
        &self.config
    }

    /// The star schema building the fact rows.
    pub fn star(&self) -> &StarSchema {
        &self.star
    }

    /// `(rows_inserted, fact_inserted, conflicts)` committed so far.
    pub fn committed_counts(&self) -> (u64, u64, u64) {
        let t = self.tally.lock().expect("star sink poisoned");
        (t.rows_inserted, t.fact_inserted, t.conflicts)
    }

    /// The plan for a batch of `schema`: this run's (made by `start`), or a new one when `write` is
    /// called first.
    async fn plan(&self, schema: &SchemaRef) -> Result<Arc<Plan>> {
        match self.plan.for_batch(schema, &self.key_table().quoted())? {
            Some(plan) => Ok(plan),
            None => Ok(self.plan.set(schema, self.make_plan(schema).await?)),
        }
    }

    /// Reads both tables' columns and plans the rows projection for `schema`.
    async fn make_plan(&self, schema: &SchemaRef) -> Result<Plan> {
        let mut conn =
            self.pool.acquire().await.map_err(|e| PgError::db("connecting", self.key_table().quoted(), e))?;
        let rows_table = match &self.config.rows_table {
            Some(t) => Some(table_columns(&mut conn, t).await?),
            None => None,
        };
        let fact_table = table_columns(&mut conn, &self.config.fact_table).await?;
        let rows_projection = if self.config.rows_table.is_none() {
            Vec::new()
        } else if self.config.rows_columns.is_empty() {
            (0..schema.fields().len()).collect()
        } else {
            let mut p = Vec::with_capacity(self.config.rows_columns.len());
            for c in &self.config.rows_columns {
                p.push(schema.index_of(c).map_err(|_| PgError::InvalidConfig {
                    field: "rows_columns",
                    reason: format!("column `{c}` is not in the input"),
                })?);
            }
            p
        };
        let plan = Plan { rows_table, fact_table, rows_projection };
        // Check both tables accept the columns now rather than on the first write.
        if let Some(rows_table) = &plan.rows_table {
            let projected = schema
                .project(&plan.rows_projection)
                .map_err(|source| PgError::Arrow { column: "*".into(), source })?;
            self.encoder(rows_table, &projected)?;
        }
        self.encoder(&plan.fact_table, &self.star.output_schema())?;
        Ok(plan)
    }

    /// The table holding the `conflict_key` under its UNIQUE constraint: the rows table, or the fact
    /// table of a facts-only load.
    fn key_table(&self) -> &TableRef {
        self.config.rows_table.as_ref().unwrap_or(&self.config.fact_table)
    }

    fn encoder(&self, table: &[TableColumn], schema: &arrow_schema::Schema) -> Result<CopyEncoder> {
        CopyEncoder::new(table, schema, self.config.nanos, self.config.nul.clone())
    }

    async fn write_batch(&self, plan: &Plan, batch: RecordBatch, fact: RecordBatch) -> Result<u64> {
        let n = batch.num_rows() as u64;
        let rows = match plan.rows_table {
            Some(_) => Some(
                batch
                    .project(&plan.rows_projection)
                    .map_err(|source| PgError::Arrow { column: "*".into(), source })?,
            ),
            None => None,
        };
        drop(batch);
        let mut mode = self.config.mode;
        let mut attempt = 0;
        loop {
            let result = match self.transaction(plan, rows.as_ref(), &fact, mode).await {
                // A bulk load's COPY that failed while committing may have committed: its first key
                // tells (the caller holds the tables exclusively, so nobody else wrote it).
                Err((e, true)) if self.config.bulk && e.is_retryable() => {
                    match self.committed_before(&fact).await {
                        Some(true) => {
                            tracing::warn!(table = %self.key_table(), error = %e, "the batch had committed");
                            Ok((n, n))
                        }
                        Some(false) => Err((e, false)),
                        None => Err((e, true)),
                    }
                }
                other => other,
            };
            match result {
                Ok((inserted, facts)) => {
                    if inserted != facts {
                        return Err(PgError::InvalidConfig {
                            field: "fact_table",
                            reason: format!(
                                "{inserted} rows but {facts} fact rows inserted for one batch (is `{}` \
                                 unique in the row table?)",
                                self.config.conflict_key.as_deref().unwrap_or("-")
                            ),
                        });
                    }
                    let mut t = self.tally.lock().expect("star sink poisoned");
                    t.rows_inserted += inserted;
                    t.fact_inserted += facts;
                    t.conflicts += n - inserted;
                    t.transactions += 1;
                    t.merged_batches += u64::from(mode == StarLoadMode::Merge);
                    return Ok(n);
                }
                Err((e, _))
                    if mode == StarLoadMode::Copy
                        && self.config.conflict_key.is_some()
                        && !self.config.bulk
                        && is_unique_violation(&e) =>
                {
                    tracing::info!(table = %self.key_table(), "rows already present; merging this batch");
                    mode = StarLoadMode::Merge;
                }
                Err((e, committing)) => {
                    let ambiguous = committing && (self.config.conflict_key.is_none() || self.config.bulk);
                    let Some(wait) = self.config.retry.next_retry(attempt, &e).filter(|_| !ambiguous) else {
                        return Err(e);
                    };
                    attempt += 1;
                    self.retries.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(table = %self.key_table(), attempt, error = %e, "retrying star batch");
                    tokio::time::sleep(wait).await;
                    // A retried batch may have committed: the merge path is idempotent. A bulk load
                    // has no UNIQUE constraint to merge against: it copies again (an ambiguous
                    // commit was resolved above).
                    if self.config.conflict_key.is_some() && !self.config.bulk {
                        mode = StarLoadMode::Merge;
                    }
                }
            }
        }
    }

    /// Whether the first `conflict_key` value of `fact` is in the key table (a full scan when its
    /// UNIQUE index is dropped; only after an ambiguous commit). `None` when it cannot tell (no
    /// binary key, or the query failed).
    async fn committed_before(&self, fact: &RecordBatch) -> Option<bool> {
        use arrow_array::Array;
        use arrow_array::cast::AsArray;
        let key = self.config.conflict_key.as_deref()?;
        let col = fact.column(fact.schema().index_of(key).ok()?).clone();
        let first: Vec<u8> = match col.data_type() {
            arrow_schema::DataType::FixedSizeBinary(_) => {
                let c = col.as_fixed_size_binary();
                c.is_valid(0).then(|| c.value(0).to_vec())?
            }
            arrow_schema::DataType::Binary => {
                let c = col.as_binary::<i32>();
                c.is_valid(0).then(|| c.value(0).to_vec())?
            }
            _ => return None,
        };
        let sql = format!(
            "SELECT EXISTS (SELECT 1 FROM {} WHERE {} = $1)",
            self.key_table().quoted(),
            quote_ident(key)
        );
        sqlx::query_scalar::<_, bool>(AssertSqlSafe(sql)).bind(first).fetch_one(&self.pool).await.ok()
    }

    /// Fails when [`PgStarConfig::load_lock`] is set and its backend no longer holds the lock.
    async fn check_load_lock(&self, conn: &mut PgConnection) -> Result<()> {
        let Some((pid, key)) = self.config.load_lock else { return Ok(()) };
        // A bigint advisory key shows in pg_locks as classid = high 32 bits, objid = low 32 bits,
        // objsubid = 1.
        sqlx::query(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = $1 \
             AND classid = (($2::bigint >> 32) & 4294967295)::oid \
             AND objid = ($2::bigint & 4294967295)::oid AND objsubid = 1",
        )
        .bind(pid)
        .bind(key)
        .fetch_one(conn)
        .await
        .map(|_| ())
        .map_err(|e| {
            // RowNotFound: the lock is gone. Not retryable: the run must stop.
            PgError::db(
                "checking that the load's advisory lock is still held (lost: stopping)",
                self.key_table().quoted(),
                e,
            )
        })
    }

    /// One batch's transaction; returns (rows inserted, fact rows inserted). The error's flag says
    /// whether COMMIT had been sent.
    async fn transaction(
        &self,
        plan: &Plan,
        rows: Option<&RecordBatch>,
        fact: &RecordBatch,
        mode: StarLoadMode,
    ) -> std::result::Result<(u64, u64), (PgError, bool)> {
        let quoted = self.key_table().quoted();
        let mut conn =
            self.pool.acquire().await.map_err(|e| (PgError::db("connecting", quoted.clone(), e), false))?;
        let mut committing = false;
        let work = async {
            let c: &mut PgConnection = &mut conn;
            let mut begin = String::from("BEGIN");
            if self.config.synchronous_commit_off {
                begin.push_str("; SET LOCAL synchronous_commit = off");
            }
            let mut rows_enc = match (&plan.rows_table, rows) {
                (Some(table), Some(rows)) => Some(self.encoder(table, &rows.schema())?),
                _ => None,
            };
            let mut fact_enc = self.encoder(&plan.fact_table, &fact.schema())?;
            let rows_cols =
                rows_enc.as_ref().map(|e| column_list(e.column_names().iter().map(String::as_str)));
            let fact_cols = column_list(fact_enc.column_names().iter().map(String::as_str));
            let fact_q = self.config.fact_table.quoted();
            let counts = match mode {
                StarLoadMode::Copy => {
                    exec(c, begin)
                        .await
                        .map_err(|e| PgError::db("beginning a transaction", quoted.clone(), e))?;
                    let r = match (&mut rows_enc, &rows_cols, rows) {
                        (Some(enc), Some(cols), Some(rows)) => {
                            Some(self.copy(c, &quoted, cols, enc, rows).await?)
                        }
                        _ => None,
                    };
                    let f = self.copy(c, &fact_q, &fact_cols, &mut fact_enc, fact).await?;
                    (r.unwrap_or(f), f)
                }
                StarLoadMode::Merge => {
                    let key = quote_ident(self.config.conflict_key.as_deref().expect("validated"));
                    let n = STAGE_SEQ.fetch_add(1, Ordering::Relaxed);
                    let s_rows = format!("pg_temp.{}", quote_ident(&format!("etlkit_star_rows_{n}")));
                    let s_fact = format!("pg_temp.{}", quote_ident(&format!("etlkit_star_fact_{n}")));
                    let mut ddl = format!(
                        "{begin}; CREATE TEMP TABLE {s_fact} ON COMMIT DROP AS SELECT {fact_cols} FROM \
                         {fact_q} WITH NO DATA"
                    );
                    if let Some(rows_cols) = &rows_cols {
                        ddl.push_str(&format!(
                            "; CREATE TEMP TABLE {s_rows} ON COMMIT DROP AS SELECT {rows_cols} FROM {quoted} \
                             WITH NO DATA"
                        ));
                    }
                    exec(c, ddl)
                        .await
                        .map_err(|e| PgError::db("creating staging tables", quoted.clone(), e))?;
                    if let (Some(enc), Some(cols), Some(rows)) = (&mut rows_enc, &rows_cols, rows) {
                        self.copy(c, &s_rows, cols, enc, rows).await?;
                    }
                    self.copy(c, &s_fact, &fact_cols, &mut fact_enc, fact).await?;
                    let merge = match &rows_cols {
                        Some(rows_cols) => {
                            let s_fact_cols: Vec<String> = fact_enc
                                .column_names()
                                .iter()
                                .map(|n| format!("s.{}", quote_ident(n)))
                                .collect();
                            format!(
                                "WITH ins AS (INSERT INTO {quoted} ({rows_cols}) SELECT {rows_cols} FROM {s_rows} \
                                 ORDER BY {key} ON CONFLICT ({key}) DO NOTHING RETURNING {key}), \
                                 f AS (INSERT INTO {fact_q} ({fact_cols}) SELECT DISTINCT ON (s.{key}) {} \
                                 FROM {s_fact} s JOIN ins ON ins.{key} = s.{key} RETURNING 1) \
                                 SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM f)",
                                s_fact_cols.join(", ")
                            )
                        }
                        // Facts-only: the fact table holds the key under its UNIQUE constraint.
                        None => format!(
                            "WITH f AS (INSERT INTO {fact_q} ({fact_cols}) SELECT DISTINCT ON ({key}) {fact_cols} \
                             FROM {s_fact} ORDER BY {key} ON CONFLICT ({key}) DO NOTHING RETURNING 1) \
                             SELECT count(*), count(*) FROM f"
                        ),
                    };
                    let row = sqlx::query(AssertSqlSafe(merge))
                        .fetch_one(&mut *c)
                        .await
                        .map_err(|e| PgError::db("merging staged rows", quoted.clone(), e))?;
                    (row.get::<i64, _>(0) as u64, row.get::<i64, _>(1) as u64)
                }
            };
            // Last, while this transaction holds its row locks: is the load still ours?
            self.check_load_lock(c).await?;
            committing = true;
            exec(c, "COMMIT".into()).await.map_err(|e| PgError::db("committing", quoted.clone(), e))?;
            Ok::<_, PgError>(counts)
        };
        let res = match tokio::time::timeout(self.config.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(PgError::Timeout {
                action: "star-schema batch",
                seconds: self.config.timeout.as_secs_f64(),
            }),
        };
        match res {
            Ok(counts) => Ok(counts),
            Err(e) => {
                if exec(&mut conn, "ROLLBACK".into()).await.is_err() {
                    conn.close_on_drop();
                }
                Err((e, committing))
            }
        }
    }

    /// One `COPY` of `batch` into `target` through the crate's one COPY-in path; returns the
    /// server's row count. The batch's transaction is bounded by `timeout` as a whole.
    async fn copy(
        &self,
        conn: &mut PgConnection,
        target: &str,
        columns: &str,
        encoder: &mut CopyEncoder,
        batch: &RecordBatch,
    ) -> Result<u64> {
        let mut buf = self.buffers.lock().expect("star sink poisoned").pop().unwrap_or_default();
        let result = copy_in(
            conn,
            &format!("COPY {target} ({columns}) FROM STDIN (FORMAT binary)"),
            target,
            &mut EncodedBatches::new(encoder, std::slice::from_ref(batch)),
            &mut buf,
            &CopyFlow { send_buffer: self.config.send_buffer_bytes, timeout: None, messages: None },
        )
        .await;
        self.buffers.lock().expect("star sink poisoned").push(buf);
        result
    }
}

#[async_trait]
impl Sink for PgStarSink {
    fn name(&self) -> String {
        match &self.config.rows_table {
            Some(rows) => format!("postgres-star:{rows}+{}", self.config.fact_table),
            None => format!("postgres-star:{}", self.config.fact_table),
        }
    }

    async fn start(&self, schema: &SchemaRef) -> etlkit_core::Result<()> {
        // A new plan for each run: its schema (and the tables) may differ from the last run's.
        let plan = self.make_plan(schema).await.map_err(|e| e.into_stage(Stage::Sink, self.name()))?;
        self.plan.set(schema, plan);
        // Counters describe one run: a sink (and its caches) used again starts from zero.
        *self.tally.lock().expect("star sink poisoned") = Tally::default();
        self.retries.store(0, Ordering::Relaxed);
        *self.marks.lock().expect("star sink poisoned") = self.star.created_marks();
        Ok(())
    }

    async fn write(&self, batch: RecordBatch, ctx: &Context) -> etlkit_core::Result<u64> {
        if batch.num_rows() == 0 {
            return Ok(0);
        }
        let plan = self.plan(&batch.schema()).await.map_err(|e| e.into_stage(Stage::Sink, self.name()))?;
        let fact = self.star.fact_batch(&batch).await?;
        // Conversion errors count rows from 1 within the batch: name the input row instead.
        self.write_batch(&plan, batch, fact)
            .await
            .map_err(|e| e.at_origin(ctx, 1).into_stage(Stage::Sink, self.name()))
    }

    async fn finish(&self) -> etlkit_core::Result<LoadStats> {
        let t = self.tally.lock().expect("star sink poisoned");
        let mut stats = LoadStats::default();
        stats.retries = self.retries.load(Ordering::Relaxed);
        stats.add_counter("rows_inserted", t.rows_inserted);
        stats.add_counter("fact_inserted", t.fact_inserted);
        stats.add_counter("conflicts", t.conflicts);
        stats.add_counter("transactions", t.transactions);
        stats.add_counter("merged_batches", t.merged_batches);
        drop(t);
        self.star.add_created_counters(&self.marks.lock().expect("star sink poisoned"), &mut stats);
        Ok(stats)
    }

    async fn abort(&self) {
        // Every batch commits or rolls back inside `write`: nothing is left open.
    }
}

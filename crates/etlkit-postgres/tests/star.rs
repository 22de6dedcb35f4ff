//! `PgStarSink` against a real, throwaway PostgreSQL (etlkit-testkit): facts-only loads, the load-lock
//! check before every commit, and bulk-load retries without the UNIQUE constraint.

use std::sync::Arc;

use arrow_array::{ArrayRef, FixedSizeBinaryArray, Float64Array, Int32Array, RecordBatch};
use arrow_schema::{DataType, Field};
use etlkit_core::{MemorySource, Pipeline, PipelineConfig};
use etlkit_dimcache::{DimensionCache, DimensionSpec, FactRole, StarSchema};
use etlkit_postgres::{
    DatabaseUrl, PgDimensionConfig, PgDimensionStore, PgError, PgStarConfig, PgStarSink, StarLoadMode,
    TableRef, connect,
};
use etlkit_testkit::PgServer;
use sqlx::{AssertSqlSafe, PgPool};

static PG: std::sync::LazyLock<Arc<PgServer>> =
    std::sync::LazyLock::new(|| PgServer::start().expect("test PostgreSQL"));

async fn fresh() -> (PgPool, String) {
    let url = tokio::task::spawn_blocking(|| PG.fresh_database()).await.unwrap().expect("test PostgreSQL");
    (connect(&DatabaseUrl::new(url.clone()), 6, "etlkit-star-sink-test").await.unwrap(), url)
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(pool).await.unwrap();
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(AssertSqlSafe(sql.to_owned())).fetch_one(pool).await.unwrap()
}

/// 120 orders: a store id (role-played as sold-at and shipped-from), an amount and a row hash.
async fn fixture(pool: &PgPool) -> (StarSchema, RecordBatch) {
    let store = Arc::new(PgDimensionStore::new(pool.clone(), PgDimensionConfig::default()).unwrap());
    let spec =
        DimensionSpec::new("dim_store", vec![Field::new("store_id", DataType::Int32, false)], "store_key");
    let cache = Arc::new(DimensionCache::open(spec, store).await.unwrap());
    let role = |src: &str, fact: &str| FactRole {
        cache: cache.clone(),
        source_columns: vec![src.into()],
        attribute_columns: Vec::new(),
        fact_column: fact.into(),
    };
    let n = 120;
    let hashes = (0..n).map(|i: u32| {
        let mut h = [0u8; 32];
        h[..4].copy_from_slice(&i.wrapping_mul(2_654_435_761).to_be_bytes());
        h
    });
    let batch = RecordBatch::try_from_iter([
        ("sold_at", Arc::new(Int32Array::from_iter_values((0..n as i32).map(|i| i % 7))) as ArrayRef),
        ("shipped_from", Arc::new(Int32Array::from_iter_values((0..n as i32).map(|i| i % 5 + 3))) as _),
        ("amount", Arc::new(Float64Array::from_iter_values((0..n).map(|i| i as f64))) as _),
        ("row_hash", Arc::new(FixedSizeBinaryArray::try_from_iter(hashes).unwrap()) as _),
    ])
    .unwrap();
    let star = StarSchema::new(
        &batch.schema(),
        vec![role("sold_at", "sold_at_key"), role("shipped_from", "shipped_from_key")],
        vec!["amount".into(), "row_hash".into()],
    )
    .unwrap();
    (star, batch)
}

async fn load(
    pool: &PgPool,
    star: StarSchema,
    batch: RecordBatch,
    config: PgStarConfig,
) -> etlkit_core::Result<etlkit_core::LoadStats> {
    let sink = Arc::new(PgStarSink::new(pool.clone(), star, config).unwrap());
    let source = MemorySource::new(batch.schema(), vec![batch]).unwrap();
    let cfg = PipelineConfig { workers: 1, batch_size: 20, ..Default::default() };
    Pipeline::new(source, sink).config(cfg).run().await
}

const FACT: &str = "CREATE TABLE fact_order (sold_at_key bigint NOT NULL, shipped_from_key bigint NOT NULL, \
                    amount float8, row_hash bytea NOT NULL";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_facts_only_load_needs_no_rows_table_and_merges_against_the_fact_table() {
    let (pool, _) = fresh().await;
    exec(&pool, &format!("{FACT}, UNIQUE (row_hash))")).await;
    let (star, batch) = fixture(&pool).await;
    let config = PgStarConfig {
        fact_table: TableRef::new("fact_order"),
        conflict_key: Some("row_hash".into()),
        ..Default::default()
    };
    let first = load(&pool, star.clone(), batch.clone(), config.clone()).await.unwrap();
    assert_eq!((first.counter("rows_inserted"), first.counter("fact_inserted")), (120, 120));
    assert_eq!(scalar(&pool, "SELECT count(*) FROM fact_order").await, 120);
    // The same rows again: every COPY meets the constraint and is merged; nothing is added.
    let again = load(&pool, star.clone(), batch.clone(), config.clone()).await.unwrap();
    assert_eq!((again.counter("fact_inserted"), again.counter("conflicts")), (0, 120));
    assert_eq!(again.counter("merged_batches"), 6);
    // Merge mode with a third of the rows missing.
    exec(&pool, "DELETE FROM fact_order WHERE amount >= 80").await;
    let merged =
        load(&pool, star, batch, PgStarConfig { mode: StarLoadMode::Merge, ..config }).await.unwrap();
    assert_eq!((merged.counter("fact_inserted"), merged.counter("conflicts")), (40, 80));
    assert_eq!(scalar(&pool, "SELECT count(*) FROM fact_order").await, 120);
    assert_eq!(scalar(&pool, "SELECT count(DISTINCT row_hash) FROM fact_order").await, 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_not_committed_once_the_load_lock_session_is_gone() {
    let (pool, url) = fresh().await;
    exec(&pool, &format!("{FACT})")).await;
    let (star, batch) = fixture(&pool).await;
    // The load lock, on a session of its own.
    let lock_pool = connect(&DatabaseUrl::new(url), 1, "etlkit-star-lock").await.unwrap();
    let mut lock = lock_pool.acquire().await.unwrap().detach();
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut lock).await.unwrap();
    let key = -0x1234_5678_9abc_def0_i64;
    sqlx::query("SELECT pg_advisory_lock($1)").bind(key).execute(&mut lock).await.unwrap();
    let config = PgStarConfig {
        fact_table: TableRef::new("fact_order"),
        conflict_key: Some("row_hash".into()),
        bulk: true,
        load_lock: Some((pid, key)),
        ..Default::default()
    };
    // While the lock is held, batches commit.
    let held = load(&pool, star.clone(), batch.slice(0, 40), config.clone()).await.unwrap();
    assert_eq!(held.counter("fact_inserted"), 40);
    // The server terminates the lock session: the next batch must not commit.
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 10000)")
        .bind(pid)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(killed);
    let err = load(&pool, star, batch.slice(40, 80), config).await.unwrap_err();
    let pg = err.find_source::<PgError>().expect("a PostgreSQL error");
    assert!(!err.is_retryable(), "{}", err.report());
    assert!(pg.to_string().contains("advisory lock"), "{}", err.report());
    assert_eq!(scalar(&pool, "SELECT count(*) FROM fact_order").await, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_batch_whose_connection_is_terminated_is_copied_again_without_the_unique_constraint() {
    let (pool, _) = fresh().await;
    // A bulk load dropped the UNIQUE constraint; the rows table is the key table.
    exec(
        &pool,
        &format!(
            "CREATE TABLE orders (sold_at int, shipped_from int, amount float8, row_hash bytea NOT NULL); {FACT}); \
             CREATE SEQUENCE kill_seq; \
             CREATE FUNCTION kill_me() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF (SELECT count(*) FROM fact_order) >= 40 AND nextval('kill_seq') = 1 THEN \
                 PERFORM pg_terminate_backend(pg_backend_pid()); \
               END IF; RETURN NULL; END $$; \
             CREATE TRIGGER kill_once AFTER INSERT ON fact_order FOR EACH STATEMENT EXECUTE FUNCTION kill_me();"
        ),
    )
    .await;
    // The trigger terminates the batch's own connection once (sequences are not transactional),
    // in the transaction of the third batch.
    let (star, batch) = fixture(&pool).await;
    let config = PgStarConfig {
        rows_table: Some(TableRef::new("orders")),
        fact_table: TableRef::new("fact_order"),
        conflict_key: Some("row_hash".into()),
        bulk: true,
        ..Default::default()
    };
    let stats = load(&pool, star, batch, config).await.unwrap();
    assert_eq!(stats.retries, 1);
    assert_eq!((stats.counter("rows_inserted"), stats.counter("fact_inserted")), (120, 120));
    assert_eq!(stats.counter("merged_batches"), 0);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM orders").await, 120);
    assert_eq!(scalar(&pool, "SELECT count(DISTINCT row_hash) FROM orders").await, 120);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM fact_order").await, 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_the_fact_table_cannot_hold_names_the_input_row() {
    let (pool, _) = fresh().await;
    exec(
        &pool,
        "CREATE TABLE fact_order (sold_at_key bigint NOT NULL, shipped_from_key bigint NOT NULL, \
         amount integer, row_hash bytea NOT NULL)",
    )
    .await;
    let (star, batch) = fixture(&pool).await;
    // Row 56 of the source (in the third 20-row batch) holds an amount no integer column can hold.
    let mut amounts: Vec<f64> = (0..batch.num_rows()).map(|i| i as f64).collect();
    amounts[55] = 3e9;
    let mut columns = batch.columns().to_vec();
    columns[2] = Arc::new(Float64Array::from(amounts));
    let batch = RecordBatch::try_new(batch.schema(), columns).unwrap();
    let config =
        PgStarConfig { rows_table: None, fact_table: TableRef::new("fact_order"), ..Default::default() };
    let err = load(&pool, star, batch, config).await.unwrap_err();
    assert!(err.to_string().contains("memory:56, column `amount`"), "{}", err.report());
}

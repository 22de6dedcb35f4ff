//! Fault tests: the whole PostgreSQL server is killed with SIGKILL in the middle of a COPY sink load
//! and started again (crash recovery); the re-run ends with exact counts and no duplicate. Each test has
//! a dedicated throwaway server of its own (etlkit-testkit); skipped with `DATABASE_URL`.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use etlkit_core::{Pipeline, PipelineConfig, StreamSource};
use etlkit_postgres::{
    ConnectConfig, DatabaseUrl, OnConflict, PgCopySink, PgSinkConfig, RetryPolicy, TableRef, WriteMode,
    connect_with,
};
use etlkit_testkit::PgServer;
use futures::StreamExt;
use sqlx::{AssertSqlSafe, PgPool, Row};

const BATCHES: i64 = 300;
const ROWS: i64 = 1000;

fn batch(i: i64) -> RecordBatch {
    let ids = (i * ROWS)..((i + 1) * ROWS);
    RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from_iter_values(ids.clone())) as ArrayRef),
        ("v", Arc::new(StringArray::from_iter_values(ids.map(|i| format!("value {i}")))) as ArrayRef),
    ])
    .unwrap()
}

/// 300 000 rows, a little slowly, so that the crash lands in the middle of the load.
fn slow_source() -> StreamSource {
    let schema = batch(0).schema();
    let stream = futures::stream::iter(0..BATCHES)
        .then(|i| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(batch(i))
        })
        .boxed();
    StreamSource::new(schema, stream)
}

async fn pool(url: &str) -> PgPool {
    let config =
        ConnectConfig { max_connections: 4, connect_timeout: Duration::from_secs(5), ..Default::default() };
    connect_with(&DatabaseUrl::new(url), &config).await.unwrap()
}

/// Runs `ddl`, then a `CHECKPOINT` once it has committed: the throwaway server runs with
/// `synchronous_commit=off`, so a crash soon after could otherwise lose the table itself. (One
/// query string `ddl; CHECKPOINT` would not do: both run in one implicit transaction, whose commit
/// record comes after the checkpoint and may still be unflushed at the crash.)
async fn durable_table(pool: &PgPool, ddl: &str) {
    sqlx::raw_sql(AssertSqlSafe(ddl.to_owned())).execute(pool).await.unwrap();
    sqlx::raw_sql("CHECKPOINT").execute(pool).await.unwrap();
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query(AssertSqlSafe(sql.to_owned())).fetch_one(pool).await.unwrap().get(0)
}

fn upsert_sink(pool: &PgPool) -> Arc<PgCopySink> {
    Arc::new(
        PgCopySink::new(
            pool.clone(),
            PgSinkConfig {
                table: TableRef::new("kv"),
                mode: WriteMode::Upsert { key: vec!["id".into()], on_conflict: OnConflict::DoNothing },
                rows_per_transaction: 5 * ROWS as u64,
                ..Default::default()
            },
        )
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_copy_load_recovers_and_the_rerun_has_exact_counts() {
    let server = Arc::new(tokio::task::spawn_blocking(PgServer::start_dedicated).await.unwrap().unwrap());
    if server.is_external() {
        return; // killing the server needs a throwaway cluster
    }
    let url = {
        let s = server.clone();
        tokio::task::spawn_blocking(move || s.fresh_database()).await.unwrap().unwrap()
    };
    let admin = pool(&url).await;
    durable_table(&admin, "CREATE TABLE kv (id bigint PRIMARY KEY, v text NOT NULL)").await;

    let config = PipelineConfig { batch_size: ROWS as usize, workers: 2, ..Default::default() };
    let load = tokio::spawn(
        Pipeline::new(slow_source(), upsert_sink(&pool(&url).await)).config(config.clone()).run(),
    );
    // Crash once the first units are committed, while the load goes on.
    loop {
        if scalar(&admin, "SELECT count(*) FROM kv").await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(admin);
    let s = server.clone();
    tokio::task::spawn_blocking(move || s.crash_and_restart()).await.unwrap().unwrap();
    let first = load.await.unwrap();
    let after_crash = scalar(&pool(&url).await, "SELECT count(*) FROM kv").await;
    assert!(after_crash < BATCHES * ROWS || first.is_ok(), "the crash must have interrupted the load");

    // The re-run: exact counts, no duplicates, every value intact.
    let stats =
        Pipeline::new(slow_source(), upsert_sink(&pool(&url).await)).config(config).run().await.unwrap();
    let p = pool(&url).await;
    assert_eq!(stats.rows_written, (BATCHES * ROWS) as u64);
    assert_eq!(stats.counter("inserted") + stats.counter("unchanged"), (BATCHES * ROWS) as u64);
    assert_eq!(scalar(&p, "SELECT count(*) FROM kv").await, BATCHES * ROWS);
    assert_eq!(scalar(&p, "SELECT count(DISTINCT id) FROM kv").await, BATCHES * ROWS);
    assert_eq!(scalar(&p, "SELECT count(*) FROM kv WHERE v <> 'value ' || id").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_transaction_leaves_nothing_of_the_unit() {
    let server = Arc::new(tokio::task::spawn_blocking(PgServer::start_dedicated).await.unwrap().unwrap());
    if server.is_external() {
        return;
    }
    let url = {
        let s = server.clone();
        tokio::task::spawn_blocking(move || s.fresh_database()).await.unwrap().unwrap()
    };
    let admin = pool(&url).await;
    durable_table(&admin, "CREATE TABLE kv (id bigint, v text NOT NULL)").await;
    // One transaction for the whole run: a crash before `finish` must leave the table empty.
    let sink = Arc::new(
        PgCopySink::new(
            pool(&url).await,
            PgSinkConfig {
                table: TableRef::new("kv"),
                rows_per_transaction: u64::MAX,
                retry: RetryPolicy::NONE, // show the crash itself, not a retry after it
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let load = tokio::spawn(Pipeline::new(slow_source(), sink).config(PipelineConfig::default()).run());
    // Crash once rows are on their way (the backend's COPY progress shows them).
    loop {
        let copied =
            scalar(&admin, "SELECT coalesce(sum(tuples_processed), 0)::int8 FROM pg_stat_progress_copy")
                .await;
        if copied > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(admin);
    let s = server.clone();
    tokio::task::spawn_blocking(move || s.crash_and_restart()).await.unwrap().unwrap();
    let err = load.await.unwrap().unwrap_err();
    assert!(err.is_retryable(), "a lost server is worth retrying: {}", err.report());
    let p = pool(&url).await;
    assert_eq!(scalar(&p, "SELECT count(*) FROM kv").await, 0, "nothing of an uncommitted unit survives");

    let sink = Arc::new(
        PgCopySink::new(p.clone(), PgSinkConfig { table: TableRef::new("kv"), ..Default::default() })
            .unwrap(),
    );
    let stats = Pipeline::new(slow_source(), sink).run().await.unwrap();
    assert_eq!(stats.rows_written, (BATCHES * ROWS) as u64);
    assert_eq!(scalar(&p, "SELECT count(*) FROM kv").await, BATCHES * ROWS);
    assert_eq!(scalar(&p, "SELECT count(DISTINCT id) FROM kv").await, BATCHES * ROWS);
}

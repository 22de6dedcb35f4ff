//! Errors and rejects raised at the PostgreSQL sink name the ORIGINAL input row (file and line), not
//! the sink's own row count, also with several workers and with rows dropped by de-duplication on the
//! way. Real, throwaway PostgreSQL (etlkit-testkit).

use std::path::Path;
use std::sync::Arc;

use etlkit_core::{MemoryRejects, Pipeline, PipelineConfig};
use etlkit_hash::{Dedup, DedupConfig};
use etlkit_postgres::sqlx::{self, AssertSqlSafe, PgPool, Row};
use etlkit_postgres::{DatabaseUrl, InvalidRows, PgCopySink, PgSinkConfig, TableRef, connect};
use etlkit_source::{CsvSource, CsvSourceConfig, Input};
use etlkit_testkit::PgServer;

async fn fresh_pool() -> PgPool {
    static PG: std::sync::LazyLock<Arc<PgServer>> =
        std::sync::LazyLock::new(|| PgServer::start().expect("test PostgreSQL"));
    let url = tokio::task::spawn_blocking(|| PG.fresh_database()).await.unwrap().expect("test PostgreSQL");
    connect(&DatabaseUrl::new(url), 4, "etlkit-origins-test").await.unwrap()
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(pool).await.unwrap();
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query(AssertSqlSafe(format!("SELECT count(*) FROM {table}"))).fetch_one(pool).await.unwrap().get(0)
}

/// `orders.csv`: 200 good rows where every id appears twice (so de-duplication drops half of them),
/// then `bad` as the last line.
fn orders(dir: &Path, bad: &str) -> std::path::PathBuf {
    let mut text = String::from("id,name,qty\n");
    for i in 0..200 {
        text.push_str(&format!("{},n{},{}\n", i / 2, i / 2, (i / 2) % 7));
    }
    text.push_str(bad);
    text.push('\n');
    let path = dir.join("orders.csv");
    std::fs::write(&path, text).unwrap();
    path
}

fn csv(path: &Path) -> CsvSource {
    CsvSource::open(CsvSourceConfig { input: Input::File(path.to_owned()), ..Default::default() }).unwrap()
}

fn dedup() -> Dedup {
    Dedup::new(DedupConfig { columns: vec!["id".into(), "name".into(), "qty".into()], ..Default::default() })
        .unwrap()
}

fn sink(pool: &PgPool, invalid_rows: InvalidRows) -> Arc<PgCopySink> {
    Arc::new(
        PgCopySink::new(
            pool.clone(),
            PgSinkConfig {
                table: TableRef::new("orders"),
                rows_per_transaction: 1 << 40,
                invalid_rows,
                ..Default::default()
            },
        )
        .unwrap(),
    )
}

fn config() -> PipelineConfig {
    PipelineConfig { batch_size: 16, workers: 3, transform_concurrency: 2, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_the_column_cannot_hold_names_file_line_column_and_value() {
    let pool = fresh_pool().await;
    exec(&pool, "CREATE TABLE orders (id bigint, name text, qty integer)").await;
    let dir = tempfile::tempdir().unwrap();
    let path = orders(dir.path(), "500,big,3000000000"); // line 202
    let err = Pipeline::new(csv(&path), sink(&pool, InvalidRows::Fail))
        .transform(dedup())
        .config(config())
        .run()
        .await
        .unwrap_err();
    let text = err.to_string();
    let want = format!("{}:202, column `qty`: value \"3000000000\"", path.display());
    assert!(text.contains(&want), "{text}\nwant: {want}");
    assert_eq!(count(&pool, "orders").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_the_server_refuses_during_copy_names_file_line_column_and_value() {
    let pool = fresh_pool().await;
    exec(&pool, "CREATE TABLE orders (id bigint, name varchar(5), qty integer)").await;
    let dir = tempfile::tempdir().unwrap();
    let path = orders(dir.path(), "500,far-too-long,1"); // line 202
    let err = Pipeline::new(csv(&path), sink(&pool, InvalidRows::Fail))
        .transform(dedup())
        .config(config())
        .run()
        .await
        .unwrap_err();
    let text = err.report().to_string();
    let want = format!("{}:202, column `name`: value \"far-too-long\": value too long", path.display());
    assert!(text.contains(&want), "{text}\nwant: {want}");
    assert!(!text.contains("line 1,") && !text.contains("at line"), "PostgreSQL's COPY line leaked: {text}");
    assert_eq!(count(&pool, "orders").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_reject_names_the_file_and_line_of_the_input_row() {
    let pool = fresh_pool().await;
    exec(&pool, "CREATE TABLE orders (id bigint, name text, qty integer)").await;
    let dir = tempfile::tempdir().unwrap();
    let path = orders(dir.path(), "500,big,3000000000"); // line 202
    let rejects = Arc::new(MemoryRejects::new());
    let stats = Pipeline::new(csv(&path), sink(&pool, InvalidRows::Reject))
        .transform(dedup())
        .rejects(rejects.clone())
        .config(config())
        .run()
        .await
        .unwrap();
    assert_eq!((stats.rows_written, stats.rows_deduplicated, stats.rows_rejected), (100, 100, 1));
    let r = &rejects.rows()[0];
    assert_eq!(
        (r.origin.as_str(), r.line, r.column.as_deref(), r.value.as_deref()),
        (path.display().to_string().as_str(), Some(202), Some("qty"), Some("\"3000000000\""))
    );
    assert_eq!(count(&pool, "orders").await, 100);
}

//! Contracts that must hold at the edges, each shown against a real, throwaway PostgreSQL
//! (etlkit-testkit): a transform that breaks its schema commits nothing, accounting is checked before
//! the commit, counters describe one run, an upsert without a unique key fails at start, connection
//! failures keep their cause within the configured time-out, bad URLs and over-long names are refused,
//! and no secret is ever printed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use async_trait::async_trait;
use etlkit_core::{Context, FnTransform, LoadStats, MemorySource, Pipeline, PipelineConfig, Sink};
use etlkit_postgres::{
    ConnectConfig, DatabaseUrl, PgCopySink, PgError, PgSinkConfig, PgSource, PgSourceConfig, SourceQuery,
    TableRef, WriteMode, connect, connect_with,
};
use etlkit_testkit::PgServer;
use sqlx::{AssertSqlSafe, PgPool, Row};

static PG: std::sync::LazyLock<Arc<PgServer>> =
    std::sync::LazyLock::new(|| PgServer::start().expect("test PostgreSQL"));

async fn fresh() -> (PgPool, String) {
    let url = tokio::task::spawn_blocking(|| PG.fresh_database()).await.unwrap().expect("test PostgreSQL");
    (connect(&DatabaseUrl::new(url.clone()), 4, "etlkit-contracts").await.unwrap(), url)
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(pool).await.unwrap();
}

async fn rows(pool: &PgPool, sql: &str) -> Vec<(String, String)> {
    sqlx::query(AssertSqlSafe(sql.to_owned()))
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn names() -> RecordBatch {
    RecordBatch::try_from_iter([
        ("first", Arc::new(StringArray::from(vec!["Ada", "Alan"])) as ArrayRef),
        ("last", Arc::new(StringArray::from(vec!["Lovelace", "Turing"])) as ArrayRef),
    ])
    .unwrap()
}

/// One open transaction for the whole run: nothing is durable before `finish`.
fn held_sink(pool: &PgPool, table: &str) -> PgCopySink {
    PgCopySink::new(
        pool.clone(),
        PgSinkConfig { table: TableRef::new(table), rows_per_transaction: 1 << 40, ..Default::default() },
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transform_that_swaps_columns_fails_the_run_and_postgres_gets_nothing() {
    let (pool, _) = fresh().await;
    exec(&pool, "CREATE TABLE people (first text, last text)").await;
    let batch = names();
    // Declares "same schema" but swaps the two text columns, names and all.
    let swap = FnTransform::same_schema("swap-names", |b: RecordBatch| Ok(b.project(&[1, 0])?));
    let err = Pipeline::new(
        MemorySource::new(batch.schema(), vec![batch]).unwrap(),
        Arc::new(held_sink(&pool, "people")),
    )
    .transform(swap)
    .run()
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("swap-names") && text.contains("column 1: declared `first`"), "{text}");
    assert!(rows(&pool, "SELECT first, last FROM people").await.is_empty());
}

/// Wraps a sink and claims one row fewer than it wrote: a stage that lost a row.
struct LosesOneRow(Arc<PgCopySink>);

#[async_trait]
impl Sink for LosesOneRow {
    async fn start(&self, schema: &arrow_schema::SchemaRef) -> etlkit_core::Result<()> {
        self.0.start(schema).await
    }
    async fn write(&self, batch: RecordBatch, ctx: &Context) -> etlkit_core::Result<u64> {
        Ok(self.0.write(batch, ctx).await? - 1)
    }
    async fn finish(&self) -> etlkit_core::Result<LoadStats> {
        self.0.finish().await
    }
    async fn abort(&self) {
        self.0.abort().await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_accounting_fails_before_postgres_commits() {
    let (pool, _) = fresh().await;
    exec(&pool, "CREATE TABLE people (first text, last text)").await;
    let batch = names();
    let sink = Arc::new(LosesOneRow(Arc::new(held_sink(&pool, "people"))));
    let err =
        Pipeline::new(MemorySource::new(batch.schema(), vec![batch]).unwrap(), sink).run().await.unwrap_err();
    assert!(matches!(err, etlkit_core::Error::RowAccounting { read: 2, written: 1, .. }), "{err}");
    assert!(rows(&pool, "SELECT first, last FROM people").await.is_empty(), "nothing may be committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_copy_sink_reports_only_its_own_run() {
    let (pool, _) = fresh().await;
    exec(&pool, "CREATE TABLE people (first text, last text)").await;
    let sink = Arc::new(held_sink(&pool, "people"));
    for run in 1..=2 {
        let batch = names();
        let stats = Pipeline::new(MemorySource::new(batch.schema(), vec![batch]).unwrap(), sink.clone())
            .run()
            .await
            .unwrap();
        assert_eq!(stats.counter("inserted"), 2, "run {run}");
        assert_eq!(stats.counter("transactions"), 1, "run {run}");
    }
    assert_eq!(rows(&pool, "SELECT first, last FROM people").await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upsert_key_without_a_unique_index_fails_at_start() {
    let (pool, _) = fresh().await;
    exec(&pool, "CREATE TABLE kv (k bigint, v text)").await;
    let sink = PgCopySink::new(
        pool.clone(),
        PgSinkConfig {
            table: TableRef::new("kv"),
            mode: WriteMode::Upsert {
                key: vec!["k".into()],
                on_conflict: etlkit_postgres::OnConflict::DoNothing,
            },
            ..Default::default()
        },
    )
    .unwrap();
    let batch = RecordBatch::try_from_iter([
        ("k", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        ("v", Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef),
    ])
    .unwrap();
    let err = sink.start(&batch.schema()).await.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err.find_source::<PgError>(), Some(PgError::InvalidConfig { field: "mode", .. })),
        "{err:?}"
    );
    assert!(text.contains("no unique index") && text.contains("(k)"), "{text}");

    // With the unique index the same sink starts and upserts.
    exec(&pool, "ALTER TABLE kv ADD UNIQUE (k)").await;
    let stats = Pipeline::new(MemorySource::new(batch.schema(), vec![batch]).unwrap(), Arc::new(sink))
        .config(PipelineConfig::default())
        .run()
        .await
        .unwrap();
    assert_eq!(stats.counter("inserted"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_port_fails_within_the_timeout_with_connection_refused() {
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = DatabaseUrl::new(format!("postgres://loader:hunter2-secret@127.0.0.1:{port}/db"));
    let started = Instant::now();
    let config = ConnectConfig { connect_timeout: Duration::from_secs(3), ..Default::default() };
    let err = connect_with(&url, &config).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    let report = etlkit_core::Report::of(&err).to_string();
    assert!(report.to_lowercase().contains("refused"), "{report}");
    assert!(!format!("{report} {err:?}").contains("hunter2"), "{report} {err:?}");
    assert!(err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_fails_after_the_configured_timeout() {
    // Accepts TCP connections but never speaks: only the time-out can end the wait.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let url = DatabaseUrl::new(format!("postgres://loader:hunter2-secret@127.0.0.1:{port}/db"));
    let started = Instant::now();
    let config = ConnectConfig { connect_timeout: Duration::from_millis(700), ..Default::default() };
    let err = connect_with(&url, &config).await.unwrap_err();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(700) && took < Duration::from_secs(5), "took {took:?}");
    assert!(matches!(err, PgError::Timeout { .. }), "{err:?}");
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_postgres_urls_and_over_long_names_are_refused_at_start() {
    let err = connect(&DatabaseUrl::new("mysql://root:hunter2-secret@127.0.0.1:3306/db"), 1, "t")
        .await
        .unwrap_err();
    let text = format!("{err} {err:?}");
    assert!(matches!(err, PgError::InvalidConfig { field: "url", .. }), "{text}");
    assert!(text.contains("mysql://") && !text.contains("hunter2"), "{text}");

    let (pool, _) = fresh().await;
    let long = "t".repeat(70);
    let err = PgCopySink::new(
        pool.clone(),
        PgSinkConfig { table: TableRef::new(long.clone()), ..Default::default() },
    )
    .unwrap_err();
    assert!(err.to_string().contains("70 bytes"), "{err}");
    let err = PgSource::new(
        pool.clone(),
        PgSourceConfig { query: SourceQuery::Table(TableRef::new(long.clone())), ..Default::default() },
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("at most 63 bytes"), "{err}");
    let schema =
        arrow_schema::Schema::new(vec![arrow_schema::Field::new(&long, arrow_schema::DataType::Int64, true)]);
    let err = etlkit_postgres::create_table_if_not_exists(&pool, &TableRef::new("short"), &schema, &[])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("70 bytes"), "{err}");
    // Exactly 63 bytes is fine and stays whole.
    let max = "m".repeat(63);
    exec(&pool, &format!("CREATE TABLE {max} (id bigint)")).await;
    PgCopySink::new(pool.clone(), PgSinkConfig { table: TableRef::new(max), ..Default::default() }).unwrap();
}

/// Turns on password authentication for one role on a dedicated server (its own pg_hba.conf), so a
/// wrong password is refused by the server itself.
async fn password_server() -> (PgServer, String) {
    let server = tokio::task::spawn_blocking(PgServer::start_dedicated).await.unwrap().unwrap();
    let admin = connect(&DatabaseUrl::new(server.url()), 1, "t").await.unwrap();
    exec(&admin, "CREATE ROLE loader LOGIN PASSWORD 'right-Pa55'").await;
    let hba: String = sqlx::query_scalar("SHOW hba_file").fetch_one(&admin).await.unwrap();
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("host all loader 127.0.0.1/32 scram-sha-256\n{old}")).unwrap();
    exec(&admin, "SELECT pg_reload_conf()").await;
    let port = server.port().unwrap();
    (server, format!("127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_postgres_secret_in_debug_display_or_errors() {
    const SECRET: &str = "hunter2-Secret";
    let check =
        |what: &str, shown: String| assert!(!shown.contains(SECRET), "{what} shows the secret: {shown}");

    let url = DatabaseUrl::new(format!("postgres://loader:{SECRET}@127.0.0.1:1/db?password={SECRET}"));
    check("DatabaseUrl", format!("{url:?} {url} {}", url.redacted()));

    if PG.is_external() {
        return; // the wrong-password probe needs a server whose pg_hba.conf this test may change
    }
    let (server, host) = password_server().await;
    // A wrong password: the server's own refusal, without the password.
    let wrong = DatabaseUrl::new(format!("postgres://loader:{SECRET}@{host}/postgres"));
    let err = connect(&wrong, 1, "t").await.unwrap_err();
    let report = etlkit_core::Report::of(&err).to_string();
    assert!(report.contains("password authentication failed"), "{report}");
    check("wrong-password error", format!("{err} {err:?} {report}"));
    let core: etlkit_core::Error = err.into_stage(etlkit_core::Stage::Sink, "pg");
    check("core error", format!("{core} {core:?} {}", core.report()));

    // The right password: every public type holding the pool or its config prints no secret.
    let right = DatabaseUrl::new(format!("postgres://loader:right-Pa55@{host}/postgres"));
    let pool = connect(&right, 1, "t").await.unwrap();
    let sink =
        PgCopySink::new(pool.clone(), PgSinkConfig { table: TableRef::new("x"), ..Default::default() })
            .unwrap();
    let source = PgSource::new(
        pool.clone(),
        PgSourceConfig { query: SourceQuery::Query("SELECT 1 AS one".into()), ..Default::default() },
    )
    .await
    .unwrap();
    let shown = format!("{right:?} {right} {pool:?} {sink:?} {source:?}");
    assert!(!shown.contains("right-Pa55"), "{shown}");
    drop(server);
}

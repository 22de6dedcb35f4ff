//! A real Ballista cluster on 127.0.0.1: the `etlkit-ballista-scheduler` binary and two
//! `etlkit-ballista-executor` binaries, as separate processes whose only PostgreSQL credentials are
//! their own `DATABASE_URL`. The client's connector URL carries a password the cluster never sees.
//! `INSERT INTO pg SELECT ... FROM parquet` and a PostgreSQL-to-PostgreSQL copy on the cluster give
//! the same table contents as the same SQL in one process.

#![allow(missing_docs)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array};
use etlkit_ballista::remote_context;
use etlkit_datafusion::codec::Connectors;
use etlkit_datafusion::datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use etlkit_datafusion::{PgConnector, PgTable, PgTableOptions};
use etlkit_neo4j::{GraphConfig, GraphWriter, NodeSpec, Property};
use etlkit_postgres::sqlx::{self, AssertSqlSafe, PgPool, Row};
use etlkit_postgres::{DatabaseUrl, TableRef, connect};
use etlkit_testkit::{BoltDatabase, BoltServer, PgServer, Process, free_port};

struct Cluster {
    url: String,
    _scheduler: Process,
    executors: Vec<Process>,
}

/// Starts a scheduler and two executors, each told only `database_url` and the Bolt server.
fn start_cluster(database_url: &str, bolt: &BoltDatabase) -> Cluster {
    let scheduler_port = free_port().unwrap();
    let bind = format!("127.0.0.1:{scheduler_port}");
    let env = [
        ("DATABASE_URL", database_url),
        ("BOLT_URI", bolt.uri.as_str()),
        ("BOLT_USER", bolt.user.as_str()),
        ("BOLT_PASSWORD", bolt.password.as_str()),
        ("RUST_LOG", "info"),
    ];
    let mut scheduler = Process::spawn(
        "ballista-scheduler",
        Path::new(env!("CARGO_BIN_EXE_etlkit-ballista-scheduler")),
        &["--bind", &bind],
        &env,
    )
    .unwrap();
    scheduler.wait_for_port(scheduler_port, Duration::from_secs(60)).unwrap();
    let mut executors = Vec::new();
    for i in 0..2 {
        let (port, grpc) = (free_port().unwrap(), free_port().unwrap());
        let (port_s, grpc_s) = (port.to_string(), grpc.to_string());
        let mut e = Process::spawn(
            &format!("ballista-executor-{i}"),
            Path::new(env!("CARGO_BIN_EXE_etlkit-ballista-executor")),
            &["--scheduler", &bind, "--port", &port_s, "--grpc-port", &grpc_s, "--vcores", "2"],
            &env,
        )
        .unwrap();
        e.wait_for_port(port, Duration::from_secs(60)).unwrap();
        executors.push(e);
    }
    Cluster { url: format!("df://127.0.0.1:{scheduler_port}"), _scheduler: scheduler, executors }
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(pool).await.unwrap();
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query(AssertSqlSafe(sql.to_owned())).fetch_one(pool).await.unwrap().get(0)
}

/// Rows in one table and not the other, either way, counting duplicates.
async fn difference(pool: &PgPool, a: &str, b: &str) -> i64 {
    scalar(
        pool,
        &format!(
            "SELECT count(*) FROM ((SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b}) \
             UNION ALL (SELECT * FROM {b} EXCEPT ALL SELECT * FROM {a})) d"
        ),
    )
    .await
}

/// Four Parquet files of 5 000 rows each (with NULLs), in `dir`.
fn write_parquet(dir: &Path) {
    for f in 0..4i64 {
        let ids: Vec<i64> = (f * 5_000..(f + 1) * 5_000).collect();
        let names = ids.iter().map(|i| (i % 11 != 0).then(|| format!("name {i} é"))).collect();
        write_batch(&dir.join(format!("part-{f}.parquet")), ids, names);
    }
}

/// One Parquet file of `(id, name, amount)` rows.
fn write_batch(path: &Path, ids: Vec<i64>, names: Vec<Option<String>>) {
    let amounts: Vec<Option<f64>> = ids.iter().map(|i| (i % 13 != 0).then_some(*i as f64 / 8.0)).collect();
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(ids)) as ArrayRef),
        ("name", Arc::new(StringArray::from(names)) as ArrayRef),
        ("amount", Arc::new(Float64Array::from(amounts)) as ArrayRef),
    ])
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn two_phase() -> PgTableOptions {
    PgTableOptions { commit: etlkit_datafusion::CommitProtocol::TwoPhase, ..Default::default() }
}

fn count(batches: &[RecordBatch]) -> u64 {
    batches[0].column(0).as_any().downcast_ref::<UInt64Array>().unwrap().value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ballista_cluster_loads_and_copies_exactly_what_one_process_does() {
    let pg = tokio::task::spawn_blocking(|| PgServer::start().unwrap()).await.unwrap();
    let url = {
        let pg = pg.clone();
        tokio::task::spawn_blocking(move || pg.fresh_database().unwrap()).await.unwrap()
    };
    let pool = connect(&DatabaseUrl::new(url.clone()), 4, "ballista-test").await.unwrap();
    for t in ["t_cluster", "t_local", "copy_cluster", "copy_local", "t_two_phase"] {
        exec(&pool, &format!("CREATE TABLE {t} (id bigint PRIMARY KEY, name text, amount double precision)"))
            .await;
    }
    let data = tempfile::tempdir().unwrap();
    write_parquet(data.path());
    let input = format!("{}/", data.path().display());

    // The client's URL has a password; the cluster only has `url` (the server ignores passwords).
    let secret = "pw-ballista-51c0";
    let with_password = url.replacen("postgres://postgres@", &format!("postgres://postgres:{secret}@"), 1);
    let client_pg = PgConnector::new("default", DatabaseUrl::new(with_password), 4);

    let bolt = tokio::task::spawn_blocking(|| {
        let server = BoltServer::start().unwrap();
        let db = server.fresh_database().unwrap();
        (server, db)
    })
    .await
    .unwrap();
    let cluster = tokio::task::spawn_blocking({
        let url = url.clone();
        let db = bolt.1.clone();
        move || start_cluster(&url, &db)
    })
    .await
    .unwrap();
    let remote = remote_context(&cluster.url, Connectors::from_env(4).with(client_pg.clone())).await.unwrap();
    let local = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(4));
    etlkit_datafusion::register_functions(&local);
    for ctx in [&remote, &local] {
        ctx.register_parquet("raw", &input, ParquetReadOptions::default()).await.unwrap();
        for t in ["t_cluster", "t_local", "copy_cluster", "copy_local"] {
            let t_pg =
                PgTable::new(client_pg.clone(), TableRef::new(t), PgTableOptions::default()).await.unwrap();
            ctx.register_table(t, Arc::new(t_pg)).unwrap();
        }
    }

    // Parquet → PostgreSQL.
    let load = "SELECT id, name, amount FROM raw WHERE id % 10 <> 3";
    let r = remote.sql(&format!("INSERT INTO t_cluster {load}")).await.unwrap().collect().await;
    if r.is_err() {
        eprintln!("SCHEDULER\n{}", cluster._scheduler.output());
        for e in &cluster.executors {
            eprintln!("EXECUTOR\n{}", e.output());
        }
    }
    let n = count(&r.unwrap());
    let m = count(&local.sql(&format!("INSERT INTO t_local {load}")).await.unwrap().collect().await.unwrap());
    assert_eq!((n, m), (18_000, 18_000));
    assert_eq!(scalar(&pool, "SELECT count(*) FROM t_cluster").await, 18_000);
    assert_eq!(
        difference(&pool, "t_cluster", "t_local").await,
        0,
        "the cluster stored what one process stores"
    );

    // The same with two-phase commit: each executor's partitions COPY straight into the table and
    // prepare; the commit stage commits them all.
    let t = PgTable::new(client_pg.clone(), TableRef::new("t_two_phase"), two_phase()).await.unwrap();
    remote.register_table("t_two_phase", Arc::new(t)).unwrap();
    let n = count(
        &remote.sql(&format!("INSERT INTO t_two_phase {load}")).await.unwrap().collect().await.unwrap(),
    );
    assert_eq!(n, 18_000);
    assert_eq!(difference(&pool, "t_two_phase", "t_local").await, 0);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM pg_prepared_xacts").await, 0);

    // PostgreSQL → PostgreSQL (partitioned snapshot scan → staged writes → one commit).
    let n = count(
        &remote
            .sql("INSERT INTO copy_cluster SELECT * FROM t_cluster")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap(),
    );
    let m = count(
        &local.sql("INSERT INTO copy_local SELECT * FROM t_local").await.unwrap().collect().await.unwrap(),
    );
    assert_eq!((n, m), (18_000, 18_000));
    assert_eq!(difference(&pool, "copy_cluster", "t_cluster").await, 0);
    assert_eq!(difference(&pool, "copy_cluster", "copy_local").await, 0);
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM pg_class WHERE relname LIKE 'etlkit\\_stage\\_%'").await,
        0
    );

    // etlkit's SQL function runs on the executors too, with the digests one process computes.
    let q = "SELECT id, encode(etlkit_row_hash(id, name, amount), 'hex') AS h FROM raw ORDER BY id";
    let a = remote.sql(q).await.unwrap().collect().await.unwrap();
    let b = local.sql(q).await.unwrap().collect().await.unwrap();
    let rows = |v: &[RecordBatch]| v.iter().flat_map(id_and_hash).collect::<Vec<String>>();
    assert_eq!(rows(&a).len(), 20_000);
    assert_eq!(rows(&a), rows(&b));

    // A bad value in one file fails the query on the cluster: the target keeps its rows and no
    // staging table is left, although the other partitions' staging tables were committed on
    // other executors.
    let bad = tempfile::tempdir().unwrap();
    write_parquet(bad.path());
    write_batch(
        &bad.path().join("part-9.parquet"),
        vec![1_000_000, 1_000_001],
        vec![Some("x".repeat(200)), None],
    );
    remote
        .register_parquet("bad", &format!("{}/", bad.path().display()), ParquetReadOptions::default())
        .await
        .unwrap();
    exec(&pool, "CREATE TABLE narrow (id bigint PRIMARY KEY, name varchar(100), amount double precision)")
        .await;
    exec(&pool, "INSERT INTO narrow VALUES (-1, 'before', 0)").await;
    let narrow =
        PgTable::new(client_pg.clone(), TableRef::new("narrow"), PgTableOptions::default()).await.unwrap();
    remote.register_table("narrow", Arc::new(narrow)).unwrap();
    let narrow = PgTable::new(client_pg.clone(), TableRef::new("narrow"), two_phase()).await.unwrap();
    remote.register_table("narrow_two_phase", Arc::new(narrow)).unwrap();
    for sql in [
        "INSERT INTO narrow SELECT * FROM bad",
        "INSERT OVERWRITE narrow SELECT * FROM bad",
        "INSERT INTO narrow_two_phase SELECT * FROM bad",
    ] {
        let err = remote.sql(sql).await.unwrap().collect().await.expect_err("a 200-character name must fail");
        assert!(format!("{err}").contains("too long"), "{sql}: {err}");
        assert_eq!(scalar(&pool, "SELECT count(*) FROM narrow").await, 1, "{sql}: target unchanged");
        assert_eq!(
            scalar(&pool, "SELECT count(*) FROM pg_class WHERE relname LIKE 'etlkit\\_stage\\_%'").await,
            0,
            "{sql}"
        );
        assert_eq!(
            scalar(&pool, "SELECT count(*) FROM etlkit.datafusion_runs WHERE state <> 'aborted'").await,
            0,
            "{sql}: run closed"
        );
        assert_eq!(
            scalar(&pool, "SELECT count(*) FROM pg_prepared_xacts").await,
            0,
            "{sql}: nothing prepared"
        );
    }

    // Parquet → graph on the cluster: the graph table travels as a recipe (connection name, mapping,
    // settings); the executor doing the write connects with its own BOLT_* variables.
    let db = &bolt.1;
    assert!(!db.password.is_empty());
    let config = GraphConfig {
        uri: db.uri.clone(),
        user: db.user.clone(),
        password: db.password.clone(),
        database: db.name.clone(),
        workers: 2,
        batch_rows: 2000,
        ..Default::default()
    };
    let writer =
        Arc::new(tokio::task::spawn_blocking(move || GraphWriter::connect(config).unwrap()).await.unwrap());
    let spec = NodeSpec::new("Item", Property::from_column("id", "id"), vec![Property::column("name")]);
    let schema = remote.table("raw").await.unwrap().schema().as_arrow().project(&[0, 1]).unwrap();
    let items = etlkit_datafusion::GraphTable::nodes(writer.clone(), spec, Arc::new(schema)).unwrap();
    remote.register_table("items", Arc::new(items)).unwrap();
    for _ in 0..2 {
        let n = count(
            &remote.sql("INSERT INTO items SELECT id, name FROM raw").await.unwrap().collect().await.unwrap(),
        );
        assert_eq!(n, 20_000);
        assert_eq!(
            writer.count("MATCH (n:Item) RETURN count(n)").await.unwrap(),
            20_000,
            "MERGE: a re-run adds nothing"
        );
    }
    assert_eq!(
        writer.count("MATCH (n:Item {id: 4242}) WHERE n.name = 'name 4242 é' RETURN count(n)").await.unwrap(),
        1
    );

    // The work ran on both executors, and neither ever saw the client's password.
    for e in &cluster.executors {
        let out = e.output();
        assert!(!out.contains(secret), "an executor logged the password");
        assert!(!out.contains(&bolt.1.password), "an executor logged the Bolt password");
    }
    let busy = cluster.executors.iter().filter(|e| e.output().contains("Execute task")).count();
    assert_eq!(
        busy,
        2,
        "both executors ran tasks:\n{}\n---\n{}",
        cluster.executors[0].log_tail(20),
        cluster.executors[1].log_tail(20)
    );
}

/// One string per row: `id|hash`.
fn id_and_hash(batch: &RecordBatch) -> Vec<String> {
    let ids = batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    let hs = batch.column(1).as_any().downcast_ref::<StringArray>().unwrap();
    (0..batch.num_rows()).map(|i| format!("{}|{}", ids.value(i), hs.value(i))).collect()
}

//! PostgreSQL as a DataFusion table, against a real throwaway server (etlkit-testkit; `DATABASE_URL`
//! reused when set): partitioned snapshot scans equal PgSource, INSERT INTO counts and contents are
//! exact, and a failing partition leaves the target unchanged and no staging table behind.

#![allow(missing_docs)]

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, FixedSizeBinaryArray, RecordBatch, UInt64Array};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use etlkit_core::Source;
use etlkit_datafusion::{DfError, PgConnector, PgTable, PgTableOptions, datafusion};
use etlkit_postgres::sqlx::{AssertSqlSafe, Connection, PgPool};
use etlkit_postgres::{DatabaseUrl, PgSource, PgSourceConfig, SourceQuery, TableRef};
use futures::TryStreamExt;

mod support;

use support::{chain, digests, exec, fresh, scalar};

fn ctx(partitions: usize) -> SessionContext {
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(partitions));
    etlkit_datafusion::register_functions(&ctx);
    ctx
}

async fn register(ctx: &SessionContext, url: &str, table: &str, options: PgTableOptions) -> Arc<PgTable> {
    let connector = PgConnector::new("default", DatabaseUrl::new(url), 8);
    let t = Arc::new(PgTable::new(connector, TableRef::new(table), options).await.unwrap());
    ctx.register_table(table, t.clone()).unwrap();
    t
}

async fn pg_source_rows(pool: &PgPool, table: &str) -> Vec<RecordBatch> {
    let source = PgSource::new(
        pool.clone(),
        PgSourceConfig { query: SourceQuery::Table(TableRef::new(table)), batch_size: 1000 },
    )
    .await
    .unwrap();
    Box::new(source).into_stream(Default::default()).try_collect().await.unwrap()
}

const TYPES_TABLE: &str = "CREATE TABLE typed (
    id bigint PRIMARY KEY, small smallint, n integer NOT NULL, f real, d double precision,
    amount numeric(12,2), big numeric, name text, code varchar(5), flag boolean, day date,
    at time, ts timestamp, tz timestamptz, raw bytea, u uuid, js jsonb, tags text[], nums int8[])";

async fn fill_typed(pool: &PgPool, rows: i64) {
    exec(pool, TYPES_TABLE).await;
    exec(
        pool,
        &format!(
            "INSERT INTO typed SELECT i, (i % 100)::int2, i::int4 * 3, i / 7.0, i / 3.0, (i * 1.25)::numeric(12,2),
                (i::numeric * 1000000000000.123), 'name ' || i, substr(md5(i::text), 1, 5), i % 2 = 0,
                date '2024-01-01' + (i % 400)::int, time '10:00' + (i % 60) * interval '1 minute',
                timestamp '2024-01-01' + i * interval '1 second', timestamptz '2024-01-01 00:00+00' + i * interval '1 hour',
                decode(md5(i::text), 'hex'), md5(i::text)::uuid, jsonb_build_object('i', i), ARRAY['a' || i, NULL],
                ARRAY[i, i * 2]
             FROM generate_series(1, {rows}) i"
        ),
    )
    .await;
    // Some NULLs in every nullable column.
    exec(
        pool,
        "UPDATE typed SET small = NULL, f = NULL, d = NULL, amount = NULL, big = NULL, name = NULL, code = NULL,
           flag = NULL, day = NULL, at = NULL, ts = NULL, tz = NULL, raw = NULL, u = NULL, js = NULL, tags = NULL,
           nums = NULL WHERE id % 17 = 0",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitioned_scan_equals_pg_source_by_key_and_by_ctid() {
    let (pool, url) = fresh().await;
    fill_typed(&pool, 20_000).await;
    // The same rows in a table without a primary key: ctid page ranges.
    exec(&pool, "CREATE TABLE heap AS SELECT * FROM typed").await;
    let want = digests(&pg_source_rows(&pool, "typed").await);
    assert_eq!(want.values().sum::<usize>(), 20_000);
    for (table, partitioning) in [("typed", "primary-key ranges"), ("heap", "ctid page ranges")] {
        for partitions in [1, 3, 7] {
            let ctx = ctx(partitions);
            let t = register(&ctx, &url, table, PgTableOptions::default()).await;
            assert_eq!(t.partitioning(), partitioning);
            let df = ctx.sql(&format!("SELECT * FROM {table}")).await.unwrap();
            let plan = df.clone().create_physical_plan().await.unwrap();
            let shown = datafusion::physical_plan::displayable(plan.as_ref()).indent(true).to_string();
            assert!(shown.contains(&format!("partitions={partitions}")), "{shown}");
            let got = df.collect().await.unwrap();
            assert_eq!(got[0].schema(), t.schema_ref_for_test(), "catalog types");
            assert_eq!(digests(&got), want, "{table} in {partitions} partitions");
        }
    }
}

trait SchemaRefForTest {
    fn schema_ref_for_test(&self) -> datafusion::arrow::datatypes::SchemaRef;
}
impl SchemaRefForTest for PgTable {
    fn schema_ref_for_test(&self) -> datafusion::arrow::datatypes::SchemaRef {
        datafusion::datasource::TableProvider::schema(self)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scan_reads_one_snapshot_projection_and_limit_are_pushed_down() {
    let (pool, url) = fresh().await;
    exec(&pool, "CREATE TABLE s (id int PRIMARY KEY, v text)").await;
    exec(&pool, "INSERT INTO s SELECT i, 'v' || i FROM generate_series(1, 10000) i").await;
    let ctx = ctx(4);
    register(&ctx, &url, "s", PgTableOptions::default()).await;
    // Plan (exports the snapshot), then change the table, then run: the scan sees the planned state.
    let plan = ctx.sql("SELECT id FROM s").await.unwrap().create_physical_plan().await.unwrap();
    exec(&pool, "DELETE FROM s WHERE id <= 5000; INSERT INTO s VALUES (20000, 'late')").await;
    let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx()).await.unwrap();
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 10_000, "every partition read the exported snapshot");
    assert_eq!(batches[0].num_columns(), 1);
    let df = ctx.sql("SELECT v FROM s LIMIT 7").await.unwrap();
    let plan = df.clone().create_physical_plan().await.unwrap();
    let shown = datafusion::physical_plan::displayable(plan.as_ref()).indent(true).to_string();
    assert!(shown.contains("columns=[v]") && shown.contains("limit=7"), "{shown}");
    let rows: usize = df.collect().await.unwrap().iter().map(RecordBatch::num_rows).sum();
    assert_eq!(rows, 7);
    let out = ctx.sql("SELECT count(*) FROM s").await.unwrap().collect().await.unwrap();
    let n =
        out[0].column(0).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().unwrap().value(0);
    assert_eq!(n, 5001);
    // No scan connection is left open once the query is done.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let open = scalar(
        &pool,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'etlkit-datafusion' AND state LIKE 'idle in%'",
    )
    .await;
    assert_eq!(open, 0);
}

fn count_of(batches: &[RecordBatch]) -> u64 {
    batches[0].column(0).as_any().downcast_ref::<UInt64Array>().unwrap().value(0)
}

async fn staging_tables(pool: &PgPool) -> i64 {
    scalar(pool, "SELECT count(*) FROM pg_class WHERE relname LIKE 'etlkit\\_stage\\_%'").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn insert_into_appends_overwrites_and_upserts_exactly() {
    let (pool, url) = fresh().await;
    fill_typed(&pool, 5_000).await;
    exec(&pool, &TYPES_TABLE.replace("CREATE TABLE typed", "CREATE TABLE copy")).await;
    let ctx = ctx(4);
    register(&ctx, &url, "typed", PgTableOptions::default()).await;
    register(&ctx, &url, "copy", PgTableOptions::default()).await;
    // PostgreSQL to PostgreSQL through DataFusion: scan partitions feed write partitions.
    let plan =
        ctx.sql("INSERT INTO copy SELECT * FROM typed").await.unwrap().create_physical_plan().await.unwrap();
    let shown = datafusion::physical_plan::displayable(plan.as_ref()).indent(true).to_string();
    assert!(shown.contains("PgCommitExec") && shown.contains("PgWriteExec"), "{shown}");
    let out = datafusion::physical_plan::collect(plan, ctx.task_ctx()).await.unwrap();
    assert_eq!(count_of(&out), 5_000);
    // Unconstrained `numeric` goes through etlkit-postgres's conform as Decimal128(38, 10), like
    // PgCopySink: the same values, but a display scale of 10 (1.5 reads back as 1.5000000000).
    let differ = scalar(
        &pool,
        "SELECT count(*) FROM typed t JOIN copy c USING (id) WHERE t.big IS DISTINCT FROM c.big",
    )
    .await;
    assert_eq!(differ, 0, "numeric values");
    let all_but_big = "id, small, n, f, d, amount, name, code, flag, day, at, ts, tz, raw, u, js, tags, nums";
    for col in all_but_big.split(", ") {
        let differ = scalar(
            &pool,
            &format!("SELECT count(*) FROM typed t JOIN copy c USING (id) WHERE t.{col}::text IS DISTINCT FROM c.{col}::text"),
        )
        .await;
        assert_eq!(differ, 0, "column {col} differs after the copy");
    }
    let read = |table: &'static str| {
        let pool = pool.clone();
        async move {
            let q = SourceQuery::Query(format!("SELECT {all_but_big} FROM {table}"));
            let source = PgSource::new(pool, PgSourceConfig { query: q, batch_size: 1000 }).await.unwrap();
            let batches: Vec<RecordBatch> =
                Box::new(source).into_stream(Default::default()).try_collect().await.unwrap();
            digests(&batches)
        }
    };
    assert!(read("copy").await == read("typed").await, "row-hash multisets of the copy and the source");
    assert_eq!(staging_tables(&pool).await, 0);

    // Append the same rows again into a key-less table, then overwrite.
    exec(&pool, "CREATE TABLE log (id bigint, name text)").await;
    register(&ctx, &url, "log", PgTableOptions::default()).await;
    for _ in 0..2 {
        let out =
            ctx.sql("INSERT INTO log SELECT id, name FROM typed").await.unwrap().collect().await.unwrap();
        assert_eq!(count_of(&out), 5_000);
    }
    assert_eq!(scalar(&pool, "SELECT count(*) FROM log").await, 10_000);
    let out = ctx
        .sql("INSERT OVERWRITE log SELECT id, name FROM typed WHERE id <= 10")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(count_of(&out), 10);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM log").await, 10);
    assert_eq!(scalar(&pool, "SELECT sum(id)::int8 FROM log").await, 55);

    // Upsert on the key: existing rows updated, new rows inserted.
    let up = ctx.clone();
    let upsert = PgTableOptions { upsert_key: vec!["id".into()], ..Default::default() };
    up.deregister_table("copy").unwrap();
    register(&up, &url, "copy", upsert).await;
    let out = up
        .sql("INSERT INTO copy (id, n, name) SELECT id + 4000, -1, 'upserted' FROM typed WHERE id <= 2000")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(count_of(&out), 2000);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM copy").await, 6_000);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM copy WHERE name = 'upserted'").await, 2000);
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM copy WHERE n = -1 AND id BETWEEN 4001 AND 5000").await,
        1000
    );
    assert_eq!(staging_tables(&pool).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn insert_from_memory_in_many_partitions_is_exact() {
    let (pool, url) = fresh().await;
    exec(&pool, "CREATE TABLE t (id bigint PRIMARY KEY, name varchar(20), amount numeric(10,2))").await;
    let ctx = ctx(4);
    register(&ctx, &url, "t", PgTableOptions::default()).await;
    let parts: Vec<Vec<RecordBatch>> = (0..6)
        .map(|p| {
            (0..3)
                .map(|b| {
                    let base = p * 30_000 + b * 10_000;
                    RecordBatch::try_from_iter([
                        (
                            "id",
                            Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(
                                base..base + 10_000,
                            )) as ArrayRef,
                        ),
                        (
                            "name",
                            Arc::new(datafusion::arrow::array::StringArray::from_iter_values(
                                (base..base + 10_000).map(|i| format!("n{i}")),
                            )) as ArrayRef,
                        ),
                        (
                            "amount",
                            Arc::new(datafusion::arrow::array::Float64Array::from_iter_values(
                                (base..base + 10_000).map(|i| i as f64 / 4.0),
                            )) as ArrayRef,
                        ),
                    ])
                    .unwrap()
                })
                .collect()
        })
        .collect();
    let schema = parts[0][0].schema();
    ctx.register_table("mem", Arc::new(MemTable::try_new(schema, parts).unwrap())).unwrap();
    let out =
        ctx.sql("INSERT INTO t SELECT id, name, amount FROM mem").await.unwrap().collect().await.unwrap();
    assert_eq!(count_of(&out), 180_000);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM t").await, 180_000);
    assert_eq!(scalar(&pool, "SELECT count(DISTINCT id) FROM t").await, 180_000);
    assert_eq!(scalar(&pool, "SELECT (sum(amount) * 4)::int8 FROM t").await, (0..180_000i64).sum::<i64>());
    assert_eq!(scalar(&pool, "SELECT count(*) FROM t WHERE name <> 'n' || id").await, 0);
    // The row hash in SQL on what was loaded equals RowHasher on the source rows.
    let out = ctx.sql("SELECT etlkit_row_hash(id, name) AS h FROM t").await.unwrap().collect().await.unwrap();
    let mut got: Vec<Vec<u8>> = out
        .iter()
        .flat_map(|b| {
            let a = b.column(0).as_any().downcast_ref::<FixedSizeBinaryArray>().unwrap().clone();
            (0..a.len()).map(move |i| a.value(i).to_vec())
        })
        .collect();
    got.sort();
    let mem = ctx.sql("SELECT id, name FROM mem").await.unwrap().collect().await.unwrap();
    let mut want: Vec<Vec<u8>> = digests(&mem).into_keys().collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(staging_tables(&pool).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_partition_leaves_the_target_unchanged_and_no_staging_table() {
    let (pool, url) = fresh().await;
    exec(&pool, "CREATE TABLE t (id bigint PRIMARY KEY, code varchar(3))").await;
    exec(&pool, "INSERT INTO t VALUES (-1, 'old'), (-2, 'old')").await;
    let ctx = ctx(4);
    register(&ctx, &url, "t", PgTableOptions::default()).await;
    // Four partitions of 50 000 rows; one row of partition 2 is too long for varchar(3).
    ctx.register_table("mem", Arc::new(mem_partitions(Some(130_000)))).unwrap();
    for sql in ["INSERT INTO t SELECT id, code FROM mem", "INSERT OVERWRITE t SELECT id, code FROM mem"] {
        let err =
            ctx.sql(sql).await.unwrap().collect().await.expect_err("a value too long must fail the query");
        let report = format!("{err}");
        let df = DfError::find(&err);
        let chain = chain(&err);
        assert!(df.is_some(), "{report}");
        assert!(chain.contains("too long"), "{chain}");
        assert_eq!(scalar(&pool, "SELECT count(*) FROM t").await, 2, "{sql}: target unchanged");
        assert_eq!(scalar(&pool, "SELECT count(*) FROM t WHERE code = 'old'").await, 2);
        assert_eq!(staging_tables(&pool).await, 0, "{sql}: no staging table left");
    }
    // A bad value that fails in the commit step (a duplicate key across partitions) is rolled back too.
    let out = ctx.sql("INSERT INTO t VALUES (1, 'a'), (2, 'b')").await.unwrap().collect().await.unwrap();
    assert_eq!(count_of(&out), 2);
    let err = ctx.sql("INSERT INTO t VALUES (3, 'c'), (1, 'dup')").await.unwrap().collect().await;
    assert!(err.is_err());
    assert_eq!(scalar(&pool, "SELECT count(*) FROM t").await, 4);
    assert_eq!(staging_tables(&pool).await, 0);
}

#[tokio::test]
async fn connector_debug_hides_the_password() {
    let c = PgConnector::new("default", DatabaseUrl::new("postgres://u:s3cret-pw@127.0.0.1/db"), 1);
    let shown = format!("{c:?}");
    assert!(!shown.contains("s3cret-pw"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn star_schema_sql_from_the_docs() {
    let (pool, url) = fresh().await;
    exec(
        &pool,
        "CREATE TABLE dim_vendor (vendor_key bytea PRIMARY KEY, vendor_id integer NOT NULL);
         CREATE TABLE dim_zone   (zone_key bytea PRIMARY KEY, location_id integer NOT NULL);
         CREATE TABLE fact_trip  (trip_key bytea PRIMARY KEY, vendor_key bytea NOT NULL,
                                  pickup_zone bytea NOT NULL, dropoff_zone bytea NOT NULL,
                                  pickup_at timestamp NOT NULL, fare numeric(10,2) NOT NULL)",
    )
    .await;
    let ctx = ctx(3);
    let raw = etlkit_testkit::taxi::yellow_trips_batches(20_000, 4096, 7, 0.05);
    ctx.register_table("raw", Arc::new(MemTable::try_new(raw[0].schema(), vec![raw]).unwrap())).unwrap();
    for (t, key) in [("dim_vendor", "vendor_key"), ("dim_zone", "zone_key"), ("fact_trip", "trip_key")] {
        register(&ctx, &url, t, PgTableOptions { upsert_key: vec![key.into()], ..Default::default() }).await;
    }
    let sql =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/datafusion.md")).unwrap();
    let block = sql.split("```sql\n-- PostgreSQL (once):").nth(1).unwrap().split("```").next().unwrap();
    let statements: Vec<String> = block
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n")
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    assert_eq!(statements.len(), 3);
    for round in 0..2 {
        for s in &statements {
            ctx.sql(s)
                .await
                .unwrap_or_else(|e| panic!("{s}: {e}"))
                .collect()
                .await
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        let distinct = |sql: &'static str| {
            let ctx = ctx.clone();
            async move {
                let out = ctx.sql(sql).await.unwrap().collect().await.unwrap();
                out[0]
                    .column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::Int64Array>()
                    .unwrap()
                    .value(0)
            }
        };
        assert_eq!(
            scalar(&pool, "SELECT count(*) FROM dim_vendor").await,
            distinct("SELECT count(DISTINCT \"VendorID\") FROM raw").await,
            "round {round}"
        );
        assert_eq!(
            scalar(&pool, "SELECT count(*) FROM dim_zone").await,
            distinct("SELECT count(*) FROM (SELECT \"PULocationID\" FROM raw UNION SELECT \"DOLocationID\" FROM raw)").await
        );
        let trips = distinct(
            "SELECT count(*) FROM (SELECT DISTINCT \"VendorID\", tpep_pickup_datetime, tpep_dropoff_datetime, \
             \"PULocationID\", \"DOLocationID\", fare_amount FROM raw)",
        )
        .await;
        assert!(trips < 20_000, "planted duplicates collapse");
        assert_eq!(scalar(&pool, "SELECT count(*) FROM fact_trip").await, trips);
        // Every fact row finds its dimensions.
        assert_eq!(
            scalar(
                &pool,
                "SELECT count(*) FROM fact_trip f JOIN dim_vendor v USING (vendor_key) \
                 JOIN dim_zone p ON p.zone_key = f.pickup_zone JOIN dim_zone d ON d.zone_key = f.dropoff_zone"
            )
            .await,
            trips
        );
    }
    // The de-duplication query of the docs runs too.
    let dedup = sql.split("De-duplication in SQL:\n\n```sql\n").nth(1).unwrap().split("```").next().unwrap();
    let rows: usize =
        ctx.sql(dedup).await.unwrap().collect().await.unwrap().iter().map(RecordBatch::num_rows).sum();
    assert!(rows > 0 && rows < 20_000);
    assert_eq!(staging_tables(&pool).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plans_and_errors_never_show_the_password() {
    let (pool, url) = fresh().await;
    exec(&pool, "CREATE TABLE p (id bigint PRIMARY KEY, code varchar(2))").await;
    // The throwaway server trusts local connections: the password is sent and ignored.
    let secret = "pw-s3cret-9f2c";
    let with_password = url.replacen("postgres://postgres@", &format!("postgres://postgres:{secret}@"), 1);
    assert!(with_password.contains(secret), "{}", etlkit_postgres::redact(&with_password));
    let ctx = ctx(3);
    register(&ctx, &with_password, "p", PgTableOptions::default()).await;
    let mut shown = String::new();
    for sql in ["SELECT * FROM p", "INSERT INTO p VALUES (1, 'a'), (2, 'b')"] {
        let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        shown.push_str(&format!("{plan:?}\n"));
        shown.push_str(&datafusion::physical_plan::displayable(plan.as_ref()).indent(true).to_string());
        shown.push_str(&datafusion::physical_plan::displayable(plan.as_ref()).indent(false).to_string());
    }
    assert!(shown.contains("PgCommitExec") && shown.contains("PgScanExec"), "{shown}");
    let err = ctx.sql("INSERT INTO p VALUES (3, 'too long')").await.unwrap().collect().await.unwrap_err();
    let chain = format!("{err:?}{}", chain(&err));
    shown.push_str(&chain);
    assert!(!shown.contains(secret), "the password leaked: {shown}");
}

fn two_phase() -> PgTableOptions {
    PgTableOptions { commit: etlkit_datafusion::CommitProtocol::TwoPhase, ..Default::default() }
}

async fn prepared(pool: &PgPool) -> i64 {
    scalar(pool, "SELECT count(*) FROM pg_prepared_xacts WHERE database = current_database()").await
}

/// Four partitions of 50 000 `(id, code)` rows; `bad` (if any) gets a code too long for varchar(3).
fn mem_partitions(bad: Option<i64>) -> MemTable {
    let parts: Vec<Vec<RecordBatch>> = (0..4i64)
        .map(|p| {
            let ids = p * 50_000..(p + 1) * 50_000;
            let codes = ids
                .clone()
                .map(|i| if Some(i) == bad { "much too long".to_string() } else { format!("{}", i % 1000) });
            vec![
                RecordBatch::try_from_iter([
                    ("id", Arc::new(datafusion::arrow::array::Int64Array::from_iter_values(ids)) as ArrayRef),
                    (
                        "code",
                        Arc::new(datafusion::arrow::array::StringArray::from_iter_values(codes)) as ArrayRef,
                    ),
                ])
                .unwrap(),
            ]
        })
        .collect();
    MemTable::try_new(parts[0][0].schema(), parts).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_phase_insert_is_exact_and_a_failure_leaves_nothing_prepared() {
    let (pool, url) = fresh().await;
    exec(&pool, "CREATE TABLE t (id bigint PRIMARY KEY, code varchar(3))").await;
    exec(&pool, "INSERT INTO t VALUES (-1, 'old')").await;
    let ctx = ctx(4);
    register(&ctx, &url, "t", two_phase()).await;
    ctx.register_table("good", Arc::new(mem_partitions(None))).unwrap();
    ctx.register_table("bad", Arc::new(mem_partitions(Some(130_000)))).unwrap();

    // A bad value in partition 2: every partition's transaction is rolled back, prepared or not.
    let err = ctx.sql("INSERT INTO t SELECT id, code FROM bad").await.unwrap().collect().await.unwrap_err();
    let chain = chain(&err);
    assert!(chain.contains("too long"), "{chain}");
    assert_eq!(scalar(&pool, "SELECT count(*) FROM t").await, 1, "target unchanged");
    // The run's failure is on record, so partitions still running report the cause, not just "aborted".
    let cause = scalar(
        &pool,
        "SELECT count(*) FROM etlkit.datafusion_runs WHERE state = 'aborted' AND cause LIKE '%too long%'",
    )
    .await;
    assert_eq!(cause, 1);
    assert_eq!(prepared(&pool).await, 0, "no prepared transaction left");
    assert_eq!(staging_tables(&pool).await, 0);
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM etlkit.datafusion_runs WHERE state <> 'aborted'").await,
        0,
        "run closed"
    );

    // The good input: four prepared partitions committed, exact contents, nothing left over.
    let plan = ctx
        .sql("INSERT INTO t SELECT id, code FROM good")
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let shown = datafusion::physical_plan::displayable(plan.as_ref()).indent(true).to_string();
    assert!(shown.contains("PgWriteExec") && shown.contains("commit=TwoPhase"), "{shown}");
    let out = datafusion::physical_plan::collect(plan, ctx.task_ctx()).await.unwrap();
    assert_eq!(count_of(&out), 200_000);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM t").await, 200_001);
    assert_eq!(scalar(&pool, "SELECT count(DISTINCT id) FROM t WHERE id >= 0").await, 200_000);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM t WHERE id >= 0 AND code <> (id % 1000)::text").await, 0);
    assert_eq!(prepared(&pool).await, 0);
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM etlkit.datafusion_runs WHERE state <> 'aborted'").await,
        0
    );

    // A key already in the table fails in its partition and rolls the others back.
    let err = ctx
        .sql("INSERT INTO t SELECT id, code FROM good WHERE id % 50000 = 7")
        .await
        .unwrap()
        .collect()
        .await;
    assert!(err.is_err());
    assert_eq!(scalar(&pool, "SELECT count(*) FROM t").await, 200_001);
    assert_eq!(prepared(&pool).await, 0);

    // Two-phase appends only, and needs max_prepared_transactions >= partitions: refused at planning.
    let err =
        ctx.sql("INSERT OVERWRITE t SELECT id, code FROM good").await.unwrap().collect().await.unwrap_err();
    assert!(format!("{err}").contains("two-phase commit appends only"), "{err}");
    let many = self::ctx(100);
    register(&many, &url, "t", two_phase()).await;
    many.register_table("good", Arc::new(mem_partitions(None))).unwrap();
    let err = many
        .sql("INSERT INTO t SELECT id + 1000000, code FROM good")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(format!("{err}").contains("max_prepared_transactions >= 100"), "{err}");
    assert_eq!(scalar(&pool, "SELECT count(*) FROM t").await, 200_001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_transactions_of_interrupted_runs_are_resolved() {
    let (pool, url) = fresh().await;
    exec(&pool, "CREATE TABLE r (id bigint PRIMARY KEY)").await;
    // Plan (not run) an INSERT once so the ledger exists.
    let ctx = ctx(2);
    register(&ctx, &url, "r", two_phase()).await;
    ctx.sql("INSERT INTO r VALUES (0)").await.unwrap().create_physical_plan().await.unwrap();
    exec(&pool, "DELETE FROM etlkit.datafusion_runs").await;
    // What crashed processes leave: a run whose commit had begun (one partition committed, one still
    // prepared), a run that was still writing long ago, a prepared partition with no run at all
    // (a retried task's duplicate), and a run whose commit had begun with the partitions it chose
    // on record, plus a duplicate of one of them it did not choose.
    exec(
        &pool,
        "INSERT INTO etlkit.datafusion_runs (run, target, state, planned, gids) VALUES
           ('00000000000000a1', 'r', 'committing', now(), NULL),
           ('00000000000000b2', 'r', 'open', now() - interval '2 days', NULL),
           ('00000000000000c3', 'r', 'open', now(), NULL),
           ('00000000000000e5', 'r', 'committing', now(), ARRAY['etlkit_stage_00000000000000e5_0_0000eeee'])",
    )
    .await;
    let conn_url = url.clone();
    let mut conn = etlkit_postgres::sqlx::PgConnection::connect(&conn_url).await.unwrap();
    for (gid, id) in [
        ("etlkit_stage_00000000000000a1_1_0000aaaa", 1),
        ("etlkit_stage_00000000000000b2_0_0000bbbb", 2),
        ("etlkit_stage_00000000000000d4_0_0000dddd", 3),
        ("etlkit_stage_00000000000000c3_0_0000cccc", 4),
        ("etlkit_stage_00000000000000e5_0_0000eeee", 5),
        ("etlkit_stage_00000000000000e5_0_0000ffff", 6),
    ] {
        use etlkit_postgres::sqlx::Executor;
        conn.execute(AssertSqlSafe(format!(
            "BEGIN; INSERT INTO r VALUES ({id}); PREPARE TRANSACTION '{gid}'"
        )))
        .await
        .unwrap();
    }
    assert_eq!(prepared(&pool).await, 6);
    let resolved = etlkit_datafusion::recover_prepared(&pool).await.unwrap();
    assert_eq!(resolved, 5, "the run in progress (c3) is left alone");
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM r").await,
        2,
        "only the partitions the committing runs chose committed"
    );
    assert_eq!(scalar(&pool, "SELECT count(*) FROM r WHERE id IN (1, 5)").await, 2);
    assert_eq!(prepared(&pool).await, 1);
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM etlkit.datafusion_runs WHERE run IN ('00000000000000a1', '00000000000000e5')")
            .await,
        0,
        "a finished commit is forgotten"
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT count(*) FROM etlkit.datafusion_runs WHERE run = '00000000000000b2' AND state = 'aborted'"
        )
        .await,
        1,
        "an abandoned run is aborted before its partitions are rolled back"
    );
    exec(&pool, "ROLLBACK PREPARED 'etlkit_stage_00000000000000c3_0_0000cccc'").await;
}

/// The staged batches of an `INSERT`'s write partitions, and its commit node's recipe: what a
/// distributed engine hands a retried commit task.
async fn staged_and_target(
    ctx: &SessionContext,
    sql: &str,
) -> (Vec<RecordBatch>, Arc<etlkit_datafusion::WriteTarget>) {
    let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
    let commit = (plan.as_ref() as &dyn std::any::Any)
        .downcast_ref::<etlkit_datafusion::PgCommitExec>()
        .expect("the plan's root commits");
    let target = commit.target().clone();
    let write = plan.children()[0].clone();
    let staged = datafusion::physical_plan::collect(write, ctx.task_ctx()).await.unwrap();
    (staged, target)
}

/// A commit step over already staged batches (a retried commit task re-reads them).
async fn commit_again(
    ctx: &SessionContext,
    staged: &[RecordBatch],
    target: &Arc<etlkit_datafusion::WriteTarget>,
) -> datafusion::error::Result<Vec<RecordBatch>> {
    let input = datafusion::datasource::memory::MemorySourceConfig::try_new_exec(
        &[staged.to_vec()],
        staged[0].schema(),
        None,
    )
    .unwrap();
    let commit = Arc::new(etlkit_datafusion::PgCommitExec::new(input, target.clone()));
    datafusion::physical_plan::collect(commit, ctx.task_ctx()).await
}

async fn open_runs(pool: &PgPool) -> i64 {
    scalar(pool, "SELECT count(*) FROM etlkit.datafusion_runs WHERE state <> 'aborted'").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_two_phase_commit_that_began_is_finished_whatever_interrupts_it() {
    let (pool, url) = fresh().await;
    exec(&pool, "CREATE TABLE t (id bigint PRIMARY KEY, code varchar(3)); CREATE TABLE other (id bigint)")
        .await;
    exec(&pool, "INSERT INTO t VALUES (-1, 'old')").await;

    // 1. Another INSERT INTO planned on the database between two COMMIT PREPAREDs: its planning
    // resolves prepared transactions, committing this committing run's partitions itself, so this
    // commit step's next COMMIT PREPARED finds its transaction gone.
    let other_url = url.clone();
    let hook = move || {
        let url = other_url.clone();
        Box::pin(async move {
            let ctx = ctx(1);
            register(&ctx, &url, "other", PgTableOptions::default()).await;
            ctx.sql("INSERT INTO other VALUES (1)").await.unwrap().collect().await.unwrap();
        }) as futures::future::BoxFuture<'static, ()>
    };
    let (via, fired) =
        support::proxy(&url, b"", b"COMMIT PREPARED", support::Interfere::Before(Box::new(hook))).await;
    let ctx = ctx(4);
    register(&ctx, &via, "t", two_phase()).await;
    ctx.register_table("good", Arc::new(mem_partitions(None))).unwrap();
    let out = ctx.sql("INSERT INTO t SELECT id, code FROM good").await.unwrap().collect().await;
    assert!(fired.load(std::sync::atomic::Ordering::SeqCst), "the other INSERT ran mid-commit");
    let out = out.unwrap_or_else(|e| panic!("every partition committed, but: {}", chain(&e)));
    assert_eq!(count_of(&out), 200_000);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM t").await, 200_001, "all four partitions committed");
    assert_eq!(scalar(&pool, "SELECT count(*) FROM other").await, 1);
    assert_eq!(prepared(&pool).await, 0);
    assert_eq!(open_runs(&pool).await, 0);

    // 2. The commit step's connection lost right after its first COMMIT PREPARED: the others are
    // committed on a new connection, never rolled back.
    exec(&pool, "TRUNCATE t").await;
    let (via, fired) = support::proxy(&url, b"", b"COMMIT PREPARED", support::Interfere::Cut).await;
    let ctx = self::ctx(4);
    register(&ctx, &via, "t", two_phase()).await;
    ctx.register_table("good", Arc::new(mem_partitions(None))).unwrap();
    let out = ctx.sql("INSERT INTO t SELECT id, code FROM good").await.unwrap().collect().await;
    assert!(fired.load(std::sync::atomic::Ordering::SeqCst), "the connection was cut mid-commit");
    let out = out.unwrap_or_else(|e| panic!("every partition committed, but: {}", chain(&e)));
    assert_eq!(count_of(&out), 200_000);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM t").await, 200_000, "all four partitions committed");
    assert_eq!(prepared(&pool).await, 0);
    assert_eq!(open_runs(&pool).await, 0);

    // 3. A commit task run again after it succeeded (a distributed engine's retry) reports the
    // commit, and commits nothing twice.
    exec(&pool, "TRUNCATE t").await;
    let ctx = self::ctx(4);
    register(&ctx, &url, "t", two_phase()).await;
    ctx.register_table("good", Arc::new(mem_partitions(None))).unwrap();
    let (staged, target) = staged_and_target(&ctx, "INSERT INTO t SELECT id, code FROM good").await;
    assert_eq!(prepared(&pool).await, 4);
    for attempt in 0..2 {
        let out = commit_again(&ctx, &staged, &target)
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: {}", chain(&e)));
        assert_eq!(count_of(&out), 200_000, "attempt {attempt}");
        assert_eq!(scalar(&pool, "SELECT count(*) FROM t").await, 200_000);
    }
    assert_eq!(prepared(&pool).await, 0);
    assert_eq!(open_runs(&pool).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_staged_commit_that_took_effect_is_reported_as_committed() {
    let (pool, url) = fresh().await;
    exec(&pool, "CREATE TABLE t (id bigint PRIMARY KEY, code varchar(3))").await;
    // 1. The connection lost at COMMIT, after the server committed.
    let (via, fired) = support::proxy(
        &url,
        b"DELETE FROM etlkit.datafusion_runs WHERE run = $1 AND state = 'open'",
        b"COMMIT\0",
        support::Interfere::Cut,
    )
    .await;
    let ctx = ctx(4);
    register(&ctx, &via, "t", PgTableOptions::default()).await;
    ctx.register_table("good", Arc::new(mem_partitions(None))).unwrap();
    let out = ctx.sql("INSERT INTO t SELECT id, code FROM good").await.unwrap().collect().await;
    assert!(fired.load(std::sync::atomic::Ordering::SeqCst), "the connection was cut at COMMIT");
    let out = out.unwrap_or_else(|e| panic!("the server committed, but: {}", chain(&e)));
    assert_eq!(count_of(&out), 200_000);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM t").await, 200_000);
    assert_eq!(staging_tables(&pool).await, 0);
    assert_eq!(open_runs(&pool).await, 0);

    // 2. A commit task run again after it succeeded.
    exec(&pool, "TRUNCATE t").await;
    let ctx = self::ctx(4);
    register(&ctx, &url, "t", PgTableOptions::default()).await;
    ctx.register_table("good", Arc::new(mem_partitions(None))).unwrap();
    let (staged, target) = staged_and_target(&ctx, "INSERT INTO t SELECT id, code FROM good").await;
    assert_eq!(staging_tables(&pool).await, 4);
    for attempt in 0..2 {
        let out = commit_again(&ctx, &staged, &target)
            .await
            .unwrap_or_else(|e| panic!("attempt {attempt}: {}", chain(&e)));
        assert_eq!(count_of(&out), 200_000, "attempt {attempt}");
        assert_eq!(scalar(&pool, "SELECT count(*) FROM t").await, 200_000);
    }
    assert_eq!(staging_tables(&pool).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upsert_meeting_a_key_in_two_partitions_fails_and_changes_nothing() {
    let (pool, url) = fresh().await;
    exec(&pool, "CREATE TABLE u (id bigint PRIMARY KEY, v text)").await;
    exec(&pool, "INSERT INTO u VALUES (1, 'old')").await;
    // Two input files, each with key 1.
    let dir = std::env::temp_dir().join(format!("etlkit-df-upsert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.csv"), "id,v\n1,a\n2,b\n").unwrap();
    std::fs::write(dir.join("b.csv"), "id,v\n1,c\n3,d\n").unwrap();
    let ctx = ctx(2);
    ctx.register_csv("input", dir.to_str().unwrap(), Default::default()).await.unwrap();
    register(&ctx, &url, "u", PgTableOptions { upsert_key: vec!["id".into()], ..Default::default() }).await;
    let sql = "INSERT INTO u SELECT id, v FROM input";
    let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
    let write = plan.children()[0].children()[0].clone();
    assert_eq!(write.name(), "PgWriteExec");
    assert_eq!(write.properties().output_partitioning().partition_count(), 2, "one partition per file");
    let err =
        datafusion::physical_plan::collect(plan, ctx.task_ctx()).await.expect_err("key 1 twice must fail");
    let chain = chain(&err);
    assert!(chain.contains("cannot affect row a second time"), "{chain}");
    assert!(!DfError::find(&err).unwrap().is_retryable(), "{chain}");
    assert_eq!(scalar(&pool, "SELECT count(*) FROM u").await, 1, "target unchanged");
    assert_eq!(scalar(&pool, "SELECT count(*) FROM u WHERE v = 'old'").await, 1);
    assert_eq!(staging_tables(&pool).await, 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scan_refuses_numeric_nan_naming_table_column_and_value() {
    let (pool, url) = fresh().await;
    exec(&pool, "CREATE TABLE n (id int PRIMARY KEY, amount numeric(12,2))").await;
    exec(&pool, "INSERT INTO n SELECT i, i * 1.5 FROM generate_series(1, 1000) i; UPDATE n SET amount = 'NaN' WHERE id = 700").await;
    // PgSource on the same table refuses it too.
    let source = PgSource::new(
        pool.clone(),
        PgSourceConfig { query: SourceQuery::Table(TableRef::new("n")), batch_size: 1000 },
    )
    .await
    .unwrap();
    let read: Result<Vec<RecordBatch>, _> =
        Box::new(source).into_stream(Default::default()).try_collect().await;
    assert!(read.is_err());
    for partitions in [1, 3] {
        let ctx = ctx(partitions);
        register(&ctx, &url, "n", PgTableOptions::default()).await;
        let err = ctx
            .sql("SELECT * FROM n")
            .await
            .unwrap()
            .collect()
            .await
            .expect_err("NaN does not fit Decimal128(12, 2)");
        let chain = chain(&err);
        assert!(chain.contains("\"n\"") && chain.contains("amount") && chain.contains("NaN"), "{chain}");
        assert!(matches!(DfError::find(&err), Some(DfError::InvalidValue { .. })), "{chain}");
        assert!(!DfError::find(&err).unwrap().is_retryable());
    }
    // Without the NaN the same scan reads every value.
    exec(&pool, "UPDATE n SET amount = 1050 WHERE id = 700").await;
    let ctx = ctx(3);
    register(&ctx, &url, "n", PgTableOptions::default()).await;
    let out = ctx.sql("SELECT count(amount) FROM n").await.unwrap().collect().await.unwrap();
    let n =
        out[0].column(0).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>().unwrap().value(0);
    assert_eq!(n, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn columns_an_insert_leaves_out_get_their_default_and_upserts_keep_them() {
    let (pool, url) = fresh().await;
    exec(&pool, "CREATE TABLE d (id bigint PRIMARY KEY, name text, note text NOT NULL DEFAULT 'dflt', made int DEFAULT 7)")
        .await;
    let ctx = ctx(2);
    register(&ctx, &url, "d", PgTableOptions::default()).await;
    let out = ctx.sql("INSERT INTO d (id, name) VALUES (1, 'a'), (2, 'b')").await.unwrap().collect().await;
    let out = out.unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(count_of(&out), 2);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM d WHERE note = 'dflt' AND made = 7").await, 2);
    // Named NULLs are written as NULL.
    ctx.sql("INSERT INTO d (id, name, made) VALUES (3, 'c', NULL)").await.unwrap().collect().await.unwrap();
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM d WHERE id = 3 AND made IS NULL AND note = 'dflt'").await,
        1
    );

    // Upsert: existing rows keep what the statement leaves out; new rows get the defaults.
    exec(&pool, "UPDATE d SET note = 'kept', made = 1").await;
    let up = self::ctx(2);
    register(&up, &url, "d", PgTableOptions { upsert_key: vec!["id".into()], ..Default::default() }).await;
    let out = up.sql("INSERT INTO d (id, name) VALUES (1, 'A'), (4, 'd')").await.unwrap().collect().await;
    let out = out.unwrap_or_else(|e| panic!("{}", chain(&e)));
    assert_eq!(count_of(&out), 2);
    assert_eq!(
        scalar(&pool, "SELECT count(*) FROM d WHERE id = 1 AND name = 'A' AND note = 'kept' AND made = 1")
            .await,
        1
    );
    assert_eq!(scalar(&pool, "SELECT count(*) FROM d WHERE id = 4 AND note = 'dflt' AND made = 7").await, 1);

    // Two-phase: the COPY names only the given columns.
    let tp = self::ctx(2);
    register(&tp, &url, "d", two_phase()).await;
    tp.sql("INSERT INTO d (id, name) VALUES (5, 'e')").await.unwrap().collect().await.unwrap();
    assert_eq!(scalar(&pool, "SELECT count(*) FROM d WHERE id = 5 AND note = 'dflt' AND made = 7").await, 1);
    // What docs/datafusion.md says of types: DataFusion's planner casts to the table's types with
    // SQL cast semantics before the sink sees the values (2.7 into an integer column is 2).
    ctx.sql("INSERT INTO d (id, made) SELECT 6, CAST(2.7 AS DOUBLE)").await.unwrap().collect().await.unwrap();
    assert_eq!(scalar(&pool, "SELECT count(*) FROM d WHERE id = 6 AND made = 2").await, 1);
    assert_eq!(scalar(&pool, "SELECT count(*) FROM d").await, 6);
    assert_eq!(staging_tables(&pool).await, 0);
}

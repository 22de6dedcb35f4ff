//! Integration tests against a real, throwaway PostgreSQL (etlkit-testkit; `DATABASE_URL` reused
//! when set). Small data only.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::builder::{ListBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array, FixedSizeBinaryArray,
    Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, ListArray, RecordBatch, StringArray,
    TimestampMicrosecondArray, TimestampNanosecondArray,
};
use etlkit_core::{Context, MemorySource, Pipeline, PipelineConfig, Sink, Source};
use etlkit_postgres::{
    BulkTuning, ChangeDetection, DatabaseUrl, InvalidRows, NanosPolicy, NulPolicy, OnConflict, PgCopySink,
    PgError, PgSinkConfig, PgSource, PgSourceConfig, SourceQuery, TableRef, WriteMode, connect,
    create_table_if_not_exists,
};
use etlkit_testkit::PgServer;
use futures::TryStreamExt;
use sqlx::{AssertSqlSafe, PgPool, Row};

const HOSTILE: &str = "x\"; DROP TABLE y; --";

async fn fresh_pool(app: &str) -> (PgPool, String) {
    // One server for the whole test binary (the testkit stops it when the process exits).
    static PG: std::sync::LazyLock<Arc<PgServer>> =
        std::sync::LazyLock::new(|| PgServer::start().expect("test PostgreSQL"));
    let url = tokio::task::spawn_blocking(|| PG.fresh_database()).await.unwrap().expect("test PostgreSQL");
    let pool = connect(&DatabaseUrl::new(url.clone()), 4, app).await.unwrap();
    (pool, url)
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(pool).await.unwrap();
}

/// Every row `sql` returns, as `T` (a tuple of its columns).
async fn rows<T>(pool: &PgPool, sql: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
{
    sqlx::query_as(AssertSqlSafe(sql.to_owned())).fetch_all(pool).await.unwrap()
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query(AssertSqlSafe(format!("SELECT count(*) FROM {table}"))).fetch_one(pool).await.unwrap().get(0)
}

fn sink(pool: &PgPool, table: &str, mode: WriteMode) -> PgCopySink {
    PgCopySink::new(pool.clone(), PgSinkConfig { table: TableRef::new(table), mode, ..Default::default() })
        .unwrap()
}

async fn run(
    sink: Arc<PgCopySink>,
    batches: Vec<RecordBatch>,
    workers: usize,
) -> etlkit_core::Result<etlkit_core::LoadStats> {
    let source = MemorySource::new(batches[0].schema(), batches).unwrap();
    let cfg = PipelineConfig { workers, batch_size: 1000, ..Default::default() };
    Pipeline::new(source, sink).config(cfg).run().await
}

fn pg_error(e: &etlkit_core::Error) -> &PgError {
    e.find_source::<PgError>().unwrap_or_else(|| panic!("no PgError in {e:?}"))
}

fn ids(range: std::ops::Range<i64>, v: &str) -> RecordBatch {
    let n = range.end - range.start;
    RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from_iter_values(range)) as ArrayRef),
        ("v", Arc::new(StringArray::from_iter_values((0..n).map(|_| v))) as ArrayRef),
    ])
    .unwrap()
}

fn all_types_batch() -> RecordBatch {
    let mut tags = ListBuilder::new(StringBuilder::new());
    tags.values().append_value("a");
    tags.values().append_null();
    tags.append(true);
    tags.append_null();
    tags.append(true); // empty array
    let nums = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
        Some(vec![Some(1), None, Some(3)]),
        None,
        Some(vec![]),
    ]);
    let uuid = FixedSizeBinaryArray::try_from_sparse_iter_with_size(
        vec![
            Some([
                0xa0u8, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a,
                0x11,
            ]),
            None,
            None,
        ]
        .into_iter(),
        16,
    )
    .unwrap();
    let cols: Vec<(&str, ArrayRef)> = vec![
        ("s", Arc::new(Int64Array::from(vec![Some(-32768), None, Some(7)]))),
        ("i", Arc::new(Int64Array::from(vec![Some(2_147_483_647), None, Some(-1)]))),
        ("b", Arc::new(Int64Array::from(vec![Some(i64::MAX), None, Some(0)]))),
        ("r", Arc::new(Float32Array::from(vec![Some(1.5), None, Some(-0.25)]))),
        ("d", Arc::new(Float64Array::from(vec![Some(2.5e300), None, Some(0.1)]))),
        (
            "n_dec",
            Arc::new(
                Decimal128Array::from(vec![Some(12345), None, Some(-5)])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
        ),
        ("n_int", Arc::new(Int64Array::from(vec![Some(123_456_789_012), None, Some(-3)]))),
        ("n_float", Arc::new(Float64Array::from(vec![Some(0.125), None, Some(-2.5)]))),
        ("t", Arc::new(StringArray::from(vec![Some("héllo"), None, Some("")]))),
        ("vc", Arc::new(StringArray::from(vec![Some("v"), None, Some("w")]))),
        ("ch", Arc::new(StringArray::from(vec![Some("ab"), None, Some("c")]))),
        ("bo", Arc::new(BooleanArray::from(vec![Some(true), None, Some(false)]))),
        ("dt", Arc::new(Date32Array::from(vec![Some(19_000), None, Some(-1)]))),
        ("ts", Arc::new(TimestampMicrosecondArray::from(vec![Some(1_700_000_000_123_456), None, Some(-1)]))),
        (
            "tz",
            Arc::new(
                TimestampMicrosecondArray::from(vec![Some(1_700_000_000_000_001), None, Some(0)])
                    .with_timezone("UTC"),
            ),
        ),
        ("by", Arc::new(BinaryArray::from(vec![Some(&b"\x00\x01"[..]), None, Some(&b""[..])]))),
        ("u", Arc::new(uuid)),
        ("js", Arc::new(StringArray::from(vec![Some(r#"{"a": 1}"#), None, Some("[]")]))),
        ("jb", Arc::new(StringArray::from(vec![Some(r#"{"b": [true, null]}"#), None, Some("3")]))),
        ("ia", Arc::new(nums)),
        ("ta", Arc::new(tags.finish())),
    ];
    RecordBatch::try_from_iter(cols).unwrap()
}

const ALL_TYPES_DDL: &str = "CREATE TABLE all_types (id bigserial PRIMARY KEY, s smallint, i integer, b bigint, \
    r real, d double precision, n_dec numeric(10,2), n_int numeric, n_float numeric, t text, vc varchar(10), \
    ch char(2), bo boolean, dt date, ts timestamp, tz timestamptz, by bytea, u uuid, js json, jb jsonb, \
    ia integer[], ta text[])";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_through_copy_sink_and_copy_source() {
    let (pool, _) = fresh_pool("etlkit-types").await;
    exec(&pool, "SET TIME ZONE 'UTC'").await;
    exec(&pool, ALL_TYPES_DDL).await;
    let stats =
        run(Arc::new(sink(&pool, "all_types", WriteMode::Append)), vec![all_types_batch()], 1).await.unwrap();
    assert_eq!(stats.rows_written, 3);
    assert_eq!(stats.counter("inserted"), 3);

    let rows = sqlx::query(
        "SELECT concat_ws('|', s, i, b, r, d, n_dec, n_int, n_float, t, vc, ch, bo, dt, \
         to_char(ts, 'YYYY-MM-DD HH24:MI:SS.US'), to_char(tz AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), \
         encode(by, 'hex'), u, js, jb, ia, ta), num_nulls(s, i, b, r, d, n_dec, n_int, n_float, t, vc, ch, bo, dt, \
         ts, tz, by, u, js, jb, ia, ta) FROM all_types ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let got: Vec<(String, i32)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        got,
        vec![
            (
                "-32768|2147483647|9223372036854775807|1.5|2.5e+300|123.45|123456789012|0.1250000000|héllo|v|ab|t|\
                 2022-01-08|2023-11-14 22:13:20.123456|2023-11-14 22:13:20.000001|0001|\
                 a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|{\"a\": 1}|{\"b\": [true, null]}|{1,NULL,3}|{a,NULL}"
                    .to_owned(),
                0
            ),
            ("".to_owned(), 21),
            (
                "7|-1|0|-0.25|0.1|-0.05|-3|-2.5000000000||w|c |f|1969-12-31|1969-12-31 23:59:59.999999|\
                 1970-01-01 00:00:00.000000||[]|3|{}|{}"
                    .to_owned(),
                1
            ),
        ]
    );

    // Read it back with the COPY source: exact Arrow types and values.
    let source = PgSource::new(
        pool.clone(),
        PgSourceConfig { query: SourceQuery::Table(TableRef::new("all_types")), batch_size: 2 },
    )
    .await
    .unwrap();
    let schema = source.schema();
    let batches: Vec<RecordBatch> =
        Box::new(source).into_stream(Context::default()).try_collect().await.unwrap();
    assert_eq!(batches.iter().map(|b| b.num_rows()).collect::<Vec<_>>(), vec![2, 1], "batch_size honoured");
    let all = arrow_select_concat(&schema, &batches);
    let col = |name: &str| all.column(schema.index_of(name).unwrap()).clone();
    assert_eq!(
        col("s").as_primitive::<arrow_array::types::Int16Type>(),
        &Int16Array::from(vec![Some(-32768), None, Some(7)])
    );
    assert_eq!(
        col("i").as_primitive::<Int32Type>(),
        &Int32Array::from(vec![Some(2_147_483_647), None, Some(-1)])
    );
    assert_eq!(col("n_dec").as_primitive::<arrow_array::types::Decimal128Type>().value(0), 12345);
    assert_eq!(col("n_dec").data_type(), &arrow_schema::DataType::Decimal128(10, 2));
    assert_eq!(col("n_int").as_string::<i32>().value(0), "123456789012");
    assert_eq!(col("t").as_string::<i32>(), &StringArray::from(vec![Some("héllo"), None, Some("")]));
    assert_eq!(col("ch").as_string::<i32>().value(2), "c ");
    assert_eq!(col("jb").as_string::<i32>().value(0), r#"{"b": [true, null]}"#);
    assert_eq!(
        col("dt").as_primitive::<arrow_array::types::Date32Type>(),
        &Date32Array::from(vec![Some(19_000), None, Some(-1)])
    );
    let ts = col("ts");
    assert_eq!(
        ts.as_primitive::<arrow_array::types::TimestampMicrosecondType>().value(0),
        1_700_000_000_123_456
    );
    assert_eq!(ts.as_primitive::<arrow_array::types::TimestampMicrosecondType>().value(2), -1);
    assert_eq!(
        col("tz").data_type(),
        &arrow_schema::DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(col("u").as_fixed_size_binary().value(0)[0], 0xa0);
    assert_eq!(col("by").as_binary::<i32>().value(0), b"\x00\x01");
    let ia = col("ia");
    let ia = ia.as_list::<i32>();
    assert_eq!(ia.value(0).as_primitive::<Int32Type>(), &Int32Array::from(vec![Some(1), None, Some(3)]));
    assert!(ia.is_null(1));
    assert_eq!(ia.value(2).len(), 0);
    let ta = col("ta");
    assert_eq!(ta.as_list::<i32>().value(0).as_string::<i32>(), &StringArray::from(vec![Some("a"), None]));

    // A query source: types from the server's description.
    let q = PgSource::new(
        pool.clone(),
        PgSourceConfig {
            query: SourceQuery::Query("SELECT id, i * 2 AS twice FROM all_types WHERE i < 100".into()),
            batch_size: 100,
        },
    )
    .await
    .unwrap();
    let batches: Vec<RecordBatch> = Box::new(q).into_stream(Context::default()).try_collect().await.unwrap();
    let twice = batches[0].column(1).as_primitive::<Int32Type>();
    assert_eq!(twice.values().to_vec(), vec![-2]);
}

fn arrow_select_concat(schema: &arrow_schema::SchemaRef, batches: &[RecordBatch]) -> RecordBatch {
    let cols = (0..schema.fields().len())
        .map(|i| {
            let parts: Vec<&dyn arrow_array::Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            arrow_select::concat::concat(&parts).unwrap()
        })
        .collect();
    RecordBatch::try_new(schema.clone(), cols).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_fail_with_row_column_and_value_and_nothing_is_committed() {
    let (pool, _) = fresh_pool("etlkit-bad").await;
    exec(&pool, "CREATE TABLE t (n integer, s text, at timestamptz)").await;
    let batch = |n: Vec<i64>, s: Vec<&str>, at: Vec<i64>| {
        RecordBatch::try_from_iter([
            ("n", Arc::new(Int64Array::from(n)) as ArrayRef),
            ("s", Arc::new(StringArray::from(s)) as ArrayRef),
            ("at", Arc::new(TimestampNanosecondArray::from(at).with_timezone("UTC")) as ArrayRef),
        ])
        .unwrap()
    };
    // Int64 into integer: range-checked.
    let err = run(
        Arc::new(sink(&pool, "t", WriteMode::Append)),
        vec![batch(vec![1, 3_000_000_000], vec!["a", "b"], vec![0, 0])],
        1,
    )
    .await
    .unwrap_err();
    assert!(!err.is_retryable());
    assert_eq!(
        pg_error(&err).to_string(),
        // The input row is named by its origin: row 2 of the (memory) source.
        "memory:2, column `n`: value \"3000000000\" does not fit column type `integer`"
    );
    // Float64 into integer: a fraction is not cut off (binary COPY would store 2 for 2.5 otherwise;
    // PostgreSQL's own text COPY refuses "2.5" for an integer column too).
    let floats = RecordBatch::try_from_iter([(
        "n",
        Arc::new(arrow_array::Float64Array::from(vec![Some(1.0), None, Some(2.5)])) as ArrayRef,
    )])
    .unwrap();
    let err = run(Arc::new(sink(&pool, "t", WriteMode::Append)), vec![floats], 1).await.unwrap_err();
    let msg = pg_error(&err).to_string();
    assert!(
        msg.starts_with("memory:3, column `n`: value \"2.5\" does not fit column type `integer`"),
        "{msg}"
    );
    // NUL byte in text: rejected by default, naming row and column...
    let err = run(
        Arc::new(sink(&pool, "t", WriteMode::Append)),
        vec![batch(vec![1, 2], vec!["ok", "a\0b"], vec![0, 0])],
        1,
    )
    .await
    .unwrap_err();
    let msg = pg_error(&err).to_string();
    assert!(msg.starts_with("memory:2, column `s`: value") && msg.contains("NUL byte"), "{msg}");
    // ...nanoseconds rejected by default...
    let err =
        run(Arc::new(sink(&pool, "t", WriteMode::Append)), vec![batch(vec![1], vec!["x"], vec![1_500])], 1)
            .await
            .unwrap_err();
    let msg = pg_error(&err).to_string();
    assert!(msg.starts_with("memory:1, column `at`: value") && msg.contains("nanoseconds"), "{msg}");
    assert_eq!(count(&pool, "t").await, 0, "failed runs leave nothing behind");

    // ...or replaced / truncated when configured.
    let cfg = PgSinkConfig {
        table: TableRef::new("t"),
        nul: NulPolicy::Replace("\u{fffd}".into()),
        nanos: NanosPolicy::Truncate,
        ..Default::default()
    };
    let s = Arc::new(PgCopySink::new(pool.clone(), cfg).unwrap());
    run(s, vec![batch(vec![1, 2], vec!["ok", "a\0b"], vec![1_500, 2_000])], 1).await.unwrap();
    let rows: Vec<(String, i64)> =
        rows(&pool, "SELECT s, (extract(epoch FROM at) * 1e6)::int8 FROM t ORDER BY n").await;
    assert_eq!(rows, vec![("ok".to_owned(), 1), ("a\u{fffd}b".to_owned(), 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_identifiers_are_plain_names() {
    let (pool, _) = fresh_pool("etlkit-hostile").await;
    exec(&pool, "CREATE TABLE y (k int)").await;
    let batch = RecordBatch::try_from_iter([
        (HOSTILE, Arc::new(Int64Array::from(vec![1, 2, 2])) as ArrayRef),
        ("v", Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef),
    ])
    .unwrap();
    let table = TableRef::new(HOSTILE);
    create_table_if_not_exists(&pool, &table, &batch.schema(), &[HOSTILE]).await.unwrap();
    create_table_if_not_exists(&pool, &table, &batch.schema(), &[HOSTILE]).await.unwrap(); // idempotent
    let mode = WriteMode::Upsert {
        key: vec![HOSTILE.to_owned()],
        on_conflict: OnConflict::DoUpdate { compare: ChangeDetection::AllColumns },
    };
    let stats = run(Arc::new(sink(&pool, HOSTILE, mode)), vec![batch], 1).await.unwrap();
    assert_eq!((stats.counter("inserted"), stats.counter("duplicate_keys")), (2, 1));
    let quoted = etlkit_postgres::quote_ident(HOSTILE);
    let rows: Vec<(i64, String)> = rows(&pool, &format!("SELECT {quoted}, v FROM {quoted} ORDER BY 1")).await;
    assert_eq!(rows, vec![(1, "a".to_owned()), (2, "c".to_owned())], "last duplicate wins");
    assert_eq!(count(&pool, "y").await, 0, "table y still exists");
    // The COPY source reads it too.
    let src = PgSource::new(
        pool.clone(),
        PgSourceConfig { query: SourceQuery::Table(table), ..Default::default() },
    )
    .await
    .unwrap();
    let b: Vec<RecordBatch> = Box::new(src).into_stream(Context::default()).try_collect().await.unwrap();
    assert_eq!(b[0].schema().field(0).name(), HOSTILE);
    assert_eq!(b[0].num_rows(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_truncate_and_upsert_modes_count_exactly() {
    let (pool, _) = fresh_pool("etlkit-modes").await;
    exec(&pool, "CREATE TABLE m (id bigint PRIMARY KEY, v text, h text)").await;
    exec(&pool, "INSERT INTO m SELECT g, 'old', 'h' FROM generate_series(1, 5) g").await;

    // Truncate: truncate + load are one transaction; aborted, the old rows stay.
    let s = Arc::new(sink(&pool, "m", WriteMode::Truncate));
    s.start(&ids(0..1, "x").schema()).await.unwrap();
    s.write(ids(100..103, "new"), &Context::default()).await.unwrap();
    s.abort().await;
    assert_eq!(count(&pool, "m").await, 5);
    let stats = run(
        Arc::new(sink(&pool, "m", WriteMode::Truncate)),
        vec![ids(100..102, "new"), ids(102..103, "new")],
        2,
    )
    .await
    .unwrap();
    assert_eq!((stats.counter("inserted"), stats.counter("connections")), (3, 1));
    assert_eq!(count(&pool, "m").await, 3);
    assert_eq!(count(&pool, "m where id >= 100").await, 3);

    // Append.
    let stats = run(Arc::new(sink(&pool, "m", WriteMode::Append)), vec![ids(0..10, "a")], 2).await.unwrap();
    assert_eq!((stats.rows_written, stats.counter("inserted")), (10, 10));
    assert_eq!(count(&pool, "m").await, 13);

    // Upsert DO NOTHING: 0..10 exist, 10..15 new, key 14 duplicated in the input.
    let dn = WriteMode::Upsert { key: vec!["id".into()], on_conflict: OnConflict::DoNothing };
    let stats =
        run(Arc::new(sink(&pool, "m", dn)), vec![ids(5..15, "b"), ids(14..15, "b2")], 1).await.unwrap();
    assert_eq!(stats.rows_written, 11);
    assert_eq!(
        (
            stats.counter("inserted"),
            stats.counter("updated"),
            stats.counter("unchanged"),
            stats.counter("duplicate_keys")
        ),
        (5, 0, 5, 1)
    );
    assert_eq!(count(&pool, "m where v = 'a'").await, 10, "DO NOTHING kept old values");

    // Upsert DO UPDATE comparing columns: 0..5 unchanged ('a'), 5..10 changed, 15..17 new.
    let du = WriteMode::Upsert {
        key: vec!["id".into()],
        on_conflict: OnConflict::DoUpdate { compare: ChangeDetection::AllColumns },
    };
    let input = vec![ids(0..5, "a"), ids(5..10, "c"), ids(15..17, "c")];
    let stats = run(Arc::new(sink(&pool, "m", du.clone())), input.clone(), 1).await.unwrap();
    assert_eq!((stats.counter("inserted"), stats.counter("updated"), stats.counter("unchanged")), (2, 5, 5));
    // Same input again: all unchanged (no new row versions).
    let stats = run(Arc::new(sink(&pool, "m", du)), input, 1).await.unwrap();
    assert_eq!((stats.counter("inserted"), stats.counter("updated"), stats.counter("unchanged")), (0, 0, 12));

    // DO UPDATE comparing a hash column only: v changes but h does not -> unchanged.
    let hash_batch = |v: &str, h: &str| {
        RecordBatch::try_from_iter([
            ("id", Arc::new(Int64Array::from(vec![0, 1])) as ArrayRef),
            ("v", Arc::new(StringArray::from(vec![v, v])) as ArrayRef),
            ("h", Arc::new(StringArray::from(vec![h, h])) as ArrayRef),
        ])
        .unwrap()
    };
    let hm = WriteMode::Upsert {
        key: vec!["id".into()],
        on_conflict: OnConflict::DoUpdate { compare: ChangeDetection::HashColumn("h".into()) },
    };
    let stats = run(Arc::new(sink(&pool, "m", hm.clone())), vec![hash_batch("p", "h1")], 1).await.unwrap();
    assert_eq!(stats.counter("updated"), 2);
    let stats = run(Arc::new(sink(&pool, "m", hm)), vec![hash_batch("q", "h1")], 1).await.unwrap();
    assert_eq!((stats.counter("updated"), stats.counter("unchanged")), (0, 2));
    assert_eq!(count(&pool, "m where v = 'p'").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_units_are_all_or_nothing_and_workers_use_their_own_connections() {
    let (pool, _) = fresh_pool("etlkit-units").await;
    exec(&pool, "CREATE TABLE u (id bigint, v text)").await;
    let cfg = PgSinkConfig { table: TableRef::new("u"), rows_per_transaction: 100, ..Default::default() };
    let s = PgCopySink::new(pool.clone(), cfg).unwrap();
    s.start(&ids(0..1, "x").schema()).await.unwrap();
    for i in 0..5 {
        s.write(ids(i * 50..(i + 1) * 50, "x"), &Context::default()).await.unwrap();
    }
    assert_eq!(count(&pool, "u").await, 200, "two full units committed, the third is open");
    s.abort().await;
    assert_eq!(count(&pool, "u").await, 200, "the open unit was rolled back whole");

    // Two concurrent writes run on two connections, each with its own COPY.
    exec(&pool, "TRUNCATE u").await;
    let s = PgCopySink::new(pool.clone(), PgSinkConfig { table: TableRef::new("u"), ..Default::default() })
        .unwrap();
    s.start(&ids(0..1, "x").schema()).await.unwrap();
    let ctx = Context::default();
    let (a, b) = tokio::join!(s.write(ids(0..10, "x"), &ctx), s.write(ids(10..20, "x"), &ctx));
    assert_eq!(a.unwrap() + b.unwrap(), 20);
    assert_eq!(count(&pool, "u").await, 0, "rows_per_transaction 500000: nothing committed yet");
    let stats = s.finish().await.unwrap();
    assert_eq!(stats.counter("connections"), 2);
    assert_eq!(stats.counter("transactions"), 2);
    assert_eq!(count(&pool, "u").await, 20);
}

/// Blocks the loader with a table lock held by the test, kills the loader's backend while it
/// waits inside a statement (COPY, staging or merge), then releases the lock.
async fn kill_loader_mid_statement(
    pool: &PgPool,
    table: &str,
    app: &str,
    load: impl std::future::Future<Output = etlkit_core::Result<u64>>,
) -> etlkit_core::Result<u64> {
    let mut locker = pool.begin().await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!("LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")))
        .execute(&mut *locker)
        .await
        .unwrap();
    let killer = async {
        for _ in 0..500 {
            let killed: i64 = sqlx::query(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE application_name = $1 AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
            )
            .bind(app)
            .fetch_one(pool)
            .await
            .unwrap()
            .get(0);
            if killed > 0 {
                locker.rollback().await.unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("loader never blocked");
    };
    let (res, ()) = tokio::join!(load, killer);
    res
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_mid_copy_is_retryable_leaves_no_partial_unit_and_upsert_converges() {
    let app = "etlkit-fault";
    let (pool, url) = fresh_pool(app).await;
    exec(&pool, "CREATE TABLE f (id bigint PRIMARY KEY, v text)").await;
    let mk = |mode: WriteMode, max_retries: u32| {
        PgCopySink::new(
            pool.clone(),
            PgSinkConfig {
                table: TableRef::new("f"),
                mode,
                rows_per_transaction: 100,
                retry: etlkit_postgres::RetryPolicy { max_retries, ..Default::default() },
                ..Default::default()
            },
        )
        .unwrap()
    };
    let ctx = Context::default();
    // Three committed units, then the fourth COPY is killed while it runs.
    let s = mk(WriteMode::Append, 0);
    s.start(&ids(0..1, "x").schema()).await.unwrap();
    for i in 0..3 {
        s.write(ids(i * 100..(i + 1) * 100, "x"), &ctx).await.unwrap();
    }
    let err =
        kill_loader_mid_statement(&pool, "f", app, s.write(ids(300..400, "x"), &ctx)).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert!(pg_error(&err).is_retryable());
    s.abort().await;
    assert_eq!(count(&pool, "f").await, 300, "no part of the killed unit is visible");
    assert_eq!(count(&pool, "f where id >= 300").await, 0);

    // The pool is still usable, and re-running everything in Upsert mode converges exactly.
    let upsert = WriteMode::Upsert { key: vec!["id".into()], on_conflict: OnConflict::DoNothing };
    let stats = run(Arc::new(mk(upsert.clone(), 0)), vec![ids(0..400, "x")], 2).await.unwrap();
    assert_eq!((stats.counter("inserted"), stats.counter("unchanged")), (100, 300));
    assert_eq!(count(&pool, "f").await, 400);

    // With retries on, the same fault during the merge is absorbed: the unit is replayed on a new
    // connection and counted once.
    let pool2 = connect(&DatabaseUrl::new(url), 4, app).await.unwrap();
    let s = mk(upsert, 2);
    s.start(&ids(0..1, "x").schema()).await.unwrap();
    let n = kill_loader_mid_statement(&pool2, "f", app, s.write(ids(350..450, "x"), &ctx)).await.unwrap();
    assert_eq!(n, 100);
    let stats = s.finish().await.unwrap();
    assert_eq!(stats.retries, 1);
    assert_eq!((stats.counter("inserted"), stats.counter("unchanged")), (50, 50));
    assert_eq!(count(&pool, "f").await, 450);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_side_timeout_bounds_a_blocked_copy() {
    let (pool, _) = fresh_pool("etlkit-timeout").await;
    exec(&pool, "CREATE TABLE tt (id bigint, v text)").await;
    let cfg = PgSinkConfig {
        table: TableRef::new("tt"),
        timeout: Duration::from_millis(300),
        retry: etlkit_postgres::RetryPolicy::NONE,
        ..Default::default()
    };
    let s = PgCopySink::new(pool.clone(), cfg).unwrap();
    s.start(&ids(0..1, "x").schema()).await.unwrap();
    let mut locker = pool.begin().await.unwrap();
    sqlx::raw_sql("LOCK TABLE tt IN ACCESS EXCLUSIVE MODE").execute(&mut *locker).await.unwrap();
    let err = s.write(ids(0..10, "x"), &Context::default()).await.unwrap_err();
    assert!(matches!(pg_error(&err), PgError::Timeout { .. }), "{err:?}");
    assert!(err.is_retryable());
    locker.rollback().await.unwrap();
    s.abort().await;
    assert_eq!(count(&pool, "tt").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_tuning_knobs_take_effect() {
    let (admin, url) = fresh_pool("etlkit-tuning").await;
    // The throwaway server runs with synchronous_commit=off; make `on` this database's default so
    // the knob has something to change. Sessions opened from now on see it.
    exec(
        &admin,
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET synchronous_commit = on', current_database()); END $$",
    )
    .await;
    let pool = connect(&DatabaseUrl::new(url), 4, "etlkit-tuning").await.unwrap();
    exec(
        &pool,
        "CREATE TABLE b (id bigint PRIMARY KEY, v text); CREATE INDEX b_v ON b (v); \
         CREATE TABLE seen (sync text, stage text); \
         CREATE FUNCTION note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           INSERT INTO seen SELECT current_setting('synchronous_commit'), \
             (SELECT string_agg(relpersistence::text, ',') FROM pg_class WHERE relname LIKE 'etlkit_stage_%'); \
           RETURN NULL; END $$; \
         CREATE TRIGGER note AFTER INSERT ON b FOR EACH STATEMENT EXECUTE FUNCTION note();",
    )
    .await;
    let index_count = |pool: PgPool| async move {
        sqlx::query("SELECT count(*) FROM pg_indexes WHERE tablename = 'b' AND indexname = 'b_v'")
            .fetch_one(&pool)
            .await
            .unwrap()
            .get::<i64, _>(0)
    };
    let tuning = BulkTuning {
        synchronous_commit_off: true,
        rebuild_indexes: true,
        analyze: true,
        unlogged_staging: true,
    };
    let cfg = PgSinkConfig {
        table: TableRef::new("b"),
        mode: WriteMode::Upsert { key: vec!["id".into()], on_conflict: OnConflict::DoNothing },
        tuning,
        ..Default::default()
    };
    let s = PgCopySink::new(pool.clone(), cfg).unwrap();
    s.start(&ids(0..1, "x").schema()).await.unwrap();
    assert_eq!(index_count(pool.clone()).await, 0, "secondary index dropped for the load");
    s.write(ids(0..10, "x"), &Context::default()).await.unwrap();
    s.finish().await.unwrap();
    assert_eq!(index_count(pool.clone()).await, 1, "secondary index rebuilt");
    let (sync, stage): (String, String) = sqlx::query("SELECT sync, stage FROM seen")
        .fetch_one(&pool)
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(sync, "off");
    assert_eq!(stage, "u", "staging table was UNLOGGED");
    let analyzed: i64 = sqlx::query("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'b'")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert!(analyzed >= 1);
    let pk: i64 = sqlx::query("SELECT count(*) FROM pg_indexes WHERE tablename = 'b'")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(pk, 2, "primary key kept");

    // Defaults: logged commits and TEMP staging.
    exec(&pool, "TRUNCATE seen").await;
    let cfg = PgSinkConfig {
        table: TableRef::new("b"),
        mode: WriteMode::Upsert { key: vec!["id".into()], on_conflict: OnConflict::DoNothing },
        ..Default::default()
    };
    run(Arc::new(PgCopySink::new(pool.clone(), cfg).unwrap()), vec![ids(10..12, "x")], 1).await.unwrap();
    let (sync, stage): (String, String) = sqlx::query("SELECT sync, stage FROM seen")
        .fetch_one(&pool)
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!((sync.as_str(), stage.as_str()), ("on", "t"));
}

#[test]
fn config_validation_and_debug_hide_secrets() {
    let bad = PgSinkConfig { table: TableRef::new("t"), send_buffer_bytes: 10, ..Default::default() };
    assert!(matches!(bad.validate(), Err(PgError::InvalidConfig { field: "send_buffer_bytes", .. })));
    let bad = PgSinkConfig {
        table: TableRef::new("t"),
        mode: WriteMode::Upsert { key: vec![], on_conflict: OnConflict::DoNothing },
        ..Default::default()
    };
    assert!(bad.validate().is_err());
    assert!(PgSinkConfig::default().validate().is_err(), "table must be set");
    assert!(PgSinkConfig { table: TableRef::new("t"), ..Default::default() }.validate().is_ok());
    let url = DatabaseUrl::new("postgres://u:hunter2@h/db");
    assert!(!format!("{url:?}{url}").contains("hunter2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_buffer_bytes_sets_the_copy_message_size() {
    let (pool, _) = fresh_pool("etlkit-sendbuf").await;
    exec(&pool, "CREATE TABLE sb (id bigint, v text)").await;
    let batch = ids(0..20_000, "some text to make rows about forty bytes"); // ~1 MB encoded
    let load = |send_buffer_bytes: usize| {
        let cfg = PgSinkConfig { table: TableRef::new("sb"), send_buffer_bytes, ..Default::default() };
        let sink = Arc::new(PgCopySink::new(pool.clone(), cfg).unwrap());
        let batch = batch.clone();
        async move {
            let source = MemorySource::new(batch.schema(), vec![batch]).unwrap();
            let cfg = PipelineConfig { workers: 1, batch_size: 20_000, ..Default::default() };
            Pipeline::new(source, sink).config(cfg).run().await.unwrap()
        }
    };
    let small = load(64 << 10).await;
    let big = load(4 << 20).await;
    // ~1 MB in 64 KiB messages: at least 10; in 4 MiB messages: one per COPY (one batch).
    assert!(small.counter("copy_messages") >= 10, "{:?}", small.counters);
    assert_eq!(big.counter("copy_messages"), 1);
    assert_eq!(count(&pool, "sb").await, 40_000);
    assert_eq!(count(&pool, "sb WHERE v = 'some text to make rows about forty bytes'").await, 40_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_rows_can_go_to_the_reject_output() {
    let (pool, _) = fresh_pool("etlkit-reject").await;
    exec(&pool, "CREATE TABLE r (n integer, s text)").await;
    let batch = RecordBatch::try_from_iter([
        ("n", Arc::new(Int64Array::from(vec![1, 3_000_000_000, 2, 3, -4_000_000_000])) as ArrayRef),
        ("s", Arc::new(StringArray::from(vec!["a", "b", "c\0", "d", "e"])) as ArrayRef),
    ])
    .unwrap();
    let cfg =
        PgSinkConfig { table: TableRef::new("r"), invalid_rows: InvalidRows::Reject, ..Default::default() };
    let sink = Arc::new(PgCopySink::new(pool.clone(), cfg).unwrap());
    let rejects = Arc::new(etlkit_core::MemoryRejects::new());
    let source = MemorySource::new(batch.schema(), vec![batch]).unwrap();
    let stats = Pipeline::new(source, sink).rejects(rejects.clone()).run().await.unwrap();
    assert_eq!((stats.rows_read, stats.rows_written, stats.rows_rejected), (5, 2, 3));
    let got: Vec<(Option<u64>, Option<String>)> =
        rejects.rows().into_iter().map(|r| (r.line, r.column)).collect();
    assert_eq!(
        got,
        vec![
            (Some(2), Some("n".to_owned())),
            (Some(5), Some("n".to_owned())),
            (Some(3), Some("s".to_owned()))
        ]
    );
    let rows: Vec<(i32, String)> = rows(&pool, "SELECT n, s FROM r ORDER BY n").await;
    assert_eq!(rows, vec![(1, "a".to_owned()), (3, "d".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_source_streams_in_batches_of_batch_size() {
    let (pool, _) = fresh_pool("etlkit-source").await;
    exec(&pool, "CREATE TABLE s AS SELECT g::int8 AS id, md5(g::text) AS h, NULL::numeric(10,2) AS n FROM generate_series(1, 30000) g")
        .await;
    let src = PgSource::new(
        pool.clone(),
        PgSourceConfig { query: SourceQuery::Table(TableRef::new("s")), batch_size: 4096 },
    )
    .await
    .unwrap();
    assert_eq!(
        src.copy_statement(),
        "COPY (SELECT \"id\", \"h\", \"n\" FROM \"s\") TO STDOUT (FORMAT binary)"
    );
    let mut stream = Box::new(src).into_stream(Context::default());
    let (mut sizes, mut sum) = (Vec::new(), 0i64);
    while let Some(b) = stream.try_next().await.unwrap() {
        sizes.push(b.num_rows());
        sum += b.column(0).as_primitive::<Int64Type>().values().iter().sum::<i64>();
        assert_eq!(b.column(2).null_count(), b.num_rows());
    }
    assert_eq!(sizes, [vec![4096; 7], vec![30000 - 7 * 4096]].concat());
    assert_eq!(sum, 30000 * 30001 / 2);
    // The connection went back to the pool clean: it can run a query.
    assert_eq!(count(&pool, "s").await, 30000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_sink_plans_each_run_for_its_own_columns() {
    let (pool, _) = fresh_pool("etlkit-replan").await;
    exec(&pool, "CREATE TABLE p (first text, last text)").await;
    let people = |names: [(&str, &str); 2]| {
        RecordBatch::try_from_iter(
            names.map(|(col, v)| (col, Arc::new(StringArray::from(vec![v])) as ArrayRef)),
        )
        .unwrap()
    };
    let sink = Arc::new(sink(&pool, "p", WriteMode::Append));
    run(sink.clone(), vec![people([("first", "Ada"), ("last", "Lovelace")])], 1).await.unwrap();
    // The same sink, another column order: each value still lands in its own column.
    run(sink.clone(), vec![people([("last", "Hopper"), ("first", "Grace")])], 1).await.unwrap();
    let rows: Vec<(String, String)> = rows(&pool, "SELECT first, last FROM p ORDER BY first").await;
    assert_eq!(rows, [("Ada".into(), "Lovelace".into()), ("Grace".into(), "Hopper".into())]);
    // A batch whose columns differ from those the run started with is refused, not written.
    let started = people([("first", "A"), ("last", "B")]);
    sink.start(&started.schema()).await.unwrap();
    let err = sink.write(people([("last", "C"), ("first", "D")]), &Context::default()).await.unwrap_err();
    assert!(matches!(pg_error(&err), PgError::SchemaChanged { .. }), "{err}");
    sink.abort().await;
    assert_eq!(count(&pool, "p").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_a_cast_would_change_are_refused_and_numeric_rounds_as_postgresql_does() {
    let (pool, _) = fresh_pool("etlkit-strict").await;
    exec(&pool, "CREATE TABLE c (n integer, r real, d numeric(10,2), day date)").await;
    let refused = |col: &str, array: ArrayRef| {
        let pool = pool.clone();
        let batch = RecordBatch::try_from_iter([(col, array)]).unwrap();
        async move {
            let err = run(Arc::new(sink(&pool, "c", WriteMode::Append)), vec![batch], 1).await.unwrap_err();
            pg_error(&err).to_string()
        }
    };
    // A dictionary of floats gets the checks plain floats get: 2.5 is no integer.
    let dictionary = arrow_schema::DataType::Dictionary(
        Box::new(arrow_schema::DataType::Int32),
        Box::new(arrow_schema::DataType::Float64),
    );
    let floats = arrow_cast::cast(&Float64Array::from(vec![1.0, 2.5]), &dictionary).unwrap();
    let msg = refused("n", floats).await;
    assert!(
        msg.starts_with("memory:2, column `n`: value \"2.5\" does not fit column type `integer`"),
        "{msg}"
    );
    // A float that overflows `real` (PostgreSQL's text COPY refuses it too).
    let msg = refused("r", Arc::new(Float64Array::from(vec![1.5, 1e39]))).await;
    assert!(msg.starts_with("memory:2, column `r`: value \"1e39\" does not fit column type `real`"), "{msg}");
    // Nanoseconds of a time of day (PostgreSQL's `time` keeps microseconds).
    exec(&pool, "ALTER TABLE c ADD COLUMN t time").await;
    let times = arrow_array::Time64NanosecondArray::from(vec![1_000, 1_001]);
    let msg = refused("t", Arc::new(times)).await;
    assert!(msg.starts_with("memory:2, column `t`:") && msg.contains("finer than"), "{msg}");
    // A time of day into a date.
    let noon = TimestampMicrosecondArray::from(vec![0, 43_200_000_000]);
    let msg = refused("day", Arc::new(noon)).await;
    assert!(msg.starts_with("memory:2, column `day`:") && msg.contains("has a time of day"), "{msg}");
    assert_eq!(count(&pool, "c").await, 0);
    // numeric(10, 2) rounds, from the float's decimal text as PostgreSQL's float8 → numeric does.
    let prices = RecordBatch::try_from_iter([(
        "d",
        Arc::new(Float64Array::from(vec![0.285, 2.675, 1.005, -0.125])) as ArrayRef,
    )])
    .unwrap();
    run(Arc::new(sink(&pool, "c", WriteMode::Append)), vec![prices], 1).await.unwrap();
    let ours: Vec<String> =
        sqlx::query_scalar("SELECT d::text FROM c ORDER BY d").fetch_all(&pool).await.unwrap();
    let theirs: Vec<String> = sqlx::query_scalar(
        "SELECT v::float8::numeric(10,2)::text FROM unnest('{0.285,2.675,1.005,-0.125}'::float8[]) v ORDER BY v",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(ours, ["-0.13", "0.29", "1.01", "2.68"]);
    assert_eq!(ours, theirs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncate_load_whose_every_row_is_rejected_leaves_the_table_empty() {
    let (pool, _) = fresh_pool("etlkit-trunc-rejects").await;
    exec(&pool, "CREATE TABLE tr (n integer); INSERT INTO tr SELECT generate_series(1, 100)").await;
    let cfg = PgSinkConfig {
        table: TableRef::new("tr"),
        mode: WriteMode::Truncate,
        invalid_rows: InvalidRows::Reject,
        ..Default::default()
    };
    let bad = RecordBatch::try_from_iter([(
        "n",
        Arc::new(Int64Array::from(vec![3_000_000_000, -3_000_000_000])) as ArrayRef,
    )])
    .unwrap();
    let stats = run(Arc::new(PgCopySink::new(pool.clone(), cfg).unwrap()), vec![bad], 1).await.unwrap();
    assert_eq!((stats.rows_read, stats.rows_written, stats.rows_rejected), (2, 0, 2));
    assert_eq!(count(&pool, "tr").await, 0, "yesterday's rows must not survive today's load");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upsert_refuses_null_keys_and_the_last_row_wins_whatever_the_workers() {
    let (pool, _) = fresh_pool("etlkit-upsert-keys").await;
    exec(&pool, "CREATE TABLE u (tenant integer, ext text, v text, UNIQUE (tenant, ext))").await;
    let upsert = |invalid_rows| {
        let cfg = PgSinkConfig {
            table: TableRef::new("u"),
            // A commit per batch: two concurrent writers would race to commit the same key.
            rows_per_transaction: 1,
            mode: WriteMode::Upsert {
                key: vec!["tenant".into(), "ext".into()],
                on_conflict: OnConflict::DoUpdate { compare: ChangeDetection::AllColumns },
            },
            invalid_rows,
            ..Default::default()
        };
        Arc::new(PgCopySink::new(pool.clone(), cfg).unwrap())
    };
    let rows = |ext: Vec<Option<&str>>, v: Vec<&str>| {
        RecordBatch::try_from_iter([
            ("tenant", Arc::new(Int32Array::from(vec![1; ext.len()])) as ArrayRef),
            ("ext", Arc::new(StringArray::from(ext)) as ArrayRef),
            ("v", Arc::new(StringArray::from(v)) as ArrayRef),
        ])
        .unwrap()
    };
    // NULL keys never conflict: each run would insert them again. They are invalid rows.
    let err = run(upsert(InvalidRows::Fail), vec![rows(vec![Some("x"), None], vec!["a", "b"])], 1)
        .await
        .unwrap_err();
    assert!(pg_error(&err).to_string().contains("upsert key"), "{err}");
    for _ in 0..2 {
        let batch = rows(vec![None, None, Some("x")], vec!["a", "b", "c"]);
        let source = MemorySource::new(batch.schema(), vec![batch]).unwrap();
        let stats = Pipeline::new(source, upsert(InvalidRows::Reject))
            .rejects(Arc::new(etlkit_core::MemoryRejects::new()))
            .run()
            .await
            .unwrap();
        assert_eq!((stats.rows_written, stats.rows_rejected), (1, 2));
    }
    assert_eq!(count(&pool, "u").await, 1);
    // One key written by many batches over 2 workers, in input order: the last row wins.
    let batches: Vec<RecordBatch> =
        (0..60).map(|i| rows(vec![Some("k")], vec![&format!("{i:03}")])).collect();
    let source = MemorySource::new(batches[0].schema(), batches).unwrap();
    let cfg = PipelineConfig { workers: 2, batch_size: 1, preserve_order: true, ..Default::default() };
    Pipeline::new(source, upsert(InvalidRows::Fail)).config(cfg).run().await.unwrap();
    let v: String = sqlx::query_scalar("SELECT v FROM u WHERE ext = 'k'").fetch_one(&pool).await.unwrap();
    assert_eq!(v, "059");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_leaves_nothing_for_the_next_run_of_the_sink_to_commit() {
    let (pool, _) = fresh_pool("etlkit-cancelled").await;
    exec(&pool, "CREATE TABLE cx (id bigint, v text); INSERT INTO cx VALUES (0, 'old')").await;
    let sink = Arc::new(sink(&pool, "cx", WriteMode::Truncate));
    // A run that wrote a batch and was then dropped (its future cancelled): neither `finish` nor
    // `abort` ran, and its open transaction sits on an idle connection.
    let cancelled = ids(1..4, "cancelled");
    sink.start(&cancelled.schema()).await.unwrap();
    sink.write(cancelled, &Context::default()).await.unwrap();
    // The next run of the same sink stores its own rows only.
    let stats = run(sink.clone(), vec![ids(10..12, "next")], 1).await.unwrap();
    assert_eq!(stats.rows_written, 2);
    let rows: Vec<(i64, String)> = rows(&pool, "SELECT id, v FROM cx ORDER BY id").await;
    assert_eq!(rows, [(10, "next".to_owned()), (11, "next".to_owned())]);
}

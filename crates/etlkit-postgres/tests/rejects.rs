//! PgRejects against a real, throwaway PostgreSQL (etlkit-testkit; `DATABASE_URL` reused when set):
//! real pipelines whose bad rows are stored in a reject table, compared with the input's bytes.
//!
//! This crate has no CSV reader, so the pipelines read the lines of a small CSV-like input (kept as
//! bytes) and parse them in a transform that rejects bad lines with their original bytes, the way
//! `etlkit_source::CsvSource` does with `OnError::Reject`.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use etlkit_core::{
    Context, LoadStats, MemorySource, Pipeline, PipelineConfig, RejectSink, Rejected, Transform,
};
use etlkit_postgres::{
    DatabaseUrl, PgCopySink, PgError, PgRejects, PgRejectsConfig, PgSinkConfig, TableRef, connect,
};
use etlkit_testkit::PgServer;
use sqlx::{AssertSqlSafe, PgPool, Row};

const HOSTILE: &str = "x\"; DROP TABLE y; --";

/// The input "file": a header, good rows and bad rows (too few and too many fields, an id that is
/// not an integer, Latin-1 text that is not UTF-8, a NUL byte in text).
const INPUT: &[u8] = b"id,name\n1,alice\n2\nx,carol\n4,caf\xe9\n5,dave\n6,e\x00ve\n7,frank,extra\n";
const ORIGIN: &str = "people.csv";

async fn fresh_pool(app: &str) -> PgPool {
    // One server for the whole test binary (the testkit stops it when the process exits).
    static PG: std::sync::LazyLock<Arc<PgServer>> =
        std::sync::LazyLock::new(|| PgServer::start().expect("test PostgreSQL"));
    let url = tokio::task::spawn_blocking(|| PG.fresh_database()).await.unwrap().expect("test PostgreSQL");
    connect(&DatabaseUrl::new(url), 4, app).await.unwrap()
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(pool).await.unwrap();
}

async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query(AssertSqlSafe(format!("SELECT count(*) FROM {table}"))).fetch_one(pool).await.unwrap().get(0)
}

async fn exists(pool: &PgPool, table: &str) -> bool {
    sqlx::query("SELECT to_regclass($1) IS NOT NULL").bind(table).fetch_one(pool).await.unwrap().get(0)
}

/// The input's lines (without the header) as rows: (1-based line number, the line's bytes).
fn input_lines() -> Vec<(u64, Vec<u8>)> {
    let body = INPUT.strip_suffix(b"\n").unwrap();
    body.split(|&b| b == b'\n').enumerate().skip(1).map(|(i, l)| (i as u64 + 1, l.to_vec())).collect()
}

fn lines_source() -> MemorySource {
    let lines = input_lines();
    let batch = RecordBatch::try_from_iter([
        ("line", Arc::new(UInt64Array::from_iter_values(lines.iter().map(|l| l.0))) as ArrayRef),
        ("bytes", Arc::new(BinaryArray::from_iter_values(lines.iter().map(|l| &l.1[..]))) as ArrayRef),
    ])
    .unwrap();
    MemorySource::new(batch.schema(), vec![batch]).unwrap()
}

fn people_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
    ]))
}

/// Parses `id,name` lines; rejects bad ones with file, line, column, value, reason and the bytes.
struct ParseLines;

impl Transform for ParseLines {
    fn name(&self) -> &str {
        "parse lines"
    }

    fn output_schema(&self, _input: &SchemaRef) -> etlkit_core::Result<SchemaRef> {
        Ok(people_schema())
    }

    fn apply(&self, batch: RecordBatch, ctx: &Context) -> etlkit_core::Result<Vec<RecordBatch>> {
        let numbers = batch.column(0).as_primitive::<arrow_array::types::UInt64Type>();
        let bytes = batch.column(1).as_binary::<i32>();
        let (mut ids, mut names) = (Vec::new(), Vec::new());
        for i in 0..batch.num_rows() {
            let raw = bytes.value(i);
            let reject = |column: Option<&str>, value: Option<String>, reason: String| {
                ctx.reject(Rejected {
                    origin: ORIGIN.into(),
                    line: Some(numbers.value(i)),
                    column: column.map(str::to_owned),
                    value,
                    reason,
                    raw: Some(raw.to_vec()),
                })
            };
            let fields: Vec<&[u8]> = raw.split(|&b| b == b',').collect();
            if fields.len() != 2 {
                reject(None, None, format!("expected 2 fields, found {}", fields.len()))?;
                continue;
            }
            let lossy = |f: &[u8]| String::from_utf8_lossy(f).into_owned();
            let Some(id) = std::str::from_utf8(fields[0]).ok().and_then(|s| s.parse::<i64>().ok()) else {
                reject(Some("id"), Some(lossy(fields[0])), "not a valid Int64".into())?;
                continue;
            };
            let name = match std::str::from_utf8(fields[1]) {
                Err(_) => {
                    reject(Some("name"), Some(lossy(fields[1])), "invalid UTF-8".into())?;
                    continue;
                }
                Ok(n) if n.contains('\0') => {
                    reject(Some("name"), Some(n.to_owned()), "NUL byte in text".into())?;
                    continue;
                }
                Ok(n) => n.to_owned(),
            };
            ids.push(id);
            names.push(name);
        }
        let out = RecordBatch::try_new(
            people_schema(),
            vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(names))],
        )
        .map_err(|e| etlkit_core::Error::stage(etlkit_core::Stage::Transform, "parse lines", false, e))?;
        Ok(vec![out])
    }
}

async fn people_sink(pool: &PgPool) -> Arc<PgCopySink> {
    exec(pool, "CREATE TABLE people (id bigint NOT NULL, name text NOT NULL)").await;
    Arc::new(
        PgCopySink::new(pool.clone(), PgSinkConfig { table: TableRef::new("people"), ..Default::default() })
            .unwrap(),
    )
}

async fn run(pool: &PgPool, rejects: Arc<dyn RejectSink>) -> etlkit_core::Result<LoadStats> {
    let sink = people_sink(pool).await;
    Pipeline::new(lines_source(), sink)
        .transform(ParseLines)
        .config(PipelineConfig { workers: 2, ..Default::default() })
        .rejects(rejects)
        .run()
        .await
}

fn pg_error(e: &etlkit_core::Error) -> &PgError {
    e.find_source::<PgError>().unwrap_or_else(|| panic!("no PgError in {e:?}"))
}

type StoredRow =
    (String, Option<i64>, Option<String>, Option<String>, String, Option<Vec<u8>>, Option<String>);

async fn stored(pool: &PgPool, table: &str) -> Vec<StoredRow> {
    sqlx::query(AssertSqlSafe(format!(
        "SELECT origin, line, \"column\", value, reason, raw, run_label FROM {table} ORDER BY line"
    )))
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_rejects_are_stored_in_the_table_with_the_original_bytes() {
    let pool = fresh_pool("rejects_stored").await;
    let config = PgRejectsConfig { run_label: Some("people 2024-01".into()), ..Default::default() };
    let rejects = Arc::new(PgRejects::new(pool.clone(), config).unwrap());

    let stats = run(&pool, rejects.clone()).await.unwrap();
    assert_eq!((stats.rows_read, stats.rows_written, stats.rows_rejected), (7, 2, 5));
    assert_eq!(count(&pool, "people").await, 2);
    assert_eq!(count(&pool, "etlkit_rejects").await as u64, stats.rows_rejected, "one table row per reject");
    assert_eq!(rejects.buffered_rows(), 0);

    let rows = stored(&pool, "etlkit_rejects").await;
    let input: std::collections::HashMap<u64, Vec<u8>> = input_lines().into_iter().collect();
    for row in &rows {
        assert_eq!(row.0, ORIGIN);
        let line = row.1.expect("line") as u64;
        assert!(!row.4.is_empty());
        assert_eq!(row.5.as_deref(), Some(&input[&line][..]), "line {line}: the input's bytes exactly");
        assert_eq!(row.6.as_deref(), Some("people 2024-01"));
    }
    let named: Vec<(i64, Option<&str>, Option<&str>, &str)> =
        rows.iter().map(|r| (r.1.unwrap(), r.2.as_deref(), r.3.as_deref(), r.4.as_str())).collect();
    assert_eq!(
        named,
        [
            (3, None, None, "expected 2 fields, found 1"),
            (4, Some("id"), Some("x"), "not a valid Int64"),
            (5, Some("name"), Some("caf\u{fffd}"), "invalid UTF-8"),
            // text cannot hold NUL: U+FFFD in `value`; `raw` (checked above) keeps the 0 byte
            (7, Some("name"), Some("e\u{fffd}ve"), "NUL byte in text"),
            (8, None, None, "expected 2 fields, found 3"),
        ]
    );
    let stamped: i64 = sqlx::query("SELECT count(*) FROM etlkit_rejects WHERE rejected_at <= now()")
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(stamped, 5, "rejected_at is filled in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reject_table_of_an_incompatible_shape_fails_the_run_and_leaves_the_target_empty() {
    let pool = fresh_pool("rejects_incompatible").await;
    // `raw` is text, not bytea, and there is no run_label column.
    exec(
        &pool,
        "CREATE TABLE etlkit_rejects (origin text, line bigint, \"column\" text, value text, reason text, raw text)",
    )
    .await;
    let rejects = Arc::new(PgRejects::new(pool.clone(), PgRejectsConfig::default()).unwrap());

    let err = run(&pool, rejects.clone()).await.unwrap_err();
    match pg_error(&err) {
        PgError::Database { action, table, .. } => {
            assert_eq!((*action, table.as_str()), ("inserting rejected rows", "\"etlkit_rejects\""));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(count(&pool, "people").await, 0, "no data committed when rejects cannot be stored");
    assert_eq!(count(&pool, "etlkit_rejects").await, 0);
    assert_eq!(rejects.buffered_rows(), 5, "the rows stay buffered for a later flush");

    // `prepare` reports the same before a run.
    assert!(matches!(rejects.prepare().await.unwrap_err(), PgError::Database { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_keeps_its_rows_and_a_later_flush_stores_them() {
    let pool = fresh_pool("rejects_retry").await;
    exec(&pool, "CREATE TABLE etlkit_rejects (nothing int)").await;
    let rejects = PgRejects::new(pool.clone(), PgRejectsConfig::default()).unwrap();
    for line in 1..=3 {
        rejects
            .reject(Rejected {
                origin: "o".into(),
                line: Some(line),
                column: None,
                value: None,
                reason: "r".into(),
                raw: Some(vec![line as u8, 0xff]),
            })
            .unwrap();
    }
    assert!(rejects.flush().await.is_err());
    assert_eq!(rejects.buffered_rows(), 3);

    exec(&pool, "DROP TABLE etlkit_rejects").await;
    rejects.flush().await.unwrap();
    assert_eq!(rejects.buffered_rows(), 0);
    let raws: Vec<Option<Vec<u8>>> = stored(&pool, "etlkit_rejects").await.into_iter().map(|r| r.5).collect();
    assert_eq!(raws, [Some(vec![1, 0xff]), Some(vec![2, 0xff]), Some(vec![3, 0xff])]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_rejects_than_the_buffer_holds_fail_the_run_naming_the_limit() {
    let pool = fresh_pool("rejects_bounded").await;
    let config = PgRejectsConfig { max_buffered_rows: 2, ..Default::default() };
    let err = run(&pool, Arc::new(PgRejects::new(pool.clone(), config).unwrap())).await.unwrap_err();
    assert!(matches!(pg_error(&err), PgError::InvalidConfig { field: "max_buffered_rows", .. }), "{err:?}");
    assert_eq!(count(&pool, "people").await, 0);
    assert!(!exists(&pool, "etlkit_rejects").await, "nothing was flushed");

    let config = PgRejectsConfig { max_buffered_bytes: 300, ..Default::default() };
    let err = run_again(&pool, Arc::new(PgRejects::new(pool.clone(), config).unwrap())).await.unwrap_err();
    assert!(matches!(pg_error(&err), PgError::InvalidConfig { field: "max_buffered_bytes", .. }), "{err:?}");
    assert_eq!(count(&pool, "people").await, 0);
}

/// Like [`run`] with the target table already created.
async fn run_again(pool: &PgPool, rejects: Arc<dyn RejectSink>) -> etlkit_core::Result<LoadStats> {
    let sink = Arc::new(
        PgCopySink::new(pool.clone(), PgSinkConfig { table: TableRef::new("people"), ..Default::default() })
            .unwrap(),
    );
    Pipeline::new(lines_source(), sink).transform(ParseLines).rejects(rejects).run().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_rejects_from_many_threads_go_to_a_quoted_table_in_one_flush() {
    let pool = fresh_pool("rejects_many").await;
    exec(&pool, "CREATE SCHEMA \"rej s\"").await;
    let table = TableRef::qualified("rej s", HOSTILE);
    let config =
        PgRejectsConfig { table: table.clone(), run_label: Some(HOSTILE.into()), ..Default::default() };
    let rejects = Arc::new(PgRejects::new(pool.clone(), config).unwrap());
    rejects.prepare().await.unwrap();
    assert_eq!(count(&pool, &table.quoted()).await, 0, "prepare creates the table and inserts nothing");

    // More than one INSERT statement's worth (10 000 rows each), from several threads at once.
    let ctx = Context::with_rejects(rejects.clone());
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let ctx = ctx.clone();
            s.spawn(move || {
                for i in 0..6_250u64 {
                    ctx.reject(Rejected {
                        origin: format!("t{t}"),
                        line: Some(i + 1),
                        column: Some(HOSTILE.into()),
                        value: Some("'); DROP TABLE people; --".into()),
                        reason: "test".into(),
                        raw: if i % 2 == 0 { None } else { Some(i.to_le_bytes().to_vec()) },
                    })
                    .unwrap();
                }
            });
        }
    });
    rejects.flush().await.unwrap();
    assert_eq!(ctx.rejected(), 25_000);
    let q = table.quoted();
    assert_eq!(count(&pool, &q).await, 25_000);
    let (distinct, nulls, labels): (i64, i64, i64) = {
        let r = sqlx::query(AssertSqlSafe(format!(
            "SELECT count(DISTINCT (origin, line)), count(*) FILTER (WHERE raw IS NULL), \
             count(*) FILTER (WHERE run_label = $1 AND \"column\" = $1) FROM {q}"
        )))
        .bind(HOSTILE)
        .fetch_one(&pool)
        .await
        .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!((distinct, nulls, labels), (25_000, 12_500, 25_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_with_nothing_rejected_does_not_touch_the_database() {
    let pool = fresh_pool("rejects_none").await;
    let rejects = PgRejects::new(pool.clone(), PgRejectsConfig::default()).unwrap();
    rejects.flush().await.unwrap();
    assert!(!exists(&pool, "etlkit_rejects").await);

    // Without create_table, a missing table is reported by prepare.
    let config = PgRejectsConfig { create_table: false, ..Default::default() };
    let rejects = PgRejects::new(pool.clone(), config).unwrap();
    assert!(matches!(rejects.prepare().await.unwrap_err(), PgError::Database { .. }));
}

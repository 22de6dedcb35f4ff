//! Replication benchmarks (etlkit-replicate), on the Q&A schema of the replication tests
//! (`crates/etlkit-replicate/tests/qa/*.sql`; scale `ETLKIT_REPLICATE_SCALE` users, default 20 000,
//! i.e. 20 scale rows in total across 7 tables) in a throwaway PostgreSQL from `etlkit-testkit` (or
//! `DATABASE_URL`; the throwaway server runs with fsync=off).
//!
//! - `replicate_table/byte_pipe`: the `votes` table (10 × scale rows) into a plain table (no keys or
//!   indexes) with `pipe_table`, the transfer `replicate` uses — TRUNCATE, binary COPY bytes piped
//!   from source to target through etlkit-postgres's COPY-in path, commit.
//! - `replicate_table/etlkit_source_sink`: the same through the Arrow path — `PgSource`
//!   (binary COPY decoded into Arrow batches) → `Pipeline` → `PgCopySink` (`WriteMode::Truncate`,
//!   re-encoded to binary COPY).
//! - `replicate_schema/qa`: the whole schema into a fresh database (tables, data, keys, indexes,
//!   foreign keys, sequences), 4 workers.
//!
//! `ETLKIT_REPLICATE_SOURCE=postgres://...` uses a database already holding the Q&A data instead
//! of generating it (scale = its number of users).
//!
//! Run with `cargo bench --bench replicate`. The comparison with `pg_dump | pg_restore` on millions
//! of rows uses `examples/replicate.rs`; see docs/benchmarks.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etlkit_core::{Pipeline, PipelineConfig};
use etlkit_postgres::sqlx::{self, AssertSqlSafe, Connection, PgConnection};
use etlkit_postgres::{
    DatabaseUrl, PgCopySink, PgSinkConfig, PgSource, PgSourceConfig, SourceQuery, TableRef, WriteMode,
    connect,
};
use etlkit_replicate::{ReplicateConfig, TableProgress, pipe_table, replicate};

fn scale() -> u32 {
    std::env::var("ETLKIT_REPLICATE_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(20_000)
}

fn quiet(_: &TableProgress<'_>) {}

async fn exec(url: &str, sql: &str) {
    let mut c = PgConnection::connect(url).await.unwrap();
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(&mut c).await.unwrap();
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let pg = etlkit_testkit::PgServer::start().unwrap();
    let mut scale = scale();
    let target = pg.fresh_database().unwrap();
    let source = match std::env::var("ETLKIT_REPLICATE_SOURCE") {
        // A database already holding the Q&A data (e.g. made with psql -v scale=... -f data.sql).
        Ok(url) => {
            let users = rt.block_on(async {
                let mut c = PgConnection::connect(&url).await.unwrap();
                sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users").fetch_one(&mut c).await.unwrap()
            });
            scale = users as u32;
            url
        }
        Err(_) => pg.fresh_database().unwrap(),
    };
    rt.block_on(async {
        if std::env::var("ETLKIT_REPLICATE_SOURCE").is_ok() {
            return;
        }
        exec(&source, include_str!("../crates/etlkit-replicate/tests/qa/schema.sql")).await;
        exec(
            &source,
            &include_str!("../crates/etlkit-replicate/tests/qa/data.sql")
                .replace(":scale", &scale.to_string()),
        )
        .await;
        exec(&source, "VACUUM ANALYZE").await;
    });
    let base = ReplicateConfig {
        source: DatabaseUrl::new(source.clone()),
        target: DatabaseUrl::new(target.clone()),
        workers: 4,
        ..Default::default()
    };
    let votes = u64::from(scale) * 10;
    // The transfer benchmarks load a plain `votes` table (no keys, no indexes), so they measure
    // moving rows, not index maintenance.
    rt.block_on(exec(
        &target,
        "CREATE TABLE votes (id bigint NOT NULL, post_id integer NOT NULL, user_id bigint NOT NULL, \
         vote_type_id smallint NOT NULL, created_on date NOT NULL, weight double precision)",
    ));
    let columns: Vec<String> =
        ["id", "post_id", "user_id", "vote_type_id", "created_on", "weight"].map(String::from).into();
    let table = TableRef::qualified("public", "votes");

    let mut g = c.benchmark_group("replicate_table");
    g.sample_size(10);
    g.throughput(Throughput::Elements(votes));
    g.bench_function("byte_pipe", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut src = PgConnection::connect(&source).await.unwrap();
                let mut tgt = PgConnection::connect(&target).await.unwrap();
                sqlx::raw_sql("BEGIN; TRUNCATE votes").execute(&mut tgt).await.unwrap();
                let rows = pipe_table(&mut src, &mut tgt, &table, &columns, 1 << 20).await.unwrap();
                sqlx::raw_sql("COMMIT").execute(&mut tgt).await.unwrap();
                assert_eq!(rows, votes);
            })
        })
    });
    let (src_pool, tgt_pool) = rt.block_on(async {
        (
            connect(&DatabaseUrl::new(source.clone()), 2, "etlkit-bench").await.unwrap(),
            connect(&DatabaseUrl::new(target.clone()), 2, "etlkit-bench").await.unwrap(),
        )
    });
    g.bench_function("etlkit_source_sink", |b| {
        b.iter(|| {
            rt.block_on(async {
                let cfg = PgSourceConfig { query: SourceQuery::Table(table.clone()), ..Default::default() };
                let src = PgSource::new(src_pool.clone(), cfg).await.unwrap();
                let sink = PgCopySink::new(
                    tgt_pool.clone(),
                    PgSinkConfig { table: table.clone(), mode: WriteMode::Truncate, ..Default::default() },
                )
                .unwrap();
                let stats = Pipeline::new(src, Arc::new(sink))
                    .config(PipelineConfig { workers: 1, ..Default::default() })
                    .run()
                    .await
                    .unwrap();
                assert_eq!(stats.rows_written, votes);
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group("replicate_schema");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    g.throughput(Throughput::Elements(u64::from(scale) * 20));
    g.bench_function("qa", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let fresh = pg.fresh_database().unwrap();
                let cfg = ReplicateConfig { target: DatabaseUrl::new(fresh), ..base.clone() };
                let t = Instant::now();
                rt.block_on(replicate(&cfg, &quiet)).unwrap();
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(replicate_benches, benches);
criterion_main!(replicate_benches);

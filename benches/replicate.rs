//! Replication benchmarks (etlkit-postgres), on the Q&A schema of the replication tests
//! (`crates/etlkit-postgres/tests/qa/*.sql`; scale `ETLKIT_REPLICATE_SCALE` users, default 20 000,
//! i.e. 20 scale rows in total across 7 tables) in a throwaway PostgreSQL from `etlkit-testkit` (or
//! `DATABASE_URL`; the throwaway server runs with fsync=off).
//!
//! - `replicate_table/byte_pipe`: `replicate` of the `votes` table alone (10 × scale rows) with
//!   `resume: false` into a target holding only that table — TRUNCATE, binary COPY bytes piped from
//!   source to target, commit.
//! - `replicate_table/etlkit_source_sink`: the same table through the Arrow path — `PgSource`
//!   (binary COPY decoded into Arrow batches) → `Pipeline` → `PgCopySink` (`WriteMode::Truncate`,
//!   re-encoded to binary COPY).
//! - `replicate_schema/qa`: the whole schema into a fresh database (tables, data, keys, indexes,
//!   foreign keys, sequences), 4 workers.
//!
//! Run with `cargo bench --bench replicate`. The comparison with `pg_dump | pg_restore` on millions
//! of rows uses `examples/replicate.rs`; see docs/benchmarks.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etlkit_core::{Pipeline, PipelineConfig};
use etlkit_postgres::sqlx::{self, AssertSqlSafe, Connection, PgConnection};
use etlkit_postgres::{
    DatabaseUrl, PgCopySink, PgSinkConfig, PgSource, PgSourceConfig, ReplicateConfig, SourceQuery,
    TableProgress, TableRef, WriteMode, connect, replicate,
};

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
    let scale = scale();
    let source = pg.fresh_database().unwrap();
    let target = pg.fresh_database().unwrap();
    rt.block_on(async {
        exec(&source, include_str!("../crates/etlkit-postgres/tests/qa/schema.sql")).await;
        exec(
            &source,
            &include_str!("../crates/etlkit-postgres/tests/qa/data.sql")
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
    // The table benchmarks use a target holding `votes` alone: its foreign keys are skipped (the
    // tables they reference are not there), so the COPY is not slowed by per-row key checks.
    let one = ReplicateConfig { tables: vec!["votes".into()], resume: false, ..base.clone() };
    let r = rt.block_on(replicate(&one, &quiet)).unwrap();
    assert_eq!(r.foreign_keys_skipped.len(), 3);
    let votes = u64::from(scale) * 10;

    let mut g = c.benchmark_group("replicate_table");
    g.sample_size(10);
    g.throughput(Throughput::Elements(votes));
    g.bench_function("byte_pipe", |b| {
        b.iter(|| {
            let r = rt.block_on(replicate(&one, &quiet)).unwrap();
            assert_eq!(r.rows, votes);
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
                let table = TableRef::qualified("public", "votes");
                let cfg = PgSourceConfig { query: SourceQuery::Table(table.clone()), ..Default::default() };
                let src = PgSource::new(src_pool.clone(), cfg).await.unwrap();
                let sink = PgCopySink::new(
                    tgt_pool.clone(),
                    PgSinkConfig { table, mode: WriteMode::Truncate, ..Default::default() },
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

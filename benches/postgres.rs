//! PostgreSQL COPY sink benchmarks (etlkit-postgres), on generated NYC yellow-taxi rows (19 columns).
//!
//! - `pg_encode/*`: cast + validate + binary-COPY encode only (no server), rows per second: the
//!   default column-at-a-time encoder and `pgpq`.
//! - `pg_load/*`: the whole sink — encode, COPY over `workers` connections, commit — into a logged
//!   table without indexes on a throwaway PostgreSQL from `etlkit-testkit` (or `DATABASE_URL`).
//!   Each iteration truncates and reloads the table (`WriteMode::Truncate`, one connection) or
//!   appends (`WriteMode::Append`, two connections) after a truncate.
//!
//! Run with `cargo bench --bench postgres`. End-to-end Parquet figures come from
//! `examples/load_parquet.rs`; see docs/benchmarks.md.

use std::sync::Arc;

use arrow_array::RecordBatch;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etlkit_core::{MemorySource, Pipeline, PipelineConfig, Sink};
use etlkit_postgres::bytes::BytesMut;
use etlkit_postgres::{
    CopyEncoder, DatabaseUrl, NanosPolicy, NulPolicy, PgCopySink, PgSinkConfig, TableRef, WriteMode, connect,
    create_table_if_not_exists, table_columns,
};

const ROWS: usize = 200_000;

fn taxi() -> RecordBatch {
    etlkit_testkit::taxi::yellow_trips(ROWS, 7, 0.0)
}

fn encode(c: &mut Criterion) {
    let batch = taxi();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // Table columns from a real catalog, so the casts are the ones a load does.
    let pg = etlkit_testkit::PgServer::start().unwrap();
    let url = pg.fresh_database().unwrap();
    let columns = rt.block_on(async {
        let pool = connect(&DatabaseUrl::new(url), 2, "etlkit-bench").await.unwrap();
        let table = TableRef::new("taxi");
        create_table_if_not_exists(&pool, &table, &batch.schema(), &[]).await.unwrap();
        let mut conn = pool.acquire().await.unwrap();
        table_columns(&mut conn, &table).await.unwrap()
    });
    let mut g = c.benchmark_group("pg_encode");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.sample_size(10);
    // The default encoder (column at a time for these scalar types) against pgpq on the same rows;
    // both produce the same bytes (a unit test in etlkit-postgres checks that).
    for (name, pgpq) in [("taxi_200k_columnar", false), ("taxi_200k_pgpq", true)] {
        g.bench_function(name, |b| {
            let (schema, nanos, nul) = (batch.schema(), NanosPolicy::Reject, NulPolicy::Reject);
            let mut enc = if pgpq {
                CopyEncoder::new_pgpq(&columns, &schema, nanos, nul)
            } else {
                CopyEncoder::new(&columns, &schema, nanos, nul)
            }
            .unwrap();
            let mut buf = BytesMut::with_capacity(64 << 20);
            b.iter(|| {
                buf.clear();
                enc.write_header(&mut buf);
                enc.write_batch(&batch, &mut buf).unwrap();
                enc.write_trailer(&mut buf);
                buf.len()
            })
        });
    }
    g.finish();
}

fn load(c: &mut Criterion) {
    let batch = taxi();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let pg = etlkit_testkit::PgServer::start().unwrap();
    let url = pg.fresh_database().unwrap();
    let pool = rt.block_on(async {
        let pool = connect(&DatabaseUrl::new(url), 3, "etlkit-bench").await.unwrap();
        create_table_if_not_exists(&pool, &TableRef::new("taxi"), &batch.schema(), &[]).await.unwrap();
        pool
    });
    let mut g = c.benchmark_group("pg_load");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.sample_size(10);
    for (name, mode, workers) in [
        ("taxi_200k_truncate_1conn", WriteMode::Truncate, 1),
        ("taxi_200k_append_2conn", WriteMode::Append, 2),
    ] {
        g.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                if mode == WriteMode::Append {
                    // Empty the table first (not part of what is measured in spirit, but cheap).
                    let t = PgCopySink::new(
                        pool.clone(),
                        PgSinkConfig {
                            table: TableRef::new("taxi"),
                            mode: WriteMode::Truncate,
                            ..Default::default()
                        },
                    )
                    .unwrap();
                    t.finish().await.unwrap();
                }
                let sink = PgCopySink::new(
                    pool.clone(),
                    PgSinkConfig { table: TableRef::new("taxi"), mode: mode.clone(), ..Default::default() },
                )
                .unwrap();
                let source = MemorySource::new(batch.schema(), vec![batch.clone()]).unwrap();
                let cfg = PipelineConfig { batch_size: 65_536, workers, ..Default::default() };
                let stats =
                    Pipeline::new(source, Arc::new(sink) as Arc<dyn Sink>).config(cfg).run().await.unwrap();
                assert_eq!(stats.rows_written, ROWS as u64);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, encode, load);
criterion_main!(benches);

//! Criterion bench of row hashing: all 19 columns of a NYC-TLC yellow-taxi-shaped batch
//! (`etlkit_testkit::taxi::yellow_trips`), 262 144 rows in batches of 8192 (the pipeline default),
//! SHA-256 and BLAKE3, on rayon pools of 1 and 2 threads; plus the `Dedup` transform.
//! `examples/hash_rows.rs` runs the same hashing over a whole file and prints rows/s.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use etlkit_core::{Context, Transform};
use etlkit_hash::{Algorithm, DIGEST_LEN, Dedup, DedupConfig, RowHasher};

const ROWS: usize = 262_144;
const BATCH: usize = 8192;

fn hash(c: &mut Criterion) {
    let all = etlkit_testkit::taxi::yellow_trips(ROWS, 7, 0.01);
    assert_eq!(all.num_columns(), 19);
    let batches: Vec<_> = (0..ROWS / BATCH).map(|i| all.slice(i * BATCH, BATCH)).collect();
    let mut out = vec![0u8; BATCH * DIGEST_LEN];

    let mut group = c.benchmark_group("hash_taxi_19_columns");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(20);
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
        for algo in [Algorithm::Sha256, Algorithm::Blake3] {
            let hasher = RowHasher::all_columns(algo);
            let id = BenchmarkId::from_parameter(format!("{algo}/threads={threads}"));
            group.bench_function(id, |b| {
                b.iter(|| {
                    pool.install(|| {
                        for batch in &batches {
                            hasher.hash_into(batch, &mut out).expect("hash");
                        }
                    })
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("dedup_taxi_19_columns");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(10);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().expect("pool");
    group.bench_function("sha256/threads=2", |b| {
        b.iter(|| {
            let dedup = Dedup::new(DedupConfig::default()).expect("config");
            let ctx = Context::default();
            pool.install(|| {
                for batch in &batches {
                    dedup.apply(batch.clone(), &ctx).expect("dedup");
                }
            });
            assert_eq!(ctx.deduplicated() as usize, etlkit_testkit::taxi::duplicate_count(ROWS, 0.01));
        })
    });
    group.finish();
}

criterion_group!(benches, hash);
criterion_main!(benches);

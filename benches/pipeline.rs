//! Criterion bench of the pipeline runtime: 1 M user records through source → light transform →
//! `NullSink`, across `batch_size` × `workers` (the same job as `examples/pipeline_throughput.rs`,
//! which runs 10 M rows and prints rows/s).

use etlkit_testkit::users as user_records;

use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use etlkit_core::{MemorySource, NullSink, Pipeline, PipelineConfig};

const ROWS: usize = 1_000_000;

fn pipeline(c: &mut Criterion) {
    let input = user_records::user_batches(ROWS, 65_536);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut group = c.benchmark_group("pipeline_user_records");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(10);
    for batch_size in [1024, 8192, 65536] {
        for workers in [1, 2] {
            let id = BenchmarkId::from_parameter(format!("batch_size={batch_size}/workers={workers}"));
            group.bench_function(id, |b| {
                b.to_async(&runtime).iter(|| async {
                    let source =
                        MemorySource::new(user_records::input_schema(), input.clone()).expect("schema");
                    let config = PipelineConfig { batch_size, workers, ..Default::default() };
                    let stats = Pipeline::new(source, Arc::new(NullSink::new()))
                        .transform(user_records::EnrichUsers::new())
                        .config(config)
                        .run()
                        .await
                        .expect("pipeline run");
                    assert_eq!(stats.rows_written as usize, ROWS);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);

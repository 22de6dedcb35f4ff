//! Pushes 10 million user records through source → light transform → `NullSink` for several
//! `batch_size` × `workers` configurations and prints one line per configuration:
//!
//! ```text
//! pipeline_throughput rows_per_sec=<float> batch_size=<B> workers=<W>
//! ```
//!
//! Run with `cargo run --release --example pipeline_throughput [-- --rows N]`.
//! The input is generated up front (in 65 536-row batches, like a file reader's output) and is not
//! timed; the pipeline re-batches it to each `batch_size`, runs the transform on
//! `transform_concurrency` (= number of CPUs) threads and hands batches to `workers` sink writers.

use etlkit_testkit::users as user_records;

use std::sync::Arc;

use etlkit_core::{MemorySource, NullSink, Pipeline, PipelineConfig};

fn main() -> etlkit_core::Reported {
    run().into()
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut rows = 10_000_000usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rows" => rows = args.next().ok_or("--rows needs a value")?.parse()?,
            other => {
                return Err(format!("unknown argument {other}; usage: pipeline_throughput [--rows N]").into());
            }
        }
    }
    let input = user_records::user_batches(rows, 65_536);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    for batch_size in [1024, 8192, 65536] {
        for workers in [1, 2] {
            let source = MemorySource::new(user_records::input_schema(), input.clone())?;
            let sink = Arc::new(NullSink::new());
            let config = PipelineConfig { batch_size, workers, ..Default::default() };
            let stats = runtime.block_on(
                Pipeline::new(source, sink.clone())
                    .transform(user_records::EnrichUsers::new())
                    .config(config)
                    .run(),
            )?;
            assert_eq!(stats.rows_written as usize, rows, "every row reaches the sink");
            assert_eq!(sink.rows() as usize, rows);
            println!(
                "pipeline_throughput rows_per_sec={:.1} batch_size={batch_size} workers={workers}",
                rows as f64 / stats.elapsed.as_secs_f64()
            );
        }
    }
    Ok(())
}

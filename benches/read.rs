//! Criterion bench of the etlkit-source readers on a 19-column NYC-TLC yellow-taxi-shaped file.
//!
//! ```text
//! cargo bench --bench read
//! READ_BENCH_ROWS=3600000 cargo bench --bench read   # the size used in docs/benchmarks.md
//! ```
//! The files are generated (etlkit-testkit's taxi generator) into a temporary directory and removed at
//! the end. Parquet is read with 2 decoder threads in file order; CSV with an explicit schema.

use std::path::{Path, PathBuf};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etlkit_core::{Context, Source};
use etlkit_source::{CsvSource, CsvSourceConfig, Input, ParquetSource, ParquetSourceConfig};
use etlkit_testkit::taxi;
use futures::StreamExt;

fn drain(source: Box<dyn Source>) -> u64 {
    futures::executor::block_on(async {
        let mut stream = source.into_stream(Context::default());
        let mut rows = 0u64;
        while let Some(b) = stream.next().await {
            rows += b.expect("bench input is valid").num_rows() as u64;
        }
        rows
    })
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn files(rows: usize) -> (TempDir, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("etlkit-bench-read-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let chunk = 1 << 20;
    let batches: Vec<_> = (0..rows.div_ceil(chunk))
        .map(|i| taxi::yellow_trips(chunk.min(rows - i * chunk), 1 + i as u64, 0.0))
        .collect();
    let parquet = dir.join("yellow.parquet");
    let csv = dir.join("yellow.csv");
    taxi::write_parquet(&parquet, &batches).expect("write parquet");
    taxi::write_csv(&csv, &batches).expect("write csv");
    (TempDir(dir), parquet, csv)
}

fn parquet_source(path: &Path, workers: usize) -> Box<dyn Source> {
    let config = ParquetSourceConfig {
        input: Input::File(path.to_owned()),
        batch_size: 65_536,
        workers,
        max_row_groups_in_flight: 2 * workers,
        ..Default::default()
    };
    Box::new(ParquetSource::open(config).expect("open parquet"))
}

fn read(c: &mut Criterion) {
    let rows: usize = std::env::var("READ_BENCH_ROWS").ok().and_then(|v| v.parse().ok()).unwrap_or(500_000);
    let (_dir, parquet, csv) = files(rows);

    let mut group = c.benchmark_group("read_yellow_19_columns");
    group.sample_size(10);
    group.throughput(Throughput::Elements(rows as u64));
    for workers in [1, 2] {
        group.bench_function(format!("parquet_workers_{workers}"), |b| {
            b.iter(|| assert_eq!(drain(parquet_source(&parquet, workers)), rows as u64))
        });
    }
    group.bench_function("csv", |b| {
        b.iter(|| {
            let config = CsvSourceConfig {
                input: Input::File(csv.clone()),
                schema: Some(taxi::yellow_trips_schema()),
                batch_size: 65_536,
                ..Default::default()
            };
            let source = Box::new(CsvSource::open(config).expect("open csv"));
            assert_eq!(drain(source), rows as u64)
        })
    });
    group.finish();
}

criterion_group!(benches, read);
criterion_main!(benches);

//! Hashes every row of a Parquet or CSV file with etlkit's canonical row encoding and prints the
//! hashing throughput:
//!
//! ```text
//! hash_rows rows=<N> rows_per_sec=<float> algo=<sha256|blake3> threads=<T>
//! ```
//!
//! Usage:
//! `cargo run --release --example hash_rows -- --input FILE --algo sha256|blake3 [--threads N] [--out FILE]`
//!
//! The file (`.parquet`/`.parq`/`.pq`, else CSV with a header and inferred types) is read into memory
//! first, untimed; then every batch is hashed on a rayon pool of `--threads` threads (default: the
//! number of CPUs) over all columns. `rows_per_sec` is rows divided by the hashing time only.
//! `--out FILE` writes one lowercase 64-hex digest per input row, in input order; the file is
//! byte-identical for any thread count.
//!
//! On Linux it also prints, on stderr, the CPU time the hashing took (all threads) and rows per
//! CPU-second — a load-independent figure on a busy machine.
//!
//! Make an input with the taxi generator:
//! `cargo run --release -p etlkit-testkit --bin etlkit-taxi -- /tmp/taxi.parquet 3600000`

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow_array::RecordBatch;
use etlkit_core::{Context, Source};
use etlkit_hash::{Algorithm, DIGEST_LEN, RowHasher};
use etlkit_source::{CsvSource, CsvSourceConfig, Input, ParquetSource, ParquetSourceConfig};
use futures::StreamExt;

const USAGE: &str = "usage: hash_rows --input FILE --algo sha256|blake3 [--threads N] [--out FILE]";

fn read(path: &Path) -> Result<Vec<RecordBatch>, Box<dyn std::error::Error>> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let source: Box<dyn Source> = if matches!(ext.as_str(), "parquet" | "parq" | "pq") {
        Box::new(ParquetSource::open(ParquetSourceConfig {
            input: Input::File(path.to_path_buf()),
            batch_size: 65_536,
            preserve_order: true,
            ..Default::default()
        })?)
    } else {
        Box::new(CsvSource::open(CsvSourceConfig {
            input: Input::File(path.to_path_buf()),
            batch_size: 65_536,
            ..Default::default()
        })?)
    };
    let batches: Vec<_> = futures::executor::block_on(source.into_stream(Context::default()).collect());
    Ok(batches.into_iter().collect::<Result<_, _>>()?)
}

fn main() -> etlkit_core::Reported {
    run().into()
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (mut input, mut algo, mut threads, mut out) = (None, None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value; {USAGE}"));
        match a.as_str() {
            "--input" => input = Some(PathBuf::from(value()?)),
            "--algo" => algo = Some(value()?.parse::<Algorithm>()?),
            "--threads" => threads = Some(value()?.parse::<usize>()?),
            "--out" => out = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other}; {USAGE}").into()),
        }
    }
    let input = input.ok_or(USAGE)?;
    let algo = algo.ok_or(USAGE)?;
    let threads = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 {
        return Err("--threads must be at least 1".into());
    }

    let batches = read(&input)?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build()?;
    let hasher = RowHasher::all_columns(algo);
    let mut digests = vec![0u8; rows * DIGEST_LEN];

    let cpu_before = process_cpu_secs();
    let started = Instant::now();
    pool.install(|| -> Result<(), etlkit_hash::HashError> {
        let mut at = 0;
        for b in &batches {
            let end = at + b.num_rows() * DIGEST_LEN;
            hasher.hash_into(b, &mut digests[at..end])?;
            at = end;
        }
        Ok(())
    })?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = process_cpu_secs().zip(cpu_before).map(|(after, before)| after - before);

    if let Some(path) = out {
        let mut w = BufWriter::new(std::fs::File::create(&path)?);
        for d in digests.chunks_exact(DIGEST_LEN) {
            writeln!(w, "{}", etlkit_hash::to_hex(d))?;
        }
        w.flush()?;
    }
    println!("hash_rows rows={rows} rows_per_sec={:.1} algo={algo} threads={threads}", rows as f64 / secs);
    if let Some(cpu) = cpu {
        eprintln!("hash_rows cpu_secs={cpu:.2} rows_per_cpu_sec={:.1}", rows as f64 / cpu);
    }
    Ok(())
}

/// User + system CPU time of this process (all threads), from `/proc/self/stat` (Linux; 10 ms ticks).
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // fields after the parenthesised command name; utime and stime are fields 14 and 15
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

//! Reads every batch of a Parquet or CSV input with etlkit-source and prints the throughput.
//!
//! ```text
//! cargo run --release --example read_throughput -- --input PATH [--batch-size N] [--workers N]
//! ```
//! `PATH` is a file, a directory or a glob; the format comes from the extension (for a directory: Parquet
//! when it holds `.parquet` files, else CSV). `--workers` is the number of Parquet decoder threads or
//! CSV conversion threads (default: the number of CPUs); `--batch-size` defaults to 65536 (as pyarrow's
//! `iter_batches`). CSV columns are inferred from the first 1000 rows.
//!
//! Prints exactly `read_throughput rows=<N> rows_per_sec=<float>` on stdout, and the process's peak
//! resident memory as `peak_rss_kib=<N>` on stderr. On bad input it prints the error with its whole
//! cause chain on stderr and exits with status 1 (status 2 for bad arguments).

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use etlkit_core::{Context, Source};
use etlkit_source::{
    CsvSource, CsvSourceConfig, Input, PARQUET_EXTENSIONS, ParquetSource, ParquetSourceConfig,
};
use futures::StreamExt;

struct Args {
    input: String,
    batch_size: usize,
    workers: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut input = None;
    let mut batch_size = 65_536;
    let mut workers = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--input" => input = Some(value("--input")?),
            "--batch-size" => {
                batch_size = value("--batch-size")?.parse().map_err(|e| format!("--batch-size: {e}"))?
            }
            "--workers" => {
                workers = Some(value("--workers")?.parse().map_err(|e| format!("--workers: {e}"))?)
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    let input = input.ok_or("--input PATH is required")?;
    Ok(Args { input, batch_size, workers })
}

fn is_parquet(input: &Input) -> bool {
    let ext_is_parquet = |p: &Path| {
        p.extension()
            .is_some_and(|e| PARQUET_EXTENSIONS.contains(&e.to_string_lossy().to_ascii_lowercase().as_str()))
    };
    match input {
        Input::File(p) => ext_is_parquet(p),
        Input::Glob(g) => ext_is_parquet(Path::new(g)),
        Input::List(l) => l.first().is_some_and(|p| ext_is_parquet(p)),
        Input::Dir(d) => std::fs::read_dir(d)
            .map(|entries| entries.flatten().any(|e| ext_is_parquet(&e.path())))
            .unwrap_or(false),
    }
}

fn open(args: &Args) -> etlkit_core::Result<Box<dyn Source>> {
    let input = Input::parse(&args.input);
    if is_parquet(&input) {
        let mut config = ParquetSourceConfig { input, batch_size: args.batch_size, ..Default::default() };
        if let Some(w) = args.workers {
            config.workers = w;
            config.max_row_groups_in_flight = 2 * w;
        }
        Ok(Box::new(ParquetSource::open(config)?))
    } else {
        let mut config = CsvSourceConfig { input, batch_size: args.batch_size, ..Default::default() };
        if let Some(w) = args.workers {
            config.workers = w;
            config.channel_capacity = 2 * w;
        }
        Ok(Box::new(CsvSource::open(config)?))
    }
}

fn run(args: &Args) -> etlkit_core::Result<(u64, f64)> {
    let started = Instant::now();
    let source = open(args)?;
    let mut stream = source.into_stream(Context::default());
    let rows = futures::executor::block_on(async {
        let mut rows = 0u64;
        while let Some(batch) = stream.next().await {
            rows += batch?.num_rows() as u64;
        }
        Ok::<_, etlkit_core::Error>(rows)
    })?;
    Ok((rows, started.elapsed().as_secs_f64()))
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\nusage: read_throughput --input PATH [--batch-size N] [--workers N]");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok((rows, secs)) => {
            println!("read_throughput rows={rows} rows_per_sec={:.1}", rows as f64 / secs.max(1e-9));
            if let Some(kib) = peak_rss_kib() {
                eprintln!("peak_rss_kib={kib}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {}", e.report());
            ExitCode::FAILURE
        }
    }
}

//! Loads a Parquet file (or a directory of them) into a PostgreSQL table by binary COPY and prints
//! one line:
//!
//! ```text
//! load_parquet rows=<N> rows_per_sec=<float>
//! ```
//!
//! ```text
//! cargo run --release --example load_parquet -- --input FILE_OR_DIR --table NAME
//!     [--database-url URL] [--mode append|upsert] [--key col,...] [--workers N] [--batch-size N]
//!     [--rows-per-transaction N] [--send-buffer-kib N]
//! ```
//!
//! The table is created from the Parquet schema when missing (column names as in the file; `--key`
//! becomes the primary key). Without `--database-url` and without `DATABASE_URL`, a throwaway
//! PostgreSQL is started from `etlkit-testkit` (and said so on stderr). The rate is rows written
//! divided by the wall-clock time of the whole pipeline run (reading Parquet, casting, encoding,
//! COPY, commit). Upsert counters go to stderr.

use std::sync::Arc;
use std::time::Instant;

use etlkit_core::{Pipeline, PipelineConfig, Source};
use etlkit_postgres::{
    ChangeDetection, DatabaseUrl, OnConflict, PgCopySink, PgSinkConfig, TableRef, WriteMode, connect,
    create_table_if_not_exists,
};
use etlkit_source::{Input, ParquetSource, ParquetSourceConfig};

struct Args {
    input: String,
    table: String,
    url: Option<String>,
    mode: String,
    key: Vec<String>,
    workers: usize,
    batch_size: usize,
    rows_per_transaction: u64,
    send_buffer_bytes: usize,
}

const USAGE: &str = "usage: load_parquet --input FILE_OR_DIR --table NAME [--database-url URL] \
                     [--mode append|upsert] [--key col,...] [--workers N] [--batch-size N] [--rows-per-transaction N] [--send-buffer-kib N]";

fn parse_args() -> Result<Args, Box<dyn std::error::Error>> {
    let mut a = Args {
        input: String::new(),
        table: String::new(),
        url: std::env::var("DATABASE_URL").ok().filter(|s| !s.trim().is_empty()),
        mode: "append".into(),
        key: Vec::new(),
        workers: 2,
        batch_size: 65_536,
        rows_per_transaction: PgSinkConfig::default().rows_per_transaction,
        send_buffer_bytes: PgSinkConfig::default().send_buffer_bytes,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--input" => a.input = value()?,
            "--table" => a.table = value()?,
            "--database-url" => a.url = Some(value()?),
            "--mode" => a.mode = value()?,
            "--key" => {
                a.key = value()?.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
            }
            "--workers" => a.workers = value()?.parse()?,
            "--batch-size" => a.batch_size = value()?.parse()?,
            "--rows-per-transaction" => a.rows_per_transaction = value()?.parse()?,
            "--send-buffer-kib" => a.send_buffer_bytes = value()?.parse::<usize>()? << 10,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    if a.input.is_empty() || a.table.is_empty() {
        return Err(USAGE.into());
    }
    if a.mode == "upsert" && a.key.is_empty() {
        return Err("--mode upsert needs --key".into());
    }
    if a.mode != "append" && a.mode != "upsert" {
        return Err(format!("--mode must be append or upsert, not {}", a.mode).into());
    }
    Ok(a)
}

fn main() -> etlkit_core::Reported {
    run().into()
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    // `_server` keeps a throwaway server alive until the end of main.
    let (url, _server) = etlkit_testkit::PgServer::url_or_throwaway("load_parquet", args.url.as_deref())?;

    let source = ParquetSource::open(ParquetSourceConfig {
        input: Input::parse(&args.input),
        batch_size: args.batch_size,
        ..Default::default()
    })?;
    let schema = source.schema();

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let pool = connect(&DatabaseUrl::new(url), args.workers as u32 + 1, "etlkit-load_parquet").await?;
        let table = TableRef::new(args.table.clone());
        let key: Vec<&str> = args.key.iter().map(String::as_str).collect();
        create_table_if_not_exists(&pool, &table, &schema, &key).await?;
        let mode = match args.mode.as_str() {
            "upsert" => WriteMode::Upsert {
                key: args.key.clone(),
                on_conflict: OnConflict::DoUpdate { compare: ChangeDetection::AllColumns },
            },
            _ => WriteMode::Append,
        };
        let sink = PgCopySink::new(
            pool,
            PgSinkConfig {
                table,
                mode,
                rows_per_transaction: args.rows_per_transaction,
                ..Default::default()
            },
        )?;
        let config =
            PipelineConfig { batch_size: args.batch_size, workers: args.workers, ..Default::default() };
        let started = Instant::now();
        let stats = Pipeline::new(source, Arc::new(sink)).config(config).run().await?;
        let secs = started.elapsed().as_secs_f64();
        if args.mode == "upsert" {
            eprintln!(
                "load_parquet: inserted={} updated={} unchanged={} duplicate_keys={}",
                stats.counter("inserted"),
                stats.counter("updated"),
                stats.counter("unchanged"),
                stats.counter("duplicate_keys")
            );
        }
        println!(
            "load_parquet rows={} rows_per_sec={:.1}",
            stats.rows_written,
            stats.rows_written as f64 / secs
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

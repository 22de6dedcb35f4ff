//! Loads a Parquet file (or a directory of them) into a PostgreSQL table through DataFusion SQL —
//! `INSERT INTO <table> SELECT * FROM <parquet>` on etlkit-datafusion's `PgTable` — and prints one line:
//!
//! ```text
//! datafusion_load rows=<N> rows_per_sec=<float>
//! ```
//!
//! ```text
//! cargo run --release --features datafusion --example datafusion_load -- --input FILE_OR_DIR --table NAME
//!     [--database-url URL] [--partitions N] [--commit staged|two-phase]
//! ```
//!
//! The table is created from the Parquet schema when missing, exactly as `load_parquet` creates it.
//! `--partitions` (default 2, like `load_parquet --workers`) is DataFusion's `target_partitions`: that
//! many Parquet read partitions, each binary-COPYing into its own staging table; one commit step then
//! moves all staged rows into the table in one transaction. `--commit two-phase` instead COPYs each
//! partition straight into the table and prepares its transaction; the commit step commits them all
//! (`CommitProtocol::TwoPhase`: rows written once; needs `max_prepared_transactions`). Without `--database-url` and without
//! `DATABASE_URL`, a throwaway PostgreSQL is started from `etlkit-testkit` (and said so on stderr). The
//! rate is rows inserted divided by the wall-clock time of planning and running the whole statement.
//!
//! `--scan` then reads the table back twice and prints two more lines: `SELECT *` through DataFusion
//! (`PgTable`'s partitioned snapshot scan, `--partitions` COPY streams) and etlkit's `PgSource` (one
//! COPY stream), rows decoded into Arrow and dropped:
//!
//! ```text
//! datafusion_scan rows=<N> rows_per_sec=<float> partitions=<P>
//! pgsource_scan rows=<N> rows_per_sec=<float>
//! ```

use std::sync::Arc;
use std::time::Instant;

use etlkit::datafusion::datafusion::arrow::array::UInt64Array;
use etlkit::datafusion::datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use etlkit::datafusion::{CommitProtocol, PgConnector, PgTable, PgTableOptions};
use etlkit_core::Source;
use etlkit_postgres::{DatabaseUrl, TableRef, connect, create_table_if_not_exists, quote_ident};
use etlkit_source::{Input, ParquetSource, ParquetSourceConfig};

struct Args {
    input: String,
    table: String,
    url: Option<String>,
    partitions: usize,
    commit: CommitProtocol,
    scan: bool,
}

const USAGE: &str = "usage: datafusion_load --input FILE_OR_DIR --table NAME [--database-url URL] [--partitions N] [--commit staged|two-phase] [--scan]";

fn parse_args() -> Result<Args, Box<dyn std::error::Error>> {
    let mut a = Args {
        input: String::new(),
        table: String::new(),
        url: std::env::var("DATABASE_URL").ok().filter(|s| !s.trim().is_empty()),
        partitions: 2,
        commit: CommitProtocol::Staged,
        scan: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--input" => a.input = value()?,
            "--table" => a.table = value()?,
            "--database-url" => a.url = Some(value()?),
            "--partitions" => a.partitions = value()?.parse()?,
            "--commit" => {
                a.commit = match value()?.as_str() {
                    "staged" => CommitProtocol::Staged,
                    "two-phase" => CommitProtocol::TwoPhase,
                    other => return Err(format!("--commit {other:?}: staged or two-phase\n{USAGE}").into()),
                }
            }
            "--scan" => a.scan = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    if a.input.is_empty() || a.table.is_empty() || a.partitions == 0 {
        return Err(USAGE.into());
    }
    Ok(a)
}

fn main() -> etlkit_core::Reported {
    run().into()
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    // RUST_LOG=etlkit_datafusion=debug shows when each partition finished staging and the commit time.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    // `_server` keeps a throwaway server alive until the end of main.
    let (url, _server) = etlkit_testkit::PgServer::url_or_throwaway("datafusion_load", args.url.as_deref())?;
    // The table is created from the schema etlkit's Parquet reader sees, as load_parquet does.
    let schema =
        ParquetSource::open(ParquetSourceConfig { input: Input::parse(&args.input), ..Default::default() })?
            .schema();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let url_text = url.clone();
        let url = DatabaseUrl::new(url);
        let table = TableRef::new(args.table.clone());
        let pool = connect(&url, 1, "etlkit-datafusion_load").await?;
        create_table_if_not_exists(&pool, &table, &schema, &[]).await?;
        pool.close().await;

        let started = Instant::now();
        let config = SessionConfig::new().with_target_partitions(args.partitions);
        let ctx = SessionContext::new_with_config(config);
        let connector = PgConnector::new("default", url, args.partitions as u32 + 2);
        let options = PgTableOptions { commit: args.commit, ..PgTableOptions::default() };
        let target = PgTable::new(connector, table, options).await?;
        ctx.register_table("target", Arc::new(target))?;
        let input = std::path::Path::new(&args.input);
        let options = ParquetReadOptions::default().file_extension(if input.is_dir() {
            ".parquet"
        } else {
            input.extension().and_then(|e| e.to_str()).unwrap_or("")
        });
        ctx.register_parquet("input", &args.input, options).await?;
        let columns = schema.fields().iter().map(|f| quote_ident(f.name())).collect::<Vec<_>>().join(", ");
        let sql = format!("INSERT INTO target ({columns}) SELECT {columns} FROM input");
        let out = ctx.sql(&sql).await?.collect().await?;
        let rows = out
            .first()
            .and_then(|b| b.column(0).as_any().downcast_ref::<UInt64Array>())
            .map_or(0, |a| a.value(0));
        let secs = started.elapsed().as_secs_f64();
        println!("datafusion_load rows={rows} rows_per_sec={:.1}", rows as f64 / secs);
        if args.scan {
            use futures::StreamExt;
            let started = Instant::now();
            let mut stream = ctx.sql("SELECT * FROM target").await?.execute_stream().await?;
            let mut n = 0usize;
            while let Some(b) = stream.next().await {
                n += b?.num_rows();
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "datafusion_scan rows={n} rows_per_sec={:.1} partitions={}",
                n as f64 / secs,
                args.partitions
            );

            let started = Instant::now();
            let pool = connect(&DatabaseUrl::new(url_text.clone()), 1, "etlkit-datafusion_load").await?;
            let source = etlkit_postgres::PgSource::new(
                pool,
                etlkit_postgres::PgSourceConfig {
                    query: etlkit_postgres::SourceQuery::Table(TableRef::new(args.table.clone())),
                    ..Default::default()
                },
            )
            .await?;
            let mut stream = Box::new(source).into_stream(Default::default());
            let mut n = 0usize;
            while let Some(b) = stream.next().await {
                n += b?.num_rows();
            }
            let secs = started.elapsed().as_secs_f64();
            println!("pgsource_scan rows={n} rows_per_sec={:.1}", n as f64 / secs);
        }
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}

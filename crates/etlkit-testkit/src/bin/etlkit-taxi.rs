//! Writes generated NYC yellow-taxi trips to a Parquet or CSV file (format from the extension).
//!
//! ```text
//! cargo run --release -p etlkit-testkit --bin etlkit-taxi -- OUT.parquet|OUT.csv [ROWS] [SEED] [DUP_RATE]
//! ```
//! Defaults: 3,600,000 rows (about one month of TLC yellow trips), seed 1, dup_rate 0.0. Rows are generated
//! in parallel batches of 1 Mi rows (`taxi::yellow_trips_batches`).

use std::time::Instant;

use etlkit_testkit::taxi;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first() else {
        eprintln!("usage: etlkit-taxi OUT.parquet|OUT.csv [ROWS=3600000] [SEED=1] [DUP_RATE=0.0]");
        std::process::exit(2);
    };
    let rows: usize = args.get(1).map(|s| s.replace('_', "").parse()).transpose()?.unwrap_or(3_600_000);
    let seed: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(1);
    let dup_rate: f64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(0.0);

    let started = Instant::now();
    let batches = taxi::yellow_trips_batches(rows, 1 << 20, seed, dup_rate);
    let generated = started.elapsed();
    if out.ends_with(".csv") {
        taxi::write_csv(out, &batches)?;
    } else {
        taxi::write_parquet(out, &batches)?;
    }
    eprintln!(
        "{rows} rows: generated in {:.2?}, written to {out} in {:.2?} ({} bytes)",
        generated,
        started.elapsed() - generated,
        std::fs::metadata(out)?.len()
    );
    Ok(())
}

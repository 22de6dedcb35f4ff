//! A Ballista scheduler with etlkit's plan codecs and SQL functions.
//!
//! ```text
//! etlkit-ballista-scheduler [--bind 127.0.0.1:50050] [--pg-max-connections 4]
//! ```
//!
//! PostgreSQL connectors named in plans are resolved from the environment: `ETLKIT_PG_URL_<NAME>`,
//! or `DATABASE_URL` for the connector named `default`.

use etlkit_ballista::{SchedulerOptions, flag, init_logging, run_scheduler};

fn usage(problem: &str) -> ! {
    eprintln!(
        "etlkit-ballista-scheduler: {problem}\nusage: etlkit-ballista-scheduler [--bind HOST:PORT] [--pg-max-connections N]"
    );
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut options = SchedulerOptions::default();
    if let Some(v) = flag(&args, "--bind") {
        options.bind = v.parse().unwrap_or_else(|_| usage(&format!("--bind {v:?} is not HOST:PORT")));
    }
    if let Some(v) = flag(&args, "--pg-max-connections") {
        options.max_connections = v.parse().unwrap_or_else(|_| usage(&format!("--pg-max-connections {v:?}")));
    }
    eprintln!("etlkit-ballista-scheduler listening on {}", options.bind);
    if let Err(e) = run_scheduler(options).await {
        eprintln!(
            "etlkit-ballista-scheduler: {}",
            etlkit_datafusion::datafusion::error::DataFusionError::External(Box::new(e))
        );
        std::process::exit(1);
    }
}

//! A Ballista executor with etlkit's plan codecs and SQL functions.
//!
//! ```text
//! etlkit-ballista-executor [--scheduler 127.0.0.1:50050] [--host 127.0.0.1] [--port 50051]
//!     [--grpc-port 50052] [--vcores N] [--work-dir DIR] [--pg-max-connections 8]
//! ```
//!
//! PostgreSQL connectors named in plans are resolved from the environment: `ETLKIT_PG_URL_<NAME>`,
//! or `DATABASE_URL` for the connector named `default`. Plans never carry credentials.

use etlkit_ballista::{ExecutorOptions, flag, init_logging, run_executor};

fn usage(problem: &str) -> ! {
    eprintln!(
        "etlkit-ballista-executor: {problem}\nusage: etlkit-ballista-executor [--scheduler HOST:PORT] [--host H] \
         [--port P] [--grpc-port P] [--vcores N] [--work-dir DIR] [--pg-max-connections N]"
    );
    std::process::exit(2)
}

fn number<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    flag(args, name).map(|v| v.parse().unwrap_or_else(|_| usage(&format!("{name} {v:?} is not a number"))))
}

#[tokio::main]
async fn main() {
    init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut options = ExecutorOptions::default();
    if let Some(v) = flag(&args, "--scheduler") {
        options.scheduler =
            v.parse().unwrap_or_else(|_| usage(&format!("--scheduler {v:?} is not HOST:PORT")));
    }
    if let Some(v) = flag(&args, "--host") {
        options.host = v;
    }
    if let Some(v) = number(&args, "--port") {
        options.port = v;
    }
    if let Some(v) = number(&args, "--grpc-port") {
        options.grpc_port = v;
    }
    if let Some(v) = number(&args, "--vcores") {
        options.vcores = v;
    }
    if let Some(v) = flag(&args, "--work-dir") {
        options.work_dir = Some(v.into());
    }
    if let Some(v) = number(&args, "--pg-max-connections") {
        options.max_connections = v;
    }
    eprintln!(
        "etlkit-ballista-executor on {}:{} for scheduler {}",
        options.host, options.port, options.scheduler
    );
    if let Err(e) = run_executor(options).await {
        eprintln!(
            "etlkit-ballista-executor: {}",
            etlkit_datafusion::datafusion::error::DataFusionError::External(Box::new(e))
        );
        std::process::exit(1);
    }
}

//! Replicates a PostgreSQL schema into another database: tables in foreign-key order, in parallel,
//! by binary COPY piped from source to target, with optional verification and resume.
//!
//! ```text
//! cargo run --release --example replicate -- --source-url postgres://u@host/src \
//!     --target-url postgres://u@host/dst [--schema public] [--tables a,b] [--workers 4] [--verify] \
//!     [--progress-secs 5] [--chunk-kib 1024] [--no-resume]
//!
//! # the same, with the URLs (and their passwords) out of the process list:
//! export ETLKIT_SOURCE_URL=postgres://u:secret@host/src ETLKIT_TARGET_URL=postgres://u:secret@host/dst
//! cargo run --release --example replicate -- [--schema public] [--verify] ...
//! ```
//!
//! The URLs come from `--source-url` / `--target-url` or, when a flag is not given, from the
//! environment variables `ETLKIT_SOURCE_URL` / `ETLKIT_TARGET_URL`. Prefer the variables when a URL
//! holds a password: command-line arguments are visible to every user of the machine (`ps`),
//! a process's environment only to its owner and root. Passwords are never printed (`***`).
//!
//! Prints a `progress` line per table while it copies, a `table` line per table at the end, and
//! finally exactly `replicate tables=<T> rows=<N> elapsed_s=<S> verified=<true|false>` (`rows`: rows
//! copied by this run). Exits with status 1 when `--verify` finds a difference.

use std::process::ExitCode;
use std::time::Duration;

use etlkit_core::Report;
use etlkit_postgres::DatabaseUrl;
use etlkit_replicate::{
    ReplicateConfig, ReplicationError, ReplicationReport, TableProgress, TableStatus, replicate,
};

/// Environment variables read when `--source-url` / `--target-url` are not given.
const SOURCE_ENV: &str = "ETLKIT_SOURCE_URL";
const TARGET_ENV: &str = "ETLKIT_TARGET_URL";

fn usage(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    eprintln!(
        "usage: replicate [--source-url URL] [--target-url URL] [--schema public] [--tables a,b] [--workers N] \
         [--verify] [--progress-secs S] [--chunk-kib K] [--lock-timeout-secs S] [--no-resume]\n\
         (without --source-url / --target-url: the environment variables {SOURCE_ENV} / {TARGET_ENV})"
    );
    ExitCode::from(2)
}

/// The URL from `flag`'s value, else from the environment variable `var`.
fn url(arg: Option<String>, flag: &str, var: &str) -> Result<DatabaseUrl, String> {
    if let Some(arg) = arg {
        let url = DatabaseUrl::new(arg);
        if url.redacted() != url.expose() {
            eprintln!(
                "replicate: warning: the password in {flag} is visible in the process list; \
                 set {var} instead"
            );
        }
        return Ok(url);
    }
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(DatabaseUrl::new(v)),
        _ => Err(format!("{flag} or the environment variable {var} is required")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut cfg = ReplicateConfig::default();
    let (mut source, mut target) = (None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let parsed: Result<(), String> = (|| {
            match flag.as_str() {
                "--source-url" => source = Some(value()?),
                "--target-url" => target = Some(value()?),
                "--schema" => cfg.schema = value()?,
                "--tables" => {
                    cfg.tables = value()?
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                }
                "--workers" => cfg.workers = value()?.parse().map_err(|e| format!("--workers: {e}"))?,
                "--progress-secs" => {
                    let s: f64 = value()?.parse().map_err(|e| format!("--progress-secs: {e}"))?;
                    cfg.progress_interval =
                        Duration::try_from_secs_f64(s).map_err(|e| format!("--progress-secs: {e}"))?;
                }
                "--chunk-kib" => {
                    cfg.chunk_bytes =
                        value()?.parse::<usize>().map_err(|e| format!("--chunk-kib: {e}"))? << 10
                }
                "--lock-timeout-secs" => {
                    let s: f64 = value()?.parse().map_err(|e| format!("--lock-timeout-secs: {e}"))?;
                    cfg.lock_timeout =
                        Duration::try_from_secs_f64(s).map_err(|e| format!("--lock-timeout-secs: {e}"))?;
                }
                "--verify" => cfg.verify = true,
                "--no-resume" => cfg.resume = false,
                other => return Err(format!("unknown argument {other}")),
            }
            Ok(())
        })();
        if let Err(e) = parsed {
            return usage(&e);
        }
    }
    match (url(source, "--source-url", SOURCE_ENV), url(target, "--target-url", TARGET_ENV)) {
        (Ok(source), Ok(target)) => (cfg.source, cfg.target) = (source, target),
        (Err(e), _) | (_, Err(e)) => return usage(&e),
    }
    // `DatabaseUrl` prints with the password replaced by `***`.
    eprintln!("replicate: {} -> {}", cfg.source, cfg.target);

    let on_progress = |p: &TableProgress<'_>| {
        if !p.done {
            println!(
                "progress table={} rows={} mib={:.1} rows_per_s={:.0}",
                p.table,
                p.rows,
                p.bytes as f64 / (1 << 20) as f64,
                p.rows_per_second()
            );
        }
    };
    let (report, ok) = match replicate(&cfg, &on_progress).await {
        Ok(r) => (r, true),
        // Everything is committed, but some tables differ: print the report (their lines say
        // `verify=MISMATCH`), then fail.
        Err(ReplicationError::VerificationFailed { tables, report }) => {
            eprintln!("replicate: verification failed for {}", tables.join(", "));
            (*report, false)
        }
        Err(e) => {
            let hint = if e.is_retryable() { "; re-run to resume" } else { "" };
            eprintln!("replicate failed (retryable: {}{hint}): {}", e.is_retryable(), Report::of(&e));
            return ExitCode::FAILURE;
        }
    };
    print_report(&report);
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn print_report(report: &ReplicationReport) {
    for (level, tables) in report.levels.iter().enumerate() {
        println!("level {level}: {}", tables.join(", "));
    }
    for cycle in &report.cycles {
        println!("cycle (foreign keys added after the data): {}", cycle.join(", "));
    }
    for t in &report.tables {
        let status = match t.status {
            TableStatus::Skipped => "skipped",
            TableStatus::Recopied => "recopied",
            _ => "copied",
        };
        let verify = match &t.verification {
            Some(v) if v.matches() => format!(" verify=ok checksum={}", v.source.sum),
            Some(v) => format!(
                " verify=MISMATCH source_rows={} target_rows={} source_sum={} target_sum={}",
                v.source.rows, v.target.rows, v.source.sum, v.target.sum
            ),
            None => String::new(),
        };
        let secs = t.elapsed.as_secs_f64();
        let retries = if t.retries > 0 { format!(" retries={}", t.retries) } else { String::new() };
        println!(
            "table {} level={} {status} rows={} mib={:.1} elapsed_s={secs:.3} rows_per_s={:.0}{retries}{verify}",
            t.table,
            t.level,
            t.rows,
            t.bytes as f64 / (1 << 20) as f64,
            if secs > 0.0 { t.rows as f64 / secs } else { 0.0 },
        );
    }
    for fk in &report.foreign_keys_skipped {
        println!("foreign key skipped (referenced table missing in the target): {fk}");
    }
    println!(
        "phases data_s={:.3} post_data_s={:.3} verify_s={:.3} peak_parallel_tables={}",
        report.data_elapsed.as_secs_f64(),
        report.post_data_elapsed.as_secs_f64(),
        report.verify_elapsed.as_secs_f64(),
        report.peak_parallel_tables
    );
    println!(
        "replicate tables={} rows={} elapsed_s={:.3} verified={}",
        report.tables.len(),
        report.rows,
        report.elapsed.as_secs_f64(),
        report.verified
    );
}

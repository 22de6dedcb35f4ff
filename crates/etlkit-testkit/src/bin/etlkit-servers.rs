//! Starts the testkit's throwaway servers for a person and keeps them up until this process ends.
//!
//! ```text
//! etlkit-servers [pg] [bolt]        (default: both)
//! ```
//! Prints `export ...` lines for `DATABASE_URL` / `BOLT_URI`, `BOLT_USER`, `BOLT_PASSWORD`, `BOLT_HTTP_URL`,
//! `BOLT_DATABASE`, then a `# ready` line, then waits. Ctrl-C, `kill PID` or any other way this process ends
//! stops the servers and deletes their files (the testkit's watchdogs see the process go). Usually run
//! through `scripts/pg-up` / `scripts/bolt-up`. Ignores `DATABASE_URL`/`BOLT_URI` only if the caller
//! unsets them (the scripts do): otherwise it reports those servers.

use std::io::Write;

use etlkit_testkit::{BOLT_DEFAULT_DATABASE, BoltServer, PgServer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a != "pg" && a != "bolt") {
        eprintln!("usage: etlkit-servers [pg] [bolt]");
        std::process::exit(2);
    }
    let want = |k: &str| args.is_empty() || args.iter().any(|a| a == k);
    let mut out = std::io::stdout().lock();
    let mut keep = Vec::<Box<dyn std::any::Any>>::new();
    if want("pg") {
        let pg = PgServer::start_dedicated()?;
        writeln!(
            out,
            "# PostgreSQL on 127.0.0.1 (throwaway: fsync=off, synchronous_commit=off, full_page_writes=off)"
        )?;
        writeln!(out, "export DATABASE_URL={}", pg.url())?;
        keep.push(Box::new(pg));
    }
    if want("bolt") {
        let bolt = BoltServer::start_dedicated()?;
        writeln!(out, "# ArcadeDB (Bolt) on 127.0.0.1; HTTP API and Studio at BOLT_HTTP_URL")?;
        writeln!(
            out,
            "export BOLT_URI={} BOLT_USER={} BOLT_PASSWORD={} BOLT_HTTP_URL={} BOLT_DATABASE={}",
            bolt.uri(),
            bolt.user(),
            bolt.password(),
            bolt.http_url().unwrap_or_default(),
            BOLT_DEFAULT_DATABASE,
        )?;
        keep.push(Box::new(bolt));
    }
    writeln!(out, "# ready (pid {}); stop with: kill {}", std::process::id(), std::process::id())?;
    out.flush()?;
    drop(out);
    loop {
        std::thread::park();
    }
}

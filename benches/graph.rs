//! Graph sink benchmark: the learners job end to end (CSV read, two-phase load) on the Bolt server from
//! `etlkit-testkit` (ArcadeDB, or `BOLT_URI`), over a matrix of batch sizes and worker counts, plus the
//! Python baseline (`benches/python/learners_baseline.py`: official `neo4j` driver, batch 5000, 8
//! threads, one managed write transaction per UNWIND batch) on the same data and server.
//!
//! ```text
//! cargo bench --bench graph
//! ETLKIT_GRAPH_ROWS=20000 ETLKIT_GRAPH_BATCHES=5000 ETLKIT_GRAPH_WORKERS=1,4 cargo bench --bench graph
//! ```
//!
//! Each run loads into a fresh database. Reported: learners/s (distinct learners / wall time of read +
//! load) and the client's CPU share (process user+system CPU time / wall time; 1.0 = one core busy).
//! Not criterion: one 100 K-learner load takes tens of seconds, so each cell runs once
//! (`ETLKIT_GRAPH_REPEAT` for more) and the full matrix is printed as a Markdown table.
//! Under `cargo test` (no `--bench` argument) it does nothing.

// Both examples are compiled in as modules, and each includes the shared `support/learners_csv.rs`.
#![allow(clippy::duplicate_mod)]

#[allow(dead_code)]
#[path = "../examples/gen_learners.rs"]
mod gen_learners;
#[allow(dead_code)]
#[path = "../examples/learners_graph.rs"]
mod learners_graph;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use etlkit_neo4j::{GraphConfig, GraphWriter};

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().unwrap_or_else(|_| panic!("{name}: not a number: {s}")))
        .collect()
}

/// User + system CPU seconds of this process so far (Linux `/proc/self/stat`, USER_HZ = 100).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// Drops a database through ArcadeDB's HTTP API (with `curl`) after its run, so no cell (nor the
/// Python baseline, which runs last) is slowed by the databases of earlier cells. Best effort.
fn drop_database(server: &etlkit_testkit::BoltServer, name: &str) {
    let (Some(http), false) = (server.http_url(), server.is_external()) else { return };
    let body = format!(r#"{{"command":"drop database {name}"}}"#);
    let auth = format!("{}:{}", server.user(), server.password());
    let _ = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-u",
            &auth,
            "-X",
            "POST",
            &format!("{http}/api/v1/server"),
            "-d",
            &body,
        ])
        .status();
}

fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("graph bench: run with `cargo bench --bench graph` (skipped under cargo test)");
        return Ok(());
    }
    let rows = env_list("ETLKIT_GRAPH_ROWS", "100000")[0];
    let batches = env_list("ETLKIT_GRAPH_BATCHES", "1000,5000,10000");
    let workers = env_list("ETLKIT_GRAPH_WORKERS", "1,2,4");
    let repeat = env_list("ETLKIT_GRAPH_REPEAT", "1")[0].max(1);
    let partition = learners_graph::parse_partition(
        &std::env::var("ETLKIT_GRAPH_REL_PARTITION").unwrap_or_else(|_| "both".to_owned()),
    )?;
    let csv = std::env::var("ETLKIT_GRAPH_CSV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir().join(format!("etlkit-learners-{rows}-seed7.csv")));
    if !csv.exists() {
        let t = Instant::now();
        gen_learners::write_learners(&csv, rows, 7)?;
        eprintln!("generated {} ({rows} rows) in {:.1} s", csv.display(), t.elapsed().as_secs_f64());
    }
    let server = etlkit_testkit::BoltServer::start()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    if std::env::var("ETLKIT_GRAPH_WARMUP").map_or(true, |v| v != "0") {
        // The JVM server is much slower until its JIT has warmed up: one 10 K-row load first, untimed.
        let warm = std::env::temp_dir().join("etlkit-learners-10000-seed8.csv");
        if !warm.exists() {
            gen_learners::write_learners(&warm, 10_000, 8)?;
        }
        let db = server.fresh_database()?;
        let warm_db = db.name.clone();
        let config = GraphConfig {
            uri: db.uri,
            user: db.user,
            password: db.password,
            database: db.name,
            workers: 2,
            ..Default::default()
        };
        let t = Instant::now();
        rt.block_on(async {
            learners_graph::load(&warm, Arc::new(GraphWriter::connect(config)?), partition, false).await
        })?;
        eprintln!("warm-up load of {} done in {:.1} s", warm.display(), t.elapsed().as_secs_f64());
        drop_database(&server, &warm_db);
    }
    let mut table = Vec::new();
    for &batch in &batches {
        for &w in &workers {
            for _ in 0..repeat {
                let db = server.fresh_database()?;
                let db_name = db.name.clone();
                let config = GraphConfig {
                    uri: db.uri,
                    user: db.user,
                    password: db.password,
                    database: db.name,
                    batch_rows: batch,
                    workers: w,
                    ..Default::default()
                };
                let (cpu0, t0) = (cpu_seconds(), Instant::now());
                let report = rt.block_on(async {
                    let writer = Arc::new(GraphWriter::connect(config)?);
                    learners_graph::load(&csv, writer, partition, false).await
                })?;
                let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
                drop_database(&server, &db_name);
                let rate = report.learners as f64 / wall;
                println!(
                    "graph/learners batch={batch} workers={w}: {} | learners/s={rate:.0} cpu_share={:.2} retries={}",
                    report.line(),
                    cpu / wall,
                    report.stats.retries
                );
                table.push(format!(
                    "| etlkit | {batch} | {w} | {} | {} | {} | {wall:.1} | {rate:.0} | {:.2} | {} |",
                    report.learners,
                    report.nodes_created,
                    report.rels_created,
                    cpu / wall,
                    report.stats.retries
                ));
            }
        }
    }
    if std::env::var("ETLKIT_GRAPH_PYTHON").map_or(true, |v| v != "0") {
        let db = server.fresh_database()?;
        // The driver's default max_transaction_retry_time (30 s) gives up on ArcadeDB's hub conflicts
        // with 8 threads; raised so the baseline finishes (ETLKIT_GRAPH_PY_RETRY_TIME=30 for the default).
        let py_retry = std::env::var("ETLKIT_GRAPH_PY_RETRY_TIME").unwrap_or_else(|_| "3600".to_owned());
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python/learners_baseline.py");
        eprintln!("python baseline: {script}");
        let out = std::process::Command::new("python3")
            .arg(script)
            .args(["--input", &csv.to_string_lossy(), "--bolt-uri", &db.uri, "--user", &db.user])
            .args([
                "--password",
                &db.password,
                "--database",
                &db.name,
                "--batch-size",
                "5000",
                "--workers",
                "8",
            ])
            .args(["--max-retry-time", &py_retry])
            .output()?;
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8_lossy(&out.stdout);
        print!("{stdout}");
        if let Some(line) = stdout.lines().find(|l| l.starts_with("baseline FAILED")) {
            table.push(format!(
                "| python neo4j driver (max retry time {py_retry} s) | 5000 | 8 threads | {line} |"
            ));
        } else if let Some(line) = stdout.lines().find(|l| l.starts_with("baseline ")) {
            let field =
                |k: &str| line.split_whitespace().find_map(|kv| kv.strip_prefix(k)).unwrap_or("?").to_owned();
            table.push(format!(
                "| python neo4j driver (max retry time {py_retry} s) | 5000 | 8 threads | {} | {} | {} | {} | {} | {} | {} |",
                field("learners="),
                field("nodes_created="),
                field("rels_created="),
                field("elapsed_s="),
                field("learners_per_s="),
                field("cpu_share="),
                field("retries=")
            ));
        }
    }
    println!(
        "\n| client | batch | workers | learners | nodes created | rels created | wall s | learners/s | client CPU share | retries |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for row in table {
        println!("{row}");
    }
    drop(server);
    Ok(())
}

//! Graph job benchmark: `etlkit_graph::GraphJob` end to end (CSV streamed once per pass, entities
//! de-duplicated, list column exploded, nodes and relationships merged) on the Bolt server from
//! `etlkit-testkit` (ArcadeDB, or `BOLT_URI`), over a matrix of transaction sizes and worker counts.
//!
//! ```text
//! cargo bench --bench graph
//! ETLKIT_GRAPH_ROWS=20000 ETLKIT_GRAPH_BATCHES=5000 ETLKIT_GRAPH_WORKERS=1,4 cargo bench --bench graph
//! ```
//!
//! The input is its own synthetic people CSV (`id,name,skills,company,city,country`: 1–5 skills per
//! person from 500 with a skewed popularity, 2,000 companies, 40 cities in 8 countries — `city` names
//! repeat across countries, so `City` has a composite key — and 2% repeated rows), written once per
//! row count to the temp directory. Each cell loads into a fresh database. Reported: input rows/s
//! (rows / wall time of the whole job), nodes and relationships created, retries, the client's CPU
//! share (user+system CPU / wall; 1.0 = one core busy). Not criterion: each cell runs once
//! (`ETLKIT_GRAPH_REPEAT` for more); the matrix is printed as a Markdown table. Under `cargo test` (no
//! `--bench` argument) it does nothing. The learners job's figures come from the example
//! (`examples/learners_graph.rs`, see `docs/benchmarks.md`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use etlkit_core::Transform;
use etlkit_graph::{GraphJob, GraphModel, Pass, csv_input};
use etlkit_neo4j::{Endpoint, GraphConfig, GraphWriter, NodeSpec, Property, RelSpec};
use etlkit_source::{CsvSourceConfig, Input};
use etlkit_transform::{DedupByKey, Explode, ExplodeConfig, ListFormat};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

/// Writes `rows` people rows (deterministic, splitmix64).
fn generate(path: &Path, rows: usize) -> std::io::Result<()> {
    let mut state = 7u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "id,name,skills,company,city,country")?;
    let mut id = 0u64;
    for _ in 0..rows {
        let repeat = id > 0 && next() % 50 == 0; // ~2% repeated ids (the first row wins)
        if !repeat {
            id += 1;
        }
        let person = if repeat { 1 + next() % id } else { id };
        let skills: Vec<String> =
            (0..1 + next() % 5).map(|_| format!("skill {}", (next() % 500) * (next() % 500) / 500)).collect();
        let city = next() % 40;
        writeln!(
            out,
            "p{person},\"Person {person}, \"\"{}\"\"\",{},company {},city {},country {}",
            next() % 1000,
            skills.join(";"),
            next() % 2000,
            city % 5,
            city / 5
        )?;
    }
    out.flush()
}

fn model() -> GraphModel {
    let first = || DedupByKey::new(["id"]);
    let skills = move || -> etlkit_core::Result<Vec<Arc<dyn Transform>>> {
        let explode = Explode::new(ExplodeConfig {
            column: "skills".into(),
            format: ListFormat::Delimited { delimiter: ";".into() },
            element: Some("skill".into()),
            distinct: vec!["skill".into()],
            carry: Some(vec!["id".into()]),
            ..Default::default()
        })?;
        Ok(vec![Arc::new(first()), Arc::new(explode)])
    };
    let rows = move || -> etlkit_core::Result<Vec<Arc<dyn Transform>>> { Ok(vec![Arc::new(first())]) };
    let city_key = || vec![Property::from_column("name", "city"), Property::column("country")];
    let city = NodeSpec { labels: vec!["City".into()], keys: city_key(), properties: vec![] };
    let person = || Endpoint::new("Person", "id", "id");
    let lives_in =
        RelSpec::new("LIVES_IN", person(), Endpoint { labels: vec!["City".into()], keys: city_key() });
    GraphModel {
        entities: vec![
            Pass::node("skills", NodeSpec::new("Skill", Property::from_column("name", "skill"), vec![]))
                .prepare(skills),
            Pass::node(
                "companies",
                NodeSpec::new("Company", Property::from_column("name", "company"), vec![]),
            )
            .prepare(rows),
            Pass::node("cities", city).prepare(rows),
        ],
        main: vec![
            Pass::node(
                "people",
                NodeSpec::new("Person", Property::column("id"), vec![Property::column("name")]),
            )
            .prepare(rows),
        ],
        relationships: vec![
            Pass::rel(
                "has_skill",
                RelSpec::new("HAS_SKILL", person(), Endpoint::new("Skill", "name", "skill")),
            )
            .prepare(skills),
            Pass::rel(
                "works_at",
                RelSpec::new("WORKS_AT", person(), Endpoint::new("Company", "name", "company")),
            )
            .prepare(rows),
            Pass::rel("lives_in", lives_in).prepare(rows),
        ],
    }
}

fn main() -> Result<(), BoxError> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("graph bench: run with `cargo bench --bench graph` (skipped under cargo test)");
        return Ok(());
    }
    let rows = env_list("ETLKIT_GRAPH_ROWS", "100000")[0];
    let batches = env_list("ETLKIT_GRAPH_BATCHES", "5000");
    let workers = env_list("ETLKIT_GRAPH_WORKERS", "1,2");
    let repeat = env_list("ETLKIT_GRAPH_REPEAT", "1")[0].max(1);
    let csv: PathBuf = std::env::temp_dir().join(format!("etlkit-graph-bench-{rows}.csv"));
    if !csv.exists() {
        generate(&csv, rows)?;
    }
    let input = CsvSourceConfig { input: Input::File(csv.clone()), ..Default::default() };
    let server = etlkit_testkit::BoltServer::start()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut table = Vec::new();
    for &batch in &batches {
        for &w in &workers {
            for _ in 0..repeat {
                let db = server.fresh_database()?;
                let config = GraphConfig {
                    uri: db.uri,
                    user: db.user,
                    password: db.password,
                    database: db.name,
                    batch_rows: batch,
                    workers: w,
                    ..Default::default()
                };
                let (t, cpu) = (Instant::now(), cpu_seconds());
                let report = rt.block_on(async {
                    let writer = Arc::new(GraphWriter::connect(config)?);
                    GraphJob::new(writer, model(), csv_input(input.clone())).run(|_| {}).await
                })?;
                let wall = t.elapsed().as_secs_f64();
                let line = format!(
                    "| etlkit | {batch} | {w} | {rows} | {} | {} | {wall:.1} | {:.0} | {:.2} | {} |",
                    report.nodes_created,
                    report.relationships_created,
                    rows as f64 / wall,
                    (cpu_seconds() - cpu) / wall,
                    report.retries
                );
                eprintln!("{line}");
                table.push(line);
            }
        }
    }
    println!(
        "| client | batch | workers | rows | nodes created | rels created | wall s | rows/s | client CPU share | retries |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for line in table {
        println!("{line}");
    }
    Ok(())
}

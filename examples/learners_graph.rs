//! The learners job: a learners CSV into a graph, with the two-phase loader of `etlkit-neo4j`.
//!
//! ```text
//! cargo run --release --example gen_learners -- --rows 10000 --out /tmp/learners.csv
//! cargo run --release --example learners_graph -- --input /tmp/learners.csv \
//!     [--bolt-uri URI] [--user U] [--password P] [--database DB] [--batch-size N] [--workers N]
//!     [--repeat K] [--rel-partition start|end|both|single]
//! ```
//!
//! Defaults: `--batch-size 5000 --workers 1 --rel-partition both` — one writer measured fastest on the
//! ArcadeDB test server on 2 cores (see `docs/benchmarks.md`); on Neo4j 5 try more workers.
//! Without `--bolt-uri` (or `BOLT_URI`) it starts a throwaway ArcadeDB server from `etlkit-testkit`
//! (and says so); `BOLT_USER`, `BOLT_PASSWORD`, `BOLT_DATABASE` fill the other flags. `--repeat K` loads
//! the same input K times into the same database (the second load creates nothing).
//!
//! Prints exactly one line per load, from the server's counters:
//! `learners_graph learners=<N> nodes_created=<n> rels_created=<r> elapsed_s=<S>`
//! (`learners` = distinct learners in the input; progress per phase goes to stderr).
//!
//! Graph: `(:Learner {id, full_name, gender, snapshot_date})`, `(:Skill {name})`, `(:Company {name})`,
//! `(:Program {name})`, `(:Country {name})`, `(:City {id: "<city>|<country>", name})`,
//! `(:LearningState {name})`, `(:ProfessionalStatus {name})`; `HAS_SKILL`, `WORKS_FOR {title,
//! start_date, end_date, is_current}` (one per distinct (company, start_date)), `ENROLLED_IN
//! {start_date, end_date, graduation_date}` (one per distinct (program, start_date)), `LIVES_IN`,
//! `IN_COUNTRY` (city → country), `HAS_LEARNING_STATE` / `HAS_PROFESSIONAL_STATUS` `{validFrom,
//! validTo: null (absent), isCurrent: true}`. Empty strings are absent values. Dates stay
//! `YYYY-MM-DD` strings (checked on input).

#[path = "support/learners_csv.rs"]
mod learners_csv;
use learners_csv::HEADER;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, BooleanArray, RecordBatch, StringArray};
use etlkit_core::{Context, LoadStats};
use etlkit_neo4j::{
    Endpoint, GraphConfig, GraphWriter, LoadPlan, NodeInput, NodeSpec, Property, RelInput, RelPartition,
    RelSpec, TwoPhaseLoader,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(serde::Deserialize)]
struct Job {
    company: String,
    #[serde(default)]
    title: Option<String>,
    start_date: String,
    #[serde(default)]
    end_date: Option<String>,
}

#[derive(serde::Deserialize)]
struct Enrollment {
    program: String,
    start_date: String,
    #[serde(default)]
    end_date: Option<String>,
    #[serde(default)]
    graduation_date: Option<String>,
}

/// A column under construction: optional strings.
#[derive(Default)]
struct Col(Vec<Option<String>>);

impl Col {
    fn push(&mut self, v: &str) {
        self.0.push(if v.is_empty() { None } else { Some(v.to_owned()) });
    }
    fn array(self) -> ArrayRef {
        Arc::new(StringArray::from(self.0))
    }
}

/// The input as flat tables, one per node or relationship kind.
#[derive(Default)]
pub(crate) struct Tables {
    /// Distinct learners.
    pub(crate) learners: usize,
    /// Rows read (duplicates included).
    pub(crate) rows: usize,
    /// Identical duplicate rows skipped.
    pub(crate) duplicates: usize,
    /// Rows whose learner_id was seen before with different content (first one kept).
    pub(crate) conflicting: usize,
    learner: [Col; 4],
    has_skill: [Col; 2],
    works_for: ([Col; 5], Vec<bool>),
    enrolled_in: [Col; 5],
    city: [Col; 3],
    country: [Col; 1],
    lives_in: [Col; 2],
    in_country: [Col; 2],
    state: [Col; 3],
    status: [Col; 3],
}

fn bad(path: &Path, line: u64, column: &str, value: &str, reason: impl std::fmt::Display) -> BoxError {
    format!("{}:{line}: column `{column}`: {reason}: value {value:?}", path.display()).into()
}

fn check_date(path: &Path, line: u64, column: &str, v: &str) -> Result<(), BoxError> {
    let b = v.as_bytes();
    let ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if ok { Ok(()) } else { Err(bad(path, line, column, v, "expected a YYYY-MM-DD date")) }
}

/// Reads and checks the CSV, skipping identical duplicate rows, into flat tables.
pub(crate) fn read_learners(path: &Path) -> Result<Tables, BoxError> {
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let header = rdr.headers().map_err(|e| format!("{}: {e}", path.display()))?.clone();
    let got: Vec<&str> = header.iter().map(|h| h.trim_start_matches('\u{feff}')).collect();
    if got != HEADER {
        return Err(format!(
            "{}:1: header must be `{}`, found `{}`",
            path.display(),
            HEADER.join(","),
            got.join(",")
        )
        .into());
    }
    let mut t = Tables::default();
    let mut seen: HashMap<String, csv::StringRecord> = HashMap::new();
    let (mut cities, mut countries, mut links) = (HashSet::new(), HashSet::new(), HashSet::new());
    let mut rec = csv::StringRecord::new();
    loop {
        let more = rdr.read_record(&mut rec).map_err(|e| format!("{}: {e}", path.display()))?;
        if !more {
            break;
        }
        t.rows += 1;
        let line = rec.position().map_or(0, |p| p.line());
        let f = |i: usize| rec.get(i).unwrap_or("");
        let id = f(0);
        if id.is_empty() {
            return Err(bad(path, line, "learner_id", id, "must not be empty"));
        }
        if let Some(first) = seen.get(id) {
            if first.iter().eq(rec.iter()) {
                t.duplicates += 1;
            } else {
                t.conflicting += 1;
                eprintln!(
                    "warning: {}:{line}: learner_id {id:?} repeats with different content; keeping the first",
                    path.display()
                );
            }
            continue;
        }
        seen.insert(id.to_owned(), rec.clone());
        t.learners += 1;
        let snapshot = f(10);
        check_date(path, line, "snapshot_date", snapshot)?;
        for (c, v) in t.learner.iter_mut().zip([id, f(1), f(2), snapshot]) {
            c.push(v);
        }
        // Skills: `;`-separated, may be empty or repeat.
        let mut skills = HashSet::new();
        for s in f(5).split(';').map(str::trim).filter(|s| !s.is_empty()) {
            if skills.insert(s) {
                t.has_skill[0].push(id);
                t.has_skill[1].push(s);
            }
        }
        // Employment: one WORKS_FOR per distinct (company, start_date).
        if !f(6).trim().is_empty() {
            let jobs: Vec<Job> =
                serde_json::from_str(f(6)).map_err(|e| bad(path, line, "employment", f(6), e))?;
            let mut keys = HashSet::new();
            for j in jobs {
                if j.company.is_empty() {
                    return Err(bad(path, line, "employment", f(6), "a job has an empty company"));
                }
                check_date(path, line, "employment", &j.start_date)?;
                if let Some(e) = &j.end_date {
                    check_date(path, line, "employment", e)?;
                }
                if keys.insert((j.company.clone(), j.start_date.clone())) {
                    let (c, cur) = &mut t.works_for;
                    c[0].push(id);
                    c[1].push(&j.company);
                    c[2].push(j.title.as_deref().unwrap_or(""));
                    c[3].push(&j.start_date);
                    c[4].push(j.end_date.as_deref().unwrap_or(""));
                    cur.push(j.end_date.is_none());
                }
            }
        }
        // Enrollments: one ENROLLED_IN per distinct (program, start_date).
        if !f(7).trim().is_empty() {
            let list: Vec<Enrollment> =
                serde_json::from_str(f(7)).map_err(|e| bad(path, line, "enrollments", f(7), e))?;
            let mut keys = HashSet::new();
            for e in list {
                if e.program.is_empty() {
                    return Err(bad(path, line, "enrollments", f(7), "an enrollment has an empty program"));
                }
                for d in [Some(&e.start_date), e.end_date.as_ref(), e.graduation_date.as_ref()]
                    .into_iter()
                    .flatten()
                {
                    check_date(path, line, "enrollments", d)?;
                }
                if keys.insert((e.program.clone(), e.start_date.clone())) {
                    let c = &mut t.enrolled_in;
                    for (col, v) in c.iter_mut().zip([
                        id,
                        &e.program,
                        &e.start_date,
                        e.end_date.as_deref().unwrap_or(""),
                        e.graduation_date.as_deref().unwrap_or(""),
                    ]) {
                        col.push(v);
                    }
                }
            }
        }
        // Place.
        let (city, country) = (f(3), f(4));
        if !country.is_empty() && countries.insert(country.to_owned()) {
            t.country[0].push(country);
        }
        if !city.is_empty() {
            let city_id = format!("{city}|{country}");
            if cities.insert(city_id.clone()) {
                for (c, v) in t.city.iter_mut().zip([city_id.as_str(), city, country]) {
                    c.push(v);
                }
            }
            t.lives_in[0].push(id);
            t.lives_in[1].push(&city_id);
            if !country.is_empty() && links.insert(city_id.clone()) {
                t.in_country[0].push(&city_id);
                t.in_country[1].push(country);
            }
        }
        for (table, v) in [(&mut t.state, f(8)), (&mut t.status, f(9))] {
            if !v.is_empty() {
                table[0].push(id);
                table[1].push(v);
                table[2].push(snapshot);
            }
        }
    }
    Ok(t)
}

fn batch(cols: Vec<(&str, ArrayRef)>) -> Result<RecordBatch, BoxError> {
    Ok(RecordBatch::try_from_iter(cols)?)
}

fn named<const N: usize>(cols: [Col; N], names: [&str; N]) -> Result<RecordBatch, BoxError> {
    batch(names.into_iter().zip(cols.into_iter().map(Col::array)).collect())
}

fn node(label: &str, key: &str, column: &str, props: &[(&str, &str)]) -> NodeSpec {
    NodeSpec::new(
        label,
        Property::from_column(key, column),
        props.iter().map(|(p, c)| Property::from_column(p, c)).collect(),
    )
}

fn rel(ty: &str, from: Endpoint, to: Endpoint, identity: &[&str], props: &[(&str, &str)]) -> RelSpec {
    let mut r = RelSpec::new(ty, from, to);
    r.identity = identity.iter().map(|c| Property::column(c)).collect();
    r.properties = props.iter().map(|(p, c)| Property::from_column(p, c)).collect();
    r
}

/// The load plan of the learners graph model.
pub(crate) fn plan(t: Tables) -> Result<LoadPlan, BoxError> {
    let learner = || Endpoint::new("Learner", "id", "learner_id");
    let learners = named(t.learner, ["learner_id", "full_name", "gender", "snapshot_date"])?;
    let has_skill = named(t.has_skill, ["learner_id", "skill"])?;
    let (wf, current) = t.works_for;
    let mut works_for: Vec<(&str, ArrayRef)> = ["learner_id", "company", "title", "start_date", "end_date"]
        .into_iter()
        .zip(wf.map(Col::array))
        .collect();
    works_for.push(("is_current", Arc::new(BooleanArray::from(current))));
    let works_for = batch(works_for)?;
    let enrolled =
        named(t.enrolled_in, ["learner_id", "program", "start_date", "end_date", "graduation_date"])?;
    let cities = named(t.city, ["city_id", "city", "country"])?;
    let countries = named(t.country, ["country"])?;
    let lives_in = named(t.lives_in, ["learner_id", "city_id"])?;
    let in_country = named(t.in_country, ["city_id", "country"])?;
    let with_flags = |cols: [Col; 3], name: &str| -> Result<RecordBatch, BoxError> {
        let n = cols[0].0.len();
        let mut v: Vec<(&str, ArrayRef)> =
            ["learner_id", name, "valid_from"].into_iter().zip(cols.map(Col::array)).collect();
        v.push(("is_current", Arc::new(BooleanArray::from(vec![true; n]))));
        batch(v)
    };
    let states = with_flags(t.state, "state")?;
    let statuses = with_flags(t.status, "status")?;
    let flags: &[(&str, &str)] = &[("validFrom", "valid_from"), ("isCurrent", "is_current")];
    let shared = vec![
        NodeInput { spec: node("Skill", "name", "skill", &[]), batches: vec![has_skill.clone()] },
        NodeInput { spec: node("Company", "name", "company", &[]), batches: vec![works_for.clone()] },
        NodeInput { spec: node("Program", "name", "program", &[]), batches: vec![enrolled.clone()] },
        NodeInput { spec: node("Country", "name", "country", &[]), batches: vec![countries] },
        NodeInput { spec: node("City", "id", "city_id", &[("name", "city")]), batches: vec![cities] },
        NodeInput { spec: node("LearningState", "name", "state", &[]), batches: vec![states.clone()] },
        NodeInput {
            spec: node("ProfessionalStatus", "name", "status", &[]),
            batches: vec![statuses.clone()],
        },
    ];
    let main = vec![NodeInput {
        spec: node(
            "Learner",
            "id",
            "learner_id",
            &[("full_name", "full_name"), ("gender", "gender"), ("snapshot_date", "snapshot_date")],
        ),
        batches: vec![learners],
    }];
    let relationships = vec![
        RelInput {
            spec: rel("HAS_SKILL", learner(), Endpoint::new("Skill", "name", "skill"), &[], &[]),
            batches: vec![has_skill],
        },
        RelInput {
            spec: rel(
                "WORKS_FOR",
                learner(),
                Endpoint::new("Company", "name", "company"),
                &["start_date"],
                &[("title", "title"), ("end_date", "end_date"), ("is_current", "is_current")],
            ),
            batches: vec![works_for],
        },
        RelInput {
            spec: rel(
                "ENROLLED_IN",
                learner(),
                Endpoint::new("Program", "name", "program"),
                &["start_date"],
                &[("end_date", "end_date"), ("graduation_date", "graduation_date")],
            ),
            batches: vec![enrolled],
        },
        RelInput {
            spec: rel("LIVES_IN", learner(), Endpoint::new("City", "id", "city_id"), &[], &[]),
            batches: vec![lives_in],
        },
        RelInput {
            spec: rel(
                "IN_COUNTRY",
                Endpoint::new("City", "id", "city_id"),
                Endpoint::new("Country", "name", "country"),
                &[],
                &[],
            ),
            batches: vec![in_country],
        },
        RelInput {
            spec: rel(
                "HAS_LEARNING_STATE",
                learner(),
                Endpoint::new("LearningState", "name", "state"),
                &[],
                flags,
            ),
            batches: vec![states],
        },
        RelInput {
            spec: rel(
                "HAS_PROFESSIONAL_STATUS",
                learner(),
                Endpoint::new("ProfessionalStatus", "name", "status"),
                &[],
                flags,
            ),
            batches: vec![statuses],
        },
    ];
    Ok(LoadPlan { shared, main, relationships })
}

/// What one load did.
pub(crate) struct JobReport {
    /// Distinct learners in the input.
    pub(crate) learners: usize,
    /// Nodes created (server counter).
    pub(crate) nodes_created: u64,
    /// Relationships created (server counter).
    pub(crate) rels_created: u64,
    /// Read + load time.
    pub(crate) elapsed: Duration,
    /// Everything else the loader reported.
    pub(crate) stats: LoadStats,
}

impl JobReport {
    /// The job's one output line.
    pub(crate) fn line(&self) -> String {
        format!(
            "learners_graph learners={} nodes_created={} rels_created={} elapsed_s={:.2}",
            self.learners,
            self.nodes_created,
            self.rels_created,
            self.elapsed.as_secs_f64()
        )
    }
}

/// Reads `input` and loads it through `writer` (schema, shared entities, learners and relationships).
pub(crate) async fn load(
    input: &Path,
    writer: Arc<GraphWriter>,
    partition: RelPartition,
    verbose: bool,
) -> Result<JobReport, BoxError> {
    let t = Instant::now();
    let path = input.to_owned();
    let tables = tokio::task::spawn_blocking(move || read_learners(&path)).await??;
    let learners = tables.learners;
    if verbose {
        eprintln!(
            "read {} rows: {} learners, {} identical duplicates skipped, {} conflicting ({:.2} s)",
            tables.rows,
            learners,
            tables.duplicates,
            tables.conflicting,
            t.elapsed().as_secs_f64()
        );
    }
    let mut plan = plan(tables)?;
    for r in &mut plan.relationships {
        r.spec.partition = partition;
    }
    let before = writer.stats();
    let loader = TwoPhaseLoader::new(writer.clone());
    let stats = loader
        .run(&plan, &Context::default(), |p| {
            if verbose {
                eprintln!(
                    "phase {:?}: rows_in={} rows_written={} elapsed_s={:.2} rows_per_s={:.0} nodes_created={} rels_created={} retries={}",
                    p.phase,
                    p.rows_in,
                    p.rows_written,
                    p.elapsed.as_secs_f64(),
                    p.rows_per_sec,
                    p.stats.counter("nodes_created"),
                    p.stats.counter("relationships_created"),
                    p.stats.retries
                );
            }
        })
        .await?;
    let after = writer.stats();
    Ok(JobReport {
        learners,
        nodes_created: after.counter("nodes_created") - before.counter("nodes_created"),
        rels_created: after.counter("relationships_created") - before.counter("relationships_created"),
        elapsed: t.elapsed(),
        stats,
    })
}

struct Args {
    input: PathBuf,
    uri: Option<String>,
    user: Option<String>,
    password: Option<String>,
    database: Option<String>,
    batch_size: usize,
    workers: usize,
    repeat: usize,
    partition: RelPartition,
}

/// `start`, `end`, `both` or `single` (see `RelPartition`).
pub(crate) fn parse_partition(s: &str) -> Result<RelPartition, BoxError> {
    Ok(match s {
        "start" => RelPartition::StartNode,
        "end" => RelPartition::EndNode,
        "both" => RelPartition::BothEnds,
        "single" => RelPartition::Single,
        other => return Err(format!("--rel-partition: expected start|end|both|single, got {other:?}").into()),
    })
}

fn parse_args() -> Result<Option<Args>, BoxError> {
    let mut a = Args {
        input: PathBuf::new(),
        uri: std::env::var("BOLT_URI").ok().filter(|s| !s.is_empty()),
        user: std::env::var("BOLT_USER").ok(),
        password: std::env::var("BOLT_PASSWORD").ok(),
        database: std::env::var("BOLT_DATABASE").ok(),
        batch_size: 5000,
        workers: 1,
        repeat: 1,
        partition: RelPartition::BothEnds,
    };
    let mut input = None;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--input" => input = Some(PathBuf::from(val()?)),
            "--bolt-uri" => a.uri = Some(val()?),
            "--user" => a.user = Some(val()?),
            "--password" => a.password = Some(val()?),
            "--database" => a.database = Some(val()?),
            "--batch-size" => a.batch_size = val()?.parse()?,
            "--workers" => a.workers = val()?.parse()?,
            "--repeat" => a.repeat = val()?.parse()?,
            "--rel-partition" => a.partition = parse_partition(&val()?)?,
            "-h" | "--help" => {
                println!(
                    "learners_graph --input FILE.csv [--bolt-uri URI] [--user U] [--password P] [--database DB] [--batch-size N] [--workers N] [--repeat K] [--rel-partition start|end|both|single]"
                );
                return Ok(None);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    a.input = input.ok_or("--input FILE.csv is required")?;
    Ok(Some(a))
}

#[allow(dead_code)] // unused when benches/graph.rs includes this file as a module
fn main() -> etlkit_core::Reported {
    run().into()
}

fn run() -> Result<(), BoxError> {
    let Some(args) = parse_args()? else { return Ok(()) };
    // Keep a throwaway server alive until the end of main.
    let mut _server = None;
    let (uri, user, password, database) = match args.uri {
        Some(uri) => (
            uri,
            args.user.unwrap_or_else(|| "neo4j".into()),
            args.password.unwrap_or_default(),
            args.database.unwrap_or_else(|| "neo4j".into()),
        ),
        None => {
            let server = etlkit_testkit::BoltServer::start()?;
            let db = server.fresh_database()?;
            eprintln!(
                "no --bolt-uri or BOLT_URI given: started a throwaway ArcadeDB server (etlkit-testkit) at {}, database {:?}; it is deleted when this program exits",
                db.uri, db.name
            );
            _server = Some(server);
            (db.uri, db.user, db.password, db.name)
        }
    };
    let config = GraphConfig {
        uri,
        user,
        password,
        database,
        batch_rows: args.batch_size,
        workers: args.workers,
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let writer = Arc::new(GraphWriter::connect(config)?);
        for _ in 0..args.repeat.max(1) {
            let report = load(&args.input, writer.clone(), args.partition, true).await?;
            println!("{}", report.line());
            eprintln!(
                "properties_set={} transactions={} retries={} shared rows de-duplicated={}",
                report.stats.counter("properties_set"),
                report.stats.counter("transactions"),
                report.stats.retries,
                report.stats.rows_deduplicated
            );
        }
        Ok::<_, BoxError>(())
    })
}

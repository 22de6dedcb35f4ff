//! The learners job: a learners CSV into a graph, as a thin CLI over the graph job of `etlkit-graph`.
//!
//! ```text
//! cargo run --release --example gen_learners -- --rows 10000 --out /tmp/learners.csv
//! cargo run --release --example learners_graph -- --input /tmp/learners.csv \
//!     [--bolt-uri URI] [--user U] [--password P] [--database DB] [--batch-size N] [--workers N] [--repeat K]
//! ```
//!
//! Defaults: `--batch-size 5000 --workers 1` — one writer measured fastest on the ArcadeDB test
//! server on 2 cores (see `docs/benchmarks.md`); on Neo4j 5 try more workers: with `--workers > 1`
//! relationships are written with node-disjoint colouring (no node in two concurrent transactions).
//! Without `--bolt-uri` (or `BOLT_URI`) it starts a throwaway ArcadeDB server from `etlkit-testkit`
//! (and says so); `BOLT_USER`, `BOLT_PASSWORD`, `BOLT_DATABASE` fill the other flags. `--repeat K` loads
//! the same input K times into the same database (the second load creates nothing).
//!
//! Prints exactly one line per load, from the server's counters of that load:
//! `learners_graph learners=<N> nodes_created=<n> rels_created=<r> elapsed_s=<S>`
//! (`learners` = distinct learners in the input; per-pass progress, and the process's peak RSS
//! `VmHWM` from `/proc/self/status`, go to stderr; with glibc, `MALLOC_ARENA_MAX=1` keeps it about a
//! third lower and flat in the input size, in the same time: see `docs/benchmarks.md`).
//!
//! The CSV is streamed once per pass (`CsvSource`); the first row of each `learner_id` wins (found
//! once, `first_row_per`; repeats de-duplicated, conflicting ones logged). Graph: `(:Learner {id,
//! full_name, gender, snapshot_date})`, `(:Skill {name})`, `(:Company {name})`, `(:Program {name})`,
//! `(:Country {name})`, `(:City {name, country})` (composite key; `country` is `""` when the input has
//! none), `(:LearningState {name})`, `(:ProfessionalStatus {name})`; `HAS_SKILL` (skills
//! `;`-separated), `WORKS_FOR {title, start_date, end_date, is_current}` (one per distinct (company,
//! start_date) of a learner's `employment` JSON list), `ENROLLED_IN {start_date, end_date,
//! graduation_date}` (one per distinct (program, start_date) of `enrollments`), `LIVES_IN`,
//! `IN_COUNTRY` (city → country), `HAS_LEARNING_STATE` / `HAS_PROFESSIONAL_STATUS` `{validFrom,
//! isCurrent: true}`. Empty strings are absent values. Dates stay `YYYY-MM-DD` strings.

#[path = "support/learners_csv.rs"]
mod learners_csv;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::{ArrayRef, BooleanArray, RecordBatch, StringArray, cast::AsArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use etlkit_core::{Context, Transform};
use etlkit_graph::{GraphJob, GraphJobConfig, GraphModel, Pass, csv_input};
use etlkit_neo4j::{Endpoint, GraphConfig, GraphWriter, NodeSpec, Property, RelSpec};
use etlkit_source::{CsvSourceConfig, Input};
use etlkit_transform::{DedupByKey, Explode, ExplodeConfig, ExtractField, ListFormat};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Transforms = etlkit_core::Result<Vec<Arc<dyn Transform>>>;

/// A column computed from each batch: name, type, function.
type Derived = (&'static str, DataType, fn(&RecordBatch) -> ArrayRef);

/// Appends [`Derived`] columns (`is_current`, the city's country key, the state flags).
struct Derive(&'static [Derived]);

impl Transform for Derive {
    fn name(&self) -> &str {
        "derive"
    }
    fn output_schema(&self, input: &SchemaRef) -> etlkit_core::Result<SchemaRef> {
        let new = self.0.iter().map(|(name, dt, _)| Arc::new(Field::new(*name, dt.clone(), true)));
        Ok(Arc::new(Schema::new(input.fields().iter().cloned().chain(new).collect::<Vec<_>>())))
    }
    fn apply(&self, b: RecordBatch, _: &Context) -> etlkit_core::Result<Vec<RecordBatch>> {
        let cols = b.columns().iter().cloned().chain(self.0.iter().map(|(_, _, f)| f(&b))).collect();
        Ok(vec![RecordBatch::try_new(self.output_schema(&b.schema())?, cols)?])
    }
}

fn text(b: &RecordBatch, c: &str) -> StringArray {
    b.column_by_name(c).expect("column").as_string::<i32>().clone()
}
const JOB: &[Derived] = &[("is_current", DataType::Boolean, |b| {
    Arc::new(text(b, "end_date").iter().map(|e| Some(e.is_none())).collect::<BooleanArray>())
})];
const PLACE: &[Derived] = &[("country_key", DataType::Utf8, |b| {
    Arc::new(text(b, "country").iter().map(|c| Some(c.unwrap_or(""))).collect::<StringArray>())
})];
const FLAGS: &[Derived] = &[
    ("validFrom", DataType::Utf8, |b| Arc::new(text(b, "snapshot_date"))),
    ("isCurrent", DataType::Boolean, |b| Arc::new(BooleanArray::from(vec![true; b.num_rows()]))),
];

/// A list column into rows: JSON objects with `fields` (space-separated; the first two required, and
/// identifying an element within a learner), or, without fields, `;`-separated text into `skill`.
fn list(input: &str, column: &str, fields: &str) -> Option<ExplodeConfig> {
    let f: Vec<&str> = fields.split_whitespace().collect();
    let delimited = ListFormat::Delimited { delimiter: ";".into() };
    Some(ExplodeConfig {
        column: column.into(),
        format: if f.is_empty() { delimited } else { ListFormat::Json },
        element: f.is_empty().then(|| "skill".into()),
        fields: f
            .iter()
            .map(|f| ExtractField::text(f, f))
            .enumerate()
            .map(|(i, x)| if i < 2 { x.required() } else { x })
            .collect(),
        distinct: if f.is_empty() { vec!["skill".into()] } else { vec![f[0].into(), f[1].into()] },
        carry: Some(vec!["learner_id".into()]),
        origin: input.into(),
        ..Default::default()
    })
}

/// Transforms of a pass over the first row of each learner (the job's `first_row_per`): `explode` (if
/// any), then `derive`, then a first-arrival `DedupByKey` on `distinct` (if any).
fn learners(
    explode: Option<ExplodeConfig>,
    derive: &'static [Derived],
    distinct: &'static [&'static str],
) -> impl Fn() -> Transforms + Send + Sync + 'static {
    move || {
        let mut t: Vec<Arc<dyn Transform>> = Vec::new();
        if let Some(e) = &explode {
            t.push(Arc::new(Explode::new(e.clone())?));
        }
        t.push(Arc::new(Derive(derive)));
        if !distinct.is_empty() {
            t.push(Arc::new(DedupByKey::new(distinct.iter().copied()).first_arrival()));
        }
        Ok(t)
    }
}

/// Space-separated properties, each named like its column or `name=column`.
fn props(p: &str) -> Vec<Property> {
    p.split_whitespace()
        .map(|p| p.split_once('=').map_or(Property::column(p), |(n, c)| Property::from_column(n, c)))
        .collect()
}
fn node(label: &str, keys: &str, p: &str) -> NodeSpec {
    NodeSpec { labels: vec![label.into()], keys: props(keys), properties: props(p) }
}
/// `"Label key=column ..."`.
fn ep(spec: &str) -> Endpoint {
    let (label, keys) = spec.split_once(' ').unwrap_or((spec, ""));
    Endpoint { labels: vec![label.into()], keys: props(keys) }
}
fn rel(ty: &str, from: &str, to: &str, identity: &str, p: &str) -> Pass {
    let mut r = RelSpec::new(ty, ep(from), ep(to));
    (r.identity, r.properties) = (props(identity), props(p));
    Pass::rel(ty.to_lowercase(), r)
}

/// The learners graph model over the CSV at `input`.
fn model(input: &str) -> GraphModel {
    let skills = || learners(list(input, "skills", ""), &[], &[]);
    let jobs = || learners(list(input, "employment", "company start_date title end_date"), JOB, &[]);
    let courses =
        || learners(list(input, "enrollments", "program start_date end_date graduation_date"), &[], &[]);
    let (rows, places, flagged) =
        (|| learners(None, &[], &[]), || learners(None, PLACE, &[]), || learners(None, FLAGS, &[]));
    let (l, city, flags) =
        ("Learner id=learner_id", "City name=city country=country_key", "validFrom isCurrent");
    let entity = |label: &str, col: &str| {
        Pass::node(col, node(label, &format!("name={col}"), "")).prepare(rows()).optional()
    };
    GraphModel {
        entities: vec![
            Pass::node("skills", node("Skill", "name=skill", "")).prepare(skills()),
            Pass::node("companies", node("Company", "name=company", "")).prepare(jobs()),
            Pass::node("programs", node("Program", "name=program", "")).prepare(courses()),
            entity("Country", "country"),
            Pass::node("cities", node("City", "name=city country=country_key", ""))
                .prepare(places())
                .optional(),
            entity("LearningState", "learning_state"),
            entity("ProfessionalStatus", "professional_status"),
        ],
        main: vec![
            Pass::node("learners", node("Learner", "id=learner_id", "full_name gender snapshot_date"))
                .prepare(rows()),
        ],
        relationships: vec![
            rel("HAS_SKILL", l, "Skill name=skill", "", "").prepare(skills()),
            rel("WORKS_FOR", l, "Company name=company", "start_date", "title end_date is_current")
                .prepare(jobs()),
            rel("ENROLLED_IN", l, "Program name=program", "start_date", "end_date graduation_date")
                .prepare(courses()),
            rel("LIVES_IN", l, city, "", "").prepare(places()).optional(),
            rel("IN_COUNTRY", city, "Country name=country", "", "")
                .prepare(learners(None, PLACE, &["city", "country_key", "country"]))
                .optional(),
            rel("HAS_LEARNING_STATE", l, "LearningState name=learning_state", "", flags)
                .prepare(flagged())
                .optional(),
            rel("HAS_PROFESSIONAL_STATUS", l, "ProfessionalStatus name=professional_status", "", flags)
                .prepare(flagged())
                .optional(),
        ],
    }
}

/// Every column as text; only an empty field is NULL.
fn csv(input: &std::path::Path) -> CsvSourceConfig {
    let fields: Vec<Field> =
        learners_csv::HEADER.iter().map(|h| Field::new(*h, DataType::Utf8, true)).collect();
    CsvSourceConfig {
        input: Input::File(input.to_owned()),
        schema: Some(Arc::new(Schema::new(fields))),
        null_markers: vec![String::new()],
        // One decoding thread per pass: the graph server is the bottleneck, and fewer threads (so
        // fewer allocator arenas) keep the peak RSS flat across the 15 passes.
        batch_size: 4096,
        workers: 1,
        channel_capacity: 2,
        ..Default::default()
    }
}

/// Peak resident set size of this process (`VmHWM`), as `/proc/self/status` says it.
fn peak_rss() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap_or("VmHWM: ?");
    line.trim_start_matches("VmHWM:").trim().to_owned()
}

const USAGE: &str = "learners_graph --input FILE.csv [--bolt-uri URI] [--user U] [--password P] [--database DB] \
     [--batch-size N] [--workers N] [--repeat K]";

/// The input, the repeat count and the writer's settings (`uri` empty: start a throwaway server).
fn parse_args() -> Result<Option<(PathBuf, usize, GraphConfig)>, BoxError> {
    let env = |k: &str| std::env::var(k).ok().filter(|s| !s.is_empty());
    let mut c = GraphConfig {
        uri: env("BOLT_URI").unwrap_or_default(),
        batch_rows: 5000,
        workers: 1,
        ..Default::default()
    };
    (c.user, c.database) = (env("BOLT_USER").unwrap_or(c.user), env("BOLT_DATABASE").unwrap_or(c.database));
    c.password = env("BOLT_PASSWORD").unwrap_or_default();
    let (mut input, mut repeat, mut it) = (PathBuf::new(), 1, std::env::args().skip(1));
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--input" => input = PathBuf::from(val()?),
            "--bolt-uri" => c.uri = val()?,
            "--user" => c.user = val()?,
            "--password" => c.password = val()?,
            "--database" => c.database = val()?,
            "--batch-size" => c.batch_rows = val()?.parse()?,
            "--workers" => c.workers = val()?.parse()?,
            "--repeat" => repeat = val()?.parse()?,
            "-h" | "--help" => return Ok(None).inspect(|_| println!("{USAGE}")),
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    if input.as_os_str().is_empty() {
        return Err("--input FILE.csv is required".into());
    }
    Ok(Some((input, repeat, c)))
}

fn main() -> etlkit_core::Reported {
    run().into()
}

fn run() -> Result<(), BoxError> {
    let Some((input, repeat, mut config)) = parse_args()? else { return Ok(()) };
    // A throwaway server lives until the end of `run`.
    let _server = if config.uri.is_empty() {
        let server = etlkit_testkit::BoltServer::start()?;
        let db = server.fresh_database()?;
        eprintln!(
            "no --bolt-uri or BOLT_URI given: started a throwaway ArcadeDB server (etlkit-testkit) at {}, database {:?}; it is deleted when this program exits",
            db.uri, db.name
        );
        (config.uri, config.user, config.password, config.database) = (db.uri, db.user, db.password, db.name);
        Some(server)
    } else {
        None
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let writer = Arc::new(GraphWriter::connect(config)?);
        let config = GraphJobConfig { first_row_per: vec!["learner_id".into()], ..Default::default() };
        let job =
            GraphJob::new(writer, model(&input.display().to_string()), csv_input(csv(&input))).config(config);
        for _ in 0..repeat.max(1) {
            let t = Instant::now();
            let report = job
                .run(|p| eprintln!("{} pass {}: VmHWM={} {:?}", p.phase, p.name, peak_rss(), p.stats))
                .await?;
            let learners = report.pass("learners").map_or(0, |p| p.stats.rows_written);
            println!(
                "learners_graph learners={learners} nodes_created={} rels_created={} elapsed_s={:.2}",
                report.nodes_created,
                report.relationships_created,
                t.elapsed().as_secs_f64()
            );
            let (retries, rejected) = (report.retries, report.rows_rejected);
            eprintln!("retries={retries} rejected={rejected} peak_rss(VmHWM)={}", peak_rss());
        }
        Ok::<_, BoxError>(())
    })
}

//! Real-server tests of the graph job (ArcadeDB from the testkit, or `BOLT_URI`): messy CSV input
//! through Explode and DedupByKey, composite keys, node-disjoint parallel relationship writes, a
//! re-run creating nothing, and a malformed list named by file, row, column and value.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex};

use etlkit_core::{MemoryRejects, Transform};
use etlkit_graph::{GraphJob, GraphJobConfig, GraphJobError, GraphModel, Pass, csv_input};
use etlkit_neo4j::{
    Endpoint, GraphConfig, GraphWriter, NodeKey, NodeSpec, Property, RelSpec, TxnInfo, TxnObserver,
};
use etlkit_source::{CsvSourceConfig, Input};
use etlkit_testkit::BoltServer;
use etlkit_transform::{DedupByKey, Explode, ExplodeConfig, ExtractField, ListFormat, TransformError};

static SERVER: LazyLock<Arc<BoltServer>> = LazyLock::new(|| BoltServer::start().expect("bolt server"));

fn graph_config(workers: usize) -> GraphConfig {
    let db = SERVER.fresh_database().expect("fresh database");
    GraphConfig {
        uri: db.uri,
        user: db.user,
        password: db.password,
        database: db.name,
        workers,
        batch_rows: 3,
        ..Default::default()
    }
}

/// Records every transaction's node keys while it runs and notes any node found in two concurrent
/// transactions.
#[derive(Default)]
struct Disjoint {
    in_flight: Mutex<HashMap<NodeKey, u64>>,
    violations: Mutex<Vec<String>>,
    overlapping: Mutex<(u64, u64)>, // (transactions begun while another ran, total)
}

impl TxnObserver for Disjoint {
    fn begin(&self, txn: &TxnInfo<'_>) {
        let mut live = self.in_flight.lock().unwrap();
        let mut o = self.overlapping.lock().unwrap();
        o.1 += 1;
        if !live.is_empty() {
            o.0 += 1;
        }
        for n in txn.nodes {
            if let Some(other) = live.insert(n.clone(), txn.id) {
                self.violations
                    .lock()
                    .unwrap()
                    .push(format!("{n:?} in {} ({}) and {other}", txn.id, txn.spec));
            }
        }
    }
    fn end(&self, txn: &TxnInfo<'_>) {
        let mut live = self.in_flight.lock().unwrap();
        for n in txn.nodes {
            live.remove(n);
        }
    }
}

const MESSY: &str = "\
id,name,city,country,skills,jobs,friend
p1,Ann,A|B,C,Rust; SQL;Rust,\"[{\"\"company\"\":\"\"Acme\"\",\"\"title\"\":\"\"Dev\"\"},{\"\"company\"\":\"\"Acme\"\"}]\",p2
p2,Bob,A,B|C,SQL,[],p1
p1,Ann,A|B,C,Rust; SQL;Rust,\"[{\"\"company\"\":\"\"Acme\"\",\"\"title\"\":\"\"Dev\"\"},{\"\"company\"\":\"\"Acme\"\"}]\",p2
p3,\"Cy, \"\"the\"\"\nsecond\",,,,,p3
p2,Robert,Elsewhere,Nowhere,Go,\"[{\"\"company\"\":\"\"Globex\"\"}]\",p3
p4,Di,A,B|C,Go;Rust,\"[{\"\"company\"\":\"\"Initech\"\"},{\"\"company\"\":\"\"Acme\"\"}]\",p1
p5,Ed,A|B,C,,,p4
p6,Flo,Z,Y,x1;x2;x3;x4;x5;x6,,p5
";

fn people() -> NodeSpec {
    NodeSpec::new("Person", Property::column("id"), vec![Property::column("name")])
}

fn city_key() -> Vec<Property> {
    vec![Property::from_column("name", "city"), Property::column("country")]
}

type Transforms = etlkit_core::Result<Vec<Arc<dyn Transform>>>;

fn by_person() -> Arc<dyn Transform> {
    Arc::new(DedupByKey::new(["id"]))
}

fn skills(path: &Path) -> impl Fn() -> Transforms + Send + Sync + 'static + Clone {
    let origin = path.display().to_string();
    move || {
        Ok(vec![
            by_person(),
            Arc::new(Explode::new(ExplodeConfig {
                column: "skills".into(),
                format: ListFormat::Delimited { delimiter: ";".into() },
                element: Some("skill".into()),
                distinct: vec!["skill".into()],
                origin: origin.clone(),
                ..Default::default()
            })?),
        ])
    }
}

fn jobs(path: &Path) -> impl Fn() -> Transforms + Send + Sync + 'static + Clone {
    let origin = path.display().to_string();
    move || {
        Ok(vec![
            by_person(),
            Arc::new(Explode::new(ExplodeConfig {
                column: "jobs".into(),
                fields: vec![
                    ExtractField::text("company", "company").required(),
                    ExtractField::text("title", "title"),
                ],
                distinct: vec!["company".into()],
                origin: origin.clone(),
                ..Default::default()
            })?),
        ])
    }
}

fn model(path: &Path) -> GraphModel {
    let city = NodeSpec { labels: vec!["City".into()], keys: city_key(), properties: vec![] };
    let person = || Endpoint::new("Person", "id", "id");
    let mut lives_in =
        RelSpec::new("LIVES_IN", person(), Endpoint { labels: vec!["City".into()], keys: city_key() });
    lives_in.properties = vec![];
    let mut works_for = RelSpec::new("WORKS_FOR", person(), Endpoint::new("Company", "name", "company"));
    works_for.properties = vec![Property::column("title")];
    GraphModel {
        entities: vec![
            Pass::node("skills", NodeSpec::new("Skill", Property::from_column("name", "skill"), vec![]))
                .prepare(skills(path)),
            Pass::node(
                "companies",
                NodeSpec::new("Company", Property::from_column("name", "company"), vec![]),
            )
            .prepare(jobs(path)),
            Pass::node("cities", city).prepare(|| Ok(vec![by_person()])).optional(),
        ],
        main: vec![Pass::node("people", people()).prepare(|| Ok(vec![by_person()]))],
        relationships: vec![
            Pass::rel(
                "has_skill",
                RelSpec::new("HAS_SKILL", person(), Endpoint::new("Skill", "name", "skill")),
            )
            .prepare(skills(path)),
            Pass::rel("works_for", works_for).prepare(jobs(path)),
            Pass::rel("lives_in", lives_in).prepare(|| Ok(vec![by_person()])).optional(),
            Pass::rel("knows", RelSpec::new("KNOWS", person(), Endpoint::new("Person", "id", "friend")))
                .prepare(|| Ok(vec![by_person()])),
        ],
    }
}

fn csv(path: &Path) -> CsvSourceConfig {
    CsvSourceConfig {
        input: Input::File(path.to_owned()),
        batch_size: 2,
        workers: 1,
        channel_capacity: 2,
        ..Default::default()
    }
}

async fn count(w: &GraphWriter, q: &str) -> i64 {
    w.count(q).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messy_csv_loads_exactly_with_disjoint_parallel_writes_and_a_rerun_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("people.csv");
    std::fs::write(&path, MESSY).unwrap();
    let observer = Arc::new(Disjoint::default());
    let writer = Arc::new(GraphWriter::connect(graph_config(3)).unwrap().with_observer(observer.clone()));
    let job = GraphJob::new(writer.clone(), model(&path), csv_input(csv(&path)))
        .config(GraphJobConfig { batch_size: 4, ..Default::default() });

    let first = job.run(|_| {}).await.unwrap();
    let w = &*writer;
    // p1 repeats identically, p2 with different values (conflict): the first rows win.
    assert_eq!(count(w, "MATCH (p:Person) RETURN count(p)").await, 6);
    let bob = w.query_rows("MATCH (p:Person {id: 'p2'}) RETURN p.name AS n").await.unwrap();
    assert_eq!(bob[0].get::<String>("n").unwrap(), "Bob");
    let cy = w.query_rows("MATCH (p:Person {id: 'p3'}) RETURN p.name AS n").await.unwrap();
    assert_eq!(cy[0].get::<String>("n").unwrap(), "Cy, \"the\"\nsecond");
    // Composite keys: ("A|B", "C") and ("A", "B|C") are two cities, shared by p1/p5 and p2/p4.
    assert_eq!(count(w, "MATCH (c:City) RETURN count(c)").await, 3);
    assert_eq!(
        count(w, "MATCH (:Person)-[r:LIVES_IN]->(c:City {name: 'A|B', country: 'C'}) RETURN count(r)").await,
        2
    );
    assert_eq!(
        count(w, "MATCH (:Person)-[r:LIVES_IN]->(c:City {name: 'A', country: 'B|C'}) RETURN count(r)").await,
        2
    );
    assert_eq!(
        count(w, "MATCH (c:City {name: 'Elsewhere'}) RETURN count(c)").await,
        0,
        "conflicting row dropped"
    );
    // Skills: trimmed, repeats within a row dropped; Go only from p4 (p2's second row is dropped).
    assert_eq!(count(w, "MATCH (s:Skill) RETURN count(s)").await, 9);
    assert_eq!(count(w, "MATCH (:Person)-[r:HAS_SKILL]->(:Skill) RETURN count(r)").await, 3 + 2 + 6);
    assert_eq!(count(w, "MATCH (:Person {id: 'p1'})-[r:HAS_SKILL]->(:Skill) RETURN count(r)").await, 2);
    // Jobs: JSON objects exploded, the repeated Acme of p1 dropped, Globex never loaded.
    assert_eq!(count(w, "MATCH (c:Company) RETURN count(c)").await, 2);
    assert_eq!(count(w, "MATCH (:Person)-[r:WORKS_FOR]->(:Company) RETURN count(r)").await, 3);
    let title = w
        .query_rows("MATCH (:Person {id: 'p1'})-[r:WORKS_FOR]->(:Company {name: 'Acme'}) RETURN r.title AS t")
        .await
        .unwrap();
    assert_eq!(title[0].get::<String>("t").unwrap(), "Dev");
    // A monopartite relationship (both ends Person), self-loop included.
    assert_eq!(count(w, "MATCH (:Person)-[r:KNOWS]->(:Person) RETURN count(r)").await, 6);

    assert_eq!(first.nodes_created, 6 + 3 + 9 + 2);
    assert_eq!(first.relationships_created, 5 + 11 + 3 + 6);
    assert_eq!(first.pass("people").unwrap().stats.rows_deduplicated, 2);
    assert_eq!(first.pass("skills").unwrap().stats.rows_written, 9, "distinct skills written once");
    assert!(first.passes.iter().all(|p| p.stats.rows_read == 8), "every pass streams the 8 rows");
    // Every row of every pass is accounted for, exploded lists (rows added) included.
    for p in &first.passes {
        let s = &p.stats;
        assert_eq!(
            s.rows_read + s.rows_added,
            s.rows_written + s.rows_rejected + s.rows_deduplicated + s.rows_filtered,
            "pass {}: {s:?}",
            p.name
        );
    }
    assert!(first.passes.iter().any(|p| p.stats.rows_added > 0), "no pass exploded a list");

    // No node was ever in two concurrent transactions, although transactions did overlap.
    assert!(observer.violations.lock().unwrap().is_empty(), "{:?}", observer.violations.lock().unwrap());
    let (overlapping, total) = *observer.overlapping.lock().unwrap();
    assert!(overlapping > 0, "no concurrent transactions in {total}: the check proved nothing");

    // A re-run creates nothing, and its report counts only its own work.
    let again = job.run(|_| {}).await.unwrap();
    assert_eq!((again.nodes_created, again.relationships_created), (0, 0), "{again:?}");
    assert!(again.transactions > 0);
    assert_eq!(count(w, "MATCH (n) RETURN count(n)").await, 20);
    assert_eq!(count(w, "MATCH ()-[r]->() RETURN count(r)").await, 25);
    assert!(observer.violations.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_json_list_names_file_row_column_and_value_or_is_rejected_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    std::fs::write(&path, "id,name,city,country,skills,jobs,friend\np1,\"Ann\nOn two lines\",,,,[],p1\np2,Bob,,,,\"[{\"\"company\"\": \"\"Acme\"\"\",p2\n").unwrap();
    let writer = Arc::new(GraphWriter::connect(graph_config(1)).unwrap());
    let job = GraphJob::new(writer.clone(), model(&path), csv_input(csv(&path)));
    let err = job.run(|_| {}).await.unwrap_err();
    assert!(matches!(err, GraphJobError::Pass { ref pass, .. } if pass == "companies"), "{err:?}");
    let core: etlkit_core::Error = err.into();
    let Some(TransformError::Malformed { origin, line, column, value, .. }) =
        core.find_source::<TransformError>()
    else {
        panic!("{core:?}")
    };
    assert_eq!(
        (origin.as_str(), *line, column.as_str(), value.as_str()),
        (path.to_str().unwrap(), Some(4), "jobs", "[{\"company\": \"Acme\"")
    );
    let text = core.report().to_string();
    assert!(text.contains(&format!("{}:4", path.display())) && text.contains("`jobs`"), "{text}");

    // Under the reject policy the row is rejected once (not once per pass) and the rest loads.
    let rejects = Arc::new(MemoryRejects::new());
    let mut m = model(&path);
    let origin = path.display().to_string();
    let lenient = move || -> Transforms {
        Ok(vec![
            by_person(),
            Arc::new(Explode::new(ExplodeConfig {
                column: "jobs".into(),
                fields: vec![
                    ExtractField::text("company", "company").required(),
                    ExtractField::text("title", "title"),
                ],
                on_error: etlkit_transform::OnBadList::Reject,
                origin: origin.clone(),
                ..Default::default()
            })?),
        ])
    };
    m.entities[1] = m.entities[1].clone().prepare(lenient.clone());
    m.relationships[1] = m.relationships[1].clone().prepare(lenient);
    let report = GraphJob::new(writer.clone(), m, csv_input(csv(&path)))
        .rejects(rejects.clone())
        .run(|_| {})
        .await
        .unwrap();
    assert_eq!(report.rows_rejected, 1);
    let r = rejects.rows();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!((r[0].line, r[0].column.as_deref()), (Some(4), Some("jobs")));
    assert_eq!(count(&writer, "MATCH (p:Person) RETURN count(p)").await, 2);
    assert_eq!(count(&writer, "MATCH ()-[r:WORKS_FOR]->() RETURN count(r)").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_row_per_record_is_found_once_and_every_pass_reads_only_those_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("people.csv");
    std::fs::write(&path, MESSY).unwrap();
    let writer = Arc::new(GraphWriter::connect(graph_config(2)).unwrap());
    // No DedupByKey in any pass: the job's first-rows pre-pass does it once for all.
    let city = NodeSpec { labels: vec!["City".into()], keys: city_key(), properties: vec![] };
    let person = || Endpoint::new("Person", "id", "id");
    let model = GraphModel {
        entities: vec![Pass::node("cities", city).optional()],
        main: vec![Pass::node("people", people())],
        relationships: vec![
            Pass::rel("knows", RelSpec::new("KNOWS", person(), Endpoint::new("Person", "id", "friend"))),
            Pass::rel(
                "lives_in",
                RelSpec::new(
                    "LIVES_IN",
                    person(),
                    Endpoint { labels: vec!["City".into()], keys: city_key() },
                ),
            )
            .optional(),
        ],
    };
    let config = GraphJobConfig { batch_size: 3, first_row_per: vec!["id".into()], ..Default::default() };
    let job = GraphJob::new(writer.clone(), model, csv_input(csv(&path))).config(config);
    let report = job.run(|_| {}).await.unwrap();
    let w = &*writer;
    assert_eq!(report.passes[0].name, "first_rows");
    assert_eq!(report.passes[0].stats.rows_deduplicated, 2, "p1 repeated, p2 conflicting");
    assert_eq!(report.pass("people").unwrap().stats.rows_deduplicated, 2);
    assert_eq!(report.pass("people").unwrap().stats.rows_written, 6);
    assert_eq!(count(w, "MATCH (p:Person) RETURN count(p)").await, 6);
    let bob = w.query_rows("MATCH (p:Person {id: 'p2'}) RETURN p.name AS n").await.unwrap();
    assert_eq!(bob[0].get::<String>("n").unwrap(), "Bob");
    assert_eq!(count(w, "MATCH (c:City) RETURN count(c)").await, 3, "the conflicting row's city is skipped");
    assert_eq!(count(w, "MATCH (:Person)-[r:KNOWS]->(:Person) RETURN count(r)").await, 6);
    assert_eq!(count(w, "MATCH (:Person)-[r:LIVES_IN]->(:City) RETURN count(r)").await, 5);
    assert_eq!((report.nodes_created, report.relationships_created), (9, 11));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_row_per_refuses_a_source_that_reads_other_rows_the_next_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = dir.path().join("first.csv");
    std::fs::write(&first, MESSY).unwrap();
    // The same rows, p4 and p5 in each other's place; and the same rows and one more.
    let swapped = dir.path().join("swapped.csv");
    let (p4, p5) = ("p4,Di,A,B|C,Go;Rust,", "p5,Ed,A|B,C,,,p4\n");
    let at4 = MESSY.find(p4).unwrap();
    let line4 = &MESSY[at4..at4 + MESSY[at4..].find('\n').unwrap() + 1];
    std::fs::write(&swapped, MESSY.replacen(line4, "@", 1).replacen(p5, line4, 1).replacen('@', p5, 1))
        .unwrap();
    let longer = dir.path().join("longer.csv");
    std::fs::write(&longer, format!("{MESSY}p7,Gus,A,B,,,p6\n")).unwrap();
    for (again, why) in [(swapped, "has another key"), (longer, "was not in the first-rows pass")] {
        let opens = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (a, b) = (csv_input(csv(&first)), csv_input(csv(&again)));
        let source = move || match opens.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => a(),
            _ => b(),
        };
        let writer = Arc::new(GraphWriter::connect(graph_config(1)).unwrap());
        let model = GraphModel {
            entities: vec![],
            main: vec![Pass::node("people", people())],
            relationships: vec![],
        };
        let config =
            GraphJobConfig { batch_size: 100, first_row_per: vec!["id".into()], ..Default::default() };
        let err = GraphJob::new(writer, model, source).config(config).run(|_| {}).await.unwrap_err();
        let msg = etlkit_core::Report::of(&err).to_string();
        assert!(msg.contains(why) && msg.contains("same order every time"), "{msg}");
    }
}

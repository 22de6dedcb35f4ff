//! # etlkit-graph
//!
//! The graph job: loads a graph from **any** [`Source`](etlkit_core::Source) into a Neo4j-compatible
//! server, streaming with bounded memory, in phases — 0 constraints, 1 shared entities de-duplicated
//! by key, 2 main nodes, 3 relationships. Each pass is an etlkit [`Pipeline`](etlkit_core::Pipeline)
//! (source → transforms → `etlkit_neo4j::GraphSink`), re-opening the source through a factory
//! closure. Relationship writes with several writer workers use node-disjoint batch colouring
//! ([`etlkit_neo4j::colour_rounds`]), so no node is in two concurrent transactions.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use etlkit_graph::{GraphJob, GraphModel, Pass, csv_input};
//! use etlkit_neo4j::{Endpoint, GraphConfig, GraphWriter, NodeSpec, Property, RelSpec};
//! use etlkit_source::{CsvSourceConfig, Input};
//! use etlkit_transform::{DedupByKey, Explode, ExplodeConfig, ListFormat};
//!
//! let writer = Arc::new(GraphWriter::connect(GraphConfig { uri: "bolt://127.0.0.1:7687".into(), ..Default::default() })?);
//! let skills = || -> etlkit_core::Result<Vec<Arc<dyn etlkit_core::Transform>>> {
//!     Ok(vec![
//!         Arc::new(DedupByKey::new(["id"])),
//!         Arc::new(Explode::new(ExplodeConfig {
//!             column: "skills".into(),
//!             format: ListFormat::Delimited { delimiter: ";".into() },
//!             element: Some("skill".into()),
//!             ..Default::default()
//!         })?),
//!     ])
//! };
//! let model = GraphModel {
//!     entities: vec![Pass::node("skills", NodeSpec::new("Skill", Property::from_column("name", "skill"), vec![])).prepare(skills)],
//!     main: vec![Pass::node("people", NodeSpec::new("Person", Property::column("id"), vec![Property::column("name")]))
//!         .prepare(|| Ok(vec![Arc::new(DedupByKey::new(["id"])) as _]))],
//!     relationships: vec![Pass::rel(
//!         "has_skill",
//!         RelSpec::new("HAS_SKILL", Endpoint::new("Person", "id", "id"), Endpoint::new("Skill", "name", "skill")),
//!     )
//!     .prepare(skills)],
//! };
//! let input = csv_input(CsvSourceConfig { input: Input::parse("people.csv"), ..Default::default() });
//! let report = GraphJob::new(writer, model, input).run(|pass| println!("{pass:?}")).await?;
//! println!("{} nodes, {} relationships created", report.nodes_created, report.relationships_created);
//! # Ok(()) }
//! ```

mod error;
mod job;

use std::sync::Arc;

pub use error::{GraphJobError, Result};
pub use job::{
    GraphJob, GraphJobConfig, GraphModel, GraphReport, Pass, PassReport, Phase, SourceFactory,
    TransformFactory,
};

/// A source factory over CSV files: each call opens a new [`CsvSource`](etlkit_source::CsvSource)
/// for `config` (the files are listed, and the schema inferred unless given, at each opening).
pub fn csv_input(
    config: etlkit_source::CsvSourceConfig,
) -> impl Fn() -> etlkit_core::Result<Box<dyn etlkit_core::Source>> + Send + Sync + 'static {
    let config = Arc::new(config);
    move || Ok(Box::new(etlkit_source::CsvSource::open((*config).clone())?) as Box<dyn etlkit_core::Source>)
}

/// A source factory over Parquet files (see [`csv_input`]).
pub fn parquet_input(
    config: etlkit_source::ParquetSourceConfig,
) -> impl Fn() -> etlkit_core::Result<Box<dyn etlkit_core::Source>> + Send + Sync + 'static {
    let config = Arc::new(config);
    move || {
        Ok(Box::new(etlkit_source::ParquetSource::open((*config).clone())?) as Box<dyn etlkit_core::Source>)
    }
}

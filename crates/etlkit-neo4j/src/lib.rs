//! # etlkit-neo4j
//!
//! Loads Arrow batches into Neo4j-compatible graph servers over Bolt (neo4rs, Bolt 4.4): declarative
//! node and relationship mappings, written as batched, parameterized `UNWIND` transactions, schema
//! first, with safe parallelism and retries.
//!
//! - [`NodeSpec`] / [`RelSpec`] map columns to one node kind (one fixed label set, merged on its key)
//!   or one relationship kind (`MERGE` or `CREATE` between two existing nodes). The Cypher is generated
//!   ([`NodeSpec::merge_cypher`], [`RelSpec::write_cypher`]); labels, types and property names are
//!   validated and backtick-escaped; values only travel as the `$rows` parameter, each row a
//!   positional list (no repeated key strings on the wire).
//! - [`GraphWriter`] runs them: `batch_rows` rows and at most `max_message_bytes` per transaction, one
//!   explicit transaction per batch with the commit checked, whole-batch retries with exponential
//!   back-off and jitter on `Neo.TransientError.*` only, `workers` concurrent transactions over key
//!   partitions so no node key is in two concurrent transactions (relationships: by start node, end
//!   node, both — node-disjoint batch colouring, [`colour_rounds`] — or one writer), and
//!   the server's counters (`nodes_created`, `relationships_created`, `properties_set`) plus `retries`
//!   in [`LoadStats`].
//! - [`GraphSink`] is the [`etlkit_core::Sink`] for pipelines; [`TwoPhaseLoader`] loads a whole input
//!   as schema → distinct shared entities → main entities and relationships.
//!
//! What this guarantees on Neo4j 5 and what differs on the ArcadeDB test server: `docs/graph-sink.md`.
//!
//! ```
//! use etlkit_neo4j::{Endpoint, NodeSpec, Property, RelSpec};
//!
//! let learner = NodeSpec::new("Learner", Property::from_column("id", "learner_id"), vec![Property::column("full_name")]);
//! assert_eq!(
//!     learner.merge_cypher(),
//!     "UNWIND $rows AS r MERGE (n:`Learner` {`id`: r[0]}) SET n.`full_name` = r[1]"
//! );
//! let has_skill = RelSpec::new(
//!     "HAS_SKILL",
//!     Endpoint::new("Learner", "id", "learner_id"),
//!     Endpoint::new("Skill", "name", "skill"),
//! );
//! assert!(has_skill.write_cypher().contains("MERGE (a)-[x:`HAS_SKILL`]->(b)"));
//! ```
//!
//! Writing needs a server (see the crate tests, `examples/learners_graph.rs`):
//!
//! ```no_run
//! # async fn demo(batch: arrow_array::RecordBatch) -> etlkit_neo4j::Result<()> {
//! use etlkit_neo4j::{GraphConfig, GraphWriter, NodeSpec, Property};
//! let writer = GraphWriter::connect(GraphConfig {
//!     uri: "bolt://127.0.0.1:7687".into(),
//!     password: "secret".into(),
//!     database: "neo4j".into(),
//!     batch_rows: 5000,
//!     workers: 4,
//!     ..Default::default()
//! })?;
//! let skill = NodeSpec::new("Skill", Property::from_column("name", "skill"), vec![]);
//! writer.create_schema(std::slice::from_ref(&skill)).await?;
//! writer.write_nodes(&skill, &batch, &etlkit_core::Context::default()).await?;
//! println!("{:?}", writer.stats().counters);
//!
//! // Read it back: no Bolt driver dependency needed (neo4rs is re-exported as `etlkit_neo4j::neo4rs`).
//! let skills = writer.count("MATCH (s:Skill) RETURN count(s)").await?;
//! let rust = etlkit_neo4j::neo4rs::query("MATCH (s:Skill {name: $n}) RETURN s.name AS name").param("n", "Rust");
//! for row in writer.query_rows(rust).await? {
//!     println!("{skills} skills, found {}", row.get::<String>("name").unwrap_or_default());
//! }
//! # Ok(()) }
//! ```

mod colour;
mod config;
mod error;
mod loader;
mod sink;
mod spec;
mod value;
mod writer;

pub use colour::{NodeKey, TxnInfo, TxnObserver, colour_rounds};
pub use config::{GraphConfig, NullKeyPolicy};
pub use error::{GraphError, MissingNode, Result, is_transient_code};
pub use etlkit_core::LoadStats;
pub use loader::{LoadPlan, NodeInput, Phase, PhaseReport, RelInput, TwoPhaseLoader};
pub use sink::GraphSink;
pub use spec::{
    Endpoint, GraphMapping, NodeSpec, Property, RelMode, RelPartition, RelSpec, check_identifier,
    escape_identifier,
};
pub use value::is_supported;
pub use writer::GraphWriter;

/// The Bolt driver this crate uses (neo4rs `=0.9.0-rc.11`, Bolt 4.4), re-exported so that reading
/// the graph back ([`GraphWriter::query_rows`], [`GraphWriter::graph`]) needs no dependency but
/// etlkit: `etlkit_neo4j::neo4rs::query(...)` (through the facade: `etlkit::neo4j::neo4rs`).
pub use neo4rs;

//! # etlkit-neo4j
//!
//! A graph sink for Neo4j-compatible servers: declarative node and relationship mappings loaded with
//! batched `UNWIND` over Bolt (neo4rs). (The sink arrives with issue 7; this crate currently exposes
//! nothing.)

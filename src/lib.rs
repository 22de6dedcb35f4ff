//! # etlkit
//!
//! Embeddable ETL that is fast because it is columnar and honest about its knobs: read CSV, Parquet or
//! PostgreSQL, fingerprint rows, resolve star-schema keys, and bulk-load into PostgreSQL (binary COPY)
//! or Neo4j-compatible graph servers (batched `UNWIND` over Bolt).
//!
//! This facade re-exports the workspace crates behind cargo features:
//!
//! | feature | crate | default |
//! |---|---|---|
//! | (always) | [`core`] — traits, pipeline runtime, config, stats, errors | yes |
//! | `csv`, `parquet` | `source` — streaming readers | yes |
//! | `hash` | `hash` — row fingerprints and de-duplication | yes |
//! | `postgres` | `postgres` — COPY sink, upsert, source, replication | yes |
//! | `dimcache` | `dimcache` — dimension key cache | no |
//! | `neo4j` | `neo4j` — graph sink | no |
//!
//! The most used core items are also at the top level: [`Pipeline`], [`PipelineConfig`], [`Source`],
//! [`Transform`], [`Sink`], [`LoadStats`], [`Error`].

pub use etlkit_core as core;
pub use etlkit_core::{
    Context, Error, LoadStats, MemorySink, MemorySource, NullSink, Pipeline, PipelineConfig, Progress, Sink,
    Source, Transform,
};

#[cfg(feature = "dimcache")]
pub use etlkit_dimcache as dimcache;
#[cfg(feature = "hash")]
pub use etlkit_hash as hash;
#[cfg(feature = "neo4j")]
pub use etlkit_neo4j as neo4j;
#[cfg(feature = "postgres")]
pub use etlkit_postgres as postgres;
#[cfg(any(feature = "csv", feature = "parquet"))]
pub use etlkit_source as source;

/// The README's code blocks, compiled and run as doctests so the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

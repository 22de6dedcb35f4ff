//! [`GraphSink`]: the [`Sink`] that writes each batch through a [`GraphMapping`].

use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use etlkit_core::{Context, LoadStats, Sink};

use crate::config::{GraphConfig, NullKeyPolicy};
use crate::error::{GraphError, Result};
use crate::spec::GraphMapping;
use crate::value::is_supported;
use crate::writer::{Counters, GraphWriter, drop_rows, null_key_reject, null_rows};

/// A [`Sink`] writing every batch as nodes then relationships, per a [`GraphMapping`].
///
/// - `start` validates the mapping against the schema (columns present, types sendable) and creates
///   the uniqueness constraint of every node key (idempotent) before any data.
/// - `write` first finds rows with a NULL in any key column of any spec (node keys, relationship
///   endpoint keys and identity properties): with [`NullKeyPolicy::Fail`] the write fails naming the
///   first; with [`NullKeyPolicy::Reject`] each such row goes once to [`Context::reject`] and nothing of
///   it is written. The remaining rows are written spec by spec (all nodes, then relationships) with the
///   [`GraphWriter`]'s batching, partitioning and retries.
/// - Durability: when `write` returns `Ok`, everything of that batch is committed (in one or more
///   transactions). `finish` commits nothing more and returns the counters; `abort` has nothing to
///   roll back (an interrupted `write` leaves its committed transactions; re-running is safe in
///   `MERGE` mode).
/// - Counters: `finish` returns this run's counters only (`nodes_created`, `relationships_created`,
///   `properties_set`, `transactions`, `rows_sent`, `max_transaction_rows`, `retries`): those of the
///   transactions this sink committed since `start` (or since it was created, if `start` was never
///   called). Other sinks, loaders or direct calls sharing the [`GraphWriter`] are not counted; the
///   writer's own [`stats`](GraphWriter::stats) are its lifetime totals.
/// - Concurrency: `write` may run on several tasks at once; partition locks keep every node key in at
///   most one transaction at a time.
#[derive(Debug)]
pub struct GraphSink {
    writer: Arc<GraphWriter>,
    mapping: GraphMapping,
    /// This run's counters (reset by `start`).
    run: Counters,
}

impl GraphSink {
    /// A sink on a new [`GraphWriter`] for `config`.
    pub fn connect(config: GraphConfig, mapping: GraphMapping) -> Result<Self> {
        mapping.validate()?;
        Ok(GraphSink { writer: Arc::new(GraphWriter::connect(config)?), mapping, run: Counters::default() })
    }

    /// A sink sharing an existing writer (its pool, partition locks and lifetime counters; the sink
    /// still reports only its own run's counters).
    pub fn new(writer: Arc<GraphWriter>, mapping: GraphMapping) -> Result<Self> {
        mapping.validate()?;
        Ok(GraphSink { writer, mapping, run: Counters::default() })
    }

    /// The writer (for its lifetime [`stats`](GraphWriter::stats) or its pool).
    pub fn writer(&self) -> &Arc<GraphWriter> {
        &self.writer
    }

    fn check_schema(&self, schema: &SchemaRef) -> Result<()> {
        let specs = self
            .mapping
            .nodes
            .iter()
            .map(|n| (n.name(), n.columns()))
            .chain(self.mapping.relationships.iter().map(|r| (r.name(), r.columns())));
        for (spec, cols) in specs {
            for c in cols {
                let Ok(field) = schema.field_with_name(c) else {
                    let available =
                        schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ");
                    return Err(GraphError::MissingColumn { spec, column: c.to_owned(), available });
                };
                if !is_supported(field.data_type()) {
                    return Err(GraphError::UnsupportedType {
                        spec,
                        column: c.to_owned(),
                        data_type: field.data_type().to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    async fn write_batch(&self, batch: RecordBatch, ctx: &Context) -> Result<u64> {
        let mut key_cols: Vec<(String, Vec<&str>)> = Vec::new();
        for n in &self.mapping.nodes {
            key_cols.push((n.name(), n.keys.iter().map(|k| k.column.as_str()).collect()));
        }
        for r in &self.mapping.relationships {
            key_cols.push((r.name(), r.key_columns()));
        }
        let mut bad: Vec<(usize, String)> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (spec, cols) in &key_cols {
            for (row, col) in null_rows(&batch, cols) {
                if self.writer.config().on_null_key == NullKeyPolicy::Fail {
                    return Err(GraphError::NullKey {
                        spec: spec.clone(),
                        origin: ctx.origin(row).map(|o| o.to_string()),
                        row: row + 1,
                        column: col,
                    });
                }
                if seen.insert(row) {
                    ctx.reject(null_key_reject(spec, row, &col, ctx)).map_err(GraphError::Reject)?;
                    bad.push((row, col));
                }
            }
        }
        let (batch, kept_ctx) = if bad.is_empty() {
            (batch, None)
        } else {
            let (b, c) = drop_rows(&batch, &bad, ctx)?;
            (b, Some(c))
        };
        let ctx = kept_ctx.as_ref().unwrap_or(ctx);
        for n in &self.mapping.nodes {
            self.writer.write_nodes_counted(n, &batch, ctx, Some(&self.run)).await?;
        }
        for r in &self.mapping.relationships {
            self.writer.write_rels_counted(r, &batch, ctx, Some(&self.run)).await?;
        }
        Ok(batch.num_rows() as u64)
    }
}

#[async_trait]
impl Sink for GraphSink {
    fn name(&self) -> String {
        "neo4j".to_owned()
    }

    async fn start(&self, schema: &SchemaRef) -> etlkit_core::Result<()> {
        self.check_schema(schema)?;
        self.run.reset();
        self.writer.create_schema(&self.mapping.nodes).await?;
        Ok(())
    }

    async fn write(&self, batch: RecordBatch, ctx: &Context) -> etlkit_core::Result<u64> {
        Ok(self.write_batch(batch, ctx).await?)
    }

    async fn finish(&self) -> etlkit_core::Result<LoadStats> {
        Ok(self.run.stats())
    }
}

//! [`TwoPhaseLoader`]: schema first, then the distinct shared entities of the whole input, then the
//! main entities and their relationships.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{BooleanArray, RecordBatch};
use etlkit_core::{Context, LoadStats};

use crate::error::Result;
use crate::spec::{NodeSpec, RelSpec};
use crate::value::Columns;
use crate::writer::{Counters, GraphWriter};

/// Node rows of one kind.
#[derive(Debug, Clone)]
pub struct NodeInput {
    /// The node kind.
    pub spec: NodeSpec,
    /// Its rows.
    pub batches: Vec<RecordBatch>,
}

/// Relationship rows of one kind.
#[derive(Debug, Clone)]
pub struct RelInput {
    /// The relationship kind.
    pub spec: RelSpec,
    /// Its rows.
    pub batches: Vec<RecordBatch>,
}

/// What to load. Phase 0 creates the key constraints of every node kind in `shared` and `main`;
/// phase 1 merges `shared` (reduced to distinct keys over the whole input first — the first row of a
/// key wins); phase 2 merges `main`, then writes `relationships` in order.
#[derive(Debug, Clone, Default)]
pub struct LoadPlan {
    /// Entities many rows refer to (skills, companies, countries, ...).
    pub shared: Vec<NodeInput>,
    /// The main entities (one per input record).
    pub main: Vec<NodeInput>,
    /// Relationships, written after all nodes.
    pub relationships: Vec<RelInput>,
}

/// Which phase a [`PhaseReport`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Constraints.
    Schema,
    /// Distinct shared entities.
    SharedEntities,
    /// Main entities and relationships.
    MainEntities,
}

/// Progress of one phase, handed to the progress hook when the phase ends.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PhaseReport {
    /// The phase.
    pub phase: Phase,
    /// Rows handed to the phase (before de-duplication).
    pub rows_in: u64,
    /// Rows written (after de-duplication).
    pub rows_written: u64,
    /// Wall-clock time of the phase.
    pub elapsed: Duration,
    /// `rows_written` per second.
    pub rows_per_sec: f64,
    /// Counters of the transactions this phase committed (`nodes_created`, `relationships_created`,
    /// `properties_set`, `transactions`, `rows_sent`, `max_transaction_rows`, `retries`); other work
    /// on a shared [`GraphWriter`] at the same time is not counted.
    pub stats: LoadStats,
}

/// Runs a [`LoadPlan`] in three phases on a shared [`GraphWriter`].
#[derive(Debug, Clone)]
pub struct TwoPhaseLoader {
    writer: Arc<GraphWriter>,
}

impl TwoPhaseLoader {
    /// A loader on `writer`.
    pub fn new(writer: Arc<GraphWriter>) -> Self {
        TwoPhaseLoader { writer }
    }

    /// Runs the three phases, calling `on_phase` after each, and returns this run's totals:
    /// `rows_written` (all node and relationship rows written), `rows_deduplicated` (shared rows
    /// dropped as repeats), `retries` and the counters of the transactions this run committed (not
    /// those of other work sharing the writer, which [`GraphWriter::stats`] includes).
    pub async fn run(
        &self,
        plan: &LoadPlan,
        ctx: &Context,
        mut on_phase: impl FnMut(&PhaseReport),
    ) -> Result<LoadStats> {
        let started = Instant::now();
        let w = &self.writer;

        // Phase 0: schema.
        let t = Instant::now();
        let specs: Vec<NodeSpec> = plan.shared.iter().chain(&plan.main).map(|n| n.spec.clone()).collect();
        w.create_schema(&specs).await?;
        on_phase(&report(Phase::Schema, 0, 0, t, &Counters::default()));

        // Phase 1: distinct shared entities.
        let t = Instant::now();
        let shared = Counters::default();
        let (mut rows_in, mut written, mut dedup) = (0u64, 0u64, 0u64);
        for input in &plan.shared {
            let mut seen: HashSet<String> = HashSet::new();
            for batch in &input.batches {
                rows_in += batch.num_rows() as u64;
                let distinct = distinct_keys(&input.spec, batch, &mut seen)?;
                dedup += (batch.num_rows() - distinct.num_rows()) as u64;
                written += w.write_nodes_counted(&input.spec, &distinct, ctx, Some(&shared)).await?;
            }
        }
        let shared = report(Phase::SharedEntities, rows_in, written, t, &shared);
        on_phase(&shared);
        let mut total_written = written;

        // Phase 2: main entities, then relationships.
        let t = Instant::now();
        let main = Counters::default();
        let (mut rows_in, mut written) = (0u64, 0u64);
        for input in &plan.main {
            for batch in &input.batches {
                rows_in += batch.num_rows() as u64;
                written += w.write_nodes_counted(&input.spec, batch, ctx, Some(&main)).await?;
            }
        }
        for input in &plan.relationships {
            for batch in &input.batches {
                rows_in += batch.num_rows() as u64;
                written += w.write_rels_counted(&input.spec, batch, ctx, Some(&main)).await?;
            }
        }
        let main = report(Phase::MainEntities, rows_in, written, t, &main);
        on_phase(&main);
        total_written += written;

        let mut stats = shared.stats.clone();
        stats.merge(&main.stats);
        // `merge` adds counters; the largest transaction of the run is the larger of the two.
        let max = "max_transaction_rows";
        stats.counters.insert(max.to_owned(), shared.stats.counter(max).max(main.stats.counter(max)));
        stats.rows_written = total_written;
        stats.rows_deduplicated = dedup;
        stats.elapsed = started.elapsed();
        Ok(stats)
    }
}

/// The rows of `batch` whose key was not seen before (NULL keys are kept: the writer handles them).
fn distinct_keys(spec: &NodeSpec, batch: &RecordBatch, seen: &mut HashSet<String>) -> Result<RecordBatch> {
    let keys: Vec<&str> = spec.keys.iter().map(|k| k.column.as_str()).collect();
    let cols = Columns::resolve(spec.name(), &keys, batch)?;
    let mut keep = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        if cols.first_null(keys.len(), i).is_some() {
            keep.push(true);
            continue;
        }
        let (v, _) = cols.row(i)?;
        keep.push(seen.insert(format!("{v:?}")));
    }
    if keep.iter().all(|k| *k) {
        return Ok(batch.clone());
    }
    Ok(arrow_select::filter::filter_record_batch(batch, &BooleanArray::from(keep))?)
}

fn report(phase: Phase, rows_in: u64, rows_written: u64, t: Instant, counters: &Counters) -> PhaseReport {
    let stats = counters.stats();
    let elapsed = t.elapsed();
    let secs = elapsed.as_secs_f64();
    let rows_per_sec = if secs > 0.0 { rows_written as f64 / secs } else { 0.0 };
    tracing::info!(
        target: "etlkit::neo4j",
        "phase {phase:?}: {rows_written} rows in {secs:.2} s ({rows_per_sec:.0} rows/s), nodes_created={}, relationships_created={}, retries={}",
        stats.counter("nodes_created"),
        stats.counter("relationships_created"),
        stats.retries
    );
    PhaseReport { phase, rows_in, rows_written, elapsed, rows_per_sec, stats }
}

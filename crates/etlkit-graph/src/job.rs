//! [`GraphJob`]: a graph from any [`Source`] in four phases, each pass a [`Pipeline`] into a
//! [`GraphSink`].

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_schema::SchemaRef;
use etlkit_core::{
    Context, LoadStats, LogRejects, Pipeline, PipelineConfig, RejectSink, Rejected, Source, Transform,
    TransformProperties,
};
use etlkit_neo4j::{GraphMapping, GraphSink, GraphWriter, NodeSpec, RelPartition, RelSpec};
use etlkit_transform::{DedupByKey, RowNumbers};

use crate::error::{GraphJobError, Result};

/// Opens the input afresh: a [`Source`] is consumed by one pass, so every pass calls this once.
pub type SourceFactory = Arc<dyn Fn() -> etlkit_core::Result<Box<dyn Source>> + Send + Sync>;

/// Makes a pass's transforms afresh (stateful transforms such as [`DedupByKey`] keep state for one
/// run, so each pass needs new ones).
pub type TransformFactory = Arc<dyn Fn() -> etlkit_core::Result<Vec<Arc<dyn Transform>>> + Send + Sync>;

/// The phases of a [`GraphJob`] run, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// 0: uniqueness constraints of every node kind.
    Constraints,
    /// 0b: with [`GraphJobConfig::first_row_per`], the pre-pass finding the first row of each record.
    FirstRows,
    /// 1: shared entities (skills, companies, ...), de-duplicated by key.
    Entities,
    /// 2: the main nodes (one per input record).
    Main,
    /// 3: relationships.
    Relationships,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Constraints => "constraints",
            Phase::FirstRows => "first-rows",
            Phase::Entities => "entities",
            Phase::Main => "main",
            Phase::Relationships => "relationships",
        })
    }
}

/// One pass over the input: optional transforms that shape the rows, then the nodes or
/// relationships written from them.
#[derive(Clone)]
pub struct Pass {
    /// A name for reports and errors, e.g. `skills`.
    pub name: String,
    /// Transforms applied to the source rows before writing (e.g. a [`DedupByKey`] on the main key
    /// and an [`Explode`](etlkit_transform::Explode) of a list column), made afresh per run.
    /// Default: none.
    pub prepare: Option<TransformFactory>,
    /// Node kinds written (entity passes: exactly one; main passes: one or more).
    pub nodes: Vec<NodeSpec>,
    /// Relationship kinds written (relationship passes only).
    pub relationships: Vec<RelSpec>,
    /// Rows with a NULL in any key column written by this pass (node keys, relationship endpoint
    /// keys and identity properties) are dropped before the sink and counted as filtered: for
    /// optional values (a learner without a city has no `LIVES_IN`). `false`: such rows go to the
    /// graph sink, which fails or rejects them per `GraphConfig::on_null_key`. Default: `false`.
    pub skip_null_keys: bool,
}

impl std::fmt::Debug for Pass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pass")
            .field("name", &self.name)
            .field("prepare", &self.prepare.is_some())
            .field("nodes", &self.nodes)
            .field("relationships", &self.relationships)
            .field("skip_null_keys", &self.skip_null_keys)
            .finish()
    }
}

impl Pass {
    /// A pass writing `node` from the source rows as they are.
    pub fn node(name: impl Into<String>, node: NodeSpec) -> Self {
        Pass {
            name: name.into(),
            prepare: None,
            nodes: vec![node],
            relationships: Vec::new(),
            skip_null_keys: false,
        }
    }

    /// A pass writing `rel` from the source rows as they are.
    pub fn rel(name: impl Into<String>, rel: RelSpec) -> Self {
        Pass {
            name: name.into(),
            prepare: None,
            nodes: Vec::new(),
            relationships: vec![rel],
            skip_null_keys: false,
        }
    }

    /// Sets the transforms made for each run of this pass.
    pub fn prepare(
        mut self,
        f: impl Fn() -> etlkit_core::Result<Vec<Arc<dyn Transform>>> + Send + Sync + 'static,
    ) -> Self {
        self.prepare = Some(Arc::new(f));
        self
    }

    /// Drops rows whose key columns are NULL (see [`Pass::skip_null_keys`]).
    pub fn optional(mut self) -> Self {
        self.skip_null_keys = true;
        self
    }

    fn key_columns(&self) -> Vec<String> {
        let nodes = self.nodes.iter().flat_map(|n| n.keys.iter().map(|k| k.column.clone()));
        let rels = self.relationships.iter().flat_map(|r| r.key_columns().into_iter().map(str::to_owned));
        let mut cols: Vec<String> = nodes.chain(rels).collect();
        cols.dedup();
        cols
    }
}

/// What the job writes: phase 1 `entities` (one node kind per pass, de-duplicated by its key over
/// the whole input by the job), phase 2 `main` (node passes), phase 3 `relationships`.
#[derive(Debug, Clone, Default)]
pub struct GraphModel {
    /// Shared entities; each pass writes exactly one node kind, and the job adds a [`DedupByKey`] on
    /// its key columns (exact, so composite keys never collide), keeping the first row of each key.
    pub entities: Vec<Pass>,
    /// Main nodes (no job-added de-duplication: add a [`DedupByKey`] in `prepare` when the input
    /// repeats records).
    pub main: Vec<Pass>,
    /// Relationships; both end nodes must exist (written in phases 1–2).
    pub relationships: Vec<Pass>,
}

impl GraphModel {
    /// Checks every pass: names, spec validity, which phase may write what.
    pub fn validate(&self) -> Result<()> {
        let mut names = HashSet::new();
        let phases =
            [("entities", &self.entities), ("main", &self.main), ("relationships", &self.relationships)];
        for (phase, passes) in phases {
            for (i, p) in passes.iter().enumerate() {
                let field = format!("model.{phase}[{i}]");
                if p.name.is_empty() || !names.insert(p.name.as_str()) {
                    return Err(GraphJobError::config(
                        field,
                        format!("name {:?} is empty or used twice", p.name),
                    ));
                }
                GraphMapping { nodes: p.nodes.clone(), relationships: p.relationships.clone() }.validate()?;
                let ok = match phase {
                    "entities" => p.nodes.len() == 1 && p.relationships.is_empty(),
                    "main" => !p.nodes.is_empty() && p.relationships.is_empty(),
                    _ => p.nodes.is_empty() && !p.relationships.is_empty(),
                };
                if !ok {
                    let want = match phase {
                        "entities" => "exactly one node kind and no relationship",
                        "main" => "node kinds only",
                        _ => "relationship kinds only",
                    };
                    return Err(GraphJobError::config(field, format!("(`{}`) must write {want}", p.name)));
                }
            }
        }
        if self.entities.is_empty() && self.main.is_empty() && self.relationships.is_empty() {
            return Err(GraphJobError::config("model", "has no pass"));
        }
        Ok(())
    }
}

/// Settings of a [`GraphJob`]: plain fields with documented defaults; [`validate`](Self::validate).
/// Transaction size, concurrency and retries are the [`GraphWriter`]'s (`GraphConfig`).
#[derive(Debug, Clone, PartialEq)]
pub struct GraphJobConfig {
    /// Rows per batch of each pass's pipeline (what one `GraphSink::write` gets; the writer cuts it
    /// into transactions of `GraphConfig::batch_rows`). Default: 10,000.
    pub batch_size: usize,
    /// Concurrent `GraphSink::write` calls per pass (pipeline `workers`). Each call already runs up to
    /// `GraphConfig::workers` transactions at once over node-disjoint groups. Default: 1.
    pub sink_workers: usize,
    /// Transform threads per pass. Passes with an order-sensitive transform (a [`DedupByKey`] that
    /// keeps the first row in input order — the one the job adds to entity passes is one) need 1;
    /// a larger value then fails the run's validation rather than being reduced. Default: 1.
    pub transform_concurrency: usize,
    /// Batches buffered between pipeline stages (bounds memory with `batch_size`). Default: 2.
    pub channel_capacity: usize,
    /// Name of a `UInt64` column appended to every source row with its 1-based row number
    /// ([`RowNumbers`]). Not needed to name input rows in errors and rejects: the pipeline carries
    /// each row's origin (file and line for CSV and Parquet sources) to every transform and the sink.
    /// Useful as data, or for transforms used outside a pipeline. Default: `None`.
    pub row_column: Option<String>,
    /// Write relationships with node-disjoint colouring ([`RelPartition::BothEnds`]) whenever the
    /// writer has more than one worker, whatever the relationship specs say, so parallel relationship
    /// writes cannot deadlock (Neo4j) or conflict on a node (ArcadeDB). `false`: each spec's own
    /// `partition`. Default: `true`.
    pub colour_relationships: bool,
    /// Key columns of one input record (e.g. `learner_id`). When not empty, a pre-pass reads the input
    /// once, keeps the first row of each key (an exact [`DedupByKey`], in input order) and records the
    /// kept rows' numbers in a bitmap (1 bit per input row) with a 64-bit hash of each kept row's
    /// key; every pass then reads only those rows (the others count as de-duplicated). The key set
    /// lives during the pre-pass only, instead of one per pass in each pass's `prepare`. The source
    /// must give the same rows in the same order each time it is opened: a pass that finds another
    /// key at a kept row's number, or another number of rows, fails (before writing that batch, or
    /// at the end of the pass) instead of loading the wrong rows. Default: empty (no pre-pass).
    pub first_row_per: Vec<String>,
}

/// The row-number column of the first-rows bitmap (added and removed by the job).
const FIRST_ROW: &str = "_etlkit_first_row";

impl Default for GraphJobConfig {
    fn default() -> Self {
        GraphJobConfig {
            batch_size: 10_000,
            sink_workers: 1,
            transform_concurrency: 1,
            channel_capacity: 2,
            row_column: None,
            colour_relationships: true,
            first_row_per: Vec::new(),
        }
    }
}

impl GraphJobConfig {
    /// Checks every field; returns [`GraphJobError::InvalidConfig`] naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("batch_size", self.batch_size),
            ("sink_workers", self.sink_workers),
            ("transform_concurrency", self.transform_concurrency),
            ("channel_capacity", self.channel_capacity),
        ] {
            if v == 0 {
                return Err(GraphJobError::config(field, "must be at least 1"));
            }
        }
        if self.row_column.as_deref() == Some(FIRST_ROW) {
            return Err(GraphJobError::config("row_column", format!("`{FIRST_ROW}` is the job's own")));
        }
        if self.row_column.as_deref() == Some("") {
            return Err(GraphJobError::config(
                "row_column",
                "must not be empty (use None for no row numbers)",
            ));
        }
        Ok(())
    }
}

/// What one pass did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PassReport {
    /// Its phase.
    pub phase: Phase,
    /// The pass name.
    pub name: String,
    /// The pass's pipeline stats: rows read from the source, written to the graph (after
    /// transforms), rejected, de-duplicated, filtered; and the graph sink's counters for this pass
    /// (`nodes_created`, `relationships_created`, `properties_set`, `transactions`, `rows_sent`,
    /// `max_transaction_rows`, `retries`).
    pub stats: LoadStats,
}

/// What one [`GraphJob::run`] did: counters of this run only, never of earlier runs or of others
/// sharing the writer.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct GraphReport {
    /// Every pass, in the order run.
    pub passes: Vec<PassReport>,
    /// Nodes created (server counters, summed over passes).
    pub nodes_created: u64,
    /// Relationships created.
    pub relationships_created: u64,
    /// Properties set.
    pub properties_set: u64,
    /// Committed write transactions.
    pub transactions: u64,
    /// Whole-transaction retries after transient errors.
    pub retries: u64,
    /// Distinct rejected rows (a row rejected by the source in every pass counts once; the reject
    /// sink gets it once).
    pub rows_rejected: u64,
    /// Rows dropped as duplicates, summed over passes.
    pub rows_deduplicated: u64,
    /// Rows written to the graph, summed over passes.
    pub rows_written: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl GraphReport {
    /// The report of the pass named `name`.
    pub fn pass(&self, name: &str) -> Option<&PassReport> {
        self.passes.iter().find(|p| p.name == name)
    }
}

/// Loads a graph from any [`Source`] in phases, streaming with bounded memory:
///
/// 0. the uniqueness constraint of every node kind (`IF NOT EXISTS`);
/// 1. each entity pass: the source (re-opened through the [`SourceFactory`]) → the pass's
///    transforms → a [`DedupByKey`] on the node key → [`GraphSink`];
/// 2. each main pass: source → transforms → [`GraphSink`];
/// 3. each relationship pass: source → transforms → [`GraphSink`], with node-disjoint colouring when
///    the writer has several workers (see [`GraphJobConfig::colour_relationships`]).
///
/// Every pass is one [`Pipeline`] run, so memory is a few batches per stage plus the key set of the
/// pass's [`DedupByKey`]s (distinct keys only); nothing holds the input. All passes share one
/// [`GraphWriter`] (its pool and node locks). Passes run one at a time, in order; the first failure
/// stops the run (passes already done stay committed: with `MERGE` re-running converges).
/// Re-running on the same input creates nothing, unless a relationship pass uses
/// [`RelMode::Create`](etlkit_neo4j::RelMode::Create), which creates its relationships again on
/// every run (and after a failed run, again for the transactions that had committed).
pub struct GraphJob {
    writer: Arc<GraphWriter>,
    model: GraphModel,
    source: SourceFactory,
    config: GraphJobConfig,
    rejects: Arc<dyn RejectSink>,
}

impl std::fmt::Debug for GraphJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphJob")
            .field("writer", &self.writer)
            .field("model", &self.model)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl GraphJob {
    /// A job writing `model` through `writer`, reading the input from `source` once per pass.
    pub fn new(
        writer: Arc<GraphWriter>,
        model: GraphModel,
        source: impl Fn() -> etlkit_core::Result<Box<dyn Source>> + Send + Sync + 'static,
    ) -> Self {
        GraphJob {
            writer,
            model,
            source: Arc::new(source),
            config: GraphJobConfig::default(),
            rejects: Arc::new(LogRejects),
        }
    }

    /// Sets the job's settings.
    pub fn config(mut self, config: GraphJobConfig) -> Self {
        self.config = config;
        self
    }

    /// Where rejected rows go (default: logged at `warn`). Each distinct rejected row is sent once,
    /// although every pass reads the input again.
    pub fn rejects(mut self, rejects: Arc<dyn RejectSink>) -> Self {
        self.rejects = rejects;
        self
    }

    /// The writer.
    pub fn writer(&self) -> &Arc<GraphWriter> {
        &self.writer
    }

    /// Runs phases 0–3, calling `on_pass` after each pass; returns this run's report.
    pub async fn run(&self, mut on_pass: impl FnMut(&PassReport)) -> Result<GraphReport> {
        self.config.validate()?;
        self.model.validate()?;
        let started = Instant::now();
        let rejects = Arc::new(OnceRejects::new(self.rejects.clone()));

        // Phase 0: constraints of every node kind, before any data.
        let specs: Vec<NodeSpec> =
            self.model.entities.iter().chain(&self.model.main).flat_map(|p| p.nodes.clone()).collect();
        self.writer.create_schema(&specs).await?;

        let mut report = GraphReport::default();
        let first = if self.config.first_row_per.is_empty() {
            None
        } else {
            let (bitmap, stats) = self.first_rows(rejects.clone()).await?;
            let r = PassReport { phase: Phase::FirstRows, name: "first_rows".into(), stats };
            on_pass(&r);
            report.passes.push(r);
            Some(Arc::new(bitmap))
        };
        let colour = self.config.colour_relationships && self.writer.config().workers > 1;
        let phases = [
            (Phase::Entities, &self.model.entities),
            (Phase::Main, &self.model.main),
            (Phase::Relationships, &self.model.relationships),
        ];
        for (phase, passes) in phases {
            for pass in passes {
                let stats = self.run_pass(phase, pass, colour, first.clone(), rejects.clone()).await?;
                let r = PassReport { phase, name: pass.name.clone(), stats };
                tracing::info!(
                    target: "etlkit::graph",
                    "{phase} pass `{}`: read {} rows, wrote {}, de-duplicated {}, rejected {}, nodes_created={} relationships_created={} retries={} in {:.2} s",
                    r.name,
                    r.stats.rows_read,
                    r.stats.rows_written,
                    r.stats.rows_deduplicated,
                    r.stats.rows_rejected,
                    r.stats.counter("nodes_created"),
                    r.stats.counter("relationships_created"),
                    r.stats.retries,
                    r.stats.elapsed.as_secs_f64()
                );
                on_pass(&r);
                report.nodes_created += r.stats.counter("nodes_created");
                report.relationships_created += r.stats.counter("relationships_created");
                report.properties_set += r.stats.counter("properties_set");
                report.transactions += r.stats.counter("transactions");
                report.retries += r.stats.retries;
                report.rows_deduplicated += r.stats.rows_deduplicated;
                report.rows_written += r.stats.rows_written;
                report.passes.push(r);
            }
        }
        report.rows_rejected = rejects.distinct();
        report.elapsed = started.elapsed();
        Ok(report)
    }

    async fn run_pass(
        &self,
        phase: Phase,
        pass: &Pass,
        colour: bool,
        first: Option<Arc<FirstRows>>,
        rejects: Arc<OnceRejects>,
    ) -> Result<LoadStats> {
        let wrap = |source| GraphJobError::Source { phase, pass: pass.name.clone(), source };
        let mut source = (self.source)().map_err(wrap)?;
        if let Some(col) = &self.config.row_column {
            source = Box::new(RowNumbers::new(source, col.clone()).map_err(wrap)?);
        }
        let failed = |source| GraphJobError::Pass { phase, pass: pass.name.clone(), source };
        let mut transforms: Vec<Arc<dyn Transform>> = Vec::new();
        if let Some(first) = &first {
            source = Box::new(RowNumbers::new(source, FIRST_ROW).map_err(wrap)?);
            transforms.push(Arc::new(KeepFirstRows {
                first: first.clone(),
                key: self.config.first_row_per.clone(),
            }));
        }
        if let Some(f) = &pass.prepare {
            transforms.extend(f().map_err(failed)?);
        }
        if pass.skip_null_keys {
            transforms.push(Arc::new(SkipNullKeys {
                name: format!("skip_null_keys({})", pass.name),
                columns: pass.key_columns(),
            }));
        }
        if phase == Phase::Entities {
            let keys = pass.nodes[0].keys.iter().map(|k| k.column.clone());
            let mut dedup = DedupByKey::new(keys);
            if let Some(col) = &self.config.row_column {
                dedup = dedup.row_column(col.clone());
            }
            transforms.push(Arc::new(dedup));
        }
        let mut relationships = pass.relationships.clone();
        if colour {
            for r in &mut relationships {
                r.partition = RelPartition::BothEnds;
            }
        }
        let mapping = GraphMapping { nodes: pass.nodes.clone(), relationships };
        let sink = Arc::new(GraphSink::new(self.writer.clone(), mapping)?);
        let mut pipeline = Pipeline::from_boxed(source, sink).rejects(rejects).config(PipelineConfig {
            batch_size: self.config.batch_size,
            workers: self.config.sink_workers,
            transform_concurrency: self.config.transform_concurrency,
            channel_capacity: self.config.channel_capacity,
            ..Default::default()
        });
        for t in transforms {
            pipeline = pipeline.transform_arc(t);
        }
        let stats = pipeline.run().await.map_err(failed)?;
        if let Some(first) = &first
            && stats.rows_read != first.rows
        {
            return Err(failed(etlkit_core::Error::InvalidConfig {
                field: "first_row_per",
                reason: format!(
                    "the source gave {} rows, {} in the first-rows pass: {UNSTABLE_SOURCE}",
                    stats.rows_read, first.rows
                ),
            }));
        }
        Ok(stats)
    }
}

impl GraphJob {
    /// The pre-pass of [`GraphJobConfig::first_row_per`]: the numbers of the rows that are the first
    /// of their key, and each one's key.
    async fn first_rows(&self, rejects: Arc<OnceRejects>) -> Result<(FirstRows, LoadStats)> {
        let (phase, pass) = (Phase::FirstRows, "first_rows".to_owned());
        let source =
            (self.source)().map_err(|source| GraphJobError::Source { phase, pass: pass.clone(), source })?;
        let source = RowNumbers::new(source, FIRST_ROW).map_err(|source| GraphJobError::Source {
            phase,
            pass: pass.clone(),
            source,
        })?;
        let sink = Arc::new(BitmapSink {
            key: self.config.first_row_per.clone(),
            first: Mutex::new(FirstRows::default()),
        });
        let stats = Pipeline::new(source, sink.clone())
            .rejects(rejects)
            // The row number differs between any two rows: not a conflict, but the row to name.
            .transform(DedupByKey::new(self.config.first_row_per.iter().cloned()).row_column(FIRST_ROW))
            .config(PipelineConfig {
                batch_size: self.config.batch_size,
                workers: 1,
                transform_concurrency: 1,
                // The first rows arrive in row order (FirstRows::push).
                preserve_order: true,
                channel_capacity: self.config.channel_capacity,
                ..Default::default()
            })
            .run()
            .await
            .map_err(|source| GraphJobError::Pass { phase, pass, source })?;
        let mut first = std::mem::take(&mut *sink.first.lock().expect("first rows poisoned"));
        first.finish(stats.rows_read);
        Ok((first, stats))
    }
}

/// What a later pass needs of a source that is read again: the same rows in the same order.
const UNSTABLE_SOURCE: &str = "`first_row_per` needs a source that gives the same rows in the same \
     order every time it is opened (e.g. no files added meanwhile, a Parquet source with \
     `preserve_order`, a query with ORDER BY)";

/// The first row of each `first_row_per` key, found by the pre-pass: a bitmap of row numbers, and
/// the hash of each first row's key, so a later pass that reads another row at that number (a
/// source giving its rows in another order) fails instead of keeping the wrong rows.
#[derive(Default)]
struct FirstRows {
    /// Bit `n - 1` set: row `n` is the first of its key.
    bits: Vec<u64>,
    /// Set bits in the words before each word (the rank of a row among the first rows).
    ranks: Vec<u64>,
    /// The key hash of each first row, in row order.
    keys: Vec<u64>,
    /// Rows the pre-pass read.
    rows: u64,
}

impl FirstRows {
    /// Records row `n` (numbers ascending) as the first of the key hashed `key`.
    fn push(&mut self, n: u64, key: u64) -> etlkit_core::Result<()> {
        let i = n.checked_sub(1).map(|i| i as usize);
        let Some(i) = i.filter(|&i| i / 64 + 1 >= self.bits.len() && !self.set(i)) else {
            return Err(etlkit_core::Error::InvalidConfig {
                field: "first_row_per",
                reason: format!("first rows out of order at row {n}"),
            });
        };
        if self.bits.len() <= i / 64 {
            self.bits.resize(i / 64 + 1, 0);
        }
        self.bits[i / 64] |= 1 << (i % 64);
        self.keys.push(key);
        Ok(())
    }

    /// Whether bit `i` or a later one in its word is set (so `i` would not come in order).
    fn set(&self, i: usize) -> bool {
        self.bits.get(i / 64).is_some_and(|w| w >> (i % 64) != 0)
    }

    /// After the pre-pass, which read `rows` rows: the ranks for [`FirstRows::key_of`].
    fn finish(&mut self, rows: u64) {
        self.rows = rows;
        self.keys.shrink_to_fit();
        let mut before = 0u64;
        self.ranks = self
            .bits
            .iter()
            .map(|w| {
                let rank = before;
                before += u64::from(w.count_ones());
                rank
            })
            .collect();
    }

    /// The key hash row `n` had in the pre-pass, if it was the first of its key.
    fn key_of(&self, n: u64) -> Option<u64> {
        let i = n.checked_sub(1)? as usize;
        let word = *self.bits.get(i / 64)?;
        let below = 1u64 << (i % 64);
        (word & below != 0).then(|| {
            let rank = self.ranks[i / 64] + u64::from((word & (below - 1)).count_ones());
            self.keys[rank as usize]
        })
    }
}

/// The hash of each row's `key` columns (their arrow-row encoding, hashed with fixed keys).
fn key_hashes(batch: &RecordBatch, key: &[String]) -> etlkit_core::Result<Vec<u64>> {
    use std::hash::{Hash, Hasher};
    let columns = key.iter().map(|c| batch.schema().index_of(c).map(|i| batch.column(i).clone()));
    let columns = columns.collect::<std::result::Result<Vec<_>, _>>()?;
    let fields = columns.iter().map(|c| arrow_row::SortField::new(c.data_type().clone())).collect();
    let rows = arrow_row::RowConverter::new(fields)?.convert_columns(&columns)?;
    Ok(rows
        .iter()
        .map(|row| {
            let mut h = std::hash::DefaultHasher::new();
            row.as_ref().hash(&mut h);
            h.finish()
        })
        .collect())
}

/// Records the number and key hash of each row it is given (the first rows, in row order).
struct BitmapSink {
    key: Vec<String>,
    first: Mutex<FirstRows>,
}

#[async_trait::async_trait]
impl etlkit_core::Sink for BitmapSink {
    fn name(&self) -> String {
        "first_rows".to_owned()
    }

    async fn write(&self, batch: RecordBatch, _ctx: &Context) -> etlkit_core::Result<u64> {
        let numbers = row_numbers(&batch)?;
        let keys = key_hashes(&batch, &self.key)?;
        let mut first = self.first.lock().expect("first rows poisoned");
        for (&n, key) in numbers.values().iter().zip(keys) {
            first.push(n, key)?;
        }
        Ok(batch.num_rows() as u64)
    }
}

fn row_numbers(batch: &RecordBatch) -> etlkit_core::Result<&arrow_array::UInt64Array> {
    batch
        .column_by_name(FIRST_ROW)
        .and_then(|c| c.as_any().downcast_ref::<arrow_array::UInt64Array>())
        .ok_or_else(|| etlkit_core::Error::InvalidConfig {
            field: "first_row_per",
            reason: format!("`{FIRST_ROW}` missing"),
        })
}

/// Keeps the rows whose number is set in the first-rows bitmap (the others count as
/// de-duplicated), checking each kept row has the key the pre-pass saw there, and removes the
/// row-number column.
struct KeepFirstRows {
    first: Arc<FirstRows>,
    key: Vec<String>,
}

impl Transform for KeepFirstRows {
    fn name(&self) -> &str {
        "keep_first_rows"
    }

    fn output_schema(&self, input: &SchemaRef) -> etlkit_core::Result<SchemaRef> {
        let fields: Vec<_> = input.fields().iter().filter(|f| f.name() != FIRST_ROW).cloned().collect();
        Ok(Arc::new(arrow_schema::Schema::new_with_metadata(fields, input.metadata().clone())))
    }

    fn apply(&self, batch: RecordBatch, ctx: &Context) -> etlkit_core::Result<Vec<RecordBatch>> {
        let rows = row_numbers(&batch)?;
        let expected: Vec<Option<u64>> = rows.values().iter().map(|&n| self.first.key_of(n)).collect();
        if let Some(&n) = rows.values().iter().find(|&&n| n > self.first.rows) {
            return Err(etlkit_core::Error::InvalidConfig {
                field: "first_row_per",
                reason: format!("row {n} was not in the first-rows pass: {UNSTABLE_SOURCE}"),
            });
        }
        if expected.iter().any(Option::is_some) {
            let keys = key_hashes(&batch, &self.key)?;
            if let Some(r) = (0..keys.len()).find(|&r| expected[r].is_some_and(|k| k != keys[r])) {
                return Err(etlkit_core::Error::InvalidConfig {
                    field: "first_row_per",
                    reason: format!(
                        "row {} has another key than in the first-rows pass: {UNSTABLE_SOURCE}",
                        rows.value(r)
                    ),
                });
            }
        }
        let keep: BooleanArray = expected.iter().map(|k| Some(k.is_some())).collect();
        let dropped = keep.false_count() as u64;
        let batch = if dropped == 0 {
            batch
        } else {
            ctx.keep_rows(&keep);
            ctx.record_deduplicated(dropped);
            arrow_select::filter::filter_record_batch(&batch, &keep)?
        };
        let idx = batch.schema().index_of(FIRST_ROW)?;
        let mut batch = batch;
        batch.remove_column(idx);
        Ok(vec![batch])
    }
}

/// Drops rows with a NULL in any of `columns` (counted as filtered by the pipeline).
struct SkipNullKeys {
    name: String,
    columns: Vec<String>,
}

impl Transform for SkipNullKeys {
    fn name(&self) -> &str {
        &self.name
    }

    fn properties(&self) -> TransformProperties {
        TransformProperties::PARALLEL
    }

    fn output_schema(&self, input: &SchemaRef) -> etlkit_core::Result<SchemaRef> {
        Ok(input.clone())
    }

    fn apply(&self, batch: RecordBatch, ctx: &Context) -> etlkit_core::Result<Vec<RecordBatch>> {
        // Logical nulls: a `Null`-typed column or a dictionary's null values are NULL keys too.
        let nulls: Vec<_> = self
            .columns
            .iter()
            .filter_map(|c| batch.column_by_name(c))
            .filter_map(|c| c.logical_nulls())
            .collect();
        if nulls.iter().all(|n| n.null_count() == 0) {
            return Ok(vec![batch]);
        }
        let keep: BooleanArray =
            (0..batch.num_rows()).map(|i| Some(nulls.iter().all(|n| n.is_valid(i)))).collect();
        ctx.keep_rows(&keep);
        Ok(vec![arrow_select::filter::filter_record_batch(&batch, &keep)?])
    }
}

/// Forwards each distinct rejected row once: every pass reads the input again, so a row the source
/// (or a shared transform) rejects would otherwise be reported once per pass. Remembers a 64-bit
/// hash per distinct reject.
struct OnceRejects {
    inner: Arc<dyn RejectSink>,
    seen: Mutex<HashSet<u64>>,
    hasher: std::hash::RandomState,
}

impl OnceRejects {
    fn new(inner: Arc<dyn RejectSink>) -> Self {
        OnceRejects { inner, seen: Mutex::default(), hasher: std::hash::RandomState::new() }
    }

    fn distinct(&self) -> u64 {
        self.seen.lock().map_or(0, |s| s.len() as u64)
    }
}

#[async_trait::async_trait]
impl RejectSink for OnceRejects {
    fn reject(&self, row: Rejected) -> etlkit_core::Result<()> {
        let h = self.hasher.hash_one((&row.origin, row.line, &row.column, &row.value, &row.reason, &row.raw));
        if self.seen.lock().expect("reject set poisoned").insert(h) {
            self.inner.reject(row)?;
        }
        Ok(())
    }

    async fn flush(&self) -> etlkit_core::Result<()> {
        self.inner.flush().await
    }
}

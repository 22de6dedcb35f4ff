//! The [`Pipeline`] runtime: source → re-batching → transforms → sink, over bounded channels.
//!
//! Tasks (all in one [`JoinSet`], so dropping the run future aborts every one of them):
//!
//! ```text
//! source task ──(seq, batch)──► transform tasks ×T ──► [reorder task] ──► sink tasks ×W
//!  re-batches to batch_size      each runs the chain on    only with          each calls
//!  and flushes partial batches   the dedicated rayon pool  preserve_order     Sink::write
//!  after flush_interval          (T threads)
//! ```
//!
//! Every arrow is a bounded channel of `channel_capacity` batches, so memory stays bounded; with
//! `preserve_order`, the source also runs at most `transform_concurrency + 2 * channel_capacity`
//! batches ahead of the oldest batch the reorder task has not passed on (it parks the others).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::batch::{Rebatcher, batch_bytes};
use crate::config::PipelineConfig;
use crate::context::{Context, LogRejects, RejectSink};
use crate::error::{Error, Result, Stage};
use crate::origin::Origins;
use crate::sink::Sink;
use crate::source::Source;
use crate::stats::{LoadStats, Progress};
use crate::transform::Transform;

type ProgressHook = Arc<dyn Fn(&Progress) + Send + Sync>;
type Seq = u64;
/// A batch with the origins of its rows (when known).
type Tracked = (RecordBatch, Option<Origins>);
type Tx = async_channel::Sender<(Seq, Vec<Tracked>)>;
type Rx = async_channel::Receiver<(Seq, Vec<Tracked>)>;

/// A source, zero or more transforms and a sink, run with a [`PipelineConfig`].
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{Int64Array, RecordBatch};
/// use etlkit_core::{FnTransform, NullSink, MemorySource, Pipeline, PipelineConfig};
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// let batch = RecordBatch::try_from_iter([("v", Arc::new(Int64Array::from_iter_values(0..100)) as _)])?;
/// let source = MemorySource::new(batch.schema(), vec![batch])?;
/// let keep_even = FnTransform::same_schema("even", |b: RecordBatch| {
///     let v = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
///     let mask = arrow_array::BooleanArray::from_iter(v.iter().map(|x| x.map(|x| x % 2 == 0)));
///     Ok(arrow_select::filter::filter_record_batch(&b, &mask)?)
/// });
/// let stats = Pipeline::new(source, Arc::new(NullSink::new()))
///     .transform(keep_even)
///     .config(PipelineConfig { batch_size: 10, ..Default::default() })
///     .run()
///     .await?;
/// assert_eq!((stats.rows_read, stats.rows_written, stats.rows_filtered), (100, 50, 50));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct Pipeline {
    source: Box<dyn Source>,
    transforms: Vec<Arc<dyn Transform>>,
    sink: Arc<dyn Sink>,
    config: PipelineConfig,
    progress: Option<ProgressHook>,
    rejects: Arc<dyn RejectSink>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("source", &self.source.name())
            .field("transforms", &self.transforms.iter().map(|t| t.name().to_owned()).collect::<Vec<_>>())
            .field("sink", &self.sink.name())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Counters shared by the tasks of one run.
#[derive(Default)]
struct RunCounters {
    source_rows: AtomicU64,
    transform_in: AtomicU64,
    transform_out: AtomicU64,
    sink_in: AtomicU64,
    written: AtomicU64,
    batches: AtomicU64,
    bytes: AtomicU64,
    last_progress_ms: AtomicU64,
}

impl Pipeline {
    /// A pipeline from `source` to `sink` with the default [`PipelineConfig`] and no transforms.
    pub fn new(source: impl Source + 'static, sink: Arc<dyn Sink>) -> Self {
        Self::from_boxed(Box::new(source), sink)
    }

    /// Like [`Pipeline::new`] for an already boxed source.
    pub fn from_boxed(source: Box<dyn Source>, sink: Arc<dyn Sink>) -> Self {
        Pipeline {
            source,
            transforms: Vec::new(),
            sink,
            config: PipelineConfig::default(),
            progress: None,
            rejects: Arc::new(LogRejects),
        }
    }

    /// Appends a transform to the chain (transforms run in the order added).
    pub fn transform(self, t: impl Transform + 'static) -> Self {
        self.transform_arc(Arc::new(t))
    }

    /// Appends a shared transform (keep a handle to read its state afterwards).
    pub fn transform_arc(mut self, t: Arc<dyn Transform>) -> Self {
        self.transforms.push(t);
        self
    }

    /// Sets the configuration (validated when the run starts).
    pub fn config(mut self, config: PipelineConfig) -> Self {
        self.config = config;
        self
    }

    /// Calls `hook` at most every `progress_interval` while the run goes on, and once at the end.
    pub fn on_progress(mut self, hook: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(hook));
        self
    }

    /// Where rejected rows go (default: logged at `warn` and counted).
    pub fn rejects(mut self, rejects: Arc<dyn RejectSink>) -> Self {
        self.rejects = rejects;
        self
    }

    fn validate(&self) -> Result<()> {
        self.config.validate()?;
        let order_sensitive = self.transforms.iter().find(|t| t.properties().order_sensitive);
        if let (Some(t), true) = (order_sensitive, self.config.transform_concurrency > 1) {
            return Err(Error::InvalidConfig {
                field: "transform_concurrency",
                reason: format!(
                    "is {}, but transform `{}` is order-sensitive and needs transform_concurrency = 1",
                    self.config.transform_concurrency,
                    t.name()
                ),
            });
        }
        Ok(())
    }

    /// Runs the pipeline to completion (needs a tokio runtime with time enabled).
    ///
    /// On success the sink has committed ([`Sink::finish`]) and the returned stats satisfy
    /// `rows_read + rows_added == rows_written + rows_rejected + rows_deduplicated + rows_filtered`
    /// (`rows_added`: rows transforms created, reported with [`Context::record_added`]). On the first error every task is stopped, the sink is
    /// aborted, and that error is returned. Dropping the returned future aborts all tasks too.
    pub async fn run(self) -> Result<LoadStats> {
        self.validate()?;
        let started = Instant::now();
        let Pipeline { source, transforms, sink, config, progress, rejects } = self;

        let mut schema = source.schema();
        let mut declared = Vec::with_capacity(transforms.len());
        for t in &transforms {
            schema = t.output_schema(&schema)?;
            declared.push(schema.clone());
        }
        let total_rows = source.total_rows();
        let source_name = source.name();
        sink.start(&schema).await?;

        let root = Context::with_rejects(rejects.clone());
        let (src_ctx, tr_ctx, sink_ctx) = (root.fork(), root.fork(), root.fork());
        let counters = Arc::new(RunCounters::default());
        let mut tasks: JoinSet<Result<()>> = JoinSet::new();
        let cap = config.channel_capacity;

        let (src_tx, src_rx) = async_channel::bounded(cap);
        // Reordering parks batches that finished before an earlier one: the source may run at most
        // this many batches ahead of the oldest one not yet passed on, so parked batches stay bounded.
        let window = (config.preserve_order && config.transform_concurrency > 1 && !transforms.is_empty())
            .then(|| Arc::new(Semaphore::new(config.transform_concurrency + 2 * cap)));
        let sink_rx = if transforms.is_empty() {
            src_rx
        } else {
            let pool = Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(config.transform_concurrency)
                    .thread_name(|i| format!("etlkit-transform-{i}"))
                    .build()
                    .map_err(|e| Error::stage(Stage::Transform, "thread pool", false, e))?,
            );
            let (tx, rx) = async_channel::bounded(cap);
            let (out_tx, sink_rx) = if config.preserve_order && config.transform_concurrency > 1 {
                let (reorder_tx, reorder_rx) = async_channel::bounded(cap);
                tasks.spawn(
                    guarded(Stage::Transform, reorder(reorder_rx, tx, window.clone()))
                        .instrument(tracing::info_span!("etlkit.reorder")),
                );
                (reorder_tx, rx)
            } else {
                (tx, rx)
            };
            let stage = TransformStage {
                transforms: Arc::new(transforms),
                declared: Arc::new(declared),
                pool,
                ctx: tr_ctx.clone(),
                counters: counters.clone(),
            };
            tasks.spawn(
                guarded(Stage::Transform, stage.run(src_rx, out_tx, config.transform_concurrency))
                    .instrument(tracing::info_span!("etlkit.transform")),
            );
            sink_rx
        };

        tasks.spawn(
            guarded(
                Stage::Source,
                source_task(source, src_ctx.clone(), config.clone(), src_tx, window, counters.clone()),
            )
            .instrument(tracing::info_span!("etlkit.source", name = %source_name)),
        );
        for worker in 0..config.workers {
            let w = SinkWorker {
                sink: sink.clone(),
                ctx: sink_ctx.clone(),
                counters: counters.clone(),
                progress: progress.clone(),
                progress_every_ms: config.progress_interval.as_millis() as u64,
                total_rows,
                started,
            };
            tasks.spawn(
                guarded(Stage::Sink, w.run(sink_rx.clone()))
                    .instrument(tracing::info_span!("etlkit.sink", worker)),
            );
        }
        drop(sink_rx);

        if let Err(e) = supervise(&mut tasks).await {
            sink.abort().await;
            return Err(e);
        }

        // Rows are accounted for BEFORE anything is committed: a sink that lost rows is rolled back.
        let c = &counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let delivered = load(&c.sink_in);
        let written = load(&c.written);
        if written + sink_ctx.rejected() != delivered {
            sink.abort().await;
            return Err(Error::RowAccounting {
                read: delivered,
                written,
                rejected: sink_ctx.rejected(),
                deduplicated: 0,
                filtered: 0,
            });
        }
        // Transforms may create rows only by saying so (Context::record_added): more rows out than
        // in + added - dropped would make the counts of the run lie.
        let (t_in, t_out) = (load(&c.transform_in) + tr_ctx.added(), load(&c.transform_out));
        let (t_dedup, t_rejected) = (tr_ctx.deduplicated(), tr_ctx.rejected());
        if t_out + t_dedup + t_rejected > t_in {
            sink.abort().await;
            return Err(Error::RowAccounting {
                read: t_in,
                written: t_out,
                rejected: t_rejected,
                deduplicated: t_dedup,
                filtered: 0,
            });
        }
        // Rejected rows are stored before the data they were split from is committed.
        if let Err(e) = rejects.flush().await {
            sink.abort().await;
            return Err(e);
        }
        // Exactly one of finish / abort: a failed finish has rolled back by itself (Sink contract).
        let sink_stats = sink.finish().await?;
        let mut stats = LoadStats {
            rows_read: load(&c.source_rows) + src_ctx.rejected(),
            rows_written: written,
            rows_rejected: src_ctx.rejected() + tr_ctx.rejected() + sink_ctx.rejected(),
            rows_deduplicated: t_dedup,
            rows_added: tr_ctx.added(),
            // Rows that entered the transforms (or were created there) and neither came out nor were
            // counted otherwise; never negative, as checked above.
            rows_filtered: t_in - t_out - t_dedup - t_rejected,
            batches: load(&c.batches),
            bytes: load(&c.bytes),
            ..LoadStats::default()
        };
        stats.retries = sink_stats.retries;
        stats.counters = sink_stats.counters;
        stats.elapsed = started.elapsed();
        if let Some(hook) = &progress {
            hook(&Progress::new(stats.rows_read, written, total_rows, stats.elapsed));
        }
        tracing::info!(
            rows_read = stats.rows_read,
            rows_written = stats.rows_written,
            rows_rejected = stats.rows_rejected,
            elapsed_ms = stats.elapsed.as_millis() as u64,
            "pipeline finished"
        );
        Ok(stats)
    }
}

/// Waits for every task; on the first failure aborts the rest and returns that failure.
async fn supervise(tasks: &mut JoinSet<Result<()>>) -> Result<()> {
    while let Some(joined) = tasks.join_next().await {
        let failure = match joined {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => e,
            // Task bodies are wrapped in `guarded`, so a JoinError is a cancellation, which only
            // happens after we abort.
            Err(_) => continue,
        };
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        return Err(failure);
    }
    Ok(())
}

/// Turns a panic inside a task into [`Error::Panicked`] naming the stage.
async fn guarded(stage: Stage, fut: impl Future<Output = Result<()>>) -> Result<()> {
    use futures::FutureExt;
    AssertUnwindSafe(fut)
        .catch_unwind()
        .await
        .unwrap_or_else(|payload| Err(Error::Panicked { stage, message: panic_message(payload) }))
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// Reads the source, re-batches to `batch_size`, flushes partial batches after `flush_interval`.
async fn source_task(
    source: Box<dyn Source>,
    ctx: Context,
    config: PipelineConfig,
    tx: Tx,
    window: Option<Arc<Semaphore>>,
    counters: Arc<RunCounters>,
) -> Result<()> {
    let out = Emitter { tx, window, seq: 0 };
    let schema: SchemaRef = source.schema();
    let name: Arc<str> = source.name().into();
    let mut stream = source.into_tracked_stream(ctx);
    // Rows of a source that does not track origins are numbered 1, 2, ... under its name.
    let mut next_row = 1u64;
    let mut rebatcher = Rebatcher::new(schema.clone(), config.batch_size, config.max_batch_bytes);
    let mut out = out;
    let mut pending_since: Option<tokio::time::Instant> = None;
    loop {
        let next = match pending_since {
            None => stream.next().await,
            Some(since) => {
                match tokio::time::timeout_at(since + config.flush_interval, stream.next()).await {
                    Ok(item) => item,
                    Err(_elapsed) => {
                        pending_since = None;
                        if let Some(b) = rebatcher.flush_tracked()?
                            && !out.emit(b, &counters).await
                        {
                            return Ok(());
                        }
                        continue;
                    }
                }
            }
        };
        let Some(item) = next else { break };
        let (batch, origins) = item?;
        if batch.schema() != schema {
            return Err(Error::SchemaMismatch {
                stage: Stage::Source,
                expected: format!("{schema:?}"),
                found: format!("{:?}", batch.schema()),
            });
        }
        let origins = match origins {
            Some(o) if o.len() == batch.num_rows() => o,
            _ => Origins::sequential(name.clone(), next_row, batch.num_rows()),
        };
        next_row += batch.num_rows() as u64;
        let ready = rebatcher.push_tracked(batch, Some(origins))?;
        let emitted = !ready.is_empty();
        for b in ready {
            if !out.emit(b, &counters).await {
                return Ok(());
            }
        }
        pending_since = match rebatcher.pending_rows() {
            0 => None,
            _ if emitted || pending_since.is_none() => Some(tokio::time::Instant::now()),
            _ => pending_since,
        };
    }
    if let Some(b) = rebatcher.flush_tracked()? {
        out.emit(b, &counters).await;
    }
    Ok(())
}

/// The source's end of its channel: numbers the batches and, when reordering, waits for room in
/// the reorder window.
struct Emitter {
    tx: Tx,
    window: Option<Arc<Semaphore>>,
    seq: Seq,
}

impl Emitter {
    /// Sends one batch downstream; false when downstream has gone (it failed or was aborted; the
    /// supervisor reports why).
    async fn emit(&mut self, batch: Tracked, counters: &RunCounters) -> bool {
        if let Some(window) = &self.window {
            // Given back by the reorder task when it passes this batch on.
            match window.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => return false,
            }
        }
        counters.source_rows.fetch_add(batch.0.num_rows() as u64, Ordering::Relaxed);
        let s = self.seq;
        self.seq += 1;
        self.tx.send((s, vec![batch])).await.is_ok()
    }
}

struct TransformStage {
    transforms: Arc<Vec<Arc<dyn Transform>>>,
    /// `declared[i]`: the output schema transform `i` declared for this run's input.
    declared: Arc<Vec<SchemaRef>>,
    pool: Arc<rayon::ThreadPool>,
    ctx: Context,
    counters: Arc<RunCounters>,
}

impl TransformStage {
    /// Runs `concurrency` transform loops, then the transforms' `finish` chain.
    async fn run(self, rx: Rx, tx: Tx, concurrency: usize) -> Result<()> {
        let this = Arc::new(self);
        let mut loops: JoinSet<Result<()>> = JoinSet::new();
        for _ in 0..concurrency {
            let (this, rx, tx) = (this.clone(), rx.clone(), tx.clone());
            loops.spawn(guarded(Stage::Transform, async move {
                while let Ok((seq, batches)) = rx.recv().await {
                    let rows: u64 = batches.iter().map(|b| b.0.num_rows() as u64).sum();
                    this.counters.transform_in.fetch_add(rows, Ordering::Relaxed);
                    let out = this.on_pool(move |t, d, ctx| chain(t, d, 0, batches, ctx)).await?;
                    let out_rows: u64 = out.iter().map(|b| b.0.num_rows() as u64).sum();
                    this.counters.transform_out.fetch_add(out_rows, Ordering::Relaxed);
                    if tx.send((seq, out)).await.is_err() {
                        return Ok(());
                    }
                }
                Ok(())
            }));
        }
        drop(rx);
        supervise(&mut loops).await?;
        // Every batch is through: flush stateful transforms in chain order.
        let tail = this
            .on_pool(|t, d, ctx| {
                let mut out = Vec::new();
                for i in 0..t.len() {
                    // Rows a transform releases at the end have no batch of their own: numbered
                    // under the transform's name.
                    let flushed = t[i]
                        .finish(ctx)?
                        .into_iter()
                        .map(|b| {
                            let b = declared_schema(t[i].as_ref(), &d[i], b)?;
                            let origins = Origins::sequential(t[i].name(), 1, b.num_rows());
                            Ok((b, Some(origins)))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    out.extend(chain(t, d, i + 1, flushed, ctx)?);
                }
                Ok(out)
            })
            .await?;
        if !tail.is_empty() {
            let rows: u64 = tail.iter().map(|b| b.0.num_rows() as u64).sum();
            this.counters.transform_out.fetch_add(rows, Ordering::Relaxed);
            let _ = tx.send((Seq::MAX, tail)).await;
        }
        Ok(())
    }

    /// Runs `f` on the dedicated pool and waits for it without blocking the async executor.
    async fn on_pool<F>(&self, f: F) -> Result<Vec<Tracked>>
    where
        F: FnOnce(&[Arc<dyn Transform>], &[SchemaRef], &Context) -> Result<Vec<Tracked>> + Send + 'static,
    {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let (transforms, declared, ctx) = (self.transforms.clone(), self.declared.clone(), self.ctx.clone());
        self.pool.spawn(move || {
            let r = std::panic::catch_unwind(AssertUnwindSafe(|| f(&transforms, &declared, &ctx)));
            let _ = done_tx.send(r);
        });
        match done_rx.await {
            Ok(Ok(result)) => result,
            Ok(Err(payload)) => {
                Err(Error::Panicked { stage: Stage::Transform, message: panic_message(payload) })
            }
            Err(_) => Err(Error::Panicked {
                stage: Stage::Transform,
                message: "transform pool dropped the job".into(),
            }),
        }
    }
}

/// Applies `transforms[from..]` to `batches`, checking each output against the transform's declared
/// schema and dropping empty batches.
fn chain(
    transforms: &[Arc<dyn Transform>],
    declared: &[SchemaRef],
    from: usize,
    mut batches: Vec<Tracked>,
    ctx: &Context,
) -> Result<Vec<Tracked>> {
    for (t, schema) in transforms[from..].iter().zip(&declared[from..]) {
        let mut next = Vec::with_capacity(batches.len());
        for (b, origins) in batches {
            let in_rows = b.num_rows();
            let call = match origins {
                Some(o) => ctx.for_batch(o),
                None => ctx.clone(),
            };
            let outs = t
                .apply(b, &call)?
                .into_iter()
                .map(|out| declared_schema(t.as_ref(), schema, out))
                .collect::<Result<Vec<_>>>()?;
            next.extend(follow_origins(&call, in_rows, outs).into_iter().filter(|(b, _)| b.num_rows() > 0));
        }
        batches = next;
    }
    Ok(batches)
}

/// The origins of a transform's output rows: what it declared with [`Context::keep_rows`] /
/// [`Context::take_rows`]; else, for one output batch as long as the input, the input's; else
/// unknown.
fn follow_origins(call: &Context, in_rows: usize, outs: Vec<RecordBatch>) -> Vec<Tracked> {
    let out_rows: usize = outs.iter().map(RecordBatch::num_rows).sum();
    let all = match call.declared_output() {
        Some(o) if o.len() == out_rows => Some(o),
        Some(_) => None,
        None if outs.len() == 1 && out_rows == in_rows => call.origins().cloned(),
        None => None,
    };
    let mut offset = 0;
    outs.into_iter()
        .map(|b| {
            let o = all.as_ref().map(|a| a.slice(offset, b.num_rows()));
            offset += b.num_rows();
            (b, o)
        })
        .collect()
}

/// Enforces the [`Transform`] contract: `batch` has the schema `t` declared — the same column names,
/// types and order, and no nullable column where a non-nullable one was declared. Metadata may differ
/// (the batch is relabelled with the declared schema). Otherwise the run fails naming the transform
/// and the first differing column.
fn declared_schema(t: &dyn Transform, declared: &SchemaRef, batch: RecordBatch) -> Result<RecordBatch> {
    let found = batch.schema();
    if Arc::ptr_eq(&found, declared) || found == *declared {
        return Ok(batch);
    }
    let broken = |difference: String| Error::TransformSchema { transform: t.name().to_owned(), difference };
    let (want, got) = (declared.fields(), found.fields());
    for i in 0..want.len().max(got.len()) {
        let describe = |f: &arrow_schema::Field| {
            let null = if f.is_nullable() { "nullable" } else { "not null" };
            format!("`{}` {} {null}", f.name(), f.data_type())
        };
        match (want.get(i), got.get(i)) {
            (Some(w), Some(g))
                if w.name() != g.name()
                    || w.data_type() != g.data_type()
                    || (g.is_nullable() && !w.is_nullable()) =>
            {
                return Err(broken(format!(
                    "column {}: declared {}, found {}",
                    i + 1,
                    describe(w),
                    describe(g)
                )));
            }
            (Some(w), None) => {
                return Err(broken(format!("column {}: declared {}, missing", i + 1, describe(w))));
            }
            (None, Some(g)) => {
                return Err(broken(format!("column {}: {} is not declared", i + 1, describe(g))));
            }
            _ => {}
        }
    }
    RecordBatch::try_new(declared.clone(), batch.columns().to_vec()).map_err(|e| broken(e.to_string()))
}

/// Restores source order after parallel transforms (only with `preserve_order`). Each batch passed
/// on gives its place in `window` back to the source.
async fn reorder(rx: Rx, tx: Tx, window: Option<Arc<Semaphore>>) -> Result<()> {
    let mut next: Seq = 0;
    let mut parked: BTreeMap<Seq, Vec<Tracked>> = BTreeMap::new();
    while let Ok((seq, batches)) = rx.recv().await {
        parked.insert(seq, batches);
        while let Some(batches) = parked.remove(&next) {
            next += 1;
            if tx.send((next - 1, batches)).await.is_err() {
                return Ok(());
            }
            if let Some(window) = &window {
                window.add_permits(1);
            }
        }
    }
    // The finish tail (Seq::MAX) and anything else left, in order.
    for (seq, batches) in parked {
        if tx.send((seq, batches)).await.is_err() {
            return Ok(());
        }
    }
    Ok(())
}

struct SinkWorker {
    sink: Arc<dyn Sink>,
    ctx: Context,
    counters: Arc<RunCounters>,
    progress: Option<ProgressHook>,
    progress_every_ms: u64,
    total_rows: Option<u64>,
    started: Instant,
}

impl SinkWorker {
    async fn run(self, rx: Rx) -> Result<()> {
        while let Ok((_seq, batches)) = rx.recv().await {
            for (batch, origins) in batches {
                let rows = batch.num_rows() as u64;
                let bytes = batch_bytes(&batch) as u64;
                self.counters.sink_in.fetch_add(rows, Ordering::Relaxed);
                let call = match origins {
                    Some(o) => self.ctx.for_batch(o),
                    None => self.ctx.clone(),
                };
                let accepted = self.sink.write(batch, &call).await?;
                let c = &self.counters;
                c.written.fetch_add(accepted, Ordering::Relaxed);
                c.batches.fetch_add(1, Ordering::Relaxed);
                c.bytes.fetch_add(bytes, Ordering::Relaxed);
                self.maybe_report();
            }
        }
        Ok(())
    }

    fn maybe_report(&self) {
        let Some(hook) = &self.progress else { return };
        let now_ms = self.started.elapsed().as_millis() as u64;
        let last = self.counters.last_progress_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < self.progress_every_ms {
            return;
        }
        if self
            .counters
            .last_progress_ms
            .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            let c = &self.counters;
            hook(&Progress::new(
                c.source_rows.load(Ordering::Relaxed),
                c.written.load(Ordering::Relaxed),
                self.total_rows,
                self.started.elapsed(),
            ));
        }
    }
}

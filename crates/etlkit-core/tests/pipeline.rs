//! Behaviour of the pipeline runtime: every config knob honoured, errors stop everything, no row lost.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow_array::{Array, BooleanArray, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use etlkit_core::{
    Context, Error, FnTransform, MemoryRejects, MemorySink, MemorySource, NullSink, Pipeline, PipelineConfig,
    Rejected, Sink, Source, Stage, StreamSource, Transform, TransformProperties,
};
use futures::StreamExt;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]))
}

fn ids(range: std::ops::Range<i64>) -> RecordBatch {
    RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from_iter_values(range))]).unwrap()
}

/// Splits 0..total into batches of the given sizes (cycled).
fn source_batches(total: i64, sizes: &[i64]) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    let (mut at, mut i) = (0, 0);
    while at < total {
        let n = sizes[i % sizes.len()].min(total - at);
        out.push(ids(at..at + n));
        at += n;
        i += 1;
    }
    out
}

fn memory_source(batches: Vec<RecordBatch>) -> MemorySource {
    MemorySource::new(schema(), batches).unwrap()
}

fn id_values(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec())
        .collect()
}

/// Tracks how many calls are in flight at once and the maximum ever seen.
#[derive(Default)]
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Gauge {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
    }
    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("sink refused batch {0}")]
struct SinkRefused(usize);

/// A sink that records every batch in call order, measures concurrency, can be slow, and can fail.
#[derive(Default)]
struct RecordingSink {
    batches: Mutex<Vec<RecordBatch>>,
    gauge: Gauge,
    delay: Duration,
    fail_on_call: Option<usize>,
    calls: AtomicUsize,
    notify: tokio::sync::Notify,
    finished: AtomicBool,
    aborted: AtomicBool,
}

impl RecordingSink {
    fn rows_per_batch(&self) -> Vec<usize> {
        self.batches.lock().unwrap().iter().map(|b| b.num_rows()).collect()
    }
    fn batches(&self) -> Vec<RecordBatch> {
        self.batches.lock().unwrap().clone()
    }
}

#[async_trait]
impl Sink for RecordingSink {
    async fn write(&self, batch: RecordBatch, _ctx: &Context) -> etlkit_core::Result<u64> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        self.gauge.enter();
        let n = batch.num_rows() as u64;
        self.batches.lock().unwrap().push(batch);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.gauge.leave();
        self.notify.notify_waiters();
        if self.fail_on_call == Some(call) {
            return Err(Error::stage(Stage::Sink, "recording", false, SinkRefused(call)));
        }
        Ok(n)
    }
    async fn finish(&self) -> etlkit_core::Result<etlkit_core::LoadStats> {
        self.finished.store(true, Ordering::SeqCst);
        Ok(Default::default())
    }
    async fn abort(&self) {
        self.aborted.store(true, Ordering::SeqCst);
    }
}

/// A source that never ends; counts the batches pulled and notes when it is dropped (cancelled).
fn endless_source(pulled: Arc<AtomicU64>, dropped: Arc<AtomicBool>) -> StreamSource {
    struct OnDrop(Arc<AtomicBool>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let guard = OnDrop(dropped);
    let stream = futures::stream::repeat_with(move || {
        let _keep = &guard;
        let n = pulled.fetch_add(1, Ordering::SeqCst) as i64;
        Ok(ids(n * 100..n * 100 + 100))
    })
    .then(|b| async move {
        tokio::task::yield_now().await;
        b
    })
    .boxed();
    StreamSource::new(schema(), stream)
}

fn config(batch_size: usize, workers: usize) -> PipelineConfig {
    PipelineConfig { batch_size, workers, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batch_size_is_exact_except_the_last_batch() {
    for (workers, batch_size) in [(1, 1000), (3, 1000), (2, 1), (1, 4096)] {
        let input = source_batches(10_007, &[7, 1000, 3, 5000, 1, 999, 2500]);
        let sink = Arc::new(RecordingSink::default());
        let stats = Pipeline::new(memory_source(input), sink.clone())
            .config(config(batch_size, workers))
            .run()
            .await
            .unwrap();
        let mut sizes = sink.rows_per_batch();
        assert_eq!(sizes.iter().sum::<usize>(), 10_007);
        let short = 10_007 % batch_size;
        sizes.sort_unstable();
        if short > 0 {
            assert_eq!(sizes[0], short, "only the last batch may be short");
            sizes.remove(0);
        }
        assert!(
            sizes.iter().all(|&s| s == batch_size),
            "workers={workers} batch_size={batch_size}: {sizes:?}"
        );
        assert_eq!(stats.batches as usize, sink.rows_per_batch().len());
        assert_eq!(stats.rows_read, 10_007);
        assert_eq!(stats.rows_written, 10_007);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_bounds_concurrent_sink_writes_exactly() {
    for workers in [1, 3, 5] {
        let sink = Arc::new(RecordingSink { delay: Duration::from_millis(30), ..Default::default() });
        Pipeline::new(memory_source(source_batches(4_000, &[100])), sink.clone())
            .config(config(100, workers))
            .run()
            .await
            .unwrap();
        assert_eq!(sink.gauge.max(), workers, "workers = {workers}");
    }
}

struct SleepyTransform {
    gauge: Arc<Gauge>,
    sleep: Box<dyn Fn(&RecordBatch) -> Duration + Send + Sync>,
}

impl Transform for SleepyTransform {
    fn name(&self) -> &str {
        "sleepy"
    }
    fn apply(&self, batch: RecordBatch, _ctx: &Context) -> etlkit_core::Result<Vec<RecordBatch>> {
        self.gauge.enter();
        std::thread::sleep((self.sleep)(&batch));
        self.gauge.leave();
        Ok(vec![batch])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_concurrency_bounds_parallel_transforms_exactly() {
    for concurrency in [1, 3, 6] {
        let gauge = Arc::new(Gauge::default());
        let t = SleepyTransform { gauge: gauge.clone(), sleep: Box::new(|_| Duration::from_millis(25)) };
        let stats = Pipeline::new(memory_source(source_batches(3_000, &[100])), Arc::new(NullSink::new()))
            .transform(t)
            .config(PipelineConfig {
                batch_size: 100,
                transform_concurrency: concurrency,
                ..Default::default()
            })
            .run()
            .await
            .unwrap();
        assert_eq!(stats.rows_written, 3_000);
        // More than the machine's cores is honoured too: the pool has exactly `concurrency` threads.
        assert_eq!(gauge.max(), concurrency, "transform_concurrency = {concurrency}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_batch_is_flushed_after_flush_interval() {
    let (tx, rx) = futures::channel::mpsc::unbounded::<etlkit_core::Result<RecordBatch>>();
    let source = StreamSource::new(schema(), rx.boxed());
    let sink = Arc::new(RecordingSink::default());
    let cfg =
        PipelineConfig { batch_size: 1_000, flush_interval: Duration::from_millis(50), ..Default::default() };
    let run = tokio::spawn(Pipeline::new(source, sink.clone()).config(cfg).run());
    tx.unbounded_send(Ok(ids(0..10))).unwrap();
    // The source stays open; only the flush interval can push these 10 rows out.
    tokio::time::timeout(Duration::from_secs(10), async {
        while sink.rows_per_batch().is_empty() {
            sink.notify.notified().await;
        }
    })
    .await
    .expect("partial batch was never flushed");
    assert_eq!(sink.rows_per_batch(), vec![10]);
    tx.unbounded_send(Ok(ids(10..15))).unwrap();
    drop(tx);
    let stats = run.await.unwrap().unwrap();
    assert_eq!(sink.rows_per_batch(), vec![10, 5]);
    assert_eq!(stats.rows_written, 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_batch_bytes_cuts_batches_early() {
    // Int64 without nulls: 8 bytes per row, so 8_000 bytes = 1_000 rows.
    let sink = Arc::new(RecordingSink::default());
    let cfg =
        PipelineConfig { batch_size: 1_000_000, max_batch_bytes: 8_000, workers: 1, ..Default::default() };
    Pipeline::new(memory_source(source_batches(10_500, &[3_000, 250])), sink.clone())
        .config(cfg)
        .run()
        .await
        .unwrap();
    let sizes = sink.rows_per_batch();
    assert_eq!(sizes.iter().sum::<usize>(), 10_500);
    assert!(sizes[..sizes.len() - 1].iter().all(|&s| s == 1_000), "{sizes:?}");
    assert_eq!(id_values(&sink.batches()), (0..10_500).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_capacity_bounds_read_ahead() {
    for capacity in [1, 4, 16] {
        let pulled = Arc::new(AtomicU64::new(0));
        let dropped = Arc::new(AtomicBool::new(false));
        // The sink blocks on its first write, so everything else piles up behind it.
        let sink = Arc::new(RecordingSink { delay: Duration::from_secs(3600), ..Default::default() });
        let cfg =
            PipelineConfig { batch_size: 100, workers: 1, channel_capacity: capacity, ..Default::default() };
        let run = tokio::spawn(
            Pipeline::new(endless_source(pulled.clone(), dropped.clone()), sink).config(cfg).run(),
        );
        // Wait (however slow the machine) until the read-ahead has filled the channel...
        tokio::time::timeout(Duration::from_secs(30), async {
            while (pulled.load(Ordering::SeqCst) as usize) <= capacity {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("capacity {capacity}: read-ahead never filled the channel"));
        // ...then give it time to overshoot, which it must not.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = pulled.load(Ordering::SeqCst);
        // One batch in the sink, `capacity` in the channel, one held by the blocked source task.
        assert!(n as usize <= capacity + 2, "capacity {capacity}: pulled {n}");
        run.abort();
        let _ = run.await;
        // Dropping the run future aborts its tasks; tokio drops them on their next scheduling.
        tokio::time::timeout(Duration::from_secs(10), async {
            while !dropped.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("dropping the run must cancel the source");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_error_stops_the_source_and_is_the_error_returned() {
    let pulled = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let sink = Arc::new(RecordingSink { fail_on_call: Some(3), ..Default::default() });
    let err = Pipeline::new(endless_source(pulled.clone(), dropped.clone()), sink.clone())
        .config(config(100, 2))
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Stage { stage: Stage::Sink, .. }), "{err:?}");
    assert_eq!(err.find_source::<SinkRefused>().map(|e| e.0), Some(3));
    assert!(!err.is_retryable());
    assert!(dropped.load(Ordering::SeqCst), "source must be stopped");
    assert!(sink.aborted.load(Ordering::SeqCst) && !sink.finished.load(Ordering::SeqCst));
    let after = pulled.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(pulled.load(Ordering::SeqCst), after, "nothing reads after the stop");
}

#[derive(Debug, thiserror::Error)]
#[error("bad batch starting at {0}")]
struct BadBatch(i64);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transform_error_stops_the_source_and_is_the_error_returned() {
    let pulled = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicBool::new(false));
    let failing = FnTransform::same_schema("fails-at-500", |b: RecordBatch| {
        let first = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0);
        if first >= 500 {
            return Err(Error::stage(Stage::Transform, "fails-at-500", true, BadBatch(first)));
        }
        Ok(b)
    });
    let sink = Arc::new(RecordingSink::default());
    let err = Pipeline::new(endless_source(pulled.clone(), dropped.clone()), sink.clone())
        .transform(failing)
        .config(config(100, 1))
        .run()
        .await
        .unwrap_err();
    assert!(err.find_source::<BadBatch>().is_some(), "{err:?}");
    assert!(err.is_retryable(), "retryability is carried from the stage's error");
    assert!(dropped.load(Ordering::SeqCst));
    assert!(sink.aborted.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_transform_is_reported_not_propagated() {
    let t = FnTransform::same_schema("boom", |_b: RecordBatch| panic!("kaboom"));
    let err = Pipeline::new(memory_source(source_batches(1_000, &[100])), Arc::new(NullSink::new()))
        .transform(t)
        .run()
        .await
        .unwrap_err();
    match err {
        Error::Panicked { stage: Stage::Transform, message } => assert!(message.contains("kaboom")),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preserve_order_restores_source_order_after_parallel_transforms() {
    let gauge = Arc::new(Gauge::default());
    // Later batches finish first: the transform sleeps less for higher ids.
    let t = SleepyTransform {
        gauge: gauge.clone(),
        sleep: Box::new(|b| {
            let first = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0);
            Duration::from_micros(((5_000 - first) % 7 * 1_000) as u64)
        }),
    };
    let sink = Arc::new(MemorySink::new());
    let cfg = PipelineConfig {
        batch_size: 50,
        workers: 1,
        transform_concurrency: 4,
        preserve_order: true,
        ..Default::default()
    };
    Pipeline::new(memory_source(source_batches(5_000, &[50])), sink.clone())
        .transform(t)
        .config(cfg)
        .run()
        .await
        .unwrap();
    assert_eq!(id_values(&sink.committed()), (0..5_000).collect::<Vec<_>>());
    assert!(gauge.max() > 1, "transforms really ran in parallel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preserve_order_parks_a_bounded_number_of_batches_behind_a_slow_one() {
    // Batch 0 takes long; the others are quick. Without a bound, the other transform threads would
    // run through the whole input while batch 0 sleeps, and the reorder task would park all of it.
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen_by_slow = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (s, seen) = (started.clone(), seen_by_slow.clone());
    let t = FnTransform::same_schema("slow-first", move |b: RecordBatch| {
        s.fetch_add(1, Ordering::SeqCst);
        if b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0) == 0 {
            std::thread::sleep(Duration::from_millis(400));
            seen.store(s.load(Ordering::SeqCst), Ordering::SeqCst);
        }
        Ok(b)
    });
    let sink = Arc::new(MemorySink::new());
    let cfg = PipelineConfig {
        batch_size: 10,
        workers: 1,
        transform_concurrency: 3,
        channel_capacity: 2,
        preserve_order: true,
        ..Default::default()
    };
    Pipeline::new(memory_source(source_batches(2_000, &[10])), sink.clone())
        .transform(t)
        .config(cfg)
        .run()
        .await
        .unwrap();
    assert_eq!(id_values(&sink.committed()), (0..2_000).collect::<Vec<_>>());
    // The window: 3 + 2 * 2 batches from the source, plus what the channels hold.
    let ahead = seen_by_slow.load(Ordering::SeqCst);
    assert!(ahead <= 3 + 2 * 2 + 2, "{ahead} of 200 batches went through while batch 0 was transformed");
}

struct OrderSensitive;
impl Transform for OrderSensitive {
    fn name(&self) -> &str {
        "running-total"
    }
    fn properties(&self) -> TransformProperties {
        TransformProperties::ORDERED
    }
    fn apply(&self, batch: RecordBatch, _ctx: &Context) -> etlkit_core::Result<Vec<RecordBatch>> {
        Ok(vec![batch])
    }
}

#[tokio::test]
async fn order_sensitive_transform_requires_concurrency_one() {
    let err = Pipeline::new(memory_source(vec![ids(0..10)]), Arc::new(NullSink::new()))
        .transform(OrderSensitive)
        .config(PipelineConfig { transform_concurrency: 2, ..Default::default() })
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidConfig { field: "transform_concurrency", .. }), "{err}");
    let ok = Pipeline::new(memory_source(vec![ids(0..10)]), Arc::new(NullSink::new()))
        .transform(OrderSensitive)
        .config(PipelineConfig { transform_concurrency: 1, ..Default::default() })
        .run()
        .await
        .unwrap();
    assert_eq!(ok.rows_written, 10);
}

#[tokio::test]
async fn invalid_config_is_rejected_before_anything_runs() {
    for (cfg, field) in [
        (PipelineConfig { batch_size: 0, ..Default::default() }, "batch_size"),
        (PipelineConfig { workers: 0, ..Default::default() }, "workers"),
        (PipelineConfig { transform_concurrency: 0, ..Default::default() }, "transform_concurrency"),
        (PipelineConfig { channel_capacity: 0, ..Default::default() }, "channel_capacity"),
        (PipelineConfig { flush_interval: Duration::ZERO, ..Default::default() }, "flush_interval"),
    ] {
        let sink = Arc::new(RecordingSink::default());
        let err =
            Pipeline::new(memory_source(vec![ids(0..10)]), sink.clone()).config(cfg).run().await.unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { field: f, .. } if f == field), "{err}");
        assert_eq!(sink.calls.load(Ordering::SeqCst), 0);
    }
}

/// A source that rejects every 10th row through the context, like a CSV reader in Reject mode.
struct RejectingSource(Vec<RecordBatch>);
impl Source for RejectingSource {
    fn schema(&self) -> SchemaRef {
        schema()
    }
    fn into_stream(self: Box<Self>, ctx: Context) -> etlkit_core::BatchStream {
        let out = self.0.into_iter().map(move |b| {
            let v = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let keep: BooleanArray = v.iter().map(|x| Some(x.unwrap() % 10 != 0)).collect();
            for x in v.iter().flatten().filter(|x| x % 10 == 0) {
                ctx.reject(Rejected {
                    origin: "mem".into(),
                    line: Some(x as u64),
                    column: Some("id".into()),
                    value: Some(x.to_string()),
                    reason: "multiple of ten".into(),
                    raw: None,
                })?;
            }
            Ok(arrow_select::filter::filter_record_batch(&b, &keep)?)
        });
        futures::stream::iter(out.collect::<Vec<_>>()).boxed()
    }
}

/// Drops even ids, reporting them as duplicates.
struct EvenAreDuplicates;
impl Transform for EvenAreDuplicates {
    fn name(&self) -> &str {
        "even-dups"
    }
    fn apply(&self, batch: RecordBatch, ctx: &Context) -> etlkit_core::Result<Vec<RecordBatch>> {
        let v = batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let keep: BooleanArray = v.iter().map(|x| Some(x.unwrap() % 2 == 1)).collect();
        let out = arrow_select::filter::filter_record_batch(&batch, &keep)?;
        ctx.record_deduplicated((batch.num_rows() - out.num_rows()) as u64);
        Ok(vec![out])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_is_accounted_for() {
    let rejects = Arc::new(MemoryRejects::new());
    let drop_over_900 = FnTransform::same_schema("under-900", |b: RecordBatch| {
        let v = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let keep: BooleanArray = v.iter().map(|x| Some(x.unwrap() < 900)).collect();
        Ok(arrow_select::filter::filter_record_batch(&b, &keep)?)
    });
    let sink = Arc::new(MemorySink::new());
    let stats = Pipeline::new(RejectingSource(source_batches(1_000, &[64])), sink.clone())
        .transform(EvenAreDuplicates)
        .transform(drop_over_900)
        .rejects(rejects.clone())
        .config(config(100, 2))
        .run()
        .await
        .unwrap();
    // 1000 read: 100 rejected (multiples of 10), 400 other evens de-duplicated, odd >= 900: 50 filtered.
    assert_eq!(stats.rows_read, 1_000);
    assert_eq!(stats.rows_rejected, 100);
    assert_eq!(rejects.rows().len(), 100);
    assert_eq!(stats.rows_deduplicated, 400);
    assert_eq!(stats.rows_filtered, 50);
    assert_eq!(stats.rows_written, 450);
    assert_eq!(sink.committed_rows(), 450);
    assert_eq!(
        stats.rows_read,
        stats.rows_written + stats.rows_rejected + stats.rows_deduplicated + stats.rows_filtered
    );
}

/// Each row twice; with `report`, the copies are reported as added rows.
struct Twice {
    report: bool,
}
impl Transform for Twice {
    fn name(&self) -> &str {
        "twice"
    }
    fn output_schema(&self, input: &SchemaRef) -> etlkit_core::Result<SchemaRef> {
        Ok(input.clone())
    }
    fn apply(&self, batch: RecordBatch, ctx: &Context) -> etlkit_core::Result<Vec<RecordBatch>> {
        if self.report {
            ctx.record_added(batch.num_rows() as u64);
        }
        Ok(vec![batch.clone(), batch])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_a_transform_creates_are_counted_and_unreported_ones_fail_the_run() {
    let sink = Arc::new(MemorySink::new());
    let stats = Pipeline::new(memory_source(source_batches(1_000, &[64])), sink.clone())
        .transform(Twice { report: true })
        .transform(EvenAreDuplicates)
        .config(config(100, 2))
        .run()
        .await
        .unwrap();
    assert_eq!(
        (stats.rows_read, stats.rows_added, stats.rows_written),
        (1_000, 1_000, sink.committed_rows() as u64)
    );
    assert_eq!(
        stats.rows_read + stats.rows_added,
        stats.rows_written + stats.rows_rejected + stats.rows_deduplicated + stats.rows_filtered
    );
    // The same rows without saying so: the counts would not add up, so nothing is committed.
    let sink = Arc::new(MemorySink::new());
    let err = Pipeline::new(memory_source(source_batches(1_000, &[64])), sink.clone())
        .transform(Twice { report: false })
        .config(config(100, 2))
        .run()
        .await
        .unwrap_err();
    assert!(matches!(err, etlkit_core::Error::RowAccounting { .. }), "{err}");
    assert_eq!(sink.committed_rows(), 0);
}

/// A sink that silently drops half of each batch: the runtime must refuse to report success.
struct LossySink;
#[async_trait]
impl Sink for LossySink {
    async fn write(&self, batch: RecordBatch, _ctx: &Context) -> etlkit_core::Result<u64> {
        Ok(batch.num_rows() as u64 / 2)
    }
}

#[tokio::test]
async fn a_sink_that_loses_rows_fails_the_run() {
    let err = Pipeline::new(memory_source(vec![ids(0..100)]), Arc::new(LossySink)).run().await.unwrap_err();
    assert!(matches!(err, Error::RowAccounting { read: 100, written: 50, .. }), "{err}");
}

/// Records which of `finish` / `abort` the pipeline called, and how often; drops one row of each batch
/// when `lossy`, fails `finish` when `fail_finish`.
#[derive(Default)]
struct LifecycleSink {
    lossy: bool,
    fail_finish: bool,
    finished: AtomicUsize,
    aborted: AtomicUsize,
    committed: AtomicU64,
    pending: AtomicU64,
}

#[async_trait]
impl Sink for LifecycleSink {
    async fn write(&self, batch: RecordBatch, _ctx: &Context) -> etlkit_core::Result<u64> {
        let n = batch.num_rows() as u64 - u64::from(self.lossy);
        self.pending.fetch_add(n, Ordering::SeqCst);
        Ok(n)
    }
    async fn finish(&self) -> etlkit_core::Result<etlkit_core::LoadStats> {
        self.finished.fetch_add(1, Ordering::SeqCst);
        if self.fail_finish {
            self.pending.store(0, Ordering::SeqCst);
            return Err(Error::stage(Stage::Sink, "lifecycle", true, SinkRefused(0)));
        }
        self.committed.fetch_add(self.pending.swap(0, Ordering::SeqCst), Ordering::SeqCst);
        Ok(Default::default())
    }
    async fn abort(&self) {
        self.aborted.fetch_add(1, Ordering::SeqCst);
        self.pending.store(0, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn row_accounting_is_checked_before_anything_is_committed() {
    let sink = Arc::new(LifecycleSink { lossy: true, ..Default::default() });
    let err = Pipeline::new(memory_source(vec![ids(0..100)]), sink.clone()).run().await.unwrap_err();
    assert!(matches!(err, Error::RowAccounting { read: 100, written: 99, .. }), "{err}");
    assert_eq!(sink.finished.load(Ordering::SeqCst), 0, "finish must not commit a run that lost rows");
    assert_eq!(sink.aborted.load(Ordering::SeqCst), 1);
    assert_eq!(sink.committed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn exactly_one_of_finish_or_abort_is_called() {
    let ok = Arc::new(LifecycleSink::default());
    Pipeline::new(memory_source(vec![ids(0..100)]), ok.clone()).run().await.unwrap();
    assert_eq!((ok.finished.load(Ordering::SeqCst), ok.aborted.load(Ordering::SeqCst)), (1, 0));
    assert_eq!(ok.committed.load(Ordering::SeqCst), 100);

    let failing = Arc::new(LifecycleSink { fail_finish: true, ..Default::default() });
    let err = Pipeline::new(memory_source(vec![ids(0..100)]), failing.clone()).run().await.unwrap_err();
    assert!(err.is_retryable(), "finish's own error is returned: {err}");
    assert_eq!(
        (failing.finished.load(Ordering::SeqCst), failing.aborted.load(Ordering::SeqCst)),
        (1, 0),
        "no abort after a failed finish"
    );
}

fn two_text_columns() -> RecordBatch {
    use arrow_array::StringArray;
    RecordBatch::try_from_iter([
        ("first", Arc::new(StringArray::from(vec!["a1", "a2"])) as _),
        ("last", Arc::new(StringArray::from(vec!["b1", "b2"])) as _),
    ])
    .unwrap()
}

#[tokio::test]
async fn a_transform_breaking_its_declared_schema_fails_the_run_and_commits_nothing() {
    let batch = two_text_columns();
    // Swaps the two columns, names and all, while declaring the input schema unchanged.
    let swap = FnTransform::same_schema("swap", |b: RecordBatch| Ok(b.project(&[1, 0])?));
    let sink = Arc::new(MemorySink::new());
    let err = Pipeline::new(MemorySource::new(batch.schema(), vec![batch]).unwrap(), sink.clone())
        .transform(swap)
        .run()
        .await
        .unwrap_err();
    assert!(matches!(&err, Error::TransformSchema { transform, .. } if transform == "swap"), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("column 1: declared `first` Utf8") && text.contains("found `last` Utf8"), "{text}");
    assert_eq!(sink.committed_rows(), 0);

    // A type change and a nullable column where a non-nullable one was declared fail too.
    let widen = FnTransform::same_schema("widen", |b: RecordBatch| {
        let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let col = arrow_array::Float64Array::from_iter(ids.iter().map(|v| v.map(|v| v as f64)));
        Ok(RecordBatch::try_from_iter([("id", Arc::new(col) as _)])?)
    });
    let err = Pipeline::new(memory_source(vec![ids(0..10)]), Arc::new(NullSink::new()))
        .transform(widen)
        .run()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("declared `id` Int64 not null, found `id` Float64"), "{err}");
    let nullable = FnTransform::same_schema("nullable", |b: RecordBatch| {
        Ok(RecordBatch::try_from_iter_with_nullable([("id", b.column(0).clone(), true)])?)
    });
    let err = Pipeline::new(memory_source(vec![ids(0..10)]), Arc::new(NullSink::new()))
        .transform(nullable)
        .run()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("found `id` Int64 nullable"), "{err}");
}

#[tokio::test]
async fn a_batch_differing_only_in_metadata_is_relabelled_with_the_declared_schema() {
    let sink = Arc::new(MemorySink::new());
    let tag = FnTransform::same_schema("tag", |b: RecordBatch| {
        let meta = [("origin".to_owned(), "x".to_owned())].into();
        Ok(b.clone().with_schema(Arc::new(b.schema().as_ref().clone().with_metadata(meta)))?)
    });
    Pipeline::new(memory_source(vec![ids(0..10)]), sink.clone()).transform(tag).run().await.unwrap();
    assert_eq!(sink.committed()[0].schema(), schema());
}

#[derive(Debug, thiserror::Error)]
#[error("value \"3000000000\" does not fit column `qty`")]
struct Innermost;

#[derive(Debug, thiserror::Error)]
#[error("copy into `orders` failed")]
struct Middle(#[source] Innermost);

#[test]
fn the_top_level_error_carries_the_innermost_cause_and_report_prints_the_chain() {
    let err = Error::stage(Stage::Sink, "postgres-copy:orders", false, Middle(Innermost));
    assert_eq!(
        err.to_string(),
        "sink `postgres-copy:orders` failed: value \"3000000000\" does not fit column `qty`"
    );
    assert_eq!(
        err.report().to_string(),
        "sink `postgres-copy:orders` failed: copy into `orders` failed: value \"3000000000\" does not fit column `qty`"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_reports_rate_and_eta_when_total_is_known() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let sink = Arc::new(RecordingSink { delay: Duration::from_millis(5), ..Default::default() });
    Pipeline::new(memory_source(source_batches(2_000, &[100])), sink)
        .config(PipelineConfig {
            batch_size: 100,
            workers: 1,
            progress_interval: Duration::from_millis(20),
            ..Default::default()
        })
        .on_progress(move |p| s.lock().unwrap().push(p.clone()))
        .run()
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    assert!(seen.len() >= 2, "periodic reports plus the final one: {}", seen.len());
    let last = seen.last().unwrap();
    assert_eq!((last.rows_done, last.total_rows), (2_000, Some(2_000)));
    assert!(seen.iter().all(|p| p.total_rows == Some(2_000)));
    let mid = &seen[0];
    assert!(mid.rows_done < 2_000 && mid.rows_per_sec > 0.0 && mid.eta.is_some(), "{mid:?}");
    assert!(seen.windows(2).all(|w| w[0].rows_done <= w[1].rows_done));
}

mod property {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

        /// ~10^6 rows in total across the cases: none lost, none duplicated, and with
        /// `preserve_order` and one writer none reordered.
        #[test]
        fn no_row_lost_duplicated_or_reordered(
            total in 50_000i64..150_000,
            sizes in proptest::collection::vec(1i64..20_000, 1..6),
            batch_size in 1usize..30_000,
            workers in 1usize..5,
            transform_concurrency in 1usize..5,
            preserve_order: bool,
            with_transform: bool,
        ) {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            let workers = if preserve_order { 1 } else { workers };
            let sink = Arc::new(MemorySink::new());
            let mut p = Pipeline::new(memory_source(source_batches(total, &sizes)), sink.clone()).config(PipelineConfig {
                batch_size,
                workers,
                transform_concurrency,
                preserve_order,
                channel_capacity: 2,
                ..Default::default()
            });
            if with_transform {
                p = p.transform(FnTransform::same_schema("identity", Ok));
            }
            let stats = rt.block_on(p.run()).unwrap();
            let got = id_values(&sink.committed());
            prop_assert_eq!(stats.rows_written as i64, total);
            if preserve_order {
                prop_assert!(got.iter().copied().eq(0..total), "reordered");
            } else {
                let mut sorted = got;
                sorted.sort_unstable();
                prop_assert!(sorted.iter().copied().eq(0..total), "lost or duplicated rows");
            }
        }
    }
}

#[test]
fn null_column_values_survive_rebatching() {
    let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
    let a =
        RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![Some(1), None, Some(3)]))])
            .unwrap();
    let b =
        RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![None, Some(5)]))]).unwrap();
    let mut r = etlkit_core::Rebatcher::new(schema, 4, usize::MAX);
    let mut out = r.push(a).unwrap();
    out.extend(r.push(b).unwrap());
    out.extend(r.flush().unwrap());
    assert_eq!(out.iter().map(|b| b.num_rows()).collect::<Vec<_>>(), vec![4, 1]);
    let first = out[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap();
    assert_eq!(first.null_count(), 2);
    assert!(first.is_null(1) && first.is_null(3));
}

/// Keeps rejected rows but cannot store them at flush time (a full disk).
#[derive(Default)]
struct UnflushableRejects {
    flushed: AtomicUsize,
}

#[async_trait]
impl etlkit_core::RejectSink for UnflushableRejects {
    fn reject(&self, _row: Rejected) -> etlkit_core::Result<()> {
        Ok(())
    }
    async fn flush(&self) -> etlkit_core::Result<()> {
        self.flushed.fetch_add(1, Ordering::SeqCst);
        Err(Error::stage(Stage::Sink, "rejects", false, SinkRefused(0)))
    }
}

#[tokio::test]
async fn rejects_are_flushed_before_the_commit_and_a_failed_flush_commits_nothing() {
    let rejects = Arc::new(UnflushableRejects::default());
    let sink = Arc::new(LifecycleSink::default());
    let err = Pipeline::new(memory_source(vec![ids(0..100)]), sink.clone())
        .rejects(rejects.clone())
        .run()
        .await
        .unwrap_err();
    assert!(err.find_source::<SinkRefused>().is_some(), "{err}");
    assert_eq!(rejects.flushed.load(Ordering::SeqCst), 1);
    assert_eq!((sink.finished.load(Ordering::SeqCst), sink.aborted.load(Ordering::SeqCst)), (0, 1));
    assert_eq!(sink.committed.load(Ordering::SeqCst), 0);
}

/// Records, for every row it gets, where the context says that row came from.
#[derive(Default)]
struct OriginSink {
    seen: Mutex<Vec<(i64, Option<String>)>>,
}

#[async_trait]
impl Sink for OriginSink {
    async fn write(&self, batch: RecordBatch, ctx: &Context) -> etlkit_core::Result<u64> {
        let ids = batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let mut seen = self.seen.lock().unwrap();
        for i in 0..batch.num_rows() {
            seen.push((ids.value(i), ctx.origin(i).map(|o| o.to_string())));
        }
        Ok(batch.num_rows() as u64)
    }
}

impl OriginSink {
    fn sorted(&self) -> Vec<(i64, Option<String>)> {
        let mut v = self.seen.lock().unwrap().clone();
        v.sort();
        v
    }
}

/// A file-like source: two "files" of ids, the row of id `i` on line `i + 2` of its file.
struct TwoFiles;

impl Source for TwoFiles {
    fn schema(&self) -> SchemaRef {
        schema()
    }
    fn into_stream(self: Box<Self>, ctx: Context) -> etlkit_core::BatchStream {
        self.into_tracked_stream(ctx).map(|r| r.map(|(b, _)| b)).boxed()
    }
    fn into_tracked_stream(self: Box<Self>, _ctx: Context) -> etlkit_core::TrackedStream {
        let pieces: Vec<etlkit_core::Result<(RecordBatch, Option<etlkit_core::Origins>)>> =
            [("a.csv", 0..5), ("a.csv", 5..7), ("b.csv", 7..10)]
                .into_iter()
                .map(|(file, r)| {
                    let first = if file == "a.csv" { r.start } else { r.start - 7 };
                    let lines = (first..first + (r.end - r.start)).map(|l| l as u64 + 2);
                    Ok((ids(r), Some(etlkit_core::Origins::lines(file, lines))))
                })
                .collect();
        futures::stream::iter(pieces).boxed()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_reaches_the_sink_with_its_file_and_line_through_rebatching_and_filters() {
    // Drops odd ids and says which rows it kept, so the rest keep their origins.
    let keep_even = FnTransform::same_schema("even", |b: RecordBatch| {
        let v = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let mask = BooleanArray::from_iter(v.iter().map(|x| x.map(|x| x % 2 == 0)));
        Ok(arrow_select::filter::filter_record_batch(&b, &mask)?)
    });
    struct Tracked(FnTransform);
    impl Transform for Tracked {
        fn name(&self) -> &str {
            "even-tracked"
        }
        fn apply(&self, batch: RecordBatch, ctx: &Context) -> etlkit_core::Result<Vec<RecordBatch>> {
            let v = batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let mask = BooleanArray::from_iter(v.iter().map(|x| x.map(|x| x % 2 == 0)));
            ctx.keep_rows(&mask);
            self.0.apply(batch, ctx)
        }
    }
    let sink = Arc::new(OriginSink::default());
    Pipeline::new(TwoFiles, sink.clone())
        .transform(Tracked(keep_even))
        .config(config(3, 2))
        .run()
        .await
        .unwrap();
    let expect: Vec<(i64, Option<String>)> = [0, 2, 4, 6, 8]
        .into_iter()
        .map(|i| (i, Some(if i < 7 { format!("a.csv:{}", i + 2) } else { format!("b.csv:{}", i - 7 + 2) })))
        .collect();
    assert_eq!(sink.sorted(), expect);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_of_an_untracked_source_are_numbered_and_an_undeclared_filter_loses_origins() {
    let sink = Arc::new(OriginSink::default());
    Pipeline::new(memory_source(source_batches(10, &[3, 4])), sink.clone())
        .config(config(4, 2))
        .run()
        .await
        .unwrap();
    let expect: Vec<(i64, Option<String>)> =
        (0..10).map(|i| (i, Some(format!("memory:{}", i + 1)))).collect();
    assert_eq!(sink.sorted(), expect);

    // A transform that drops rows without saying which: no origin is better than a wrong one.
    let sink = Arc::new(OriginSink::default());
    let drop_first =
        FnTransform::same_schema("drop-first", |b: RecordBatch| Ok(b.slice(1, b.num_rows() - 1)));
    Pipeline::new(memory_source(vec![ids(0..4)]), sink.clone())
        .transform(drop_first)
        .config(config(4, 1))
        .run()
        .await
        .unwrap();
    assert_eq!(sink.sorted(), vec![(1, None), (2, None), (3, None)]);
}

//! The [`Sink`] trait, plus [`MemorySink`] and [`NullSink`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use async_trait::async_trait;

use crate::context::Context;
use crate::error::Result;
use crate::stats::LoadStats;

/// Writes batches somewhere, then commits or rolls back.
///
/// Life cycle: [`start`](Sink::start) once, then [`write`](Sink::write) any number of times — up to
/// `workers` calls concurrently — then exactly one of [`finish`](Sink::finish) (all writes succeeded)
/// or [`abort`](Sink::abort) (a stage failed or the run was cancelled).
///
/// The pipeline checks row accounting (accepted + rejected = rows delivered) *before* it calls
/// `finish`, so nothing is committed for a run whose rows do not add up; it then calls `abort`
/// instead. It never calls `abort` after `finish`, whatever `finish` returned.
///
/// Implementors MUST:
/// - document what is durable when `write` returns `Ok` (e.g. "the batch is committed" or "the batch
///   is in an open transaction committed by `finish`");
/// - when `finish` fails, roll back by themselves whatever it had not committed (no `abort` follows);
/// - return from `finish` counters that describe this run only (a sink used for a second run starts
///   its counters again in `start`);
/// - make each commit unit all-or-nothing: after an error or `abort`, no part of an uncommitted unit is
///   visible;
/// - return from `write` the number of rows accepted, and send refused rows to [`Context::reject`]
///   (accepted + rejected = rows in the batch);
/// - be safe for concurrent `write` calls (`&self`), holding per-writer state (connections,
///   transactions) internally.
///
/// Implementors SHOULD classify errors by retryability (see
/// [`Error::is_retryable`](crate::Error::is_retryable)) and retry transient failures of a whole unit
/// themselves, counting them in [`LoadStats::retries`].
#[async_trait]
pub trait Sink: Send + Sync {
    /// A short name for errors, logs and spans.
    fn name(&self) -> String {
        "sink".to_owned()
    }

    /// Called once before the first write with the schema of the batches to come (e.g. to create or
    /// check the target table). Default: nothing.
    async fn start(&self, _schema: &SchemaRef) -> Result<()> {
        Ok(())
    }

    /// Writes one batch; returns the rows accepted.
    async fn write(&self, batch: RecordBatch, ctx: &Context) -> Result<u64>;

    /// All writes succeeded: commit what is pending and return sink-specific stats (retries, counters
    /// such as `inserted`/`updated`). Row counts are tallied by the pipeline from `write`.
    async fn finish(&self) -> Result<LoadStats> {
        Ok(LoadStats::default())
    }

    /// The run failed or was cancelled: roll back whatever is not committed. Must not panic.
    async fn abort(&self) {}
}

/// A sink that discards every batch and counts rows. For benchmarks and dry runs.
#[derive(Debug, Default)]
pub struct NullSink {
    rows: AtomicU64,
}

impl NullSink {
    /// A new counting sink.
    pub fn new() -> Self {
        Self::default()
    }
    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Sink for NullSink {
    fn name(&self) -> String {
        "null".to_owned()
    }
    async fn write(&self, batch: RecordBatch, _ctx: &Context) -> Result<u64> {
        let n = batch.num_rows() as u64;
        self.rows.fetch_add(n, Ordering::Relaxed);
        Ok(n)
    }
}

/// A sink that keeps every batch in memory, in the order `write` was called. `finish` marks it
/// committed; `abort` discards everything. Durability: nothing is visible through
/// [`MemorySink::committed`] until `finish` returns.
#[derive(Debug, Default)]
pub struct MemorySink {
    pending: Mutex<Vec<RecordBatch>>,
    committed: Mutex<Vec<RecordBatch>>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }
    /// Batches committed by `finish`, in write order.
    pub fn committed(&self) -> Vec<RecordBatch> {
        self.committed.lock().expect("sink poisoned").clone()
    }
    /// Total rows committed.
    pub fn committed_rows(&self) -> usize {
        self.committed().iter().map(|b| b.num_rows()).sum()
    }
}

#[async_trait]
impl Sink for MemorySink {
    fn name(&self) -> String {
        "memory".to_owned()
    }
    async fn write(&self, batch: RecordBatch, _ctx: &Context) -> Result<u64> {
        let n = batch.num_rows() as u64;
        self.pending.lock().expect("sink poisoned").push(batch);
        Ok(n)
    }
    async fn finish(&self) -> Result<LoadStats> {
        let mut pending = std::mem::take(&mut *self.pending.lock().expect("sink poisoned"));
        self.committed.lock().expect("sink poisoned").append(&mut pending);
        Ok(LoadStats::default())
    }
    async fn abort(&self) {
        self.pending.lock().expect("sink poisoned").clear();
    }
}

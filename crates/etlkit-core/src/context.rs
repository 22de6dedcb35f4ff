//! [`Context`]: what a running stage can report besides batches — rejected rows and de-duplicated rows.

use std::fmt;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::Result;
use crate::origin::{Origins, RowOrigin};

/// One row that a stage refused, with everything a person needs to find and fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Where the row came from: a file path, a table, or a stage name.
    pub origin: String,
    /// 1-based physical line (for text files) or row number, when known.
    pub line: Option<u64>,
    /// The offending column, when one is to blame.
    pub column: Option<String>,
    /// The offending value, when one is to blame.
    pub value: Option<String>,
    /// Why the row was rejected.
    pub reason: String,
    /// The original input bytes of the row (exactly as read, not re-encoded), when the stage has them.
    /// [`Rejected::raw_text`] renders them for people.
    pub raw: Option<Vec<u8>>,
}

impl Rejected {
    /// The raw bytes as text for people: lossy UTF-8 with the line terminator stripped.
    pub fn raw_text(&self) -> Option<String> {
        let raw = self.raw.as_deref()?;
        let trimmed = raw.strip_suffix(b"\n").unwrap_or(raw);
        let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
        Some(String::from_utf8_lossy(trimmed).into_owned())
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(c) = &self.column {
            write!(f, " column `{c}`")?;
        }
        if let Some(v) = &self.value {
            write!(f, " value {v:?}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Where rejected rows go when the user asked for rejects instead of errors.
///
/// Implementors MUST be cheap to call from several threads at once (`reject` runs on source,
/// transform and sink threads, so it must not block on I/O for long: buffer, and write in `flush`).
/// An `Err` from `reject` or `flush` stops the pipeline (e.g. the reject file cannot be written).
///
/// The pipeline calls [`flush`](RejectSink::flush) once after every stage has finished and before
/// the sink commits: a run whose rejects could not be stored commits nothing.
#[async_trait::async_trait]
pub trait RejectSink: Send + Sync {
    /// Records one rejected row.
    fn reject(&self, row: Rejected) -> Result<()>;

    /// Makes every rejected row so far durable (writes buffered rows, syncs a file). Called once
    /// per run by the pipeline before the sink's `finish`; may be called again by the owner.
    /// Default: nothing to do.
    async fn flush(&self) -> Result<()> {
        Ok(())
    }
}

/// A [`RejectSink`] that keeps every rejected row in memory. Handy in tests and small jobs.
#[derive(Debug, Default)]
pub struct MemoryRejects {
    rows: Mutex<Vec<Rejected>>,
}

impl MemoryRejects {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }
    /// The rows rejected so far, in arrival order.
    pub fn rows(&self) -> Vec<Rejected> {
        self.rows.lock().expect("reject list poisoned").clone()
    }
}

impl RejectSink for MemoryRejects {
    fn reject(&self, row: Rejected) -> Result<()> {
        self.rows.lock().expect("reject list poisoned").push(row);
        Ok(())
    }
}

/// The default [`RejectSink`]: logs each rejected row at `warn` level (they are also counted in
/// [`LoadStats::rows_rejected`](crate::LoadStats::rows_rejected)).
#[derive(Debug, Default, Clone, Copy)]
pub struct LogRejects;

impl RejectSink for LogRejects {
    fn reject(&self, row: Rejected) -> Result<()> {
        tracing::warn!(target: "etlkit::reject", "rejected row: {row}");
        Ok(())
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) rejected: AtomicU64,
    pub(crate) deduplicated: AtomicU64,
    pub(crate) added: AtomicU64,
}

/// Handed to every stage: the way to report rejected, de-duplicated and added rows so that
/// rows read + added = written + rejected + de-duplicated + filtered always holds, and — inside
/// [`Transform::apply`](crate::Transform::apply) and [`Sink::write`](crate::Sink::write) — where each
/// row of the batch at hand came from ([`Context::origin`]).
///
/// Cloning is cheap; clones share counters. A stage used outside a pipeline can use
/// [`Context::default`] (rejects are logged) or [`Context::with_rejects`].
#[derive(Clone)]
pub struct Context {
    counters: Arc<Counters>,
    rejects: Arc<dyn RejectSink>,
    batch: Option<Arc<BatchOrigins>>,
}

/// The origins of the batch a call is about, and what the stage said about its output rows.
struct BatchOrigins {
    input: Origins,
    output: Mutex<Option<Origins>>,
}

impl Default for Context {
    fn default() -> Self {
        Self::with_rejects(Arc::new(LogRejects))
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("rejected", &self.rejected())
            .field("deduplicated", &self.deduplicated())
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context whose rejected rows go to `rejects`.
    pub fn with_rejects(rejects: Arc<dyn RejectSink>) -> Self {
        Context { counters: Arc::default(), rejects, batch: None }
    }

    /// A context sharing this one's reject sink but with its own counters (one per stage).
    pub fn fork(&self) -> Self {
        Context { counters: Arc::default(), rejects: Arc::clone(&self.rejects), batch: None }
    }

    /// A context for one call about a batch whose rows came from `origins` (same counters and reject
    /// sink). The pipeline makes one per `apply` and per `write`; use it to call a stage by hand.
    pub fn for_batch(&self, origins: Origins) -> Self {
        let batch = Some(Arc::new(BatchOrigins { input: origins, output: Mutex::new(None) }));
        Context { counters: Arc::clone(&self.counters), rejects: Arc::clone(&self.rejects), batch }
    }

    /// Where row `row` of the batch at hand came from (file and line, or source and row number), when
    /// known. Use it to name the input row in errors and [`Rejected`] records.
    pub fn origin(&self, row: usize) -> Option<RowOrigin<'_>> {
        self.batch.as_ref()?.input.get(row)
    }

    /// The origins of every row of the batch at hand, when known.
    pub fn origins(&self) -> Option<&Origins> {
        self.batch.as_ref().map(|b| &b.input)
    }

    /// For a [`Transform`](crate::Transform) that drops rows: its output rows are the input rows
    /// `keep` selects (as `arrow_select::filter` keeps them), so their origins follow. Transforms that
    /// keep every row in place need not call it.
    pub fn keep_rows(&self, keep: &arrow_array::BooleanArray) {
        if let Some(b) = &self.batch {
            *b.output.lock().expect("origins poisoned") = Some(b.input.filter(keep));
        }
    }

    /// For a [`Transform`](crate::Transform) that reorders or repeats rows (e.g. one output row per
    /// list element): output row `i` came from input row `indices[i]` (over all output batches of
    /// the call, concatenated).
    pub fn take_rows(&self, indices: &[usize]) {
        if let Some(b) = &self.batch {
            *b.output.lock().expect("origins poisoned") = Some(b.input.take(indices));
        }
    }

    /// What the stage declared with [`Context::keep_rows`] / [`Context::take_rows`] in this call.
    pub(crate) fn declared_output(&self) -> Option<Origins> {
        self.batch.as_ref()?.output.lock().expect("origins poisoned").take()
    }

    /// Sends one row to the reject sink and counts it.
    pub fn reject(&self, row: Rejected) -> Result<()> {
        self.rejects.reject(row)?;
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Counts `n` rows dropped as duplicates of rows already seen.
    pub fn record_deduplicated(&self, n: u64) {
        self.counters.deduplicated.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` rows a transform created beyond its input rows: a row turned into `k ≥ 1` rows
    /// adds `k - 1` (a row turned into none is filtered, which the pipeline counts by itself).
    /// Transforms that never create rows do not call this.
    pub fn record_added(&self, n: u64) {
        self.counters.added.fetch_add(n, Ordering::Relaxed);
    }

    /// Rows counted as added through this context (and its clones) so far.
    pub fn added(&self) -> u64 {
        self.counters.added.load(Ordering::Relaxed)
    }

    /// Rows rejected through this context (and its clones) so far.
    pub fn rejected(&self) -> u64 {
        self.counters.rejected.load(Ordering::Relaxed)
    }

    /// Rows counted as duplicates through this context (and its clones) so far.
    pub fn deduplicated(&self) -> u64 {
        self.counters.deduplicated.load(Ordering::Relaxed)
    }
}

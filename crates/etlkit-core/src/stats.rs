//! [`LoadStats`] (what a run did) and [`Progress`] (what it is doing).

use std::collections::BTreeMap;
use std::time::Duration;

/// What a pipeline run (or a sink) did. The pipeline guarantees
/// `rows_read + rows_added == rows_written + rows_rejected + rows_deduplicated + rows_filtered` for a
/// successful run (`rows_added` is 0 unless a transform turns a row into several).
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct LoadStats {
    /// Rows produced by the source, plus rows the source rejected.
    pub rows_read: u64,
    /// Rows the sink accepted (for an upsert: inserted + updated + unchanged).
    pub rows_written: u64,
    /// Rows sent to the reject output by any stage.
    pub rows_rejected: u64,
    /// Rows dropped because an identical row (by hash) was already seen.
    pub rows_deduplicated: u64,
    /// Rows dropped by transforms for any other reason (e.g. a filter, or a list exploded into no
    /// element).
    pub rows_filtered: u64,
    /// Rows transforms created beyond their input rows, as reported with
    /// [`Context::record_added`](crate::Context::record_added) (a row exploded into three elements: 2).
    pub rows_added: u64,
    /// Batches handed to the sink.
    pub batches: u64,
    /// In-memory Arrow bytes handed to the sink.
    pub bytes: u64,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Whole-unit retries performed by the sink (e.g. a transaction retried after a deadlock).
    pub retries: u64,
    /// Sink-specific counters, e.g. `inserted`, `updated`, `unchanged`, `nodes_created`.
    pub counters: BTreeMap<String, u64>,
}

impl LoadStats {
    /// Adds `other`'s counts into `self` (elapsed takes the larger of the two).
    pub fn merge(&mut self, other: &LoadStats) {
        self.rows_read += other.rows_read;
        self.rows_written += other.rows_written;
        self.rows_rejected += other.rows_rejected;
        self.rows_deduplicated += other.rows_deduplicated;
        self.rows_filtered += other.rows_filtered;
        self.rows_added += other.rows_added;
        self.batches += other.batches;
        self.bytes += other.bytes;
        self.retries += other.retries;
        self.elapsed = self.elapsed.max(other.elapsed);
        for (k, v) in &other.counters {
            *self.counters.entry(k.clone()).or_default() += v;
        }
    }

    /// Adds `n` to the named counter.
    pub fn add_counter(&mut self, name: &str, n: u64) {
        *self.counters.entry(name.to_owned()).or_default() += n;
    }

    /// The named counter, 0 when absent.
    pub fn counter(&self, name: &str) -> u64 {
        self.counters.get(name).copied().unwrap_or(0)
    }

    /// Rows written per second of wall-clock time.
    pub fn rows_per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 { self.rows_written as f64 / s } else { 0.0 }
    }
}

/// A snapshot handed to the progress hook.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Progress {
    /// Rows read from the source so far.
    pub rows_read: u64,
    /// Rows the sink has accepted so far.
    pub rows_done: u64,
    /// The source's total row count, when it could tell cheaply.
    pub total_rows: Option<u64>,
    /// Time since the run started.
    pub elapsed: Duration,
    /// Average rate so far (rows done per second).
    pub rows_per_sec: f64,
    /// Estimated time left, when the total is known and the rate is non-zero.
    pub eta: Option<Duration>,
}

impl Progress {
    pub(crate) fn new(rows_read: u64, rows_done: u64, total_rows: Option<u64>, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64();
        let rows_per_sec = if secs > 0.0 { rows_done as f64 / secs } else { 0.0 };
        let eta = match total_rows {
            Some(total) if rows_per_sec > 0.0 => {
                Some(Duration::from_secs_f64(total.saturating_sub(rows_done) as f64 / rows_per_sec))
            }
            _ => None,
        };
        Progress { rows_read, rows_done, total_rows, elapsed, rows_per_sec, eta }
    }
}

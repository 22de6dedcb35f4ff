//! [`ReadMetrics`]: live counters of a reader, shared with whoever holds a handle.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counters a reader updates while it runs. Get a handle with `metrics()` on a source before
/// calling `into_stream`; it stays valid (and keeps the final values) after the stream ends.
///
/// `peak_in_flight` is the proof of bounded memory: for Parquet it counts row groups whose decoding
/// has started but whose batches have not all been taken by the consumer (bounded by
/// `max_row_groups_in_flight`); for CSV it counts batches parsed but not yet taken (bounded by
/// `channel_capacity + 1`). Neither depends on the input size.
#[derive(Debug, Default)]
pub struct ReadMetrics {
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
    batches: AtomicU64,
    rows: AtomicU64,
    threads: AtomicUsize,
    running: AtomicUsize,
    buffered: AtomicUsize,
    peak_buffered: AtomicUsize,
    prefetched: AtomicU64,
}

impl ReadMetrics {
    /// The largest number of units (row groups or batches, see the type docs) held at once so far.
    pub fn peak_in_flight(&self) -> usize {
        self.peak_in_flight.load(Ordering::Relaxed)
    }

    /// Units held right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Batches handed to the consumer so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Rows handed to the consumer so far (rejected rows are not counted here).
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Decoding threads started (Parquet decoders, or CSV conversion threads; the CSV splitter thread
    /// is not counted).
    pub fn threads(&self) -> usize {
        self.threads.load(Ordering::Relaxed)
    }

    /// Parquet only: the largest number of decoded batches waiting in the per-row-group buffers (or
    /// blocked handing one over) at once. Bounded by
    /// `max_row_groups_in_flight * batches_per_row_group + workers + 1` (the one being handed to the
    /// consumer).
    pub fn peak_batches_buffered(&self) -> usize {
        self.peak_buffered.load(Ordering::Relaxed)
    }

    /// Parquet only: row groups read into memory in one go (see `prefetch_limit_bytes`); the others
    /// were streamed page by page.
    pub fn row_groups_prefetched(&self) -> u64 {
        self.prefetched.load(Ordering::Relaxed)
    }

    pub(crate) fn row_group_prefetched(&self) {
        self.prefetched.fetch_add(1, Ordering::Relaxed);
    }

    /// Reader threads (decoders, converters and the CSV splitter) still running. Drops to 0 soon after
    /// the stream ends or is dropped.
    pub fn threads_running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    pub(crate) fn thread_started(&self) {
        self.threads.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a running thread until the returned guard is dropped (at thread exit).
    pub(crate) fn running_guard(self: &std::sync::Arc<Self>) -> RunningGuard {
        self.running.fetch_add(1, Ordering::SeqCst);
        RunningGuard(std::sync::Arc::clone(self))
    }

    pub(crate) fn batch_buffered(&self) {
        let now = self.buffered.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_buffered.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn batch_unbuffered(&self) {
        self.buffered.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn enter(&self) {
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.peak_in_flight.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn delivered(&self, rows: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
    }
}

/// Decrements [`ReadMetrics::threads_running`] when dropped.
pub(crate) struct RunningGuard(std::sync::Arc<ReadMetrics>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

//! [`PipelineConfig`]: every knob of the runtime, with documented defaults and [`PipelineConfig::validate`].

use std::time::Duration;

use crate::error::{Error, Result};

/// Configuration of a [`Pipeline`](crate::Pipeline) run. A plain struct: build it with
/// `PipelineConfig { batch_size: 50_000, ..Default::default() }` and call [`validate`](Self::validate)
/// (the pipeline calls it too). Every field is honoured end to end; there is no hidden cap anywhere.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineConfig {
    /// Rows per batch handed to transforms and the sink. Input batches of any size are split or
    /// coalesced to exactly this many rows; only the last batch of a run (or one cut short by
    /// `max_batch_bytes` or `flush_interval`) may be smaller. Default: 8192.
    pub batch_size: usize,
    /// Upper bound on the in-memory size of one re-batched batch, in bytes. A batch is cut early when
    /// reaching `batch_size` rows would exceed it. Default: 64 MiB.
    pub max_batch_bytes: usize,
    /// A partial batch that has waited this long for more rows is flushed downstream (a size-or-timeout
    /// bucket), so slow sources still make steady progress. Default: 1 s.
    pub flush_interval: Duration,
    /// Number of concurrent sink writers: at most this many [`Sink::write`](crate::Sink::write) calls are
    /// in flight at once, and with enough input exactly this many are. Default: 2.
    pub workers: usize,
    /// Number of batches transformed in parallel. The transforms run on a dedicated thread pool of this
    /// many threads, so this is the real parallelism, not a request. Default: the number of CPUs.
    pub transform_concurrency: usize,
    /// Capacity, in batches, of each bounded channel between stages. With the in-flight work of each
    /// stage this bounds memory: roughly `(2 * channel_capacity + transform_concurrency + workers + 1)`
    /// batches at once, whatever the input size. Default: 4.
    pub channel_capacity: usize,
    /// When true, batches reach the sink stage in source order even when transforms run in parallel:
    /// with `workers = 1`, `write` calls happen in exactly source order; with more workers, batches are
    /// handed to the writers in source order but concurrent writes may finish in any order.
    /// Default: false.
    pub preserve_order: bool,
    /// How often the progress hook is called at most. Default: 1 s.
    pub progress_interval: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_size: 8192,
            max_batch_bytes: 64 << 20,
            flush_interval: Duration::from_secs(1),
            workers: 2,
            transform_concurrency: std::thread::available_parallelism().map_or(2, |n| n.get()),
            channel_capacity: 4,
            preserve_order: false,
            progress_interval: Duration::from_secs(1),
        }
    }
}

impl PipelineConfig {
    /// Checks every field; returns [`Error::InvalidConfig`] naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        fn positive(field: &'static str, v: usize) -> Result<()> {
            if v == 0 {
                return Err(Error::InvalidConfig { field, reason: "must be at least 1".into() });
            }
            Ok(())
        }
        positive("batch_size", self.batch_size)?;
        positive("max_batch_bytes", self.max_batch_bytes)?;
        positive("workers", self.workers)?;
        positive("transform_concurrency", self.transform_concurrency)?;
        positive("channel_capacity", self.channel_capacity)?;
        if self.flush_interval.is_zero() {
            return Err(Error::InvalidConfig {
                field: "flush_interval",
                reason: "must be greater than zero".into(),
            });
        }
        Ok(())
    }
}

//! The [`Source`] trait and [`MemorySource`].

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use futures::stream::{self, BoxStream, StreamExt};

use crate::context::Context;
use crate::error::{Error, Result, Stage};
use crate::origin::Origins;

/// The stream a [`Source`] yields: batches or the error that ended it.
pub type BatchStream = BoxStream<'static, Result<RecordBatch>>;

/// The stream of [`Source::into_tracked_stream`]: each batch with the origins of its rows, when the
/// source knows them.
pub type TrackedStream = BoxStream<'static, Result<(RecordBatch, Option<Origins>)>>;

/// Produces Arrow [`RecordBatch`]es with a schema known up front.
///
/// Implementors MUST:
/// - yield only batches whose schema equals [`Source::schema`];
/// - report bad input either as an `Err` item that names where (file, line, column, value), which ends
///   the stream, or — when the user configured it — as [`Context::reject`] calls, continuing with the
///   good rows. Every input row is either yielded or rejected; none is dropped silently;
/// - stop work promptly when the stream is dropped (that is how the pipeline cancels a source).
///
/// Implementors SHOULD keep memory bounded by a small number of batches whatever the input size, and
/// return [`Source::total_rows`] when it is cheap to know (file footers, catalog estimates), so
/// progress can show an ETA. Batch sizes are free: the pipeline re-batches.
pub trait Source: Send {
    /// The schema of every batch this source yields.
    fn schema(&self) -> SchemaRef;

    /// The total number of rows the source will read, when it is cheap to know.
    fn total_rows(&self) -> Option<u64> {
        None
    }

    /// A short name for errors, logs and spans, e.g. `parquet:trips/`.
    fn name(&self) -> String {
        "source".to_owned()
    }

    /// Starts reading. `ctx` receives rejected rows. Dropping the stream cancels the read.
    fn into_stream(self: Box<Self>, ctx: Context) -> BatchStream;

    /// Like [`into_stream`](Source::into_stream), with the origin of every row (file and 1-based
    /// line, or file and 1-based row number) so that later stages can name the input row in errors
    /// and rejects. The pipeline reads sources this way. Default: no origins, in which case the
    /// pipeline numbers rows 1, 2, ... under the source's [`name`](Source::name). File sources SHOULD
    /// implement it.
    fn into_tracked_stream(self: Box<Self>, ctx: Context) -> TrackedStream {
        self.into_stream(ctx).map(|r| r.map(|b| (b, None))).boxed()
    }
}

/// A [`Source`] over batches already in memory.
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{Int64Array, RecordBatch};
/// use etlkit_core::MemorySource;
///
/// let batch = RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![1, 2, 3])) as _)]).unwrap();
/// let source = MemorySource::new(batch.schema(), vec![batch]).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct MemorySource {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

impl MemorySource {
    /// A source yielding `batches` in order. Fails if any batch's schema differs from `schema`.
    pub fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<Self> {
        if let Some(bad) = batches.iter().find(|b| b.schema() != schema) {
            return Err(Error::SchemaMismatch {
                stage: Stage::Source,
                expected: format!("{schema:?}"),
                found: format!("{:?}", bad.schema()),
            });
        }
        Ok(MemorySource { schema, batches })
    }
}

impl Source for MemorySource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn total_rows(&self) -> Option<u64> {
        Some(self.batches.iter().map(|b| b.num_rows() as u64).sum())
    }

    fn name(&self) -> String {
        "memory".to_owned()
    }

    fn into_stream(self: Box<Self>, _ctx: Context) -> BatchStream {
        stream::iter(self.batches.into_iter().map(Ok)).boxed()
    }
}

/// A [`Source`] over any stream of batches (e.g. a channel you feed yourself).
pub struct StreamSource {
    schema: SchemaRef,
    stream: BatchStream,
    total_rows: Option<u64>,
}

impl std::fmt::Debug for StreamSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSource").field("schema", &self.schema).finish_non_exhaustive()
    }
}

impl StreamSource {
    /// Wraps `stream`, whose batches MUST all have `schema`.
    pub fn new(schema: SchemaRef, stream: BatchStream) -> Self {
        StreamSource { schema, stream, total_rows: None }
    }

    /// Declares the total row count for progress reporting.
    pub fn with_total_rows(mut self, total: u64) -> Self {
        self.total_rows = Some(total);
        self
    }
}

impl Source for StreamSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
    fn total_rows(&self) -> Option<u64> {
        self.total_rows
    }
    fn name(&self) -> String {
        "stream".to_owned()
    }
    fn into_stream(self: Box<Self>, _ctx: Context) -> BatchStream {
        self.stream
    }
}

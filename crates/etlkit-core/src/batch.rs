//! Re-batching: split or coalesce a stream of batches into batches of exactly `batch_size` rows.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::error::Result;
use crate::origin::Origins;

/// The in-memory bytes of `batch`'s rows, counting only the slice each column views (a zero-copy
/// slice of a large batch counts its own rows, not the whole parent buffer).
pub fn batch_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or_else(|_| c.get_array_memory_size()))
        .sum()
}

/// Turns batches of any size into batches of exactly `batch_size` rows (and at most `max_bytes`
/// bytes, estimated from the input's bytes per row). Splitting is zero-copy; coalescing concatenates.
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{Int32Array, RecordBatch};
/// use etlkit_core::Rebatcher;
///
/// let b = RecordBatch::try_from_iter([("v", Arc::new(Int32Array::from_iter_values(0..10)) as _)]).unwrap();
/// let mut r = Rebatcher::new(b.schema(), 4, usize::MAX);
/// let mut out = r.push(b.clone()).unwrap();
/// out.extend(r.push(b).unwrap());
/// out.extend(r.flush().unwrap());
/// let sizes: Vec<usize> = out.iter().map(|b| b.num_rows()).collect();
/// assert_eq!(sizes, vec![4, 4, 4, 4, 4]);
/// ```
#[derive(Debug)]
pub struct Rebatcher {
    schema: SchemaRef,
    batch_size: usize,
    max_bytes: usize,
    pending: Vec<(RecordBatch, Option<Origins>)>,
    pending_rows: usize,
}

impl Rebatcher {
    /// A re-batcher for batches of `schema`. `batch_size` and `max_bytes` must be at least 1.
    pub fn new(schema: SchemaRef, batch_size: usize, max_bytes: usize) -> Self {
        Rebatcher {
            schema,
            batch_size: batch_size.max(1),
            max_bytes: max_bytes.max(1),
            pending: Vec::new(),
            pending_rows: 0,
        }
    }

    /// Rows buffered, waiting for more to fill a batch.
    pub fn pending_rows(&self) -> usize {
        self.pending_rows
    }

    /// Adds `batch`; returns the full batches now ready (possibly none).
    pub fn push(&mut self, batch: RecordBatch) -> Result<Vec<RecordBatch>> {
        Ok(self.push_tracked(batch, None)?.into_iter().map(|(b, _)| b).collect())
    }

    /// Returns whatever is buffered as one (short) batch, if anything.
    pub fn flush(&mut self) -> Result<Option<RecordBatch>> {
        Ok(self.flush_tracked()?.map(|(b, _)| b))
    }

    /// Like [`push`](Rebatcher::push), keeping each row's [`Origins`] with it through the splits
    /// and concatenations (an output batch has origins when all its pieces had them).
    pub fn push_tracked(
        &mut self,
        batch: RecordBatch,
        origins: Option<Origins>,
    ) -> Result<Vec<(RecordBatch, Option<Origins>)>> {
        let mut out = Vec::new();
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(out);
        }
        let bytes = batch_bytes(&batch);
        // Rows per output batch: batch_size, lowered so that one batch stays under max_bytes.
        let per_row = bytes.div_ceil(rows).max(1);
        let target = self.batch_size.min((self.max_bytes / per_row).max(1));
        let mut offset = 0;
        while offset < rows {
            let take = (target.saturating_sub(self.pending_rows)).max(1).min(rows - offset);
            let whole = offset == 0 && take == rows;
            let piece = if whole { batch.clone() } else { batch.slice(offset, take) };
            let piece_origins = match &origins {
                Some(o) if whole => Some(o.clone()),
                Some(o) => Some(o.slice(offset, take)),
                None => None,
            };
            offset += take;
            self.pending_rows += take;
            self.pending.push((piece, piece_origins));
            if self.pending_rows >= target {
                out.push(self.take_pending()?);
            }
        }
        Ok(out)
    }

    /// Like [`flush`](Rebatcher::flush), with origins.
    pub fn flush_tracked(&mut self) -> Result<Option<(RecordBatch, Option<Origins>)>> {
        if self.pending_rows == 0 { Ok(None) } else { self.take_pending().map(Some) }
    }

    fn take_pending(&mut self) -> Result<(RecordBatch, Option<Origins>)> {
        let parts = std::mem::take(&mut self.pending);
        self.pending_rows = 0;
        if parts.len() == 1 {
            return Ok(parts.into_iter().next().expect("one part"));
        }
        let origins: Option<Vec<Origins>> = parts.iter().map(|(_, o)| o.clone()).collect();
        let batches: Vec<RecordBatch> = parts.into_iter().map(|(b, _)| b).collect();
        let batch = arrow_select::concat::concat_batches(&self.schema, &batches)?;
        Ok((batch, origins.map(|o| Origins::concat(&o))))
    }
}

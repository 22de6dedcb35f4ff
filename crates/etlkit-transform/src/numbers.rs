//! [`RowNumbers`]: a [`Source`] adaptor appending each row's 1-based number in the source.

use std::sync::Arc;

use arrow_array::{RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use etlkit_core::{BatchStream, Context, Error, Source, Stage, TrackedStream};
use futures::StreamExt;

/// Wraps any [`Source`] and appends a non-nullable `UInt64` column holding each row's 1-based
/// number in the order the source yields rows (the first row is 1). Transforms and errors further
/// down can then name the input row ([`ExplodeConfig::row_column`](crate::ExplodeConfig::row_column),
/// [`DedupByKey::row_column`](crate::DedupByKey::row_column)).
///
/// Rows the source rejected are not numbered (the numbers count rows yielded). The inner source's
/// own row origins (file and physical line, see [`Source::into_tracked_stream`]) are passed on
/// unchanged; they are what errors name when the pipeline has them — the row number is for sources
/// without origins and for the data itself.
pub struct RowNumbers {
    inner: Box<dyn Source>,
    column: String,
    schema: SchemaRef,
}

impl std::fmt::Debug for RowNumbers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowNumbers").field("inner", &self.inner.name()).field("column", &self.column).finish()
    }
}

impl RowNumbers {
    /// `inner` with a row-number column named `column` appended. Fails if `inner` already has it.
    pub fn new(inner: Box<dyn Source>, column: impl Into<String>) -> etlkit_core::Result<Self> {
        let column = column.into();
        let base = inner.schema();
        if base.index_of(&column).is_ok() {
            return Err(Error::InvalidConfig {
                field: "row_column",
                reason: format!("`{column}` is already a column of source `{}`", inner.name()),
            });
        }
        let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(&column, DataType::UInt64, false));
        let schema = Arc::new(Schema::new_with_metadata(fields, base.metadata().clone()));
        Ok(RowNumbers { inner, column, schema })
    }
}

impl Source for RowNumbers {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn total_rows(&self) -> Option<u64> {
        self.inner.total_rows()
    }

    fn name(&self) -> String {
        self.inner.name()
    }

    fn into_stream(self: Box<Self>, ctx: Context) -> BatchStream {
        self.into_tracked_stream(ctx).map(|r| r.map(|(batch, _)| batch)).boxed()
    }

    /// Forwards the inner source's row origins (file and line) unchanged.
    fn into_tracked_stream(self: Box<Self>, ctx: Context) -> TrackedStream {
        let RowNumbers { inner, schema, .. } = *self;
        let mut next = 1u64;
        inner
            .into_tracked_stream(ctx)
            .map(move |r| {
                let (b, origins) = r?;
                let n = b.num_rows() as u64;
                let mut cols = b.columns().to_vec();
                cols.push(Arc::new(UInt64Array::from_iter_values(next..next + n)));
                next += n;
                let b = RecordBatch::try_new(schema.clone(), cols)
                    .map_err(|e| Error::stage(Stage::Source, "row_numbers", false, e))?;
                Ok((b, origins))
            })
            .boxed()
    }
}

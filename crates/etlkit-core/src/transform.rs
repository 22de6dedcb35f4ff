//! The [`Transform`] trait and [`FnTransform`], a transform from a closure.

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::context::Context;
use crate::error::Result;

/// How a transform may be scheduled.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TransformProperties {
    /// The transform keeps state across batches (e.g. de-duplication's seen-set). Stateful transforms
    /// MUST still be safe to call from several threads at once (interior synchronisation).
    pub stateful: bool,
    /// The transform's output depends on the order batches arrive in, so it must see them one at a time
    /// in source order. A pipeline with such a transform requires `transform_concurrency = 1` and
    /// rejects any other value in validation (there is no silent cap).
    pub order_sensitive: bool,
}

impl TransformProperties {
    /// Stateless and order-insensitive: may run on any number of batches at once.
    pub const PARALLEL: Self = TransformProperties { stateful: false, order_sensitive: false };
    /// Stateful but order-insensitive (e.g. de-duplication with a shared seen-set).
    pub const STATEFUL: Self = TransformProperties { stateful: true, order_sensitive: false };
    /// Stateful and order-sensitive (e.g. a running total): batches one at a time, in source order.
    pub const ORDERED: Self = TransformProperties { stateful: true, order_sensitive: true };
}

/// CPU work on a batch: one batch in, zero or more batches out.
///
/// The pipeline calls [`apply`](Transform::apply) on a dedicated thread pool with
/// `transform_concurrency` threads, possibly for several batches at once (unless
/// [`TransformProperties::order_sensitive`]).
///
/// Implementors MUST:
/// - return batches whose schema equals [`output_schema`](Transform::output_schema) of the input schema;
/// - account for every row they drop: via [`Context::reject`] for bad rows or
///   [`Context::record_deduplicated`] for duplicates; any other drop is counted as filtered;
/// - report the rows they create beyond their input with [`Context::record_added`] (a row turned
///   into three: 2), so that rows read + added = written + rejected + de-duplicated + filtered; a
///   run whose transforms return more rows than they were given and reported fails with
///   [`Error::RowAccounting`](crate::Error::RowAccounting) before anything is committed;
/// - not block on I/O (they run on CPU threads).
///
/// Implementors SHOULD avoid per-row heap allocation and may use rayon inside `apply`: it runs on the
/// pipeline's pool.
pub trait Transform: Send + Sync {
    /// A short name for errors, logs and spans.
    fn name(&self) -> &str;

    /// Scheduling properties. Default: [`TransformProperties::PARALLEL`].
    fn properties(&self) -> TransformProperties {
        TransformProperties::PARALLEL
    }

    /// The schema of this transform's output given its input schema. Default: unchanged.
    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(input.clone())
    }

    /// Transforms one batch.
    fn apply(&self, batch: RecordBatch, ctx: &Context) -> Result<Vec<RecordBatch>>;

    /// Called once after the last batch; returns anything still buffered. Default: nothing.
    fn finish(&self, _ctx: &Context) -> Result<Vec<RecordBatch>> {
        Ok(Vec::new())
    }
}

type MapFn = dyn Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync;

/// A stateless one-batch-in, one-batch-out [`Transform`] from a closure.
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{Array, Int64Array, RecordBatch};
/// use arrow_schema::{DataType, Field, Schema};
/// use etlkit_core::{Context, FnTransform, Transform};
///
/// let out = Arc::new(Schema::new(vec![Field::new("double", DataType::Int64, false)]));
/// let schema = out.clone();
/// let t = FnTransform::new("double", out, move |b: RecordBatch| {
///     let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
///     let doubled: Int64Array = ids.iter().map(|v| v.map(|v| v * 2)).collect();
///     Ok(RecordBatch::try_new(schema.clone(), vec![Arc::new(doubled)])?)
/// });
/// let input = RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![1, 2])) as _)]).unwrap();
/// let got = t.apply(input, &Context::default()).unwrap();
/// assert_eq!(got[0].column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(1), 4);
/// ```
pub struct FnTransform {
    name: String,
    output: Option<SchemaRef>,
    f: Box<MapFn>,
}

impl std::fmt::Debug for FnTransform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnTransform").field("name", &self.name).finish_non_exhaustive()
    }
}

impl FnTransform {
    /// A transform producing batches of schema `output`.
    pub fn new(
        name: impl Into<String>,
        output: SchemaRef,
        f: impl Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync + 'static,
    ) -> Self {
        FnTransform { name: name.into(), output: Some(output), f: Box::new(f) }
    }

    /// A transform that keeps the input schema (e.g. a filter or a value fix-up).
    pub fn same_schema(
        name: impl Into<String>,
        f: impl Fn(RecordBatch) -> Result<RecordBatch> + Send + Sync + 'static,
    ) -> Self {
        FnTransform { name: name.into(), output: None, f: Box::new(f) }
    }
}

impl Transform for FnTransform {
    fn name(&self) -> &str {
        &self.name
    }
    fn output_schema(&self, input: &SchemaRef) -> Result<SchemaRef> {
        Ok(self.output.clone().unwrap_or_else(|| input.clone()))
    }
    fn apply(&self, batch: RecordBatch, _ctx: &Context) -> Result<Vec<RecordBatch>> {
        Ok(vec![(self.f)(batch)?])
    }
}

//! Star-schema loading: turn source batches into fact batches with surrogate keys ([`StarSchema`]) and
//! load them through any sink ([`StarSchemaSink`]).

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use etlkit_core::{Context, LoadStats, Sink};

use crate::cache::DimensionCache;
use crate::error::{DimError, Result};

/// One use of a dimension by the fact table. Role-playing dimensions are several roles sharing one
/// cache (e.g. `pickup_location_key` from `PULocationID` and `dropoff_location_key` from
/// `DOLocationID`, both against `dim_location`).
#[derive(Debug, Clone)]
pub struct FactRole {
    /// The dimension.
    pub cache: Arc<DimensionCache>,
    /// Source columns holding the natural key, in the dimension's key order.
    pub source_columns: Vec<String>,
    /// Source columns holding the dimension's attributes (empty: members are created without them).
    pub attribute_columns: Vec<String>,
    /// The fact column that receives the surrogate key (`Int64`, never NULL).
    pub fact_column: String,
}

/// How fact rows are built from source rows: one surrogate-key column per [`FactRole`], then the
/// measure (and other pass-through) columns copied from the source.
#[derive(Debug, Clone)]
pub struct StarSchema {
    roles: Vec<FactRole>,
    measures: Vec<String>,
    output: SchemaRef,
}

impl StarSchema {
    /// Checks that every named column exists in `input` and builds the fact schema.
    pub fn new(input: &SchemaRef, roles: Vec<FactRole>, measures: Vec<String>) -> Result<Self> {
        let mut fields = Vec::new();
        for role in &roles {
            let table = &role.cache.spec().table;
            if role.source_columns.len() != role.cache.spec().key.len() {
                return Err(DimError::InvalidSpec {
                    table: table.clone(),
                    reason: format!(
                        "role `{}` maps {} columns to a {}-column key",
                        role.fact_column,
                        role.source_columns.len(),
                        role.cache.spec().key.len()
                    ),
                });
            }
            for c in role.source_columns.iter().chain(&role.attribute_columns) {
                if input.index_of(c).is_err() {
                    return Err(DimError::KeyColumn {
                        table: table.clone(),
                        column: c.clone(),
                        key: role.fact_column.clone(),
                        source: None,
                    });
                }
            }
            fields.push(Field::new(&role.fact_column, DataType::Int64, false));
        }
        for m in &measures {
            let f = input.field_with_name(m).map_err(|e| DimError::KeyColumn {
                table: "fact".into(),
                column: m.clone(),
                key: m.clone(),
                source: Some(e),
            })?;
            fields.push(f.clone());
        }
        Ok(StarSchema { roles, measures, output: Arc::new(Schema::new(fields)) })
    }

    /// The fact batches' schema.
    pub fn output_schema(&self) -> SchemaRef {
        self.output.clone()
    }

    /// The roles, in fact-column order.
    pub fn roles(&self) -> &[FactRole] {
        &self.roles
    }

    /// The distinct dimensions the roles use, in first-use order (role-playing roles share one).
    fn dimensions(&self) -> Vec<&Arc<DimensionCache>> {
        let mut out: Vec<&Arc<DimensionCache>> = Vec::new();
        for r in &self.roles {
            if !out.iter().any(|c| Arc::ptr_eq(c, &r.cache)) {
                out.push(&r.cache);
            }
        }
        out
    }

    /// Members each dimension has created so far: take this at the start of a run and pass it to
    /// [`StarSchema::add_created_counters`] at its end, so the counters describe that run only
    /// (caches live across runs).
    pub fn created_marks(&self) -> Vec<u64> {
        self.dimensions().iter().map(|c| c.stats().created).collect()
    }

    /// Adds one `{table}_created` counter per dimension to `stats` (role-playing roles share theirs):
    /// members created since `marks` ([`StarSchema::created_marks`]; empty marks count from zero).
    pub fn add_created_counters(&self, marks: &[u64], stats: &mut LoadStats) {
        for (i, cache) in self.dimensions().into_iter().enumerate() {
            let since = marks.get(i).copied().unwrap_or(0);
            let created = cache.stats().created.saturating_sub(since);
            stats.add_counter(&format!("{}_created", cache.spec().table), created);
        }
    }

    /// Resolves every role's surrogate keys for `batch` and assembles the fact batch (same rows, same
    /// order).
    pub async fn fact_batch(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let column = |name: &String| -> ArrayRef {
            batch.column(batch.schema().index_of(name).expect("checked in new")).clone()
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.output.fields().len());
        for role in &self.roles {
            let keys: Vec<ArrayRef> = role.source_columns.iter().map(column).collect();
            let attrs: Vec<ArrayRef> = role.attribute_columns.iter().map(column).collect();
            columns.push(Arc::new(role.cache.resolve_with(&keys, &attrs).await?));
        }
        columns.extend(self.measures.iter().map(column));
        Ok(RecordBatch::try_new(self.output.clone(), columns)?)
    }
}

/// A [`Sink`] that turns each batch into a fact batch with [`StarSchema::fact_batch`] and writes it to
/// `inner` (e.g. a PostgreSQL COPY sink on the fact table).
///
/// Durability is `inner`'s; new dimension members are committed by the store when they are created,
/// before the fact rows that reference them, so a rolled-back fact unit can leave unreferenced members
/// (harmless: they are reused by the re-run).
#[derive(Debug)]
pub struct StarSchemaSink<S> {
    star: StarSchema,
    inner: Arc<S>,
    /// [`StarSchema::created_marks`] at `start`: counters are per run.
    marks: std::sync::Mutex<Vec<u64>>,
}

impl<S: Sink> StarSchemaSink<S> {
    /// Wraps `inner`, which receives batches of [`StarSchema::output_schema`].
    pub fn new(star: StarSchema, inner: Arc<S>) -> Self {
        StarSchemaSink { star, inner, marks: Default::default() }
    }

    /// The wrapped sink.
    pub fn inner(&self) -> &Arc<S> {
        &self.inner
    }
}

#[async_trait]
impl<S: Sink> Sink for StarSchemaSink<S> {
    fn name(&self) -> String {
        format!("star-schema({})", self.inner.name())
    }

    async fn start(&self, _schema: &SchemaRef) -> etlkit_core::Result<()> {
        *self.marks.lock().expect("star sink poisoned") = self.star.created_marks();
        self.inner.start(&self.star.output_schema()).await
    }

    async fn write(&self, batch: RecordBatch, ctx: &Context) -> etlkit_core::Result<u64> {
        let fact = self.star.fact_batch(&batch).await?;
        self.inner.write(fact, ctx).await
    }

    async fn finish(&self) -> etlkit_core::Result<LoadStats> {
        let mut stats = self.inner.finish().await?;
        self.star.add_created_counters(&self.marks.lock().expect("star sink poisoned"), &mut stats);
        Ok(stats)
    }

    async fn abort(&self) {
        self.inner.abort().await;
    }
}

//! Dimensions: natural keys, attributes, roles (role-playing dimensions are one dimension with
//! several roles), the unknown member, attribute lookups from another file, and the date dimension.

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Date32Type;
use arrow_array::{Array, ArrayRef, BooleanArray, Int16Array, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, SchemaRef};
use arrow_select::filter::filter_record_batch;
use async_trait::async_trait;
use etlkit_core::{Context, Pipeline, PipelineConfig, Transform};
use etlkit_dimcache::{DimensionSpec, DimensionStore, NullKeyPolicy};
use etlkit_postgres::{
    ChangeDetection, OnConflict, PgCopySink, PgDimensionStore, PgSinkConfig, WriteMode, sqlx::PgPool,
};
use etlkit_source::{Input, OnError, list_inputs, open_file};

use crate::error::{Result, StarError};
use crate::inputs::{Conform, InputsConfig, TargetColumn, map_file};

/// What kind of dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DimensionKind {
    /// Members come from the input rows (and an optional [`AttributeLookup`]). The default.
    #[default]
    Regular,
    /// A calendar: natural key `date` (`Date32`), attributes `year`, `quarter`, `month`, `day` and
    /// `iso_weekday` (1 = Monday … 7 = Sunday), all `Int16`, computed for each new member from its
    /// date. Roles may use a date or a timestamp column (its date, in UTC, is the key).
    Date,
}

/// One use of a dimension by the fact table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DimensionRole {
    /// Target columns holding the natural key, in the dimension's key order.
    pub key_columns: Vec<String>,
    /// Target columns holding the dimension's attributes, in attribute order, stored on members
    /// this role creates (existing members keep theirs). Empty: created without attributes.
    /// Default: empty.
    pub attribute_columns: Vec<String>,
    /// The fact column receiving the surrogate key (`bigint NOT NULL`).
    pub fact_column: String,
}

/// Attributes of a dimension's members from another file (e.g. zone names for location ids): every
/// row of the file is upserted into the dimension table (inserted, or its attributes updated) before
/// the load starts. Rows with a NULL in their key are skipped (counted in
/// [`StarReport::lookup_rows_without_key`](crate::StarReport::lookup_rows_without_key)).
/// CSV columns are read as the dimension's key and attribute types.
#[derive(Debug, Clone, PartialEq)]
pub struct AttributeLookup {
    /// The file(s).
    pub input: Input,
    /// File columns holding the natural key, in key order (matched like input columns).
    pub key_columns: Vec<String>,
    /// File columns holding the attributes, in the dimension's attribute order.
    pub attribute_columns: Vec<String>,
}

/// A dimension table and its roles. Build with [`DimensionConfig::new`] or
/// [`DimensionConfig::date`], then [`DimensionConfig::role`].
#[derive(Debug, Clone, PartialEq)]
pub struct DimensionConfig {
    /// The table (created if missing: `bigint` identity surrogate key, `UNIQUE` natural key).
    pub table: String,
    /// The surrogate-key column.
    pub surrogate: String,
    /// Natural-key columns of the table, with their types.
    pub key: Vec<Field>,
    /// Attribute columns of the table. Default: none (date dimensions: the calendar attributes).
    pub attributes: Vec<Field>,
    /// The roles; at least one. Several roles make it role-playing (one table, one cache).
    pub roles: Vec<DimensionRole>,
    /// The surrogate key a NULL natural key resolves to (the unknown member, created with the
    /// table). `None`: a NULL key fails the run. Default `Some(-1)`.
    pub unknown_member: Option<i64>,
    /// Attributes from another file. Default: none.
    pub lookup: Option<AttributeLookup>,
    /// Regular or date. Default [`DimensionKind::Regular`].
    pub kind: DimensionKind,
}

impl DimensionConfig {
    /// A regular dimension without attributes or roles.
    pub fn new(table: impl Into<String>, key: Vec<Field>, surrogate: impl Into<String>) -> Self {
        DimensionConfig {
            table: table.into(),
            surrogate: surrogate.into(),
            key,
            attributes: Vec::new(),
            roles: Vec::new(),
            unknown_member: Some(-1),
            lookup: None,
            kind: DimensionKind::Regular,
        }
    }

    /// A date dimension `table` (surrogate `date_key`, natural key `date`, calendar attributes).
    pub fn date(table: impl Into<String>) -> Self {
        let small = |n: &str| Field::new(n, DataType::Int16, true);
        DimensionConfig {
            attributes: ["year", "quarter", "month", "day", "iso_weekday"].map(small).to_vec(),
            kind: DimensionKind::Date,
            ..DimensionConfig::new(table, vec![Field::new("date", DataType::Date32, false)], "date_key")
        }
    }

    /// Adds attribute columns.
    pub fn attributes(mut self, attributes: Vec<Field>) -> Self {
        self.attributes.extend(attributes);
        self
    }

    /// Adds a role: natural key from `key_columns` (target columns), surrogate key into
    /// `fact_column`.
    pub fn role<S: Into<String>>(
        mut self,
        key_columns: impl IntoIterator<Item = S>,
        fact_column: &str,
    ) -> Self {
        self.roles.push(DimensionRole {
            key_columns: key_columns.into_iter().map(Into::into).collect(),
            attribute_columns: Vec::new(),
            fact_column: fact_column.to_owned(),
        });
        self
    }

    /// Adds a role that also stores attributes (from `attribute_columns`) on the members it creates.
    pub fn role_with_attributes<S: Into<String>>(
        mut self,
        key_columns: impl IntoIterator<Item = S>,
        attribute_columns: impl IntoIterator<Item = S>,
        fact_column: &str,
    ) -> Self {
        self.roles.push(DimensionRole {
            key_columns: key_columns.into_iter().map(Into::into).collect(),
            attribute_columns: attribute_columns.into_iter().map(Into::into).collect(),
            fact_column: fact_column.to_owned(),
        });
        self
    }

    /// Sets the attribute lookup.
    pub fn lookup(mut self, lookup: AttributeLookup) -> Self {
        self.lookup = Some(lookup);
        self
    }

    /// The dimension-cache spec.
    pub fn spec(&self) -> DimensionSpec {
        let mut spec = DimensionSpec::new(&self.table, self.key.clone(), &self.surrogate);
        spec.attributes = self.attributes.clone();
        spec.null_key = match self.unknown_member {
            Some(surrogate) => NullKeyPolicy::Unknown { surrogate },
            None => NullKeyPolicy::Error,
        };
        spec
    }

    /// Checks the dimension against the target columns.
    pub fn validate(&self, columns: &[TargetColumn]) -> Result<()> {
        let bad =
            |reason: String| Err(StarError::config("dimensions", format!("`{}`: {reason}", self.table)));
        self.spec().validate()?;
        if self.roles.is_empty() {
            return bad("has no role".into());
        }
        for role in &self.roles {
            if role.key_columns.len() != self.key.len() {
                return bad(format!(
                    "role `{}` maps {} columns to a {}-column key",
                    role.fact_column,
                    role.key_columns.len(),
                    self.key.len()
                ));
            }
            if !role.attribute_columns.is_empty() && role.attribute_columns.len() != self.attributes.len() {
                return bad(format!(
                    "role `{}` gives {} attribute columns",
                    role.fact_column,
                    role.attribute_columns.len()
                ));
            }
            if self.kind == DimensionKind::Date && !role.attribute_columns.is_empty() {
                return bad("a date dimension computes its attributes".into());
            }
            for c in role.key_columns.iter().chain(&role.attribute_columns) {
                let Some(t) = columns.iter().find(|t| &t.name == c) else {
                    return bad(format!("role `{}`: `{c}` is not a target column", role.fact_column));
                };
                if self.kind == DimensionKind::Date
                    && !matches!(t.data_type, DataType::Date32 | DataType::Date64 | DataType::Timestamp(..))
                {
                    return bad(format!("role `{}`: `{c}` is not a date or timestamp", role.fact_column));
                }
            }
        }
        if let Some(l) = &self.lookup {
            if l.key_columns.len() != self.key.len() || l.attribute_columns.len() != self.attributes.len() {
                return bad("lookup columns do not match the key and attributes".into());
            }
            if self.kind == DimensionKind::Date {
                return bad("a date dimension has no lookup".into());
            }
        }
        Ok(())
    }

    /// The column a role's natural key is read from in the conformed batches: the target column,
    /// or for a date dimension over a non-date column, the derived date column.
    pub(crate) fn source_column(&self, role: &DimensionRole, columns: &[TargetColumn]) -> String {
        let c = &role.key_columns[0];
        let is_date32 = columns.iter().any(|t| &t.name == c && t.data_type == DataType::Date32);
        if self.kind == DimensionKind::Date && !is_date32 {
            derived_date_name(&role.fact_column)
        } else {
            c.clone()
        }
    }
}

/// Name of the `Date32` column derived for a date role over a timestamp (not stored anywhere).
pub(crate) fn derived_date_name(fact_column: &str) -> String {
    format!("etlkit_date_of_{fact_column}")
}

/// A [`DimensionStore`] that computes a date dimension's calendar attributes for each new member.
pub(crate) struct CalendarStore(pub Arc<PgDimensionStore>);

#[async_trait]
impl DimensionStore for CalendarStore {
    async fn prepare(&self, spec: &DimensionSpec) -> etlkit_dimcache::Result<()> {
        self.0.prepare(spec).await
    }

    async fn load(&self, spec: &DimensionSpec) -> etlkit_dimcache::Result<Vec<RecordBatch>> {
        self.0.load(spec).await
    }

    async fn get_or_create(
        &self,
        spec: &DimensionSpec,
        members: RecordBatch,
    ) -> etlkit_dimcache::Result<Int64Array> {
        let days = members.column(0).as_primitive::<Date32Type>();
        let mut cols: [Vec<Option<i16>>; 5] = Default::default();
        for d in days.iter() {
            let parts = d.map(calendar);
            for (k, col) in cols.iter_mut().enumerate() {
                col.push(parts.map(|p| p[k]));
            }
        }
        let mut columns: Vec<ArrayRef> = vec![members.column(0).clone()];
        columns.extend(cols.into_iter().map(|c| Arc::new(Int16Array::from(c)) as ArrayRef));
        let members = RecordBatch::try_new(members.schema(), columns)?;
        self.0.get_or_create(spec, members).await
    }
}

/// `[year, quarter, month, day, iso_weekday]` of `days` since 1970-01-01 (proleptic Gregorian).
pub(crate) fn calendar(days: i32) -> [i16; 5] {
    // Howard Hinnant's civil_from_days.
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let weekday = (i64::from(days) + 3).rem_euclid(7) + 1; // 1970-01-01 was a Thursday (4)
    [year as i16, ((month - 1) / 3 + 1) as i16, month as i16, day as i16, weekday as i16]
}

/// Upserts every row of `dim`'s lookup file(s) with a whole natural key into its table; returns the
/// rows read and, of those, the rows skipped for a NULL in their key.
pub(crate) async fn load_lookup(
    pool: &PgPool,
    store: &PgDimensionStore,
    dim: &DimensionConfig,
    inputs: &InputsConfig,
) -> Result<(u64, u64)> {
    let Some(lookup) = &dim.lookup else { return Ok((0, 0)) };
    let spec = dim.spec();
    let fields: Vec<&Field> = dim.key.iter().chain(&dim.attributes).collect();
    let columns: Vec<TargetColumn> = fields
        .iter()
        .zip(lookup.key_columns.iter().chain(&lookup.attribute_columns))
        .map(|(f, file_col)| TargetColumn {
            name: f.name().clone(),
            data_type: f.data_type().clone(),
            aliases: vec![file_col.clone()],
            optional: false,
        })
        .collect();
    let files: Vec<PathBuf> = list_inputs(std::slice::from_ref(&lookup.input))?;
    let (mut read, mut keyless) = (0, 0);
    for file in files {
        let source = open_file(&file, &inputs.open)?;
        // The file's own names must match (not the dimension's), so match only the aliases.
        let file_only: Vec<TargetColumn> =
            columns.iter().map(|c| TargetColumn { name: c.aliases[0].clone(), ..c.clone() }).collect();
        let mapping = map_file(&file, &source.schema(), &file_only, inputs.matching)?;
        let source = open_file(&file, &mapping.open_options(&inputs.open))?;
        let conform = Conform::new(&file, mapping, &columns, &[], OnError::Fail)?;
        let keyed = KeyedRows { key_columns: dim.key.len(), file: file.clone() };
        let sink = PgCopySink::new(
            pool.clone(),
            PgSinkConfig {
                table: store.table(&spec),
                mode: WriteMode::Upsert {
                    key: dim.key.iter().map(|f| f.name().clone()).collect(),
                    on_conflict: OnConflict::DoUpdate { compare: ChangeDetection::AllColumns },
                },
                ..Default::default()
            },
        )?;
        let stats = Pipeline::from_boxed(source, Arc::new(sink))
            .config(PipelineConfig { workers: 1, ..Default::default() })
            .transform(conform)
            .transform(keyed)
            .run()
            .await
            .map_err(|e| StarError::Load { file: file.clone(), source: Box::new(e) })?;
        read += stats.rows_read;
        keyless += stats.rows_filtered;
    }
    Ok((read, keyless))
}

/// Drops lookup rows with a NULL in their natural key (counted as filtered): no fact row resolves
/// to such a member (a NULL key is the unknown member's), and as NULLs never conflict, an upsert
/// would add the row again on every run.
struct KeyedRows {
    /// The key is the first this many columns.
    key_columns: usize,
    file: PathBuf,
}

impl Transform for KeyedRows {
    fn name(&self) -> &str {
        "keyed-lookup-rows"
    }

    fn output_schema(&self, input: &SchemaRef) -> etlkit_core::Result<SchemaRef> {
        Ok(input.clone())
    }

    fn apply(&self, batch: RecordBatch, ctx: &Context) -> etlkit_core::Result<Vec<RecordBatch>> {
        let key = &batch.columns()[..self.key_columns];
        if key.iter().all(|c| c.null_count() == 0) {
            return Ok(vec![batch]);
        }
        let keep =
            BooleanArray::from_iter((0..batch.num_rows()).map(|r| Some(key.iter().all(|c| c.is_valid(r)))));
        tracing::warn!(
            file = %self.file.display(),
            rows = keep.false_count(),
            "lookup rows with a NULL key skipped"
        );
        ctx.keep_rows(&keep);
        let kept = filter_record_batch(&batch, &keep)
            .map_err(|e| etlkit_core::Error::stage(etlkit_core::Stage::Transform, self.name(), false, e))?;
        Ok(if kept.num_rows() == 0 { Vec::new() } else { vec![kept] })
    }
}

#[cfg(test)]
mod tests {
    use super::calendar;

    #[test]
    fn calendar_attributes_of_known_dates() {
        assert_eq!(calendar(0), [1970, 1, 1, 1, 4]); // a Thursday
        assert_eq!(calendar(19_782), [2024, 1, 2, 29, 4]); // 2024-02-29, Thursday
        assert_eq!(calendar(19_723), [2024, 1, 1, 1, 1]); // 2024-01-01, Monday
        assert_eq!(calendar(-1), [1969, 4, 12, 31, 3]); // a Wednesday
        assert_eq!(calendar(20_088), [2024, 4, 12, 31, 2]); // 2024-12-31, Tuesday
    }
}

//! Conforming Arrow batches to a target table: each input column is matched to a table column by
//! name, then cast to the Arrow type whose binary COPY encoding is exactly that column's
//! PostgreSQL type (e.g. `Int64` → `Int32` for `integer`, range-checked). Conversions are strict
//! (`etlkit_core::cast_strict`): a value the cast would change is refused, as PostgreSQL's text
//! COPY refuses `2.5` for `integer` or `1e39` for `real` — a fraction into an integer, a float
//! overflowing `real`, a time of day into a `date`, an integer a float cannot hold exactly.
//! Dictionary columns are converted as their values. Two exceptions follow PostgreSQL: a value with
//! more decimal places than a `numeric(p, s)` column's scale is rounded to it, and timestamps and
//! times of day follow [`NanosPolicy`] for sub-microsecond digits. Text timestamps are instants: an offset is applied
//! (`2024-06-01T23:30:00-05:00` is `2024-06-02 04:30` UTC, also in a `timestamp` column, where
//! PostgreSQL's own text input would drop the offset); text without one is taken as UTC. Values that do not fit produce
//! [`PgError::InvalidValue`] naming the row, the column and the value.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampNanosecondType;
use arrow_array::{Array, ArrayRef, FixedSizeBinaryArray, GenericListArray, RecordBatch, StringArray};
use arrow_cast::cast::{CastOptions, cast_with_options};
use arrow_cast::display::{ArrayFormatter, FormatOptions};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use etlkit_core::cast_strict;
use pgpq::encoders::{EncoderBuilder, StringEncoderBuilder};
use pgpq::pg_schema::PostgresType;

use crate::catalog::{PgType, TableColumn};
use crate::error::{PgError, Result};

/// What to do with timestamps and times of day carrying nanoseconds (PostgreSQL stores microseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NanosPolicy {
    /// Refuse a value with a non-zero sub-microsecond part (error naming row, column, value).
    /// Whole-microsecond values pass unchanged. The default: nothing is lost silently.
    #[default]
    Reject,
    /// Truncate to microseconds (toward zero), as `arrow_cast` does.
    Truncate,
}

/// How text values containing NUL bytes (which PostgreSQL text cannot hold) are handled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NulPolicy {
    /// Fail with an error naming the row and the column. The default.
    #[default]
    Reject,
    /// Replace each NUL byte with this string (may be empty, which removes NULs).
    Replace(String),
}

/// The scale used when a float, integer or string goes into a `numeric` column declared without a
/// scale. Floats are rounded to this many decimal places.
pub const DEFAULT_NUMERIC_SCALE: i8 = 10;

#[derive(Debug, Clone)]
struct ColumnPlan {
    /// Index of the column in the input batch.
    input: usize,
    name: String,
    pg: PgType,
    declared: String,
    target: DataType,
    nul_check: bool,
    /// A value is needed (an upsert key column): NULL is an invalid value.
    required: bool,
}

/// A plan to turn input batches into COPY-ready batches for one table.
#[derive(Debug, Clone)]
pub(crate) struct Conformer {
    columns: Vec<ColumnPlan>,
    target_schema: SchemaRef,
    nanos: NanosPolicy,
    nul: NulPolicy,
}

impl Conformer {
    /// Plans the conversion of `input` into `table`'s columns. Every input column must exist in the
    /// table (exact name; a case-insensitive match is used when it is unique); table columns
    /// missing from the input get their defaults.
    pub(crate) fn plan(
        table_name: &str,
        table: &[TableColumn],
        input: &Schema,
        nanos: NanosPolicy,
        nul: NulPolicy,
    ) -> Result<Self> {
        let by_name: HashMap<&str, &TableColumn> = table.iter().map(|c| (c.name.as_str(), c)).collect();
        let mut columns = Vec::with_capacity(input.fields().len());
        for (i, field) in input.fields().iter().enumerate() {
            let col = match by_name.get(field.name().as_str()) {
                Some(c) => *c,
                None => {
                    let mut ci = table.iter().filter(|c| c.name.eq_ignore_ascii_case(field.name()));
                    match (ci.next(), ci.next()) {
                        (Some(c), None) => c,
                        _ => {
                            return Err(PgError::UnknownColumn {
                                table: table_name.to_owned(),
                                column: field.name().clone(),
                            });
                        }
                    }
                }
            };
            let pg = col.pg_type.clone().ok_or_else(|| PgError::UnsupportedType {
                column: col.name.clone(),
                reason: format!("PostgreSQL type `{}` is not supported by the COPY sink", col.declared),
            })?;
            let target = target_type(field.data_type(), &pg).ok_or_else(|| PgError::UnsupportedType {
                column: col.name.clone(),
                reason: format!(
                    "cannot load Arrow type {} into PostgreSQL type `{}`",
                    field.data_type(),
                    col.declared
                ),
            })?;
            let nul_check = matches!(pg, PgType::Text | PgType::Json | PgType::Jsonb | PgType::TextArray);
            columns.push(ColumnPlan {
                input: i,
                name: col.name.clone(),
                pg,
                declared: col.declared.clone(),
                target,
                nul_check,
                required: false,
            });
        }
        let target_schema = Arc::new(Schema::new(
            columns.iter().map(|c| Field::new(&c.name, c.target.clone(), true)).collect::<Vec<_>>(),
        ));
        Ok(Conformer { columns, target_schema, nanos, nul })
    }

    /// Makes a NULL in any of `columns` an invalid value (upsert keys: NULLs never conflict, so a
    /// row with one would be inserted again by every run).
    pub(crate) fn require(&mut self, columns: &[String]) {
        for c in &mut self.columns {
            c.required |= columns.contains(&c.name);
        }
    }

    /// The table column names, in COPY order.
    pub(crate) fn column_names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.name.as_str())
    }

    /// The schema of conformed batches.
    pub(crate) fn target_schema(&self) -> &SchemaRef {
        &self.target_schema
    }

    /// The PostgreSQL type of each column, in COPY order.
    pub(crate) fn pg_types(&self) -> Vec<PgType> {
        self.columns.iter().map(|c| c.pg.clone()).collect()
    }

    /// pgpq encoder builders for the conformed schema (JSON columns get json/jsonb output).
    pub(crate) fn encoder_builders(&self) -> Result<HashMap<String, EncoderBuilder>> {
        let mut out = HashMap::new();
        for (plan, field) in self.columns.iter().zip(self.target_schema.fields()) {
            let builder = match plan.pg {
                PgType::Json | PgType::Jsonb => {
                    let output =
                        if plan.pg == PgType::Json { PostgresType::Json } else { PostgresType::Jsonb };
                    EncoderBuilder::String(
                        StringEncoderBuilder::new_with_output(field.clone(), output)
                            .map_err(PgError::Encode)?,
                    )
                }
                _ => EncoderBuilder::try_new(field.clone()).map_err(PgError::Encode)?,
            };
            out.insert(plan.name.clone(), builder);
        }
        Ok(out)
    }

    /// Converts one batch. `first_row` is the 1-based number of the batch's first row, for errors.
    pub(crate) fn conform(&self, batch: &RecordBatch, first_row: u64) -> Result<RecordBatch> {
        let mut arrays = Vec::with_capacity(self.columns.len());
        for plan in &self.columns {
            let input = batch.column(plan.input);
            let mut out = self.convert(plan, input, first_row)?;
            if plan.required
                && out.null_count() > 0
                && let Some(i) = (0..out.len()).find(|&i| out.is_null(i))
            {
                let reason = "is NULL in an upsert key column (NULL keys never conflict: every run would insert the row again)";
                return Err(invalid(plan, input, i, first_row, reason));
            }
            if plan.nul_check {
                out = self.check_nul(plan, out, first_row)?;
            }
            arrays.push(out);
        }
        RecordBatch::try_new(self.target_schema.clone(), arrays)
            .map_err(|source| PgError::Arrow { column: "*".into(), source })
    }

    fn convert(&self, plan: &ColumnPlan, input: &ArrayRef, first_row: u64) -> Result<ArrayRef> {
        if input.data_type() == &plan.target {
            return Ok(input.clone());
        }
        // A dictionary is converted as its values (so its floats, decimals and nanoseconds get the
        // same checks as plain ones).
        let input = &match input.data_type() {
            DataType::Dictionary(_, values) => cast_exact(input, values, &plan.name)?,
            _ => input.clone(),
        };
        let from = input.data_type();
        if from == &plan.target {
            return Ok(input.clone());
        }
        match (&plan.pg, from) {
            (PgType::Uuid, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
                let s = cast_exact(input, &DataType::Utf8, &plan.name)?;
                return parse_uuids(s.as_string::<i32>(), plan, first_row);
            }
            (PgType::Timestamp | PgType::Timestamptz, DataType::Timestamp(TimeUnit::Nanosecond, _))
                if self.nanos == NanosPolicy::Reject =>
            {
                let ns = input.as_primitive::<TimestampNanosecondType>();
                if let Some(i) = (0..ns.len()).find(|&i| ns.is_valid(i) && ns.value(i) % 1000 != 0) {
                    return Err(invalid(
                        plan,
                        input,
                        i,
                        first_row,
                        "has nanoseconds, which PostgreSQL cannot store (set NanosPolicy::Truncate to truncate)",
                    ));
                }
            }
            // Timestamps: nanoseconds were checked above as `NanosPolicy` says; text has
            // sub-microsecond digits refused (below) unless truncating them was asked for.
            (PgType::Timestamp | PgType::Timestamptz, DataType::Timestamp(..)) => {
                return checked_cast(plan, input, first_row);
            }
            (PgType::Timestamp | PgType::Timestamptz | PgType::Time, _)
                if self.nanos == NanosPolicy::Truncate =>
            {
                return checked_cast(plan, input, first_row);
            }
            _ => {}
        }
        // numeric(p, s) rounds to its scale, as PostgreSQL does; a float is rounded from its
        // shortest decimal text (0.285 → 0.29, as PostgreSQL's float8 → numeric, not from the binary
        // 0.28499…). Arrays have no per-row checks.
        if plan.target.is_decimal() && from.is_floating() {
            let text = cast_exact(input, &DataType::Utf8, &plan.name)?;
            return checked_cast(plan, &text, first_row);
        }
        if plan.target.is_decimal() || matches!(plan.target, DataType::List(_)) {
            return checked_cast(plan, input, first_row);
        }
        // Everything else: a value the cast would change (a fraction into an integer, a float
        // overflowing `real`, a time of day into a date) is refused, as a plain cast would not.
        let (out, bad) = cast_strict(input, &plan.target)
            .map_err(|source| PgError::Arrow { column: plan.name.clone(), source })?;
        if let Some((i, why)) = bad.first() {
            let reason = match why.starts_with("not a valid") {
                true => format!("does not fit column type `{}`", plan.declared),
                false => format!("does not fit column type `{}` ({why})", plan.declared),
            };
            return Err(invalid(plan, input, *i, first_row, &reason));
        }
        Ok(out)
    }

    fn check_nul(&self, plan: &ColumnPlan, array: ArrayRef, first_row: u64) -> Result<ArrayRef> {
        // Text arrays: check the element strings; the row is the list row holding the element.
        if let DataType::List(_) = array.data_type() {
            let list = array.as_list::<i32>();
            let values = list.values();
            if !has_nul(values) {
                return Ok(array);
            }
            let fixed = self.check_nul(plan, values.clone(), first_row).map_err(|e| match e {
                PgError::InvalidValue { origin, row, column, value, reason } => {
                    // Map the element index back to its list row.
                    let elem = (row - first_row) as usize;
                    let offsets = list.value_offsets();
                    let list_row = offsets.partition_point(|&o| (o as usize) <= elem).saturating_sub(1);
                    PgError::InvalidValue { origin, row: first_row + list_row as u64, column, value, reason }
                }
                other => other,
            })?;
            let field = match list.data_type() {
                DataType::List(f) => f.clone(),
                _ => unreachable!("checked above"),
            };
            let rebuilt =
                GenericListArray::<i32>::try_new(field, list.offsets().clone(), fixed, list.nulls().cloned())
                    .map_err(|source| PgError::Arrow { column: plan.name.clone(), source })?;
            return Ok(Arc::new(rebuilt));
        }
        if !has_nul(&array) {
            return Ok(array);
        }
        match &self.nul {
            NulPolicy::Reject => {
                let i = first_nul_row(&array).unwrap_or(0);
                Err(invalid(
                    plan,
                    &array,
                    i,
                    first_row,
                    "contains a NUL byte, which PostgreSQL text cannot hold",
                ))
            }
            NulPolicy::Replace(with) => {
                let utf8 = cast_exact(&array, &DataType::Utf8, &plan.name)?;
                let replaced: StringArray =
                    utf8.as_string::<i32>().iter().map(|v| v.map(|s| s.replace('\0', with))).collect();
                let replaced: ArrayRef = Arc::new(replaced);
                if array.data_type() == &DataType::Utf8 {
                    Ok(replaced)
                } else {
                    cast_exact(&replaced, array.data_type(), &plan.name)
                }
            }
        }
    }
}

/// Cheap test: does any string value of `array` contain a NUL byte? (May report true for bytes
/// outside a slice; callers then scan rows.)
fn has_nul(array: &ArrayRef) -> bool {
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().values().as_slice().contains(&0),
        DataType::LargeUtf8 => array.as_string::<i64>().values().as_slice().contains(&0),
        DataType::Utf8View => array.as_string_view().iter().any(|v| v.is_some_and(|s| s.contains('\0'))),
        _ => false,
    }
}

fn first_nul_row(array: &ArrayRef) -> Option<usize> {
    fn find<'a>(it: impl Iterator<Item = Option<&'a str>>) -> Option<usize> {
        it.enumerate().find(|(_, v)| v.is_some_and(|s| s.contains('\0'))).map(|(i, _)| i)
    }
    match array.data_type() {
        DataType::Utf8 => find(array.as_string::<i32>().iter()),
        DataType::LargeUtf8 => find(array.as_string::<i64>().iter()),
        DataType::Utf8View => find(array.as_string_view().iter()),
        _ => None,
    }
}

/// The Arrow type to encode `from` as, for a column of type `pg`; `None` when unsupported.
fn target_type(from: &DataType, pg: &PgType) -> Option<DataType> {
    use DataType as D;
    let is_int = |t: &D| {
        matches!(t, D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64)
    };
    let is_float = |t: &D| matches!(t, D::Float16 | D::Float32 | D::Float64);
    let is_str = |t: &D| matches!(t, D::Utf8 | D::LargeUtf8 | D::Utf8View);
    let from = match from {
        D::Dictionary(_, v) => v.as_ref(),
        other => other,
    };
    Some(match pg {
        PgType::Bool if matches!(from, D::Boolean) || is_str(from) || is_int(from) => D::Boolean,
        PgType::Int2 if is_int(from) || is_float(from) || is_str(from) || from.is_decimal() => D::Int16,
        PgType::Int4 if is_int(from) || is_float(from) || is_str(from) || from.is_decimal() => D::Int32,
        PgType::Int8 if is_int(from) || is_float(from) || is_str(from) || from.is_decimal() => D::Int64,
        PgType::Float4 if is_int(from) || is_float(from) || is_str(from) || from.is_decimal() => D::Float32,
        PgType::Float8 if is_int(from) || is_float(from) || is_str(from) || from.is_decimal() => D::Float64,
        PgType::Numeric { .. } => match from {
            D::Decimal32(..) | D::Decimal64(..) | D::Decimal128(..) | D::UInt64 => from.clone(),
            D::Decimal256(_, s) => D::Decimal128(38, *s),
            t if is_int(t) => D::Decimal128(38, 0),
            t if is_float(t) || is_str(t) => {
                let scale = match pg {
                    PgType::Numeric { precision_scale: Some((_, s)) } => *s,
                    _ => DEFAULT_NUMERIC_SCALE,
                };
                D::Decimal128(38, scale)
            }
            _ => return None,
        },
        PgType::Text | PgType::Json | PgType::Jsonb => match from {
            D::Utf8 | D::LargeUtf8 | D::Utf8View
                if !matches!(pg, PgType::Json | PgType::Jsonb) || from == &D::Utf8 =>
            {
                from.clone()
            }
            D::Binary | D::LargeBinary | D::List(_) | D::LargeList(_) | D::Struct(_) | D::Map(..) => {
                return None;
            }
            _ => D::Utf8,
        },
        PgType::Bytea => match from {
            D::Binary | D::LargeBinary | D::FixedSizeBinary(_) => from.clone(),
            D::BinaryView => D::Binary,
            t if is_str(t) => D::Binary,
            _ => return None,
        },
        PgType::Date => match from {
            D::Date32 | D::Date64 | D::Timestamp(..) | D::Utf8 | D::LargeUtf8 | D::Utf8View => D::Date32,
            _ => return None,
        },
        PgType::Time => match from {
            D::Time32(_) => from.clone(),
            D::Time64(_) | D::Utf8 | D::LargeUtf8 | D::Utf8View => D::Time64(TimeUnit::Microsecond),
            _ => return None,
        },
        PgType::Timestamp | PgType::Timestamptz => match from {
            D::Timestamp(TimeUnit::Nanosecond, tz) => D::Timestamp(TimeUnit::Microsecond, tz.clone()),
            D::Timestamp(..) => from.clone(),
            D::Date32 | D::Date64 | D::Utf8 | D::LargeUtf8 | D::Utf8View => {
                D::Timestamp(TimeUnit::Microsecond, None)
            }
            _ => return None,
        },
        PgType::Uuid => match from {
            D::FixedSizeBinary(16) => from.clone(),
            t if is_str(t) => D::FixedSizeBinary(16),
            _ => return None,
        },
        PgType::Int2Array | PgType::Int4Array | PgType::Int8Array | PgType::TextArray => {
            let item = match from {
                D::List(f) | D::LargeList(f) | D::FixedSizeList(f, _) => f.data_type(),
                _ => return None,
            };
            let elem = match pg {
                PgType::Int2Array if is_int(item) => D::Int16,
                PgType::Int4Array if is_int(item) => D::Int32,
                PgType::Int8Array if is_int(item) => D::Int64,
                PgType::TextArray if is_str(item) => D::Utf8,
                _ => return None,
            };
            D::List(Arc::new(Field::new("item", elem, true)))
        }
        _ => return None,
    })
}

fn cast_exact(array: &ArrayRef, to: &DataType, column: &str) -> Result<ArrayRef> {
    let opts = CastOptions { safe: false, ..Default::default() };
    cast_with_options(array, to, &opts).map_err(|source| PgError::Arrow { column: column.to_owned(), source })
}

/// Casts with `safe = true` (failures become NULL), then reports the first value that turned NULL.
fn checked_cast(plan: &ColumnPlan, input: &ArrayRef, first_row: u64) -> Result<ArrayRef> {
    if matches!(plan.target, DataType::List(_)) {
        // Nested: a failed element cast cannot be traced to its row cheaply; use the strict cast,
        // whose message names the value.
        return cast_exact(input, &plan.target, &plan.name);
    }
    let out = cast_with_options(input, &plan.target, &CastOptions::default())
        .map_err(|source| PgError::Arrow { column: plan.name.clone(), source })?;
    if out.null_count() > input.logical_null_count()
        && let Some(i) = (0..input.len()).find(|&i| input.is_valid(i) && out.is_null(i))
    {
        let reason = format!("does not fit column type `{}`", plan.declared);
        return Err(invalid(plan, input, i, first_row, &reason));
    }
    Ok(out)
}

fn invalid(plan: &ColumnPlan, array: &ArrayRef, i: usize, first_row: u64, reason: &str) -> PgError {
    let value = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())
        .map(|f| f.value(i).to_string())
        .unwrap_or_else(|_| "<unprintable>".into());
    let value =
        if value.len() > 200 { format!("{}...", &value[..value.floor_char_boundary(200)]) } else { value };
    PgError::InvalidValue {
        origin: None,
        row: first_row + i as u64,
        column: plan.name.clone(),
        value: format!("{value:?}"),
        reason: reason.to_owned(),
    }
}

fn parse_uuids(s: &StringArray, plan: &ColumnPlan, first_row: u64) -> Result<ArrayRef> {
    let mut bytes: Vec<Option<[u8; 16]>> = Vec::with_capacity(s.len());
    for (i, v) in s.iter().enumerate() {
        match v {
            None => bytes.push(None),
            Some(text) => match parse_uuid(text) {
                Some(b) => bytes.push(Some(b)),
                None => {
                    let arr: ArrayRef = Arc::new(s.clone());
                    return Err(invalid(plan, &arr, i, first_row, "is not a UUID"));
                }
            },
        }
    }
    let arr = FixedSizeBinaryArray::try_from_sparse_iter_with_size(bytes.into_iter(), 16)
        .map_err(|source| PgError::Arrow { column: plan.name.clone(), source })?;
    Ok(Arc::new(arr))
}

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hyphens optional, braces allowed), like PostgreSQL.
fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let t = text.trim();
    let t = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or(t);
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut hi: Option<u8> = None;
    for c in t.chars() {
        if c == '-' {
            continue;
        }
        let d = c.to_digit(16)? as u8;
        match hi.take() {
            None => hi = Some(d),
            Some(h) => {
                if n == 16 {
                    return None;
                }
                out[n] = (h << 4) | d;
                n += 1;
            }
        }
    }
    (n == 16 && hi.is_none()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Int64Array, StringArray};

    fn col(name: &str, pg: PgType, declared: &str) -> TableColumn {
        TableColumn { name: name.into(), declared: declared.into(), pg_type: Some(pg), not_null: false }
    }

    #[test]
    fn int64_into_integer_is_range_checked_with_row_column_and_value() {
        let table = [col("n", PgType::Int4, "integer")];
        let batch = RecordBatch::try_from_iter([(
            "n",
            Arc::new(Int64Array::from(vec![Some(1), None, Some(3_000_000_000)])) as ArrayRef,
        )])
        .unwrap();
        let c =
            Conformer::plan("t", &table, &batch.schema(), NanosPolicy::Reject, NulPolicy::Reject).unwrap();
        let err = c.conform(&batch, 11).unwrap_err();
        assert_eq!(
            err.to_string(),
            "row 13, column `n`: value \"3000000000\" does not fit column type `integer`"
        );
        let ok = c.conform(&batch.slice(0, 2), 1).unwrap();
        assert_eq!(ok.column(0).data_type(), &DataType::Int32);
        assert_eq!(ok.column(0).null_count(), 1);
    }

    #[test]
    fn nul_bytes_are_rejected_or_replaced() {
        let table = [col("s", PgType::Text, "text")];
        let batch = RecordBatch::try_from_iter([(
            "s",
            Arc::new(StringArray::from(vec![Some("ok"), Some("a\0b")])) as ArrayRef,
        )])
        .unwrap();
        let c =
            Conformer::plan("t", &table, &batch.schema(), NanosPolicy::Reject, NulPolicy::Reject).unwrap();
        let err = c.conform(&batch, 1).unwrap_err().to_string();
        assert!(err.starts_with("row 2, column `s`:") && err.contains("NUL"), "{err}");
        let c = Conformer::plan(
            "t",
            &table,
            &batch.schema(),
            NanosPolicy::Reject,
            NulPolicy::Replace("?".into()),
        )
        .unwrap();
        let out = c.conform(&batch, 1).unwrap();
        assert_eq!(out.column(0).as_string::<i32>().value(1), "a?b");
    }

    #[test]
    fn uuid_strings_are_parsed() {
        assert_eq!(parse_uuid("{A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11}").unwrap()[..3], [0xa0, 0xee, 0xbc]);
        assert!(parse_uuid("a0eebc99").is_none());
        assert!(parse_uuid("zz").is_none());
    }

    #[test]
    fn unknown_columns_are_named() {
        let table = [col("a", PgType::Int4, "integer")];
        let batch =
            RecordBatch::try_from_iter([("b", Arc::new(Int64Array::from(vec![1])) as ArrayRef)]).unwrap();
        let err = Conformer::plan("\"t\"", &table, &batch.schema(), NanosPolicy::Reject, NulPolicy::Reject)
            .unwrap_err();
        assert!(matches!(err, PgError::UnknownColumn { ref column, .. } if column == "b"));
    }
}

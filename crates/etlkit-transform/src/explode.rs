//! [`Explode`]: a list column (JSON array or delimited text) into one row per element.

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use etlkit_core::{Context, Rejected, Transform};
use serde_json::value::RawValue;

use crate::error::{Result, TransformError};

/// How the list column is written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ListFormat {
    /// A JSON array, e.g. `["a","b"]` or `[{"company":"Acme","start_date":"2020-01-01"}]`. Default.
    #[default]
    Json,
    /// Text split on `delimiter`, e.g. `Python;SQL` with `";"`. Elements are trimmed of surrounding
    /// white space when [`ExplodeConfig::trim`] is set.
    Delimited {
        /// The separator (one or more characters, not empty).
        delimiter: String,
    },
}

/// What to do with a row whose list cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBadList {
    /// Fail the run with [`TransformError::Malformed`] (origin, row, column, value, reason). Default.
    #[default]
    Fail,
    /// Send the row to [`Context::reject`] with the same details; it produces no output rows.
    Reject,
}

/// A field of each JSON-object element, extracted into a column of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractField {
    /// The JSON object key.
    pub field: String,
    /// The output column name.
    pub column: String,
    /// The output type: `Utf8` (JSON strings, numbers and booleans as text, numbers as written),
    /// `Int64` (JSON numbers written as integers that fit), `Float64` (JSON numbers) or `Boolean`. Any other JSON value is malformed. A missing
    /// key or JSON `null` is NULL.
    pub data_type: DataType,
    /// A missing, `null` or empty-string value makes the list malformed.
    pub required: bool,
}

impl ExtractField {
    /// An optional text field `field` into column `column`.
    pub fn text(field: &str, column: &str) -> Self {
        ExtractField {
            field: field.to_owned(),
            column: column.to_owned(),
            data_type: DataType::Utf8,
            required: false,
        }
    }

    /// This field must be present and not empty.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
}

/// Configuration of [`Explode`]. Build with `ExplodeConfig { column, ..Default::default() }`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplodeConfig {
    /// The list column (Utf8, LargeUtf8 or Utf8View). A NULL or blank value is an empty list. Required.
    pub column: String,
    /// How the list is written. Default: [`ListFormat::Json`].
    pub format: ListFormat,
    /// Output column (Utf8) holding each element itself: the text for delimited lists; for JSON the
    /// string, or the JSON text of a number, boolean, object or array exactly as written (`1.50`
    /// stays `1.50`, a 25-digit number keeps its digits). Default: `None`.
    pub element: Option<String>,
    /// Fields of JSON-object elements extracted into columns (JSON only; every element must then be
    /// an object). Default: none. At least one of `element` and `fields` is needed.
    pub fields: Vec<ExtractField>,
    /// Keep the list column in the output. Default: `false` (it is removed).
    pub keep_column: bool,
    /// The other input columns repeated on each output row, in input order; `None`: all of them.
    /// Naming only the columns needed downstream keeps exploded batches small (every carried column
    /// is copied once per element). Default: `None`.
    pub carry: Option<Vec<String>>,
    /// Trim white space around delimited elements. Default: `true`.
    pub trim: bool,
    /// Skip empty elements (`a;;b`, and JSON `null` or `""` elements). Default: `true`.
    pub skip_empty: bool,
    /// Output columns (among `element` and `fields`) that identify an element within one input row:
    /// a later element of the same row with equal values is dropped and counted as de-duplicated.
    /// Empty: every element is kept. Default: empty.
    pub distinct: Vec<String>,
    /// Fail or reject on a malformed list. Default: [`OnBadList::Fail`].
    pub on_error: OnBadList,
    /// Where the rows come from, for errors and rejects, when the pipeline does not know the row's
    /// origin ([`Context::origin`]; pipelines over CSV and Parquet sources always do, and then the
    /// file and line win). Default: `"input"`.
    pub origin: String,
    /// An integer column with each row's 1-based row number in `origin` (see
    /// [`RowNumbers`](crate::RowNumbers)), used for errors and rejects when the context has no origin.
    /// Default: `None`.
    pub row_column: Option<String>,
}

impl Default for ExplodeConfig {
    fn default() -> Self {
        ExplodeConfig {
            column: String::new(),
            format: ListFormat::Json,
            element: None,
            fields: Vec::new(),
            keep_column: false,
            carry: None,
            trim: true,
            skip_empty: true,
            distinct: Vec::new(),
            on_error: OnBadList::Fail,
            origin: "input".to_owned(),
            row_column: None,
        }
    }
}

impl ExplodeConfig {
    /// Checks every field; returns [`TransformError::InvalidConfig`] naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: &str| {
            Err(TransformError::InvalidConfig {
                transform: format!("explode({})", self.column),
                field,
                reason: reason.to_owned(),
            })
        };
        if self.column.is_empty() {
            return bad("column", "must name the list column");
        }
        if self.element.is_none() && self.fields.is_empty() {
            return bad("element", "or `fields` must name at least one output column");
        }
        if let ListFormat::Delimited { delimiter } = &self.format {
            if delimiter.is_empty() {
                return bad("format", "delimiter must not be empty");
            }
            if !self.fields.is_empty() {
                return bad("fields", "needs ListFormat::Json (delimited elements have no fields)");
            }
        }
        let mut names: Vec<&str> = self.element.iter().map(String::as_str).collect();
        for f in &self.fields {
            if !matches!(
                f.data_type,
                DataType::Utf8 | DataType::Int64 | DataType::Float64 | DataType::Boolean
            ) {
                return bad(
                    "fields",
                    &format!("`{}`: type must be Utf8, Int64, Float64 or Boolean", f.column),
                );
            }
            names.push(&f.column);
        }
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() || names[..i].contains(n) {
                return bad("fields", &format!("output column `{n}` is empty or named twice"));
            }
        }
        if let Some(d) = self.distinct.iter().find(|d| !names.contains(&d.as_str())) {
            return bad("distinct", &format!("`{d}` is not an output column (element or field)"));
        }
        Ok(())
    }
}

/// One value of an output column.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Null,
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// Explodes a list column into one row per element, repeating the other columns.
///
/// Output schema: the input columns (without the list column unless `keep_column`), then `element`
/// (Utf8) and each extracted field, all nullable. An input row with a NULL, blank or empty list
/// produces no row (counted as filtered by the pipeline), a row of `k` elements `k - 1` more rows
/// (reported with [`Context::record_added`], so the run's counts add up); a malformed list (not a JSON array, an
/// element that is not an object when fields are extracted, a field of the wrong type, a required
/// field missing) fails the run with [`TransformError::Malformed`] naming file, line, column and
/// value (from [`Context::origin`], else the configured `origin` and `row_column`), or — with
/// [`OnBadList::Reject`] — goes to [`Context::reject`] with the same details. The output rows'
/// origins are declared with [`Context::take_rows`], so later stages name the input line too.
/// Stateless ([`TransformProperties::PARALLEL`](etlkit_core::TransformProperties::PARALLEL)):
/// output order within a batch follows the input.
#[derive(Debug)]
pub struct Explode {
    name: String,
    config: ExplodeConfig,
    distinct: Vec<usize>,
}

impl Explode {
    /// Validates `config`.
    pub fn new(config: ExplodeConfig) -> Result<Self> {
        config.validate()?;
        let outputs: Vec<&str> = config
            .element
            .iter()
            .map(String::as_str)
            .chain(config.fields.iter().map(|f| f.column.as_str()))
            .collect();
        let distinct = config.distinct.iter().filter_map(|d| outputs.iter().position(|o| o == d)).collect();
        Ok(Explode { name: format!("explode({})", config.column), config, distinct })
    }

    fn out_schema(&self, input: &Schema) -> Result<SchemaRef> {
        let c = &self.config;
        let list = input
            .field_with_name(&c.column)
            .map_err(|_| TransformError::missing(&self.name, &c.column, input))?;
        if !matches!(list.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
            return Err(TransformError::UnsupportedType {
                transform: self.name.clone(),
                column: c.column.clone(),
                data_type: list.data_type().to_string(),
                expected: "Utf8, LargeUtf8 or Utf8View",
            });
        }
        if let Some(missing) = c.carry.iter().flatten().find(|n| input.index_of(n).is_err()) {
            return Err(TransformError::missing(&self.name, missing, input));
        }
        let mut fields: Vec<Field> =
            input.fields().iter().filter(|f| self.carried(f.name())).map(|f| f.as_ref().clone()).collect();
        let new = c
            .element
            .iter()
            .map(|e| Field::new(e, DataType::Utf8, true))
            .chain(c.fields.iter().map(|f| Field::new(&f.column, f.data_type.clone(), true)));
        for f in new {
            if fields.iter().any(|x| x.name() == f.name()) {
                return Err(TransformError::InvalidConfig {
                    transform: self.name.clone(),
                    field: "fields",
                    reason: format!("output column `{}` is already an input column", f.name()),
                });
            }
            fields.push(f);
        }
        Ok(Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())))
    }

    /// Whether input column `name` is in the output.
    fn carried(&self, name: &str) -> bool {
        let c = &self.config;
        if name == c.column {
            return c.keep_column;
        }
        c.carry.as_ref().is_none_or(|keep| keep.iter().any(|k| k == name))
    }

    /// The elements of one list value, each a row of output values.
    fn parse(&self, text: &str) -> std::result::Result<Vec<Vec<Val>>, String> {
        let c = &self.config;
        match &c.format {
            ListFormat::Delimited { delimiter } => Ok(text
                .split(delimiter.as_str())
                .map(|e| if c.trim { e.trim() } else { e })
                .filter(|e| !(c.skip_empty && e.is_empty()))
                .map(|e| vec![Val::Str(e.to_owned())])
                .collect()),
            ListFormat::Json => {
                // Raw elements: a number keeps the text it was written with (`1.50`, a 25-digit
                // id), which a parsed `Value` would turn into a float.
                let items: Vec<&RawValue> = match serde_json::from_str(text) {
                    Ok(items) => items,
                    Err(e) => {
                        return Err(match serde_json::from_str::<&RawValue>(text) {
                            Ok(v) => format!("not a JSON array (found {})", raw_kind(v.get())),
                            Err(_) => format!("not valid JSON: {e}"),
                        });
                    }
                };
                let mut out = Vec::with_capacity(items.len());
                for (n, item) in items.iter().enumerate() {
                    let raw = item.get();
                    let element = json_text(raw).map_err(|e| format!("element {}: {e}", n + 1))?;
                    let empty = matches!(element, Val::Null)
                        || (c.fields.is_empty() && matches!(&element, Val::Str(s) if s.is_empty()));
                    if c.skip_empty && empty {
                        continue;
                    }
                    let mut row = Vec::with_capacity(1 + c.fields.len());
                    if c.element.is_some() {
                        row.push(element);
                    }
                    if !c.fields.is_empty() {
                        let obj: std::collections::BTreeMap<String, &RawValue> =
                            match serde_json::from_str(raw) {
                                Ok(obj) if raw.starts_with('{') => obj,
                                _ => {
                                    return Err(format!(
                                        "element {} is {}, expected an object",
                                        n + 1,
                                        raw_kind(raw)
                                    ));
                                }
                            };
                        for f in &c.fields {
                            row.push(
                                field(obj.get(&f.field).map(|v| v.get()), f)
                                    .map_err(|e| format!("element {}: {e}", n + 1))?,
                            );
                        }
                    }
                    out.push(row);
                }
                Ok(out)
            }
        }
    }

    /// Where input row `i` came from: the tracked origin, else the configured origin and row column.
    fn origin(&self, batch: &RecordBatch, ctx: &Context, i: usize) -> (String, Option<u64>) {
        match ctx.origin(i) {
            Some(o) => (o.source.to_owned(), Some(o.line)),
            None => (self.config.origin.clone(), self.row_number(batch, i)),
        }
    }

    fn row_number(&self, batch: &RecordBatch, i: usize) -> Option<u64> {
        let col = batch.column_by_name(self.config.row_column.as_deref()?)?;
        if col.is_null(i) {
            return None;
        }
        match col.data_type() {
            DataType::UInt64 => Some(col.as_primitive::<UInt64Type>().value(i)),
            DataType::Int64 => u64::try_from(col.as_primitive::<Int64Type>().value(i)).ok(),
            DataType::UInt32 => Some(col.as_primitive::<UInt32Type>().value(i).into()),
            DataType::Int32 => u64::try_from(col.as_primitive::<Int32Type>().value(i)).ok(),
            _ => None,
        }
    }

    fn explode(&self, batch: RecordBatch, ctx: &Context) -> Result<Vec<RecordBatch>> {
        let c = &self.config;
        let schema = self.out_schema(&batch.schema())?;
        let list = batch.column_by_name(&c.column).expect("checked by out_schema");
        let list = arrow_cast::cast(list, &DataType::Utf8).map_err(TransformError::arrow(&self.name))?;
        let list = list.as_string::<i32>();
        let mut take: Vec<u32> = Vec::with_capacity(batch.num_rows());
        let mut values: Vec<Vec<Val>> = Vec::new();
        let (mut dropped, mut added) = (0u64, 0u64);
        for i in 0..batch.num_rows() {
            if list.is_null(i) || list.value(i).trim().is_empty() {
                continue;
            }
            let text = list.value(i);
            let elements = match self.parse(text) {
                Ok(e) => e,
                Err(reason) => {
                    let (origin, line) = self.origin(&batch, ctx, i);
                    let value: String = text.chars().take(200).collect();
                    match c.on_error {
                        OnBadList::Fail => {
                            return Err(TransformError::Malformed {
                                origin,
                                line,
                                column: c.column.clone(),
                                value,
                                reason,
                            });
                        }
                        OnBadList::Reject => {
                            ctx.reject(Rejected {
                                origin,
                                line,
                                column: Some(c.column.clone()),
                                value: Some(value),
                                reason,
                                raw: None,
                            })
                            .map_err(TransformError::Reject)?;
                            continue;
                        }
                    }
                }
            };
            let first = values.len();
            // One row into k elements: k - 1 rows created (elements `distinct` drops are then
            // counted as de-duplicated; a row with no element is filtered).
            added += (elements.len() as u64).saturating_sub(1);
            for e in elements {
                if !self.distinct.is_empty()
                    && values[first..].iter().any(|prev| self.distinct.iter().all(|&d| prev[d] == e[d]))
                {
                    dropped += 1;
                    continue;
                }
                values.push(e);
                take.push(i as u32);
            }
        }
        if dropped > 0 {
            ctx.record_deduplicated(dropped);
        }
        if added > 0 {
            ctx.record_added(added);
        }
        ctx.take_rows(&take.iter().map(|&i| i as usize).collect::<Vec<_>>());
        let idx = UInt32Array::from(take);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for (f, col) in batch.schema().fields().iter().zip(batch.columns()) {
            if self.carried(f.name()) {
                columns.push(
                    arrow_select::take::take(col, &idx, None).map_err(TransformError::arrow(&self.name))?,
                );
            }
        }
        let types = c.element.iter().map(|_| &DataType::Utf8).chain(c.fields.iter().map(|f| &f.data_type));
        for (j, dt) in types.enumerate() {
            columns.push(build(dt, values.iter().map(|r| &r[j])));
        }
        let out = RecordBatch::try_new(schema, columns).map_err(TransformError::arrow(&self.name))?;
        Ok(vec![out])
    }
}

/// What kind of JSON value `raw` (valid JSON text) is.
fn raw_kind(raw: &str) -> &'static str {
    match raw.trim_start().as_bytes().first() {
        Some(b'n') => "null",
        Some(b't' | b'f') => "a boolean",
        Some(b'"') => "a string",
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        _ => "a number",
    }
}

/// An element as text: a string's value, `null` as NULL, anything else as its JSON text as written.
fn json_text(raw: &str) -> std::result::Result<Val, String> {
    match raw_kind(raw) {
        "null" => Ok(Val::Null),
        "a string" => serde_json::from_str::<String>(raw).map(Val::Str).map_err(|e| e.to_string()),
        _ => Ok(Val::Str(raw.trim().to_owned())),
    }
}

/// Field `f` of an object element from its raw JSON text (`None`: the key is absent).
fn field(raw: Option<&str>, f: &ExtractField) -> std::result::Result<Val, String> {
    let kind = raw.map_or("null", raw_kind);
    let wrong = || format!("field `{}` is {kind}, expected {}", f.field, f.data_type);
    let val = match (raw, kind, &f.data_type) {
        (None, ..) | (_, "null", _) => Val::Null,
        (Some(r), "a string" | "a number" | "a boolean", DataType::Utf8) => json_text(r)?,
        // An integer as written (`1.0` and `1e3` are not integers).
        (Some(r), "a number", DataType::Int64) => Val::Int(r.trim().parse::<i64>().map_err(|_| wrong())?),
        (Some(r), "a number", DataType::Float64) => {
            Val::Float(serde_json::from_str::<f64>(r).map_err(|_| wrong())?)
        }
        (Some(r), "a boolean", DataType::Boolean) => Val::Bool(r.trim() == "true"),
        _ => return Err(wrong()),
    };
    if f.required && matches!(&val, Val::Null) || matches!(&val, Val::Str(s) if f.required && s.is_empty()) {
        return Err(format!("field `{}` is missing or empty", f.field));
    }
    Ok(val)
}

fn build<'a>(dt: &DataType, vals: impl Iterator<Item = &'a Val>) -> ArrayRef {
    match dt {
        DataType::Int64 => {
            let mut b = Int64Builder::new();
            vals.for_each(|v| b.append_option(if let Val::Int(i) = v { Some(*i) } else { None }));
            Arc::new(b.finish())
        }
        DataType::Float64 => {
            let mut b = Float64Builder::new();
            vals.for_each(|v| b.append_option(if let Val::Float(x) = v { Some(*x) } else { None }));
            Arc::new(b.finish())
        }
        DataType::Boolean => {
            let mut b = BooleanBuilder::new();
            vals.for_each(|v| b.append_option(if let Val::Bool(x) = v { Some(*x) } else { None }));
            Arc::new(b.finish())
        }
        _ => {
            let mut b = StringBuilder::new();
            vals.for_each(|v| b.append_option(if let Val::Str(s) = v { Some(s.as_str()) } else { None }));
            Arc::new(b.finish())
        }
    }
}

impl Transform for Explode {
    fn name(&self) -> &str {
        &self.name
    }

    fn output_schema(&self, input: &SchemaRef) -> etlkit_core::Result<SchemaRef> {
        Ok(self.out_schema(input)?)
    }

    fn apply(&self, batch: RecordBatch, ctx: &Context) -> etlkit_core::Result<Vec<RecordBatch>> {
        Ok(self.explode(batch, ctx)?)
    }
}

//! Inputs and the target schema: which files, how their columns map onto the target columns
//! (names, aliases, optional columns), and [`Conform`], the transform that maps one file's batches
//! onto the target schema with strict casts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, make_array, new_null_array};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use etlkit_core::{Context, Rejected, Transform, cast_strict};
use etlkit_source::{CsvSourceConfig, FileFormat, Input, OnError, OpenOptions};

use crate::error::{Result, StarError};

/// One column of the target schema (the normalized rows every file is mapped onto).
#[derive(Debug, Clone, PartialEq)]
pub struct TargetColumn {
    /// The column's name in the target tables.
    pub name: String,
    /// Its type; file columns are cast to it strictly: a value that does not convert, or that the
    /// cast would change (2.5 into an integer, nanoseconds into microseconds), is a bad row. CSV
    /// columns are read as this type (not as the type the reader would guess: `007` stays `007` in
    /// a text column). A timestamp without a time zone is taken as UTC, and a zoned target keeps
    /// each value's instant.
    pub data_type: DataType,
    /// Other names the column may have in input files. Default: none.
    pub aliases: Vec<String>,
    /// Whether a file may lack the column (it is then NULL for that file's rows, and the report
    /// says which files lacked it). Default `false`: a file without it is an error.
    pub optional: bool,
}

impl TargetColumn {
    /// A required column without aliases.
    pub fn new(name: impl Into<String>, data_type: DataType) -> Self {
        TargetColumn { name: name.into(), data_type, aliases: Vec::new(), optional: false }
    }

    /// Adds other names the column may have in input files.
    pub fn aliases<I: IntoIterator<Item = S>, S: Into<String>>(mut self, aliases: I) -> Self {
        self.aliases.extend(aliases.into_iter().map(Into::into));
        self
    }

    /// Marks the column optional (NULL where a file lacks it; reported).
    pub fn optional(mut self) -> Self {
        self.optional = true;
        self
    }
}

/// How file column names are compared with target names and aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum NameMatching {
    /// Exactly.
    Exact,
    /// Ignoring ASCII case and underscores (`PULocationID` = `pu_location_id`). The default.
    #[default]
    Loose,
}

impl NameMatching {
    fn key(self, name: &str) -> String {
        match self {
            NameMatching::Exact => name.to_owned(),
            NameMatching::Loose => name.chars().filter(|c| *c != '_').flat_map(char::to_lowercase).collect(),
        }
    }
}

/// Where the rows come from and how bad rows are handled.
#[derive(Debug, Clone)]
pub struct InputsConfig {
    /// Files, directories (their CSV and Parquet files) and globs; Parquet and CSV may be mixed.
    /// Each file is read by its own pipeline run, so files may use different namings. Default: none
    /// (must be set).
    pub inputs: Vec<Input>,
    /// Bad rows (CSV rows that do not parse, values that do not convert to the target type): fail
    /// the run, or reject them (counted in the report, sent to the job's reject sink) and go on.
    /// Default [`OnError::Fail`].
    pub on_error: OnError,
    /// How file column names are matched. Default [`NameMatching::Loose`].
    pub matching: NameMatching,
    /// Reader settings (CSV dialect, NULL markers, Parquet read-ahead; `batch_size` and `on_error`
    /// are the job's). Default: [`OpenOptions::default`] with at most 2 Parquet row groups decoded
    /// ahead (the database is the slower side).
    pub open: OpenOptions,
}

impl Default for InputsConfig {
    fn default() -> Self {
        let mut open = OpenOptions::default();
        open.parquet.max_row_groups_in_flight = 2;
        open.parquet.batches_per_row_group = 1;
        InputsConfig { inputs: Vec::new(), on_error: OnError::Fail, matching: NameMatching::Loose, open }
    }
}

/// Target columns a file lacked (only optional ones; a missing required column is an error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingColumns {
    /// The file.
    pub file: PathBuf,
    /// The optional target columns it has no column for (NULL in its rows).
    pub columns: Vec<String>,
}

/// A derived `Date32` column the conform step adds (for a date dimension role over a timestamp).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DerivedDate {
    /// The target column it is computed from.
    pub from: String,
    /// The name of the derived column.
    pub name: String,
}

/// How one file's columns map onto the target schema.
#[derive(Debug, Clone)]
pub(crate) struct FileMapping {
    /// For each target column, the file column index (None: missing, NULL).
    pub inputs: Vec<Option<usize>>,
    /// Optional target columns the file lacks.
    pub missing: Vec<String>,
    /// For a CSV file, its mapped columns with the target types to read them as (text is read as
    /// the target type, not as the type the reader would guess: `007` stays `007` for a text target).
    pub csv_types: Vec<(String, DataType)>,
}

impl FileMapping {
    /// `base` with the file's mapped CSV columns read as their target types. A column the user
    /// pinned in `base.csv.column_types`, or a full `base.csv.schema`, wins.
    pub(crate) fn open_options(&self, base: &OpenOptions) -> OpenOptions {
        let mut open = base.clone();
        if open.csv.schema.is_none() {
            for (name, data_type) in &self.csv_types {
                if !open.csv.column_types.iter().any(|(n, _)| n == name) {
                    open.csv.column_types.push((name.clone(), data_type.clone()));
                }
            }
        }
        open
    }
}

/// The type a CSV column is read as for a target of type `target`: the target type when the reader
/// reads it, text for other text types; `None` (the reader's guess, then a strict cast) otherwise.
fn csv_type(target: &DataType) -> Option<DataType> {
    match target {
        DataType::LargeUtf8 | DataType::Utf8View => Some(DataType::Utf8),
        t if CsvSourceConfig::reads(t) => Some(t.clone()),
        _ => None,
    }
}

/// Maps `schema` (one file's) onto `columns`: every target column by its name or an alias.
pub(crate) fn map_file(
    file: &Path,
    schema: &Schema,
    columns: &[TargetColumn],
    matching: NameMatching,
) -> Result<FileMapping> {
    let mut inputs = Vec::with_capacity(columns.len());
    let mut missing = Vec::new();
    for c in columns {
        let wanted: Vec<String> =
            std::iter::once(&c.name).chain(&c.aliases).map(|n| matching.key(n)).collect();
        let found: Vec<usize> = schema
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| wanted.contains(&matching.key(f.name())))
            .map(|(i, _)| i)
            .collect();
        match found.as_slice() {
            [] if c.optional => {
                missing.push(c.name.clone());
                inputs.push(None);
            }
            [] => {
                return Err(StarError::MissingColumn {
                    file: file.to_owned(),
                    column: c.name.clone(),
                    names: std::iter::once(&c.name).chain(&c.aliases).map(|n| format!("`{n}`")).collect(),
                });
            }
            [one] => inputs.push(Some(*one)),
            many => {
                return Err(StarError::AmbiguousColumn {
                    file: file.to_owned(),
                    column: c.name.clone(),
                    found: many.iter().map(|i| format!("`{}`", schema.field(*i).name())).collect(),
                });
            }
        }
    }
    for (t, input) in inputs.iter().enumerate() {
        let Some(i) = input else { continue };
        let targets: Vec<String> = (t..inputs.len())
            .filter(|&u| inputs[u] == Some(*i))
            .map(|u| format!("`{}`", columns[u].name))
            .collect();
        if targets.len() > 1 {
            return Err(StarError::ColumnMatchedTwice {
                file: file.to_owned(),
                column: schema.field(*i).name().clone(),
                targets,
            });
        }
    }
    let csv_types = match FileFormat::of(file) {
        Some(FileFormat::Csv) => columns
            .iter()
            .zip(&inputs)
            .filter_map(|(c, i)| Some((schema.field((*i)?).name().clone(), csv_type(&c.data_type)?)))
            .collect(),
        _ => Vec::new(),
    };
    Ok(FileMapping { inputs, missing, csv_types })
}

/// The target schema: the target columns, all nullable, in order.
pub(crate) fn target_schema(columns: &[TargetColumn]) -> Schema {
    Schema::new(columns.iter().map(|c| Field::new(&c.name, c.data_type.clone(), true)).collect::<Vec<_>>())
}

/// The transform mapping one file's batches onto the target schema (plus derived date columns):
/// columns picked by [`FileMapping`], cast strictly; a row with a value that does not convert is
/// rejected (naming file, line, column and value) or fails the run.
pub(crate) struct Conform {
    origin: String,
    mapping: FileMapping,
    derived: Vec<(usize, DerivedDate)>,
    output: SchemaRef,
    fail_on_error: bool,
}

impl Conform {
    pub(crate) fn new(
        origin: &Path,
        mapping: FileMapping,
        columns: &[TargetColumn],
        derived: &[DerivedDate],
        on_error: OnError,
    ) -> Result<Self> {
        let target = target_schema(columns);
        let mut fields: Vec<Field> = target.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut with_index = Vec::new();
        for d in derived {
            let i = target.index_of(&d.from).map_err(|_| {
                StarError::config(
                    "dimensions",
                    format!("date role column `{}` is not a target column", d.from),
                )
            })?;
            fields.push(Field::new(&d.name, DataType::Date32, true));
            with_index.push((i, d.clone()));
        }
        Ok(Conform {
            origin: origin.display().to_string(),
            mapping,
            derived: with_index,
            output: Arc::new(Schema::new(fields)),
            fail_on_error: on_error == OnError::Fail,
        })
    }

    fn fail(&self, msg: String) -> etlkit_core::Error {
        let e = StarError::Conform { file: self.origin.clone(), reason: msg };
        etlkit_core::Error::stage(etlkit_core::Stage::Transform, "conform", false, e)
    }
}

/// Whole days since 1970-01-01 of a timestamp or date column (rounding down), as `Date32`.
pub(crate) fn to_date(col: &ArrayRef) -> std::result::Result<ArrayRef, arrow_schema::ArrowError> {
    use arrow_array::types::*;
    let per_day = |unit: &TimeUnit| match unit {
        TimeUnit::Second => 86_400i64,
        TimeUnit::Millisecond => 86_400_000,
        TimeUnit::Microsecond => 86_400_000_000,
        TimeUnit::Nanosecond => 86_400_000_000_000,
    };
    // Whole days, without going through a calendar date per row.
    Ok(match col.data_type() {
        DataType::Date32 => col.clone(),
        DataType::Timestamp(unit, _) => {
            let d = per_day(unit);
            let out: arrow_array::Date32Array = match unit {
                TimeUnit::Second => {
                    col.as_primitive::<TimestampSecondType>().unary(|v| v.div_euclid(d) as i32)
                }
                TimeUnit::Millisecond => {
                    col.as_primitive::<TimestampMillisecondType>().unary(|v| v.div_euclid(d) as i32)
                }
                TimeUnit::Microsecond => {
                    col.as_primitive::<TimestampMicrosecondType>().unary(|v| v.div_euclid(d) as i32)
                }
                TimeUnit::Nanosecond => {
                    col.as_primitive::<TimestampNanosecondType>().unary(|v| v.div_euclid(d) as i32)
                }
            };
            Arc::new(out)
        }
        _ => arrow_cast::cast(col, &DataType::Date32)?,
    })
}

impl Transform for Conform {
    fn name(&self) -> &str {
        "conform"
    }

    fn output_schema(&self, _input: &SchemaRef) -> etlkit_core::Result<SchemaRef> {
        Ok(self.output.clone())
    }

    fn apply(&self, batch: RecordBatch, ctx: &Context) -> etlkit_core::Result<Vec<RecordBatch>> {
        let n = batch.num_rows();
        let ntarget = self.mapping.inputs.len();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.output.fields().len());
        let mut bad = vec![false; n];
        let mut any_bad = false;
        for (field, input) in self.output.fields()[..ntarget].iter().zip(&self.mapping.inputs) {
            let Some(i) = input else {
                columns.push(new_null_array(field.data_type(), n));
                continue;
            };
            let col = batch.column(*i);
            if col.data_type() == field.data_type() {
                columns.push(col.clone());
                continue;
            }
            let col = match col.data_type() {
                // Timestamps with a time zone: the instant, as a naive (UTC) timestamp.
                DataType::Timestamp(unit, Some(_)) => {
                    arrow_cast::cast(col, &DataType::Timestamp(*unit, None))
                        .map_err(|e| self.fail(e.to_string()))?
                }
                _ => col.clone(),
            };
            // A zoned target keeps the instant: a timestamp without a zone is UTC here, so cast to the
            // target's zoneless twin and label the result with the zone (arrow's cast from zoneless
            // to zoned would read the value as local time in that zone).
            let (target, zoned) = match field.data_type() {
                DataType::Timestamp(unit, Some(_)) => (DataType::Timestamp(*unit, None), true),
                t => (t.clone(), false),
            };
            let (cast, bad_rows) = cast_strict(&col, &target).map_err(|e| self.fail(e.to_string()))?;
            let cast = if zoned {
                let data = cast.to_data().into_builder().data_type(field.data_type().clone()).build();
                make_array(data.map_err(|e| self.fail(e.to_string()))?)
            } else {
                cast
            };
            for (row, reason) in bad_rows {
                let value = arrow_cast::display::array_value_to_string(&col, row).unwrap_or_default();
                let line = ctx.origin(row).map(|o| o.line);
                let column = batch.schema().field(*i).name().clone();
                if self.fail_on_error {
                    let at = line.map(|l| format!("line {l}:")).unwrap_or_default();
                    return Err(self.fail(format!("{at} column `{column}` value {value:?}: {reason}")));
                }
                if !bad[row] {
                    ctx.reject(Rejected {
                        origin: self.origin.clone(),
                        line,
                        column: Some(column),
                        value: Some(value),
                        reason,
                        raw: None,
                    })?;
                }
                bad[row] = true;
                any_bad = true;
            }
            columns.push(cast);
        }
        for (from, _) in &self.derived {
            columns.push(to_date(&columns[*from]).map_err(|e| self.fail(e.to_string()))?);
        }
        let out = RecordBatch::try_new(self.output.clone(), columns).map_err(|e| self.fail(e.to_string()))?;
        if !any_bad {
            return Ok(vec![out]);
        }
        let keep = BooleanArray::from(bad.iter().map(|b| !b).collect::<Vec<_>>());
        ctx.keep_rows(&keep);
        let kept =
            arrow_select::filter::filter_record_batch(&out, &keep).map_err(|e| self.fail(e.to_string()))?;
        Ok(if kept.num_rows() == 0 { Vec::new() } else { vec![kept] })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::TimestampMicrosecondArray;

    fn schema(names: &[&str]) -> Schema {
        Schema::new(names.iter().map(|n| Field::new(*n, DataType::Utf8, true)).collect::<Vec<_>>())
    }

    #[test]
    fn columns_match_by_name_or_alias_ignoring_case_and_underscores() {
        let cols = [
            TargetColumn::new("PULocationID", DataType::Int32).aliases(["pickup_location_id"]),
            TargetColumn::new("fare", DataType::Float64),
            TargetColumn::new("tip", DataType::Float64).optional(),
        ];
        let m = map_file(
            Path::new("a.csv"),
            &schema(&["x", "Pickup_Location_ID", "FARE"]),
            &cols,
            NameMatching::Loose,
        )
        .unwrap();
        assert_eq!((m.inputs, m.missing), (vec![Some(1), Some(2), None], vec!["tip".to_owned()]));
        let exact =
            map_file(Path::new("a.csv"), &schema(&["pulocationid", "fare"]), &cols, NameMatching::Exact);
        assert!(matches!(exact, Err(StarError::MissingColumn { column, .. }) if column == "PULocationID"));
        let twice = map_file(
            Path::new("b.csv"),
            &schema(&["fare", "f_a_r_e", "PULocationID"]),
            &cols,
            NameMatching::Loose,
        );
        assert!(matches!(twice, Err(StarError::AmbiguousColumn { column, .. }) if column == "fare"));
        // One file column may not fill two target columns (overlapping aliases).
        let roles = [
            TargetColumn::new("customer_city", DataType::Utf8).aliases(["city"]),
            TargetColumn::new("ship_city", DataType::Utf8).aliases(["city"]),
        ];
        let both = map_file(Path::new("c.csv"), &schema(&["city"]), &roles, NameMatching::Loose);
        let err = both.unwrap_err();
        assert!(matches!(&err, StarError::ColumnMatchedTwice { column, .. } if column == "city"), "{err}");
        assert_eq!(err.to_string(), "c.csv: column `city` matches `customer_city` and `ship_city`");
        let apart = map_file(
            Path::new("c.csv"),
            &schema(&["ship_city", "customer_city"]),
            &roles,
            NameMatching::Loose,
        );
        assert_eq!(apart.unwrap().inputs, [Some(1), Some(0)]);
    }

    #[test]
    fn a_cast_that_would_change_a_value_rejects_its_row() {
        use arrow_array::{Float64Array, Int64Array, StringArray};
        let cols = [TargetColumn::new("n", DataType::Int64), TargetColumn::new("s", DataType::Utf8)];
        let input = Schema::new(vec![
            Field::new("n", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
        ]);
        let mapping = map_file(Path::new("f.parquet"), &input, &cols, NameMatching::Loose).unwrap();
        let conform = Conform::new(Path::new("f.parquet"), mapping, &cols, &[], OnError::Reject).unwrap();
        let n = Float64Array::from(vec![Some(1.0), Some(2.5), Some(f64::NAN), None, Some(-3.0), Some(1e30)]);
        let s = StringArray::from(vec!["a", "b", "c", "d", "e", "f"]);
        let batch = RecordBatch::try_new(Arc::new(input), vec![Arc::new(n), Arc::new(s)]).unwrap();
        let rejects = Arc::new(etlkit_core::MemoryRejects::new());
        let ctx = Context::with_rejects(rejects.clone());
        let out = conform.apply(batch.clone(), &ctx).unwrap();
        // 2.5 is not an integer (a cast would truncate it to 2), NaN and 1e30 have none.
        let kept = out[0].column(1).as_string::<i32>().iter().map(|v| v.unwrap()).collect::<Vec<_>>();
        assert_eq!(kept, ["a", "d", "e"]);
        let n = out[0].column(0).as_primitive::<arrow_array::types::Int64Type>();
        assert_eq!(n, &Int64Array::from(vec![Some(1), None, Some(-3)]));
        let values: Vec<_> = rejects.rows().iter().map(|r| r.value.clone().unwrap()).collect();
        assert_eq!(values, ["2.5", "NaN", "1e30"]);
        let fail = Conform::new(
            Path::new("f.parquet"),
            map_file(Path::new("f.parquet"), &batch.schema(), &cols, NameMatching::Loose).unwrap(),
            &cols,
            &[],
            OnError::Fail,
        )
        .unwrap();
        let err = fail.apply(batch, &Context::default()).unwrap_err().report().to_string();
        assert!(err.contains("f.parquet") && err.contains("`n`") && err.contains("2.5"), "{err}");
    }

    #[test]
    fn nanoseconds_a_microsecond_target_would_drop_reject_their_row() {
        use arrow_array::TimestampNanosecondArray;
        let cols = [TargetColumn::new("t", DataType::Timestamp(TimeUnit::Microsecond, None))];
        let input = Schema::new(vec![Field::new("t", DataType::Timestamp(TimeUnit::Nanosecond, None), true)]);
        let mapping = map_file(Path::new("f.parquet"), &input, &cols, NameMatching::Loose).unwrap();
        let conform = Conform::new(Path::new("f.parquet"), mapping, &cols, &[], OnError::Reject).unwrap();
        let t = TimestampNanosecondArray::from(vec![Some(5_000), Some(5_001), None, Some(-7_000)]);
        let batch = RecordBatch::try_new(Arc::new(input), vec![Arc::new(t)]).unwrap();
        let rejects = Arc::new(etlkit_core::MemoryRejects::new());
        let out = conform.apply(batch, &Context::with_rejects(rejects.clone())).unwrap();
        let kept = out[0].column(0).as_primitive::<arrow_array::types::TimestampMicrosecondType>();
        assert_eq!(kept, &TimestampMicrosecondArray::from(vec![Some(5), None, Some(-7)]));
        assert_eq!(rejects.rows().len(), 1);
    }

    #[test]
    fn a_zoned_target_keeps_each_instant() {
        let zone = DataType::Timestamp(TimeUnit::Microsecond, Some("+01:00".into()));
        let cols = [TargetColumn::new("t", zone.clone())];
        let hour = 3_600_000_000i64;
        for input in [
            TimestampMicrosecondArray::from(vec![Some(10 * hour), None]),
            TimestampMicrosecondArray::from(vec![Some(10 * hour), None]).with_timezone("UTC"),
            TimestampMicrosecondArray::from(vec![Some(10 * hour), None]).with_timezone("-05:00"),
        ] {
            let schema = Schema::new(vec![Field::new("t", input.data_type().clone(), true)]);
            let mapping = map_file(Path::new("f.parquet"), &schema, &cols, NameMatching::Loose).unwrap();
            let conform = Conform::new(Path::new("f.parquet"), mapping, &cols, &[], OnError::Fail).unwrap();
            let batch = RecordBatch::try_new(Arc::new(schema), vec![Arc::new(input)]).unwrap();
            let out = conform.apply(batch, &Context::default()).unwrap();
            assert_eq!(out[0].column(0).data_type(), &zone);
            let t = out[0].column(0).as_primitive::<arrow_array::types::TimestampMicrosecondType>();
            assert_eq!((t.value(0), t.is_null(1)), (10 * hour, true)); // 10:00Z, not 09:00Z
        }
    }

    #[test]
    fn dates_of_timestamps_round_down_before_1970_too() {
        let day = 86_400_000_000i64;
        let ts: ArrayRef = Arc::new(TimestampMicrosecondArray::from(vec![0, day - 1, -1, 19_723 * day + 5]));
        let d = to_date(&ts).unwrap();
        let d = d.as_primitive::<arrow_array::types::Date32Type>();
        assert_eq!(d.values().to_vec(), vec![0, 0, -1, 19_723]);
    }
}

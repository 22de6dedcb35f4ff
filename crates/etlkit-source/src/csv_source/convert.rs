//! Turning parsed CSV records into typed Arrow columns, spotting every bad row on the way.

use std::sync::Arc;

use arrow_array::builder::{BooleanBuilder, PrimitiveBuilder, StringBuilder};
use arrow_array::types::{
    Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
    UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{ArrayRef, ArrowPrimitiveType, BooleanArray, RecordBatch};
use arrow_cast::parse::Parser;
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};

use super::records::RecordChunk;
use etlkit_core::cast::decimal_places;

/// How values are recognised: NULL markers, date/time formats, float-written integers.
#[derive(Debug, Clone)]
pub(crate) struct ValueParser {
    pub(crate) null_markers: Vec<Vec<u8>>,
    pub(crate) timestamp_formats: Vec<TimestampFormat>,
    pub(crate) date_formats: Vec<String>,
    pub(crate) integers_from_floats: bool,
    /// Keep NUL bytes in text (`Utf8`) values instead of calling them bad.
    pub(crate) allow_nul_in_text: bool,
}

/// Whether `dt` is a column type the CSV reader can produce.
pub(crate) fn supported(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Float32
            | DataType::Float64
            | DataType::Utf8
            | DataType::Date32
            | DataType::Timestamp(_, _)
            | DataType::Decimal128(_, _)
    )
}

impl ValueParser {
    #[inline]
    pub(crate) fn is_null(&self, v: &[u8]) -> bool {
        self.null_markers.iter().any(|m| m.as_slice() == v)
    }

    pub(crate) fn parse_bool(b: &[u8]) -> Option<bool> {
        match std::str::from_utf8(b).ok()?.trim() {
            t if t.eq_ignore_ascii_case("true") || t.eq_ignore_ascii_case("t") || t == "1" => Some(true),
            t if t.eq_ignore_ascii_case("false") || t.eq_ignore_ascii_case("f") || t == "0" => Some(false),
            t if t.eq_ignore_ascii_case("yes") || t.eq_ignore_ascii_case("y") => Some(true),
            t if t.eq_ignore_ascii_case("no") || t.eq_ignore_ascii_case("n") => Some(false),
            _ => None,
        }
    }

    /// An integer, also accepting a whole number written as a float (`2.0`, `3e2`) when allowed, and
    /// surrounding spaces.
    #[inline]
    fn parse_int<T>(&self, b: &[u8]) -> Option<T::Native>
    where
        T: Parser,
        T::Native: TryFrom<i64> + lexical_core::FromLexical,
    {
        if let Ok(v) = lexical_core::parse::<T::Native>(b) {
            return Some(v);
        }
        let s = std::str::from_utf8(b).ok()?;
        if let Some(v) = T::parse(s) {
            return Some(v);
        }
        if self.integers_from_floats {
            let f: f64 = s.trim().parse().ok()?;
            if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
                return T::Native::try_from(f as i64).ok();
            }
        }
        None
    }

    /// A float; like arrow's parser (`NaN`, `inf`, exponents), also with surrounding spaces.
    #[inline]
    fn parse_float<F: lexical_core::FromLexical + std::str::FromStr>(b: &[u8]) -> Option<F> {
        lexical_core::parse::<F>(b).ok().or_else(|| std::str::from_utf8(b).ok()?.trim().parse().ok())
    }

    /// The instant written in `b` (UTC; naive values are taken as UTC) from ISO 8601 / RFC 3339
    /// text or any of the configured formats (a format with a UTC offset, `%z` and the like, converts
    /// the value to UTC by it), at full precision: any year chrono can represent, so `0001-01-01` and
    /// `9999-12-31T23:59:59` parse. A plain date in one of the configured date formats is its
    /// midnight (UTC), as inference widens a column holding dates and timestamps to a timestamp.
    /// [`Moment::in_unit`] converts it to a column's unit without passing through nanoseconds.
    pub(crate) fn parse_timestamp(&self, b: &[u8]) -> Option<Moment> {
        if let Some(m) = plain_datetime(b) {
            return Some(m);
        }
        let s = std::str::from_utf8(b).ok()?;
        if let Ok(dt) = arrow_cast::parse::string_to_datetime(&chrono::Utc, s) {
            return Some(Moment { secs: dt.timestamp(), nanos: dt.timestamp_subsec_nanos() });
        }
        let t = s.trim();
        if let Some(dt) = self.timestamp_formats.iter().find_map(|f| f.parse(t)) {
            return Some(Moment { secs: dt.timestamp(), nanos: dt.timestamp_subsec_nanos() });
        }
        self.parse_plain_date(b).map(|days| Moment { secs: i64::from(days) * 86_400, nanos: 0 })
    }

    /// Days since the epoch of a plain date (no time of day): `YYYY-MM-DD` (or an extended year such
    /// as `+10999-12-31`) or any of the configured date formats.
    pub(crate) fn parse_plain_date(&self, b: &[u8]) -> Option<i32> {
        let t = std::str::from_utf8(b).ok()?.trim();
        // Arrow's parser takes longer text as a timestamp and drops its time (through UTC), so only
        // date-sized text goes there.
        if (t.len() <= 10 || t.starts_with(['+', '-']))
            && let Some(d) = Date32Type::parse(t)
        {
            return Some(d);
        }
        self.date_formats.iter().find_map(|f| NaiveDate::parse_from_str(t, f).ok()).and_then(days_since_epoch)
    }

    /// Days since the epoch for a `Date32` column: a plain date ([`Self::parse_plain_date`]), or a
    /// date and time (ISO 8601 / RFC 3339 or a configured timestamp format) that is exactly midnight
    /// with no UTC offset or offset zero (`2024-03-10 00:00:00`, `2024-03-10T00:00:00Z`). Any other
    /// time of day is [`DateFault::TimeOfDay`] rather than a date silently losing it.
    pub(crate) fn parse_date(&self, b: &[u8]) -> Result<i32, DateFault> {
        if let Some(d) = self.parse_plain_date(b) {
            return Ok(d);
        }
        let t = std::str::from_utf8(b).map_err(|_| DateFault::Invalid)?.trim();
        if let Ok(dt) = arrow_cast::parse::string_to_datetime(&chrono::Utc, t) {
            // Arrow gives the instant only, not the offset written. The value is midnight without an
            // offset (or with offset zero) exactly when the instant is midnight UTC and the written
            // date and hour:minute are that midnight's: an offset that is not zero would move
            // either of them (offsets are whole minutes).
            let written_date = t.get(..10).and_then(Date32Type::parse);
            let written_time = t.get(11..).unwrap_or("");
            let day = days_since_epoch(dt.date_naive());
            return if dt.time() == NaiveTime::MIN
                && written_date.is_some()
                && written_date == day
                && (written_time.starts_with("00:00") || written_time.starts_with("0000"))
            {
                day.ok_or(DateFault::Invalid)
            } else {
                Err(DateFault::TimeOfDay)
            };
        }
        match self.timestamp_formats.iter().find_map(|f| f.parse(t)) {
            Some(dt) if dt.time() == NaiveTime::MIN && dt.offset().local_minus_utc() == 0 => {
                days_since_epoch(dt.date_naive()).ok_or(DateFault::Invalid)
            }
            Some(_) => Err(DateFault::TimeOfDay),
            None => Err(DateFault::Invalid),
        }
    }
}

/// Days since 1970-01-01, when they fit a `Date32`.
fn days_since_epoch(d: NaiveDate) -> Option<i32> {
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch");
    i32::try_from(d.signed_duration_since(epoch).num_days()).ok()
}

/// Why text is not a value of a `Date32` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DateFault {
    /// Not a date at all.
    Invalid,
    /// A date and time whose time of day (or UTC offset) is not zero: storing the date would drop it.
    TimeOfDay,
}

impl DateFault {
    /// The reason a bad row gives.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            DateFault::Invalid => "not a valid date",
            DateFault::TimeOfDay => "has a time of day, which a date column cannot hold",
        }
    }
}

/// One of [`CsvSourceConfig::timestamp_formats`](crate::CsvSourceConfig::timestamp_formats), and
/// whether it reads a UTC offset (`%z`, `%:z`, `%::z`, `%:::z`, `%#z`, `%+`).
#[derive(Debug, Clone)]
pub(crate) struct TimestampFormat {
    format: String,
    offset: bool,
}

impl TimestampFormat {
    pub(crate) fn new(format: &str) -> Self {
        use chrono::format::{Fixed, Item, StrftimeItems};
        let permissive = StrftimeItems::new("%#z").next();
        let offset = StrftimeItems::new(format).any(|item| {
            matches!(
                item,
                Item::Fixed(
                    Fixed::TimezoneOffset
                        | Fixed::TimezoneOffsetColon
                        | Fixed::TimezoneOffsetDoubleColon
                        | Fixed::TimezoneOffsetTripleColon
                        | Fixed::TimezoneOffsetColonZ
                        | Fixed::TimezoneOffsetZ
                        | Fixed::RFC2822
                        | Fixed::RFC3339
                )
            ) || permissive.as_ref() == Some(&item)
        });
        TimestampFormat { format: format.to_owned(), offset }
    }

    /// The date and time written in `t` with its UTC offset (zero when the format has none: naive
    /// values are UTC). chrono's `NaiveDateTime` parser would skip an offset, so a format with one is
    /// parsed as a `DateTime<FixedOffset>`.
    fn parse(&self, t: &str) -> Option<DateTime<FixedOffset>> {
        if self.offset {
            DateTime::parse_from_str(t, &self.format).ok()
        } else {
            NaiveDateTime::parse_from_str(t, &self.format).ok().map(|n| n.and_utc().fixed_offset())
        }
    }
}

/// An instant parsed from text: whole seconds since 1970-01-01 00:00:00 UTC (negative before) and
/// the nanoseconds after that second (`0..1_000_000_000`, more only inside a leap second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Moment {
    pub(crate) secs: i64,
    pub(crate) nanos: u32,
}

impl Moment {
    /// The instant in `unit`s since the epoch, rounded down (towards the past) to the unit;
    /// `None` when it does not fit in an `i64` of that unit (only nanoseconds are that narrow:
    /// they hold 1677-09-21 00:12:43 to 2262-04-11 23:47:16).
    pub(crate) fn in_unit(self, unit: TimeUnit) -> Option<i64> {
        let (per_sec, nanos_per_unit) = match unit {
            TimeUnit::Second => return Some(self.secs),
            TimeUnit::Millisecond => (1_000, 1_000_000),
            TimeUnit::Microsecond => (1_000_000, 1_000),
            TimeUnit::Nanosecond => (1_000_000_000, 1),
        };
        self.secs.checked_mul(per_sec)?.checked_add(i64::from(self.nanos / nanos_per_unit))
    }
}

/// Why a parsed timestamp does not fit a column of `unit` (only nanoseconds can be too narrow).
pub(crate) fn out_of_range(unit: TimeUnit) -> String {
    match unit {
        TimeUnit::Nanosecond => "timestamp out of range for Timestamp(Nanosecond), which holds \
                                 1677-09-21 00:12:43 to 2262-04-11 23:47:16 only"
            .to_owned(),
        other => format!("timestamp out of range for Timestamp({other:?})"),
    }
}

/// Why a text value holding a NUL byte is bad (unless `allow_nul_in_text`).
pub(crate) const NUL_IN_TEXT: &str = "NUL byte in text (PostgreSQL text cannot store it)";

/// One bad value (or row) found while converting a chunk.
#[derive(Debug, Clone)]
pub(crate) struct Bad {
    pub(crate) row: usize,
    /// Field index in the record (orders the faults of one row), `usize::MAX` for whole-row faults.
    pub(crate) field: usize,
    /// The schema column to blame, when one is.
    pub(crate) column: Option<String>,
    pub(crate) value: Option<String>,
    pub(crate) reason: String,
}

/// Converts records into the columns of `schema`. `positions[i]` is the record field holding
/// schema column `i`; `expected_fields` is the field count every record must have.
pub(crate) struct ChunkConverter<'a> {
    pub(crate) schema: &'a SchemaRef,
    pub(crate) positions: &'a [usize],
    pub(crate) expected_fields: usize,
    pub(crate) values: &'a ValueParser,
}

impl ChunkConverter<'_> {
    /// Builds a batch of every record of `chunk` (bad rows hold nulls) and lists the faults found,
    /// sorted by row, at most one per row (the leftmost).
    pub(crate) fn convert(
        &self,
        chunk: &RecordChunk,
        faults: &mut Vec<Bad>,
    ) -> Result<RecordBatch, arrow_schema::ArrowError> {
        let rows = chunk.len();
        faults.clear();
        for row in 0..rows {
            let n = chunk.field_count(row);
            if n != self.expected_fields {
                faults.push(Bad {
                    row,
                    field: usize::MAX,
                    column: None,
                    value: None,
                    reason: format!("expected {} fields, found {n}", self.expected_fields),
                });
            }
        }
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.positions.len());
        for (i, field) in self.schema.fields().iter().enumerate() {
            let col = ColumnCtx {
                chunk,
                idx: self.positions[i],
                name: field.name(),
                expected: self.expected_fields,
                nullable: field.is_nullable(),
                why: None,
            };
            let array = self.column(&col, field.data_type(), faults);
            columns.push(array);
        }
        if !faults.is_empty() {
            // One fault per row: whole-row faults first, else the leftmost field.
            faults.sort_by_key(|b| (b.row, if b.field == usize::MAX { 0 } else { b.field + 1 }));
            faults.dedup_by_key(|b| b.row);
        }
        // Nulls in bad rows may break non-nullable fields; those rows are removed (reject) or end the
        // read (fail) before anyone sees the batch, so build it without the nullability check.
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(rows));
        if faults.is_empty() {
            RecordBatch::try_new_with_options(Arc::clone(self.schema), columns, &options)
        } else {
            let relaxed = Arc::new(arrow_schema::Schema::new(
                self.schema
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            ));
            RecordBatch::try_new_with_options(relaxed, columns, &options)
        }
    }

    fn column(&self, col: &ColumnCtx<'_>, dt: &DataType, faults: &mut Vec<Bad>) -> ArrayRef {
        let v = self.values;
        match dt {
            DataType::Boolean => {
                let mut b = BooleanBuilder::with_capacity(col.chunk.len());
                col.each(v, faults, "Boolean", ValueParser::parse_bool, |x| match x {
                    Some(x) => b.append_value(x),
                    None => b.append_null(),
                });
                Arc::new(b.finish()) as ArrayRef
            }
            DataType::Int8 => self.ints::<Int8Type>(col, faults, dt),
            DataType::Int16 => self.ints::<Int16Type>(col, faults, dt),
            DataType::Int32 => self.ints::<Int32Type>(col, faults, dt),
            DataType::Int64 => self.ints::<Int64Type>(col, faults, dt),
            DataType::UInt8 => self.ints::<UInt8Type>(col, faults, dt),
            DataType::UInt16 => self.ints::<UInt16Type>(col, faults, dt),
            DataType::UInt32 => self.ints::<UInt32Type>(col, faults, dt),
            DataType::UInt64 => self.uints64(col, faults, dt),
            DataType::Float32 => prim::<Float32Type>(col, v, faults, dt, ValueParser::parse_float::<f32>),
            DataType::Float64 => prim::<Float64Type>(col, v, faults, dt, ValueParser::parse_float::<f64>),
            DataType::Date32 => {
                let why = |s: &[u8]| v.parse_date(s).err().unwrap_or(DateFault::Invalid).reason().to_owned();
                let col = ColumnCtx { why: Some(&why), ..*col };
                prim::<Date32Type>(&col, v, faults, dt, |s| v.parse_date(s).ok())
            }
            DataType::Timestamp(unit, _) => {
                let unit = *unit;
                let parse = |s: &[u8]| v.parse_timestamp(s).and_then(|m| m.in_unit(unit));
                // Text that is a timestamp, but one the unit cannot hold, says so.
                let why = |s: &[u8]| match v.parse_timestamp(s) {
                    Some(_) => out_of_range(unit),
                    None => "not a valid timestamp".to_owned(),
                };
                let col = ColumnCtx { why: Some(&why), ..*col };
                match unit {
                    TimeUnit::Second => prim::<TimestampSecondType>(&col, v, faults, dt, parse),
                    TimeUnit::Millisecond => prim::<TimestampMillisecondType>(&col, v, faults, dt, parse),
                    TimeUnit::Microsecond => prim::<TimestampMicrosecondType>(&col, v, faults, dt, parse),
                    TimeUnit::Nanosecond => prim::<TimestampNanosecondType>(&col, v, faults, dt, parse),
                }
            }
            DataType::Decimal128(p, s) => {
                let (p, s) = (*p, *s);
                let mut b = PrimitiveBuilder::<Decimal128Type>::with_capacity(col.chunk.len());
                // Arrow's parser drops digits beyond the scale; a value that needs them is bad.
                let why = |t: &[u8]| match std::str::from_utf8(t).ok().and_then(|t| decimal_places(t.trim()))
                {
                    Some(places) if places > i64::from(s) => format!("more than {s} decimal places for {dt}"),
                    _ => format!("not a valid {dt}"),
                };
                let col = ColumnCtx { why: Some(&why), ..*col };
                col.each(
                    v,
                    faults,
                    &dt.to_string(),
                    |t| {
                        let t = std::str::from_utf8(t).ok()?.trim();
                        if decimal_places(t)? > i64::from(s) {
                            return None;
                        }
                        arrow_cast::parse::parse_decimal::<Decimal128Type>(t, p, s).ok()
                    },
                    |x| b.append_option(x),
                );
                Arc::new(b.finish().with_precision_and_scale(p, s).expect("valid decimal type")) as ArrayRef
            }
            DataType::Utf8 => {
                let mut b = StringBuilder::with_capacity(col.chunk.len(), col.chunk.len() * 8);
                for row in 0..col.chunk.len() {
                    let Some(raw) = col.get(row) else {
                        b.append_null();
                        continue;
                    };
                    if v.is_null(raw) {
                        if !col.nullable {
                            faults.push(col.bad(row, raw, "NULL in a non-nullable column".to_owned()));
                        }
                        b.append_null();
                        continue;
                    }
                    match std::str::from_utf8(raw) {
                        Ok(_) if !v.allow_nul_in_text && memchr::memchr(0, raw).is_some() => {
                            faults.push(col.bad(row, raw, NUL_IN_TEXT.to_owned()));
                            b.append_null();
                        }
                        Ok(s) => b.append_value(s),
                        Err(_) => {
                            faults.push(col.bad(row, raw, "invalid UTF-8".to_owned()));
                            b.append_null();
                        }
                    }
                }
                Arc::new(b.finish()) as ArrayRef
            }
            other => unreachable!("unsupported type {other} was rejected at open"),
        }
    }

    fn ints<T>(&self, col: &ColumnCtx<'_>, faults: &mut Vec<Bad>, dt: &DataType) -> ArrayRef
    where
        T: Parser,
        T::Native: TryFrom<i64> + lexical_core::FromLexical,
    {
        let v = self.values;
        prim::<T>(col, v, faults, dt, |s| v.parse_int::<T>(s))
    }

    fn uints64(&self, col: &ColumnCtx<'_>, faults: &mut Vec<Bad>, dt: &DataType) -> ArrayRef {
        let v = self.values;
        prim::<UInt64Type>(col, v, faults, dt, |b| {
            lexical_core::parse::<u64>(b)
                .ok()
                .or_else(|| UInt64Type::parse(std::str::from_utf8(b).ok()?))
                .or_else(|| v.parse_int::<Int64Type>(b).and_then(|i| u64::try_from(i).ok()))
        })
    }
}

/// One column of one chunk.
#[derive(Clone, Copy)]
struct ColumnCtx<'a> {
    chunk: &'a RecordChunk,
    idx: usize,
    name: &'a str,
    expected: usize,
    nullable: bool,
    /// Explains a value the parser refused (default: `not a valid <type>`); called only for bad
    /// values.
    why: Option<&'a Explain<'a>>,
}

/// Says why a value was refused.
type Explain<'a> = dyn Fn(&[u8]) -> String + 'a;

impl ColumnCtx<'_> {
    /// The field's bytes, or `None` when the row is ragged (already a fault).
    #[inline]
    fn get(&self, row: usize) -> Option<&[u8]> {
        (self.chunk.field_count(row) == self.expected).then(|| self.chunk.field(row, self.idx))
    }

    fn bad(&self, row: usize, raw: &[u8], reason: String) -> Bad {
        Bad {
            row,
            field: self.idx,
            column: Some(self.name.to_owned()),
            value: Some(String::from_utf8_lossy(raw).into_owned()),
            reason,
        }
    }

    /// Parses every value of the column, handing `Some(value)`/`None` (null or bad) to `push`.
    #[inline]
    fn each<V>(
        &self,
        values: &ValueParser,
        faults: &mut Vec<Bad>,
        type_name: &str,
        parse: impl Fn(&[u8]) -> Option<V>,
        mut push: impl FnMut(Option<V>),
    ) {
        for row in 0..self.chunk.len() {
            let Some(raw) = self.get(row) else {
                push(None);
                continue;
            };
            if values.is_null(raw) {
                if !self.nullable {
                    faults.push(self.bad(row, raw, "NULL in a non-nullable column".to_owned()));
                }
                push(None);
                continue;
            }
            match parse(raw) {
                Some(x) => push(Some(x)),
                None => {
                    let reason = if std::str::from_utf8(raw).is_err() {
                        "invalid UTF-8".to_owned()
                    } else if let Some(why) = self.why {
                        why(raw)
                    } else {
                        format!("not a valid {type_name}")
                    };
                    faults.push(self.bad(row, raw, reason));
                    push(None);
                }
            }
        }
    }
}

fn prim<T: ArrowPrimitiveType>(
    col: &ColumnCtx<'_>,
    values: &ValueParser,
    faults: &mut Vec<Bad>,
    dt: &DataType,
    parse: impl Fn(&[u8]) -> Option<T::Native>,
) -> ArrayRef {
    let mut b = PrimitiveBuilder::<T>::with_capacity(col.chunk.len());
    let name = match dt {
        DataType::Timestamp(..) => "timestamp".to_owned(),
        DataType::Date32 => "date".to_owned(),
        other => other.to_string(),
    };
    col.each(values, faults, &name, parse, |x| b.append_option(x));
    Arc::new(b.finish().with_data_type(dt.clone())) as ArrayRef
}

/// A boolean mask keeping every row without a fault.
pub(crate) fn keep_mask(rows: usize, faults: &[Bad]) -> BooleanArray {
    let mut keep = vec![true; rows];
    for b in faults {
        keep[b.row] = false;
    }
    BooleanArray::from(keep)
}

/// `YYYY-MM-DD HH:MM:SS` or `YYYY-MM-DDTHH:MM:SS` exactly (the common case), without allocation or
/// format parsing; anything else (fractions, offsets, other formats) returns `None` and takes the
/// general path.
#[inline]
fn plain_datetime(b: &[u8]) -> Option<Moment> {
    if b.len() != 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |acc, c| c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0')))
    };
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let (h, m, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || m > 59 || sec > 59 {
        return None;
    }
    let days = i64::from(date.num_days_from_ce()) - 719_163; // 1970-01-01
    Some(Moment { secs: days * 86_400 + i64::from(h * 3600 + m * 60 + sec), nanos: 0 })
}

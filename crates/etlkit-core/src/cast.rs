//! Strict casts: a column converted to a target type together with the rows whose value does not
//! convert or that the conversion would change. One definition of "strict" for every reader, job
//! and sink that maps input columns onto declared types (pure functions, no I/O).

use arrow_array::cast::AsArray;
use arrow_array::temporal_conversions::as_datetime_with_timezone;
use arrow_array::timezone::Tz;
use arrow_array::types::{
    Decimal128Type, Decimal256Type, Float64Type, Int64Type, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use arrow_array::{Array, ArrayRef};
use arrow_buffer::i256;
use arrow_cast::parse::string_to_datetime;
use arrow_cast::{CastOptions, cast, cast_with_options};
use arrow_schema::{ArrowError, DataType, TimeUnit};

/// Casts `column` to `to`. Returns the converted column and, in ascending row order and one per
/// row, the rows whose value is bad for `to` with the reason:
///
/// - a value that does not convert (text that is not a number, a number out of range, NaN into an
///   integer): `not a valid <type>`; it is NULL in the returned column;
/// - a value the cast would change rather than convert: a fraction into an integer (`2.5` → `2`),
///   more decimal places than a decimal's scale (text, a float or a decimal of a larger scale), an
///   integer a float cannot hold exactly (`2^53 + 1` into `Float64`), a finite float that overflows
///   a narrower float, sub-unit precision into a coarser timestamp or time of day (nanoseconds into
///   microseconds, from a timestamp, a `Time64` or text), a time of day into a date (for a zoned timestamp, the time of
///   day in its zone; for text, any time but midnight UTC).
///
/// A column already of type `to` is returned as is, with no bad rows. `Err` only when arrow has no
/// cast from the column's type to `to` at all.
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{ArrayRef, Float64Array};
/// use arrow_schema::DataType;
///
/// let fares: ArrayRef = Arc::new(Float64Array::from(vec![Some(3.0), Some(2.5), None, Some(f64::NAN)]));
/// let (ints, bad) = etlkit_core::cast_strict(&fares, &DataType::Int64).unwrap();
/// assert_eq!(bad.iter().map(|(row, _)| *row).collect::<Vec<_>>(), [1, 3]);
/// assert_eq!(ints.null_count(), 2); // the NULL and the NaN
/// ```
pub fn cast_strict(column: &ArrayRef, to: &DataType) -> Result<(ArrayRef, Vec<(usize, String)>), ArrowError> {
    if column.data_type() == to {
        return Ok((column.clone(), Vec::new()));
    }
    let strict = CastOptions { safe: false, ..Default::default() };
    let (converted, lossless) = match cast_with_options(column, to, &strict) {
        Ok(c) => (c, true),
        // Some values do not convert: the lenient cast makes them NULL.
        Err(_) => (cast(column, to)?, false),
    };
    let mut bad = changed_values(column, &converted, to)?;
    if !lossless {
        let reason = format!("not a valid {to}");
        bad.extend(
            (0..column.len())
                .filter(|&r| column.is_valid(r) && converted.is_null(r))
                .map(|r| (r, reason.clone())),
        );
    }
    // Stable: a row's first reason stays.
    bad.sort_by_key(|(row, _)| *row);
    bad.dedup_by_key(|(row, _)| *row);
    Ok((converted, bad))
}

/// Rows whose value the cast of `column` to `to` (giving `converted`) changed: digits or precision
/// dropped.
fn changed_values(
    column: &ArrayRef,
    converted: &ArrayRef,
    to: &DataType,
) -> Result<Vec<(usize, String)>, ArrowError> {
    use DataType::*;
    let mut out = Vec::new();
    match (column.data_type(), to) {
        // Exact when the float holds the integer: compare the value cast back.
        (from, Float16 | Float32 | Float64) if from.is_integer() => {
            out = differs_after_round_trip(column, converted, &format!("cannot be held exactly by {to}"))?;
        }
        // Compared as floats: a decimal that gives the float back holds every digit it carries.
        (Float16 | Float32 | Float64, Decimal128(_, s) | Decimal256(_, s)) => {
            let reason = format!("more than {s} decimal places for {to}");
            out = compared_as_floats(column, converted, |given, back| given != back, &reason)?;
        }
        (Float64, Float32 | Float16) | (Float32, Float16) => {
            let overflows = |given: f64, back: f64| given.is_finite() && !back.is_finite();
            out = compared_as_floats(column, converted, overflows, &format!("out of range for {to}"))?;
        }
        (Utf8 | LargeUtf8 | Utf8View, Timestamp(unit, _)) => {
            let digits = match unit {
                TimeUnit::Second => 0,
                TimeUnit::Millisecond => 3,
                TimeUnit::Microsecond => 6,
                TimeUnit::Nanosecond => 9,
            };
            let text = cast(column, &Utf8)?;
            let reason = format!("finer than {to}");
            for (row, v) in text.as_string::<i32>().iter().enumerate() {
                if v.is_some_and(|v| {
                    fraction_of_second(v).is_some_and(|f| f.bytes().skip(digits).any(|d| d != b'0'))
                }) {
                    out.push((row, reason.clone()));
                }
            }
        }
        (Utf8 | LargeUtf8 | Utf8View, Date32 | Date64) => {
            let utc: Tz = "+00:00".parse()?;
            let text = cast(column, &Utf8)?;
            for (row, v) in text.as_string::<i32>().iter().enumerate() {
                // Longer than `YYYY-MM-DD`: arrow reads a timestamp and keeps its UTC date.
                if let Some(v) = v.map(str::trim).filter(|v| v.len() > 10)
                    && string_to_datetime(&utc, v).is_ok_and(|t| {
                        t.timestamp_nanos_opt().is_none_or(|n| n.rem_euclid(86_400 * 1_000_000_000) != 0)
                    })
                {
                    out.push((row, "has a time of day".to_owned()));
                }
            }
        }
        (Utf8 | LargeUtf8 | Utf8View, Decimal128(_, s) | Decimal256(_, s)) => {
            let text = cast(column, &Utf8)?;
            for (row, v) in text.as_string::<i32>().iter().enumerate() {
                if let Some(places) = v.and_then(|v| decimal_places(v.trim()))
                    && places > i64::from(*s)
                {
                    out.push((row, format!("more than {s} decimal places for {to}")));
                }
            }
        }
        (Float16 | Float32 | Float64, to) if to.is_integer() => {
            let floats = cast(column, &Float64)?;
            for (row, v) in floats.as_primitive::<Float64Type>().iter().enumerate() {
                if v.is_some_and(|v| v.is_finite() && v.fract() != 0.0) {
                    out.push((row, format!("not a valid {to}")));
                }
            }
        }
        (Decimal128(_, s) | Decimal256(_, s), to) if *s > 0 => {
            let kept = match to {
                Decimal128(_, t) | Decimal256(_, t) => (*t).max(0),
                to if to.is_integer() => 0,
                _ => return Ok(out),
            };
            if kept < *s {
                let dropped = (*s - kept) as u32;
                let reason = format!("more than {kept} decimal places for {to}");
                match column.data_type() {
                    Decimal128(..) => {
                        let unit = 10i128.pow(dropped);
                        let values = column.as_primitive::<Decimal128Type>();
                        out.extend(
                            values
                                .iter()
                                .enumerate()
                                .filter(|(_, v)| v.is_some_and(|v| v % unit != 0))
                                .map(|(r, _)| (r, reason.clone())),
                        );
                    }
                    _ => {
                        let unit = i256::from_i128(10).wrapping_pow(dropped);
                        let values = column.as_primitive::<Decimal256Type>();
                        out.extend(
                            values
                                .iter()
                                .enumerate()
                                .filter(|(_, v)| v.is_some_and(|v| v.wrapping_rem(unit) != i256::ZERO))
                                .map(|(r, _)| (r, reason.clone())),
                        );
                    }
                }
            }
        }
        (Timestamp(from, _), Timestamp(into, _)) | (Time64(from), Time64(into) | Time32(into))
            if ticks_per_second(from) > ticks_per_second(into) =>
        {
            let unit = ticks_per_second(from) / ticks_per_second(into);
            out = multiples_of(column, unit, &format!("finer than {to}"))?;
        }
        (Timestamp(from, None), Date32 | Date64) => {
            out = multiples_of(column, ticks_per_second(from) * 86_400, "has a time of day")?;
        }
        // The date of a zoned timestamp is its date in that zone: so is its time of day.
        (Timestamp(_, Some(zone)), Date32 | Date64) => {
            let zone: Tz = zone.parse()?;
            let local = |v: i64| -> Option<i64> {
                let t = match column.data_type() {
                    Timestamp(TimeUnit::Second, _) => {
                        as_datetime_with_timezone::<TimestampSecondType>(v, zone)
                    }
                    Timestamp(TimeUnit::Millisecond, _) => {
                        as_datetime_with_timezone::<TimestampMillisecondType>(v, zone)
                    }
                    Timestamp(TimeUnit::Microsecond, _) => {
                        as_datetime_with_timezone::<TimestampMicrosecondType>(v, zone)
                    }
                    _ => as_datetime_with_timezone::<TimestampNanosecondType>(v, zone),
                }?;
                t.naive_local().and_utc().timestamp_nanos_opt()
            };
            let raw = cast(column, &Int64)?;
            out.extend(
                raw.as_primitive::<Int64Type>()
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| {
                        v.is_some_and(|v| local(v).is_none_or(|n| n.rem_euclid(86_400 * 1_000_000_000) != 0))
                    })
                    .map(|(r, _)| (r, "has a time of day".to_owned())),
            );
        }
        (Date64, Date32) => out = multiples_of(column, 86_400_000, "has a time of day")?,
        _ => {}
    }
    Ok(out)
}

/// Rows (valid in both) where `converted` cast back to the type of `column` differs from it.
fn differs_after_round_trip(
    column: &ArrayRef,
    converted: &ArrayRef,
    reason: &str,
) -> Result<Vec<(usize, String)>, ArrowError> {
    let back = cast(converted, column.data_type())?;
    let same = arrow_ord::cmp::eq(column, &back)?;
    Ok((0..column.len())
        .filter(|&r| column.is_valid(r) && converted.is_valid(r) && (back.is_null(r) || !same.value(r)))
        .map(|r| (r, reason.to_owned()))
        .collect())
}

/// Rows (valid in both) where `changed(given, back)` holds for `column` and `converted`, both read
/// as `Float64`.
fn compared_as_floats(
    column: &ArrayRef,
    converted: &ArrayRef,
    changed: impl Fn(f64, f64) -> bool,
    reason: &str,
) -> Result<Vec<(usize, String)>, ArrowError> {
    let (given, back) = (cast(column, &DataType::Float64)?, cast(converted, &DataType::Float64)?);
    let (given, back) = (given.as_primitive::<Float64Type>(), back.as_primitive::<Float64Type>());
    Ok((0..column.len())
        .filter(|&r| given.is_valid(r) && back.is_valid(r) && changed(given.value(r), back.value(r)))
        .map(|r| (r, reason.to_owned()))
        .collect())
}

/// The fractional-second digits of a timestamp written as text (`…:05.123456789+02:00` →
/// `123456789`): the digits after the first `.` that follows a `:`.
fn fraction_of_second(t: &str) -> Option<&str> {
    let after = &t[t.find(':')?..];
    let digits = &after[after.find('.')? + 1..];
    let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
    Some(&digits[..end])
}

fn ticks_per_second(unit: &TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => 1,
        TimeUnit::Millisecond => 1_000,
        TimeUnit::Microsecond => 1_000_000,
        TimeUnit::Nanosecond => 1_000_000_000,
    }
}

/// Rows of a 64-bit temporal column whose raw value is not a multiple of `unit`.
fn multiples_of(column: &ArrayRef, unit: i64, reason: &str) -> Result<Vec<(usize, String)>, ArrowError> {
    let raw = cast(column, &DataType::Int64)?;
    Ok(raw
        .as_primitive::<Int64Type>()
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_some_and(|v| v.rem_euclid(unit) != 0))
        .map(|(r, _)| (r, reason.to_owned()))
        .collect())
}

/// The number of decimal places `t` needs to be written exactly (`13.370` → 2, `1.5e-3` → 4,
/// `1200` → −2, `0` → 0): fractional digits without trailing zeros, shifted by the exponent.
/// `None` when `t` is not a number of that form.
pub fn decimal_places(t: &str) -> Option<i64> {
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i64>().ok()?),
        None => (t, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|c| c.is_ascii_digit())
        || !frac.bytes().all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let frac = frac.trim_end_matches('0');
    let places = if !frac.is_empty() {
        frac.len() as i64
    } else if int.bytes().all(|c| c == b'0') {
        return Some(0); // zero needs no places at any scale
    } else {
        -((int.len() - int.trim_end_matches('0').len()) as i64)
    };
    places.checked_sub(exp)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{
        Date64Array, Decimal128Array, Float64Array, Int32Array, Int64Array, StringArray,
        TimestampMicrosecondArray, TimestampNanosecondArray,
    };

    use super::*;

    fn bad_rows(column: ArrayRef, to: DataType) -> Vec<usize> {
        cast_strict(&column, &to).unwrap().1.into_iter().map(|(row, _)| row).collect()
    }

    #[test]
    fn values_that_do_not_convert_or_would_change_are_bad_rows() {
        let floats =
            Float64Array::from(vec![Some(1.0), Some(2.5), Some(f64::NAN), None, Some(-3.0), Some(1e30)]);
        assert_eq!(bad_rows(Arc::new(floats), DataType::Int64), [1, 2, 5]);
        let text = StringArray::from(vec![Some("12"), Some("x"), None, Some("3.5")]);
        assert_eq!(bad_rows(Arc::new(text.clone()), DataType::Int32), [1, 3]);
        assert_eq!(bad_rows(Arc::new(text), DataType::Decimal128(10, 0)), [1, 3]);
        let cents = Decimal128Array::from(vec![Some(1200), Some(1250), None])
            .with_precision_and_scale(10, 2)
            .unwrap();
        assert_eq!(bad_rows(Arc::new(cents.clone()), DataType::Int64), [1]);
        assert_eq!(bad_rows(Arc::new(cents.clone()), DataType::Decimal128(10, 1)), Vec::<usize>::new());
        assert_eq!(bad_rows(Arc::new(cents), DataType::Decimal128(10, 0)), [1]);
        let times = arrow_array::Time64NanosecondArray::from(vec![Some(5_000), Some(5_001), None]);
        assert_eq!(bad_rows(Arc::new(times), DataType::Time64(TimeUnit::Microsecond)), [1]);
        let nanos =
            TimestampNanosecondArray::from(vec![Some(5_000), Some(5_001), None, Some(-7_000), Some(-7_001)]);
        assert_eq!(bad_rows(Arc::new(nanos), DataType::Timestamp(TimeUnit::Microsecond, None)), [1, 4]);
        let day = 86_400_000_000i64;
        let micros = TimestampMicrosecondArray::from(vec![Some(day), Some(day + 1), Some(-day)]);
        assert_eq!(bad_rows(Arc::new(micros), DataType::Date32), [1]);
        let dates = Date64Array::from(vec![86_400_000, 86_400_001]);
        assert_eq!(bad_rows(Arc::new(dates), DataType::Date32), [1]);
        // Widening conversions have no bad rows; a column of the type is returned as is.
        let ints: ArrayRef = Arc::new(Int32Array::from(vec![Some(1), None, Some(i32::MAX)]));
        assert!(cast_strict(&ints, &DataType::Int64).unwrap().1.is_empty());
        assert!(cast_strict(&ints, &DataType::Float64).unwrap().1.is_empty());
        let (same, bad) = cast_strict(&ints, &DataType::Int32).unwrap();
        assert!(Arc::ptr_eq(&same, &ints) && bad.is_empty());
    }

    #[test]
    fn floats_into_decimals_wide_integers_into_floats_and_times_from_text_or_a_zone_are_checked() {
        // Rounding to the scale is a change; a float that is the decimal's nearest double is not.
        let prices =
            Float64Array::from(vec![Some(12.34), Some(12.345), Some(0.1), None, Some(1e30), Some(1.15)]);
        assert_eq!(bad_rows(Arc::new(prices), DataType::Decimal128(12, 2)), [1, 4]);
        let ids =
            Int64Array::from(vec![Some(9_007_199_254_740_992), Some(9_007_199_254_740_993), Some(-3), None]);
        assert_eq!(bad_rows(Arc::new(ids), DataType::Float64), [1]);
        let wide = Float64Array::from(vec![Some(1e300), Some(0.1), Some(f64::INFINITY), Some(f64::NAN)]);
        assert_eq!(bad_rows(Arc::new(wide), DataType::Float32), [0]);
        let stamps = StringArray::from(vec![
            Some("2024-01-01T00:00:00.123456"),
            Some("2024-01-01T00:00:00.1234567"),
            Some("2024-01-01 00:00:00.123456000+02:00"),
            Some("2024-01-01T00:00:00Z"),
            None,
        ]);
        let micros = DataType::Timestamp(TimeUnit::Microsecond, None);
        assert_eq!(bad_rows(Arc::new(stamps), micros), [1]);
        let days = StringArray::from(vec![
            Some("2024-03-10"),
            Some("2024-03-10 00:00:00"),
            Some("2024-03-10 14:30:00"),
            Some("2024-03-10T01:00:00+05:00"),
            Some("2024-03-10T00:00:00Z"),
        ]);
        assert_eq!(bad_rows(Arc::new(days), DataType::Date32), [2, 3]);
        // Midnight at +01:00 is 23:00 UTC the day before: its date is local, and so is its time.
        let hour = 3_600_000_000i64;
        let zoned = TimestampMicrosecondArray::from(vec![Some(-hour), Some(0), Some(86_400_000_000 - hour)])
            .with_timezone("+01:00");
        let (dates, bad) = cast_strict(&(Arc::new(zoned) as ArrayRef), &DataType::Date32).unwrap();
        assert_eq!(bad.iter().map(|(r, _)| *r).collect::<Vec<_>>(), [1]);
        assert_eq!(dates.as_primitive::<arrow_array::types::Date32Type>().value(0), 0);
    }

    #[test]
    fn decimal_places_counts_the_digits_a_value_needs() {
        for (t, want) in [
            ("13.37", Some(2)),
            ("13.370", Some(2)),
            ("-0.5", Some(1)),
            ("+7", Some(0)),
            ("1200", Some(-2)),
            ("0.000", Some(0)),
            ("1.5e-3", Some(4)),
            ("15E2", Some(-2)),
            (".25", Some(2)),
            ("1.", Some(0)),
            ("", None),
            (".", None),
            ("1.2.3", None),
            ("12x", None),
            ("1e", None),
        ] {
            assert_eq!(decimal_places(t), want, "{t:?}");
        }
    }
}

//! Schema inference: the narrowest type that fits every sampled value of a column, over every file.

use arrow_array::types::{Float64Type, Int64Type};
use arrow_cast::parse::Parser;
use arrow_schema::{DataType, TimeUnit};

use super::convert::ValueParser;

/// The widest decimal Arrow's `Decimal128` holds, in digits.
const MAX_DIGITS: u8 = 38;

/// Digits an `Int64` value can need.
const INT64_DIGITS: u8 = 19;

/// What the values of a column seen so far look like.
///
/// Widening order: `Int` → `Float` or `Decimal` → `Text`; `Date` → `Timestamp` → `Text`; anything
/// else mixed → `Text`. An integer too wide for `Int64` is a `Decimal` of scale 0 (whether or not
/// `infer_decimals` is on), so a column mixing it with floats becomes `Text`, never a rounding
/// `Float`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guess {
    /// Only NULLs so far.
    Empty,
    Bool,
    Int,
    Float,
    /// Plain decimal numbers (with `infer_decimals`), or integers too wide for `Int64` (scale 0):
    /// the most integer and fractional digits seen.
    Decimal {
        int_digits: u8,
        scale: u8,
    },
    Date,
    Timestamp,
    Text,
}

impl Guess {
    /// Classifies one non-NULL value; `decimals` makes plain fractional numbers `Decimal` rather
    /// than `Float`.
    pub(crate) fn of(values: &ValueParser, raw: &[u8], decimals: bool) -> Guess {
        let Ok(s) = std::str::from_utf8(raw) else {
            return Guess::Text;
        };
        let b = s.as_bytes();
        if Int64Type::parse(s).is_some() {
            Guess::Int
        } else if wide_integer(s) {
            // Too wide for Int64: exact as a Decimal128(38, 0) when it has at most 38 digits, else
            // text; never a Float64, which would round it.
            match plain_decimal(s) {
                Some((int_digits, _)) => Guess::Decimal { int_digits, scale: 0 },
                None => Guess::Text,
            }
        } else if let Some((int_digits, scale)) = decimals.then(|| plain_decimal(s)).flatten() {
            Guess::Decimal { int_digits, scale }
        } else if Float64Type::parse(s).is_some() {
            Guess::Float
        } else if s.trim().eq_ignore_ascii_case("true") || s.trim().eq_ignore_ascii_case("false") {
            Guess::Bool
        } else if values.parse_plain_date(b).is_some() {
            Guess::Date
        } else if values.parse_timestamp(b).and_then(|m| m.in_unit(TimeUnit::Microsecond)).is_some() {
            Guess::Timestamp
        } else {
            Guess::Text
        }
    }

    /// The narrowest guess covering both.
    pub(crate) fn merge(self, other: Guess) -> Guess {
        use Guess::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Empty, x) | (x, Empty) => x,
            (Int, Float) | (Float, Int) => Float,
            (Int, Decimal { int_digits, scale }) | (Decimal { int_digits, scale }, Int) => {
                decimal(int_digits.max(INT64_DIGITS), scale)
            }
            (Decimal { int_digits: i1, scale: s1 }, Decimal { int_digits: i2, scale: s2 }) => {
                decimal(i1.max(i2), s1.max(s2))
            }
            (Date, Timestamp) | (Timestamp, Date) => Timestamp,
            _ => Text,
        }
    }

    /// The Arrow type for this guess (all-NULL columns become `Utf8`).
    pub(crate) fn data_type(self) -> DataType {
        match self {
            Guess::Empty | Guess::Text => DataType::Utf8,
            Guess::Bool => DataType::Boolean,
            Guess::Int => DataType::Int64,
            Guess::Float => DataType::Float64,
            Guess::Decimal { scale, .. } => DataType::Decimal128(MAX_DIGITS, scale as i8),
            Guess::Date => DataType::Date32,
            Guess::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        }
    }
}

/// A decimal guess, or `Text` when the digits do not fit a `Decimal128`.
fn decimal(int_digits: u8, scale: u8) -> Guess {
    if u16::from(int_digits) + u16::from(scale) <= u16::from(MAX_DIGITS) {
        Guess::Decimal { int_digits, scale }
    } else {
        Guess::Text
    }
}

/// `[+-]digits`, surrounding spaces allowed, that does not fit an `i64`.
fn wide_integer(s: &str) -> bool {
    let t = s.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit()) && t.parse::<i64>().is_err()
}

/// `[+-]digits[.digits]` (or `.digits`), surrounding spaces allowed, no exponent: its integer digits
/// (leading zeros not counted) and fractional digits, when they fit a `Decimal128`.
fn plain_decimal(s: &str) -> Option<(u8, u8)> {
    let t = s.trim();
    let t = t.strip_prefix(['+', '-']).unwrap_or(t);
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let all_digits = |p: &str| p.bytes().all(|c| c.is_ascii_digit());
    if int.is_empty() && frac.is_empty() || !all_digits(int) || !all_digits(frac) {
        return None;
    }
    let int_digits = int.trim_start_matches('0').len();
    (int_digits + frac.len() <= usize::from(MAX_DIGITS)).then_some((int_digits as u8, frac.len() as u8))
}

//! Schema inference: the narrowest type that fits every sampled value of a column.

use arrow_array::types::{Float64Type, Int64Type};
use arrow_cast::parse::Parser;
use arrow_schema::{DataType, TimeUnit};

use super::convert::ValueParser;

/// What the values of a column seen so far look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Guess {
    /// Only NULLs so far.
    Empty,
    Bool,
    Int,
    Float,
    Date,
    Timestamp,
    Text,
}

impl Guess {
    /// Classifies one non-NULL value.
    pub(crate) fn of(values: &ValueParser, raw: &[u8]) -> Guess {
        let Ok(s) = std::str::from_utf8(raw) else {
            return Guess::Text;
        };
        let b = s.as_bytes();
        if Int64Type::parse(s).is_some() {
            Guess::Int
        } else if Float64Type::parse(s).is_some() {
            Guess::Float
        } else if s.trim().eq_ignore_ascii_case("true") || s.trim().eq_ignore_ascii_case("false") {
            Guess::Bool
        } else if s.trim().len() <= 10 && values.parse_date(b).is_some() {
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
            Guess::Date => DataType::Date32,
            Guess::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
        }
    }
}

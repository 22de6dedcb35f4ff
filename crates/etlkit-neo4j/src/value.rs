//! Arrow columns to Bolt values: one positional list per row, with an estimate of its encoded size.

use std::hash::{Hash, Hasher};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use neo4rs::{BoltBoolean, BoltDate, BoltFloat, BoltInteger, BoltList, BoltNull, BoltString, BoltType};

use crate::error::{GraphError, Result};

/// Whether this crate can send columns of `dt` (strings, integers, floats, booleans, `Date32`).
pub fn is_supported(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
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
            | DataType::Boolean
            | DataType::Date32
            | DataType::Null
    )
}

/// The columns of one mapping, resolved against one batch.
pub(crate) struct Columns<'a> {
    spec: String,
    names: Vec<&'a str>,
    arrays: Vec<&'a ArrayRef>,
}

impl<'a> Columns<'a> {
    /// Resolves `names` in `batch`, checking presence and types.
    pub(crate) fn resolve(spec: String, names: &[&'a str], batch: &'a RecordBatch) -> Result<Self> {
        let mut arrays = Vec::with_capacity(names.len());
        for &name in names {
            let Some(array) = batch.column_by_name(name) else {
                let available =
                    batch.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ");
                return Err(GraphError::MissingColumn { spec, column: name.to_owned(), available });
            };
            if !is_supported(array.data_type()) {
                return Err(GraphError::UnsupportedType {
                    spec,
                    column: name.to_owned(),
                    data_type: array.data_type().to_string(),
                });
            }
            arrays.push(array);
        }
        Ok(Columns { spec, names: names.to_vec(), arrays })
    }

    /// The first of the first `n` columns that is NULL (or NaN, which equals nothing) in `row`.
    pub(crate) fn first_null(&self, n: usize, row: usize) -> Option<&'a str> {
        (0..n.min(self.arrays.len())).find(|&c| missing_key(self.arrays[c], row)).map(|c| self.names[c])
    }

    /// Hashes the values of columns `range` in `row` (for partitioning).
    pub(crate) fn hash(&self, range: std::ops::Range<usize>, row: usize) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for c in range {
            let a = self.arrays[c];
            match a.data_type() {
                DataType::Utf8 => a.as_string::<i32>().value(row).hash(&mut h),
                DataType::LargeUtf8 => a.as_string::<i64>().value(row).hash(&mut h),
                DataType::Utf8View => a.as_string_view().value(row).hash(&mut h),
                _ => match self.value(c, row) {
                    Ok(BoltType::Integer(i)) => i.value.hash(&mut h),
                    // Cypher's `7 = 7.0` holds: a whole float is in its integer's lock group.
                    Ok(BoltType::Float(f)) if f.value.fract() == 0.0 && f.value.abs() < 9.2e18 => {
                        (f.value as i64).hash(&mut h)
                    }
                    // 0.0 and -0.0 are one key to the server: one lock group (whole, so above).
                    Ok(BoltType::Float(f)) => f.value.to_bits().hash(&mut h),
                    Ok(BoltType::Boolean(b)) => b.value.hash(&mut h),
                    _ => 0u8.hash(&mut h),
                },
            }
        }
        h.finish()
    }

    /// The row as a positional Bolt list, and its estimated encoded size in bytes.
    pub(crate) fn row(&self, row: usize) -> Result<(BoltType, usize)> {
        let mut list = BoltList::with_capacity(self.arrays.len());
        let mut bytes = 5;
        for c in 0..self.arrays.len() {
            let v = self.value(c, row)?;
            bytes += encoded_len(&v);
            list.push(v);
        }
        Ok((BoltType::List(list), bytes))
    }

    fn value(&self, c: usize, row: usize) -> Result<BoltType> {
        let a = self.arrays[c];
        if a.is_null(row) {
            return Ok(BoltType::Null(BoltNull));
        }
        let int = |v: i64| BoltType::Integer(BoltInteger::new(v));
        Ok(match a.data_type() {
            DataType::Utf8 => string(a.as_string::<i32>().value(row)),
            DataType::LargeUtf8 => string(a.as_string::<i64>().value(row)),
            DataType::Utf8View => string(a.as_string_view().value(row)),
            DataType::Int8 => int(a.as_primitive::<Int8Type>().value(row).into()),
            DataType::Int16 => int(a.as_primitive::<Int16Type>().value(row).into()),
            DataType::Int32 => int(a.as_primitive::<Int32Type>().value(row).into()),
            DataType::Int64 => int(a.as_primitive::<Int64Type>().value(row)),
            DataType::UInt8 => int(a.as_primitive::<UInt8Type>().value(row).into()),
            DataType::UInt16 => int(a.as_primitive::<UInt16Type>().value(row).into()),
            DataType::UInt32 => int(a.as_primitive::<UInt32Type>().value(row).into()),
            DataType::UInt64 => {
                let v = a.as_primitive::<UInt64Type>().value(row);
                int(i64::try_from(v).map_err(|_| self.invalid(c, row, v.to_string(), "exceeds i64::MAX"))?)
            }
            DataType::Float32 => {
                BoltType::Float(BoltFloat::new(a.as_primitive::<Float32Type>().value(row).into()))
            }
            DataType::Float64 => BoltType::Float(BoltFloat::new(a.as_primitive::<Float64Type>().value(row))),
            DataType::Boolean => BoltType::Boolean(BoltBoolean::new(a.as_boolean().value(row))),
            DataType::Date32 => {
                let days = a.as_primitive::<Date32Type>().value(row);
                let date = chrono::NaiveDate::from_num_days_from_ce_opt(days.saturating_add(719_163))
                    .ok_or_else(|| self.invalid(c, row, days.to_string(), "is out of the date range"))?;
                BoltType::Date(BoltDate::from(date))
            }
            other => {
                return Err(GraphError::UnsupportedType {
                    spec: self.spec.clone(),
                    column: self.names[c].to_owned(),
                    data_type: other.to_string(),
                });
            }
        })
    }

    fn invalid(&self, c: usize, row: usize, value: String, reason: &str) -> GraphError {
        GraphError::InvalidValue {
            spec: self.spec.clone(),
            row: row + 1,
            column: self.names[c].to_owned(),
            value,
            reason: reason.to_owned(),
        }
    }
}

fn string(s: &str) -> BoltType {
    BoltType::String(BoltString::new(s))
}

/// PackStream size of a scalar: marker + length header + payload (upper bound).
fn encoded_len(v: &BoltType) -> usize {
    match v {
        BoltType::String(s) => s.value.len() + 5,
        BoltType::Null(_) | BoltType::Boolean(_) => 1,
        BoltType::Integer(_) | BoltType::Float(_) => 9,
        BoltType::Date(_) => 11,
        _ => 16,
    }
}

/// Whether `array[row]` cannot be a key: NULL, or a floating-point NaN (Cypher's `NaN = NaN` is
/// false, so a `MERGE` on it would create a new node on every run).
pub(crate) fn missing_key(array: &dyn Array, row: usize) -> bool {
    array.is_null(row)
        || match array.data_type() {
            DataType::Float64 => array.as_primitive::<Float64Type>().value(row).is_nan(),
            DataType::Float32 => array.as_primitive::<Float32Type>().value(row).is_nan(),
            _ => false,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow_array::{Int64Array, StringArray, UInt64Array};

    #[test]
    fn rows_become_positional_lists_with_size_estimates() {
        let batch = RecordBatch::try_from_iter([
            ("id", Arc::new(StringArray::from(vec![Some("O'Brien"), None])) as ArrayRef),
            ("n", Arc::new(Int64Array::from(vec![Some(7), Some(8)])) as ArrayRef),
            ("u", Arc::new(UInt64Array::from(vec![1, u64::MAX])) as ArrayRef),
        ])
        .unwrap();
        let cols = Columns::resolve("(:T)".into(), &["id", "n", "u"], &batch).unwrap();
        let (row, bytes) = cols.row(0).unwrap();
        let BoltType::List(l) = row else { panic!() };
        assert_eq!(l.value[0], BoltType::String(BoltString::new("O'Brien")));
        assert_eq!(l.value[1], BoltType::Integer(BoltInteger::new(7)));
        assert_eq!(bytes, 5 + 12 + 9 + 9);
        assert_eq!(cols.first_null(1, 1), Some("id"));
        assert_eq!(cols.first_null(1, 0), None);
        assert!(matches!(cols.row(1), Err(GraphError::InvalidValue { row: 2, .. })));
        assert_eq!(cols.hash(0..1, 0), cols.hash(0..1, 0));
        assert!(matches!(
            Columns::resolve("(:T)".into(), &["nope"], &batch),
            Err(GraphError::MissingColumn { .. })
        ));
    }

    #[test]
    fn keys_the_server_finds_equal_share_a_lock_group() {
        // Cypher: 7 = 7.0 and 0.0 = -0.0; a node reached by both must be locked by one group.
        let batch = RecordBatch::try_from_iter([
            ("i", Arc::new(Int64Array::from(vec![7, 0, 7])) as ArrayRef),
            ("f", Arc::new(arrow_array::Float64Array::from(vec![7.0, -0.0, 7.5])) as ArrayRef),
        ])
        .unwrap();
        let cols = Columns::resolve("(:T)".into(), &["i", "f"], &batch).unwrap();
        assert_eq!(cols.hash(0..1, 0), cols.hash(1..2, 0));
        assert_eq!(cols.hash(0..1, 1), cols.hash(1..2, 1));
        assert_ne!(cols.hash(0..1, 2), cols.hash(1..2, 2));
    }
}

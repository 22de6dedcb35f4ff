//! Reads the golden vectors' cells (`tests/golden/vectors.json`): an Arrow type name and a JSON value
//! become a one-row array. Shared by etlkit-hash's golden test and etlkit-datafusion's SQL golden test
//! (`#[path]`), so both read the vectors exactly the same way.

#![allow(dead_code)]

use std::sync::Arc;

use arrow_array::builder::{
    BinaryViewBuilder, FixedSizeBinaryBuilder, LargeBinaryBuilder, StringViewBuilder,
};
use arrow_array::types::*;
use arrow_array::*;
use arrow_buffer::{NullBuffer, OffsetBuffer, i256};
use arrow_schema::{DataType, Field, Fields, TimeUnit};
use serde_json::Value;

fn split_top(s: &str, sep: char) -> Vec<String> {
    let (mut parts, mut depth, mut cur) = (Vec::new(), 0, String::new());
    for ch in s.chars() {
        match ch {
            '<' | '(' => depth += 1,
            '>' | ')' => depth -= 1,
            _ => {}
        }
        if ch == sep && depth == 0 {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(ch);
        }
    }
    parts.push(cur);
    parts.into_iter().map(|p| p.trim().to_string()).collect()
}

fn unit(s: &str) -> TimeUnit {
    match s {
        "s" => TimeUnit::Second,
        "ms" => TimeUnit::Millisecond,
        "us" => TimeUnit::Microsecond,
        "ns" => TimeUnit::Nanosecond,
        _ => panic!("unit {s}"),
    }
}

/// The vector file's type grammar → Arrow type.
pub(crate) fn parse_type(t: &str) -> DataType {
    let t = t.trim();
    if let Some((name, inner)) = t.split_once('<') {
        let inner = &inner[..inner.len() - 1];
        return match name {
            "list" => DataType::List(Arc::new(Field::new_list_field(parse_type(inner), true))),
            "large_list" => DataType::LargeList(Arc::new(Field::new_list_field(parse_type(inner), true))),
            "fixed_size_list" => {
                let p = split_top(inner, ';');
                DataType::FixedSizeList(
                    Arc::new(Field::new_list_field(parse_type(&p[0]), true)),
                    p[1].parse().unwrap(),
                )
            }
            "struct" => DataType::Struct(
                split_top(inner, ',')
                    .iter()
                    .map(|f| {
                        let (n, ft) = f.split_once(':').unwrap();
                        Field::new(n, parse_type(ft), true)
                    })
                    .collect::<Fields>(),
            ),
            "dictionary" => {
                let p = split_top(inner, ',');
                DataType::Dictionary(Box::new(parse_type(&p[0])), Box::new(parse_type(&p[1])))
            }
            _ => panic!("type {t}"),
        };
    }
    if let Some((name, args)) = t.split_once('(') {
        let args: Vec<&str> = args[..args.len() - 1].split(',').map(str::trim).collect();
        let int = |i: usize| args[i].parse::<i64>().unwrap();
        return match name {
            "decimal32" => DataType::Decimal32(int(0) as u8, int(1) as i8),
            "decimal64" => DataType::Decimal64(int(0) as u8, int(1) as i8),
            "decimal128" => DataType::Decimal128(int(0) as u8, int(1) as i8),
            "decimal256" => DataType::Decimal256(int(0) as u8, int(1) as i8),
            "fixed_size_binary" => DataType::FixedSizeBinary(int(0) as i32),
            "timestamp" => DataType::Timestamp(unit(args[0]), args.get(1).map(|z| Arc::from(*z))),
            "time32" => DataType::Time32(unit(args[0])),
            "time64" => DataType::Time64(unit(args[0])),
            "duration" => DataType::Duration(unit(args[0])),
            _ => panic!("type {t}"),
        };
    }
    match t {
        "null" => DataType::Null,
        "bool" => DataType::Boolean,
        "int8" => DataType::Int8,
        "int16" => DataType::Int16,
        "int32" => DataType::Int32,
        "int64" => DataType::Int64,
        "uint8" => DataType::UInt8,
        "uint16" => DataType::UInt16,
        "uint32" => DataType::UInt32,
        "uint64" => DataType::UInt64,
        "float16" => DataType::Float16,
        "float32" => DataType::Float32,
        "float64" => DataType::Float64,
        "utf8" => DataType::Utf8,
        "large_utf8" => DataType::LargeUtf8,
        "utf8_view" => DataType::Utf8View,
        "binary" => DataType::Binary,
        "large_binary" => DataType::LargeBinary,
        "binary_view" => DataType::BinaryView,
        "date32" => DataType::Date32,
        "date64" => DataType::Date64,
        _ => panic!("type {t}"),
    }
}

fn ints<T: ArrowPrimitiveType>(values: &[Value], f: impl Fn(&Value) -> T::Native) -> PrimitiveArray<T> {
    values.iter().map(|v| (!v.is_null()).then(|| f(v))).collect()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn strs(values: &[Value]) -> Vec<Option<&str>> {
    values.iter().map(|v| v.as_str()).collect()
}

fn nulls(values: &[Value]) -> Option<NullBuffer> {
    let valid: Vec<bool> = values.iter().map(|v| !v.is_null()).collect();
    valid.contains(&false).then(|| NullBuffer::from(valid))
}

/// Builds an array of type `dt` holding `values` (JSON, the vector file's value format).
pub(crate) fn build(dt: &DataType, values: &[Value]) -> ArrayRef {
    let i64v = |v: &Value| v.as_i64().unwrap();
    let f64v = |v: &Value| v.as_str().unwrap().parse::<f64>().unwrap();
    let dec = |v: &Value| v.as_str().unwrap().parse::<i128>().unwrap();
    match dt {
        DataType::Null => Arc::new(NullArray::new(values.len())),
        DataType::Boolean => Arc::new(values.iter().map(Value::as_bool).collect::<BooleanArray>()),
        DataType::Int8 => Arc::new(ints::<Int8Type>(values, |v| i64v(v) as i8)),
        DataType::Int16 => Arc::new(ints::<Int16Type>(values, |v| i64v(v) as i16)),
        DataType::Int32 => Arc::new(ints::<Int32Type>(values, |v| i64v(v) as i32)),
        DataType::Int64 => Arc::new(ints::<Int64Type>(values, i64v)),
        DataType::UInt8 => Arc::new(ints::<UInt8Type>(values, |v| v.as_u64().unwrap() as u8)),
        DataType::UInt16 => Arc::new(ints::<UInt16Type>(values, |v| v.as_u64().unwrap() as u16)),
        DataType::UInt32 => Arc::new(ints::<UInt32Type>(values, |v| v.as_u64().unwrap() as u32)),
        DataType::UInt64 => Arc::new(ints::<UInt64Type>(values, |v| v.as_u64().unwrap())),
        DataType::Float64 => Arc::new(ints::<Float64Type>(values, f64v)),
        DataType::Float32 => {
            Arc::new(ints::<Float32Type>(values, |v| v.as_str().unwrap().parse::<f32>().unwrap()))
        }
        DataType::Float16 => {
            let f32s = ints::<Float32Type>(values, |v| v.as_str().unwrap().parse::<f32>().unwrap());
            arrow_cast::cast(&f32s, &DataType::Float16).unwrap()
        }
        DataType::Decimal32(p, s) => Arc::new(
            ints::<Decimal32Type>(values, |v| dec(v) as i32).with_precision_and_scale(*p, *s).unwrap(),
        ),
        DataType::Decimal64(p, s) => Arc::new(
            ints::<Decimal64Type>(values, |v| dec(v) as i64).with_precision_and_scale(*p, *s).unwrap(),
        ),
        DataType::Decimal128(p, s) => {
            Arc::new(ints::<Decimal128Type>(values, dec).with_precision_and_scale(*p, *s).unwrap())
        }
        DataType::Decimal256(p, s) => Arc::new(
            ints::<Decimal256Type>(values, |v| i256::from_string(v.as_str().unwrap()).unwrap())
                .with_precision_and_scale(*p, *s)
                .unwrap(),
        ),
        DataType::Utf8 => Arc::new(StringArray::from(strs(values))),
        DataType::LargeUtf8 => Arc::new(LargeStringArray::from(strs(values))),
        DataType::Utf8View => {
            let mut b = StringViewBuilder::new();
            values.iter().for_each(|v| b.append_option(v.as_str()));
            Arc::new(b.finish())
        }
        DataType::Binary => {
            let v: Vec<Option<Vec<u8>>> = values.iter().map(|v| v.as_str().map(hex)).collect();
            Arc::new(BinaryArray::from_iter(v))
        }
        DataType::LargeBinary => {
            let mut b = LargeBinaryBuilder::new();
            values.iter().for_each(|v| b.append_option(v.as_str().map(hex)));
            Arc::new(b.finish())
        }
        DataType::BinaryView => {
            let mut b = BinaryViewBuilder::new();
            values.iter().for_each(|v| b.append_option(v.as_str().map(hex)));
            Arc::new(b.finish())
        }
        DataType::FixedSizeBinary(n) => {
            let mut b = FixedSizeBinaryBuilder::new(*n);
            for v in values {
                match v.as_str() {
                    Some(s) => b.append_value(hex(s)).unwrap(),
                    None => b.append_null(),
                }
            }
            Arc::new(b.finish())
        }
        DataType::Date32 => Arc::new(ints::<Date32Type>(values, |v| i64v(v) as i32)),
        DataType::Date64 => Arc::new(ints::<Date64Type>(values, i64v)),
        DataType::Timestamp(u, tz) => {
            let a = ints::<Int64Type>(values, i64v);
            arrow_cast::cast(&a, &DataType::Timestamp(*u, None))
                .unwrap()
                .to_data()
                .into_builder()
                .data_type(DataType::Timestamp(*u, tz.clone()))
                .build()
                .map(make_array)
                .unwrap()
        }
        DataType::Time32(_) | DataType::Time64(_) | DataType::Duration(_) => {
            let a = ints::<Int64Type>(values, i64v);
            let physical = if matches!(dt, DataType::Time32(_)) { DataType::Int32 } else { DataType::Int64 };
            let a = arrow_cast::cast(&a, &physical).unwrap();
            make_array(a.to_data().into_builder().data_type(dt.clone()).build().unwrap())
        }
        DataType::List(f) | DataType::LargeList(f) => {
            let lens: Vec<usize> = values.iter().map(|v| v.as_array().map_or(0, Vec::len)).collect();
            let flat: Vec<Value> =
                values.iter().flat_map(|v| v.as_array().cloned().unwrap_or_default()).collect();
            let child = build(f.data_type(), &flat);
            if matches!(dt, DataType::List(_)) {
                Arc::new(ListArray::new(f.clone(), OffsetBuffer::from_lengths(lens), child, nulls(values)))
            } else {
                Arc::new(LargeListArray::new(
                    f.clone(),
                    OffsetBuffer::from_lengths(lens),
                    child,
                    nulls(values),
                ))
            }
        }
        DataType::FixedSizeList(f, n) => {
            let flat: Vec<Value> = values
                .iter()
                .flat_map(|v| v.as_array().cloned().unwrap_or_else(|| vec![Value::Null; *n as usize]))
                .collect();
            Arc::new(FixedSizeListArray::new(f.clone(), *n, build(f.data_type(), &flat), nulls(values)))
        }
        DataType::Struct(fields) => {
            let columns = fields
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let col: Vec<Value> =
                        values.iter().map(|v| v.as_array().map_or(Value::Null, |a| a[i].clone())).collect();
                    build(f.data_type(), &col)
                })
                .collect();
            Arc::new(StructArray::new(fields.clone(), columns, nulls(values)))
        }
        DataType::Dictionary(_, value) => {
            // one dictionary entry per row, stored in reverse order so keys are not the identity
            let dict = build(value, &values.iter().rev().cloned().collect::<Vec<_>>());
            let n = values.len() as i64;
            let keys = Int64Array::from_iter((0..n).map(|i| Some(n - 1 - i)));
            let keys = arrow_cast::cast(&keys, &dt_key(dt)).unwrap();
            let data = keys.to_data().into_builder().data_type(dt.clone()).child_data(vec![dict.to_data()]);
            make_array(data.build().unwrap())
        }
        other => panic!("no builder for {other}"),
    }
}

fn dt_key(dt: &DataType) -> DataType {
    match dt {
        DataType::Dictionary(k, _) => (**k).clone(),
        _ => unreachable!(),
    }
}

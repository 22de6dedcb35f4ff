//! Recomputes the golden vectors of `tests/golden/vectors.json` (produced by the independent Python
//! implementation `tests/golden/gen_vectors.py`): canonical bytes, SHA-256 and BLAKE3 must all match.

use std::sync::Arc;

use arrow_array::builder::{
    BinaryViewBuilder, FixedSizeBinaryBuilder, LargeBinaryBuilder, StringViewBuilder,
};
use arrow_array::types::*;
use arrow_array::*;
use arrow_buffer::{NullBuffer, OffsetBuffer, i256};
use arrow_schema::{DataType, Field, Fields, TimeUnit};
use etlkit_hash::{Algorithm, RowHasher, to_hex};
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
fn parse_type(t: &str) -> DataType {
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
fn build(dt: &DataType, values: &[Value]) -> ArrayRef {
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

#[test]
fn golden_vectors_match_the_independent_python_implementation() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/vectors.json")).unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(file["spec"], "etlkit-row-v1");
    let vectors = file["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 20);
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let cells = v["cells"].as_array().unwrap();
        let columns: Vec<(String, ArrayRef)> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("c{i}"), build(&parse_type(c[0].as_str().unwrap()), &[c[1].clone()])))
            .collect();
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let hasher = RowHasher::all_columns(Algorithm::Sha256);
        let bytes = hasher.canonical_bytes(&batch).unwrap();
        assert_eq!(to_hex(&bytes[0]), v["canonical_hex"].as_str().unwrap(), "canonical bytes of {name}");
        let sha = hasher.hash_batch(&batch).unwrap();
        assert_eq!(to_hex(sha.value(0)), v["sha256"].as_str().unwrap(), "SHA-256 of {name}");
        let b3 = RowHasher::all_columns(Algorithm::Blake3).hash_batch(&batch).unwrap();
        assert_eq!(to_hex(b3.value(0)), v["blake3"].as_str().unwrap(), "BLAKE3 of {name}");
    }
}

#[test]
fn nan_payloads_and_signs_all_hash_as_the_canonical_nan() {
    let nans =
        [f64::NAN, -f64::NAN, f64::from_bits(0x7ff0_0000_0000_0001), f64::from_bits(0xfff8_dead_beef_0000)];
    let batch =
        RecordBatch::try_from_iter([("x", Arc::new(Float64Array::from(nans.to_vec())) as ArrayRef)]).unwrap();
    let bytes = RowHasher::all_columns(Algorithm::Sha256).canonical_bytes(&batch).unwrap();
    for b in bytes {
        assert_eq!(b, [0x22, 0x7f, 0xf8]);
    }
}

#[test]
fn large_values_in_every_fixed_width_path() {
    // Exercises the 16-byte store path (seconds → ns overflow i64) next to others, across many rows so
    // slots of neighbouring rows are adjacent in the buffer.
    let n = 3000;
    let secs: Vec<i64> = (0..n).map(|i| if i % 2 == 0 { i64::MAX - i } else { i }).collect();
    let batch = RecordBatch::try_from_iter([
        ("t", Arc::new(TimestampSecondArray::from(secs.clone()).with_timezone("UTC")) as ArrayRef),
        ("u", Arc::new(UInt64Array::from_iter_values((0..n).map(|i| u64::MAX - i as u64))) as ArrayRef),
        (
            "s",
            Arc::new(StringArray::from_iter_values((0..n).map(|i| "x".repeat(i as usize % 300)))) as ArrayRef,
        ),
    ])
    .unwrap();
    let rows = RowHasher::all_columns(Algorithm::Sha256).canonical_bytes(&batch).unwrap();
    for (i, row) in rows.iter().enumerate() {
        let mut expect = Vec::new();
        let ns = (secs[i] as i128 * 1_000_000_000).to_be_bytes();
        let z = minimal(&ns);
        expect.push(0x60 | z.len() as u8);
        expect.extend_from_slice(z);
        let u = ((u64::MAX - i as u64) as i128).to_be_bytes();
        let z = minimal(&u);
        expect.push(0x10 | z.len() as u8);
        expect.extend_from_slice(z);
        let len = i % 300;
        expect.push(0x40);
        if len < 128 {
            expect.push(len as u8);
        } else {
            expect.extend_from_slice(&[(len as u8 & 0x7f) | 0x80, (len >> 7) as u8]);
        }
        expect.extend(std::iter::repeat_n(b'x', len));
        assert_eq!(row, &expect, "row {i}");
    }
}

fn minimal(be: &[u8]) -> &[u8] {
    let mut i = 0;
    while i + 1 < be.len()
        && ((be[i] == 0 && be[i + 1] & 0x80 == 0) || (be[i] == 0xff && be[i + 1] & 0x80 != 0))
    {
        i += 1;
    }
    &be[i..]
}

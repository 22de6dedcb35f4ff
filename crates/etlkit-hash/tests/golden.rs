//! Recomputes the golden vectors of `tests/golden/vectors.json` (produced by the independent Python
//! implementation `tests/golden/gen_vectors.py`): canonical bytes, SHA-256 and BLAKE3 must all match.

use std::sync::Arc;

use arrow_array::*;
use etlkit_hash::{Algorithm, RowHasher, to_hex};
use serde_json::Value;

#[path = "golden/reader.rs"]
mod reader;
use reader::{build, parse_type};

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

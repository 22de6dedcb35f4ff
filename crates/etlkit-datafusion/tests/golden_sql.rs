//! SQL `etlkit_row_hash` / `etlkit_row_hash_blake3` against the golden vectors of etlkit-hash
//! (`crates/etlkit-hash/tests/golden/vectors.json`, produced by an independent Python implementation):
//! the digest SQL returns is the one `RowHasher` returns and the one the vector file states.
//! The vector cells are read by etlkit-hash's own reader (`tests/golden/reader.rs`).

#![allow(missing_docs)]

use std::sync::Arc;

use datafusion::arrow::array::*;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use etlkit_datafusion::datafusion;
use etlkit_hash::{Algorithm, RowHasher, to_hex};
use serde_json::Value;

#[path = "../../etlkit-hash/tests/golden/reader.rs"]
mod reader;
use reader::{build, parse_type};

fn vectors() -> Vec<Value> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../etlkit-hash/tests/golden/vectors.json"
    ))
    .unwrap();
    let file: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(file["spec"], "etlkit-row-v1");
    file["vectors"].as_array().unwrap().clone()
}

#[tokio::test]
async fn sql_row_hash_equals_row_hasher_on_the_golden_vectors() {
    let vectors = vectors();
    assert!(vectors.len() >= 20);
    let ctx = SessionContext::new();
    etlkit_datafusion::register_functions(&ctx);
    let mut checked = 0;
    for (n, v) in vectors.iter().enumerate() {
        let name = v["name"].as_str().unwrap();
        let cells = v["cells"].as_array().unwrap();
        let columns: Vec<(String, ArrayRef)> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("c{i}"), build(&parse_type(c[0].as_str().unwrap()), &[c[1].clone()])))
            .collect();
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let table = format!("v{n}");
        ctx.register_table(
            &table,
            Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch.clone()]]).unwrap()),
        )
        .unwrap();
        let args = (0..cells.len()).map(|i| format!("c{i}")).collect::<Vec<_>>().join(", ");
        let sql =
            format!("SELECT etlkit_row_hash({args}) AS s, etlkit_row_hash_blake3({args}) AS b FROM {table}");
        let out = ctx.sql(&sql).await.unwrap_or_else(|e| panic!("{name}: {e}")).collect().await.unwrap();
        assert_eq!(out.len(), 1, "{name}");
        let s =
            out[0].column(0).as_any().downcast_ref::<FixedSizeBinaryArray>().expect("FixedSizeBinary(32)");
        let b = out[0].column(1).as_any().downcast_ref::<FixedSizeBinaryArray>().unwrap();
        assert_eq!(s.value_length(), 32);
        let sha = RowHasher::all_columns(Algorithm::Sha256).hash_batch(&batch).unwrap();
        let b3 = RowHasher::all_columns(Algorithm::Blake3).hash_batch(&batch).unwrap();
        assert_eq!(s.value(0), sha.value(0), "SHA-256 of {name}: SQL vs RowHasher");
        assert_eq!(b.value(0), b3.value(0), "BLAKE3 of {name}: SQL vs RowHasher");
        assert_eq!(to_hex(s.value(0)), v["sha256"].as_str().unwrap(), "SHA-256 of {name}");
        assert_eq!(to_hex(b.value(0)), v["blake3"].as_str().unwrap(), "BLAKE3 of {name}");
        checked += 1;
    }
    assert_eq!(checked, vectors.len());
}

#[tokio::test]
async fn sql_row_hash_over_many_rows_and_literals_matches_row_hasher() {
    let ctx = SessionContext::new();
    etlkit_datafusion::register_functions(&ctx);
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from_iter((0..5000).map(|i| (i % 7 != 0).then_some(i)))) as ArrayRef),
        ("name", Arc::new(StringArray::from_iter_values((0..5000).map(|i| format!("n{i}")))) as ArrayRef),
    ])
    .unwrap();
    ctx.register_table("t", Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch.clone()]]).unwrap()))
        .unwrap();
    let out = ctx.sql("SELECT etlkit_row_hash(id, name) FROM t").await.unwrap().collect().await.unwrap();
    let want = RowHasher::new(Algorithm::Sha256, ["id", "name"]).hash_batch(&batch).unwrap();
    let got: Vec<Vec<u8>> = out
        .iter()
        .flat_map(|b| {
            let a = b.column(0).as_any().downcast_ref::<FixedSizeBinaryArray>().unwrap().clone();
            (0..a.len()).map(move |i| a.value(i).to_vec())
        })
        .collect();
    assert_eq!(got.len(), 5000);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.as_slice(), want.value(i), "row {i}");
    }
    // A literal hashes like a column of the same logical value: int 7 → `11 07`.
    let out = ctx.sql("SELECT etlkit_row_hash(7)").await.unwrap().collect().await.unwrap();
    let a = out[0].column(0).as_any().downcast_ref::<FixedSizeBinaryArray>().unwrap();
    assert_eq!(to_hex(a.value(0)), "d68f7bf845d67f3870c38017fac4a5f0da2863735be3b59808ffe7a85730d53b");
}

//! RowHasher and RowHashTransform: digests independent of thread count, batch boundaries and Arrow
//! physical types; configuration knobs; errors that name the column.

use std::sync::Arc;

use arrow_array::builder::StringViewBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::Int32Type;
use arrow_array::*;
use arrow_buffer::OffsetBuffer;
use arrow_schema::{DataType, Field, IntervalUnit};
use etlkit_core::{Context, Transform};
use etlkit_hash::{Algorithm, HashError, HashFormat, RowHashConfig, RowHashTransform, RowHasher, to_hex};

const N: usize = 5_000; // several 1024-row chunks, so the parallel path runs

fn mixed_batch() -> RecordBatch {
    let opt = |i: usize| (i % 7 != 3).then_some(i);
    let list_values = Int64Array::from_iter_values(0..N as i64 * 2);
    let list = ListArray::new(
        Arc::new(Field::new_list_field(DataType::Int64, false)),
        OffsetBuffer::from_lengths((0..N).map(|i| i % 3)),
        Arc::new(list_values.slice(0, (0..N).map(|i| i % 3).sum())),
        None,
    );
    RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from_iter_values(0..N as i64)) as ArrayRef),
        ("n", Arc::new(Int32Array::from_iter((0..N).map(|i| opt(i).map(|v| v as i32 - 2000))))),
        ("x", Arc::new(Float64Array::from_iter((0..N).map(|i| opt(i).map(|v| v as f64 * 0.37))))),
        ("s", Arc::new(StringArray::from_iter((0..N).map(|i| opt(i).map(|v| "é".repeat(v % 90)))))),
        ("b", Arc::new(BooleanArray::from_iter((0..N).map(|i| opt(i).map(|v| v % 2 == 0))))),
        (
            "t",
            Arc::new(TimestampMillisecondArray::from_iter(
                (0..N).map(|i| opt(i).map(|v| v as i64 * 1_000_003)),
            )),
        ),
        (
            "d",
            Arc::new(
                Decimal128Array::from_iter((0..N).map(|i| opt(i).map(|v| v as i128 * 10)))
                    .with_precision_and_scale(20, 2)
                    .unwrap(),
            ),
        ),
        ("l", Arc::new(list)),
    ])
    .unwrap()
}

fn digests(h: &RowHasher, b: &RecordBatch) -> Vec<[u8; 32]> {
    let a = h.hash_batch(b).unwrap();
    (0..a.len()).map(|i| a.value(i).try_into().unwrap()).collect()
}

#[test]
fn digests_are_identical_across_thread_counts_and_batch_boundaries() {
    let batch = mixed_batch();
    for algo in [Algorithm::Sha256, Algorithm::Blake3] {
        let h = RowHasher::all_columns(algo);
        let pool = |t| rayon::ThreadPoolBuilder::new().num_threads(t).build().unwrap();
        let one = pool(1).install(|| digests(&h, &batch));
        let three = pool(3).install(|| digests(&h, &batch));
        assert!(one == three);
        // Batch boundaries: hashing odd-sized slices gives the same digests.
        let mut sliced = Vec::new();
        let mut start = 0;
        while start < N {
            let len = 777.min(N - start);
            sliced.extend(digests(&h, &batch.slice(start, len)));
            start += len;
        }
        assert!(one == sliced);
        // And every digest is the hash function applied to the row's canonical bytes.
        let bytes = h.canonical_bytes(&batch).unwrap();
        for (row, d) in bytes.iter().zip(&one) {
            assert_eq!(&algo.digest(row), d);
        }
        // Rows are distinct, so digests are too.
        let mut sorted = one.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), N);
    }
}

#[test]
fn equal_logical_values_hash_equal_across_physical_types() {
    let nulls = |i: usize| i % 5 != 1;
    let ints: Vec<Option<i32>> = (0..N).map(|i| nulls(i).then_some(i as i32 * 7919 - 100_000)).collect();
    let strs: Vec<Option<String>> =
        (0..N).map(|i| nulls(i).then(|| format!("row-{i}-{}", "x".repeat(i % 40)))).collect();
    let ms: Vec<Option<i64>> =
        (0..N).map(|i| nulls(i).then_some(1_704_067_200_123 + i as i64 * 61_001)).collect();
    let mut view = StringViewBuilder::new();
    strs.iter().for_each(|s| view.append_option(s.as_deref()));
    let dict: DictionaryArray<Int32Type> = strs.iter().map(|s| s.as_deref()).collect();
    let a = RecordBatch::try_from_iter([
        ("i", Arc::new(Int32Array::from(ints.clone())) as ArrayRef),
        ("s", Arc::new(StringArray::from(strs.clone()))),
        ("t", Arc::new(TimestampMillisecondArray::from(ms.clone()).with_timezone("UTC"))),
        (
            "f",
            Arc::new(Float32Array::from_iter(ints.iter().map(|v| v.map(|v| (v % 1_000_000) as f32 / 4.0)))),
        ),
    ])
    .unwrap();
    let b = RecordBatch::try_from_iter([
        ("i", Arc::new(Int64Array::from_iter(ints.iter().map(|v| v.map(i64::from)))) as ArrayRef),
        ("s", Arc::new(LargeStringArray::from(strs.clone()))),
        (
            "t",
            Arc::new(
                TimestampMicrosecondArray::from_iter(ms.iter().map(|v| v.map(|v| v * 1000)))
                    .with_timezone("America/New_York"),
            ),
        ),
        (
            "f",
            Arc::new(Float64Array::from_iter(ints.iter().map(|v| v.map(|v| (v % 1_000_000) as f64 / 4.0)))),
        ),
    ])
    .unwrap();
    let c = RecordBatch::try_from_iter([
        ("i", Arc::new(Int64Array::from_iter(ints.iter().map(|v| v.map(i64::from)))) as ArrayRef),
        ("s", Arc::new(view.finish())),
        (
            "t",
            Arc::new(
                TimestampNanosecondArray::from_iter(ms.iter().map(|v| v.map(|v| v * 1_000_000)))
                    .with_timezone("+05:30"),
            ),
        ),
        (
            "f",
            Arc::new(Float64Array::from_iter(ints.iter().map(|v| v.map(|v| (v % 1_000_000) as f64 / 4.0)))),
        ),
    ])
    .unwrap();
    let d = RecordBatch::try_from_iter([
        ("i", Arc::new(Int32Array::from(ints)) as ArrayRef),
        ("s", Arc::new(dict)),
        ("t", Arc::new(TimestampSecondArray::from(ms).with_timezone("UTC"))), // different instant
        ("f", a.column(3).clone()),
    ])
    .unwrap();
    for algo in [Algorithm::Sha256, Algorithm::Blake3] {
        let h = RowHasher::all_columns(algo);
        let (ha, hb, hc) = (digests(&h, &a), digests(&h, &b), digests(&h, &c));
        assert!(ha == hb, "first mismatch at row {:?}", (0..N).find(|&i| ha[i] != hb[i]));
        assert!(ha == hc, "first mismatch at row {:?}", (0..N).find(|&i| ha[i] != hc[i]));
        // the dictionary string column matches, the timestamp in seconds (a different instant) does not
        let only_is = RowHasher::new(algo, ["i", "s", "f"]);
        assert!(digests(&only_is, &a) == digests(&only_is, &d));
        let hd = digests(&h, &d);
        assert!((0..N).filter(|&i| i % 5 != 1).all(|i| ha[i] != hd[i]));
    }
}

#[test]
fn column_selection_and_order_are_honoured() {
    let batch = mixed_batch();
    let ab = RowHasher::new(Algorithm::Sha256, ["id", "s"]);
    let ba = RowHasher::new(Algorithm::Sha256, ["s", "id"]);
    let sub = batch.project(&[0, 3]).unwrap();
    assert_eq!(digests(&ab, &batch), digests(&RowHasher::all_columns(Algorithm::Sha256), &sub));
    assert_ne!(digests(&ab, &batch)[0], digests(&ba, &batch)[0]);
}

#[test]
fn row_hash_transform_honours_format_output_column_algorithm_and_columns() {
    let batch = mixed_batch();
    let ctx = Context::default();
    let bin = RowHashTransform::new(RowHashConfig {
        algorithm: Algorithm::Blake3,
        columns: vec!["s".into(), "id".into()],
        output_column: "fp".into(),
        format: HashFormat::Binary,
    })
    .unwrap();
    let out = bin.apply(batch.clone(), &ctx).unwrap();
    assert_eq!(out.len(), 1);
    let schema = bin.output_schema(&batch.schema()).unwrap();
    assert_eq!(out[0].schema(), schema);
    assert_eq!(schema.field(8).name(), "fp");
    assert_eq!(schema.field(8).data_type(), &DataType::FixedSizeBinary(32));
    let fp = out[0].column(8).as_fixed_size_binary();
    let expect = digests(&RowHasher::new(Algorithm::Blake3, ["s", "id"]), &batch);
    for (i, e) in expect.iter().enumerate() {
        assert_eq!(fp.value(i), e);
    }

    let hex = RowHashTransform::new(RowHashConfig { format: HashFormat::Hex, ..Default::default() }).unwrap();
    let out = hex.apply(batch.clone(), &ctx).unwrap();
    let col = out[0].column_by_name("row_hash").unwrap().as_string::<i32>();
    let expect = digests(&RowHasher::all_columns(Algorithm::Sha256), &batch);
    for (i, e) in expect.iter().enumerate() {
        assert_eq!(col.value(i), to_hex(e));
    }
    // appending again would clash with the existing column
    let err = hex.apply(out[0].clone(), &ctx).unwrap_err();
    assert!(err.find_source::<HashError>().unwrap().to_string().contains("row_hash"), "{err}");
    assert!(
        RowHashTransform::new(RowHashConfig { output_column: String::new(), ..Default::default() }).is_err()
    );
}

#[test]
fn errors_name_the_column_and_value() {
    let batch = RecordBatch::try_from_iter([
        ("ok", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        ("when", Arc::new(Date64Array::from(vec![86_400_000, 86_400_001]))),
        ("iv", Arc::new(IntervalYearMonthArray::from(vec![1, 2]))),
    ])
    .unwrap();
    let h = |cols: &[&str]| RowHasher::new(Algorithm::Sha256, cols.iter().copied());
    let e = h(&["missing"]).hash_batch(&batch).unwrap_err();
    assert!(matches!(&e, HashError::ColumnNotFound { column, .. } if column == "missing"), "{e}");
    let e = h(&["ok", "iv"]).hash_batch(&batch).unwrap_err();
    assert!(
        matches!(&e, HashError::UnsupportedType { column, data_type } if column == "iv" && *data_type == DataType::Interval(IntervalUnit::YearMonth)),
        "{e}"
    );
    let e = h(&["when"]).hash_batch(&batch).unwrap_err();
    assert!(e.to_string().contains("column `when` row 1: value 86400001"), "{e}");
    assert!(!e.is_retryable());
    let core: etlkit_core::Error = e.into();
    assert!(core.find_source::<HashError>().is_some());
}

//! Every row a reader yields carries its origin: file and 1-based physical line for CSV (the header
//! is line 1), file and 1-based row number for Parquet; rejected rows leave the others' origins intact.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use etlkit_core::{Context, MemoryRejects, Source};
use etlkit_source::{CsvSource, CsvSourceConfig, Input, OnError, ParquetSource, ParquetSourceConfig};
use futures::StreamExt;

/// (id, origin) of every row the source yields, in order.
async fn tracked(source: Box<dyn Source>, ctx: Context) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut stream = source.into_tracked_stream(ctx);
    while let Some(item) = stream.next().await {
        let (batch, origins) = item.unwrap();
        let origins = origins.expect("file sources track origins");
        let ids = batch.column(0).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            out.push((ids.value(i), origins.get(i).unwrap().to_string()));
        }
    }
    out
}

#[tokio::test]
async fn csv_rows_carry_file_and_physical_line_past_multiline_records_and_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.csv");
    // Line 3 holds a record spanning lines 3-4; line 5 is a bad row.
    std::fs::write(&a, "id,note\n1,x\n2,\"two\nlines\"\nthree,y\n4,z\n").unwrap();
    let b = dir.path().join("b.csv");
    std::fs::write(&b, "id,note\n5,q\n").unwrap();
    let rejects = Arc::new(MemoryRejects::new());
    let source = CsvSource::open(CsvSourceConfig {
        input: Input::List(vec![a.clone(), b.clone()]),
        schema: Some(Arc::new(arrow_schema::Schema::new(vec![
            arrow_schema::Field::new("id", arrow_schema::DataType::Int64, true),
            arrow_schema::Field::new("note", arrow_schema::DataType::Utf8, true),
        ]))),
        on_error: OnError::Reject,
        ..Default::default()
    })
    .unwrap();
    let got = tracked(Box::new(source), Context::with_rejects(rejects.clone())).await;
    let (a, b) = (a.display().to_string(), b.display().to_string());
    assert_eq!(
        got,
        vec![(1, format!("{a}:2")), (2, format!("{a}:3")), (4, format!("{a}:6")), (5, format!("{b}:2"))]
    );
    assert_eq!(rejects.rows()[0].line, Some(5));
}

#[tokio::test]
async fn parquet_rows_carry_file_and_row_number_within_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (name, ids) in [("p1.parquet", 0..5i64), ("p2.parquet", 5..8i64)] {
        let batch =
            RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from_iter_values(ids)) as ArrayRef)])
                .unwrap();
        let path = dir.path().join(name);
        let props = parquet::file::properties::WriterProperties::builder()
            .set_max_row_group_row_count(Some(2))
            .build();
        let mut w = parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            batch.schema(),
            Some(props),
        )
        .unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        paths.push(path);
    }
    let source = ParquetSource::open(ParquetSourceConfig {
        input: Input::List(paths.clone()),
        batch_size: 2,
        preserve_order: true,
        ..Default::default()
    })
    .unwrap();
    let got = tracked(Box::new(source), Context::default()).await;
    let expect: Vec<(i64, String)> = (0..8)
        .map(|i| {
            let (p, row) = if i < 5 { (&paths[0], i + 1) } else { (&paths[1], i - 4) };
            (i, format!("{}:{row}", p.display()))
        })
        .collect();
    assert_eq!(got, expect);
}

#[tokio::test]
async fn a_nul_byte_in_parquet_text_is_a_bad_row_naming_file_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.parquet");
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from_iter_values(0..4)) as ArrayRef),
        ("note", Arc::new(arrow_array::StringArray::from(vec!["a", "b", "N\0", "d"])) as ArrayRef),
    ])
    .unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let open = |on_error| {
        ParquetSource::open(ParquetSourceConfig {
            input: Input::File(path.clone()),
            on_error,
            ..Default::default()
        })
        .unwrap()
    };
    // Reject: the row goes to the rejects naming file, row 3, column and value; the others keep
    // their row numbers.
    let rejects = Arc::new(MemoryRejects::new());
    let got = tracked(Box::new(open(OnError::Reject)), Context::with_rejects(rejects.clone())).await;
    let p = path.display().to_string();
    assert_eq!(got, vec![(0, format!("{p}:1")), (1, format!("{p}:2")), (3, format!("{p}:4"))]);
    let r = &rejects.rows()[0];
    assert_eq!((r.origin.as_str(), r.line, r.column.as_deref()), (p.as_str(), Some(3), Some("note")));
    assert!(r.reason.contains("NUL"), "{r}");
    // Fail: the read ends with an error naming them.
    let mut stream = Box::new(open(OnError::Fail)).into_stream(Context::default());
    let mut err = None;
    while let Some(item) = stream.next().await {
        if let Err(e) = item {
            err = Some(e);
            break;
        }
    }
    let text = err.expect("a NUL byte fails the read").report().to_string();
    assert!(text.contains(&format!("{p}:3")) && text.contains("note") && text.contains("NUL"), "{text}");
}

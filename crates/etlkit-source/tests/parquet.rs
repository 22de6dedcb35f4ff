//! ParquetSource: inputs, batch size, projection, parallel bounded decode, order, shards, schema
//! reconciliation, footer row counts, cancellation. Every file is written by the test into a temp dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use etlkit_core::{Context, Source};
use etlkit_source::{Input, ParquetSource, ParquetSourceConfig, Shard, SourceError};
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

/// Writes `batch` to `path` in row groups of `rg_rows` rows.
fn write(path: &Path, batch: &RecordBatch, rg_rows: usize) {
    let props = WriterProperties::builder().set_max_row_group_row_count(Some(rg_rows)).build();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// `id` (Int64, not null) from `start`, `name` (Utf8), `v` (Int32).
fn ids(start: i64, n: i64) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("v", DataType::Int32, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(start..start + n)),
        Arc::new(StringArray::from_iter_values((start..start + n).map(|i| format!("n{i}")))),
        Arc::new(Int32Array::from_iter_values((start..start + n).map(|i| (i * 2) as i32))),
    ];
    RecordBatch::try_new(schema, cols).unwrap()
}

fn config(input: Input) -> ParquetSourceConfig {
    ParquetSourceConfig { input, workers: 2, max_row_groups_in_flight: 4, ..Default::default() }
}

fn read(source: ParquetSource) -> Vec<RecordBatch> {
    let schema = source.schema();
    let out: Vec<_> = futures::executor::block_on(Box::new(source).into_stream(Context::default()).collect());
    out.into_iter()
        .map(|r| {
            let b = r.unwrap();
            assert_eq!(b.schema(), schema, "every batch has the source schema");
            b
        })
        .collect()
}

fn id_column(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| b.column_by_name("id").unwrap().as_primitive::<Int64Type>().values().to_vec())
        .collect()
}

fn open_err(cfg: ParquetSourceConfig) -> SourceError {
    ParquetSource::open(cfg).expect_err("open must fail")
}

#[test]
fn one_file_batch_size_and_total_rows_from_footer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.parquet");
    write(&path, &ids(0, 3500), 1000);
    let cfg = ParquetSourceConfig { batch_size: 300, ..config(Input::File(path)) };
    let source = ParquetSource::open(cfg).unwrap();
    assert_eq!(source.total_rows(), Some(3500));
    assert_eq!(source.row_groups(), 4);
    let batches = read(source);
    let sizes: Vec<usize> = batches.iter().map(|b| b.num_rows()).collect();
    // Row groups of 1000, 1000, 1000, 500 rows, each cut into batches of 300.
    let per_rg = |n: usize| {
        let mut v = vec![300; n / 300];
        if !n.is_multiple_of(300) {
            v.push(n % 300);
        }
        v
    };
    let expected: Vec<usize> = [1000, 1000, 1000, 500].into_iter().flat_map(per_rg).collect();
    assert_eq!(sizes, expected);
    assert_eq!(id_column(&batches), (0..3500).collect::<Vec<_>>());
    let names = batches[0].column_by_name("name").unwrap().as_string::<i32>();
    assert_eq!(names.value(7), "n7");
}

#[test]
fn list_directory_and_glob_inputs() {
    let dir = tempfile::tempdir().unwrap();
    // Written out of name order to prove sorting; a non-Parquet and a hidden file are ignored.
    write(&dir.path().join("b.parquet"), &ids(100, 100), 64);
    write(&dir.path().join("a.parquet"), &ids(0, 100), 64);
    write(&dir.path().join("c.PARQUET"), &ids(200, 100), 64);
    std::fs::write(dir.path().join("notes.txt"), "not parquet").unwrap();
    std::fs::write(dir.path().join("_SUCCESS"), "").unwrap();
    let all: Vec<i64> = (0..300).collect();

    let from_dir = read(ParquetSource::open(config(Input::Dir(dir.path().to_owned()))).unwrap());
    assert_eq!(id_column(&from_dir), all);

    let pattern = format!("{}/*.parquet", dir.path().display());
    let from_glob = ParquetSource::open(config(Input::parse(&pattern))).unwrap();
    assert_eq!(from_glob.files().len(), 2, "glob is case-sensitive: c.PARQUET does not match");
    assert_eq!(id_column(&read(from_glob)), (0..200).collect::<Vec<_>>());

    // A list keeps the caller's order.
    let list: Vec<PathBuf> = ["c.PARQUET", "a.parquet"].iter().map(|n| dir.path().join(n)).collect();
    let from_list = read(ParquetSource::open(config(Input::List(list))).unwrap());
    let expected: Vec<i64> = (200..300).chain(0..100).collect();
    assert_eq!(id_column(&from_list), expected);

    let none = format!("{}/*.nothing", dir.path().display());
    assert!(matches!(open_err(config(Input::parse(&none))), SourceError::NoFiles { .. }));
}

#[test]
fn projection_by_name_in_requested_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.parquet");
    write(&path, &ids(0, 50), 20);
    let cfg = ParquetSourceConfig {
        columns: Some(vec!["v".into(), "id".into()]),
        ..config(Input::File(path.clone()))
    };
    let source = ParquetSource::open(cfg).unwrap();
    let names: Vec<String> = source.schema().fields().iter().map(|f| f.name().clone()).collect();
    assert_eq!(names, ["v", "id"]);
    let batches = read(source);
    assert_eq!(batches[0].num_columns(), 2);
    let v = batches[0].column(0).as_primitive::<arrow_array::types::Int32Type>();
    assert_eq!(v.value(5), 10);
    assert_eq!(id_column(&batches), (0..50).collect::<Vec<_>>());

    let cfg = ParquetSourceConfig { columns: Some(vec!["nope".into()]), ..config(Input::File(path.clone())) };
    match open_err(cfg) {
        SourceError::ColumnNotFound { column, path: p } => {
            assert_eq!(column, "nope");
            assert_eq!(p, path);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn parallel_decode_keeps_row_groups_in_flight_bounded_in_both_orders() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.parquet"), &ids(0, 2000), 50); // 40 row groups
    write(&dir.path().join("b.parquet"), &ids(2000, 1000), 50); // 20 more
    for preserve_order in [true, false] {
        for bound in [1, 3] {
            let cfg = ParquetSourceConfig {
                workers: 2,
                max_row_groups_in_flight: bound,
                batches_per_row_group: 1,
                batch_size: 16,
                preserve_order,
                ..config(Input::Dir(dir.path().to_owned()))
            };
            let source = ParquetSource::open(cfg).unwrap();
            let metrics = source.metrics();
            let mut got = id_column(&read(source));
            assert_eq!(metrics.threads(), 2, "one decoder thread per worker");
            wait_for_threads(&metrics);
            assert!(metrics.peak_in_flight() <= bound, "peak {} > bound {bound}", metrics.peak_in_flight());
            assert!(metrics.peak_batches_buffered() <= bound + 2 + 1, "{}", metrics.peak_batches_buffered());
            assert!(metrics.peak_in_flight() >= 1);
            assert_eq!(metrics.in_flight(), 0);
            assert_eq!(metrics.rows(), 3000);
            if preserve_order {
                assert_eq!(got, (0..3000).collect::<Vec<_>>(), "file and row-group order kept");
            } else {
                got.sort_unstable();
                assert_eq!(got, (0..3000).collect::<Vec<_>>(), "every row exactly once");
            }
        }
    }
}

#[test]
fn workers_and_batches_per_row_group_are_honoured() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.parquet"), &ids(0, 1000), 100); // 10 row groups
    for (workers, per_rg, threads) in [(3, 1, 3), (1, 4, 1), (20, 2, 10)] {
        let cfg = ParquetSourceConfig {
            workers,
            max_row_groups_in_flight: 2,
            batches_per_row_group: per_rg,
            batch_size: 10,
            ..config(Input::Dir(dir.path().to_owned()))
        };
        let source = ParquetSource::open(cfg).unwrap();
        let metrics = source.metrics();
        assert_eq!(id_column(&read(source)), (0..1000).collect::<Vec<_>>());
        assert_eq!(metrics.threads(), threads, "workers={workers}: at most one thread per row group");
        let bound = 2 * per_rg + workers.min(10) + 1;
        assert!(metrics.peak_batches_buffered() <= bound, "{} > {bound}", metrics.peak_batches_buffered());
        assert_eq!(metrics.batches(), 100);
    }
}

#[test]
fn prefetched_and_streamed_row_groups_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.parquet");
    write(&path, &ids(0, 2000), 500);
    let projected = |cols: Option<Vec<String>>, limit| {
        let cfg = ParquetSourceConfig {
            columns: cols,
            prefetch_limit_bytes: limit,
            ..config(Input::File(path.clone()))
        };
        let source = ParquetSource::open(cfg).unwrap();
        let metrics = source.metrics();
        let batches = read(source);
        (batches, metrics.row_groups_prefetched())
    };
    for cols in [None, Some(vec!["v".to_owned(), "id".to_owned()])] {
        let (streamed, n_streamed) = projected(cols.clone(), 0);
        let (prefetched, n_prefetched) = projected(cols.clone(), 32 << 20);
        assert_eq!((n_streamed, n_prefetched), (0, 4));
        assert_eq!(streamed, prefetched);
        assert_eq!(id_column(&prefetched), (0..2000).collect::<Vec<_>>());
    }
}

#[test]
fn shards_are_disjoint_and_cover_every_row() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.parquet"), &ids(0, 700), 100);
    write(&dir.path().join("b.parquet"), &ids(700, 300), 100);
    let mut all = Vec::new();
    let mut total = 0;
    for k in 0..3 {
        let cfg = ParquetSourceConfig {
            shard: Some(Shard::new(k, 3)),
            ..config(Input::Dir(dir.path().to_owned()))
        };
        let source = ParquetSource::open(cfg).unwrap();
        let expected_rgs = (0..10).filter(|i| i % 3 == k).count();
        assert_eq!(source.row_groups(), expected_rgs);
        total += source.total_rows().unwrap();
        let got = id_column(&read(source));
        assert_eq!(got.len(), expected_rgs * 100);
        all.extend(got);
    }
    assert_eq!(total, 1000);
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<_>>());

    let bad =
        ParquetSourceConfig { shard: Some(Shard::new(3, 3)), ..config(Input::Dir(dir.path().to_owned())) };
    assert!(matches!(open_err(bad), SourceError::InvalidConfig { field: "shard", .. }));
}

#[test]
fn schema_reconciliation_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.parquet");
    write(&a, &ids(0, 10), 100);
    // b: same columns, other order.
    let b_batch = ids(10, 10);
    let b_batch = b_batch.project(&[2, 0, 1]).unwrap();
    let b = dir.path().join("b.parquet");
    write(&b, &b_batch, 100);
    let batches = read(ParquetSource::open(config(Input::List(vec![a.clone(), b.clone()]))).unwrap());
    assert_eq!(id_column(&batches), (0..20).collect::<Vec<_>>());
    let v: Vec<i32> = batches
        .iter()
        .flat_map(|b| b.column(2).as_primitive::<arrow_array::types::Int32Type>().values().to_vec())
        .collect();
    assert_eq!(v, (0..20).map(|i| i * 2).collect::<Vec<_>>(), "columns matched by name");

    // c lacks the nullable column `name`.
    let c = dir.path().join("c.parquet");
    write(&c, &ids(20, 10).project(&[0, 2]).unwrap(), 100);
    match open_err(config(Input::List(vec![a.clone(), c.clone()]))) {
        SourceError::MissingColumn { column, present_in, missing_in, nullable } => {
            assert_eq!(
                (column.as_str(), present_in, missing_in, nullable),
                ("name", a.clone(), c.clone(), true)
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    let allowed = ParquetSourceConfig {
        allow_missing_columns: true,
        ..config(Input::List(vec![a.clone(), c.clone()]))
    };
    let batches = read(ParquetSource::open(allowed).unwrap());
    assert_eq!(id_column(&batches), (0..10).chain(20..30).collect::<Vec<_>>());
    let last = batches.last().unwrap();
    assert_eq!(last.column_by_name("name").unwrap().null_count(), last.num_rows());

    // d lacks the non-nullable column `id`: never filled.
    let d = dir.path().join("d.parquet");
    write(&d, &ids(0, 10).project(&[1, 2]).unwrap(), 100);
    let cfg = ParquetSourceConfig {
        allow_missing_columns: true,
        ..config(Input::List(vec![a.clone(), d.clone()]))
    };
    match open_err(cfg) {
        SourceError::MissingColumn { column, nullable, .. } => {
            assert_eq!((column.as_str(), nullable), ("id", false))
        }
        other => panic!("unexpected {other:?}"),
    }

    // e has `v` as Utf8: a conflict naming both files and the column.
    let e = dir.path().join("e.parquet");
    let e_batch = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ("name", Arc::new(StringArray::from(vec!["x"])) as ArrayRef),
        ("v", Arc::new(StringArray::from(vec!["2"])) as ArrayRef),
    ])
    .unwrap();
    write(&e, &e_batch, 100);
    let err = open_err(config(Input::List(vec![a.clone(), e.clone()])));
    let msg = err.to_string();
    match err {
        SourceError::TypeConflict { column, first_path, other_path, first_type, other_type } => {
            assert_eq!(column, "v");
            assert_eq!((first_path, other_path), (a.clone(), e.clone()));
            assert_eq!((first_type, other_type), (DataType::Int32, DataType::Utf8));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(msg.contains("a.parquet") && msg.contains("e.parquet") && msg.contains("`v`"), "{msg}");
}

#[test]
fn corrupt_file_error_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.parquet");
    std::fs::write(&path, b"this is not a parquet file at all").unwrap();
    let err = open_err(config(Input::File(path.clone())));
    assert!(matches!(&err, SourceError::Parquet { path: p, .. } if *p == path), "{err:?}");
    assert!(!err.is_retryable());
    let core: etlkit_core::Error = err.into();
    assert!(core.find_source::<SourceError>().is_some(), "source chain kept");
}

#[test]
fn corrupt_page_fails_the_stream_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pages.parquet");
    write(&path, &ids(0, 1000), 1000);
    // Footer intact, first page header garbage.
    let mut bytes = std::fs::read(&path).unwrap();
    for b in &mut bytes[4..40] {
        *b = 0xFF;
    }
    std::fs::write(&path, &bytes).unwrap();
    for prefetch_limit_bytes in [0, 32 << 20] {
        let cfg = ParquetSourceConfig { prefetch_limit_bytes, ..config(Input::File(path.clone())) };
        let source = ParquetSource::open(cfg).unwrap();
        let items: Vec<_> =
            futures::executor::block_on(Box::new(source).into_stream(Context::default()).collect());
        let err = items.into_iter().find_map(Result::err).expect("decode error");
        let inner = err.find_source::<SourceError>().expect("source error kept");
        let named = match inner {
            SourceError::Parquet { path: p, .. } | SourceError::Arrow { path: p, .. } => p == &path,
            _ => false,
        };
        assert!(named, "{inner:?}");
        assert!(!err.is_retryable());
    }
}

#[test]
fn dropping_the_stream_stops_the_read() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("a.parquet"), &ids(0, 5000), 100);
    let cfg = ParquetSourceConfig {
        batch_size: 10,
        max_row_groups_in_flight: 2,
        batches_per_row_group: 1,
        ..config(Input::Dir(dir.path().to_owned()))
    };
    let source = ParquetSource::open(cfg).unwrap();
    let metrics = source.metrics();
    let mut stream = Box::new(source).into_stream(Context::default());
    let first = futures::executor::block_on(stream.next()).unwrap().unwrap();
    assert_eq!(first.num_rows(), 10);
    assert_eq!(metrics.threads_running(), 2);
    drop(stream);
    assert_eq!(metrics.rows(), 10);
    assert!(metrics.peak_in_flight() <= 2);
    wait_for_threads(&metrics);
}

#[test]
fn invalid_config_is_refused() {
    let ok = config(Input::File("x.parquet".into()));
    for (cfg, field) in [
        (ParquetSourceConfig { batch_size: 0, ..ok.clone() }, "batch_size"),
        (ParquetSourceConfig { workers: 0, ..ok.clone() }, "workers"),
        (ParquetSourceConfig { max_row_groups_in_flight: 0, ..ok.clone() }, "max_row_groups_in_flight"),
        (ParquetSourceConfig { batches_per_row_group: 0, ..ok.clone() }, "batches_per_row_group"),
        (ParquetSourceConfig { columns: Some(vec!["a".into(), "a".into()]), ..ok.clone() }, "columns"),
        (ParquetSourceConfig { input: Input::List(vec![]), ..ok.clone() }, "input"),
        (
            ParquetSourceConfig {
                column_types: vec![("a".into(), DataType::Int32), ("a".into(), DataType::Int64)],
                ..ok.clone()
            },
            "column_types",
        ),
    ] {
        match cfg.validate() {
            Err(SourceError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

/// Waits (up to 10 s, a liveness bound, not a speed claim) for every reader thread to exit.
fn wait_for_threads(metrics: &etlkit_source::ReadMetrics) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while metrics.threads_running() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} reader threads still running",
            metrics.threads_running()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// `VendorID` (Int64) and `fare` (Utf8) columns.
fn vendors(ids: &[i64], fares: &[Option<&str>]) -> RecordBatch {
    RecordBatch::try_from_iter([
        ("VendorID", Arc::new(Int64Array::from(ids.to_vec())) as ArrayRef),
        ("fare", Arc::new(StringArray::from(fares.to_vec())) as ArrayRef),
    ])
    .unwrap()
}

#[test]
fn conversion_rejects_name_file_line_column_and_value() {
    use arrow_array::types::{Float64Type, Int32Type};
    use etlkit_core::{MemoryRejects, Rejected};
    use etlkit_source::OnError;
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a_vendor_overflow_i32.parquet");
    let b = dir.path().join("b.parquet");
    // Row groups of 4 rows read in batches of 3: row numbers run on across both.
    let big = 3_000_000_000;
    write(
        &a,
        &vendors(
            &[1, big, 2, -big, 5, 6],
            &[Some("1.5"), Some("2"), Some("abc"), Some("3"), Some("4"), None],
        ),
        4,
    );
    write(&b, &vendors(&[7, 4_000_000_000], &[Some("7"), Some("8")]), 4);
    let pins = vec![("VendorID".to_owned(), DataType::Int32), ("fare".to_owned(), DataType::Float64)];
    let cfg = ParquetSourceConfig {
        batch_size: 3,
        column_types: pins,
        on_error: OnError::Reject,
        ..config(Input::Dir(dir.path().to_owned()))
    };
    let source = ParquetSource::open(cfg.clone()).unwrap();
    assert_eq!(source.schema().field(0).data_type(), &DataType::Int32);
    assert_eq!(source.schema().field(1).data_type(), &DataType::Float64);
    let rejects = Arc::new(MemoryRejects::new());
    let ctx = Context::with_rejects(rejects.clone());
    let items: Vec<_> = futures::executor::block_on(Box::new(source).into_stream(ctx).collect());
    let batches: Vec<RecordBatch> = items.into_iter().map(|r| r.unwrap()).collect();
    let all = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(all.column(0).as_primitive::<Int32Type>().values().to_vec(), [1, 5, 6, 7]);
    let fares: Vec<Option<f64>> = all.column(1).as_primitive::<Float64Type>().iter().collect();
    assert_eq!(fares, [Some(1.5), Some(4.0), None, Some(7.0)]);
    let reject = |path: &Path, row, column: &str, value: &str, reason: &str| Rejected {
        origin: path.display().to_string(),
        line: Some(row),
        column: Some(column.to_owned()),
        value: Some(value.to_owned()),
        reason: reason.to_owned(),
        raw: None,
    };
    assert_eq!(
        rejects.rows(),
        [
            reject(&a, 2, "VendorID", "3000000000", "not a valid Int32"),
            reject(&a, 3, "fare", "abc", "not a valid Float64"),
            reject(&a, 4, "VendorID", "-3000000000", "not a valid Int32"),
            reject(&b, 2, "VendorID", "4000000000", "not a valid Int32"),
        ],
        "1-based row numbers within each file"
    );

    // Fail policy: an error naming file, row, column and value.
    let source = ParquetSource::open(ParquetSourceConfig { on_error: OnError::Fail, ..cfg }).unwrap();
    let items: Vec<_> =
        futures::executor::block_on(Box::new(source).into_stream(Context::default()).collect());
    let err = items.into_iter().find_map(|r| r.err()).expect("an error");
    match err.find_source::<SourceError>() {
        Some(SourceError::BadRow(bad)) => {
            assert_eq!(
                (&bad.path, bad.line, bad.column.as_deref(), bad.value.as_deref()),
                (&a, 2, Some("VendorID"), Some("3000000000"))
            );
            assert_eq!(
                bad.to_string(),
                format!("{}:2 column `VendorID` value \"3000000000\": not a valid Int32", a.display())
            );
        }
        other => panic!("expected BadRow, got {other:?} from {err}"),
    }
}

#[test]
fn pinned_column_types_are_checked_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.parquet");
    write(&path, &ids(0, 10), 10);
    let open = |pins: Vec<(String, DataType)>| {
        ParquetSource::open(ParquetSourceConfig { column_types: pins, ..config(Input::File(path.clone())) })
    };
    match open(vec![("nope".into(), DataType::Int32)]).unwrap_err() {
        SourceError::InvalidConfig { field: "column_types", reason } => {
            assert!(reason.contains("nope"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    let not_castable = DataType::Struct(Vec::<Field>::new().into());
    match open(vec![("id".into(), not_castable)]).unwrap_err() {
        SourceError::InvalidConfig { field: "column_types", reason } => {
            assert!(reason.contains("`id`"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // Casting to the type a column already has is a no-op.
    let source = open(vec![("id".into(), DataType::Int64)]).unwrap();
    assert_eq!(id_column(&read(source)), (0..10).collect::<Vec<_>>());
}

#[test]
fn pinned_conversions_never_drop_digits() {
    use arrow_array::Float64Array;
    use arrow_array::types::{Decimal128Type, Int32Type};
    use etlkit_core::MemoryRejects;
    use etlkit_source::OnError;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("money.parquet");
    let batch = RecordBatch::try_from_iter([
        ("price", Arc::new(StringArray::from(vec!["13.37", "13.375", "13.370", "7"])) as ArrayRef),
        ("qty", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0, 2.5])) as ArrayRef),
    ])
    .unwrap();
    write(&path, &batch, 10);
    let cfg = ParquetSourceConfig {
        column_types: vec![("price".into(), DataType::Decimal128(18, 2)), ("qty".into(), DataType::Int32)],
        on_error: OnError::Reject,
        ..config(Input::File(path))
    };
    let rejects = Arc::new(MemoryRejects::new());
    let source = ParquetSource::open(cfg).unwrap();
    let items: Vec<_> = futures::executor::block_on(
        Box::new(source).into_stream(Context::with_rejects(rejects.clone())).collect(),
    );
    let b = items.into_iter().next().unwrap().unwrap();
    assert_eq!(b.column(0).as_primitive::<Decimal128Type>().values().to_vec(), [1337, 1337]);
    assert_eq!(b.column(1).as_primitive::<Int32Type>().values().to_vec(), [1, 3]);
    let seen: Vec<_> = rejects
        .rows()
        .iter()
        .map(|r| (r.line, r.column.clone().unwrap(), r.value.clone().unwrap(), r.reason.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (
                Some(2),
                "price".into(),
                "13.375".into(),
                "more than 2 decimal places for Decimal128(18, 2)".into()
            ),
            (Some(4), "qty".into(), "2.5".into(), "not a valid Int32".into()),
        ]
    );
}

#[test]
fn int96_timestamps_outside_the_nanosecond_range_read_exactly() {
    use arrow_array::types::TimestampMicrosecondType;
    use parquet::data_type::{Int96, Int96Type};
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    // INT96 as Spark writes it: nanoseconds of the day (low, high word), then the Julian day.
    let int96 = |julian_day: u32, nanos_of_day: u64| {
        Int96::from(vec![nanos_of_day as u32, (nanos_of_day >> 32) as u32, julian_day])
    };
    const EPOCH: u32 = 2_440_588; // Julian day of 1970-01-01
    let values = [
        // 9999-12-31 23:59:59.999999789 (Spark's "open end" date), 789 ns below the microsecond.
        int96(EPOCH + 2_932_896, 86_399_999_999_789),
        // 0001-01-01 00:00:00
        int96(EPOCH - 719_162, 0),
        // 2024-03-01 08:09:10
        int96(EPOCH + 19_783, 29_350_000_000_000),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spark_int96.parquet");
    let schema = Arc::new(parse_message_type("message spark { required int96 ts; }").unwrap());
    let mut w =
        SerializedFileWriter::new(std::fs::File::create(&path).unwrap(), schema, Default::default()).unwrap();
    let mut rg = w.next_row_group().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<Int96Type>().write_batch(&values, None, None).unwrap();
    col.close().unwrap();
    rg.close().unwrap();
    w.close().unwrap();

    let source = ParquetSource::open(config(Input::File(path))).unwrap();
    let ts = DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, None);
    assert_eq!(source.schema().field(0).data_type(), &ts);
    let batches = read(source);
    let got: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<TimestampMicrosecondType>().values().to_vec())
        .collect();
    assert_eq!(
        got,
        [
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999 (sub-microsecond digits dropped)
            -62_135_596_800_000_000, // 0001-01-01T00:00:00
            1_709_280_550_000_000,   // 2024-03-01T08:09:10
        ]
    );
}

#[test]
fn nul_bytes_are_found_in_dictionary_view_and_pinned_text_columns() {
    use arrow_array::types::Int32Type;
    use arrow_array::{BinaryArray, DictionaryArray, StringViewArray};
    use etlkit_core::MemoryRejects;
    use etlkit_source::OnError;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nul.parquet");
    let dict: DictionaryArray<Int32Type> = vec!["a", "N\0dict", "a", "b"].into_iter().collect();
    let batch = RecordBatch::try_from_iter([
        ("dict", Arc::new(dict) as ArrayRef),
        ("view", Arc::new(StringViewArray::from(vec!["x", "y", "a long value with a NUL \0 inside", "z"]))),
        ("bin", Arc::new(BinaryArray::from(vec![&b"p"[..], b"q", b"r", b"N\0bin"]))),
    ])
    .unwrap();
    write(&path, &batch, 10);
    let cfg = ParquetSourceConfig {
        column_types: vec![("bin".into(), DataType::Utf8)],
        on_error: OnError::Reject,
        ..config(Input::File(path.clone()))
    };
    let source = ParquetSource::open(cfg).unwrap();
    // The embedded Arrow schema keeps the dictionary and view types.
    let types: Vec<DataType> = source.schema().fields().iter().map(|f| f.data_type().clone()).collect();
    assert_eq!(
        types,
        [
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            DataType::Utf8View,
            DataType::Utf8
        ]
    );
    let rejects = Arc::new(MemoryRejects::new());
    let items: Vec<_> = futures::executor::block_on(
        Box::new(source).into_stream(Context::with_rejects(rejects.clone())).collect(),
    );
    let kept: usize = items.into_iter().map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(kept, 1);
    let seen: Vec<_> = rejects
        .rows()
        .iter()
        .map(|r| (r.line, r.column.clone().unwrap(), r.value.clone().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [
            (Some(2), "dict".to_owned(), "N\0dict".to_owned()),
            (Some(3), "view".to_owned(), "a long value with a NUL \0 inside".to_owned()),
            (Some(4), "bin".to_owned(), "N\0bin".to_owned()),
        ]
    );
    assert!(rejects.rows().iter().all(|r| r.reason.contains("NUL")));
}

//! CsvSource: header/dialect/BOM/NULL markers/schema/inference/timestamps/float-written integers,
//! line endings, input order, batch size and bounded buffering, and the malformed-input corpus
//! (each case checked in fail mode — exact file, line, column, value — and in reject mode).
//! Every file is written by the test into a temp dir.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use etlkit_core::{Context, MemoryRejects, Rejected, Source};
use etlkit_source::{CsvSource, CsvSourceConfig, Input, OnError, SourceError};
use futures::StreamExt;

fn file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn cfg(path: &Path) -> CsvSourceConfig {
    CsvSourceConfig { input: Input::File(path.to_owned()), ..Default::default() }
}

fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(fields.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect::<Vec<_>>()))
}

/// Reads everything; returns the batches or the first error, plus the rejected rows.
fn run(config: CsvSourceConfig) -> (Result<Vec<RecordBatch>, etlkit_core::Error>, Vec<Rejected>) {
    let rejects = Arc::new(MemoryRejects::new());
    let ctx = Context::with_rejects(rejects.clone());
    let source = CsvSource::open(config).unwrap();
    let schema = source.schema();
    let items: Vec<_> = futures::executor::block_on(Box::new(source).into_stream(ctx).collect());
    let mut batches = Vec::new();
    for item in items {
        match item {
            Ok(b) => {
                assert_eq!(b.schema(), schema);
                batches.push(b);
            }
            Err(e) => return (Err(e), rejects.rows()),
        }
    }
    (Ok(batches), rejects.rows())
}

fn read_ok(config: CsvSourceConfig) -> RecordBatch {
    let (batches, rejects) = run(config);
    let batches = batches.unwrap();
    assert!(rejects.is_empty());
    let schema = batches[0].schema();
    arrow_select::concat::concat_batches(&schema, &batches).unwrap()
}

fn i64s(b: &RecordBatch, col: &str) -> Vec<Option<i64>> {
    b.column_by_name(col).unwrap().as_primitive::<Int64Type>().iter().collect()
}

fn strs(b: &RecordBatch, col: &str) -> Vec<Option<String>> {
    b.column_by_name(col).unwrap().as_string::<i32>().iter().map(|s| s.map(String::from)).collect()
}

/// The `SourceError::BadRow` inside a stream error.
fn bad_row(e: &etlkit_core::Error) -> (PathBuf, u64, Option<String>, Option<String>, String) {
    match e.find_source::<SourceError>() {
        Some(SourceError::BadRow(b)) => {
            (b.path.clone(), b.line, b.column.clone(), b.value.clone(), b.reason.clone())
        }
        other => panic!("expected BadRow, got {other:?} from {e}"),
    }
}

#[test]
fn pandas_style_file_with_index_column_bom_and_inference() {
    let dir = tempfile::tempdir().unwrap();
    // pandas `to_csv()` with its index: empty first header cell; BOM as Excel writes it.
    let text = "\u{feff},id,fare,paid,pickup,day,note\n\
                0,1,2.5,true,2024-01-01 10:00:00,2024-01-01,hello\n\
                1,2,,false,2024-01-01T11:30:00.5Z,2024-01-02,\"a, quoted\"\n\
                2,3,7,TRUE,01/02/2024 11:30:00,01/03/2024,NA\n";
    let path = file(dir.path(), "p.csv", text.as_bytes());
    let source = CsvSource::open(cfg(&path)).unwrap();
    let s = source.schema();
    let types: Vec<(&str, &DataType)> =
        s.fields().iter().map(|f| (f.name().as_str(), f.data_type())).collect();
    assert_eq!(
        types,
        [
            ("unnamed_0", &DataType::Int64),
            ("id", &DataType::Int64),
            ("fare", &DataType::Float64),
            ("paid", &DataType::Boolean),
            ("pickup", &DataType::Timestamp(TimeUnit::Microsecond, None)),
            ("day", &DataType::Date32),
            ("note", &DataType::Utf8),
        ]
    );
    let b = read_ok(cfg(&path));
    assert_eq!(i64s(&b, "id"), [Some(1), Some(2), Some(3)]);
    let fare = b.column_by_name("fare").unwrap().as_primitive::<Float64Type>();
    assert_eq!(fare.iter().collect::<Vec<_>>(), [Some(2.5), None, Some(7.0)]);
    let ts = b.column_by_name("pickup").unwrap().as_primitive::<TimestampMicrosecondType>();
    let base = 1_704_103_200_000_000i64; // 2024-01-01 10:00:00 UTC in µs
    assert_eq!(ts.value(0), base);
    assert_eq!(ts.value(1), base + 5_400_000_000 + 500_000);
    assert_eq!(ts.value(2), base + 86_400_000_000 + 5_400_000_000);
    let day = b.column_by_name("day").unwrap().as_primitive::<Date32Type>();
    assert_eq!(day.values().to_vec(), [19723, 19724, 19725]);
    assert_eq!(strs(&b, "note"), [Some("hello".into()), Some("a, quoted".into()), None]);

    let renamed = CsvSourceConfig { unnamed_column_prefix: "index_".into(), ..cfg(&path) };
    assert_eq!(CsvSource::open(renamed).unwrap().schema().field(0).name(), "index_0");
}

#[test]
fn dialect_delimiter_quote_escape_and_null_markers() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path(), "d.csv", b"a;b\n'x;y';'it\\'s'\n-;NA\n");
    let config = CsvSourceConfig {
        delimiter: b';',
        quote: Some(b'\''),
        escape: Some(b'\\'),
        null_markers: vec!["-".into()],
        schema: Some(schema(&[("a", DataType::Utf8), ("b", DataType::Utf8)])),
        ..cfg(&path)
    };
    let b = read_ok(config.clone());
    assert_eq!(strs(&b, "a"), [Some("x;y".into()), None]);
    assert_eq!(strs(&b, "b"), [Some("it's".into()), Some("NA".into())], "NA is not a marker here");

    // Quoting off: quotes are data.
    let path = file(dir.path(), "q.csv", b"a;b\n\"x;y\"\n");
    let b = read_ok(CsvSourceConfig { quote: None, escape: None, input: Input::File(path), ..config });
    assert_eq!(strs(&b, "a"), [Some("\"x".into())]);
    assert_eq!(strs(&b, "b"), [Some("y\"".into())]);

    // Default markers: empty, NA, NULL, \N.
    let path = file(dir.path(), "n.csv", b"a,b\n,NA\nNULL,\\N\nx,\"\"\n");
    let b = read_ok(CsvSourceConfig {
        schema: Some(schema(&[("a", DataType::Utf8), ("b", DataType::Utf8)])),
        ..cfg(&path)
    });
    assert_eq!(strs(&b, "a"), [None, None, Some("x".into())]);
    assert_eq!(strs(&b, "b"), [None, None, None]);
}

#[test]
fn explicit_schema_by_header_name_subset_and_without_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path(), "s.csv", b"x,y,z\n1,a,10\n2,b,20\n");
    let s = schema(&[("z", DataType::Int32), ("x", DataType::Int64)]);
    let b = read_ok(CsvSourceConfig { schema: Some(s.clone()), ..cfg(&path) });
    assert_eq!(b.schema(), s);
    assert_eq!(b.column(0).as_primitive::<Int32Type>().values().to_vec(), [10, 20]);
    assert_eq!(i64s(&b, "x"), [Some(1), Some(2)]);

    let missing = schema(&[("w", DataType::Int64)]);
    let (res, _) = run(CsvSourceConfig { schema: Some(missing), ..cfg(&path) });
    let err = res.unwrap_err();
    assert!(matches!(err.find_source::<SourceError>(), Some(SourceError::Header { .. })), "{err}");

    let path = file(dir.path(), "h.csv", b"1,a\n2,b\n");
    let b = read_ok(CsvSourceConfig { has_header: false, ..cfg(&path) });
    assert_eq!(b.schema().field(0).name(), "column_1");
    assert_eq!(i64s(&b, "column_1"), [Some(1), Some(2)]);
    assert_eq!(strs(&b, "column_2"), [Some("a".into()), Some("b".into())]);
}

#[test]
fn infer_rows_bounds_the_sample() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path(), "i.csv", b"v\n1\n2\n3\nabc\n");
    let wide = CsvSource::open(CsvSourceConfig { infer_rows: 10, ..cfg(&path) }).unwrap();
    assert_eq!(wide.schema().field(0).data_type(), &DataType::Utf8);
    let narrow = CsvSourceConfig { infer_rows: 3, ..cfg(&path) };
    assert_eq!(CsvSource::open(narrow.clone()).unwrap().schema().field(0).data_type(), &DataType::Int64);
    let (res, _) = run(narrow);
    let (_, line, column, value, _) = bad_row(&res.unwrap_err());
    assert_eq!((line, column.as_deref(), value.as_deref()), (5, Some("v"), Some("abc")));
}

#[test]
fn timestamps_in_several_formats_and_custom_formats() {
    let dir = tempfile::tempdir().unwrap();
    let text = "t\n2024-03-01 08:09:10\n2024-03-01T08:09:10Z\n2024-03-01T10:09:10+02:00\n\
                03/01/2024 08:09:10\n03/01/2024 08:09:10 AM\n2024/03/01 08:09:10\n01.03.2024 08:09:10\n\
                2024-03-01 08:09:10.000\n";
    let path = file(dir.path(), "t.csv", text.as_bytes());
    let s = schema(&[("t", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())))]);
    let b = read_ok(CsvSourceConfig { schema: Some(s.clone()), ..cfg(&path) });
    assert_eq!(b.schema(), s);
    let t = b.column(0).as_primitive::<TimestampMicrosecondType>();
    assert_eq!(t.len(), 8);
    assert!(t.values().iter().all(|v| *v == 1_709_280_550_000_000), "{t:?}");

    let path = file(dir.path(), "c.csv", b"t\n20240301 080910\n");
    let s = schema(&[("t", DataType::Timestamp(TimeUnit::Second, None))]);
    let (res, _) = run(CsvSourceConfig { schema: Some(s.clone()), ..cfg(&path) });
    assert_eq!(bad_row(&res.unwrap_err()).4, "not a valid timestamp");
    let custom =
        CsvSourceConfig { schema: Some(s), timestamp_formats: vec!["%Y%m%d %H%M%S".into()], ..cfg(&path) };
    let b = read_ok(custom);
    assert_eq!(b.column(0).as_primitive::<arrow_array::types::TimestampSecondType>().value(0), 1_709_280_550);

    // Dates: YYYY-MM-DD always, then date_formats.
    let path = file(dir.path(), "d.csv", b"d\n2024-03-01\n03/01/2024\n01.03.2024\n2024/03/01\n");
    let s = schema(&[("d", DataType::Date32)]);
    let b = read_ok(CsvSourceConfig { schema: Some(s.clone()), ..cfg(&path) });
    assert_eq!(b.column(0).as_primitive::<Date32Type>().values().to_vec(), [19783; 4]);
    let only_iso = CsvSourceConfig { schema: Some(s), date_formats: vec!["%Y/%m/%d".into()], ..cfg(&path) };
    let (res, _) = run(only_iso);
    let (_, line, _, value, _) = bad_row(&res.unwrap_err());
    assert_eq!((line, value.as_deref()), (3, Some("03/01/2024")));
}

#[test]
fn integers_written_as_floats() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path(), "f.csv", b"n\n2.0\n3\n\n-4.0\n");
    let s = schema(&[("n", DataType::Int64)]);
    let b = read_ok(CsvSourceConfig { schema: Some(s.clone()), ..cfg(&path) });
    assert_eq!(i64s(&b, "n"), [Some(2), Some(3), Some(-4)], "blank line skipped, 2.0 read as 2");

    let (res, _) =
        run(CsvSourceConfig { schema: Some(s.clone()), integers_from_floats: false, ..cfg(&path) });
    let (_, line, column, value, _) = bad_row(&res.unwrap_err());
    assert_eq!((line, column.as_deref(), value.as_deref()), (2, Some("n"), Some("2.0")));

    // No final line terminator: the last row still counts.
    let path = file(dir.path(), "h.csv", b"n\r\n1\r\n7.0");
    assert_eq!(
        i64s(&read_ok(CsvSourceConfig { schema: Some(s.clone()), ..cfg(&path) }), "n"),
        [Some(1), Some(7)]
    );

    let path = file(dir.path(), "g.csv", b"n\n2.5\n");
    let (res, _) = run(CsvSourceConfig { schema: Some(s), ..cfg(&path) });
    assert_eq!(bad_row(&res.unwrap_err()).3.as_deref(), Some("2.5"));
}

#[test]
fn line_endings_lf_crlf_mixed_and_quoted_newlines_keep_exact_lines() {
    let dir = tempfile::tempdir().unwrap();
    let s = schema(&[("id", DataType::Int64), ("note", DataType::Utf8)]);
    // Row 4 (`x`) holds the bad id; the notes of rows 2–3 span lines.
    let cases: [(&str, &[u8], u64); 4] = [
        ("lf.csv", b"id,note\n1,a\n2,b\nx,c\n", 4),
        ("crlf.csv", b"id,note\r\n1,a\r\n2,b\r\nx,c\r\n", 4),
        ("mixed.csv", b"id,note\n1,a\r\n2,b\nx,c\r\n", 4),
        ("quoted.csv", b"id,note\r\n1,\"two\r\nlines\"\n2,\"three\nmore\nlines\"\r\nx,c\n", 7),
    ];
    for (name, bytes, bad_line) in cases {
        let good_len = bytes.len() - b"x,c\n".len() - usize::from(bytes.ends_with(b"\r\n"));
        let good = file(dir.path(), &format!("good_{name}"), &bytes[..good_len]);
        let b = read_ok(CsvSourceConfig { schema: Some(s.clone()), ..cfg(&good) });
        assert_eq!(i64s(&b, "id"), [Some(1), Some(2)], "{name}");
        let notes = strs(&b, "note");
        if name == "quoted.csv" {
            assert_eq!(notes, [Some("two\r\nlines".into()), Some("three\nmore\nlines".into())]);
        } else {
            assert_eq!(notes, [Some("a".into()), Some("b".into())], "{name}: no stray \\r");
        }
        let path = file(dir.path(), name, bytes);
        let (res, _) = run(CsvSourceConfig { schema: Some(s.clone()), ..cfg(&path) });
        let (p, line, column, value, _) = bad_row(&res.unwrap_err());
        assert_eq!(
            (p, line, column.as_deref(), value.as_deref()),
            (path, bad_line, Some("id"), Some("x")),
            "{name}"
        );
    }
}

#[test]
fn directory_and_glob_read_in_sorted_order_and_header_order_may_differ() {
    let dir = tempfile::tempdir().unwrap();
    file(dir.path(), "2.csv", b"id,name\n3,c\n");
    file(dir.path(), "1.csv", b"name,id\na,1\nb,2\n");
    file(dir.path(), "skip.json", b"{}");
    let b = read_ok(CsvSourceConfig { input: Input::Dir(dir.path().to_owned()), ..Default::default() });
    assert_eq!(i64s(&b, "id"), [Some(1), Some(2), Some(3)]);
    let pattern = format!("{}/*.csv", dir.path().display());
    let b = read_ok(CsvSourceConfig { input: Input::parse(&pattern), ..Default::default() });
    assert_eq!(strs(&b, "name"), [Some("a".into()), Some("b".into()), Some("c".into())]);
}

#[test]
fn batch_size_and_bounded_buffering_do_not_grow_with_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut peaks = Vec::new();
    for (name, rows) in [("small.csv", 1_000usize), ("large.csv", 10_000)] {
        let mut text = String::from("id,name\n");
        for i in 0..rows {
            text.push_str(&format!("{i},name{i}\n"));
        }
        let path = file(dir.path(), name, text.as_bytes());
        let config = CsvSourceConfig { batch_size: 64, channel_capacity: 2, workers: 2, ..cfg(&path) };
        let source = CsvSource::open(config).unwrap();
        let metrics = source.metrics();
        assert_eq!(metrics.threads(), 0, "no thread before the stream starts");
        let batches: Vec<_> = futures::executor::block_on(
            Box::new(source).into_stream(Context::default()).map(|b| b.unwrap().num_rows()).collect(),
        );
        assert!(batches[..batches.len() - 1].iter().all(|n| *n == 64));
        assert_eq!(batches.iter().sum::<usize>(), rows);
        assert_eq!(metrics.rows(), rows as u64);
        assert_eq!(metrics.threads(), 2, "workers conversion threads");
        assert!(metrics.peak_in_flight() <= 4, "at most channel_capacity + 2 chunks in flight");
        peaks.push(metrics.peak_in_flight());
    }
    assert!(peaks[1] <= 4 && peaks[0] <= 4, "10x the input, same bound: {peaks:?}");
}

#[test]
fn dropping_the_stream_stops_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("id\n");
    for i in 0..20_000 {
        text.push_str(&format!("{i}\n"));
    }
    let path = file(dir.path(), "big.csv", text.as_bytes());
    let source =
        CsvSource::open(CsvSourceConfig { batch_size: 100, channel_capacity: 1, ..cfg(&path) }).unwrap();
    let metrics = source.metrics();
    let mut stream = Box::new(source).into_stream(Context::default());
    assert_eq!(futures::executor::block_on(stream.next()).unwrap().unwrap().num_rows(), 100);
    assert_eq!(metrics.threads_running(), 3, "splitter + 2 converters");
    drop(stream);
    assert_eq!(metrics.rows(), 100);
    assert!(metrics.peak_in_flight() <= 3);
    // Liveness (not speed): every reader thread exits once the stream is gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while metrics.threads_running() > 0 {
        assert!(std::time::Instant::now() < deadline, "reader threads still running");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn invalid_config_is_refused() {
    let ok = cfg(Path::new("x.csv"));
    for (c, field) in [
        (CsvSourceConfig { batch_size: 0, ..ok.clone() }, "batch_size"),
        (CsvSourceConfig { channel_capacity: 0, ..ok.clone() }, "channel_capacity"),
        (CsvSourceConfig { workers: 0, ..ok.clone() }, "workers"),
        (CsvSourceConfig { infer_rows: 0, ..ok.clone() }, "infer_rows"),
        (CsvSourceConfig { delimiter: b'\n', ..ok.clone() }, "delimiter"),
        (CsvSourceConfig { quote: Some(b','), ..ok.clone() }, "quote"),
        (CsvSourceConfig { schema: Some(schema(&[("a", DataType::Binary)])), ..ok.clone() }, "schema"),
        (CsvSourceConfig { timestamp_formats: vec!["%Q".into()], ..ok.clone() }, "timestamp_formats"),
        (
            CsvSourceConfig {
                column_types: vec![("a".into(), DataType::Int32), ("a".into(), DataType::Utf8)],
                ..ok.clone()
            },
            "column_types",
        ),
    ] {
        match c.validate() {
            Err(SourceError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
}

/// One malformed-input case: the file's bytes, the schema, and the single bad row expected.
struct Case {
    name: &'static str,
    bytes: &'static [u8],
    line: u64,
    column: Option<&'static str>,
    value: Option<&'static str>,
    reason: &'static str,
    /// The record's bytes as in the file (line terminator excluded).
    raw: &'static [u8],
    /// Good rows around the bad one.
    good: usize,
}

fn corpus_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("amount", DataType::Float64, true),
        Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("name", DataType::Utf8, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("day", DataType::Date32, true),
    ]))
}

const H: &str = "id,amount,at,name,ok,day\n";

fn corpus() -> Vec<Case> {
    vec![
        Case {
            name: "ragged_long.csv",
            bytes: b"id,amount,at,name,ok,day\n1,1.5,2024-01-01 00:00:00,a,true,2024-01-01\n2,1,2024-01-01 00:00:00,b,true,2024-01-01,extra\n3,,,,,\n",
            line: 3,
            column: None,
            value: None,
            reason: "expected 6 fields, found 7",
            raw: b"2,1,2024-01-01 00:00:00,b,true,2024-01-01,extra",
            good: 2,
        },
        Case {
            name: "ragged_short.csv",
            bytes: b"id,amount,at,name,ok,day\r\n1,,,,,\r\n2,3\r\n3,,,,,\r\n",
            line: 3,
            column: None,
            value: None,
            reason: "expected 6 fields, found 2",
            raw: b"2,3",
            good: 2,
        },
        Case {
            name: "bad_int.csv",
            bytes: b"id,amount,at,name,ok,day\n1,,,,,\n\n12x,,,,,\n4,,,,,\n",
            line: 4,
            column: Some("id"),
            value: Some("12x"),
            reason: "not a valid Int64",
            raw: b"12x,,,,,",
            good: 2,
        },
        Case {
            name: "bad_float.csv",
            bytes: b"id,amount,at,name,ok,day\n1,1e3,,,,\n2,1.2.3,,,,\n",
            line: 3,
            column: Some("amount"),
            value: Some("1.2.3"),
            reason: "not a valid Float64",
            raw: b"2,1.2.3,,,,",
            good: 1,
        },
        Case {
            name: "bad_timestamp.csv",
            bytes: b"id,amount,at,name,ok,day\n1,,2024-02-30 10:00:00,,,\n2,,2024-02-28 10:00:00,,,\n",
            line: 2,
            column: Some("at"),
            value: Some("2024-02-30 10:00:00"),
            reason: "not a valid timestamp",
            raw: b"1,,2024-02-30 10:00:00,,,",
            good: 1,
        },
        Case {
            name: "invalid_utf8.csv",
            bytes: b"id,amount,at,name,ok,day\n1,,,caf\xe9,,\n2,,,caf\xc3\xa9,,\n",
            line: 2,
            column: Some("name"),
            value: Some("caf\u{fffd}"),
            reason: "invalid UTF-8",
            raw: b"1,,,caf\xe9,,",
            good: 1,
        },
        Case {
            name: "unterminated_quote.csv",
            bytes: b"id,amount,at,name,ok,day\n1,,,a,,\n2,,,\"never closed,,\n3,,,c,,\n",
            line: 3,
            column: None,
            value: None,
            reason: "unterminated quoted field (opened on line 3)",
            raw: b"2,,,\"never closed,,\n3,,,c,,",
            good: 1,
        },
        Case {
            name: "bad_bool.csv",
            bytes: b"id,amount,at,name,ok,day\n1,,,,yes,\n2,,,,maybe,\n",
            line: 3,
            column: Some("ok"),
            value: Some("maybe"),
            reason: "not a valid Boolean",
            raw: b"2,,,,maybe,",
            good: 1,
        },
        Case {
            name: "bad_date.csv",
            bytes: b"id,amount,at,name,ok,day\n1,,,,,2024-13-01\n",
            line: 2,
            column: Some("day"),
            value: Some("2024-13-01"),
            reason: "not a valid date",
            raw: b"1,,,,,2024-13-01",
            good: 0,
        },
        Case {
            name: "null_in_not_null.csv",
            bytes: b"id,amount,at,name,ok,day\nNA,,,,,\n2,,,,,\n",
            line: 2,
            column: Some("id"),
            value: Some("NA"),
            reason: "NULL in a non-nullable column",
            raw: b"NA,,,,,",
            good: 1,
        },
        Case {
            // A byte-order mark shifts every byte offset; raw text must still be exact.
            name: "bom_crlf.csv",
            bytes: b"\xef\xbb\xbfid,amount,at,name,ok,day\r\n1,,,,,\r\n2,zz,,,,\r\n",
            line: 3,
            column: Some("amount"),
            value: Some("zz"),
            reason: "not a valid Float64",
            raw: b"2,zz,,,,",
            good: 1,
        },
        Case {
            // The bad value sits after a quoted field spanning two lines: its own physical line counts.
            name: "after_multiline.csv",
            bytes: b"id,amount,at,name,ok,day\n1,,,\"two\nlines\",oops,\n",
            line: 3,
            column: Some("ok"),
            value: Some("oops"),
            reason: "not a valid Boolean",
            raw: b"1,,,\"two\nlines\",oops,",
            good: 0,
        },
    ]
}

#[test]
fn malformed_corpus_fails_with_exact_file_line_column_value() {
    let dir = tempfile::tempdir().unwrap();
    let cases = corpus();
    assert!(cases.len() >= 8);
    for case in cases {
        let body = case.bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(case.bytes);
        assert!(body.starts_with(H.trim_end().as_bytes()));
        let path = file(dir.path(), case.name, case.bytes);
        let config = CsvSourceConfig { schema: Some(corpus_schema()), ..cfg(&path) };
        let (res, rejects) = run(config);
        let err = res.expect_err(case.name);
        assert!(rejects.is_empty());
        match err.find_source::<SourceError>() {
            Some(SourceError::BadRow(b)) => {
                assert_eq!(b.path, path, "{}", case.name);
                assert_eq!(b.line, case.line, "{}", case.name);
                assert_eq!(b.column.as_deref(), case.column, "{}", case.name);
                assert_eq!(b.value.as_deref(), case.value, "{}", case.name);
                assert_eq!(b.reason, case.reason, "{}", case.name);
                assert_eq!(b.raw.as_deref(), Some(case.raw), "{}", case.name);
            }
            other => panic!("{}: expected BadRow, got {other:?}", case.name),
        }
        // The message a person reads names all of it.
        let msg = format!("{}", err.find_source::<SourceError>().unwrap());
        assert!(msg.starts_with(&format!("{}:{}", path.display(), case.line)), "{msg}");
        if let Some(v) = case.value {
            assert!(msg.contains(&format!("{v:?}")), "{msg}");
        }
    }
}

#[test]
fn malformed_corpus_rejects_bad_rows_and_keeps_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    for case in corpus() {
        let path = file(dir.path(), case.name, case.bytes);
        let config =
            CsvSourceConfig { schema: Some(corpus_schema()), on_error: OnError::Reject, ..cfg(&path) };
        let (res, rejects) = run(config);
        let batches = res.unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let good: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(good, case.good, "{}", case.name);
        assert_eq!(
            rejects,
            [Rejected {
                origin: path.display().to_string(),
                line: Some(case.line),
                column: case.column.map(String::from),
                value: case.value.map(String::from),
                reason: case.reason.to_owned(),
                raw: Some(case.raw.to_vec()),
            }],
            "{}",
            case.name
        );
        for b in &batches {
            assert_eq!(b.column(0).null_count(), 0, "{}: no bad row leaks in as nulls", case.name);
        }
    }
}

#[test]
fn reject_mode_accounts_for_every_row_across_batches_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("id,v\n");
    let mut bad_lines = Vec::new();
    for i in 0..500u64 {
        if i % 7 == 3 {
            text.push_str(&format!("{i},bad{i}\n"));
            bad_lines.push(i + 2);
        } else {
            text.push_str(&format!("{i},{i}\n"));
        }
    }
    file(dir.path(), "a.csv", text.as_bytes());
    file(dir.path(), "b.csv", b"id,v\n1000,1\n1001,x,y\n");
    let s = schema(&[("id", DataType::Int64), ("v", DataType::Int64)]);
    let config = |workers| CsvSourceConfig {
        input: Input::Dir(dir.path().to_owned()),
        schema: Some(s.clone()),
        batch_size: 50,
        workers,
        channel_capacity: 4,
        on_error: OnError::Reject,
        ..Default::default()
    };
    let (one, one_rejects) = run(config(1));
    let (res, rejects) = run(config(3));
    let batches = res.unwrap();
    assert_eq!(one.unwrap(), batches, "parallel conversion keeps file order");
    assert_eq!(one_rejects, rejects, "rejects arrive in file order whatever the workers");
    let good: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(good + rejects.len(), 502, "rows read = good + rejected");
    assert_eq!(rejects.len(), bad_lines.len() + 1);
    let a_lines: Vec<u64> =
        rejects.iter().filter(|r| r.origin.ends_with("a.csv")).map(|r| r.line.unwrap()).collect();
    assert_eq!(a_lines, bad_lines);
    let last = rejects.last().unwrap();
    assert!(last.origin.ends_with("b.csv"));
    assert_eq!((last.line, last.reason.as_str()), (Some(3), "expected 2 fields, found 3"));
}

#[test]
fn pipeline_accounting_counts_rejected_rows_as_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path(), "p.csv", b"id,v\n1,a\n2\n3,c\nx,d\n5,e\n");
    let config = CsvSourceConfig {
        schema: Some(schema(&[("id", DataType::Int64), ("v", DataType::Utf8)])),
        on_error: OnError::Reject,
        ..cfg(&path)
    };
    let source = CsvSource::open(config).unwrap();
    let sink = Arc::new(etlkit_core::MemorySink::new());
    let rejects = Arc::new(MemoryRejects::new());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stats =
        rt.block_on(etlkit_core::Pipeline::new(source, sink.clone()).rejects(rejects.clone()).run()).unwrap();
    assert_eq!((stats.rows_read, stats.rows_written, stats.rows_rejected), (5, 3, 2));
    assert_eq!(sink.committed_rows(), 3);
    let lines: Vec<Option<u64>> = rejects.rows().iter().map(|r| r.line).collect();
    assert_eq!(lines, [Some(3), Some(5)]);
}

#[test]
fn rejects_keep_the_original_bytes_of_the_row() {
    let dir = tempfile::tempdir().unwrap();
    // Latin-1 text (not UTF-8) in CRLF lines: the reject keeps the bytes as they are in the file.
    let path = file(dir.path(), "latin1.csv", b"id,name\r\n1,caf\xe9\r\n2,ok\r\nx\xff,Gr\xfc\xdfe\r\n");
    let s = schema(&[("id", DataType::Int64), ("name", DataType::Utf8)]);
    let config = CsvSourceConfig { schema: Some(s.clone()), on_error: OnError::Reject, ..cfg(&path) };
    let (res, rejects) = run(config);
    assert_eq!(res.unwrap().iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    let raw: Vec<(Option<u64>, Option<Vec<u8>>)> = rejects.iter().map(|r| (r.line, r.raw.clone())).collect();
    assert_eq!(
        raw,
        [(Some(2), Some(b"1,caf\xe9".to_vec())), (Some(4), Some(b"x\xff,Gr\xfc\xdfe".to_vec()))],
        "original bytes, line terminator excluded"
    );
    assert_eq!(rejects[0].raw_text().as_deref(), Some("1,caf\u{fffd}"), "lossy only for people");

    // Fail mode: the error carries the same bytes.
    let (res, _) = run(CsvSourceConfig { schema: Some(s), ..cfg(&path) });
    match res.unwrap_err().find_source::<SourceError>() {
        Some(SourceError::BadRow(b)) => assert_eq!(b.raw.as_deref(), Some(&b"1,caf\xe9"[..])),
        other => panic!("expected BadRow, got {other:?}"),
    }
}

#[test]
fn csv_timestamps_outside_the_nanosecond_range_load() {
    use arrow_array::types::{TimestampMillisecondType, TimestampSecondType};
    let dir = tempfile::tempdir().unwrap();
    // Seconds since the epoch of each row (all far outside 1677–2262 but for the last).
    let secs: [i64; 7] = [
        253_402_300_799, // 9999-12-31T23:59:59, the usual "end of time" sentinel
        -62_135_596_800, // 0001-01-01 00:00:00
        -11_670_868_800, // 1600-03-01 12:00:00.5 (plus half a second)
        253_402_300_799, // 9999-12-31 23:59:59.999999Z (plus 999 999 µs)
        253_402_300_799, // 12/31/9999 23:59:59 (a configured format)
        -62_135_596_800, // 0001-01-01 (date only)
        1_709_280_550,   // 2024-03-01 08:09:10
    ];
    let frac_us: [i64; 7] = [0, 0, 500_000, 999_999, 0, 0, 0];
    let text = "t,d\n9999-12-31T23:59:59,9999-12-31\n0001-01-01 00:00:00,0001-01-01\n\
                1600-03-01 12:00:00.5,1600-03-01\n9999-12-31 23:59:59.999999Z,\n12/31/9999 23:59:59,\n\
                0001-01-01,\n2024-03-01 08:09:10,\n";
    let path = file(dir.path(), "sentinels.csv", text.as_bytes());

    // Inferred: a timestamp column (µs) and a date column, every value loaded.
    let source = CsvSource::open(cfg(&path)).unwrap();
    assert_eq!(source.schema().field(0).data_type(), &DataType::Timestamp(TimeUnit::Microsecond, None));
    assert_eq!(source.schema().field(1).data_type(), &DataType::Date32);
    let b = read_ok(cfg(&path));
    let t = b.column(0).as_primitive::<TimestampMicrosecondType>();
    let want: Vec<i64> = secs.iter().zip(frac_us).map(|(s, f)| s * 1_000_000 + f).collect();
    assert_eq!(t.values().to_vec(), want);
    let d = b.column(1).as_primitive::<Date32Type>();
    assert_eq!(d.iter().take(3).collect::<Vec<_>>(), [Some(2_932_896), Some(-719_162), Some(-135_080)]);

    // Pinned to milliseconds and seconds: parsed straight to the unit (rounded down, as before).
    let ms = schema(&[("t", DataType::Timestamp(TimeUnit::Millisecond, None)), ("d", DataType::Date32)]);
    let b = read_ok(CsvSourceConfig { schema: Some(ms), ..cfg(&path) });
    let t = b.column(0).as_primitive::<TimestampMillisecondType>();
    let want: Vec<i64> = secs.iter().zip(frac_us).map(|(s, f)| s * 1_000 + f / 1_000).collect();
    assert_eq!(t.values().to_vec(), want);
    let s =
        schema(&[("t", DataType::Timestamp(TimeUnit::Second, Some("UTC".into()))), ("d", DataType::Date32)]);
    let b = read_ok(CsvSourceConfig { schema: Some(s), ..cfg(&path) });
    assert_eq!(b.column(0).as_primitive::<TimestampSecondType>().values().to_vec(), secs);

    // Nanoseconds cannot hold them: a bad row naming the range, not a generic parse failure.
    let ns = schema(&[("t", DataType::Timestamp(TimeUnit::Nanosecond, None)), ("d", DataType::Date32)]);
    let (res, _) = run(CsvSourceConfig { schema: Some(ns), ..cfg(&path) });
    let (_, line, column, value, reason) = bad_row(&res.unwrap_err());
    assert_eq!((line, column.as_deref(), value.as_deref()), (2, Some("t"), Some("9999-12-31T23:59:59")));
    assert!(reason.contains("out of range") && reason.contains("1677"), "{reason}");
}

#[test]
fn a_nul_byte_is_a_reject_naming_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    // PostgreSQL text cannot hold a NUL byte: the source catches it, where the line is known.
    let path = file(dir.path(), "nul.csv", b"id,name\n1,ok\n2,N\0\n3,\"multi\nline\0\"\n4,fine\n");
    let (res, rejects) = run(CsvSourceConfig { on_error: OnError::Reject, ..cfg(&path) });
    let batches = res.unwrap();
    let b = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
    assert_eq!(i64s(&b, "id"), [Some(1), Some(4)]);
    let seen: Vec<_> =
        rejects.iter().map(|r| (r.origin.clone(), r.line, r.column.clone(), r.value.clone())).collect();
    let origin = path.display().to_string();
    assert_eq!(
        seen,
        [
            (origin.clone(), Some(3), Some("name".to_owned()), Some("N\0".to_owned())),
            (origin, Some(4), Some("name".to_owned()), Some("multi\nline\0".to_owned())),
        ]
    );
    assert!(rejects[0].reason.contains("NUL"), "{}", rejects[0].reason);
    assert_eq!(rejects[0].raw.as_deref(), Some(&b"2,N\0"[..]));

    // Fail policy: an error naming file, line, column and value.
    let (res, _) = run(cfg(&path));
    let err = res.unwrap_err();
    let (p, line, column, value, _) = bad_row(&err);
    assert_eq!((p, line, column.as_deref(), value.as_deref()), (path.clone(), 3, Some("name"), Some("N\0")));
    let msg = err.find_source::<SourceError>().unwrap().to_string();
    assert!(msg.starts_with(&format!("{}:3 column `name` value \"N\\0\"", path.display())), "{msg}");
}

#[test]
fn allow_nul_in_text_keeps_nul_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path(), "nul.csv", b"id,name\n1,ok\n2,N\0\n");
    let b = read_ok(CsvSourceConfig { allow_nul_in_text: true, ..cfg(&path) });
    assert_eq!(strs(&b, "name"), [Some("ok".into()), Some("N\0".into())]);
}

#[test]
fn types_are_inferred_across_all_files() {
    let dir = tempfile::tempdir().unwrap();
    // a.csv alone says Int64 / Int64 / Date32 / Int64; the later files widen them.
    file(dir.path(), "a.csv", b"id,amount,day,code\n1,12,2024-01-01,7\n2,13,2024-01-02,8\n");
    file(dir.path(), "b.csv", b"amount,id,day,code\n13.37,3,2024-01-03 10:00:00,\n");
    file(dir.path(), "c.csv", b"id,code,amount,day\n4,X-9,1e3,\n");
    let config = CsvSourceConfig { input: Input::Dir(dir.path().to_owned()), ..Default::default() };
    let source = CsvSource::open(config.clone()).unwrap();
    let types: Vec<(String, DataType)> =
        source.schema().fields().iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
    assert_eq!(
        types,
        [
            ("id".to_owned(), DataType::Int64),
            ("amount".to_owned(), DataType::Float64),
            ("day".to_owned(), DataType::Timestamp(TimeUnit::Microsecond, None)),
            ("code".to_owned(), DataType::Utf8),
        ]
    );
    // Every row of every file loads: nothing rejected for a type only the first file implied.
    let (res, rejects) = run(CsvSourceConfig { on_error: OnError::Reject, ..config });
    assert!(rejects.is_empty(), "{rejects:?}");
    let batches = res.unwrap();
    let b = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap();
    let amount = b.column_by_name("amount").unwrap().as_primitive::<Float64Type>();
    assert_eq!(amount.values().to_vec(), [12.0, 13.0, 13.37, 1000.0]);
    assert_eq!(strs(&b, "code"), [Some("7".into()), Some("8".into()), None, Some("X-9".into())]);
}

#[test]
fn a_pinned_column_type_wins() {
    use arrow_array::types::Decimal128Type;
    let dir = tempfile::tempdir().unwrap();
    // Inference would make zip an Int64 (losing the leading zero) and id an Int64.
    file(dir.path(), "a.csv", b"id,zip,amount\n1,01234,12.5\n");
    file(dir.path(), "b.csv", b"id,zip,amount\n2,98765,7\n");
    let pins = vec![
        ("zip".to_owned(), DataType::Utf8),
        ("id".to_owned(), DataType::Int32),
        ("amount".to_owned(), DataType::Decimal128(10, 2)),
    ];
    let config = CsvSourceConfig {
        input: Input::Dir(dir.path().to_owned()),
        column_types: pins.clone(),
        ..Default::default()
    };
    let source = CsvSource::open(config.clone()).unwrap();
    let s = source.schema();
    assert_eq!(s.field(0).data_type(), &DataType::Int32);
    assert_eq!(s.field(1).data_type(), &DataType::Utf8);
    assert_eq!(s.field(2).data_type(), &DataType::Decimal128(10, 2));
    let b = read_ok(config.clone());
    assert_eq!(b.column(0).as_primitive::<Int32Type>().values().to_vec(), [1, 2]);
    assert_eq!(strs(&b, "zip"), [Some("01234".into()), Some("98765".into())]);
    assert_eq!(b.column(2).as_primitive::<Decimal128Type>().values().to_vec(), [1250, 700]);

    // A pin also wins over the type of an explicit schema.
    let explicit = schema(&[("zip", DataType::Int64), ("id", DataType::Int64)]);
    let config = CsvSourceConfig { schema: Some(explicit), column_types: pins[..2].to_vec(), ..config };
    let s = CsvSource::open(config).unwrap().schema();
    assert_eq!((s.field(0).data_type(), s.field(1).data_type()), (&DataType::Utf8, &DataType::Int32));

    // A pin naming no column, or a type the reader cannot produce, is refused.
    let unknown = CsvSourceConfig {
        input: Input::Dir(dir.path().to_owned()),
        column_types: vec![("zipcode".to_owned(), DataType::Utf8)],
        ..Default::default()
    };
    match CsvSource::open(unknown).unwrap_err() {
        SourceError::InvalidConfig { field, reason } => {
            assert_eq!(field, "column_types");
            assert!(reason.contains("zipcode"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let binary = CsvSourceConfig {
        column_types: vec![("zip".to_owned(), DataType::Binary)],
        ..cfg(Path::new("x.csv"))
    };
    assert!(matches!(binary.validate(), Err(SourceError::InvalidConfig { field: "column_types", .. })));
}

#[test]
fn money_columns_read_as_decimal128_when_asked() {
    use arrow_array::types::Decimal128Type;
    let dir = tempfile::tempdir().unwrap();
    file(dir.path(), "a.csv", b"price,qty\n13.37,1\n0.5,2\n");
    file(dir.path(), "b.csv", b"price,qty\n-2,3\n1234567.125,4\n");
    let config = CsvSourceConfig { input: Input::Dir(dir.path().to_owned()), ..Default::default() };
    // By default a fractional column is a Float64.
    let s = CsvSource::open(config.clone()).unwrap().schema();
    assert_eq!(s.field(0).data_type(), &DataType::Float64);

    // Asked for: exact Decimal128 with the largest scale seen in any file; integers stay Int64.
    let config = CsvSourceConfig { infer_decimals: true, ..config };
    let s = CsvSource::open(config.clone()).unwrap().schema();
    assert_eq!(s.field(0).data_type(), &DataType::Decimal128(38, 3));
    assert_eq!(s.field(1).data_type(), &DataType::Int64);
    let b = read_ok(config);
    let price = b.column(0).as_primitive::<Decimal128Type>();
    assert_eq!(price.values().to_vec(), [13_370, 500, -2_000, 1_234_567_125]);

    // A pinned money column never silently drops digits: 13.375 does not fit two decimals.
    let path = file(dir.path(), "m.csv", b"price\n13.370\n13.375\n");
    let pinned = CsvSourceConfig {
        column_types: vec![("price".to_owned(), DataType::Decimal128(18, 2))],
        ..cfg(&path)
    };
    let (res, _) = run(pinned.clone());
    let (_, line, column, value, reason) = bad_row(&res.unwrap_err());
    assert_eq!((line, column.as_deref(), value.as_deref()), (3, Some("price"), Some("13.375")));
    assert!(reason.contains("2 decimal places"), "{reason}");
    let (res, rejects) = run(CsvSourceConfig { on_error: OnError::Reject, ..pinned });
    let b = &res.unwrap()[0];
    assert_eq!(b.column(0).as_primitive::<Decimal128Type>().values().to_vec(), [1337]);
    assert_eq!(rejects.len(), 1);
}

#[test]
fn conversion_rejects_name_file_line_column_and_value() {
    let dir = tempfile::tempdir().unwrap();
    // VendorID pinned to Int32 at the source: the overflow is caught where its line is known.
    let path = file(
        dir.path(),
        "vendor_overflow_i32.csv",
        b"VendorID,fare\n1,2.5\n3000000000,3\n\"2\",\"x\"\n4,\"1\n\"\n-3000000000,1\n",
    );
    let pin = vec![("VendorID".to_owned(), DataType::Int32), ("fare".to_owned(), DataType::Float64)];
    let (res, rejects) =
        run(CsvSourceConfig { column_types: pin.clone(), on_error: OnError::Reject, ..cfg(&path) });
    let b = &res.unwrap()[0];
    assert_eq!(b.column(0).as_primitive::<Int32Type>().values().to_vec(), [1, 4]);
    let origin = path.display().to_string();
    let seen: Vec<String> = rejects.iter().map(|r| r.to_string()).collect();
    assert_eq!(
        seen,
        [
            format!("{origin}:3 column `VendorID` value \"3000000000\": not a valid Int32"),
            format!("{origin}:4 column `fare` value \"x\": not a valid Float64"),
            format!("{origin}:7 column `VendorID` value \"-3000000000\": not a valid Int32"),
        ]
    );

    // Fail policy: the same file, line, column and value in the error.
    let (res, _) = run(CsvSourceConfig { column_types: pin, ..cfg(&path) });
    let msg = res.unwrap_err().find_source::<SourceError>().unwrap().to_string();
    assert_eq!(msg, format!("{origin}:3 column `VendorID` value \"3000000000\": not a valid Int32"));
}

#[test]
fn a_later_file_missing_a_column_fails_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    file(dir.path(), "a.csv", b"id,amount\n1,2\n");
    let b = file(dir.path(), "b.csv", b"amount,extra\n3,4\n");
    let config = CsvSourceConfig { input: Input::Dir(dir.path().to_owned()), ..Default::default() };
    match CsvSource::open(config).unwrap_err() {
        SourceError::Header { path, reason } => {
            assert_eq!(path, b);
            assert!(reason.contains("`id`"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_date_with_a_time_of_day_is_a_bad_row_not_a_truncated_date() {
    let dir = tempfile::tempdir().unwrap();
    // 2024-03-10 is day 19792. Midnight without an offset (or with offset zero) is still that date;
    // any other time of day, or an offset that shifts the day, is a bad row.
    let text = "d\n2024-03-10\n2024-03-10 00:00:00\n2024-03-10T00:00:00Z\n03/10/2024 00:00:00\n\
                2024-03-10 14:30:00\n2024-03-10T01:00:00+05:00\n2024-03-10T00:00:00+05:00\n\
                2024-03-09T19:00:00-05:00\n03/10/2024 09:15:00\n";
    let path = file(dir.path(), "dates.csv", text.as_bytes());
    let pinned = CsvSourceConfig {
        column_types: vec![("d".into(), DataType::Date32)],
        on_error: OnError::Reject,
        ..cfg(&path)
    };
    let (res, rejects) = run(pinned.clone());
    let b = &res.unwrap()[0];
    assert_eq!(b.column(0).as_primitive::<Date32Type>().values().to_vec(), [19792; 4]);
    let seen: Vec<_> = rejects.iter().map(|r| (r.line.unwrap(), r.value.clone().unwrap())).collect();
    assert_eq!(
        seen,
        [
            (6, "2024-03-10 14:30:00".to_owned()),
            (7, "2024-03-10T01:00:00+05:00".to_owned()),
            (8, "2024-03-10T00:00:00+05:00".to_owned()),
            (9, "2024-03-09T19:00:00-05:00".to_owned()),
            (10, "03/10/2024 09:15:00".to_owned()),
        ]
    );
    assert!(rejects.iter().all(|r| r.reason.contains("has a time of day")), "{rejects:?}");

    // Fail policy: the first one, by file, line, column and value.
    let (res, _) = run(CsvSourceConfig { on_error: OnError::Fail, ..pinned });
    let (p, line, column, value, reason) = bad_row(&res.unwrap_err());
    assert_eq!(
        (p, line, column.as_deref(), value.as_deref()),
        (path, 6, Some("d"), Some("2024-03-10 14:30:00"))
    );
    assert!(reason.contains("has a time of day"), "{reason}");

    // A column inferred as dates from its first rows: a later date-time is caught the same way.
    let path = file(dir.path(), "inferred.csv", b"d\n2024-03-10\n2024-03-11\n2024-03-10T01:00:00+05:00\n");
    let config = CsvSourceConfig { infer_rows: 2, ..cfg(&path) };
    assert_eq!(CsvSource::open(config.clone()).unwrap().schema().field(0).data_type(), &DataType::Date32);
    let (res, _) = run(config);
    let (_, line, _, value, reason) = bad_row(&res.unwrap_err());
    assert_eq!((line, value.as_deref()), (4, Some("2024-03-10T01:00:00+05:00")));
    assert!(reason.contains("has a time of day"), "{reason}");
}

#[test]
fn timestamp_formats_with_an_offset_convert_to_utc() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path(), "tz.csv", b"t\n03/01/2024 10:00:00 +0200\n03/01/2024 10:00:00 -01:30\n");
    let config = CsvSourceConfig {
        timestamp_formats: vec!["%m/%d/%Y %H:%M:%S %z".into(), "%m/%d/%Y %H:%M:%S %:z".into()],
        ..cfg(&path)
    };
    // Inference reads them the same way as conversion: a timestamp column.
    let b = read_ok(config);
    assert_eq!(b.schema().field(0).data_type(), &DataType::Timestamp(TimeUnit::Microsecond, None));
    let t = b.column(0).as_primitive::<TimestampMicrosecondType>();
    // 2024-03-01 08:00 UTC and 11:30 UTC.
    assert_eq!(t.values().to_vec(), [1_709_280_000_000_000, 1_709_292_600_000_000]);
}

#[test]
fn integers_too_wide_for_int64_are_decimals_not_rounded_floats() {
    use arrow_array::types::Decimal128Type;
    let dir = tempfile::tempdir().unwrap();
    let huge = "123456789012345678901234567890123456789"; // 39 digits: more than a Decimal128 holds
    let text = format!(
        "id,mixed,huge,small\n12345678901234567891,1.5,{huge},1\n-5,12345678901234567891,7,-99999999999999999999\n"
    );
    let path = file(dir.path(), "wide.csv", text.as_bytes());
    let b = read_ok(cfg(&path));
    let types: Vec<DataType> = b.schema().fields().iter().map(|f| f.data_type().clone()).collect();
    assert_eq!(
        types,
        [DataType::Decimal128(38, 0), DataType::Utf8, DataType::Utf8, DataType::Decimal128(38, 0)]
    );
    assert_eq!(
        b.column(0).as_primitive::<Decimal128Type>().values().to_vec(),
        [12_345_678_901_234_567_891, -5]
    );
    assert_eq!(strs(&b, "mixed"), [Some("1.5".into()), Some("12345678901234567891".into())]);
    assert_eq!(strs(&b, "huge"), [Some(huge.into()), Some("7".into())]);
    assert_eq!(
        b.column(3).as_primitive::<Decimal128Type>().values().to_vec(),
        [1, -99_999_999_999_999_999_999]
    );
}

#[test]
fn dates_in_a_timestamp_column_load_as_midnight() {
    let dir = tempfile::tempdir().unwrap();
    let path = file(dir.path(), "mixed.csv", b"t\n01/15/2024\n01/15/2024 10:30:00\n2024-01-16\n");
    let b = read_ok(cfg(&path));
    assert_eq!(b.schema().field(0).data_type(), &DataType::Timestamp(TimeUnit::Microsecond, None));
    let t = b.column(0).as_primitive::<TimestampMicrosecondType>();
    // 2024-01-15 00:00 UTC, 10:30 UTC, 2024-01-16 00:00 UTC.
    assert_eq!(t.values().to_vec(), [1_705_276_800_000_000, 1_705_314_600_000_000, 1_705_363_200_000_000]);
}

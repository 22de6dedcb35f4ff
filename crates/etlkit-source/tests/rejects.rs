//! FileRejects: real pipelines (CsvSource with `OnError::Reject`) writing their rejected rows to a
//! JSON-lines file; every record is parsed back and compared with the input file's bytes.
#![cfg(feature = "csv")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use etlkit_core::{Context, LoadStats, MemorySink, Pipeline, RejectSink, Rejected};
use etlkit_source::{
    CsvSource, CsvSourceConfig, FileRejects, FileRejectsConfig, Input, OnError, SourceError,
};

/// A CSV with good rows, a multi-line quoted row, and bad rows of every kind: too few and too many
/// fields, an unparseable integer and float, Latin-1 (not UTF-8) text, and a NUL byte in text.
const INPUT: &[u8] = b"id,name,score\n\
1,alice,1.5\n\
2,bob\n\
x,carol,2.0\n\
4,caf\xe9,3.0\n\
5,dave,4.5\n\
6,e\x00ve,1.0\n\
7,frank,notanumber\n\
8,\"multi\nline\",2.5\n\
9,gina,1.0,extra\n";

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
    ]))
}

fn source(path: &Path) -> CsvSource {
    CsvSource::open(CsvSourceConfig {
        input: Input::File(path.to_owned()),
        schema: Some(schema()),
        on_error: OnError::Reject,
        ..Default::default()
    })
    .unwrap()
}

fn run(path: &Path, rejects: Arc<dyn RejectSink>) -> (etlkit_core::Result<LoadStats>, Arc<MemorySink>) {
    let sink = Arc::new(MemorySink::new());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let result = rt.block_on(Pipeline::new(source(path), sink.clone()).rejects(rejects).run());
    (result, sink)
}

fn rejects_at(path: PathBuf) -> FileRejectsConfig {
    FileRejectsConfig { path, ..Default::default() }
}

/// One parsed JSON value of a reject record (records are flat: strings, integers, null).
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Int(u64),
    Str(String),
}

/// A minimal parser for the flat JSON objects `FileRejects` writes (strict enough to catch a
/// malformed line: anything unexpected panics).
fn parse_record(line: &str) -> BTreeMap<String, Json> {
    let mut chars = line.chars().peekable();
    let mut out = BTreeMap::new();
    assert_eq!(chars.next(), Some('{'), "{line}");
    loop {
        let key = match parse_value(&mut chars) {
            Json::Str(k) => k,
            other => panic!("key {other:?} in {line}"),
        };
        assert_eq!(chars.next(), Some(':'), "{line}");
        let value = parse_value(&mut chars);
        assert!(out.insert(key, value).is_none(), "duplicate key in {line}");
        match chars.next() {
            Some(',') => continue,
            Some('}') => break,
            other => panic!("unexpected {other:?} in {line}"),
        }
    }
    assert_eq!(chars.next(), None, "trailing text in {line}");
    out
}

fn parse_value(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Json {
    match chars.peek().copied() {
        Some('n') => {
            let word: String = chars.by_ref().take(4).collect();
            assert_eq!(word, "null");
            Json::Null
        }
        Some(c) if c.is_ascii_digit() => {
            let mut n = String::new();
            while let Some(c) = chars.peek().copied().filter(char::is_ascii_digit) {
                n.push(c);
                chars.next();
            }
            Json::Int(n.parse().unwrap())
        }
        Some('"') => {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next().expect("unterminated string") {
                    '"' => return Json::Str(s),
                    '\\' => match chars.next().unwrap() {
                        '"' => s.push('"'),
                        '\\' => s.push('\\'),
                        '/' => s.push('/'),
                        'n' => s.push('\n'),
                        'r' => s.push('\r'),
                        't' => s.push('\t'),
                        'b' => s.push('\u{8}'),
                        'f' => s.push('\u{c}'),
                        'u' => {
                            let hex: String = chars.by_ref().take(4).collect();
                            s.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
                        }
                        other => panic!("bad escape \\{other}"),
                    },
                    c if u32::from(c) < 0x20 => panic!("raw control character {c:?} in a JSON string"),
                    c => s.push(c),
                }
            }
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2));
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

fn string(v: &Json) -> Option<&str> {
    match v {
        Json::Str(s) => Some(s),
        Json::Null => None,
        other => panic!("expected a string or null, got {other:?}"),
    }
}

/// A parsed record's raw bytes: `raw` (text) or `raw_hex`, never both.
fn raw_bytes(record: &BTreeMap<String, Json>) -> Option<Vec<u8>> {
    match (record.get("raw"), record.get("raw_hex")) {
        (Some(raw), None) => string(raw).map(|s| s.as_bytes().to_vec()),
        (None, Some(Json::Str(hex))) => Some(unhex(hex)),
        other => panic!("exactly one of raw / raw_hex expected: {other:?}"),
    }
}

fn read_records(path: &Path) -> Vec<BTreeMap<String, Json>> {
    let text = std::fs::read_to_string(path).expect("the reject file is UTF-8");
    assert!(text.is_empty() || text.ends_with('\n'), "every record ends with a newline");
    text.lines().map(parse_record).collect()
}

#[test]
fn pipeline_rejects_land_in_the_file_one_line_each_with_the_original_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("people.csv");
    std::fs::write(&input, INPUT).unwrap();
    let reject_path = dir.path().join("rejects.jsonl");
    let rejects = Arc::new(FileRejects::create(rejects_at(reject_path.clone())).unwrap());

    let (stats, sink) = run(&input, rejects.clone());
    let stats = stats.unwrap();
    assert_eq!((stats.rows_read, stats.rows_written, stats.rows_rejected), (9, 3, 6));
    assert_eq!(sink.committed_rows(), 3);
    assert_eq!(rejects.rows(), 6);

    let records = read_records(&reject_path);
    assert_eq!(records.len() as u64, stats.rows_rejected, "one line per rejected row");

    let input_lines: Vec<&[u8]> = INPUT.split(|&b| b == b'\n').collect();
    let origin = input.display().to_string();
    let mut seen = Vec::new();
    for r in &records {
        assert_eq!(r["origin"], Json::Str(origin.clone()), "{r:?}");
        let Json::Int(line) = r["line"] else { panic!("no line in {r:?}") };
        let reason = string(&r["reason"]).unwrap();
        assert!(!reason.is_empty(), "{r:?}");
        let raw = raw_bytes(r).expect("CSV rejects keep their bytes");
        assert_eq!(raw, input_lines[line as usize - 1], "line {line}: the file's bytes exactly");
        seen.push((line, string(&r["column"]).map(str::to_owned), string(&r["value"]).map(str::to_owned)));
    }
    let some = |s: &str| Some(s.to_owned());
    assert_eq!(
        seen,
        [
            (3, None, None),                        // 2 fields of 3
            (4, some("id"), some("x")),             // not an integer
            (5, some("name"), some("caf\u{fffd}")), // Latin-1 byte
            (7, some("name"), some("e\u{0}ve")),    // NUL byte in text
            (8, some("score"), some("notanumber")), // not a float
            (11, None, None),                       // 4 fields of 3
        ],
        "file order, each naming line, column and value"
    );
    // Not UTF-8 → raw_hex; UTF-8 (even with a NUL) → raw.
    assert!(records[2].contains_key("raw_hex") && !records[2].contains_key("raw"));
    assert_eq!(records[3]["raw"], Json::Str("6,e\u{0}ve,1.0".into()));
}

#[test]
fn truncate_starts_the_file_over_and_append_keeps_earlier_rows() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("people.csv");
    std::fs::write(&input, INPUT).unwrap();
    let reject_path = dir.path().join("rejects.jsonl");
    std::fs::write(&reject_path, "old content\n").unwrap();

    let (stats, _) = run(&input, Arc::new(FileRejects::create(rejects_at(reject_path.clone())).unwrap()));
    assert_eq!(stats.unwrap().rows_rejected, 6);
    assert_eq!(read_records(&reject_path).len(), 6, "truncated by default: the old line is gone");

    let append = FileRejectsConfig { append: true, ..rejects_at(reject_path.clone()) };
    let (stats, _) = run(&input, Arc::new(FileRejects::create(append).unwrap()));
    assert_eq!(stats.unwrap().rows_rejected, 6);
    let records = read_records(&reject_path);
    assert_eq!(records.len(), 12, "appended after the first run's rows");
    assert_eq!(records[..6], records[6..]);
}

#[test]
fn rows_rejected_from_many_threads_are_all_written_whole() {
    let dir = tempfile::tempdir().unwrap();
    let reject_path = dir.path().join("rejects.jsonl");
    // A tiny buffer: rows are written to the file while other threads keep rejecting.
    let config = FileRejectsConfig { buffer_bytes: 64, ..rejects_at(reject_path.clone()) };
    let rejects = Arc::new(FileRejects::create(config).unwrap());
    let ctx = Context::with_rejects(rejects.clone());
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let ctx = ctx.clone();
            s.spawn(move || {
                for i in 0..500u64 {
                    ctx.reject(Rejected {
                        origin: format!("thread-{t}"),
                        line: Some(i + 1),
                        column: Some("c".into()),
                        value: Some(format!("v\"{i}\n")),
                        reason: "test".into(),
                        raw: Some(vec![t as u8, 0xff, i as u8]),
                    })
                    .unwrap();
                }
            });
        }
    });
    futures::executor::block_on(rejects.flush()).unwrap();
    assert_eq!(ctx.rejected(), 4000);
    let records = read_records(&reject_path);
    assert_eq!(records.len(), 4000);
    for t in 0..8u64 {
        let lines: Vec<u64> = records
            .iter()
            .filter(|r| r["origin"] == Json::Str(format!("thread-{t}")))
            .map(|r| {
                let Json::Int(line) = r["line"] else { panic!() };
                assert_eq!(raw_bytes(r).unwrap(), [t as u8, 0xff, (line - 1) as u8]);
                assert_eq!(r["value"], Json::Str(format!("v\"{}\n", line - 1)));
                line
            })
            .collect();
        assert_eq!(lines, (1..=500).collect::<Vec<_>>(), "each thread's rows in its order");
    }
}

/// `/dev/full` accepts the open and fails every write with "no space left on device".
#[cfg(target_os = "linux")]
#[test]
fn a_reject_file_that_cannot_be_written_fails_the_run_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("people.csv");
    std::fs::write(&input, INPUT).unwrap();
    let full = PathBuf::from("/dev/full");
    assert!(full.exists(), "this test needs /dev/full");

    // Written at flush (the default buffer holds every row).
    let rejects = Arc::new(FileRejects::create(rejects_at(full.clone())).unwrap());
    let (result, sink) = run(&input, rejects);
    let err = result.unwrap_err();
    let source = err.find_source::<SourceError>().unwrap_or_else(|| panic!("no SourceError in {err:?}"));
    assert!(matches!(source, SourceError::Io { path, .. } if path == &full), "{source:?}");
    assert_eq!(sink.committed_rows(), 0, "nothing committed when the rejects cannot be stored");

    // Written as rows come (no buffer): the run stops at the first reject.
    let unbuffered = FileRejectsConfig { buffer_bytes: 0, ..rejects_at(full) };
    let (result, sink) = run(&input, Arc::new(FileRejects::create(unbuffered).unwrap()));
    assert!(result.unwrap_err().find_source::<SourceError>().is_some());
    assert_eq!(sink.committed_rows(), 0);
}

#[test]
fn a_reject_file_in_a_missing_directory_fails_at_create_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("rejects.jsonl");
    let err = FileRejects::create(rejects_at(path.clone())).unwrap_err();
    assert!(matches!(&err, SourceError::Io { path: p, .. } if p == &path), "{err:?}");
    assert!(err.to_string().contains("no-such-dir"), "{err}");
}

#[test]
fn a_run_without_bad_rows_leaves_an_empty_reject_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("good.csv");
    std::fs::write(&input, b"id,name,score\n1,a,1.0\n").unwrap();
    let reject_path = dir.path().join("rejects.jsonl");
    let (stats, sink) = run(&input, Arc::new(FileRejects::create(rejects_at(reject_path.clone())).unwrap()));
    assert_eq!(stats.unwrap().rows_rejected, 0);
    assert_eq!(sink.committed_rows(), 1);
    assert_eq!(std::fs::read(&reject_path).unwrap(), b"");
}

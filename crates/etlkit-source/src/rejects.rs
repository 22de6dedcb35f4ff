//! [`FileRejects`]: a [`RejectSink`] that writes rejected rows to a JSON-lines file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use etlkit_core::{RejectSink, Rejected};
use futures::future::BoxFuture;

use crate::error::{Result, SourceError, into_core};

/// The stage name [`FileRejects`] errors carry inside [`etlkit_core::Error`].
const STAGE_NAME: &str = "file rejects";

/// Configuration of a [`FileRejects`]. Build with
/// `FileRejectsConfig { path, ..Default::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRejectsConfig {
    /// The JSON-lines file to write. Its directory must exist. Default: empty (fails validation).
    pub path: PathBuf,
    /// `true`: add to the end of an existing file; `false`: empty the file when the sink is
    /// created. Default: `false` (truncate).
    pub append: bool,
    /// How many bytes of encoded rows [`reject`](RejectSink::reject) keeps in memory before it
    /// writes them to the file (one `write` on the calling thread, no sync). `0` writes every row
    /// as it comes. [`flush`](RejectSink::flush) writes the rest and syncs the file. Default: 1 MiB.
    pub buffer_bytes: usize,
}

impl Default for FileRejectsConfig {
    fn default() -> Self {
        FileRejectsConfig { path: PathBuf::new(), append: false, buffer_bytes: 1 << 20 }
    }
}

impl FileRejectsConfig {
    /// Checks the configuration: `path` must be set.
    pub fn validate(&self) -> Result<()> {
        if self.path.as_os_str().is_empty() {
            return Err(SourceError::config("path", "must name the reject file"));
        }
        Ok(())
    }
}

/// A [`RejectSink`] writing each rejected row as one JSON object per line.
///
/// One JSON object per line, fields in this order:
///
/// | field | JSON type | content |
/// |---|---|---|
/// | `origin` | string | where the row came from (for CSV: the file path) |
/// | `line` | number or `null` | 1-based physical line (header = line 1) or row number |
/// | `column` | string or `null` | the offending column |
/// | `value` | string or `null` | the offending value |
/// | `reason` | string | why the row was rejected |
/// | `raw` | string or `null` | the row's original bytes when they are valid UTF-8; `null` when the stage kept no bytes |
/// | `raw_hex` | string | instead of `raw` when the bytes are not valid UTF-8: lowercase hex, two digits a byte |
///
/// Exactly one of `raw` and `raw_hex` is present, so the original bytes are always recoverable
/// exactly: `raw` is the bytes themselves (JSON-escaped), `raw_hex` decodes with e.g.
/// `bytes.fromhex(...)` in Python or `xxd -r -p`.
///
/// ```text
/// {"origin":"in/people.csv","line":4,"column":"id","value":"x","reason":"not a valid Int64","raw":"x,carol,2.0"}
/// {"origin":"in/people.csv","line":5,"column":"name","value":"caf�","reason":"invalid UTF-8","raw_hex":"342c636166e92c332e30"}
/// ```
///
/// [`reject`](RejectSink::reject) encodes the row into an in-memory buffer behind a mutex and only
/// writes to the file when the buffer passes [`FileRejectsConfig::buffer_bytes`], so calls from
/// several threads at once stay cheap. [`flush`](RejectSink::flush) (called by the pipeline once,
/// before the sink commits) writes what is buffered and syncs the file to disk on a thread of its
/// own, not on the async executor. Once a write has failed, every later call fails too, since
/// rows may be missing from the file.
///
/// Errors are [`SourceError::Io`] naming the file, inside an [`etlkit_core::Error`] for the
/// stage named `file rejects`.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use etlkit_core::{Context, Rejected};
/// use etlkit_source::{FileRejects, FileRejectsConfig};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("rejects.jsonl");
/// let rejects = Arc::new(FileRejects::create(FileRejectsConfig { path: path.clone(), ..Default::default() })?);
/// let ctx = Context::with_rejects(rejects.clone());
/// ctx.reject(Rejected {
///     origin: "a.csv".into(),
///     line: Some(2),
///     column: Some("id".into()),
///     value: Some("x".into()),
///     reason: "not a valid Int64".into(),
///     raw: Some(b"x,1".to_vec()),
/// })?;
/// futures::executor::block_on(etlkit_core::RejectSink::flush(&*rejects))?;
/// assert_eq!(
///     std::fs::read_to_string(&path)?,
///     "{\"origin\":\"a.csv\",\"line\":2,\"column\":\"id\",\"value\":\"x\",\"reason\":\"not a valid Int64\",\"raw\":\"x,1\"}\n"
/// );
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FileRejects {
    path: PathBuf,
    buffer_bytes: usize,
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    file: File,
    /// Encoded rows not yet written to `file`.
    pending: Vec<u8>,
    /// Rows encoded so far (written or pending).
    rows: u64,
    /// Set once a write or sync failed: the file may lack rows, so nothing more is accepted.
    failed: bool,
}

impl FileRejects {
    /// Validates `config` and opens (creates, truncates or appends to) the file now, so a path
    /// that cannot be written fails before any row is read.
    pub fn create(config: FileRejectsConfig) -> Result<Self> {
        config.validate()?;
        let FileRejectsConfig { path, append, buffer_bytes } = config;
        let mut options = OpenOptions::new();
        options.create(true);
        if append {
            options.append(true);
        } else {
            options.write(true).truncate(true);
        }
        let file = options.open(&path).map_err(|e| SourceError::io(&path, e))?;
        let state = State { file, pending: Vec::new(), rows: 0, failed: false };
        Ok(FileRejects { path, buffer_bytes, state: Arc::new(Mutex::new(state)) })
    }

    /// The file rows are written to.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Rows accepted so far (written to the file or still buffered).
    pub fn rows(&self) -> u64 {
        lock(&self.state).rows
    }

    fn failed_error(&self) -> SourceError {
        SourceError::io(
            &self.path,
            std::io::Error::other("an earlier write to the reject file failed; rows may be missing"),
        )
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave `State` half-updated in a way that matters more
    // than a failed write would; keep going with what is there.
    state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl State {
    /// Writes `pending` to the file; on failure marks the state failed.
    fn write_pending(&mut self) -> std::io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.pending);
        self.pending.clear();
        if result.is_err() {
            self.failed = true;
        }
        result
    }
}

impl RejectSink for FileRejects {
    fn reject(&self, row: Rejected) -> etlkit_core::Result<()> {
        let mut state = lock(&self.state);
        if state.failed {
            return Err(into_core(STAGE_NAME, self.failed_error()));
        }
        encode_line(&row, &mut state.pending);
        state.rows += 1;
        if state.pending.len() > self.buffer_bytes {
            state.write_pending().map_err(|e| into_core(STAGE_NAME, SourceError::io(&self.path, e)))?;
        }
        Ok(())
    }

    fn flush<'a, 'b>(&'a self) -> BoxFuture<'b, etlkit_core::Result<()>>
    where
        'a: 'b,
        Self: 'b,
    {
        // The write and the fsync run on a thread of their own: they may take a while and must
        // not hold up the async executor.
        let state = Arc::clone(&self.state);
        let path = self.path.clone();
        let (tx, rx) = futures::channel::oneshot::channel();
        let spawned = std::thread::Builder::new().name("etlkit-file-rejects".into()).spawn(move || {
            let mut state = lock(&state);
            let result = if state.failed {
                Err(std::io::Error::other("an earlier write to the reject file failed; rows may be missing"))
            } else {
                state.write_pending().and_then(|()| state.file.sync_all())
            };
            if result.is_err() {
                state.failed = true;
            }
            let _ = tx.send(result);
        });
        Box::pin(async move {
            let io = match spawned {
                Ok(_) => match rx.await {
                    Ok(result) => result,
                    Err(_) => Err(std::io::Error::other("the reject flush thread panicked")),
                },
                Err(e) => Err(e),
            };
            io.map_err(|e| into_core(STAGE_NAME, SourceError::io(path, e)))
        })
    }
}

/// One reject record as a JSON object: exactly one of `raw` (the row's bytes as text, `null` when the
/// stage kept none) and `raw_hex` (the bytes in hex, when they are not valid UTF-8).
#[derive(serde::Serialize)]
struct Line<'a> {
    origin: &'a str,
    line: Option<u64>,
    column: Option<&'a str>,
    value: Option<&'a str>,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<Option<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_hex: Option<String>,
}

/// Appends `row` as one JSON object and a `\n` to `out`.
fn encode_line(row: &Rejected, out: &mut Vec<u8>) {
    let (raw, raw_hex) = match row.raw.as_deref() {
        None => (Some(None), None),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => (Some(Some(text)), None),
            Err(_) => (None, Some(bytes.iter().map(|b| format!("{b:02x}")).collect())),
        },
    };
    let line = Line {
        origin: &row.origin,
        line: row.line,
        column: row.column.as_deref(),
        value: row.value.as_deref(),
        reason: &row.reason,
        raw,
        raw_hex,
    };
    serde_json::to_writer(&mut *out, &line).expect("a Vec<u8> accepts every write");
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(row: &Rejected) -> String {
        let mut out = Vec::new();
        encode_line(row, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped_and_missing_fields_are_null() {
        let row = Rejected {
            origin: "a\"b\\c.csv".into(),
            line: None,
            column: None,
            value: Some("x\u{0}\n\t\u{1f}é".into()),
            reason: "r".into(),
            raw: None,
        };
        assert_eq!(
            line(&row),
            "{\"origin\":\"a\\\"b\\\\c.csv\",\"line\":null,\"column\":null,\"value\":\"x\\u0000\\n\\t\\u001fé\",\"reason\":\"r\",\"raw\":null}\n"
        );
    }

    #[test]
    fn bytes_that_are_not_utf8_are_written_as_hex() {
        let row = Rejected {
            origin: "o".into(),
            line: Some(7),
            column: Some("c".into()),
            value: Some("v".into()),
            reason: "r".into(),
            raw: Some(vec![0x31, 0x2c, 0xe9, 0x00, 0xff]),
        };
        assert_eq!(
            line(&row),
            "{\"origin\":\"o\",\"line\":7,\"column\":\"c\",\"value\":\"v\",\"reason\":\"r\",\"raw_hex\":\"312ce900ff\"}\n"
        );
    }

    #[test]
    fn an_empty_path_fails_validation() {
        let err = FileRejectsConfig::default().validate().unwrap_err();
        assert!(matches!(err, SourceError::InvalidConfig { field: "path", .. }), "{err}");
    }
}

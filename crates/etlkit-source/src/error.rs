//! [`SourceError`]: everything that can go wrong while finding, opening and decoding input files.

use std::path::PathBuf;

use arrow_schema::DataType;

/// What a reader does with a bad row: a CSV row that is ragged, has an unparseable value, invalid
/// UTF-8, a NUL byte in text or an unterminated quote; a Parquet row with a value that does not
/// convert to its pinned column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// End the read with a [`SourceError::BadRow`] naming file, line (row), column and value. The
    /// default.
    #[default]
    Fail,
    /// Send the row to [`Context::reject`](etlkit_core::Context::reject) (file, line or row, column,
    /// value, reason and, for CSV, the row's original bytes) and go on.
    Reject,
}

/// Result alias of this crate.
pub type Result<T, E = SourceError> = std::result::Result<T, E>;

/// Errors of the CSV and Parquet readers.
///
/// Bad-input errors name the file, the 1-based line (CSV: the physical line, the header is line 1;
/// Parquet: the row number within the file, the first row is 1), the column and the offending value,
/// so a person can open the file and fix it. Sources are chained, never flattened. Convert into
/// [`etlkit_core::Error`] with `?` or `.into()`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// A configuration value is out of range.
    #[error("invalid configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The offending field, e.g. `batch_size`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A file or directory could not be opened, listed or read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A glob pattern is malformed.
    #[error("invalid glob pattern `{pattern}`")]
    Glob {
        /// The pattern as given.
        pattern: String,
        /// The parse error.
        #[source]
        source: glob::PatternError,
    },
    /// An input (file, directory or glob) matched no files.
    #[error("no input files: `{input}` matched nothing")]
    NoFiles {
        /// The input as given.
        input: String,
    },
    /// A Parquet file could not be decoded.
    #[cfg(feature = "parquet")]
    #[error("cannot decode Parquet file {}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// Arrow could not build or convert a batch read from `path`.
    #[error("arrow error while reading {}", path.display())]
    Arrow {
        /// The file.
        path: PathBuf,
        /// The Arrow error.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// A requested (projected) column exists in none of the input files.
    #[error("column `{column}` not found in {}", path.display())]
    ColumnNotFound {
        /// The requested column.
        column: String,
        /// The first input file.
        path: PathBuf,
    },
    /// Two files disagree on a column's type.
    #[error(
        "column `{column}` has type {first_type} in {} but {other_type} in {}",
        first_path.display(),
        other_path.display()
    )]
    TypeConflict {
        /// The column.
        column: String,
        /// The file where the column was first seen.
        first_path: PathBuf,
        /// Its type there.
        first_type: DataType,
        /// The file that disagrees.
        other_path: PathBuf,
        /// Its type there.
        other_type: DataType,
    },
    /// A file lacks a column that another file has, and filling it with nulls is not allowed (or the
    /// column is not nullable).
    #[error(
        "column `{column}` of {} is missing from {}{}",
        present_in.display(),
        missing_in.display(),
        if *nullable { " (set allow_missing_columns to fill it with nulls)" } else { " and is not nullable" }
    )]
    MissingColumn {
        /// The column.
        column: String,
        /// A file that has it.
        present_in: PathBuf,
        /// The file that lacks it.
        missing_in: PathBuf,
        /// Whether the column is nullable (only nullable columns can be filled with nulls).
        nullable: bool,
    },
    /// The CSV header is unusable (duplicate names, or a file's header lacks a schema column).
    #[error("{}: header: {reason}", path.display())]
    Header {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A CSV row is malformed or holds a value that does not fit its column, or a Parquet value does
    /// not convert to its pinned column type.
    #[error("{0}")]
    BadRow(Box<BadRow>),
    /// A reader thread panicked or vanished (a bug).
    #[error("reader thread failed: {0}")]
    Internal(String),
}

impl SourceError {
    /// Whether reading again can succeed. Only transient I/O errors (interrupted, timed out) are;
    /// bad input, bad configuration and decode errors are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            SourceError::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SourceError::Io { path: path.into(), source }
    }

    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        SourceError::InvalidConfig { field, reason: reason.into() }
    }
}

/// Wraps `err` as a source-stage error named `name`.
pub(crate) fn into_core(name: &str, err: SourceError) -> etlkit_core::Error {
    let retryable = err.is_retryable();
    etlkit_core::Error::stage(etlkit_core::Stage::Source, name, retryable, err)
}

impl From<SourceError> for etlkit_core::Error {
    fn from(err: SourceError) -> Self {
        into_core("etlkit-source", err)
    }
}

/// Where and why a row is bad: the payload of [`SourceError::BadRow`] (and of each rejected row). Its
/// `Display` is `file:line column `c` value "v": reason`, the same numbering for CSV and Parquet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{}:{line}{}{}: {reason}",
    path.display(),
    column.as_ref().map(|c| format!(" column `{c}`")).unwrap_or_default(),
    value.as_ref().map(|v| format!(" value {v:?}")).unwrap_or_default()
)]
#[non_exhaustive]
pub struct BadRow {
    /// The file.
    pub path: PathBuf,
    /// 1-based. CSV: the physical line where the offending field (or the row) starts; the header is
    /// line 1. Parquet: the row's number within its file (the first row is 1, whatever the row
    /// group, batch or shard).
    pub line: u64,
    /// The offending column, when one is to blame.
    pub column: Option<String>,
    /// The offending value (invalid UTF-8 shown lossily), when one is to blame.
    pub value: Option<String>,
    /// What is wrong, e.g. `expected 3 fields, found 4` or `not a valid Int64`.
    pub reason: String,
    /// The row's original bytes exactly as in the file (not re-encoded; the line terminator
    /// excluded), e.g. Latin-1 text stays Latin-1. `None` for Parquet (rows have no raw text) or
    /// when they could not be read back.
    /// [`BadRow::raw_text`] renders them for people.
    pub raw: Option<Vec<u8>>,
}

impl BadRow {
    /// The raw bytes as text for people (lossy UTF-8).
    pub fn raw_text(&self) -> Option<String> {
        self.raw.as_deref().map(|r| String::from_utf8_lossy(r).into_owned())
    }
}

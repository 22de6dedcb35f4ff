//! Building blocks for jobs over many files: [`list_inputs`] (files, directories and globs, by the
//! `glob` crate), [`open_file`] (any supported file by its extension, as a `Box<dyn Source>`) and
//! [`run_each`] (one pipeline run per file, their [`LoadStats`] summed).

use std::future::Future;
use std::path::{Path, PathBuf};

use etlkit_core::{LoadStats, Source};

use crate::error::{OnError, Result, SourceError};
use crate::input::{Input, file_identity};

/// A file format this crate reads, known by the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileFormat {
    /// `.csv`, `.tsv`, `.txt` (case-insensitive).
    Csv,
    /// `.parquet`, `.parq`, `.pq` (case-insensitive).
    Parquet,
}

const CSV: &[&str] = &["csv", "tsv", "txt"];
const PARQUET: &[&str] = &["parquet", "parq", "pq"];

impl FileFormat {
    /// The format of `path` by its extension; `None` for other files.
    ///
    /// ```
    /// use etlkit_source::FileFormat;
    /// assert_eq!(FileFormat::of("a/trips.PARQUET".as_ref()), Some(FileFormat::Parquet));
    /// assert_eq!(FileFormat::of("orders.csv".as_ref()), Some(FileFormat::Csv));
    /// assert_eq!(FileFormat::of("notes.md".as_ref()), None);
    /// ```
    pub fn of(path: &Path) -> Option<FileFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        if CSV.contains(&ext.as_str()) {
            Some(FileFormat::Csv)
        } else if PARQUET.contains(&ext.as_str()) {
            Some(FileFormat::Parquet)
        } else {
            None
        }
    }

    /// Whether this build reads the format (cargo features `csv`, `parquet`).
    pub fn is_enabled(self) -> bool {
        match self {
            FileFormat::Csv => cfg!(feature = "csv"),
            FileFormat::Parquet => cfg!(feature = "parquet"),
        }
    }
}

/// Every data file of `inputs`, in order: each input's files sorted by path (a directory: its CSV and
/// Parquet files, hidden files skipped; a glob: its matches, by the `glob` crate, hidden files only
/// when the pattern names them literally), a file listed twice only once — also under another
/// name, such as a symlink to it (the first path listed is kept). A listed file or glob match that is neither CSV nor Parquet is an error; an input
/// matching nothing is [`SourceError::NoFiles`].
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use etlkit_source::{Input, list_inputs};
/// let dir = tempfile::tempdir()?;
/// for f in ["b.csv", "a.parquet", "notes.md", ".hidden.csv"] {
///     std::fs::write(dir.path().join(f), "")?;
/// }
/// let files = list_inputs(&[Input::Dir(dir.path().into())])?;
/// assert_eq!(files, [dir.path().join("a.parquet"), dir.path().join("b.csv")]);
/// let glob = Input::Glob(format!("{}/b*.csv", dir.path().display()));
/// assert_eq!(list_inputs(&[glob])?, [dir.path().join("b.csv")]);
/// # Ok(()) }
/// ```
pub fn list_inputs(inputs: &[Input]) -> Result<Vec<PathBuf>> {
    let data: Vec<&str> = CSV.iter().chain(PARQUET).copied().collect();
    let mut out: Vec<PathBuf> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for input in inputs {
        for file in input.resolve(&data)? {
            if FileFormat::of(&file).is_none() {
                return Err(SourceError::config(
                    "input",
                    format!("{}: not a CSV or Parquet file (by its extension)", file.display()),
                ));
            }
            if seen.insert(file_identity(&file)) {
                out.push(file);
            }
        }
    }
    if out.is_empty() {
        return Err(SourceError::NoFiles { input: "(no inputs)".into() });
    }
    Ok(out)
}

/// How [`open_file`] opens a file. Plain struct with documented defaults.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Rows per batch. Default 65 536.
    pub batch_size: usize,
    /// Bad rows: fail or reject. Default [`OnError::Fail`].
    pub on_error: OnError,
    /// Settings for CSV files (its `input`, `batch_size` and `on_error` are replaced). Default:
    /// `CsvSourceConfig::default()`.
    #[cfg(feature = "csv")]
    pub csv: crate::CsvSourceConfig,
    /// Settings for Parquet files (its `input`, `batch_size` and `on_error` are replaced). Default:
    /// `ParquetSourceConfig::default()`.
    #[cfg(feature = "parquet")]
    pub parquet: crate::ParquetSourceConfig,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            batch_size: 65_536,
            on_error: OnError::Fail,
            #[cfg(feature = "csv")]
            csv: Default::default(),
            #[cfg(feature = "parquet")]
            parquet: Default::default(),
        }
    }
}

/// Opens `path` with the reader its extension calls for ([`FileFormat::of`]).
pub fn open_file(path: &Path, options: &OpenOptions) -> Result<Box<dyn Source>> {
    let unsupported = |why: &str| SourceError::config("input", format!("{}: {why}", path.display()));
    match FileFormat::of(path) {
        #[cfg(feature = "csv")]
        Some(FileFormat::Csv) => Ok(Box::new(crate::CsvSource::open(crate::CsvSourceConfig {
            input: Input::File(path.to_owned()),
            batch_size: options.batch_size,
            on_error: options.on_error,
            ..options.csv.clone()
        })?)),
        #[cfg(feature = "parquet")]
        Some(FileFormat::Parquet) => Ok(Box::new(crate::ParquetSource::open(crate::ParquetSourceConfig {
            input: Input::File(path.to_owned()),
            batch_size: options.batch_size,
            on_error: options.on_error,
            ..options.parquet.clone()
        })?)),
        #[allow(unreachable_patterns)] // reachable when a format's feature is off
        Some(_) => Err(unsupported("this build of etlkit-source does not read this format")),
        None => Err(unsupported("not a CSV or Parquet file (by its extension)")),
    }
}

/// Runs `run` once per file, in order, and sums the runs' [`LoadStats`] ([`LoadStats::merge`];
/// `elapsed` becomes the wall-clock time of all runs). Stops at the first error, which names the
/// file. Typically `run` builds and runs one [`Pipeline`](etlkit_core::Pipeline) over
/// [`open_file`]`(file, ..)`, so files with different schemas can be normalized one by one.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use etlkit_core::{NullSink, Pipeline};
/// use etlkit_source::{Input, OpenOptions, list_inputs, open_file, run_each};
/// let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("a.csv"), "id\n1\n2\n")?;
/// std::fs::write(dir.path().join("b.csv"), "id,name\n3,x\n")?;
/// let files = list_inputs(&[Input::Dir(dir.path().into())])?;
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// let stats = runtime.block_on(run_each(&files, |file| async move {
///     let source = open_file(&file, &OpenOptions::default())?;
///     Pipeline::from_boxed(source, Arc::new(NullSink::default())).run().await
/// }))?;
/// assert_eq!(stats.rows_read, 3);
/// # Ok(()) }
/// ```
pub async fn run_each<F, Fut>(files: &[PathBuf], mut run: F) -> etlkit_core::Result<LoadStats>
where
    F: FnMut(PathBuf) -> Fut,
    Fut: Future<Output = etlkit_core::Result<LoadStats>>,
{
    let started = std::time::Instant::now();
    let mut total = LoadStats::default();
    for file in files {
        let stats = run(file.clone()).await.map_err(|e| {
            etlkit_core::Error::stage(
                etlkit_core::Stage::Source,
                file.display().to_string(),
                e.is_retryable(),
                e,
            )
        })?;
        total.merge(&stats);
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

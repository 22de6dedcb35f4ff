//! [`Input`]: which files a reader reads — one file, a list, a directory or a glob.

use std::path::{Path, PathBuf};

use crate::error::{Result, SourceError};

/// The files a reader reads, in a deterministic order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// One file.
    File(PathBuf),
    /// These files, in this order.
    List(Vec<PathBuf>),
    /// Every file directly inside this directory whose extension fits the format (`.csv`/`.tsv`/`.txt`
    /// for CSV, `.parquet`/`.parq`/`.pq` for Parquet; case-insensitive), sorted by path. Hidden files
    /// (starting with `.` or `_`, as Spark/Hive write) are skipped.
    Dir(PathBuf),
    /// Every file matching this glob pattern (e.g. `data/2024-*.csv`), sorted by path.
    Glob(String),
}

impl Input {
    /// Interprets a command-line style path: a pattern with `*`, `?` or `[` is a glob, an existing
    /// directory is a directory, anything else a file.
    ///
    /// ```
    /// use etlkit_source::Input;
    /// assert_eq!(Input::parse("trips/*.parquet"), Input::Glob("trips/*.parquet".into()));
    /// assert_eq!(Input::parse("trips.csv"), Input::File("trips.csv".into()));
    /// ```
    pub fn parse(s: &str) -> Input {
        if s.contains(['*', '?', '[']) {
            Input::Glob(s.to_owned())
        } else if Path::new(s).is_dir() {
            Input::Dir(PathBuf::from(s))
        } else {
            Input::File(PathBuf::from(s))
        }
    }

    /// A short description for names and errors.
    pub fn describe(&self) -> String {
        match self {
            Input::File(p) | Input::Dir(p) => p.display().to_string(),
            Input::Glob(g) => g.clone(),
            Input::List(l) => match l.as_slice() {
                [one] => one.display().to_string(),
                [first, ..] => format!("{} (+{} files)", first.display(), l.len() - 1),
                [] => "(no files)".to_owned(),
            },
        }
    }

    /// Lists the files, in reading order. `extensions` (lower case, without dot) filter directory
    /// listings. Fails with [`SourceError::NoFiles`] when nothing matches.
    pub(crate) fn resolve(&self, extensions: &[&str]) -> Result<Vec<PathBuf>> {
        let files = match self {
            Input::File(p) => vec![p.clone()],
            Input::List(l) => l.clone(),
            Input::Dir(dir) => {
                let entries = std::fs::read_dir(dir).map_err(|e| SourceError::io(dir, e))?;
                let mut files = Vec::new();
                for entry in entries {
                    let entry = entry.map_err(|e| SourceError::io(dir, e))?;
                    let path = entry.path();
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    if name.starts_with('.') || name.starts_with('_') || !path.is_file() {
                        continue;
                    }
                    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
                    if ext.is_some_and(|e| extensions.contains(&e.as_str())) {
                        files.push(path);
                    }
                }
                files.sort();
                files
            }
            Input::Glob(pattern) => {
                let paths = glob::glob(pattern)
                    .map_err(|source| SourceError::Glob { pattern: pattern.clone(), source })?;
                let mut files = Vec::new();
                for p in paths {
                    let p = p.map_err(|e| {
                        let path = e.path().to_path_buf();
                        SourceError::io(path, e.into())
                    })?;
                    if p.is_file() {
                        files.push(p);
                    }
                }
                files.sort();
                files
            }
        };
        if files.is_empty() {
            return Err(SourceError::NoFiles { input: self.describe() });
        }
        Ok(files)
    }
}

impl From<&str> for Input {
    fn from(s: &str) -> Self {
        Input::parse(s)
    }
}

impl From<PathBuf> for Input {
    fn from(p: PathBuf) -> Self {
        if p.is_dir() { Input::Dir(p) } else { Input::File(p) }
    }
}

impl From<&Path> for Input {
    fn from(p: &Path) -> Self {
        Input::from(p.to_path_buf())
    }
}

impl From<Vec<PathBuf>> for Input {
    fn from(l: Vec<PathBuf>) -> Self {
        Input::List(l)
    }
}

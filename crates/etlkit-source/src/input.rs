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
    /// (starting with `.` or `_`, as Spark/Hive write) are skipped. A file reached twice (a symlink
    /// such as `latest.csv -> 2024-05.csv` next to its target) is read once, under the first path
    /// in sorted order.
    Dir(PathBuf),
    /// Every file matching this glob pattern (e.g. `data/2024-*.csv`), sorted by path. Hidden files
    /// and directories (name starting with `.`) are left out as [`Input::Dir`] leaves them out: a
    /// wildcard never matches them (the `glob` crate's `require_literal_leading_dot`, which also
    /// skips them for `data/.*.csv`); only a pattern naming them literally (`data/.x.csv`) does. A
    /// file reached twice (through a symlink) is read once, under the first path in sorted order.
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
                dedup_files(files)
            }
            Input::Glob(pattern) => {
                let options =
                    glob::MatchOptions { require_literal_leading_dot: true, ..glob::MatchOptions::new() };
                let paths = glob::glob_with(pattern, options)
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
                dedup_files(files)
            }
        };
        if files.is_empty() {
            return Err(SourceError::NoFiles { input: self.describe() });
        }
        Ok(files)
    }
}

/// Where `path` really is (symlinks and `..` resolved), to tell two names of one file apart from two
/// files; the path itself when it cannot be resolved (it does not exist: opening it says so).
pub(crate) fn file_identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `files` with every file reached a second time (by another name, e.g. a symlink) left out: the
/// first path naming it stays, for error messages.
fn dedup_files(files: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut seen = std::collections::HashSet::new();
    files.into_iter().filter(|f| seen.insert(file_identity(f))).collect()
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

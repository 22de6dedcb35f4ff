//! The error type of `etlkit-testkit`.

use std::path::PathBuf;

/// A boxed error from a driver, kept whole so `source()` chains stay intact.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias of `etlkit-testkit`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of `etlkit-testkit`: writing test files, finding, starting and talking to throwaway servers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be created or written.
    #[error("I/O error on {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The Parquet writer failed.
    #[error("cannot write Parquet file {path}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// An Arrow writer (CSV) failed.
    #[error("cannot write {path}")]
    Arrow {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// A file writer was given no batches, so there is no schema to write.
    #[error("no batches to write to {path}")]
    NoBatches {
        /// The file that was not written.
        path: PathBuf,
    },
    /// A program the server needs is not installed.
    #[error("{what} not found; {hint}")]
    NotInstalled {
        /// What is missing, e.g. `PostgreSQL binaries (initdb, postgres)`.
        what: String,
        /// How to get it.
        hint: String,
    },
    /// A helper program could not be run or failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status and output.
        detail: String,
        /// The spawn error, when the program could not be started at all.
        #[source]
        source: Option<std::io::Error>,
    },
    /// A server did not come up.
    #[error("{server} did not start: {reason}\n--- last lines of {log} ---\n{log_tail}")]
    Start {
        /// `PostgreSQL` or `ArcadeDB`.
        server: &'static str,
        /// What went wrong.
        reason: String,
        /// The server's log file.
        log: PathBuf,
        /// Its last lines.
        log_tail: String,
    },
    /// A statement or request against a running server failed.
    #[error("{server}: {action} failed")]
    Server {
        /// `PostgreSQL` or `ArcadeDB`.
        server: &'static str,
        /// What was attempted, e.g. `CREATE DATABASE etl_t_1`.
        action: String,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// An environment variable holds an unusable value.
    #[error("environment variable {var}={value:?}: {reason}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Error {
    /// Whether trying again can succeed: I/O hiccups and failures talking to a running server are
    /// retryable; missing programs, bad environment variables and writer errors are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
            ),
            Error::Server { .. } | Error::Start { .. } => true,
            _ => false,
        }
    }
}

impl From<Error> for etlkit_core::Error {
    fn from(err: Error) -> Self {
        let retryable = err.is_retryable();
        etlkit_core::Error::stage(etlkit_core::Stage::Source, "etlkit-testkit", retryable, err)
    }
}

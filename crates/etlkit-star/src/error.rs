//! [`StarError`], the one error type of this crate.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T, E = StarError> = std::result::Result<T, E>;

/// Everything that can go wrong in a star-schema job. Sources are chained, never flattened; no
/// variant carries a connection string. Converts into [`etlkit_core::Error`] with `?`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StarError {
    /// A configuration value is missing, out of range or inconsistent.
    #[error("invalid star job configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The offending field, e.g. `fact.measures`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A target column that no column of `file` matches (by its name or an alias), and that is not
    /// declared optional.
    #[error("{}: no column for `{column}` (looked for {})", file.display(), names.join(", "))]
    MissingColumn {
        /// The input file.
        file: PathBuf,
        /// The target column.
        column: String,
        /// The names (and aliases) looked for.
        names: Vec<String>,
    },
    /// Several columns of `file` match one target column.
    #[error("{}: columns {} all match `{column}`", file.display(), found.join(", "))]
    AmbiguousColumn {
        /// The input file.
        file: PathBuf,
        /// The target column.
        column: String,
        /// The matching file columns.
        found: Vec<String>,
    },
    /// One column of `file` matches several target columns (by their names or aliases): its values
    /// would silently fill them all.
    #[error("{}: column `{column}` matches {}", file.display(), targets.join(" and "))]
    ColumnMatchedTwice {
        /// The input file.
        file: PathBuf,
        /// The file's column.
        column: String,
        /// The target columns it matches.
        targets: Vec<String>,
    },
    /// The table's row hashes were made with another algorithm or other columns: loading would
    /// store duplicates that do not look like duplicates.
    #[error("{table} holds row hashes `{stored}`; this job computes `{configured}`")]
    HashMismatch {
        /// The table holding the row hashes (quoted).
        table: String,
        /// What the table's hashes were made with.
        stored: String,
        /// What this job would write.
        configured: String,
    },
    /// The session holding the load's advisory lock ended (terminated backend,
    /// `idle_session_timeout`, network drop) while the job was loading. The job stopped before
    /// committing another batch; the next run recovers the table (rebuilds what a bulk load dropped).
    #[error("the load lock on {table} was lost while loading; stopped (the next run recovers)")]
    LoadLockLost {
        /// The table the lock guards (quoted).
        table: String,
        /// The error that stopped the load.
        #[source]
        source: Box<etlkit_core::Error>,
    },
    /// A pipeline run over `file` failed.
    #[error("loading {} failed", file.display())]
    Load {
        /// The input file (or lookup file).
        file: PathBuf,
        /// The pipeline's error.
        #[source]
        source: Box<etlkit_core::Error>,
    },
    /// A row of `file` could not be mapped onto the target schema (a value that does not convert
    /// under [`OnError::Fail`](etlkit_source::OnError::Fail)).
    #[error("{file}: {reason}")]
    Conform {
        /// The input file.
        file: String,
        /// Line, column, value and why.
        reason: String,
    },
    /// The counts of the run do not add up (a bug, or the input changed between passes).
    #[error("row accounting: {0}")]
    Accounting(String),
    /// SQL the job itself runs (table creation, the load lock, bulk start and recovery) failed.
    #[error("PostgreSQL error while {action}")]
    Database {
        /// What the job was doing.
        action: &'static str,
        /// The driver's error.
        #[source]
        source: etlkit_postgres::sqlx::Error,
    },
    /// Listing or opening the input files failed.
    #[error(transparent)]
    Source(#[from] etlkit_source::SourceError),
    /// An etlkit-postgres component (connection, dimension store, sink set-up) failed.
    #[error(transparent)]
    Postgres(#[from] etlkit_postgres::PgError),
    /// A dimension could not be prepared or loaded.
    #[error(transparent)]
    Dimension(#[from] etlkit_dimcache::DimError),
    /// The row hash or de-duplication set-up failed.
    #[error(transparent)]
    Hash(#[from] etlkit_hash::HashError),
}

impl StarError {
    /// Whether running the job again can succeed as it is: lost connections and a lost load lock
    /// are; bad configuration, bad input and mismatched hashes are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            StarError::LoadLockLost { .. } => true,
            StarError::Load { source, .. } => source.is_retryable(),
            StarError::Database { source, .. } => {
                matches!(
                    source,
                    etlkit_postgres::sqlx::Error::Io(_) | etlkit_postgres::sqlx::Error::PoolTimedOut
                )
            }
            StarError::Postgres(e) => e.is_retryable(),
            StarError::Dimension(e) => e.is_retryable(),
            StarError::Source(e) => e.is_retryable(),
            _ => false,
        }
    }

    pub(crate) fn db(action: &'static str) -> impl FnOnce(etlkit_postgres::sqlx::Error) -> StarError {
        move |source| StarError::Database { action, source }
    }

    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> StarError {
        StarError::InvalidConfig { field, reason: reason.into() }
    }
}

impl From<StarError> for etlkit_core::Error {
    fn from(e: StarError) -> Self {
        let retryable = e.is_retryable();
        etlkit_core::Error::stage(etlkit_core::Stage::Sink, "star-job", retryable, e)
    }
}

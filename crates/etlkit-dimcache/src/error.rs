//! [`DimError`], the error type of `etlkit-dimcache`.

/// A boxed error from a [`DimensionStore`](crate::DimensionStore) implementation.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias of this crate.
pub type Result<T, E = DimError> = std::result::Result<T, E>;

/// Errors of `etlkit-dimcache`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DimError {
    /// The [`DimensionSpec`](crate::DimensionSpec) or a [`FactRole`](crate::FactRole) is inconsistent.
    #[error("invalid dimension `{table}`: {reason}")]
    InvalidSpec {
        /// The dimension table.
        table: String,
        /// What is wrong.
        reason: String,
    },
    /// An input column is missing or cannot be cast to the natural-key type.
    #[error("dimension `{table}`: column `{column}` cannot be used as key `{key}`")]
    KeyColumn {
        /// The dimension table.
        table: String,
        /// The input column.
        column: String,
        /// The natural-key field it maps to.
        key: String,
        /// The Arrow error, when the cast failed.
        #[source]
        source: Option<arrow_schema::ArrowError>,
    },
    /// A natural key containing NULL met [`NullKeyPolicy::Error`](crate::NullKeyPolicy::Error).
    #[error("dimension `{table}`: NULL natural key at batch row {row}")]
    NullKey {
        /// The dimension table.
        table: String,
        /// 0-based row within the batch.
        row: usize,
    },
    /// The store returned a different number of keys than members it was given.
    #[error("dimension `{table}`: store returned {got} keys for {expected} members")]
    StoreContract {
        /// The dimension table.
        table: String,
        /// Members sent.
        expected: usize,
        /// Keys received.
        got: usize,
    },
    /// The store failed (I/O, database error).
    #[error("dimension `{table}`: store failed")]
    Store {
        /// The dimension table.
        table: String,
        /// Whether retrying can help (connection loss, deadlock, serialization failure).
        retryable: bool,
        /// The store's error.
        #[source]
        source: BoxError,
    },
    /// An Arrow error while encoding keys or building batches.
    #[error("arrow error")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// The wrapped sink failed while loading fact rows.
    #[error("fact sink failed")]
    Sink(#[source] etlkit_core::Error),
}

impl DimError {
    /// Whether retrying the same work can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            DimError::Store { retryable, .. } => *retryable,
            DimError::Sink(e) => e.is_retryable(),
            _ => false,
        }
    }
}

impl From<DimError> for etlkit_core::Error {
    fn from(e: DimError) -> Self {
        match e {
            DimError::Sink(inner) => inner,
            other => {
                let retryable = other.is_retryable();
                etlkit_core::Error::stage(etlkit_core::Stage::Sink, "dimension", retryable, other)
            }
        }
    }
}

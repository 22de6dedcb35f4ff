//! [`HashError`], the error type of `etlkit-hash`.

use arrow_schema::DataType;

/// Errors of row hashing and de-duplication. None is retryable: they all describe bad input or bad
/// configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// A configured column is not in the batch.
    #[error("column `{column}` not found (columns: {available})")]
    ColumnNotFound {
        /// The missing column.
        column: String,
        /// The batch's columns, comma-separated.
        available: String,
    },
    /// A column's type has no canonical encoding in `etlkit-row-v1`.
    #[error(
        "column `{column}` has type {data_type}, which row hashing does not support (see docs/row-hash.md)"
    )]
    UnsupportedType {
        /// The column.
        column: String,
        /// Its type.
        data_type: DataType,
    },
    /// A value cannot be encoded (e.g. a `Date64` that is not a whole number of days).
    #[error("column `{column}` row {row}: value {value}: {reason}")]
    InvalidValue {
        /// The column.
        column: String,
        /// 0-based row within the batch.
        row: usize,
        /// The offending value.
        value: String,
        /// Why it cannot be encoded.
        reason: &'static str,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A column holding precomputed digests has the wrong type or content.
    #[error("hash column `{column}`: {reason}")]
    BadHashColumn {
        /// The column.
        column: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An Arrow error while building output.
    #[error("arrow error")]
    Arrow(#[from] arrow_schema::ArrowError),
}

impl HashError {
    /// Always `false`: hashing errors come from input or configuration, which a retry does not change.
    pub fn is_retryable(&self) -> bool {
        false
    }

    pub(crate) fn into_core(self, name: &str) -> etlkit_core::Error {
        etlkit_core::Error::stage(etlkit_core::Stage::Transform, name, false, self)
    }
}

impl From<HashError> for etlkit_core::Error {
    fn from(e: HashError) -> Self {
        e.into_core("row-hash")
    }
}

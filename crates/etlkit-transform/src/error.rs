//! [`TransformError`], the one error type of this crate.

use etlkit_core::Stage;

/// Result alias of this crate.
pub type Result<T, E = TransformError> = std::result::Result<T, E>;

/// Errors of `etlkit-transform`. None is retryable: they are bad input, bad configuration or a
/// column the input does not have. Converts into [`etlkit_core::Error::Stage`] (stage `Transform`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransformError {
    /// A configuration value is out of range.
    #[error("invalid configuration of `{transform}`: `{field}` {reason}")]
    InvalidConfig {
        /// The transform's name.
        transform: String,
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A configured column is not in the input.
    #[error("`{transform}`: column `{column}` is not in the input (columns: {available})")]
    MissingColumn {
        /// The transform's name.
        transform: String,
        /// The missing column.
        column: String,
        /// The input's columns, comma-separated.
        available: String,
    },
    /// A column has a type the transform cannot read.
    #[error("`{transform}`: column `{column}` has type {data_type}, expected {expected}")]
    UnsupportedType {
        /// The transform's name.
        transform: String,
        /// The column.
        column: String,
        /// Its type.
        data_type: String,
        /// What the transform reads.
        expected: &'static str,
    },
    /// A value could not be read (e.g. a malformed JSON list): names where the row came from (file
    /// and line), the column and the value.
    #[error("{origin}{}: column `{column}`, value {value:?}: {reason}", at(*line))]
    Malformed {
        /// Where the row came from: the file (or source name) of the row's origin as the pipeline
        /// tracks it ([`Context::origin`](etlkit_core::Context::origin)), else the configured origin.
        origin: String,
        /// The 1-based physical line in that file (header = line 1), or the 1-based row number for
        /// sources without lines; `None` when unknown.
        line: Option<u64>,
        /// The column.
        column: String,
        /// The offending value (cut to 200 characters).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key encoding or a batch operation failed.
    #[error("`{transform}`: arrow error")]
    Arrow {
        /// The transform's name.
        transform: String,
        /// The Arrow error.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// The reject sink failed.
    #[error("storing a rejected row failed")]
    Reject(#[source] etlkit_core::Error),
}

fn at(row: Option<u64>) -> String {
    row.map(|r| format!(":{r}")).unwrap_or_default()
}

impl TransformError {
    pub(crate) fn arrow(transform: &str) -> impl FnOnce(arrow_schema::ArrowError) -> Self + '_ {
        move |source| TransformError::Arrow { transform: transform.to_owned(), source }
    }

    pub(crate) fn missing(transform: &str, column: &str, schema: &arrow_schema::Schema) -> Self {
        TransformError::MissingColumn {
            transform: transform.to_owned(),
            column: column.to_owned(),
            available: schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "),
        }
    }
}

impl From<TransformError> for etlkit_core::Error {
    fn from(e: TransformError) -> Self {
        let name = match &e {
            TransformError::InvalidConfig { transform, .. }
            | TransformError::MissingColumn { transform, .. }
            | TransformError::UnsupportedType { transform, .. }
            | TransformError::Arrow { transform, .. } => transform.clone(),
            TransformError::Malformed { column, .. } => format!("explode:{column}"),
            TransformError::Reject(_) => "rejects".to_owned(),
        };
        etlkit_core::Error::stage(Stage::Transform, name, false, e)
    }
}

//! [`DfError`]: the one error type of this crate.

use datafusion::error::DataFusionError;
use etlkit_hash::HashError;
use etlkit_postgres::PgError;

/// Errors of etlkit's DataFusion integration. Inside DataFusion they travel as
/// `DataFusionError::External`, so `e.find_root()` / `std::error::Error::source` walks back to them.
///
/// No variant ever holds a connection URL with its password: connection details are shown redacted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DfError {
    /// A setting is out of range or inconsistent.
    #[error("invalid configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The field or argument.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// etlkit-postgres failed (connecting, catalog, encoding, COPY).
    #[error(transparent)]
    Postgres(#[from] PgError),
    /// Row hashing failed (an unsupported column type).
    #[error(transparent)]
    Hash(#[from] HashError),
    /// etlkit-neo4j failed (mapping, Bolt, Cypher).
    #[error(transparent)]
    Graph(#[from] etlkit_neo4j::GraphError),
    /// An etlkit pipeline stage (the PostgreSQL source) failed.
    #[error(transparent)]
    Core(#[from] etlkit_core::Error),
    /// Arrow failed while shaping a batch.
    #[error("arrow error on {what}")]
    Arrow {
        /// Which column or step.
        what: String,
        /// The Arrow error.
        #[source]
        source: datafusion::arrow::error::ArrowError,
    },
    /// The write was aborted because another partition of the same query failed (or the run was
    /// closed otherwise); `cause` is that failure as the run ledger recorded it.
    #[error("INSERT INTO {table} aborted: another partition of the query failed{}", cause.as_deref().map(|c| format!(": {c}")).unwrap_or_default())]
    Aborted {
        /// The target table (quoted).
        table: String,
        /// What failed, when known.
        cause: Option<String>,
    },
    /// A plan node could not be encoded or decoded (Ballista / datafusion-proto).
    #[error("plan codec: {reason}")]
    Codec {
        /// What is wrong with the bytes or the node.
        reason: String,
    },
}

impl DfError {
    pub(crate) fn db(
        action: &'static str,
        table: impl Into<String>,
        source: etlkit_postgres::sqlx::Error,
    ) -> Self {
        DfError::Postgres(PgError::Database { action, table: table.into(), source })
    }

    /// Whether retrying the whole query may succeed (connection loss, serialization failure).
    pub fn is_retryable(&self) -> bool {
        match self {
            DfError::Postgres(e) => e.is_retryable(),
            DfError::Core(e) => e.is_retryable(),
            DfError::Graph(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// Finds a [`DfError`] inside a DataFusion error (through `External`, `Context`, `Shared`).
    pub fn find(e: &DataFusionError) -> Option<&DfError> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if let Some(df) = err.downcast_ref::<DfError>() {
                return Some(df);
            }
            cur = err.source();
        }
        None
    }
}

impl From<DfError> for DataFusionError {
    fn from(e: DfError) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

pub(crate) type Result<T, E = DfError> = std::result::Result<T, E>;

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
    /// The commit of a two-phase `INSERT INTO` began (the run is `committing`: its partitions are
    /// only ever committed, never rolled back) and could not be finished here: `committed` of
    /// `partitions` are visible. Never retryable: re-running the query would insert the committed
    /// rows again. The partitions still prepared are committed by
    /// [`recover_prepared`](crate::recover_prepared) or by the next `INSERT INTO` planned on the
    /// same database.
    #[error(
        "INSERT INTO {table}: the commit began but did not finish: {committed} of {partitions} partitions committed          ({reason}); the partitions still prepared are committed by recover_prepared or the next INSERT INTO          planned on this database; re-running the query would insert the committed rows again"
    )]
    CommitUnfinished {
        /// The target table (quoted).
        table: String,
        /// Partitions committed.
        committed: usize,
        /// Partitions of the query.
        partitions: usize,
        /// Why the others are not (yet) committed.
        reason: String,
    },
    /// The connection was lost at the `COMMIT` of a staged `INSERT INTO` and the run ledger could not
    /// be read to tell whether the server committed. Never retryable: check first. The commit took
    /// effect if and only if run `run` is no longer in `etlkit.datafusion_runs`.
    #[error(
        "INSERT INTO {table}: whether the commit took effect is unknown ({reason}); it did if run {run} is no          longer in etlkit.datafusion_runs: check before re-running the query"
    )]
    CommitOutcomeUnknown {
        /// The target table (quoted).
        table: String,
        /// The run id.
        run: String,
        /// What failed.
        reason: String,
    },
    /// A scan read a value its column's Arrow type cannot hold (a `numeric` `NaN` or infinity for a
    /// `Decimal128` column), as [`PgSource`](etlkit_postgres::PgSource) refuses it too.
    #[error("reading {table}, column `{column}`: value {value} {reason}")]
    InvalidValue {
        /// The table (quoted).
        table: String,
        /// The column.
        column: String,
        /// The value as PostgreSQL sent it.
        value: String,
        /// Why it was refused.
        reason: String,
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

//! [`GraphJobError`], the one error type of this crate.

use etlkit_core::Stage;

use crate::job::Phase;

/// Result alias of this crate.
pub type Result<T, E = GraphJobError> = std::result::Result<T, E>;

/// Errors of the graph job. Converts into [`etlkit_core::Error::Stage`] (stage `Sink`, name
/// `graph-job`), keeping this error (and its chain) as the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraphJobError {
    /// The job's configuration or model is invalid.
    #[error("invalid graph job: `{field}` {reason}")]
    InvalidConfig {
        /// The offending field, e.g. `model.entities[2]`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Opening the source for a pass failed.
    #[error("{phase} pass `{pass}`: opening the source failed")]
    Source {
        /// The phase.
        phase: Phase,
        /// The pass name.
        pass: String,
        /// The source's error.
        #[source]
        source: etlkit_core::Error,
    },
    /// A pass (its pipeline: source, transforms, graph sink) failed.
    #[error("{phase} pass `{pass}` failed")]
    Pass {
        /// The phase.
        phase: Phase,
        /// The pass name.
        pass: String,
        /// The pipeline's error.
        #[source]
        source: etlkit_core::Error,
    },
    /// Graph work outside a pass (phase 0 constraints, the mapping) failed.
    #[error("graph sink error")]
    Graph(#[from] etlkit_neo4j::GraphError),
}

impl GraphJobError {
    /// Whether running the job again can succeed (a dropped connection, retries exhausted on
    /// transient conflicts). Bad input and configuration are not retryable.
    pub fn is_retryable(&self) -> bool {
        match self {
            GraphJobError::Source { source, .. } | GraphJobError::Pass { source, .. } => {
                source.is_retryable()
            }
            GraphJobError::Graph(e) => e.is_retryable(),
            GraphJobError::InvalidConfig { .. } => false,
        }
    }

    pub(crate) fn config(field: impl Into<String>, reason: impl Into<String>) -> Self {
        GraphJobError::InvalidConfig { field: field.into(), reason: reason.into() }
    }
}

impl From<GraphJobError> for etlkit_core::Error {
    fn from(e: GraphJobError) -> Self {
        let retryable = e.is_retryable();
        etlkit_core::Error::stage(Stage::Sink, "graph-job", retryable, e)
    }
}

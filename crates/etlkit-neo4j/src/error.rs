//! [`GraphError`], the one error type of this crate.

use etlkit_core::Stage;

/// Result alias of this crate.
pub type Result<T, E = GraphError> = std::result::Result<T, E>;

/// Everything that can go wrong in `etlkit-neo4j`.
///
/// [`GraphError::is_retryable`] separates transient failures (a `Neo.TransientError.*` from the server,
/// such as a deadlock reported at commit, or a lost connection) from the rest (bad data, bad mappings,
/// client errors such as a Cypher syntax error or a constraint violation).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// A configuration value is out of range.
    #[error("invalid configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A label, relationship type or property name that cannot be used.
    #[error("invalid {what} {name:?}: {reason}")]
    InvalidIdentifier {
        /// `label`, `relationship type`, `property` or `column`.
        what: &'static str,
        /// The identifier as given.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// A mapping names a column the batch does not have.
    #[error("{spec}: column `{column}` is not in the input (columns: {available})")]
    MissingColumn {
        /// The mapping, e.g. `(:Learner)` or `[:HAS_SKILL]`.
        spec: String,
        /// The missing column.
        column: String,
        /// The columns the batch has, comma-separated.
        available: String,
    },
    /// A column type this crate cannot send as a Bolt value.
    #[error("{spec}: column `{column}` has type {data_type}, which cannot be sent as a graph property")]
    UnsupportedType {
        /// The mapping.
        spec: String,
        /// The column.
        column: String,
        /// The Arrow type, rendered.
        data_type: String,
    },
    /// A value cannot be sent (e.g. an unsigned integer above `i64::MAX`).
    #[error("{spec}: row {row}, column `{column}`: value {value} {reason}")]
    InvalidValue {
        /// The mapping.
        spec: String,
        /// 1-based row number within the batch handed to the sink.
        row: usize,
        /// The column.
        column: String,
        /// The value, rendered.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key (or relationship identity) column is NULL (or a floating-point NaN, which equals
    /// nothing) and the configuration says to fail.
    #[error(
        "{spec}: {}, column `{column}` is NULL (or NaN), but it is a key: such keys are never merged (set `on_null_key: NullKeyPolicy::Reject` to send such rows to the reject output)",
        origin.clone().unwrap_or_else(|| format!("row {row}"))
    )]
    NullKey {
        /// The mapping.
        spec: String,
        /// Where the input row came from (`file:line`), when known: what the message names.
        origin: Option<String>,
        /// 1-based row number within the batch handed to the sink.
        row: usize,
        /// The key column.
        column: String,
    },
    /// One row alone is larger than `max_message_bytes`, so no batch can carry it.
    #[error("{spec}: row {row} needs about {bytes} bytes on the wire, more than max_message_bytes = {cap}")]
    RowTooLarge {
        /// The mapping.
        spec: String,
        /// 1-based row number within the batch handed to the sink.
        row: usize,
        /// Estimated encoded size of the row.
        bytes: usize,
        /// The configured cap.
        cap: usize,
    },
    /// Relationship rows that matched more than one start node, end node or (`MERGE`) existing
    /// relationship: `matched` relationships were written for `rows` rows. An endpoint key that is
    /// not unique in the graph (no uniqueness constraint on it), or a relationship stored twice.
    /// The transaction was rolled back, so no row was fanned out to several nodes.
    #[error(
        "{spec}: {rows} relationship rows matched {matched} relationships: an endpoint's key is not unique in the graph (or the relationship exists twice); the transaction was rolled back"
    )]
    AmbiguousEndpoints {
        /// The mapping.
        spec: String,
        /// Rows in the failed transaction.
        rows: usize,
        /// Relationships the rows matched (more than `rows`).
        matched: usize,
    },
    /// Relationship rows whose start or end node does not exist (the `MATCH` found nothing), so no
    /// relationship was created for them. The transaction was rolled back. The message names the
    /// first few missing nodes (label, key property and value, row); `nodes` has them all.
    #[error(
        "{spec}: {missing} of {rows} relationship rows found no start or end node{}; write the nodes first (e.g. in an earlier phase); the transaction was rolled back",
        list_missing(nodes)
    )]
    MissingEndpoints {
        /// The mapping.
        spec: String,
        /// Rows in the failed transaction.
        rows: usize,
        /// Rows without both endpoints.
        missing: usize,
        /// Every distinct endpoint node of the transaction's rows that does not exist, in row
        /// order (empty if looking them up failed too).
        nodes: Vec<MissingNode>,
    },
    /// The server or the driver failed while doing `action`.
    #[error("{spec}: {action} failed")]
    Bolt {
        /// The mapping or `schema`.
        spec: String,
        /// What was being done, e.g. `COMMIT` or `UNWIND batch`.
        action: &'static str,
        /// The driver's error (for server failures: a `neo4rs::Error::Neo4j` with the status code).
        #[source]
        source: neo4rs::Error,
    },
    /// A transient failure kept coming back until `max_attempts` was used up.
    #[error("{spec}: gave up after {attempts} attempts")]
    RetriesExhausted {
        /// The mapping.
        spec: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        #[source]
        source: Box<GraphError>,
    },
    /// The reject output refused a row.
    #[error("the reject output failed")]
    Reject(#[source] etlkit_core::Error),
    /// An Arrow operation (filtering rows) failed.
    #[error("arrow error")]
    Arrow(#[from] arrow_schema::ArrowError),
}

/// A relationship endpoint that was not found: which end, the node's labels and key, and the rows
/// that needed it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MissingNode {
    /// `"start"` or `"end"`.
    pub end: &'static str,
    /// The endpoint's labels.
    pub labels: Vec<String>,
    /// Key property names with the values looked for, as Cypher literals (`"Acme"`, `42`,
    /// `date("2024-01-31")`).
    pub key: Vec<(String, String)>,
    /// 1-based row (in the batch handed to the writer) of the first row that needs this node.
    pub row: usize,
    /// Where that row came from (`file:line`), when the pipeline knows it: what the message names.
    pub origin: Option<String>,
    /// How many rows of the transaction need it.
    pub rows: usize,
}

/// `(:Company {name: "Acme"}) (end node of row 2 and 1 more row)`.
impl std::fmt::Display for MissingNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "(:{} {{", self.labels.join(":"))?;
        for (i, (name, value)) in self.key.iter().enumerate() {
            write!(f, "{}{name}: {value}", if i == 0 { "" } else { ", " })?;
        }
        match &self.origin {
            Some(o) => write!(f, "}}) ({} node of {o}", self.end)?,
            None => write!(f, "}}) ({} node of row {}", self.end, self.row)?,
        }
        match self.rows {
            0 | 1 => f.write_str(")"),
            2 => f.write_str(" and 1 more row)"),
            n => write!(f, " and {} more rows)", n - 1),
        }
    }
}

/// `: no (:A {k: 1}) (...), no ... and 3 more`, the first 5 of `nodes`.
fn list_missing(nodes: &[MissingNode]) -> String {
    const SHOWN: usize = 5;
    let mut s = String::new();
    for (i, n) in nodes.iter().take(SHOWN).enumerate() {
        s.push_str(if i == 0 { ": no " } else { ", no " });
        s.push_str(&n.to_string());
    }
    if nodes.len() > SHOWN {
        s.push_str(&format!(" and {} more missing nodes", nodes.len() - SHOWN));
    }
    s
}

impl GraphError {
    /// Whether running the same work again can succeed: server `Neo.TransientError.*` codes (deadlocks,
    /// lock timeouts, a database briefly unavailable) and lost connections. Client errors (syntax, schema,
    /// constraint violations), bad input and configuration errors are never retryable. Exhausted retries
    /// stay retryable (a later run may succeed).
    pub fn is_retryable(&self) -> bool {
        match self {
            GraphError::Bolt { source, .. } => bolt_is_retryable(source),
            GraphError::RetriesExhausted { source, .. } => source.is_retryable(),
            GraphError::Reject(e) => e.is_retryable(),
            _ => false,
        }
    }

    /// Whether this is a server `Neo.TransientError.*` — the only kind the writer retries itself.
    pub fn is_transient(&self) -> bool {
        match self {
            GraphError::Bolt { source: neo4rs::Error::Neo4j(e), .. } => is_transient_code(e.code()),
            _ => false,
        }
    }

    /// The server status code (e.g. `Neo.TransientError.Transaction.DeadlockDetected`), when the server
    /// reported one.
    pub fn server_code(&self) -> Option<&str> {
        match self {
            GraphError::Bolt { source: neo4rs::Error::Neo4j(e), .. } => Some(e.code()),
            GraphError::RetriesExhausted { source, .. } => source.server_code(),
            _ => None,
        }
    }
}

/// Whether a server status code is a transient error (`Neo.TransientError.*`). neo4rs already rewrites
/// the two codes Neo4j re-classified as client errors (`Transaction.Terminated`,
/// `Transaction.LockClientStopped`).
pub fn is_transient_code(code: &str) -> bool {
    code.starts_with("Neo.TransientError.")
}

fn bolt_is_retryable(e: &neo4rs::Error) -> bool {
    match e {
        neo4rs::Error::Neo4j(e) => is_transient_code(e.code()),
        neo4rs::Error::IOError { .. }
        | neo4rs::Error::ConnectionError
        | neo4rs::Error::ConnectionTimedOut
        | neo4rs::Error::ConnectionClosed(_)
        | neo4rs::Error::RequestIgnoredError
        | neo4rs::Error::ServerUnavailableError(_) => true,
        _ => false,
    }
}

impl From<GraphError> for etlkit_core::Error {
    fn from(e: GraphError) -> Self {
        let retryable = e.is_retryable();
        etlkit_core::Error::stage(Stage::Sink, "neo4j", retryable, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_endpoints_name_the_first_five_nodes() {
        let node = |i: usize| MissingNode {
            end: "end",
            labels: vec!["Course".into()],
            key: vec![("org".into(), "\"uni\"".into()), ("code".into(), i.to_string())],
            row: i,
            origin: None,
            rows: if i == 1 { 3 } else { 1 },
        };
        let e = GraphError::MissingEndpoints {
            spec: "[:TAKES]".into(),
            rows: 10,
            missing: 8,
            nodes: (1..=7).map(node).collect(),
        };
        let text = e.to_string();
        assert!(
            text.starts_with(
                "[:TAKES]: 8 of 10 relationship rows found no start or end node: no (:Course {org: \"uni\", code: 1}) (end node of row 1 and 2 more rows), no (:Course {org: \"uni\", code: 2}) (end node of row 2), "
            ),
            "{text}"
        );
        assert!(text.contains("code: 5}") && !text.contains("code: 6}"), "{text}");
        assert!(text.contains(" and 2 more missing nodes; write the nodes first"), "{text}");
        assert!(!e.is_retryable());
    }

    #[test]
    fn transient_codes_are_recognised() {
        assert!(is_transient_code("Neo.TransientError.Transaction.DeadlockDetected"));
        assert!(is_transient_code("Neo.TransientError.General.DatabaseUnavailable"));
        assert!(!is_transient_code("Neo.ClientError.Schema.ConstraintValidationFailed"));
        assert!(!is_transient_code("Neo.ClientError.Statement.SyntaxError"));
        assert!(!is_transient_code("Neo.DatabaseError.General.UnknownError"));
    }

    #[test]
    fn config_errors_are_not_retryable_and_convert_to_sink_errors() {
        let e = GraphError::InvalidConfig { field: "workers", reason: "must be at least 1".into() };
        assert!(!e.is_retryable());
        let core: etlkit_core::Error = e.into();
        assert!(!core.is_retryable());
        assert!(core.find_source::<GraphError>().is_some());
        let io =
            GraphError::Bolt { spec: "x".into(), action: "COMMIT", source: neo4rs::Error::ConnectionError };
        assert!(io.is_retryable());
        assert!(!io.is_transient());
    }
}

//! [`GraphConfig`]: connection, batching, parallelism and retry settings, with documented defaults.

use std::time::Duration;

use crate::error::{GraphError, Result};

/// What to do with a row whose key (or relationship endpoint / identity) column is NULL. Such a row is
/// never merged: `MERGE (n:L {id: null})` is an error on Neo4j and would create a key-less node
/// elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum NullKeyPolicy {
    /// Fail the write with [`GraphError::NullKey`] naming the mapping, row and column. Default.
    #[default]
    Fail,
    /// Send the row to [`Context::reject`](etlkit_core::Context::reject) and write the others.
    Reject,
}

/// Configuration of a [`GraphWriter`](crate::GraphWriter) (and so of [`GraphSink`](crate::GraphSink)
/// and [`TwoPhaseLoader`](crate::TwoPhaseLoader)). A plain struct: build it with
/// `GraphConfig { uri: ..., ..Default::default() }`; [`validate`](Self::validate) is called on connect.
///
/// `Debug` and `Display` never show the password: `Debug` prints it as `"***"` (empty stays empty),
/// and both print the URI through [`GraphConfig::redacted_uri`].
#[derive(Clone, PartialEq)]
pub struct GraphConfig {
    /// Bolt URI, e.g. `bolt://127.0.0.1:7687`. Default: `bolt://127.0.0.1:7687`. Credentials inside
    /// it (`bolt://user:pw@host`) are ignored by the driver: use `user` and `password`.
    pub uri: String,
    /// User name. Default: `neo4j`.
    pub user: String,
    /// Password. Default: empty. Never printed (see the type's docs).
    pub password: String,
    /// Database every query and transaction runs in — always sent explicitly. Default: `neo4j`.
    pub database: String,
    /// Rows per `UNWIND` transaction: every batch handed to the writer is cut into transactions of at
    /// most this many rows. Default: 5000.
    pub batch_rows: usize,
    /// Upper bound on the estimated encoded size of one transaction's `$rows` parameter, in bytes. A
    /// chunk of `batch_rows` rows that would exceed it is split into smaller transactions (never
    /// failed); only a single row larger than this is an error. Keep it well below the server's message
    /// limit (ArcadeDB: 16 MiB). Default: 8 MiB.
    pub max_message_bytes: usize,
    /// Concurrent write transactions (and Bolt connections, plus one for schema work). Node rows are
    /// partitioned by key hash into `workers` partitions written in parallel; relationship rows too,
    /// by the key the [`RelSpec::partition`](crate::RelSpec::partition) names. Default: 4.
    pub workers: usize,
    /// Attempts per transaction (first try included) on `Neo.TransientError.*` before giving up with
    /// [`GraphError::RetriesExhausted`]. Default: 10.
    pub max_attempts: u32,
    /// Back-off before the first retry; doubles per attempt up to `backoff_max`, with full jitter
    /// (a random wait between half and all of it). Default: 20 ms.
    pub backoff_initial: Duration,
    /// Largest back-off between attempts. Default: 2 s.
    pub backoff_max: Duration,
    /// How long the client waits for any one server response (neo4rs `connection_timeout`). A batch
    /// running longer server-side fails client-side, so size it with `batch_rows`. Default: 300 s.
    pub response_timeout: Duration,
    /// What to do with NULL keys. Default: [`NullKeyPolicy::Fail`].
    pub on_null_key: NullKeyPolicy,
}

impl Default for GraphConfig {
    fn default() -> Self {
        GraphConfig {
            uri: "bolt://127.0.0.1:7687".to_owned(),
            user: "neo4j".to_owned(),
            password: String::new(),
            database: "neo4j".to_owned(),
            batch_rows: 5000,
            max_message_bytes: 8 << 20,
            workers: 4,
            max_attempts: 10,
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_secs(2),
            response_timeout: Duration::from_secs(300),
            on_null_key: NullKeyPolicy::Fail,
        }
    }
}

impl std::fmt::Debug for GraphConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let GraphConfig {
            uri,
            user,
            password,
            database,
            batch_rows,
            max_message_bytes,
            workers,
            max_attempts,
            backoff_initial,
            backoff_max,
            response_timeout,
            on_null_key,
        } = self;
        f.debug_struct("GraphConfig")
            .field("uri", &redact_uri(uri))
            .field("user", user)
            .field("password", &if password.is_empty() { "" } else { "***" })
            .field("database", database)
            .field("batch_rows", batch_rows)
            .field("max_message_bytes", max_message_bytes)
            .field("workers", workers)
            .field("max_attempts", max_attempts)
            .field("backoff_initial", backoff_initial)
            .field("backoff_max", backoff_max)
            .field("response_timeout", response_timeout)
            .field("on_null_key", on_null_key)
            .finish()
    }
}

/// `bolt://127.0.0.1:7687 (user neo4j, database neo4j)`: where the writer connects, without secrets.
impl std::fmt::Display for GraphConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (user {}, database {})", self.redacted_uri(), self.user, self.database)
    }
}

impl GraphConfig {
    /// The URI with any password in it (`bolt://user:pw@host`, or a `password=` query parameter)
    /// replaced by `***`: safe to log.
    pub fn redacted_uri(&self) -> String {
        redact_uri(&self.uri)
    }

    /// Checks every field; returns [`GraphError::InvalidConfig`] naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &'static str, reason: &str| {
            Err(GraphError::InvalidConfig { field, reason: reason.to_owned() })
        };
        if self.uri.is_empty() {
            return bad("uri", "must not be empty");
        }
        if self.database.is_empty() {
            return bad("database", "must not be empty (always name the database)");
        }
        if self.batch_rows == 0 {
            return bad("batch_rows", "must be at least 1");
        }
        if self.batch_rows > 1_000_000 {
            return bad("batch_rows", "must be at most 1,000,000 (server list limits)");
        }
        if self.max_message_bytes < 1024 {
            return bad("max_message_bytes", "must be at least 1024");
        }
        if self.workers == 0 {
            return bad("workers", "must be at least 1");
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1");
        }
        if self.backoff_max < self.backoff_initial {
            return bad("backoff_max", "must not be below backoff_initial");
        }
        if self.response_timeout.is_zero() {
            return bad("response_timeout", "must be positive");
        }
        Ok(())
    }
}

/// Replaces the password of a `scheme://user:password@host/...` URI and any `password=` query
/// parameter with `***` (the same rule as `etlkit-postgres`'s `DatabaseUrl`).
fn redact_uri(uri: &str) -> String {
    let mut out = uri.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..].find(['/', '?', '#']).map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    if let Some(p) = out.find("password=") {
        let start = p + "password=".len();
        let end = out[start..].find(['&', '#']).map_or(out.len(), |i| start + i);
        out.replace_range(start..end, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let cfg = GraphConfig {
            uri: "bolt://bob:s3cr3t@db:7687?password=other".into(),
            password: "hunter2".into(),
            ..Default::default()
        };
        let shown = format!("{cfg:?} {cfg:#?} {cfg}");
        for secret in ["s3cr3t", "other", "hunter2"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert_eq!(cfg.redacted_uri(), "bolt://bob:***@db:7687?password=***");
        assert_eq!(redact_uri("bolt://bob@db:7687"), "bolt://bob@db:7687");
        assert_eq!(redact_uri("127.0.0.1:7687"), "127.0.0.1:7687");
        assert_eq!(GraphConfig::default().to_string(), "bolt://127.0.0.1:7687 (user neo4j, database neo4j)");
        assert!(format!("{:?}", GraphConfig::default()).contains("password: \"\""));
    }

    #[test]
    fn defaults_validate_and_bad_fields_are_named() {
        GraphConfig::default().validate().unwrap();
        for (cfg, field) in [
            (GraphConfig { batch_rows: 0, ..Default::default() }, "batch_rows"),
            (GraphConfig { workers: 0, ..Default::default() }, "workers"),
            (GraphConfig { max_attempts: 0, ..Default::default() }, "max_attempts"),
            (GraphConfig { max_message_bytes: 10, ..Default::default() }, "max_message_bytes"),
            (GraphConfig { database: String::new(), ..Default::default() }, "database"),
        ] {
            match cfg.validate() {
                Err(GraphError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}

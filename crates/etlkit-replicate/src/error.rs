//! [`ReplicationError`], the one error type of this crate.

use std::time::Duration;

use etlkit_core::Stage;
use etlkit_postgres::{PgError, RetryPolicy};

use crate::report::ReplicationReport;

/// Result alias of this crate.
pub type Result<T, E = ReplicationError> = std::result::Result<T, E>;

/// Everything that can go wrong in a replication.
///
/// Database failures (connecting, catalog queries, the COPY pipe, the ledger) are
/// [`ReplicationError::Postgres`] with `etlkit-postgres`'s [`PgError`] as the source, which names
/// the action and the table and keeps the driver's error. [`ReplicationError::is_retryable`] says
/// whether running again (which resumes) can help; the other variants describe the schema or the
/// configuration, not a transient condition.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicationError {
    /// A configuration value is out of range.
    #[error("invalid configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A database operation failed (the [`PgError`] says which and on what).
    #[error("{0}")]
    Postgres(#[from] PgError),
    /// A selected table does not exist in the source.
    #[error("table {table} does not exist in the source")]
    TableNotFound {
        /// The table (quoted).
        table: String,
    },
    /// A table that cannot be replicated.
    #[error("table {table} cannot be replicated: {reason}")]
    UnsupportedTable {
        /// The table (quoted).
        table: String,
        /// Why.
        reason: String,
    },
    /// Row-level security applies to these source tables for the role the run connects as: a copy
    /// would read only the rows the policies let that role see, and verification (same role) would
    /// agree with it. Refused before anything is written. Every source session also runs with
    /// `row_security = off`, so a policy that starts applying during the run fails the read instead of
    /// filtering it.
    #[error(
        "row-level security hides rows of {} from the source role, so a copy would be incomplete: \
         connect to the source as a role with BYPASSRLS (or a superuser), or as the owner of the \
         tables if they do not FORCE ROW LEVEL SECURITY",
        tables.join(", ")
    )]
    RowSecurity {
        /// The tables (quoted).
        tables: Vec<String>,
    },
    /// Another session truncated, rewrote, dropped or exclusively locked a source table around the
    /// run's snapshot, so the run cannot read it consistently (or would wait behind it). Nothing of
    /// this table was written; running again (which resumes) can succeed once that session is done.
    #[error("source table {table}: {reason}")]
    SourceBusy {
        /// The table (quoted).
        table: String,
        /// What happened and what to do.
        reason: String,
    },
    /// The source's binary COPY stream of a table is malformed, or the target loaded a different
    /// number of rows than the source sent.
    #[error("copying {table}: {reason}")]
    CopyStream {
        /// The table (quoted).
        table: String,
        /// What was wrong.
        reason: String,
    },
    /// The selected tables form a foreign-key cycle and the target already enforces one of its
    /// foreign keys, so no table of the cycle can be loaded first. Nothing was written.
    #[error(
        "foreign-key cycle between tables {}: the target already enforces {constraint}; drop that \
         constraint in the target (replication re-creates it after the data) or replicate into tables \
         without it",
        tables.join(", ")
    )]
    ForeignKeyCycle {
        /// The tables of the cycle (quoted).
        tables: Vec<String>,
        /// The enforced constraint (quoted table and constraint name).
        constraint: String,
    },
    /// A table to copy cannot be emptied: rows of tables that this run does not copy reference it.
    /// Nothing was written.
    #[error(
        "table {table} cannot be emptied to copy it: rows of {} (not copied by this run) reference it; \
         select those tables too (they are then emptied first and copied again) or empty them",
        referenced_by.join(", ")
    )]
    StillReferenced {
        /// The table (quoted).
        table: String,
        /// The referencing tables that hold referencing rows (quoted).
        referenced_by: Vec<String>,
    },
    /// A post-data statement (index, key or constraint) failed, after the retries
    /// [`ReplicateConfig::retry`](crate::ReplicateConfig::retry) allows for a retryable error.
    #[error(transparent)]
    PostData(Box<PostDataFailed>),
    /// Verification found tables whose row count or checksum differs between source and target.
    /// Everything else is done and committed (the ledger records these tables as finished, so a
    /// resumed run skips them while their source is unchanged): copy them again with
    /// [`ReplicateConfig::resume`](crate::ReplicateConfig::resume) `false` and
    /// [`ReplicateConfig::tables`](crate::ReplicateConfig::tables) set to them (and the tables that
    /// reference them).
    #[error(
        "verification failed: {} differ{} between source and target: {}",
        if tables.len() == 1 { "1 table".to_owned() } else { format!("{} tables", tables.len()) },
        if tables.len() == 1 { "s" } else { "" },
        tables.join(", ")
    )]
    VerificationFailed {
        /// The tables that differ (quoted), in plan order.
        tables: Vec<String>,
        /// The whole run's report, with each table's [`Verification`](crate::Verification).
        report: Box<ReplicationReport>,
    },
}

/// The details of [`ReplicationError::PostData`] (boxed: they keep the error small).
#[derive(Debug, thiserror::Error)]
#[error("creating an index or constraint in the target failed: {sql}")]
#[non_exhaustive]
pub struct PostDataFailed {
    /// The statement.
    pub sql: String,
    /// The database error: a [`PgError::Database`] whose `table` names the object (the quoted
    /// index or constraint name, `on` the quoted table).
    #[source]
    pub source: PgError,
}

impl ReplicationError {
    /// Whether running the replication again (which resumes) can succeed: the database error
    /// behind it is transient ([`PgError::is_retryable`]: a lost connection, a deadlock, a
    /// serialization failure, a server shutdown), or another session's lock or rewrite of a source
    /// table got in the way ([`ReplicationError::SourceBusy`]). Schema and configuration errors are
    /// not.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ReplicationError::SourceBusy { .. })
            || self.postgres().is_some_and(PgError::is_retryable)
    }

    /// The database error behind this one, if any.
    pub fn postgres(&self) -> Option<&PgError> {
        match self {
            ReplicationError::Postgres(e) => Some(e),
            ReplicationError::PostData(failed) => Some(&failed.source),
            _ => None,
        }
    }

    /// Converts into an [`etlkit_core::Error`] for the given stage and stage name.
    pub fn into_stage(self, stage: Stage, name: impl Into<String>) -> etlkit_core::Error {
        let retryable = self.is_retryable();
        etlkit_core::Error::stage(stage, name, retryable, self)
    }

    /// After `retries_so_far` retries of a unit of work failed with this error: the wait before
    /// the next try, as `policy` decides ([`RetryPolicy::next_retry`] on the database error), or
    /// `None`.
    pub(crate) fn next_retry(&self, policy: &RetryPolicy, retries_so_far: u32) -> Option<Duration> {
        policy.next_retry(retries_so_far, self.postgres()?)
    }
}

impl From<ReplicationError> for etlkit_core::Error {
    fn from(e: ReplicationError) -> Self {
        e.into_stage(Stage::Sink, "replicate")
    }
}

/// A [`PgError::Database`] for `action` on `table`.
pub(crate) fn db(action: &'static str, table: impl Into<String>, source: sqlx::Error) -> ReplicationError {
    ReplicationError::Postgres(PgError::Database { action, table: table.into(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_errors_keep_their_chain_and_retryability() {
        let lost = db(
            "COPY FROM STDIN into the target",
            "\"public\".\"t\"",
            sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset")),
        );
        assert!(lost.is_retryable());
        let p = RetryPolicy::default();
        assert_eq!(lost.next_retry(&p, 0), Some(p.initial_backoff));
        assert_eq!(lost.next_retry(&p, p.max_retries), None);
        let core: etlkit_core::Error = lost.into();
        assert!(core.is_retryable());
        assert!(core.find_source::<ReplicationError>().is_some());
        assert!(core.find_source::<PgError>().is_some());
        assert!(core.find_source::<sqlx::Error>().is_some());
        let report = core.report().to_string();
        assert_eq!(
            report
                .matches("PostgreSQL error while COPY FROM STDIN into the target on \"public\".\"t\"")
                .count(),
            1,
            "{report}"
        );

        let post = ReplicationError::PostData(Box::new(PostDataFailed {
            sql: "ALTER TABLE t VALIDATE CONSTRAINT k".into(),
            source: PgError::Database {
                action: "creating an index or constraint",
                table: "\"k\" on \"t\"".into(),
                source: sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset")),
            },
        }));
        assert!(post.is_retryable());
        let core: etlkit_core::Error = post.into();
        assert!(core.find_source::<PgError>().is_some());
        let report = core.report().to_string();
        assert!(report.contains("failed: ALTER TABLE t VALIDATE CONSTRAINT k: PostgreSQL error while creating an index or constraint on \"k\" on \"t\""), "{report}");

        let cycle = ReplicationError::ForeignKeyCycle {
            tables: vec!["a".into(), "b".into()],
            constraint: "k".into(),
        };
        assert!(!cycle.is_retryable());
        assert_eq!(cycle.next_retry(&p, 0), None);
        let core: etlkit_core::Error = cycle.into();
        assert!(!core.is_retryable());
    }
}

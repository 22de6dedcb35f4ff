//! [`ReplicateConfig`].

use std::collections::HashSet;
use std::time::Duration;

use etlkit_postgres::{DatabaseUrl, PgError, RetryPolicy, TableRef};

use crate::error::{ReplicationError, Result};

/// Configuration of [`replicate`](crate::replicate()). Plain struct; start from `Default` and set
/// what you need.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicateConfig {
    /// The database to copy from. Default: empty (must be set).
    pub source: DatabaseUrl,
    /// The database to copy into. Default: empty (must be set).
    pub target: DatabaseUrl,
    /// The schema to replicate (same name in the target). Default: `public`.
    pub schema: String,
    /// Tables to replicate; empty means every ordinary table of the schema. Default: empty.
    pub tables: Vec<String>,
    /// Tables copied at the same time (each uses one source and one target connection), and
    /// statements run at the same time in the post-data and verify phases. Default: 4.
    pub workers: usize,
    /// Compare row counts and content checksums of every selected table at the end. Default: false.
    pub verify: bool,
    /// Skip tables the ledger records as finished, unless their source changed since (checked by
    /// reading each of them from the source once; see the crate docs). `false` empties and copies
    /// every selected table again (a full re-sync). Default: true.
    pub resume: bool,
    /// Minimum time between two progress reports of one table. Default: 5 s.
    pub progress_interval: Duration,
    /// Bytes of the source's COPY stream per `CopyData` message to the target (8 KiB ..= 64 MiB).
    /// Default: 1 MiB.
    pub chunk_bytes: usize,
    /// How long a source session waits for a lock on a source table. The run locks every selected
    /// table in `ACCESS SHARE` mode right after taking its snapshot and holds the locks to the end
    /// (as `pg_dump` does), so a `TRUNCATE` or a rewriting `ALTER TABLE` on the source waits for the
    /// run instead of emptying the table under the snapshot; each table's copy, check and
    /// verification locks it again on its own session. A lock not granted in time (another session
    /// holds, or queues for, an exclusive lock on the table) fails the run with
    /// [`ReplicationError::SourceBusy`](crate::ReplicationError::SourceBusy) naming the table, rather
    /// than waiting forever. 1 ms ..= 24 days. Default: 60 s.
    pub lock_timeout: Duration,
    /// How often a unit of work that failed with a retryable error (a lost connection, a deadlock,
    /// a serialization failure, a server shutdown: [`PgError::is_retryable`]) is tried again, and
    /// the back-off between tries. The units: a table's copy (a new target transaction on new
    /// connections, reading the same snapshot: emptied and loaded again), a resumed run's check of
    /// a finished table against the source, one post-data statement (deadlocks between concurrent
    /// `ALTER TABLE`s), one table's verification. [`RetryPolicy::NONE`] fails the run at the first
    /// error. Default: 5 retries, waiting 100 ms, 200 ms, 400 ms, 800 ms and 1.6 s
    /// (`RetryPolicy { max_retries: 5, initial_backoff: 100 ms, max_backoff: 5 s }`).
    pub retry: RetryPolicy,
    /// The ledger table in the target (created when missing, with its schema). It lives in a schema
    /// of its own, so the replicated schema holds nothing but the replicated tables. A source table
    /// of the same schema and name (a source that was itself a replication target) is never
    /// replicated. Default: `etlkit.replication_ledger`.
    pub ledger: TableRef,
    /// `application_name` of every session, to find them in `pg_stat_activity`.
    /// Default: `etlkit-replicate`.
    pub application_name: String,
}

/// The default of [`ReplicateConfig::retry`].
const DEFAULT_RETRY: RetryPolicy = RetryPolicy {
    max_retries: 5,
    initial_backoff: Duration::from_millis(100),
    max_backoff: Duration::from_secs(5),
};

impl Default for ReplicateConfig {
    fn default() -> Self {
        ReplicateConfig {
            source: DatabaseUrl::new(""),
            target: DatabaseUrl::new(""),
            schema: "public".into(),
            tables: Vec::new(),
            workers: 4,
            verify: false,
            resume: true,
            progress_interval: Duration::from_secs(5),
            chunk_bytes: 1 << 20,
            lock_timeout: Duration::from_secs(60),
            retry: DEFAULT_RETRY,
            ledger: TableRef::qualified("etlkit", "replication_ledger"),
            application_name: "etlkit-replicate".into(),
        }
    }
}

impl ReplicateConfig {
    /// Checks every field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| Err(ReplicationError::InvalidConfig { field, reason: reason.into() });
        if self.source.expose().trim().is_empty() {
            return bad("source", "must be set");
        }
        if self.target.expose().trim().is_empty() {
            return bad("target", "must be set");
        }
        if self.schema.is_empty() {
            return bad("schema", "must not be empty");
        }
        if self.tables.iter().any(String::is_empty) {
            return bad("tables", "must not contain empty names");
        }
        if self.tables.iter().collect::<HashSet<_>>().len() != self.tables.len() {
            return bad("tables", "must not name a table twice");
        }
        if !(1..=256).contains(&self.workers) {
            return bad("workers", "must be between 1 and 256");
        }
        if self.progress_interval.is_zero() {
            return bad("progress_interval", "must be positive");
        }
        check_chunk_bytes(self.chunk_bytes)?;
        if !(Duration::from_millis(1)..=Duration::from_secs(24 * 86_400)).contains(&self.lock_timeout) {
            return bad("lock_timeout", "must be between 1 ms and 24 days");
        }
        match self.retry.validate() {
            Ok(()) => {}
            Err(PgError::InvalidConfig { field, reason }) => {
                return Err(ReplicationError::InvalidConfig { field, reason });
            }
            Err(e) => return Err(e.into()),
        }
        if self.ledger.name.is_empty() {
            return bad("ledger", "table name must not be empty");
        }
        if self.application_name.is_empty() {
            return bad("application_name", "must not be empty");
        }
        Ok(())
    }
}

/// `chunk_bytes` is 8 KiB ..= 64 MiB.
pub(crate) fn check_chunk_bytes(chunk_bytes: usize) -> Result<()> {
    if !(8 << 10..=64 << 20).contains(&chunk_bytes) {
        return Err(ReplicationError::InvalidConfig {
            field: "chunk_bytes",
            reason: "must be between 8 KiB and 64 MiB".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_once_urls_are_set_and_bad_values_are_named() {
        assert!(matches!(
            ReplicateConfig::default().validate(),
            Err(ReplicationError::InvalidConfig { field: "source", .. })
        ));
        let ok = ReplicateConfig {
            source: DatabaseUrl::new("postgres://a@h/s"),
            target: DatabaseUrl::new("postgres://a@h/t"),
            ..Default::default()
        };
        ok.validate().unwrap();
        let slow_first = RetryPolicy { initial_backoff: Duration::from_secs(10), ..DEFAULT_RETRY };
        for (cfg, field) in [
            (ReplicateConfig { workers: 0, ..ok.clone() }, "workers"),
            (ReplicateConfig { chunk_bytes: 100, ..ok.clone() }, "chunk_bytes"),
            (ReplicateConfig { progress_interval: Duration::ZERO, ..ok.clone() }, "progress_interval"),
            (ReplicateConfig { tables: vec!["a".into(), "a".into()], ..ok.clone() }, "tables"),
            (ReplicateConfig { schema: String::new(), ..ok.clone() }, "schema"),
            (ReplicateConfig { retry: slow_first, ..ok.clone() }, "retry.max_backoff"),
            (ReplicateConfig { lock_timeout: Duration::ZERO, ..ok.clone() }, "lock_timeout"),
        ] {
            match cfg.validate() {
                Err(ReplicationError::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn default_retry_waits_like_the_former_post_data_loop() {
        let r = ReplicateConfig::default().retry;
        let waits: Vec<Duration> = (1..=r.max_retries).map(|n| r.backoff(n)).collect();
        let ms = Duration::from_millis;
        assert_eq!(waits, [ms(100), ms(200), ms(400), ms(800), ms(1600)]);
    }
}

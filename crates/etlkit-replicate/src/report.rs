//! What a run reports: [`TableProgress`] while it copies, [`ReplicationReport`] at the end.

use std::time::Duration;

use crate::verify::Checksum;

/// Progress of one table, reported at most every [`ReplicateConfig::progress_interval`](crate::ReplicateConfig::progress_interval) while its
/// data moves, and once when it is done.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TableProgress<'a> {
    /// The table name (unquoted).
    pub table: &'a str,
    /// Rows sent to the target so far.
    pub rows: u64,
    /// COPY bytes sent so far.
    pub bytes: u64,
    /// Time since the table started.
    pub elapsed: Duration,
    /// Whether the table is committed.
    pub done: bool,
}

impl TableProgress<'_> {
    /// Rows per second since the table started.
    pub fn rows_per_second(&self) -> f64 {
        self.rows as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What happened to one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableStatus {
    /// Copied by this run.
    Copied,
    /// Recorded as finished by an earlier run, and copied again by this resumed run: its source
    /// changed since (row count or content fingerprint), or a table it references was copied again
    /// (which empties the tables referencing it).
    Recopied,
    /// Skipped: the ledger records it as finished by an earlier run, and its source is unchanged.
    Skipped,
}

/// Verification of one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// The source's count and checksum (in the replication snapshot).
    pub source: Checksum,
    /// The target's count and checksum.
    pub target: Checksum,
}

impl Verification {
    /// Both sides agree.
    pub fn matches(&self) -> bool {
        self.source == self.target
    }
}

/// The outcome for one table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableReport {
    /// The table name (unquoted).
    pub table: String,
    /// Its foreign-key dependency level (0: references no other selected table).
    pub level: usize,
    /// Copied, copied again (resumed run) or skipped.
    pub status: TableStatus,
    /// Rows copied by this run (for a skipped table: rows the ledger recorded).
    pub rows: u64,
    /// COPY bytes moved by this run.
    pub bytes: u64,
    /// `CopyData` messages sent to the target by this run.
    pub copy_messages: u64,
    /// Times this run tried its copy again after a retryable error
    /// ([`ReplicateConfig::retry`](crate::ReplicateConfig::retry)); `rows`, `bytes` and
    /// `copy_messages` are those of the try that committed.
    pub retries: u32,
    /// Time spent copying it (all tries).
    pub elapsed: Duration,
    /// Verification, when asked for.
    pub verification: Option<Verification>,
}

/// The outcome of a [`replicate`](crate::replicate()) run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReplicationReport {
    /// The replicated schema.
    pub schema: String,
    /// Table names per dependency level.
    pub levels: Vec<Vec<String>>,
    /// Foreign-key cycles between tables (each loaded with its foreign keys added afterwards).
    pub cycles: Vec<Vec<String>>,
    /// One entry per selected table, in plan order.
    pub tables: Vec<TableReport>,
    /// Rows copied by this run.
    pub rows: u64,
    /// Tables created in the target by this run.
    pub tables_created: usize,
    /// Indexes and constraints created in the target by this run.
    pub objects_created: usize,
    /// Foreign keys not created because the table they reference is neither selected nor present in
    /// the target (quoted table and constraint name).
    pub foreign_keys_skipped: Vec<String>,
    /// Most tables copied at the same time.
    pub peak_parallel_tables: usize,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Wall time of the data phase (all tables' COPY).
    pub data_elapsed: Duration,
    /// Wall time of the post-data phase (keys, indexes, foreign keys, sequences).
    pub post_data_elapsed: Duration,
    /// Wall time of verification (zero without `verify`).
    pub verify_elapsed: Duration,
    /// Verification was asked for and every table matched. (When a table does not match, the run
    /// returns [`ReplicationError::VerificationFailed`](crate::ReplicationError::VerificationFailed) instead of a report.)
    pub verified: bool,
}

impl ReplicationReport {
    /// Tables skipped because an earlier run finished them and their source is unchanged.
    pub fn skipped(&self) -> usize {
        self.tables.iter().filter(|t| t.status == TableStatus::Skipped).count()
    }
}

//! [`StarReport`]: what one run did.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::inputs::MissingColumns;

/// What one run of a [`StarJob`](crate::StarJob) did (this run only, never totals across runs).
///
/// `rows_read = inserted + duplicates + rejected`, and `fact_rows = inserted`.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct StarReport {
    /// Input files read (each once per pass).
    pub files: usize,
    /// Rows read from the input (good + rejected), counted once whatever the passes.
    pub rows_read: u64,
    /// New rows stored (in the rows table, or the fact table of a facts-only job).
    pub inserted: u64,
    /// Fact rows stored (always equal to `inserted`: each batch commits both in one transaction).
    pub fact_rows: u64,
    /// Rows not stored because the same row was already loaded or seen earlier in the run.
    pub duplicates: u64,
    /// Rows rejected (unparseable, or a value that does not convert to its target type).
    pub rejected: u64,
    /// Members each dimension table gained from the input rows (by table; role-playing roles share
    /// one count). Lookup rows are counted in `lookup_rows`. A member another job created at the
    /// same moment (two jobs sharing a dimension, not under one exclusive bulk lock) is counted by
    /// both: the dimension store cannot tell which insert won.
    pub members_created: BTreeMap<String, u64>,
    /// Rows read from attribute lookups (upserted into their dimensions).
    pub lookup_rows: u64,
    /// Lookup rows skipped because their key, or part of it, is NULL (of `lookup_rows`): no fact row
    /// resolves to them, a NULL key being the unknown member's.
    pub lookup_rows_without_key: u64,
    /// Passes of the in-memory de-duplication over the input; 0 when de-duplicating in the database.
    pub passes: u32,
    /// Whether the load ran as a bulk load (constraint dropped and rebuilt, if any rows were new).
    pub bulk: bool,
    /// Whether this run restored what an earlier, crashed bulk load left behind.
    pub recovered: bool,
    /// Load transactions committed (one per non-empty batch after de-duplication).
    pub transactions: u64,
    /// Batches that went through the merge path (database de-duplication, or a `COPY` that met
    /// rows loaded concurrently by another run).
    pub merged_batches: u64,
    /// Batch transactions retried after a transient error.
    pub retries: u64,
    /// Optional target columns some files lacked (NULL in their rows), by file.
    pub missing_columns: Vec<MissingColumns>,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
}

impl StarReport {
    /// One line of `key=value` pairs, for logs and scripts.
    pub fn line(&self) -> String {
        let members: Vec<String> =
            self.members_created.iter().map(|(t, n)| format!("{t}_created={n}")).collect();
        format!(
            "rows_read={} inserted={} duplicates={} rejected={} fact_rows={} passes={} bulk={} {} elapsed_s={:.3}",
            self.rows_read,
            self.inserted,
            self.duplicates,
            self.rejected,
            self.fact_rows,
            self.passes,
            self.bulk,
            members.join(" "),
            self.elapsed.as_secs_f64()
        )
    }
}

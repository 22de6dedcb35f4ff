//! The row hash and the de-duplication strategy: an in-memory seen-set seeded from the table, split
//! into digest-range passes when it does not fit the memory budget, or a merge in the database.

use arrow_array::Array;
use arrow_array::cast::AsArray;
use arrow_schema::DataType;
use etlkit_core::{Context, Source};
use etlkit_hash::{Algorithm, Dedup, DedupConfig, DigestPartition, value_kind};
use etlkit_postgres::sqlx::PgPool;
use etlkit_postgres::{PgSource, PgSourceConfig, SourceQuery, TableRef, quote_ident};
use futures::StreamExt;

use crate::error::{Result, StarError};

/// The row hash: an `etlkit-row-v1` digest (docs/row-hash.md) of the target columns of each row,
/// stored as `bytea` in the rows table (or the fact table of a facts-only job) under a UNIQUE
/// constraint. Two rows with the same values in these columns are duplicates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowHash {
    /// The hash column. Default `row_hash`.
    pub column: String,
    /// Target columns hashed, in order. Default: empty = every target column in declared order.
    pub columns: Vec<String>,
    /// The digest. Default SHA-256 (faster than BLAKE3 for short rows on CPUs with SHA
    /// extensions; see docs/benchmarks.md).
    pub algorithm: Algorithm,
}

impl Default for RowHash {
    fn default() -> Self {
        RowHash { column: "row_hash".into(), columns: Vec::new(), algorithm: Algorithm::Sha256 }
    }
}

impl RowHash {
    /// What the table records about its hashes (algorithm, columns and the kind each column is
    /// hashed as, e.g. `etlkit-row-v1 sha256 (fare float,city string)`): a job computing other
    /// hashes is refused. A column changed from `Float64` to `Decimal128` hashes differently, so
    /// nothing loaded before would be found again; `Int32` to `Int64` does not.
    pub(crate) fn describe(&self, columns: &[(&str, &DataType)]) -> String {
        let columns: Vec<String> = columns
            .iter()
            .map(|(name, t)| format!("{name} {}", value_kind(t).unwrap_or_else(|| t.to_string())))
            .collect();
        format!("etlkit-row-v1 {} ({})", self.algorithm.name(), columns.join(","))
    }

    /// What versions before the kinds were recorded wrote for the same hashes (accepted, and
    /// replaced by [`RowHash::describe`]).
    pub(crate) fn describe_without_kinds(&self, columns: &[(&str, &DataType)]) -> String {
        let names: Vec<&str> = columns.iter().map(|(name, _)| *name).collect();
        format!("etlkit-row-v1 {} ({})", self.algorithm.name(), names.join(","))
    }
}

/// How rows already loaded (by earlier runs, other files, or earlier in the same file) are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DedupStrategy {
    /// In memory in the fewest passes (at most [`MAX_DEDUP_PASSES`]) whose seen-set (table rows +
    /// estimated input rows, 20–39 bytes each, split over the passes) fits `memory_budget` bytes,
    /// else [`DedupStrategy::Database`]: client memory stays bounded whatever the sizes. The default,
    /// with 192 MiB (one pass up to ~7.3 M rows).
    Auto {
        /// Bytes the seen-set may take.
        memory_budget: u64,
    },
    /// In memory in exactly `passes` passes over the input (at least 1): pass `p` handles only the
    /// rows whose digest falls in the `p`-th of `passes` ranges of digest space, with a seen-set of
    /// that range alone (seeded with the table's hashes in that range). Rows found new are loaded by
    /// binary `COPY`.
    Memory {
        /// Passes over the input.
        passes: u32,
    },
    /// Every batch is staged and merged with `INSERT ... ON CONFLICT (row hash) DO NOTHING`:
    /// constant client memory, slower (the UNIQUE index is maintained row by row). Never bulk.
    Database,
}

impl Default for DedupStrategy {
    fn default() -> Self {
        DedupStrategy::Auto { memory_budget: 192 << 20 }
    }
}

/// Most passes [`DedupStrategy::Auto`] plans before de-duplicating in the database instead: each
/// pass reads and hashes the whole input again.
pub const MAX_DEDUP_PASSES: u32 = 16;

impl DedupStrategy {
    /// Passes of the in-memory de-duplication for `rows` (table + input) rows; `None`: in the
    /// database.
    pub fn passes(&self, rows: u64) -> Option<u32> {
        match *self {
            DedupStrategy::Database => None,
            DedupStrategy::Memory { passes } => Some(passes.max(1)),
            DedupStrategy::Auto { memory_budget } => (1..=MAX_DEDUP_PASSES).find(|&k| {
                let config = pass_config("h", rows, 0, k);
                config.seen_set_bytes(config.expected_rows) as u64 <= memory_budget
            }),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        match *self {
            DedupStrategy::Memory { passes: 0 } => {
                Err(StarError::config("dedup", "passes must be at least 1"))
            }
            DedupStrategy::Memory { passes } if passes > 4096 => {
                Err(StarError::config("dedup", "passes must be at most 4096"))
            }
            _ => Ok(()),
        }
    }
}

/// The seen-set configuration of pass `pass` of `passes` for `rows` table + input rows: the digest
/// partition (when there are several passes) and its expected share of the rows, with 4 standard
/// deviations to spare.
pub(crate) fn pass_config(hash_column: &str, rows: u64, pass: u32, passes: u32) -> DedupConfig {
    let share = rows.div_ceil(u64::from(passes));
    let spare = if passes > 1 { 4 * (share as f64).sqrt() as u64 } else { 0 };
    DedupConfig {
        hash_column: Some(hash_column.into()),
        expected_rows: (share + spare) as usize,
        partition: (passes > 1).then_some(DigestPartition { index: pass, count: passes }),
        ..Default::default()
    }
}

/// Seeds `dedup` with every hash in `table.column` (of its partition), streamed by binary COPY.
/// Returns the hashes read.
pub(crate) async fn seed(pool: &PgPool, table: &TableRef, column: &str, dedup: &Dedup) -> Result<u64> {
    // A partitioned seen-set only needs its range of digests (`Dedup::seed` ignores the others).
    let hex = |b: [u8; 4]| format!("'\\x{}'::bytea", etlkit_hash::to_hex(&b));
    let c = quote_ident(column);
    let range = match dedup.config().partition.map(|p| p.prefix_range()) {
        None => String::new(),
        Some((lo, None)) => format!(" WHERE {c} >= {}", hex(lo)),
        Some((lo, Some(hi))) => format!(" WHERE {c} >= {} AND {c} < {}", hex(lo), hex(hi)),
    };
    let source = PgSource::new(
        pool.clone(),
        PgSourceConfig {
            query: SourceQuery::Query(format!("SELECT {c} FROM {}{range}", table.quoted())),
            batch_size: 65_536,
        },
    )
    .await?;
    let mut stream = Box::new(source).into_stream(Context::default());
    let mut n = 0u64;
    while let Some(batch) = stream.next().await {
        let batch =
            batch.map_err(|e| StarError::Load { file: "(seen-set seed)".into(), source: Box::new(e) })?;
        let col = batch.column(0).as_binary::<i32>();
        n += col.len() as u64;
        dedup.seed(col.iter().flatten().filter_map(|d| <[u8; 32]>::try_from(d).ok()));
    }
    Ok(n)
}

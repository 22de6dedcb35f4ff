//! [`Dedup`]: drops rows whose digest was already seen in this run.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::{Array, BooleanArray, RecordBatch};
use arrow_schema::{DataType, SchemaRef};
use etlkit_core::{Context, Transform, TransformProperties};

use crate::digest::{Algorithm, DIGEST_LEN, RowHasher};
use crate::error::HashError;

/// Approximate memory per distinct row held by [`Dedup`] with the default 16-byte keys, in bytes:
/// 16 bytes of digest + 1 control byte per slot, tables 44–87.5 % full (so 19–39 bytes; ~26
/// typical without [`DedupConfig::expected_rows`]). With 32-byte keys, about twice as much.
pub const DEDUP_BYTES_PER_ROW: usize = 26;

/// Configuration of [`Dedup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupConfig {
    /// Hash function used when digests are computed here. Default: [`Algorithm::Sha256`].
    pub algorithm: Algorithm,
    /// Columns that define a duplicate, in order. Default: empty = every input column in schema order.
    /// Ignored when `hash_column` is set.
    pub columns: Vec<String>,
    /// Use this existing column of precomputed digests (`FixedSizeBinary(32)` or 64-character hex
    /// `Utf8`, e.g. from [`RowHashTransform`](crate::RowHashTransform)) instead of hashing again.
    /// Default: `None`.
    pub hash_column: Option<String>,
    /// Number of independently locked shards of the seen-set; more shards, less lock contention between
    /// concurrent batches. Must be a power of two between 1 and 65 536. Default: 64.
    pub shards: usize,
    /// Bytes of each 32-byte digest kept in the seen-set: 16 or 32. Default: 16, which halves the
    /// memory; two different rows are then taken for duplicates only if their digests agree in the
    /// first 128 bits — for a billion distinct rows a chance of about 1 in 10^20 (birthday bound
    /// n²/2^129).
    pub key_bytes: usize,
    /// Distinct rows expected (a capacity hint): the seen-set is allocated for this many up front,
    /// so it does not grow by doubling and rehashing while rows stream in. 0 (default): grow as
    /// needed.
    pub expected_rows: usize,
    /// Restrict this de-duplicator to one [`DigestPartition`] of the digest space: rows whose
    /// digest falls outside it are dropped without being counted as duplicates (the pipeline counts
    /// them as filtered; see [`Dedup::outside_partition`]) and [`Dedup::seed`] ignores such digests.
    /// Running the same input once per partition de-duplicates exactly, with a seen-set of about
    /// 1/`count` of the rows each time. Default: `None` (every row).
    pub partition: Option<DigestPartition>,
}

/// Partition `index` of `count` equal, contiguous ranges of the digest space, by the digest's first
/// four bytes read big-endian (so each range is also a contiguous `bytea` range in PostgreSQL). Row
/// digests are uniform, so each partition gets about 1/`count` of the distinct rows.
///
/// ```
/// use etlkit_hash::DigestPartition;
///
/// let parts: Vec<_> = (0..3).map(|index| DigestPartition { index, count: 3 }).collect();
/// for digest in [[0u8; 32], [0x55; 32], [0xab; 32], [0xff; 32]] {
///     assert_eq!(parts.iter().filter(|p| p.contains(&digest)).count(), 1);
/// }
/// assert!(parts[0].contains(&[0u8; 32]) && parts[2].contains(&[0xff; 32]));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestPartition {
    /// Which partition, `0..count`.
    pub index: u32,
    /// How many partitions, at least 1.
    pub count: u32,
}

impl DigestPartition {
    /// The partition (`0..count`) of `digest` (at least 4 bytes).
    #[inline]
    pub fn index_of(count: u32, digest: &[u8]) -> u32 {
        let prefix = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        ((u64::from(prefix) * u64::from(count)) >> 32) as u32
    }

    /// The partition as a range of 4-byte digest prefixes: `(lower, upper)`, lower inclusive, upper
    /// exclusive (`None` for the last partition). Because comparison is bytewise, a digest is in the
    /// partition exactly when `lower <= digest` and `digest < upper` compared as byte strings —
    /// e.g. `row_hash >= $1 AND row_hash < $2` on a `bytea` column.
    ///
    /// ```
    /// use etlkit_hash::DigestPartition;
    ///
    /// let p = DigestPartition { index: 1, count: 4 };
    /// assert_eq!(p.prefix_range(), ([0x40, 0, 0, 0], Some([0x80, 0, 0, 0])));
    /// let (lo, hi) = p.prefix_range();
    /// for d in [[0x3f; 32], [0x40; 32], [0x7f; 32], [0x80; 32]] {
    ///     assert_eq!(p.contains(&d), d[..] >= lo[..] && d[..] < hi.unwrap()[..]);
    /// }
    /// ```
    pub fn prefix_range(&self) -> ([u8; 4], Option<[u8; 4]>) {
        // The smallest prefix x with floor(x * count / 2^32) >= i is ceil(i * 2^32 / count).
        let lower = |i: u32| ((u64::from(i) << 32).div_ceil(u64::from(self.count.max(1)))) as u32;
        let hi = (self.index + 1 < self.count).then(|| lower(self.index + 1).to_be_bytes());
        (lower(self.index).to_be_bytes(), hi)
    }

    /// Whether `digest` (at least 4 bytes) falls in this partition.
    #[inline]
    pub fn contains(&self, digest: &[u8]) -> bool {
        Self::index_of(self.count, digest) == self.index
    }
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            algorithm: Algorithm::default(),
            columns: Vec::new(),
            hash_column: None,
            shards: 64,
            key_bytes: 16,
            expected_rows: 0,
            partition: None,
        }
    }
}

impl DedupConfig {
    /// Bytes the seen-set's tables take when sized for `rows` distinct rows up front (as
    /// [`expected_rows`](Self::expected_rows) does): per shard, a power of two of slots with room
    /// for its share at 7/8 load, each slot `key_bytes` + 1 control byte. Useful to decide whether
    /// an in-memory de-duplication fits a memory budget.
    pub fn seen_set_bytes(&self, rows: usize) -> usize {
        // One shard's table, allocated as `Dedup::new` would, and measured (hashbrown's sizing
        // policy is not restated here).
        let per_shard = rows.div_ceil(self.shards.max(1));
        Seen::new(self.key_bytes, per_shard).allocated_bytes() * self.shards
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), HashError> {
        if !self.shards.is_power_of_two() || self.shards > 65_536 {
            return Err(HashError::InvalidConfig {
                field: "shards",
                reason: format!("must be a power of two between 1 and 65536, got {}", self.shards),
            });
        }
        if self.key_bytes != 16 && self.key_bytes != DIGEST_LEN {
            return Err(HashError::InvalidConfig {
                field: "key_bytes",
                reason: format!("must be 16 or 32, got {}", self.key_bytes),
            });
        }
        if let Some(p) = self.partition
            && (p.count == 0 || p.index >= p.count)
        {
            return Err(HashError::InvalidConfig {
                field: "partition",
                reason: format!("index {} of {} partitions: need 0 <= index < count", p.index, p.count),
            });
        }
        if self.hash_column.as_deref() == Some("") {
            return Err(HashError::InvalidConfig {
                field: "hash_column",
                reason: "must not be empty".into(),
            });
        }
        Ok(())
    }
}

/// A digest prefix as a set key. Digests are uniformly random, so the table hash is just 8 of their
/// bytes (bytes 8..16: the shard was chosen by bytes 0..2).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key<const N: usize>([u8; N]);

impl<const N: usize> Hash for Key<N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from_le_bytes(self.0[8..16].try_into().expect("8 bytes")));
    }
}

#[derive(Default)]
struct PassThrough(u64);
impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type Set<const N: usize> = HashSet<Key<N>, BuildHasherDefault<PassThrough>>;

/// One shard of the seen-set, keyed by digest prefixes of 16 or 32 bytes.
enum Seen {
    Short(Set<16>),
    Full(Set<DIGEST_LEN>),
}

impl Seen {
    fn new(key_bytes: usize, capacity: usize) -> Self {
        let hasher = BuildHasherDefault::<PassThrough>::default();
        if key_bytes == 16 {
            Seen::Short(HashSet::with_capacity_and_hasher(capacity, hasher))
        } else {
            Seen::Full(HashSet::with_capacity_and_hasher(capacity, hasher))
        }
    }

    /// Adds the digest (32 bytes); `true` if it was not there.
    #[inline]
    fn insert(&mut self, digest: &[u8]) -> bool {
        match self {
            Seen::Short(s) => s.insert(Key(digest[..16].try_into().expect("16 bytes"))),
            Seen::Full(s) => s.insert(Key(digest.try_into().expect("32 bytes"))),
        }
    }

    fn len(&self) -> usize {
        match self {
            Seen::Short(s) => s.len(),
            Seen::Full(s) => s.len(),
        }
    }

    /// Bytes of the table: slots × (key + 1 control byte). hashbrown fills at most 7/8 of the
    /// slots of tables with 8 or more (a power of two), so slots are derived from the capacity.
    fn allocated_bytes(&self) -> usize {
        let (capacity, key) = match self {
            Seen::Short(s) => (s.capacity(), 16),
            Seen::Full(s) => (s.capacity(), DIGEST_LEN),
        };
        let slots = match capacity {
            0 => 0,
            c if c < 7 => (c + 1).next_power_of_two(),
            c => c * 8 / 7,
        };
        slots * (key + 1)
    }
}

type Shard = Mutex<Seen>;

/// A stateful [`Transform`] that drops every row whose digest it has already seen in this run — within
/// a batch and across batches — and counts them with [`Context::record_deduplicated`] (so
/// `LoadStats::rows_deduplicated` reports them). The first occurrence is kept.
///
/// Safe to call from several threads at once: the seen-set is split into `shards` mutex-protected
/// hash sets chosen by the digest's first bytes, and each batch locks each shard once. Memory grows
/// with the number of distinct rows, about [`DEDUP_BYTES_PER_ROW`] bytes each with the default
/// 16-byte keys (e.g. ~260 MB for 10 million); see [`DedupConfig::key_bytes`] and
/// [`DedupConfig::expected_rows`].
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{Int64Array, RecordBatch};
/// use etlkit_core::{Context, Transform};
/// use etlkit_hash::{Dedup, DedupConfig};
///
/// let dedup = Dedup::new(DedupConfig::default())?;
/// let ctx = Context::default();
/// let batch = |v: Vec<i64>| RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(v)) as _)]);
/// assert_eq!(dedup.apply(batch(vec![1, 2, 1])?, &ctx)?[0].num_rows(), 2);
/// assert_eq!(dedup.apply(batch(vec![2, 3])?, &ctx)?[0].num_rows(), 1);
/// assert_eq!(ctx.deduplicated(), 2);
/// assert_eq!(dedup.distinct(), 3);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
pub struct Dedup {
    config: DedupConfig,
    hasher: RowHasher,
    shards: Box<[Shard]>,
    outside: AtomicU64,
}

impl std::fmt::Debug for Dedup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedup").field("config", &self.config).field("distinct", &self.distinct()).finish()
    }
}

impl Dedup {
    /// A de-duplicator with an empty seen-set.
    pub fn new(config: DedupConfig) -> Result<Self, HashError> {
        config.validate()?;
        let hasher = RowHasher::new(config.algorithm, config.columns.clone());
        // Room for the expected rows at hashbrown's 7/8 maximum load, spread evenly over the shards.
        let per_shard = config.expected_rows.div_ceil(config.shards);
        let shards = (0..config.shards).map(|_| Mutex::new(Seen::new(config.key_bytes, per_shard))).collect();
        Ok(Dedup { config, hasher, shards, outside: AtomicU64::new(0) })
    }

    /// The configuration.
    pub fn config(&self) -> &DedupConfig {
        &self.config
    }

    fn shard_of(&self, digest: &[u8]) -> usize {
        // first two bytes, masked: up to 65 536 shards
        (u16::from_be_bytes([digest[0], digest[1]]) as usize) & (self.shards.len() - 1)
    }

    /// Marks digests as already seen (e.g. the `row_hash` column of rows loaded by an earlier run), so
    /// rows with these digests are dropped as duplicates. Digests outside
    /// [`DedupConfig::partition`] are ignored. Returns how many were new to the set.
    pub fn seed<I: IntoIterator<Item = [u8; DIGEST_LEN]>>(&self, digests: I) -> usize {
        let mut added = 0;
        for d in digests {
            if self.config.partition.is_some_and(|p| !p.contains(&d)) {
                continue;
            }
            let shard = &self.shards[self.shard_of(&d)];
            added += usize::from(shard.lock().expect("dedup shard poisoned").insert(&d));
        }
        added
    }

    /// Marks every digest of `column` of `batch` as already seen — e.g. batches of the `row_hash`
    /// column read back from the target table before a re-run. The column must be
    /// `FixedSizeBinary(32)` or 64-character hex text. Returns how many were new to the set.
    pub fn seed_from_column(&self, batch: &RecordBatch, column: &str) -> Result<usize, HashError> {
        let digests = digests_from_column(batch, column)?;
        Ok(self.seed(digests.value_data().chunks_exact(DIGEST_LEN).map(|d| d.try_into().expect("32 bytes"))))
    }

    /// Number of distinct digests seen so far.
    pub fn distinct(&self) -> usize {
        self.shards.iter().map(|s| s.lock().expect("dedup shard poisoned").len()).sum()
    }

    /// Rows dropped so far because their digest is outside [`DedupConfig::partition`] (not
    /// duplicates: another partition's run loads them).
    pub fn outside_partition(&self) -> u64 {
        self.outside.load(Ordering::Relaxed)
    }

    /// Bytes currently allocated by the seen-set's tables (slots × (key bytes + 1)), for monitoring.
    pub fn allocated_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().expect("dedup shard poisoned").allocated_bytes()).sum()
    }

    /// The keep-mask of `batch`: `true` for rows seen for the first time (which are added to the
    /// set); `false` for duplicates and for rows outside [`DedupConfig::partition`].
    pub fn first_seen(&self, batch: &RecordBatch) -> Result<Vec<bool>, HashError> {
        self.classify(batch).map(|(keep, _)| keep)
    }

    /// The keep-mask and the number of rows outside the partition (also added to
    /// [`outside_partition`](Self::outside_partition)).
    fn classify(&self, batch: &RecordBatch) -> Result<(Vec<bool>, u64), HashError> {
        let n = batch.num_rows();
        let owned;
        let digests: &[u8] = match &self.config.hash_column {
            None => {
                owned = self.hasher.hash_batch(batch)?;
                owned.value_data()
            }
            Some(col) => {
                owned = digests_from_column(batch, col)?;
                owned.value_data()
            }
        };
        // Counting sort of rows by shard (stable, so the first occurrence in the batch wins).
        let shards = self.shards.len();
        let mut counts = vec![0u32; shards + 1];
        let shard_ids: Vec<u16> = digests
            .chunks_exact(DIGEST_LEN)
            .map(|d| {
                let s = self.shard_of(d);
                counts[s + 1] += 1;
                s as u16
            })
            .collect();
        for s in 0..shards {
            counts[s + 1] += counts[s];
        }
        let mut order = vec![0u32; n];
        let mut next = counts.clone();
        for (row, &s) in shard_ids.iter().enumerate() {
            order[next[s as usize] as usize] = row as u32;
            next[s as usize] += 1;
        }
        let mut keep = vec![false; n];
        let mut outside = 0u64;
        for s in 0..shards {
            let rows = &order[counts[s] as usize..counts[s + 1] as usize];
            if rows.is_empty() {
                continue;
            }
            let mut set = self.shards[s].lock().expect("dedup shard poisoned");
            for &row in rows {
                let r = row as usize;
                let digest = &digests[r * DIGEST_LEN..(r + 1) * DIGEST_LEN];
                if self.config.partition.is_some_and(|p| !p.contains(digest)) {
                    outside += 1;
                    continue;
                }
                keep[r] = set.insert(digest);
            }
        }
        self.outside.fetch_add(outside, Ordering::Relaxed);
        Ok((keep, outside))
    }

    /// Drops the rows of `batch` already seen (and those outside [`DedupConfig::partition`]);
    /// returns the kept rows and the number of duplicates dropped.
    pub fn dedup_batch(&self, batch: &RecordBatch) -> Result<(RecordBatch, u64), HashError> {
        self.dedup_with_mask(batch).map(|(kept, dropped, _)| (kept, dropped))
    }

    /// [`Dedup::dedup_batch`], plus the mask of kept rows when any row was dropped.
    fn dedup_with_mask(
        &self,
        batch: &RecordBatch,
    ) -> Result<(RecordBatch, u64, Option<BooleanArray>), HashError> {
        let (keep, outside) = self.classify(batch)?;
        let dropped = keep.iter().filter(|k| !**k).count() as u64;
        if dropped == 0 {
            return Ok((batch.clone(), 0, None));
        }
        let mask = BooleanArray::from(keep);
        Ok((arrow_select::filter::filter_record_batch(batch, &mask)?, dropped - outside, Some(mask)))
    }
}

/// Reads precomputed digests from a `FixedSizeBinary(32)` or 64-hex `Utf8`/`LargeUtf8` column.
fn digests_from_column(
    batch: &RecordBatch,
    column: &str,
) -> Result<arrow_array::FixedSizeBinaryArray, HashError> {
    let bad = |reason: String| HashError::BadHashColumn { column: column.to_string(), reason };
    let a = batch.column_by_name(column).ok_or_else(|| bad("not found in the batch".into()))?;
    if a.null_count() > 0 {
        return Err(bad(format!("{} null digests", a.null_count())));
    }
    match a.data_type() {
        DataType::FixedSizeBinary(32) => Ok(a.as_fixed_size_binary().clone()),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            let cast = arrow_cast::cast(a, &DataType::Utf8)?;
            let s = cast.as_string::<i32>();
            let mut out = Vec::with_capacity(s.len() * DIGEST_LEN);
            for (row, v) in s.iter().enumerate() {
                let v = v.unwrap_or_default();
                let bytes = v.as_bytes();
                if bytes.len() != 2 * DIGEST_LEN {
                    return Err(bad(format!("row {row}: {v:?} is not 64 hex characters")));
                }
                for pair in bytes.chunks_exact(2) {
                    match (hex_val(pair[0]), hex_val(pair[1])) {
                        (Some(h), Some(l)) => out.push(h << 4 | l),
                        _ => return Err(bad(format!("row {row}: {v:?} is not hexadecimal"))),
                    }
                }
            }
            Ok(arrow_array::FixedSizeBinaryArray::new(
                DIGEST_LEN as i32,
                arrow_buffer::Buffer::from_vec(out),
                None,
            ))
        }
        other => Err(bad(format!("has type {other}; expected FixedSizeBinary(32) or 64-character hex Utf8"))),
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl Transform for Dedup {
    fn name(&self) -> &str {
        "dedup"
    }
    fn properties(&self) -> TransformProperties {
        TransformProperties::STATEFUL
    }
    fn output_schema(&self, input: &SchemaRef) -> etlkit_core::Result<SchemaRef> {
        match &self.config.hash_column {
            None => self.hasher.check_schema(input).map_err(|e| e.into_core(self.name()))?,
            Some(c) => {
                let f = input.field_with_name(c).map_err(|_| {
                    HashError::BadHashColumn { column: c.clone(), reason: "not found in the input".into() }
                        .into_core("dedup")
                })?;
                if !matches!(
                    f.data_type(),
                    DataType::FixedSizeBinary(32) | DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                ) {
                    return Err(HashError::BadHashColumn {
                        column: c.clone(),
                        reason: format!(
                            "has type {}; expected FixedSizeBinary(32) or hex Utf8",
                            f.data_type()
                        ),
                    }
                    .into_core(self.name()));
                }
            }
        }
        Ok(input.clone())
    }
    fn apply(&self, batch: RecordBatch, ctx: &Context) -> etlkit_core::Result<Vec<RecordBatch>> {
        let (kept, dropped, mask) = self.dedup_with_mask(&batch).map_err(|e| e.into_core(self.name()))?;
        if let Some(mask) = &mask {
            ctx.keep_rows(mask); // the kept rows keep their file and line
        }
        ctx.record_deduplicated(dropped);
        Ok(if kept.num_rows() == 0 { Vec::new() } else { vec![kept] })
    }
}

//! [`DedupByKey`]: the first row per exact key over a whole run.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_row::{RowConverter, SortField};
use arrow_schema::SchemaRef;
use etlkit_core::{Context, Transform, TransformProperties};
use hashbrown::HashTable;

use crate::error::{Result, TransformError};

/// At most this many conflicting duplicates are logged one by one; the rest are only counted (and
/// summed up in one `warn` from [`Transform::finish`]).
const MAX_CONFLICT_WARNINGS: u64 = 20;

/// Keeps the first row of every key over the whole run; every later row with that key is dropped and
/// counted through [`Context::record_deduplicated`].
///
/// - **Exact keys.** The key columns are encoded with Arrow's row format (`arrow-row`), which is
///   unambiguous for any types and any number of columns: `("A|B", "C")` and `("A", "B|C")` are two
///   keys, as are `("1", 2)` and `("12", NULL)`. The encoded keys of the run are kept in byte arenas
///   with hash tables of 16-byte entries (offset and length, hash of the other columns): about 35
///   bytes per distinct short key (measured: 35 bytes per `L0000001`-style id at 100 K and 400 K
///   keys), so memory grows with the number of *distinct* keys only, and nothing else grows with
///   the input. The set is split into 64 shards by key hash, each with its own arena and table, so
///   it grows in small steps (a table doubling copies 1/64 of the set, not all of it) and never
///   holds one large block; batches are encoded 512 rows at a time into reused buffers, so the
///   transient memory per batch is small and does not depend on the batch size.
/// - **NULL keys.** A row with a NULL in any key column is passed through untouched and never
///   de-duplicated (the sink decides what a NULL key means: the graph sink fails or rejects it).
/// - **Conflicting duplicates.** For each key a 64-bit hash of the first row's other columns (all but
///   the keys and the [`ignoring`](Self::ignoring) columns) is kept; a repeat whose other columns
///   hash differently is a *conflicting* duplicate: still dropped (the first row wins), counted in
///   [`conflicts`](Self::conflicts) and logged at `warn` (target `etlkit::transform`, the first 20
///   one by one with key and the input file and line of the repeat — from
///   [`Context::origin`](etlkit_core::Context::origin), else a [row number column](Self::row_column)).
/// - Dropped rows are declared with [`Context::keep_rows`], so later stages keep naming the right
///   input lines.
/// - **Which row is first.** By default the first in *input order*: the transform declares itself
///   order-sensitive ([`TransformProperties::ORDERED`]), so a pipeline runs it with
///   `transform_concurrency = 1` (it rejects any other value). [`first_arrival`](Self::first_arrival)
///   makes it [`TransformProperties::STATEFUL`] instead: parallel, and "first" is whichever batch
///   reached it first (fine when duplicates are identical).
/// - The output schema is the input schema; batches keep their row order.
///
/// State lives for the transform's lifetime: use a new one per run.
#[derive(Debug)]
pub struct DedupByKey {
    name: String,
    keys: Vec<String>,
    ignore: Vec<String>,
    row_column: Option<String>,
    ordered: bool,
    codec: OnceLock<Codec>,
    seen: Mutex<Seen>,
    deduplicated: AtomicU64,
    conflicts: AtomicU64,
}

struct Codec {
    key_idx: Vec<usize>,
    keys: RowConverter,
    other_idx: Vec<usize>,
    others: Option<RowConverter>,
    schema: SchemaRef,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec").field("key_idx", &self.key_idx).field("other_idx", &self.other_idx).finish()
    }
}

/// Rows encoded at a time (the key and other-column buffers are reused from chunk to chunk).
const CHUNK: usize = 512;

/// Shards of the key set (a power of two), chosen by hash bits 32.. (hashbrown uses the low bits for
/// the bucket and the top 7 for its tags, so those stay spread within a shard).
const SHARDS: usize = 64;

/// One shard of the distinct keys: encoded keys back to back in `arena`, a table of (offset,
/// length, hash of the first row's other columns).
#[derive(Default)]
struct Shard {
    arena: Vec<u8>,
    /// `(offset << 24 | length, other-columns hash)`: 16 bytes per key.
    table: HashTable<(u64, u64)>,
}

/// The distinct keys seen, in [`SHARDS`] shards.
struct Seen {
    shards: Vec<Shard>,
    len: usize,
    hasher: hashbrown::DefaultHashBuilder,
}

impl Default for Seen {
    fn default() -> Self {
        Seen { shards: (0..SHARDS).map(|_| Shard::default()).collect(), len: 0, hasher: Default::default() }
    }
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen")
            .field("keys", &self.len)
            .field("arena_bytes", &self.shards.iter().map(|s| s.arena.len()).sum::<usize>())
            .finish()
    }
}

impl DedupByKey {
    /// De-duplication on the key columns `keys` (one or more, compared together).
    pub fn new<S: Into<String>>(keys: impl IntoIterator<Item = S>) -> Self {
        let keys: Vec<String> = keys.into_iter().map(Into::into).collect();
        DedupByKey {
            name: format!("dedup_by_key({})", keys.join(", ")),
            keys,
            ignore: Vec::new(),
            row_column: None,
            ordered: true,
            codec: OnceLock::new(),
            seen: Mutex::default(),
            deduplicated: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
        }
    }

    /// Columns left out of the conflict check (e.g. a row-number or load-time column, which differ
    /// between otherwise identical rows).
    pub fn ignoring<S: Into<String>>(mut self, columns: impl IntoIterator<Item = S>) -> Self {
        self.ignore.extend(columns.into_iter().map(Into::into));
        self
    }

    /// An integer column holding each row's input row number (see [`RowNumbers`](crate::RowNumbers)),
    /// named in conflict warnings and left out of the conflict check.
    pub fn row_column(mut self, column: impl Into<String>) -> Self {
        let c = column.into();
        self.ignore.push(c.clone());
        self.row_column = Some(c);
        self
    }

    /// "First" means first to arrive, not first in input order: the transform becomes
    /// [`TransformProperties::STATEFUL`] and may run on several batches at once.
    pub fn first_arrival(mut self) -> Self {
        self.ordered = false;
        self
    }

    /// Rows dropped so far as repeats of a key.
    pub fn deduplicated(&self) -> u64 {
        self.deduplicated.load(Ordering::Relaxed)
    }

    /// Dropped rows whose other columns differed from the kept row's.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    /// Distinct non-NULL keys seen so far.
    pub fn distinct(&self) -> u64 {
        self.seen.lock().map_or(0, |s| s.len as u64)
    }

    fn codec(&self, schema: &SchemaRef) -> Result<&Codec> {
        if let Some(c) = self.codec.get() {
            return Ok(c);
        }
        let mut key_idx = Vec::with_capacity(self.keys.len());
        for k in &self.keys {
            key_idx.push(schema.index_of(k).map_err(|_| TransformError::missing(&self.name, k, schema))?);
        }
        let sort = |idx: &[usize]| -> Vec<SortField> {
            idx.iter().map(|&i| SortField::new(schema.field(i).data_type().clone())).collect()
        };
        let keys = RowConverter::new(sort(&key_idx)).map_err(TransformError::arrow(&self.name))?;
        let other_idx: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !key_idx.contains(i) && !self.ignore.iter().any(|c| c == schema.field(*i).name()))
            .collect();
        let others = if other_idx.is_empty() {
            None
        } else {
            Some(RowConverter::new(sort(&other_idx)).map_err(TransformError::arrow(&self.name))?)
        };
        let _ = self.codec.set(Codec { key_idx, keys, other_idx, others, schema: schema.clone() });
        Ok(self.codec.get().expect("just set"))
    }

    fn dedup(&self, batch: RecordBatch, ctx: &Context) -> Result<(RecordBatch, u64)> {
        let codec = self.codec(&batch.schema())?;
        if batch.schema().fields() != codec.schema.fields() {
            return Err(TransformError::InvalidConfig {
                transform: self.name.clone(),
                field: "input",
                reason: "batches of one run must all have the same schema".into(),
            });
        }
        let n = batch.num_rows();
        let pick =
            |idx: &[usize]| -> Vec<ArrayRef> { idx.iter().map(|&i| batch.column(i).clone()).collect() };
        let key_cols: Vec<ArrayRef> = pick(&codec.key_idx).into_iter().map(same_zero).collect();
        // Logical nulls: a `Null`-typed column or a dictionary's null values are NULL keys too.
        let key_nulls: Vec<_> = key_cols.iter().map(|c| c.logical_nulls()).collect();
        let other_cols = pick(&codec.other_idx);
        let mut keys = codec.keys.empty_rows(CHUNK.min(n), 0);
        let mut others = codec.others.as_ref().map(|c| c.empty_rows(CHUNK.min(n), 0));
        let slice_of = |cols: &[ArrayRef], at: usize, len: usize| -> Vec<ArrayRef> {
            cols.iter().map(|c| c.slice(at, len)).collect()
        };
        let mut keep = Vec::with_capacity(n);
        let mut dropped = 0u64;
        for at in (0..n).step_by(CHUNK) {
            let len = CHUNK.min(n - at);
            keys.clear();
            codec
                .keys
                .append(&mut keys, &slice_of(&key_cols, at, len))
                .map_err(TransformError::arrow(&self.name))?;
            if let (Some(c), Some(o)) = (&codec.others, &mut others) {
                o.clear();
                c.append(o, &slice_of(&other_cols, at, len)).map_err(TransformError::arrow(&self.name))?;
            }
            let mut seen = self.seen.lock().expect("dedup state poisoned");
            let Seen { shards, len: distinct, hasher } = &mut *seen;
            for j in 0..len {
                let i = at + j;
                if key_nulls.iter().any(|n| n.as_ref().is_some_and(|n| n.is_null(i))) {
                    keep.push(true);
                    continue;
                }
                let key = keys.row(j);
                let key = key.as_ref();
                let other = others.as_ref().map_or(0, |o| hasher.hash_one(o.row(j).as_ref()));
                let h = hasher.hash_one(key);
                let Shard { arena, table } = &mut shards[(h >> 32) as usize % SHARDS];
                let found = table.find(h, |&(span, _)| slice(arena, span) == key).map(|e| e.1);
                match found {
                    Some(first) => {
                        keep.push(false);
                        dropped += 1;
                        if first != other {
                            self.conflict(&batch, ctx, &key_cols, i);
                        }
                    }
                    None => {
                        let (off, klen) = (arena.len() as u64, key.len() as u64);
                        if klen > MAX_KEY_BYTES || off > MAX_ARENA_BYTES {
                            return Err(TransformError::InvalidConfig {
                                transform: self.name.clone(),
                                field: "keys",
                                reason: format!(
                                    "a key of {klen} bytes or more than {off} bytes of distinct keys in one shard: keys are limited to 16 MiB each and 1 TiB per shard"
                                ),
                            });
                        }
                        arena.extend_from_slice(key);
                        let (arena, hasher) = (&*arena, &*hasher);
                        table.insert_unique(h, (off << 24 | klen, other), |&(span, _)| {
                            hasher.hash_one(slice(arena, span))
                        });
                        *distinct += 1;
                        keep.push(true);
                    }
                }
            }
        }
        if dropped == 0 {
            return Ok((batch, 0));
        }
        let keep = BooleanArray::from(keep);
        ctx.keep_rows(&keep);
        let out = arrow_select::filter::filter_record_batch(&batch, &keep)
            .map_err(TransformError::arrow(&self.name))?;
        Ok((out, dropped))
    }

    fn conflict(&self, batch: &RecordBatch, ctx: &Context, key_cols: &[ArrayRef], i: usize) {
        let n = self.conflicts.fetch_add(1, Ordering::Relaxed) + 1;
        if n > MAX_CONFLICT_WARNINGS {
            return;
        }
        let key = key_cols
            .iter()
            .map(|c| arrow_cast::display::array_value_to_string(c, i).unwrap_or_else(|_| "?".into()))
            .collect::<Vec<_>>();
        let row = match ctx.origin(i) {
            Some(o) => format!(" at {o}"),
            None => (self.row_column.as_deref())
                .and_then(|c| batch.column_by_name(c))
                .and_then(|c| arrow_cast::display::array_value_to_string(c, i).ok())
                .map(|r| format!(" (row {r})"))
                .unwrap_or_default(),
        };
        tracing::warn!(
            target: "etlkit::transform",
            "{}: key ({}) = {:?}{row} repeats with different values in its other columns; keeping the first row",
            self.name,
            self.keys.join(", "),
            key
        );
    }
}

/// Longest encoded key (24 bits of length).
const MAX_KEY_BYTES: u64 = (1 << 24) - 1;
/// Largest arena offset (40 bits).
const MAX_ARENA_BYTES: u64 = (1 << 40) - 1;

/// The encoded key a packed `offset << 24 | length` points at.
fn slice(arena: &[u8], span: u64) -> &[u8] {
    let (at, len) = ((span >> 24) as usize, (span & MAX_KEY_BYTES) as usize);
    &arena[at..at + len]
}

impl Transform for DedupByKey {
    fn name(&self) -> &str {
        &self.name
    }

    fn properties(&self) -> TransformProperties {
        if self.ordered { TransformProperties::ORDERED } else { TransformProperties::STATEFUL }
    }

    fn output_schema(&self, input: &SchemaRef) -> etlkit_core::Result<SchemaRef> {
        for k in &self.keys {
            if input.index_of(k).is_err() {
                return Err(TransformError::missing(&self.name, k, input).into());
            }
        }
        if self.keys.is_empty() {
            return Err(TransformError::InvalidConfig {
                transform: self.name.clone(),
                field: "keys",
                reason: "names no column".into(),
            }
            .into());
        }
        Ok(input.clone())
    }

    fn apply(&self, batch: RecordBatch, ctx: &Context) -> etlkit_core::Result<Vec<RecordBatch>> {
        let (out, dropped) = self.dedup(batch, ctx)?;
        if dropped > 0 {
            ctx.record_deduplicated(dropped);
            self.deduplicated.fetch_add(dropped, Ordering::Relaxed);
        }
        Ok(vec![out])
    }

    fn finish(&self, _ctx: &Context) -> etlkit_core::Result<Vec<RecordBatch>> {
        let n = self.conflicts();
        if n > MAX_CONFLICT_WARNINGS {
            tracing::warn!(
                target: "etlkit::transform",
                "{}: {n} conflicting duplicates in all ({} not logged one by one); the first row of each key was kept",
                self.name,
                n - MAX_CONFLICT_WARNINGS
            );
        }
        Ok(Vec::new())
    }
}

/// A float key column with `-0.0` as `0.0`: the two are one key to the databases the keys go to
/// (`0.0 = -0.0` in SQL and Cypher), so they must be one key here too.
fn same_zero(column: ArrayRef) -> ArrayRef {
    use arrow_array::types::{Float32Type, Float64Type};
    match column.data_type() {
        arrow_schema::DataType::Float64 => {
            Arc::new(column.as_primitive::<Float64Type>().unary::<_, Float64Type>(|v| v + 0.0))
        }
        arrow_schema::DataType::Float32 => {
            Arc::new(column.as_primitive::<Float32Type>().unary::<_, Float32Type>(|v| v + 0.0))
        }
        _ => column,
    }
}

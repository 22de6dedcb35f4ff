//! [`DimensionCache`]: vectorized natural-key → surrogate-key look-up with bulk creation of new members.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, UInt32Array};
use arrow_buffer::NullBuffer;
use arrow_row::{RowConverter, Rows, SortField};
use hashbrown::HashMap;

use crate::dimension::{DimensionSpec, DimensionStore, NullKeyPolicy};
use crate::error::{DimError, Result};

/// Look-up counts of a [`DimensionCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CacheStats {
    /// Members in the cache.
    pub members: u64,
    /// Rows resolved from the cache without asking the store.
    pub hits: u64,
    /// Rows resolved to the unknown member because their key had a NULL.
    pub null_keys: u64,
    /// Distinct new members sent to the store (created, or found created by someone else).
    pub created: u64,
    /// Calls to [`DimensionStore::get_or_create`].
    pub store_calls: u64,
}

/// The cached members: natural key → surrogate key.
enum Members {
    /// Any key: Arrow row-format bytes of the (cast) key columns.
    Rows(HashMap<Box<[u8]>, i64>),
    /// A single integer-like key column (integers up to 64 bits, dates): its value. Same members as
    /// `Rows` would hold, without encoding rows.
    Int(HashMap<i64, i64>),
}

impl Members {
    fn len(&self) -> usize {
        match self {
            Members::Rows(m) => m.len(),
            Members::Int(m) => m.len(),
        }
    }
}

/// The values of a single integer-like key column as `i64` (None for other types), NULLs as 0.
fn int_keys(column: &ArrayRef) -> Option<Vec<i64>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::*;
    use arrow_schema::DataType as D;
    fn widen<T: arrow_array::ArrowPrimitiveType>(a: &ArrayRef) -> Vec<i64>
    where
        T::Native: Into<i64>,
    {
        a.as_primitive::<T>().values().iter().map(|&v| v.into()).collect()
    }
    Some(match column.data_type() {
        D::Int8 => widen::<Int8Type>(column),
        D::Int16 => widen::<Int16Type>(column),
        D::Int32 => widen::<Int32Type>(column),
        D::Int64 => widen::<Int64Type>(column),
        D::UInt8 => widen::<UInt8Type>(column),
        D::UInt16 => widen::<UInt16Type>(column),
        D::UInt32 => widen::<UInt32Type>(column),
        D::Date32 => widen::<Date32Type>(column),
        D::Date64 => widen::<Date64Type>(column),
        _ => return None,
    })
}

/// A dimension's natural key → surrogate key map, preloaded from its [`DimensionStore`].
///
/// [`resolve`](Self::resolve) takes a whole batch's key columns and returns an `Int64` surrogate key per
/// row. Keys are cast to the spec's key types first, so `Int32` 7 and `Int64` 7 are the same member;
/// a single integer or date key column is then looked up by value, any other key (any comparable
/// type, any number of columns) by its Arrow row-format encoding. Keys not in the cache
/// are collected per batch, de-duplicated and sent to the store in one call; their new keys are cached.
///
/// Safe to share between concurrent tasks (`Arc<DimensionCache>`): look-ups take a read lock; creation
/// of new members is serialized per cache (and made safe across caches and processes by the store's
/// contract), so two tasks meeting the same new member get the same key and the store one row.
/// One cache can serve several roles (pickup and dropoff location share `dim_location`).
pub struct DimensionCache {
    spec: Arc<DimensionSpec>,
    store: Arc<dyn DimensionStore>,
    converter: RowConverter,
    members: RwLock<Members>,
    create_lock: tokio::sync::Mutex<()>,
    hits: AtomicU64,
    null_keys: AtomicU64,
    created: AtomicU64,
    store_calls: AtomicU64,
}

impl std::fmt::Debug for DimensionCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DimensionCache")
            .field("table", &self.spec.table)
            .field("stats", &self.stats())
            .finish()
    }
}

impl DimensionCache {
    /// Validates `spec`, prepares the dimension in `store` (creating its table and unknown member if
    /// needed) and preloads every existing member.
    pub async fn open(spec: DimensionSpec, store: Arc<dyn DimensionStore>) -> Result<Self> {
        spec.validate()?;
        let fields = spec.key.iter().map(|f| SortField::new(f.data_type().clone())).collect();
        let converter = RowConverter::new(fields)?;
        store.prepare(&spec).await?;
        let int_key =
            spec.key.len() == 1 && int_keys(&arrow_array::new_empty_array(spec.key[0].data_type())).is_some();
        let members = if int_key { Members::Int(HashMap::new()) } else { Members::Rows(HashMap::new()) };
        let cache = DimensionCache {
            spec: Arc::new(spec),
            store,
            converter,
            members: RwLock::new(members),
            create_lock: tokio::sync::Mutex::new(()),
            hits: AtomicU64::new(0),
            null_keys: AtomicU64::new(0),
            created: AtomicU64::new(0),
            store_calls: AtomicU64::new(0),
        };
        for batch in cache.store.load(&cache.spec).await? {
            cache.insert_loaded(&batch)?;
        }
        tracing::debug!(table = %cache.spec.table, members = cache.len(), "dimension cache loaded");
        Ok(cache)
    }

    /// The dimension this cache serves.
    pub fn spec(&self) -> &DimensionSpec {
        &self.spec
    }

    /// Members currently cached.
    pub fn len(&self) -> usize {
        self.members.read().expect("dimension cache poisoned").len()
    }

    /// True when no member is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Look-up counts so far.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            members: self.len() as u64,
            hits: self.hits.load(Ordering::Relaxed),
            null_keys: self.null_keys.load(Ordering::Relaxed),
            created: self.created.load(Ordering::Relaxed),
            store_calls: self.store_calls.load(Ordering::Relaxed),
        }
    }

    /// Resolves one surrogate key per row of `key_columns` (one array per natural-key column, in spec
    /// order), creating missing members without attributes.
    pub async fn resolve(&self, key_columns: &[ArrayRef]) -> Result<Int64Array> {
        self.resolve_with(key_columns, &[]).await
    }

    /// Like [`resolve`](Self::resolve), with `attributes` (one array per spec attribute, same rows)
    /// stored on members created by this call. Existing members keep their attributes.
    pub async fn resolve_with(
        &self,
        key_columns: &[ArrayRef],
        attributes: &[ArrayRef],
    ) -> Result<Int64Array> {
        let keys = self.cast_keys(key_columns)?;
        if !attributes.is_empty() && attributes.len() != self.spec.attributes.len() {
            return Err(DimError::InvalidSpec {
                table: self.spec.table.clone(),
                reason: format!(
                    "{} attribute columns given, spec has {}",
                    attributes.len(),
                    self.spec.attributes.len()
                ),
            });
        }
        let n = keys.first().map_or(0, |k| k.len());
        let nulls = key_nulls(&keys);
        let mut out = vec![0i64; n];
        let (mut hits, mut null_keys) = (0u64, 0u64);
        // Rows with a NULL key get the policy's member; the others are looked up.
        let mut lookup = |out: &mut [i64], find: &mut dyn FnMut(usize) -> Option<i64>| -> Result<()> {
            for (i, slot) in out.iter_mut().enumerate() {
                if nulls.as_ref().is_some_and(|nb| nb.is_null(i)) {
                    match self.spec.null_key {
                        NullKeyPolicy::Unknown { surrogate } => *slot = surrogate,
                        NullKeyPolicy::Error => {
                            return Err(DimError::NullKey { table: self.spec.table.clone(), row: i });
                        }
                    }
                    null_keys += 1;
                } else if let Some(k) = find(i) {
                    *slot = k;
                    hits += 1;
                }
            }
            Ok(())
        };
        let int_values = match &*self.members.read().expect("dimension cache poisoned") {
            Members::Int(_) => int_keys(&keys[0]),
            Members::Rows(_) => None,
        };
        let rows = match int_values {
            Some(_) => None,
            None => Some(self.converter.convert_columns(&keys)?),
        };
        // Rows whose key is not cached, grouped by key (the read lock is released before creating).
        let missing: Vec<(MemberKey<'_>, Vec<u32>)> = {
            let guard = self.members.read().expect("dimension cache poisoned");
            match (&*guard, &int_values, &rows) {
                (Members::Int(members), Some(values), _) => {
                    let mut missing: HashMap<i64, Vec<u32>> = HashMap::new();
                    lookup(&mut out, &mut |i| {
                        let k = members.get(&values[i]).copied();
                        if k.is_none() {
                            missing.entry(values[i]).or_default().push(i as u32);
                        }
                        k
                    })?;
                    missing.into_iter().map(|(v, r)| (MemberKey::Int(v), r)).collect()
                }
                (Members::Rows(members), None, Some(rows)) => {
                    let mut missing: HashMap<&[u8], Vec<u32>> = HashMap::new();
                    lookup(&mut out, &mut |i| {
                        let row = rows.row(i);
                        let k = members.get(row.as_ref()).copied();
                        if k.is_none() {
                            missing.entry(row.data()).or_default().push(i as u32);
                        }
                        k
                    })?;
                    missing.into_iter().map(|(b, r)| (MemberKey::Row(b), r)).collect()
                }
                _ => unreachable!("the key kind never changes"),
            }
        };
        self.hits.fetch_add(hits, Ordering::Relaxed);
        self.null_keys.fetch_add(null_keys, Ordering::Relaxed);
        if !missing.is_empty() {
            self.create_missing(&keys, attributes, missing, &mut out).await?;
        }
        Ok(Int64Array::from(out))
    }

    /// Creates (or finds) the members in `missing` (key bytes → rows) and fills their rows in `out`.
    async fn create_missing(
        &self,
        keys: &[ArrayRef],
        attributes: &[ArrayRef],
        missing: Vec<(MemberKey<'_>, Vec<u32>)>,
        out: &mut [i64],
    ) -> Result<()> {
        let _serial = self.create_lock.lock().await;
        // Another task may have created some of them while we waited.
        let mut still: Vec<(MemberKey<'_>, Vec<u32>)> = Vec::with_capacity(missing.len());
        {
            let members = self.members.read().expect("dimension cache poisoned");
            for (key, rows) in missing {
                match key.get(&members) {
                    Some(k) => rows.iter().for_each(|&r| out[r as usize] = k),
                    None => still.push((key, rows)),
                }
            }
        }
        if still.is_empty() {
            return Ok(());
        }
        // Create members in order of first appearance, so key assignment is deterministic.
        still.sort_unstable_by_key(|(_, rows)| rows[0]);
        let first_rows = UInt32Array::from_iter_values(still.iter().map(|(_, rows)| rows[0]));
        let mut columns = Vec::with_capacity(keys.len() + self.spec.attributes.len());
        for k in keys {
            columns.push(arrow_select::take::take(k.as_ref(), &first_rows, None)?);
        }
        if attributes.is_empty() {
            for f in &self.spec.attributes {
                columns.push(arrow_array::new_null_array(f.data_type(), still.len()));
            }
        } else {
            for (a, f) in attributes.iter().zip(&self.spec.attributes) {
                let taken = arrow_select::take::take(a.as_ref(), &first_rows, None)?;
                columns.push(cast_to(&taken, f, &self.spec.table)?);
            }
        }
        let batch = RecordBatch::try_new(self.spec.members_schema(), columns)?;
        self.store_calls.fetch_add(1, Ordering::Relaxed);
        let created = self.store.get_or_create(&self.spec, batch).await?;
        if created.len() != still.len() || created.null_count() > 0 {
            return Err(DimError::StoreContract {
                table: self.spec.table.clone(),
                expected: still.len(),
                got: created.len() - created.null_count(),
            });
        }
        self.created.fetch_add(still.len() as u64, Ordering::Relaxed);
        let mut members = self.members.write().expect("dimension cache poisoned");
        for ((key, rows), &k) in still.into_iter().zip(created.values().iter()) {
            rows.iter().for_each(|&r| out[r as usize] = k);
            key.insert(&mut members, k);
        }
        Ok(())
    }

    fn cast_keys(&self, key_columns: &[ArrayRef]) -> Result<Vec<ArrayRef>> {
        if key_columns.len() != self.spec.key.len() {
            return Err(DimError::InvalidSpec {
                table: self.spec.table.clone(),
                reason: format!(
                    "{} key columns given, natural key has {}",
                    key_columns.len(),
                    self.spec.key.len()
                ),
            });
        }
        key_columns.iter().zip(&self.spec.key).map(|(c, f)| cast_to(c, f, &self.spec.table)).collect()
    }

    /// Adds loaded members: key columns followed by the surrogate column.
    fn insert_loaded(&self, batch: &RecordBatch) -> Result<()> {
        let nkeys = self.spec.key.len();
        if batch.num_columns() < nkeys + 1 {
            return Err(DimError::InvalidSpec {
                table: self.spec.table.clone(),
                reason: format!(
                    "store loaded {} columns, expected {} key columns + surrogate",
                    batch.num_columns(),
                    nkeys
                ),
            });
        }
        let keys = self.cast_keys(&batch.columns()[..nkeys])?;
        let surrogate_field =
            arrow_schema::Field::new(&self.spec.surrogate, arrow_schema::DataType::Int64, false);
        let surrogate = cast_to(batch.column(batch.num_columns() - 1), &surrogate_field, &self.spec.table)?;
        let surrogate = surrogate.as_any().downcast_ref::<Int64Array>().expect("cast to Int64");
        let nulls = key_nulls(&keys);
        let skip = |i: usize| nulls.as_ref().is_some_and(|nb| nb.is_null(i)) || surrogate.is_null(i);
        let mut members = self.members.write().expect("dimension cache poisoned");
        // The unknown member (NULL key) is resolved by policy, not by look-up.
        match &mut *members {
            Members::Int(m) => {
                let values = int_keys(&keys[0]).expect("an integer-like key column");
                for (i, v) in values.into_iter().enumerate().filter(|(i, _)| !skip(*i)) {
                    m.insert(v, surrogate.value(i));
                }
            }
            Members::Rows(m) => {
                let rows: Rows = self.converter.convert_columns(&keys)?;
                for i in (0..batch.num_rows()).filter(|i| !skip(*i)) {
                    m.insert(rows.row(i).data().into(), surrogate.value(i));
                }
            }
        }
        Ok(())
    }
}

/// A natural key not yet cached: its row bytes or its integer value.
enum MemberKey<'a> {
    Row(&'a [u8]),
    Int(i64),
}

impl MemberKey<'_> {
    fn get(&self, members: &Members) -> Option<i64> {
        match (self, members) {
            (MemberKey::Row(b), Members::Rows(m)) => m.get(*b).copied(),
            (MemberKey::Int(v), Members::Int(m)) => m.get(v).copied(),
            _ => unreachable!("a key of the cache's own kind"),
        }
    }

    fn insert(self, members: &mut Members, surrogate: i64) {
        match (self, members) {
            (MemberKey::Row(b), Members::Rows(m)) => {
                m.insert(b.into(), surrogate);
            }
            (MemberKey::Int(v), Members::Int(m)) => {
                m.insert(v, surrogate);
            }
            _ => unreachable!("a key of the cache's own kind"),
        }
    }
}

/// Rows where any key column is NULL (None when no key column has NULLs).
fn key_nulls(keys: &[ArrayRef]) -> Option<NullBuffer> {
    keys.iter().fold(None, |acc, k| NullBuffer::union(acc.as_ref(), k.logical_nulls().as_ref()))
}

/// Casts `column` to the type of key (or surrogate) field `to` with [`etlkit_core::cast_strict`]: a
/// value that does not convert, or that the cast would change (`2.5` into an integer key would find
/// the member of `2`), is an error naming the dimension, the field and the value.
fn cast_to(column: &ArrayRef, to: &arrow_schema::Field, table: &str) -> Result<ArrayRef> {
    let error = |source| DimError::KeyColumn {
        table: table.to_owned(),
        column: to.name().to_owned(),
        key: to.name().to_owned(),
        source: Some(source),
    };
    let (cast, bad) = etlkit_core::cast_strict(column, to.data_type()).map_err(error)?;
    match bad.first() {
        None => Ok(cast),
        Some((row, reason)) => {
            let value = arrow_cast::display::array_value_to_string(column, *row).unwrap_or_default();
            Err(error(arrow_schema::ArrowError::CastError(format!(
                "batch row {row}: value {value:?}: {reason}"
            ))))
        }
    }
}

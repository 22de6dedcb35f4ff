//! DimensionCache logic against an in-memory store that records every call. (Concurrency against a
//! real database is tested in etlkit-postgres with its PostgreSQL store.)

use std::sync::{Arc, Mutex};

use arrow_array::{Array, ArrayRef, Date32Array, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{DataType, Field};
use etlkit_dimcache::{DimError, DimensionCache, DimensionSpec, DimensionStore, NullKeyPolicy, Result};

/// A stored member: arrow-row key bytes, surrogate key, attributes as text.
type Member = (Vec<u8>, i64, Vec<String>);

/// Members keyed by their arrow-row encoding; records every get_or_create batch.
#[derive(Default)]
struct RecordingStore {
    members: Mutex<Vec<Member>>,
    calls: Mutex<Vec<RecordBatch>>,
    preload: Vec<RecordBatch>,
}

fn encode(spec: &DimensionSpec, batch: &RecordBatch) -> Vec<Vec<u8>> {
    let conv =
        RowConverter::new(spec.key.iter().map(|f| SortField::new(f.data_type().clone())).collect()).unwrap();
    let rows = conv.convert_columns(&batch.columns()[..spec.key.len()]).unwrap();
    (0..batch.num_rows()).map(|i| rows.row(i).data().to_vec()).collect()
}

#[async_trait::async_trait]
impl DimensionStore for RecordingStore {
    async fn prepare(&self, _spec: &DimensionSpec) -> Result<()> {
        Ok(())
    }
    async fn load(&self, _spec: &DimensionSpec) -> Result<Vec<RecordBatch>> {
        Ok(self.preload.clone())
    }
    async fn get_or_create(&self, spec: &DimensionSpec, members: RecordBatch) -> Result<Int64Array> {
        self.calls.lock().unwrap().push(members.clone());
        let attrs: Vec<String> = (spec.key.len()..members.num_columns())
            .map(|c| {
                format!("{:?}", members.column(c).as_any().downcast_ref::<StringArray>().map(|a| a.value(0)))
            })
            .collect();
        let mut all = self.members.lock().unwrap();
        let keys = encode(spec, &members)
            .into_iter()
            .map(|bytes| match all.iter().find(|(b, _, _)| *b == bytes) {
                Some((_, k, _)) => *k,
                None => {
                    let k = 100 + all.len() as i64;
                    all.push((bytes, k, attrs.clone()));
                    k
                }
            })
            .collect();
        Ok(keys)
    }
}

fn int_spec() -> DimensionSpec {
    DimensionSpec::new(
        "dim_location",
        vec![Field::new("location_id", DataType::Int32, false)],
        "location_key",
    )
}

fn arr(a: impl Array + 'static) -> ArrayRef {
    Arc::new(a)
}

#[tokio::test]
async fn new_members_are_created_once_per_batch_and_then_cached() {
    let store = Arc::new(RecordingStore::default());
    let cache = DimensionCache::open(int_spec(), store.clone()).await.unwrap();
    let k1 = cache.resolve(&[arr(Int32Array::from(vec![5, 9, 5, 5, 9, 3]))]).await.unwrap();
    assert_eq!(k1.values().to_vec(), vec![100, 101, 100, 100, 101, 102]);
    // One store call with the three distinct members, in order of first appearance.
    let calls = store.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].column(0).as_any().downcast_ref::<Int32Array>().unwrap().values().to_vec(),
        vec![5, 9, 3]
    );
    // Second batch: all hits except one new member.
    let k2 = cache.resolve(&[arr(Int32Array::from(vec![3, 9, 7]))]).await.unwrap();
    assert_eq!(k2.values().to_vec(), vec![102, 101, 103]);
    let s = cache.stats();
    // Hits are rows found in the cache before asking the store: only 3 and 9 of the second batch.
    assert_eq!((s.members, s.created, s.store_calls, s.hits), (4, 4, 2, 2));
}

#[tokio::test]
async fn preloaded_members_resolve_without_store_calls_and_types_are_cast() {
    let preload = RecordBatch::try_from_iter([
        ("location_id", arr(Int32Array::from(vec![1, 2]))),
        ("location_key", arr(Int64Array::from(vec![11, 22]))),
    ])
    .unwrap();
    let store = Arc::new(RecordingStore { preload: vec![preload], ..Default::default() });
    let cache = DimensionCache::open(int_spec(), store.clone()).await.unwrap();
    // Int64 and Utf8 input columns with the same logical values hit the Int32-keyed members.
    let a = cache.resolve(&[arr(Int64Array::from(vec![2, 1]))]).await.unwrap();
    let b = cache.resolve(&[arr(StringArray::from(vec!["1", "2"]))]).await.unwrap();
    assert_eq!(a.values().to_vec(), vec![22, 11]);
    assert_eq!(b.values().to_vec(), vec![11, 22]);
    assert!(store.calls.lock().unwrap().is_empty());
    // A value that cannot be a key is an error naming the dimension and column.
    let err = cache.resolve(&[arr(StringArray::from(vec!["x"]))]).await.unwrap_err();
    assert!(matches!(err, DimError::KeyColumn { ref table, .. } if table == "dim_location"), "{err}");
    // Nor may a cast change a key: 2.5 is not the member 2.
    let err = cache.resolve(&[arr(arrow_array::Float64Array::from(vec![1.0, 2.5]))]).await.unwrap_err();
    let chain = std::error::Error::source(&err).map(|e| e.to_string()).unwrap_or_default();
    assert!(
        matches!(err, DimError::KeyColumn { .. }) && chain.contains("batch row 1: value \"2.5\""),
        "{err}: {chain}"
    );
    let whole = cache.resolve(&[arr(arrow_array::Float64Array::from(vec![1.0, 2.0]))]).await.unwrap();
    assert_eq!(whole.values().to_vec(), vec![11, 22]);
}

#[tokio::test]
async fn null_keys_follow_the_policy() {
    let cache = DimensionCache::open(int_spec(), Arc::new(RecordingStore::default())).await.unwrap();
    let k = cache.resolve(&[arr(Int32Array::from(vec![Some(4), None]))]).await.unwrap();
    assert_eq!(k.values().to_vec(), vec![100, -1]);
    assert_eq!(cache.stats().null_keys, 1);

    let spec = DimensionSpec { null_key: NullKeyPolicy::Unknown { surrogate: 0 }, ..int_spec() };
    let cache = DimensionCache::open(spec, Arc::new(RecordingStore::default())).await.unwrap();
    assert_eq!(cache.resolve(&[arr(Int32Array::from(vec![None::<i32>]))]).await.unwrap().value(0), 0);

    let spec = DimensionSpec { null_key: NullKeyPolicy::Error, ..int_spec() };
    let cache = DimensionCache::open(spec, Arc::new(RecordingStore::default())).await.unwrap();
    let err = cache.resolve(&[arr(Int32Array::from(vec![Some(1), None]))]).await.unwrap_err();
    assert!(matches!(err, DimError::NullKey { row: 1, .. }), "{err}");
}

#[tokio::test]
async fn composite_keys_and_attributes() {
    let mut spec = DimensionSpec::new(
        "dim_trip_day",
        vec![Field::new("vendor", DataType::Int32, false), Field::new("day", DataType::Date32, false)],
        "trip_day_key",
    );
    spec.attributes = vec![Field::new("label", DataType::Utf8, true)];
    let store = Arc::new(RecordingStore::default());
    let cache = DimensionCache::open(spec, store.clone()).await.unwrap();
    let vendor = arr(Int32Array::from(vec![1, 1, 2, 1]));
    let day = arr(Date32Array::from(vec![19_000, 19_001, 19_000, 19_000]));
    let label = arr(StringArray::from(vec!["a", "b", "c", "a"]));
    let k = cache.resolve_with(&[vendor, day], &[label]).await.unwrap();
    assert_eq!(k.values().to_vec(), vec![100, 101, 102, 100]);
    let call = store.calls.lock().unwrap()[0].clone();
    assert_eq!(call.num_columns(), 3, "key columns then attributes");
    assert_eq!(call.column(2).as_any().downcast_ref::<StringArray>().unwrap().value(1), "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_resolvers_meeting_the_same_new_members_agree() {
    let store = Arc::new(RecordingStore::default());
    let cache = Arc::new(DimensionCache::open(int_spec(), store.clone()).await.unwrap());
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8 {
        let cache = cache.clone();
        tasks.spawn(async move {
            let ids: Vec<i32> = (0..500).map(|i| (i * 7 + t) % 50).collect();
            let keys = cache.resolve(&[arr(Int32Array::from(ids.clone()))]).await.unwrap();
            ids.into_iter().zip(keys.values().iter().copied()).collect::<Vec<_>>()
        });
    }
    let mut seen = std::collections::HashMap::new();
    while let Some(pairs) = tasks.join_next().await {
        for (id, key) in pairs.unwrap() {
            assert_eq!(*seen.entry(id).or_insert(key), key, "id {id} got two keys");
        }
    }
    assert_eq!(seen.len(), 50);
    assert_eq!(store.members.lock().unwrap().len(), 50, "one member per natural key");
    let mut keys: Vec<i64> = seen.values().copied().collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), 50, "distinct members get distinct keys");
}

#[tokio::test]
async fn invalid_specs_are_refused() {
    let empty = DimensionSpec::new("d", vec![], "k");
    let err = DimensionCache::open(empty, Arc::new(RecordingStore::default())).await.unwrap_err();
    assert!(matches!(err, DimError::InvalidSpec { .. }));
    let dup = DimensionSpec::new("d", vec![Field::new("k", DataType::Int32, false)], "k");
    assert!(dup.validate().is_err());
}

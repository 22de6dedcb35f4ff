//! PgDimensionStore and PgStarSink against a real, throwaway PostgreSQL (etlkit-testkit;
//! `DATABASE_URL` reused when set). Small data only.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{
    ArrayRef, FixedSizeBinaryArray, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field};
use etlkit_core::{MemorySource, Pipeline, PipelineConfig};
use etlkit_dimcache::{DimensionCache, DimensionSpec, DimensionStore, FactRole, NullKeyPolicy, StarSchema};
use etlkit_postgres::{
    DatabaseUrl, PgDimensionConfig, PgDimensionStore, PgStarConfig, PgStarSink, StarLoadMode, TableRef,
    connect,
};
use etlkit_testkit::PgServer;
use sqlx::{AssertSqlSafe, PgPool, Row};

async fn fresh_url() -> String {
    static PG: std::sync::LazyLock<Arc<PgServer>> =
        std::sync::LazyLock::new(|| PgServer::start().expect("test PostgreSQL"));
    tokio::task::spawn_blocking(|| PG.fresh_database()).await.unwrap().expect("test PostgreSQL")
}

async fn pool(url: &str, n: u32) -> PgPool {
    connect(&DatabaseUrl::new(url), n, "etlkit-dimension-test").await.unwrap()
}

async fn exec(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(pool).await.unwrap();
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query(AssertSqlSafe(sql.to_owned())).fetch_one(pool).await.unwrap().get(0)
}

fn location_spec() -> DimensionSpec {
    let mut spec = DimensionSpec::new(
        "dim_location",
        vec![Field::new("LocationID", DataType::Int32, false)],
        "location_key",
    );
    spec.attributes = vec![Field::new("borough", DataType::Utf8, true)];
    spec
}

fn arr(a: impl arrow_array::Array + 'static) -> ArrayRef {
    Arc::new(a)
}

async fn open(url: &str, spec: DimensionSpec) -> DimensionCache {
    let store = PgDimensionStore::new(pool(url, 2).await, PgDimensionConfig::default()).unwrap();
    DimensionCache::open(spec, Arc::new(store)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_caches_create_each_member_once_with_the_same_key() {
    let url = fresh_url().await;
    // Four caches with their own pools: like four processes meeting the same new members at once.
    let mut caches = Vec::new();
    for _ in 0..4 {
        caches.push(Arc::new(open(&url, location_spec()).await));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (w, cache) in caches.iter().enumerate() {
        let cache = cache.clone();
        tasks.spawn(async move {
            let mut seen: HashMap<i32, i64> = HashMap::new();
            // Three overlapping rounds in a worker-specific order: 1..=300 in total.
            for round in 0..3 {
                let mut ids: Vec<i32> =
                    (1 + round * 100..=(round + 1) * 100 + 50).map(|i| i.min(300)).collect();
                if w % 2 == 1 {
                    ids.reverse();
                }
                ids.rotate_left(w * 7);
                let keys = cache.resolve(&[arr(Int32Array::from(ids.clone()))]).await.unwrap();
                for (id, key) in ids.iter().zip(keys.values()) {
                    assert_eq!(*seen.entry(*id).or_insert(*key), *key, "key of {id} changed");
                }
            }
            seen
        });
    }
    let mut results = Vec::new();
    while let Some(r) = tasks.join_next().await {
        results.push(r.unwrap());
    }
    let check = pool(&url, 1).await;
    assert_eq!(
        scalar(&check, "SELECT count(*) FROM dim_location WHERE \"LocationID\" IS NOT NULL").await,
        300
    );
    assert_eq!(scalar(&check, "SELECT count(DISTINCT location_key) FROM dim_location").await, 301);
    // Every worker got the database's key for every member.
    let rows =
        sqlx::query("SELECT \"LocationID\", location_key FROM dim_location WHERE \"LocationID\" IS NOT NULL")
            .fetch_all(&check)
            .await
            .unwrap();
    let db: HashMap<i32, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for seen in &results {
        assert_eq!(seen.len(), 300);
        for (id, key) in seen {
            assert_eq!(db[id], *key);
        }
    }
    // A cache opened now preloads everything and never asks the store again.
    let again = open(&url, location_spec()).await;
    let keys = again.resolve(&[arr(Int32Array::from((1..=300).collect::<Vec<_>>()))]).await.unwrap();
    assert_eq!(again.stats().store_calls, 0);
    for (i, k) in keys.values().iter().enumerate() {
        assert_eq!(db[&(i as i32 + 1)], *k);
    }
}

#[tokio::test]
async fn null_keys_go_to_the_unknown_member_and_composite_keys_work() {
    let url = fresh_url().await;
    let mut spec = DimensionSpec::new(
        "dim_route",
        vec![Field::new("from_zone", DataType::Utf8, false), Field::new("to_zone", DataType::Int64, false)],
        "route_key",
    );
    spec.null_key = NullKeyPolicy::Unknown { surrogate: 0 };
    let cache = open(&url, spec.clone()).await;
    let from = arr(StringArray::from(vec![Some("JFK"), None, Some("JFK"), Some("LGA"), Some("JFK")]));
    let to = arr(Int64Array::from(vec![Some(1), Some(2), Some(1), None, Some(2)]));
    let keys = cache.resolve(&[from, to]).await.unwrap();
    let k = keys.values();
    assert_eq!((k[1], k[3]), (0, 0), "NULL in any key column → unknown member");
    assert_eq!(k[0], k[2]);
    assert_ne!(k[0], k[4]);
    let p = pool(&url, 1).await;
    assert_eq!(scalar(&p, "SELECT count(*) FROM dim_route").await, 3); // 2 members + unknown
    assert_eq!(
        scalar(&p, "SELECT count(*) FROM dim_route WHERE route_key = 0 AND from_zone IS NULL").await,
        1
    );
    // prepare is idempotent (the unknown member stays single).
    let store = PgDimensionStore::new(p.clone(), PgDimensionConfig::default()).unwrap();
    store.prepare(&spec).await.unwrap();
    assert_eq!(scalar(&p, "SELECT count(*) FROM dim_route WHERE route_key = 0").await, 1);
}

/// A small trips table + fact table with a role-playing location dimension.
async fn star_fixture(url: &str) -> (PgPool, StarSchema, RecordBatch) {
    let p = pool(url, 4).await;
    exec(
        &p,
        "CREATE TABLE trips (pu integer, dropoff integer, fare double precision, row_hash bytea NOT NULL UNIQUE); \
         CREATE TABLE facts (pu_key bigint NOT NULL, do_key bigint NOT NULL, fare double precision, row_hash bytea)",
    )
    .await;
    let cache = Arc::new(open(url, location_spec()).await);
    let role = |src: &str, fact: &str| FactRole {
        cache: cache.clone(),
        source_columns: vec![src.into()],
        attribute_columns: Vec::new(),
        fact_column: fact.into(),
    };
    let n = 200;
    let hashes: Vec<[u8; 32]> =
        (0..n).map(|i| [i as u8 ^ 0x5a; 32].map(|b| b.wrapping_add((i / 256) as u8))).collect();
    let batch = RecordBatch::try_from_iter([
        ("pu", arr(Int32Array::from_iter((0..n).map(|i| if i % 50 == 0 { None } else { Some(i % 20 + 1) })))),
        ("dropoff", arr(Int32Array::from_iter_values((0..n).map(|i| i % 30 + 10)))),
        ("fare", arr(Float64Array::from_iter_values((0..n).map(|i| i as f64 / 4.0)))),
        ("row_hash", arr(FixedSizeBinaryArray::try_from_iter(hashes.into_iter()).unwrap())),
    ])
    .unwrap();
    let star = StarSchema::new(
        &batch.schema(),
        vec![role("pu", "pu_key"), role("dropoff", "do_key")],
        vec!["fare".into(), "row_hash".into()],
    )
    .unwrap();
    (p, star, batch)
}

async fn load(
    p: &PgPool,
    star: StarSchema,
    batch: RecordBatch,
    mode: StarLoadMode,
) -> etlkit_core::LoadStats {
    let sink = PgStarSink::new(
        p.clone(),
        star,
        PgStarConfig {
            rows_table: Some(TableRef::new("trips")),
            fact_table: TableRef::new("facts"),
            conflict_key: Some("row_hash".into()),
            mode,
            ..Default::default()
        },
    )
    .unwrap();
    let source = MemorySource::new(batch.schema(), vec![batch]).unwrap();
    let cfg = PipelineConfig { workers: 3, batch_size: 32, ..Default::default() };
    Pipeline::new(source, Arc::new(sink)).config(cfg).run().await.unwrap()
}

#[tokio::test]
async fn star_sink_loads_rows_and_facts_together_with_role_playing_keys() {
    let url = fresh_url().await;
    let (p, star, batch) = star_fixture(&url).await;
    let stats = load(&p, star.clone(), batch.clone(), StarLoadMode::Copy).await;
    assert_eq!((stats.counter("rows_inserted"), stats.counter("fact_inserted")), (200, 200));
    assert_eq!(stats.counter("transactions"), 7); // ceil(200 / 32)
    assert_eq!(scalar(&p, "SELECT count(*) FROM trips").await, 200);
    assert_eq!(scalar(&p, "SELECT count(*) FROM facts").await, 200);
    // Role-playing: both roles resolve through the one dim_location; every fact key joins back to
    // the natural key of its own role, and NULL pickups went to the unknown member.
    let wrong = scalar(
        &p,
        "SELECT count(*) FROM facts f JOIN trips t USING (row_hash) \
         LEFT JOIN dim_location p ON p.location_key = f.pu_key \
         JOIN dim_location d ON d.location_key = f.do_key \
         WHERE d.\"LocationID\" <> t.\"dropoff\" OR p.\"LocationID\" IS DISTINCT FROM t.pu",
    )
    .await;
    assert_eq!(wrong, 0);
    assert_eq!(scalar(&p, "SELECT count(*) FROM facts WHERE pu_key = -1").await, 4);
    // 1..=20 pickups and 10..=39 drop-offs share members 10..=20: 39 members + unknown.
    assert_eq!(scalar(&p, "SELECT count(*) FROM dim_location").await, 40);

    // Loading the same rows again: the COPY hits the UNIQUE constraint, every batch is redone by the
    // merge path, and nothing is added to either table.
    let again = load(&p, star.clone(), batch.clone(), StarLoadMode::Copy).await;
    assert_eq!((again.counter("rows_inserted"), again.counter("conflicts")), (0, 200));
    assert_eq!(again.counter("merged_batches"), 7);
    // Merge mode with half the rows new.
    exec(&p, "DELETE FROM facts WHERE row_hash IN (SELECT row_hash FROM trips WHERE fare >= 25); DELETE FROM trips WHERE fare >= 25").await;
    let merged = load(&p, star, batch, StarLoadMode::Merge).await;
    assert_eq!((merged.counter("rows_inserted"), merged.counter("fact_inserted")), (100, 100));
    assert_eq!(merged.counter("conflicts"), 100);
    assert_eq!(scalar(&p, "SELECT count(*) FROM trips").await, 200);
    assert_eq!(scalar(&p, "SELECT count(*) FROM facts").await, 200);
    let f = sqlx::query("SELECT sum(fare)::float8 FROM facts").fetch_one(&p).await.unwrap();
    assert_eq!(f.get::<f64, _>(0), (0..200).map(|i| i as f64 / 4.0).sum::<f64>());
}

#[tokio::test]
async fn a_second_star_run_reports_only_its_own_counters() {
    let url = fresh_url().await;
    let (p, star, batch) = star_fixture(&url).await;
    let first = load(&p, star.clone(), batch.clone(), StarLoadMode::Copy).await;
    // One counter per dimension (both roles use dim_location): 1..=20 and 10..=39, 39 members.
    assert_eq!(first.counter("dim_location_created"), 39);
    // Same caches, same rows: nothing new anywhere, and the report says so.
    let second = load(&p, star, batch, StarLoadMode::Copy).await;
    assert!(second.counters.contains_key("dim_location_created"));
    assert_eq!(second.counter("dim_location_created"), 0);
    assert_eq!(second.counter("rows_inserted"), 0);
    assert_eq!(scalar(&p, "SELECT count(*) FROM dim_location").await, 40);
}

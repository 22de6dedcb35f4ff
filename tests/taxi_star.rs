//! The taxi star-schema job (`examples/taxi_star.rs`, included here as a module) against a real,
//! throwaway PostgreSQL (etlkit-testkit; `DATABASE_URL` reused when set). A few thousand rows each.

#[path = "../examples/taxi_star.rs"]
#[allow(unreachable_pub)]
mod taxi_star;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{Field, Schema};
use etlkit_hash::{Algorithm, RowHasher};
use etlkit_postgres::sqlx::{self, AssertSqlSafe, PgPool, Row};
use etlkit_postgres::{DatabaseUrl, connect};
use etlkit_source::OnError;
use etlkit_testkit::{PgServer, taxi};
use taxi_star::{DedupMode, JobConfig, JobReport, run_job};

async fn fresh_url() -> String {
    static PG: std::sync::LazyLock<Arc<PgServer>> =
        std::sync::LazyLock::new(|| PgServer::start().expect("test PostgreSQL"));
    tokio::task::spawn_blocking(|| PG.fresh_database()).await.unwrap().expect("test PostgreSQL")
}

async fn pool(url: &str) -> PgPool {
    connect(&DatabaseUrl::new(url), 2, "etlkit-taxi-test").await.unwrap()
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query(AssertSqlSafe(sql.to_owned())).fetch_one(pool).await.unwrap().get(0)
}

fn job(input: &Path) -> JobConfig {
    JobConfig { input: input.display().to_string(), batch_size: 1000, workers: 2, ..Default::default() }
}

/// The older snake_case TLC naming, plus a pandas-style unnamed index column first.
fn legacy(batch: &RecordBatch) -> RecordBatch {
    fn rename(n: &str) -> &str {
        match n {
            "VendorID" => "vendor_id",
            "tpep_pickup_datetime" => "pickup_datetime",
            "tpep_dropoff_datetime" => "dropoff_datetime",
            "RatecodeID" => "rate_code",
            "PULocationID" => "pickup_location_id",
            "DOLocationID" => "dropoff_location_id",
            "improvement_surcharge" => "imp_surcharge",
            "Airport_fee" => "airport_fee",
            other => other,
        }
    }
    let mut fields = vec![Field::new("", arrow_schema::DataType::Int64, false)];
    fields.extend(batch.schema().fields().iter().map(|f| f.as_ref().clone().with_name(rename(f.name()))));
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(0..batch.num_rows() as i64))];
    columns.extend(batch.columns().iter().cloned());
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
}

fn distinct_hashes(batch: &RecordBatch, algorithm: Algorithm) -> HashSet<Vec<u8>> {
    let names: Vec<String> = taxi::yellow_trips_schema().fields().iter().map(|f| f.name().clone()).collect();
    let digests = RowHasher::new(algorithm, names).hash_batch(batch).unwrap();
    (0..digests.len()).map(|i| digests.value(i).to_vec()).collect()
}

fn assert_adds_up(r: &JobReport) {
    assert_eq!(r.rows_read, r.trips_inserted + r.duplicates_skipped + r.rejected, "{r:?}");
    assert_eq!(r.trips_inserted, r.fact_rows, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_namings_duplicate_files_and_reruns_store_each_trip_once() {
    let dir = tempfile::tempdir().unwrap();
    let trips = taxi::yellow_trips(3000, 7, 0.02); // 60 planted duplicates
    let expected = distinct_hashes(&trips, Algorithm::Sha256);
    assert_eq!(expected.len(), 2940);
    // The same trips as Parquet in the current naming and as CSV in the old naming (with an index
    // column), plus a second copy of the Parquet file.
    taxi::write_parquet(dir.path().join("a_current.parquet"), std::slice::from_ref(&trips)).unwrap();
    taxi::write_parquet(dir.path().join("b_copy.parquet"), std::slice::from_ref(&trips)).unwrap();
    taxi::write_csv(dir.path().join("c_legacy.csv"), &[legacy(&trips)]).unwrap();
    let url = fresh_url().await;

    let first = run_job(&job(dir.path()), &url).await.unwrap();
    assert_adds_up(&first);
    assert_eq!((first.rows_read, first.trips_inserted, first.rejected), (9000, 2940, 0));
    assert_eq!(first.duplicates_skipped, 60 + 3000 + 3000);

    let p = pool(&url).await;
    let stored: HashSet<Vec<u8>> = sqlx::query("SELECT row_hash FROM yellow_taxi_trips")
        .fetch_all(&p)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, expected, "row_hash is the etlkit-row-v1 hash of the logical trip values");
    assert_eq!(scalar(&p, "SELECT count(*) FROM fact_trip").await, 2940);
    assert_eq!(
        scalar(&p, "SELECT count(*) FROM fact_trip f JOIN yellow_taxi_trips t USING (row_hash)").await,
        2940
    );

    // Running the same input again inserts nothing, in every de-duplication mode; `Auto` with no
    // memory budget de-duplicates in the database.
    for (dedup, budget, merged) in
        [(DedupMode::Memory, 192, false), (DedupMode::Database, 192, true), (DedupMode::Auto, 0, true)]
    {
        let cfg = JobConfig { dedup, dedup_memory_mb: budget, ..job(dir.path()) };
        let again = run_job(&cfg, &url).await.unwrap();
        assert_adds_up(&again);
        assert_eq!((again.rows_read, again.trips_inserted, again.duplicates_skipped), (9000, 0, 9000));
        assert_eq!(again.merged_batches > 0, merged, "{dedup:?} budget {budget}: {again:?}");
    }
    assert_eq!(scalar(&p, "SELECT count(*) FROM yellow_taxi_trips").await, 2940);
    assert_eq!(scalar(&p, "SELECT count(*) FROM fact_trip").await, 2940);
    // Another hash algorithm would not recognise the stored trips: refused.
    let other = run_job(&JobConfig { hash: Algorithm::Blake3, ..job(dir.path()) }, &url).await.unwrap_err();
    assert!(other.to_string().contains("sha256"), "{other}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_passes_store_each_trip_once_and_count_rejects_once() {
    let dir = tempfile::tempdir().unwrap();
    let trips = taxi::yellow_trips(2000, 11, 0.03); // 60 planted duplicates
    let expected = distinct_hashes(&trips, Algorithm::Sha256);
    taxi::write_parquet(dir.path().join("a.parquet"), std::slice::from_ref(&trips)).unwrap();
    taxi::write_csv(dir.path().join("b_legacy.csv"), &[legacy(&trips)]).unwrap();
    // One row that does not parse: rejected once, not once per pass.
    let csv = std::fs::read_to_string(dir.path().join("b_legacy.csv")).unwrap();
    let mut lines: Vec<&str> = csv.lines().collect();
    lines.push("0,2,not a time,2024-01-01 10:00:00,1,1.0,1,N,1,2,1,1.0,0,0,0,0,0,1.0,0,0");
    std::fs::write(dir.path().join("c_bad.csv"), format!("{}\n{}\n", lines[0], lines.last().unwrap()))
        .unwrap();
    let url = fresh_url().await;
    let cfg = |passes| JobConfig { dedup: DedupMode::Memory, dedup_passes: Some(passes), ..job(dir.path()) };

    let first = run_job(&cfg(3), &url).await.unwrap();
    assert_adds_up(&first);
    assert_eq!(first.dedup_passes, 3);
    assert_eq!((first.rows_read, first.trips_inserted, first.rejected), (4001, 1940, 1), "{first:?}");
    let p = pool(&url).await;
    let stored: HashSet<Vec<u8>> = sqlx::query("SELECT row_hash FROM yellow_taxi_trips")
        .fetch_all(&p)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, expected);
    assert_eq!(scalar(&p, "SELECT count(*) FROM fact_trip").await, 1940);
    // A re-run in another number of passes: each pass seeds its own range of the stored hashes.
    let again = run_job(&cfg(4), &url).await.unwrap();
    assert_adds_up(&again);
    assert_eq!((again.rows_read, again.trips_inserted, again.duplicates_skipped), (4001, 0, 4000));
    assert_eq!(scalar(&p, "SELECT count(*) FROM yellow_taxi_trips").await, 1940);
    assert_eq!(run_job(&job(dir.path()), &url).await.unwrap().dedup_passes, 1, "auto: one pass fits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_decides_the_number_of_passes() {
    let dir = tempfile::tempdir().unwrap();
    let trips = taxi::yellow_trips(40_000, 17, 0.01);
    let distinct = distinct_hashes(&trips, Algorithm::Sha256).len() as u64;
    let input = dir.path().join("trips.parquet");
    taxi::write_parquet(&input, std::slice::from_ref(&trips)).unwrap();
    let url = fresh_url().await;
    // 1 MiB holds the seen-set of ~30 000 rows: 40 000 input rows take two passes, and the re-run
    // (40 000 table rows + 40 000 input rows) three.
    let small = JobConfig { dedup_memory_mb: 1, batch_size: 4096, ..job(&input) };
    let first = run_job(&small, &url).await.unwrap();
    assert_adds_up(&first);
    assert_eq!((first.dedup_passes, first.trips_inserted), (2, distinct), "{first:?}");
    let again = run_job(&small, &url).await.unwrap();
    assert_eq!((again.dedup_passes, again.trips_inserted, again.duplicates_skipped), (3, 0, 40_000));
    let roomy = run_job(&JobConfig { batch_size: 4096, ..job(&input) }, &url).await.unwrap();
    assert_eq!((roomy.dedup_passes, roomy.trips_inserted), (1, 0));
    let p = pool(&url).await;
    assert_eq!(scalar(&p, "SELECT count(DISTINCT row_hash) FROM yellow_taxi_trips").await as u64, distinct);
    assert_eq!(scalar(&p, "SELECT count(*) FROM fact_trip").await as u64, distinct);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_keys_role_playing_locations_unknown_members_and_zones() {
    let dir = tempfile::tempdir().unwrap();
    let trips = taxi::yellow_trips(2000, 11, 0.0);
    let input = dir.path().join("trips.parquet");
    taxi::write_parquet(&input, std::slice::from_ref(&trips)).unwrap();
    let zones = dir.path().join("zones.csv");
    std::fs::write(&zones, "LocationID,Borough,Zone,service_zone\n132,Queens,JFK Airport,Airports\n161,Manhattan,Midtown Center,Yellow Zone\n999,Nowhere,Unused,N/A\n").unwrap();
    let url = fresh_url().await;
    let r = run_job(&JobConfig { zones: Some(zones), batch_size: 300, ..job(&input) }, &url).await.unwrap();
    assert_adds_up(&r);
    assert_eq!(r.trips_inserted, 2000);
    assert_eq!(r.transactions, 7, "--batch-size 300: one transaction per batch of 300 rows");
    let p = pool(&url).await;

    // Every fact key joins back to its own natural key: pickup and drop-off through one dim_location.
    let mismatched = scalar(
        &p,
        r#"SELECT count(*) FROM fact_trip f JOIN yellow_taxi_trips t USING (row_hash)
           JOIN dim_location pu ON pu.location_key = f.pickup_location_key
           JOIN dim_location dl ON dl.location_key = f.dropoff_location_key
           JOIN dim_vendor v ON v.vendor_key = f.vendor_key
           JOIN dim_payment_type pt ON pt.payment_type_key = f.payment_type_key
           JOIN dim_rate_code rc ON rc.rate_code_key = f.rate_code_key
           JOIN dim_date d ON d.date_key = f.pickup_date_key
           WHERE pu."LocationID" <> t."PULocationID" OR dl."LocationID" <> t."DOLocationID"
              OR v.vendor_id <> t."VendorID" OR pt.payment_type <> t.payment_type
              OR rc.rate_code_id IS DISTINCT FROM t."RatecodeID"
              OR d.date <> t.tpep_pickup_datetime::date"#,
    )
    .await;
    assert_eq!(mismatched, 0);
    // Pickup and drop-off zones share members: one row per distinct LocationID (+ unknown).
    let locations = scalar(
        &p,
        r#"SELECT count(*) FROM (SELECT "PULocationID" FROM yellow_taxi_trips UNION SELECT "DOLocationID"
           FROM yellow_taxi_trips UNION SELECT 132 UNION SELECT 161 UNION SELECT 999) x"#,
    )
    .await;
    assert_eq!(
        scalar(&p, r#"SELECT count(*) FROM dim_location WHERE "LocationID" IS NOT NULL"#).await,
        locations
    );
    // NULL RatecodeID (the TLC "missing metadata" rows) → the unknown member -1.
    let null_rates = scalar(&p, r#"SELECT count(*) FROM yellow_taxi_trips WHERE "RatecodeID" IS NULL"#).await;
    assert!(null_rates > 20, "the generator plants ~4.5 % NULL rate codes");
    assert_eq!(scalar(&p, "SELECT count(*) FROM fact_trip WHERE rate_code_key = -1").await, null_rates);
    assert_eq!(
        scalar(&p, "SELECT count(*) FROM dim_rate_code WHERE rate_code_key = -1 AND rate_code_id IS NULL")
            .await,
        1
    );
    // Zones and descriptions.
    let jfk: String = sqlx::query(r#"SELECT zone FROM dim_location WHERE "LocationID" = 132"#)
        .fetch_one(&p)
        .await
        .unwrap()
        .get(0);
    assert_eq!(jfk, "JFK Airport");
    assert_eq!(
        scalar(&p, "SELECT count(*) FROM dim_payment_type WHERE description = 'Credit card'").await,
        1
    );
    assert_eq!(scalar(&p, "SELECT count(*) FROM dim_date WHERE year = 2024 AND month = 1").await, 31);
    // Surrogate keys are stable: a re-run (nothing new) leaves every dimension as it was.
    let before = scalar(&p, "SELECT sum(location_key * \"LocationID\")::int8 FROM dim_location").await;
    let again = run_job(&job(&input), &url).await.unwrap();
    assert_eq!(again.trips_inserted, 0);
    assert_eq!(scalar(&p, "SELECT sum(location_key * \"LocationID\")::int8 FROM dim_location").await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_on_the_same_input_store_each_trip_once() {
    let dir = tempfile::tempdir().unwrap();
    let trips = taxi::yellow_trips(4000, 3, 0.01);
    let input = dir.path().join("trips.parquet");
    taxi::write_parquet(&input, std::slice::from_ref(&trips)).unwrap();
    let url = fresh_url().await;
    // Two "processes" (own pools, own caches, own in-memory seen-sets) loading the same file at once:
    // COPYs that meet rows the other job committed are redone by the merge path. One of them also
    // counts both tables before and after (`--verify-counts`), which must hold with another writer.
    let cfg = JobConfig { batch_size: 500, ..job(&input) };
    let verified = JobConfig { verify_counts: true, ..cfg.clone() };
    let (a, b) = tokio::join!(run_job(&cfg, &url), run_job(&verified, &url));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_adds_up(&a);
    assert_adds_up(&b);
    assert_eq!(a.trips_inserted + b.trips_inserted, 3960);
    let p = pool(&url).await;
    assert_eq!(scalar(&p, "SELECT count(*) FROM yellow_taxi_trips").await, 3960);
    assert_eq!(scalar(&p, "SELECT count(*) FROM fact_trip").await, 3960);
    assert_eq!(
        scalar(&p, r#"SELECT count(*) FROM dim_vendor WHERE vendor_id IS NOT NULL"#).await,
        scalar(&p, r#"SELECT count(DISTINCT "VendorID") FROM yellow_taxi_trips"#).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_run_never_overlaps_another_run() {
    let dir = tempfile::tempdir().unwrap();
    let trips = taxi::yellow_trips(3000, 13, 0.02);
    let input = dir.path().join("trips.parquet");
    taxi::write_parquet(&input, std::slice::from_ref(&trips)).unwrap();
    let url = fresh_url().await;
    // A bulk run drops the UNIQUE constraint for its load: an incremental run loading the same trips
    // meanwhile would store them twice (its seen-set cannot know the bulk run's rows) and the rebuild
    // would then fail. The load lock makes them take turns, in either order.
    for _ in 0..2 {
        let bulk = JobConfig { rebuild_index: Some(true), ..job(&input) };
        let incremental = JobConfig { rebuild_index: Some(false), ..job(&input) };
        let (a, b) = tokio::join!(run_job(&bulk, &url), run_job(&incremental, &url));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_adds_up(&a);
        assert_adds_up(&b);
        let p = pool(&url).await;
        assert_eq!(scalar(&p, "SELECT count(*) FROM yellow_taxi_trips").await, 2940);
        assert_eq!(scalar(&p, "SELECT count(*) FROM fact_trip").await, 2940);
        sqlx::raw_sql("TRUNCATE yellow_taxi_trips, fact_trip").execute(&p).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_values_are_rejected_or_fail_naming_file_column_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("bad.csv");
    let header = "VendorID,tpep_pickup_datetime,tpep_dropoff_datetime,passenger_count,trip_distance,RatecodeID,store_and_fwd_flag,PULocationID,DOLocationID,payment_type,fare_amount,extra,mta_tax,tip_amount,tolls_amount,improvement_surcharge,total_amount,congestion_surcharge,Airport_fee";
    let good = |i: usize| {
        format!(
            "2,2024-01-0{i}T10:00:00,2024-01-0{i}T10:20:00,1,2.5,1,N,161,237,1,14.2,1.0,0.5,3.0,0.0,1.0,22.2,2.5,0.0"
        )
    };
    let body = format!(
        "{header}\n{}\n2,2024-01-02T10:00:00,2024-01-02T10:20:00,two,2.5,1,N,161,237,1,14.2,1.0,0.5,3.0,0.0,1.0,22.2,2.5,0.0\n{}\n",
        good(1),
        good(3)
    );
    std::fs::write(&input, body).unwrap();
    let url = fresh_url().await;
    let r = run_job(&job(&input), &url).await.unwrap();
    assert_adds_up(&r);
    assert_eq!((r.rows_read, r.trips_inserted, r.rejected), (3, 2, 1));
    let err = run_job(&JobConfig { on_error: OnError::Fail, ..job(&input) }, &url).await.unwrap_err();
    let msg = format!("{err}");
    let chain = std::iter::successors(Some(&*err as &dyn std::error::Error), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    assert!(
        chain.contains("bad.csv") && chain.contains("passenger_count") && chain.contains("two"),
        "{msg} / {chain}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_runs_rebuild_the_unique_constraint_and_still_deduplicate() {
    let dir = tempfile::tempdir().unwrap();
    let trips = taxi::yellow_trips(2500, 5, 0.04);
    let input = dir.path().join("trips.parquet");
    taxi::write_parquet(&input, std::slice::from_ref(&trips)).unwrap();
    let url = fresh_url().await;
    let p = pool(&url).await;
    let constraint = "SELECT count(*) FROM pg_constraint WHERE conname = 'yellow_taxi_trips_row_hash_key'";
    let bulk = JobConfig { rebuild_index: Some(true), hash: Algorithm::Blake3, ..job(&input) };
    let first = run_job(&bulk, &url).await.unwrap();
    assert_adds_up(&first);
    assert_eq!(first.trips_inserted, 2400);
    assert_eq!(scalar(&p, constraint).await, 1, "rebuilt after the bulk load");
    let stored: HashSet<Vec<u8>> = sqlx::query("SELECT row_hash FROM yellow_taxi_trips")
        .fetch_all(&p)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, distinct_hashes(&trips, Algorithm::Blake3), "--hash blake3 honoured");
    let options = "SELECT coalesce(string_agg(relname || ':' || array_to_string(reloptions, ','), ' ' ORDER BY relname), '') \
                   FROM pg_class WHERE relname IN ('yellow_taxi_trips', 'fact_trip') AND reloptions IS NOT NULL";
    let text = |sql: &'static str| {
        let p = p.clone();
        async move { sqlx::query_scalar::<_, String>(sql).fetch_one(&p).await.unwrap() }
    };
    let comment = "SELECT col_description('yellow_taxi_trips'::regclass, 20)";
    assert_eq!(text(options).await, "", "autovacuum resumed after the bulk load");
    assert_eq!(text(comment).await, "etlkit-row-v1 blake3");
    // A bulk run that crashes after starting leaves the constraint dropped and autovacuum paused;
    // the next run (even a non-bulk one) restores both before loading.
    let mut conn = p.acquire().await.unwrap();
    taxi_star::begin_bulk(&mut conn).await.unwrap();
    drop(conn);
    assert_eq!(scalar(&p, constraint).await, 0);
    assert_eq!(
        text(options).await,
        "fact_trip:autovacuum_enabled=off yellow_taxi_trips:autovacuum_enabled=off"
    );
    assert!(text(comment).await.starts_with("etlkit-row-v1 blake3; bulk load running"));
    let again =
        run_job(&JobConfig { rebuild_index: Some(false), hash: Algorithm::Blake3, ..job(&input) }, &url)
            .await
            .unwrap();
    assert_eq!((again.trips_inserted, again.duplicates_skipped), (0, 2500));
    assert_eq!(scalar(&p, constraint).await, 1);
    assert_eq!(text(options).await, "");
    assert_eq!(text(comment).await, "etlkit-row-v1 blake3");
    // An autovacuum setting of the table's owner is neither overridden nor reset by a bulk run.
    sqlx::raw_sql("ALTER TABLE fact_trip SET (autovacuum_enabled = on)").execute(&p).await.unwrap();
    let index = "SELECT conindid::bigint FROM pg_constraint WHERE conname = 'yellow_taxi_trips_row_hash_key'";
    let index_before = scalar(&p, index).await;
    let third = run_job(&bulk, &url).await.unwrap();
    assert_eq!(third.trips_inserted, 0);
    assert_eq!(scalar(&p, index).await, index_before, "a bulk run with nothing new keeps the index");
    let more = dir.path().join("more.parquet");
    taxi::write_parquet(&more, &[taxi::yellow_trips(300, 6, 0.0)]).unwrap();
    let fourth =
        run_job(&JobConfig { rebuild_index: Some(true), hash: Algorithm::Blake3, ..job(&more) }, &url)
            .await
            .unwrap();
    assert_eq!(fourth.trips_inserted, 300);
    assert_ne!(scalar(&p, index).await, index_before, "a bulk run with new trips rebuilds the index");
    assert_eq!(scalar(&p, constraint).await, 1);
    assert_eq!(text(options).await, "fact_trip:autovacuum_enabled=on");
    assert_eq!(scalar(&p, "SELECT count(*) FROM yellow_taxi_trips").await, 2700);
    assert_eq!(scalar(&p, "SELECT count(*) FROM fact_trip").await, 2700);
}

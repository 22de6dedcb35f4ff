//! The NYC taxi star schema as a job of the library (`etlkit_star`, the API `examples/taxi_star.rs`
//! wraps) against a real, throwaway PostgreSQL (etlkit-testkit; `DATABASE_URL` reused when set): both
//! TLC namings, Parquet and CSV, duplicate files, re-runs in every de-duplication mode, the row hash
//! of the 19 trip values, role-playing locations, the zones lookup, the unknown member and the date
//! dimension. A few thousand rows each. The generic job tests (faults, passes, bulk loads, concurrent
//! runs) are in crates/etlkit-star/tests on a synthetic retail schema.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use etlkit_hash::{Algorithm, RowHasher};
use etlkit_postgres::sqlx::{self, AssertSqlSafe, PgPool, Row};
use etlkit_postgres::{DatabaseUrl, TableRef, connect};
use etlkit_star::{
    AttributeLookup, DedupStrategy, DimensionConfig, FactConfig, Input, InputsConfig, OnError, RowHash,
    StarError, StarJob, StarJobConfig, StarReport, TargetColumn,
};
use etlkit_testkit::{PgServer, taxi};

async fn fresh_url() -> DatabaseUrl {
    static PG: std::sync::LazyLock<Arc<PgServer>> =
        std::sync::LazyLock::new(|| PgServer::start().expect("test PostgreSQL"));
    DatabaseUrl::new(
        tokio::task::spawn_blocking(|| PG.fresh_database()).await.unwrap().expect("test PostgreSQL"),
    )
}

async fn pool(url: &DatabaseUrl) -> PgPool {
    connect(url, 2, "etlkit-taxi-test").await.unwrap()
}

async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query(AssertSqlSafe(sql.to_owned())).fetch_one(pool).await.unwrap().get(0)
}

/// The taxi job as `examples/taxi_star.rs` declares it (the 19 TLC columns in both namings).
fn job(input: &Path, zones: Option<&Path>) -> StarJobConfig {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
    let (i32_, i64_, f64_) = (DataType::Int32, DataType::Int64, DataType::Float64);
    let columns = [
        ("VendorID", i32_.clone(), &["vendor_id"][..]),
        ("tpep_pickup_datetime", ts.clone(), &["pickup_datetime"]),
        ("tpep_dropoff_datetime", ts, &["dropoff_datetime"]),
        ("passenger_count", i64_.clone(), &[]),
        ("trip_distance", f64_.clone(), &[]),
        ("RatecodeID", i64_.clone(), &["rate_code_id", "rate_code"]),
        ("store_and_fwd_flag", DataType::Utf8, &[]),
        ("PULocationID", i32_.clone(), &["pickup_location_id"]),
        ("DOLocationID", i32_.clone(), &["dropoff_location_id"]),
        ("payment_type", i64_.clone(), &[]),
        ("fare_amount", f64_.clone(), &[]),
        ("extra", f64_.clone(), &[]),
        ("mta_tax", f64_.clone(), &[]),
        ("tip_amount", f64_.clone(), &[]),
        ("tolls_amount", f64_.clone(), &[]),
        ("improvement_surcharge", f64_.clone(), &["imp_surcharge"]),
        ("total_amount", f64_.clone(), &[]),
        ("congestion_surcharge", f64_.clone(), &[]),
        ("Airport_fee", f64_, &[]),
    ];
    let text = |n: &str| Field::new(n, DataType::Utf8, true);
    let key = |n: &str, t: DataType| vec![Field::new(n, t, false)];
    let mut location = DimensionConfig::new("dim_location", key("LocationID", i32_.clone()), "location_key")
        .attributes(vec![text("borough"), text("zone"), text("service_zone")])
        .role(["PULocationID"], "pickup_location_key")
        .role(["DOLocationID"], "dropoff_location_key");
    if let Some(z) = zones {
        location = location.lookup(AttributeLookup {
            input: Input::File(z.to_owned()),
            key_columns: vec!["LocationID".into()],
            attribute_columns: vec!["Borough".into(), "Zone".into(), "service_zone".into()],
        });
    }
    StarJobConfig {
        inputs: InputsConfig {
            inputs: vec![Input::from(input)],
            on_error: OnError::Reject,
            ..Default::default()
        },
        columns: columns
            .iter()
            .map(|(n, t, a)| {
                let c = TargetColumn::new(*n, t.clone()).aliases(a.iter().copied());
                if n.starts_with("congestion") || n.starts_with("Airport") { c.optional() } else { c }
            })
            .collect(),
        dimensions: vec![
            DimensionConfig::new("dim_vendor", key("vendor_id", i32_), "vendor_key")
                .role(["VendorID"], "vendor_key"),
            DimensionConfig::new("dim_payment_type", key("payment_type", i64_.clone()), "payment_type_key")
                .role(["payment_type"], "payment_type_key"),
            DimensionConfig::new("dim_rate_code", key("rate_code_id", i64_), "rate_code_key")
                .role(["RatecodeID"], "rate_code_key"),
            location,
            DimensionConfig::date("dim_date").role(["tpep_pickup_datetime"], "pickup_date_key"),
        ],
        fact: FactConfig {
            table: TableRef::new("fact_trip"),
            measures: columns
                .iter()
                .map(|c| c.0)
                .filter(|n| !n.ends_with("ID") && *n != "payment_type" && *n != "store_and_fwd_flag")
                .map(String::from)
                .collect(),
            degenerate: vec!["store_and_fwd_flag".into()],
            ..Default::default()
        },
        // As the example by default: the trips read back from the fact table and its dimensions.
        rows_view: Some(TableRef::new("yellow_taxi_trips")),
        batch_size: 1000,
        ..Default::default()
    }
}

async fn run(cfg: StarJobConfig, url: &DatabaseUrl) -> Result<StarReport, StarError> {
    StarJob::new(cfg)?.run(url).await
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

fn assert_adds_up(r: &StarReport) {
    assert_eq!(r.rows_read, r.inserted + r.duplicates + r.rejected, "{r:?}");
    assert_eq!(r.inserted, r.fact_rows, "{r:?}");
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

    let first = run(job(dir.path(), None), &url).await.unwrap();
    assert_adds_up(&first);
    assert_eq!((first.rows_read, first.inserted, first.rejected), (9000, 2940, 0));
    assert_eq!(first.duplicates, 60 + 3000 + 3000);

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
    for (dedup, merged) in [
        (DedupStrategy::Memory { passes: 1 }, false),
        (DedupStrategy::Database, true),
        (DedupStrategy::Auto { memory_budget: 0 }, true),
    ] {
        let again = run(StarJobConfig { dedup, ..job(dir.path(), None) }, &url).await.unwrap();
        assert_adds_up(&again);
        assert_eq!((again.rows_read, again.inserted, again.duplicates), (9000, 0, 9000));
        assert_eq!(again.merged_batches > 0, merged, "{dedup:?}: {again:?}");
    }
    assert_eq!(scalar(&p, "SELECT count(*) FROM yellow_taxi_trips").await, 2940);
    assert_eq!(scalar(&p, "SELECT count(*) FROM fact_trip").await, 2940);
    // Another hash algorithm would not recognise the stored trips: refused.
    let blake3 = RowHash { algorithm: Algorithm::Blake3, ..Default::default() };
    let other = run(StarJobConfig { row_hash: blake3, ..job(dir.path(), None) }, &url).await.unwrap_err();
    assert!(
        matches!(other, StarError::HashMismatch { .. }) && other.to_string().contains("sha256"),
        "{other}"
    );
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
    // The trips stored in a table of their own (`taxi_star --trips table`), so that the fact keys
    // below are checked against values the fact did not produce.
    let stored = |cfg: StarJobConfig| StarJobConfig {
        rows_view: None,
        rows_table: Some(TableRef::new("yellow_taxi_trips")),
        ..cfg
    };
    let r = run(StarJobConfig { batch_size: 300, ..stored(job(&input, Some(&zones))) }, &url).await.unwrap();
    assert_adds_up(&r);
    assert_eq!(r.inserted, 2000);
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
    // Zones (the lookup) and calendar attributes (the date dimension).
    let jfk: String = sqlx::query(r#"SELECT zone FROM dim_location WHERE "LocationID" = 132"#)
        .fetch_one(&p)
        .await
        .unwrap()
        .get(0);
    assert_eq!(jfk, "JFK Airport");
    assert_eq!(scalar(&p, "SELECT count(*) FROM dim_date WHERE year = 2024 AND month = 1").await, 31);
    // Surrogate keys are stable: a re-run (nothing new) leaves every dimension as it was.
    let before = scalar(&p, "SELECT sum(location_key * \"LocationID\")::int8 FROM dim_location").await;
    let again = run(stored(job(&input, None)), &url).await.unwrap();
    assert_eq!(again.inserted, 0);
    assert_eq!(scalar(&p, "SELECT sum(location_key * \"LocationID\")::int8 FROM dim_location").await, before);

    // The default view (over a fact table of its own, same dimensions) shows exactly the stored trips:
    // every value, the NULL rate codes through the unknown member, and every row hash.
    let mut viewed = job(&input, None);
    viewed.fact.table = TableRef::new("fact_trip_v");
    viewed.rows_view = Some(TableRef::new("yellow_taxi_trips_v"));
    assert_eq!(run(viewed, &url).await.unwrap().inserted, 2000);
    for (a, b) in [("yellow_taxi_trips", "yellow_taxi_trips_v"), ("yellow_taxi_trips_v", "yellow_taxi_trips")]
    {
        let sql = format!("SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b}) d");
        assert_eq!(scalar(&p, &sql).await, 0, "{a} - {b}");
    }
    assert_eq!(scalar(&p, "SELECT count(*) FROM yellow_taxi_trips_v").await, 2000);
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
    let r = run(job(&input, None), &url).await.unwrap();
    assert_adds_up(&r);
    assert_eq!((r.rows_read, r.inserted, r.rejected), (3, 2, 1));
    let mut fail = job(&input, None);
    fail.inputs.on_error = OnError::Fail;
    let err = run(fail, &url).await.unwrap_err();
    let msg = format!("{err}");
    let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    assert!(
        chain.contains("bad.csv") && chain.contains("passenger_count") && chain.contains("two"),
        "{msg} / {chain}"
    );
}

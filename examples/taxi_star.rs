//! The NYC taxi star-schema job: yellow-trip records from Parquet or CSV into a normalized table with
//! row-hash de-duplication and a star schema (dimensions with surrogate keys + a fact table). A thin
//! CLI over `etlkit_star::StarJob`: this file holds only what is taxi-specific (the TLC columns and
//! their namings, the zones lookup, the data-dictionary descriptions, the report, the arguments).
//!
//! ```text
//! cargo run --release --example taxi_star -- --input FILE_DIR_OR_GLOB [--database-url URL]
//!     [--batch-size N] [--workers N] [--hash sha256|blake3] [--zones taxi_zone_lookup.csv]
//!     [--on-error reject|fail] [--dedup auto|memory|database] [--dedup-memory-mb N]
//!     [--dedup-passes N] [--rebuild-index auto|always|never] [--trips view|table|none] [--report]
//! ```
//!
//! Defaults: `--batch-size 65536` (rows per batch and per load transaction), `--workers 2`
//! (concurrent load transactions), `--hash sha256`, `--on-error reject`, `--dedup auto` with
//! `--dedup-memory-mb 192`, `--rebuild-index auto` (bulk when the input is ≥ 500 000 rows and ≥ a
//! quarter of the table). `DATABASE_URL` is read when `--database-url` is not given; without either,
//! a throwaway PostgreSQL is started from `etlkit-testkit`. Prints exactly one line on stdout:
//!
//! ```text
//! taxi_star rows_read=<N> trips_inserted=<I> duplicates_skipped=<D> rejected=<R> fact_rows=<F> elapsed_s=<S>
//! ```
//!
//! with `N = I + D + R` and `F = I` (each batch's trips and facts commit in one transaction).
//! `--report` then prints trips and average fare by payment type and pickup borough on stderr.
//!
//! - Both TLC namings load into one schema: the current one (`VendorID`, `tpep_pickup_datetime`,
//!   `RatecodeID`, `PULocationID`, `Airport_fee`, ...) and the older snake_case one (`vendor_id`,
//!   `pickup_datetime`, `rate_code`, `pickup_location_id`, `imp_surcharge`, ...), compared ignoring
//!   case and underscores, in the TLC 2024 types. Other columns (pandas index columns) are ignored;
//!   `congestion_surcharge` and `Airport_fee` are optional (NULL in older files, which the job
//!   reports); any other missing column is an error naming the file.
//! - Tables: `dim_vendor`, `dim_payment_type`, `dim_rate_code`, `dim_location` (pickup and drop-off:
//!   one role-playing dimension; `borough`, `zone`, `service_zone` from `--zones`), `dim_date` (pickup
//!   date: year, quarter, month, day, ISO weekday) and `fact_trip` (six dimension keys, the measures,
//!   `store_and_fwd_flag` and `row_hash bytea UNIQUE`). NULL natural keys go to the unknown member
//!   `-1`. `row_hash` is the `etlkit-row-v1` hash of the 19 trip values, so a trip hashes the same
//!   from Parquet or CSV and in either naming.
//! - `yellow_taxi_trips` (the 19 TLC columns + `row_hash`): by default a view reading each trip back
//!   from `fact_trip` and its dimensions, so every value is stored once (`--trips view`);
//!   `--trips table` stores it as a table of its own instead (each batch's trips and facts in one
//!   transaction, the UNIQUE `row_hash` there; ~1.5x the job's time), `--trips none` (or
//!   `--facts-only`) leaves it out. A database first loaded with `--trips table` keeps needing it
//!   (the library refuses to put a view in the table's place, or a table beside facts it never saw).
//! - De-duplication, bulk loads (UNIQUE constraint dropped and rebuilt, autovacuum paused, an
//!   advisory load lock every batch checks before committing) and crash recovery are the library's:
//!   see `etlkit_star::DedupStrategy` and `etlkit_star::BulkPolicy`.

use std::path::PathBuf;

use arrow_schema::{DataType, Field, TimeUnit};
use etlkit_postgres::sqlx;
use etlkit_postgres::{DatabaseUrl, TableRef, connect};
use etlkit_star::{
    Algorithm, AttributeLookup, BulkWhen, DedupStrategy, DimensionConfig, FactConfig, Input, InputsConfig,
    OnError, RowHash, StarError, StarJob, StarJobConfig, StarReport, TargetColumn,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The 19 TLC yellow-trip columns in the current naming, with their other namings.
const COLUMNS: &[(&str, &[&str])] = &[
    ("VendorID", &["vendor_id"]),
    ("tpep_pickup_datetime", &["pickup_datetime"]),
    ("tpep_dropoff_datetime", &["dropoff_datetime"]),
    ("passenger_count", &[]),
    ("trip_distance", &[]),
    ("RatecodeID", &["rate_code_id", "rate_code"]),
    ("store_and_fwd_flag", &[]),
    ("PULocationID", &["pickup_location_id"]),
    ("DOLocationID", &["dropoff_location_id"]),
    ("payment_type", &[]),
    ("fare_amount", &[]),
    ("extra", &[]),
    ("mta_tax", &[]),
    ("tip_amount", &[]),
    ("tolls_amount", &[]),
    ("improvement_surcharge", &["imp_surcharge"]),
    ("total_amount", &[]),
    ("congestion_surcharge", &[]),
    ("Airport_fee", &[]),
];

/// Columns older TLC files lack (NULL there, reported).
const OPTIONAL: &[&str] = &["congestion_surcharge", "Airport_fee"];

/// The TLC 2024 types of [`COLUMNS`], in order (the rest are `Float64`).
fn tlc_type(i: usize) -> DataType {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
    [DataType::Int32, ts.clone(), ts, DataType::Int64, DataType::Float64, DataType::Int64, DataType::Utf8]
        .into_iter()
        .chain([DataType::Int32, DataType::Int32, DataType::Int64])
        .nth(i)
        .unwrap_or(DataType::Float64)
}

/// Measures copied to `fact_trip` (the row hash is added by the job).
const MEASURES: &[&str] = &[
    "tpep_pickup_datetime",
    "tpep_dropoff_datetime",
    "passenger_count",
    "trip_distance",
    "fare_amount",
    "extra",
    "mta_tax",
    "tip_amount",
    "tolls_amount",
    "improvement_surcharge",
    "total_amount",
    "congestion_surcharge",
    "Airport_fee",
];

/// The command line.
struct Args {
    input: String,
    url: Option<String>,
    batch_size: usize,
    workers: usize,
    hash: Algorithm,
    zones: Option<PathBuf>,
    on_error: OnError,
    dedup: String,
    memory_mb: u64,
    passes: Option<u32>,
    /// `--rebuild-index`: `None` (auto) keeps the library's default.
    rebuild: Option<BulkWhen>,
    /// `--trips`: `view`, `table` or `none`.
    trips: String,
    report: bool,
}

/// The taxi job for `args`.
fn taxi_job(a: &Args) -> StarJobConfig {
    let columns = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (name, aliases))| {
            let c = TargetColumn::new(*name, tlc_type(i)).aliases(aliases.iter().copied());
            if OPTIONAL.contains(name) { c.optional() } else { c }
        })
        .collect();
    let text = |n: &str| Field::new(n, DataType::Utf8, true);
    let key = |n: &str, t: DataType| vec![Field::new(n, t, false)];
    let mut location =
        DimensionConfig::new("dim_location", key("LocationID", DataType::Int32), "location_key")
            .attributes(vec![text("borough"), text("zone"), text("service_zone")])
            .role(["PULocationID"], "pickup_location_key")
            .role(["DOLocationID"], "dropoff_location_key");
    if let Some(z) = &a.zones {
        location = location.lookup(AttributeLookup {
            input: Input::File(z.clone()),
            key_columns: vec!["LocationID".into()],
            attribute_columns: vec!["Borough".into(), "Zone".into(), "service_zone".into()],
        });
    }
    let dedup = match (a.dedup.as_str(), a.passes) {
        ("database", _) => DedupStrategy::Database,
        (_, Some(passes)) => DedupStrategy::Memory { passes },
        ("memory", None) => DedupStrategy::Memory { passes: 1 },
        _ => DedupStrategy::Auto { memory_budget: a.memory_mb << 20 },
    };
    let mut cfg = StarJobConfig {
        inputs: InputsConfig {
            inputs: vec![Input::parse(&a.input)],
            on_error: a.on_error,
            ..Default::default()
        },
        columns,
        row_hash: RowHash { algorithm: a.hash, ..Default::default() },
        dedup,
        dimensions: vec![
            DimensionConfig::new("dim_vendor", key("vendor_id", DataType::Int32), "vendor_key")
                .attributes(vec![text("vendor_name")])
                .role(["VendorID"], "vendor_key"),
            DimensionConfig::new(
                "dim_payment_type",
                key("payment_type", DataType::Int64),
                "payment_type_key",
            )
            .attributes(vec![text("description")])
            .role(["payment_type"], "payment_type_key"),
            DimensionConfig::new("dim_rate_code", key("rate_code_id", DataType::Int64), "rate_code_key")
                .attributes(vec![text("description")])
                .role(["RatecodeID"], "rate_code_key"),
            location,
            DimensionConfig::date("dim_date").role(["tpep_pickup_datetime"], "pickup_date_key"),
        ],
        fact: FactConfig {
            table: TableRef::new("fact_trip"),
            measures: MEASURES.iter().map(|m| m.to_string()).collect(),
            // The one trip value no dimension key gives back, so that the view shows every column.
            degenerate: vec!["store_and_fwd_flag".into()],
            ..Default::default()
        },
        rows_table: (a.trips == "table").then(|| TableRef::new("yellow_taxi_trips")),
        rows_view: (a.trips == "view").then(|| TableRef::new("yellow_taxi_trips")),
        batch_size: a.batch_size,
        workers: a.workers,
        ..Default::default()
    };
    if let Some(when) = a.rebuild {
        cfg.bulk.when = when;
    }
    cfg
}

/// Descriptions from the TLC data dictionary, filled in where missing.
const DESCRIBE_SQL: &str = "UPDATE dim_vendor d SET vendor_name = v.n FROM (VALUES (1, 'Creative Mobile Technologies'), \
       (2, 'Curb Mobility'), (6, 'Myle Technologies'), (7, 'Helix')) v(k, n) \
       WHERE d.vendor_id = v.k AND d.vendor_name IS NULL; \
     UPDATE dim_payment_type d SET description = v.n FROM (VALUES (0, 'Flex Fare'), (1, 'Credit card'), \
       (2, 'Cash'), (3, 'No charge'), (4, 'Dispute'), (5, 'Unknown'), (6, 'Voided trip')) v(k, n) \
       WHERE d.payment_type = v.k AND d.description IS NULL; \
     UPDATE dim_rate_code d SET description = v.n FROM (VALUES (1, 'Standard rate'), (2, 'JFK'), \
       (3, 'Newark'), (4, 'Nassau or Westchester'), (5, 'Negotiated fare'), (6, 'Group ride'), \
       (99, 'Null/unknown')) v(k, n) WHERE d.rate_code_id = v.k AND d.description IS NULL";

/// The SQL of `--report`: trips and average fare by payment type and pickup borough.
const REPORT_SQL: &str = "SELECT coalesce(pt.description, pt.payment_type::text, 'unknown') AS payment, \
       coalesce(l.borough, 'zone ' || l.\"LocationID\", 'unknown') AS pickup_borough, \
       count(*) AS trips, round(avg(f.fare_amount)::numeric, 2)::text AS avg_fare \
     FROM fact_trip f \
     JOIN dim_payment_type pt USING (payment_type_key) \
     JOIN dim_location l ON l.location_key = f.pickup_location_key \
     GROUP BY 1, 2 ORDER BY trips DESC LIMIT 15";

/// Runs the job, fills in the descriptions and (with `--report`) prints the report.
async fn run_taxi(args: &Args, url: &DatabaseUrl) -> Result<StarReport, BoxError> {
    let report = StarJob::new(taxi_job(args))?.run(url).await.map_err(|e| match e {
        StarError::InvalidConfig { field: "rows_view", .. } => {
            format!("{e}\n(a database loaded with `--trips table` goes on with `--trips table`)").into()
        }
        e => BoxError::from(e),
    })?;
    let pool = connect(url, 1, "etlkit-taxi_star").await?;
    sqlx::raw_sql(DESCRIBE_SQL).execute(&pool).await?;
    for m in &report.missing_columns {
        eprintln!("taxi_star: {} has no {:?} (NULL)", m.file.display(), m.columns);
    }
    if args.report {
        let rows: Vec<(String, String, i64, Option<String>)> =
            sqlx::query_as(REPORT_SQL).fetch_all(&pool).await?;
        eprintln!("{:<14} {:<16} {:>10} {:>9}", "payment", "pickup_borough", "trips", "avg_fare");
        for (payment, borough, trips, fare) in rows {
            eprintln!("{payment:<14} {borough:<16} {trips:>10} {:>9}", fare.unwrap_or_default());
        }
    }
    Ok(report)
}

const USAGE: &str = "usage: taxi_star --input FILE_DIR_OR_GLOB [--database-url URL] [--batch-size N] [--workers N] \
                     [--hash sha256|blake3] [--zones taxi_zone_lookup.csv] [--on-error reject|fail] \
                     [--dedup auto|memory|database] [--dedup-memory-mb N] [--dedup-passes N] \
                     [--rebuild-index auto|always|never] [--trips view|table|none] [--report]";

fn parse_args() -> Result<Args, BoxError> {
    let mut a = Args {
        input: String::new(),
        url: std::env::var("DATABASE_URL").ok().filter(|s| !s.trim().is_empty()),
        batch_size: 65_536,
        workers: 2,
        hash: Algorithm::Sha256,
        zones: None,
        on_error: OnError::Reject,
        dedup: "auto".into(),
        memory_mb: 192,
        passes: None,
        rebuild: None,
        trips: "view".into(),
        report: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--input" => a.input = value()?,
            "--database-url" => a.url = Some(value()?),
            "--batch-size" => a.batch_size = value()?.parse()?,
            "--workers" => a.workers = value()?.parse()?,
            "--hash" => a.hash = value()?.parse()?,
            "--zones" => a.zones = Some(value()?.into()),
            "--on-error" => {
                a.on_error = match value()?.as_str() {
                    "reject" => OnError::Reject,
                    "fail" => OnError::Fail,
                    other => return Err(format!("--on-error must be reject or fail, not {other}").into()),
                }
            }
            "--dedup" => {
                a.dedup = value()?;
                if !["auto", "memory", "database"].contains(&a.dedup.as_str()) {
                    return Err(format!("--dedup must be auto, memory or database, not {}", a.dedup).into());
                }
            }
            "--dedup-memory-mb" => a.memory_mb = value()?.parse()?,
            "--dedup-passes" => a.passes = Some(value()?.parse()?),
            "--rebuild-index" => {
                a.rebuild = match value()?.as_str() {
                    "auto" => None,
                    "always" => Some(BulkWhen::Always),
                    "never" => Some(BulkWhen::Never),
                    other => {
                        return Err(
                            format!("--rebuild-index must be auto, always or never, not {other}").into()
                        );
                    }
                }
            }
            "--trips" => {
                a.trips = value()?;
                if !["view", "table", "none"].contains(&a.trips.as_str()) {
                    return Err(format!("--trips must be view, table or none, not {}", a.trips).into());
                }
            }
            "--facts-only" => a.trips = "none".into(),
            "--report" => a.report = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    if a.input.is_empty() {
        return Err(USAGE.into());
    }
    Ok(a)
}

fn main() -> etlkit_core::Reported {
    run().into()
}

fn run() -> Result<(), BoxError> {
    let args = parse_args()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    // `_server` keeps a throwaway server alive until the end of main.
    let (url, _server) = etlkit_testkit::PgServer::url_or_throwaway("taxi_star", args.url.as_deref())?;
    let url = DatabaseUrl::new(url);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let r = runtime.block_on(run_taxi(&args, &url))?;
    eprintln!("taxi_star: {}", r.line());
    println!(
        "taxi_star rows_read={} trips_inserted={} duplicates_skipped={} rejected={} fact_rows={} elapsed_s={:.3}",
        r.rows_read,
        r.inserted,
        r.duplicates,
        r.rejected,
        r.fact_rows,
        r.elapsed.as_secs_f64()
    );
    Ok(())
}

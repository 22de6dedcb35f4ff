//! The NYC taxi star-schema job: yellow-trip records from Parquet or CSV into a normalized table with
//! row-hash de-duplication and a star schema (dimensions with surrogate keys + a fact table).
//!
//! ```text
//! cargo run --release --example taxi_star -- --input FILE_OR_DIR [--database-url URL]
//!     [--batch-size N] [--workers N] [--hash sha256|blake3] [--zones taxi_zone_lookup.csv]
//!     [--on-error reject|fail] [--dedup auto|memory|database] [--dedup-memory-mb N]
//!     [--dedup-passes N] [--rebuild-index auto|always|never] [--verify-counts] [--report]
//! ```
//!
//! `--report` then prints, on stderr, trips and average fare by payment type and pickup borough
//! ([`REPORT_SQL`]; boroughs come from `--zones`).
//!
//! Defaults: `--batch-size 65536` (rows per batch and per load transaction), `--workers 2`
//! (concurrent load transactions / connections), `--hash sha256`.
//!
//! Prints exactly one line on stdout:
//!
//! ```text
//! taxi_star rows_read=<N> trips_inserted=<I> duplicates_skipped=<D> rejected=<R> fact_rows=<F> elapsed_s=<S>
//! ```
//!
//! with `N = I + D + R` and `F` = rows added to `fact_trip` by this run, checked equal to the rows
//! added to `yellow_taxi_trips`. Both are the row counts the server returns for this run's committed
//! `COPY`s (or merges), each batch's trips and facts committing in one transaction; `--verify-counts`
//! also counts both tables before and after the load (full scans) and checks they gained the same.
//!
//! - Input: one file, a directory (its `.parquet` and `.csv` files, sorted) or a glob. Each file is
//!   read by `etlkit-source` through its own `etlkit_core::Pipeline` run (so files may use different
//!   namings). Both TLC namings are accepted — the current one (`VendorID`, `tpep_pickup_datetime`,
//!   `RatecodeID`, `PULocationID`, `Airport_fee`/`airport_fee`, ...) and the older snake_case one
//!   (`vendor_id`, `pickup_datetime`, `rate_code`, `pickup_location_id`, `imp_surcharge`, ...) — and
//!   mapped to the current names and TLC 2024 types. Other columns (pandas index columns such as
//!   `Unnamed: 0`, `__index_level_0__` or an empty CSV header) are ignored; columns missing from old
//!   files (`congestion_surcharge`, `Airport_fee`) are NULL.
//! - Bad values: CSV rows that do not parse, and values that cannot be converted to the TLC type,
//!   are rejected (`--on-error reject`, the default: logged with file, column and value, counted in
//!   `rejected`) or end the run (`--on-error fail`).
//! - Tables (created if missing): `yellow_taxi_trips` (the 19 TLC columns + `row_hash bytea UNIQUE`),
//!   `dim_vendor`, `dim_payment_type`, `dim_rate_code`, `dim_location` (`LocationID`, `borough`,
//!   `zone`, `service_zone`, filled from `--zones`), `dim_date`, and `fact_trip` (surrogate keys of
//!   vendor, payment type, rate code, pickup and drop-off location (one role-playing `dim_location`)
//!   and pickup date; the measures; `row_hash`). NULL natural keys go to the unknown member `-1`.
//! - De-duplication: `row_hash` is the `etlkit-row-v1` hash (`--hash`, default sha256) of the 19
//!   logical trip values after normalization, so a trip hashes the same from Parquet or CSV and in
//!   either naming. `--dedup memory`: an in-memory seen-set seeded with the `row_hash`es
//!   already in `yellow_taxi_trips` drops duplicates within a file, across files and across runs
//!   before loading; each batch's trips and facts are then binary-COPYed in ONE transaction (a
//!   batch that still hits the UNIQUE constraint — another process loaded it meanwhile — is redone
//!   by the merge path). `--dedup database`: every batch is staged and merged with
//!   `INSERT ... ON CONFLICT (row_hash) DO NOTHING`, constant client memory whatever the table size
//!   (slower: the UNIQUE index is maintained row by row). Memory mode runs the input in one or more
//!   passes (`--dedup-passes`): pass `p` of `k` handles only the trips whose digest falls in the
//!   `p`-th of `k` ranges of digest space, with a seen-set of that range alone (seeded with the
//!   table's hashes in that range), so `k` passes need ~1/`k` of the memory and read and hash the
//!   input `k` times. `--dedup auto` (default): memory mode in the fewest passes (up to 16) whose
//!   seen-set (16-byte digest prefixes for table rows + input rows, sized up front: 20–39 bytes
//!   each) fits `--dedup-memory-mb` (default 192: one pass up to ~7.3 M trips), else database — so
//!   peak memory is bounded whatever the sizes.
//!   The hash algorithm is recorded as a comment on `row_hash`; a run with another one is refused.
//! - Bulk loads (`--rebuild-index`, default `auto`: memory mode, input estimated at ≥ 500 000 rows
//!   and ≥ a quarter of the table): the `row_hash` UNIQUE constraint is dropped when the first new
//!   trips are about to be written (a run that finds nothing new keeps it) and rebuilt at the end
//!   — one sort instead of millions of random B-tree insertions (measured 4 s against 23 s for
//!   3.6 M rows) — and autovacuum is paused on both tables meanwhile (unless their owner set
//!   `autovacuum_enabled`), so that it does not scan pages still being written only to be
//!   cancelled by the index build. Bulk runs hold an advisory load lock exclusively and other runs
//!   hold it shared, so a bulk run never overlaps another run; a run that finds the constraint
//!   missing (a crashed bulk run) rebuilds it and resumes autovacuum before loading.
//! - Without `--database-url` and `DATABASE_URL`, a throwaway PostgreSQL is started from
//!   `etlkit-testkit` (and said so on stderr).

#![allow(dead_code)] // the integration test includes this file as a module and uses only `run_job`.

use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, new_null_array};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use etlkit_core::{Context, Pipeline, PipelineConfig, Rejected, Source, Transform};
use etlkit_dimcache::{DimensionCache, DimensionSpec, FactRole, StarSchema};
use etlkit_hash::{
    Algorithm, Dedup, DedupConfig, DigestPartition, HashFormat, RowHashConfig, RowHashTransform,
};
use etlkit_postgres::sqlx;
use etlkit_postgres::{
    DatabaseUrl, PgDimensionConfig, PgDimensionStore, PgSource, PgSourceConfig, PgStarConfig, PgStarSink,
    SourceQuery, StarLoadMode, TableRef, connect, pg_type_for, quote_ident,
};
use etlkit_source::{CsvSource, CsvSourceConfig, Input, OnError, ParquetSource, ParquetSourceConfig};
use futures::StreamExt;

type BoxError = Box<dyn StdError + Send + Sync>;

/// The normalized trips table.
pub const TRIPS: &str = "yellow_taxi_trips";
/// The fact table.
pub const FACT: &str = "fact_trip";
/// The row-hash column of both tables.
pub const ROW_HASH: &str = "row_hash";
/// Name of the UNIQUE constraint on `yellow_taxi_trips.row_hash`.
const UNIQUE_HASH: &str = "yellow_taxi_trips_row_hash_key";
/// `maintenance_work_mem` of the UNIQUE (row_hash) rebuild: enough to sort a few million 32-byte
/// keys in memory instead of through temporary files.
const REBUILD_MEMORY: &str = "1GB";
/// Most passes `--dedup auto` plans for an in-memory de-duplication before it de-duplicates in the
/// database instead: each pass reads and hashes the whole input again.
pub const MAX_DEDUP_PASSES: u32 = 16;
/// The pickup-date column the normalizer adds (key of `dim_date`; not stored in `yellow_taxi_trips`).
const PICKUP_DATE: &str = "pickup_date";

/// The 19 TLC yellow-trip columns in the current naming and TLC 2024 types, with the other namings
/// they may have (compared ignoring case and underscores).
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

/// Columns a file must have (in some naming); the others are NULL when missing.
const REQUIRED: &[&str] = &["tpep_pickup_datetime", "PULocationID", "DOLocationID", "total_amount"];

/// Measures (and degenerate attributes) copied to `fact_trip`.
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
    ROW_HASH,
];

/// The normalized trip schema: the 19 TLC columns (all nullable).
pub fn trip_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
    let f64 = DataType::Float64;
    let types = [
        DataType::Int32,
        ts.clone(),
        ts,
        DataType::Int64,
        f64.clone(),
        DataType::Int64,
        DataType::Utf8,
        DataType::Int32,
        DataType::Int32,
        DataType::Int64,
    ];
    let fields: Vec<Field> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (name, _))| Field::new(*name, types.get(i).cloned().unwrap_or(f64.clone()), true))
        .collect();
    Arc::new(Schema::new(fields))
}

fn squash(name: &str) -> String {
    name.chars().filter(|c| *c != '_').flat_map(char::to_lowercase).collect()
}

/// How rows are de-duplicated against what is already loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupMode {
    /// `Memory` in the fewest passes (at most [`MAX_DEDUP_PASSES`]) whose seen-set (table rows +
    /// estimated input rows, 20–39 bytes each, split over the passes) fits
    /// [`JobConfig::dedup_memory_mb`], else `Database`: client memory stays bounded whatever the
    /// table and input sizes.
    Auto,
    /// In-memory seen-set seeded from `yellow_taxi_trips`, then binary COPY; one pass unless
    /// [`JobConfig::dedup_passes`] says otherwise.
    Memory,
    /// Staged merge with `ON CONFLICT DO NOTHING` (constant client memory).
    Database,
}

/// Everything the job needs besides the database URL.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// File, directory or glob.
    pub input: String,
    /// Rows per batch (and per load transaction). Default 65 536.
    pub batch_size: usize,
    /// Concurrent sink writers (connections). Default 2.
    pub workers: usize,
    /// Row-hash algorithm. Default SHA-256 (faster than BLAKE3 for ~80-byte rows on CPUs with SHA
    /// extensions; see docs/benchmarks.md).
    pub hash: Algorithm,
    /// A TLC `taxi_zone_lookup.csv` (LocationID, Borough, Zone, service_zone).
    pub zones: Option<PathBuf>,
    /// Bad rows: reject (default) or fail.
    pub on_error: OnError,
    /// De-duplication strategy. Default [`DedupMode::Auto`].
    pub dedup: DedupMode,
    /// Memory budget of the in-memory seen-set for [`DedupMode::Auto`], in MiB. Default 192
    /// (up to ~7.3 M trips in one pass: tables are powers of two, see
    /// [`DedupConfig::seen_set_bytes`]; more rows take more passes).
    pub dedup_memory_mb: u64,
    /// Memory mode only: drop the `row_hash` UNIQUE constraint for the load and rebuild it at the end
    /// (one sort instead of millions of random index insertions; a bulk run waits for the other
    /// runs and they wait for it, by an advisory lock). `None` (default): when the input is estimated at 500 000 rows or more and
    /// at least a quarter of the table.
    pub rebuild_index: Option<bool>,
    /// Memory mode: run the input this many times, once per partition of the digest space, each
    /// time with a seen-set of only that partition's rows (table rows seeded + input rows). `None`
    /// (default): the fewest passes (at most [`MAX_DEDUP_PASSES`]) whose seen-set fits
    /// `dedup_memory_mb` — one for up to ~7.3 M table + input rows.
    pub dedup_passes: Option<u32>,
    /// Also count both tables before and after the load (two full scans at the end) and check they
    /// gained the same number of rows. Default `false`: the check uses the row counts the server
    /// returns for each committed `COPY`/`INSERT`, which cost nothing and are exact for this run
    /// even while other writers load the same tables.
    pub verify_counts: bool,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            input: String::new(),
            batch_size: 65_536,
            workers: 2,
            hash: Algorithm::Sha256,
            zones: None,
            on_error: OnError::Reject,
            dedup: DedupMode::Auto,
            dedup_memory_mb: 192,
            rebuild_index: None,
            verify_counts: false,
            dedup_passes: None,
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct JobReport {
    /// Rows read from the input (good + rejected).
    pub rows_read: u64,
    /// Trips added to `yellow_taxi_trips`.
    pub trips_inserted: u64,
    /// Rows not loaded because the same trip was already loaded or seen earlier in the run.
    pub duplicates_skipped: u64,
    /// Rows rejected (unparseable CSV rows, values not convertible to the TLC types).
    pub rejected: u64,
    /// Rows added to `fact_trip`.
    pub fact_rows: u64,
    /// Wall-clock seconds of the whole run.
    pub elapsed_s: f64,
    /// Load transactions committed (one per non-empty batch after de-duplication).
    pub transactions: u64,
    /// Passes over the input of the in-memory de-duplication (one per digest partition); 0 when
    /// de-duplicating in the database.
    pub dedup_passes: u32,
    /// Batches that went through the merge path (`--dedup database`, or a COPY that met rows
    /// loaded concurrently by another process).
    pub merged_batches: u64,
}

impl JobReport {
    /// The one output line.
    pub fn line(&self) -> String {
        format!(
            "taxi_star rows_read={} trips_inserted={} duplicates_skipped={} rejected={} fact_rows={} elapsed_s={:.3}",
            self.rows_read,
            self.trips_inserted,
            self.duplicates_skipped,
            self.rejected,
            self.fact_rows,
            self.elapsed_s
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Normalization: any TLC naming and types → the current naming and TLC 2024 types.

/// Maps one file's columns to the normalized trip schema plus `pickup_date`, rejecting rows whose
/// values cannot be converted.
struct Normalize {
    origin: String,
    /// For each normalized column, the input column index (None: missing, NULL).
    inputs: Vec<Option<usize>>,
    output: SchemaRef,
    fail_on_error: bool,
}

impl Normalize {
    fn new(origin: &str, input: &Schema, fail_on_error: bool) -> Result<Self, BoxError> {
        let trip = trip_schema();
        let mut inputs = Vec::with_capacity(COLUMNS.len());
        for (name, aliases) in COLUMNS {
            let wanted: Vec<String> =
                std::iter::once(*name).chain(aliases.iter().copied()).map(squash).collect();
            let found: Vec<usize> = input
                .fields()
                .iter()
                .enumerate()
                .filter(|(_, f)| wanted.contains(&squash(f.name())))
                .map(|(i, _)| i)
                .collect();
            if found.len() > 1 {
                return Err(format!("{origin}: several columns map to `{name}`").into());
            }
            if found.is_empty() && REQUIRED.contains(name) {
                return Err(format!("{origin}: no column for `{name}` (nor {aliases:?})").into());
            }
            inputs.push(found.first().copied());
        }
        let mut fields: Vec<Field> = trip.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(PICKUP_DATE, DataType::Date32, true));
        Ok(Normalize {
            origin: origin.to_owned(),
            inputs,
            output: Arc::new(Schema::new(fields)),
            fail_on_error,
        })
    }
}

impl Transform for Normalize {
    fn name(&self) -> &str {
        "normalize-tlc"
    }

    fn output_schema(&self, _input: &SchemaRef) -> etlkit_core::Result<SchemaRef> {
        Ok(self.output.clone())
    }

    fn apply(&self, batch: RecordBatch, ctx: &Context) -> etlkit_core::Result<Vec<RecordBatch>> {
        let n = batch.num_rows();
        let fail = |msg: String| {
            etlkit_core::Error::stage(
                etlkit_core::Stage::Transform,
                "normalize-tlc",
                false,
                BoxError::from(msg),
            )
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.output.fields().len());
        let mut bad = vec![false; n];
        let mut any_bad = false;
        let strict = arrow_cast::CastOptions { safe: false, ..Default::default() };
        for (field, input) in self.output.fields().iter().zip(&self.inputs) {
            let Some(i) = input else {
                columns.push(new_null_array(field.data_type(), n));
                continue;
            };
            let col = batch.column(*i);
            if col.data_type() == field.data_type() {
                columns.push(col.clone());
                continue;
            }
            let col = match col.data_type() {
                // Timestamps with a time zone: the instant, as TLC's naive local timestamps.
                DataType::Timestamp(unit, Some(_)) => {
                    arrow_cast::cast(col, &DataType::Timestamp(*unit, None))
                        .map_err(|e| fail(e.to_string()))?
                }
                _ => col.clone(),
            };
            match arrow_cast::cast_with_options(&col, field.data_type(), &strict) {
                Ok(c) => columns.push(c),
                Err(_) => {
                    let lenient =
                        arrow_cast::cast(&col, field.data_type()).map_err(|e| fail(e.to_string()))?;
                    for (row, flag) in bad.iter_mut().enumerate() {
                        if col.is_valid(row) && lenient.is_null(row) {
                            let value =
                                arrow_cast::display::array_value_to_string(&col, row).unwrap_or_default();
                            if self.fail_on_error {
                                return Err(fail(format!(
                                    "{}: column `{}` value {value:?} is not a valid {}",
                                    self.origin,
                                    batch.schema().field(*i).name(),
                                    field.data_type()
                                )));
                            }
                            if !*flag {
                                ctx.reject(Rejected {
                                    origin: self.origin.clone(),
                                    line: None,
                                    column: Some(batch.schema().field(*i).name().clone()),
                                    value: Some(value),
                                    reason: format!("not a valid {}", field.data_type()),
                                    raw: None,
                                })?;
                            }
                            *flag = true;
                            any_bad = true;
                        }
                    }
                    columns.push(lenient);
                }
            }
        }
        // pickup_date from the pickup timestamp.
        let pickup = columns[1].clone();
        // Whole days since 1970-01-01, rounding down (what casting to Date32 does, without going
        // through a calendar date per row).
        let days: arrow_array::Date32Array = pickup
            .as_primitive::<arrow_array::types::TimestampMicrosecondType>()
            .unary(|us| us.div_euclid(86_400_000_000) as i32);
        columns.push(Arc::new(days));
        let out = RecordBatch::try_new(self.output.clone(), columns).map_err(|e| fail(e.to_string()))?;
        if !any_bad {
            return Ok(vec![out]);
        }
        let keep = BooleanArray::from(bad.iter().map(|b| !b).collect::<Vec<_>>());
        let kept = arrow_select::filter::filter_record_batch(&out, &keep).map_err(|e| fail(e.to_string()))?;
        Ok(if kept.num_rows() == 0 { Vec::new() } else { vec![kept] })
    }
}

// ---------------------------------------------------------------------------------------------
// Schema.

fn dimension_specs() -> Vec<(&'static str, DimensionSpec)> {
    let text = |n: &str| Field::new(n, DataType::Utf8, true);
    let mut vendor =
        DimensionSpec::new("dim_vendor", vec![Field::new("vendor_id", DataType::Int32, false)], "vendor_key");
    vendor.attributes = vec![text("vendor_name")];
    let mut payment = DimensionSpec::new(
        "dim_payment_type",
        vec![Field::new("payment_type", DataType::Int64, false)],
        "payment_type_key",
    );
    payment.attributes = vec![text("description")];
    let mut rate = DimensionSpec::new(
        "dim_rate_code",
        vec![Field::new("rate_code_id", DataType::Int64, false)],
        "rate_code_key",
    );
    rate.attributes = vec![text("description")];
    let mut location = DimensionSpec::new(
        "dim_location",
        vec![Field::new("LocationID", DataType::Int32, false)],
        "location_key",
    );
    location.attributes = vec![text("borough"), text("zone"), text("service_zone")];
    let small = |n: &str| Field::new(n, DataType::Int16, true);
    let mut date =
        DimensionSpec::new("dim_date", vec![Field::new("date", DataType::Date32, false)], "date_key");
    date.attributes = vec![small("year"), small("month"), small("day"), small("iso_day_of_week")];
    vec![("vendor", vendor), ("payment", payment), ("rate", rate), ("location", location), ("date", date)]
}

async fn create_tables(pool: &sqlx::PgPool, hash: Algorithm) -> Result<(), BoxError> {
    let mut trips: Vec<String> = Vec::new();
    for f in trip_schema().fields() {
        trips.push(format!("{} {}", quote_ident(f.name()), pg_type_for(f).expect("TLC types map")));
    }
    trips.push(format!("{ROW_HASH} bytea NOT NULL CONSTRAINT {UNIQUE_HASH} UNIQUE"));
    let fact: Vec<String> = [
        "vendor_key",
        "payment_type_key",
        "rate_code_key",
        "pickup_location_key",
        "dropoff_location_key",
        "pickup_date_key",
    ]
    .iter()
    .map(|k| format!("{k} bigint NOT NULL"))
    .chain(MEASURES.iter().map(|m| {
        if *m == ROW_HASH {
            format!("{ROW_HASH} bytea NOT NULL")
        } else {
            let f = trip_schema().field_with_name(m).expect("measure is a trip column").clone();
            format!("{} {}", quote_ident(m), pg_type_for(&f).expect("TLC types map"))
        }
    }))
    .collect();
    let comment = format!("etlkit-row-v1 {}", hash.name());
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('etlkit-taxi-star-ddl'))").execute(&mut *tx).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE IF NOT EXISTS {TRIPS} ({}); CREATE TABLE IF NOT EXISTS {FACT} ({});",
        trips.join(", "),
        fact.join(", ")
    )))
    .execute(&mut *tx)
    .await?;
    let existing = row_hash_comment(&mut tx).await?;
    // The comment may carry a running bulk load's mark (see `begin_bulk`).
    match existing.as_deref().map(|c| c.split_once(BULK_MARK).map_or(c, |(hash, _)| hash)) {
        Some(c) if c != comment => {
            return Err(format!(
                "{TRIPS}.{ROW_HASH} holds `{c}` hashes; this run would write `{comment}` (use the same --hash)"
            )
            .into());
        }
        Some(_) => {}
        None => {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "COMMENT ON COLUMN {TRIPS}.{ROW_HASH} IS '{comment}'"
            )))
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// The comment on `yellow_taxi_trips.row_hash`: the hash algorithm (`etlkit-row-v1 sha256`), plus
/// [`BULK_MARK`] while a bulk load runs.
async fn row_hash_comment(conn: &mut sqlx::PgConnection) -> Result<Option<String>, BoxError> {
    Ok(sqlx::query_scalar(
        "SELECT col_description(to_regclass($1), attnum) FROM pg_attribute \
         WHERE attrelid = to_regclass($1) AND attname = $2",
    )
    .bind(TRIPS)
    .bind(ROW_HASH)
    .fetch_one(&mut *conn)
    .await?)
}

/// Marks the `row_hash` column comment while a bulk load runs (followed by the tables whose
/// autovacuum it paused), so that a run finding the constraint missing knows what to undo.
const BULK_MARK: &str = "; bulk load running, autovacuum paused on: ";

/// Starts a bulk load (the caller holds the bulk advisory lock): in one transaction, drops the
/// `row_hash` UNIQUE constraint and pauses autovacuum on both tables (unless their owner set
/// `autovacuum_enabled` explicitly). An autovacuum started mid-load would scan pages that are still
/// being written and then be cancelled by the index build after `deadlock_timeout` (measured: ~1 s
/// of the build's time and the CPU it had spent, for nothing). [`ensure_unique`] undoes both.
pub async fn begin_bulk(conn: &mut sqlx::PgConnection) -> Result<(), BoxError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let comment = row_hash_comment(&mut tx).await?.unwrap_or_default();
    let pause: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class WHERE oid IN (to_regclass($1), to_regclass($2)) \
         AND NOT EXISTS (SELECT 1 FROM unnest(reloptions) o WHERE o LIKE 'autovacuum_enabled=%') \
         ORDER BY relname",
    )
    .bind(TRIPS)
    .bind(FACT)
    .fetch_all(&mut *tx)
    .await?;
    let mut sql = format!("ALTER TABLE {TRIPS} DROP CONSTRAINT {UNIQUE_HASH}; ");
    for table in &pause {
        sql.push_str(&format!("ALTER TABLE {} SET (autovacuum_enabled = off); ", quote_ident(table)));
    }
    sql.push_str(&format!(
        "COMMENT ON COLUMN {TRIPS}.{ROW_HASH} IS '{comment}{BULK_MARK}{}'",
        pause.join(",")
    ));
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Re-creates the `row_hash` UNIQUE constraint when it is missing (the end of a bulk load, or one
/// that crashed after [`begin_bulk`]) and resumes the autovacuum the bulk load paused. Returns
/// whether it had to. The caller holds the load lock (so no bulk load is running unless it is the
/// caller's own); runs that hold it shared take turns here under the DDL lock.
async fn ensure_unique(conn: &mut sqlx::PgConnection) -> Result<bool, BoxError> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('etlkit-taxi-star-ddl'))").execute(&mut *tx).await?;
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2)",
    )
    .bind(TRIPS)
    .bind(UNIQUE_HASH)
    .fetch_one(&mut *tx)
    .await?;
    if exists {
        tx.commit().await?;
        return Ok(false);
    }
    let comment = row_hash_comment(&mut tx).await?;
    eprintln!("taxi_star: (re)building the UNIQUE ({ROW_HASH}) constraint of {TRIPS}");
    // The index is built under a SHARE lock (readers, such as the final row counts, go on
    // meanwhile), then becomes the constraint. A leftover index of a run that crashed between the
    // two is dropped first.
    let mut sql = format!(
        "SET LOCAL maintenance_work_mem = '{REBUILD_MEMORY}'; \
         DROP INDEX IF EXISTS {UNIQUE_HASH}; \
         CREATE UNIQUE INDEX {UNIQUE_HASH} ON {TRIPS} ({ROW_HASH}); \
         ALTER TABLE {TRIPS} ADD CONSTRAINT {UNIQUE_HASH} UNIQUE USING INDEX {UNIQUE_HASH}; "
    );
    if let Some((hash, paused)) = comment.as_deref().and_then(|c| c.split_once(BULK_MARK)) {
        for table in paused.split(',').filter(|t| !t.is_empty()) {
            sql.push_str(&format!("ALTER TABLE {} RESET (autovacuum_enabled); ", quote_ident(table)));
        }
        sql.push_str(&format!("COMMENT ON COLUMN {TRIPS}.{ROW_HASH} IS '{hash}'"));
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(true)
}

/// Rows of the input files: exact for Parquet (from the footers), estimated from the size for CSV
/// (~150 bytes a TLC row).
fn estimated_rows(files: &[PathBuf]) -> u64 {
    files
        .iter()
        .map(|f| {
            let csv = f.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("csv"));
            let parquet_rows = (!csv)
                .then(|| {
                    let config = ParquetSourceConfig { input: Input::File(f.clone()), ..Default::default() };
                    ParquetSource::open(config).ok().and_then(|s| s.total_rows())
                })
                .flatten();
            parquet_rows.unwrap_or_else(|| std::fs::metadata(f).map_or(0, |m| m.len()) / 150)
        })
        .sum()
}

/// Loads a TLC `taxi_zone_lookup.csv` into `dim_location` (inserting or updating its attributes).
async fn load_zones(pool: &sqlx::PgPool, path: &Path) -> Result<u64, BoxError> {
    let source =
        CsvSource::open(CsvSourceConfig { input: Input::File(path.to_owned()), ..Default::default() })?;
    let schema = source.schema();
    let idx = |name: &str| {
        schema
            .fields()
            .iter()
            .position(|f| squash(f.name()) == squash(name))
            .ok_or_else(|| format!("{}: no `{name}` column", path.display()))
    };
    let (id, borough, zone, service) =
        (idx("LocationID")?, idx("Borough")?, idx("Zone")?, idx("service_zone")?);
    let mut ids: Vec<i32> = Vec::new();
    let mut texts: [Vec<Option<String>>; 3] = Default::default();
    let mut stream = Box::new(source).into_stream(Context::default());
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let ids_col = arrow_cast::cast(batch.column(id), &DataType::Int32)?;
        let ids_col = ids_col.as_primitive::<arrow_array::types::Int32Type>();
        for (k, c) in [borough, zone, service].into_iter().enumerate() {
            let s = arrow_cast::cast(batch.column(c), &DataType::Utf8)?;
            texts[k].extend(s.as_string::<i32>().iter().map(|v| v.map(str::to_owned)));
        }
        for v in ids_col.iter() {
            ids.push(v.ok_or_else(|| format!("{}: a zone without LocationID", path.display()))?);
        }
    }
    let n = ids.len() as u64;
    sqlx::query(
        "INSERT INTO dim_location (\"LocationID\", borough, zone, service_zone) \
         SELECT * FROM unnest($1::int[], $2::text[], $3::text[], $4::text[]) \
         ON CONFLICT (\"LocationID\") DO UPDATE SET borough = EXCLUDED.borough, zone = EXCLUDED.zone, \
         service_zone = EXCLUDED.service_zone",
    )
    .bind(ids)
    .bind(&texts[0])
    .bind(&texts[1])
    .bind(&texts[2])
    .execute(pool)
    .await?;
    Ok(n)
}

/// Descriptions from the TLC data dictionary (filled in where missing) and calendar attributes.
async fn describe_members(pool: &sqlx::PgPool) -> Result<(), BoxError> {
    sqlx::raw_sql(
        "UPDATE dim_vendor d SET vendor_name = v.n FROM (VALUES (1, 'Creative Mobile Technologies'), \
           (2, 'Curb Mobility'), (6, 'Myle Technologies'), (7, 'Helix')) v(k, n) \
           WHERE d.vendor_id = v.k AND d.vendor_name IS NULL; \
         UPDATE dim_payment_type d SET description = v.n FROM (VALUES (0, 'Flex Fare'), (1, 'Credit card'), \
           (2, 'Cash'), (3, 'No charge'), (4, 'Dispute'), (5, 'Unknown'), (6, 'Voided trip')) v(k, n) \
           WHERE d.payment_type = v.k AND d.description IS NULL; \
         UPDATE dim_rate_code d SET description = v.n FROM (VALUES (1, 'Standard rate'), (2, 'JFK'), \
           (3, 'Newark'), (4, 'Nassau or Westchester'), (5, 'Negotiated fare'), (6, 'Group ride'), \
           (99, 'Null/unknown')) v(k, n) WHERE d.rate_code_id = v.k AND d.description IS NULL; \
         UPDATE dim_date SET year = extract(year FROM date), month = extract(month FROM date), \
           day = extract(day FROM date), iso_day_of_week = extract(isodow FROM date) \
           WHERE year IS NULL AND date IS NOT NULL;",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Rows in `table`.
async fn count_rows(pool: &sqlx::PgPool, table: &str) -> Result<u64, BoxError> {
    let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(pool)
        .await?;
    Ok(n as u64)
}

/// Rows in `yellow_taxi_trips` and `fact_trip`, counted in one statement (one snapshot).
async fn counts(pool: &sqlx::PgPool) -> Result<(u64, u64), BoxError> {
    let (t, f): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT (SELECT count(*) FROM {TRIPS}), (SELECT count(*) FROM {FACT})"
    )))
    .fetch_one(pool)
    .await?;
    Ok((t as u64, f as u64))
}

/// Seeds `dedup` with every `row_hash` already in `yellow_taxi_trips` (streamed by binary COPY).
async fn seed_dedup(pool: &sqlx::PgPool, dedup: &Dedup) -> Result<u64, BoxError> {
    // A partitioned seen-set only needs its range of digests (`Dedup::seed` ignores the others).
    let hex = |b: [u8; 4]| format!("'\\x{}'::bytea", etlkit_hash::to_hex(&b));
    let range = match dedup.config().partition.map(|p| p.prefix_range()) {
        None => String::new(),
        Some((lo, None)) => format!(" WHERE {ROW_HASH} >= {}", hex(lo)),
        Some((lo, Some(hi))) => format!(" WHERE {ROW_HASH} >= {} AND {ROW_HASH} < {}", hex(lo), hex(hi)),
    };
    let source = PgSource::new(
        pool.clone(),
        PgSourceConfig {
            query: SourceQuery::Query(format!("SELECT {ROW_HASH} FROM {TRIPS}{range}")),
            batch_size: 65_536,
        },
    )
    .await?;
    let mut stream = Box::new(source).into_stream(Context::default());
    let mut n = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let col = batch.column(0).as_binary::<i32>();
        n += col.len() as u64;
        dedup.seed(col.iter().flatten().filter_map(|d| <[u8; 32]>::try_from(d).ok()));
    }
    Ok(n)
}

fn input_files(input: &str) -> Result<Vec<PathBuf>, BoxError> {
    let is_data = |p: &Path| {
        let ext = p.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
        matches!(ext.as_str(), "parquet" | "parq" | "pq" | "csv")
    };
    let path = Path::new(input);
    let mut files: Vec<PathBuf> = if path.is_dir() {
        std::fs::read_dir(path)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && is_data(p)
                    && !p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(['.', '_']))
            })
            .collect()
    } else if input.contains(['*', '?', '[']) {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let pattern = path.file_name().and_then(|n| n.to_str()).unwrap_or("*").to_owned();
        std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file() && p.file_name().and_then(|n| n.to_str()).is_some_and(|n| glob_match(&pattern, n))
            })
            .collect()
    } else {
        vec![path.to_owned()]
    };
    files.sort();
    if files.is_empty() {
        return Err(format!("{input}: no Parquet or CSV files").into());
    }
    Ok(files)
}

/// `*` and `?` wildcards (enough for `trips/*.parquet`).
fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

fn open_source(path: &Path, cfg: &JobConfig) -> Result<Box<dyn Source>, BoxError> {
    let is_csv = path.extension().and_then(|e| e.to_str()).is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    Ok(if is_csv {
        Box::new(CsvSource::open(CsvSourceConfig {
            input: Input::File(path.to_owned()),
            batch_size: cfg.batch_size,
            on_error: cfg.on_error,
            ..Default::default()
        })?)
    } else {
        Box::new(ParquetSource::open(ParquetSourceConfig {
            input: Input::File(path.to_owned()),
            batch_size: cfg.batch_size,
            // Memory: two row groups decoded ahead are plenty (the database is the slower side).
            max_row_groups_in_flight: 2,
            batches_per_row_group: 1,
            ..Default::default()
        })?)
    })
}

/// Runs the job against `url`.
pub async fn run_job(cfg: &JobConfig, url: &str) -> Result<JobReport, BoxError> {
    let started = Instant::now();
    let files = input_files(&cfg.input)?;
    let dims = dimension_specs();
    let pool =
        connect(&DatabaseUrl::new(url), (cfg.workers + dims.len() + 1) as u32, "etlkit-taxi_star").await?;
    create_tables(&pool, cfg.hash).await?;
    let store = Arc::new(PgDimensionStore::new(pool.clone(), PgDimensionConfig::default())?);
    use etlkit_dimcache::DimensionStore;
    for (_, spec) in &dims {
        store.prepare(spec).await?;
    }
    if let Some(z) = &cfg.zones {
        let n = load_zones(&pool, z).await?;
        eprintln!("taxi_star: {n} zones from {}", z.display());
    }
    let mut caches = std::collections::HashMap::new();
    for (role, spec) in dims {
        caches.insert(role, Arc::new(DimensionCache::open(spec, store.clone()).await?));
    }
    let role = |cache: &str, source: &str, fact: &str| FactRole {
        cache: caches[cache].clone(),
        source_columns: vec![source.to_owned()],
        attribute_columns: Vec::new(),
        fact_column: fact.to_owned(),
    };
    let roles = vec![
        role("vendor", "VendorID", "vendor_key"),
        role("payment", "payment_type", "payment_type_key"),
        role("rate", "RatecodeID", "rate_code_key"),
        role("location", "PULocationID", "pickup_location_key"),
        role("location", "DOLocationID", "dropoff_location_key"),
        role("date", PICKUP_DATE, "pickup_date_key"),
    ];

    let trips_before = count_rows(&pool, TRIPS).await?;
    let fact_before = if cfg.verify_counts { count_rows(&pool, FACT).await? } else { 0 };
    let estimate = estimated_rows(&files);
    let rows = trips_before + estimate;
    let fits = |passes: u32| {
        let config = pass_config(rows, 0, passes);
        config.seen_set_bytes(config.expected_rows) as u64 <= cfg.dedup_memory_mb << 20
    };
    // Memory mode: how many passes over the input (one per digest partition).
    let passes = match (cfg.dedup, cfg.dedup_passes) {
        (DedupMode::Database, _) => None,
        (_, Some(k)) => Some(k.max(1)),
        (DedupMode::Memory, None) => Some(1),
        (DedupMode::Auto, None) => (1..=MAX_DEDUP_PASSES).find(|&k| fits(k)),
    };
    let mode = if passes.is_some() { DedupMode::Memory } else { DedupMode::Database };
    let bulk = mode == DedupMode::Memory
        && cfg.rebuild_index.unwrap_or(estimate >= 500_000 && estimate >= trips_before / 4);
    // The load lock, held for the whole run on a connection of its own (closed at the end, which
    // releases it whatever happens): exclusive for a bulk run, which drops the constraint, shared
    // for the others (they may load side by side: a COPY meeting rows another run committed is
    // redone by the merge path, which needs the constraint). Taken before seeding, so that the
    // seen-set includes every row of the bulk runs before this one.
    let mut lock_conn = pool.acquire().await?.detach();
    let lock = if bulk { "pg_advisory_lock" } else { "pg_advisory_lock_shared" };
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {lock}(hashtext('etlkit-taxi-star-bulk'))")))
        .execute(&mut lock_conn)
        .await?;
    // A bulk run that crashed left the constraint dropped: rebuild it before loading.
    ensure_unique(&mut lock_conn).await?;
    let dedup = match passes {
        None => {
            eprintln!("taxi_star: de-duplication in the database (merge with ON CONFLICT DO NOTHING)");
            None
        }
        Some(k) => {
            let d = Arc::new(Dedup::new(pass_config(rows, 0, k))?);
            let seeded = seed_dedup(&pool, &d).await?;
            eprintln!(
                "taxi_star: de-duplication in memory{}, seeded with {seeded} row hashes from {TRIPS}",
                if k > 1 {
                    format!(" in {k} passes (one per digest partition); pass 1")
                } else {
                    String::new()
                }
            );
            Some((d, k))
        }
    };
    // A bulk run drops the constraint when its first new trips are about to be written (a run that
    // finds nothing new leaves the index alone); the others keep the shared lock until they return.
    let (gate, _shared_lock) =
        if bulk { (Some(Arc::new(BulkGate::new(lock_conn))), None) } else { (None, Some(lock_conn)) };
    let load = Load { cfg, files: &files, pool: &pool, roles: &roles, gate: gate.as_ref() };
    let loaded = match dedup {
        None => load_files(&load, None, false).await,
        Some((first, k)) => load_passes(&load, rows, k, first).await,
    };
    let finishing = Instant::now();
    // The final checks read both tables while the bulk run's UNIQUE index is being built (a reader
    // does not block the build, and the build leaves a core idle part of the time).
    let checks = async {
        describe_members(&pool).await?;
        if cfg.verify_counts { counts(&pool).await.map(Some) } else { Ok(None) }
    };
    let (counted, rebuilt) = match gate {
        Some(gate) => {
            let rebuild = async {
                let mut conn = gate.conn.lock().await;
                let ensured = if gate.opened.initialized() {
                    ensure_unique(&mut conn).await.map(|_| {
                        eprintln!("taxi_star: UNIQUE ({ROW_HASH}) rebuilt in {:.2?}", finishing.elapsed())
                    })
                } else {
                    eprintln!("taxi_star: bulk load found no new trips: UNIQUE ({ROW_HASH}) kept");
                    Ok(())
                };
                let _ = sqlx::query("SELECT pg_advisory_unlock(hashtext('etlkit-taxi-star-bulk'))")
                    .execute(&mut *conn)
                    .await;
                ensured
            };
            // Only once the load is over (a failed load still rebuilds the constraint).
            if loaded.is_ok() {
                let (c, r) = tokio::join!(checks, rebuild);
                (Some(c), r)
            } else {
                (None, rebuild.await)
            }
        }
        None => (if loaded.is_ok() { Some(checks.await) } else { None }, Ok(())),
    };
    let mut report = loaded?;
    rebuilt?;
    report.dedup_passes = passes.unwrap_or(0);
    eprintln!(
        "taxi_star: set-up and load {:.2?}, then index and checks {:.2?}",
        finishing.duration_since(started),
        finishing.elapsed()
    );
    // `trips_inserted` and `fact_rows` are the server's row counts of this run's committed COPYs
    // (or merges); each batch adds its trips and its facts in one transaction.
    if report.trips_inserted != report.fact_rows {
        return Err(format!(
            "this run inserted {} rows into {TRIPS} but {} into {FACT}",
            report.trips_inserted, report.fact_rows
        )
        .into());
    }
    if let Some((trips_after, fact_after)) = counted.expect("checked after a successful load")? {
        // Both tables gain rows only together (one transaction per batch), whoever writes them.
        let (trips_gained, fact_gained) = (trips_after - trips_before, fact_after - fact_before);
        if trips_gained != fact_gained {
            return Err(format!("{TRIPS} gained {trips_gained} rows but {FACT} {fact_gained}").into());
        }
        if trips_gained != report.trips_inserted {
            // Only possible with a concurrent writer (another job loading the same tables).
            eprintln!(
                "taxi_star: {TRIPS} gained {trips_gained} rows, {} of them from this run (others were loading too)",
                report.trips_inserted
            );
        }
    }
    if report.rows_read != report.trips_inserted + report.duplicates_skipped + report.rejected {
        return Err(format!("row accounting does not add up: {report:?}").into());
    }
    report.elapsed_s = started.elapsed().as_secs_f64();
    Ok(report)
}

/// A bulk run's start, deferred to the first batch of new trips: then (once) [`begin_bulk`] drops
/// the constraint and pauses autovacuum. Holds the connection with the exclusive load lock.
struct BulkGate {
    conn: tokio::sync::Mutex<sqlx::PgConnection>,
    opened: tokio::sync::OnceCell<()>,
}

impl BulkGate {
    fn new(conn: sqlx::PgConnection) -> Self {
        BulkGate { conn: tokio::sync::Mutex::new(conn), opened: tokio::sync::OnceCell::new() }
    }

    async fn open(&self) -> etlkit_core::Result<()> {
        self.opened
            .get_or_try_init(|| async {
                begin_bulk(&mut *self.conn.lock().await).await.map_err(|e| {
                    etlkit_core::Error::stage(etlkit_core::Stage::Sink, "bulk-start", false, e)
                })?;
                eprintln!(
                    "taxi_star: bulk load: UNIQUE ({ROW_HASH}) dropped and autovacuum paused, both restored at the end"
                );
                Ok(())
            })
            .await
            .map(|_| ())
    }
}

/// The star sink behind a [`BulkGate`]: every write waits until the bulk load has started.
struct Gated {
    inner: Arc<PgStarSink>,
    gate: Arc<BulkGate>,
}

#[async_trait::async_trait]
impl etlkit_core::Sink for Gated {
    fn name(&self) -> String {
        self.inner.name()
    }
    async fn start(&self, schema: &SchemaRef) -> etlkit_core::Result<()> {
        self.inner.start(schema).await
    }
    async fn write(&self, batch: RecordBatch, ctx: &Context) -> etlkit_core::Result<u64> {
        if batch.num_rows() > 0 {
            self.gate.open().await?;
        }
        self.inner.write(batch, ctx).await
    }
    async fn finish(&self) -> etlkit_core::Result<etlkit_core::LoadStats> {
        self.inner.finish().await
    }
    async fn abort(&self) {
        self.inner.abort().await
    }
}

/// The seen-set configuration of pass `pass` of `passes` for `rows` table + input rows: the digest
/// partition (when there are several passes) and its expected share of the rows, with 4 standard
/// deviations to spare.
fn pass_config(rows: u64, pass: u32, passes: u32) -> DedupConfig {
    let share = rows.div_ceil(u64::from(passes));
    let spare = if passes > 1 { 4 * (share as f64).sqrt() as u64 } else { 0 };
    DedupConfig {
        hash_column: Some(ROW_HASH.into()),
        expected_rows: (share + spare) as usize,
        partition: (passes > 1).then_some(DigestPartition { index: pass, count: passes }),
        ..Default::default()
    }
}

/// What a run loads, and where.
#[derive(Clone, Copy)]
struct Load<'a> {
    cfg: &'a JobConfig,
    files: &'a [PathBuf],
    pool: &'a sqlx::PgPool,
    roles: &'a [FactRole],
    /// A bulk run's deferred start.
    gate: Option<&'a Arc<BulkGate>>,
}

/// Memory mode: loads the input once per digest partition, each pass with a seen-set of that
/// partition only (`first`, already seeded, is pass 0's), and adds up the passes. Rows outside a
/// pass's partition are left to another pass; rows read and rejected are counted by the first pass
/// (later passes reject the same rows again without reporting them twice).
async fn load_passes(
    load: &Load<'_>,
    rows: u64,
    passes: u32,
    first: Arc<Dedup>,
) -> Result<JobReport, BoxError> {
    let mut total = JobReport::default();
    let mut first = Some(first);
    for pass in 0..passes {
        let dedup = match first.take() {
            Some(d) => d,
            None => {
                let d = Arc::new(Dedup::new(pass_config(rows, pass, passes))?);
                let seeded = seed_dedup(load.pool, &d).await?;
                eprintln!("taxi_star: pass {} of {passes}, seeded with {seeded} row hashes", pass + 1);
                d
            }
        };
        let r = load_files(load, Some(&dedup), pass > 0).await?;
        drop(dedup); // before the next pass's seen-set is allocated
        if pass == 0 {
            (total.rows_read, total.rejected) = (r.rows_read, r.rejected);
        } else if (r.rows_read, r.rejected) != (total.rows_read, total.rejected) {
            return Err(format!(
                "the input changed between passes: pass 1 read {} rows ({} rejected), pass {} read {} ({})",
                total.rows_read,
                total.rejected,
                pass + 1,
                r.rows_read,
                r.rejected
            )
            .into());
        }
        total.trips_inserted += r.trips_inserted;
        total.fact_rows += r.fact_rows;
        total.duplicates_skipped += r.duplicates_skipped;
        total.transactions += r.transactions;
        total.merged_batches += r.merged_batches;
    }
    Ok(total)
}

/// Rejected rows of a pass after the first: counted by the pipeline, not reported again.
struct ReportedByFirstPass;

impl etlkit_core::RejectSink for ReportedByFirstPass {
    fn reject(&self, _row: Rejected) -> etlkit_core::Result<()> {
        Ok(())
    }
}

/// Loads every file through its own pipeline run; sums the counts. Rows a partitioned `dedup`
/// leaves to another pass are the only rows the pipeline may filter. `quiet_rejects`: rejected rows
/// are counted but not reported (a later pass of [`load_passes`]).
async fn load_files(
    load: &Load<'_>,
    dedup: Option<&Arc<Dedup>>,
    quiet_rejects: bool,
) -> Result<JobReport, BoxError> {
    let Load { cfg, files, pool, roles, gate } = *load;
    let mut trip_columns: Vec<String> = trip_schema().fields().iter().map(|f| f.name().clone()).collect();
    trip_columns.push(ROW_HASH.into());
    let mut report = JobReport::default();
    for file in files {
        let origin = file.display().to_string();
        let source = open_source(file, cfg)?;
        let normalize = Normalize::new(&origin, &source.schema(), cfg.on_error == OnError::Fail)?;
        let hash = RowHashTransform::new(RowHashConfig {
            algorithm: cfg.hash,
            columns: trip_schema().fields().iter().map(|f| f.name().clone()).collect(),
            output_column: ROW_HASH.into(),
            format: HashFormat::Binary,
        })?;
        let mut schema = normalize.output.clone();
        schema = hash.output_schema(&schema)?;
        let star =
            StarSchema::new(&schema, roles.to_vec(), MEASURES.iter().map(|m| m.to_string()).collect())?;
        let sink = Arc::new(PgStarSink::new(
            pool.clone(),
            star,
            PgStarConfig {
                rows_table: TableRef::new(TRIPS),
                rows_columns: trip_columns.clone(),
                fact_table: TableRef::new(FACT),
                conflict_key: Some(ROW_HASH.into()),
                mode: if dedup.is_some() { StarLoadMode::Copy } else { StarLoadMode::Merge },
                ..Default::default()
            },
        )?);
        let sink: Arc<dyn etlkit_core::Sink> = match gate {
            Some(g) => Arc::new(Gated { inner: sink, gate: g.clone() }),
            None => sink,
        };
        let mut pipeline = Pipeline::from_boxed(source, sink)
            .config(PipelineConfig {
                batch_size: cfg.batch_size,
                workers: cfg.workers,
                flush_interval: Duration::from_millis(200),
                channel_capacity: 2,
                ..Default::default()
            })
            .transform(normalize)
            .transform(hash);
        if let Some(d) = dedup {
            pipeline = pipeline.transform_arc(d.clone());
        }
        if quiet_rejects {
            pipeline = pipeline.rejects(Arc::new(ReportedByFirstPass));
        }
        let outside_before = dedup.map_or(0, |d| d.outside_partition());
        let stats = pipeline.run().await?;
        let outside = dedup.map_or(0, |d| d.outside_partition()) - outside_before;
        let inserted = stats.counter("rows_inserted");
        tracing_line(&origin, &stats);
        report.rows_read += stats.rows_read;
        report.trips_inserted += inserted;
        report.fact_rows += stats.counter("fact_inserted");
        report.duplicates_skipped += stats.rows_deduplicated + stats.counter("conflicts");
        report.rejected += stats.rows_rejected;
        report.transactions += stats.counter("transactions");
        report.merged_batches += stats.counter("merged_batches");
        if stats.rows_filtered != outside {
            return Err(format!(
                "{origin}: {} rows filtered, {outside} of them left to another de-duplication pass",
                stats.rows_filtered
            )
            .into());
        }
    }
    Ok(report)
}

fn tracing_line(origin: &str, stats: &etlkit_core::LoadStats) {
    eprintln!(
        "taxi_star: {origin}: read={} inserted={} deduplicated={} conflicts={} rejected={} merged_batches={} retries={} in {:.2?}",
        stats.rows_read,
        stats.counter("rows_inserted"),
        stats.rows_deduplicated,
        stats.counter("conflicts"),
        stats.rows_rejected,
        stats.counter("merged_batches"),
        stats.retries,
        stats.elapsed
    );
}

// ---------------------------------------------------------------------------------------------
// Command line.

const USAGE: &str = "usage: taxi_star --input FILE_OR_DIR [--database-url URL] [--batch-size N] [--workers N] \
                     [--hash sha256|blake3] [--zones taxi_zone_lookup.csv] [--on-error reject|fail] \
                     [--dedup auto|memory|database] [--dedup-memory-mb N] [--dedup-passes N] \
                     [--rebuild-index auto|always|never] [--verify-counts] [--report]";

fn parse_args() -> Result<(JobConfig, Option<String>), BoxError> {
    let mut cfg = JobConfig::default();
    let mut url = std::env::var("DATABASE_URL").ok().filter(|s| !s.trim().is_empty());
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--input" => cfg.input = value()?,
            "--database-url" => url = Some(value()?),
            "--batch-size" => cfg.batch_size = value()?.parse()?,
            "--workers" => cfg.workers = value()?.parse()?,
            "--hash" => cfg.hash = value()?.parse()?,
            "--zones" => cfg.zones = Some(value()?.into()),
            "--on-error" => {
                cfg.on_error = match value()?.as_str() {
                    "reject" => OnError::Reject,
                    "fail" => OnError::Fail,
                    other => return Err(format!("--on-error must be reject or fail, not {other}").into()),
                }
            }
            "--rebuild-index" => {
                cfg.rebuild_index = match value()?.as_str() {
                    "auto" => None,
                    "always" => Some(true),
                    "never" => Some(false),
                    other => {
                        return Err(
                            format!("--rebuild-index must be auto, always or never, not {other}").into()
                        );
                    }
                }
            }
            "--dedup-memory-mb" => cfg.dedup_memory_mb = value()?.parse()?,
            "--report" => {} // handled in main
            "--verify-counts" => cfg.verify_counts = true,
            "--dedup-passes" => cfg.dedup_passes = Some(value()?.parse()?),
            "--dedup" => {
                cfg.dedup = match value()?.as_str() {
                    "auto" => DedupMode::Auto,
                    "memory" => DedupMode::Memory,
                    "database" => DedupMode::Database,
                    other => {
                        return Err(format!("--dedup must be auto, memory or database, not {other}").into());
                    }
                }
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    if cfg.input.is_empty() {
        return Err(USAGE.into());
    }
    if cfg.batch_size == 0 || cfg.workers == 0 {
        return Err("--batch-size and --workers must be at least 1".into());
    }
    Ok((cfg, url))
}

fn main() -> etlkit_core::Reported {
    run().into()
}

fn run() -> Result<(), BoxError> {
    let print_report = std::env::args().any(|a| a == "--report");
    let (cfg, url) = parse_args()?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=error")),
        )
        .with_writer(std::io::stderr)
        .init();
    // Keeps a throwaway server alive until the end of main.
    let mut _server = None;
    let url = match url {
        Some(u) => u,
        None => {
            let pg = etlkit_testkit::PgServer::start_dedicated()?;
            let url = pg.fresh_database()?;
            eprintln!(
                "taxi_star: no --database-url and no DATABASE_URL: started a throwaway PostgreSQL ({})",
                DatabaseUrl::new(url.clone())
            );
            _server = Some(pg);
            url
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(run_job(&cfg, &url))?;
    println!("{}", report.line());
    if print_report {
        eprint!("{}", runtime.block_on(report_query(&url))?);
    }
    Ok(())
}

/// The SQL of `--report`: trips and average fare by payment type and pickup borough.
pub const REPORT_SQL: &str = "SELECT coalesce(pt.description, pt.payment_type::text, 'unknown') AS payment, \
       coalesce(l.borough, 'zone ' || l.\"LocationID\", 'unknown') AS pickup_borough, \
       count(*) AS trips, round(avg(f.fare_amount)::numeric, 2)::text AS avg_fare \
     FROM fact_trip f \
     JOIN dim_payment_type pt USING (payment_type_key) \
     JOIN dim_location l ON l.location_key = f.pickup_location_key \
     GROUP BY 1, 2 ORDER BY trips DESC LIMIT 15";

/// Runs [`REPORT_SQL`] and formats it as a small table.
async fn report_query(url: &str) -> Result<String, BoxError> {
    let pool = connect(&DatabaseUrl::new(url), 1, "etlkit-taxi_star-report").await?;
    let rows: Vec<(String, String, i64, Option<String>)> =
        sqlx::query_as(REPORT_SQL).fetch_all(&pool).await?;
    let mut out = format!("{:<14} {:<16} {:>10} {:>9}\n", "payment", "pickup_borough", "trips", "avg_fare");
    for (payment, borough, trips, fare) in rows {
        out.push_str(&format!("{payment:<14} {borough:<16} {trips:>10} {:>9}\n", fare.unwrap_or_default()));
    }
    Ok(out)
}

//! NYC TLC yellow-taxi trip data, generated: the 19 columns and Arrow types of the TLC 2024 Parquet files,
//! with realistic value distributions, the TLC's NULL pattern and planted exact duplicate rows.
//!
//! The generator is deterministic: the same `(rows, seed, dup_rate)` always gives the same batch (a
//! hand-rolled xoshiro256++ seeded through splitmix64; `ln`/`exp`/`cos` come from the platform's libm, so
//! another platform could differ in a rare last bit before values are rounded to cents). Generating 3.6 M rows takes about four seconds on one core in a release build
//! ([`yellow_trips_batches`] spreads that over all cores).
//!
//! What the data looks like:
//! - pickups spread over January 2024 (second precision, more trips in the afternoon rush than at 4 am),
//!   drop-off after pickup by a duration that follows the distance;
//! - about 4.5 % of rows have the TLC's "missing metadata" pattern: `passenger_count`, `RatecodeID`,
//!   `store_and_fwd_flag`, `congestion_surcharge` and `Airport_fee` NULL together and `payment_type` 0;
//! - about 1 % refunds/disputes with negative money columns; JFK flat fares of 70.00; location IDs in
//!   1..=265 skewed towards busy Manhattan zones and the airports (132 JFK, 138 LaGuardia);
//! - `total_amount` is the sum of the other money columns, rounded to cents.
//!
//! Duplicates: exactly [`duplicate_count(rows, dup_rate)`](duplicate_count) rows are copies of other rows
//! of the batch, scattered at random positions. The remaining rows are distinct from each other (pickup
//! second, zones, distance, fares and tip together; a collision is astronomically unlikely and the unit
//! tests check it for the sizes they use).
//!
//! ```
//! use etlkit_testkit::taxi;
//!
//! let batch = taxi::yellow_trips(1_000, 42, 0.01);
//! assert_eq!(batch.num_rows(), 1_000);
//! assert_eq!(batch.schema(), taxi::yellow_trips_schema());
//! assert_eq!(taxi::duplicate_count(1_000, 0.01), 10);
//! ```

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use arrow_array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
    UInt32Array,
};
use arrow_buffer::{NullBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::{Error, Result};

/// Rows per Parquet row group written by [`write_parquet`] (128 Ki rows).
pub const PARQUET_ROW_GROUP_ROWS: usize = 128 * 1024;

/// 2024-01-01T00:00:00 in microseconds since the Unix epoch.
const JAN_2024_MICROS: i64 = 1_704_067_200 * 1_000_000;
const SECOND: i64 = 1_000_000;

/// The schema of the TLC 2024 yellow-trip Parquet files (19 columns, types and nullability as generated).
pub fn yellow_trips_schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
            let money = |name: &str| Field::new(name, DataType::Float64, false);
            Arc::new(Schema::new(vec![
                Field::new("VendorID", DataType::Int32, false),
                Field::new("tpep_pickup_datetime", ts.clone(), false),
                Field::new("tpep_dropoff_datetime", ts, false),
                Field::new("passenger_count", DataType::Int64, true),
                Field::new("trip_distance", DataType::Float64, false),
                Field::new("RatecodeID", DataType::Int64, true),
                Field::new("store_and_fwd_flag", DataType::Utf8, true),
                Field::new("PULocationID", DataType::Int32, false),
                Field::new("DOLocationID", DataType::Int32, false),
                Field::new("payment_type", DataType::Int64, false),
                money("fare_amount"),
                money("extra"),
                money("mta_tax"),
                money("tip_amount"),
                money("tolls_amount"),
                money("improvement_surcharge"),
                money("total_amount"),
                Field::new("congestion_surcharge", DataType::Float64, true),
                Field::new("Airport_fee", DataType::Float64, true),
            ]))
        })
        .clone()
}

/// How many of `rows` rows [`yellow_trips`] makes exact duplicates of other rows for `dup_rate`:
/// `round(rows * dup_rate)`, capped at `rows - 1` (at least one row is an original).
pub fn duplicate_count(rows: usize, dup_rate: f64) -> usize {
    assert!(
        dup_rate.is_finite() && (0.0..1.0).contains(&dup_rate),
        "dup_rate must be in [0.0, 1.0), got {dup_rate}"
    );
    let n = (rows as f64 * dup_rate).round() as usize;
    n.min(rows.saturating_sub(1))
}

/// Generates `rows` yellow-taxi trips as one batch with [`yellow_trips_schema`], deterministic for `seed`.
///
/// `dup_rate` (in `[0.0, 1.0)`) is the fraction of rows that are exact copies of another row of the batch;
/// see [`duplicate_count`]. For big data sets generate several batches with different seeds, or slice this
/// one (`RecordBatch::slice` is zero-copy).
///
/// # Panics
/// If `dup_rate` is outside `[0.0, 1.0)` or `rows` exceeds `u32::MAX`.
pub fn yellow_trips(rows: usize, seed: u64, dup_rate: f64) -> RecordBatch {
    assert!(rows <= u32::MAX as usize, "at most u32::MAX rows per batch");
    let n_dup = duplicate_count(rows, dup_rate);
    let unique = generate(rows - n_dup, seed);
    if n_dup == 0 {
        return unique;
    }
    // Row order: every original once plus `n_dup` copies of random originals, shuffled together.
    let n_unique = (rows - n_dup) as u64;
    let mut rng = Rng::new(seed ^ 0xD0B1_E5D0_B1E5_D0B1);
    let mut order: Vec<u32> = (0..n_unique as u32).collect();
    order.extend((0..n_dup).map(|_| rng.below(n_unique) as u32));
    for i in (1..order.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        order.swap(i, j);
    }
    let indices = UInt32Array::from(order);
    arrow_select::take::take_record_batch(&unique, &indices).expect("take with in-range indices")
}

/// Generates `rows` trips as batches of at most `batch_rows` rows, in parallel (rayon). Batch `i` is
/// `yellow_trips(len_i, seed + i, dup_rate)`, so the result is deterministic and duplicates are planted
/// within each batch. Use this for benchmark-sized data (3.6 M rows take about two seconds on two cores).
///
/// # Panics
/// If `batch_rows` is 0, or as [`yellow_trips`].
pub fn yellow_trips_batches(rows: usize, batch_rows: usize, seed: u64, dup_rate: f64) -> Vec<RecordBatch> {
    use rayon::prelude::*;
    assert!(batch_rows > 0, "batch_rows must be positive");
    (0..rows.div_ceil(batch_rows))
        .into_par_iter()
        .map(|i| {
            let len = batch_rows.min(rows - i * batch_rows);
            yellow_trips(len, seed.wrapping_add(i as u64), dup_rate)
        })
        .collect()
}

/// Writes `batches` to a Parquet file at `path` (parquet's `ArrowWriter`, Snappy compression, row groups
/// of [`PARQUET_ROW_GROUP_ROWS`] rows). All batches must share the first batch's schema.
pub fn write_parquet(path: impl AsRef<Path>, batches: &[RecordBatch]) -> Result<()> {
    let path = path.as_ref();
    let schema = batches.first().ok_or_else(|| Error::NoBatches { path: path.to_owned() })?.schema();
    let file = File::create(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(PARQUET_ROW_GROUP_ROWS))
        .build();
    let parquet_err = |source| Error::Parquet { path: path.to_owned(), source };
    let mut writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(parquet_err)?;
    for batch in batches {
        writer.write(batch).map_err(parquet_err)?;
    }
    writer.close().map_err(parquet_err)?;
    Ok(())
}

/// Writes `batches` to a CSV file at `path` with a header line (arrow-csv's writer with its defaults:
/// `,` delimiter, empty field for NULL, timestamps as `2024-01-01T08:15:00`).
pub fn write_csv(path: impl AsRef<Path>, batches: &[RecordBatch]) -> Result<()> {
    let path = path.as_ref();
    let file = File::create(path).map_err(|source| Error::Io { path: path.to_owned(), source })?;
    let mut writer =
        arrow_csv::WriterBuilder::new().with_header(true).build(BufWriter::with_capacity(1 << 20, file));
    for batch in batches {
        writer.write(batch).map_err(|source| Error::Arrow { path: path.to_owned(), source })?;
    }
    let mut inner = writer.into_inner();
    std::io::Write::flush(&mut inner).map_err(|source| Error::Io { path: path.to_owned(), source })?;
    Ok(())
}

/// Busy pickup/drop-off zones (Manhattan core), drawn for about two thirds of trips.
const BUSY_ZONES: [i32; 24] = [
    161, 237, 236, 162, 230, 186, 142, 170, 163, 239, 48, 234, 68, 141, 79, 107, 238, 140, 164, 249, 100,
    113, 43, 229,
];
const JFK: i32 = 132;
const LGA: i32 = 138;

/// Trips per hour of day (relative).
const HOUR_WEIGHTS: [f64; 24] = [
    3.0, 2.0, 1.3, 0.9, 0.6, 0.6, 1.3, 2.6, 3.6, 4.0, 4.2, 4.5, 4.8, 4.9, 5.2, 5.4, 5.7, 6.3, 6.6, 6.0, 5.5,
    5.4, 5.0, 4.0,
];

fn generate(rows: usize, seed: u64) -> RecordBatch {
    let mut rng = Rng::new(seed);
    let hours = Cumulative::new(&HOUR_WEIGHTS);
    let vendors = Cumulative::new(&[0.24, 0.758, 0.002]);
    let passengers = Cumulative::new(&[0.015, 0.76, 0.15, 0.035, 0.02, 0.01, 0.01]);
    let ratecodes = Cumulative::new(&[0.965, 0.02, 0.004, 0.003, 0.008]);
    let payments = Cumulative::new(&[0.80, 0.165, 0.01, 0.025]);
    let extras = Cumulative::new(&[0.45, 0.25, 0.2, 0.1]);

    let mut vendor = Vec::with_capacity(rows);
    let mut pickup = Vec::with_capacity(rows);
    let mut dropoff = Vec::with_capacity(rows);
    let mut passenger = Vec::with_capacity(rows);
    let mut distance = Vec::with_capacity(rows);
    let mut ratecode = Vec::with_capacity(rows);
    let mut flag: Vec<Option<&'static str>> = Vec::with_capacity(rows);
    let mut pu = Vec::with_capacity(rows);
    let mut dl = Vec::with_capacity(rows);
    let mut payment = Vec::with_capacity(rows);
    let mut fare = Vec::with_capacity(rows);
    let mut extra = Vec::with_capacity(rows);
    let mut mta = Vec::with_capacity(rows);
    let mut tip = Vec::with_capacity(rows);
    let mut tolls = Vec::with_capacity(rows);
    let mut improvement = Vec::with_capacity(rows);
    let mut total = Vec::with_capacity(rows);
    let mut congestion = Vec::with_capacity(rows);
    let mut airport = Vec::with_capacity(rows);
    let mut meta_valid = Vec::with_capacity(rows);

    for _ in 0..rows {
        let has_meta = rng.f64() >= 0.045;
        meta_valid.push(has_meta);
        vendor.push([1, 2, 6][vendors.pick(&mut rng)]);

        // Pickup time: a day of January, an hour by weight, a uniform second within the hour.
        let day = rng.below(31) as i64;
        let hour = hours.pick(&mut rng) as i64;
        let sec = rng.below(3600) as i64;
        let start = JAN_2024_MICROS + ((day * 24 + hour) * 3600 + sec) * SECOND;

        let pu_zone = zone(&mut rng, 0.05, 0.03);
        let do_zone = zone(&mut rng, 0.02, 0.025);
        let airport_trip = [pu_zone, do_zone].iter().any(|z| *z == JFK || *z == LGA);
        let dist = if rng.f64() < 0.012 {
            0.0
        } else if airport_trip {
            8.0 + rng.f64() * 13.0
        } else {
            (1.6f64.ln() + 0.75 * rng.normal()).exp().min(60.0)
        };
        let dist = cents(dist);
        // Speed ~ 11 mph median; at least a minute's worth of waiting and pulling over.
        let mph = (11.0f64.ln() + 0.35 * rng.normal()).exp();
        let secs = (dist / mph * 3600.0 + 30.0 + rng.f64() * 150.0).round() as i64;
        pickup.push(start);
        dropoff.push(start + secs * SECOND);
        distance.push(dist);
        pu.push(pu_zone);
        dl.push(do_zone);

        passenger.push(if has_meta { passengers.pick(&mut rng) as i64 } else { 0 });
        let rate = if !has_meta {
            0
        } else if (pu_zone == JFK || do_zone == JFK) && rng.f64() < 0.6 {
            2
        } else {
            [1, 5, 3, 4, 99][ratecodes.pick(&mut rng)]
        };
        ratecode.push(rate);
        flag.push(has_meta.then(|| if rng.f64() < 0.005 { "Y" } else { "N" }));
        let pay = if has_meta { [1, 2, 3, 4][payments.pick(&mut rng)] } else { 0 };
        payment.push(pay);

        let minutes = secs as f64 / 60.0;
        let mut f = if rate == 2 { 70.0 } else { cents(3.0 + 3.5 * dist + 0.25 * minutes) };
        let mut x = [0.0, 1.0, 2.5, 3.5][extras.pick(&mut rng)];
        let mut m = if rng.f64() < 0.98 { 0.5 } else { 0.0 };
        let mut t = if pay == 1 || (pay == 0 && rng.f64() < 0.5) {
            if rng.f64() < 0.1 { 0.0 } else { cents(f * (0.15 + 0.15 * rng.f64())) }
        } else {
            0.0
        };
        let mut tl =
            if rng.f64() < if airport_trip || dist > 10.0 { 0.45 } else { 0.03 } { 6.94 } else { 0.0 };
        let mut imp = 1.0;
        let mut cg = if rng.f64() < 0.9 { 2.5 } else { 0.0 };
        let mut af = if pu_zone == JFK || pu_zone == LGA { 1.75 } else { 0.0 };
        // Refunds and disputes: every money column negative.
        if pay == 4 || (pay == 3 && rng.f64() < 0.5) {
            for v in [&mut f, &mut x, &mut m, &mut t, &mut tl, &mut imp, &mut cg, &mut af] {
                *v = -*v;
            }
        }
        if !has_meta {
            cg = 0.0;
            af = 0.0;
        }
        fare.push(f);
        extra.push(x);
        mta.push(m);
        tip.push(t);
        tolls.push(tl);
        improvement.push(imp);
        total.push(cents(f + x + m + t + tl + imp + cg + af));
        congestion.push(cg);
        airport.push(af);
    }

    let meta = NullBuffer::from(meta_valid);
    let nullable_i64 = |v: Vec<i64>| Arc::new(Int64Array::new(ScalarBuffer::from(v), Some(meta.clone())));
    let nullable_f64 = |v: Vec<f64>| Arc::new(Float64Array::new(ScalarBuffer::from(v), Some(meta.clone())));
    let f64s = |v: Vec<f64>| Arc::new(Float64Array::from(v)) as ArrayRef;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(vendor)),
        Arc::new(TimestampMicrosecondArray::from(pickup)),
        Arc::new(TimestampMicrosecondArray::from(dropoff)),
        nullable_i64(passenger),
        f64s(distance),
        nullable_i64(ratecode),
        Arc::new(StringArray::from(flag)),
        Arc::new(Int32Array::from(pu)),
        Arc::new(Int32Array::from(dl)),
        Arc::new(Int64Array::from(payment)),
        f64s(fare),
        f64s(extra),
        f64s(mta),
        f64s(tip),
        f64s(tolls),
        f64s(improvement),
        f64s(total),
        nullable_f64(congestion),
        nullable_f64(airport),
    ];
    RecordBatch::try_new(yellow_trips_schema(), columns).expect("generated columns match the schema")
}

/// A pickup or drop-off zone: JFK/LGA with the given probabilities, else mostly a busy Manhattan zone.
fn zone(rng: &mut Rng, p_jfk: f64, p_lga: f64) -> i32 {
    let r = rng.f64();
    if r < p_jfk {
        JFK
    } else if r < p_jfk + p_lga {
        LGA
    } else if r < 0.72 {
        BUSY_ZONES[rng.below(BUSY_ZONES.len() as u64) as usize]
    } else {
        1 + rng.below(265) as i32
    }
}

fn cents(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Cumulative weights for picking an index.
struct Cumulative(Vec<f64>);

impl Cumulative {
    fn new(weights: &[f64]) -> Self {
        let sum: f64 = weights.iter().sum();
        let mut acc = 0.0;
        Cumulative(
            weights
                .iter()
                .map(|w| {
                    acc += w / sum;
                    acc
                })
                .collect(),
        )
    }

    fn pick(&self, rng: &mut Rng) -> usize {
        let r = rng.f64();
        self.0.iter().position(|c| r < *c).unwrap_or(self.0.len() - 1)
    }
}

/// xoshiro256++ seeded through splitmix64: small, fast and fully deterministic.
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Self {
        let mut sm = seed;
        let mut next = || {
            sm = sm.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = sm;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the tiny bias is irrelevant for test data).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.f64();
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use arrow_array::Array;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int32Type, Int64Type};

    use super::*;

    /// Each row rendered as a string key, for counting distinct rows.
    fn row_keys(batch: &RecordBatch) -> Vec<String> {
        let formatters: Vec<_> =
            batch.columns().iter().map(|c| arrow_cast_display(c.as_ref())).collect::<Vec<_>>();
        (0..batch.num_rows()).map(|i| formatters.iter().map(|f| f(i)).collect::<Vec<_>>().join("|")).collect()
    }

    fn arrow_cast_display(a: &dyn Array) -> Box<dyn Fn(usize) -> String + '_> {
        Box::new(move |i| if a.is_null(i) { "∅".into() } else { format!("{:?}", a.slice(i, 1)) })
    }

    #[test]
    fn schema_has_19_tlc_columns() {
        let schema = yellow_trips_schema();
        assert_eq!(schema.fields().len(), 19);
        assert_eq!(schema.field(0).name(), "VendorID");
        assert_eq!(schema.field(18).name(), "Airport_fee");
        assert_eq!(schema.field(1).data_type(), &DataType::Timestamp(TimeUnit::Microsecond, None));
        let batch = yellow_trips(10, 1, 0.0);
        assert_eq!(batch.schema(), schema);
    }

    #[test]
    fn row_count_is_exact() {
        for rows in [0, 1, 7, 1000, 4099] {
            assert_eq!(yellow_trips(rows, 3, 0.0).num_rows(), rows);
            assert_eq!(yellow_trips(rows, 3, 0.1).num_rows(), rows);
        }
    }

    #[test]
    fn batches_cover_rows_and_match_single_batches() {
        let batches = yellow_trips_batches(2500, 1000, 7, 0.02);
        assert_eq!(batches.iter().map(RecordBatch::num_rows).collect::<Vec<_>>(), [1000, 1000, 500]);
        assert_eq!(batches[2], yellow_trips(500, 9, 0.02));
    }

    #[test]
    fn same_seed_same_data_other_seed_other_data() {
        assert_eq!(yellow_trips(2000, 9, 0.05), yellow_trips(2000, 9, 0.05));
        assert_ne!(yellow_trips(2000, 9, 0.05), yellow_trips(2000, 10, 0.05));
    }

    #[test]
    fn planted_duplicates_are_exact_and_counted() {
        let rows = 5000;
        let batch = yellow_trips(rows, 11, 0.1);
        let mut counts: HashMap<String, usize> = HashMap::new();
        for k in row_keys(&batch) {
            *counts.entry(k).or_default() += 1;
        }
        let extra_copies: usize = counts.values().map(|c| c - 1).sum();
        assert_eq!(extra_copies, duplicate_count(rows, 0.1));
        assert_eq!(extra_copies, 500);

        let clean = yellow_trips(rows, 11, 0.0);
        let distinct: std::collections::HashSet<String> = row_keys(&clean).into_iter().collect();
        assert_eq!(distinct.len(), rows, "without dup_rate every row is distinct");
    }

    #[test]
    fn values_are_plausible() {
        let batch = yellow_trips(20_000, 5, 0.0);
        let pu = batch.column(7).as_primitive::<Int32Type>();
        let dl = batch.column(8).as_primitive::<Int32Type>();
        assert!(pu.values().iter().chain(dl.values()).all(|z| (1..=265).contains(z)));
        let pickup = batch.column(1).as_primitive::<arrow_array::types::TimestampMicrosecondType>();
        let dropoff = batch.column(2).as_primitive::<arrow_array::types::TimestampMicrosecondType>();
        assert!(pickup.values().iter().zip(dropoff.values()).all(|(p, d)| d > p));
        let passengers = batch.column(3).as_primitive::<Int64Type>();
        let nulls = passengers.null_count();
        assert!((500..1400).contains(&nulls), "about 4.5 % NULL passenger counts, got {nulls}");
        for c in [5, 6, 17, 18] {
            assert_eq!(batch.column(c).null_count(), nulls, "column {c} is NULL with passenger_count");
        }
        let fare = batch.column(10).as_primitive::<Float64Type>();
        let mean = fare.values().iter().sum::<f64>() / fare.len() as f64;
        assert!((10.0..30.0).contains(&mean), "mean fare {mean}");
        let total = batch.column(16).as_primitive::<Float64Type>();
        let sum_cols = |i: usize| {
            [10, 11, 12, 13, 14, 15]
                .iter()
                .map(|&c| batch.column(c).as_primitive::<Float64Type>().value(i))
                .sum::<f64>()
                + [17, 18]
                    .iter()
                    .map(|&c| {
                        let a = batch.column(c).as_primitive::<Float64Type>();
                        if a.is_null(i) { 0.0 } else { a.value(i) }
                    })
                    .sum::<f64>()
        };
        assert!((0..batch.num_rows()).all(|i| (total.value(i) - sum_cols(i)).abs() < 0.011));
    }

    #[test]
    fn parquet_and_csv_round_trip_row_counts() {
        let dir = std::env::temp_dir().join(format!("etlkit-testkit-taxi-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let batches = [yellow_trips(300, 1, 0.0), yellow_trips(200, 2, 0.1)];
        let pq = dir.join("trips.parquet");
        write_parquet(&pq, &batches).unwrap();
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(File::open(&pq).unwrap())
                .unwrap()
                .build()
                .unwrap();
        let read: Vec<RecordBatch> = reader.collect::<std::result::Result<_, _>>().unwrap();
        let read = arrow_select::concat::concat_batches(&yellow_trips_schema(), &read).unwrap();
        let want = arrow_select::concat::concat_batches(&yellow_trips_schema(), &batches).unwrap();
        assert_eq!(read, want);

        let csv = dir.join("trips.csv");
        write_csv(&csv, &batches).unwrap();
        let text = std::fs::read_to_string(&csv).unwrap();
        assert_eq!(text.lines().count(), 501);
        assert!(text.starts_with("VendorID,tpep_pickup_datetime,"));
        assert!(matches!(write_parquet(dir.join("x.parquet"), &[]), Err(Error::NoBatches { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

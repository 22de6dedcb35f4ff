//! Writes generated NYC yellow-taxi trips (TLC 2024 columns and types, realistic distributions, the
//! TLC's NULL pattern, planted exact duplicates) for demos and benchmarks, streaming in chunks so
//! memory stays bounded whatever `--rows` is.
//!
//! ```text
//! cargo run --release --example gen_taxi -- --rows N --out FILE.parquet|FILE.csv
//!     [--dup-rate R] [--seed S] [--legacy-names] [--zones-out taxi_zone_lookup.csv]
//! ```
//!
//! - `--dup-rate R` (default 0.01): fraction of rows that are exact copies of another row of the
//!   same 1 Mi-row chunk (chunk `i` uses seed `S + i`; default seed 1).
//! - `--legacy-names`: use the older snake_case TLC naming (`vendor_id`, `pickup_datetime`,
//!   `rate_code`, `pickup_location_id`, `imp_surcharge`, `airport_fee`, ...) instead of the current
//!   one (`VendorID`, `tpep_pickup_datetime`, `RatecodeID`, `PULocationID`, `Airport_fee`, ...).
//! - `--zones-out FILE`: also write a zone lookup in the layout of TLC's `taxi_zone_lookup.csv`
//!   (`LocationID,Borough,Zone,service_zone`; 265 synthetic zones: the real file cannot be downloaded
//!   here, so boroughs are assigned by ID ranges and zone names are `Zone <id>`, except the airports).
//!
//! Prints one line on stderr with the row count, bytes written and time taken.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arrow_array::RecordBatch;
use arrow_schema::{Field, Schema};
use etlkit_testkit::taxi;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "usage: gen_taxi --rows N --out FILE.parquet|FILE.csv [--dup-rate R] [--seed S] \
                     [--legacy-names] [--zones-out FILE.csv]";

/// Current TLC name → older snake_case name.
const LEGACY: &[(&str, &str)] = &[
    ("VendorID", "vendor_id"),
    ("tpep_pickup_datetime", "pickup_datetime"),
    ("tpep_dropoff_datetime", "dropoff_datetime"),
    ("RatecodeID", "rate_code"),
    ("PULocationID", "pickup_location_id"),
    ("DOLocationID", "dropoff_location_id"),
    ("improvement_surcharge", "imp_surcharge"),
    ("Airport_fee", "airport_fee"),
];

const CHUNK: usize = 1 << 20;

fn renamed(batch: RecordBatch, legacy: bool) -> Result<RecordBatch, BoxError> {
    if !legacy {
        return Ok(batch);
    }
    let fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| {
            let name =
                LEGACY.iter().find(|(cur, _)| cur == f.name()).map_or(f.name().as_str(), |(_, old)| old);
            f.as_ref().clone().with_name(name)
        })
        .collect();
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), batch.columns().to_vec())?)
}

/// A synthetic `taxi_zone_lookup.csv`: 265 zones with TLC's columns and plausible boroughs.
fn write_zones(path: &Path) -> Result<(), BoxError> {
    let mut w = BufWriter::new(File::create(path)?);
    writeln!(w, "\"LocationID\",\"Borough\",\"Zone\",\"service_zone\"")?;
    for id in 1..=265 {
        let (borough, zone, service) = match id {
            1 => ("EWR", "Newark Airport".to_owned(), "EWR"),
            132 => ("Queens", "JFK Airport".to_owned(), "Airports"),
            138 => ("Queens", "LaGuardia Airport".to_owned(), "Airports"),
            264 => ("Unknown", "N/A".to_owned(), "N/A"),
            265 => ("N/A", "Outside of NYC".to_owned(), "N/A"),
            _ => {
                let manhattan = [
                    4, 12, 13, 24, 41, 42, 43, 45, 48, 50, 68, 74, 75, 79, 87, 88, 90, 100, 103, 107, 113,
                    114, 116, 120, 125, 127, 128, 137, 140, 141, 142, 143, 144, 148, 151, 152, 153, 158, 161,
                    162, 163, 164, 166, 170, 186, 194, 202, 209, 211, 224, 229, 230, 231, 232, 233, 234, 236,
                    237, 238, 239, 243, 244, 246, 249, 261, 262, 263,
                ];
                let borough = if manhattan.contains(&id) {
                    "Manhattan"
                } else {
                    match id % 4 {
                        0 => "Brooklyn",
                        1 => "Queens",
                        2 => "Bronx",
                        _ => {
                            if id % 7 == 0 {
                                "Staten Island"
                            } else {
                                "Brooklyn"
                            }
                        }
                    }
                };
                let service = if borough == "Manhattan" { "Yellow Zone" } else { "Boro Zone" };
                (borough, format!("Zone {id}"), service)
            }
        };
        writeln!(w, "{id},\"{borough}\",\"{zone}\",\"{service}\"")?;
    }
    w.flush()?;
    Ok(())
}

fn main() -> etlkit_core::Reported {
    run().into()
}

fn run() -> Result<(), BoxError> {
    let (mut rows, mut out, mut dup_rate, mut seed, mut legacy, mut zones_out) =
        (None::<usize>, None::<String>, 0.01f64, 1u64, false, None::<String>);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--rows" => rows = Some(value()?.replace('_', "").parse()?),
            "--out" => out = Some(value()?),
            "--dup-rate" => dup_rate = value()?.parse()?,
            "--seed" => seed = value()?.parse()?,
            "--legacy-names" => legacy = true,
            "--zones-out" => zones_out = Some(value()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    let (Some(rows), Some(out)) = (rows, out) else { return Err(USAGE.into()) };
    if !(0.0..1.0).contains(&dup_rate) {
        return Err(format!("--dup-rate must be in [0, 1), got {dup_rate}").into());
    }
    let started = Instant::now();
    let chunks = (0..rows.div_ceil(CHUNK))
        .map(|i| renamed(taxi::yellow_trips(CHUNK.min(rows - i * CHUNK), seed + i as u64, dup_rate), legacy));
    let mut duplicates = 0;
    if out.to_ascii_lowercase().ends_with(".csv") {
        let mut w = arrow_csv_writer(&out)?;
        for chunk in chunks {
            let chunk = chunk?;
            duplicates += taxi::duplicate_count(chunk.num_rows(), dup_rate);
            w.write(&chunk)?;
        }
    } else {
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(taxi::PARQUET_ROW_GROUP_ROWS))
            .build();
        let mut writer: Option<ArrowWriter<File>> = None;
        for chunk in chunks {
            let chunk = chunk?;
            duplicates += taxi::duplicate_count(chunk.num_rows(), dup_rate);
            let w = match &mut writer {
                Some(w) => w,
                None => writer.insert(ArrowWriter::try_new(
                    File::create(&out)?,
                    chunk.schema(),
                    Some(props.clone()),
                )?),
            };
            w.write(&chunk)?;
        }
        if let Some(w) = writer {
            w.close()?;
        }
    }
    if let Some(z) = &zones_out {
        write_zones(Path::new(z))?;
    }
    eprintln!(
        "gen_taxi: {rows} rows ({duplicates} planted duplicates, {} naming) written to {out} ({} bytes) in {:.2?}",
        if legacy { "legacy snake_case" } else { "current TLC" },
        std::fs::metadata(&out)?.len(),
        started.elapsed()
    );
    Ok(())
}

/// A CSV writer with a header (arrow-csv via the testkit's conventions).
fn arrow_csv_writer(path: &str) -> Result<CsvOut, BoxError> {
    Ok(CsvOut { path: path.to_owned(), first: true })
}

/// Appends chunks to a CSV file: the first chunk with the header, the rest without.
struct CsvOut {
    path: String,
    first: bool,
}

impl CsvOut {
    fn write(&mut self, batch: &RecordBatch) -> Result<(), BoxError> {
        if self.first {
            taxi::write_csv(&self.path, std::slice::from_ref(batch))?;
            self.first = false;
            return Ok(());
        }
        // Later chunks: write to a side file, then append without its header line.
        let tmp = format!("{}.part", self.path);
        taxi::write_csv(&tmp, std::slice::from_ref(batch))?;
        let data = std::fs::read(&tmp)?;
        std::fs::remove_file(&tmp)?;
        let body = data.iter().position(|b| *b == b'\n').map_or(&data[..], |i| &data[i + 1..]);
        let mut f = std::fs::OpenOptions::new().append(true).open(&self.path)?;
        f.write_all(body)?;
        Ok(())
    }
}

//! [`CsvSource`]: reads CSV files into typed batches on a dedicated thread, with exact line numbers
//! in every error and an optional reject output.

mod convert;
mod infer;
mod records;

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::RecordBatch;
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use etlkit_core::{BatchStream, Context, Origins, Rejected, Source, TrackedStream};
use futures::StreamExt;

use self::convert::{Bad, ChunkConverter, TimestampFormat, ValueParser, keep_mask, supported};
use self::infer::Guess;
use self::records::{Dialect, RecordChunk, RecordReader, read_raw, strip_terminator, unterminated_quote};
use crate::error::{BadRow, OnError, Result, SourceError, into_core};
use crate::input::Input;
use crate::metrics::ReadMetrics;

/// File extensions a directory listing picks up for CSV.
pub const CSV_EXTENSIONS: &[&str] = &["csv", "tsv", "txt"];

/// Configuration of a [`CsvSource`]. Build with `CsvSourceConfig { input, ..Default::default() }`.
#[derive(Debug, Clone, PartialEq)]
pub struct CsvSourceConfig {
    /// What to read: a file, a list, a directory (`.csv`/`.tsv`/`.txt` files, sorted) or a glob
    /// (sorted). Default: an empty list (fails validation).
    pub input: Input,
    /// The first line of each file names the columns. Columns are matched to the schema by these
    /// names, so files may order them differently. Default: `true`.
    pub has_header: bool,
    /// Field separator. Default: `b','`.
    pub delimiter: u8,
    /// Quote character; `None` turns quoting off. A doubled quote inside a quoted field is a literal
    /// quote. Quoted fields may span lines. Default: `Some(b'"')`.
    pub quote: Option<u8>,
    /// Escape character inside quoted fields (e.g. `Some(b'\\')` for `\"`). Default: `None`.
    pub escape: Option<u8>,
    /// Field values that mean NULL, compared exactly (after unquoting). Default: `""`, `NA`, `NULL`,
    /// `\N`.
    pub null_markers: Vec<String>,
    /// The schema of the output. Columns are taken by header name (so a subset of the file's columns
    /// may be read), or by position without a header. `None` infers it from every file (see
    /// `infer_rows`). Supported types: Boolean, Int8–64, UInt8–64, Float32/64, Utf8, Date32,
    /// Timestamp (any unit/tz) and Decimal128. Default: `None`.
    pub schema: Option<SchemaRef>,
    /// Column types that win over inference and over `schema`, by column name (the header name, or
    /// `column_1`, `column_2`, … without a header); a pinned column is not sampled. Any type `schema`
    /// supports, e.g. `("zip".into(), DataType::Utf8)` to keep leading zeros or
    /// `("amount".into(), DataType::Decimal128(18, 2))` to read money exactly. Naming a column that
    /// is not in the schema fails [`CsvSource::open`]. Default: empty.
    pub column_types: Vec<(String, DataType)>,
    /// Rows sampled from the start of each file for inference, when no `schema` is given. Column
    /// names (and order) come from the first non-empty file; every later file must have those
    /// columns too (in any order; extra columns are not read), else opening fails. Each column gets the narrowest type that fits its samples in every
    /// file: Int64, Float64, Boolean, Date32, Timestamp(µs), else Utf8, widening across files
    /// (Int64 → Float64 or Decimal128 → Utf8; Date32 → Timestamp → Utf8); every column is nullable.
    /// An integer too wide for Int64 (`12345678901234567891`) makes its column Decimal128(38, 0), so
    /// it loads exactly, or Utf8 when it has more than 38 digits or the column also holds floats
    /// (never a rounding Float64). A column mixing dates and timestamps is a Timestamp column whose
    /// dates load as their midnight (UTC).
    /// Opening therefore reads the beginning of every input file. Default: 1000.
    pub infer_rows: usize,
    /// Infer columns whose samples are plain decimal numbers with a fractional part (`13.37`,
    /// `-0.5`; no exponent) as `Decimal128(38, s)`, `s` the most fractional digits seen, instead of
    /// Float64, so money-like columns are read exactly. Integer-only columns stay Int64 (integers too
    /// wide for it are Decimal128(38, 0) either way, see `infer_rows`). Default: `false`.
    pub infer_decimals: bool,
    /// Timestamp formats (chrono `strftime` syntax) tried after ISO 8601 / RFC 3339 (which are always
    /// accepted: `2024-01-02T03:04:05Z`, `2024-01-02 03:04:05.123`, `2024-01-02T03:04:05+02:00`).
    /// Values without an offset are taken as UTC; a format with an offset (`%z`, `%:z`, `%::z`, `%#z`)
    /// converts the value to UTC by it (`03/01/2024 10:00:00 +0200` with `%m/%d/%Y %H:%M:%S %z` is
    /// 08:00 UTC). A plain date (`YYYY-MM-DD` or one of `date_formats`) in a timestamp column is its
    /// midnight UTC. Values are parsed straight into the column's unit
    /// (rounded down to it), so any year from 0001 to 9999 loads into second, millisecond and
    /// microsecond columns (`9999-12-31T23:59:59`, `0001-01-01`); only a nanosecond column is limited
    /// to 1677-09-21 – 2262-04-11, and a value outside that is a bad row saying so. Default:
    /// `%m/%d/%Y %H:%M:%S`, `%m/%d/%Y %I:%M:%S %p`, `%m/%d/%Y %H:%M`, `%Y/%m/%d %H:%M:%S`,
    /// `%d.%m.%Y %H:%M:%S`.
    pub timestamp_formats: Vec<String>,
    /// Date formats tried after `YYYY-MM-DD`. A value of a Date32 column may also be a date and time
    /// (ISO 8601 or one of `timestamp_formats`) at exactly midnight without an offset or with offset
    /// zero (`2024-03-10 00:00:00`, `2024-03-10T00:00:00Z`); any other time of day
    /// (`2024-03-10 14:30:00`, `2024-03-10T00:00:00+05:00`) is a bad row saying the value has a time
    /// of day, not a date silently losing it. Default: `%m/%d/%Y`, `%Y/%m/%d`, `%d.%m.%Y`.
    pub date_formats: Vec<String>,
    /// Accept whole numbers written as floats (`2.0`, as pandas writes integer columns holding NaN)
    /// in integer columns. `2.5` is still an error. Default: `true`.
    pub integers_from_floats: bool,
    /// Keep NUL bytes (`\0`) inside text (`Utf8`) values. `false`: such a value is a bad row (an
    /// error, or a reject under [`OnError::Reject`]) naming file, line, column and value, because
    /// PostgreSQL `text` cannot store a NUL byte and would otherwise fail the whole load at the sink,
    /// where the line is no longer known. Set it when the data goes elsewhere and the NUL is data.
    /// Default: `false`.
    pub allow_nul_in_text: bool,
    /// Name for header cells that are empty (pandas writes one for its index column): the prefix
    /// followed by the 0-based column position, e.g. `unnamed_0`. Default: `"unnamed_"`.
    pub unnamed_column_prefix: String,
    /// Rows per batch; every batch but a file's last has exactly this many rows (fewer when rows were
    /// rejected). Default: 8192.
    pub batch_size: usize,
    /// Threads converting parsed records into Arrow columns, in parallel (one more thread splits the
    /// input into records). Output order is file order whatever the number. Default: the number of CPUs.
    pub workers: usize,
    /// Chunks of `batch_size` records in flight (queued, converting or converted and waiting for the
    /// consumer). At most `channel_capacity + 2` chunks exist at once — memory is bounded by that,
    /// whatever the input size — and at most that many convert in parallel, so keep it at least
    /// `workers`. Default: `2 * workers` of the default, i.e. twice the number of CPUs.
    pub channel_capacity: usize,
    /// Fail on the first bad row, or reject bad rows and go on. Default: [`OnError::Fail`].
    pub on_error: OnError,
}

impl Default for CsvSourceConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        CsvSourceConfig {
            input: Input::List(Vec::new()),
            has_header: true,
            delimiter: b',',
            quote: Some(b'"'),
            escape: None,
            null_markers: ["", "NA", "NULL", "\\N"].map(String::from).to_vec(),
            schema: None,
            column_types: Vec::new(),
            infer_rows: 1000,
            infer_decimals: false,
            timestamp_formats: [
                "%m/%d/%Y %H:%M:%S",
                "%m/%d/%Y %I:%M:%S %p",
                "%m/%d/%Y %H:%M",
                "%Y/%m/%d %H:%M:%S",
                "%d.%m.%Y %H:%M:%S",
            ]
            .map(String::from)
            .to_vec(),
            date_formats: ["%m/%d/%Y", "%Y/%m/%d", "%d.%m.%Y"].map(String::from).to_vec(),
            integers_from_floats: true,
            allow_nul_in_text: false,
            unnamed_column_prefix: "unnamed_".to_owned(),
            batch_size: 8192,
            workers: cpus,
            channel_capacity: 2 * cpus,
            on_error: OnError::Fail,
        }
    }
}

impl CsvSourceConfig {
    /// Whether the reader can read a column as `data_type` (in `schema` or `column_types`):
    /// Boolean, integers, floats, Utf8, Date32, Timestamp (any unit, with or without a zone) and
    /// Decimal128.
    pub fn reads(data_type: &DataType) -> bool {
        supported(data_type)
    }

    /// Checks every field; returns [`SourceError::InvalidConfig`] naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(SourceError::config("batch_size", "must be at least 1"));
        }
        if self.workers == 0 {
            return Err(SourceError::config("workers", "must be at least 1"));
        }
        if self.channel_capacity == 0 {
            return Err(SourceError::config("channel_capacity", "must be at least 1"));
        }
        if self.schema.is_none() && self.infer_rows == 0 {
            return Err(SourceError::config("infer_rows", "must be at least 1 when no schema is given"));
        }
        if matches!(self.delimiter, b'\n' | b'\r') {
            return Err(SourceError::config("delimiter", "cannot be a line terminator"));
        }
        if let Some(q) = self.quote
            && (matches!(q, b'\n' | b'\r') || q == self.delimiter)
        {
            return Err(SourceError::config("quote", "cannot be a line terminator or the delimiter"));
        }
        if let Some(e) = self.escape
            && (matches!(e, b'\n' | b'\r') || e == self.delimiter)
        {
            return Err(SourceError::config("escape", "cannot be a line terminator or the delimiter"));
        }
        if self.has_header && self.unnamed_column_prefix.is_empty() {
            return Err(SourceError::config("unnamed_column_prefix", "must not be empty"));
        }
        if let Some(schema) = &self.schema {
            if schema.fields().is_empty() {
                return Err(SourceError::config("schema", "has no columns"));
            }
            let mut seen = HashSet::new();
            for f in schema.fields() {
                if !supported(f.data_type()) {
                    return Err(SourceError::config(
                        "schema",
                        format!("column `{}` has unsupported type {}", f.name(), f.data_type()),
                    ));
                }
                if !seen.insert(f.name()) {
                    return Err(SourceError::config("schema", format!("names column `{}` twice", f.name())));
                }
            }
        }
        let mut pinned = HashSet::new();
        for (name, dt) in &self.column_types {
            if !supported(dt) {
                return Err(SourceError::config(
                    "column_types",
                    format!("column `{name}` has unsupported type {dt}"),
                ));
            }
            if !pinned.insert(name) {
                return Err(SourceError::config("column_types", format!("names column `{name}` twice")));
            }
        }
        for f in self.timestamp_formats.iter().chain(&self.date_formats) {
            if chrono::format::StrftimeItems::new(f).any(|i| matches!(i, chrono::format::Item::Error)) {
                return Err(SourceError::config("timestamp_formats", format!("`{f}` is not a valid format")));
            }
        }
        if let Input::List(l) = &self.input
            && l.is_empty()
        {
            return Err(SourceError::config("input", "names no file"));
        }
        Ok(())
    }

    fn dialect(&self) -> Dialect {
        Dialect { delimiter: self.delimiter, quote: self.quote, escape: self.escape }
    }

    fn value_parser(&self) -> ValueParser {
        ValueParser {
            null_markers: self.null_markers.iter().map(|m| m.as_bytes().to_vec()).collect(),
            timestamp_formats: self.timestamp_formats.iter().map(|f| TimestampFormat::new(f)).collect(),
            date_formats: self.date_formats.clone(),
            integers_from_floats: self.integers_from_floats,
            allow_nul_in_text: self.allow_nul_in_text,
        }
    }
}

/// A [`Source`] over CSV files, read one after another in order on a dedicated thread.
///
/// Without an explicit schema, opening reads the header and the first `infer_rows` records of every
/// file to infer the types. [`Source::total_rows`] is unknown (`None`) for CSV.
#[derive(Debug)]
pub struct CsvSource {
    config: CsvSourceConfig,
    files: Vec<PathBuf>,
    schema: SchemaRef,
    metrics: Arc<ReadMetrics>,
    name: String,
}

impl CsvSource {
    /// Validates `config`, lists the files and settles the schema.
    pub fn open(config: CsvSourceConfig) -> Result<Self> {
        config.validate()?;
        let files = config.input.resolve(CSV_EXTENSIONS)?;
        let schema = match &config.schema {
            Some(s) => Arc::clone(s),
            None => infer_schema(&config, &files)?,
        };
        let schema = pin_types(schema, &config.column_types)?;
        let name = format!("csv:{}", config.input.describe());
        Ok(CsvSource { config, files, schema, metrics: Arc::default(), name })
    }

    /// The files that will be read, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// A handle on this reader's live counters (see [`ReadMetrics`]).
    pub fn metrics(&self) -> Arc<ReadMetrics> {
        Arc::clone(&self.metrics)
    }
}

fn open_file(path: &Path, dialect: Dialect) -> Result<RecordReader<File>> {
    let file = File::open(path).map_err(|e| SourceError::io(path, e))?;
    Ok(RecordReader::new(file, dialect))
}

/// Reads the header record; `None` for an empty file.
fn read_header(
    config: &CsvSourceConfig,
    path: &Path,
    reader: &mut RecordReader<File>,
) -> Result<Option<Vec<String>>> {
    let mut chunk = RecordChunk::default();
    if !reader.read_record(&mut chunk).map_err(|e| SourceError::io(path, e))? {
        return Ok(None);
    }
    let mut names = Vec::with_capacity(chunk.field_count(0));
    let mut seen = HashSet::new();
    for i in 0..chunk.field_count(0) {
        let raw = chunk.field(0, i);
        let name = std::str::from_utf8(raw).map_err(|_| SourceError::Header {
            path: path.to_owned(),
            reason: format!("column {} name {:?} is not valid UTF-8", i + 1, String::from_utf8_lossy(raw)),
        })?;
        let name =
            if name.is_empty() { format!("{}{i}", config.unnamed_column_prefix) } else { name.to_owned() };
        if !seen.insert(name.clone()) {
            return Err(SourceError::Header {
                path: path.to_owned(),
                reason: format!("column `{name}` appears twice"),
            });
        }
        names.push(name);
    }
    Ok(Some(names))
}

/// Infers the schema from the first `infer_rows` records of every file (see
/// [`CsvSourceConfig::infer_rows`]); pinned columns are not sampled.
fn infer_schema(config: &CsvSourceConfig, files: &[PathBuf]) -> Result<SchemaRef> {
    let values = config.value_parser();
    let pinned: HashSet<&str> = config.column_types.iter().map(|(n, _)| n.as_str()).collect();
    let mut names: Option<Vec<String>> = None;
    let mut guesses: Vec<Guess> = Vec::new();
    let mut chunk = RecordChunk::default();
    for path in files {
        let mut reader = open_file(path, config.dialect())?;
        let header = if config.has_header {
            match read_header(config, path, &mut reader)? {
                Some(h) => Some(h),
                None => continue, // an empty file has no rows (and is skipped when read)
            }
        } else {
            None
        };
        chunk.clear();
        reader.read_chunk(&mut chunk, config.infer_rows).map_err(|e| SourceError::io(path, e))?;
        // Where each column sits in this file's records, and how many fields a record has.
        let (positions, width): (Vec<usize>, usize) = if let Some(known) = &names {
            match header {
                Some(h) => {
                    let mut positions = Vec::with_capacity(known.len());
                    for name in known {
                        match h.iter().position(|c| c == name) {
                            Some(p) => positions.push(p),
                            None => {
                                return Err(SourceError::Header {
                                    path: path.clone(),
                                    reason: format!("column `{name}` of the schema is not in the header"),
                                });
                            }
                        }
                    }
                    (positions, h.len())
                }
                None => ((0..known.len()).collect(), known.len()),
            }
        } else {
            // The first non-empty file names the columns.
            let first_names = match header {
                Some(h) => h,
                None if chunk.len() > 0 => {
                    (1..=chunk.field_count(0)).map(|i| format!("column_{i}")).collect()
                }
                None => continue,
            };
            let width = first_names.len();
            guesses = vec![Guess::Empty; width];
            names = Some(first_names);
            ((0..width).collect(), width)
        };
        let skip: Vec<bool> = names.iter().flatten().map(|n| pinned.contains(n.as_str())).collect();
        for row in 0..chunk.len() {
            if chunk.field_count(row) != width {
                continue; // a ragged row is reported when it is read
            }
            for (i, g) in guesses.iter_mut().enumerate() {
                if skip[i] {
                    continue;
                }
                let raw = chunk.field(row, positions[i]);
                if !values.is_null(raw) {
                    *g = g.merge(Guess::of(&values, raw, config.infer_decimals));
                }
            }
        }
    }
    let Some(names) = names else {
        return Err(SourceError::Header { path: files[0].clone(), reason: "file is empty".into() });
    };
    let fields: Vec<Field> =
        names.into_iter().zip(guesses).map(|(n, g)| Field::new(n, g.data_type(), true)).collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// Applies [`CsvSourceConfig::column_types`] to `schema`.
fn pin_types(schema: SchemaRef, pins: &[(String, DataType)]) -> Result<SchemaRef> {
    if pins.is_empty() {
        return Ok(schema);
    }
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    for (name, dt) in pins {
        let Some(f) = fields.iter_mut().find(|f| f.name() == name) else {
            let known: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            return Err(SourceError::config(
                "column_types",
                format!("names column `{name}`, which is not a column of the schema ({})", known.join(", ")),
            ));
        };
        *f = f.clone().with_data_type(dt.clone());
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// How one file's records map onto the schema.
struct FileCtx {
    path: PathBuf,
    /// The path as rows' origin (see [`Origins`]).
    origin: Arc<str>,
    positions: Vec<usize>,
    expected_fields: usize,
}

/// What every conversion thread shares.
struct Shared {
    schema: SchemaRef,
    values: ValueParser,
    dialect: Dialect,
    on_error: OnError,
    name: String,
    cancelled: AtomicBool,
}

/// A converted chunk: the good rows with their lines, and the rows to reject (in file order).
type Converted = Result<(RecordBatch, Origins, Vec<Rejected>), SourceError>;

/// One chunk of records waiting for a conversion thread.
struct Work {
    file: Arc<FileCtx>,
    chunk: RecordChunk,
    tx: async_channel::Sender<Converted>,
    /// Where the chunk's buffers go back to once converted.
    recycle: async_channel::Sender<RecordChunk>,
}

/// What the reading thread hands to the consumer, in file order.
enum Pending {
    Chunk(async_channel::Receiver<Converted>),
    Err(SourceError),
}

impl Shared {
    /// Converts one chunk; bad rows become an error (fail) or rejects (reject).
    fn convert(&self, file: &FileCtx, chunk: &RecordChunk) -> Converted {
        let converter = ChunkConverter {
            schema: &self.schema,
            positions: &file.positions,
            expected_fields: file.expected_fields,
            values: &self.values,
        };
        let mut faults = Vec::new();
        let arrow_err = |source| SourceError::Arrow { path: file.path.clone(), source };
        let batch = converter.convert(chunk, &mut faults).map_err(arrow_err)?;
        // A record that ran into end of input inside quotes swallowed the rest of the file. Only the
        // last record of a chunk can be one; checking it costs one scan of it.
        let last = chunk.len() - 1;
        let last_raw = read_raw(&file.path, chunk.span(last)).map_err(|e| SourceError::io(&file.path, e))?;
        if let Some(offset) = unterminated_quote(&last_raw, self.dialect) {
            faults.retain(|b| b.row != last);
            faults.push(Bad {
                row: last,
                field: usize::MAX,
                column: None,
                value: None,
                reason: format!("unterminated quoted field (opened on line {})", chunk.line(last) + offset),
            });
        }
        let lines = || Origins::lines(file.origin.clone(), (0..chunk.len()).map(|r| chunk.line(r)));
        if faults.is_empty() {
            return Ok((batch, lines(), Vec::new()));
        }
        match self.on_error {
            OnError::Fail => Err(SourceError::BadRow(Box::new(bad_row(&file.path, chunk, &faults[0])))),
            OnError::Reject => {
                let rejects = faults
                    .iter()
                    .map(|b| {
                        let BadRow { path, line, column, value, reason, raw } = bad_row(&file.path, chunk, b);
                        Rejected {
                            origin: path.display().to_string(),
                            line: Some(line),
                            column,
                            value,
                            reason,
                            raw,
                        }
                    })
                    .collect();
                let mask = keep_mask(chunk.len(), &faults);
                let kept = arrow_select::filter::filter_record_batch(&batch, &mask)
                    .and_then(|b| RecordBatch::try_new(Arc::clone(&self.schema), b.columns().to_vec()))
                    .map_err(arrow_err)?;
                Ok((kept, lines().filter(&mask), rejects))
            }
        }
    }
}

/// The reading thread: splits files into chunks of records, hands them to the conversion threads
/// and their result slots to the consumer, in order.
struct Splitter {
    config: CsvSourceConfig,
    files: Vec<PathBuf>,
    shared: Arc<Shared>,
    work_tx: async_channel::Sender<Work>,
    order_tx: async_channel::Sender<Pending>,
    metrics: Arc<ReadMetrics>,
    /// Converted chunks whose buffers can be reused (their number is bounded by the chunks in flight).
    recycle_tx: async_channel::Sender<RecordChunk>,
    recycle_rx: async_channel::Receiver<RecordChunk>,
}

impl Splitter {
    fn run(&self) {
        for path in &self.files {
            match self.split_file(path) {
                Ok(true) => {}
                Ok(false) => return, // consumer went away
                Err(e) => {
                    let _ = self.order_tx.send_blocking(Pending::Err(e));
                    return;
                }
            }
        }
    }

    /// Splits one file; `Ok(false)` when the consumer went away.
    fn split_file(&self, path: &Path) -> Result<bool> {
        let schema = &self.shared.schema;
        let mut reader = open_file(path, self.shared.dialect)?;
        let (positions, expected_fields) = if self.config.has_header {
            let Some(header) = read_header(&self.config, path, &mut reader)? else {
                return Ok(true); // empty file: no rows
            };
            let mut positions = Vec::with_capacity(schema.fields().len());
            for f in schema.fields() {
                match header.iter().position(|h| h == f.name()) {
                    Some(p) => positions.push(p),
                    None => {
                        return Err(SourceError::Header {
                            path: path.to_owned(),
                            reason: format!("column `{}` of the schema is not in the header", f.name()),
                        });
                    }
                }
            }
            (positions, header.len())
        } else {
            ((0..schema.fields().len()).collect(), schema.fields().len())
        };
        let file = Arc::new(FileCtx {
            path: path.to_owned(),
            origin: path.display().to_string().into(),
            positions,
            expected_fields,
        });
        loop {
            if self.shared.cancelled.load(Ordering::Relaxed) {
                return Ok(false);
            }
            let mut chunk = self.recycle_rx.try_recv().unwrap_or_default();
            chunk.clear();
            let n = reader
                .read_chunk(&mut chunk, self.config.batch_size)
                .map_err(|e| SourceError::io(path, e))?;
            if n == 0 {
                return Ok(true);
            }
            let (tx, rx) = async_channel::bounded(1);
            self.metrics.enter();
            // The work queue's length is bounded by the order queue's capacity.
            let work = Work { file: Arc::clone(&file), chunk, tx, recycle: self.recycle_tx.clone() };
            if self.work_tx.try_send(work).is_err()
                || self.order_tx.send_blocking(Pending::Chunk(rx)).is_err()
            {
                self.metrics.leave();
                return Ok(false);
            }
        }
    }
}

fn bad_row(path: &Path, chunk: &RecordChunk, b: &Bad) -> BadRow {
    let line = if b.field == usize::MAX { chunk.line(b.row) } else { chunk.field_line(b.row, b.field) };
    BadRow {
        path: path.to_owned(),
        line,
        column: b.column.clone(),
        value: b.value.clone(),
        reason: b.reason.clone(),
        raw: match read_raw(path, chunk.span(b.row)) {
            Ok(r) => Some(strip_terminator(r)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read back a bad row's bytes");
                None
            }
        },
    }
}

/// Sets the cancel flag and closes the queues when the stream is dropped.
struct Consumer {
    order_rx: async_channel::Receiver<Pending>,
    shared: Arc<Shared>,
    metrics: Arc<ReadMetrics>,
    ctx: Context,
    done: bool,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.shared.cancelled.store(true, Ordering::Relaxed);
        self.order_rx.close();
    }
}

impl Consumer {
    async fn next(&mut self) -> Option<etlkit_core::Result<(RecordBatch, Option<Origins>)>> {
        while !self.done {
            let converted = match self.order_rx.recv().await {
                Err(_) => {
                    self.done = true;
                    return None;
                }
                Ok(Pending::Err(e)) => Err(e),
                Ok(Pending::Chunk(rx)) => {
                    let r = rx.recv().await.unwrap_or_else(|_| {
                        Err(SourceError::Internal("a CSV conversion thread vanished".into()))
                    });
                    self.metrics.leave();
                    r
                }
            };
            match converted {
                Ok((batch, origins, rejects)) => {
                    for r in rejects {
                        if let Err(e) = self.ctx.reject(r) {
                            self.done = true;
                            return Some(Err(e));
                        }
                    }
                    if batch.num_rows() > 0 {
                        self.metrics.delivered(batch.num_rows());
                        return Some(Ok((batch, Some(origins))));
                    }
                }
                Err(e) => {
                    self.done = true;
                    self.shared.cancelled.store(true, Ordering::Relaxed);
                    return Some(Err(into_core(&self.shared.name, e)));
                }
            }
        }
        None
    }
}

impl Source for CsvSource {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn into_stream(self: Box<Self>, ctx: Context) -> BatchStream {
        self.into_tracked_stream(ctx).map(|r| r.map(|(batch, _)| batch)).boxed()
    }

    /// Every row with its file and 1-based physical line (the header is line 1).
    fn into_tracked_stream(self: Box<Self>, ctx: Context) -> TrackedStream {
        let this = *self;
        let shared = Arc::new(Shared {
            schema: this.schema,
            values: this.config.value_parser(),
            dialect: this.config.dialect(),
            on_error: this.config.on_error,
            name: this.name,
            cancelled: AtomicBool::new(false),
        });
        let (work_tx, work_rx) = async_channel::unbounded::<Work>();
        let (order_tx, order_rx) = async_channel::bounded(this.config.channel_capacity);
        let fail = |shared: &Shared, e: std::io::Error| {
            let e = SourceError::Internal(format!("cannot start a CSV reader thread: {e}"));
            let e = into_core(&shared.name, e);
            futures::stream::once(async move { Err(e) }).boxed()
        };
        for i in 0..this.config.workers {
            let worker_shared = Arc::clone(&shared);
            let work_rx = work_rx.clone();
            let running = this.metrics.running_guard();
            let spawned = std::thread::Builder::new().name(format!("etlkit-csv-{i}")).spawn(move || {
                let _running = running;
                let shared = worker_shared;
                while let Ok(work) = work_rx.recv_blocking() {
                    if shared.cancelled.load(Ordering::Relaxed) {
                        continue;
                    }
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        shared.convert(&work.file, &work.chunk)
                    }));
                    let result = outcome.unwrap_or_else(|_| {
                        Err(SourceError::Internal("a CSV conversion thread panicked".into()))
                    });
                    let _ = work.tx.send_blocking(result);
                    let _ = work.recycle.try_send(work.chunk);
                }
            });
            if let Err(e) = spawned {
                return fail(&shared, e);
            }
            this.metrics.thread_started();
        }
        let (recycle_tx, recycle_rx) = async_channel::unbounded();
        let splitter = Splitter {
            recycle_tx,
            recycle_rx,
            config: this.config,
            files: this.files,
            shared: Arc::clone(&shared),
            work_tx,
            order_tx,
            metrics: Arc::clone(&this.metrics),
        };
        let running = this.metrics.running_guard();
        let spawned = std::thread::Builder::new().name("etlkit-csv-split".into()).spawn(move || {
            let _running = running;
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| splitter.run()));
            if outcome.is_err() {
                let e = SourceError::Internal("the CSV reader thread panicked".into());
                let _ = splitter.order_tx.send_blocking(Pending::Err(e));
            }
        });
        if let Err(e) = spawned {
            return fail(&shared, e);
        }
        let consumer = Consumer { order_rx, shared, metrics: this.metrics, ctx, done: false };
        futures::stream::unfold(consumer, |mut c| async move { c.next().await.map(|item| (item, c)) }).boxed()
    }
}

//! [`ParquetSource`]: reads Parquet files, decoding row groups in parallel with bounded memory.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch, new_null_array};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::{Buf, Bytes};
use etlkit_core::{BatchStream, Context, Origins, Rejected, Source, TrackedStream};
use futures::StreamExt;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::file::reader::{ChunkReader, Length};

use crate::error::{BadRow, OnError, Result, SourceError, into_core};
use crate::input::Input;
use crate::metrics::ReadMetrics;
use etlkit_core::cast_strict;

/// File extensions a directory listing picks up for Parquet.
pub const PARQUET_EXTENSIONS: &[&str] = &["parquet", "parq", "pq"];

/// One of `count` disjoint parts of the input, by row group: part `index` (0-based) reads the row
/// groups whose position in the global row-group list (all files, in order) is `index` modulo
/// `count`. `count` processes with `index = 0..count` together read every row exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This part, `0..count`.
    pub index: usize,
    /// Number of parts, at least 1.
    pub count: usize,
}

impl Shard {
    /// Part `index` of `count` (the `shard(k, n)` of the docs).
    pub fn new(index: usize, count: usize) -> Self {
        Shard { index, count }
    }
}

/// Configuration of a [`ParquetSource`]. Build with `ParquetSourceConfig { input, ..Default::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetSourceConfig {
    /// What to read: a file, a list, a directory (`.parquet`/`.parq`/`.pq` files, sorted) or a glob
    /// (sorted). Default: an empty list (fails validation).
    pub input: Input,
    /// Rows per batch. A row group yields batches of exactly this many rows except its last one.
    /// Default: 8192.
    pub batch_size: usize,
    /// Columns to read, by name, in this output order. `None` reads every column (the union over all
    /// files, in first-seen order). Default: `None`.
    pub columns: Option<Vec<String>>,
    /// Decoder threads; row groups (of one or several files) are decoded in parallel on them.
    /// Default: the number of CPUs.
    pub workers: usize,
    /// At most this many row groups are in flight at once (decoding, or decoded and waiting for the
    /// consumer). Together with `batches_per_row_group` this bounds memory whatever the input size.
    /// Default: `2 * workers` of the default, i.e. twice the number of CPUs.
    pub max_row_groups_in_flight: usize,
    /// Decoded batches buffered per in-flight row group before its decoder waits. Default: 2.
    pub batches_per_row_group: usize,
    /// `true`: batches come out in file and row-group order. `false`: whichever row group's batches
    /// are ready first (faster when row groups differ in cost). Default: `true`.
    pub preserve_order: bool,
    /// Read only one part of the row groups (scale-out over several processes). Default: `None`
    /// (everything).
    pub shard: Option<Shard>,
    /// A row group whose projected column chunks take at most this many (compressed) bytes is read
    /// into memory with one read per run of adjacent chunks and decoded from there; a larger one is
    /// streamed from the file page by page, so memory stays bounded whatever the writer's row-group
    /// size. `0` always streams. Default: 32 MiB.
    pub prefetch_limit_bytes: u64,
    /// When a file lacks a column that another file has, fill it with nulls (only for nullable
    /// columns) instead of failing. Default: `false`.
    pub allow_missing_columns: bool,
    /// Column types to convert to while reading, by column name, e.g.
    /// `("VendorID".into(), DataType::Int32)`; the output schema has these types. Conversion follows
    /// Arrow's cast rules (`arrow_cast::cast`), except that it never silently drops digits: a value
    /// the cast cannot represent (an overflow, text that is not a number, text with more decimal
    /// places than a decimal type's scale, a float with a fractional part going to an integer type)
    /// is a bad row naming file, 1-based row number within the file, column and value, handled by
    /// `on_error`. (Floats going to a decimal type are rounded to its scale, as Arrow does.) A name that is not an output column, or a conversion Arrow
    /// cannot do at all, fails [`ParquetSource::open`]. Default: empty (columns keep their file type).
    pub column_types: Vec<(String, DataType)>,
    /// What to do with a row whose value does not convert to its `column_types` type, or whose text
    /// holds a NUL byte: fail the read, or send it to [`Context::reject`] and go on. Default:
    /// [`OnError::Fail`].
    pub on_error: OnError,
    /// Keep NUL bytes in text values instead of calling such rows bad (PostgreSQL `text` cannot store
    /// them; other destinations may). Default: `false`.
    pub allow_nul_in_text: bool,
}

impl Default for ParquetSourceConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        ParquetSourceConfig {
            input: Input::List(Vec::new()),
            batch_size: 8192,
            columns: None,
            workers: cpus,
            max_row_groups_in_flight: 2 * cpus,
            batches_per_row_group: 2,
            preserve_order: true,
            shard: None,
            prefetch_limit_bytes: 32 << 20,
            allow_missing_columns: false,
            column_types: Vec::new(),
            on_error: OnError::Fail,
            allow_nul_in_text: false,
        }
    }
}

impl ParquetSourceConfig {
    /// Checks every field; returns [`SourceError::InvalidConfig`] naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(SourceError::config("batch_size", "must be at least 1"));
        }
        if self.workers == 0 {
            return Err(SourceError::config("workers", "must be at least 1"));
        }
        if self.max_row_groups_in_flight == 0 {
            return Err(SourceError::config("max_row_groups_in_flight", "must be at least 1"));
        }
        if self.batches_per_row_group == 0 {
            return Err(SourceError::config("batches_per_row_group", "must be at least 1"));
        }
        if let Some(s) = self.shard
            && (s.count == 0 || s.index >= s.count)
        {
            return Err(SourceError::config(
                "shard",
                format!("index {} must be below count {} (count at least 1)", s.index, s.count),
            ));
        }
        if let Some(cols) = &self.columns {
            if cols.is_empty() {
                return Err(SourceError::config("columns", "must name at least one column (or be None)"));
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(dup) = cols.iter().find(|c| !seen.insert(c.as_str())) {
                return Err(SourceError::config("columns", format!("names `{dup}` twice")));
            }
        }
        let mut pinned = std::collections::HashSet::new();
        if let Some((dup, _)) = self.column_types.iter().find(|(n, _)| !pinned.insert(n.as_str())) {
            return Err(SourceError::config("column_types", format!("names column `{dup}` twice")));
        }
        if let Input::List(l) = &self.input
            && l.is_empty()
        {
            return Err(SourceError::config("input", "names no file"));
        }
        Ok(())
    }
}

/// How one file maps onto the output schema.
#[derive(Debug)]
struct FilePlan {
    path: PathBuf,
    /// The path as rows' origin (see [`Origins`]).
    origin: Arc<str>,
    metadata: ArrowReaderMetadata,
    mask: ProjectionMask,
    /// For each output column: its index in this file's projected batches, or `None` (fill nulls).
    columns: Vec<Option<usize>>,
    /// For each row group: the number of rows of the file before it.
    row_group_starts: Vec<u64>,
}

/// One unit of parallel work.
#[derive(Debug, Clone, Copy)]
struct RowGroupTask {
    file: usize,
    row_group: usize,
}

/// A [`Source`] over Parquet files. Reads the footers when opened (for the schema and
/// [`Source::total_rows`]); decodes row groups on `workers` dedicated threads when streamed.
///
/// Columns keep their file's Arrow type, except INT96 timestamps (as Spark, Impala and Hive write
/// them), which are read as `Timestamp(Microsecond)` so that every year from 0001 to 9999 (Spark's
/// `9999-12-31` included) reads correctly; digits below the microsecond, which Spark never writes,
/// are dropped (rounded down).
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use arrow_array::{Int64Array, RecordBatch};
/// use etlkit_core::{Context, Source};
/// use etlkit_source::{Input, ParquetSource, ParquetSourceConfig};
/// use futures::StreamExt;
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("ids.parquet");
/// let batch = RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from_iter_values(0..1000)) as _)])?;
/// let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&path)?, batch.schema(), None)?;
/// w.write(&batch)?;
/// w.close()?;
///
/// let config = ParquetSourceConfig { input: Input::File(path), batch_size: 300, ..Default::default() };
/// let source = ParquetSource::open(config)?;
/// assert_eq!(source.total_rows(), Some(1000));
/// let batches: Vec<_> = futures::executor::block_on(Box::new(source).into_stream(Context::default()).collect());
/// let rows: usize = batches.into_iter().map(|b| b.unwrap().num_rows()).sum();
/// assert_eq!(rows, 1000);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ParquetSource {
    config: ParquetSourceConfig,
    schema: SchemaRef,
    files: Vec<Arc<FilePlan>>,
    tasks: Vec<RowGroupTask>,
    total_rows: u64,
    metrics: Arc<ReadMetrics>,
    name: String,
}

impl ParquetSource {
    /// Validates `config`, lists the files, reads every footer and reconciles the schemas.
    ///
    /// This does blocking file I/O (one footer per file); in async code with many files call it
    /// from `spawn_blocking`.
    pub fn open(config: ParquetSourceConfig) -> Result<Self> {
        config.validate()?;
        let paths = config.input.resolve(PARQUET_EXTENSIONS)?;
        let mut metas = Vec::with_capacity(paths.len());
        for path in &paths {
            let file = File::open(path).map_err(|e| SourceError::io(path, e))?;
            let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
                .and_then(int96_as_micros)
                .map_err(|source| SourceError::Parquet { path: path.clone(), source })?;
            metas.push(meta);
        }
        let (schema, plans) = reconcile(&config, paths, metas)?;
        let files: Vec<Arc<FilePlan>> = plans.into_iter().map(Arc::new).collect();

        let mut tasks = Vec::new();
        let mut total_rows = 0u64;
        let mut global = 0usize;
        for (fi, plan) in files.iter().enumerate() {
            for (ri, rg) in plan.metadata.metadata().row_groups().iter().enumerate() {
                let mine = config.shard.is_none_or(|s| global % s.count == s.index);
                global += 1;
                if mine {
                    tasks.push(RowGroupTask { file: fi, row_group: ri });
                    total_rows += rg.num_rows() as u64;
                }
            }
        }
        let name = format!("parquet:{}", config.input.describe());
        Ok(ParquetSource { config, schema, files, tasks, total_rows, metrics: Arc::default(), name })
    }

    /// The files that will be read, in order.
    pub fn files(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }

    /// Number of row groups this source (or shard) will decode.
    pub fn row_groups(&self) -> usize {
        self.tasks.len()
    }

    /// A handle on this reader's live counters (see [`ReadMetrics`]).
    pub fn metrics(&self) -> Arc<ReadMetrics> {
        Arc::clone(&self.metrics)
    }
}

/// Reads the file's INT96 columns (legacy Spark/Impala/Hive timestamps) as `Timestamp(Microsecond)`
/// (same time zone) instead of the parquet crate's default `Timestamp(Nanosecond)`, whose
/// conversion wraps around silently outside 1677-09-21 – 2262-04-11 (Spark writes `9999-12-31` as
/// an "open end"). Microseconds hold any year from 0001 to 9999. The parquet crate converts an INT96
/// to microseconds by dropping its sub-microsecond digits (nanoseconds of the day divided by 1000,
/// so rounded down); Spark never writes them. A unit coarser than nanoseconds from the file's
/// embedded Arrow schema is kept.
fn int96_as_micros(meta: ArrowReaderMetadata) -> parquet::errors::Result<ArrowReaderMetadata> {
    use parquet::basic::Type as PhysicalType;
    // One flag per leaf column, in the order of the Arrow schema's leaves (depth first).
    let int96: Vec<bool> =
        meta.parquet_schema().columns().iter().map(|c| c.physical_type() == PhysicalType::INT96).collect();
    if !int96.contains(&true) {
        return Ok(meta);
    }
    fn hint_field(
        field: &arrow_schema::FieldRef,
        int96: &[bool],
        leaf: &mut usize,
    ) -> arrow_schema::FieldRef {
        let dt = hint_type(field.data_type(), int96, leaf);
        Arc::new(field.as_ref().clone().with_data_type(dt))
    }
    fn hint_type(dt: &DataType, int96: &[bool], leaf: &mut usize) -> DataType {
        match dt {
            DataType::Struct(fields) => {
                DataType::Struct(fields.iter().map(|f| hint_field(f, int96, leaf)).collect())
            }
            DataType::List(f) => DataType::List(hint_field(f, int96, leaf)),
            DataType::LargeList(f) => DataType::LargeList(hint_field(f, int96, leaf)),
            DataType::FixedSizeList(f, n) => DataType::FixedSizeList(hint_field(f, int96, leaf), *n),
            DataType::Map(f, sorted) => DataType::Map(hint_field(f, int96, leaf), *sorted),
            other => {
                let is_int96 = int96.get(*leaf).copied().unwrap_or(false);
                *leaf += 1;
                match other {
                    DataType::Timestamp(arrow_schema::TimeUnit::Nanosecond, tz) if is_int96 => {
                        DataType::Timestamp(arrow_schema::TimeUnit::Microsecond, tz.clone())
                    }
                    _ => other.clone(),
                }
            }
        }
    }
    let mut leaf = 0;
    let fields: Vec<_> = meta.schema().fields().iter().map(|f| hint_field(f, &int96, &mut leaf)).collect();
    let hint = Schema::new_with_metadata(fields, meta.schema().metadata().clone());
    ArrowReaderMetadata::try_new(
        Arc::clone(meta.metadata()),
        ArrowReaderOptions::new().with_schema(Arc::new(hint)),
    )
}

/// Builds the output schema and each file's plan; fails on type conflicts and (unless allowed) on
/// missing columns, naming both files and the column.
fn reconcile(
    config: &ParquetSourceConfig,
    paths: Vec<PathBuf>,
    metas: Vec<ArrowReaderMetadata>,
) -> Result<(SchemaRef, Vec<FilePlan>)> {
    // Where each column was first seen: (file index, field).
    let mut first_seen: HashMap<String, (usize, Field)> = HashMap::new();
    let mut union_order: Vec<String> = Vec::new();
    for (fi, meta) in metas.iter().enumerate() {
        for field in meta.schema().fields() {
            match first_seen.get(field.name()) {
                None => {
                    first_seen.insert(field.name().clone(), (fi, field.as_ref().clone()));
                    union_order.push(field.name().clone());
                }
                Some((first, f)) if f.data_type() != field.data_type() => {
                    return Err(SourceError::TypeConflict {
                        column: field.name().clone(),
                        first_path: paths[*first].clone(),
                        first_type: f.data_type().clone(),
                        other_path: paths[fi].clone(),
                        other_type: field.data_type().clone(),
                    });
                }
                Some(_) => {}
            }
        }
    }
    let wanted: Vec<String> = match &config.columns {
        Some(cols) => {
            if let Some(missing) = cols.iter().find(|c| !first_seen.contains_key(c.as_str())) {
                return Err(SourceError::ColumnNotFound { column: missing.clone(), path: paths[0].clone() });
            }
            cols.clone()
        }
        None => union_order,
    };

    let mut out_fields = Vec::with_capacity(wanted.len());
    let mut plans = Vec::with_capacity(paths.len());
    let mut nullable = vec![false; wanted.len()];
    let mut per_file_roots: Vec<Vec<Option<usize>>> = Vec::with_capacity(paths.len());
    for (fi, meta) in metas.iter().enumerate() {
        let file_schema = meta.schema();
        let mut roots = Vec::with_capacity(wanted.len());
        for (ci, name) in wanted.iter().enumerate() {
            let (first, reference) = &first_seen[name];
            match file_schema.index_of(name) {
                Ok(idx) => {
                    nullable[ci] |= file_schema.field(idx).is_nullable();
                    roots.push(Some(idx));
                }
                Err(_) => {
                    if !(config.allow_missing_columns && reference.is_nullable()) {
                        return Err(SourceError::MissingColumn {
                            column: name.clone(),
                            present_in: paths[*first].clone(),
                            missing_in: paths[fi].clone(),
                            nullable: reference.is_nullable(),
                        });
                    }
                    nullable[ci] = true;
                    roots.push(None);
                }
            }
        }
        per_file_roots.push(roots);
    }
    for (ci, name) in wanted.iter().enumerate() {
        let reference = &first_seen[name].1;
        out_fields.push(reference.clone().with_nullable(nullable[ci]));
    }
    for (name, to) in &config.column_types {
        let Some(field) = out_fields.iter_mut().find(|f| f.name() == name) else {
            return Err(SourceError::config(
                "column_types",
                format!("names column `{name}`, which is not an output column ({})", wanted.join(", ")),
            ));
        };
        if !arrow_cast::can_cast_types(field.data_type(), to) {
            return Err(SourceError::config(
                "column_types",
                format!("column `{name}` cannot be converted from {} to {to}", field.data_type()),
            ));
        }
        *field = field.clone().with_data_type(to.clone());
    }
    let schema = Arc::new(Schema::new(out_fields));

    for ((path, meta), roots) in paths.into_iter().zip(metas).zip(per_file_roots) {
        let mut selected: Vec<usize> = roots.iter().flatten().copied().collect();
        selected.sort_unstable();
        let mask = ProjectionMask::roots(meta.parquet_schema(), selected.iter().copied());
        let columns = roots
            .iter()
            .map(|r| r.map(|root| selected.binary_search(&root).expect("selected root")))
            .collect();
        let row_group_starts = meta
            .metadata()
            .row_groups()
            .iter()
            .scan(0u64, |before, rg| {
                let start = *before;
                *before += rg.num_rows() as u64;
                Some(start)
            })
            .collect();
        let origin = path.display().to_string().into();
        plans.push(FilePlan { path, origin, metadata: meta, mask, columns, row_group_starts });
    }
    Ok((schema, plans))
}

/// The projected column chunks of one row group, read into memory with one read per run of adjacent
/// chunks (instead of one small read per page), then decoded from memory without further copies.
struct RowGroupBytes {
    file_len: u64,
    /// (file offset, bytes), sorted by offset.
    ranges: Vec<(u64, Bytes)>,
}

impl RowGroupBytes {
    /// The (start, end) file offsets of the row group's projected column chunks.
    fn spans(plan: &FilePlan, row_group: usize) -> Vec<(u64, u64)> {
        let rg = plan.metadata.metadata().row_group(row_group);
        (0..rg.num_columns())
            .filter(|&i| plan.mask.leaf_included(i))
            .map(|i| {
                let (start, len) = rg.column(i).byte_range();
                (start, start + len)
            })
            .collect()
    }

    /// Compressed bytes of the row group's projected column chunks.
    fn projected_size(plan: &FilePlan, row_group: usize) -> u64 {
        Self::spans(plan, row_group).iter().map(|(s, e)| e - s).sum()
    }

    fn read(plan: &FilePlan, row_group: usize) -> Result<Self> {
        let io = |e| SourceError::io(&plan.path, e);
        let mut spans = Self::spans(plan, row_group);
        spans.sort_unstable();
        // Coalesce chunks separated by small gaps (skipped columns) into one read.
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match merged.last_mut() {
                Some(last) if start <= last.1 + (256 << 10) => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        let mut file = File::open(&plan.path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut ranges = Vec::with_capacity(merged.len());
        for (start, end) in merged {
            let len = (end - start) as usize;
            let mut buf = Vec::with_capacity(len);
            file.seek(SeekFrom::Start(start)).map_err(io)?;
            (&mut file).take(len as u64).read_to_end(&mut buf).map_err(io)?;
            if buf.len() != len {
                let short = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("column chunks at {start}..{end} run past the end of the file"),
                );
                return Err(io(short));
            }
            ranges.push((start, Bytes::from(buf)));
        }
        Ok(RowGroupBytes { file_len, ranges })
    }

    fn find(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        let hit = self
            .ranges
            .iter()
            .find(|(off, b)| start >= *off && start + length as u64 <= off + b.len() as u64);
        match hit {
            Some((off, b)) => Ok(b.slice((start - off) as usize..)),
            None => Err(parquet::errors::ParquetError::General(format!(
                "read of {length} bytes at offset {start} outside the row group's column chunks"
            ))),
        }
    }
}

impl Length for RowGroupBytes {
    fn len(&self) -> u64 {
        self.file_len
    }
}

impl ChunkReader for RowGroupBytes {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(self.find(start, 0)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        Ok(self.find(start, length)?.slice(..length))
    }
}

/// What a decoder thread sends for one row group.
enum Msg {
    /// Good rows, and the rows rejected on the way (in file order, before the good rows' delivery).
    Batch(RecordBatch, Origins, Vec<Rejected>),
    Err(SourceError),
    /// The row group is finished (only sent in first-finished mode).
    Done,
}

struct Job {
    task: RowGroupTask,
    tx: async_channel::Sender<Msg>,
}

struct Shared {
    files: Vec<Arc<FilePlan>>,
    prefetch_limit: u64,
    metrics: Arc<ReadMetrics>,
    schema: SchemaRef,
    batch_size: usize,
    cancelled: AtomicBool,
    /// In first-finished mode, workers send `Done` after each row group.
    send_done: bool,
    on_error: OnError,
    allow_nul_in_text: bool,
}

impl Shared {
    /// Decodes one row group, sending its batches; returns early when the consumer went away.
    fn decode(&self, job: &Job) {
        let plan = &self.files[job.task.file];
        let row_group = job.task.row_group;
        let result = if RowGroupBytes::projected_size(plan, row_group) <= self.prefetch_limit {
            self.metrics.row_group_prefetched();
            RowGroupBytes::read(plan, row_group).and_then(|chunks| self.decode_from(plan, chunks, job))
        } else {
            File::open(&plan.path)
                .map_err(|e| SourceError::io(&plan.path, e))
                .and_then(|file| self.decode_from(plan, file, job))
        };
        if let Err(e) = result {
            let _ = job.tx.send_blocking(Msg::Err(e));
        }
        if self.send_done {
            let _ = job.tx.send_blocking(Msg::Done);
        }
    }

    /// Decodes the job's row group from `input`, sending batches until done or the consumer is gone.
    fn decode_from<T: ChunkReader + 'static>(&self, plan: &FilePlan, input: T, job: &Job) -> Result<()> {
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(input, plan.metadata.clone())
            .with_projection(plan.mask.clone())
            .with_row_groups(vec![job.task.row_group])
            .with_batch_size(self.batch_size)
            .build()
            .map_err(|source| SourceError::Parquet { path: plan.path.clone(), source })?;
        // 1-based number within the file of the next batch's first row.
        let mut first_row = plan.row_group_starts[job.task.row_group] + 1;
        for batch in reader {
            if self.cancelled.load(Ordering::Relaxed) {
                return Ok(());
            }
            let batch = batch.map_err(|source| SourceError::Arrow { path: plan.path.clone(), source })?;
            let rows = batch.num_rows() as u64;
            let (batch, origins, rejects) = self.adapt(plan, batch, first_row)?;
            first_row += rows;
            if batch.num_rows() == 0 && rejects.is_empty() {
                continue;
            }
            self.metrics.batch_buffered();
            if job.tx.send_blocking(Msg::Batch(batch, origins, rejects)).is_err() {
                self.metrics.batch_unbuffered();
                return Ok(()); // consumer gone
            }
        }
        Ok(())
    }

    /// Reorders a file's projected batch into the output schema, filling absent columns with nulls
    /// and converting columns to their pinned types. `first_row` is the 1-based number within the
    /// file of the batch's first row. Rows whose values do not convert end the read
    /// ([`OnError::Fail`]) or are returned as rejects and left out of the batch ([`OnError::Reject`]).
    fn adapt(
        &self,
        plan: &FilePlan,
        batch: RecordBatch,
        first_row: u64,
    ) -> Result<(RecordBatch, Origins, Vec<Rejected>)> {
        let arrow_err = |source| SourceError::Arrow { path: plan.path.clone(), source };
        let rows = batch.num_rows();
        let file_schema = batch.schema();
        // Per row: the first (leftmost) bad value, as (column, value, reason).
        let mut bad: Vec<Option<(String, String, String)>> = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (src, field) in plan.columns.iter().zip(self.schema.fields()) {
            let Some(i) = src else {
                columns.push(new_null_array(field.data_type(), rows));
                continue;
            };
            let col = batch.column(*i);
            let name = file_schema.field(*i).name();
            let out = if col.data_type() == field.data_type() {
                Arc::clone(col)
            } else {
                let (converted, faults) = cast_strict(col, field.data_type()).map_err(arrow_err)?;
                if !faults.is_empty() {
                    bad.resize(rows, None);
                    for (row, reason) in faults {
                        if bad[row].is_none() {
                            let value =
                                arrow_cast::display::array_value_to_string(col, row).map_err(arrow_err)?;
                            bad[row] = Some((name.clone(), value, reason));
                        }
                    }
                }
                converted
            };
            if !self.allow_nul_in_text {
                // PostgreSQL text cannot hold a NUL byte: such a row is bad here, naming its row. The
                // check runs on the output column, so text reached through a pinned type counts too.
                for row in nul_rows(out.as_ref()) {
                    bad.resize(rows, None);
                    if bad[row].is_none() {
                        let value =
                            arrow_cast::display::array_value_to_string(&out, row).map_err(arrow_err)?;
                        bad[row] = Some((name.clone(), value, NUL_IN_TEXT.to_owned()));
                    }
                }
            }
            columns.push(out);
        }
        let bad_row = |row: usize, (column, value, reason): &(String, String, String)| BadRow {
            path: plan.path.clone(),
            line: first_row + row as u64,
            column: Some(column.clone()),
            value: Some(value.clone()),
            reason: reason.clone(),
            raw: None,
        };
        let mut rejects = Vec::new();
        let mut origins = Origins::sequential(plan.origin.clone(), first_row, rows);
        if let Some((row, first)) = bad.iter().enumerate().find_map(|(r, b)| b.as_ref().map(|b| (r, b))) {
            if self.on_error == OnError::Fail {
                return Err(SourceError::BadRow(Box::new(bad_row(row, first))));
            }
            for (row, b) in bad.iter().enumerate() {
                if let Some(b) = b {
                    let BadRow { path, line, column, value, reason, raw } = bad_row(row, b);
                    let origin = path.display().to_string();
                    rejects.push(Rejected { origin, line: Some(line), column, value, reason, raw });
                }
            }
            let keep = BooleanArray::from(bad.iter().map(Option::is_none).collect::<Vec<_>>());
            origins = origins.filter(&keep);
            columns = columns
                .iter()
                .map(|c| arrow_select::filter::filter(c, &keep))
                .collect::<std::result::Result<_, _>>()
                .map_err(arrow_err)?;
        }
        let batch = RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(arrow_err)?;
        Ok((batch, origins, rejects))
    }
}

/// Why a text value holding a NUL byte is bad (unless `allow_nul_in_text`).
const NUL_IN_TEXT: &str = "NUL byte in text (PostgreSQL text cannot store it)";

/// Rows of a text column (`Utf8`, `LargeUtf8`, `Utf8View`, or a dictionary of one of them) whose
/// value holds a NUL byte (none for other types; one scan of the values finds the common case of no
/// NUL at all).
fn nul_rows(col: &dyn Array) -> Vec<usize> {
    use arrow_array::cast::AsArray;
    let rows = |values: &[u8], offset: &dyn Fn(usize) -> (usize, usize)| -> Vec<usize> {
        if !values.contains(&0) {
            return Vec::new();
        }
        (0..col.len())
            .filter(|&r| {
                col.is_valid(r) && {
                    let (a, b) = offset(r);
                    values[a..b].contains(&0)
                }
            })
            .collect()
    };
    match col.data_type() {
        DataType::Utf8 => {
            let s = col.as_string::<i32>();
            let o = s.value_offsets();
            rows(s.value_data(), &|r| (o[r] as usize, o[r + 1] as usize))
        }
        DataType::LargeUtf8 => {
            let s = col.as_string::<i64>();
            let o = s.value_offsets();
            rows(s.value_data(), &|r| (o[r] as usize, o[r + 1] as usize))
        }
        DataType::Utf8View => {
            let s = col.as_string_view();
            (0..col.len()).filter(|&r| s.is_valid(r) && s.value(r).as_bytes().contains(&0)).collect()
        }
        DataType::Dictionary(_, _) => {
            let dict = col.as_any_dictionary();
            let bad_values = nul_rows(dict.values().as_ref());
            if bad_values.is_empty() {
                return Vec::new();
            }
            let mut is_bad = vec![false; dict.values().len()];
            for v in bad_values {
                is_bad[v] = true;
            }
            let keys = dict.normalized_keys();
            (0..col.len()).filter(|&r| col.is_valid(r) && is_bad[keys[r]]).collect()
        }
        _ => Vec::new(),
    }
}

/// The consumer side: submits row groups as in-flight slots free up and yields their batches.
struct Reader {
    shared: Arc<Shared>,
    metrics: Arc<ReadMetrics>,
    tasks: std::vec::IntoIter<RowGroupTask>,
    work_tx: async_channel::Sender<Job>,
    max_in_flight: usize,
    per_row_group: usize,
    /// Ordered mode: receivers of in-flight row groups, in order.
    ordered: Option<VecDeque<async_channel::Receiver<Msg>>>,
    /// First-finished mode: one channel for all row groups, and the number in flight.
    unordered: Option<(async_channel::Sender<Msg>, async_channel::Receiver<Msg>)>,
    unordered_in_flight: usize,
    done: bool,
    name: String,
    ctx: Context,
    _threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.shared.cancelled.store(true, Ordering::Relaxed);
        self.work_tx.close();
        if let Some(q) = &self.ordered {
            for rx in q {
                rx.close();
            }
        }
        if let Some((_, rx)) = &self.unordered {
            rx.close();
        }
    }
}

impl Reader {
    /// Submits row groups until `max_in_flight` are in flight or none are left.
    fn top_up(&mut self) {
        loop {
            let in_flight = match &self.ordered {
                Some(q) => q.len(),
                None => self.unordered_in_flight,
            };
            if in_flight >= self.max_in_flight {
                return;
            }
            let Some(task) = self.tasks.next() else {
                self.work_tx.close(); // workers exit once the queue drains
                return;
            };
            let tx = match (&mut self.ordered, &self.unordered) {
                (Some(q), _) => {
                    let (tx, rx) = async_channel::bounded(self.per_row_group);
                    q.push_back(rx);
                    tx
                }
                (None, Some((tx, _))) => {
                    self.unordered_in_flight += 1;
                    tx.clone()
                }
                (None, None) => unreachable!("reader has a mode"),
            };
            self.metrics.enter();
            // The work queue is unbounded; its length is bounded by `max_in_flight`.
            if self.work_tx.try_send(Job { task, tx }).is_err() {
                return;
            }
        }
    }

    async fn next(&mut self) -> Option<etlkit_core::Result<(RecordBatch, Option<Origins>)>> {
        if self.done {
            return None;
        }
        loop {
            self.top_up();
            let msg = if let Some(q) = &mut self.ordered {
                let Some(front) = q.front() else {
                    self.done = true;
                    return None;
                };
                match front.recv().await {
                    Ok(msg) => msg,
                    Err(_) => {
                        // Row group finished and fully consumed.
                        q.pop_front();
                        self.metrics.leave();
                        continue;
                    }
                }
            } else {
                if self.unordered_in_flight == 0 {
                    self.done = true;
                    return None;
                }
                let (_, rx) = self.unordered.as_ref().expect("unordered mode");
                match rx.recv().await {
                    Ok(msg) => msg,
                    Err(_) => {
                        self.done = true;
                        return Some(Err(into_core(
                            &self.name,
                            SourceError::Internal("decoder threads vanished".into()),
                        )));
                    }
                }
            };
            match msg {
                Msg::Batch(b, origins, rejects) => {
                    self.metrics.batch_unbuffered();
                    for r in rejects {
                        if let Err(e) = self.ctx.reject(r) {
                            self.done = true;
                            self.shared.cancelled.store(true, Ordering::Relaxed);
                            return Some(Err(e));
                        }
                    }
                    if b.num_rows() == 0 {
                        continue;
                    }
                    self.metrics.delivered(b.num_rows());
                    return Some(Ok((b, Some(origins))));
                }
                Msg::Done => {
                    self.unordered_in_flight -= 1;
                    self.metrics.leave();
                }
                Msg::Err(e) => {
                    self.done = true;
                    self.shared.cancelled.store(true, Ordering::Relaxed);
                    return Some(Err(into_core(&self.name, e)));
                }
            }
        }
    }
}

impl Source for ParquetSource {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn total_rows(&self) -> Option<u64> {
        Some(self.total_rows)
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn into_stream(self: Box<Self>, ctx: Context) -> BatchStream {
        self.into_tracked_stream(ctx).map(|r| r.map(|(batch, _)| batch)).boxed()
    }

    /// Every row with its file and 1-based row number within the file.
    fn into_tracked_stream(self: Box<Self>, ctx: Context) -> TrackedStream {
        let this = *self;
        let config = this.config;
        let shared = Arc::new(Shared {
            files: this.files,
            prefetch_limit: config.prefetch_limit_bytes,
            metrics: Arc::clone(&this.metrics),
            schema: this.schema,
            batch_size: config.batch_size,
            cancelled: AtomicBool::new(false),
            send_done: !config.preserve_order,
            on_error: config.on_error,
            allow_nul_in_text: config.allow_nul_in_text,
        });
        let (work_tx, work_rx) = async_channel::unbounded::<Job>();
        let threads = config.workers.min(this.tasks.len().max(1));
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let shared = Arc::clone(&shared);
            let work_rx = work_rx.clone();
            let running = this.metrics.running_guard();
            let spawned = std::thread::Builder::new().name(format!("etlkit-parquet-{i}")).spawn(move || {
                let _running = running;
                while let Ok(job) = work_rx.recv_blocking() {
                    if shared.cancelled.load(Ordering::Relaxed) {
                        continue; // drain without work so senders drop
                    }
                    let outcome =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shared.decode(&job)));
                    if outcome.is_err() {
                        let err = SourceError::Internal("a Parquet decoder thread panicked".into());
                        let _ = job.tx.send_blocking(Msg::Err(err));
                        if shared.send_done {
                            let _ = job.tx.send_blocking(Msg::Done);
                        }
                    }
                }
            });
            match spawned {
                Ok(h) => {
                    this.metrics.thread_started();
                    handles.push(h);
                }
                Err(e) => {
                    let err = SourceError::Internal(format!("cannot start decoder thread: {e}"));
                    return futures::stream::once(async move { Err(into_core(&this.name, err)) }).boxed();
                }
            }
        }
        let cap = config.max_row_groups_in_flight * config.batches_per_row_group;
        let reader = Reader {
            shared,
            metrics: this.metrics,
            tasks: this.tasks.into_iter(),
            work_tx,
            max_in_flight: config.max_row_groups_in_flight,
            per_row_group: config.batches_per_row_group,
            ordered: config.preserve_order.then(VecDeque::new),
            unordered: (!config.preserve_order).then(|| async_channel::bounded(cap)),
            unordered_in_flight: 0,
            done: false,
            name: this.name,
            ctx,
            _threads: handles,
        };
        futures::stream::unfold(reader, |mut r| async move { r.next().await.map(|item| (item, r)) }).boxed()
    }
}

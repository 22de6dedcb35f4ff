//! Binary `COPY ... FROM STDIN`: encoding conformed Arrow batches (column at a time for the common
//! scalar types, with `pgpq` for the rest) and streaming them to the server in large `CopyData`
//! messages (several MiB each, never one per row).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::Schema;
use bytes::BytesMut;
use pgpq::ArrowToPostgresBinaryEncoder;
use sqlx::PgConnection;

use crate::catalog::TableColumn;
use crate::columnar::ColumnarEncoder;
use crate::conform::{Conformer, NanosPolicy, NulPolicy};
use crate::error::{PgError, Result};

/// The 11-byte signature, 4-byte flags and 4-byte header-extension length of binary COPY data.
pub(crate) const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The file trailer: a 16-bit field count of -1.
pub(crate) const TRAILER: [u8; 2] = [0xff, 0xff];

/// Rows encoded in the first slice of a COPY, before the row size is known.
const SLICE_ROWS: usize = 4096;

/// Encodes conformed batches to binary COPY tuples. One per writer (pgpq's encoder is stateful).
///
/// Tables whose columns are all common scalars (booleans, integers, floats, dates, microsecond
/// timestamps, text, bytea, uuid) are encoded by the column-at-a-time [`ColumnarEncoder`]; any
/// other column type (`numeric`, `time`, arrays, `json`, ...) sends the whole table through `pgpq`.
#[derive(Debug)]
pub(crate) enum TupleEncoder {
    /// The fast path.
    Columnar {
        /// The encoder.
        encoder: ColumnarEncoder,
        /// Rows encoded so far (to number rows in errors).
        rows: u64,
    },
    /// `pgpq`, for the other types.
    Pgpq(Box<ArrowToPostgresBinaryEncoder>),
}

impl TupleEncoder {
    pub(crate) fn new(conformer: &Conformer) -> Result<Self> {
        Self::with_pgpq(conformer, false)
    }

    /// `force_pgpq`: use `pgpq` even where the columnar encoder applies (tests and benchmarks).
    pub(crate) fn with_pgpq(conformer: &Conformer, force_pgpq: bool) -> Result<Self> {
        let schema = conformer.target_schema();
        if !force_pgpq && let Some(encoder) = ColumnarEncoder::new(&conformer.pg_types(), schema) {
            return Ok(TupleEncoder::Columnar { encoder, rows: 0 });
        }
        let mut inner =
            ArrowToPostgresBinaryEncoder::try_new_with_encoders(schema, &conformer.encoder_builders()?)
                .map_err(PgError::Encode)?;
        // pgpq writes the header once per encoder; we write our own header per COPY statement and
        // only use pgpq for tuples, so move it past the header state now.
        inner.write_header(&mut BytesMut::new()).map_err(PgError::Encode)?;
        Ok(TupleEncoder::Pgpq(Box::new(inner)))
    }

    /// Appends the tuples of `batch` to `buf` (no header, no trailer).
    pub(crate) fn encode(&mut self, batch: &RecordBatch, buf: &mut BytesMut) -> Result<()> {
        match self {
            TupleEncoder::Columnar { encoder, rows } => {
                encoder.encode(batch, buf, *rows + 1)?;
                *rows += batch.num_rows() as u64;
                Ok(())
            }
            TupleEncoder::Pgpq(inner) => inner.write_batch(batch, buf).map_err(PgError::Encode),
        }
    }
}

/// How COPY data flows: message size, time limit, and a counter of messages sent.
///
/// ```
/// use std::sync::atomic::AtomicU64;
/// use std::time::Duration;
/// use etlkit_postgres::copy_in::CopyFlow;
///
/// let sent = AtomicU64::new(0);
/// let mut flow = CopyFlow::new(1 << 20); // 1 MiB messages, no time limit, not counted
/// flow.timeout = Some(Duration::from_secs(600));
/// flow.messages = Some(&sent);
/// ```
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct CopyFlow<'a> {
    /// Bytes per `CopyData` message (the last one of a COPY may be shorter; none is longer).
    pub send_buffer: usize,
    /// Client-side bound on the whole COPY (PostgreSQL's `statement_timeout` does not bound COPY);
    /// `None` when the caller bounds a larger unit of work itself.
    pub timeout: Option<Duration>,
    /// Counts messages sent, when the caller reports them.
    pub messages: Option<&'a AtomicU64>,
}

impl CopyFlow<'_> {
    /// Messages of `send_buffer` bytes, no time limit, no message counter.
    pub fn new(send_buffer: usize) -> Self {
        CopyFlow { send_buffer, timeout: None, messages: None }
    }
}

/// Where the bytes of one COPY come from: encoded Arrow batches (the sinks), a ready buffer
/// ([`ReadyBytes`]), or another server's `COPY TO` stream (`etlkit-replicate`). The bytes are the
/// whole COPY data in the format the statement names — for `FORMAT binary`, header, tuples and
/// trailer.
///
/// Implementations may write `async fn fill(...)`; the future must be `Send`.
pub trait CopyData {
    /// Appends the next bytes to `buf` (at least `want` bytes unless the data ends first). Returns
    /// `false` once everything, trailer included, has been appended. An error aborts the COPY.
    fn fill(&mut self, buf: &mut BytesMut, want: usize) -> impl Future<Output = Result<bool>> + Send;
}

/// The one COPY-in path of etlkit: the COPY sink, the star sink, the dimension store and
/// replication (`etlkit-replicate`) all send their data through here. Starts `COPY <statement>`
/// (e.g. `COPY "t" ("a", "b") FROM STDIN (FORMAT binary)`) on `conn`, sends what `data` produces in
/// messages of at most `flow.send_buffer` bytes (`buf` is the reusable send buffer; `table` names
/// the target in errors), and returns the row count the server reports.
///
/// When `data` fails, the COPY is aborted (`CopyFail`) so the connection stays usable; on any error
/// the caller rolls back its transaction (or closes a broken connection).
pub async fn copy_in(
    conn: &mut PgConnection,
    statement: &str,
    table: &str,
    data: &mut impl CopyData,
    buf: &mut BytesMut,
    flow: &CopyFlow<'_>,
) -> Result<u64> {
    let send = flow.send_buffer.max(1);
    let work = async {
        let mut copy =
            conn.copy_in_raw(statement).await.map_err(|e| PgError::db("starting COPY", table, e))?;
        buf.clear();
        buf.reserve(send + send / 4);
        loop {
            let more = match data.fill(buf, send).await {
                Ok(more) => more,
                Err(e) => {
                    let _ = copy.abort("etlkit: the COPY data could not be produced").await;
                    return Err(e);
                }
            };
            if buf.len() >= send || !more {
                // Whole messages of `send` bytes; a remainder waits for more data (or is the last).
                let whole = if more { buf.len() / send * send } else { buf.len() };
                for message in buf[..whole].chunks(send) {
                    copy.send(message).await.map_err(|e| PgError::db("sending COPY data", table, e))?;
                    if let Some(m) = flow.messages {
                        m.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let rest = buf.len() - whole;
                buf.copy_within(whole.., 0);
                buf.truncate(rest);
            }
            if !more {
                break;
            }
        }
        copy.finish().await.map_err(|e| PgError::db("finishing COPY", table, e))
    };
    match flow.timeout {
        None => work.await,
        Some(t) => match tokio::time::timeout(t, work).await {
            Ok(r) => r,
            Err(_) => Err(PgError::Timeout { action: "COPY", seconds: t.as_secs_f64() }),
        },
    }
}

/// Encodes rows for COPY: either already-conformed batches ([`TupleEncoder`]) or raw batches cast
/// and checked on the way ([`CopyEncoder`]).
pub(crate) trait EncodeRows: Send {
    /// Appends the tuples of `batch` to `buf`.
    fn encode_rows(&mut self, batch: &RecordBatch, buf: &mut BytesMut) -> Result<()>;
}

impl EncodeRows for TupleEncoder {
    fn encode_rows(&mut self, batch: &RecordBatch, buf: &mut BytesMut) -> Result<()> {
        self.encode(batch, buf)
    }
}

impl EncodeRows for CopyEncoder {
    fn encode_rows(&mut self, batch: &RecordBatch, buf: &mut BytesMut) -> Result<()> {
        self.write_batch(batch, buf)
    }
}

/// [`CopyData`] from Arrow batches: header, the rows encoded a slice at a time (slices sized from
/// the bytes per row seen so far so that each fill is close to one message), trailer.
pub(crate) struct EncodedBatches<'a, E> {
    encoder: &'a mut E,
    batches: &'a [RecordBatch],
    batch: usize,
    offset: usize,
    slice_rows: usize,
    header: bool,
}

impl<'a, E: EncodeRows> EncodedBatches<'a, E> {
    pub(crate) fn new(encoder: &'a mut E, batches: &'a [RecordBatch]) -> Self {
        EncodedBatches { encoder, batches, batch: 0, offset: 0, slice_rows: SLICE_ROWS, header: false }
    }
}

impl<E: EncodeRows> CopyData for EncodedBatches<'_, E> {
    async fn fill(&mut self, buf: &mut BytesMut, want: usize) -> Result<bool> {
        if !self.header {
            buf.extend_from_slice(HEADER);
            self.header = true;
        }
        while buf.len() < want {
            let Some(batch) = self.batches.get(self.batch) else {
                buf.extend_from_slice(&TRAILER);
                return Ok(false);
            };
            if self.offset >= batch.num_rows() {
                self.batch += 1;
                self.offset = 0;
                continue;
            }
            let n = self.slice_rows.min(batch.num_rows() - self.offset);
            let before = buf.len();
            self.encoder.encode_rows(&batch.slice(self.offset, n), buf)?;
            let per_row = ((buf.len() - before) / n).max(1);
            self.slice_rows = want.div_ceil(per_row).clamp(16, 1 << 16);
            self.offset += n;
        }
        Ok(true)
    }
}

/// [`CopyData`] from bytes that are ready (header and trailer included), sent as they are.
#[derive(Debug, Clone, Copy)]
pub struct ReadyBytes<'a>(pub &'a [u8]);

impl CopyData for ReadyBytes<'_> {
    async fn fill(&mut self, buf: &mut BytesMut, _want: usize) -> Result<bool> {
        buf.extend_from_slice(std::mem::take(&mut self.0));
        Ok(false)
    }
}

/// Encodes Arrow batches into PostgreSQL binary COPY data for a table's columns: the same
/// cast-validate-encode path [`PgCopySink`](crate::PgCopySink) uses, without a connection. Useful
/// for writing `.bin` files for `COPY ... FROM 'file' (FORMAT binary)` and for benchmarks.
#[derive(Debug)]
pub struct CopyEncoder {
    conformer: Conformer,
    tuples: TupleEncoder,
    rows: u64,
}

impl CopyEncoder {
    /// An encoder for batches with schema `input` going into a table with columns `table` (from
    /// [`table_columns`](crate::table_columns)).
    pub fn new(table: &[TableColumn], input: &Schema, nanos: NanosPolicy, nul: NulPolicy) -> Result<Self> {
        Self::build(table, input, nanos, nul, false)
    }

    /// Like [`CopyEncoder::new`], but always encoding with `pgpq` (for comparisons; the default
    /// encoder produces the same bytes, faster, for the scalar types it handles).
    pub fn new_pgpq(
        table: &[TableColumn],
        input: &Schema,
        nanos: NanosPolicy,
        nul: NulPolicy,
    ) -> Result<Self> {
        Self::build(table, input, nanos, nul, true)
    }

    fn build(
        table: &[TableColumn],
        input: &Schema,
        nanos: NanosPolicy,
        nul: NulPolicy,
        force_pgpq: bool,
    ) -> Result<Self> {
        let conformer = Conformer::plan("table", table, input, nanos, nul)?;
        let tuples = TupleEncoder::with_pgpq(&conformer, force_pgpq)?;
        Ok(CopyEncoder { conformer, tuples, rows: 0 })
    }

    /// The table columns the data is for, in order (the COPY column list).
    pub fn column_names(&self) -> Vec<String> {
        self.conformer.column_names().map(str::to_owned).collect()
    }

    /// Appends the binary COPY header.
    pub fn write_header(&self, buf: &mut BytesMut) {
        buf.extend_from_slice(HEADER);
    }

    /// Casts, validates and appends the rows of `batch`.
    pub fn write_batch(&mut self, batch: &RecordBatch, buf: &mut BytesMut) -> Result<()> {
        let conformed = self.conformer.conform(batch, self.rows + 1)?;
        self.rows += batch.num_rows() as u64;
        self.tuples.encode(&conformed, buf)
    }

    /// Appends the trailer.
    pub fn write_trailer(&self, buf: &mut BytesMut) {
        buf.extend_from_slice(&TRAILER);
    }
}

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
#[derive(Debug, Clone, Copy)]
pub(crate) struct CopyFlow<'a> {
    pub(crate) send_buffer: usize,
    pub(crate) timeout: Duration,
    pub(crate) messages: &'a AtomicU64,
}

/// Runs one `COPY <statement>` carrying all rows of `batches`, sending `send_buffer` bytes per
/// message, bounded by a client-side `timeout` (PostgreSQL's `statement_timeout` does not bound
/// COPY). Returns the row count the server reports.
///
/// On error the COPY is abandoned (a `CopyFail` is queued by the driver); callers must roll back the
/// transaction or close the connection.
pub(crate) async fn copy_batches(
    conn: &mut PgConnection,
    statement: &str,
    table: &str,
    encoder: &mut TupleEncoder,
    batches: &[RecordBatch],
    flow: &CopyFlow<'_>,
) -> Result<u64> {
    let CopyFlow { send_buffer, timeout, messages } = *flow;
    let work = async {
        let mut copy =
            conn.copy_in_raw(statement).await.map_err(|e| PgError::db("starting COPY", table, e))?;
        let mut buf = BytesMut::with_capacity(send_buffer + send_buffer / 4);
        buf.extend_from_slice(HEADER);
        // Rows per encode call: sized from the bytes per row seen so far so that each message is
        // close to `send_buffer` bytes.
        let mut slice_rows = SLICE_ROWS;
        for batch in batches {
            let mut offset = 0;
            while offset < batch.num_rows() {
                let n = slice_rows.min(batch.num_rows() - offset);
                let before = buf.len();
                encoder.encode(&batch.slice(offset, n), &mut buf)?;
                let per_row = ((buf.len() - before) / n).max(1);
                slice_rows = send_buffer.div_ceil(per_row).clamp(16, 1 << 16);
                offset += n;
                if buf.len() >= send_buffer {
                    copy.send(&buf[..]).await.map_err(|e| PgError::db("sending COPY data", table, e))?;
                    messages.fetch_add(1, Ordering::Relaxed);
                    buf.clear();
                }
            }
        }
        buf.extend_from_slice(&TRAILER);
        copy.send(&buf[..]).await.map_err(|e| PgError::db("sending COPY data", table, e))?;
        messages.fetch_add(1, Ordering::Relaxed);
        copy.finish().await.map_err(|e| PgError::db("finishing COPY", table, e))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(PgError::Timeout { action: "COPY", seconds: timeout.as_secs_f64() }),
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

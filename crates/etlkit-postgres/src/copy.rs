//! Binary `COPY ... FROM STDIN`: encoding conformed Arrow batches with `pgpq` and streaming them to
//! the server in large `CopyData` messages (several MiB each, never one per row).

use std::collections::HashMap;
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::Schema;
use bytes::BytesMut;
use pgpq::ArrowToPostgresBinaryEncoder;
use pgpq::encoders::EncoderBuilder;
use sqlx::PgConnection;

use crate::error::{PgError, Result};

/// The 11-byte signature, 4-byte flags and 4-byte header-extension length of binary COPY data.
pub(crate) const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The file trailer: a 16-bit field count of -1.
pub(crate) const TRAILER: [u8; 2] = [0xff, 0xff];

/// Rows encoded per slice before checking whether the send buffer is full.
const SLICE_ROWS: usize = 4096;

/// Encodes conformed batches to binary COPY tuples. One per writer (pgpq's encoder is stateful).
#[derive(Debug)]
pub(crate) struct TupleEncoder {
    inner: ArrowToPostgresBinaryEncoder,
}

impl TupleEncoder {
    pub(crate) fn new(schema: &Schema, builders: &HashMap<String, EncoderBuilder>) -> Result<Self> {
        let mut inner =
            ArrowToPostgresBinaryEncoder::try_new_with_encoders(schema, builders).map_err(PgError::Encode)?;
        // pgpq writes the header once per encoder; we write our own header per COPY statement and
        // only use pgpq for tuples, so move it past the header state now.
        inner.write_header(&mut BytesMut::new()).map_err(PgError::Encode)?;
        Ok(TupleEncoder { inner })
    }

    /// Appends the tuples of `batch` to `buf` (no header, no trailer).
    pub(crate) fn encode(&mut self, batch: &RecordBatch, buf: &mut BytesMut) -> Result<()> {
        self.inner.write_batch(batch, buf).map_err(PgError::Encode)
    }
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
    send_buffer: usize,
    timeout: Duration,
) -> Result<u64> {
    let work = async {
        let mut copy =
            conn.copy_in_raw(statement).await.map_err(|e| PgError::db("starting COPY", table, e))?;
        let mut buf = BytesMut::with_capacity(send_buffer + send_buffer / 4);
        buf.extend_from_slice(HEADER);
        for batch in batches {
            let mut offset = 0;
            while offset < batch.num_rows() {
                let n = SLICE_ROWS.min(batch.num_rows() - offset);
                encoder.encode(&batch.slice(offset, n), &mut buf)?;
                offset += n;
                if buf.len() >= send_buffer {
                    copy.send(&buf[..]).await.map_err(|e| PgError::db("sending COPY data", table, e))?;
                    buf.clear();
                }
            }
        }
        buf.extend_from_slice(&TRAILER);
        copy.send(&buf[..]).await.map_err(|e| PgError::db("sending COPY data", table, e))?;
        copy.finish().await.map_err(|e| PgError::db("finishing COPY", table, e))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(PgError::Timeout { action: "COPY", seconds: timeout.as_secs_f64() }),
    }
}

//! The byte pipe: `COPY ... TO STDOUT (FORMAT binary)` on the source streamed straight into
//! `COPY ... FROM STDIN (FORMAT binary)` on the target, through `etlkit-postgres`'s one COPY-in
//! path ([`copy_in`], fed by [`SourceChunks`]). Nothing is decoded; the stream is only walked
//! to count tuples (for progress, and to check the target loaded exactly what the source sent) and
//! to fingerprint them ([`TupleCounter::fingerprint`]: what the ledger records, so a resumed run can
//! tell whether a finished table's source changed since).
//!
//! Memory is bounded: the reader fills buffers of `chunk_bytes`, at most two wait in a channel while
//! the COPY-in path sends from its own buffer, so a table in flight holds about five chunks whatever
//! its size.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use etlkit_postgres::PgError;
use etlkit_postgres::copy_in::{CopyData, CopyFlow, copy_in};
use futures::StreamExt;
use sqlx::PgConnection;
use tokio::sync::mpsc;

use crate::error::{ReplicationError, Result, db};

/// Counts and fingerprints tuples in a binary COPY stream fed in arbitrary pieces.
#[derive(Debug, Clone)]
pub(crate) struct TupleCounter {
    state: State,
    acc: [u8; 19],
    have: usize,
    fields_left: i32,
    tuples: u64,
    /// The hash of the tuple being read.
    current: Option<TupleHash>,
    /// The sum of the finished tuples' hashes.
    sum: u128,
}

/// A 64-bit hash of one tuple's bytes (its field count, and every field's length and bytes), the
/// same however the bytes are split into pieces. Not cryptographic: it detects changes, it does
/// not resist someone crafting a collision.
#[derive(Debug, Clone, Copy)]
struct TupleHash {
    state: u64,
    /// Up to 7 bytes not yet mixed in, little-endian.
    pending: u64,
    pending_len: u32,
    len: u64,
}

impl TupleHash {
    const SEED: u64 = 0x6574_6c6b_6974_2d31; // "etlkit-1"
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    fn new() -> Self {
        TupleHash { state: Self::SEED, pending: 0, pending_len: 0, len: 0 }
    }

    fn mix(&mut self, word: u64) {
        self.state = (self.state ^ word).wrapping_mul(Self::K).rotate_left(29);
    }

    fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        while self.pending_len > 0 && !data.is_empty() {
            self.pending |= u64::from(data[0]) << (8 * self.pending_len);
            self.pending_len += 1;
            data = &data[1..];
            if self.pending_len == 8 {
                let word = std::mem::take(&mut self.pending);
                self.pending_len = 0;
                self.mix(word);
            }
        }
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            self.mix(u64::from_le_bytes(w.try_into().expect("8 bytes")));
        }
        for &b in words.remainder() {
            self.pending |= u64::from(b) << (8 * self.pending_len);
            self.pending_len += 1;
        }
    }

    fn finish(mut self) -> u64 {
        if self.pending_len > 0 {
            let word = self.pending;
            self.mix(word);
        }
        // splitmix64's finalizer over the state and the length.
        let mut z = self.state ^ self.len.wrapping_mul(Self::K);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Gathering the 19-byte fixed header.
    Header,
    /// Gathering a tuple's int16 field count.
    FieldCount,
    /// Gathering a field's int32 length.
    FieldLength,
    /// Skipping `n` bytes, then going to the next state.
    Skip(u64, Next),
    /// The trailer (-1) was seen.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    FieldCount,
    FieldLength,
}

const SIGNATURE: &[u8; 11] = b"PGCOPY\n\xff\r\n\0";

impl Default for TupleCounter {
    fn default() -> Self {
        TupleCounter {
            state: State::Header,
            acc: [0; 19],
            have: 0,
            fields_left: 0,
            tuples: 0,
            current: None,
            sum: 0,
        }
    }
}

impl TupleCounter {
    /// Tuples seen so far.
    pub(super) fn tuples(&self) -> u64 {
        self.tuples
    }

    /// Whether the trailer was seen.
    pub(super) fn finished(&self) -> bool {
        self.state == State::Done
    }

    /// The tuples' content fingerprint, once the trailer was seen: the sum of every tuple's 64-bit
    /// hash, in hexadecimal — independent of tuple order, and a tuple that appears twice counts
    /// twice. Two streams of the same columns have equal fingerprints (and tuple counts) when they
    /// hold the same tuples, barring a hash collision.
    pub(super) fn fingerprint(&self) -> String {
        format!("{:032x}", self.sum)
    }

    /// Walks `data`. Errors describe a malformed stream.
    pub(super) fn feed(&mut self, mut data: &[u8]) -> std::result::Result<(), String> {
        while !data.is_empty() {
            match self.state {
                State::Done => return Err(format!("{} bytes after the trailer", data.len())),
                State::Skip(n, next) => {
                    let k = (n.min(data.len() as u64)) as usize;
                    if let Some(h) = &mut self.current {
                        h.update(&data[..k]);
                    }
                    data = &data[k..];
                    let left = n - k as u64;
                    self.state = if left > 0 {
                        State::Skip(left, next)
                    } else {
                        match next {
                            Next::FieldCount => State::FieldCount,
                            Next::FieldLength => State::FieldLength,
                        }
                    };
                }
                State::Header | State::FieldCount | State::FieldLength => {
                    let need = match self.state {
                        State::Header => 19,
                        State::FieldCount => 2,
                        _ => 4,
                    };
                    // Fast path: the whole integer is in `data`.
                    let take = (need - self.have).min(data.len());
                    self.acc[self.have..self.have + take].copy_from_slice(&data[..take]);
                    self.have += take;
                    data = &data[take..];
                    if self.have < need {
                        continue;
                    }
                    self.have = 0;
                    self.complete()?;
                }
            }
        }
        Ok(())
    }

    fn complete(&mut self) -> std::result::Result<(), String> {
        match self.state {
            State::Header => {
                if &self.acc[..11] != SIGNATURE {
                    return Err("missing binary COPY signature".into());
                }
                let ext = u32::from_be_bytes([self.acc[15], self.acc[16], self.acc[17], self.acc[18]]);
                self.state = State::Skip(u64::from(ext), Next::FieldCount);
            }
            State::FieldCount => {
                // The previous tuple ends where the next field count (or the trailer) starts.
                if let Some(h) = self.current.take() {
                    self.sum += u128::from(h.finish());
                }
                let n = i16::from_be_bytes([self.acc[0], self.acc[1]]);
                if n >= 0 {
                    let mut h = TupleHash::new();
                    h.update(&self.acc[..2]);
                    self.current = Some(h);
                }
                match n {
                    -1 => self.state = State::Done,
                    n if n < 0 => return Err(format!("negative field count {n}")),
                    0 => self.tuples += 1,
                    n => {
                        self.tuples += 1;
                        self.fields_left = i32::from(n);
                        self.state = State::FieldLength;
                    }
                }
            }
            State::FieldLength => {
                if let Some(h) = &mut self.current {
                    h.update(&self.acc[..4]);
                }
                let len = i32::from_be_bytes([self.acc[0], self.acc[1], self.acc[2], self.acc[3]]);
                self.fields_left -= 1;
                let next = if self.fields_left == 0 { Next::FieldCount } else { Next::FieldLength };
                if len < -1 {
                    return Err(format!("invalid field length {len}"));
                }
                self.state = State::Skip(len.max(0) as u64, next);
            }
            State::Skip(..) | State::Done => unreachable!("complete() only after gathering an integer"),
        }
        Ok(())
    }
}

/// What the pipe moved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Moved {
    pub rows: u64,
    pub bytes: u64,
    pub messages: u64,
    /// [`TupleCounter::fingerprint`] of the tuples.
    pub fingerprint: String,
}

/// What the source side hands the target side: a chunk of the COPY stream (with the tuples
/// counted up to its end), or the end of a complete stream.
enum Piece {
    Chunk(Bytes, u64),
    End,
}

/// [`CopyData`] for `etlkit-postgres`'s COPY-in path: the chunks of the source's `COPY TO STDOUT`
/// stream as the reader hands them over, forwarded unchanged (header and trailer included). The
/// channel closing before [`Piece::End`] (the reader failed) is an error, so the target's COPY is
/// aborted instead of finished with part of the rows.
struct SourceChunks<'a> {
    rx: mpsc::Receiver<Piece>,
    /// Tuples and bytes handed to the COPY so far.
    rows: u64,
    bytes: u64,
    copy_out: &'a str,
    interval: Duration,
    last: Instant,
    progress: &'a mut (dyn FnMut(u64, u64) + Send),
}

impl CopyData for SourceChunks<'_> {
    async fn fill(&mut self, buf: &mut BytesMut, _want: usize) -> etlkit_postgres::Result<bool> {
        // Everything handed over before was sent (copy_in fills again only after sending).
        if self.rows > 0 && self.last.elapsed() >= self.interval {
            (self.progress)(self.rows, self.bytes);
            self.last = Instant::now();
        }
        match self.rx.recv().await {
            // Each chunk but the last holds at least `chunk_bytes` (= `want`).
            Some(Piece::Chunk(chunk, rows)) => {
                buf.extend_from_slice(&chunk);
                self.bytes += chunk.len() as u64;
                self.rows = rows;
                Ok(true)
            }
            Some(Piece::End) => Ok(false),
            // The reader failed; its error is the one reported.
            None => Err(PgError::Decode {
                query: self.copy_out.to_owned(),
                reason: "the source's COPY stream stopped before its end".into(),
            }),
        }
    }
}

/// Streams `copy_out` on `source` into `copy_in_sql` on `target` (both connections already inside
/// their transactions) through `etlkit-postgres`'s COPY-in path, in messages of `chunk_bytes`.
/// Reading and sending overlap: the reader fills chunks of `chunk_bytes`, at most two wait while
/// one is sent. `progress(rows, bytes)` is called at most every `interval` while data moves.
/// Returns what the target's `COPY` reported, checked against the tuples the source sent.
///
/// On error the target's COPY is aborted (or the connection is broken); the caller rolls back.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn pipe(
    source: &mut PgConnection,
    copy_out: &str,
    target: &mut PgConnection,
    copy_in_sql: &str,
    table: &str,
    chunk_bytes: usize,
    interval: Duration,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Moved> {
    let (tx, rx) = mpsc::channel::<Piece>(2);

    let read = async move {
        let mut reader =
            source.copy_out_raw(copy_out).await.map_err(|e| db("starting COPY TO STDOUT", table, e))?;
        let mut counter = TupleCounter::default();
        let mut buf = BytesMut::with_capacity(chunk_bytes);
        while let Some(piece) = reader.next().await {
            let piece = piece.map_err(|e| db("reading COPY TO STDOUT from the source", table, e))?;
            counter.feed(&piece).map_err(|reason| stream_error(table, reason))?;
            buf.extend_from_slice(&piece);
            if buf.len() >= chunk_bytes {
                let full = std::mem::replace(&mut buf, BytesMut::with_capacity(chunk_bytes)).freeze();
                if tx.send(Piece::Chunk(full, counter.tuples())).await.is_err() {
                    // The target side failed; its error is the one to report.
                    return Ok(None);
                }
            }
        }
        if !counter.finished() {
            return Err(stream_error(table, "the stream ended without its trailer".into()));
        }
        if !buf.is_empty() {
            let _ = tx.send(Piece::Chunk(buf.freeze(), counter.tuples())).await;
        }
        let _ = tx.send(Piece::End).await;
        Ok::<_, ReplicationError>(Some(counter))
    };

    let messages = AtomicU64::new(0);
    let mut flow = CopyFlow::new(chunk_bytes);
    flow.messages = Some(&messages);
    let write = async {
        // Owned here, so the channel closes (and the reader stops) as soon as the COPY ends.
        let mut data =
            SourceChunks { rx, rows: 0, bytes: 0, copy_out, interval, last: Instant::now(), progress };
        let mut buf = BytesMut::new();
        let loaded = copy_in(target, copy_in_sql, table, &mut data, &mut buf, &flow).await;
        (loaded, data.bytes)
    };

    let (read, (loaded, bytes)) = futures::join!(read, write);
    let counter = read?;
    let loaded = loaded?;
    let Some(counter) = counter else {
        return Err(stream_error(table, "the target stopped reading before the end of the stream".into()));
    };
    if loaded != counter.tuples() {
        return Err(stream_error(
            table,
            format!("the source sent {} tuples but the target loaded {loaded}", counter.tuples()),
        ));
    }
    Ok(Moved { rows: loaded, bytes, messages: messages.into_inner(), fingerprint: counter.fingerprint() })
}

fn stream_error(table: &str, reason: String) -> ReplicationError {
    ReplicationError::CopyStream { table: table.to_owned(), reason }
}

/// Reads `copy_out` on `source` (inside its transaction) to the end, sending nothing anywhere;
/// returns the tuple count and [`TupleCounter::fingerprint`].
pub(crate) async fn fingerprint(
    source: &mut PgConnection,
    copy_out: &str,
    table: &str,
) -> Result<(u64, String)> {
    let mut reader =
        source.copy_out_raw(copy_out).await.map_err(|e| db("starting COPY TO STDOUT", table, e))?;
    let mut counter = TupleCounter::default();
    while let Some(piece) = reader.next().await {
        let piece = piece.map_err(|e| db("reading COPY TO STDOUT from the source", table, e))?;
        counter.feed(&piece).map_err(|reason| stream_error(table, reason))?;
    }
    if !counter.finished() {
        return Err(stream_error(table, "the stream ended without its trailer".into()));
    }
    Ok((counter.tuples(), counter.fingerprint()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(rows: &[&[Option<&[u8]>]]) -> Vec<u8> {
        let mut v = SIGNATURE.to_vec();
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&4u32.to_be_bytes());
        v.extend_from_slice(b"abcd"); // header extension
        for r in rows {
            v.extend_from_slice(&(r.len() as i16).to_be_bytes());
            for f in *r {
                match f {
                    Some(b) => {
                        v.extend_from_slice(&(b.len() as i32).to_be_bytes());
                        v.extend_from_slice(b);
                    }
                    None => v.extend_from_slice(&(-1i32).to_be_bytes()),
                }
            }
        }
        v.extend_from_slice(&(-1i16).to_be_bytes());
        v
    }

    #[test]
    fn counts_tuples_whatever_the_split() {
        let data = stream(&[&[Some(b"12345678"), None], &[Some(b""), Some(b"xyz")], &[], &[None, None]]);
        for piece in 1..data.len() {
            let mut c = TupleCounter::default();
            for chunk in data.chunks(piece) {
                c.feed(chunk).unwrap();
            }
            assert!(c.finished(), "piece {piece}");
            assert_eq!(c.tuples(), 4, "piece {piece}");
        }
        let whole = {
            let mut c = TupleCounter::default();
            c.feed(&data).unwrap();
            c.fingerprint()
        };
        for piece in 1..data.len() {
            let mut c = TupleCounter::default();
            for chunk in data.chunks(piece) {
                c.feed(chunk).unwrap();
            }
            assert_eq!(c.fingerprint(), whole, "piece {piece}");
        }
        let mut c = TupleCounter::default();
        assert!(c.feed(b"NOTCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0").is_err());
        let mut c = TupleCounter::default();
        let mut trailing = data.clone();
        trailing.push(0);
        assert!(c.feed(&trailing).is_err());
    }

    #[test]
    fn fingerprints_ignore_tuple_order_and_see_every_change() {
        let fp = |rows: &[&[Option<&[u8]>]]| {
            let mut c = TupleCounter::default();
            c.feed(&stream(rows)).unwrap();
            c.fingerprint()
        };
        let long = [7u8; 100];
        let base = fp(&[&[Some(b"12345678"), None], &[Some(&long), Some(b"x")], &[]]);
        assert_eq!(base, fp(&[&[], &[Some(&long), Some(b"x")], &[Some(b"12345678"), None]]));
        let mut changed_long = long;
        changed_long[99] = 8;
        for other in [
            fp(&[&[Some(b"12345679"), None], &[Some(&long), Some(b"x")], &[]]),
            fp(&[&[Some(b"12345678"), Some(b"")], &[Some(&long), Some(b"x")], &[]]),
            fp(&[&[Some(b"12345678"), None], &[Some(&changed_long), Some(b"x")], &[]]),
            fp(&[&[Some(b"12345678"), None], &[Some(&long), Some(b"x")]]),
            fp(&[&[Some(b"12345678"), None], &[Some(&long), Some(b"x")], &[], &[]]),
            // Values moved between columns of a row, and between rows.
            fp(&[&[None, Some(b"12345678")], &[Some(&long), Some(b"x")], &[]]),
            fp(&[&[Some(b"12345678"), Some(b"x")], &[Some(&long), None], &[]]),
        ] {
            assert_ne!(other, base);
        }
    }
}

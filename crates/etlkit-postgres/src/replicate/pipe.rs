//! The byte pipe: `COPY ... TO STDOUT (FORMAT binary)` on the source streamed straight into
//! `COPY ... FROM STDIN (FORMAT binary)` on the target. Nothing is decoded; the stream is only walked
//! to count tuples (for progress, and to check the target loaded exactly what the source sent).
//!
//! Memory is bounded: the reader fills buffers of `chunk_bytes`, at most two wait in a channel while
//! the writer sends one, so a table in flight holds about four chunks whatever its size.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use sqlx::PgConnection;

use crate::error::{PgError, Result};

/// Counts tuples in a binary COPY stream fed in arbitrary pieces.
#[derive(Debug, Clone)]
pub(crate) struct TupleCounter {
    state: State,
    acc: [u8; 19],
    have: usize,
    fields_left: i32,
    tuples: u64,
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
        TupleCounter { state: State::Header, acc: [0; 19], have: 0, fields_left: 0, tuples: 0 }
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

    /// Walks `data`. Errors describe a malformed stream.
    pub(super) fn feed(&mut self, mut data: &[u8]) -> std::result::Result<(), String> {
        while !data.is_empty() {
            match self.state {
                State::Done => return Err(format!("{} bytes after the trailer", data.len())),
                State::Skip(n, next) => {
                    let k = (n.min(data.len() as u64)) as usize;
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
                let n = i16::from_be_bytes([self.acc[0], self.acc[1]]);
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Moved {
    pub rows: u64,
    pub bytes: u64,
    pub messages: u64,
}

/// Streams `copy_out` on `source` into `copy_in` on `target` (both connections already inside their
/// transactions). `progress(rows, bytes, done)` is called at most every `interval` while data moves.
/// Returns what the target's `COPY` reported, checked against the tuples the source sent.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn pipe(
    source: &mut PgConnection,
    copy_out: &str,
    target: &mut PgConnection,
    copy_in: &str,
    table: &str,
    chunk_bytes: usize,
    interval: Duration,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Moved> {
    let mut writer =
        target.copy_in_raw(copy_in).await.map_err(|e| PgError::db("starting COPY FROM STDIN", table, e))?;
    let mut reader =
        source.copy_out_raw(copy_out).await.map_err(|e| PgError::db("starting COPY TO STDOUT", table, e))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Bytes, u64)>(2);

    let read = async move {
        let mut counter = TupleCounter::default();
        let mut buf = BytesMut::with_capacity(chunk_bytes);
        while let Some(piece) = reader.next().await {
            let piece = piece.map_err(|e| PgError::db("reading COPY TO STDOUT from the source", table, e))?;
            counter.feed(&piece).map_err(|reason| PgError::Decode { query: copy_out.to_owned(), reason })?;
            buf.extend_from_slice(&piece);
            if buf.len() >= chunk_bytes {
                let full = std::mem::replace(&mut buf, BytesMut::with_capacity(chunk_bytes)).freeze();
                if tx.send((full, counter.tuples())).await.is_err() {
                    // The writer failed; its error is the one to report.
                    return Ok(counter);
                }
            }
        }
        if !buf.is_empty() {
            let _ = tx.send((buf.freeze(), counter.tuples())).await;
        }
        if !counter.finished() {
            return Err(PgError::Decode {
                query: copy_out.to_owned(),
                reason: "stream ended without trailer".into(),
            });
        }
        Ok::<_, PgError>(counter)
    };

    let write = async {
        let mut moved = Moved::default();
        let mut last = Instant::now();
        while let Some((chunk, rows)) = rx.recv().await {
            moved.bytes += chunk.len() as u64;
            moved.messages += 1;
            moved.rows = rows;
            writer.send(chunk).await.map_err(|e| PgError::db("COPY FROM STDIN into the target", table, e))?;
            if last.elapsed() >= interval {
                progress(moved.rows, moved.bytes);
                last = Instant::now();
            }
        }
        Ok::<_, PgError>((writer, moved))
    };

    let (counter, (writer, mut moved)) = futures::try_join!(read, write)?;
    let loaded = writer.finish().await.map_err(|e| PgError::db("finishing COPY FROM STDIN", table, e))?;
    if loaded != counter.tuples() {
        return Err(PgError::Decode {
            query: copy_out.to_owned(),
            reason: format!("source sent {} tuples but the target loaded {loaded}", counter.tuples()),
        });
    }
    moved.rows = loaded;
    Ok(moved)
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
        let mut c = TupleCounter::default();
        assert!(c.feed(b"NOTCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0").is_err());
        let mut c = TupleCounter::default();
        let mut trailing = data.clone();
        trailing.push(0);
        assert!(c.feed(&trailing).is_err());
    }
}

//! [`RowHasher`]: canonical row bytes → 32-byte SHA-256 or BLAKE3 digests, in parallel.

use std::cell::RefCell;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use arrow_array::{ArrayRef, FixedSizeBinaryArray, RecordBatch};
use arrow_buffer::Buffer;
use rayon::prelude::*;
use sha2::Digest as _;

use crate::encoding::{Arena, ColumnEncoder, Slots, check_supported, column_encoder};
use crate::error::HashError;

/// Length of every row digest, in bytes.
pub const DIGEST_LEN: usize = 32;

/// Rows per unit of parallel work (rayon task).
const CHUNK_ROWS: usize = 1024;

/// Rows encoded, then hashed, at a time within a unit of work: small enough that the encoding buffer
/// (~100–200 bytes per row for typical tables) stays in cache between the column passes.
const ENCODE_ROWS: usize = 128;

/// Encoding buffer size a thread keeps between chunks even when a chunk needed less (4 MiB).
const RETAIN_BYTES: usize = 4 << 20;

/// The hash function applied to a row's canonical bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Algorithm {
    /// SHA-256 (FIPS 180-4). Uses the CPU's SHA extensions (x86 SHA-NI, ARMv8 SHA2) when present,
    /// detected at run time. The default: universally available, and with SHA-NI the faster of the two
    /// for rows under a few hundred bytes.
    #[default]
    Sha256,
    /// BLAKE3, unkeyed, 32-byte output.
    Blake3,
}

impl Algorithm {
    /// The lowercase name: `sha256` or `blake3`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Blake3 => "blake3",
        }
    }

    /// The digest of `bytes` (one-shot, for callers hashing canonical bytes themselves).
    pub fn digest(self, bytes: &[u8]) -> [u8; DIGEST_LEN] {
        match self {
            Algorithm::Sha256 => sha2::Sha256::digest(bytes).into(),
            Algorithm::Blake3 => *blake3::hash(bytes).as_bytes(),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = HashError;
    fn from_str(s: &str) -> Result<Self, HashError> {
        match s.to_ascii_lowercase().as_str() {
            "sha256" | "sha-256" => Ok(Algorithm::Sha256),
            "blake3" => Ok(Algorithm::Blake3),
            _ => Err(HashError::InvalidConfig {
                field: "algorithm",
                reason: format!("unknown algorithm {s:?}; expected sha256 or blake3"),
            }),
        }
    }
}

/// Per-thread scratch reused across chunks and batches: no allocation per row.
#[derive(Default)]
struct Scratch {
    buf: Vec<u8>,
    starts: Vec<usize>,
    cursors: Vec<usize>,
    arenas: Vec<Arena>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Computes row digests over a fixed, ordered list of columns (see `docs/row-hash.md`).
///
/// Digests depend only on the logical values of the selected columns in the selected order, never on
/// Arrow physical types, batch boundaries or thread counts. Hashing runs in parallel across row ranges
/// on the current rayon pool (wrap the call in `ThreadPool::install` to choose the pool).
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{Int32Array, Int64Array, RecordBatch, StringArray};
/// use etlkit_hash::{Algorithm, RowHasher};
///
/// let a = RecordBatch::try_from_iter([
///     ("id", Arc::new(Int64Array::from(vec![7, 8])) as _),
///     ("name", Arc::new(StringArray::from(vec!["ab", "cd"])) as _),
/// ])?;
/// // Same logical values, different physical type: same digest.
/// let b = RecordBatch::try_from_iter([
///     ("name", Arc::new(StringArray::from(vec!["ab"])) as _),
///     ("id", Arc::new(Int32Array::from(vec![7])) as _),
/// ])?;
/// let hasher = RowHasher::new(Algorithm::Sha256, ["id", "name"]);
/// let ha = hasher.hash_batch(&a)?;
/// let hb = hasher.hash_batch(&b)?;
/// assert_eq!(ha.value(0), hb.value(0));
/// assert_ne!(ha.value(0), ha.value(1));
/// // The canonical bytes are specified exactly: 11 07 | 40 02 61 62.
/// assert_eq!(hasher.canonical_bytes(&b)?[0], [0x11, 0x07, 0x40, 0x02, 0x61, 0x62]);
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowHasher {
    algorithm: Algorithm,
    columns: Arc<[String]>,
}

impl RowHasher {
    /// A hasher over `columns`, in this order. An empty list means every column of the batch, in
    /// schema order.
    pub fn new<I, S>(algorithm: Algorithm, columns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RowHasher { algorithm, columns: columns.into_iter().map(Into::into).collect() }
    }

    /// A hasher over every column of the batch, in schema order.
    pub fn all_columns(algorithm: Algorithm) -> Self {
        Self::new(algorithm, Vec::<String>::new())
    }

    /// The hash function.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The configured columns (empty = all).
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// Checks that every configured column exists in `schema` and has a supported type.
    pub fn check_schema(&self, schema: &arrow_schema::Schema) -> Result<(), HashError> {
        let fields: Vec<&arrow_schema::Field> = if self.columns.is_empty() {
            schema.fields().iter().map(|f| f.as_ref()).collect()
        } else {
            self.columns
                .iter()
                .map(|c| schema.field_with_name(c).map_err(|_| not_found(c, schema)))
                .collect::<Result<_, _>>()?
        };
        if fields.is_empty() {
            return Err(HashError::InvalidConfig {
                field: "columns",
                reason: "the batch has no columns to hash".into(),
            });
        }
        for f in fields {
            if !check_supported(f.data_type()) {
                return Err(HashError::UnsupportedType {
                    column: f.name().clone(),
                    data_type: f.data_type().clone(),
                });
            }
        }
        Ok(())
    }

    fn selected<'b>(&self, batch: &'b RecordBatch) -> Result<Vec<(&'b ArrayRef, String)>, HashError> {
        let schema = batch.schema_ref();
        if self.columns.is_empty() {
            if batch.num_columns() == 0 {
                return Err(HashError::InvalidConfig {
                    field: "columns",
                    reason: "the batch has no columns to hash".into(),
                });
            }
            return Ok(batch
                .columns()
                .iter()
                .zip(schema.fields())
                .map(|(a, f)| (a, f.name().clone()))
                .collect());
        }
        self.columns
            .iter()
            .map(|c| {
                let idx = schema.index_of(c).map_err(|_| not_found(c, schema))?;
                Ok((batch.column(idx), c.clone()))
            })
            .collect()
    }

    /// The 32-byte digest of every row of `batch`, as a non-null `FixedSizeBinary(32)` array in row
    /// order.
    pub fn hash_batch(&self, batch: &RecordBatch) -> Result<FixedSizeBinaryArray, HashError> {
        let mut out = vec![0u8; batch.num_rows() * DIGEST_LEN];
        self.hash_into(batch, &mut out)?;
        Ok(FixedSizeBinaryArray::new(DIGEST_LEN as i32, Buffer::from_vec(out), None))
    }

    /// Writes the digest of every row of `batch` into `out` (`num_rows * 32` bytes, row `i` at
    /// `out[32 * i..32 * (i + 1)]`).
    pub fn hash_into(&self, batch: &RecordBatch, out: &mut [u8]) -> Result<(), HashError> {
        let n = batch.num_rows();
        if out.len() != n * DIGEST_LEN {
            return Err(HashError::InvalidConfig {
                field: "out",
                reason: format!("buffer holds {} bytes, {} rows need {}", out.len(), n, n * DIGEST_LEN),
            });
        }
        let selected = self.selected(batch)?;
        let encoders =
            selected.iter().map(|(a, name)| column_encoder(a, name, 0)).collect::<Result<Vec<_>, _>>()?;
        let algorithm = self.algorithm;
        let work = |(chunk, out): (usize, &mut [u8])| {
            let start = chunk * CHUNK_ROWS;
            let rows = start..start + out.len() / DIGEST_LEN;
            SCRATCH.with_borrow_mut(|s| {
                // encode + hash in small sub-chunks so the encoding buffer stays in L1/L2 cache
                for (i, out) in out.chunks_mut(ENCODE_ROWS * DIGEST_LEN).enumerate() {
                    let from = rows.start + i * ENCODE_ROWS;
                    encode_chunk(&encoders, from..from + out.len() / DIGEST_LEN, s)?;
                    hash_chunk(algorithm, s, out);
                }
                Ok(())
            })
        };
        if n <= CHUNK_ROWS {
            work((0, out))
        } else {
            out.par_chunks_mut(CHUNK_ROWS * DIGEST_LEN).enumerate().try_for_each(work)
        }
    }

    /// The canonical bytes of every row (one `Vec` per row). For inspection, tests and other
    /// implementations; [`hash_batch`](Self::hash_batch) never materialises these.
    pub fn canonical_bytes(&self, batch: &RecordBatch) -> Result<Vec<Vec<u8>>, HashError> {
        let selected = self.selected(batch)?;
        let encoders =
            selected.iter().map(|(a, name)| column_encoder(a, name, 0)).collect::<Result<Vec<_>, _>>()?;
        let mut s = Scratch::default();
        let mut rows = Vec::with_capacity(batch.num_rows());
        let mut start = 0;
        while start < batch.num_rows() {
            let end = (start + CHUNK_ROWS).min(batch.num_rows());
            encode_chunk(&encoders, start..end, &mut s)?;
            for r in 0..end - start {
                rows.push(s.buf[s.starts[r]..s.cursors[r]].to_vec());
            }
            start = end;
        }
        Ok(rows)
    }
}

fn not_found(column: &str, schema: &arrow_schema::Schema) -> HashError {
    HashError::ColumnNotFound {
        column: column.to_string(),
        available: schema.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>().join(", "),
    }
}

/// Encodes `rows` into `s.buf`; row `r` (relative) ends up in `s.buf[s.starts[r]..s.cursors[r]]`.
fn encode_chunk(
    encoders: &[Box<dyn ColumnEncoder + '_>],
    rows: std::ops::Range<usize>,
    s: &mut Scratch,
) -> Result<(), HashError> {
    let n = rows.len();
    let fixed: usize = encoders.iter().map(|e| e.fixed_bound()).sum();
    s.starts.clear();
    s.starts.resize(n, fixed);
    if s.arenas.len() < encoders.len() {
        s.arenas.resize_with(encoders.len(), Arena::default);
    }
    for (e, arena) in encoders.iter().zip(s.arenas.iter_mut()) {
        e.add_var_bounds(rows.clone(), &mut s.starts, arena)?;
    }
    // bounds -> start offsets (exclusive prefix sum)
    let mut total = 0;
    for b in s.starts.iter_mut() {
        let len = *b;
        *b = total;
        total += len;
    }
    if s.buf.len() < total {
        s.buf.resize(total, 0);
    } else if s.buf.len() > RETAIN_BYTES && s.buf.len() > 4 * total {
        // one chunk of huge values must not pin a huge buffer to this thread forever
        s.buf.truncate(total.max(RETAIN_BYTES));
        s.buf.shrink_to_fit();
    }
    s.cursors.clear();
    s.cursors.extend_from_slice(&s.starts);
    let mut slots = Slots { buf: &mut s.buf, cursors: &mut s.cursors };
    for (e, arena) in encoders.iter().zip(s.arenas.iter()) {
        e.encode(rows.clone(), &mut slots, arena)?;
    }
    Ok(())
}

fn hash_chunk(algorithm: Algorithm, s: &Scratch, out: &mut [u8]) {
    let rows = s.starts.iter().zip(&s.cursors).zip(out.chunks_exact_mut(DIGEST_LEN));
    match algorithm {
        Algorithm::Sha256 => {
            for ((&a, &b), o) in rows {
                sha256_into(&s.buf[a..b], o);
            }
        }
        Algorithm::Blake3 => {
            for ((&a, &b), o) in rows {
                o.copy_from_slice(blake3::hash(&s.buf[a..b]).as_bytes());
            }
        }
    }
}

/// SHA-256 initial hash value (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] =
    [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// SHA-256 of `msg` into `out` (32 bytes), calling the `sha2` crate's block function (SHA-NI when
/// available) directly with the FIPS 180-4 padding built on the stack: for short rows this skips the
/// streaming `Digest` machinery (~10% of the per-row cost). Equal to `sha2::Sha256::digest` (tested).
#[inline]
fn sha256_into(msg: &[u8], out: &mut [u8]) {
    let mut state = SHA256_IV;
    let (blocks, tail) = msg.as_chunks::<64>();
    if !blocks.is_empty() {
        sha2::block_api::compress256(&mut state, blocks);
    }
    let mut last = [[0u8; 64]; 2];
    let flat = last.as_flattened_mut();
    flat[..tail.len()].copy_from_slice(tail);
    flat[tail.len()] = 0x80;
    let n = if tail.len() < 56 { 1 } else { 2 };
    flat[n * 64 - 8..n * 64].copy_from_slice(&(msg.len() as u64 * 8).to_be_bytes());
    sha2::block_api::compress256(&mut state, &last[..n]);
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
}

/// Lowercase hex of a digest (64 characters).
pub fn to_hex(digest: &[u8]) -> String {
    let mut s = String::with_capacity(digest.len() * 2);
    for b in digest {
        s.push(char::from(HEX[(b >> 4) as usize]));
        s.push(char::from(HEX[(b & 0xf) as usize]));
    }
    s
}

pub(crate) const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use sha2::Digest as _;

    #[test]
    fn block_level_sha256_equals_the_sha2_digest_for_every_length() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 131 % 251) as u8).collect();
        let mut out = [0u8; 32];
        for len in 0..data.len() {
            super::sha256_into(&data[..len], &mut out);
            assert_eq!(out[..], sha2::Sha256::digest(&data[..len])[..], "length {len}");
        }
    }
}

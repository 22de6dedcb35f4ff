//! # etlkit-hash
//!
//! Row fingerprints for de-duplication, idempotent re-runs and change detection.
//!
//! Each row is turned into canonical bytes by the exact, language-independent specification in
//! `docs/row-hash.md` (`etlkit-row-v1`), then hashed with SHA-256 or BLAKE3 into 32 bytes. Digests depend
//! on logical values only: `Int32 7` and `Int64 7`, `Utf8` and `LargeUtf8`, a timestamp in ms and the
//! same instant in µs all hash the same. Golden vectors produced by an independent Python implementation
//! of the spec are checked in (`tests/golden/`).
//!
//! - [`RowHasher`]: `hash_batch(&RecordBatch)` → `FixedSizeBinary(32)` digests, in parallel (rayon)
//!   across row ranges, with type-specialised column loops and no per-row allocation.
//! - [`RowHashTransform`]: a pipeline [`Transform`](etlkit_core::Transform) appending a `row_hash`
//!   column (binary or lowercase hex).
//! - [`Dedup`]: a stateful transform dropping rows already seen in the run, counted as
//!   de-duplicated; its seen-set can be seeded with digests from an earlier load. With a
//!   [`DigestPartition`] it handles one of `k` ranges of digest space, so `k` passes over the same
//!   input de-duplicate exactly with ~1/`k` of the memory each.
//!
//! ```
//! use std::sync::Arc;
//! use arrow_array::{Int64Array, RecordBatch, StringArray};
//! use etlkit_hash::{Algorithm, RowHasher, to_hex};
//!
//! let batch = RecordBatch::try_from_iter([
//!     ("id", Arc::new(Int64Array::from(vec![7])) as _),
//!     ("name", Arc::new(StringArray::from(vec!["ab"])) as _),
//! ])?;
//! let digests = RowHasher::new(Algorithm::Blake3, ["id", "name"]).hash_batch(&batch)?;
//! assert_eq!(to_hex(digests.value(0)).len(), 64);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```

mod dedup;
mod digest;
mod encoding;
mod error;
mod row_hash;

pub use dedup::{DEDUP_BYTES_PER_ROW, Dedup, DedupConfig, DigestPartition};
pub use digest::{Algorithm, DIGEST_LEN, RowHasher, to_hex};
pub use encoding::value_kind;
pub use error::HashError;
pub use row_hash::{HashFormat, RowHashConfig, RowHashTransform};

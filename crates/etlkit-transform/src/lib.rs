//! # etlkit-transform
//!
//! Reusable CPU transforms for etlkit pipelines (each an [`etlkit_core::Transform`]):
//!
//! - [`DedupByKey`] keeps the first row per key over the whole run and counts the others as
//!   de-duplicated ([`Context::record_deduplicated`](etlkit_core::Context::record_deduplicated)); a
//!   repeat whose other columns differ from the first row's is a *conflicting* duplicate, logged at
//!   `warn` and counted. Keys are compared exactly on their Arrow row encoding, so composite keys
//!   never collide (`("A|B", "C")` and `("A", "B|C")` are two keys).
//! - [`Explode`] turns a list column — a JSON array, or a delimited list such as `a;b;c` — into one
//!   row per element (optionally extracting fields of JSON objects into columns), repeating the other
//!   columns. A malformed list is an error naming origin, row, column and value, or a reject.
//! - [`RowNumbers`] wraps any [`Source`](etlkit_core::Source) and appends a 1-based row-number
//!   column, so errors and rejects further down can say which input row they are about.
//!
//! ```
//! use std::sync::Arc;
//! use arrow_array::{Array, RecordBatch, StringArray, cast::AsArray};
//! use etlkit_core::{Context, Transform};
//! use etlkit_transform::{DedupByKey, Explode, ExplodeConfig, ListFormat};
//!
//! let batch = RecordBatch::try_from_iter([
//!     ("id", Arc::new(StringArray::from(vec!["a", "b", "a"])) as _),
//!     ("tags", Arc::new(StringArray::from(vec!["x;y", "z", "x;y"])) as _),
//! ])?;
//! let ctx = Context::default();
//! let dedup = DedupByKey::new(["id"]);
//! let first = dedup.apply(batch, &ctx)?.remove(0);
//! assert_eq!(first.num_rows(), 2);
//! assert_eq!(ctx.deduplicated(), 1);
//!
//! let explode = Explode::new(ExplodeConfig {
//!     column: "tags".into(),
//!     format: ListFormat::Delimited { delimiter: ";".into() },
//!     element: Some("tag".into()),
//!     ..Default::default()
//! })?;
//! let out = explode.apply(first, &ctx)?.remove(0);
//! let tags = out.column_by_name("tag").unwrap().as_string::<i32>();
//! assert_eq!(tags.iter().flatten().collect::<Vec<_>>(), ["x", "y", "z"]);
//! # Ok::<_, Box<dyn std::error::Error>>(())
//! ```

mod dedup;
mod error;
mod explode;
mod numbers;

pub use dedup::DedupByKey;
pub use error::{Result, TransformError};
pub use explode::{Explode, ExplodeConfig, ExtractField, ListFormat, OnBadList};
pub use numbers::RowNumbers;

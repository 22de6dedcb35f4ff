//! # etlkit-dimcache
//!
//! Star-schema dimension keys without a round trip per row: a [`DimensionCache`] maps natural keys (any
//! number of columns of any comparable Arrow type) to surrogate `i64` keys, resolving a whole batch at
//! once and creating unknown members in bulk through a [`DimensionStore`]. [`StarSchema`] turns source
//! batches into fact batches with those keys, and [`StarSchemaSink`] loads them through any sink.
//!
//! This crate does no I/O: `etlkit-postgres` implements [`DimensionStore`] for PostgreSQL tables
//! (`PgDimensionStore`: identity surrogate key, UNIQUE natural key, bulk `INSERT ... ON CONFLICT DO
//! NOTHING` plus a read-back, safe across processes) and loads rows and facts together in one
//! transaction per batch (`PgStarSink`). `examples/taxi_star.rs` is the full NYC-taxi job.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use arrow_array::{Array, ArrayRef, Int32Array, Int64Array, RecordBatch};
//! use arrow_schema::{DataType, Field};
//! use etlkit_dimcache::{DimensionCache, DimensionSpec, DimensionStore, Result};
//!
//! /// A store keeping members in memory (a real one is a database table).
//! #[derive(Default)]
//! struct InMemory(Mutex<Vec<(i32, i64)>>);
//!
//! #[async_trait::async_trait]
//! impl DimensionStore for InMemory {
//!     async fn prepare(&self, _: &DimensionSpec) -> Result<()> { Ok(()) }
//!     async fn load(&self, _: &DimensionSpec) -> Result<Vec<RecordBatch>> { Ok(vec![]) }
//!     async fn get_or_create(&self, _: &DimensionSpec, m: RecordBatch) -> Result<Int64Array> {
//!         let ids = m.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
//!         let mut rows = self.0.lock().unwrap();
//!         Ok(ids.values().iter().map(|&id| {
//!             match rows.iter().find(|(k, _)| *k == id) {
//!                 Some(&(_, key)) => key,
//!                 None => { let key = rows.len() as i64 + 1; rows.push((id, key)); key }
//!             }
//!         }).collect())
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let spec = DimensionSpec::new("dim_vendor", vec![Field::new("vendor_id", DataType::Int32, false)], "vendor_key");
//! let cache = DimensionCache::open(spec, Arc::new(InMemory::default())).await?;
//! // Int64 input resolves against the Int32 key; NULL goes to the unknown member (-1).
//! let input: ArrayRef = Arc::new(Int64Array::from(vec![Some(7), Some(2), Some(7), None]));
//! let keys = cache.resolve(&[input]).await?;
//! assert_eq!(keys.values().to_vec(), vec![1, 2, 1, -1]);
//! assert_eq!(cache.stats().store_calls, 1); // both new members created in one call
//! # Ok::<_, etlkit_dimcache::DimError>(())
//! # }).unwrap();
//! ```

mod cache;
mod dimension;
mod error;
mod star;

pub use cache::{CacheStats, DimensionCache};
pub use dimension::{DimensionSpec, DimensionStore, NullKeyPolicy};
pub use error::{BoxError, DimError, Result};
pub use star::{FactRole, StarSchema, StarSchemaSink};

//! # etlkit-testkit
//!
//! Throwaway real servers (PostgreSQL, a Bolt server) and test-data generators for etlkit's tests,
//! examples and benches. Dev-dependency only.
//!
//! - [`taxi`]: NYC TLC yellow-trip data (19 columns, TLC 2024 Parquet types), deterministic per seed, with
//!   NULLs and planted duplicates; [`taxi::write_parquet`] / [`taxi::write_csv`] put it in files.

mod error;
pub mod taxi;

pub use error::{BoxError, Error, Result};

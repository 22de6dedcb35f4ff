//! # etlkit-testkit
//!
//! Throwaway real servers (PostgreSQL, a Bolt server) and test-data generators for etlkit's tests,
//! examples and benches. Dev-dependency only.

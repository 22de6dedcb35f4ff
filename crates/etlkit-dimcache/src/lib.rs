//! # etlkit-dimcache
//!
//! Dimension natural-key → surrogate-key resolution for star-schema loads, with no I/O of its own.
//! (The cache arrives with issue 6; this crate currently exposes nothing.)

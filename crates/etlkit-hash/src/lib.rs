//! # etlkit-hash
//!
//! Canonical row encoding and SHA-256 / BLAKE3 row fingerprints for de-duplication, idempotent re-runs
//! and change detection. (The hasher arrives with issue 4; this crate currently exposes nothing.)

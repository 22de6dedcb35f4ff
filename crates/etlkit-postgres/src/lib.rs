//! # etlkit-postgres
//!
//! PostgreSQL for etlkit: a binary-COPY sink, staged upserts, a COPY source and replication, built on
//! sqlx. (The sink arrives with issue 5; this crate currently exposes nothing.)

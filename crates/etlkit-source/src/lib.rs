//! # etlkit-source
//!
//! Streaming readers that turn CSV and Parquet files into Arrow `RecordBatch`es for an etlkit
//! [`Pipeline`](etlkit_core::Pipeline), with bounded memory and errors that name the file, line,
//! column and value. (The readers arrive with issue 3; this crate currently exposes nothing.)

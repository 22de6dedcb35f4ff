//! [`RowHashTransform`]: appends each row's digest as a column.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray};
use arrow_buffer::{Buffer, OffsetBuffer};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use etlkit_core::{Context, Transform, TransformProperties};

use crate::digest::{Algorithm, DIGEST_LEN, HEX, RowHasher};
use crate::error::HashError;

/// How the appended digest column is typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HashFormat {
    /// `FixedSizeBinary(32)`: the raw 32 bytes (compact; `bytea` in PostgreSQL). The default.
    #[default]
    Binary,
    /// `Utf8`: 64 lowercase hexadecimal characters.
    Hex,
}

impl HashFormat {
    /// The Arrow type of the digest column in this format.
    pub fn data_type(self) -> DataType {
        match self {
            HashFormat::Binary => DataType::FixedSizeBinary(DIGEST_LEN as i32),
            HashFormat::Hex => DataType::Utf8,
        }
    }
}

/// Configuration of [`RowHashTransform`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowHashConfig {
    /// Hash function. Default: [`Algorithm::Sha256`].
    pub algorithm: Algorithm,
    /// Columns hashed, in this order. Default: empty = every input column in schema order.
    pub columns: Vec<String>,
    /// Name of the appended column. Default: `row_hash`. Must not already exist in the input.
    pub output_column: String,
    /// Type of the appended column. Default: [`HashFormat::Binary`].
    pub format: HashFormat,
}

impl Default for RowHashConfig {
    fn default() -> Self {
        RowHashConfig {
            algorithm: Algorithm::default(),
            columns: Vec::new(),
            output_column: "row_hash".to_string(),
            format: HashFormat::default(),
        }
    }
}

impl RowHashConfig {
    /// Checks the values that can be checked without a schema.
    pub fn validate(&self) -> Result<(), HashError> {
        if self.output_column.is_empty() {
            return Err(HashError::InvalidConfig {
                field: "output_column",
                reason: "must not be empty".into(),
            });
        }
        if let Some(c) = self.columns.iter().find(|c| **c == self.output_column) {
            return Err(HashError::InvalidConfig {
                field: "columns",
                reason: format!("lists the output column `{c}` itself"),
            });
        }
        Ok(())
    }
}

/// A [`Transform`] that appends the digest of each row as the last column.
///
/// ```
/// use std::sync::Arc;
/// use arrow_array::{Int64Array, RecordBatch, cast::AsArray};
/// use etlkit_core::{Context, Transform};
/// use etlkit_hash::{HashFormat, RowHashConfig, RowHashTransform};
///
/// let t = RowHashTransform::new(RowHashConfig { format: HashFormat::Hex, ..Default::default() })?;
/// let batch = RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![7])) as _)])?;
/// let out = t.apply(batch, &Context::default())?;
/// let hex = out[0].column_by_name("row_hash").unwrap().as_string::<i32>().value(0).to_string();
/// // SHA-256 of the canonical bytes 11 07 (see docs/row-hash.md)
/// assert!(hex.starts_with("d68f7bf845d67f38"));
/// # Ok::<_, Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct RowHashTransform {
    config: RowHashConfig,
    hasher: RowHasher,
}

impl RowHashTransform {
    /// A transform with this configuration (validated).
    pub fn new(config: RowHashConfig) -> Result<Self, HashError> {
        config.validate()?;
        let hasher = RowHasher::new(config.algorithm, config.columns.clone());
        Ok(RowHashTransform { config, hasher })
    }

    /// The configuration.
    pub fn config(&self) -> &RowHashConfig {
        &self.config
    }

    fn output(&self, input: &Schema) -> Result<SchemaRef, HashError> {
        if input.field_with_name(&self.config.output_column).is_ok() {
            return Err(HashError::InvalidConfig {
                field: "output_column",
                reason: format!("`{}` already exists in the input", self.config.output_column),
            });
        }
        self.hasher.check_schema(input)?;
        let mut fields: Vec<_> = input.fields().iter().cloned().collect();
        fields.push(Arc::new(Field::new(&self.config.output_column, self.config.format.data_type(), false)));
        Ok(Arc::new(Schema::new_with_metadata(fields, input.metadata().clone())))
    }

    /// Appends the digest column to one batch.
    pub fn append(&self, batch: &RecordBatch) -> Result<RecordBatch, HashError> {
        let schema = self.output(batch.schema_ref())?;
        let digests = self.hasher.hash_batch(batch)?;
        let column: ArrayRef = match self.config.format {
            HashFormat::Binary => Arc::new(digests),
            HashFormat::Hex => Arc::new(hex_column(digests.value_data(), batch.num_rows())),
        };
        let mut columns = batch.columns().to_vec();
        columns.push(column);
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

/// A `Utf8` array of 64-character lowercase hex strings from `n` packed 32-byte digests.
pub(crate) fn hex_column(digests: &[u8], n: usize) -> StringArray {
    let mut text = Vec::with_capacity(n * DIGEST_LEN * 2);
    for b in &digests[..n * DIGEST_LEN] {
        text.push(HEX[(b >> 4) as usize]);
        text.push(HEX[(b & 0xf) as usize]);
    }
    let offsets = OffsetBuffer::from_lengths(std::iter::repeat_n(DIGEST_LEN * 2, n));
    StringArray::try_new(offsets, Buffer::from_vec(text), None).expect("hex is valid UTF-8")
}

impl Transform for RowHashTransform {
    fn name(&self) -> &str {
        "row-hash"
    }
    fn properties(&self) -> TransformProperties {
        TransformProperties::PARALLEL
    }
    fn output_schema(&self, input: &SchemaRef) -> etlkit_core::Result<SchemaRef> {
        self.output(input).map_err(|e| e.into_core(self.name()))
    }
    fn apply(&self, batch: RecordBatch, _ctx: &Context) -> etlkit_core::Result<Vec<RecordBatch>> {
        Ok(vec![self.append(&batch).map_err(|e| e.into_core(self.name()))?])
    }
}

//! `etlkit_row_hash(col, ...)` and `etlkit_row_hash_blake3(col, ...)`: etlkit's row fingerprint
//! (the `etlkit-row-v1` canonical encoding of docs/row-hash.md, then SHA-256 or BLAKE3) as DataFusion
//! scalar functions.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::error::Result;
use datafusion::execution::FunctionRegistry;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use etlkit_hash::{Algorithm, DIGEST_LEN, RowHasher};

use crate::error::DfError;

/// Name of the SHA-256 row hash function.
pub const ROW_HASH: &str = "etlkit_row_hash";
/// Name of the BLAKE3 row hash function.
pub const ROW_HASH_BLAKE3: &str = "etlkit_row_hash_blake3";

/// A row hash as a scalar function: its arguments, in order, are the row's columns; it returns the
/// 32-byte digest (`FixedSizeBinary(32)`) that [`RowHasher`] returns for a batch of those columns in
/// that order. NULL arguments are part of the row (they do not make the result NULL).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct RowHashUdf {
    name: &'static str,
    algorithm: Algorithm,
    signature: Signature,
}

impl RowHashUdf {
    /// The function for `algorithm`, named [`ROW_HASH`] (SHA-256) or [`ROW_HASH_BLAKE3`].
    pub fn new(algorithm: Algorithm) -> Self {
        let name = match algorithm {
            Algorithm::Blake3 => ROW_HASH_BLAKE3,
            _ => ROW_HASH,
        };
        RowHashUdf { name, algorithm, signature: Signature::variadic_any(Volatility::Immutable) }
    }
}

/// `etlkit_row_hash` (SHA-256) as a DataFusion [`ScalarUDF`].
pub fn row_hash_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(RowHashUdf::new(Algorithm::Sha256))
}

/// `etlkit_row_hash_blake3` as a DataFusion [`ScalarUDF`].
pub fn row_hash_blake3_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(RowHashUdf::new(Algorithm::Blake3))
}

/// Registers both row hash functions (e.g. on a `SessionContext`).
pub fn register_row_hash(registry: &mut dyn FunctionRegistry) -> Result<()> {
    registry.register_udf(Arc::new(row_hash_udf()))?;
    registry.register_udf(Arc::new(row_hash_blake3_udf()))?;
    Ok(())
}

impl ScalarUDFImpl for RowHashUdf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::FixedSizeBinary(DIGEST_LEN as i32))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let arrays = args.args.iter().map(|a| a.to_array(rows)).collect::<Result<Vec<ArrayRef>>>()?;
        let fields: Vec<Field> = arrays
            .iter()
            .enumerate()
            .map(|(i, a)| Field::new(format!("c{i}"), a.data_type().clone(), true))
            .collect();
        let batch = RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|source| DfError::Arrow { what: format!("{} arguments", self.name), source })?;
        let digests = RowHasher::all_columns(self.algorithm).hash_batch(&batch).map_err(DfError::from)?;
        Ok(ColumnarValue::Array(Arc::new(digests)))
    }
}

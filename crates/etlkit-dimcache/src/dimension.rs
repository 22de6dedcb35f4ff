//! [`DimensionSpec`] (what a dimension looks like) and [`DimensionStore`] (where its members live).

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{Field, Schema, SchemaRef};
use async_trait::async_trait;

use crate::error::{DimError, Result};

/// A dimension: its table, natural key, surrogate key and attributes.
///
/// The natural key is one or more columns of any type Arrow can compare (integers, strings, dates,
/// timestamps, decimals, booleans, ...). Input columns are cast to these types before look-up, so an
/// `Int64` column resolves against an `Int32` key with the same values.
#[derive(Debug, Clone, PartialEq)]
pub struct DimensionSpec {
    /// Table name, e.g. `dim_location`.
    pub table: String,
    /// The natural-key columns, in order, with their types. Must be non-empty.
    pub key: Vec<Field>,
    /// Name of the surrogate-key column (`BIGINT`), e.g. `location_key`.
    pub surrogate: String,
    /// Descriptive columns stored with each member (may be empty).
    pub attributes: Vec<Field>,
    /// What a natural key containing NULL resolves to.
    pub null_key: NullKeyPolicy,
}

/// What a natural key containing a NULL resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NullKeyPolicy {
    /// Resolve to the "unknown" member with this surrogate key. The store creates that member (natural
    /// key NULL) when the dimension is prepared, so fact rows keep referential integrity.
    Unknown {
        /// The unknown member's surrogate key. Conventionally `-1`.
        surrogate: i64,
    },
    /// A NULL natural key is an error naming the row.
    Error,
}

impl Default for NullKeyPolicy {
    fn default() -> Self {
        NullKeyPolicy::Unknown { surrogate: -1 }
    }
}

impl DimensionSpec {
    /// A dimension with the given natural key, no attributes and the default NULL policy
    /// (unknown member `-1`).
    pub fn new(table: impl Into<String>, key: Vec<Field>, surrogate: impl Into<String>) -> Self {
        DimensionSpec {
            table: table.into(),
            key,
            surrogate: surrogate.into(),
            attributes: Vec::new(),
            null_key: NullKeyPolicy::default(),
        }
    }

    /// Checks the spec: a non-empty key, and no column name used twice.
    pub fn validate(&self) -> Result<()> {
        if self.key.is_empty() {
            return Err(DimError::InvalidSpec {
                table: self.table.clone(),
                reason: "natural key is empty".into(),
            });
        }
        let mut names: Vec<&str> =
            self.key.iter().chain(&self.attributes).map(|f| f.name().as_str()).collect();
        names.push(&self.surrogate);
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(DimError::InvalidSpec {
                table: self.table.clone(),
                reason: format!("column `{}` appears twice", w[0]),
            });
        }
        Ok(())
    }

    /// The schema of a members batch: key columns (nullable), then attribute columns.
    pub fn members_schema(&self) -> SchemaRef {
        let fields = self.key.iter().chain(&self.attributes).map(|f| f.clone().with_nullable(true));
        Arc::new(Schema::new(fields.collect::<Vec<_>>()))
    }
}

/// Where a dimension's members live (a table in PostgreSQL, for `etlkit-postgres`).
///
/// Implementors MUST:
/// - make [`get_or_create`](DimensionStore::get_or_create) safe under concurrency, from several tasks and
///   several processes at once: each natural key gets exactly one member and every caller gets that
///   member's surrogate key (e.g. a unique constraint plus `INSERT ... ON CONFLICT DO NOTHING` and a
///   read-back);
/// - never change an existing member's surrogate key.
///
/// Implementors SHOULD do each call in one round trip or a few, whatever the number of members.
#[async_trait]
pub trait DimensionStore: Send + Sync {
    /// Creates the dimension's table if missing (natural key unique, surrogate key generated) and the
    /// unknown member if the spec has one.
    async fn prepare(&self, spec: &DimensionSpec) -> Result<()>;

    /// Every member, as batches of [`DimensionSpec::members_schema`] key columns followed by an `Int64`
    /// surrogate column (attributes may be omitted). The unknown member may be included or not.
    async fn load(&self, spec: &DimensionSpec) -> Result<Vec<RecordBatch>>;

    /// For each row of `members` (schema [`DimensionSpec::members_schema`], distinct non-NULL keys),
    /// returns its surrogate key, creating members that do not exist yet. Existing members keep their
    /// attributes.
    async fn get_or_create(&self, spec: &DimensionSpec, members: RecordBatch) -> Result<Int64Array>;
}

//! [`PgError`], the one error type of this crate.

use etlkit_core::Stage;

/// Result alias of this crate.
pub type Result<T, E = PgError> = std::result::Result<T, E>;

/// Everything that can go wrong in `etlkit-postgres`.
///
/// [`PgError::is_retryable`] tells transient failures (a lost connection, a serialization failure, a
/// deadlock, a client-side timeout) from the rest (bad data, bad configuration, missing tables).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// A configuration value is out of range.
    #[error("invalid configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The database or the driver reported an error while doing `action`.
    #[error("PostgreSQL error while {action} on {table}")]
    Database {
        /// What the sink or source was doing, e.g. `COPY into staging table`.
        action: &'static str,
        /// The table (quoted) or query involved.
        table: String,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// The target table does not exist.
    #[error("table {table} does not exist")]
    TableNotFound {
        /// The quoted table name.
        table: String,
    },
    /// A batch column has no column of that name in the target table.
    #[error("column `{column}` of the input has no column of that name in table {table}")]
    UnknownColumn {
        /// The table (quoted).
        table: String,
        /// The Arrow column name.
        column: String,
    },
    /// A column type this crate cannot read or write.
    #[error("column `{column}`: {reason}")]
    UnsupportedType {
        /// The column name.
        column: String,
        /// Which types are involved and why it does not work.
        reason: String,
    },
    /// A value cannot be stored in its target column (out of range, not a UUID, a NUL byte in text,
    /// nanoseconds where the option says reject, ...).
    #[error("{}, column `{column}`: value {value} {reason}", row_label(origin.as_deref(), *row))]
    InvalidValue {
        /// Where the input row came from (`file:line`, or `source:row`), when known: what the
        /// message names.
        origin: Option<String>,
        /// 1-based row number in the order the sink received rows (exact with one worker); named
        /// only when the origin is unknown.
        row: u64,
        /// The column name.
        column: String,
        /// The offending value, rendered.
        value: String,
        /// Why it was refused, e.g. `is out of range for integer`.
        reason: String,
    },
    /// Arrow failed to cast or build a column.
    #[error("arrow error on column `{column}`")]
    Arrow {
        /// The column name.
        column: String,
        /// Arrow's error.
        #[source]
        source: arrow_schema::ArrowError,
    },
    /// The binary COPY encoder (pgpq) refused a batch.
    #[error("encoding binary COPY data")]
    Encode(#[source] pgpq::error::ErrorKind),
    /// The binary COPY stream from the server could not be decoded.
    #[error("decoding binary COPY data from {query}: {reason}")]
    Decode {
        /// The query being read.
        query: String,
        /// What was wrong.
        reason: String,
    },
    /// The server refused a row while loading it (a value too long for its column, a `CHECK` or
    /// `NOT NULL` violation, ...): which input row, column and value.
    #[error("{0}")]
    RowRefused(Box<RefusedRow>),
    /// An operation did not complete within the configured client-side timeout.
    #[error("{action} timed out after {seconds:.1} s")]
    Timeout {
        /// What was running.
        action: &'static str,
        /// The timeout.
        seconds: f64,
    },
    /// A batch's columns differ from those of the schema the sink was started with (a sink plans
    /// which input column goes to which table column once per run).
    #[error("a batch for {table} has columns ({batch}), not the ({planned}) the sink was started with")]
    SchemaChanged {
        /// The target table (quoted).
        table: String,
        /// The columns the sink planned for.
        planned: String,
        /// The batch's columns.
        batch: String,
    },
    /// `write` was called before `start` or after `finish`.
    #[error("sink used out of order: {0}")]
    Lifecycle(&'static str),
}

/// A row the server refused while loading it (see [`PgError::RowRefused`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefusedRow {
    /// Where the input row came from (`file:line`, or `source:row`), when known.
    pub origin: Option<String>,
    /// 1-based row number within the COPY that failed.
    pub row: u64,
    /// The column PostgreSQL named, when it named one.
    pub column: Option<String>,
    /// The value the row had in that column, rendered.
    pub value: Option<String>,
    /// PostgreSQL's message, e.g. `value too long for type character varying(5)`.
    pub message: String,
    /// The SQLSTATE code, e.g. `22001`.
    pub code: Option<String>,
}

impl std::fmt::Display for RefusedRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&row_label(self.origin.as_deref(), self.row))?;
        if let Some(c) = &self.column {
            write!(f, ", column `{c}`: value {}", self.value.as_deref().unwrap_or("?"))?;
        }
        write!(f, ": {}", self.message)
    }
}

impl PgError {
    /// Names the input row of a conversion error by its origin: `row` counts from `first_row` within
    /// the batch `ctx` describes (see `etlkit_core::Context::origin`).
    pub(crate) fn at_origin(self, ctx: &etlkit_core::Context, first_row: u64) -> PgError {
        match self {
            PgError::InvalidValue { origin: None, row, column, value, reason } => PgError::InvalidValue {
                origin: row
                    .checked_sub(first_row)
                    .and_then(|i| ctx.origin(i as usize))
                    .map(|o| o.to_string()),
                row,
                column,
                value,
                reason,
            },
            other => other,
        }
    }
}

/// `file:line` when the row's origin is known, else `row N` (N in the sink's own order).
fn row_label(origin: Option<&str>, row: u64) -> String {
    match origin {
        Some(o) => o.to_owned(),
        None => format!("row {row}"),
    }
}

impl PgError {
    /// Whether running the same unit of work again can succeed: connection loss, serialization
    /// failure, deadlock, server shutdown or admin termination, client-side timeout.
    pub fn is_retryable(&self) -> bool {
        match self {
            PgError::Database { source, .. } => sqlx_is_retryable(source),
            PgError::Timeout { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn db(action: &'static str, table: impl Into<String>, source: sqlx::Error) -> Self {
        PgError::Database { action, table: table.into(), source }
    }
}

/// SQLSTATE classes and codes worth retrying: 08 (connection exception), 40001 (serialization
/// failure), 40P01 (deadlock), 57P01..57P03 (admin shutdown / crash shutdown / cannot connect now),
/// 53300 (too many connections).
fn sqlx_is_retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => {
                code.starts_with("08")
                    || matches!(&*code, "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300")
            }
            None => false,
        },
        _ => false,
    }
}

impl From<PgError> for etlkit_core::Error {
    fn from(e: PgError) -> Self {
        let retryable = e.is_retryable();
        etlkit_core::Error::stage(Stage::Sink, "postgres", retryable, e)
    }
}

impl PgError {
    /// Converts into an [`etlkit_core::Error`] for the given stage and stage name.
    pub fn into_stage(self, stage: Stage, name: impl Into<String>) -> etlkit_core::Error {
        let retryable = self.is_retryable();
        etlkit_core::Error::stage(stage, name, retryable, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_retryable_and_bad_values_are_not() {
        let io = PgError::db(
            "COPY",
            "\"t\"",
            sqlx::Error::Io(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset")),
        );
        assert!(io.is_retryable());
        let core: etlkit_core::Error = io.into();
        assert!(core.is_retryable());
        assert!(core.find_source::<PgError>().is_some());

        let bad = PgError::InvalidValue {
            origin: None,
            row: 3,
            column: "n".into(),
            value: "3000000000".into(),
            reason: "is out of range for integer".into(),
        };
        assert!(!bad.is_retryable());
        assert_eq!(bad.to_string(), "row 3, column `n`: value 3000000000 is out of range for integer");
        let PgError::InvalidValue { row, column, value, reason, .. } = bad else { unreachable!() };
        let located =
            PgError::InvalidValue { origin: Some("orders.csv:7".into()), row, column, value, reason };
        assert_eq!(
            located.to_string(),
            "orders.csv:7, column `n`: value 3000000000 is out of range for integer"
        );
    }
}

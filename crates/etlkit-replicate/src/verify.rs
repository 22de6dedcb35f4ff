//! Verification: per table, the row count and an order-independent content checksum, computed by
//! each server over its own copy — `sum(hashtextextended(ROW(columns)::text, 0))`, a 64-bit hash of
//! every row's text form, summed as `numeric` (no overflow, and duplicate rows count twice, unlike
//! XOR). Nothing but two numbers per table crosses the network.
//!
//! Row text depends on session settings, so both sessions use the same ones ([`SESSION_SETTINGS`]).

use sqlx::{AssertSqlSafe, PgConnection, Row};

use crate::column_list;
use crate::error::{Result, db};

/// Settings that make every type's text form identical on both sides.
pub(crate) const SESSION_SETTINGS: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
     SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; SET bytea_output = 'hex'";

/// Row count and checksum of one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum {
    /// `count(*)`.
    pub rows: u64,
    /// The sum of the rows' 64-bit hashes, in decimal.
    pub sum: String,
}

/// The checksum query for `table` (quoted) over `columns`.
pub(crate) fn checksum_sql<'a>(table: &str, columns: impl IntoIterator<Item = &'a str>) -> String {
    format!(
        "SELECT count(*)::int8, coalesce(sum(hashtextextended(ROW({})::text, 0)), 0)::text FROM ONLY {table}",
        column_list(columns)
    )
}

/// Runs the checksum query (after [`SESSION_SETTINGS`] on `conn`).
pub(crate) async fn checksum(conn: &mut PgConnection, sql: &str, table: &str) -> Result<Checksum> {
    let row = sqlx::query(AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db("computing the verification checksum", table, e))?;
    Ok(Checksum { rows: row.get::<i64, _>(0) as u64, sum: row.get(1) })
}

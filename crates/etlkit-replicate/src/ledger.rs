//! The resume ledger: a table in the target recording which tables are finished, with the row count
//! and content fingerprint of what was copied. A table's row is written in the same transaction as
//! its data, so "in the ledger" and "loaded" are one fact.

use std::collections::HashMap;

use sqlx::{AssertSqlSafe, PgConnection, Row};

use crate::error::{Result, db};
use etlkit_postgres::TableRef;

/// Creates the ledger table (and its schema) when missing.
pub(crate) async fn ensure(conn: &mut PgConnection, ledger: &TableRef) -> Result<()> {
    let q = ledger.quoted();
    let mut sql = String::new();
    if let Some(s) = &ledger.schema {
        sql.push_str(&format!("CREATE SCHEMA IF NOT EXISTS {};\n", etlkit_postgres::quote_ident(s)));
    }
    sql.push_str(&format!(
        "CREATE TABLE IF NOT EXISTS {q} (\
            schema_name text NOT NULL, \
            table_name text NOT NULL, \
            rows bigint NOT NULL, \
            bytes bigint NOT NULL, \
            finished_at timestamptz NOT NULL DEFAULT now(), \
            fingerprint text, \
            PRIMARY KEY (schema_name, table_name));\n\
         ALTER TABLE {q} ADD COLUMN IF NOT EXISTS fingerprint text"
    ));
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut *conn)
        .await
        .map_err(|e| db("creating the ledger", q, e))?;
    Ok(())
}

/// A table the ledger records as finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finished {
    /// Rows copied.
    pub rows: u64,
    /// Content fingerprint of the copied rows (`None` in rows written before fingerprints existed).
    pub fingerprint: Option<String>,
}

/// Finished tables of `schema` (none when the ledger does not exist yet).
pub(crate) async fn finished(
    conn: &mut PgConnection,
    ledger: &TableRef,
    schema: &str,
) -> Result<HashMap<String, Finished>> {
    let q = ledger.quoted();
    let exists: bool = sqlx::query("SELECT to_regclass($1) IS NOT NULL")
        .bind(&q)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| db("reading the ledger", q.clone(), e))?
        .get(0);
    if !exists {
        return Ok(HashMap::new());
    }
    // `to_jsonb(l) ->> 'fingerprint'` also reads a ledger created before that column existed.
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT table_name, rows, to_jsonb(l) ->> 'fingerprint' FROM {q} l WHERE schema_name = $1"
    )))
    .bind(schema)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db("reading the ledger", q, e))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let done = Finished { rows: r.get::<i64, _>(1) as u64, fingerprint: r.get(2) };
            (r.get::<String, _>(0), done)
        })
        .collect())
}

/// Forgets `tables` (they will be copied again).
pub(crate) async fn forget(
    conn: &mut PgConnection,
    ledger: &TableRef,
    schema: &str,
    tables: &[String],
) -> Result<()> {
    let q = ledger.quoted();
    sqlx::query(AssertSqlSafe(format!("DELETE FROM {q} WHERE schema_name = $1 AND table_name = ANY($2)")))
        .bind(schema)
        .bind(tables)
        .execute(&mut *conn)
        .await
        .map_err(|e| db("clearing the ledger", q, e))?;
    Ok(())
}

/// Records `table` as finished (inside the table's load transaction).
pub(crate) async fn record(
    conn: &mut PgConnection,
    ledger: &TableRef,
    schema: &str,
    table: &str,
    rows: u64,
    bytes: u64,
    fingerprint: &str,
) -> Result<()> {
    let q = ledger.quoted();
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {q} (schema_name, table_name, rows, bytes, fingerprint) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (schema_name, table_name) DO UPDATE \
         SET rows = EXCLUDED.rows, bytes = EXCLUDED.bytes, fingerprint = EXCLUDED.fingerprint, \
             finished_at = now()"
    )))
    .bind(schema)
    .bind(table)
    .bind(rows as i64)
    .bind(bytes as i64)
    .bind(fingerprint)
    .execute(&mut *conn)
    .await
    .map_err(|e| db("recording a finished table in the ledger", q, e))?;
    Ok(())
}

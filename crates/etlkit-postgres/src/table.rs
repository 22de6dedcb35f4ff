//! Creating a target table from an Arrow schema.

use arrow_schema::{DataType, Field, Schema};
use sqlx::{AssertSqlSafe, PgPool};

use crate::error::{PgError, Result};
use crate::identifier::{TableRef, column_list, quote_ident};

/// The PostgreSQL column type [`create_table_if_not_exists`] uses for an Arrow field, or `None`
/// when there is none.
///
/// Integers map to the smallest PostgreSQL integer holding every value (`UInt64` to
/// `numeric(20,0)`), decimals to `numeric(p,s)`, strings to `text`, binaries to `bytea`
/// (`FixedSizeBinary(16)` with the `arrow.uuid` extension to `uuid`), timestamps with a time zone
/// to `timestamptz` and without to `timestamp`, lists of integers or strings to arrays.
pub fn pg_type_for(field: &Field) -> Option<String> {
    let uuid_ext = field.metadata().get("ARROW:extension:name").is_some_and(|n| n == "arrow.uuid");
    scalar_type(field.data_type(), uuid_ext)
}

fn scalar_type(t: &DataType, uuid_ext: bool) -> Option<String> {
    use DataType as D;
    Some(
        match t {
            D::Boolean => "boolean",
            D::Int8 | D::Int16 | D::UInt8 => "smallint",
            D::Int32 | D::UInt16 => "integer",
            D::Int64 | D::UInt32 => "bigint",
            D::UInt64 => "numeric(20,0)",
            D::Float16 | D::Float32 => "real",
            D::Float64 => "double precision",
            D::Decimal32(p, s) | D::Decimal64(p, s) | D::Decimal128(p, s) | D::Decimal256(p, s) => {
                return Some(if *p <= 76 { format!("numeric({p},{s})") } else { "numeric".into() });
            }
            D::Utf8 | D::LargeUtf8 | D::Utf8View => "text",
            D::FixedSizeBinary(16) if uuid_ext => "uuid",
            D::Binary | D::LargeBinary | D::BinaryView | D::FixedSizeBinary(_) => "bytea",
            D::Date32 | D::Date64 => "date",
            D::Time32(_) | D::Time64(_) => "time",
            D::Timestamp(_, Some(_)) => "timestamptz",
            D::Timestamp(_, None) => "timestamp",
            D::Dictionary(_, v) => return scalar_type(v, false),
            D::List(f) | D::LargeList(f) | D::FixedSizeList(f, _) => {
                return match f.data_type() {
                    D::Int8 | D::Int16 | D::UInt8 => Some("smallint[]".into()),
                    D::Int32 | D::UInt16 => Some("integer[]".into()),
                    D::Int64 | D::UInt32 => Some("bigint[]".into()),
                    D::Utf8 | D::LargeUtf8 | D::Utf8View => Some("text[]".into()),
                    _ => None,
                };
            }
            _ => return None,
        }
        .to_owned(),
    )
}

/// The `CREATE TABLE IF NOT EXISTS` statement for `schema`, with `key` as the primary key (when not
/// empty). Column names are kept exactly as in the schema (quoted). Non-nullable fields and key
/// columns are `NOT NULL`.
pub fn create_table_sql(table: &TableRef, schema: &Schema, key: &[&str]) -> Result<String> {
    table.validate("table")?;
    let mut cols = Vec::with_capacity(schema.fields().len());
    for f in schema.fields() {
        crate::identifier::check_identifier("schema", f.name())?;
        let ty = pg_type_for(f).ok_or_else(|| PgError::UnsupportedType {
            column: f.name().clone(),
            reason: format!("no PostgreSQL column type for Arrow type {}", f.data_type()),
        })?;
        let not_null = !f.is_nullable() || key.contains(&f.name().as_str());
        cols.push(format!("{} {ty}{}", quote_ident(f.name()), if not_null { " NOT NULL" } else { "" }));
    }
    for k in key {
        if schema.field_with_name(k).is_err() {
            return Err(PgError::InvalidConfig {
                field: "key",
                reason: format!("key column `{k}` is not in the schema"),
            });
        }
    }
    if !key.is_empty() {
        cols.push(format!("PRIMARY KEY ({})", column_list(key.iter().copied())));
    }
    Ok(format!("CREATE TABLE IF NOT EXISTS {} ({})", table.quoted(), cols.join(", ")))
}

/// Creates `table` with columns for `schema` (types per [`pg_type_for`]) and `key` as its primary
/// key, unless a table of that name exists (which is then left as it is). Names longer than
/// PostgreSQL keeps ([`MAX_IDENTIFIER_BYTES`](crate::MAX_IDENTIFIER_BYTES)) are an error.
pub async fn create_table_if_not_exists(
    pool: &PgPool,
    table: &TableRef,
    schema: &Schema,
    key: &[&str],
) -> Result<()> {
    let sql = create_table_sql(table, schema, key)?;
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(pool)
        .await
        .map_err(|e| PgError::db("creating the table", table.quoted(), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::TimeUnit;
    use std::sync::Arc;

    #[test]
    fn ddl_quotes_names_and_maps_types() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x\"; DROP TABLE y; --", DataType::Utf8, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
            Field::new("tags", DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))), true),
            Field::new("amount", DataType::Decimal128(12, 2), true),
        ]);
        let sql = create_table_sql(&TableRef::new("t"), &schema, &["id"]).unwrap();
        assert_eq!(
            sql,
            "CREATE TABLE IF NOT EXISTS \"t\" (\"id\" bigint NOT NULL, \"x\"\"; DROP TABLE y; --\" text, \
             \"at\" timestamptz, \"tags\" text[], \"amount\" numeric(12,2), PRIMARY KEY (\"id\"))"
        );
    }
}

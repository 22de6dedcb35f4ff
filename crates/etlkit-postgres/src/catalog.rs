//! The target table's columns and their PostgreSQL types, read from the system catalog.

use sqlx::{PgConnection, Row};

use crate::error::{PgError, Result};
use crate::identifier::TableRef;

/// The PostgreSQL column types this crate reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PgType {
    /// `boolean`
    Bool,
    /// `smallint`
    Int2,
    /// `integer`
    Int4,
    /// `bigint`
    Int8,
    /// `real`
    Float4,
    /// `double precision`
    Float8,
    /// `numeric`, with precision and scale when declared (`numeric(p,s)`).
    Numeric {
        /// Declared precision and scale.
        precision_scale: Option<(u8, i8)>,
    },
    /// `text`, `varchar`, `char(n)`, `name`: text on the wire.
    Text,
    /// `bytea`
    Bytea,
    /// `date`
    Date,
    /// `time` (without time zone)
    Time,
    /// `timestamp` (without time zone)
    Timestamp,
    /// `timestamptz`
    Timestamptz,
    /// `uuid`
    Uuid,
    /// `json`
    Json,
    /// `jsonb`
    Jsonb,
    /// `smallint[]`
    Int2Array,
    /// `integer[]`
    Int4Array,
    /// `bigint[]`
    Int8Array,
    /// `text[]`
    TextArray,
}

impl PgType {
    /// Maps a type OID (and `atttypmod`) to a [`PgType`], or `None` when unsupported.
    pub fn from_oid(oid: u32, typmod: i32) -> Option<PgType> {
        Some(match oid {
            16 => PgType::Bool,
            21 => PgType::Int2,
            23 => PgType::Int4,
            20 => PgType::Int8,
            700 => PgType::Float4,
            701 => PgType::Float8,
            1700 => PgType::Numeric {
                precision_scale: (typmod >= 4).then(|| {
                    let t = typmod - 4;
                    (((t >> 16) & 0xffff) as u8, (t & 0xffff) as i16 as i8)
                }),
            },
            25 | 1043 | 1042 | 19 => PgType::Text,
            17 => PgType::Bytea,
            1082 => PgType::Date,
            1083 => PgType::Time,
            1114 => PgType::Timestamp,
            1184 => PgType::Timestamptz,
            2950 => PgType::Uuid,
            114 => PgType::Json,
            3802 => PgType::Jsonb,
            1005 => PgType::Int2Array,
            1007 => PgType::Int4Array,
            1016 => PgType::Int8Array,
            1009 => PgType::TextArray,
            _ => return None,
        })
    }

    /// The type's OID and `atttypmod`: the inverse of [`PgType::from_oid`] (text-like types map to
    /// `text`), so a column's type can be written down and read back, e.g. in a serialized plan.
    pub fn oid_typmod(&self) -> (u32, i32) {
        match self {
            PgType::Bool => (16, -1),
            PgType::Int2 => (21, -1),
            PgType::Int4 => (23, -1),
            PgType::Int8 => (20, -1),
            PgType::Float4 => (700, -1),
            PgType::Float8 => (701, -1),
            PgType::Numeric { precision_scale: Some((p, s)) } => {
                (1700, (((*p as i32) << 16) | (*s as u8 as i32)) + 4)
            }
            PgType::Numeric { precision_scale: None } => (1700, -1),
            PgType::Text => (25, -1),
            PgType::Bytea => (17, -1),
            PgType::Date => (1082, -1),
            PgType::Time => (1083, -1),
            PgType::Timestamp => (1114, -1),
            PgType::Timestamptz => (1184, -1),
            PgType::Uuid => (2950, -1),
            PgType::Json => (114, -1),
            PgType::Jsonb => (3802, -1),
            PgType::Int2Array => (1005, -1),
            PgType::Int4Array => (1007, -1),
            PgType::Int8Array => (1016, -1),
            PgType::TextArray => (1009, -1),
        }
    }

    /// The name used in messages and DDL.
    pub fn sql_name(&self) -> String {
        match self {
            PgType::Bool => "boolean".into(),
            PgType::Int2 => "smallint".into(),
            PgType::Int4 => "integer".into(),
            PgType::Int8 => "bigint".into(),
            PgType::Float4 => "real".into(),
            PgType::Float8 => "double precision".into(),
            PgType::Numeric { precision_scale: Some((p, s)) } => format!("numeric({p},{s})"),
            PgType::Numeric { precision_scale: None } => "numeric".into(),
            PgType::Text => "text".into(),
            PgType::Bytea => "bytea".into(),
            PgType::Date => "date".into(),
            PgType::Time => "time".into(),
            PgType::Timestamp => "timestamp".into(),
            PgType::Timestamptz => "timestamptz".into(),
            PgType::Uuid => "uuid".into(),
            PgType::Json => "json".into(),
            PgType::Jsonb => "jsonb".into(),
            PgType::Int2Array => "smallint[]".into(),
            PgType::Int4Array => "integer[]".into(),
            PgType::Int8Array => "bigint[]".into(),
            PgType::TextArray => "text[]".into(),
        }
    }
}

/// One column of a table as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableColumn {
    /// The column name.
    pub name: String,
    /// `format_type(atttypid, atttypmod)`, e.g. `character varying(20)`.
    pub declared: String,
    /// The type, when supported.
    pub pg_type: Option<PgType>,
    /// `NOT NULL`?
    pub not_null: bool,
}

/// Reads the columns of `table` (in column order, without dropped or generated columns).
pub async fn table_columns(conn: &mut PgConnection, table: &TableRef) -> Result<Vec<TableColumn>> {
    let quoted = table.quoted();
    let rows = sqlx::query(
        "SELECT a.attname::text, a.atttypid::int8, a.atttypmod, format_type(a.atttypid, a.atttypmod), \
                a.attnotnull, to_regclass($1) IS NOT NULL \
         FROM (SELECT 1) one \
         LEFT JOIN pg_attribute a ON a.attrelid = to_regclass($1) AND a.attnum > 0 \
              AND NOT a.attisdropped AND a.attgenerated = '' \
         ORDER BY a.attnum",
    )
    .bind(&quoted)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| PgError::db("reading the catalog", quoted.clone(), e))?;
    let exists: bool = rows.first().map(|r| r.get(5)).unwrap_or(false);
    if !exists {
        return Err(PgError::TableNotFound { table: quoted });
    }
    let mut out = Vec::new();
    for r in rows {
        let Some(name) = r.get::<Option<String>, _>(0) else { continue };
        let oid: i64 = r.get(1);
        let typmod: i32 = r.get(2);
        out.push(TableColumn {
            name,
            declared: r.get(3),
            pg_type: PgType::from_oid(oid as u32, typmod),
            not_null: r.get(4),
        });
    }
    Ok(out)
}

/// Whether `table` has a unique index (or primary key / unique constraint) on exactly the columns
/// `key` (in any order), without a predicate or expressions: what `INSERT ... ON CONFLICT (key)`
/// needs.
pub(crate) async fn has_unique_index_on(
    conn: &mut PgConnection,
    table: &TableRef,
    key: &[String],
) -> Result<bool> {
    let quoted = table.quoted();
    let mut sorted: Vec<&str> = key.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    sorted.dedup();
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_index i \
           WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indisvalid \
             AND i.indpred IS NULL AND i.indexprs IS NULL \
             AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) \
                  FROM unnest(i.indkey::int2[]) k JOIN pg_attribute a \
                    ON a.attrelid = i.indrelid AND a.attnum = k) = $2::text[])",
    )
    .bind(&quoted)
    .bind(&sorted)
    .fetch_one(&mut *conn)
    .await
    .map_err(|e| PgError::db("reading the catalog", quoted, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_typmod_decodes_precision_and_scale() {
        // numeric(12,3): typmod = ((12 << 16) | 3) + 4
        let typmod = ((12 << 16) | 3) + 4;
        assert_eq!(PgType::from_oid(1700, typmod), Some(PgType::Numeric { precision_scale: Some((12, 3)) }));
        assert_eq!(PgType::from_oid(1700, -1), Some(PgType::Numeric { precision_scale: None }));
        assert_eq!(PgType::from_oid(600, -1), None); // point
    }

    #[test]
    fn oid_typmod_reads_back_as_the_same_type() {
        let mut seen = 0;
        for oid in 0..4000u32 {
            for typmod in [-1, ((12 << 16) | 3) + 4, (38 << 16) + 4, ((5 << 16) | 0xfffe) + 4] {
                if let Some(t) = PgType::from_oid(oid, typmod) {
                    let (o, m) = t.oid_typmod();
                    assert_eq!(PgType::from_oid(o, m), Some(t.clone()), "oid {oid} typmod {typmod}");
                    seen += 1;
                }
            }
        }
        assert!(seen >= 24, "{seen}");
        // numeric(5,-2): a negative scale survives the round trip
        let t = PgType::Numeric { precision_scale: Some((5, -2)) };
        assert_eq!(PgType::from_oid(1700, t.oid_typmod().1), Some(t));
    }
}

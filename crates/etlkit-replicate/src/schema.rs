//! The source schema as the catalog describes it, and the DDL that recreates it in the target.
//!
//! Catalog text (`format_type`, `pg_get_expr`, `pg_get_constraintdef`, `pg_get_indexdef`) is read with
//! `search_path = pg_catalog`, so every name in it comes out schema-qualified and quoted where needed —
//! the same trick `pg_dump` uses. The target database gets the same schema name.

use std::collections::BTreeSet;

use sqlx::{PgConnection, Row};

use etlkit_postgres::quote_ident;

use crate::error::{ReplicationError, Result, db};

/// One column of a replicated table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    pub name: String,
    /// `format_type(atttypid, atttypmod)`, schema-qualified when not a `pg_catalog` type.
    pub type_sql: String,
    pub not_null: bool,
    /// `DEFAULT` expression (or the expression of a generated column).
    pub default: Option<String>,
    /// `'a'` (`GENERATED ALWAYS AS IDENTITY`), `'d'` (`BY DEFAULT`) or empty.
    pub identity: String,
    /// `'s'` for a stored generated column, else empty. Generated columns are not copied.
    pub generated: String,
    /// `COLLATE` clause when the column's collation differs from its type's.
    pub collation: Option<String>,
    /// The sequence behind a `serial` or identity column (`pg_get_serial_sequence`), quoted.
    pub serial_sequence: Option<String>,
    /// For an identity column: its sequence's options (`START WITH 1 INCREMENT BY 2 ...`; the type is
    /// the column's), given to the identity clause so the target's sequence counts the same way.
    pub identity_options: Option<String>,
}

/// A constraint: `p`rimary key, `u`nique, `f`oreign key, `c`heck or e`x`clusion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Constraint {
    pub name: String,
    pub kind: char,
    /// `pg_get_constraintdef`, e.g. `FOREIGN KEY (user_id) REFERENCES public.users(id)`.
    pub definition: String,
    /// For foreign keys: the referenced table's schema and name.
    pub references: Option<(String, String)>,
    /// `NOT VALID` in the source (added the same way in the target).
    pub validated: bool,
    /// For primary keys and unique constraints: the `CREATE UNIQUE INDEX` of the backing index.
    pub index_sql: Option<String>,
    /// `DEFERRABLE` clause for `ADD CONSTRAINT ... USING INDEX`.
    pub deferrable: &'static str,
}

/// A sequence used by a column default (`serial` columns and `nextval(...)` defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sequence {
    /// Quoted, schema-qualified name.
    pub quoted: String,
    /// `CREATE SEQUENCE` options (`AS bigint INCREMENT BY 1 ...`).
    pub options: String,
    /// `OWNED BY` target: (table name, column name) in the replicated schema, if any.
    pub owned_by: Option<(String, String)>,
}

/// One table of the source schema.
#[derive(Debug, Clone)]
pub(crate) struct Table {
    /// The source's `pg_class` oid.
    pub oid: i64,
    pub name: String,
    pub unlogged: bool,
    pub columns: Vec<Column>,
    pub constraints: Vec<Constraint>,
    /// `(index name, pg_get_indexdef)` of indexes that do not back a constraint.
    pub indexes: Vec<(String, String)>,
    /// Size estimate (bytes), used to start big tables first.
    pub size_bytes: i64,
}

impl Table {
    /// The columns COPY reads and writes (generated columns excluded).
    pub(super) fn copy_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.generated.is_empty())
    }

    /// Foreign keys' referenced tables within `schema`.
    pub(super) fn parents<'a>(&'a self, schema: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.constraints.iter().filter_map(move |c| match &c.references {
            Some((s, t)) if s == schema => Some(t.as_str()),
            _ => None,
        })
    }
}

/// The selected tables of one schema, plus the sequences their defaults use.
#[derive(Debug, Clone)]
pub(crate) struct SourceSchema {
    pub schema: String,
    pub tables: Vec<Table>,
    pub sequences: Vec<Sequence>,
}

/// Reads `schema` (all ordinary tables, or only `selected`; never `exclude`) from the source catalog. Runs on the
/// connection holding the exported snapshot, after `SET search_path = pg_catalog`.
///
/// Partitioned tables, partitions and tables that take part in table inheritance (as a parent or a
/// child) are refused with [`ReplicationError::UnsupportedTable`]: their rows and constraints are
/// spread over several tables, and a copy table by table would turn them into unrelated tables.
pub(crate) async fn read_schema(
    conn: &mut PgConnection,
    schema: &str,
    selected: &[String],
    exclude: Option<&str>,
) -> Result<SourceSchema> {
    let db = |e| db("reading the source catalog", quote_ident(schema), e);
    let rows = sqlx::query(
        "SELECT c.oid::int8, c.relname::text, c.relkind::text, c.relpersistence::text, \
                c.relispartition, pg_total_relation_size(c.oid)::int8, \
                (SELECT string_agg(format('\"%s\".\"%s\"', replace(pn.nspname, '\"', '\"\"'), \
                        replace(p.relname, '\"', '\"\"')), ', ' \
                        ORDER BY pn.nspname, p.relname) \
                 FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent \
                 JOIN pg_namespace pn ON pn.oid = p.relnamespace WHERE i.inhrelid = c.oid), \
                (SELECT string_agg(format('\"%s\".\"%s\"', replace(kn.nspname, '\"', '\"\"'), \
                        replace(k.relname, '\"', '\"\"')), ', ' \
                        ORDER BY kn.nspname, k.relname) \
                 FROM pg_inherits i JOIN pg_class k ON k.oid = i.inhrelid \
                 JOIN pg_namespace kn ON kn.oid = k.relnamespace WHERE i.inhparent = c.oid) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') ORDER BY c.relname",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let wanted: BTreeSet<&str> = selected.iter().map(String::as_str).collect();
    let mut oids = Vec::new();
    let mut tables = Vec::new();
    for r in rows {
        let name: String = r.get(1);
        if (!wanted.is_empty() && !wanted.contains(name.as_str())) || exclude == Some(name.as_str()) {
            continue;
        }
        let kind: String = r.get(2);
        let is_partition: bool = r.get(4);
        if kind == "p" || is_partition {
            return Err(ReplicationError::UnsupportedTable {
                table: format!("{}.{}", quote_ident(schema), quote_ident(&name)),
                reason: "partitioned tables and partitions are not replicated (select the other tables)"
                    .into(),
            });
        }
        // Partitions were refused above: what is left in pg_inherits is table inheritance.
        let parents: Option<String> = r.get(6);
        let children: Option<String> = r.get(7);
        if parents.is_some() || children.is_some() {
            let related = match (parents, children) {
                (Some(p), Some(c)) => format!("it inherits from {p} and is inherited by {c}"),
                (Some(p), None) => format!("it inherits from {p}"),
                (None, c) => format!("it is inherited by {}", c.unwrap_or_default()),
            };
            return Err(ReplicationError::UnsupportedTable {
                table: format!("{}.{}", quote_ident(schema), quote_ident(&name)),
                reason: format!(
                    "table inheritance is not replicated ({related}; copied table by table they would \
                     become unrelated tables): select the other tables"
                ),
            });
        }
        oids.push(r.get::<i64, _>(0));
        tables.push(Table {
            oid: r.get(0),
            name,
            unlogged: r.get::<String, _>(3) == "u",
            columns: Vec::new(),
            constraints: Vec::new(),
            indexes: Vec::new(),
            size_bytes: r.get(5),
        });
    }
    for want in &wanted {
        if !tables.iter().any(|t| t.name == *want) {
            return Err(ReplicationError::TableNotFound {
                table: format!("{}.{}", quote_ident(schema), quote_ident(want)),
            });
        }
    }
    let index_of = |oid: i64| oids.iter().position(|o| *o == oid).expect("oid of a selected table");

    let cols = sqlx::query(
        "SELECT a.attrelid::int8, a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text, \
                CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation \
                     THEN quote_ident(cn.nspname) || '.' || quote_ident(co.collname) END \
         FROM pg_attribute a \
         JOIN pg_type t ON t.oid = a.atttypid \
         LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
         LEFT JOIN pg_collation co ON co.oid = a.attcollation \
         LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace \
         WHERE a.attrelid = ANY($1::int8[]::oid[]) AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attrelid, a.attnum",
    )
    .bind(&oids)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    for r in cols {
        tables[index_of(r.get(0))].columns.push(Column {
            name: r.get(1),
            type_sql: r.get(2),
            not_null: r.get(3),
            default: r.get(4),
            identity: r.get(5),
            generated: r.get(6),
            collation: r.get(7),
            serial_sequence: None,
            identity_options: None,
        });
    }
    // The sequence behind serial and identity columns (with its options); its schema and name come
    // from the catalog so they are quoted uniformly.
    let seqs = sqlx::query(
        "SELECT a.attrelid::int8, a.attname::text, sn.nspname::text, s.relname::text, \
                format_type(sq.seqtypid, NULL), sq.seqstart, sq.seqincrement, sq.seqmin, sq.seqmax, \
                sq.seqcache, sq.seqcycle \
         FROM pg_attribute a \
         JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_class s ON s.oid = pg_get_serial_sequence(quote_ident(n.nspname) || '.' || \
              quote_ident(c.relname), a.attname)::regclass \
         JOIN pg_namespace sn ON sn.oid = s.relnamespace \
         JOIN pg_sequence sq ON sq.seqrelid = s.oid \
         WHERE a.attrelid = ANY($1::int8[]::oid[]) AND a.attnum > 0 AND NOT a.attisdropped",
    )
    .bind(&oids)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    for r in seqs {
        let table = &mut tables[index_of(r.get(0))];
        let col: String = r.get(1);
        let quoted =
            format!("{}.{}", quote_ident(&r.get::<String, _>(2)), quote_ident(&r.get::<String, _>(3)));
        if let Some(c) = table.columns.iter_mut().find(|c| c.name == col) {
            c.serial_sequence = Some(quoted);
            if !c.identity.is_empty() {
                c.identity_options = Some(sequence_options(&r, 4, false));
            }
        }
    }

    let cons = sqlx::query(
        "SELECT con.conrelid::int8, con.conname::text, con.contype::text, pg_get_constraintdef(con.oid), \
                rn.nspname::text, rc.relname::text, con.convalidated, \
                CASE WHEN con.contype IN ('p', 'u') THEN pg_get_indexdef(con.conindid) END, \
                con.condeferrable, con.condeferred \
         FROM pg_constraint con \
         LEFT JOIN pg_class rc ON rc.oid = con.confrelid LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace \
         WHERE con.conrelid = ANY($1::int8[]::oid[]) AND con.contype IN ('p', 'u', 'f', 'c', 'x') \
               AND con.conislocal \
         ORDER BY con.conrelid, con.contype, con.conname",
    )
    .bind(&oids)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    for r in cons {
        let kind: String = r.get(2);
        let ref_schema: Option<String> = r.get(4);
        let ref_table: Option<String> = r.get(5);
        tables[index_of(r.get(0))].constraints.push(Constraint {
            name: r.get(1),
            kind: kind.chars().next().unwrap_or('?'),
            definition: r.get(3),
            references: ref_schema.zip(ref_table),
            validated: r.get(6),
            index_sql: r.get(7),
            deferrable: match (r.get::<bool, _>(8), r.get::<bool, _>(9)) {
                (false, _) => "",
                (true, false) => " DEFERRABLE",
                (true, true) => " DEFERRABLE INITIALLY DEFERRED",
            },
        });
    }

    let idx = sqlx::query(
        "SELECT i.indrelid::int8, ic.relname::text, pg_get_indexdef(i.indexrelid) \
         FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid \
         WHERE i.indrelid = ANY($1::int8[]::oid[]) AND NOT EXISTS ( \
               SELECT 1 FROM pg_constraint con WHERE con.conindid = i.indexrelid \
               AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x')) \
         ORDER BY i.indrelid, ic.relname",
    )
    .bind(&oids)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    for r in idx {
        tables[index_of(r.get(0))].indexes.push((r.get(1), r.get(2)));
    }

    // Sequences named in column defaults (serial columns, explicit nextval defaults). Identity
    // sequences are created by the identity clause itself.
    let seq_rows = sqlx::query(
        "SELECT DISTINCT sn.nspname::text, sc.relname::text, format_type(s.seqtypid, NULL), \
                s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle, \
                oc.relname::text, oa.attname::text \
         FROM pg_attrdef ad \
         JOIN pg_depend dep ON dep.classid = 'pg_attrdef'::regclass AND dep.objid = ad.oid \
              AND dep.refclassid = 'pg_class'::regclass \
         JOIN pg_class sc ON sc.oid = dep.refobjid AND sc.relkind = 'S' \
         JOIN pg_namespace sn ON sn.oid = sc.relnamespace \
         JOIN pg_sequence s ON s.seqrelid = sc.oid \
         LEFT JOIN pg_depend own ON own.classid = 'pg_class'::regclass AND own.objid = sc.oid \
              AND own.refclassid = 'pg_class'::regclass AND own.deptype = 'a' \
         LEFT JOIN pg_class oc ON oc.oid = own.refobjid AND oc.relnamespace = \
              (SELECT oid FROM pg_namespace WHERE nspname = $2) \
         LEFT JOIN pg_attribute oa ON oa.attrelid = oc.oid AND oa.attnum = own.refobjsubid \
         WHERE ad.adrelid = ANY($1::int8[]::oid[]) \
         ORDER BY 1, 2",
    )
    .bind(&oids)
    .bind(schema)
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    let sequences = seq_rows
        .into_iter()
        .map(|r| {
            let owner: Option<String> = r.get(9);
            let owner_col: Option<String> = r.get(10);
            Sequence {
                quoted: format!(
                    "{}.{}",
                    quote_ident(&r.get::<String, _>(0)),
                    quote_ident(&r.get::<String, _>(1))
                ),
                options: sequence_options(&r, 2, true),
                owned_by: owner.zip(owner_col),
            }
        })
        .collect();

    Ok(SourceSchema { schema: schema.to_owned(), tables, sequences })
}

/// Sequence options (`[AS bigint] START WITH 1 INCREMENT BY 1 MINVALUE ... CACHE 1 [CYCLE]`) from
/// `format_type(seqtypid)`, `seqstart`, `seqincrement`, `seqmin`, `seqmax`, `seqcache` and
/// `seqcycle`, read from `row` as seven columns starting at `first`. `AS` only `with_type`: an
/// identity clause takes its type from the column and refuses another `AS`.
fn sequence_options(row: &sqlx::postgres::PgRow, first: usize, with_type: bool) -> String {
    let type_clause = if with_type { format!("AS {} ", row.get::<String, _>(first)) } else { String::new() };
    format!(
        "{type_clause}START WITH {} INCREMENT BY {} MINVALUE {} MAXVALUE {} CACHE {}{}",
        row.get::<i64, _>(first + 1),
        row.get::<i64, _>(first + 2),
        row.get::<i64, _>(first + 3),
        row.get::<i64, _>(first + 4),
        row.get::<i64, _>(first + 5),
        if row.get::<bool, _>(first + 6) { " CYCLE" } else { "" }
    )
}

impl SourceSchema {
    /// `schema.table`, quoted.
    pub(super) fn qualified(&self, table: &str) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(table))
    }

    /// `CREATE TABLE` with columns, defaults, identity (with its sequence's options), generated columns, `NOT NULL` and validated
    /// `CHECK` constraints. Keys, indexes and foreign keys come after the data ([`Self::post_data`]).
    pub(super) fn create_table_sql(&self, t: &Table) -> String {
        let mut parts: Vec<String> = t
            .columns
            .iter()
            .map(|c| {
                let mut s = format!("{} {}", quote_ident(&c.name), c.type_sql);
                if let Some(coll) = &c.collation {
                    s.push_str(" COLLATE ");
                    s.push_str(coll);
                }
                let identity = |kind: &str| match &c.identity_options {
                    Some(options) => format!(" GENERATED {kind} AS IDENTITY ({options})"),
                    None => format!(" GENERATED {kind} AS IDENTITY"),
                };
                match (c.identity.as_str(), c.generated.as_str(), &c.default) {
                    ("a", _, _) => s.push_str(&identity("ALWAYS")),
                    ("d", _, _) => s.push_str(&identity("BY DEFAULT")),
                    (_, "s", Some(expr)) => s.push_str(&format!(" GENERATED ALWAYS AS ({expr}) STORED")),
                    (_, _, Some(expr)) => s.push_str(&format!(" DEFAULT {expr}")),
                    _ => {}
                }
                if c.not_null {
                    s.push_str(" NOT NULL");
                }
                s
            })
            .collect();
        for c in t.constraints.iter().filter(|c| c.kind == 'c' && c.validated) {
            parts.push(format!("CONSTRAINT {} {}", quote_ident(&c.name), c.definition));
        }
        format!(
            "CREATE {}TABLE {} ({})",
            if t.unlogged { "UNLOGGED " } else { "" },
            self.qualified(&t.name),
            parts.join(", ")
        )
    }

    /// Statements that run after the data, in two phases: keys, unique and exclusion constraints,
    /// not-yet-validated checks and secondary indexes (`phase 0`), then foreign keys (`phase 1`).
    pub(super) fn post_data(&self, t: &Table) -> (Vec<PostData>, Vec<PostData>) {
        let mut first = Vec::new();
        let mut fks = Vec::new();
        let alter = |c: &Constraint| {
            format!(
                "ALTER TABLE {} ADD CONSTRAINT {} {}",
                self.qualified(&t.name),
                quote_ident(&c.name),
                c.definition
            )
        };
        for c in &t.constraints {
            // Keys are built as plain unique indexes first (CREATE INDEX takes a SHARE lock, so all
            // indexes of one table build at the same time; ALTER TABLE ... ADD PRIMARY KEY would
            // lock the table exclusively), then attached with ADD CONSTRAINT ... USING INDEX.
            let sql = match (&c.index_sql, c.kind) {
                (Some(index), 'p' | 'u') => format!(
                    "{index}; ALTER TABLE {} ADD CONSTRAINT {} {} USING INDEX {}{}",
                    self.qualified(&t.name),
                    quote_ident(&c.name),
                    if c.kind == 'p' { "PRIMARY KEY" } else { "UNIQUE" },
                    quote_ident(&c.name),
                    c.deferrable
                ),
                // Foreign keys are added NOT VALID (instant) and validated separately: VALIDATE
                // CONSTRAINT locks the referenced table only in ROW SHARE mode, so foreign keys of
                // different tables referencing the same table validate at the same time.
                (_, 'f') if c.validated => format!("{} NOT VALID", alter(c)),
                _ => alter(c),
            };
            let validate = (c.kind == 'f' && c.validated).then(|| {
                format!(
                    "ALTER TABLE {} VALIDATE CONSTRAINT {}",
                    self.qualified(&t.name),
                    quote_ident(&c.name)
                )
            });
            let item = PostData {
                table: t.name.clone(),
                name: c.name.clone(),
                index: false,
                sql,
                references: c.references.clone(),
                validate,
            };
            match c.kind {
                'p' | 'u' | 'x' => first.push(item),
                'c' if !c.validated => first.push(item),
                'f' => fks.push(item),
                _ => {}
            }
        }
        for (name, def) in &t.indexes {
            first.push(PostData {
                table: t.name.clone(),
                name: name.clone(),
                index: true,
                sql: def.clone(),
                references: None,
                validate: None,
            });
        }
        (first, fks)
    }
}

/// One statement of the post-data phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PostData {
    pub table: String,
    /// Constraint or index name (created only when the target lacks it).
    pub name: String,
    pub index: bool,
    pub sql: String,
    /// For foreign keys: the referenced (schema, table).
    pub references: Option<(String, String)>,
    /// For foreign keys validated in the source: the `VALIDATE CONSTRAINT` statement.
    pub validate: Option<String>,
}

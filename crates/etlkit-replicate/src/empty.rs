//! Emptying the target tables a run copies again, all in the pre-data transaction, before any data
//! moves — so a re-sync of any foreign-key graph works, and a run that cannot empty a table fails
//! before writing anything.
//!
//! Tables referenced only by other emptied tables go in one `TRUNCATE ONLY a, b, ...` (PostgreSQL
//! allows truncating a referenced table when every table referencing it is truncated by the same
//! statement). A table that a table *outside* the run references cannot be truncated: it is emptied
//! with `DELETE` after the truncation, children before parents — and only when none of the outside
//! tables' rows reference it (checked first, because an `ON DELETE CASCADE` or `SET NULL` key would
//! otherwise silently change a table the run does not copy).

use std::collections::BTreeSet;

use sqlx::{AssertSqlSafe, PgConnection, Row};

use etlkit_postgres::quote_ident;

use crate::error::{ReplicationError, Result, db};

/// A foreign key in the target whose referenced table is in the replicated schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetFk {
    /// Schema of the referencing table.
    pub schema: String,
    /// The referencing table.
    pub table: String,
    /// The referenced table (in the replicated schema).
    pub references: String,
    /// The constraint name.
    pub name: String,
    /// The referencing columns.
    pub columns: Vec<String>,
}

impl TargetFk {
    /// The referencing table, quoted and schema-qualified.
    pub(crate) fn qualified_table(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }
}

/// Foreign keys of the target (from any schema) that reference a table of `schema`, other than
/// self-references.
pub(crate) async fn target_foreign_keys(conn: &mut PgConnection, schema: &str) -> Result<Vec<TargetFk>> {
    let rows = sqlx::query(
        "SELECT nl.nspname::text, cl.relname::text, cr.relname::text, con.conname::text, \
                ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(num, ord) \
                      JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.num \
                      ORDER BY k.ord) \
         FROM pg_constraint con \
         JOIN pg_class cl ON cl.oid = con.conrelid JOIN pg_namespace nl ON nl.oid = cl.relnamespace \
         JOIN pg_class cr ON cr.oid = con.confrelid JOIN pg_namespace nr ON nr.oid = cr.relnamespace \
         WHERE con.contype = 'f' AND nr.nspname = $1 AND con.conrelid <> con.confrelid \
         ORDER BY 1, 2, 4",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| db("reading the target catalog", quote_ident(schema), e))?;
    Ok(rows
        .into_iter()
        .map(|r| TargetFk {
            schema: r.get(0),
            table: r.get(1),
            references: r.get(2),
            name: r.get(3),
            columns: r.get(4),
        })
        .collect())
}

/// How the tables to empty are emptied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Emptying {
    /// Tables emptied by one `TRUNCATE` (indexes into the table list).
    pub truncate: Vec<usize>,
    /// Tables emptied by `DELETE`, in this order (referencing tables before referenced ones).
    pub delete: Vec<usize>,
    /// Per table: the foreign keys (indexes into the key list) from tables outside the emptied set.
    pub outside: Vec<Vec<usize>>,
}

impl Emptying {
    /// Plans emptying the tables `names[i]` with `empty[i]`, given the target's foreign keys `fks`
    /// into `schema` (those with `dropped[k]` are dropped first and do not count).
    pub(crate) fn plan(
        schema: &str,
        names: &[&str],
        empty: &[bool],
        fks: &[TargetFk],
        dropped: &[bool],
    ) -> Emptying {
        let n = names.len();
        let index = |table: &str| names.iter().position(|t| *t == table);
        // (fk, referencing table if it is emptied, referenced table) of every key into an emptied table.
        let keys: Vec<(usize, Option<usize>, usize)> = fks
            .iter()
            .enumerate()
            .filter(|(k, _)| !dropped[*k])
            .filter_map(|(k, fk)| {
                let p = index(&fk.references).filter(|&p| empty[p])?;
                let c = if fk.schema == schema { index(&fk.table).filter(|&c| empty[c]) } else { None };
                Some((k, c, p))
            })
            .collect();
        let mut outside = vec![Vec::new(); n];
        let mut delete = vec![false; n];
        for &(k, c, p) in &keys {
            if c.is_none() {
                outside[p].push(k);
                delete[p] = true;
            }
        }
        // A table referenced by a table that is deleted (not truncated) cannot be truncated either.
        loop {
            let mut grew = false;
            for &(_, c, p) in &keys {
                if let Some(c) = c
                    && delete[c]
                    && !delete[p]
                {
                    delete[p] = true;
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        let truncate = (0..n).filter(|&i| empty[i] && !delete[i]).collect();
        // Children first: repeatedly take a table no table still to delete references.
        let mut left: BTreeSet<usize> = (0..n).filter(|&i| delete[i]).collect();
        let mut order = Vec::with_capacity(left.len());
        while let Some(&first) = left.iter().next() {
            let next = left
                .iter()
                .copied()
                .find(|&t| {
                    !keys.iter().any(|&(_, c, p)| p == t && c.is_some_and(|c| c != t && left.contains(&c)))
                })
                .unwrap_or(first);
            left.remove(&next);
            order.push(next);
        }
        Emptying { truncate, delete: order, outside }
    }

    /// Refuses, before anything is written, a table whose rows are referenced from outside the
    /// emptied set ([`ReplicationError::StillReferenced`]).
    pub(crate) async fn check(
        &self,
        conn: &mut PgConnection,
        schema: &str,
        names: &[&str],
        fks: &[TargetFk],
    ) -> Result<()> {
        for &t in &self.delete {
            let mut referenced_by: Vec<String> = Vec::new();
            for &k in &self.outside[t] {
                let fk = &fks[k];
                let child = fk.qualified_table();
                if referenced_by.contains(&child) {
                    continue;
                }
                // MATCH SIMPLE: a row references the parent when none of its key columns is NULL.
                let cols = fk.columns.iter().map(|c| quote_ident(c)).collect::<Vec<_>>().join(", ");
                let sql = format!("SELECT EXISTS (SELECT 1 FROM ONLY {child} WHERE ROW({cols}) IS NOT NULL)");
                let found: bool = sqlx::query(AssertSqlSafe(sql))
                    .fetch_one(&mut *conn)
                    .await
                    .map_err(|e| db("checking rows that reference a table to empty", child.clone(), e))?
                    .get(0);
                if found {
                    referenced_by.push(child);
                }
            }
            if !referenced_by.is_empty() {
                referenced_by.sort();
                return Err(ReplicationError::StillReferenced {
                    table: format!("{}.{}", quote_ident(schema), quote_ident(names[t])),
                    referenced_by,
                });
            }
        }
        Ok(())
    }

    /// The statements that empty the tables, in order.
    pub(crate) fn statements(&self, schema: &str, names: &[&str]) -> Vec<String> {
        let q = |i: usize| format!("{}.{}", quote_ident(schema), quote_ident(names[i]));
        let mut out = Vec::new();
        if !self.truncate.is_empty() {
            let list: Vec<String> = self.truncate.iter().map(|&i| q(i)).collect();
            out.push(format!("TRUNCATE ONLY {}", list.join(", ")));
        }
        out.extend(self.delete.iter().map(|&i| format!("DELETE FROM ONLY {}", q(i))));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fk(schema: &str, table: &str, references: &str) -> TargetFk {
        TargetFk {
            schema: schema.into(),
            table: table.into(),
            references: references.into(),
            name: format!("{table}_{references}_fk"),
            columns: vec![format!("{references}_id")],
        }
    }

    #[test]
    fn referenced_tables_are_truncated_together_unless_an_outside_table_references_them() {
        // users <- posts <- comments; users <- audit (outside, other schema); tags alone.
        let names = ["comments", "posts", "tags", "users"];
        let fks = [fk("s", "posts", "users"), fk("s", "comments", "posts"), fk("other", "audit", "users")];
        let all = [true; 4];
        let e = Emptying::plan("s", &names, &all, &fks, &[false; 3]);
        assert_eq!((e.truncate.clone(), e.delete.clone()), (vec![0, 1, 2], vec![3]));
        assert_eq!(e.outside[3], vec![2]);
        assert_eq!(
            e.statements("s", &names),
            [
                "TRUNCATE ONLY \"s\".\"comments\", \"s\".\"posts\", \"s\".\"tags\"",
                "DELETE FROM ONLY \"s\".\"users\""
            ]
        );

        // Only posts and users emptied: comments (not emptied) references posts, so posts is
        // deleted, and so is users (posts references it), children first.
        let e = Emptying::plan("s", &names, &[false, true, false, true], &fks, &[false; 3]);
        assert_eq!((e.truncate.clone(), e.delete.clone()), (vec![], vec![1, 3]));
        assert_eq!(e.outside[1], vec![1]);

        // A dropped key does not count.
        let e = Emptying::plan("s", &names, &all, &fks, &[false, false, true]);
        assert_eq!((e.truncate, e.delete), (vec![0, 1, 2, 3], vec![]));
    }
}

//! The SQL of a staged upsert: rows are COPYed into a staging table, then merged into the target
//! with `INSERT ... SELECT DISTINCT ON (key) ... ON CONFLICT (key) DO NOTHING | DO UPDATE ... WHERE`
//! the row differs. Identifiers are quoted; no value ever appears in the SQL.

use crate::identifier::{column_list, quote_ident};

/// What an upsert does when a row's key already exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OnConflict {
    /// Keep the existing row; the incoming row counts as `unchanged`.
    DoNothing,
    /// Overwrite the non-key columns, but only when the row differs (so unchanged rows cost no
    /// new row version and count as `unchanged`).
    DoUpdate {
        /// How "differs" is decided.
        compare: ChangeDetection,
    },
}

/// How [`OnConflict::DoUpdate`] decides that a row changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ChangeDetection {
    /// Any non-key column `IS DISTINCT FROM` its new value. The default.
    #[default]
    AllColumns,
    /// Only this column (e.g. a row hash computed by `etlkit-hash`) is compared.
    HashColumn(String),
}

/// Builds the merge statement. It returns one row: (distinct staged rows, inserted, updated).
pub(crate) fn merge_sql(
    target: &str,
    stage: &str,
    columns: &[&str],
    key: &[String],
    on_conflict: &OnConflict,
) -> String {
    let cols = column_list(columns.iter().copied());
    let keys = column_list(key.iter().map(String::as_str));
    let non_key: Vec<&str> = columns.iter().copied().filter(|c| !key.iter().any(|k| k == c)).collect();
    let action = match on_conflict {
        OnConflict::DoUpdate { compare } if !non_key.is_empty() => {
            let set = non_key
                .iter()
                .map(|c| format!("{q} = EXCLUDED.{q}", q = quote_ident(c)))
                .collect::<Vec<_>>()
                .join(", ");
            let cond = match compare {
                ChangeDetection::AllColumns => {
                    let t = non_key
                        .iter()
                        .map(|c| format!("t.{}", quote_ident(c)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let e = non_key
                        .iter()
                        .map(|c| format!("EXCLUDED.{}", quote_ident(c)))
                        .collect::<Vec<_>>()
                        .join(", ");
                    format!("ROW({t}) IS DISTINCT FROM ROW({e})")
                }
                ChangeDetection::HashColumn(h) => {
                    format!("t.{q} IS DISTINCT FROM EXCLUDED.{q}", q = quote_ident(h))
                }
            };
            format!("DO UPDATE SET {set} WHERE {cond}")
        }
        _ => "DO NOTHING".to_owned(),
    };
    // ctid DESC: rows COPYed later into the fresh staging table win among duplicate keys.
    format!(
        "WITH src AS MATERIALIZED (SELECT DISTINCT ON ({keys}) {cols} FROM {stage} ORDER BY {keys}, ctid DESC), \
         ins AS (INSERT INTO {target} AS t ({cols}) SELECT {cols} FROM src ON CONFLICT ({keys}) {action} \
                 RETURNING (xmax = 0) AS inserted) \
         SELECT (SELECT count(*) FROM src)::int8, \
                count(*) FILTER (WHERE inserted)::int8, \
                count(*) FILTER (WHERE NOT inserted)::int8 \
         FROM ins"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_compares_non_key_columns_and_quotes_everything() {
        let sql = merge_sql(
            "\"t\"",
            "pg_temp.\"s\"",
            &["id", "a\"b"],
            &["id".to_owned()],
            &OnConflict::DoUpdate { compare: ChangeDetection::AllColumns },
        );
        assert!(sql.contains("ON CONFLICT (\"id\") DO UPDATE SET \"a\"\"b\" = EXCLUDED.\"a\"\"b\""), "{sql}");
        assert!(sql.contains("ROW(t.\"a\"\"b\") IS DISTINCT FROM ROW(EXCLUDED.\"a\"\"b\")"), "{sql}");
        // Only key columns: nothing to update.
        let sql = merge_sql(
            "\"t\"",
            "s",
            &["id"],
            &["id".to_owned()],
            &OnConflict::DoUpdate { compare: ChangeDetection::AllColumns },
        );
        assert!(sql.contains("DO NOTHING"));
    }
}

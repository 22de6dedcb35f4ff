//! Quoting of SQL identifiers. Every table and column name this crate puts into SQL goes through
//! [`quote_ident`]; values never do (they travel in COPY data or bind parameters).

use std::fmt;

/// Quotes an identifier for PostgreSQL: wraps it in double quotes and doubles embedded quotes, so
/// any string — `x"; DROP TABLE y; --` included — is a plain name.
///
/// ```
/// assert_eq!(etlkit_postgres::quote_ident(r#"x"; DROP TABLE y; --"#), r#""x""; DROP TABLE y; --""#);
/// ```
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The longest identifier PostgreSQL keeps whole (`NAMEDATALEN - 1`); longer ones are truncated.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// An error when `name` is longer than [`MAX_IDENTIFIER_BYTES`] (PostgreSQL would cut it silently).
pub(crate) fn check_identifier(field: &'static str, name: &str) -> crate::error::Result<()> {
    if name.len() > MAX_IDENTIFIER_BYTES {
        return Err(crate::error::PgError::InvalidConfig {
            field,
            reason: format!(
                "`{name}` is {} bytes long; PostgreSQL identifiers hold at most {MAX_IDENTIFIER_BYTES} bytes and longer ones are silently cut",
                name.len()
            ),
        });
    }
    Ok(())
}

/// A table name, optionally schema-qualified. Names are taken verbatim (case and all); they are
/// never parsed for dots or quotes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRef {
    /// The schema, or `None` for the connection's `search_path`.
    pub schema: Option<String>,
    /// The table name.
    pub name: String,
}

impl TableRef {
    /// A table looked up through `search_path`.
    pub fn new(name: impl Into<String>) -> Self {
        TableRef { schema: None, name: name.into() }
    }

    /// A schema-qualified table.
    pub fn qualified(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableRef { schema: Some(schema.into()), name: name.into() }
    }

    /// Checks that the name (and schema) can be used as given: not empty and at most
    /// [`MAX_IDENTIFIER_BYTES`] bytes, since PostgreSQL silently cuts longer names (a 70-character
    /// table name would become another, 63-byte name). `field` names the config field in the error.
    pub fn validate(&self, field: &'static str) -> crate::error::Result<()> {
        if self.name.is_empty() {
            return Err(crate::error::PgError::InvalidConfig { field, reason: "must name a table".into() });
        }
        check_identifier(field, &self.name)?;
        match &self.schema {
            Some(s) => check_identifier(field, s),
            None => Ok(()),
        }
    }

    /// The quoted (and qualified, when a schema is set) name, ready for SQL.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", quote_ident(s), quote_ident(&self.name)),
            None => quote_ident(&self.name),
        }
    }
}

impl fmt::Display for TableRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.quoted())
    }
}

impl From<&str> for TableRef {
    fn from(name: &str) -> Self {
        TableRef::new(name)
    }
}

/// Quotes and joins column names with `, `.
pub(crate) fn column_list<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    names.into_iter().map(quote_ident).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_doubled_and_schema_is_kept_apart() {
        assert_eq!(quote_ident("plain"), "\"plain\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(TableRef::qualified("s.x", "t").quoted(), "\"s.x\".\"t\"");
        assert_eq!(column_list(["a", "B"]), "\"a\", \"B\"");
    }
}

//! Connecting: a pool sized for the sink's workers, and connection strings that never show their
//! password in logs or `Debug` output.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::error::{PgError, Result};

/// A PostgreSQL connection URL whose `Debug` and `Display` hide the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Wraps a URL such as `postgres://user:secret@host:5432/db`.
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseUrl(url.into())
    }

    /// The full URL, password included. Do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Replaces the password of a `scheme://user:password@host/...` URL and any `password=` query
/// parameter with `***`.
pub fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..].find(['/', '?']).map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    if let Some(p) = out.find("password=") {
        let start = p + "password=".len();
        let end = out[start..].find('&').map_or(out.len(), |i| start + i);
        out.replace_range(start..end, "***");
    }
    out
}

/// Opens a pool of up to `max_connections` connections (give it at least the pipeline's `workers`
/// plus one), with `application_name` set so loader sessions are easy to find in
/// `pg_stat_activity`.
pub async fn connect(url: &DatabaseUrl, max_connections: u32, application_name: &str) -> Result<PgPool> {
    let opts = PgConnectOptions::from_str(url.expose())
        .map_err(|e| PgError::db("parsing the connection URL", url.redacted(), e))?
        .application_name(application_name);
    PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(Duration::from_secs(60))
        .connect_with(opts)
        .await
        .map_err(|e| PgError::db("connecting", url.redacted(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        let u = DatabaseUrl::new("postgres://bob:s3cr3t@db:5432/x?sslmode=disable&password=other");
        let shown = format!("{u:?} {u}");
        assert!(!shown.contains("s3cr3t") && !shown.contains("other"), "{shown}");
        assert_eq!(redact("postgres://bob@db/x"), "postgres://bob@db/x");
        assert_eq!(redact("postgres://bob:pw@db/x"), "postgres://bob:***@db/x");
    }
}

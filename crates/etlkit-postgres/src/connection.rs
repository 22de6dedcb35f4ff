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

/// How [`connect_with`] opens a pool. Plain struct with documented defaults; see [`ConnectConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectConfig {
    /// Most connections the pool opens (give it at least the pipeline's `workers` plus one). Default 4.
    pub max_connections: u32,
    /// `application_name` of every session, so loader sessions are easy to find in
    /// `pg_stat_activity`. Default `etlkit`.
    pub application_name: String,
    /// How long opening a connection (and later, waiting for a free one in the pool) may take before
    /// the call fails. Default 10 s. A refused or failed connection fails at once with its real cause
    /// (`connection refused`, `password authentication failed`), not a pool time-out.
    pub connect_timeout: Duration,
}

impl Default for ConnectConfig {
    fn default() -> Self {
        ConnectConfig {
            max_connections: 4,
            application_name: "etlkit".to_owned(),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl ConnectConfig {
    /// Checks the values: `max_connections` ≥ 1 and a positive `connect_timeout`.
    pub fn validate(&self) -> Result<()> {
        if self.max_connections == 0 {
            return Err(PgError::InvalidConfig {
                field: "max_connections",
                reason: "must be at least 1".into(),
            });
        }
        if self.connect_timeout.is_zero() {
            return Err(PgError::InvalidConfig {
                field: "connect_timeout",
                reason: "must be positive".into(),
            });
        }
        Ok(())
    }
}

/// Opens a pool of up to `max_connections` connections with the default [`ConnectConfig`] otherwise
/// (10 s connect time-out). See [`connect_with`].
pub async fn connect(url: &DatabaseUrl, max_connections: u32, application_name: &str) -> Result<PgPool> {
    connect_with(
        url,
        &ConnectConfig {
            max_connections: max_connections.max(1),
            application_name: application_name.to_owned(),
            ..ConnectConfig::default()
        },
    )
    .await
}

/// Opens a pool as `config` says. The URL must be a `postgres://` or `postgresql://` URL (anything
/// else, e.g. `mysql://`, is an [`PgError::InvalidConfig`] naming the scheme). One connection is
/// opened right away, so a wrong host, port, user or password fails here with the server's or the
/// operating system's own error; a server that does not answer fails after `connect_timeout` with
/// [`PgError::Timeout`]. The password never appears in the error.
pub async fn connect_with(url: &DatabaseUrl, config: &ConnectConfig) -> Result<PgPool> {
    config.validate()?;
    check_scheme(url)?;
    let opts = PgConnectOptions::from_str(url.expose())
        .map_err(|e| PgError::db("parsing the connection URL", url.redacted(), e))?
        .application_name(&config.application_name);
    let timeout = config.connect_timeout;
    let pool = PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(timeout)
        .connect_lazy_with(opts.clone());
    // The first connection outside the pool's retry loop: its error is the real cause.
    let first = tokio::time::timeout(timeout, sqlx::ConnectOptions::connect(&opts))
        .await
        .map_err(|_| PgError::Timeout { action: "connecting", seconds: timeout.as_secs_f64() })?
        .map_err(|e| PgError::db("connecting", url.redacted(), e))?;
    sqlx::Connection::close(first).await.map_err(|e| PgError::db("connecting", url.redacted(), e))?;
    Ok(pool)
}

fn check_scheme(url: &DatabaseUrl) -> Result<()> {
    let scheme = url.expose().split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        Some("postgres" | "postgresql") => Ok(()),
        Some(other) => Err(PgError::InvalidConfig {
            field: "url",
            reason: format!(
                "has the scheme `{other}://`; etlkit-postgres connects to PostgreSQL only (`postgres://` or `postgresql://`): {}",
                url.redacted()
            ),
        }),
        None => Err(PgError::InvalidConfig {
            field: "url",
            reason: format!("is not a `postgres://` URL: {}", url.redacted()),
        }),
    }
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

//! [`PgConnector`]: where plan nodes get their PostgreSQL connections. Plans hold a connector, never
//! a connection; the connector's `name` is all that a serialized plan carries (see [`crate::codec`]),
//! and the URL (with its password) stays in the process that made it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use etlkit_postgres::DatabaseUrl;
use etlkit_postgres::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use etlkit_postgres::sqlx::{Executor, PgPool};
use tokio::sync::OnceCell;

use crate::error::{DfError, Result};

/// Environment variable an executor reads for connector `name` (upper-cased, `-` → `_`):
/// `ETLKIT_PG_URL_<NAME>`, falling back to `DATABASE_URL` for the connector named `default`.
pub fn url_variable(name: &str) -> String {
    format!("ETLKIT_PG_URL_{}", name.to_ascii_uppercase().replace('-', "_"))
}

/// A named PostgreSQL database: the URL (password redacted in `Debug`), a shared pool for writes and
/// catalog look-ups (created on first use), and dedicated connections for snapshot reads.
pub struct PgConnector {
    name: String,
    url: DatabaseUrl,
    max_connections: u32,
    pool: OnceCell<PgPool>,
}

impl fmt::Debug for PgConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgConnector")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl PgConnector {
    /// A connector named `name` for `url`, whose shared pool holds at most `max_connections`.
    pub fn new(name: impl Into<String>, url: DatabaseUrl, max_connections: u32) -> Arc<Self> {
        Arc::new(PgConnector {
            name: name.into(),
            url,
            max_connections: max_connections.max(1),
            pool: OnceCell::new(),
        })
    }

    /// The connector's URL from this process's environment: `ETLKIT_PG_URL_<NAME>`, or for `default`
    /// also `DATABASE_URL`. This is how an executor resolves the connector named in a plan.
    pub fn from_env(name: &str, max_connections: u32) -> Result<Arc<Self>> {
        let var = url_variable(name);
        let url = std::env::var(&var)
            .ok()
            .or_else(|| (name == "default").then(|| std::env::var("DATABASE_URL").ok()).flatten())
            .ok_or_else(|| DfError::InvalidConfig {
                field: "connector",
                reason: format!("no URL for connector `{name}`: set {var}"),
            })?;
        Ok(Self::new(name, DatabaseUrl::new(url), max_connections))
    }

    /// The name plans carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL (its `Debug`/`Display` hide the password).
    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// The shared pool (connected on first call).
    pub async fn pool(&self) -> Result<PgPool> {
        let pool = self
            .pool
            .get_or_try_init(|| async {
                etlkit_postgres::connect(&self.url, self.max_connections, "etlkit-datafusion").await
            })
            .await?;
        Ok(pool.clone())
    }

    fn options(&self) -> Result<PgConnectOptions> {
        PgConnectOptions::from_str(self.url.expose())
            .map(|o| o.application_name("etlkit-datafusion"))
            .map_err(|e| DfError::db("parsing the connection URL", self.url.redacted(), e))
    }

    /// A one-connection pool whose connection runs inside a `REPEATABLE READ READ ONLY` transaction
    /// importing `snapshot` (from `pg_export_snapshot()`): everything read through it sees exactly
    /// the exporting transaction's data.
    pub(crate) async fn snapshot_pool(&self, snapshot: &str) -> Result<PgPool> {
        check_snapshot_id(snapshot)?;
        let set = format!("SET TRANSACTION SNAPSHOT '{snapshot}'");
        let options = self.options()?;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(60))
            .after_connect(move |conn, _meta| {
                let set = set.clone();
                Box::pin(async move {
                    conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
                    conn.execute(etlkit_postgres::sqlx::AssertSqlSafe(set)).await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| DfError::db("importing the scan snapshot", self.url.redacted(), e))?;
        Ok(pool)
    }
}

/// Snapshot ids are hex digits and dashes (`00000003-0000001B-1`); anything else is refused before
/// it reaches SQL.
pub(crate) fn check_snapshot_id(id: &str) -> Result<()> {
    if !id.is_empty() && id.len() < 64 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        Ok(())
    } else {
        Err(DfError::InvalidConfig { field: "snapshot", reason: format!("{id:?} is not a snapshot id") })
    }
}

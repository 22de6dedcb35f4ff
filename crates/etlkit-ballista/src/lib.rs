//! # etlkit-ballista
//!
//! etlkit's DataFusion tables on an [Apache DataFusion Ballista](https://datafusion.apache.org/ballista/)
//! cluster: the same `INSERT INTO pg_table SELECT ...` and PostgreSQL scans as in one process
//! ([`etlkit_datafusion`]), with their partitions spread over executors.
//!
//! Three pieces, each one function over Ballista's own library:
//! - [`run_scheduler`] (binary `etlkit-ballista-scheduler`): a Ballista scheduler whose codecs know
//!   etlkit's tables and plan nodes ([`etlkit_datafusion::codec`]) and whose sessions have etlkit's
//!   SQL functions.
//! - [`run_executor`] (binary `etlkit-ballista-executor`): a Ballista executor with the same codecs
//!   and functions.
//! - [`remote_context`]: a client `SessionContext` that plans on the scheduler.
//!
//! What travels between them is a recipe (connector name, table, columns, mode, run id, partition
//! bounds, snapshot id), never a connection or a password: the scheduler and every executor resolve
//! a connector name from their own environment (`ETLKIT_PG_URL_<NAME>`, or `DATABASE_URL` for the
//! connector named `default`). Everything binds to 127.0.0.1 unless told otherwise.
//!
//! ```no_run
//! use etlkit_ballista::remote_context;
//! use etlkit_datafusion::codec::Connectors;
//! use etlkit_datafusion::{PgConnector, PgTable, PgTableOptions};
//! use etlkit_datafusion::datafusion::prelude::ParquetReadOptions;
//! use etlkit_postgres::{DatabaseUrl, TableRef};
//! use std::sync::Arc;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // Executors and the scheduler were started with DATABASE_URL set to the same database.
//! let pg = PgConnector::new("default", DatabaseUrl::new("postgres://etl@127.0.0.1/etl"), 4);
//! let ctx = remote_context("df://127.0.0.1:50050", Connectors::from_env(4).with(pg.clone())).await?;
//! ctx.register_table("trips", Arc::new(PgTable::new(pg, TableRef::new("trips"), PgTableOptions::default()).await?))?;
//! ctx.register_parquet("raw", "/data/trips/", ParquetReadOptions::default()).await?;
//! ctx.sql("INSERT INTO trips SELECT * FROM raw").await?.collect().await?;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ballista::prelude::SessionContextExt;
use ballista_core::extension::SessionConfigExt;
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use ballista_core::utils::default_session_builder;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::PhysicalExtensionCodec;
use etlkit_datafusion::codec::{Connectors, EtlkitLogicalCodec, EtlkitPhysicalCodec};
use etlkit_datafusion::datafusion::execution::FunctionRegistry;
use etlkit_datafusion::datafusion::execution::SessionStateBuilder;
use etlkit_datafusion::datafusion::logical_expr::ScalarUDF;
use etlkit_datafusion::datafusion::prelude::{SessionConfig, SessionContext};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// A setting is out of range or inconsistent.
    #[error("invalid configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The field.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// Ballista failed (binding, registering, scheduling).
    #[error("ballista {action} failed")]
    Ballista {
        /// What was being done.
        action: &'static str,
        /// Ballista's error.
        #[source]
        source: ballista_core::error::BallistaError,
    },
    /// DataFusion failed (creating the client session).
    #[error(transparent)]
    DataFusion(#[from] etlkit_datafusion::datafusion::error::DataFusionError),
}

/// The SQL functions etlkit adds to every session (`etlkit_row_hash`, `etlkit_row_hash_blake3`).
pub fn functions() -> Vec<Arc<ScalarUDF>> {
    vec![Arc::new(etlkit_datafusion::row_hash_udf()), Arc::new(etlkit_datafusion::row_hash_blake3_udf())]
}

/// Ballista's codecs wrapped in etlkit's: etlkit's tables and nodes as recipes, everything else as
/// Ballista writes it.
pub fn codecs(connectors: Connectors) -> (Arc<dyn LogicalExtensionCodec>, Arc<dyn PhysicalExtensionCodec>) {
    (
        Arc::new(EtlkitLogicalCodec::new(
            Arc::new(BallistaLogicalExtensionCodec::default()),
            connectors.clone(),
        )),
        Arc::new(EtlkitPhysicalCodec::new(Arc::new(BallistaPhysicalExtensionCodec::default()), connectors)),
    )
}

/// A client session that plans and runs every query on the Ballista scheduler at `url`
/// (`df://HOST:PORT`), with etlkit's codecs and SQL functions. Register [`PgTable`]s on it as on a
/// local `SessionContext`; their connectors are named in the plans, and the cluster resolves the
/// names from its own environment.
///
/// [`PgTable`]: etlkit_datafusion::PgTable
pub async fn remote_context(url: &str, connectors: Connectors) -> Result<SessionContext, ClusterError> {
    let (logical, physical) = codecs(connectors);
    let config = SessionConfig::new_with_ballista()
        .with_ballista_logical_extension_codec(logical)
        .with_ballista_physical_extension_codec(physical);
    let state = SessionStateBuilder::new().with_default_features().with_config(config).build();
    let ctx = SessionContext::remote_with_state(url, state).await?;
    etlkit_datafusion::register_functions(&ctx);
    Ok(ctx)
}

/// How [`run_scheduler`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// Address the scheduler's gRPC service binds. Default `127.0.0.1:50050`.
    pub bind: SocketAddr,
    /// Connections per PostgreSQL connector pool (planning reads catalogs and exports scan
    /// snapshots). Default 4.
    pub max_connections: u32,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions { bind: SocketAddr::from(([127, 0, 0, 1], 50050)), max_connections: 4 }
    }
}

impl SchedulerOptions {
    /// Checks the options.
    pub fn validate(&self) -> Result<(), ClusterError> {
        if self.max_connections == 0 {
            return Err(ClusterError::InvalidConfig {
                field: "max_connections",
                reason: "must be positive".into(),
            });
        }
        Ok(())
    }
}

/// Runs a Ballista scheduler with etlkit's codecs and functions until the process ends.
pub async fn run_scheduler(options: SchedulerOptions) -> Result<(), ClusterError> {
    options.validate()?;
    let (logical, physical) = codecs(Connectors::from_env(options.max_connections));
    let session_builder = Arc::new(|config: SessionConfig| {
        let mut state = default_session_builder(config)?;
        for f in functions() {
            state.register_udf(f)?;
        }
        Ok(state)
    });
    let config = SchedulerConfig {
        bind_host: options.bind.ip().to_string(),
        bind_port: options.bind.port(),
        external_host: options.bind.ip().to_string(),
        override_logical_codec: Some(logical),
        override_physical_codec: Some(physical),
        override_session_builder: Some(session_builder),
        ..SchedulerConfig::default()
    };
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|source| ClusterError::Ballista { action: "creating the cluster state", source })?;
    start_server(cluster, options.bind, Arc::new(config))
        .await
        .map_err(|source| ClusterError::Ballista { action: "serving the scheduler", source })
}

/// How [`run_executor`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorOptions {
    /// The scheduler's address. Default `127.0.0.1:50050`.
    pub scheduler: SocketAddr,
    /// Host the executor binds and advertises. Default `127.0.0.1`.
    pub host: String,
    /// Port of the executor's Arrow Flight service (shuffle reads). Default 50051.
    pub port: u16,
    /// Port of the executor's gRPC service. Default 50052.
    pub grpc_port: u16,
    /// Concurrent tasks. `0` (the default): the machine's cores.
    pub vcores: usize,
    /// Directory for shuffle files. Default: a fresh temporary directory.
    pub work_dir: Option<PathBuf>,
    /// Connections per PostgreSQL connector pool. Default 8.
    pub max_connections: u32,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        ExecutorOptions {
            scheduler: SocketAddr::from(([127, 0, 0, 1], 50050)),
            host: "127.0.0.1".into(),
            port: 50051,
            grpc_port: 50052,
            vcores: 0,
            work_dir: None,
            max_connections: 8,
        }
    }
}

impl ExecutorOptions {
    /// Checks the options.
    pub fn validate(&self) -> Result<(), ClusterError> {
        if self.max_connections == 0 {
            return Err(ClusterError::InvalidConfig {
                field: "max_connections",
                reason: "must be positive".into(),
            });
        }
        if self.port == self.grpc_port {
            return Err(ClusterError::InvalidConfig {
                field: "grpc_port",
                reason: format!("must differ from port ({})", self.port),
            });
        }
        Ok(())
    }
}

/// Runs a Ballista executor with etlkit's codecs and functions until the process ends.
pub async fn run_executor(options: ExecutorOptions) -> Result<(), ClusterError> {
    options.validate()?;
    let (logical, physical) = codecs(Connectors::from_env(options.max_connections));
    let mut registry = BallistaFunctionRegistry::default();
    for f in functions() {
        registry.scalar_functions.insert(f.name().to_owned(), f);
    }
    let config = ExecutorProcessConfig {
        bind_host: options.host.clone(),
        external_host: Some(options.host.clone()),
        port: options.port,
        grpc_port: options.grpc_port,
        scheduler_host: options.scheduler.ip().to_string(),
        scheduler_port: options.scheduler.port(),
        scheduler_connect_timeout_seconds: 30,
        vcores: options.vcores,
        work_dir: options.work_dir.as_ref().map(|p| p.display().to_string()),
        print_thread_info: false,
        override_logical_codec: Some(logical),
        override_physical_codec: Some(physical),
        override_function_registry: Some(Arc::new(registry)),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config))
        .await
        .map_err(|source| ClusterError::Ballista { action: "running the executor", source })
}

/// Parses `--name value` pairs for the binaries: the value after `name`, if present.
#[doc(hidden)]
pub fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

/// Logs to stderr at `RUST_LOG` (default `info`) for the binaries.
#[doc(hidden)]
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

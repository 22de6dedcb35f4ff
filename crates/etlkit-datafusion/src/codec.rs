//! Plan codecs, so etlkit's tables and plan nodes can be shipped to other processes (a Ballista
//! scheduler and its executors).
//!
//! What the bytes carry is a **recipe**: the connector's *name*, the table, its catalog columns, the
//! write mode and commit protocol, the run id, partition bounds and the scan's snapshot id; for a
//! graph table the Bolt connection's name, the mapping and the writer's settings. Never a connection
//! and never a URL, user or password: the decoding process resolves names through its own
//! [`Connectors`] (by default its environment: `ETLKIT_PG_URL_<NAME>`, or `DATABASE_URL` for the
//! connector named `default`, see [`url_variable`](crate::url_variable); `ETLKIT_BOLT_URI_<NAME>`,
//! `ETLKIT_BOLT_USER_<NAME>`, `ETLKIT_BOLT_PASSWORD_<NAME>`, or `BOLT_URI`, `BOLT_USER`,
//! `BOLT_PASSWORD` for `default`).
//!
//! Both codecs wrap another codec (Ballista's own, or DataFusion's default) and hand it every node
//! that is not etlkit's, so they can replace Ballista's codecs in its configuration:
//!
//! ```no_run
//! use etlkit_datafusion::codec::{Connectors, EtlkitLogicalCodec, EtlkitPhysicalCodec};
//! use datafusion_proto::logical_plan::DefaultLogicalExtensionCodec;
//! use datafusion_proto::physical_plan::DefaultPhysicalExtensionCodec;
//! use std::sync::Arc;
//!
//! let connectors = Connectors::from_env(8);
//! let logical = EtlkitLogicalCodec::new(Arc::new(DefaultLogicalExtensionCodec {}), connectors.clone());
//! let physical = EtlkitPhysicalCodec::new(Arc::new(DefaultPhysicalExtensionCodec {}), connectors);
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, HigherOrderUDF, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion::physical_expr_common::physical_expr::proto_decode::PhysicalExprDecodeCtx;
use datafusion::physical_expr_common::physical_expr::proto_encode::PhysicalExprEncodeCtx;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use etlkit_neo4j::{GraphConfig, GraphMapping, GraphWriter, NullKeyPolicy};
use etlkit_postgres::{PgType, TableColumn, TableRef};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::connector::PgConnector;
use crate::error::DfError;
use crate::graph::{GraphInsertExec, GraphTable, GraphTarget};
use crate::scan::{PgScanExec, ScanPartitioning, SnapshotHolder};
use crate::table::{PgTable, PgTableOptions};
use crate::write::{CommitProtocol, PgCommitExec, PgWriteExec, WriteMode, WriteTarget};

/// Every etlkit node's bytes start with this; anything else belongs to the wrapped codec.
const MAGIC: &[u8; 7] = b"etlkit\x01";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Table = b'T',
    Scan = b'S',
    Write = b'W',
    Commit = b'C',
    GraphTable = b'G',
    GraphInsert = b'N',
}

/// Where a process that decodes plans gets the [`PgConnector`] a plan names: connectors registered
/// here first, else the environment ([`PgConnector::from_env`]). Each name resolves once per
/// process, so every plan naming it shares one connection pool.
#[derive(Clone)]
pub struct Connectors {
    known: Arc<Mutex<HashMap<String, Arc<PgConnector>>>>,
    graphs: Arc<Mutex<HashMap<String, Arc<GraphWriter>>>>,
    max_connections: u32,
}

impl fmt::Debug for Connectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.known.lock().map(|k| k.keys().cloned().collect()).unwrap_or_default();
        f.debug_struct("Connectors")
            .field("names", &names)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl Connectors {
    /// Connectors from this process's environment; pools created for them hold at most
    /// `max_connections` connections each.
    pub fn from_env(max_connections: u32) -> Self {
        Connectors { known: Arc::default(), graphs: Arc::default(), max_connections: max_connections.max(1) }
    }

    /// Registers `connector` under its name (it wins over the environment).
    pub fn with(self, connector: Arc<PgConnector>) -> Self {
        if let Ok(mut known) = self.known.lock() {
            known.insert(connector.name().to_owned(), connector);
        }
        self
    }

    /// Registers `writer` as the Bolt connection named `name` (it wins over the environment; the
    /// settings a plan carries are then ignored in favour of the writer's own).
    pub fn with_graph(self, name: &str, writer: Arc<GraphWriter>) -> Self {
        if let Ok(mut graphs) = self.graphs.lock() {
            graphs.insert(name.to_owned(), writer);
        }
        self
    }

    /// The Bolt connection named `name`: a registered writer, else one connected with `settings`
    /// and the URI, user and password from this process's environment: `ETLKIT_BOLT_URI_<NAME>`,
    /// `ETLKIT_BOLT_USER_<NAME>`, `ETLKIT_BOLT_PASSWORD_<NAME>` (for `default` also `BOLT_URI`,
    /// `BOLT_USER`, `BOLT_PASSWORD`). The user defaults to `neo4j` and the password to empty.
    fn graph(&self, name: &str, settings: &GraphSettings) -> Result<Arc<GraphWriter>, DfError> {
        let mut graphs = self
            .graphs
            .lock()
            .map_err(|_| DfError::Codec { reason: "connector registry poisoned".into() })?;
        if let Some(w) = graphs.get(name) {
            return Ok(w.clone());
        }
        let suffix = name.to_ascii_uppercase().replace('-', "_");
        let var = |what: &str| {
            std::env::var(format!("ETLKIT_BOLT_{what}_{suffix}"))
                .ok()
                .or_else(|| (name == "default").then(|| std::env::var(format!("BOLT_{what}")).ok()).flatten())
        };
        let uri = var("URI").ok_or_else(|| DfError::InvalidConfig {
            field: "connector",
            reason: format!("no Bolt URI for connector `{name}`: set ETLKIT_BOLT_URI_{suffix}"),
        })?;
        let mut config = settings.config();
        config.uri = uri;
        config.user = var("USER").unwrap_or_else(|| "neo4j".to_owned());
        config.password = var("PASSWORD").unwrap_or_default();
        let writer = Arc::new(GraphWriter::connect(config)?);
        graphs.insert(name.to_owned(), writer.clone());
        Ok(writer)
    }

    /// The connector named `name`.
    pub fn resolve(&self, name: &str) -> Result<Arc<PgConnector>, DfError> {
        let mut known =
            self.known.lock().map_err(|_| DfError::Codec { reason: "connector registry poisoned".into() })?;
        if let Some(c) = known.get(name) {
            return Ok(c.clone());
        }
        let c = PgConnector::from_env(name, self.max_connections)?;
        known.insert(name.to_owned(), c.clone());
        Ok(c)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct TableRecipe {
    schema: Option<String>,
    name: String,
}

impl TableRecipe {
    fn of(t: &TableRef) -> Self {
        TableRecipe { schema: t.schema.clone(), name: t.name.clone() }
    }
    fn table(&self) -> TableRef {
        TableRef { schema: self.schema.clone(), name: self.name.clone() }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct ColumnRecipe {
    name: String,
    declared: String,
    /// `(oid, typmod)`, absent for a type etlkit does not support.
    pg_type: Option<(u32, i32)>,
    not_null: bool,
}

fn columns_recipe(columns: &[TableColumn]) -> Vec<ColumnRecipe> {
    columns
        .iter()
        .map(|c| ColumnRecipe {
            name: c.name.clone(),
            declared: c.declared.clone(),
            pg_type: c.pg_type.as_ref().map(PgType::oid_typmod),
            not_null: c.not_null,
        })
        .collect()
}

fn columns_of(recipe: Vec<ColumnRecipe>) -> Vec<TableColumn> {
    recipe
        .into_iter()
        .map(|c| TableColumn {
            name: c.name,
            declared: c.declared,
            pg_type: c.pg_type.and_then(|(oid, typmod)| PgType::from_oid(oid, typmod)),
            not_null: c.not_null,
        })
        .collect()
}

/// A [`PgTable`] as a recipe.
#[derive(Debug, Serialize, Deserialize)]
struct PgTableRecipe {
    connector: String,
    table: TableRecipe,
    namespace: String,
    columns: Vec<ColumnRecipe>,
    primary_key: Vec<String>,
    int_key: Option<String>,
    scan_partitions: usize,
    batch_size: usize,
    upsert_key: Vec<String>,
    send_buffer: usize,
    commit: CommitProtocol,
}

/// A [`GraphWriter`]'s settings without its URI, user and password.
#[derive(Debug, Serialize, Deserialize)]
struct GraphSettings {
    database: String,
    batch_rows: usize,
    max_message_bytes: usize,
    workers: usize,
    max_attempts: u32,
    backoff_initial_ms: u64,
    backoff_max_ms: u64,
    response_timeout_ms: u64,
    on_null_key: NullKeyPolicy,
}

impl GraphSettings {
    fn of(c: &GraphConfig) -> Self {
        GraphSettings {
            database: c.database.clone(),
            batch_rows: c.batch_rows,
            max_message_bytes: c.max_message_bytes,
            workers: c.workers,
            max_attempts: c.max_attempts,
            backoff_initial_ms: c.backoff_initial.as_millis() as u64,
            backoff_max_ms: c.backoff_max.as_millis() as u64,
            response_timeout_ms: c.response_timeout.as_millis() as u64,
            on_null_key: c.on_null_key,
        }
    }

    fn config(&self) -> GraphConfig {
        GraphConfig {
            database: self.database.clone(),
            batch_rows: self.batch_rows,
            max_message_bytes: self.max_message_bytes,
            workers: self.workers,
            max_attempts: self.max_attempts,
            backoff_initial: Duration::from_millis(self.backoff_initial_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms),
            response_timeout: Duration::from_millis(self.response_timeout_ms),
            on_null_key: self.on_null_key,
            ..GraphConfig::default()
        }
    }
}

/// A [`GraphTable`] or [`GraphInsertExec`] as a recipe: the connection's name, the mapping, the
/// writer's settings.
#[derive(Debug, Serialize, Deserialize)]
struct GraphRecipe {
    connector: String,
    mapping: GraphMapping,
    settings: GraphSettings,
}

impl GraphRecipe {
    fn of(target: &GraphTarget) -> Self {
        GraphRecipe {
            connector: target.connector().to_owned(),
            mapping: target.mapping().clone(),
            settings: GraphSettings::of(target.writer().config()),
        }
    }
}

/// A [`PgScanExec`] as a recipe.
#[derive(Debug, Serialize, Deserialize)]
struct ScanRecipe {
    connector: String,
    table: TableRecipe,
    /// The projected Arrow schema, as datafusion-proto's `Schema` message.
    schema: Vec<u8>,
    partitioning: ScanPartitioning,
    limit: Option<usize>,
    batch_size: usize,
    snapshot: Option<String>,
}

/// A [`WriteTarget`] as a recipe (for [`PgWriteExec`] and [`PgCommitExec`]).
#[derive(Debug, Serialize, Deserialize)]
struct WriteRecipe {
    connector: String,
    table: TableRecipe,
    namespace: String,
    columns: Vec<ColumnRecipe>,
    #[serde(default)]
    omitted: Vec<String>,
    mode: WriteMode,
    run: String,
    send_buffer: usize,
    commit: CommitProtocol,
}

fn codec_error(reason: impl Into<String>) -> DataFusionError {
    DfError::Codec { reason: reason.into() }.into()
}

fn frame<T: Serialize>(kind: Kind, recipe: &T, buf: &mut Vec<u8>) -> DfResult<()> {
    buf.extend_from_slice(MAGIC);
    buf.push(kind as u8);
    serde_json::to_writer(&mut *buf, recipe).map_err(|e| codec_error(format!("encoding {kind:?}: {e}")))
}

/// The kind and recipe bytes of an etlkit frame, `None` for bytes of another codec.
fn unframe(buf: &[u8]) -> Option<(u8, &[u8])> {
    let rest = buf.strip_prefix(MAGIC.as_slice())?;
    let (&kind, recipe) = rest.split_first()?;
    Some((kind, recipe))
}

fn parse<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> DfResult<T> {
    serde_json::from_slice(bytes).map_err(|e| codec_error(format!("decoding {what}: {e}")))
}

fn encode_schema(schema: &Schema) -> DfResult<Vec<u8>> {
    let proto = datafusion_proto::protobuf::Schema::try_from(schema)
        .map_err(|e| codec_error(format!("encoding a schema: {e}")))?;
    Ok(proto.encode_to_vec())
}

fn decode_schema(bytes: &[u8]) -> DfResult<SchemaRef> {
    let proto = datafusion_proto::protobuf::Schema::decode(bytes)
        .map_err(|e| codec_error(format!("decoding a schema: {e}")))?;
    let schema = Schema::try_from(&proto).map_err(|e| codec_error(format!("decoding a schema: {e}")))?;
    Ok(Arc::new(schema))
}

fn write_recipe(t: &WriteTarget) -> WriteRecipe {
    WriteRecipe {
        connector: t.connector.name().to_owned(),
        table: TableRecipe::of(&t.table),
        namespace: t.namespace.clone(),
        columns: columns_recipe(&t.columns),
        omitted: t.omitted.clone(),
        mode: t.mode.clone(),
        run: t.run.clone(),
        send_buffer: t.send_buffer,
        commit: t.commit,
    }
}

fn write_target(r: WriteRecipe, connectors: &Connectors) -> DfResult<Arc<WriteTarget>> {
    // Run ids name staging tables: 16 hex digits, as `write::run_id` makes them.
    if r.run.len() != 16 || !r.run.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(codec_error(format!("{:?} is not a run id", r.run)));
    }
    Ok(Arc::new(WriteTarget {
        connector: connectors.resolve(&r.connector)?,
        table: r.table.table(),
        namespace: r.namespace,
        columns: columns_of(r.columns),
        omitted: r.omitted,
        mode: r.mode,
        run: r.run,
        send_buffer: r.send_buffer,
        commit: r.commit,
    }))
}

/// The function (UDF, UDAF, UDWF, higher-order) methods both codecs hand to `self.inner` unchanged:
/// etlkit's functions travel by name and every process registers them.
macro_rules! delegate_functions {
    () => {
        fn try_decode_udf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<ScalarUDF>> {
            self.inner.try_decode_udf(name, buf)
        }

        fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> DfResult<()> {
            self.inner.try_encode_udf(node, buf)
        }

        fn try_decode_higher_order_function(&self, name: &str, buf: &[u8]) -> DfResult<Arc<HigherOrderUDF>> {
            self.inner.try_decode_higher_order_function(name, buf)
        }

        fn try_encode_higher_order_function(&self, node: &HigherOrderUDF, buf: &mut Vec<u8>) -> DfResult<()> {
            self.inner.try_encode_higher_order_function(node, buf)
        }

        fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<AggregateUDF>> {
            self.inner.try_decode_udaf(name, buf)
        }

        fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> DfResult<()> {
            self.inner.try_encode_udaf(node, buf)
        }

        fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<WindowUDF>> {
            self.inner.try_decode_udwf(name, buf)
        }

        fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> DfResult<()> {
            self.inner.try_encode_udwf(node, buf)
        }
    };
}

/// A [`LogicalExtensionCodec`] that writes [`PgTable`]s and [`GraphTable`]s as recipes and hands
/// everything else to `inner`.
#[derive(Debug)]
pub struct EtlkitLogicalCodec {
    inner: Arc<dyn LogicalExtensionCodec>,
    connectors: Connectors,
}

impl EtlkitLogicalCodec {
    /// Wraps `inner`; decoded tables take their connectors from `connectors`.
    pub fn new(inner: Arc<dyn LogicalExtensionCodec>, connectors: Connectors) -> Self {
        EtlkitLogicalCodec { inner, connectors }
    }
}

impl LogicalExtensionCodec for EtlkitLogicalCodec {
    fn try_decode(&self, buf: &[u8], inputs: &[LogicalPlan], ctx: &TaskContext) -> DfResult<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> DfResult<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let Some((kind, recipe)) = unframe(buf) else {
            return self.inner.try_decode_table_provider(buf, table_ref, schema, ctx);
        };
        if kind == Kind::GraphTable as u8 {
            let r: GraphRecipe = parse("a graph table", recipe)?;
            let writer = self.connectors.graph(&r.connector, &r.settings)?;
            return Ok(Arc::new(GraphTable::new(writer, r.mapping, schema)?.named(r.connector)));
        }
        if kind != Kind::Table as u8 {
            return Err(codec_error(format!("table {table_ref}: not a table recipe (kind {kind})")));
        }
        let r: PgTableRecipe = parse("a PostgreSQL table", recipe)?;
        let connector = self.connectors.resolve(&r.connector)?;
        let options = PgTableOptions {
            scan_partitions: r.scan_partitions,
            batch_size: r.batch_size,
            upsert_key: r.upsert_key,
            send_buffer: r.send_buffer,
            commit: r.commit,
        };
        Ok(Arc::new(PgTable::from_parts(
            connector,
            r.table.table(),
            r.namespace,
            columns_of(r.columns),
            r.primary_key,
            r.int_key,
            schema,
            options,
        )))
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> DfResult<()> {
        let any = node.as_ref() as &dyn std::any::Any;
        if let Some(g) = any.downcast_ref::<GraphTable>() {
            return frame(Kind::GraphTable, &GraphRecipe::of(g.target()), buf);
        }
        let Some(t) = any.downcast_ref::<PgTable>() else {
            return self.inner.try_encode_table_provider(table_ref, node, buf);
        };
        let recipe = PgTableRecipe {
            connector: t.connector().name().to_owned(),
            table: TableRecipe::of(t.table()),
            namespace: t.namespace().to_owned(),
            columns: columns_recipe(t.columns()),
            primary_key: t.primary_key().to_vec(),
            int_key: t.int_key().map(str::to_owned),
            scan_partitions: t.options().scan_partitions,
            batch_size: t.options().batch_size,
            upsert_key: t.options().upsert_key.clone(),
            send_buffer: t.options().send_buffer,
            commit: t.options().commit,
        };
        frame(Kind::Table, &recipe, buf)
    }

    fn try_decode_file_format(&self, buf: &[u8], ctx: &TaskContext) -> DfResult<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(&self, buf: &mut Vec<u8>, node: Arc<dyn FileFormatFactory>) -> DfResult<()> {
        self.inner.try_encode_file_format(buf, node)
    }

    delegate_functions!();
}

/// A [`PhysicalExtensionCodec`] that writes [`PgScanExec`], [`PgWriteExec`], [`PgCommitExec`] and
/// [`GraphInsertExec`] as recipes and hands every other node to `inner`.
#[derive(Debug)]
pub struct EtlkitPhysicalCodec {
    inner: Arc<dyn PhysicalExtensionCodec>,
    connectors: Connectors,
}

impl EtlkitPhysicalCodec {
    /// Wraps `inner`; decoded nodes take their connectors from `connectors`.
    pub fn new(inner: Arc<dyn PhysicalExtensionCodec>, connectors: Connectors) -> Self {
        EtlkitPhysicalCodec { inner, connectors }
    }
}

impl PhysicalExtensionCodec for EtlkitPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some((kind, recipe)) = unframe(buf) else {
            return self.inner.try_decode(buf, inputs, ctx, proto_converter);
        };
        let one_input = |what: &str| -> DfResult<Arc<dyn ExecutionPlan>> {
            match inputs {
                [input] => Ok(input.clone()),
                _ => Err(codec_error(format!("{what} takes one input, got {}", inputs.len()))),
            }
        };
        match kind {
            k if k == Kind::Scan as u8 => {
                let r: ScanRecipe = parse("PgScanExec", recipe)?;
                let snapshot = r.snapshot.map(SnapshotHolder::exported_elsewhere);
                Ok(Arc::new(PgScanExec::new(
                    self.connectors.resolve(&r.connector)?,
                    r.table.table(),
                    decode_schema(&r.schema)?,
                    r.partitioning,
                    r.limit,
                    r.batch_size,
                    snapshot,
                )))
            }
            k if k == Kind::Write as u8 => {
                let r: WriteRecipe = parse("PgWriteExec", recipe)?;
                Ok(Arc::new(PgWriteExec::new(one_input("PgWriteExec")?, write_target(r, &self.connectors)?)))
            }
            k if k == Kind::Commit as u8 => {
                let r: WriteRecipe = parse("PgCommitExec", recipe)?;
                Ok(Arc::new(PgCommitExec::new(
                    one_input("PgCommitExec")?,
                    write_target(r, &self.connectors)?,
                )))
            }
            k if k == Kind::GraphInsert as u8 => {
                let r: GraphRecipe = parse("GraphInsertExec", recipe)?;
                let writer = self.connectors.graph(&r.connector, &r.settings)?;
                let target = GraphTarget::new(writer, r.mapping).named(r.connector);
                Ok(Arc::new(GraphInsertExec::new(one_input("GraphInsertExec")?, target)))
            }
            other => Err(codec_error(format!("unknown etlkit plan node kind {other}"))),
        }
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        let any = node.as_ref() as &dyn std::any::Any;
        if let Some(scan) = any.downcast_ref::<PgScanExec>() {
            let recipe = ScanRecipe {
                connector: scan.connector().name().to_owned(),
                table: TableRecipe::of(scan.table()),
                schema: encode_schema(&scan.schema())?,
                partitioning: scan.partitioning().clone(),
                limit: scan.limit(),
                batch_size: scan.batch_size(),
                snapshot: scan.snapshot_id().map(str::to_owned),
            };
            return frame(Kind::Scan, &recipe, buf);
        }
        if let Some(write) = any.downcast_ref::<PgWriteExec>() {
            return frame(Kind::Write, &write_recipe(write.target()), buf);
        }
        if let Some(commit) = any.downcast_ref::<PgCommitExec>() {
            return frame(Kind::Commit, &write_recipe(commit.target()), buf);
        }
        if let Some(g) = any.downcast_ref::<GraphInsertExec>() {
            return frame(Kind::GraphInsert, &GraphRecipe::of(g.target()), buf);
        }
        self.inner.try_encode(node, buf, proto_converter)
    }

    delegate_functions!();

    fn try_decode_expr(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn PhysicalExpr>],
        ctx: &PhysicalExprDecodeCtx<'_>,
    ) -> DfResult<Arc<dyn PhysicalExpr>> {
        self.inner.try_decode_expr(buf, inputs, ctx)
    }

    fn try_encode_expr(
        &self,
        node: &Arc<dyn PhysicalExpr>,
        buf: &mut Vec<u8>,
        ctx: &PhysicalExprEncodeCtx<'_>,
    ) -> DfResult<()> {
        self.inner.try_encode_expr(node, buf, ctx)
    }
}

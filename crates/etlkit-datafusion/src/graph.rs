//! [`GraphTable`]: a Neo4j/Bolt graph as a write-only DataFusion table. `INSERT INTO` writes each row
//! as nodes and/or relationships through etlkit-neo4j's [`GraphSink`] on a shared [`GraphWriter`], so
//! it keeps that sink's guarantees: uniqueness constraints on node keys created before any data,
//! batched `UNWIND` in explicit transactions (one or more per batch), transient errors retried,
//! partition locks keeping a node key in one transaction at a time, NULL keys failing the write.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use etlkit_core::{Context, Sink};
use etlkit_neo4j::{GraphMapping, GraphSink, GraphWriter, NodeSpec, RelSpec};
use futures::StreamExt;

use crate::error::{DfError, Result};

/// A graph (nodes and/or relationships per a [`GraphMapping`]) as a table: `INSERT INTO` only.
///
/// `schema` is the table's columns (what `INSERT INTO ... SELECT` must provide); the mapping reads
/// them by name. Scans, `INSERT OVERWRITE` and `REPLACE` are refused: writes are `MERGE`s, so
/// re-running an insert is safe.
#[derive(Debug)]
pub struct GraphTable {
    target: GraphTarget,
    schema: SchemaRef,
}

/// What a graph write goes to: the writer, the Bolt connection's name in plans, the mapping.
#[derive(Debug, Clone)]
pub struct GraphTarget {
    writer: Arc<GraphWriter>,
    connector: String,
    mapping: GraphMapping,
}

impl GraphTarget {
    /// Writes `mapping` through `writer`; the connection is named `default` in plans.
    pub fn new(writer: Arc<GraphWriter>, mapping: GraphMapping) -> Self {
        GraphTarget { writer, connector: "default".to_owned(), mapping }
    }

    /// Names the Bolt connection for plans sent to other processes (default `default`): they
    /// connect with `ETLKIT_BOLT_URI_<NAME>`, `ETLKIT_BOLT_USER_<NAME>` and
    /// `ETLKIT_BOLT_PASSWORD_<NAME>` (for `default` also `BOLT_URI`, `BOLT_USER`, `BOLT_PASSWORD`)
    /// and this writer's other settings; see [`crate::codec`].
    pub fn named(mut self, connector: impl Into<String>) -> Self {
        self.connector = connector.into();
        self
    }

    /// The Bolt connection's name in plans.
    pub fn connector(&self) -> &str {
        &self.connector
    }

    /// The writer.
    pub fn writer(&self) -> &Arc<GraphWriter> {
        &self.writer
    }

    /// The mapping.
    pub fn mapping(&self) -> &GraphMapping {
        &self.mapping
    }
}

impl GraphTable {
    /// A table writing `mapping` for rows of `schema` through `writer`.
    pub fn new(writer: Arc<GraphWriter>, mapping: GraphMapping, schema: SchemaRef) -> Result<Self> {
        mapping.validate().map_err(DfError::Graph)?;
        for c in mapping
            .nodes
            .iter()
            .flat_map(NodeSpec::columns)
            .chain(mapping.relationships.iter().flat_map(RelSpec::columns))
        {
            if schema.field_with_name(c).is_err() {
                return Err(DfError::InvalidConfig {
                    field: "schema",
                    reason: format!("the mapping reads column `{c}`, which the table schema lacks"),
                });
            }
        }
        Ok(GraphTable { target: GraphTarget::new(writer, mapping), schema })
    }

    /// Names the Bolt connection for plans sent to other processes (see [`GraphTarget::named`]).
    pub fn named(mut self, connector: impl Into<String>) -> Self {
        self.target = self.target.named(connector);
        self
    }

    /// What the table writes to.
    pub fn target(&self) -> &GraphTarget {
        &self.target
    }

    /// A table of nodes of one kind.
    pub fn nodes(writer: Arc<GraphWriter>, spec: NodeSpec, schema: SchemaRef) -> Result<Self> {
        Self::new(writer, GraphMapping { nodes: vec![spec], relationships: vec![] }, schema)
    }

    /// A table of relationships of one kind (both endpoint nodes must exist).
    pub fn relationships(writer: Arc<GraphWriter>, spec: RelSpec, schema: SchemaRef) -> Result<Self> {
        Self::new(writer, GraphMapping { nodes: vec![], relationships: vec![spec] }, schema)
    }
}

#[async_trait]
impl TableProvider for GraphTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Err(DataFusionError::NotImplemented("a graph table is write-only (INSERT INTO)".into()))
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(DataFusionError::NotImplemented(format!(
                "{insert_op} into a graph table: only INSERT INTO (MERGE) is supported"
            )));
        }
        Ok(Arc::new(GraphInsertExec::new(input, self.target.clone())))
    }
}

/// Runs every input partition concurrently into one [`GraphSink`] (constraints first, then
/// `write` per batch) and yields DataFusion's one-row `count`.
#[derive(Debug)]
pub struct GraphInsertExec {
    input: Arc<dyn ExecutionPlan>,
    target: GraphTarget,
    properties: Arc<PlanProperties>,
}

fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("count", DataType::UInt64, false)]))
}

impl GraphInsertExec {
    /// Writes `input` to `target`.
    pub fn new(input: Arc<dyn ExecutionPlan>, target: GraphTarget) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(count_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        GraphInsertExec { input, target, properties }
    }

    /// What the node writes to.
    pub fn target(&self) -> &GraphTarget {
        &self.target
    }
}

impl DisplayAs for GraphInsertExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let specs: Vec<String> = self
            .target
            .mapping
            .nodes
            .iter()
            .map(NodeSpec::name)
            .chain(self.target.mapping.relationships.iter().map(RelSpec::name))
            .collect();
        write!(f, "GraphInsertExec: {}", specs.join(", "))
    }
}

impl ExecutionPlan for GraphInsertExec {
    fn name(&self) -> &str {
        "GraphInsertExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    /// Every input row reaches this one node (and through the sink's workers, the graph in
    /// parallel): a distributed engine must not hand it one partition's share.
    fn required_input_distribution(&self) -> Vec<datafusion::physical_plan::Distribution> {
        vec![datafusion::physical_plan::Distribution::SinglePartition]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(GraphInsertExec::new(children.swap_remove(0), self.target.clone())))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "GraphInsertExec has one partition, not {partition}"
            )));
        }
        let partitions = self.input.properties().output_partitioning().partition_count();
        let inputs =
            (0..partitions).map(|p| self.input.execute(p, context.clone())).collect::<DfResult<Vec<_>>>()?;
        let sink = match GraphSink::new(self.target.writer.clone(), self.target.mapping.clone()) {
            Ok(s) => Arc::new(s),
            Err(e) => return Err(DfError::Graph(e).into()),
        };
        let schema = self.input.schema();
        let fut = async move {
            sink.start(&schema).await.map_err(DfError::Core)?;
            let ctx = Context::default();
            let writes = inputs.into_iter().map(|mut stream| {
                let sink = sink.clone();
                let ctx = &ctx;
                async move {
                    let mut rows = 0u64;
                    while let Some(batch) = stream.next().await {
                        rows += sink.write(batch?, ctx).await.map_err(DfError::Core)?;
                    }
                    Ok::<u64, DataFusionError>(rows)
                }
            });
            let result = futures::future::try_join_all(writes).await;
            match result {
                Ok(rows) => {
                    sink.finish().await.map_err(DfError::Core)?;
                    let total: u64 = rows.into_iter().sum();
                    RecordBatch::try_new(count_schema(), vec![Arc::new(UInt64Array::from(vec![total]))])
                        .map_err(|source| DfError::Arrow { what: "count".into(), source }.into())
                }
                Err(e) => {
                    let _ = sink.abort().await;
                    Err(e)
                }
            }
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(count_schema(), futures::stream::once(fut))))
    }
}

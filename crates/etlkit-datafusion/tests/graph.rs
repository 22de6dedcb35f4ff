//! A Neo4j/Bolt graph as a DataFusion table (ArcadeDB's Bolt server from etlkit-testkit; `BOLT_URI`
//! reused when set): INSERT INTO of nodes and of relationships, constraints first, exact counts,
//! re-runs create nothing, NULL keys fail the statement.

#![allow(missing_docs)]

mod support;

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, UInt64Array};
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use etlkit_datafusion::{GraphTable, datafusion};
use etlkit_neo4j::{Endpoint, GraphConfig, GraphWriter, NodeSpec, Property, RelSpec};
use etlkit_testkit::BoltServer;

static SERVER: LazyLock<Arc<BoltServer>> = LazyLock::new(|| BoltServer::start().expect("bolt server"));

fn writer() -> Arc<GraphWriter> {
    let db = SERVER.fresh_database().expect("fresh database");
    let config = GraphConfig {
        uri: db.uri,
        user: db.user,
        password: db.password,
        database: db.name,
        workers: 2,
        batch_rows: 700,
        ..Default::default()
    };
    Arc::new(GraphWriter::connect(config).unwrap())
}

fn count_of(batches: &[RecordBatch]) -> u64 {
    batches[0].column(0).as_any().downcast_ref::<UInt64Array>().unwrap().value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_into_nodes_and_relationships_through_sql() {
    let writer = tokio::task::spawn_blocking(writer).await.unwrap();
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(3));
    // Source rows in 3 partitions: people (id, name, company) — 3000 people, 30 companies.
    let parts: Vec<Vec<RecordBatch>> = (0..3i64)
        .map(|p| {
            let ids: Vec<i64> = (p * 1000..(p + 1) * 1000).collect();
            vec![
                RecordBatch::try_from_iter([
                    ("id", Arc::new(Int64Array::from(ids.clone())) as ArrayRef),
                    (
                        "name",
                        Arc::new(StringArray::from_iter_values(ids.iter().map(|i| format!("p{i}"))))
                            as ArrayRef,
                    ),
                    (
                        "company",
                        Arc::new(StringArray::from_iter_values(ids.iter().map(|i| format!("c{}", i % 30))))
                            as ArrayRef,
                    ),
                ])
                .unwrap(),
            ]
        })
        .collect();
    let schema = parts[0][0].schema();
    ctx.register_table("people", Arc::new(MemTable::try_new(schema.clone(), parts).unwrap())).unwrap();

    let person = NodeSpec::new("Person", Property::from_column("id", "id"), vec![Property::column("name")]);
    let company = NodeSpec::new("Company", Property::from_column("name", "company"), vec![]);
    let works_for = RelSpec::new(
        "WORKS_FOR",
        Endpoint::new("Person", "id", "id"),
        Endpoint::new("Company", "name", "company"),
    );
    let person_schema = Arc::new(schema.project(&[0, 1]).unwrap());
    let company_schema = Arc::new(schema.project(&[2]).unwrap());
    let rel_schema = Arc::new(schema.project(&[0, 2]).unwrap());
    ctx.register_table("person", Arc::new(GraphTable::nodes(writer.clone(), person, person_schema).unwrap()))
        .unwrap();
    ctx.register_table(
        "company",
        Arc::new(GraphTable::nodes(writer.clone(), company, company_schema).unwrap()),
    )
    .unwrap();
    ctx.register_table(
        "works_for",
        Arc::new(GraphTable::relationships(writer.clone(), works_for, rel_schema).unwrap()),
    )
    .unwrap();

    for round in 0..2 {
        let n =
            ctx.sql("INSERT INTO person SELECT id, name FROM people").await.unwrap().collect().await.unwrap();
        assert_eq!(count_of(&n), 3000);
        let n = ctx
            .sql("INSERT INTO company SELECT DISTINCT company FROM people")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(count_of(&n), 30);
        let n = ctx
            .sql("INSERT INTO works_for SELECT id, company FROM people")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(count_of(&n), 3000);
        assert_eq!(writer.count("MATCH (p:Person) RETURN count(p)").await.unwrap(), 3000, "round {round}");
        assert_eq!(writer.count("MATCH (c:Company) RETURN count(c)").await.unwrap(), 30);
        assert_eq!(
            writer.count("MATCH (:Person)-[r:WORKS_FOR]->(:Company) RETURN count(r)").await.unwrap(),
            3000
        );
    }
    assert_eq!(
        writer.count("MATCH (p:Person {id: 1234}) WHERE p.name = 'p1234' RETURN count(p)").await.unwrap(),
        1
    );

    // A NULL key fails the statement, naming the column.
    let err = ctx
        .sql("INSERT INTO person SELECT CASE WHEN id = 5 THEN NULL ELSE id END, name FROM people")
        .await
        .unwrap()
        .collect()
        .await
        .expect_err("NULL key");
    let chain = support::chain(&err);
    assert!(chain.contains("id"), "{chain}");
    // Scans and overwrites are refused.
    assert!(ctx.sql("SELECT * FROM person").await.unwrap().collect().await.is_err());
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A graph insert planned in one context travels as a recipe (connection name, mapping, settings:
/// no URI, user or password) and runs in another context that knows the connection by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_insert_plan_travels_without_credentials_and_runs_elsewhere() {
    use datafusion_proto::bytes::{
        logical_plan_from_bytes_with_extension_codec, logical_plan_to_bytes_with_extension_codec,
        physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
    };
    use datafusion_proto::logical_plan::DefaultLogicalExtensionCodec;
    use datafusion_proto::physical_plan::DefaultPhysicalExtensionCodec;
    use etlkit_datafusion::codec::{Connectors, EtlkitLogicalCodec, EtlkitPhysicalCodec};

    let writer = tokio::task::spawn_blocking(writer).await.unwrap();
    let password = writer.config().password.clone();
    assert!(!password.is_empty(), "the test server has a password to leak");
    let client = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    let ids: Vec<i64> = (0..2500).collect();
    let batch = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(ids.clone())) as ArrayRef),
        ("name", Arc::new(StringArray::from_iter_values(ids.iter().map(|i| format!("n{i}")))) as ArrayRef),
    ])
    .unwrap();
    let schema = batch.schema();
    // The source must itself travel (a MemTable does not): a Parquet file.
    let dir = std::env::temp_dir().join(format!("etlkit-graph-codec-{}", std::process::id()));
    let local = SessionContext::new();
    local
        .register_table("mem", Arc::new(MemTable::try_new(schema.clone(), vec![vec![batch]]).unwrap()))
        .unwrap();
    local
        .table("mem")
        .await
        .unwrap()
        .write_parquet(dir.to_str().unwrap(), Default::default(), None)
        .await
        .unwrap();
    client.register_parquet("src", dir.to_str().unwrap(), Default::default()).await.unwrap();
    let spec = NodeSpec::new("Item", Property::from_column("id", "id"), vec![Property::column("name")]);
    let table = GraphTable::nodes(writer.clone(), spec, schema).unwrap().named("warehouse-graph");
    client.register_table("items", Arc::new(table)).unwrap();

    // "Elsewhere": the connection named warehouse-graph is known there (as an executor's
    // environment would provide it).
    let connectors = Connectors::from_env(2).with_graph("warehouse-graph", writer.clone());
    let logical_codec =
        EtlkitLogicalCodec::new(Arc::new(DefaultLogicalExtensionCodec {}), connectors.clone());
    let physical_codec = EtlkitPhysicalCodec::new(Arc::new(DefaultPhysicalExtensionCodec {}), connectors);
    let remote = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));

    let plan =
        client.sql("INSERT INTO items SELECT id, name FROM src").await.unwrap().into_unoptimized_plan();
    let bytes = logical_plan_to_bytes_with_extension_codec(&plan, &logical_codec).unwrap();
    assert!(contains(&bytes, b"warehouse-graph") && contains(&bytes, b"Item"), "the recipe is there");
    assert!(!contains(&bytes, password.as_bytes()) && !contains(&bytes, b"bolt://"), "no credentials");
    let plan =
        logical_plan_from_bytes_with_extension_codec(&bytes, &remote.task_ctx(), &logical_codec).unwrap();
    let physical = remote.state().create_physical_plan(&plan).await.unwrap();
    let bytes = physical_plan_to_bytes_with_extension_codec(physical, &physical_codec).unwrap();
    assert!(contains(&bytes, b"warehouse-graph"));
    assert!(!contains(&bytes, password.as_bytes()) && !contains(&bytes, b"bolt://"), "no credentials");
    let decoded =
        physical_plan_from_bytes_with_extension_codec(&bytes, &remote.task_ctx(), &physical_codec).unwrap();
    let out = datafusion::physical_plan::collect(decoded, remote.task_ctx()).await.unwrap();
    assert_eq!(count_of(&out), 2500);
    assert_eq!(writer.count("MATCH (n:Item) RETURN count(n)").await.unwrap(), 2500);

    // A process that does not know the name says which variable to set.
    let stranger =
        EtlkitLogicalCodec::new(Arc::new(DefaultLogicalExtensionCodec {}), Connectors::from_env(1));
    let plan =
        client.sql("INSERT INTO items SELECT id, name FROM src").await.unwrap().into_unoptimized_plan();
    let bytes = logical_plan_to_bytes_with_extension_codec(&plan, &logical_codec).unwrap();
    let err =
        logical_plan_from_bytes_with_extension_codec(&bytes, &remote.task_ctx(), &stranger).unwrap_err();
    assert!(support::chain(&err).contains("ETLKIT_BOLT_URI_WAREHOUSE_GRAPH"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

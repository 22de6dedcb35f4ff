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

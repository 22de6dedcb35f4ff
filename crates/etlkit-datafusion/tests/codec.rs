//! etlkit's plan codecs (`etlkit_datafusion::codec`) against a real throwaway PostgreSQL: a plan
//! made in one context, encoded to bytes, decoded in another context whose connectors come from
//! "its own environment", runs there with the same result — and the bytes never carry the password.
//! This is what a Ballista scheduler and its executors do with etlkit's plans (the cluster itself is
//! tested in crates/etlkit-ballista).

#![allow(missing_docs)]

use std::sync::Arc;

use datafusion::arrow::array::{Array, UInt64Array};
use datafusion::physical_plan::{ExecutionPlan, collect, displayable};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::bytes::{
    logical_plan_from_bytes_with_extension_codec, logical_plan_to_bytes_with_extension_codec,
    physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
};
use datafusion_proto::logical_plan::DefaultLogicalExtensionCodec;
use datafusion_proto::physical_plan::DefaultPhysicalExtensionCodec;
use etlkit_datafusion::codec::{Connectors, EtlkitLogicalCodec, EtlkitPhysicalCodec};
use etlkit_datafusion::{DfError, PgConnector, PgTable, PgTableOptions, datafusion};
use etlkit_postgres::{DatabaseUrl, TableRef};

mod support;

use support::{digests, exec, fresh, scalar};

/// A context of "another process": its connector named `default` points at `url` (no password),
/// as an executor's `DATABASE_URL` would.
fn remote(url: &str) -> (SessionContext, EtlkitLogicalCodec, EtlkitPhysicalCodec) {
    let connectors = Connectors::from_env(4).with(PgConnector::new("default", DatabaseUrl::new(url), 4));
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(3));
    etlkit_datafusion::register_functions(&ctx);
    (
        ctx,
        EtlkitLogicalCodec::new(Arc::new(DefaultLogicalExtensionCodec {}), connectors.clone()),
        EtlkitPhysicalCodec::new(Arc::new(DefaultPhysicalExtensionCodec {}), connectors),
    )
}

fn shown(plan: &Arc<dyn ExecutionPlan>) -> String {
    displayable(plan.as_ref()).indent(true).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plans_travel_as_recipes_without_the_password_and_run_the_same_elsewhere() {
    let (pool, url) = fresh().await;
    exec(&pool, "CREATE TABLE src (id bigint PRIMARY KEY, amount numeric(10,2), name varchar(20), at timestamptz, tags text[])").await;
    exec(
        &pool,
        "INSERT INTO src SELECT i, i * 1.25, 'n' || i, timestamptz '2024-01-01 00:00+00' + i * interval '1 minute',
           ARRAY['t' || (i % 7)] FROM generate_series(1, 30000) i",
    )
    .await;
    exec(&pool, "CREATE TABLE dst (LIKE src INCLUDING ALL)").await;

    // The client: its connector's URL carries a password (the throwaway server ignores it).
    let secret = "pw-codec-7d1e";
    let with_password = url.replacen("postgres://postgres@", &format!("postgres://postgres:{secret}@"), 1);
    assert!(with_password.contains(secret));
    let client = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(3));
    for t in ["src", "dst"] {
        let c = PgConnector::new("default", DatabaseUrl::new(with_password.clone()), 4);
        client
            .register_table(t, Arc::new(PgTable::new(c, TableRef::new(t), options(t)).await.unwrap()))
            .unwrap();
    }

    // Client → "scheduler": the logical plan as bytes.
    let (scheduler, scheduler_logical, scheduler_physical) = remote(&url);
    let (executor, _, executor_physical) = remote(&url);
    for sql in ["INSERT INTO dst SELECT * FROM src", "SELECT id, name, tags FROM src WHERE id % 3 = 0"] {
        let logical = client.sql(sql).await.unwrap().into_unoptimized_plan();
        let bytes = logical_plan_to_bytes_with_extension_codec(&logical, &scheduler_logical).unwrap();
        assert!(!contains(&bytes, secret.as_bytes()), "{sql}: the password is in the logical plan bytes");
        assert!(!contains(&bytes, b"postgres://"), "{sql}: a URL is in the logical plan bytes");
        // ... while the recipe is there: etlkit's frame, the connector's name, the table.
        assert!(contains(&bytes, b"etlkit\x01T") && contains(&bytes, b"\"connector\":\"default\""), "{sql}");
        let decoded =
            logical_plan_from_bytes_with_extension_codec(&bytes, &scheduler.task_ctx(), &scheduler_logical)
                .unwrap();

        // "Scheduler" → "executor": the physical plan as bytes.
        let physical = scheduler.state().create_physical_plan(&decoded).await.unwrap();
        let bytes =
            physical_plan_to_bytes_with_extension_codec(physical.clone(), &scheduler_physical).unwrap();
        assert!(!contains(&bytes, secret.as_bytes()), "{sql}: the password is in the physical plan bytes");
        assert!(!contains(&bytes, b"postgres://"), "{sql}: a URL is in the physical plan bytes");
        assert!(contains(&bytes, b"etlkit\x01S"), "{sql}: the scan's recipe");
        let decoded =
            physical_plan_from_bytes_with_extension_codec(&bytes, &executor.task_ctx(), &executor_physical)
                .unwrap();
        assert_eq!(shown(&decoded), shown(&physical), "{sql}: the decoded plan is the same plan");
        if sql.starts_with("INSERT") {
            // The table's options crossed both hops: the write commits two-phase.
            assert!(shown(&decoded).contains("commit=TwoPhase"), "{}", shown(&decoded));
        }
        let out = collect(decoded, executor.task_ctx()).await.unwrap();
        drop(physical); // ends the scheduler's snapshot-exporting transaction

        if sql.starts_with("INSERT") {
            let n = out[0].column(0).as_any().downcast_ref::<UInt64Array>().unwrap().value(0);
            assert_eq!(n, 30_000);
            assert_eq!(
                scalar(&pool, "SELECT count(*) FROM src s JOIN dst d ON (s.*)::text = (d.*)::text").await,
                30_000,
                "every row copied exactly"
            );
            assert_eq!(
                scalar(&pool, "SELECT count(*) FROM pg_class WHERE relname LIKE 'etlkit\\_stage\\_%'").await,
                0
            );
        } else {
            let local = client.sql(sql).await.unwrap().collect().await.unwrap();
            assert_eq!(digests(&out), digests(&local), "{sql}: the remote scan reads what a local one does");
            assert_eq!(digests(&out).values().sum::<usize>(), 10_000);
        }
    }
}

/// `dst` commits two-phase, so the test sees the option travel.
fn options(table: &str) -> PgTableOptions {
    match table {
        "dst" => PgTableOptions { commit: etlkit_datafusion::CommitProtocol::TwoPhase, ..Default::default() },
        _ => PgTableOptions::default(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn a_connector_the_decoding_process_does_not_know_is_a_clear_error() {
    let (pool, url) = fresh().await;
    exec(&pool, "CREATE TABLE k (id int PRIMARY KEY)").await;
    let client = SessionContext::new();
    let c = PgConnector::new("warehouse-eu", DatabaseUrl::new(url.clone()), 2);
    client
        .register_table(
            "k",
            Arc::new(PgTable::new(c, TableRef::new("k"), PgTableOptions::default()).await.unwrap()),
        )
        .unwrap();
    let (other, logical, _) = remote(&url); // knows only `default`
    let plan = client.sql("SELECT * FROM k").await.unwrap().into_unoptimized_plan();
    let bytes = logical_plan_to_bytes_with_extension_codec(&plan, &logical).unwrap();
    // Make sure the test does not pass because of the machine's environment.
    assert!(std::env::var("ETLKIT_PG_URL_WAREHOUSE_EU").is_err());
    let err = logical_plan_from_bytes_with_extension_codec(&bytes, &other.task_ctx(), &logical).unwrap_err();
    let found = DfError::find(&err).map(|e| e.to_string()).unwrap_or_default();
    assert!(found.contains("ETLKIT_PG_URL_WAREHOUSE_EU"), "{err} / {found}");
}

//! The star job under faults, against a real PostgreSQL: a bulk load that crashes midway, two runs at
//! once, a load-lock session the server terminates mid-load, and a COPY connection terminated during
//! a bulk load. Each ends with exact counts and no duplicate row. The crash, the lost lock and the
//! lost COPY connection run in both layouts: rows stored in a table of their own (the row-hash
//! constraint there) and rows as a view (the constraint on the fact table, which a bulk load drops). Loads are paused at a chosen batch
//! by a trigger waiting for an advisory lock the test holds (no sleeps decide an outcome).

mod common;

use std::time::Duration;

use common::*;
use etlkit_postgres::sqlx::{self, PgPool};
use etlkit_star::{BulkWhen, StarError, StarJob, StarJobConfig};

/// The advisory lock the pause trigger waits for.
const PAUSE: i64 = 4242;

/// Where the rows are: the table `orders`, or the view `orders` over `fact_order`.
#[derive(Clone, Copy)]
enum Layout {
    Table,
    View,
}

impl Layout {
    fn job(self, dir: &std::path::Path) -> StarJobConfig {
        match self {
            Layout::Table => retail_job(dir, true),
            Layout::View => retail_view_job(dir),
        }
    }

    /// The table holding the row hash under the UNIQUE constraint.
    fn key_table(self) -> &'static str {
        match self {
            Layout::Table => "orders",
            Layout::View => "fact_order",
        }
    }

    fn unique_constraints(self) -> String {
        format!(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = '{}'::regclass AND contype = 'u'",
            self.key_table()
        )
    }
}

/// Creates the tables with a first small load (orders 0..50), then writes the full data set.
async fn setup(dir: &std::path::Path, url: &etlkit_star::DatabaseUrl) -> StarJobConfig {
    setup_in(Layout::Table, dir, url).await
}

async fn setup_in(layout: Layout, dir: &std::path::Path, url: &etlkit_star::DatabaseUrl) -> StarJobConfig {
    write_csv(&dir.join("a.csv"), 0..50, &[]);
    write_parquet(&dir.join("b.parquet"), 0..10);
    write_products(&dir.join("products.csv"));
    let first = StarJob::new(layout.job(dir)).unwrap().run(url).await.unwrap();
    assert_eq!(first.inserted, 50);
    write_orders(dir);
    let mut cfg = layout.job(dir);
    cfg.bulk.when = BulkWhen::Always;
    cfg.workers = 1;
    cfg
}

/// A trigger on the fact table that, while `pause_gate` has a row and the fact table holds at least
/// `after` rows, waits for [`PAUSE`].
async fn install_pause(p: &PgPool, after: i64) {
    exec(
        p,
        &format!(
            "CREATE TABLE pause_gate (on_ boolean); INSERT INTO pause_gate VALUES (true); \
             CREATE FUNCTION pause_load() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
               IF EXISTS (SELECT 1 FROM pause_gate) AND (SELECT count(*) FROM fact_order) >= {after} THEN \
                 PERFORM pg_advisory_xact_lock_shared({PAUSE}); \
               END IF; RETURN NULL; END $$; \
             CREATE TRIGGER pause_load AFTER INSERT ON fact_order FOR EACH STATEMENT EXECUTE FUNCTION pause_load();"
        ),
    )
    .await;
}

/// Waits (polling the server's state, bounded) until `sql` returns true.
async fn wait_for(p: &PgPool, sql: &str) {
    for _ in 0..3000 {
        if sqlx::query_scalar::<_, bool>(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(p).await.unwrap() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never true: {sql}");
}

const PAUSED: &str = "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242 AND NOT granted \
                      AND database = (SELECT oid FROM pg_database WHERE datname = current_database())) \
                      AND EXISTS (SELECT 1 FROM etlkit.star_loads WHERE bulk_constraint IS NOT NULL)";

async fn assert_exact(p: &PgPool) {
    assert_exact_in(Layout::Table, p).await
}

async fn assert_exact_in(layout: Layout, p: &PgPool) {
    assert_eq!(scalar(p, "SELECT count(*) FROM orders").await, 600);
    assert_eq!(scalar(p, "SELECT count(DISTINCT row_hash) FROM orders").await, 600);
    assert_eq!(scalar(p, "SELECT count(*) FROM fact_order").await, 600);
    assert_eq!(scalar(p, "SELECT count(DISTINCT row_hash) FROM fact_order").await, 600);
    assert_eq!(scalar(p, &layout.unique_constraints()).await, 1);
    assert_eq!(
        scalar(p, "SELECT count(*) FROM etlkit.star_loads WHERE bulk_constraint IS NOT NULL").await,
        0
    );
    assert_eq!(
        scalar(p, "SELECT count(*) FROM pg_class WHERE relname IN ('orders', 'fact_order') AND reloptions IS NOT NULL")
            .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_load_that_crashes_midway_is_restored_by_the_next_run_with_exact_counts() {
    crash_midway(Layout::Table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_load_with_a_rows_view_that_crashes_midway_is_restored_with_exact_counts() {
    crash_midway(Layout::View).await
}

async fn crash_midway(layout: Layout) {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_url().await;
    let cfg = setup_in(layout, dir.path(), &url).await;
    let p = pool(&url).await;
    exec(&p, "CREATE INDEX fact_order_by_price ON fact_order (price)").await;
    install_pause(&p, 300).await;
    let mut pause = p.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)").bind(PAUSE).execute(&mut *pause).await.unwrap();

    let job = StarJob::new(cfg.clone()).unwrap();
    let run = tokio::spawn({
        let url = url.clone();
        async move { job.run(&url).await }
    });
    wait_for(&p, PAUSED).await;
    // The crash: the process goes away mid-load (its sessions end without any clean-up).
    run.abort();
    let _ = run.await;
    exec(&p, "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE application_name = 'etlkit-star' AND datname = current_database()")
        .await;
    sqlx::query("SELECT pg_advisory_unlock($1)").bind(PAUSE).execute(&mut *pause).await.unwrap();
    exec(&p, "DELETE FROM pause_gate").await;
    wait_for(&p, "SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'etlkit-star' AND datname = current_database())")
        .await;
    // Left behind: the constraint and the other index dropped, autovacuum paused, some rows loaded.
    assert_eq!(scalar(&p, &layout.unique_constraints()).await, 0);
    assert_eq!(
        scalar(&p, "SELECT count(*) FROM pg_indexes WHERE indexname = 'fact_order_by_price'").await,
        0
    );
    let loaded = scalar(&p, "SELECT count(*) FROM orders").await;
    assert!((51..600).contains(&loaded), "{loaded}");

    let report = StarJob::new(cfg).unwrap().run(&url).await.unwrap();
    assert!(report.recovered);
    assert_eq!(report.inserted as i64, 600 - loaded);
    assert_eq!(report.rows_read, 720);
    assert_exact_in(layout, &p).await;
    assert_eq!(
        scalar(&p, "SELECT count(*) FROM pg_indexes WHERE indexname = 'fact_order_by_price'").await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_store_each_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_url().await;
    let bulk = setup(dir.path(), &url).await;
    let p = pool(&url).await;
    // Two plain runs (shared lock, COPY meeting the other's rows falls back to a merge), then two
    // bulk runs (one waits for the other).
    let mut plain = bulk.clone();
    plain.bulk.when = BulkWhen::Never;
    plain.workers = 2;
    let (ja, jb) = (StarJob::new(plain.clone()).unwrap(), StarJob::new(plain).unwrap());
    let (a, b) = tokio::join!(ja.run(&url), jb.run(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.inserted + b.inserted, 550);
    assert_eq!(a.rows_read, 720);
    assert_exact(&p).await;
    exec(&p, "DELETE FROM fact_order WHERE order_id >= 100; DELETE FROM orders WHERE order_id >= 100").await;
    let (ja, jb) = (StarJob::new(bulk.clone()).unwrap(), StarJob::new(bulk).unwrap());
    let (a, b) = tokio::join!(ja.run(&url), jb.run(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.bulk && b.bulk);
    assert_eq!(a.inserted + b.inserted, 500);
    assert_exact(&p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_load_lock_session_stops_the_load_without_duplicates_and_the_next_run_recovers() {
    lost_lock(Layout::Table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_load_lock_session_with_a_rows_view_leaves_no_duplicate() {
    lost_lock(Layout::View).await
}

async fn lost_lock(layout: Layout) {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_url().await;
    let cfg = setup_in(layout, dir.path(), &url).await;
    let p = pool(&url).await;
    install_pause(&p, 0).await;
    let mut pause = p.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)").bind(PAUSE).execute(&mut *pause).await.unwrap();

    // Run A drops the constraint and is paused inside its first batch's transaction.
    let first = tokio::spawn({
        let (url, job) = (url.clone(), StarJob::new(cfg.clone()).unwrap());
        async move { job.run(&url).await }
    });
    wait_for(&p, PAUSED).await;
    // The server ends A's load-lock session (as idle_session_timeout or an admin would).
    exec(
        &p,
        "SELECT pg_terminate_backend(l.pid, 10000) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
         WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'etlkit-star' AND datname = current_database()",
    )
    .await;
    // Run B starts meanwhile: it takes the lock (A's session is gone, so any load lock held is B's),
    // restores the constraint (waiting for A's open batch) and loads.
    exec(&p, "DELETE FROM pause_gate").await;
    let second = tokio::spawn({
        let (url, job) = (url.clone(), StarJob::new(cfg.clone()).unwrap());
        async move { job.run(&url).await }
    });
    wait_for(
        &p,
        "SELECT count(*) >= 1 FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
         WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'etlkit-star' AND datname = current_database()",
    )
    .await;
    sqlx::query("SELECT pg_advisory_unlock($1)").bind(PAUSE).execute(&mut *pause).await.unwrap();

    let a = first.await.unwrap();
    let b = second.await.unwrap().unwrap();
    match a {
        Err(StarError::LoadLockLost { .. }) => {}
        other => panic!("run A: {other:?}"),
    }
    assert_eq!(b.inserted, 550);
    assert_exact_in(layout, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_connection_terminated_during_a_bulk_load_is_retried_to_exact_counts() {
    lost_copy(Layout::Table).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_connection_terminated_during_a_bulk_load_with_a_rows_view_is_retried() {
    lost_copy(Layout::View).await
}

async fn lost_copy(layout: Layout) {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_url().await;
    let cfg = setup_in(layout, dir.path(), &url).await;
    let p = pool(&url).await;
    // The server terminates the connection of the batch that takes the fact table past 200 rows,
    // once (sequences are not transactional).
    exec(
        &p,
        "CREATE SEQUENCE kill_once; \
         CREATE FUNCTION kill_copy() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF (SELECT count(*) FROM fact_order) >= 200 AND nextval('kill_once') = 1 THEN \
             PERFORM pg_terminate_backend(pg_backend_pid()); \
           END IF; RETURN NULL; END $$; \
         CREATE TRIGGER kill_copy AFTER INSERT ON fact_order FOR EACH STATEMENT EXECUTE FUNCTION kill_copy();",
    )
    .await;
    let report = StarJob::new(cfg).unwrap().run(&url).await.unwrap();
    assert!(report.bulk);
    assert_eq!(report.retries, 1);
    assert_eq!(report.merged_batches, 0);
    assert_eq!((report.rows_read, report.inserted, report.duplicates), (720, 550, 170));
    assert_exact_in(layout, &p).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_bulk_load_is_recovered_by_the_next_run_with_exact_counts() {
    // A server of its own: the whole PostgreSQL server is killed with SIGKILL and restarted.
    let server = std::sync::Arc::new(
        tokio::task::spawn_blocking(etlkit_testkit::PgServer::start_dedicated).await.unwrap().unwrap(),
    );
    if server.is_external() {
        return; // needs a throwaway cluster
    }
    let url = {
        let s = server.clone();
        etlkit_star::DatabaseUrl::new(
            tokio::task::spawn_blocking(move || s.fresh_database()).await.unwrap().unwrap(),
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = setup(dir.path(), &url).await;
    let p = pool(&url).await;
    install_pause(&p, 300).await;
    // The throwaway server runs with synchronous_commit=off: make the set-up durable before the crash.
    exec(&p, "CHECKPOINT").await;
    let mut pause = p.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)").bind(PAUSE).execute(&mut *pause).await.unwrap();

    let run = tokio::spawn({
        let (url, job) = (url.clone(), StarJob::new(cfg.clone()).unwrap());
        async move { job.run(&url).await }
    });
    wait_for(&p, PAUSED).await;
    // What is committed so far (the bulk state, the first batches) survives, as on a durable server.
    exec(&p, "CHECKPOINT").await;
    drop(pause);
    drop(p);
    let s = server.clone();
    tokio::task::spawn_blocking(move || s.crash_and_restart()).await.unwrap().unwrap();
    assert!(run.await.unwrap().is_err(), "the run cannot survive the server's death");

    let p = pool(&url).await;
    exec(&p, "DELETE FROM pause_gate").await;
    let report = StarJob::new(cfg).unwrap().run(&url).await.unwrap();
    assert!(report.recovered, "the crashed bulk load's state is recovered");
    let before = 600 - report.inserted as i64;
    assert!((50..600).contains(&before), "rows kept from before the crash: {before}");
    assert_eq!(report.rows_read, 720);
    assert_exact(&p).await;
}

//! Replication tests against a real, throwaway PostgreSQL (etlkit-testkit): a Q&A schema with several
//! foreign-key levels, crash and resume, a foreign-key cycle, hostile names. Small data only.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use etlkit_postgres::{DatabaseUrl, TableRef};
use etlkit_replicate::{
    ReplicateConfig, ReplicationError, RetryPolicy, TableProgress, TableStatus, pipe_table, replicate,
};
use etlkit_testkit::PgServer;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

static PG: LazyLock<Arc<PgServer>> = LazyLock::new(|| PgServer::start().expect("test PostgreSQL"));

const QA_SCHEMA: &str = include_str!("qa/schema.sql");
const QA_DATA: &str = include_str!("qa/data.sql");
const QA_TABLES: [&str; 7] = ["badges", "comments", "post_links", "posts", "users", "vote_types", "votes"];

async fn fresh() -> String {
    tokio::task::spawn_blocking(|| PG.fresh_database()).await.unwrap().expect("fresh database")
}

async fn conn(url: &str) -> PgConnection {
    PgConnection::connect(url).await.unwrap()
}

async fn exec(url: &str, sql: &str) {
    let mut c = conn(url).await;
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(&mut c).await.unwrap();
}

async fn strings(url: &str, sql: &str) -> Vec<String> {
    let mut c = conn(url).await;
    sqlx::query(AssertSqlSafe(sql.to_owned()))
        .fetch_all(&mut c)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get::<String, _>(0))
        .collect()
}

async fn scalar(url: &str, sql: &str) -> i64 {
    let mut c = conn(url).await;
    sqlx::query(AssertSqlSafe(sql.to_owned())).fetch_one(&mut c).await.unwrap().get(0)
}

/// A source database holding the Q&A schema with `scale` users.
async fn qa_source(scale: u32) -> String {
    let url = fresh().await;
    exec(&url, QA_SCHEMA).await;
    exec(&url, &QA_DATA.replace(":scale", &scale.to_string())).await;
    url
}

fn config(source: &str, target: &str) -> ReplicateConfig {
    ReplicateConfig {
        source: DatabaseUrl::new(source),
        target: DatabaseUrl::new(target),
        ..Default::default()
    }
}

fn no_progress(_: &TableProgress<'_>) {}

/// Every constraint and index definition of a schema, as the catalog prints them.
async fn definitions(url: &str, schema: &str) -> BTreeSet<String> {
    let sql = format!(
        "SELECT cl.relname || ' ' || con.conname || ' ' || pg_get_constraintdef(con.oid) \
         FROM pg_constraint con JOIN pg_class cl ON cl.oid = con.conrelid \
         JOIN pg_namespace n ON n.oid = cl.relnamespace WHERE n.nspname = '{schema}' \
         UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = '{schema}'"
    );
    strings(url, &sql).await.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qa_schema_replicates_in_foreign_key_order_and_verifies() {
    let source = qa_source(300).await;
    let target = fresh().await;
    let events = Mutex::new(Vec::new());
    let on_progress =
        |p: &TableProgress<'_>| events.lock().unwrap().push((p.table.to_owned(), p.rows, p.done));
    let cfg = ReplicateConfig { workers: 3, verify: true, ..config(&source, &target) };
    let report = replicate(&cfg, &on_progress).await.unwrap();

    assert!(report.verified, "{report:#?}");
    assert_eq!(
        report.levels,
        vec![
            vec!["users".to_owned(), "vote_types".into()],
            vec!["badges".into(), "posts".into()],
            vec!["comments".into(), "post_links".into(), "votes".into()],
        ]
    );
    assert!(report.cycles.is_empty());
    assert_eq!(report.tables_created, 7);
    // users, vote_types start together; never more than `workers`.
    assert!((2..=3).contains(&report.peak_parallel_tables), "{}", report.peak_parallel_tables);
    let expected_rows =
        [("users", 300), ("vote_types", 5), ("posts", 900), ("badges", 450), ("comments", 1200)];
    for (table, rows) in expected_rows.into_iter().chain([("votes", 3000), ("post_links", 150)]) {
        let t = report.tables.iter().find(|t| t.table == table).unwrap();
        assert_eq!((t.status, t.rows), (TableStatus::Copied, rows), "{table}");
        assert_eq!(scalar(&target, &format!("SELECT count(*) FROM {table}")).await, rows as i64);
        let v = t.verification.as_ref().unwrap();
        assert!(v.matches() && v.source.rows == rows, "{table}: {v:?}");
        // Default chunk (1 MiB) is larger than any of these tables: one message each.
        assert_eq!(t.copy_messages, 1, "{table}");
    }
    assert_eq!(report.rows, 300 + 5 + 900 + 450 + 1200 + 3000 + 150);

    // Same keys, constraints (foreign keys included) and indexes as the source.
    let (src_defs, tgt_defs) = (definitions(&source, "public").await, definitions(&target, "public").await);
    assert_eq!(src_defs, tgt_defs);
    assert_eq!(tgt_defs.iter().filter(|d| d.contains("FOREIGN KEY")).count(), 10);
    // Generated column recomputed, identity/serial sequences continue after the source's values.
    assert_eq!(
        scalar(&target, "SELECT count(*) FROM posts WHERE body_len IS DISTINCT FROM length(body)").await,
        0
    );
    assert_eq!(scalar(&target, "SELECT nextval('posts_id_seq')").await, 901);
    assert_eq!(
        scalar(&target, "INSERT INTO votes (post_id, user_id, vote_type_id, created_on) VALUES (1, 1, 5, now()) RETURNING id").await,
        3001
    );
    assert_eq!(
        scalar(&target, "INSERT INTO users (display_name, email) VALUES ('n', 'n') RETURNING id").await,
        301
    );
    // Progress: one `done` event per table; with the default 5 s interval none in between here.
    let events = events.into_inner().unwrap();
    assert_eq!(events.len(), 7, "{events:?}");
    assert!(events.iter().all(|e| e.2));

    // Tamper with the target: a re-run skips every table (ledger) and verification catches it.
    exec(&target, "DELETE FROM users WHERE id = 301; DELETE FROM votes WHERE id = 3001; UPDATE votes SET weight = 42 WHERE id = 7").await;
    let err = replicate(&cfg, &no_progress).await.unwrap_err();
    let ReplicationError::VerificationFailed { tables, report } = err else {
        panic!("expected a verification error, got {err:?}");
    };
    assert_eq!(tables, ["\"public\".\"votes\""]);
    assert_eq!((report.skipped(), report.rows, report.tables_created, report.objects_created), (7, 0, 0, 0));
    assert!(!report.verified);
    for t in &report.tables {
        let v = t.verification.as_ref().unwrap();
        assert_eq!(v.matches(), t.table != "votes", "{}: {v:?}", t.table);
        assert_eq!(v.source.rows, v.target.rows);
    }

    // `tables` + `resume: false` copy just that table again; now everything matches.
    let again = ReplicateConfig { tables: vec!["votes".into()], resume: false, ..cfg.clone() };
    let report = replicate(&again, &no_progress).await.unwrap();
    assert_eq!(report.tables.len(), 1);
    assert_eq!((report.tables[0].status, report.rows), (TableStatus::Copied, 3000));
    assert!(report.verified);

    // Onward from the target: its ledger (schema `etlkit`) is not part of `public`.
    let onward = fresh().await;
    let report = replicate(&config(&target, &onward), &no_progress).await.unwrap();
    let replicated: BTreeSet<&str> = report.tables.iter().map(|t| t.table.as_str()).collect();
    assert_eq!(replicated, BTreeSet::from(QA_TABLES));
}

/// Terminates, once, the target session loading `votes` (application `app`) while its COPY is
/// mid-stream: the first progress report of `votes` with rows sent. Counts the terminated sessions
/// and the progress reports made before a table was done.
struct KillVotesOnce {
    target: String,
    app: &'static str,
    killed: AtomicBool,
    terminated: AtomicU64,
    mid_table_events: AtomicU64,
}

impl KillVotesOnce {
    fn new(target: &str, app: &'static str) -> Self {
        KillVotesOnce {
            target: target.to_owned(),
            app,
            killed: AtomicBool::new(false),
            terminated: AtomicU64::new(0),
            mid_table_events: AtomicU64::new(0),
        }
    }

    fn on_progress(&self, p: &TableProgress<'_>) {
        if !p.done {
            self.mid_table_events.fetch_add(1, Ordering::Relaxed);
        }
        if p.table == "votes" && !p.done && p.rows > 0 && !self.killed.swap(true, Ordering::SeqCst) {
            let (target, app) = (self.target.clone(), self.app);
            let n = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    let mut c = PgConnection::connect(&target).await.unwrap();
                    sqlx::query(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) FROM pg_stat_activity \
                         WHERE application_name = $1 AND datname = current_database() \
                         AND query LIKE 'COPY%FROM STDIN%'",
                    )
                    .bind(app)
                    .fetch_one(&mut c)
                    .await
                    .unwrap()
                    .get::<i64, _>(0)
                })
            })
            .join()
            .unwrap();
            self.terminated.store(n as u64, Ordering::SeqCst);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_target_connection_fails_retryably_and_rerun_resumes() {
    let source = qa_source(300).await;
    let target = fresh().await;
    let app = "etlkit-crash-test";
    let cfg = ReplicateConfig {
        workers: 1,
        chunk_bytes: 8 << 10,
        progress_interval: Duration::from_nanos(1),
        application_name: app.into(),
        verify: true,
        // No retries: the lost connection fails the run (the next test retries it).
        retry: RetryPolicy::NONE,
        ..config(&source, &target)
    };
    let probe = KillVotesOnce::new(&target, app);
    let kill = |p: &TableProgress<'_>| probe.on_progress(p);
    let (terminated, mid_table_events) = (&probe.terminated, &probe.mid_table_events);
    let err = replicate(&cfg, &kill).await.unwrap_err();
    assert_eq!(terminated.load(Ordering::SeqCst), 1);
    assert!(err.is_retryable(), "{err:?}");
    assert!(mid_table_events.load(Ordering::Relaxed) > 1);

    // votes rolled back and not in the ledger; everything it depends on is finished and recorded.
    assert_eq!(scalar(&target, "SELECT count(*) FROM votes").await, 0);
    let finished: BTreeSet<String> =
        strings(&target, "SELECT table_name FROM etlkit.replication_ledger").await.into_iter().collect();
    assert!(!finished.contains("votes"));
    for t in ["users", "vote_types", "posts", "badges"] {
        assert!(finished.contains(t), "{t} not finished: {finished:?}");
    }

    let report = replicate(&cfg, &no_progress).await.unwrap();
    assert!(report.verified, "{report:#?}");
    for t in &report.tables {
        let expect = if finished.contains(&t.table) { TableStatus::Skipped } else { TableStatus::Copied };
        assert_eq!(t.status, expect, "{}", t.table);
    }
    let votes = report.tables.iter().find(|t| t.table == "votes").unwrap();
    assert_eq!(votes.rows, 3000);
    // chunk_bytes = 8 KiB: one CopyData message per 8 KiB (and the last, partial one).
    assert!(votes.copy_messages > 1, "{votes:?}");
    assert!(votes.copy_messages <= votes.bytes / (8 << 10) + 1, "{votes:?}");
    assert!(votes.copy_messages >= votes.bytes / ((8 << 10) + 200), "{votes:?}");
    assert_eq!(report.peak_parallel_tables, 1);
    let ledger = strings(&target, "SELECT table_name FROM etlkit.replication_ledger ORDER BY 1").await;
    assert_eq!(ledger, QA_TABLES);
    assert_eq!(definitions(&source, "public").await, definitions(&target, "public").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_target_connection_is_retried_by_the_retry_policy_to_exact_counts() {
    let source = qa_source(300).await;
    let target = fresh().await;
    let app = "etlkit-retry-test";
    let cfg = ReplicateConfig {
        workers: 1,
        chunk_bytes: 8 << 10,
        progress_interval: Duration::from_nanos(1),
        application_name: app.into(),
        verify: true,
        retry: RetryPolicy {
            max_retries: 1,
            initial_backoff: Duration::from_millis(10),
            ..RetryPolicy::default()
        },
        ..config(&source, &target)
    };
    let probe = KillVotesOnce::new(&target, app);
    let report = replicate(&cfg, &|p: &TableProgress<'_>| probe.on_progress(p)).await.unwrap();
    assert_eq!(probe.terminated.load(Ordering::SeqCst), 1);
    assert!(report.verified, "{report:#?}");
    for t in &report.tables {
        assert_eq!(t.status, TableStatus::Copied, "{}", t.table);
        assert_eq!(t.retries, u32::from(t.table == "votes"), "{}", t.table);
    }
    let votes = report.tables.iter().find(|t| t.table == "votes").unwrap();
    assert_eq!(votes.rows, 3000);
    assert_eq!(scalar(&target, "SELECT count(*) FROM votes").await, 3000);
    let ledger = strings(&target, "SELECT table_name FROM etlkit.replication_ledger ORDER BY 1").await;
    assert_eq!(ledger, QA_TABLES);
    assert_eq!(definitions(&source, "public").await, definitions(&target, "public").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_key_cycle_loads_with_keys_after_data_or_is_refused_before_writing() {
    let source = fresh().await;
    let ddl = "CREATE TABLE a (id int PRIMARY KEY, b_id int); \
               CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a (id)); \
               ALTER TABLE a ADD CONSTRAINT a_b_fk FOREIGN KEY (b_id) REFERENCES b (id) \
                   DEFERRABLE INITIALLY DEFERRED; \
               CREATE TABLE c (id int PRIMARY KEY, a_id int NOT NULL REFERENCES a (id));";
    exec(&source, ddl).await;
    exec(
        &source,
        "BEGIN; INSERT INTO a SELECT g, 101 - g FROM generate_series(1, 100) g; \
         INSERT INTO b SELECT g, 101 - g FROM generate_series(1, 100) g; COMMIT; \
         INSERT INTO c SELECT g, g FROM generate_series(1, 100) g;",
    )
    .await;

    let target = fresh().await;
    let cfg = ReplicateConfig { verify: true, ..config(&source, &target) };
    let report = replicate(&cfg, &no_progress).await.unwrap();
    assert!(report.verified);
    assert_eq!(report.cycles, vec![vec!["a".to_owned(), "b".into()]]);
    assert_eq!(report.levels, vec![vec!["a".to_owned(), "b".into()], vec!["c".into()]]);
    assert_eq!(definitions(&source, "public").await, definitions(&target, "public").await);
    assert_eq!(
        scalar(&target, "SELECT count(*) FROM a JOIN b ON b.id = a.b_id AND b.a_id = a.id").await,
        100
    );

    // The transfer on its own: `pipe_table` refills c (in the caller's transaction).
    let (mut src, mut tgt) = (conn(&source).await, conn(&target).await);
    sqlx::raw_sql("BEGIN; DELETE FROM c").execute(&mut tgt).await.unwrap();
    let cols = ["id".to_owned(), "a_id".to_owned()];
    let rows = pipe_table(&mut src, &mut tgt, &TableRef::new("c"), &cols, 8 << 10).await.unwrap();
    sqlx::raw_sql("COMMIT").execute(&mut tgt).await.unwrap();
    assert_eq!((rows, scalar(&target, "SELECT sum(a_id) FROM c").await), (100, 5050));

    // A target that already enforces the cycle's keys cannot be loaded table by table: refused,
    // naming the tables and the constraint, before anything is written.
    let enforced = fresh().await;
    exec(&enforced, ddl).await;
    let err = replicate(&config(&source, &enforced), &no_progress).await.unwrap_err();
    match &err {
        ReplicationError::ForeignKeyCycle { tables, constraint } => {
            assert_eq!(tables, &["\"public\".\"a\"", "\"public\".\"b\""].map(String::from));
            assert!(constraint.contains("a_b_fk") || constraint.contains("b_a_id_fkey"), "{constraint}");
        }
        other => panic!("expected a cycle error, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("foreign-key cycle"), "{err}");
    assert_eq!(scalar(&enforced, "SELECT count(*) FROM pg_namespace WHERE nspname = 'etlkit'").await, 0);
    assert_eq!(scalar(&enforced, "SELECT count(*) FROM a").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_schema_table_column_and_constraint_names_are_quoted() {
    const SCHEMA: &str = "we\"ird; schema";
    const PARENT: &str = "x\"; DROP TABLE y; --";
    const CHILD: &str = "child'\"\\";
    let q = etlkit_postgres::quote_ident;
    let source = fresh().await;
    let (s, p, c) = (q(SCHEMA), q(PARENT), q(CHILD));
    exec(
        &source,
        &format!(
            "CREATE SCHEMA {s}; \
             CREATE TABLE {s}.{p} ({sel} int PRIMARY KEY, {sp} text, \"UPPER\" int, \
                 CONSTRAINT {uq} UNIQUE ({sp})); \
             CREATE INDEX {idx} ON {s}.{p} (\"UPPER\"); \
             CREATE TABLE {s}.{c} (id serial PRIMARY KEY, {refc} int REFERENCES {s}.{p} ({sel})); \
             INSERT INTO {s}.{p} SELECT g, 'v ' || g || ' \"'';--', g % 3 FROM generate_series(1, 50) g; \
             INSERT INTO {s}.{c} ({refc}) SELECT g % 50 + 1 FROM generate_series(1, 80) g;",
            sel = q("Sel\"ect"),
            sp = q("with space"),
            uq = q("uniq ';--"),
            idx = q("idx \"q\""),
            refc = q("ref \"id\""),
        ),
    )
    .await;
    let target = fresh().await;
    exec(&target, "CREATE TABLE y (keep int)").await;
    let ledger = TableRef::qualified("etl ledger\"s", "done \"tables\"");
    let cfg = ReplicateConfig {
        schema: SCHEMA.into(),
        verify: true,
        ledger: ledger.clone(),
        ..config(&source, &target)
    };
    let report = replicate(&cfg, &no_progress).await.unwrap();
    assert!(report.verified, "{report:#?}");
    assert_eq!(report.levels, vec![vec![PARENT.to_owned()], vec![CHILD.to_owned()]]);
    assert_eq!(scalar(&target, &format!("SELECT count(*) FROM {s}.{c}")).await, 80);
    assert_eq!(scalar(&target, "SELECT count(*) FROM y").await, 0); // still there
    assert_eq!(
        strings(&target, &format!("SELECT table_name FROM {} ORDER BY 1", ledger.quoted())).await,
        vec![CHILD.to_owned(), PARENT.to_owned()]
    );
    let defs = |url: String| async move {
        let schema = SCHEMA.replace('\'', "''");
        let sql = format!(
            "SELECT con.conname || ' ' || pg_get_constraintdef(con.oid) FROM pg_constraint con \
             JOIN pg_namespace n ON n.oid = con.connamespace WHERE n.nspname = '{schema}' \
             UNION ALL SELECT indexdef FROM pg_indexes WHERE schemaname = '{schema}'"
        );
        strings(&url, &sql).await.into_iter().collect::<BTreeSet<_>>()
    };
    let (src_defs, tgt_defs) = (defs(source.clone()).await, defs(target.clone()).await);
    assert_eq!(src_defs.len(), 8, "{src_defs:?}");
    assert_eq!(src_defs, tgt_defs);
    // The serial sequence lives in the hostile schema too and continues after the source's value.
    assert_eq!(
        scalar(&target, &format!("INSERT INTO {s}.{c} ({}) VALUES (1) RETURNING id::int8", q("ref \"id\"")))
            .await,
        81
    );

    // Copying the referenced table again: a table outside the run references it, so it is emptied
    // with DELETE (TRUNCATE would fail) — allowed because none of that table's rows reference it.
    exec(&target, &format!("DELETE FROM {s}.{c}")).await;
    let again = ReplicateConfig { tables: vec![PARENT.into()], resume: false, ..cfg };
    let report = replicate(&again, &no_progress).await.unwrap();
    assert!(report.verified);
    assert_eq!((report.tables[0].status, report.rows), (TableStatus::Copied, 50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_lives_in_the_etlkit_schema() {
    let source = qa_source(100).await;
    let target = fresh().await;
    replicate(&config(&source, &target), &no_progress).await.unwrap();
    assert_eq!(
        strings(&target, "SELECT table_name FROM etlkit.replication_ledger ORDER BY 1").await,
        QA_TABLES
    );
    // The user's schema holds the replicated tables and nothing else.
    assert_eq!(
        strings(&target, "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
            .await,
        QA_TABLES
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_verification_fails_returns_an_error_naming_the_tables() {
    let source = qa_source(100).await;
    let target = fresh().await;
    let cfg = ReplicateConfig { verify: true, ..config(&source, &target) };
    replicate(&cfg, &no_progress).await.unwrap();

    // Someone writes to the target behind the ledger's back.
    exec(&target, "UPDATE votes SET weight = 42 WHERE id = 7; DELETE FROM comments WHERE id = 3").await;
    let err = match replicate(&cfg, &no_progress).await {
        Err(e) => e,
        Ok(r) => panic!("verification found differences but the run returned Ok(verified = {})", r.verified),
    };
    let msg = err.to_string();
    assert!(msg.contains("\"votes\"") && msg.contains("\"comments\""), "{msg}");
    for t in ["users", "vote_types", "posts", "badges", "post_links"] {
        assert!(!msg.contains(&format!("\"{t}\"")), "{t} named: {msg}");
    }
    assert!(!err.is_retryable(), "{err:?}");
    match err {
        ReplicationError::VerificationFailed { tables, report } => {
            assert_eq!(tables, ["\"public\".\"comments\"", "\"public\".\"votes\""]);
            let comments = report.tables.iter().find(|t| t.table == "comments").unwrap();
            let v = comments.verification.as_ref().unwrap();
            assert_eq!((v.source.rows, v.target.rows), (400, 399));
        }
        other => panic!("expected a verification error, got {other:?}"),
    }
    // Copying the tables that differ again repairs the target.
    let repair =
        ReplicateConfig { tables: vec!["votes".into(), "comments".into()], resume: false, ..cfg.clone() };
    let report = replicate(&repair, &no_progress).await.unwrap();
    assert!(report.verified);
}

/// The whole content of `table`, as text, sorted: equal on both sides means equal tables.
async fn content(url: &str, table: &str) -> Vec<String> {
    strings(url, &format!("SELECT t::text FROM {table} t ORDER BY 1")).await
}

async fn assert_same_content(source: &str, target: &str, tables: &[&str]) {
    for t in tables {
        assert_eq!(content(source, t).await, content(target, t).await, "{t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_resync_of_a_referenced_parent_table_works() {
    let source = qa_source(100).await;
    let target = fresh().await;
    let cfg = ReplicateConfig { verify: true, ..config(&source, &target) };
    replicate(&cfg, &no_progress).await.unwrap();

    // The source changes (a user and a post more, a link less, a few users updated); the target
    // holds the old rows, with every foreign key in place.
    exec(
        &source,
        "UPDATE users SET reputation = reputation + 1 WHERE id <= 10; \
         INSERT INTO users (display_name, email) VALUES ('new', 'new@example.com'); \
         INSERT INTO posts (owner_id, body, created_at) VALUES (101, 'hello', '2024-01-01'); \
         DELETE FROM post_links WHERE post_id = 1;",
    )
    .await;
    // `resume = false`: every table is emptied (children before parents) and copied again.
    let again = ReplicateConfig { resume: false, ..cfg.clone() };
    let report = replicate(&again, &no_progress).await.unwrap();
    assert!(report.verified, "{report:#?}");
    assert!(report.tables.iter().all(|t| t.status == TableStatus::Copied), "{report:#?}");
    assert_eq!(report.rows, 101 + 5 + 301 + 150 + 400 + 1000 + 49);
    assert_same_content(&source, &target, &QA_TABLES).await;
    assert_eq!(definitions(&source, "public").await, definitions(&target, "public").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_copying_a_parent_without_the_tables_that_reference_it_is_refused_naming_them() {
    let source = qa_source(100).await;
    let target = fresh().await;
    replicate(&config(&source, &target), &no_progress).await.unwrap();
    exec(&source, "UPDATE users SET reputation = 0 WHERE id = 1").await;

    // users alone: posts, badges, comments and votes in the target still reference its rows.
    let only_users =
        ReplicateConfig { tables: vec!["users".into()], resume: false, ..config(&source, &target) };
    let err = replicate(&only_users, &no_progress).await.unwrap_err();
    let msg = err.to_string();
    for t in ["users", "posts", "badges", "comments", "votes"] {
        assert!(msg.contains(&format!("\"{t}\"")), "{t} not named: {msg}");
    }
    assert!(!err.is_retryable(), "{err:?}");
    match &err {
        ReplicationError::StillReferenced { table, referenced_by } => {
            assert_eq!(table, "\"public\".\"users\"");
            let expected = ["badges", "comments", "posts", "votes"].map(|t| format!("\"public\".\"{t}\""));
            assert_eq!(referenced_by, &expected);
        }
        other => panic!("expected StillReferenced, got {other:?}"),
    }
    // Nothing was written: the target still holds every old row.
    assert_eq!(scalar(&target, "SELECT count(*) FROM users").await, 100);
    assert_eq!(scalar(&target, "SELECT reputation::int8 FROM users WHERE id = 1").await, 7919); // (1 * 7919) % 50000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_over_a_foreign_key_cycle_resumes_and_a_full_resync_works() {
    let source = fresh().await;
    exec(
        &source,
        "CREATE TABLE a (id int PRIMARY KEY, b_id int); \
         CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a (id)); \
         ALTER TABLE a ADD CONSTRAINT a_b_fk FOREIGN KEY (b_id) REFERENCES b (id) \
             DEFERRABLE INITIALLY DEFERRED; \
         CREATE TABLE c (id int PRIMARY KEY, a_id int NOT NULL REFERENCES a (id)); \
         BEGIN; INSERT INTO a SELECT g, 101 - g FROM generate_series(1, 100) g; \
         INSERT INTO b SELECT g, 101 - g FROM generate_series(1, 100) g; COMMIT; \
         INSERT INTO c SELECT g, g FROM generate_series(1, 100) g;",
    )
    .await;
    let target = fresh().await;
    let cfg = ReplicateConfig { verify: true, ..config(&source, &target) };
    replicate(&cfg, &no_progress).await.unwrap();

    // Nothing changed: a resumed run skips every table (the target enforces the cycle's keys now).
    let report = replicate(&cfg, &no_progress).await.unwrap();
    assert_eq!(report.skipped(), 3, "{report:#?}");

    // The source changes; a full re-sync copies the cycle again and re-creates its keys.
    exec(
        &source,
        "BEGIN; INSERT INTO a VALUES (101, 101); INSERT INTO b VALUES (101, 101); COMMIT; \
         UPDATE c SET a_id = 101 WHERE id = 1;",
    )
    .await;
    let again = ReplicateConfig { resume: false, ..cfg.clone() };
    let report = replicate(&again, &no_progress).await.unwrap();
    assert!(report.verified, "{report:#?}");
    assert!(report.tables.iter().all(|t| t.status == TableStatus::Copied), "{report:#?}");
    // The cycle's two keys were dropped for the load and created again.
    assert_eq!(report.objects_created, 2);
    assert_same_content(&source, &target, &["a", "b", "c"]).await;
    assert_eq!(definitions(&source, "public").await, definitions(&target, "public").await);
}

/// Status of each table of a report, by name.
fn statuses(report: &etlkit_replicate::ReplicationReport) -> Vec<(String, TableStatus)> {
    report.tables.iter().map(|t| (t.table.clone(), t.status)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_run_recopies_a_table_whose_source_changed() {
    let source = qa_source(100).await;
    let target = fresh().await;
    let cfg = ReplicateConfig { verify: true, ..config(&source, &target) };
    replicate(&cfg, &no_progress).await.unwrap();

    // Leaf tables change: one vote updated (same row count), one link deleted.
    exec(&source, "UPDATE votes SET weight = 0.5 WHERE id = 3; DELETE FROM post_links WHERE post_id = 2")
        .await;
    let report = replicate(&cfg, &no_progress).await.unwrap();
    assert!(report.verified, "{report:#?}");
    for (table, status) in statuses(&report) {
        let changed = table == "votes" || table == "post_links";
        let expected = if changed { TableStatus::Recopied } else { TableStatus::Skipped };
        assert_eq!(status, expected, "{table}");
    }
    assert_eq!(report.rows, 1000 + 49);
    assert_same_content(&source, &target, &QA_TABLES).await;

    // A referenced table changes: it is copied again, and so is the one table referencing it
    // (its rows had to go while the parent was emptied); the others are skipped.
    exec(&source, "UPDATE vote_types SET name = 'Up' WHERE id = 1").await;
    let report = replicate(&cfg, &no_progress).await.unwrap();
    assert!(report.verified, "{report:#?}");
    for (table, status) in statuses(&report) {
        let changed = table == "vote_types" || table == "votes";
        let expected = if changed { TableStatus::Recopied } else { TableStatus::Skipped };
        assert_eq!(status, expected, "{table}");
    }
    assert_same_content(&source, &target, &QA_TABLES).await;

    // Nothing changed: everything is skipped.
    let report = replicate(&cfg, &no_progress).await.unwrap();
    assert_eq!((report.skipped(), report.rows), (7, 0));

    // A ledger row without a fingerprint (or with another one) proves nothing: copied again.
    exec(&target, "UPDATE etlkit.replication_ledger SET fingerprint = NULL WHERE table_name = 'badges'")
        .await;
    let report = replicate(&cfg, &no_progress).await.unwrap();
    assert_eq!((report.skipped(), report.rows), (6, 150));
    let badges = report.tables.iter().find(|t| t.table == "badges").unwrap();
    assert_eq!(badges.status, TableStatus::Recopied);
}

/// Runs `sql` on `url` on a thread of its own (callable from a progress callback), returning the
/// database error's message, if any.
fn run_elsewhere(url: &str, sql: &str) -> std::thread::JoinHandle<Result<(), String>> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut c = PgConnection::connect(&url).await.map_err(|e| e.to_string())?;
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut c).await.map(|_| ()).map_err(|e| e.to_string())
        })
    })
}

/// A source with a `big` table (copied first with one worker) and a `small` one (10 rows).
async fn big_and_small_source() -> String {
    let source = fresh().await;
    exec(
        &source,
        "CREATE TABLE big (id int PRIMARY KEY, pad text); \
         INSERT INTO big SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g; \
         CREATE TABLE small (id int PRIMARY KEY, v text); \
         INSERT INTO small SELECT g, 'old ' || g FROM generate_series(1, 10) g; \
         ANALYZE;",
    )
    .await;
    source
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncate_on_the_source_during_a_run_waits_and_the_replica_holds_the_snapshot_rows() {
    let source = big_and_small_source().await;
    let target = fresh().await;
    let cfg = ReplicateConfig { workers: 1, verify: true, ..config(&source, &target) };
    // Once `big` is copied (and before `small` is), another session truncates and reloads `small`.
    let reload = Mutex::new(None);
    let on_progress = |p: &TableProgress<'_>| {
        if p.done && p.table == "big" {
            let sql = "SET lock_timeout = '300ms'; BEGIN; TRUNCATE small; \
                       INSERT INTO small SELECT g, 'new ' || g FROM generate_series(1, 3) g; COMMIT";
            *reload.lock().unwrap() = Some(run_elsewhere(&source, sql).join().unwrap());
        }
    };
    let report = replicate(&cfg, &on_progress).await.unwrap();
    // The replica holds the rows of the snapshot (not an empty table, verified as such).
    assert!(report.verified, "{report:#?}");
    assert_eq!(scalar(&target, "SELECT count(*) FROM small WHERE v LIKE 'old %'").await, 10);
    assert_eq!(scalar(&target, "SELECT count(*) FROM small").await, 10);
    let small = report.tables.iter().find(|t| t.table == "small").unwrap();
    assert_eq!(small.rows, 10);
    // The run holds ACCESS SHARE locks on the source tables: the TRUNCATE could not get its lock.
    let reload = reload.into_inner().unwrap().expect("big was copied");
    assert!(reload.as_ref().is_err_and(|e| e.contains("lock timeout")), "{reload:?}");
    // Once the run is over, the locks are gone.
    run_elsewhere(&source, "SET lock_timeout = '5s'; TRUNCATE small").join().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncate_queued_behind_the_run_fails_the_run_naming_the_table_instead_of_hanging() {
    let source = big_and_small_source().await;
    let target = fresh().await;
    let app = "etlkit-queued-truncate";
    let cfg = ReplicateConfig {
        workers: 1,
        lock_timeout: Duration::from_millis(300),
        application_name: app.into(),
        ..config(&source, &target)
    };
    // Once `big` is copied, another session queues a TRUNCATE of `small` behind the run's lock
    // (no lock timeout of its own): a new reader of `small` would wait behind it, forever.
    let truncate = Mutex::new(None);
    let on_progress = |p: &TableProgress<'_>| {
        if p.done && p.table == "big" {
            let sql =
                "SET application_name = 'queued-truncate'; SET statement_timeout = '60s'; TRUNCATE small";
            *truncate.lock().unwrap() = Some(run_elsewhere(&source, sql));
            let source = source.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    let waiting = "SELECT count(*) FROM pg_stat_activity WHERE application_name = \
                                   'queued-truncate' AND wait_event_type = 'Lock'";
                    for _ in 0..1000 {
                        if scalar(&source, waiting).await > 0 {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    panic!("the TRUNCATE did not wait for the run's lock");
                })
            })
            .join()
            .unwrap();
        }
    };
    let run = tokio::time::timeout(Duration::from_secs(30), replicate(&cfg, &on_progress));
    let err = run.await.expect("the run hangs behind the queued TRUNCATE").unwrap_err();
    match &err {
        ReplicationError::SourceBusy { table, reason } => {
            assert_eq!(table, "\"public\".\"small\"");
            assert!(reason.contains("lock_timeout") && reason.contains("run again"), "{reason}");
        }
        other => panic!("expected SourceBusy, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert!(err.to_string().contains("\"small\""), "{err}");
    // The run's locks are released with its sessions: the TRUNCATE goes through.
    let truncate = truncate.into_inner().unwrap().expect("big was copied");
    tokio::task::spawn_blocking(move || truncate.join().unwrap()).await.unwrap().unwrap();
    assert_eq!(scalar(&source, "SELECT count(*) FROM small").await, 0);
    // `big` is finished; `small` was never loaded.
    assert_eq!(scalar(&target, "SELECT count(*) FROM big").await, 2000);
    assert_eq!(scalar(&target, "SELECT count(*) FROM small").await, 0);
}

/// `url` connecting as `role` (`SET ROLE` at connection start, from the superuser's session).
fn as_role(url: &str, role: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20role%3D{role}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_that_hides_rows_from_the_source_role_is_refused_naming_the_table() {
    let source = fresh().await;
    let role = "etl_rls_owner";
    exec(
        &source,
        &format!(
            "DO $$ BEGIN CREATE ROLE {role} NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
             ALTER ROLE {role} NOBYPASSRLS; \
             CREATE TABLE notes (id int PRIMARY KEY, visible bool NOT NULL); \
             INSERT INTO notes SELECT g, g % 2 = 0 FROM generate_series(1, 10) g; \
             CREATE TABLE plain (id int PRIMARY KEY); INSERT INTO plain VALUES (1); \
             ALTER TABLE notes OWNER TO {role}; ALTER TABLE plain OWNER TO {role}; \
             ALTER TABLE notes ENABLE ROW LEVEL SECURITY; ALTER TABLE notes FORCE ROW LEVEL SECURITY; \
             CREATE POLICY only_visible ON notes USING (visible);"
        ),
    )
    .await;
    let owner = as_role(&source, role);
    // The policy hides half the rows from the owner (FORCE).
    assert_eq!(scalar(&owner, "SELECT count(*) FROM notes").await, 5);
    let target = fresh().await;
    let cfg = ReplicateConfig { verify: true, ..config(&owner, &target) };
    let err = replicate(&cfg, &no_progress).await.unwrap_err();
    match &err {
        ReplicationError::RowSecurity { tables } => assert_eq!(tables, &["\"public\".\"notes\""]),
        other => panic!("expected RowSecurity, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("\"notes\"") && msg.contains("BYPASSRLS"), "{msg}");
    assert!(!err.is_retryable());
    // Refused before writing anything.
    assert_eq!(scalar(&target, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").await, 0);

    // As the error says: a role with BYPASSRLS copies every row.
    exec(&source, &format!("ALTER ROLE {role} BYPASSRLS")).await;
    let report = replicate(&cfg, &no_progress).await;
    exec(&source, &format!("ALTER ROLE {role} NOBYPASSRLS")).await;
    let report = report.unwrap();
    assert!(report.verified, "{report:#?}");
    assert_eq!(scalar(&target, "SELECT count(*) FROM notes").await, 10);
    assert_eq!(scalar(&target, "SELECT count(*) FROM plain").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_in_an_inheritance_hierarchy_are_refused_naming_the_tables() {
    let source = fresh().await;
    exec(
        &source,
        "CREATE TABLE base (id int, v text CHECK (v <> '')); \
         CREATE TABLE kid (extra int) INHERITS (base); \
         CREATE TABLE other (id int PRIMARY KEY); \
         INSERT INTO base VALUES (1, 'a'); INSERT INTO kid VALUES (2, 'b', 7); INSERT INTO other VALUES (1);",
    )
    .await;
    let target = fresh().await;
    let err = replicate(&config(&source, &target), &no_progress).await.unwrap_err();
    match &err {
        ReplicationError::UnsupportedTable { table, reason } => {
            assert_eq!(table, "\"public\".\"base\"");
            assert!(reason.contains("inherited by \"public\".\"kid\""), "{reason}");
        }
        other => panic!("expected UnsupportedTable, got {other:?}"),
    }
    assert!(err.to_string().contains("inheritance"), "{err}");
    let kid_only = ReplicateConfig { tables: vec!["kid".into()], ..config(&source, &target) };
    match replicate(&kid_only, &no_progress).await.unwrap_err() {
        ReplicationError::UnsupportedTable { table, reason } => {
            assert_eq!(table, "\"public\".\"kid\"");
            assert!(reason.contains("inherits from \"public\".\"base\""), "{reason}");
        }
        other => panic!("expected UnsupportedTable, got {other:?}"),
    }
    // Refused before writing anything; the other tables replicate.
    assert_eq!(scalar(&target, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").await, 0);
    let rest = ReplicateConfig { tables: vec!["other".into()], verify: true, ..config(&source, &target) };
    assert!(replicate(&rest, &no_progress).await.unwrap().verified);
    assert_eq!(
        strings(&target, "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'").await,
        ["other"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_columns_keep_their_sequence_options() {
    let source = fresh().await;
    exec(
        &source,
        "CREATE TABLE odd (id int GENERATED BY DEFAULT AS IDENTITY (START WITH 1 INCREMENT BY 2) \
             PRIMARY KEY, v text); \
         CREATE TABLE down (id bigint GENERATED ALWAYS AS IDENTITY (START WITH -1 INCREMENT BY -1 \
             MINVALUE -1000 MAXVALUE -1 CACHE 3 CYCLE) PRIMARY KEY, v text); \
         INSERT INTO odd (v) SELECT 'o' FROM generate_series(1, 3); \
         INSERT INTO down (v) SELECT 'd' FROM generate_series(1, 3);",
    )
    .await;
    let target = fresh().await;
    let report =
        replicate(&ReplicateConfig { verify: true, ..config(&source, &target) }, &no_progress).await.unwrap();
    assert!(report.verified, "{report:#?}");
    let options = "SELECT tablename || ' ' || s.data_type::text || ' ' || s.start_value || ' ' || \
                   s.increment_by || ' ' || s.min_value || ' ' || s.max_value || ' ' || s.cache_size || \
                   ' ' || s.cycle FROM (VALUES ('odd'), ('down')) t (tablename) \
                   JOIN pg_sequences s ON format('%I.%I', s.schemaname, s.sequencename) = \
                   pg_get_serial_sequence(t.tablename, 'id') ORDER BY 1";
    let source_options = strings(&source, options).await;
    assert_eq!(source_options.len(), 2);
    assert_eq!(strings(&target, options).await, source_options);
    // The next ids follow the source's scheme: odd numbers, counting down.
    assert_eq!(scalar(&target, "INSERT INTO odd (v) VALUES ('n') RETURNING id::int8").await, 7);
    assert_eq!(scalar(&target, "INSERT INTO down (v) VALUES ('n') RETURNING id").await, -4);
}

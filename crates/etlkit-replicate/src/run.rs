//! [`replicate`] and [`pipe_table`]: the phases of a run (see the crate docs).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::str::FromStr;
use std::time::{Duration, Instant};

use etlkit_postgres::{DatabaseUrl, PgError, RetryPolicy, TableRef, quote_ident};
use futures::stream::{FuturesUnordered, StreamExt, TryStreamExt};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use crate::config::{ReplicateConfig, check_chunk_bytes};
use crate::error::{PostDataFailed, ReplicationError, Result, db};
use crate::plan::Plan;
use crate::report::{ReplicationReport, TableProgress, TableReport, TableStatus, Verification};
use crate::schema::{PostData, SourceSchema};
use crate::{column_list, empty, ledger, pipe, plan, schema, verify};

async fn open(url: &DatabaseUrl, application_name: &str) -> Result<PgConnection> {
    let opts = PgConnectOptions::from_str(url.expose())
        .map_err(|e| db("parsing the connection URL", url.redacted(), e))?
        .application_name(application_name);
    PgConnection::connect_with(&opts).await.map_err(|e| db("connecting", url.redacted(), e))
}

async fn exec(conn: &mut PgConnection, sql: String, action: &'static str, what: &str) -> Result<()> {
    sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn).await.map_err(|e| db(action, what, e))?;
    Ok(())
}

/// Settings of every source session, before its transaction: `row_security = off`, so that a
/// row-level security policy that would filter what the session reads makes the read fail ("query
/// would be affected by row-level security policy") instead of silently returning fewer rows — a
/// filtered copy would verify too, the checksum being computed by the same role (`pg_dump` does
/// the same).
const SOURCE_SESSION_SETTINGS: &str = "SET row_security = off";

/// `SET LOCAL lock_timeout` to `timeout` (validated: 1 ms ..= 24 days), inside a transaction.
fn set_lock_timeout(timeout: Duration) -> String {
    format!("SET LOCAL lock_timeout = '{}ms'", timeout.as_millis())
}

/// Locks `table` (quoted) in `ACCESS SHARE` mode in the source session's transaction, waiting at
/// most the session's `lock_timeout`. A lock not granted in time is
/// [`ReplicationError::SourceBusy`] with `busy` as its reason; a table that no longer exists under
/// its name (dropped or renamed since the snapshot) too.
async fn lock_source_table(
    conn: &mut PgConnection,
    table: &str,
    busy: impl FnOnce() -> String,
) -> Result<()> {
    let sql = format!("LOCK TABLE ONLY {table} IN ACCESS SHARE MODE");
    match sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *conn).await {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
            Err(ReplicationError::SourceBusy { table: table.to_owned(), reason: busy() })
        }
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P01") => {
            Err(ReplicationError::SourceBusy {
                table: table.to_owned(),
                reason: "it was dropped or renamed just as the run took its snapshot; run again".into(),
            })
        }
        Err(e) => Err(db("locking the source table", table, e)),
    }
}

/// Everything the table jobs share.
struct Run<'a> {
    config: &'a ReplicateConfig,
    schema: SourceSchema,
    snapshot: String,
    on_progress: &'a (dyn Fn(&TableProgress<'_>) + Send + Sync),
}

impl Run<'_> {
    /// A source session inside the exported snapshot (with [`SOURCE_SESSION_SETTINGS`]), holding an
    /// `ACCESS SHARE` lock on `table` (quoted), the table it reads.
    ///
    /// The coordinator holds that lock already, so the table cannot be truncated or rewritten; but
    /// another session queued for an exclusive lock on it (a `TRUNCATE` waiting for the run) makes
    /// every new reader wait behind it — and it waits for the run. So the lock is taken here, before
    /// reading, within [`ReplicateConfig::lock_timeout`], and a timeout is
    /// [`ReplicationError::SourceBusy`] naming the table instead of a run that never ends.
    async fn source_session(&self, table: &str) -> Result<PgConnection> {
        let mut conn = open(&self.config.source, &self.config.application_name).await?;
        exec(
            &mut conn,
            format!(
                "{SOURCE_SESSION_SETTINGS}; BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
                 SET TRANSACTION SNAPSHOT '{}'; {}",
                self.snapshot.replace('\'', "''"),
                set_lock_timeout(self.config.lock_timeout)
            ),
            "joining the replication snapshot",
            &self.config.source.redacted(),
        )
        .await?;
        let timeout = self.config.lock_timeout;
        lock_source_table(&mut conn, table, || {
            format!(
                "waited {timeout:?} (`lock_timeout`) to read it: another session is queued for an \
                 exclusive lock on it (TRUNCATE, ALTER TABLE, ...) behind this run's lock, and new \
                 readers wait behind that session; cancel it (or let it time out), then run again \
                 (finished tables are resumed)"
            )
        })
        .await?;
        Ok(conn)
    }

    /// The source side of a table's copy. The query form reads exactly this table (ONLY); it
    /// measured as fast as `COPY table TO` (docs/benchmarks.md). Row-level security cannot filter
    /// it: the run refuses tables where it applies, and source sessions run with
    /// `row_security = off`.
    fn copy_out(&self, index: usize) -> String {
        let t = &self.schema.tables[index];
        let list = column_list(t.copy_columns().map(|c| c.name.as_str()));
        let qualified = self.schema.qualified(&t.name);
        format!("COPY (SELECT {list} FROM ONLY {qualified}) TO STDOUT (FORMAT binary)")
    }

    /// The row count and content fingerprint of a table's source in the snapshot: what its copy
    /// would record in the ledger.
    async fn source_fingerprint(&self, index: usize) -> Result<(usize, u64, String)> {
        let qualified = self.schema.qualified(&self.schema.tables[index].name);
        let ((rows, fingerprint), _) =
            retrying(&self.config.retry, "checking against the source", &qualified, || async {
                let mut source = self.source_session(&qualified).await?;
                let read = pipe::fingerprint(&mut source, &self.copy_out(index), &qualified).await?;
                exec(&mut source, "COMMIT".into(), "ending the source transaction", &qualified).await?;
                Ok(read)
            })
            .await?;
        Ok((index, rows, fingerprint))
    }

    /// Copies a table in one target transaction, again (from the same snapshot) after a retryable
    /// error as [`ReplicateConfig::retry`] allows, and reports it done.
    async fn copy_table(&self, index: usize) -> Result<Copied> {
        let t = &self.schema.tables[index];
        let qualified = self.schema.qualified(&t.name);
        let started = Instant::now();
        let (moved, retries) =
            retrying(&self.config.retry, "copying", &qualified, || self.copy_table_once(index, started))
                .await?;
        let elapsed = started.elapsed();
        (self.on_progress)(&TableProgress {
            table: &t.name,
            rows: moved.rows,
            bytes: moved.bytes,
            elapsed,
            done: true,
        });
        Ok(Copied { index, moved, retries, elapsed })
    }

    /// One try of [`Run::copy_table`]: new source and target sessions; nothing is left behind
    /// when it fails (the target transaction is rolled back when its connection is dropped).
    async fn copy_table_once(&self, index: usize, started: Instant) -> Result<pipe::Moved> {
        let t = &self.schema.tables[index];
        let qualified = self.schema.qualified(&t.name);
        let list = column_list(t.copy_columns().map(|c| c.name.as_str()));
        let cols = if list.is_empty() { String::new() } else { format!(" ({list})") };
        let mut source = self.source_session(&qualified).await?;
        let mut target = open(&self.config.target, &self.config.application_name).await?;
        let referenced: bool = sqlx::query(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE contype = 'f' \
             AND confrelid = to_regclass($1) AND conrelid <> confrelid)",
        )
        .bind(&qualified)
        .fetch_one(&mut target)
        .await
        .map_err(|e| db("reading the target catalog", qualified.clone(), e))?
        .get(0);
        // The pre-data transaction emptied the table already (every table referencing it too).
        // TRUNCATE again in the load transaction allows COPY FREEZE (rows written frozen, no later
        // hint-bit or freeze pass). A table another table's foreign key references cannot be
        // truncated alone; the (cheap, the table is empty) DELETE keeps "the table holds exactly
        // the copied rows" true within this transaction.
        let (empty, freeze) = if referenced {
            (format!("DELETE FROM ONLY {qualified}"), "")
        } else {
            (format!("TRUNCATE ONLY {qualified}"), ", FREEZE")
        };
        exec(&mut target, format!("BEGIN; {empty}"), "emptying the target table", &qualified).await?;
        let copy_out = self.copy_out(index);
        let copy_in = format!("COPY {qualified}{cols} FROM STDIN (FORMAT binary{freeze})");
        let mut report = |rows, bytes| {
            (self.on_progress)(&TableProgress {
                table: &t.name,
                rows,
                bytes,
                elapsed: started.elapsed(),
                done: false,
            })
        };
        let moved = pipe::pipe(
            &mut source,
            &copy_out,
            &mut target,
            &copy_in,
            &qualified,
            self.config.chunk_bytes,
            self.config.progress_interval,
            &mut report,
        )
        .await?;
        ledger::record(
            &mut target,
            &self.config.ledger,
            &self.schema.schema,
            &t.name,
            moved.rows,
            moved.bytes,
            &moved.fingerprint,
        )
        .await?;
        exec(&mut target, "COMMIT".into(), "committing the table", &qualified).await?;
        exec(&mut source, "COMMIT".into(), "ending the source transaction", &qualified).await?;
        Ok(moved)
    }

    async fn verify_table(&self, index: usize) -> Result<(usize, Verification)> {
        let t = &self.schema.tables[index];
        let qualified = self.schema.qualified(&t.name);
        let sql = verify::checksum_sql(&qualified, t.columns.iter().map(|c| c.name.as_str()));
        let (verification, _) = retrying(&self.config.retry, "verifying", &qualified, || async {
            let src = async {
                let mut conn = self.source_session(&qualified).await?;
                exec(&mut conn, verify::SESSION_SETTINGS.into(), "setting up verification", &qualified)
                    .await?;
                verify::checksum(&mut conn, &sql, &qualified).await
            };
            let tgt = async {
                let mut conn = open(&self.config.target, &self.config.application_name).await?;
                exec(&mut conn, verify::SESSION_SETTINGS.into(), "setting up verification", &qualified)
                    .await?;
                verify::checksum(&mut conn, &sql, &qualified).await
            };
            let (source, target) = futures::try_join!(src, tgt)?;
            Ok(Verification { source, target })
        })
        .await?;
        Ok((index, verification))
    }
}

/// A table copied by [`Run::copy_table`].
struct Copied {
    index: usize,
    moved: pipe::Moved,
    retries: u32,
    elapsed: Duration,
}

/// Runs `work` until it succeeds or fails with an error that `policy` does not retry (not
/// retryable, or the retries used up), waiting the policy's back-off between tries. Returns the
/// value and the number of retries. `what` and `object` name the work in the log.
async fn retrying<T, F, Fut>(policy: &RetryPolicy, what: &str, object: &str, mut work: F) -> Result<(T, u32)>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut retries = 0;
    loop {
        match work().await {
            Ok(value) => return Ok((value, retries)),
            Err(e) => {
                let Some(wait) = e.next_retry(policy, retries) else { return Err(e) };
                retries += 1;
                tracing::warn!(
                    what,
                    object,
                    retry = retries,
                    of = policy.max_retries,
                    wait_ms = wait.as_millis() as u64,
                    error = %etlkit_core::Report::of(&e),
                    "replicate: retrying after a retryable error"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Replicates `config.schema` (or `config.tables` of it) from `config.source` into `config.target`.
///
/// Phases: (1) export a source snapshot, read the catalog and lock the selected source tables in
/// `ACCESS SHARE` mode until the run ends (refusing tables that row-level security filters for the
/// source role); (2) plan foreign-key levels (a cycle
/// is one unit); (3) choose the tables to copy (with the tables referencing them) and refuse, before
/// writing, a cycle whose keys the target enforces (unless an earlier run loaded it) or a table
/// still referenced from outside the run; (4) create missing tables (columns, defaults, identity,
/// `NOT NULL`, checks) and empty the tables to copy, in one transaction;
/// (5) per table, one target transaction: `TRUNCATE`, binary `COPY` piped byte for byte from the
/// source (`FREEZE`), ledger row, `COMMIT` — a table starts once the tables it references are done,
/// at most `workers` at a time, and is copied again (new transaction, same snapshot) after a
/// retryable error, as [`ReplicateConfig::retry`] allows; (6) create missing keys, unique/exclusion constraints and indexes,
/// then foreign keys, then set sequences; (7) with `verify`, compare counts and checksums — any
/// difference is an error ([`ReplicationError::VerificationFailed`]) naming the tables.
/// A re-run (resume) skips the tables the ledger records as finished, unless their source changed
/// since; those are copied again, with the tables that reference them.
///
/// `on_progress` is called per table at most
/// every `progress_interval` while it copies and once when it is committed; it runs on the task
/// driving the copy, so it should return quickly.
///
/// On error, tables already committed stay committed and recorded in the ledger; tables in flight
/// are rolled back. [`ReplicationError::is_retryable`] says whether running again (which resumes)
/// can help.
pub async fn replicate(
    config: &ReplicateConfig,
    on_progress: &(dyn Fn(&TableProgress<'_>) + Send + Sync),
) -> Result<ReplicationReport> {
    config.validate()?;
    let run_started = Instant::now();
    let src_name = config.source.redacted();
    let tgt_name = config.target.redacted();

    // 1. Snapshot and catalog.
    let mut coord = open(&config.source, &config.application_name).await?;
    exec(
        &mut coord,
        format!(
            "SET search_path = pg_catalog; {SOURCE_SESSION_SETTINGS}; \
             BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; {}",
            set_lock_timeout(config.lock_timeout)
        ),
        "opening the replication snapshot",
        &src_name,
    )
    .await?;
    let snapshot: String = sqlx::query("SELECT pg_export_snapshot()")
        .fetch_one(&mut coord)
        .await
        .map_err(|e| db("exporting the replication snapshot", src_name.clone(), e))?
        .get(0);
    let ledger_here = config.ledger.schema.as_deref().unwrap_or("public") == config.schema;
    let exclude = ledger_here.then_some(config.ledger.name.as_str());
    let schema = schema::read_schema(&mut coord, &config.schema, &config.tables, exclude).await?;
    lock_source_tables(&mut coord, &schema, config.lock_timeout).await?;
    let run = Run { config, schema, snapshot, on_progress };
    let schema = &run.schema;

    // 2. Plan.
    let names: Vec<&str> = schema.tables.iter().map(|t| t.name.as_str()).collect();
    let edges = plan::edges(
        &names,
        schema.tables.iter().enumerate().flat_map(|(i, t)| t.parents(&schema.schema).map(move |p| (i, p))),
    );
    let plan = Plan::new(names.len(), &edges);
    let level_of = |i: usize| plan.level[plan.component_of[i]];
    let cycles: Vec<Vec<String>> = plan
        .cycles()
        .map(|c| {
            let mut v: Vec<String> = c.iter().map(|&i| names[i].to_owned()).collect();
            v.sort();
            v
        })
        .collect();

    // 3. What to copy, and checks before writing.
    let n = names.len();
    let mut admin = open(&config.target, &config.application_name).await?;
    let target_tables: HashSet<String> = sqlx::query(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')",
    )
    .bind(&schema.schema)
    .fetch_all(&mut admin)
    .await
    .map_err(|e| db("reading the target catalog", tgt_name.clone(), e))?
    .into_iter()
    .map(|r| r.get(0))
    .collect();
    let target_fks = empty::target_foreign_keys(&mut admin, &schema.schema).await?;
    let finished = ledger::finished(&mut admin, &config.ledger, &schema.schema).await?;
    let exists = |i: usize| target_tables.contains(names[i]);
    let recorded = |i: usize| exists(i) && finished.contains_key(names[i]);
    let pos: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    // A target foreign key between two selected tables, as (referencing, referenced).
    let selected_edge = |fk: &empty::TargetFk| -> Option<(usize, usize)> {
        if fk.schema != schema.schema {
            return None;
        }
        Some((*pos.get(fk.table.as_str())?, *pos.get(fk.references.as_str())?))
    };
    // A resumed run copies a finished table again when its source changed since: the row count or
    // content fingerprint of the source (in this run's snapshot) differs from the ledger's.
    let mut changed = vec![false; n];
    if config.resume {
        let check_started = Instant::now();
        let recorded_tables: Vec<usize> = (0..n).filter(|&i| recorded(i)).collect();
        let now: Vec<(usize, u64, String)> =
            futures::stream::iter(recorded_tables.iter().copied().map(|i| run.source_fingerprint(i)))
                .buffer_unordered(config.workers)
                .try_collect()
                .await?;
        for (i, rows, fingerprint) in now {
            let then = &finished[names[i]];
            if then.rows != rows || then.fingerprint.as_deref() != Some(fingerprint.as_str()) {
                tracing::info!(
                    table = names[i],
                    rows_then = then.rows,
                    rows_now = rows,
                    "replicate: source changed since an earlier run finished the table; copying it again"
                );
                changed[i] = true;
            }
        }
        tracing::info!(
            tables = recorded_tables.len(),
            changed = changed.iter().filter(|c| **c).count(),
            elapsed_s = check_started.elapsed().as_secs_f64(),
            "replicate: finished tables checked against the source"
        );
    }
    let mut copy: Vec<bool> = (0..n).map(|i| !config.resume || !recorded(i) || changed[i]).collect();
    // A table is emptied before it is copied, so every selected table referencing it (in the source
    // or in the target) is copied too.
    let references: Vec<(usize, usize)> = edges
        .iter()
        .copied()
        .chain(target_fks.iter().filter_map(selected_edge))
        .filter(|(c, p)| c != p)
        .collect();
    loop {
        let mut grew = false;
        for &(c, p) in &references {
            if copy[p] && !copy[c] {
                copy[c] = true;
                grew = true;
            }
        }
        if !grew {
            break;
        }
    }
    // A foreign key the target enforces inside a cycle about to be copied: when an earlier run
    // replicated every table of the cycle (the ledger says so), this is a re-sync — the key is
    // dropped in the pre-data transaction and post-data re-creates it from the source. Otherwise
    // the cycle cannot be loaded table by table: refused.
    let mut dropped = vec![false; target_fks.len()];
    for (k, fk) in target_fks.iter().enumerate() {
        let Some((c, p)) = selected_edge(fk) else { continue };
        let component = plan.component_of[c];
        if component != plan.component_of[p] || !copy[c] {
            continue;
        }
        let members = &plan.components[component];
        if members.iter().all(|&m| recorded(m)) {
            dropped[k] = true;
        } else {
            return Err(ReplicationError::ForeignKeyCycle {
                tables: members.iter().map(|&i| schema.qualified(names[i])).collect(),
                constraint: format!("{} on {}", quote_ident(&fk.name), schema.qualified(&fk.table)),
            });
        }
    }
    let to_empty: Vec<bool> = (0..n).map(|i| copy[i] && exists(i)).collect();
    let emptying = empty::Emptying::plan(&schema.schema, &names, &to_empty, &target_fks, &dropped);
    emptying.check(&mut admin, &schema.schema, &names, &target_fks).await?;

    // 4. Pre-data, in one transaction: create what is missing, forget the tables to copy in the
    // ledger, empty them.
    let mut ddl = vec![format!("CREATE SCHEMA IF NOT EXISTS {}", quote_ident(&schema.schema))];
    let created: Vec<usize> = (0..n).filter(|&i| !exists(i)).collect();
    for s in &schema.sequences {
        ddl.push(format!("CREATE SEQUENCE IF NOT EXISTS {} {}", s.quoted, s.options));
    }
    for &i in &created {
        ddl.push(schema.create_table_sql(&schema.tables[i]));
    }
    for s in &schema.sequences {
        if let Some((table, column)) = &s.owned_by
            && created.iter().any(|&i| names[i] == table)
        {
            ddl.push(format!(
                "ALTER SEQUENCE {} OWNED BY {}.{}",
                s.quoted,
                schema.qualified(table),
                quote_ident(column)
            ));
        }
    }
    exec(&mut admin, "BEGIN".into(), "creating tables", &tgt_name).await?;
    for stmt in ddl {
        exec(&mut admin, stmt.clone(), "creating tables (pre-data)", &stmt).await?;
    }
    ledger::ensure(&mut admin, &config.ledger).await?;
    let forget: Vec<String> = (0..n).filter(|&i| copy[i]).map(|i| names[i].to_owned()).collect();
    ledger::forget(&mut admin, &config.ledger, &schema.schema, &forget).await?;
    for fk in target_fks.iter().zip(&dropped).filter(|(_, d)| **d).map(|(fk, _)| fk) {
        let sql = format!("ALTER TABLE {} DROP CONSTRAINT {}", fk.qualified_table(), quote_ident(&fk.name));
        tracing::info!(
            constraint = fk.name,
            table = fk.table,
            "replicate: foreign key inside a cycle dropped for the re-sync"
        );
        exec(&mut admin, sql, "dropping a foreign key inside a cycle", &fk.qualified_table()).await?;
    }
    for stmt in emptying.statements(&schema.schema, &names) {
        exec(&mut admin, stmt.clone(), "emptying the tables to copy", &stmt).await?;
    }
    exec(&mut admin, "COMMIT".into(), "creating tables", &tgt_name).await?;

    // 5. Data.
    let data_started = Instant::now();
    let mut reports: Vec<Option<TableReport>> = vec![None; n];
    let mut left_in_component: Vec<usize> = plan.components.iter().map(Vec::len).collect();
    let mut started = vec![false; n];
    for (i, name) in names.iter().enumerate() {
        if !copy[i] {
            let rows = finished[*name].rows;
            started[i] = true;
            left_in_component[plan.component_of[i]] -= 1;
            reports[i] = Some(TableReport {
                table: (*name).to_owned(),
                level: level_of(i),
                status: TableStatus::Skipped,
                rows,
                bytes: 0,
                copy_messages: 0,
                retries: 0,
                elapsed: Duration::ZERO,
                verification: None,
            });
            tracing::info!(table = *name, rows, "replicate: finished by an earlier run, skipped");
        }
    }
    let mut by_size: Vec<usize> = (0..n).collect();
    by_size.sort_by_key(|&i| std::cmp::Reverse(run.schema.tables[i].size_bytes));
    let mut running = FuturesUnordered::new();
    let mut peak = 0;
    loop {
        while running.len() < config.workers {
            let ready = by_size.iter().copied().find(|&i| {
                !started[i] && plan.parents[plan.component_of[i]].iter().all(|&p| left_in_component[p] == 0)
            });
            let Some(i) = ready else { break };
            started[i] = true;
            running.push(run.copy_table(i));
            peak = peak.max(running.len());
        }
        let Some(done) = running.next().await else { break };
        let Copied { index: i, moved, retries, elapsed } = done?;
        let (rows, bytes) = (moved.rows, moved.bytes);
        left_in_component[plan.component_of[i]] -= 1;
        tracing::info!(
            table = names[i],
            rows,
            bytes,
            elapsed_s = elapsed.as_secs_f64(),
            "replicate: table copied"
        );
        reports[i] = Some(TableReport {
            table: names[i].to_owned(),
            level: level_of(i),
            status: if config.resume && recorded(i) { TableStatus::Recopied } else { TableStatus::Copied },
            rows,
            bytes,
            copy_messages: moved.messages,
            retries,
            elapsed,
            verification: None,
        });
    }
    drop(running);

    let data_elapsed = data_started.elapsed();

    // 6. Post-data.
    let post_started = Instant::now();
    // Constraints and indexes the target has: (table, name) -> validated.
    let existing: HashMap<(String, String), bool> = sqlx::query(
        "SELECT cl.relname::text, con.conname::text, con.convalidated FROM pg_constraint con \
         JOIN pg_class cl ON cl.oid = con.conrelid JOIN pg_namespace n ON n.oid = cl.relnamespace \
         WHERE n.nspname = $1 \
         UNION ALL \
         SELECT t.relname::text, c.relname::text, true FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1",
    )
    .bind(&run.schema.schema)
    .fetch_all(&mut admin)
    .await
    .map_err(|e| db("reading the target catalog", tgt_name.clone(), e))?
    .into_iter()
    .map(|r| ((r.get(0), r.get(1)), r.get(2)))
    .collect();
    // Index names are unique per schema, whatever the table.
    let index_names: BTreeSet<&str> = existing.keys().map(|(_, i)| i.as_str()).collect();
    let mut indexes = Vec::new();
    let mut fk_adds = Vec::new();
    let mut fk_validations: Vec<PostData> = Vec::new();
    let mut fks_skipped = Vec::new();
    let all_target_tables: HashSet<&str> =
        target_tables.iter().map(String::as_str).chain(names.iter().copied()).collect();
    for t in &run.schema.tables {
        let (a, b) = run.schema.post_data(t);
        for item in a {
            let present = if item.index {
                index_names.contains(item.name.as_str())
            } else {
                existing.contains_key(&(item.table.clone(), item.name.clone()))
            };
            if !present {
                indexes.push(item);
            }
        }
        for item in b {
            let validation = item.validate.clone().map(|sql| PostData { sql, ..item.clone() });
            match existing.get(&(item.table.clone(), item.name.clone())) {
                // Added NOT VALID by a run that stopped before validating it.
                Some(false) => fk_validations.extend(validation),
                Some(true) => {}
                None => {
                    let reachable = match &item.references {
                        Some((s, rt)) if *s == run.schema.schema => all_target_tables.contains(rt.as_str()),
                        Some((s, rt)) => {
                            let q = format!("{}.{}", quote_ident(s), quote_ident(rt));
                            sqlx::query("SELECT to_regclass($1) IS NOT NULL")
                                .bind(&q)
                                .fetch_one(&mut admin)
                                .await
                                .map_err(|e| db("reading the target catalog", q.clone(), e))?
                                .get::<bool, _>(0)
                        }
                        None => true,
                    };
                    if reachable {
                        fk_adds.push(item);
                        fk_validations.extend(validation);
                    } else {
                        tracing::warn!(
                            constraint = item.name,
                            table = item.table,
                            "replicate: referenced table missing in the target; foreign key skipped"
                        );
                        fks_skipped.push(format!(
                            "{} on {}",
                            quote_ident(&item.name),
                            run.schema.qualified(&item.table)
                        ));
                    }
                }
            }
        }
    }
    let objects_created = indexes.len() + fk_adds.len();
    // Keys and indexes: one job each, all at once (CREATE INDEX locks allow it).
    post_data(config, indexes.into_iter().map(|i| vec![i]).collect()).await?;
    // Foreign keys NOT VALID: instant, one after the other (they lock both tables).
    post_data(config, vec![fk_adds]).await?;
    // Validation: one job per table (validations of one table serialize on its lock), biggest first.
    let size_of =
        |table: &str| run.schema.tables.iter().find(|t| t.name == table).map_or(0, |t| t.size_bytes);
    let mut by_table: Vec<Vec<PostData>> = Vec::new();
    for v in fk_validations {
        match by_table.iter_mut().find(|j| j[0].table == v.table) {
            Some(job) => job.push(v),
            None => by_table.push(vec![v]),
        }
    }
    by_table.sort_by_key(|j| std::cmp::Reverse(size_of(&j[0].table)));
    post_data(config, by_table).await?;

    // Sequences: the source's current values.
    let mut seqs: Vec<(String, String)> =
        run.schema.sequences.iter().map(|s| (s.quoted.clone(), s.quoted.clone())).collect();
    for t in &run.schema.tables {
        for c in t.columns.iter().filter(|c| !c.identity.is_empty()) {
            if let Some(src_seq) = &c.serial_sequence {
                let tgt: Option<String> = sqlx::query("SELECT pg_get_serial_sequence($1, $2)")
                    .bind(run.schema.qualified(&t.name))
                    .bind(&c.name)
                    .fetch_one(&mut admin)
                    .await
                    .map_err(|e| db("reading the target catalog", tgt_name.clone(), e))?
                    .get(0);
                if let Some(tgt) = tgt {
                    seqs.push((src_seq.clone(), tgt));
                }
            }
        }
    }
    for (src_seq, tgt_seq) in seqs {
        let row = sqlx::query(AssertSqlSafe(format!("SELECT last_value, is_called FROM {src_seq}")))
            .fetch_one(&mut coord)
            .await
            .map_err(|e| db("reading a source sequence", src_seq.clone(), e))?;
        let (last, called): (i64, bool) = (row.get(0), row.get(1));
        sqlx::query("SELECT setval($1::regclass, $2, $3)")
            .bind(&tgt_seq)
            .bind(last)
            .bind(called)
            .execute(&mut admin)
            .await
            .map_err(|e| db("setting a target sequence", tgt_seq.clone(), e))?;
    }

    let post_data_elapsed = post_started.elapsed();

    // 7. Verify.
    let verify_started = Instant::now();
    let mut verified = false;
    if config.verify {
        let results: Vec<(usize, Verification)> = futures::stream::iter((0..n).map(|i| run.verify_table(i)))
            .buffer_unordered(config.workers)
            .try_collect()
            .await?;
        verified = true;
        for (i, v) in results {
            if !v.matches() {
                verified = false;
                tracing::warn!(table = names[i], source = ?v.source, target = ?v.target, "replicate: verification mismatch");
            }
            if let Some(r) = reports[i].as_mut() {
                r.verification = Some(v);
            }
        }
    }
    let verify_elapsed = if config.verify { verify_started.elapsed() } else { Duration::ZERO };
    exec(&mut coord, "COMMIT".into(), "closing the replication snapshot", &src_name).await?;

    // Plan order: by level, then name.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (level_of(i), names[i]));
    let tables: Vec<TableReport> = order.iter().filter_map(|&i| reports[i].take()).collect();
    let levels =
        plan.levels().into_iter().map(|l| l.into_iter().map(|i| names[i].to_owned()).collect()).collect();
    let report = ReplicationReport {
        schema: run.schema.schema.clone(),
        levels,
        cycles,
        rows: tables.iter().filter(|t| t.status != TableStatus::Skipped).map(|t| t.rows).sum(),
        tables,
        tables_created: created.len(),
        objects_created,
        foreign_keys_skipped: fks_skipped,
        peak_parallel_tables: peak,
        elapsed: run_started.elapsed(),
        data_elapsed,
        post_data_elapsed,
        verify_elapsed,
        verified,
    };
    let differ: Vec<String> = report
        .tables
        .iter()
        .filter(|t| t.verification.as_ref().is_some_and(|v| !v.matches()))
        .map(|t| run.schema.qualified(&t.table))
        .collect();
    if !differ.is_empty() {
        return Err(ReplicationError::VerificationFailed { tables: differ, report: Box::new(report) });
    }
    Ok(report)
}

/// Locks every table of `schema` in `ACCESS SHARE` mode in the coordinator's transaction (held
/// until the run ends, as `pg_dump` does): `TRUNCATE` and the rewriting forms of `ALTER TABLE` are not
/// MVCC-safe — a table truncated and reloaded after the snapshot would look empty in it, and its copy
/// and verification (same snapshot) would agree on zero rows. With the lock they wait for the run.
/// Then, with the locks held:
///
/// - a table rewritten between the snapshot and its lock (its file in the snapshot's catalog is not
///   the current one) is refused ([`ReplicationError::SourceBusy`]: run again);
/// - tables where row-level security applies to this role are refused
///   ([`ReplicationError::RowSecurity`]): the copy would hold only the rows the policies show.
async fn lock_source_tables(
    coord: &mut PgConnection,
    schema: &SourceSchema,
    timeout: Duration,
) -> Result<()> {
    for t in &schema.tables {
        lock_source_table(coord, &schema.qualified(&t.name), || {
            format!(
                "could not lock it in ACCESS SHARE mode within {timeout:?} (`lock_timeout`): another \
                 session holds or is queued for an exclusive lock on it (TRUNCATE, ALTER TABLE, VACUUM \
                 FULL, CLUSTER, LOCK TABLE); let that session finish or raise `lock_timeout`, then run \
                 again"
            )
        })
        .await?;
    }
    let oids: Vec<i64> = schema.tables.iter().map(|t| t.oid).collect();
    let db = |e| db("reading the source catalog", quote_ident(&schema.schema), e);
    // `pg_class` read by a query shows the snapshot's row; `pg_relation_filenode` reads the
    // current catalog.
    let rewritten: Option<String> = sqlx::query(
        "SELECT relname::text FROM pg_class WHERE oid = ANY($1::int8[]::oid[]) \
         AND relfilenode IS DISTINCT FROM pg_relation_filenode(oid) ORDER BY relname LIMIT 1",
    )
    .bind(&oids)
    .fetch_optional(&mut *coord)
    .await
    .map_err(db)?
    .map(|r| r.get(0));
    if let Some(name) = rewritten {
        return Err(ReplicationError::SourceBusy {
            table: schema.qualified(&name),
            reason: "it was truncated or rewritten (TRUNCATE, ALTER TABLE, VACUUM FULL, CLUSTER) just as \
                     the run took its snapshot, so the snapshot cannot see its rows; run again"
                .into(),
        });
    }
    let filtered: Vec<String> = sqlx::query(
        "SELECT relname::text FROM pg_class WHERE oid = ANY($1::int8[]::oid[]) \
         AND row_security_active(oid) ORDER BY relname",
    )
    .bind(&oids)
    .fetch_all(&mut *coord)
    .await
    .map_err(db)?
    .into_iter()
    .map(|r| schema.qualified(&r.get::<String, _>(0)))
    .collect();
    if !filtered.is_empty() {
        return Err(ReplicationError::RowSecurity { tables: filtered });
    }
    Ok(())
}

/// Copies `columns` of `table` from `source` to the same-named table and columns on `target` by
/// binary COPY, bytes piped as they arrive (`COPY (SELECT ...) TO STDOUT` into `COPY ... FROM
/// STDIN`), `chunk_bytes` per message; returns the rows loaded. The building block of
/// [`replicate`], for callers who manage the connections and transactions themselves (the copy
/// runs in whatever transaction each connection is in). Both tables must have the same column
/// types. The source rows are the ones the source session's role may see: where row-level security
/// applies to it, set `row_security = off` on the source session first, so that PostgreSQL refuses
/// the read instead of filtering it ([`replicate`] does).
pub async fn pipe_table(
    source: &mut PgConnection,
    target: &mut PgConnection,
    table: &TableRef,
    columns: &[String],
    chunk_bytes: usize,
) -> Result<u64> {
    if columns.is_empty() {
        return Err(ReplicationError::InvalidConfig { field: "columns", reason: "must not be empty".into() });
    }
    check_chunk_bytes(chunk_bytes)?;
    let list = column_list(columns.iter().map(String::as_str));
    let q = table.quoted();
    let copy_out = format!("COPY (SELECT {list} FROM ONLY {q}) TO STDOUT (FORMAT binary)");
    let copy_in = format!("COPY {q} ({list}) FROM STDIN (FORMAT binary)");
    let moved =
        pipe::pipe(source, &copy_out, target, &copy_in, &q, chunk_bytes, Duration::MAX, &mut |_, _| {})
            .await?;
    Ok(moved.rows)
}

/// Runs post-data jobs, `workers` at a time, each on its own connection, its statements in order.
/// A statement that fails with a retryable error (deadlocks and serialization failures between
/// concurrent `ALTER TABLE`s, a lost connection) runs again on a new connection, as
/// [`ReplicateConfig::retry`] allows.
async fn post_data(config: &ReplicateConfig, jobs: Vec<Vec<PostData>>) -> Result<()> {
    futures::stream::iter(jobs.into_iter().filter(|j| !j.is_empty()).map(|job| async move {
        let mut conn: Option<PgConnection> = None;
        for item in job {
            let object = format!("{} on {}", quote_ident(&item.name), quote_ident(&item.table));
            let mut retries = 0;
            loop {
                let tried = async {
                    let c = match conn.as_mut() {
                        Some(c) => c,
                        None => conn.insert(open(&config.target, &config.application_name).await?),
                    };
                    sqlx::raw_sql(AssertSqlSafe(item.sql.clone())).execute(c).await.map_err(|source| {
                        ReplicationError::PostData(Box::new(PostDataFailed {
                            sql: item.sql.clone(),
                            source: PgError::Database {
                                action: "creating an index or constraint",
                                table: object.clone(),
                                source,
                            },
                        }))
                    })
                }
                .await;
                let Err(e) = tried else { break };
                let Some(wait) = e.next_retry(&config.retry, retries) else { return Err(e) };
                retries += 1;
                tracing::warn!(
                    object,
                    retry = retries,
                    of = config.retry.max_retries,
                    wait_ms = wait.as_millis() as u64,
                    error = %etlkit_core::Report::of(&e),
                    "replicate: retrying a post-data statement after a retryable error"
                );
                // A new session: the old one may be broken, and a deadlock victim's is no better.
                conn = None;
                tokio::time::sleep(wait).await;
            }
        }
        Ok(())
    }))
    .buffer_unordered(config.workers)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send<T: Send>(_: &T) {}

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_table_truncated_between_the_snapshot_and_its_lock_is_refused() {
        let url = tokio::task::spawn_blocking(|| {
            let pg = etlkit_testkit::PgServer::start().unwrap();
            (pg.fresh_database().unwrap(), pg)
        });
        let (url, _pg) = url.await.unwrap();
        let mut other = PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("CREATE TABLE kept (id int); CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
            .execute(&mut other)
            .await
            .unwrap();
        // The coordinator's steps up to its locks, with a TRUNCATE between the snapshot and the lock.
        let mut coord = PgConnection::connect(&url).await.unwrap();
        sqlx::raw_sql("SET search_path = pg_catalog; BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut coord)
            .await
            .unwrap();
        sqlx::query("SELECT pg_export_snapshot()").fetch_one(&mut coord).await.unwrap();
        let schema = schema::read_schema(&mut coord, "public", &[], None).await.unwrap();
        sqlx::raw_sql("TRUNCATE t").execute(&mut other).await.unwrap();
        let err = lock_source_tables(&mut coord, &schema, Duration::from_secs(5)).await.unwrap_err();
        match &err {
            ReplicationError::SourceBusy { table, reason } => {
                assert_eq!(table, "\"public\".\"t\"");
                assert!(
                    reason.contains("truncated or rewritten") && reason.contains("run again"),
                    "{reason}"
                );
            }
            other => panic!("expected SourceBusy, got {other:?}"),
        }
        assert!(err.is_retryable());
    }

    #[test]
    fn runs_can_be_spawned() {
        // Never polled: only the futures' types matter.
        let config = ReplicateConfig::default();
        let quiet = |_: &TableProgress<'_>| {};
        send(&replicate(&config, &quiet));
        let connect = async {
            let mut source = PgConnection::connect("postgres://localhost/a").await?;
            let mut target = PgConnection::connect("postgres://localhost/b").await?;
            Ok::<_, sqlx::Error>(
                pipe_table(&mut source, &mut target, &TableRef::new("t"), &[], 8 << 10).await,
            )
        };
        send(&connect);
    }
}

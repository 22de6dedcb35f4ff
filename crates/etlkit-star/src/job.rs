//! [`StarJobConfig`] and [`StarJob::run`]: the whole star-schema load.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_schema::{DataType, Field};
use etlkit_core::{LoadStats, Pipeline, PipelineConfig, RejectSink, Rejected, Transform};
use etlkit_dimcache::{DimensionCache, DimensionStore, FactRole, StarSchema};
use etlkit_hash::{Dedup, HashFormat, RowHashConfig, RowHashTransform};
use etlkit_postgres::sqlx::{self, AssertSqlSafe, PgPool};
use etlkit_postgres::{
    DatabaseUrl, PgDimensionConfig, PgDimensionStore, PgStarConfig, PgStarSink, RetryPolicy, StarLoadMode,
    TableRef, connect, pg_type_for, quote_ident,
};
use etlkit_source::{OpenOptions, list_inputs, open_file, run_each};

use crate::bulk::{self, BulkGate, BulkPolicy, Gated, LEDGER_DDL, LoadLock, Tables};
use crate::dedup::{DedupStrategy, RowHash, pass_config, seed};
use crate::dimensions::{
    CalendarStore, DimensionConfig, DimensionKind, DimensionRole, derived_date_name, load_lookup,
};
use crate::error::{Result, StarError};
use crate::inputs::{
    Conform, DerivedDate, FileMapping, InputsConfig, MissingColumns, TargetColumn, map_file,
};
use crate::report::StarReport;

/// The fact table.
#[derive(Debug, Clone, PartialEq)]
pub struct FactConfig {
    /// The table (created if missing). Default: empty (must be set).
    pub table: TableRef,
    /// Target columns copied to the fact table as measures. Default: none.
    pub measures: Vec<String>,
    /// Target columns copied to the fact table as degenerate attributes (an order number, a flag).
    /// Default: none.
    pub degenerate: Vec<String>,
    /// Create the fact table with a `FOREIGN KEY` from each dimension-key column to its dimension's
    /// surrogate key (checked by the server on every insert). Default `false`.
    pub foreign_keys: bool,
}

impl Default for FactConfig {
    fn default() -> Self {
        FactConfig {
            table: TableRef::new(""),
            measures: Vec::new(),
            degenerate: Vec::new(),
            foreign_keys: false,
        }
    }
}

/// A star-schema job: input files mapped onto a target schema, de-duplicated by row hash, loaded
/// into dimension tables (surrogate keys) and a fact table, and optionally into a normalized rows
/// table. Plain struct with documented defaults; [`StarJobConfig::validate`] checks it.
#[derive(Debug, Clone)]
pub struct StarJobConfig {
    /// The input files and bad-row policy.
    pub inputs: InputsConfig,
    /// The target schema every file is mapped onto. Default: none (must be set).
    pub columns: Vec<TargetColumn>,
    /// The row hash. Default [`RowHash::default`] (`row_hash`, every target column, SHA-256).
    pub row_hash: RowHash,
    /// De-duplication. Default [`DedupStrategy::Auto`] with 192 MiB.
    pub dedup: DedupStrategy,
    /// The dimensions. Default: none.
    pub dimensions: Vec<DimensionConfig>,
    /// The fact table.
    pub fact: FactConfig,
    /// A table receiving every target column of each new row (plus the row hash, under a UNIQUE
    /// constraint), in the same transaction as its fact row. `None`: a facts-only job (the fact
    /// table holds the row hash under the UNIQUE constraint). Default `None`.
    pub rows_table: Option<TableRef>,
    /// A view with the columns of a rows table (every target column of each row, then the row hash),
    /// read back from the fact table and its dimensions instead of storing every value twice:
    /// created with the job's tables, and replaced only when its query changes (its comment records
    /// the query), so that runs do not wait for the queries reading it. Each target column must be stored in the fact
    /// (a measure or degenerate attribute) or be the one-column natural key of a role with the
    /// column's own type, not floating-point (NULL keys come back as NULL from the unknown member);
    /// [`validate`] names any other column. Not with `rows_table`. Default `None`.
    ///
    /// [`validate`]: StarJobConfig::validate
    pub rows_view: Option<TableRef>,
    /// When and how to load in bulk. Default [`BulkPolicy::default`].
    pub bulk: BulkPolicy,
    /// Rows per batch and per load transaction. Default 65 536.
    pub batch_size: usize,
    /// Concurrent load transactions (connections). Default 2.
    pub workers: usize,
    /// Retries of a batch's transaction after a transient error. Default [`RetryPolicy::default`].
    pub retry: RetryPolicy,
    /// Dimension tables' schema (`None`: the `search_path`). Default `None`.
    pub dimension_schema: Option<String>,
}

impl Default for StarJobConfig {
    fn default() -> Self {
        StarJobConfig {
            inputs: InputsConfig::default(),
            columns: Vec::new(),
            row_hash: RowHash::default(),
            dedup: DedupStrategy::default(),
            dimensions: Vec::new(),
            fact: FactConfig::default(),
            rows_table: None,
            rows_view: None,
            bulk: BulkPolicy::default(),
            batch_size: 65_536,
            workers: 2,
            retry: RetryPolicy::default(),
            dimension_schema: None,
        }
    }
}

impl StarJobConfig {
    /// Checks every field and their consistency (column names, roles, measures, tables).
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| Err(StarError::config(field, reason));
        if self.inputs.inputs.is_empty() {
            return bad("inputs.inputs", "is empty".into());
        }
        if self.columns.is_empty() {
            return bad("columns", "is empty".into());
        }
        let mut names = HashSet::new();
        for c in &self.columns {
            if !names.insert(c.name.as_str()) {
                return bad("columns", format!("`{}` appears twice", c.name));
            }
            if pg_type_for(&Field::new(&c.name, c.data_type.clone(), true)).is_none() {
                return bad("columns", format!("`{}`: no PostgreSQL type for {}", c.name, c.data_type));
            }
        }
        if names.contains(self.row_hash.column.as_str()) {
            return bad("row_hash.column", format!("`{}` is a target column", self.row_hash.column));
        }
        for c in &self.row_hash.columns {
            if !names.contains(c.as_str()) {
                return bad("row_hash.columns", format!("`{c}` is not a target column"));
            }
        }
        self.fact.table.validate("fact.table")?;
        if let Some(rows) = &self.rows_table {
            rows.validate("rows_table")?;
            if rows == &self.fact.table {
                return bad("rows_table", "must differ from fact.table".into());
            }
        }
        let mut fact_columns = HashSet::new();
        for c in self.fact.measures.iter().chain(&self.fact.degenerate) {
            if !names.contains(c.as_str()) {
                return bad("fact.measures", format!("`{c}` is not a target column"));
            }
            if !fact_columns.insert(c.clone()) {
                return bad("fact.measures", format!("`{c}` appears twice"));
            }
        }
        let mut tables = HashSet::new();
        for d in &self.dimensions {
            d.validate(&self.columns)?;
            if !tables.insert(d.table.as_str()) {
                return bad("dimensions", format!("`{}` appears twice", d.table));
            }
            for r in &d.roles {
                if !fact_columns.insert(r.fact_column.clone()) || r.fact_column == self.row_hash.column {
                    return bad("dimensions", format!("fact column `{}` appears twice", r.fact_column));
                }
            }
        }
        if self.batch_size == 0 || self.workers == 0 {
            return bad("batch_size", "batch_size and workers must be at least 1".into());
        }
        if let Some(view) = &self.rows_view {
            view.validate("rows_view")?;
            if self.rows_table.is_some() {
                return bad(
                    "rows_view",
                    "and rows_table are exclusive: the rows are stored or viewed".into(),
                );
            }
            if view == &self.fact.table || self.dimensions.iter().any(|d| d.table == view.name) {
                return bad("rows_view", format!("`{}` is a table of the job", view.name));
            }
            self.view_sources()?;
        }
        self.dedup.validate()?;
        self.bulk.validate()?;
        self.retry.validate()?;
        Ok(())
    }

    fn hash_columns(&self) -> Vec<String> {
        if self.row_hash.columns.is_empty() {
            self.columns.iter().map(|c| c.name.clone()).collect()
        } else {
            self.row_hash.columns.clone()
        }
    }

    fn key_table(&self) -> &TableRef {
        self.rows_table.as_ref().unwrap_or(&self.fact.table)
    }

    fn tables(&self) -> Tables {
        let mut written = vec![self.key_table().clone()];
        if self.rows_table.is_some() {
            written.push(self.fact.table.clone());
        }
        Tables { key_table: self.key_table().clone(), written, hash_column: self.row_hash.column.clone() }
    }

    /// Derived date columns for date roles over non-date columns.
    fn derived_dates(&self) -> Vec<DerivedDate> {
        let mut out = Vec::new();
        for d in self.dimensions.iter().filter(|d| d.kind == DimensionKind::Date) {
            for r in &d.roles {
                let source = d.source_column(r, &self.columns);
                if source != r.key_columns[0] {
                    out.push(DerivedDate {
                        from: r.key_columns[0].clone(),
                        name: derived_date_name(&r.fact_column),
                    });
                }
            }
        }
        out
    }

    /// Where the rows view reads each target column from, in target order.
    fn view_sources(&self) -> Result<Vec<(&str, ViewSource<'_>)>> {
        let mut out = Vec::with_capacity(self.columns.len());
        for c in &self.columns {
            let name = c.name.as_str();
            if self.fact.measures.iter().chain(&self.fact.degenerate).any(|m| m == name) {
                out.push((name, ViewSource::Fact));
                continue;
            }
            let role = self.dimensions.iter().find_map(|d| {
                // Floating-point keys are not given back: 0.0 and -0.0 are one member.
                let same_type =
                    d.key.len() == 1 && d.key[0].data_type() == &c.data_type && !c.data_type.is_floating();
                let role = d.roles.iter().find(|r| r.key_columns.len() == 1 && r.key_columns[0] == name);
                role.filter(|_| same_type).map(|r| ViewSource::Key { dimension: d, role: r })
            });
            match role {
                Some(source) => out.push((name, source)),
                None => {
                    return Err(StarError::config(
                        "rows_view",
                        format!(
                            "cannot show `{name}`: it is neither stored in the fact table (a measure or \
                             degenerate attribute) nor the one-column natural key of a role with its type; \
                             add it to fact.degenerate"
                        ),
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The query of [`StarJobConfig::rows_view`].
    fn view_query(&self, store: &PgDimensionStore) -> Result<String> {
        let mut select = Vec::new();
        let mut joins: Vec<(&str, String)> = Vec::new();
        for (column, source) in self.view_sources()? {
            let expr = match source {
                ViewSource::Fact => format!("f.{}", quote_ident(column)),
                ViewSource::Key { dimension, role } => {
                    let at = match joins.iter().position(|(fc, _)| *fc == role.fact_column) {
                        Some(i) => i,
                        None => {
                            let i = joins.len();
                            joins.push((
                                role.fact_column.as_str(),
                                format!(
                                    "LEFT JOIN {} d{i} ON d{i}.{} = f.{}",
                                    store.table(&dimension.spec()).quoted(),
                                    quote_ident(&dimension.surrogate),
                                    quote_ident(&role.fact_column)
                                ),
                            ));
                            i
                        }
                    };
                    format!("d{at}.{}", quote_ident(dimension.key[0].name()))
                }
            };
            select.push(format!("{expr} AS {}", quote_ident(column)));
        }
        select.push(format!("f.{}", quote_ident(&self.row_hash.column)));
        let joins: Vec<String> = joins.into_iter().map(|(_, j)| j).collect();
        Ok(format!("SELECT {} FROM {} f {}", select.join(", "), self.fact.table.quoted(), joins.join(" ")))
    }

    fn target_type(&self, column: &str) -> &DataType {
        &self.columns.iter().find(|c| c.name == column).expect("validated").data_type
    }
}

/// Where [`StarJobConfig::rows_view`] reads a target column from.
enum ViewSource<'a> {
    /// The fact column of the same name.
    Fact,
    /// The natural key of the member a role's surrogate key points at.
    Key { dimension: &'a DimensionConfig, role: &'a DimensionRole },
}

/// A validated star-schema job. [`StarJob::run`] loads the inputs; running it again inserts
/// nothing new.
///
/// What a run does:
/// 1. lists the input files and maps each file's columns onto the target columns (by name or
///    alias; a required column no file column matches is an error naming the file);
/// 2. creates missing tables (dimensions with their unknown member, the rows table, the fact table
///    with optional foreign keys) and checks the table's row hashes were made the same way (recorded
///    in `etlkit.star_loads`);
/// 3. upserts attribute lookups into their dimensions and preloads every dimension's members;
/// 4. takes the load lock (exclusive for a bulk run, shared otherwise) on a session of its own,
///    restores what a crashed bulk run left behind, and seeds the in-memory seen-set from the table;
/// 5. reads every file through its own pipeline (conform → row hash → de-duplicate → star sink: each
///    batch's rows and facts in one transaction, which first checks the lock is still held), once
///    per de-duplication pass;
/// 6. rebuilds what a bulk load dropped, and releases the lock.
#[derive(Clone)]
pub struct StarJob {
    config: StarJobConfig,
    rejects: Option<Arc<dyn RejectSink>>,
}

impl std::fmt::Debug for StarJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StarJob").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Rejected rows of a pass after the first: counted by the pipeline, not reported again.
struct ReportedByFirstPass;

impl RejectSink for ReportedByFirstPass {
    fn reject(&self, _row: Rejected) -> etlkit_core::Result<()> {
        Ok(())
    }
}

/// A file with its column mapping.
struct Planned {
    file: PathBuf,
    mapping: FileMapping,
    rows: u64,
}

/// Everything one run's file loads share.
struct Load<'a> {
    pool: &'a PgPool,
    roles: &'a [FactRole],
    lock: &'a Arc<LoadLock>,
    gate: Option<&'a Arc<BulkGate>>,
    mode: StarLoadMode,
}

impl StarJob {
    /// Validates `config`.
    pub fn new(config: StarJobConfig) -> Result<Self> {
        config.validate()?;
        Ok(StarJob { config, rejects: None })
    }

    /// Sends rejected rows to `rejects` (default: logged with `tracing`).
    pub fn rejects(mut self, rejects: Arc<dyn RejectSink>) -> Self {
        self.rejects = Some(rejects);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &StarJobConfig {
        &self.config
    }

    /// Runs the job against the database at `url` (a pool of `workers` + dimensions + 3
    /// connections, closed at the end).
    pub async fn run(&self, url: &DatabaseUrl) -> Result<StarReport> {
        let size = (self.config.workers + self.config.dimensions.len() + 3) as u32;
        let pool = connect(url, size, "etlkit-star").await?;
        let report = self.run_on(&pool).await;
        pool.close().await;
        report
    }

    /// Runs the job through `pool`, which needs `workers` + dimensions + 2 connections (one holds
    /// the load lock for the whole run).
    pub async fn run_on(&self, pool: &PgPool) -> Result<StarReport> {
        let started = Instant::now();
        let cfg = &self.config;
        let files = list_inputs(&cfg.inputs.inputs)?;
        let mut report = StarReport { files: files.len(), ..Default::default() };
        let planned = self.plan_files(&files, &mut report)?;

        // Tables, the hash guard, lookups and the dimension caches.
        let store = Arc::new(PgDimensionStore::new(
            pool.clone(),
            PgDimensionConfig { schema: cfg.dimension_schema.clone(), ..Default::default() },
        )?);
        for d in &cfg.dimensions {
            store.prepare(&d.spec()).await?;
        }
        self.create_tables(pool, &store).await?;
        let mut caches = Vec::with_capacity(cfg.dimensions.len());
        for d in &cfg.dimensions {
            let (read, keyless) = load_lookup(pool, &store, d, &cfg.inputs).await?;
            report.lookup_rows += read;
            report.lookup_rows_without_key += keyless;
            let s: Arc<dyn DimensionStore> = match d.kind {
                DimensionKind::Date => Arc::new(CalendarStore(store.clone())),
                _ => store.clone(),
            };
            caches.push(Arc::new(DimensionCache::open(d.spec(), s).await?));
        }
        let mut roles = Vec::new();
        for (d, cache) in cfg.dimensions.iter().zip(&caches) {
            for r in &d.roles {
                let source_columns = if r.key_columns.len() == 1 {
                    vec![d.source_column(r, &cfg.columns)]
                } else {
                    r.key_columns.clone()
                };
                roles.push(FactRole {
                    cache: cache.clone(),
                    source_columns,
                    attribute_columns: r.attribute_columns.clone(),
                    fact_column: r.fact_column.clone(),
                });
            }
        }

        // The plan: passes and bulk.
        let tables = cfg.tables();
        let in_table = count_rows(pool, &tables.key_table).await?;
        let estimate: u64 = planned.iter().map(|p| p.rows).sum();
        let rows = in_table + estimate;
        let passes = cfg.dedup.passes(rows);
        let bulk = passes.is_some() && cfg.bulk.is_bulk(estimate, in_table);
        report.passes = passes.unwrap_or(0);
        report.bulk = bulk;

        // The load lock, held for the whole run on a session of its own: exclusive for a bulk run,
        // shared for the others. Taken before seeding, so the seen-set includes every row of the
        // bulk runs before this one.
        let lock = Arc::new(LoadLock::acquire(pool, tables.lock_key(), bulk).await?);
        report.recovered =
            bulk::restore(&mut *lock.conn.lock().await, &tables, &cfg.bulk.maintenance_work_mem).await?;
        let gate = bulk.then(|| {
            Arc::new(BulkGate {
                lock: lock.clone(),
                tables: tables.clone(),
                policy: cfg.bulk.clone(),
                opened: tokio::sync::OnceCell::new(),
            })
        });
        let load = Load {
            pool,
            roles: &roles,
            lock: &lock,
            gate: gate.as_ref(),
            mode: if passes.is_some() { StarLoadMode::Copy } else { StarLoadMode::Merge },
        };
        let loaded = match passes {
            None => self.load_files(&load, &planned, None, false).await,
            Some(k) => self.load_passes(&load, &planned, rows, k).await,
        };
        // The lock is lost: another run may be loading now; leave the tables alone (the next run
        // restores them) and say so.
        if let Err(e) = &loaded
            && !lock.is_held().await
        {
            tracing::error!(error = %e, "the load lock was lost");
            let Err(StarError::Load { source, .. }) = loaded else {
                return Err(StarError::LoadLockLost {
                    table: tables.key_table.quoted(),
                    source: Box::new(etlkit_core::Error::from(loaded.expect_err("an error"))),
                });
            };
            return Err(StarError::LoadLockLost { table: tables.key_table.quoted(), source });
        }
        // A bulk load (also a failed one) rebuilds what it dropped.
        let restored = match &gate {
            Some(g) if g.opened.initialized() => {
                bulk::restore(&mut *lock.conn.lock().await, &tables, &cfg.bulk.maintenance_work_mem)
                    .await
                    .map(|_| ())
            }
            _ => Ok(()),
        };
        // The lock session ended before the rebuild: another run may hold the lock now; the next
        // run restores the table.
        let restored = match restored {
            Err(e) if !lock.is_held().await => Err(StarError::LoadLockLost {
                table: tables.key_table.quoted(),
                source: Box::new(etlkit_core::Error::from(e)),
            }),
            other => other,
        };
        drop(gate);
        if let Ok(lock) = Arc::try_unwrap(lock) {
            lock.release().await;
        }
        let totals = loaded?;
        restored?;

        report.rows_read = totals.rows_read;
        report.inserted = totals.counter("rows_inserted");
        report.fact_rows = totals.counter("fact_inserted");
        report.duplicates = totals.rows_deduplicated + totals.counter("conflicts");
        report.rejected = totals.rows_rejected;
        report.transactions = totals.counter("transactions");
        report.merged_batches = totals.counter("merged_batches");
        report.retries = totals.retries;
        for d in &cfg.dimensions {
            report.members_created.insert(d.table.clone(), totals.counter(&format!("{}_created", d.table)));
        }
        if report.inserted != report.fact_rows {
            return Err(StarError::Accounting(format!(
                "{} rows stored but {} fact rows",
                report.inserted, report.fact_rows
            )));
        }
        if report.rows_read != report.inserted + report.duplicates + report.rejected {
            return Err(StarError::Accounting(format!(
                "read {} != inserted {} + duplicates {} + rejected {}",
                report.rows_read, report.inserted, report.duplicates, report.rejected
            )));
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    fn open_options(&self) -> OpenOptions {
        OpenOptions {
            batch_size: self.config.batch_size,
            on_error: self.config.inputs.on_error,
            ..self.config.inputs.open.clone()
        }
    }

    /// Maps every file's columns (failing on a missing required column) and estimates its rows.
    fn plan_files(&self, files: &[PathBuf], report: &mut StarReport) -> Result<Vec<Planned>> {
        let mut out = Vec::with_capacity(files.len());
        for file in files {
            let source = open_file(file, &self.open_options())?;
            let mapping =
                map_file(file, &source.schema(), &self.config.columns, self.config.inputs.matching)?;
            if !mapping.missing.is_empty() {
                tracing::warn!(file = %file.display(), columns = ?mapping.missing, "optional columns missing: NULL");
                report
                    .missing_columns
                    .push(MissingColumns { file: file.clone(), columns: mapping.missing.clone() });
            }
            let rows = source.total_rows().unwrap_or_else(|| estimate_csv_rows(file));
            out.push(Planned { file: file.clone(), mapping, rows });
        }
        Ok(out)
    }

    /// Creates the rows and fact tables if missing and records (or checks) how their row hashes are
    /// made, under the DDL lock.
    async fn create_tables(&self, pool: &PgPool, store: &PgDimensionStore) -> Result<()> {
        let cfg = &self.config;
        let hash = quote_ident(&cfg.row_hash.column);
        let col = |name: &str| {
            let f = Field::new(name, cfg.target_type(name).clone(), true);
            format!("{} {}", quote_ident(name), pg_type_for(&f).expect("validated"))
        };
        let unique = |table: &TableRef| {
            let mut name = format!("{}_{}_key", table.name, cfg.row_hash.column);
            while name.len() > 63 {
                name.remove(0);
            }
            format!("{hash} bytea NOT NULL CONSTRAINT {} UNIQUE", quote_ident(&name))
        };
        let mut fact: Vec<String> = Vec::new();
        for d in &cfg.dimensions {
            let spec = d.spec();
            for r in &d.roles {
                let mut c = format!("{} bigint NOT NULL", quote_ident(&r.fact_column));
                if cfg.fact.foreign_keys {
                    c.push_str(&format!(
                        " REFERENCES {} ({})",
                        store.table(&spec).quoted(),
                        quote_ident(&d.surrogate)
                    ));
                }
                fact.push(c);
            }
        }
        fact.extend(cfg.fact.measures.iter().chain(&cfg.fact.degenerate).map(|m| col(m)));
        let mut sql = String::new();
        match &cfg.rows_table {
            Some(rows) => {
                let mut cols: Vec<String> = cfg.columns.iter().map(|c| col(&c.name)).collect();
                cols.push(unique(rows));
                sql.push_str(&format!(
                    "CREATE TABLE IF NOT EXISTS {} ({}); ",
                    rows.quoted(),
                    cols.join(", ")
                ));
                fact.push(format!("{hash} bytea NOT NULL"));
            }
            None => fact.push(unique(&cfg.fact.table)),
        }
        sql.push_str(&format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            cfg.fact.table.quoted(),
            fact.join(", ")
        ));
        let mut tx = pool.begin().await.map_err(StarError::db("beginning table creation"))?;
        bulk::ddl_lock(&mut tx).await?;
        sqlx::raw_sql(AssertSqlSafe(format!("{LEDGER_DDL}; {sql}")))
            .execute(&mut *tx)
            .await
            .map_err(StarError::db("creating tables"))?;
        if let Some(rows) = &cfg.rows_table {
            if relkind(&mut tx, rows).await?.is_some_and(|k| k != "r" && k != "p") {
                return Err(StarError::config(
                    "rows_table",
                    format!("{} exists and is not a table (the rows view of earlier runs?)", rows.quoted()),
                ));
            }
            // Facts loaded without a rows table are unknown to it: seeding from it would load them
            // all again.
            let facts_keyed: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM etlkit.star_loads WHERE key_table = $1)")
                    .bind(cfg.fact.table.quoted())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StarError::db("reading etlkit.star_loads"))?;
            if facts_keyed {
                return Err(StarError::config(
                    "rows_table",
                    format!(
                        "{} was loaded without a rows table, which would not know its rows; load it \
                         as before (facts only or with a rows view) or into new tables",
                        cfg.fact.table.quoted()
                    ),
                ));
            }
        }
        if let Some(view) = &cfg.rows_view {
            let kind = relkind(&mut tx, view).await?;
            if kind.as_deref().is_some_and(|k| k != "v") {
                return Err(StarError::config(
                    "rows_view",
                    format!("{} exists and is not a view (a rows table of earlier runs?)", view.quoted()),
                ));
            }
            // The view's comment records its query: an unchanged view is left alone, so that a run
            // never waits for (nor makes wait) the queries reading it.
            let query = cfg.view_query(store)?;
            let comment = format!("etlkit-star rows view: {query}");
            let current: Option<String> = match kind {
                Some(_) => sqlx::query_scalar("SELECT obj_description(to_regclass($1), 'pg_class')")
                    .bind(view.quoted())
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(StarError::db("reading the rows view's comment"))?,
                None => None,
            };
            if current.as_deref() != Some(comment.as_str()) {
                let comment_sql: String =
                    sqlx::query_scalar("SELECT format('COMMENT ON VIEW %s IS %L', $1, $2)")
                        .bind(view.quoted())
                        .bind(&comment)
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(StarError::db("creating the rows view"))?;
                let sql = format!("CREATE OR REPLACE VIEW {} AS {query}; {comment_sql}", view.quoted());
                sqlx::raw_sql(AssertSqlSafe(sql))
                    .execute(&mut *tx)
                    .await
                    .map_err(StarError::db("creating the rows view"))?;
            }
        }
        let key = cfg.key_table().quoted();
        let hashed = cfg.hash_columns();
        let hashed: Vec<(&str, &DataType)> =
            hashed.iter().map(|c| (c.as_str(), cfg.target_type(c))).collect();
        let configured = cfg.row_hash.describe(&hashed);
        let stored: Option<String> =
            sqlx::query_scalar("SELECT row_hash FROM etlkit.star_loads WHERE key_table = $1")
                .bind(&key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StarError::db("reading etlkit.star_loads"))?;
        match stored {
            // Recorded before the kinds were: the same hashes if the kinds are unchanged, which
            // that record cannot tell; record them now.
            Some(s) if s == cfg.row_hash.describe_without_kinds(&hashed) => {
                sqlx::query("UPDATE etlkit.star_loads SET row_hash = $2 WHERE key_table = $1")
                    .bind(&key)
                    .bind(&configured)
                    .execute(&mut *tx)
                    .await
                    .map_err(StarError::db("writing etlkit.star_loads"))?;
            }
            Some(s) if s != configured => {
                return Err(StarError::HashMismatch { table: key, stored: s, configured });
            }
            Some(_) => {}
            None => {
                sqlx::query("INSERT INTO etlkit.star_loads (key_table, row_hash) VALUES ($1, $2)")
                    .bind(&key)
                    .bind(&configured)
                    .execute(&mut *tx)
                    .await
                    .map_err(StarError::db("writing etlkit.star_loads"))?;
            }
        }
        tx.commit().await.map_err(StarError::db("committing table creation"))?;
        Ok(())
    }

    /// Memory mode: the input once per digest partition, each pass with a seen-set of that
    /// partition only; rows read and rejected are counted by the first pass.
    async fn load_passes(
        &self,
        load: &Load<'_>,
        planned: &[Planned],
        rows: u64,
        passes: u32,
    ) -> Result<LoadStats> {
        let cfg = &self.config;
        let mut total = LoadStats::default();
        for pass in 0..passes {
            let dedup = Arc::new(Dedup::new(pass_config(&cfg.row_hash.column, rows, pass, passes))?);
            let seeded = seed(load.pool, &cfg.tables().key_table, &cfg.row_hash.column, &dedup).await?;
            tracing::info!(pass = pass + 1, passes, seeded, "de-duplication in memory");
            let r = self.load_files(load, planned, Some(&dedup), pass > 0).await?;
            drop(dedup); // before the next pass's seen-set is allocated
            if pass == 0 {
                (total.rows_read, total.rows_rejected) = (r.rows_read, r.rows_rejected);
            } else if (r.rows_read, r.rows_rejected) != (total.rows_read, total.rows_rejected) {
                return Err(StarError::Accounting(format!(
                    "the input changed between passes: pass 1 read {} rows ({} rejected), pass {} read {} ({})",
                    total.rows_read,
                    total.rows_rejected,
                    pass + 1,
                    r.rows_read,
                    r.rows_rejected
                )));
            }
            total.rows_deduplicated += r.rows_deduplicated;
            total.retries += r.retries;
            for (k, v) in &r.counters {
                total.add_counter(k, *v);
            }
        }
        Ok(total)
    }

    /// Loads every file through its own pipeline run and sums the stats. Rows a partitioned
    /// `dedup` leaves to another pass are the only rows the pipeline may filter.
    async fn load_files(
        &self,
        load: &Load<'_>,
        planned: &[Planned],
        dedup: Option<&Arc<Dedup>>,
        quiet_rejects: bool,
    ) -> Result<LoadStats> {
        let files: Vec<PathBuf> = planned.iter().map(|p| p.file.clone()).collect();
        // One pipeline run per file (files may name their columns differently), stats summed.
        run_each(&files, |file| async move {
            let p = planned.iter().find(|p| p.file == file).expect("a planned file");
            let outside_before = dedup.map_or(0, |d| d.outside_partition());
            let stats = self.load_file(load, p, dedup, quiet_rejects).await?;
            let outside = dedup.map_or(0, |d| d.outside_partition()) - outside_before;
            if stats.rows_filtered != outside {
                return Err(StarError::Accounting(format!(
                    "{} rows filtered, {outside} of them left to another de-duplication pass",
                    stats.rows_filtered
                ))
                .into());
            }
            tracing::info!(
                file = %p.file.display(),
                read = stats.rows_read,
                inserted = stats.counter("rows_inserted"),
                deduplicated = stats.rows_deduplicated,
                conflicts = stats.counter("conflicts"),
                rejected = stats.rows_rejected,
                elapsed = ?stats.elapsed,
                "file loaded"
            );
            Ok(stats)
        })
        .await
        .map_err(|e| {
            // `run_each` names the file as the failed stage.
            let file = match &e {
                etlkit_core::Error::Stage { name, .. } => PathBuf::from(name),
                _ => PathBuf::new(),
            };
            StarError::Load { file, source: Box::new(e) }
        })
    }

    async fn load_file(
        &self,
        load: &Load<'_>,
        p: &Planned,
        dedup: Option<&Arc<Dedup>>,
        quiet_rejects: bool,
    ) -> etlkit_core::Result<LoadStats> {
        let cfg = &self.config;
        let source = open_file(&p.file, &p.mapping.open_options(&self.open_options()))?;
        let conform = Conform::new(
            &p.file,
            p.mapping.clone(),
            &cfg.columns,
            &cfg.derived_dates(),
            cfg.inputs.on_error,
        )?;
        let hash = RowHashTransform::new(RowHashConfig {
            algorithm: cfg.row_hash.algorithm,
            columns: cfg.hash_columns(),
            output_column: cfg.row_hash.column.clone(),
            format: HashFormat::Binary,
        })?;
        let schema = hash.output_schema(&conform.output_schema(&source.schema())?)?;
        let mut fact_columns: Vec<String> =
            cfg.fact.measures.iter().chain(&cfg.fact.degenerate).cloned().collect();
        fact_columns.push(cfg.row_hash.column.clone());
        let star = StarSchema::new(&schema, load.roles.to_vec(), fact_columns)?;
        let mut rows_columns: Vec<String> = cfg.columns.iter().map(|c| c.name.clone()).collect();
        rows_columns.push(cfg.row_hash.column.clone());
        let sink = Arc::new(PgStarSink::new(
            load.pool.clone(),
            star,
            PgStarConfig {
                rows_columns: if cfg.rows_table.is_some() { rows_columns } else { Vec::new() },
                rows_table: cfg.rows_table.clone(),
                fact_table: cfg.fact.table.clone(),
                conflict_key: Some(cfg.row_hash.column.clone()),
                mode: load.mode,
                bulk: load.gate.is_some(),
                load_lock: Some((load.lock.pid, load.lock.key)),
                retry: cfg.retry,
                ..Default::default()
            },
        )?);
        let sink: Arc<dyn etlkit_core::Sink> = match load.gate {
            Some(g) => Arc::new(Gated { inner: sink, gate: g.clone() }),
            None => sink,
        };
        let mut pipeline = Pipeline::from_boxed(source, sink)
            .config(PipelineConfig {
                batch_size: cfg.batch_size,
                workers: cfg.workers,
                flush_interval: Duration::from_millis(200),
                channel_capacity: 2,
                ..Default::default()
            })
            .transform(conform)
            .transform(hash);
        if let Some(d) = dedup {
            pipeline = pipeline.transform_arc(d.clone());
        }
        if quiet_rejects {
            pipeline = pipeline.rejects(Arc::new(ReportedByFirstPass));
        } else if let Some(r) = &self.rejects {
            pipeline = pipeline.rejects(r.clone());
        }
        pipeline.run().await
    }
}

/// `pg_class.relkind` of `table` (`r` table, `p` partitioned, `v` view, ...), `None` if missing.
async fn relkind(tx: &mut sqlx::PgConnection, table: &TableRef) -> Result<Option<String>> {
    sqlx::query_scalar("SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)")
        .bind(table.quoted())
        .fetch_optional(tx)
        .await
        .map_err(StarError::db("looking up a relation"))
}

/// Rows in `table` (exact: `count(*)`).
async fn count_rows(pool: &PgPool, table: &TableRef) -> Result<u64> {
    let n: i64 = sqlx::query_scalar(AssertSqlSafe(format!("SELECT count(*) FROM {}", table.quoted())))
        .fetch_one(pool)
        .await
        .map_err(StarError::db("counting rows"))?;
    Ok(n as u64)
}

/// Rows of a CSV file estimated from its size and the lines of its first 64 KiB.
fn estimate_csv_rows(file: &Path) -> u64 {
    use std::io::Read;
    let size = std::fs::metadata(file).map_or(0, |m| m.len());
    let mut head = vec![0u8; 64 << 10];
    let n = std::fs::File::open(file).and_then(|mut f| f.read(&mut head)).unwrap_or(0);
    let lines = head[..n].iter().filter(|b| **b == b'\n').count() as u64;
    if lines == 0 { 1 } else { size * lines / n as u64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_schema::DataType;

    fn config() -> StarJobConfig {
        StarJobConfig {
            inputs: InputsConfig { inputs: vec!["orders.csv".into()], ..Default::default() },
            columns: vec![
                TargetColumn::new("order_id", DataType::Int64),
                TargetColumn::new("customer", DataType::Utf8),
                TargetColumn::new("amount", DataType::Float64),
            ],
            dimensions: vec![
                DimensionConfig::new(
                    "dim_customer",
                    vec![Field::new("customer", DataType::Utf8, false)],
                    "customer_key",
                )
                .role(["customer"], "customer_key"),
            ],
            fact: FactConfig {
                table: TableRef::new("fact_order"),
                measures: vec!["amount".into()],
                degenerate: vec!["order_id".into()],
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn validate_accepts_a_small_job_and_names_what_is_wrong() {
        config().validate().unwrap();
        let mut c = config();
        c.fact.measures.push("price".into());
        assert!(c.validate().unwrap_err().to_string().contains("`price` is not a target column"));
        let mut c = config();
        c.dimensions[0].roles[0].fact_column = "amount".into();
        assert!(c.validate().unwrap_err().to_string().contains("appears twice"));
        let mut c = config();
        c.row_hash.columns = vec!["nope".into()];
        assert!(c.validate().is_err());
        let mut c = config();
        c.dedup = DedupStrategy::Memory { passes: 0 };
        assert!(c.validate().is_err());
        let mut c = config();
        c.rows_table = Some(TableRef::new("fact_order"));
        assert!(c.validate().is_err());
    }

    #[test]
    fn a_rows_view_needs_every_column_in_the_fact_or_as_a_one_column_key_of_its_type() {
        let mut c = config();
        c.rows_view = Some(TableRef::new("orders"));
        c.validate().unwrap();
        let sources: Vec<&str> = c
            .view_sources()
            .unwrap()
            .into_iter()
            .map(|(name, s)| match s {
                ViewSource::Fact => name,
                ViewSource::Key { role, .. } => role.fact_column.as_str(),
            })
            .collect();
        assert_eq!(sources, ["order_id", "customer_key", "amount"]);
        // A column stored nowhere is named.
        c.fact.degenerate.clear();
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("cannot show `order_id`") && err.contains("fact.degenerate"), "{err}");
        // A key of another type would not read back the loaded value.
        let mut c = config();
        c.rows_view = Some(TableRef::new("orders"));
        c.dimensions[0].key = vec![Field::new("customer", DataType::LargeUtf8, false)];
        assert!(c.validate().unwrap_err().to_string().contains("cannot show `customer`"));
        // Nor would a floating-point key (0.0 and -0.0 are one member).
        let mut c = config();
        c.rows_view = Some(TableRef::new("orders"));
        c.fact.measures.clear();
        c.dimensions.push(
            DimensionConfig::new(
                "dim_amount",
                vec![Field::new("amount", DataType::Float64, false)],
                "amount_key",
            )
            .role(["amount"], "amount_key"),
        );
        assert!(c.validate().unwrap_err().to_string().contains("cannot show `amount`"));
        // Stored or viewed, not both; never over one of the job's tables.
        let mut c = config();
        c.rows_view = Some(TableRef::new("orders"));
        c.rows_table = Some(TableRef::new("order_rows"));
        assert!(c.validate().unwrap_err().to_string().contains("exclusive"));
        c.rows_table = None;
        c.rows_view = Some(TableRef::new("dim_customer"));
        assert!(c.validate().unwrap_err().to_string().contains("is a table of the job"));
    }

    #[test]
    fn auto_dedup_takes_more_passes_for_more_rows_and_gives_up_beyond_sixteen() {
        let auto = DedupStrategy::default();
        assert_eq!(auto.passes(1_000_000), Some(1));
        assert_eq!(auto.passes(12_000_000), Some(2));
        assert_eq!(auto.passes(10_000_000_000), None);
        assert_eq!(DedupStrategy::Database.passes(10), None);
        assert_eq!(DedupStrategy::Memory { passes: 3 }.passes(10), Some(3));
    }
}

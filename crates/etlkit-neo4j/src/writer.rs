//! [`GraphWriter`]: partitioned, batched, retried `UNWIND` transactions over a Bolt connection pool.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow_array::{BooleanArray, RecordBatch};
use etlkit_core::{Context, LoadStats, Rejected};
use neo4rs::{BoltList, BoltType, Graph};

use crate::colour::{NodeKey, TxnInfo, TxnObserver, bucket, colour_rounds};
use crate::config::{GraphConfig, NullKeyPolicy};
use crate::error::{GraphError, MissingNode, Result};
use crate::spec::{NodeSpec, RelPartition, RelSpec, labels};
use crate::value::Columns;

/// Counters of committed work (summed from the server's result summaries): the writer keeps one set
/// for its lifetime, and each sink run / loader phase its own, so what a run reports is that run's.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    nodes_created: AtomicU64,
    relationships_created: AtomicU64,
    properties_set: AtomicU64,
    retries: AtomicU64,
    transactions: AtomicU64,
    rows: AtomicU64,
    max_txn_rows: AtomicU64,
}

impl Counters {
    fn all(&self) -> [(&'static str, &AtomicU64); 6] {
        [
            ("nodes_created", &self.nodes_created),
            ("relationships_created", &self.relationships_created),
            ("properties_set", &self.properties_set),
            ("transactions", &self.transactions),
            ("rows_sent", &self.rows),
            ("max_transaction_rows", &self.max_txn_rows),
        ]
    }

    /// One committed transaction of `rows` rows.
    fn commit(&self, c: &neo4rs::summary::Counters, rows: u64) {
        self.nodes_created.fetch_add(c.nodes_created, Ordering::Relaxed);
        self.relationships_created.fetch_add(c.relationships_created, Ordering::Relaxed);
        self.properties_set.fetch_add(c.properties_set, Ordering::Relaxed);
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(rows, Ordering::Relaxed);
        self.max_txn_rows.fetch_max(rows, Ordering::Relaxed);
    }

    /// Back to zero (a new run).
    pub(crate) fn reset(&self) {
        self.retries.store(0, Ordering::Relaxed);
        for (_, v) in self.all() {
            v.store(0, Ordering::Relaxed);
        }
    }

    /// `retries` and the named counters, as [`LoadStats`].
    pub(crate) fn stats(&self) -> LoadStats {
        let mut s = LoadStats::default();
        s.retries = self.retries.load(Ordering::Relaxed);
        for (name, v) in self.all() {
            s.add_counter(name, v.load(Ordering::Relaxed));
        }
        s
    }
}

/// One prepared row: its positional list, estimated size, partition hash and 1-based row number.
struct Row {
    value: BoltType,
    bytes: usize,
    hash: u64,
    /// End-node hash, for [`RelPartition::BothEnds`].
    hash2: u64,
    line: usize,
}

/// What kind of statement a chunk runs: node merges, or relationship writes whose matched-row count
/// must equal the rows sent.
#[derive(Clone, Copy)]
enum Kind<'a> {
    Nodes,
    Rels(&'a RelSpec),
}

/// One call's statement: the mapping's name, its Cypher, what it writes, the run (sink run or
/// loader phase) whose counters it also adds to, and where each node's key sits in a row (node kind,
/// positions in the row's list) for the [`TxnObserver`].
struct Job<'a> {
    /// The origins of the batch's rows (file and line), to name rows in errors.
    origins: Option<&'a etlkit_core::Origins>,
    spec: &'a str,
    cypher: &'a str,
    kind: Kind<'a>,
    run: Option<&'a Counters>,
    ends: Vec<(String, Range<usize>)>,
}

/// A lock per (node kind, group): a transaction holds the locks of every (kind, group) its rows
/// touch, so no node is in two concurrent transactions of this writer.
type LockId = (String, usize);

/// Writes node and relationship rows from Arrow batches as batched, parameterized `UNWIND`
/// transactions, and keeps the server's counters.
///
/// Every call of [`write_nodes`](Self::write_nodes) / [`write_rels`](Self::write_rels):
/// 1. checks keys (NULL keys fail or are rejected, per [`GraphConfig::on_null_key`]);
/// 2. partitions the rows by a key hash into `workers` groups per node kind (relationships: per
///    [`RelSpec::partition`]; [`RelPartition::BothEnds`] is the node-disjoint colouring of
///    [`colour_rounds`](crate::colour_rounds)); a transaction holds a lock per (node kind, group)
///    it touches across all concurrent calls, so a node whose groups are locked is in at most one
///    concurrent transaction (for relationships: both ends with `BothEnds`, the partitioned end
///    otherwise);
/// 3. cuts each partition into transactions of at most `batch_rows` rows and `max_message_bytes`
///    estimated bytes;
/// 4. runs each as one explicit transaction (`BEGIN`, `UNWIND`, `COMMIT`, commit result checked),
///    retrying the whole transaction with exponential back-off and jitter on `Neo.TransientError.*`
///    (also when reported at `COMMIT`), at most `max_attempts` times; never on other errors.
///
/// Durability: when a call returns `Ok`, all its rows are committed. On `Err`, transactions already
/// committed by that call stay committed (each is atomic; `MERGE` makes re-running the call safe).
pub struct GraphWriter {
    graph: Graph,
    config: GraphConfig,
    locks: std::sync::Mutex<HashMap<LockId, Arc<tokio::sync::Mutex<()>>>>,
    counters: Counters,
    jitter: AtomicU64,
    observer: Option<Arc<dyn TxnObserver>>,
    txn_ids: AtomicU64,
}

impl std::fmt::Debug for GraphWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphWriter").field("config", &self.config).finish_non_exhaustive()
    }
}

impl GraphWriter {
    /// Validates `config` and opens a pool of `workers + 1` Bolt connections (lazily; the first query
    /// connects). Must be called inside a Tokio runtime.
    pub fn connect(config: GraphConfig) -> Result<Self> {
        config.validate()?;
        let bolt = |source| GraphError::Bolt { spec: "connection".into(), action: "connect", source };
        let neo = neo4rs::ConfigBuilder::default()
            .uri(&config.uri)
            .user(&config.user)
            .password(&config.password)
            .db(config.database.as_str())
            .max_connections(config.workers + 1)
            .connection_timeout(config.response_timeout)
            .build()
            .map_err(bolt)?;
        let graph = Graph::connect(neo).map_err(bolt)?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos()) as u64
            | 1;
        Ok(GraphWriter {
            graph,
            locks: std::sync::Mutex::default(),
            config,
            counters: Counters::default(),
            jitter: AtomicU64::new(seed),
            observer: None,
            txn_ids: AtomicU64::new(0),
        })
    }

    /// Reports every write transaction (its node keys, when it begins and ends) to `observer`; see
    /// [`TxnObserver`]. For tests and diagnostics: collecting key sets costs time.
    pub fn with_observer(mut self, observer: Arc<dyn TxnObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    fn lock(&self, id: &LockId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().expect("lock table poisoned");
        locks.entry(id.clone()).or_default().clone()
    }

    /// The configuration in use.
    pub fn config(&self) -> &GraphConfig {
        &self.config
    }

    /// The underlying neo4rs pool, for anything [`query_rows`](Self::query_rows) does not cover
    /// (neo4rs is re-exported as [`crate::neo4rs`]).
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Runs one query in the configured database (auto-commit, on the writer's pool) and returns
    /// all its rows: for reading back what was loaded without depending on a Bolt driver yourself.
    /// Pass a Cypher string, or a [`neo4rs::query()`] with parameters (`.param("name", value)`); read
    /// columns with [`Row::get`](neo4rs::Row::get). neo4rs retries transient server errors of such
    /// queries for up to about a minute. Meant for reads: on ArcadeDB an auto-commit write
    /// statement commits row by row.
    ///
    /// ```no_run
    /// # async fn demo(writer: &etlkit_neo4j::GraphWriter) -> etlkit_neo4j::Result<()> {
    /// use etlkit_neo4j::neo4rs::query;
    /// let q = query("MATCH (p:Person)-[:WORKS_FOR]->(c:Company {name: $c}) RETURN p.id AS id")
    ///     .param("c", "Acme");
    /// for row in writer.query_rows(q).await? {
    ///     let id: String = row.get("id").expect("a string id");
    ///     println!("{id}");
    /// }
    /// assert_eq!(writer.count("MATCH (n:Person) RETURN count(n)").await?, 3);
    /// # Ok(()) }
    /// ```
    ///
    /// Errors are [`GraphError::Bolt`] with `action` `"query"`.
    pub async fn query_rows(&self, query: impl Into<neo4rs::Query>) -> Result<Vec<neo4rs::Row>> {
        let bolt = |source| GraphError::Bolt { spec: "query".into(), action: "query", source };
        let mut stream = self.graph.execute(query).await.map_err(bolt)?;
        let mut rows = Vec::new();
        while let Some(row) = stream.next().await.map_err(bolt)? {
            rows.push(row);
        }
        Ok(rows)
    }

    /// The one integer a query returns, e.g. `MATCH (n:Person) RETURN count(n)` (any column name).
    /// Anything but exactly one row with exactly one integer column is an error
    /// ([`GraphError::Bolt`], `action` `"query"`). See [`query_rows`](Self::query_rows).
    pub async fn count(&self, query: impl Into<neo4rs::Query>) -> Result<i64> {
        let bolt = |source| GraphError::Bolt { spec: "query".into(), action: "query", source };
        let rows = self.query_rows(query).await?;
        let [row] = rows.as_slice() else {
            return Err(bolt(if rows.is_empty() {
                neo4rs::Error::NoMoreRows
            } else {
                neo4rs::Error::NotSingleResult
            }));
        };
        if row.keys().len() != 1 {
            return Err(bolt(neo4rs::Error::UnexpectedMessage(format!(
                "expected one column, got {}",
                row.keys().len()
            ))));
        }
        row.to::<i64>().map_err(|e| bolt(e.into()))
    }

    /// Creates the uniqueness constraint of every node kind's key (idempotent `IF NOT EXISTS`), one
    /// statement each. Call before writing data (the [`GraphSink`](crate::GraphSink) and the
    /// [`TwoPhaseLoader`](crate::TwoPhaseLoader) do).
    pub async fn create_schema(&self, nodes: &[NodeSpec]) -> Result<()> {
        for spec in nodes {
            spec.validate()?;
            let q = spec.constraint_cypher();
            tracing::debug!(target: "etlkit::neo4j", "{q}");
            self.graph.run(neo4rs::query(&q)).await.map_err(|source| GraphError::Bolt {
                spec: spec.name(),
                action: "CREATE CONSTRAINT",
                source,
            })?;
        }
        Ok(())
    }

    /// Merges one node per row of `batch` (see [`NodeSpec`]); returns the rows written (rows with NULL
    /// keys are rejected through `ctx` when the policy says so, and not counted).
    pub async fn write_nodes(&self, spec: &NodeSpec, batch: &RecordBatch, ctx: &Context) -> Result<u64> {
        self.write_nodes_counted(spec, batch, ctx, None).await
    }

    /// [`write_nodes`](Self::write_nodes), also counting into `run`.
    pub(crate) async fn write_nodes_counted(
        &self,
        spec: &NodeSpec,
        batch: &RecordBatch,
        ctx: &Context,
        run: Option<&Counters>,
    ) -> Result<u64> {
        spec.validate()?;
        let names = spec.columns();
        let cols = Columns::resolve(spec.name(), &names, batch)?;
        let rows =
            self.prepare(&spec.name(), &cols, spec.keys.len(), (0..spec.keys.len(), 0..0), batch, ctx)?;
        let n = rows.len() as u64;
        let (name, cypher, kind) = (spec.name(), spec.merge_cypher(), labels(&spec.labels));
        let ends = vec![(kind.clone(), 0..spec.keys.len())];
        let job = Job { origins: ctx.origins(), spec: &name, cypher: &cypher, kind: Kind::Nodes, run, ends };
        self.run_partitioned(&job, rows, self.config.workers, &kind).await?;
        Ok(n)
    }

    /// Writes one relationship per row of `batch` (see [`RelSpec`]); both endpoints must exist.
    pub async fn write_rels(&self, spec: &RelSpec, batch: &RecordBatch, ctx: &Context) -> Result<u64> {
        self.write_rels_counted(spec, batch, ctx, None).await
    }

    /// [`write_rels`](Self::write_rels), also counting into `run`.
    pub(crate) async fn write_rels_counted(
        &self,
        spec: &RelSpec,
        batch: &RecordBatch,
        ctx: &Context,
        run: Option<&Counters>,
    ) -> Result<u64> {
        spec.validate()?;
        let names = spec.columns();
        let cols = Columns::resolve(spec.name(), &names, batch)?;
        let (nf, nt) = (spec.from.keys.len(), spec.to.keys.len());
        let w = self.config.workers;
        let (range, range2) = match spec.partition {
            RelPartition::StartNode | RelPartition::BothEnds => (0..nf, nf..nf + nt),
            RelPartition::EndNode => (nf..nf + nt, 0..0),
            RelPartition::Single => (0..0, 0..0),
        };
        let rows =
            self.prepare(&spec.name(), &cols, spec.key_columns().len(), (range, range2), batch, ctx)?;
        let n = rows.len() as u64;
        let (name, cypher) = (spec.name(), spec.write_cypher());
        let (from, to) = (labels(&spec.from.labels), labels(&spec.to.labels));
        let ends = vec![(from.clone(), 0..nf), (to.clone(), nf..nf + nt)];
        let job =
            Job { origins: ctx.origins(), spec: &name, cypher: &cypher, kind: Kind::Rels(spec), run, ends };
        match spec.partition {
            RelPartition::BothEnds => self.run_coloured(&job, rows, &from, &to).await?,
            RelPartition::StartNode => self.run_partitioned(&job, rows, w, &from).await?,
            RelPartition::EndNode => self.run_partitioned(&job, rows, w, &to).await?,
            RelPartition::Single => self.run_partitioned(&job, rows, 1, &format!("single {name}")).await?,
        }
        Ok(n)
    }

    /// Everything committed through this writer since it was created, by every caller, sink and
    /// loader sharing it: `retries`, and counters `nodes_created`, `relationships_created`,
    /// `properties_set` (from the server's summaries), `transactions` (committed), `rows_sent` and
    /// `max_transaction_rows`. For one run's counters use what [`GraphSink`](crate::GraphSink)'s
    /// `finish` or [`TwoPhaseLoader::run`](crate::TwoPhaseLoader::run) returns (the same counters,
    /// counting only that run's transactions).
    pub fn stats(&self) -> LoadStats {
        self.counters.stats()
    }

    /// Builds the rows, handling NULL keys (the first `n_keys` columns) per policy.
    fn prepare(
        &self,
        spec: &str,
        cols: &Columns<'_>,
        n_keys: usize,
        (hash_range, hash2_range): (std::ops::Range<usize>, std::ops::Range<usize>),
        batch: &RecordBatch,
        ctx: &Context,
    ) -> Result<Vec<Row>> {
        let mut rows = Vec::with_capacity(batch.num_rows());
        for i in 0..batch.num_rows() {
            if let Some(column) = cols.first_null(n_keys, i) {
                match self.config.on_null_key {
                    NullKeyPolicy::Fail => {
                        return Err(GraphError::NullKey {
                            spec: spec.to_owned(),
                            origin: ctx.origin(i).map(|o| o.to_string()),
                            row: i + 1,
                            column: column.into(),
                        });
                    }
                    NullKeyPolicy::Reject => {
                        ctx.reject(null_key_reject(spec, i, column, ctx)).map_err(GraphError::Reject)?;
                        continue;
                    }
                }
            }
            let (value, bytes) = cols.row(i)?;
            if bytes + 64 > self.config.max_message_bytes {
                return Err(GraphError::RowTooLarge {
                    spec: spec.to_owned(),
                    row: i + 1,
                    bytes,
                    cap: self.config.max_message_bytes,
                });
            }
            let hash = cols.hash(hash_range.clone(), i);
            let hash2 = if hash2_range.is_empty() { 0 } else { cols.hash(hash2_range.clone(), i) };
            rows.push(Row { value, bytes, hash, hash2, line: i + 1 });
        }
        Ok(rows)
    }

    /// Rows split by `hash % parts`; partition `p` holds lock (`kind`, `p`) while it writes.
    async fn run_partitioned(&self, job: &Job<'_>, rows: Vec<Row>, parts: usize, kind: &str) -> Result<()> {
        let mut split: Vec<Vec<Row>> = (0..parts).map(|_| Vec::new()).collect();
        for r in rows {
            let p = if parts == 1 { 0 } else { (r.hash % parts as u64) as usize };
            split[p].push(r);
        }
        let jobs = split
            .into_iter()
            .enumerate()
            .filter(|(_, rows)| !rows.is_empty())
            .map(|(p, rows)| self.run_partition(job, vec![(kind.to_owned(), p)], rows));
        futures::future::try_join_all(jobs).await?;
        Ok(())
    }

    /// [`RelPartition::BothEnds`]: node-disjoint colouring. Rows go to bucket (start group, end
    /// group) — unordered when both ends are one node kind — and the buckets run in the rounds of
    /// [`colour_rounds`]: all buckets of a round concurrently (they share no node group), rounds one
    /// after another. Each bucket holds the locks of its two (kind, group)s, so concurrent calls stay
    /// node-disjoint too.
    async fn run_coloured(&self, job: &Job<'_>, rows: Vec<Row>, from: &str, to: &str) -> Result<()> {
        let k = self.config.workers;
        let same = from == to;
        let mut cells: HashMap<(usize, usize), Vec<Row>> = HashMap::new();
        for r in rows {
            let (a, b) = ((r.hash % k as u64) as usize, (r.hash2 % k as u64) as usize);
            cells.entry(bucket(a, b, same)).or_default().push(r);
        }
        for round in colour_rounds(k, same) {
            let jobs = round
                .into_iter()
                .filter_map(|cell| cells.remove(&cell).map(|rows| (cell, rows)))
                .map(|((i, j), rows)| {
                    self.run_partition(job, vec![(from.to_owned(), i), (to.to_owned(), j)], rows)
                })
                .collect::<Vec<_>>();
            futures::future::try_join_all(jobs).await?;
        }
        Ok(())
    }

    /// Writes `rows` in transactions of at most `batch_rows` rows and `max_message_bytes`, holding the
    /// locks `locks` (taken in sorted order, so two calls never wait on each other in a cycle).
    async fn run_partition(&self, job: &Job<'_>, mut locks: Vec<LockId>, rows: Vec<Row>) -> Result<()> {
        locks.sort();
        locks.dedup();
        let mut _guards = Vec::with_capacity(locks.len());
        for id in &locks {
            _guards.push(self.lock(id).lock_owned().await);
        }
        let cap = self.config.max_message_bytes.saturating_sub(job.cypher.len() + 64);
        let mut chunk = BoltList::with_capacity(rows.len().min(self.config.batch_rows));
        let mut lines = Vec::with_capacity(chunk.value.capacity());
        let mut bytes = 5;
        for r in rows {
            if !chunk.is_empty() && (chunk.len() == self.config.batch_rows || bytes + r.bytes > cap) {
                let full = std::mem::replace(&mut chunk, BoltList::with_capacity(self.config.batch_rows));
                self.run_txn(job, full, &lines).await?;
                lines.clear();
                bytes = 5;
            }
            bytes += r.bytes;
            chunk.push(r.value);
            lines.push(r.line);
        }
        if !chunk.is_empty() {
            self.run_txn(job, chunk, &lines).await?;
        }
        Ok(())
    }

    /// The distinct nodes of a transaction's rows, for the observer.
    fn node_keys(job: &Job<'_>, rows: &BoltList) -> Vec<NodeKey> {
        let mut keys = std::collections::BTreeSet::new();
        for row in rows.iter() {
            if let BoltType::List(row) = row {
                for (kind, range) in &job.ends {
                    let key = format!("{:?}", row.value.get(range.clone()).unwrap_or_default());
                    keys.insert(NodeKey { kind: kind.clone(), key });
                }
            }
        }
        keys.into_iter().collect()
    }

    /// One batch, one transaction, retried whole on transient errors. `lines[i]` is the 1-based row
    /// number of `rows[i]` in the batch handed to the writer.
    async fn run_txn(&self, job: &Job<'_>, rows: BoltList, lines: &[usize]) -> Result<()> {
        let Some(observer) = &self.observer else { return self.retried_txn(job, rows, lines).await };
        let nodes = Self::node_keys(job, &rows);
        let info =
            TxnInfo { id: self.txn_ids.fetch_add(1, Ordering::Relaxed), spec: job.spec, nodes: &nodes };
        observer.begin(&info);
        let result = self.retried_txn(job, rows, lines).await;
        observer.end(&info);
        result
    }

    async fn retried_txn(&self, job: &Job<'_>, rows: BoltList, lines: &[usize]) -> Result<()> {
        let (spec, n, first_line) = (job.spec, rows.len(), lines.first().copied().unwrap_or(0));
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_txn(job, &rows, lines).await {
                Ok(c) => {
                    self.counters.commit(&c, n as u64);
                    if let Some(run) = job.run {
                        run.commit(&c, n as u64);
                    }
                    return Ok(());
                }
                Err(e) if e.is_transient() && attempt < self.config.max_attempts => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    if let Some(run) = job.run {
                        run.retries.fetch_add(1, Ordering::Relaxed);
                    }
                    let wait = self.backoff(attempt);
                    tracing::debug!(
                        target: "etlkit::neo4j",
                        "{spec}: transient error on {n} rows from row {first_line} (attempt {attempt}), retrying in {wait:?}: {}",
                        e.server_code().unwrap_or("?")
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(e) if e.is_transient() => {
                    return Err(GraphError::RetriesExhausted {
                        spec: spec.to_owned(),
                        attempts: attempt,
                        source: Box::new(e),
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_txn(
        &self,
        job: &Job<'_>,
        rows: &BoltList,
        lines: &[usize],
    ) -> Result<neo4rs::summary::Counters> {
        let spec = job.spec;
        let bolt =
            |action: &'static str| move |source| GraphError::Bolt { spec: spec.to_owned(), action, source };
        let n = rows.len();
        let param = match job.kind {
            Kind::Nodes => rows.clone(),
            // Relationship rows carry their ordinal, so that the statement counts the rows it
            // matched, not only the relationships.
            Kind::Rels(_) => rows
                .iter()
                .enumerate()
                .map(|(i, row)| match row {
                    BoltType::List(values) => {
                        let mut values = values.clone();
                        values.push(BoltType::from(i as i64));
                        BoltType::List(values)
                    }
                    other => other.clone(),
                })
                .collect(),
        };
        let query = neo4rs::query(job.cypher).param("rows", BoltType::List(param));
        let mut txn = self.graph.start_txn().await.map_err(bolt("BEGIN"))?;
        // A failed transaction is dropped: the pool RESETs the connection, which rolls it back.
        let summary = match job.kind {
            Kind::Nodes => txn.run(query).await.map_err(bolt("UNWIND MERGE"))?,
            Kind::Rels(rel) => {
                let mut stream = txn.execute(query).await.map_err(bolt("UNWIND relationships"))?;
                let (mut matched, mut found) = (0usize, 0usize);
                while let Some(row) = stream.next(txn.handle()).await.map_err(bolt("UNWIND relationships"))? {
                    matched += row.get::<i64>("matched").map_or(0, |m| m.max(0) as usize);
                    found += row.get::<i64>("rows").map_or(0, |m| m.max(0) as usize);
                }
                let summary = stream.finish(txn.handle()).await.map_err(bolt("UNWIND relationships"))?;
                if found == n && matched != n {
                    // Every row matched, some more than once: the transaction is dropped (rolled
                    // back) rather than fanning a row out to several nodes.
                    return Err(GraphError::AmbiguousEndpoints { spec: spec.to_owned(), rows: n, matched });
                }
                if found != n {
                    // Name what is missing: look every endpoint key up in the same transaction.
                    let nodes = match missing_nodes(&mut txn, rel, rows, lines).await {
                        Ok(mut nodes) => {
                            for n in &mut nodes {
                                n.origin = job
                                    .origins
                                    .and_then(|o| o.get(n.row.checked_sub(1)?))
                                    .map(|o| o.to_string());
                            }
                            nodes
                        }
                        Err(e) => {
                            tracing::debug!(target: "etlkit::neo4j", "{spec}: finding the missing endpoints failed: {e}");
                            Vec::new()
                        }
                    };
                    return Err(GraphError::MissingEndpoints {
                        spec: spec.to_owned(),
                        rows: n,
                        missing: n.saturating_sub(found),
                        nodes,
                    });
                }
                summary
            }
        };
        txn.commit().await.map_err(bolt("COMMIT"))?;
        Ok(*summary.stats())
    }

    /// `backoff_initial * 2^(attempt-1)`, capped at `backoff_max`, with full jitter in [50%, 100%].
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.config.backoff_initial.saturating_mul(1u32 << (attempt - 1).min(20));
        let base = base.min(self.config.backoff_max);
        // splitmix64 step: cheap, good enough for jitter.
        let mut z = self.jitter.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let frac = 0.5 + 0.5 * ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64;
        base.mul_f64(frac)
    }
}

/// The endpoint nodes of `rows` (relationship rows of `rel`, as sent) that do not exist, one per
/// distinct missing key, in row order. Looks each endpoint's keys up with
/// `UNWIND $keys AS k MATCH (a:L) WHERE a.p = k[1] RETURN k[0] AS i` inside `txn`.
async fn missing_nodes(
    txn: &mut neo4rs::Txn,
    rel: &RelSpec,
    rows: &BoltList,
    lines: &[usize],
) -> std::result::Result<Vec<MissingNode>, neo4rs::Error> {
    let mut out: Vec<MissingNode> = Vec::new();
    let mut offset = 0;
    for (end, endpoint) in [("start", &rel.from), ("end", &rel.to)] {
        let nk = endpoint.keys.len();
        let keys = rows.iter().enumerate().map(|(i, row)| {
            let mut k = BoltList::with_capacity(nk + 1);
            k.push(BoltType::from(i as i64));
            if let BoltType::List(row) = row {
                for v in row.value.iter().skip(offset).take(nk) {
                    k.push(v.clone());
                }
            }
            BoltType::List(k)
        });
        let mut q = format!("UNWIND $keys AS k MATCH (a{})", crate::spec::labels(&endpoint.labels));
        for (j, p) in endpoint.keys.iter().enumerate() {
            let sep = if j == 0 { " WHERE " } else { " AND " };
            let _ = std::fmt::Write::write_fmt(
                &mut q,
                format_args!("{sep}a.{} = k[{}]", crate::spec::escape_identifier(&p.name), j + 1),
            );
        }
        q.push_str(" RETURN k[0] AS i");
        let query = neo4rs::query(&q).param("keys", BoltType::List(keys.collect()));
        let mut found = vec![false; rows.len()];
        let mut stream = txn.execute(query).await?;
        while let Some(row) = stream.next(txn.handle()).await? {
            if let Some(f) = row.get::<i64>("i").ok().and_then(|i| found.get_mut(i as usize)) {
                *f = true;
            }
        }
        stream.finish(txn.handle()).await?;
        let mut index: std::collections::HashMap<Vec<(String, String)>, usize> = Default::default();
        for (i, row) in rows.iter().enumerate() {
            if found[i] {
                continue;
            }
            let values: &[BoltType] = match row {
                BoltType::List(l) => l.value.get(offset..offset + nk).unwrap_or_default(),
                _ => &[],
            };
            let key: Vec<(String, String)> =
                endpoint.keys.iter().zip(values).map(|(p, v)| (p.name.clone(), literal(v))).collect();
            let line = lines.get(i).copied().unwrap_or(0);
            match index.get(&key) {
                Some(&at) => out[at].rows += 1,
                None => {
                    index.insert(key.clone(), out.len());
                    out.push(MissingNode {
                        end,
                        labels: endpoint.labels.clone(),
                        key,
                        row: line,
                        origin: None,
                        rows: 1,
                    });
                }
            }
        }
        offset += nk;
    }
    out.sort_by_key(|m| m.row);
    Ok(out)
}

/// A key value as it would be written in Cypher: strings quoted and escaped, dates as
/// `date("...")`, numbers, booleans and `null` as themselves.
fn literal(v: &BoltType) -> String {
    match v {
        BoltType::String(s) => format!("{:?}", s.value),
        BoltType::Integer(i) => i.value.to_string(),
        BoltType::Float(f) => f.value.to_string(),
        BoltType::Boolean(b) => b.value.to_string(),
        BoltType::Null(_) => "null".to_owned(),
        BoltType::Date(d) => match chrono::NaiveDate::try_from(d) {
            Ok(d) => format!("date(\"{d}\")"),
            Err(_) => format!("{d:?}"),
        },
        other => format!("{other:?}"),
    }
}

/// The reject record for a row whose key column is NULL: the input row's file and line when the
/// context knows them, else the mapping and the row within the batch.
pub(crate) fn null_key_reject(spec: &str, row: usize, column: &str, ctx: &Context) -> Rejected {
    let at = ctx.origin(row);
    Rejected {
        origin: at.map_or_else(|| format!("neo4j {spec}"), |o| o.source.to_owned()),
        line: Some(at.map_or(row as u64 + 1, |o| o.line)),
        column: Some(column.to_owned()),
        value: None,
        reason: "key column is NULL (or NaN); such keys are never merged".to_owned(),
        raw: None,
    }
}

/// Rows of `batch` (0-based) where any of `columns` is NULL (or NaN), with the first such column.
pub(crate) fn null_rows(batch: &RecordBatch, columns: &[&str]) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let arrays: Vec<_> = columns.iter().filter_map(|c| batch.column_by_name(c).map(|a| (*c, a))).collect();
    for i in 0..batch.num_rows() {
        if let Some((c, _)) = arrays.iter().find(|(_, a)| crate::value::missing_key(a.as_ref(), i)) {
            out.push((i, (*c).to_owned()));
        }
    }
    out
}

/// `batch` without the given rows.
/// `batch` without `rows`, and a context whose origins follow the rows kept (so later errors still
/// name the input rows).
pub(crate) fn drop_rows(
    batch: &RecordBatch,
    rows: &[(usize, String)],
    ctx: &Context,
) -> Result<(RecordBatch, Context)> {
    let mut keep = vec![true; batch.num_rows()];
    for (i, _) in rows {
        keep[*i] = false;
    }
    let keep = BooleanArray::from(keep);
    let kept_ctx = match ctx.origins() {
        Some(o) => ctx.for_batch(o.filter(&keep)),
        None => ctx.clone(),
    };
    Ok((arrow_select::filter::filter_record_batch(batch, &keep)?, kept_ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn backoff_grows_is_capped_and_jittered() {
        let w = GraphWriter::connect(GraphConfig {
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            ..Default::default()
        })
        .unwrap();
        for attempt in 1..=10u32 {
            let d = w.backoff(attempt);
            let base = Duration::from_millis((10u64 << (attempt - 1)).min(100));
            assert!(d <= base && d >= base / 2, "attempt {attempt}: {d:?} vs {base:?}");
        }
    }
}

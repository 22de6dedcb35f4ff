//! What the PostgreSQL tests of this crate share: a fresh database on the throwaway server, SQL
//! helpers, row-digest multisets and error chains.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch};
use etlkit_datafusion::datafusion;
use etlkit_hash::{Algorithm, RowHasher};
use etlkit_postgres::sqlx::{self, AssertSqlSafe, PgPool, Row};
use etlkit_postgres::{DatabaseUrl, connect};
use etlkit_testkit::PgServer;

/// A fresh database on this test binary's PostgreSQL: a pool and the URL.
pub(crate) async fn fresh() -> (PgPool, String) {
    static PG: std::sync::LazyLock<Arc<PgServer>> =
        std::sync::LazyLock::new(|| PgServer::start().expect("test PostgreSQL"));
    let url = tokio::task::spawn_blocking(|| PG.fresh_database()).await.unwrap().expect("test PostgreSQL");
    let pool = connect(&DatabaseUrl::new(url.clone()), 4, "df-test").await.unwrap();
    (pool, url)
}

pub(crate) async fn exec(pool: &PgPool, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_owned())).execute(pool).await.unwrap();
}

pub(crate) async fn scalar(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query(AssertSqlSafe(sql.to_owned())).fetch_one(pool).await.unwrap().get(0)
}

/// Multiset of row digests (digest → count) over every column of the batches.
pub(crate) fn digests(batches: &[RecordBatch]) -> BTreeMap<Vec<u8>, usize> {
    let mut out = BTreeMap::new();
    for b in batches {
        let h = RowHasher::all_columns(Algorithm::Sha256).hash_batch(b).unwrap();
        for i in 0..h.len() {
            *out.entry(h.value(i).to_vec()).or_insert(0) += 1;
        }
    }
    out
}

/// Every message of an error's source chain, ` / `-separated.
pub(crate) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cur = Some(err);
    while let Some(e) = cur {
        out.push_str(&format!(" / {e}"));
        cur = e.source();
    }
    out
}

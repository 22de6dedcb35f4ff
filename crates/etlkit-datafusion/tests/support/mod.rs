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

/// What [`proxy`] does, once, to the first connection whose client stream shows `arm` and then, in
/// a later read, `trigger` (the client's message that contains it; an empty `arm` is always shown).
pub(crate) enum Interfere {
    /// Forwards that message, then closes the connection without forwarding the server's answer:
    /// the server acts on it, the client sees a lost connection.
    Cut,
    /// Runs the hook to its end, then forwards the message.
    Before(Box<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>),
}

/// A TCP proxy to the server of `url` on 127.0.0.1: returns the URL to connect through it and a
/// flag set once it interfered.
pub(crate) async fn proxy(
    url: &str,
    arm: &'static [u8],
    trigger: &'static [u8],
    action: Interfere,
) -> (String, Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::AtomicBool;
    let (user, rest) = url.split_once('@').expect("user@host in the URL");
    let (upstream, path) = rest.split_once('/').expect("a database in the URL");
    let upstream = upstream.to_owned();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let fired = Arc::new(AtomicBool::new(false));
    let action = Arc::new(action);
    let flag = fired.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(relay(client, upstream.clone(), arm, trigger, action.clone(), flag.clone()));
        }
    });
    (format!("{user}@127.0.0.1:{port}/{path}"), fired)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

async fn relay(
    client: tokio::net::TcpStream,
    upstream: String,
    arm: &'static [u8],
    trigger: &'static [u8],
    action: Arc<Interfere>,
    fired: Arc<std::sync::atomic::AtomicBool>,
) {
    use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { return };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mute = Arc::new(AtomicBool::new(false));
    let muted = mute.clone();
    let down = async move {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if muted.load(SeqCst) || client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let up = async move {
        let mut buf = vec![0u8; 1 << 16];
        let mut armed = false;
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut window = std::mem::take(&mut tail);
            window.extend_from_slice(&buf[..n]);
            // The trigger counts in a message after the arming one (the client writes each small
            // message whole).
            let hit = (armed || arm.is_empty()) && contains(&buf[..n], trigger);
            armed |= contains(&window, arm);
            if hit && !fired.load(SeqCst) && !fired.swap(true, SeqCst) {
                match action.as_ref() {
                    Interfere::Cut => {
                        mute.store(true, SeqCst);
                        let _ = server_write.write_all(&buf[..n]).await;
                        // Time for the server to act on it; then both sockets close.
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        return;
                    }
                    Interfere::Before(hook) => hook().await,
                }
            }
            tail = window[window.len().saturating_sub(256)..].to_vec();
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

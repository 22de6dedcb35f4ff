//! [`BoltServer`]: a throwaway ArcadeDB server speaking Bolt (or the server named by `BOLT_URI`).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use crate::lifeline::{self, Supervised};
use crate::{Error, Result};

const SERVER: &str = "ArcadeDB";
const ROOT_USER: &str = "root";
/// The database every throwaway ArcadeDB server creates at startup.
pub const DEFAULT_DATABASE: &str = "etlkit";
/// JVM heap of the throwaway ArcadeDB server, unless `ETLKIT_ARCADEDB_HEAP` says otherwise.
pub const DEFAULT_HEAP: &str = "1g";

/// Where and how to reach one Bolt database: pass these to the Bolt driver (neo4rs: `ConfigBuilder::uri`,
/// `user`, `password`, `db`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoltDatabase {
    /// `bolt://host:port`.
    pub uri: String,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// Database name; always set it explicitly in the driver config.
    pub name: String,
}

/// A Bolt (Neo4j protocol) server for tests: either a throwaway ArcadeDB server this process started from
/// the `arcadedb-embedded` Python package (its bundled JRE and jars, Bolt plugin enabled), or the external
/// server named by `BOLT_URI` / `BOLT_USER` / `BOLT_PASSWORD`.
///
/// Get it with [`BoltServer::start`] (one shared server per process) and give every test its own database
/// with [`BoltServer::fresh_database`]. A throwaway server is stopped and its files deleted when the last
/// handle is dropped and when the process ends in any way (see the crate docs).
#[derive(Debug)]
pub struct BoltServer {
    uri: String,
    user: String,
    password: String,
    /// `host:port` of ArcadeDB's HTTP API, when known (throwaway server, or `BOLT_HTTP_URL`).
    http: Option<String>,
    bolt_port: Option<u16>,
    process: Option<Mutex<Supervised>>,
    counter: AtomicU64,
    /// Databases created on an external server, dropped (best effort) on drop.
    created: Mutex<Vec<String>>,
}

impl BoltServer {
    /// The shared server of this process: started on first use (blocking; a JVM takes about five
    /// seconds), reused while any handle is alive, stopped when the last one is dropped. Reuses
    /// `BOLT_URI` (with `BOLT_USER`, `BOLT_PASSWORD` and optionally `BOLT_HTTP_URL`) when set.
    pub fn start() -> Result<Arc<BoltServer>> {
        static SHARED: Mutex<Weak<BoltServer>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(server) = shared.upgrade() {
            return Ok(server);
        }
        let server = Arc::new(Self::start_dedicated()?);
        *shared = Arc::downgrade(&server);
        Ok(server)
    }

    /// A server of its own, not shared with [`BoltServer::start`]'s callers. Stopped when dropped.
    pub fn start_dedicated() -> Result<BoltServer> {
        match std::env::var("BOLT_URI") {
            Ok(uri) if !uri.trim().is_empty() => Self::external(uri.trim().to_owned()),
            _ => Self::local(),
        }
    }

    /// `bolt://host:port`.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The user (`root` on a throwaway server).
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `http://host:port` of ArcadeDB's HTTP API, when known.
    pub fn http_url(&self) -> Option<String> {
        self.http.as_ref().map(|h| format!("http://{h}"))
    }

    /// The Bolt port of a throwaway server (`None` for `BOLT_URI`).
    pub fn bolt_port(&self) -> Option<u16> {
        self.bolt_port
    }

    /// Whether this is the external server named by `BOLT_URI`.
    pub fn is_external(&self) -> bool {
        self.process.is_none()
    }

    /// Creates a new, empty database with a unique name (`etl_t_...`) through ArcadeDB's HTTP API and
    /// returns how to reach it. Blocking; fine to call from async code (it is a few milliseconds). On an
    /// external server (`BOLT_URI` + `BOLT_HTTP_URL`) the database is dropped (best effort) when the
    /// [`BoltServer`] is dropped.
    ///
    /// For an external server without `BOLT_HTTP_URL` (e.g. a real Neo4j), no database can be created:
    /// this returns the database named by `BOLT_DATABASE` (default `neo4j`), shared by all tests, and logs a
    /// warning.
    pub fn fresh_database(&self) -> Result<BoltDatabase> {
        let Some(http) = &self.http else {
            let name = std::env::var("BOLT_DATABASE").unwrap_or_else(|_| "neo4j".into());
            tracing::warn!(database = %name, "BOLT_HTTP_URL not set: tests share one Bolt database");
            return Ok(self.database(name));
        };
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = if self.process.is_some() {
            format!("etl_t_{n}")
        } else {
            format!("etl_t_{}_{}_{n}", std::process::id(), crate::unique_suffix())
        };
        let body = format!(r#"{{"command":"create database {name}"}}"#);
        let (status, reply) =
            http_request(http, "POST", "/api/v1/server", Some((&self.user, &self.password)), &body)
                .map_err(|e| self.http_err(&name, e.into()))?;
        if status != 200 {
            return Err(self.http_err(&name, format!("HTTP {status}: {reply}").into()));
        }
        if self.process.is_none() {
            self.created.lock().unwrap_or_else(|e| e.into_inner()).push(name.clone());
        }
        Ok(self.database(name))
    }

    fn database(&self, name: String) -> BoltDatabase {
        BoltDatabase { uri: self.uri.clone(), user: self.user.clone(), password: self.password.clone(), name }
    }

    fn http_err(&self, name: &str, source: crate::BoxError) -> Error {
        Error::Server { server: SERVER, action: format!("create database {name}"), source }
    }

    fn external(uri: String) -> Result<BoltServer> {
        let var = |k: &'static str, default: &str| std::env::var(k).unwrap_or_else(|_| default.to_owned());
        let http = match std::env::var("BOLT_HTTP_URL") {
            Ok(u) if !u.trim().is_empty() => {
                let hostport = u.trim().trim_start_matches("http://").trim_end_matches('/').to_owned();
                if hostport.contains('/') || !hostport.contains(':') {
                    return Err(Error::Env {
                        var: "BOLT_HTTP_URL",
                        value: u,
                        reason: "expected http://host:port (plain HTTP)".into(),
                    });
                }
                Some(hostport)
            }
            _ => None,
        };
        Ok(BoltServer {
            uri,
            user: var("BOLT_USER", "neo4j"),
            password: var("BOLT_PASSWORD", ""),
            http,
            bolt_port: None,
            process: None,
            counter: AtomicU64::new(0),
            created: Mutex::new(Vec::new()),
        })
    }

    fn local() -> Result<BoltServer> {
        let home = find_arcadedb()?;
        let mut last = None;
        for _attempt in 0..5 {
            match Self::launch(&home) {
                Ok(server) => return Ok(server),
                Err((true, e)) => last = Some(e),
                Err((false, e)) => return Err(e),
            }
        }
        Err(last.expect("at least one attempt"))
    }

    /// One start attempt; the error's flag says whether a port was taken (worth retrying).
    fn launch(home: &ArcadeDbHome) -> Result<BoltServer, (bool, Error)> {
        let fail = |e| (false, e);
        let dir = lifeline::fresh_dir("etlkit-arcadedb", None).map_err(fail)?;
        let log = dir.join("server.log");
        let bolt_port = lifeline::free_port().map_err(fail)?;
        let http_port = lifeline::free_port().map_err(fail)?;
        let password = format!("etlkit-{:08x}", crate::unique_suffix());
        let heap = std::env::var("ETLKIT_ARCADEDB_HEAP").unwrap_or_else(|_| DEFAULT_HEAP.into());
        let classpath = format!("{}/*", home.jars.display());
        let args: Vec<OsString> = [
            "-Xms128m".into(),
            format!("-Xmx{heap}"),
            "-cp".into(),
            classpath,
            format!("-Darcadedb.server.rootPath={}", dir.display()),
            format!("-Darcadedb.server.rootPassword={password}"),
            "-Darcadedb.server.plugins=Bolt:com.arcadedb.bolt.BoltProtocolPlugin".into(),
            format!("-Darcadedb.bolt.port={bolt_port}"),
            "-Darcadedb.bolt.host=127.0.0.1".into(),
            format!("-Darcadedb.server.httpIncomingPort={http_port}"),
            "-Darcadedb.server.httpIncomingHost=127.0.0.1".into(),
            format!("-Darcadedb.server.defaultDatabases={DEFAULT_DATABASE}[{ROOT_USER}]"),
            "-Dpolyglot.engine.WarnInterpreterOnly=false".into(),
            "com.arcadedb.server.ArcadeDBServer".into(),
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        let mut process =
            Supervised::spawn(&home.java, &args, &dir, &log, "TERM", None, &[]).map_err(fail)?;
        let http = format!("127.0.0.1:{http_port}");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(status) = process.exited() {
                let tail = lifeline::log_tail(&log, 40);
                let taken = tail.contains("BindException") || tail.contains("Address already in use");
                let reason = format!("java exited with {status}");
                return Err((taken, Error::Start { server: SERVER, reason, log, log_tail: tail }));
            }
            let ready = matches!(http_request(&http, "GET", "/api/v1/ready", None, ""), Ok((204, _)));
            if ready && lifeline::port_open(bolt_port) {
                break;
            }
            if Instant::now() > deadline {
                let reason = "not ready after 120 s".into();
                return Err((
                    false,
                    Error::Start { server: SERVER, reason, log_tail: process.log_tail(40), log },
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let uri = format!("bolt://127.0.0.1:{bolt_port}");
        tracing::debug!(%uri, dir = %dir.display(), "throwaway ArcadeDB started");
        Ok(BoltServer {
            uri,
            user: ROOT_USER.into(),
            password,
            http: Some(http),
            bolt_port: Some(bolt_port),
            process: Some(Mutex::new(process)),
            counter: AtomicU64::new(0),
            created: Mutex::new(Vec::new()),
        })
    }
}

impl Drop for BoltServer {
    fn drop(&mut self) {
        if let Some(p) = &self.process {
            p.lock().unwrap_or_else(|e| e.into_inner()).stop();
        }
        if let Some(http) = &self.http {
            for name in self.created.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                let body = format!(r#"{{"command":"drop database {name}"}}"#);
                let auth = Some((self.user.as_str(), self.password.as_str()));
                match http_request(http, "POST", "/api/v1/server", auth, &body) {
                    Ok((200, _)) => {}
                    Ok((status, reply)) => {
                        tracing::warn!(database = %name, status, %reply, "could not drop test database")
                    }
                    Err(e) => tracing::warn!(database = %name, error = %e, "could not drop test database"),
                }
            }
        }
    }
}

/// The java binary and jar directory of an ArcadeDB installation.
#[derive(Debug)]
pub(crate) struct ArcadeDbHome {
    pub(crate) java: PathBuf,
    pub(crate) jars: PathBuf,
}

/// Finds ArcadeDB: `ETLKIT_ARCADEDB_DIR` (a directory with `jars/` and optionally `jre/`), else the
/// `arcadedb_embedded` Python package (`python3 -c 'import arcadedb_embedded'`). Java comes from the
/// bundled `jre/bin/java`, else `java` on `PATH`.
pub(crate) fn find_arcadedb() -> Result<ArcadeDbHome> {
    let dir = match std::env::var_os("ETLKIT_ARCADEDB_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let out = Command::new("python3")
                .args([
                    "-c",
                    "import arcadedb_embedded, os; print(os.path.dirname(arcadedb_embedded.__file__))",
                ])
                .output();
            match out {
                Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
                _ => {
                    return Err(Error::NotInstalled {
                        what: "ArcadeDB (Python package arcadedb-embedded)".into(),
                        hint: "run scripts/setup (python3 -m pip install arcadedb-embedded), set \
                               ETLKIT_ARCADEDB_DIR, or set BOLT_URI to an existing Bolt server"
                            .into(),
                    });
                }
            }
        }
    };
    let jars = dir.join("jars");
    let has_server_jar = std::fs::read_dir(&jars)
        .map(|rd| rd.flatten().any(|e| e.file_name().to_string_lossy().starts_with("arcadedb-server")))
        .unwrap_or(false);
    if !has_server_jar {
        return Err(Error::NotInstalled {
            what: format!("ArcadeDB server jars in {}", jars.display()),
            hint: "reinstall with scripts/setup".into(),
        });
    }
    let bundled = dir.join("jre/bin/java");
    let java = if bundled.is_file() { bundled } else { PathBuf::from("java") };
    Ok(ArcadeDbHome { java, jars })
}

/// A minimal HTTP/1.1 exchange (`Connection: close`) with optional basic auth. Returns status and body.
fn http_request(
    hostport: &str,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    body: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(hostport)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n");
    if let Some((user, password)) = auth {
        req.push_str(&format!(
            "Authorization: Basic {}\r\n",
            base64(format!("{user}:{password}").as_bytes())
        ));
    }
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(req.as_bytes())?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    let text = String::from_utf8_lossy(&reply);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response"))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
    Ok((status, body))
}

/// Standard base64 with padding (RFC 4648), for the basic-auth header.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
        assert_eq!(base64(b"root:etlkit-test"), "cm9vdDpldGxraXQtdGVzdA==");
    }
}

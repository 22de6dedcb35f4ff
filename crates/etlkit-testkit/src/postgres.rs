//! [`PgServer`]: a throwaway PostgreSQL cluster (or the server named by `DATABASE_URL`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::lifeline::{self, RunAs, Supervised};
use crate::{Error, Result};

/// Settings of the throwaway cluster, passed as `-c name=value`. Durability is off: fine for tests and
/// benchmarks against a disposable server, and benchmark reports must say so.
pub const THROWAWAY_SETTINGS: &[(&str, &str)] = &[
    ("fsync", "off"),
    ("synchronous_commit", "off"),
    ("full_page_writes", "off"),
    ("shared_buffers", "256MB"),
    ("max_connections", "200"),
    ("max_wal_size", "8GB"),
    ("checkpoint_timeout", "30min"),
    ("wal_level", "logical"),
    ("max_wal_senders", "10"),
    ("max_replication_slots", "10"),
    // Two-phase INSERT INTO (etlkit-datafusion's CommitProtocol::TwoPhase) prepares one
    // transaction per partition.
    ("max_prepared_transactions", "64"),
    ("lc_messages", "C"),
    ("log_min_messages", "warning"),
    ("timezone", "UTC"),
];

const ADMIN_USER: &str = "postgres";

/// A PostgreSQL server for tests: either a throwaway local cluster this process started, or the external
/// server named by the `DATABASE_URL` environment variable.
///
/// Get it with [`PgServer::start`] (one shared server per process) and give every test its own database
/// with [`PgServer::fresh_database`], so tests can run in parallel.
///
/// A throwaway cluster is stopped and its files deleted when the last handle is dropped, and — through
/// the watchdog described in the crate docs — also when the process ends without running destructors.
#[derive(Debug)]
pub struct PgServer {
    url: String,
    kind: Kind,
    counter: AtomicU64,
}

/// How a local cluster's server process was started, to start it again on the same data directory.
#[derive(Debug, Clone)]
struct Launch {
    bin: PathBuf,
    args: Vec<OsString>,
    dir: PathBuf,
    log: PathBuf,
    run_as: RunAs,
}

#[derive(Debug)]
enum Kind {
    /// `DATABASE_URL`; databases we created, dropped (best effort) on drop.
    External { created: Mutex<Vec<String>> },
    /// Our own cluster.
    Local { port: u16, process: Mutex<Supervised>, launch: Launch },
}

impl PgServer {
    /// The shared server of this process: started on first use (blocking, about a second), reused while
    /// any handle is alive, stopped when the last one is dropped. Reuses `DATABASE_URL` when it is set.
    ///
    /// To keep one server for a whole test binary (faster when tests run one after another), keep a handle
    /// in a `static std::sync::LazyLock<Arc<PgServer>>`; the watchdog still stops it when the process exits.
    pub fn start() -> Result<Arc<PgServer>> {
        static SHARED: Mutex<Weak<PgServer>> = Mutex::new(Weak::new());
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(server) = shared.upgrade() {
            return Ok(server);
        }
        let server = Arc::new(Self::start_dedicated()?);
        *shared = Arc::downgrade(&server);
        Ok(server)
    }

    /// A server of its own, not shared with [`PgServer::start`]'s callers (a new throwaway cluster, or
    /// `DATABASE_URL`). Stopped when dropped.
    pub fn start_dedicated() -> Result<PgServer> {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.trim().is_empty() => Self::external(url.trim().to_owned()),
            _ => Self::local(),
        }
    }

    /// The database a program (an example, a CLI) was given, or else one of its own: `url` when given;
    /// otherwise a fresh database on a dedicated throwaway server, announced on stderr as
    /// `<program>: no --database-url and no DATABASE_URL: started a throwaway PostgreSQL on port <port>`.
    /// Keep the returned server alive while the URL is in use (dropping it stops the server).
    pub fn url_or_throwaway(program: &str, url: Option<&str>) -> Result<(String, Option<PgServer>)> {
        if let Some(url) = url {
            return Ok((url.to_owned(), None));
        }
        let pg = Self::start_dedicated()?;
        let url = pg.fresh_database()?;
        let port = pg.port().map(|p| p.to_string()).unwrap_or_else(|| "?".into());
        eprintln!(
            "{program}: no --database-url and no DATABASE_URL: started a throwaway PostgreSQL on port {port}"
        );
        Ok((url, Some(pg)))
    }

    /// The admin URL (database `postgres` as user `postgres` for a throwaway cluster, or `DATABASE_URL`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The TCP port of a throwaway cluster (`None` for `DATABASE_URL`).
    pub fn port(&self) -> Option<u16> {
        match &self.kind {
            Kind::Local { port, .. } => Some(*port),
            Kind::External { .. } => None,
        }
    }

    /// Whether this is the external server named by `DATABASE_URL`.
    pub fn is_external(&self) -> bool {
        matches!(self.kind, Kind::External { .. })
    }

    /// Creates a new, empty database with a unique name (`etl_t_...`) and returns its URL.
    ///
    /// Blocking; callable from inside a Tokio runtime (the work runs on a helper thread). On a throwaway
    /// cluster the database goes away with the cluster; on `DATABASE_URL` it is dropped (best effort, with
    /// `FORCE`) when the [`PgServer`] is dropped.
    pub fn fresh_database(&self) -> Result<String> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = match &self.kind {
            Kind::Local { .. } => format!("etl_t_{n}"),
            Kind::External { .. } => format!("etl_t_{}_{}_{n}", std::process::id(), crate::unique_suffix()),
        };
        let sql = format!("CREATE DATABASE {name}");
        execute(&self.url, &sql)?;
        if let Kind::External { created } = &self.kind {
            created.lock().unwrap_or_else(|e| e.into_inner()).push(name.clone());
        }
        Ok(with_database(&self.url, &name))
    }

    fn external(url: String) -> Result<PgServer> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::Env {
                var: "DATABASE_URL",
                value: url,
                reason: "expected postgres://user[:password]@host[:port]/database".into(),
            });
        }
        execute(&url, "SELECT 1")?;
        Ok(PgServer {
            url,
            kind: Kind::External { created: Mutex::new(Vec::new()) },
            counter: AtomicU64::new(0),
        })
    }

    fn local() -> Result<PgServer> {
        let bin = find_bindir()?;
        let run_as = lifeline::run_as_for_root("postgres")?;
        let template = template_cluster(&bin, run_as)?;
        let mut last_err = None;
        for _attempt in 0..5 {
            match Self::launch(&bin, &template, run_as) {
                Ok(server) => return Ok(server),
                Err(LaunchError::PortTaken(e)) => last_err = Some(e),
                Err(LaunchError::Other(e)) => return Err(e),
            }
        }
        Err(last_err.expect("at least one attempt"))
    }

    fn launch(bin: &Path, template: &Path, run_as: RunAs) -> Result<PgServer, LaunchError> {
        let dir = lifeline::fresh_dir("etlkit-pg", run_as)?;
        let data = dir.join("data");
        let log = dir.join("postgres.log");
        run(Command::new("cp").arg("-a").arg(template).arg(&data), run_as)?;
        let port = lifeline::free_port()?;
        let mut args: Vec<OsString> = vec!["-D".into(), data.into_os_string()];
        // Unix socket paths are limited to 107 bytes; with a long TMPDIR, listen on TCP only.
        let socket_dir =
            if dir.as_os_str().len() < 90 { dir.to_string_lossy().into_owned() } else { String::new() };
        let port_s = port.to_string();
        let mut settings: Vec<(&str, &str)> = vec![
            ("listen_addresses", "127.0.0.1"),
            ("port", &port_s),
            ("unix_socket_directories", &socket_dir),
        ];
        settings.extend_from_slice(THROWAWAY_SETTINGS);
        for (k, v) in settings {
            args.push("-c".into());
            args.push(format!("{k}={v}").into());
        }
        let launch = Launch { bin: bin.to_owned(), args, dir: dir.clone(), log: log.clone(), run_as };
        let mut process = launch.spawn()?;
        let url = format!("postgres://{ADMIN_USER}@127.0.0.1:{port}/postgres");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = process.exited() {
                let tail = lifeline::log_tail(&log, 30);
                let err = Error::Start {
                    server: "PostgreSQL",
                    reason: format!("postgres exited with {status}"),
                    log: log.clone(),
                    log_tail: tail.clone(),
                };
                return Err(if tail.contains("could not bind") || tail.contains("already in use") {
                    LaunchError::PortTaken(err)
                } else {
                    LaunchError::Other(err)
                });
            }
            if lifeline::port_open(port) && execute(&url, "SELECT 1").is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(LaunchError::Other(Error::Start {
                    server: "PostgreSQL",
                    reason: "not accepting connections after 60 s".into(),
                    log: log.clone(),
                    log_tail: process.log_tail(30),
                }));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        tracing::debug!(%url, dir = %dir.display(), "throwaway PostgreSQL started");
        Ok(PgServer {
            url,
            kind: Kind::Local { port, process: Mutex::new(process), launch },
            counter: AtomicU64::new(0),
        })
    }
}

impl Launch {
    fn spawn(&self) -> Result<Supervised> {
        Supervised::spawn(
            &self.bin.join("postgres"),
            &self.args,
            &self.dir,
            &self.log,
            "INT",
            self.run_as,
            &[("LC_ALL", "C")],
        )
    }
}

impl PgServer {
    /// Kills the whole server with `SIGKILL` (the postmaster, so every session is cut off mid-work and
    /// nothing is shut down cleanly), then starts it again on the same data directory and port, which
    /// runs PostgreSQL's crash recovery. Returns once it accepts connections again. For fault tests;
    /// an error for `DATABASE_URL` servers. Blocking.
    pub fn crash_and_restart(&self) -> Result<()> {
        let Kind::Local { port, process, launch } = &self.kind else {
            return Err(Error::Env {
                var: "DATABASE_URL",
                value: self.url.clone(),
                reason: "crash_and_restart needs a throwaway cluster".into(),
            });
        };
        let mut process = process.lock().unwrap_or_else(|e| e.into_inner());
        let keep = launch.dir.join(".etlkit-keep");
        let io = |source| Error::Io { path: keep.clone(), source };
        std::fs::write(&keep, b"").map_err(io)?;
        let pid_file = launch.dir.join("data").join("postmaster.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .map_err(|source| Error::Io { path: pid_file.clone(), source })?
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        run(Command::new("kill").args(["-KILL", &pid]), None)?;
        if !process.wait_exited(Duration::from_secs(30)) {
            return Err(Error::Start {
                server: "PostgreSQL",
                reason: "the killed postmaster's watchdog did not exit within 30 s".into(),
                log: launch.log.clone(),
                log_tail: process.log_tail(30),
            });
        }
        // Orphaned backends notice the postmaster's death and exit; until then a new postmaster
        // refuses to start on the shared memory they hold, so retry for a while.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut next = launch.spawn()?;
            let started = Instant::now();
            let up = loop {
                if next.exited().is_some() {
                    break false;
                }
                if lifeline::port_open(*port) && execute(&self.url, "SELECT 1").is_ok() {
                    break true;
                }
                if started.elapsed() > Duration::from_secs(60) {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(25));
            };
            if up {
                *process = next;
                std::fs::remove_file(&keep).map_err(io)?;
                return Ok(());
            }
            next.wait_exited(Duration::from_secs(5));
            if Instant::now() > deadline {
                return Err(Error::Start {
                    server: "PostgreSQL",
                    reason: "did not come back after the crash within 60 s".into(),
                    log: launch.log.clone(),
                    log_tail: lifeline::log_tail(&launch.log, 30),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        match &self.kind {
            Kind::External { created } => {
                for name in created.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
                    if let Err(e) =
                        execute(&self.url, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    {
                        tracing::warn!(database = %name, error = %e, "could not drop test database");
                    }
                }
            }
            Kind::Local { process, .. } => process.lock().unwrap_or_else(|e| e.into_inner()).stop(),
        }
    }
}

enum LaunchError {
    PortTaken(Error),
    Other(Error),
}

impl From<Error> for LaunchError {
    fn from(e: Error) -> Self {
        LaunchError::Other(e)
    }
}

/// Finds the directory holding `initdb` and `postgres`: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin`, else `PATH`.
pub(crate) fn find_bindir() -> Result<PathBuf> {
    let has_both = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_both(&dir) {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, d)| has_both(d))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if has_both(&dir) {
            return Ok(dir);
        }
    }
    Err(Error::NotInstalled {
        what: "PostgreSQL server binaries (initdb, postgres)".into(),
        hint: "run scripts/setup (apt-get install postgresql), or set DATABASE_URL to an existing server"
            .into(),
    })
}

/// An initialised, never-started cluster directory made once per process (initdb takes a second or two;
/// copying it takes a tenth), removed when the process ends.
fn template_cluster(bin: &Path, run_as: RunAs) -> Result<PathBuf> {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    static INIT: Mutex<()> = Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = TEMPLATE.get() {
        return Ok(t.clone());
    }
    let dir = lifeline::fresh_dir("etlkit-pg-template", run_as)?;
    lifeline::remove_at_exit(&dir)?;
    let data = dir.join("data");
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", ADMIN_USER, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])
        .env("LC_ALL", "C")
        .current_dir(&dir);
    run(&mut initdb, run_as)?;
    Ok(TEMPLATE.get_or_init(|| data).clone())
}

/// Runs a helper program to completion as `run_as`, turning failure into [`Error::Command`].
fn run(cmd: &mut Command, run_as: RunAs) -> Result<()> {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    let line = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| Error::Command {
        command: line.clone(),
        detail: "cannot spawn".into(),
        source: Some(e),
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Command {
        command: line,
        detail: format!(
            "{}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        source: None,
    })
}

/// Runs one SQL statement on a fresh connection to `url`, blocking; safe to call from async code.
fn execute(url: &str, sql: &str) -> Result<()> {
    let server_err =
        |e: sqlx::Error| Error::Server { server: "PostgreSQL", action: sql.to_owned(), source: e.into() };
    crate::block_on(async {
        let mut conn = sqlx::PgConnection::connect(url).await.map_err(server_err)?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(&mut conn).await.map_err(server_err)?;
        conn.close().await.map_err(server_err)?;
        Ok(())
    })
}

/// `url` with its database (path) replaced by `db`, keeping user, password, host, port and parameters.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..].find('/').map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{db}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_is_replaced_in_urls() {
        assert_eq!(with_database("postgres://u:p@h:5/db", "x"), "postgres://u:p@h:5/x");
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(
            with_database("postgresql://u@h/db?sslmode=disable", "x"),
            "postgresql://u@h/x?sslmode=disable"
        );
    }
}

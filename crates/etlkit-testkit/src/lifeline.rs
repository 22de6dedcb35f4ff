//! Server processes that cannot outlive the process that started them.
//!
//! Every server runs under a tiny `/bin/sh` watchdog whose standard input is a pipe from this process (the
//! *lifeline*). This process never writes to it; the watchdog blocks reading it. The read returns end-of-file
//! when the write end closes, which happens when the owning handle is dropped **or when this process ends in
//! any way at all** (normal exit without destructors, panic with `panic = "abort"`, `SIGKILL`): the kernel
//! closes the pipe. The watchdog then signals the server, escalates to `SIGKILL` after 20 s, waits for it and
//! removes the server's directory. If the server dies on its own, the watchdog removes the directory and
//! exits, which the owner sees through [`Supervised::exited`].
//!
//! The watchdog gets its own process group, so a Ctrl-C in the terminal reaches only the test process; the
//! lifeline then does the rest.

use std::ffi::OsString;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// `$1` dir to remove, `$2` log file, `$3` stop signal, `$4...` the server command line.
const WATCHDOG: &str = r#"
dir=$1; log=$2; sig=$3; shift 3
exec 3<&0
"$@" </dev/null 3<&- >>"$log" 2>&1 &
pid=$!
(
  cat <&3 >/dev/null
  kill -"$sig" "$pid" 2>/dev/null
  i=0
  while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.2; i=$((i + 1)); done
  kill -KILL "$pid" 2>/dev/null
) &
guard=$!
exec 3<&- 0</dev/null
wait "$pid"
status=$?
kill -KILL "$guard" 2>/dev/null
# A server killed on purpose to be restarted (PgServer::crash_and_restart) keeps its directory.
[ -e "$dir/.etlkit-keep" ] || rm -rf "$dir"
exit "$status"
"#;

/// Removes a directory when this process ends (the same lifeline, without a server).
const REAPER: &str = r#"cat >/dev/null; rm -rf "$1""#;

/// A server process under a watchdog.
#[derive(Debug)]
pub(crate) struct Supervised {
    watchdog: Child,
    lifeline: Option<ChildStdin>,
    dir: PathBuf,
    log: PathBuf,
}

/// Who to run a program as: `None` for the current user, else `(uid, gid)`.
pub(crate) type RunAs = Option<(u32, u32)>;

impl Supervised {
    /// Starts `program args...` under a watchdog, as `run_as`, appending its output to `log`. `dir` is removed
    /// when the server ends. `stop_signal` is the signal name for a clean, fast stop (`INT` for PostgreSQL's
    /// fast shutdown, `TERM` for a JVM).
    pub(crate) fn spawn(
        program: &Path,
        args: &[OsString],
        dir: &Path,
        log: &Path,
        stop_signal: &str,
        run_as: RunAs,
        envs: &[(&str, &str)],
    ) -> Result<Self> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(WATCHDOG).arg("etlkit-watchdog").arg(dir).arg(log).arg(stop_signal);
        cmd.arg(program).args(args);
        cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).process_group(0);
        cmd.current_dir(dir);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        if let Some((uid, gid)) = run_as {
            cmd.uid(uid).gid(gid);
        }
        let mut watchdog = cmd.spawn().map_err(|e| Error::Command {
            command: format!("/bin/sh (watchdog for {})", program.display()),
            detail: "cannot spawn".into(),
            source: Some(e),
        })?;
        let lifeline = watchdog.stdin.take();
        Ok(Supervised { watchdog, lifeline, dir: dir.to_owned(), log: log.to_owned() })
    }

    /// `Some(status)` once the server (and its watchdog) has ended.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.watchdog.try_wait().ok().flatten()
    }

    /// The last `lines` lines of the log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    /// Stops the server and waits (up to 30 s) until it is gone and its directory removed.
    /// Waits until the supervised process has exited by itself (e.g. after a `SIGKILL`), at most
    /// `limit`; the watchdog is reaped and the directory left alone when it holds the keep marker.
    pub(crate) fn wait_exited(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub(crate) fn stop(&mut self) {
        drop(self.lifeline.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.watchdog.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    tracing::warn!(dir = %self.dir.display(), "server did not stop within 30 s; killing watchdog");
                    let _ = self.watchdog.kill();
                    let _ = self.watchdog.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        // The watchdog may lack permission to remove the directory entry itself (it runs as the server's
        // user); we may have it.
        if !self.dir.join(".etlkit-keep").exists() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of a file, or a note why it cannot be read.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    match std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text)) {
        Ok(_) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read log: {e})"),
    }
}

/// Creates a new, empty, uniquely named directory under the system temp dir, owned by `run_as` (when
/// given) with mode 0700.
pub(crate) fn fresh_dir(prefix: &str, run_as: RunAs) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut base = std::env::temp_dir();
    // Another user must be able to reach the directory: fall back to /tmp if TMPDIR is private.
    let world_searchable = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
    if run_as.is_some() && !base.ancestors().all(world_searchable) {
        base = PathBuf::from("/tmp");
    }
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("{prefix}-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                let io = |source| Error::Io { path: dir.clone(), source };
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
                if let Some((uid, gid)) = run_as {
                    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).map_err(io)?;
                }
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(Error::Io { path: dir, source }),
        }
    }
}

/// Makes sure `dir` is removed when this process ends, however it ends (a reaper process on a lifeline
/// that is never closed before exit).
pub(crate) fn remove_at_exit(dir: &Path) -> Result<()> {
    static REAPERS: OnceLock<Mutex<Vec<ChildStdin>>> = OnceLock::new();
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(REAPER)
        .arg("etlkit-reaper")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| Error::Command {
            command: "/bin/sh (reaper)".into(),
            detail: "cannot spawn".into(),
            source: Some(e),
        })?;
    let stdin = child.stdin.take().expect("piped stdin");
    REAPERS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner()).push(stdin);
    Ok(())
}

/// A free TCP port on 127.0.0.1 (bound and released; the caller retries if someone takes it meanwhile).
pub(crate) fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))
        .map_err(|source| Error::Io { path: "127.0.0.1:0".into(), source })?;
    let port =
        listener.local_addr().map_err(|source| Error::Io { path: "127.0.0.1:0".into(), source })?.port();
    Ok(port)
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub(crate) fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &(std::net::Ipv4Addr::LOCALHOST, port).into(),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// `Some((uid, gid))` of the named user when this process runs as root (servers such as PostgreSQL refuse
/// to run as root), `None` when it runs as someone else (then servers run as that user).
pub(crate) fn run_as_for_root(user: &str) -> Result<RunAs> {
    use std::os::unix::fs::MetadataExt;
    let me = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    if me != 0 {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")
        .map_err(|source| Error::Io { path: "/etc/passwd".into(), source })?;
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 4
            && f[0] == user
            && let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse())
        {
            return Ok(Some((uid, gid)));
        }
    }
    Err(Error::NotInstalled {
        what: format!("OS user `{user}` (needed because this process runs as root)"),
        hint: "run scripts/setup (installing the postgresql package creates it), or run tests as a non-root user"
            .into(),
    })
}

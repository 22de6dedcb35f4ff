//! [`Process`]: a program a test starts itself (a cluster node, say) under the same lifeline as the
//! servers, so it cannot outlive the test process however that ends.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use crate::lifeline::{self, Supervised};
use crate::{Error, Result};

/// A supervised child program, stopped (SIGTERM, then SIGKILL after 20 s) when dropped or when the
/// test process ends. It runs in a fresh directory of its own (removed when it ends) and its standard
/// output and error go to a log file there.
#[derive(Debug)]
pub struct Process {
    name: String,
    dir: PathBuf,
    log: PathBuf,
    inner: Supervised,
}

impl Process {
    /// Starts `program args...` with `envs` added to this process's environment.
    pub fn spawn(name: &str, program: &Path, args: &[&str], envs: &[(&str, &str)]) -> Result<Process> {
        let dir = lifeline::fresh_dir(&format!("etlkit-{name}"), None)?;
        let log = dir.join(format!("{name}.log"));
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let inner = Supervised::spawn(program, &args, &dir, &log, "TERM", None, envs)?;
        Ok(Process { name: name.to_owned(), dir, log, inner })
    }

    /// The process's own directory (its working directory).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Everything it has printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The last `lines` lines it printed.
    pub fn log_tail(&self, lines: usize) -> String {
        self.inner.log_tail(lines)
    }

    /// `Some(status)` once it has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.inner.exited()
    }

    /// Waits until it accepts TCP connections on 127.0.0.1:`port`, at most `limit`; an error with its
    /// output when it ends or the time runs out first.
    pub fn wait_for_port(&mut self, port: u16, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if lifeline::port_open(port) {
                return Ok(());
            }
            let reason = match self.exited() {
                Some(status) => format!("exited with {status} before listening on port {port}"),
                None if Instant::now() > deadline => format!("not listening on port {port} after {limit:?}"),
                None => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            return Err(Error::Start {
                server: "test process",
                reason: format!("{}: {reason}", self.name),
                log: self.log.clone(),
                log_tail: self.log_tail(40),
            });
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    lifeline::free_port()
}

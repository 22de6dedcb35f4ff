//! Smoke tests: the throwaway servers start, answer real drivers, and leave nothing behind.

use std::time::Duration;

use etlkit_testkit::{BoltServer, PgServer};
use sqlx::Connection;

/// Whether a process with this PID exists and is not a zombie.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// PIDs of processes listening on 127.0.0.1:`port` (from /proc/net/tcp and /proc/*/fd).
fn listeners(port: u16) -> Vec<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && f[3] == "0A" {
                inodes.push(format!("socket:[{}]", f[9]));
            }
        }
    }
    let mut pids = Vec::new();
    for proc_dir in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = proc_dir.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(fds) = std::fs::read_dir(proc_dir.path().join("fd")) else { continue };
        if fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| inodes.iter().any(|i| l.to_string_lossy() == *i))
        }) {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test]
async fn postgres_fresh_database_answers_select_1() {
    let pg = PgServer::start().unwrap();
    let url = pg.fresh_database().unwrap();
    let other = pg.fresh_database().unwrap();
    assert_ne!(url, other, "every call gives a new database");
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let (one, db): (i32, String) =
        sqlx::query_as("SELECT 1, current_database()").fetch_one(&mut conn).await.unwrap();
    assert_eq!(one, 1);
    assert_eq!(Some(db.as_str()), url.rsplit('/').next());
    conn.close().await.unwrap();
}

#[test]
fn postgres_shared_server_is_reused_while_a_handle_lives() {
    let a = PgServer::start().unwrap();
    let b = PgServer::start().unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &b));
}

#[test]
fn postgres_dropping_the_server_stops_it_and_removes_its_files() {
    let pg = PgServer::start_dedicated().unwrap();
    let Some(port) = pg.port() else { return }; // DATABASE_URL: not ours to stop
    let pids = listeners(port);
    assert!(!pids.is_empty(), "postgres listens on {port}");
    let socket_dirs: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(format!(".s.PGSQL.{port}")).exists())
        .collect();
    assert_eq!(socket_dirs.len(), 1, "the cluster's own directory holds its socket");
    drop(pg);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} closed after drop");
    assert!(pids.iter().all(|p| !alive(*p)), "postgres {pids:?} gone after drop");
    assert!(!socket_dirs[0].exists(), "{} removed after drop", socket_dirs[0].display());
}

#[tokio::test]
async fn bolt_fresh_database_runs_unwind_in_a_transaction() {
    let bolt = BoltServer::start().unwrap();
    let db = bolt.fresh_database().unwrap();
    let config = neo4rs::ConfigBuilder::default()
        .uri(&db.uri)
        .user(&db.user)
        .password(&db.password)
        .db(db.name.as_str())
        .max_connections(2)
        .build()
        .unwrap();
    let graph = neo4rs::Graph::connect(config).unwrap();
    let mut txn = graph.start_txn().await.unwrap();
    let mut rows = txn.execute("UNWIND range(1, 3) AS i RETURN i").await.unwrap();
    let mut got = Vec::new();
    while let Some(row) = rows.next(txn.handle()).await.unwrap() {
        got.push(row.get::<i64>("i").unwrap());
    }
    txn.commit().await.unwrap();
    assert_eq!(got, [1, 2, 3]);
}

#[test]
fn bolt_dropping_the_server_stops_the_jvm() {
    let bolt = BoltServer::start_dedicated().unwrap();
    let Some(port) = bolt.bolt_port() else { return }; // BOLT_URI: not ours to stop
    let pids = listeners(port);
    assert_eq!(pids.len(), 1, "one JVM listens on {port}");
    drop(bolt);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} closed after drop");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while alive(pids[0]) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!alive(pids[0]), "JVM {} gone after drop", pids[0]);
}

/// The guarantee that matters most: a process that dies without running any destructor (here: SIGKILL)
/// leaves no server and no files behind.
#[test]
fn postgres_is_stopped_when_its_process_is_killed() {
    use std::io::BufRead;
    let mut keeper = std::process::Command::new(env!("CARGO_BIN_EXE_etlkit-servers"))
        .arg("pg")
        .env_remove("DATABASE_URL")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut url = None;
    for line in std::io::BufReader::new(keeper.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(u) = line.strip_prefix("export DATABASE_URL=") {
            url = Some(u.to_owned());
        }
        if line.starts_with("# ready") {
            break;
        }
    }
    let url = url.expect("etlkit-servers printed DATABASE_URL");
    let port: u16 = url.rsplit(':').next().unwrap().split('/').next().unwrap().parse().unwrap();
    let pids = listeners(port);
    assert!(!pids.is_empty(), "postgres listens on {port}");
    let dirs: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("etlkit-pg") && name.contains(&format!("-{}-", keeper.id()))
        })
        .collect();
    assert_eq!(dirs.len(), 2, "cluster and template directories: {dirs:?}");

    keeper.kill().unwrap(); // SIGKILL: no destructor runs
    keeper.wait().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while (pids.iter().any(|p| alive(*p)) || dirs.iter().any(|d| d.exists()))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(pids.iter().all(|p| !alive(*p)), "postgres {pids:?} outlived its process");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "port {port} closed");
    assert!(dirs.iter().all(|d| !d.exists()), "{dirs:?} removed");
}

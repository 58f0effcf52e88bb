//! PostgreSQL for the tests: where the server is (`PRO_TEST_PG_URL`), a fresh database per test,
//! and private clusters (`initdb`/`pg_ctl` on a port of their own) for tests that stop the
//! server.
//!
//! Without a reachable server the PostgreSQL variants fail with a message saying how to provide
//! one; `PRO_TEST_SKIP_PG=1` skips them instead (never set in CI).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pro_engine::store::postgres::{PgDatabase, PgTarget, off_async};

/// The server the tests create their databases on, unless `PRO_TEST_PG_URL` names another. The
/// role and password are the ones `.ci/run` creates.
pub const DEFAULT_URL: &str = "postgresql://pro_test:pro_test@127.0.0.1:5432/postgres";

pub fn admin_url() -> String {
    std::env::var("PRO_TEST_PG_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_URL.to_string())
}

/// True when the PostgreSQL variants are to be skipped (`PRO_TEST_SKIP_PG=1`); says so.
pub fn skipped(test: &str) -> bool {
    let skip = std::env::var("PRO_TEST_SKIP_PG").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("{test}: PostgreSQL variant skipped (PRO_TEST_SKIP_PG=1)");
    }
    skip
}

fn random_name() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    format!("test_{}", hex::encode(b))
}

/// `url` with its database name replaced by `dbname` (query parameters kept).
pub fn with_dbname(url: &str, dbname: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgresql", base));
    let authority = rest.split('/').next().unwrap_or_default();
    let mut out = format!("{scheme}://{authority}/{dbname}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Runs SQL on a connection to `url` (from any thread, async or not).
pub fn execute(url: &str, sql: &str) -> Result<(), String> {
    let target = Arc::new(PgTarget::parse(url)?);
    let sql = sql.to_string();
    off_async(move || {
        let mut db = PgDatabase::open(target).map_err(|e| e.to_string())?;
        db.client().map_err(|e| e.to_string())?.batch_execute(&sql).map_err(|e| e.to_string())
    })?
}

/// Runs `f` with a client connected to `url`, on a plain thread.
pub fn with_client<T: Send>(url: &str, f: impl FnOnce(&mut postgres::Client) -> T + Send) -> T {
    let target = Arc::new(PgTarget::parse(url).unwrap());
    off_async(move || {
        let mut db = PgDatabase::open(target).unwrap_or_else(|e| panic!("cannot connect for the test: {e}"));
        f(db.client().unwrap())
    })
    .unwrap()
}

/// A database of its own for one test, dropped (connections and all) when this is dropped.
pub struct ScratchDb {
    pub url: String,
    admin: String,
    name: String,
}

impl ScratchDb {
    pub fn create() -> Self {
        Self::create_on(&admin_url())
    }

    pub fn create_on(admin: &str) -> Self {
        let name = random_name();
        if let Err(e) = execute(admin, &format!("CREATE DATABASE {name}")) {
            panic!(
                "PostgreSQL is not usable for the tests at {admin}: {e}\n\
                 Start a server and point PRO_TEST_PG_URL at it (a role that may create databases; \
                 `bash .ci/run` sets one up), or set PRO_TEST_SKIP_PG=1 to skip the PostgreSQL variants."
            );
        }
        Self { url: with_dbname(admin, &name), admin: admin.to_string(), name }
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        // Servers of the test may still hold connections: end them with the database.
        let _ = execute(&self.admin, &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
    }
}

/// A PostgreSQL cluster of the test's own (trust authentication, loopback only, a free port),
/// which the test may stop and start. Removed with its files when dropped.
pub struct PrivateCluster {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    /// Run the tools as this user (initdb refuses to run as root).
    run_as: Option<String>,
}

impl PrivateCluster {
    pub fn start() -> Self {
        let bin = pg_bindir().unwrap_or_else(|| {
            panic!(
                "PostgreSQL server programs (initdb, pg_ctl) not found: install the Debian package \
                 `postgresql` (`bash .ci/run` does), set PRO_TEST_PG_BIN to their directory, or set \
                 PRO_TEST_SKIP_PG=1 to skip the PostgreSQL variants"
            )
        });
        let run_as = is_root().then(|| "postgres".to_string());
        let dir = std::env::temp_dir().join(format!("pro-pg-{}", random_name()));
        std::fs::create_dir_all(&dir).unwrap();
        if let Some(user) = &run_as {
            let ok = Command::new("chown").arg(user).arg(&dir).status().is_ok_and(|s| s.success());
            assert!(ok, "cannot hand {} to the {user} user", dir.display());
        }
        let port = free_port();
        let mut c = Self { port, dir, bin, run_as };
        let data = c.data_dir();
        c.tool("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"]);
        c.start_server();
        c
    }

    fn data_dir(&self) -> String {
        self.dir.join("data").to_string_lossy().into_owned()
    }

    pub fn url(&self, dbname: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{dbname}", self.port)
    }

    fn tool(&mut self, name: &str, args: &[&str]) {
        let prog = self.bin.join(name);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(&prog);
                c
            }
            None => Command::new(&prog),
        };
        let out = cmd.args(args).current_dir(&self.dir).output().unwrap();
        assert!(
            out.status.success(),
            "{name} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn start_server(&mut self) {
        let data = self.data_dir();
        let log = self.dir.join("server.log").to_string_lossy().into_owned();
        let opts = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off -c max_connections=200",
            self.port
        );
        self.tool("pg_ctl", &["-D", &data, "-l", &log, "-o", &opts, "-w", "-t", "60", "start"]);
    }

    /// Stops the server; `immediate` is a crash (no checkpoint), otherwise a fast shutdown.
    pub fn stop_server(&mut self, immediate: bool) {
        let data = self.data_dir();
        let mode = if immediate { "immediate" } else { "fast" };
        self.tool("pg_ctl", &["-D", &data, "-m", mode, "-w", "-t", "60", "stop"]);
    }

    /// Waits until the server accepts connections.
    pub fn wait_ready(&self) {
        let t0 = Instant::now();
        while execute(&self.url("postgres"), "SELECT 1").is_err() {
            assert!(t0.elapsed() < Duration::from_secs(30), "private cluster did not come back");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let prog = self.bin.join("pg_ctl");
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.arg("-u").arg(user).arg("--").arg(&prog);
                c
            }
            None => Command::new(&prog),
        };
        let _ = cmd.args(["-D", &data, "-m", "immediate", "-w", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Where `initdb` and `pg_ctl` live: `PRO_TEST_PG_BIN`, `pg_config --bindir`, or the newest
/// Debian install.
fn pg_bindir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("PRO_TEST_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let has_tools = |d: &Path| d.join("initdb").is_file() && d.join("pg_ctl").is_file();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_tools(&d) {
            return Some(d);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| has_tools(d))
        .collect();
    versions.sort();
    versions.pop()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

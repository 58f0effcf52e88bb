//! Starts the real app on 127.0.0.1:0 with a temporary database and a pinned clock, and talks
//! to it over real HTTP. The database is SQLite or PostgreSQL ([`Backend`]); tests that run on
//! both are declared with [`on_both_backends!`] and check stored data through the store traits
//! or backend-neutral SQL.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pro_engine::ManualClock;
use pro_engine::db_reader::ReadCommand;
use pro_engine::db_writer::{Write, WriteCommand, WriteError};
use pro_engine::google_subscriber::GoogleTuning;
use pro_engine::store::sqlite::TableDump;
use pro_engine::store::{StoreResult, StoreTx};
use serde_json::Value;
use session_pro_backend::app::{self, StartOptions};
use session_pro_backend::config;
use session_pro_backend::http::AppState;
use tempfile::TempDir;

/// The database backend a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Opts {
    pub dev: bool,
    pub now: i64,
    /// Use this SQLite database file instead of a fresh database.
    pub db: Option<PathBuf>,
    pub env: Vec<(&'static str, String)>,
    /// Contents of an INI file to load (e.g. a `[google]` section).
    pub ini: Option<String>,
    pub backend: Backend,
    /// Use this existing PostgreSQL database instead of a fresh one (its owner drops it).
    pub attach_pg: Option<String>,
    /// Prepare the fresh database before the server starts: bootstrapped with the dev backend
    /// key (0xCD × 32), then this gen_index salt (if any) and these statements (plain SQL both
    /// backends accept).
    pub prepare: Option<Prepare>,
}

#[derive(Default)]
pub struct Prepare {
    pub salt: Option<[u8; 16]>,
    pub sql: Vec<&'static str>,
}

impl Opts {
    pub fn dev(now: i64) -> Self {
        Self {
            dev: true,
            now,
            db: None,
            env: vec![],
            ini: None,
            backend: Backend::Sqlite,
            attach_pg: None,
            prepare: None,
        }
    }
    pub fn prod(now: i64) -> Self {
        Self { dev: false, ..Self::dev(now) }
    }
    /// The same options on `backend`.
    pub fn on(self, backend: Backend) -> Self {
        Self { backend, ..self }
    }
    /// A database made with the dev key and `salt` before the server starts.
    pub fn prepared(self, salt: Option<[u8; 16]>, sql: Vec<&'static str>) -> Self {
        Self { prepare: Some(Prepare { salt, sql }), ..self }
    }
}

/// Declares, for each `async fn name(backend: Backend)` given, a module `name` with the tests
/// `sqlite` and `postgres` running it on each backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[actix_web::test]
            async fn sqlite() {
                super::$name($crate::harness::Backend::Sqlite).await
            }
            #[actix_web::test]
            async fn postgres() {
                if !$crate::pg::skipped(concat!(module_path!(), "::postgres")) {
                    super::$name($crate::harness::Backend::Postgres).await
                }
            }
        }
    )*};
}
pub(crate) use on_both_backends;

/// A read through the server's own reader actors, as a closure.
struct ReadFn<F>(F);

impl<T, F> ReadCommand for ReadFn<F>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn StoreTx) -> StoreResult<T> + Send + 'static,
{
    type Output = T;
    fn run(self, tx: &mut dyn StoreTx) -> StoreResult<T> {
        (self.0)(tx)
    }
}

pub struct Resp {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: web::Data<AppState>,
    pub clock: Arc<ManualClock>,
    pub backend: Backend,
    /// The SQLite file (SQLite only).
    pub db_path: PathBuf,
    /// The database's URL (PostgreSQL only).
    pub db_url: String,
    handle: actix_web::dev::ServerHandle,
    client: Client<HttpConnector, Full<Bytes>>,
    _dir: Option<TempDir>,
    _ini_dir: Option<TempDir>,
    _pg: Option<crate::pg::ScratchDb>,
}

/// A database by location, for looking at it while no server is running (e.g. across a
/// restart): an SQLite file or a PostgreSQL URL.
#[derive(Debug, Clone, Copy)]
pub enum DbAt<'a> {
    Sqlite(&'a Path),
    Postgres(&'a str),
}

impl DbAt<'_> {
    /// The single integer a query answers (plain SQL both backends accept; a PostgreSQL
    /// boolean answers 0 or 1).
    pub fn scalar(self, sql: &str) -> i64 {
        match self {
            DbAt::Sqlite(path) => rusqlite::Connection::open(path).unwrap().query_row(sql, [], |r| r.get(0)).unwrap(),
            DbAt::Postgres(url) => {
                let sql = sql.to_string();
                crate::pg::with_client(url, move |c| {
                    let row = c.query_one(sql.as_str(), &[]).unwrap();
                    match row.columns()[0].type_().name() {
                        "int4" => i64::from(row.get::<_, i32>(0)),
                        "bool" => i64::from(row.get::<_, bool>(0)),
                        _ => row.get::<_, i64>(0),
                    }
                })
            }
        }
    }
}

/// Creates a database file with the dev backend key (0xCD × 32) and, optionally, a fixed
/// gen_index salt, as upstream's worked examples do.
pub fn prepare_db(path: &Path, salt: Option<[u8; 16]>) {
    let target = pro_engine::store::sqlite::SqliteTarget::file(path);
    let (conn, _, _) = pro_engine::engine::open_and_bootstrap(&target, true).unwrap();
    if let Some(salt) = salt {
        conn.execute("UPDATE runtime SET gen_index_salt = ?", [salt.as_slice()]).unwrap();
    }
}

/// Creates a PostgreSQL database the way [`prepare_db`] does a file.
pub fn prepare_pg(url: &str, salt: Option<[u8; 16]>) {
    let target = pro_engine::store::postgres::PgTarget::parse(url).unwrap();
    pro_engine::engine::open_and_bootstrap_postgres(&target, true).unwrap();
    if let Some(salt) = salt {
        crate::pg::with_client(url, move |c| {
            c.execute("UPDATE runtime SET gen_index_salt = $1", &[&salt.as_slice()]).unwrap();
        });
    }
}

impl TestServer {
    pub async fn start(opts: Opts) -> Self {
        let mut pg = None;
        let mut db_url = String::new();
        let (dir, db_path) = match (&opts.db, opts.backend) {
            (Some(p), _) => (None, p.clone()),
            (None, Backend::Sqlite) => {
                let d = TempDir::new().unwrap();
                let p = d.path().join("backend.db");
                (Some(d), p)
            }
            (None, Backend::Postgres) if opts.attach_pg.is_some() => {
                db_url = opts.attach_pg.clone().unwrap_or_default();
                (None, PathBuf::new())
            }
            (None, Backend::Postgres) => {
                let scratch = crate::pg::ScratchDb::create();
                db_url = scratch.url.clone();
                pg = Some(scratch);
                (None, PathBuf::new())
            }
        };
        if let Some(p) = &opts.prepare {
            match opts.backend {
                Backend::Sqlite => {
                    prepare_db(&db_path, p.salt);
                    rusqlite::Connection::open(&db_path).unwrap().execute_batch(&p.sql.join(";\n")).unwrap();
                }
                Backend::Postgres => {
                    prepare_pg(&db_url, p.salt);
                    crate::pg::execute(&db_url, &p.sql.join(";\n")).unwrap();
                }
            }
        }
        let mut env: HashMap<String, String> = HashMap::new();
        match opts.backend {
            Backend::Sqlite => env.insert("SESH_PRO_BACKEND_DB_PATH".into(), db_path.to_string_lossy().into_owned()),
            Backend::Postgres => env.insert("SESH_PRO_BACKEND_DB_URL".into(), db_url.clone()),
        };
        env.insert("SESH_PRO_BACKEND_DEV".into(), if opts.dev { "1" } else { "0" }.into());
        env.insert("SESH_PRO_BACKEND_LISTEN".into(), "127.0.0.1:0".into());
        for (k, v) in &opts.env {
            env.insert((*k).into(), v.clone());
        }
        let ini_dir = opts.ini.as_ref().map(|text| {
            let d = TempDir::new().unwrap();
            std::fs::write(d.path().join("backend.ini"), text).unwrap();
            d
        });
        // An INI given as text, or one named by `SESH_PRO_BACKEND_INI_PATH` in `opts.env`.
        let ini_path = ini_dir
            .as_ref()
            .map(|d| d.path().join("backend.ini"))
            .or_else(|| env.get("SESH_PRO_BACKEND_INI_PATH").filter(|p| !p.is_empty()).map(PathBuf::from));
        let cfg = config::load_with_ini(ini_path.as_deref(), &env).unwrap_or_else(|e| panic!("config: {e:?}"));
        let clock = ManualClock::new(opts.now);
        // Short pauses so Google tests never wait long; retries are driven by the clock.
        let google = GoogleTuning {
            idle_delay: Duration::from_millis(5),
            error_delay: Duration::from_millis(20),
            restart_delay: Duration::from_millis(20),
            ..GoogleTuning::default()
        };
        let server =
            app::start(&cfg, clock.clone(), StartOptions { http_workers: 2, pruner: false, google }).await.unwrap();
        let handle = server.handle.clone();
        actix_web::rt::spawn(server.server);
        Self {
            addr: server.addr,
            state: server.state,
            clock,
            backend: opts.backend,
            db_path,
            db_url,
            handle,
            client: Client::builder(TokioExecutor::new()).build_http(),
            _dir: dir,
            _ini_dir: ini_dir,
            _pg: pg,
        }
    }

    pub async fn request(&self, method: Method, path: &str, body: impl Into<Bytes>) -> Resp {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, path))
            .body(Full::new(body.into()))
            .unwrap();
        let resp = self.client.request(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Resp { status, headers, body }
    }

    pub async fn post(&self, path: &str, body: impl Into<Bytes>) -> Resp {
        self.request(Method::POST, path, body).await
    }

    /// POSTs JSON and returns the parsed envelope (HTTP 200 asserted).
    pub async fn call(&self, path: &str, body: &Value) -> Value {
        let r = self.post(path, serde_json::to_vec(body).unwrap()).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()
    }

    /// Runs a store operation through the real DbWriter (as the platforms and the pruner do).
    pub async fn write<C: WriteCommand>(&self, cmd: C) -> Result<C::Output, WriteError> {
        self.state.writer.send(Write(cmd)).await
    }

    /// Direct read access to the database file, for assertions (SQLite only).
    pub fn sql(&self) -> rusqlite::Connection {
        assert_eq!(self.backend, Backend::Sqlite, "sql() is for SQLite; use read() or scalar()");
        rusqlite::Connection::open(&self.db_path).unwrap()
    }

    /// Runs `f` in a read transaction of the server's own reader (either backend).
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn StoreTx) -> StoreResult<T> + Send + 'static,
    ) -> T {
        self.state.reader.read(ReadFn(f)).await.unwrap()
    }

    /// The single integer a query answers (plain SQL both backends accept).
    pub fn scalar(&self, sql: &str) -> i64 {
        match self.backend {
            Backend::Sqlite => DbAt::Sqlite(&self.db_path).scalar(sql),
            Backend::Postgres => DbAt::Postgres(&self.db_url).scalar(sql),
        }
    }

    /// Every table, as the operator dump shows them (either backend).
    pub fn dump(&self) -> Vec<TableDump> {
        match self.backend {
            Backend::Sqlite => pro_engine::store::sqlite::dump_tables(&self.sql()).unwrap(),
            Backend::Postgres => {
                crate::pg::with_client(&self.db_url, |c| pro_engine::store::postgres::dump_tables(c).unwrap())
            }
        }
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
        if let Some(g) = &self.state.google {
            g.stop(Duration::from_secs(10)).await;
        }
    }
}

//! Starts the real app on 127.0.0.1:0 with a temporary database and a pinned clock, and talks
//! to it over real HTTP.

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
use pro_engine::db_writer::{Write, WriteCommand};
use pro_engine::google_subscriber::GoogleTuning;
use pro_engine::store::ops::OpError;
use serde_json::Value;
use session_pro_backend::app::{self, StartOptions};
use session_pro_backend::config;
use session_pro_backend::http::AppState;
use tempfile::TempDir;

pub struct Opts {
    pub dev: bool,
    pub now: i64,
    /// Use this database file instead of a fresh one.
    pub db: Option<PathBuf>,
    pub env: Vec<(&'static str, String)>,
    /// Contents of an INI file to load (e.g. a `[google]` section).
    pub ini: Option<String>,
}

impl Opts {
    pub fn dev(now: i64) -> Self {
        Self { dev: true, now, db: None, env: vec![], ini: None }
    }
    pub fn prod(now: i64) -> Self {
        Self { dev: false, now, db: None, env: vec![], ini: None }
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
    pub db_path: PathBuf,
    handle: actix_web::dev::ServerHandle,
    client: Client<HttpConnector, Full<Bytes>>,
    _dir: Option<TempDir>,
    _ini_dir: Option<TempDir>,
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

impl TestServer {
    pub async fn start(opts: Opts) -> Self {
        let (dir, db_path) = match &opts.db {
            Some(p) => (None, p.clone()),
            None => {
                let d = TempDir::new().unwrap();
                let p = d.path().join("backend.db");
                (Some(d), p)
            }
        };
        let mut env: HashMap<String, String> = HashMap::new();
        env.insert("SESH_PRO_BACKEND_DB_PATH".into(), db_path.to_string_lossy().into_owned());
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
            db_path,
            handle,
            client: Client::builder(TokioExecutor::new()).build_http(),
            _dir: dir,
            _ini_dir: ini_dir,
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
    pub async fn write<C: WriteCommand>(&self, cmd: C) -> Result<C::Output, OpError> {
        self.state.writer.send(Write(cmd)).await.unwrap()
    }

    /// Direct read access to the database file, for assertions.
    pub fn sql(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(&self.db_path).unwrap()
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
        if let Some(g) = &self.state.google {
            g.stop(Duration::from_secs(10)).await;
        }
    }
}

//! The real binary as a process: configuration failures, `print_tables`, `delete_user_errors`,
//! the dev-key guard, and crash safety under `kill -9`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pro_engine::domain::types::PaymentTx;
use serde_json::Value;

use crate::client::{self, Key};

const BIN: &str = env!("CARGO_BIN_EXE_session-pro-backend");

pub(crate) fn command(env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

/// Runs the binary to completion.
pub(crate) fn run(env: &[(&str, &str)]) -> (i32, String, String) {
    let out = command(env).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) log: Arc<Mutex<String>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// Starts the server on an ephemeral port and waits until it says where it listens.
pub(crate) fn start(env: &[(&str, &str)]) -> Running {
    let mut env = env.to_vec();
    env.push(("SESH_PRO_BACKEND_LISTEN", "127.0.0.1:0"));
    let mut child = command(&env).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.trim().strip_prefix("Listening on: http://") {
                let _ = tx.send(rest.parse::<SocketAddr>().unwrap());
            }
            sink.lock().unwrap().push_str(&format!("{line}\n"));
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("server did not start:\n{}", log.lock().unwrap()));
    Running { child, addr, log, client: Client::builder(TokioExecutor::new()).build_http() }
}

impl Running {
    pub(crate) async fn call(&self, path: &str, body: &Value) -> Result<Value, String> {
        let req = hyper::Request::post(format!("http://{}{path}", self.addr))
            .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
            .unwrap();
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    }

    /// A GET request: the HTTP status and the body.
    pub(crate) async fn get(&self, path: &str) -> Result<(u16, Bytes), String> {
        let req = hyper::Request::get(format!("http://{}{path}", self.addr)).body(Full::new(Bytes::new())).unwrap();
        let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
        let code = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((code, body))
    }

    pub(crate) fn stop(mut self) -> String {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
        self.log.lock().unwrap().clone()
    }
}

#[test]
fn configuration_errors_are_reported_together_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("bad.ini");
    std::fs::write(&ini, "[base]\nwith_platform_apple = true\nlisten = not-an-address\ndev = maybe\n").unwrap();
    let (code, _, err) = run(&[("SESH_PRO_BACKEND_INI_PATH", ini.to_str().unwrap())]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Failed to startup, invalid configuration options"), "{err}");
    assert!(err.contains("dev"), "{err}");

    let (code, _, err) = run(&[("SESH_PRO_BACKEND_INI_PATH", "/nonexistent/backend.ini")]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/backend.ini"), "{err}");

    let (code, _, err) = run(&[("SESH_PRO_BACKEND_DEV", "true")]);
    assert_eq!(code, 1);
    assert!(err.contains("Allowed values are 0 or 1"), "{err}");

    // Webhook sections are validated together with everything else.
    let ini = dir.path().join("hooks.ini");
    std::fs::write(&ini, "[base]\n[session_webhook.0]\nname = x\nurl = not-a-url\nenabled = true\n[session_webhook.1]\nurl = http://127.0.0.1:9/\nenabled = true\n").unwrap();
    let (code, _, err) = run(&[("SESH_PRO_BACKEND_INI_PATH", ini.to_str().unwrap())]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("session_webhook.0") && err.contains("session_webhook.1"), "{err}");
}

#[test]
fn print_tables_prints_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let (code, out, err) =
        run(&[("SESH_PRO_BACKEND_DB_PATH", db.to_str().unwrap()), ("SESH_PRO_BACKEND_PRINT_TABLES", "1")]);
    assert_eq!(code, 0, "{err}");
    for t in ["payments", "users", "revocations", "runtime", "user_errors"] {
        assert!(out.contains(&format!("Table: {t}\n")), "{out}");
    }
    assert!(out.contains("│ gen_index │ gen_index_salt"), "{out}");
}

#[test]
fn dev_mode_refuses_a_production_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("prod.db");
    let target = pro_engine::store::sqlite::SqliteTarget::file(&db);
    pro_engine::engine::open_and_bootstrap(&target, false).unwrap();
    let (code, _, err) = run(&[("SESH_PRO_BACKEND_DB_PATH", db.to_str().unwrap()), ("SESH_PRO_BACKEND_DEV", "1")]);
    assert_eq!(code, 1);
    assert!(err.contains("non-development backend key"), "{err}");
}

#[actix_web::test]
async fn delete_user_errors_deletes_and_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ue.db");
    let target = pro_engine::store::sqlite::SqliteTarget::file(&db);
    let (conn, _, _) = pro_engine::engine::open_and_bootstrap(&target, false).unwrap();
    conn.execute("INSERT INTO user_errors (payment_id, payment_provider, unix_ts_ms) VALUES ('abc', 1, 5)", [])
        .unwrap();
    drop(conn);
    let server = start(&[
        ("SESH_PRO_BACKEND_DB_PATH", db.to_str().unwrap()),
        ("SESH_PRO_BACKEND_DELETE_USER_ERRORS", "1:abc, 2:def"),
    ]);
    let r = server.call("/get_pro_revocations", &client::revocations(0)).await.unwrap();
    assert_eq!(r["status"], 0);
    let log = server.stop();
    assert!(log.contains("Deleted 1/2 user errors from the DB"), "{log}");
    assert!(log.contains("00 1:abc (deleted)") && log.contains("01 2:def (skipped)"), "{log}");
    let n: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM user_errors", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 0);
}

/// A claim the server answered with success: the master seed and the generation hash.
type Claimed = ([u8; 32], String);

#[actix_web::test]
async fn acknowledged_claims_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let env = [("SESH_PRO_BACKEND_DB_PATH", db.to_str().unwrap()), ("SESH_PRO_BACKEND_DEV", "1")];
    let server = Arc::new(start(&env));

    // Four clients claim DEV payments as fast as they can; record every answered success.
    let succeeded: Arc<Mutex<Vec<Claimed>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let (server, succeeded, stop) = (server.clone(), succeeded.clone(), stop.clone());
        tasks.push(actix_web::rt::spawn(async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let seed: [u8; 32] = {
                    let mut s = [0u8; 32];
                    getrandom::fill(&mut s).unwrap();
                    s
                };
                let master = Key::from_seed(seed);
                let tx = PaymentTx::apple_tx(format!("DEV.crash-{worker}-{i}"));
                i += 1;
                match server.call("/add_pro_payment", &client::add_pro_payment(&master, &Key::random(), &tx)).await {
                    Ok(v) if v["status"] == 0 => succeeded
                        .lock()
                        .unwrap()
                        .push((seed, v["result"]["gen_index_hash"].as_str().unwrap().to_string())),
                    Ok(v) => panic!("unexpected answer {v}"),
                    Err(_) => break, // the server is gone
                }
            }
        }));
    }
    let t0 = Instant::now();
    while succeeded.lock().unwrap().len() < 150 && t0.elapsed() < Duration::from_secs(60) {
        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
    }
    // SIGKILL in the middle of the stream.
    let pid = server.child.id();
    assert!(Command::new("kill").arg("-9").arg(pid.to_string()).status().unwrap().success());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let acknowledged = succeeded.lock().unwrap().clone();
    assert!(acknowledged.len() >= 150, "only {} claims before the kill", acknowledged.len());
    match Arc::try_unwrap(server) {
        Ok(mut s) => {
            let _ = s.child.wait();
        }
        Err(_) => panic!("server handle still shared"),
    }

    // Restart on the same file: every acknowledged claim is there, under the same generation.
    let server = start(&env);
    let now = pro_engine::Clock::now_ms(&pro_engine::SystemClock);
    for (seed, gih) in &acknowledged {
        let master = Key::from_seed(*seed);
        let r = server
            .call("/generate_pro_proof", &client::generate_pro_proof(&master, &Key::random(), now))
            .await
            .unwrap();
        assert_eq!(r["status"], 0, "{r}");
        assert_eq!(r["result"]["gen_index_hash"].as_str().unwrap(), gih);
    }
    server.stop();
}

//! Operations: webhooks, masked logs, the daily maintenance (backups) and graceful shutdown.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pro_engine::domain::time::DAY_MS;
use pro_engine::domain::types::PaymentTx;
use pro_engine::health::Registry;
use pro_engine::webhook_logger;
use serde_json::json;
use session_pro_backend::telemetry::{self, Sinks};

use crate::client::{self, Key};
use crate::process::start;
use crate::sink::{Sink, black_hole};

#[actix_web::test]
async fn warnings_and_errors_reach_the_webhook_info_does_not() {
    let sink = Sink::default();
    let url = sink.start();
    let registry = Registry::new();
    let hub = webhook_logger::start(&[("Pro Dev Bot".to_string(), url)], &registry);
    let sinks = Arc::new(Sinks::default());
    sinks.set_webhooks(hub.clone());
    tracing::subscriber::with_default(telemetry::layer_for(sinks), || {
        tracing::warn!(target: "session_pro_backend::main", "test warning from main");
        tracing::info!(target: "session_pro_backend::main", "an info line");
        tracing::error!(target: "pro_engine::store", "test error from backend");
    });
    let bodies = sink.wait_for(|b| b.contains("test error from backend")).await;
    assert_eq!(bodies.len(), 2, "{bodies:#?}");
    let shape = |b: &str, tail: &str| {
        b.starts_with("{\"text\": \"```\\n ")
            && b.ends_with(&format!("{tail}\\n```\", \"display_name\": \"Pro Dev Bot\"}}"))
    };
    assert!(shape(&bodies[0], " WARNING PRO test warning from main"), "{}", bodies[0]);
    assert!(shape(&bodies[1], " ERROR BACKEND test error from backend"), "{}", bodies[1]);
    assert!(hub.flush(Duration::from_secs(2)).await);
    assert!(registry.render_prometheus().contains("pro_webhook_sent_total{webhook=\"Pro Dev Bot\"} 2"));
}

#[actix_web::test]
async fn daemon_sends_banner_warnings_and_pruning_summary_to_enabled_webhooks_only() {
    let (on, off) = (Sink::default(), Sink::default());
    let (on_url, off_url) = (on.start(), off.start());
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("backend.ini");
    let db = dir.path().join("pro.db");
    std::fs::write(
        &ini,
        format!(
            "[base]\ndb_path = {}\ndb_url = sqlite:///other.db\n\n[session_webhook.0]\nname = Pro Dev Bot\nurl = {on_url}\nenabled = true\n\n[session_webhook.1]\nname = Quiet\nurl = {off_url}\nenabled = false\n",
            db.display()
        ),
    )
    .unwrap();
    let server = start(&[("SESH_PRO_BACKEND_INI_PATH", ini.to_str().unwrap())]);
    let bodies = on.wait_for(|b| b.contains("Daily pruning for")).await;
    let find = |needle: &str| bodies.iter().any(|b| b.contains(needle));
    assert!(find("Starting up instance: \\nSession Pro Backend"), "{bodies:#?}");
    assert!(find("Webhook Logger: Enabled (display name: Pro Dev Bot)"));
    assert!(find(" WARNING PRO "), "the db_path/db_url warning: {bodies:#?}");
    assert!(find("Daily pruning for"));
    assert!(!find("Sleeping for"), "INFO lines are not sent");
    let log = server.stop();
    assert!(log.contains("Sleeping for"), "{log}");
    assert!(off.all().is_empty(), "a disabled webhook receives nothing");
}

#[actix_web::test]
async fn a_dead_webhook_neither_slows_requests_nor_blocks_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pro.db");
    let server = start(&[
        ("SESH_PRO_BACKEND_DB_PATH", db.to_str().unwrap()),
        ("SESH_PRO_BACKEND_SESSION_WEBHOOK_URL", &black_hole()),
        ("SESH_PRO_BACKEND_SESSION_WEBHOOK_NAME", "Stuck"),
    ]);
    // The banner and the pruning summary wait for a webhook that never answers, while every
    // request is answered normally.
    for _ in 0..200 {
        let r = server.call("/get_pro_revocations", &client::revocations(0)).await.unwrap();
        assert_eq!(r["status"], 0);
    }
    let pid = server.child.id();
    let t0 = Instant::now();
    assert!(Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap().success());
    let mut child = server.child;
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(20), "shutdown waited too long for the webhook");
}

#[actix_web::test]
async fn logs_never_show_keys_or_payment_ids() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pro.db");
    let log_path = dir.path().join("logs/backend.log");
    let server = start(&[
        ("SESH_PRO_BACKEND_DB_PATH", db.to_str().unwrap()),
        ("SESH_PRO_BACKEND_DEV", "1"),
        ("SESH_PRO_BACKEND_LOG_PATH", log_path.to_str().unwrap()),
    ]);
    let now = pro_engine::Clock::now_ms(&pro_engine::SystemClock);
    let mut secrets = Vec::new();
    for i in 0..3 {
        let (master, rotating) = (Key::random(), Key::random());
        let apple = format!("DEV.apple-secret-{i}-{}", &hex::encode(master.pk())[..12]);
        let google = PaymentTx::google(format!("google-token-secret-{i}"), format!("DEV.GPA.secret-{i}"));
        secrets.extend([
            master.hex(),
            rotating.hex(),
            apple.clone(),
            google.google_payment_token.clone(),
            google.google_order_id.clone(),
        ]);
        let r = server
            .call("/add_pro_payment", &client::add_pro_payment(&master, &rotating, &PaymentTx::apple_tx(&apple)))
            .await
            .unwrap();
        assert_eq!(r["status"], 0, "{r}");
        assert_eq!(
            server.call("/add_pro_payment", &client::add_pro_payment(&master, &rotating, &google)).await.unwrap()["status"],
            0
        );
        // Repeats, forgeries and a foreign key: the error paths log too.
        server.call("/add_pro_payment", &client::add_pro_payment(&master, &rotating, &google)).await.unwrap();
        let mut forged = client::add_pro_payment(&master, &rotating, &google);
        forged["master_sig"] = json!("11".repeat(64));
        server.call("/add_pro_payment", &forged).await.unwrap();
        server.call("/add_pro_payment", &client::add_pro_payment(&Key::random(), &rotating, &google)).await.unwrap();
        server.call("/generate_pro_proof", &client::generate_pro_proof(&master, &Key::random(), now)).await.unwrap();
        server.call("/get_pro_details", &client::get_pro_details(&master, now, 10)).await.unwrap();
        server
            .call("/set_payment_refund_requested", &client::set_refund_requested(&master, now, now, &apple))
            .await
            .unwrap();
        server.call("/generate_pro_proof", &client::generate_pro_proof(&Key::random(), &rotating, now)).await.unwrap();
    }
    let stderr = server.stop();
    let file = std::fs::read_to_string(&log_path).unwrap();
    assert!(file.contains("Session Pro Backend"), "the log file gets the same lines");
    for s in &secrets {
        assert!(!stderr.contains(s.as_str()), "{s} leaked to stderr:\n{stderr}");
        assert!(!file.contains(s.as_str()), "{s} leaked to the log file");
    }
    assert!(stderr.contains("Redeemed payment"), "claims are logged, masked: {stderr}");
}

type Claimed = Arc<Mutex<Vec<String>>>;

#[actix_web::test]
async fn sigterm_drains_in_flight_claims_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pro.db");
    let server = Arc::new(start(&[("SESH_PRO_BACKEND_DB_PATH", db.to_str().unwrap()), ("SESH_PRO_BACKEND_DEV", "1")]));
    let claimed: Claimed = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (server, claimed) = (server.clone(), claimed.clone());
        tasks.push(actix_web::rt::spawn(async move {
            for i in 0.. {
                let id = format!("DEV.drain-{w}-{i}");
                let req = client::add_pro_payment(&Key::random(), &Key::random(), &PaymentTx::apple_tx(&id));
                match server.call("/add_pro_payment", &req).await {
                    Ok(v) if v["status"] == 0 => claimed.lock().unwrap().push(id),
                    Ok(v) => panic!("unexpected answer {v}"),
                    Err(_) => break, // refused: the server is stopping
                }
            }
        }));
    }
    while claimed.lock().unwrap().len() < 100 {
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = server.child.id();
    assert!(Command::new("kill").arg("-TERM").arg(pid.to_string()).status().unwrap().success());
    for t in tasks {
        t.await.unwrap();
    }
    let Ok(mut server) = Arc::try_unwrap(server) else { panic!("still shared") };
    assert_eq!(server.child.wait().unwrap().code(), Some(0));
    let log = server.log.lock().unwrap().clone();
    assert!(log.contains("SIGTERM received"), "{log}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    for id in claimed.lock().unwrap().iter() {
        let owned: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM payments WHERE apple_tx_id = ? AND master_pkey IS NOT NULL AND status = 2",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(owned, 1, "{id} was acknowledged but is not stored");
    }
}

#[actix_web::test]
async fn daily_job_backs_up_rotates_and_reports_its_work() {
    use pro_engine::clock::SharedClock;
    use pro_engine::engine::{self, EngineConfig};
    use pro_engine::expiry_pruner::{Maintenance, RunPrune};
    use pro_engine::store::sqlite::SqliteTarget;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("pro.db");
    let target = SqliteTarget::file(&db);
    // Old backups: one to be rotated away, one kept as the first of its month.
    for name in ["2020-01-01_000000_pro.db.bak", "2020-01-15_000000_pro.db.bak", "unrelated.bak"] {
        std::fs::write(dir.path().join(name), b"old").unwrap();
    }
    let sink = Sink::default();
    let registry = Registry::new();
    let hub = webhook_logger::start(&[("Ops".to_string(), sink.start())], &registry);
    let clock: SharedClock = pro_engine::ManualClock::new(1796428800000);
    let e = engine::start(EngineConfig {
        db: target.clone().into(),
        dev: false,
        readers: 1,
        signers: 1,
        limits: Default::default(),
        clock,
        pruner: true,
        maintenance: Maintenance {
            backup_db: Some(target),
            db_display: "sqlite:///pro.db".into(),
            notifier: Some(hub),
            reports: None,
        },
        registry: registry.clone(),
    })
    .unwrap();
    let job_ts = 1796428800000 + DAY_MS; // 2026-12-06 00:00 UTC
    e.pruner.as_ref().unwrap().send(RunPrune { job_ts, full: true }).await.unwrap();
    let bodies = sink.wait_for(|b| b.contains("Backed up DB successfully")).await;
    let backup = dir.path().join("2026-12-06_000000_pro.db.bak");
    assert!(backup.exists(), "{bodies:#?}");
    let n: i64 = rusqlite::Connection::open(&backup)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM runtime", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1, "the backup is a usable database");
    assert!(!dir.path().join("2020-01-15_000000_pro.db.bak").exists());
    assert!(dir.path().join("2020-01-01_000000_pro.db.bak").exists());
    assert!(dir.path().join("unrelated.bak").exists());
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("Rotating backups and deleting:") && b.contains("2020-01-15_000000_pro.db.bak"))
    );
    assert!(bodies.iter().any(|b| b.contains("Daily pruning for 2026-12-05 completed on 12-06")));
    let metrics = registry.render_prometheus();
    assert!(metrics.contains("pro_maintenance{what=\"backup_failures\"} 0"), "{metrics}");
    assert!(!metrics.contains("pro_maintenance{what=\"last_backup_timestamp_seconds\"} 0\n"));
}

#[test]
fn daily_job_reports_follow_the_calendar() {
    use pro_engine::domain::time::{DAY_MS, days_from_civil};
    use pro_engine::store::sqlite::SqliteTarget;
    let dir = tempfile::tempdir().unwrap();
    let target = SqliteTarget::file(dir.path().join("r.db"));
    pro_engine::engine::open_and_bootstrap(&target, false).unwrap();
    let at = |y, m, d| days_from_civil(y, m, d) * DAY_MS;
    let titles = |ts| {
        session_pro_backend::app::daily_reports(&target.clone().into(), ts)
            .iter()
            .map(|t| t.lines().next().unwrap_or("").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(titles(at(2026, 12, 5)), ["DAILY REPORT"], "a Saturday");
    assert_eq!(titles(at(2026, 12, 7)), ["DAILY REPORT", "WEEKLY REPORT"], "a Monday");
    assert_eq!(titles(at(2027, 1, 1)), ["DAILY REPORT", "MONTHLY REPORT"], "the 1st, a Friday");
    assert_eq!(titles(at(2026, 6, 1)), ["DAILY REPORT", "WEEKLY REPORT", "MONTHLY REPORT"], "Monday the 1st");
}

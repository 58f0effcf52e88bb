//! PostgreSQL only: a database laid out by upstream opens in place (and migrates), several
//! server processes share one database safely, and a server rides out a database restart.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use pro_engine::db_writer::RevokeSubscription;
use pro_engine::domain::types::{PaymentProvider, PaymentTx, ProPlan};
use pro_engine::store::ops::{self, OpCtx};
use pro_engine::store::postgres::{PgDatabase, PgTarget, off_async};
use pro_engine::store::rows::NewPayment;
use pro_engine::store::write_db;
use pro_engine::{Clock, SystemClock};
use serde_json::Value;

use crate::client::{self, Key};
use crate::harness::{Backend, Opts, TestServer};
use crate::pg::{self, PrivateCluster, ScratchDb};
use crate::process::{self, Running};

// ---------------------------------------------------------------------------------------------
// A database written by upstream under PostgreSQL

/// Upstream's PostgreSQL tables at schema version 7 (before `rangeproof_order_id` and the
/// revocation creation time), with the ticket trigger, as its server leaves them.
const UPSTREAM_V7: &str = "
CREATE TABLE payments (
    id SERIAL PRIMARY KEY, master_pkey BYTEA CHECK (octet_length(master_pkey) = 32),
    status INTEGER NOT NULL, plan INTEGER NOT NULL, payment_provider INTEGER NOT NULL,
    auto_renewing BOOLEAN NOT NULL DEFAULT FALSE, unredeemed_unix_ts_ms BIGINT NOT NULL,
    redeemed_unix_ts_ms BIGINT, expiry_unix_ts_ms BIGINT NOT NULL, grace_period_duration_ms BIGINT,
    platform_refund_expiry_unix_ts_ms BIGINT NOT NULL, revoked_unix_ts_ms BIGINT,
    apple_original_tx_id TEXT, apple_tx_id TEXT, apple_web_line_order_tx_id TEXT,
    google_payment_token TEXT, google_order_id TEXT,
    refund_requested_unix_ts_ms BIGINT NOT NULL DEFAULT 0,
    google_obfuscated_account_id BYTEA NULL CHECK (octet_length(google_obfuscated_account_id) = 32),
    apple_app_account_token TEXT NOT NULL DEFAULT '');
CREATE TABLE users (
    master_pkey BYTEA PRIMARY KEY CHECK (octet_length(master_pkey) = 32), gen_index INTEGER NOT NULL,
    expiry_unix_ts_ms BIGINT NOT NULL, grace_period_duration_ms BIGINT NOT NULL,
    auto_renewing BOOLEAN NOT NULL DEFAULT FALSE, refund_requested_unix_ts_ms BIGINT NOT NULL DEFAULT 0,
    google_obfuscated_account_id BYTEA NULL CHECK (octet_length(google_obfuscated_account_id) = 32),
    apple_app_account_token TEXT NOT NULL DEFAULT '');
CREATE TABLE revocations (gen_index INTEGER PRIMARY KEY NOT NULL, expiry_unix_ts_ms BIGINT NOT NULL);
CREATE TABLE runtime (
    gen_index INTEGER NOT NULL DEFAULT 0,
    gen_index_salt BYTEA NOT NULL CHECK (octet_length(gen_index_salt) = 16),
    backend_key BYTEA NOT NULL CHECK (octet_length(backend_key) = 32),
    last_expire_unix_ts_ms BIGINT NOT NULL DEFAULT 0,
    apple_notification_checkpoint_unix_ts_ms BIGINT NOT NULL DEFAULT 0,
    revocation_ticket INTEGER NOT NULL DEFAULT 0);
CREATE TABLE apple_notification_uuid_history (uuid TEXT NOT NULL, expiry_unix_ts_ms BIGINT NOT NULL);
CREATE TABLE google_notification_history (
    message_id BIGINT NOT NULL, handled BOOLEAN NOT NULL DEFAULT FALSE, payload TEXT, expiry_unix_ts_ms BIGINT NOT NULL);
CREATE TABLE user_errors (
    payment_id TEXT NOT NULL, payment_provider INTEGER NOT NULL, unix_ts_ms BIGINT NOT NULL,
    UNIQUE (payment_id, payment_provider));
CREATE FUNCTION increment_revocation_ticket() RETURNS TRIGGER AS $f$
BEGIN UPDATE runtime SET revocation_ticket = revocation_ticket + 1; RETURN NEW; END; $f$ LANGUAGE plpgsql;
CREATE TRIGGER increment_revocation_ticket_after_insert AFTER INSERT ON revocations
    FOR EACH ROW EXECUTE FUNCTION increment_revocation_ticket();
CREATE TRIGGER increment_revocation_ticket_after_delete AFTER DELETE ON revocations
    FOR EACH ROW EXECUTE FUNCTION increment_revocation_ticket();
CREATE TABLE schema_version (id SERIAL PRIMARY KEY, version INTEGER NOT NULL DEFAULT 0);
";

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/upstream-v9-dev.db");

/// Copies every row of the upstream SQLite fixture into the PostgreSQL tables at `url`,
/// converting each value to the column's type (columns the target lacks are left out), and
/// moves the id sequence past the copied ids as upstream's own inserts would have.
fn copy_fixture(url: &str) {
    let src = rusqlite::Connection::open_with_flags(FIXTURE, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut tables = Vec::new();
    for t in pro_engine::store::schema::TABLES {
        let mut st = src.prepare(&format!("SELECT * FROM {t}")).unwrap();
        let cols: Vec<String> = st.column_names().map(|c| c.to_string()).collect();
        let rows: Vec<Vec<rusqlite::types::Value>> = st
            .query_map([], |r| (0..cols.len()).map(|i| r.get::<_, rusqlite::types::Value>(i)).collect())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        tables.push((t.to_string(), cols, rows));
    }
    pg::with_client(url, move |c| {
        use postgres::types::{ToSql, Type};
        use rusqlite::types::Value as V;
        for (table, cols, rows) in tables {
            let present: Vec<String> = c
                .query("SELECT column_name::TEXT FROM information_schema.columns WHERE table_name = $1", &[&table])
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            let keep: Vec<usize> = (0..cols.len()).filter(|i| present.contains(&cols[*i])).collect();
            let names: Vec<&str> = keep.iter().map(|i| cols[*i].as_str()).collect();
            let marks: Vec<String> = (1..=keep.len()).map(|i| format!("${i}")).collect();
            let st = c
                .prepare(&format!("INSERT INTO {table} ({}) VALUES ({})", names.join(", "), marks.join(", ")))
                .unwrap();
            for row in rows {
                let mut values: Vec<Box<dyn ToSql + Sync>> = Vec::new();
                for (n, i) in keep.iter().enumerate() {
                    let ty = &st.params()[n];
                    values.push(match (row[*i].clone(), ty) {
                        (V::Null, t) if *t == Type::BOOL => Box::new(None::<bool>) as Box<dyn ToSql + Sync>,
                        (V::Null, t) if *t == Type::INT4 => Box::new(None::<i32>),
                        (V::Null, t) if *t == Type::INT8 => Box::new(None::<i64>),
                        (V::Null, t) if *t == Type::BYTEA => Box::new(None::<Vec<u8>>),
                        (V::Null, _) => Box::new(None::<String>),
                        (V::Integer(v), t) if *t == Type::BOOL => Box::new(v != 0),
                        // Only upstream's 32-bit revocation creation column cannot take a millisecond time; rows
                        // that existed when upstream added it hold 0 there.
                        (V::Integer(v), t) if *t == Type::INT4 => Box::new(i32::try_from(v).unwrap_or(0)),
                        (V::Integer(v), _) => Box::new(v),
                        (V::Blob(b), _) => Box::new(b),
                        (V::Text(s), _) => Box::new(s),
                        (V::Real(f), _) => panic!("unexpected real {f} in {table}"),
                    });
                }
                let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|b| b.as_ref()).collect();
                c.execute(&st, &refs).unwrap();
            }
        }
        c.batch_execute("SELECT setval(pg_get_serial_sequence('payments', 'id'), (SELECT MAX(id) FROM payments))")
            .unwrap();
    });
}

#[actix_web::test]
async fn upstream_version_7_database_migrates_and_opens_in_place() {
    if pg::skipped("upstream_version_7_database_migrates_and_opens_in_place") {
        return;
    }
    let db = ScratchDb::create();
    pg::execute(&db.url, UPSTREAM_V7).unwrap();
    pg::execute(&db.url, "INSERT INTO schema_version (version) VALUES (7)").unwrap();
    copy_fixture(&db.url);

    let m = crate::fixture_db::manifest();
    let now = m["created_unix_ts_ms"].as_i64().unwrap();
    let s = TestServer::start(Opts { attach_pg: Some(db.url.clone()), ..Opts::dev(now).on(Backend::Postgres) }).await;
    crate::fixture_db::assert_upstream_answers(&s, &m).await;
    assert_eq!(s.scalar("SELECT version FROM schema_version"), 9);
    assert_eq!(s.scalar("SELECT COUNT(*) FROM payments WHERE rangeproof_order_id IS NULL"), 4);
    assert_eq!(
        s.scalar(
            "SELECT COUNT(*) FROM information_schema.columns WHERE table_name = 'revocations'
             AND column_name = 'creation_unix_ts_ms' AND data_type = 'bigint'"
        ),
        1
    );
    s.stop().await;
}

#[actix_web::test]
async fn upstream_migrated_32_bit_creation_column_is_widened() {
    if pg::skipped("upstream_migrated_32_bit_creation_column_is_widened") {
        return;
    }
    // Upstream's own 8 -> 9 step on PostgreSQL adds the creation time as a 32-bit INTEGER.
    let db = ScratchDb::create();
    pg::execute(&db.url, UPSTREAM_V7).unwrap();
    pg::execute(
        &db.url,
        "ALTER TABLE payments ADD COLUMN rangeproof_order_id TEXT;
         ALTER TABLE revocations ADD COLUMN creation_unix_ts_ms INTEGER NOT NULL DEFAULT 0;
         INSERT INTO schema_version (version) VALUES (9);",
    )
    .unwrap();
    copy_fixture(&db.url);
    let m = crate::fixture_db::manifest();
    let now = m["created_unix_ts_ms"].as_i64().unwrap();
    let s = TestServer::start(Opts { attach_pg: Some(db.url.clone()), ..Opts::dev(now).on(Backend::Postgres) }).await;
    crate::fixture_db::assert_upstream_answers(&s, &m).await;

    // Revoking Alice's subscription lists her generation with a millisecond creation time.
    let alice_original: String = rusqlite::Connection::open(FIXTURE)
        .unwrap()
        .query_row("SELECT apple_original_tx_id FROM payments WHERE apple_tx_id = 'DEV.apple-alice-0001'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let revoked = s
        .write(RevokeSubscription {
            provider: PaymentProvider::Apple,
            subscription_key: alice_original,
            revoke_unix_ts_ms: now,
        })
        .await
        .unwrap();
    assert!(revoked);
    let r = s.call("/get_pro_revocations", &client::revocations(0)).await;
    assert_eq!(r["result"]["ticket"], 2, "{r}");
    assert_eq!(r["result"]["items"].as_array().unwrap().len(), 2);
    assert_eq!(s.scalar("SELECT MAX(creation_unix_ts_ms) FROM revocations"), now);
    s.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Two server processes on one database

fn now_ms() -> i64 {
    SystemClock.now_ms()
}

/// Starts two server processes on `url` at the same moment (both bootstrap and run their
/// start-up pruning together).
fn start_pair(url: &str, dev: bool) -> (Running, Running) {
    let env = |url: &str| {
        vec![
            ("SESH_PRO_BACKEND_DB_URL".to_string(), url.to_string()),
            ("SESH_PRO_BACKEND_DEV".to_string(), if dev { "1" } else { "0" }.to_string()),
        ]
    };
    let (e1, e2) = (env(url), env(url));
    let a = std::thread::spawn(move || {
        let env: Vec<(&str, &str)> = e1.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        process::start(&env)
    });
    let env: Vec<(&str, &str)> = e2.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let b = process::start(&env);
    (a.join().unwrap(), b)
}

/// Records Apple payments (ids `<prefix>-<i>`) as a store would, through the engine's own
/// PostgreSQL store.
fn add_apple_payments(url: &str, prefix: &str, n: usize) -> Vec<PaymentTx> {
    let now = now_ms();
    let payments: Vec<NewPayment> = (0..n)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            NewPayment {
                tx: PaymentTx::apple(&id, &id, &id),
                plan: ProPlan::OneMonth,
                expiry_unix_ts_ms: now + 30 * 86_400_000,
                unredeemed_unix_ts_ms: now,
                platform_refund_expiry_unix_ts_ms: 0,
                google_obfuscated_account_id: None,
                apple_app_account_token: String::new(),
            }
        })
        .collect();
    let claims = payments.iter().map(|p| PaymentTx::apple_tx(&p.tx.apple_tx_id)).collect();
    let target = Arc::new(PgTarget::parse(url).unwrap());
    off_async(move || {
        let mut db = PgDatabase::open(target).unwrap();
        write_db(&mut db, |tx| {
            for p in &payments {
                ops::add_unredeemed_payment(tx, p, OpCtx { now, dev: false })?;
            }
            Ok(())
        })
        .unwrap();
    })
    .unwrap();
    claims
}

fn status(v: &Result<Value, String>) -> i64 {
    match v {
        Ok(v) => v["status"].as_i64().unwrap_or(-1),
        Err(e) => panic!("request failed: {e}"),
    }
}

#[actix_web::test]
async fn two_servers_race_to_redeem_one_payment() {
    if pg::skipped("two_servers_race_to_redeem_one_payment") {
        return;
    }
    let db = ScratchDb::create();
    let (a, b) = start_pair(&db.url, false);
    let claims = add_apple_payments(&db.url, "race", 25);
    for (round, tx) in claims.iter().enumerate() {
        let (k1, k2) = (Key::random(), Key::random());
        let (r1, r2) = futures_util::future::join(
            a.call("/add_pro_payment", &client::add_pro_payment(&k1, &Key::random(), tx)),
            b.call("/add_pro_payment", &client::add_pro_payment(&k2, &Key::random(), tx)),
        )
        .await;
        let mut statuses = [status(&r1), status(&r2)];
        statuses.sort();
        assert_eq!(statuses, [0, 101], "round {round}: {r1:?} {r2:?}");
    }
    let owned = pg::with_client(&db.url, |c| {
        c.query_one("SELECT COUNT(*) FROM payments WHERE master_pkey IS NOT NULL", &[]).unwrap().get::<_, i64>(0)
    });
    assert_eq!(owned, 25);
    let (la, lb) = (a.stop(), b.stop());
    assert!(!la.contains("panicked") && !lb.contains("panicked"), "{la}\n{lb}");
}

#[actix_web::test]
async fn two_hundred_redeems_over_two_servers_get_distinct_generations() {
    if pg::skipped("two_hundred_redeems_over_two_servers_get_distinct_generations") {
        return;
    }
    let db = ScratchDb::create();
    let (a, b) = start_pair(&db.url, false);
    let claims = add_apple_payments(&db.url, "spread", 200);
    let servers = [&a, &b];
    let mut hashes = HashSet::new();
    // Forty claims in flight at a time, alternating between the servers.
    for chunk in claims.chunks(40).enumerate() {
        let (c, txs) = chunk;
        let answers = join_all(txs.iter().enumerate().map(|(i, tx)| {
            let server = servers[(c + i) % 2];
            let body = client::add_pro_payment(&Key::random(), &Key::random(), tx);
            async move { server.call("/add_pro_payment", &body).await }
        }))
        .await;
        for r in &answers {
            assert_eq!(status(r), 0, "{r:?}");
            hashes.insert(r.as_ref().unwrap()["result"]["gen_index_hash"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(hashes.len(), 200);
    let (next, distinct) = pg::with_client(&db.url, |c| {
        let next: i32 = c.query_one("SELECT gen_index FROM runtime", &[]).unwrap().get(0);
        let distinct: i64 = c.query_one("SELECT COUNT(DISTINCT gen_index) FROM users", &[]).unwrap().get(0);
        (next, distinct)
    });
    assert_eq!((next, distinct), (200, 200));
    // Both agree on the revocation list's ticket.
    let (ra, rb) = futures_util::future::join(
        a.call("/get_pro_revocations", &client::revocations(0)),
        b.call("/get_pro_revocations", &client::revocations(0)),
    )
    .await;
    assert_eq!(ra.unwrap()["result"], rb.unwrap()["result"]);
    a.stop();
    b.stop();
}

#[actix_web::test]
async fn both_servers_run_the_daily_job_and_one_does_the_work() {
    if pg::skipped("both_servers_run_the_daily_job_and_one_does_the_work") {
        return;
    }
    let db = ScratchDb::create();
    // Each server runs the job for today's midnight when it starts (a missed run is caught up).
    let (a, b) = start_pair(&db.url, false);
    let t0 = Instant::now();
    let logs = loop {
        let logs = [a.log.lock().unwrap().clone(), b.log.lock().unwrap().clone()];
        let finished = logs.iter().filter(|l| l.contains("Daily pruning for")).count();
        if finished == 2 || t0.elapsed() > Duration::from_secs(20) {
            break logs;
        }
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    };
    let worked = logs.iter().filter(|l| l.contains("completed on")).count();
    let skipped = logs.iter().filter(|l| l.contains("already done")).count();
    assert_eq!((worked, skipped), (1, 1), "{logs:#?}");
    let last = pg::with_client(&db.url, |c| {
        c.query_one("SELECT last_expire_unix_ts_ms FROM runtime", &[]).unwrap().get::<_, i64>(0)
    });
    assert_eq!(last, pro_engine::domain::time::start_of_day(now_ms()));
    a.stop();
    b.stop();
}

// ---------------------------------------------------------------------------------------------
// The database restarts under load

/// A claim the server acknowledged: the master seed and the generation hash it answered.
type Claimed = ([u8; 32], String);

#[actix_web::test]
async fn database_restart_under_load_loses_nothing_and_recovers_by_itself() {
    if pg::skipped("database_restart_under_load_loses_nothing_and_recovers_by_itself") {
        return;
    }
    let mut cluster = PrivateCluster::start();
    let url = cluster.url("postgres");
    let server = Arc::new(process::start(&[("SESH_PRO_BACKEND_DB_URL", &url), ("SESH_PRO_BACKEND_DEV", "1")]));

    let acked: Arc<Mutex<Vec<Claimed>>> = Arc::default();
    let failed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (server, acked, failed, stop) = (server.clone(), acked.clone(), failed.clone(), stop.clone());
        workers.push(actix_web::rt::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed).unwrap();
                let tx = PaymentTx::apple_tx(format!("DEV.restart-{w}-{i}"));
                i += 1;
                let body = client::add_pro_payment(&Key::from_seed(seed), &Key::random(), &tx);
                let t = Instant::now();
                let r = server.call("/add_pro_payment", &body).await.expect("the server stays up");
                assert!(t.elapsed() < Duration::from_secs(12), "a request hung for {:?}", t.elapsed());
                match r["status"].as_i64() {
                    Some(0) => {
                        acked.lock().unwrap().push((seed, r["result"]["gen_index_hash"].as_str().unwrap().into()))
                    }
                    // While the database is away: a clean failure in the envelope.
                    Some(1) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        actix_web::rt::time::sleep(Duration::from_millis(20)).await;
                    }
                    _ => panic!("unexpected answer {r}"),
                }
            }
        }));
    }
    let wait_for = |n: usize| {
        let acked = acked.clone();
        async move {
            let t0 = Instant::now();
            while acked.lock().unwrap().len() < n {
                assert!(t0.elapsed() < Duration::from_secs(60), "claims did not resume");
                actix_web::rt::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait_for(100).await;

    for immediate in [false, true] {
        cluster.stop_server(immediate);
        // Down: /health says so and claims fail cleanly.
        let t0 = Instant::now();
        loop {
            let h = process_health(&server).await;
            if h.0 == 503 && h.1["actors"]["database"]["up"] == false {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "health never showed the database down: {h:?}");
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        let before = failed.load(Ordering::Relaxed);
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
        assert!(failed.load(Ordering::Relaxed) > before, "claims should fail while the database is down");
        let r = server.call("/get_pro_revocations", &client::revocations(0)).await.unwrap();
        assert_eq!(r["status"], 1, "{r}");

        // Back: the server reconnects on its own.
        cluster.start_server();
        cluster.wait_ready();
        let n = acked.lock().unwrap().len();
        wait_for(n + 100).await;
        let t0 = Instant::now();
        while process_health(&server).await.0 != 200 {
            assert!(t0.elapsed() < Duration::from_secs(10), "health never recovered");
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    // Every acknowledged claim is stored, under the generation it was answered with.
    let acked = acked.lock().unwrap().clone();
    eprintln!(
        "database restarts: {} claims acknowledged, {} failed cleanly while the database was down",
        acked.len(),
        failed.load(Ordering::Relaxed)
    );
    let now = now_ms();
    for (seed, gih) in &acked {
        let r = server
            .call("/generate_pro_proof", &client::generate_pro_proof(&Key::from_seed(*seed), &Key::random(), now))
            .await
            .unwrap();
        assert_eq!(r["status"], 0, "{r}");
        assert_eq!(r["result"]["gen_index_hash"].as_str().unwrap(), gih);
    }
    let Ok(server) = Arc::try_unwrap(server) else { panic!("server still shared") };
    let log = server.stop();
    assert!(!log.contains("panicked"), "{log}");
}

/// `GET /health` of a server process: the HTTP status and the JSON body.
async fn process_health(server: &Running) -> (u16, Value) {
    let (code, body) = server.get("/health").await.unwrap();
    (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[test]
fn print_tables_and_bad_urls_on_postgres() {
    if pg::skipped("print_tables_and_bad_urls_on_postgres") {
        return;
    }
    let db = ScratchDb::create();
    let (code, out, err) =
        process::run(&[("SESH_PRO_BACKEND_DB_URL", db.url.as_str()), ("SESH_PRO_BACKEND_PRINT_TABLES", "1")]);
    assert_eq!(code, 0, "{err}");
    for t in ["payments", "users", "revocations", "runtime", "user_errors", "schema_version"] {
        assert!(out.contains(&format!("Table: {t}\n")), "{out}");
    }
    assert!(out.contains("│ gen_index │ gen_index_salt"), "{out}");

    // A server that cannot reach its database at start-up says so and exits 1; the password
    // never appears.
    let (code, _, err) =
        process::run(&[("SESH_PRO_BACKEND_DB_URL", "postgresql://someone:s3cret@127.0.0.1:1/nowhere")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("Failed to open/connect to DB"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

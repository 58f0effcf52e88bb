//! Start-up catch-up of Apple's notification history against a fake App Store Server API on
//! 127.0.0.1:0 (platforms.md §2.8, §2.9, §5.3 item 10).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use p256::ecdsa::signature::Verifier as _;
use pro_engine::apple::testkit::PRODUCT_1_MONTH;
use pro_engine::domain::time::DAY_MS;
use pro_engine::domain::types::PaymentTx;
use serde_json::{Value, json};

use crate::apple::{self, AppleSetup, START, count, counted, purchase, setup};
use crate::client::{self, Key};
use crate::harness::{Backend, Opts, TestServer, on_both_backends, prepare_db, prepare_pg};

on_both_backends!(
    pages_through_history_and_skips_what_can_never_apply,
    api_failure_leaves_the_checkpoint_and_the_webhook_works,
    interrupted_paging_is_retried_from_the_old_checkpoint,
);

const RUNS: &str = "pro_apple_catchup_runs_total";

/// One request the fake received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: String,
    content_type: String,
    body: Value,
}

type Responder = Arc<dyn Fn(&Seen) -> (u16, String) + Send + Sync>;

struct FakeApple {
    base_url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeApple {
    async fn start(respond: impl Fn(&Seen) -> (u16, String) + Send + Sync + 'static) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let respond: Responder = Arc::new(respond);
        let log = seen.clone();
        actix_web::rt::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, respond) = (log.clone(), respond.clone());
                actix_web::rt::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (log, respond) = (log.clone(), respond.clone());
                        async move {
                            let header =
                                |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                            let path = req.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
                            let (authorization, content_type) = (header("authorization"), header("content-type"));
                            let raw = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let seen = Seen {
                                path,
                                authorization,
                                content_type,
                                body: serde_json::from_slice(&raw).unwrap_or(Value::Null),
                            };
                            let (status, body) = respond(&seen);
                            log.lock().unwrap().push(seen);
                            Ok::<_, Infallible>(
                                Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        });
        Self { base_url: format!("http://{addr}"), seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn page(payloads: &[Value], more: Option<(bool, &str)>) -> String {
    let items: Vec<Value> = payloads
        .iter()
        .map(|p| json!({ "signedPayload": p, "sendAttempts": [{ "attemptDate": START - 1000, "sendAttemptResult": "TIMED_OUT" }] }))
        .collect();
    let mut page = json!({ "notificationHistory": items });
    if let Some((has_more, token)) = more {
        page["hasMore"] = json!(has_more);
        page["paginationToken"] = json!(token);
    }
    page.to_string()
}

fn checkpoint(s: &TestServer) -> i64 {
    count(s, "SELECT apple_notification_checkpoint_unix_ts_ms FROM runtime")
}

/// Checks the App Store Server API token: ES256 by the `.p8` key with Apple's claims.
fn check_token(a: &AppleSetup, authorization: &str, now_s: i64) {
    let token = authorization.strip_prefix("Bearer ").expect("a bearer token");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let decode = |p: &str| -> Value { serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap() };
    assert_eq!(decode(parts[0]), json!({ "alg": "ES256", "typ": "JWT", "kid": apple::KEY_ID }));
    let claims = decode(parts[1]);
    assert_eq!(claims["iss"], apple::ISSUER_ID);
    assert_eq!(claims["bid"], pro_engine::apple::testkit::BUNDLE_ID);
    assert_eq!(claims["aud"], "appstoreconnect-v1");
    assert_eq!(claims["iat"], now_s);
    assert_eq!(claims["exp"], now_s + 300);
    let sig = p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
    let signed = format!("{}.{}", parts[0], parts[1]);
    a.api_key.verifying_key().verify(signed.as_bytes(), &sig).expect("the token verifies with the key");
}

async fn pages_through_history_and_skips_what_can_never_apply(backend: Backend) {
    // The notifications are generated before the fake starts, so it can serve them.
    let probe = setup("http://127.0.0.1:1", true);
    let a_sub = purchase(PRODUCT_1_MONTH, START - DAY_MS, START + 29 * DAY_MS);
    let b_sub = purchase(PRODUCT_1_MONTH, START - DAY_MS, START + 29 * DAY_MS);
    let c_sub = purchase(PRODUCT_1_MONTH, START - 2 * DAY_MS, START + 28 * DAY_MS);
    let first = vec![
        json!(probe.notification("SUBSCRIBED", Some("INITIAL_BUY"), START - DAY_MS, Some(&a_sub))),
        json!(probe.notification("REFUND_REVERSED", None, START - DAY_MS, Some(&b_sub))),
    ];
    let second = vec![
        json!(probe.notification("SUBSCRIBED", Some("INITIAL_BUY"), START - 2 * DAY_MS, Some(&c_sub))),
        json!("not.a.jws"),
        Value::Null,
    ];
    let token = "page/2+more=";
    let fake = FakeApple::start(move |seen| {
        if seen.path.contains("paginationToken=") {
            (200, page(&second, None))
        } else {
            (200, page(&first, Some((true, token))))
        }
    })
    .await;
    // Same chain and key (both are deterministic), now pointing at the fake.
    let a = setup(&fake.base_url, true);
    let s = a.start(backend, START).await;
    assert_eq!(counted(&s, RUNS, "outcome=\"completed\"").await, 1);

    let seen = fake.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].path, "/inApps/v1/notifications/history");
    assert_eq!(seen[1].path, "/inApps/v1/notifications/history?paginationToken=page%2F2%2Bmore%3D");
    let end = START - 10_000;
    for req in &seen {
        assert_eq!(req.content_type, "application/json");
        assert_eq!(req.body["onlyFailures"], true);
        assert_eq!(
            (req.body["startDate"].as_i64(), req.body["endDate"].as_i64()),
            (Some(end - 30 * DAY_MS), Some(end))
        );
        check_token(&a, &req.authorization, START / 1000);
    }

    // A and C are recorded; B keeps a user error and did not hold the checkpoint back.
    assert_eq!(count(&s, "SELECT COUNT(*) FROM payments"), 2);
    assert_eq!(
        count(
            &s,
            &format!("SELECT COUNT(*) FROM payments WHERE apple_tx_id IN ('{}', '{}')", a_sub.tx_id, c_sub.tx_id)
        ),
        2
    );
    assert_eq!(count(&s, &format!("SELECT COUNT(*) FROM user_errors WHERE payment_id = '{}'", b_sub.original)), 1);
    assert_eq!(checkpoint(&s), end);
    assert_eq!(count(&s, "SELECT COUNT(*) FROM apple_notification_uuid_history"), 2);
    let registry = &s.state.registry;
    let labels = |t: &str, o: &str| format!("source=\"catchup\",type=\"{t}\",outcome=\"{o}\"");
    assert_eq!(registry.counter("pro_apple_notifications_total", &labels("SUBSCRIBED", "handled")), 2);
    assert_eq!(registry.counter("pro_apple_notifications_total", &labels("REFUND_REVERSED", "rejected")), 1);

    // What catch-up recorded is a real payment a client can redeem.
    let master = Key::random();
    let r = s
        .call("/add_pro_payment", &client::add_pro_payment(&master, &Key::random(), &PaymentTx::apple_tx(&c_sub.tx_id)))
        .await;
    assert_eq!(r["status"], 0, "{r}");
    s.stop().await;
}

async fn api_failure_leaves_the_checkpoint_and_the_webhook_works(backend: Backend) {
    let fake =
        FakeApple::start(|_| (401, json!({ "errorCode": 4010001, "errorMessage": "unauthorized" }).to_string())).await;
    let a = setup(&fake.base_url, true);
    let s = a.start(backend, START).await;
    assert_eq!(counted(&s, RUNS, "outcome=\"api_failed\"").await, 1);
    assert_eq!(checkpoint(&s), 0);
    let sub = purchase(PRODUCT_1_MONTH, START - 60_000, START + 30 * DAY_MS);
    apple::deliver(&s, &a.notification("SUBSCRIBED", None, START, Some(&sub))).await;
    assert_eq!(count(&s, "SELECT COUNT(*) FROM payments"), 1);
    s.stop().await;

    // Nothing listening at all is the same.
    let a = setup("http://127.0.0.1:1", true);
    let s = a.start(backend, START).await;
    assert_eq!(counted(&s, RUNS, "outcome=\"api_failed\"").await, 1);
    assert_eq!(checkpoint(&s), 0);
    s.stop().await;
}

async fn interrupted_paging_is_retried_from_the_old_checkpoint(backend: Backend) {
    let probe = setup("http://127.0.0.1:1", false);
    let sub = purchase(PRODUCT_1_MONTH, START - DAY_MS, START + 29 * DAY_MS);
    let first = vec![json!(probe.notification("SUBSCRIBED", None, START - DAY_MS, Some(&sub)))];
    let broken = Arc::new(Mutex::new(true));
    let broken_in = broken.clone();
    let fake = FakeApple::start(move |seen| {
        if !seen.path.contains("paginationToken=") {
            (200, page(&first, Some((true, "t2"))))
        } else if *broken_in.lock().unwrap() {
            (503, "{}".into())
        } else {
            (200, page(&[], Some((false, "t3"))))
        }
    })
    .await;
    let a = setup(&fake.base_url, false);
    // One database over three starts: an SQLite file or a PostgreSQL database of the test's own.
    let dir = tempfile::TempDir::new().unwrap();
    let db = dir.path().join("backend.db");
    let pg = (backend == Backend::Postgres).then(crate::pg::ScratchDb::create);
    // A checkpoint older than Apple's history: the start date is clamped to 180 days.
    let old = START - 400 * DAY_MS;
    let set_checkpoint = format!("UPDATE runtime SET apple_notification_checkpoint_unix_ts_ms = {old}");
    match &pg {
        None => {
            prepare_db(&db, None);
            rusqlite::Connection::open(&db).unwrap().execute_batch(&set_checkpoint).unwrap();
        }
        Some(pg) => {
            prepare_pg(&pg.url, None);
            crate::pg::execute(&pg.url, &set_checkpoint).unwrap();
        }
    }
    let opts = |now: i64| Opts {
        db: pg.is_none().then(|| db.clone()),
        attach_pg: pg.as_ref().map(|pg| pg.url.clone()),
        ..a.opts(backend, now)
    };

    let s = TestServer::start(opts(START)).await;
    assert_eq!(counted(&s, RUNS, "outcome=\"api_failed\"").await, 1);
    // The first page was handled (its UUID is remembered) but the checkpoint stays.
    assert_eq!(count(&s, "SELECT COUNT(*) FROM payments"), 1);
    assert_eq!(checkpoint(&s), old);
    assert_eq!(fake.seen()[0].body["startDate"], START - 10_000 - 180 * DAY_MS);
    s.stop().await;

    // Next start: the same window again; the handled notification is a duplicate.
    *broken.lock().unwrap() = false;
    let later = START + 3_600_000;
    let s = TestServer::start(opts(later)).await;
    assert_eq!(counted(&s, RUNS, "outcome=\"completed\"").await, 1);
    assert_eq!(checkpoint(&s), later - 10_000);
    assert_eq!(count(&s, "SELECT COUNT(*) FROM payments"), 1);
    assert_eq!(
        s.state
            .registry
            .counter("pro_apple_notifications_total", "source=\"catchup\",type=\"SUBSCRIBED\",outcome=\"duplicate\""),
        1
    );
    s.stop().await;

    // Within 30 minutes of the last catch-up no request is made at all.
    let requests = fake.seen().len();
    let s = TestServer::start(opts(later + 29 * 60_000)).await;
    assert_eq!(counted(&s, RUNS, "outcome=\"skipped\"").await, 1);
    assert_eq!(fake.seen().len(), requests);
    s.stop().await;
}

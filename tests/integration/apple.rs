//! Apple notifications end to end over HTTP (platforms.md §5.3, scenarios.md APL and REV-4):
//! a generated Apple-like chain signs notifications, the real app verifies and applies them,
//! and a client redeems and uses the payments through the public routes, on SQLite and on
//! PostgreSQL.

use std::path::PathBuf;
use std::time::Duration;

use hyper::{Method, StatusCode};
use p256::pkcs8::EncodePrivateKey;
use pro_engine::Clock as _;
use pro_engine::apple::testkit::{self, APP_APPLE_ID, BUNDLE_ID, PRODUCT_1_MONTH, PRODUCT_3_MONTHS, TestChain, TxSpec};
use pro_engine::domain::time::DAY_MS;
use pro_engine::domain::types::PaymentTx;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::client::{self, Key};
use crate::harness::{Backend, Opts, Resp, TestServer, on_both_backends};

on_both_backends!(
    route_exists_only_with_apple_enabled,
    purchase_is_redeemed_then_refunded,
    duplicate_uuid_has_no_second_effect,
    failing_notification_answers_500_and_reports_an_error,
    bad_deliveries_change_nothing,
    test_notifications_and_notifications_without_renewal_info,
    upgrade_downgrade_cancel_sequence,
    refund_applies_to_the_whole_subscription,
    intended_behaviour_of_offers_declines_and_grace,
    production_deployment_checks_the_app_id,
    unreadable_or_bad_apple_files_stop_start_up,
    onion_requests_reach_the_route_only_when_enabled,
);

pub const START: i64 = 1_767_268_812_345; // 2026-01-01 12:00:12.345 UTC
pub const KEY_ID: &str = "TESTKEY123";
pub const ISSUER_ID: &str = "57246542-96fe-1a63-e053-0824d011072a";
/// Nothing listens here: catch-up fails fast and harmlessly in tests that do not need it.
pub const NO_API: &str = "http://127.0.0.1:1";

/// Files and keys of one Apple-enabled deployment.
pub struct AppleSetup {
    pub dir: TempDir,
    pub chain: TestChain,
    pub api_key: p256::ecdsa::SigningKey,
    pub ini: PathBuf,
    pub env: &'static str,
}

/// Writes the `.p8` key, the three root files (the generated root twice and Apple's real G3)
/// and an INI enabling Apple.
pub fn setup(api_base: &str, sandbox: bool) -> AppleSetup {
    let dir = TempDir::new().unwrap();
    let chain = TestChain::apple_like(1);
    let api_key = p256::ecdsa::SigningKey::from_slice(&[0x42; 32]).unwrap();
    let pem = api_key.to_pkcs8_pem(p256::pkcs8::LineEnding::LF).unwrap();
    let key_path = dir.path().join("AuthKey_TESTKEY123.p8");
    std::fs::write(&key_path, pem.as_bytes()).unwrap();
    let root = dir.path().join("TestRoot.cer");
    std::fs::write(&root, &chain.root_der).unwrap();
    let root2 = dir.path().join("TestRoot2.cer");
    std::fs::write(&root2, &chain.root_der).unwrap();
    let g3 = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/apple/AppleRootCA-G3.cer"));
    let ini = dir.path().join("pro-backend.ini");
    let text = format!(
        "[base]\nwith_platform_apple = true\n\n[apple]\nkey_id = {KEY_ID}\nissuer_id = {ISSUER_ID}\n\
         bundle_id = {BUNDLE_ID}\nkey_path = {}\nroot_cert_path = {}\nroot_cert_ca_g2_path = {}\n\
         root_cert_ca_g3_path = {}\nsandbox_env = {sandbox}\napp_id = {APP_APPLE_ID}\napi_base_url = {api_base}\n",
        key_path.display(),
        root.display(),
        root2.display(),
        g3.display()
    );
    std::fs::write(&ini, text).unwrap();
    AppleSetup { dir, chain, api_key, ini, env: if sandbox { "Sandbox" } else { "Production" } }
}

impl AppleSetup {
    /// Production options on `backend` with this deployment's INI (a fresh database).
    pub fn opts(&self, backend: Backend, now: i64) -> Opts {
        Opts {
            env: vec![("SESH_PRO_BACKEND_INI_PATH", self.ini.to_string_lossy().into_owned())],
            ..Opts::prod(now).on(backend)
        }
    }

    pub async fn start(&self, backend: Backend, now: i64) -> TestServer {
        TestServer::start(self.opts(backend, now)).await
    }

    /// A signed notification of `kind` about `tx` (None: no transaction, e.g. TEST).
    pub fn notification(&self, kind: &str, sub: Option<&str>, signed: i64, tx: Option<&TxSpec>) -> String {
        self.notification_with(kind, sub, signed, tx, |_, _| {})
    }

    /// Like `notification`, with a chance to edit the body and the transaction payloads.
    pub fn notification_with(
        &self,
        kind: &str,
        sub: Option<&str>,
        signed: i64,
        tx: Option<&TxSpec>,
        edit: impl FnOnce(&mut Value, &mut Option<Value>),
    ) -> String {
        let mut body = testkit::notification_body(kind, sub, &new_uuid(), signed, self.env);
        let mut tx_payload = tx.map(|t| testkit::transaction_payload(t, signed, self.env));
        let renewal = tx.map(|t| testkit::renewal_payload(t, signed, self.env));
        edit(&mut body, &mut tx_payload);
        self.chain.sign_notification(&body, tx_payload.as_ref(), renewal.as_ref())
    }
}

pub fn new_uuid() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).unwrap();
    let h = hex::encode(b);
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

fn random_digits() -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).unwrap();
    format!("{}", 2_000_000_000_000_000 + u64::from_le_bytes(b) % 100_000_000_000_000)
}

/// A fresh subscription's first purchase.
pub fn purchase(product: &str, purchase: i64, expires: i64) -> TxSpec {
    TxSpec {
        original: random_digits(),
        tx_id: random_digits(),
        web_order: random_digits(),
        product: product.into(),
        purchase,
        expires,
    }
}

pub async fn post(s: &TestServer, signed_payload: &str) -> Resp {
    s.post("/apple_notifications_v2", serde_json::to_vec(&json!({ "signedPayload": signed_payload })).unwrap()).await
}

/// Posts and expects the empty 200 Apple needs to stop retrying.
pub async fn deliver(s: &TestServer, signed_payload: &str) {
    let r = post(s, signed_payload).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.body.is_empty());
}

/// Posts and expects a 500 (Apple retries).
pub async fn refused(s: &TestServer, signed_payload: &str) {
    let r = post(s, signed_payload).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.text());
}

/// The single integer a query answers (SQL both backends accept).
pub fn count(s: &TestServer, sql: &str) -> i64 {
    s.scalar(sql)
}

async fn details(s: &TestServer, master: &Key) -> Value {
    let ts = s.clock.now_ms();
    let d = s.call("/get_pro_details", &client::get_pro_details(master, ts, 100)).await;
    assert_eq!(d["status"], 0, "{d}");
    d["result"].clone()
}

async fn claim(s: &TestServer, master: &Key, tx_id: &str) -> Value {
    let r =
        s.call("/add_pro_payment", &client::add_pro_payment(master, &Key::random(), &PaymentTx::apple_tx(tx_id))).await;
    assert_eq!(r["status"], 0, "{r}");
    assert!(client::verify_proof(&r["result"], &s.state.backend_pubkey));
    r["result"].clone()
}

async fn proof(s: &TestServer, master: &Key) -> Value {
    let ts = s.clock.now_ms();
    s.call("/generate_pro_proof", &client::generate_pro_proof(master, &Key::random(), ts)).await
}

/// Waits (boundedly) until a labelled counter has counted something.
pub async fn counted(s: &TestServer, name: &str, labels: &str) -> u64 {
    for _ in 0..1000 {
        let n = s.state.registry.counter(name, labels);
        if n > 0 {
            return n;
        }
        actix_web::rt::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{name}{{{labels}}} was never counted");
}

// ---------------------------------------------------------------------------------------------

async fn route_exists_only_with_apple_enabled(backend: Backend) {
    let plain = TestServer::start(Opts::prod(START).on(backend)).await;
    let r = plain.post("/apple_notifications_v2", "{}").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    plain.stop().await;

    let a = setup(NO_API, true);
    let s = a.start(backend, START).await;
    assert_eq!(s.request(Method::GET, "/apple_notifications_v2", "").await.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(s.request(Method::OPTIONS, "/apple_notifications_v2", "").await.status, StatusCode::OK);
    let health = s.request(Method::GET, "/health", "").await.json();
    assert_eq!(health["actors"]["apple_receiver"]["up"], true, "{health}");
    s.stop().await;
}

async fn purchase_is_redeemed_then_refunded(backend: Backend) {
    let a = setup(NO_API, true);
    let s = a.start(backend, START).await;
    let master = Key::random();
    let sub = purchase(PRODUCT_1_MONTH, START - 60_000, START + 30 * DAY_MS);

    // APL-1: the notification records an unredeemed payment the client then claims.
    deliver(&s, &a.notification("SUBSCRIBED", Some("INITIAL_BUY"), START, Some(&sub))).await;
    assert_eq!(count(&s, "SELECT COUNT(*) FROM payments"), 1);
    let tx = PaymentTx::apple(&sub.original, &sub.tx_id, &sub.web_order);
    let row = s.read(move |t| t.find_payment(&tx)).await.expect("the payment");
    let row = (row.status, row.plan, row.expiry_unix_ts_ms, row.grace_period_duration_ms, row.auto_renewing);
    assert_eq!(row, (1, 1, sub.expires, 3_600_000, true));
    claim(&s, &master, &sub.tx_id).await;
    let p = proof(&s, &master).await;
    assert_eq!(p["status"], 0, "{p}");
    let d = details(&s, &master).await;
    assert_eq!((d["status"].as_i64(), d["items"][0]["status"].as_i64()), (Some(1), Some(2)));
    assert_eq!(d["items"][0]["apple_original_tx_id"], sub.original);

    // A refund long before the period ends: the generation is listed and proofs stop.
    let refund_at = START + 3_600_000;
    s.clock.set(refund_at + 1000);
    deliver(
        &s,
        &a.notification_with("REFUND", None, refund_at + 500, Some(&sub), |_, tx| {
            tx.as_mut().unwrap()["revocationDate"] = json!(refund_at);
            tx.as_mut().unwrap()["revocationReason"] = json!(1);
        }),
    )
    .await;
    let revs = s.call("/get_pro_revocations", &client::revocations(0)).await;
    assert_eq!(revs["result"]["ticket"], 1, "{revs}");
    assert_eq!(revs["result"]["items"].as_array().unwrap().len(), 1);
    let p = proof(&s, &master).await;
    assert_eq!(p["status"], 1, "{p}");
    let d = details(&s, &master).await;
    assert_eq!(d["items"][0]["status"], 4);
    assert_eq!(d["items"][0]["revoked_unix_ts_ms"], refund_at);
    assert_eq!(d["status"], 2);

    let m = s.request(Method::GET, "/metrics", "").await.text();
    assert!(
        m.contains("pro_apple_notifications_total{source=\"webhook\",type=\"SUBSCRIBED\",outcome=\"handled\"} 1"),
        "{m}"
    );
    assert!(m.contains("pro_apple_notifications_total{source=\"webhook\",type=\"REFUND\",outcome=\"handled\"} 1"));
    s.stop().await;
}

async fn duplicate_uuid_has_no_second_effect(backend: Backend) {
    let a = setup(NO_API, true);
    let s = a.start(backend, START).await;
    let sub = purchase(PRODUCT_3_MONTHS, START - 60_000, START + 90 * DAY_MS);
    let jws = a.notification("DID_RENEW", None, START, Some(&sub));
    deliver(&s, &jws).await;
    deliver(&s, &jws).await;
    assert_eq!(count(&s, "SELECT COUNT(*) FROM payments"), 1);
    assert_eq!(count(&s, "SELECT COUNT(*) FROM apple_notification_uuid_history"), 1);
    assert_eq!(count(&s, "SELECT expiry_unix_ts_ms FROM apple_notification_uuid_history"), START + 7 * DAY_MS);
    // A duplicate is not re-applied even after the payment changed in between.
    let master = Key::random();
    claim(&s, &master, &sub.tx_id).await;
    let disable = a.notification("DID_CHANGE_RENEWAL_STATUS", Some("AUTO_RENEW_DISABLED"), START + 1, Some(&sub));
    deliver(&s, &disable).await;
    deliver(&s, &jws).await;
    assert_eq!(count(&s, "SELECT auto_renewing FROM payments"), 0);
    assert_eq!(
        s.state
            .registry
            .counter("pro_apple_notifications_total", "source=\"webhook\",type=\"DID_RENEW\",outcome=\"duplicate\""),
        2
    );
    s.stop().await;
}

async fn failing_notification_answers_500_and_reports_an_error(backend: Backend) {
    let a = setup(NO_API, true);
    let s = a.start(backend, START).await;
    let master = Key::random();
    let sub = purchase(PRODUCT_1_MONTH, START - 60_000, START + 30 * DAY_MS);

    // Scenario 6: a status change before the purchase is known.
    let early = a.notification("DID_CHANGE_RENEWAL_STATUS", Some("AUTO_RENEW_DISABLED"), START, Some(&sub));
    refused(&s, &early).await;
    assert_eq!(count(&s, "SELECT COUNT(*) FROM apple_notification_uuid_history"), 0);
    assert_eq!(
        count(
            &s,
            &format!("SELECT COUNT(*) FROM user_errors WHERE payment_provider = 2 AND payment_id = '{}'", sub.original)
        ),
        1
    );
    deliver(&s, &a.notification("SUBSCRIBED", Some("INITIAL_BUY"), START, Some(&sub))).await;
    claim(&s, &master, &sub.tx_id).await;
    // Apple's retry now applies; the error stays until an operator clears it.
    deliver(&s, &early).await;
    assert_eq!(count(&s, "SELECT auto_renewing FROM payments"), 0);
    let d = details(&s, &master).await;
    assert_eq!(d["error_report"], 1, "{d}");

    // A refund reversal cannot be applied automatically.
    let other = Key::random();
    let sub2 = purchase(PRODUCT_1_MONTH, START - 30_000, START + 30 * DAY_MS);
    deliver(&s, &a.notification("SUBSCRIBED", Some("INITIAL_BUY"), START, Some(&sub2))).await;
    claim(&s, &other, &sub2.tx_id).await;
    assert_eq!(details(&s, &other).await["error_report"], 0);
    let payments_before = count(&s, "SELECT COUNT(*) FROM payments");
    refused(&s, &a.notification("REFUND_REVERSED", None, START + 2, Some(&sub2))).await;
    assert_eq!(details(&s, &other).await["error_report"], 1);
    assert_eq!(count(&s, "SELECT COUNT(*) FROM payments"), payments_before);

    // Other notifications that can never apply: nothing changes, Apple is told to retry.
    let unknown_product = purchase("com.getsession.org.pro_sub", START, START + DAY_MS);
    for jws in [
        a.notification("REFUND", None, START, Some(&purchase(PRODUCT_1_MONTH, START, START + DAY_MS))),
        a.notification("EXTERNAL_PURCHASE_TOKEN", None, START, Some(&sub2)),
        a.notification("RENEWAL_EXTENDED", None, START, Some(&sub2)),
        a.notification("SOMETHING_APPLE_ADDS_LATER", None, START, Some(&sub2)),
        a.notification("SUBSCRIBED", None, START, Some(&unknown_product)),
    ] {
        refused(&s, &jws).await;
    }
    assert_eq!(count(&s, "SELECT COUNT(*) FROM payments"), payments_before);
    assert_eq!(count(&s, "SELECT COUNT(*) FROM revocations"), 0);
    s.stop().await;
}

async fn bad_deliveries_change_nothing(backend: Backend) {
    let a = setup(NO_API, true);
    let s = a.start(backend, START).await;
    let sub = purchase(PRODUCT_1_MONTH, START - 60_000, START + 30 * DAY_MS);
    for body in ["", "null", "[]", "{}", "{\"signedPayload\": 5}", "{\"signedPayload\": \"x.y.z\"}", "\u{0}\u{1}"] {
        let r = s.post("/apple_notifications_v2", body).await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{body:?}");
    }
    let huge = format!("{{\"signedPayload\": \"{}\"}}", "a".repeat(300_000));
    assert_eq!(s.post("/apple_notifications_v2", huge).await.status, StatusCode::INTERNAL_SERVER_ERROR);
    // Signed by a chain we do not trust.
    let foreign = TestChain::apple_like(9);
    let body = testkit::notification_body("SUBSCRIBED", None, &new_uuid(), START, "Sandbox");
    let tx = testkit::transaction_payload(&sub, START, "Sandbox");
    refused(&s, &foreign.sign_notification(&body, Some(&tx), None)).await;
    // Meant for the production deployment.
    let prod = setup(NO_API, false);
    refused(&s, &prod.notification("SUBSCRIBED", None, START, Some(&sub))).await;
    // Signed too far in the future.
    refused(&s, &a.notification("SUBSCRIBED", None, START + 10 * 60_000, Some(&sub))).await;
    assert_eq!(count(&s, "SELECT COUNT(*) FROM payments"), 0);
    assert_eq!(count(&s, "SELECT COUNT(*) FROM user_errors"), 0);
    // The transaction verifies but the renewal info is for another environment: the
    // subscription is known, so it gets a user error.
    let mut body = testkit::notification_body("SUBSCRIBED", None, &new_uuid(), START, "Sandbox");
    body["data"]["signedRenewalInfo"] = json!(a.chain.sign(&testkit::renewal_payload(&sub, START, "Production")));
    refused(&s, &a.chain.sign_notification(&body, Some(&tx), None)).await;
    assert_eq!(count(&s, "SELECT COUNT(*) FROM payments"), 0);
    assert_eq!(count(&s, "SELECT COUNT(*) FROM user_errors"), 1);
    let m = s.request(Method::GET, "/metrics", "").await.text();
    assert!(
        m.contains("pro_apple_verification_failures_total{part=\"notification\",reason=\"INVALID_ENVIRONMENT\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("pro_apple_verification_failures_total{part=\"renewal_info\",reason=\"INVALID_ENVIRONMENT\"} 1")
    );
    s.stop().await;
}

async fn test_notifications_and_notifications_without_renewal_info(backend: Backend) {
    let a = setup(NO_API, true);
    let s = a.start(backend, START).await;
    deliver(&s, &a.notification("TEST", None, START, None)).await;
    assert_eq!(count(&s, "SELECT COUNT(*) FROM apple_notification_uuid_history"), 1);
    // A purchase notification without renewal info is handled too.
    let sub = purchase(PRODUCT_1_MONTH, START - 60_000, START + 30 * DAY_MS);
    let body = testkit::notification_body("SUBSCRIBED", None, &new_uuid(), START, "Sandbox");
    let tx = testkit::transaction_payload(&sub, START, "Sandbox");
    deliver(&s, &a.chain.sign_notification(&body, Some(&tx), None)).await;
    assert_eq!(count(&s, "SELECT COUNT(*) FROM payments"), 1);
    s.stop().await;
}

async fn upgrade_downgrade_cancel_sequence(backend: Backend) {
    // APL-4 with the ids and dates of Apple's sandbox vectors 5-11.
    let a = setup(NO_API, true);
    let s = a.start(backend, 1759727785445).await;
    let master = Key::random();
    let original = "2000001024993299";
    let e00 = TxSpec {
        original: original.into(),
        tx_id: "2000001027701898".into(),
        web_order: "2000000113864605".into(),
        product: PRODUCT_3_MONTHS.into(),
        purchase: 1759727778000,
        expires: 1759728318000,
    };
    let e01 = TxSpec {
        tx_id: "2000001027701928".into(),
        web_order: "2000000114202140".into(),
        product: PRODUCT_1_MONTH.into(),
        purchase: 1759727790000,
        expires: 1759727970000,
        ..e00.clone()
    };
    let at = |s: &TestServer, t: i64| s.clock.set(t);

    deliver(&s, &a.notification("SUBSCRIBED", Some("RESUBSCRIBE"), 1759727785445, Some(&e00))).await;
    at(&s, 1759727786000);
    claim(&s, &master, &e00.tx_id).await;

    at(&s, 1759727799810);
    deliver(&s, &a.notification("DID_CHANGE_RENEWAL_PREF", Some("UPGRADE"), 1759727799810, Some(&e01))).await;
    let d = details(&s, &master).await;
    let items = d["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{d}");
    // Newest first: the upgrade, claimed automatically for the same owner.
    assert_eq!((items[0]["apple_tx_id"].as_str(), items[0]["status"].as_i64()), (Some("2000001027701928"), Some(2)));
    assert_eq!((items[0]["plan"].as_i64(), items[0]["auto_renewing"].as_bool()), (Some(1), Some(true)));
    assert_eq!(items[0]["redeemed_unix_ts_ms"], 1759795200000_i64);
    assert_eq!((items[1]["status"].as_i64(), items[1]["revoked_unix_ts_ms"].as_i64()), (Some(4), Some(1759727790000)));
    // REV-4: no proof can outlive the revocation day, so nothing is listed.
    let revs = s.call("/get_pro_revocations", &client::revocations(0)).await;
    assert_eq!(
        (revs["result"]["ticket"].as_i64(), revs["result"]["items"].as_array().map(Vec::len)),
        (Some(0), Some(0))
    );
    assert_eq!(count(&s, "SELECT COUNT(*) FROM payments WHERE status = 1"), 0);

    let latest_auto = |d: &Value| d["items"][0]["auto_renewing"].as_bool();
    for (kind, sub, signed, expected) in [
        ("DID_CHANGE_RENEWAL_STATUS", Some("AUTO_RENEW_DISABLED"), 1759727821952, false),
        ("DID_CHANGE_RENEWAL_PREF", Some("DOWNGRADE"), 1759727838450, true),
        ("DID_CHANGE_RENEWAL_PREF", None, 1759727866231, true),
        ("DID_CHANGE_RENEWAL_STATUS", Some("AUTO_RENEW_DISABLED"), 1759727876877, false),
        ("EXPIRED", Some("VOLUNTARY"), 1759727985799, false),
    ] {
        at(&s, signed);
        deliver(&s, &a.notification(kind, sub, signed, Some(&e01))).await;
        let d = details(&s, &master).await;
        assert_eq!(latest_auto(&d), Some(expected), "after {kind}/{sub:?}: {d}");
        assert_eq!(d["items"].as_array().unwrap().len(), 2);
    }
    assert_eq!(count(&s, "SELECT COUNT(*) FROM apple_notification_uuid_history"), 7);
    s.stop().await;
}

async fn refund_applies_to_the_whole_subscription(backend: Backend) {
    // APL-5: the refund names an earlier transaction of the same subscription.
    let a = setup(NO_API, true);
    let s = a.start(backend, 1760591792087).await;
    let master = Key::random();
    let e00 = TxSpec {
        original: "2000001024993299".into(),
        tx_id: "2000001035288486".into(),
        web_order: "2000000114930708".into(),
        product: PRODUCT_3_MONTHS.into(),
        purchase: 1760591774000,
        expires: 1760592314000,
    };
    let earlier = TxSpec {
        tx_id: "2000001032604840".into(),
        web_order: "2000000114930653".into(),
        product: PRODUCT_1_MONTH.into(),
        purchase: 1760335129000,
        expires: 1760335309000,
        ..e00.clone()
    };
    deliver(&s, &a.notification("SUBSCRIBED", Some("RESUBSCRIBE"), 1760591792087, Some(&e00))).await;
    claim(&s, &master, &e00.tx_id).await;
    s.clock.set(1760591941117);
    deliver(&s, &a.notification("CONSUMPTION_REQUEST", None, 1760591941117, Some(&earlier))).await;
    s.clock.set(1760592122788);
    deliver(
        &s,
        &a.notification_with("REFUND", None, 1760592122788, Some(&earlier), |_, tx| {
            tx.as_mut().unwrap()["revocationDate"] = json!(1760591999000_i64);
        }),
    )
    .await;
    assert_eq!(count(&s, "SELECT COUNT(*) FROM payments"), 1);
    let d = details(&s, &master).await;
    assert_eq!(
        (d["items"][0]["status"].as_i64(), d["items"][0]["revoked_unix_ts_ms"].as_i64()),
        (Some(4), Some(1760591999000))
    );
    assert_eq!(d["items"][0]["apple_tx_id"], "2000001035288486");
    s.stop().await;
}

async fn intended_behaviour_of_offers_declines_and_grace(backend: Backend) {
    let a = setup(NO_API, true);
    let s = a.start(backend, START).await;
    let master = Key::random();
    // OFFER_REDEEMED records the offer as a purchase.
    let offer = purchase(PRODUCT_1_MONTH, START - 60_000, START + 30 * DAY_MS);
    deliver(&s, &a.notification("OFFER_REDEEMED", None, START, Some(&offer))).await;
    claim(&s, &master, &offer.tx_id).await;
    // REFUND_DECLINED clears the client's refund request.
    let ts = s.clock.now_ms();
    let r = s.call("/set_payment_refund_requested", &client::set_refund_requested(&master, ts, ts, &offer.tx_id)).await;
    assert_eq!(r["result"]["updated"], true, "{r}");
    assert_eq!(details(&s, &master).await["refund_requested_unix_ts_ms"], ts);
    deliver(&s, &a.notification("REFUND_DECLINED", None, START + 1, Some(&offer))).await;
    let d = details(&s, &master).await;
    assert_eq!(
        (d["refund_requested_unix_ts_ms"].as_i64(), d["items"][0]["refund_requested_unix_ts_ms"].as_i64()),
        (Some(0), Some(0))
    );
    // A billing grace period is stored as its length.
    let grace_end = offer.expires + 16 * DAY_MS;
    // The grace period's end travels in the renewal info, signed here by hand.
    let mut body =
        testkit::notification_body("DID_FAIL_TO_RENEW", Some("GRACE_PERIOD"), &new_uuid(), START + 2, "Sandbox");
    let mut renewal = testkit::renewal_payload(&offer, START + 2, "Sandbox");
    renewal["gracePeriodExpiresDate"] = json!(grace_end);
    body["data"]["signedRenewalInfo"] = json!(a.chain.sign(&renewal));
    let tx = testkit::transaction_payload(&offer, START + 2, "Sandbox");
    deliver(&s, &a.chain.sign_notification(&body, Some(&tx), None)).await;
    let d = details(&s, &master).await;
    assert_eq!(d["items"][0]["grace_period_duration_ms"], 16 * DAY_MS, "{d}");
    assert_eq!(d["expiry_unix_ts_ms"], grace_end);
    s.stop().await;
}

async fn production_deployment_checks_the_app_id(backend: Backend) {
    let a = setup(NO_API, false);
    let s = a.start(backend, START).await;
    let sub = purchase(PRODUCT_1_MONTH, START - 60_000, START + 30 * DAY_MS);
    deliver(&s, &a.notification("SUBSCRIBED", None, START, Some(&sub))).await;
    refused(&s, &a.notification_with("SUBSCRIBED", None, START, Some(&sub), |b, _| b["data"]["appAppleId"] = json!(1)))
        .await;
    assert_eq!(count(&s, "SELECT COUNT(*) FROM payments"), 1);
    s.stop().await;
}

async fn unreadable_or_bad_apple_files_stop_start_up(backend: Backend) {
    use session_pro_backend::{app, config};
    use std::collections::HashMap;
    let a = setup(NO_API, true);
    let pg = (backend == Backend::Postgres).then(crate::pg::ScratchDb::create);
    let (db_key, db_value) = match &pg {
        None => ("SESH_PRO_BACKEND_DB_PATH", a.dir.path().join("b.db").to_string_lossy().into_owned()),
        Some(pg) => ("SESH_PRO_BACKEND_DB_URL", pg.url.clone()),
    };
    let env = |ini: &PathBuf| -> HashMap<String, String> {
        HashMap::from([
            (db_key.to_string(), db_value.clone()),
            ("SESH_PRO_BACKEND_LISTEN".to_string(), "127.0.0.1:0".to_string()),
            ("SESH_PRO_BACKEND_INI_PATH".to_string(), ini.to_string_lossy().into_owned()),
        ])
    };
    let text = std::fs::read_to_string(&a.ini).unwrap();
    let cases = [
        ("TestRoot.cer", "missing.cer", "unable to read the path"),
        ("TestRoot.cer", "pro-backend.ini", "root certificate"),
        ("AuthKey_TESTKEY123.p8", "TestRoot.cer", "PKCS#8"),
    ];
    for (from, to, expected) in cases {
        let ini = a.dir.path().join(format!("bad-{to}.ini"));
        std::fs::write(&ini, text.replace(&format!("/{from}\n"), &format!("/{to}\n"))).unwrap();
        let cfg = config::load_with_ini(Some(&ini), &env(&ini)).unwrap();
        let clock = pro_engine::ManualClock::new(START);
        let e =
            match app::start(&cfg, clock, app::StartOptions { http_workers: 1, pruner: false, ..Default::default() })
                .await
            {
                Ok(_) => panic!("{to}: start-up should fail"),
                Err(e) => e,
            };
        assert!(e.contains(expected), "{to}: {e}");
    }
}

/// Sends a body to the Apple route inside an onion request; returns the inner HTTP code.
async fn via_onion(s: &TestServer, body: &[u8]) -> String {
    use crate::onion_client::{Enc, KeyEncoding, OnionClient, decode_response};
    let c = OnionClient::new(s.state.onion_pubkey, Enc::XChaCha, None);
    let r = s.post("/oxen/v4/lsrpc", c.wrap("POST", "/apple_notifications_v2", Some(body), KeyEncoding::Hex)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let (meta, _) = decode_response(&c.open(&r.body).unwrap());
    let meta: Value = serde_json::from_str(&meta).unwrap();
    meta["code"].to_string()
}

async fn onion_requests_reach_the_route_only_when_enabled(backend: Backend) {
    let plain = TestServer::start(Opts::prod(START).on(backend)).await;
    assert_eq!(via_onion(&plain, b"{}").await, "404");
    plain.stop().await;

    let a = setup(NO_API, true);
    let s = a.start(backend, START).await;
    let sub = purchase(PRODUCT_1_MONTH, START - 60_000, START + 30 * DAY_MS);
    let body = json!({ "signedPayload": a.notification("SUBSCRIBED", None, START, Some(&sub)) });
    assert_eq!(via_onion(&s, &serde_json::to_vec(&body).unwrap()).await, "200");
    assert_eq!(count(&s, "SELECT COUNT(*) FROM payments"), 1);
    assert_eq!(via_onion(&s, b"{}").await, "500");
    s.stop().await;
}

//! Bad input of every kind gets upstream's envelope with the right status and a clear message,
//! never a panic, a hang or HTTP 500, and changes nothing stored.

use hyper::StatusCode;
use pro_engine::db_writer::AddUnredeemedPayment;
use pro_engine::domain::hashes::google_obfuscated_account_id;
use pro_engine::domain::types::{PaymentTx, ProPlan};
use pro_engine::store::rows::NewPayment;
use serde_json::{Value, json};

use crate::client::{self, Key};
use crate::harness::{Backend, Opts, TestServer, on_both_backends};

on_both_backends!(malformed_requests_are_refused_cleanly);

const NOW: i64 = 1767268812345;

/// Every row of every table, to prove a request changed nothing.
fn snapshot(s: &TestServer) -> Vec<String> {
    let mut out = Vec::new();
    for t in s.dump() {
        for row in &t.rows {
            out.push(format!("{}: {}", t.name, row.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join("|")));
        }
    }
    out.sort();
    out
}

fn with(mut v: Value, path: &[&str], new: Option<Value>) -> Value {
    let (last, parents) = path.split_last().unwrap();
    let mut cur = &mut v;
    for p in parents {
        cur = &mut cur[*p];
    }
    match new {
        Some(n) => cur[*last] = n,
        None => {
            cur.as_object_mut().unwrap().remove(*last);
        }
    }
    v
}

struct Case {
    route: &'static str,
    body: Vec<u8>,
    status: i64,
    /// A substring of the first error.
    error: String,
}

fn case(route: &'static str, body: &Value, status: i64, error: &str) -> Case {
    Case { route, body: serde_json::to_vec(body).unwrap(), status, error: error.into() }
}

fn raw(route: &'static str, body: &[u8], status: i64, error: &str) -> Case {
    Case { route, body: body.to_vec(), status, error: error.into() }
}

async fn malformed_requests_are_refused_cleanly(backend: Backend) {
    // The dev key (0xCD) as backend key, so a request can name it as its rotating key.
    let s = TestServer::start(Opts::prod(NOW).on(backend).prepared(None, vec![])).await;
    let (master, rotating) = (Key::seeded(1), Key::seeded(2));
    // Some state the bad requests must not disturb: a claimed payment and an unclaimed one.
    for (token, claim) in [("tok-1", true), ("tok-2", false)] {
        let tx = PaymentTx::google(token, format!("GPA.{token}"));
        s.write(AddUnredeemedPayment(NewPayment {
            tx: tx.clone(),
            plan: ProPlan::OneMonth,
            expiry_unix_ts_ms: NOW + 10 * 86_400_000,
            unredeemed_unix_ts_ms: NOW,
            platform_refund_expiry_unix_ts_ms: 0,
            google_obfuscated_account_id: Some(google_obfuscated_account_id(&master.pk())),
            apple_app_account_token: String::new(),
        }))
        .await
        .unwrap();
        if claim {
            assert_eq!(
                s.call("/add_pro_payment", &client::add_pro_payment(&master, &rotating, &tx)).await["status"],
                0
            );
        }
    }
    let before = snapshot(&s);

    let unclaimed = PaymentTx::google("tok-2", "GPA.tok-2");
    let add = client::add_pro_payment(&master, &rotating, &unclaimed);
    let proof_req = client::generate_pro_proof(&master, &rotating, NOW);
    let det = client::get_pro_details(&master, NOW, 10);
    let refund = client::set_refund_requested(&master, NOW, NOW, "apple-tx");
    let num = |text: &str| -> Value { serde_json::from_str(text).unwrap() };
    let big = num("18446744073709551616");
    let huge = num(&"9".repeat(400));
    let neg_big = num("-18446744073709551617");

    let mut cases = vec![
        // Not JSON, not UTF-8, not an object.
        raw("/add_pro_payment", b"", 2, "JSON failed to be parsed: "),
        raw("/add_pro_payment", b"{\"version\":0} trailing", 2, "JSON failed to be parsed: "),
        raw("/generate_pro_proof", b"{\"version\":\"\xff\"}", 2, "can't decode byte 0xff"),
        raw("/get_pro_details", b"null", 2, "JSON failed to be parsed"),
        raw("/get_pro_revocations", b"[\"version\", \"ticket\"]", 2, "JSON failed to be parsed"),
        raw("/get_pro_revocations", b"\"version\"", 2, "JSON failed to be parsed"),
        raw("/get_pro_revocations", b"7", 2, "JSON failed to be parsed"),
        raw("/get_pro_revocations", b"true", 2, "JSON failed to be parsed"),
        raw("/get_pro_revocations", &[b'['; 100_000], 2, "JSON failed to be parsed"),
        raw("/get_pro_revocations", b"{\"version\":0,\"ticket\":NaN}", 2, "JSON failed to be parsed"),
        // Missing keys and wrong types.
        case(
            "/add_pro_payment",
            &with(add.clone(), &["payment_tx"], None),
            2,
            "Required key \"payment_tx\" is missing",
        ),
        case(
            "/add_pro_payment",
            &with(add.clone(), &["payment_tx"], Some(json!([1]))),
            2,
            "Key \"payment_tx\" value was not an object",
        ),
        case(
            "/add_pro_payment",
            &with(add.clone(), &["master_pkey"], Some(json!(5))),
            2,
            "Key \"master_pkey\" value was not a string: \"<class 'int'>\"",
        ),
        case(
            "/add_pro_payment",
            &with(add.clone(), &["version"], Some(json!(false))),
            2,
            "Key \"version\" value was not an integer: \"<class 'bool'>\"",
        ),
        case(
            "/add_pro_payment",
            &with(add.clone(), &["version"], Some(json!(0.0))),
            2,
            "not an integer: \"<class 'float'>\"",
        ),
        case(
            "/add_pro_payment",
            &with(add.clone(), &["payment_tx", "provider"], Some(json!(true))),
            2,
            "not an integer: \"<class 'bool'>\"",
        ),
        case(
            "/add_pro_payment",
            &with(add.clone(), &["payment_tx", "google_order_id"], None),
            2,
            "Required key \"google_order_id\" is missing",
        ),
        // Unknown provider or version.
        case(
            "/add_pro_payment",
            &with(add.clone(), &["payment_tx", "provider"], Some(json!(9))),
            2,
            "Unrecognised payment provider: 9",
        ),
        case(
            "/add_pro_payment",
            &with(add.clone(), &["payment_tx", "provider"], Some(big.clone())),
            2,
            "Unrecognised payment provider: 18446744073709551616",
        ),
        case(
            "/add_pro_payment",
            &with(add.clone(), &["payment_tx", "provider"], Some(json!(0))),
            2,
            "Nil payment provider is invalid",
        ),
        case(
            "/add_pro_payment",
            &with(add.clone(), &["payment_tx", "provider"], Some(json!(3))),
            2,
            "Bad payment provider given",
        ),
        case("/add_pro_payment", &with(add.clone(), &["version"], Some(json!(1))), 2, "Unrecognised version passed: 1"),
        case(
            "/add_pro_payment",
            &with(add.clone(), &["version"], Some(neg_big.clone())),
            2,
            "Unrecognised version passed: -18446744073709551617",
        ),
        // Hex.
        case(
            "/add_pro_payment",
            &with(add.clone(), &["master_pkey"], Some(json!("ab"))),
            2,
            "Master public key was not 64 characters, was 2 characters",
        ),
        case(
            "/add_pro_payment",
            &with(add.clone(), &["rotating_pkey"], Some(json!(format!("g{}", "0".repeat(63))))),
            2,
            "Rotating public key was not valid hex: non-hexadecimal number found in fromhex() arg at position 0",
        ),
        case(
            "/add_pro_payment",
            &with(add.clone(), &["rotating_sig"], Some(json!("0".repeat(127)))),
            2,
            "Rotating key signature was not 128 characters, was 127 characters",
        ),
        case(
            "/add_pro_payment",
            &with(add.clone(), &["master_sig"], Some(json!(format!("{} ", "0".repeat(127))))),
            2,
            "Master key signature was not valid hex",
        ),
        // Forged signatures and key misuse.
        case(
            "/add_pro_payment",
            &with(add.clone(), &["master_sig"], Some(json!("11".repeat(64)))),
            1,
            "Failed to verify signature from master key 8a88e3dd7409f195fd5\u{2026}21bf3748801b40f6f5c: Signature was forged or corrupt",
        ),
        case(
            "/add_pro_payment",
            &with(add.clone(), &["rotating_sig"], Some(add["master_sig"].clone())),
            1,
            "Failed to verify signature from rotating key",
        ),
        case(
            "/add_pro_payment",
            &client::add_pro_payment(&master, &master, &unclaimed),
            1,
            "Master and rotating key cannot be the same",
        ),
        case(
            "/add_pro_payment",
            &client::add_pro_payment(&master, &Key::seeded(0xCD), &unclaimed),
            1,
            "Internal key error during adding payment",
        ),
        case(
            "/add_pro_payment",
            &with(add.clone(), &["payment_tx", "google_order_id"], Some(json!("GPA.other"))),
            1,
            "Failed to verify signature from master key",
        ),
        // Timestamps.
        case(
            "/generate_pro_proof",
            &client::generate_pro_proof(&master, &rotating, NOW - 70_001),
            2,
            &format!("Nonce timestamp is too far in the past: {} (min {})", NOW - 70_001, NOW - 70_000),
        ),
        case(
            "/generate_pro_proof",
            &client::generate_pro_proof(&master, &rotating, NOW + 70_001),
            2,
            &format!("Nonce timestamp is too far in the future: {} (max {})", NOW + 70_001, NOW + 70_000),
        ),
        case(
            "/generate_pro_proof",
            &with(proof_req.clone(), &["unix_ts_ms"], Some(json!(-1))),
            2,
            "too far in the past: -1",
        ),
        case(
            "/generate_pro_proof",
            &with(proof_req.clone(), &["unix_ts_ms"], Some(huge.clone())),
            2,
            "too far in the future: 999",
        ),
        case(
            "/generate_pro_proof",
            &with(proof_req.clone(), &["rotating_sig"], Some(json!("22".repeat(64)))),
            1,
            "Failed to verify signature from rotating key",
        ),
        case(
            "/get_pro_details",
            &client::get_pro_details(&master, NOW - 70_000, 10),
            2,
            "Timestamp is too old to permit retrieval of payments, delta was 70000.0ms",
        ),
        case("/get_pro_details", &client::get_pro_details(&master, NOW + 70_000, 10), 2, "delta was -70000.0ms"),
        case("/get_pro_details", &with(det.clone(), &["unix_ts_ms"], Some(big.clone())), 2, "delta was -1.844"),
        case("/get_pro_details", &with(det.clone(), &["unix_ts_ms"], Some(huge.clone())), 2, "Timestamp is too old"),
        case("/get_pro_details", &with(det.clone(), &["count"], Some(json!(-1))), 2, "Count was negative: -1"),
        case(
            "/get_pro_details",
            &with(det.clone(), &["count"], Some(json!(4294967296u64))),
            2,
            "Count was larger than the maximum of 4294967295: 4294967296",
        ),
        case(
            "/get_pro_details",
            &with(det.clone(), &["master_sig"], Some(json!("33".repeat(64)))),
            2,
            "Signature failed to be verified",
        ),
        case(
            "/set_payment_refund_requested",
            &with(refund.clone(), &["refund_requested_unix_ts_ms"], Some(json!(-1))),
            2,
            "refund_requested_unix_ts_ms must be between 0 and 9223372036854775807",
        ),
        case(
            "/set_payment_refund_requested",
            &with(refund.clone(), &["refund_requested_unix_ts_ms"], Some(json!(9223372036854775808u64))),
            2,
            "must be between",
        ),
        case(
            "/set_payment_refund_requested",
            &with(refund.clone(), &["payment_tx", "provider"], Some(json!(7))),
            2,
            "Unrecognised payment provider: 7",
        ),
        case(
            "/set_payment_refund_requested",
            &with(refund.clone(), &["payment_tx", "provider"], Some(json!(0))),
            2,
            "Bad payment provider given",
        ),
        case(
            "/set_payment_refund_requested",
            &with(refund.clone(), &["payment_tx", "apple_tx_id"], None),
            2,
            "Required key \"apple_tx_id\" is missing",
        ),
        case(
            "/set_payment_refund_requested",
            &client::set_refund_requested(&master, NOW - 80_000, NOW, "apple-tx"),
            2,
            "Timestamp is too old to permit refund request update, delta was 80000.0ms",
        ),
        case(
            "/set_payment_refund_requested",
            &with(refund.clone(), &["master_sig"], Some(json!("44".repeat(64)))),
            2,
            "Signature failed to be verified",
        ),
        case(
            "/get_pro_revocations",
            &json!({"version": 0}),
            2,
            "Required key \"ticket\" is missing from JSON: dictionary w/ keys: {version}",
        ),
        case(
            "/get_pro_revocations",
            &json!({"version": 0, "ticket": "0"}),
            2,
            "Key \"ticket\" value was not an integer: \"<class 'str'>\"",
        ),
        case("/get_pro_revocations", &json!({"version": 2, "ticket": 0}), 2, "Unrecognised version passed: 2"),
    ];
    // The order of accumulated errors follows upstream's key order.
    cases.push(case(
        "/generate_pro_proof",
        &json!({"master_pkey": 1}),
        2,
        "Required key \"version\" is missing from JSON: dictionary w/ keys: {master_pkey}",
    ));

    for c in &cases {
        let r = s.post(c.route, c.body.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{} {:?}", c.route, String::from_utf8_lossy(&c.body));
        let v = r.json();
        assert_eq!(
            v["status"],
            c.status,
            "{} {:?}: {v}",
            c.route,
            String::from_utf8_lossy(&c.body[..c.body.len().min(200)])
        );
        assert!(v.get("result").is_none());
        let first = v["errors"][0].as_str().unwrap();
        assert!(first.contains(&c.error), "{}: wanted {:?} in {v}", c.route, c.error);
    }
    // Accumulation: every missing key is listed, in order.
    let r = s.call("/generate_pro_proof", &json!({})).await;
    let keys: Vec<&str> =
        r["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().split('"').nth(1).unwrap()).collect();
    assert_eq!(keys, ["version", "master_pkey", "rotating_pkey", "unix_ts_ms", "master_sig", "rotating_sig"]);
    let r = s.call("/add_pro_payment", &json!({})).await;
    assert_eq!(r["errors"].as_array().unwrap().len(), 7);
    assert_eq!(r["errors"][6], "Required key \"provider\" is missing from JSON: dictionary w/ keys: {}");
    let r = s
        .call(
            "/get_pro_details",
            &with(with(det.clone(), &["count"], Some(json!(-1))), &["unix_ts_ms"], Some(json!(1))),
        )
        .await;
    assert_eq!(r["errors"].as_array().unwrap().len(), 2, "count then window: {r}");

    assert_eq!(snapshot(&s), before, "bad requests changed stored data");
    // And the server still answers good requests.
    assert_eq!(s.call("/add_pro_payment", &add).await["status"], 0);
    s.stop().await;
}

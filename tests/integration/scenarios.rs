//! The request-validation, claim, proof, details, revocation, expiry and refund scenarios of
//! upstream's suite (scenarios.md REQ, PAY, PROOF, DET, REV, EXP, RFD), over HTTP.

use pro_engine::db_writer::{AddUnredeemedPayment, RevokeSubscription, RunExpiry, UpdateRenewalInfo};
use pro_engine::domain::hashes::{gen_index_hash, get_pro_details_hash, google_obfuscated_account_id};
use pro_engine::domain::time::{DAY_MS, MONTH_MS, round_up_to_day};
use pro_engine::domain::types::{PaymentProvider, PaymentTx, ProPlan};
use pro_engine::store::rows::{NewPayment, PaymentRow};
use serde_json::{Value, json};

use crate::client::{self, Key};
use crate::harness::{Backend, Opts, TestServer, on_both_backends};

on_both_backends!(
    server_flow_claim_proof_details_revocations,
    stacked_payments_auto_redeem_and_sweeps,
    refund_requests,
    dev_mode_payments_and_options,
);

const START: i64 = 1767268812345; // 2026-01-01 12:00:12.345 UTC

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).unwrap();
    hex::encode(b)
}

fn google(master: &Key, token: &str, order: &str, plan: ProPlan, expiry: i64, unredeemed: i64) -> NewPayment {
    NewPayment {
        tx: PaymentTx::google(token, order),
        plan,
        expiry_unix_ts_ms: expiry,
        unredeemed_unix_ts_ms: unredeemed,
        platform_refund_expiry_unix_ts_ms: 0,
        google_obfuscated_account_id: Some(google_obfuscated_account_id(&master.pk())),
        apple_app_account_token: String::new(),
    }
}

async fn user_gen_index(s: &TestServer, master: &Key) -> u64 {
    let pk = master.pk();
    s.read(move |tx| tx.user(&pk)).await.unwrap().gen_index
}

async fn payment(s: &TestServer, tx: &PaymentTx) -> PaymentRow {
    let tx = tx.clone();
    s.read(move |t| t.find_payment(&tx)).await.unwrap()
}

fn salt(s: &TestServer) -> [u8; 16] {
    s.state.gen_index_salt
}

async fn details(s: &TestServer, master: &Key, ts: i64, count: u32) -> Value {
    s.clock.set(ts);
    s.call("/get_pro_details", &client::get_pro_details(master, ts, count)).await
}

async fn server_flow_claim_proof_details_revocations(backend: Backend) {
    let s = TestServer::start(Opts::prod(START).on(backend)).await;
    let backend = s.state.backend_pubkey;
    let (master, rotating) = (Key::random(), Key::random());

    // PAY-7 / DET-1: an unredeemed payment exists but nothing is claimed yet.
    let token1 = random_hex(32);
    let order1 = format!("DEV.{}", random_hex(8));
    let exp1 = round_up_to_day(START) + 90 * DAY_MS;
    s.write(AddUnredeemedPayment(google(&master, &token1, &order1, ProPlan::OneMonth, exp1, START))).await.unwrap();
    let row = payment(&s, &PaymentTx::google(&token1, &order1)).await;
    assert_eq!((row.master_pkey, row.status, row.unredeemed_unix_ts_ms, row.redeemed_unix_ts_ms), (None, 1, START, 0));
    assert_eq!(s.scalar("SELECT COUNT(*) FROM payments WHERE redeemed_unix_ts_ms IS NULL"), 1);
    let d = details(&s, &master, START, 10_000).await;
    assert_eq!((d["status"].as_i64(), d["result"]["status"].as_i64()), (Some(0), Some(0)));
    assert_eq!(d["result"]["items"], json!([]));

    // PAY-1: claim it.
    let tx1 = PaymentTx::google(&token1, &order1);
    let r = s.call("/add_pro_payment", &client::add_pro_payment(&master, &rotating, &tx1)).await;
    assert_eq!(r["status"], 0, "{r}");
    assert!(r.get("errors").is_none());
    assert_eq!(r["result"]["rotating_pkey"], rotating.hex());
    assert!(client::verify_proof(&r["result"], &backend));
    assert_eq!(r["result"]["expiry_unix_ts_ms"], round_up_to_day(START + MONTH_MS));
    assert_eq!(user_gen_index(&s, &master).await, 0);

    // PROOF-1: a new rotating key; the 30-day cap applies (the payment runs 90 days).
    let rotating2 = Key::random();
    let r = s.call("/generate_pro_proof", &client::generate_pro_proof(&master, &rotating2, START)).await;
    assert_eq!(r["status"], 0, "{r}");
    assert_eq!(r["result"]["rotating_pkey"], rotating2.hex());
    assert!(client::verify_proof(&r["result"], &backend));
    assert_eq!(r["result"]["expiry_unix_ts_ms"], round_up_to_day(START + MONTH_MS));
    assert_eq!(r["result"]["expiry_unix_ts_ms"].as_i64().unwrap() % DAY_MS, 0);

    // PAY-6: a second payment moves the user to a new generation; nothing is revoked.
    let token2 = random_hex(32);
    let order2 = format!("DEV.{}", random_hex(8));
    s.write(AddUnredeemedPayment(google(&master, &token2, &order2, ProPlan::OneMonth, START + MONTH_MS, START)))
        .await
        .unwrap();
    let r = s
        .call("/add_pro_payment", &client::add_pro_payment(&master, &rotating, &PaymentTx::google(&token2, &order2)))
        .await;
    assert_eq!(r["status"], 0, "{r}");
    assert!(client::verify_proof(&r["result"], &backend));
    let pay6_proof_expiry = r["result"]["expiry_unix_ts_ms"].as_i64().unwrap();
    assert_eq!(user_gen_index(&s, &master).await, 1);

    // REV-1
    let r = s.call("/get_pro_revocations", &client::revocations(0)).await;
    assert_eq!(r["result"], json!({"items": [], "retry_in_s": 86400, "ticket": 0, "version": 0}));

    // REV-2: refund of the second payment; generation 1 is listed, the user moves on to 2.
    assert!(
        s.write(RevokeSubscription {
            provider: PaymentProvider::Google,
            subscription_key: token2.clone(),
            revoke_unix_ts_ms: START
        })
        .await
        .unwrap()
    );
    let r = s.call("/get_pro_revocations", &client::revocations(0)).await;
    assert_eq!(r["result"]["ticket"], 1);
    assert_eq!(r["result"]["retry_in_s"], 86400);
    let items = r["result"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["gen_index_hash"], hex::encode(gen_index_hash(1, &salt(&s))));
    assert_eq!(items[0]["effective_unix_ts_ms"], START + DAY_MS);
    let listed_until = items[0]["expiry_unix_ts_ms"].as_i64().unwrap();
    assert!(listed_until >= pay6_proof_expiry, "listed until {listed_until}, a proof runs to {pay6_proof_expiry}");
    assert_eq!(listed_until, exp1, "equals upstream: the surviving payment's expiry (day aligned)");
    assert_eq!(user_gen_index(&s, &master).await, 2);

    // REV-3
    let r = s.call("/get_pro_revocations", &client::revocations(1)).await;
    assert_eq!(r["result"], json!({"items": [], "retry_in_s": 86400, "ticket": 1, "version": 0}));

    // DET-2 .. DET-5
    let d = details(&s, &master, START, 10_000).await;
    let res = &d["result"];
    assert_eq!(res["status"], 1, "{d}");
    assert_eq!(res["payments_total"], 2);
    let items = res["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    // Both were witnessed at START; the newer row comes first.
    assert_eq!(items[0]["google_payment_token"], token2.as_str());
    assert_eq!(items[0]["status"], 4);
    assert_eq!(items[0]["revoked_unix_ts_ms"], START);
    assert_eq!(items[1]["google_order_id"], order1.as_str());
    assert_eq!(items[1]["status"], 2);
    assert_eq!(items[1]["revoked_unix_ts_ms"], 0);
    for key in [
        "payment_provider",
        "expiry_unix_ts_ms",
        "grace_period_duration_ms",
        "platform_refund_expiry_unix_ts_ms",
        "redeemed_unix_ts_ms",
    ] {
        assert!(items[0].get(key).is_some(), "{key}");
    }
    assert_eq!(res["expiry_unix_ts_ms"], exp1, "not renewing: exactly the payment expiry");
    assert_eq!(res["grace_period_duration_ms"], 0);
    let d = details(&s, &master, START, 0).await;
    assert_eq!(d["result"]["items"], json!([]));
    assert_eq!(d["result"]["payments_total"], 2);

    // PROOF-2 / PROOF-3: entitlement up to the deadline including grace, not a ms later.
    assert!(
        s.write(UpdateRenewalInfo {
            payment: tx1.clone(),
            grace_period_duration_ms: Some(10_000),
            auto_renewing: Some(true)
        })
        .await
        .unwrap()
    );
    let deadline = exp1 + 10_000;
    let d = details(&s, &master, START, 1).await;
    assert_eq!(d["result"]["expiry_unix_ts_ms"], deadline);
    assert_eq!(d["result"]["grace_period_duration_ms"], 10_000);
    assert_eq!(d["result"]["auto_renewing"], true);
    s.clock.set(deadline);
    let r = s.call("/generate_pro_proof", &client::generate_pro_proof(&master, &rotating, deadline)).await;
    assert_eq!(r["status"], 0, "{r}");
    assert_eq!(r["result"]["expiry_unix_ts_ms"], deadline);
    assert!(client::verify_proof(&r["result"], &backend));
    s.clock.set(deadline + 1);
    let r = s.call("/generate_pro_proof", &client::generate_pro_proof(&master, &rotating, deadline + 1)).await;
    assert_eq!(r["status"], 1, "{r}");
    assert!(r["errors"][0].as_str().unwrap().contains("entitlement expired"));
    assert!(r.get("result").is_none());
    // Details judged at a time past the deadline: Expired.
    let d = details(&s, &master, deadline + 1, 1).await;
    assert_eq!(d["result"]["status"], 2);

    // PROOF-4: revoking the remaining payment leaves nothing; proofs are refused.
    s.clock.set(START);
    assert!(
        s.write(RevokeSubscription {
            provider: PaymentProvider::Google,
            subscription_key: token1.clone(),
            revoke_unix_ts_ms: START
        })
        .await
        .unwrap()
    );
    let r = s.call("/generate_pro_proof", &client::generate_pro_proof(&master, &rotating, START)).await;
    assert_eq!(r["status"], 1);
    assert!(r["errors"][0].as_str().unwrap().contains("revoked"), "{r}");
    let r = s.call("/get_pro_revocations", &client::revocations(1)).await;
    assert_eq!(r["result"]["ticket"], 2);
    let d = details(&s, &master, START, 10).await;
    assert_eq!(d["result"]["status"], 2, "revoked generation shows as expired");

    // REQ-1: a correctly signed request from 140 s in the future.
    let r = s.call("/get_pro_details", &client::get_pro_details(&master, START + 140_000, 10_000)).await;
    assert_eq!(r["status"], 2);
    assert!(r.get("result").is_none() && !r["errors"].as_array().unwrap().is_empty());

    // REQ-2: the master key signs the digest built with the rotating key.
    let mut req = client::get_pro_details(&master, START, 10_000);
    req["master_sig"] = json!(master.sign(&get_pro_details_hash(0, &rotating.pk(), START as u64, 10_000)));
    let r = s.call("/get_pro_details", &req).await;
    assert_eq!(r, json!({"errors": ["Signature failed to be verified"], "status": 2}));
    s.stop().await;
}

async fn stacked_payments_auto_redeem_and_sweeps(backend: Backend) {
    let s = TestServer::start(Opts::prod(START).on(backend)).await;
    let (master, rotating) = (Key::random(), Key::random());
    // PAY-4: two subscriptions with different tokens, grace 0 (inserted directly).
    let a = google(&master, "tok-a", "GPA.A", ProPlan::OneMonth, round_up_to_day(START) + 30 * DAY_MS, START);
    let b = google(&master, "tok-b", "GPA.B", ProPlan::TwelveMonth, round_up_to_day(START) + 31 * DAY_MS, START);
    for p in [&a, &b] {
        s.write(AddUnredeemedPayment(p.clone())).await.unwrap();
        let r = s.call("/add_pro_payment", &client::add_pro_payment(&master, &rotating, &p.tx)).await;
        assert_eq!(r["status"], 0, "{r}");
    }
    let pk = master.pk();
    let u = s.read(move |tx| tx.user(&pk)).await.unwrap();
    assert_eq!((u.gen_index, u.expiry_unix_ts_ms), (1, b.expiry_unix_ts_ms));
    assert_eq!(s.scalar("SELECT COUNT(*) FROM users"), 1);
    assert_eq!(s.read(|tx| tx.runtime()).await.gen_index, 2);
    let mut rows = Vec::new();
    for p in [&a, &b] {
        let r = payment(&s, &p.tx).await;
        rows.push((r.id, r.plan, r.payment_provider, r.auto_renewing, r.redeemed_unix_ts_ms, r.revoked_unix_ts_ms));
    }
    assert!(rows[0].0 < rows[1].0, "inserted in order: {rows:?}");
    let rows: Vec<_> = rows.into_iter().map(|r| (r.1, r.2, r.3, r.4, r.5)).collect();
    assert_eq!(rows, [(1, 1, true, round_up_to_day(START), 0), (3, 1, true, round_up_to_day(START), 0)]);
    assert_eq!(s.scalar("SELECT COUNT(*) FROM payments WHERE revoked_unix_ts_ms IS NULL"), 2);

    // PAY-5: a later payment with an already-claimed token is claimed automatically.
    let other = Key::random();
    let first = google(&other, "tok-shared", "GPA.S1", ProPlan::OneMonth, START + 40 * DAY_MS, START);
    s.write(AddUnredeemedPayment(first.clone())).await.unwrap();
    assert_eq!(s.call("/add_pro_payment", &client::add_pro_payment(&other, &rotating, &first.tx)).await["status"], 0);
    let renewal = google(&other, "tok-shared", "GPA.S2", ProPlan::TwelveMonth, START + 365 * DAY_MS, START + 1000);
    let out = s.write(AddUnredeemedPayment(renewal.clone())).await.unwrap();
    assert_eq!(out.auto_redeemed.map(|(k, _)| k), Some(other.pk()));
    let r = payment(&s, &renewal.tx).await;
    assert_eq!((r.status, r.redeemed_unix_ts_ms), (2, round_up_to_day(START + 1000)));
    assert_eq!(s.scalar("SELECT COUNT(*) FROM payments WHERE status = 1"), 0);

    // EXP-1: sweep at payment (a)'s expiry exactly (the bound is inclusive).
    let rep = s.write(RunExpiry { job_ts: a.expiry_unix_ts_ms }).await.unwrap();
    assert!(!rep.already_done);
    assert_eq!((rep.payments, rep.revocations, rep.users), (1, 0, 0));
    assert!(s.write(RunExpiry { job_ts: a.expiry_unix_ts_ms }).await.unwrap().already_done);
    // EXP-2: renewal info on (b) only.
    assert!(
        s.write(UpdateRenewalInfo {
            payment: b.tx.clone(),
            grace_period_duration_ms: Some(10_000),
            auto_renewing: Some(false)
        })
        .await
        .unwrap()
    );
    let mut rows = Vec::new();
    for p in [&a, &b] {
        let r = payment(&s, &p.tx).await;
        rows.push((r.auto_renewing, r.grace_period_duration_ms));
    }
    assert_eq!(rows, [(true, 0), (false, 10_000)]);
    let pk = master.pk();
    let u = s.read(move |tx| tx.user(&pk)).await.unwrap();
    assert_eq!((u.auto_renewing, u.grace_period_duration_ms), (false, 10_000));
    s.stop().await;
}

async fn refund_requests(backend: Backend) {
    let s = TestServer::start(Opts::prod(START).on(backend)).await;
    let (master, rotating) = (Key::random(), Key::random());
    // RFD-1: an Apple payment whose three ids are the same random string, claimed, then marked.
    let id = random_hex(16);
    s.write(AddUnredeemedPayment(NewPayment {
        tx: PaymentTx::apple(&id, &id, &id),
        plan: ProPlan::OneMonth,
        expiry_unix_ts_ms: START + MONTH_MS,
        unredeemed_unix_ts_ms: START,
        platform_refund_expiry_unix_ts_ms: START + MONTH_MS,
        google_obfuscated_account_id: None,
        apple_app_account_token: String::new(),
    }))
    .await
    .unwrap();
    let r = s.call("/add_pro_payment", &client::add_pro_payment(&master, &rotating, &PaymentTx::apple_tx(&id))).await;
    assert_eq!(r["status"], 0, "{r}");
    let mut req = client::set_refund_requested(&master, START, START, &id);
    // Extra Apple ids in payment_tx are ignored (only apple_tx_id is hashed).
    req["payment_tx"]["apple_original_tx_id"] = json!(id);
    req["payment_tx"]["apple_web_line_order_id"] = json!(id);
    let r = s.call("/set_payment_refund_requested", &req).await;
    assert_eq!(r, json!({"result": {"updated": true, "version": 0}, "status": 0}));
    let d = details(&s, &master, START, 10).await;
    assert_eq!(d["result"]["refund_requested_unix_ts_ms"], START);
    assert_eq!(d["result"]["items"][0]["refund_requested_unix_ts_ms"], START);

    // Another key cannot touch it; an unknown id is not an error.
    let thief = Key::random();
    let r = s.call("/set_payment_refund_requested", &client::set_refund_requested(&thief, START, 0, &id)).await;
    assert_eq!(r, json!({"result": {"updated": false, "version": 0}, "status": 0}));
    let r =
        s.call("/set_payment_refund_requested", &client::set_refund_requested(&master, START, 5, "no-such-tx")).await;
    assert_eq!(r["result"]["updated"], false);
    assert_eq!(details(&s, &master, START, 10).await["result"]["refund_requested_unix_ts_ms"], START);

    // RFD-2: Google payments are refused before any lookup.
    let mut req = client::set_refund_requested(&master, START, START, "x");
    req["payment_tx"] = json!({"provider": 1, "google_payment_token": "t", "google_order_id": "o"});
    let r = s.call("/set_payment_refund_requested", &req).await;
    assert_eq!(r, json!({"errors": ["Bad payment provider given"], "status": 2}));
    // Clearing works and is reflected.
    let r = s.call("/set_payment_refund_requested", &client::set_refund_requested(&master, START, 0, &id)).await;
    assert_eq!(r["result"]["updated"], true);
    assert_eq!(details(&s, &master, START, 10).await["result"]["refund_requested_unix_ts_ms"], 0);
    s.stop().await;
}

async fn dev_mode_payments_and_options(backend: Backend) {
    let s = TestServer::start(Opts::dev(START).on(backend)).await;
    let (master, rotating) = (Key::random(), Key::random());
    let tx = PaymentTx::google("dev-token", "DEV.order-1");
    let mut req = client::add_pro_payment(&master, &rotating, &tx);
    req["dev_plan"] = json!("twelvemonth");
    req["dev_duration_ms"] = json!(300_000);
    req["dev_auto_renewing"] = json!(true);
    let r = s.call("/add_pro_payment", &req).await;
    assert_eq!(r["status"], 0, "{r}");
    // Dev mode: no day rounding; expiry + 60 s grace.
    assert_eq!(r["result"]["expiry_unix_ts_ms"], START + 300_000 + 60_000);
    let d = details(&s, &master, START, 10).await;
    assert_eq!(d["result"]["items"][0]["plan"], 3);
    assert_eq!(d["result"]["items"][0]["redeemed_unix_ts_ms"], START);
    let r = s.call("/add_pro_payment", &req).await;
    assert_eq!(r["status"], 100);
    let r = s.call("/add_pro_payment", &client::add_pro_payment(&Key::random(), &rotating, &tx)).await;
    assert_eq!(r["status"], 101);

    // Bad dev options accumulate, in order.
    let mut bad = client::add_pro_payment(&master, &rotating, &PaymentTx::apple_tx("DEV.apple-1"));
    bad["dev_plan"] = json!("Nil");
    bad["dev_duration_ms"] = json!(0);
    bad["dev_auto_renewing"] = json!(1);
    let r = s.call("/add_pro_payment", &bad).await;
    assert_eq!(
        r,
        json!({"errors": [
            "dev_plan must be specified as \"OneMonth\", \"ThreeMonth\" or \"TwelveMonth\", received: Nil",
            "dev_duration_ms must be > 0 and <= year ind duration, received: 0.0s",
            "Key \"dev_auto_renewing\" value was not a bool: \"<class 'int'>\""
        ], "status": 2})
    );
    let mut bad = client::add_pro_payment(&master, &rotating, &PaymentTx::apple_tx("DEV.apple-1"));
    bad["dev_plan"] = json!(3);
    bad["dev_duration_ms"] = json!(31_536_000_001i64);
    let r = s.call("/add_pro_payment", &bad).await;
    assert_eq!(r["status"], 2);
    assert!(r["errors"][1].as_str().unwrap().ends_with("received: 31536000.001s"), "{r}");

    // A DEV request with bad signatures fabricates nothing.
    let mut forged = client::add_pro_payment(&master, &rotating, &PaymentTx::apple_tx("DEV.apple-2"));
    forged["master_sig"] = json!("00".repeat(64));
    assert_eq!(s.call("/add_pro_payment", &forged).await["status"], 1);
    assert_eq!(s.scalar("SELECT COUNT(*) FROM payments WHERE apple_tx_id = 'DEV.apple-2'"), 0);
    let ok = s
        .call("/add_pro_payment", &client::add_pro_payment(&master, &rotating, &PaymentTx::apple_tx("DEV.apple-2")))
        .await;
    assert_eq!(ok["status"], 0, "{ok}");
    assert_eq!(ok["result"]["expiry_unix_ts_ms"], START + DAY_MS, "default dev payment: one day, no grace");
    s.stop().await;
}

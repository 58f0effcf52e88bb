//! Google Play end to end: the real app with a fake Google (token endpoint, Pub/Sub and the
//! Android Publisher API) on loopback. The sequences follow upstream's Google tests
//! (scenarios.md §9, platforms.md §5.5), run with platform testing on (10 s grace, 10 s "days"),
//! each on SQLite and on PostgreSQL.

use pro_engine::db_writer::RunExpiry;
use pro_engine::domain::hashes::google_obfuscated_account_id;
use pro_engine::domain::time::{DAY_MS, civil_from_days, round_up_to_day};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::client::{self, Key};
use crate::fake_google::{FakeGoogle, PKG, PRODUCT, wait_until};
use crate::harness::{Backend, DbAt, Opts, TestServer, on_both_backends};
use pro_engine::domain::types::PaymentTx;

on_both_backends!(
    ggl1_purchase_cancel_restart_refund,
    ggl2_grace_renew_cancel_expire,
    ggl3_renew_twice_expire_resubscribe_grace_hold_cancel,
    ggl6_grace_hold_recover,
    ggl7_plan_change_then_renewal,
    ggl11_developer_refund_then_expiry,
    ggl12_refund_of_a_purchase_never_claimed,
    refund_lists_the_revocation_and_refuses_proofs,
    claim_acknowledges_once_and_a_failed_acknowledgement_claims_nothing,
    failing_messages_are_retried_without_blocking_others,
    linked_purchase_before_its_original_is_handled_once_the_original_arrives,
    duplicates_ordering_and_odd_messages,
    acknowledge_refusals_are_ignored,
    restart_in_the_middle_of_a_sequence_loses_nothing,
    an_unusable_key_file_stops_startup,
);

const PURCHASED: i64 = 4;
const RENEWED: i64 = 2;
const RECOVERED: i64 = 1;
const CANCELED: i64 = 3;
const ON_HOLD: i64 = 5;
const IN_GRACE: i64 = 6;
const RESTARTED: i64 = 7;
const REVOKED: i64 = 12;
const EXPIRED: i64 = 13;

const ONE_MONTH: &str = "session-pro-1-month";
const THREE_MONTHS: &str = "session-pro-3-months";
const TEST_GRACE: i64 = 10_000;
const P2D: i64 = 172_800_000;

fn rfc3339(ms: i64) -> String {
    let (y, mo, d) = civil_from_days(ms.div_euclid(DAY_MS));
    let t = ms.rem_euclid(DAY_MS);
    format!("{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", t / 3_600_000, t / 60_000 % 60, t / 1000 % 60, t % 1000)
}

fn rtdn(kind: i64, token: &str, event_ms: i64) -> Value {
    json!({"version": "1.0", "packageName": PKG, "eventTimeMillis": event_ms.to_string(),
        "subscriptionNotification": {"version": "1.0", "notificationType": kind, "purchaseToken": token,
                                     "subscriptionId": PRODUCT}})
}

/// The canned "current state" of a purchase (a subscriptionsv2 resource).
#[derive(Clone, Copy)]
struct Sub<'a> {
    state: &'a str,
    ack: &'a str,
    expiry: i64,
    plan: &'a str,
    order: &'a str,
    linked: Option<&'a str>,
}

impl<'a> Sub<'a> {
    fn new(state: &'a str, expiry: i64, order: &'a str) -> Self {
        Self { state, ack: "PENDING", expiry, plan: ONE_MONTH, order, linked: None }
    }
    fn acked(self) -> Self {
        Self { ack: "ACKNOWLEDGED", ..self }
    }
    fn plan(self, plan: &'a str) -> Self {
        Self { plan, ..self }
    }
    fn linked(self, token: &'a str) -> Self {
        Self { linked: Some(token), ..self }
    }
}

struct Play {
    s: TestServer,
    fake: FakeGoogle,
    master: Key,
    rotating: Key,
    _keys: TempDir,
}

impl Play {
    async fn start(backend: Backend, testing: bool, now: i64) -> Self {
        let fake = FakeGoogle::start().await;
        let keys = TempDir::new().unwrap();
        let key_file = keys.path().join("service-account.json");
        fake.write_key_file(&key_file);
        let mut ini = fake.ini(&key_file);
        if !testing {
            ini = ini.replace("platform_testing_env = 1", "platform_testing_env = 0");
        }
        let s = TestServer::start(Opts { ini: Some(ini), ..Opts::prod(now).on(backend) }).await;
        Self { s, fake, master: Key::seeded(1), rotating: Key::random(), _keys: keys }
    }

    fn account(&self) -> String {
        hex::encode(google_obfuscated_account_id(&self.master.pk()))
    }

    fn sub_json(&self, token: &str, s: Sub<'_>) -> Value {
        let _ = token;
        let mut v = json!({
            "kind": "androidpublisher#subscriptionPurchaseV2",
            "regionCode": "AU",
            "startTime": rfc3339(s.expiry - 300_000),
            "subscriptionState": format!("SUBSCRIPTION_STATE_{}", s.state),
            "acknowledgementState": format!("ACKNOWLEDGEMENT_STATE_{}", s.ack),
            "latestOrderId": s.order,
            "externalAccountIdentifiers": {"obfuscatedExternalAccountId": self.account()},
            "testPurchase": {},
            "lineItems": [{
                "productId": PRODUCT,
                "expiryTime": rfc3339(s.expiry),
                "autoRenewingPlan": {"autoRenewEnabled": s.state == "ACTIVE",
                                     "recurringPrice": {"currencyCode": "AUD", "units": "4", "nanos": 990000000}},
                "offerDetails": {"basePlanId": s.plan, "offerTags": []},
                "latestSuccessfulOrderId": s.order,
            }],
        });
        if let Some(l) = s.linked {
            v["linkedPurchaseToken"] = json!(l);
        }
        if s.state == "EXPIRED" && s.linked.is_none() {
            v["canceledStateContext"] = json!({"systemInitiatedCancellation": {}});
        }
        v
    }

    /// Publishes one notification with the purchase's state as Google reports it, at
    /// `event_ms` on the server clock, and waits until it is handled (acknowledged).
    async fn notify(&self, kind: i64, token: &str, event_ms: i64, sub: Sub<'_>) -> String {
        self.s.clock.set(event_ms);
        self.fake.set_sub(token, self.sub_json(token, sub));
        let (_, ack) = self.fake.publish(&rtdn(kind, token, event_ms));
        self.fake.wait_acked(&ack).await;
        ack
    }

    async fn claim(&self, token: &str, order: &str, at: i64) -> Value {
        self.s.clock.set(at);
        self.s
            .call(
                "/add_pro_payment",
                &client::add_pro_payment(&self.master, &self.rotating, &PaymentTx::google(token, order)),
            )
            .await
    }

    /// Claims successfully and checks the purchase was acknowledged exactly once, with the
    /// configured product id in the path.
    async fn claim_ok(&self, token: &str, order: &str, at: i64) -> Value {
        let r = self.claim(token, order, at).await;
        assert_eq!(r["status"], 0, "{r}");
        assert!(client::verify_proof(&r["result"], &self.s.state.backend_pubkey));
        let acks: Vec<(String, String)> =
            self.fake.state().purchase_acks.iter().filter(|(_, t)| t == token).cloned().collect();
        assert_eq!(acks, vec![(PRODUCT.to_string(), token.to_string())]);
        r
    }

    async fn details(&self, ts: i64) -> Value {
        self.s.clock.set(ts);
        let r = self.s.call("/get_pro_details", &client::get_pro_details(&self.master, ts, 10_000)).await;
        assert_eq!(r["status"], 0, "{r}");
        r["result"].clone()
    }

    async fn sweep(&self, job_ts: i64) {
        self.s.write(RunExpiry { job_ts }).await.unwrap();
    }

    /// The single integer a query answers (SQL both backends accept).
    fn count(&self, sql: &str) -> i64 {
        self.s.scalar(sql)
    }

    /// The owner's stored expiry (the user row must exist).
    async fn user_expiry(&self) -> i64 {
        let pk = self.master.pk();
        self.s.read(move |tx| tx.user(&pk)).await.expect("the user row").expiry_unix_ts_ms
    }
}

/// Checks the top of get_pro_details: user status, auto-renew and the newest item.
#[allow(clippy::too_many_arguments)]
fn expect(d: &Value, user_status: i64, auto: bool, items: usize, item_status: i64, order: &str, grace: i64) {
    assert_eq!(d["status"], user_status, "{d}");
    assert_eq!(d["auto_renewing"], auto, "{d}");
    let list = d["items"].as_array().unwrap();
    assert_eq!(list.len(), items, "{d}");
    assert_eq!(list[0]["status"], item_status, "{d}");
    assert_eq!(list[0]["google_order_id"], order, "{d}");
    assert_eq!(list[0]["grace_period_duration_ms"], grace, "{d}");
    assert_eq!(list[0]["payment_provider"], 1, "{d}");
}

const ACTIVE_U: i64 = 1;
const EXPIRED_U: i64 = 2;
const REDEEMED: i64 = 2;
const EXPIRED_P: i64 = 3;
const REVOKED_P: i64 = 4;

async fn ggl1_purchase_cancel_restart_refund(backend: Backend) {
    let p = Play::start(backend, true, 1759723091078).await;
    let (tok, order, expiry) = ("lgmmicgkbbnbhhnbcnckbmbh.AO-J1Oy", "GPA.3354-3745-5570-25336", 1759723390613);
    p.notify(PURCHASED, tok, 1759723091078, Sub::new("ACTIVE", expiry, order)).await;
    assert_eq!(p.count("SELECT COUNT(*) FROM payments"), 1);
    let row = p.s.read(move |tx| tx.find_payment(&PaymentTx::google(tok, order))).await.expect("the payment");
    let row = (row.status, row.platform_refund_expiry_unix_ts_ms, row.grace_period_duration_ms, row.auto_renewing);
    assert_eq!(row, (1, 1759723091078 + 172_800_000, TEST_GRACE, true));

    let r = p.claim_ok(tok, order, 1759723091078).await;
    assert!(r["result"]["expiry_unix_ts_ms"].as_i64().unwrap() > 0);
    assert_eq!(p.user_expiry().await, expiry + TEST_GRACE);
    assert_eq!(p.count("SELECT redeemed_unix_ts_ms FROM payments"), round_up_to_day(1759723091078));
    let d = p.details(1759723091078).await;
    expect(&d, ACTIVE_U, true, 1, REDEEMED, order, TEST_GRACE);
    assert_eq!(d["items"][0]["platform_refund_expiry_unix_ts_ms"], 1759723091078i64 + 172_800_000);
    assert_eq!(d["items"][0]["expiry_unix_ts_ms"], expiry);

    p.notify(CANCELED, tok, 1759723188437, Sub::new("CANCELED", expiry, order).acked()).await;
    expect(&p.details(1759723188437).await, ACTIVE_U, false, 1, REDEEMED, order, TEST_GRACE);
    p.notify(RESTARTED, tok, 1759723199349, Sub::new("ACTIVE", expiry, order).acked()).await;
    expect(&p.details(1759723199349).await, ACTIVE_U, true, 1, REDEEMED, order, TEST_GRACE);

    let refund = 1759723392088;
    p.notify(REVOKED, tok, refund, Sub::new("EXPIRED", expiry, order).acked()).await;
    let d = p.details(refund + 1).await;
    expect(&d, EXPIRED_U, false, 1, REVOKED_P, order, TEST_GRACE);
    assert_eq!(d["expiry_unix_ts_ms"], refund);
    assert_eq!(d["items"][0]["revoked_unix_ts_ms"], refund);
    assert_eq!(d["items"][0]["expiry_unix_ts_ms"], expiry);
    // The payment ended before the refund's day was over: nothing to list.
    assert_eq!(p.count("SELECT COUNT(*) FROM revocations"), 0);
    // Exactly one acknowledgement over the whole sequence; no user error left.
    assert_eq!(p.fake.purchase_acks_for(tok), 1);
    assert_eq!(p.count("SELECT COUNT(*) FROM user_errors"), 0);
    assert_eq!(p.count("SELECT COUNT(*) FROM google_notification_history WHERE handled AND payload IS NULL"), 4);
    p.s.stop().await;
}

async fn ggl2_grace_renew_cancel_expire(backend: Backend) {
    let p = Play::start(backend, true, 1760056968727).await;
    let (tok, order) = ("jflmajdkgfhcphjhlpfmdjbf.AO-J1Ox", "GPA.3342-0587-1863-44778");
    let (expiry1, expiry2) = (1760057268269, 1760057568269);
    p.notify(PURCHASED, tok, 1760056968727, Sub::new("ACTIVE", expiry1, order)).await;
    p.claim_ok(tok, order, 1760056968727).await;
    expect(&p.details(1760056968727).await, ACTIVE_U, true, 1, REDEEMED, order, TEST_GRACE);

    // Grace period: the paid payment's grace becomes the plan's P2D; its expiry stays.
    let grace_event = 1760057276700;
    p.notify(IN_GRACE, tok, grace_event, Sub::new("IN_GRACE_PERIOD", expiry2, order).acked()).await;
    assert_eq!(p.fake.state().monetization_calls, 1);
    let d = p.details(grace_event).await;
    expect(&d, ACTIVE_U, true, 1, REDEEMED, order, P2D);
    assert_eq!(d["items"][0]["expiry_unix_ts_ms"], expiry1);
    assert_eq!(d["expiry_unix_ts_ms"], expiry1 + P2D);
    p.sweep(grace_event + P2D).await;
    expect(&p.details(grace_event + P2D).await, EXPIRED_U, true, 1, EXPIRED_P, order, P2D);

    // The renewal is claimed automatically for the owner.
    let renewal = format!("{order}..0");
    let renew_event = 1760057286988;
    p.notify(RENEWED, tok, renew_event, Sub::new("ACTIVE", expiry2, &renewal).acked()).await;
    assert_eq!(p.count("SELECT COUNT(*) FROM payments"), 2);
    expect(&p.details(renew_event).await, ACTIVE_U, true, 2, REDEEMED, &renewal, TEST_GRACE);

    p.notify(CANCELED, tok, 1760057334978, Sub::new("CANCELED", expiry2, &renewal).acked()).await;
    let d = p.details(1760057334978).await;
    expect(&d, ACTIVE_U, false, 2, REDEEMED, &renewal, TEST_GRACE);
    assert_eq!(d["items"][0]["redeemed_unix_ts_ms"], round_up_to_day(renew_event));

    let expire_event = 1760057579735;
    p.notify(EXPIRED, tok, expire_event, Sub::new("EXPIRED", expiry2, &renewal).acked()).await;
    expect(&p.details(renew_event).await, ACTIVE_U, false, 2, REDEEMED, &renewal, TEST_GRACE);
    // The daily job runs at most once per job time; an earlier sweep ran at grace + 2 days.
    p.sweep(grace_event + P2D + DAY_MS).await;
    expect(&p.details(expire_event).await, EXPIRED_U, false, 2, EXPIRED_P, &renewal, TEST_GRACE);
    assert_eq!(p.count("SELECT COUNT(*) FROM revocations"), 0);
    assert_eq!(p.fake.purchase_acks_for(tok), 1);
    p.s.stop().await;
}

async fn ggl6_grace_hold_recover(backend: Backend) {
    let t0 = 1760060000000;
    let p = Play::start(backend, true, t0).await;
    let (tok, order) = ("fiamkoegmnpfhjbgkllcjnoj.AO-J1Oz", "GPA.3390-1111-2222-33333");
    let expiry1 = t0 + 300_000;
    p.notify(PURCHASED, tok, t0, Sub::new("ACTIVE", expiry1, order)).await;
    p.claim_ok(tok, order, t0).await;
    let grace_event = expiry1 + 5_000;
    p.notify(IN_GRACE, tok, grace_event, Sub::new("IN_GRACE_PERIOD", expiry1 + 300_000, order).acked()).await;
    expect(&p.details(grace_event).await, ACTIVE_U, true, 1, REDEEMED, order, P2D);
    p.sweep(grace_event + P2D).await;
    expect(&p.details(grace_event + P2D).await, EXPIRED_U, true, 1, EXPIRED_P, order, P2D);
    // Account hold: nothing outlives the event, nothing changes.
    let hold_event = grace_event + 60_000;
    p.notify(ON_HOLD, tok, hold_event, Sub::new("ON_HOLD", expiry1, order).acked()).await;
    expect(&p.details(grace_event + P2D).await, EXPIRED_U, true, 1, EXPIRED_P, order, P2D);
    assert_eq!(p.count("SELECT COUNT(*) FROM payments WHERE status = 4"), 0);
    // Recovery: a new paid period, claimed for the owner.
    let renewal = format!("{order}..0");
    let recover_event = hold_event + 60_000;
    let expiry2 = recover_event + 300_000;
    p.notify(RECOVERED, tok, recover_event, Sub::new("ACTIVE", expiry2, &renewal).acked()).await;
    let d = p.details(recover_event).await;
    expect(&d, ACTIVE_U, true, 2, REDEEMED, &renewal, TEST_GRACE);
    assert_eq!(d["items"][0]["redeemed_unix_ts_ms"], round_up_to_day(recover_event));
    assert_eq!(p.user_expiry().await, expiry2 + TEST_GRACE);
    p.s.stop().await;
}

async fn ggl7_plan_change_then_renewal(backend: Backend) {
    let t0 = 1760070000000;
    let p = Play::start(backend, true, t0).await;
    let (a, order_a) = ("djmaggoldtokenAAAA.AO-J1Oa", "GPA.3300-0000-0000-00001");
    let (b, order_b) = ("nbcpbinewtokenBBBB.AO-J1Ob", "GPA.3300-0000-0000-00002");
    p.notify(PURCHASED, a, t0, Sub::new("ACTIVE", t0 + 300_000, order_a)).await;
    p.claim_ok(a, order_a, t0).await;
    // The upgrade replaces A: A is revoked at the event, B is a new 3-month payment.
    let up = t0 + 60_000;
    p.notify(PURCHASED, b, up, Sub::new("ACTIVE", up + 900_000, order_b).plan(THREE_MONTHS).linked(a)).await;
    let revoked = (
        p.count(&format!("SELECT status FROM payments WHERE google_payment_token = '{a}'")),
        p.count(&format!("SELECT revoked_unix_ts_ms FROM payments WHERE google_payment_token = '{a}'")),
    );
    assert_eq!(revoked, (4, up));
    p.claim_ok(b, order_b, up).await;
    assert_eq!(p.count("SELECT plan FROM payments WHERE google_payment_token = 'nbcpbinewtokenBBBB.AO-J1Ob'"), 2);
    // The replaced purchase then expires: no error, no change.
    let mut expired = p.sub_json(a, Sub::new("EXPIRED", t0 + 300_000, order_a).acked());
    expired["canceledStateContext"] = json!({"replacementCancellation": {}});
    p.s.clock.set(up + 1_000);
    p.fake.set_sub(a, expired);
    let (_, ack) = p.fake.publish(&rtdn(EXPIRED, a, up + 1_000));
    p.fake.wait_acked(&ack).await;
    let renewal = format!("{order_b}..0");
    let renew = up + 900_000;
    p.notify(RENEWED, b, renew, Sub::new("ACTIVE", renew + 900_000, &renewal).plan(THREE_MONTHS).acked()).await;
    assert_eq!(p.count("SELECT COUNT(*) FROM payments"), 3);
    expect(&p.details(renew).await, ACTIVE_U, true, 3, REDEEMED, &renewal, TEST_GRACE);
    assert_eq!(p.count("SELECT COUNT(*) FROM user_errors"), 0);
    p.s.stop().await;
}

async fn ggl12_refund_of_a_purchase_never_claimed(backend: Backend) {
    let t0 = 1760580000000;
    let p = Play::start(backend, true, t0).await;
    let (tok, order) = ("pnogbpneverclaimed.AO-J1Oc", "GPA.3396-6433-5991-21923");
    p.notify(PURCHASED, tok, t0, Sub::new("ACTIVE", t0 + 300_000, order)).await;
    let renewal = format!("{order}..0");
    p.notify(RENEWED, tok, t0 + 300_000, Sub::new("ACTIVE", t0 + 600_000, &renewal)).await;
    let refund = 1760580644292;
    p.notify(REVOKED, tok, refund, Sub::new("EXPIRED", t0 + 600_000, &renewal)).await;
    p.notify(EXPIRED, tok, refund + 2_000, Sub::new("EXPIRED", t0 + 600_000, &renewal)).await;
    assert_eq!(
        p.count(&format!(
            "SELECT COUNT(*) FROM payments WHERE status = 4 AND revoked_unix_ts_ms = {refund} AND master_pkey IS NULL"
        )),
        2
    );
    assert_eq!(p.count("SELECT COUNT(*) FROM payments"), 2);
    assert_eq!(p.count("SELECT COUNT(*) FROM revocations"), 0);
    assert_eq!(p.count("SELECT COUNT(*) FROM users"), 0);
    p.s.stop().await;
}

/// A production-like refund (no testing track): the subscription runs a month, so proofs
/// already handed out would outlive the refund's day; its generation is listed and no new
/// proof is issued. The voided-purchase notification that comes with the refund changes
/// nothing by itself.
async fn refund_lists_the_revocation_and_refuses_proofs(backend: Backend) {
    let t0 = 1767268812345;
    let p = Play::start(backend, false, t0).await;
    let (tok, order) = ("refundtoken.AO-J1Od", "GPA.3301-0000-0000-00009");
    p.notify(PURCHASED, tok, t0, Sub::new("ACTIVE", t0 + 30 * DAY_MS, order)).await;
    assert_eq!(p.count("SELECT grace_period_duration_ms FROM payments"), 3_600_000);
    p.claim_ok(tok, order, t0).await;
    let proof = p.s.call("/generate_pro_proof", &client::generate_pro_proof(&p.master, &Key::random(), t0)).await;
    assert_eq!(proof["status"], 0, "{proof}");

    let refund = t0 + 2 * DAY_MS;
    p.s.clock.set(refund);
    let voided = json!({"version": "1.0", "packageName": PKG, "eventTimeMillis": refund.to_string(),
        "voidedPurchaseNotification": {"purchaseToken": tok, "orderId": order, "productType": 1, "refundType": 1}});
    let (_, ack) = p.fake.publish(&voided);
    p.fake.wait_acked(&ack).await;
    assert_eq!(p.count("SELECT status FROM payments"), 2);

    p.notify(REVOKED, tok, refund, Sub::new("EXPIRED", t0 + 30 * DAY_MS, order).acked()).await;
    let r = p.s.call("/get_pro_revocations", &client::revocations(0)).await;
    assert_eq!(r["result"]["items"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["result"]["ticket"], 1);
    let again = p.s.call("/generate_pro_proof", &client::generate_pro_proof(&p.master, &Key::random(), refund)).await;
    assert_ne!(again["status"], 0, "{again}");
    let d = p.details(refund).await;
    expect(&d, EXPIRED_U, false, 1, REVOKED_P, order, 3_600_000);
    p.s.stop().await;
}

async fn claim_acknowledges_once_and_a_failed_acknowledgement_claims_nothing(backend: Backend) {
    let t0 = 1760070000000;
    let p = Play::start(backend, true, t0).await;
    let (tok, order) = ("acktoken.AO-J1Oe", "GPA.3302-0000-0000-00001");
    p.notify(PURCHASED, tok, t0, Sub::new("ACTIVE", t0 + 300_000, order)).await;

    // Google refuses the acknowledgement: the claim fails with status 1, nothing is claimed.
    p.fake.state().purchase_ack_failure = Some(503);
    let r = p.claim(tok, order, t0).await;
    assert_eq!(r["status"], 1, "{r}");
    assert!(r["errors"][0].as_str().unwrap().contains("acknowledging the purchase to Google failed"), "{r}");
    assert_eq!(p.count("SELECT COUNT(*) FROM payments WHERE status = 1 AND master_pkey IS NULL"), 1);
    assert_eq!(p.count("SELECT COUNT(*) FROM users"), 0);
    // A failing subscriptionsv2 lookup has the same effect.
    p.fake.state().purchase_ack_failure = None;
    p.fake.state().sub_failures.insert(tok.into(), 500);
    assert_eq!(p.claim(tok, order, t0).await["status"], 1);
    assert_eq!(p.count("SELECT COUNT(*) FROM payments WHERE status = 1"), 1);

    // The client retries once Google answers: exactly one more acknowledgement.
    p.fake.state().sub_failures.clear();
    let before = p.fake.purchase_acks_for(tok);
    assert_eq!(p.claim(tok, order, t0).await["status"], 0);
    assert_eq!(p.fake.purchase_acks_for(tok), before + 1);
    assert_eq!(p.count("SELECT COUNT(*) FROM payments WHERE status = 2"), 1);
    // Claiming again: already redeemed, no acknowledgement.
    assert_eq!(p.claim(tok, order, t0).await["status"], 100);
    assert_eq!(p.fake.purchase_acks_for(tok), before + 1);

    // A purchase Google already reports as acknowledged is not acknowledged again; a payment
    // the key cannot claim is never acknowledged.
    let (tok2, order2) = ("acked.AO-J1Of", "GPA.3302-0000-0000-00002");
    p.notify(PURCHASED, tok2, t0 + 1, Sub::new("ACTIVE", t0 + 300_000, order2)).await;
    let other = Key::random();
    let r = p
        .s
        .call("/add_pro_payment", &client::add_pro_payment(&other, &Key::random(), &PaymentTx::google(tok2, order2)))
        .await;
    assert_eq!(r["status"], 101, "{r}");
    assert_eq!(p.fake.purchase_acks_for(tok2), 0);
    let mut state = p.sub_json(tok2, Sub::new("ACTIVE", t0 + 300_000, order2).acked());
    state["acknowledgementState"] = json!("ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED");
    p.fake.set_sub(tok2, state);
    assert_eq!(p.claim(tok2, order2, t0 + 1).await["status"], 0);
    assert_eq!(p.fake.purchase_acks_for(tok2), 0);
    // Every call used a token from the fake's endpoint, fetched once.
    assert_eq!(p.fake.state().token_calls, 1);
    assert_eq!(p.fake.state().unauthorized, 0);
    p.s.stop().await;
}

async fn failing_messages_are_retried_without_blocking_others(backend: Backend) {
    let t0 = 1760070000000;
    let p = Play::start(backend, true, t0).await;
    // The Publisher API fails for one purchase: its notification is retried with backoff,
    // keeps a user error, and is not acknowledged.
    let (bad, bad_order) = ("failing.AO-J1Og", "GPA.3303-0000-0000-00001");
    p.fake.set_sub(bad, p.sub_json(bad, Sub::new("ACTIVE", t0 + 300_000, bad_order)));
    p.fake.state().sub_failures.insert(bad.into(), 500);
    let (_, bad_ack) = p.fake.publish(&rtdn(PURCHASED, bad, t0));
    wait_until(|| p.count("SELECT COUNT(*) FROM user_errors WHERE payment_id = 'failing.AO-J1Og'") == 1, "user error")
        .await;
    assert!(!p.fake.acked(&bad_ack));
    let attempts = p.fake.sub_requests_for(bad);

    // Another purchase goes through meanwhile.
    let (good, good_order) = ("fine.AO-J1Oh", "GPA.3303-0000-0000-00002");
    p.notify(PURCHASED, good, t0 + 1, Sub::new("ACTIVE", t0 + 300_000, good_order)).await;
    // Not yet due: the first retry waits 2 s on the server clock.
    assert_eq!(p.fake.sub_requests_for(bad), attempts);

    // A pause, deferral or schedule change is unsupported: user error, never acknowledged.
    let (paused, paused_order) = ("paused.AO-J1Oi", "GPA.3303-0000-0000-00003");
    p.fake.set_sub(paused, p.sub_json(paused, Sub::new("ACTIVE", t0 + 300_000, paused_order)));
    let (_, paused_ack) = p.fake.publish(&rtdn(10, paused, t0 + 2));
    wait_until(|| p.count("SELECT COUNT(*) FROM user_errors WHERE payment_id = 'paused.AO-J1Oi'") == 1, "paused").await;

    // Time passes: retried (and still failing).
    p.s.clock.advance(3_000);
    wait_until(|| p.fake.sub_requests_for(bad) > attempts, "a retry").await;
    assert!(!p.fake.acked(&bad_ack) && !p.fake.acked(&paused_ack));
    let metrics = p.s.request(hyper::Method::GET, "/metrics", "").await.text();
    assert!(metrics.contains("pro_google_messages_total{event=\"failed\"}"), "{metrics}");
    assert!(metrics.contains("pro_google_messages_total{event=\"retried\"}"), "{metrics}");
    assert!(metrics.contains("pro_google_api_calls_total{api=\"publisher.subscriptionsv2\",outcome=\"error\"}"));
    assert!(metrics.contains("pro_google_api_seconds_count{api=\"pubsub.pull\"}"));
    assert!(metrics.contains("pro_google_token_refreshes_total{outcome=\"ok\"} 1"));
    assert!(metrics.contains("pro_actor_up{actor=\"google_subscriber\"} 1"));

    // Google recovers: the next retry handles it and clears the user error.
    p.fake.state().sub_failures.clear();
    p.s.clock.advance(600_000);
    p.fake.wait_acked(&bad_ack).await;
    assert_eq!(p.count("SELECT COUNT(*) FROM user_errors WHERE payment_id = 'failing.AO-J1Og'"), 0);
    assert_eq!(p.count("SELECT COUNT(*) FROM payments"), 2);
    assert!(!p.fake.acked(&paused_ack));
    p.s.stop().await;
}

async fn linked_purchase_before_its_original_is_handled_once_the_original_arrives(backend: Backend) {
    let t0 = 1760070000000;
    let p = Play::start(backend, true, t0).await;
    let (old, old_order) = ("original.AO-J1Oj", "GPA.3304-0000-0000-00001");
    let (new, new_order) = ("upgrade.AO-J1Ok", "GPA.3304-0000-0000-00002");
    p.s.clock.set(t0 + 10);
    p.fake.set_sub(new, p.sub_json(new, Sub::new("ACTIVE", t0 + 900_000, new_order).plan(THREE_MONTHS).linked(old)));
    let (_, new_ack) = p.fake.publish(&rtdn(PURCHASED, new, t0 + 10));
    wait_until(|| p.count("SELECT COUNT(*) FROM user_errors WHERE payment_id = 'upgrade.AO-J1Ok'") == 1, "error").await;
    assert_eq!(p.count("SELECT COUNT(*) FROM payments"), 0);

    p.notify(PURCHASED, old, t0, Sub::new("ACTIVE", t0 + 300_000, old_order)).await;
    p.s.clock.set(t0 + 10 + 3_000);
    p.fake.wait_acked(&new_ack).await;
    assert_eq!(p.count("SELECT COUNT(*) FROM user_errors"), 0);
    assert_eq!(p.count("SELECT status FROM payments WHERE google_payment_token = 'original.AO-J1Oj'"), 4);
    assert_eq!(p.count("SELECT status FROM payments WHERE google_payment_token = 'upgrade.AO-J1Ok'"), 1);
    p.s.stop().await;
}

async fn duplicates_ordering_and_odd_messages(backend: Backend) {
    let t0 = 1760070000000;
    let p = Play::start(backend, true, t0).await;
    let (tok, order) = ("dup.AO-J1Ol", "GPA.3305-0000-0000-00001");
    let purchase = rtdn(PURCHASED, tok, t0);
    p.s.clock.set(t0 + 5_000);
    p.fake.set_sub(tok, p.sub_json(tok, Sub::new("ACTIVE", t0 + 300_000, order)));
    // A renewal and its purchase in one batch, the renewal first: the purchase is applied
    // first (ordered by event time) and both are acknowledged.
    let renewal = format!("{order}..0");
    let renewal_id = p.fake.new_message_id();
    let purchase_id = p.fake.new_message_id();
    let (m1, ack1) = p.fake.message(renewal_id, rtdn(RENEWED, tok, t0 + 2_000).to_string().as_bytes());
    let (m2, ack2) = p.fake.message(purchase_id, purchase.to_string().as_bytes());
    p.fake.push_batch(vec![m1, m2]);
    p.fake.wait_acked(&ack1).await;
    p.fake.wait_acked(&ack2).await;
    // Both saw the same current state (the purchase's order), so one row, recorded by the
    // purchase (its event time), which went first.
    assert_eq!(p.count("SELECT COUNT(*) FROM payments"), 1);
    assert_eq!(p.count("SELECT unredeemed_unix_ts_ms FROM payments"), t0);

    // The same message delivered again: acknowledged, no second effect.
    let acks_before = p.fake.state().acked.len();
    let again = p.fake.redeliver(purchase_id, &purchase);
    p.fake.wait_acked(&again).await;
    assert_eq!(p.fake.state().acked.len(), acks_before + 1);
    assert_eq!(p.count("SELECT COUNT(*) FROM payments"), 1);

    // A renewal with its own order, then its duplicate.
    p.fake.set_sub(tok, p.sub_json(tok, Sub::new("ACTIVE", t0 + 600_000, &renewal)));
    let r = rtdn(RENEWED, tok, t0 + 300_000);
    let (id, ack) = p.fake.publish(&r);
    p.fake.wait_acked(&ack).await;
    let dup = p.fake.redeliver(id, &r);
    p.fake.wait_acked(&dup).await;
    assert_eq!(p.count("SELECT COUNT(*) FROM payments"), 2);

    // Test, one-time product and voided (one-time, partial) notifications: acknowledged,
    // nothing changes.
    let base = json!({"version": "1.0", "packageName": PKG, "eventTimeMillis": (t0 + 9).to_string()});
    for extra in [
        json!({"testNotification": {"version": "1.0"}}),
        json!({"oneTimeProductNotification": {"version": "1.0", "notificationType": 1, "purchaseToken": "x", "sku": "y"}}),
        json!({"voidedPurchaseNotification": {"purchaseToken": tok, "orderId": order, "productType": 2, "refundType": 2}}),
    ] {
        let mut n = base.clone();
        n.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let (_, ack) = p.fake.publish(&n);
        p.fake.wait_acked(&ack).await;
    }
    // A state that does not match the notification is a handled no-op (PURCHASED while pending).
    let (pend, pend_order) = ("pending.AO-J1Om", "GPA.3305-0000-0000-00002");
    p.notify(PURCHASED, pend, t0 + 10, Sub::new("PENDING", t0 + 300_000, pend_order)).await;
    assert_eq!(p.count("SELECT COUNT(*) FROM payments"), 2);
    assert_eq!(p.count("SELECT COUNT(*) FROM user_errors"), 0);

    // Unreadable messages are neither stored nor acknowledged; the ones after them are.
    let stored_before = p.count("SELECT COUNT(*) FROM google_notification_history");
    let mut wrong_pkg = rtdn(PURCHASED, tok, t0);
    wrong_pkg["packageName"] = json!("com.example.other");
    let mut two = rtdn(PURCHASED, tok, t0);
    two["testNotification"] = json!({"version": "1.0"});
    let mut numeric = rtdn(PURCHASED, tok, t0);
    numeric["eventTimeMillis"] = json!(t0);
    let mut bad_acks = Vec::new();
    let mut batch = Vec::new();
    for data in [
        wrong_pkg.to_string().into_bytes(),
        two.to_string().into_bytes(),
        rtdn(14, tok, t0).to_string().into_bytes(),
        numeric.to_string().into_bytes(),
        b"not json".to_vec(),
    ] {
        let id = p.fake.new_message_id();
        let (m, a) = p.fake.message(id, &data);
        batch.push(m);
        bad_acks.push(a);
    }
    let (mut odd_id, odd_ack) = p.fake.message(1, b"{}");
    odd_id["message"]["messageId"] = json!("not-a-number");
    batch.push(odd_id);
    bad_acks.push(odd_ack);
    let last_id = p.fake.new_message_id();
    let (last, last_ack) = p.fake.message(
        last_id,
        json!({"version": "1.0", "packageName": PKG,
        "eventTimeMillis": t0.to_string(), "testNotification": {"version": "1.0"}})
        .to_string()
        .as_bytes(),
    );
    batch.push(last);
    p.fake.push_batch(batch);
    p.fake.wait_acked(&last_ack).await;
    assert!(bad_acks.iter().all(|a| !p.fake.acked(a)));
    assert_eq!(p.count("SELECT COUNT(*) FROM google_notification_history"), stored_before + 1);
    p.s.stop().await;
}

async fn acknowledge_refusals_are_ignored(backend: Backend) {
    let t0 = 1760070000000;
    let p = Play::start(backend, true, t0).await;
    p.fake.state().ack_invalid_argument = true;
    let (tok, order) = ("ackrefused.AO-J1On", "GPA.3306-0000-0000-00001");
    p.notify(PURCHASED, tok, t0, Sub::new("ACTIVE", t0 + 300_000, order)).await;
    p.fake.state().ack_invalid_argument = false;
    p.notify(CANCELED, tok, t0 + 1_000, Sub::new("CANCELED", t0 + 300_000, order)).await;
    assert_eq!(p.count("SELECT COUNT(*) FROM google_notification_history WHERE handled"), 2);
    p.s.stop().await;
}

/// Messages recorded but not handled when the server stops are handled by the next start,
/// from the history table alone (Pub/Sub does not deliver them again here).
async fn restart_in_the_middle_of_a_sequence_loses_nothing(backend: Backend) {
    let t0 = 1760070000000;
    let fake = FakeGoogle::start().await;
    let keys = TempDir::new().unwrap();
    let key_file = keys.path().join("service-account.json");
    fake.write_key_file(&key_file);
    // The same database for both servers: an SQLite file, or a PostgreSQL database of the
    // test's own.
    let db_dir = TempDir::new().unwrap();
    let db_file = db_dir.path().join("backend.db");
    let pg = (backend == Backend::Postgres).then(crate::pg::ScratchDb::create);
    let db = match &pg {
        None => DbAt::Sqlite(&db_file),
        Some(pg) => DbAt::Postgres(&pg.url),
    };
    let opts = || Opts {
        ini: Some(fake.ini(&key_file)),
        db: pg.is_none().then(|| db_file.clone()),
        attach_pg: pg.as_ref().map(|pg| pg.url.clone()),
        ..Opts::prod(t0).on(backend)
    };
    let master = Key::seeded(1);
    let account = hex::encode(google_obfuscated_account_id(&master.pk()));
    let (tok, order) = ("restart.AO-J1Oo", "GPA.3307-0000-0000-00001");
    let state = |s: &str, order: &str| {
        json!({"kind": "androidpublisher#subscriptionPurchaseV2", "subscriptionState": format!("SUBSCRIPTION_STATE_{s}"),
            "acknowledgementState": "ACKNOWLEDGEMENT_STATE_PENDING", "startTime": rfc3339(t0),
            "externalAccountIdentifiers": {"obfuscatedExternalAccountId": account},
            "lineItems": [{"productId": PRODUCT, "expiryTime": rfc3339(t0 + 300_000),
                "autoRenewingPlan": {"autoRenewEnabled": true}, "offerDetails": {"basePlanId": ONE_MONTH, "offerTags": []},
                "latestSuccessfulOrderId": order}]})
    };

    let first = TestServer::start(opts()).await;
    first.clock.set(t0);
    fake.set_sub(tok, state("ACTIVE", order));
    let (_, ack1) = fake.publish(&rtdn(PURCHASED, tok, t0));
    fake.wait_acked(&ack1).await;
    // The cancellation arrives while Google's API is down: recorded, attempted, not handled.
    first.clock.set(t0 + 1_000);
    fake.set_sub(tok, state("CANCELED", order));
    fake.state().sub_failures.insert(tok.into(), 503);
    let (_, ack2) = fake.publish(&rtdn(CANCELED, tok, t0 + 1_000));
    let count = |sql: &str| db.scalar(sql);
    wait_until(|| count("SELECT COUNT(*) FROM user_errors") == 1, "a failed attempt").await;
    first.stop().await;
    assert_eq!(count("SELECT COUNT(*) FROM google_notification_history WHERE NOT handled AND payload IS NOT NULL"), 1);
    assert_eq!(count("SELECT auto_renewing FROM payments"), 1);
    assert!(!fake.acked(&ack2));

    // Google is back; the new server handles it from the history table alone.
    fake.state().sub_failures.clear();
    let second = TestServer::start(opts()).await;
    wait_until(|| count("SELECT COUNT(*) FROM google_notification_history WHERE handled") == 2, "handled").await;
    assert_eq!(count("SELECT auto_renewing FROM payments"), 0);
    assert_eq!(count("SELECT COUNT(*) FROM payments"), 1);
    assert_eq!(count("SELECT COUNT(*) FROM user_errors"), 0);
    // Its (stale) ack id is sent; Pub/Sub would deliver it again otherwise.
    wait_until(|| fake.acked(&ack2), "the stale ack id sent").await;
    second.stop().await;
}

async fn ggl3_renew_twice_expire_resubscribe_grace_hold_cancel(backend: Backend) {
    let t0 = 1760100000000;
    const MIN: i64 = 60_000;
    let p = Play::start(backend, true, t0).await;
    let (a, order_a) = ("lnddpdoldtoken.AO-J1Op", "GPA.3309-4032-8192-54127");
    p.notify(PURCHASED, a, t0, Sub::new("ACTIVE", t0 + 5 * MIN, order_a)).await;
    p.claim_ok(a, order_a, t0).await;
    let (r0, r1) = (format!("{order_a}..0"), format!("{order_a}..1"));
    p.notify(RENEWED, a, t0 + 5 * MIN, Sub::new("ACTIVE", t0 + 10 * MIN, &r0).acked()).await;
    p.notify(RENEWED, a, t0 + 10 * MIN, Sub::new("ACTIVE", t0 + 15 * MIN, &r1).acked()).await;
    assert_eq!(p.count("SELECT COUNT(*) FROM payments WHERE status = 2"), 3);
    p.notify(CANCELED, a, t0 + 12 * MIN, Sub::new("CANCELED", t0 + 15 * MIN, &r1).acked()).await;
    let d = p.details(t0 + 12 * MIN).await;
    expect(&d, ACTIVE_U, false, 3, REDEEMED, &r1, TEST_GRACE);
    assert_eq!(d["items"][0]["redeemed_unix_ts_ms"], round_up_to_day(t0 + 10 * MIN));
    p.notify(EXPIRED, a, t0 + 16 * MIN, Sub::new("EXPIRED", t0 + 15 * MIN, &r1).acked()).await;
    expect(&p.details(t0 + 12 * MIN).await, ACTIVE_U, false, 3, REDEEMED, &r1, TEST_GRACE);
    p.sweep(t0 + 16 * MIN).await;
    expect(&p.details(t0 + 16 * MIN).await, EXPIRED_U, false, 3, EXPIRED_P, &r1, TEST_GRACE);

    // Resubscribing later gives a new token without a link: the old one is left alone.
    let (b, order_b) = ("jpdllinewtoken.AO-J1Oq", "GPA.3326-4415-9310-90534");
    let tb = t0 + 20 * MIN;
    p.notify(PURCHASED, b, tb, Sub::new("ACTIVE", tb + 5 * MIN, order_b)).await;
    p.claim_ok(b, order_b, tb).await;
    expect(&p.details(tb).await, ACTIVE_U, true, 4, REDEEMED, order_b, TEST_GRACE);
    assert_eq!(p.user_expiry().await, tb + 5 * MIN + TEST_GRACE);
    let grace_event = tb + 5 * MIN + 5_000;
    p.notify(IN_GRACE, b, grace_event, Sub::new("IN_GRACE_PERIOD", tb + 10 * MIN, order_b).acked()).await;
    expect(&p.details(grace_event).await, ACTIVE_U, true, 4, REDEEMED, order_b, P2D);
    p.sweep(grace_event + P2D).await;
    expect(&p.details(grace_event + P2D).await, EXPIRED_U, true, 4, EXPIRED_P, order_b, P2D);
    p.notify(ON_HOLD, b, grace_event + MIN, Sub::new("ON_HOLD", tb + 5 * MIN, order_b).acked()).await;
    expect(&p.details(grace_event + P2D).await, EXPIRED_U, true, 4, EXPIRED_P, order_b, P2D);
    p.notify(CANCELED, b, grace_event + 2 * MIN, Sub::new("EXPIRED", tb + 5 * MIN, order_b).acked()).await;
    p.notify(EXPIRED, b, grace_event + 3 * MIN, Sub::new("EXPIRED", tb + 5 * MIN, order_b).acked()).await;
    expect(&p.details(grace_event + P2D).await, EXPIRED_U, false, 4, EXPIRED_P, order_b, P2D);
    assert_eq!(p.count("SELECT COUNT(*) FROM payments WHERE status = 4"), 0);
    assert_eq!(p.count("SELECT COUNT(*) FROM user_errors"), 0);
    p.s.stop().await;
}

async fn ggl11_developer_refund_then_expiry(backend: Backend) {
    let t0 = 1760069192722;
    let p = Play::start(backend, true, t0).await;
    let (tok, order) = ("aciongrefund.AO-J1Or", "GPA.3311-0000-0000-00001");
    p.notify(PURCHASED, tok, t0, Sub::new("ACTIVE", t0 + 300_000, order)).await;
    p.claim_ok(tok, order, t0).await;
    let refund = 1760069492722;
    p.notify(REVOKED, tok, refund, Sub::new("EXPIRED", t0 + 300_000, order).acked()).await;
    p.notify(EXPIRED, tok, 1760069494987, Sub::new("EXPIRED", t0 + 300_000, order).acked()).await;
    let d = p.details(refund + 1).await;
    expect(&d, EXPIRED_U, false, 1, REVOKED_P, order, TEST_GRACE);
    assert_eq!(d["expiry_unix_ts_ms"], refund);
    assert_eq!(d["items"][0]["revoked_unix_ts_ms"], refund);
    assert_eq!(p.count("SELECT COUNT(*) FROM revocations"), 0);
    assert_eq!(p.count("SELECT COUNT(*) FROM user_errors"), 0);
    p.s.stop().await;
}

async fn an_unusable_key_file_stops_startup(backend: Backend) {
    let fake = FakeGoogle::start().await;
    let dir = TempDir::new().unwrap();
    let ini_path = dir.path().join("backend.ini");
    let pg = (backend == Backend::Postgres).then(crate::pg::ScratchDb::create);
    let database = match &pg {
        None => ("SESH_PRO_BACKEND_DB_PATH", dir.path().join("backend.db").display().to_string()),
        Some(pg) => ("SESH_PRO_BACKEND_DB_URL", pg.url.clone()),
    };
    let env: std::collections::HashMap<String, String> =
        [database, ("SESH_PRO_BACKEND_LISTEN", "127.0.0.1:0".to_string())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
    let clock = pro_engine::ManualClock::new(1760070000000);
    for (file, expected) in
        [(None, "unable to read the credentials file"), (Some("{\"client_email\": 1}"), "cannot be used")]
    {
        let key_file = dir.path().join("key.json");
        let _ = std::fs::remove_file(&key_file);
        if let Some(text) = file {
            std::fs::write(&key_file, text).unwrap();
        }
        std::fs::write(&ini_path, fake.ini(&key_file)).unwrap();
        let cfg = session_pro_backend::config::load_with_ini(Some(&ini_path), &env).unwrap();
        let opts = session_pro_backend::app::StartOptions { pruner: false, ..Default::default() };
        match session_pro_backend::app::start(&cfg, clock.clone(), opts).await {
            Ok(_) => panic!("started without a usable key file"),
            Err(e) => assert!(e.contains(expected), "{e}"),
        }
    }
}

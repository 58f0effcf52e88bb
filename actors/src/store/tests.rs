//! The store operations on real databases, following the worked examples of upstream's backend
//! (backend.md §21), with the fixes of design.md §4 where they differ. Each scenario runs on an
//! in-memory SQLite database and on a fresh PostgreSQL database (`PRO_TEST_PG_URL`, see the
//! README; `PRO_TEST_SKIP_PG=1` skips those variants).

use ed25519_dalek::{Signer, SigningKey};
use rusqlite::Connection;

use super::ops::{self, DevPayment, OpCtx, OpError, ProofEntitlement};
use super::postgres::{self, PgDatabase, PgTarget};
use super::rows::NewPayment;
use super::sqlite::{self, SqliteDatabase, SqliteTarget};
use super::{Database, StoreResult, StoreTx, read_db, schema, write_db};
use crate::domain::hashes::{gen_index_hash, google_obfuscated_account_id, proof_hash};
use crate::domain::time::{DAY_MS, clamp_proof_expiry, round_up_to_day};
use crate::domain::types::{PaymentProvider, PaymentStatus, PaymentTx, ProPlan, RedeemOutcome};

const SALT: [u8; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
const NOW: i64 = 1767268812345;
const GRACE: i64 = 3_600_000;

/// Spec §21.2 step 2: the proof for generation 0, rotating key 0x22…, expiry 1769904000000.
const SIG_GEN0_1769904000000: &str = "3e711e5999340ddcb16ca63581879143fc6d38c141750fe0ca837f476f4e556baa51a56a9e302e54a85ea87d76e250761818fec85fa2747dd6b96a11372d8701";

fn key(seed: u8) -> [u8; 32] {
    SigningKey::from_bytes(&[seed; 32]).verifying_key().to_bytes()
}

fn db() -> Connection {
    let mut c = sqlite::open_writer(&SqliteTarget::memory()).unwrap();
    sqlite::bootstrap(&mut c, [0xCD; 32]).unwrap();
    c.execute("UPDATE runtime SET gen_index_salt = ?", [SALT.as_slice()]).unwrap();
    c
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Sqlite,
    Postgres,
}

/// A fresh PostgreSQL database for one test, dropped afterwards.
struct PgScratch {
    admin: PgTarget,
    name: String,
}

impl Drop for PgScratch {
    fn drop(&mut self) {
        if let Ok(mut c) = self.admin.connect() {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name));
        }
    }
}

/// The tests' PostgreSQL server (as the integration tests find it).
fn pg_admin_url() -> String {
    std::env::var("PRO_TEST_PG_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgresql://pro_test:pro_test@127.0.0.1:5432/postgres".into())
}

fn pg_skipped() -> bool {
    std::env::var("PRO_TEST_SKIP_PG").is_ok_and(|v| v == "1")
}

/// A bootstrapped database of either backend, with the dev key and the fixed salt.
struct TestDb {
    db: Box<dyn Database>,
    _scratch: Option<PgScratch>,
}

fn db_on(kind: Kind) -> TestDb {
    match kind {
        Kind::Sqlite => TestDb { db: Box::new(SqliteDatabase { conn: db() }), _scratch: None },
        Kind::Postgres => {
            let admin_url = pg_admin_url();
            let admin = PgTarget::parse(&admin_url).unwrap();
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).unwrap();
            let name = format!("test_{}", hex::encode(b));
            let mut c = admin.connect().unwrap_or_else(|e| {
                panic!(
                    "PostgreSQL is not usable for the tests at {admin_url}: {e}; start one and set \
                     PRO_TEST_PG_URL (see the README), or set PRO_TEST_SKIP_PG=1 to skip these variants"
                )
            });
            c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
            drop(c);
            let (base, query) = admin_url.split_once('?').map_or((admin_url.as_str(), None), |(b, q)| (b, Some(q)));
            let mut url = format!("{}/{name}", base.rsplit_once('/').map_or(base, |(head, _)| head));
            if let Some(q) = query {
                url = format!("{url}?{q}");
            }
            let scratch = PgScratch { admin, name };
            let mut pg = PgDatabase::open(std::sync::Arc::new(PgTarget::parse(&url).unwrap())).unwrap();
            postgres::bootstrap(pg.client().unwrap(), [0xCD; 32]).unwrap();
            pg.client().unwrap().execute("UPDATE runtime SET gen_index_salt = $1", &[&SALT.as_slice()]).unwrap();
            TestDb { db: Box::new(pg), _scratch: Some(scratch) }
        }
    }
}

/// Declares `sqlite` and `postgres` tests running `name(kind)` on each backend.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name(super::Kind::Sqlite)
            }
            #[test]
            fn postgres() {
                if super::pg_skipped() {
                    eprintln!("PostgreSQL variant skipped (PRO_TEST_SKIP_PG=1)");
                } else {
                    super::$name(super::Kind::Postgres)
                }
            }
        }
    )*};
}

on_both_backends!(
    scenario_a_purchase_redeem_renew_expire_refund,
    scenario_b_rangeproof_clamp_and_stacking,
    scenario_d_revoking_one_of_two_payments_reallocates_once,
    scenario_e_unredeemed_revocation_and_foreign_obfuscated_id,
    scenario_f_renewal_info_refund_requests_user_errors,
    refund_requests_touch_only_the_owners_apple_payment,
    scenario_c_dev_payment_is_fabricated_and_claimed,
    claiming_an_old_cycle_of_an_ended_subscription_fails_without_changes,
    notification_histories,
);

fn w<T>(c: &mut TestDb, f: impl FnOnce(&mut dyn StoreTx) -> Result<T, OpError>) -> T {
    write_db(&mut *c.db, f).unwrap()
}

fn wr<T>(c: &mut TestDb, f: impl FnOnce(&mut dyn StoreTx) -> Result<T, OpError>) -> Result<T, OpError> {
    write_db(&mut *c.db, f)
}

fn rd<T>(c: &mut TestDb, f: impl FnOnce(&mut dyn StoreTx) -> StoreResult<T>) -> StoreResult<T> {
    read_db(&mut *c.db, f)
}

fn prod(now: i64) -> OpCtx {
    OpCtx { now, dev: false }
}

fn google_payment(
    master: &[u8; 32],
    token: &str,
    order: &str,
    plan: ProPlan,
    expiry: i64,
    unredeemed: i64,
) -> NewPayment {
    NewPayment {
        tx: PaymentTx::google(token, order),
        plan,
        expiry_unix_ts_ms: expiry,
        unredeemed_unix_ts_ms: unredeemed,
        platform_refund_expiry_unix_ts_ms: unredeemed + 2 * DAY_MS,
        google_obfuscated_account_id: Some(google_obfuscated_account_id(master)),
        apple_app_account_token: String::new(),
    }
}

/// Records a store payment the way the platform layers do: add, then default grace.
fn witness(c: &mut TestDb, p: &NewPayment, now: i64, grace: i64) -> ops::AddPaymentOutcome {
    w(c, |tx| {
        let out = ops::add_unredeemed_payment(tx, p, prod(now))?;
        ops::update_renewal_info(tx, &p.tx, Some(grace), None)?;
        Ok(out)
    })
}

fn payment(c: &mut TestDb, tx: &PaymentTx) -> super::PaymentRow {
    rd(c, |t| t.find_payment(tx)).unwrap().unwrap()
}

fn user(c: &mut TestDb, m: &[u8; 32]) -> super::UserRow {
    rd(c, |t| t.user(m)).unwrap().unwrap()
}

fn sign_proof(gen_index: u64, rotating: &[u8; 32], expiry: i64) -> String {
    let digest = proof_hash(0, &gen_index_hash(gen_index, &SALT), rotating, expiry as u64);
    hex::encode(SigningKey::from_bytes(&[0xCD; 32]).sign(&digest).to_bytes())
}

#[test]
fn fresh_database_has_the_v9_layout_and_a_runtime_row() {
    let mut c = db();
    let v: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(v, schema::SCHEMA_VERSION);
    let rt = sqlite::read(&mut c, |t| t.runtime()).unwrap();
    assert_eq!((rt.gen_index, rt.revocation_ticket, rt.last_expire_unix_ts_ms), (0, 0, 0));
    assert_eq!(rt.backend_key, [0xCD; 32]);
    // A second bootstrap keeps the existing key and salt.
    sqlite::bootstrap(&mut c, [7; 32]).unwrap();
    let again = sqlite::read(&mut c, |t| t.runtime()).unwrap();
    assert_eq!(again.backend_key, [0xCD; 32]);
    assert_eq!(again.gen_index_salt, SALT);
}

fn scenario_a_purchase_redeem_renew_expire_refund(kind: Kind) {
    let mut c = db_on(kind);
    let (m, r, r2) = (key(0x11), key(0x22), key(0x33));
    assert_eq!(hex::encode(m), "d04ab232742bb4ab3a1368bd4615e4e6d0224ab71a016baf8520a332c9778737");
    let t_u = NOW - 60_000;
    let exp1 = t_u + 30 * DAY_MS;
    let p1 = google_payment(&m, "google-token-A", "GPA.1111-2222-3333-44444", ProPlan::OneMonth, exp1, t_u);
    let out = witness(&mut c, &p1, t_u, GRACE);
    assert!(out.inserted && out.auto_redeemed.is_none());
    let row = payment(&mut c, &p1.tx);
    assert_eq!((row.status, row.plan, row.payment_provider, row.auto_renewing), (1, 1, 1, true));
    assert_eq!(
        (row.expiry_unix_ts_ms, row.grace_period_duration_ms, row.platform_refund_expiry_unix_ts_ms),
        (exp1, GRACE, 1767441552345)
    );
    assert_eq!(row.master_pkey, None);

    // Client claim.
    let claim = PaymentTx::google("google-token-A", "GPA.1111-2222-3333-44444");
    let got = w(&mut c, |tx| ops::claim_for_client(tx, &m, &claim, prod(NOW), None));
    let RedeemOutcome::Success { gen_index, entitled_until } = got else { panic!("{got:?}") };
    assert_eq!((gen_index, entitled_until), (0, exp1 + GRACE));
    let proof_expiry = clamp_proof_expiry(NOW, round_up_to_day(entitled_until));
    assert_eq!(proof_expiry, 1769904000000);
    assert_eq!(
        hex::encode(proof_hash(0, &gen_index_hash(0, &SALT), &r, proof_expiry as u64)),
        "7227753298ce56af3de6d830528699aff1c78c1d143e9dd1f1978012437776d4"
    );
    assert_eq!(sign_proof(0, &r, proof_expiry), SIG_GEN0_1769904000000);
    let row = payment(&mut c, &p1.tx);
    assert_eq!((row.status, row.redeemed_unix_ts_ms, row.master_pkey), (2, 1767312000000, Some(m)));
    let u = user(&mut c, &m);
    assert_eq!(
        (u.gen_index, u.expiry_unix_ts_ms, u.grace_period_duration_ms, u.auto_renewing),
        (0, 1769864352345, GRACE, true)
    );

    // Repeats and unknown payments.
    assert_eq!(w(&mut c, |tx| ops::claim_for_client(tx, &m, &claim, prod(NOW), None)), RedeemOutcome::AlreadyRedeemed);
    assert_eq!(
        w(&mut c, |tx| ops::claim_for_client(tx, &key(0x44), &claim, prod(NOW), None)),
        RedeemOutcome::UnknownPayment
    );
    let nope = PaymentTx::google("nope", "nope");
    assert_eq!(w(&mut c, |tx| ops::claim_for_client(tx, &m, &nope, prod(NOW), None)), RedeemOutcome::UnknownPayment);

    // generate_pro_proof at G1: the user's unrounded expiry is earlier than the 30-day cap.
    let g1 = NOW + 3_600_000;
    let ProofEntitlement::Entitled(u) = rd(&mut c, |t| ops::proof_entitlement(t, &m)).unwrap() else { panic!() };
    let e = clamp_proof_expiry(g1, u.expiry_unix_ts_ms);
    assert_eq!(e, 1769864352345);
    assert_eq!(
        sign_proof(u.gen_index, &r2, e),
        "07fb19154763db307d2b762ce50a58c8a23a36e6b8da139dfb01753dc972fe4f67471c65dfebdc87bb3908e6bdd21f49ae77445eb465cc7c8442e800a0f3f80a"
    );

    // Renewal arrives before expiry: claimed automatically for the owner.
    let t_r = exp1 - 300_000;
    let exp2 = exp1 + 30 * DAY_MS;
    let p2 = google_payment(&m, "google-token-A", "GPA.1111-2222-3333-44444..0", ProPlan::OneMonth, exp2, t_r);
    let out = witness(&mut c, &p2, t_r, GRACE);
    assert_eq!(out.auto_redeemed, Some((m, 1)));
    let row2 = payment(&mut c, &p2.tx);
    assert_eq!(
        (row2.status, row2.redeemed_unix_ts_ms, row2.platform_refund_expiry_unix_ts_ms),
        (2, 1769904000000, 1770033252345)
    );
    let u = user(&mut c, &m);
    assert_eq!((u.gen_index, u.expiry_unix_ts_ms), (1, 1772456352345));
    assert_eq!(rd(&mut c, |t| t.runtime()).unwrap().gen_index, 2);

    // Daily job at the first payment's rounded expiry; running it twice does nothing more.
    let mid = round_up_to_day(exp1);
    let rep = w(&mut c, |tx| Ok(ops::expire(tx, mid)?));
    assert_eq!((rep.already_done, rep.payments, rep.revocations, rep.users), (false, 1, 0, 0));
    assert_eq!(payment(&mut c, &p1.tx).status, 3);
    assert!(w(&mut c, |tx| Ok(ops::expire(tx, mid)?)).already_done);
    assert_eq!(
        sign_proof(1, &r2, 1772456352345),
        "8269f2bccf7f382c55475d9b367b935147dfc845b12270aa6d9a6a67be3eb522f28ffca7fc751d5d2628d6df65e2f1c51293ac813ecb3f3ef51c89bf3b02da0c"
    );

    // Refund: the subscription is revoked, generation 1 is listed until every proof issued
    // under it (the last one runs to 1772456352345) has expired.
    let t_v = 1770000000000;
    assert!(w(&mut c, |tx| ops::revoke_subscription(tx, PaymentProvider::Google, "google-token-A", t_v, t_v)));
    let row2 = payment(&mut c, &p2.tx);
    assert_eq!((row2.status, row2.auto_renewing, row2.revoked_unix_ts_ms), (4, false, t_v));
    assert_eq!(payment(&mut c, &p1.tx).status, 3);
    let u = user(&mut c, &m);
    assert_eq!((u.gen_index, u.expiry_unix_ts_ms, u.auto_renewing), (1, t_v, false));
    let revs = rd(&mut c, |t| t.revocations()).unwrap();
    assert_eq!(revs.len(), 1);
    assert_eq!((revs[0].gen_index, revs[0].creation_unix_ts_ms), (1, t_v));
    assert!(revs[0].expiry_unix_ts_ms >= 1772456352345);
    let rt = rd(&mut c, |t| t.runtime()).unwrap();
    assert_eq!((rt.gen_index, rt.revocation_ticket), (2, 1));
    let item = revs[0].publish(&SALT);
    assert_eq!(hex::encode(item.gen_index_hash), "cf83a8629f1c54cb3c4f777ef161546dba932d88446afefc82627b65bf1eadf9");
    assert_eq!(item.effective_unix_ts_ms, t_v + DAY_MS);
    assert_eq!(rd(&mut c, |t| ops::proof_entitlement(t, &m)).unwrap(), ProofEntitlement::Revoked);

    // A repeated refund is idempotent (upstream aborted on a UNIQUE violation).
    assert!(w(&mut c, |tx| ops::revoke_subscription(
        tx,
        PaymentProvider::Google,
        "google-token-A",
        t_v + 5000,
        t_v + 5000
    )));
    assert_eq!(rd(&mut c, |t| t.runtime()).unwrap().revocation_ticket, 1);
    assert_eq!(rd(&mut c, |t| t.revocations()).unwrap(), revs);

    // The next midnight does not prune it early (upstream did).
    let rep = w(&mut c, |tx| Ok(ops::expire(tx, round_up_to_day(t_v))?));
    assert_eq!(rep.revocations, 0);
    assert_eq!(rd(&mut c, |t| t.revocations()).unwrap().len(), 1);

    // Details after the refund.
    let d = rd(&mut c, |t| ops::pro_details(t, &m, 10)).unwrap();
    assert_eq!(d.payments_total, 2);
    assert!(d.user_generation_revoked);
    assert_eq!(d.items.iter().map(|p| p.status).collect::<Vec<_>>(), [4, 3]);
}

fn scenario_b_rangeproof_clamp_and_stacking(kind: Kind) {
    let mut c = db_on(kind);
    let (m, r) = (key(0x11), key(0x22));
    let rp = NewPayment {
        tx: PaymentTx::rangeproof("RP-0001"),
        plan: ProPlan::TwelveMonth,
        expiry_unix_ts_ms: NOW + 365 * DAY_MS,
        unredeemed_unix_ts_ms: NOW,
        platform_refund_expiry_unix_ts_ms: 0,
        google_obfuscated_account_id: None,
        apple_app_account_token: String::new(),
    };
    let got = w(&mut c, |tx| {
        ops::add_unredeemed_payment(tx, &rp, prod(NOW))?;
        ops::redeem(tx, &m, &rp.tx, round_up_to_day(NOW))
    });
    assert_eq!(got, RedeemOutcome::Success { gen_index: 0, entitled_until: 1798804812345 });
    let expiry = clamp_proof_expiry(NOW, round_up_to_day(1798804812345));
    assert_eq!(expiry, 1769904000000);
    // The same inputs as scenario A's first proof, so the same signature (spec §21.6).
    assert_eq!(sign_proof(0, &r, expiry), SIG_GEN0_1769904000000);
    let row = payment(&mut c, &rp.tx);
    assert_eq!((row.auto_renewing, row.grace_period_duration_ms, row.redeemed_unix_ts_ms), (false, 0, 1767312000000));

    let g = google_payment(&m, "google-token-B", "GPA.9999-8888-7777-66666", ProPlan::OneMonth, NOW + 30 * DAY_MS, NOW);
    witness(&mut c, &g, NOW, GRACE);
    let got = w(&mut c, |tx| ops::claim_for_client(tx, &m, &g.tx, prod(NOW), None));
    let RedeemOutcome::Success { gen_index: 1, .. } = got else { panic!("{got:?}") };
    assert_eq!(
        sign_proof(1, &r, 1769904000000),
        "91ded3b25ee81b6a380341ce0284a245fe85e97186187aa5f4f4ced44c40f1d58b274456a765a82ccbe8dab244ce39d3025ff5edae4adda1fb64e05279aff000"
    );
    let u = user(&mut c, &m);
    assert_eq!((u.expiry_unix_ts_ms, u.grace_period_duration_ms, u.auto_renewing), (1798804812345, 0, false));
}

fn scenario_d_revoking_one_of_two_payments_reallocates_once(kind: Kind) {
    let mut c = db_on(kind);
    let m = key(0x11);
    let rp = NewPayment {
        tx: PaymentTx::rangeproof("RP-D"),
        plan: ProPlan::ThreeMonth,
        expiry_unix_ts_ms: 1775044812345,
        unredeemed_unix_ts_ms: NOW,
        platform_refund_expiry_unix_ts_ms: 0,
        google_obfuscated_account_id: None,
        apple_app_account_token: String::new(),
    };
    let g = google_payment(&m, "tok-D", "GPA.D", ProPlan::OneMonth, 1769860812345, NOW);
    w(&mut c, |tx| {
        ops::add_unredeemed_payment(tx, &rp, prod(NOW))?;
        ops::redeem(tx, &m, &rp.tx, round_up_to_day(NOW))?;
        ops::add_unredeemed_payment(tx, &g, prod(NOW))?;
        ops::redeem(tx, &m, &g.tx, round_up_to_day(NOW))
    });
    assert_eq!(user(&mut c, &m).gen_index, 1);
    let t1 = NOW + 5 * DAY_MS;
    assert!(w(&mut c, |tx| ops::revoke_subscription(tx, PaymentProvider::Google, "tok-D", t1, t1)));
    let revs = rd(&mut c, |t| t.revocations()).unwrap();
    assert_eq!((revs[0].gen_index, revs[0].creation_unix_ts_ms, revs[0].expiry_unix_ts_ms), (1, t1, 1775044812345));
    let u = user(&mut c, &m);
    assert_eq!((u.gen_index, u.expiry_unix_ts_ms), (2, 1775044812345));

    // Upstream revoked the fresh generation 2 on a repeated event; we change nothing.
    let t2 = NOW + 6 * DAY_MS;
    assert!(w(&mut c, |tx| ops::revoke_subscription(tx, PaymentProvider::Google, "tok-D", t2, t2)));
    assert_eq!(user(&mut c, &m).gen_index, 2);
    let rt = rd(&mut c, |t| t.runtime()).unwrap();
    assert_eq!((rt.gen_index, rt.revocation_ticket), (3, 1));
}

fn scenario_e_unredeemed_revocation_and_foreign_obfuscated_id(kind: Kind) {
    let mut c = db_on(kind);
    let m = key(0x11);
    let g = google_payment(&m, "tok-E", "GPA.E", ProPlan::OneMonth, NOW + DAY_MS, NOW);
    witness(&mut c, &g, NOW, GRACE);
    assert!(w(&mut c, |tx| ops::revoke_subscription(tx, PaymentProvider::Google, "tok-E", NOW, NOW)));
    let row = payment(&mut c, &g.tx);
    assert_eq!((row.status, row.master_pkey, row.revoked_unix_ts_ms), (4, None, NOW));
    assert_eq!(rd(&mut c, |t| t.revocation_ticket()).unwrap(), 0);
    assert_eq!(w(&mut c, |tx| ops::redeem(tx, &m, &g.tx, NOW)), RedeemOutcome::UnknownPayment);

    // A Google purchase made for another account cannot be claimed.
    let other = google_payment(&key(0x55), "tok-F", "GPA.F", ProPlan::OneMonth, NOW + DAY_MS, NOW);
    witness(&mut c, &other, NOW, GRACE);
    assert_eq!(w(&mut c, |tx| ops::redeem(tx, &m, &other.tx, NOW)), RedeemOutcome::UnknownPayment);
    assert_eq!(payment(&mut c, &other.tx).status, 1);
}

fn scenario_f_renewal_info_refund_requests_user_errors(kind: Kind) {
    let mut c = db_on(kind);
    let m = key(0x11);
    let g = google_payment(&m, "tok-G", "GPA.G", ProPlan::OneMonth, 1769860812345, NOW);
    witness(&mut c, &g, NOW, GRACE);
    w(&mut c, |tx| ops::redeem(tx, &m, &g.tx, round_up_to_day(NOW)));
    assert_eq!(user(&mut c, &m).expiry_unix_ts_ms, 1769864412345);
    assert!(w(&mut c, |tx| ops::update_renewal_info(tx, &g.tx, None, Some(false))));
    let u = user(&mut c, &m);
    assert_eq!((u.expiry_unix_ts_ms, u.auto_renewing, u.gen_index), (1769860812345, false, 0));
    // Unknown payments match nothing.
    assert!(!w(&mut c, |tx| ops::update_renewal_info(tx, &PaymentTx::google("x", "y"), Some(1), None)));

    // Re-adding the same identity keeps the original row.
    let mut again = g.clone();
    again.expiry_unix_ts_ms += 1;
    assert!(!witness(&mut c, &again, NOW, GRACE).inserted);
    assert_eq!(payment(&mut c, &g.tx).expiry_unix_ts_ms, 1769860812345);

    // User errors: first timestamp kept, reported for the owner.
    assert!(w(&mut c, |tx| Ok(tx.add_user_error(PaymentProvider::Google, "tok-G", 5)?)));
    assert!(!w(&mut c, |tx| Ok(tx.add_user_error(PaymentProvider::Google, "tok-G", 6)?)));
    assert!(rd(&mut c, |t| ops::pro_details(t, &m, 0)).unwrap().error_report);
    let d = rd(&mut c, |t| ops::pro_details(t, &m, 0)).unwrap();
    assert!(d.items.is_empty());
    assert_eq!(d.payments_total, 1);
    let nobody = rd(&mut c, |t| ops::pro_details(t, &key(0x77), 10)).unwrap();
    assert_eq!((nobody.user, nobody.payments_total, nobody.error_report), (None, 0, false));
    assert!(w(&mut c, |tx| Ok(tx.delete_user_error(PaymentProvider::Google, "tok-G")?)));
    assert!(!rd(&mut c, |t| ops::pro_details(t, &m, 0)).unwrap().error_report);
}

fn refund_requests_touch_only_the_owners_apple_payment(kind: Kind) {
    let mut c = db_on(kind);
    let (m, thief) = (key(0x11), key(0x12));
    let a = NewPayment {
        tx: PaymentTx::apple("orig-1", "tx-1", "web-1"),
        plan: ProPlan::OneMonth,
        expiry_unix_ts_ms: NOW + 30 * DAY_MS,
        unredeemed_unix_ts_ms: NOW,
        platform_refund_expiry_unix_ts_ms: NOW + 30 * DAY_MS,
        google_obfuscated_account_id: None,
        apple_app_account_token: String::new(),
    };
    witness(&mut c, &a, NOW, GRACE);
    let claim = PaymentTx::apple_tx("tx-1");
    // Before it is claimed nobody owns it: a client cannot mark it (upstream crashed here).
    assert!(!w(&mut c, |tx| ops::set_refund_requested(tx, &claim, 9, Some(&m))));
    w(&mut c, |tx| ops::redeem(tx, &m, &claim, round_up_to_day(NOW)));
    assert!(!w(&mut c, |tx| ops::set_refund_requested(tx, &claim, 9, Some(&thief))));
    assert!(w(&mut c, |tx| ops::set_refund_requested(tx, &claim, 1234, Some(&m))));
    assert!(w(&mut c, |tx| ops::set_refund_requested(tx, &claim, 1234, Some(&m))), "same value still matches");
    assert_eq!(payment(&mut c, &a.tx).refund_requested_unix_ts_ms, 1234);
    assert_eq!(user(&mut c, &m).refund_requested_unix_ts_ms, 1234);
    // The platform (no owner) clears it.
    assert!(w(&mut c, |tx| ops::set_refund_requested(tx, &claim, 0, None)));
    assert_eq!(user(&mut c, &m).refund_requested_unix_ts_ms, 0);
}

fn scenario_c_dev_payment_is_fabricated_and_claimed(kind: Kind) {
    let mut c = db_on(kind);
    let (m, r) = (key(0x11), key(0x22));
    let tx = PaymentTx::google("dev-token", "DEV.order-1");
    let dev = DevPayment { plan: ProPlan::OneMonth, duration_ms: 300_000, auto_renewing: true };
    let ctx = OpCtx { now: NOW, dev: true };
    let got = w(&mut c, |t| ops::claim_for_client(t, &m, &tx, ctx, Some(dev)));
    assert_eq!(got, RedeemOutcome::Success { gen_index: 0, entitled_until: 1767269172345 });
    assert_eq!(clamp_proof_expiry(NOW, 1767269172345), 1767269172345);
    assert_eq!(
        sign_proof(0, &r, 1767269172345),
        "94622aaf749de73db4138060a8b078a237375517977f82a4a34a9ef363de93a9612359012bd27163f0b852350045b19367d2c45c401beddfc229bcf9352eb402"
    );
    let row = payment(&mut c, &tx);
    assert_eq!(
        (
            row.unredeemed_unix_ts_ms,
            row.redeemed_unix_ts_ms,
            row.expiry_unix_ts_ms,
            row.grace_period_duration_ms,
            row.auto_renewing
        ),
        (NOW, NOW, 1767269112345, 60_000, true)
    );
    // Repeating with other dev options changes nothing and answers "already redeemed".
    let other = DevPayment { plan: ProPlan::TwelveMonth, duration_ms: 1, auto_renewing: false };
    assert_eq!(w(&mut c, |t| ops::claim_for_client(t, &m, &tx, ctx, Some(other))), RedeemOutcome::AlreadyRedeemed);
    let row2 = payment(&mut c, &tx);
    assert_eq!(row2, row);
    // Outside dev mode nothing is fabricated.
    let tx2 = PaymentTx::google("dev-token-2", "DEV.order-2");
    assert_eq!(w(&mut c, |t| ops::claim_for_client(t, &m, &tx2, prod(NOW), Some(dev))), RedeemOutcome::UnknownPayment);
}

fn claiming_an_old_cycle_of_an_ended_subscription_fails_without_changes(kind: Kind) {
    let mut c = db_on(kind);
    let m = key(0x11);
    // The first cycle is still unclaimed; its renewal was claimed and has since expired.
    let old = google_payment(&m, "tok-H", "GPA.H", ProPlan::OneMonth, NOW + 10 * DAY_MS, NOW);
    let new = google_payment(&m, "tok-H", "GPA.H..0", ProPlan::OneMonth, NOW + 2 * DAY_MS, NOW + 1);
    witness(&mut c, &old, NOW, GRACE);
    witness(&mut c, &new, NOW, GRACE);
    w(&mut c, |tx| ops::redeem(tx, &m, &new.tx, NOW));
    w(&mut c, |tx| Ok(ops::expire(tx, NOW + 3 * DAY_MS)?));
    let before = rd(&mut c, |t| t.runtime()).unwrap().gen_index;
    let r = wr(&mut c, |tx| ops::redeem(tx, &m, &old.tx, NOW));
    // The lineage is represented by the newer, expired cycle, so nothing usable remains.
    assert!(matches!(r, Err(OpError::Rejected(_))), "{r:?}");
    assert_eq!(payment(&mut c, &old.tx).status, PaymentStatus::Unredeemed.as_i64(), "rolled back");
    assert_eq!(rd(&mut c, |t| t.runtime()).unwrap().gen_index, before);
}

#[test]
fn migrates_a_version_5_database() {
    let mut c = Connection::open_in_memory().unwrap();
    c.execute_batch(
        "CREATE TABLE payments (id INTEGER PRIMARY KEY NOT NULL, master_pkey BLOB, status INTEGER NOT NULL,
            plan INTEGER NOT NULL, payment_provider INTEGER NOT NULL, auto_renewing INTEGER NOT NULL,
            unredeemed_unix_ts_ms INTEGER NOT NULL, redeemed_unix_ts_ms INTEGER, expiry_unix_ts_ms INTEGER NOT NULL,
            grace_period_duration_ms INTEGER, platform_refund_expiry_unix_ts_ms INTEGER NOT NULL, revoked_unix_ts_ms INTEGER,
            apple_original_tx_id TEXT, apple_tx_id TEXT, apple_web_line_order_tx_id TEXT, google_payment_token TEXT,
            google_order_id TEXT, refund_requested_unix_ts_ms INTEGER NOT NULL);
         CREATE TABLE users (master_pkey BLOB PRIMARY KEY NOT NULL, gen_index INTEGER NOT NULL,
            expiry_unix_ts_ms INTEGER NOT NULL, grace_period_duration_ms INTEGER NOT NULL, auto_renewing INTEGER NOT NULL,
            refund_requested_unix_ts_ms INTEGER NOT NULL);
         CREATE TABLE revocations (gen_index INTEGER PRIMARY KEY NOT NULL, expiry_unix_ts_ms INTEGER NOT NULL);
         PRAGMA user_version = 5;",
    )
    .unwrap();
    let m = key(0x11);
    c.execute("INSERT INTO users VALUES (?, 0, 5, 0, 0, 0)", [m.as_slice()]).unwrap();
    let rep = sqlite::bootstrap(&mut c, [1; 32]).unwrap();
    assert_eq!(rep.from_version, 5);
    assert_eq!(rep.migrations.len(), 4);
    let v: i64 = c.pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(v, 9);
    let acct: Vec<u8> = c.query_row("SELECT google_obfuscated_account_id FROM users", [], |r| r.get(0)).unwrap();
    assert_eq!(acct, google_obfuscated_account_id(&m));
    // Columns are appended, so decoding by name still works.
    c.execute("INSERT INTO revocations (gen_index, expiry_unix_ts_ms) VALUES (3, 10)", []).unwrap();
    let revs = sqlite::read(&mut c, |t| t.revocations()).unwrap();
    assert_eq!((revs[0].gen_index, revs[0].creation_unix_ts_ms, revs[0].expiry_unix_ts_ms), (3, 0, 10));
}

#[test]
fn refuses_unknown_schema_versions() {
    let mut c = Connection::open_in_memory().unwrap();
    c.execute_batch("PRAGMA user_version = 3;").unwrap();
    assert!(sqlite::bootstrap(&mut c, [1; 32]).is_err());
    let n: i64 = c.query_row("SELECT COUNT(*) FROM sqlite_master WHERE name = 'runtime'", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 0, "a failed bootstrap leaves nothing behind");
}

fn notification_histories(kind: Kind) {
    let mut c = db_on(kind);
    assert!(!rd(&mut c, |t| t.apple_uuid_seen("u-1")).unwrap());
    w(&mut c, |t| Ok(t.add_apple_uuid("u-1", 100)?));
    assert!(rd(&mut c, |t| t.apple_uuid_seen("u-1")).unwrap());
    w(&mut c, |t| Ok(t.set_apple_checkpoint(55)?));
    assert_eq!(rd(&mut c, |t| t.runtime()).unwrap().apple_notification_checkpoint_unix_ts_ms, 55);

    assert!(w(&mut c, |t| Ok(t.add_google_notification(7, Some("{}"), 200)?)));
    assert!(!w(&mut c, |t| Ok(t.add_google_notification(7, Some("{}"), 200)?)), "recorded once");
    w(&mut c, |t| Ok(t.add_google_notification(8, None, 300)?));
    assert_eq!(
        rd(&mut c, |t| t.unhandled_google_notifications()).unwrap(),
        [(7, Some("{}".to_string()), 200), (8, None, 300)]
    );
    assert!(w(&mut c, |t| Ok(t.mark_google_notification_handled(7)?)));
    assert_eq!(rd(&mut c, |t| t.google_notification_handled(7)).unwrap(), Some(true));
    assert_eq!(rd(&mut c, |t| t.google_notification_handled(9)).unwrap(), None);
    // The daily job prunes handled Google rows and expired Apple UUIDs only.
    let rep = w(&mut c, |t| Ok(ops::expire(t, 1000)?));
    assert_eq!((rep.apple_notifications, rep.google_notifications), (1, 1));
    assert_eq!(rd(&mut c, |t| t.unhandled_google_notifications()).unwrap().len(), 1);
    assert!(w(&mut c, |t| Ok(t.delete_google_notification(8)?)));
    assert!(w(&mut c, |t| Ok(t.add_user_error(PaymentProvider::Apple, "orig", 1)?)));
    assert!(rd(&mut c, |t| t.has_user_error(PaymentProvider::Apple, "orig")).unwrap());
    assert!(!rd(&mut c, |t| t.has_user_error(PaymentProvider::Google, "orig")).unwrap());
}

/// A connection of its own to the database behind `c` (PostgreSQL only).
fn second_connection(c: &TestDb) -> PgDatabase {
    let scratch = c._scratch.as_ref().unwrap();
    let url = pg_admin_url();
    let base = url.split_once('?').map_or(url.as_str(), |(b, _)| b);
    let url = format!("{}/{}", base.rsplit_once('/').map_or(base, |(h, _)| h), scratch.name);
    PgDatabase::open(std::sync::Arc::new(PgTarget::parse(&url).unwrap())).unwrap()
}

#[test]
fn postgres_bootstrap_is_idempotent_and_all_or_nothing() {
    if pg_skipped() {
        return;
    }
    let mut c = db_on(Kind::Postgres);
    let mut other = second_connection(&c);
    let rt = rd(&mut c, |t| t.runtime()).unwrap();
    assert_eq!((rt.gen_index, rt.revocation_ticket, rt.backend_key), (0, 0, [0xCD; 32]));
    // Again: the key and salt stay, nothing is migrated.
    let rep = postgres::bootstrap(other.client().unwrap(), [7; 32]).unwrap();
    assert_eq!((rep.from_version, rep.created_runtime, rep.migrations.len()), (9, false, 0));
    let again = rd(&mut c, |t| t.runtime()).unwrap();
    assert_eq!((again.backend_key, again.gen_index_salt), ([0xCD; 32], SALT));
    let version: i32 = other.client().unwrap().query_one("SELECT version FROM schema_version", &[]).unwrap().get(0);
    assert_eq!(version, 9);

    // An unknown version is refused and the failed bootstrap changes nothing.
    let cl = other.client().unwrap();
    cl.batch_execute("UPDATE schema_version SET version = 3; DROP TABLE user_errors").unwrap();
    assert!(postgres::bootstrap(cl, [7; 32]).is_err());
    let user_errors: bool = cl.query_one("SELECT to_regclass('user_errors') IS NOT NULL", &[]).unwrap().get(0);
    assert!(!user_errors, "the tables the failed bootstrap created were rolled back");
}

#[test]
fn postgres_ticket_triggers_count_inserts_and_deletes_only() {
    if pg_skipped() {
        return;
    }
    let mut c = db_on(Kind::Postgres);
    let row =
        crate::domain::revocation::RevocationRow { gen_index: 5, creation_unix_ts_ms: NOW, expiry_unix_ts_ms: NOW };
    w(&mut c, |t| Ok(t.insert_revocation(&row)?));
    w(&mut c, |t| {
        Ok(t.update_revocation(&crate::domain::revocation::RevocationRow { expiry_unix_ts_ms: NOW + 1, ..row })?)
    });
    assert_eq!(rd(&mut c, |t| t.revocation_ticket()).unwrap(), 1, "an update does not count");
    assert!(w(&mut c, |t| Ok(t.delete_revocation(5)?)));
    assert_eq!(rd(&mut c, |t| t.revocation_ticket()).unwrap(), 2);
}

#[test]
fn postgres_connections_racing_for_generations_and_the_daily_job() {
    if pg_skipped() {
        return;
    }
    let c = db_on(Kind::Postgres);
    // Four connections, as four servers would hold: every generation is handed out once and
    // each day's job is claimed once.
    let results: Vec<(Vec<u64>, Vec<i64>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let mut db = second_connection(&c);
                s.spawn(move || {
                    let mut gens = Vec::new();
                    let mut days = Vec::new();
                    for day in 1..=25i64 {
                        gens.push(write_db(&mut db, |t| Ok(t.take_gen_index()?)).unwrap());
                        if write_db(&mut db, |t| Ok(ops::expire(t, day * DAY_MS)?)).unwrap().already_done {
                            continue;
                        }
                        days.push(day);
                    }
                    (gens, days)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut gens: Vec<u64> = results.iter().flat_map(|r| r.0.clone()).collect();
    gens.sort();
    assert_eq!(gens, (0..100).collect::<Vec<u64>>());
    let mut days: Vec<i64> = results.iter().flat_map(|r| r.1.clone()).collect();
    days.sort();
    days.dedup();
    let runs: usize = results.iter().map(|r| r.1.len()).sum();
    assert_eq!(runs, days.len(), "no day ran twice: {results:?}");
}

/// The PostgreSQL report queries group exactly as SQLite's do, on data made by the store's own
/// operations across day, ISO-week, month and year boundaries.
#[test]
fn reports_agree_across_backends() {
    use crate::domain::time::days_from_civil;
    use crate::reports::{ReportKind, generate, render_csv};
    if pg_skipped() {
        eprintln!("PostgreSQL comparison skipped (PRO_TEST_SKIP_PG=1)");
        return;
    }
    let fill = |c: &mut TestDb| {
        let at = |y, m, d, h: i64| days_from_civil(y, m, d) * DAY_MS + h * 3_600_000;
        let starts =
            [at(2026, 12, 28, 9), at(2027, 1, 1, 8), at(2027, 1, 3, 23), at(2027, 1, 4, 0), at(2027, 2, 1, 12)];
        for (i, start) in starts.into_iter().enumerate() {
            let m = key(0x60 + i as u8);
            let p = google_payment(
                &m,
                &format!("rep-{i}"),
                &format!("GPA.rep-{i}"),
                ProPlan::OneMonth,
                start + 30 * DAY_MS,
                start,
            );
            w(c, |tx| {
                ops::add_unredeemed_payment(tx, &p, prod(start))?;
                if i != 4 {
                    ops::redeem(tx, &m, &p.tx, round_up_to_day(start))?;
                }
                if i == 1 {
                    ops::update_renewal_info(tx, &p.tx, None, Some(false))?;
                }
                if i == 2 {
                    ops::revoke_subscription(
                        tx,
                        PaymentProvider::Google,
                        &p.tx.google_payment_token,
                        start + DAY_MS,
                        start + DAY_MS,
                    )?;
                }
                Ok(())
            });
        }
    };
    let (mut lite, mut pg) = (db_on(Kind::Sqlite), db_on(Kind::Postgres));
    fill(&mut lite);
    fill(&mut pg);
    for kind in [ReportKind::Daily, ReportKind::Weekly, ReportKind::Monthly] {
        let a = render_csv(&rd(&mut lite, |tx| generate(tx, kind, 50)).unwrap());
        let b = render_csv(&rd(&mut pg, |tx| generate(tx, kind, 50)).unwrap());
        assert_eq!(a, b, "{kind:?}");
        assert!(a.lines().count() > 3, "{a}");
    }
}

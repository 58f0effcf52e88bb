//! Apple verification against Apple's own signed vectors and a generated chain (platforms.md
//! §5.2), the dispatch table (§2.5 with the §2.10 fixes), and the handler sequences of
//! scenarios.md APL-1..5 on a real SQLite store.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rusqlite::Connection;
use serde_json::{Value, json};

use super::dispatch::{DEDUPE_WINDOW_MS, Effect, HandleAppleNotification, Handled, effects, identity};
use super::notification::{
    AppleEnum, Notification, NotificationType, RenewalInfo, Subtype, Transaction, TransactionReason, TransactionType,
    verify_and_decode,
};
use super::testkit::{
    self, APP_APPLE_ID, BUNDLE_ID, ChainSpec, PRODUCT_1_MONTH, PRODUCT_3_MONTHS, TestChain, TxSpec, Y2000, Y2049,
};
use super::verify::{Environment, Verifier, VerifyError, VerifyStatus};
use crate::db_writer::WriteCommand;
use crate::domain::time::{DEFAULT_GRACE_MS, round_up_to_day};
use crate::domain::types::{PaymentTx, ProPlan};
use crate::store::ops::{self, OpCtx, OpError};
use crate::store::sqlite::{self, SqliteTarget};

// ---------------------------------------------------------------------------------------------
// Apple's genuine vectors
// ---------------------------------------------------------------------------------------------

const VECTOR_NAMES: [&str; 14] = [
    "01-did_renew",
    "02-subscribed-resubscribe",
    "03-did_change_renewal_status-auto_renew_disabled",
    "04-expired-voluntary",
    "05-subscribed-resubscribe",
    "06-did_change_renewal_pref-upgrade",
    "07-did_change_renewal_status-auto_renew_disabled",
    "08-did_change_renewal_pref-downgrade",
    "09-did_change_renewal_pref",
    "10-did_change_renewal_status-auto_renew_disabled",
    "11-expired-voluntary",
    "12-subscribed-resubscribe",
    "13-consumption_request",
    "14-refund",
];

fn data_file(name: &str) -> Vec<u8> {
    let path = format!("{}/../tests/data/apple/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn vector(i: usize) -> String {
    String::from_utf8(data_file(&format!("{}.jws", VECTOR_NAMES[i - 1]))).unwrap().trim().to_string()
}

fn g3() -> Vec<(String, Vec<u8>)> {
    vec![("AppleRootCA-G3.cer".into(), data_file("AppleRootCA-G3.cer"))]
}

fn payload_of(jws: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(jws.split('.').nth(1).unwrap()).unwrap()).unwrap()
}

fn signed_date(jws: &str) -> i64 {
    payload_of(jws)["signedDate"].as_i64().unwrap()
}

fn apple_sandbox() -> Verifier {
    Verifier::new(&g3(), Environment::Sandbox, BUNDLE_ID, None).unwrap()
}

fn status<T: std::fmt::Debug>(r: Result<T, VerifyError>) -> VerifyStatus {
    r.expect_err("verification should fail").status
}

#[test]
fn every_genuine_vector_verifies_at_its_signed_date() {
    let v = apple_sandbox();
    for i in 1..=14 {
        let jws = vector(i);
        let n = verify_and_decode(&v, &jws, signed_date(&jws) + 60_000).unwrap_or_else(|e| panic!("#{i}: {e}"));
        let tx = n.transaction.as_ref().unwrap();
        assert_eq!(tx.original_transaction_id.as_deref(), Some("2000001024993299"), "#{i}");
        assert!(n.renewal.is_some(), "#{i}");
        assert_eq!(n.renewal.as_ref().unwrap().grace_period_expires_date, None);
        assert_eq!(tx.app_account_token, None);
    }
}

#[test]
fn genuine_vector_fields_decode() {
    let n = verify_and_decode(&apple_sandbox(), &vector(1), 1759302518835).unwrap();
    assert_eq!(n.notification_type, Some(AppleEnum::Known(NotificationType::DidRenew)));
    assert_eq!(n.subtype, None);
    assert!(n.uuid.as_deref().unwrap().starts_with("1a7cdc3d"));
    assert_eq!(n.signed_date, Some(1759302518835));
    let tx = n.transaction.unwrap();
    assert_eq!(tx.transaction_id.as_deref(), Some("2000001024998954"));
    assert_eq!(tx.web_order_line_item_id.as_deref(), Some("2000000113755461"));
    assert_eq!(tx.product_id.as_deref(), Some("com.getsession.org.pro_sub"));
    assert_eq!((tx.purchase_date, tx.expires_date), (Some(1759302552000), Some(1759302732000)));
    assert_eq!(tx.tx_type, Some(AppleEnum::Known(TransactionType::AutoRenewable)));
    assert_eq!(tx.transaction_reason, Some(AppleEnum::Known(TransactionReason::Renewal)));

    let refund = verify_and_decode(&apple_sandbox(), &vector(14), 1760592122788).unwrap();
    assert_eq!(refund.notification_type, Some(AppleEnum::Known(NotificationType::Refund)));
    assert_eq!(refund.transaction.unwrap().revocation_date, Some(1760591999000));
    let n6 = verify_and_decode(&apple_sandbox(), &vector(6), 1759727799810).unwrap();
    assert_eq!(n6.subtype, Some(AppleEnum::Known(Subtype::Upgrade)));
}

#[test]
fn genuine_vectors_are_refused_for_another_deployment() {
    let jws = vector(1);
    let at = signed_date(&jws);
    let prod = Verifier::new(&g3(), Environment::Production, BUNDLE_ID, Some(APP_APPLE_ID)).unwrap();
    assert_eq!(status(prod.verify_notification(&jws, at)), VerifyStatus::InvalidEnvironment);
    // The app id is checked before the environment.
    let other_app = Verifier::new(&g3(), Environment::Production, BUNDLE_ID, Some(42)).unwrap();
    assert_eq!(status(other_app.verify_notification(&jws, at)), VerifyStatus::InvalidAppIdentifier);
    // Outside Production the app id is not compared.
    let sandbox_other_app = Verifier::new(&g3(), Environment::Sandbox, BUNDLE_ID, Some(42)).unwrap();
    assert!(sandbox_other_app.verify_notification(&jws, at).is_ok());

    let other_bundle = Verifier::new(&g3(), Environment::Sandbox, "org.example.other", None).unwrap();
    assert_eq!(status(other_bundle.verify_notification(&jws, at)), VerifyStatus::InvalidAppIdentifier);
    let body = payload_of(&jws);
    let tx_jws = body["data"]["signedTransactionInfo"].as_str().unwrap();
    let renewal_jws = body["data"]["signedRenewalInfo"].as_str().unwrap();
    assert_eq!(status(other_bundle.verify_transaction(tx_jws, at)), VerifyStatus::InvalidAppIdentifier);
    assert!(other_bundle.verify_renewal_info(renewal_jws, at).is_ok(), "renewal info carries no bundle id check");

    let test_root = Verifier::new(
        &[("test root".into(), TestChain::apple_like(1).root_der)],
        Environment::Sandbox,
        BUNDLE_ID,
        None,
    )
    .unwrap();
    assert_eq!(status(test_root.verify_notification(&jws, at)), VerifyStatus::VerificationFailure);
    let no_roots = Verifier::new(&[], Environment::Sandbox, BUNDLE_ID, None).unwrap();
    assert_eq!(status(no_roots.verify_notification(&jws, at)), VerifyStatus::InvalidCertificate);
}

#[test]
fn genuine_vectors_and_the_clock() {
    let v = apple_sandbox();
    let jws = vector(14);
    // Checked at the payload's own date, so a clock long after the leaf expired still passes.
    let y2030 = 1_893_456_000_000;
    assert!(v.verify_notification(&jws, y2030).is_ok());
    // A payload dated further ahead of our clock than the allowance is refused.
    let at = signed_date(&jws);
    assert_eq!(status(v.verify_notification(&jws, at - 5 * 60_000 - 1)), VerifyStatus::VerificationFailure);
    assert!(v.verify_notification(&jws, at - 5 * 60_000).is_ok());
}

#[test]
fn production_needs_an_app_id_and_roots_must_parse() {
    assert!(Verifier::new(&g3(), Environment::Production, BUNDLE_ID, None).is_err());
    let e = Verifier::new(&[("junk.cer".into(), b"not a certificate".to_vec())], Environment::Sandbox, BUNDLE_ID, None)
        .err()
        .unwrap();
    assert!(e.contains("junk.cer"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// A generated chain: every refusal
// ---------------------------------------------------------------------------------------------

const NOW: i64 = 1_760_000_000_000;

fn verifier_for(chains: &[&TestChain], env: Environment, app: Option<i64>) -> Verifier {
    let roots: Vec<(String, Vec<u8>)> =
        chains.iter().enumerate().map(|(i, c)| (format!("root{i}"), c.root_der.clone())).collect();
    Verifier::new(&roots, env, BUNDLE_ID, app).unwrap()
}

fn test_body(signed: i64) -> Value {
    testkit::notification_body("TEST", None, "b0a0c3a8-0000-4000-8000-000000000001", signed, "Sandbox")
}

fn chain_with(f: impl FnOnce(&mut ChainSpec)) -> TestChain {
    let mut spec = ChainSpec::apple_like(1);
    f(&mut spec);
    TestChain::new(&spec)
}

/// Checks a token (signed by `_chain`) against a verifier trusting only the standard test root.
fn check(_chain: &TestChain, jws: &str) -> Result<(), VerifyStatus> {
    let v = verifier_for(&[&TestChain::apple_like(1)], Environment::Sandbox, None);
    v.verify_notification(jws, NOW).map(drop).map_err(|e| e.status)
}

/// Why a token (signed by a chain under the standard test root's trust) is refused.
fn why(jws: &str) -> String {
    let v = verifier_for(&[&TestChain::apple_like(1)], Environment::Sandbox, None);
    v.verify_notification(jws, NOW).expect_err("should be refused").detail
}

fn with_header(chain: &TestChain, edit: impl FnOnce(&mut Value)) -> String {
    let mut h = chain.header();
    edit(&mut h);
    chain.sign_with_header(&h, &test_body(NOW))
}

#[test]
fn case01_happy_path() {
    let c = TestChain::apple_like(1);
    assert_eq!(check(&c, &c.sign(&test_body(NOW))), Ok(()));
}

#[test]
fn case02_only_es256() {
    let c = TestChain::apple_like(1);
    for alg in [json!("RS256"), json!("none"), json!("ES384"), json!("es256"), Value::Null] {
        let jws = with_header(&c, |h| h["alg"] = alg.clone());
        assert_eq!(check(&c, &jws), Err(VerifyStatus::VerificationFailure), "{alg}");
    }
    let jws = with_header(&c, |h| {
        h.as_object_mut().unwrap().remove("alg");
    });
    assert_eq!(check(&c, &jws), Err(VerifyStatus::VerificationFailure));
}

#[test]
fn case03_exactly_three_certificates() {
    let c = TestChain::apple_like(1);
    let x5c = c.x5c();
    let two = with_header(&c, |h| h["x5c"] = json!([x5c[0], x5c[1]]));
    assert_eq!(check(&c, &two), Err(VerifyStatus::InvalidChainLength));
    let four = with_header(&c, |h| h["x5c"] = json!([x5c[0], x5c[1], x5c[2], x5c[2]]));
    assert_eq!(check(&c, &four), Err(VerifyStatus::InvalidChainLength));
    let one = with_header(&c, |h| h["x5c"] = json!([x5c[0]]));
    assert_eq!(check(&c, &one), Err(VerifyStatus::InvalidChainLength));
}

#[test]
fn case04_undecodable_certificates() {
    let c = TestChain::apple_like(1);
    let x5c = c.x5c();
    for bad in [json!("%%%not base64%%%"), json!(STANDARD.encode(b"not DER at all")), json!(17)] {
        let leaf = with_header(&c, |h| h["x5c"] = json!([bad.clone(), x5c[1], x5c[2]]));
        assert_eq!(check(&c, &leaf), Err(VerifyStatus::InvalidCertificate), "{bad}");
        let inter = with_header(&c, |h| h["x5c"] = json!([x5c[0], bad.clone(), x5c[2]]));
        assert_eq!(check(&c, &inter), Err(VerifyStatus::InvalidCertificate), "{bad}");
    }
    // The third entry is never read.
    let junk_root = with_header(&c, |h| h["x5c"] = json!([x5c[0], x5c[1], "%%%"]));
    assert_eq!(check(&c, &junk_root), Ok(()));
}

#[test]
fn case05_apple_marker_extensions_are_required() {
    let no_leaf_oid = chain_with(|s| s.leaf.marker = None);
    assert_eq!(check(&no_leaf_oid, &no_leaf_oid.sign(&test_body(NOW))), Err(VerifyStatus::VerificationFailure));
    assert!(why(&no_leaf_oid.sign(&test_body(NOW))).contains("App Store marker"));
    let no_int_oid = chain_with(|s| s.intermediate.marker = None);
    assert_eq!(check(&no_int_oid, &no_int_oid.sign(&test_body(NOW))), Err(VerifyStatus::VerificationFailure));
    assert!(why(&no_int_oid.sign(&test_body(NOW))).contains("WWDR marker"));
    // Swapped markers are not enough either.
    let swapped = chain_with(|s| {
        s.leaf.marker = Some(super::verify::INTERMEDIATE_MARKER_OID);
        s.intermediate.marker = Some(super::verify::LEAF_MARKER_OID);
    });
    assert_eq!(check(&swapped, &swapped.sign(&test_body(NOW))), Err(VerifyStatus::VerificationFailure));
}

#[test]
fn case06_only_configured_roots_are_trusted() {
    let trusted = TestChain::apple_like(1);
    // An attacker's own complete chain, root included in x5c.
    let attacker = TestChain::apple_like(2);
    assert_eq!(check(&trusted, &attacker.sign(&test_body(NOW))), Err(VerifyStatus::VerificationFailure));
    // The attacker copies our root's name (and places our root in x5c[2]): the signature of
    // the intermediate still does not verify.
    let spec = ChainSpec::apple_like(1);
    let mut forged = ChainSpec::apple_like(2);
    forged.root.subject = spec.root.subject.clone();
    forged.intermediate.subject = spec.intermediate.subject.clone();
    forged.leaf.subject = spec.leaf.subject.clone();
    let forged = TestChain::new(&forged);
    let mut header = forged.header();
    header["x5c"][2] = json!(STANDARD.encode(&trusted.root_der));
    let jws = forged.sign_with_header(&header, &test_body(NOW));
    assert_eq!(check(&trusted, &jws), Err(VerifyStatus::VerificationFailure));
    assert!(why(&jws).contains("signature does not verify with a configured root"), "{}", why(&jws));
    assert!(why(&attacker.sign(&test_body(NOW))).contains("not issued by a configured root"));
    // Trusting both roots accepts both chains.
    let both = verifier_for(&[&trusted, &attacker], Environment::Sandbox, None);
    assert!(both.verify_notification(&attacker.sign(&test_body(NOW)), NOW).is_ok());
}

#[test]
fn case07_validity_at_the_signed_date() {
    let at_s = NOW / 1000;
    let expired = chain_with(|s| s.leaf.not_after = at_s - 1);
    assert_eq!(check(&expired, &expired.sign(&test_body(NOW))), Err(VerifyStatus::VerificationFailure));
    assert!(why(&expired.sign(&test_body(NOW))).contains("signing certificate had expired"));
    // The same leaf is fine for a payload signed while it was valid.
    let v = verifier_for(&[&TestChain::apple_like(1)], Environment::Sandbox, None);
    assert!(v.verify_notification(&expired.sign(&test_body(NOW - 2000)), NOW).is_ok());
    let not_yet = chain_with(|s| s.leaf.not_before = at_s + 1);
    assert_eq!(check(&not_yet, &not_yet.sign(&test_body(NOW))), Err(VerifyStatus::VerificationFailure));
    let old_intermediate = chain_with(|s| s.intermediate.not_after = at_s - 1);
    assert_eq!(
        check(&old_intermediate, &old_intermediate.sign(&test_body(NOW))),
        Err(VerifyStatus::VerificationFailure)
    );
    // Without signedDate the clock decides.
    let mut undated = test_body(NOW);
    undated.as_object_mut().unwrap().remove("signedDate");
    let v = verifier_for(&[&expired], Environment::Sandbox, None);
    assert_eq!(status(v.decode_signed(&expired.sign(&undated), NOW)), VerifyStatus::VerificationFailure);
    assert!(v.decode_signed(&expired.sign(&undated), NOW - 2000).is_ok());
}

#[test]
fn case08_any_changed_byte_breaks_the_signature() {
    let c = TestChain::apple_like(1);
    let jws = c.sign(&test_body(NOW));
    let parts: Vec<&str> = jws.split('.').collect();
    // A flipped signature bit.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    sig[10] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(&sig));
    assert_eq!(check(&c, &flipped), Err(VerifyStatus::VerificationFailure));
    assert!(why(&flipped).contains("JWS signature does not verify"));
    // A changed payload under the old signature.
    let mut body = test_body(NOW);
    body["notificationUUID"] = json!("b0a0c3a8-0000-4000-8000-000000000002");
    let payload = URL_SAFE_NO_PAD.encode(body.to_string());
    assert_eq!(check(&c, &format!("{}.{payload}.{}", parts[0], parts[2])), Err(VerifyStatus::VerificationFailure));
    // A changed header (an extra key) under the old signature.
    let mut h = c.header();
    h["kid"] = json!("x");
    let header = URL_SAFE_NO_PAD.encode(h.to_string());
    assert_eq!(check(&c, &format!("{header}.{}.{}", parts[1], parts[2])), Err(VerifyStatus::VerificationFailure));
    // Not a compact JWS at all.
    for junk in ["", "a.b", "a.b.c.d", "...", &format!("{jws}.")] {
        assert_eq!(check(&c, junk), Err(VerifyStatus::VerificationFailure), "{junk}");
    }
}

#[test]
fn case09_der_signatures_are_refused() {
    let c = TestChain::apple_like(1);
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(c.header().to_string()),
        URL_SAFE_NO_PAD.encode(test_body(NOW).to_string())
    );
    let der = c.leaf_key.sign_der(input.as_bytes());
    let jws = format!("{input}.{}", URL_SAFE_NO_PAD.encode(der));
    assert_eq!(check(&c, &jws), Err(VerifyStatus::VerificationFailure));
    assert!(why(&jws).contains("r||s"));
}

#[test]
fn case10_p384_leaf_is_refused() {
    let c = chain_with(|s| s.leaf_p384 = true);
    assert_eq!(check(&c, &c.sign(&test_body(NOW))), Err(VerifyStatus::VerificationFailure));
    assert!(why(&c.sign(&test_body(NOW))).contains("not P-256"));
}

#[test]
fn case11_notification_identity() {
    let c = TestChain::apple_like(1);
    let sandbox = verifier_for(&[&c], Environment::Sandbox, None);
    let prod = verifier_for(&[&c], Environment::Production, Some(APP_APPLE_ID));
    let mut other_bundle = test_body(NOW);
    other_bundle["data"]["bundleId"] = json!("org.example.other");
    assert_eq!(status(sandbox.verify_notification(&c.sign(&other_bundle), NOW)), VerifyStatus::InvalidAppIdentifier);
    let mut no_data = test_body(NOW);
    no_data.as_object_mut().unwrap().remove("data");
    assert_eq!(status(sandbox.verify_notification(&c.sign(&no_data), NOW)), VerifyStatus::InvalidAppIdentifier);
    assert_eq!(status(prod.verify_notification(&c.sign(&test_body(NOW)), NOW)), VerifyStatus::InvalidEnvironment);
    let mut production = test_body(NOW);
    production["data"]["environment"] = json!("Production");
    assert!(prod.verify_notification(&c.sign(&production), NOW).is_ok());
    assert_eq!(status(sandbox.verify_notification(&c.sign(&production), NOW)), VerifyStatus::InvalidEnvironment);
    let mut other_app = production.clone();
    other_app["data"]["appAppleId"] = json!(1);
    assert_eq!(status(prod.verify_notification(&c.sign(&other_app), NOW)), VerifyStatus::InvalidAppIdentifier);
    let mut unknown_env = test_body(NOW);
    unknown_env["data"]["environment"] = json!("Xcode");
    assert_eq!(status(sandbox.verify_notification(&c.sign(&unknown_env), NOW)), VerifyStatus::InvalidEnvironment);
    // A summary notification names the app in `summary`.
    let mut summary = test_body(NOW);
    let data = summary.as_object_mut().unwrap().remove("data").unwrap();
    summary["summary"] = data;
    assert!(sandbox.verify_notification(&c.sign(&summary), NOW).is_ok());
    // External purchase tokens tell the environment by their id.
    let token = json!({ "notificationType": "EXTERNAL_PURCHASE_TOKEN", "notificationUUID": "u", "signedDate": NOW,
        "externalPurchaseToken": { "bundleId": BUNDLE_ID, "appAppleId": APP_APPLE_ID, "externalPurchaseId": "SANDBOX_1" } });
    assert!(sandbox.verify_notification(&c.sign(&token), NOW).is_ok());
    assert_eq!(status(prod.verify_notification(&c.sign(&token), NOW)), VerifyStatus::InvalidEnvironment);
}

fn tx_spec() -> TxSpec {
    TxSpec {
        original: "7000000000000001".into(),
        tx_id: "7000000000000002".into(),
        web_order: "7000000000000003".into(),
        product: PRODUCT_1_MONTH.into(),
        purchase: NOW - 60_000,
        expires: NOW + 30 * 86_400_000,
    }
}

#[test]
fn case12_and_13_nested_identity() {
    let c = TestChain::apple_like(1);
    let v = verifier_for(&[&c], Environment::Sandbox, None);
    let body = testkit::notification_body("SUBSCRIBED", Some("INITIAL_BUY"), "u-12", NOW, "Sandbox");
    let t = tx_spec();
    let tx = testkit::transaction_payload(&t, NOW, "Sandbox");
    let renewal = testkit::renewal_payload(&t, NOW, "Sandbox");
    assert!(verify_and_decode(&v, &c.sign_notification(&body, Some(&tx), Some(&renewal)), NOW).is_ok());

    let mut other_bundle = tx.clone();
    other_bundle["bundleId"] = json!("org.example.other");
    let e = verify_and_decode(&v, &c.sign_notification(&body, Some(&other_bundle), Some(&renewal)), NOW).unwrap_err();
    assert_eq!((e.part.label(), e.error.status), ("transaction", VerifyStatus::InvalidAppIdentifier));
    let mut tx_prod = tx.clone();
    tx_prod["environment"] = json!("Production");
    let e = verify_and_decode(&v, &c.sign_notification(&body, Some(&tx_prod), Some(&renewal)), NOW).unwrap_err();
    assert_eq!((e.part.label(), e.error.status), ("transaction", VerifyStatus::InvalidEnvironment));

    let mut renewal_prod = renewal.clone();
    renewal_prod["environment"] = json!("Production");
    let e = verify_and_decode(&v, &c.sign_notification(&body, Some(&tx), Some(&renewal_prod)), NOW).unwrap_err();
    assert_eq!((e.part.label(), e.error.status), ("renewal_info", VerifyStatus::InvalidEnvironment));
    // The transaction was decoded before the renewal info failed: the subscription is known.
    assert_eq!(e.partial.unwrap().original_transaction_id(), Some("7000000000000001"));
    let mut renewal_bundle = renewal.clone();
    renewal_bundle["bundleId"] = json!("org.example.other");
    assert!(verify_and_decode(&v, &c.sign_notification(&body, Some(&tx), Some(&renewal_bundle)), NOW).is_ok());

    // A nested value signed by a foreign chain.
    let foreign = TestChain::apple_like(3);
    let mut b = body.clone();
    b["data"]["signedTransactionInfo"] = json!(foreign.sign(&tx));
    let e = verify_and_decode(&v, &c.sign(&b), NOW).unwrap_err();
    assert_eq!((e.part.label(), e.error.status), ("transaction", VerifyStatus::VerificationFailure));
    // A nested value that is not a string.
    b["data"]["signedTransactionInfo"] = json!(5);
    assert!(verify_and_decode(&v, &c.sign(&b), NOW).is_err());
}

#[test]
fn case14_header_checks_come_before_the_roots() {
    let c = TestChain::apple_like(1);
    let none = Verifier::new(&[], Environment::Sandbox, BUNDLE_ID, None).unwrap();
    assert_eq!(status(none.verify_notification(&c.sign(&test_body(NOW)), NOW)), VerifyStatus::InvalidCertificate);
    let bad_alg = with_header(&c, |h| h["alg"] = json!("RS256"));
    assert_eq!(status(none.verify_notification(&bad_alg, NOW)), VerifyStatus::VerificationFailure);
    let empty_x5c = with_header(&c, |h| h["x5c"] = json!([]));
    assert_eq!(status(none.verify_notification(&empty_x5c, NOW)), VerifyStatus::VerificationFailure);
    let no_x5c = with_header(&c, |h| {
        h.as_object_mut().unwrap().remove("x5c");
    });
    assert_eq!(status(none.verify_notification(&no_x5c, NOW)), VerifyStatus::VerificationFailure);
}

#[test]
fn case15_x5c_must_be_standard_base64() {
    let c = TestChain::apple_like(1);
    let x5c = c.x5c();
    let url_safe: Vec<String> = x5c.iter().map(|s| s.replace('+', "-").replace('/', "_")).collect();
    assert!(url_safe[0] != x5c[0] || url_safe[1] != x5c[1], "the test chain must contain + or /");
    let jws = with_header(&c, |h| h["x5c"] = json!(url_safe));
    assert_eq!(check(&c, &jws), Err(VerifyStatus::InvalidCertificate));
}

#[test]
fn case16_payload_must_be_a_json_object() {
    let c = TestChain::apple_like(1);
    for payload in [json!([1, 2]), json!("text"), json!(3)] {
        assert_eq!(check(&c, &c.sign(&payload)), Err(VerifyStatus::VerificationFailure));
    }
    let mut body = test_body(NOW);
    body["signedDate"] = json!("yesterday");
    assert_eq!(check(&c, &c.sign(&body)), Err(VerifyStatus::VerificationFailure));
}

#[test]
fn case17_signed_date_in_the_future() {
    let c = TestChain::apple_like(1);
    assert_eq!(check(&c, &c.sign(&test_body(NOW + 5 * 60_000 + 1))), Err(VerifyStatus::VerificationFailure));
    assert!(why(&c.sign(&test_body(NOW + 5 * 60_000 + 1))).contains("future"));
    assert_eq!(check(&c, &c.sign(&test_body(NOW + 5 * 60_000))), Ok(()));
}

#[test]
fn ca_constraints_are_enforced() {
    let body = test_body(NOW);
    let not_ca = chain_with(|s| s.intermediate.basic_constraints = Some((true, false, None)));
    assert!(why(&not_ca.sign(&body)).contains("is not a CA"));
    let no_bc = chain_with(|s| s.intermediate.basic_constraints = None);
    assert_eq!(check(&no_bc, &no_bc.sign(&body)), Err(VerifyStatus::VerificationFailure));
    let no_cert_sign = chain_with(|s| {
        s.intermediate.key_usage =
            Some(x509_cert::ext::pkix::KeyUsage(x509_cert::ext::pkix::KeyUsages::DigitalSignature.into()))
    });
    assert!(why(&no_cert_sign.sign(&body)).contains("key usage"));
    // A root limited to no intermediates cannot anchor this chain (the verifier trusts it).
    let short_root = chain_with(|s| s.root.basic_constraints = Some((true, true, Some(0))));
    let v = verifier_for(&[&short_root], Environment::Sandbox, None);
    let e = v.verify_notification(&short_root.sign(&body), NOW).unwrap_err();
    assert!(e.status == VerifyStatus::VerificationFailure && e.detail.contains("path length"), "{e}");
    let expired_root = chain_with(|s| s.root.not_after = NOW / 1000 - 1);
    let v = verifier_for(&[&expired_root], Environment::Sandbox, None);
    assert_eq!(status(v.verify_notification(&expired_root.sign(&body), NOW)), VerifyStatus::VerificationFailure);
    // Unknown critical extensions make a certificate unusable.
    let critical = chain_with(|s| {
        s.leaf.extra.push(x509_cert::ext::Extension {
            extn_id: x509_cert::der::oid::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.1"),
            critical: true,
            extn_value: x509_cert::der::asn1::OctetString::new(vec![0x05, 0x00]).unwrap(),
        })
    });
    assert!(why(&critical.sign(&body)).contains("unsupported critical extension"));
    // The test chain itself stays valid over the whole range used.
    const { assert!(Y2000 < NOW / 1000 && NOW / 1000 < Y2049) };
}

// ---------------------------------------------------------------------------------------------
// Dispatch table
// ---------------------------------------------------------------------------------------------

fn tx_of(t: &TxSpec) -> Transaction {
    Transaction {
        original_transaction_id: Some(t.original.clone()),
        transaction_id: Some(t.tx_id.clone()),
        web_order_line_item_id: Some(t.web_order.clone()),
        product_id: Some(t.product.clone()),
        purchase_date: Some(t.purchase),
        expires_date: Some(t.expires),
        revocation_date: None,
        app_account_token: None,
        tx_type: Some(AppleEnum::Known(TransactionType::AutoRenewable)),
        transaction_reason: Some(AppleEnum::Known(TransactionReason::Purchase)),
    }
}

fn note(kind: &str, sub: Option<&str>, tx: Option<Transaction>) -> Notification {
    Notification {
        notification_type: Some(NotificationType::parse(kind)),
        subtype: sub.map(Subtype::parse),
        uuid: Some(format!("uuid-{kind}-{}", sub.unwrap_or("none"))),
        signed_date: Some(NOW),
        transaction: tx,
        renewal: Some(RenewalInfo::default()),
    }
}

fn key_of(t: &TxSpec) -> PaymentTx {
    PaymentTx::apple(&t.original, &t.tx_id, &t.web_order)
}

fn add_of(t: &TxSpec, plan: ProPlan) -> Effect {
    Effect::AddPayment(crate::store::rows::NewPayment {
        tx: key_of(t),
        plan,
        expiry_unix_ts_ms: t.expires,
        unredeemed_unix_ts_ms: t.purchase,
        platform_refund_expiry_unix_ts_ms: t.expires,
        google_obfuscated_account_id: None,
        apple_app_account_token: String::new(),
    })
}

fn renewal_of(t: &TxSpec, grace: Option<i64>, auto: Option<bool>) -> Effect {
    Effect::RenewalInfo { payment: key_of(t), grace_period_duration_ms: grace, auto_renewing: auto }
}

fn revoke_of(t: &TxSpec, at: i64) -> Effect {
    Effect::Revoke { original_transaction_id: t.original.clone(), revoked_unix_ts_ms: at }
}

#[test]
fn purchases_add_a_payment_with_default_grace() {
    let t = tx_spec();
    for (kind, sub) in [("SUBSCRIBED", Some("INITIAL_BUY")), ("SUBSCRIBED", Some("RESUBSCRIBE")), ("DID_RENEW", None)] {
        assert_eq!(
            effects(&note(kind, sub, Some(tx_of(&t)))),
            Ok(vec![add_of(&t, ProPlan::OneMonth), renewal_of(&t, Some(DEFAULT_GRACE_MS), Some(true))])
        );
    }
    let mut three = t.clone();
    three.product = PRODUCT_3_MONTHS.into();
    assert!(matches!(&effects(&note("DID_RENEW", Some("BILLING_RECOVERY"), Some(tx_of(&three)))).unwrap()[0],
        Effect::AddPayment(p) if p.plan == ProPlan::ThreeMonth));
    let mut twelve = tx_of(&t);
    twelve.product_id = Some("com.getsession.org.pro_sub_12_months".into());
    assert!(matches!(&effects(&note("SUBSCRIBED", None, Some(twelve))).unwrap()[0],
        Effect::AddPayment(p) if p.plan == ProPlan::TwelveMonth));
    // The account token is kept.
    let mut token = tx_of(&t);
    token.app_account_token = Some("5f0c1e62-0000-4000-8000-000000000000".into());
    assert!(matches!(&effects(&note("SUBSCRIBED", None, Some(token))).unwrap()[0],
        Effect::AddPayment(p) if p.apple_app_account_token.starts_with("5f0c")));
}

#[test]
fn purchases_need_every_field_and_a_known_product() {
    let t = tx_spec();
    for product in ["com.getsession.org.pro_sub", "com.example.other", ""] {
        let mut tx = tx_of(&t);
        tx.product_id = Some(product.into());
        let e = effects(&note("SUBSCRIBED", None, Some(tx))).unwrap_err();
        assert!(e.contains("unknown product id"), "{e}");
    }
    let mut tx = tx_of(&t);
    tx.web_order_line_item_id = None;
    tx.expires_date = None;
    let e = effects(&note("DID_RENEW", None, Some(tx))).unwrap_err();
    assert!(e.contains("expiresDate") && e.contains("webOrderLineItemId"), "{e}");
    let mut tx = tx_of(&t);
    tx.transaction_reason = Some(TransactionReason::parse("GIFT"));
    assert!(effects(&note("DID_RENEW", None, Some(tx))).unwrap_err().contains("transactionReason"));
    let mut tx = tx_of(&t);
    tx.tx_type = Some(AppleEnum::Known(TransactionType::Consumable));
    assert!(effects(&note("SUBSCRIBED", None, Some(tx))).unwrap_err().contains("type is not"));
    assert!(effects(&note("SUBSCRIBED", None, None)).unwrap_err().contains("signedTransactionInfo"));
}

#[test]
fn one_time_charge() {
    let t = tx_spec();
    let mut tx = tx_of(&t);
    tx.tx_type = Some(AppleEnum::Known(TransactionType::NonRenewing));
    assert_eq!(effects(&note("ONE_TIME_CHARGE", None, Some(tx.clone()))).map(|e| e.len()), Ok(2));
    tx.transaction_reason = Some(AppleEnum::Known(TransactionReason::Renewal));
    assert!(effects(&note("ONE_TIME_CHARGE", None, Some(tx))).is_err());
    assert!(effects(&note("ONE_TIME_CHARGE", None, Some(tx_of(&t)))).is_err());
}

#[test]
fn renewal_preference_changes() {
    let t = tx_spec();
    let tx = || Some(tx_of(&t));
    assert_eq!(effects(&note("DID_CHANGE_RENEWAL_PREF", None, tx())), Ok(vec![]));
    assert_eq!(effects(&note("DID_CHANGE_RENEWAL_PREF", Some("SOMETHING_NEW"), tx())), Ok(vec![]));
    assert_eq!(effects(&note("DID_CHANGE_RENEWAL_PREF", Some("VOLUNTARY"), tx())), Ok(vec![]));
    assert_eq!(
        effects(&note("DID_CHANGE_RENEWAL_PREF", Some("DOWNGRADE"), tx())),
        Ok(vec![renewal_of(&t, Some(DEFAULT_GRACE_MS), Some(true))])
    );
    assert_eq!(
        effects(&note("DID_CHANGE_RENEWAL_PREF", Some("UPGRADE"), tx())),
        Ok(vec![
            revoke_of(&t, t.purchase),
            add_of(&t, ProPlan::OneMonth),
            renewal_of(&t, Some(DEFAULT_GRACE_MS), None)
        ])
    );
    // A valid product is needed even when nothing changes.
    let mut retired = tx_of(&t);
    retired.product_id = Some("com.getsession.org.pro_sub".into());
    assert!(effects(&note("DID_CHANGE_RENEWAL_PREF", None, Some(retired))).is_err());
}

#[test]
fn offers() {
    let t = tx_spec();
    let tx = || Some(tx_of(&t));
    assert_eq!(effects(&note("OFFER_REDEEMED", None, tx())), Ok(vec![add_of(&t, ProPlan::OneMonth)]));
    assert_eq!(effects(&note("OFFER_REDEEMED", Some("BRAND_NEW"), tx())), Ok(vec![add_of(&t, ProPlan::OneMonth)]));
    assert_eq!(effects(&note("OFFER_REDEEMED", Some("DOWNGRADE"), tx())), Ok(vec![]));
    assert_eq!(effects(&note("OFFER_REDEEMED", Some("RESUBSCRIBE"), tx())), Ok(vec![]));
    assert_eq!(
        effects(&note("OFFER_REDEEMED", Some("UPGRADE"), tx())),
        Ok(vec![
            revoke_of(&t, t.purchase),
            add_of(&t, ProPlan::OneMonth),
            renewal_of(&t, Some(DEFAULT_GRACE_MS), Some(true))
        ])
    );
}

#[test]
fn refunds_revocations_and_declines() {
    let t = tx_spec();
    let mut tx = tx_of(&t);
    tx.revocation_date = Some(NOW - 5);
    for kind in ["REFUND", "REVOKE"] {
        assert_eq!(effects(&note(kind, None, Some(tx.clone()))), Ok(vec![revoke_of(&t, NOW - 5)]));
        assert!(effects(&note(kind, None, Some(tx_of(&t)))).unwrap_err().contains("revocationDate"));
    }
    assert!(effects(&note("REFUND_REVERSED", None, Some(tx.clone()))).is_err());
    assert_eq!(
        effects(&note("REFUND_DECLINED", None, Some(tx_of(&t)))),
        Ok(vec![Effect::ClearRefundRequest { transaction_id: t.tx_id.clone() }])
    );
    let mut no_ids = tx_of(&t);
    no_ids.transaction_id = None;
    assert!(effects(&note("REFUND_DECLINED", None, Some(no_ids))).unwrap_err().contains("transactionId"));
}

#[test]
fn renewal_status() {
    let t = tx_spec();
    // REQ-IDS only: the web order id may be absent, and the key then has an empty one.
    let mut tx = tx_of(&t);
    tx.web_order_line_item_id = None;
    tx.product_id = None;
    let key = PaymentTx::apple(&t.original, &t.tx_id, "");
    for (sub, auto) in [("AUTO_RENEW_ENABLED", true), ("AUTO_RENEW_DISABLED", false)] {
        assert_eq!(
            effects(&note("DID_CHANGE_RENEWAL_STATUS", Some(sub), Some(tx.clone()))),
            Ok(vec![Effect::RenewalInfo {
                payment: key.clone(),
                grace_period_duration_ms: None,
                auto_renewing: Some(auto)
            }])
        );
    }
    for sub in [None, Some("UPGRADE"), Some("SOMETHING_NEW")] {
        assert!(effects(&note("DID_CHANGE_RENEWAL_STATUS", sub, Some(tx.clone()))).is_err(), "{sub:?}");
    }
}

#[test]
fn failed_renewals_and_grace() {
    let t = tx_spec();
    let mut n = note("DID_FAIL_TO_RENEW", None, Some(tx_of(&t)));
    n.renewal = None;
    assert_eq!(effects(&n), Ok(vec![]), "no grace configured: nothing to require");
    n.subtype = Some(Subtype::parse("SOMETHING_NEW"));
    assert_eq!(effects(&n), Ok(vec![]), "an unknown subtype is no subtype");
    n.subtype = Some(Subtype::parse("GRACE_PERIOD"));
    assert!(effects(&n).unwrap_err().contains("gracePeriodExpiresDate"));
    n.renewal = Some(RenewalInfo { grace_period_expires_date: Some(t.expires + 16 * 86_400_000) });
    assert_eq!(effects(&n), Ok(vec![renewal_of(&t, Some(16 * 86_400_000), Some(true))]));
    n.renewal = Some(RenewalInfo { grace_period_expires_date: Some(t.expires - 1) });
    assert_eq!(effects(&n), Ok(vec![renewal_of(&t, Some(0), Some(true))]));
    n.subtype = Some(Subtype::parse("BILLING_RECOVERY"));
    assert!(effects(&n).is_err());
}

#[test]
fn informational_and_unsupported_types() {
    let t = tx_spec();
    for (kind, sub) in [
        ("EXPIRED", Some("VOLUNTARY")),
        ("EXPIRED", Some("BILLING_RETRY")),
        ("GRACE_PERIOD_EXPIRED", None),
        ("CONSUMPTION_REQUEST", None),
        ("PRICE_INCREASE", Some("PENDING")),
        ("PRICE_INCREASE", Some("ACCEPTED")),
    ] {
        assert_eq!(effects(&note(kind, sub, Some(tx_of(&t)))), Ok(vec![]), "{kind}");
        assert!(effects(&note(kind, sub, None)).is_err(), "{kind} needs its transaction");
    }
    let mut test = note("TEST", None, None);
    test.renewal = None;
    assert_eq!(effects(&test), Ok(vec![]));
    for kind in ["EXTERNAL_PURCHASE_TOKEN", "RENEWAL_EXTENDED", "RENEWAL_EXTENSION", "SOMETHING_NEW"] {
        assert!(effects(&note(kind, None, Some(tx_of(&t)))).is_err(), "{kind}");
    }
    let mut untyped = note("TEST", None, None);
    untyped.notification_type = None;
    assert!(effects(&untyped).is_err());
    // Every known type is covered by the table (no panic, a decision for each).
    for kind in NotificationType::ALL {
        let _ = effects(&note(kind.as_str(), None, Some(tx_of(&t))));
    }
}

#[test]
fn identity_and_dedupe_window() {
    assert_eq!(DEDUPE_WINDOW_MS, 7 * 86_400_000);
    let mut n = note("TEST", None, None);
    assert_eq!(identity(&n), Ok(("uuid-TEST-none", NOW)));
    n.signed_date = None;
    assert!(identity(&n).is_err());
    n.signed_date = Some(NOW);
    n.uuid = None;
    assert!(identity(&n).is_err());
}

// ---------------------------------------------------------------------------------------------
// Handler sequences on a real store (scenarios.md APL-1..5), with Apple's decoded vectors
// ---------------------------------------------------------------------------------------------

fn db() -> Connection {
    let mut c = sqlite::open_writer(&SqliteTarget::memory()).unwrap();
    sqlite::bootstrap(&mut c, [0xCD; 32]).unwrap();
    c
}

/// Decodes vector `i` with its product id replaced (upstream's tests patch the retired id).
fn decoded(i: usize, product: &str) -> Notification {
    let jws = vector(i);
    let mut n = verify_and_decode(&apple_sandbox(), &jws, signed_date(&jws)).unwrap();
    if let Some(tx) = n.transaction.as_mut() {
        tx.product_id = Some(product.into());
    }
    n
}

fn handle(c: &mut Connection, n: Notification, now: i64) -> Result<Handled, OpError> {
    sqlite::write(c, |tx| HandleAppleNotification(n).apply(tx, OpCtx { now, dev: false }))
}

#[derive(Debug, PartialEq, Eq)]
struct Row {
    status: i64,
    plan: i64,
    auto_renewing: bool,
    grace: i64,
    unredeemed: i64,
    redeemed: Option<i64>,
    expiry: i64,
    refund_expiry: i64,
    revoked: Option<i64>,
    ids: (String, String, String),
    owned: bool,
}

fn rows(c: &Connection) -> Vec<Row> {
    let mut st = c
        .prepare(
            "SELECT status, plan, auto_renewing, grace_period_duration_ms, unredeemed_unix_ts_ms, redeemed_unix_ts_ms,
                    expiry_unix_ts_ms, platform_refund_expiry_unix_ts_ms, revoked_unix_ts_ms, apple_original_tx_id,
                    apple_tx_id, apple_web_line_order_tx_id, master_pkey IS NOT NULL FROM payments ORDER BY id",
        )
        .unwrap();
    st.query_map([], |r| {
        Ok(Row {
            status: r.get(0)?,
            plan: r.get(1)?,
            auto_renewing: r.get(2)?,
            grace: r.get(3)?,
            unredeemed: r.get(4)?,
            redeemed: r.get(5)?,
            expiry: r.get(6)?,
            refund_expiry: r.get(7)?,
            revoked: r.get(8)?,
            ids: (r.get(9)?, r.get(10)?, r.get(11)?),
            owned: r.get(12)?,
        })
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn count(c: &Connection, sql: &str) -> i64 {
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn claim(c: &mut Connection, master: &[u8; 32], tx_id: &str, now: i64) -> crate::domain::types::RedeemOutcome {
    sqlite::write(c, |tx| {
        ops::claim_for_client(tx, master, &PaymentTx::apple_tx(tx_id), OpCtx { now, dev: false }, None)
    })
    .unwrap()
}

const ORIGINAL: &str = "2000001024993299";
const MASTER: [u8; 32] = [7; 32];

#[test]
fn apl1_did_renew_then_claim() {
    let mut c = db();
    let n = decoded(1, PRODUCT_1_MONTH);
    assert_eq!(handle(&mut c, n.clone(), 1759302518835), Ok(Handled::Applied));
    let r = rows(&c);
    assert_eq!(r.len(), 1);
    assert_eq!(
        r[0],
        Row {
            status: 1,
            plan: 1,
            auto_renewing: true,
            grace: DEFAULT_GRACE_MS,
            unredeemed: 1759302552000,
            redeemed: None,
            expiry: 1759302732000,
            refund_expiry: 1759302732000,
            revoked: None,
            ids: (ORIGINAL.into(), "2000001024998954".into(), "2000000113755461".into()),
            owned: false,
        }
    );
    // Dedupe: the UUID is remembered for a week after signedDate, the second post does nothing.
    assert_eq!(
        count(&c, "SELECT expiry_unix_ts_ms FROM apple_notification_uuid_history"),
        1759302518835 + DEDUPE_WINDOW_MS
    );
    assert_eq!(handle(&mut c, n, 1759302518835), Ok(Handled::Duplicate));
    assert_eq!(rows(&c).len(), 1);
    let key = ed25519_dalek::SigningKey::from_bytes(&MASTER).verifying_key().to_bytes();
    assert!(matches!(
        claim(&mut c, &key, "2000001024998954", 1759302600000),
        crate::domain::types::RedeemOutcome::Success { .. }
    ));
    assert_eq!(rows(&c)[0].status, 2);
}

#[test]
fn apl2_apl3_subscribe_disable_expire_then_sweep() {
    let mut c = db();
    assert_eq!(handle(&mut c, decoded(2, PRODUCT_1_MONTH), 1759388776941), Ok(Handled::Applied));
    let before = rows(&c);
    assert_eq!((before.len(), before[0].status, before[0].plan, before[0].auto_renewing), (1, 1, 1, true));
    assert_eq!(handle(&mut c, decoded(3, PRODUCT_1_MONTH), 1759388855473), Ok(Handled::Applied));
    let after = rows(&c);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0], Row { auto_renewing: false, ..before.into_iter().next().unwrap() });
    assert_eq!(handle(&mut c, decoded(4, PRODUCT_1_MONTH), 1759389041604), Ok(Handled::Applied));
    let expired_notice = rows(&c);
    assert_eq!(expired_notice, after);
    sqlite::write(&mut c, |tx| Ok::<_, OpError>(ops::expire(tx, 1759388947000 + 1)?)).unwrap();
    let swept = rows(&c);
    assert_eq!(swept[0], Row { status: 3, ..after.into_iter().next().unwrap() });
}

#[test]
fn apl4_upgrade_downgrade_cancel_sequence() {
    let mut c = db();
    let key = ed25519_dalek::SigningKey::from_bytes(&MASTER).verifying_key().to_bytes();
    assert_eq!(handle(&mut c, decoded(5, PRODUCT_3_MONTHS), 1759727785445), Ok(Handled::Applied));
    assert_eq!((rows(&c)[0].plan, rows(&c)[0].auto_renewing), (2, true));
    assert!(matches!(
        claim(&mut c, &key, "2000001027701898", 1759727786000),
        crate::domain::types::RedeemOutcome::Success { .. }
    ));
    let claimed = rows(&c).remove(0);
    assert_eq!((claimed.status, claimed.owned, claimed.redeemed), (2, true, Some(round_up_to_day(1759727786000))));

    // e01 UPGRADE: the old period is revoked at the new purchase, the new one auto-claimed.
    assert_eq!(handle(&mut c, decoded(6, PRODUCT_1_MONTH), 1759727799810), Ok(Handled::Applied));
    let r = rows(&c);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0], Row { status: 4, auto_renewing: false, revoked: Some(1759727790000), ..claimed });
    assert_eq!(
        r[1],
        Row {
            status: 2,
            plan: 1,
            auto_renewing: true,
            grace: DEFAULT_GRACE_MS,
            unredeemed: 1759727790000,
            redeemed: Some(round_up_to_day(1759727790000)),
            expiry: 1759727970000,
            refund_expiry: 1759727970000,
            revoked: None,
            ids: (ORIGINAL.into(), "2000001027701928".into(), "2000000114202140".into()),
            owned: true,
        }
    );
    // REV-4: no proof could outlive the revocation day, so nothing is listed.
    assert_eq!(count(&c, "SELECT COUNT(*) FROM revocations"), 0);
    assert_eq!(count(&c, "SELECT revocation_ticket FROM runtime"), 0);

    let latest_auto = |c: &Connection| rows(c)[1].auto_renewing;
    assert_eq!(handle(&mut c, decoded(7, PRODUCT_1_MONTH), 1759727821952), Ok(Handled::Applied));
    assert!(!latest_auto(&c));
    assert_eq!(handle(&mut c, decoded(8, PRODUCT_1_MONTH), 1759727838450), Ok(Handled::Applied));
    assert!(latest_auto(&c), "a queued downgrade means the subscription renews");
    let before_cancel = rows(&c);
    assert_eq!(handle(&mut c, decoded(9, PRODUCT_1_MONTH), 1759727866231), Ok(Handled::Applied));
    assert_eq!(rows(&c), before_cancel);
    assert_eq!(handle(&mut c, decoded(10, PRODUCT_1_MONTH), 1759727876877), Ok(Handled::Applied));
    assert!(!latest_auto(&c));
    let before_expired = rows(&c);
    assert_eq!(handle(&mut c, decoded(11, PRODUCT_1_MONTH), 1759727985799), Ok(Handled::Applied));
    assert_eq!(rows(&c), before_expired);
    assert_eq!(count(&c, "SELECT COUNT(*) FROM apple_notification_uuid_history"), 7);
}

#[test]
fn apl5_refund_by_original_transaction() {
    let mut c = db();
    assert_eq!(handle(&mut c, decoded(12, PRODUCT_3_MONTHS), 1760591792087), Ok(Handled::Applied));
    assert_eq!(handle(&mut c, decoded(13, PRODUCT_1_MONTH), 1760591941117), Ok(Handled::Applied));
    assert_eq!(rows(&c).len(), 1, "a consumption request changes nothing");
    assert_eq!(handle(&mut c, decoded(14, PRODUCT_1_MONTH), 1760592122788), Ok(Handled::Applied));
    let r = rows(&c);
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].status, r[0].revoked), (4, Some(1760591999000)));
    assert_eq!(r[0].ids, (ORIGINAL.into(), "2000001035288486".into(), "2000000114930708".into()));
}

#[test]
fn failures_roll_the_whole_notification_back() {
    let mut c = db();
    // Status change before the purchase is known: an error, and no UUID is remembered.
    let e = handle(&mut c, decoded(3, PRODUCT_1_MONTH), 1759388855473).unwrap_err();
    assert!(matches!(&e, OpError::Rejected(m) if m.contains("no payment matches")), "{e:?}");
    assert_eq!(count(&c, "SELECT COUNT(*) FROM apple_notification_uuid_history"), 0);
    // A refund for an unknown subscription.
    assert!(handle(&mut c, decoded(14, PRODUCT_1_MONTH), 1760592122788).is_err());
    // An upgrade whose earlier period is unknown: the revocation fails, nothing is added.
    assert!(handle(&mut c, decoded(6, PRODUCT_1_MONTH), 1759727799810).is_err());
    assert_eq!(rows(&c).len(), 0);
    // The retired debug product id is refused.
    let e = handle(&mut c, decoded(1, "com.getsession.org.pro_sub"), 1759302518835).unwrap_err();
    assert!(matches!(&e, OpError::Rejected(m) if m.contains("unknown product id")));
    assert_eq!(rows(&c).len(), 0);
    // Once the purchase is known the status change applies.
    assert_eq!(handle(&mut c, decoded(2, PRODUCT_1_MONTH), 1759388776941), Ok(Handled::Applied));
    assert_eq!(handle(&mut c, decoded(3, PRODUCT_1_MONTH), 1759388855473), Ok(Handled::Applied));
}

#[test]
fn refund_declined_clears_the_request() {
    let mut c = db();
    let key = ed25519_dalek::SigningKey::from_bytes(&MASTER).verifying_key().to_bytes();
    handle(&mut c, decoded(2, PRODUCT_1_MONTH), 1759388776941).unwrap();
    claim(&mut c, &key, "2000001025686313", 1759388780000);
    sqlite::write(&mut c, |tx| {
        ops::set_refund_requested(tx, &PaymentTx::apple_tx("2000001025686313"), 1759388790000, Some(&key))
    })
    .unwrap();
    assert_eq!(count(&c, "SELECT refund_requested_unix_ts_ms FROM payments"), 1759388790000);
    let mut n = decoded(2, PRODUCT_1_MONTH);
    n.notification_type = Some(AppleEnum::Known(NotificationType::RefundDeclined));
    n.uuid = Some("declined-1".into());
    assert_eq!(handle(&mut c, n.clone(), 1759388800000), Ok(Handled::Applied));
    assert_eq!(count(&c, "SELECT refund_requested_unix_ts_ms FROM payments"), 0);
    assert_eq!(count(&c, "SELECT refund_requested_unix_ts_ms FROM users"), 0);
    // A decline for an unknown transaction is only a warning.
    n.uuid = Some("declined-2".into());
    n.transaction.as_mut().unwrap().transaction_id = Some("999".into());
    assert_eq!(handle(&mut c, n, 1759388800000), Ok(Handled::Applied));
}

#[test]
fn offer_redeemed_records_the_offer_and_grace_is_a_duration() {
    let mut c = db();
    let mut offer = decoded(2, PRODUCT_1_MONTH);
    offer.notification_type = Some(AppleEnum::Known(NotificationType::OfferRedeemed));
    offer.subtype = None;
    assert_eq!(handle(&mut c, offer, 1759388776941), Ok(Handled::Applied));
    let r = rows(&c);
    assert_eq!((r.len(), r[0].status, r[0].grace, r[0].auto_renewing), (1, 1, 0, true));

    let mut grace = decoded(2, PRODUCT_1_MONTH);
    grace.notification_type = Some(AppleEnum::Known(NotificationType::DidFailToRenew));
    grace.subtype = Some(AppleEnum::Known(Subtype::GracePeriod));
    grace.uuid = Some("grace-1".into());
    grace.renewal = Some(RenewalInfo { grace_period_expires_date: Some(1759388947000 + 3 * 86_400_000) });
    assert_eq!(handle(&mut c, grace, 1759388800000), Ok(Handled::Applied));
    assert_eq!(rows(&c)[0].grace, 3 * 86_400_000);
}

#[test]
fn store_key_uses_the_exact_identity() {
    // A renewal-info change must name the payment by all three ids.
    let mut c = db();
    handle(&mut c, decoded(2, PRODUCT_1_MONTH), 1759388776941).unwrap();
    let mut other_period = decoded(3, PRODUCT_1_MONTH);
    other_period.transaction.as_mut().unwrap().web_order_line_item_id = Some("1".into());
    assert!(handle(&mut c, other_period, 1759388855473).is_err());
    assert!(rows(&c)[0].auto_renewing);
}

#[test]
fn auto_redeem_deadline_boundary() {
    // A renewal is claimed for the subscription's owner only while the owner's entitlement
    // (with grace, for a renewing subscription) has not lapsed.
    for (offset, claimed) in [(-1, true), (0, true), (1, false)] {
        let mut c = db();
        let key = ed25519_dalek::SigningKey::from_bytes(&MASTER).verifying_key().to_bytes();
        let first = tx_spec();
        handle(&mut c, note("SUBSCRIBED", Some("INITIAL_BUY"), Some(tx_of(&first))), NOW).unwrap();
        claim(&mut c, &key, &first.tx_id, NOW);
        let (expiry, grace): (i64, i64) = c
            .query_row("SELECT expiry_unix_ts_ms, grace_period_duration_ms FROM users", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert!(expiry >= first.expires, "the cached expiry includes the period");
        let purchase = expiry + grace + offset;
        let renewal = TxSpec {
            tx_id: "7000000000000009".into(),
            web_order: "7000000000000010".into(),
            purchase,
            expires: purchase + 30 * 86_400_000,
            ..first.clone()
        };
        handle(&mut c, note("DID_RENEW", None, Some(tx_of(&renewal))), purchase).unwrap();
        let r = rows(&c);
        assert_eq!(r.len(), 2);
        assert_eq!((r[1].status == 2, r[1].owned), (claimed, claimed), "offset {offset}");
    }
}

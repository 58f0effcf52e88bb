//! Every value in `tests/data/hashes.json` (copied from the shared golden vectors produced by
//! upstream) reproduced byte for byte by the engine's pure functions.

use ed25519_dalek::{Signer, SigningKey};
use pro_engine::domain::hashes::{
    add_pro_payment_hash, gen_index_hash, generate_pro_proof_hash, get_pro_details_hash, google_obfuscated_account_id,
    proof_hash, set_refund_requested_hash,
};
use pro_engine::domain::keys::{x25519_public_from_ed25519, x25519_secret_from_ed25519_seed};
use pro_engine::domain::time::{clamp_proof_expiry, round_up_to_day, start_of_day};
use pro_engine::domain::types::{PaymentProvider, PaymentTx};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/hashes.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn bytes<const N: usize>(v: &Value) -> [u8; N] {
    hex::decode(v.as_str().unwrap()).unwrap().try_into().unwrap()
}

fn sign(seed: &Value, msg: &[u8]) -> String {
    hex::encode(SigningKey::from_bytes(&bytes::<32>(seed)).sign(msg).to_bytes())
}

fn payment_tx(s: &Value) -> PaymentTx {
    match PaymentProvider::from_i64(s["provider"].as_i64().unwrap()).unwrap() {
        PaymentProvider::Google => {
            PaymentTx::google(s["google_payment_token"].as_str().unwrap(), s["google_order_id"].as_str().unwrap())
        }
        PaymentProvider::Apple => PaymentTx::apple_tx(s["apple_tx_id"].as_str().unwrap()),
        p => panic!("unexpected provider {p}"),
    }
}

#[test]
fn keys() {
    let v = vectors();
    let k = &v["keys"];
    for (seed, pk) in
        [("master_seed", "master_pkey"), ("rotating_seed", "rotating_pkey"), ("backend_seed", "backend_pkey")]
    {
        let sk = SigningKey::from_bytes(&bytes::<32>(&k[seed]));
        assert_eq!(hex::encode(sk.verifying_key().to_bytes()), k[pk].as_str().unwrap());
    }
    let secret = x25519_secret_from_ed25519_seed(&bytes(&k["backend_seed"]));
    assert_eq!(hex::encode(secret), k["backend_x25519_skey"].as_str().unwrap());
    let public = x25519_public_from_ed25519(&bytes(&k["backend_pkey"])).unwrap();
    assert_eq!(hex::encode(public), k["backend_x25519_pkey"].as_str().unwrap());
}

#[test]
fn add_pro_payment_digests_and_signatures() {
    let v = vectors();
    let k = &v["keys"];
    for section in ["add_pro_payment_google", "add_pro_payment_apple"] {
        let s = &v[section];
        let digest = add_pro_payment_hash(0, &bytes(&k["master_pkey"]), &bytes(&k["rotating_pkey"]), &payment_tx(s));
        assert_eq!(hex::encode(digest), s["hash"].as_str().unwrap(), "{section}");
        assert_eq!(sign(&k["master_seed"], &digest), s["master_sig"].as_str().unwrap());
        assert_eq!(sign(&k["rotating_seed"], &digest), s["rotating_sig"].as_str().unwrap());
    }
}

#[test]
fn generate_pro_proof_digest() {
    let v = vectors();
    let (k, s) = (&v["keys"], &v["generate_pro_proof"]);
    let digest = generate_pro_proof_hash(
        0,
        &bytes(&k["master_pkey"]),
        &bytes(&k["rotating_pkey"]),
        s["unix_ts_ms"].as_u64().unwrap(),
    );
    assert_eq!(hex::encode(digest), s["hash"].as_str().unwrap());
    assert_eq!(sign(&k["master_seed"], &digest), s["master_sig"].as_str().unwrap());
    assert_eq!(sign(&k["rotating_seed"], &digest), s["rotating_sig"].as_str().unwrap());
}

#[test]
fn gen_index_hashes_and_proof() {
    let v = vectors();
    let s = &v["gen_index_hash"];
    let salt = bytes::<16>(&s["salt"]);
    for item in s["items"].as_array().unwrap() {
        let g = item["gen_index"].as_u64().unwrap();
        assert_eq!(hex::encode(g.to_le_bytes()), item["hash_input"].as_str().unwrap());
        assert_eq!(hex::encode(gen_index_hash(g, &salt)), item["hash"].as_str().unwrap(), "gen_index {g}");
    }
    let p = &v["proof"];
    let gih = gen_index_hash(p["gen_index"].as_u64().unwrap(), &bytes(&p["gen_index_salt"]));
    assert_eq!(hex::encode(gih), p["gen_index_hash"].as_str().unwrap());
    let digest = proof_hash(0, &gih, &bytes(&p["rotating_pkey"]), p["expiry_unix_ts_ms"].as_u64().unwrap());
    assert_eq!(hex::encode(digest), p["hash"].as_str().unwrap());
    assert_eq!(sign(&v["keys"]["backend_seed"], &digest), p["backend_sig"].as_str().unwrap());
}

#[test]
fn get_pro_details_digest() {
    let v = vectors();
    let (k, s) = (&v["keys"], &v["get_pro_details"]);
    let digest = get_pro_details_hash(
        0,
        &bytes(&k["master_pkey"]),
        s["unix_ts_ms"].as_u64().unwrap(),
        s["count"].as_u64().unwrap() as u32,
    );
    assert_eq!(hex::encode(digest), s["hash"].as_str().unwrap());
    assert_eq!(sign(&k["master_seed"], &digest), s["master_sig"].as_str().unwrap());
}

#[test]
fn set_refund_requested_digests() {
    let v = vectors();
    let k = &v["keys"];
    for section in ["set_payment_refund_requested_apple", "set_payment_refund_requested_google"] {
        let s = &v[section];
        let digest = set_refund_requested_hash(
            0,
            &bytes(&k["master_pkey"]),
            s["unix_ts_ms"].as_u64().unwrap(),
            s["refund_requested_unix_ts_ms"].as_u64().unwrap(),
            &payment_tx(s),
        );
        assert_eq!(hex::encode(digest), s["hash"].as_str().unwrap(), "{section}");
        assert_eq!(sign(&k["master_seed"], &digest), s["master_sig"].as_str().unwrap());
    }
}

#[test]
fn obfuscated_account_id_and_time_rounding() {
    let v = vectors();
    let s = &v["google_obfuscated_account_id"];
    assert_eq!(hex::encode(google_obfuscated_account_id(&bytes(&s["master_pkey"]))), s["value"].as_str().unwrap());
    for row in v["time_rounding"].as_array().unwrap() {
        let t = row["unix_ts_ms"].as_i64().unwrap();
        assert_eq!(round_up_to_day(t), row["next_day"].as_i64().unwrap());
        assert_eq!(start_of_day(t), row["start_of_day"].as_i64().unwrap());
        assert_eq!(clamp_proof_expiry(t, i64::MAX), row["proof_clamped_expiry_if_far_future"].as_i64().unwrap());
    }
}

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

/// api.md §9.3 and the `onion_v4` section: the fixed-nonce request decrypts to the documented
/// inner request, and replies built with fixed nonces encrypt to the documented bytes.
#[test]
fn onion_v4_request_and_response() {
    use pro_engine::onion::{Cipher, decrypt, derive_key, encrypt_with_nonce, parse_inner, parse_outer};
    let v = vectors();
    let o = &v["onion_v4"];
    let server_secret = x25519_secret_from_ed25519_seed(&bytes(&v["keys"]["backend_seed"]));
    let server_public: [u8; 32] = bytes(&o["server_x25519_pkey"]);
    let client_public: [u8; 32] = bytes(&o["client_x25519_pkey"]);
    let shared = x25519_dalek::x25519(server_secret, client_public);
    assert_eq!(hex::encode(shared), "ae6ee30c0b1cddfb0f3df2488bb32124c4d7b183740f7774d26424fce3fc107a");
    let k_x = derive_key(Cipher::XChaCha20Poly1305, &shared, &client_public, &server_public);
    assert_eq!(hex::encode(k_x), o["shared_key"].as_str().unwrap());
    let k_aes = derive_key(Cipher::Aes256Gcm, &shared, &client_public, &server_public);
    assert_eq!(hex::encode(k_aes), "6350bc30ec49346bbeded583327e18784c629c7a25d1ed954ec7c995d7458f86");

    let plaintext = o["plaintext_utf8"].as_str().unwrap().as_bytes();
    let wire = hex::decode(o["wire_request"].as_str().unwrap()).unwrap();
    let outer = parse_outer(&wire).unwrap();
    assert_eq!(outer.cipher, Cipher::XChaCha20Poly1305);
    assert_eq!(outer.ephemeral_key, client_public);
    assert_eq!(hex::encode(outer.blob), o["encrypted_payload"].as_str().unwrap());
    assert_eq!(decrypt(Cipher::XChaCha20Poly1305, &k_x, outer.blob).unwrap(), plaintext);
    let inner = parse_inner(plaintext).unwrap();
    assert_eq!((inner.method.as_str(), inner.path.as_str()), ("POST", "/get_pro_revocations"));
    // The same request sealed by us with the pinned nonce is byte-identical.
    assert_eq!(
        encrypt_with_nonce(Cipher::XChaCha20Poly1305, &k_x, &bytes::<24>(&o["nonce"]), plaintext).unwrap(),
        outer.blob
    );

    // The AES-GCM form (no enc_type: the default).
    let aes_wire = hex::decode("9d0000000606060606060606060606066de3fe85ec7697e9635eadaa3703ca1ddb294c73e438b9bfc6e15901f411d70f3942af599c734061f4fc70d60a939f584a1f8253b8accc73adb023c0451899b91989c2e54229df229a160474d48b2b5834da13909921409a0c2a8f650882a00159303264c4570fe6c2939d1c6c79d69043bc5d43fe1c7cfb28e82846d6dfdc0e5a39389738602adff76d90c9ac68c76d727b22657068656d6572616c5f6b6579223a202235646665646433623662643437663666613238656531356439363964356262306561353337373464343838626461663964663163366530313234623365663232227d").unwrap();
    let outer = parse_outer(&aes_wire).unwrap();
    assert_eq!(outer.cipher, Cipher::Aes256Gcm);
    assert_eq!(decrypt(Cipher::Aes256Gcm, &k_aes, outer.blob).unwrap(), plaintext);

    // Replies (nonces forced to 0x05), from a fresh database.
    let reply = b"l62:{\"code\": 200, \"headers\": {\"content-type\": \"application/json\"}}77:{\"result\":{\"items\":[],\"retry_in_s\":86400,\"ticket\":0,\"version\":0},\"status\":0}\ne";
    assert_eq!(
        hex::encode(encrypt_with_nonce(Cipher::XChaCha20Poly1305, &k_x, &[5; 24], reply).unwrap()),
        "05050505050505050505050505050505050505050505050566722ef115a16f310658087bc4924cf485c6001ee4c7dfa9adf5f1a9ae653f922337a1cd7321dd932bccde5f56e0772e5af6b7aa8a305df3ed6e58e91dec750147ded84cc6d7328fdd5e6751112aa9be13aeb8d6b8b108005e8f1ac5dd8abef61a85fabc8f9165a97e23f617285a38e5a26b6c96bd6ee4f85d7119d1e341bbc03bdffdc9ccce434a6254915adb5137c3cf01efd1c26a7d8632898cce9919638b5ede2e"
    );
    assert_eq!(
        hex::encode(encrypt_with_nonce(Cipher::Aes256Gcm, &k_aes, &[5; 12], reply).unwrap()),
        "05050505050505050505050557382e31cd86e3e8822515a18d60bd120579239eba5757cc083ed39e91c141aa9f7b4ff6bdf742cecff39a0c6c8c144adb5fabf3d76c1a817c99c97468f61ad4da86eb6d054f9c0da7e8bb6b1128bba298513ccb0bfdc479bca2f72062e2fae42262a64572a3219a617aefee49e7f10617771008316157f056b7a35ffce80ab0334333b160a167d07989bfe2854d573b040441c3b04e534d0418977cda900c8c2228bb"
    );
    assert_eq!(
        pro_engine::onion::encode_inner_response(200, &[("content-type", "application/json")], &reply[69..146]),
        reply.to_vec()
    );
}

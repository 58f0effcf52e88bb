//! A client written from the spec: builds signed requests the way libsession does and
//! verifies proofs the way receiving clients do.

use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use pro_engine::domain::hashes::{
    add_pro_payment_hash, generate_pro_proof_hash, get_pro_details_hash, proof_hash, set_refund_requested_hash,
};
use pro_engine::domain::types::{PaymentProvider, PaymentTx};
use serde_json::{Value, json};

pub struct Key {
    pub sk: SigningKey,
}

impl Key {
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self { sk: SigningKey::from_bytes(&seed) }
    }
    pub fn seeded(b: u8) -> Self {
        Self::from_seed([b; 32])
    }
    pub fn random() -> Self {
        let mut s = [0u8; 32];
        getrandom::fill(&mut s).unwrap();
        Self::from_seed(s)
    }
    pub fn pk(&self) -> [u8; 32] {
        self.sk.verifying_key().to_bytes()
    }
    pub fn hex(&self) -> String {
        hex::encode(self.pk())
    }
    pub fn sign(&self, digest: &[u8; 32]) -> String {
        hex::encode(self.sk.sign(digest).to_bytes())
    }
}

pub fn payment_tx_json(tx: &PaymentTx) -> Value {
    match tx.provider() {
        PaymentProvider::Google => json!({
            "provider": 1, "google_payment_token": tx.google_payment_token, "google_order_id": tx.google_order_id
        }),
        PaymentProvider::Apple => json!({ "provider": 2, "apple_tx_id": tx.apple_tx_id }),
        p => json!({ "provider": p.as_i64() }),
    }
}

/// An App Store payment as the Apple receiver records it (all three ids `id`, a month long, no
/// app account token), witnessed at `now`.
pub fn apple_payment(now: i64, id: &str) -> pro_engine::store::rows::NewPayment {
    pro_engine::store::rows::NewPayment {
        tx: PaymentTx::apple(id, id, id),
        plan: pro_engine::domain::types::ProPlan::OneMonth,
        expiry_unix_ts_ms: now + 30 * 86_400_000,
        unredeemed_unix_ts_ms: now,
        platform_refund_expiry_unix_ts_ms: 0,
        google_obfuscated_account_id: None,
        apple_app_account_token: String::new(),
    }
}

pub fn add_pro_payment(master: &Key, rotating: &Key, tx: &PaymentTx) -> Value {
    let d = add_pro_payment_hash(0, &master.pk(), &rotating.pk(), tx);
    json!({
        "version": 0,
        "master_pkey": master.hex(),
        "rotating_pkey": rotating.hex(),
        "master_sig": master.sign(&d),
        "rotating_sig": rotating.sign(&d),
        "payment_tx": payment_tx_json(tx),
    })
}

pub fn generate_pro_proof(master: &Key, rotating: &Key, ts: i64) -> Value {
    let d = generate_pro_proof_hash(0, &master.pk(), &rotating.pk(), ts as u64);
    json!({
        "version": 0,
        "master_pkey": master.hex(),
        "rotating_pkey": rotating.hex(),
        "unix_ts_ms": ts,
        "master_sig": master.sign(&d),
        "rotating_sig": rotating.sign(&d),
    })
}

pub fn get_pro_details(master: &Key, ts: i64, count: u32) -> Value {
    let d = get_pro_details_hash(0, &master.pk(), ts as u64, count);
    json!({ "version": 0, "master_pkey": master.hex(), "master_sig": master.sign(&d), "unix_ts_ms": ts, "count": count })
}

pub fn set_refund_requested(master: &Key, ts: i64, refund_ts: i64, apple_tx_id: &str) -> Value {
    let tx = PaymentTx::apple_tx(apple_tx_id);
    let d = set_refund_requested_hash(0, &master.pk(), ts as u64, refund_ts as u64, &tx);
    json!({
        "version": 0,
        "master_pkey": master.hex(),
        "master_sig": master.sign(&d),
        "unix_ts_ms": ts,
        "refund_requested_unix_ts_ms": refund_ts,
        "payment_tx": { "provider": 2, "apple_tx_id": apple_tx_id },
    })
}

pub fn revocations(ticket: i64) -> Value {
    json!({ "version": 0, "ticket": ticket })
}

/// Checks a proof result the way a receiving client does: shape, then the backend signature.
pub fn verify_proof(result: &Value, backend_pk: &[u8; 32]) -> bool {
    let (Some(gih), Some(rot), Some(exp), Some(sig), Some(0)) = (
        result["gen_index_hash"].as_str(),
        result["rotating_pkey"].as_str(),
        result["expiry_unix_ts_ms"].as_u64(),
        result["sig"].as_str(),
        result["version"].as_u64(),
    ) else {
        return false;
    };
    let (Ok(gih), Ok(rot), Ok(sig)) = (hex::decode(gih), hex::decode(rot), hex::decode(sig)) else {
        return false;
    };
    let (Ok(gih), Ok(rot), Ok(sig)) = (<[u8; 32]>::try_from(gih), <[u8; 32]>::try_from(rot), <[u8; 64]>::try_from(sig))
    else {
        return false;
    };
    let digest = proof_hash(0, &gih, &rot, exp);
    VerifyingKey::from_bytes(backend_pk)
        .is_ok_and(|vk| vk.verify(&digest, &ed25519_dalek::Signature::from_bytes(&sig)).is_ok())
}

//! Checks and helpers shared by the routes: key decoding, signature rules, timestamp
//! windows, masked identifiers, and proof issuing.

use pro_engine::domain::hashes::gen_index_hash;
use pro_engine::domain::keys::{decode_hex_exact, mask, verify_signature};
use pro_engine::domain::pyfmt::python_float_repr;
use pro_engine::domain::time::TIMESTAMP_TOLERANCE_MS;
use pro_engine::domain::types::{PaymentProvider, PaymentTx};
use pro_engine::proof_signer::SignProof;
use serde::Serialize;

use super::AppState;
use super::json::JsonInt;

pub fn decode_key(label: &str, hex: &str, errors: &mut Vec<String>) -> Option<[u8; 32]> {
    decode_hex_exact::<32>(label, hex).map_err(|e| errors.push(e)).ok()
}

pub fn decode_sig(label: &str, hex: &str, errors: &mut Vec<String>) -> Option<[u8; 64]> {
    decode_hex_exact::<64>(label, hex).map_err(|e| errors.push(e)).ok()
}

/// Keys and signatures of a request signed by both the master and the rotating key.
pub struct SignedPair {
    pub master: [u8; 32],
    pub rotating: [u8; 32],
    pub master_sig: [u8; 64],
    pub rotating_sig: [u8; 64],
}

/// Upstream's signature and key-sanity rules for requests signed by both keys; errors here
/// are answered with status 1.
pub fn verify_pair(state: &AppState, p: &SignedPair, digest: &[u8; 32]) -> Result<(), Vec<String>> {
    let hex_m = mask(&hex::encode(p.master), state.unsafe_logging);
    if !verify_signature(&p.master, digest, &p.master_sig) {
        return Err(vec![format!(
            "Failed to verify signature from master key {hex_m}: Signature was forged or corrupt"
        )]);
    }
    if !verify_signature(&p.rotating, digest, &p.rotating_sig) {
        let hex_r = mask(&hex::encode(p.rotating), state.unsafe_logging);
        return Err(vec![format!(
            "Failed to verify signature from rotating key {hex_r}: Signature was forged or corrupt"
        )]);
    }
    let mut errors = Vec::new();
    if state.backend_pubkey == p.master || state.backend_pubkey == p.rotating {
        errors.push("Internal key error during adding payment: please notify the devs".to_string());
    }
    if p.master == p.rotating {
        errors.push(format!("Master and rotating key cannot be the same was: {hex_m}"));
    }
    if p.master == [0; 32] {
        errors.push("Master key cannot be the zero key".into());
    }
    if p.rotating == [0; 32] {
        errors.push("Rotating key cannot be the zero key".into());
    }
    if p.master_sig == p.rotating_sig {
        errors.push("Master and rotating signature cannot be the same".into());
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// generate_pro_proof's window: `now ± 70 s`, both ends inclusive, compared as integers.
pub fn check_nonce_window(ts: &JsonInt, now: i64, errors: &mut Vec<String>) {
    let (min, max) = (now - TIMESTAMP_TOLERANCE_MS, now + TIMESTAMP_TOLERANCE_MS);
    if ts.value < i128::from(min) {
        errors.push(format!("Nonce timestamp is too far in the past: {ts} (min {min})"));
    } else if ts.value > i128::from(max) {
        errors.push(format!("Nonce timestamp is too far in the future: {ts} (max {max})"));
    }
}

/// get_pro_details' and the refund route's window: rejected when `|now − ts| ≥ 70 s`, with
/// the difference printed as upstream's float.
pub fn check_delta_window(ts: &JsonInt, now_f64: f64, what: &str, errors: &mut Vec<String>) {
    let ts_f = ts.to_string().parse::<f64>().unwrap_or(f64::INFINITY);
    let delta = now_f64 - ts_f;
    // NaN (an unparseable timestamp) is out of the window too.
    if delta.is_nan() || delta.abs() >= TIMESTAMP_TOLERANCE_MS as f64 {
        errors.push(format!("Timestamp is too old to permit {what}, delta was {}ms", python_float_repr(delta)));
    }
}

/// Describes a payment for messages without revealing its identifiers (Apple ids are never
/// shown at all).
pub fn safe_payment_label(tx: &PaymentTx, unsafe_logging: bool) -> String {
    let m = |s: &str| mask(s, unsafe_logging);
    let (google, rangeproof) = match tx.provider() {
        PaymentProvider::Google => {
            (format!("{}/{}", m(&tx.google_payment_token), m(&tx.google_order_id)), String::new())
        }
        PaymentProvider::Rangeproof => ("/".to_string(), m(&tx.rangeproof_order_id)),
        _ => ("/".to_string(), String::new()),
    };
    format!("{}, google=({google}), rangeproof={rangeproof}", tx.provider())
}

/// The proof object of `/add_pro_payment` and `/generate_pro_proof` (keys in wire order).
#[derive(Debug, Serialize)]
pub struct ProofJson {
    pub expiry_unix_ts_ms: u64,
    pub gen_index_hash: String,
    pub rotating_pkey: String,
    pub sig: String,
    pub version: u8,
}

/// Signs a proof for `gen_index` and the rotating key, valid until `expiry`.
pub async fn issue_proof(
    state: &AppState,
    gen_index: u64,
    rotating: [u8; 32],
    expiry: i64,
) -> Result<ProofJson, String> {
    let gih = gen_index_hash(gen_index, &state.gen_index_salt);
    let expiry = u64::try_from(expiry).unwrap_or(0);
    let sig = state
        .signer
        .send(SignProof { gen_index_hash: gih, rotating_pkey: rotating, expiry_unix_ts_ms: expiry })
        .await
        .map_err(|e| format!("Failed to sign the proof: {e}"))?;
    Ok(ProofJson {
        expiry_unix_ts_ms: expiry,
        gen_index_hash: hex::encode(gih),
        rotating_pkey: hex::encode(rotating),
        sig: hex::encode(sig),
        version: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payment_labels() {
        let g = PaymentTx::google("token-abc", "GPA.1234-5678");
        assert_eq!(safe_payment_label(&g, false), "GooglePlayStore, google=(to\u{2026}bc/GPA\u{2026}678), rangeproof=");
        assert_eq!(
            safe_payment_label(&PaymentTx::apple_tx("2000000123456789"), false),
            "iOSAppStore, google=(/), rangeproof="
        );
        assert_eq!(safe_payment_label(&g, true), "GooglePlayStore, google=(token-abc/GPA.1234-5678), rangeproof=");
    }
}

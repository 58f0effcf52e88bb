//! `verify-proof`: checks a Pro proof offline the way a receiving client does (libsession's
//! `ProProof::status`): the backend signature over the `ProProof________` digest first, then
//! the expiry (a proof is active while `now <= expiry`).

use std::io::Read;

use pro_engine::domain::hashes::proof_hash;
use pro_engine::domain::keys::verify_signature;
use serde_json::Value;

use super::{CliError, CliResult, now_ms, readable};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The backend's Ed25519 public key (64 hex, optional `0x`).
    #[arg(long)]
    pub backend_pubkey: String,
    /// The proof as JSON: the `result` of /add_pro_payment or /generate_pro_proof, or the
    /// whole response; `-` reads it from standard input.
    #[arg(long)]
    pub proof: String,
    /// Check the expiry at this time (Unix ms) instead of now.
    #[arg(long)]
    pub now_ms: Option<i64>,
}

/// The fields of a proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    pub version: u8,
    pub gen_index_hash: [u8; 32],
    pub rotating_pkey: [u8; 32],
    pub expiry_unix_ts_ms: u64,
    pub sig: [u8; 64],
}

/// Why a proof is not valid, in libsession's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Valid,
    InvalidProBackendSig,
    Expired,
}

fn hex_field<const N: usize>(obj: &serde_json::Map<String, Value>, names: &[&str]) -> Result<[u8; N], String> {
    let (name, value) = names
        .iter()
        .find_map(|n| obj.get(*n).map(|v| (*n, v)))
        .ok_or_else(|| format!("the proof has no \"{}\"", names[0]))?;
    let text = value.as_str().ok_or_else(|| format!("\"{name}\" is not a string"))?;
    let mut out = [0u8; N];
    if text.len() != 2 * N {
        return Err(format!("\"{name}\" must be {} hex characters, got {}", 2 * N, text.chars().count()));
    }
    hex::decode_to_slice(text, &mut out).map_err(|e| format!("\"{name}\" is not valid hex: {e}"))?;
    Ok(out)
}

/// Reads a proof from JSON: the proof object itself or a response envelope holding it.
pub fn parse_proof(text: &str) -> Result<Proof, String> {
    let v: Value = serde_json::from_str(text.trim()).map_err(|e| format!("not JSON: {e}"))?;
    let v = match v.get("result") {
        Some(inner @ Value::Object(_)) => inner.clone(),
        _ => v,
    };
    let obj = v.as_object().ok_or("the proof is not a JSON object")?;
    let version = obj
        .get("version")
        .and_then(Value::as_u64)
        .and_then(|n| u8::try_from(n).ok())
        .ok_or("\"version\" is missing or not a small integer")?;
    let expiry_unix_ts_ms = obj
        .get("expiry_unix_ts_ms")
        .and_then(Value::as_u64)
        .ok_or("\"expiry_unix_ts_ms\" is missing or not a non-negative integer")?;
    Ok(Proof {
        version,
        gen_index_hash: hex_field(obj, &["gen_index_hash"])?,
        rotating_pkey: hex_field(obj, &["rotating_pkey", "rotating_pubkey"])?,
        expiry_unix_ts_ms,
        sig: hex_field(obj, &["sig"])?,
    })
}

/// The client's check: the signature first, then the expiry at `now`.
pub fn verify(proof: &Proof, backend_pubkey: &[u8; 32], now: i64) -> Verdict {
    let digest = proof_hash(proof.version, &proof.gen_index_hash, &proof.rotating_pkey, proof.expiry_unix_ts_ms);
    if !verify_signature(backend_pubkey, &digest, &proof.sig) {
        return Verdict::InvalidProBackendSig;
    }
    if u64::try_from(now).unwrap_or(0) > proof.expiry_unix_ts_ms {
        return Verdict::Expired;
    }
    Verdict::Valid
}

pub fn run(args: Args) -> CliResult {
    let backend = super::parse_hex_key(&args.backend_pubkey)
        .map_err(|e| CliError::fail(format!("Failed to parse backend public key: {e}")))?;
    let text = if args.proof == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::fail(format!("Failed to read the proof: {e}")))?;
        s
    } else {
        args.proof
    };
    let proof = parse_proof(&text).map_err(|e| CliError::fail(format!("Failed to parse proof: {e}")))?;
    let now = args.now_ms.unwrap_or_else(now_ms);
    let expiry = i64::try_from(proof.expiry_unix_ts_ms).unwrap_or(i64::MAX);
    match verify(&proof, &backend, now) {
        Verdict::Valid => {
            println!("Proof is valid");
            println!("  Backend Key:    {}", hex::encode(backend));
            println!("  Gen Index Hash: {}", hex::encode(proof.gen_index_hash));
            println!("  Rotating PKey:  {}", hex::encode(proof.rotating_pkey));
            println!("  Expiry:         {}", readable(expiry));
            Ok(())
        }
        Verdict::InvalidProBackendSig => Err(CliError::fail(format!(
            "Proof is not valid: its signature does not verify against backend key {} (InvalidProBackendSig)",
            hex::encode(backend)
        ))),
        Verdict::Expired => Err(CliError::fail(format!(
            "Proof is not valid: it expired at {}, the check time is {} (Expired)",
            readable(expiry),
            readable(now)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn signed(expiry: u64) -> (String, [u8; 32]) {
        let backend = SigningKey::from_bytes(&[0xCD; 32]);
        let (gih, rot) = ([1u8; 32], [2u8; 32]);
        let sig = backend.sign(&proof_hash(0, &gih, &rot, expiry)).to_bytes();
        let json = serde_json::json!({"result": {
            "expiry_unix_ts_ms": expiry, "gen_index_hash": hex::encode(gih), "rotating_pkey": hex::encode(rot),
            "sig": hex::encode(sig), "version": 0}, "status": 0});
        (json.to_string(), backend.verifying_key().to_bytes())
    }

    #[test]
    fn checks_signature_then_expiry() {
        let (json, backend) = signed(1000);
        let proof = parse_proof(&json).unwrap();
        assert_eq!(verify(&proof, &backend, 1000), Verdict::Valid);
        assert_eq!(verify(&proof, &backend, 1001), Verdict::Expired);
        assert_eq!(verify(&proof, &[7; 32], 0), Verdict::InvalidProBackendSig);
        let tampered = Proof { expiry_unix_ts_ms: 2000, ..proof.clone() };
        assert_eq!(verify(&tampered, &backend, 0), Verdict::InvalidProBackendSig);
        // A tampered proof is reported as a bad signature even when it is also expired.
        assert_eq!(verify(&tampered, &backend, 5000), Verdict::InvalidProBackendSig);
    }

    #[test]
    fn parse_errors_are_clear() {
        assert!(parse_proof("nope").unwrap_err().starts_with("not JSON"));
        assert_eq!(parse_proof("{}").unwrap_err(), "\"version\" is missing or not a small integer");
        let (json, _) = signed(5);
        let short = json.replace("\"sig\":\"", "\"sig\":\"ab");
        assert!(parse_proof(&short).unwrap_err().contains("\"sig\" must be 128 hex characters"));
        let renamed = json.replace("rotating_pkey", "rotating_pubkey");
        assert!(parse_proof(&renamed).is_ok());
    }
}

//! `POST /generate_pro_proof`: a new proof for a new rotating key, under the user's current
//! generation, while the entitlement lasts and is not revoked.

use pro_engine::db_reader::GetProofEntitlement;
use pro_engine::domain::hashes::generate_pro_proof_hash;
use pro_engine::domain::keys::mask;
use pro_engine::domain::time::{clamp_proof_expiry, format_readable};
use pro_engine::store::ops::ProofEntitlement;
use tracing::error;

use super::AppState;
use super::checks::{SignedPair, check_nonce_window, decode_key, decode_sig, issue_proof, verify_pair};
use super::json::{Envelope, Fields, STATUS_GENERIC_ERROR, STATUS_PARSE_ERROR, parse_body};

pub async fn handle(state: &AppState, body: &[u8]) -> Envelope {
    let req = match parse_body(body) {
        Ok(m) => m,
        Err(e) => return Envelope::err1(STATUS_PARSE_ERROR, e),
    };
    let f = Fields::new(Some(&req));
    let mut errors = Vec::new();
    let version = f.int("version", &mut errors);
    let master_hex = f.string("master_pkey", &mut errors);
    let rotating_hex = f.string("rotating_pkey", &mut errors);
    let ts = f.int("unix_ts_ms", &mut errors);
    let master_sig_hex = f.string("master_sig", &mut errors);
    let rotating_sig_hex = f.string("rotating_sig", &mut errors);
    let (Some(version), Some(master_hex), Some(rotating_hex), Some(ts), Some(master_sig_hex), Some(rotating_sig_hex)) =
        (version, master_hex, rotating_hex, ts, master_sig_hex, rotating_sig_hex)
    else {
        return Envelope::err(STATUS_PARSE_ERROR, errors);
    };

    if version.value != 0 {
        errors.push(format!("Unrecognised version passed: {version}"));
    }
    let master = decode_key("Master public key", master_hex, &mut errors);
    let rotating = decode_key("Rotating public key", rotating_hex, &mut errors);
    let master_sig = decode_sig("Master key signature", master_sig_hex, &mut errors);
    let rotating_sig = decode_sig("Rotating key signature", rotating_sig_hex, &mut errors);
    check_nonce_window(&ts, state.clock.now_ms(), &mut errors);
    let (Some(master), Some(rotating), Some(master_sig), Some(rotating_sig), Some(ts)) =
        (master, rotating, master_sig, rotating_sig, ts.in_range::<i64>())
    else {
        return Envelope::err(STATUS_PARSE_ERROR, errors);
    };
    if !errors.is_empty() {
        return Envelope::err(STATUS_PARSE_ERROR, errors);
    }

    let pair = SignedPair { master, rotating, master_sig, rotating_sig };
    if let Err(errors) = verify_pair(state, &pair, &generate_pro_proof_hash(0, &master, &rotating, ts as u64)) {
        return Envelope::err(STATUS_GENERIC_ERROR, errors);
    }

    let who = mask(&hex::encode(master), state.unsafe_logging);
    let user = match state.reader.read(GetProofEntitlement { master }).await {
        Ok(ProofEntitlement::Entitled(u)) => u,
        Ok(ProofEntitlement::NoUser) => {
            return Envelope::err1(
                STATUS_GENERIC_ERROR,
                format!("User {who} does not have an active payment registered for it"),
            );
        }
        Ok(ProofEntitlement::Revoked) => {
            return Envelope::err1(STATUS_GENERIC_ERROR, format!("User {who} payment has been revoked"));
        }
        Err(e) => {
            error!("Looking up the entitlement of {who} failed: {e}");
            return Envelope::err1(
                STATUS_GENERIC_ERROR,
                format!("Failed to look up the user's entitlement, try again: {e}"),
            );
        }
    };

    // The client's own timestamp (already within the window) is the "now" of this proof.
    let expiry = clamp_proof_expiry(ts, user.expiry_unix_ts_ms);
    if ts > expiry {
        let grace = if user.auto_renewing { user.grace_period_duration_ms } else { 0 };
        let base = user.expiry_unix_ts_ms - grace;
        return Envelope::err1(
            STATUS_GENERIC_ERROR,
            format!(
                "User {who} entitlement expired at {} ({}) ({} ({}) + {grace})",
                user.expiry_unix_ts_ms,
                format_readable(user.expiry_unix_ts_ms),
                base,
                format_readable(base),
            ),
        );
    }
    match issue_proof(state, user.gen_index, rotating, expiry).await {
        Ok(proof) => Envelope::ok(&proof),
        Err(e) => Envelope::err1(STATUS_GENERIC_ERROR, e),
    }
}

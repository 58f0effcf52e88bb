//! `POST /set_payment_refund_requested`: a device records (or clears, with 0) that a refund was
//! requested for one of its own Apple payments.

use pro_engine::db_writer::{SetRefundRequested, Write, WriteError};
use pro_engine::domain::hashes::set_refund_requested_hash;
use pro_engine::domain::keys::verify_signature;
use pro_engine::domain::types::{PaymentProvider, PaymentTx};
use serde::Serialize;
use tracing::error;

use super::AppState;
use super::checks::{check_delta_window, decode_key, decode_sig};
use super::json::{Envelope, Fields, STATUS_GENERIC_ERROR, STATUS_PARSE_ERROR, parse_body};

#[derive(Serialize)]
struct Updated {
    updated: bool,
    version: u8,
}

pub async fn handle(state: &AppState, body: &[u8]) -> Envelope {
    let req = match parse_body(body) {
        Ok(m) => m,
        Err(e) => return Envelope::err1(STATUS_PARSE_ERROR, e),
    };
    let f = Fields::new(Some(&req));
    let mut errors = Vec::new();
    let version = f.int("version", &mut errors);
    let master_hex = f.string("master_pkey", &mut errors);
    let sig_hex = f.string("master_sig", &mut errors);
    let payment_tx = f.object("payment_tx", &mut errors);
    let ts = f.int("unix_ts_ms", &mut errors);
    let refund_ts = f.int("refund_requested_unix_ts_ms", &mut errors);
    let tx_fields = Fields::new(payment_tx);
    let provider = tx_fields.int("provider", &mut errors);
    let (Some(version), Some(master_hex), Some(sig_hex), Some(ts), Some(refund_ts), Some(provider)) =
        (version, master_hex, sig_hex, ts, refund_ts, provider)
    else {
        return Envelope::err(STATUS_PARSE_ERROR, errors);
    };

    if version.value != 0 {
        errors.push(format!("Unrecognised version passed: {version}"));
    }
    let master = decode_key("Master public key", master_hex, &mut errors);
    let sig = decode_sig("Master key signature", sig_hex, &mut errors);
    let (Some(master), Some(sig)) = (master, sig) else {
        return Envelope::err(STATUS_PARSE_ERROR, errors);
    };
    if !errors.is_empty() {
        return Envelope::err(STATUS_PARSE_ERROR, errors);
    }

    // Only Apple payments can carry a client-set refund request.
    let tx_id = match provider.in_range::<i64>().and_then(PaymentProvider::from_i64) {
        Some(PaymentProvider::Apple) => tx_fields.string("apple_tx_id", &mut errors),
        Some(_) => return Envelope::err1(STATUS_PARSE_ERROR, "Bad payment provider given"),
        None => {
            return Envelope::err1(STATUS_PARSE_ERROR, format!("Unrecognised payment provider: {provider}"));
        }
    };
    check_delta_window(&ts, state.clock.now_ms_f64(), "refund request update", &mut errors);
    let refund = refund_ts.in_range::<i64>().filter(|v| *v >= 0);
    if refund.is_none() {
        errors.push(format!("refund_requested_unix_ts_ms must be between 0 and {}, received: {refund_ts}", i64::MAX));
    }
    let (Some(tx_id), Some(ts), Some(refund)) = (tx_id, ts.in_range::<u64>(), refund) else {
        return Envelope::err(STATUS_PARSE_ERROR, errors);
    };
    if !errors.is_empty() {
        return Envelope::err(STATUS_PARSE_ERROR, errors);
    }

    let payment = PaymentTx::apple_tx(tx_id);
    if !verify_signature(&master, &set_refund_requested_hash(0, &master, ts, refund as u64, &payment), &sig) {
        return Envelope::err1(STATUS_PARSE_ERROR, "Signature failed to be verified");
    }

    // Only the signer's own payment is touched; anything else answers `updated: false`.
    let cmd = SetRefundRequested { payment, refund_requested_unix_ts_ms: refund, owner: Some(master) };
    match state.writer.send(Write(cmd)).await {
        Ok(updated) => Envelope::ok(&Updated { updated, version: 0 }),
        Err(WriteError::Rejected(why)) => Envelope::err1(STATUS_GENERIC_ERROR, why),
        Err(e) => {
            error!("Setting a refund request failed: {e}");
            Envelope::err1(STATUS_GENERIC_ERROR, format!("Failed to update the refund request, try again: {e}"))
        }
    }
}

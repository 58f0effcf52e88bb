//! `POST /get_pro_details`: a user's entitlement summary and payment history, signed by the
//! master key.

use std::collections::BTreeMap;

use pro_engine::db_reader::GetProDetails;
use pro_engine::domain::hashes::get_pro_details_hash;
use pro_engine::domain::keys::verify_signature;
use pro_engine::domain::types::{PaymentProvider, UserProStatus};
use pro_engine::store::rows::PaymentRow;
use serde::Serialize;
use serde_json::Value;
use tracing::error;

use super::AppState;
use super::checks::{check_delta_window, decode_key, decode_sig};
use super::json::{Envelope, Fields, STATUS_GENERIC_ERROR, STATUS_PARSE_ERROR, parse_body};

#[derive(Serialize)]
struct Details {
    auto_renewing: bool,
    error_report: u8,
    expiry_unix_ts_ms: i64,
    grace_period_duration_ms: i64,
    items: Vec<BTreeMap<&'static str, Value>>,
    payments_total: i64,
    refund_requested_unix_ts_ms: i64,
    status: i64,
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
    let ts = f.int("unix_ts_ms", &mut errors);
    let count = f.int("count", &mut errors);
    let (Some(version), Some(master_hex), Some(sig_hex), Some(ts), Some(count)) =
        (version, master_hex, sig_hex, ts, count)
    else {
        return Envelope::err(STATUS_PARSE_ERROR, errors);
    };

    if version.value != 0 {
        errors.push(format!("Unrecognised version passed: {version}"));
    }
    let master = decode_key("Master public key", master_hex, &mut errors);
    let sig = decode_sig("Master key signature", sig_hex, &mut errors);
    if count.value < 0 {
        errors.push(format!("Count was negative: {count}"));
    } else if count.in_range::<u32>().is_none() {
        errors.push(format!("Count was larger than the maximum of {}: {count}", u32::MAX));
    }
    check_delta_window(&ts, state.clock.now_ms_f64(), "retrieval of payments", &mut errors);
    let (Some(master), Some(sig), Some(count), Some(ts)) = (master, sig, count.in_range::<u32>(), ts.in_range::<u64>())
    else {
        return Envelope::err(STATUS_PARSE_ERROR, errors);
    };
    if !errors.is_empty() {
        return Envelope::err(STATUS_PARSE_ERROR, errors);
    }
    if !verify_signature(&master, &get_pro_details_hash(0, &master, ts, count), &sig) {
        return Envelope::err1(STATUS_PARSE_ERROR, "Signature failed to be verified");
    }

    let d = match state.reader.read(GetProDetails { master, count }).await {
        Ok(d) => d,
        Err(e) => {
            error!("Reading pro details failed: {e}");
            return Envelope::err1(STATUS_GENERIC_ERROR, format!("Failed to read the payment details, try again: {e}"));
        }
    };
    let (expiry, grace, auto, refund) = d.user.as_ref().map_or((0, 0, false, 0), |u| {
        (u.expiry_unix_ts_ms, u.grace_period_duration_ms, u.auto_renewing, u.refund_requested_unix_ts_ms)
    });
    // Judged at the client's own timestamp (within the window).
    let status = if d.payments_total == 0 {
        UserProStatus::NeverBeenPro
    } else if i128::from(ts) <= i128::from(expiry) && !d.user_generation_revoked {
        UserProStatus::Active
    } else {
        UserProStatus::Expired
    };
    Envelope::ok(&Details {
        auto_renewing: auto,
        error_report: u8::from(d.error_report),
        expiry_unix_ts_ms: expiry,
        grace_period_duration_ms: if auto { grace } else { 0 },
        items: d.items.iter().map(item).collect(),
        payments_total: d.payments_total,
        refund_requested_unix_ts_ms: refund,
        status: status.as_i64(),
        version: 0,
    })
}

/// One history entry; the identifier keys depend on the provider.
fn item(p: &PaymentRow) -> BTreeMap<&'static str, Value> {
    let mut m: BTreeMap<&'static str, Value> = BTreeMap::new();
    m.insert("status", p.status.into());
    m.insert("plan", p.plan.into());
    m.insert("payment_provider", p.payment_provider.into());
    m.insert("auto_renewing", p.auto_renewing.into());
    m.insert("unredeemed_unix_ts_ms", p.unredeemed_unix_ts_ms.into());
    m.insert("redeemed_unix_ts_ms", p.redeemed_unix_ts_ms.into());
    m.insert("expiry_unix_ts_ms", p.expiry_unix_ts_ms.into());
    m.insert("grace_period_duration_ms", p.grace_period_duration_ms.into());
    m.insert("platform_refund_expiry_unix_ts_ms", p.platform_refund_expiry_unix_ts_ms.into());
    m.insert("revoked_unix_ts_ms", p.revoked_unix_ts_ms.into());
    m.insert("refund_requested_unix_ts_ms", p.refund_requested_unix_ts_ms.into());
    match PaymentProvider::from_i64(p.payment_provider) {
        Some(PaymentProvider::Google) => {
            m.insert("google_payment_token", p.google_payment_token.clone().into());
            m.insert("google_order_id", p.google_order_id.clone().into());
        }
        Some(PaymentProvider::Apple) => {
            m.insert("apple_original_tx_id", p.apple_original_tx_id.clone().into());
            m.insert("apple_tx_id", p.apple_tx_id.clone().into());
            m.insert("apple_web_line_order_id", p.apple_web_line_order_tx_id.clone().into());
        }
        Some(PaymentProvider::Rangeproof) => {
            m.insert("rangeproof_order_id", p.rangeproof_order_id.clone().into());
        }
        _ => {}
    }
    m
}

//! `POST /add_pro_payment`: a client claims a payment the backend witnessed from a store and
//! receives the first proof for its rotating key.

use pro_engine::db_writer::{ClaimPayment, Write, WriteError};
use pro_engine::domain::hashes::add_pro_payment_hash;
use pro_engine::domain::pyfmt::python_float_repr;
use pro_engine::domain::time::{DAY_MS, YEAR_MS, clamp_proof_expiry, round_up_to_day};
use pro_engine::domain::types::{PaymentProvider, PaymentTx, ProPlan, PubKeyBytes, RedeemOutcome};
use pro_engine::google::mapping::ClaimableBy;
use pro_engine::store::ops::DevPayment;
use serde_json::Value;
use tracing::{error, info};

use super::AppState;
use super::checks::{SignedPair, decode_key, decode_sig, issue_proof, safe_payment_label, verify_pair};
use super::json::{Envelope, Fields, STATUS_GENERIC_ERROR, STATUS_PARSE_ERROR, parse_body, python_type};

const STATUS_ALREADY_REDEEMED: i64 = 100;
const STATUS_UNKNOWN_PAYMENT: i64 = 101;

pub async fn handle(state: &AppState, body: &[u8]) -> Envelope {
    let req = match parse_body(body) {
        Ok(m) => m,
        Err(e) => return Envelope::err1(STATUS_PARSE_ERROR, e),
    };
    let top = Fields::new(Some(&req));
    let mut errors = Vec::new();
    let version = top.int("version", &mut errors);
    let master_hex = top.string("master_pkey", &mut errors);
    let rotating_hex = top.string("rotating_pkey", &mut errors);
    let master_sig_hex = top.string("master_sig", &mut errors);
    let rotating_sig_hex = top.string("rotating_sig", &mut errors);
    let payment_tx = top.object("payment_tx", &mut errors);
    let tx_fields = Fields::new(payment_tx);
    let provider = tx_fields.int("provider", &mut errors);
    let (
        Some(version),
        Some(master_hex),
        Some(rotating_hex),
        Some(master_sig_hex),
        Some(rotating_sig_hex),
        Some(provider),
    ) = (version, master_hex, rotating_hex, master_sig_hex, rotating_sig_hex, provider)
    else {
        return Envelope::err(STATUS_PARSE_ERROR, errors);
    };

    if version.value != 0 {
        errors.push(format!("Unrecognised version passed: {version}"));
    }
    let provider_kind = provider.in_range::<i64>().and_then(PaymentProvider::from_i64);
    match provider_kind {
        None => errors.push(format!("Unrecognised payment provider: {provider}")),
        Some(PaymentProvider::Nil) if errors.is_empty() => {
            errors.push("Nil payment provider is invalid, must be set to a provider".into())
        }
        _ => {}
    }
    if !errors.is_empty() {
        return Envelope::err(STATUS_PARSE_ERROR, errors);
    }

    let payment = match provider_kind {
        Some(PaymentProvider::Google) => {
            let token = tx_fields.string("google_payment_token", &mut errors);
            let order = tx_fields.string("google_order_id", &mut errors);
            token.zip(order).map(|(t, o)| PaymentTx::google(t, o))
        }
        Some(PaymentProvider::Apple) => tx_fields.string("apple_tx_id", &mut errors).map(PaymentTx::apple_tx),
        // Rangeproof grants are written by the operator and cannot be claimed by clients.
        _ => return Envelope::err1(STATUS_PARSE_ERROR, "Bad payment provider given"),
    };
    let master = decode_key("Master public key", master_hex, &mut errors);
    let rotating = decode_key("Rotating public key", rotating_hex, &mut errors);
    let master_sig = decode_sig("Master key signature", master_sig_hex, &mut errors);
    let rotating_sig = decode_sig("Rotating key signature", rotating_sig_hex, &mut errors);
    let (Some(payment), Some(master), Some(rotating), Some(master_sig), Some(rotating_sig)) =
        (payment, master, rotating, master_sig, rotating_sig)
    else {
        return Envelope::err(STATUS_PARSE_ERROR, errors);
    };

    let dev = if state.dev {
        match dev_options(&top) {
            Ok(d) => Some(d),
            Err(errors) => return Envelope::err(STATUS_PARSE_ERROR, errors),
        }
    } else {
        None
    };

    let pair = SignedPair { master, rotating, master_sig, rotating_sig };
    let digest = add_pro_payment_hash(0, &master, &rotating, &payment);
    if let Err(errors) = verify_pair(state, &pair, &digest) {
        return Envelope::err(STATUS_GENERIC_ERROR, errors);
    }

    let now = state.clock.now_ms();
    let label = safe_payment_label(&payment, state.unsafe_logging);
    if let Err(refusal) = acknowledge_google_purchase(state, &master, &payment, &label).await {
        return refusal;
    }
    let outcome = state.writer.send(Write(ClaimPayment { master, payment, dev })).await;
    match outcome {
        Ok(RedeemOutcome::Success { gen_index, entitled_until }) => {
            // Production proofs end on a day boundary; dev mode keeps exact times.
            let proposed = if state.dev { entitled_until } else { round_up_to_day(entitled_until) };
            match issue_proof(state, gen_index, rotating, clamp_proof_expiry(now, proposed)).await {
                Ok(proof) => {
                    info!("Redeemed payment {label}");
                    Envelope::ok(&proof)
                }
                Err(e) => {
                    error!("Payment {label} was redeemed but its proof could not be signed: {e}");
                    Envelope::err1(STATUS_GENERIC_ERROR, e)
                }
            }
        }
        Ok(RedeemOutcome::AlreadyRedeemed) => {
            Envelope::err1(STATUS_ALREADY_REDEEMED, format!("Payment was not redeemed, already redeemed TX: {label}"))
        }
        Ok(RedeemOutcome::UnknownPayment) => Envelope::err1(
            STATUS_UNKNOWN_PAYMENT,
            format!("Payment was not redeemed, no payments were found matching the request tx: {label}"),
        ),
        Err(WriteError::Rejected(why)) => Envelope::err1(STATUS_GENERIC_ERROR, why),
        Err(WriteError::Store(e)) => {
            error!("Redeeming payment {label} failed: {e}");
            Envelope::err1(
                STATUS_GENERIC_ERROR,
                format!("Payment was not redeemed due to a server error, try again: {e}"),
            )
        }
        Err(WriteError::Actor(e)) => {
            error!("Redeeming payment {label} failed: {e}");
            Envelope::err1(STATUS_GENERIC_ERROR, format!("Payment was not redeemed, try again: {e}"))
        }
    }
}

/// Google refunds a purchase nobody acknowledges within three days, so claiming a Google payment
/// acknowledges it first; if that fails, nothing is claimed and the client may try again.
///
/// No network call may run inside the writer's transaction (it carries other users' writes), so
/// the order is: check that this key can claim the payment (a read), acknowledge, then claim. A
/// concurrent claim of the same payment (by the same key: the account id must match) may win
/// in between; the purchase is then acknowledged and claimed once, which is all that matters.
async fn acknowledge_google_purchase(
    state: &AppState,
    master: &PubKeyBytes,
    payment: &PaymentTx,
    label: &str,
) -> Result<(), Envelope> {
    let Some(google) = &state.google else { return Ok(()) };
    if payment.provider() != PaymentProvider::Google || (state.dev && payment.is_dev_payment()) {
        return Ok(());
    }
    let claimable = state.reader.read(ClaimableBy { master: *master, payment: payment.clone() }).await;
    match claimable {
        // The claim itself reports why it cannot succeed.
        Ok(false) => Ok(()),
        Ok(true) => match google.acknowledge_for_claim(&payment.google_payment_token).await {
            Ok(acknowledged_now) => {
                if acknowledged_now {
                    info!("Acknowledged Google purchase {label}");
                }
                Ok(())
            }
            Err(e) => {
                error!("Acknowledging Google purchase {label} failed: {e}");
                Err(Envelope::err1(
                    STATUS_GENERIC_ERROR,
                    format!("Payment was not redeemed, acknowledging the purchase to Google failed, try again: {e}"),
                ))
            }
        },
        Err(e) => {
            error!("Redeeming payment {label} failed: {e}");
            Err(Envelope::err1(STATUS_GENERIC_ERROR, format!("Payment was not redeemed, try again: {e}")))
        }
    }
}

/// Dev-mode keys `dev_plan`, `dev_duration_ms` and `dev_auto_renewing` (all optional).
fn dev_options(top: &Fields<'_>) -> Result<DevPayment, Vec<String>> {
    let mut errors = Vec::new();
    let mut d = DevPayment { plan: ProPlan::OneMonth, duration_ms: DAY_MS, auto_renewing: false };
    if let Some(v) = top.raw("dev_plan") {
        let plan = v.as_str().and_then(ProPlan::from_name).filter(|p| *p != ProPlan::Nil);
        match plan {
            Some(p) => d.plan = p,
            None => {
                let shown = match v {
                    Value::String(s) => s.clone(),
                    other => format!("<class '{}'>", python_type(other)),
                };
                errors.push(format!(
                    "dev_plan must be specified as \"OneMonth\", \"ThreeMonth\" or \"TwelveMonth\", received: {shown}"
                ));
            }
        }
    }
    if top.has("dev_duration_ms") {
        let n = top.int("dev_duration_ms", &mut errors);
        let ms = n.as_ref().and_then(|n| n.in_range::<i64>());
        match ms {
            Some(ms) if ms > 0 && ms <= YEAR_MS => d.duration_ms = ms,
            _ => {
                let secs = n.map_or(0.0, |n| n.to_string().parse::<f64>().unwrap_or(f64::INFINITY) / 1000.0);
                errors.push(format!(
                    "dev_duration_ms must be > 0 and <= year ind duration, received: {}s",
                    python_float_repr(secs)
                ));
            }
        }
    }
    match top.raw("dev_auto_renewing") {
        None => {}
        Some(Value::Bool(b)) => d.auto_renewing = *b,
        Some(other) => {
            errors.push(format!("Key \"dev_auto_renewing\" value was not a bool: \"<class '{}'>\"", python_type(other)))
        }
    }
    if errors.is_empty() { Ok(d) } else { Err(errors) }
}

//! What each notification type does to the store. `effects` is the pure mapping (type,
//! subtype and transaction → a list of store changes); `HandleAppleNotification` applies a
//! notification in one DbWriter command, so a notification is all-or-nothing.
//!
//! Departures from upstream's handler (each is what upstream evidently meant):
//! only what a branch uses is required (a TEST notification needs nothing, most types need no
//! renewal info); OFFER_REDEEMED records the offer; REFUND_DECLINED clears the refund request;
//! a billing grace period is stored as a duration; the dedupe window counts hours; every
//! failure is an error that rolls the notification back.

use tracing::warn;

use super::notification::{
    AppleEnum, Notification, NotificationType, Subtype, Transaction, TransactionReason, TransactionType,
    plan_for_product,
};
use crate::db_writer::WriteCommand;
use crate::domain::keys::obfuscate;
use crate::domain::time::{DAY_MS, DEFAULT_GRACE_MS};
use crate::domain::types::{PaymentProvider, PaymentTx, ProPlan};
use crate::store::StoreTx;
use crate::store::ops::{self, OpCtx, OpError};
use crate::store::rows::NewPayment;

/// Apple retries a failed delivery 1, 12, 24, 48 and 72 hours after the previous attempt.
const APPLE_RETRY_SCHEDULE_MS: i64 = (1 + 12 + 24 + 48 + 72) * 3_600_000 + 30 * 60_000;

/// How long a handled notification's UUID is remembered after its `signedDate`: Apple's whole
/// retry schedule, and never less than a week. The same in Sandbox and Production.
pub const DEDUPE_WINDOW_MS: i64 =
    if APPLE_RETRY_SCHEDULE_MS > 7 * DAY_MS { APPLE_RETRY_SCHEDULE_MS } else { 7 * DAY_MS };

/// One store change a notification asks for, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Record a purchase as Unredeemed (auto-claimed for a renewing owner).
    AddPayment(NewPayment),
    /// Change grace and/or auto-renew of a payment; the payment must exist.
    RenewalInfo { payment: PaymentTx, grace_period_duration_ms: Option<i64>, auto_renewing: Option<bool> },
    /// Revoke every payment of a subscription; at least one must exist.
    Revoke { original_transaction_id: String, revoked_unix_ts_ms: i64 },
    /// Apple declined a refund: forget the client's refund request (no payment is only a warning).
    ClearRefundRequest { transaction_id: String },
}

/// The notification's UUID and `signedDate`, which every notification needs.
pub fn identity(n: &Notification) -> Result<(&str, i64), String> {
    match (n.uuid.as_deref().filter(|u| !u.is_empty()), n.signed_date) {
        (Some(uuid), Some(signed)) => Ok((uuid, signed)),
        (None, _) => Err("the notification has no notificationUUID".into()),
        (Some(_), None) => Err("the notification has no signedDate".into()),
    }
}

/// The store changes a notification asks for, or why it cannot be applied.
pub fn effects(n: &Notification) -> Result<Vec<Effect>, String> {
    use NotificationType as T;
    let kind = match &n.notification_type {
        None => return Err("the notification has no notificationType".into()),
        Some(AppleEnum::Unknown(t)) => return Err(format!("notification type {t:?} is not handled")),
        Some(AppleEnum::Known(t)) => *t,
    };
    // Apple's library cannot tell an unknown subtype from none; neither do we.
    let sub = n.subtype.as_ref().and_then(AppleEnum::known);
    let what = match sub {
        Some(s) => format!("{}/{}", kind.as_str(), s.as_str()),
        None => kind.as_str().to_string(),
    };
    let unsupported = |why: &str| Err(format!("{what}: {why}"));

    match kind {
        T::Test => Ok(vec![]),
        T::Subscribed | T::DidRenew => {
            let p = Purchase::read(n, TransactionType::AutoRenewable, &what)?;
            Ok(vec![p.add(), p.renewal(Some(DEFAULT_GRACE_MS), Some(true))])
        }
        T::OneTimeCharge => {
            let p = Purchase::read(n, TransactionType::NonRenewing, &what)?;
            if p.reason != TransactionReason::Purchase {
                return unsupported("the transaction reason is not PURCHASE");
            }
            Ok(vec![p.add(), p.renewal(Some(DEFAULT_GRACE_MS), Some(true))])
        }
        T::DidChangeRenewalPref => {
            let p = Purchase::read(n, TransactionType::AutoRenewable, &what)?;
            Ok(match sub {
                // Queuing a downgrade means the subscription renews.
                Some(Subtype::Downgrade) => vec![p.renewal(Some(DEFAULT_GRACE_MS), Some(true))],
                Some(Subtype::Upgrade) => vec![p.revoke_previous(), p.add(), p.renewal(Some(DEFAULT_GRACE_MS), None)],
                // No subtype: a pending downgrade was cancelled; nothing changes now.
                _ => vec![],
            })
        }
        T::OfferRedeemed => {
            let p = Purchase::read(n, TransactionType::AutoRenewable, &what)?;
            Ok(match sub {
                None => vec![p.add()],
                Some(Subtype::Upgrade) => {
                    vec![p.revoke_previous(), p.add(), p.renewal(Some(DEFAULT_GRACE_MS), Some(true))]
                }
                // A downgrade offer takes effect at the next renewal.
                Some(_) => vec![],
            })
        }
        T::Refund | T::Revoke => {
            let t = ids(n, &what)?;
            let at = t.tx.revocation_date.ok_or_else(|| format!("{what}: the transaction has no revocationDate"))?;
            Ok(vec![Effect::Revoke { original_transaction_id: t.original, revoked_unix_ts_ms: at }])
        }
        T::RefundReversed => unsupported("reversing a refund is not supported; an operator must restore the payment"),
        T::DidChangeRenewalStatus => {
            let t = ids(n, &what)?;
            let auto = match sub {
                Some(Subtype::AutoRenewEnabled) => true,
                Some(Subtype::AutoRenewDisabled) => false,
                _ => return unsupported("the subtype must be AUTO_RENEW_ENABLED or AUTO_RENEW_DISABLED"),
            };
            Ok(vec![Effect::RenewalInfo { payment: t.key, grace_period_duration_ms: None, auto_renewing: Some(auto) }])
        }
        T::DidFailToRenew => match sub {
            // The grace period (if any) ended without a renewal; proofs carry their own expiry.
            None => ids(n, &what).map(|_| vec![]),
            Some(Subtype::GracePeriod) => {
                let t = ids(n, &what)?;
                let grace_end = n
                    .renewal
                    .as_ref()
                    .and_then(|r| r.grace_period_expires_date)
                    .ok_or_else(|| format!("{what}: the renewal info has no gracePeriodExpiresDate"))?;
                let expires = t.tx.expires_date.ok_or_else(|| format!("{what}: the transaction has no expiresDate"))?;
                let grace = grace_end.saturating_sub(expires).max(0);
                Ok(vec![Effect::RenewalInfo {
                    payment: t.key,
                    grace_period_duration_ms: Some(grace),
                    auto_renewing: Some(true),
                }])
            }
            Some(_) => unsupported("this subtype is not handled"),
        },
        T::RefundDeclined => {
            let t = ids(n, &what)?;
            Ok(vec![Effect::ClearRefundRequest { transaction_id: t.key.apple_tx_id }])
        }
        // Proofs expire by themselves and the daily job marks payments Expired; consumption
        // data and price changes need no store change.
        T::Expired | T::GracePeriodExpired | T::ConsumptionRequest | T::PriceIncrease => ids(n, &what).map(|_| vec![]),
        T::ExternalPurchaseToken => unsupported("purchases through other stores are not supported"),
        T::RenewalExtended | T::RenewalExtension => unsupported("renewal date extensions are not supported"),
    }
}

fn transaction<'a>(n: &'a Notification, what: &str) -> Result<&'a Transaction, String> {
    n.transaction.as_ref().ok_or_else(|| format!("{what}: the notification carries no signedTransactionInfo"))
}

/// A transaction named by its identifiers (REQ-IDS).
struct Ids<'a> {
    tx: &'a Transaction,
    original: String,
    key: PaymentTx,
}

fn ids<'a>(n: &'a Notification, what: &str) -> Result<Ids<'a>, String> {
    let tx = transaction(n, what)?;
    let mut missing = Vec::new();
    if tx.transaction_id.is_none() {
        missing.push("transactionId");
    }
    if tx.original_transaction_id.is_none() {
        missing.push("originalTransactionId");
    }
    if !missing.is_empty() {
        return Err(format!("{what}: the transaction lacks {}", missing.join(", ")));
    }
    let original = tx.original_transaction_id.clone().unwrap_or_default();
    let key = PaymentTx::apple(
        original.clone(),
        tx.transaction_id.clone().unwrap_or_default(),
        tx.web_order_line_item_id.clone().unwrap_or_default(),
    );
    Ok(Ids { tx, original, key })
}

/// A purchase with every field a new payment needs (REQ-FULL), of the expected type.
struct Purchase {
    key: PaymentTx,
    plan: ProPlan,
    purchase_date: i64,
    expires_date: i64,
    reason: TransactionReason,
    account_token: String,
}

impl Purchase {
    fn read(n: &Notification, expected: TransactionType, what: &str) -> Result<Self, String> {
        let tx = transaction(n, what)?;
        let mut missing = Vec::new();
        let mut need = |present: bool, name: &'static str| {
            if !present {
                missing.push(name);
            }
        };
        need(tx.expires_date.is_some(), "expiresDate");
        need(tx.original_transaction_id.is_some(), "originalTransactionId");
        need(tx.purchase_date.is_some(), "purchaseDate");
        need(tx.transaction_id.is_some(), "transactionId");
        let reason = tx.transaction_reason.as_ref().and_then(AppleEnum::known);
        need(reason.is_some(), "transactionReason");
        let tx_type = tx.tx_type.as_ref().and_then(AppleEnum::known);
        need(tx_type.is_some(), "type");
        need(tx.product_id.is_some(), "productId");
        need(tx.web_order_line_item_id.is_some(), "webOrderLineItemId");
        if !missing.is_empty() {
            return Err(format!("{what}: the transaction lacks {}", missing.join(", ")));
        }
        if tx_type != Some(expected) {
            return Err(format!("{what}: the transaction type is not {}", expected.as_str()));
        }
        let product = tx.product_id.as_deref().unwrap_or_default();
        let plan = plan_for_product(product).ok_or_else(|| format!("{what}: unknown product id {product:?}"))?;
        Ok(Self {
            key: PaymentTx::apple(
                tx.original_transaction_id.clone().unwrap_or_default(),
                tx.transaction_id.clone().unwrap_or_default(),
                tx.web_order_line_item_id.clone().unwrap_or_default(),
            ),
            plan,
            purchase_date: tx.purchase_date.unwrap_or_default(),
            expires_date: tx.expires_date.unwrap_or_default(),
            reason: reason.unwrap_or(TransactionReason::Purchase),
            account_token: tx.app_account_token.clone().unwrap_or_default(),
        })
    }

    fn add(&self) -> Effect {
        Effect::AddPayment(NewPayment {
            tx: self.key.clone(),
            plan: self.plan,
            expiry_unix_ts_ms: self.expires_date,
            unredeemed_unix_ts_ms: self.purchase_date,
            // Apple does not tell us its refund deadline; the billing period's end stands in.
            platform_refund_expiry_unix_ts_ms: self.expires_date,
            google_obfuscated_account_id: None,
            apple_app_account_token: self.account_token.clone(),
        })
    }

    fn renewal(&self, grace: Option<i64>, auto_renewing: Option<bool>) -> Effect {
        Effect::RenewalInfo { payment: self.key.clone(), grace_period_duration_ms: grace, auto_renewing }
    }

    /// An upgrade replaces the subscription's earlier billing period from the new purchase on.
    fn revoke_previous(&self) -> Effect {
        Effect::Revoke {
            original_transaction_id: self.key.apple_original_tx_id.clone(),
            revoked_unix_ts_ms: self.purchase_date,
        }
    }
}

/// Applies one effect inside the notification's transaction.
pub fn apply_effect(tx: &mut dyn StoreTx, effect: Effect, ctx: OpCtx) -> Result<(), OpError> {
    match effect {
        Effect::AddPayment(p) => ops::add_unredeemed_payment(tx, &p, ctx).map(drop),
        Effect::RenewalInfo { payment, grace_period_duration_ms, auto_renewing } => {
            if ops::update_renewal_info(tx, &payment, grace_period_duration_ms, auto_renewing)? {
                Ok(())
            } else {
                Err(OpError::Rejected(format!(
                    "no payment matches Apple transaction {} to update its renewal information",
                    obfuscate(&payment.apple_tx_id)
                )))
            }
        }
        Effect::Revoke { original_transaction_id, revoked_unix_ts_ms } => {
            if ops::revoke_subscription(
                tx,
                PaymentProvider::Apple,
                &original_transaction_id,
                revoked_unix_ts_ms,
                ctx.now,
            )? {
                Ok(())
            } else {
                Err(OpError::Rejected(format!(
                    "no matching active payment for Apple original transaction {}",
                    obfuscate(&original_transaction_id)
                )))
            }
        }
        Effect::ClearRefundRequest { transaction_id } => {
            if !ops::set_refund_requested(tx, &PaymentTx::apple_tx(transaction_id.clone()), 0, None)? {
                warn!(
                    "Apple declined a refund for transaction {}, which matches no payment",
                    obfuscate(&transaction_id)
                );
            }
            Ok(())
        }
    }
}

/// What handling a notification did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Applied,
    /// Its UUID was handled before: nothing changed.
    Duplicate,
}

/// One notification as one DbWriter command: dedupe, apply every effect, remember the UUID.
/// Any error rolls the whole notification back.
pub struct HandleAppleNotification(pub Notification);

impl WriteCommand for HandleAppleNotification {
    type Output = Handled;

    fn apply(self, tx: &mut dyn StoreTx, ctx: OpCtx) -> Result<Handled, OpError> {
        let n = self.0;
        let (uuid, signed_date) = identity(&n).map_err(OpError::Rejected)?;
        if tx.apple_uuid_seen(uuid)? {
            return Ok(Handled::Duplicate);
        }
        for effect in effects(&n).map_err(OpError::Rejected)? {
            apply_effect(tx, effect, ctx)?;
        }
        tx.add_apple_uuid(uuid, signed_date.saturating_add(DEDUPE_WINDOW_MS))?;
        Ok(Handled::Applied)
    }
}

/// The time up to which Apple's notification history has been caught up.
pub struct ReadAppleCheckpoint;

impl WriteCommand for ReadAppleCheckpoint {
    type Output = i64;
    fn apply(self, tx: &mut dyn StoreTx, _: OpCtx) -> Result<i64, OpError> {
        Ok(tx.runtime()?.apple_notification_checkpoint_unix_ts_ms)
    }
}

pub struct SetAppleCheckpoint(pub i64);

impl WriteCommand for SetAppleCheckpoint {
    type Output = ();
    fn apply(self, tx: &mut dyn StoreTx, _: OpCtx) -> Result<(), OpError> {
        Ok(tx.set_apple_checkpoint(self.0)?)
    }
}

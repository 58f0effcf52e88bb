//! Plain row types exchanged with the store.

use crate::domain::lookup::LookupRow;
use crate::domain::types::{PaymentTx, ProPlan, PubKeyBytes};

/// The single `runtime` row.
#[derive(Clone, PartialEq, Eq)]
pub struct RuntimeRow {
    pub gen_index: u64,
    pub gen_index_salt: [u8; 16],
    pub backend_key: [u8; 32],
    pub last_expire_unix_ts_ms: i64,
    pub apple_notification_checkpoint_unix_ts_ms: i64,
    pub revocation_ticket: i64,
}

impl std::fmt::Debug for RuntimeRow {
    // The backend key is a secret: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeRow")
            .field("gen_index", &self.gen_index)
            .field("last_expire_unix_ts_ms", &self.last_expire_unix_ts_ms)
            .field("apple_notification_checkpoint_unix_ts_ms", &self.apple_notification_checkpoint_unix_ts_ms)
            .field("revocation_ticket", &self.revocation_ticket)
            .finish_non_exhaustive()
    }
}

/// A full `payments` row, decoded by column name. NULL text is empty, NULL numbers 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaymentRow {
    pub id: i64,
    pub master_pkey: Option<PubKeyBytes>,
    pub status: i64,
    pub plan: i64,
    pub payment_provider: i64,
    pub auto_renewing: bool,
    pub unredeemed_unix_ts_ms: i64,
    pub redeemed_unix_ts_ms: i64,
    pub expiry_unix_ts_ms: i64,
    pub grace_period_duration_ms: i64,
    pub platform_refund_expiry_unix_ts_ms: i64,
    pub revoked_unix_ts_ms: i64,
    pub apple_original_tx_id: String,
    pub apple_tx_id: String,
    pub apple_web_line_order_tx_id: String,
    pub google_payment_token: String,
    pub google_order_id: String,
    pub rangeproof_order_id: String,
    pub refund_requested_unix_ts_ms: i64,
}

impl PaymentRow {
    pub fn as_lookup_row(&self) -> LookupRow {
        LookupRow {
            status: self.status,
            provider: self.payment_provider,
            google_order_id: self.google_order_id.clone(),
            apple_original_tx_id: self.apple_original_tx_id.clone(),
            rangeproof_order_id: self.rangeproof_order_id.clone(),
            expiry_unix_ts_ms: self.expiry_unix_ts_ms,
            grace_period_duration_ms: self.grace_period_duration_ms,
            auto_renewing: self.auto_renewing,
            revoked_unix_ts_ms: self.revoked_unix_ts_ms,
            refund_requested_unix_ts_ms: self.refund_requested_unix_ts_ms,
        }
    }
}

/// A payment witnessed from a store (or a voucher), before it is stored as Unredeemed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayment {
    pub tx: PaymentTx,
    pub plan: ProPlan,
    pub expiry_unix_ts_ms: i64,
    pub unredeemed_unix_ts_ms: i64,
    pub platform_refund_expiry_unix_ts_ms: i64,
    /// Google: SHA-256 of the buyer's master key, as the purchase carries it.
    pub google_obfuscated_account_id: Option<[u8; 32]>,
    /// Apple: the purchase's `appAccountToken`, or empty.
    pub apple_app_account_token: String,
}

/// The cached entitlement of one master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub gen_index: u64,
    pub expiry_unix_ts_ms: i64,
    pub grace_period_duration_ms: i64,
    pub auto_renewing: bool,
    pub refund_requested_unix_ts_ms: i64,
}

/// What revocation needs to know about each row of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRow {
    pub id: i64,
    pub master_pkey: Option<PubKeyBytes>,
    pub status: i64,
    pub expiry_unix_ts_ms: i64,
    pub grace_period_duration_ms: i64,
}

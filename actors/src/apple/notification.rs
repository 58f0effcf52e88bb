//! The parts of an App Store Server Notification V2 the backend reads, decoded from verified
//! payloads. Apple adds enum values over time, so every enum keeps the raw string of a value
//! it does not know (`AppleEnum::Unknown`) instead of failing.

use serde_json::{Map, Value};

use super::verify::{Verifier, VerifyError};
use crate::domain::types::ProPlan;

/// A string enum from Apple: a value we know, or the raw text of one we do not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppleEnum<T> {
    Known(T),
    Unknown(String),
}

impl<T: Copy> AppleEnum<T> {
    pub fn known(&self) -> Option<T> {
        match self {
            Self::Known(t) => Some(*t),
            Self::Unknown(_) => None,
        }
    }
}

macro_rules! apple_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// Apple's spelling.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> AppleEnum<Self> {
                match s {
                    $($text => AppleEnum::Known(Self::$variant),)+
                    other => AppleEnum::Unknown(other.to_string()),
                }
            }
        }
    };
}

apple_enum!(
    /// `notificationType`.
    NotificationType {
        Subscribed = "SUBSCRIBED",
        DidChangeRenewalPref = "DID_CHANGE_RENEWAL_PREF",
        DidChangeRenewalStatus = "DID_CHANGE_RENEWAL_STATUS",
        OfferRedeemed = "OFFER_REDEEMED",
        DidRenew = "DID_RENEW",
        Expired = "EXPIRED",
        DidFailToRenew = "DID_FAIL_TO_RENEW",
        GracePeriodExpired = "GRACE_PERIOD_EXPIRED",
        PriceIncrease = "PRICE_INCREASE",
        Refund = "REFUND",
        RefundDeclined = "REFUND_DECLINED",
        ConsumptionRequest = "CONSUMPTION_REQUEST",
        RenewalExtended = "RENEWAL_EXTENDED",
        Revoke = "REVOKE",
        Test = "TEST",
        RenewalExtension = "RENEWAL_EXTENSION",
        RefundReversed = "REFUND_REVERSED",
        ExternalPurchaseToken = "EXTERNAL_PURCHASE_TOKEN",
        OneTimeCharge = "ONE_TIME_CHARGE",
    }
);

apple_enum!(
    /// `subtype`.
    Subtype {
        InitialBuy = "INITIAL_BUY",
        Resubscribe = "RESUBSCRIBE",
        Downgrade = "DOWNGRADE",
        Upgrade = "UPGRADE",
        AutoRenewEnabled = "AUTO_RENEW_ENABLED",
        AutoRenewDisabled = "AUTO_RENEW_DISABLED",
        Voluntary = "VOLUNTARY",
        BillingRetry = "BILLING_RETRY",
        PriceIncrease = "PRICE_INCREASE",
        GracePeriod = "GRACE_PERIOD",
        Pending = "PENDING",
        Accepted = "ACCEPTED",
        BillingRecovery = "BILLING_RECOVERY",
        ProductNotForSale = "PRODUCT_NOT_FOR_SALE",
        Summary = "SUMMARY",
        Failure = "FAILURE",
        Unreported = "UNREPORTED",
    }
);

apple_enum!(
    /// A transaction's `type`.
    TransactionType {
        AutoRenewable = "Auto-Renewable Subscription",
        NonConsumable = "Non-Consumable",
        Consumable = "Consumable",
        NonRenewing = "Non-Renewing Subscription",
    }
);

apple_enum!(
    /// A transaction's `transactionReason`.
    TransactionReason {
        Purchase = "PURCHASE",
        Renewal = "RENEWAL",
    }
);

/// Apple product id → plan. Any other product is refused.
pub fn plan_for_product(product_id: &str) -> Option<ProPlan> {
    match product_id {
        "com.getsession.org.pro_sub_1_month" => Some(ProPlan::OneMonth),
        "com.getsession.org.pro_sub_3_months" => Some(ProPlan::ThreeMonth),
        "com.getsession.org.pro_sub_12_months" => Some(ProPlan::TwelveMonth),
        _ => None,
    }
}

/// The fields of a decoded `signedTransactionInfo` that matter. A field of the wrong JSON type
/// counts as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transaction {
    pub original_transaction_id: Option<String>,
    pub transaction_id: Option<String>,
    pub web_order_line_item_id: Option<String>,
    pub product_id: Option<String>,
    pub purchase_date: Option<i64>,
    pub expires_date: Option<i64>,
    pub revocation_date: Option<i64>,
    pub app_account_token: Option<String>,
    pub tx_type: Option<AppleEnum<TransactionType>>,
    pub transaction_reason: Option<AppleEnum<TransactionReason>>,
}

/// The fields of a decoded `signedRenewalInfo` that matter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenewalInfo {
    pub grace_period_expires_date: Option<i64>,
}

/// A verified, decoded notification.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notification {
    pub notification_type: Option<AppleEnum<NotificationType>>,
    pub subtype: Option<AppleEnum<Subtype>>,
    pub uuid: Option<String>,
    pub signed_date: Option<i64>,
    pub transaction: Option<Transaction>,
    pub renewal: Option<RenewalInfo>,
}

impl Notification {
    /// The type's name for logs and metrics labels (never free text from outside).
    pub fn type_label(&self) -> &'static str {
        match &self.notification_type {
            Some(AppleEnum::Known(t)) => t.as_str(),
            Some(AppleEnum::Unknown(_)) => "UNKNOWN",
            None => "NONE",
        }
    }

    /// The subscription the notification is about, when its transaction was decoded.
    pub fn original_transaction_id(&self) -> Option<&str> {
        self.transaction.as_ref()?.original_transaction_id.as_deref()
    }
}

fn text(m: &Map<String, Value>, key: &str) -> Option<String> {
    m.get(key).and_then(Value::as_str).map(str::to_string)
}

fn millis(m: &Map<String, Value>, key: &str) -> Option<i64> {
    m.get(key).and_then(Value::as_i64)
}

impl Transaction {
    pub fn from_payload(m: &Map<String, Value>) -> Self {
        Self {
            original_transaction_id: text(m, "originalTransactionId"),
            transaction_id: text(m, "transactionId"),
            web_order_line_item_id: text(m, "webOrderLineItemId"),
            product_id: text(m, "productId"),
            purchase_date: millis(m, "purchaseDate"),
            expires_date: millis(m, "expiresDate"),
            revocation_date: millis(m, "revocationDate"),
            app_account_token: text(m, "appAccountToken"),
            tx_type: m.get("type").and_then(Value::as_str).map(TransactionType::parse),
            transaction_reason: m.get("transactionReason").and_then(Value::as_str).map(TransactionReason::parse),
        }
    }
}

impl RenewalInfo {
    pub fn from_payload(m: &Map<String, Value>) -> Self {
        Self { grace_period_expires_date: millis(m, "gracePeriodExpiresDate") }
    }
}

/// Which signed part of a notification failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedPart {
    Notification,
    Transaction,
    RenewalInfo,
}

impl SignedPart {
    pub fn label(self) -> &'static str {
        match self {
            Self::Notification => "notification",
            Self::Transaction => "transaction",
            Self::RenewalInfo => "renewal_info",
        }
    }
}

/// Why a notification could not be decoded. `partial` keeps what was decoded before the
/// failure (so a user error can name the subscription).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub part: SignedPart,
    pub error: VerifyError,
    pub partial: Option<Box<Notification>>,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the {} failed verification: {}", self.part.label(), self.error)
    }
}

/// Verifies a `signedPayload` and its nested transaction and renewal info (each is optional;
/// the dispatch decides what a notification type needs).
pub fn verify_and_decode(verifier: &Verifier, signed_payload: &str, now_ms: i64) -> Result<Notification, DecodeError> {
    let body = verifier.verify_notification(signed_payload, now_ms).map_err(|error| DecodeError {
        part: SignedPart::Notification,
        error,
        partial: None,
    })?;
    let mut n = Notification {
        notification_type: body.get("notificationType").and_then(Value::as_str).map(NotificationType::parse),
        subtype: body.get("subtype").and_then(Value::as_str).map(Subtype::parse),
        uuid: text(&body, "notificationUUID"),
        signed_date: millis(&body, "signedDate"),
        transaction: None,
        renewal: None,
    };
    let Some(Value::Object(data)) = body.get("data") else { return Ok(n) };
    if let Some(jws) = data.get("signedTransactionInfo").filter(|v| !v.is_null()) {
        let payload = match jws.as_str() {
            Some(jws) => verifier.verify_transaction(jws, now_ms),
            None => Err(VerifyError {
                status: super::verify::VerifyStatus::VerificationFailure,
                detail: "signedTransactionInfo is not a string".into(),
            }),
        };
        match payload {
            Ok(p) => n.transaction = Some(Transaction::from_payload(&p)),
            Err(error) => return Err(DecodeError { part: SignedPart::Transaction, error, partial: Some(Box::new(n)) }),
        }
    }
    if let Some(jws) = data.get("signedRenewalInfo").filter(|v| !v.is_null()) {
        let payload = match jws.as_str() {
            Some(jws) => verifier.verify_renewal_info(jws, now_ms),
            None => Err(VerifyError {
                status: super::verify::VerifyStatus::VerificationFailure,
                detail: "signedRenewalInfo is not a string".into(),
            }),
        };
        match payload {
            Ok(p) => n.renewal = Some(RenewalInfo::from_payload(&p)),
            Err(error) => return Err(DecodeError { part: SignedPart::RenewalInfo, error, partial: Some(Box::new(n)) }),
        }
    }
    Ok(n)
}

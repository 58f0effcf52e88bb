//! Enumerations stored as integers in the database and on the wire, and the payment
//! identifiers a store transaction carries.

use std::fmt;

macro_rules! int_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $val:expr => $text:expr),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant = $val),+ }

        impl $name {
            pub fn from_i64(v: i64) -> Option<Self> {
                match v { $($val => Some(Self::$variant),)+ _ => None }
            }
            pub fn as_i64(self) -> i64 { self as i64 }
            /// Upstream's enum member name.
            pub fn name(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.name()) }
        }
    };
}

int_enum!(
    /// Which store a payment came from.
    PaymentProvider { Nil = 0 => "Nil", Google = 1 => "GooglePlayStore", Apple = 2 => "iOSAppStore", Rangeproof = 3 => "Rangeproof" }
);

int_enum!(
    /// Life-cycle state of one payment row.
    PaymentStatus { Nil = 0 => "Nil", Unredeemed = 1 => "Unredeemed", Redeemed = 2 => "Redeemed", Expired = 3 => "Expired", Revoked = 4 => "Revoked" }
);

int_enum!(
    /// Informational plan; no duration is ever derived from it.
    ProPlan { Nil = 0 => "Nil", OneMonth = 1 => "OneMonth", ThreeMonth = 2 => "ThreeMonth", TwelveMonth = 3 => "TwelveMonth" }
);

int_enum!(
    /// `result.status` of get_pro_details.
    UserProStatus { NeverBeenPro = 0 => "NeverBeenPro", Active = 1 => "Active", Expired = 2 => "Expired" }
);

impl ProPlan {
    /// Case-insensitive name match, as the dev-mode `dev_plan` key uses it.
    pub fn from_name(s: &str) -> Option<Self> {
        [Self::Nil, Self::OneMonth, Self::ThreeMonth, Self::TwelveMonth]
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }
}

/// The identifiers of one store transaction. Which fields matter depends on the provider.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PaymentTx {
    pub provider: Option<PaymentProvider>,
    pub google_payment_token: String,
    pub google_order_id: String,
    pub apple_original_tx_id: String,
    pub apple_tx_id: String,
    pub apple_web_line_order_tx_id: String,
    pub rangeproof_order_id: String,
}

impl PaymentTx {
    pub fn google(token: impl Into<String>, order_id: impl Into<String>) -> Self {
        Self {
            provider: Some(PaymentProvider::Google),
            google_payment_token: token.into(),
            google_order_id: order_id.into(),
            ..Self::default()
        }
    }

    /// An Apple transaction as a client names it (only the transaction id).
    pub fn apple_tx(tx_id: impl Into<String>) -> Self {
        Self { provider: Some(PaymentProvider::Apple), apple_tx_id: tx_id.into(), ..Self::default() }
    }

    /// An Apple transaction with all three identifiers, as notifications carry them.
    pub fn apple(original: impl Into<String>, tx_id: impl Into<String>, web_line: impl Into<String>) -> Self {
        Self {
            provider: Some(PaymentProvider::Apple),
            apple_original_tx_id: original.into(),
            apple_tx_id: tx_id.into(),
            apple_web_line_order_tx_id: web_line.into(),
            ..Self::default()
        }
    }

    pub fn rangeproof(order_id: impl Into<String>) -> Self {
        Self { provider: Some(PaymentProvider::Rangeproof), rangeproof_order_id: order_id.into(), ..Self::default() }
    }

    pub fn provider(&self) -> PaymentProvider {
        self.provider.unwrap_or(PaymentProvider::Nil)
    }

    /// Checks that the identifiers a stored payment needs are present.
    pub fn validate_for_storage(&self) -> Result<(), String> {
        let missing = |what: &str| Err(format!("{} payment is missing its {what}", self.provider()));
        match self.provider() {
            PaymentProvider::Nil => Err("Nil payment provider is invalid, must be set to a provider".into()),
            PaymentProvider::Google if self.google_payment_token.is_empty() => missing("purchase token"),
            PaymentProvider::Google if self.google_order_id.is_empty() => missing("order id"),
            PaymentProvider::Apple if self.apple_tx_id.is_empty() => missing("transaction id"),
            PaymentProvider::Apple if self.apple_original_tx_id.is_empty() => missing("original transaction id"),
            PaymentProvider::Rangeproof if self.rangeproof_order_id.is_empty() => missing("order id"),
            _ => Ok(()),
        }
    }

    /// True when the id a dev-mode client chose marks a fabricated development payment.
    pub fn is_dev_payment(&self) -> bool {
        let id = match self.provider() {
            PaymentProvider::Google => &self.google_order_id,
            PaymentProvider::Apple => &self.apple_tx_id,
            PaymentProvider::Rangeproof => &self.rangeproof_order_id,
            PaymentProvider::Nil => return false,
        };
        id.starts_with("DEV.")
    }
}

/// A master (Pro) or rotating Ed25519 public key, raw.
pub type PubKeyBytes = [u8; 32];

/// The result of a client's claim, before the proof is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedeemOutcome {
    /// Claimed; `entitled_until` is the best redeemed expiry (grace included when renewing).
    Success {
        gen_index: u64,
        entitled_until: i64,
    },
    AlreadyRedeemed,
    UnknownPayment,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_values_are_wire_stable() {
        assert_eq!(PaymentProvider::from_i64(1), Some(PaymentProvider::Google));
        assert_eq!(PaymentProvider::Apple.as_i64(), 2);
        assert_eq!(PaymentProvider::from_i64(4), None);
        assert_eq!(PaymentStatus::Revoked.as_i64(), 4);
        assert_eq!(ProPlan::from_name("twelvemonth"), Some(ProPlan::TwelveMonth));
        assert_eq!(ProPlan::from_name("Nil"), Some(ProPlan::Nil));
        assert_eq!(ProPlan::from_name("week"), None);
        assert_eq!(PaymentProvider::Google.to_string(), "GooglePlayStore");
    }

    #[test]
    fn dev_payment_ids() {
        assert!(PaymentTx::google("t", "DEV.1").is_dev_payment());
        assert!(!PaymentTx::google("DEV.t", "GPA.1").is_dev_payment());
        assert!(PaymentTx::apple_tx("DEV.x").is_dev_payment());
        assert!(PaymentTx::google("", "o").validate_for_storage().is_err());
        assert!(PaymentTx::apple("", "t", "").validate_for_storage().is_err());
        assert!(PaymentTx::apple("o", "t", "").validate_for_storage().is_ok());
    }
}

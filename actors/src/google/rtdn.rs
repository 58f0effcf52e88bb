//! Pub/Sub messages and the Real-Time Developer Notifications (RTDN) they carry.
//!
//! A pulled message is kept in `google_notification_history` as the REST `receivedMessages[i]`
//! object, restricted to the keys both implementations know, so rows written by either server
//! can be reloaded by the other.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

/// One message of a pull, checked enough to be stored and acknowledged.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedMessage {
    pub ack_id: String,
    /// Pub/Sub `messageId`, a decimal string on the wire.
    pub message_id: i64,
    /// The decoded `message.data` (the RTDN JSON).
    pub data: Vec<u8>,
    /// What is written to the history table (known keys only).
    pub stored: Value,
}

fn as_str<'a>(v: Option<&'a Value>, what: &str) -> Result<&'a str, String> {
    v.and_then(Value::as_str).ok_or_else(|| format!("{what} is missing or not a string"))
}

/// Reads one `receivedMessages[i]` object (from a pull, or as stored in the history table).
pub fn parse_received(v: &Value) -> Result<ReceivedMessage, String> {
    let obj = v.as_object().ok_or("a received message is not an object")?;
    let ack_id = as_str(obj.get("ackId"), "ackId")?;
    let msg = obj.get("message").and_then(Value::as_object).ok_or("message is missing or not an object")?;
    let id_text = as_str(msg.get("messageId"), "message.messageId")?;
    let message_id =
        id_text.parse::<i64>().map_err(|_| format!("message.messageId {id_text:?} is not a 64-bit integer"))?;
    let data_b64 = as_str(msg.get("data"), "message.data")?;
    let data = STANDARD.decode(data_b64).map_err(|e| format!("message.data is not base64: {e}"))?;

    let mut stored_msg = Map::new();
    stored_msg.insert("data".into(), json!(data_b64));
    stored_msg.insert("messageId".into(), json!(id_text));
    if let Some(t) = msg.get("publishTime").and_then(Value::as_str) {
        stored_msg.insert("publishTime".into(), json!(t));
    }
    let attributes: Map<String, Value> = msg
        .get("attributes")
        .and_then(Value::as_object)
        .map(|a| a.iter().filter(|(_, v)| v.is_string()).map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    stored_msg.insert("attributes".into(), Value::Object(attributes));
    let ordering_key = msg.get("orderingKey").and_then(Value::as_str).unwrap_or("");
    stored_msg.insert("orderingKey".into(), json!(ordering_key));
    let mut stored = Map::new();
    stored.insert("ackId".into(), json!(ack_id));
    stored.insert("message".into(), Value::Object(stored_msg));
    if let Some(n) = obj.get("deliveryAttempt").and_then(Value::as_i64) {
        stored.insert("deliveryAttempt".into(), json!(n));
    }
    Ok(ReceivedMessage { ack_id: ack_id.to_string(), message_id, data, stored: Value::Object(stored) })
}

/// Reads a history row's payload back.
pub fn parse_stored(payload: &str) -> Result<ReceivedMessage, String> {
    let v: Value = serde_json::from_str(payload).map_err(|e| format!("stored payload is not JSON: {e}"))?;
    parse_received(&v)
}

/// Google's subscription notification types (the `SUBSCRIPTION_` constants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationType {
    Recovered = 1,
    Renewed = 2,
    Canceled = 3,
    Purchased = 4,
    OnHold = 5,
    InGracePeriod = 6,
    Restarted = 7,
    PriceChangeConfirmed = 8,
    Deferred = 9,
    Paused = 10,
    PauseScheduleChanged = 11,
    Revoked = 12,
    Expired = 13,
    PriceChangeUpdated = 19,
    PendingPurchaseCanceled = 20,
    PriceStepUpConsentUpdated = 22,
}

impl NotificationType {
    pub fn from_i64(v: i64) -> Option<Self> {
        use NotificationType::*;
        Some(match v {
            1 => Recovered,
            2 => Renewed,
            3 => Canceled,
            4 => Purchased,
            5 => OnHold,
            6 => InGracePeriod,
            7 => Restarted,
            8 => PriceChangeConfirmed,
            9 => Deferred,
            10 => Paused,
            11 => PauseScheduleChanged,
            12 => Revoked,
            13 => Expired,
            19 => PriceChangeUpdated,
            20 => PendingPurchaseCanceled,
            22 => PriceStepUpConsentUpdated,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use NotificationType::*;
        match self {
            Recovered => "SUBSCRIPTION_RECOVERED",
            Renewed => "SUBSCRIPTION_RENEWED",
            Canceled => "SUBSCRIPTION_CANCELED",
            Purchased => "SUBSCRIPTION_PURCHASED",
            OnHold => "SUBSCRIPTION_ON_HOLD",
            InGracePeriod => "SUBSCRIPTION_IN_GRACE_PERIOD",
            Restarted => "SUBSCRIPTION_RESTARTED",
            PriceChangeConfirmed => "SUBSCRIPTION_PRICE_CHANGE_CONFIRMED",
            Deferred => "SUBSCRIPTION_DEFERRED",
            Paused => "SUBSCRIPTION_PAUSED",
            PauseScheduleChanged => "SUBSCRIPTION_PAUSE_SCHEDULE_CHANGED",
            Revoked => "SUBSCRIPTION_REVOKED",
            Expired => "SUBSCRIPTION_EXPIRED",
            PriceChangeUpdated => "SUBSCRIPTION_PRICE_CHANGE_UPDATED",
            PendingPurchaseCanceled => "SUBSCRIPTION_PENDING_PURCHASE_CANCELED",
            PriceStepUpConsentUpdated => "SUBSCRIPTION_PRICE_STEP_UP_CONSENT_UPDATED",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionNotification {
    pub purchase_token: String,
    pub kind: NotificationType,
}

/// `voidedPurchaseNotification`. Product type: 1 subscription, 2 one-time; refund type: 1 full,
/// 2 quantity-based partial; 0 stands for "unspecified".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoidedPurchase {
    pub purchase_token: String,
    pub order_id: String,
    pub product_type: i64,
    pub refund_type: i64,
}

impl VoidedPurchase {
    pub const SUBSCRIPTION: i64 = 1;
    pub const FULL_REFUND: i64 = 1;

    /// Why this refund deserves an operator's attention, if it does: only full refunds of
    /// subscriptions are expected (their entitlement goes with the SUBSCRIPTION_REVOKED that
    /// accompanies them).
    pub fn unexpected(&self) -> Option<&'static str> {
        if self.product_type != Self::SUBSCRIPTION {
            Some("a refund of something other than a subscription")
        } else if self.refund_type != Self::FULL_REFUND {
            Some("a partial refund of a subscription")
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RtdnPayload {
    Subscription(SubscriptionNotification),
    Voided(VoidedPurchase),
    OneTimeProduct,
    Test,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtdn {
    pub version: String,
    pub package_name: String,
    pub event_ms: i64,
    pub payload: RtdnPayload,
}

impl Rtdn {
    /// The purchase token whose user errors this notification records and clears.
    pub fn subscription_token(&self) -> Option<&str> {
        match &self.payload {
            RtdnPayload::Subscription(s) => Some(&s.purchase_token),
            _ => None,
        }
    }

    pub fn describe(&self) -> String {
        match &self.payload {
            RtdnPayload::Subscription(s) => s.kind.name().to_string(),
            RtdnPayload::Voided(_) => "voided purchase".into(),
            RtdnPayload::OneTimeProduct => "one-time product".into(),
            RtdnPayload::Test => "test".into(),
        }
    }
}

const PAYLOAD_KEYS: [&str; 4] =
    ["subscriptionNotification", "oneTimeProductNotification", "voidedPurchaseNotification", "testNotification"];

fn int_field(obj: &Map<String, Value>, key: &str, ctx: &str) -> Result<i64, String> {
    obj.get(key).and_then(Value::as_i64).ok_or_else(|| format!("{ctx}.{key} is missing or not an integer"))
}

fn str_field(obj: &Map<String, Value>, key: &str, ctx: &str) -> Result<String, String> {
    obj.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("{ctx}.{key} is missing or not a string"))
}

/// Parses the RTDN JSON of a message; it must name `package_name` and carry exactly one
/// notification object.
pub fn parse_rtdn(data: &[u8], package_name: &str) -> Result<Rtdn, String> {
    let v: Value = serde_json::from_slice(data).map_err(|e| format!("notification is not JSON: {e}"))?;
    let obj = v.as_object().ok_or("notification is not a JSON object")?;
    let version = str_field(obj, "version", "notification")?;
    let pkg = str_field(obj, "packageName", "notification")?;
    if pkg != package_name {
        return Err(format!("notification is for package {pkg:?}, not the configured {package_name:?}"));
    }
    let event_text = str_field(obj, "eventTimeMillis", "notification")?;
    let event_ms =
        event_text.parse::<i64>().map_err(|_| format!("eventTimeMillis {event_text:?} is not an integer"))?;
    let present: Vec<&str> = PAYLOAD_KEYS.into_iter().filter(|k| obj.contains_key(*k)).collect();
    let [key] = present.as_slice() else {
        return Err(format!("notification must carry exactly one of {PAYLOAD_KEYS:?}, found {present:?}"));
    };
    let body = obj.get(*key).and_then(Value::as_object).ok_or_else(|| format!("{key} is not an object"))?;
    let payload = match *key {
        "subscriptionNotification" => {
            let purchase_token = str_field(body, "purchaseToken", key)?;
            str_field(body, "version", key)?;
            let n = int_field(body, "notificationType", key)?;
            let kind = NotificationType::from_i64(n).ok_or_else(|| format!("unknown notificationType {n}"))?;
            RtdnPayload::Subscription(SubscriptionNotification { purchase_token, kind })
        }
        "voidedPurchaseNotification" => {
            let purchase_token = str_field(body, "purchaseToken", key)?;
            let order_id = str_field(body, "orderId", key)?;
            let product_type = int_field(body, "productType", key)?;
            let refund_type = int_field(body, "refundType", key)?;
            if !(0..=2).contains(&product_type) {
                return Err(format!("unknown voided productType {product_type}"));
            }
            if !(0..=2).contains(&refund_type) {
                return Err(format!("unknown voided refundType {refund_type}"));
            }
            RtdnPayload::Voided(VoidedPurchase { purchase_token, order_id, product_type, refund_type })
        }
        "oneTimeProductNotification" => RtdnPayload::OneTimeProduct,
        _ => RtdnPayload::Test,
    };
    Ok(Rtdn { version, package_name: pkg, event_ms, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PKG: &str = "network.loki.messenger";

    fn rtdn(extra: Value) -> Vec<u8> {
        let mut v = json!({"version": "1.0", "packageName": PKG, "eventTimeMillis": "1759723091078"});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        serde_json::to_vec(&v).unwrap()
    }

    fn sub(kind: i64) -> Value {
        json!({"subscriptionNotification": {"version": "1.0", "notificationType": kind,
               "purchaseToken": "tok", "subscriptionId": "session_pro"}})
    }

    #[test]
    fn subscription_notifications() {
        let r = parse_rtdn(&rtdn(sub(4)), PKG).unwrap();
        assert_eq!(r.event_ms, 1_759_723_091_078);
        assert_eq!(
            r.payload,
            RtdnPayload::Subscription(SubscriptionNotification {
                purchase_token: "tok".into(),
                kind: NotificationType::Purchased
            })
        );
        assert_eq!(r.subscription_token(), Some("tok"));
        for known in [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 19, 20, 22] {
            assert!(parse_rtdn(&rtdn(sub(known)), PKG).is_ok(), "{known}");
        }
        for unknown in [0, 14, 15, 16, 17, 18, 21, 23, -1] {
            assert!(parse_rtdn(&rtdn(sub(unknown)), PKG).is_err(), "{unknown}");
        }
    }

    #[test]
    fn parse_rules() {
        // Wrong package, missing fields, numeric event time, zero or two payload objects.
        assert!(parse_rtdn(&rtdn(sub(4)), "other.package").is_err());
        let numeric = json!({"version": "1.0", "packageName": PKG, "eventTimeMillis": 1759723091078i64,
                             "testNotification": {"version": "1.0"}});
        assert!(parse_rtdn(&serde_json::to_vec(&numeric).unwrap(), PKG).is_err());
        assert!(parse_rtdn(&rtdn(json!({})), PKG).is_err());
        let two = json!({"testNotification": {"version": "1.0"}, "oneTimeProductNotification": {}});
        assert!(parse_rtdn(&rtdn(two), PKG).is_err());
        assert!(parse_rtdn(b"not json", PKG).is_err());
        assert!(parse_rtdn(b"[1]", PKG).is_err());
        let no_token = json!({"subscriptionNotification": {"version": "1.0", "notificationType": 4}});
        assert!(parse_rtdn(&rtdn(no_token), PKG).is_err());
        let string_type =
            json!({"subscriptionNotification": {"version": "1.0", "notificationType": "4", "purchaseToken": "t"}});
        assert!(parse_rtdn(&rtdn(string_type), PKG).is_err());
        assert_eq!(
            parse_rtdn(&rtdn(json!({"testNotification": {"version": "1.0"}})), PKG).unwrap().payload,
            RtdnPayload::Test
        );
        assert_eq!(
            parse_rtdn(&rtdn(json!({"oneTimeProductNotification": {"version": "1.0", "notificationType": 1}})), PKG)
                .unwrap()
                .payload,
            RtdnPayload::OneTimeProduct
        );
    }

    #[test]
    fn voided_purchases() {
        let v = |p: Value, r: Value| {
            rtdn(
                json!({"voidedPurchaseNotification": {"purchaseToken": "t", "orderId": "GPA.1", "productType": p, "refundType": r}}),
            )
        };
        let ok = parse_rtdn(&v(json!(1), json!(1)), PKG).unwrap();
        let RtdnPayload::Voided(voided) = ok.payload else { panic!("not voided") };
        assert_eq!(voided.unexpected(), None);
        let RtdnPayload::Voided(partial) = parse_rtdn(&v(json!(1), json!(2)), PKG).unwrap().payload else { panic!() };
        assert!(partial.unexpected().is_some());
        let RtdnPayload::Voided(one_time) = parse_rtdn(&v(json!(2), json!(1)), PKG).unwrap().payload else { panic!() };
        assert!(one_time.unexpected().is_some());
        assert!(parse_rtdn(&v(json!(3), json!(1)), PKG).is_err());
        assert!(parse_rtdn(&v(json!("1"), json!(1)), PKG).is_err());
        assert!(parse_rtdn(&rtdn(json!({"voidedPurchaseNotification": {"purchaseToken": "t"}})), PKG).is_err());
    }

    #[test]
    fn received_messages_round_trip() {
        let data = STANDARD.encode(rtdn(sub(4)));
        let wire = json!({"ackId": "A1", "message": {"data": data, "messageId": "17064522705211191",
            "publishTime": "2025-11-10T05:20:16.631Z", "attributes": {}, "extra": 1}, "deliveryAttempt": 2, "other": true});
        let m = parse_received(&wire).unwrap();
        assert_eq!((m.ack_id.as_str(), m.message_id), ("A1", 17_064_522_705_211_191));
        assert_eq!(
            m.stored,
            json!({"ackId": "A1", "message": {"data": data, "messageId": "17064522705211191",
                "publishTime": "2025-11-10T05:20:16.631Z", "attributes": {}, "orderingKey": ""}, "deliveryAttempt": 2})
        );
        let again = parse_stored(&m.stored.to_string()).unwrap();
        assert_eq!(again, m);
        // Minimal form (no attributes, orderingKey or deliveryAttempt) is accepted too.
        assert!(parse_received(&json!({"ackId": "a", "message": {"data": "", "messageId": "1"}})).is_ok());
        for bad in [
            json!({"message": {"data": data, "messageId": "1"}}),
            json!({"ackId": "a", "message": {"data": data, "messageId": "x1"}}),
            json!({"ackId": "a", "message": {"data": data, "messageId": 1}}),
            json!({"ackId": "a", "message": {"data": "!!", "messageId": "1"}}),
            json!({"ackId": "a"}),
            json!("x"),
        ] {
            assert!(parse_received(&bad).is_err(), "{bad}");
        }
        assert!(parse_stored("{").is_err());
    }
}

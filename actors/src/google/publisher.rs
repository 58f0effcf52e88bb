//! Responses of the Android Publisher API, read leniently: only the fields the backend uses
//! are checked, and enum values are kept as strings, so schema drift on Google's side does not
//! turn into endless retries.

use serde_json::{Map, Value};

use super::duration::parse_duration_ms;
use super::text::rfc3339_to_ms;

pub const KIND_SUBSCRIPTION_V2: &str = "androidpublisher#subscriptionPurchaseV2";
pub const STATE_ACTIVE: &str = "SUBSCRIPTION_STATE_ACTIVE";
pub const STATE_IN_GRACE_PERIOD: &str = "SUBSCRIPTION_STATE_IN_GRACE_PERIOD";
pub const STATE_ON_HOLD: &str = "SUBSCRIPTION_STATE_ON_HOLD";
pub const STATE_CANCELED: &str = "SUBSCRIPTION_STATE_CANCELED";
pub const STATE_EXPIRED: &str = "SUBSCRIPTION_STATE_EXPIRED";
pub const ACK_ACKNOWLEDGED: &str = "ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED";

/// The first line item of a subscription purchase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineItem {
    pub product_id: Option<String>,
    pub expiry_ms: i64,
    pub base_plan_id: String,
    /// The last paid order; absent for some pending states.
    pub latest_successful_order_id: Option<String>,
    pub auto_renew_enabled: bool,
}

/// `purchases.subscriptionsv2.get`, reduced to what the backend uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionPurchase {
    pub subscription_state: String,
    pub acknowledgement_state: String,
    pub linked_purchase_token: Option<String>,
    /// `externalAccountIdentifiers.obfuscatedExternalAccountId`, unchecked here.
    pub obfuscated_account_id: Option<String>,
    pub line_item: LineItem,
    pub test_purchase: bool,
    /// Set when the purchase was replaced by an upgrade or downgrade (informational).
    pub replacement_cancellation: bool,
}

impl SubscriptionPurchase {
    pub fn is_acknowledged(&self) -> bool {
        self.acknowledgement_state == ACK_ACKNOWLEDGED
    }
}

fn obj<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object().ok_or_else(|| format!("{what} is not an object"))
}

fn req_str(o: &Map<String, Value>, key: &str, ctx: &str) -> Result<String, String> {
    o.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("{ctx}.{key} is missing or not a string"))
}

/// An optional string: absent and null are "none", anything but a string is an error.
fn opt_str(o: &Map<String, Value>, key: &str, ctx: &str) -> Result<Option<String>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{ctx}.{key} is not a string")),
    }
}

pub fn parse_subscription_v2(v: &Value) -> Result<SubscriptionPurchase, String> {
    const CTX: &str = "subscriptionsv2";
    let top = obj(v, CTX)?;
    let kind = req_str(top, "kind", CTX)?;
    if kind != KIND_SUBSCRIPTION_V2 {
        return Err(format!("{CTX}.kind is {kind:?}, expected {KIND_SUBSCRIPTION_V2:?}"));
    }
    let items = top.get("lineItems").and_then(Value::as_array).ok_or(format!("{CTX}.lineItems is missing"))?;
    let first = items.first().ok_or(format!("{CTX}.lineItems is empty"))?;
    let item = obj(first, "lineItems[0]")?;
    const ITEM: &str = "lineItems[0]";
    let expiry_ms = rfc3339_to_ms(&req_str(item, "expiryTime", ITEM)?)?;
    let offer = item.get("offerDetails").ok_or(format!("{ITEM}.offerDetails is missing"))?;
    let base_plan_id = req_str(obj(offer, "lineItems[0].offerDetails")?, "basePlanId", "lineItems[0].offerDetails")?;
    let auto_renew_enabled = match (item.get("autoRenewingPlan"), item.get("prepaidPlan")) {
        (Some(plan), None) => obj(plan, "lineItems[0].autoRenewingPlan")?
            .get("autoRenewEnabled")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        (None, Some(_)) => return Err("prepaid plans are not supported".into()),
        (Some(_), Some(_)) => return Err(format!("{ITEM} has both autoRenewingPlan and prepaidPlan")),
        (None, None) => return Err(format!("{ITEM} has neither autoRenewingPlan nor prepaidPlan")),
    };
    let line_item = LineItem {
        product_id: opt_str(item, "productId", ITEM)?,
        expiry_ms,
        base_plan_id,
        latest_successful_order_id: opt_str(item, "latestSuccessfulOrderId", ITEM)?,
        auto_renew_enabled,
    };
    let obfuscated_account_id = match top.get("externalAccountIdentifiers") {
        None | Some(Value::Null) => None,
        Some(ids) => Some(req_str(
            obj(ids, "externalAccountIdentifiers")?,
            "obfuscatedExternalAccountId",
            "externalAccountIdentifiers",
        )?),
    };
    let replacement_cancellation = top
        .get("canceledStateContext")
        .and_then(Value::as_object)
        .is_some_and(|c| c.contains_key("replacementCancellation"));
    Ok(SubscriptionPurchase {
        subscription_state: req_str(top, "subscriptionState", CTX)?,
        acknowledgement_state: req_str(top, "acknowledgementState", CTX)?,
        linked_purchase_token: opt_str(top, "linkedPurchaseToken", CTX)?.filter(|t| !t.is_empty()),
        obfuscated_account_id,
        line_item,
        test_purchase: top.contains_key("testPurchase"),
        replacement_cancellation,
    })
}

/// The grace period of `base_plan_id` from a `monetization.subscriptions.get` response.
pub fn parse_grace_period_ms(v: &Value, base_plan_id: &str) -> Result<i64, String> {
    let plans = obj(v, "subscription")?
        .get("basePlans")
        .and_then(Value::as_array)
        .ok_or("subscription.basePlans is missing or not an array")?;
    let plan = plans
        .iter()
        .filter_map(Value::as_object)
        .find(|p| p.get("basePlanId").and_then(Value::as_str) == Some(base_plan_id))
        .ok_or_else(|| format!("base plan {base_plan_id:?} is not part of the subscription product"))?;
    let renewing = plan
        .get("autoRenewingBasePlanType")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("base plan {base_plan_id:?} is not auto-renewing"))?;
    let grace = req_str(renewing, "gracePeriodDuration", "autoRenewingBasePlanType")?;
    parse_duration_ms(&grace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn purchase() -> Value {
        json!({
            "kind": "androidpublisher#subscriptionPurchaseV2",
            "regionCode": "AU",
            "latestOrderId": "GPA.3354-3745-5570-25336",
            "startTime": "2025-10-06T03:58:11.078Z",
            "subscriptionState": "SUBSCRIPTION_STATE_ACTIVE",
            "acknowledgementState": "ACKNOWLEDGEMENT_STATE_PENDING",
            "externalAccountIdentifiers": {"obfuscatedExternalAccountId": "ab"},
            "subscribeWithGoogleInfo": {"emailAddress": "x@example.com"},
            "testPurchase": {},
            "lineItems": [{
                "productId": "session_pro",
                "expiryTime": "2025-10-06T04:03:10.613Z",
                "autoRenewingPlan": {"autoRenewEnabled": true, "recurringPrice": {"currencyCode": "AUD", "units": "5"},
                                     "priceStepUpConsentDetails": {"state": "CONSENT_STATE_PENDING"}},
                "offerDetails": {"basePlanId": "session-pro-1-month", "offerTags": []},
                "latestSuccessfulOrderId": "GPA.3354-3745-5570-25336"
            }]
        })
    }

    #[test]
    fn reads_the_used_fields() {
        let p = parse_subscription_v2(&purchase()).unwrap();
        assert_eq!(p.subscription_state, STATE_ACTIVE);
        assert!(!p.is_acknowledged());
        assert_eq!(p.obfuscated_account_id.as_deref(), Some("ab"));
        assert_eq!(p.line_item.expiry_ms, 1_759_723_390_613);
        assert_eq!(p.line_item.base_plan_id, "session-pro-1-month");
        assert_eq!(p.line_item.latest_successful_order_id.as_deref(), Some("GPA.3354-3745-5570-25336"));
        assert!(p.line_item.auto_renew_enabled && p.test_purchase && !p.replacement_cancellation);
        assert_eq!(p.linked_purchase_token, None);
    }

    #[test]
    fn lenient_about_unused_fields() {
        let mut v = purchase();
        v["subscriptionState"] = json!("SUBSCRIPTION_STATE_SOMETHING_NEW");
        v["canceledStateContext"] = json!({"replacementCancellation": {}});
        v["lineItems"][0]["autoRenewingPlan"] = json!({});
        v["lineItems"][0].as_object_mut().unwrap().remove("latestSuccessfulOrderId");
        v["lineItems"].as_array_mut().unwrap().push(json!({"garbage": true}));
        v["linkedPurchaseToken"] = json!("old");
        let p = parse_subscription_v2(&v).unwrap();
        assert_eq!(p.subscription_state, "SUBSCRIPTION_STATE_SOMETHING_NEW");
        assert!(p.replacement_cancellation && !p.line_item.auto_renew_enabled);
        assert_eq!(p.line_item.latest_successful_order_id, None);
        assert_eq!(p.linked_purchase_token.as_deref(), Some("old"));
    }

    #[test]
    fn strict_about_used_fields() {
        let breakers: [fn(&mut Value); 10] = [
            |v| v["kind"] = json!("androidpublisher#subscriptionPurchase"),
            |v| v["lineItems"] = json!([]),
            |v| v["lineItems"][0]["expiryTime"] = json!("yesterday"),
            |v| v["lineItems"][0]["offerDetails"] = json!({}),
            |v| {
                v["lineItems"][0].as_object_mut().unwrap().remove("autoRenewingPlan");
            },
            |v| v["lineItems"][0]["prepaidPlan"] = json!({}),
            |v| {
                v.as_object_mut().unwrap().remove("subscriptionState");
            },
            |v| {
                v.as_object_mut().unwrap().remove("acknowledgementState");
            },
            |v| v["externalAccountIdentifiers"] = json!({}),
            |v| v["linkedPurchaseToken"] = json!(5),
        ];
        for (i, b) in breakers.iter().enumerate() {
            let mut v = purchase();
            b(&mut v);
            assert!(parse_subscription_v2(&v).is_err(), "case {i}");
        }
        assert!(parse_subscription_v2(&json!([])).is_err());
    }

    #[test]
    fn grace_periods() {
        let v = json!({"productId": "session_pro", "basePlans": [
            "junk",
            {"basePlanId": "session-pro-3-months", "autoRenewingBasePlanType": {"billingPeriodDuration": "P3M", "gracePeriodDuration": "P7D"}},
            {"basePlanId": "session-pro-1-month", "autoRenewingBasePlanType": {"billingPeriodDuration": "P30D", "gracePeriodDuration": "P2D"}},
            {"basePlanId": "no-grace", "autoRenewingBasePlanType": {"billingPeriodDuration": "P30D"}}
        ]});
        assert_eq!(parse_grace_period_ms(&v, "session-pro-1-month"), Ok(172_800_000));
        assert_eq!(parse_grace_period_ms(&v, "session-pro-3-months"), Ok(604_800_000));
        assert!(parse_grace_period_ms(&v, "session-pro-12-months").is_err());
        assert!(parse_grace_period_ms(&v, "no-grace").is_err());
        assert!(parse_grace_period_ms(&json!({}), "x").is_err());
    }
}

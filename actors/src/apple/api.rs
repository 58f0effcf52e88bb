//! The App Store Server API, as far as the backend uses it: the notification history, used
//! at start to catch up on notifications whose delivery failed while we were away.
//! Every request carries a fresh ES256 token made with the App Store Connect `.p8` key.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer as _;
use p256::pkcs8::DecodePrivateKey as _;
use serde_json::{Value, json};

use crate::domain::time::DAY_MS;
use crate::outbound::{HttpClient, OutboundError};

pub const PRODUCTION_BASE_URL: &str = "https://api.storekit.itunes.apple.com";
pub const SANDBOX_BASE_URL: &str = "https://api.storekit-sandbox.itunes.apple.com";
pub const HISTORY_PATH: &str = "/inApps/v1/notifications/history";

/// Lifetime of an API token (Apple accepts at most an hour; its library uses five minutes).
const TOKEN_LIFETIME_S: i64 = 300;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Catch-up looks no further back than this, whatever the checkpoint says.
pub const PRODUCTION_LOOKBACK_DAYS: i64 = 180;
pub const SANDBOX_LOOKBACK_DAYS: i64 = 30;
/// A catch-up this soon after the previous one is skipped.
pub const MIN_CATCHUP_INTERVAL_MS: i64 = 30 * 60 * 1000;
/// Notifications signed in the last few seconds may still be in flight to the webhook.
pub const CATCHUP_END_LAG_MS: i64 = 10_000;

/// Credentials and identity for the App Store Server API.
pub struct ApiKey {
    key_id: String,
    issuer_id: String,
    bundle_id: String,
    key: p256::ecdsa::SigningKey,
}

impl std::fmt::Debug for ApiKey {
    // The private key is a secret: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey").field("key_id", &self.key_id).field("issuer_id", &self.issuer_id).finish()
    }
}

impl ApiKey {
    /// `p8` is the App Store Connect key file: PEM (or DER) PKCS#8 with a P-256 key.
    pub fn from_p8(p8: &[u8], key_id: &str, issuer_id: &str, bundle_id: &str) -> Result<Self, String> {
        let key = match std::str::from_utf8(p8) {
            Ok(text) if text.contains("-----BEGIN") => p256::ecdsa::SigningKey::from_pkcs8_pem(text.trim()),
            _ => p256::ecdsa::SigningKey::from_pkcs8_der(p8),
        }
        .map_err(|e| format!("the App Store Connect key is not a PKCS#8 P-256 private key: {e}"))?;
        Ok(Self { key_id: key_id.into(), issuer_id: issuer_id.into(), bundle_id: bundle_id.into(), key })
    }

    /// A signed token for requests made at `now_s` (Unix seconds).
    pub fn token(&self, now_s: i64) -> String {
        let header = json!({ "alg": "ES256", "typ": "JWT", "kid": self.key_id });
        let claims = json!({
            "iss": self.issuer_id,
            "iat": now_s,
            "exp": now_s + TOKEN_LIFETIME_S,
            "aud": "appstoreconnect-v1",
            "bid": self.bundle_id,
        });
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let sig: p256::ecdsa::Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }

    pub fn verifying_key(&self) -> p256::ecdsa::VerifyingKey {
        *self.key.verifying_key()
    }
}

/// The period a catch-up asks Apple about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CatchupWindow {
    pub start_ms: i64,
    pub end_ms: i64,
    /// The stored checkpoint is older than Apple's history reaches: some may be lost.
    pub checkpoint_too_old: bool,
}

/// The window to catch up at `now_ms`, or None when the last catch-up is too recent.
pub fn catchup_window(now_ms: i64, checkpoint_ms: i64, sandbox: bool) -> Option<CatchupWindow> {
    let end_ms = now_ms.saturating_sub(CATCHUP_END_LAG_MS);
    if end_ms.saturating_sub(checkpoint_ms) < MIN_CATCHUP_INTERVAL_MS {
        return None;
    }
    let days = if sandbox { SANDBOX_LOOKBACK_DAYS } else { PRODUCTION_LOOKBACK_DAYS };
    let oldest = end_ms.saturating_sub(days * DAY_MS);
    Some(CatchupWindow {
        start_ms: checkpoint_ms.max(oldest),
        end_ms,
        checkpoint_too_old: checkpoint_ms != 0 && checkpoint_ms < oldest,
    })
}

/// One page of the notification history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryPage {
    /// Each entry's `signedPayload`; None for an entry without one.
    pub payloads: Vec<Option<String>>,
    pub has_more: bool,
    pub pagination_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Transport(#[from] OutboundError),
    #[error("the App Store Server API answered HTTP {status}{}", describe(.code, .message))]
    Status { status: u16, code: Option<i64>, message: Option<String> },
    #[error("the App Store Server API answered something unreadable: {0}")]
    BadResponse(String),
}

fn describe(code: &Option<i64>, message: &Option<String>) -> String {
    match (code, message) {
        (None, None) => String::new(),
        (c, m) => {
            format!(" (error {}: {})", c.map_or_else(|| "?".into(), |c| c.to_string()), m.as_deref().unwrap_or(""))
        }
    }
}

/// Reads a history page; a missing `hasMore` means there is no more.
pub fn parse_history_page(body: &[u8]) -> Result<HistoryPage, ApiError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| ApiError::BadResponse(format!("not JSON: {e}")))?;
    let Value::Object(m) = v else { return Err(ApiError::BadResponse("not a JSON object".into())) };
    let payloads = match m.get("notificationHistory") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            items.iter().map(|i| i.get("signedPayload").and_then(Value::as_str).map(str::to_string)).collect()
        }
        Some(_) => return Err(ApiError::BadResponse("notificationHistory is not a list".into())),
    };
    Ok(HistoryPage {
        payloads,
        has_more: m.get("hasMore").and_then(Value::as_bool).unwrap_or(false),
        pagination_token: m.get("paginationToken").and_then(Value::as_str).map(str::to_string),
    })
}

/// The App Store Server API client: the shared outbound HTTP client, a base URL and a key.
pub struct ApiClient {
    http: HttpClient,
    base_url: String,
    key: ApiKey,
}

impl ApiClient {
    pub fn new(http: HttpClient, base_url: &str, key: ApiKey) -> Self {
        Self { http, base_url: base_url.trim_end_matches('/').to_string(), key }
    }

    /// Fetches one page of failed deliveries in `window` (the first page when `token` is None).
    pub async fn history_page(
        &self,
        window: &CatchupWindow,
        token: Option<&str>,
        now_ms: i64,
    ) -> Result<HistoryPage, ApiError> {
        let mut url = format!("{}{HISTORY_PATH}", self.base_url);
        if let Some(t) = token {
            url.push_str("?paginationToken=");
            url.push_str(&crate::outbound::percent_encode(t));
        }
        let auth = format!("Bearer {}", self.key.token(now_ms.div_euclid(1000)));
        let body = json!({ "startDate": window.start_ms, "endDate": window.end_ms, "onlyFailures": true });
        let headers = [
            ("authorization", auth.as_str()),
            ("accept", "application/json"),
            ("user-agent", concat!("session-pro-backend/", env!("CARGO_PKG_VERSION"))),
        ];
        let resp = self.http.post_json(&url, &headers, &body, REQUEST_TIMEOUT).await?;
        if !resp.is_success() {
            let (mut code, mut message) = (None, None);
            if resp.content_type.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
                && let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(&resp.body)
            {
                code = m.get("errorCode").and_then(Value::as_i64);
                message = m.get("errorMessage").and_then(Value::as_str).map(str::to_string);
            }
            return Err(ApiError::Status { status: resp.status, code, message });
        }
        parse_history_page(&resp.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_rules() {
        let now = 1_760_000_000_000;
        assert_eq!(catchup_window(now, now - 10_000 - MIN_CATCHUP_INTERVAL_MS + 1, false), None);
        let w = catchup_window(now, now - 10_000 - MIN_CATCHUP_INTERVAL_MS, false).unwrap();
        assert_eq!(
            (w.start_ms, w.end_ms, w.checkpoint_too_old),
            (now - 10_000 - MIN_CATCHUP_INTERVAL_MS, now - 10_000, false)
        );
        let w = catchup_window(now, 0, true).unwrap();
        assert_eq!((w.start_ms, w.checkpoint_too_old), (now - 10_000 - 30 * DAY_MS, false));
        let w = catchup_window(now, 5, false).unwrap();
        assert_eq!((w.start_ms, w.checkpoint_too_old), (now - 10_000 - 180 * DAY_MS, true));
    }

    #[test]
    fn history_parsing_is_lenient_but_bounded() {
        let p = parse_history_page(br#"{"notificationHistory":[{"signedPayload":"a"},{"x":1}],"paginationToken":"t"}"#)
            .unwrap();
        assert_eq!(p.payloads, vec![Some("a".to_string()), None]);
        assert!(!p.has_more, "a missing hasMore ends the paging");
        assert_eq!(p.pagination_token.as_deref(), Some("t"));
        assert!(parse_history_page(b"[]").is_err());
        assert!(parse_history_page(br#"{"notificationHistory":5}"#).is_err());
        assert!(parse_history_page(b"\xff").is_err());
    }
}

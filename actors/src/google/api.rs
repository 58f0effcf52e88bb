//! Google's HTTP APIs as the backend calls them: the OAuth2 token endpoint, Pub/Sub pull and
//! acknowledge (REST), and the Android Publisher API. Every call goes through the one outbound
//! client; the access token is cached until a few minutes before it expires and shared by the
//! subscriber and the claim route.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use serde_json::{Value, json};

use super::auth::{ServiceAccount, parse_token_response};
use super::publisher::{SubscriptionPurchase, parse_grace_period_ms, parse_subscription_v2};
use crate::clock::SharedClock;
use crate::health::Registry;
use crate::outbound::percent_encode;
use crate::outbound::{HttpClient, OutboundError};

/// Refresh the token this long before Google says it expires.
const TOKEN_REFRESH_MARGIN_S: i64 = 225;
/// Most messages one pull asks for.
pub const PULL_MAX_MESSAGES: u32 = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("no Google service-account credentials are configured")]
    NoCredentials,
    #[error("getting a Google access token failed: {0}")]
    Token(String),
    #[error("{api} call failed: {reason}")]
    Transport { api: &'static str, reason: String },
    #[error("{api} call timed out")]
    Timeout { api: &'static str },
    #[error("{api} answered HTTP {status}: {message}")]
    Http { api: &'static str, status: u16, message: String },
    #[error("{api} answered something unexpected: {reason}")]
    BadResponse { api: &'static str, reason: String },
}

/// Where and as whom the backend talks to Google.
#[derive(Debug, Clone)]
pub struct GoogleEndpoints {
    pub package_name: String,
    pub cloud_project_id: String,
    pub cloud_subscription_name: String,
    pub subscription_product_id: String,
    pub pubsub_base_url: String,
    pub publisher_base_url: String,
    /// None: the key file's `token_uri`, or Google's default.
    pub token_url: Option<String>,
    /// A pull may be held this long by the server (an empty batch when it runs out).
    pub pull_timeout: Duration,
    pub call_timeout: Duration,
}

impl GoogleEndpoints {
    pub const PUBSUB: &'static str = "https://pubsub.googleapis.com";
    pub const PUBLISHER: &'static str = "https://androidpublisher.googleapis.com";
}

struct CachedToken {
    token: String,
    /// Clock time (ms) after which it is refreshed.
    refresh_at_ms: i64,
}

/// Cumulative latency per API, shown as gauges on /metrics.
#[derive(Default)]
struct Latency {
    by_api: Mutex<BTreeMap<&'static str, (u64, f64, f64)>>,
}

pub struct GoogleApi {
    http: HttpClient,
    account: Option<ServiceAccount>,
    token_url: String,
    ends: GoogleEndpoints,
    clock: SharedClock,
    registry: Arc<Registry>,
    latency: Arc<Latency>,
    token: tokio::sync::Mutex<Option<CachedToken>>,
}

/// Trims a base URL's trailing slashes so paths can be appended.
fn base(url: &str) -> &str {
    url.trim_end_matches('/')
}

impl GoogleApi {
    /// No network is touched here; the first call fetches a token.
    pub fn new(
        ends: GoogleEndpoints,
        account: Option<ServiceAccount>,
        http: HttpClient,
        clock: SharedClock,
        registry: Arc<Registry>,
    ) -> Self {
        let token_url = ends
            .token_url
            .clone()
            .or_else(|| account.as_ref().and_then(|a| a.token_uri.clone()))
            .unwrap_or_else(|| super::auth::DEFAULT_TOKEN_URL.to_string());
        let latency = Arc::new(Latency::default());
        let (sum, count, last) = (latency.clone(), latency.clone(), latency.clone());
        registry.add_gauges("pro_google_api_seconds_sum", "seconds spent in Google API calls, by API", move || {
            gauge_values(&sum, |v| v.1)
        });
        registry.add_gauges("pro_google_api_seconds_count", "Google API calls timed, by API", move || {
            gauge_values(&count, |v| v.0 as f64)
        });
        registry.add_gauges("pro_google_api_last_seconds", "latency of the last Google API call, by API", move || {
            gauge_values(&last, |v| v.2)
        });
        Self { http, account, token_url, ends, clock, registry, latency, token: tokio::sync::Mutex::new(None) }
    }

    pub fn endpoints(&self) -> &GoogleEndpoints {
        &self.ends
    }

    pub fn token_url(&self) -> &str {
        &self.token_url
    }

    fn record(&self, api: &'static str, started: Instant, ok: bool) {
        let secs = started.elapsed().as_secs_f64();
        if let Ok(mut m) = self.latency.by_api.lock() {
            let e = m.entry(api).or_default();
            e.0 += 1;
            e.1 += secs;
            e.2 = secs;
        }
        let outcome = if ok { "ok" } else { "error" };
        self.registry.count(
            "pro_google_api_calls_total",
            "Google API calls by API and outcome",
            format!("api=\"{api}\",outcome=\"{outcome}\""),
        );
    }

    /// A valid access token, fetched (once, however many callers wait) when the cached one is
    /// missing or close to expiry.
    pub async fn access_token(&self) -> Result<String, ApiError> {
        let account = self.account.as_ref().ok_or(ApiError::NoCredentials)?;
        let mut cached = self.token.lock().await;
        let now_ms = self.clock.now_ms();
        if let Some(c) = cached.as_ref()
            && now_ms < c.refresh_at_ms
        {
            return Ok(c.token.clone());
        }
        let started = Instant::now();
        let result = self.fetch_token(account, now_ms).await;
        self.record("token", started, result.is_ok());
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.registry.count(
            "pro_google_token_refreshes_total",
            "Google access-token requests by outcome",
            format!("outcome=\"{outcome}\""),
        );
        let (token, expires_in) = result?;
        let lifetime_ms = (expires_in - TOKEN_REFRESH_MARGIN_S).max(0).saturating_mul(1000);
        *cached = Some(CachedToken { token: token.clone(), refresh_at_ms: now_ms.saturating_add(lifetime_ms) });
        Ok(token)
    }

    async fn fetch_token(&self, account: &ServiceAccount, now_ms: i64) -> Result<(String, i64), ApiError> {
        let body = account.token_request_body(&self.token_url, now_ms.div_euclid(1000)).map_err(ApiError::Token)?;
        let resp = self
            .http
            .request(
                Method::POST,
                &self.token_url,
                &[("content-type", "application/x-www-form-urlencoded")],
                Some(Bytes::from(body)),
                self.ends.call_timeout,
            )
            .await
            .map_err(|e| ApiError::Token(without_url(&e)))?;
        if !resp.is_success() {
            return Err(ApiError::Token(format!("HTTP {}: {}", resp.status, error_message(&resp.body))));
        }
        parse_token_response(&resp.body).map_err(ApiError::Token)
    }

    /// Forgets the cached token (after a 401), so the next call fetches a new one.
    async fn drop_token(&self) {
        *self.token.lock().await = None;
    }

    /// One authorised call; answers the parsed JSON body of a 2xx (`{}` when empty).
    async fn call(
        &self,
        api: &'static str,
        method: Method,
        url: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, ApiError> {
        let token = self.access_token().await?;
        let auth = format!("Bearer {token}");
        let mut headers = vec![("authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
        }
        let started = Instant::now();
        let sent = self.http.request(method, url, &headers, body.map(|b| Bytes::from(b.to_string())), timeout).await;
        let result = match sent {
            Err(OutboundError::Timeout(_)) => Err(ApiError::Timeout { api }),
            Err(e) => Err(ApiError::Transport { api, reason: without_url(&e) }),
            Ok(resp) if resp.is_success() => {
                if resp.body.iter().all(u8::is_ascii_whitespace) {
                    Ok(json!({}))
                } else {
                    serde_json::from_slice(&resp.body)
                        .map_err(|e| ApiError::BadResponse { api, reason: format!("not JSON: {e}") })
                }
            }
            Ok(resp) => {
                if resp.status == 401 {
                    self.drop_token().await;
                }
                Err(ApiError::Http { api, status: resp.status, message: error_message(&resp.body) })
            }
        };
        self.record(api, started, result.is_ok());
        result
    }

    fn subscription_url(&self, action: &str) -> String {
        format!(
            "{}/v1/projects/{}/subscriptions/{}:{action}",
            base(&self.ends.pubsub_base_url),
            percent_encode(&self.ends.cloud_project_id),
            percent_encode(&self.ends.cloud_subscription_name)
        )
    }

    /// One synchronous pull: the `receivedMessages` objects (none when the server held the
    /// request until our timeout).
    pub async fn pull(&self) -> Result<Vec<Value>, ApiError> {
        let url = self.subscription_url("pull");
        let body = json!({ "maxMessages": PULL_MAX_MESSAGES });
        match self.call("pubsub.pull", Method::POST, &url, Some(&body), self.ends.pull_timeout).await {
            Ok(v) => match v.get("receivedMessages") {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(a)) => Ok(a.clone()),
                Some(_) => {
                    Err(ApiError::BadResponse { api: "pubsub.pull", reason: "receivedMessages is not a list".into() })
                }
            },
            // The server may hold a pull as long as it likes: running out of patience is an
            // empty batch.
            Err(ApiError::Timeout { .. }) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Acknowledges pulled messages. Ids Pub/Sub no longer accepts (INVALID_ARGUMENT, e.g. an
    /// expired ack id) are not an error: those messages come back and are acknowledged then.
    pub async fn acknowledge_messages(&self, ack_ids: &[String]) -> Result<(), ApiError> {
        if ack_ids.is_empty() {
            return Ok(());
        }
        let url = self.subscription_url("acknowledge");
        match self
            .call("pubsub.acknowledge", Method::POST, &url, Some(&json!({ "ackIds": ack_ids })), self.ends.call_timeout)
            .await
        {
            Ok(_) => Ok(()),
            Err(ApiError::Http { status: 400, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn publisher_app_url(&self) -> String {
        format!(
            "{}/androidpublisher/v3/applications/{}",
            base(&self.ends.publisher_base_url),
            percent_encode(&self.ends.package_name)
        )
    }

    /// `purchases.subscriptionsv2.get` for a purchase token.
    pub async fn subscription_v2(&self, token: &str) -> Result<SubscriptionPurchase, ApiError> {
        const API: &str = "publisher.subscriptionsv2";
        let url = format!("{}/purchases/subscriptionsv2/tokens/{}", self.publisher_app_url(), percent_encode(token));
        let v = self.call(API, Method::GET, &url, None, self.ends.call_timeout).await?;
        parse_subscription_v2(&v).map_err(|reason| ApiError::BadResponse { api: API, reason })
    }

    /// The grace period (ms) of one base plan of the configured subscription product.
    pub async fn grace_period_ms(&self, base_plan_id: &str) -> Result<i64, ApiError> {
        const API: &str = "publisher.monetization";
        let url = format!(
            "{}/subscriptions/{}",
            self.publisher_app_url(),
            percent_encode(&self.ends.subscription_product_id)
        );
        let v = self.call(API, Method::GET, &url, None, self.ends.call_timeout).await?;
        parse_grace_period_ms(&v, base_plan_id).map_err(|reason| ApiError::BadResponse { api: API, reason })
    }

    /// Acknowledges a subscription purchase (Google refunds purchases left unacknowledged for
    /// three days).
    pub async fn acknowledge_purchase(&self, token: &str) -> Result<(), ApiError> {
        let url = format!(
            "{}/purchases/subscriptions/{}/tokens/{}:acknowledge",
            self.publisher_app_url(),
            percent_encode(&self.ends.subscription_product_id),
            percent_encode(token)
        );
        self.call("publisher.acknowledge", Method::POST, &url, Some(&json!({})), self.ends.call_timeout).await.map(drop)
    }

    /// Makes sure a purchase is acknowledged; answers whether this call acknowledged it.
    pub async fn ensure_acknowledged(&self, token: &str) -> Result<bool, ApiError> {
        if self.subscription_v2(token).await?.is_acknowledged() {
            return Ok(false);
        }
        self.acknowledge_purchase(token).await?;
        Ok(true)
    }
}

/// An outbound failure without its URL: URLs carry purchase tokens, which stay out of logs
/// and error messages.
fn without_url(e: &OutboundError) -> String {
    match e {
        OutboundError::BadUrl(_) => "the configured URL is invalid".into(),
        OutboundError::Insecure(_) => "plain http is only allowed to loopback hosts".into(),
        OutboundError::Timeout(_) => "timed out".into(),
        OutboundError::Transport { reason, .. } => reason.clone(),
    }
}

fn gauge_values(l: &Latency, f: fn(&(u64, f64, f64)) -> f64) -> Vec<(String, f64)> {
    l.by_api.lock().map(|m| m.iter().map(|(api, v)| (format!("api=\"{api}\""), f(v))).collect()).unwrap_or_default()
}

/// The message of a Google error body (`{"error":{"code","message","status"}}`), or the start
/// of the body.
fn error_message(body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let from_json = parsed.as_ref().and_then(|v| {
        let e = v.get("error")?;
        match e {
            Value::String(s) => Some(s.clone()),
            Value::Object(_) => {
                let status = e.get("status").and_then(Value::as_str).unwrap_or("");
                let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
                Some(format!("{status} {msg}").trim().to_string())
            }
            _ => None,
        }
    });
    from_json.unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(br#"{"error":{"code":400,"message":"bad ack","status":"INVALID_ARGUMENT"}}"#),
            "INVALID_ARGUMENT bad ack"
        );
        assert_eq!(error_message(br#"{"error":"invalid_grant"}"#), "invalid_grant");
        assert_eq!(error_message(b"oops"), "oops");
    }

    #[actix::test]
    async fn no_credentials_means_no_network() {
        // GGL-0: the module starts without a key file and without touching the network.
        let ends = GoogleEndpoints {
            package_name: "network.loki.messenger".into(),
            cloud_project_id: "proj".into(),
            cloud_subscription_name: "session-pro-sub".into(),
            subscription_product_id: "session_pro".into(),
            pubsub_base_url: GoogleEndpoints::PUBSUB.into(),
            publisher_base_url: GoogleEndpoints::PUBLISHER.into(),
            token_url: None,
            pull_timeout: Duration::from_secs(1),
            call_timeout: Duration::from_secs(1),
        };
        let api = GoogleApi::new(ends, None, HttpClient::new(), Arc::new(crate::SystemClock), Registry::new());
        assert_eq!(api.token_url(), "https://oauth2.googleapis.com/token");
        assert_eq!(api.pull().await, Err(ApiError::NoCredentials));
        assert_eq!(api.ensure_acknowledged("t").await, Err(ApiError::NoCredentials));
    }
}

//! The one outbound HTTP client (Apple, Google, webhooks): hyper over rustls with the
//! Mozilla root store, a per-request timeout, and plain `http://` only to loopback hosts
//! (tests and private mirrors).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Responses larger than this are refused (the peers answer with small JSON documents).
const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("bad URL {0}")]
    BadUrl(String),
    #[error("plain http is only allowed to loopback hosts: {0}")]
    Insecure(String),
    #[error("request to {0} timed out")]
    Timeout(String),
    #[error("request to {url} failed: {reason}")]
    Transport { url: String, reason: String },
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
}

impl Response {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Operator tools may talk plain HTTP to any host (e.g. a dev server on another machine).
    plain_http_anywhere: bool,
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

/// An error with its causes, `outer: inner: …` (hyper's own texts name only the outermost).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(&format!(": {c}"));
        cause = c.source();
    }
    out
}

/// Whether `host` names this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost") || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl HttpClient {
    pub fn new() -> Self {
        let https =
            hyper_rustls::HttpsConnectorBuilder::new().with_webpki_roots().https_or_http().enable_http1().build();
        Self {
            inner: Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(https),
            plain_http_anywhere: false,
        }
    }

    /// A client that also allows plain `http://` to hosts other than this machine; for the
    /// operator's command-line tools, never for the daemon's calls to Apple, Google or webhooks.
    pub fn allowing_plain_http() -> Self {
        Self { plain_http_anywhere: true, ..Self::new() }
    }

    /// Sends one request and reads the whole (bounded) response.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Bytes>,
        timeout: Duration,
    ) -> Result<Response, OutboundError> {
        let uri: Uri = url.parse().map_err(|_| OutboundError::BadUrl(url.to_string()))?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if self.plain_http_anywhere || uri.host().is_some_and(is_loopback_host) => {}
            Some("http") => return Err(OutboundError::Insecure(url.to_string())),
            _ => return Err(OutboundError::BadUrl(url.to_string())),
        }
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v)) else {
                return Err(OutboundError::BadUrl(format!("bad header {k}")));
            };
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(body.unwrap_or_default()))
            .map_err(|e| OutboundError::Transport { url: url.to_string(), reason: e.to_string() })?;
        let work = async {
            let resp = self
                .inner
                .request(req)
                .await
                .map_err(|e| OutboundError::Transport { url: url.to_string(), reason: error_chain(&e) })?;
            let status = resp.status().as_u16();
            let content_type =
                resp.headers().get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| OutboundError::Transport { url: url.to_string(), reason: e.to_string() })?
                .to_bytes();
            Ok(Response { status, content_type, body })
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| OutboundError::Timeout(url.to_string()))?
    }

    pub async fn post_json(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        json: &serde_json::Value,
        timeout: Duration,
    ) -> Result<Response, OutboundError> {
        let mut h = headers.to_vec();
        h.push(("content-type", "application/json"));
        self.request(Method::POST, url, &h, Some(Bytes::from(json.to_string())), timeout).await
    }
}

/// Percent-encodes everything except RFC 3986's unreserved characters, so the value is safe as
/// one path segment or one form value.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback_host("127.0.0.1"));
        assert!(is_loopback_host("127.9.9.9"));
        assert!(is_loopback_host("[::1]"));
        assert!(is_loopback_host("LOCALHOST"));
        assert!(!is_loopback_host("example.com"));
        assert!(!is_loopback_host("10.0.0.1"));
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode("abc.DEF-_~1"), "abc.DEF-_~1");
        assert_eq!(percent_encode("a b/c?d=e&f:g"), "a%20b%2Fc%3Fd%3De%26f%3Ag");
        assert_eq!(percent_encode("a+b/c=d~_.-"), "a%2Bb%2Fc%3Dd~_.-");
        assert_eq!(percent_encode("é"), "%C3%A9");
    }

    #[actix::test]
    async fn refuses_plain_http_to_other_hosts() {
        let c = HttpClient::new();
        let e = c.request(Method::GET, "http://example.com/x", &[], None, Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(e, OutboundError::Insecure(_)));
        let e = c.request(Method::GET, "ftp://x", &[], None, Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(e, OutboundError::BadUrl(_)));
    }
}

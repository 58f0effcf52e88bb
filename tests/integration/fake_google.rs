//! A fake Google on 127.0.0.1:0: the OAuth2 token endpoint (checking the RS256 assertion),
//! Pub/Sub pull and acknowledge with scripted batches, and the Android Publisher endpoints
//! with a scripted state per purchase token. It records what it receives.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::Verifier;
use serde_json::{Value, json};
use sha2::Sha256;

pub const TEST_KEY_PEM: &str = include_str!("../../actors/tests/data/google-test-key.pem");
pub const CLIENT_EMAIL: &str = "pro-backend@test-project.iam.gserviceaccount.com";
pub const PKG: &str = "network.loki.messenger";
pub const PRODUCT: &str = "session_pro";
pub const PROJECT: &str = "test-project";
pub const SUBSCRIPTION: &str = "session-pro-sub";

#[derive(Default)]
pub struct FakeState {
    pub token_calls: u32,
    pub tokens_issued: u32,
    /// Scripted pull answers, one batch per pull.
    pub batches: VecDeque<Vec<Value>>,
    next_message_id: i64,
    next_ack: u64,
    /// Every ack id Pub/Sub was asked to acknowledge.
    pub acked: Vec<String>,
    /// Answer acknowledge with 400 INVALID_ARGUMENT.
    pub ack_invalid_argument: bool,
    /// subscriptionsv2 state per purchase token.
    pub subs: HashMap<String, Value>,
    /// Status to answer subscriptionsv2 with, per token.
    pub sub_failures: HashMap<String, u16>,
    /// Purchase acknowledgements received: (subscription id in the path, token).
    pub purchase_acks: Vec<(String, String)>,
    /// Status to answer purchase acknowledgements with.
    pub purchase_ack_failure: Option<u16>,
    pub monetization_calls: u32,
    /// Every request: "METHOD path".
    pub requests: Vec<String>,
    pub unauthorized: u32,
}

pub struct FakeGoogle {
    pub addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Some(v) = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reply(status: u16, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert("content-type", "application/json".parse().unwrap());
    r
}

fn google_error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    reply(status, json!({"error": {"code": status, "message": message, "status": code}}))
}

impl FakeGoogle {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(FakeState { next_message_id: 17_064_522_705_211_000, ..Default::default() }));
        let key = rsa::PrivateKey::from_pkcs8_pem(TEST_KEY_PEM).unwrap().to_public_key();
        let verifier = Arc::new(VerifyingKey::<Sha256>::new(key));
        let st = state.clone();
        actix_web::rt::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (st, verifier) = (st.clone(), verifier.clone());
                actix_web::rt::spawn(async move {
                    let svc = service_fn(move |req| handle(st.clone(), verifier.clone(), addr, req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        Self { addr, state }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    /// Writes a service-account key file whose `token_uri` is this fake.
    pub fn write_key_file(&self, path: &Path) {
        let file = json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "0123456789abcdef",
            "private_key": TEST_KEY_PEM,
            "client_email": CLIENT_EMAIL,
            "token_uri": format!("{}/token", self.base_url()),
        });
        std::fs::write(path, file.to_string()).unwrap();
    }

    /// The INI enabling Google against this fake (platform testing on, as upstream's tests).
    pub fn ini(&self, key_file: &Path) -> String {
        format!(
            "[base]\nwith_platform_google = 1\nplatform_testing_env = 1\n[google]\npackage_name = {PKG}\n\
             cloud_project_id = {PROJECT}\ncloud_subscription_name = {SUBSCRIPTION}\n\
             subscription_product_id = {PRODUCT}\ncloud_app_credentials_path = {}\n\
             pubsub_base_url = {base}\nandroidpublisher_base_url = {base}\n",
            key_file.display(),
            base = self.base_url()
        )
    }

    /// A received message carrying `rtdn` with the given message id; answers its ack id.
    pub fn message(&self, message_id: i64, data: &[u8]) -> (Value, String) {
        let mut st = self.state();
        st.next_ack += 1;
        let ack = format!("ack-{}-{}", message_id, st.next_ack);
        let msg = json!({"ackId": ack, "message": {"data": STANDARD.encode(data), "messageId": message_id.to_string(),
            "publishTime": "2025-11-10T05:20:16.631Z", "attributes": {}}, "deliveryAttempt": 1});
        (msg, ack)
    }

    pub fn new_message_id(&self) -> i64 {
        let mut st = self.state();
        st.next_message_id += 1;
        st.next_message_id
    }

    /// Queues one batch with `rtdn` as a new message; answers (message id, ack id).
    pub fn publish(&self, rtdn: &Value) -> (i64, String) {
        let id = self.new_message_id();
        let (msg, ack) = self.message(id, rtdn.to_string().as_bytes());
        self.state().batches.push_back(vec![msg]);
        (id, ack)
    }

    /// Delivers message `id` again with a fresh ack id; answers it.
    pub fn redeliver(&self, id: i64, rtdn: &Value) -> String {
        let (msg, ack) = self.message(id, rtdn.to_string().as_bytes());
        self.state().batches.push_back(vec![msg]);
        ack
    }

    pub fn push_batch(&self, batch: Vec<Value>) {
        self.state().batches.push_back(batch);
    }

    pub fn set_sub(&self, token: &str, v: Value) {
        self.state().subs.insert(token.to_string(), v);
    }

    pub fn acked(&self, ack: &str) -> bool {
        self.state().acked.iter().any(|a| a == ack)
    }

    pub fn purchase_acks_for(&self, token: &str) -> usize {
        self.state().purchase_acks.iter().filter(|(_, t)| t == token).count()
    }

    pub fn sub_requests_for(&self, token: &str) -> usize {
        let needle = format!("/purchases/subscriptionsv2/tokens/{token}");
        self.state().requests.iter().filter(|r| r.ends_with(&needle)).count()
    }

    pub async fn wait_acked(&self, ack: &str) {
        wait_until(|| self.acked(ack), &format!("ack of {ack}")).await;
    }
}

/// Polls `cond` until it holds (panics after a generous limit; never a timing assertion).
pub async fn wait_until(mut cond: impl FnMut() -> bool, what: &str) {
    for _ in 0..3000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("gave up waiting for {what}");
}

fn check_assertion(jwt: &str, verifier: &VerifyingKey<Sha256>, token_url: &str) -> Result<(), String> {
    let parts: Vec<&str> = jwt.split('.').collect();
    let [h, c, s] = parts.as_slice() else { return Err("not a JWT".into()) };
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" {
        return Err("alg".into());
    }
    let sig = Signature::try_from(URL_SAFE_NO_PAD.decode(s).map_err(|e| e.to_string())?.as_slice())
        .map_err(|e| e.to_string())?;
    verifier.verify(format!("{h}.{c}").as_bytes(), &sig).map_err(|e| e.to_string())?;
    let claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let scope = claims["scope"].as_str().unwrap_or("");
    let ok = claims["iss"] == CLIENT_EMAIL
        && claims["aud"] == token_url
        && scope.split(' ').any(|s| s == "https://www.googleapis.com/auth/androidpublisher")
        && scope.split(' ').any(|s| s == "https://www.googleapis.com/auth/pubsub")
        && claims["exp"].as_i64().zip(claims["iat"].as_i64()).is_some_and(|(e, i)| e - i == 3600);
    if ok { Ok(()) } else { Err(format!("bad claims {claims}")) }
}

async fn handle(
    state: Arc<Mutex<FakeState>>,
    verifier: Arc<VerifyingKey<Sha256>>,
    addr: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    state.lock().unwrap().requests.push(format!("{method} {path}"));

    if path == "/token" {
        let form = String::from_utf8_lossy(&body).into_owned();
        let fields: HashMap<String, String> = form
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (percent_decode(k), percent_decode(v)))
            .collect();
        let mut st = state.lock().unwrap();
        st.token_calls += 1;
        if fields.get("grant_type").map(String::as_str) != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
            return Ok(reply(400, json!({"error": "unsupported_grant_type"})));
        }
        let url = format!("http://{addr}/token");
        if let Err(e) = check_assertion(fields.get("assertion").map_or("", String::as_str), &verifier, &url) {
            return Ok(reply(400, json!({"error": "invalid_grant", "error_description": e})));
        }
        st.tokens_issued += 1;
        let token = format!("test-{}", st.tokens_issued);
        return Ok(reply(200, json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})));
    }

    {
        let mut st = state.lock().unwrap();
        let valid = auth
            .strip_prefix("Bearer test-")
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n >= 1 && n <= st.tokens_issued);
        if !valid {
            st.unauthorized += 1;
            return Ok(google_error(401, "UNAUTHENTICATED", "missing or bad bearer token"));
        }
    }

    let sub_prefix = format!("/v1/projects/{PROJECT}/subscriptions/{SUBSCRIPTION}:");
    let app_prefix = format!("/androidpublisher/v3/applications/{PKG}/");
    if let Some(action) = path.strip_prefix(&sub_prefix) {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        match action {
            "pull" => {
                if v != json!({"maxMessages": 64}) {
                    return Ok(google_error(400, "INVALID_ARGUMENT", "bad pull body"));
                }
                let batch = state.lock().unwrap().batches.pop_front();
                return Ok(match batch {
                    Some(b) => reply(200, json!({"receivedMessages": b})),
                    None => {
                        // An idle pull is held for a moment, as the real service holds it.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        reply(200, json!({}))
                    }
                });
            }
            "acknowledge" => {
                let mut st = state.lock().unwrap();
                for id in v["ackIds"].as_array().cloned().unwrap_or_default() {
                    st.acked.push(id.as_str().unwrap_or("").to_string());
                }
                if st.ack_invalid_argument {
                    return Ok(google_error(
                        400,
                        "INVALID_ARGUMENT",
                        "Some acknowledgement ids in the request were invalid.",
                    ));
                }
                return Ok(reply(200, json!({})));
            }
            _ => {}
        }
    } else if let Some(rest) = path.strip_prefix(&app_prefix) {
        if let Some(token) = rest.strip_prefix("purchases/subscriptionsv2/tokens/") {
            let token = percent_decode(token);
            let st = state.lock().unwrap();
            if let Some(status) = st.sub_failures.get(&token) {
                return Ok(google_error(*status, "INTERNAL", "scripted failure"));
            }
            return Ok(match st.subs.get(&token) {
                Some(v) => reply(200, v.clone()),
                None => google_error(404, "NOT_FOUND", "The purchase token was not found."),
            });
        }
        if let Some(rest) = rest.strip_prefix("purchases/subscriptions/")
            && let Some((sub_id, tail)) = rest.split_once("/tokens/")
            && let Some(token) = tail.strip_suffix(":acknowledge")
        {
            let token = percent_decode(token);
            let mut st = state.lock().unwrap();
            st.purchase_acks.push((sub_id.to_string(), token.clone()));
            if let Some(status) = st.purchase_ack_failure {
                return Ok(google_error(status, "INTERNAL", "scripted failure"));
            }
            if let Some(v) = st.subs.get_mut(&token) {
                v["acknowledgementState"] = json!("ACKNOWLEDGEMENT_STATE_ACKNOWLEDGED");
            }
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NO_CONTENT;
            return Ok(r);
        }
        if rest == format!("subscriptions/{PRODUCT}") {
            state.lock().unwrap().monetization_calls += 1;
            return Ok(reply(
                200,
                json!({"packageName": PKG, "productId": PRODUCT, "basePlans": [
                    {"basePlanId": "session-pro-1-month", "state": "ACTIVE",
                     "autoRenewingBasePlanType": {"billingPeriodDuration": "P30D", "gracePeriodDuration": "P2D"}},
                    {"basePlanId": "session-pro-3-months", "state": "ACTIVE",
                     "autoRenewingBasePlanType": {"billingPeriodDuration": "P3M", "gracePeriodDuration": "P2D"}},
                    {"basePlanId": "session-pro-12-months", "state": "ACTIVE",
                     "autoRenewingBasePlanType": {"billingPeriodDuration": "P1Y", "gracePeriodDuration": "P2D"}}
                ]}),
            ));
        }
    }
    Ok(google_error(404, "NOT_FOUND", "no such route"))
}

//! HTTP surface: one dispatcher that both direct requests and (later) onion-wrapped requests
//! go through, so routing, 404/405 rules and envelopes are identical either way.

pub mod add_pro_payment;
pub mod apple_notifications;
pub mod checks;
pub mod generate_pro_proof;
pub mod get_pro_details;
pub mod get_pro_revocations;
pub mod json;
pub mod onion;
pub mod ops;
pub mod set_payment_refund_requested;

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::{Method, StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use pro_engine::apple_receiver::AppleHandle;
use pro_engine::clock::SharedClock;
use pro_engine::db_reader::ReaderHandle;
use pro_engine::db_writer::WriterHandle;
use pro_engine::google_subscriber::GoogleHandle;
use pro_engine::health::Registry;
use pro_engine::proof_signer::SignerHandle;

use json::Envelope;

/// What every handler can reach: handles to the actors and a few immutable facts.
pub struct AppState {
    pub writer: WriterHandle,
    pub reader: ReaderHandle,
    pub signer: SignerHandle,
    pub registry: Arc<Registry>,
    pub clock: SharedClock,
    pub dev: bool,
    pub unsafe_logging: bool,
    pub backend_pubkey: [u8; 32],
    /// The X25519 key onion requests are addressed to (derived from the backend key).
    pub onion_pubkey: [u8; 32],
    /// Immutable for the life of the database, so it is read once at start.
    pub gen_index_salt: [u8; 16],
    pub max_body_bytes: usize,
    /// Set when Google Play is enabled: claims of Google payments are acknowledged through it.
    pub google: Option<GoogleHandle>,
    /// Present when Apple notifications are handled (`with_platform_apple`).
    pub apple: Option<AppleHandle>,
}

/// The routes this server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    AddProPayment,
    GenerateProProof,
    GetProRevocations,
    GetProDetails,
    SetPaymentRefundRequested,
    Onion,
    AppleNotifications,
    Metrics,
    Health,
}

impl Route {
    /// Exact path match (no trailing-slash leniency); the query string is not part of `path`.
    pub fn from_path(path: &str) -> Option<Self> {
        Some(match path {
            "/add_pro_payment" => Self::AddProPayment,
            "/generate_pro_proof" => Self::GenerateProProof,
            "/get_pro_revocations" => Self::GetProRevocations,
            "/get_pro_details" => Self::GetProDetails,
            "/set_payment_refund_requested" => Self::SetPaymentRefundRequested,
            "/oxen/v4/lsrpc" => Self::Onion,
            "/apple_notifications_v2" => Self::AppleNotifications,
            "/metrics" => Self::Metrics,
            "/health" => Self::Health,
            _ => return None,
        })
    }

    pub fn path(self) -> &'static str {
        match self {
            Self::AddProPayment => "/add_pro_payment",
            Self::GenerateProProof => "/generate_pro_proof",
            Self::GetProRevocations => "/get_pro_revocations",
            Self::GetProDetails => "/get_pro_details",
            Self::SetPaymentRefundRequested => "/set_payment_refund_requested",
            Self::Onion => "/oxen/v4/lsrpc",
            Self::AppleNotifications => "/apple_notifications_v2",
            Self::Metrics => "/metrics",
            Self::Health => "/health",
        }
    }

    /// Whether this server answers the route (platform routes exist only when enabled).
    fn enabled(self, state: &AppState) -> bool {
        match self {
            Self::AppleNotifications => state.apple.is_some(),
            _ => true,
        }
    }

    /// The method that does the work, and the `Allow` header for the others.
    fn method(self) -> (Method, &'static str) {
        match self {
            Self::Metrics | Self::Health => (Method::GET, "GET, HEAD, OPTIONS"),
            _ => (Method::POST, "OPTIONS, POST"),
        }
    }
}

/// A complete answer, independent of actix so an onion layer can re-encode it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: StatusCode,
    pub content_type: &'static str,
    pub allow: Option<&'static str>,
    pub body: Bytes,
    /// Metrics label: `status_<n>` for envelopes, `http_<code>` otherwise.
    pub outcome: String,
}

impl Reply {
    fn envelope(e: Envelope) -> Self {
        Self {
            code: StatusCode::OK,
            content_type: "application/json",
            allow: None,
            body: e.body,
            outcome: format!("status_{}", e.status),
        }
    }

    fn html(code: StatusCode, body: &'static str, allow: Option<&'static str>) -> Self {
        Self {
            code,
            content_type: "text/html; charset=utf-8",
            allow,
            body: Bytes::from_static(body.as_bytes()),
            outcome: format!("http_{}", code.as_u16()),
        }
    }

    pub fn bad_request() -> Self {
        Self::html(StatusCode::BAD_REQUEST, BAD_REQUEST_PAGE, None)
    }

    pub fn not_found() -> Self {
        Self::html(StatusCode::NOT_FOUND, NOT_FOUND_PAGE, None)
    }

    fn method_not_allowed(allow: &'static str) -> Self {
        Self::html(StatusCode::METHOD_NOT_ALLOWED, METHOD_NOT_ALLOWED_PAGE, Some(allow))
    }

    fn options(allow: &'static str) -> Self {
        Self::html(StatusCode::OK, "", Some(allow))
    }

    pub fn into_response(self) -> HttpResponse {
        let mut b = HttpResponse::build(self.code);
        b.insert_header((header::CONTENT_TYPE, self.content_type));
        if let Some(allow) = self.allow {
            b.insert_header((header::ALLOW, allow));
        }
        b.body(self.body)
    }
}

// The pages upstream's Flask/Werkzeug stack answers with, byte for byte.
pub const NOT_FOUND_PAGE: &str = "<!doctype html>\n<html lang=en>\n<title>404 Not Found</title>\n<h1>Not Found</h1>\n<p>The requested URL was not found on the server. If you entered the URL manually please check your spelling and try again.</p>\n";
pub const METHOD_NOT_ALLOWED_PAGE: &str = "<!doctype html>\n<html lang=en>\n<title>405 Method Not Allowed</title>\n<h1>Method Not Allowed</h1>\n<p>The method is not allowed for the requested URL.</p>\n";
pub const BAD_REQUEST_PAGE: &str = "<!doctype html>\n<html lang=en>\n<title>400 Bad Request</title>\n<h1>Bad Request</h1>\n<p>The browser (or proxy) sent a request that this server could not understand.</p>\n";

/// Decides what a (method, path) pair means before any body is read.
pub enum Target {
    Run(Route),
    Immediate(Reply),
}

pub fn resolve(state: &AppState, method: &Method, path: &str) -> (Option<Route>, Target) {
    let Some(route) = Route::from_path(path).filter(|r| r.enabled(state)) else {
        return (None, Target::Immediate(Reply::not_found()));
    };
    let (wanted, allow) = route.method();
    let target = if *method == wanted || (wanted == Method::GET && *method == Method::HEAD) {
        Target::Run(route)
    } else if *method == Method::OPTIONS {
        Target::Immediate(Reply::options(allow))
    } else {
        Target::Immediate(Reply::method_not_allowed(allow))
    };
    (Some(route), target)
}

/// Runs a route on a complete body.
pub async fn run(state: &AppState, route: Route, body: &[u8]) -> Reply {
    let envelope = match route {
        Route::AddProPayment => add_pro_payment::handle(state, body).await,
        Route::GenerateProProof => generate_pro_proof::handle(state, body).await,
        Route::GetProRevocations => get_pro_revocations::handle(state, body).await,
        Route::GetProDetails => get_pro_details::handle(state, body).await,
        Route::SetPaymentRefundRequested => set_payment_refund_requested::handle(state, body).await,
        Route::Onion => return onion::handle(state, body, 0).await,
        Route::AppleNotifications => return apple_notifications::handle(state, body).await,
        Route::Metrics => return ops::metrics(state),
        Route::Health => return ops::health(state),
    };
    Reply::envelope(envelope)
}

/// Records a finished request in the route's metrics.
pub fn observe(state: &AppState, route: Option<Route>, reply: &Reply, started: Instant) {
    let name = route.map_or("other", Route::path);
    state.registry.route(name).record(&reply.outcome, started.elapsed());
}

/// Onion requests may be as large as libsession allows; JSON routes take the configured limit.
pub fn body_limit(state: &AppState, route: Route) -> usize {
    match route {
        Route::Onion => pro_engine::onion::MAX_REQUEST_BYTES,
        _ => state.max_body_bytes,
    }
}

/// The answer to a body over its route's limit.
pub fn too_large(state: &AppState, route: Route) -> Reply {
    match route {
        Route::Onion => onion::outer_rejected(state),
        Route::AppleNotifications => apple_notifications::retry_later(),
        _ => Reply::envelope(Envelope::err1(
            json::STATUS_PARSE_ERROR,
            format!(
                "JSON failed to be parsed: request body is larger than the limit of {} bytes",
                state.max_body_bytes
            ),
        )),
    }
}

enum BodyError {
    TooLarge,
    Broken(String),
}

/// Reads at most `limit` bytes of body; a longer body is refused without buffering it.
async fn read_body(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<Bytes, BodyError> {
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut buf = BytesMut::with_capacity(declared.map_or(1024, |n| n as usize).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| BodyError::Broken(e.to_string()))?;
        if buf.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// The single actix entry point for every path and method.
pub async fn entry(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    let started = Instant::now();
    let (route, target) = resolve(&state, req.method(), req.path());
    let reply = match target {
        Target::Immediate(reply) => reply,
        Target::Run(route) => match read_body(&req, payload, body_limit(&state, route)).await {
            Ok(body) => run(&state, route, &body).await,
            Err(BodyError::TooLarge) => too_large(&state, route),
            Err(BodyError::Broken(_)) if route == Route::AppleNotifications => apple_notifications::retry_later(),
            Err(BodyError::Broken(e)) => Reply::envelope(Envelope::err1(
                json::STATUS_PARSE_ERROR,
                format!("JSON failed to be parsed: request body could not be read: {e}"),
            )),
        },
    };
    observe(&state, route, &reply, started);
    reply.into_response()
}

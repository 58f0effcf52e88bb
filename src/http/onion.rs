//! `POST /oxen/v4/lsrpc`: the last hop of a Session onion request. The body is decrypted with
//! the key agreed between the client's ephemeral X25519 key and the backend's onion key, the
//! inner request is dispatched in-process exactly like a direct call, and the inner response
//! goes back encrypted with the same key and cipher under a fresh nonce.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::{Method, StatusCode};
use bytes::Bytes;
use pro_engine::onion::{
    self, InnerRequest, encode_inner_response, invalid_request_response, parse_inner, parse_outer,
};
use pro_engine::proof_signer::OnionKey;

use super::{AppState, Reply, Route, Target, body_limit, resolve, run, too_large};

/// Onion requests nested inside onion requests are dispatched up to this depth.
const MAX_NESTING: u8 = 4;

const REQUESTS: &str = "pro_onion_requests_total";
const REQUESTS_HELP: &str = "onion requests by outcome (ok, outer_rejected, inner_rejected)";
const INNER: &str = "pro_onion_inner_requests_total";
const INNER_HELP: &str = "requests carried inside onion requests, by inner route and outcome";

fn count(state: &AppState, outcome: &str) {
    state.registry.count(REQUESTS, REQUESTS_HELP, format!("outcome=\"{outcome}\""));
}

/// A plain HTTP 400: the outer layer could not be read, so nothing can be encrypted back.
pub fn outer_rejected(state: &AppState) -> Reply {
    count(state, "outer_rejected");
    Reply::bad_request()
}

pub async fn handle(state: &AppState, body: &[u8], depth: u8) -> Reply {
    let Ok(outer) = parse_outer(body) else { return outer_rejected(state) };
    let key = match state.signer.send(OnionKey { client_pubkey: outer.ephemeral_key, cipher: outer.cipher }).await {
        Ok(Some(k)) => k,
        Ok(None) => return outer_rejected(state),
        Err(e) => {
            tracing::error!("Onion request could not be opened: {e}");
            return Reply {
                code: StatusCode::SERVICE_UNAVAILABLE,
                content_type: "text/plain; charset=utf-8",
                allow: None,
                body: Bytes::from(e.to_string()),
                outcome: "http_503".into(),
            };
        }
    };
    let Some(plain) = onion::decrypt(outer.cipher, &key, outer.blob) else { return outer_rejected(state) };
    let inner = match parse_inner(&plain) {
        Some(req) => {
            count(state, "ok");
            dispatch(state, req, depth).await
        }
        None => {
            count(state, "inner_rejected");
            invalid_request_response()
        }
    };
    match onion::encrypt(outer.cipher, &key, &inner) {
        Some(sealed) => Reply {
            code: StatusCode::OK,
            content_type: "application/octet-stream",
            allow: None,
            body: Bytes::from(sealed),
            outcome: "http_200".into(),
        },
        None => outer_rejected(state),
    }
}

/// Runs the inner request through the same routing as a direct call and encodes the answer.
/// Boxed because a nested onion request makes this recursive.
fn dispatch(state: &AppState, req: InnerRequest, depth: u8) -> Pin<Box<dyn Future<Output = Vec<u8>> + '_>> {
    Box::pin(dispatch_inner(state, req, depth))
}

async fn dispatch_inner(state: &AppState, req: InnerRequest, depth: u8) -> Vec<u8> {
    let Ok(method) = Method::from_bytes(req.method.as_bytes()) else { return invalid_request_response() };
    let (route, target) = resolve(state, &method, &req.path);
    let reply = match target {
        Target::Immediate(reply) => reply,
        Target::Run(r) if req.body.len() > body_limit(state, r) => too_large(state, r),
        Target::Run(Route::Onion) if depth >= MAX_NESTING => Reply::bad_request(),
        Target::Run(Route::Onion) => handle(state, &req.body, depth + 1).await,
        Target::Run(r) => run(state, r, &req.body).await,
    };
    let route_label = route.map_or("other", Route::path);
    state.registry.count(INNER, INNER_HELP, format!("route=\"{route_label}\",outcome=\"{}\"", reply.outcome));
    let mut headers = vec![("content-type", reply.content_type)];
    if let Some(allow) = reply.allow {
        headers.push(("allow", allow));
    }
    let body: &[u8] = if method == Method::HEAD { &[] } else { &reply.body };
    encode_inner_response(reply.code.as_u16(), &headers, body)
}

//! Operator routes: `/metrics` (Prometheus text) and `/health` (JSON).

use actix_web::http::StatusCode;
use bytes::Bytes;

use super::{AppState, Reply};

pub fn metrics(state: &AppState) -> Reply {
    Reply {
        code: StatusCode::OK,
        content_type: "text/plain; version=0.0.4; charset=utf-8",
        allow: None,
        body: Bytes::from(state.registry.render_prometheus()),
        outcome: "http_200".into(),
    }
}

/// 200 when every actor is up, 503 otherwise; the body lists each actor's counters.
pub fn health(state: &AppState) -> Reply {
    let body = state.registry.health_json();
    let code = if state.registry.all_up() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Reply {
        code,
        content_type: "application/json",
        allow: None,
        body: Bytes::from(format!("{body}\n")),
        outcome: format!("http_{}", code.as_u16()),
    }
}

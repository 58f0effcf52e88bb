//! Routing rules (404, 405, OPTIONS, HEAD, exact paths), the body limit, and the operator
//! routes.

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::harness::{Backend, Opts, TestServer, on_both_backends};

on_both_backends!(unknown_paths_and_wrong_methods, body_limit_is_enforced_with_an_envelope, metrics_and_health);

const NOW: i64 = 1767268812345;

async fn unknown_paths_and_wrong_methods(backend: Backend) {
    let s = TestServer::start(Opts::prod(NOW).on(backend)).await;
    for path in ["/nope", "/get_pro_revocations/", "/oxen/v3/lsrpc", "/loki/v3/lsrpc", "/"] {
        let r = s.post(path, "{}").await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.body.len(), 207);
        assert!(r.text().contains("<title>404 Not Found</title>"));
    }
    let r = s.request(Method::GET, "/add_pro_payment", "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.headers["allow"], "OPTIONS, POST");
    assert_eq!(r.body.len(), 153);
    for m in [Method::PUT, Method::DELETE, Method::PATCH] {
        assert_eq!(s.request(m, "/generate_pro_proof", "{}").await.status, StatusCode::METHOD_NOT_ALLOWED);
    }
    let r = s.request(Method::HEAD, "/get_pro_details", "").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(r.body.is_empty());
    let r = s.request(Method::OPTIONS, "/get_pro_revocations", "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    assert_eq!(r.headers["allow"], "OPTIONS, POST");
    // A query string is ignored; the content type is not looked at.
    let r = s.post("/get_pro_revocations?x=1", r#"{"version":0,"ticket":0}"#).await;
    assert_eq!(r.json()["status"], 0);
    s.stop().await;
}

async fn body_limit_is_enforced_with_an_envelope(backend: Backend) {
    let s = TestServer::start(Opts {
        env: vec![("SESH_PRO_BACKEND_MAX_REQUEST_BODY_BYTES", "1024".into())],
        ..Opts::prod(NOW).on(backend)
    })
    .await;
    let padding = "x".repeat(2000);
    let r = s.post("/get_pro_revocations", format!(r#"{{"version":0,"ticket":0,"pad":"{padding}"}}"#)).await;
    assert_eq!(r.status, StatusCode::OK);
    let v = r.json();
    assert_eq!(v["status"], 2);
    assert!(v["errors"][0].as_str().unwrap().contains("larger than the limit of 1024 bytes"), "{v}");
    // Just under the limit is fine.
    let pad = "x".repeat(900);
    let r = s.post("/get_pro_revocations", format!(r#"{{"version":0,"ticket":0,"pad":"{pad}"}}"#)).await;
    assert_eq!(r.json()["status"], 0);
    s.stop().await;
}

async fn metrics_and_health(backend: Backend) {
    let s = TestServer::start(Opts::prod(NOW).on(backend)).await;
    s.post("/get_pro_revocations", r#"{"version":0,"ticket":0}"#).await;
    s.post("/get_pro_revocations", r#"{"version":1,"ticket":0}"#).await;
    s.post("/nope", "").await;
    let r = s.request(Method::GET, "/metrics", "").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = r.text();
    for needle in [
        "pro_actor_up{actor=\"db_writer\"} 1",
        "pro_actor_up{actor=\"db_reader\"} 1",
        "pro_actor_up{actor=\"proof_signer\"} 1",
        "pro_actor_mailbox_depth{actor=\"db_writer\"} 0",
        "pro_actor_failed_total{actor=\"db_reader\"} 0",
        "pro_actor_last_error_timestamp_seconds{actor=\"db_writer\"} 0",
        "pro_http_requests_total{route=\"/get_pro_revocations\",outcome=\"status_0\"} 1",
        "pro_http_requests_total{route=\"/get_pro_revocations\",outcome=\"status_2\"} 1",
        "pro_http_requests_total{route=\"other\",outcome=\"http_404\"} 1",
        "pro_http_request_duration_seconds_count{route=\"/get_pro_revocations\"} 2",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let r = s.request(Method::GET, "/health", "").await;
    assert_eq!(r.status, StatusCode::OK);
    let h = r.json();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["actors"]["db_writer"]["up"], json!(true));
    assert!(h["actors"]["db_reader"]["processed"].as_u64().unwrap() >= 1);
    // PostgreSQL adds the database itself, watched by its own connection.
    assert_eq!(h["actors"].get("database").is_some(), backend == Backend::Postgres, "{h}");
    if backend == Backend::Postgres {
        assert_eq!(h["actors"]["database"]["up"], json!(true));
        assert!(text.contains("pro_actor_up{actor=\"database\"} 1"), "{text}");
    }
    assert_eq!(s.post("/health", "").await.status, StatusCode::METHOD_NOT_ALLOWED);
    s.stop().await;
}

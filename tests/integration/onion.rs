//! Every route through `/oxen/v4/lsrpc`, as shipping clients reach the server: both ciphers,
//! every ephemeral-key encoding, the documented vector, and hostile outer/inner layers.

use hyper::{Method, StatusCode};
use pro_engine::db_writer::AddUnredeemedPayment;
use pro_engine::domain::types::PaymentTx;
use serde_json::{Value, json};

use crate::client::{self, Key};
use crate::harness::{Backend, Opts, TestServer, on_both_backends};

on_both_backends!(
    documented_vector_request_is_answered,
    every_route_through_both_ciphers_and_all_key_encodings,
    inner_routing_matches_direct_routing,
    hostile_outer_layers_are_refused_and_the_server_stays_healthy,
);
use crate::onion_client::{Enc, KeyEncoding, OnionClient, bencode_request, decode_response};

const NOW: i64 = 1767268812345;

impl TestServer {
    /// Sends an onion request and returns (inner meta, inner body).
    async fn onion(
        &self,
        c: &OnionClient,
        method: &str,
        endpoint: &str,
        body: Option<&[u8]>,
        e: KeyEncoding,
    ) -> (String, Vec<u8>) {
        let r = self.post("/oxen/v4/lsrpc", c.wrap(method, endpoint, body, e)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        decode_response(&c.open(&r.body).expect("reply decrypts with the request's key"))
    }

    async fn onion_json(&self, c: &OnionClient, path: &str, body: &Value, e: KeyEncoding) -> Vec<u8> {
        let (meta, inner) = self.onion(c, "POST", path, Some(&serde_json::to_vec(body).unwrap()), e).await;
        assert_eq!(meta, r#"{"code": 200, "headers": {"content-type": "application/json"}}"#);
        inner
    }
}

async fn documented_vector_request_is_answered(backend: Backend) {
    let s = TestServer::start(Opts::dev(NOW).on(backend).prepared(None, vec![])).await;
    let v: Value = serde_json::from_str(include_str!("../data/hashes.json")).unwrap();
    let o = &v["onion_v4"];
    assert_eq!(hex::encode(s.state.onion_pubkey), o["server_x25519_pkey"].as_str().unwrap());
    let wire = hex::decode(o["wire_request"].as_str().unwrap()).unwrap();
    let r = s.post("/oxen/v4/lsrpc", wire).await;
    assert_eq!(r.status, StatusCode::OK);
    let client = OnionClient::new(s.state.onion_pubkey, Enc::XChaCha, Some([3; 32]));
    let plain = client.open(&r.body).unwrap();
    assert_eq!(
        plain,
        b"l62:{\"code\": 200, \"headers\": {\"content-type\": \"application/json\"}}77:{\"result\":{\"items\":[],\"retry_in_s\":86400,\"ticket\":0,\"version\":0},\"status\":0}\ne"
    );
    s.stop().await;
}

async fn every_route_through_both_ciphers_and_all_key_encodings(backend: Backend) {
    let s = TestServer::start(Opts::prod(NOW).on(backend)).await;
    let backend = s.state.backend_pubkey;
    let encodings = [KeyEncoding::Hex, KeyEncoding::Base64, KeyEncoding::Base64NoPad, KeyEncoding::Base32z];
    let mut n = 0;
    for enc in [Enc::XChaCha, Enc::Aes] {
        for e in encodings {
            n += 1;
            let c = OnionClient::new(s.state.onion_pubkey, enc, None);
            let (master, rotating) = (Key::random(), Key::random());
            let id = format!("onion-{n}");
            s.write(AddUnredeemedPayment(client::apple_payment(NOW, &id))).await.unwrap();

            // add_pro_payment: the claim succeeds through the onion; a repeat answers exactly
            // as the same request made directly.
            let claim = client::add_pro_payment(&master, &rotating, &PaymentTx::apple_tx(&id));
            let first: Value = serde_json::from_slice(&s.onion_json(&c, "/add_pro_payment", &claim, e).await).unwrap();
            assert_eq!(first["status"], 0, "{enc:?} {e:?}: {first}");
            assert!(client::verify_proof(&first["result"], &backend));
            let again = s.onion_json(&c, "/add_pro_payment", &claim, e).await;
            let direct = s.post("/add_pro_payment", serde_json::to_vec(&claim).unwrap()).await;
            assert_eq!(again, direct.body.to_vec());

            // The other four routes: the decrypted answer equals the direct one byte for byte.
            let requests = [
                ("/generate_pro_proof", client::generate_pro_proof(&master, &Key::random(), NOW)),
                ("/get_pro_details", client::get_pro_details(&master, NOW, 10)),
                ("/get_pro_revocations", client::revocations(0)),
                ("/set_payment_refund_requested", client::set_refund_requested(&master, NOW, NOW, &id)),
            ];
            for (path, req) in &requests {
                let wrapped = s.onion_json(&c, path, req, e).await;
                let direct = s.post(path, serde_json::to_vec(req).unwrap()).await;
                assert_eq!(wrapped, direct.body.to_vec(), "{path} {enc:?} {e:?}");
                assert_eq!(serde_json::from_slice::<Value>(&wrapped).unwrap()["status"], 0, "{path}");
            }
        }
    }
    let text = s.state.registry.render_prometheus();
    assert!(text.contains("pro_onion_requests_total{outcome=\"ok\"} 48"), "{text}");
    assert!(
        text.contains("pro_onion_inner_requests_total{route=\"/get_pro_details\",outcome=\"status_0\"} 8"),
        "{text}"
    );
    s.stop().await;
}

async fn inner_routing_matches_direct_routing(backend: Backend) {
    let s = TestServer::start(Opts::prod(NOW).on(backend)).await;
    let c = OnionClient::new(s.state.onion_pubkey, Enc::XChaCha, None);
    let e = KeyEncoding::Hex;
    let (meta, body) = s.onion(&c, "POST", "/nope", Some(b"{}"), e).await;
    assert_eq!(meta, r#"{"code": 404, "headers": {"content-type": "text/html; charset=utf-8"}}"#);
    assert_eq!(body.len(), 207);
    let (meta, body) = s.onion(&c, "GET", "/get_pro_revocations", None, e).await;
    assert_eq!(
        meta,
        r#"{"code": 405, "headers": {"content-type": "text/html; charset=utf-8", "allow": "OPTIONS, POST"}}"#
    );
    assert_eq!(body.len(), 153);
    let (meta, body) = s.onion(&c, "OPTIONS", "/get_pro_revocations", None, e).await;
    assert!(meta.starts_with(r#"{"code": 200"#) && body.is_empty(), "{meta}");
    let (_, body) = s.onion(&c, "post", "/get_pro_revocations?x=1", Some(br#"{"version":0,"ticket":0}"#), e).await;
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["status"], 0);
    let (meta, _) = s.onion(&c, "POST", "/get_pro_revocations/", Some(b"{}"), e).await;
    assert!(meta.starts_with(r#"{"code": 404"#));
    // Inner JSON errors come back in the envelope, as for direct calls.
    let (meta, body) = s.onion(&c, "POST", "/get_pro_details", Some(b"{\"count\": 4294967296}"), e).await;
    assert!(meta.starts_with(r#"{"code": 200"#));
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["status"], 2);

    // Malformed inner requests.
    let invalid = b"l71:{\"code\": 400, \"headers\": {\"content-type\": \"text/plain; charset=utf-8\"}}24:Invalid v4 onion requeste";
    for plain in [&b"garbage"[..], b"l2:{}e", &bencode_request("POST", "get_pro_revocations", None), b"l5:abcde9:{}e"] {
        let r = s.post("/oxen/v4/lsrpc", c.wrap_plain(plain, e, true)).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(c.open(&r.body).unwrap(), invalid.to_vec(), "{:?}", String::from_utf8_lossy(plain));
    }

    // A nested onion request reaches the route too; an undecryptable nested one is a 400 page.
    let inner_client = OnionClient::new(s.state.onion_pubkey, Enc::Aes, None);
    let nested = inner_client.wrap("POST", "/get_pro_revocations", Some(br#"{"version":0,"ticket":0}"#), e);
    let (meta, body) = s.onion(&c, "POST", "/oxen/v4/lsrpc", Some(&nested), e).await;
    assert_eq!(meta, r#"{"code": 200, "headers": {"content-type": "application/octet-stream"}}"#);
    let (inner_meta, inner_body) = decode_response(&inner_client.open(&body).unwrap());
    assert!(inner_meta.starts_with(r#"{"code": 200"#));
    assert_eq!(serde_json::from_slice::<Value>(&inner_body).unwrap()["result"]["ticket"], 0);
    let (meta, body) = s.onion(&c, "POST", "/oxen/v4/lsrpc", Some(b"abc"), e).await;
    assert!(meta.starts_with(r#"{"code": 400, "headers": {"content-type": "text/html; charset=utf-8"}}"#), "{meta}");
    assert!(String::from_utf8_lossy(&body).contains("400 Bad Request"));
    s.stop().await;
}

async fn hostile_outer_layers_are_refused_and_the_server_stays_healthy(backend: Backend) {
    let s = TestServer::start(Opts::prod(NOW).on(backend)).await;
    let c = OnionClient::new(s.state.onion_pubkey, Enc::XChaCha, None);
    let good = c.wrap("POST", "/get_pro_revocations", Some(br#"{"version":0,"ticket":0}"#), KeyEncoding::Hex);
    let blob_len = u32::from_le_bytes(good[..4].try_into().unwrap()) as usize;
    let mut flipped = good.clone();
    flipped[4 + blob_len / 2] ^= 0x01;
    let mut wrong_key = good.clone();
    let meta_at = 4 + blob_len;
    let other = OnionClient::new(s.state.onion_pubkey, Enc::XChaCha, None);
    wrong_key.truncate(meta_at);
    wrong_key.extend_from_slice(
        format!("{{\"ephemeral_key\": \"{}\", \"enc_type\": \"xchacha20\"}}", other.encoded_key(KeyEncoding::Hex))
            .as_bytes(),
    );
    let mut wrong_cipher = good.clone();
    wrong_cipher.truncate(meta_at);
    wrong_cipher
        .extend_from_slice(format!("{{\"ephemeral_key\": \"{}\"}}", c.encoded_key(KeyEncoding::Hex)).as_bytes());
    let mut huge_prefix = good.clone();
    huge_prefix[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut bad_meta = good.clone();
    bad_meta.truncate(meta_at);
    bad_meta.extend_from_slice(b"{not json");
    let mut unknown_enc = good.clone();
    unknown_enc.truncate(meta_at);
    unknown_enc.extend_from_slice(
        format!("{{\"ephemeral_key\": \"{}\", \"enc_type\": \"rot13\"}}", c.encoded_key(KeyEncoding::Hex)).as_bytes(),
    );
    let mut zero_key = good.clone();
    zero_key.truncate(meta_at);
    zero_key.extend_from_slice(b"{\"ephemeral_key\": \"nope\", \"enc_type\": \"xchacha20\"}");
    let oversized = {
        let mut v = good.clone();
        v.resize(10 * 1024 * 1024 + 1, b' ');
        v
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("abc", b"abc".to_vec()),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("flipped", flipped),
        ("wrong key", wrong_key),
        ("wrong cipher", wrong_cipher),
        ("huge length prefix", huge_prefix),
        ("bad metadata", bad_meta),
        ("unknown enc_type", unknown_enc),
        ("unusable key", zero_key),
        ("oversized", oversized),
    ];
    for (name, body) in cases {
        let r = s.post("/oxen/v4/lsrpc", body).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{name}");
        assert!(r.text().contains("400 Bad Request"), "{name}");
    }
    assert!(s.state.registry.counter("pro_onion_requests_total", "outcome=\"outer_rejected\"") >= 11);
    // Still healthy, and the good request still works.
    assert_eq!(s.request(Method::GET, "/health", "").await.status, StatusCode::OK);
    let r = s.post("/oxen/v4/lsrpc", good).await;
    assert_eq!(r.status, StatusCode::OK);
    let (_, body) = decode_response(&c.open(&r.body).unwrap());
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap(),
        json!({"result": {"items": [], "retry_in_s": 86400, "ticket": 0, "version": 0}, "status": 0})
    );
    s.stop().await;
}

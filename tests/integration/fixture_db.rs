//! The database written by the upstream Python server opens in place and answers exactly as
//! its manifest says (tests/data/upstream-v9-dev.{db,json}, copied from the shared fixtures).

use pro_engine::domain::hashes::gen_index_hash;
use serde_json::Value;

use crate::client::{self, Key};
use crate::harness::{Opts, TestServer};

pub(crate) fn manifest() -> Value {
    serde_json::from_str(include_str!("../data/upstream-v9-dev.json")).unwrap()
}

fn seed(v: &Value) -> [u8; 32] {
    hex::decode(v.as_str().unwrap()).unwrap().try_into().unwrap()
}

#[actix_web::test]
async fn upstream_database_opens_in_place() {
    let m = manifest();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upstream.db");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/upstream-v9-dev.db"), &path).unwrap();
    let salt_before: Vec<u8> = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("SELECT gen_index_salt FROM runtime", [], |r| r.get(0))
        .unwrap();

    // Pin the clock near the moment the file was made; its payments expire in 2027.
    let now = m["created_unix_ts_ms"].as_i64().unwrap();
    let s = TestServer::start(Opts { db: Some(path.clone()), ..Opts::dev(now) }).await;
    assert_eq!(s.state.gen_index_salt.to_vec(), salt_before);
    assert_upstream_answers(&s, &m).await;
    s.stop().await;

    // The file is still upstream's schema version 9.
    let v: i64 = rusqlite::Connection::open(&path).unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(v, 9);
}

/// What a server on the fixture's data answers, as its manifest says (either backend).
pub(crate) async fn assert_upstream_answers(s: &TestServer, m: &Value) {
    let now = m["created_unix_ts_ms"].as_i64().unwrap();
    assert_eq!(hex::encode(s.state.backend_pubkey), "fc947730f49eb01427a66e050733294d9e520e545c7a27125a780634e0860a27");

    let mut dave_hash = String::new();
    for u in m["users"].as_array().unwrap() {
        let master = Key::from_seed(seed(&u["master_seed"]));
        assert_eq!(master.hex(), u["master_pkey"].as_str().unwrap());
        let r = s.call("/generate_pro_proof", &client::generate_pro_proof(&master, &Key::random(), now)).await;
        if u["revoked"].as_bool().unwrap_or(false) {
            assert_eq!(r["status"], 1, "{r}");
            assert!(r["errors"][0].as_str().unwrap().contains("revoked"));
            dave_hash = u["gen_index_hash"].as_str().unwrap().to_string();
        } else {
            assert_eq!(r["status"], 0, "{}: {r}", u["name"]);
            assert_eq!(r["result"]["gen_index_hash"], u["gen_index_hash"]);
            assert_eq!(r["result"]["expiry_unix_ts_ms"], u["expiry_unix_ts_ms"]);
            assert!(client::verify_proof(&r["result"], &s.state.backend_pubkey));
        }
        let d = s.call("/get_pro_details", &client::get_pro_details(&master, now, 10)).await;
        assert_eq!(d["status"], 0);
        assert_eq!(d["result"]["payments_total"], 1);
        let want_refund = u["refund_requested_unix_ts_ms"].as_i64().unwrap_or(0);
        assert_eq!(d["result"]["refund_requested_unix_ts_ms"], want_refund, "{}", u["name"]);
        assert_eq!(d["result"]["items"][0]["payment_provider"], u["payment_tx"]["provider"]);
        assert_eq!(d["result"]["status"], if u["revoked"].as_bool().unwrap_or(false) { 2 } else { 1 });
    }

    let r = s.call("/get_pro_revocations", &client::revocations(0)).await;
    assert_eq!(r["result"]["ticket"], 1);
    let items = r["result"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["gen_index_hash"], dave_hash.as_str());
    assert_eq!(dave_hash, hex::encode(gen_index_hash(3, &s.state.gen_index_salt)));
}

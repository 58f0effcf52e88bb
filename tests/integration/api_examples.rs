//! The byte-exact request/response examples of the API spec (§5.1.7, §5.2.4, §5.3.3, §5.4.4).

use pro_engine::db_writer::AddUnredeemedPayment;
use pro_engine::domain::hashes::google_obfuscated_account_id;
use pro_engine::domain::types::{PaymentTx, ProPlan};
use pro_engine::store::rows::NewPayment;
use serde_json::json;

use crate::client::{self, Key};
use crate::harness::{Backend, Opts, TestServer, on_both_backends};

on_both_backends!(claim_proof_refund_and_details_match_upstream_bytes, revocation_list_matches_upstream_bytes);

const T: i64 = 1762407212143;

fn body(r: &crate::harness::Resp) -> &str {
    std::str::from_utf8(&r.body).unwrap()
}

async fn claim_proof_refund_and_details_match_upstream_bytes(backend: Backend) {
    let s = TestServer::start(Opts::prod(T).on(backend).prepared(Some([0x11; 16]), vec![])).await;
    let (master, rotating) = (Key::seeded(1), Key::seeded(2));

    // A Google payment witnessed a second before, expiring 30 days after T, no grace.
    let google = PaymentTx::google("token-abc", "GPA.1234-5678");
    s.write(AddUnredeemedPayment(NewPayment {
        tx: google.clone(),
        plan: ProPlan::OneMonth,
        expiry_unix_ts_ms: 1764999212143,
        unredeemed_unix_ts_ms: 1762407211143,
        platform_refund_expiry_unix_ts_ms: 1762580012143,
        google_obfuscated_account_id: Some(google_obfuscated_account_id(&master.pk())),
        apple_app_account_token: String::new(),
    }))
    .await
    .unwrap();

    let r = s
        .post("/add_pro_payment", serde_json::to_vec(&client::add_pro_payment(&master, &rotating, &google)).unwrap())
        .await;
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(
        body(&r),
        "{\"result\":{\"expiry_unix_ts_ms\":1765065600000,\"gen_index_hash\":\"6e9e59b1aed7bd139c5c4435e09a0d3d0fa3f1c6c4d71cfeb4a6e742f0c577a4\",\"rotating_pkey\":\"8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394\",\"sig\":\"2a50585fd87d804fd04fb944c001bb24c6d43cc26255eccbc0b8b23927177a9539c54d3246800f2db9286507c958082e69ade8243459b1fdee43e59e6c1ad507\",\"version\":0},\"status\":0}\n"
    );

    let r = s
        .post("/generate_pro_proof", serde_json::to_vec(&client::generate_pro_proof(&master, &rotating, T)).unwrap())
        .await;
    assert_eq!(
        body(&r),
        "{\"result\":{\"expiry_unix_ts_ms\":1764999212143,\"gen_index_hash\":\"6e9e59b1aed7bd139c5c4435e09a0d3d0fa3f1c6c4d71cfeb4a6e742f0c577a4\",\"rotating_pkey\":\"8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394\",\"sig\":\"4b454025bbea36442c3a391fe2a8a217818ad98dbae798d63d15a2769d7806c8d344f3614139d5f8694c1f0bc2041754a2e6b0caacc2ec5c01c1616c0222eb00\",\"version\":0},\"status\":0}\n"
    );

    // Repeating the claim: already redeemed, with the masked identifiers.
    let r = s
        .post("/add_pro_payment", serde_json::to_vec(&client::add_pro_payment(&master, &rotating, &google)).unwrap())
        .await;
    assert_eq!(
        body(&r),
        "{\"errors\":[\"Payment was not redeemed, already redeemed TX: GooglePlayStore, google=(to\\u2026bc/GPA\\u2026678), rangeproof=\"],\"status\":100}\n"
    );

    // An Apple twelve-month payment, claimed, then a refund request recorded.
    let apple = PaymentTx::apple("2000000100000000", "2000000123456789", "500000111");
    s.write(AddUnredeemedPayment(NewPayment {
        tx: apple,
        plan: ProPlan::TwelveMonth,
        expiry_unix_ts_ms: 1793943212143,
        unredeemed_unix_ts_ms: 1762407211643,
        platform_refund_expiry_unix_ts_ms: 1793943212143,
        google_obfuscated_account_id: None,
        apple_app_account_token: String::new(),
    }))
    .await
    .unwrap();
    let claim = PaymentTx::apple_tx("2000000123456789");
    let r = s.call("/add_pro_payment", &client::add_pro_payment(&master, &rotating, &claim)).await;
    assert_eq!(r["status"], 0);
    let r = s
        .post(
            "/set_payment_refund_requested",
            serde_json::to_vec(&client::set_refund_requested(&master, T, T + 1000, "2000000123456789")).unwrap(),
        )
        .await;
    assert_eq!(body(&r), "{\"result\":{\"updated\":true,\"version\":0},\"status\":0}\n");

    let r = s.post("/get_pro_details", serde_json::to_vec(&client::get_pro_details(&master, T, 10)).unwrap()).await;
    assert_eq!(
        body(&r),
        "{\"result\":{\"auto_renewing\":true,\"error_report\":0,\"expiry_unix_ts_ms\":1793943212143,\"grace_period_duration_ms\":0,\"items\":[{\"apple_original_tx_id\":\"2000000100000000\",\"apple_tx_id\":\"2000000123456789\",\"apple_web_line_order_id\":\"500000111\",\"auto_renewing\":true,\"expiry_unix_ts_ms\":1793943212143,\"grace_period_duration_ms\":0,\"payment_provider\":2,\"plan\":3,\"platform_refund_expiry_unix_ts_ms\":1793943212143,\"redeemed_unix_ts_ms\":1762473600000,\"refund_requested_unix_ts_ms\":1762407213143,\"revoked_unix_ts_ms\":0,\"status\":2,\"unredeemed_unix_ts_ms\":1762407211643},{\"auto_renewing\":true,\"expiry_unix_ts_ms\":1764999212143,\"google_order_id\":\"GPA.1234-5678\",\"google_payment_token\":\"token-abc\",\"grace_period_duration_ms\":0,\"payment_provider\":1,\"plan\":1,\"platform_refund_expiry_unix_ts_ms\":1762580012143,\"redeemed_unix_ts_ms\":1762473600000,\"refund_requested_unix_ts_ms\":0,\"revoked_unix_ts_ms\":0,\"status\":2,\"unredeemed_unix_ts_ms\":1762407211143}],\"payments_total\":2,\"refund_requested_unix_ts_ms\":1762407213143,\"status\":1,\"version\":0},\"status\":0}\n"
    );

    let r =
        s.post("/get_pro_details", serde_json::to_vec(&client::get_pro_details(&Key::seeded(9), T, 10)).unwrap()).await;
    assert_eq!(
        body(&r),
        "{\"result\":{\"auto_renewing\":false,\"error_report\":0,\"expiry_unix_ts_ms\":0,\"grace_period_duration_ms\":0,\"items\":[],\"payments_total\":0,\"refund_requested_unix_ts_ms\":0,\"status\":0,\"version\":0},\"status\":0}\n"
    );
    s.stop().await;
}

async fn revocation_list_matches_upstream_bytes(backend: Backend) {
    let setup = vec![
        "UPDATE runtime SET gen_index = 3",
        "INSERT INTO revocations (gen_index, creation_unix_ts_ms, expiry_unix_ts_ms) VALUES (2, 1762407218143, 1762407218143)",
        "INSERT INTO revocations (gen_index, creation_unix_ts_ms, expiry_unix_ts_ms) VALUES (1, 1762407217143, 1793943212143)",
    ];
    let s = TestServer::start(Opts::prod(T).on(backend).prepared(Some([0x11; 16]), setup)).await;
    let r = s.post("/get_pro_revocations", "{\"version\":0,\"ticket\":0}").await;
    assert_eq!(
        body(&r),
        "{\"result\":{\"items\":[{\"effective_unix_ts_ms\":1762493617143,\"expiry_unix_ts_ms\":1794009600000,\"gen_index_hash\":\"404d9f58db1aa40dc4fa1a11e15a9b6e6e5ca647e5f17ef0eee0372429bab2b9\"},{\"effective_unix_ts_ms\":1762473600000,\"expiry_unix_ts_ms\":1762473600000,\"gen_index_hash\":\"cff04073946c1bd8db5fa10dcd64abda824e63ddc04a88fe0dd490794b69d184\"}],\"retry_in_s\":86400,\"ticket\":2,\"version\":0},\"status\":0}\n"
    );
    for ticket in [json!(2), json!(99), json!(10u128.pow(30).to_string().parse::<serde_json::Number>().unwrap())] {
        let r = s.call("/get_pro_revocations", &json!({"version": 0, "ticket": ticket})).await;
        assert_eq!(r["result"]["items"], json!([]));
        assert_eq!(r["result"]["ticket"], 2);
    }
    // A negative ticket is always behind.
    let r = s.call("/get_pro_revocations", &json!({"version": 0, "ticket": -5})).await;
    assert_eq!(r["result"]["items"].as_array().unwrap().len(), 2);
    s.stop().await;
}

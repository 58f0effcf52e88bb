//! Concurrent claims: one payment is claimed once; many payments get distinct generations.

use std::collections::HashSet;

use futures_util::future::join_all;
use pro_engine::db_writer::AddUnredeemedPayment;
use pro_engine::domain::types::PaymentTx;

use crate::client::{self, Key};
use crate::harness::{Backend, Opts, TestServer, on_both_backends};

on_both_backends!(racing_claims_of_one_payment_have_one_winner, fifty_parallel_claims_get_distinct_generations);

const NOW: i64 = 1767268812345;

async fn racing_claims_of_one_payment_have_one_winner(backend: Backend) {
    let s = TestServer::start(Opts::prod(NOW).on(backend)).await;
    for round in 0..10 {
        let id = format!("race-{round}");
        s.write(AddUnredeemedPayment(client::apple_payment(NOW, &id))).await.unwrap();
        let (a, b) = (Key::random(), Key::random());
        let reqs = [
            client::add_pro_payment(&a, &Key::random(), &PaymentTx::apple_tx(&id)),
            client::add_pro_payment(&b, &Key::random(), &PaymentTx::apple_tx(&id)),
        ];
        let answers = join_all(reqs.iter().map(|r| s.call("/add_pro_payment", r))).await;
        let mut statuses: Vec<i64> = answers.iter().map(|v| v["status"].as_i64().unwrap()).collect();
        statuses.sort();
        assert_eq!(statuses, [0, 101], "round {round}: {answers:?}");
        // The same key racing itself: one success, one "already redeemed".
        let id2 = format!("race-self-{round}");
        s.write(AddUnredeemedPayment(client::apple_payment(NOW, &id2))).await.unwrap();
        let req = client::add_pro_payment(&a, &Key::random(), &PaymentTx::apple_tx(&id2));
        let answers = join_all([&req, &req].map(|r| s.call("/add_pro_payment", r))).await;
        let mut statuses: Vec<i64> = answers.iter().map(|v| v["status"].as_i64().unwrap()).collect();
        statuses.sort();
        assert_eq!(statuses, [0, 100], "round {round}: {answers:?}");
    }
    assert_eq!(s.scalar("SELECT COUNT(*) FROM payments WHERE master_pkey IS NOT NULL"), 20);
    s.stop().await;
}

async fn fifty_parallel_claims_get_distinct_generations(backend: Backend) {
    let s = TestServer::start(Opts::prod(NOW).on(backend)).await;
    let mut reqs = Vec::new();
    for i in 0..50 {
        let id = format!("parallel-{i}");
        s.write(AddUnredeemedPayment(client::apple_payment(NOW, &id))).await.unwrap();
        reqs.push(client::add_pro_payment(&Key::random(), &Key::random(), &PaymentTx::apple_tx(&id)));
    }
    let answers = join_all(reqs.iter().map(|r| s.call("/add_pro_payment", r))).await;
    let mut hashes = HashSet::new();
    for a in &answers {
        assert_eq!(a["status"], 0, "{a}");
        assert!(client::verify_proof(&a["result"], &s.state.backend_pubkey));
        hashes.insert(a["result"]["gen_index_hash"].as_str().unwrap().to_string());
    }
    assert_eq!(hashes.len(), 50);
    assert_eq!(s.scalar("SELECT gen_index FROM runtime"), 50);
    s.stop().await;
}

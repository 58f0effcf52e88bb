//! Micro-benchmarks of the CPU work behind each request: the BLAKE2b request digests, the
//! generation hash, issuing a proof (digest + Ed25519 sign), strict signature verification and
//! the entitlement lookup, and verifying an Apple notification. Run with `cargo bench -p pro-engine --bench core`.
//!
//! Sample sizes and measurement times are kept small so the whole run takes well under a
//! minute; the figures are for orientation, not for detecting small regressions.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signer, SigningKey};
use pro_engine::domain::hashes::{
    add_pro_payment_hash, gen_index_hash, generate_pro_proof_hash, get_pro_details_hash, proof_hash,
};
use pro_engine::domain::keys::verify_signature;
use pro_engine::domain::lookup::{LookupRow, compute_entitlement};
use pro_engine::domain::types::{PaymentStatus, PaymentTx};

const TS: u64 = 1_762_407_212_143;

fn keys() -> (SigningKey, SigningKey, SigningKey) {
    (SigningKey::from_bytes(&[0x01; 32]), SigningKey::from_bytes(&[0x02; 32]), SigningKey::from_bytes(&[0xCD; 32]))
}

fn digests(c: &mut Criterion) {
    let (master, rotating, _) = keys();
    let m = master.verifying_key().to_bytes();
    let r = rotating.verifying_key().to_bytes();
    let apple = PaymentTx::apple_tx("DEV.00112233445566778899aabbccddeeff");
    let google = PaymentTx::google("token-abc", "GPA.1234-5678-9012-34567");

    let mut g = c.benchmark_group("digest");
    g.bench_function("add_pro_payment/apple", |b| {
        b.iter(|| add_pro_payment_hash(0, black_box(&m), black_box(&r), black_box(&apple)))
    });
    g.bench_function("add_pro_payment/google", |b| {
        b.iter(|| add_pro_payment_hash(0, black_box(&m), black_box(&r), black_box(&google)))
    });
    g.bench_function("generate_pro_proof", |b| {
        b.iter(|| generate_pro_proof_hash(0, black_box(&m), black_box(&r), black_box(TS)))
    });
    g.bench_function("get_pro_details", |b| b.iter(|| get_pro_details_hash(0, black_box(&m), black_box(TS), 10)));
    g.bench_function("gen_index_hash", |b| b.iter(|| gen_index_hash(black_box(12_345), black_box(&[0x11; 16]))));
    g.finish();
}

fn signatures(c: &mut Criterion) {
    let (master, rotating, backend) = keys();
    let m = master.verifying_key().to_bytes();
    let r = rotating.verifying_key().to_bytes();
    let request = generate_pro_proof_hash(0, &m, &r, TS);
    let master_sig = master.sign(&request).to_bytes();
    let rotating_sig = rotating.sign(&request).to_bytes();
    let gih = gen_index_hash(7, &[0x11; 16]);

    let mut g = c.benchmark_group("ed25519");
    // What the server does per proof: digest, then sign with the backend key.
    g.bench_function("proof_digest_and_sign", |b| {
        b.iter(|| backend.sign(&proof_hash(0, black_box(&gih), black_box(&r), black_box(TS))))
    });
    // Key decompression plus `verify_strict`, as every authenticated route does per signature.
    g.bench_function("verify_strict", |b| b.iter(|| verify_signature(black_box(&m), black_box(&request), &master_sig)));
    // The whole cryptographic part of one generate_pro_proof: request digest, two strict
    // verifications, proof digest and one signature.
    g.bench_function("generate_pro_proof_crypto_path", |b| {
        b.iter(|| {
            let d = generate_pro_proof_hash(0, black_box(&m), black_box(&r), black_box(TS));
            assert!(verify_signature(&m, &d, &master_sig) && verify_signature(&r, &d, &rotating_sig));
            backend.sign(&proof_hash(0, &gih, &r, TS))
        })
    });
    g.finish();
}

fn lookup(c: &mut Criterion) {
    // Twenty payments of distinct lineages (so none is skipped as an older cycle), mixing
    // providers, statuses and renewal flags: the lookup's worst case.
    let rows: Vec<LookupRow> = (0..20i64)
        .map(|i| {
            let status = match i % 5 {
                0 => PaymentStatus::Revoked,
                1 => PaymentStatus::Expired,
                _ => PaymentStatus::Redeemed,
            };
            let mut row = LookupRow {
                status: status.as_i64(),
                expiry_unix_ts_ms: TS as i64 + i * 86_400_000,
                grace_period_duration_ms: 3_600_000,
                auto_renewing: i % 2 == 0,
                revoked_unix_ts_ms: if status == PaymentStatus::Revoked { TS as i64 + i } else { 0 },
                ..Default::default()
            };
            if i % 2 == 0 {
                row.provider = 1;
                row.google_order_id = format!("GPA.3300-0000-0000-{i:05}");
            } else {
                row.provider = 2;
                row.apple_original_tx_id = format!("20000001{i:08}");
            }
            row
        })
        .collect();
    c.bench_function("compute_entitlement/20_rows", |b| b.iter(|| compute_entitlement(black_box(&rows))));
}

/// A whole Apple notification: outer, transaction and renewal JWS, each with its chain
/// (Apple's sandbox vector #1 against Apple Root CA G3).
fn apple(c: &mut Criterion) {
    use pro_engine::apple::notification::verify_and_decode;
    use pro_engine::apple::verify::{Environment, Verifier};
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/apple/");
    let (Ok(jws), Ok(root)) =
        (std::fs::read_to_string(format!("{dir}01-did_renew.jws")), std::fs::read(format!("{dir}AppleRootCA-G3.cer")))
    else {
        return;
    };
    let Ok(v) = Verifier::new(&[("G3".into(), root)], Environment::Sandbox, "com.loki-project.loki-messenger", None)
    else {
        return;
    };
    let jws = jws.trim().to_string();
    c.bench_function("apple/verify_and_decode_notification", |b| {
        b.iter(|| verify_and_decode(&v, black_box(&jws), 1_759_302_518_835).is_ok())
    });
}

/// The server's share of one onion request: key agreement, opening the request and sealing an
/// answer of typical size.
fn onion(c: &mut Criterion) {
    use pro_engine::onion::{Cipher, decrypt, derive_key, encrypt, parse_inner, parse_outer};
    let server_secret = [0x42u8; 32];
    let server_public = x25519_dalek::x25519(server_secret, x25519_dalek::X25519_BASEPOINT_BYTES);
    let client_secret = [0x07u8; 32];
    let client_public = x25519_dalek::x25519(client_secret, x25519_dalek::X25519_BASEPOINT_BYTES);
    let shared = x25519_dalek::x25519(client_secret, server_public);
    let key = derive_key(Cipher::XChaCha20Poly1305, &shared, &client_public, &server_public);
    let inner = br#"l97:{"method":"POST","endpoint":"/get_pro_revocations","headers":{"Content-Type":"application/json"}}24:{"version":0,"ticket":0}e"#;
    let blob = encrypt(Cipher::XChaCha20Poly1305, &key, inner).unwrap();
    let mut wire = (blob.len() as u32).to_le_bytes().to_vec();
    wire.extend_from_slice(&blob);
    wire.extend_from_slice(
        format!(r#"{{"ephemeral_key":"{}","enc_type":"xchacha20"}}"#, hex::encode(client_public)).as_bytes(),
    );
    let reply = [b'x'; 150];
    let mut g = c.benchmark_group("onion");
    g.bench_function("x25519_agreement", |b| {
        b.iter(|| x25519_dalek::x25519(black_box(server_secret), black_box(client_public)))
    });
    g.bench_function("x25519_via_edwards", |b| {
        b.iter(|| pro_engine::domain::keys::x25519_agree(black_box(&server_secret), black_box(&client_public)))
    });
    g.bench_function("open_and_seal", |b| {
        b.iter(|| {
            let outer = parse_outer(black_box(&wire)).unwrap();
            let s = pro_engine::domain::keys::x25519_agree(&server_secret, &outer.ephemeral_key);
            let k = derive_key(outer.cipher, &s, &outer.ephemeral_key, &server_public);
            let plain = decrypt(outer.cipher, &k, outer.blob).unwrap();
            black_box(parse_inner(&plain));
            encrypt(outer.cipher, &k, &reply)
        })
    });
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = core;
    config = config();
    targets = digests, signatures, lookup, apple, onion
}
criterion_main!(core);

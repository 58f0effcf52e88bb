//! Property tests (the fuzzing CI can run): the onion outer parser and the bencoded inner
//! parser never panic, whatever the bytes, and what they accept round-trips.

use pro_engine::onion::{Cipher, decrypt, encode_inner_response, encrypt_with_nonce, parse_inner, parse_outer};
use proptest::prelude::*;

fn framed(meta: &[u8], body: Option<&[u8]>) -> Vec<u8> {
    let mut v = format!("l{}:", meta.len()).into_bytes();
    v.extend_from_slice(meta);
    if let Some(b) = body {
        v.extend_from_slice(format!("{}:", b.len()).as_bytes());
        v.extend_from_slice(b);
    }
    v.push(b'e');
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn outer_parser_never_panics(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(o) = parse_outer(&body) {
            prop_assert!(o.blob.len() + 4 <= body.len());
        }
    }

    #[test]
    fn outer_parser_with_any_length_prefix(prefix in any::<u32>(), rest in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut body = prefix.to_le_bytes().to_vec();
        body.extend_from_slice(&rest);
        let r = parse_outer(&body);
        if prefix as usize > rest.len() {
            prop_assert!(r.is_err());
        }
    }

    #[test]
    fn inner_parser_never_panics(plain in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let _ = parse_inner(&plain);
    }

    #[test]
    fn inner_parser_on_mutated_valid_requests(
        endpoint in "/[a-z_/?=0-9]{0,40}",
        body in proptest::collection::vec(any::<u8>(), 0..300),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let meta = format!(r#"{{"method":"POST","endpoint":"{endpoint}","headers":{{"Content-Type":"application/json"}}}}"#);
        let mut plain = framed(meta.as_bytes(), Some(&body));
        let parsed = parse_inner(&plain).expect("a well-formed request parses");
        prop_assert_eq!(&parsed.body, &body);
        prop_assert_eq!(parsed.path.as_str(), endpoint.split('?').next().unwrap());
        let i = flip.index(plain.len());
        plain[i] ^= 1 << bit;
        let _ = parse_inner(&plain);
    }

    #[test]
    fn responses_and_ciphers_round_trip(code in 100u16..600, body in proptest::collection::vec(any::<u8>(), 0..500), key in any::<[u8; 32]>(), nonce in any::<[u8; 24]>()) {
        let r = encode_inner_response(code, &[("content-type", "application/json")], &body);
        prop_assert!(r.starts_with(b"l") && r.ends_with(b"e"));
        for cipher in [Cipher::XChaCha20Poly1305, Cipher::Aes256Gcm] {
            let sealed = encrypt_with_nonce(cipher, &key, &nonce[..cipher.nonce_len()], &r).unwrap();
            prop_assert_eq!(decrypt(cipher, &key, &sealed).unwrap(), r.clone());
            let mut tampered = sealed.clone();
            let last = tampered.len() - 1;
            tampered[last] ^= 0x80;
            prop_assert!(decrypt(cipher, &key, &tampered).is_none());
        }
    }
}

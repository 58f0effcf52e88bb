//! Hex-encoded keys and signatures as requests carry them, Ed25519 verification, and the
//! masking used whenever a key or payment id appears in a message.

use ed25519_dalek::{Signature, VerifyingKey};

/// Decodes exactly `2 * N` hex characters (either case) into `N` bytes, with upstream's
/// messages: the length is checked first (in characters), then the characters.
pub fn decode_hex_exact<const N: usize>(label: &str, s: &str) -> Result<[u8; N], String> {
    let chars = s.chars().count();
    if chars != 2 * N {
        return Err(format!("{label} was not {} characters, was {chars} characters", 2 * N));
    }
    if let Some(pos) = s.chars().position(|c| !c.is_ascii_hexdigit()) {
        return Err(format!(
            "{label} was not valid hex: non-hexadecimal number found in fromhex() arg at position {pos}"
        ));
    }
    let mut out = [0u8; N];
    // All characters are ASCII hex digits here, so byte indexing is exact.
    hex::decode_to_slice(s, &mut out).map_err(|e| format!("{label} was not valid hex: {e}"))?;
    Ok(out)
}

/// Ed25519 verification with the strict rules libsodium applies (canonical S, no small-order
/// R or public key). A key that is not a valid point simply fails.
pub fn verify_signature(pubkey: &[u8; 32], message: &[u8], sig: &[u8; 64]) -> bool {
    let Ok(vk) = VerifyingKey::from_bytes(pubkey) else {
        return false;
    };
    vk.verify_strict(message, &Signature::from_bytes(sig)).is_ok()
}

/// The X25519 secret libsodium derives from an Ed25519 seed (`crypto_sign_ed25519_sk_to_curve25519`):
/// the first half of SHA-512(seed), clamped.
pub fn x25519_secret_from_ed25519_seed(seed: &[u8; 32]) -> [u8; 32] {
    let mut b = ed25519_dalek::SigningKey::from_bytes(seed).to_scalar_bytes();
    b[0] &= 248;
    b[31] &= 127;
    b[31] |= 64;
    b
}

/// The X25519 public key of an Ed25519 public key (birational map to Montgomery form).
pub fn x25519_public_from_ed25519(pubkey: &[u8; 32]) -> Option<[u8; 32]> {
    VerifyingKey::from_bytes(pubkey).ok().map(|vk| vk.to_montgomery().to_bytes())
}

/// X25519 agreement, computed through the Edwards form when the peer's key lies on the curve
/// (that path uses the vectorised scalar multiplication and is about a third faster than the
/// Montgomery ladder); the result is the same u-coordinate either way. Keys on the twist take
/// the ladder, as libsodium does.
pub fn x25519_agree(secret: &[u8; 32], peer: &[u8; 32]) -> [u8; 32] {
    use curve25519_dalek::montgomery::MontgomeryPoint;
    match MontgomeryPoint(*peer).to_edwards(0) {
        Some(ed) => ed.mul_clamped(*secret).to_montgomery().to_bytes(),
        None => x25519_dalek::x25519(*secret, *peer),
    }
}

/// Keeps the first and last 30% of a string (at least one character each) around an ellipsis;
/// strings shorter than three characters are shown as they are.
pub fn obfuscate(s: &str) -> String {
    let len = s.chars().count();
    if len < 3 {
        return s.to_string();
    }
    let n = ((len as f64 * 0.3).floor() as usize).max(1);
    let head: String = s.chars().take(n).collect();
    let tail: String = s.chars().skip(len - n).collect();
    format!("{head}\u{2026}{tail}")
}

/// Masks a value unless unsafe logging is on.
pub fn mask(s: &str, unsafe_logging: bool) -> String {
    if unsafe_logging { s.to_string() } else { obfuscate(s) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_messages() {
        assert_eq!(
            decode_hex_exact::<32>("Master public key", "abc").unwrap_err(),
            "Master public key was not 64 characters, was 3 characters"
        );
        let bad = format!("z{}", "0".repeat(63));
        assert_eq!(
            decode_hex_exact::<32>("Master public key", &bad).unwrap_err(),
            "Master public key was not valid hex: non-hexadecimal number found in fromhex() arg at position 0"
        );
        let bad = format!("{}é", "0".repeat(63));
        assert!(decode_hex_exact::<32>("K", &bad).unwrap_err().ends_with("position 63"));
        let upper = "AB".repeat(32);
        assert_eq!(decode_hex_exact::<32>("K", &upper).unwrap(), [0xab; 32]);
        assert!(
            decode_hex_exact::<64>("Master key signature", &"0".repeat(127))
                .unwrap_err()
                .contains("was not 128 characters, was 127")
        );
    }

    #[test]
    fn obfuscation_examples() {
        assert_eq!(obfuscate(""), "");
        assert_eq!(obfuscate("ab"), "ab");
        assert_eq!(obfuscate("abc"), "a\u{2026}c");
        assert_eq!(obfuscate("2000000111"), "200\u{2026}111");
        assert_eq!(obfuscate("56c2c60dbca9f14d"), "56c2\u{2026}f14d");
        assert_eq!(obfuscate("DEV.c6c51d16b06434aa"), "DEV.c6\u{2026}6434aa");
        assert_eq!(obfuscate("token-abc"), "to\u{2026}bc");
        assert_eq!(
            obfuscate("8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"),
            "8a88e3dd7409f195fd5\u{2026}21bf3748801b40f6f5c"
        );
        assert_eq!(mask("abcdef", true), "abcdef");
    }

    #[test]
    fn fast_agreement_equals_the_ladder() {
        let mut seed = [0u8; 64];
        for i in 0..200u32 {
            getrandom::fill(&mut seed).unwrap();
            let (a, b): ([u8; 32], [u8; 32]) = (seed[..32].try_into().unwrap(), seed[32..].try_into().unwrap());
            // A real public key, and (every other round) arbitrary bytes, which may be on the twist.
            let peer = if i % 2 == 0 { x25519_dalek::x25519(b, x25519_dalek::X25519_BASEPOINT_BYTES) } else { b };
            assert_eq!(x25519_agree(&a, &peer), x25519_dalek::x25519(a, peer), "round {i}");
        }
        // Low-order points give the all-zero secret either way.
        assert_eq!(x25519_agree(&[7; 32], &[0; 32]), [0; 32]);
    }

    #[test]
    fn verification_rejects_forgeries_and_bad_keys() {
        use ed25519_dalek::{Signer, SigningKey};
        let sk = SigningKey::from_bytes(&[1; 32]);
        let pk = sk.verifying_key().to_bytes();
        let sig = sk.sign(b"hello").to_bytes();
        assert!(verify_signature(&pk, b"hello", &sig));
        assert!(!verify_signature(&pk, b"hellO", &sig));
        let mut flipped = sig;
        flipped[5] ^= 1;
        assert!(!verify_signature(&pk, b"hello", &flipped));
        assert!(!verify_signature(&[0; 32], b"hello", &sig));
        assert!(!verify_signature(&[0xff; 32], b"hello", &sig));
    }
}

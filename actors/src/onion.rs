//! Onion requests (v4), the last hop as the server sees it. Pure functions: the outer layout,
//! key derivation, the two ciphers, and the bencoded inner request and response.
//!
//! Outer body: `N` (u32 little-endian) ‖ N bytes of ciphertext ‖ a JSON metadata object with
//! `ephemeral_key` (the client's X25519 key) and optional `enc_type`.

use aes_gcm::Aes256Gcm;
use base64::Engine as _;
use blake2::Blake2bMac;
use blake2::digest::Mac;
use blake2::digest::consts::U32;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit};
use hmac::Hmac;
use serde_json::{Map, Value};
use sha2::Sha256;

/// libsession's limit on an onion request.
pub const MAX_REQUEST_BYTES: usize = 10 * 1024 * 1024;

/// The AEAD a request was encrypted with; the reply uses the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    XChaCha20Poly1305,
    Aes256Gcm,
}

impl Cipher {
    pub fn nonce_len(self) -> usize {
        match self {
            Self::XChaCha20Poly1305 => 24,
            Self::Aes256Gcm => 12,
        }
    }
}

/// Why the outer layer was refused (answered with a plain HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OuterError {
    #[error("onion request is too short")]
    TooShort,
    #[error("onion request is larger than {MAX_REQUEST_BYTES} bytes")]
    TooLarge,
    #[error("onion request length prefix exceeds the body")]
    BadLength,
    #[error("onion request metadata is not a JSON object")]
    BadMetadata,
    #[error("unknown onion encryption type")]
    UnknownCipher,
    #[error("onion request metadata has no ephemeral_key")]
    MissingKey,
    #[error("onion request could not be decrypted")]
    Decrypt,
}

/// The parsed outer layer; the ciphertext borrows from the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outer<'a> {
    pub blob: &'a [u8],
    pub cipher: Cipher,
    pub ephemeral_key: [u8; 32],
}

/// Parses the outer layout. Nothing is allocated from the (untrusted) length prefix.
pub fn parse_outer(body: &[u8]) -> Result<Outer<'_>, OuterError> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(OuterError::TooLarge);
    }
    let (len, rest) = body.split_first_chunk::<4>().ok_or(OuterError::TooShort)?;
    let n = u32::from_le_bytes(*len) as usize;
    if n > rest.len() {
        return Err(OuterError::BadLength);
    }
    let (blob, meta) = rest.split_at(n);
    let meta: Map<String, Value> = match serde_json::from_slice(meta) {
        Ok(Value::Object(m)) => m,
        _ => return Err(OuterError::BadMetadata),
    };
    let cipher = match meta.get("enc_type") {
        None => Cipher::Aes256Gcm,
        Some(Value::String(s)) => match s.as_str() {
            "xchacha20" | "xchacha20-poly1305" => Cipher::XChaCha20Poly1305,
            "aes-gcm" | "gcm" => Cipher::Aes256Gcm,
            _ => return Err(OuterError::UnknownCipher),
        },
        Some(_) => return Err(OuterError::UnknownCipher),
    };
    let key = match meta.get("ephemeral_key") {
        Some(Value::String(s)) => decode_ephemeral_key(s),
        _ => return Err(OuterError::MissingKey),
    };
    Ok(Outer { blob, cipher, ephemeral_key: key })
}

const ZBASE32: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// The encodings libsession accepts for a 32-byte key: 64 hex chars, base64 (43 chars, or 44
/// ending in `=`), z-base-32 (52 chars), or 32 raw bytes. Anything else becomes the all-zero
/// key, with which decryption then fails.
pub fn decode_ephemeral_key(s: &str) -> [u8; 32] {
    let b = s.as_bytes();
    let decoded: Option<Vec<u8>> = match b.len() {
        64 => hex::decode(s).ok(),
        43 => base64::engine::general_purpose::STANDARD_NO_PAD.decode(s).ok(),
        44 if s.ends_with('=') => base64::engine::general_purpose::STANDARD.decode(s).ok(),
        52 => {
            let mut bits: u64 = 0;
            let mut nbits = 0;
            let mut out = Vec::with_capacity(33);
            let mut ok = true;
            for c in b {
                let Some(v) = ZBASE32.iter().position(|z| z == c) else {
                    ok = false;
                    break;
                };
                bits = (bits << 5) | v as u64;
                nbits += 5;
                if nbits >= 8 {
                    nbits -= 8;
                    out.push((bits >> nbits) as u8);
                }
            }
            ok.then_some(out)
        }
        32 => Some(b.to_vec()),
        _ => None,
    };
    decoded.and_then(|v| <[u8; 32]>::try_from(v.get(..32)?).ok()).unwrap_or([0; 32])
}

/// The symmetric key both sides derive from the X25519 shared secret `s`, the client's key
/// `a` and the server's key `b`.
pub fn derive_key(cipher: Cipher, s: &[u8; 32], a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    match cipher {
        Cipher::XChaCha20Poly1305 => {
            let mut h = Blake2bMac::<U32>::new_with_salt_and_personal(None, &[], &[])
                .expect("empty salt and personalisation are valid");
            h.update(s);
            h.update(a);
            h.update(b);
            h.finalize().into_bytes().into()
        }
        Cipher::Aes256Gcm => {
            let mut h = <Hmac<Sha256> as KeyInit>::new_from_slice(b"LOKI").expect("HMAC takes any key length");
            h.update(s);
            h.finalize().into_bytes().into()
        }
    }
}

/// Opens `nonce ‖ ciphertext ‖ tag`.
pub fn decrypt(cipher: Cipher, key: &[u8; 32], blob: &[u8]) -> Option<Vec<u8>> {
    let n = cipher.nonce_len();
    if blob.len() < n + 16 {
        return None;
    }
    let (nonce, ct) = blob.split_at(n);
    match cipher {
        Cipher::XChaCha20Poly1305 => XChaCha20Poly1305::new(key.into()).decrypt(nonce.try_into().ok()?, ct).ok(),
        Cipher::Aes256Gcm => Aes256Gcm::new(key.into()).decrypt(nonce.try_into().ok()?, ct).ok(),
    }
}

/// Seals `plaintext` as `nonce ‖ ciphertext ‖ tag` with the given nonce.
pub fn encrypt_with_nonce(cipher: Cipher, key: &[u8; 32], nonce: &[u8], plaintext: &[u8]) -> Option<Vec<u8>> {
    let sealed = match cipher {
        Cipher::XChaCha20Poly1305 => {
            XChaCha20Poly1305::new(key.into()).encrypt(nonce.try_into().ok()?, plaintext).ok()?
        }
        Cipher::Aes256Gcm => Aes256Gcm::new(key.into()).encrypt(nonce.try_into().ok()?, plaintext).ok()?,
    };
    let mut out = Vec::with_capacity(nonce.len() + sealed.len());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&sealed);
    Some(out)
}

/// Seals with a fresh random nonce.
pub fn encrypt(cipher: Cipher, key: &[u8; 32], plaintext: &[u8]) -> Option<Vec<u8>> {
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut nonce).ok()?;
    encrypt_with_nonce(cipher, key, &nonce[..cipher.nonce_len()], plaintext)
}

/// The request carried inside the onion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InnerRequest {
    /// Upper-cased.
    pub method: String,
    /// Path without the query string.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Reads one bencoded byte string `<len>:<bytes>` at `pos`.
fn bstring(data: &[u8], pos: usize) -> Option<(&[u8], usize)> {
    let colon = pos + data.get(pos..)?.iter().position(|&c| c == b':')?;
    let digits = &data[pos..colon];
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let len: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let start = colon + 1;
    let end = start.checked_add(len)?;
    Some((data.get(start..end)?, end))
}

/// Parses `l<len>:<meta JSON>[<len>:<body>]e` with upstream's rules; `None` means
/// "Invalid v4 onion request".
pub fn parse_inner(plain: &[u8]) -> Option<InnerRequest> {
    if plain.len() < 2 || plain[0] != b'l' || plain[plain.len() - 1] != b'e' {
        return None;
    }
    let end = plain.len() - 1;
    let (meta, mut pos) = bstring(plain, 1)?;
    if pos > end {
        return None;
    }
    let mut body = Vec::new();
    // More than one byte left before the final `e`: a body string follows (exactly one stray
    // byte is tolerated, as upstream's parser does).
    if end - pos > 1 {
        let (b, next) = bstring(plain, pos)?;
        if next > end {
            return None;
        }
        body = b.to_vec();
        pos = next;
        if pos != end {
            return None;
        }
    }
    let meta: Map<String, Value> = match serde_json::from_slice(meta) {
        Ok(Value::Object(m)) => m,
        _ => return None,
    };
    let method = meta.get("method")?.as_str()?.to_ascii_uppercase();
    let endpoint = meta.get("endpoint")?.as_str()?;
    if !endpoint.starts_with('/') {
        return None;
    }
    let path = endpoint.split_once('?').map_or(endpoint, |(p, _)| p).to_string();
    let mut headers = Vec::new();
    match meta.get("headers") {
        None => {}
        Some(Value::Object(h)) => {
            for (k, v) in h {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                headers.push((k.clone(), v));
            }
        }
        Some(_) => return None,
    }
    Some(InnerRequest { method, path, headers, body })
}

/// `l<len>:<meta><len>:<body>e` where meta is `{"code": C, "headers": {...}}` with Python's
/// default separators (`, ` and `: `), as clients compare it.
pub fn encode_inner_response(code: u16, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut meta = format!("{{\"code\": {code}, \"headers\": {{");
    for (i, (k, v)) in headers.iter().enumerate() {
        if i > 0 {
            meta.push_str(", ");
        }
        meta.push_str(&format!("{}: {}", Value::from(k.to_ascii_lowercase()), python_json_string(v)));
    }
    meta.push_str("}}");
    let mut out = Vec::with_capacity(meta.len() + body.len() + 16);
    out.push(b'l');
    out.extend_from_slice(format!("{}:", meta.len()).as_bytes());
    out.extend_from_slice(meta.as_bytes());
    out.extend_from_slice(format!("{}:", body.len()).as_bytes());
    out.extend_from_slice(body);
    out.push(b'e');
    out
}

fn python_json_string(s: &str) -> String {
    Value::from(s).to_string()
}

/// The reply to a malformed inner request.
pub fn invalid_request_response() -> Vec<u8> {
    encode_inner_response(400, &[("content-type", "text/plain; charset=utf-8")], b"Invalid v4 onion request")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_request_rules() {
        let ok = br#"l97:{"method":"POST","endpoint":"/get_pro_revocations","headers":{"Content-Type":"application/json"}}24:{"version":0,"ticket":0}e"#;
        let r = parse_inner(ok).unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/get_pro_revocations"));
        assert_eq!(r.body, br#"{"version":0,"ticket":0}"#);
        assert_eq!(r.headers, [("Content-Type".to_string(), "application/json".to_string())]);
        // No body, a query string, lower-case method.
        let meta = br#"{"method":"post","endpoint":"/x?y=1"}"#;
        let mut no_body = format!("l{}:", meta.len()).into_bytes();
        no_body.extend_from_slice(meta);
        no_body.push(b'e');
        let r = parse_inner(&no_body).unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str(), r.body.len()), ("POST", "/x", 0));
        // One stray byte before the end is ignored.
        no_body.insert(no_body.len() - 1, b'X');
        assert!(parse_inner(&no_body).is_some());
        let frame = |meta: &str, rest: &[u8]| {
            let mut v = format!("l{}:{meta}", meta.len()).into_bytes();
            v.extend_from_slice(rest);
            v
        };
        let post_x = r#"{"method":"POST","endpoint":"/x"}"#;
        assert!(parse_inner(&frame(post_x, b"2:{}e")).is_some());
        for bad in [
            b"garbage".to_vec(),
            frame("{}", b"e"),
            frame(r#"{"method":"POST","endpoint":"x"}"#, b"e"),
            frame(post_x, b"2:{}XXe"),
            frame(post_x, b"99:{}e"),
            frame(post_x, b""),
            frame(r#"{"method":"POST","endpoint":"/x","headers":1}"#, b"e"),
            frame(r#"{"method":"POST","endpoint":["/"]}"#, b"e"),
            frame(r#"{"method":7,"endpoint":"/x"}"#, b"e"),
            frame("[1]", b"e"),
            b"l99999999999999999999:e".to_vec(),
            b"le".to_vec(),
            Vec::new(),
        ] {
            let bad = bad.as_slice();
            assert!(parse_inner(bad).is_none(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn inner_response_layout() {
        assert_eq!(
            invalid_request_response(),
            b"l71:{\"code\": 400, \"headers\": {\"content-type\": \"text/plain; charset=utf-8\"}}24:Invalid v4 onion requeste"
        );
        let r = encode_inner_response(
            405,
            &[("Content-Type", "text/html; charset=utf-8"), ("Allow", "OPTIONS, POST")],
            b"x",
        );
        assert!(r.starts_with(b"l96:{\"code\": 405, \"headers\": {\"content-type\": \"text/html; charset=utf-8\", \"allow\": \"OPTIONS, POST\"}}1:x"));
    }

    #[test]
    fn ephemeral_key_encodings() {
        let key: [u8; 32] = core::array::from_fn(|i| i as u8 * 7);
        assert_eq!(decode_ephemeral_key(&hex::encode(key)), key);
        assert_eq!(decode_ephemeral_key(&base64::engine::general_purpose::STANDARD.encode(key)), key);
        assert_eq!(decode_ephemeral_key(&base64::engine::general_purpose::STANDARD_NO_PAD.encode(key)), key);
        let mut z = String::new();
        let (mut bits, mut n) = (0u64, 0);
        for b in key {
            bits = (bits << 8) | u64::from(b);
            n += 8;
            while n >= 5 {
                n -= 5;
                z.push(ZBASE32[((bits >> n) & 31) as usize] as char);
            }
        }
        z.push(ZBASE32[((bits << (5 - n)) & 31) as usize] as char);
        assert_eq!(z.len(), 52);
        assert_eq!(decode_ephemeral_key(&z), key);
        assert_eq!(decode_ephemeral_key("abcdefghijklmnopqrstuvwxyz012345"), *b"abcdefghijklmnopqrstuvwxyz012345");
        assert_eq!(decode_ephemeral_key("nope"), [0; 32]);
        assert_eq!(decode_ephemeral_key(&"zz".repeat(32)), [0; 32]);
    }

    #[test]
    fn outer_layout() {
        assert_eq!(parse_outer(b"abc"), Err(OuterError::TooShort));
        assert_eq!(parse_outer(&[0xff, 0xff, 0xff, 0xff, b'{', b'}']), Err(OuterError::BadLength));
        assert_eq!(parse_outer(b"\x00\x00\x00\x00nope"), Err(OuterError::BadMetadata));
        assert_eq!(parse_outer(b"\x00\x00\x00\x00{}"), Err(OuterError::MissingKey));
        assert_eq!(
            parse_outer(b"\x00\x00\x00\x00{\"ephemeral_key\":\"x\",\"enc_type\":\"rot13\"}"),
            Err(OuterError::UnknownCipher)
        );
        let o = parse_outer(b"\x02\x00\x00\x00hi{\"ephemeral_key\":\"x\"}").unwrap();
        assert_eq!((o.blob, o.cipher, o.ephemeral_key), (&b"hi"[..], Cipher::Aes256Gcm, [0; 32]));
        let big = vec![0u8; MAX_REQUEST_BYTES + 1];
        assert_eq!(parse_outer(&big), Err(OuterError::TooLarge));
    }
}

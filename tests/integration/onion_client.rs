//! A client-side onion request builder written from the spec (api.md §5.6), independent of the
//! server's code: X25519 agreement, the two key derivations, both AEADs, bencoding and the
//! outer framing.

use aes_gcm::Aes256Gcm;
use base64::Engine as _;
use blake2::Blake2bMac;
use blake2::digest::Mac;
use blake2::digest::consts::U32;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit};
use hmac::Hmac;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enc {
    XChaCha,
    Aes,
}

/// How the metadata names the client's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEncoding {
    Hex,
    Base64,
    Base64NoPad,
    Base32z,
}

pub struct OnionClient {
    public: [u8; 32],
    pub enc: Enc,
    key: [u8; 32],
}

fn zbase32(bytes: &[u8]) -> String {
    const A: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";
    let (mut out, mut acc, mut bits) = (String::new(), 0u32, 0);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(A[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(A[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

impl OnionClient {
    pub fn new(server_x25519: [u8; 32], enc: Enc, secret: Option<[u8; 32]>) -> Self {
        let secret = StaticSecret::from(secret.unwrap_or_else(|| {
            let mut s = [0u8; 32];
            getrandom::fill(&mut s).unwrap();
            s
        }));
        let public = PublicKey::from(&secret).to_bytes();
        let shared = secret.diffie_hellman(&PublicKey::from(server_x25519)).to_bytes();
        let key: [u8; 32] = match enc {
            Enc::XChaCha => {
                let mut h = Blake2bMac::<U32>::new_with_salt_and_personal(None, &[], &[]).unwrap();
                h.update(&shared);
                h.update(&public);
                h.update(&server_x25519);
                h.finalize().into_bytes().into()
            }
            Enc::Aes => {
                let mut h = <Hmac<Sha256> as KeyInit>::new_from_slice(b"LOKI").unwrap();
                h.update(&shared);
                h.finalize().into_bytes().into()
            }
        };
        Self { public, enc, key }
    }

    pub fn seal(&self, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).unwrap();
        let (n, ct) = match self.enc {
            Enc::XChaCha => {
                (&nonce[..], XChaCha20Poly1305::new((&self.key).into()).encrypt((&nonce).into(), plain).unwrap())
            }
            Enc::Aes => {
                let n12: [u8; 12] = nonce[..12].try_into().unwrap();
                (&nonce[..12], Aes256Gcm::new((&self.key).into()).encrypt((&n12).into(), plain).unwrap())
            }
        };
        [n, &ct].concat()
    }

    pub fn open(&self, blob: &[u8]) -> Option<Vec<u8>> {
        match self.enc {
            Enc::XChaCha => {
                let (n, ct) = blob.split_at_checked(24)?;
                let n: [u8; 24] = n.try_into().ok()?;
                XChaCha20Poly1305::new((&self.key).into()).decrypt((&n).into(), ct).ok()
            }
            Enc::Aes => {
                let (n, ct) = blob.split_at_checked(12)?;
                let n: [u8; 12] = n.try_into().ok()?;
                Aes256Gcm::new((&self.key).into()).decrypt((&n).into(), ct).ok()
            }
        }
    }

    pub fn encoded_key(&self, e: KeyEncoding) -> String {
        match e {
            KeyEncoding::Hex => hex::encode(self.public),
            KeyEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(self.public),
            KeyEncoding::Base64NoPad => base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.public),
            KeyEncoding::Base32z => zbase32(&self.public),
        }
    }

    /// The full outer body: length, ciphertext, metadata (Python-style spacing, as clients send).
    pub fn wrap_plain(&self, inner_plain: &[u8], e: KeyEncoding, with_enc_type: bool) -> Vec<u8> {
        let blob = self.seal(inner_plain);
        let mut meta = format!("{{\"ephemeral_key\": \"{}\"", self.encoded_key(e));
        if with_enc_type {
            meta.push_str(match self.enc {
                Enc::XChaCha => ", \"enc_type\": \"xchacha20-poly1305\"",
                Enc::Aes => ", \"enc_type\": \"aes-gcm\"",
            });
        }
        meta.push('}');
        let mut out = (blob.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&blob);
        out.extend_from_slice(meta.as_bytes());
        out
    }

    /// Wraps a request the way libsession's builder does.
    pub fn wrap(&self, method: &str, endpoint: &str, body: Option<&[u8]>, e: KeyEncoding) -> Vec<u8> {
        self.wrap_plain(&bencode_request(method, endpoint, body), e, self.enc == Enc::XChaCha)
    }
}

pub fn bencode_request(method: &str, endpoint: &str, body: Option<&[u8]>) -> Vec<u8> {
    let meta =
        format!(r#"{{"method":"{method}","endpoint":"{endpoint}","headers":{{"Content-Type":"application/json"}}}}"#);
    let mut out = format!("l{}:{meta}", meta.len()).into_bytes();
    if let Some(b) = body {
        out.extend_from_slice(format!("{}:", b.len()).as_bytes());
        out.extend_from_slice(b);
    }
    out.push(b'e');
    out
}

/// Splits `l<n>:<meta><m>:<body>e` into (meta, body).
pub fn decode_response(plain: &[u8]) -> (String, Vec<u8>) {
    fn take(d: &[u8], pos: usize) -> (&[u8], usize) {
        let colon = pos + d[pos..].iter().position(|&c| c == b':').unwrap();
        let n: usize = std::str::from_utf8(&d[pos..colon]).unwrap().parse().unwrap();
        (&d[colon + 1..colon + 1 + n], colon + 1 + n)
    }
    assert_eq!(plain[0], b'l');
    assert_eq!(*plain.last().unwrap(), b'e');
    let (meta, pos) = take(plain, 1);
    let (body, end) = take(plain, pos);
    assert_eq!(end, plain.len() - 1);
    (String::from_utf8(meta.to_vec()).unwrap(), body.to_vec())
}

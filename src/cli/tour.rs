//! `server tour`: visits every endpoint of a dev-mode server twice, directly and wrapped in
//! onion requests (`/oxen/v4/lsrpc`), printing each request and response as JSON and checking
//! every proof offline. Like upstream's `examples/`, but one command.

use ed25519_dalek::SigningKey;
use pro_engine::domain::keys::x25519_public_from_ed25519;
use pro_engine::domain::types::PaymentTx;
use pro_engine::engine::DEV_BACKEND_SEED;
use pro_engine::onion::{self, Cipher};
use pro_engine::store::StoreTx;
use pro_engine::store::sqlite::{self, SqliteTarget};
use serde_json::Value;
use x25519_dalek::{PublicKey, StaticSecret};

use super::server::{
    DevOptions, Http, add_pro_payment_body, endpoint_url, generate_pro_proof_body, get_pro_details_body, json_answer,
    pretty, random_hex, random_key, revocations_body, set_refund_requested_body,
};
use super::verify_proof::{self, Verdict};
use super::{Access, CliError, CliResult, Global, now_ms, readable, store_error_text};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Base URL of a dev-mode server, e.g. http://127.0.0.1:8000
    #[arg(long)]
    pub url: String,
    /// The backend's Ed25519 public key (64 hex). Default: read from `--db`, else from the
    /// `--config` database, else the fixed dev-mode key.
    #[arg(long)]
    pub backend_pubkey: Option<String>,
    /// An SQLite database of the server to read the backend key from.
    #[arg(long)]
    pub db: Option<std::path::PathBuf>,
}

/// Builds the inner request of an onion request: `l<len>:<meta><len>:<body>e`.
pub fn bencode_request(endpoint: &str, body: &[u8]) -> Vec<u8> {
    let meta = serde_json::json!({
        "method": "POST", "endpoint": endpoint, "headers": { "Content-Type": "application/json" }
    })
    .to_string();
    let mut out = format!("l{}:{meta}{}:", meta.len(), body.len()).into_bytes();
    out.extend_from_slice(body);
    out.push(b'e');
    out
}

/// Splits an inner response `l<len>:<meta><len>:<body>e` into its two strings.
pub fn decode_response(plain: &[u8]) -> Option<(&[u8], &[u8])> {
    fn take(d: &[u8], pos: usize) -> Option<(&[u8], usize)> {
        let colon = pos + d.get(pos..)?.iter().position(|&c| c == b':')?;
        let len: usize = std::str::from_utf8(d.get(pos..colon)?).ok()?.parse().ok()?;
        let end = (colon + 1).checked_add(len)?;
        Some((d.get(colon + 1..end)?, end))
    }
    if plain.first() != Some(&b'l') || plain.last() != Some(&b'e') {
        return None;
    }
    let (meta, pos) = take(plain, 1)?;
    let (body, end) = take(plain, pos)?;
    (end == plain.len() - 1).then_some((meta, body))
}

fn cipher_name(c: Cipher) -> &'static str {
    match c {
        Cipher::XChaCha20Poly1305 => "xchacha20",
        Cipher::Aes256Gcm => "aes-gcm",
    }
}

struct Tour {
    http: Http,
    url: String,
    backend: [u8; 32],
    onion_key: [u8; 32],
    calls: usize,
    failures: Vec<String>,
}

impl Tour {
    /// Sends `body` to `endpoint` through an onion request; returns the inner HTTP code and body.
    fn onion_post(&self, endpoint: &str, body: &Value, cipher: Cipher) -> Result<(u16, Value), String> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| format!("no randomness available: {e}"))?;
        let secret = StaticSecret::from(seed);
        let client_pub = PublicKey::from(&secret).to_bytes();
        let shared = secret.diffie_hellman(&PublicKey::from(self.onion_key));
        if !shared.was_contributory() {
            return Err("the server's onion key is degenerate".into());
        }
        let key = onion::derive_key(cipher, shared.as_bytes(), &client_pub, &self.onion_key);
        let inner = bencode_request(&format!("/{endpoint}"), body.to_string().as_bytes());
        let blob = onion::encrypt(cipher, &key, &inner).ok_or("encryption failed")?;
        let meta = serde_json::json!({ "ephemeral_key": hex::encode(client_pub), "enc_type": cipher_name(cipher) });
        let mut outer = u32::try_from(blob.len()).map_err(|_| "request too large")?.to_le_bytes().to_vec();
        outer.extend_from_slice(&blob);
        outer.extend_from_slice(meta.to_string().as_bytes());
        let url = endpoint_url(&self.url, "oxen/v4/lsrpc");
        let (status, reply) = self
            .http
            .post(&url, "application/octet-stream", outer)
            .map_err(|e| format!("Failed to connect to {url}: {e}"))?;
        if status != 200 {
            return Err(format!("Server returned {status}: {}", String::from_utf8_lossy(&reply)));
        }
        let plain = onion::decrypt(cipher, &key, &reply)
            .ok_or("the onion response could not be decrypted (is --backend-pubkey the server's key?)")?;
        let (meta, inner_body) = decode_response(&plain).ok_or("the onion response is not a bencoded pair")?;
        let meta: Value = serde_json::from_slice(meta).map_err(|e| format!("bad onion response metadata: {e}"))?;
        let code = meta.get("code").and_then(Value::as_u64).and_then(|c| u16::try_from(c).ok()).unwrap_or(0);
        let answer = json_answer(code, inner_body).map_err(|e| match e {
            CliError::Fail(m) => m,
            CliError::MissingSubcommand(m) => m.to_string(),
        })?;
        Ok((code, answer))
    }

    /// One request, printed with its answer; a failure is recorded, not fatal.
    fn call(&mut self, title: &str, endpoint: &str, body: &Value, onion: Option<Cipher>) -> Option<Value> {
        self.calls += 1;
        println!("\n{title}");
        match onion {
            None => println!("Request (POST /{endpoint}):\n{}", pretty(body)),
            Some(c) => println!(
                "Request (POST /{endpoint} inside an onion request to /oxen/v4/lsrpc, {}):\n{}",
                cipher_name(c),
                pretty(body)
            ),
        }
        let answer = match onion {
            None => self.http.post_json(&self.url, endpoint, body).map_err(|e| match e {
                CliError::Fail(m) => m,
                CliError::MissingSubcommand(m) => m.to_string(),
            }),
            Some(c) => self.onion_post(endpoint, body, c).map(|(code, v)| {
                println!("Inner HTTP code: {code}");
                v
            }),
        };
        match answer {
            Ok(v) => {
                println!("Response: {}", pretty(&v));
                if v.get("status").and_then(Value::as_i64) != Some(0) {
                    self.failures.push(format!("{title}: the server answered status {}", v["status"]));
                }
                Some(v)
            }
            Err(e) => {
                println!("Failed: {e}");
                self.failures.push(format!("{title}: {e}"));
                None
            }
        }
    }

    /// Checks the proof in an answer as a receiving client would.
    fn check_proof(&mut self, title: &str, answer: Option<&Value>) {
        let Some(answer) = answer.filter(|a| a.get("status").and_then(Value::as_i64) == Some(0)) else { return };
        let verdict = verify_proof::parse_proof(&answer.to_string())
            .map(|p| (verify_proof::verify(&p, &self.backend, now_ms()), p.expiry_unix_ts_ms));
        match verdict {
            Ok((Verdict::Valid, expiry)) => {
                println!("Proof check: valid, expires {}", readable(i64::try_from(expiry).unwrap_or(i64::MAX)))
            }
            Ok((v, _)) => {
                println!("Proof check: NOT valid ({v:?})");
                self.failures.push(format!("{title}: the proof is not valid ({v:?})"));
            }
            Err(e) => {
                println!("Proof check: unreadable proof ({e})");
                self.failures.push(format!("{title}: unreadable proof ({e})"));
            }
        }
    }

    /// add payment, proof, details, revocations, refund request; over one transport.
    fn visit(&mut self, onion: bool) -> CliResult {
        let (suffix, main, other) = if onion {
            (" (onion request)", Some(Cipher::XChaCha20Poly1305), Some(Cipher::Aes256Gcm))
        } else {
            ("", None, None)
        };
        let master = random_key()?;
        let rotating = random_key()?;
        println!("\n=== {} ===", if onion { "Through onion requests" } else { "Direct requests" });
        println!("Master SKey:   {}", hex::encode(master.to_bytes()));
        println!("Master PKey:   {}", hex::encode(master.verifying_key().to_bytes()));
        println!("Rotating SKey: {}", hex::encode(rotating.to_bytes()));
        let tx = PaymentTx::apple_tx(format!("DEV.{}", random_hex(8)?));
        let dev = DevOptions { plan: Some(crate::cli::voucher::Plan::OneMonth), ..Default::default() };
        let title = format!("Add Pro Payment via Apple{suffix}");
        let a = self.call(&title, "add_pro_payment", &add_pro_payment_body(0, &master, &rotating, &tx, &dev), main);
        self.check_proof(&title, a.as_ref());

        let fresh: SigningKey = random_key()?;
        let title = format!("Generate Pro Proof{suffix}");
        let body = generate_pro_proof_body(0, &master, &fresh, now_u64());
        let p = self.call(&title, "generate_pro_proof", &body, main);
        self.check_proof(&title, p.as_ref());

        let body = get_pro_details_body(0, &master, now_u64(), 10);
        self.call(&format!("Query Pro Details{suffix}"), "get_pro_details", &body, main);
        self.call(
            &format!("Query Pro Revocations (ticket: 0){suffix}"),
            "get_pro_revocations",
            &revocations_body(0, 0),
            other.or(main),
        );
        let now = now_u64();
        let body = set_refund_requested_body(0, &master, now, now + 1000, &tx);
        self.call(
            &format!("Set payment refund requested via Apple{suffix}"),
            "set_payment_refund_requested",
            &body,
            main,
        );
        Ok(())
    }
}

fn now_u64() -> u64 {
    u64::try_from(now_ms()).unwrap_or(0)
}

fn key_from_db(target: &SqliteTarget) -> Result<[u8; 32], CliError> {
    let db_err = |e: pro_engine::store::StoreError| CliError::fail(format!("Database error: {}", store_error_text(&e)));
    let mut conn = sqlite::open_reader(target).map_err(db_err)?;
    sqlite::check_schema(&conn).map_err(db_err)?;
    let seed = sqlite::read(&mut conn, |tx: &mut dyn StoreTx| tx.runtime()).map_err(db_err)?.backend_key;
    Ok(SigningKey::from_bytes(&seed).verifying_key().to_bytes())
}

/// The backend key: given, else from a database, else the dev-mode key.
fn backend_key(global: &Global, args: &Args) -> Result<([u8; 32], &'static str), CliError> {
    if let Some(k) = &args.backend_pubkey {
        let key = super::voucher::parse_public_key(k)
            .map_err(|e| CliError::fail(format!("Failed to parse backend public key: {e}")))?;
        return Ok((key, "--backend-pubkey"));
    }
    if let Some(path) = &args.db {
        if !path.is_file() {
            return Err(CliError::fail(format!(
                "Database error: the database file \"{}\" does not exist",
                path.display()
            )));
        }
        return Ok((key_from_db(&SqliteTarget::file(path))?, "--db"));
    }
    let ini_in_env = std::env::var(crate::config::env_var::INI_PATH).is_ok_and(|p| !p.is_empty());
    if global.config.is_some() || ini_in_env {
        let (_, mut db) = super::config_and_db(global, Access::Read)?;
        let seed = sqlite::read(&mut db.conn, |tx: &mut dyn StoreTx| tx.runtime())
            .map_err(|e| CliError::fail(format!("Database error: {}", store_error_text(&e))))?
            .backend_key;
        return Ok((SigningKey::from_bytes(&seed).verifying_key().to_bytes(), "the --config database"));
    }
    Ok((SigningKey::from_bytes(&DEV_BACKEND_SEED).verifying_key().to_bytes(), "the dev-mode key"))
}

pub fn run(global: &Global, args: Args) -> CliResult {
    if global.dry_run {
        println!("(DRY RUN) The tour sends requests to {}; nothing was sent", args.url);
        return Ok(());
    }
    let (backend, source) = backend_key(global, &args)?;
    let onion_key = x25519_public_from_ed25519(&backend)
        .ok_or_else(|| CliError::fail("the backend public key is not a valid Ed25519 point"))?;
    println!("Server:               {}", args.url);
    println!("Backend Key:          {} (from {source})", hex::encode(backend));
    println!("Onion Key (X25519):   {}", hex::encode(onion_key));
    let mut tour = Tour { http: Http::new()?, url: args.url, backend, onion_key, calls: 0, failures: Vec::new() };
    tour.visit(false)?;
    tour.visit(true)?;
    if tour.failures.is_empty() {
        println!("\nTour finished: {} requests, all answered with status 0 and every proof verified", tour.calls);
        Ok(())
    } else {
        Err(CliError::fail(format!(
            "Tour finished with {} problem(s) in {} requests:\n  {}",
            tour.failures.len(),
            tour.calls,
            tour.failures.join("\n  ")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inner_request_round_trips_through_the_server_parser() {
        let req = bencode_request("/get_pro_revocations", br#"{"version":0,"ticket":0}"#);
        let parsed = onion::parse_inner(&req).unwrap();
        assert_eq!((parsed.method.as_str(), parsed.path.as_str()), ("POST", "/get_pro_revocations"));
        assert_eq!(parsed.body, br#"{"version":0,"ticket":0}"#);
    }

    #[test]
    fn inner_response_decoding() {
        let plain = onion::encode_inner_response(200, &[("content-type", "application/json")], b"{\"status\":0}\n");
        let (meta, body) = decode_response(&plain).unwrap();
        assert_eq!(meta, br#"{"code": 200, "headers": {"content-type": "application/json"}}"#);
        assert_eq!(body, b"{\"status\":0}\n");
        assert!(decode_response(b"l3:abce").is_none());
        assert!(decode_response(b"l99:abc1:xe").is_none());
        assert!(decode_response(b"").is_none());
        assert!(decode_response(b"l1:a1:bXe").is_none());
    }

    #[test]
    fn dev_key_converts_to_the_servers_onion_key() {
        let dev_pub = SigningKey::from_bytes(&DEV_BACKEND_SEED).verifying_key().to_bytes();
        assert_eq!(hex::encode(dev_pub), "fc947730f49eb01427a66e050733294d9e520e545c7a27125a780634e0860a27");
        let secret = StaticSecret::from(pro_engine::domain::keys::x25519_secret_from_ed25519_seed(&DEV_BACKEND_SEED));
        assert_eq!(x25519_public_from_ed25519(&dev_pub), Some(PublicKey::from(&secret).to_bytes()));
    }
}

//! `server …`: signs requests the way a Session client does and sends them to a running
//! server, printing the request and the response as JSON (indent 1, as upstream does).

use std::time::Duration;

use bytes::Bytes;
use clap::{Subcommand, ValueEnum};
use ed25519_dalek::{Signer, SigningKey};
use pro_engine::domain::hashes::{
    add_pro_payment_hash, generate_pro_proof_hash, get_pro_details_hash, set_refund_requested_hash,
};
use pro_engine::domain::types::{PaymentProvider, PaymentTx};
use pro_engine::outbound::{HttpClient, OutboundError};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::voucher::Plan;
use super::{CliError, CliResult, Global, now_ms, tour};

/// How long one request may take, connection included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Claim a payment (`/add_pro_payment`); a dev server fabricates `DEV.` payments.
    AddProPayment(AddProPaymentArgs),
    /// Ask for a refund of a payment (`/set_payment_refund_requested`).
    SetPaymentRefundRequested(RefundArgs),
    /// Fetch the revocation list (`/get_pro_revocations`).
    GetProRevocations(RevocationsArgs),
    /// Fetch a user's Pro status and payments (`/get_pro_details`).
    GetProDetails(DetailsArgs),
    /// Fetch a fresh proof for a rotating key (`/generate_pro_proof`).
    GenerateProProof(ProofArgs),
    /// Visit every endpoint of a dev server, directly and through onion requests.
    Tour(tour::Args),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Provider {
    Google,
    Apple,
    Rangeproof,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreProvider {
    Google,
    Apple,
}

#[derive(Debug, clap::Args)]
pub struct AddProPaymentArgs {
    /// Base URL of the server, e.g. http://127.0.0.1:8000
    #[arg(long)]
    pub url: String,
    #[arg(long, value_enum)]
    pub provider: Provider,
    /// Master Ed25519 seed (64 hex); generated when omitted.
    #[arg(long)]
    pub master_skey: Option<String>,
    /// Rotating Ed25519 seed (64 hex); generated when omitted.
    #[arg(long)]
    pub rotating_skey: Option<String>,
    #[arg(long, default_value_t = 0)]
    pub version: u8,
    /// Plan of the fabricated dev payment.
    #[arg(long, value_enum)]
    pub dev_plan: Option<Plan>,
    /// Duration of the fabricated dev payment (ms).
    #[arg(long, allow_negative_numbers = true)]
    pub dev_duration_ms: Option<i64>,
    /// Make the fabricated dev payment auto-renewing.
    #[arg(long)]
    pub dev_auto_renewing: bool,
}

#[derive(Debug, clap::Args)]
pub struct RefundArgs {
    #[arg(long)]
    pub url: String,
    #[arg(long, value_enum)]
    pub provider: StoreProvider,
    /// Master Ed25519 seed (64 hex).
    #[arg(long)]
    pub master_skey: String,
    /// Google purchase token.
    #[arg(long)]
    pub payment_token: Option<String>,
    /// Google order id.
    #[arg(long)]
    pub order_id: Option<String>,
    /// Apple transaction id.
    #[arg(long)]
    pub tx_id: Option<String>,
    /// When the refund was requested (ms; default now + 1 s).
    #[arg(long)]
    pub refund_requested_unix_ts_ms: Option<u64>,
    #[arg(long, default_value_t = 0)]
    pub version: u8,
}

#[derive(Debug, clap::Args)]
pub struct RevocationsArgs {
    #[arg(long)]
    pub url: String,
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub ticket: i64,
    #[arg(long, default_value_t = 0)]
    pub version: u8,
}

#[derive(Debug, clap::Args)]
pub struct DetailsArgs {
    #[arg(long)]
    pub url: String,
    /// Master Ed25519 seed (64 hex).
    #[arg(long)]
    pub master_skey: String,
    #[arg(long, default_value_t = 10)]
    pub count: u32,
    #[arg(long, default_value_t = 0)]
    pub version: u8,
}

#[derive(Debug, clap::Args)]
pub struct ProofArgs {
    #[arg(long)]
    pub url: String,
    /// Master Ed25519 seed (64 hex).
    #[arg(long)]
    pub master_skey: String,
    /// Rotating Ed25519 seed (64 hex).
    #[arg(long)]
    pub rotating_skey: String,
    #[arg(long, default_value_t = 0)]
    pub version: u8,
}

// ---------------------------------------------------------------------------------------------
// Keys and request bodies (pure)
// ---------------------------------------------------------------------------------------------

/// An Ed25519 key from its 64-hex seed (an optional `0x` is accepted).
pub fn parse_seed(s: &str) -> Result<SigningKey, String> {
    Ok(SigningKey::from_bytes(&super::parse_hex_key(s)?))
}

/// A fresh random signing key.
pub fn random_key() -> Result<SigningKey, CliError> {
    let (seed, _) = super::voucher::random_keypair()?;
    Ok(SigningKey::from_bytes(&seed))
}

/// `n` random bytes as hex.
pub fn random_hex(n: usize) -> Result<String, CliError> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|e| CliError::fail(format!("no randomness available: {e}")))?;
    Ok(hex::encode(b))
}

fn pk(k: &SigningKey) -> [u8; 32] {
    k.verifying_key().to_bytes()
}

fn sign(k: &SigningKey, digest: &[u8; 32]) -> String {
    hex::encode(k.sign(digest).to_bytes())
}

/// `payment_tx` as clients send it.
pub fn payment_tx_json(tx: &PaymentTx) -> Value {
    match tx.provider() {
        PaymentProvider::Google => json!({
            "provider": 1,
            "google_payment_token": tx.google_payment_token,
            "google_order_id": tx.google_order_id,
        }),
        PaymentProvider::Apple => json!({ "provider": 2, "apple_tx_id": tx.apple_tx_id }),
        PaymentProvider::Rangeproof => json!({ "provider": 3, "rangeproof_order_id": tx.rangeproof_order_id }),
        PaymentProvider::Nil => json!({ "provider": 0 }),
    }
}

/// The dev-mode extras of `/add_pro_payment`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevOptions {
    pub plan: Option<Plan>,
    pub duration_ms: Option<i64>,
    pub auto_renewing: bool,
}

pub fn add_pro_payment_body(
    version: u8,
    master: &SigningKey,
    rotating: &SigningKey,
    tx: &PaymentTx,
    dev: &DevOptions,
) -> Value {
    let digest = add_pro_payment_hash(version, &pk(master), &pk(rotating), tx);
    let mut body = Map::new();
    body.insert("version".into(), json!(version));
    body.insert("master_pkey".into(), json!(hex::encode(pk(master))));
    body.insert("rotating_pkey".into(), json!(hex::encode(pk(rotating))));
    body.insert("master_sig".into(), json!(sign(master, &digest)));
    body.insert("rotating_sig".into(), json!(sign(rotating, &digest)));
    body.insert("payment_tx".into(), payment_tx_json(tx));
    if let Some(plan) = dev.plan {
        body.insert("dev_plan".into(), json!(plan.pro_plan().name()));
    }
    if let Some(d) = dev.duration_ms {
        body.insert("dev_duration_ms".into(), json!(d));
    }
    if dev.auto_renewing {
        body.insert("dev_auto_renewing".into(), json!(true));
    }
    Value::Object(body)
}

pub fn generate_pro_proof_body(version: u8, master: &SigningKey, rotating: &SigningKey, ts: u64) -> Value {
    let digest = generate_pro_proof_hash(version, &pk(master), &pk(rotating), ts);
    json!({
        "version": version,
        "master_pkey": hex::encode(pk(master)),
        "rotating_pkey": hex::encode(pk(rotating)),
        "master_sig": sign(master, &digest),
        "rotating_sig": sign(rotating, &digest),
        "unix_ts_ms": ts,
    })
}

pub fn get_pro_details_body(version: u8, master: &SigningKey, ts: u64, count: u32) -> Value {
    let digest = get_pro_details_hash(version, &pk(master), ts, count);
    json!({
        "version": version,
        "master_pkey": hex::encode(pk(master)),
        "master_sig": sign(master, &digest),
        "unix_ts_ms": ts,
        "count": count,
    })
}

pub fn set_refund_requested_body(version: u8, master: &SigningKey, ts: u64, refund_ts: u64, tx: &PaymentTx) -> Value {
    let digest = set_refund_requested_hash(version, &pk(master), ts, refund_ts, tx);
    json!({
        "version": version,
        "master_pkey": hex::encode(pk(master)),
        "master_sig": sign(master, &digest),
        "unix_ts_ms": ts,
        "refund_requested_unix_ts_ms": refund_ts,
        "payment_tx": payment_tx_json(tx),
    })
}

pub fn revocations_body(version: u8, ticket: i64) -> Value {
    json!({ "version": version, "ticket": ticket })
}

/// JSON with one space of indentation, like Python's `json.dumps(v, indent=1)`.
pub fn pretty(v: &Value) -> String {
    let mut buf = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, serde_json::ser::PrettyFormatter::with_indent(b" "));
    match v.serialize(&mut ser) {
        Ok(()) => String::from_utf8_lossy(&buf).into_owned(),
        Err(_) => v.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

/// A blocking HTTP(S) client for the admin commands.
pub struct Http {
    rt: tokio::runtime::Runtime,
    client: HttpClient,
}

impl Http {
    pub fn new() -> Result<Self, CliError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::fail(format!("Failed to start the HTTP client: {e}")))?;
        Ok(Self { rt, client: HttpClient::allowing_plain_http() })
    }

    /// POSTs `body` to `url`; returns the status and the body, or why nothing was received.
    pub fn post(&self, url: &str, content_type: &str, body: Vec<u8>) -> Result<(u16, Bytes), String> {
        let headers = [("content-type", content_type)];
        let sent = self.rt.block_on(self.client.request(
            hyper::Method::POST,
            url,
            &headers,
            Some(Bytes::from(body)),
            REQUEST_TIMEOUT,
        ));
        match sent {
            Ok(r) => Ok((r.status, r.body)),
            Err(OutboundError::Transport { reason, .. }) => Err(reason),
            Err(OutboundError::Timeout(_)) => Err("timed out".into()),
            Err(OutboundError::BadUrl(_) | OutboundError::Insecure(_)) => {
                Err("the URL must start with http:// or https://".into())
            }
        }
    }

    /// POSTs JSON to `<base>/<endpoint>` and returns the JSON answer (HTTP 200 required).
    pub fn post_json(&self, base: &str, endpoint: &str, body: &Value) -> Result<Value, CliError> {
        let url = endpoint_url(base, endpoint);
        let (status, bytes) = self
            .post(&url, "application/json", body.to_string().into_bytes())
            .map_err(|e| CliError::fail(format!("Failed to connect to {url}: {e}")))?;
        json_answer(status, &bytes)
    }
}

/// `<base>/<endpoint>` with exactly one slash between them.
pub fn endpoint_url(base: &str, endpoint: &str) -> String {
    format!("{}/{}", base.trim_end_matches('/'), endpoint.trim_start_matches('/'))
}

/// Checks an HTTP answer and parses its JSON body.
pub fn json_answer(status: u16, body: &[u8]) -> Result<Value, CliError> {
    if !(200..300).contains(&status) {
        return Err(CliError::fail(format!("Server returned {status}: {}", String::from_utf8_lossy(body))));
    }
    serde_json::from_slice(body).map_err(|e| {
        CliError::fail(format!("Server returned a body that is not JSON ({e}): {}", String::from_utf8_lossy(body)))
    })
}

/// A hyper error with its causes (the top level alone often says only "client error").
/// Prints the title and the request, sends it (unless `--dry-run`), prints the response.
fn exchange(global: &Global, url: &str, endpoint: &str, title: &str, body: &Value) -> CliResult {
    println!("\n{title}");
    println!("Request:\n{}", pretty(body));
    if global.dry_run {
        println!("(DRY RUN) Not sent to {}", endpoint_url(url, endpoint));
        return Ok(());
    }
    let answer = Http::new()?.post_json(url, endpoint, body)?;
    println!("Response: {}", pretty(&answer));
    Ok(())
}

fn master_key(s: &str) -> Result<SigningKey, CliError> {
    parse_seed(s).map_err(|e| CliError::fail(format!("Failed to parse master key: {e}")))
}

fn rotating_key(s: &str) -> Result<SigningKey, CliError> {
    parse_seed(s).map_err(|e| CliError::fail(format!("Failed to parse rotating key: {e}")))
}

fn key_or_generated(
    given: Option<&str>,
    label: &str,
    parse: fn(&str) -> Result<SigningKey, CliError>,
) -> Result<SigningKey, CliError> {
    match given {
        Some(s) => parse(s),
        None => {
            let k = random_key()?;
            println!("Generated {label} SKey: {}", hex::encode(k.to_bytes()));
            println!("Generated {label} PKey: {}", hex::encode(pk(&k)));
            Ok(k)
        }
    }
}

fn now_u64() -> u64 {
    u64::try_from(now_ms()).unwrap_or(0)
}

pub fn run(global: &Global, command: Command) -> CliResult {
    match command {
        Command::AddProPayment(a) => {
            let master = key_or_generated(a.master_skey.as_deref(), "Master", master_key)?;
            let rotating = key_or_generated(a.rotating_skey.as_deref(), "Rotating", rotating_key)?;
            let (tx, via) = match a.provider {
                Provider::Google => (PaymentTx::google(random_hex(8)?, format!("DEV.{}", random_hex(8)?)), "Google"),
                Provider::Apple => (PaymentTx::apple_tx(format!("DEV.{}", random_hex(8)?)), "Apple"),
                Provider::Rangeproof => (PaymentTx::rangeproof(format!("DEV.{}", random_hex(8)?)), "Rangeproof"),
            };
            let dev =
                DevOptions { plan: a.dev_plan, duration_ms: a.dev_duration_ms, auto_renewing: a.dev_auto_renewing };
            let body = add_pro_payment_body(a.version, &master, &rotating, &tx, &dev);
            exchange(global, &a.url, "add_pro_payment", &format!("Add Pro Payment via {via}"), &body)
        }
        Command::SetPaymentRefundRequested(a) => {
            let master = master_key(&a.master_skey)?;
            let (tx, via) = match a.provider {
                StoreProvider::Google => match (a.payment_token, a.order_id) {
                    (Some(token), Some(order)) => (PaymentTx::google(token, order), "Google"),
                    _ => return Err(CliError::fail("--payment-token and --order-id are required for Google")),
                },
                StoreProvider::Apple => match a.tx_id {
                    Some(id) => (PaymentTx::apple_tx(id), "Apple"),
                    None => return Err(CliError::fail("--tx-id is required for Apple")),
                },
            };
            let now = now_u64();
            let refund_ts = a.refund_requested_unix_ts_ms.unwrap_or(now + 1000);
            let body = set_refund_requested_body(a.version, &master, now, refund_ts, &tx);
            exchange(
                global,
                &a.url,
                "set_payment_refund_requested",
                &format!("Set payment refund requested via {via}"),
                &body,
            )
        }
        Command::GetProRevocations(a) => {
            let title = format!("Query Pro Revocations (ticket: {})", a.ticket);
            exchange(global, &a.url, "get_pro_revocations", &title, &revocations_body(a.version, a.ticket))
        }
        Command::GetProDetails(a) => {
            let master = master_key(&a.master_skey)?;
            let body = get_pro_details_body(a.version, &master, now_u64(), a.count);
            exchange(global, &a.url, "get_pro_details", "Query Pro Details", &body)
        }
        Command::GenerateProProof(a) => {
            let master = master_key(&a.master_skey)?;
            let rotating = rotating_key(&a.rotating_skey)?;
            let body = generate_pro_proof_body(a.version, &master, &rotating, now_u64());
            exchange(global, &a.url, "generate_pro_proof", "Generate Pro Proof", &body)
        }
        Command::Tour(a) => tour::run(global, a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_style_indent() {
        let v = json!({ "result": { "a": 1, "b": [1, 2], "c": {} , "d": [] }, "status": 0 });
        assert_eq!(
            pretty(&v),
            "{\n \"result\": {\n  \"a\": 1,\n  \"b\": [\n   1,\n   2\n  ],\n  \"c\": {},\n  \"d\": []\n },\n \"status\": 0\n}"
        );
    }

    #[test]
    fn bodies_follow_the_spec_order_and_sign_correctly() {
        // The spec's example keys: master seed 11…11, rotating seed 22…22.
        let master = SigningKey::from_bytes(&[0x11; 32]);
        let rotating = SigningKey::from_bytes(&[0x22; 32]);
        assert!(hex::encode(pk(&master)).starts_with("d04ab232"));
        assert!(hex::encode(pk(&rotating)).starts_with("a09aa5f4"));
        let tx = PaymentTx::google("56c2c60dbca9f14d", "DEV.c6c51d16b06434aa");
        let dev = DevOptions { plan: Some(Plan::OneMonth), ..Default::default() };
        let body = add_pro_payment_body(0, &master, &rotating, &tx, &dev);
        let keys: Vec<&str> = body.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["version", "master_pkey", "rotating_pkey", "master_sig", "rotating_sig", "payment_tx", "dev_plan"]
        );
        assert_eq!(
            body["payment_tx"],
            json!({"provider": 1, "google_payment_token": "56c2c60dbca9f14d", "google_order_id": "DEV.c6c51d16b06434aa"})
        );
        let sig = hex::decode(body["master_sig"].as_str().unwrap()).unwrap();
        let digest = add_pro_payment_hash(0, &pk(&master), &pk(&rotating), &tx);
        assert!(pro_engine::domain::keys::verify_signature(&pk(&master), &digest, &sig.try_into().unwrap()));

        let refund = set_refund_requested_body(0, &master, 5, 6, &PaymentTx::apple_tx("DEV.x"));
        let keys: Vec<&str> = refund.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["version", "master_pkey", "master_sig", "unix_ts_ms", "refund_requested_unix_ts_ms", "payment_tx"]
        );
        assert_eq!(refund["payment_tx"], json!({"provider": 2, "apple_tx_id": "DEV.x"}));
        assert_eq!(revocations_body(0, 3), json!({"version": 0, "ticket": 3}));
    }

    #[test]
    fn urls_and_answers() {
        assert_eq!(endpoint_url("http://h:1/", "add_pro_payment"), "http://h:1/add_pro_payment");
        assert_eq!(endpoint_url("http://h:1", "/x"), "http://h:1/x");
        assert_eq!(json_answer(500, b"boom").unwrap_err(), CliError::fail("Server returned 500: boom"));
        assert!(json_answer(200, b"{\"status\":0}").is_ok());
        assert!(json_answer(200, b"<html>").is_err());
        assert_eq!(parse_seed("zz").unwrap_err(), "Expected 64 hex chars, received 2");
    }
}

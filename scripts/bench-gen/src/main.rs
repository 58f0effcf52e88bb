//! `bench-gen`: the helper behind `scripts/bench.sh`.
//!
//! It measures the single-core Ed25519 rates of this machine, registers development users on a
//! server running with `SESH_PRO_BACKEND_DEV=1`, and writes files of signed request bodies (one
//! compact JSON object per line) that `scripts/bench.lua` replays under wrk. Two small helpers
//! (`free-port`, `wait-health`) keep the shell script free of other tools.
//!
//! HTTP is spoken over a plain `TcpStream`, one request per connection: it is only used for
//! setup, never for the measured load.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signature, Signer, SigningKey};
use pro_engine::domain::hashes::{add_pro_payment_hash, generate_pro_proof_hash, get_pro_details_hash};
use pro_engine::domain::types::PaymentTx;
use serde_json::{Value, json};

/// A year: the longest development payment the server fabricates, so set-up users stay
/// entitled for the whole benchmark.
const DEV_DURATION_MS: u64 = 31_536_000_000;

const USAGE: &str = "\
usage:
  bench-gen crypto-rate [--millis N]
  bench-gen setup --url http://127.0.0.1:PORT --users N --out FILE [--threads N]
  bench-gen bodies --route ROUTE --count N [--seeds FILE] [--onion 1] --out FILE
      ROUTE: generate_pro_proof | get_pro_details | get_pro_revocations | add_pro_payment
      --onion 1 wraps each body in an onion request to a dev-mode server (hex, one per line)
  bench-gen witness (--db-path FILE | --db-url URL) --count N --out FILE
      records N unredeemed App Store payments in a (new) dev database, as the Apple receiver
      would, and writes one add_pro_payment body claiming each
  bench-gen free-port
  bench-gen wait-health --url http://127.0.0.1:PORT [--timeout-ms N]";

type Res<T> = Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let outcome = parse_flags(rest).and_then(|flags| match cmd.as_str() {
        "crypto-rate" => crypto_rate(&flags),
        "setup" => setup(&flags),
        "bodies" => bodies(&flags),
        "witness" => witness(&flags),
        "free-port" => free_port(),
        "wait-health" => wait_health(&flags),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown subcommand {other:?}\n{USAGE}")),
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-gen: {e}");
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Command line

struct Flags(HashMap<String, String>);

/// Every flag takes exactly one value: `--name value`.
fn parse_flags(args: &[String]) -> Res<Flags> {
    let mut map = HashMap::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let name = a.strip_prefix("--").ok_or_else(|| format!("unexpected argument {a:?}"))?;
        let value = it.next().ok_or_else(|| format!("flag --{name} needs a value"))?;
        map.insert(name.to_string(), value.clone());
    }
    Ok(Flags(map))
}

impl Flags {
    fn str(&self, name: &str) -> Res<&str> {
        self.0.get(name).map(String::as_str).ok_or_else(|| format!("missing --{name}"))
    }

    fn num(&self, name: &str, default: Option<u64>) -> Res<u64> {
        match (self.0.get(name), default) {
            (Some(v), _) => v.parse().map_err(|_| format!("--{name} wants a non-negative integer, got {v:?}")),
            (None, Some(d)) => Ok(d),
            (None, None) => Err(format!("missing --{name}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Witnessed payments (the production claim path)

/// Opens the benchmark database (bootstrapped with the dev key, as the dev-mode server expects).
fn open_db(flags: &Flags) -> Res<Box<dyn pro_engine::store::Database>> {
    use pro_engine::store::postgres::{PgDatabase, PgTarget};
    use pro_engine::store::sqlite::{SqliteDatabase, SqliteTarget};
    if let Ok(url) = flags.str("db-url") {
        let target = PgTarget::parse(url)?;
        pro_engine::engine::open_and_bootstrap_postgres(&target, true)?;
        let db = PgDatabase::open(std::sync::Arc::new(target)).map_err(|e| e.to_string())?;
        return Ok(Box::new(db));
    }
    let (conn, _, _) = pro_engine::engine::open_and_bootstrap(&SqliteTarget::file(flags.str("db-path")?), true)?;
    Ok(Box::new(SqliteDatabase { conn }))
}

/// Records `count` unredeemed App Store payments (a year long, no app account token) and writes
/// an add_pro_payment body per payment, each claiming it for fresh keys.
fn witness(flags: &Flags) -> Res<()> {
    use pro_engine::domain::types::ProPlan;
    use pro_engine::store::ops::{OpCtx, add_unredeemed_payment};
    use pro_engine::store::rows::NewPayment;
    let count = flags.num("count", None)? as usize;
    let out = flags.str("out")?;
    let mut db = open_db(flags)?;
    let now = now_ms() as i64;
    let start = Instant::now();
    let ids: Vec<String> = (0..count).map(|i| format!("BENCH.{i}.{}", hex::encode(random_bytes::<6>()))).collect();
    for chunk in ids.chunks(2000) {
        pro_engine::store::write_db(&mut *db, |tx| {
            for id in chunk {
                let p = NewPayment {
                    tx: PaymentTx::apple(id, id, id),
                    plan: ProPlan::TwelveMonth,
                    expiry_unix_ts_ms: now + DEV_DURATION_MS as i64,
                    unredeemed_unix_ts_ms: now,
                    platform_refund_expiry_unix_ts_ms: now + DEV_DURATION_MS as i64,
                    google_obfuscated_account_id: None,
                    apple_app_account_token: String::new(),
                };
                add_unredeemed_payment(tx, &p, OpCtx { now, dev: true })?;
            }
            Ok(())
        })
        .map_err(|e| format!("recording payments: {e}"))?;
    }
    let mut file = BufWriter::new(File::create(out).map_err(|e| format!("create {out}: {e}"))?);
    for id in &ids {
        let (master, rotating) = (random_key(), random_key());
        let tx = PaymentTx::apple_tx(id);
        let d = add_pro_payment_hash(0, &master.verifying_key().to_bytes(), &rotating.verifying_key().to_bytes(), &tx);
        let body = json!({
            "version": 0,
            "master_pkey": pub_hex(&master),
            "rotating_pkey": pub_hex(&rotating),
            "master_sig": sig_hex(&master, &d),
            "rotating_sig": sig_hex(&rotating, &d),
            "payment_tx": {"provider": 2, "apple_tx_id": id},
        });
        writeln!(file, "{body}").map_err(|e| format!("write {out}: {e}"))?;
    }
    file.flush().map_err(|e| format!("write {out}: {e}"))?;
    eprintln!(
        "bench-gen: witnessed {count} payments and wrote their claims to {out} in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Onion requests

/// The onion (X25519) key of a dev-mode server, whose backend key is the fixed 0xCD seed.
fn dev_server_onion_key() -> Res<[u8; 32]> {
    let ed = SigningKey::from_bytes(&[0xCD; 32]).verifying_key().to_bytes();
    pro_engine::domain::keys::x25519_public_from_ed25519(&ed).ok_or_else(|| "bad dev key".to_string())
}

/// Wraps one JSON body the way Session clients send it: a bencoded inner request sealed with
/// XChaCha20-Poly1305 under a key agreed with a fresh ephemeral X25519 key.
fn onion_wrap(server: &[u8; 32], route: &str, body: &[u8]) -> Vec<u8> {
    use pro_engine::onion::{Cipher, derive_key, encrypt};
    let secret: [u8; 32] = random_bytes();
    let public = x25519_dalek::x25519(secret, x25519_dalek::X25519_BASEPOINT_BYTES);
    let shared = x25519_dalek::x25519(secret, *server);
    let key = derive_key(Cipher::XChaCha20Poly1305, &shared, &public, server);
    let meta = format!(r#"{{"method":"POST","endpoint":"/{route}","headers":{{"Content-Type":"application/json"}}}}"#);
    let mut inner = format!("l{}:{meta}{}:", meta.len(), body.len()).into_bytes();
    inner.extend_from_slice(body);
    inner.push(b'e');
    let blob = encrypt(Cipher::XChaCha20Poly1305, &key, &inner).unwrap_or_default();
    let mut out = (blob.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&blob);
    out.extend_from_slice(
        format!(r#"{{"ephemeral_key":"{}","enc_type":"xchacha20-poly1305"}}"#, hex::encode(public)).as_bytes(),
    );
    out
}

// ---------------------------------------------------------------------------------------------
// Keys, randomness, time

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the operating system random source failed");
    b
}

fn random_key() -> SigningKey {
    SigningKey::from_bytes(&random_bytes::<32>())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock before 1970").as_millis() as u64
}

fn sig_hex(key: &SigningKey, digest: &[u8; 32]) -> String {
    hex::encode(key.sign(digest).to_bytes())
}

fn pub_hex(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().to_bytes())
}

/// A fresh development Apple transaction id: the `DEV.` prefix makes a dev-mode server
/// fabricate the payment before claiming it.
fn dev_apple_id() -> String {
    format!("DEV.{}", hex::encode(random_bytes::<16>()))
}

/// An add_pro_payment request claiming a brand-new development Apple payment for `master`,
/// with a fresh rotating key.
fn add_payment_body(master: &SigningKey, duration_ms: Option<u64>) -> Value {
    let rotating = random_key();
    let tx_id = dev_apple_id();
    let tx = PaymentTx::apple_tx(tx_id.clone());
    let digest = add_pro_payment_hash(0, &master.verifying_key().to_bytes(), &rotating.verifying_key().to_bytes(), &tx);
    let mut body = json!({
        "version": 0,
        "master_pkey": pub_hex(master),
        "rotating_pkey": pub_hex(&rotating),
        "master_sig": sig_hex(master, &digest),
        "rotating_sig": sig_hex(&rotating, &digest),
        "payment_tx": {"provider": 2, "apple_tx_id": tx_id},
    });
    if let Some(d) = duration_ms {
        body["dev_duration_ms"] = json!(d);
    }
    body
}

fn generate_proof_body(master: &SigningKey, now: u64) -> Value {
    let rotating = random_key();
    let digest =
        generate_pro_proof_hash(0, &master.verifying_key().to_bytes(), &rotating.verifying_key().to_bytes(), now);
    json!({
        "version": 0,
        "master_pkey": pub_hex(master),
        "rotating_pkey": pub_hex(&rotating),
        "unix_ts_ms": now,
        "master_sig": sig_hex(master, &digest),
        "rotating_sig": sig_hex(&rotating, &digest),
    })
}

fn get_details_body(master: &SigningKey, now: u64) -> Value {
    const COUNT: u32 = 10;
    let digest = get_pro_details_hash(0, &master.verifying_key().to_bytes(), now, COUNT);
    json!({
        "version": 0,
        "master_pkey": pub_hex(master),
        "master_sig": sig_hex(master, &digest),
        "unix_ts_ms": now,
        "count": COUNT,
    })
}

// ---------------------------------------------------------------------------------------------
// crypto-rate

/// Runs `op` repeatedly for about `budget` and returns operations per second.
fn rate(budget: Duration, mut op: impl FnMut(u64)) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    loop {
        // Check the clock every 64 operations so timing stays out of the measured cost.
        for _ in 0..64 {
            op(n);
            n += 1;
        }
        let elapsed = start.elapsed();
        if elapsed >= budget {
            return n as f64 / elapsed.as_secs_f64();
        }
    }
}

fn crypto_rate(flags: &Flags) -> Res<()> {
    let budget = Duration::from_millis(flags.num("millis", Some(1000))?);
    let key = random_key();
    let vk = key.verifying_key();

    let mut msg = random_bytes::<32>();
    let sign_per_s = rate(budget, |i| {
        msg[..8].copy_from_slice(&i.to_le_bytes());
        std::hint::black_box(key.sign(std::hint::black_box(&msg)));
    });

    // Verify a rotating set of genuine signatures so every call does the full check.
    let samples: Vec<([u8; 32], Signature)> = (0..256u64)
        .map(|i| {
            let mut m = random_bytes::<32>();
            m[..8].copy_from_slice(&i.to_le_bytes());
            (m, key.sign(&m))
        })
        .collect();
    let mut failures = 0u64;
    let verify_per_s = rate(budget, |i| {
        let (m, s) = &samples[(i % samples.len() as u64) as usize];
        if std::hint::black_box(&vk).verify_strict(std::hint::black_box(m), s).is_err() {
            failures += 1;
        }
    });
    if failures > 0 {
        return Err(format!("{failures} strict verifications of genuine signatures failed"));
    }
    println!("sign_per_s={sign_per_s:.0} verify_per_s={verify_per_s:.0}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Minimal HTTP/1.1 client

struct Url {
    /// `host:port`, as given.
    authority: String,
    /// Path prefix without a trailing slash (usually empty).
    base: String,
}

fn parse_url(url: &str) -> Res<Url> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("only http:// URLs are supported: {url}"))?;
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    if !authority.contains(':') {
        return Err(format!("the URL needs an explicit port: {url}"));
    }
    let base = if path.is_empty() { String::new() } else { format!("/{}", path.trim_end_matches('/')) };
    Ok(Url { authority: authority.to_string(), base })
}

struct Reply {
    status: u16,
    body: String,
}

/// Sends one request on a fresh connection and reads the answer until the server closes it.
fn http(url: &Url, method: &str, path: &str, body: &str) -> Res<Reply> {
    let io = |e: std::io::Error| format!("{method} {path} on {}: {e}", url.authority);
    let mut stream = TcpStream::connect(&url.authority).map_err(io)?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(io)?;
    let request = format!(
        "{method} {}{path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        url.base,
        url.authority,
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).map_err(io)?;

    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("reply without a header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut payload = raw[split + 4..].to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in reply: {head:?}"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        payload = dechunk(&payload)?;
    }
    Ok(Reply { status, body: String::from_utf8_lossy(&payload).into_owned() })
}

fn dechunk(mut data: &[u8]) -> Res<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n").ok_or("truncated chunked body")?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------------
// free-port, wait-health

fn free_port() -> Res<()> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    println!("{port}");
    Ok(())
}

/// Polls `GET /health` every millisecond until it answers 200; prints the milliseconds waited.
fn wait_health(flags: &Flags) -> Res<()> {
    let url = parse_url(flags.str("url")?)?;
    let timeout = Duration::from_millis(flags.num("timeout-ms", Some(10_000))?);
    let start = Instant::now();
    let mut last = String::from("no answer");
    while start.elapsed() < timeout {
        match http(&url, "GET", "/health", "") {
            Ok(r) if r.status == 200 => {
                println!("{:.1}", start.elapsed().as_secs_f64() * 1000.0);
                return Ok(());
            }
            Ok(r) => last = format!("HTTP {}: {}", r.status, r.body.trim()),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(format!("/health did not answer 200 within {timeout:?} (last: {last})"))
}

// ---------------------------------------------------------------------------------------------
// setup

/// True when a reply is HTTP 200 with a JSON body whose top-level `status` is 0.
fn succeeded(reply: &Reply) -> bool {
    reply.status == 200
        && serde_json::from_str::<Value>(&reply.body).is_ok_and(|v| v.get("status").and_then(Value::as_i64) == Some(0))
}

fn setup(flags: &Flags) -> Res<()> {
    let url = parse_url(flags.str("url")?)?;
    let users = flags.num("users", None)? as usize;
    let out = flags.str("out")?;
    let threads = flags.num("threads", Some(8))?.max(1) as usize;

    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let per_thread: Vec<Res<Vec<[u8; 32]>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut seeds = Vec::new();
                    while next.fetch_add(1, Ordering::Relaxed) < users {
                        let master = random_key();
                        let text = add_payment_body(&master, Some(DEV_DURATION_MS)).to_string();
                        let reply = http(&url, "POST", "/add_pro_payment", &text)?;
                        if !succeeded(&reply) {
                            return Err(format!(
                                "claim of a development payment failed: HTTP {} {}\nrequest: {text}",
                                reply.status,
                                reply.body.trim()
                            ));
                        }
                        seeds.push(master.to_bytes());
                    }
                    Ok(seeds)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|_| Err("a setup thread panicked".into()))).collect()
    });

    let mut file = BufWriter::new(File::create(out).map_err(|e| format!("create {out}: {e}"))?);
    let mut written = 0usize;
    for seeds in per_thread {
        for seed in seeds? {
            writeln!(file, "{}", hex::encode(seed)).map_err(|e| format!("write {out}: {e}"))?;
            written += 1;
        }
    }
    file.flush().map_err(|e| format!("write {out}: {e}"))?;
    eprintln!(
        "bench-gen: claimed {written} development payments in {:.2} s ({threads} connections at a time)",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// bodies

fn read_seeds(path: &str) -> Res<Vec<SigningKey>> {
    let file = File::open(path).map_err(|e| format!("open {path}: {e}"))?;
    let mut keys = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("read {path}: {e}"))?;
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let seed: [u8; 32] = hex::decode(line)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("{path}:{}: not a 64-character hex seed", i + 1))?;
        keys.push(SigningKey::from_bytes(&seed));
    }
    if keys.is_empty() {
        return Err(format!("{path} holds no seeds"));
    }
    Ok(keys)
}

fn bodies(flags: &Flags) -> Res<()> {
    let route = flags.str("route")?;
    let count = flags.num("count", None)? as usize;
    let out = flags.str("out")?;
    let seeds = match route {
        "generate_pro_proof" | "get_pro_details" => read_seeds(flags.str("seeds")?)?,
        "get_pro_revocations" | "add_pro_payment" => Vec::new(),
        other => return Err(format!("unknown route {other:?}")),
    };

    let now = now_ms();
    let onion = flags.num("onion", Some(0))? != 0;
    let server_x25519 = dev_server_onion_key()?;
    let make = |i: usize| -> String {
        let body = match route {
            "generate_pro_proof" => generate_proof_body(&seeds[i % seeds.len()], now),
            "get_pro_details" => get_details_body(&seeds[i % seeds.len()], now),
            "get_pro_revocations" => json!({"version": 0, "ticket": 0}),
            _ => add_payment_body(&random_key(), None),
        }
        .to_string();
        if onion { hex::encode(onion_wrap(&server_x25519, route, body.as_bytes())) } else { body }
    };

    // Signing dominates; spread the lines over every core, each worker filling one slice.
    let start = Instant::now();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut lines = vec![String::new(); count];
    let chunk = count.div_ceil(workers).max(1);
    std::thread::scope(|s| {
        for (c, slice) in lines.chunks_mut(chunk).enumerate() {
            let make = &make;
            s.spawn(move || {
                for (j, line) in slice.iter_mut().enumerate() {
                    *line = make(c * chunk + j);
                }
            });
        }
    });

    let mut file = BufWriter::new(File::create(out).map_err(|e| format!("create {out}: {e}"))?);
    for line in &lines {
        writeln!(file, "{line}").map_err(|e| format!("write {out}: {e}"))?;
    }
    file.flush().map_err(|e| format!("write {out}: {e}"))?;
    eprintln!("bench-gen: wrote {count} {route} bodies to {out} in {:.2} s", start.elapsed().as_secs_f64());
    Ok(())
}

//! `voucher`: grants Pro through a Rangeproof payment that is created and redeemed for a
//! master key in one transaction, then prints the first proof.

use clap::ValueEnum;
use ed25519_dalek::{Signer, SigningKey};
use pro_engine::domain::hashes::{gen_index_hash, proof_hash};
use pro_engine::domain::time::{DAY_MS, clamp_proof_expiry, round_up_to_day};
use pro_engine::domain::types::ProPlan;
use pro_engine::store::StoreTx;
use pro_engine::store::admin::{self, VoucherError};
use pro_engine::store::ops::OpCtx;
use pro_engine::store::sqlite;

use super::{Access, CliError, CliResult, Global, config_and_db, now_ms, readable, store_error_text};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The master public key to grant Pro to (64 hex, optional `0x`).
    #[arg(long)]
    pub master_pkey: String,
    /// The plan: 30, 90 or 365 days.
    #[arg(long, value_enum)]
    pub plan: Plan,
    /// The rotating public key of the first proof (a fresh one is generated when omitted).
    #[arg(long)]
    pub rotating_pkey: Option<String>,
    /// Overrides the plan's duration (milliseconds; 0 = the plan's duration).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub dev_duration_ms: i64,
}

/// A plan as the command line names it (`--plan`, `--dev-plan`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Plan {
    #[value(name = "1M")]
    OneMonth,
    #[value(name = "3M")]
    ThreeMonth,
    #[value(name = "12M")]
    TwelveMonth,
}

impl Plan {
    pub fn pro_plan(self) -> ProPlan {
        match self {
            Self::OneMonth => ProPlan::OneMonth,
            Self::ThreeMonth => ProPlan::ThreeMonth,
            Self::TwelveMonth => ProPlan::TwelveMonth,
        }
    }
    pub fn duration_ms(self) -> i64 {
        DAY_MS
            * match self {
                Self::OneMonth => 30,
                Self::ThreeMonth => 90,
                Self::TwelveMonth => 365,
            }
    }
}

/// A 32-byte Ed25519 public key in hex (optional `0x`) that is a valid curve point.
pub fn parse_public_key(s: &str) -> Result<[u8; 32], String> {
    let key = super::parse_hex_key(s)?;
    ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| "not a valid Ed25519 public key".to_string())?;
    Ok(key)
}

/// A random version-4 UUID in its usual text form.
pub fn uuid_v4() -> Result<String, String> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).map_err(|e| format!("no randomness available: {e}"))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

/// A fresh Ed25519 key pair: (seed, public key).
pub fn random_keypair() -> Result<([u8; 32], [u8; 32]), CliError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| CliError::fail(format!("no randomness available: {e}")))?;
    Ok((seed, SigningKey::from_bytes(&seed).verifying_key().to_bytes()))
}

pub fn run(global: &Global, args: Args) -> CliResult {
    let (cfg, mut db) = config_and_db(global, Access::for_dry_run(global))?;
    let master = parse_public_key(&args.master_pkey)
        .map_err(|e| CliError::fail(format!("Failed to parse master public key: {e}")))?;
    let rotating = match &args.rotating_pkey {
        Some(k) => {
            parse_public_key(k).map_err(|e| CliError::fail(format!("Failed to parse rotating public key: {e}")))?
        }
        None => {
            let (seed, public) = random_keypair()?;
            println!("Generated Rotating SKey: {}", hex::encode(seed));
            println!("Generated Rotating PKey: {}", hex::encode(public));
            public
        }
    };
    let duration = match args.dev_duration_ms {
        0 => args.plan.duration_ms(),
        d if d > 0 => d,
        d => return Err(CliError::fail(format!("--dev-duration-ms must not be negative, received {d}"))),
    };
    let order_id = uuid_v4().map_err(CliError::Fail)?;
    println!("Generated Rangeproof Order ID: {order_id}");
    let now = now_ms();
    if global.dry_run {
        println!(
            "\n(DRY RUN) Would create an unredeemed Rangeproof payment ({:?}, expiry {}) and redeem it for {}",
            args.plan.pro_plan(),
            readable(now.saturating_add(duration)),
            hex::encode(master)
        );
        return Ok(());
    }

    let ctx = OpCtx { now, dev: cfg.dev };
    println!("\nStep 1: Creating unredeemed Rangeproof payment...");
    let outcome = sqlite::write(&mut db.conn, |tx: &mut dyn StoreTx| {
        let runtime = tx.runtime()?;
        let grant = admin::grant_voucher(tx, &master, &order_id, args.plan.pro_plan(), duration, ctx)?;
        Ok::<_, VoucherError>((runtime, grant))
    });
    let (runtime, grant) = outcome.map_err(|e| {
        let text = match e {
            VoucherError::Store(s) => format!("Database error: {}", store_error_text(&s)),
            other => other.to_string(),
        };
        CliError::fail(format!("{text} (the transaction was rolled back, nothing was stored)"))
    })?;
    println!("Success: Unredeemed payment created");
    println!("\nStep 2: Redeeming payment and generating pro proof...");
    let proposed = if cfg.dev { grant.entitled_until } else { round_up_to_day(grant.entitled_until) };
    let expiry = clamp_proof_expiry(now, proposed);
    let gih = gen_index_hash(grant.gen_index, &runtime.gen_index_salt);
    let digest = proof_hash(0, &gih, &rotating, u64::try_from(expiry).unwrap_or(0));
    let sig = SigningKey::from_bytes(&runtime.backend_key).sign(&digest).to_bytes();
    println!("Success: Payment redeemed and pro proof generated");
    println!("\nProof Details:");
    println!("  Expiry: {}", readable(expiry));
    println!("  Gen Index Hash: {}", hex::encode(gih));
    println!("  Rotating PKey: {}", hex::encode(rotating));
    println!("  Sig: {}", hex::encode(sig));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4() {
        let u = uuid_v4().unwrap();
        let parts: Vec<&str> = u.split('-').collect();
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [8, 4, 4, 4, 12]);
        assert!(parts[2].starts_with('4'));
        assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
        assert_ne!(u, uuid_v4().unwrap());
    }

    #[test]
    fn keys() {
        let public = SigningKey::from_bytes(&[0x11; 32]).verifying_key().to_bytes();
        assert_eq!(parse_public_key(&format!("0x{}", hex::encode(public))).unwrap(), public);
        assert_eq!(parse_public_key("12").unwrap_err(), "Expected 64 hex chars, received 2");
        assert_eq!(Plan::TwelveMonth.duration_ms(), 365 * DAY_MS);
    }
}

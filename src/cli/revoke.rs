//! `revoke list|delete|timestamp`: a user's revocable payments, and the revocation of the
//! user's current generation (every proof the user holds).

use clap::Subcommand;
use pro_engine::domain::types::{PaymentProvider, PaymentStatus};
use pro_engine::store::admin::{self, RevocationChange};
use pro_engine::store::sqlite;
use pro_engine::store::{PaymentRow, StoreTx};

use super::{Access, CliError, CliResult, Global, config_and_db, db_error, now_ms, readable};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the user's payments that are neither expired nor past their expiry.
    List {
        /// The user's master public key (64 hex, optional `0x`).
        master_pkey: String,
    },
    /// Delete the revocation of the user's current generation.
    Delete {
        /// The user's master public key (64 hex, optional `0x`).
        master_pkey: String,
    },
    /// Revoke the user's current generation until an expiry (both times in seconds).
    Timestamp {
        /// When the revocation was made (Unix seconds; default now).
        #[arg(long)]
        creation_unix_ts_s: Option<i64>,
        /// The user's master public key (64 hex, optional `0x`).
        master_pkey: String,
        /// Until when the generation stays revoked (Unix seconds).
        #[arg(allow_negative_numbers = true)]
        expiry_unix_ts_s: i64,
    },
}

/// Parses a master public key with upstream's messages.
pub fn parse_master_key(s: &str) -> Result<[u8; 32], String> {
    let hex_part = s.strip_prefix("0x").unwrap_or(s);
    let n = hex_part.chars().count();
    if n != 64 {
        return Err(format!("Expected 64 hex chars for master public key, received {n}"));
    }
    if let Some(pos) = hex_part.chars().position(|c| !c.is_ascii_hexdigit()) {
        return Err(format!(
            "Failed to parse hex as master public key: non-hexadecimal number found in fromhex() arg at position {pos}"
        ));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).map_err(|e| format!("Failed to parse hex as master public key: {e}"))?;
    Ok(out)
}

fn plan_text(plan: i64) -> &'static str {
    match plan {
        1 => "1M",
        2 => "3M",
        3 => "12M",
        _ => "??",
    }
}

/// One line of `revoke list` (without the index).
pub fn payment_line(p: &PaymentRow) -> String {
    let provider = PaymentProvider::from_i64(p.payment_provider);
    let id = match provider {
        Some(PaymentProvider::Google) => format!("{}-{}", p.google_payment_token, p.google_order_id),
        Some(PaymentProvider::Apple) => p.apple_original_tx_id.clone(),
        Some(PaymentProvider::Rangeproof) => p.rangeproof_order_id.clone(),
        _ => String::new(),
    };
    let provider = provider.map_or_else(|| format!("Unknown({})", p.payment_provider), |p| p.name().to_string());
    let status =
        PaymentStatus::from_i64(p.status).map_or_else(|| format!("Unknown({})", p.status), |s| s.name().to_string());
    format!(
        "RevokeID={provider}-{id}; Status={status}; Plan={}; Unredeemed={}; Expiry={};",
        plan_text(p.plan),
        readable(p.unredeemed_unix_ts_ms),
        readable(p.expiry_unix_ts_ms)
    )
}

fn seconds_to_ms(s: i64, what: &str) -> Result<i64, CliError> {
    s.checked_mul(1000)
        .ok_or_else(|| CliError::fail(format!("Failed to parse arguments:\n  {what} is out of range: {s}")))
}

pub fn run(global: &Global, command: Command) -> CliResult {
    // Defaulted before anything else: "the time of parsing".
    let parsed_at_s = now_ms() / 1000;
    let read_only = matches!(command, Command::List { .. }) || global.dry_run;
    let (_, mut db) = config_and_db(global, if read_only { Access::Read } else { Access::Write })?;
    let key_text = match &command {
        Command::List { master_pkey } | Command::Delete { master_pkey } | Command::Timestamp { master_pkey, .. } => {
            master_pkey.clone()
        }
    };
    let master =
        parse_master_key(&key_text).map_err(|e| CliError::fail(format!("Failed to parse arguments:\n  {e}")))?;
    match command {
        Command::List { .. } => {
            let now = now_ms();
            let rows =
                sqlite::read(&mut db.conn, |tx| admin::revocable_payments(tx, &master, now)).map_err(db_error)?;
            println!("User {key_text} has {} revocable payments", rows.len());
            for (i, p) in rows.iter().enumerate() {
                println!("    {i:02} {}", payment_line(p));
            }
        }
        Command::Delete { .. } if global.dry_run => println!("(DRY RUN) Would delete revocation for {key_text}"),
        Command::Delete { .. } => {
            let change: RevocationChange =
                sqlite::write(&mut db.conn, |tx: &mut dyn StoreTx| admin::delete_user_revocation(tx, &master))
                    .map_err(db_error)?;
            println!("Deleted revocation for {key_text} ({change})");
        }
        Command::Timestamp { creation_unix_ts_s, expiry_unix_ts_s, .. } => {
            let creation = seconds_to_ms(creation_unix_ts_s.unwrap_or(parsed_at_s), "--creation-unix-ts-s")?;
            let expiry = seconds_to_ms(expiry_unix_ts_s, "expiry_unix_ts_s")?;
            if global.dry_run {
                println!("(DRY RUN) Would set revocation timestamp for {key_text} to {}", readable(expiry));
                return Ok(());
            }
            let change = sqlite::write(&mut db.conn, |tx: &mut dyn StoreTx| {
                admin::set_user_revocation(tx, &master, creation, expiry)
            })
            .map_err(db_error)?;
            println!("Set revocation for {key_text} to {} to {} ({change})", readable(creation), readable(expiry));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_messages() {
        assert!(parse_master_key(&format!("0x{}", "0a".repeat(32))).is_ok());
        assert_eq!(parse_master_key("abcd").unwrap_err(), "Expected 64 hex chars for master public key, received 4");
        assert_eq!(
            parse_master_key(&format!("0X{}", "0a".repeat(32))).unwrap_err(),
            "Expected 64 hex chars for master public key, received 66"
        );
        assert_eq!(
            parse_master_key(&format!("{}g", "0".repeat(63))).unwrap_err(),
            "Failed to parse hex as master public key: non-hexadecimal number found in fromhex() arg at position 63"
        );
    }

    #[test]
    fn list_line() {
        let p = PaymentRow {
            status: 2,
            plan: 3,
            payment_provider: 1,
            google_payment_token: "tok".into(),
            google_order_id: "GPA.1".into(),
            unredeemed_unix_ts_ms: 1796400000000,
            expiry_unix_ts_ms: 1796500000000,
            ..Default::default()
        };
        assert_eq!(
            payment_line(&p),
            "RevokeID=GooglePlayStore-tok-GPA.1; Status=Redeemed; Plan=12M; \
             Unredeemed=1796400000000 (26-12-04 16:00:00.000); Expiry=1796500000000 (26-12-05 19:46:40.000);"
        );
        let a = PaymentRow { payment_provider: 2, apple_original_tx_id: "2000".into(), plan: 7, status: 4, ..p };
        assert!(payment_line(&a).starts_with("RevokeID=iOSAppStore-2000; Status=Revoked; Plan=??;"));
    }
}

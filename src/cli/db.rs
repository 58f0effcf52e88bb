//! `db info|print`: the banner's database lines, and every table as a grid.

use clap::Subcommand;
use pro_engine::engine::DbCounts;
use pro_engine::store::sqlite;
use pro_engine::store::{StoreResult, StoreTx};

use super::{Access, CliError, CliResult, Global, config_and_db, store_error_text};
use crate::config::DbLocation;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The database lines of the startup banner (size, counts, generation, backend key).
    Info,
    /// Print every table.
    Print,
}

/// 1024-based size with two decimals, as the banner shows it.
pub fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2} {}", units[i])
}

/// The five database lines of the banner.
pub fn info_lines(display: &str, size: Option<u64>, c: &DbCounts, backend_pubkey: &[u8; 32]) -> String {
    let size = size.map(|s| format!(" ({})", human_size(s))).unwrap_or_default();
    format!(
        "  DB:                               {display}{size}\n\
         \x20 Users/Revocs/Payments/Unredeemed: {}/{}/{}/{}\n\
         \x20 U.Errors/Google/Apple Notifs.:    {}/{}/{}\n\
         \x20 Gen Index:                        {}\n\
         \x20 Backend Key:                      {}",
        c.users,
        c.revocations,
        c.payments,
        c.unredeemed,
        c.user_errors,
        c.google_notifications,
        c.apple_notifications,
        c.gen_index,
        hex::encode(backend_pubkey)
    )
}

fn counts(tx: &mut dyn StoreTx) -> StoreResult<(DbCounts, [u8; 32])> {
    let c = pro_engine::engine::db_counts(tx)?;
    let public = ed25519_dalek::SigningKey::from_bytes(&tx.runtime()?.backend_key).verifying_key().to_bytes();
    Ok((c, public))
}

pub fn run(global: &Global, command: Command) -> CliResult {
    match command {
        Command::Info => {
            // Upstream words database failures of this command differently; configuration
            // problems keep their own wording.
            let (cfg, mut db) = config_and_db(global, Access::Read).map_err(|e| match e {
                CliError::Fail(m) => match m.strip_prefix("Database error: ") {
                    Some(db_problem) => CliError::Fail(format!("Failed to get DB info: {db_problem}")),
                    None => CliError::Fail(m),
                },
                other => other,
            })?;
            let (c, public) = sqlite::read(&mut db.conn, counts)
                .map_err(|e| CliError::fail(format!("Failed to get DB info: {}", store_error_text(&e))))?;
            let size = match &cfg.db {
                DbLocation::SqliteFile { path, uri: false } => std::fs::metadata(path).ok().map(|m| m.len()),
                _ => None,
            };
            println!("{}", info_lines(&cfg.db_display, size, &c, &public));
        }
        Command::Print => {
            let (_, db) = config_and_db(global, Access::Read)?;
            let tables = sqlite::dump_tables(&db.conn)
                .map_err(|e| CliError::fail(format!("Database error: {}", store_error_text(&e))))?;
            let mut out = String::new();
            for t in &tables {
                out.push_str(&crate::tables::render_table(t));
            }
            super::emit(&out);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banner_lines() {
        let c = DbCounts {
            users: 1,
            revocations: 2,
            payments: 3,
            unredeemed: 4,
            user_errors: 5,
            google_notifications: 6,
            apple_notifications: 7,
            gen_index: 8,
        };
        let text = info_lines("sqlite:////var/lib/session-pro/pro.db", Some(4096), &c, &[0xab; 32]);
        let want = format!(
            "  DB:                               sqlite:////var/lib/session-pro/pro.db (4.00 kB)
  Users/Revocs/Payments/Unredeemed: 1/2/3/4
  U.Errors/Google/Apple Notifs.:    5/6/7
  Gen Index:                        8
  Backend Key:                      {}",
            "ab".repeat(32)
        );
        assert_eq!(text, want);
        assert_eq!(human_size(10), "10.00 B");
        assert_eq!(human_size(5 * 1024 * 1024 + 1), "5.00 MB");
    }
}

//! `user-error set|delete`: the flag behind "there is a problem with your payment".

use clap::Subcommand;
use pro_engine::domain::types::PaymentProvider;
use pro_engine::store::StoreTx;
use pro_engine::store::sqlite;

use super::{Access, CliError, CliResult, Global, config_and_db, db_error, now_ms, split_items};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set (true) or clear (false) user errors.
    Set {
        /// `<payment_provider>:<payment_id>=<true|false>[,…]` (provider 1 = Google, 2 = Apple).
        items: String,
    },
    /// Delete user errors.
    Delete {
        /// `<payment_provider>:<payment_id>[,…]`.
        items: String,
    },
}

/// One parsed item: the provider, the payment id and, for `set`, the flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub provider: PaymentProvider,
    pub payment_id: String,
    pub flag: bool,
}

fn parse_provider(p: &str, item: &str) -> Result<PaymentProvider, String> {
    p.trim()
        .parse::<i64>()
        .ok()
        .and_then(PaymentProvider::from_i64)
        .ok_or_else(|| format!("Failed to parse payment provider ({p}) for item {item}"))
}

/// Parses `set`'s argument.
pub fn parse_set(arg: &str) -> Result<Vec<Item>, String> {
    split_items(arg)
        .into_iter()
        .map(|item| {
            let invalid = || {
                format!(
                    "Invalid format for user error: '{item}'. Expected '<payment_provider>:<payment_id>=[true|false]'."
                )
            };
            let (p, rest) = item.split_once(':').ok_or_else(invalid)?;
            let (id, flag) = rest.split_once('=').ok_or_else(invalid)?;
            let provider = parse_provider(p, item)?;
            let flag = match flag.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(format!("Failed to parse set flag ({flag}) for item {item}")),
            };
            // Only store payments can carry a user error (upstream asserts here).
            if !matches!(provider, PaymentProvider::Google | PaymentProvider::Apple) {
                return Err(format!(
                    "User errors can only be set for Google (1) or Apple (2) payments, received provider ({p}) for item {item}"
                ));
            }
            Ok(Item { provider, payment_id: id.to_string(), flag })
        })
        .collect()
}

/// Parses `delete`'s argument.
pub fn parse_delete(arg: &str) -> Result<Vec<Item>, String> {
    split_items(arg)
        .into_iter()
        .map(|item| {
            let (p, id) = item.split_once(':').ok_or_else(|| {
                format!("Invalid format for payment ID: '{item}'. Expected '<payment_provider>:<payment_id>'.")
            })?;
            Ok(Item { provider: parse_provider(p, item)?, payment_id: id.to_string(), flag: false })
        })
        .collect()
}

fn title_case(b: bool) -> &'static str {
    if b { "True" } else { "False" }
}

/// What happened to one item, as the line suffix shows it; `true` when it counts as done.
fn apply(
    tx: &mut dyn StoreTx,
    item: &Item,
    set: bool,
    dry_run: bool,
    now: i64,
) -> Result<(&'static str, bool), CliError> {
    let (p, id) = (item.provider, item.payment_id.as_str());
    let exists = |tx: &mut dyn StoreTx| tx.has_user_error(p, id).map_err(db_error);
    let adding = set && item.flag;
    Ok(match (adding, dry_run) {
        (true, false) => match tx.add_user_error(p, id, now).map_err(db_error)? {
            true => (" (added)", true),
            false => (" (skipped - already exists)", false),
        },
        (false, false) => match tx.delete_user_error(p, id).map_err(db_error)? {
            true => (" (deleted)", true),
            false => (" (skipped - not found)", false),
        },
        (true, true) if exists(tx)? => (" (skipped - already exists)", false),
        (false, true) if !exists(tx)? => (" (skipped - not found)", false),
        (_, true) => (" (dry-run)", true),
    })
}

pub fn run(global: &Global, command: Command) -> CliResult {
    let set = matches!(command, Command::Set { .. });
    let (Command::Set { items: arg } | Command::Delete { items: arg }) = command;
    // The configuration is checked before the arguments, as upstream does.
    let (_, mut db) = config_and_db(global, Access::for_dry_run(global))?;
    let parsed = if set { parse_set(&arg) } else { parse_delete(&arg) }
        .map_err(|e| CliError::fail(format!("Failed to parse arguments:\n  {e}")))?;
    if parsed.is_empty() {
        println!("No items to process");
        return Ok(());
    }
    let now = now_ms();
    let dry_run = global.dry_run;
    let run_all = |tx: &mut dyn StoreTx| -> Result<(usize, Vec<String>), CliError> {
        let mut done = 0;
        let mut lines = Vec::new();
        for (i, item) in parsed.iter().enumerate() {
            let (suffix, counted) = apply(tx, item, set, dry_run, now)?;
            done += usize::from(counted);
            let flag = if set { format!(" = {}", title_case(item.flag)) } else { String::new() };
            lines.push(format!("  {i:02} {}:{}{flag}{suffix}", item.provider.as_i64(), item.payment_id));
        }
        Ok((done, lines))
    };
    let (done, lines) = if dry_run {
        sqlite::read(&mut db.conn, |tx| Ok(run_all(tx))).map_err(db_error)??
    } else {
        sqlite::write(&mut db.conn, run_all)?
    };
    let verb = if set { "Set" } else { "Deleted" };
    println!("{verb} {done}/{} user errors", parsed.len());
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_set() {
        let items = parse_set(" 1:56c2c60dbca9f14d=true, 2:DEV.apple_orig=TRUE ,1:nonexistent=False").unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[0],
            Item { provider: PaymentProvider::Google, payment_id: "56c2c60dbca9f14d".into(), flag: true }
        );
        assert!(items[1].flag && !items[2].flag);
        assert_eq!(
            parse_set("1abc=true").unwrap_err(),
            "Invalid format for user error: '1abc=true'. Expected '<payment_provider>:<payment_id>=[true|false]'."
        );
        assert_eq!(parse_set("1:abc").unwrap_err().split('\'').nth(1), Some("1:abc"));
        assert_eq!(parse_set("x:abc=true").unwrap_err(), "Failed to parse payment provider (x) for item x:abc=true");
        assert_eq!(parse_set("9:abc=true").unwrap_err(), "Failed to parse payment provider (9) for item 9:abc=true");
        assert_eq!(parse_set("1:abc=yes").unwrap_err(), "Failed to parse set flag (yes) for item 1:abc=yes");
        assert!(parse_set("3:abc=true").unwrap_err().contains("only be set for Google (1) or Apple (2)"));
        // Only the first ':' and the first '=' split.
        let odd = parse_set("2:a:b=c=true");
        assert!(odd.is_err(), "the flag is 'c=true'");
        assert!(parse_set("").unwrap().is_empty());
    }

    #[test]
    fn parsing_delete() {
        let items = parse_delete("0:x, 3:y,1:a:b").unwrap();
        assert_eq!(items[0].provider, PaymentProvider::Nil);
        assert_eq!(items[1].provider, PaymentProvider::Rangeproof);
        assert_eq!(items[2].payment_id, "a:b");
        assert_eq!(
            parse_delete("abc").unwrap_err(),
            "Invalid format for payment ID: 'abc'. Expected '<payment_provider>:<payment_id>'."
        );
        assert_eq!(parse_delete("5:abc").unwrap_err(), "Failed to parse payment provider (5) for item 5:abc");
    }
}

//! `google-notification handle|delete|list`: stored Google Play notifications that could not
//! be processed, for an operator to resolve by hand.

use clap::Subcommand;
use pro_engine::store::StoreTx;
use pro_engine::store::sqlite;

use super::{Access, CliError, CliResult, Global, config_and_db, db_error, readable, split_items};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Mark notifications handled (their payload is dropped).
    Handle {
        /// `<message_id>[,…]`
        message_ids: String,
    },
    /// Delete notifications.
    Delete {
        /// `<message_id>[,…]`
        message_ids: String,
    },
    /// List the unhandled notifications.
    List,
}

/// Parses `<id>[,…]` into integers.
pub fn parse_ids(arg: &str) -> Result<Vec<i64>, String> {
    split_items(arg)
        .into_iter()
        .map(|s| s.parse::<i64>().map_err(|_| format!("Failed to parse message_id as integer ({s})")))
        .collect()
}

pub fn run(global: &Global, command: Command) -> CliResult {
    let (arg, handle) = match command {
        Command::List => return list(global),
        Command::Handle { message_ids } => (message_ids, true),
        Command::Delete { message_ids } => (message_ids, false),
    };
    let (_, mut db) = config_and_db(global, Access::for_dry_run(global))?;
    let ids = parse_ids(&arg).map_err(CliError::Fail)?;
    if ids.is_empty() {
        println!("No message IDs to process");
        return Ok(());
    }
    let mut done = 0;
    let mut lines = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        // One transaction per message, as upstream does: each id stands on its own.
        let found = if global.dry_run {
            sqlite::read(&mut db.conn, |tx| tx.google_notification_handled(id)).map_err(db_error)?.is_some()
        } else {
            sqlite::write(&mut db.conn, |tx: &mut dyn StoreTx| {
                if handle { tx.mark_google_notification_handled(id) } else { tx.delete_google_notification(id) }
            })
            .map_err(db_error)?
        };
        let suffix = match (found, global.dry_run) {
            (false, _) => " (skipped - not found)",
            (true, true) => " (dry-run)",
            (true, false) => "",
        };
        done += usize::from(found);
        lines.push(format!("  {i:02} {id} = {}{suffix}", if handle { "Handled" } else { "Delete" }));
    }
    if handle {
        println!("Marked {done}/{} google notifications as handled", ids.len());
    } else {
        println!("Deleted {done}/{} google notifications", ids.len());
    }
    for line in lines {
        println!("{line}");
    }
    Ok(())
}

fn list(global: &Global) -> CliResult {
    let (_, mut db) = config_and_db(global, Access::Read)?;
    let rows = sqlite::read(&mut db.conn, |tx| tx.unhandled_google_notifications()).map_err(db_error)?;
    if rows.is_empty() {
        println!("No unhandled google notifications");
        return Ok(());
    }
    println!("Found {} unhandled google notifications:", rows.len());
    for (i, (id, _, expiry)) in rows.iter().enumerate() {
        println!("  {i:02} message_id={id}, expiry={}", readable(*expiry));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(parse_ids("1, 22 ,333").unwrap(), [1, 22, 333]);
        assert_eq!(parse_ids("1,x").unwrap_err(), "Failed to parse message_id as integer (x)");
        assert!(parse_ids(" ").unwrap().is_empty());
    }
}

//! The admin CLI: subcommands of the same binary, mirroring upstream's `cli.py` (names,
//! arguments, texts and exit codes), with its bugs fixed.
//!
//! Database commands read `--config` (or `SESH_PRO_BACKEND_INI_PATH`) and open the database the
//! server uses, without creating or migrating it. Writes use the store's transactions (BEGIN
//! IMMEDIATE with a busy timeout), so they are safe while the server runs. `--dry-run` opens
//! the database read-only.

pub mod db;
pub mod google_notification;
pub mod report;
pub mod revoke;
pub mod server;
pub mod tour;
pub mod user_error;
pub mod verify_proof;
pub mod voucher;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use pro_engine::Clock;
use pro_engine::store::StoreError;
use pro_engine::store::sqlite::{self, SqliteDatabase, SqliteTarget};

use crate::config::{self, Config, DbLocation, env_var};

/// Options given before the command.
#[derive(Debug, Clone, Default)]
pub struct Global {
    pub config: Option<PathBuf>,
    pub dry_run: bool,
}

/// The admin commands (everything but `serve`).
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Set or delete user errors (the "problem with your payment" flag).
    UserError {
        #[command(subcommand)]
        command: Option<user_error::Command>,
    },
    /// Inspect and resolve stored Google Play notifications.
    GoogleNotification {
        #[command(subcommand)]
        command: Option<google_notification::Command>,
    },
    /// Inspect and change the revocation of a user's current generation.
    Revoke {
        #[command(subcommand)]
        command: Option<revoke::Command>,
    },
    /// Grant Pro with a Rangeproof payment, redeemed at once for a master key.
    Voucher(voucher::Args),
    /// Payment reports.
    Report {
        #[command(subcommand)]
        command: Option<report::Command>,
    },
    /// Database information and dumps.
    Db {
        #[command(subcommand)]
        command: Option<db::Command>,
    },
    /// Sign and send requests to a running server.
    Server {
        #[command(subcommand)]
        command: Option<server::Command>,
    },
    /// Check a Pro proof offline, as a receiving client does.
    VerifyProof(verify_proof::Args),
}

/// How a command failed: the message is printed as `ERROR: <message>` on stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliError {
    /// Exit status 1.
    Fail(String),
    /// A missing subcommand: its help is printed and the exit status is 1.
    MissingSubcommand(&'static str),
}

impl CliError {
    pub fn fail(msg: impl Into<String>) -> Self {
        Self::Fail(msg.into())
    }
    fn database(e: StoreError) -> Self {
        Self::Fail(format!("Database error: {}", store_error_text(&e)))
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        Self::database(e)
    }
}

/// The text of a store error without the wrapper's own prefix.
pub fn store_error_text(e: &StoreError) -> String {
    match e {
        StoreError::Db(m) | StoreError::Integrity(m) => m.clone(),
        StoreError::Busy => "the database is busy (locked by another writer), try again".into(),
    }
}

pub type CliResult = Result<(), CliError>;

/// Runs an admin command and returns the process exit status.
pub fn run(global: Global, command: AdminCommand) -> ExitCode {
    let outcome = match command {
        AdminCommand::UserError { command } => {
            command.ok_or(CliError::MissingSubcommand("user-error")).and_then(|c| user_error::run(&global, c))
        }
        AdminCommand::GoogleNotification { command } => command
            .ok_or(CliError::MissingSubcommand("google-notification"))
            .and_then(|c| google_notification::run(&global, c)),
        AdminCommand::Revoke { command } => {
            command.ok_or(CliError::MissingSubcommand("revoke")).and_then(|c| revoke::run(&global, c))
        }
        AdminCommand::Voucher(args) => voucher::run(&global, args),
        AdminCommand::Report { command } => {
            command.ok_or(CliError::MissingSubcommand("report")).and_then(|c| report::run(&global, c))
        }
        AdminCommand::Db { command } => {
            command.ok_or(CliError::MissingSubcommand("db")).and_then(|c| db::run(&global, c))
        }
        AdminCommand::Server { command } => {
            command.ok_or(CliError::MissingSubcommand("server")).and_then(|c| server::run(&global, c))
        }
        AdminCommand::VerifyProof(args) => verify_proof::run(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Fail(msg)) => {
            eprintln!("ERROR: {msg}");
            ExitCode::FAILURE
        }
        Err(CliError::MissingSubcommand(name)) => {
            print_subcommand_help(name);
            ExitCode::FAILURE
        }
    }
}

fn print_subcommand_help(name: &str) {
    use clap::{CommandFactory, Parser};
    /// A stand-in parser to reach the help of one command group.
    #[derive(Parser)]
    #[command(name = "session-pro-backend")]
    struct Helper {
        #[command(subcommand)]
        command: AdminCommand,
    }
    let mut cmd = Helper::command();
    cmd.build();
    if let Some(sub) = cmd.find_subcommand_mut(name) {
        let _ = sub.print_help();
    }
}

/// Writes a (possibly long) text to stdout; a reader that went away (`| head`) is not an error.
pub fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> i64 {
    pro_engine::SystemClock.now_ms()
}

/// Loads the configuration a database command needs: `--config`, else
/// `SESH_PRO_BACKEND_INI_PATH`, then the `SESH_PRO_BACKEND_*` overrides.
pub fn load_config(global: &Global) -> Result<Config, CliError> {
    let env: HashMap<String, String> = std::env::vars().collect();
    let path = global
        .config
        .clone()
        .or_else(|| env.get(env_var::INI_PATH).filter(|p| !p.is_empty()).map(PathBuf::from))
        .ok_or_else(|| CliError::fail("--config is required for this command"))?;
    if std::fs::File::open(&path).is_err() {
        return Err(CliError::fail(format!(
            "Failed to load config:\n  Config file \"{}\" does not exist or is not readable",
            path.display()
        )));
    }
    let cfg = config::load_with_ini(Some(&path), &env).map_err(|errors| {
        let lines: Vec<String> = errors
            .iter()
            .map(|e| {
                if e.ends_with("has no [base] section") {
                    format!("  Config file \"{}\" is missing [base] section", path.display())
                } else {
                    format!("  Failed to parse config file: {e}")
                }
            })
            .collect();
        CliError::fail(format!("Failed to load config:\n{}", lines.join("\n")))
    })?;
    // The server falls back to ./backend.db with a warning; an admin command must not guess.
    if cfg.warnings.iter().any(|w| w.starts_with("No database configured")) {
        return Err(CliError::fail("No database URL configured in config file"));
    }
    Ok(cfg)
}

/// How a command uses the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A read-only connection: reports, listings and every `--dry-run`.
    Read,
    Write,
}

impl Access {
    pub fn for_dry_run(global: &Global) -> Self {
        if global.dry_run { Self::Read } else { Self::Write }
    }
}

fn sqlite_target(cfg: &Config) -> Result<SqliteTarget, CliError> {
    match &cfg.db {
        DbLocation::SqliteFile { path, uri } => {
            Ok(SqliteTarget { path: path.to_string_lossy().into_owned(), uri: *uri })
        }
        DbLocation::SqliteMemory => {
            Err(CliError::fail("Database error: an in-memory database cannot be shared with the admin CLI"))
        }
        DbLocation::Postgres { .. } => {
            Err(CliError::fail("Database error: PostgreSQL databases are not supported by this build yet"))
        }
    }
}

/// Opens the configured database, which must already exist with the current schema.
pub fn open_db(cfg: &Config, access: Access) -> Result<SqliteDatabase, CliError> {
    let target = sqlite_target(cfg)?;
    if !target.uri && !Path::new(&target.path).is_file() {
        return Err(CliError::fail(format!(
            "Database error: the database file \"{}\" does not exist (start the server once to create it)",
            target.path
        )));
    }
    let conn = match access {
        Access::Read => sqlite::open_reader(&target),
        Access::Write => sqlite::open_writer(&target),
    }
    .map_err(CliError::database)?;
    sqlite::check_schema(&conn).map_err(CliError::database)?;
    Ok(SqliteDatabase { conn })
}

/// Loads the configuration and opens the database in one step.
pub fn config_and_db(global: &Global, access: Access) -> Result<(Config, SqliteDatabase), CliError> {
    let cfg = load_config(global)?;
    let db = open_db(&cfg, access)?;
    Ok((cfg, db))
}

/// Maps a store error of a transaction to the CLI's message.
pub fn db_error(e: StoreError) -> CliError {
    CliError::database(e)
}

/// A 64-hex public key, optionally prefixed with `0x`.
pub fn parse_hex_key(s: &str) -> Result<[u8; 32], String> {
    let hex_part = s.strip_prefix("0x").unwrap_or(s);
    let n = hex_part.chars().count();
    if n != 64 {
        return Err(format!("Expected 64 hex chars, received {n}"));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// `<ms> (<yy-mm-dd HH:MM:SS.mmm>)`, how upstream's CLI shows a timestamp.
pub fn readable(ms: i64) -> String {
    format!("{ms} ({})", pro_engine::domain::time::format_readable(ms))
}

/// Splits a comma-separated argument into trimmed, non-empty items.
pub fn split_items(arg: &str) -> Vec<&str> {
    arg.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_items() {
        assert_eq!(parse_hex_key(&format!("0x{}", "ab".repeat(32))).unwrap(), [0xab; 32]);
        assert_eq!(parse_hex_key("abc").unwrap_err(), "Expected 64 hex chars, received 3");
        assert!(parse_hex_key(&format!("0X{}", "ab".repeat(32))).is_err());
        assert!(parse_hex_key(&"zz".repeat(32)).is_err());
        assert_eq!(split_items(" a, b ,,c "), ["a", "b", "c"]);
        assert!(split_items("").is_empty());
        assert_eq!(readable(0), "0 (70-01-01 00:00:00.000)");
    }
}

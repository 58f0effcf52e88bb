//! `session-pro-backend`: runs the daemon (default) with configuration from the INI named by
//! `SESH_PRO_BACKEND_INI_PATH` and `SESH_PRO_BACKEND_*` variables, or an admin command.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use session_pro_backend::{app, cli, config, telemetry};
use tracing::error;

#[derive(Parser)]
#[command(name = "session-pro-backend", version, about = "Session Pro backend daemon and admin commands")]
struct Cli {
    /// INI file (default: SESH_PRO_BACKEND_INI_PATH); give it before the command.
    #[arg(long, value_name = "INI")]
    config: Option<PathBuf>,
    /// Show what an admin command would do without changing anything.
    #[arg(long)]
    dry_run: bool,
    /// Print the detailed help.
    #[arg(long, action = clap::ArgAction::HelpLong)]
    help_full: Option<bool>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    #[command(flatten)]
    Admin(cli::AdminCommand),
}

fn main() -> ExitCode {
    let args = Cli::parse();
    telemetry::init();
    let global = cli::Global { config: args.config, dry_run: args.dry_run };
    match args.command.unwrap_or(Command::Serve) {
        Command::Serve if global.dry_run => {
            eprintln!("ERROR: --dry-run applies to the admin commands only, not to serve");
            ExitCode::from(2)
        }
        Command::Serve => serve(global.config),
        Command::Admin(command) => cli::run(global, command),
    }
}

fn serve(ini: Option<PathBuf>) -> ExitCode {
    let env: HashMap<String, String> = std::env::vars().collect();
    let loaded = match &ini {
        Some(path) => config::load_with_ini(Some(path), &env),
        None => config::load(&env),
    };
    let cfg = match loaded {
        Ok(c) => c,
        Err(errors) => {
            error!("Failed to startup, invalid configuration options:\n  {}", errors.join("\n  "));
            return ExitCode::FAILURE;
        }
    };
    let system = actix_web::rt::System::new();
    let code = system.block_on(async move {
        match app::run(cfg, Arc::new(pro_engine::SystemClock)).await {
            Ok(()) => 0,
            Err(e) => {
                error!("{e}");
                1
            }
        }
    });
    // Everything that matters is already committed and flushed; leave without tearing the
    // actor system down outside its runtime.
    std::process::exit(code)
}

//! `session-pro-backend`: runs the daemon (default) with configuration from the INI named by
//! `SESH_PRO_BACKEND_INI_PATH` and `SESH_PRO_BACKEND_*` variables.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use session_pro_backend::{app, config, telemetry};
use tracing::error;

#[derive(Parser)]
#[command(name = "session-pro-backend", version, about = "Session Pro backend daemon")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(),
    }
}

fn serve() -> ExitCode {
    let env: HashMap<String, String> = std::env::vars().collect();
    let cfg = match config::load(&env) {
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

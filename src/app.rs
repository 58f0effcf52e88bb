//! Start-up of the daemon: check the configuration against what is built, open the database,
//! start the engine's actors and the HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use pro_engine::apple::api::{PRODUCTION_BASE_URL, SANDBOX_BASE_URL};
use pro_engine::apple::verify::Environment;
use pro_engine::apple_receiver::{self, AppleSettings};
use pro_engine::clock::SharedClock;
use pro_engine::db_writer::{DeleteUserError, Write};
use pro_engine::domain::types::PaymentProvider;
use pro_engine::engine::{self, Engine, EngineConfig};
use pro_engine::handle::HandleLimits;
use pro_engine::store::sqlite::{self, SqliteTarget};
use tracing::{info, warn};

use crate::config::{AppleConfig, Config, DbLocation};
use crate::http::{self, AppState};

/// Knobs the daemon sets from the machine and tests may override.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub http_workers: usize,
    /// Run the daily pruner (tests drive the job themselves).
    pub pruner: bool,
}

impl Default for StartOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self { http_workers: cores, pruner: true }
    }
}

/// Options whose feature is not built yet; starting with them would silently do nothing.
pub fn unsupported(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if cfg.with_platform_google {
        out.push("with_platform_google: Google Play notifications are not supported by this build yet".into());
    }
    if !cfg.webhooks.is_empty() {
        out.push("session_webhook: webhook logging is not supported by this build yet".into());
    }
    if cfg.log_path.is_some() {
        out.push("log_path: logging to files is not supported by this build yet (logs go to stderr)".into());
    }
    if let DbLocation::Postgres { .. } = cfg.db {
        out.push("db_url: PostgreSQL databases are not supported by this build yet".into());
    }
    out
}

fn sqlite_target(cfg: &Config) -> Result<SqliteTarget, String> {
    match &cfg.db {
        DbLocation::SqliteFile { path, uri } => {
            Ok(SqliteTarget { path: path.to_string_lossy().into_owned(), uri: *uri })
        }
        DbLocation::SqliteMemory => Ok(SqliteTarget::memory()),
        DbLocation::Postgres { .. } => Err("PostgreSQL databases are not supported by this build yet".into()),
    }
}

/// Runs the daemon until it is asked to stop.
pub async fn run(cfg: Config, clock: SharedClock) -> Result<(), String> {
    if cfg.print_tables {
        return print_tables(&cfg);
    }
    let server = start(&cfg, clock, StartOptions::default()).await?;
    server.server.await.map_err(|e| format!("HTTP server failed: {e}"))?;
    info!("Session Pro Backend stopped");
    Ok(())
}

/// Prints every table to stdout (the `print_tables` option) without starting anything.
pub fn print_tables(cfg: &Config) -> Result<(), String> {
    let target = sqlite_target(cfg)?;
    let (conn, _, _) = engine::open_and_bootstrap(&target, cfg.dev)?;
    let tables = sqlite::dump_tables(&conn).map_err(|e| format!("Failed to read the tables: {e}"))?;
    let mut out = String::new();
    for t in &tables {
        out.push_str(&crate::tables::render_table(t));
    }
    print!("{out}");
    Ok(())
}

/// A started server: where it listens and the handles tests and the daemon need.
pub struct Server {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    pub state: web::Data<AppState>,
    pub server: actix_web::dev::Server,
}

/// Starts the engine and binds the HTTP server (must run inside an actix System). The
/// returned server future must be awaited or spawned for requests to be served.
pub async fn start(cfg: &Config, clock: SharedClock, opts: StartOptions) -> Result<Server, String> {
    let problems = unsupported(cfg);
    if !problems.is_empty() {
        return Err(format!("Failed to startup, invalid configuration options:\n  {}", problems.join("\n  ")));
    }
    for w in &cfg.warnings {
        warn!("{w}");
    }
    let target = sqlite_target(cfg)?;
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let engine = engine::start(EngineConfig {
        db: target.clone(),
        dev: cfg.dev,
        readers: cores.max(2),
        signers: cores,
        limits: HandleLimits::default(),
        clock: clock.clone(),
        pruner: opts.pruner,
    })?;
    for m in &engine.bootstrap.migrations {
        info!("{m}");
    }
    delete_user_errors(cfg, &engine).await;
    let apple = match cfg.apple.as_ref().filter(|_| cfg.with_platform_apple) {
        Some(a) => Some(apple_receiver::start(
            apple_settings(a)?,
            engine.writer.clone(),
            engine.registry.clone(),
            clock.clone(),
            HandleLimits::default(),
        )?),
        None => None,
    };

    let state = web::Data::new(AppState {
        writer: engine.writer.clone(),
        reader: engine.reader.clone(),
        signer: engine.signer.clone(),
        registry: engine.registry.clone(),
        clock,
        dev: cfg.dev,
        unsafe_logging: cfg.unsafe_logging,
        backend_pubkey: engine.backend_pubkey,
        onion_pubkey: engine.onion_pubkey,
        gen_index_salt: engine.gen_index_salt,
        max_body_bytes: cfg.max_request_body_bytes,
        apple,
    });
    let app_state = state.clone();
    let http_server =
        HttpServer::new(move || App::new().app_data(app_state.clone()).default_service(web::to(http::entry)))
            .workers(opts.http_workers.max(1))
            .shutdown_timeout(5)
            .bind(&cfg.listen)
            .map_err(|e| format!("Failed to listen on {}: {e}", cfg.listen))?;
    let addr = http_server.addrs().first().copied().ok_or_else(|| format!("Failed to listen on {}", cfg.listen))?;
    let server = http_server.run();
    info!("{}", banner(cfg, &engine, &target, addr));
    Ok(Server { addr, handle: server.handle(), state, server })
}

/// Reads the Apple key and root certificates named by `[apple]`; an unreadable file stops start-up.
fn apple_settings(a: &AppleConfig) -> Result<AppleSettings, String> {
    let read = |p: &std::path::Path| {
        std::fs::read(p)
            .map_err(|e| format!("Platform Apple was enabled but we are unable to read the path: {}: {e}", p.display()))
    };
    let mut roots = Vec::new();
    for p in [&a.root_cert_path, &a.root_cert_ca_g2_path, &a.root_cert_ca_g3_path] {
        roots.push((p.display().to_string(), read(p)?));
    }
    let environment = if a.sandbox_env { Environment::Sandbox } else { Environment::Production };
    let default_url = if a.sandbox_env { SANDBOX_BASE_URL } else { PRODUCTION_BASE_URL };
    Ok(AppleSettings {
        roots,
        environment,
        bundle_id: a.bundle_id.clone(),
        app_apple_id: a.app_id,
        key_id: a.key_id.clone(),
        issuer_id: a.issuer_id.clone(),
        p8_key: read(&a.key_path)?,
        api_base_url: a.api_base_url.clone().unwrap_or_else(|| default_url.to_string()),
        catch_up: true,
    })
}

/// Deletes the user errors named by `delete_user_errors` and carries on.
async fn delete_user_errors(cfg: &Config, engine: &Engine) {
    if cfg.delete_user_errors.is_empty() {
        return;
    }
    let mut deleted = 0;
    let mut lines = Vec::new();
    for (i, (provider, id)) in cfg.delete_user_errors.iter().enumerate() {
        let provider = PaymentProvider::from_i64(i64::from(*provider)).unwrap_or(PaymentProvider::Nil);
        let cmd = DeleteUserError { provider, payment_id: id.clone() };
        let outcome = match engine.writer.send(Write(cmd)).await {
            Ok(Ok(true)) => {
                deleted += 1;
                "deleted".to_string()
            }
            Ok(Ok(false)) => "skipped".to_string(),
            Ok(Err(e)) => format!("failed: {e}"),
            Err(e) => format!("failed: {e}"),
        };
        lines.push(format!("  {i:02} {}:{id} ({outcome})", provider.as_i64()));
    }
    info!("Deleted {deleted}/{} user errors from the DB\n{}", cfg.delete_user_errors.len(), lines.join("\n"));
}

const DEV_BOX: &str = "######################################\n###                                ###\n###        Dev Mode Enabled        ###\n###                                ###\n######################################\n";

fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{v:.2} {}", units[i])
}

fn banner(cfg: &Config, engine: &Engine, target: &SqliteTarget, addr: SocketAddr) -> String {
    let c = &engine.counts;
    let size = if target.is_memory() || target.uri {
        String::new()
    } else {
        std::fs::metadata(&target.path).map(|m| format!(" ({})", human_size(m.len()))).unwrap_or_default()
    };
    let mut s = String::from("\n");
    if cfg.dev {
        s.push_str(DEV_BOX);
    }
    s.push_str("Session Pro Backend\n");
    s.push_str(&format!("  DB:                               {}{size}\n", cfg.db_display));
    s.push_str(&format!(
        "  Users/Revocs/Payments/Unredeemed: {}/{}/{}/{}\n",
        c.users, c.revocations, c.payments, c.unredeemed
    ));
    s.push_str(&format!(
        "  U.Errors/Google/Apple Notifs.:    {}/{}/{}\n",
        c.user_errors, c.google_notifications, c.apple_notifications
    ));
    s.push_str(&format!("  Gen Index:                        {}\n", c.gen_index));
    s.push_str(&format!("  Backend Key:                      {}\n", hex::encode(engine.backend_pubkey)));
    s.push_str("  Features:\n");
    if let Some(p) = &cfg.ini_path {
        s.push_str(&format!("    Config .INI file loaded: {}\n", p.display()));
    }
    s.push_str(&format!("    DB loaded from: {}\n", cfg.db_display));
    s.push_str("    Logging to disk disabled (no log_path specified in .INI file)\n");
    if cfg.unsafe_logging {
        s.push_str("    Unsafe logging enabled (this must NOT be used in production)\n");
    }
    if cfg.platform_testing_env {
        s.push_str("    Platform testing environment enabled (special behaviour for rounding timestamps to EOD)\n");
    }
    if let Some(a) = cfg.apple.as_ref().filter(|_| cfg.with_platform_apple) {
        let env = if a.sandbox_env { "Sandbox" } else { "Production" };
        s.push_str(&format!("    Platform: {env} Apple iOS App Store notification handling enabled\n"));
    }
    s.push_str(&format!("    Listening on: http://{addr}\n"));
    if cfg.dev {
        s.push_str(DEV_BOX);
    }
    s
}

/// Used by tests and tools that need the engine's shared pieces.
pub type SharedState = Arc<AppState>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(human_size(4096), "4.00 kB");
        assert_eq!(human_size(10), "10.00 B");
        assert_eq!(human_size(5 * 1024 * 1024 + 1), "5.00 MB");
    }
}

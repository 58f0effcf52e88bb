//! Start-up of the daemon: check the configuration against what is built, open the database,
//! start the engine's actors and the HTTP server.

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpServer, web};
use pro_engine::clock::SharedClock;
use pro_engine::db_writer::{DeleteUserError, Write};
use pro_engine::domain::types::PaymentProvider;
use pro_engine::engine::{self, DbTarget, Engine, EngineConfig};
use pro_engine::expiry_pruner::Maintenance;
use pro_engine::handle::HandleLimits;
use pro_engine::health::Registry;
use pro_engine::store::postgres::{self, PgDatabase, PgTarget};
use pro_engine::store::sqlite::{self, SqliteTarget};
use pro_engine::webhook_logger;
use tracing::{info, warn};

use crate::config::{Config, DbLocation};
use crate::http::{self, AppState};
use crate::telemetry::{self, RotatingFile};

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
    if cfg.with_platform_apple {
        out.push("with_platform_apple: Apple App Store notifications are not supported by this build yet".into());
    }
    if cfg.with_platform_google {
        out.push("with_platform_google: Google Play notifications are not supported by this build yet".into());
    }
    out
}

/// The backend and place the configuration names.
fn db_target(cfg: &Config) -> Result<DbTarget, String> {
    match &cfg.db {
        DbLocation::SqliteFile { path, uri } => {
            Ok(SqliteTarget { path: path.to_string_lossy().into_owned(), uri: *uri }.into())
        }
        DbLocation::SqliteMemory => Ok(SqliteTarget::memory().into()),
        DbLocation::Postgres { url } => PgTarget::parse(url)
            .map(DbTarget::from)
            .map_err(|e| format!("Failed to open/connect to DB at {}: {e}", cfg.db_display)),
    }
}

/// Runs the daemon until it is asked to stop.
pub async fn run(cfg: Config, clock: SharedClock) -> Result<(), String> {
    if cfg.print_tables {
        return print_tables(&cfg);
    }
    let server = start(&cfg, clock, StartOptions::default()).await?;
    let handle = server.handle.clone();
    actix_web::rt::spawn(async move {
        let first = next_signal().await;
        info!("{first} received: stopping (draining requests for at most {} s)", DRAIN_TIMEOUT_S);
        actix_web::rt::spawn(async {
            let second = next_signal().await;
            eprintln!("{second} received again: exiting immediately");
            std::process::exit(1);
        });
        handle.stop(true).await;
    });
    server.server.await.map_err(|e| format!("HTTP server failed: {e}"))?;
    // Requests are drained, so every write has been answered (and therefore committed).
    if let Some(hub) = telemetry::sinks().and_then(|s| s.webhooks())
        && !hub.flush(std::time::Duration::from_secs(2)).await
    {
        eprintln!("Some webhook messages could not be delivered before shutdown");
    }
    info!("Session Pro Backend stopped");
    Ok(())
}

/// How long in-flight requests may take to finish after a stop signal.
const DRAIN_TIMEOUT_S: u64 = 5;

/// Waits for SIGINT, SIGTERM or SIGQUIT and names it.
async fn next_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut quit)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::quit()))
    else {
        // Without signal handlers the server simply runs until killed.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
        _ = quit.recv() => "SIGQUIT",
    }
}

/// Prints every table to stdout (the `print_tables` option) without starting anything.
pub fn print_tables(cfg: &Config) -> Result<(), String> {
    let tables = match db_target(cfg)? {
        DbTarget::Sqlite(target) => {
            let (conn, _, _) = engine::open_and_bootstrap(&target, cfg.dev)?;
            sqlite::dump_tables(&conn).map_err(|e| format!("Failed to read the tables: {e}"))?
        }
        DbTarget::Postgres(target) => {
            engine::open_and_bootstrap_postgres(&target, cfg.dev)?;
            postgres::off_async(move || {
                let mut db = PgDatabase::open(std::sync::Arc::new(target))?;
                postgres::dump_tables(db.client()?)
            })?
            .map_err(|e| format!("Failed to read the tables: {e}"))?
        }
    };
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
    let target = db_target(cfg)?;
    // Claim the address before anything starts, so a busy port fails cleanly and early.
    let listener =
        std::net::TcpListener::bind(&cfg.listen).map_err(|e| format!("Failed to listen on {}: {e}", cfg.listen))?;
    let registry = Registry::new();
    let sinks = telemetry::sinks();
    if let (Some(path), Some(sinks)) = (&cfg.log_path, &sinks) {
        let file = RotatingFile::open(path, telemetry::LOG_MAX_BYTES, telemetry::LOG_BACKUPS)
            .map_err(|e| format!("Failed to open the log file {}: {e}", path.display()))?;
        sinks.set_file(file);
    }
    let webhooks: Vec<(String, String)> = cfg.webhooks.iter().map(|w| (w.name.clone(), w.url.clone())).collect();
    let hub = (!webhooks.is_empty()).then(|| webhook_logger::start(&webhooks, &registry));
    if let (Some(hub), Some(sinks)) = (&hub, &sinks) {
        sinks.set_webhooks(hub.clone());
    }
    // Logged once every sink is in place, so the webhooks hear about them too.
    for w in &cfg.warnings {
        warn!("{w}");
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Backups are of SQLite files only; a PostgreSQL database is backed up by its own tools.
    let backup_db = match &target {
        DbTarget::Sqlite(t) => (!t.is_memory() && !t.uri).then(|| t.clone()),
        DbTarget::Postgres(_) => None,
    };
    let maintenance =
        Maintenance { backup_db, db_display: cfg.db_display.clone(), notifier: hub.clone(), reports: None };
    let engine = engine::start(EngineConfig {
        db: target.clone(),
        dev: cfg.dev,
        // A PostgreSQL read mostly waits for round trips to the database server, so more
        // connections than cores keep the cores busy; SQLite reads run on the cores themselves.
        readers: match &target {
            DbTarget::Sqlite(_) => cores.max(2),
            DbTarget::Postgres(_) => (cores * 4).max(8),
        },
        signers: cores,
        limits: HandleLimits::default(),
        clock: clock.clone(),
        pruner: opts.pruner,
        maintenance,
        registry,
    })?;
    for m in &engine.bootstrap.migrations {
        info!("{m}");
    }
    delete_user_errors(cfg, &engine).await;

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
    });
    let app_state = state.clone();
    let http_server =
        HttpServer::new(move || App::new().app_data(app_state.clone()).default_service(web::to(http::entry)))
            .workers(opts.http_workers.max(1))
            .shutdown_timeout(DRAIN_TIMEOUT_S)
            .disable_signals()
            .listen(listener)
            .map_err(|e| format!("Failed to listen on {}: {e}", cfg.listen))?;
    let addr = http_server.addrs().first().copied().ok_or_else(|| format!("Failed to listen on {}", cfg.listen))?;
    let server = http_server.run();
    let banner = banner(cfg, &engine, &target, addr);
    info!("{banner}");
    if let Some(hub) = &hub {
        hub.text(pro_engine::Clock::now_ms(&pro_engine::SystemClock), &format!("Starting up instance: {banner}"));
    }
    Ok(Server { addr, handle: server.handle(), state, server })
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

fn banner(cfg: &Config, engine: &Engine, target: &DbTarget, addr: SocketAddr) -> String {
    let c = &engine.counts;
    let size = match target {
        DbTarget::Sqlite(t) if !t.is_memory() && !t.uri => {
            std::fs::metadata(&t.path).map(|m| format!(" ({})", human_size(m.len()))).unwrap_or_default()
        }
        _ => String::new(),
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
    match &cfg.log_path {
        Some(p) => s.push_str(&format!("    Logging to: {}\n", p.display())),
        None => s.push_str("    Logging to disk disabled (no log_path specified in .INI file)\n"),
    }
    if cfg.unsafe_logging {
        s.push_str("    Unsafe logging enabled (this must NOT be used in production)\n");
    }
    if cfg.platform_testing_env {
        s.push_str("    Platform testing environment enabled (special behaviour for rounding timestamps to EOD)\n");
    }
    for w in &cfg.webhooks {
        s.push_str(&format!("    Webhook Logger: Enabled (display name: {})\n", w.name));
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

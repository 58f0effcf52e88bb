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
use pro_engine::engine::{self, DbTarget, Engine, EngineConfig};
use pro_engine::expiry_pruner::Maintenance;
use pro_engine::google_subscriber::GoogleTuning;
use pro_engine::handle::HandleLimits;
use pro_engine::health::Registry;
use pro_engine::store::postgres::{self, PgDatabase, PgTarget};
use pro_engine::store::sqlite::{self, SqliteTarget};
use pro_engine::webhook_logger;
use tracing::{info, warn};

use crate::config::{AppleConfig, Config, DbLocation};
use crate::http::{self, AppState};
use crate::telemetry::{self, RotatingFile};

/// Knobs the daemon sets from the machine and tests may override.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub http_workers: usize,
    /// Run the daily pruner (tests drive the job themselves).
    pub pruner: bool,
    /// Pacing of the Google subscriber (tests shorten the pauses).
    pub google: GoogleTuning,
}

impl Default for StartOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self { http_workers: cores, pruner: true, google: GoogleTuning::default() }
    }
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
    let google = server.state.google.clone();
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
    let served = server.server.await.map_err(|e| format!("HTTP server failed: {e}"));
    // HTTP is drained, so every write has been answered (and therefore committed); the
    // Google subscriber finishes the batch in hand.
    if let Some(g) = google {
        g.stop(std::time::Duration::from_secs(30)).await;
    }
    if let Some(hub) = telemetry::sinks().and_then(|s| s.webhooks())
        && !hub.flush(std::time::Duration::from_secs(2)).await
    {
        eprintln!("Some webhook messages could not be delivered before shutdown");
    }
    served?;
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
    // In-memory databases cannot be read from another connection.
    let reports = (!matches!(&target, DbTarget::Sqlite(t) if t.is_memory())).then(|| {
        let t = target.clone();
        Arc::new(move |job_ts| daily_reports(&t, job_ts)) as pro_engine::expiry_pruner::ReportFn
    });
    let maintenance = Maintenance { backup_db, db_display: cfg.db_display.clone(), notifier: hub.clone(), reports };
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
    let google = if cfg.with_platform_google {
        Some(crate::google::start(cfg, &engine, clock.clone(), opts.google.clone())?)
    } else {
        None
    };
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
        google,
        apple,
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

/// The reports the daily job posts: daily (7 rows) always, weekly (4 rows) when the midnight
/// starts a Monday, monthly (3 rows) when it starts the 1st of a month (all UTC).
/// Runs on a blocking thread (never on an async one: the PostgreSQL client has its own runtime).
pub fn daily_reports(target: &DbTarget, job_ts: i64) -> Vec<String> {
    use pro_engine::domain::time::{DAY_MS, civil_from_days};
    use pro_engine::reports::{ReportKind, generate, render_human};
    let days = job_ts.div_euclid(DAY_MS);
    let monday = (days + 3).rem_euclid(7) == 0; // 1970-01-01 was a Thursday
    let first_of_month = civil_from_days(days).2 == 1;
    let mut wanted = vec![(ReportKind::Daily, 7)];
    if monday {
        wanted.push((ReportKind::Weekly, 4));
    }
    if first_of_month {
        wanted.push((ReportKind::Monthly, 3));
    }
    let render = |tx: &mut dyn pro_engine::store::StoreTx| -> pro_engine::store::StoreResult<Vec<String>> {
        wanted.iter().map(|(k, n)| generate(tx, *k, *n).map(|r| render_human(&r))).collect()
    };
    let made = match target {
        DbTarget::Sqlite(t) => sqlite::open_reader(t).and_then(|mut conn| sqlite::read(&mut conn, render)),
        DbTarget::Postgres(t) => {
            PgDatabase::open(Arc::new(t.clone())).and_then(|mut db| pro_engine::store::read_db(&mut db, render))
        }
    };
    match made {
        Ok(texts) => texts,
        Err(e) => {
            tracing::error!("Generating the daily reports failed: {e}");
            Vec::new()
        }
    }
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
            Ok(true) => {
                deleted += 1;
                "deleted".to_string()
            }
            Ok(false) => "skipped".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        lines.push(format!("  {i:02} {}:{id} ({outcome})", provider.as_i64()));
    }
    info!("Deleted {deleted}/{} user errors from the DB\n{}", cfg.delete_user_errors.len(), lines.join("\n"));
}

const DEV_BOX: &str = "######################################\n###                                ###\n###        Dev Mode Enabled        ###\n###                                ###\n######################################\n";

fn banner(cfg: &Config, engine: &Engine, target: &DbTarget, addr: SocketAddr) -> String {
    let size = match target {
        DbTarget::Sqlite(t) if !t.is_memory() && !t.uri => std::fs::metadata(&t.path).ok().map(|m| m.len()),
        _ => None,
    };
    let mut s = String::from("\n");
    if cfg.dev {
        s.push_str(DEV_BOX);
    }
    s.push_str("Session Pro Backend\n");
    s.push_str(&crate::cli::db::info_lines(&cfg.db_display, size, &engine.counts, &engine.backend_pubkey));
    s.push('\n');
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
    if cfg.with_platform_google {
        s.push_str("    Platform: Google Play Store notification handling enabled\n");
    }
    for w in &cfg.webhooks {
        s.push_str(&format!("    Webhook Logger: Enabled (display name: {})\n", w.name));
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

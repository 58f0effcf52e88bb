//! Starting the engine: open and bootstrap the database, then start every actor. Must run
//! inside an actix `System`.

use std::sync::{Arc, Mutex};

use actix::{Actor, Addr, SyncArbiter};

use crate::clock::SharedClock;
use crate::db_reader::{DbReader, ReaderHandle};
use crate::db_writer::{DbWriter, WriterHandle};
use crate::expiry_pruner::{ExpiryPruner, Maintenance, MaintenanceStats};
use crate::handle::{Handle, HandleLimits};
use crate::health::{ActorHealth, Registry};
use crate::proof_signer::{self, SignerHandle};
use crate::store::postgres::{self, PgDatabase, PgTarget};
use crate::store::sqlite::{self, BootstrapReport, SqliteDatabase, SqliteTarget};
use crate::store::{Database, StoreTx, read_db};

/// The backend seed upstream uses in developer mode (32 × 0xCD).
pub const DEV_BACKEND_SEED: [u8; 32] = [0xCD; 32];

/// Which database backend the engine runs on.
#[derive(Debug, Clone, PartialEq)]
pub enum DbTarget {
    /// The embedded default: an SQLite file (or memory).
    Sqlite(SqliteTarget),
    /// A PostgreSQL database, possibly shared with other servers.
    Postgres(PgTarget),
}

impl From<SqliteTarget> for DbTarget {
    fn from(t: SqliteTarget) -> Self {
        Self::Sqlite(t)
    }
}

impl From<PgTarget> for DbTarget {
    fn from(t: PgTarget) -> Self {
        Self::Postgres(t)
    }
}

#[derive(Clone)]
pub struct EngineConfig {
    pub db: DbTarget,
    pub dev: bool,
    pub readers: usize,
    pub signers: usize,
    pub limits: HandleLimits,
    pub clock: SharedClock,
    /// Start the daily pruner (tests may drive the job by hand instead).
    pub pruner: bool,
    /// What the daily job does besides pruning.
    pub maintenance: Maintenance,
    /// Where every actor's health is registered.
    pub registry: Arc<Registry>,
}

/// Counts shown in the startup banner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbCounts {
    pub users: i64,
    pub revocations: i64,
    pub payments: i64,
    pub unredeemed: i64,
    pub user_errors: i64,
    pub google_notifications: i64,
    pub apple_notifications: i64,
    pub gen_index: u64,
}

pub struct Engine {
    pub writer: WriterHandle,
    pub reader: ReaderHandle,
    pub signer: SignerHandle,
    pub pruner: Option<Addr<ExpiryPruner>>,
    pub registry: Arc<Registry>,
    pub backend_pubkey: [u8; 32],
    /// The X25519 key clients address onion requests to.
    pub onion_pubkey: [u8; 32],
    pub gen_index_salt: [u8; 16],
    pub bootstrap: BootstrapReport,
    pub counts: DbCounts,
}

/// Opens and bootstraps the database (creating a fresh key, or the dev key in dev mode) and
/// returns the connection and the runtime secrets. Used by the server and the admin CLI.
pub fn open_and_bootstrap(
    target: &SqliteTarget,
    dev: bool,
) -> Result<(rusqlite::Connection, BootstrapReport, crate::store::RuntimeRow), String> {
    let mut conn =
        sqlite::open_writer(target).map_err(|e| format!("Failed to open/connect to DB at {}: {e}", target.path))?;
    let new_key = if dev {
        DEV_BACKEND_SEED
    } else {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| format!("no randomness for a backend key: {e}"))?;
        k
    };
    let report = sqlite::bootstrap(&mut conn, new_key).map_err(|e| format!("Failed to bootstrap DB tables: {e}"))?;
    let runtime =
        sqlite::read(&mut conn, |tx| tx.runtime()).map_err(|e| format!("Failed to read the runtime row: {e}"))?;
    if dev && runtime.backend_key != DEV_BACKEND_SEED {
        return Err("Developer mode was enabled but the database holds a non-development backend key; \
                    refusing to start (dev mode must never run on a production database)"
            .into());
    }
    Ok((conn, report, runtime))
}

/// The table counts shown in the banner and by `db info`.
pub fn db_counts(tx: &mut dyn StoreTx) -> crate::store::StoreResult<DbCounts> {
    Ok(DbCounts {
        users: tx.count_rows("users")?,
        revocations: tx.count_rows("revocations")?,
        payments: tx.count_rows("payments")?,
        unredeemed: tx.count_unredeemed()?,
        user_errors: tx.count_rows("user_errors")?,
        google_notifications: tx.count_rows("google_notification_history")?,
        apple_notifications: tx.count_rows("apple_notification_uuid_history")?,
        gen_index: tx.runtime()?.gen_index,
    })
}

/// Makes a database connection for an actor's thread (None: every message fails cleanly).
type DbFactory = Box<dyn Fn() -> Option<Box<dyn Database>> + Send + Sync>;

/// What a backend hands to [`start`]: what bootstrap found, and how the writer and the readers
/// get their connections on their own threads.
struct Storage {
    bootstrap: BootstrapReport,
    runtime: crate::store::RuntimeRow,
    counts: DbCounts,
    writer: DbFactory,
    /// None: the database lives in memory and the writer answers reads too.
    readers: Option<DbFactory>,
}

pub fn start(cfg: EngineConfig) -> Result<Engine, String> {
    let registry = cfg.registry.clone();
    let writer_health = ActorHealth::new("db_writer");
    let n_readers = cfg.readers.max(1);
    let storage = match &cfg.db {
        DbTarget::Sqlite(target) => sqlite_storage(target, cfg.dev, n_readers, writer_health.clone())?,
        DbTarget::Postgres(target) => postgres_storage(target, cfg.dev, &registry)?,
    };
    let Storage { bootstrap, runtime, counts, writer: writer_factory, readers } = storage;

    let queued = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let queued_in = queued.clone();
    let (wh, clock, dev) = (writer_health.clone(), cfg.clock.clone(), cfg.dev);
    let writer_addr = SyncArbiter::start(1, move || {
        DbWriter::new(writer_factory(), wh.clone(), clock.clone(), dev, queued_in.clone())
    });
    let writer = WriterHandle::new(Handle::new(writer_addr, writer_health.clone(), cfg.limits), queued);
    registry.add_actor(writer_health);

    let reader = match readers {
        None => ReaderHandle::Writer(writer.handle().clone()),
        Some(factory) => {
            let health = ActorHealth::new("db_reader");
            let (h, clock) = (health.clone(), cfg.clock.clone());
            let addr = SyncArbiter::start(n_readers, move || DbReader::new(factory(), h.clone(), clock.clone()));
            registry.add_actor(health.clone());
            ReaderHandle::Pool(Handle::new(addr, health, cfg.limits))
        }
    };

    let (signer, public) = proof_signer::start(runtime.backend_key, cfg.signers, cfg.clock.clone(), cfg.limits);
    registry.add_actor(signer.health().clone());

    let pruner = cfg.pruner.then(|| {
        let health = ActorHealth::new("expiry_pruner");
        registry.add_actor(health.clone());
        let stats = Arc::new(MaintenanceStats::default());
        stats.register(&registry);
        let addr = ExpiryPruner::new(writer.clone(), cfg.clock.clone(), health.clone(), cfg.maintenance.clone(), stats)
            .start();
        let probe = addr.clone();
        health.set_liveness(move || probe.connected());
        addr
    });

    Ok(Engine {
        writer,
        reader,
        signer,
        pruner,
        registry,
        backend_pubkey: public.ed25519,
        onion_pubkey: public.x25519,
        gen_index_salt: runtime.gen_index_salt,
        bootstrap,
        counts,
    })
}

/// SQLite: the writer's connection is opened (and the database bootstrapped) here, then moved
/// into the writer's thread; readers get read-only connections opened up front.
fn sqlite_storage(
    target: &SqliteTarget,
    dev: bool,
    n_readers: usize,
    writer_health: Arc<ActorHealth>,
) -> Result<Storage, String> {
    let (conn, bootstrap, runtime) = open_and_bootstrap(target, dev)?;
    let mut writer_db = SqliteDatabase { conn };
    let counts = read_db(&mut writer_db, db_counts).unwrap_or_default();
    // The writer's connection is moved into its single thread; the factory cannot run twice.
    let slot = Mutex::new(Some(Box::new(writer_db) as Box<dyn Database>));
    let writer_target = target.clone();
    let writer: DbFactory = Box::new(move || {
        slot.lock().ok().and_then(|mut s| s.take()).or_else(|| {
            // Restarted after its thread died: reopen (None makes every write fail cleanly).
            writer_health.record_restart();
            sqlite::open_writer(&writer_target).ok().map(|conn| Box::new(SqliteDatabase { conn }) as Box<dyn Database>)
        })
    });
    let readers = if target.is_memory() {
        None
    } else {
        let mut conns = Vec::with_capacity(n_readers);
        for _ in 0..n_readers {
            conns.push(sqlite::open_reader(target).map_err(|e| format!("Failed to open a read connection: {e}"))?);
        }
        let pool = Mutex::new(conns);
        let target = target.clone();
        let factory: DbFactory = Box::new(move || {
            let conn =
                pool.lock().ok().and_then(|mut p| p.pop()).map(Ok).unwrap_or_else(|| sqlite::open_reader(&target));
            conn.ok().map(|conn| Box::new(SqliteDatabase { conn }) as Box<dyn Database>)
        });
        Some(factory)
    };
    Ok(Storage { bootstrap, runtime, counts, writer, readers })
}

/// Opens and bootstraps a PostgreSQL database, with the same dev-key guard as SQLite. Runs on a
/// thread of its own, so it may be called from async code.
pub fn open_and_bootstrap_postgres(
    target: &PgTarget,
    dev: bool,
) -> Result<(BootstrapReport, crate::store::RuntimeRow, DbCounts), String> {
    let target = Arc::new(target.clone());
    postgres::off_async(move || {
        let mut db = PgDatabase::open(target).map_err(|e| format!("Failed to open/connect to DB: {e}"))?;
        let new_key = if dev {
            DEV_BACKEND_SEED
        } else {
            let mut k = [0u8; 32];
            getrandom::fill(&mut k).map_err(|e| format!("no randomness for a backend key: {e}"))?;
            k
        };
        let client = db.client().map_err(|e| format!("Failed to open/connect to DB: {e}"))?;
        let report = postgres::bootstrap(client, new_key).map_err(|e| format!("Failed to bootstrap DB tables: {e}"))?;
        let runtime =
            read_db(&mut db, |tx| tx.runtime()).map_err(|e| format!("Failed to read the runtime row: {e}"))?;
        if dev && runtime.backend_key != DEV_BACKEND_SEED {
            return Err("Developer mode was enabled but the database holds a non-development backend key; \
                        refusing to start (dev mode must never run on a production database)"
                .into());
        }
        let counts = read_db(&mut db, db_counts).unwrap_or_default();
        Ok((report, runtime, counts))
    })?
}

/// PostgreSQL: bootstrap on a helper thread; the writer and every reader then connect from
/// their own threads and reconnect by themselves after the database restarts. A `database`
/// entry in the health registry follows whether the server answers.
fn postgres_storage(target: &PgTarget, dev: bool, registry: &Registry) -> Result<Storage, String> {
    let (bootstrap, runtime, counts) = open_and_bootstrap_postgres(target, dev)?;
    let target = Arc::new(target.clone());
    let health = ActorHealth::new("database");
    let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let probe = up.clone();
    health.set_liveness(move || probe.load(std::sync::atomic::Ordering::Relaxed));
    registry.add_actor(health.clone());
    watch_database(target.clone(), Arc::downgrade(&health), up);
    let (w, r) = (target.clone(), target);
    let writer: DbFactory = Box::new(move || Some(Box::new(PgDatabase::new(w.clone())) as Box<dyn Database>));
    let readers: DbFactory = Box::new(move || Some(Box::new(PgDatabase::new(r.clone())) as Box<dyn Database>));
    Ok(Storage { bootstrap, runtime, counts, writer, readers: Some(readers) })
}

/// How often the database watcher checks that PostgreSQL answers.
const DB_PROBE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// A thread that asks PostgreSQL `SELECT 1` every second on a connection of its own and records
/// the answer for `/health`. It ends when the health entry is gone.
fn watch_database(target: Arc<PgTarget>, health: std::sync::Weak<ActorHealth>, up: Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::Ordering;
    let spawned = std::thread::Builder::new().name("db-watch".into()).spawn(move || {
        let mut db: Option<PgDatabase> = None;
        loop {
            let Some(h) = health.upgrade() else { return };
            let now = crate::Clock::now_ms(&crate::SystemClock);
            let conn = match db.take() {
                Some(d) => Ok(d),
                None => PgDatabase::open(target.clone()),
            };
            let outcome = conn.and_then(|mut d| {
                let r = d.client().and_then(|c| {
                    c.simple_query("SELECT 1").map(drop).map_err(|e| crate::store::StoreError::Db(e.to_string()))
                });
                r.map(|()| d)
            });
            match outcome {
                Ok(d) => {
                    if !up.swap(true, Ordering::Relaxed) {
                        tracing::warn!("The database answers again");
                    }
                    h.record_success(now);
                    db = Some(d);
                }
                Err(e) => {
                    if up.swap(false, Ordering::Relaxed) {
                        tracing::error!("The database does not answer: {e}");
                    }
                    h.record_failure(now, &e.to_string());
                }
            }
            drop(h);
            std::thread::sleep(DB_PROBE_INTERVAL);
        }
    });
    if let Err(e) = spawned {
        tracing::error!("Could not start the database watcher: {e}");
    }
}

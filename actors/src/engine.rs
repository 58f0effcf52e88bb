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
use crate::store::sqlite::{self, BootstrapReport, SqliteDatabase, SqliteTarget};
use crate::store::{Database, StoreTx, read_db};

/// The backend seed upstream uses in developer mode (32 × 0xCD).
pub const DEV_BACKEND_SEED: [u8; 32] = [0xCD; 32];

#[derive(Clone)]
pub struct EngineConfig {
    pub db: SqliteTarget,
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

pub fn start(cfg: EngineConfig) -> Result<Engine, String> {
    let (conn, bootstrap, runtime) = open_and_bootstrap(&cfg.db, cfg.dev)?;
    let registry = cfg.registry.clone();
    let mut writer_db = SqliteDatabase { conn };
    let counts = read_db(&mut writer_db, db_counts).unwrap_or_default();

    let writer_health = ActorHealth::new("db_writer");
    let queued = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let queued_in = queued.clone();
    let (wh, clock, dev) = (writer_health.clone(), cfg.clock.clone(), cfg.dev);
    // The writer's connection is moved into its single thread; the factory cannot run twice.
    let slot = Mutex::new(Some(Box::new(writer_db) as Box<dyn Database>));
    let target = cfg.db.clone();
    let writer_addr = SyncArbiter::start(1, move || {
        let db = slot.lock().ok().and_then(|mut s| s.take()).or_else(|| {
            // Restarted after its thread died: reopen (None makes every write fail cleanly).
            wh.record_restart();
            sqlite::open_writer(&target).ok().map(|conn| Box::new(SqliteDatabase { conn }) as Box<dyn Database>)
        });
        DbWriter::new(db, wh.clone(), clock.clone(), dev, queued_in.clone())
    });
    let writer = WriterHandle::new(Handle::new(writer_addr, writer_health.clone(), cfg.limits), queued);
    registry.add_actor(writer_health);

    let reader = if cfg.db.is_memory() {
        ReaderHandle::Writer(writer.handle().clone())
    } else {
        let health = ActorHealth::new("db_reader");
        let n = cfg.readers.max(1);
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            conns.push(sqlite::open_reader(&cfg.db).map_err(|e| format!("Failed to open a read connection: {e}"))?);
        }
        let pool = Mutex::new(conns);
        let (h, clock, target) = (health.clone(), cfg.clock.clone(), cfg.db.clone());
        let addr = SyncArbiter::start(n, move || {
            let conn =
                pool.lock().ok().and_then(|mut p| p.pop()).map(Ok).unwrap_or_else(|| sqlite::open_reader(&target));
            let db = conn.ok().map(|conn| Box::new(SqliteDatabase { conn }) as Box<dyn Database>);
            DbReader::new(db, h.clone(), clock.clone())
        });
        registry.add_actor(health.clone());
        ReaderHandle::Pool(Handle::new(addr, health, cfg.limits))
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

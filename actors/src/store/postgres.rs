//! PostgreSQL backend: upstream's PostgreSQL layout of schema version 9 and the steps that bring
//! older databases to it, connections that come back by themselves after the database server
//! restarts, and the SQL behind [`StoreTx`].
//!
//! Several servers may share one database. Every write transaction first locks the single
//! `runtime` row (`SELECT … FOR UPDATE` straight after `BEGIN`), which plays the part of
//! SQLite's `BEGIN IMMEDIATE`: writers of all servers take turns, so check-then-insert stays
//! correct, and because every writer takes that lock before any other, no two writers can wait
//! on each other in a cycle. Reads run in `REPEATABLE READ READ ONLY` snapshots and take no locks.
//!
//! The `postgres` client runs a small runtime of its own, so a client must be created, used and
//! dropped on a plain thread (the actors' threads, or [`off_async`]), never on an async one.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls, Row, Statement};

use super::rows::{NewPayment, PaymentRow, RuntimeRow, SubscriptionRow, UserRow};
use super::schema::{SCHEMA_VERSION, TABLES};
use super::sqlite::{BootstrapReport, Cell, TableDump};
use super::{StoreError, StoreResult, StoreTx};
use crate::domain::hashes::google_obfuscated_account_id;
use crate::domain::lookup::{LookupRow, Summary};
use crate::domain::revocation::RevocationRow;
use crate::domain::types::{PaymentProvider, PaymentTx, PubKeyBytes};

/// How long opening a connection may take before the attempt counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a statement waits for a lock another server holds before it fails (status 1).
const LOCK_TIMEOUT_MS: u64 = 5_000;
/// A session that sits inside a transaction this long is ended by the server, so a wedged
/// process cannot hold the write lock for ever.
const IDLE_IN_TX_TIMEOUT_MS: u64 = 60_000;
/// Serialises the bootstraps of servers starting at the same moment (an arbitrary constant:
/// "SPROBOOT" in ASCII).
const BOOTSTRAP_LOCK_KEY: i64 = 0x5350_524F_424F_4F54;

/// Where the PostgreSQL database lives: a `postgresql://` or `postgres://` URL.
#[derive(Clone)]
pub struct PgTarget {
    pub url: String,
    config: Box<postgres::Config>,
}

impl std::fmt::Debug for PgTarget {
    // The URL may carry a password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTarget").field("dbname", &self.config.get_dbname()).finish_non_exhaustive()
    }
}

impl PartialEq for PgTarget {
    fn eq(&self, other: &Self) -> bool {
        self.url == other.url
    }
}

impl PgTarget {
    /// Parses a connection URL. Without a host, the local server's Unix socket is used (as
    /// libpq does), so upstream's `postgresql:///session_pro?user=…&port=…` works unchanged.
    pub fn parse(url: &str) -> Result<Self, String> {
        let mut config: postgres::Config =
            url.parse().map_err(|e| format!("Could not parse the PostgreSQL URL: {e}"))?;
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            let dir = ["/var/run/postgresql", "/run/postgresql", "/tmp"]
                .into_iter()
                .find(|d| Path::new(d).is_dir())
                .unwrap_or("/tmp");
            config.host_path(dir);
        }
        config
            .connect_timeout(CONNECT_TIMEOUT)
            // A server that vanishes without closing the socket is noticed within seconds.
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(15))
            .notice_callback(|n| tracing::debug!("PostgreSQL notice: {}", n.message()));
        if config.get_application_name().is_none() {
            config.application_name("session-pro-backend");
        }
        Ok(Self { url: url.to_owned(), config: Box::new(config) })
    }

    /// Opens a new connection with the session settings every connection of this server uses.
    pub fn connect(&self) -> StoreResult<Client> {
        let mut client =
            self.config.connect(NoTls).map_err(|e| StoreError::Db(format!("cannot connect: {}", describe(&e))))?;
        client
            .batch_execute(&format!(
                "SET lock_timeout = {LOCK_TIMEOUT_MS}; SET idle_in_transaction_session_timeout = {IDLE_IN_TX_TIMEOUT_MS}"
            ))
            .map_err(db_err)?;
        Ok(client)
    }
}

/// Runs `f` on a fresh plain thread and waits for it: the way async code (start-up, tests)
/// uses a PostgreSQL client without a runtime of its own in the way.
pub fn off_async<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|s| s.spawn(f).join()).map_err(|_| "internal error while talking to PostgreSQL".to_string())
}

/// Readable text of a client error: the server's message and SQLSTATE when it sent one.
fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {} (SQLSTATE {})", db.severity(), db.message(), db.code().code()),
        None => {
            // The cause (e.g. "Connection refused") is kept apart from the summary.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                let c = cause.to_string();
                if !text.contains(&c) {
                    text = format!("{text}: {c}");
                }
                source = cause.source();
            }
            text
        }
    }
}

fn db_err(e: postgres::Error) -> StoreError {
    match e.code() {
        // Another server held a lock too long, or PostgreSQL chose this transaction to break a
        // cycle: the caller may simply try again.
        Some(c)
            if *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::LOCK_NOT_AVAILABLE =>
        {
            StoreError::Busy
        }
        _ if e.is_closed() => StoreError::Db(format!("the database connection was lost: {}", describe(&e))),
        _ => StoreError::Db(describe(&e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Schema

/// Every table of the version-9 layout, as upstream declares them for PostgreSQL; nothing here
/// changes a table that already exists.
const CREATE_TABLES: &str = r#"
CREATE TABLE IF NOT EXISTS payments (
    id                                SERIAL PRIMARY KEY,
    master_pkey                       BYTEA CHECK (octet_length(master_pkey) = 32),  -- NULL until redeemed
    status                            INTEGER NOT NULL,
    plan                              INTEGER NOT NULL,
    payment_provider                  INTEGER NOT NULL,
    auto_renewing                     BOOLEAN NOT NULL DEFAULT FALSE,
    unredeemed_unix_ts_ms             BIGINT NOT NULL,
    redeemed_unix_ts_ms               BIGINT,
    expiry_unix_ts_ms                 BIGINT NOT NULL,
    grace_period_duration_ms          BIGINT,
    platform_refund_expiry_unix_ts_ms BIGINT NOT NULL,
    revoked_unix_ts_ms                BIGINT,
    apple_original_tx_id              TEXT,
    apple_tx_id                       TEXT,
    apple_web_line_order_tx_id        TEXT,
    google_payment_token              TEXT,
    google_order_id                   TEXT,
    rangeproof_order_id               TEXT,
    refund_requested_unix_ts_ms       BIGINT NOT NULL DEFAULT 0,
    google_obfuscated_account_id      BYTEA NULL CHECK (octet_length(google_obfuscated_account_id) = 32),
    apple_app_account_token           TEXT NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS users (
    master_pkey                  BYTEA PRIMARY KEY CHECK (octet_length(master_pkey) = 32),
    gen_index                    INTEGER NOT NULL,
    expiry_unix_ts_ms            BIGINT NOT NULL,
    grace_period_duration_ms     BIGINT NOT NULL,
    auto_renewing                BOOLEAN NOT NULL DEFAULT FALSE,
    refund_requested_unix_ts_ms  BIGINT NOT NULL DEFAULT 0,
    google_obfuscated_account_id BYTEA NULL CHECK (octet_length(google_obfuscated_account_id) = 32),
    apple_app_account_token      TEXT NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS revocations (
    gen_index           INTEGER PRIMARY KEY NOT NULL,
    creation_unix_ts_ms BIGINT NOT NULL,
    expiry_unix_ts_ms   BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS runtime (
    gen_index                                INTEGER NOT NULL DEFAULT 0,
    gen_index_salt                           BYTEA NOT NULL CHECK (octet_length(gen_index_salt) = 16),
    backend_key                              BYTEA NOT NULL CHECK (octet_length(backend_key) = 32),
    last_expire_unix_ts_ms                   BIGINT NOT NULL DEFAULT 0,
    apple_notification_checkpoint_unix_ts_ms BIGINT NOT NULL DEFAULT 0,
    revocation_ticket                        INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS apple_notification_uuid_history (
    uuid              TEXT NOT NULL,
    expiry_unix_ts_ms BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS google_notification_history (
    message_id        BIGINT NOT NULL,
    handled           BOOLEAN NOT NULL DEFAULT FALSE,
    payload           TEXT,
    expiry_unix_ts_ms BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS user_errors (
    payment_id       TEXT NOT NULL,
    payment_provider INTEGER NOT NULL,
    unix_ts_ms       BIGINT NOT NULL,
    UNIQUE (payment_id, payment_provider)
);

-- PostgreSQL keeps the schema version here instead of SQLite's user_version.
CREATE TABLE IF NOT EXISTS schema_version (
    id      SERIAL PRIMARY KEY,
    version INTEGER NOT NULL DEFAULT 0
);
"#;

/// The function both revocation triggers call: any inserted or deleted row bumps the ticket.
const CREATE_TICKET_FUNCTION: &str = r#"
CREATE FUNCTION increment_revocation_ticket() RETURNS TRIGGER AS $body$
BEGIN
    UPDATE runtime SET revocation_ticket = revocation_ticket + 1;
    RETURN NEW;
END;
$body$ LANGUAGE plpgsql
"#;

/// The two triggers on `revocations`, by name, with their event.
const TICKET_TRIGGERS: [(&str, &str); 2] =
    [("increment_revocation_ticket_after_insert", "INSERT"), ("increment_revocation_ticket_after_delete", "DELETE")];

/// Lookup indexes (upstream has none; names match the SQLite backend's).
const INDEXES: [(&str, &str); 5] = [
    ("idx_payments_master_pkey", "payments (master_pkey)"),
    ("idx_payments_google_payment_token", "payments (google_payment_token)"),
    ("idx_payments_apple_tx_id", "payments (apple_tx_id)"),
    ("idx_payments_apple_original_tx_id", "payments (apple_original_tx_id)"),
    ("idx_payments_rangeproof_order_id", "payments (rangeproof_order_id)"),
];

/// One migration step from `from` to `from + 1`. Upstream runs only 7 → 8 and 8 → 9 on
/// PostgreSQL; the earlier two are the SQLite steps in PostgreSQL terms, so an old database
/// is never stamped with a version whose columns it lacks. Where upstream's 8 → 9 adds a
/// 32-bit column that cannot hold a millisecond time, this one adds a 64-bit column.
const PG_MIGRATIONS: [(i32, &str); 4] = [
    (
        5,
        "ALTER TABLE users ADD COLUMN IF NOT EXISTS google_obfuscated_account_id BYTEA NULL
             CHECK (octet_length(google_obfuscated_account_id) = 32);
         ALTER TABLE users ADD COLUMN IF NOT EXISTS apple_app_account_token TEXT NOT NULL DEFAULT '';
         UPDATE users SET google_obfuscated_account_id = sha256(master_pkey);",
    ),
    (
        6,
        "ALTER TABLE payments ADD COLUMN IF NOT EXISTS google_obfuscated_account_id BYTEA NULL
             CHECK (octet_length(google_obfuscated_account_id) = 32);
         ALTER TABLE payments ADD COLUMN IF NOT EXISTS apple_app_account_token TEXT NOT NULL DEFAULT '';",
    ),
    (7, "ALTER TABLE payments ADD COLUMN IF NOT EXISTS rangeproof_order_id TEXT;"),
    (8, "ALTER TABLE revocations ADD COLUMN IF NOT EXISTS creation_unix_ts_ms BIGINT NOT NULL DEFAULT 0;"),
];

/// Brings the database to schema version 9 and makes sure the runtime row exists, all in one
/// transaction (PostgreSQL's DDL is transactional, so a failure leaves nothing behind).
/// `new_backend_key` is used only when the runtime row is created.
pub fn bootstrap(client: &mut Client, new_backend_key: [u8; 32]) -> StoreResult<BootstrapReport> {
    client.batch_execute("BEGIN").map_err(db_err)?;
    match bootstrap_in_tx(client, new_backend_key) {
        Ok(report) => {
            client.batch_execute("COMMIT").map_err(db_err)?;
            Ok(report)
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK");
            Err(e)
        }
    }
}

fn bootstrap_in_tx(client: &mut Client, new_backend_key: [u8; 32]) -> StoreResult<BootstrapReport> {
    // Servers starting together take turns; later ones find everything in place.
    client.execute("SELECT pg_advisory_xact_lock($1)", &[&BOOTSTRAP_LOCK_KEY]).map_err(db_err)?;
    client.batch_execute("SET LOCAL lock_timeout = 30000").map_err(db_err)?;
    client.batch_execute(CREATE_TABLES).map_err(db_err)?;

    // Only what is missing is created, so a running server sharing the database is not
    // blocked by table locks while another one starts.
    let has_function: bool = client
        .query_one("SELECT to_regprocedure('increment_revocation_ticket()') IS NOT NULL", &[])
        .map_err(db_err)?
        .get(0);
    if !has_function {
        client.batch_execute(CREATE_TICKET_FUNCTION).map_err(db_err)?;
    }
    for (name, event) in TICKET_TRIGGERS {
        let exists: bool = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'revocations'::regclass AND tgname = $1)",
                &[&name],
            )
            .map_err(db_err)?
            .get(0);
        if !exists {
            client
                .batch_execute(&format!(
                    "CREATE TRIGGER {name} AFTER {event} ON revocations
                     FOR EACH ROW EXECUTE FUNCTION increment_revocation_ticket()"
                ))
                .map_err(db_err)?;
        }
    }

    let version: Option<i32> = client
        .query_opt("SELECT version FROM schema_version ORDER BY id LIMIT 1", &[])
        .map_err(db_err)?
        .map(|r| r.get(0));
    let version = match version {
        Some(v) => v,
        None => {
            client.execute("INSERT INTO schema_version (id, version) VALUES (1, 0)", &[]).map_err(db_err)?;
            0
        }
    };
    let from_version = i64::from(version);
    let mut current = if version == 0 { SCHEMA_VERSION as i32 } else { version };
    let mut migrations = Vec::new();
    while i64::from(current) < SCHEMA_VERSION {
        let Some((_, sql)) = PG_MIGRATIONS.iter().find(|(from, _)| *from == current) else {
            break;
        };
        client.batch_execute(sql).map_err(db_err)?;
        migrations.push(format!("Migrating DB version from {current} => {}", current + 1));
        current += 1;
    }
    if i64::from(current) != SCHEMA_VERSION {
        return Err(StoreError::Integrity(format!(
            "unsupported database schema version {from_version} (this server reads version {SCHEMA_VERSION} and migrates from 5 and later)"
        )));
    }
    client.execute("UPDATE schema_version SET version = $1", &[&current]).map_err(db_err)?;

    // A database that upstream migrated to version 9 holds the revocation creation time in a
    // 32-bit column, which overflows on the first insert; widen it (upstream reads it the same).
    let creation_type: Option<String> = client
        .query_opt(
            "SELECT data_type::TEXT FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = 'revocations' AND column_name = 'creation_unix_ts_ms'",
            &[],
        )
        .map_err(db_err)?
        .map(|r| r.get(0));
    if creation_type.as_deref().is_some_and(|t| t != "bigint") {
        client.batch_execute("ALTER TABLE revocations ALTER COLUMN creation_unix_ts_ms TYPE BIGINT").map_err(db_err)?;
        migrations.push("Widening revocations.creation_unix_ts_ms to BIGINT".to_string());
    }

    for (name, on) in INDEXES {
        let exists: bool = client.query_one("SELECT to_regclass($1) IS NOT NULL", &[&name]).map_err(db_err)?.get(0);
        if !exists {
            client.batch_execute(&format!("CREATE INDEX IF NOT EXISTS {name} ON {on}")).map_err(db_err)?;
        }
    }

    let rows: i64 = client.query_one("SELECT COUNT(*) FROM runtime", &[]).map_err(db_err)?.get(0);
    if rows > 1 {
        return Err(StoreError::Integrity(format!("the runtime table holds {rows} rows, expected one")));
    }
    let created_runtime = rows == 0;
    if created_runtime {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| StoreError::Db(format!("no randomness for the gen_index salt: {e}")))?;
        client
            .execute(
                "INSERT INTO runtime (gen_index, gen_index_salt, backend_key, last_expire_unix_ts_ms,
                     apple_notification_checkpoint_unix_ts_ms, revocation_ticket) VALUES (0, $1, $2, 0, 0, 0)",
                &[&salt.as_slice(), &new_backend_key.as_slice()],
            )
            .map_err(db_err)?;
    }
    Ok(BootstrapReport { from_version, created_runtime, migrations })
}

/// Every table of the schema (and `schema_version`), for operators (`print_tables`).
pub fn dump_tables(client: &mut Client) -> StoreResult<Vec<TableDump>> {
    let mut out = Vec::new();
    for name in TABLES.iter().copied().chain(["schema_version"]) {
        let order = if matches!(name, "payments" | "schema_version") { " ORDER BY id" } else { "" };
        let st = client.prepare(&format!("SELECT * FROM {name}{order}")).map_err(db_err)?;
        let columns: Vec<String> = st.columns().iter().map(|c| c.name().to_string()).collect();
        let rows = client.query(&st, &[]).map_err(db_err)?;
        let mut cells = Vec::with_capacity(rows.len());
        for row in &rows {
            cells.push((0..columns.len()).map(|i| cell(row, i)).collect::<StoreResult<Vec<Cell>>>()?);
        }
        out.push(TableDump { name: name.to_string(), columns, rows: cells });
    }
    Ok(out)
}

fn cell(row: &Row, i: usize) -> StoreResult<Cell> {
    let ty = row.columns()[i].type_().clone();
    let get_err = |e: postgres::Error| StoreError::Db(describe(&e));
    Ok(if ty == Type::BOOL {
        row.try_get::<_, Option<bool>>(i).map_err(get_err)?.map_or(Cell::Null, |b| Cell::Int(i64::from(b)))
    } else if ty == Type::INT2 || ty == Type::INT4 || ty == Type::INT8 {
        opt_int(row, i)?.map_or(Cell::Null, Cell::Int)
    } else if ty == Type::BYTEA {
        row.try_get::<_, Option<Vec<u8>>>(i).map_err(get_err)?.map_or(Cell::Null, Cell::Blob)
    } else if ty == Type::FLOAT8 {
        row.try_get::<_, Option<f64>>(i).map_err(get_err)?.map_or(Cell::Null, Cell::Real)
    } else {
        row.try_get::<_, Option<String>>(i).map_err(get_err)?.map_or(Cell::Null, Cell::Text)
    })
}

// ---------------------------------------------------------------------------------------------
// Connections

/// One live connection and the statements prepared on it.
struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
    /// A statement failed inside the open transaction and no `ROLLBACK TO` has repaired it
    /// yet: PostgreSQL would turn a COMMIT into a silent rollback, so commit refuses instead.
    aborted: bool,
}

impl Conn {
    /// Notes a failed statement: the transaction needs a rollback, and the prepared statement is
    /// dropped so the next use prepares it afresh (a schema change by another server, such as a
    /// migration, can leave a prepared statement unusable).
    fn failed(&mut self, sql: &str, e: postgres::Error) -> StoreError {
        self.aborted = true;
        self.statements.remove(sql);
        db_err(e)
    }
}

/// A PostgreSQL connection as a [`super::Database`]: it (re)connects on demand, so a database
/// restart costs the requests made while it is down and nothing else.
pub struct PgDatabase {
    target: Arc<PgTarget>,
    conn: Option<Conn>,
}

impl PgDatabase {
    /// Connects now if it can; otherwise the first use tries again.
    pub fn new(target: Arc<PgTarget>) -> Self {
        let mut db = Self { target, conn: None };
        let _ = db.connected();
        db
    }

    fn connected(&mut self) -> StoreResult<&mut Conn> {
        if self.conn.as_ref().is_some_and(|c| c.client.is_closed()) {
            self.conn = None;
        }
        if self.conn.is_none() {
            let client = self.target.connect()?;
            self.conn = Some(Conn { client, statements: HashMap::new(), aborted: false });
        }
        self.conn.as_mut().ok_or_else(|| StoreError::Db("no database connection".into()))
    }

    /// Runs the statements that open a transaction. A connection found dead at this point has
    /// done nothing yet, so it is replaced once and the statements are sent again.
    fn start_tx(&mut self, sql: &str) -> StoreResult<()> {
        for attempt in 0..2 {
            let conn = self.connected()?;
            conn.aborted = false;
            match conn.client.batch_execute(sql) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_closed() || conn.client.is_closed() => {
                    self.conn = None;
                    if attempt == 1 {
                        return Err(db_err(e));
                    }
                }
                Err(e) => {
                    // The transaction may be open and broken (a lock wait that timed out).
                    let _ = conn.client.batch_execute("ROLLBACK");
                    return Err(db_err(e));
                }
            }
        }
        Err(StoreError::Db("no database connection".into()))
    }

    fn finish(&mut self, commit: bool) -> StoreResult<()> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(StoreError::Db("the database connection was lost".into()));
        };
        if commit && conn.aborted {
            let _ = conn.client.batch_execute("ROLLBACK");
            conn.aborted = false;
            return Err(StoreError::Db("the transaction failed and was rolled back".into()));
        }
        conn.aborted = false;
        let r = conn.client.batch_execute(if commit { "COMMIT" } else { "ROLLBACK" }).map_err(db_err);
        if conn.client.is_closed() {
            self.conn = None;
        }
        r
    }
}

/// Starts a write transaction: the `runtime` row lock makes it the only writer of every server
/// sharing the database until it ends.
const BEGIN_WRITE: &str = "BEGIN; SELECT 1 FROM runtime FOR UPDATE";
const BEGIN_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

impl super::Database for PgDatabase {
    fn begin(&mut self) -> StoreResult<()> {
        self.start_tx(BEGIN_WRITE)
    }
    fn commit(&mut self) -> StoreResult<()> {
        self.finish(true)
    }
    fn rollback(&mut self) -> StoreResult<()> {
        self.finish(false)
    }
    fn tx(&mut self) -> Box<dyn StoreTx + '_> {
        Box::new(PgTx { conn: self.conn.as_mut() })
    }
    fn read_with(&mut self, f: &mut dyn FnMut(&mut dyn StoreTx) -> StoreResult<()>) -> StoreResult<()> {
        self.start_tx(BEGIN_READ)?;
        let out = f(&mut PgTx { conn: self.conn.as_mut() });
        let end = self.finish(out.is_ok());
        out.and(end)
    }
    fn write_with(
        &mut self,
        f: &mut dyn FnMut(&mut dyn StoreTx) -> Result<(), super::ops::OpError>,
    ) -> Result<(), super::ops::OpError> {
        self.start_tx(BEGIN_WRITE)?;
        let out = f(&mut PgTx { conn: self.conn.as_mut() });
        let end = self.finish(out.is_ok());
        out?;
        Ok(end?)
    }
}

impl PgDatabase {
    /// Connects now and fails if it cannot (start-up and tools want a clear error at once).
    pub fn open(target: Arc<PgTarget>) -> StoreResult<Self> {
        let mut db = Self { target, conn: None };
        db.connected()?;
        Ok(db)
    }

    /// The connection itself, for bootstrap and operator dumps.
    pub fn client(&mut self) -> StoreResult<&mut Client> {
        Ok(&mut self.connected()?.client)
    }
}

// ---------------------------------------------------------------------------------------------
// The primitives

/// One transaction's view of the connection (None: the connection is gone; everything fails).
pub struct PgTx<'c> {
    conn: Option<&'c mut Conn>,
}

type Params<'a> = Vec<&'a (dyn ToSql + Sync)>;

impl PgTx<'_> {
    fn conn(&mut self) -> StoreResult<&mut Conn> {
        self.conn.as_deref_mut().ok_or_else(|| StoreError::Db("the database connection was lost".into()))
    }

    fn statement(&mut self, sql: &str) -> StoreResult<Statement> {
        let conn = self.conn()?;
        if let Some(st) = conn.statements.get(sql) {
            return Ok(st.clone());
        }
        match conn.client.prepare(sql) {
            Ok(st) => {
                conn.statements.insert(sql.to_string(), st.clone());
                Ok(st)
            }
            Err(e) => {
                conn.aborted = true;
                Err(db_err(e))
            }
        }
    }

    fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Row>> {
        let st = self.statement(sql)?;
        let conn = self.conn()?;
        conn.client.query(&st, params).map_err(|e| conn.failed(sql, e))
    }

    fn opt(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    fn exec(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<u64> {
        let st = self.statement(sql)?;
        let conn = self.conn()?;
        conn.client.execute(&st, params).map_err(|e| conn.failed(sql, e))
    }

    fn count(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<i64> {
        match self.opt(sql, params)? {
            Some(row) => Ok(opt_int(&row, 0)?.unwrap_or(0)),
            None => Ok(0),
        }
    }

    fn exists(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<bool> {
        match self.opt(sql, params)? {
            Some(row) => flag(&row, 0),
            None => Ok(false),
        }
    }

    /// Statements without parameters or results, sent as one simple query.
    fn simple(&mut self, sql: &str) -> StoreResult<()> {
        let conn = self.conn()?;
        conn.client.batch_execute(sql).map_err(|e| {
            conn.aborted = true;
            db_err(e)
        })
    }

    fn owners(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> StoreResult<Vec<Option<PubKeyBytes>>> {
        self.query(sql, params)?.iter().map(|r| key32(r, 0)).collect()
    }
}

fn decode_err(what: &str, e: postgres::Error) -> StoreError {
    StoreError::Integrity(format!("cannot read {what}: {e}"))
}

/// An integer column of any width (upstream mixes INTEGER and BIGINT; NULL is None).
fn opt_int(row: &Row, idx: usize) -> StoreResult<Option<i64>> {
    let col = &row.columns()[idx];
    let ty = col.type_();
    let r = if *ty == Type::INT8 {
        row.try_get::<_, Option<i64>>(idx)
    } else if *ty == Type::INT4 {
        row.try_get::<_, Option<i32>>(idx).map(|v| v.map(i64::from))
    } else if *ty == Type::INT2 {
        row.try_get::<_, Option<i16>>(idx).map(|v| v.map(i64::from))
    } else if *ty == Type::BOOL {
        row.try_get::<_, Option<bool>>(idx).map(|v| v.map(i64::from))
    } else {
        return Err(StoreError::Integrity(format!("column {} holds {ty}, expected an integer", col.name())));
    };
    r.map_err(|e| decode_err(col.name(), e))
}

/// An integer column where NULL reads as 0 (as the SQLite backend does).
fn int0(row: &Row, idx: usize) -> StoreResult<i64> {
    Ok(opt_int(row, idx)?.unwrap_or(0))
}

/// A column that must hold a number.
fn int(row: &Row, idx: usize) -> StoreResult<i64> {
    opt_int(row, idx)?.ok_or_else(|| StoreError::Integrity(format!("column {} is NULL", row.columns()[idx].name())))
}

/// A BOOLEAN (or, in a hand-made database, integer) flag; NULL is false.
fn flag(row: &Row, idx: usize) -> StoreResult<bool> {
    Ok(int0(row, idx)? != 0)
}

fn text(row: &Row, idx: usize) -> StoreResult<String> {
    let col = row.columns()[idx].name();
    Ok(row.try_get::<_, Option<String>>(idx).map_err(|e| decode_err(col, e))?.unwrap_or_default())
}

fn bytes(row: &Row, idx: usize) -> StoreResult<Option<Vec<u8>>> {
    let col = row.columns()[idx].name();
    row.try_get::<_, Option<Vec<u8>>>(idx).map_err(|e| decode_err(col, e))
}

/// A 32-byte key, or None for NULL; any other length is a data error.
fn key32(row: &Row, idx: usize) -> StoreResult<Option<PubKeyBytes>> {
    match bytes(row, idx)? {
        None => Ok(None),
        Some(b) => <[u8; 32]>::try_from(b.as_slice()).map(Some).map_err(|_| {
            StoreError::Integrity(format!("column {} holds {} bytes, expected 32", row.columns()[idx].name(), b.len()))
        }),
    }
}

/// A generation index as the INTEGER columns store it.
fn gen_param(gen_index: u64) -> StoreResult<i32> {
    i32::try_from(gen_index)
        .map_err(|_| StoreError::Integrity(format!("gen_index {gen_index} does not fit the database")))
}

fn gen_value(v: i64) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| StoreError::Integrity(format!("negative gen_index {v}")))
}

const PAYMENT_COLUMNS: &str = "id, master_pkey, status, plan, payment_provider, auto_renewing, unredeemed_unix_ts_ms,
    redeemed_unix_ts_ms, expiry_unix_ts_ms, grace_period_duration_ms, platform_refund_expiry_unix_ts_ms,
    revoked_unix_ts_ms, apple_original_tx_id, apple_tx_id, apple_web_line_order_tx_id, google_payment_token,
    google_order_id, rangeproof_order_id, refund_requested_unix_ts_ms";

fn payment_row(row: &Row) -> StoreResult<PaymentRow> {
    Ok(PaymentRow {
        id: int(row, 0)?,
        master_pkey: key32(row, 1)?,
        status: int(row, 2)?,
        plan: int0(row, 3)?,
        payment_provider: int(row, 4)?,
        auto_renewing: flag(row, 5)?,
        unredeemed_unix_ts_ms: int0(row, 6)?,
        redeemed_unix_ts_ms: int0(row, 7)?,
        expiry_unix_ts_ms: int0(row, 8)?,
        grace_period_duration_ms: int0(row, 9)?,
        platform_refund_expiry_unix_ts_ms: int0(row, 10)?,
        revoked_unix_ts_ms: int0(row, 11)?,
        apple_original_tx_id: text(row, 12)?,
        apple_tx_id: text(row, 13)?,
        apple_web_line_order_tx_id: text(row, 14)?,
        google_payment_token: text(row, 15)?,
        google_order_id: text(row, 16)?,
        rangeproof_order_id: text(row, 17)?,
        refund_requested_unix_ts_ms: int0(row, 18)?,
    })
}

fn revocation_row(row: &Row) -> StoreResult<RevocationRow> {
    Ok(RevocationRow {
        gen_index: gen_value(int(row, 0)?)?,
        creation_unix_ts_ms: int0(row, 1)?,
        expiry_unix_ts_ms: int0(row, 2)?,
    })
}

/// A WHERE clause and its text parameters, numbered from `$first`.
struct Filter<'a> {
    sql: String,
    args: Vec<&'a str>,
}

impl<'a> Filter<'a> {
    fn new(first: usize, parts: &[&str], provider: Option<i32>, args: Vec<&'a str>) -> Self {
        let mut clauses: Vec<String> = provider.map(|p| format!("payment_provider = {p}")).into_iter().collect();
        clauses.extend(parts.iter().enumerate().map(|(i, col)| format!("{col} = ${}", first + i)));
        if clauses.is_empty() {
            clauses.push("FALSE".into());
        }
        Self { sql: clauses.join(" AND "), args }
    }

    fn none() -> Self {
        Self { sql: "FALSE".into(), args: Vec::new() }
    }

    /// The next free parameter number after `first` and these arguments.
    fn next(&self, first: usize) -> usize {
        first + self.args.len()
    }

    fn params<'p>(&'p self, head: Params<'p>) -> Params<'p> {
        let mut v = head;
        v.extend(self.args.iter().map(|s| s as &(dyn ToSql + Sync)));
        v
    }
}

/// The full identity tuple of a stored payment.
fn identity_filter(tx: &PaymentTx, first: usize) -> Filter<'_> {
    match tx.provider() {
        PaymentProvider::Google => Filter::new(
            first,
            &["google_payment_token", "google_order_id"],
            Some(1),
            vec![&tx.google_payment_token, &tx.google_order_id],
        ),
        PaymentProvider::Apple => Filter::new(
            first,
            &["apple_original_tx_id", "apple_tx_id", "apple_web_line_order_tx_id"],
            Some(2),
            vec![&tx.apple_original_tx_id, &tx.apple_tx_id, &tx.apple_web_line_order_tx_id],
        ),
        PaymentProvider::Rangeproof => {
            Filter::new(first, &["rangeproof_order_id"], Some(3), vec![&tx.rangeproof_order_id])
        }
        PaymentProvider::Nil => Filter::none(),
    }
}

/// A payment named the way a client claims it.
/// The condition a claim adds on the buyer: Google purchases carry the claimer's obfuscated
/// account id (bound as parameter `$n`); Apple payments must have no appAccountToken, since
/// upstream derives the Apple token from a master key as "" (a TODO).
fn claim_owner_filter(tx: &PaymentTx, n: usize) -> String {
    match tx.provider() {
        PaymentProvider::Google => format!(" AND google_obfuscated_account_id = ${n}"),
        PaymentProvider::Apple => " AND apple_app_account_token = ''".to_string(),
        _ => String::new(),
    }
}

fn claim_filter(tx: &PaymentTx, first: usize) -> Filter<'_> {
    match tx.provider() {
        PaymentProvider::Google => Filter::new(
            first,
            &["google_payment_token", "google_order_id"],
            Some(1),
            vec![&tx.google_payment_token, &tx.google_order_id],
        ),
        PaymentProvider::Apple => Filter::new(first, &["apple_tx_id"], Some(2), vec![&tx.apple_tx_id]),
        PaymentProvider::Rangeproof => {
            Filter::new(first, &["rangeproof_order_id"], Some(3), vec![&tx.rangeproof_order_id])
        }
        PaymentProvider::Nil => Filter::none(),
    }
}

/// Every billing cycle a renewal-info update names (the provider is not compared, as upstream).
fn renewal_filter(tx: &PaymentTx, first: usize) -> Filter<'_> {
    match tx.provider() {
        PaymentProvider::Google => Filter::new(
            first,
            &["google_payment_token", "google_order_id"],
            None,
            vec![&tx.google_payment_token, &tx.google_order_id],
        ),
        PaymentProvider::Apple => Filter::new(
            first,
            &["apple_original_tx_id", "apple_tx_id", "apple_web_line_order_tx_id"],
            None,
            vec![&tx.apple_original_tx_id, &tx.apple_tx_id, &tx.apple_web_line_order_tx_id],
        ),
        PaymentProvider::Rangeproof => {
            Filter::new(first, &["rangeproof_order_id"], None, vec![&tx.rangeproof_order_id])
        }
        PaymentProvider::Nil => Filter::none(),
    }
}

fn provider_param(p: PaymentProvider) -> i32 {
    p.as_i64() as i32
}

impl StoreTx for PgTx<'_> {
    fn runtime(&mut self) -> StoreResult<RuntimeRow> {
        let row = self
            .opt(
                "SELECT gen_index, gen_index_salt, backend_key, last_expire_unix_ts_ms,
                        apple_notification_checkpoint_unix_ts_ms, revocation_ticket FROM runtime LIMIT 1",
                &[],
            )?
            .ok_or_else(|| StoreError::Integrity("the runtime row is missing".into()))?;
        let salt = bytes(&row, 1)?.unwrap_or_default();
        let key = bytes(&row, 2)?.unwrap_or_default();
        Ok(RuntimeRow {
            gen_index: gen_value(int(&row, 0)?)?,
            gen_index_salt: <[u8; 16]>::try_from(salt.as_slice())
                .map_err(|_| StoreError::Integrity(format!("gen_index_salt is {} bytes, expected 16", salt.len())))?,
            backend_key: <[u8; 32]>::try_from(key.as_slice())
                .map_err(|_| StoreError::Integrity(format!("backend_key is {} bytes, expected 32", key.len())))?,
            last_expire_unix_ts_ms: int0(&row, 3)?,
            apple_notification_checkpoint_unix_ts_ms: int0(&row, 4)?,
            revocation_ticket: int0(&row, 5)?,
        })
    }

    fn revocation_ticket(&mut self) -> StoreResult<i64> {
        self.count("SELECT revocation_ticket FROM runtime LIMIT 1", &[])
    }

    fn take_gen_index(&mut self) -> StoreResult<u64> {
        let row = self
            .opt("UPDATE runtime SET gen_index = gen_index + 1 RETURNING gen_index - 1", &[])?
            .ok_or_else(|| StoreError::Integrity("the runtime row is missing".into()))?;
        gen_value(int(&row, 0)?)
    }

    fn claim_expiry_run(&mut self, ts: i64) -> StoreResult<bool> {
        // Another server's claim for the same day waits on the row lock and then finds the
        // condition false: exactly one wins.
        Ok(self.exec("UPDATE runtime SET last_expire_unix_ts_ms = $1 WHERE last_expire_unix_ts_ms < $1", &[&ts])? > 0)
    }

    fn bump_revocation_ticket(&mut self) -> StoreResult<()> {
        self.exec("UPDATE runtime SET revocation_ticket = revocation_ticket + 1", &[]).map(drop)
    }

    fn find_payment(&mut self, tx: &PaymentTx) -> StoreResult<Option<PaymentRow>> {
        let f = identity_filter(tx, 1);
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE {} ORDER BY id LIMIT 1", f.sql);
        self.opt(&sql, &f.params(vec![]))?.as_ref().map(payment_row).transpose()
    }

    fn insert_payment(&mut self, p: &NewPayment) -> StoreResult<i64> {
        let provider = p.tx.provider();
        let used = |s: &str, on: bool| if on { Some(s.to_string()) } else { None };
        let google = provider == PaymentProvider::Google;
        let apple = provider == PaymentProvider::Apple;
        let rangeproof = provider == PaymentProvider::Rangeproof;
        let account_id: Option<Vec<u8>> = p.google_obfuscated_account_id.map(|a| a.to_vec());
        let plan = p.plan.as_i64() as i32;
        let provider_v = provider_param(provider);
        let auto = !rangeproof;
        let apple_token = if apple { p.apple_app_account_token.as_str() } else { "" };
        let row = self
            .opt(
                "INSERT INTO payments (master_pkey, status, plan, payment_provider, auto_renewing, unredeemed_unix_ts_ms,
                     redeemed_unix_ts_ms, expiry_unix_ts_ms, grace_period_duration_ms, platform_refund_expiry_unix_ts_ms,
                     revoked_unix_ts_ms, apple_original_tx_id, apple_tx_id, apple_web_line_order_tx_id,
                     google_payment_token, google_order_id, rangeproof_order_id, refund_requested_unix_ts_ms,
                     google_obfuscated_account_id, apple_app_account_token)
                 VALUES (NULL, 1, $1, $2, $3, $4, NULL, $5, 0, $6, NULL, $7, $8, $9, $10, $11, $12, 0, $13, $14)
                 RETURNING id",
                &[
                    &plan,
                    &provider_v,
                    &auto,
                    &p.unredeemed_unix_ts_ms,
                    &p.expiry_unix_ts_ms,
                    &p.platform_refund_expiry_unix_ts_ms,
                    &used(&p.tx.apple_original_tx_id, apple),
                    &used(&p.tx.apple_tx_id, apple),
                    &used(&p.tx.apple_web_line_order_tx_id, apple),
                    &used(&p.tx.google_payment_token, google),
                    &used(&p.tx.google_order_id, google),
                    &used(&p.tx.rangeproof_order_id, rangeproof),
                    &account_id,
                    &apple_token,
                ],
            )?
            .ok_or_else(|| StoreError::Db("the insert returned no id".into()))?;
        int(&row, 0)
    }

    fn has_unredeemed_claimable(&mut self, tx: &PaymentTx) -> StoreResult<bool> {
        let f = claim_filter(tx, 1);
        let sql = format!("SELECT EXISTS (SELECT 1 FROM payments WHERE status = 1 AND {})", f.sql);
        self.exists(&sql, &f.params(vec![]))
    }

    fn claim_target_exists(&mut self, tx: &PaymentTx) -> StoreResult<bool> {
        let f = claim_filter(tx, 1);
        let sql = format!("SELECT EXISTS (SELECT 1 FROM payments WHERE {})", f.sql);
        self.exists(&sql, &f.params(vec![]))
    }

    fn newest_owner_of_subscription(&mut self, tx: &PaymentTx) -> StoreResult<Option<PubKeyBytes>> {
        let (sql, key) = match tx.provider() {
            PaymentProvider::Google => (
                "SELECT master_pkey FROM payments WHERE payment_provider = 1 AND google_payment_token = $1
                 AND master_pkey IS NOT NULL ORDER BY id DESC LIMIT 1",
                &tx.google_payment_token,
            ),
            PaymentProvider::Apple => (
                "SELECT master_pkey FROM payments WHERE payment_provider = 2 AND apple_original_tx_id = $1
                 AND master_pkey IS NOT NULL ORDER BY id DESC LIMIT 1",
                &tx.apple_original_tx_id,
            ),
            _ => return Ok(None),
        };
        Ok(self.owners(sql, &[key])?.into_iter().next().flatten())
    }

    fn claimable_by(&mut self, tx: &PaymentTx, master: &PubKeyBytes) -> StoreResult<bool> {
        let f = claim_filter(tx, 1);
        let extra = claim_owner_filter(tx, f.next(1));
        let sql = format!("SELECT EXISTS(SELECT 1 FROM payments WHERE status = 1 AND {}{extra})", f.sql);
        let account_id = google_obfuscated_account_id(master);
        let account_v: &[u8] = &account_id;
        let mut params = f.params(vec![]);
        if tx.provider() == PaymentProvider::Google {
            params.push(&account_v);
        }
        self.exists(&sql, &params)
    }

    fn claim_payment(&mut self, tx: &PaymentTx, master: &PubKeyBytes, redeemed_ts: i64) -> StoreResult<usize> {
        let f = claim_filter(tx, 3);
        let account_id = google_obfuscated_account_id(master);
        let account_v: &[u8] = &account_id;
        let extra = claim_owner_filter(tx, f.next(3));
        let sql = format!(
            "UPDATE payments SET master_pkey = $1, status = 2, redeemed_unix_ts_ms = $2 WHERE status = 1 AND {}{extra}",
            f.sql
        );
        let master_v: &[u8] = master;
        let mut params = f.params(vec![&master_v, &redeemed_ts]);
        if tx.provider() == PaymentProvider::Google {
            params.push(&account_v);
        }
        Ok(self.exec(&sql, &params)? as usize)
    }

    fn count_claimed_by(&mut self, tx: &PaymentTx, master: &PubKeyBytes) -> StoreResult<i64> {
        let f = claim_filter(tx, 2);
        let sql = format!("SELECT COUNT(*) FROM payments WHERE status > 1 AND master_pkey = $1 AND {}", f.sql);
        let master_v: &[u8] = master;
        self.count(&sql, &f.params(vec![&master_v]))
    }

    fn lookup_rows(&mut self, master: &PubKeyBytes, limit: usize) -> StoreResult<Vec<LookupRow>> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE master_pkey = $1 AND status IN (2, 3, 4) ORDER BY id DESC LIMIT $2"
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.query(&sql, &[&master.as_slice(), &limit])?;
        rows.iter().map(|r| payment_row(r).map(|p| p.as_lookup_row())).collect()
    }

    fn update_renewal_info(
        &mut self,
        tx: &PaymentTx,
        grace: Option<i64>,
        auto_renewing: Option<bool>,
    ) -> StoreResult<Vec<Option<PubKeyBytes>>> {
        let f = renewal_filter(tx, 1);
        let owners =
            self.owners(&format!("SELECT master_pkey FROM payments WHERE {} ORDER BY id", f.sql), &f.params(vec![]))?;
        let f2 = renewal_filter(tx, 2);
        if let Some(g) = grace {
            self.exec(
                &format!("UPDATE payments SET grace_period_duration_ms = $1 WHERE {}", f2.sql),
                &f2.params(vec![&g]),
            )?;
        }
        if let Some(a) = auto_renewing {
            // A revoked payment never renews again.
            self.exec(
                &format!("UPDATE payments SET auto_renewing = (status <> 4 AND $1) WHERE {}", f2.sql),
                &f2.params(vec![&a]),
            )?;
        }
        Ok(owners)
    }

    fn set_refund_requested(
        &mut self,
        tx: &PaymentTx,
        ts: i64,
        owner: Option<&PubKeyBytes>,
    ) -> StoreResult<Vec<Option<PubKeyBytes>>> {
        let owner_v: Option<&[u8]> = owner.map(|o| o.as_slice());
        let f = claim_filter(tx, 1);
        let owner_clause = if owner.is_some() { format!(" AND master_pkey = ${}", f.next(1)) } else { String::new() };
        let mut params = f.params(vec![]);
        if let Some(o) = &owner_v {
            params.push(o);
        }
        let owners = self
            .owners(&format!("SELECT master_pkey FROM payments WHERE {}{owner_clause} ORDER BY id", f.sql), &params)?;
        let f2 = claim_filter(tx, 2);
        let owner_clause2 = if owner.is_some() { format!(" AND master_pkey = ${}", f2.next(2)) } else { String::new() };
        let mut params = f2.params(vec![&ts]);
        if let Some(o) = &owner_v {
            params.push(o);
        }
        self.exec(
            &format!("UPDATE payments SET refund_requested_unix_ts_ms = $1 WHERE {}{owner_clause2}", f2.sql),
            &params,
        )?;
        Ok(owners)
    }

    fn subscription_rows(&mut self, provider: PaymentProvider, key: &str) -> StoreResult<Vec<SubscriptionRow>> {
        let sql = match provider {
            PaymentProvider::Google => {
                "SELECT id, master_pkey, status, expiry_unix_ts_ms, grace_period_duration_ms FROM payments
                 WHERE payment_provider = 1 AND google_payment_token = $1 AND status IN (1, 2, 3, 4) ORDER BY id"
            }
            PaymentProvider::Apple => {
                "SELECT id, master_pkey, status, expiry_unix_ts_ms, grace_period_duration_ms FROM payments
                 WHERE payment_provider = 2 AND apple_original_tx_id = $1 AND status IN (1, 2, 3, 4) ORDER BY id"
            }
            _ => return Ok(vec![]),
        };
        self.query(sql, &[&key])?
            .iter()
            .map(|r| {
                Ok(SubscriptionRow {
                    id: int(r, 0)?,
                    master_pkey: key32(r, 1)?,
                    status: int(r, 2)?,
                    expiry_unix_ts_ms: int0(r, 3)?,
                    grace_period_duration_ms: int0(r, 4)?,
                })
            })
            .collect()
    }

    fn mark_revoked(&mut self, id: i64, ts: i64) -> StoreResult<bool> {
        let Ok(id) = i32::try_from(id) else { return Ok(false) };
        Ok(self.exec(
            "UPDATE payments SET status = 4, revoked_unix_ts_ms = $1, auto_renewing = FALSE WHERE id = $2 AND status IN (1, 2)",
            &[&ts, &id],
        )? > 0)
    }

    fn expire_payments(&mut self, ts: i64) -> StoreResult<i64> {
        let owners = self.count(
            "SELECT COUNT(DISTINCT master_pkey) FROM payments WHERE status IN (1, 2) AND expiry_unix_ts_ms <= $1",
            &[&ts],
        )?;
        self.exec("UPDATE payments SET status = 3 WHERE status IN (1, 2) AND expiry_unix_ts_ms <= $1", &[&ts])?;
        Ok(owners)
    }

    fn payments_total(&mut self, master: &PubKeyBytes) -> StoreResult<i64> {
        self.count("SELECT COUNT(*) FROM payments WHERE master_pkey = $1", &[&master.as_slice()])
    }

    fn payment_history(&mut self, master: &PubKeyBytes, limit: u32) -> StoreResult<Vec<PaymentRow>> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE master_pkey = $1 AND status <> 1
             ORDER BY unredeemed_unix_ts_ms DESC, id DESC LIMIT $2"
        );
        let rows = self.query(&sql, &[&master.as_slice(), &i64::from(limit)])?;
        rows.iter().map(payment_row).collect()
    }

    fn user(&mut self, master: &PubKeyBytes) -> StoreResult<Option<UserRow>> {
        let Some(r) = self.opt(
            "SELECT gen_index, expiry_unix_ts_ms, grace_period_duration_ms, auto_renewing, refund_requested_unix_ts_ms
             FROM users WHERE master_pkey = $1",
            &[&master.as_slice()],
        )?
        else {
            return Ok(None);
        };
        Ok(Some(UserRow {
            gen_index: gen_value(int(&r, 0)?)?,
            expiry_unix_ts_ms: int0(&r, 1)?,
            grace_period_duration_ms: int0(&r, 2)?,
            auto_renewing: flag(&r, 3)?,
            refund_requested_unix_ts_ms: int0(&r, 4)?,
        }))
    }

    fn update_user_summary(&mut self, master: &PubKeyBytes, s: &Summary) -> StoreResult<()> {
        self.exec(
            "UPDATE users SET expiry_unix_ts_ms = $1, grace_period_duration_ms = $2, auto_renewing = $3,
                 refund_requested_unix_ts_ms = $4 WHERE master_pkey = $5",
            &[
                &s.expiry_unix_ts_ms,
                &s.grace_period_duration_ms,
                &s.auto_renewing,
                &s.refund_requested_unix_ts_ms,
                &master.as_slice(),
            ],
        )
        .map(drop)
    }

    fn upsert_user(&mut self, master: &PubKeyBytes, gen_index: u64, s: &Summary) -> StoreResult<()> {
        let account = google_obfuscated_account_id(master);
        let g = gen_param(gen_index)?;
        self.exec(
            "INSERT INTO users (master_pkey, gen_index, expiry_unix_ts_ms, grace_period_duration_ms, auto_renewing,
                 refund_requested_unix_ts_ms, google_obfuscated_account_id, apple_app_account_token)
             VALUES ($1, $2, $3, $4, $5, $6, $7, '')
             ON CONFLICT (master_pkey) DO UPDATE SET gen_index = EXCLUDED.gen_index,
                 expiry_unix_ts_ms = EXCLUDED.expiry_unix_ts_ms,
                 grace_period_duration_ms = EXCLUDED.grace_period_duration_ms,
                 auto_renewing = EXCLUDED.auto_renewing,
                 refund_requested_unix_ts_ms = EXCLUDED.refund_requested_unix_ts_ms,
                 google_obfuscated_account_id = EXCLUDED.google_obfuscated_account_id,
                 apple_app_account_token = EXCLUDED.apple_app_account_token",
            &[
                &master.as_slice(),
                &g,
                &s.expiry_unix_ts_ms,
                &s.grace_period_duration_ms,
                &s.auto_renewing,
                &s.refund_requested_unix_ts_ms,
                &account.as_slice(),
            ],
        )
        .map(drop)
    }

    fn delete_orphan_users(&mut self) -> StoreResult<i64> {
        Ok(self.exec(
            "DELETE FROM users WHERE master_pkey NOT IN (SELECT master_pkey FROM payments WHERE master_pkey IS NOT NULL)",
            &[],
        )? as i64)
    }

    fn revocation(&mut self, gen_index: u64) -> StoreResult<Option<RevocationRow>> {
        // An index the column cannot hold cannot be listed.
        let Ok(g) = i32::try_from(gen_index) else { return Ok(None) };
        self.opt(
            "SELECT gen_index, creation_unix_ts_ms, expiry_unix_ts_ms FROM revocations WHERE gen_index = $1",
            &[&g],
        )?
        .as_ref()
        .map(revocation_row)
        .transpose()
    }

    fn insert_revocation(&mut self, row: &RevocationRow) -> StoreResult<()> {
        let g = gen_param(row.gen_index)?;
        self.exec(
            "INSERT INTO revocations (gen_index, creation_unix_ts_ms, expiry_unix_ts_ms) VALUES ($1, $2, $3)",
            &[&g, &row.creation_unix_ts_ms, &row.expiry_unix_ts_ms],
        )
        .map(drop)
    }

    fn update_revocation(&mut self, row: &RevocationRow) -> StoreResult<()> {
        let Ok(g) = i32::try_from(row.gen_index) else { return Ok(()) };
        self.exec(
            "UPDATE revocations SET creation_unix_ts_ms = $1, expiry_unix_ts_ms = $2 WHERE gen_index = $3",
            &[&row.creation_unix_ts_ms, &row.expiry_unix_ts_ms, &g],
        )
        .map(drop)
    }

    fn delete_revocation(&mut self, gen_index: u64) -> StoreResult<bool> {
        let Ok(g) = i32::try_from(gen_index) else { return Ok(false) };
        Ok(self.exec("DELETE FROM revocations WHERE gen_index = $1", &[&g])? > 0)
    }

    fn revocations(&mut self) -> StoreResult<Vec<RevocationRow>> {
        self.query("SELECT gen_index, creation_unix_ts_ms, expiry_unix_ts_ms FROM revocations ORDER BY gen_index", &[])?
            .iter()
            .map(revocation_row)
            .collect()
    }

    fn delete_expired_revocations(&mut self, ts: i64) -> StoreResult<i64> {
        Ok(self.exec("DELETE FROM revocations WHERE expiry_unix_ts_ms <= $1", &[&ts])? as i64)
    }

    fn add_user_error(&mut self, provider: PaymentProvider, payment_id: &str, ts: i64) -> StoreResult<bool> {
        Ok(self.exec(
            "INSERT INTO user_errors (payment_id, payment_provider, unix_ts_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            &[&payment_id, &provider_param(provider), &ts],
        )? > 0)
    }

    fn delete_user_error(&mut self, provider: PaymentProvider, payment_id: &str) -> StoreResult<bool> {
        Ok(self.exec(
            "DELETE FROM user_errors WHERE payment_provider = $1 AND payment_id = $2",
            &[&provider_param(provider), &payment_id],
        )? > 0)
    }

    fn has_user_error_for(&mut self, master: &PubKeyBytes) -> StoreResult<bool> {
        self.exists(
            "SELECT EXISTS (SELECT 1 FROM payments p JOIN user_errors e
                ON (p.payment_provider = 2 AND p.apple_original_tx_id = e.payment_id)
                OR (p.payment_provider = 1 AND p.google_payment_token = e.payment_id)
             WHERE p.master_pkey = $1)",
            &[&master.as_slice()],
        )
    }

    fn has_user_error(&mut self, provider: PaymentProvider, payment_id: &str) -> StoreResult<bool> {
        self.exists(
            "SELECT EXISTS (SELECT 1 FROM user_errors WHERE payment_provider = $1 AND payment_id = $2)",
            &[&provider_param(provider), &payment_id],
        )
    }

    fn apple_uuid_seen(&mut self, uuid: &str) -> StoreResult<bool> {
        self.exists("SELECT EXISTS (SELECT 1 FROM apple_notification_uuid_history WHERE uuid = $1)", &[&uuid])
    }

    fn add_apple_uuid(&mut self, uuid: &str, expiry_unix_ts_ms: i64) -> StoreResult<()> {
        self.exec(
            "INSERT INTO apple_notification_uuid_history (uuid, expiry_unix_ts_ms) VALUES ($1, $2)",
            &[&uuid, &expiry_unix_ts_ms],
        )
        .map(drop)
    }

    fn set_apple_checkpoint(&mut self, ts: i64) -> StoreResult<()> {
        self.exec("UPDATE runtime SET apple_notification_checkpoint_unix_ts_ms = $1", &[&ts]).map(drop)
    }

    fn google_notification_handled(&mut self, message_id: i64) -> StoreResult<Option<bool>> {
        self.opt("SELECT handled FROM google_notification_history WHERE message_id = $1 LIMIT 1", &[&message_id])?
            .map(|r| flag(&r, 0))
            .transpose()
    }

    fn add_google_notification(
        &mut self,
        message_id: i64,
        payload: Option<&str>,
        expiry_unix_ts_ms: i64,
    ) -> StoreResult<bool> {
        if self.google_notification_handled(message_id)?.is_some() {
            return Ok(false);
        }
        self.exec(
            "INSERT INTO google_notification_history (message_id, handled, payload, expiry_unix_ts_ms)
             VALUES ($1, FALSE, $2, $3)",
            &[&message_id, &payload, &expiry_unix_ts_ms],
        )?;
        Ok(true)
    }

    fn mark_google_notification_handled(&mut self, message_id: i64) -> StoreResult<bool> {
        Ok(self.exec(
            "UPDATE google_notification_history SET handled = TRUE, payload = NULL WHERE message_id = $1",
            &[&message_id],
        )? > 0)
    }

    fn delete_google_notification(&mut self, message_id: i64) -> StoreResult<bool> {
        Ok(self.exec("DELETE FROM google_notification_history WHERE message_id = $1", &[&message_id])? > 0)
    }

    fn unhandled_google_notifications(&mut self) -> StoreResult<Vec<(i64, Option<String>, i64)>> {
        // The table has no key recording insertion order (SQLite uses its rowid); the expiry is
        // the event time plus a constant, so this is oldest event first.
        self.query(
            "SELECT message_id, payload, expiry_unix_ts_ms FROM google_notification_history WHERE NOT handled
             ORDER BY expiry_unix_ts_ms, message_id",
            &[],
        )?
        .iter()
        .map(|r| {
            let payload: Option<String> =
                r.try_get(1).map_err(|e| decode_err("google_notification_history.payload", e))?;
            Ok((int(r, 0)?, payload, int0(r, 2)?))
        })
        .collect()
    }

    fn delete_expired_apple_uuids(&mut self, ts: i64) -> StoreResult<i64> {
        Ok(self.exec("DELETE FROM apple_notification_uuid_history WHERE expiry_unix_ts_ms <= $1", &[&ts])? as i64)
    }

    fn delete_expired_handled_google_notifications(&mut self, ts: i64) -> StoreResult<i64> {
        Ok(self.exec("DELETE FROM google_notification_history WHERE expiry_unix_ts_ms <= $1 AND handled", &[&ts])?
            as i64)
    }

    fn count_rows(&mut self, table: &str) -> StoreResult<i64> {
        if !TABLES.contains(&table) {
            return Err(StoreError::Db(format!("unknown table {table}")));
        }
        self.count(&format!("SELECT COUNT(*) FROM {table}"), &[])
    }

    fn count_unredeemed(&mut self) -> StoreResult<i64> {
        self.count("SELECT COUNT(*) FROM payments WHERE status = 1", &[])
    }

    fn report_counts(&mut self, kind: crate::reports::ReportKind) -> StoreResult<Vec<crate::reports::PeriodCounts>> {
        self.query(&report_sql(kind), &[])?
            .iter()
            .map(|r| {
                let mut counts = [0; 11];
                for (i, c) in counts.iter_mut().enumerate() {
                    *c = int0(r, i + 1)?;
                }
                Ok(crate::reports::PeriodCounts::from_columns(int(r, 0)?, counts))
            })
            .collect()
    }

    fn count_active_users(&mut self, ts: i64) -> StoreResult<i64> {
        self.count(
            "SELECT COUNT(DISTINCT master_pkey) FROM payments
             WHERE unredeemed_unix_ts_ms <= $1 AND expiry_unix_ts_ms >= $1 AND status != 4",
            &[&ts],
        )
    }

    // Savepoint names are fixed identifiers chosen by the code, never user input.
    fn savepoint(&mut self, name: &str) -> StoreResult<()> {
        self.simple(&format!("SAVEPOINT {name}"))
    }

    fn release(&mut self, name: &str) -> StoreResult<()> {
        self.simple(&format!("RELEASE SAVEPOINT {name}"))
    }

    fn rollback_to(&mut self, name: &str) -> StoreResult<()> {
        self.simple(&format!("ROLLBACK TO SAVEPOINT {name}; RELEASE SAVEPOINT {name}"))?;
        // Back at a point before the failure: the transaction is usable again.
        self.conn()?.aborted = false;
        Ok(())
    }
}

/// The operator reports' grouping (see [`super::report_sql`]) in PostgreSQL's date functions:
/// each event counted in the UTC day, ISO week (Monday) or month that holds its own timestamp.
fn report_sql(kind: crate::reports::ReportKind) -> String {
    use crate::reports::ReportKind;
    let unit = match kind {
        ReportKind::Daily => "day",
        ReportKind::Weekly => "week",
        ReportKind::Monthly => "month",
    };
    super::report_sql(|col| {
        format!(
            "(EXTRACT(EPOCH FROM date_trunc('{unit}', to_timestamp({col} / 1000.0) AT TIME ZONE 'UTC'))::BIGINT * 1000)"
        )
    })
}

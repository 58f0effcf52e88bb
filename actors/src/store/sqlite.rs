//! SQLite backend: connection setup, bootstrap and migrations, and the SQL behind [`StoreTx`].

use std::path::Path;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, TransactionBehavior, params};

use super::rows::{NewPayment, PaymentRow, RuntimeRow, SubscriptionRow, UserRow};
use super::schema::{CREATE_SQLITE, MIGRATIONS, SCHEMA_VERSION};
use super::{StoreError, StoreResult, StoreTx};
use crate::domain::hashes::google_obfuscated_account_id;
use crate::domain::lookup::{LookupRow, Summary};
use crate::domain::revocation::RevocationRow;
use crate::domain::types::{PaymentProvider, PaymentTx, PubKeyBytes};

/// Where the SQLite database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteTarget {
    /// A file path, an SQLite URI filename (when `uri`), or `:memory:`.
    pub path: String,
    pub uri: bool,
}

impl SqliteTarget {
    pub fn file(path: impl AsRef<Path>) -> Self {
        Self { path: path.as_ref().to_string_lossy().into_owned(), uri: false }
    }
    pub fn memory() -> Self {
        Self { path: ":memory:".into(), uri: false }
    }
    /// In-memory databases cannot be shared with separate reader connections.
    pub fn is_memory(&self) -> bool {
        self.path == ":memory:" || (self.uri && (self.path.contains("mode=memory") || self.path.contains(":memory:")))
    }
}

/// How long a statement waits for another connection's lock (the admin CLI may write
/// while the server runs).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

fn db_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => StoreError::Busy,
        _ => StoreError::Db(e.to_string()),
    }
}

/// Opens the read-write connection (the only one the server has) with upstream's pragmas.
pub fn open_writer(target: &SqliteTarget) -> StoreResult<Connection> {
    let parent = Path::new(&target.path).parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent.filter(|_| !target.uri && !target.is_memory()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| StoreError::Db(format!("Failed to create directory for {}: {e}", target.path)))?;
    }
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if target.uri {
        flags |= OpenFlags::SQLITE_OPEN_URI;
    }
    let conn = Connection::open_with_flags(&target.path, flags).map_err(db_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    // WAL lets readers run beside the writer; FULL syncs the log on every commit so an
    // acknowledged write survives a crash of the process or the machine.
    conn.pragma_update(None, "journal_mode", "WAL").map_err(db_err)?;
    conn.pragma_update(None, "synchronous", "FULL").map_err(db_err)?;
    conn.pragma_update(None, "foreign_keys", "ON").map_err(db_err)?;
    tune(&conn)?;
    Ok(conn)
}

/// Opens a read-only connection to a file database.
pub fn open_reader(target: &SqliteTarget) -> StoreResult<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if target.uri {
        flags |= OpenFlags::SQLITE_OPEN_URI;
    }
    let conn = Connection::open_with_flags(&target.path, flags).map_err(db_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
    tune(&conn)?;
    Ok(conn)
}

/// Statement caching that actually reuses plans: with the query-planner stability guarantee a
/// cached statement is not recompiled each time new values are bound to it.
fn tune(conn: &Connection) -> StoreResult<()> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true).map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// What bootstrap found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapReport {
    pub from_version: i64,
    pub created_runtime: bool,
    pub migrations: Vec<String>,
}

/// Brings the database to schema version 9 and makes sure the runtime row exists, all in one
/// transaction. `new_backend_key` is used only when the runtime row is created.
pub fn bootstrap(conn: &mut Connection, new_backend_key: [u8; 32]) -> StoreResult<BootstrapReport> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    tx.execute_batch(CREATE_SQLITE).map_err(db_err)?;
    let from_version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(db_err)?;
    let mut version = from_version;
    let mut migrations = Vec::new();
    if version == 0 {
        version = SCHEMA_VERSION;
    }
    while version < SCHEMA_VERSION {
        let Some(step) = MIGRATIONS.iter().find(|m| m.from == version) else {
            break;
        };
        tx.execute_batch(step.sql).map_err(db_err)?;
        if step.backfill_user_account_ids {
            let keys: Vec<Vec<u8>> = {
                let mut st = tx.prepare("SELECT master_pkey FROM users").map_err(db_err)?;
                st.query_map([], |r| r.get(0)).map_err(db_err)?.collect::<Result<_, _>>().map_err(db_err)?
            };
            for key in keys {
                let Ok(k) = <[u8; 32]>::try_from(key.as_slice()) else {
                    continue;
                };
                tx.execute(
                    "UPDATE users SET google_obfuscated_account_id = ? WHERE master_pkey = ?",
                    params![google_obfuscated_account_id(&k).as_slice(), key],
                )
                .map_err(db_err)?;
            }
        }
        migrations.push(format!("Migrating DB version from {version} => {}", version + 1));
        version += 1;
    }
    if version != SCHEMA_VERSION {
        return Err(StoreError::Integrity(format!(
            "unsupported database schema version {from_version} (this server reads version {SCHEMA_VERSION} and migrates from 5 and later)"
        )));
    }
    tx.pragma_update(None, "user_version", version).map_err(db_err)?;

    // Helpful lookups; upstream ignores indexes, so the file stays interchangeable.
    tx.execute_batch(
        "CREATE INDEX IF NOT EXISTS idx_payments_master_pkey ON payments(master_pkey);
         CREATE INDEX IF NOT EXISTS idx_payments_google_payment_token ON payments(google_payment_token);
         CREATE INDEX IF NOT EXISTS idx_payments_apple_tx_id ON payments(apple_tx_id);
         CREATE INDEX IF NOT EXISTS idx_payments_apple_original_tx_id ON payments(apple_original_tx_id);
         CREATE INDEX IF NOT EXISTS idx_payments_rangeproof_order_id ON payments(rangeproof_order_id);",
    )
    .map_err(db_err)?;

    let rows: i64 = tx.query_row("SELECT COUNT(*) FROM runtime", [], |r| r.get(0)).map_err(db_err)?;
    if rows > 1 {
        return Err(StoreError::Integrity(format!("the runtime table holds {rows} rows, expected one")));
    }
    let created_runtime = rows == 0;
    if created_runtime {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| StoreError::Db(format!("no randomness for the gen_index salt: {e}")))?;
        tx.execute(
            "INSERT INTO runtime (gen_index, gen_index_salt, backend_key, last_expire_unix_ts_ms,
                 apple_notification_checkpoint_unix_ts_ms, revocation_ticket) VALUES (0, ?, ?, 0, 0, 0)",
            params![salt.as_slice(), new_backend_key.as_slice()],
        )
        .map_err(db_err)?;
    }
    tx.commit().map_err(db_err)?;
    Ok(BootstrapReport { from_version, created_runtime, migrations })
}

/// Checks, without changing anything, that a database opened without [`bootstrap`] has the
/// schema this build reads (the admin CLI neither creates nor migrates one).
pub fn check_schema(conn: &Connection) -> StoreResult<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(db_err)?;
    if version == SCHEMA_VERSION {
        return Ok(());
    }
    Err(StoreError::Integrity(if version == 0 {
        "the database has no Session Pro tables yet (start the server once to create them)".to_string()
    } else {
        format!(
            "the database has schema version {version}, this build reads version {SCHEMA_VERSION} \
             (start the server once to migrate it)"
        )
    }))
}

/// Runs `f` in a read transaction (one consistent snapshot).
pub fn read<T>(conn: &mut Connection, f: impl FnOnce(&mut dyn StoreTx) -> StoreResult<T>) -> StoreResult<T> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred).map_err(db_err)?;
    let out = f(&mut SqliteTx { conn: &tx })?;
    tx.commit().map_err(db_err)?;
    Ok(out)
}

/// Runs `f` in a write transaction that commits when `f` succeeds and rolls back otherwise.
pub fn write<T, E: From<StoreError>>(
    conn: &mut Connection,
    f: impl FnOnce(&mut dyn StoreTx) -> Result<T, E>,
) -> Result<T, E> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(db_err)?;
    let out = f(&mut SqliteTx { conn: &tx })?;
    tx.commit().map_err(db_err)?;
    Ok(out)
}

/// One transaction's view of the connection.
pub struct SqliteTx<'c> {
    pub conn: &'c Connection,
}

const PAYMENT_COLUMNS: &str = "id, master_pkey, status, plan, payment_provider, auto_renewing, unredeemed_unix_ts_ms,
    redeemed_unix_ts_ms, expiry_unix_ts_ms, grace_period_duration_ms, platform_refund_expiry_unix_ts_ms,
    revoked_unix_ts_ms, apple_original_tx_id, apple_tx_id, apple_web_line_order_tx_id, google_payment_token,
    google_order_id, rangeproof_order_id, refund_requested_unix_ts_ms";

fn int0(row: &Row<'_>, idx: usize) -> rusqlite::Result<i64> {
    Ok(row.get::<_, Option<i64>>(idx)?.unwrap_or(0))
}

/// Text columns may hold NULL, or numbers where upstream declared them `STRING`.
fn text(row: &Row<'_>, idx: usize) -> rusqlite::Result<String> {
    Ok(match row.get_ref(idx)? {
        ValueRef::Null => String::new(),
        ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => f.to_string(),
    })
}

fn key32(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<PubKeyBytes>> {
    match row.get_ref(idx)? {
        ValueRef::Null => Ok(None),
        ValueRef::Blob(b) if b.len() == 32 => Ok(b.try_into().ok()),
        other => Err(rusqlite::Error::InvalidColumnType(idx, "32-byte key".into(), other.data_type())),
    }
}

fn payment_row(row: &Row<'_>) -> rusqlite::Result<PaymentRow> {
    Ok(PaymentRow {
        id: row.get(0)?,
        master_pkey: key32(row, 1)?,
        status: row.get(2)?,
        plan: int0(row, 3)?,
        payment_provider: row.get(4)?,
        auto_renewing: int0(row, 5)? != 0,
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

/// WHERE clause and parameters naming the full identity tuple of a stored payment.
fn identity_filter(tx: &PaymentTx) -> (&'static str, Vec<&str>) {
    match tx.provider() {
        PaymentProvider::Google => (
            "payment_provider = 1 AND google_payment_token = ? AND google_order_id = ?",
            vec![&tx.google_payment_token, &tx.google_order_id],
        ),
        PaymentProvider::Apple => (
            "payment_provider = 2 AND apple_original_tx_id = ? AND apple_tx_id = ? AND apple_web_line_order_tx_id = ?",
            vec![&tx.apple_original_tx_id, &tx.apple_tx_id, &tx.apple_web_line_order_tx_id],
        ),
        PaymentProvider::Rangeproof => {
            ("payment_provider = 3 AND rangeproof_order_id = ?", vec![&tx.rangeproof_order_id])
        }
        PaymentProvider::Nil => ("0", vec![]),
    }
}

/// WHERE clause naming a payment the way a client claims it.
fn claim_filter(tx: &PaymentTx) -> (&'static str, Vec<&str>) {
    match tx.provider() {
        PaymentProvider::Google => (
            "payment_provider = 1 AND google_payment_token = ? AND google_order_id = ?",
            vec![&tx.google_payment_token, &tx.google_order_id],
        ),
        PaymentProvider::Apple => ("payment_provider = 2 AND apple_tx_id = ?", vec![&tx.apple_tx_id]),
        PaymentProvider::Rangeproof => {
            ("payment_provider = 3 AND rangeproof_order_id = ?", vec![&tx.rangeproof_order_id])
        }
        PaymentProvider::Nil => ("0", vec![]),
    }
}

/// The part of a claim's WHERE clause that ties the payment to the claiming key (Google: one
/// parameter, the obfuscated account id).
fn claim_owner_filter(tx: &PaymentTx) -> &'static str {
    match tx.provider() {
        PaymentProvider::Google => " AND google_obfuscated_account_id = ?",
        // Upstream derives the Apple account token from the master key as "" (a TODO), so
        // only payments without an appAccountToken can be claimed.
        PaymentProvider::Apple => " AND apple_app_account_token = ''",
        _ => "",
    }
}

/// WHERE clause naming every billing cycle of a renewal-info target (provider not compared for
/// Google, as upstream does).
fn renewal_filter(tx: &PaymentTx) -> (&'static str, Vec<&str>) {
    match tx.provider() {
        PaymentProvider::Google => {
            ("google_payment_token = ? AND google_order_id = ?", vec![&tx.google_payment_token, &tx.google_order_id])
        }
        PaymentProvider::Apple => (
            "apple_original_tx_id = ? AND apple_tx_id = ? AND apple_web_line_order_tx_id = ?",
            vec![&tx.apple_original_tx_id, &tx.apple_tx_id, &tx.apple_web_line_order_tx_id],
        ),
        PaymentProvider::Rangeproof => ("rangeproof_order_id = ?", vec![&tx.rangeproof_order_id]),
        PaymentProvider::Nil => ("0", vec![]),
    }
}

fn to_sql_params<'a>(head: Vec<&'a dyn rusqlite::ToSql>, strs: &'a [&'a str]) -> Vec<&'a dyn rusqlite::ToSql> {
    let mut v = head;
    v.extend(strs.iter().map(|s| s as &dyn rusqlite::ToSql));
    v
}

impl SqliteTx<'_> {
    fn owners(&self, sql: &str, params: &[&dyn rusqlite::ToSql]) -> StoreResult<Vec<Option<PubKeyBytes>>> {
        let mut st = self.conn.prepare_cached(sql).map_err(db_err)?;
        let rows = st.query_map(params, |r| key32(r, 0)).map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)
    }

    fn count(&self, sql: &str, params: &[&dyn rusqlite::ToSql]) -> StoreResult<i64> {
        self.conn.prepare_cached(sql).map_err(db_err)?.query_row(params, |r| r.get(0)).map_err(db_err)
    }

    fn exec(&self, sql: &str, params: &[&dyn rusqlite::ToSql]) -> StoreResult<usize> {
        self.conn.prepare_cached(sql).map_err(db_err)?.execute(params).map_err(db_err)
    }
}

impl StoreTx for SqliteTx<'_> {
    fn runtime(&mut self) -> StoreResult<RuntimeRow> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT gen_index, gen_index_salt, backend_key, last_expire_unix_ts_ms,
                        apple_notification_checkpoint_unix_ts_ms, revocation_ticket FROM runtime",
            )
            .map_err(db_err)?;
        let row = st
            .query_row([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                    int0(r, 3)?,
                    int0(r, 4)?,
                    int0(r, 5)?,
                ))
            })
            .optional()
            .map_err(db_err)?
            .ok_or_else(|| StoreError::Integrity("the runtime row is missing".into()))?;
        let salt = <[u8; 16]>::try_from(row.1.as_slice())
            .map_err(|_| StoreError::Integrity(format!("gen_index_salt is {} bytes, expected 16", row.1.len())))?;
        let key = <[u8; 32]>::try_from(row.2.as_slice())
            .map_err(|_| StoreError::Integrity(format!("backend_key is {} bytes, expected 32", row.2.len())))?;
        Ok(RuntimeRow {
            gen_index: u64::try_from(row.0).map_err(|_| StoreError::Integrity("negative gen_index".into()))?,
            gen_index_salt: salt,
            backend_key: key,
            last_expire_unix_ts_ms: row.3,
            apple_notification_checkpoint_unix_ts_ms: row.4,
            revocation_ticket: row.5,
        })
    }

    fn revocation_ticket(&mut self) -> StoreResult<i64> {
        Ok(self
            .conn
            .prepare_cached("SELECT revocation_ticket FROM runtime")
            .map_err(db_err)?
            .query_row([], |r| r.get(0))
            .optional()
            .map_err(db_err)?
            .unwrap_or(0))
    }

    fn take_gen_index(&mut self) -> StoreResult<u64> {
        let g: i64 = self
            .conn
            .prepare_cached("UPDATE runtime SET gen_index = gen_index + 1 RETURNING gen_index - 1")
            .map_err(db_err)?
            .query_row([], |r| r.get(0))
            .map_err(db_err)?;
        u64::try_from(g).map_err(|_| StoreError::Integrity("negative gen_index".into()))
    }

    fn claim_expiry_run(&mut self, ts: i64) -> StoreResult<bool> {
        Ok(self.exec("UPDATE runtime SET last_expire_unix_ts_ms = ? WHERE last_expire_unix_ts_ms < ?", &[&ts, &ts])?
            > 0)
    }

    fn bump_revocation_ticket(&mut self) -> StoreResult<()> {
        self.exec("UPDATE runtime SET revocation_ticket = revocation_ticket + 1", &[]).map(drop)
    }

    fn find_payment(&mut self, tx: &PaymentTx) -> StoreResult<Option<PaymentRow>> {
        let (filter, strs) = identity_filter(tx);
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE {filter} ORDER BY id LIMIT 1");
        let params = to_sql_params(vec![], &strs);
        self.conn
            .prepare_cached(&sql)
            .map_err(db_err)?
            .query_row(params.as_slice(), payment_row)
            .optional()
            .map_err(db_err)
    }

    fn insert_payment(&mut self, p: &NewPayment) -> StoreResult<i64> {
        let provider = p.tx.provider();
        let opt = |s: &str, used: bool| if used { Some(s.to_string()) } else { None };
        let google = provider == PaymentProvider::Google;
        let apple = provider == PaymentProvider::Apple;
        let rangeproof = provider == PaymentProvider::Rangeproof;
        let account_id = p.google_obfuscated_account_id.map(|a| a.to_vec());
        self.exec(
            "INSERT INTO payments (master_pkey, status, plan, payment_provider, auto_renewing, unredeemed_unix_ts_ms,
                 redeemed_unix_ts_ms, expiry_unix_ts_ms, grace_period_duration_ms, platform_refund_expiry_unix_ts_ms,
                 revoked_unix_ts_ms, apple_original_tx_id, apple_tx_id, apple_web_line_order_tx_id,
                 google_payment_token, google_order_id, rangeproof_order_id, refund_requested_unix_ts_ms,
                 google_obfuscated_account_id, apple_app_account_token)
             VALUES (NULL, 1, ?, ?, ?, ?, NULL, ?, 0, ?, NULL, ?, ?, ?, ?, ?, ?, 0, ?, ?)",
            &[
                &p.plan.as_i64(),
                &provider.as_i64(),
                &!rangeproof,
                &p.unredeemed_unix_ts_ms,
                &p.expiry_unix_ts_ms,
                &p.platform_refund_expiry_unix_ts_ms,
                &opt(&p.tx.apple_original_tx_id, apple),
                &opt(&p.tx.apple_tx_id, apple),
                &opt(&p.tx.apple_web_line_order_tx_id, apple),
                &opt(&p.tx.google_payment_token, google),
                &opt(&p.tx.google_order_id, google),
                &opt(&p.tx.rangeproof_order_id, rangeproof),
                &account_id,
                &if apple { p.apple_app_account_token.as_str() } else { "" },
            ],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    fn has_unredeemed_claimable(&mut self, tx: &PaymentTx) -> StoreResult<bool> {
        let (filter, strs) = claim_filter(tx);
        let sql = format!("SELECT EXISTS(SELECT 1 FROM payments WHERE status = 1 AND {filter})");
        Ok(self.count(&sql, &to_sql_params(vec![], &strs))? != 0)
    }

    fn claim_target_exists(&mut self, tx: &PaymentTx) -> StoreResult<bool> {
        let (filter, strs) = claim_filter(tx);
        let sql = format!("SELECT EXISTS(SELECT 1 FROM payments WHERE {filter})");
        Ok(self.count(&sql, &to_sql_params(vec![], &strs))? != 0)
    }

    fn newest_owner_of_subscription(&mut self, tx: &PaymentTx) -> StoreResult<Option<PubKeyBytes>> {
        let (sql, key) = match tx.provider() {
            PaymentProvider::Google => (
                "SELECT master_pkey FROM payments WHERE payment_provider = 1 AND google_payment_token = ?
                 AND master_pkey IS NOT NULL ORDER BY id DESC LIMIT 1",
                &tx.google_payment_token,
            ),
            PaymentProvider::Apple => (
                "SELECT master_pkey FROM payments WHERE payment_provider = 2 AND apple_original_tx_id = ?
                 AND master_pkey IS NOT NULL ORDER BY id DESC LIMIT 1",
                &tx.apple_original_tx_id,
            ),
            _ => return Ok(None),
        };
        Ok(self.owners(sql, &[key])?.into_iter().next().flatten())
    }

    fn claimable_by(&mut self, tx: &PaymentTx, master: &PubKeyBytes) -> StoreResult<bool> {
        let (filter, strs) = claim_filter(tx);
        let sql =
            format!("SELECT EXISTS(SELECT 1 FROM payments WHERE status = 1 AND {filter}{})", claim_owner_filter(tx));
        let account_id = google_obfuscated_account_id(master);
        let account_v: &[u8] = &account_id;
        let mut params = to_sql_params(vec![], &strs);
        if tx.provider() == PaymentProvider::Google {
            params.push(&account_v);
        }
        Ok(self.count(&sql, &params)? != 0)
    }

    fn claim_payment(&mut self, tx: &PaymentTx, master: &PubKeyBytes, redeemed_ts: i64) -> StoreResult<usize> {
        let (filter, strs) = claim_filter(tx);
        let account_id = google_obfuscated_account_id(master);
        let extra = claim_owner_filter(tx);
        let sql = format!(
            "UPDATE payments SET master_pkey = ?, status = 2, redeemed_unix_ts_ms = ? WHERE status = 1 AND {filter}{extra}"
        );
        let master_v: &[u8] = master;
        let mut params = to_sql_params(vec![&master_v, &redeemed_ts], &strs);
        let account_v: &[u8] = &account_id;
        if tx.provider() == PaymentProvider::Google {
            params.push(&account_v);
        }
        self.exec(&sql, &params)
    }

    fn count_claimed_by(&mut self, tx: &PaymentTx, master: &PubKeyBytes) -> StoreResult<i64> {
        let (filter, strs) = claim_filter(tx);
        let sql = format!("SELECT COUNT(*) FROM payments WHERE status > 1 AND master_pkey = ? AND {filter}");
        let master_v: &[u8] = master;
        self.count(&sql, &to_sql_params(vec![&master_v], &strs))
    }

    fn lookup_rows(&mut self, master: &PubKeyBytes, limit: usize) -> StoreResult<Vec<LookupRow>> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE master_pkey = ? AND status IN (2, 3, 4) ORDER BY id DESC LIMIT ?"
        );
        let mut st = self.conn.prepare_cached(&sql).map_err(db_err)?;
        let rows = st.query_map(params![master.as_slice(), limit as i64], payment_row).map_err(db_err)?;
        rows.map(|r| r.map(|p| p.as_lookup_row())).collect::<Result<_, _>>().map_err(db_err)
    }

    fn update_renewal_info(
        &mut self,
        tx: &PaymentTx,
        grace: Option<i64>,
        auto_renewing: Option<bool>,
    ) -> StoreResult<Vec<Option<PubKeyBytes>>> {
        let (filter, strs) = renewal_filter(tx);
        let owners = self.owners(
            &format!("SELECT master_pkey FROM payments WHERE {filter} ORDER BY id"),
            &to_sql_params(vec![], &strs),
        )?;
        if let Some(g) = grace {
            self.exec(
                &format!("UPDATE payments SET grace_period_duration_ms = ? WHERE {filter}"),
                &to_sql_params(vec![&g], &strs),
            )?;
        }
        if let Some(a) = auto_renewing {
            self.exec(
                &format!("UPDATE payments SET auto_renewing = CASE WHEN status = 4 THEN 0 ELSE ? END WHERE {filter}"),
                &to_sql_params(vec![&a], &strs),
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
        let (filter, strs) = claim_filter(tx);
        let owner_v: Option<&[u8]> = owner.map(|o| o.as_slice());
        let owner_clause = if owner.is_some() { " AND master_pkey = ?" } else { "" };
        let mut select_params = to_sql_params(vec![], &strs);
        if let Some(o) = &owner_v {
            select_params.push(o);
        }
        let owners = self.owners(
            &format!("SELECT master_pkey FROM payments WHERE {filter}{owner_clause} ORDER BY id"),
            &select_params,
        )?;
        let mut update_params = to_sql_params(vec![&ts], &strs);
        if let Some(o) = &owner_v {
            update_params.push(o);
        }
        self.exec(
            &format!("UPDATE payments SET refund_requested_unix_ts_ms = ? WHERE {filter}{owner_clause}"),
            &update_params,
        )?;
        Ok(owners)
    }

    fn subscription_rows(&mut self, provider: PaymentProvider, key: &str) -> StoreResult<Vec<SubscriptionRow>> {
        let sql = match provider {
            PaymentProvider::Google => {
                "SELECT id, master_pkey, status, expiry_unix_ts_ms, grace_period_duration_ms FROM payments
                 WHERE payment_provider = 1 AND google_payment_token = ? AND status IN (1, 2, 3, 4) ORDER BY id"
            }
            PaymentProvider::Apple => {
                "SELECT id, master_pkey, status, expiry_unix_ts_ms, grace_period_duration_ms FROM payments
                 WHERE payment_provider = 2 AND apple_original_tx_id = ? AND status IN (1, 2, 3, 4) ORDER BY id"
            }
            _ => return Ok(vec![]),
        };
        let mut st = self.conn.prepare_cached(sql).map_err(db_err)?;
        let rows = st
            .query_map([key], |r| {
                Ok(SubscriptionRow {
                    id: r.get(0)?,
                    master_pkey: key32(r, 1)?,
                    status: r.get(2)?,
                    expiry_unix_ts_ms: int0(r, 3)?,
                    grace_period_duration_ms: int0(r, 4)?,
                })
            })
            .map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)
    }

    fn mark_revoked(&mut self, id: i64, ts: i64) -> StoreResult<bool> {
        Ok(self.exec(
            "UPDATE payments SET status = 4, revoked_unix_ts_ms = ?, auto_renewing = 0 WHERE id = ? AND status IN (1, 2)",
            &[&ts, &id],
        )? > 0)
    }

    fn expire_payments(&mut self, ts: i64) -> StoreResult<i64> {
        let owners = self.count(
            "SELECT COUNT(DISTINCT master_pkey) FROM payments WHERE status IN (1, 2) AND expiry_unix_ts_ms <= ?",
            &[&ts],
        )?;
        self.exec("UPDATE payments SET status = 3 WHERE status IN (1, 2) AND expiry_unix_ts_ms <= ?", &[&ts])?;
        Ok(owners)
    }

    fn payments_total(&mut self, master: &PubKeyBytes) -> StoreResult<i64> {
        let m: &[u8] = master;
        self.count("SELECT COUNT(*) FROM payments WHERE master_pkey = ?", &[&m])
    }

    fn payment_history(&mut self, master: &PubKeyBytes, limit: u32) -> StoreResult<Vec<PaymentRow>> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE master_pkey = ? AND status != 1
             ORDER BY unredeemed_unix_ts_ms DESC, id DESC LIMIT ?"
        );
        let mut st = self.conn.prepare_cached(&sql).map_err(db_err)?;
        let rows = st.query_map(params![master.as_slice(), i64::from(limit)], payment_row).map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)
    }

    fn user(&mut self, master: &PubKeyBytes) -> StoreResult<Option<UserRow>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT gen_index, expiry_unix_ts_ms, grace_period_duration_ms, auto_renewing, refund_requested_unix_ts_ms
                 FROM users WHERE master_pkey = ?",
            )
            .map_err(db_err)?;
        let row = st
            .query_row([master.as_slice()], |r| {
                Ok((r.get::<_, i64>(0)?, int0(r, 1)?, int0(r, 2)?, int0(r, 3)? != 0, int0(r, 4)?))
            })
            .optional()
            .map_err(db_err)?;
        row.map(|(g, expiry, grace, auto, refund)| {
            Ok(UserRow {
                gen_index: u64::try_from(g).map_err(|_| StoreError::Integrity("negative user gen_index".into()))?,
                expiry_unix_ts_ms: expiry,
                grace_period_duration_ms: grace,
                auto_renewing: auto,
                refund_requested_unix_ts_ms: refund,
            })
        })
        .transpose()
    }

    fn update_user_summary(&mut self, master: &PubKeyBytes, s: &Summary) -> StoreResult<()> {
        let m: &[u8] = master;
        self.exec(
            "UPDATE users SET expiry_unix_ts_ms = ?, grace_period_duration_ms = ?, auto_renewing = ?,
                 refund_requested_unix_ts_ms = ? WHERE master_pkey = ?",
            &[&s.expiry_unix_ts_ms, &s.grace_period_duration_ms, &s.auto_renewing, &s.refund_requested_unix_ts_ms, &m],
        )
        .map(drop)
    }

    fn upsert_user(&mut self, master: &PubKeyBytes, gen_index: u64, s: &Summary) -> StoreResult<()> {
        let m: &[u8] = master;
        let account: &[u8] = &google_obfuscated_account_id(master);
        let g = i64::try_from(gen_index).map_err(|_| StoreError::Integrity("gen_index overflow".into()))?;
        self.exec(
            "INSERT INTO users (master_pkey, gen_index, expiry_unix_ts_ms, grace_period_duration_ms, auto_renewing,
                 refund_requested_unix_ts_ms, google_obfuscated_account_id, apple_app_account_token)
             VALUES (?, ?, ?, ?, ?, ?, ?, '')
             ON CONFLICT(master_pkey) DO UPDATE SET gen_index = excluded.gen_index,
                 expiry_unix_ts_ms = excluded.expiry_unix_ts_ms, grace_period_duration_ms = excluded.grace_period_duration_ms,
                 auto_renewing = excluded.auto_renewing, refund_requested_unix_ts_ms = excluded.refund_requested_unix_ts_ms,
                 google_obfuscated_account_id = excluded.google_obfuscated_account_id,
                 apple_app_account_token = excluded.apple_app_account_token",
            &[&m, &g, &s.expiry_unix_ts_ms, &s.grace_period_duration_ms, &s.auto_renewing, &s.refund_requested_unix_ts_ms, &account],
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
        let g = gen_index as i64;
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT gen_index, creation_unix_ts_ms, expiry_unix_ts_ms FROM revocations WHERE gen_index = ?",
            )
            .map_err(db_err)?;
        st.query_row([g], revocation_row).optional().map_err(db_err)
    }

    fn insert_revocation(&mut self, row: &RevocationRow) -> StoreResult<()> {
        self.exec(
            "INSERT INTO revocations (gen_index, creation_unix_ts_ms, expiry_unix_ts_ms) VALUES (?, ?, ?)",
            &[&(row.gen_index as i64), &row.creation_unix_ts_ms, &row.expiry_unix_ts_ms],
        )
        .map(drop)
    }

    fn update_revocation(&mut self, row: &RevocationRow) -> StoreResult<()> {
        self.exec(
            "UPDATE revocations SET creation_unix_ts_ms = ?, expiry_unix_ts_ms = ? WHERE gen_index = ?",
            &[&row.creation_unix_ts_ms, &row.expiry_unix_ts_ms, &(row.gen_index as i64)],
        )
        .map(drop)
    }

    fn delete_revocation(&mut self, gen_index: u64) -> StoreResult<bool> {
        Ok(self.exec("DELETE FROM revocations WHERE gen_index = ?", &[&(gen_index as i64)])? > 0)
    }

    fn revocations(&mut self) -> StoreResult<Vec<RevocationRow>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT gen_index, creation_unix_ts_ms, expiry_unix_ts_ms FROM revocations ORDER BY gen_index",
            )
            .map_err(db_err)?;
        let rows = st.query_map([], revocation_row).map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)
    }

    fn delete_expired_revocations(&mut self, ts: i64) -> StoreResult<i64> {
        Ok(self.exec("DELETE FROM revocations WHERE expiry_unix_ts_ms <= ?", &[&ts])? as i64)
    }

    fn add_user_error(&mut self, provider: PaymentProvider, payment_id: &str, ts: i64) -> StoreResult<bool> {
        Ok(self.exec(
            "INSERT INTO user_errors (payment_id, payment_provider, unix_ts_ms) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
            &[&payment_id, &provider.as_i64(), &ts],
        )? > 0)
    }

    fn delete_user_error(&mut self, provider: PaymentProvider, payment_id: &str) -> StoreResult<bool> {
        Ok(self.exec(
            "DELETE FROM user_errors WHERE payment_provider = ? AND payment_id = ?",
            &[&provider.as_i64(), &payment_id],
        )? > 0)
    }

    fn has_user_error_for(&mut self, master: &PubKeyBytes) -> StoreResult<bool> {
        let m: &[u8] = master;
        Ok(self.count(
            "SELECT EXISTS(SELECT 1 FROM payments p JOIN user_errors e
                ON (p.payment_provider = 2 AND p.apple_original_tx_id = e.payment_id)
                OR (p.payment_provider = 1 AND p.google_payment_token = e.payment_id)
             WHERE p.master_pkey = ?)",
            &[&m],
        )? != 0)
    }

    fn has_user_error(&mut self, provider: PaymentProvider, payment_id: &str) -> StoreResult<bool> {
        Ok(self.count(
            "SELECT EXISTS(SELECT 1 FROM user_errors WHERE payment_provider = ? AND payment_id = ?)",
            &[&provider.as_i64(), &payment_id],
        )? != 0)
    }

    fn apple_uuid_seen(&mut self, uuid: &str) -> StoreResult<bool> {
        Ok(self.count("SELECT EXISTS(SELECT 1 FROM apple_notification_uuid_history WHERE uuid = ?)", &[&uuid])? != 0)
    }

    fn add_apple_uuid(&mut self, uuid: &str, expiry_unix_ts_ms: i64) -> StoreResult<()> {
        self.exec(
            "INSERT INTO apple_notification_uuid_history (uuid, expiry_unix_ts_ms) VALUES (?, ?)",
            &[&uuid, &expiry_unix_ts_ms],
        )
        .map(drop)
    }

    fn set_apple_checkpoint(&mut self, ts: i64) -> StoreResult<()> {
        self.exec("UPDATE runtime SET apple_notification_checkpoint_unix_ts_ms = ?", &[&ts]).map(drop)
    }

    fn google_notification_handled(&mut self, message_id: i64) -> StoreResult<Option<bool>> {
        self.conn
            .prepare_cached("SELECT handled FROM google_notification_history WHERE message_id = ? LIMIT 1")
            .map_err(db_err)?
            .query_row([message_id], |r| Ok(int0(r, 0)? != 0))
            .optional()
            .map_err(db_err)
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
            "INSERT INTO google_notification_history (message_id, handled, payload, expiry_unix_ts_ms) VALUES (?, 0, ?, ?)",
            &[&message_id, &payload, &expiry_unix_ts_ms],
        )?;
        Ok(true)
    }

    fn mark_google_notification_handled(&mut self, message_id: i64) -> StoreResult<bool> {
        Ok(self.exec(
            "UPDATE google_notification_history SET handled = 1, payload = NULL WHERE message_id = ?",
            &[&message_id],
        )? > 0)
    }

    fn delete_google_notification(&mut self, message_id: i64) -> StoreResult<bool> {
        Ok(self.exec("DELETE FROM google_notification_history WHERE message_id = ?", &[&message_id])? > 0)
    }

    fn unhandled_google_notifications(&mut self) -> StoreResult<Vec<(i64, Option<String>, i64)>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT message_id, payload, expiry_unix_ts_ms FROM google_notification_history WHERE NOT handled ORDER BY rowid",
            )
            .map_err(db_err)?;
        let rows =
            st.query_map([], |r| Ok((r.get(0)?, r.get::<_, Option<String>>(1)?, int0(r, 2)?))).map_err(db_err)?;
        rows.collect::<Result<_, _>>().map_err(db_err)
    }

    fn delete_expired_apple_uuids(&mut self, ts: i64) -> StoreResult<i64> {
        Ok(self.exec("DELETE FROM apple_notification_uuid_history WHERE expiry_unix_ts_ms <= ?", &[&ts])? as i64)
    }

    fn delete_expired_handled_google_notifications(&mut self, ts: i64) -> StoreResult<i64> {
        Ok(self.exec("DELETE FROM google_notification_history WHERE expiry_unix_ts_ms <= ? AND handled", &[&ts])?
            as i64)
    }

    fn count_rows(&mut self, table: &str) -> StoreResult<i64> {
        if !super::schema::TABLES.contains(&table) {
            return Err(StoreError::Db(format!("unknown table {table}")));
        }
        self.count(&format!("SELECT COUNT(*) FROM {table}"), &[])
    }

    fn count_unredeemed(&mut self) -> StoreResult<i64> {
        self.count("SELECT COUNT(*) FROM payments WHERE status = 1", &[])
    }

    fn report_counts(&mut self, kind: crate::reports::ReportKind) -> StoreResult<Vec<crate::reports::PeriodCounts>> {
        report_counts(self.conn, kind)
    }

    fn count_active_users(&mut self, ts: i64) -> StoreResult<i64> {
        self.count(
            "SELECT COUNT(DISTINCT master_pkey) FROM payments
             WHERE unredeemed_unix_ts_ms <= ?1 AND expiry_unix_ts_ms >= ?1 AND status != 4",
            &[&ts],
        )
    }

    // Savepoint names are fixed identifiers chosen by the code, never user input.
    fn savepoint(&mut self, name: &str) -> StoreResult<()> {
        self.exec(&format!("SAVEPOINT {name}"), &[]).map(drop)
    }

    fn release(&mut self, name: &str) -> StoreResult<()> {
        self.exec(&format!("RELEASE {name}"), &[]).map(drop)
    }

    fn rollback_to(&mut self, name: &str) -> StoreResult<()> {
        self.exec(&format!("ROLLBACK TO {name}"), &[])?;
        self.exec(&format!("RELEASE {name}"), &[]).map(drop)
    }
}

fn revocation_row(r: &Row<'_>) -> rusqlite::Result<RevocationRow> {
    Ok(RevocationRow {
        gen_index: r.get::<_, i64>(0)? as u64,
        creation_unix_ts_ms: int0(r, 1)?,
        expiry_unix_ts_ms: int0(r, 2)?,
    })
}

/// A SQLite connection as a [`super::Database`].
pub struct SqliteDatabase {
    pub conn: Connection,
}

impl super::Database for SqliteDatabase {
    fn begin(&mut self) -> StoreResult<()> {
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(db_err)
    }
    fn commit(&mut self) -> StoreResult<()> {
        self.conn.execute_batch("COMMIT").map_err(db_err)
    }
    fn rollback(&mut self) -> StoreResult<()> {
        self.conn.execute_batch("ROLLBACK").map_err(db_err)
    }
    fn tx(&mut self) -> Box<dyn StoreTx + '_> {
        Box::new(SqliteTx { conn: &self.conn })
    }
    fn read_with(&mut self, f: &mut dyn FnMut(&mut dyn StoreTx) -> StoreResult<()>) -> StoreResult<()> {
        read(&mut self.conn, f)
    }
    fn write_with(
        &mut self,
        f: &mut dyn FnMut(&mut dyn StoreTx) -> Result<(), super::ops::OpError>,
    ) -> Result<(), super::ops::OpError> {
        write(&mut self.conn, f)
    }
}

/// One value of a dumped table.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// A whole table, for operators (`print_tables`, `db print`).
#[derive(Debug, Clone, PartialEq)]
pub struct TableDump {
    pub name: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// Every table in catalogue order.
pub fn dump_tables(conn: &Connection) -> StoreResult<Vec<TableDump>> {
    let names: Vec<String> = {
        let mut st = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY rowid")
            .map_err(db_err)?;
        st.query_map([], |r| r.get(0)).map_err(db_err)?.collect::<Result<_, _>>().map_err(db_err)?
    };
    let mut out = Vec::new();
    for name in names {
        // The name comes from the catalogue; quote it as an identifier anyway.
        let mut st = conn.prepare(&format!("SELECT * FROM \"{}\"", name.replace('"', "\"\""))).map_err(db_err)?;
        let columns: Vec<String> = st.column_names().map(String::from).collect();
        let n = columns.len();
        let rows = st
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            ValueRef::Null => Cell::Null,
                            ValueRef::Integer(v) => Cell::Int(v),
                            ValueRef::Real(v) => Cell::Real(v),
                            ValueRef::Text(t) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
                            ValueRef::Blob(b) => Cell::Blob(b.to_vec()),
                        })
                    })
                    .collect::<rusqlite::Result<Vec<Cell>>>()
            })
            .map_err(db_err)?
            .collect::<Result<_, _>>()
            .map_err(db_err)?;
        out.push(TableDump { name, columns, rows });
    }
    Ok(out)
}

/// Copies the live database to `dest` with SQLite's online backup (128 pages per step); a
/// partial file is removed on failure.
pub fn backup_to(target: &SqliteTarget, dest: &Path) -> StoreResult<()> {
    let run = || -> rusqlite::Result<()> {
        let src =
            Connection::open_with_flags(&target.path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI)?;
        src.busy_timeout(BUSY_TIMEOUT)?;
        let mut dst = Connection::open(dest)?;
        let backup = rusqlite::backup::Backup::new(&src, &mut dst)?;
        backup.run_to_completion(128, Duration::ZERO, None)
    };
    run().map_err(|e| {
        let _ = std::fs::remove_file(dest);
        db_err(e)
    })
}

/// The operator reports' grouping (see [`super::report_sql`]) in SQLite's date modifiers.
fn report_counts(
    conn: &Connection,
    kind: crate::reports::ReportKind,
) -> StoreResult<Vec<crate::reports::PeriodCounts>> {
    use crate::reports::ReportKind;
    // Modifiers that take a time to the start of its period; for weeks, back six days and then
    // forward to the next Monday lands on the Monday of the ISO week.
    let modifiers = match kind {
        ReportKind::Daily => "'start of day'",
        ReportKind::Weekly => "'start of day', '-6 days', 'weekday 1'",
        ReportKind::Monthly => "'start of month'",
    };
    let sql = super::report_sql(|col| {
        format!("CAST(strftime('%s', {col} / 1000, 'unixepoch', {modifiers}) AS INTEGER) * 1000")
    });
    let mut st = conn.prepare_cached(&sql).map_err(db_err)?;
    let rows = st
        .query_map([], |r| {
            let mut counts = [0; 11];
            for (i, c) in counts.iter_mut().enumerate() {
                *c = int0(r, i + 1)?;
            }
            Ok(crate::reports::PeriodCounts::from_columns(r.get(0)?, counts))
        })
        .map_err(db_err)?;
    rows.collect::<Result<_, _>>().map_err(db_err)
}

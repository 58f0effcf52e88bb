//! Upstream's SQLite schema, version 9, and the steps that bring older databases to it.
//!
//! Table and column names, types and constraints are upstream's, so a database file can move
//! between the Python server and this one in either direction.

/// The schema version this server reads and writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 9;

/// Idempotent creation of every table and trigger in the version-9 layout.
pub const CREATE_SQLITE: &str = r#"
CREATE TABLE IF NOT EXISTS payments (
    id                                INTEGER PRIMARY KEY NOT NULL,
    master_pkey                       BLOB,               -- owner, NULL until redeemed
    status                            INTEGER NOT NULL,   -- PaymentStatus
    plan                              INTEGER NOT NULL,   -- ProPlan (informational)
    payment_provider                  INTEGER NOT NULL,   -- PaymentProvider
    auto_renewing                     INTEGER NOT NULL,
    unredeemed_unix_ts_ms             INTEGER NOT NULL,   -- when the store event happened
    redeemed_unix_ts_ms               INTEGER,            -- claim time, end of day outside dev mode
    expiry_unix_ts_ms                 INTEGER NOT NULL,   -- store expiry, without grace
    grace_period_duration_ms          INTEGER,            -- counts only while auto-renewing; kept otherwise
    platform_refund_expiry_unix_ts_ms INTEGER NOT NULL,   -- last refund time at the store, 0 = unknown
    revoked_unix_ts_ms                INTEGER,
    apple_original_tx_id              TEXT,
    apple_tx_id                       TEXT,
    apple_web_line_order_tx_id        TEXT,
    google_payment_token              TEXT,               -- shared by every billing cycle
    google_order_id                   TEXT,               -- renewals are <order>..0, <order>..1, ...
    rangeproof_order_id               TEXT,
    refund_requested_unix_ts_ms       INTEGER NOT NULL,   -- set by clients, 0 = none
    google_obfuscated_account_id      BLOB,               -- sha256(master_pkey) the purchase carries
    apple_app_account_token           TEXT NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS users (
    master_pkey                  BLOB PRIMARY KEY NOT NULL,
    gen_index                    INTEGER NOT NULL,    -- generation the user's proofs are signed under
    expiry_unix_ts_ms            INTEGER NOT NULL,    -- best deadline, grace included when renewing
    grace_period_duration_ms     INTEGER NOT NULL,
    auto_renewing                INTEGER NOT NULL,
    refund_requested_unix_ts_ms  INTEGER NOT NULL,
    google_obfuscated_account_id BLOB NOT NULL,
    apple_app_account_token      TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS revocations (
    gen_index            INTEGER PRIMARY KEY NOT NULL,
    creation_unix_ts_ms  INTEGER NOT NULL,
    expiry_unix_ts_ms    INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS runtime (
    gen_index                                INTEGER NOT NULL,  -- next generation index to hand out
    gen_index_salt                           BLOB NOT NULL,     -- secret salt of gen_index_hash
    backend_key                              BLOB NOT NULL,     -- Ed25519 seed that signs proofs
    last_expire_unix_ts_ms                   INTEGER NOT NULL,  -- last daily job
    apple_notification_checkpoint_unix_ts_ms INTEGER NOT NULL,  -- Apple catch-up checkpoint
    revocation_ticket                        INTEGER NOT NULL   -- bumped on every list change
);

CREATE TABLE IF NOT EXISTS apple_notification_uuid_history (
    uuid              TEXT NOT NULL,
    expiry_unix_ts_ms INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS google_notification_history (
    message_id        INTEGER NOT NULL,
    handled           INTEGER NOT NULL,
    payload           TEXT,
    expiry_unix_ts_ms INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS user_errors (
    payment_id       TEXT    NOT NULL,
    payment_provider INTEGER NOT NULL,
    unix_ts_ms       INTEGER NOT NULL,
    UNIQUE(payment_id, payment_provider)
);

CREATE TRIGGER IF NOT EXISTS increment_revocation_ticket_after_insert
AFTER INSERT ON revocations
BEGIN
    UPDATE runtime SET revocation_ticket = revocation_ticket + 1;
END;

CREATE TRIGGER IF NOT EXISTS increment_revocation_ticket_after_delete
AFTER DELETE ON revocations
BEGIN
    UPDATE runtime SET revocation_ticket = revocation_ticket + 1;
END;
"#;

/// One migration step, from `from` to `from + 1`.
pub struct Migration {
    pub from: i64,
    pub sql: &'static str,
    /// Whether the step back-fills `users.google_obfuscated_account_id` afterwards.
    pub backfill_user_account_ids: bool,
}

/// Upstream's chain 5 → 9. The `STRING` declarations are upstream's and kept as they are.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        from: 5,
        sql: "ALTER TABLE users ADD COLUMN google_obfuscated_account_id BLOB NOT NULL DEFAULT X'';
              ALTER TABLE users ADD COLUMN apple_app_account_token STRING NOT NULL DEFAULT '';",
        backfill_user_account_ids: true,
    },
    Migration {
        from: 6,
        sql: "ALTER TABLE payments ADD COLUMN google_obfuscated_account_id BLOB;
              ALTER TABLE payments ADD COLUMN apple_app_account_token STRING NOT NULL DEFAULT '';",
        backfill_user_account_ids: false,
    },
    Migration {
        from: 7,
        sql: "ALTER TABLE payments ADD COLUMN rangeproof_order_id TEXT;",
        backfill_user_account_ids: false,
    },
    Migration {
        from: 8,
        sql: "ALTER TABLE revocations ADD COLUMN creation_unix_ts_ms INTEGER NOT NULL DEFAULT 0;",
        backfill_user_account_ids: false,
    },
];

/// Tables in the order upstream creates them (used by `print_tables` and `db info`).
pub const TABLES: &[&str] = &[
    "payments",
    "users",
    "revocations",
    "runtime",
    "apple_notification_uuid_history",
    "google_notification_history",
    "user_errors",
];

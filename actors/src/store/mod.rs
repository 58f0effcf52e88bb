//! Storage: the data model of upstream's schema version 9 behind a backend-neutral trait.
//!
//! [`StoreTx`] is the set of primitive reads and writes one transaction can make; each backend
//! implements it with its own SQL. The business operations in [`ops`] are written once on top
//! of it, so the rules (claiming, revoking, pruning…) cannot drift between backends.

pub mod admin;
pub mod ops;
pub mod postgres;
pub mod rows;
pub mod schema;
pub mod sqlite;
#[cfg(test)]
mod tests;

use crate::domain::lookup::{LookupRow, Summary};
use crate::domain::revocation::RevocationRow;
use crate::domain::types::{PaymentProvider, PaymentTx, PubKeyBytes};
pub use rows::{NewPayment, PaymentRow, RuntimeRow, SubscriptionRow, UserRow};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(String),
    #[error("database is busy, try again")]
    Busy,
    #[error("data integrity problem: {0}")]
    Integrity(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Primitive operations inside one transaction. Timestamps are milliseconds; keys raw bytes.
pub trait StoreTx {
    // -- runtime row
    fn runtime(&mut self) -> StoreResult<RuntimeRow>;
    fn revocation_ticket(&mut self) -> StoreResult<i64>;
    /// Atomically takes the next generation index.
    fn take_gen_index(&mut self) -> StoreResult<u64>;
    /// Records that the daily job for `ts` runs now, unless a run for `ts` or later is already
    /// recorded; returns whether this caller won (atomic across servers sharing the database).
    fn claim_expiry_run(&mut self, ts: i64) -> StoreResult<bool>;
    fn bump_revocation_ticket(&mut self) -> StoreResult<()>;

    // -- payments
    /// The row with the provider's identity tuple (Google: token + order id; Apple: original,
    /// transaction and web-line ids; Rangeproof: order id).
    fn find_payment(&mut self, tx: &PaymentTx) -> StoreResult<Option<PaymentRow>>;
    fn insert_payment(&mut self, p: &NewPayment) -> StoreResult<i64>;
    /// Whether an Unredeemed row exists with the identifiers a client claims with (Google: token
    /// + order id; Apple: transaction id; Rangeproof: order id).
    fn has_unredeemed_claimable(&mut self, tx: &PaymentTx) -> StoreResult<bool>;
    /// Whether any row exists with the identifiers a client claims with.
    fn claim_target_exists(&mut self, tx: &PaymentTx) -> StoreResult<bool>;
    /// Owner of the newest owned payment of the same subscription (Google: purchase token;
    /// Apple: original transaction id).
    fn newest_owner_of_subscription(&mut self, tx: &PaymentTx) -> StoreResult<Option<PubKeyBytes>>;
    /// Whether `master` could claim the payment now: the rows [`StoreTx::claim_payment`] would
    /// bind exist.
    fn claimable_by(&mut self, tx: &PaymentTx, master: &PubKeyBytes) -> StoreResult<bool>;
    /// Binds an Unredeemed claimable payment to `master`; returns the number of rows changed.
    fn claim_payment(&mut self, tx: &PaymentTx, master: &PubKeyBytes, redeemed_ts: i64) -> StoreResult<usize>;
    /// Rows with the claim identifiers already past Unredeemed and owned by `master`.
    fn count_claimed_by(&mut self, tx: &PaymentTx, master: &PubKeyBytes) -> StoreResult<i64>;
    /// The newest (by id) Redeemed/Expired/Revoked payments of `master`, at most `limit`.
    fn lookup_rows(&mut self, master: &PubKeyBytes, limit: usize) -> StoreResult<Vec<LookupRow>>;
    /// Updates grace and/or auto-renew on every row of the identity; returns the owners of the
    /// matched rows (None for unowned rows). Revoked rows never get auto-renew switched on.
    fn update_renewal_info(
        &mut self,
        tx: &PaymentTx,
        grace: Option<i64>,
        auto_renewing: Option<bool>,
    ) -> StoreResult<Vec<Option<PubKeyBytes>>>;
    /// Sets the refund-requested time on the rows a client names (Apple: transaction id;
    /// Google: token + order id), only those owned by `owner` when given; returns the owners.
    fn set_refund_requested(
        &mut self,
        tx: &PaymentTx,
        ts: i64,
        owner: Option<&PubKeyBytes>,
    ) -> StoreResult<Vec<Option<PubKeyBytes>>>;
    /// Every row of a subscription (Google: token; Apple: original transaction id), by id.
    fn subscription_rows(&mut self, provider: PaymentProvider, key: &str) -> StoreResult<Vec<SubscriptionRow>>;
    /// Revokes one row if it is Unredeemed or Redeemed; returns whether it changed.
    fn mark_revoked(&mut self, id: i64, ts: i64) -> StoreResult<bool>;
    /// Marks Unredeemed/Redeemed rows with `expiry <= ts` Expired; returns the number of
    /// distinct owners among them.
    fn expire_payments(&mut self, ts: i64) -> StoreResult<i64>;
    fn payments_total(&mut self, master: &PubKeyBytes) -> StoreResult<i64>;
    /// Non-Unredeemed rows of `master`, newest witnessed first, at most `limit`.
    fn payment_history(&mut self, master: &PubKeyBytes, limit: u32) -> StoreResult<Vec<PaymentRow>>;

    // -- users
    fn user(&mut self, master: &PubKeyBytes) -> StoreResult<Option<UserRow>>;
    fn update_user_summary(&mut self, master: &PubKeyBytes, s: &Summary) -> StoreResult<()>;
    fn upsert_user(&mut self, master: &PubKeyBytes, gen_index: u64, s: &Summary) -> StoreResult<()>;
    /// Deletes users that own no payment at all.
    fn delete_orphan_users(&mut self) -> StoreResult<i64>;

    // -- revocations
    fn revocation(&mut self, gen_index: u64) -> StoreResult<Option<RevocationRow>>;
    fn insert_revocation(&mut self, row: &RevocationRow) -> StoreResult<()>;
    /// Rewrites an existing row's times; the caller bumps the ticket when this is a change.
    fn update_revocation(&mut self, row: &RevocationRow) -> StoreResult<()>;
    fn delete_revocation(&mut self, gen_index: u64) -> StoreResult<bool>;
    /// The whole list, ascending generation index.
    fn revocations(&mut self) -> StoreResult<Vec<RevocationRow>>;
    fn delete_expired_revocations(&mut self, ts: i64) -> StoreResult<i64>;

    // -- user errors
    fn add_user_error(&mut self, provider: PaymentProvider, payment_id: &str, ts: i64) -> StoreResult<bool>;
    fn delete_user_error(&mut self, provider: PaymentProvider, payment_id: &str) -> StoreResult<bool>;
    fn has_user_error_for(&mut self, master: &PubKeyBytes) -> StoreResult<bool>;

    fn has_user_error(&mut self, provider: PaymentProvider, payment_id: &str) -> StoreResult<bool>;

    // -- Apple notification history
    fn apple_uuid_seen(&mut self, uuid: &str) -> StoreResult<bool>;
    fn add_apple_uuid(&mut self, uuid: &str, expiry_unix_ts_ms: i64) -> StoreResult<()>;
    fn set_apple_checkpoint(&mut self, ts: i64) -> StoreResult<()>;

    // -- Google notification history
    /// `Some(handled)` when the message is recorded.
    fn google_notification_handled(&mut self, message_id: i64) -> StoreResult<Option<bool>>;
    /// Records a received message (unhandled) unless it is already recorded; returns whether
    /// it was inserted.
    fn add_google_notification(
        &mut self,
        message_id: i64,
        payload: Option<&str>,
        expiry_unix_ts_ms: i64,
    ) -> StoreResult<bool>;
    /// Marks a message handled and drops its payload; returns whether a row matched.
    fn mark_google_notification_handled(&mut self, message_id: i64) -> StoreResult<bool>;
    fn delete_google_notification(&mut self, message_id: i64) -> StoreResult<bool>;
    /// Unhandled messages: (message_id, payload, expiry), oldest first.
    fn unhandled_google_notifications(&mut self) -> StoreResult<Vec<(i64, Option<String>, i64)>>;

    // -- notification histories (pruned by the daily job)
    fn delete_expired_apple_uuids(&mut self, ts: i64) -> StoreResult<i64>;
    fn delete_expired_handled_google_notifications(&mut self, ts: i64) -> StoreResult<i64>;

    // -- operator views
    /// Rows of one of the schema's tables (`table` is one of [`schema::TABLES`]).
    fn count_rows(&mut self, table: &str) -> StoreResult<i64>;
    fn count_unredeemed(&mut self) -> StoreResult<i64>;
    /// Payments counted per report period, every column but Active Users (see
    /// [`crate::reports`]); only periods with something counted, in no particular order.
    fn report_counts(&mut self, kind: crate::reports::ReportKind) -> StoreResult<Vec<crate::reports::PeriodCounts>>;
    /// Distinct owners with a payment that is not revoked and whose span
    /// (unredeemed..=expiry) holds `ts`.
    fn count_active_users(&mut self, ts: i64) -> StoreResult<i64>;

    // -- nested rollback points for best-effort sub-steps
    fn savepoint(&mut self, name: &str) -> StoreResult<()>;
    fn release(&mut self, name: &str) -> StoreResult<()>;
    fn rollback_to(&mut self, name: &str) -> StoreResult<()>;
}

/// The SQL of the operator reports, in SQL both backends accept: one row per period start (ms)
/// followed by the eleven counts of [`crate::reports::PeriodCounts`], in field order (decode it
/// with [`crate::reports::PeriodCounts::from_columns`]). Each event is grouped by its own
/// timestamp: new payments by the unredeemed time, refund requests and revocations by theirs,
/// non-renewing payments by their expiry. `period_start` writes the backend's expression for
/// the start (UTC, ms) of the period holding the timestamp column it is given.
pub(crate) fn report_sql(period_start: impl Fn(&str) -> String) -> String {
    let flag = |cond: &str| format!("CASE WHEN {cond} THEN 1 ELSE 0 END");
    format!(
        "SELECT p, SUM(u), SUM(n), SUM(g), SUM(a), SUM(r), SUM(m1), SUM(m3), SUM(m12), SUM(rf), SUM(rv), SUM(c) FROM (
            SELECT {new} AS p, {u} AS u, 1 AS n, {g} AS g, {a} AS a, {r} AS r, {m1} AS m1, {m3} AS m3, {m12} AS m12,
                   0 AS rf, 0 AS rv, 0 AS c
              FROM payments WHERE unredeemed_unix_ts_ms > 0
            UNION ALL
            SELECT {refund}, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0 FROM payments WHERE refund_requested_unix_ts_ms > 0
            UNION ALL
            SELECT {revoked}, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0 FROM payments WHERE revoked_unix_ts_ms > 0
            UNION ALL
            SELECT {expiry}, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 FROM payments WHERE NOT auto_renewing AND status != 4
         ) AS events WHERE p IS NOT NULL GROUP BY p",
        new = period_start("unredeemed_unix_ts_ms"),
        refund = period_start("refund_requested_unix_ts_ms"),
        revoked = period_start("revoked_unix_ts_ms"),
        expiry = period_start("expiry_unix_ts_ms"),
        u = flag("status = 1"),
        g = flag("payment_provider = 1"),
        a = flag("payment_provider = 2"),
        r = flag("payment_provider = 3"),
        m1 = flag("plan = 1"),
        m3 = flag("plan = 2"),
        m12 = flag("plan = 3"),
    )
}

/// A connection to one backend, able to run a function in a read or a write transaction.
/// Object-safe so the actors can hold any backend.
pub trait Database: Send {
    /// Opens a write transaction that stays open across calls (the writer's batches).
    fn begin(&mut self) -> StoreResult<()>;
    fn commit(&mut self) -> StoreResult<()>;
    fn rollback(&mut self) -> StoreResult<()>;
    /// A view of the transaction opened by `begin`.
    fn tx(&mut self) -> Box<dyn StoreTx + '_>;
    fn read_with(&mut self, f: &mut dyn FnMut(&mut dyn StoreTx) -> StoreResult<()>) -> StoreResult<()>;
    fn write_with(
        &mut self,
        f: &mut dyn FnMut(&mut dyn StoreTx) -> Result<(), ops::OpError>,
    ) -> Result<(), ops::OpError>;
}

/// Runs `f` in a read transaction of `db`.
pub fn read_db<T>(db: &mut dyn Database, f: impl FnOnce(&mut dyn StoreTx) -> StoreResult<T>) -> StoreResult<T> {
    let mut f = Some(f);
    let mut out = None;
    db.read_with(&mut |tx| {
        if let Some(f) = f.take() {
            out = Some(f(tx)?);
        }
        Ok(())
    })?;
    out.ok_or_else(|| StoreError::Db("the read did not run".into()))
}

/// Runs `f` in a write transaction of `db` (committed on success, rolled back otherwise).
pub fn write_db<T>(
    db: &mut dyn Database,
    f: impl FnOnce(&mut dyn StoreTx) -> Result<T, ops::OpError>,
) -> Result<T, ops::OpError> {
    let mut f = Some(f);
    let mut out = None;
    db.write_with(&mut |tx| {
        if let Some(f) = f.take() {
            out = Some(f(tx)?);
        }
        Ok(())
    })?;
    out.ok_or_else(|| StoreError::Db("the write did not run".into()).into())
}

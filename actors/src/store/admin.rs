//! Operator actions of the admin CLI, written once over [`StoreTx`] like [`super::ops`]: the
//! revocation of a user's current generation, the list of a user's revocable payments, and
//! Rangeproof vouchers.

use std::fmt;

use super::ops::{self, OpCtx, OpError};
use super::rows::{NewPayment, PaymentRow};
use super::{StoreError, StoreResult, StoreTx};
use crate::domain::revocation::RevocationRow;
use crate::domain::time::redeemed_ts;
use crate::domain::types::{PaymentStatus, PaymentTx, ProPlan, PubKeyBytes, RedeemOutcome};

/// What an operator's change to a user's revocation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationChange {
    Created,
    Updated,
    Deleted,
    Skipped,
    UserDoesNotExist,
}

impl fmt::Display for RevocationChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
            Self::Skipped => "skipped",
            Self::UserDoesNotExist => "user does not exist",
        })
    }
}

/// Lists the user's current generation as revoked from `creation` until `expiry`, replacing
/// both times of an existing entry. Unlike upstream, changing an existing entry bumps the
/// revocation ticket, so clients fetch the new expiry (inserts bump it through the trigger).
pub fn set_user_revocation(
    tx: &mut dyn StoreTx,
    master: &PubKeyBytes,
    creation: i64,
    expiry: i64,
) -> StoreResult<RevocationChange> {
    let Some(user) = tx.user(master)? else {
        return Ok(RevocationChange::UserDoesNotExist);
    };
    let row = RevocationRow { gen_index: user.gen_index, creation_unix_ts_ms: creation, expiry_unix_ts_ms: expiry };
    match tx.revocation(user.gen_index)? {
        None => {
            tx.insert_revocation(&row)?;
            Ok(RevocationChange::Created)
        }
        Some(existing) => {
            if existing != row {
                tx.update_revocation(&row)?;
                tx.bump_revocation_ticket()?;
            }
            Ok(RevocationChange::Updated)
        }
    }
}

/// Removes the revocation of the user's current generation (the trigger bumps the ticket).
pub fn delete_user_revocation(tx: &mut dyn StoreTx, master: &PubKeyBytes) -> StoreResult<RevocationChange> {
    let Some(user) = tx.user(master)? else {
        return Ok(RevocationChange::UserDoesNotExist);
    };
    Ok(if tx.delete_revocation(user.gen_index)? { RevocationChange::Deleted } else { RevocationChange::Skipped })
}

/// The user's payments that are neither Expired nor past their expiry at `now`, oldest first.
pub fn revocable_payments(tx: &mut dyn StoreTx, master: &PubKeyBytes, now: i64) -> StoreResult<Vec<PaymentRow>> {
    let mut rows: Vec<PaymentRow> = tx
        .payment_history(master, u32::MAX)?
        .into_iter()
        .filter(|p| p.status != PaymentStatus::Expired.as_i64() && p.expiry_unix_ts_ms >= now)
        .collect();
    rows.sort_by_key(|p| p.id);
    Ok(rows)
}

/// Why a voucher was not granted; the whole transaction is rolled back in every case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoucherError {
    #[error("Failed to create unredeemed payment: {0}")]
    Create(OpError),
    #[error("Failed to redeem payment: {0}")]
    Redeem(OpError),
    #[error("Payment redemption failed with status: {0}")]
    NotRedeemed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A granted voucher: the generation the first proof carries and the entitlement deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoucherGrant {
    pub gen_index: u64,
    pub entitled_until: i64,
}

/// Records a Rangeproof payment of `duration_ms` starting at `ctx.now` and redeems it for
/// `master` at once (redeemed at the next UTC midnight outside dev mode).
pub fn grant_voucher(
    tx: &mut dyn StoreTx,
    master: &PubKeyBytes,
    order_id: &str,
    plan: ProPlan,
    duration_ms: i64,
    ctx: OpCtx,
) -> Result<VoucherGrant, VoucherError> {
    let payment = NewPayment {
        tx: PaymentTx::rangeproof(order_id),
        plan,
        expiry_unix_ts_ms: ctx.now.saturating_add(duration_ms),
        unredeemed_unix_ts_ms: ctx.now,
        platform_refund_expiry_unix_ts_ms: 0,
        google_obfuscated_account_id: None,
        apple_app_account_token: String::new(),
    };
    let added = ops::add_unredeemed_payment(tx, &payment, ctx).map_err(VoucherError::Create)?;
    if !added.inserted {
        return Err(VoucherError::Create(OpError::Rejected(format!(
            "a Rangeproof payment with order id {order_id} already exists"
        ))));
    }
    match ops::redeem(tx, master, &payment.tx, redeemed_ts(ctx.now, ctx.dev)).map_err(VoucherError::Redeem)? {
        RedeemOutcome::Success { gen_index, entitled_until } => Ok(VoucherGrant { gen_index, entitled_until }),
        RedeemOutcome::AlreadyRedeemed => Err(VoucherError::NotRedeemed("AlreadyRedeemed".into())),
        RedeemOutcome::UnknownPayment => Err(VoucherError::NotRedeemed("UnknownPayment".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::{DAY_MS, round_up_to_day};
    use crate::store::sqlite::{self, SqliteTarget};
    use rusqlite::Connection;

    const NOW: i64 = 1796411509975; // 2026-12-04 19:11:49.975

    fn db() -> Connection {
        let mut c = sqlite::open_writer(&SqliteTarget::memory()).unwrap();
        sqlite::bootstrap(&mut c, [0xCD; 32]).unwrap();
        c
    }

    fn ticket(c: &Connection) -> i64 {
        c.query_row("SELECT revocation_ticket FROM runtime", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn voucher_then_revocation_sequence() {
        let mut c = db();
        let master = [7u8; 32];
        let ctx = OpCtx { now: NOW, dev: false };
        let grant =
            sqlite::write(&mut c, |tx| grant_voucher(tx, &master, "order-1", ProPlan::OneMonth, 30 * DAY_MS, ctx))
                .unwrap();
        assert_eq!(grant.gen_index, 0);
        assert_eq!(grant.entitled_until, NOW + 30 * DAY_MS);
        let (status, redeemed): (i64, i64) = c
            .query_row(
                "SELECT status, redeemed_unix_ts_ms FROM payments WHERE rangeproof_order_id = 'order-1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((status, redeemed), (2, round_up_to_day(NOW)));

        // A second voucher with the same order id is refused and leaves nothing behind.
        let before: i64 = c.query_row("SELECT COUNT(*) FROM payments", [], |r| r.get(0)).unwrap();
        let err = sqlite::write(&mut c, |tx| grant_voucher(tx, &[8; 32], "order-1", ProPlan::OneMonth, DAY_MS, ctx))
            .unwrap_err();
        assert!(matches!(err, VoucherError::Create(_)), "{err:?}");
        let after: i64 = c.query_row("SELECT COUNT(*) FROM payments", [], |r| r.get(0)).unwrap();
        assert_eq!(before, after);

        let w = |c: &mut Connection, f: &dyn Fn(&mut dyn StoreTx) -> StoreResult<RevocationChange>| {
            sqlite::write(c, |tx| f(tx)).unwrap()
        };
        assert_eq!(w(&mut c, &|tx| set_user_revocation(tx, &master, NOW, NOW + DAY_MS)), RevocationChange::Created);
        assert_eq!(ticket(&c), 1);
        assert_eq!(w(&mut c, &|tx| set_user_revocation(tx, &master, NOW, NOW + DAY_MS)), RevocationChange::Updated);
        assert_eq!(ticket(&c), 1, "an identical update changes nothing");
        assert_eq!(w(&mut c, &|tx| set_user_revocation(tx, &master, NOW, NOW + 2 * DAY_MS)), RevocationChange::Updated);
        assert_eq!(ticket(&c), 2, "a changed entry is published");
        assert_eq!(w(&mut c, &|tx| delete_user_revocation(tx, &master)), RevocationChange::Deleted);
        assert_eq!(ticket(&c), 3);
        assert_eq!(w(&mut c, &|tx| delete_user_revocation(tx, &master)), RevocationChange::Skipped);
        assert_eq!(w(&mut c, &|tx| delete_user_revocation(tx, &[9; 32])), RevocationChange::UserDoesNotExist);
        assert_eq!(w(&mut c, &|tx| set_user_revocation(tx, &[9; 32], 1, 2)), RevocationChange::UserDoesNotExist);

        let listed = sqlite::read(&mut c, |tx| revocable_payments(tx, &master, NOW)).unwrap();
        assert_eq!(listed.len(), 1);
        let later = sqlite::read(&mut c, |tx| revocable_payments(tx, &master, NOW + 31 * DAY_MS)).unwrap();
        assert!(later.is_empty());
    }
}

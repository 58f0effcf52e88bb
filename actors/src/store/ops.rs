//! Business operations over one transaction, written once for every backend.
//!
//! Each function runs inside the caller's transaction; an `Err` makes the caller roll the
//! whole transaction back, so a failed operation leaves nothing behind.

use tracing::{info, warn};

use super::rows::{NewPayment, PaymentRow, UserRow};
use super::{StoreError, StoreResult, StoreTx};
use crate::domain::hashes::google_obfuscated_account_id;
use crate::domain::keys::obfuscate;
use crate::domain::lookup::{Entitlement, LOOKUP_LIMIT, compute_entitlement};
use crate::domain::revocation::{RevocationRow, latest_possible_proof_expiry, needs_list_entry};
use crate::domain::time::{DAY_MS, DEV_GRACE_MS, redeemed_ts};
use crate::domain::types::{PaymentProvider, PaymentStatus, PaymentTx, ProPlan, PubKeyBytes, RedeemOutcome};

/// Why an operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request was understood but the data does not allow it; the text is for the caller.
    #[error("{0}")]
    Rejected(String),
}

/// Facts an operation needs besides its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpCtx {
    pub now: i64,
    pub dev: bool,
}

/// How Google's account-hold window extends the auto-redeem deadline.
const GOOGLE_ACCOUNT_HOLD_MS: i64 = 60 * DAY_MS;

/// Recomputes a user's cached entitlement from their payments (no row is created).
pub fn refresh_user(tx: &mut dyn StoreTx, master: &PubKeyBytes) -> StoreResult<Entitlement> {
    let e = compute_entitlement(&tx.lookup_rows(master, LOOKUP_LIMIT)?);
    tx.update_user_summary(master, &e.best)?;
    Ok(e)
}

/// Gives the user a fresh generation index if they hold a usable (Redeemed) payment.
pub fn allocate_gen_index(tx: &mut dyn StoreTx, master: &PubKeyBytes) -> StoreResult<Option<(u64, Entitlement)>> {
    let e = compute_entitlement(&tx.lookup_rows(master, LOOKUP_LIMIT)?);
    if e.redeemed.expiry_unix_ts_ms <= 0 {
        return Ok(None);
    }
    let g = tx.take_gen_index()?;
    tx.upsert_user(master, g, &e.best)?;
    Ok(Some((g, e)))
}

/// Binds an Unredeemed payment (named as a client names it) to `master` and allocates the
/// generation the first proof will carry.
pub fn redeem(
    tx: &mut dyn StoreTx,
    master: &PubKeyBytes,
    payment: &PaymentTx,
    redeemed_at: i64,
) -> Result<RedeemOutcome, OpError> {
    match tx.claim_payment(payment, master, redeemed_at)? {
        0 if tx.count_claimed_by(payment, master)? > 0 => Ok(RedeemOutcome::AlreadyRedeemed),
        0 => Ok(RedeemOutcome::UnknownPayment),
        1 => match allocate_gen_index(tx, master)? {
            Some((gen_index, e)) => {
                Ok(RedeemOutcome::Success { gen_index, entitled_until: e.redeemed.expiry_unix_ts_ms })
            }
            // The claimed row is an older billing cycle of a subscription whose newest cycle has
            // already ended, so it entitles to nothing.
            None => Err(OpError::Rejected(
                "Payment was not redeemed, a newer billing cycle of this subscription has already ended".into(),
            )),
        },
        n => Err(StoreError::Integrity(format!("a claim matched {n} payments")).into()),
    }
}

/// Options of a fabricated development payment (dev mode, ids starting with `DEV.`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevPayment {
    pub plan: ProPlan,
    pub duration_ms: i64,
    pub auto_renewing: bool,
}

/// A client's claim (`/add_pro_payment`), after its signatures were verified. In dev mode a
/// `DEV.` payment that does not exist yet is fabricated first, in the same transaction.
pub fn claim_for_client(
    tx: &mut dyn StoreTx,
    master: &PubKeyBytes,
    payment: &PaymentTx,
    ctx: OpCtx,
    dev: Option<DevPayment>,
) -> Result<RedeemOutcome, OpError> {
    let fabricate = dev.filter(|_| ctx.dev && payment.is_dev_payment());
    if let Some(d) = fabricate
        && !tx.claim_target_exists(payment)?
    {
        let mut ids = payment.clone();
        if ids.provider() == PaymentProvider::Apple {
            ids.apple_original_tx_id = ids.apple_tx_id.clone();
            ids.apple_web_line_order_tx_id.clear();
        }
        let fake = NewPayment {
            google_obfuscated_account_id: (ids.provider() == PaymentProvider::Google)
                .then(|| google_obfuscated_account_id(master)),
            tx: ids,
            plan: d.plan,
            expiry_unix_ts_ms: ctx.now.saturating_add(d.duration_ms),
            unredeemed_unix_ts_ms: ctx.now,
            platform_refund_expiry_unix_ts_ms: 0,
            apple_app_account_token: String::new(),
        };
        add_unredeemed_payment(tx, &fake, ctx)?;
        let grace = if d.auto_renewing { DEV_GRACE_MS } else { 0 };
        update_renewal_info(tx, &fake.tx, Some(grace), Some(d.auto_renewing))?;
    }
    redeem(tx, master, payment, redeemed_ts(ctx.now, ctx.dev))
}

/// What recording a witnessed payment did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddPaymentOutcome {
    /// False when a row with the same identity already existed (nothing was changed).
    pub inserted: bool,
    /// Set when the payment was claimed automatically for the subscription's owner.
    pub auto_redeemed: Option<(PubKeyBytes, u64)>,
}

/// Records a payment witnessed from a store as Unredeemed (unless its identity is already
/// stored), then claims it for the owner of the same subscription when it is a renewal that
/// arrives within the owner's entitlement.
pub fn add_unredeemed_payment(tx: &mut dyn StoreTx, p: &NewPayment, ctx: OpCtx) -> Result<AddPaymentOutcome, OpError> {
    p.tx.validate_for_storage().map_err(OpError::Rejected)?;
    let inserted = tx.find_payment(&p.tx)?.is_none();
    if inserted {
        tx.insert_payment(p)?;
    }
    let auto_redeemed = auto_redeem(tx, p, ctx)?;
    Ok(AddPaymentOutcome { inserted, auto_redeemed })
}

fn auto_redeem(tx: &mut dyn StoreTx, p: &NewPayment, ctx: OpCtx) -> Result<Option<(PubKeyBytes, u64)>, OpError> {
    let Some(owner) = tx.newest_owner_of_subscription(&p.tx)? else {
        return Ok(None);
    };
    let Some(user) = tx.user(&owner)? else {
        return Ok(None);
    };
    let deadline = match p.tx.provider() {
        // The cached expiry already holds the grace of a renewing subscription, so this is its
        // raw expiry plus Google's 60-day account hold.
        PaymentProvider::Google if user.auto_renewing => {
            user.expiry_unix_ts_ms.saturating_add(GOOGLE_ACCOUNT_HOLD_MS - user.grace_period_duration_ms)
        }
        PaymentProvider::Apple if user.auto_renewing => {
            user.expiry_unix_ts_ms.saturating_add(user.grace_period_duration_ms)
        }
        _ => user.expiry_unix_ts_ms,
    };
    if p.unredeemed_unix_ts_ms > deadline {
        return Ok(None);
    }
    // A failed auto-claim must not undo the recording of the payment itself.
    tx.savepoint("auto_redeem")?;
    match redeem(tx, &owner, &p.tx, redeemed_ts(p.unredeemed_unix_ts_ms, ctx.dev)) {
        Ok(RedeemOutcome::Success { gen_index, .. }) => {
            tx.release("auto_redeem")?;
            info!(owner = %obfuscate(&hex::encode(owner)), "renewal claimed automatically for the subscription's owner");
            Ok(Some((owner, gen_index)))
        }
        Ok(_) => {
            tx.rollback_to("auto_redeem")?;
            Ok(None)
        }
        Err(OpError::Rejected(why)) => {
            tx.rollback_to("auto_redeem")?;
            warn!("automatic claim of a renewal failed: {why}");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Updates grace and/or auto-renew of a payment and refreshes its owner. Returns whether any
/// row matched.
pub fn update_renewal_info(
    tx: &mut dyn StoreTx,
    payment: &PaymentTx,
    grace: Option<i64>,
    auto_renewing: Option<bool>,
) -> Result<bool, OpError> {
    payment.validate_for_storage().map_err(OpError::Rejected)?;
    if grace.is_none() && auto_renewing.is_none() {
        return Ok(true);
    }
    let owners = tx.update_renewal_info(payment, grace, auto_renewing)?;
    refresh_owners(tx, &owners)?;
    Ok(!owners.is_empty())
}

/// Sets (or clears, with 0) the refund-requested time of a payment; with `owner`, only that
/// key's payment is touched. Returns whether a row matched.
pub fn set_refund_requested(
    tx: &mut dyn StoreTx,
    payment: &PaymentTx,
    ts: i64,
    owner: Option<&PubKeyBytes>,
) -> Result<bool, OpError> {
    if !matches!(payment.provider(), PaymentProvider::Google | PaymentProvider::Apple) {
        return Ok(false);
    }
    let owners = tx.set_refund_requested(payment, ts, owner)?;
    refresh_owners(tx, &owners)?;
    Ok(!owners.is_empty())
}

fn refresh_owners(tx: &mut dyn StoreTx, owners: &[Option<PubKeyBytes>]) -> StoreResult<()> {
    let mut done: Vec<PubKeyBytes> = Vec::new();
    for owner in owners.iter().flatten() {
        if !done.contains(owner) {
            refresh_user(tx, owner)?;
            done.push(*owner);
        }
    }
    Ok(())
}

/// Revokes every payment of a subscription (a refund or a store revocation). For each owner
/// whose payment this call actually revoked, the generation their proofs carry is listed as
/// revoked for as long as any of those proofs can live, and a fresh generation is handed out
/// if the owner still holds a usable payment. Returns whether the subscription was known.
pub fn revoke_subscription(
    tx: &mut dyn StoreTx,
    provider: PaymentProvider,
    subscription_key: &str,
    revoke_ts: i64,
    now: i64,
) -> Result<bool, OpError> {
    let rows = tx.subscription_rows(provider, subscription_key)?;
    if rows.is_empty() {
        return Ok(false);
    }
    // Per owner: whether this call changed one of their rows, and their newest row's expiry
    // and grace.
    let mut owners: Vec<(PubKeyBytes, bool, i64, i64)> = Vec::new();
    for row in &rows {
        let changed =
            if row.status == PaymentStatus::Unredeemed.as_i64() || row.status == PaymentStatus::Redeemed.as_i64() {
                tx.mark_revoked(row.id, revoke_ts)?
            } else {
                false
            };
        if let Some(m) = row.master_pkey {
            match owners.iter_mut().find(|o| o.0 == m) {
                Some(o) => {
                    o.1 |= changed;
                    o.2 = row.expiry_unix_ts_ms;
                    o.3 = row.grace_period_duration_ms;
                }
                None => owners.push((m, changed, row.expiry_unix_ts_ms, row.grace_period_duration_ms)),
            }
        }
    }
    for (master, changed, expiry, grace) in owners {
        if !changed {
            continue; // already revoked or expired before: nothing new to publish
        }
        let before = tx.user(&master)?;
        let after = refresh_user(tx, &master)?;
        let Some(user) = before else { continue };
        let latest_proof = latest_possible_proof_expiry(now, revoke_ts, user.expiry_unix_ts_ms, expiry, grace);
        if needs_list_entry(revoke_ts, latest_proof) {
            let keep_until = after.best.expiry_unix_ts_ms.max(latest_proof);
            put_revocation(tx, user.gen_index, revoke_ts, keep_until)?;
            allocate_gen_index(tx, &master)?;
        }
    }
    Ok(true)
}

/// Lists a generation as revoked, or extends an existing entry; any change bumps the ticket.
pub fn put_revocation(tx: &mut dyn StoreTx, gen_index: u64, creation: i64, expiry: i64) -> StoreResult<()> {
    match tx.revocation(gen_index)? {
        None => {
            tx.insert_revocation(&RevocationRow { gen_index, creation_unix_ts_ms: creation, expiry_unix_ts_ms: expiry })
        }
        Some(existing) if expiry > existing.expiry_unix_ts_ms => {
            tx.update_revocation(&RevocationRow { expiry_unix_ts_ms: expiry, ..existing })?;
            tx.bump_revocation_ticket()
        }
        Some(_) => Ok(()),
    }
}

/// Counts of the daily job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExpireReport {
    pub already_done: bool,
    /// Distinct owners among the payments that expired.
    pub payments: i64,
    pub revocations: i64,
    pub users: i64,
    pub apple_notifications: i64,
    pub google_notifications: i64,
}

/// The daily job at `job_ts`: expires payments, prunes revocations, users without payments and
/// old notification records. Runs at most once per `job_ts` across every server sharing the
/// database.
pub fn expire(tx: &mut dyn StoreTx, job_ts: i64) -> StoreResult<ExpireReport> {
    if !tx.claim_expiry_run(job_ts)? {
        return Ok(ExpireReport { already_done: true, ..Default::default() });
    }
    Ok(ExpireReport {
        already_done: false,
        payments: tx.expire_payments(job_ts)?,
        revocations: tx.delete_expired_revocations(job_ts)?,
        users: tx.delete_orphan_users()?,
        apple_notifications: tx.delete_expired_apple_uuids(job_ts)?,
        google_notifications: tx.delete_expired_handled_google_notifications(job_ts)?,
    })
}

/// Everything `/get_pro_details` reports, read in one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProDetails {
    pub user: Option<UserRow>,
    pub user_generation_revoked: bool,
    pub payments_total: i64,
    pub error_report: bool,
    pub items: Vec<PaymentRow>,
}

pub fn pro_details(tx: &mut dyn StoreTx, master: &PubKeyBytes, count: u32) -> StoreResult<ProDetails> {
    let user = tx.user(master)?;
    let user_generation_revoked = match &user {
        Some(u) => tx.revocation(u.gen_index)?.is_some(),
        None => false,
    };
    Ok(ProDetails {
        user_generation_revoked,
        user,
        payments_total: tx.payments_total(master)?,
        error_report: tx.has_user_error_for(master)?,
        items: if count > 0 { tx.payment_history(master, count)? } else { Vec::new() },
    })
}

/// What `/generate_pro_proof` may sign for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProofEntitlement {
    NoUser,
    Revoked,
    Entitled(UserRow),
}

pub fn proof_entitlement(tx: &mut dyn StoreTx, master: &PubKeyBytes) -> StoreResult<ProofEntitlement> {
    Ok(match tx.user(master)? {
        None => ProofEntitlement::NoUser,
        Some(u) if tx.revocation(u.gen_index)?.is_some() => ProofEntitlement::Revoked,
        Some(u) => ProofEntitlement::Entitled(u),
    })
}

/// The server's ticket and, when the caller's ticket is behind it, every revocation row.
pub fn revocation_list(tx: &mut dyn StoreTx, client_ticket: i128) -> StoreResult<(i64, Vec<RevocationRow>)> {
    let ticket = tx.revocation_ticket()?;
    let rows = if client_ticket < i128::from(ticket) { tx.revocations()? } else { Vec::new() };
    Ok((ticket, rows))
}

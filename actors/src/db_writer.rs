//! DbWriter: owns the only read-write database connection. Every write is one typed command,
//! run in its own transaction on the writer's thread.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use actix::{Actor, Handler, Message, SyncContext};

use crate::clock::SharedClock;
use crate::db_reader::{Read, ReadCommand};
use crate::domain::types::{PaymentProvider, PaymentTx, PubKeyBytes, RedeemOutcome};
use crate::handle::Handle;
use crate::health::ActorHealth;
use crate::store::ops::{self, AddPaymentOutcome, DevPayment, ExpireReport, OpCtx, OpError};
use crate::store::rows::NewPayment;
use crate::store::{Database, StoreError, StoreTx, read_db, write_db};

/// A write the DbWriter can run.
pub trait WriteCommand: Send + 'static {
    type Output: Send + 'static;
    fn apply(self, tx: &mut dyn StoreTx, ctx: OpCtx) -> Result<Self::Output, OpError>;
}

/// Envelope of a write command.
pub struct Write<C>(pub C);

impl<C: WriteCommand> Message for Write<C> {
    type Result = Result<C::Output, OpError>;
}

pub struct DbWriter {
    db: Box<dyn Database>,
    health: Arc<ActorHealth>,
    clock: SharedClock,
    dev: bool,
}

impl DbWriter {
    pub fn new(db: Box<dyn Database>, health: Arc<ActorHealth>, clock: SharedClock, dev: bool) -> Self {
        Self { db, health, clock, dev }
    }

    fn record<T>(&self, r: &Result<T, OpError>) {
        let now = self.clock.now_ms();
        match r {
            Err(OpError::Store(e)) => self.health.record_failure(now, &e.to_string()),
            _ => self.health.record_success(now),
        }
    }
}

impl Actor for DbWriter {
    type Context = SyncContext<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.health.mark_stopped();
    }
}

impl<C: WriteCommand> Handler<Write<C>> for DbWriter {
    type Result = Result<C::Output, OpError>;

    fn handle(&mut self, msg: Write<C>, _: &mut Self::Context) -> Self::Result {
        let ctx = OpCtx { now: self.clock.now_ms(), dev: self.dev };
        let db = &mut *self.db;
        // A bug must not take the only writer down: the transaction is rolled back on unwind.
        let r = catch_unwind(AssertUnwindSafe(|| write_db(db, |tx| msg.0.apply(tx, ctx)))).unwrap_or_else(|_| {
            Err(StoreError::Integrity("internal error while writing; nothing was changed".into()).into())
        });
        self.record(&r);
        r
    }
}

/// In-memory databases have no separate readers; their reads run here.
impl<C: ReadCommand> Handler<Read<C>> for DbWriter {
    type Result = Result<C::Output, StoreError>;

    fn handle(&mut self, msg: Read<C>, _: &mut Self::Context) -> Self::Result {
        let db = &mut *self.db;
        let r = catch_unwind(AssertUnwindSafe(|| read_db(db, |tx| msg.0.run(tx))))
            .unwrap_or_else(|_| Err(StoreError::Integrity("internal error while reading".into())));
        self.record(&r.as_ref().map(|_| ()).map_err(|e| OpError::Store(e.clone())));
        r
    }
}

pub type WriterHandle = Handle<DbWriter>;

// ---- commands

/// A client's claim of a payment (signatures already verified).
pub struct ClaimPayment {
    pub master: PubKeyBytes,
    pub payment: PaymentTx,
    /// Present in dev mode: how to fabricate a missing `DEV.` payment.
    pub dev: Option<DevPayment>,
}

impl WriteCommand for ClaimPayment {
    type Output = RedeemOutcome;
    fn apply(self, tx: &mut dyn StoreTx, ctx: OpCtx) -> Result<RedeemOutcome, OpError> {
        ops::claim_for_client(tx, &self.master, &self.payment, ctx, self.dev)
    }
}

/// Records a payment witnessed from a store (auto-claiming renewals).
pub struct AddUnredeemedPayment(pub NewPayment);

impl WriteCommand for AddUnredeemedPayment {
    type Output = AddPaymentOutcome;
    fn apply(self, tx: &mut dyn StoreTx, ctx: OpCtx) -> Result<AddPaymentOutcome, OpError> {
        ops::add_unredeemed_payment(tx, &self.0, ctx)
    }
}

pub struct UpdateRenewalInfo {
    pub payment: PaymentTx,
    pub grace_period_duration_ms: Option<i64>,
    pub auto_renewing: Option<bool>,
}

impl WriteCommand for UpdateRenewalInfo {
    type Output = bool;
    fn apply(self, tx: &mut dyn StoreTx, _: OpCtx) -> Result<bool, OpError> {
        ops::update_renewal_info(tx, &self.payment, self.grace_period_duration_ms, self.auto_renewing)
    }
}

pub struct SetRefundRequested {
    pub payment: PaymentTx,
    pub refund_requested_unix_ts_ms: i64,
    /// When set, only this key's payment may be changed.
    pub owner: Option<PubKeyBytes>,
}

impl WriteCommand for SetRefundRequested {
    type Output = bool;
    fn apply(self, tx: &mut dyn StoreTx, _: OpCtx) -> Result<bool, OpError> {
        ops::set_refund_requested(tx, &self.payment, self.refund_requested_unix_ts_ms, self.owner.as_ref())
    }
}

/// Revokes a whole subscription (Google: purchase token; Apple: original transaction id).
pub struct RevokeSubscription {
    pub provider: PaymentProvider,
    pub subscription_key: String,
    pub revoke_unix_ts_ms: i64,
}

impl WriteCommand for RevokeSubscription {
    type Output = bool;
    fn apply(self, tx: &mut dyn StoreTx, ctx: OpCtx) -> Result<bool, OpError> {
        ops::revoke_subscription(tx, self.provider, &self.subscription_key, self.revoke_unix_ts_ms, ctx.now)
    }
}

/// The daily job at `job_ts`.
pub struct RunExpiry {
    pub job_ts: i64,
}

impl WriteCommand for RunExpiry {
    type Output = ExpireReport;
    fn apply(self, tx: &mut dyn StoreTx, _: OpCtx) -> Result<ExpireReport, OpError> {
        Ok(ops::expire(tx, self.job_ts)?)
    }
}

pub struct AddUserError {
    pub provider: PaymentProvider,
    pub payment_id: String,
}

impl WriteCommand for AddUserError {
    type Output = bool;
    fn apply(self, tx: &mut dyn StoreTx, ctx: OpCtx) -> Result<bool, OpError> {
        Ok(tx.add_user_error(self.provider, &self.payment_id, ctx.now)?)
    }
}

pub struct DeleteUserError {
    pub provider: PaymentProvider,
    pub payment_id: String,
}

impl WriteCommand for DeleteUserError {
    type Output = bool;
    fn apply(self, tx: &mut dyn StoreTx, _: OpCtx) -> Result<bool, OpError> {
        Ok(tx.delete_user_error(self.provider, &self.payment_id)?)
    }
}

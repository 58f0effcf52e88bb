//! DbWriter: owns the only read-write database connection. Every write is one typed command
//! that runs atomically in its own savepoint; commands that arrive while others are queued
//! share one transaction (group commit), so one disk sync covers several of them. A command
//! is answered only after the transaction holding it is committed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use actix::{Actor, Handler, Message, SyncContext};
use tokio::sync::oneshot;

use crate::clock::SharedClock;
use crate::db_reader::{Read, ReadCommand};
use crate::domain::types::{PaymentProvider, PaymentTx, PubKeyBytes, RedeemOutcome};
use crate::handle::{ActorError, Handle};
use crate::health::ActorHealth;
use crate::store::ops::{self, AddPaymentOutcome, DevPayment, ExpireReport, OpCtx, OpError};
use crate::store::rows::NewPayment;
use crate::store::{Database, StoreError, StoreTx, read_db};

/// A write the DbWriter can run.
pub trait WriteCommand: Send + 'static {
    type Output: Send + 'static;
    fn apply(self, tx: &mut dyn StoreTx, ctx: OpCtx) -> Result<Self::Output, OpError>;
}

/// A write command as callers name it: `writer.send(Write(cmd))`.
pub struct Write<C>(pub C);

/// Counts commands sent but not yet picked up, so the writer knows whether to wait for more
/// before committing. Dropped (and so counted down) when the writer takes the command, or when
/// the mailbox discards it.
struct QueueToken(Arc<AtomicI64>);

impl QueueToken {
    fn new(queued: &Arc<AtomicI64>) -> Self {
        queued.fetch_add(1, Ordering::SeqCst);
        Self(queued.clone())
    }
}

impl Drop for QueueToken {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What travels to the actor: the command, where its answer goes, and its queue token.
struct Job<C: WriteCommand> {
    cmd: C,
    reply: oneshot::Sender<Result<C::Output, OpError>>,
    token: QueueToken,
}

impl<C: WriteCommand> Message for Job<C> {
    type Result = ();
}

/// Most commands sharing one transaction.
const MAX_BATCH: usize = 32;

type Completion = Box<dyn FnOnce(&Result<(), StoreError>) + Send>;

pub struct DbWriter {
    /// None when the connection could not be (re)opened: every command then fails cleanly.
    db: Option<Box<dyn Database>>,
    health: Arc<ActorHealth>,
    clock: SharedClock,
    dev: bool,
    queued: Arc<AtomicI64>,
    /// Answers waiting for the open transaction to commit.
    pending: Vec<Completion>,
    in_tx: bool,
}

impl DbWriter {
    pub fn new(
        db: Option<Box<dyn Database>>,
        health: Arc<ActorHealth>,
        clock: SharedClock,
        dev: bool,
        queued: Arc<AtomicI64>,
    ) -> Self {
        Self { db, health, clock, dev, queued, pending: Vec::new(), in_tx: false }
    }

    /// Commits the open transaction and answers everyone waiting on it.
    fn flush(&mut self) {
        if !self.in_tx {
            return;
        }
        self.in_tx = false;
        let Some(db) = self.db.as_deref_mut() else { return };
        let committed = db.commit();
        if let Err(e) = &committed {
            let _ = db.rollback();
            self.health.record_failure(self.clock.now_ms(), &format!("commit failed: {e}"));
        }
        for done in self.pending.drain(..) {
            done(&committed);
        }
    }

    /// Rolls back the open transaction: every command in it fails.
    fn abort(&mut self, why: &str) {
        if self.in_tx {
            self.in_tx = false;
            if let Some(db) = self.db.as_deref_mut() {
                let _ = db.rollback();
            }
        }
        let err = Err(StoreError::Db(why.to_string()));
        for done in self.pending.drain(..) {
            done(&err);
        }
    }
}

impl Actor for DbWriter {
    type Context = SyncContext<Self>;

    fn stopped(&mut self, _: &mut Self::Context) {
        self.flush();
        self.health.mark_stopped();
    }
}

/// Runs `f` inside a savepoint of the open transaction, undoing only its own changes on error.
fn in_savepoint<T>(tx: &mut dyn StoreTx, f: impl FnOnce(&mut dyn StoreTx) -> Result<T, OpError>) -> Result<T, OpError> {
    tx.savepoint("command")?;
    match f(tx) {
        Ok(v) => {
            tx.release("command")?;
            Ok(v)
        }
        Err(e) => {
            tx.rollback_to("command")?;
            Err(e)
        }
    }
}

impl<C: WriteCommand> Handler<Job<C>> for DbWriter {
    type Result = ();

    fn handle(&mut self, job: Job<C>, _: &mut Self::Context) {
        let Job { cmd, reply, token } = job;
        drop(token);
        let now = self.clock.now_ms();
        let Some(db) = self.db.as_deref_mut() else {
            let _ = reply.send(Err(StoreError::Db("no database connection".into()).into()));
            return;
        };
        if !self.in_tx {
            if let Err(e) = db.begin() {
                self.health.record_failure(now, &e.to_string());
                let _ = reply.send(Err(e.into()));
                return;
            }
            self.in_tx = true;
        }
        let ctx = OpCtx { now, dev: self.dev };
        // A bug must not take the only writer down.
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut tx = db.tx();
            in_savepoint(&mut *tx, |tx| cmd.apply(tx, ctx))
        }));
        match outcome {
            Ok(result) => {
                match &result {
                    Err(OpError::Store(e)) => self.health.record_failure(now, &e.to_string()),
                    _ => self.health.record_success(now),
                }
                self.pending.push(Box::new(move |committed: &Result<(), StoreError>| {
                    let answer = match (result, committed) {
                        (Ok(_), Err(e)) => Err(OpError::Store(e.clone())),
                        (r, _) => r,
                    };
                    let _ = reply.send(answer);
                }));
            }
            Err(_) => {
                // The savepoint's state is unknown after a panic: give up the whole batch.
                self.health.record_failure(now, "internal error while writing");
                self.abort("internal error while writing; nothing was changed");
                let _ = reply
                    .send(
                        Err(StoreError::Integrity("internal error while writing; nothing was changed".into()).into()),
                    );
                return;
            }
        }
        if self.queued.load(Ordering::SeqCst) <= 0 || self.pending.len() >= MAX_BATCH {
            self.flush();
        }
    }
}

/// In-memory databases have no separate readers; their reads run here, after any open
/// transaction is committed.
impl<C: ReadCommand> Handler<Read<C>> for DbWriter {
    type Result = Result<C::Output, StoreError>;

    fn handle(&mut self, msg: Read<C>, _: &mut Self::Context) -> Self::Result {
        self.flush();
        let Some(db) = self.db.as_deref_mut() else { return Err(StoreError::Db("no database connection".into())) };
        let r = catch_unwind(AssertUnwindSafe(|| read_db(db, |tx| msg.0.run(tx))))
            .unwrap_or_else(|_| Err(StoreError::Integrity("internal error while reading".into())));
        match &r {
            Ok(_) => self.health.record_success(self.clock.now_ms()),
            Err(e) => self.health.record_failure(self.clock.now_ms(), &e.to_string()),
        }
        r
    }
}

/// Why a write did not happen: the command's own refusal or storage failure, or the writer
/// not taking it (overloaded, stopped, too slow). Nothing was committed in any case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The data does not allow the command; the text is for the caller.
    #[error("{0}")]
    Rejected(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Actor(#[from] ActorError),
}

impl From<OpError> for WriteError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::Rejected(why) => Self::Rejected(why),
            OpError::Store(e) => Self::Store(e),
        }
    }
}

/// The typed front door of the writer.
#[derive(Clone)]
pub struct WriterHandle {
    handle: Handle<DbWriter>,
    queued: Arc<AtomicI64>,
}

impl WriterHandle {
    pub fn new(handle: Handle<DbWriter>, queued: Arc<AtomicI64>) -> Self {
        Self { handle, queued }
    }

    /// Runs a command; answers once it is committed (or failed).
    pub async fn send<C: WriteCommand>(&self, msg: Write<C>) -> Result<C::Output, WriteError> {
        let token = QueueToken::new(&self.queued);
        Ok(self.handle.deliver(move |reply| Job { cmd: msg.0, reply, token }).await??)
    }

    pub fn health(&self) -> &Arc<ActorHealth> {
        self.handle.health()
    }

    /// The plain handle, for reads of in-memory databases.
    pub fn handle(&self) -> &Handle<DbWriter> {
        &self.handle
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::handle::HandleLimits;
    use crate::store::sqlite::{self, SqliteDatabase, SqliteTarget};
    use actix::SyncArbiter;

    /// Inserts a user error, or fails after inserting one when `fail` is set.
    struct Note {
        id: String,
        fail: bool,
    }

    impl WriteCommand for Note {
        type Output = ();
        fn apply(self, tx: &mut dyn StoreTx, _: OpCtx) -> Result<(), OpError> {
            tx.add_user_error(PaymentProvider::Google, &self.id, 1)?;
            if self.fail { Err(OpError::Rejected(format!("{} refused", self.id))) } else { Ok(()) }
        }
    }

    #[actix::test]
    async fn batched_commands_succeed_or_fail_on_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let target = SqliteTarget::file(dir.path().join("w.db"));
        let mut conn = sqlite::open_writer(&target).unwrap();
        sqlite::bootstrap(&mut conn, [1; 32]).unwrap();
        let queued = Arc::new(AtomicI64::new(0));
        let health = ActorHealth::new("db_writer");
        let (q, h) = (queued.clone(), health.clone());
        let slot = std::sync::Mutex::new(Some(conn));
        let addr = SyncArbiter::start(1, move || {
            let conn = slot.lock().unwrap().take();
            let db = conn.map(|conn| Box::new(SqliteDatabase { conn }) as Box<dyn Database>);
            DbWriter::new(db, h.clone(), ManualClock::new(0), false, q.clone())
        });
        let writer = WriterHandle::new(Handle::new(addr, health, HandleLimits::default()), queued.clone());
        // Many concurrent commands end up sharing transactions; every other one fails.
        let answers = futures_util::future::join_all((0..100).map(|i| {
            let w = writer.clone();
            async move { w.send(Write(Note { id: format!("n{i}"), fail: i % 2 == 1 })).await }
        }))
        .await;
        for (i, a) in answers.iter().enumerate() {
            let want = if i % 2 == 0 { Ok(()) } else { Err(WriteError::Rejected(format!("n{i} refused"))) };
            assert_eq!(a, &want, "command {i}");
        }
        assert_eq!(queued.load(Ordering::SeqCst), 0);
        let mut check = sqlite::open_reader(&target).unwrap();
        let ids: Vec<String> = sqlite::read(&mut check, |tx| {
            Ok((0..100)
                .filter(|i| tx.has_user_error(PaymentProvider::Google, &format!("n{i}")).unwrap())
                .map(|i| format!("n{i}"))
                .collect())
        })
        .unwrap();
        assert_eq!(ids, (0..100).filter(|i| i % 2 == 0).map(|i| format!("n{i}")).collect::<Vec<_>>());
    }
}

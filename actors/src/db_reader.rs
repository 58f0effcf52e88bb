//! DbReader: read-only connections on their own threads, so reads never wait for the writer
//! (SQLite WAL lets them see the last committed state meanwhile).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use actix::{Actor, Handler, Message, SyncContext};

use crate::clock::SharedClock;
use crate::db_writer::DbWriter;
use crate::domain::revocation::RevocationRow;
use crate::domain::types::PubKeyBytes;
use crate::handle::{ActorError, Handle};
use crate::health::ActorHealth;
use crate::store::ops::{self, ProDetails, ProofEntitlement};
use crate::store::{Database, StoreError, StoreResult, StoreTx, read_db};

/// A read the readers (or, for in-memory databases, the writer) can run.
pub trait ReadCommand: Send + 'static {
    type Output: Send + 'static;
    fn run(self, tx: &mut dyn StoreTx) -> StoreResult<Self::Output>;
}

pub struct Read<C>(pub C);

impl<C: ReadCommand> Message for Read<C> {
    type Result = Result<C::Output, StoreError>;
}

pub struct DbReader {
    db: Option<Box<dyn Database>>,
    health: Arc<ActorHealth>,
    clock: SharedClock,
}

impl DbReader {
    /// `db` is None when the connection could not be opened; every read then fails cleanly.
    pub fn new(db: Option<Box<dyn Database>>, health: Arc<ActorHealth>, clock: SharedClock) -> Self {
        Self { db, health, clock }
    }
}

impl Actor for DbReader {
    type Context = SyncContext<Self>;
}

impl<C: ReadCommand> Handler<Read<C>> for DbReader {
    type Result = Result<C::Output, StoreError>;

    fn handle(&mut self, msg: Read<C>, _: &mut Self::Context) -> Self::Result {
        let r = match self.db.as_deref_mut() {
            None => Err(StoreError::Db("no read connection".into())),
            Some(db) => catch_unwind(AssertUnwindSafe(|| read_db(db, |tx| msg.0.run(tx))))
                .unwrap_or_else(|_| Err(StoreError::Integrity("internal error while reading".into()))),
        };
        let now = self.clock.now_ms();
        match &r {
            Ok(_) => self.health.record_success(now),
            Err(e) => self.health.record_failure(now, &e.to_string()),
        }
        r
    }
}

/// Where reads go: the reader pool, or the writer for in-memory databases.
#[derive(Clone)]
pub enum ReaderHandle {
    Pool(Handle<DbReader>),
    Writer(Handle<DbWriter>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Actor(#[from] ActorError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ReaderHandle {
    pub async fn read<C: ReadCommand>(&self, cmd: C) -> Result<C::Output, ReadError> {
        let r = match self {
            Self::Pool(h) => h.send(Read(cmd)).await?,
            Self::Writer(h) => h.send(Read(cmd)).await?,
        };
        Ok(r?)
    }
}

// ---- commands

pub struct GetProDetails {
    pub master: PubKeyBytes,
    pub count: u32,
}

impl ReadCommand for GetProDetails {
    type Output = ProDetails;
    fn run(self, tx: &mut dyn StoreTx) -> StoreResult<ProDetails> {
        ops::pro_details(tx, &self.master, self.count)
    }
}

pub struct GetProofEntitlement {
    pub master: PubKeyBytes,
}

impl ReadCommand for GetProofEntitlement {
    type Output = ProofEntitlement;
    fn run(self, tx: &mut dyn StoreTx) -> StoreResult<ProofEntitlement> {
        ops::proof_entitlement(tx, &self.master)
    }
}

/// The revocation ticket, and the list when `client_ticket` is behind it.
pub struct GetRevocations {
    pub client_ticket: i128,
}

impl ReadCommand for GetRevocations {
    type Output = (i64, Vec<RevocationRow>);
    fn run(self, tx: &mut dyn StoreTx) -> StoreResult<(i64, Vec<RevocationRow>)> {
        ops::revocation_list(tx, self.client_ticket)
    }
}

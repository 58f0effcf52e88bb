//! The typed front door of every actor: counts mailbox depth, refuses work past a limit,
//! applies a timeout, and turns mailbox failures into a clean "unavailable" error.

use std::sync::Arc;
use std::time::Duration;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Message};

use crate::health::ActorHealth;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActorError {
    #[error("the {0} is unavailable")]
    Unavailable(&'static str),
    #[error("the {0} is overloaded, try again later")]
    Overloaded(&'static str),
    #[error("the {0} did not answer in time")]
    Timeout(&'static str),
}

/// Limits a handle applies.
#[derive(Debug, Clone, Copy)]
pub struct HandleLimits {
    pub timeout: Duration,
    pub max_depth: i64,
}

impl Default for HandleLimits {
    fn default() -> Self {
        Self { timeout: Duration::from_secs(10), max_depth: 10_000 }
    }
}

pub struct Handle<A: Actor> {
    addr: Addr<A>,
    health: Arc<ActorHealth>,
    limits: HandleLimits,
}

impl<A: Actor> Clone for Handle<A> {
    fn clone(&self) -> Self {
        Self { addr: self.addr.clone(), health: self.health.clone(), limits: self.limits }
    }
}

/// Decrements the depth counter however the request ends (answer, timeout, cancellation).
struct DepthGuard<'a>(&'a ActorHealth);

impl Drop for DepthGuard<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

impl<A: Actor> Handle<A> {
    pub fn new(addr: Addr<A>, health: Arc<ActorHealth>, limits: HandleLimits) -> Self {
        let probe = addr.clone();
        health.set_liveness(move || probe.connected());
        Self { addr, health, limits }
    }

    pub fn health(&self) -> &Arc<ActorHealth> {
        &self.health
    }

    pub fn addr(&self) -> &Addr<A> {
        &self.addr
    }

    /// Fire-and-forget delivery whose answer comes back through a oneshot channel the
    /// message carries (the actor may answer later than it handles the message). Unlike
    /// `send`, the mailbox never drops such a message if the caller goes away.
    pub async fn deliver<M, R>(&self, make: impl FnOnce(tokio::sync::oneshot::Sender<R>) -> M) -> Result<R, ActorError>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message<Result = ()> + Send + 'static,
    {
        let name = self.health.name;
        let depth = self.health.enter();
        let _guard = DepthGuard(&self.health);
        if depth > self.limits.max_depth {
            self.health.record_refused();
            return Err(ActorError::Overloaded(name));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.addr.do_send(make(tx));
        match tokio::time::timeout(self.limits.timeout, rx).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(ActorError::Unavailable(name)),
            Err(_) => Err(ActorError::Timeout(name)),
        }
    }

    pub async fn send<M>(&self, msg: M) -> Result<M::Result, ActorError>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        let name = self.health.name;
        let depth = self.health.enter();
        let _guard = DepthGuard(&self.health);
        if depth > self.limits.max_depth {
            self.health.record_refused();
            return Err(ActorError::Overloaded(name));
        }
        match tokio::time::timeout(self.limits.timeout, self.addr.send(msg)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(ActorError::Unavailable(name)),
            Err(_) => Err(ActorError::Timeout(name)),
        }
    }
}

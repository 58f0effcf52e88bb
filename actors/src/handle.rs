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
        self.guarded(|| {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.addr.do_send(make(tx));
            rx
        })
        .await
    }

    pub async fn send<M>(&self, msg: M) -> Result<M::Result, ActorError>
    where
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
        M: Message + Send + 'static,
        M::Result: Send,
    {
        self.guarded(|| self.addr.send(msg)).await
    }

    /// The limits every request passes: counted in the mailbox depth while it lasts, refused
    /// past the depth limit before `start` posts anything, bounded by the timeout, and a
    /// dropped answer read as the actor being unavailable.
    async fn guarded<T, E, F>(&self, start: impl FnOnce() -> F) -> Result<T, ActorError>
    where
        F: std::future::Future<Output = Result<T, E>>,
    {
        let name = self.health.name;
        let depth = self.health.enter();
        let _guard = DepthGuard(&self.health);
        if depth > self.limits.max_depth {
            self.health.record_refused();
            return Err(ActorError::Overloaded(name));
        }
        match tokio::time::timeout(self.limits.timeout, start()).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(_)) => Err(ActorError::Unavailable(name)),
            Err(_) => Err(ActorError::Timeout(name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix::{ActorContext, Context, Handler};

    /// A test actor: echoes, answers through a channel, drops or keeps reply channels, stops.
    #[derive(Default)]
    struct Probe {
        kept: Vec<tokio::sync::oneshot::Sender<u32>>,
    }
    impl Actor for Probe {
        type Context = Context<Self>;
    }

    #[derive(Message)]
    #[rtype(result = "u32")]
    struct Echo(u32);
    impl Handler<Echo> for Probe {
        type Result = u32;
        fn handle(&mut self, m: Echo, _: &mut Context<Self>) -> u32 {
            m.0
        }
    }

    /// What the actor does with the reply channel it is handed.
    enum Reply {
        Answer(u32),
        Drop,
        Keep,
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Ask(Reply, tokio::sync::oneshot::Sender<u32>);
    impl Handler<Ask> for Probe {
        type Result = ();
        fn handle(&mut self, Ask(reply, tx): Ask, _: &mut Context<Self>) {
            match reply {
                Reply::Answer(v) => drop(tx.send(v)),
                Reply::Drop => drop(tx),
                Reply::Keep => self.kept.push(tx),
            }
        }
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Stop;
    impl Handler<Stop> for Probe {
        type Result = ();
        fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }

    fn handle(limits: HandleLimits) -> Handle<Probe> {
        Handle::new(Probe::default().start(), ActorHealth::new("probe"), limits)
    }

    #[actix::test]
    async fn answers_and_leaves_the_depth_at_zero() {
        let h = handle(HandleLimits::default());
        assert_eq!(h.send(Echo(5)).await, Ok(5));
        assert_eq!(h.deliver(|tx| Ask(Reply::Answer(7), tx)).await, Ok(7));
        assert_eq!(h.health().depth(), 0);
    }

    #[actix::test]
    async fn refuses_past_the_depth_limit() {
        let h = handle(HandleLimits { max_depth: 0, ..Default::default() });
        assert_eq!(h.send(Echo(5)).await, Err(ActorError::Overloaded("probe")));
        assert_eq!(h.deliver(|tx| Ask(Reply::Answer(7), tx)).await, Err(ActorError::Overloaded("probe")));
        assert_eq!(h.health().depth(), 0, "a refused request does not stay counted");
        assert_eq!(ActorError::Overloaded("probe").to_string(), "the probe is overloaded, try again later");
    }

    #[actix::test]
    async fn a_dropped_answer_is_unavailable_and_a_missing_one_times_out() {
        let h = handle(HandleLimits { timeout: Duration::from_millis(50), ..Default::default() });
        assert_eq!(h.deliver(|tx| Ask(Reply::Drop, tx)).await, Err(ActorError::Unavailable("probe")));
        assert_eq!(h.deliver(|tx| Ask(Reply::Keep, tx)).await, Err(ActorError::Timeout("probe")));
        assert_eq!(h.health().depth(), 0);
        assert_eq!(h.send(Echo(1)).await, Ok(1), "the actor still serves after a timeout");
    }

    #[actix::test]
    async fn a_stopped_actor_is_unavailable() {
        let h = handle(HandleLimits::default());
        h.send(Stop).await.unwrap();
        assert_eq!(h.send(Echo(5)).await, Err(ActorError::Unavailable("probe")));
        assert!(!h.health().is_up());
    }
}

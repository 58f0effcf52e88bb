//! GoogleSubscriber: pulls Google Play notifications from Pub/Sub and applies them.
//!
//! Every message is first recorded in `google_notification_history` (so a restart loses
//! nothing), then handled in its own write: the Publisher API is asked for the purchase's
//! current state *before* the write, never inside the writer's transaction. A message is
//! acknowledged only once it is handled; one that fails is retried with a growing delay (2 s,
//! 4 s, … 600 s) while the others carry on. The worker runs as a supervised task: if it ever
//! panics it is started again from the history table, and the restart is counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::clock::SharedClock;
use crate::db_reader::ReaderHandle;
use crate::db_writer::{Write, WriterHandle};
use crate::domain::keys::obfuscate;
use crate::google::api::{ApiError, GoogleApi};
use crate::google::mapping::{
    Action, HISTORY_RETENTION_MS, HandleGoogleNotification, HandleOutcome, LoadUnhandledGoogle, MappingCtx,
    RecordGoogleMessage, needs_grace_period, plan_subscription, plan_voided,
};
use crate::google::rtdn::{Rtdn, RtdnPayload, SubscriptionNotification, parse_received, parse_rtdn, parse_stored};
use crate::health::{ActorHealth, Registry};

/// Pacing of the worker. Retry delays are measured on the injected clock, so tests move the
/// clock instead of sleeping.
#[derive(Debug, Clone)]
pub struct GoogleTuning {
    /// Pause after a pull that brought nothing (the server normally holds an idle pull).
    pub idle_delay: Duration,
    /// Pause after a pull that failed.
    pub error_delay: Duration,
    /// Pause before restarting a worker that crashed.
    pub restart_delay: Duration,
    /// First retry delay of a failing message (ms); it doubles on every failure.
    pub first_retry_ms: i64,
    /// Longest retry delay (ms).
    pub max_retry_ms: i64,
}

impl Default for GoogleTuning {
    fn default() -> Self {
        Self {
            idle_delay: Duration::from_secs(1),
            error_delay: Duration::from_secs(10),
            restart_delay: Duration::from_secs(5),
            first_retry_ms: 2_000,
            max_retry_ms: 600_000,
        }
    }
}

/// What the subscriber needs.
pub struct GoogleSubscriberConfig {
    pub api: Arc<GoogleApi>,
    pub mapping: MappingCtx,
    pub tuning: GoogleTuning,
    pub unsafe_logging: bool,
}

/// The front door of the Google integration: acknowledging purchases at claim time and
/// stopping the subscriber.
#[derive(Clone)]
pub struct GoogleHandle {
    api: Arc<GoogleApi>,
    health: Arc<ActorHealth>,
    stop: Arc<watch::Sender<bool>>,
    done: watch::Receiver<bool>,
}

impl GoogleHandle {
    pub fn health(&self) -> &Arc<ActorHealth> {
        &self.health
    }

    pub fn api(&self) -> &Arc<GoogleApi> {
        &self.api
    }

    /// Makes sure the purchase behind a claim is acknowledged to Google; answers whether this
    /// call acknowledged it (false: it already was).
    pub async fn acknowledge_for_claim(&self, purchase_token: &str) -> Result<bool, ApiError> {
        self.api.ensure_acknowledged(purchase_token).await
    }

    /// Asks the subscriber to stop after the batch in hand and waits (at most `patience`) for it.
    pub async fn stop(&self, patience: Duration) {
        let _ = self.stop.send(true);
        let mut done = self.done.clone();
        let _ = tokio::time::timeout(patience, done.wait_for(|d| *d)).await;
    }
}

/// Counts one message event on /metrics.
fn count(registry: &Registry, event: &str) {
    registry.count("pro_google_messages_total", "Google notifications by event", format!("event=\"{event}\""));
}

/// Starts the subscriber on the current actix arbiter (inside a `System`).
pub fn start(
    cfg: GoogleSubscriberConfig,
    writer: WriterHandle,
    reader: ReaderHandle,
    clock: SharedClock,
    registry: Arc<Registry>,
) -> GoogleHandle {
    let health = ActorHealth::new("google_subscriber");
    registry.add_actor(health.clone());
    let pending = Arc::new(AtomicI64::new(0));
    let gauge = pending.clone();
    registry.add_gauges("pro_google_pending_messages", "Google notifications waiting to be handled", move || {
        vec![(String::new(), gauge.load(Ordering::Relaxed) as f64)]
    });
    let running = Arc::new(AtomicBool::new(true));
    let probe = running.clone();
    health.set_liveness(move || probe.load(Ordering::Relaxed));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = watch::channel(false);
    let api = cfg.api.clone();
    let restart_delay = cfg.tuning.restart_delay;
    let shared = Arc::new(Shared { cfg, writer, reader, clock, registry, health: health.clone(), pending });
    let on_crash = {
        let shared = shared.clone();
        move || {
            shared.health.record_restart();
            shared.health.record_failure(shared.clock.now_ms(), "the Google subscriber crashed and was restarted");
            error!("The Google subscriber crashed; restarting it from the notification history");
        }
    };
    let task_health = health.clone();
    let worker_stop = stop_rx.clone();
    actix::spawn(async move {
        supervise(move || Worker::new(shared.clone()).run(worker_stop.clone()), on_crash, restart_delay, stop_rx).await;
        running.store(false, Ordering::Relaxed);
        task_health.mark_stopped();
        let _ = done_tx.send(true);
    });
    GoogleHandle { api, health, stop: Arc::new(stop_tx), done: done_rx }
}

/// Runs `make()`'s future as its own task until it returns; if it panics, calls `on_crash`,
/// waits `delay` and starts a fresh one. Returns once a run ends normally or stop is asked.
pub async fn supervise<F, Fut>(
    mut make: F,
    mut on_crash: impl FnMut(),
    delay: Duration,
    mut stop: watch::Receiver<bool>,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    loop {
        match actix::spawn(make()).await {
            Ok(()) => return,
            Err(e) if e.is_panic() => {
                on_crash();
                if pause(delay, &mut stop).await {
                    return;
                }
            }
            Err(_) => return, // cancelled: the runtime is going away
        }
    }
}

/// Sleeps `d` unless stop is asked first; answers whether stop was asked.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        changed = stop.changed() => changed.is_err() || *stop.borrow(),
    }
}

/// What every incarnation of the worker shares.
struct Shared {
    cfg: GoogleSubscriberConfig,
    writer: WriterHandle,
    reader: ReaderHandle,
    clock: SharedClock,
    registry: Arc<Registry>,
    health: Arc<ActorHealth>,
    pending: Arc<AtomicI64>,
}

/// A recorded message waiting to be handled.
struct Entry {
    message_id: i64,
    rtdn: Rtdn,
    /// The latest ack id Pub/Sub gave for it (a reloaded one may have expired).
    ack_id: String,
    next_retry_ms: i64,
    retry_delay_ms: i64,
    attempts: u32,
}

struct Worker {
    s: Arc<Shared>,
    pending: Vec<Entry>,
}

impl Worker {
    fn new(s: Arc<Shared>) -> Self {
        Self { s, pending: Vec::new() }
    }

    fn package(&self) -> &str {
        &self.s.cfg.api.endpoints().package_name
    }

    fn token_label(&self, token: &str) -> String {
        if self.s.cfg.unsafe_logging { token.to_string() } else { obfuscate(token) }
    }

    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let tuning = self.s.cfg.tuning.clone();
        while let Err(e) = self.reload().await {
            warn!("Reading unhandled Google notifications failed ({e}); trying again");
            if pause(tuning.error_delay, &mut stop).await {
                return;
            }
        }
        loop {
            if *stop.borrow() {
                return;
            }
            let pulled = tokio::select! {
                r = self.s.cfg.api.pull() => r,
                _ = stop.changed() => return,
            };
            let (batch, delay) = match pulled {
                Ok(b) if b.is_empty() => (b, Some(tuning.idle_delay)),
                Ok(b) => (b, None),
                Err(e) => {
                    warn!("Pulling Google notifications failed: {e}");
                    self.s.health.record_failure(self.s.clock.now_ms(), &e.to_string());
                    (Vec::new(), Some(tuning.error_delay))
                }
            };
            let now = self.s.clock.now_ms();
            let mut acks = self.ingest(batch).await;
            acks.extend(self.process(now).await);
            self.s.pending.store(self.pending.len() as i64, Ordering::Relaxed);
            if let Err(e) = self.s.cfg.api.acknowledge_messages(&acks).await {
                warn!(
                    "Acknowledging {} handled Google notifications failed ({e}); Pub/Sub will deliver them \
                     again and they will be acknowledged then",
                    acks.len()
                );
            }
            if let Some(d) = delay
                && pause(d, &mut stop).await
            {
                return;
            }
        }
    }

    /// Queues the unhandled messages of the history table (after a start or a crash).
    async fn reload(&mut self) -> Result<(), String> {
        let rows = self.s.reader.read(LoadUnhandledGoogle).await.map_err(|e| e.to_string())?;
        for (message_id, payload, _) in rows {
            let Some(payload) = payload else { continue };
            let parsed = parse_stored(&payload).and_then(|m| parse_rtdn(&m.data, self.package()).map(|r| (m, r)));
            match parsed {
                Ok((m, rtdn)) => self.enqueue(message_id, rtdn, m.ack_id),
                Err(e) => warn!(
                    "Google notification {message_id} in the history cannot be read back ({e}); it stays unhandled \
                     until an operator handles or deletes it"
                ),
            }
        }
        if !self.pending.is_empty() {
            info!("Reloaded {} unhandled Google notifications from the history", self.pending.len());
        }
        self.pending.sort_by_key(|e| e.rtdn.event_ms);
        Ok(())
    }

    fn enqueue(&mut self, message_id: i64, rtdn: Rtdn, ack_id: String) {
        match self.pending.iter_mut().find(|e| e.message_id == message_id) {
            Some(e) => e.ack_id = ack_id,
            None => self.pending.push(Entry {
                message_id,
                rtdn,
                ack_id,
                next_retry_ms: i64::MIN,
                retry_delay_ms: 0,
                attempts: 0,
            }),
        }
    }

    /// Records each readable message of a pull and queues it; answers the ack ids of copies of
    /// messages already handled. Unreadable messages are neither stored nor acknowledged.
    async fn ingest(&mut self, batch: Vec<Value>) -> Vec<String> {
        let mut acks = Vec::new();
        let got_any = !batch.is_empty();
        for raw in batch {
            count(&self.s.registry, "pulled");
            let parsed = parse_received(&raw).and_then(|m| parse_rtdn(&m.data, self.package()).map(|r| (m, r)));
            let (msg, rtdn) = match parsed {
                Ok(p) => p,
                Err(e) => {
                    count(&self.s.registry, "invalid");
                    let id = raw.pointer("/message/messageId").and_then(Value::as_str).unwrap_or("?");
                    warn!("Ignoring Google notification {id}: {e}. It is not acknowledged.");
                    continue;
                }
            };
            let record = RecordGoogleMessage {
                message_id: msg.message_id,
                payload: msg.stored.to_string(),
                expiry_unix_ts_ms: rtdn.event_ms.saturating_add(HISTORY_RETENTION_MS),
            };
            match self.s.writer.send(Write(record)).await {
                Ok(Some(true)) => {
                    count(&self.s.registry, "duplicate");
                    acks.push(msg.ack_id);
                }
                Ok(existing) => {
                    if existing.is_some() {
                        count(&self.s.registry, "duplicate");
                    }
                    self.enqueue(msg.message_id, rtdn, msg.ack_id);
                }
                Err(e) => warn!("Recording Google notification {} failed ({e}); it will come again", msg.message_id),
            }
        }
        if got_any {
            self.pending.sort_by_key(|e| e.rtdn.event_ms);
        }
        acks
    }

    /// Attempts every queued message that is due, oldest event first; answers the ack ids of
    /// those now handled.
    async fn process(&mut self, now: i64) -> Vec<String> {
        let mut acks = Vec::new();
        let mut keep = Vec::with_capacity(self.pending.len());
        for mut e in std::mem::take(&mut self.pending) {
            if e.next_retry_ms > now {
                keep.push(e);
                continue;
            }
            if e.attempts > 0 {
                count(&self.s.registry, "retried");
            }
            e.attempts += 1;
            match self.attempt(&e).await {
                Ok(HandleOutcome::Handled) => {
                    count(&self.s.registry, "handled");
                    self.s.health.record_success(self.s.clock.now_ms());
                    info!("Handled Google notification {} ({})", e.message_id, e.rtdn.describe());
                    acks.push(e.ack_id);
                }
                Ok(HandleOutcome::AlreadyDone) => {
                    debug!("Google notification {} was already handled", e.message_id);
                    acks.push(e.ack_id);
                }
                Ok(HandleOutcome::Failed(why)) | Err(why) => {
                    count(&self.s.registry, "failed");
                    self.s.health.record_failure(self.s.clock.now_ms(), &why);
                    let t = self.s.cfg.tuning.clone();
                    e.retry_delay_ms =
                        e.retry_delay_ms.max(t.first_retry_ms / 2).max(1).saturating_mul(2).min(t.max_retry_ms);
                    e.next_retry_ms = now.saturating_add(e.retry_delay_ms);
                    let token = e.rtdn.subscription_token().map(|t| self.token_label(t)).unwrap_or_default();
                    warn!(
                        "Google notification {} ({}, token {token}) failed (attempt {}): {why}; retrying in {} s",
                        e.message_id,
                        e.rtdn.describe(),
                        e.attempts,
                        e.retry_delay_ms / 1000
                    );
                    keep.push(e);
                }
            }
        }
        self.pending = keep;
        acks
    }

    /// One attempt: asks Google what is needed, then hands the decision to the writer.
    async fn attempt(&self, e: &Entry) -> Result<HandleOutcome, String> {
        let action = match &e.rtdn.payload {
            RtdnPayload::Test => Ok(Action::Nothing("test notification".into())),
            RtdnPayload::OneTimeProduct => Ok(Action::Nothing("one-time products are not sold".into())),
            RtdnPayload::Voided(v) => {
                let action = plan_voided(v);
                if v.unexpected().is_some()
                    && let Action::Nothing(why) = &action
                {
                    warn!("Google notification {}: {why}", e.message_id);
                }
                Ok(action)
            }
            RtdnPayload::Subscription(note) => self.decide(note, e.rtdn.event_ms).await,
        };
        let cmd = HandleGoogleNotification {
            message_id: e.message_id,
            token: e.rtdn.subscription_token().map(str::to_string),
            action,
            mapping: self.s.cfg.mapping,
        };
        self.s.writer.send(Write(cmd)).await.map_err(|e| e.to_string())
    }

    async fn decide(&self, note: &SubscriptionNotification, event_ms: i64) -> Result<Action, String> {
        let api = &self.s.cfg.api;
        let sub = api.subscription_v2(&note.purchase_token).await.map_err(|e| e.to_string())?;
        let grace = if needs_grace_period(note, &sub) {
            Some(api.grace_period_ms(&sub.line_item.base_plan_id).await.map_err(|e| e.to_string())?)
        } else {
            None
        };
        plan_subscription(note, event_ms, &sub, grace, self.s.cfg.mapping)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[actix::test]
    async fn a_crashing_worker_is_restarted_and_counted() {
        let runs = Arc::new(AtomicU32::new(0));
        let crashes = Arc::new(AtomicU32::new(0));
        let (_stop_tx, stop_rx) = watch::channel(false);
        let r = runs.clone();
        let c = crashes.clone();
        supervise(
            move || {
                let n = r.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        panic!("boom {n}");
                    }
                }
            },
            move || {
                c.fetch_add(1, Ordering::SeqCst);
            },
            Duration::from_millis(1),
            stop_rx,
        )
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        assert_eq!(crashes.load(Ordering::SeqCst), 2);
    }

    #[actix::test]
    async fn stop_ends_the_restart_loop() {
        let (stop_tx, stop_rx) = watch::channel(false);
        let _ = stop_tx.send(true);
        supervise(|| async { panic!("always") }, || {}, Duration::from_secs(3600), stop_rx).await;
    }
}

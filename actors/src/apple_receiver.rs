//! AppleReceiver: owns Apple's trust roots (the verifier) and the App Store Server API
//! client. It turns a posted notification into one DbWriter command, records a user error
//! when a notification can never apply, and at start catches up, in the background, on the
//! notifications whose delivery failed while the server was away.
//!
//! Outcomes: a notification is *handled* or a *duplicate* (Apple may stop sending it),
//! *rejected* (it can never apply as sent: logged at error level, a user error recorded for its
//! subscription when known) or *unavailable* (our side failed: nothing changed, try again).

use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Message, ResponseFuture, WrapFuture};
use bytes::Bytes;
use serde_json::Value;
use tracing::{error, info, warn};

use crate::apple::api::{ApiClient, ApiKey, catchup_window};
use crate::apple::dispatch::{HandleAppleNotification, Handled, ReadAppleCheckpoint, SetAppleCheckpoint};
use crate::apple::notification::{AppleEnum, verify_and_decode};
use crate::apple::verify::{Environment, Verifier};
use crate::clock::SharedClock;
use crate::db_writer::{AddUserError, Write, WriteError, WriterHandle};
use crate::domain::keys::obfuscate;
use crate::domain::time::format_date;
use crate::domain::types::PaymentProvider;
use crate::handle::{Handle, HandleLimits};
use crate::health::{ActorHealth, Registry};
use crate::outbound::HttpClient;

const NOTIFICATIONS: &str = "pro_apple_notifications_total";
const NOTIFICATIONS_HELP: &str = "Apple notifications by source (webhook, catchup), type and outcome";
const VERIFY_FAILURES: &str = "pro_apple_verification_failures_total";
const VERIFY_FAILURES_HELP: &str = "Apple signed payloads refused, by part and Apple status";
const CATCHUP_RUNS: &str = "pro_apple_catchup_runs_total";
const CATCHUP_RUNS_HELP: &str = "start-up catch-ups of Apple's notification history by outcome (completed, skipped, api_failed, interrupted, failed)";

/// A catch-up reading more pages than this is stopped (20 notifications a page).
const MAX_HISTORY_PAGES: usize = 10_000;

/// Everything the receiver needs, already read from disk by the caller.
pub struct AppleSettings {
    /// (file name for messages, DER or PEM contents) of every trusted root.
    pub roots: Vec<(String, Vec<u8>)>,
    pub environment: Environment,
    pub bundle_id: String,
    /// Required in Production.
    pub app_apple_id: Option<i64>,
    pub key_id: String,
    pub issuer_id: String,
    /// The App Store Connect `.p8` key file's contents.
    pub p8_key: Vec<u8>,
    pub api_base_url: String,
    /// Catch up on missed notifications at start.
    pub catch_up: bool,
}

/// A notification body as Apple posts it (`{"signedPayload": "..."}`).
pub struct AppleNotification {
    pub body: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationOutcome {
    Handled,
    Duplicate,
    /// Can never apply as sent (bad signature, unknown type, no matching payment…).
    Rejected(String),
    /// Our side could not process it now; nothing changed.
    Unavailable(String),
}

impl NotificationOutcome {
    /// Whether Apple may consider the notification delivered.
    pub fn acknowledged(&self) -> bool {
        matches!(self, Self::Handled | Self::Duplicate)
    }

    fn label(&self) -> &'static str {
        match self {
            Self::Handled => "handled",
            Self::Duplicate => "duplicate",
            Self::Rejected(_) => "rejected",
            Self::Unavailable(_) => "unavailable",
        }
    }
}

impl Message for AppleNotification {
    type Result = NotificationOutcome;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Webhook,
    Catchup,
}

impl Source {
    fn label(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Catchup => "catchup",
        }
    }
}

/// The shared state the handlers and the catch-up work with.
struct Core {
    verifier: Arc<Verifier>,
    api: ApiClient,
    writer: WriterHandle,
    registry: Arc<Registry>,
    clock: SharedClock,
    health: Arc<ActorHealth>,
}

pub struct AppleReceiver {
    core: Arc<Core>,
    catch_up: bool,
}

pub type AppleHandle = Handle<AppleReceiver>;

impl Actor for AppleReceiver {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.catch_up {
            // Runs beside the webhook; start-up does not wait for it.
            ctx.spawn(catch_up(self.core.clone()).into_actor(self));
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.core.health.mark_stopped();
    }
}

impl Handler<AppleNotification> for AppleReceiver {
    type Result = ResponseFuture<NotificationOutcome>;

    fn handle(&mut self, msg: AppleNotification, _: &mut Self::Context) -> Self::Result {
        let core = self.core.clone();
        Box::pin(async move { core.process_body(&msg.body).await })
    }
}

/// Starts the receiver (inside an actix System). Bad roots or a bad key are start-up errors.
pub fn start(
    settings: AppleSettings,
    writer: WriterHandle,
    registry: Arc<Registry>,
    clock: SharedClock,
    limits: HandleLimits,
) -> Result<AppleHandle, String> {
    let verifier = Verifier::new(&settings.roots, settings.environment, &settings.bundle_id, settings.app_apple_id)?;
    let key = ApiKey::from_p8(&settings.p8_key, &settings.key_id, &settings.issuer_id, &settings.bundle_id)?;
    let api = ApiClient::new(HttpClient::new(), &settings.api_base_url, key);
    let health = ActorHealth::new("apple_receiver");
    registry.add_actor(health.clone());
    let core = Arc::new(Core { verifier: Arc::new(verifier), api, writer, registry, clock, health: health.clone() });
    let addr = AppleReceiver { core, catch_up: settings.catch_up }.start();
    // A notification waits for the writer, whose own handle times out first.
    let limits = HandleLimits { timeout: limits.timeout.saturating_mul(2).max(Duration::from_secs(20)), ..limits };
    Ok(Handle::new(addr, health, limits))
}

impl Core {
    fn count_notification(&self, source: Source, kind: &str, outcome: &NotificationOutcome) {
        self.registry.count(
            NOTIFICATIONS,
            NOTIFICATIONS_HELP,
            format!("source=\"{}\",type=\"{kind}\",outcome=\"{}\"", source.label(), outcome.label()),
        );
        let now = self.clock.now_ms();
        match outcome {
            NotificationOutcome::Handled | NotificationOutcome::Duplicate => self.health.record_success(now),
            NotificationOutcome::Rejected(why) | NotificationOutcome::Unavailable(why) => {
                self.health.record_failure(now, why)
            }
        }
    }

    /// A webhook body: `{"signedPayload": "<JWS>"}`, other keys ignored.
    async fn process_body(&self, body: &[u8]) -> NotificationOutcome {
        let payload = match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => match m.get("signedPayload") {
                Some(Value::String(s)) => s.clone(),
                _ => return self.refuse_body("the body has no signedPayload string"),
            },
            Ok(_) => return self.refuse_body("the body is not a JSON object"),
            Err(_) => return self.refuse_body("the body is not JSON"),
        };
        self.process(&payload, Source::Webhook).await
    }

    fn refuse_body(&self, why: &str) -> NotificationOutcome {
        warn!("Apple notification refused: {why}");
        let outcome = NotificationOutcome::Rejected(why.to_string());
        self.count_notification(Source::Webhook, "UNPARSED", &outcome);
        outcome
    }

    /// Verifies, decodes and applies one signed notification.
    async fn process(&self, signed_payload: &str, source: Source) -> NotificationOutcome {
        let now = self.clock.now_ms();
        // Nine ECDSA checks (three JWS with their chains): off the actor's thread.
        let (verifier, payload) = (self.verifier.clone(), signed_payload.to_string());
        let decoded = tokio::task::spawn_blocking(move || verify_and_decode(&verifier, &payload, now)).await;
        let decoded = match decoded {
            Ok(d) => d,
            Err(e) => {
                let outcome = NotificationOutcome::Unavailable(format!("verification did not complete: {e}"));
                error!("Apple notification could not be verified now: {e}");
                self.count_notification(source, "UNVERIFIED", &outcome);
                return outcome;
            }
        };
        let n = match decoded {
            Ok(n) => n,
            Err(e) => {
                self.registry.count(
                    VERIFY_FAILURES,
                    VERIFY_FAILURES_HELP,
                    format!("part=\"{}\",reason=\"{}\"", e.part.label(), e.error.status.name()),
                );
                let kind = e.partial.as_ref().map_or("UNVERIFIED", |n| n.type_label());
                let original = e.partial.as_ref().and_then(|n| n.original_transaction_id().map(str::to_string));
                let outcome = NotificationOutcome::Rejected(e.to_string());
                self.reject(&outcome, original.as_deref(), kind, source).await;
                self.count_notification(source, kind, &outcome);
                return outcome;
            }
        };
        if let Some(AppleEnum::Unknown(s)) = &n.subtype {
            info!("Apple notification {} has subtype {s:?}, unknown here: handled as if it had none", n.type_label());
        }
        let kind = n.type_label();
        let original = n.original_transaction_id().map(str::to_string);
        let outcome = match self.writer.send(Write(HandleAppleNotification(n))).await {
            Ok(Handled::Applied) => NotificationOutcome::Handled,
            Ok(Handled::Duplicate) => NotificationOutcome::Duplicate,
            Err(WriteError::Rejected(why)) => NotificationOutcome::Rejected(why),
            Err(e) => NotificationOutcome::Unavailable(e.to_string()),
        };
        match &outcome {
            NotificationOutcome::Rejected(_) => self.reject(&outcome, original.as_deref(), kind, source).await,
            NotificationOutcome::Unavailable(why) => {
                error!("Apple notification {kind} could not be processed now (nothing changed): {why}")
            }
            NotificationOutcome::Handled => info!(
                "Apple notification {kind} handled (original transaction {})",
                original.as_deref().map_or_else(|| "-".to_string(), obfuscate)
            ),
            NotificationOutcome::Duplicate => info!("Apple notification {kind} was already handled"),
        }
        self.count_notification(source, kind, &outcome);
        outcome
    }

    /// Logs a notification that can never apply and flags its subscription with a user error,
    /// in its own transaction (the notification's own changes were rolled back).
    async fn reject(&self, outcome: &NotificationOutcome, original: Option<&str>, kind: &str, source: Source) {
        let why = match outcome {
            NotificationOutcome::Rejected(why) => why.as_str(),
            _ => return,
        };
        let subscription = original.map_or_else(|| "unknown".to_string(), obfuscate);
        error!("Apple notification {kind} from {} failed (original transaction {subscription}): {why}", source.label());
        let Some(original) = original else { return };
        let cmd = AddUserError { provider: PaymentProvider::Apple, payment_id: original.to_string() };
        if let Err(e) = self.writer.send(Write(cmd)).await {
            error!("Failed to record a user error for Apple subscription {subscription}: {e}");
        }
    }
}

/// Catches up on notifications Apple failed to deliver since the stored checkpoint: one
/// transaction per notification; a notification that can never apply keeps its user error and
/// does not hold the checkpoint back; an API or storage failure leaves the checkpoint as it was.
async fn catch_up(core: Arc<Core>) {
    let count = |outcome: &str| core.registry.count(CATCHUP_RUNS, CATCHUP_RUNS_HELP, format!("outcome=\"{outcome}\""));
    let checkpoint = match core.writer.send(Write(ReadAppleCheckpoint)).await {
        Ok(c) => c,
        Err(e) => {
            error!("Apple notification catch-up could not read its checkpoint: {e}");
            return count("failed");
        }
    };
    let sandbox = core.verifier.environment() == Environment::Sandbox;
    let Some(window) = catchup_window(core.clock.now_ms(), checkpoint, sandbox) else {
        info!("Apple notification catch-up skipped: the last one was less than 30 minutes ago");
        return count("skipped");
    };
    if window.checkpoint_too_old {
        warn!(
            "Apple notification catch-up: the checkpoint {} is older than Apple's history; notifications \
             before {} cannot be recovered",
            format_date(checkpoint),
            format_date(window.start_ms)
        );
    }
    let (mut token, mut pages, mut handled, mut failed) = (None::<String>, 0usize, 0u64, 0u64);
    loop {
        pages += 1;
        if pages > MAX_HISTORY_PAGES {
            error!("Apple notification catch-up stopped after {MAX_HISTORY_PAGES} pages; checkpoint unchanged");
            return count("api_failed");
        }
        let page = match core.api.history_page(&window, token.as_deref(), core.clock.now_ms()).await {
            Ok(p) => p,
            Err(e) => {
                error!("Apple notification catch-up failed, checkpoint unchanged: {e}");
                return count("api_failed");
            }
        };
        for payload in page.payloads {
            let Some(payload) = payload else {
                error!("Apple notification history holds an entry without signedPayload; skipped");
                failed += 1;
                continue;
            };
            match core.process(&payload, Source::Catchup).await {
                NotificationOutcome::Handled | NotificationOutcome::Duplicate => handled += 1,
                NotificationOutcome::Rejected(_) => failed += 1,
                NotificationOutcome::Unavailable(why) => {
                    error!("Apple notification catch-up interrupted, checkpoint unchanged: {why}");
                    return count("interrupted");
                }
            }
        }
        if !page.has_more {
            break;
        }
        match page.pagination_token {
            Some(t) if token.as_deref() != Some(t.as_str()) => token = Some(t),
            _ => {
                error!(
                    "Apple notification history said there is more but gave no new paginationToken; checkpoint unchanged"
                );
                return count("api_failed");
            }
        }
    }
    match core.writer.send(Write(SetAppleCheckpoint(window.end_ms))).await {
        Ok(()) => {
            info!(
                "Apple notification catch-up from {} to {}: {handled} handled, {failed} failed, {pages} page(s)",
                format_date(window.start_ms),
                format_date(window.end_ms)
            );
            count("completed");
        }
        Err(e) => {
            error!("Apple notification catch-up could not store its checkpoint: {e}");
            count("failed");
        }
    }
}

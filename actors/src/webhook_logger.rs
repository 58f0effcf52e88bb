//! WebhookLogger: one queue and one sender per Session webhook. Warnings and errors (from the
//! tracing layer) and explicit texts (start-up banner, pruning summary, backups, reports) are
//! enqueued without ever blocking; each sender posts them one at a time, in order. A slow or
//! dead webhook only fills its own queue (the oldest messages make way), and the sender never
//! logs through tracing, so it cannot feed itself.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::{Actor, ActorFutureExt, AsyncContext, Context, WrapFuture};
use tokio::sync::Notify;

use crate::domain::pyfmt::py_json_string;
use crate::domain::time::format_readable;
use crate::health::{ActorHealth, Registry};
use crate::outbound::HttpClient;

/// Messages a queue holds before the oldest are dropped.
pub const QUEUE_CAPACITY: usize = 128;
/// Messages taken per sending round.
const BATCH: usize = 8;
/// Longest text sent (characters).
pub const MAX_TEXT_CHARS: usize = 2000;
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

fn cut(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// The JSON body upstream sends, byte for byte: Python's default separators and ASCII escapes.
pub fn webhook_body(message: &str, display_name: &str) -> String {
    format!(
        "{{\"text\": {}, \"display_name\": {}}}",
        py_json_string(&format!("```\n{message}\n```")),
        py_json_string(display_name)
    )
}

/// One webhook's queue and counters.
pub struct WebhookQueue {
    pub name: String,
    pub url: String,
    queue: Mutex<VecDeque<String>>,
    wake: Notify,
    busy: AtomicBool,
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
}

impl WebhookQueue {
    fn new(name: String, url: String) -> Arc<Self> {
        Arc::new(Self {
            name,
            url,
            queue: Mutex::new(VecDeque::with_capacity(QUEUE_CAPACITY)),
            wake: Notify::new(),
            busy: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        })
    }

    /// Adds a message; when full, the oldest make way and a note says so.
    fn push(&self, stamp: &str, message: String) {
        let Ok(mut q) = self.queue.lock() else { return };
        if q.len() >= QUEUE_CAPACITY {
            while q.len() > QUEUE_CAPACITY - 2 {
                q.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            q.push_back(format!("{stamp} Message queue was full, overwriting old message"));
        }
        q.push_back(message);
        drop(q);
        self.wake.notify_one();
    }

    pub fn depth(&self) -> usize {
        self.queue.lock().map(|q| q.len()).unwrap_or(0)
    }

    fn take(&self) -> Vec<String> {
        let Ok(mut q) = self.queue.lock() else { return Vec::new() };
        let n = q.len().min(BATCH);
        q.drain(..n).collect()
    }

    fn idle(&self) -> bool {
        self.depth() == 0 && !self.busy.load(Ordering::SeqCst)
    }
}

/// Every configured webhook; what the tracing layer and the daemon enqueue into.
#[derive(Default)]
pub struct WebhookHub {
    queues: Vec<Arc<WebhookQueue>>,
}

impl WebhookHub {
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    pub fn queues(&self) -> &[Arc<WebhookQueue>] {
        &self.queues
    }

    /// A formatted log record (WARNING and above), stored as upstream does: cut, a leading
    /// space, cut again.
    pub fn log_record(&self, now_ms: i64, formatted: &str) {
        if self.queues.is_empty() {
            return;
        }
        let text = cut(&format!(" {}", cut(formatted, MAX_TEXT_CHARS)), MAX_TEXT_CHARS);
        let stamp = format_readable(now_ms);
        for q in &self.queues {
            q.push(&stamp, text.clone());
        }
    }

    /// An explicit text (banner, pruning summary, backups, reports), stamped with the time.
    pub fn text(&self, now_ms: i64, text: &str) {
        if self.queues.is_empty() {
            return;
        }
        let stamp = format_readable(now_ms);
        let line = cut(&format!("{stamp} {text}"), MAX_TEXT_CHARS);
        for q in &self.queues {
            q.push(&stamp, line.clone());
        }
    }

    /// Waits until every queue is empty and nothing is in flight, at most `limit`.
    pub async fn flush(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.queues.iter().all(|q| q.idle()) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The sender of one queue.
pub struct WebhookLogger {
    queue: Arc<WebhookQueue>,
    client: HttpClient,
    health: Arc<ActorHealth>,
}

impl WebhookLogger {
    /// Sends the next batch, then looks again.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let q = self.queue.clone();
        let client = self.client.clone();
        let health = self.health.clone();
        let work = async move {
            loop {
                let batch = q.take();
                if batch.is_empty() {
                    q.busy.store(false, Ordering::SeqCst);
                    // Re-check after clearing `busy`, so a message pushed meanwhile is not missed.
                    if q.depth() == 0 {
                        q.wake.notified().await;
                    }
                    continue;
                }
                q.busy.store(true, Ordering::SeqCst);
                for message in batch {
                    let body = webhook_body(&message, &q.name);
                    let now = crate::clock::Clock::now_ms(&crate::clock::SystemClock);
                    let sent = client
                        .request(
                            hyper::Method::POST,
                            &q.url,
                            &[("content-type", "application/json")],
                            Some(bytes::Bytes::from(body)),
                            SEND_TIMEOUT,
                        )
                        .await;
                    match sent {
                        Ok(r) if r.is_success() => {
                            q.sent.fetch_add(1, Ordering::Relaxed);
                            health.record_success(now);
                        }
                        other => {
                            let why = match other {
                                Ok(r) => format!("HTTP {}", r.status),
                                Err(e) => e.to_string(),
                            };
                            q.failed.fetch_add(1, Ordering::Relaxed);
                            health.record_failure(now, &why);
                            // Not through tracing: that would enqueue another webhook message.
                            eprintln!("Session webhook send failed: {why}");
                        }
                    }
                }
            }
        };
        ctx.spawn(work.into_actor(self).map(|(), _, _| ()));
    }
}

impl Actor for WebhookLogger {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.pump(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.health.mark_stopped();
    }
}

/// Creates the queues and starts one sender per webhook (inside an actix System).
pub fn start(webhooks: &[(String, String)], registry: &Arc<Registry>) -> Arc<WebhookHub> {
    let hub = Arc::new(WebhookHub {
        queues: webhooks.iter().map(|(n, u)| WebhookQueue::new(n.clone(), u.clone())).collect(),
    });
    let client = HttpClient::new();
    for (i, q) in hub.queues.iter().enumerate() {
        let health = ActorHealth::new(if i == 0 { "webhook_logger" } else { "webhook_logger_extra" });
        registry.add_actor(health.clone());
        let addr = WebhookLogger { queue: q.clone(), client: client.clone(), health: health.clone() }.start();
        health.set_liveness(move || addr.connected());
    }
    if !hub.queues.is_empty() {
        let h = hub.clone();
        registry.add_gauges("pro_webhook_queue_depth", "messages waiting per webhook", move || {
            h.queues.iter().map(|q| (format!("webhook=\"{}\"", q.name), q.depth() as f64)).collect()
        });
        for (metric, help, pick) in [
            ("pro_webhook_sent_total", "messages delivered per webhook", 0),
            ("pro_webhook_failed_total", "messages that could not be delivered per webhook", 1),
            ("pro_webhook_dropped_total", "messages dropped because the queue was full", 2),
        ] {
            let h = hub.clone();
            registry.add_gauges(metric, help, move || {
                h.queues
                    .iter()
                    .map(|q| {
                        let v = match pick {
                            0 => &q.sent,
                            1 => &q.failed,
                            _ => &q.dropped,
                        };
                        (format!("webhook=\"{}\"", q.name), v.load(Ordering::Relaxed) as f64)
                    })
                    .collect()
            });
        }
    }
    hub
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_matches_upstream() {
        assert_eq!(
            webhook_body(" 26-12-04 19:13:30.213 WARNING PRO test warning from main", "Pro Dev Bot"),
            "{\"text\": \"```\\n 26-12-04 19:13:30.213 WARNING PRO test warning from main\\n```\", \"display_name\": \"Pro Dev Bot\"}"
        );
        assert_eq!(
            webhook_body("a\u{2026}\"b", "x"),
            "{\"text\": \"```\\na\\u2026\\\"b\\n```\", \"display_name\": \"x\"}"
        );
        // Controls, backslashes and characters beyond the BMP, as Python's json.dumps writes them.
        assert_eq!(
            webhook_body("\t\u{1}\\\u{7f}\u{1F600}", "\r\u{8}\u{c}"),
            "{\"text\": \"```\\n\\t\\u0001\\\\\\u007f\\ud83d\\ude00\\n```\", \"display_name\": \"\\r\\b\\f\"}"
        );
    }

    #[test]
    fn full_queue_drops_the_oldest_with_a_note() {
        let q = WebhookQueue::new("n".into(), "http://127.0.0.1:9/".into());
        for i in 0..QUEUE_CAPACITY + 5 {
            q.push("stamp", format!("m{i}"));
        }
        let all: Vec<String> = q.queue.lock().unwrap().iter().cloned().collect();
        assert!(all.len() <= QUEUE_CAPACITY);
        assert_eq!(all.last().unwrap(), &format!("m{}", QUEUE_CAPACITY + 4));
        assert!(all.iter().any(|m| m == "stamp Message queue was full, overwriting old message"));
        assert!(q.dropped.load(Ordering::Relaxed) > 0);
    }

    #[test]
    fn texts_are_cut_and_stamped() {
        let hub = WebhookHub { queues: vec![WebhookQueue::new("n".into(), "u".into())] };
        hub.log_record(0, &"x".repeat(3000));
        hub.text(0, "hello");
        let q: Vec<String> = hub.queues[0].queue.lock().unwrap().iter().cloned().collect();
        assert_eq!(q[0].chars().count(), MAX_TEXT_CHARS);
        assert!(q[0].starts_with(' '));
        assert_eq!(q[1], "70-01-01 00:00:00.000 hello");
    }
}

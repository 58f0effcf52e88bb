//! Health counters that actors and routes update with atomics, and that `/metrics` and
//! `/health` read without messaging anyone (a wedged actor cannot wedge the report).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Value, json};

type Liveness = Box<dyn Fn() -> bool + Send + Sync>;

/// Counters of one actor.
pub struct ActorHealth {
    pub name: &'static str,
    depth: AtomicI64,
    processed: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
    restarts: AtomicU64,
    last_error_ms: AtomicI64,
    last_activity_ms: AtomicI64,
    last_error: Mutex<String>,
    stopped: AtomicBool,
    liveness: RwLock<Option<Liveness>>,
}

impl ActorHealth {
    pub fn new(name: &'static str) -> Arc<Self> {
        Arc::new(Self {
            name,
            depth: AtomicI64::new(0),
            processed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            last_error_ms: AtomicI64::new(0),
            last_activity_ms: AtomicI64::new(0),
            last_error: Mutex::new(String::new()),
            stopped: AtomicBool::new(false),
            liveness: RwLock::new(None),
        })
    }

    /// How the registry asks whether the actor still accepts messages.
    pub fn set_liveness(&self, f: impl Fn() -> bool + Send + Sync + 'static) {
        if let Ok(mut l) = self.liveness.write() {
            *l = Some(Box::new(f));
        }
    }

    pub fn is_up(&self) -> bool {
        if self.stopped.load(Ordering::Relaxed) {
            return false;
        }
        match self.liveness.read() {
            Ok(l) => l.as_ref().is_none_or(|f| f()),
            Err(_) => false,
        }
    }

    pub fn mark_stopped(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    pub fn depth(&self) -> i64 {
        self.depth.load(Ordering::Relaxed)
    }
    pub(crate) fn enter(&self) -> i64 {
        self.depth.fetch_add(1, Ordering::Relaxed) + 1
    }
    pub(crate) fn leave(&self) {
        self.depth.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn processed(&self) -> u64 {
        self.processed.load(Ordering::Relaxed)
    }
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn record_success(&self, now_ms: i64) {
        self.processed.fetch_add(1, Ordering::Relaxed);
        self.last_activity_ms.store(now_ms, Ordering::Relaxed);
    }

    pub fn record_failure(&self, now_ms: i64, error: &str) {
        self.processed.fetch_add(1, Ordering::Relaxed);
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.last_activity_ms.store(now_ms, Ordering::Relaxed);
        self.last_error_ms.store(now_ms, Ordering::Relaxed);
        if let Ok(mut e) = self.last_error.lock() {
            e.clear();
            e.push_str(error);
        }
    }

    pub fn record_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Value {
        json!({
            "up": self.is_up(),
            "mailbox_depth": self.depth(),
            "processed": self.processed(),
            "failed": self.failed(),
            "refused": self.refused.load(Ordering::Relaxed),
            "restarts": self.restarts.load(Ordering::Relaxed),
            "last_activity_unix_ts_ms": self.last_activity_ms.load(Ordering::Relaxed),
            "last_error_unix_ts_ms": self.last_error_ms.load(Ordering::Relaxed),
            "last_error": self.last_error.lock().map(|e| e.clone()).unwrap_or_default(),
        })
    }
}

/// Upper bounds (seconds) of the request latency histogram.
pub const LATENCY_BUCKETS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Requests and latency of one route.
#[derive(Default)]
pub struct RouteStats {
    by_outcome: Mutex<BTreeMap<String, u64>>,
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl RouteStats {
    /// Records one request; `outcome` is a short label such as `status_0` or `http_404`.
    pub fn record(&self, outcome: &str, latency: Duration) {
        if let Ok(mut m) = self.by_outcome.lock() {
            *m.entry(outcome.to_string()).or_default() += 1;
        }
        let secs = latency.as_secs_f64();
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn total(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn outcome_count(&self, outcome: &str) -> u64 {
        self.by_outcome.lock().map(|m| m.get(outcome).copied().unwrap_or(0)).unwrap_or(0)
    }
}

/// Name, type, help text and value of one per-actor metric family.
type ActorFamily = (&'static str, &'static str, &'static str, fn(&ActorHealth) -> f64);

/// Help text and the values by label set of one counter family.
type CounterFamily = (&'static str, BTreeMap<String, u64>);

type GaugeFn = Box<dyn Fn() -> Vec<(String, f64)> + Send + Sync>;

/// Everything `/metrics` and `/health` show.
#[derive(Default)]
pub struct Registry {
    actors: RwLock<Vec<Arc<ActorHealth>>>,
    routes: RwLock<BTreeMap<String, Arc<RouteStats>>>,
    extra: RwLock<Vec<(String, String, GaugeFn)>>,
    /// Labelled counters: name → (help, label set → count).
    counters: Mutex<BTreeMap<&'static str, CounterFamily>>,
}

impl Registry {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn add_actor(&self, h: Arc<ActorHealth>) {
        if let Ok(mut a) = self.actors.write() {
            a.push(h);
        }
    }

    pub fn actors(&self) -> Vec<Arc<ActorHealth>> {
        self.actors.read().map(|a| a.clone()).unwrap_or_default()
    }

    /// The stats of a route, created on first use.
    pub fn route(&self, name: &str) -> Arc<RouteStats> {
        if let Some(r) = self.routes.read().ok().and_then(|m| m.get(name).cloned()) {
            return r;
        }
        let mut m = match self.routes.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry(name.to_string()).or_default().clone()
    }

    /// Adds a family of gauges computed at render time: `name`, help text, and a function
    /// returning (label set, value) pairs, e.g. `("queue=\"a\"", 3.0)`.
    pub fn add_gauges(&self, name: &str, help: &str, f: impl Fn() -> Vec<(String, f64)> + Send + Sync + 'static) {
        if let Ok(mut e) = self.extra.write() {
            e.push((name.to_string(), help.to_string(), Box::new(f)));
        }
    }

    /// Adds one to the counter `name{labels}` (labels already formatted, e.g. `outcome="ok"`).
    pub fn count(&self, name: &'static str, help: &'static str, labels: String) {
        if let Ok(mut c) = self.counters.lock() {
            *c.entry(name).or_insert((help, BTreeMap::new())).1.entry(labels).or_default() += 1;
        }
    }

    /// The current value of a labelled counter (0 when never counted).
    pub fn counter(&self, name: &str, labels: &str) -> u64 {
        self.counters.lock().ok().and_then(|c| c.get(name).and_then(|(_, m)| m.get(labels).copied())).unwrap_or(0)
    }

    /// True when every actor is up.
    pub fn all_up(&self) -> bool {
        self.actors().iter().all(|a| a.is_up())
    }

    pub fn health_json(&self) -> Value {
        let actors: serde_json::Map<String, Value> =
            self.actors().iter().map(|a| (a.name.to_string(), a.snapshot())).collect();
        json!({ "status": if self.all_up() { "ok" } else { "degraded" }, "actors": actors })
    }

    /// Prometheus text exposition format.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let actors = self.actors();
        let actor_families: [ActorFamily; 8] = [
            ("pro_actor_up", "gauge", "1 if the actor accepts messages", |a| f64::from(u8::from(a.is_up()))),
            ("pro_actor_mailbox_depth", "gauge", "messages sent to the actor and not yet answered", |a| {
                a.depth() as f64
            }),
            ("pro_actor_processed_total", "counter", "messages the actor handled", |a| a.processed() as f64),
            ("pro_actor_failed_total", "counter", "messages the actor handled with an error", |a| a.failed() as f64),
            ("pro_actor_refused_total", "counter", "messages refused because the mailbox was full", |a| {
                a.refused.load(Ordering::Relaxed) as f64
            }),
            ("pro_actor_restarts_total", "counter", "times the actor was restarted", |a| {
                a.restarts.load(Ordering::Relaxed) as f64
            }),
            ("pro_actor_last_error_timestamp_seconds", "gauge", "Unix time of the last error, 0 if none", |a| {
                a.last_error_ms.load(Ordering::Relaxed) as f64 / 1000.0
            }),
            ("pro_actor_last_activity_timestamp_seconds", "gauge", "Unix time of the last handled message", |a| {
                a.last_activity_ms.load(Ordering::Relaxed) as f64 / 1000.0
            }),
        ];
        for (name, kind, help, f) in actor_families {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for a in &actors {
                let _ = writeln!(out, "{name}{{actor=\"{}\"}} {}", a.name, f(a));
            }
        }

        let routes: Vec<(String, Arc<RouteStats>)> =
            self.routes.read().map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
        out.push_str(
            "# HELP pro_http_requests_total requests by route and outcome\n# TYPE pro_http_requests_total counter\n",
        );
        for (route, s) in &routes {
            if let Ok(m) = s.by_outcome.lock() {
                for (outcome, n) in m.iter() {
                    let _ = writeln!(out, "pro_http_requests_total{{route=\"{route}\",outcome=\"{outcome}\"}} {n}");
                }
            }
        }
        out.push_str(
            "# HELP pro_http_request_duration_seconds request latency by route\n# TYPE pro_http_request_duration_seconds histogram\n",
        );
        for (route, s) in &routes {
            for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
                let n = s.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(out, "pro_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {n}");
            }
            let count = s.count.load(Ordering::Relaxed);
            let sum = s.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "pro_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {count}");
            let _ = writeln!(out, "pro_http_request_duration_seconds_sum{{route=\"{route}\"}} {sum}");
            let _ = writeln!(out, "pro_http_request_duration_seconds_count{{route=\"{route}\"}} {count}");
        }

        if let Ok(counters) = self.counters.lock() {
            for (name, (help, values)) in counters.iter() {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for (labels, v) in values {
                    let _ = writeln!(out, "{name}{{{labels}}} {v}");
                }
            }
        }
        if let Ok(extra) = self.extra.read() {
            for (name, help, f) in extra.iter() {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
                for (labels, v) in f() {
                    if labels.is_empty() {
                        let _ = writeln!(out, "{name} {v}");
                    } else {
                        let _ = writeln!(out, "{name}{{{labels}}} {v}");
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_actor_and_route_families() {
        let r = Registry::new();
        let a = ActorHealth::new("db_writer");
        r.add_actor(a.clone());
        a.record_success(1000);
        a.record_failure(2000, "disk full");
        r.route("/add_pro_payment").record("status_0", Duration::from_micros(700));
        let text = r.render_prometheus();
        assert!(text.contains("pro_actor_up{actor=\"db_writer\"} 1"), "{text}");
        assert!(text.contains("pro_actor_processed_total{actor=\"db_writer\"} 2"));
        assert!(text.contains("pro_actor_failed_total{actor=\"db_writer\"} 1"));
        assert!(text.contains("pro_actor_last_error_timestamp_seconds{actor=\"db_writer\"} 2"));
        assert!(text.contains("pro_http_requests_total{route=\"/add_pro_payment\",outcome=\"status_0\"} 1"));
        assert!(text.contains("pro_http_request_duration_seconds_bucket{route=\"/add_pro_payment\",le=\"0.0005\"} 0"));
        assert!(text.contains("pro_http_request_duration_seconds_bucket{route=\"/add_pro_payment\",le=\"0.001\"} 1"));
        let h = r.health_json();
        assert_eq!(h["actors"]["db_writer"]["last_error"], "disk full");
        a.mark_stopped();
        assert_eq!(r.health_json()["status"], "degraded");
    }
}

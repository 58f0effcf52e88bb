//! Logging: upstream's line format `yy-mm-dd HH:MM:SS.mmm LEVEL LOGGER message` on stderr, an
//! optional size-rotated file (`log_path`), and warnings and errors forwarded to the Session
//! webhooks. Each record is formatted once and handed to every sink. Personal data is masked
//! where messages are built (`pro_engine::domain::keys::mask`), not here.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use pro_engine::domain::time::format_readable;
use pro_engine::webhook_logger::WebhookHub;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Upstream's logger for a tracing target.
pub fn logger_name(target: &str) -> &'static str {
    if target.contains("apple") {
        "APPLE"
    } else if target.contains("google") {
        "GOOGLE"
    } else if target.starts_with("pro_engine") {
        "BACKEND"
    } else if target.starts_with("session_pro_backend::http") || target.starts_with("actix") {
        "server"
    } else {
        "PRO"
    }
}

pub fn level_name(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ERROR",
        Level::WARN => "WARNING",
        Level::INFO => "INFO",
        Level::DEBUG | Level::TRACE => "DEBUG",
    }
}

/// A log file that rolls over by size: `<path>` → `<path>.1` → `<path>.2`, the oldest dropped.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    backups: usize,
}

/// Upstream's limits: 64 MiB per file, two old files kept.
pub const LOG_MAX_BYTES: u64 = 64 * 1024 * 1024;
pub const LOG_BACKUPS: usize = 2;

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64, backups: usize) -> std::io::Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(Self { path: path.to_path_buf(), file, size, max_bytes, backups })
    }

    fn backup_name(&self, n: usize) -> PathBuf {
        let mut s = self.path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }

    pub fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line.as_bytes())?;
        self.size += len;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        if self.backups == 0 {
            self.file = File::create(&self.path)?;
        } else {
            let _ = std::fs::remove_file(self.backup_name(self.backups));
            for n in (1..self.backups).rev() {
                let _ = std::fs::rename(self.backup_name(n), self.backup_name(n + 1));
            }
            std::fs::rename(&self.path, self.backup_name(1))?;
            self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

/// Where records go besides stderr; filled in once the configuration is known.
#[derive(Default)]
pub struct Sinks {
    file: Mutex<Option<RotatingFile>>,
    webhooks: RwLock<Option<Arc<WebhookHub>>>,
}

impl Sinks {
    pub fn set_file(&self, f: RotatingFile) {
        if let Ok(mut slot) = self.file.lock() {
            *slot = Some(f);
        }
    }

    pub fn set_webhooks(&self, hub: Arc<WebhookHub>) {
        if let Ok(mut slot) = self.webhooks.write() {
            *slot = Some(hub);
        }
    }

    pub fn webhooks(&self) -> Option<Arc<WebhookHub>> {
        self.webhooks.read().ok().and_then(|w| w.clone())
    }

    /// Sends an explicit text (banner, pruning summary, backups, reports) to the webhooks.
    pub fn notify(&self, text: &str) {
        if let Some(hub) = self.webhooks() {
            hub.text(now_ms(), text);
        }
    }
}

fn now_ms() -> i64 {
    pro_engine::clock::Clock::now_ms(&pro_engine::SystemClock)
}

/// Collects an event's message and other fields (`key=value`).
#[derive(Default)]
struct Message(String, String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.1, " {}={value}", field.name());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.1, " {}={value:?}", field.name());
        }
    }
}

/// Formats one record the way upstream's handlers do.
pub fn format_record(now: i64, level: &Level, target: &str, message: &str) -> String {
    format!("{} {} {} {message}", format_readable(now), level_name(level), logger_name(target))
}

struct SinkLayer {
    sinks: Arc<Sinks>,
}

impl<S: Subscriber> Layer<S> for SinkLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if *meta.level() > Level::INFO {
            return;
        }
        let mut m = Message::default();
        event.record(&mut m);
        let line = format_record(now_ms(), meta.level(), meta.target(), &format!("{}{}", m.0, m.1));
        let _ = writeln!(std::io::stderr().lock(), "{line}");
        if let Ok(mut f) = self.sinks.file.lock()
            && let Some(f) = f.as_mut()
        {
            let _ = f.write_line(&format!("{line}\n"));
        }
        if *meta.level() <= Level::WARN
            && let Some(hub) = self.sinks.webhooks()
        {
            hub.log_record(now_ms(), &line);
        }
    }
}

static SINKS: OnceLock<Arc<Sinks>> = OnceLock::new();

/// Installs the process-wide subscriber (once) and returns its sinks.
pub fn init() -> Arc<Sinks> {
    SINKS
        .get_or_init(|| {
            let sinks = Arc::new(Sinks::default());
            let _ = tracing_subscriber::registry().with(SinkLayer { sinks: sinks.clone() }).try_init();
            sinks
        })
        .clone()
}

/// The sinks of the installed subscriber, if any (tests run without one).
pub fn sinks() -> Option<Arc<Sinks>> {
    SINKS.get().cloned()
}

/// A subscriber writing to the given sinks, for tests that check what reaches a webhook.
pub fn layer_for(sinks: Arc<Sinks>) -> impl Subscriber + Send + Sync {
    tracing_subscriber::registry().with(SinkLayer { sinks })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logger_names() {
        assert_eq!(logger_name("pro_engine::store::ops"), "BACKEND");
        assert_eq!(logger_name("pro_engine::apple::receiver"), "APPLE");
        assert_eq!(logger_name("pro_engine::google_subscriber"), "GOOGLE");
        assert_eq!(logger_name("session_pro_backend::http::add_pro_payment"), "server");
        assert_eq!(logger_name("session_pro_backend::app"), "PRO");
        assert_eq!(level_name(&Level::WARN), "WARNING");
        assert_eq!(
            format_record(1796411509975, &Level::INFO, "session_pro_backend::app", "hi"),
            "26-12-04 19:11:49.975 INFO PRO hi"
        );
    }

    #[test]
    fn log_file_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/backend.log");
        let mut f = RotatingFile::open(&path, 100, 2).unwrap();
        for i in 0..10 {
            f.write_line(&format!("{i:02} {}\n", "x".repeat(36))).unwrap(); // 40 bytes each
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let b1 = path.with_file_name("backend.log.1");
        let b2 = path.with_file_name("backend.log.2");
        assert!(read(&path).starts_with("08 "), "{}", read(&path));
        assert!(read(&b1).starts_with("06 "));
        assert!(read(&b2).starts_with("04 "));
        assert!(!path.with_file_name("backend.log.3").exists());
        assert!(std::fs::metadata(&path).unwrap().len() <= 100);
    }
}

//! Logging: upstream's line format `yy-mm-dd HH:MM:SS.mmm LEVEL LOGGER message` on stderr,
//! with upstream's logger names derived from where the event comes from.

use std::fmt;

use pro_engine::domain::time::format_readable;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Upstream's logger for a tracing target.
pub fn logger_name(target: &str) -> &'static str {
    if target.starts_with("pro_engine") {
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

struct UpstreamFormat;

impl<S, N> FormatEvent<S, N> for UpstreamFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let now = pro_engine::clock::Clock::now_ms(&pro_engine::SystemClock);
        let meta = event.metadata();
        write!(writer, "{} {} {} ", format_readable(now), level_name(meta.level()), logger_name(meta.target()))?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Installs the stderr subscriber at INFO (once; later calls are ignored).
pub fn init() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(Level::INFO)
        .with_ansi(false)
        .event_format(UpstreamFormat)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logger_names() {
        assert_eq!(logger_name("pro_engine::store::ops"), "BACKEND");
        assert_eq!(logger_name("session_pro_backend::http::add_pro_payment"), "server");
        assert_eq!(logger_name("session_pro_backend::app"), "PRO");
        assert_eq!(level_name(&Level::WARN), "WARNING");
    }
}

//! ExpiryPruner: runs the daily job at every UTC midnight, and once at start for a day that
//! was missed while the server was down. A failure is logged and the schedule goes on.

use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Message, WrapFuture};
use tracing::{error, info};

use crate::clock::SharedClock;
use crate::db_writer::{RunExpiry, WriterHandle};
use crate::domain::time::{DAY_MS, format_date, round_up_to_day, start_of_day};
use crate::health::ActorHealth;
use crate::store::ops::ExpireReport;

pub struct ExpiryPruner {
    writer: WriterHandle,
    clock: SharedClock,
    health: std::sync::Arc<ActorHealth>,
    /// The midnight the next run is for.
    next_job_ts: i64,
}

impl ExpiryPruner {
    pub fn new(writer: WriterHandle, clock: SharedClock, health: std::sync::Arc<ActorHealth>) -> Self {
        Self { writer, clock, health, next_job_ts: 0 }
    }

    fn schedule_next(&mut self, ctx: &mut Context<Self>) {
        let now = self.clock.now_ms();
        // Exactly one run per midnight, at or after it.
        self.next_job_ts = round_up_to_day(now + 1).max(self.next_job_ts);
        let wait = Duration::from_millis((self.next_job_ts - now).max(0) as u64);
        info!("Sleeping for {} to expire DB entries at UTC {}", format_wait(wait), format_date(self.next_job_ts));
        ctx.run_later(wait, |act, ctx| {
            if act.clock.now_ms() < act.next_job_ts {
                // Woke early (clock adjusted): wait again for the same midnight.
                act.schedule_next(ctx);
                return;
            }
            let job_ts = act.next_job_ts;
            ctx.notify(RunPrune { job_ts });
            act.next_job_ts = job_ts + DAY_MS;
            act.schedule_next(ctx);
        });
    }
}

impl Actor for ExpiryPruner {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // A midnight that passed while the server was down is caught up now; the job itself
        // is a no-op if it already ran for that day.
        ctx.notify(RunPrune { job_ts: start_of_day(self.clock.now_ms()) });
        self.schedule_next(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.health.mark_stopped();
    }
}

/// Runs the job for the midnight `job_ts` now.
#[derive(Debug, Clone, Copy)]
pub struct RunPrune {
    pub job_ts: i64,
}

impl Message for RunPrune {
    type Result = ();
}

impl Handler<RunPrune> for ExpiryPruner {
    type Result = ();

    fn handle(&mut self, msg: RunPrune, ctx: &mut Self::Context) {
        let writer = self.writer.clone();
        let health = self.health.clone();
        let clock = self.clock.clone();
        ctx.spawn(
            async move {
                match writer.send(crate::db_writer::Write(RunExpiry { job_ts: msg.job_ts })).await {
                    Ok(Ok(report)) => {
                        health.record_success(clock.now_ms());
                        if !report.already_done {
                            info!("{}", pruning_summary(msg.job_ts, &report));
                        }
                    }
                    Ok(Err(e)) => {
                        health.record_failure(clock.now_ms(), &e.to_string());
                        error!("Daily pruning for {} failed: {e}", format_date(msg.job_ts - DAY_MS));
                    }
                    Err(e) => {
                        health.record_failure(clock.now_ms(), &e.to_string());
                        error!("Daily pruning for {} failed: {e}", format_date(msg.job_ts - DAY_MS));
                    }
                }
            }
            .into_actor(self),
        );
    }
}

/// Upstream's summary line of a daily run.
pub fn pruning_summary(job_ts: i64, r: &ExpireReport) -> String {
    let date = format_date(job_ts);
    format!(
        "Daily pruning for {} completed on {}. Expired payments/revocations/users/apple notifs={}/{}/{}/{}",
        format_date(job_ts - DAY_MS),
        &date[5..],
        r.payments,
        r.revocations,
        r.users,
        r.apple_notifications
    )
}

/// `4h 48m 21.577s`: zero units omitted, at most three decimals on seconds (trailing zeros
/// stripped), a part below one second dropped when hours or minutes are shown, `0s` for nothing.
pub fn format_wait(d: Duration) -> String {
    let ms = d.as_millis();
    let (h, m, s_ms) = (ms / 3_600_000, ms / 60_000 % 60, ms % 60_000);
    let mut parts = Vec::new();
    if h > 0 {
        parts.push(format!("{h}h"));
    }
    if m > 0 {
        parts.push(format!("{m}m"));
    }
    if s_ms >= 1000 || parts.is_empty() {
        let text = format!("{}.{:03}", s_ms / 1000, s_ms % 1000);
        parts.push(format!("{}s", text.trim_end_matches('0').trim_end_matches('.')));
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line() {
        let r = ExpireReport { payments: 1, ..Default::default() };
        assert_eq!(
            pruning_summary(1796428800000, &r),
            "Daily pruning for 2026-12-04 completed on 12-05. Expired payments/revocations/users/apple notifs=1/0/0/0"
        );
    }

    #[test]
    fn wait_format() {
        assert_eq!(format_wait(Duration::from_millis(0)), "0s");
        assert_eq!(format_wait(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_wait(Duration::from_millis(29_790)), "29.79s");
        assert_eq!(format_wait(Duration::from_millis(4 * 3_600_000 + 46 * 60_000 + 29_790)), "4h 46m 29.79s");
        assert_eq!(format_wait(Duration::from_millis(60_000)), "1m");
        assert_eq!(format_wait(Duration::from_millis(3_600_500)), "1h");
    }
}

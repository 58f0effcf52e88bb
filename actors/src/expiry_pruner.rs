//! ExpiryPruner: runs the daily maintenance at every UTC midnight — pruning, then (for a
//! SQLite file) backup rotation and a fresh backup, then the reports — and the pruning once at
//! start for a midnight missed while the server was down. A failure is logged and the
//! schedule goes on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use actix::{Actor, AsyncContext, Context, Handler, Message, WrapFuture};
use tracing::{error, info};

use crate::clock::SharedClock;
use crate::db_writer::{RunExpiry, Write, WriterHandle};
use crate::domain::backups::{plan_rotation, stamp};
use crate::domain::time::{DAY_MS, format_date, round_up_to_day, start_of_day};
use crate::health::{ActorHealth, Registry};
use crate::store::ops::ExpireReport;
use crate::store::sqlite::{self, SqliteTarget};
use crate::webhook_logger::WebhookHub;

/// Produces the report texts to send after the daily job for midnight `job_ts`.
pub type ReportFn = Arc<dyn Fn(i64) -> Vec<String> + Send + Sync>;

/// What the daily job does besides pruning.
#[derive(Clone, Default)]
pub struct Maintenance {
    /// The database file to back up (None: in-memory or not SQLite; no backups).
    pub backup_db: Option<SqliteTarget>,
    /// How the database is named in messages.
    pub db_display: String,
    /// Where explicit texts (summary, backups, reports) go.
    pub notifier: Option<Arc<WebhookHub>>,
    pub reports: Option<ReportFn>,
}

/// When maintenance last ran and what it did, for `/metrics`.
#[derive(Default)]
pub struct MaintenanceStats {
    pub last_prune_ms: AtomicI64,
    pub pruned_payments: AtomicI64,
    pub pruned_revocations: AtomicI64,
    pub pruned_users: AtomicI64,
    pub last_backup_ms: AtomicI64,
    pub backup_failures: AtomicI64,
}

impl MaintenanceStats {
    /// Registers the gauges of these stats.
    pub fn register(self: &Arc<Self>, registry: &Registry) {
        let s = self.clone();
        registry.add_gauges("pro_maintenance", "daily maintenance: last run times (s) and counts", move || {
            let get = |a: &AtomicI64| a.load(Ordering::Relaxed) as f64;
            vec![
                ("what=\"last_prune_timestamp_seconds\"".into(), get(&s.last_prune_ms) / 1000.0),
                ("what=\"pruned_payments\"".into(), get(&s.pruned_payments)),
                ("what=\"pruned_revocations\"".into(), get(&s.pruned_revocations)),
                ("what=\"pruned_users\"".into(), get(&s.pruned_users)),
                ("what=\"last_backup_timestamp_seconds\"".into(), get(&s.last_backup_ms) / 1000.0),
                ("what=\"backup_failures\"".into(), get(&s.backup_failures)),
            ]
        });
    }
}

pub struct ExpiryPruner {
    writer: WriterHandle,
    clock: SharedClock,
    health: Arc<ActorHealth>,
    maintenance: Maintenance,
    stats: Arc<MaintenanceStats>,
    /// The midnight the next run is for.
    next_job_ts: i64,
}

impl ExpiryPruner {
    pub fn new(
        writer: WriterHandle,
        clock: SharedClock,
        health: Arc<ActorHealth>,
        maintenance: Maintenance,
        stats: Arc<MaintenanceStats>,
    ) -> Self {
        Self { writer, clock, health, maintenance, stats, next_job_ts: 0 }
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
            ctx.notify(RunPrune { job_ts, full: true });
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
        ctx.notify(RunPrune { job_ts: start_of_day(self.clock.now_ms()), full: false });
        self.schedule_next(ctx);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.health.mark_stopped();
    }
}

/// Runs the job for the midnight `job_ts` now; `full` adds backups and reports.
#[derive(Debug, Clone, Copy)]
pub struct RunPrune {
    pub job_ts: i64,
    pub full: bool,
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
        let m = self.maintenance.clone();
        let stats = self.stats.clone();
        ctx.spawn(
            async move {
                let notify = |text: &str| {
                    if let Some(hub) = &m.notifier {
                        hub.text(clock.now_ms(), text);
                    }
                };
                match writer.send(Write(RunExpiry { job_ts: msg.job_ts })).await {
                    Ok(report) => {
                        health.record_success(clock.now_ms());
                        stats.last_prune_ms.store(clock.now_ms(), Ordering::Relaxed);
                        if report.already_done {
                            // Servers sharing a database all wake at midnight; one does the work.
                            info!(
                                "Daily pruning for {} already done (by this or another server sharing the database)",
                                format_date(msg.job_ts - DAY_MS)
                            );
                        } else {
                            stats.pruned_payments.store(report.payments, Ordering::Relaxed);
                            stats.pruned_revocations.store(report.revocations, Ordering::Relaxed);
                            stats.pruned_users.store(report.users, Ordering::Relaxed);
                            let summary = pruning_summary(msg.job_ts, &report);
                            info!("{summary}");
                            notify(&summary);
                        }
                    }
                    Err(e) => {
                        health.record_failure(clock.now_ms(), &e.to_string());
                        error!("Daily pruning for {} failed: {e}", format_date(msg.job_ts - DAY_MS));
                    }
                }
                if !msg.full {
                    return;
                }
                if let Some(target) = m.backup_db.clone() {
                    let job_ts = msg.job_ts;
                    let outcome = tokio::task::spawn_blocking(move || rotate_and_back_up(&target, job_ts)).await;
                    match outcome {
                        Ok(r) => {
                            if !r.deleted.is_empty() {
                                let lines: Vec<String> = r
                                    .deleted
                                    .iter()
                                    .enumerate()
                                    .map(|(i, p)| format!("  [{i:02}] {}", p.display()))
                                    .collect();
                                let text = format!("Rotating backups and deleting:\n{}", lines.join("\n"));
                                info!("{text}");
                                notify(&text);
                            }
                            match r.backup {
                                Ok(path) => {
                                    stats.last_backup_ms.store(clock.now_ms(), Ordering::Relaxed);
                                    info!("Backing up: {} \u{2192} {}", m.db_display, path.display());
                                    info!("Backup completed successfully!");
                                    notify(&format!(
                                        "Backed up DB successfully {} -> {}",
                                        m.db_display,
                                        path.display()
                                    ));
                                }
                                Err(e) => {
                                    stats.backup_failures.fetch_add(1, Ordering::Relaxed);
                                    error!("Backup failed: {e}");
                                }
                            }
                        }
                        Err(e) => {
                            stats.backup_failures.fetch_add(1, Ordering::Relaxed);
                            error!("Backup failed: {e}");
                        }
                    }
                }
                if let (Some(reports), Some(_)) = (m.reports.clone(), m.notifier.as_ref()) {
                    let job_ts = msg.job_ts;
                    match tokio::task::spawn_blocking(move || reports(job_ts)).await {
                        Ok(texts) => texts.iter().for_each(|t| notify(t)),
                        Err(e) => error!("Reports for {} failed: {e}", format_date(job_ts - DAY_MS)),
                    }
                }
            }
            .into_actor(self),
        );
    }
}

/// What rotation and backup did.
pub struct BackupOutcome {
    pub deleted: Vec<PathBuf>,
    pub backup: Result<PathBuf, String>,
}

/// Deletes old backups of `target` by the rotation rule, then writes a new one named after
/// `job_ts`: `<dir>/<YYYY-MM-DD_HHMMSS>_<db file name>.bak`.
pub fn rotate_and_back_up(target: &SqliteTarget, job_ts: i64) -> BackupOutcome {
    let db = Path::new(&target.path);
    let dir = db.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    let file = db.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let suffix = format!("_{file}.bak");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let candidates: Vec<String> = names.into_iter().filter(|n| n.ends_with(&suffix)).collect();
    let (_, delete) = plan_rotation(&candidates, job_ts);
    let mut deleted = Vec::new();
    for n in delete {
        let p = dir.join(&n);
        if std::fs::remove_file(&p).is_ok() {
            deleted.push(p);
        }
    }
    let dest = dir.join(format!("{}{suffix}", stamp(job_ts)));
    let backup = sqlite::backup_to(target, &dest).map(|()| dest).map_err(|e| e.to_string());
    BackupOutcome { deleted, backup }
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

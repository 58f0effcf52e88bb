//! Operator reports: counts of the `payments` table per day, ISO week or month, rendered as
//! upstream's fixed-width table or as CSV.
//!
//! The store aggregates the rows per period (one query, `store::report_sql`, with each
//! backend's own period-start expression); everything else here is pure: period labels, which
//! rows appear, and both layouts byte for byte.

use crate::domain::time::{DAY_MS, civil_from_days, days_from_civil};
use crate::store::{StoreResult, StoreTx};

/// How the payments are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReportKind {
    Daily,
    /// ISO weeks (Monday to Sunday), labelled with their Monday and ISO week number.
    Weekly,
    Monthly,
}

impl ReportKind {
    pub fn title(self) -> &'static str {
        match self {
            Self::Daily => "DAILY REPORT",
            Self::Weekly => "WEEKLY REPORT",
            Self::Monthly => "MONTHLY REPORT",
        }
    }

    /// The start (UTC midnight, ms) of the period that holds `ts`.
    pub fn period_start(self, ts: i64) -> i64 {
        let days = ts.div_euclid(DAY_MS);
        let start_day = match self {
            Self::Daily => days,
            // 1970-01-01 was a Thursday: day 0 is weekday 3 counting from Monday = 0.
            Self::Weekly => days - (days + 3).rem_euclid(7),
            Self::Monthly => {
                let (y, m, _) = civil_from_days(days);
                days_from_civil(y, m, 1)
            }
        };
        start_day * DAY_MS
    }

    /// The last millisecond of the period that starts at `start`.
    pub fn period_end(self, start: i64) -> i64 {
        let start_day = start.div_euclid(DAY_MS);
        let next_day = match self {
            Self::Daily => start_day + 1,
            Self::Weekly => start_day + 7,
            Self::Monthly => {
                let (y, m, _) = civil_from_days(start_day);
                if m == 12 { days_from_civil(y + 1, 1, 1) } else { days_from_civil(y, m + 1, 1) }
            }
        };
        next_day * DAY_MS - 1
    }

    /// The text of the Period column for the period that starts at `start`.
    pub fn label(self, start: i64) -> String {
        let days = start.div_euclid(DAY_MS);
        let (y, m, d) = civil_from_days(days);
        match self {
            Self::Daily => format!("{y:04}-{m:02}-{d:02}"),
            Self::Weekly => format!("{y:04}-{m:02}-{d:02} (W{:02})", iso_week(days).1),
            Self::Monthly => format!("{y:04}-{m:02}"),
        }
    }
}

/// ISO 8601 (year, week) of a day given as days since the epoch: the week belongs to the year
/// that holds its Thursday.
pub fn iso_week(days: i64) -> (i64, u32) {
    let monday = days - (days + 3).rem_euclid(7);
    let thursday = monday + 3;
    let (year, _, _) = civil_from_days(thursday);
    let ordinal = thursday - days_from_civil(year, 1, 1);
    (year, (ordinal / 7 + 1) as u32)
}

/// What the store counts for one period; every column but Active Users.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeriodCounts {
    /// Start of the period (UTC midnight, ms), as [`ReportKind::period_start`] gives it.
    pub period_start_ms: i64,
    /// Status Unredeemed, by unredeemed time.
    pub unredeemed: i64,
    /// Every payment with an unredeemed time, by that time.
    pub new_subs: i64,
    pub google: i64,
    pub apple: i64,
    pub rangeproof: i64,
    pub plan_1m: i64,
    pub plan_3m: i64,
    pub plan_12m: i64,
    /// By refund-request time.
    pub refunds_initiated: i64,
    /// By revocation time.
    pub revoked: i64,
    /// Not auto-renewing and not revoked, by expiry time (so future periods appear).
    pub cancelling: i64,
}

impl PeriodCounts {
    /// Builds the counts from a report query's row: the period start, then the eleven counts
    /// in field order (see `store::report_sql`).
    pub fn from_columns(period_start_ms: i64, c: [i64; 11]) -> Self {
        let [
            unredeemed,
            new_subs,
            google,
            apple,
            rangeproof,
            plan_1m,
            plan_3m,
            plan_12m,
            refunds_initiated,
            revoked,
            cancelling,
        ] = c;
        Self {
            period_start_ms,
            unredeemed,
            new_subs,
            google,
            apple,
            rangeproof,
            plan_1m,
            plan_3m,
            plan_12m,
            refunds_initiated,
            revoked,
            cancelling,
        }
    }
}

/// One line of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    pub period: String,
    /// Distinct owners whose non-revoked payment covers the period's last millisecond; only
    /// computed for periods with new payments (0 elsewhere).
    pub active_users: i64,
    pub counts: PeriodCounts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub kind: ReportKind,
    /// Newest period first.
    pub rows: Vec<ReportRow>,
}

/// Column names, shared by both layouts.
pub const COLUMNS: [&str; 13] = [
    "Period",
    "Active Users",
    "Unredeemed",
    "New Subs",
    "Google",
    "Apple",
    "Rangeproof",
    "Plan 1m",
    "Plan 3m",
    "Plan 12m",
    "Refunds Initiated",
    "Revoked",
    "Cancelling",
];

/// Widths of the human layout; the Period column is left-aligned, the others right-aligned.
const WIDTHS: [usize; 13] = [16, 14, 12, 10, 8, 7, 12, 10, 10, 10, 20, 10, 12];

/// How many leading rows a Python slice `rows[:count]` keeps (a negative count drops rows
/// from the end).
pub fn slice_len(len: usize, count: i64) -> usize {
    if count >= 0 {
        usize::try_from(count).unwrap_or(usize::MAX).min(len)
    } else {
        len.saturating_sub(usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX))
    }
}

/// Orders the periods newest first, keeps the first `count` (Python slice rules) and names
/// them. Active Users are left at 0.
pub fn arrange(kind: ReportKind, mut counts: Vec<PeriodCounts>, count: i64) -> Vec<ReportRow> {
    let mut rows: Vec<ReportRow> = counts
        .drain(..)
        .map(|c| ReportRow { period: kind.label(c.period_start_ms), active_users: 0, counts: c })
        .collect();
    rows.sort_by(|a, b| b.period.cmp(&a.period));
    rows.truncate(slice_len(rows.len(), count));
    rows
}

/// Builds a report from the database: the newest `count` periods that have any counted event.
pub fn generate(tx: &mut dyn StoreTx, kind: ReportKind, count: i64) -> StoreResult<Report> {
    let mut rows = arrange(kind, tx.report_counts(kind)?, count);
    for row in &mut rows {
        if row.counts.new_subs > 0 {
            row.active_users = tx.count_active_users(kind.period_end(row.counts.period_start_ms))?;
        }
    }
    Ok(Report { kind, rows })
}

fn cells(row: &ReportRow) -> [String; 13] {
    let c = &row.counts;
    [
        row.period.clone(),
        row.active_users.to_string(),
        c.unredeemed.to_string(),
        c.new_subs.to_string(),
        c.google.to_string(),
        c.apple.to_string(),
        c.rangeproof.to_string(),
        c.plan_1m.to_string(),
        c.plan_3m.to_string(),
        c.plan_12m.to_string(),
        c.refunds_initiated.to_string(),
        c.revoked.to_string(),
        c.cancelling.to_string(),
    ]
}

fn fixed_width_line<S: AsRef<str>>(cells: &[S]) -> String {
    let parts: Vec<String> = cells
        .iter()
        .zip(WIDTHS)
        .enumerate()
        .map(|(i, (cell, w))| if i == 0 { format!("{:<w$}", cell.as_ref()) } else { format!("{:>w$}", cell.as_ref()) })
        .collect();
    parts.join(" ")
}

/// The fixed-width table: title, dashes, header, dashes, rows. Lines are joined with `\n`
/// without a final newline, except that a report without rows ends right after the second
/// line of dashes with a `\n` (as upstream's does).
pub fn render_human(report: &Report) -> String {
    let dashes = "-".repeat(WIDTHS.iter().sum::<usize>() + WIDTHS.len() - 1);
    let mut lines = vec![report.kind.title().to_string(), dashes.clone(), fixed_width_line(&COLUMNS), dashes];
    if report.rows.is_empty() {
        lines.push(String::new());
    }
    lines.extend(report.rows.iter().map(|r| fixed_width_line(&cells(r))));
    lines.join("\n")
}

/// Quotes a CSV field the way Python's csv writer does by default (only when needed).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\r', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_string() }
}

/// Header and rows with `\r\n` line ends, without the final line end.
pub fn render_csv(report: &Report) -> String {
    let mut lines = vec![COLUMNS.join(",")];
    lines.extend(report.rows.iter().map(|r| cells(r).iter().map(|c| csv_field(c)).collect::<Vec<_>>().join(",")));
    lines.join("\r\n")
}

/// The fixed `payments` data set behind the report tests, shared with the CLI's integration
/// tests so both check the same known counts.
#[cfg(any(test, feature = "test-support"))]
pub mod fixture {
    use crate::domain::time::{DAY_MS, days_from_civil};

    /// (provider, plan, status, auto_renewing, unredeemed, expiry, revoked, refund requested,
    /// owner key byte).
    pub type Row = (i64, i64, i64, bool, i64, i64, i64, i64, Option<u8>);

    /// The rows themselves, for tests that derive expectations from them.
    pub fn rows() -> [Row; 7] {
        let h = |y, m, d, hour: i64| days_from_civil(y, m, d) * DAY_MS + hour * 3_600_000;
        [
            (1, 1, 2, true, h(2026, 12, 1, 9), h(2027, 1, 1, 9), 0, 0, Some(1)),
            (1, 2, 1, true, h(2026, 12, 1, 15), h(2027, 3, 1, 0), 0, 0, None),
            (2, 2, 2, false, h(2026, 12, 4, 10), h(2027, 3, 4, 10), 0, h(2026, 12, 5, 8), Some(2)),
            (3, 3, 2, false, h(2026, 12, 4, 11), h(2027, 12, 4, 11), 0, 0, Some(3)),
            (2, 1, 4, false, h(2026, 11, 20, 10), h(2026, 12, 20, 10), h(2026, 12, 2, 12), 0, Some(5)),
            // 2027-01-01: week 00 of %W, which crashed upstream's weekly report.
            (1, 1, 2, false, h(2027, 1, 1, 8), h(2027, 2, 1, 8), 0, 0, Some(1)),
            // 2024-12-30: %W week 53 of a year with 52 ISO weeks (ISO 2025-W01).
            (2, 3, 2, true, h(2024, 12, 30, 10), h(2025, 12, 30, 10), 0, 0, Some(4)),
        ]
    }

    /// Inserts the data set into a bootstrapped SQLite database.
    pub fn insert(c: &rusqlite::Connection) {
        for (provider, plan, status, auto, unredeemed, expiry, revoked, refund, owner) in rows() {
            c.execute(
                "INSERT INTO payments (master_pkey, status, plan, payment_provider, auto_renewing, unredeemed_unix_ts_ms,
                     expiry_unix_ts_ms, platform_refund_expiry_unix_ts_ms, revoked_unix_ts_ms, refund_requested_unix_ts_ms,
                     rangeproof_order_id)
                 VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, 'x')",
                rusqlite::params![
                    owner.map(|o| vec![o; 32]),
                    status,
                    plan,
                    provider,
                    auto,
                    unredeemed,
                    expiry,
                    (revoked > 0).then_some(revoked),
                    refund
                ],
            )
            .unwrap();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i64, m: u32, d: u32) -> i64 {
        days_from_civil(y, m, d) * DAY_MS
    }

    #[test]
    fn iso_weeks_across_year_boundaries() {
        let w = |y, m, d| iso_week(days_from_civil(y, m, d));
        assert_eq!(w(2026, 11, 26), (2026, 48));
        assert_eq!(w(2024, 12, 30), (2025, 1)); // %W week 53 of 2024, ISO 2025-W01
        assert_eq!(w(2027, 1, 1), (2026, 53)); // %W week 00 of 2027
        assert_eq!(w(2021, 1, 3), (2020, 53));
        assert_eq!(w(2021, 1, 4), (2021, 1));
        assert_eq!(w(2026, 1, 1), (2026, 1));
        assert_eq!(w(2025, 12, 29), (2026, 1));
        assert_eq!(w(1970, 1, 1), (1970, 1));
    }

    #[test]
    fn periods_and_labels() {
        let t = day(2026, 12, 2) + 5 * 3_600_000; // a Wednesday
        assert_eq!(ReportKind::Daily.period_start(t), day(2026, 12, 2));
        assert_eq!(ReportKind::Weekly.period_start(t), day(2026, 11, 30));
        assert_eq!(ReportKind::Weekly.period_start(day(2026, 11, 30)), day(2026, 11, 30));
        assert_eq!(ReportKind::Weekly.period_start(day(2026, 12, 6) + DAY_MS - 1), day(2026, 11, 30));
        assert_eq!(ReportKind::Monthly.period_start(t), day(2026, 12, 1));
        assert_eq!(ReportKind::Daily.period_end(day(2026, 12, 2)), day(2026, 12, 3) - 1);
        assert_eq!(ReportKind::Weekly.period_end(day(2026, 11, 30)), day(2026, 12, 7) - 1);
        assert_eq!(ReportKind::Monthly.period_end(day(2026, 12, 1)), day(2027, 1, 1) - 1);
        assert_eq!(ReportKind::Monthly.period_end(day(2024, 2, 1)), day(2024, 3, 1) - 1);
        assert_eq!(ReportKind::Daily.label(day(2026, 12, 2)), "2026-12-02");
        assert_eq!(ReportKind::Weekly.label(day(2026, 11, 23)), "2026-11-23 (W48)");
        assert_eq!(ReportKind::Weekly.label(day(2026, 12, 28)), "2026-12-28 (W53)");
        assert_eq!(ReportKind::Weekly.label(day(2024, 12, 30)), "2024-12-30 (W01)");
        assert_eq!(ReportKind::Monthly.label(day(2026, 12, 1)), "2026-12");
    }

    #[test]
    fn python_slices() {
        assert_eq!(slice_len(5, 7), 5);
        assert_eq!(slice_len(5, 2), 2);
        assert_eq!(slice_len(5, 0), 0);
        assert_eq!(slice_len(5, -2), 3);
        assert_eq!(slice_len(5, -9), 0);
        assert_eq!(slice_len(5, i64::MIN), 0);
        assert_eq!(slice_len(5, i64::MAX), 5);
    }

    fn sample() -> Report {
        let counts = vec![
            PeriodCounts {
                period_start_ms: day(2026, 12, 4),
                new_subs: 4,
                google: 2,
                apple: 1,
                rangeproof: 1,
                plan_1m: 1,
                plan_3m: 2,
                plan_12m: 1,
                cancelling: 1,
                ..Default::default()
            },
            PeriodCounts { period_start_ms: day(2027, 3, 4), cancelling: 1, ..Default::default() },
            PeriodCounts {
                period_start_ms: day(2026, 12, 1),
                unredeemed: 1,
                new_subs: 1,
                google: 1,
                plan_1m: 1,
                ..Default::default()
            },
            PeriodCounts { period_start_ms: day(2026, 12, 2), revoked: 1, ..Default::default() },
        ];
        Report { kind: ReportKind::Daily, rows: arrange(ReportKind::Daily, counts, 7) }
    }

    #[test]
    fn human_layout_is_upstreams() {
        let want = "DAILY REPORT
-------------------------------------------------------------------------------------------------------------------------------------------------------------------
Period             Active Users   Unredeemed   New Subs   Google   Apple   Rangeproof    Plan 1m    Plan 3m   Plan 12m    Refunds Initiated    Revoked   Cancelling
-------------------------------------------------------------------------------------------------------------------------------------------------------------------
2027-03-04                    0            0          0        0       0            0          0          0          0                    0          0            1
2026-12-04                    0            0          4        2       1            1          1          2          1                    0          0            1
2026-12-02                    0            0          0        0       0            0          0          0          0                    0          1            0
2026-12-01                    0            1          1        1       0            0          1          0          0                    0          0            0";
        assert_eq!(render_human(&sample()), want);
        let empty = Report { kind: ReportKind::Weekly, rows: vec![] };
        let text = render_human(&empty);
        assert!(text.starts_with("WEEKLY REPORT\n"));
        assert!(text.ends_with(&format!("{}\n", "-".repeat(163))));
        assert_eq!(text.lines().count(), 4);
    }

    #[test]
    fn csv_layout_is_upstreams() {
        let mut r = sample();
        r.rows.truncate(2);
        assert_eq!(
            render_csv(&r),
            "Period,Active Users,Unredeemed,New Subs,Google,Apple,Rangeproof,Plan 1m,Plan 3m,Plan 12m,Refunds Initiated,Revoked,Cancelling\r\n\
             2027-03-04,0,0,0,0,0,0,0,0,0,0,0,1\r\n\
             2026-12-04,0,0,4,2,1,1,1,2,1,0,0,1"
        );
        assert_eq!(render_csv(&Report { kind: ReportKind::Monthly, rows: vec![] }), COLUMNS.join(","));
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("2026-11-23 (W48)"), "2026-11-23 (W48)");
    }
    fn fixture_db() -> rusqlite::Connection {
        use crate::store::sqlite::{self, SqliteTarget};
        let mut c = sqlite::open_writer(&SqliteTarget::memory()).unwrap();
        sqlite::bootstrap(&mut c, [0xCD; 32]).unwrap();
        fixture::insert(&c);
        c
    }

    fn summary(r: &Report) -> Vec<(String, [i64; 12])> {
        r.rows
            .iter()
            .map(|row| {
                let c = &row.counts;
                (
                    row.period.clone(),
                    [
                        row.active_users,
                        c.unredeemed,
                        c.new_subs,
                        c.google,
                        c.apple,
                        c.rangeproof,
                        c.plan_1m,
                        c.plan_3m,
                        c.plan_12m,
                        c.refunds_initiated,
                        c.revoked,
                        c.cancelling,
                    ],
                )
            })
            .collect()
    }

    fn run(kind: ReportKind, count: i64) -> Report {
        let mut c = fixture_db();
        crate::store::sqlite::read(&mut c, |tx| generate(tx, kind, count)).unwrap()
    }

    #[test]
    fn daily_counts_on_the_fixture() {
        let s = |p: &str, v: [i64; 12]| (p.to_string(), v);
        assert_eq!(
            summary(&run(ReportKind::Daily, 20)),
            vec![
                s("2027-12-04", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
                s("2027-03-04", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
                s("2027-02-01", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
                s("2027-01-01", [3, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0]),
                s("2026-12-05", [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]),
                s("2026-12-04", [3, 0, 2, 0, 1, 1, 0, 1, 1, 0, 0, 0]),
                s("2026-12-02", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
                s("2026-12-01", [1, 1, 2, 2, 0, 0, 1, 1, 0, 0, 0, 0]),
                s("2026-11-20", [0, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0]),
                s("2024-12-30", [1, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0]),
            ]
        );
        assert_eq!(run(ReportKind::Daily, 7).rows.len(), 7);
        assert_eq!(run(ReportKind::Daily, 0).rows.len(), 0);
        let dropped = run(ReportKind::Daily, -8);
        assert_eq!(dropped.rows.iter().map(|r| r.period.as_str()).collect::<Vec<_>>(), ["2027-12-04", "2027-03-04"]);
    }

    #[test]
    fn weekly_counts_use_iso_weeks() {
        let s = |p: &str, v: [i64; 12]| (p.to_string(), v);
        assert_eq!(
            summary(&run(ReportKind::Weekly, 20)),
            vec![
                s("2027-11-29 (W48)", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
                s("2027-03-01 (W09)", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
                s("2027-02-01 (W05)", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
                s("2026-12-28 (W53)", [3, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0]),
                s("2026-11-30 (W49)", [3, 1, 4, 2, 1, 1, 1, 2, 1, 1, 1, 0]),
                s("2026-11-16 (W47)", [0, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0]),
                s("2024-12-30 (W01)", [1, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0]),
            ]
        );
    }

    #[test]
    fn monthly_counts() {
        let s = |p: &str, v: [i64; 12]| (p.to_string(), v);
        assert_eq!(
            summary(&run(ReportKind::Monthly, 20)),
            vec![
                s("2027-12", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
                s("2027-03", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
                s("2027-02", [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
                s("2027-01", [3, 0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0]),
                s("2026-12", [3, 1, 4, 2, 1, 1, 1, 2, 1, 1, 1, 0]),
                s("2026-11", [0, 0, 1, 0, 1, 0, 1, 0, 0, 0, 0, 0]),
                s("2024-12", [1, 0, 1, 0, 1, 0, 0, 0, 1, 0, 0, 0]),
            ]
        );
    }

    #[test]
    fn sql_periods_agree_with_the_pure_ones() {
        let mut c = fixture_db();
        // Every day of several years, at both ends of the day, across leap years and the ISO
        // weeks that straddle New Year.
        let first = days_from_civil(2023, 12, 20);
        for d in first..days_from_civil(2028, 1, 10) {
            for t in [d * DAY_MS, (d + 1) * DAY_MS - 1] {
                c.execute(
                    "INSERT INTO payments (status, plan, payment_provider, auto_renewing, unredeemed_unix_ts_ms,
                         expiry_unix_ts_ms, platform_refund_expiry_unix_ts_ms, refund_requested_unix_ts_ms)
                     VALUES (2, 1, 3, 1, ?, ?, 0, 0)",
                    [t, t],
                )
                .unwrap();
            }
        }
        for kind in [ReportKind::Daily, ReportKind::Weekly, ReportKind::Monthly] {
            let counts = crate::store::sqlite::read(&mut c, |tx| tx.report_counts(kind)).unwrap();
            let expected: std::collections::BTreeSet<i64> =
                (first..days_from_civil(2028, 1, 10)).map(|d| kind.period_start(d * DAY_MS)).collect();
            let found: std::collections::BTreeSet<i64> = counts.iter().map(|p| p.period_start_ms).collect();
            assert!(expected.is_subset(&found), "{kind:?}");
            // Two payments per day land in exactly the period the pure rules give.
            for p in counts.iter().filter(|p| {
                p.period_start_ms > first * DAY_MS && p.period_start_ms < days_from_civil(2027, 11, 1) * DAY_MS
            }) {
                let days = (kind.period_end(p.period_start_ms) + 1 - p.period_start_ms) / DAY_MS;
                let fixture =
                    fixture::rows().iter().filter(|r| kind.period_start(r.4) == p.period_start_ms).count() as i64;
                assert_eq!(p.new_subs, 2 * days + fixture, "{kind:?} {}", kind.label(p.period_start_ms));
            }
            for p in counts {
                assert_eq!(kind.period_start(p.period_start_ms), p.period_start_ms, "{kind:?}");
            }
            // Each day contributes two payments to exactly the period the pure rules give.
            for d in
                [first, days_from_civil(2024, 12, 29), days_from_civil(2024, 12, 30), days_from_civil(2026, 12, 31)]
            {
                let start = kind.period_start(d * DAY_MS);
                let end = kind.period_end(start);
                assert_eq!(kind.period_start(end), start);
                assert_eq!(kind.period_start(end + 1), end + 1);
            }
        }
    }
}

//! Which dated backup files to keep: everything from the last 180 days, plus the earliest file
//! of every calendar month before that.

use std::collections::BTreeMap;

use super::time::{DAY_MS, civil_from_days, days_from_civil};

/// How long every backup is kept.
pub const KEEP_ALL_FOR_MS: i64 = 180 * DAY_MS;

/// `YYYY-MM-DD_HHMMSS` (UTC) of a timestamp, the prefix of backup file names.
pub fn stamp(t: i64) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(DAY_MS));
    let s = t.rem_euclid(DAY_MS) / 1000;
    format!("{y:04}-{m:02}-{d:02}_{:02}{:02}{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The time a backup file name starts with, if it starts with a valid stamp and `_`.
pub fn parse_stamp(name: &str) -> Option<i64> {
    let b = name.as_bytes();
    if b.len() < 18 || b[4] != b'-' || b[7] != b'-' || b[10] != b'_' || b[17] != b'_' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = name.get(r)?;
        if s.bytes().all(|c| c.is_ascii_digit()) { s.parse().ok() } else { None }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(13..15)?, num(15..17)?);
    if !(1..=12).contains(&mo) || d < 1 || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let days = days_from_civil(y, mo as u32, d as u32);
    // Reject dates like 02-31 that roll over into another month.
    if civil_from_days(days) != (y, mo as u32, d as u32) {
        return None;
    }
    Some(days * DAY_MS + (h * 3600 + mi * 60 + s) * 1000)
}

/// Splits backup names into (keep, delete) at time `now`. Names without a stamp are ignored
/// (in neither list).
pub fn plan_rotation(names: &[String], now: i64) -> (Vec<String>, Vec<String>) {
    let dated: Vec<(i64, &String)> = names.iter().filter_map(|n| parse_stamp(n).map(|t| (t, n))).collect();
    let mut earliest_of_month: BTreeMap<(i64, u32), (i64, &String)> = BTreeMap::new();
    for (t, n) in &dated {
        let (y, m, _) = civil_from_days(t.div_euclid(DAY_MS));
        let e = earliest_of_month.entry((y, m)).or_insert((*t, n));
        if *t < e.0 {
            *e = (*t, n);
        }
    }
    let (mut keep, mut delete) = (Vec::new(), Vec::new());
    for (t, n) in dated {
        let (y, m, _) = civil_from_days(t.div_euclid(DAY_MS));
        let first_of_month = earliest_of_month.get(&(y, m)).is_some_and(|e| e.1 == n);
        if t > now - KEEP_ALL_FOR_MS || first_of_month {
            keep.push(n.clone());
        } else {
            delete.push(n.clone());
        }
    }
    keep.sort();
    delete.sort();
    (keep, delete)
}

#[cfg(test)]
mod tests {
    use super::*;

    // scenarios.md BAK-1
    #[test]
    fn rotation_dry_run() {
        let now = parse_stamp("2025-06-01_120000_x").unwrap();
        let names: Vec<String> = [
            "2025-05-30_100000",
            "2025-01-01_000000",
            "2024-12-15_235959",
            "2024-12-01_000000",
            "2024-12-30_235959",
            "2024-11-05_080000",
            "2024-11-20_150000",
            "2025-01-10_090000",
            "2025-01-20_100000",
            "2024-11-01_000000",
            "2024-11-15_000000",
        ]
        .iter()
        .map(|s| format!("{s}_pro.db.bak"))
        .chain(["invalid.txt".to_string()])
        .collect();
        let (keep, delete) = plan_rotation(&names, now);
        let short = |v: &[String]| v.iter().map(|s| s[..10].to_string()).collect::<Vec<_>>();
        assert_eq!(
            short(&keep),
            [
                "2024-11-01",
                "2024-12-01",
                "2024-12-15",
                "2024-12-30",
                "2025-01-01",
                "2025-01-10",
                "2025-01-20",
                "2025-05-30"
            ]
        );
        assert_eq!(short(&delete), ["2024-11-05", "2024-11-15", "2024-11-20"]);
    }

    #[test]
    fn stamps() {
        assert_eq!(stamp(1796411631007), "2026-12-04_191351");
        assert_eq!(parse_stamp("2026-12-04_191351_pro2.db.bak"), Some(1796411631000));
        assert_eq!(parse_stamp("garbage_pro2.db.bak"), None);
        assert_eq!(parse_stamp("2026-02-31_000000_x"), None);
        assert_eq!(parse_stamp("2026-12-04_246000_x"), None);
    }
}

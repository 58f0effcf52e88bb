//! Time arithmetic on millisecond Unix timestamps (UTC).

pub const DAY_MS: i64 = 86_400_000;
pub const MONTH_MS: i64 = 30 * DAY_MS;
pub const YEAR_MS: i64 = 365 * DAY_MS;
/// Allowed difference between a signed request's timestamp and the server clock.
pub const TIMESTAMP_TOLERANCE_MS: i64 = 70_000;
/// Grace period added to store payments by default (Apple and Google).
pub const DEFAULT_GRACE_MS: i64 = 3_600_000;
/// Google's default grace on its test tracks, where a "day" is ten seconds.
pub const TESTING_GOOGLE_GRACE_MS: i64 = 10_000;
/// How long a fabricated development payment stays in grace when it auto-renews.
pub const DEV_GRACE_MS: i64 = 60_000;
/// How long a revocation takes effect after it is made, at most.
pub const REVOCATION_EFFECTIVE_DELAY_MS: i64 = DAY_MS;
/// `retry_in_s` of the revocation list.
pub const REVOCATION_RETRY_IN_S: i64 = 86_400;

/// Rounds up to the next UTC midnight; a midnight stays where it is.
pub fn round_up_to_day(t: i64) -> i64 {
    t.div_euclid(DAY_MS) * DAY_MS + if t.rem_euclid(DAY_MS) == 0 { 0 } else { DAY_MS }
}

pub fn start_of_day(t: i64) -> i64 {
    t.div_euclid(DAY_MS) * DAY_MS
}

/// Upstream's "platform testing" rounding: Google test tracks treat ten seconds as a day.
pub fn round_up_with_testing_support(google: bool, testing_env: bool, t: i64) -> i64 {
    if google && testing_env {
        t.div_euclid(10_000) * 10_000 + if t.rem_euclid(10_000) == 0 { 0 } else { 10_000 }
    } else {
        round_up_to_day(t)
    }
}

/// A proof never outlives the UTC midnight at or after `now + 30 days`.
pub fn clamp_proof_expiry(now: i64, proposed: i64) -> i64 {
    proposed.min(round_up_to_day(now.saturating_add(MONTH_MS)))
}

/// What is stored as `redeemed_unix_ts_ms`: masked to the end of the day in production,
/// exact in developer mode.
pub fn redeemed_ts(now: i64, dev: bool) -> i64 {
    if dev { now } else { round_up_to_day(now) }
}

/// Splits days since the epoch into (year, month, day) of the proleptic Gregorian calendar.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since the epoch of a calendar date (inverse of [`civil_from_days`]).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `yy-mm-dd HH:MM:SS.mmm` in UTC, the format upstream's logs and messages use.
pub fn format_readable(t: i64) -> String {
    let (y, mo, d) = civil_from_days(t.div_euclid(DAY_MS));
    let ms = t.rem_euclid(DAY_MS);
    format!(
        "{:02}-{:02}-{:02} {:02}:{:02}:{:02}.{:03}",
        y.rem_euclid(100),
        mo,
        d,
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// `YYYY-MM-DD` in UTC.
pub fn format_date(t: i64) -> String {
    let (y, mo, d) = civil_from_days(t.div_euclid(DAY_MS));
    format!("{y:04}-{mo:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_examples() {
        // backend.md §21.9
        assert_eq!(round_up_to_day(1767225600000), 1767225600000);
        assert_eq!(round_up_to_day(1767225600001), 1767312000000);
        assert_eq!(round_up_to_day(1767268812345), 1767312000000);
        assert_eq!(round_up_to_day(1767311999999), 1767312000000);
        assert_eq!(round_up_with_testing_support(true, true, 1767268812345), 1767268820000);
        assert_eq!(round_up_with_testing_support(false, true, 1767268812345), 1767312000000);
        assert_eq!(round_up_with_testing_support(true, false, 1767268812345), 1767312000000);
        assert_eq!(redeemed_ts(1767268812345, true), 1767268812345);
        assert_eq!(redeemed_ts(1767268812345, false), 1767312000000);
    }

    #[test]
    fn proof_clamp() {
        // api.md §5.1.7: proof from a claim at T with a payment 30 days out.
        assert_eq!(clamp_proof_expiry(1762407212143, round_up_to_day(1762407212143 + MONTH_MS)), 1765065600000);
        // generate_pro_proof keeps an unrounded user expiry when it is the earlier one.
        assert_eq!(clamp_proof_expiry(1762407212143, 1764999212143), 1764999212143);
        assert_eq!(clamp_proof_expiry(0, i64::MAX), MONTH_MS);
    }

    #[test]
    fn calendar() {
        assert_eq!(format_readable(0), "70-01-01 00:00:00.000");
        assert_eq!(format_readable(1796411509975), "26-12-04 19:11:49.975");
        assert_eq!(format_date(1796411509975), "2026-12-04");
        for days in [-1000i64, 0, 59, 60, 365, 11_016, 20_000, 60_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }
}

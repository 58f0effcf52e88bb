//! Google's ISO-8601 durations (a base plan's `gracePeriodDuration`), read the way upstream's
//! simplified parser reads them, so both servers agree on every grace period.
//!
//! Digits accumulate into a number that the next unit letter multiplies into the total. `T`
//! switches to the time part (where `M` means minutes) and `P` is skipped wherever it appears;
//! neither clears digits still pending. Digits left without a unit at the end are dropped. There
//! are no fractions and letters are case-sensitive.

/// The largest duration accepted, in seconds (10 000 years of 365.25 days).
pub const MAX_DURATION_S: i64 = 315_576_000_000;

const DAY_S: i64 = 86_400;

/// Seconds of `text`, or why it is not a duration.
pub fn parse_duration_s(text: &str) -> Result<i64, String> {
    let bad = |why: &str| Err(format!("invalid ISO-8601 duration {text:?}: {why}"));
    if !text.starts_with('P') || text.len() < 3 {
        return bad("it must start with P and name at least one amount");
    }
    let mut total: i64 = 0;
    let mut pending: i64 = 0;
    let mut has_digits = false;
    let mut time_part = false;
    for c in text.chars() {
        let unit_s = match c {
            '0'..='9' => {
                let digit = i64::from(c as u8 - b'0');
                pending = match pending.checked_mul(10).and_then(|p| p.checked_add(digit)) {
                    Some(p) => p,
                    None => return bad("the number is too large"),
                };
                has_digits = true;
                continue;
            }
            'P' => continue,
            'T' => {
                time_part = true;
                continue;
            }
            'Y' => 365 * DAY_S,
            'M' if time_part => 60,
            'M' => 30 * DAY_S,
            'W' => 7 * DAY_S,
            'D' => DAY_S,
            'H' if time_part => 3600,
            'S' if time_part => 1,
            'H' | 'S' => return bad("hours and seconds belong after T"),
            _ => return bad("unexpected character"),
        };
        if !has_digits {
            return bad("a unit without an amount");
        }
        total = match pending.checked_mul(unit_s).and_then(|v| v.checked_add(total)) {
            Some(t) if t <= MAX_DURATION_S => t,
            _ => return bad("the duration is too long"),
        };
        pending = 0;
        has_digits = false;
    }
    Ok(total)
}

/// Milliseconds of `text` (seconds × 1000).
pub fn parse_duration_ms(text: &str) -> Result<i64, String> {
    parse_duration_s(text).map(|s| s * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dur1_vectors() {
        let cases = [
            ("P1D", 86_400),
            ("P7D", 7 * 86_400),
            ("P14D", 14 * 86_400),
            ("P30D", 30 * 86_400),
            ("P1M", 30 * 86_400),
            ("P3M", 90 * 86_400),
            ("P12M", 360 * 86_400),
            ("P1Y", 365 * 86_400),
            ("P1DT1H", 25 * 3600),
            ("P1DT1H12M", 25 * 3600 + 12 * 60),
            ("PT1S", 1),
            ("PT59S", 59),
            ("PT50M1S", 3001),
            ("P1W", 604_800),
            ("P1Y2M", 36_720_000),
        ];
        for (text, secs) in cases {
            assert_eq!(parse_duration_s(text), Ok(secs), "{text}");
        }
        assert_eq!(parse_duration_ms("P2D"), Ok(172_800_000));
    }

    #[test]
    fn upstream_edge_cases() {
        for bad in ["PD", "P1H", "P1.5D", "P1", "P", "", "p1d", "1D", "P1DT1X", "PT", "P1Dé", "PTS"] {
            assert!(parse_duration_s(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration_s("P1D2"), Ok(86_400));
        assert_eq!(parse_duration_s("PP1D"), Ok(86_400));
        assert_eq!(parse_duration_s("P1DP2D"), Ok(259_200));
        assert_eq!(parse_duration_s("P1T2H"), Ok(43_200));
        assert_eq!(parse_duration_s("P1DT"), Ok(86_400));
        assert_eq!(parse_duration_s("P0D"), Ok(0));
    }

    #[test]
    fn limits() {
        assert_eq!(parse_duration_s("PT315576000000S"), Ok(MAX_DURATION_S));
        assert!(parse_duration_s("PT315576000001S").is_err());
        assert!(parse_duration_s("P99999999999999999999999D").is_err());
        assert!(parse_duration_s("P9999999999Y").is_err());
    }
}

//! Small text formats Google's APIs use: RFC 3339 timestamps and percent-encoded URL parts.

use crate::domain::time::days_from_civil;

/// Milliseconds of an RFC 3339 timestamp (`2025-10-06T04:03:10.613Z`), with 0–9 fraction
/// digits and `Z` or a `±HH:MM` offset; digits past the millisecond are truncated.
pub fn rfc3339_to_ms(text: &str) -> Result<i64, String> {
    let bad = || format!("invalid RFC 3339 timestamp {text:?}");
    let b = text.as_bytes();
    if b.len() < 20 || !b.is_ascii() {
        return Err(bad());
    }
    let num = |from: usize, to: usize| -> Result<i64, String> {
        let part = &text[from..to];
        if part.bytes().all(|c| c.is_ascii_digit()) { part.parse::<i64>().map_err(|_| bad()) } else { Err(bad()) }
    };
    let sep_ok = b[4] == b'-' && b[7] == b'-' && matches!(b[10], b'T' | b't' | b' ') && b[13] == b':' && b[16] == b':';
    if !sep_ok {
        return Err(bad());
    }
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    // A leap second (60) is read as the last second of its minute.
    if day < 1 || day > month_days || hour > 23 || minute > 59 || second > 60 {
        return Err(bad());
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || digits > 9 {
            return Err(bad());
        }
        for _ in digits..3 {
            millis *= 10;
        }
    }
    let offset_s = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (num(i + 1, i + 3)?, num(i + 4, i + 6)?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            let s = h * 3600 + m * 60;
            if *sign == b'-' { -s } else { s }
        }
        _ => return Err(bad()),
    };
    let days = days_from_civil(year, month as u32, day as u32);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second.min(59) - offset_s;
    Ok(secs * 1000 + millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_to_ms("2025-10-06T04:03:10.613Z"), Ok(1_759_723_390_613));
        assert_eq!(rfc3339_to_ms("2025-10-06T04:03:10Z"), Ok(1_759_723_390_000));
        assert_eq!(rfc3339_to_ms("2025-10-06T04:03:10.6Z"), Ok(1_759_723_390_600));
        assert_eq!(rfc3339_to_ms("2025-10-06T04:03:10.613999999Z"), Ok(1_759_723_390_613));
        assert_eq!(rfc3339_to_ms("2025-10-06T06:03:10.613+02:00"), Ok(1_759_723_390_613));
        assert_eq!(rfc3339_to_ms("2025-10-06T00:03:10.613-04:00"), Ok(1_759_723_390_613));
        assert_eq!(rfc3339_to_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(rfc3339_to_ms("2024-02-29T00:00:00Z"), Ok(1_709_164_800_000));
        for bad in [
            "",
            "2025-10-06",
            "2025-10-06T04:03:10",
            "2025-10-06T04:03:10.Z",
            "2025-10-06T04:03:10.1234567890Z",
            "2025-13-06T04:03:10Z",
            "2025-02-29T04:03:10Z",
            "2025-10-06T24:03:10Z",
            "2025-10-06T04:03:10+0200",
            "2025-10-06T04:03:10Zjunk",
            "2025-1a-06T04:03:10Z",
            "+025-10-06T04:03:10Z",
            "2025-10-06T04:03:10.61é",
        ] {
            assert!(rfc3339_to_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn encoding() {}
}

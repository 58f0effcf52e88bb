//! Formatting the way upstream's Python prints things: floats in messages (`repr(float)`) and
//! JSON strings (`json.dumps` with its default `ensure_ascii`).

use std::io;

/// Python's `repr` of a float: the shortest round-trip digits, positional between 1e-4 and
/// 1e16, otherwise scientific with a signed two-digit exponent; integral values keep `.0`.
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    // `{:e}` yields the shortest round-trip digits as `d.ddddde<exp>`.
    let sci = format!("{x:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    if (-4..16).contains(&exp) {
        let point = exp + 1; // position of the decimal point within `digits`
        let body = if point <= 0 {
            format!("0.{}{}", "0".repeat((-point) as usize), digits)
        } else if point as usize >= digits.len() {
            format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
        } else {
            format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
        };
        format!("{sign}{body}")
    } else {
        let frac = &digits[1..];
        let m = if frac.is_empty() { digits[..1].to_string() } else { format!("{}.{}", &digits[..1], frac) };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}

/// A compact serde_json formatter whose strings match Python's `json.dumps` default: every
/// character outside printable ASCII (so DEL and all non-ASCII too) written as `\uXXXX` UTF-16
/// units. Quotes, backslashes and controls below 0x20 already come out as Python writes them.
pub struct PyAsciiFormatter;

impl serde_json::ser::Formatter for PyAsciiFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, w: &mut W, fragment: &str) -> io::Result<()> {
        let mut start = 0;
        for (i, ch) in fragment.char_indices() {
            if !(' '..='~').contains(&ch) {
                w.write_all(&fragment.as_bytes()[start..i])?;
                let mut units = [0u16; 2];
                for u in ch.encode_utf16(&mut units) {
                    write!(w, "\\u{u:04x}")?;
                }
                start = i + ch.len_utf8();
            }
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

/// `s` as a JSON string literal, quoted and escaped as Python's `json.dumps` writes it.
pub fn py_json_string(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len() + 2);
    // Writing a &str into a Vec cannot fail.
    let _ = serde::Serialize::serialize(s, &mut serde_json::Serializer::with_formatter(&mut out, PyAsciiFormatter));
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_match_python() {
        // json.dumps("a\u2026\"b\t\x01\\\x7f\U0001F600\r\b\f~ ")
        assert_eq!(
            py_json_string("a\u{2026}\"b\t\u{1}\\\u{7f}\u{1F600}\r\u{8}\u{c}~ "),
            r#""a\u2026\"b\t\u0001\\\u007f\ud83d\ude00\r\b\f~ ""#
        );
        assert_eq!(py_json_string(""), "\"\"");
    }

    #[test]
    fn matches_python_repr() {
        assert_eq!(python_float_repr(70000.0), "70000.0");
        assert_eq!(python_float_repr(-70000.0), "-70000.0");
        assert_eq!(python_float_repr(100002.30151367188), "100002.30151367188");
        assert_eq!(python_float_repr(-1.8446742277296673e19), "-1.8446742277296673e+19");
        assert_eq!(python_float_repr(0.001), "0.001");
        assert_eq!(python_float_repr(-0.001), "-0.001");
        assert_eq!(python_float_repr(0.0001), "0.0001");
        assert_eq!(python_float_repr(0.00001), "1e-05");
        assert_eq!(python_float_repr(31536000.001), "31536000.001");
        assert_eq!(python_float_repr(1e16), "1e+16");
        assert_eq!(python_float_repr(123456789012345.6), "123456789012345.6");
        assert_eq!(python_float_repr(0.0), "0.0");
    }
}

//! Reading request JSON with upstream's validation messages, and writing responses the way
//! upstream's Flask serialises them (sorted keys, compact, non-ASCII escaped, trailing newline).

use std::fmt;

use bytes::Bytes;
use pro_engine::domain::pyfmt::PyAsciiFormatter;
use serde::Serialize;
use serde_json::{Map, Number, Value};

/// A JSON integer of any size: exact when it fits an i128, saturated otherwise (comparisons
/// stay right); its text is kept for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonInt {
    pub value: i128,
    text: String,
}

impl JsonInt {
    fn from_number(n: &Number) -> Option<Self> {
        let text = n.to_string();
        let digits = text.strip_prefix('-').unwrap_or(&text);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None; // a float literal
        }
        let value = text.parse::<i128>().unwrap_or(if text.starts_with('-') { i128::MIN } else { i128::MAX });
        Some(Self { value, text })
    }

    /// The value when it lies in `range`.
    pub fn in_range<T: TryFrom<i128>>(&self) -> Option<T> {
        T::try_from(self.value).ok()
    }

    /// Whether the literal was too large for an i128 (then `value` is saturated).
    pub fn saturated(&self) -> bool {
        self.value == i128::MAX || self.value == i128::MIN
    }
}

impl fmt::Display for JsonInt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.saturated() { f.write_str(&self.text) } else { write!(f, "{}", self.value) }
    }
}

/// Python's name for the type a JSON value would have after `json.loads`.
pub fn python_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "NoneType",
        Value::Bool(_) => "bool",
        Value::Number(n) if JsonInt::from_number(n).is_some() => "int",
        Value::Number(_) => "float",
        Value::String(_) => "str",
        Value::Array(_) => "list",
        Value::Object(_) => "dict",
    }
}

/// `{a, b: {c}}`: the keys of an object in request order, nested objects shown recursively.
pub fn key_dump(obj: Option<&Map<String, Value>>) -> String {
    fn dump(obj: &Map<String, Value>, out: &mut String) {
        out.push('{');
        for (i, (k, v)) in obj.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(k);
            if let Value::Object(inner) = v {
                out.push_str(": ");
                dump(inner, out);
            }
        }
        out.push('}');
    }
    let mut out = String::new();
    match obj {
        Some(o) => dump(o, &mut out),
        None => out.push_str("{}"),
    }
    out
}

/// Parses a request body: any JSON object is accepted, everything else is a parse error.
pub fn parse_body(body: &[u8]) -> Result<Map<String, Value>, String> {
    let text = std::str::from_utf8(body).map_err(|e| {
        format!(
            "JSON failed to be parsed: 'utf-8' codec can't decode byte 0x{:02x} in position {}: invalid start byte",
            body.get(e.valid_up_to()).copied().unwrap_or(0),
            e.valid_up_to()
        )
    })?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(Value::Null) => Err("JSON failed to be parsed".into()),
        Ok(other) => {
            Err(format!("JSON failed to be parsed: expected an object at the top level, got {}", python_type(&other)))
        }
        Err(e) => Err(format!("JSON failed to be parsed: {e}")),
    }
}

/// Looks up typed keys of one object, collecting upstream's messages for missing keys and
/// wrong types.
pub struct Fields<'a> {
    obj: Option<&'a Map<String, Value>>,
}

impl<'a> Fields<'a> {
    pub fn new(obj: Option<&'a Map<String, Value>>) -> Self {
        Self { obj }
    }

    fn get(&self, key: &str, errors: &mut Vec<String>) -> Option<&'a Value> {
        let v = self.obj.and_then(|o| o.get(key));
        if v.is_none() {
            errors.push(format!(
                "Required key \"{key}\" is missing from JSON: dictionary w/ keys: {}",
                key_dump(self.obj)
            ));
        }
        v
    }

    pub fn int(&self, key: &str, errors: &mut Vec<String>) -> Option<JsonInt> {
        let v = self.get(key, errors)?;
        let n = match v {
            Value::Number(n) => JsonInt::from_number(n),
            _ => None,
        };
        if n.is_none() {
            errors.push(format!("Key \"{key}\" value was not an integer: \"<class '{}'>\"", python_type(v)));
        }
        n
    }

    pub fn string(&self, key: &str, errors: &mut Vec<String>) -> Option<&'a str> {
        match self.get(key, errors)? {
            Value::String(s) => Some(s),
            v => {
                errors.push(format!("Key \"{key}\" value was not a string: \"<class '{}'>\"", python_type(v)));
                None
            }
        }
    }

    pub fn object(&self, key: &str, errors: &mut Vec<String>) -> Option<&'a Map<String, Value>> {
        match self.get(key, errors)? {
            Value::Object(o) => Some(o),
            v => {
                errors.push(format!("Key \"{key}\" value was not an object: \"<class '{}'>\"", python_type(v)));
                None
            }
        }
    }

    /// An optional key: `None` when absent, otherwise checked like the required forms.
    pub fn has(&self, key: &str) -> bool {
        self.obj.is_some_and(|o| o.contains_key(key))
    }

    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        self.obj.and_then(|o| o.get(key))
    }
}

/// Serialises `v` compactly with ASCII escapes and a trailing newline. Key order is the
/// declaration order of the types, which are written in alphabetical order.
pub fn to_body<T: Serialize>(v: &T) -> Bytes {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyAsciiFormatter);
    if v.serialize(&mut ser).is_err() {
        out = br#"{"errors":["Internal error: response could not be serialised"],"status":1}"#.to_vec();
    }
    out.push(b'\n');
    Bytes::from(out)
}

#[derive(Serialize)]
struct Success<'a, T: Serialize> {
    result: &'a T,
    status: i64,
}

#[derive(Serialize)]
struct Failure<'a> {
    errors: &'a [String],
    status: i64,
}

/// A JSON route's answer: the envelope status and the serialised envelope.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub status: i64,
    pub body: Bytes,
}

impl Envelope {
    pub fn ok<T: Serialize>(result: &T) -> Self {
        Self { status: 0, body: to_body(&Success { result, status: 0 }) }
    }

    pub fn err(status: i64, errors: Vec<String>) -> Self {
        let errors = if errors.is_empty() { vec!["Unknown error".to_string()] } else { errors };
        Self { status, body: to_body(&Failure { errors: &errors, status }) }
    }

    pub fn err1(status: i64, error: impl Into<String>) -> Self {
        Self::err(status, vec![error.into()])
    }
}

pub const STATUS_GENERIC_ERROR: i64 = 1;
pub const STATUS_PARSE_ERROR: i64 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_bytes_match_upstream() {
        #[derive(Serialize)]
        struct R {
            items: Vec<u8>,
            retry_in_s: i64,
            ticket: i64,
            version: i64,
        }
        let e = Envelope::ok(&R { items: vec![], retry_in_s: 86400, ticket: 0, version: 0 });
        assert_eq!(
            &e.body[..],
            b"{\"result\":{\"items\":[],\"retry_in_s\":86400,\"ticket\":0,\"version\":0},\"status\":0}\n"
        );
        let e = Envelope::err1(100, "TX: GooglePlayStore, google=(to\u{2026}bc/GPA\u{2026}678), rangeproof=");
        assert_eq!(
            std::str::from_utf8(&e.body).unwrap(),
            "{\"errors\":[\"TX: GooglePlayStore, google=(to\\u2026bc/GPA\\u2026678), rangeproof=\"],\"status\":100}\n"
        );
        assert!(std::str::from_utf8(&Envelope::err1(2, "\u{1F600}").body).unwrap().contains("\\ud83d\\ude00"));
        // Python escapes DEL too (it is not printable ASCII).
        assert_eq!(&Envelope::err1(2, "a\u{7f}").body[..], b"{\"errors\":[\"a\\u007f\"],\"status\":2}\n");
    }

    #[test]
    fn parse_errors() {
        assert_eq!(parse_body(b"null").unwrap_err(), "JSON failed to be parsed");
        assert!(parse_body(b"").unwrap_err().starts_with("JSON failed to be parsed: "));
        assert!(parse_body(b"[1]").unwrap_err().contains("list"));
        assert!(parse_body(b"{\"a\":1} x").is_err());
        assert!(parse_body(b"{\"a\":\"\xff\"}").unwrap_err().contains("can't decode byte 0xff in position 6"));
        let deep = "[".repeat(5000);
        assert!(parse_body(deep.as_bytes()).is_err());
    }

    #[test]
    fn integers_and_types() {
        let m = parse_body(br#"{"a":1,"b":1.0,"c":true,"d":null,"e":"x","f":[1],"g":{},"h":123456789012345678901234567890123456789012345,"i":-5}"#)
            .unwrap();
        let f = Fields::new(Some(&m));
        let mut errs = vec![];
        assert_eq!(f.int("a", &mut errs).unwrap().value, 1);
        for k in ["b", "c", "d", "e", "f", "g"] {
            assert!(f.int(k, &mut errs).is_none());
        }
        assert_eq!(
            errs,
            [
                "Key \"b\" value was not an integer: \"<class 'float'>\"",
                "Key \"c\" value was not an integer: \"<class 'bool'>\"",
                "Key \"d\" value was not an integer: \"<class 'NoneType'>\"",
                "Key \"e\" value was not an integer: \"<class 'str'>\"",
                "Key \"f\" value was not an integer: \"<class 'list'>\"",
                "Key \"g\" value was not an integer: \"<class 'dict'>\"",
            ]
        );
        let big = f.int("h", &mut errs).unwrap();
        assert!(big.saturated());
        assert_eq!(big.to_string(), "123456789012345678901234567890123456789012345");
        assert_eq!(f.int("i", &mut errs).unwrap().in_range::<u64>(), None);
    }

    #[test]
    fn missing_key_lists_the_keys_present() {
        let m = parse_body(br#"{"version":0,"master_pkey":"x","nest":{"x":{"y":1},"z":2}}"#).unwrap();
        let mut errs = vec![];
        assert!(Fields::new(Some(&m)).string("rotating_pkey", &mut errs).is_none());
        assert_eq!(
            errs,
            [
                "Required key \"rotating_pkey\" is missing from JSON: dictionary w/ keys: {version, master_pkey, nest: {x: {y}, z}}"
            ]
        );
        let mut errs = vec![];
        Fields::new(None).int("provider", &mut errs);
        assert_eq!(errs, ["Required key \"provider\" is missing from JSON: dictionary w/ keys: {}"]);
    }
}

//! A strict little JSON reader for the server's answers, and the writer of
//! the report line. Enough for `{"session":"…"}` and
//! `{"peer":"online","events":[{"seq":2,"type":"message","data":"…"}]}`:
//! objects, arrays, strings with escapes, unsigned integers, `true`,
//! `false`, `null`. Nesting is bounded by [`DEPTH_MAX`]. Strings without
//! escapes borrow from the input, so reading a poll answer allocates only
//! its arrays and objects: the generator's own core is the limit of a
//! relay run, and every allocation there is a message less per second.

use std::borrow::Cow;

/// Deepest nesting accepted; pairlink's answers nest three levels.
const DEPTH_MAX: usize = 16;

/// A parsed JSON value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number; only the unsigned integers pairlink sends are exact.
    Num(f64),
    /// A string, unescaped.
    Str(Cow<'a, str>),
    /// An array.
    Arr(Vec<Value<'a>>),
    /// An object, keys in order.
    Obj(Vec<(Cow<'a, str>, Value<'a>)>),
}

impl<'a> Value<'a> {
    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The number as an unsigned integer, if it is one.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Num(n) if *n >= 0.0 && n.fract() == 0.0 && *n < 9.007e15 => Some(*n as u64),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_arr(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::Arr(a) => Some(a),
            _ => None,
        }
    }
}

/// Parses one JSON document (surrounding whitespace allowed).
pub fn parse(bytes: &[u8]) -> Option<Value<'_>> {
    let mut p = Parser { bytes, at: 0 };
    let v = p.value(0)?;
    p.ws();
    (p.at == bytes.len()).then_some(v)
}

struct Parser<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.ws();
        (self.bytes.get(self.at) == Some(&b)).then(|| self.at += 1)
    }

    fn value(&mut self, depth: usize) -> Option<Value<'a>> {
        if depth > DEPTH_MAX {
            return None;
        }
        self.ws();
        match *self.bytes.get(self.at)? {
            b'{' => {
                self.at += 1;
                let mut members = Vec::new();
                if self.eat(b'}').is_some() {
                    return Some(Value::Obj(members));
                }
                loop {
                    self.ws();
                    let key = self.string()?;
                    self.eat(b':')?;
                    members.push((key, self.value(depth + 1)?));
                    if self.eat(b',').is_none() {
                        self.eat(b'}')?;
                        return Some(Value::Obj(members));
                    }
                }
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                if self.eat(b']').is_some() {
                    return Some(Value::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    if self.eat(b',').is_none() {
                        self.eat(b']')?;
                        return Some(Value::Arr(items));
                    }
                }
            }
            b'"' => self.string().map(Value::Str),
            b't' => self.word(b"true", Value::Bool(true)),
            b'f' => self.word(b"false", Value::Bool(false)),
            b'n' => self.word(b"null", Value::Null),
            b'-' | b'0'..=b'9' => {
                let start = self.at;
                while let Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') =
                    self.bytes.get(self.at)
                {
                    self.at += 1;
                }
                let text = &self.bytes[start..self.at];
                // Event numbers are short runs of digits: add them up
                // rather than go through the float parser.
                if text.len() <= 15 && text.iter().all(u8::is_ascii_digit) {
                    let n = text.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
                    return Some(Value::Num(n as f64));
                }
                std::str::from_utf8(text).ok()?.parse().ok().map(Value::Num)
            }
            _ => None,
        }
    }

    fn word(&mut self, w: &[u8], v: Value<'a>) -> Option<Value<'a>> {
        if self.bytes[self.at..].starts_with(w) {
            self.at += w.len();
            Some(v)
        } else {
            None
        }
    }

    fn string(&mut self) -> Option<Cow<'a, str>> {
        if self.bytes.get(self.at) != Some(&b'"') {
            return None;
        }
        self.at += 1;
        // The common case: no escape before the closing quote.
        let start = self.at;
        let plain = self.bytes[start..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if self.bytes[start + plain] == b'"' {
            self.at = start + plain + 1;
            return std::str::from_utf8(&self.bytes[start..start + plain])
                .ok()
                .map(Cow::Borrowed);
        }
        let mut out = Vec::new();
        loop {
            let b = *self.bytes.get(self.at)?;
            self.at += 1;
            match b {
                b'"' => return String::from_utf8(out).ok().map(Cow::Owned),
                b'\\' => {
                    let e = *self.bytes.get(self.at)?;
                    self.at += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let hex = self.bytes.get(self.at..self.at + 4)?;
                            self.at += 4;
                            let code =
                                u32::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
                            // Surrogate pairs are not needed for the
                            // generator's own ASCII payloads.
                            let c = char::from_u32(code).unwrap_or('\u{fffd}');
                            let mut tmp = [0u8; 4];
                            out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
                        }
                        _ => return None,
                    }
                }
                0..=0x1f => return None,
                _ => out.push(b),
            }
        }
    }
}

/// Builds the one-line JSON report, member by member.
#[derive(Default)]
pub struct Writer {
    out: String,
    /// Per open object: has a member been written yet.
    open: Vec<bool>,
}

impl Writer {
    /// A writer with the outermost object open.
    pub fn new() -> Writer {
        let mut w = Writer::default();
        w.out.push('{');
        w.open.push(false);
        w
    }

    fn key(&mut self, key: &str) {
        let first = self.open.last_mut().expect("an object is open");
        if *first {
            self.out.push(',');
        }
        *first = true;
        push_str(&mut self.out, key);
        self.out.push(':');
    }

    /// `"key":"value"`
    pub fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        push_str(&mut self.out, value);
    }

    /// `"key":123`
    pub fn u64(&mut self, key: &str, value: u64) {
        self.key(key);
        self.out.push_str(&value.to_string());
    }

    /// `"key":true`
    pub fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
    }

    /// `"key":1.234` (three decimals; `null` when not finite).
    pub fn f64(&mut self, key: &str, value: f64) {
        self.key(key);
        if value.is_finite() {
            self.out.push_str(&format!("{value:.3}"));
        } else {
            self.out.push_str("null");
        }
    }

    /// `"key":["a","b"]`
    pub fn strs(&mut self, key: &str, values: &[String]) {
        self.key(key);
        self.out.push('[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            push_str(&mut self.out, v);
        }
        self.out.push(']');
    }

    /// `"key":[1,2]`
    pub fn u64s(&mut self, key: &str, values: &[u64]) {
        self.key(key);
        self.out.push('[');
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(&v.to_string());
        }
        self.out.push(']');
    }

    /// Opens `"key":{`; close it with [`Writer::end`].
    pub fn begin(&mut self, key: &str) {
        self.key(key);
        self.out.push('{');
        self.open.push(false);
    }

    /// Closes the innermost object.
    pub fn end(&mut self) {
        assert!(self.open.len() > 1, "end() without begin()");
        self.open.pop();
        self.out.push('}');
    }

    /// The finished line.
    pub fn finish(mut self) -> String {
        assert_eq!(self.open.len(), 1, "an object was left open");
        self.out.push('}');
        self.out
    }
}

fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_poll_answer() {
        let v = parse(
            br#"{"peer":"online","events":[{"seq":2,"type":"message","data":"a\"b\u0041"}]}"#,
        )
        .unwrap();
        let e = &v.get("events").unwrap().as_arr().unwrap()[0];
        assert_eq!(e.get("seq").unwrap().as_u64(), Some(2));
        assert_eq!(e.get("data").unwrap().as_str(), Some("a\"bA"));
        assert!(parse(b"{\"a\":1").is_none());
        assert!(parse(b"{} x").is_none());
        assert!(parse(&[b'['; 100]).is_none());
    }

    #[test]
    fn writes_a_line() {
        let mut w = Writer::new();
        w.str("a", "x\"y");
        w.begin("o");
        w.u64("n", 3);
        w.f64("f", 1.5);
        w.end();
        w.u64s("l", &[1, 2]);
        let line = w.finish();
        assert_eq!(line, r#"{"a":"x\"y","o":{"n":3,"f":1.500},"l":[1,2]}"#);
        assert!(parse(line.as_bytes()).is_some());
    }
}

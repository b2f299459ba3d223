//! A strict little JSON reader for the server's answers, and the writer of
//! the report line.
//!
//! The reader builds no tree: a caller walks the document, taking the
//! members it wants and skipping (still checking) the rest. Enough for
//! `{"session":"…"}` and
//! `{"peer":"online","events":[{"seq":2,"type":"message","data":"…"}]}`:
//! objects, arrays, strings with escapes, numbers, `true`, `false`, `null`.
//! Nesting is bounded by [`DEPTH_MAX`]. The document is checked to be
//! UTF-8 once, as a whole; strings without escapes then borrow from it,
//! so reading a poll answer allocates nothing: the
//! generator's own core is the limit of a relay run, and every
//! instruction there is a message less per second.

use super::http::find_control;
use std::borrow::Cow;

/// Deepest nesting accepted; pairlink's answers nest three levels.
const DEPTH_MAX: usize = 16;

/// Walks one JSON document. Every method that fails (`None`) leaves the
/// reader somewhere in the middle: the document is then not valid JSON,
/// or not what the caller expected, and is given up.
pub struct Reader<'a> {
    /// The document, valid UTF-8.
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
    /// Objects and arrays open around the current position.
    depth: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`; `None` if they are not UTF-8.
    pub fn new(bytes: &'a [u8]) -> Option<Reader<'a>> {
        let text = std::str::from_utf8(bytes).ok()?;
        Some(Reader {
            text,
            bytes,
            at: 0,
            depth: 0,
        })
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        self.ws();
        (self.bytes.get(self.at) == Some(&b)).then(|| self.at += 1)
    }

    /// The next byte that is not white space, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.bytes.get(self.at).copied()
    }

    /// Only white space is left: the document is whole.
    pub fn end(&mut self) -> Option<()> {
        self.ws();
        (self.at == self.bytes.len()).then_some(())
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= DEPTH_MAX).then_some(())
    }

    /// Reads an object: `member` gets each key in order, and must read or
    /// [`skip`](Reader::skip) its value.
    pub fn object(
        &mut self,
        mut member: impl FnMut(&mut Reader<'a>, Cow<'a, str>) -> Option<()>,
    ) -> Option<()> {
        self.eat(b'{')?;
        self.enter()?;
        if self.eat(b'}').is_none() {
            loop {
                self.ws();
                let key = self.string()?;
                self.eat(b':')?;
                member(self, key)?;
                if self.eat(b',').is_none() {
                    self.eat(b'}')?;
                    break;
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// Reads an array: `item` is called at each element, and must read or
    /// [`skip`](Reader::skip) it.
    pub fn array(&mut self, mut item: impl FnMut(&mut Reader<'a>) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        self.enter()?;
        if self.eat(b']').is_none() {
            loop {
                item(self)?;
                if self.eat(b',').is_none() {
                    self.eat(b']')?;
                    break;
                }
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// Reads any one value and forgets it.
    pub fn skip(&mut self) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(|r, _| r.skip()),
            b'[' => self.array(Reader::skip),
            b'"' => self.string().map(drop),
            b't' => self.word(b"true"),
            b'f' => self.word(b"false"),
            b'n' => self.word(b"null"),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            _ => None,
        }
    }

    /// `Some(Some(text))` for a string value, `Some(None)` for any other
    /// value (skipped): a member whose type only matters when it is a
    /// string.
    pub fn str_or_skip(&mut self) -> Option<Option<Cow<'a, str>>> {
        if self.peek()? == b'"' {
            self.string().map(Some)
        } else {
            self.skip().map(|()| None)
        }
    }

    /// A number value that is an unsigned integer (exact below 2^53, as
    /// pairlink's are); `None` for any other value.
    pub fn u64(&mut self) -> Option<u64> {
        self.ws();
        let n = self.number()?;
        (n >= 0.0 && n.fract() == 0.0 && n < 9.007e15).then_some(n as u64)
    }

    fn number(&mut self) -> Option<f64> {
        if !matches!(self.bytes.get(self.at)?, b'-' | b'0'..=b'9') {
            return None;
        }
        let start = self.at;
        while let Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') = self.bytes.get(self.at) {
            self.at += 1;
        }
        let text = &self.bytes[start..self.at];
        // Event numbers are short runs of digits: add them up rather than
        // go through the float parser.
        if text.len() <= 15 && text.iter().all(u8::is_ascii_digit) {
            let n = text.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            return Some(n as f64);
        }
        std::str::from_utf8(text).ok()?.parse().ok()
    }

    fn word(&mut self, w: &[u8]) -> Option<()> {
        if self.bytes[self.at..].starts_with(w) {
            self.at += w.len();
            Some(())
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
        let plain = find_control(&self.bytes[start..], b'"', b'\\')?;
        if self.bytes[start + plain] == b'"' {
            self.at = start + plain + 1;
            // Between two quotes (ASCII) of a UTF-8 text: whole characters.
            return self.text.get(start..start + plain).map(Cow::Borrowed);
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

    /// The document is one whole JSON value.
    fn valid(bytes: &[u8]) -> bool {
        Reader::new(bytes).is_some_and(|mut r| r.skip().and_then(|()| r.end()).is_some())
    }

    #[test]
    fn reads_a_poll_answer() {
        let doc = br#" {"peer":"online","x":[1,{"y":null}],"events":[{"seq":2,"type":"message","data":"a\"b\u0041"}]} "#;
        let mut r = Reader::new(doc).unwrap();
        let mut got = Vec::new();
        r.object(|r, key| match &*key {
            "events" => r.array(|r| {
                let (mut seq, mut data) = (None, None);
                r.object(|r, key| match &*key {
                    "seq" => r.u64().map(|n| seq = Some(n)),
                    "data" => r.str_or_skip().map(|d| data = d),
                    _ => r.skip(),
                })?;
                got.push((seq?, data?));
                Some(())
            }),
            "peer" => r
                .str_or_skip()
                .map(|p| assert_eq!(p.as_deref(), Some("online"))),
            _ => r.skip(),
        })
        .unwrap();
        r.end().unwrap();
        assert_eq!(got, [(2, Cow::Owned::<str>("a\"bA".into()))]);
        assert!(valid(b"[1.5e3,-2,true,false,null,\"\",{}]"));
        assert!(!valid(b"{\"a\":1"));
        assert!(!valid(b"{} x"));
        assert!(!valid(b"\"a\nb\""));
        assert!(!valid(&[b'['; 100]));
        assert!(!valid(b"\"\xff\""));
        let read = |doc: &'static [u8]| Reader::new(doc).unwrap();
        assert_eq!(read(b"1.5").u64(), None);
        assert_eq!(read(b"\"1\"").u64(), None);
        assert_eq!(read(b" 12").u64(), Some(12));
        assert_eq!(read(b"7").str_or_skip(), Some(None));
        assert_eq!(read(b"tru").str_or_skip(), None);
        assert_eq!(
            read("\"été \\u00e9\"".as_bytes()).str_or_skip(),
            Some(Some(Cow::Owned("été é".into())))
        );
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
        assert!(valid(line.as_bytes()));
    }
}

//! A small JSON encoder: enough for pairlink's responses, written by hand so
//! the server needs no serialisation framework.
//!
//! Strings are escaped as RFC 8259 requires: `"` and `\`, and every control
//! character below U+0020 (`\n`, `\r`, `\t`, `\b`, `\f` by name, the rest as
//! `\u00XX`). Everything else, non-ASCII included, passes through as UTF-8.

use super::swar;

/// The most bytes [`write_str`] writes for one byte of its input: a
/// control character becomes `\u00XX`.
pub const ESCAPED_BYTES_PER_BYTE_MAX: usize = 6;

/// Appends `s` as a quoted JSON string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut rest = s.as_bytes();
    // Copy the runs between escapes whole; find them a word at a time.
    while let Some(i) = swar::find(
        rest,
        |w| swar::below(w, 0x20) | swar::eq(w, b'"') | swar::eq(w, b'\\'),
        |b| b < 0x20 || b == b'"' || b == b'\\',
    ) {
        out.extend_from_slice(&rest[..i]);
        let b = rest[i];
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0C => b"\\f",
            _ => b"",
        };
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xF)]);
        } else {
            out.extend_from_slice(escape);
        }
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
}

/// Appends an unsigned integer.
pub fn write_u64(out: &mut Vec<u8>, n: u64) {
    if n < 10 {
        // One digit is common (sequence numbers, a young node's keys and
        // generations) and needs no buffer.
        out.push(b'0' + n as u8);
        return;
    }
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The body of an error response: `{"error":"<code>","message":"<text>"}`.
pub fn error_body(code: &str, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + code.len() + message.len());
    out.extend_from_slice(b"{\"error\":");
    write_str(&mut out, code);
    out.extend_from_slice(b",\"message\":");
    write_str(&mut out, message);
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(s: &str) -> String {
        let mut out = Vec::new();
        write_str(&mut out, s);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn escapes_what_json_requires() {
        let cases = [
            ("", r#""""#),
            ("plain", r#""plain""#),
            ("a\"b", r#""a\"b""#),
            ("a\\b", r#""a\\b""#),
            ("\n\r\t\u{8}\u{c}", r#""\n\r\t\b\f""#),
            ("\u{0}\u{1}\u{1f}", r#""\u0000\u0001\u001f""#),
            ("é ü 日本 🎉", "\"é ü 日本 🎉\""),
            ("/<>\u{7f}", "\"/<>\u{7f}\""),
            ("x\u{1b}[0m", r#""x\u001b[0m""#),
        ];
        for (input, want) in cases {
            assert_eq!(enc(input), want, "input {input:?}");
        }
    }

    #[test]
    fn every_control_character_is_escaped() {
        for c in 0u8..0x20 {
            let s = String::from(char::from(c));
            let e = enc(&s);
            assert!(e.bytes().all(|b| b >= 0x20), "{c:#x} gave {e:?}");
        }
    }

    #[test]
    fn integers() {
        for (n, want) in [
            (0, "0"),
            (7, "7"),
            (10, "10"),
            (u64::MAX, "18446744073709551615"),
        ] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, want.as_bytes());
        }
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            error_body("bad_pair", "pair id \"x\" is bad"),
            br#"{"error":"bad_pair","message":"pair id \"x\" is bad"}"#
        );
    }
}

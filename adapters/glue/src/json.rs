//! A minimal JSON reader for `config.get(key)`: finds a top-level key of the plugin's
//! configuration without allocating (but for the unescaped strings it writes into a buffer).

use crate::buf::Buf;

/// A cursor over JSON text.
struct Json<'a> {
    text: &'a [u8],
    i: usize,
}

/// What [`get`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    /// A string value, unescaped (UTF-8) into the caller's buffer.
    Unescaped,
    /// Any other value, as its JSON text.
    Raw(&'a [u8]),
}

/// The value of the top-level key `key` of the JSON object `text`: the first occurrence, if
/// the object is well-formed up to it. `out` is overwritten (it holds each key while comparing).
pub(crate) fn get<'a>(text: &'a [u8], key: &[u8], out: &mut Buf) -> Option<Value<'a>> {
    let mut j = Json { text, i: 0 };
    j.ws();
    if !j.eat(b'{') {
        return None;
    }
    loop {
        j.ws();
        if j.peek() != Some(b'"') {
            return None;
        }
        out.clear();
        if !j.string_into(out) {
            return None;
        }
        let same = out.as_slice() == key;
        j.ws();
        if !j.eat(b':') {
            return None;
        }
        j.ws();
        if same {
            if j.peek() == Some(b'"') {
                out.clear();
                return j.string_into(out).then_some(Value::Unescaped);
            }
            let start = j.i;
            if !j.skip_value() {
                return None;
            }
            return text.get(start..j.i).map(Value::Raw);
        }
        if !j.skip_value() {
            return None;
        }
        j.ws();
        if !j.eat(b',') {
            return None;
        }
    }
}

impl Json<'_> {
    fn peek(&self) -> Option<u8> {
        self.text.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Four hex digits of a `\u` escape.
    fn hex4(&mut self) -> Option<u32> {
        let mut v = 0;
        for _ in 0..4 {
            let d = self.peek()?;
            self.i += 1;
            v = v * 16
                + match d {
                    b'0'..=b'9' => (d - b'0') as u32,
                    b'a'..=b'f' => (d - b'a' + 10) as u32,
                    b'A'..=b'F' => (d - b'A' + 10) as u32,
                    _ => return None,
                };
        }
        Some(v)
    }

    /// Reads a string (at its opening quote), unescaped as UTF-8 into `out`. A high surrogate
    /// escape followed by a `\u` escape is combined with it (without checking the low one).
    fn string_into(&mut self, out: &mut Buf) -> bool {
        if !self.eat(b'"') {
            return false;
        }
        loop {
            let Some(c) = self.peek() else { return false };
            self.i += 1;
            match c {
                b'"' => return true,
                b'\\' => {
                    let Some(e) = self.peek() else { return false };
                    self.i += 1;
                    let byte = match e {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        b'b' => 8,
                        b'f' => 12,
                        b'u' => {
                            let Some(mut cp) = self.hex4() else {
                                return false;
                            };
                            if (0xD800..0xDC00).contains(&cp) && self.eat(b'\\') && self.eat(b'u') {
                                let Some(lo) = self.hex4() else { return false };
                                cp = 0x10000
                                    + ((cp - 0xD800) << 10)
                                    + (lo.wrapping_sub(0xDC00) & 0x3ff);
                            }
                            out.push_utf8(cp);
                            continue;
                        }
                        other => other,
                    };
                    out.push_byte(byte);
                }
                _ => out.push_byte(c),
            }
        }
    }

    /// Skips one value (string, number, literal, object or array) without validating it.
    fn skip_value(&mut self) -> bool {
        let mut depth = 0u32;
        loop {
            let Some(c) = self.peek() else {
                return depth == 0;
            };
            match c {
                b'"' => {
                    self.i += 1;
                    loop {
                        let Some(c) = self.peek() else { return false };
                        self.i += 1;
                        if c == b'\\' {
                            self.i += 1;
                        } else if c == b'"' {
                            break;
                        }
                    }
                }
                b'{' | b'[' => {
                    depth += 1;
                    self.i += 1;
                }
                b'}' | b']' => {
                    if depth == 0 {
                        return true;
                    }
                    depth -= 1;
                    self.i += 1;
                }
                b',' if depth == 0 => return true,
                _ => self.i += 1,
            }
            if depth == 0 {
                // A scalar ends at a delimiter; a closed container is complete.
                match self.peek() {
                    Some(b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') | None => return true,
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::{Value, get};
    use crate::buf::Buf;
    use std::string::String;

    /// `config.get(key)` as the guest sees it: the string's text, or the raw JSON of any other
    /// value.
    fn lookup(json: &str, key: &str) -> Option<String> {
        let mut out = Buf::new();
        let v = get(json.as_bytes(), key.as_bytes(), &mut out)?;
        let bytes = match v {
            Value::Unescaped => out.as_slice().to_vec(),
            Value::Raw(raw) => raw.to_vec(),
        };
        Some(String::from_utf8(bytes).expect("UTF-8"))
    }

    #[test]
    fn strings_are_unescaped_and_other_values_are_raw() {
        let cfg = r#" { "name" : "ab\"c\\d\n", "n": 42, "on":true, "nil": null,
            "list": [1, {"x": "]"}, 3], "obj": {"a": {"b": [ ]}}, "neg": -1.5e3 } "#;
        assert_eq!(lookup(cfg, "name").as_deref(), Some("ab\"c\\d\n"));
        assert_eq!(lookup(cfg, "n").as_deref(), Some("42"));
        assert_eq!(lookup(cfg, "on").as_deref(), Some("true"));
        assert_eq!(lookup(cfg, "nil").as_deref(), Some("null"));
        assert_eq!(
            lookup(cfg, "list").as_deref(),
            Some(r#"[1, {"x": "]"}, 3]"#)
        );
        assert_eq!(lookup(cfg, "obj").as_deref(), Some(r#"{"a": {"b": [ ]}}"#));
        assert_eq!(lookup(cfg, "neg").as_deref(), Some("-1.5e3"));
        assert_eq!(lookup(cfg, "missing"), None);
        // Only top-level keys count.
        assert_eq!(lookup(cfg, "x"), None);
        assert_eq!(lookup(cfg, "a"), None);
    }

    #[test]
    fn unicode_escapes_become_utf8_and_keys_are_unescaped_too() {
        let cfg = r#"{"caf\u00e9": "\u20ac \ud83d\ude00 \t\r\b\f\/", "k\u0041": 1}"#;
        assert_eq!(lookup(cfg, "café").as_deref(), Some("€ 😀 \t\r\u{8}\u{c}/"));
        assert_eq!(lookup(cfg, "kA").as_deref(), Some("1"));
    }

    #[test]
    fn the_first_of_duplicate_keys_wins() {
        assert_eq!(lookup(r#"{"a": 1, "a": 2}"#, "a").as_deref(), Some("1"));
    }

    #[test]
    fn malformed_text_up_to_the_key_finds_nothing() {
        for bad in [
            "",
            "[]",
            "\"a\"",
            "{",
            r#"{"a" 1}"#,
            r#"{"b": 1 "a": 2}"#,
            r#"{"b": "unterminated, "a": 1"#,
            r#"{a: 1}"#,
            r#"{"a": "\u12"}"#,
            r#"{"a": "bad escape at the end\"#,
        ] {
            assert_eq!(lookup(bad, "a"), None, "{bad:?}");
        }
        // The reader stops at the key: what follows it is not checked.
        assert_eq!(lookup(r#"{"a": 1, garbage"#, "a").as_deref(), Some("1"));
        assert_eq!(lookup(r#"{"a": 1"#, "a").as_deref(), Some("1"));
    }

    #[test]
    fn an_empty_key_and_an_empty_object_work() {
        assert_eq!(lookup(r#"{"": "e"}"#, "").as_deref(), Some("e"));
        assert_eq!(lookup("{}", ""), None);
        assert_eq!(lookup(r#"{"s": ""}"#, "s").as_deref(), Some(""));
    }
}

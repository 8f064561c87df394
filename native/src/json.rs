//! A scanner for the one JSON shape the fast path accepts: a flat object whose values
//! are strings or `null`, whose keys are all known and none repeated.
//!
//! Anything else (numbers, booleans, nested values, unknown or escaped keys, duplicate
//! keys, raw control characters, invalid escapes, lone surrogates, trailing data) is
//! `None`: the caller declines and the Python path (orjson) decides, including the dead
//! letter.  Within that subset the decoded strings are exactly what orjson gives, so the
//! two paths see the same payload.  The input is already known to be valid UTF-8.

use std::borrow::Cow;

/// One value of the accepted shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value<'a> {
    Null,
    Str(Cow<'a, str>),
}

#[inline]
fn is_ws(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() && is_ws(bytes[at]) {
        at += 1;
    }
    at
}

fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = bytes.get(at..at + 4)?;
    let mut value = 0u32;
    for &digit in digits {
        value = value * 16 + (digit as char).to_digit(16)?;
    }
    Some(value)
}

/// The index of the first `"`, `\\` or control byte at or after `at` (or the length):
/// eight bytes at a time.  In each mask below only bits above a true hit can be false
/// hits (the borrow runs upwards), so the lowest set bit is exact.
#[inline]
pub fn next_special(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        let hits = (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | word.wrapping_sub(ONES * 0x20) & !word)
            & HIGH;
        if hits != 0 {
            return at + (hits.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while at < bytes.len() && bytes[at] != b'"' && bytes[at] != b'\\' && bytes[at] >= 0x20 {
        at += 1;
    }
    at
}

/// A string starting after its opening quote: the value and the index after the closing
/// quote.  `None` for what orjson refuses (raw control characters, bad escapes, lone
/// surrogates) and for nothing else.
fn string<'a>(text: &'a str, start: usize) -> Option<(Cow<'a, str>, usize)> {
    let bytes = text.as_bytes();
    // Fast path: no escape before the closing quote, borrow the slice.
    let mut at = next_special(bytes, start);
    match bytes.get(at) {
        Some(b'"') => return Some((Cow::Borrowed(&text[start..at]), at + 1)),
        Some(b'\\') => {}
        _ => return None, // a control byte, or the end
    }
    let mut out = String::with_capacity(at - start + 16);
    out.push_str(&text[start..at]);
    let mut run = at;
    while at < bytes.len() {
        match bytes[at] {
            b'"' => {
                out.push_str(&text[run..at]);
                return Some((Cow::Owned(out), at + 1));
            }
            b'\\' => {
                out.push_str(&text[run..at]);
                let escape = *bytes.get(at + 1)?;
                at += 2;
                match escape {
                    b'"' => out.push('"'),
                    b'\\' => out.push('\\'),
                    b'/' => out.push('/'),
                    b'b' => out.push('\u{8}'),
                    b'f' => out.push('\u{c}'),
                    b'n' => out.push('\n'),
                    b'r' => out.push('\r'),
                    b't' => out.push('\t'),
                    b'u' => {
                        let unit = hex4(bytes, at)?;
                        at += 4;
                        let code = if (0xD800..0xDC00).contains(&unit) {
                            // A high surrogate must be followed by an escaped low one.
                            if bytes.get(at..at + 2)? != b"\\u" {
                                return None;
                            }
                            let low = hex4(bytes, at + 2)?;
                            if !(0xDC00..0xE000).contains(&low) {
                                return None;
                            }
                            at += 6;
                            0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                        } else if (0xDC00..0xE000).contains(&unit) {
                            return None;
                        } else {
                            unit
                        };
                        out.push(char::from_u32(code)?);
                    }
                    _ => return None,
                }
                run = at;
            }
            byte if byte < 0x20 => return None,
            _ => at = next_special(bytes, at),
        }
    }
    None
}

/// Parse `text` as a flat object of known keys; `slots[i]` receives the value of key
/// `keys[i]`.  Returns `false` (decline) for any other shape.
pub fn flat_object<'a>(text: &'a str, keys: &[&str], slots: &mut [Option<Value<'a>>]) -> bool {
    debug_assert_eq!(keys.len(), slots.len());
    for slot in slots.iter_mut() {
        *slot = None;
    }
    let bytes = text.as_bytes();
    let mut at = skip_ws(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return false;
    }
    at = skip_ws(bytes, at + 1);
    if bytes.get(at) == Some(&b'}') {
        return skip_ws(bytes, at + 1) == bytes.len();
    }
    loop {
        if bytes.get(at) != Some(&b'"') {
            return false;
        }
        // Keys: plain bytes up to the closing quote; an escaped key is not one we know.
        let key_start = at + 1;
        let mut key_end = key_start;
        while key_end < bytes.len() && bytes[key_end] != b'"' {
            if bytes[key_end] == b'\\' || bytes[key_end] < 0x20 {
                return false;
            }
            key_end += 1;
        }
        if key_end >= bytes.len() {
            return false;
        }
        let key = &bytes[key_start..key_end];
        // Length and first byte first: a full comparison only for the likely key.
        let Some(slot) = keys.iter().position(|known| {
            let known = known.as_bytes();
            known.len() == key.len() && known.first() == key.first() && known == key
        }) else {
            return false;
        };
        if slots[slot].is_some() {
            return false; // a duplicate key: orjson keeps the last, we do not guess
        }
        at = skip_ws(bytes, key_end + 1);
        if bytes.get(at) != Some(&b':') {
            return false;
        }
        at = skip_ws(bytes, at + 1);
        match bytes.get(at) {
            Some(b'"') => {
                let Some((value, next)) = string(text, at + 1) else {
                    return false;
                };
                slots[slot] = Some(Value::Str(value));
                at = next;
            }
            Some(b'n') if bytes.get(at..at + 4) == Some(b"null") => {
                slots[slot] = Some(Value::Null);
                at += 4;
            }
            _ => return false,
        }
        at = skip_ws(bytes, at);
        match bytes.get(at) {
            Some(b',') => at = skip_ws(bytes, at + 1),
            Some(b'}') => return skip_ws(bytes, at + 1) == bytes.len(),
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [&str; 3] = ["a", "b", "c"];

    fn parse(text: &str) -> Option<Vec<Option<Value<'_>>>> {
        let mut slots = vec![None, None, None];
        flat_object(text, &KEYS, &mut slots).then_some(slots)
    }

    fn s(text: &str) -> Option<Value<'_>> {
        Some(Value::Str(Cow::Borrowed(text)))
    }

    #[test]
    fn accepts_the_flat_shape() {
        assert_eq!(
            parse(" {\"a\": \"x\" , \"c\":null}\n").unwrap(),
            vec![s("x"), None, Some(Value::Null)]
        );
        assert_eq!(parse("{}").unwrap(), vec![None, None, None]);
        assert_eq!(
            parse(r#"{"a":"\u00e9\ud83d\ude00\n\/"}"#).unwrap()[0],
            s("é😀\n/")
        );
        // Escapes and specials on both sides of 8-byte word boundaries.
        let long = r#"{"b":"xxxxxxxxxxxxxxxxxxxxx\"yyyyyyyyy\u00e9é\\","c":"0123456789abcdef"}"#;
        let slots = parse(long).unwrap();
        assert_eq!(
            slots[1],
            Some(Value::Str(Cow::Owned(
                "xxxxxxxxxxxxxxxxxxxxx\"yyyyyyyyyéé\\".to_owned()
            )))
        );
        assert_eq!(slots[2], s("0123456789abcdef"));
    }

    #[test]
    fn declines_everything_else() {
        for text in [
            r#"{"a":1}"#,
            r#"{"a":"x","a":"y"}"#,
            r#"{"d":"x"}"#,
            r#"{"\u0061":"x"}"#,
            r#"{"a":["x"]}"#,
            r#"{"a":"x"} x"#,
            r#"{"a":"x",}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00x"}"#,
            r#"{"a":"\x"}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":"x""#,
            r#"{"a":nul}"#,
            r#"["a"]"#,
            "",
        ] {
            assert!(parse(text).is_none(), "{text}");
        }
    }
}

//! Diagnostic text: tokens for phrase matching (consumer/textmatch.py `tokenize`) and the
//! SMTP reply and enhanced codes (consumer/smtp.py).
//!
//! The code patterns run on bytes: an ASCII text as it is, any other text through
//! `Unicode::code_window`, which stands one ASCII byte in for each character with the
//! same meaning to smtp.py's patterns (a word character, or neither word, space nor
//! digit) and declines the characters that could change a match (Unicode spaces and
//! digits, `ſ`, `K`...).  Lower-casing follows Python's own table.  Within those limits
//! the regular expressions of smtp.py reduce to the byte tests below.

/// Python's `str.isspace()` (and `re`'s `\s`) on ASCII: `\t\n\v\f\r`, the four
/// information separators `\x1c`..`\x1f`, and space.
#[inline]
pub fn is_space(byte: u8) -> bool {
    matches!(byte, b'\t'..=b'\r' | 0x1c..=0x1f | b' ')
}

/// `re`'s `\w` on ASCII.
#[inline]
fn is_word(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// textmatch.py `_TRANSLATE`: controls, DEL and ASCII punctuation except `_` become spaces.
const fn translate_table() -> [u8; 128] {
    let mut table = [0u8; 128];
    let mut byte = 0;
    while byte < 128 {
        let c = byte as u8;
        let punctuation = c.is_ascii_punctuation() && c != b'_';
        table[byte] = if c < 32 || c == 127 || punctuation {
            b' '
        } else {
            c.to_ascii_lowercase()
        };
        byte += 1;
    }
    table
}

static TRANSLATE: [u8; 128] = translate_table();

/// A tokenised diagnostic, as textmatch.py's `TokenText`: `padded` is `b" "` + the words
/// joined by single spaces + `b" "`; `spans` are the words' ranges in `padded`.
#[derive(Default)]
pub struct Tokens {
    pub padded: Vec<u8>,
    pub spans: Vec<(u32, u32)>,
    start: Option<usize>,
}

/// What Python's `str.lower()` and `re` say about non-ASCII characters, as tables handed
/// over by consumer/fastpath.py (so they follow the running Python's Unicode version).
pub struct Unicode {
    /// Basic plane: 0 = lower-cases to itself, `u32::MAX` = decline (no single-character
    /// lower case, or one that depends on context like `Σ`), else the lower case.
    lower: Vec<u32>,
    /// Basic plane: the ASCII stand-in for the code patterns of smtp.py: `q` for a `\w`
    /// character, `#` for any other, 0 = decline (`\s`, `\d`, a digit, or a character
    /// that matches an ASCII letter or sign of the patterns case-insensitively).
    code: Vec<u8>,
}

impl Unicode {
    /// From consumer/fastpath.py's strings: character `i` of `lower` and of `code` is
    /// about code point `first + i` (`'\0'`: identity / no meaning to the patterns).
    pub fn new(first: u32, lower: &str, no_lower: &[u32], code: &str) -> Result<Self, String> {
        if first != 0x80
            || lower.chars().count() != 0x10000 - 0x80
            || code.chars().count() != 0x10000 - 0x80
        {
            return Err("unicode tables must cover U+0080..U+FFFF".to_owned());
        }
        let mut table = Unicode {
            lower: vec![0; 0x10000],
            code: vec![b'#'; 0x10000],
        };
        for ((slot, point), ch) in table.lower[0x80..]
            .iter_mut()
            .zip(0x80u32..)
            .zip(lower.chars())
        {
            if ch != '\0' && ch as u32 != point {
                *slot = ch as u32;
            }
        }
        for &point in no_lower {
            if let Some(slot) = table.lower.get_mut(point as usize) {
                *slot = u32::MAX;
            }
        }
        for (slot, ch) in table.code[0x80..].iter_mut().zip(code.chars()) {
            *slot = match ch {
                '\u{1}' => b'q',
                '\u{2}' => 0,
                _ => b'#',
            };
        }
        Ok(table)
    }

    /// A table for ASCII text only (every non-ASCII character declines).
    pub fn ascii_only() -> Self {
        Unicode {
            lower: vec![u32::MAX; 0x10000],
            code: vec![0; 0x10000],
        }
    }

    fn lower(&self, ch: char) -> Option<char> {
        match *self.lower.get(ch as usize)? {
            0 => Some(ch),
            u32::MAX => None,
            code => char::from_u32(code),
        }
    }

    /// The first `limit` characters of `text`, one byte each, as the code patterns see
    /// them (see `code`); `false` to decline.
    pub fn code_window(&self, text: &str, limit: usize, out: &mut Vec<u8>) -> bool {
        out.clear();
        for ch in text.chars().take(limit) {
            let byte = if ch.is_ascii() {
                ch as u8
            } else {
                self.code.get(ch as usize).copied().unwrap_or(0)
            };
            if byte == 0 && !ch.is_ascii() {
                return false;
            }
            out.push(byte);
        }
        true
    }
}

impl Tokens {
    /// Fill from the ASCII prefix `text` (already cut to the match limit).
    pub fn fill(&mut self, text: &[u8]) {
        // The same as `begin`, `push` per byte, `finish`, on a buffer sized up front.
        let Tokens { padded, spans, .. } = self;
        spans.clear();
        padded.clear();
        padded.resize(text.len() + 2, b' ');
        let mut end = 1;
        let mut start = 0;
        let mut in_word = false;
        for &byte in text {
            let mapped = TRANSLATE[(byte & 0x7f) as usize];
            if mapped != b' ' {
                if !in_word {
                    start = end;
                    in_word = true;
                }
                padded[end] = mapped;
                end += 1;
            } else if in_word {
                spans.push((start as u32, end as u32));
                padded[end] = b' ';
                end += 1;
                in_word = false;
            }
        }
        if in_word {
            spans.push((start as u32, end as u32));
            padded[end] = b' ';
            end += 1;
        }
        padded.truncate(if spans.is_empty() { 2 } else { end });
    }

    /// Fill from the first `limit` characters of `text`, lower-casing non-ASCII ones
    /// through Python's own table; `false` (decline) for a character it has no single
    /// lower-case form for.
    pub fn fill_unicode(&mut self, text: &str, limit: usize, unicode: &Unicode) -> bool {
        self.begin();
        for ch in text.chars().take(limit) {
            if ch.is_ascii() {
                self.push(TRANSLATE[ch as usize]);
                continue;
            }
            let Some(lower) = unicode.lower(ch) else {
                return false;
            };
            if lower.is_ascii() {
                self.push(TRANSLATE[lower as usize]);
            } else {
                let mut buffer = [0u8; 4];
                for &byte in lower.encode_utf8(&mut buffer).as_bytes() {
                    self.push(byte);
                }
            }
        }
        self.finish();
        true
    }

    fn begin(&mut self) {
        self.padded.clear();
        self.spans.clear();
        self.padded.push(b' ');
        self.start = None;
    }

    /// One byte of the translated text: a space ends a word, anything else extends one.
    #[inline(always)]
    fn push(&mut self, byte: u8) {
        if byte == b' ' {
            if let Some(begin) = self.start.take() {
                self.spans.push((begin as u32, self.padded.len() as u32));
                self.padded.push(b' ');
            }
        } else {
            if self.start.is_none() {
                self.start = Some(self.padded.len());
            }
            self.padded.push(byte);
        }
    }

    fn finish(&mut self) {
        if let Some(begin) = self.start.take() {
            self.spans.push((begin as u32, self.padded.len() as u32));
            self.padded.push(b' ');
        }
        if self.spans.is_empty() {
            self.padded.push(b' '); // b" " + b"" + b" "
        }
    }

    pub fn token(&self, span: (u32, u32)) -> &[u8] {
        &self.padded[span.0 as usize..span.1 as usize]
    }

    /// Whether `needle` (`b" " + word...`) occurs starting at the space before token
    /// number `token`.
    pub fn has_at(&self, token: usize, needle: &[u8]) -> bool {
        self.spans
            .get(token)
            .is_some_and(|&(start, _)| self.padded[start as usize - 1..].starts_with(needle))
    }

    /// `needle in padded` for a needle of the form `b" " + word...` (every compiled
    /// phrase): such a needle can only start at the space before a token, so only the
    /// token starts are tried.
    pub fn has(&self, needle: &[u8]) -> bool {
        debug_assert!(needle.len() >= 2 && needle[0] == b' ' && needle[1] != b' ');
        let second = needle[1];
        self.spans.iter().any(|&(start, _)| {
            let at = start as usize;
            self.padded[at] == second && self.padded[at - 1..].starts_with(needle)
        })
    }
}

fn code_at(head: &[u8], at: usize) -> Option<u16> {
    let digits = head.get(at..at + 3)?;
    if !matches!(digits[0], b'2' | b'4' | b'5')
        || !digits[1].is_ascii_digit()
        || !digits[2].is_ascii_digit()
    {
        return None;
    }
    // (?=[\s-]|$): `$` also matches before a final newline, which is a space anyway.
    match head.get(at + 3) {
        None => {}
        Some(&next) if is_space(next) || next == b'-' => {}
        Some(_) => return None,
    }
    Some(
        digits
            .iter()
            .fold(0u16, |acc, d| acc * 10 + u16::from(d - b'0')),
    )
}

fn skip_space(head: &[u8], mut at: usize) -> usize {
    while at < head.len() && is_space(head[at]) {
        at += 1;
    }
    at
}

/// smtp.py `_PREFIX`: `\s*(?:smtp|x-[\w-]+)\s*;\s*`, case-insensitive, anchored at 0.
/// Returns where the rest of the text starts.
fn type_prefix(head: &[u8]) -> Option<usize> {
    let mut at = skip_space(head, 0);
    let rest = &head[at..];
    if rest.len() >= 4 && rest[..4].eq_ignore_ascii_case(b"smtp") {
        at += 4;
    } else if rest.len() >= 3
        && rest[..2].eq_ignore_ascii_case(b"x-")
        && (is_word(rest[2]) || rest[2] == b'-')
    {
        at += 3;
        while at < head.len() && (is_word(head[at]) || head[at] == b'-') {
            at += 1;
        }
    } else {
        return None;
    }
    at = skip_space(head, at);
    if head.get(at) != Some(&b';') {
        return None;
    }
    Some(skip_space(head, at + 1))
}

/// smtp.py `reply_code` on an ASCII text already cut to the scan limit.
pub fn reply_code(text: &[u8]) -> Option<u16> {
    let head = match type_prefix(text) {
        Some(start) => &text[start..],
        None => text,
    };
    // Fast path of smtp.py: the text starts with the code.
    if head.len() >= 3
        && head[..3].iter().all(u8::is_ascii_digit)
        && matches!(head[0], b'2' | b'4' | b'5')
        && (head.len() == 3 || matches!(head[3], b' ' | b'-' | b'\t'))
    {
        return code_at(&head[..3], 0);
    }
    // _REPLY.search: the leftmost start of `^`, `[:'"(\[=]\s*` or `\bsaid\s+`, each
    // followed by the code; every quantifier is deterministic here (no backtracking can
    // change the outcome), so trying each start position in order is the same search.
    for at in 0..head.len() {
        if at == 0 {
            if let Some(code) = code_at(head, 0) {
                return Some(code);
            }
        }
        let byte = head[at];
        if matches!(byte, b':' | b'\'' | b'"' | b'(' | b'[' | b'=') {
            if let Some(code) = code_at(head, skip_space(head, at + 1)) {
                return Some(code);
            }
        }
        if (byte == b's' || byte == b'S')
            && (at == 0 || !is_word(head[at - 1]))
            && head.len() >= at + 4
            && head[at..at + 4].eq_ignore_ascii_case(b"said")
        {
            let after = skip_space(head, at + 4);
            if after > at + 4 {
                if let Some(code) = code_at(head, after) {
                    return Some(code);
                }
            }
        }
    }
    None
}

/// smtp.py `enhanced_code` on an ASCII text already cut to the scan limit:
/// `(?<![\d.])([245])\.([0-7])\.(\d{1,3})(?!\.?\d)`, the detail without leading zeros.
pub fn enhanced_code(text: &[u8], out: &mut String) -> bool {
    let n = text.len();
    let mut at = 0;
    while at + 4 < n {
        let class = text[at];
        if matches!(class, b'2' | b'4' | b'5')
            && text[at + 1] == b'.'
            && (b'0'..=b'7').contains(&text[at + 2])
            && text[at + 3] == b'.'
            && text[at + 4].is_ascii_digit()
            && (at == 0 || !(text[at - 1].is_ascii_digit() || text[at - 1] == b'.'))
        {
            let start = at + 4;
            let mut end = start;
            while end < n && text[end].is_ascii_digit() {
                end += 1;
            }
            // A shorter detail would be followed by a digit, so only the whole run can
            // match; it must be 1-3 digits and not continue with `.digit`.
            let continues = end + 1 < n && text[end] == b'.' && text[end + 1].is_ascii_digit();
            if end - start <= 3 && !continues {
                out.clear();
                out.push(class as char);
                out.push('.');
                out.push(text[at + 2] as char);
                out.push('.');
                let detail = &text[start..end];
                let significant = detail
                    .iter()
                    .position(|&d| d != b'0')
                    .unwrap_or(detail.len() - 1);
                for &digit in &detail[significant..] {
                    out.push(digit as char);
                }
                return true;
            }
        }
        at += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enhanced(text: &str) -> Option<String> {
        let mut out = String::new();
        enhanced_code(text.as_bytes(), &mut out).then_some(out)
    }

    #[test]
    fn reply_codes() {
        assert_eq!(reply_code(b"550 5.1.1 user unknown"), Some(550));
        assert_eq!(reply_code(b"smtp; 452-4.2.2 full"), Some(452));
        assert_eq!(reply_code(b"X-Postfix; host said: 550 no"), Some(550));
        assert_eq!(reply_code(b"host mx said 421 later"), Some(421));
        assert_eq!(reply_code(b"unsaid 421 later"), None);
        assert_eq!(reply_code(b"(550)"), None);
        assert_eq!(reply_code(b"[ 550-x"), Some(550));
        assert_eq!(reply_code(b"5501 no"), None);
        assert_eq!(reply_code(b"550"), Some(550));
        assert_eq!(reply_code(b"650 no"), None);
    }

    #[test]
    fn enhanced_codes() {
        assert_eq!(enhanced("550 5.1.1 x").as_deref(), Some("5.1.1"));
        assert_eq!(enhanced("4.16.55.1").as_deref(), None);
        assert_eq!(enhanced("10.5.1.1").as_deref(), None);
        assert_eq!(enhanced("5.7.001").as_deref(), Some("5.7.1"));
        assert_eq!(enhanced("5.7.000").as_deref(), Some("5.7.0"));
        assert_eq!(enhanced("5.7.1234").as_deref(), None);
        assert_eq!(enhanced("5.7.12.3 then 4.2.2").as_deref(), Some("4.2.2"));
        assert_eq!(enhanced("5.8.1").as_deref(), None);
        assert_eq!(enhanced("x5.1.1.").as_deref(), Some("5.1.1"));
    }

    #[test]
    fn tokens() {
        let mut tokens = Tokens::default();
        tokens.fill(b"550-5.1.1 <A@B.com>: User_unknown\t!");
        assert_eq!(tokens.padded, b" 550 5 1 1 a b com user_unknown ");
        assert_eq!(tokens.token(tokens.spans[7]), b"user_unknown");
        assert!(tokens.has(b" user_unknown "));
        assert!(tokens.has(b" b com user_"));
        assert!(!tokens.has(b" com user "));
        assert!(tokens.has(b" 550 5 "));
        tokens.fill(b"...");
        assert_eq!(tokens.padded, b"  ");
        assert!(!tokens.has(b" x"));
    }
}

//! One input line to its output lines, for the flat generic MTA shape only
//! (providers/dsn.py, `finalRecipient` + `action`), following consumer/pipeline.py,
//! providers/base.py, classify.py, mailbox.py, rules.py and suppression.py step by step.
//!
//! `None` means "declined": the line is not plainly the common case, and the caller
//! hands it to the Python path, which produces the event or the dead letter.  Every
//! check below that returns `None` stands for a case where Python would fail, or where
//! its Unicode-aware string handling could differ from an ASCII reading.

use std::ops::Range;

use crate::blake2b::hex_digest;
use crate::json::{flat_object, next_special, Value};
use crate::tables::{Bits, CodeEntry, Kind, Name, Rule, Tables};
use crate::text::{enhanced_code, reply_code, Tokens};
use crate::time::parse_time;

/// The fields of the flat shape, in the order of `Tables::keys` (dsn.py `_FLAT`).
pub const ROLES: [&str; 10] = [
    "recipient",
    "original",
    "action",
    "status",
    "diagnostic",
    "remote",
    "date",
    "reporting",
    "message",
    "log",
];
const RECIPIENT: usize = 0;
const ORIGINAL: usize = 1;
const ACTION: usize = 2;
const STATUS: usize = 3;
const DIAGNOSTIC: usize = 4;
const REMOTE: usize = 5;
const DATE: usize = 6;
const REPORTING: usize = 7;
const MESSAGE: usize = 8;
const LOG: usize = 9;

/// What the lines of one batch share: the receive time that stands in for a missing
/// event time, the size limit, the JSON keys of the flat shape, and the Kafka record the
/// line came from (the worker's `SourceRef`; `None` writes `"source":null`).
pub struct Batch<'a> {
    pub received_at: &'a str,
    pub max_bytes: usize,
    pub source: Option<Source<'a>>,
    keys: Vec<&'a str>,
}

/// models.py `SourceRef`: where a Kafka record came from, copied into both outputs.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i64,
    pub offset: i64,
}

/// The values of one accepted line's event (and update), as the Python path's
/// `NormalizedEvent` and `SuppressionUpdate` hold them, for a caller that needs more
/// than the JSON (the worker's record keys and metrics labels).  `needs_review` is
/// `Some` exactly when there is a suppression update.
pub struct Fields<'a> {
    pub event_id: &'a str,
    pub provider_event_id: &'a str,
    pub occurred_at: &'a str,
    pub email: &'a str,
    pub domain: &'a str,
    pub mailbox_provider: &'a str,
    pub message_id: Option<&'a str>,
    pub status: &'a str,
    pub recipient_state: Option<&'a str>,
    pub provider_state: &'a str,
    pub smtp_code: Option<u16>,
    pub enhanced_code: Option<&'a str>,
    pub diagnostic: Option<&'a str>,
    pub remote_mta: Option<&'a str>,
    pub classified_by: &'a str,
    pub rule_id: Option<&'a str>,
    pub needs_review: Option<bool>,
}

/// Buffers reused from line to line (no allocation per line once they have grown).
#[derive(Default)]
pub struct Scratch {
    tokens: Tokens,
    rule_bits: Bits,
    mailbox_bits: Bits,
    hash_input: Vec<u8>,
    hex: Vec<u8>,
    email: String,
    action: String,
    occurred: String,
    event_key: String,
    key: String,
    group_key: String,
    window: Vec<u8>,
}

/// Where one accepted line's outputs are: the normalized event (in the events buffer)
/// and, for a Bounce, the suppression update (in the updates buffer), each one JSON
/// document as orjson writes it.
pub struct Output {
    pub event: Range<usize>,
    pub suppression: Option<Range<usize>>,
}

fn printable(text: &str) -> bool {
    text.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// base.py `normalize_email`, for printable ASCII input, into `out`.
fn normalize_email(value: &str, max_chars: usize, out: &mut String) -> bool {
    if !printable(value) {
        return false;
    }
    let mut text = value.trim_matches(' ');
    if text[..text.len().min(12)].contains(';') {
        match text.split_once(';') {
            Some((_, tail)) => text = tail.trim_matches(' '),
            None => return false,
        }
    }
    let text = text.trim_matches(['<', '>']).trim_matches(' ');
    out.clear();
    out.push_str(text);
    out.make_ascii_lowercase();
    out.len() <= max_chars && valid_address(out)
}

/// The printable ASCII bytes `_ADDRESS` refuses in a local part (`\s<>()[],;:\\"@`).
static NOT_IN_LOCAL_PART: [bool; 256] = {
    let mut table = [false; 256];
    let refused = b" <>()[],;:\\\"@";
    let mut index = 0;
    while index < refused.len() {
        table[refused[index] as usize] = true;
        index += 1;
    }
    table
};

/// base.py `_ADDRESS` full match, on lower-case printable ASCII.
fn valid_address(text: &str) -> bool {
    let Some((local, domain)) = text.split_once('@') else {
        return false;
    };
    if local.is_empty() || local.len() > 64 || local.bytes().any(|b| NOT_IN_LOCAL_PART[b as usize])
    {
        return false;
    }
    let Some((rest, top)) = domain.rsplit_once('.') else {
        return false;
    };
    let inner = |b: u8| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'_';
    for label in rest.split('.') {
        let bytes = label.as_bytes();
        if bytes.is_empty()
            || bytes.len() > 63
            || !inner(bytes[0])
            || !inner(bytes[bytes.len() - 1])
            || !bytes.iter().all(|&b| inner(b) || b == b'-')
        {
            return false;
        }
    }
    let top = top.as_bytes();
    !top.is_empty()
        && top.len() <= 63
        && top[0].is_ascii_lowercase()
        && top
            .iter()
            .all(|&b| b.is_ascii_digit() || b.is_ascii_lowercase() || b == b'-')
}

/// `text[:limit]` in characters.
fn cut_chars(text: &str, limit: usize) -> &str {
    if text.len() <= limit {
        return text; // no more characters than bytes
    }
    match text.char_indices().nth(limit) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// dsn.py `_strip_type`: `dns; mx.example.net` -> `mx.example.net`.
fn strip_type(value: &str) -> &str {
    match value.split_once(';') {
        Some((head, tail)) if head.chars().count() < 16 => tail.trim_matches(' '),
        _ => value.trim_matches(' '),
    }
}

/// orjson's string form: `"` and `\` escaped, `\b \t \n \f \r` short, other controls as
/// `\u00xx`, everything else (DEL, `/`, non-ASCII) as is.
fn push_json_str(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut run = 0;
    loop {
        // The bytes to escape are exactly the ones the JSON scanner stops at.
        let at = next_special(bytes, run);
        out.extend_from_slice(&bytes[run..at]);
        let Some(&byte) = bytes.get(at) else {
            break;
        };
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x08 => out.extend_from_slice(b"\\b"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            0x0c => out.extend_from_slice(b"\\f"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[(byte >> 4) as usize]);
                out.push(HEX[(byte & 15) as usize]);
            }
        }
        run = at + 1;
    }
    out.push(b'"');
}

fn push_opt_str(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        Some(text) => push_json_str(out, text),
        None => out.extend_from_slice(b"null"),
    }
}

/// rules.py `_code_fits`.
fn code_fits(pattern: &str, reply: Option<u16>, enhanced: Option<&str>) -> bool {
    let first = pattern.chars().next();
    if pattern.ends_with("xx") {
        if let Some(reply) = reply {
            return first == char::from_digit(u32::from(reply / 100), 10);
        }
        return enhanced.is_some_and(|code| code.chars().next() == first);
    }
    if pattern.contains('.') {
        let Some(code) = enhanced else {
            return false;
        };
        if pattern.starts_with("x.") {
            return code.get(1..) == pattern.get(1..);
        }
        return code == pattern;
    }
    let mut digits = [0u8; 5];
    reply.is_some_and(|reply| {
        int_text(u32::from(reply), &mut digits).as_bytes() == pattern.as_bytes()
    })
}

/// The decided status and state, and what decided them.
struct Classification<'t> {
    status: Name,
    state: Option<Name>,
    by: Name,
    rule_id: Option<&'t str>,
}

/// What the codes and the text say, the inputs of `classify`.
struct Evidence<'a> {
    kind: Kind,
    has_text: bool,
    reply: Option<u16>,
    enhanced: Option<&'a str>,
    mailbox: &'a str,
}

/// The decimal text of `value` inside `buffer`.
fn int_text(value: u32, buffer: &mut [u8]) -> &str {
    let mut at = buffer.len();
    let mut rest = value;
    loop {
        at -= 1;
        buffer[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 || at == 0 {
            break;
        }
    }
    std::str::from_utf8(&buffer[at..]).unwrap_or("")
}

/// Join `parts` with `\x1f` (pipeline.py `event_id`, base.py `synthetic_id`) and hash.
fn hash_parts(parts: &[&str], size: usize, input: &mut Vec<u8>, hex: &mut Vec<u8>) {
    input.clear();
    for (index, part) in parts.iter().enumerate() {
        if index > 0 {
            input.push(0x1f);
        }
        input.extend_from_slice(part.as_bytes());
    }
    hex.clear();
    hex_digest(input, size, hex);
}

impl Tables {
    /// rules.py `RuleSet.match`: the first rule in file order whose phrase is found and
    /// whose narrowing conditions hold.
    fn match_rule(&self, text: &Tokens, bits: &mut Bits, evidence: &Evidence<'_>) -> Option<&Rule> {
        self.rule_index.numbers_in(text, bits);
        for number in bits.iter() {
            let rule = self.rules.get(number as usize)?;
            if !rule.all.iter().all(|needle| text.has(needle)) {
                continue;
            }
            if rule.unless.iter().any(|needle| text.has(needle)) {
                continue;
            }
            if !rule.providers.is_empty() && !rule.providers.iter().any(|p| p == evidence.mailbox) {
                continue;
            }
            if rule.codes.is_empty()
                || rule
                    .codes
                    .iter()
                    .any(|c| code_fits(c, evidence.reply, evidence.enhanced))
            {
                return Some(rule);
            }
        }
        None
    }

    /// mailbox.py `_domain_group`.
    fn domain_group(&self, domain: &str, key: &mut String) -> Option<&str> {
        if let Some(group) = self.mailbox_domains.get(domain) {
            return Some(group);
        }
        let (stem, rest) = domain.split_once('.')?;
        if rest.is_empty()
            || !rest.split('.').all(|l| {
                !l.is_empty() && l.len() <= 3 && l.bytes().all(|b| b.is_ascii_alphabetic())
            })
        {
            return None;
        }
        key.clear();
        key.push_str(stem);
        key.push_str(".*");
        self.mailbox_domains.get(key.as_str()).map(String::as_str)
    }

    /// mailbox.py `_host_group`: the longest listed suffix of whole labels.
    fn host_group(&self, host: &str, key: &mut String) -> Option<&str> {
        key.clear();
        key.push_str(host);
        key.make_ascii_lowercase();
        let trimmed = key.trim_end_matches('.');
        let labels = trimmed.split('.').count();
        let mut start = 0;
        for _ in 0..labels.saturating_sub(1) {
            if let Some(group) = self.mailbox_hosts.get(&trimmed[start..]) {
                return Some(group);
            }
            start += trimmed[start..].find('.')? + 1;
        }
        None
    }

    /// mailbox.py `mailbox_provider`; `None` (decline) where Python would raise.
    fn mailbox<'s>(
        &'s self,
        domain: &str,
        remote: Option<&str>,
        text: Option<&Tokens>,
        bits: &mut Bits,
        key: &mut String,
    ) -> Option<&'s str> {
        if let Some(group) = self.domain_group(domain, key) {
            return Some(group);
        }
        if let Some(remote) = remote.filter(|r| !r.is_empty()) {
            if !remote.trim_matches(' ').is_empty() {
                let after = remote.split_once(';').map_or(remote, |(_, tail)| tail);
                // `.strip().split()[0]`: an IndexError in Python when nothing is left.
                let first = after.split(' ').find(|word| !word.is_empty())?;
                let host = first.trim_matches(['[', ']']);
                if !host.is_empty() {
                    if let Some(group) = self.host_group(host, key) {
                        return Some(group);
                    }
                }
            }
        }
        if let Some(text) = text {
            self.mailbox_tokens.numbers_in(text, bits);
            if let Some(first) = bits.first() {
                return self
                    .mailbox_token_groups
                    .get(first as usize)
                    .map(String::as_str);
            }
        }
        self.names
            .get(self.vocabulary.other as usize)
            .map(String::as_str)
    }

    /// rules.py `enhanced_entry`: `5.7.26` before `X.7.26`.
    fn enhanced_entry(&self, code: Option<&str>) -> Option<CodeEntry> {
        let code = code?;
        if let Some(entry) = self.enhanced.get(code) {
            return Some(*entry);
        }
        let mut key = [0u8; 16];
        let rest = code.get(1..)?.as_bytes();
        if rest.len() >= key.len() {
            return None;
        }
        key[0] = b'X';
        key[1..=rest.len()].copy_from_slice(rest);
        self.enhanced
            .get(std::str::from_utf8(&key[..=rest.len()]).ok()?)
            .copied()
    }

    /// rules.py `reply_entry`: `550` before `5xx`.
    fn reply_entry(&self, code: Option<u16>) -> Option<CodeEntry> {
        let mut digits = [0u8; 5];
        let text = int_text(u32::from(code?), &mut digits);
        if let Some(entry) = self.reply.get(text) {
            return Some(*entry);
        }
        let class = [text.as_bytes()[0], b'x', b'x'];
        self.reply.get(std::str::from_utf8(&class).ok()?).copied()
    }

    /// classify.py `classify` for an observation of the DSN parser (no provider fact,
    /// category or suppression semantics).
    fn classify(
        &self,
        evidence: &Evidence<'_>,
        text: &Tokens,
        bits: &mut Bits,
    ) -> Option<Classification<'_>> {
        let words = &self.vocabulary;
        let kind = evidence.kind;
        if kind == Kind::Delivered {
            // classify.py `_delivered`: only an auto-reply rule adds a state.
            let mut result = Classification {
                status: words.delivered,
                state: None,
                by: words.by_provider,
                rule_id: None,
            };
            if evidence.has_text {
                if let Some(rule) = self.match_rule(text, bits, evidence) {
                    if rule.state == words.auto_reply {
                        result.state = Some(words.auto_reply);
                        result.by = words.by_rule;
                        result.rule_id = Some(&rule.id);
                    }
                }
            }
            return Some(result);
        }
        let temporary = if kind == Kind::Deferred {
            true
        } else if let Some(reply) = evidence.reply.filter(|r| *r >= 400) {
            reply < 500
        } else if let Some(first) = evidence
            .enhanced
            .and_then(|e| e.bytes().next())
            .filter(|b| matches!(b, b'4' | b'5'))
        {
            first == b'4'
        } else {
            false
        };
        let mut keep_final = false;
        let mut held = false;
        let mut retrying: Option<Name> = None;
        let mut rule_id = None;
        let rule = if evidence.has_text {
            self.match_rule(text, bits, evidence)
        } else {
            None
        };
        let (mut state, by) = if let Some(rule) = rule {
            keep_final = rule.permanent;
            held = rule.held;
            retrying = rule.retrying;
            rule_id = Some(rule.id.as_str());
            (rule.state, words.by_rule)
        } else if let Some(entry) = self.enhanced_entry(evidence.enhanced) {
            // Specific or weak alike: a DSN observation has no provider category between them.
            retrying = Some(entry.retrying);
            (entry.final_state, words.by_enhanced)
        } else if let Some(entry) = self.reply_entry(evidence.reply) {
            retrying = Some(entry.retrying);
            (entry.final_state, words.by_reply)
        } else if evidence.has_text || kind == Kind::Deferred {
            (words.undetermined, words.by_fallback)
        } else {
            (words.unhandled, words.by_fallback)
        };
        if temporary && !keep_final && state != words.auto_reply {
            state = match retrying {
                Some(override_state) => override_state,
                None => (*self.temporary.get(state as usize)?)?,
            };
        }
        let status = if state == words.auto_reply {
            if held {
                words.deferred
            } else {
                words.delivered
            }
        } else if kind == Kind::Deferred {
            words.deferred
        } else {
            (*self.final_status.get(state as usize)?)?
        };
        Some(Classification {
            status,
            state: Some(state),
            by,
            rule_id,
        })
    }

    /// The outputs of one line appended to `events` and `updates`, or `None` to decline
    /// it (both buffers are then as they were).
    pub fn process(
        &self,
        line: &[u8],
        batch: &Batch<'_>,
        scratch: &mut Scratch,
        events: &mut Vec<u8>,
        updates: &mut Vec<u8>,
    ) -> Option<Output> {
        self.process_detailed(line, batch, scratch, events, updates, None)
    }

    /// `process`, and `detail` called with the values of an accepted line's outputs
    /// (just before it returns; never for a declined line).
    pub fn process_detailed(
        &self,
        line: &[u8],
        batch: &Batch<'_>,
        scratch: &mut Scratch,
        events: &mut Vec<u8>,
        updates: &mut Vec<u8>,
        detail: Option<&mut dyn FnMut(&Fields<'_>)>,
    ) -> Option<Output> {
        let marks = (events.len(), updates.len());
        let output = self.process_into(line, batch, scratch, events, updates, detail);
        if output.is_none() {
            events.truncate(marks.0);
            updates.truncate(marks.1);
        }
        output
    }

    /// What a batch of lines shares.
    pub fn batch<'a>(&'a self, received_at: &'a str, max_bytes: usize) -> Batch<'a> {
        Batch {
            received_at,
            max_bytes,
            source: None,
            keys: self.keys.iter().map(String::as_str).collect(),
        }
    }

    fn process_into(
        &self,
        line: &[u8],
        batch: &Batch<'_>,
        scratch: &mut Scratch,
        events: &mut Vec<u8>,
        updates: &mut Vec<u8>,
        detail: Option<&mut dyn FnMut(&Fields<'_>)>,
    ) -> Option<Output> {
        let Batch {
            received_at,
            max_bytes,
            source,
            ref keys,
        } = *batch;
        let Scratch {
            tokens,
            rule_bits,
            mailbox_bits,
            hash_input,
            hex,
            email,
            action,
            occurred,
            event_key,
            key,
            group_key,
            window,
        } = scratch;
        let limits = &self.limits;
        if line.len() > max_bytes || line.len() > limits.line_bytes {
            return None;
        }
        let text = std::str::from_utf8(line).ok()?;
        let mut slots: [Option<Value>; 10] = Default::default();
        if !flat_object(text, keys, &mut slots) {
            return None;
        }
        // Strings only: absent and null are both `None` here (Python's `None`).  The
        // fields dsn.py reads with `Obj.text` are cut at MAX_TEXT characters as there;
        // the address and the date are read raw.
        let mut fields: [Option<&str>; 10] = [None; 10];
        for (index, (field, slot)) in fields.iter_mut().zip(slots.iter()).enumerate() {
            if let Some(Value::Str(value)) = slot {
                let raw = matches!(index, RECIPIENT | DATE | ORIGINAL);
                *field = Some(if raw {
                    value.as_ref()
                } else {
                    cut_chars(value, limits.text_chars)
                });
            }
        }
        // dsn.py detection needs both keys; `finalRecipient: null` is a dead letter.
        let recipient = fields[RECIPIENT]?;
        let action_field = fields[ACTION]?;
        if !printable(action_field) {
            return None;
        }
        action.clear();
        action.push_str(action_field.trim_matches(' '));
        action.make_ascii_lowercase();
        let kind = *self.actions.get(action.as_str())?;
        if !normalize_email(recipient, limits.email_chars, email) {
            return None;
        }
        let domain = &email[email.rfind('@')? + 1..];

        // `if date`: absent, null and "" fall back to the receive time; `str(date)`.
        let (occurred_at, date_text): (&str, &str) = match fields[DATE] {
            None => (received_at, "None"),
            Some("") => (received_at, ""),
            Some(date) => {
                if !printable(date) {
                    return None;
                }
                occurred.clear();
                if !parse_time(date, limits.min_ts, limits.max_ts, occurred) {
                    return None;
                }
                (occurred.as_str(), date)
            }
        };

        let diagnostic = fields[DIAGNOSTIC];
        let status_field = fields[STATUS];
        if status_field.is_some_and(|s| !s.is_ascii()) {
            return None;
        }
        let remote = match fields[REMOTE] {
            Some(value) if !printable(value) => return None,
            Some(value) => Some(strip_type(value)),
            None => None,
        };
        let reporting = fields[REPORTING];
        let message_id = fields[MESSAGE];
        // Obj.ident: the first 256 characters of a non-empty string.
        let log_id = fields[LOG]
            .filter(|v| !v.is_empty())
            .map(|v| cut_chars(v, limits.ident_chars));

        // providerEventId: `{reporting}:{log id}:{email}`, else synthetic_id(...).
        event_key.clear();
        match log_id {
            Some(log_id) => {
                event_key.push_str(reporting.unwrap_or("None"));
                event_key.push(':');
                event_key.push_str(log_id);
                event_key.push(':');
                event_key.push_str(email);
            }
            None => {
                let parts = [
                    reporting.unwrap_or(""),
                    message_id.unwrap_or(""),
                    email.as_str(),
                    action.as_str(),
                    date_text,
                    diagnostic.unwrap_or(""),
                ];
                hash_parts(&parts, 12, hash_input, hex);
                event_key.push_str("syn-");
                event_key.push_str(std::str::from_utf8(hex).ok()?);
            }
        }
        let provider_event_id = event_key.as_str();

        // Codes and tokens: the diagnostic's prefix must be ASCII (see text.rs).
        let text = diagnostic.filter(|d| !d.is_empty());
        let mut reply = None;
        let mut enhanced = false;
        if let Some(text) = text {
            let bytes = text.as_bytes();
            let prefix = &bytes[..bytes.len().min(limits.match_chars)];
            let head: &[u8] = if prefix.is_ascii() {
                // Characters are bytes: both windows are plain slices.
                tokens.fill(prefix);
                &bytes[..bytes.len().min(limits.scan_chars)]
            } else {
                if !tokens.fill_unicode(text, limits.match_chars, &self.unicode)
                    || !self.unicode.code_window(text, limits.scan_chars, window)
                {
                    return None;
                }
                window
            };
            reply = reply_code(head);
            enhanced = enhanced_code(head, key);
        }
        if !enhanced {
            if let Some(status) = status_field.filter(|s| !s.is_empty()) {
                let bytes = status.as_bytes();
                enhanced = enhanced_code(&bytes[..bytes.len().min(limits.scan_chars)], key);
            }
        }
        let enhanced = if enhanced { Some(key.as_str()) } else { None };
        let mailbox = self.mailbox(
            domain,
            remote,
            text.map(|_| &*tokens),
            mailbox_bits,
            group_key,
        )?;
        let evidence = Evidence {
            kind,
            has_text: text.is_some(),
            reply,
            enhanced,
            mailbox,
        };
        let result = self.classify(&evidence, tokens, rule_bits)?;

        let names = &self.names;
        let status = names.get(result.status as usize)?;
        let state = match result.state {
            Some(state) => Some(names.get(state as usize)?.as_str()),
            None => None,
        };

        // eventId = blake2b(provider \x1f providerEventId \x1f email \x1f status, 16)
        hash_parts(
            &[self.provider.as_str(), provider_event_id, email, status],
            16,
            hash_input,
            hex,
        );
        let event_id = std::str::from_utf8(hex).ok()?;

        let start = events.len();
        let out = events;
        out.extend_from_slice(b"{\"eventId\":");
        push_json_str(out, event_id);
        out.extend_from_slice(b",\"schemaVersion\":");
        push_int(out, self.schema_version);
        out.extend_from_slice(b",\"provider\":");
        push_json_str(out, &self.provider);
        out.extend_from_slice(b",\"providerEventId\":");
        push_json_str(out, provider_event_id);
        out.extend_from_slice(b",\"occurredAt\":");
        push_json_str(out, occurred_at);
        out.extend_from_slice(b",\"email\":");
        push_json_str(out, email);
        out.extend_from_slice(b",\"domain\":");
        push_json_str(out, domain);
        out.extend_from_slice(b",\"mailboxProvider\":");
        push_json_str(out, mailbox);
        out.extend_from_slice(b",\"messageId\":");
        push_opt_str(out, message_id);
        out.extend_from_slice(b",\"campaignId\":null,\"templateId\":null,\"status\":");
        push_json_str(out, status);
        out.extend_from_slice(b",\"recipientState\":");
        push_opt_str(out, state);
        out.extend_from_slice(b",\"providerState\":");
        push_json_str(out, action);
        out.extend_from_slice(b",\"smtpCode\":");
        match reply {
            Some(code) => push_int(out, u32::from(code)),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"enhancedCode\":");
        push_opt_str(out, enhanced);
        out.extend_from_slice(b",\"diagnostic\":");
        push_opt_str(out, diagnostic);
        out.extend_from_slice(b",\"remoteMta\":");
        push_opt_str(out, remote);
        out.extend_from_slice(b",\"classifiedBy\":");
        push_json_str(out, names.get(result.by as usize)?);
        out.extend_from_slice(b",\"ruleId\":");
        push_opt_str(out, result.rule_id);
        push_source(out, source);
        let event = start..out.len();

        // suppression.py `for_event`: every Bounce with a state suppresses.
        let suppression = match (result.status == self.vocabulary.bounce, result.state) {
            (true, Some(state_name)) => {
                let out = updates;
                let start = out.len();
                out.extend_from_slice(b"{\"eventId\":");
                push_json_str(out, event_id);
                out.extend_from_slice(b",\"schemaVersion\":");
                push_int(out, self.schema_version);
                out.extend_from_slice(b",\"provider\":");
                push_json_str(out, &self.provider);
                out.extend_from_slice(b",\"email\":");
                push_json_str(out, email);
                out.extend_from_slice(b",\"mailboxProvider\":");
                push_json_str(out, mailbox);
                out.extend_from_slice(b",\"action\":");
                push_json_str(out, names.get(self.vocabulary.suppress as usize)?);
                out.extend_from_slice(b",\"reason\":");
                push_json_str(out, names.get(state_name as usize)?);
                out.extend_from_slice(b",\"needsReview\":");
                let firm = *self.firm.get(state_name as usize)?;
                out.extend_from_slice(if firm { b"false" } else { b"true" });
                out.extend_from_slice(b",\"scope\":null,\"occurredAt\":");
                push_json_str(out, occurred_at);
                out.extend_from_slice(b",\"policyVersion\":");
                push_json_str(out, &self.policy_version);
                push_source(out, source);
                Some(start..out.len())
            }
            _ => None,
        };
        if let Some(detail) = detail {
            let needs_review = match (&suppression, result.state) {
                (Some(_), Some(state_name)) => Some(!*self.firm.get(state_name as usize)?),
                _ => None,
            };
            detail(&Fields {
                event_id,
                provider_event_id,
                occurred_at,
                email,
                domain,
                mailbox_provider: mailbox,
                message_id,
                status,
                recipient_state: state,
                provider_state: action,
                smtp_code: reply,
                enhanced_code: enhanced,
                diagnostic,
                remote_mta: remote,
                classified_by: names.get(result.by as usize)?,
                rule_id: result.rule_id,
                needs_review,
            });
        }
        Some(Output { event, suppression })
    }
}

/// `,"source":...}`, the last member of both documents: models.py `_source_json`.
fn push_source(out: &mut Vec<u8>, source: Option<Source<'_>>) {
    use std::io::Write;
    match source {
        None => out.extend_from_slice(b",\"source\":null}"),
        Some(Source {
            topic,
            partition,
            offset,
        }) => {
            out.extend_from_slice(b",\"source\":{\"topic\":");
            push_json_str(out, topic);
            // Writing to a Vec cannot fail.
            let _ = write!(out, ",\"partition\":{partition},\"offset\":{offset}}}}}");
        }
    }
}

/// A JSON integer.
fn push_int(out: &mut Vec<u8>, value: u32) {
    let mut digits = [0u8; 10];
    out.extend_from_slice(int_text(value, &mut digits).as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let mut out = String::new();
        assert!(normalize_email("rfc822; <A.B@Example.NET> ", 254, &mut out));
        assert_eq!(out, "a.b@example.net");
        assert!(normalize_email("a@b_c.d-e", 254, &mut out));
        for bad in [
            "a@b",
            "a@-b.com",
            "a@b-.com",
            "a@b.c_m",
            "a@b.1com",
            "a b@c.com",
            "@c.com",
            "a@@c.com",
            "a@c..com",
        ] {
            assert!(!normalize_email(bad, 254, &mut out), "{bad}");
        }
    }

    #[test]
    fn json_strings() {
        let mut out = Vec::new();
        push_json_str(&mut out, "a\"\\\u{1}\u{8}\t\n\u{b}\u{c}\r\u{1f}\u{7f}/é");
        assert_eq!(
            out,
            "\"a\\\"\\\\\\u0001\\b\\t\\n\\u000b\\f\\r\\u001f\u{7f}/é\"".as_bytes()
        );
    }

    #[test]
    fn cut_at_characters() {
        assert_eq!(cut_chars("abc", 2), "ab");
        assert_eq!(cut_chars("\u{e9}\u{e9}\u{e9}", 2), "\u{e9}\u{e9}");
        assert_eq!(cut_chars("\u{e9}\u{e9}", 3), "\u{e9}\u{e9}");
        assert_eq!(cut_chars("ab", 2), "ab");
    }

    #[test]
    fn code_patterns() {
        assert!(code_fits("5xx", Some(550), None));
        assert!(code_fits("4xx", None, Some("4.2.2")));
        assert!(code_fits("x.7.1", None, Some("5.7.1")));
        assert!(!code_fits("x.7.1", None, Some("5.7.10")));
        assert!(code_fits("5.7.1", Some(421), Some("5.7.1")));
        assert!(code_fits("550", Some(550), None));
        assert!(!code_fits("550", None, Some("5.5.0")));
    }
}

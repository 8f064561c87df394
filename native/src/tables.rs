//! The classification data, handed over by Python (consumer/fastpath.py) at construction.
//!
//! Nothing here is a rule: phrases, anchors, rule order, code tables, the policy and the
//! mailbox groups all come from the tables Python loaded from consumer/data/*.toml, so a
//! rule added to the TOML works on both paths without touching this crate.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::text::{Tokens, Unicode};

/// A small multiplicative hasher for short byte keys (tokens, domains): the default
/// SipHash costs more than the rest of a token lookup.
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x517c_c1b7_2722_0a95;
        let mut hash = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            hash = (hash.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(K);
        }
        for &byte in chunks.remainder() {
            hash = (hash.rotate_left(5) ^ u64::from(byte)).wrapping_mul(K);
        }
        self.0 = hash;
    }

    fn write_usize(&mut self, value: usize) {
        self.0 = (self.0.rotate_left(5) ^ value as u64).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// One state, status or other vocabulary word, as an index into `Tables::names`.
pub type Name = u16;

/// textmatch.py `PhraseIndex` as exported by `PhraseIndex.table()`: numbered needles
/// behind their anchor token; needles without an anchor are tested on every text.
///
/// Needles without an anchor are single prefix words (`greylist*` is `b" greylist"`):
/// such a needle occurs in the padded text exactly when some token starts with the word,
/// so they are looked up by the first byte of each token instead of scanning the text.
#[derive(Default)]
pub struct PhraseIndex {
    /// anchor token -> (needle, or `None` when the phrase is that one word; number)
    by_anchor: FastMap<Box<[u8]>, Vec<AnchorEntry>>,
    /// first byte of the word -> (word, number), for `b" word"` needles
    prefixes: Vec<Vec<(Box<[u8]>, u32)>>,
    /// any other needle without an anchor: a substring test on every text
    always: Vec<(Box<[u8]>, u32)>,
    /// A 65 536-bit filter over `by_anchor`'s keys: most tokens of a text (numbers, ids,
    /// host names) are no anchor, and one bit test rejects them without hashing.
    filter: Vec<u64>,
    pub size: usize,
}

/// A phrase behind an anchor.
struct AnchorEntry {
    /// `None` when the phrase is the anchor word itself: the token lookup found it.
    needle: Option<Box<[u8]>>,
    number: u32,
    /// The word positions in the phrase where the anchor stands as a whole word.  A match
    /// of the phrase that contains this anchor token at text token `i` must start at
    /// token `i - offset` for one of them, so only those starts are tested.
    offsets: Box<[u16]>,
}

/// The form of every compiled phrase (`b" " + words`), which `Tokens::has` relies on.
pub fn is_needle(needle: &[u8]) -> bool {
    needle.len() >= 2 && needle[0] == b' ' && needle[1] != b' '
}

/// The filter bit of a token (non-empty): a mix of its length and three of its bytes.
#[inline]
fn filter_bit(token: &[u8]) -> usize {
    let n = token.len();
    let packed = u32::from(token[0])
        | u32::from(token[n - 1]) << 8
        | u32::from(token[n / 2]) << 16
        | (n as u32 & 0xff) << 24;
    (packed.wrapping_mul(0x9E37_79B1) >> 16) as usize
}

impl PhraseIndex {
    /// From `(anchor or None, needle, number)` rows.
    pub fn new(rows: Vec<(Option<String>, String, u32)>) -> Result<Self, String> {
        let mut index = PhraseIndex {
            prefixes: vec![Vec::new(); 256],
            filter: vec![0; 1024],
            ..PhraseIndex::default()
        };
        for (anchor, needle, number) in rows {
            // Tokens::has relies on this form (compile_phrase always gives it).
            if !is_needle(needle.as_bytes()) {
                return Err(format!(
                    "phrase needle {needle:?} is not a space and a word"
                ));
            }
            index.size = index.size.max(number as usize + 1);
            match anchor {
                None => {
                    let word = &needle.as_bytes()[1..];
                    if word.iter().all(|&b| b != b' ') {
                        index.prefixes[word[0] as usize].push((word.into(), number));
                    } else {
                        index
                            .always
                            .push((needle.into_bytes().into_boxed_slice(), number));
                    }
                }
                Some(anchor) => {
                    // A one-word phrase is found by the token lookup alone (as in Python).
                    let single = needle.len() == anchor.len() + 2
                        && needle[1..needle.len() - 1] == anchor[..]
                        && needle.ends_with(' ');
                    if anchor.is_empty() {
                        return Err("empty anchor".to_owned());
                    }
                    let bit = filter_bit(anchor.as_bytes());
                    index.filter[bit / 64] |= 1 << (bit % 64);
                    // Whole words: all of them, but the last of a prefix phrase (no
                    // trailing space) is a prefix.
                    let body = needle[1..].strip_suffix(' ').unwrap_or(&needle[1..]);
                    let words: Vec<&str> = body.split(' ').collect();
                    let whole = if needle.ends_with(' ') {
                        words.len()
                    } else {
                        words.len() - 1
                    };
                    let offsets: Box<[u16]> = (0..whole)
                        .filter(|&k| words[k] == anchor)
                        .map(|k| k as u16)
                        .collect();
                    if offsets.is_empty() {
                        return Err(format!(
                            "anchor {anchor:?} is not a whole word of {needle:?}"
                        ));
                    }
                    let needle = if single {
                        None
                    } else {
                        Some(needle.into_bytes().into_boxed_slice())
                    };
                    index
                        .by_anchor
                        .entry(anchor.into_bytes().into_boxed_slice())
                        .or_default()
                        .push(AnchorEntry {
                            needle,
                            number,
                            offsets,
                        });
                }
            }
        }
        Ok(index)
    }

    /// Set the bit of every phrase found in `text` (`numbers_in`, as a bit set).
    pub fn numbers_in(&self, text: &Tokens, found: &mut Bits) {
        found.reset(self.size);
        for (needle, number) in &self.always {
            if text.has(needle) {
                found.set(*number);
            }
        }
        for (position, &span) in text.spans.iter().enumerate() {
            let token = text.token(span);
            for (word, number) in &self.prefixes[token[0] as usize] {
                if token.starts_with(word) {
                    found.set(*number);
                }
            }
            let bit = filter_bit(token);
            if self.filter[bit / 64] & (1 << (bit % 64)) == 0 {
                continue;
            }
            if let Some(entries) = self.by_anchor.get(token) {
                for entry in entries {
                    if found.get(entry.number) {
                        continue;
                    }
                    let hit = match &entry.needle {
                        None => true,
                        Some(needle) => entry.offsets.iter().any(|&offset| {
                            position
                                .checked_sub(usize::from(offset))
                                .is_some_and(|start| text.has_at(start, needle))
                        }),
                    };
                    if hit {
                        found.set(entry.number);
                    }
                }
            }
        }
    }
}

/// A reusable bit set of phrase or rule numbers, iterated in ascending order.
#[derive(Default)]
pub struct Bits {
    words: Vec<u64>,
}

impl Bits {
    pub fn reset(&mut self, size: usize) {
        self.words.clear();
        self.words.resize(size.div_ceil(64), 0);
    }

    pub fn set(&mut self, bit: u32) {
        self.words[(bit / 64) as usize] |= 1 << (bit % 64);
    }

    pub fn get(&self, bit: u32) -> bool {
        self.words[(bit / 64) as usize] & (1 << (bit % 64)) != 0
    }

    pub fn first(&self) -> Option<u32> {
        self.iter().next()
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.iter().enumerate().flat_map(|(index, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros();
                rest &= rest - 1;
                Some(index as u32 * 64 + bit)
            })
        })
    }
}

/// One message rule (rules.py `Rule`), the fields classification reads.
pub struct Rule {
    pub id: String,
    pub state: Name,
    pub retrying: Option<Name>,
    pub all: Vec<Vec<u8>>,
    pub unless: Vec<Vec<u8>>,
    pub codes: Vec<String>,
    pub providers: Vec<String>,
    pub permanent: bool,
    pub held: bool,
}

/// An enhanced or reply code entry (rules.py `CodeEntry`).
#[derive(Clone, Copy)]
///
/// The `weak` flag of the Python entry is not kept: it only orders a weak code below a
/// provider category, and the DSN format has no category.
pub struct CodeEntry {
    pub final_state: Name,
    pub retrying: Name,
}

/// The words of the output vocabulary that classification chooses between.
pub struct Vocabulary {
    pub delivered: Name,
    pub deferred: Name,
    pub bounce: Name,
    pub by_provider: Name,
    pub by_rule: Name,
    pub by_enhanced: Name,
    pub by_reply: Name,
    pub by_fallback: Name,
    pub auto_reply: Name,
    pub undetermined: Name,
    pub unhandled: Name,
    pub suppress: Name,
    /// mailbox.py's answer when nothing identifies a group.
    pub other: Name,
}

/// The phase of a DSN action (models.py `Kind`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Delivered,
    Deferred,
    Failed,
}

/// Limits the Python path applies, handed over so both cut at the same place.
pub struct Limits {
    pub match_chars: usize,
    pub scan_chars: usize,
    pub text_chars: usize,
    pub ident_chars: usize,
    pub email_chars: usize,
    pub min_ts: i64,
    pub max_ts: i64,
    pub line_bytes: usize,
}

pub struct Tables {
    pub names: Vec<String>,
    pub rules: Vec<Rule>,
    pub rule_index: PhraseIndex,
    pub enhanced: FastMap<String, CodeEntry>,
    pub reply: FastMap<String, CodeEntry>,
    pub final_status: Vec<Option<Name>>,
    pub temporary: Vec<Option<Name>>,
    pub firm: Vec<bool>,
    pub policy_version: String,
    pub mailbox_domains: FastMap<String, String>,
    pub mailbox_hosts: FastMap<String, String>,
    pub mailbox_tokens: PhraseIndex,
    pub mailbox_token_groups: Vec<String>,
    pub vocabulary: Vocabulary,
    pub actions: FastMap<String, Kind>,
    /// JSON keys of the flat DSN shape, by role (see `engine::Role`).
    pub keys: Vec<String>,
    pub provider: String,
    pub schema_version: u32,
    pub limits: Limits,
    pub unicode: Unicode,
}

/// Interns vocabulary words while tables are built.
#[derive(Default)]
pub struct Names {
    pub words: Vec<String>,
    index: HashMap<String, Name>,
}

impl Names {
    pub fn get(&mut self, word: &str) -> Name {
        if let Some(&name) = self.index.get(word) {
            return name;
        }
        let name = self.words.len() as Name;
        self.words.push(word.to_owned());
        self.index.insert(word.to_owned(), name);
        name
    }
}

"""Fast whole-word phrase matching over diagnostic texts.

Why not regular expressions: one alternation of ~700 phrases costs about 450 µs per
text in Python's ``re`` (it tries every branch at every position).  Instead a text is
lower-cased, its ASCII punctuation turned into spaces, and split into tokens
(~2 µs).  Each phrase is indexed under one *anchor* token, the rarest of its words;
a single set intersection between the text's tokens and all anchors finds the few
phrases worth checking, and each check is a substring test on the space-padded
token string.  Matching therefore works on whole words: ``spf`` does not match
inside ``spfx``.  A phrase ending in ``*`` matches its last word as a prefix
(``greylist*`` matches ``greylisted``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "MATCH_LIMIT",
    "Phrase",
    "PhraseIndex",
    "TokenText",
    "choose_anchors",
    "compile_phrase",
    "tokenize",
]

#: Characters of a diagnostic that the rules look at.  Decisive words sit in the
#: first lines; a bounded prefix keeps the cost per event bounded on hostile input.
MATCH_LIMIT = 4096

_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^`{|}~"
_TABLE = bytearray(range(256))
for _byte in list(range(0, 32)) + [127] + [ord(c) for c in _PUNCTUATION]:
    _TABLE[_byte] = 32
_TRANSLATE = bytes(_TABLE)


@dataclass(frozen=True, slots=True)
class TokenText:
    """A diagnostic prepared for matching: its token set and the padded token string."""

    tokens: frozenset[bytes]
    padded: bytes


def tokenize(text: str, limit: int = MATCH_LIMIT) -> TokenText:
    """Lower-case, strip punctuation and split the first ``limit`` characters."""
    raw = text[:limit].lower().encode("utf-8", "replace").translate(_TRANSLATE)
    words = raw.split()
    return TokenText(frozenset(words), b" " + b" ".join(words) + b" ")


@dataclass(frozen=True, slots=True)
class Phrase:
    """One compiled phrase: the bytes to find in ``TokenText.padded`` and its words."""

    source: str
    needle: bytes
    words: tuple[bytes, ...]
    prefix: bool

    def found_in(self, text: TokenText) -> bool:
        return self.needle in text.padded

    def anchor_candidates(self) -> tuple[bytes, ...]:
        """Words usable as an exact-token anchor (a prefix word is not)."""
        return self.words[:-1] if self.prefix else self.words


def compile_phrase(source: str) -> Phrase:
    """Normalise a phrase exactly as ``tokenize`` normalises texts."""
    prefix = source.endswith("*")
    body = source[:-1] if prefix else source
    words = tuple(tokenize(body).padded.split())
    if not words:
        raise ValueError(f"phrase {source!r} has no word characters")
    joined = b" " + b" ".join(words)
    needle = joined if prefix else joined + b" "
    return Phrase(source=source, needle=needle, words=words, prefix=prefix)


def choose_anchors(phrases: Iterable[Phrase]) -> dict[Phrase, bytes | None]:
    """Pick for every phrase the word that the fewest phrases share (then the longest).

    A phrase with no usable anchor (a single prefix word) maps to ``None`` and is
    checked on every text; there are only a few of those.
    """
    phrases = list(phrases)
    frequency: Counter[bytes] = Counter()
    for phrase in phrases:
        frequency.update(set(phrase.anchor_candidates()))
    anchors: dict[Phrase, bytes | None] = {}
    for phrase in phrases:
        candidates = phrase.anchor_candidates()
        anchors[phrase] = (
            min(candidates, key=lambda word: (frequency[word], -len(word))) if candidates else None
        )
    return anchors


class PhraseIndex:
    """Numbered phrases behind their anchors: which numbers have a phrase in a text.

    The hot path of every event, so it avoids method calls per phrase: a phrase of one
    exact word is found by the token-set intersection alone; a longer one costs one
    ``bytes in bytes`` test.  Phrases without an anchor are tested on every text.
    """

    def __init__(self, entries: Sequence[tuple[Phrase, int]]) -> None:
        anchors = choose_anchors(phrase for phrase, _ in entries)
        by_anchor: dict[bytes, list[tuple[bytes | None, int]]] = {}
        always: list[tuple[bytes, int]] = []
        for phrase, number in entries:
            anchor = anchors[phrase]
            if anchor is None:
                always.append((phrase.needle, number))
            else:
                single = len(phrase.words) == 1 and not phrase.prefix
                by_anchor.setdefault(anchor, []).append((None if single else phrase.needle, number))
        self._by_anchor = {anchor: tuple(found) for anchor, found in by_anchor.items()}
        self._anchors = frozenset(self._by_anchor)
        self._always = tuple(always)

    def table(self) -> tuple[tuple[bytes | None, bytes, int], ...]:
        """The index as plain rows ``(anchor, needle, number)``.

        For the compiled fast path (consumer/fastpath.py), which rebuilds this index from
        the rows so it finds exactly the phrases ``numbers_in`` finds.  ``anchor`` is
        ``None`` for the phrases tested on every text; a one-word phrase has the needle
        ``b" " + anchor + b" "``.
        """
        rows: list[tuple[bytes | None, bytes, int]] = [
            (None, needle, number) for needle, number in self._always
        ]
        for anchor, found in self._by_anchor.items():
            for needle, number in found:
                rows.append((anchor, b" " + anchor + b" " if needle is None else needle, number))
        return tuple(rows)

    def numbers_in(self, text: TokenText) -> set[int]:
        """The numbers of every phrase found in ``text`` (unordered)."""
        padded = text.padded
        found = {number for needle, number in self._always if needle in padded}
        for anchor in self._anchors.intersection(text.tokens):
            for needle, number in self._by_anchor[anchor]:
                if needle is None or needle in padded:
                    found.add(number)
        return found

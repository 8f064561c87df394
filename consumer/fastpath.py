"""The optional compiled fast path (the ``consumer_native`` extension, built from native/).

Pure Python classifies 6 000 to 9 000 events/s on one core; its cost is CPython's
per-event overhead, spread evenly over decode, parse, classify and encode.  The extension does
all of that in Rust for the one shape that dominates MTA traffic, the flat generic DSN
event (``finalRecipient`` + ``action``), and declines every other line.  The caller
runs ``pipeline.process`` on a declined line, so the pure Python path stays the
reference and handles everything unusual, dead letters included.

The extension holds no rules of its own: ``spec`` turns the loaded ``Rules`` (phrases
with their anchors, rule order and conditions, code tables, policy, mailbox groups) into
plain data that it compiles at construction, so a rule added to consumer/data works on
both paths.  Its output is byte-identical to ``orjson.dumps(event.to_json())`` of the
Python path; tests/unit/test_native_differential.py checks that line by line.

Nothing here is needed for correctness: without the extension (not installed, built
for another interface version, or turned off with ``BOUNCE_NATIVE=0``) ``load`` gives
``None`` and callers use the Python path alone.
"""

from __future__ import annotations

import importlib
import os
import re
from typing import Any, Protocol, cast

from consumer import models
from consumer.models import ClassifiedBy, Kind, RecipientState, Status, SuppressionAction
from consumer.providers import base, dsn
from consumer.rules import Rules
from consumer.smtp import SCAN_LIMIT
from consumer.textmatch import MATCH_LIMIT

__all__ = ["ENV", "INTERFACE", "NativeClassifier", "build", "load", "spec"]

#: Set to ``0`` to force the pure Python path (differential tests, benchmarks).
ENV = "BOUNCE_NATIVE"

#: The extension interface this module drives (``consumer_native.INTERFACE``).
INTERFACE = 1

#: ``Obj.ident`` keeps this many characters of an identifier; ``normalize_email``
#: refuses longer addresses than this.
_IDENT_CHARS = 256
_EMAIL_CHARS = 254

#: Lines longer than this are declined whatever ``max_bytes`` says: a generic event with
#: every text at its limit is far shorter, and the work per line stays small.
_LINE_BYTES = 64 * 1024

#: The flat DSN fields the engine reads, by role (its ``ROLES``); ``spec`` checks
#: dsn.py still names them so, else the fast path is not used.
_FLAT_ROLES = {
    "recipient": "finalRecipient",
    "original": "originalRecipient",
    "action": "action",
    "status": "status",
    "diagnostic": "diagnosticCode",
    "remote": "remoteMta",
    "date": "lastAttemptDate",
    "reporting": "reportingMta",
    "message": "messageId",
    "log": "finalLogId",
}


class NativeClassifier(Protocol):
    """What ``consumer_native.FastPath`` offers (see native/src/python.rs)."""

    def process_lines(
        self, lines: list[bytes], received_at: str, max_bytes: int
    ) -> tuple[list[bytes | None], list[bytes | None], list[int]]:
        """``(events, updates, declined)``: ``events[i]`` is line ``i``'s normalized
        event as JSON and ``updates[i]`` its suppression update (``None`` when none);
        ``declined`` lists, ascending, the lines it did not classify (``events[i]`` is
        ``None`` for those), which must go through ``pipeline.process``.
        """
        ...

    def process_chunk(
        self, lines: list[bytes], received_at: str, max_bytes: int
    ) -> tuple[bytes, bytes, list[int], list[int], list[int]]:
        """``(events, updates, declined, event_cuts, update_cuts)``: the same work shaped
        for JSON Lines output.  ``events`` holds every classified line's event followed
        by ``\\n``, in order, ``updates`` the suppression updates likewise; the outputs of
        declined line ``declined[k]`` belong at offsets ``event_cuts[k]`` and
        ``update_cuts[k]``.
        """
        ...


def _module() -> Any | None:
    try:
        module = importlib.import_module("consumer_native")
    except ImportError:
        return None
    if getattr(module, "INTERFACE", None) != INTERFACE:
        return None
    return module


_FIRST, _SURROGATES = 0x80, slice(0xD800 - 0x80, 0xE000 - 0x80)


def _unicode_tables() -> dict[str, Any]:
    """What this Python's ``str.lower()`` and ``re`` make of each non-ASCII character of
    the basic plane, so the engine reads such texts exactly as the Python path does.

    Both tables are strings with one character per code point from U+0080 (``"\\0"``
    where nothing applies, surrogates included).  ``lower``: the lower case of each
    character; ``no_lower``: characters whose lower case is longer (``İ``) or depends on
    context (``Σ``, final sigma), which the engine declines.  ``code``: ``"\\x01"`` for a
    ``\\w`` character, ``"\\x02"`` for one that could change a match of smtp.py's
    patterns (Unicode spaces and digits, and characters that match an ASCII letter or
    sign of the patterns case-insensitively, such as the long s, U+017F).  Built with
    whole-string operations (~20 ms); the engine declines characters beyond U+FFFF.
    """
    block = "".join(map(chr, range(_FIRST, 0x10000)))
    context = [0x130, 0x3A3]
    plain = block.translate(dict.fromkeys(context, "\0"))
    lowered = plain.lower()
    if len(lowered) != len(plain):  # a Python with more expansions: one by one
        lowered = "".join(c if len(c := ch.lower()) == 1 else "\0" for ch in plain)
        context += [ord(ch) for ch in plain if len(ch.lower()) != 1]
    digits = dict.fromkeys((ord(ch) for ch in block if ch.isdigit()), "\x02")
    code = re.sub(r"[\s\d]|[a-z0-9_\-;:.'\"(\[=]", "\x02", block, flags=re.IGNORECASE)
    code = re.sub(r"\w", "\x01", code.translate(digits))

    def no_surrogates(text: str) -> str:
        gap = _SURROGATES.stop - _SURROGATES.start
        return text[: _SURROGATES.start] + "\0" * gap + text[_SURROGATES.stop :]

    return {
        "first": _FIRST,
        "lower": no_surrogates(lowered),
        "no_lower": sorted(context),
        "code": no_surrogates(code),
    }


def spec(rules: Rules, roles: list[str]) -> dict[str, Any]:
    """The rule data as the plain tables the extension compiles (no rule lives in Rust)."""
    if dict(dsn._FLAT) != _FLAT_ROLES or sorted(roles) != sorted(_FLAT_ROLES):
        raise ValueError("the DSN field table changed; the fast path needs an update")
    policy = rules.policy

    def index_rows(rows: tuple[tuple[bytes | None, bytes, int], ...]) -> list[Any]:
        return [(None if a is None else a.decode(), n.decode(), i) for a, n, i in rows]

    return {
        "rules": [
            (
                rule.id,
                rule.state.value,
                None if rule.retrying is None else rule.retrying.value,
                [phrase.needle.decode() for phrase in rule.all],
                [phrase.needle.decode() for phrase in rule.unless],
                list(rule.codes),
                list(rule.providers),
                rule.permanent,
                rule.held,
            )
            for rule in rules.messages.rules
        ],
        "rule_index": index_rows(rules.messages.index.table()),
        "enhanced": [(c, e.final.value, e.retrying.value) for c, e in rules.enhanced.items()],
        "reply": [(c, e.final.value, e.retrying.value) for c, e in rules.reply.items()],
        "final_status": [(s.value, t.value) for s, t in policy.final_status.items()],
        "temporary": [(s.value, t.value) for s, t in policy.temporary.items()],
        "firm": [s.value for s in policy.firm_suppression],
        "policy_version": policy.version,
        "mailbox_domains": list(rules.mailbox_domains.items()),
        "mailbox_hosts": list(rules.mailbox_hosts.items()),
        "mailbox_token_index": index_rows(rules.mailbox_tokens.table()),
        "mailbox_token_groups": list(rules.mailbox_token_groups),
        "vocabulary": {
            "delivered": Status.DELIVERED.value,
            "deferred": Status.DEFERRED.value,
            "bounce": Status.BOUNCE.value,
            "by_provider": ClassifiedBy.PROVIDER.value,
            "by_rule": ClassifiedBy.RULE.value,
            "by_enhanced": ClassifiedBy.ENHANCED_CODE.value,
            "by_reply": ClassifiedBy.REPLY_CODE.value,
            "by_fallback": ClassifiedBy.FALLBACK.value,
            "auto_reply": RecipientState.SOFT_BOUNCE_AUTO_REPLY.value,
            "undetermined": RecipientState.SOFT_BOUNCE_UNDETERMINED.value,
            "unhandled": RecipientState.UNHANDLED_STATE.value,
            "suppress": SuppressionAction.SUPPRESS.value,
            "other": "other",  # mailbox.py's answer when nothing names a group
        },
        "actions": [
            (action, kind.name.lower())
            for action, kind in dsn._ACTIONS.items()
            if kind in (Kind.DELIVERED, Kind.DEFERRED, Kind.FAILED)
        ],
        "keys": [_FLAT_ROLES[role] for role in roles],
        "unicode": _unicode_tables(),
        "provider": dsn.Dsn.name,
        "schema_version": models.SCHEMA_VERSION,
        "limits": {
            "match_chars": MATCH_LIMIT,
            "scan_chars": SCAN_LIMIT,
            "text_chars": base.MAX_TEXT,
            "ident_chars": _IDENT_CHARS,
            "email_chars": _EMAIL_CHARS,
            "min_ts": base._MIN_TS,
            "max_ts": base._MAX_TS,
            "line_bytes": _LINE_BYTES,
        },
    }


def build(rules: Rules) -> NativeClassifier | None:
    """The compiled classifier for ``rules``, or ``None`` when the extension is missing
    or was built for another interface.  Ignores ``BOUNCE_NATIVE`` (tests use this)."""
    module = _module()
    if module is None:
        return None
    try:
        tables = spec(rules, list(module.ROLES))
    except ValueError:
        return None
    return cast(NativeClassifier, module.FastPath(tables))


def load(rules: Rules, provider: str | None = None) -> NativeClassifier | None:
    """The fast path for a run, or ``None`` for the pure Python path: when the extension
    is not there, ``BOUNCE_NATIVE=0`` is set, or ``provider`` names a format other than
    the generic DSN one (the extension only reads that)."""
    if os.environ.get(ENV, "1").strip() == "0":
        return None
    if provider is not None and provider.strip().lower() != dsn.Dsn.name:
        return None
    return build(rules)

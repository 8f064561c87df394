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

The Kafka worker (consumer/app.py ``ClassifyStage``) uses it record by record through
``RecordPath``: ``process_record`` also writes the record's ``source`` and returns the
event's values, from which ``RecordPath`` builds the same ``Outcome`` the Python path
would (so the worker's keys and metrics come from the same objects on both paths) while
the record values stay the extension's bytes.  tests/unit/test_native_worker.py checks
whole batches of both paths against each other.

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
from consumer.models import (
    ClassifiedBy,
    Kind,
    NormalizedEvent,
    Outcome,
    RecipientState,
    SourceRef,
    Status,
    SuppressionAction,
)
from consumer.providers import base, dsn
from consumer.records import (
    _EVENT_HEADERS,  # the worker's output records must be those outcome_records makes
    _SUPPRESSION_HEADERS,
    OutputRecord,
    suppression_key,
)
from consumer.rules import Rules
from consumer.smtp import SCAN_LIMIT
from consumer.suppression import for_event
from consumer.textmatch import MATCH_LIMIT

__all__ = [
    "ENV",
    "INTERFACE",
    "NativeClassifier",
    "RecordPath",
    "build",
    "generic",
    "load",
    "record_path",
    "spec",
]

#: Set to ``0`` to force the pure Python path (differential tests, benchmarks).
ENV = "BOUNCE_NATIVE"

#: The extension interface this module drives (``consumer_native.INTERFACE``).
INTERFACE = 2

#: ``Obj.ident`` keeps this many characters of an identifier; ``normalize_email``
#: refuses longer addresses than this.
_IDENT_CHARS = 256
_EMAIL_CHARS = 254

#: Lines longer than this are declined whatever ``max_bytes`` says: a generic event with
#: every text at its limit is far shorter, and the work per line stays small.
_LINE_BYTES = 64 * 1024


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

    def process_record(
        self,
        value: bytes,
        received_at: str,
        topic: str,
        partition: int,
        offset: int,
        max_bytes: int,
    ) -> tuple[Any, ...] | None:
        """One Kafka record: ``None`` when declined, else ``(event, update, event_id,
        provider_event_id, occurred_at, email, domain, mailbox_provider, message_id,
        status, recipient_state, provider_state, smtp_code, enhanced_code, diagnostic,
        remote_mta, classified_by, rule_id, needs_review)``: both JSON documents with the
        record's ``source`` in them, then the values ``RecordPath`` needs.
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
    # The engine reads the flat fields by role (its ``ROLES``), under the names dsn.py
    # gives them; a role it does not know means dsn.py reads something it does not.
    if sorted(roles) != sorted(dsn._FLAT):
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
        "keys": [dsn._FLAT[role] for role in roles],
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


def generic(provider: str | None) -> bool:
    """Whether a run or record whose provider is named so may take the fast path: no
    name (shape detection) or the generic DSN format's (the extension only reads that);
    providers/__init__.py ``detect`` reads the name the same way."""
    return provider is None or provider.strip().lower() == dsn.Dsn.name


def load(rules: Rules, provider: str | None = None) -> NativeClassifier | None:
    """The fast path for a run, or ``None`` for the pure Python path: when the extension
    is not there, ``BOUNCE_NATIVE=0`` is set, or ``provider`` names a format other than
    the generic DSN one (the extension only reads that)."""
    if os.environ.get(ENV, "1").strip() == "0":
        return None
    if not generic(provider):
        return None
    return build(rules)


_STATUS = {status.value: status for status in Status}
_STATE = {state.value: state for state in RecipientState}
_BY = {by.value: by for by in ClassifiedBy}


class RecordPath:
    """The fast path for the worker, one Kafka record at a time.

    ``process`` gives the record's ``Outcome`` (real ``NormalizedEvent`` and
    ``SuppressionUpdate`` objects, equal to the Python path's) with its output records,
    whose values are the extension's bytes: the worker counts metrics from the outcome
    exactly as for a Python-path record, and needs neither ``to_json`` nor ``orjson``.
    Building the two objects costs ~6 µs a record; the Python path costs ~150 µs.
    """

    __slots__ = ("_native", "_policy", "_provider")

    def __init__(self, native: NativeClassifier, rules: Rules) -> None:
        self._native = native
        self._provider = dsn.Dsn.name
        self._policy = rules.policy

    def process(
        self,
        value: bytes,
        received_at: str,
        source: SourceRef,
        max_bytes: int,
        events_topic: str,
        suppressions_topic: str,
    ) -> tuple[Outcome, list[OutputRecord]] | None:
        """The record's outcome and output records, or ``None`` when the extension
        declines it (the caller runs ``pipeline.process``, which also makes dead letters).
        """
        result = self._native.process_record(
            value, received_at, source.topic, source.partition, source.offset, max_bytes
        )
        if result is None:
            return None
        (
            event_json,
            update_json,
            event_id,
            provider_event_id,
            occurred_at,
            email,
            domain,
            mailbox,
            message_id,
            status,
            state,
            provider_state,
            smtp_code,
            enhanced_code,
            diagnostic,
            remote_mta,
            classified_by,
            rule_id,
            _needs_review,  # for_event derives it from the policy, as the Python path does
        ) = result
        recipient_state = None if state is None else _STATE[state]
        event = NormalizedEvent(
            event_id,
            self._provider,
            provider_event_id,
            occurred_at,
            email,
            domain,
            mailbox,
            message_id,
            None,
            None,
            _STATUS[status],
            recipient_state,
            provider_state,
            smtp_code,
            enhanced_code,
            diagnostic,
            remote_mta,
            _BY[classified_by],
            rule_id,
            source,
        )
        records = [OutputRecord(events_topic, email.encode(), event_json, _EVENT_HEADERS)]
        if update_json is None:
            return Outcome((event,), (), 0, self._provider), records
        # The extension writes an update for exactly the events ``for_event`` suppresses.
        update = for_event(event, self._policy)
        assert update is not None, "the extension suppressed an event that is no Bounce"
        records.append(
            OutputRecord(
                suppressions_topic, suppression_key(update), update_json, _SUPPRESSION_HEADERS
            )
        )
        return Outcome((event,), (update,), 0, self._provider), records


def record_path(rules: Rules) -> RecordPath | None:
    """The worker's fast path, or ``None`` (no extension, or ``BOUNCE_NATIVE=0``)."""
    native = load(rules)
    return None if native is None else RecordPath(native, rules)

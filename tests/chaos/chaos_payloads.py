"""The input of the fault-injection run and what the worker must make of each record.

Pure (no Kafka), so the expectations come from the same offline core as the worker's:
``consumer.pipeline.process`` with the record's timestamp as ``received_at``.

* Valid records: every provider sample in ``tests/fixtures/<provider>/`` (not
  ``invalid/``), each copy made distinct by :func:`vary`, which works on the parsed JSON
  without knowing the provider: every e-mail address in any string gets a per-record
  tag in its local part (the domain, hence the mailbox provider and the
  classification, stays), id-like fields (``*id``, ``uuid``) get a per-record suffix
  (or offset, for numbers), and a string holding a JSON document (SNS's ``Message``) is
  varied inside.  A template whose varied copy no longer classifies like the original
  is varied by addresses only.  Plus generic MTA (DSN) events, distinct by index.
* Poison (about 5 %): not JSON, invalid UTF-8, over-size, unknown shapes, missing
  recipients, wrong types, absurd nesting, control characters, empty and scalar
  payloads, and every sample of ``tests/fixtures/invalid/``.  Each must raise a
  ``PayloadError`` offline: exactly one dead letter in the worker.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from consumer.errors import PayloadError
from consumer.models import Outcome, SourceRef
from consumer.pipeline import process
from consumer.providers.base import format_time
from consumer.rules import Rules

__all__ = [
    "POISON_KINDS",
    "Expected",
    "InputSet",
    "build_inputs",
    "received_at",
    "vary",
]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

_EMAIL = re.compile(r"([A-Za-z0-9._%+\-]+)@([A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,})")
_ID_KEY = re.compile(r"(?:^|[_\-.])?(?:id|uuid)$", re.IGNORECASE)


_SOURCE = SourceRef("raw", 0, 0)


def received_at(timestamp_ms: int) -> str:
    """What the worker passes as ``received_at`` for a record of this timestamp."""
    return format_time(datetime.fromtimestamp(timestamp_ms / 1000, UTC))


# --- valid records ------------------------------------------------------------------


def _is_id_key(key: str) -> bool:
    lowered = key.lower()
    return lowered.endswith(("id", "uuid")) and lowered not in {"valid", "paid", "void"}


def vary(document: Any, index: int, *, ids: bool = True) -> Any:
    """A copy of a parsed JSON document made distinct for record ``index``."""
    tag = f"r{index}"

    def text(value: str) -> str:
        stripped = value.lstrip()
        if stripped[:1] in {"{", "["} and len(value) > 2:
            try:
                inner = orjson.loads(value)
            except orjson.JSONDecodeError:
                pass
            else:
                if isinstance(inner, dict | list):
                    return orjson.dumps(walk(inner)).decode()
        return _EMAIL.sub(lambda m: f"{m.group(1)}.{tag}@{m.group(2)}", value)

    def walk(node: Any, key: str | None = None) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, key) for v in node]
        if isinstance(node, str):
            varied = text(node)
            if ids and key is not None and _is_id_key(key) and varied == node and node:
                return f"{node}-{tag}"
            return varied
        if ids and key is not None and _is_id_key(key) and type(node) is int:
            return node + index * 1_000_003
        return node

    return walk(document)


def _signature(outcome: Outcome) -> tuple[Any, ...]:
    """What must not change when a sample is varied: its classification."""
    return (
        tuple(
            (e.provider, e.status.value, e.recipient_state and e.recipient_state.value, e.rule_id)
            for e in outcome.events
        ),
        tuple((s.action.value, s.reason, s.needs_review) for s in outcome.suppressions),
        outcome.ignored,
    )


@dataclass(frozen=True)
class _Template:
    name: str
    document: Any
    ids: bool  # vary id-like fields too (False: addresses only)
    signature: tuple[Any, ...]


def _templates(rules: Rules, stamp: str, max_bytes: int) -> list[_Template]:
    out = []
    for path in sorted(FIXTURES.glob("*/*.json")):
        if path.parent.name == "invalid":
            continue
        raw = path.read_bytes()
        try:
            original = process(raw, rules, stamp, max_bytes=max_bytes)
        except PayloadError:
            continue  # a valid-provider sample that is a dead letter on purpose
        document = orjson.loads(raw)
        signature = _signature(original)
        chosen = None
        for ids in (True, False):
            copies = [orjson.dumps(vary(document, i, ids=ids)) for i in (1, 2)]
            try:
                outcomes = [process(c, rules, stamp, max_bytes=max_bytes) for c in copies]
            except PayloadError:
                continue
            same = all(_signature(o) == signature for o in outcomes)
            distinct = not (
                {e.event_id for e in outcomes[0].events} & {e.event_id for e in outcomes[1].events}
            )
            if same and distinct:
                chosen = ids
                break
        if chosen is None:
            raise AssertionError(f"{path}: no variation keeps its classification")
        out.append(_Template(f"{path.parent.name}/{path.stem}", document, chosen, signature))
    return out


_ACTIONS = ("failed", "delayed", "delivered", "failed", "failed")
_STATUSES = ("5.1.1", "4.2.2", "2.0.0", "5.7.1", "5.2.2")
_TEXTS = (
    "smtp; 550 5.1.1 <{a}>: Recipient address rejected: User unknown",
    "smtp; 452 4.2.2 The email account that you tried to reach is over quota",
    "smtp; 250 2.0.0 OK 1700000000 gsmtp",
    "smtp; 554 5.7.1 Service unavailable; Client host [203.0.113.9] blocked using zen.spamhaus.org",
    "smtp; 552 5.2.2 <{a}>: Mailbox full",
)
_DOMAINS = ("gmail.com", "outlook.com", "yahoo.com", "example.net", "web.de", "orange.fr")


def _dsn(index: int) -> bytes:
    """A generic MTA (flat DSN) event, distinct by index."""
    address = f"dsn.user{index}@{_DOMAINS[index % len(_DOMAINS)]}"
    kind = index % len(_ACTIONS)
    return orjson.dumps(
        {
            "finalRecipient": f"rfc822; {address}",
            "action": _ACTIONS[kind],
            "status": _STATUSES[kind],
            "diagnosticCode": _TEXTS[kind].format(a=address),
            "lastAttemptDate": "Fri, 14 Mar 2025 09:12:05 +0000",
            "reportingMta": "dns; mta.example.com",
            "messageId": f"<chaos{index}@example.com>",
        }
    )


# --- poison -------------------------------------------------------------------------


def _not_json(index: int, max_bytes: int) -> bytes:
    return f"bounce for user{index}@example.com: 550 user unknown {{ not json".encode()


def _invalid_utf8(index: int, max_bytes: int) -> bytes:
    return b'{"email": "user' + str(index).encode() + b'@example.com", "event": "bounce\xff\xfe"}'


def _oversize(index: int, max_bytes: int) -> bytes:
    head = b'{"event": "bounce", "email": "big' + str(index).encode() + b'@example.com", "pad": "'
    return head + b"x" * (max_bytes + 1 + index % 512) + b'"}'


def _unknown_shape(index: int, max_bytes: int) -> bytes:
    return orjson.dumps({"hello": "world", "n": index, "items": [{"a": 1}, {"b": [index]}]})


def _missing_recipient(index: int, max_bytes: int) -> bytes:
    return orjson.dumps(
        {
            "event": "bounce",
            "sg_event_id": f"missing-{index}",
            "timestamp": 1700000000,
            "reason": "550 5.1.1 user unknown",
            "type": "bounce",
        }
    )


def _wrong_type(index: int, max_bytes: int) -> bytes:
    return orjson.dumps(
        {
            "event": "bounce",
            "email": index,
            "sg_event_id": f"wrong-{index}",
            "timestamp": {"seconds": 1700000000},
            "reason": "550 5.1.1 user unknown",
        }
    )


def _nesting(index: int, max_bytes: int) -> bytes:
    depth = 2000 + index % 100
    return b"[" * depth + b"]" * depth


def _control_chars(index: int, max_bytes: int) -> bytes:
    return (
        b'{"event": "bounce", "email": "ctl' + str(index).encode() + b'\x01\x07@example.com",'
        b' "reason": "550\x00 5.1.1", "sg_event_id": "c\x1b[31m"}'
    )


def _empty_or_scalar(index: int, max_bytes: int) -> bytes:
    return (b"", b"   \n", b"null", b"42", b'"a string"', b"true")[index % 6]


_INVALID_FIXTURES = sorted((FIXTURES / "invalid").glob("*.json"))


def _invalid_fixture(index: int, max_bytes: int) -> bytes:
    return _INVALID_FIXTURES[index % len(_INVALID_FIXTURES)].read_bytes()


POISON_KINDS: dict[str, Callable[[int, int], bytes]] = {
    "not_json": _not_json,
    "invalid_utf8": _invalid_utf8,
    "oversize": _oversize,
    "unknown_shape": _unknown_shape,
    "missing_recipient": _missing_recipient,
    "wrong_type": _wrong_type,
    "nesting_2000": _nesting,
    "control_chars": _control_chars,
    "empty_or_scalar": _empty_or_scalar,
    "invalid_fixture": _invalid_fixture,
}


# --- the whole input ----------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What one input must give: its events and suppression updates (by eventId), or a
    dead letter."""

    kind: str  # "valid" | "poison"
    label: str  # the template, "dsn" or the poison kind
    events: Counter[str] = field(default_factory=Counter)
    suppressions: Counter[str] = field(default_factory=Counter)
    #: suppression updates that the core writes without ``source`` (list changes:
    #: complaints, unsubscribes reported as such); found by their event id alone
    unsourced: Counter[str] = field(default_factory=Counter)


@dataclass
class InputSet:
    values: list[bytes]
    expected: list[Expected]
    timestamp_ms: int
    templates: int
    id_varied_templates: int

    @property
    def poison(self) -> int:
        return sum(1 for e in self.expected if e.kind == "poison")

    def summary(self) -> dict[str, int]:
        labels: Counter[str] = Counter()
        for exp in self.expected:
            if exp.kind == "poison":
                labels[f"poison:{exp.label}"] += 1
            else:
                labels["dsn" if exp.label == "dsn" else exp.label.split("/")[0]] += 1
        return dict(sorted(labels.items()))


def build_inputs(
    count: int,
    rules: Rules,
    *,
    timestamp_ms: int,
    max_bytes: int,
    poison_share: float = 0.05,
    dsn_share: float = 0.2,
    seed: int = 20261123,
) -> InputSet:
    """``count`` records in a shuffled order, with the expected outcome of each.

    Every valid record is checked with ``process``: it must classify exactly like its
    template (same statuses, states, rules), and every poison record must raise a
    ``PayloadError``.  Event ids are unique across the whole set (checked), so an event
    seen twice is a duplicate, never a coincidence.
    """
    stamp = received_at(timestamp_ms)
    templates = _templates(rules, stamp, max_bytes)
    rng = random.Random(seed)  # noqa: S311 - a reproducible shuffle, not a secret
    poison_count = round(count * poison_share)
    kinds = list(POISON_KINDS)
    plan: list[tuple[str, int]] = [("poison", i) for i in range(poison_count)]
    dsn_count = round((count - poison_count) * dsn_share)
    plan += [("dsn", i) for i in range(dsn_count)]
    plan += [("template", i) for i in range(count - poison_count - dsn_count)]
    rng.shuffle(plan)

    values: list[bytes] = []
    expected: list[Expected] = []
    seen_ids: Counter[str] = Counter()
    for position, (what, i) in enumerate(plan):
        if what == "poison":
            # over-size records are the expensive kind: one in four of a normal share
            kind = kinds[i % len(kinds)]
            if kind == "oversize" and (i // len(kinds)) % 4:
                kind = "unknown_shape"
            value = POISON_KINDS[kind](i, max_bytes)
            try:
                process(value, rules, stamp, max_bytes=max_bytes)
            except PayloadError:
                pass
            else:
                raise AssertionError(f"poison record {kind} #{i} classifies: {value[:200]!r}")
            values.append(value)
            expected.append(Expected("poison", kind))
            continue
        if what == "dsn":
            value, label, signature = _dsn(i), "dsn", None
        else:
            template = templates[i % len(templates)]
            value = orjson.dumps(vary(template.document, position, ids=template.ids))
            label, signature = template.name, template.signature
        try:
            outcome = process(value, rules, stamp, source=_SOURCE, max_bytes=max_bytes)
        except PayloadError as exc:
            raise AssertionError(f"varied {label} #{position} is a dead letter: {exc}") from exc
        if signature is not None and _signature(outcome) != signature:
            raise AssertionError(f"varied {label} #{position} classifies differently")
        events = Counter(e.event_id for e in outcome.events)
        suppressions = Counter(s.event_id for s in outcome.suppressions if s.source is not None)
        unsourced = Counter(s.event_id for s in outcome.suppressions if s.source is None)
        seen_ids.update(set(events) | set(suppressions) | set(unsourced))
        values.append(value)
        expected.append(Expected("valid", label, events, suppressions, unsourced))
    shared = [ident for ident, n in seen_ids.items() if n > 1]
    if shared:
        raise AssertionError(f"{len(shared)} event ids shared by several inputs, e.g. {shared[0]}")
    return InputSet(
        values,
        expected,
        timestamp_ms,
        templates=len(templates),
        id_varied_templates=sum(1 for t in templates if t.ids),
    )

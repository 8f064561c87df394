"""Output records: topics, keys (partitioning and compaction) and dead-letter headers."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from consumer.errors import DecodeError, PayloadError
from consumer.models import SourceRef
from consumer.pipeline import process
from consumer.records import DLQ_HEADER_PREFIX, dead_letter_record, outcome_records
from consumer.rules import Rules

FIXTURES = Path(__file__).parents[1] / "fixtures"
SOURCE = SourceRef("mail.raw", 2, 41)


def _records(name: str, rules: Rules) -> list:
    outcome = process((FIXTURES / name).read_bytes(), rules, "2025-01-01T00:00:00.000Z",
                      source=SOURCE)
    return outcome_records(outcome, "ev", "sup")


def test_events_are_keyed_by_address_and_carry_the_source(rules: Rules) -> None:
    """A hard bounce gives one event keyed by the address and one suppression update."""
    records = _records("sendgrid/bounce-unclassified-5-1-1.json", rules)
    event, update = records
    body = orjson.loads(event.value)
    assert event.topic == "ev"
    assert event.key == body["email"].encode()
    assert body["source"] == {"topic": "mail.raw", "partition": 2, "offset": 41}
    assert ("schema", b"normalized-event.v1") in event.headers
    assert update.topic == "sup"
    assert update.key == body["email"].encode()
    assert orjson.loads(update.value)["action"] == "suppress"


def test_scoped_unsubscribe_has_its_own_compaction_key(rules: Rules) -> None:
    """A group unsubscribe must not overwrite the address's global suppression on compaction."""
    records = _records("sendgrid/group-unsubscribe.json", rules)
    (update,) = records
    body = orjson.loads(update.value)
    assert body["scope"] == {"kind": "group", "id": "42"}
    assert update.key == f"{body['email']}|group:42".encode()
    assert body["source"] == {"topic": "mail.raw", "partition": 2, "offset": 41}


def test_dead_letter_keeps_the_input_unchanged_and_explains_why() -> None:
    """The original key, value and headers stay; error headers name class, kind and source."""
    raw = b'{"not": "an event"'
    error: PayloadError
    try:
        process(raw, None, "2025-01-01T00:00:00.000Z")  # type: ignore[arg-type]
    except DecodeError as exc:
        error = exc
    else:  # pragma: no cover - the payload is invalid JSON
        pytest.fail("invalid JSON was accepted")
    record = dead_letter_record(
        "dlq", b"k1", raw, (("trace", b"abc"), (DLQ_HEADER_PREFIX + "kind", b"stale")), error,
        SOURCE, max_bytes=1024,
    )
    headers = dict(record.headers)
    assert (record.topic, record.key, record.value) == ("dlq", b"k1", raw)
    assert headers["trace"] == b"abc"
    assert headers[DLQ_HEADER_PREFIX + "exception"] == b"DecodeError"
    assert headers[DLQ_HEADER_PREFIX + "kind"] == b"decode"
    assert headers[DLQ_HEADER_PREFIX + "topic"] == b"mail.raw"
    assert headers[DLQ_HEADER_PREFIX + "partition"] == b"2"
    assert headers[DLQ_HEADER_PREFIX + "offset"] == b"41"
    assert b"not valid JSON" in headers[DLQ_HEADER_PREFIX + "message"]
    assert [name for name, _ in record.headers].count(DLQ_HEADER_PREFIX + "kind") == 1
    assert DLQ_HEADER_PREFIX + "truncated.from.bytes" not in headers


def test_an_oversized_dead_letter_is_cut_and_says_so() -> None:
    """Only a value over the limit is cut, and its original size is kept in a header."""
    raw = b"x" * 5000
    record = dead_letter_record("dlq", None, raw, (), DecodeError("too large"), SOURCE, 4096)
    assert record.value == raw[:4096]
    assert dict(record.headers)[DLQ_HEADER_PREFIX + "truncated.from.bytes"] == b"5000"


def test_ignored_events_produce_nothing(rules: Rules) -> None:
    """A click is recognised and gives no output record."""
    opens = sorted((FIXTURES / "sendgrid").glob("click*.json"))
    assert opens, "fixture set lost its open event"
    assert _records(f"sendgrid/{opens[0].name}", rules) == []

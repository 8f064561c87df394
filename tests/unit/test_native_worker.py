"""The worker's classify stage with the compiled fast path against the pure Python path.

``ClassifyStage.process_record`` sends a record through the extension when its
``provider`` header allows it, and through ``pipeline.process`` otherwise or when the
extension declines.  Both must give the worker the same batch: the same output records
(topic, key, value, headers, partition, in order), the same dead letters, the same
``Outcome`` objects, and so the same metrics.  Records are built in memory (no broker)
from the diagnostic corpus as generic events with varied Kafka timestamps, topics,
partitions and offsets, plus other providers' fixtures and hostile lines.

Without the extension these tests skip locally; with CI=true they fail, so CI always
tests the fast path it builds.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from aiokafka.structs import ConsumerRecord
from corpus import as_generic_event, diagnostic_cases
from prometheus_client import CollectorRegistry
from test_native_differential import HOSTILE, _corpus_variants, _fixture_lines

from consumer import fastpath
from consumer.app import Batch, ClassifyStage
from consumer.config import Settings, from_env
from consumer.fastpath import RecordPath
from consumer.metrics import Metrics
from consumer.rules import load_rules
from consumer.textmatch import MATCH_LIMIT

_RULES = load_rules()
_NATIVE = fastpath.build(_RULES)
#: Fixed "now" for the event-age histogram, so two runs give the same samples.
_NOW = 1_760_000_000.0

Headers = Sequence[tuple[str, bytes]]


def _native_path() -> RecordPath:
    """The extension, or a skip (locally) / a failure (CI=true) saying it is missing."""
    if _NATIVE is None:
        reason = "consumer_native is not installed (pip install ./native, or make install)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must test the compiled fast path")
        pytest.skip(reason)
    return RecordPath(_NATIVE, _RULES)


class _Counting:
    """A ``RecordPath`` that counts the records it accepted."""

    def __init__(self, inner: RecordPath) -> None:
        self.inner = inner
        self.accepted = 0

    def process(self, *args: Any) -> Any:
        result = self.inner.process(*args)
        self.accepted += result is not None
        return result


def _stages(settings: Settings) -> tuple[ClassifyStage, ClassifyStage, _Counting]:
    """A stage that uses the fast path (whatever BOUNCE_NATIVE says) and one that does not."""
    fast = ClassifyStage(settings, _RULES)
    counting = _Counting(_native_path())
    fast.fast = counting  # type: ignore[assignment]
    slow = ClassifyStage(settings, _RULES)
    slow.fast = None
    return fast, slow, counting


_TOPICS = ["mail.raw", "mail.raw.eu", "raw_2-x", "t\u00e9st.topic"]
_TIMESTAMPS = [0, 1, 999, 1_741_943_525_123, 1_700_000_000_000, 4_102_444_800_000, -1]
_HEADERS: list[Headers] = [
    [],
    [("provider", b"dsn")],
    [("provider", b" DSN ")],
    [("provider", b"generic")],
    [("provider", b"")],
    [("x-trace", b"abc"), ("content-type", b"application/json")],
    [("provider", b"sendgrid")],
    [("provider", b"nope")],
    [("provider", b"\xff")],
]


def _records(values: list[bytes | None], rng: random.Random, headers: bool) -> list[ConsumerRecord]:
    """Kafka records of ``values`` with varied coordinates, times and (``headers``) headers."""
    records = []
    for index, value in enumerate(values):
        chosen = rng.choice(_HEADERS) if headers else []
        timestamp = rng.choice([*_TIMESTAMPS, rng.randrange(10**12, 2 * 10**12)])
        records.append(
            ConsumerRecord(
                topic=rng.choice(_TOPICS),
                partition=rng.choice([0, 1, 7, 11, 2**31 - 1]),
                offset=rng.choice([index, rng.randrange(2**40), 2**63 - 1]),
                timestamp=timestamp,
                timestamp_type=0,
                key=rng.choice([None, b"k", b"user@example.net"]),
                value=value,
                checksum=None,
                serialized_key_size=-1,
                serialized_value_size=-1 if value is None else len(value),
                headers=chosen,
            )
        )
    return records


def _samples(batch: Batch) -> list[tuple[str, tuple[tuple[str, str], ...], float]]:
    """What ``Metrics.observe_batch`` makes of the batch, on a fresh registry."""
    registry = CollectorRegistry()
    Metrics(registry).observe_batch(batch.outcomes, batch.dead_letter_kinds, _NOW)
    return sorted(
        (sample.name, tuple(sorted(sample.labels.items())), sample.value)
        for metric in registry.collect()
        for sample in metric.samples
        if not sample.name.endswith("_created")  # creation times differ
    )


def _compare(records: list[ConsumerRecord], settings: Settings | None = None) -> tuple[int, Batch]:
    """Run both stages over ``records``; assert identical batches and metrics.  Returns
    how many records the fast path took, and the batch."""
    fast, slow, counting = _stages(settings or from_env({}))
    batches = Batch(), Batch()
    for record in records:
        fast.process_record(record, batches[0])
        slow.process_record(record, batches[1])
    got, expected = batches
    assert len(got.outputs) == len(expected.outputs)
    for index, (mine, theirs) in enumerate(zip(got.outputs, expected.outputs, strict=True)):
        assert mine == theirs, f"output {index} differs"
    assert got.outcomes == expected.outcomes
    assert got.dead_letter_kinds == expected.dead_letter_kinds
    assert _samples(got) == _samples(expected)
    return counting.accepted, got


def test_the_extension_is_there_in_ci() -> None:
    """CI builds native/ (make install); a missing or stale build must fail there."""
    _native_path()


def test_plain_generic_records_take_the_fast_path() -> None:
    """The diagnostic corpus as plain generic events, with and without an event time
    (the record's timestamp stands in): identical, and nearly all on the fast path."""
    rng = random.Random(1123)  # noqa: S311  (repeatable test data)
    values: list[bytes | None] = []
    for case in diagnostic_cases():
        event = orjson.loads(as_generic_event(case))
        if rng.random() < 0.5:
            del event["lastAttemptDate"]
        values.append(orjson.dumps(event))
    accepted, batch = _compare(_records(values, rng, headers=False))
    assert accepted >= len(values) * 0.97, f"{accepted} of {len(values)} on the fast path"
    sources = [orjson.loads(out.value or b"")["source"] for out in batch.outputs]
    assert all(source is not None for source in sources)


def test_varied_field_forms_and_headers() -> None:
    """Odd field forms (declined ones included) under every kind of provider header:
    only no header or the generic name takes the fast path, and the outputs agree."""
    rng = random.Random(20261123)  # noqa: S311
    values: list[bytes | None] = list(_corpus_variants(per_case=2))
    accepted, _ = _compare(_records(values, rng, headers=True))
    assert accepted > 0


def test_other_providers_and_hostile_records_go_to_python() -> None:
    """Other providers' samples, hostile lines, empty and missing values: declined to
    the Python path, which makes the same events and dead letters."""
    rng = random.Random(7)  # noqa: S311
    values: list[bytes | None] = [*_fixture_lines(), *HOSTILE, None, b""]
    records = _records(values, rng, headers=False) + _records(values, rng, headers=True)
    _compare(records)


def test_max_payload_bytes_is_respected() -> None:
    """A record over MAX_PAYLOAD_BYTES is a dead letter on both paths, one byte under is not."""
    settings = from_env({"MAX_PAYLOAD_BYTES": "2048"})
    base = {
        "finalRecipient": "rfc822; a@example.net",
        "action": "failed",
        "status": "5.1.1",
        "diagnosticCode": "550 5.1.1 user unknown ",
    }
    values: list[bytes | None] = []
    for size in (2047, 2048, 2049, 4096, MATCH_LIMIT * 2):
        event = dict(base)
        short = len(orjson.dumps(event))
        event["diagnosticCode"] += "x" * max(0, size - short)
        line = orjson.dumps(event)
        assert len(line) == max(size, short)
        values.append(line)
    accepted, batch = _compare(_records(values, random.Random(3), headers=False), settings)  # noqa: S311
    assert accepted == 2
    assert batch.dead_letter_kinds == ["decode"] * 3


def test_bounce_native_0_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """BOUNCE_NATIVE=0 gives the worker the pure Python path, as it does the CLI."""
    _native_path()
    monkeypatch.delenv(fastpath.ENV, raising=False)
    assert ClassifyStage(from_env({}), _RULES).fast is not None
    monkeypatch.setenv(fastpath.ENV, "0")
    assert ClassifyStage(from_env({}), _RULES).fast is None

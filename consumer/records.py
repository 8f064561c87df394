"""What the worker writes to Kafka for one input record: topics, keys, values, headers.

Pure, so the keying and header rules are unit-tested without a broker.

Keys decide partitions and, on the compacted suppressions topic, what compaction keeps:
- normalized events are keyed by the address, so every event of one address is on one
  partition and in order (the stateful suppression stage relies on it);
- suppression updates are keyed by the address too, plus the scope for a scoped
  unsubscribe (``email|group:42``): otherwise compaction would let an unsubscribe from
  one newsletter replace the address's global suppression;
- a dead letter keeps the input's key, value and headers unchanged and adds headers
  named like Kafka Streams' dead-letter headers (KIP-1034), under our own prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from consumer.errors import PayloadError
from consumer.models import SCHEMA_VERSION, Outcome, SourceRef, SuppressionUpdate

__all__ = [
    "DLQ_HEADER_PREFIX",
    "OutputRecord",
    "dead_letter_record",
    "outcome_records",
    "suppression_key",
]

Headers = tuple[tuple[str, bytes], ...]

DLQ_HEADER_PREFIX = "__bounce.errors."
#: The longest error message put in a header; the reason names the field, not the payload.
_MESSAGE_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    #: Set only where the partition must match the input's (a state changelog).
    partition: int | None = None


def suppression_key(update: SuppressionUpdate) -> bytes:
    """Address, plus the scope of a scoped (list or topic) change."""
    if update.scope is None:
        return update.email.encode()
    return f"{update.email}|{update.scope.kind}:{update.scope.id}".encode()


_EVENT_HEADERS: Headers = (
    ("content-type", b"application/json"),
    ("schema", f"normalized-event.v{SCHEMA_VERSION}".encode()),
)
_SUPPRESSION_HEADERS: Headers = (
    ("content-type", b"application/json"),
    ("schema", f"suppression-update.v{SCHEMA_VERSION}".encode()),
)


def outcome_records(
    outcome: Outcome, events_topic: str, suppressions_topic: str
) -> list[OutputRecord]:
    """Every record of one processed input, events first then suppression updates."""
    records = [
        OutputRecord(
            events_topic, event.email.encode(), orjson.dumps(event.to_json()), _EVENT_HEADERS
        )
        for event in outcome.events
    ]
    records.extend(
        OutputRecord(
            suppressions_topic,
            suppression_key(update),
            orjson.dumps(update.to_json()),
            _SUPPRESSION_HEADERS,
        )
        for update in outcome.suppressions
    )
    return records


def dead_letter_record(
    dlq_topic: str,
    key: bytes | None,
    value: bytes,
    headers: Headers,
    error: PayloadError,
    source: SourceRef,
    max_bytes: int,
) -> OutputRecord:
    """The input unchanged, with headers saying where it came from and why it failed.

    Only a value over ``max_bytes`` (already refused as too large) is cut to that size,
    with its original length in a header: the whole of it might not fit in a produce
    request, and a dead letter that can never be written would stall its partition.
    """
    truncated: Headers = ()
    if len(value) > max_bytes:
        truncated = ((DLQ_HEADER_PREFIX + "truncated.from.bytes", str(len(value)).encode()),)
        value = value[:max_bytes]
    ours: Headers = (
        (DLQ_HEADER_PREFIX + "exception", type(error).__name__.encode()),
        (DLQ_HEADER_PREFIX + "kind", error.kind.encode()),
        (DLQ_HEADER_PREFIX + "message", str(error)[:_MESSAGE_LIMIT].encode("utf-8", "replace")),
        (DLQ_HEADER_PREFIX + "topic", source.topic.encode()),
        (DLQ_HEADER_PREFIX + "partition", str(source.partition).encode()),
        (DLQ_HEADER_PREFIX + "offset", str(source.offset).encode()),
    )
    kept = tuple(header for header in headers if not header[0].startswith(DLQ_HEADER_PREFIX))
    return OutputRecord(dlq_topic, key, value, kept + ours + truncated)

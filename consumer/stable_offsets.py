"""Committed offsets that no open transaction can still change (KIP-447 ``require_stable``).

In exactly_once mode a batch's input offsets are committed inside the producer's
transaction.  Until the transaction coordinator has written the commit marker, the group
coordinator keeps those offsets *pending*, and an ordinary offset fetch answers with the
previous, stable offset.  A worker that resumes from that answer (after a failed
transaction, or when a rebalance hands it a partition whose previous owner's commit is
still being completed, typically right after a broker restart) processes the batch a
second time, and the second transaction commits it again: a duplicate that every
``read_committed`` reader sees.

Kafka's answer is OffsetFetch v7+ with ``require_stable``: the broker then refuses to
answer for a partition with a pending transactional offset (error 88,
UNSTABLE_OFFSET_COMMIT) until the transaction is completed or aborted.  aiokafka only
speaks OffsetFetch v1-v3, so this module defines the v7 request and sends it to the
group coordinator that the consumer already knows.  That needs two private attributes
of ``AIOKafkaConsumer`` (its client and its coordinator's node id); they are read here
and nowhere else, and tests/integration/test_stable_offsets.py pins the behaviour on a
real broker, so an aiokafka upgrade that moves them fails a test instead of silently
bringing the duplicates back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer
from aiokafka.client import ConnectionGroup
from aiokafka.errors import for_code
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)
from aiokafka.structs import TopicPartition

__all__ = ["StableOffsets", "fetch_stable_offsets"]

_OFFSET_FETCH = 9
_NONE = 0
_UNSTABLE_OFFSET_COMMIT = 88
#: The group coordinator is moving or still loading: ask again shortly.
_COORDINATOR_BUSY = frozenset({14, 15, 16})


class _OffsetFetchResponseV7(Response):  # type: ignore[misc]  # untyped base
    API_KEY = _OFFSET_FETCH
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("committed_offset", Int64),
                        ("committed_leader_epoch", Int32),
                        ("metadata", CompactString("utf-8")),
                        ("error_code", Int16),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class _OffsetFetchRequestV7(RequestStruct):  # type: ignore[misc]  # untyped base
    FLEXIBLE_VERSION = True
    API_KEY = _OFFSET_FETCH
    API_VERSION = 7
    RESPONSE_TYPE = _OffsetFetchResponseV7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("partition_indexes", CompactArray(Int32)),
                ("tags", TaggedFields),
            ),
        ),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


_Structs: TypeAlias = _OffsetFetchRequestV7


class _StableOffsetFetch(Request[_Structs]):  # type: ignore[misc]  # untyped base
    API_KEY = _OFFSET_FETCH

    def __init__(self, group_id: str, partitions: Iterable[TopicPartition]) -> None:
        by_topic: dict[str, list[int]] = {}
        for tp in partitions:
            by_topic.setdefault(tp.topic, []).append(tp.partition)
        self._group_id = group_id
        self._topics: list[tuple[str, list[int], dict[int, bytes]]] = [
            (topic, sorted(numbers), {}) for topic, numbers in by_topic.items()
        ]

    def build(self, request_struct_class: type[_Structs]) -> _Structs:
        return request_struct_class(self._group_id, self._topics, True, {})


@dataclass(frozen=True, slots=True)
class StableOffsets:
    """One answer: stable committed offsets, and the partitions not stable yet.

    ``committed`` maps every stable partition to its committed offset, or to ``None``
    when the group has never committed one for it.  ``unstable`` holds the partitions
    that a pending transaction may still move (or whose coordinator was busy): ask
    again later, never resume them from an older answer.
    """

    committed: dict[TopicPartition, int | None]
    unstable: frozenset[TopicPartition]


async def fetch_stable_offsets(
    consumer: AIOKafkaConsumer, group_id: str, partitions: Iterable[TopicPartition]
) -> StableOffsets:
    """One ``require_stable`` offset fetch for ``partitions`` of ``group_id``.

    Raises the broker's error (a ``KafkaError``) for anything but "not stable yet" and
    "coordinator busy", e.g. an authorisation failure; a connection failure raises too,
    and the caller retries it like any other.
    """
    wanted = frozenset(partitions)
    if not wanted:
        return StableOffsets({}, frozenset())
    client: Any = consumer._client
    node_id = consumer._coordinator.coordinator_id if consumer._coordinator else None
    if node_id is None:
        return StableOffsets({}, wanted)
    response: Any = await client.send(
        node_id, _StableOffsetFetch(group_id, wanted), group=ConnectionGroup.COORDINATION
    )
    if response.error_code in _COORDINATOR_BUSY:
        return StableOffsets({}, wanted)
    if response.error_code != _NONE:
        raise for_code(response.error_code)(f"offset fetch for group {group_id!r}")
    committed: dict[TopicPartition, int | None] = {}
    unstable: set[TopicPartition] = set()
    for topic, answers, _tags in response.topics:
        for number, offset, _epoch, _metadata, error, _ptags in answers:
            tp = TopicPartition(topic, number)
            if tp not in wanted:
                continue
            if error in (_UNSTABLE_OFFSET_COMMIT, *_COORDINATOR_BUSY):
                unstable.add(tp)
            elif error != _NONE:
                raise for_code(error)(f"offset fetch for {topic}[{number}]")
            else:
                committed[tp] = offset if offset >= 0 else None
    unstable |= wanted - committed.keys() - unstable
    return StableOffsets(committed, frozenset(unstable))


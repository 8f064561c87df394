"""Transactional offset commits that a dropped group member cannot make (KIP-447, part 2).

In exactly_once mode a batch's input offsets are committed inside the producer's
transaction with TxnOffsetCommit.  aiokafka sends version 0 of that request, which names
the group but not the committer's generation or member id, so the group coordinator
accepts it from anybody.  That lets a *zombie* commit: during a broker outage a worker's
session expires, the group hands its partitions to another worker, and the dropped
worker, which has not heard yet, commits the batch it was holding, while the new owner
resumes from the older committed offset and commits the same batch again.  A fresh-clone
CI run of the chaos test saw 398 duplicate outputs from exactly that.

Kafka's answer is TxnOffsetCommit v3 with ``generation_id``, ``member_id`` and
``group_instance_id``: the coordinator refuses a commit from a member it no longer has
(UNKNOWN_MEMBER_ID), from an older generation (ILLEGAL_GENERATION) or from a fenced
static member (FENCED_INSTANCE_ID), and the transaction can only be aborted.
:func:`fence_offset_commits` makes one producer send that version, with the membership
that its worker's consumer holds at the moment of each attempt.  While the consumer has
no membership (it is rejoining), the commit is refused locally instead of being sent
without one, which the coordinator would accept unchecked.

aiokafka has no hook for this: the producer's sender builds the request inside
``_do_txn_offset_commit``, so that method is replaced on the one sender instance (not
on the class: other producers in the process keep aiokafka's behaviour).  The private
names used are read here and nowhere else, and tests/integration/test_fenced_offsets.py
pins the behaviour on a real broker, so an aiokafka upgrade that moves them fails a test.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.client import CoordinationType
from aiokafka.errors import CommitFailedError, GroupAuthorizationFailedError, KafkaError
from aiokafka.producer.sender import TxnOffsetCommitHandler
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)
from aiokafka.structs import OffsetAndMetadata, TopicPartition

__all__ = ["Membership", "NotTheOwnerError", "fence_offset_commits", "membership_of"]

_TXN_OFFSET_COMMIT = 28
#: The coordinator's "you are not (this) member any more" answers.  The transaction can
#: only be aborted; the batch belongs to the partitions' current owner now.
_NOT_A_MEMBER = {
    22: "ILLEGAL_GENERATION",
    25: "UNKNOWN_MEMBER_ID",
    27: "REBALANCE_IN_PROGRESS",
    82: "FENCED_INSTANCE_ID",
}
#: "No leader epoch": the committed offset carries none, as with aiokafka's own commits.
_NO_LEADER_EPOCH = -1


class NotTheOwnerError(CommitFailedError):  # type: ignore[misc]  # untyped base
    """This worker may not commit the batch's offsets: the group has moved on without it.

    A ``CommitFailedError`` (what aiokafka raises when a rebalance took the partitions),
    with our reason as its whole text instead of aiokafka's advice on poll intervals,
    which does not apply to a member dropped during an outage.
    """

    def __init__(self, reason: str) -> None:
        KafkaError.__init__(self, reason)


@dataclass(frozen=True, slots=True)
class Membership:
    """Who commits: the consumer's group generation, member id and static instance id."""

    generation: int
    member_id: str
    instance_id: str | None

    @property
    def known(self) -> bool:
        """A joined member.  Generation -1 and no member id mean "rejoining"."""
        return self.generation >= 0 and bool(self.member_id)


NOT_A_MEMBER = Membership(-1, "", None)


def membership_of(consumer: AIOKafkaConsumer | None) -> Membership:
    """The membership ``consumer`` holds now (``NOT_A_MEMBER`` before it has joined)."""
    coordinator: Any = consumer._coordinator if consumer is not None else None
    if coordinator is None:
        return NOT_A_MEMBER
    instance_id: str | None = coordinator._group_instance_id
    return Membership(int(coordinator.generation), str(coordinator.member_id), instance_id)


class _TxnOffsetCommitResponseV3(Response):  # type: ignore[misc]  # untyped base
    API_KEY = _TXN_OFFSET_COMMIT
    API_VERSION = 3
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
                        ("error_code", Int16),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class _TxnOffsetCommitRequestV3(RequestStruct):  # type: ignore[misc]  # untyped base
    FLEXIBLE_VERSION = True
    API_KEY = _TXN_OFFSET_COMMIT
    API_VERSION = 3
    RESPONSE_TYPE = _TxnOffsetCommitResponseV3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("group_id", CompactString("utf-8")),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("generation_id", Int32),
        ("member_id", CompactString("utf-8")),
        ("group_instance_id", CompactString("utf-8")),
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
                        ("committed_metadata", CompactString("utf-8")),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


_Structs: TypeAlias = _TxnOffsetCommitRequestV3


class _FencedTxnOffsetCommitRequest(Request[_Structs]):  # type: ignore[misc]  # untyped base
    API_KEY = _TXN_OFFSET_COMMIT

    def __init__(
        self,
        transactional_id: str,
        group_id: str,
        producer: tuple[int, int],
        member: Membership,
        offsets: dict[TopicPartition, OffsetAndMetadata],
    ) -> None:
        by_topic: dict[str, list[tuple[int, int, int, str, dict[int, bytes]]]] = defaultdict(list)
        for tp, offset in sorted(offsets.items()):
            by_topic[tp.topic].append(
                (tp.partition, offset.offset, _NO_LEADER_EPOCH, offset.metadata, {})
            )
        self._fields: tuple[Any, ...] = (
            transactional_id,
            group_id,
            producer[0],
            producer[1],
            member.generation,
            member.member_id,
            member.instance_id,
            [(topic, partitions, {}) for topic, partitions in by_topic.items()],
            {},
        )

    def build(self, request_struct_class: type[_Structs]) -> _Structs:
        return request_struct_class(*self._fields)


class _FencedTxnOffsetCommitHandler(TxnOffsetCommitHandler):  # type: ignore[misc]
    """aiokafka's handler with the v3 request; membership errors abort the transaction."""

    def __init__(
        self,
        sender: Any,
        offsets: dict[TopicPartition, OffsetAndMetadata],
        group_id: str,
        member: Membership,
    ) -> None:
        super().__init__(sender, offsets, group_id)
        self._member = member

    def create_request(self) -> _FencedTxnOffsetCommitRequest:
        txn_manager = self._sender._txn_manager
        return _FencedTxnOffsetCommitRequest(
            txn_manager.transactional_id,
            self._group_id,
            (txn_manager.producer_id, txn_manager.producer_epoch),
            self._member,
            self._offsets,
        )

    def handle_response(self, resp: Any) -> float | None:
        errors = [
            (topic, [(number, error) for number, error, _tags in partitions])
            for topic, partitions, _tags in resp.topics
        ]
        refused = {
            _NOT_A_MEMBER[error]
            for _topic, partitions in errors
            for _number, error in partitions
            if error in _NOT_A_MEMBER
        }
        if refused:
            _fail_transaction(
                self._sender._txn_manager,
                NotTheOwnerError(
                    f"group {self._group_id!r} refused the offsets of generation "
                    f"{self._member.generation} ({', '.join(sorted(refused))}): this worker "
                    "is not the partitions' owner any more"
                ),
            )
            return None
        # Every other answer means what it means to aiokafka's own handler.
        result: float | None = super().handle_response(_V0Shape(errors))
        return result


def _fail_transaction(txn_manager: Any, exc: Exception) -> None:
    """Fail the transaction (it can only be aborted now) and its offsets' future.

    aiokafka also sets the exception on the producer's transaction waiter, which nobody
    awaits once the worker aborts; reading it here keeps asyncio from logging "Future
    exception was never retrieved" for every refused commit.  A later ``await`` of the
    waiter still raises.
    """
    txn_manager.error_transaction(exc)
    waiter = txn_manager._transaction_waiter
    if waiter.done():
        waiter.exception()


@dataclass(frozen=True, slots=True)
class _V0Shape:
    """A v3 answer in the v0 shape (``errors``) that aiokafka's handler reads."""

    errors: list[tuple[str, list[tuple[int, int]]]]


def fence_offset_commits(producer: AIOKafkaProducer, member: Callable[[], Membership]) -> None:
    """Make ``producer`` commit transactional offsets as ``member()`` at each attempt.

    ``member`` is asked again for every attempt, so a worker that was dropped and
    rejoined commits with its new generation; while it answers "no membership" the
    transaction fails with ``NotTheOwnerError`` (a ``CommitFailedError``) before anything
    is sent.
    """
    sender: Any = producer._sender

    async def commit_offsets(
        offsets: dict[TopicPartition, OffsetAndMetadata], group_id: str
    ) -> None:
        if not offsets:
            return
        txn_manager = sender._txn_manager
        current = member()
        if not current.known:
            _fail_transaction(
                txn_manager,
                NotTheOwnerError(
                    f"not a member of group {group_id!r} now (rejoining): offsets not sent"
                ),
            )
            return
        try:
            node_id = await sender._find_coordinator(CoordinationType.GROUP, group_id)
        except GroupAuthorizationFailedError as exc:
            _fail_transaction(txn_manager, exc)
            return
        await _FencedTxnOffsetCommitHandler(sender, offsets, group_id, current).do(node_id)

    sender._do_txn_offset_commit = commit_offsets

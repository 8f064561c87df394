"""exactly_once: a worker the group has dropped cannot commit (consumer/fenced_offsets.py).

The case it closes: in a broker outage a worker's session expires and its partitions go
to another worker; the dropped worker, not told yet, commits the batch it holds, and the
new owner commits the same batch again from the older offset.  With the generation and
member id in every transactional offset commit, the coordinator refuses the first.

The existing exactly_once worker tests show the other side: a real member's commits go
through with the same code.
"""

from __future__ import annotations

import asyncio
import gc

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError
from kafkatools import Topics, produce, unique_name
from workers import wait_until

from consumer.fenced_offsets import NOT_A_MEMBER, Membership, fence_offset_commits, membership_of
from consumer.stable_offsets import fetch_stable_offsets

pytestmark = pytest.mark.kafka


def _consumer(bootstrap: str, topic: str, group_id: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group_id, enable_auto_commit=False
    )


async def _committed(member: AIOKafkaConsumer, group_id: str, tp: TopicPartition) -> int | None:
    async def stable() -> bool:
        return not (await fetch_stable_offsets(member, group_id, [tp])).unstable

    await wait_until(stable, 30, "stable offsets")
    return (await fetch_stable_offsets(member, group_id, [tp])).committed[tp]


async def test_a_dropped_member_cannot_commit_and_the_current_one_can(
    kafka_bootstrap: str, topics: Topics, group_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    await produce(kafka_bootstrap, topics.raw, [b"{}"] * 6, partition=0)
    tp = TopicPartition(topics.raw, 0)
    committer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=unique_name("it-fenced")
    )
    as_member: list[Membership] = [NOT_A_MEMBER]
    fence_offset_commits(committer, lambda: as_member[0])
    dropped = _consumer(kafka_bootstrap, topics.raw, group_id)
    successor = _consumer(kafka_bootstrap, topics.raw, group_id)
    await committer.start()
    try:
        await dropped.start()
        await wait_until(dropped.assignment, 30, "the first member's assignment")
        stale = membership_of(dropped)
        assert stale.known
        await dropped.stop()  # it leaves; the group moves on without it
        await successor.start()
        await wait_until(successor.assignment, 30, "the successor's assignment")
        current = membership_of(successor)
        assert current.known and current.member_id != stale.member_id

        # The dropped member's commit: refused by the coordinator, transaction aborted.
        as_member[0] = stale
        await committer.begin_transaction()
        with pytest.raises(CommitFailedError, match=r"UNKNOWN_MEMBER_ID|ILLEGAL_GENERATION"):
            await committer.send_offsets_to_transaction({tp: 3}, group_id)
        await committer.abort_transaction()
        assert await _committed(successor, group_id, tp) is None

        # The current member's generation but a member id the group never had: refused.
        as_member[0] = Membership(current.generation, "never-a-member", None)
        await committer.begin_transaction()
        with pytest.raises(CommitFailedError, match="UNKNOWN_MEMBER_ID"):
            await committer.send_offsets_to_transaction({tp: 4}, group_id)
        await committer.abort_transaction()

        # Rejoining (no membership): refused before anything is sent.
        as_member[0] = NOT_A_MEMBER
        await committer.begin_transaction()
        with pytest.raises(CommitFailedError, match="rejoining"):
            await committer.send_offsets_to_transaction({tp: 4}, group_id)
        await committer.abort_transaction()
        assert await _committed(successor, group_id, tp) is None

        # The partitions' owner: its commit goes through, in the same producer.
        as_member[0] = current
        await committer.begin_transaction()
        await committer.send_offsets_to_transaction({tp: 5}, group_id)
        await committer.commit_transaction()
        assert await _committed(successor, group_id, tp) == 5

        # A refused commit leaves no unread exception behind for asyncio to complain of.
        gc.collect()
        await asyncio.sleep(0)
        assert "never retrieved" not in caplog.text
    finally:
        await committer.stop()
        await successor.stop()
        await dropped.stop()


async def test_a_consumer_that_never_joined_has_no_membership() -> None:
    assert membership_of(None) == NOT_A_MEMBER
    assert not NOT_A_MEMBER.known
    assert Membership(3, "member-1", None).known
    assert not Membership(3, "", None).known

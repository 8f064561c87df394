"""exactly_once never resumes a partition from an offset that a pending transaction may
still move (KIP-447 ``require_stable``, which aiokafka lacks: consumer/stable_offsets.py).

The case it closes: a worker's transaction is being committed when the broker restarts,
or when its partitions move to another worker; until the coordinator has written the
markers, an ordinary offset fetch answers with the older offset, and the worker that
resumes from it writes that batch's outputs a second time.
"""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafkatools import Topics, consume_all, produce, unique_name
from workers import dsn_payload, fully_committed, in_process_worker, wait_until, worker_env

from consumer.rules import Rules
from consumer.stable_offsets import fetch_stable_offsets

pytestmark = pytest.mark.kafka


async def test_pending_transactional_offsets_are_reported_unstable(
    kafka_bootstrap: str, topics: Topics, group_id: str
) -> None:
    """While a transaction holds an offset commit, the fetch says "unstable" where an
    ordinary fetch (aiokafka's ``committed``) gives the older offset; once committed,
    the new offset."""
    await produce(kafka_bootstrap, topics.raw, [b"{}"] * 6, partition=0)
    first, other = TopicPartition(topics.raw, 0), TopicPartition(topics.raw, 1)
    owner = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=unique_name("it-previous-owner")
    )
    reader = AIOKafkaConsumer(
        topics.raw, bootstrap_servers=kafka_bootstrap, group_id=group_id,
        enable_auto_commit=False,
    )
    await owner.start()
    await reader.start()
    try:
        await wait_until(reader.assignment, 30, "the reader's assignment")
        await reader.getmany(timeout_ms=500)
        assert (await fetch_stable_offsets(reader, group_id, [first, other])).committed == {
            first: None, other: None
        }

        await owner.begin_transaction()
        await owner.send_offsets_to_transaction({first: 4}, group_id)
        pending = await fetch_stable_offsets(reader, group_id, [first, other])
        assert pending.unstable == {first}
        assert pending.committed == {other: None}
        assert await reader.committed(first) is None  # the answer that caused duplicates

        await owner.commit_transaction()
        async def stable() -> bool:
            return not (await fetch_stable_offsets(reader, group_id, [first])).unstable
        await wait_until(stable, 30, "the commit's markers")
        assert (await fetch_stable_offsets(reader, group_id, [first])).committed == {first: 4}
    finally:
        await reader.stop()
        await owner.stop()


async def test_worker_waits_for_the_previous_owners_pending_commit(
    kafka_bootstrap: str, topics: Topics, group_id: str, rules: Rules
) -> None:
    """A previous owner's transaction has committed offset 30 of partition 0 but is not
    complete yet: the exactly_once worker holds partition 0 (and says why on /readyz)
    instead of starting at 0, and resumes at 30 once the transaction completes; every
    other partition is processed meanwhile."""
    values = [dsn_payload(f"held{i}@example.com", bounced=True) for i in range(40)]
    await produce(kafka_bootstrap, topics.raw, values, partition=0)
    await produce(kafka_bootstrap, topics.raw, values[:10], partition=1)
    held = TopicPartition(topics.raw, 0)

    owner = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, transactional_id=unique_name("it-previous-owner")
    )
    await owner.start()
    env = worker_env(kafka_bootstrap, topics, group_id, PROCESSING_GUARANTEE="exactly_once",
                     KAFKA_TRANSACTIONAL_ID=unique_name("it-eos"))
    try:
        await owner.begin_transaction()
        await owner.send_offsets_to_transaction({held: 30}, group_id)
        async with in_process_worker(env, rules) as worker:
            events = await consume_all(kafka_bootstrap, topics.events, expect=10, timeout=60)
            assert {orjson.loads(r.value)["source"]["partition"] for r in events} == {1}
            await asyncio.sleep(2)  # time enough to (wrongly) start partition 0 at 0
            ready, reason = worker.health.ready()
            assert not ready and "pending transactions on 1 partitions" in reason
            assert len(await consume_all(kafka_bootstrap, topics.events, expect=11,
                                         timeout=1)) == 10

            await owner.commit_transaction()
            await wait_until(lambda: fully_committed(kafka_bootstrap, group_id, topics.raw),
                             60, "every raw offset committed")
            await wait_until(lambda: worker.health.ready()[0], 30, "ready again")
    finally:
        await owner.stop()
    events = await consume_all(kafka_bootstrap, topics.events, expect=20, settle=1)
    offsets = sorted(
        orjson.loads(r.value)["source"]["offset"]
        for r in events
        if orjson.loads(r.value)["source"]["partition"] == 0
    )
    assert offsets == list(range(30, 40))

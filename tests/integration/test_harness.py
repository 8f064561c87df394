"""The integration harness itself, against a real broker: if these fail, distrust the rest."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import UnknownError
from aiokafka.structs import TopicPartition
from kafkatools import (
    LOCAL_KAFKA,
    BrokerUnavailableError,
    LocalBroker,
    Topics,
    committed_offsets,
    consume_all,
    create_topics,
    delete_topics,
    end_offsets,
    free_port_pair,
    produce,
    topic_configs,
    topic_partitions,
    unique_name,
    wait_for_broker,
)

pytestmark = pytest.mark.kafka


async def test_topics_fixture_partitions_and_compaction(
    kafka_bootstrap: str, topics: Topics
) -> None:
    """The four per-test topics exist with 3 partitions each, and only suppressions is compacted."""
    assert len(set(topics.names)) == 4
    for name in topics.names:
        assert await topic_partitions(kafka_bootstrap, name) == [0, 1, 2]
    policies = {
        name: (await topic_configs(kafka_bootstrap, name))["cleanup.policy"]
        for name in topics.names
    }
    assert policies == {
        topics.raw: "delete",
        topics.events: "delete",
        topics.suppressions: "compact",
        topics.dlq: "delete",
    }


async def test_create_then_delete_topics(kafka_bootstrap: str) -> None:
    """create_topics returns with leaders elected (idempotently) and delete_topics makes them disappear."""
    one, two = unique_name("it.harness"), unique_name("it.harness")
    await create_topics(kafka_bootstrap, {one: 1, two: 5}, compact={two})
    await create_topics(kafka_bootstrap, {one: 1})  # already there: accepted
    assert await topic_partitions(kafka_bootstrap, one) == [0]
    assert await topic_partitions(kafka_bootstrap, two) == [0, 1, 2, 3, 4]
    await delete_topics(kafka_bootstrap, [one, two, unique_name("it.never-created")])
    with pytest.raises(TimeoutError, match="missing"):
        await topic_partitions(kafka_bootstrap, one, timeout=0.5)


async def test_produce_consume_roundtrip_keys_headers(kafka_bootstrap: str, topics: Topics) -> None:
    """Records come back with their keys, values and headers, in order per key, exactly once."""
    values = [f"value-{i}".encode() for i in range(30)]
    keys: list[bytes | None] = [f"key-{i % 4}".encode() for i in range(29)] + [None]
    headers = [[("n", str(i).encode()), ("trace", b"\x00\xff")] for i in range(30)]
    sent = await produce(kafka_bootstrap, topics.raw, values, keys, headers)
    assert [m.topic for m in sent] == [topics.raw] * 30

    got = await consume_all(kafka_bootstrap, topics.raw, expect=30, timeout=30, settle=0.5)

    assert sorted((r.key, r.value) for r in got if r.key is not None) == sorted(
        zip(keys[:29], values[:29], strict=True)
    )
    assert sorted(r.value for r in got) == sorted(values)  # exactly once, the unkeyed one too
    by_value = {r.value: r for r in got}
    for i, (value, meta) in enumerate(zip(values, sent, strict=True)):
        record = by_value[value]
        assert (record.partition, record.offset) == (meta.partition, meta.offset)
        assert list(record.headers) == headers[i]
    for key in {k for k in keys if k is not None}:
        same_key = [r for r in got if r.key == key]
        assert len({r.partition for r in same_key}) == 1
        assert [r.value for r in same_key] == [
            v for k, v in zip(keys, values, strict=True) if k == key
        ]


async def test_consume_all_returns_what_it_has_on_timeout(
    kafka_bootstrap: str, topics: Topics
) -> None:
    """With fewer records than expected, consume_all returns them after the timeout instead of raising."""
    await produce(kafka_bootstrap, topics.dlq, [b"a", b"b"], partition=1)
    started = time.monotonic()
    got = await consume_all(kafka_bootstrap, topics.dlq, expect=3, timeout=1.5)
    assert [r.value for r in got] == [b"a", b"b"]
    assert time.monotonic() - started >= 1.5


async def test_committed_offsets_after_manual_commit(
    kafka_bootstrap: str, topics: Topics, group_id: str
) -> None:
    """committed_offsets shows exactly the partitions a group committed, and nothing before that."""
    assert await committed_offsets(kafka_bootstrap, group_id, topics.events) == {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=group_id, enable_auto_commit=False
    )
    try:
        await consumer.start()
        consumer.assign([TopicPartition(topics.events, p) for p in (0, 2)])
        await consumer.commit(
            {TopicPartition(topics.events, 0): 7, TopicPartition(topics.events, 2): 3}
        )
    finally:
        await consumer.stop()
    assert await committed_offsets(kafka_bootstrap, group_id, topics.events) == {0: 7, 2: 3}
    assert await committed_offsets(kafka_bootstrap, group_id, topics.raw) == {}


async def test_end_offsets(kafka_bootstrap: str, topics: Topics) -> None:
    """end_offsets lists every partition with its next offset, 0 while empty."""
    assert await end_offsets(kafka_bootstrap, topics.events) == {0: 0, 1: 0, 2: 0}
    await produce(kafka_bootstrap, topics.events, [b"x"] * 4, partition=1)
    await produce(kafka_bootstrap, topics.events, [b"y"], [b"k"], partition=2)
    assert await end_offsets(kafka_bootstrap, topics.events) == {0: 0, 1: 4, 2: 1}


async def test_compacted_topic_rejects_keyless_records(
    kafka_bootstrap: str, topics: Topics
) -> None:
    """The broker refuses a keyless record on the compacted topic, which aiokafka reports as UnknownError."""
    await produce(kafka_bootstrap, topics.suppressions, [b"kept"], [b"addr"])
    with pytest.raises(UnknownError, match="compacted"):
        await produce(kafka_bootstrap, topics.suppressions, [b"no key"])
    assert sum((await end_offsets(kafka_bootstrap, topics.suppressions)).values()) == 1


async def test_wait_for_broker_fails_without_broker() -> None:
    """wait_for_broker raises (never hangs) when nothing listens, which kafka_bootstrap turns into a failure."""
    port, _ = free_port_pair()
    with pytest.raises(BrokerUnavailableError, match=f"127.0.0.1:{port}"):
        await wait_for_broker(f"127.0.0.1:{port}", timeout=1.0)


async def test_dedicated_broker_keeps_data_across_restart(dedicated_broker: LocalBroker) -> None:
    """A dedicated broker stops (no longer answers) and restarts on its data at the same address."""
    bootstrap = dedicated_broker.bootstrap
    topic = unique_name("it.restart")
    await create_topics(bootstrap, {topic: 3})
    await produce(bootstrap, topic, [f"r{i}".encode() for i in range(10)])

    await dedicated_broker.stop_async()
    assert not dedicated_broker.is_running()
    with pytest.raises(BrokerUnavailableError):
        await wait_for_broker(bootstrap, timeout=1.0)

    # The event loop stays free while the broker restarts in a thread.
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.1)
            ticks += 1

    ticker = asyncio.create_task(tick())
    try:
        assert await dedicated_broker.start_async() == bootstrap
    finally:
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
    assert ticks > 5
    got = await consume_all(bootstrap, topic, expect=10, timeout=30, settle=0.5)
    assert sorted(r.value for r in got) == sorted(f"r{i}".encode() for i in range(10))


def test_local_kafka_refuses_data_a_newer_kafka_wrote(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A data dir whose metadata log a newer Kafka wrote cannot be read by an older
    one: ``local-kafka start`` says so and how to get out, before starting a JVM that
    would only fail with a stack trace.  (Found when the pinned Kafka went back from
    4.4.0 to 4.2.2 and ``make demo`` met its old data dir.)"""
    broker = LocalBroker(tmp_path / "kafka")
    (broker.data_dir / "kraft-data").mkdir(parents=True)
    (broker.data_dir / ".local-kafka").touch()
    (broker.data_dir / "kraft-data" / "meta.properties").write_text("version=1\n")
    (broker.data_dir / "kafka-version").write_text("99.0.0\n")
    result = subprocess.run(
        [str(LOCAL_KAFKA), "start"],
        env=broker.env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "written by Kafka 99.0.0, newer than" in result.stderr
    assert "'local-kafka reset' deletes it" in result.stderr
    assert not (broker.data_dir / "kafka.pid").exists()


async def test_local_kafka_records_the_version_that_formatted_its_data(
    dedicated_broker: LocalBroker,
) -> None:
    written = (dedicated_broker.data_dir / "kafka-version").read_text().strip()
    pom = (LOCAL_KAFKA.parent / "pom.xml").read_text()
    assert f"<kafka.version>{written}</kafka.version>" in pom

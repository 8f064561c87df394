"""The worker against a real Kafka broker: outputs, dead letters, rebalances, crashes,
graceful stops and a broker restart.  Every input must be accounted for."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import orjson
import pytest
from kafkatools import (
    LocalBroker,
    Topics,
    committed_offsets,
    consume_all,
    create_topic_set,
    end_offsets,
    produce,
)
from workers import (
    ChildWorker,
    free_port,
    fully_committed,
    http_get,
    in_process_worker,
    wait_until,
    worker_env,
)

from consumer.errors import PayloadError
from consumer.pipeline import process
from consumer.rules import Rules

pytestmark = pytest.mark.kafka

FIXTURES = Path(__file__).parents[1] / "fixtures"
_ACTIONS = ("failed", "delayed", "delivered", "failed")
_TEXTS = (
    "smtp; 550 5.1.1 <{a}>: Recipient address rejected: User unknown",
    "smtp; 452 4.2.2 The email account that you tried to reach is over quota",
    "smtp; 250 2.0.0 OK 1700000000 gsmtp",
    "smtp; 554 5.7.1 Service unavailable; Client host [203.0.113.9] blocked using zen.spamhaus.org",
)


def dsn_payloads(count: int, start: int = 0) -> list[bytes]:
    """Distinct generic MTA events: every one gives exactly one normalized event."""
    out = []
    for i in range(start, start + count):
        address = f"user{i}@example{i % 7}.net"
        out.append(
            orjson.dumps(
                {
                    "finalRecipient": f"rfc822; {address}",
                    "action": _ACTIONS[i % 4],
                    "status": ("5.1.1", "4.2.2", "2.0.0", "5.7.1")[i % 4],
                    "diagnosticCode": _TEXTS[i % 4].format(a=address),
                    "lastAttemptDate": "Fri, 14 Mar 2025 09:12:05 +0000",
                    "reportingMta": "dns; mta.example.com",
                    "messageId": f"<m{i}@example.com>",
                }
            )
        )
    return out


def _sources(records: list) -> Counter[tuple[int, int]]:
    """How many events each input (partition, offset) produced."""
    return Counter(
        (body["source"]["partition"], body["source"]["offset"])
        for body in (orjson.loads(record.value) for record in records)
    )


async def _input_coordinates(bootstrap: str, topic: str) -> set[tuple[int, int]]:
    ends = await end_offsets(bootstrap, topic)
    return {(p, offset) for p, end in ends.items() for offset in range(end)}


async def test_every_sample_provider_end_to_end(
    kafka_bootstrap: str, topics: Topics, group_id: str, rules: Rules
) -> None:
    """Every bundled sample goes through the worker exactly as through the offline core."""
    files = sorted(FIXTURES.glob("*/*.json"))
    expected_events: Counter[tuple[str, str, str | None]] = Counter()
    expected_suppressions = 0
    poison: list[bytes] = []
    for path in files:
        try:
            outcome = process(path.read_bytes(), rules, "2025-01-01T00:00:00.000Z")
        except PayloadError:
            poison.append(path.read_bytes())
            continue
        expected_events.update(
            (e.event_id, e.status.value, e.recipient_state and e.recipient_state.value)
            for e in outcome.events
        )
        expected_suppressions += len(outcome.suppressions)
    assert poison, "the fixture set should hold invalid payloads"
    await produce(kafka_bootstrap, topics.raw, [path.read_bytes() for path in files])

    async with in_process_worker(worker_env(kafka_bootstrap, topics, group_id), rules):
        await wait_until(
            lambda: fully_committed(kafka_bootstrap, group_id, topics.raw), 90, "all committed"
        )

    events = await consume_all(kafka_bootstrap, topics.events, expect=sum(expected_events.values()))
    got = Counter(
        (body["eventId"], body["status"], body["recipientState"])
        for body in (orjson.loads(record.value) for record in events)
    )
    assert got == expected_events
    partitions_of: dict[bytes, set[int]] = {}
    for record in events:
        assert record.key == orjson.loads(record.value)["email"].encode()
        partitions_of.setdefault(record.key, set()).add(record.partition)
    assert all(len(found) == 1 for found in partitions_of.values())

    suppressions = await consume_all(kafka_bootstrap, topics.suppressions, expect=expected_suppressions)
    assert len(suppressions) == expected_suppressions
    dead = await consume_all(kafka_bootstrap, topics.dlq, expect=len(poison))
    assert sorted(record.value for record in dead) == sorted(poison)


async def test_poison_records_go_to_the_dead_letter_topic_and_the_worker_goes_on(
    kafka_bootstrap: str, topics: Topics, group_id: str, rules: Rules
) -> None:
    """Garbage, oversized and empty records become dead letters with source headers."""
    good = dsn_payloads(3)
    values = [good[0], b"\xff\xfe not json", good[1], b'{"x":' + b"1" * 5000 + b"}", b"", good[2]]
    await produce(kafka_bootstrap, topics.raw, values, keys=[b"same"] * len(values))
    env = worker_env(kafka_bootstrap, topics, group_id, MAX_PAYLOAD_BYTES="4096")
    async with in_process_worker(env, rules):
        await wait_until(
            lambda: fully_committed(kafka_bootstrap, group_id, topics.raw), 60, "all committed"
        )
    dead = await consume_all(kafka_bootstrap, topics.dlq, expect=3)
    events = await consume_all(kafka_bootstrap, topics.events, expect=3)
    assert len(dead) == 3
    assert len(events) == 3
    kinds = []
    for record in sorted(dead, key=lambda r: int(dict(r.headers)["__bounce.errors.offset"])):
        headers = {name: value.decode() for name, value in record.headers}
        assert headers["__bounce.errors.topic"] == topics.raw
        assert record.key == b"same"
        assert record.value == values[int(headers["__bounce.errors.offset"])][:4096]
        kinds.append((headers["__bounce.errors.exception"], headers["__bounce.errors.message"]))
    assert [kind for kind, _ in kinds] == ["DecodeError"] * 3
    assert "not valid UTF-8" in kinds[0][1] or "not valid JSON" in kinds[0][1]
    assert "over the limit" in kinds[1][1]
    assert "empty payload" in kinds[2][1]


async def test_exactly_once_writes_each_output_once(
    kafka_bootstrap: str, topics: Topics, group_id: str, rules: Rules
) -> None:
    """In exactly_once mode outputs and offsets commit together; read_committed sees each once."""
    count = 600
    await produce(kafka_bootstrap, topics.raw, dsn_payloads(count))
    env = worker_env(
        kafka_bootstrap, topics, group_id, PROCESSING_GUARANTEE="exactly_once",
        KAFKA_TRANSACTIONAL_ID=f"{group_id}-tx", MAX_BATCH_RECORDS="100",
    )
    async with in_process_worker(env, rules):
        await wait_until(
            lambda: fully_committed(kafka_bootstrap, group_id, topics.raw), 90, "all committed"
        )
    events = await consume_all(kafka_bootstrap, topics.events, expect=count, settle=1.0)
    assert len(events) == count
    assert set(_sources(events)) == await _input_coordinates(kafka_bootstrap, topics.raw)


async def test_two_workers_rebalance_while_records_flow(
    kafka_bootstrap: str, topics: Topics, group_id: str, rules: Rules
) -> None:
    """A second worker joins and the first leaves mid-stream; every input gets its event.

    Half the input is there from the start; the other half arrives once the second worker
    has its partitions (a fast first worker could otherwise drain everything before the
    second one joins, leaving it nothing to do)."""
    count = 6000
    await produce(kafka_bootstrap, topics.raw, dsn_payloads(count // 2))
    env = worker_env(kafka_bootstrap, topics, group_id, MAX_BATCH_RECORDS="100")
    async with in_process_worker(env, rules) as first:
        await wait_until(lambda: first.records_done() > 500, 60, "first worker progress")
        async with in_process_worker(env, rules) as second:
            await wait_until(lambda: second.health.ready()[0], 60, "second worker assigned")
            await produce(kafka_bootstrap, topics.raw, dsn_payloads(count // 2, count // 2))
            await wait_until(lambda: second.records_done() > 200, 60, "second worker progress")
            await first.close()
            await wait_until(
                lambda: fully_committed(kafka_bootstrap, group_id, topics.raw), 120, "all committed"
            )
    assert first.records_done() + second.records_done() >= count
    events = await consume_all(kafka_bootstrap, topics.events, expect=count, settle=0.5)
    assert set(_sources(events)) == await _input_coordinates(kafka_bootstrap, topics.raw)


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_kill_9_mid_batch_loses_nothing(
    kafka_bootstrap: str, topics: Topics, group_id: str, rules: Rules, tmp_path: Path,
    guarantee: str,
) -> None:
    """SIGKILL mid-stream, restart: no input lost; duplicates only without exactly_once."""
    count = 8000
    await produce(kafka_bootstrap, topics.raw, dsn_payloads(count))
    env = worker_env(
        kafka_bootstrap, topics, group_id, PROCESSING_GUARANTEE=guarantee,
        KAFKA_GROUP_INSTANCE_ID=f"{group_id}-0", KAFKA_TRANSACTIONAL_ID=f"{group_id}-tx",
        MAX_BATCH_RECORDS="200",
    )
    victim = ChildWorker(env, tmp_path / "first.log")
    try:
        await wait_until(
            lambda: _count_events(kafka_bootstrap, topics.events, 400), 90, "first outputs"
        )
        victim.kill()
    finally:
        victim.ensure_stopped()
    assert not await fully_committed(kafka_bootstrap, group_id, topics.raw), (
        "the worker finished before it was killed; the test proves nothing"
    )
    survivor = ChildWorker(env, tmp_path / "second.log")
    try:
        await wait_until(
            lambda: fully_committed(kafka_bootstrap, group_id, topics.raw), 180, "all committed"
        )
        assert survivor.terminate(30) == 0, survivor.log()[-3000:]
    finally:
        survivor.ensure_stopped()
    events = await consume_all(kafka_bootstrap, topics.events, expect=count, settle=1.0)
    produced = _sources(events)
    assert set(produced) == await _input_coordinates(kafka_bootstrap, topics.raw)
    if guarantee == "exactly_once":
        assert len(events) == count, "read_committed consumers must see each output once"


async def test_sigterm_exits_zero_with_offsets_committed(
    kafka_bootstrap: str, topics: Topics, group_id: str, tmp_path: Path
) -> None:
    """SIGTERM mid-stream: exit 0, and every record that has an output is committed."""
    count = 8000
    await produce(kafka_bootstrap, topics.raw, dsn_payloads(count))
    port = free_port()
    worker = ChildWorker(
        worker_env(kafka_bootstrap, topics, group_id, MAX_BATCH_RECORDS="200", LOG_LEVEL="info",
                   HTTP_PORT=str(port)),
        tmp_path / "worker.log",
    )
    try:
        await wait_until(
            lambda: _count_events(kafka_bootstrap, topics.events, 400), 90, "first outputs"
        )
        await wait_until(lambda: _http_ok(port, "/readyz"), 30, "/readyz 200")
        assert await _http_ok(port, "/healthz")
        metrics = (await asyncio.to_thread(http_get, port, "/metrics"))[1]
        assert "mailevents_build_info{" in metrics
        assert 'mailevents_records_total{outcome="ok"}' in metrics
        assert worker.terminate(30) == 0, worker.log()[-3000:]
    finally:
        worker.ensure_stopped()
    committed = await committed_offsets(kafka_bootstrap, group_id, topics.raw)
    events = await consume_all(kafka_bootstrap, topics.events, expect=400, timeout=10, settle=1.0)
    highest: dict[int, int] = {}
    for partition, offset in _sources(events):
        highest[partition] = max(highest.get(partition, -1), offset)
    assert committed == {p: offset + 1 for p, offset in highest.items()}
    log = worker.log()
    assert '"event":"stopping"' in log
    assert '"event":"worker stopped"' in log
    assert "@example" not in log, "an address reached the log in clear"


async def test_broker_restart_mid_stream_loses_nothing(
    dedicated_broker: LocalBroker, group_id: str, rules: Rules
) -> None:
    """The broker goes away and comes back: the worker reports not-ready, then resumes."""
    bootstrap = dedicated_broker.bootstrap
    topics = await create_topic_set(bootstrap)
    count = 6000
    await produce(bootstrap, topics.raw, dsn_payloads(count))
    env = worker_env(
        bootstrap, topics, group_id, MAX_BATCH_RECORDS="100", KAFKA_REQUEST_TIMEOUT_MS="5000"
    )
    async with in_process_worker(env, rules) as worker:
        await wait_until(lambda: worker.records_done() > 500, 60, "progress before the outage")
        await dedicated_broker.stop_async()
        await wait_until(lambda: not worker.health.ready()[0], 60, "not ready during the outage")
        await asyncio.sleep(2)
        await dedicated_broker.start_async()
        await wait_until(
            lambda: fully_committed(bootstrap, group_id, topics.raw), 180, "all committed"
        )
        await wait_until(lambda: worker.health.ready()[0], 30, "ready again")
    events = await consume_all(bootstrap, topics.events, expect=count, settle=0.5)
    assert set(_sources(events)) == await _input_coordinates(bootstrap, topics.raw)


async def _http_ok(port: int, path: str) -> bool:
    return (await asyncio.to_thread(http_get, port, path))[0] == 200


async def _count_events(bootstrap: str, topic: str, at_least: int) -> bool:
    ends = await end_offsets(bootstrap, topic)
    return sum(ends.values()) >= at_least


async def test_broker_unreachable_at_start_then_resumes(
    dedicated_broker: LocalBroker, group_id: str, rules: Rules
) -> None:
    """Started while the broker is down, the worker retries, reports not-ready, then catches up."""
    bootstrap = dedicated_broker.bootstrap
    topics = await create_topic_set(bootstrap)
    count = 500
    await produce(bootstrap, topics.raw, dsn_payloads(count))
    await dedicated_broker.stop_async()
    env = worker_env(bootstrap, topics, group_id, RETRY_BACKOFF_MAX_SECONDS="1")
    async with in_process_worker(env, rules) as worker:
        await asyncio.sleep(3)
        ready, reason = worker.health.ready()
        assert not ready
        assert "unreachable" in reason
        await dedicated_broker.start_async()
        await wait_until(
            lambda: fully_committed(bootstrap, group_id, topics.raw), 120, "all committed"
        )
        await wait_until(lambda: worker.health.ready()[0], 30, "ready")
    events = await consume_all(bootstrap, topics.events, expect=count)
    assert set(_sources(events)) == await _input_coordinates(bootstrap, topics.raw)


async def test_missing_output_topic_stops_the_worker_with_a_clear_reason(
    kafka_bootstrap: str, topics: Topics, group_id: str, tmp_path: Path
) -> None:
    """An output topic that does not exist: nothing is committed, exit 3, the topic named."""
    await produce(kafka_bootstrap, topics.raw, dsn_payloads(10))
    env = worker_env(
        kafka_bootstrap, topics, group_id, EVENTS_TOPIC="it.no-such-topic",
        KAFKA_REQUEST_TIMEOUT_MS="3000", LOG_LEVEL="info",
    )
    worker = ChildWorker(env, tmp_path / "worker.log")
    try:
        code = await asyncio.to_thread(worker.process.wait, 60)
    finally:
        worker.ensure_stopped()
    assert code == 3, worker.log()[-2000:]
    assert "it.no-such-topic" in worker.log()
    assert await committed_offsets(kafka_bootstrap, group_id, topics.raw) == {}

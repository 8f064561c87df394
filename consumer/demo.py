"""``bounce-consumer demo``: the whole job end to end on a real broker, in one command.

It creates a fresh set of topics for this run (so a second run shows only its own
records), feeds the sample payloads of every provider into the raw topic, runs the
real worker until every record is committed, then prints what came out: normalized
events, suppression updates, dead letters and the bounce rates from the worker's own
Prometheus metrics.  The topics are deleted at the end.  Addresses are shown by
domain only, as everywhere the product prints or logs.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry

from consumer.app import Worker
from consumer.config import Settings, from_env
from consumer.health import Health
from consumer.metrics import Metrics
from consumer.rules import Rules

__all__ = ["run_demo"]

_PARTITIONS = 3


async def run_demo(bootstrap: str, samples: Path, rules: Rules, out: TextIO = sys.stdout) -> int:
    """Feed ``samples`` (every ``*.json`` below it) through a worker; print the outputs."""
    files = sorted(path for path in samples.rglob("*.json") if path.is_file())
    if not files:
        print(f"no *.json sample payloads under {samples}", file=sys.stderr)
        return 2
    run = uuid.uuid4().hex[:8]
    settings = from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_GROUP_ID": f"bounce-demo-{run}",
            "INPUT_TOPICS": f"demo-{run}.raw",
            "EVENTS_TOPIC": f"demo-{run}.events",
            "SUPPRESSIONS_TOPIC": f"demo-{run}.suppressions",
            "DLQ_TOPIC": f"demo-{run}.dlq",
            "HTTP_PORT": "0",
        }
    )
    outputs = [settings.events_topic, settings.suppressions_topic, settings.dlq_topic]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, _PARTITIONS, 1) for topic in [settings.input_topics[0], *outputs]]
        )
        await _wait_for_leaders(admin, [settings.input_topics[0], *outputs])
        _say(out, f"created topics demo-{run}.{{raw,events,suppressions,dlq}} on {bootstrap}")
        await _feed(bootstrap, settings.input_topics[0], files)
        _say(out, f"fed {len(files)} sample payloads from {samples}")
        registry = CollectorRegistry()
        metrics = Metrics(registry)
        seconds = await _run_worker_until_done(settings, rules, metrics, len(files), out)
        _say(out, f"worker processed {len(files)} records in {seconds:.1f} s")
        found = {topic: await _read_all(bootstrap, topic) for topic in outputs}
        _print_events(out, found[settings.events_topic])
        _print_suppressions(out, found[settings.suppressions_topic])
        _print_dead_letters(out, found[settings.dlq_topic])
        _print_rates(out, registry)
    finally:
        await admin.delete_topics([settings.input_topics[0], *outputs])
        await admin.close()
    return 0


def _say(out: TextIO, line: str) -> None:
    out.write(f"demo: {line}\n")
    out.flush()


async def _wait_for_leaders(admin: AIOKafkaAdminClient, topics: list[str]) -> None:
    """New topics take a moment to elect leaders; producing before that only logs retries."""
    for _ in range(100):
        described = await admin.describe_topics(topics)
        leaders = [p["leader"] for t in described for p in t["partitions"]]
        if len(leaders) == len(topics) * _PARTITIONS and min(leaders) >= 0:
            return
        await asyncio.sleep(0.1)


async def _feed(bootstrap: str, topic: str, files: list[Path]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        futures = [await producer.send(topic, path.read_bytes()) for path in files]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _run_worker_until_done(
    settings: Settings, rules: Rules, metrics: Metrics, expected: int, out: TextIO
) -> float:
    """Run the worker until it has counted ``expected`` records, with a progress line."""
    stop = asyncio.Event()
    started = time.monotonic()
    task = asyncio.create_task(Worker(settings, rules, metrics, Health()).run(stop))
    shown = -1
    try:
        while True:
            done = int(sum(sample.value for sample in _samples(metrics.registry, "records_total")))
            if done != shown:
                _say(out, f"processed {done}/{expected} records")
                shown = done
            if done >= expected:
                break
            if task.done():
                task.result()
                raise RuntimeError("the worker stopped before processing every record")
            if time.monotonic() - started > 120:
                raise RuntimeError(f"only {done} of {expected} records processed in 120 s")
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await task
    return time.monotonic() - started


async def _read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every record of ``topic`` up to its current end, without a consumer group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(_PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Any] = []
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=1000)
            for messages in batch.values():
                records.extend(messages)
        return records
    finally:
        await consumer.stop()


def _print_events(out: TextIO, records: list[Any]) -> None:
    out.write(f"\n--- normalized events ({len(records)})\n")
    out.write(f"{'provider':<10} {'status':<10} {'recipientState':<28} {'mailbox':<10} "
              f"{'classifiedBy':<13} domain\n")
    rows = sorted((orjson.loads(record.value) for record in records), key=_event_order)
    for event in rows:
        out.write(
            f"{event['provider']:<10} {event['status']:<10} "
            f"{event['recipientState'] or '-':<28} {event['mailboxProvider']:<10} "
            f"{event['classifiedBy']:<13} {event['domain']}\n"
        )


def _event_order(event: dict[str, Any]) -> tuple[str, str, str]:
    return (event["provider"], event["status"], event["recipientState"] or "")


def _print_suppressions(out: TextIO, records: list[Any]) -> None:
    out.write(f"\n--- suppression updates ({len(records)})\n")
    for record in records:
        update = orjson.loads(record.value)
        scope = update["scope"]
        where = f" scope={scope['kind']}:{scope['id']}" if scope else ""
        review = " needsReview" if update["needsReview"] else ""
        domain = update["email"].rpartition("@")[2]
        out.write(f"{update['action']:<10} {update['reason']:<24} {update['provider']:<10} "
                  f"@{domain}{where}{review}\n")


def _print_dead_letters(out: TextIO, records: list[Any]) -> None:
    out.write(f"\n--- dead letters ({len(records)})\n")
    out.write("partition:offset  kind              reason\n")
    rows = [{name: value.decode() for name, value in record.headers} for record in records]
    rows.sort(key=lambda h: (int(h["__bounce.errors.partition"]), int(h["__bounce.errors.offset"])))
    for headers in rows:
        out.write(
            f"{headers['__bounce.errors.partition'] + ':' + headers['__bounce.errors.offset']:<17} "
            f"{headers['__bounce.errors.kind']:<17} {headers['__bounce.errors.message'][:90]}\n"
        )


def _print_rates(out: TextIO, registry: CollectorRegistry) -> None:
    """Bounce, block and deferral rates per provider, from mailevents_events_total."""
    by_provider: dict[str, Counter[str]] = {}
    for sample in _samples(registry, "events_total"):
        counts = by_provider.setdefault(sample.labels["provider"], Counter())
        counts[sample.labels["status"]] += int(sample.value)
    out.write("\n--- bounce rates from mailevents_events_total\n")
    out.write(f"{'provider':<10} {'events':>6} {'delivered':>10} {'bounce':>8} {'blocked':>8} "
              f"{'deferred':>9}\n")
    for provider, counts in sorted(by_provider.items()):
        total = sum(counts.values())
        rates = [counts[s] / total for s in ("Delivered", "Bounce", "Blocked", "Deferred")]
        out.write(f"{provider:<10} {total:>6} {rates[0]:>10.1%} {rates[1]:>8.1%} "
                  f"{rates[2]:>8.1%} {rates[3]:>9.1%}\n")
    records = {s.labels["outcome"]: int(s.value) for s in _samples(registry, "records_total")}
    out.write(f"records: {records}\n")


def _samples(registry: CollectorRegistry, suffix: str) -> list[Any]:
    return [
        sample
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "mailevents_" + suffix
    ]

"""Memory per tracked address and restore time of the suppression stage's state.

Usage: python bench/suppression_state.py [--addresses 1000000] [--restore 200000]
       [--bootstrap host:port]

1. Memory: builds the stage's in-memory map for N addresses, each with a typical state
   (two soft bounces, no delivery) through ``apply_event``, and measures the bytes per
   address with tracemalloc (keys, states, tuples: everything the map holds).
2. Restore: writes M changelog records to one partition of a fresh compacted topic on a
   real broker (the local one is started when no bootstrap is given) and times the
   stage's own ``_restore`` of that partition.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).parents[1] / "tests" / "integration"))

from kafkatools import LocalBroker, create_topics, delete_topics, unique_name
from workers import worker_env

from consumer.config import from_env
from consumer.escalation import (
    AddressState,
    StageEvent,
    apply_event,
    load_escalation_policy,
    state_to_json,
)
from consumer.metrics import Metrics
from consumer.models import RecipientState, Status
from consumer.suppression_stage import SuppressionStage

T0 = int(time.time()) - 5 * 86_400


def _states(count: int) -> dict[str, AddressState]:
    policy = load_escalation_policy()
    states: dict[str, AddressState] = {}
    for i in range(count):
        email = f"user{i}@example{i % 97}.com"
        state = None
        for n, hours in enumerate((0, 30)):
            event = StageEvent(
                email, Status.DEFERRED, RecipientState.SOFT_BOUNCE_MAILBOX_FULL,
                T0 + hours * 3600, f"{i:024x}{n:08x}",
            )
            state, _ = apply_event(state, event, policy)
        assert state is not None
        states[email] = state
        if i % 200_000 == 199_999:
            print(f"built {i + 1:,} states", file=sys.stderr)
    return states


def measure_memory(count: int) -> float:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    states = _states(count)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    per_address = (after - before) / len(states)
    print(f"memory: {len(states):,} addresses, {per_address:.0f} bytes per address "
          f"({(after - before) / 2**20:.0f} MiB)")
    return per_address


async def measure_restore(bootstrap: str, count: int) -> float:
    topic = unique_name("bench.state")
    await create_topics(bootstrap, {topic: 1}, compact={topic})
    try:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20,
                                    max_batch_size=512 * 1024)
        await producer.start()
        try:
            sample = orjson.dumps(state_to_json(next(iter(_states(1).values()))))
            futures = []
            for i in range(count):
                futures.append(await producer.send(topic, sample, key=f"user{i}@x.com".encode(),
                                                   partition=0))
                if len(futures) >= 20_000:
                    await asyncio.gather(*futures)
                    futures.clear()
                    print(f"wrote {i + 1:,} changelog records", file=sys.stderr)
            await asyncio.gather(*futures)
        finally:
            await producer.stop()
        env = worker_env(bootstrap, _NoTopics(), "bench", STATE_TOPIC=topic)  # type: ignore[arg-type]
        metrics = Metrics(CollectorRegistry())
        stage = SuppressionStage(from_env(env), load_escalation_policy(), metrics)
        started = time.monotonic()
        restored = await stage._restore(0)
        seconds = time.monotonic() - started
        print(f"restore: {len(restored):,} addresses in {seconds:.2f} s "
              f"({len(restored) / seconds:,.0f} addresses/s)")
        return seconds
    finally:
        await delete_topics(bootstrap, [topic])


class _NoTopics:
    raw, events, suppressions, dlq = "b.raw", "b.events", "b.suppressions", "b.dlq"




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addresses", type=int, default=1_000_000)
    parser.add_argument("--restore", type=int, default=200_000)
    parser.add_argument("--bootstrap")
    args = parser.parse_args()
    measure_memory(args.addresses)
    if args.restore <= 0:
        return
    if args.bootstrap:
        asyncio.run(measure_restore(args.bootstrap, args.restore))
        return
    with tempfile.TemporaryDirectory() as data:
        broker = LocalBroker(Path(data))
        print("starting a local broker ...", file=sys.stderr)
        broker.start()
        try:
            asyncio.run(measure_restore(broker.bootstrap, args.restore))
        finally:
            broker.stop()


if __name__ == "__main__":
    main()

"""The fault-injection run: real broker, real worker processes, faults on a schedule,
then an account of every input offset.

Usage::

    python tests/chaos/run.py --events N --mode at_least_once|exactly_once|both
                              [--outage SECONDS] [--json report.json] [--bootstrap host:port]

(``bench/chaos.sh [N]`` runs it with N = 100 000; ``tests/chaos/test_chaos.py`` is the
CI-sized run.)  Progress goes to stderr, the tables to stdout.  Exit status: 0 every
check passed, 1 a check failed (something lost, dead letters != poison, a duplicate in
exactly_once, an output nobody expected, a SIGTERM that did not exit 0, a worker that
exited by itself), 2 the harness itself failed (e.g. a wait timed out).

What it does, per guarantee mode (both modes share one broker, each has its own topics
and consumer group):

1. A dedicated broker (``deploy/kafka/local-kafka`` on free ports, data in a temp dir)
   is started once; it is stopped and restarted during the run, so a shared broker is
   never used.  ``--bootstrap`` runs against an existing broker instead, without the
   two broker faults (reported as skipped).
2. N inputs (``chaos_payloads.build_inputs``): every provider sample varied per record,
   generic DSN events and ~5 % poison; the expected outcome of each computed offline
   with ``consumer.pipeline.process`` and the record's timestamp.  Raw topic 6
   partitions, outputs 3 each (suppressions compacted, as in production).
3. Two workers (``python -m consumer run``) in one group, a third joining and leaving.
   Inputs arrive as a steady trickle plus a burst before each fault; each fault is
   struck when a worker's ``mailevents_in_flight_records`` gauge shows a batch of the
   burst between processing and commit, and still a batch in flight after a random
   0-20 ms, i.e. at a random point of a batch's produce-and-commit phase:
     kill -9 of w0 (restarted at once, like a pod), SIGTERM of w1 (must exit 0, then
     restarted), w2 joins, w2 leaves (SIGTERM, exit 0), the broker stopped for
     ``--outage`` seconds and started again, and the broker's JVM killed (SIGKILL)
     and restarted at once (in exactly_once mode: inside a transaction).
   Time to recover, per fault, from the moment of the fault: "broker back" until
   ``local-kafka start`` reports the broker serving again; "ready" until every worker
   that should run answers /readyz 200; "progress" until, after that, every raw
   partition with a backlog has its committed offset advance.  A worker that exits
   without being told to is restarted (as the platform would) and is a failure.
4. After the faults the rest of the input is fed, the group must commit every raw
   offset, the workers are stopped with SIGTERM (exit 0), and every output topic is read
   to its end (read_committed, which for exactly_once hides aborted transactions).
   Each valid input must have exactly its expected event ids on the events topic and
   suppression update ids on the suppressions topic (found by their ``source``; a
   suppression update without ``source`` by its event id), each poison input exactly
   one dead letter (by its ``__bounce.errors.partition``/``offset`` headers) holding the
   original bytes (cut to MAX_PAYLOAD_BYTES).  Missing = lost; more than once =
   duplicate (attributed to the last fault before the duplicate was written).  In
   exactly_once mode the records of aborted transactions (read_uncommitted minus
   read_committed) are counted too, attributed to the nearest fault: the evidence that
   faults cut transactions and that readers never saw them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _path in (HERE, ROOT / "tests" / "integration", ROOT):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import orjson  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient  # noqa: E402
from aiokafka.errors import KafkaError  # noqa: E402
from aiokafka.structs import TopicPartition  # noqa: E402
from chaos_payloads import InputSet, build_inputs  # noqa: E402
from kafkatools import (  # noqa: E402
    LOCAL_KAFKA,
    LocalBroker,
    Topics,
    create_topics,
    unique_name,
    wait_for_broker,
)
from workers import ChildWorker, worker_env  # noqa: E402

from consumer.rules import load_rules  # noqa: E402

MODES = ("at_least_once", "exactly_once")
RAW_PARTITIONS = 6
OUTPUT_PARTITIONS = 3
MAX_PAYLOAD_BYTES = 64 * 1024
SIGTERM_TIMEOUT = 30.0
RECOVERY_TIMEOUT = 180.0
DRAIN_TIMEOUT = 600.0
IN_FLIGHT = "mailevents_in_flight_records"
#: What Kafka's transaction coordinator logs when it completes a transaction without
#: writing its markers to partitions that have no leader at that moment (it takes them
#: for deleted).  Their records then hang or go with the producer's next abort: a loss
#: the worker cannot see or prevent (docs/reliability.md, "a commit without markers").
SKIPPED_MARKERS = "Couldn't find leader endpoint for partitions"


def skipped_marker_lines(broker_log: Path) -> list[str]:
    """The lines of a broker's log that report a commit completed without its markers."""
    if not broker_log.exists():
        return []
    text = broker_log.read_text(errors="replace")
    return [line for line in text.splitlines() if SKIPPED_MARKERS in line]
INDEX_HEADER = "chaos.index"
_PLURAL = {"event": "events", "suppression": "suppressions", "dead": "dead_letters"}

#: an output to account for: (kind, raw partition, raw offset, event id)
Key = tuple[str, int, int, str]

_started = time.monotonic()


def say(message: str) -> None:
    """A progress line on stderr, with the seconds since the run started."""
    print(f"[chaos {time.monotonic() - _started:7.1f}s] {message}", file=sys.stderr, flush=True)


class HarnessError(RuntimeError):
    """The run itself could not go on (not a finding about the worker)."""


# --- looking at the broker ----------------------------------------------------------


class Probe:
    """Long-lived group-less clients to watch offsets (restarted after a broker restart)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._uncommitted: AIOKafkaConsumer | None = None
        self._committed: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None

    async def start(self) -> None:
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "group_id": None,
            "enable_auto_commit": False,
            "request_timeout_ms": 5000,
        }
        self._uncommitted = AIOKafkaConsumer(**options, isolation_level="read_uncommitted")
        self._committed = AIOKafkaConsumer(**options, isolation_level="read_committed")
        self._admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=5000)
        await self._uncommitted.start()
        await self._committed.start()
        await self._admin.start()

    async def close(self) -> None:
        for client in (self._uncommitted, self._committed):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()
        if self._admin is not None:
            with contextlib.suppress(Exception):
                await self._admin.close()
        self._uncommitted = self._committed = self._admin = None

    async def restart(self) -> None:
        await self.close()
        await self.start()

    async def _retry(self, call: Callable[[], Awaitable[Any]], what: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await asyncio.wait_for(call(), 10)
            except (KafkaError, OSError, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise HarnessError(f"{what}: {exc!r}") from exc
            await asyncio.sleep(0.5)

    async def ends(
        self, topic: str, partitions: int, *, committed: bool = False, timeout: float = 60
    ) -> dict[int, int]:
        """High watermarks, or last stable offsets with ``committed=True``."""
        client = self._committed if committed else self._uncommitted
        assert client is not None
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        got = await self._retry(lambda: client.end_offsets(tps), f"end offsets of {topic}", timeout)
        return {tp.partition: offset for tp, offset in got.items()}

    async def group_offsets(self, group: str, topic: str, timeout: float = 60) -> dict[int, int]:
        assert self._admin is not None
        admin = self._admin
        got = await self._retry(
            lambda: admin.list_consumer_group_offsets(group), f"offsets of {group}", timeout
        )
        return {tp.partition: meta.offset for tp, meta in got.items() if tp.topic == topic}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _gauge(port: int, name: str) -> float:
    """One unlabelled sample of the worker's /metrics (0 when unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return 0.0
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _readyz(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


# --- the workers --------------------------------------------------------------------


class Slot:
    """One worker identity (w0, w1, w2): its environment, its current process, its log."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.child: ChildWorker | None = None
        self.port = 0
        self.wanted = False  # should be running (the supervisor restarts it otherwise)
        self.starts = 0

    def start(self) -> None:
        self.port = _free_port()
        env = {**self.env, "HTTP_PORT": str(self.port)}
        self.child = ChildWorker(env, self.log_path)
        self.wanted = True
        self.starts += 1

    def alive(self) -> bool:
        return self.child is not None and self.child.process.poll() is None

    def kill(self) -> None:
        self.wanted = False
        assert self.child is not None
        self.child.kill()

    def terminate(self, timeout: float) -> int:
        self.wanted = False
        assert self.child is not None
        try:
            return self.child.terminate(timeout)
        except Exception:
            self.child.ensure_stopped()
            raise

    def ensure_stopped(self) -> None:
        self.wanted = False
        if self.child is not None:
            self.child.ensure_stopped()

    async def ready(self) -> bool:
        return self.alive() and await asyncio.to_thread(_readyz, self.port)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


# --- feeding the input --------------------------------------------------------------


class Feeder:
    """Produces the inputs in order (partition = index mod 6), as bursts or a trickle,
    each with its index in a ``chaos.index`` header (the accounting reads the raw topic
    back).  Each chunk is awaited to its acknowledgements and the broker is only stopped
    while the feeder is paused (holding the lock), so no input is ever in doubt.
    """

    def __init__(self, bootstrap: str, topic: str, inputs: InputSet) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.inputs = inputs
        self.cursor = 0
        self.reserved = 0  # kept for the bursts still to come; the trickle leaves them
        self.lock = asyncio.Lock()
        self._producer: AIOKafkaProducer | None = None
        self._trickle: asyncio.Task[None] | None = None

    async def _ready(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
                request_timeout_ms=30000,
                max_request_size=4 * 1024 * 1024,
            )
            await producer.start()
            self._producer = producer
        return self._producer

    async def _send(self, count: int) -> int:
        count = min(count, len(self.inputs.values) - self.cursor)
        if count <= 0:
            return 0
        producer = await self._ready()
        futures = []
        for index in range(self.cursor, self.cursor + count):
            futures.append(
                await producer.send(
                    self.topic,
                    self.inputs.values[index],
                    partition=index % RAW_PARTITIONS,
                    timestamp_ms=self.inputs.timestamp_ms,
                    headers=[(INDEX_HEADER, str(index).encode())],
                )
            )
        await asyncio.gather(*futures)
        self.cursor += count
        return count

    async def burst(self, count: int) -> int:
        async with self.lock:
            self.reserved = max(0, self.reserved - count)
            return await self._send(count)

    def start_trickle(self, per_second: float) -> None:
        async def trickle() -> None:
            step = 0.1
            owed = 0.0
            while True:
                await asyncio.sleep(step)
                owed += per_second * step
                spare = len(self.inputs.values) - self.cursor - self.reserved
                take = min(int(owed), spare)
                if take <= 0:
                    continue
                async with self.lock:
                    await self._send(take)
                owed -= take

        self._trickle = asyncio.create_task(trickle())

    async def stop_trickle(self) -> None:
        if self._trickle is not None:
            self._trickle.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._trickle
            self._trickle = None

    async def rest(self) -> int:
        await self.stop_trickle()
        async with self.lock:
            self.reserved = 0
            return await self._send(len(self.inputs.values) - self.cursor)

    async def burst_then_pause(self, count: int) -> int:
        """A burst, then paused (the lock kept) until :meth:`resume`."""
        await self.lock.acquire()
        self.reserved = max(0, self.reserved - count)
        sent = await self._send(count)
        await self._stop_producer()
        return sent

    async def _stop_producer(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def resume(self) -> None:
        self.lock.release()

    async def close(self) -> None:
        await self.stop_trickle()
        await self._stop_producer()


# --- the report ---------------------------------------------------------------------


@dataclass
class Fault:
    name: str
    at: float  # seconds since the mode started
    ready_s: float | None = None  # from the fault until every worker is ready
    progress_s: float | None = None  # ... and then every backlogged partition commits
    back_s: float | None = None  # broker faults: from the fault until the broker is back
    detail: str = ""
    wall_ms: int = 0  # when it happened (epoch ms), to attribute duplicates
    duplicates: int = 0  # output copies written after this fault and before the next
    aborted: int = 0  # exactly_once: records of aborted transactions, same attribution


@dataclass
class ModeReport:
    mode: str
    events: int
    valid: int = 0
    poison: int = 0
    expected_events: int = 0
    expected_suppressions: int = 0
    expected_outputs: int = 0
    seen_events: int = 0
    seen_suppressions: int = 0
    seen_dead_letters: int = 0
    outputs_seen: int = 0
    lost_events: int = 0
    lost_suppressions: int = 0
    lost_dead_letters: int = 0
    lost: int = 0
    duplicates: int = 0
    duplicate_events: int = 0
    duplicate_suppressions: int = 0
    duplicate_dead_letters: int = 0
    inputs_with_duplicates: int = 0
    dead_letters: int = 0  # distinct poison inputs with a dead letter
    unexpected: int = 0
    dead_letters_altered: int = 0
    suppressions_without_source: int = 0
    open_transactions_at_end: int = 0
    broker_skipped_markers: int = 0  # transactions the broker completed without markers
    lost_to_unmarked_commits: int = 0  # lost outputs in those transactions (Kafka's fault)
    aborted_records: int = 0  # exactly_once: written in transactions that were aborted
    raw_records: int = 0
    raw_written_twice: int = 0  # by the feeder's own producer (each one an extra input)
    unplanned_exits: list[str] = field(default_factory=list)
    sigterm_exit_codes: dict[str, int] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    duplicates_unattributed: int = 0
    broker_faults_skipped: bool = False
    wall_seconds: float = 0.0
    drain_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def check(self) -> None:
        if self.lost - self.lost_to_unmarked_commits:
            self.problems.append(
                f"{self.lost - self.lost_to_unmarked_commits} expected outputs lost"
            )
        if self.dead_letters != self.poison or self.seen_dead_letters < self.poison:
            self.problems.append(
                f"dead letters for {self.dead_letters} poison inputs, poison {self.poison}"
            )
        if self.mode == "exactly_once" and self.duplicates:
            self.problems.append(f"{self.duplicates} duplicates in exactly_once")
        if self.unexpected:
            self.problems.append(f"{self.unexpected} outputs no input should have produced")
        if self.dead_letters_altered:
            self.problems.append(f"{self.dead_letters_altered} dead letters differ from the input")
        if self.unplanned_exits:
            self.problems.append(f"workers exited unasked: {'; '.join(self.unplanned_exits)}")
        bad_exits = {k: v for k, v in self.sigterm_exit_codes.items() if v != 0}
        if bad_exits:
            self.problems.append(f"SIGTERM exit codes not 0: {bad_exits}")


# --- one mode -----------------------------------------------------------------------


@dataclass
class Plan:
    events: int
    outage: float
    broker_faults: bool
    burst: int
    initial: int
    trickle: float
    static_members: bool
    seed: int


class ModeRun:
    def __init__(
        self,
        mode: str,
        plan: Plan,
        broker: LocalBroker | None,
        bootstrap: str,
        inputs: InputSet,
        work: Path,
    ) -> None:
        self.mode = mode
        self.plan = plan
        self.broker = broker
        self.bootstrap = bootstrap
        self.inputs = inputs
        self.work = work / mode
        self.work.mkdir(parents=True, exist_ok=True)
        short = "alo" if mode == "at_least_once" else "eos"
        self.topics = Topics(
            raw=unique_name(f"chaos.{short}.raw"),
            events=unique_name(f"chaos.{short}.events"),
            suppressions=unique_name(f"chaos.{short}.suppressions"),
            dlq=unique_name(f"chaos.{short}.dlq"),
        )
        self.group = unique_name(f"chaos-{short}")
        self.report = ModeReport(mode, plan.events)
        self.probe = Probe(bootstrap)
        self.feeder = Feeder(bootstrap, self.topics.raw, inputs)
        self.slots = {name: Slot(name, self._env(name), self.work) for name in ("w0", "w1", "w2")}
        self.started = time.monotonic()
        self._supervisor: asyncio.Task[None] | None = None
        self.rng = random.Random(f"{plan.seed}-{mode}")  # noqa: S311 - timing jitter only

    def _env(self, name: str) -> dict[str, str]:
        extra = {
            "PROCESSING_GUARANTEE": self.mode,
            "KAFKA_TRANSACTIONAL_ID": f"{self.group}-{name}",
            "KAFKA_CLIENT_ID": f"chaos-{name}",
            "MAX_BATCH_RECORDS": "500",
            "MAX_PAYLOAD_BYTES": str(MAX_PAYLOAD_BYTES),
            "KAFKA_REQUEST_TIMEOUT_MS": "5000",
            "SHUTDOWN_GRACE_SECONDS": "20",
        }
        if self.plan.static_members:
            extra["KAFKA_GROUP_INSTANCE_ID"] = f"{self.group}-{name}"
        return worker_env(self.bootstrap, self.topics, self.group, **extra)

    def now(self) -> float:
        return time.monotonic() - self.started

    def say(self, message: str) -> None:
        say(f"{self.mode}: {message}")

    # -- supervision and measurements --------------------------------------------

    def _start_supervisor(self) -> None:
        async def supervise() -> None:
            while True:
                await asyncio.sleep(0.25)
                for slot in self.slots.values():
                    if slot.wanted and not slot.alive():
                        assert slot.child is not None
                        code = slot.child.process.returncode
                        note = f"{slot.name} exited {code} at {self.now():.1f}s unasked"
                        self.report.unplanned_exits.append(note)
                        self.say(f"WARNING {note}; restarting it. Log tail:\n{slot.log_tail(1500)}")
                        slot.start()

        self._supervisor = asyncio.create_task(supervise())

    def running(self) -> list[Slot]:
        return [slot for slot in self.slots.values() if slot.wanted]

    async def all_ready(self) -> bool:
        slots = self.running()
        answers = await asyncio.gather(*(slot.ready() for slot in slots))
        return bool(slots) and all(answers)

    async def raw_backlog(self) -> tuple[dict[int, int], dict[int, int]]:
        ends = await self.probe.ends(self.topics.raw, RAW_PARTITIONS)
        committed = await self.probe.group_offsets(self.group, self.topics.raw)
        return ends, committed

    async def recover(self, fault: Fault, since: float) -> None:
        """Ready: every running worker answers /readyz 200.  Progress: after that, every
        raw partition with a backlog commits further.  Both measured from ``since``."""
        deadline = since + RECOVERY_TIMEOUT
        while not await self.all_ready():
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"{fault.name}: workers not all ready after {RECOVERY_TIMEOUT} s"
                )
            await asyncio.sleep(0.2)
        fault.ready_s = time.monotonic() - since
        ends, base = await self.raw_backlog()
        behind = {p for p, end in ends.items() if end > base.get(p, 0)}
        while behind:
            if time.monotonic() > deadline:
                raise HarnessError(
                    f"{fault.name}: partitions {sorted(behind)} made no progress "
                    f"in {RECOVERY_TIMEOUT} s"
                )
            await asyncio.sleep(0.2)
            _, committed = await self.raw_backlog()
            behind = {p for p in behind if committed.get(p, 0) <= base.get(p, 0)}
        fault.progress_s = time.monotonic() - since
        self.say(
            f"{fault.name}: recovered, ready after {fault.ready_s:.1f}s, "
            f"progress after {fault.progress_s:.1f}s"
        )

    async def open_transactions(self) -> int:
        """Output partitions whose last stable offset is below the high watermark."""
        count = 0
        for topic in (self.topics.events, self.topics.suppressions, self.topics.dlq):
            high = await self.probe.ends(topic, OUTPUT_PARTITIONS)
            stable = await self.probe.ends(topic, OUTPUT_PARTITIONS, committed=True)
            count += sum(1 for p, end in high.items() if stable.get(p, 0) < end)
        return count

    async def in_flight(self, names: list[str], timeout: float = 20.0) -> str:
        """Return while one of ``names`` has a batch in flight: its
        ``mailevents_in_flight_records`` gauge (set once a polled batch is processed,
        cleared after its outputs are acknowledged and its offsets committed) shows a
        batch of the burst (at least a twentieth of it; any batch in the last quarter of
        ``timeout``), and still shows a batch in flight after a random 0-20 ms, so that
        the fault lands at a random point between the first send and the commit.  Returns
        ``"w0 (250 records)"``, or ``""`` if no batch was seen in flight."""
        started = time.monotonic()
        at_least = max(2, self.plan.burst // 20)
        while (waited := time.monotonic() - started) < timeout:
            if waited > timeout * 0.75:
                at_least = 1
            for name in names:
                slot = self.slots[name]
                if not slot.alive():
                    continue
                value = await asyncio.to_thread(_gauge, slot.port, IN_FLIGHT)
                if value < at_least:
                    continue
                await asyncio.sleep(self.rng.uniform(0, 0.02))
                if await asyncio.to_thread(_gauge, slot.port, IN_FLIGHT) > 0:
                    return f"{name} ({value:.0f} records)"
            await asyncio.sleep(0.002)
        return ""

    async def burst_in_flight(self, names: list[str]) -> tuple[str, asyncio.Task[int]]:
        """Feed a burst and return while it is fed, once one of ``names`` has a batch in
        flight (the caller then strikes, mid-batch, and awaits the burst)."""
        burst = asyncio.create_task(self.feeder.burst(self.plan.burst))
        caught = await self.in_flight(names)
        if not caught:
            self.say(f"WARNING no batch in flight seen on {names}; striking anyway")
        return caught, burst

    def _in_flight_detail(self, caught: str) -> str:
        return f"in flight: {caught}" if caught else "no batch seen in flight"

    async def backlog_now(self) -> int:
        ends, committed = await self.raw_backlog()
        return sum(max(0, end - committed.get(p, 0)) for p, end in ends.items())

    def new_fault(self, name: str) -> Fault:
        fault = Fault(name, round(self.now(), 1), wall_ms=int(time.time() * 1000))
        self.report.faults.append(fault)
        self.say(f"FAULT {name}")
        return fault

    # -- the faults ----------------------------------------------------------------

    async def kill_9(self, name: str) -> None:
        slot = self.slots[name]
        caught, burst = await self.burst_in_flight([name])
        fault = self.new_fault(f"kill -9 {name} mid-batch, restart")
        slot.kill()
        since = time.monotonic()
        await burst
        fault.detail = self._in_flight_detail(caught)
        slot.start()
        await self.recover(fault, since)

    async def sigterm(self, name: str, restart: bool, label: str) -> None:
        slot = self.slots[name]
        caught, burst = await self.burst_in_flight([name])
        fault = self.new_fault(label)
        since = time.monotonic()
        code = await asyncio.to_thread(slot.terminate, SIGTERM_TIMEOUT)
        stopped = time.monotonic() - since
        await burst
        self.report.sigterm_exit_codes[f"{name}@{fault.at}s"] = code
        fault.detail = f"exit {code} after {stopped:.1f}s; {self._in_flight_detail(caught)}"
        if code != 0:
            self.say(f"WARNING {name} exited {code} on SIGTERM. Log tail:\n{slot.log_tail()}")
        if restart:
            slot.start()
        await self.recover(fault, since)

    async def join(self, name: str) -> None:
        burst = asyncio.create_task(self.feeder.burst(self.plan.burst))
        fault = self.new_fault(f"{name} joins (rebalance)")
        since = time.monotonic()
        self.slots[name].start()
        await burst
        await self.recover(fault, since)

    async def _pause_in_flight(self) -> str:
        """Feed a burst, stop feeding (nothing of ours in doubt while the broker is
        away), and return once a worker has a batch in flight."""
        await self.feeder.burst_then_pause(self.plan.burst)
        caught = await self.in_flight([slot.name for slot in self.running()])
        if not caught:
            self.say("WARNING no batch in flight seen before the broker fault")
        return caught

    async def broker_outage(self) -> None:
        assert self.broker is not None
        caught = await self._pause_in_flight()
        fault = self.new_fault(f"broker stopped {self.plan.outage:.0f}s, started")
        stopped_at = time.monotonic()
        try:
            begun = time.monotonic()
            await self.broker.stop_async()
            self.say(f"broker stopped in {time.monotonic() - begun:.1f}s")
            not_ready_after = None
            outage_end = time.monotonic() + self.plan.outage
            while time.monotonic() < outage_end:
                if not_ready_after is None and not await self.all_ready():
                    not_ready_after = time.monotonic() - begun
                await asyncio.sleep(min(0.5, max(0.0, outage_end - time.monotonic())))
            down = time.monotonic() - begun
            begun = time.monotonic()
            await self.broker.start_async()
            self.say(f"broker started in {time.monotonic() - begun:.1f}s")
        finally:
            self.feeder.resume()
        fault.back_s = time.monotonic() - stopped_at
        await self.probe.restart()
        seen = "never" if not_ready_after is None else f"after {not_ready_after:.0f}s"
        fault.detail = (
            f"{self._in_flight_detail(caught)}; broker process down {down:.0f}s, "
            f"workers not ready {seen}"
        )
        await self.recover(fault, stopped_at)

    async def broker_kill_in_flight(self) -> None:
        assert self.broker is not None
        what = "transactions" if self.mode == "exactly_once" else "outputs"
        caught = await self._pause_in_flight()
        fault = self.new_fault(f"broker kill -9 with {what} in flight, restart")
        begun = time.monotonic()
        try:
            pid_file = self.broker.data_dir / "kafka.pid"
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGKILL)
            await self.broker.kill_async()  # local-kafka's own bookkeeping, no-op by now
            await self.broker.start_async()
            self.say(f"broker killed and started again in {time.monotonic() - begun:.1f}s")
        finally:
            self.feeder.resume()
        fault.back_s = time.monotonic() - begun
        await self.probe.restart()
        fault.detail = self._in_flight_detail(caught)
        await self.recover(fault, begun)

    # -- the whole mode ------------------------------------------------------------

    def _skip_lines(self) -> list[str]:
        return [] if self.broker is None else skipped_marker_lines(self.broker.log_file)

    def skipped_markers_logged(self) -> int:
        """How often the broker's log says it skipped transaction markers, so far."""
        return len(self._skip_lines())

    def unmarked_partitions(self) -> set[tuple[str, int]]:
        """This mode's output partitions that the broker's log names in a skip."""
        ours = {self.topics.events, self.topics.suppressions, self.topics.dlq}
        found: set[tuple[str, int]] = set()
        for line in self._skip_lines():
            for topic, number in re.findall(r"([\w.-]+)-(\d+)[,)]", line):
                if topic in ours:
                    found.add((topic, int(number)))
        return found

    async def run(self) -> ModeReport:
        plan = self.plan
        skipped_before = self.skipped_markers_logged()
        self.say(f"topics {self.topics.raw} ..., group {self.group}")
        await create_topics(
            self.bootstrap,
            {
                self.topics.raw: RAW_PARTITIONS,
                self.topics.events: OUTPUT_PARTITIONS,
                self.topics.suppressions: OUTPUT_PARTITIONS,
                self.topics.dlq: OUTPUT_PARTITIONS,
            },
            compact={self.topics.suppressions},
        )
        await self.probe.start()
        bursts = 6 if plan.broker_faults else 4
        try:
            await self.feeder.burst(plan.initial)
            self.feeder.reserved = bursts * plan.burst
            self.slots["w0"].start()
            self.slots["w1"].start()
            self._start_supervisor()
            start = Fault("start w0 and w1", 0.0)
            await self.recover(start, self.started)
            self.say(f"w0 and w1 ready after {start.ready_s:.1f}s")
            self.feeder.start_trickle(plan.trickle)
            await asyncio.sleep(1)

            await self.kill_9("w0")
            await self.sigterm("w1", restart=True, label="SIGTERM w1 mid-batch, restart")
            await self.join("w2")
            await self.sigterm("w2", restart=False, label="w2 leaves (SIGTERM, rebalance)")
            if plan.broker_faults:
                await self.broker_outage()
                await self.broker_kill_in_flight()
            else:
                self.report.broker_faults_skipped = True
                self.say("broker faults skipped: --bootstrap names a broker this run does not own")

            sent = await self.feeder.rest()
            self.say(f"rest of the input sent ({sent}); waiting for every offset to be committed")
            drain_from = time.monotonic()
            await self.drain()
            self.report.drain_seconds = round(time.monotonic() - drain_from, 1)
            await self.stop_workers()
            await self.account()
            self.report.broker_skipped_markers = self.skipped_markers_logged() - skipped_before
        finally:
            if self._supervisor is not None:
                self._supervisor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._supervisor
            for slot in self.slots.values():
                slot.ensure_stopped()
            await self.feeder.close()
            await self.probe.close()
        self.report.wall_seconds = round(self.now(), 1)
        self.report.check()
        return self.report

    async def drain(self) -> None:
        deadline = time.monotonic() + DRAIN_TIMEOUT
        last_report = 0.0
        while True:
            ends, committed = await self.raw_backlog()
            left = sum(max(0, end - committed.get(p, 0)) for p, end in ends.items())
            if left == 0 and sum(ends.values()) >= len(self.inputs.values):
                return
            if time.monotonic() > deadline:
                raise HarnessError(f"{left} raw records still uncommitted after {DRAIN_TIMEOUT}s")
            if time.monotonic() - last_report > 10:
                self.say(f"{left} raw records not committed yet")
                last_report = time.monotonic()
            await asyncio.sleep(0.5)

    async def stop_workers(self) -> None:
        for slot in self.running():
            code = await asyncio.to_thread(slot.terminate, SIGTERM_TIMEOUT)
            self.report.sigterm_exit_codes[f"{slot.name}@end"] = code
            if code != 0:
                self.say(f"WARNING {slot.name} exited {code} at the end:\n{slot.log_tail()}")

    # -- accounting -----------------------------------------------------------------

    async def read_all(self, topic: str, partitions: int, *, committed: bool = True) -> list[Any]:
        """Every record of ``topic`` up to its end, by default read_committed (hides
        aborted transactions; the same as read_uncommitted for non-transactional writes)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed" if committed else "read_uncommitted",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
        )
        records: list[Any] = []
        try:
            await consumer.start()
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            deadline = time.monotonic() + 300
            while True:
                positions = {tp: await consumer.position(tp) for tp in tps}
                if all(positions[tp] >= ends[tp] for tp in tps):
                    break
                if time.monotonic() > deadline:
                    raise HarnessError(f"reading {topic} did not reach its end")
                batch = await consumer.getmany(timeout_ms=500, max_records=5000)
                for tp in sorted(batch, key=lambda t: t.partition):
                    records.extend(batch[tp])
        finally:
            await consumer.stop()
        return records

    async def account(self) -> None:
        report = self.report
        raw = self.topics.raw
        report.open_transactions_at_end = await self.open_transactions()

        # Which input sits at which raw offset: read back (the chaos.index header), not
        # taken from the feeder's acknowledgements, so that a raw record the feeder's
        # own producer wrote twice is accounted for as the extra input it is.
        index_at: dict[tuple[int, int], int] = {}
        for record in await self.read_all(raw, RAW_PARTITIONS):
            index = int(dict(record.headers)[INDEX_HEADER])
            index_at[(record.partition, record.offset)] = index
        report.raw_records = len(index_at)
        copies = Counter(index_at.values())
        report.raw_written_twice = sum(n - 1 for n in copies.values())
        missing_inputs = len(self.inputs.values) - len(copies)
        if missing_inputs:
            report.problems.append(f"harness: {missing_inputs} inputs never reached the raw topic")
        expected_at = {where: self.inputs.expected[i] for where, i in index_at.items()}
        report.valid = sum(1 for e in expected_at.values() if e.kind == "valid")
        report.poison = sum(1 for e in expected_at.values() if e.kind == "poison")

        # what must be seen: (output kind, raw partition, raw offset, event id) -> copies;
        # suppression updates without ``source`` are keyed by event id alone (-1, -1)
        wanted: Counter[Key] = Counter()
        for (p, o), exp in expected_at.items():
            if exp.kind == "poison":
                wanted[("dead", p, o, "")] = 1
                continue
            for ident, n in exp.events.items():
                wanted[("event", p, o, ident)] += n
            for ident, n in exp.suppressions.items():
                wanted[("suppression", p, o, ident)] += n
            for ident, n in exp.unsourced.items():
                wanted[("suppression", -1, -1, ident)] += n
        report.expected_events = sum(n for k, n in wanted.items() if k[0] == "event")
        report.expected_suppressions = sum(n for k, n in wanted.items() if k[0] == "suppression")
        report.expected_outputs = sum(wanted.values())

        self.say("reading the output topics to their end")
        events = await self.read_all(self.topics.events, OUTPUT_PARTITIONS)
        suppressions = await self.read_all(self.topics.suppressions, OUTPUT_PARTITIONS)
        dead = await self.read_all(self.topics.dlq, OUTPUT_PARTITIONS)
        report.seen_events, report.seen_suppressions = len(events), len(suppressions)
        report.seen_dead_letters = len(dead)
        report.outputs_seen = len(events) + len(suppressions) + len(dead)

        seen: dict[Key, list[int]] = {}  # key -> timestamps of every copy

        def note(key: Key, stamp: int, why: str) -> None:
            if key not in wanted:
                report.unexpected += 1
                if len(report.examples) < 10:
                    report.examples.append(f"unexpected {why}")
                return
            seen.setdefault(key, []).append(stamp)

        def where(source: Any) -> tuple[int, int]:
            if not isinstance(source, dict) or source.get("topic") != raw:
                return (-2, -2)
            return (source.get("partition", -2), source.get("offset", -2))

        def event_key(record: Any) -> Key:
            body = orjson.loads(record.value)
            p, o = where(body.get("source"))
            return ("event", p, o, body["eventId"])

        def suppression_key(record: Any) -> Key:
            body = orjson.loads(record.value)
            p, o = (-1, -1) if body.get("source") is None else where(body["source"])
            return ("suppression", p, o, body["eventId"])

        def dead_key(record: Any) -> Key:
            headers = dict(record.headers)
            try:
                p, o = (
                    int(headers["__bounce.errors.partition"]),
                    int(headers["__bounce.errors.offset"]),
                )
            except (KeyError, ValueError):
                p, o = -2, -2
            if headers.get("__bounce.errors.topic") != raw.encode():
                p, o = -2, -2
            return ("dead", p, o, "")

        for record in events:
            key = event_key(record)
            note(key, record.timestamp, f"event {key}")
        for record in suppressions:
            key = suppression_key(record)
            if key[1] == -1:
                report.suppressions_without_source += 1
            note(key, record.timestamp, f"suppression {key}")
        for record in dead:
            headers = dict(record.headers)
            _, p, o, _ = dead_key(record)
            exp = expected_at.get((p, o))
            if exp is not None and exp.kind == "poison":
                original = self.inputs.values[index_at[(p, o)]]
                if (record.value or b"") != original[:MAX_PAYLOAD_BYTES] or headers.get(
                    INDEX_HEADER
                ) != str(index_at[(p, o)]).encode():
                    report.dead_letters_altered += 1
            message = headers.get("__bounce.errors.message", b"")[:200]
            label = exp.label if exp is not None else "?"
            note(("dead", p, o, ""), record.timestamp, f"dead letter {p}:{o} ({label}) {message!r}")

        faults = sorted(report.faults, key=lambda f: f.wall_ms)

        def last_before(stamp: int) -> Fault | None:
            before = [f for f in faults if f.wall_ms <= stamp]
            return before[-1] if before else None

        def nearest(stamp: int) -> Fault | None:
            return min(faults, key=lambda f: abs(f.wall_ms - stamp), default=None)

        duplicated_inputs: set[tuple[int, int, str]] = set()
        lost_keys: set[Key] = set()
        for key, n in wanted.items():
            stamps = sorted(seen.get(key, []))
            kind = key[0]
            missing = max(0, n - len(stamps))
            if missing:
                lost_keys.add(key)
                setattr(
                    report,
                    f"lost_{_PLURAL[kind]}",
                    getattr(report, f"lost_{_PLURAL[kind]}") + missing,
                )
                if len(report.examples) < 10:
                    exp_label = expected_at.get((key[1], key[2]))
                    report.examples.append(
                        f"lost {kind} {key[3]} of input {key[1]}:{key[2]} "
                        f"({exp_label.label if exp_label else 'by event id'})"
                    )
            extra = stamps[n:]
            if extra:
                name = f"duplicate_{_PLURAL[kind]}"
                setattr(report, name, getattr(report, name) + len(extra))
                duplicated_inputs.add((str(key[1]), str(key[2]), key[3] if key[1] < 0 else ""))
                for stamp in extra:  # a later copy: written after the fault that caused it
                    fault = last_before(stamp)
                    if fault is None:
                        report.duplicates_unattributed += 1
                    else:
                        fault.duplicates += 1
        report.dead_letters = sum(1 for key in wanted if key[0] == "dead" and seen.get(key))
        report.lost = report.lost_events + report.lost_suppressions + report.lost_dead_letters
        report.duplicates = (
            report.duplicate_events + report.duplicate_suppressions + report.duplicate_dead_letters
        )
        report.inputs_with_duplicates = len(duplicated_inputs)

        if self.mode == "exactly_once":
            # Records of aborted transactions: written before (kill -9 of a worker) or
            # while (broker gone) the fault cut their transaction: the nearest fault.
            unmarked = self.unmarked_partitions()
            for topic, visible, key_of in (
                (self.topics.events, events, event_key),
                (self.topics.suppressions, suppressions, suppression_key),
                (self.topics.dlq, dead, dead_key),
            ):
                kept = {(r.partition, r.offset) for r in visible}
                for record in await self.read_all(topic, OUTPUT_PARTITIONS, committed=False):
                    if (record.partition, record.offset) not in kept:
                        report.aborted_records += 1
                        fault = nearest(record.timestamp)
                        if fault is not None:
                            fault.aborted += 1
                        try:
                            key = key_of(record)
                        except (TypeError, ValueError, KeyError):  # a tombstone, say
                            continue
                        if key in lost_keys and (topic, record.partition) in unmarked:
                            # Written, its transaction committed, its marker never
                            # written by the broker: the broker's loss, not the worker's.
                            lost_keys.discard(key)
                            report.lost_to_unmarked_commits += 1


# --- the whole run ------------------------------------------------------------------


def table(report: ModeReport) -> str:
    r = report
    lines = [
        f"== {r.mode}: {r.events} inputs, wall {r.wall_seconds:.0f} s "
        f"({'OK' if r.ok else 'FAILED'}) ==",
        f"{'inputs (raw records)':<34}{r.raw_records:>10}   valid {r.valid}, poison {r.poison}",
        f"{'expected outputs':<34}{r.expected_outputs:>10}   events {r.expected_events}, "
        f"suppressions {r.expected_suppressions}, dead letters {r.poison}",
        f"{'outputs seen':<34}{r.outputs_seen:>10}   events {r.seen_events}, "
        f"suppressions {r.seen_suppressions}, dead letters {r.seen_dead_letters}",
        f"{'lost (must be 0)':<34}{r.lost - r.lost_to_unmarked_commits:>10}   "
        f"events {r.lost_events}, suppressions "
        f"{r.lost_suppressions}, dead letters {r.lost_dead_letters}",
        f"{'duplicates':<34}{r.duplicates:>10}   events {r.duplicate_events}, suppressions "
        f"{r.duplicate_suppressions}, dead letters {r.duplicate_dead_letters}; "
        f"from {r.inputs_with_duplicates} inputs"
        + (" (must be 0)" if r.mode == "exactly_once" else " (redelivered, see faults)"),
        f"{'dead letters (= poison)':<34}{r.dead_letters:>10}   poison {r.poison}; "
        f"altered {r.dead_letters_altered}",
        f"{'unexpected outputs':<34}{r.unexpected:>10}",
        f"{'suppression updates without source':<34}{r.suppressions_without_source:>10}",
        f"{'open transactions at end':<34}{r.open_transactions_at_end:>10}",
        f"{'commits the broker left unmarked':<34}{r.broker_skipped_markers:>10}   "
        f"(a Kafka fault, docs/reliability.md); outputs lost to it {r.lost_to_unmarked_commits}",
        f"{'raw records the feeder wrote twice':<34}{r.raw_written_twice:>10}   "
        "(extra inputs, accounted for like the others)",
        f"{'records of aborted transactions':<34}{r.aborted_records:>10}   "
        "(exactly_once: hidden from read_committed readers)",
        f"{'final drain after last fault (s)':<34}{r.drain_seconds:>10.1f}",
        "",
        f"{'fault':<52}{'at s':>7}{'broker back s':>14}{'ready s':>9}{'progress s':>12}"
        f"{'dups':>7}{'aborted':>9}  detail",
    ]
    for f in r.faults:
        ready = "-" if f.ready_s is None else f"{f.ready_s:.1f}"
        progress = "-" if f.progress_s is None else f"{f.progress_s:.1f}"
        back = "-" if f.back_s is None else f"{f.back_s:.1f}"
        lines.append(
            f"{f.name:<52}{f.at:>7.1f}{back:>14}{ready:>9}{progress:>12}{f.duplicates:>7}"
            f"{f.aborted:>9}  {f.detail}"
        )
    if r.broker_faults_skipped:
        lines.append("broker faults skipped: --bootstrap names a broker this run does not own")
    if r.duplicates_unattributed:
        lines.append(f"duplicates before any fault: {r.duplicates_unattributed}")
    if r.unplanned_exits:
        lines.append("unplanned worker exits: " + "; ".join(r.unplanned_exits))
    for problem in r.problems:
        lines.append(f"PROBLEM: {problem}")
    for example in r.examples:
        lines.append(f"  e.g. {example}")
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> int:
    modes = list(MODES) if args.mode == "both" else [args.mode]
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="chaos-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    say(f"work dir {work}")
    rules = load_rules()
    timestamp_ms = int(time.time() * 1000)
    say(f"building {args.events} inputs and their expected outcomes offline")
    inputs = build_inputs(
        args.events, rules, timestamp_ms=timestamp_ms, max_bytes=MAX_PAYLOAD_BYTES, seed=args.seed
    )
    say(
        f"{len(inputs.values)} inputs: {inputs.poison} poison, {inputs.templates} provider "
        f"samples ({inputs.id_varied_templates} with ids varied); {inputs.summary()}"
    )
    burst = args.burst or max(300, args.events // 12)
    plan = Plan(
        events=args.events,
        outage=args.outage,
        broker_faults=args.bootstrap is None,
        burst=burst,
        initial=max(200, args.events // 10),
        trickle=args.trickle or max(20.0, args.events / 400),
        static_members=args.static_members,
        seed=args.seed,
    )
    say(f"plan: {asdict(plan)}")
    broker: LocalBroker | None = None
    reports: list[ModeReport] = []
    code = 0
    try:
        if args.bootstrap:
            bootstrap = args.bootstrap
            await wait_for_broker(bootstrap)
        else:
            script = Path(args.local_kafka) if args.local_kafka else LOCAL_KAFKA
            broker = LocalBroker(work / "kafka", script=script)
            say(f"starting a dedicated broker on {broker.bootstrap}")
            await broker.start_async()
            bootstrap = broker.bootstrap
            say(f"broker ready in {broker.last_start_seconds or 0:.1f}s")
        for mode in modes:
            say(f"=== {mode} ===")
            run = ModeRun(mode, plan, broker, bootstrap, inputs, work)
            try:
                report = await run.run()
            except HarnessError as exc:
                say(f"HARNESS ERROR in {mode}: {exc}")
                for slot in run.slots.values():
                    say(f"{slot.name} log tail:\n{slot.log_tail(2000)}")
                run.report.problems.append(f"harness: {exc}")
                reports.append(run.report)
                code = 2
                break
            reports.append(report)
            print(table(report), "\n", flush=True)
    finally:
        if broker is not None:
            say("stopping the broker")
            await broker.stop_async()
    if code == 0 and not all(r.ok for r in reports):
        code = 1
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "events": args.events,
                    "plan": asdict(plan),
                    "exit_code": code,
                    "work_dir": str(work),
                    "modes": [{**asdict(r), "ok": r.ok} for r in reports],
                },
                indent=2,
            )
        )
    if code == 0 and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        say(f"logs kept in {work}")
    say("done: " + ("every check passed" if code == 0 else f"exit {code}"))
    return code


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="inputs per mode [100000]")
    parser.add_argument("--mode", choices=(*MODES, "both"), default="both")
    parser.add_argument("--outage", type=float, default=30.0, help="broker outage, s [30]")
    parser.add_argument("--bootstrap", help="an existing broker (the broker faults are skipped)")
    parser.add_argument("--burst", type=int, default=0, help="records fed before each fault")
    parser.add_argument("--trickle", type=float, default=0.0, help="records/s fed meanwhile")
    parser.add_argument(
        "--static-members",
        action="store_true",
        help="static group membership (KAFKA_GROUP_INSTANCE_ID per worker)",
    )
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--local-kafka", help=f"the broker script [{LOCAL_KAFKA}]")
    parser.add_argument("--json", help="write the report as JSON to this file")
    parser.add_argument("--work-dir", help="broker data and worker logs [a temp dir]")
    parser.add_argument("--keep", action="store_true", help="keep the work dir after success")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.events < 1000:
        print("--events must be at least 1000", file=sys.stderr)
        return 2
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return asyncio.run(main_async(args))
    except KeyboardInterrupt:
        say("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())

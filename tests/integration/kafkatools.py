"""Helpers for tests and benchmarks against a real Apache Kafka broker.

Two halves, both free of pytest so that a benchmark script can import them too
(``sys.path.insert(0, "tests/integration")`` then ``import kafkatools``):

* :class:`LocalBroker` drives ``deploy/kafka/local-kafka`` to run a throw-away
  single-node KRaft broker on free local ports, with its own data directory,
  and can stop and restart it on the same data (to test a broker outage).
* async helpers built on plain aiokafka (admin client, producer, group-less
  consumer) that create and delete topics, produce, read a whole topic back and
  look at committed and end offsets, so that a test can check what a worker
  really wrote instead of trusting mocks.

Every helper opens its own short-lived clients and closes them in ``finally``:
the test suite runs with ``filterwarnings = error``, so a leaked transport
would fail an unrelated test later.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import random
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    KafkaError,
    TopicAlreadyExistsError,
    UnknownError,
    UnknownTopicOrPartitionError,
)
from aiokafka.errors import for_code as kafka_error_for_code
from aiokafka.structs import ConsumerRecord, RecordMetadata, TopicPartition

__all__ = [
    "LOCAL_KAFKA",
    "BrokerUnavailableError",
    "LocalBroker",
    "LocalBrokerError",
    "Topics",
    "committed_offsets",
    "consume_all",
    "create_topic_set",
    "create_topics",
    "delete_topics",
    "end_offsets",
    "free_port_pair",
    "port_is_free",
    "produce",
    "topic_configs",
    "topic_partitions",
    "unique_name",
    "wait_for_broker",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_KAFKA = REPO_ROOT / "deploy" / "kafka" / "local-kafka"
HOST = "127.0.0.1"

Headers = list[tuple[str, bytes]]


# --- the broker process -----------------------------------------------------------


class LocalBrokerError(RuntimeError):
    """``local-kafka`` failed (its own stderr already explains why)."""


class BrokerUnavailableError(RuntimeError):
    """No Kafka broker answered at the given bootstrap address in time."""


def port_is_free(port: int, host: str = HOST) -> bool:
    """True if nothing listens on (or holds) ``host:port``.

    Binding without SO_REUSEADDR is stricter than what the JVM needs (it also
    refuses ports with connections in TIME_WAIT), which is what we want from a
    port we are about to hand to a broker.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii")
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_pair(offset: int = 1000, attempts: int = 500) -> tuple[int, int]:
    """Two free ports ``(broker, controller)``, preferably ``(p, p + offset)``.

    ``local-kafka`` defaults the controller port to ``KAFKA_PORT + 1000``; we pick
    both explicitly anyway.  Ports come from below the kernel's ephemeral range
    so that, while a broker is stopped for a restart test, no outgoing client
    connection can grab its port as a source port.
    """
    top = _ephemeral_low() - offset - 1
    candidates = range(15000, top) if top - 15000 >= 1000 else range(15000, 65535 - offset)
    rng = random.SystemRandom()
    for _ in range(attempts):
        port = rng.choice(candidates)
        if port_is_free(port) and port_is_free(port + offset):
            return port, port + offset
    # Crowded machine: any two free ports will do.
    for _ in range(attempts):
        port, other = rng.choice(candidates), rng.choice(candidates)
        if port != other and port_is_free(port) and port_is_free(other):
            return port, other
    raise LocalBrokerError("no free pair of TCP ports found for a local Kafka broker")


class LocalBroker:
    """One single-node KRaft broker run by ``deploy/kafka/local-kafka``.

    The ports are fixed when the object is made and the data stay in
    ``data_dir``, so :meth:`stop` then :meth:`start` restarts the *same* broker
    (same address, same topics and records): that is what a test of a broker
    outage needs.  ``local-kafka``'s stderr is passed through (``stderr=None``)
    because the first start downloads the jars with Maven, which takes a while.

    A broker this object started and did not stop is stopped at interpreter
    exit as a safety net (``atexit``), so a crashed test run does not leave a
    JVM behind.  The blocking methods have ``*_async`` twins that run them in a
    thread, so that a test can stop the broker while its worker keeps running
    on the event loop.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        script: Path = LOCAL_KAFKA,
        start_timeout: float = 900.0,
        stop_timeout: float = 90.0,
        extra_env: Mapping[str, str] | None = None,
        stderr: int | None = None,
    ) -> None:
        if port is None:
            port, picked_controller = free_port_pair()
            controller_port = controller_port or picked_controller
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.controller_port = controller_port or port + 1000
        self.script = script
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.extra_env = dict(extra_env or {})
        self.stderr = stderr
        self.last_start_seconds: float | None = None
        self._atexit_registered = False

    def __repr__(self) -> str:
        return f"LocalBroker({self.bootstrap}, data_dir={str(self.data_dir)!r})"

    @property
    def bootstrap(self) -> str:
        """The ``host:port`` bootstrap address (the same across restarts)."""
        return f"{HOST}:{self.port}"

    @property
    def log_file(self) -> Path:
        """The broker's own log (server output), useful in failure messages."""
        return self.data_dir / "kafka.log"

    def env(self) -> dict[str, str]:
        """The environment ``local-kafka`` runs with for this broker."""
        env = dict(os.environ)
        env.update(self.extra_env)
        env["KAFKA_PORT"] = str(self.port)
        env["KAFKA_CONTROLLER_PORT"] = str(self.controller_port)
        env["KAFKA_DATA_DIR"] = str(self.data_dir)
        return env

    def _run(
        self, command: str, *, timeout: float, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [str(self.script), command],
                env=dict(env or self.env()),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=self.stderr,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalBrokerError(
                f"local-kafka {command} for {self.bootstrap} did not finish in {timeout:.0f} s"
            ) from exc

    def start(self) -> str:
        """Start (or restart on the same data) and wait until it serves requests.

        Returns the bootstrap address.  ``local-kafka start`` fetches the jars if
        needed, waits for the port and for admin requests, and creates its
        default ``mail.*`` topics.  Idempotent: a running broker is left alone.
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        if not self._atexit_registered:
            atexit.register(self._stop_at_exit)
            self._atexit_registered = True
        try:
            result = self._run("start", timeout=self.start_timeout)
        except LocalBrokerError:
            self._stop_quietly()
            raise
        if result.returncode != 0:
            self._stop_quietly()
            raise LocalBrokerError(
                f"local-kafka start failed with exit code {result.returncode} for "
                f"{self.bootstrap} (see its output above; broker log: {self.log_file})"
            )
        address = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        if address != self.bootstrap:
            self._stop_quietly()
            raise LocalBrokerError(
                f"local-kafka start printed {address!r}, expected {self.bootstrap!r}"
            )
        self.last_start_seconds = time.monotonic() - started
        return self.bootstrap

    def stop(self) -> None:
        """Stop gracefully (SIGTERM; local-kafka escalates to SIGKILL). Idempotent."""
        result = self._run("stop", timeout=self.stop_timeout)
        if result.returncode != 0:
            raise LocalBrokerError(
                f"local-kafka stop failed with exit code {result.returncode} for {self.bootstrap}"
            )

    def kill(self) -> None:
        """Stop abruptly: SIGTERM immediately followed by SIGKILL, no clean shutdown.

        Uses ``KAFKA_STOP_TIMEOUT=0`` so ``local-kafka`` keeps its guard against
        recycled pids; the data stay, :meth:`start` recovers them like after a crash.
        """
        env = self.env()
        env["KAFKA_STOP_TIMEOUT"] = "0"
        result = self._run("stop", timeout=self.stop_timeout, env=env)
        if result.returncode != 0:
            raise LocalBrokerError(
                f"local-kafka stop (kill) failed with exit code {result.returncode}"
            )

    def is_running(self) -> bool:
        """What ``local-kafka status`` says (a live broker process, not readiness)."""
        return self._run("status", timeout=30).returncode == 0

    async def start_async(self) -> str:
        """:meth:`start` in a worker thread, keeping the event loop running."""
        return await asyncio.to_thread(self.start)

    async def stop_async(self) -> None:
        """:meth:`stop` in a worker thread, keeping the event loop running."""
        await asyncio.to_thread(self.stop)

    async def kill_async(self) -> None:
        """:meth:`kill` in a worker thread, keeping the event loop running."""
        await asyncio.to_thread(self.kill)

    def _stop_quietly(self) -> None:
        try:
            self.stop()
        except LocalBrokerError:
            pass

    def _stop_at_exit(self) -> None:
        if self.data_dir.joinpath("kafka.pid").exists():
            self._stop_quietly()

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- topics -----------------------------------------------------------------------

_INVALID_TOPIC_CHARS = re.compile(r"[^a-zA-Z0-9._-]+")


def unique_name(prefix: str) -> str:
    """``prefix-<16 hex>``, a fresh topic or group name per call.

    Each test gets its own topics and groups, so tests cannot see each other's
    records or offsets even on a shared, long-lived broker.  Characters Kafka
    does not allow in topic names are replaced by ``-``.
    """
    clean = _INVALID_TOPIC_CHARS.sub("-", prefix).strip("-") or "t"
    return f"{clean}-{uuid.uuid4().hex[:16]}"


def _admin(bootstrap: str, request_timeout_ms: int = 30000) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=request_timeout_ms)


async def wait_for_broker(bootstrap: str, timeout: float = 30.0) -> None:
    """Return once a broker at ``bootstrap`` answers a metadata request.

    Retries until ``timeout`` because a broker that has just opened its port may
    not serve requests yet; raises :class:`BrokerUnavailableError` with the last
    client error otherwise.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    pause = 0.25
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        admin = _admin(bootstrap, request_timeout_ms=max(1000, int(min(remaining, 10) * 1000)))
        try:
            async with asyncio.timeout(remaining):
                await admin.start()
                await admin.describe_cluster()
        except (KafkaError, OSError, TimeoutError) as exc:
            last = exc
        else:
            return
        finally:
            await admin.close()
        await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 2.0)  # aiokafka logs an ERROR per failed connect
    raise BrokerUnavailableError(
        f"no Kafka broker answered at {bootstrap} within {timeout:.0f} s (last error: {last!r})"
    )


async def _describe(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, Any]:
    """Metadata per topic name: {"error_code", "partitions": [{"partition", "leader", ...}]}."""
    return {t["topic"]: t for t in await admin.describe_topics(names)}


def _ready(meta: Any, partitions: int | None) -> bool:
    if meta is None or meta["error_code"] != 0:
        return False
    parts = meta["partitions"]
    if partitions is not None and len(parts) != partitions:
        return False
    return bool(parts) and all(p["error_code"] == 0 and p["leader"] >= 0 for p in parts)


async def _wait_topics_ready(
    admin: AIOKafkaAdminClient, names_partitions: Mapping[str, int | None], timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        described = await _describe(admin, list(names_partitions))
        if all(_ready(described.get(n), p) for n, p in names_partitions.items()):
            return described
        if time.monotonic() > deadline:
            missing = sorted(
                n for n, p in names_partitions.items() if not _ready(described.get(n), p)
            )
            raise TimeoutError(
                f"topics missing or without partition leaders after {timeout:.0f} s: {missing}"
            )
        await asyncio.sleep(0.1)


async def create_topics(
    bootstrap: str,
    names_partitions: dict[str, int],
    compact: set[str] | frozenset[str] = frozenset(),
    *,
    timeout: float = 30.0,
) -> None:
    """Create topics (replication 1) and return once every partition has a leader.

    The CreateTopics response only says the controller accepted the topics; the
    broker's metadata and leader election follow a moment later, and a producer
    that races them gets UNKNOWN_TOPIC_OR_PARTITION / LEADER_NOT_AVAILABLE.
    Names in ``compact`` get ``cleanup.policy=compact``.  A topic that already
    exists is accepted if it already has the requested partition count.
    """
    unknown = set(compact) - set(names_partitions)
    if unknown:
        raise ValueError(f"compact names topics that are not created: {sorted(unknown)}")
    admin = _admin(bootstrap)
    try:
        await admin.start()
        response = await admin.create_topics(
            [
                NewTopic(
                    name,
                    partitions,
                    1,
                    topic_configs={"cleanup.policy": "compact"} if name in compact else None,
                )
                for name, partitions in names_partitions.items()
            ],
            timeout_ms=int(timeout * 1000),
        )
        for topic, code, *rest in response.topic_errors:
            if code == 0 or kafka_error_for_code(code) is TopicAlreadyExistsError:
                continue
            message = rest[0] if rest else ""
            raise kafka_error_for_code(code)(f"creating topic {topic!r}: {message}")
        await _wait_topics_ready(admin, names_partitions, timeout)
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: Iterable[str], *, timeout: float = 30.0) -> None:
    """Delete topics and return once the broker's metadata no longer lists them.

    Missing topics are ignored, so a test teardown can call it unconditionally.
    Waiting matters on a shared broker: a topic that is "marked for deletion"
    still shows up and cannot be recreated under the same name yet.
    """
    topics = list(names)
    if not topics:
        return
    admin = _admin(bootstrap)
    try:
        await admin.start()
        response = await admin.delete_topics(topics, timeout_ms=int(timeout * 1000))
        for name, code, *_ in response.topic_error_codes:
            if code == 0 or kafka_error_for_code(code) is UnknownTopicOrPartitionError:
                continue
            raise kafka_error_for_code(code)(f"deleting topic {name!r}")
        deadline = time.monotonic() + timeout
        unknown = UnknownTopicOrPartitionError.errno
        while True:
            described = await _describe(admin, topics)
            left = sorted(
                n for n in topics if n in described and described[n]["error_code"] != unknown
            )
            if not left:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics still listed {timeout:.0f} s after deletion: {left}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def topic_partitions(bootstrap: str, topic: str, *, timeout: float = 30.0) -> list[int]:
    """The partition ids of ``topic``, sorted, once they all have a leader.

    Raises ``TimeoutError`` if the topic does not exist (or has no leaders)
    within ``timeout``.
    """
    admin = _admin(bootstrap)
    try:
        await admin.start()
        described = await _wait_topics_ready(admin, {topic: None}, timeout)
        return sorted(p["partition"] for p in described[topic]["partitions"])
    finally:
        await admin.close()


async def topic_configs(bootstrap: str, topic: str) -> dict[str, str]:
    """The effective configuration of ``topic`` (DescribeConfigs), name -> value.

    Lets a test check what the broker really applied, e.g. ``cleanup.policy``
    of a compacted topic, rather than what was asked for.
    """
    admin = _admin(bootstrap)
    try:
        await admin.start()
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
    finally:
        await admin.close()
    (resource,) = response.resources
    code, message = resource[0], resource[1]
    if code:
        raise kafka_error_for_code(code)(f"describing configs of {topic!r}: {message}")
    return {entry[0]: entry[1] for entry in resource[4]}


@dataclass(frozen=True)
class Topics:
    """The worker's four topics, under names unique to one test."""

    raw: str
    events: str
    suppressions: str
    dlq: str

    @property
    def names(self) -> tuple[str, str, str, str]:
        """All four names, in field order."""
        return (self.raw, self.events, self.suppressions, self.dlq)


async def create_topic_set(bootstrap: str, prefix: str = "it", partitions: int = 3) -> Topics:
    """Create fresh raw/events/suppressions/dlq topics like production's, uniquely named.

    Same shape as ``local-kafka start`` creates for the worker: ``partitions``
    partitions each, the suppressions topic compacted.  Unique names keep
    tests independent on a shared broker; delete them with
    ``delete_topics(bootstrap, topics.names)``.
    """
    topics = Topics(
        raw=unique_name(f"{prefix}.raw"),
        events=unique_name(f"{prefix}.events"),
        suppressions=unique_name(f"{prefix}.suppressions"),
        dlq=unique_name(f"{prefix}.dlq"),
    )
    await create_topics(
        bootstrap,
        dict.fromkeys(topics.names, partitions),
        compact={topics.suppressions},
    )
    return topics


# --- records ----------------------------------------------------------------------


async def produce(
    bootstrap: str,
    topic: str,
    values: list[bytes],
    keys: list[bytes | None] | None = None,
    headers: list[Headers] | None = None,
    *,
    partition: int | None = None,
) -> list[RecordMetadata]:
    """Send records in order and return their metadata (same order as ``values``).

    ``acks=all`` with idempotence, so that once this returns the records are
    durably in the log, exactly once, which is what a test feeding a worker
    needs.  ``keys`` and ``headers`` (a list of ``(name, bytes)`` per record)
    must have as many entries as ``values`` when given; records without
    ``partition`` are placed by the default partitioner (by key).
    """
    if keys is not None and len(keys) != len(values):
        raise ValueError(f"{len(keys)} keys for {len(values)} values")
    if headers is not None and len(headers) != len(values):
        raise ValueError(f"{len(headers)} header lists for {len(values)} values")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    try:
        await producer.start()
        futures = []
        for i, value in enumerate(values):
            futures.append(
                await producer.send(
                    topic,
                    value=value,
                    key=keys[i] if keys is not None else None,
                    headers=headers[i] if headers is not None else None,
                    partition=partition,
                )
            )
        try:
            return list(await asyncio.gather(*futures))
        except UnknownError as exc:
            # aiokafka 0.14 knows broker error codes up to 79 and drops the broker's
            # message: INVALID_RECORD (87), e.g. for a keyless record on a compacted
            # topic, arrives as a bare UnknownError.
            raise UnknownError(
                f"broker rejected a record for {topic!r} with an error code aiokafka does "
                "not know (a keyless record on a compacted topic gives INVALID_RECORD)"
            ) from exc
    finally:
        await producer.stop()


async def consume_all(
    bootstrap: str,
    topic: str,
    *,
    expect: int,
    timeout: float = 60.0,
    settle: float = 0.0,
    read_committed: bool = True,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``topic`` from the beginning of every partition, without a consumer group.

    Stops once at least ``expect`` records arrived, then keeps reading for
    ``settle`` more seconds so that duplicates (more than ``expect``) show up.
    On ``timeout`` it returns what it has instead of raising: the caller's
    assertion then shows what was missing.  No group means no commits and no
    rebalances, so it never disturbs the worker under test.  ``read_committed``
    hides records of aborted (and still open) transactions, as a downstream
    consumer with that isolation level would.  Records come in arrival order,
    which is offset order within each partition.
    """
    partitions = await topic_partitions(bootstrap, topic, timeout=min(timeout, 30.0))
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed" if read_committed else "read_uncommitted",
    )
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        await consumer.start()
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while True:
            now = time.monotonic()
            if settle_until is None and len(records) >= expect:
                settle_until = now + settle
            until = deadline if settle_until is None else min(deadline, settle_until)
            if now >= until:
                break
            batch = await consumer.getmany(timeout_ms=max(1, int(min(until - now, 0.5) * 1000)))
            for tp in sorted(batch, key=lambda tp: tp.partition):
                records.extend(batch[tp])
    finally:
        await consumer.stop()
    return records


# --- offsets ----------------------------------------------------------------------


async def committed_offsets(
    bootstrap: str, group_id: str, topic: str, *, timeout: float = 30.0
) -> dict[int, int]:
    """Partition -> committed offset of ``group_id`` on ``topic``.

    Partitions without a commit are absent (not ``-1``), so ``== {}`` means the
    group committed nothing on that topic.  Asks the group coordinator
    directly (OffsetFetch), which works whether or not the group has members.
    Retries retriable errors until ``timeout``: on a fresh broker the first
    coordinator lookup answers COORDINATOR_NOT_AVAILABLE while Kafka creates
    ``__consumer_offsets``.
    """
    deadline = time.monotonic() + timeout
    admin = _admin(bootstrap)
    try:
        await admin.start()
        while True:
            try:
                offsets = await admin.list_consumer_group_offsets(group_id)
                break
            except KafkaError as exc:
                if not exc.retriable or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    return {
        tp.partition: meta.offset
        for tp, meta in offsets.items()
        if tp.topic == topic and meta.offset >= 0
    }


async def end_offsets(
    bootstrap: str, topic: str, *, read_committed: bool = False
) -> dict[int, int]:
    """Partition -> high watermark (offset of the next record) for every partition.

    Read uncommitted, so transaction control markers count: with transactions
    the end offset is larger than the number of visible records.  With
    ``read_committed`` it is the last stable offset instead, which an open
    transaction holds back.
    """
    partitions = await topic_partitions(bootstrap, topic)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed" if read_committed else "read_uncommitted",
    )
    try:
        await consumer.start()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}

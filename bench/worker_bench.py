"""The worker through a real broker: throughput against a bare passthrough, latency, memory.

Usage: python bench/worker_bench.py [--events N] [--bootstrap host:port] [--json out.json]

Without ``--bootstrap`` a throw-away broker is started with ``deploy/kafka/local-kafka``
(``tests/integration/kafkatools.LocalBroker``) in a temp dir and stopped at the end.
Phases, each on topics of its own (unique names):

1. preload: N generic MTA events (``bench/gen_generic.py``, all texts distinct) into a
   raw topic of 3 partitions, in chunks, acks=all.
2. ceiling: a bare aiokafka consume -> produce passthrough of those records (this file
   with ``--passthrough``, a child process) with the worker's own client options
   (``consumer.kafka.build_consumer``/``build_producer``) and the worker's loop shape:
   getmany(MAX_BATCH_RECORDS) -> send every record -> await every ack -> commit.
3. worker: ``python -m consumer run`` as a child process on the same records, fresh group;
   then the passthrough once more (the broker's JVM is warmer by then); the ceiling is
   the faster of the two passthrough runs.
4. latency: fresh topics with ``message.timestamp.type=LogAppendTime``, the worker
   started first, then a paced producer at half the worker's measured rate; for every
   normalized event, event append time - raw record append time (both broker clock).

Throughput of phases 2 and 3 is measured the same way from outside: the group's
committed offsets are polled every ``--poll`` seconds; the clock runs from the first
poll that sees a commit to the poll that sees every record committed, and the records
committed at the first poll are left out (start-up and group join are not counted).
CPU seconds of the child, the broker and the whole machine are read from /proc over the
same window; RSS (VmRSS) of the child is sampled at every poll, VmHWM read before SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

ROOT = Path(__file__).resolve().parent.parent
GEN = ROOT / "bench" / "gen_generic.py"
sys.path.insert(0, str(ROOT / "tests" / "integration"))

import kafkatools  # noqa: E402  (tests/integration is not a package)

PARTITIONS = 3
CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(message: str) -> None:
    print(f"worker-bench: {message}", file=sys.stderr, flush=True)


# --- /proc --------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float | None:
    """utime + stime of a process (all its threads), or None if it is not readable."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    total = sum(values[:8])  # guest time is already inside user
    idle = values[3] + values[4]
    return (total - idle) / CLK_TCK, total / CLK_TCK


def status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class CpuWindow:
    """CPU seconds used between ``start`` and ``stop`` by each process and the machine."""

    pids: dict[str, int | None]
    before: dict[str, float | None] = field(default_factory=dict)
    machine_before: tuple[float, float] = (0.0, 0.0)
    wall_before: float = 0.0
    result: dict[str, float | None] = field(default_factory=dict)

    def start(self) -> None:
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.machine_before = machine_busy()
        self.wall_before = time.monotonic()

    def stop(self) -> dict[str, float | None]:
        wall = time.monotonic() - self.wall_before
        out: dict[str, float | None] = {}
        for name, pid in self.pids.items():
            now, then = cpu_seconds(pid), self.before.get(name)
            out[name] = None if now is None or then is None else round((now - then) / wall, 3)
        busy, total = machine_busy()
        cores = (total - self.machine_before[1]) / wall
        machine = (busy - self.machine_before[0]) / wall
        # Everything else on the machine: other users' processes, kernel threads.
        out["other"] = round(machine - sum(v for v in out.values() if v), 3)
        out["machine"] = round(machine, 3)
        out["cores"] = round(cores, 2)
        self.result = out
        return out


def describe_cpu(cpu: dict[str, float | None]) -> str:
    parts = [
        f"{name} {value:.2f}"
        for name, value in cpu.items()
        if name not in {"cores", "machine"} and value is not None
    ]
    parts.append(f"machine {cpu['machine']:.2f}")
    return ", ".join(parts) + f" (cores busy, of {os.cpu_count()})"


# --- kafka helpers ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def create_topics(
    bootstrap: str, names: Sequence[str], configs: dict[str, dict[str, str]]
) -> None:
    """Topics of PARTITIONS partitions with per-topic configs, once they have leaders."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        response = await admin.create_topics(
            [NewTopic(name, PARTITIONS, 1, topic_configs=configs.get(name)) for name in names]
        )
        for topic, code, *rest in response.topic_errors:
            if code:
                raise RuntimeError(f"creating topic {topic}: error {code} {rest}")
    finally:
        await admin.close()
    for name in names:
        await kafkatools.topic_partitions(bootstrap, name)


def gen_values(count: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(GEN), str(count)], stdout=subprocess.PIPE, bufsize=1 << 20
    )


async def preload(bootstrap: str, topic: str, count: int, chunk: int = 20_000) -> float:
    """Send ``count`` generic events in chunks of ``chunk`` acknowledged sends; seconds."""
    say(f"producing {count} generic events into {topic} ...")
    started = time.monotonic()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
        max_batch_size=512 * 1024,
    )
    gen = gen_values(count)
    assert gen.stdout is not None
    sent = 0
    try:
        await producer.start()
        futures = []
        for line in gen.stdout:
            futures.append(await producer.send(topic, line.rstrip(b"\n")))
            sent += 1
            if len(futures) >= chunk:
                await asyncio.gather(*futures)
                futures = []
                if sent % 100_000 == 0:
                    say(f"  produced {sent}/{count}")
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
        gen.wait()
    if sent != count:
        raise RuntimeError(f"gen_generic.py gave {sent} events, expected {count}")
    seconds = time.monotonic() - started
    say(f"produced {count} in {seconds:.1f} s")
    return seconds


class OffsetWatch:
    """Committed offsets of one group on one topic, through one long-lived admin client."""

    def __init__(self, bootstrap: str, group: str, topic: str) -> None:
        self.group = group
        self.topic = topic
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)

    async def __aenter__(self) -> OffsetWatch:
        await self.admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.admin.close()

    async def committed(self) -> int:
        try:
            offsets = await self.admin.list_consumer_group_offsets(self.group)
        except KafkaError as exc:
            if exc.retriable:
                return 0
            raise
        return sum(
            meta.offset
            for tp, meta in offsets.items()
            if tp.topic == self.topic and meta.offset > 0
        )


# --- child processes ----------------------------------------------------------------


class Child:
    """A child process (worker or passthrough) with its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
            )
        self.pid = self.process.pid
        self.rss_peak_kb = 0

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"child {self.pid} exited with {self.process.returncode}:\n{self.tail()}"
            )

    def sample_rss(self) -> int | None:
        rss = status_kb(self.pid, "VmRSS")
        if rss is not None:
            self.rss_peak_kb = max(self.rss_peak_kb, rss)
        return rss

    def terminate(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            return -9

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def worker_env(
    bootstrap: str,
    group: str,
    raw: str,
    outputs: tuple[str, str, str],
    http_port: int,
    batch: int,
) -> dict[str, str]:
    events, suppressions, dlq = outputs
    return {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_GROUP_ID": group,
        "INPUT_TOPICS": raw,
        "EVENTS_TOPIC": events,
        "SUPPRESSIONS_TOPIC": suppressions,
        "DLQ_TOPIC": dlq,
        "HTTP_PORT": str(http_port),
        "HTTP_HOST": "127.0.0.1",
        "LOG_LEVEL": "warning",
        "MAX_BATCH_RECORDS": str(batch),
    }


def start_worker(env: dict[str, str], log_path: Path) -> Child:
    return Child([sys.executable, "-m", "consumer", "run"], env, log_path)


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def metric_sums(text: str) -> dict[str, float]:
    """Sum of each sample name over its labels, from a Prometheus text page."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, _, value = line.rpartition(" ")
        name = name_labels.split("{", 1)[0]
        with contextlib.suppress(ValueError):
            sums[name] = sums.get(name, 0.0) + float(value)
    return sums


def outcome_counts(text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mailevents_records_total{"):
            label = line.split('outcome="', 1)[1].split('"', 1)[0]
            out[label] = float(line.rpartition(" ")[2])
    return out


# --- the passthrough (child process) ------------------------------------------------


async def passthrough(bootstrap: str, group: str, source: str, target: str, batch: int) -> int:
    """Consume ``source`` and produce every value unchanged to ``target``, like the worker.

    Same clients (``consumer.kafka``), same loop shape as ``consumer.app.Worker``: one
    batch at a time, getmany(max_records) -> send all -> await all acks -> commit.
    """
    from consumer.config import from_env  # noqa: PLC0415  (child mode only)
    from consumer.kafka import build_consumer, build_producer  # noqa: PLC0415

    settings = from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "KAFKA_GROUP_ID": group,
            "INPUT_TOPICS": source,
            "EVENTS_TOPIC": target,
            "SUPPRESSIONS_TOPIC": target + ".unused-s",
            "DLQ_TOPIC": target + ".unused-d",
            "HTTP_PORT": "0",
            "MAX_BATCH_RECORDS": str(batch),
        }
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    producer = build_producer(settings)
    consumer = build_consumer(settings)
    ack_timeout = settings.kafka_request_timeout_ms / 1000 * 2
    first: float | None = None
    last: float | None = None
    records = 0
    try:
        await producer.start()
        await consumer.start()
        consumer.subscribe([source])
        while not stop.is_set():
            polled = await consumer.getmany(
                timeout_ms=settings.poll_timeout_ms, max_records=settings.max_batch_records
            )
            if not polled:
                continue
            if first is None:
                first = time.time()
            futures = []
            offsets = {}
            for tp, messages in polled.items():
                offsets[tp] = messages[-1].offset + 1
                for message in messages:
                    futures.append(
                        await producer.send(
                            target,
                            message.value,
                            key=message.key,
                            headers=list(message.headers or ()),
                        )
                    )
            await asyncio.wait_for(asyncio.gather(*futures), ack_timeout)
            await consumer.commit(offsets)
            records += len(futures)
            last = time.time()
    finally:
        await consumer.stop()
        await producer.stop()
    print(json.dumps({"records": records, "first_record": first, "last_commit": last}))
    return 0


# --- phases -------------------------------------------------------------------------


@dataclass
class Drain:
    """One run of a consumer group over a preloaded topic, measured from outside."""

    name: str
    records: int
    seconds: float
    events_per_s: float
    wall_from_spawn_s: float
    rss_peak_mb: float
    hwm_mb: float | None
    cpu: dict[str, float | None]
    exit_code: int
    extra: dict[str, Any] = field(default_factory=dict)


async def drain(
    name: str,
    child: Child,
    watch: OffsetWatch,
    total: int,
    broker_pid: int | None,
    *,
    poll: float,
    timeout: float,
    on_done: Any = None,
) -> Drain:
    """Wait until ``watch``'s group has committed ``total`` records, timing the middle."""
    spawned = time.monotonic()
    cpu = CpuWindow({name: child.pid, "broker": broker_pid, "bench": os.getpid()})
    first_t: float | None = None
    first_c = 0
    last_report = spawned
    say(f"{name}: running (pid {child.pid}), waiting for {total} committed records ...")
    while True:
        child.check_alive()
        child.sample_rss()
        done = await watch.committed()
        now = time.monotonic()
        if first_t is None and done > 0:
            first_t, first_c = now, done
            cpu.start()
        if done >= total:
            break
        if now - last_report >= 5:
            rate = (done - first_c) / (now - first_t) if first_t and now > first_t else 0.0
            rss = child.sample_rss() or 0
            say(f"  {name}: {done}/{total} committed, {rate:,.0f}/s, RSS {rss / 1024:.0f} MB")
            last_report = now
        if now - spawned > timeout:
            raise TimeoutError(f"{name}: only {done}/{total} committed after {timeout:.0f} s")
        await asyncio.sleep(poll)
    assert first_t is not None
    cpu_use = cpu.stop()
    seconds = now - first_t
    if seconds <= 0:  # everything committed before the second poll
        seconds = poll
    rate = (total - first_c) / seconds
    extra = (await on_done()) if on_done is not None else {}
    hwm = status_kb(child.pid, "VmHWM")
    code = child.terminate()
    say(
        f"{name}: {total - first_c} records in {seconds:.2f} s = {rate:,.0f} events/s; "
        f"RSS peak {child.rss_peak_kb / 1024:.0f} MB; CPU {describe_cpu(cpu_use)}; exit {code}"
    )
    return Drain(
        name=name,
        records=total - first_c,
        seconds=round(seconds, 3),
        events_per_s=round(rate, 1),
        wall_from_spawn_s=round(now - spawned, 2),
        rss_peak_mb=round(child.rss_peak_kb / 1024, 1),
        hwm_mb=round(hwm / 1024, 1) if hwm else None,
        cpu=cpu_use,
        exit_code=code,
        extra=extra,
    )


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    index = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[index]


async def paced_send(
    bootstrap: str, topic: str, values: list[bytes], rate: float
) -> tuple[int, float]:
    """Send ``values`` at ``rate`` records/s in small ticks; (sent, seconds)."""
    # linger 5 ms like the worker's producer: a real upstream batches too, and the
    # measurement starts at the broker's append, not at send().
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    loop = asyncio.get_running_loop()
    sent = 0
    futures = []
    try:
        started = loop.time()
        next_report = started + 5
        while sent < len(values):
            due = min(len(values), int((loop.time() - started) * rate) + 1)
            while sent < due:
                futures.append(await producer.send(topic, values[sent]))
                sent += 1
            if loop.time() >= next_report:
                say(f"  latency: sent {sent}/{len(values)}")
                next_report += 5
            await asyncio.sleep(0.002)
        seconds = loop.time() - started
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent, seconds


async def latency_phase(
    bootstrap: str,
    rate: float,
    seconds: float,
    workdir: Path,
    broker_pid: int | None,
    poll: float,
    batch: int,
) -> dict[str, Any]:
    """The worker at ``rate`` records/s: raw append -> normalized event append, per record."""
    raw = kafkatools.unique_name("bench.lat.raw")
    outputs = (
        kafkatools.unique_name("bench.lat.events"),
        kafkatools.unique_name("bench.lat.suppressions"),
        kafkatools.unique_name("bench.lat.dlq"),
    )
    append_time = {"message.timestamp.type": "LogAppendTime"}
    await create_topics(
        bootstrap,
        [raw, *outputs],
        {raw: append_time, outputs[0]: append_time, outputs[1]: {"cleanup.policy": "compact"}},
    )
    for topic in (raw, outputs[0]):
        configs = await kafkatools.topic_configs(bootstrap, topic)
        if configs.get("message.timestamp.type") != "LogAppendTime":
            raise RuntimeError(f"{topic}: message.timestamp.type is not LogAppendTime")
    count = max(1, int(rate * seconds))
    say(f"latency: generating {count} events for {seconds:.0f} s at {rate:,.0f}/s ...")
    gen = gen_values(count)
    values = [line.rstrip(b"\n") for line in gen.communicate()[0].splitlines()]
    group = kafkatools.unique_name("bench.lat.worker")
    port = free_port()
    child = start_worker(
        worker_env(bootstrap, group, raw, outputs, port, batch), workdir / "worker-latency.log"
    )
    try:
        say("latency: waiting for the worker to be ready (partitions assigned) ...")
        deadline = time.monotonic() + 60
        while (await asyncio.to_thread(http_get, port, "/readyz"))[0] != 200:
            child.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker not ready after 60 s:\n{child.tail()}")
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        idle_rss = child.sample_rss() or 0
        say(f"latency: worker ready, RSS {idle_rss / 1024:.0f} MB idle; sending ...")
        cpu = CpuWindow({"worker": child.pid, "broker": broker_pid, "bench": os.getpid()})
        cpu.start()
        sampling = True

        async def sample_rss() -> None:
            while sampling:
                child.sample_rss()
                await asyncio.sleep(0.5)

        sampler = asyncio.create_task(sample_rss())
        sent, send_seconds = await paced_send(bootstrap, raw, values, rate)
        say(f"latency: sent {sent} in {send_seconds:.1f} s; waiting for the worker ...")
        async with OffsetWatch(bootstrap, group, raw) as watch:
            deadline = time.monotonic() + 120
            while await watch.committed() < sent:
                child.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError("latency: the worker did not commit every record")
                await asyncio.sleep(poll)
        cpu_use = cpu.stop()
        sampling = False
        await sampler
        status, page = await asyncio.to_thread(http_get, port, "/metrics")
        outcomes = outcome_counts(page) if status == 200 else {}
        hwm = status_kb(child.pid, "VmHWM")
        code = child.terminate()
    finally:
        child.terminate()
    say("latency: reading raw and events back ...")
    raw_records = await kafkatools.consume_all(bootstrap, raw, expect=sent, timeout=120)
    expect_events = int(outcomes.get("ok", sent))
    events = await kafkatools.consume_all(
        bootstrap, outputs[0], expect=expect_events, timeout=120, settle=1.0
    )
    # timestamp_type 1 = LogAppendTime: the broker's clock at append, for both topics.
    if any(r.timestamp_type != 1 for r in (*raw_records, *events)):
        raise RuntimeError("latency: a record without LogAppendTime")
    appended = {(r.partition, r.offset): r.timestamp for r in raw_records}
    pairs: list[tuple[int, float]] = []  # (raw append time, latency ms)
    seen: set[tuple[int, int]] = set()
    duplicates = unmatched = 0
    for record in events:
        source = orjson.loads(record.value)["source"]
        key = (source["partition"], source["offset"])
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        if key not in appended:
            unmatched += 1
            continue
        pairs.append((appended[key], record.timestamp - appended[key]))
    if not pairs:
        raise RuntimeError("latency: no event matched a raw record")
    latencies = sorted(latency for _, latency in pairs)
    # A backlog building up over the run shows as a later half slower than the first.
    pairs.sort()
    half = len(pairs) // 2
    first_half = sorted(latency for _, latency in pairs[:half]) or latencies
    second_half = sorted(latency for _, latency in pairs[half:])
    windows = []  # per 5 s of raw append time: how latency moves over the run
    start = pairs[0][0]
    for index in range(int((pairs[-1][0] - start) // 5000) + 1):
        low, high = start + index * 5000, start + (index + 1) * 5000
        inside = sorted(latency for t, latency in pairs if low <= t < high)
        if inside:
            windows.append(
                {
                    "from_s": index * 5,
                    "records": len(inside),
                    "p50_ms": percentile(inside, 50),
                    "p99_ms": percentile(inside, 99),
                    "max_ms": inside[-1],
                }
            )
    await kafkatools.delete_topics(bootstrap, [raw, *outputs])
    return {
        "rate_target": round(rate, 1),
        "rate_sent": round(sent / send_seconds, 1),
        "sent": sent,
        "events": len(events),
        "matched": len(latencies),
        "duplicates": duplicates,
        "unmatched": unmatched,
        "outcomes": outcomes,
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "max_ms": latencies[-1],
        "min_ms": latencies[0],
        "p50_first_half_ms": percentile(first_half, 50),
        "p50_second_half_ms": percentile(second_half, 50),
        "windows": windows,
        "idle_rss_mb": round(idle_rss / 1024, 1),
        "rss_peak_mb": round(child.rss_peak_kb / 1024, 1),
        "hwm_mb": round(hwm / 1024, 1) if hwm else None,
        "cpu": cpu_use,
        "exit_code": code,
    }


async def worker_metrics(port: int) -> dict[str, Any]:
    """What the worker's /metrics says once the run is done."""
    status, page = await asyncio.to_thread(http_get, port, "/metrics")
    if status != 200:
        return {}
    sums = metric_sums(page)
    batches = sums.get("mailevents_batch_seconds_count", 0.0)
    return {
        "outcomes": outcome_counts(page),
        "events": sums.get("mailevents_events_total", 0.0),
        "suppressions": sums.get("mailevents_suppressions_total", 0.0),
        "dead_letters": sums.get("mailevents_dead_letters_total", 0.0),
        "produce_failures": sums.get("mailevents_produce_failures_total", 0.0),
        "commit_failures": sums.get("mailevents_commit_failures_total", 0.0),
        "batches": batches,
        "mean_batch_ms": round(1000 * sums.get("mailevents_batch_seconds_sum", 0.0) / batches, 1)
        if batches
        else None,
    }


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy attached to ``pid`` until it exits (raw folded stacks in ``out``)."""
    spy = Path(sys.executable).parent / "py-spy"
    time.sleep(1.0)  # let the interpreter come up before attaching
    return subprocess.Popen(
        [str(spy), "record", "--idle", "-f", "raw", "-o", str(out), "--pid", str(pid)],
        stdout=subprocess.DEVNULL,
    )


async def run_passthrough(
    name: str,
    args: argparse.Namespace,
    bootstrap: str,
    raw: str,
    target: str,
    broker_pid: int | None,
    workdir: Path,
) -> Drain:
    """The ceiling: this file's ``--passthrough`` mode as a child, fresh group."""
    group = kafkatools.unique_name("bench.passthrough")
    argv = [sys.executable, str(Path(__file__).resolve()), "--passthrough"]
    argv += ["--bootstrap", bootstrap, "--group", group, "--source", raw, "--target", target]
    argv += ["--batch", str(args.batch)]
    child = Child(argv, {}, workdir / f"{name}.log")
    try:
        async with OffsetWatch(bootstrap, group, raw) as watch:
            run = await drain(
                name, child, watch, args.events, broker_pid, poll=args.poll, timeout=args.timeout
            )
    finally:
        child.terminate()
    with contextlib.suppress(ValueError, IndexError, KeyError, TypeError):
        own = json.loads(child.tail(1))
        span = own["last_commit"] - own["first_record"]
        run.extra["self_timed_s"] = round(span, 3)
        run.extra["self_timed_events_per_s"] = round(own["records"] / span, 1)
    return run


async def run_bench(
    args: argparse.Namespace, bootstrap: str, broker_pid: int | None, workdir: Path
) -> dict[str, Any]:
    total = args.events
    raw = kafkatools.unique_name("bench.raw")
    copies = (kafkatools.unique_name("bench.copy1"), kafkatools.unique_name("bench.copy2"))
    outputs = (
        kafkatools.unique_name("bench.events"),
        kafkatools.unique_name("bench.suppressions"),
        kafkatools.unique_name("bench.dlq"),
    )
    topics = [raw, *copies, *outputs]
    await create_topics(bootstrap, topics, {outputs[1]: {"cleanup.policy": "compact"}})
    results: dict[str, Any] = {"events": total, "bootstrap": bootstrap, "batch": args.batch}
    try:
        results["produce_seconds"] = round(await preload(bootstrap, raw, total), 2)
        before = await run_passthrough(
            "passthrough-before", args, bootstrap, raw, copies[0], broker_pid, workdir
        )

        group = kafkatools.unique_name("bench.worker")
        port = free_port()
        child = start_worker(
            worker_env(bootstrap, group, raw, outputs, port, args.batch),
            workdir / "worker.log",
        )
        profiler = start_profiler(child.pid, args.profile) if args.profile else None
        try:
            async with OffsetWatch(bootstrap, group, raw) as watch:
                worker = await drain(
                    "worker",
                    child,
                    watch,
                    total,
                    broker_pid,
                    poll=args.poll,
                    timeout=args.timeout,
                    on_done=lambda: worker_metrics(port),
                )
        finally:
            child.terminate()
            if profiler is not None:
                profiler.wait(120)
        if worker.exit_code != 0:
            say(f"worker exited with {worker.exit_code}:\n{child.tail()}")

        # Again after the worker: the broker's JVM is warmer by then, and a ceiling
        # measured on a cold broker alone would flatter the ratio.
        after = await run_passthrough(
            "passthrough-after", args, bootstrap, raw, copies[1], broker_pid, workdir
        )
    finally:
        await kafkatools.delete_topics(bootstrap, topics)
    ceiling = max(before, after, key=lambda run: run.events_per_s)
    results["passthrough_before"] = asdict(before)
    results["passthrough_after"] = asdict(after)
    results["ceiling_events_per_s"] = ceiling.events_per_s
    results["worker"] = asdict(worker)
    results["ratio"] = round(worker.events_per_s / ceiling.events_per_s, 4)

    if args.latency_seconds > 0:
        rate = args.rate or worker.events_per_s / 2
        results["latency"] = await latency_phase(
            bootstrap, rate, args.latency_seconds, workdir, broker_pid, args.poll, args.batch
        )
    return results


def summary(results: dict[str, Any]) -> str:
    wk = results["worker"]
    lines = [
        f"worker bench: {results['events']} generic events, 3 partitions, "
        f"MAX_BATCH_RECORDS {results['batch']}, {os.cpu_count()} cores, "
        f"broker {results['bootstrap']}",
        f"  preload               {results['produce_seconds']:.1f} s",
    ]
    runs = (
        ("passthrough before", results["passthrough_before"]),
        ("worker", wk),
        ("passthrough after", results["passthrough_after"]),
    )
    for label, run in runs:
        lines.append(
            f"  {label:<21} {run['events_per_s']:>9,.0f} events/s  "
            f"({run['records']} in {run['seconds']:.2f} s; RSS peak {run['rss_peak_mb']:.0f} MB,"
            f" HWM {run['hwm_mb'] or 0:.0f} MB; exit {run['exit_code']})"
        )
        lines.append(f"  {'':<21} CPU {describe_cpu(run['cpu'])}")
        if "self_timed_events_per_s" in run["extra"]:
            lines.append(
                f"  {'':<21} self-timed, first record -> last commit: "
                f"{run['extra']['self_timed_events_per_s']:,.0f} events/s"
            )
    extra = wk["extra"]
    if extra:
        lines.append(
            f"  worker outputs: {extra['events']:.0f} events, {extra['suppressions']:.0f} "
            f"suppressions, {extra['dead_letters']:.0f} dead letters; {extra['batches']:.0f} "
            f"batches, mean {extra['mean_batch_ms']} ms poll-to-commit; failures "
            f"produce {extra['produce_failures']:.0f} commit {extra['commit_failures']:.0f}"
        )
    verdict = "meets" if results["ratio"] >= 0.85 else "misses"
    lines.append(
        f"  worker / ceiling      {results['ratio']:.1%} of "
        f"{results['ceiling_events_per_s']:,.0f} events/s, the faster passthrough "
        f"({verdict} the 85% aim)"
    )
    lat = results.get("latency")
    if lat:
        lines += [
            f"  latency at {lat['rate_sent']:,.0f}/s ({lat['sent']} records, target "
            f"{lat['rate_target']:,.0f}/s = half the worker's rate), raw append -> event append:",
            f"    p50 {lat['p50_ms']:.0f} ms  p95 {lat['p95_ms']:.0f} ms  "
            f"p99 {lat['p99_ms']:.0f} ms  max {lat['max_ms']:.0f} ms  "
            f"(p50 first half {lat['p50_first_half_ms']:.0f} ms, second half "
            f"{lat['p50_second_half_ms']:.0f} ms)",
            "    per 5 s (p50/p99 ms): "
            + "  ".join(f"{w['p50_ms']:.0f}/{w['p99_ms']:.0f}" for w in lat["windows"]),
            f"    matched {lat['matched']}/{lat['sent']}, duplicates {lat['duplicates']}, "
            f"unmatched {lat['unmatched']}; worker RSS idle {lat['idle_rss_mb']:.0f} MB, "
            f"peak {lat['rss_peak_mb']:.0f} MB; CPU {describe_cpu(lat['cpu'])}; "
            f"exit {lat['exit_code']}",
        ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--events", type=int, default=200_000, help="records to preload")
    parser.add_argument("--bootstrap", help="use this broker instead of starting one")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--batch", type=int, default=500, help="MAX_BATCH_RECORDS of worker and passthrough"
    )
    parser.add_argument("--poll", type=float, default=0.1, help="offset poll interval (s)")
    parser.add_argument("--timeout", type=float, default=1800, help="limit per run (s)")
    parser.add_argument(
        "--latency-seconds", type=float, default=30, help="paced run length (0: skip)"
    )
    parser.add_argument("--rate", type=float, help="paced rate (default: half the worker's)")
    parser.add_argument(
        "--profile", type=Path, help="py-spy raw profile of the worker throughput run"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    parser.add_argument("--passthrough", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.passthrough:
        return asyncio.run(
            passthrough(args.bootstrap, args.group, args.source, args.target, args.batch)
        )
    workdir = Path(tempfile.mkdtemp(prefix="worker-bench-"))
    broker: kafkatools.LocalBroker | None = None
    try:
        if args.bootstrap:
            bootstrap, broker_pid = args.bootstrap, None
        else:
            broker = kafkatools.LocalBroker(workdir / "kafka")
            say(f"starting a broker on {broker.bootstrap} (data in {broker.data_dir}) ...")
            bootstrap = broker.start()
            broker_pid = int((broker.data_dir / "kafka.pid").read_text())
            say(f"broker ready in {broker.last_start_seconds or 0:.1f} s (pid {broker_pid})")
        results = asyncio.run(run_bench(args, bootstrap, broker_pid, workdir))
    finally:
        if broker is not None:
            say("stopping the broker ...")
            broker.stop()
        if args.keep:
            say(f"logs kept in {workdir}")
        else:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)
    print(summary(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    runs = [results["passthrough_before"], results["worker"], results["passthrough_after"]]
    runs += [results["latency"]] if "latency" in results else []
    return 0 if all(run["exit_code"] == 0 for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())

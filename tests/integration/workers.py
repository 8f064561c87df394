"""Run the real worker for integration tests: in this process, or as a child process.

In-process workers are cheap to start and let a test read their metrics and health;
child processes are what a test needs to kill with SIGKILL or stop with SIGTERM, as
Kubernetes does.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
from kafkatools import Topics, committed_offsets, end_offsets
from prometheus_client import CollectorRegistry

from consumer.app import Worker
from consumer.config import from_env
from consumer.escalation import load_escalation_policy
from consumer.health import Health
from consumer.metrics import Metrics
from consumer.rules import Rules
from consumer.suppression_stage import SuppressionStage


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def http_get(port: int, path: str) -> tuple[int, str]:
    """Status and body of a GET on the worker's port; (0, "") when nothing answers yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()
    except OSError:
        return 0, ""


def dsn_payload(address: str, *, bounced: bool, message_id: str | None = None) -> bytes:
    """A flat RFC 3464 payload: a 5.1.1 user-unknown hard bounce or a 2.0.0 delivery."""
    if bounced:
        fields = {
            "action": "failed",
            "status": "5.1.1",
            "diagnosticCode": f"smtp; 550 5.1.1 <{address}>: Recipient address rejected: "
            "User unknown",
        }
    else:
        fields = {"action": "delivered", "status": "2.0.0", "diagnosticCode": "smtp; 250 2.0.0 OK"}
    body = {
        "finalRecipient": f"rfc822; {address}",
        **fields,
        "lastAttemptDate": "Fri, 14 Mar 2025 09:12:05 +0000",
    }
    if message_id:
        body["messageId"] = message_id
    return orjson.dumps(body)


def worker_env(bootstrap: str, topics: Topics, group_id: str, **extra: str) -> dict[str, str]:
    """The environment of a worker on one test's topics; ``extra`` overrides."""
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "KAFKA_GROUP_ID": group_id,
        "INPUT_TOPICS": topics.raw,
        "EVENTS_TOPIC": topics.events,
        "SUPPRESSIONS_TOPIC": topics.suppressions,
        "DLQ_TOPIC": topics.dlq,
        "HTTP_PORT": "0",
        "POLL_TIMEOUT_MS": "200",
        "KAFKA_SESSION_TIMEOUT_MS": "6000",
        "RETRY_BACKOFF_MAX_SECONDS": "2",
        "LOG_LEVEL": "warning",
    }
    env.update(extra)
    return env


@dataclass
class InProcessWorker:
    """A worker task of this event loop, with its own metrics registry."""

    worker: Worker
    metrics: Metrics
    health: Health
    stop: asyncio.Event
    task: asyncio.Task[None]

    def records_done(self) -> int:
        return int(
            sum(
                sample.value
                for family in self.metrics.registry.collect()
                for sample in family.samples
                if sample.name == "mailevents_records_total"
            )
        )

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 60)


@asynccontextmanager
async def in_process_worker(
    env: Mapping[str, str], rules: Rules, stage: str = "classify"
) -> AsyncIterator[InProcessWorker]:
    """Start a worker task; on exit stop it gracefully (and surface its exception)."""
    settings = from_env(env)
    metrics = Metrics(CollectorRegistry())
    health = Health(stall_seconds=30)
    stop = asyncio.Event()
    chosen = (
        SuppressionStage(settings, load_escalation_policy(), metrics)
        if stage == "suppression"
        else None
    )
    worker = Worker(settings, rules, metrics, health, chosen)
    metrics.follow(health, lambda: worker.in_flight_records)
    task = asyncio.create_task(worker.run(stop))
    running = InProcessWorker(worker, metrics, health, stop, task)
    try:
        yield running
    finally:
        if not task.done():
            await running.close()
        elif not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


class ChildWorker:
    """``python -m consumer run`` as a child process, its log in a file."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.log_path = log_path
        full_env = {**os.environ, **env}
        full_env.pop("PYTEST_CURRENT_TEST", None)
        with log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "consumer", "run"],
                env=full_env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye to the group."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float) -> int:
        """SIGTERM and wait; the exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def ensure_stopped(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


async def wait_until(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.2
) -> None:
    """Poll an (async or plain) condition until it holds; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


async def fully_committed(bootstrap: str, group_id: str, topic: str) -> bool:
    """The group has committed the end of every non-empty partition of ``topic``."""
    ends = await end_offsets(bootstrap, topic)
    committed = await committed_offsets(bootstrap, group_id, topic)
    return all(committed.get(p, 0) >= end for p, end in ends.items() if end > 0)

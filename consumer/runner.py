"""``bounce-consumer run``: the worker as a process, wired to signals and the HTTP port.

SIGTERM or SIGINT sets the stop event: the worker finishes its batch, commits, leaves
the group and the process exits 0.  If that takes longer than SHUTDOWN_GRACE_SECONDS
(a broker gone during shutdown), the worker is cancelled and the process exits 1; the
uncommitted records are redelivered to another worker, so nothing is lost either way.
Exit 3 means Kafka refused for good (authorisation, a missing output topic, a fenced
producer): the reason is the last log line.

``STAGE=all`` runs both stages in this process: two workers (two consumer groups, two
producers, two transactional ids) on one event loop, one HTTP port whose probes fail
when either stage does.  When one stage stops for good, the other is stopped too, so
the platform restarts the pod whole.
"""

from __future__ import annotations

import asyncio
import signal

import structlog
from prometheus_client import CollectorRegistry, disable_created_metrics

from consumer import __version__
from consumer.app import FatalKafkaError, Worker
from consumer.config import Settings
from consumer.escalation import load_escalation_policy
from consumer.health import Health, HealthGroup, Probe, serve
from consumer.metrics import Metrics
from consumer.rules import Rules
from consumer.suppression_stage import SuppressionStage

__all__ = ["run_worker"]

log = structlog.get_logger("consumer.runner")


async def run_worker(settings: Settings, rules: Rules, registry: CollectorRegistry) -> int:
    """Run until a signal, then drain within the grace period; the process exit code."""
    # *_created series only double the page; no rule uses them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    metrics = Metrics(registry)
    metrics.build_info.labels(__version__, rules.version, rules.policy.version).set(1)
    names = ("classify", "suppression") if settings.stage == "all" else (settings.stage,)
    workers = {name: _worker(name, settings, rules, metrics) for name in names}
    probe: Probe = (
        workers[names[0]].health
        if len(workers) == 1
        else HealthGroup({name: worker.health for name, worker in workers.items()})
    )
    metrics.follow(probe, lambda: sum(worker.in_flight_records for worker in workers.values()))
    server = (
        await serve(probe, registry, settings.http_host, settings.http_port)
        if settings.http_port
        else None
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, _on_signal, stop, number)
    tasks = [asyncio.create_task(worker.run(stop)) for worker in workers.values()]
    stop_task = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({*tasks, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        stop.set()  # a signal, or one stage ended by itself: the others stop too
        _, pending = await asyncio.wait(tasks, timeout=settings.shutdown_grace_seconds)
        if pending:
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=5)
            log.error(
                "shutdown grace period exceeded; uncommitted records will be redelivered",
                grace_seconds=settings.shutdown_grace_seconds,
            )
            return 1
        return max(_exit_code(task) for task in tasks)
    finally:
        stop_task.cancel()
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(number)
        if server is not None:
            server.close()
            await server.wait_closed()


def _worker(name: str, settings: Settings, rules: Rules, metrics: Metrics) -> Worker:
    """One stage's worker with its own health clock."""
    health = Health(settings.health_stall_seconds)
    stage = (
        SuppressionStage(settings, load_escalation_policy(), metrics)
        if name == "suppression"
        else None
    )
    return Worker(settings, rules, metrics, health, stage)


def _exit_code(worker_task: asyncio.Task[None]) -> int:
    """0 after a clean stop; 3 when Kafka refused for good; a bug propagates (exit 1)."""
    try:
        worker_task.result()
    except FatalKafkaError as exc:
        log.error("stopping: kafka refuses for good", error=str(exc))  # noqa: TRY400 - the message is the reason
        return 3
    return 0


def _on_signal(stop: asyncio.Event, number: signal.Signals) -> None:
    if stop.is_set():
        return
    log.info("stopping", signal=number.name)
    stop.set()

"""The worker loop: poll a batch, process it, produce every output, wait for the acks,
commit.  The only module that talks to Kafka (through ``kafka.py``'s clients).

Why it is shaped this way (docs/architecture.md has the long form):
- One task, one batch at a time.  The batch is the unit of produce, acknowledgement
  and commit, so an offset is committed only after every output of every record
  before it is acknowledged, and in-flight work is bounded by MAX_BATCH_RECORDS and
  MAX_BATCH_BYTES: a slow broker slows the loop down instead of growing memory.
- Processing yields to the event loop every few dozen records, so heartbeats, the
  health server and the producer's I/O never wait on a whole batch of CPU work.
- A failed produce or transaction is not fatal: the batch's partitions are rewound to
  the batch's first offsets, the producer is rebuilt after a capped backoff, and the
  batch is processed again.  Output ids are deterministic, so a repeat is harmless.
  In exactly_once mode a partition resumes only from a committed offset that no
  pending transaction can still move (after a failed transaction and after every
  assignment), so a transaction whose commit was under way is never redone.
- A failed commit is logged and counted, and the loop goes on: the next commit covers
  it, and at worst the records are redelivered.
- A rebalance waits for the in-flight batch (the revoke callback takes the batch
  lock), so a revoked partition's batch is finished and committed, never half done.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    ProducerFenced,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from aiokafka.structs import ConsumerRecord, TopicPartition

from consumer import fastpath
from consumer.config import Guarantee, Settings
from consumer.errors import ConsumerError, PayloadError
from consumer.fenced_offsets import fence_offset_commits, membership_of
from consumer.health import Health
from consumer.kafka import build_consumer, build_producer, security_options
from consumer.metrics import Metrics
from consumer.models import Outcome, SourceRef
from consumer.pipeline import process
from consumer.providers.base import format_time
from consumer.records import OutputRecord, dead_letter_record, outcome_records
from consumer.rules import Rules
from consumer.stable_offsets import fetch_stable_offsets

__all__ = [
    "Batch",
    "ClassifyStage",
    "FatalKafkaError",
    "Stage",
    "StageNotReadyError",
    "Worker",
]

log = structlog.get_logger("consumer.app")

#: Records processed between two yields to the event loop (~5-10 ms of CPU).
_YIELD_EVERY = 48
#: Header a webhook receiver may set to name the provider instead of shape detection.
_PROVIDER_HEADER = "provider"
_FIRST_BACKOFF = 0.5
#: Fetch responses come every 0.5 s even on an idle topic; this much silence is an outage.
_SILENT_BROKER_SECONDS = 10.0
#: How often the wait for another worker's pending transaction is logged.
_PENDING_TRANSACTION_LOG_SECONDS = 5.0


class FatalKafkaError(ConsumerError):
    """Kafka refuses for good (authorisation, a missing output topic, a fenced producer).

    Retrying in place cannot help: the process exits non-zero and the platform restarts
    it, which is also how an operator notices (CrashLoopBackOff with this reason).
    """


# Refusals that no retry cures.  Authentication failures are retried instead (the
# secret may be rotated in place) and only make the worker not-ready.
_FATAL = (
    TopicAuthorizationFailedError,
    GroupAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    ProducerFenced,
)
_AUTHENTICATION = (SaslAuthenticationFailed, AuthenticationFailedError)


class StageNotReadyError(Exception):
    """A record arrived for a partition the stage is not ready for (state restoring)."""


class _BatchFailedError(Exception):
    """Not every output of a batch was acknowledged; the batch must be redone."""


@dataclass(slots=True)
class Batch:
    """One polled batch: its outputs, offsets and what to count once it is acknowledged."""

    outputs: list[OutputRecord] = field(default_factory=list)
    first: dict[TopicPartition, int] = field(default_factory=dict)
    next_offsets: dict[TopicPartition, int] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    dead_letter_kinds: list[str] = field(default_factory=list)
    last_timestamps: dict[TopicPartition, int] = field(default_factory=dict)
    #: Records sent only once ``outputs`` are acknowledged (the suppression stage's
    #: state changelog: a state change is never durable before the update it caused).
    followups: list[OutputRecord] = field(default_factory=list)
    records: int = 0

    def add_dead_letter(
        self,
        settings: Settings,
        message: ConsumerRecord,
        value: bytes,
        error: PayloadError,
        source: SourceRef,
    ) -> None:
        """Log the record's coordinates and reason, and queue its dead letter."""
        log.warning(
            "dead letter",
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            error_kind=error.kind,
            reason=str(error)[:300],
        )
        self.outputs.append(
            dead_letter_record(
                settings.dlq_topic,
                message.key,
                value,
                tuple(message.headers or ()),
                error,
                source,
                settings.max_payload_bytes,
            )
        )
        self.dead_letter_kinds.append(error.kind)


class Stage(Protocol):
    """What a worker runs on each record: the classify stage, or the suppression stage."""

    name: str
    topics: tuple[str, ...]
    group_id: str

    def consumer_options(self) -> dict[str, Any]:
        """Extra consumer options (a co-partitioning assignor)."""

    def process_record(self, message: ConsumerRecord, batch: Batch) -> None:
        """Append the record's outputs (and follow-ups) to the batch."""

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        """Called before any record of the new partitions is processed."""

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Called after the in-flight batch is finished."""

    def acknowledged(self, batch: Batch) -> None:
        """Every output of the batch is durable (and its offsets committed or not)."""

    def abandoned(self, batch: Batch) -> None:
        """The batch will be processed again: forget what it changed."""

    def ready(self) -> tuple[bool, str]:
        """The stage's own readiness (e.g. state restored)."""


class ClassifyStage:
    """Raw delivery events in; normalized events, suppression updates, dead letters out.

    A record goes through the compiled fast path (consumer/fastpath.py ``RecordPath``)
    when the extension is installed, ``BOUNCE_NATIVE`` is not ``0`` and its ``provider``
    header is absent or names the generic format (``dsn``): Python costs ~150 µs a
    record, which held the worker to a sixth of what Kafka carries.  Whatever the
    extension declines (other shapes, oversize, anything unusual) takes
    ``pipeline.process``, which stays the reference and makes every dead letter.  Both
    paths give the same records and the same ``Outcome`` (tests/unit/test_native_worker.py).
    """

    name = "classify"

    def __init__(self, settings: Settings, rules: Rules) -> None:
        self.settings = settings
        self.rules = rules
        self.topics = settings.input_topics
        self.group_id = settings.kafka_group_id
        self.fast = fastpath.record_path(rules)
        #: The last record timestamp and its ``_record_time``: records of one batch
        #: share milliseconds, and formatting one costs ~3 µs, a tenth of a fast record.
        self._received: tuple[int | None, str] | None = None

    def consumer_options(self) -> dict[str, Any]:
        return {}

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        return None

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        return None

    def acknowledged(self, batch: Batch) -> None:
        return None

    def abandoned(self, batch: Batch) -> None:
        return None

    def ready(self) -> tuple[bool, str]:
        return True, "classify stage"

    def process_record(self, message: ConsumerRecord, batch: Batch) -> None:
        settings = self.settings
        source = SourceRef(message.topic, message.partition, message.offset)
        value: bytes = message.value or b""
        headers = tuple(message.headers or ())
        received = self._received
        if received is None or received[0] != message.timestamp:
            received = self._received = (message.timestamp, _record_time(message.timestamp))
        received_at = received[1]
        provider = _provider_header(headers)
        if self.fast is not None and fastpath.generic(provider):
            accepted = self.fast.process(
                value,
                received_at,
                source,
                settings.max_payload_bytes,
                settings.events_topic,
                settings.suppressions_topic,
            )
            if accepted is not None:
                batch.outputs.extend(accepted[1])
                batch.outcomes.append(accepted[0])
                return
        try:
            outcome = process(
                value, self.rules, received_at, provider, source, settings.max_payload_bytes
            )
        except PayloadError as error:
            batch.add_dead_letter(settings, message, value, error, source)
            return
        batch.outputs.extend(
            outcome_records(outcome, settings.events_topic, settings.suppressions_topic)
        )
        batch.outcomes.append(outcome)


class Worker:
    """Consumes the stage's topics and produces its outputs, committing after the acks."""

    def __init__(
        self,
        settings: Settings,
        rules: Rules,
        metrics: Metrics,
        health: Health,
        stage: Stage | None = None,
    ) -> None:
        self.settings = settings
        self.rules = rules
        self.metrics = metrics
        self.health = health
        self.stage: Stage = stage or ClassifyStage(settings, rules)
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._batch_lock = asyncio.Lock()
        self._backoff = _FIRST_BACKOFF
        self._stop = asyncio.Event()
        #: Append time (ms) of the last record consumed per partition, for lag in seconds.
        self._last_record_ms: dict[TopicPartition, int] = {}
        #: exactly_once: paused partitions to resume from a *stable* committed offset
        #: (the value: where to resume when the group has none, None = the reset policy).
        self._unsettled: dict[TopicPartition, int | None] = {}
        self._unsettled_since = 0.0
        self.batches_done = 0
        #: Records of the batch between processing and commit (``Metrics.follow`` turns
        #: it into the in-flight gauge).
        self.in_flight_records = 0

    # -- lifecycle -------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then finish the batch, commit and leave the group."""
        log.info("worker starting", settings=self.settings.redacted())
        self._stop = stop
        try:
            if not await self._start_clients(stop):
                return
            while not stop.is_set():
                await self._poll_once()
        finally:
            await self._close()
            log.info("worker stopped", batches=self.batches_done)

    async def _start_clients(self, stop: asyncio.Event) -> bool:
        """Start both clients, retrying with capped backoff while the broker is away."""
        while not stop.is_set():
            try:
                if self._producer is None:
                    self._producer = await self._started_producer()
                if self._consumer is None:
                    consumer = build_consumer(
                        self.settings, self.stage.group_id, **self.stage.consumer_options()
                    )
                    await consumer.start()
                    consumer.subscribe(list(self.stage.topics), listener=_Rebalance(self))
                    self._consumer = consumer
            except _FATAL as exc:
                raise FatalKafkaError(
                    f"refused at start ({type(exc).__name__}): check this principal's ACLs"
                ) from exc
            except (KafkaError, OSError) as exc:
                what = await self._why_unreachable(exc)
                await self._wait_after_failure(stop, what, exc)
                continue
            await self._check_output_topics()
            self._backoff = _FIRST_BACKOFF
            log.info("kafka clients started", stage=self.stage.name, topics=list(self.stage.topics))
            self.health.set_ready(False, "started, waiting for a partition assignment")
            return True
        return False

    async def _why_unreachable(self, exc: BaseException) -> str:
        """Name the cause that aiokafka's bootstrap hides behind KafkaConnectionError.

        Its client logs each bootstrap host's own error and raises a generic one; one
        direct connection to the first host recovers the cause for /readyz.
        """
        cause: BaseException = exc
        if isinstance(exc, KafkaConnectionError):
            host, _, port = self.settings.kafka_bootstrap_servers[0].rpartition(":")
            try:
                connection = await asyncio.wait_for(
                    create_conn(
                        host.strip("[]"),
                        int(port),
                        request_timeout_ms=5000,
                        **security_options(self.settings),
                    ),
                    10,
                )
                connection.close()
            except (KafkaError, OSError, TimeoutError) as probe_error:
                cause = probe_error
        if isinstance(cause, _AUTHENTICATION):
            return "authentication refused by the broker (check KAFKA_SASL_* settings)"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "broker certificate not trusted (check KAFKA_SSL_CA_FILE)"
        return "broker unreachable at start"

    async def _check_output_topics(self) -> None:
        """Fail at start, not at the first dead letter, when an output topic is missing.

        The broker answered (the clients started), so a topic whose metadata does not
        arrive within the request timeout does not exist for this principal.
        """
        assert self._producer is not None
        settings = self.settings
        for topic in (settings.events_topic, settings.suppressions_topic, settings.dlq_topic):
            try:
                await self._producer.partitions_for(topic)
            except (KafkaError, TimeoutError) as exc:
                raise FatalKafkaError(
                    f"output topic {topic!r} does not exist or is not visible to this "
                    f"principal ({type(exc).__name__})"
                ) from exc

    async def _started_producer(self) -> AIOKafkaProducer:
        producer = build_producer(self.settings, self.stage.name)
        if self.settings.guarantee is Guarantee.EXACTLY_ONCE:
            # Offsets go with this worker's group membership, so a worker the group has
            # dropped cannot commit a batch that the partitions' new owner redoes.
            fence_offset_commits(producer, lambda: membership_of(self._consumer))
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        return producer

    async def _close(self) -> None:
        """Leave the group first (partitions move on at once), then flush the producer."""
        self.health.set_ready(False, "stopping")
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _wait_after_failure(self, stop: asyncio.Event, what: str, exc: BaseException) -> None:
        """Not ready; sleep the current backoff (cut short by ``stop``); double it up to the cap."""
        # Waiting is the loop working as intended: /healthz stays green, /readyz is not.
        self.health.tick()
        reason = f"{what}: {_error_text(exc)}"
        self.health.set_ready(False, reason)
        log.warning(what, error=_error_text(exc), retry_in=round(self._backoff, 2))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=self._backoff)
        self._backoff = min(self._backoff * 2, self.settings.retry_backoff_max_seconds)

    # -- the loop --------------------------------------------------------------------

    async def _poll_once(self) -> None:
        assert self._consumer is not None
        self.health.tick()
        if self._unsettled:
            await self._settle()
        polled = await self._consumer.getmany(
            timeout_ms=self.settings.poll_timeout_ms,
            max_records=self.settings.max_batch_records,
        )
        if polled:
            async with self._batch_lock:
                await self._handle(polled)
        self._refresh_readiness()
        await self._refresh_lag()

    async def _handle(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        started = time.perf_counter()
        try:
            batch = await self._process(polled)
        except StageNotReadyError as exc:
            # Records of a partition whose state is still being restored: give them back.
            self.stage.abandoned(Batch())
            assert self._consumer is not None
            for tp, messages in polled.items():
                if tp in self._consumer.assignment():
                    self._consumer.seek(tp, messages[0].offset)
            log.info("batch deferred", reason=str(exc))
            await asyncio.sleep(0.2)
            return
        self.in_flight_records = batch.records
        try:
            if self.settings.guarantee is Guarantee.EXACTLY_ONCE:
                # aiokafka's abort after a failed transaction waits without a limit;
                # bound the whole transaction so an outage shows as not-ready.
                await asyncio.wait_for(
                    self._send_in_transaction(batch),
                    self.settings.kafka_request_timeout_ms / 1000 * 3,
                )
            else:
                await self._send(batch.outputs)
                await self._send(batch.followups)
                await self._commit(batch.next_offsets)
        except _FATAL as exc:
            self.metrics.produce_failures.inc()
            raise FatalKafkaError(
                f"outputs refused for good ({type(exc).__name__}: {exc}); nothing of this "
                "batch is committed, so another worker will process it"
            ) from exc
        except (KafkaError, OSError, TimeoutError, _BatchFailedError) as exc:
            self.metrics.produce_failures.inc()
            self.stage.abandoned(batch)
            await self._redo_later(batch, exc)
            return
        finally:
            self.in_flight_records = 0
        self.stage.acknowledged(batch)
        self._backoff = _FIRST_BACKOFF
        self._last_record_ms.update(batch.last_timestamps)
        self._count(batch)
        self.batches_done += 1
        self.metrics.batch_seconds.observe(time.perf_counter() - started)

    async def _process(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> Batch:
        batch = Batch()
        for tp, messages in polled.items():
            batch.first[tp] = messages[0].offset
            batch.next_offsets[tp] = messages[-1].offset + 1
            batch.last_timestamps[tp] = messages[-1].timestamp
            for message in messages:
                self.stage.process_record(message, batch)
                batch.records += 1
                if batch.records % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        return batch

    async def _ready_producer(self) -> AIOKafkaProducer:
        """The producer; rebuilt here after a failure, so a failed restart is retried."""
        if self._producer is None:
            self._producer = await self._started_producer()
        return self._producer

    async def _send(self, outputs: Iterable[OutputRecord]) -> None:
        """Queue every output, then wait for all acknowledgements (acks=all)."""
        producer = await self._ready_producer()
        futures = [
            await producer.send(
                out.topic,
                out.value,
                key=out.key,
                headers=list(out.headers),
                partition=out.partition,
            )
            for out in outputs
        ]
        if futures:
            timeout = self.settings.kafka_request_timeout_ms / 1000 * 2
            await asyncio.wait_for(asyncio.gather(*futures), timeout)

    async def _send_in_transaction(self, batch: Batch) -> None:
        """Outputs and input offsets in one transaction: all visible, or none."""
        producer = await self._ready_producer()
        offsets = self._still_assigned(batch.next_offsets)
        if len(offsets) < len(batch.next_offsets):
            raise _BatchFailedError("partitions were revoked during the batch")
        async with producer.transaction():
            await self._send([*batch.outputs, *batch.followups])
            await producer.send_offsets_to_transaction(offsets, self.stage.group_id)

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the partitions still ours; a failure only means redelivery later."""
        assert self._consumer is not None
        mine = self._still_assigned(offsets)
        if not mine:
            return
        try:
            await asyncio.wait_for(
                self._consumer.commit(mine), self.settings.kafka_request_timeout_ms / 1000
            )
        except (KafkaError, TimeoutError) as exc:
            self.metrics.commit_failures.inc()
            log.warning(
                "commit failed; the records will be redelivered",
                error=f"{type(exc).__name__}: {exc}",
                partitions=_describe(mine),
            )

    async def _redo_later(self, batch: Batch, exc: BaseException) -> None:
        """Rewind the batch's partitions and drop the producer; the next batch rebuilds it.

        In exactly_once mode the failed transaction may have committed after all (only
        its answer was lost): rewinding to the batch's first offsets would write it
        twice.  So a new transactional producer is started first (its
        ``init_transactions`` completes or aborts whatever the old one left open), and
        the partitions are rewound to their committed offsets, which then tell the truth.
        """
        assert self._consumer is not None
        await self._wait_after_failure(self._stop, "batch not acknowledged, retrying", exc)
        if self._producer is not None:
            try:
                await asyncio.wait_for(self._producer.stop(), 10)
            except (KafkaError, OSError, TimeoutError) as stop_error:
                log.warning("producer did not stop cleanly", error=_error_text(stop_error))
            self._producer = None
        mine = self._still_assigned(batch.first)
        if self.settings.guarantee is not Guarantee.EXACTLY_ONCE:
            for tp, offset in mine.items():
                self._consumer.seek(tp, offset)
            return
        while mine and not self._stop.is_set():
            try:
                await self._ready_producer()
            except (KafkaError, OSError, TimeoutError) as retry_error:
                self._producer = None
                await self._wait_after_failure(
                    self._stop, "cannot settle the failed transaction yet", retry_error
                )
                mine = self._still_assigned(batch.first)
                continue
            # Never past the batch's first record unless a stable commit says so.
            self.hold_until_settled(mine)
            return

    def hold_until_settled(self, fallback: Mapping[TopicPartition, int | None]) -> None:
        """exactly_once: pause partitions until their committed offsets are stable.

        A transaction whose commit is still being completed (its answer lost, or its
        worker gone in a rebalance) leaves its offsets pending; resuming from the
        previous offset would write its outputs a second time.  ``_settle`` resumes
        each partition once the broker vouches for its offset (``stable_offsets.py``).
        """
        if self.settings.guarantee is not Guarantee.EXACTLY_ONCE or not fallback:
            return
        assert self._consumer is not None
        if not self._unsettled:
            self._unsettled_since = time.monotonic()
        self._unsettled.update(fallback)
        self._consumer.pause(*fallback)

    async def _settle(self) -> None:
        """Resume every held partition whose committed offset is stable now."""
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        for tp in [tp for tp in self._unsettled if tp not in assigned]:
            del self._unsettled[tp]
        try:
            answer = await asyncio.wait_for(
                fetch_stable_offsets(self._consumer, self.stage.group_id, self._unsettled),
                self.settings.kafka_request_timeout_ms / 1000,
            )
        except _FATAL as exc:
            raise FatalKafkaError(f"offset fetch refused ({type(exc).__name__})") from exc
        except (KafkaError, OSError, TimeoutError) as exc:
            log.warning("stable offset fetch failed; retrying", error=_error_text(exc))
            return
        for tp, committed in answer.committed.items():
            resume_at = committed if committed is not None else self._unsettled[tp]
            if resume_at is not None:
                self._consumer.seek(tp, resume_at)
            del self._unsettled[tp]
            self._consumer.resume(tp)
        if self._unsettled:
            waited = time.monotonic() - self._unsettled_since
            if waited > _PENDING_TRANSACTION_LOG_SECONDS:
                log.info(
                    "waiting for pending transactions to complete",
                    partitions=_describe(dict.fromkeys(self._unsettled, 0)),
                    seconds=round(waited, 1),
                )
                self._unsettled_since = time.monotonic()

    def _count(self, batch: Batch) -> None:
        self.metrics.observe_batch(batch.outcomes, batch.dead_letter_kinds, time.time())

    # -- state -----------------------------------------------------------------------

    def _still_assigned(self, offsets: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        return {tp: offset for tp, offset in offsets.items() if tp in assigned}

    def _refresh_readiness(self) -> None:
        """Ready: partitions assigned, last batch acknowledged, fetches answered lately.

        The consumer does not raise while the broker is away, it only stops receiving
        fetch responses (which arrive every fetch wait even when idle); their age is how
        an outage shows up when no produce is in flight.
        """
        assert self._consumer is not None
        assigned = self._consumer.assignment()
        ready, reason = False, "no partition assigned"
        if assigned:
            polled = [self._consumer.last_poll_timestamp(tp) for tp in assigned]
            known = [stamp for stamp in polled if stamp is not None]
            silent = time.time() - max(known) / 1000 if known else 0.0
            if self._backoff != _FIRST_BACKOFF:
                reason = "retrying a batch that was not acknowledged"
            elif silent > _SILENT_BROKER_SECONDS:
                reason = f"no fetch response for {silent:.0f} s: broker unreachable"
            elif self._unsettled:
                reason = f"waiting for pending transactions on {len(self._unsettled)} partitions"
            else:
                ready, reason = self.stage.ready()
                if ready:
                    reason = f"assigned {len(assigned)} partitions"
        self.health.set_ready(ready, reason)

    async def _refresh_lag(self) -> None:
        """Records (and seconds) behind the end of each assigned partition."""
        assert self._consumer is not None
        now_ms = time.time() * 1000
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            if end is None:
                continue
            behind = max(0, end - await self._consumer.position(tp))
            labels = (tp.topic, str(tp.partition))
            self.metrics.lag.labels(*labels).set(behind)
            last = self._last_record_ms.get(tp)
            seconds = (now_ms - last) / 1000 if behind and last is not None else 0.0
            self.metrics.lag_seconds.labels(*labels).set(max(0.0, seconds))

    def on_revoked(self, revoked: set[TopicPartition]) -> None:
        self.metrics.rebalances.labels("revoked").inc()
        for tp in revoked:
            self._last_record_ms.pop(tp, None)
            for gauge in (self.metrics.lag, self.metrics.lag_seconds):
                with contextlib.suppress(KeyError):
                    gauge.remove(tp.topic, str(tp.partition))
        log.info("partitions revoked", partitions=_describe(dict.fromkeys(revoked, 0)))

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.metrics.rebalances.labels("assigned").inc()
        log.info("partitions assigned", partitions=_describe(dict.fromkeys(assigned, 0)))


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped base
    """Waits for the in-flight batch before partitions move (it commits their offsets)."""

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self._worker._batch_lock:
            self._worker.on_revoked(set(revoked))
            self._worker.stage.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Hold the new partitions' records back until the stage is ready for them."""
        worker = self._worker
        worker.on_assigned(set(assigned))
        consumer = worker._consumer
        if consumer is not None and assigned:
            consumer.pause(*assigned)
        try:
            await worker.stage.on_assigned(set(assigned))
        finally:
            if consumer is not None and assigned:
                mine = [tp for tp in assigned if tp in consumer.assignment()]
                if worker.settings.guarantee is Guarantee.EXACTLY_ONCE:
                    # The previous owner's last commit may still be pending.
                    worker.hold_until_settled(dict.fromkeys(mine))
                else:
                    consumer.resume(*mine)


@functools.lru_cache(maxsize=4096)
def _error_text(exc: BaseException) -> str:
    """``Class: message`` once (aiokafka's errors already start with their class name)."""
    text = str(exc)
    name = type(exc).__name__
    return text if text.startswith(name) else f"{name}: {text}"


@functools.lru_cache(maxsize=4096)
def _record_time(timestamp_ms: int | None) -> str:
    """The record's timestamp stands in for a missing event time (same on replay)."""
    seconds = (timestamp_ms or 0) / 1000
    return format_time(datetime.fromtimestamp(seconds, UTC))


def _provider_header(headers: tuple[tuple[str, bytes], ...]) -> str | None:
    for name, value in headers:
        if name == _PROVIDER_HEADER and value:
            return value.decode("utf-8", "replace")
    return None


def _describe(partitions: dict[TopicPartition, int]) -> list[str]:
    return sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions)

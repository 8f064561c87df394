"""The suppression stage: per-address state over the normalized events, kept in Kafka.

It reads three topics keyed by address and co-partitioned (same partition count, same
key hashing, range assignment: partition N of each goes to the same worker): the
normalized events, the operator's control topic and the suppressions topic (for the
first stage's suppressions and the providers' own clears).  Per input partition it
keeps a dict address → ``AddressState`` (``escalation.py`` decides), backed by a
compacted changelog topic with the same partition numbers.

Durability follows the worker's batch: a batch's state changes stay *pending* until
every update they caused is acknowledged; only then are the changelog records sent and
the pending states merged.  A batch that must be redone therefore starts from the state
before it, and a changelog record never exists without the update it caused.  On
assignment a partition's state is read back from the changelog before any of its
records is processed; until then the worker is not ready.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import orjson
import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.structs import ConsumerRecord

from consumer.app import Batch, FatalKafkaError, StageNotReadyError
from consumer.config import Settings
from consumer.errors import ParseError
from consumer.escalation import (
    STAGE_PROVIDER,
    AddressState,
    Clear,
    EscalationPolicy,
    StageEvent,
    apply_clear,
    apply_event,
    expired,
    state_from_json,
    state_to_json,
)
from consumer.kafka import security_options
from consumer.metrics import Metrics
from consumer.models import SourceRef, SuppressionUpdate
from consumer.records import OutputRecord

__all__ = ["SuppressionStage"]

log = structlog.get_logger("consumer.suppression_stage")

_HEADERS = (("content-type", b"application/json"), ("schema", b"suppression-update.v1"))
#: Expired addresses are looked for this often, at most this many per batch.
_SWEEP_INTERVAL_SECONDS = 300.0
_SWEEP_PER_BATCH = 2000


class SuppressionStage:
    """Escalates repeated soft bounces and applies clears (a ``Stage`` of the worker)."""

    name = "suppression"

    def __init__(
        self,
        settings: Settings,
        policy: EscalationPolicy,
        metrics: Metrics,
        sweep_interval: float = _SWEEP_INTERVAL_SECONDS,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.metrics = metrics
        self.topics: tuple[str, ...] = (
            settings.events_topic,
            settings.control_topic,
            settings.suppressions_topic,
        )
        self.group_id = settings.stage_group_id
        self._states: dict[int, dict[str, AddressState]] = {}
        #: State changes of the batch in flight; None: the address is forgotten.
        self._pending: dict[int, dict[str, AddressState | None]] = {}
        self._sweep_queue: list[tuple[int, list[str]]] = []
        self._sweep_interval = sweep_interval
        self._next_sweep = time.monotonic() + sweep_interval
        self._updates: list[SuppressionUpdate] = []
        self._broken: str | None = None

    def consumer_options(self) -> dict[str, Any]:
        return {"partition_assignment_strategy": (RangePartitionAssignor,)}

    # -- assignment ------------------------------------------------------------------

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        numbers_by_topic = {
            topic: {tp.partition for tp in partitions if tp.topic == topic} for topic in self.topics
        }
        numbers = set().union(*numbers_by_topic.values())
        if any(found != numbers for found in numbers_by_topic.values()):
            self._broken = (
                "the events, control and suppressions topics are not co-partitioned "
                f"(assigned: { {t: sorted(n) for t, n in numbers_by_topic.items()} }); "
                "give them the same partition count"
            )
            log.error("suppression stage cannot run", reason=self._broken)
            return
        for number in sorted(numbers - set(self._states)):
            started = time.monotonic()
            self.start_partition(number, await self._restore(number))
            seconds = time.monotonic() - started
            self.metrics.restore_seconds.labels(str(number)).set(seconds)
            log.info(
                "state restored",
                partition=number,
                addresses=len(self._states[number]),
                seconds=round(seconds, 3),
            )

    def start_partition(self, number: int, states: dict[str, AddressState]) -> None:
        """Take partition ``number`` with its restored states; its records may come now."""
        self._states[number] = states
        self.metrics.tracked_addresses.labels(str(number)).set(len(states))

    def on_revoked(self, partitions: set[TopicPartition]) -> None:
        for number in {tp.partition for tp in partitions}:
            self._states.pop(number, None)
            self._pending.pop(number, None)
        self._sweep_queue = [(n, e) for n, e in self._sweep_queue if n in self._states]

    async def _restore(self, number: int) -> dict[str, AddressState]:
        """Read partition ``number`` of the changelog from its start to its end."""
        settings = self.settings
        reader = AIOKafkaConsumer(
            bootstrap_servers=list(settings.kafka_bootstrap_servers),
            client_id=f"{settings.client_id}-restore",
            enable_auto_commit=False,
            isolation_level="read_committed",
            **security_options(settings),
        )
        await reader.start()
        states: dict[str, AddressState] = {}
        try:
            tp = TopicPartition(settings.state_topic, number)
            reader.assign([tp])
            await reader.seek_to_beginning(tp)
            end = (await reader.end_offsets([tp]))[tp]
            while await reader.position(tp) < end:
                for records in (await reader.getmany(tp, timeout_ms=1000)).values():
                    for record in records:
                        email = record.key.decode()
                        if record.value is None:
                            states.pop(email, None)
                        else:
                            states[email] = state_from_json(orjson.loads(record.value))
        finally:
            await reader.stop()
        # Wall-clock time here: operator clears carry it, and an address silent for the
        # state's time to live is forgotten whatever its events' own times say.
        now = int(time.time())
        return {e: s for e, s in states.items() if not expired(s, now, self.policy)}

    def ready(self) -> tuple[bool, str]:
        if self._broken:
            return False, self._broken
        return True, "state restored"

    # -- records ---------------------------------------------------------------------

    def process_record(self, message: ConsumerRecord, batch: Batch) -> None:
        if self._broken:
            raise FatalKafkaError(self._broken)
        if message.partition not in self._states:
            raise StageNotReadyError(f"partition {message.partition} state not restored yet")
        if batch.records == 0:
            self._sweep(batch)
        source = SourceRef(message.topic, message.partition, message.offset)
        try:
            self._apply(message.topic, message.partition, _object(message.value), source, batch)
        except (orjson.JSONDecodeError, ParseError, KeyError, ValueError, TypeError) as exc:
            error = exc if isinstance(exc, ParseError) else ParseError(_describe(exc))
            batch.add_dead_letter(self.settings, message, message.value or b"", error, source)

    def _apply(
        self, topic: str, number: int, body: dict[str, Any], source: SourceRef, batch: Batch
    ) -> None:
        settings = self.settings
        if topic == settings.events_topic:
            event = StageEvent.from_json(body, source)
            email = event.email
            state, update = apply_event(self._get(number, email), event, self.policy)
        elif topic == settings.control_topic:
            if body.get("command") != "clear":
                raise ParseError(f"unknown command {body.get('command')!r}")
            clear = Clear(
                email=str(body["email"]).strip().lower(),
                reason=str(body.get("reason") or "operator clear"),
                requested=StageEvent.epoch(str(body["requestedAt"])),
                command_id=str(body["commandId"]),
                source=source,
            )
            email = clear.email
            state, update = apply_clear(self._get(number, email), clear, self.policy)
        else:
            email, noted = self._from_suppressions(number, body)
            if noted is None:
                return
            state, update = noted, None
        self._store(number, email, state, batch)
        if update is not None:
            batch.outputs.append(
                OutputRecord(
                    settings.suppressions_topic,
                    email.encode(),
                    orjson.dumps(update.to_json()),
                    _HEADERS,
                )
            )
            self._updates.append(update)

    def _store(self, number: int, email: str, state: AddressState, batch: Batch) -> None:
        """Keep ``state`` (pending until the batch is acknowledged), or forget the address.

        An address with no soft bounce in its window and no suppression has nothing the
        policy needs: it is forgotten (a tombstone in the changelog) rather than kept, so
        memory holds the addresses that are bouncing, not every address ever mailed.  The
        price: the time of its last delivery goes too, so a soft bounce that arrives
        late, dated before that delivery, counts (once) instead of being ignored.
        """
        keep = bool(state.soft) or state.suppressed is not None
        if not keep and self._get(number, email) is None:
            return
        self._pending.setdefault(number, {})[email] = state if keep else None
        value = orjson.dumps(state_to_json(state)) if keep else None
        batch.followups.append(
            OutputRecord(self.settings.state_topic, email.encode(), value, partition=number)
        )

    def _sweep(self, batch: Batch) -> None:
        """Forget, a bounded number per batch, addresses silent for the state's ttl.

        Without it an address that soft-bounced once and never again would stay until the
        next restore.  The work per batch is capped so a large map never stalls the loop.
        """
        if not self._sweep_queue:
            if time.monotonic() < self._next_sweep:
                return
            self._next_sweep = time.monotonic() + self._sweep_interval
            self._sweep_queue = [(n, list(states)) for n, states in self._states.items()]
        now, budget = int(time.time()), _SWEEP_PER_BATCH
        while self._sweep_queue and budget > 0:
            number, emails = self._sweep_queue[-1]
            chunk = emails[-budget:]
            del emails[-budget:]
            budget -= len(chunk)
            if not emails:
                self._sweep_queue.pop()
            states = self._states.get(number, {})
            for email in chunk:
                state = self._get(number, email)
                if state is not None and email in states and expired(state, now, self.policy):
                    self._store(number, email, AddressState(), batch)
                    self.metrics.expired_addresses.inc()

    def _from_suppressions(
        self, number: int, body: dict[str, Any]
    ) -> tuple[str, AddressState | None]:
        """The first stage's suppressions and the providers' clears update state only."""
        email = str(body["email"])
        if body.get("provider") == STAGE_PROVIDER or body.get("scope"):
            return email, None  # our own update, or a list-scoped change
        current = self._get(number, email) or AddressState()
        moment = StageEvent.epoch(str(body["occurredAt"]))
        updated = max(current.updated, moment)
        if body.get("action") == "unsuppress":
            return email, AddressState(delivered=current.delivered, updated=updated)
        return email, replace(current, suppressed=str(body["reason"]), updated=updated)

    def _get(self, number: int, email: str) -> AddressState | None:
        pending = self._pending.get(number)
        if pending is not None and email in pending:
            return pending[email]  # None: forgotten in this batch
        return self._states.get(number, {}).get(email)

    # -- batch outcome ---------------------------------------------------------------

    def acknowledged(self, batch: Batch) -> None:
        for number, changed in self._pending.items():
            states = self._states.setdefault(number, {})
            for email, state in changed.items():
                if state is None:
                    states.pop(email, None)
                else:
                    states[email] = state
            self.metrics.tracked_addresses.labels(str(number)).set(len(states))
        self._pending.clear()
        self.metrics.observe_suppressions(self._updates)
        self._updates.clear()

    def abandoned(self, batch: Batch) -> None:
        self._pending.clear()
        self._updates.clear()


def _object(value: bytes | None) -> dict[str, Any]:
    body = orjson.loads(value or b"")
    if not isinstance(body, dict):
        raise ParseError("not a JSON object")
    return body


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"

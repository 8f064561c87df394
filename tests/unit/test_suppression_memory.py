"""What the suppression stage keeps in memory and in its changelog: only addresses that
are bouncing or suppressed, and none after the state's time to live (no Kafka here:
records are built in memory and batches acknowledged by hand)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from consumer.app import Batch
from consumer.config import from_env
from consumer.escalation import load_escalation_policy
from consumer.metrics import Metrics
from consumer.suppression_stage import SuppressionStage

SETTINGS = from_env({})
NOW = datetime.now(UTC).replace(microsecond=0)


def _stage(sweep_interval: float = 300.0) -> SuppressionStage:
    stage = SuppressionStage(
        SETTINGS, load_escalation_policy(), Metrics(CollectorRegistry()), sweep_interval
    )
    stage.start_partition(0, {})
    return stage


def _event(offset: int, email: str, status: str, state: str | None, when: datetime) -> ConsumerRecord:
    body = {
        "eventId": f"e{offset}",
        "email": email,
        "status": status,
        "recipientState": state,
        "occurredAt": when.isoformat().replace("+00:00", "Z"),
    }
    return ConsumerRecord(
        SETTINGS.events_topic, 0, offset, 0, 0, email.encode(), orjson.dumps(body), None, 0, 0, ()
    )


def _run(stage: SuppressionStage, records: list[ConsumerRecord]) -> Batch:
    """Process one batch and acknowledge it, as the worker does after the acks."""
    batch = Batch()
    for record in records:
        stage.process_record(record, batch)
        batch.records += 1
    stage.acknowledged(batch)
    return batch


def _tracked(stage: SuppressionStage) -> int:
    samples = stage.metrics.registry.get_sample_value(
        "mailevents_suppression_state_addresses", {"partition": "0"}
    )
    return int(samples or 0)


def test_deliveries_and_blocks_leave_no_state() -> None:
    stage = _stage()
    records = [_event(i, f"fine{i}@example.com", "Delivered", None, NOW) for i in range(500)]
    records += [
        _event(500 + i, f"spam{i}@example.com", "Blocked", "MailBlockSpamDetected", NOW)
        for i in range(100)
    ]
    batch = _run(stage, records)
    assert batch.followups == [] and batch.outputs == []
    assert _tracked(stage) == 0


def test_a_delivery_after_soft_bounces_forgets_the_address() -> None:
    stage = _stage()
    email = "jo@example.com"
    first = _run(stage, [_event(0, email, "Deferred", "SoftBounceMailboxFull", NOW)])
    assert [r.value is not None for r in first.followups] == [True]
    assert _tracked(stage) == 1
    second = _run(stage, [_event(1, email, "Delivered", None, NOW + timedelta(hours=1))])
    assert [(r.key, r.value) for r in second.followups] == [(email.encode(), None)]
    assert _tracked(stage) == 0
    # The count starts again: two more soft bounces do not escalate.
    third = _run(stage, [
        _event(2, email, "Deferred", "SoftBounceMailboxFull", NOW + timedelta(hours=2)),
        _event(3, email, "Deferred", "SoftBounceMailboxFull", NOW + timedelta(hours=80)),
    ])
    assert third.outputs == []


def test_silent_addresses_expire_in_bounded_sweeps() -> None:
    """Soft bounces 40 days old (ttl 30 days) are forgotten by the sweep, at most 2 000
    per batch, with a tombstone each; a recent one stays."""
    stage = _stage(sweep_interval=0.0)
    old = NOW - timedelta(days=40)
    records = [
        _event(i, f"gone{i}@example.com", "Deferred", "SoftBounceMailboxFull", old)
        for i in range(2500)
    ]
    records.append(_event(2500, "recent@example.com", "Deferred", "SoftBounceMailboxFull", NOW))
    _run(stage, records)
    assert _tracked(stage) == 2501

    # Batches of a delivery to an address without state: only the sweep writes.
    def sweep(offset: int) -> int:
        batch = _run(stage, [_event(offset, "other@example.com", "Delivered", None, NOW)])
        assert all(r.value is None for r in batch.followups)
        return len(batch.followups)

    assert sweep(3000) == 1999  # 2 000 looked at, recent@ among them
    assert sweep(3001) == 501
    assert sweep(3002) == 0
    assert _tracked(stage) == 1
    expired = stage.metrics.registry.get_sample_value(
        "mailevents_suppression_state_expired_total"
    )
    assert expired == 2500

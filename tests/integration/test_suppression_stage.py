"""The stateful suppression stage against a real broker: escalation, reset by delivery,
operator clear, and state that survives a restart through the changelog."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from kafkatools import Topics, consume_all, create_topics, delete_topics, produce, unique_name
from workers import fully_committed, in_process_worker, wait_until, worker_env

from consumer.config import from_env
from consumer.control import send_clear
from consumer.rules import Rules

pytestmark = pytest.mark.kafka

# Recent enough that no state expires (the stage forgets addresses silent for 30 days).
T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=5)


def _event(email: str, status: str, state: str | None, hours: float, n: int) -> bytes:
    moment = (T0 + timedelta(hours=hours)).isoformat(timespec="milliseconds")
    return orjson.dumps(
        {
            "eventId": f"{n:032x}",
            "email": email,
            "status": status,
            "recipientState": state,
            "occurredAt": moment.replace("+00:00", "Z"),
        }
    )


async def _feed(bootstrap: str, topic: str, events: list[tuple[str, str, str | None, float]],
                start: int = 0) -> None:
    values = [_event(e, s, st, h, start + i) for i, (e, s, st, h) in enumerate(events)]
    await produce(bootstrap, topic, values, keys=[e.encode() for e, *_ in events])


@pytest.fixture
async def stage_topics(kafka_bootstrap: str, topics: Topics) -> dict[str, str]:
    """The control topic and the compacted state changelog, co-partitioned with the rest."""
    extra = {"control": unique_name("it.control"), "state": unique_name("it.state")}
    await create_topics(kafka_bootstrap, {extra["control"]: 3, extra["state"]: 3},
                        compact={extra["state"]})
    yield extra
    await delete_topics(kafka_bootstrap, list(extra.values()))


def _updates(records: list) -> list[tuple[str, str, str]]:
    bodies = [orjson.loads(r.value) for r in records]
    return [(b["email"], b["action"], b["reason"]) for b in bodies if b["provider"] == "bounce-consumer"]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_escalation_reset_clear_and_restore(
    kafka_bootstrap: str, topics: Topics, stage_topics: dict[str, str], group_id: str,
    rules: Rules, guarantee: str,
) -> None:
    """3 soft bounces over 80 h escalate; a delivery resets; a clear lifts; state survives."""
    env = worker_env(kafka_bootstrap, topics, group_id, CONTROL_TOPIC=stage_topics["control"],
                     STATE_TOPIC=stage_topics["state"], PROCESSING_GUARANTEE=guarantee,
                     KAFKA_TRANSACTIONAL_ID=f"{group_id}-stage")
    full = "SoftBounceMailboxFull"
    await _feed(kafka_bootstrap, topics.events, [
        ("a@example.net", "Deferred", full, 0), ("a@example.net", "Deferred", full, 40),
        ("a@example.net", "Blocked", full, 80),
        ("b@example.net", "Deferred", full, 0), ("b@example.net", "Delivered", None, 30),
        ("b@example.net", "Deferred", full, 50), ("b@example.net", "Deferred", full, 90),
        ("c@example.net", "Deferred", full, 0), ("c@example.net", "Deferred", full, 40),
    ])
    group = f"{group_id}-suppression"
    async with in_process_worker(env, rules, stage="suppression") as worker:
        await wait_until(lambda: fully_committed(kafka_bootstrap, group, topics.events), 60,
                         "events committed")
        await wait_until(lambda: worker.health.ready()[0], 30, "stage ready")
        await send_clear(from_env(env), "A@Example.net", "mailbox emptied, confirmed by phone")
        await wait_until(lambda: fully_committed(kafka_bootstrap, group, stage_topics["control"]),
                         60, "clear committed")
    updates = _updates(await consume_all(kafka_bootstrap, topics.suppressions, expect=2))
    assert updates == [
        ("a@example.net", "suppress", "SoftBounceEscalation"),
        ("a@example.net", "unsuppress", "mailbox emptied, confirmed by phone"),
    ]

    # c has two soft bounces in the changelog; a new worker restores them and escalates
    # on the third.
    await _feed(kafka_bootstrap, topics.events, [("c@example.net", "Deferred", full, 80)],
                start=100)
    async with in_process_worker(env, rules, stage="suppression"):
        await wait_until(lambda: fully_committed(kafka_bootstrap, group, topics.events), 60,
                         "events committed after restart")
    updates = _updates(await consume_all(kafka_bootstrap, topics.suppressions, expect=3))
    assert [u for u in updates if u[0] == "c@example.net"] == [
        ("c@example.net", "suppress", "SoftBounceEscalation")
    ]
    assert len(updates) == 3


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_count_continues_across_a_rebalance(
    kafka_bootstrap: str, topics: Topics, stage_topics: dict[str, str], group_id: str,
    rules: Rules, guarantee: str,
) -> None:
    """Two soft bounces on one worker, a second worker joins and the first leaves: the
    third soft bounce, on whichever worker now owns the address, escalates exactly once."""
    env = worker_env(kafka_bootstrap, topics, group_id, CONTROL_TOPIC=stage_topics["control"],
                     STATE_TOPIC=stage_topics["state"], PROCESSING_GUARANTEE=guarantee,
                     KAFKA_TRANSACTIONAL_ID=f"{group_id}-first")
    second_env = {**env, "KAFKA_TRANSACTIONAL_ID": f"{group_id}-second"}
    full, group = "SoftBounceMailboxFull", f"{group_id}-suppression"
    addresses = [f"r{i}@example.org" for i in range(12)]
    await _feed(kafka_bootstrap, topics.events,
                [(a, "Deferred", full, h) for h in (0, 40) for a in addresses])
    async with in_process_worker(env, rules, stage="suppression") as first:
        await wait_until(lambda: fully_committed(kafka_bootstrap, group, topics.events), 60,
                         "first two bounces committed")
        async with in_process_worker(second_env, rules, stage="suppression") as second:
            await wait_until(lambda: second.health.ready()[0], 60, "second worker ready")
            await first.close()
            await _feed(kafka_bootstrap, topics.events,
                        [(a, "Blocked", full, 80) for a in addresses], start=500)
            await wait_until(lambda: fully_committed(kafka_bootstrap, group, topics.events), 60,
                             "third bounces committed")
    updates = _updates(await consume_all(kafka_bootstrap, topics.suppressions,
                                         expect=len(addresses), settle=0.5))
    assert sorted(updates) == sorted((a, "suppress", "SoftBounceEscalation") for a in addresses)

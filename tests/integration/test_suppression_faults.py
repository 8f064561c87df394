"""The suppression stage under faults, on a real broker: a stage worker killed with
SIGKILL in the middle of many addresses' sequences (events still arriving), then
restarted as a pod would be.  The soft-bounce counts continue from the changelog: every
address that must escalate is suppressed, no other one is, and the changelog's final
state agrees with the updates.  In exactly_once mode each update is written once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from kafkatools import (
    Topics,
    consume_all,
    create_topics,
    delete_topics,
    end_offsets,
    produce,
    unique_name,
)
from workers import ChildWorker, fully_committed, wait_until, worker_env

pytestmark = pytest.mark.kafka

T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=5)
ADDRESSES = [f"seq{i}@example.net" for i in range(240)]
#: Every third address gets a delivery between its second and third soft bounce.
RESET = set(ADDRESSES[::3])


def _event(email: str, status: str, state: str | None, hours: float) -> bytes:
    moment = (T0 + timedelta(hours=hours)).isoformat(timespec="milliseconds")
    return orjson.dumps({
        "eventId": f"{email}-{hours}",
        "email": email,
        "status": status,
        "recipientState": state,
        "occurredAt": moment.replace("+00:00", "Z"),
    })


async def _feed(bootstrap: str, topic: str, rows: list[tuple[str, str, str | None, float]]) -> None:
    await produce(bootstrap, topic, [_event(*row) for row in rows],
                  keys=[row[0].encode() for row in rows])


async def _trickle(bootstrap: str, topic: str, rows: list[tuple[str, str, str | None, float]],
                   chunk: int, pause: float) -> None:
    for start in range(0, len(rows), chunk):
        await _feed(bootstrap, topic, rows[start:start + chunk])
        await asyncio.sleep(pause)


async def _records_in(bootstrap: str, topic: str) -> int:
    return sum((await end_offsets(bootstrap, topic)).values())


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_kill_minus_nine_mid_sequence_then_restart(
    kafka_bootstrap: str, topics: Topics, group_id: str, tmp_path: Path, guarantee: str
) -> None:
    control, state = unique_name("it.control"), unique_name("it.state")
    await create_topics(kafka_bootstrap, {control: 3, state: 3}, compact={state})
    env = worker_env(
        kafka_bootstrap, topics, group_id, STAGE="suppression", CONTROL_TOPIC=control,
        STATE_TOPIC=state, PROCESSING_GUARANTEE=guarantee, MAX_BATCH_RECORDS="8",
        KAFKA_TRANSACTIONAL_ID=f"{group_id}-stage", KAFKA_GROUP_INSTANCE_ID=f"{group_id}-0",
    )
    stage_group = f"{group_id}-suppression"
    full = "SoftBounceMailboxFull"
    try:
        # Two soft bounces of every address, processed and committed.
        await _feed(kafka_bootstrap, topics.events,
                    [(a, "Deferred", full, h) for h in (0, 40) for a in ADDRESSES])
        first = ChildWorker(env, tmp_path / "first.log")
        try:
            await wait_until(lambda: fully_committed(kafka_bootstrap, stage_group, topics.events),
                             90, "the first two bounces committed")
            before = await _records_in(kafka_bootstrap, state)
            # Then deliveries and third bounces arrive as a stream; the kill lands in it.
            rest = [(a, "Delivered", None, 60) for a in ADDRESSES if a in RESET]
            rest += [(a, "Deferred", full, 80) for a in ADDRESSES]
            feeding = asyncio.create_task(
                _trickle(kafka_bootstrap, topics.events, rest, chunk=16, pause=0.1)
            )

            async def changelog_moved() -> bool:
                return await _records_in(kafka_bootstrap, state) > before + 24
            await wait_until(changelog_moved, 60, "third bounces being processed")
            first.kill()
        finally:
            first.ensure_stopped()
        assert not feeding.done(), "the feed ended before the kill; the test proves nothing"
        second = ChildWorker(env, tmp_path / "second.log")
        try:
            await feeding
            await wait_until(lambda: fully_committed(kafka_bootstrap, stage_group, topics.events),
                             120, "every event committed after the restart")
            assert second.terminate(30) == 0, second.log()[-3000:]
        finally:
            second.ensure_stopped()

        escalated = sorted(a for a in ADDRESSES if a not in RESET)
        records = await consume_all(kafka_bootstrap, topics.suppressions,
                                    expect=len(escalated), settle=1.0)
        updates = [orjson.loads(r.value) for r in records]
        assert {(u["action"], u["reason"]) for u in updates} == {
            ("suppress", "SoftBounceEscalation")
        }
        suppressed = sorted(u["email"] for u in updates)
        assert sorted(set(suppressed)) == escalated
        if guarantee == "exactly_once":
            assert suppressed == escalated, "exactly_once: one update per address"

        # The changelog (as a restoring worker reads it) agrees with the updates.
        # A delivery made the reset addresses forgettable (a tombstone); their third soft
        # bounce started a new state with a count of one.
        last: dict[str, dict[str, object]] = {}
        for record in await consume_all(kafka_bootstrap, state, expect=1, settle=1.0):
            if record.value is None:
                last.pop(record.key.decode(), None)
            else:
                last[record.key.decode()] = orjson.loads(record.value)
        assert sorted(last) == sorted(ADDRESSES)
        assert sorted(e for e, s in last.items() if s["suppressed"]) == escalated
        for email in RESET:
            assert len(last[email]["soft"]) == 1 and not last[email]["suppressed"]
    finally:
        await delete_topics(kafka_bootstrap, [control, state])

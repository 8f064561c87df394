"""Both stages in one process (``STAGE=all``), on a real broker: raw soft bounces go in,
the classify stage writes their events, the suppression stage in the same process
escalates them; one HTTP port answers for both, and SIGTERM stops both with exit 0."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from kafkatools import Topics, consume_all, create_topics, delete_topics, produce, unique_name
from workers import ChildWorker, free_port, fully_committed, http_get, wait_until, worker_env

pytestmark = pytest.mark.kafka

T0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=5)


def _mailbox_full(address: str, hours: float, n: int) -> bytes:
    """An MTA's delivery status for one soft bounce (RFC 3464 fields as JSON)."""
    moment = T0 + timedelta(hours=hours)
    return orjson.dumps({
        "finalRecipient": f"rfc822; {address}",
        "action": "delayed",
        "status": "4.2.2",
        "diagnosticCode": f"smtp; 452 4.2.2 <{address}>: Mailbox full (queue {n:08X})",
        "lastAttemptDate": moment.strftime("%a, %d %b %Y %H:%M:%S +0000"),
        "messageId": f"<m{n}@example.org>",
    })


async def test_both_stages_in_one_process(
    kafka_bootstrap: str, topics: Topics, group_id: str, tmp_path: Path
) -> None:
    control, state = unique_name("it.control"), unique_name("it.state")
    await create_topics(kafka_bootstrap, {control: 3, state: 3}, compact={state})
    port = free_port()
    env = worker_env(kafka_bootstrap, topics, group_id, STAGE="all", CONTROL_TOPIC=control,
                     STATE_TOPIC=state, HTTP_PORT=str(port))
    addresses = [f"full{i}@example.net" for i in range(10)]
    raw = [
        _mailbox_full(a, hours, 100 * round(hours) + i)
        for hours in (0, 40, 80)
        for i, a in enumerate(addresses)
    ]
    worker = ChildWorker(env, tmp_path / "worker.log")
    try:
        await produce(kafka_bootstrap, topics.raw, raw)
        await wait_until(lambda: fully_committed(kafka_bootstrap, group_id, topics.raw), 90,
                         "raw events committed by the classify stage")
        await wait_until(
            lambda: fully_committed(kafka_bootstrap, f"{group_id}-suppression", topics.events),
            90, "events committed by the suppression stage",
        )
        status, body = await asyncio.to_thread(http_get, port, "/readyz")
        assert status == 200, body
        assert "classify:" in body and "suppression:" in body
        metrics = (await asyncio.to_thread(http_get, port, "/metrics"))[1]
        assert "mailevents_ready 1.0" in metrics
        assert worker.terminate(30) == 0, worker.log()[-3000:]
    finally:
        worker.ensure_stopped()
        await delete_topics(kafka_bootstrap, [control, state])
    events = await consume_all(kafka_bootstrap, topics.events, expect=len(raw))
    assert {orjson.loads(r.value)["recipientState"] for r in events} == {"SoftBounceMailboxFull"}
    updates = [
        orjson.loads(r.value)
        for r in await consume_all(kafka_bootstrap, topics.suppressions,
                                   expect=len(addresses), settle=1.0)
    ]
    assert sorted((u["email"], u["reason"]) for u in updates) == sorted(
        (a, "SoftBounceEscalation") for a in addresses
    )

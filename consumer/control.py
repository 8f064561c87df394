"""Operator commands for the suppression stage, written to the control topic.

A command is keyed by the address, like the events, so it lands on the partition (and
the worker) that holds the address's state, and is applied in order with its events.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer

from consumer.config import Settings
from consumer.errors import ParseError
from consumer.kafka import security_options
from consumer.providers.base import format_time, normalize_email

__all__ = ["send_clear"]


async def send_clear(settings: Settings, address: str, reason: str) -> str:
    """Write a ``clear`` command for ``address``; its command id once acknowledged."""
    try:
        email = normalize_email(address, "ADDRESS")
    except ParseError as exc:
        raise ValueError(str(exc)) from None
    if not reason.strip():
        raise ValueError("--reason must say why the suppression is lifted")
    command_id = uuid.uuid4().hex
    command = {
        "command": "clear",
        "email": email,
        "reason": reason.strip()[:500],
        "requestedAt": format_time(datetime.now(UTC)),
        "commandId": command_id,
    }
    producer = AIOKafkaProducer(
        bootstrap_servers=list(settings.kafka_bootstrap_servers),
        acks="all",
        enable_idempotence=True,
        **security_options(settings),
    )
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.control_topic, orjson.dumps(command), key=email.encode()
        )
    finally:
        await producer.stop()
    return command_id

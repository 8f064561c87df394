"""Build the aiokafka clients from ``Settings``: the one place that knows their options.

The options encode the delivery guarantees (see docs/architecture.md):
- consumer: no auto-commit (we commit after the outputs are acknowledged), start at the
  earliest offset of a new group (nothing sent before the first deployment is skipped),
  read_committed (an aborted exactly-once transaction upstream is never read);
- producer: acks=all and idempotence (a retried send is not written twice); in
  exactly-once mode a transactional id, stable per worker, so a restarted worker fences
  its own previous incarnation.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.helpers import create_ssl_context

from consumer.config import Guarantee, Settings

__all__ = ["build_consumer", "build_producer", "security_options"]

#: Headroom over the largest accepted payload for a dead letter's headers and framing.
_REQUEST_HEADROOM = 64 * 1024
#: One partition's share of a fetch; the total is bounded by MAX_BATCH_BYTES.
_PARTITION_FETCH_BYTES = 1024 * 1024


def security_options(settings: Settings) -> dict[str, object]:
    """Protocol, TLS context and SASL credentials, shared by every client."""
    options: dict[str, object] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_security_protocol in {"SSL", "SASL_SSL"}:
        options["ssl_context"] = _ssl_context(settings)
    if settings.kafka_sasl_mechanism is not None:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password
    return options


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    password = settings.kafka_ssl_key_password
    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.kafka_ssl_ca_file,
        certfile=settings.kafka_ssl_cert_file,
        keyfile=settings.kafka_ssl_key_file,
        password=password,
    )
    return context


def build_consumer(
    settings: Settings, group_id: str | None = None, **options: Any
) -> AIOKafkaConsumer:
    """The group consumer of a stage's topics (subscribed later, with a listener)."""
    return AIOKafkaConsumer(
        bootstrap_servers=list(settings.kafka_bootstrap_servers),
        client_id=settings.client_id,
        group_id=group_id or settings.kafka_group_id,
        group_instance_id=settings.kafka_group_instance_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        fetch_max_bytes=settings.max_batch_bytes,
        max_partition_fetch_bytes=min(settings.max_batch_bytes, _PARTITION_FETCH_BYTES),
        max_poll_records=settings.max_batch_records,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=max(1000, settings.kafka_session_timeout_ms // 10),
        retry_backoff_ms=200,
        **security_options(settings),
        **options,
    )


def build_producer(settings: Settings, stage: str = "classify") -> AIOKafkaProducer:
    """The producer of every output of ``stage``; transactional in exactly-once mode."""
    transactional = settings.guarantee is Guarantee.EXACTLY_ONCE
    return AIOKafkaProducer(
        bootstrap_servers=list(settings.kafka_bootstrap_servers),
        client_id=settings.client_id,
        acks="all",
        enable_idempotence=True,
        transactional_id=settings.transactional_id(stage) if transactional else None,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        max_request_size=settings.max_payload_bytes + _REQUEST_HEADROOM,
        # Outputs are small JSON documents: fill batches for a few ms rather than send
        # one request per record.
        linger_ms=5,
        max_batch_size=256 * 1024,
        retry_backoff_ms=200,
        **security_options(settings),
    )

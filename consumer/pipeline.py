"""Raw bytes to outputs: the one pure function of the product (no I/O, no globals).

``process`` decodes, detects the provider, parses one observation per recipient,
classifies it and builds the normalized event and suppression update.  A
``PayloadError`` means the record goes to the dead-letter output; any other
exception is a bug.
"""

from __future__ import annotations

import hashlib

from consumer.classify import classify
from consumer.codec import DEFAULT_MAX_BYTES, decode
from consumer.mailbox import mailbox_provider
from consumer.models import (
    Kind,
    NormalizedEvent,
    Observation,
    Outcome,
    SourceRef,
    SuppressionUpdate,
)
from consumer.providers import detect
from consumer.rules import Rules
from consumer.suppression import for_event, for_list_change
from consumer.textmatch import tokenize

__all__ = ["event_id", "normalize", "process"]


def event_id(*parts: str) -> str:
    """Deterministic output id: the same input always yields the same id (replays dedupe)."""
    return hashlib.blake2b(
        "\x1f".join(parts).encode("utf-8", "replace"), digest_size=16
    ).hexdigest()


def process(
    raw: bytes,
    rules: Rules,
    received_at: str,
    provider: str | None = None,
    source: SourceRef | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Outcome:
    """Every output of one raw record.  ``received_at`` stands in for a missing event time."""
    payload = decode(raw, max_bytes)
    parser = detect(payload, provider)
    parsed = parser.parse(payload, received_at)
    events: list[NormalizedEvent] = []
    suppressions: list[SuppressionUpdate] = []
    for observation in parsed.observations:
        if observation.kind is Kind.SUPPRESS or observation.kind is Kind.UNSUPPRESS:
            ident = event_id(
                observation.provider,
                observation.provider_event_id,
                observation.email,
                observation.kind.value,
                observation.suppression_reason or "",
            )
            mailbox = mailbox_provider(rules, observation.email.rpartition("@")[2], None, None)
            suppressions.append(
                for_list_change(observation, ident, rules.policy, mailbox, source)
            )
            continue
        event = normalize(observation, rules, source)
        events.append(event)
        update = for_event(event, rules.policy)
        if update is not None:
            suppressions.append(update)
    return Outcome(tuple(events), tuple(suppressions), parsed.ignored, parser.name)


def normalize(
    observation: Observation, rules: Rules, source: SourceRef | None = None, explain: bool = False
) -> NormalizedEvent:
    """Classify one observation and build its normalized event."""
    domain = observation.email.rpartition("@")[2]
    text = tokenize(observation.diagnostic) if observation.diagnostic else None
    mailbox = mailbox_provider(rules, domain, observation.remote_mta, text)
    result = classify(observation, rules, text, mailbox, explain)
    return NormalizedEvent(
        event_id=event_id(
            observation.provider,
            observation.provider_event_id,
            observation.email,
            result.status.value,
        ),
        provider=observation.provider,
        provider_event_id=observation.provider_event_id,
        occurred_at=observation.occurred_at,
        email=observation.email,
        domain=domain,
        mailbox_provider=mailbox,
        message_id=observation.message_id,
        campaign_id=observation.campaign_id,
        template_id=observation.template_id,
        status=result.status,
        recipient_state=result.recipient_state,
        provider_state=observation.provider_state,
        smtp_code=result.smtp_code,
        enhanced_code=result.enhanced_code,
        diagnostic=observation.diagnostic,
        remote_mta=observation.remote_mta,
        classified_by=result.classified_by,
        rule_id=result.rule_id,
        source=source,
    )

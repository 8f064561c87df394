"""Decide the suppression update for one classified event (DESIGN section 7).

Every Bounce suppresses (firm for address-level causes, ``needsReview`` otherwise);
complaints and unsubscribes suppress; reactivations and resubscribes unsuppress.
Blocked, Deferred and Delivered never do: a single soft bounce says little (repeated
ones are escalated by the stateful stage, which keeps per-address history).
"""

from __future__ import annotations

from consumer.models import (
    Kind,
    NormalizedEvent,
    Observation,
    SourceRef,
    Status,
    SuppressionAction,
    SuppressionUpdate,
)
from consumer.rules import Policy

__all__ = ["for_event", "for_list_change"]


def for_event(event: NormalizedEvent, policy: Policy) -> SuppressionUpdate | None:
    if event.status is not Status.BOUNCE or event.recipient_state is None:
        return None
    return SuppressionUpdate(
        event_id=event.event_id,
        provider=event.provider,
        email=event.email,
        action=SuppressionAction.SUPPRESS,
        reason=event.recipient_state.value,
        occurred_at=event.occurred_at,
        policy_version=policy.version,
        needs_review=event.recipient_state not in policy.firm_suppression,
        source=event.source,
        mailbox_provider=event.mailbox_provider,
    )


def for_list_change(
    observation: Observation,
    event_id: str,
    policy: Policy,
    mailbox_provider: str,
    source: SourceRef | None = None,
) -> SuppressionUpdate:
    """A complaint, unsubscribe or reactivation reported by the provider."""
    action = (
        SuppressionAction.UNSUPPRESS
        if observation.kind is Kind.UNSUPPRESS
        else SuppressionAction.SUPPRESS
    )
    return SuppressionUpdate(
        event_id=event_id,
        provider=observation.provider,
        email=observation.email,
        action=action,
        reason=observation.suppression_reason or action.value.capitalize(),
        occurred_at=observation.occurred_at,
        policy_version=policy.version,
        scope=observation.scope,
        mailbox_provider=mailbox_provider,
        source=source,
    )

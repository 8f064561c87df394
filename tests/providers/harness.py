"""Runs a payload through the pipeline and checks the invariants every output must hold."""

from __future__ import annotations

from consumer.models import Outcome, RecipientState, Status
from consumer.pipeline import process
from consumer.rules import Rules

RECEIVED_AT = "2025-01-01T00:00:00.000Z"
_ADDRESS_LEVEL = {RecipientState.HARD_BOUNCE, RecipientState.DNS_FAILURE, RecipientState.SUPPRESSED}


def run(raw: bytes, rules: Rules) -> Outcome:
    outcome = process(raw, rules, RECEIVED_AT)
    again = process(raw, rules, RECEIVED_AT)
    assert outcome == again, "the same input must give the same outputs (deterministic ids)"
    check_invariants(outcome, rules)
    return outcome


def check_invariants(outcome: Outcome, rules: Rules) -> None:
    for event in outcome.events:
        assert event.email == event.email.strip().lower()
        assert event.domain == event.email.rpartition("@")[2]
        assert event.mailbox_provider in rules.mailbox_groups
        if event.status is Status.DELIVERED:
            assert event.recipient_state in (None, RecipientState.SOFT_BOUNCE_AUTO_REPLY)
        else:
            assert event.recipient_state is not None
        if event.status is Status.DEFERRED and event.recipient_state is not None:
            assert event.recipient_state == rules.policy.temporary[event.recipient_state], (
                "a deferral must carry a temporary-family state"
            )
        assert (event.rule_id is not None) == (event.classified_by.value == "rule")
    bounces = {e.event_id for e in outcome.events if e.status is Status.BOUNCE}
    suppressed = {s.event_id for s in outcome.suppressions}
    assert bounces <= suppressed, "every Bounce produces a suppress update"
    for update in outcome.suppressions:
        if update.event_id in bounces:
            state = RecipientState(update.reason)
            assert update.needs_review == (state not in _ADDRESS_LEVEL)

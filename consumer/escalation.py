"""Per-address suppression state and its policy: the pure part of the suppression stage.

The stage feeds every normalized event and every operator command of one address, in
order, through ``apply_event`` / ``apply_clear``; each returns the address's new state
and, when the policy says so, a suppression update.  Time is the events' own time
(``occurredAt``), never the wall clock, so a replay after a crash or a rebalance
rebuilds exactly the same state and the same updates.  Replays are also why soft
bounces are kept with their event id: applying an event twice counts it once.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from consumer.errors import RulesError
from consumer.models import RecipientState, SourceRef, Status, SuppressionAction, SuppressionUpdate
from consumer.pipeline import event_id
from consumer.providers.base import format_time

__all__ = [
    "STAGE_PROVIDER",
    "AddressState",
    "Clear",
    "EscalationPolicy",
    "StageEvent",
    "apply_clear",
    "apply_event",
    "expired",
    "load_escalation_policy",
    "state_from_json",
    "state_to_json",
]

#: ``provider`` of the updates this stage writes (its own, not an ESP's).
STAGE_PROVIDER = "bounce-consumer"
_DAY = 86_400


@dataclass(frozen=True, slots=True)
class EscalationPolicy:
    """``data/escalation.toml``, checked."""

    soft_bounce_count: int
    min_span_seconds: int
    window_seconds: int
    reset_on_delivery: bool
    lift_on_delivery: bool
    reason: str
    soft_states: frozenset[RecipientState]
    ttl_seconds: int
    version: str


def load_escalation_policy(data: bytes | None = None) -> EscalationPolicy:
    """Read and check the policy (``data`` replaces the shipped file, for tests)."""
    raw = data if data is not None else (
        resources.files("consumer").joinpath("data/escalation.toml").read_bytes()
    )
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
        rule, state = doc["escalation"], doc["state"]
        soft_states = frozenset(RecipientState(s) for s in rule["soft_states"])
        policy = EscalationPolicy(
            soft_bounce_count=int(rule["soft_bounce_count"]),
            min_span_seconds=int(float(rule["min_span_hours"]) * 3600),
            window_seconds=int(float(rule["window_days"]) * _DAY),
            reset_on_delivery=bool(rule["reset_on_delivery"]),
            lift_on_delivery=bool(rule["lift_on_delivery"]),
            reason=str(rule["reason"]),
            soft_states=soft_states,
            ttl_seconds=int(float(state["ttl_days"]) * _DAY),
            version=hashlib.sha256(raw).hexdigest()[:12],
        )
    except (
        KeyError, TypeError, ValueError, OverflowError, UnicodeDecodeError, tomllib.TOMLDecodeError
    ) as exc:
        raise RulesError(f"escalation.toml: {type(exc).__name__}: {exc}") from None
    for flag in ("reset_on_delivery", "lift_on_delivery"):
        if not isinstance(rule[flag], bool):
            raise RulesError(f"escalation.toml: {flag} must be true or false")
    if policy.min_span_seconds < 0:
        raise RulesError("escalation.toml: min_span_hours must not be negative")
    if not soft_states or any(not s.value.startswith("SoftBounce") for s in soft_states):
        raise RulesError("escalation.toml: soft_states must list SoftBounce* states only")
    if policy.soft_bounce_count < 1 or policy.window_seconds < policy.min_span_seconds:
        raise RulesError("escalation.toml: need soft_bounce_count >= 1 and window >= span")
    if policy.ttl_seconds < policy.window_seconds:
        raise RulesError("escalation.toml: state ttl_days must cover window_days")
    return policy


@dataclass(frozen=True, slots=True)
class StageEvent:
    """What the stage needs of one normalized event."""

    email: str
    status: Status
    recipient_state: RecipientState | None
    occurred: int
    event_id: str
    source: SourceRef | None = None
    message_id: str | None = None

    @staticmethod
    def epoch(text: str) -> int:
        """Unix seconds of an RFC 3339 time, as every output writes them."""
        return _epoch(text)

    @classmethod
    def from_json(cls, body: dict[str, Any], source: SourceRef | None = None) -> StageEvent:
        state = body.get("recipientState")
        return cls(
            email=str(body["email"]),
            status=Status(body["status"]),
            recipient_state=RecipientState(state) if state else None,
            occurred=_epoch(str(body["occurredAt"])),
            event_id=str(body["eventId"]),
            source=source,
            message_id=body.get("messageId") or None,
        )


@dataclass(frozen=True, slots=True)
class Clear:
    """An explicit clear: an operator's command or a provider's removal from a bounce list."""

    email: str
    reason: str
    requested: int
    command_id: str
    source: SourceRef | None = None


@dataclass(frozen=True, slots=True)
class AddressState:
    """What the stage remembers of one address (``soft``: (time, message or event id))."""

    soft: tuple[tuple[int, str], ...] = ()
    delivered: int | None = None
    suppressed: str | None = None
    updated: int = 0
    #: Time of the last reset (delivery, hard bounce, clear): older soft bounces never count.
    reset: int | None = None


def apply_event(
    state: AddressState | None, event: StageEvent, policy: EscalationPolicy
) -> tuple[AddressState, SuppressionUpdate | None]:
    """The address's state after ``event``, and the update it causes, if any.

    A soft bounce counts once per message (retries of one message are one problem),
    only if it is newer than the last reset (a delivery, a hard bounce or a clear: so a
    replayed or late old event cannot undo a reset), and only within the window that
    ends at the newest soft bounce seen.
    """
    current = state or AddressState()
    updated = max(current.updated, event.occurred)
    if event.status is Status.DELIVERED:
        return _on_delivery(current, event, policy, updated)
    if event.status is Status.BOUNCE:
        # The first stage already suppressed it; remember why, so a clear can lift it.
        reason = event.recipient_state.value if event.recipient_state else "Bounce"
        reset = max(current.reset or 0, event.occurred)
        return replace(current, soft=(), suppressed=reason, reset=reset, updated=updated), None
    if event.recipient_state not in policy.soft_states:
        return replace(current, updated=updated), None
    identity = event.message_id or event.event_id
    if any(known == identity for _, known in current.soft):
        # A replay, or another retry of a message already counted: it only keeps the
        # address alive (state expiry).
        return replace(current, updated=updated), None
    if current.reset is not None and event.occurred <= current.reset:
        return replace(current, updated=updated), None  # older than the last reset
    newest = max(event.occurred, current.soft[-1][0] if current.soft else event.occurred)
    horizon = newest - policy.window_seconds
    soft = tuple(sorted((*current.soft, (event.occurred, identity))))
    soft = tuple(item for item in soft if item[0] >= horizon)
    after = replace(current, soft=soft, updated=updated)
    if current.suppressed is not None or len(soft) < policy.soft_bounce_count:
        return after, None
    if soft[-1][0] - soft[0][0] < policy.min_span_seconds:
        return after, None
    update = _update(
        event.email, SuppressionAction.SUPPRESS, policy.reason, event.event_id, event.occurred,
        policy, event.source,
    )
    return replace(after, suppressed=policy.reason), update


def _on_delivery(
    current: AddressState, event: StageEvent, policy: EscalationPolicy, updated: int
) -> tuple[AddressState, SuppressionUpdate | None]:
    """A delivery resets the count, and lifts an escalation it is newer than.

    A late delivery (older than some soft bounces) only forgets the soft bounces before it.
    """
    newer = not current.soft or event.occurred > current.soft[-1][0]
    delivered = max(current.delivered or 0, event.occurred)
    if current.suppressed == policy.reason and not newer:
        # Not newer than the bounces that escalated: it neither lifts nor forgets them.
        return replace(current, delivered=delivered, updated=updated), None
    soft = current.soft
    if policy.reset_on_delivery:
        soft = tuple(item for item in soft if item[0] > event.occurred)
    reset = max(current.reset or 0, event.occurred) if policy.reset_on_delivery else current.reset
    after = replace(current, soft=soft, delivered=delivered, reset=reset, updated=updated)
    if policy.lift_on_delivery and current.suppressed == policy.reason and newer:
        update = _update(
            event.email, SuppressionAction.UNSUPPRESS, "Delivered", event.event_id,
            event.occurred, policy, event.source,
        )
        return replace(after, soft=(), suppressed=None), update
    return after, None


def apply_clear(
    state: AddressState | None, clear: Clear, policy: EscalationPolicy
) -> tuple[AddressState, SuppressionUpdate]:
    """Lift whatever suppression the address has, and start its count again.

    The update is written even when this stage knows no suppression: the first stage's
    suppressions (complaints, unsubscribes) are not tracked here, and an operator's
    clear must reach every consumer of the suppressions topic.  Soft bounces older than
    the clear never count again, even if the events topic is replayed.
    """
    current = state or AddressState()
    update = _update(
        clear.email, SuppressionAction.UNSUPPRESS, clear.reason, clear.command_id,
        clear.requested, policy, clear.source,
    )
    after = AddressState(
        soft=(),
        delivered=current.delivered,
        suppressed=None,
        reset=max(current.reset or 0, clear.requested),
        updated=max(current.updated, clear.requested),
    )
    return after, update


def expired(state: AddressState, now: int, policy: EscalationPolicy) -> bool:
    """Nothing happened to the address for the state's time to live."""
    return now - state.updated > policy.ttl_seconds


def _update(
    email: str,
    action: SuppressionAction,
    reason: str,
    cause_id: str,
    occurred: int,
    policy: EscalationPolicy,
    source: SourceRef | None,
) -> SuppressionUpdate:
    return SuppressionUpdate(
        event_id=event_id(STAGE_PROVIDER, cause_id, email, action.value, reason),
        provider=STAGE_PROVIDER,
        email=email,
        action=action,
        reason=reason,
        occurred_at=_iso(occurred),
        policy_version=policy.version,
        source=source,
    )


def state_to_json(state: AddressState) -> dict[str, Any]:
    """The changelog form of a state (compact: one record per address)."""
    return {
        "v": 1,
        "soft": [[moment, ident] for moment, ident in state.soft],
        "delivered": state.delivered,
        "suppressed": state.suppressed,
        "updated": state.updated,
        "reset": state.reset,
    }


def state_from_json(body: dict[str, Any]) -> AddressState:
    return AddressState(
        soft=tuple((int(moment), str(ident)) for moment, ident in body.get("soft", [])),
        delivered=body.get("delivered"),
        suppressed=body.get("suppressed"),
        updated=int(body.get("updated", 0)),
        reset=body.get("reset"),
    )


def _epoch(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def _iso(seconds: int) -> str:
    return format_time(datetime.fromtimestamp(seconds, UTC))

"""SparkPost webhooks: a JSON array of ``{"msys": {<container>: {...}}}``.

``bounce_class`` is SparkPost's classification code (delivery-events.md 4.5); only its
Hard and Admin classes mean SparkPost suppressed the address.  ``[{"msys": {}}]`` is
the validation ping.
"""

from __future__ import annotations

from typing import Any

from consumer.errors import ParseError
from consumer.models import Kind, Observation, RecipientState, Status
from consumer.providers.base import Obj, Parsed, normalize_email, parse_time, synthetic_id

__all__ = ["SparkPost"]

_CONTAINERS = frozenset(
    {
        "message_event",
        "track_event",
        "unsubscribe_event",
        "gen_event",
        "relay_event",
        "ab_test_event",
        "ingest_event",
    }
)

#: bounce class -> (state, status when final); status None lets the policy decide.
_CLASSES: dict[int, tuple[RecipientState, Status | None]] = {
    1: (RecipientState.SOFT_BOUNCE_UNDETERMINED, Status.BLOCKED),
    10: (RecipientState.HARD_BOUNCE, Status.BOUNCE),
    20: (RecipientState.SOFT_BOUNCE_GENERAL, Status.BLOCKED),
    21: (RecipientState.SOFT_BOUNCE_DNS_FAILURE, Status.BLOCKED),
    22: (RecipientState.SOFT_BOUNCE_MAILBOX_FULL, Status.BLOCKED),
    23: (RecipientState.SOFT_BOUNCE_MESSAGE_TOO_LARGE, Status.BLOCKED),
    24: (RecipientState.SOFT_BOUNCE_TIMEOUT, Status.BLOCKED),
    25: (RecipientState.SUPPRESSED, Status.BOUNCE),
    26: (RecipientState.SUPPRESSED, Status.BOUNCE),
    30: (RecipientState.HARD_BOUNCE, Status.BOUNCE),
    40: (RecipientState.SOFT_BOUNCE_GENERAL, Status.BLOCKED),
    50: (RecipientState.MAIL_BLOCK_GENERAL, Status.BLOCKED),
    51: (RecipientState.MAIL_BLOCK_KNOWN_SPAMMER, Status.BLOCKED),
    52: (RecipientState.MAIL_BLOCK_SPAM_DETECTED, Status.BLOCKED),
    53: (RecipientState.MAIL_BLOCK_ATTACHMENT_DETECTED, Status.BLOCKED),
    54: (RecipientState.MAIL_BLOCK_RELAY_DENIED, Status.BLOCKED),
    60: (RecipientState.SOFT_BOUNCE_AUTO_REPLY, Status.DELIVERED),
    70: (RecipientState.SOFT_BOUNCE_GENERAL, Status.BLOCKED),
    100: (RecipientState.SOFT_BOUNCE_AUTO_REPLY, Status.DEFERRED),
}
#: Classes whose meaning is a provider fact, not a guess from the response text.
_FACT_CLASSES = frozenset({25, 26, 60, 100})
_FAILURES = frozenset({"bounce", "out_of_band", "policy_rejection", "generation_rejection"})


def _is_item(item: Any) -> bool:
    return isinstance(item, dict) and set(item) == {"msys"} and isinstance(item["msys"], dict)


class SparkPost:
    name = "sparkpost"

    def matches(self, payload: Any) -> bool:
        if isinstance(payload, list):
            return bool(payload) and all(_is_item(item) for item in payload)
        return _is_item(payload)

    def parse(self, payload: Any, received_at: str) -> Parsed:
        items = payload if isinstance(payload, list) else [payload]
        observations: list[Observation] = []
        ignored = 0
        for index, item in enumerate(items):
            msys = Obj(item, f"$[{index}]").req_obj("msys")
            if not msys.data:
                ignored += 1  # the validation ping
                continue
            containers = [key for key in msys.data if key in _CONTAINERS]
            if len(containers) != 1:
                raise ParseError(
                    f"{msys.path}: expected one event container, got {sorted(msys.data)}"
                )
            event = msys.req_obj(containers[0])
            observation = self._one(containers[0], event)
            if observation is None:
                ignored += 1
            else:
                observations.append(observation)
        return Parsed(tuple(observations), ignored)

    def _one(self, container: str, event: Obj) -> Observation | None:
        kind = event.req("type")
        if container in {"track_event", "relay_event", "ab_test_event", "ingest_event"} or kind in {
            "injection",
            "generation_failure",
            "sms_status",
            "initial_open",
            "open",
            "click",
            "amp_open",
            "amp_click",
            "amp_initial_open",
        }:
            return None
        email = normalize_email(
            event.raw("rcpt_to") or event.raw("raw_rcpt_to"), f"{event.path}.rcpt_to"
        )
        occurred = parse_time(event.raw("timestamp"), f"{event.path}.timestamp")
        message_id = event.ident("message_id")
        base: dict[str, Any] = {
            "provider": self.name,
            "email": email,
            "occurred_at": occurred,
            "provider_event_id": event.ident("event_id")
            or synthetic_id(message_id, email, kind, occurred),
            "message_id": message_id,
            "campaign_id": event.ident("campaign_id"),
            "template_id": event.ident("template_id"),
        }
        if container == "unsubscribe_event":
            return Observation(
                kind=Kind.SUPPRESS, provider_state=kind, suppression_reason="Unsubscribe", **base
            )
        if kind == "spam_complaint":
            return Observation(
                kind=Kind.SUPPRESS, provider_state=kind, suppression_reason="Complaint", **base
            )
        if kind == "delivery":
            return Observation(kind=Kind.DELIVERED, provider_state=kind, **base)
        text: dict[str, Any] = {
            "diagnostic": event.text("raw_reason") or event.text("reason"),
            "smtp_code": event.integer("error_code"),
            "remote_mta": event.text("ip_address"),
        }
        bounce_class = event.integer("bounce_class")
        if bounce_class == 90:
            return Observation(
                kind=Kind.SUPPRESS,
                provider_state=f"{kind}/90",
                suppression_reason="Unsubscribe",
                **base,
            )
        if bounce_class == 80:
            return None
        state, status = _CLASSES.get(bounce_class or 1, _CLASSES[1])
        label = f"{kind}/{bounce_class}" if bounce_class is not None else kind
        if kind == "delay":
            return Observation(
                kind=Kind.DEFERRED,
                provider_state=label,
                category_state=state,
                held=bounce_class == 100,
                **text,
                **base,
            )
        if kind not in _FAILURES:
            return None
        if kind in {"policy_rejection", "generation_rejection"} and bounce_class not in (25, 26):
            reason = (text["diagnostic"] or "").lower()
            if "suppress" in reason:
                state, status = RecipientState.SUPPRESSED, Status.BOUNCE
                bounce_class = 25
            elif kind == "generation_rejection":
                state, status = RecipientState.UNHANDLED_STATE, Status.BLOCKED
                bounce_class = 25
            else:
                status = Status.BLOCKED
        if bounce_class == 100:
            return Observation(
                kind=Kind.DEFERRED,
                provider_state=label,
                fact_state=state,
                held=True,
                **text,
                **base,
            )
        if bounce_class == 60:
            return Observation(kind=Kind.DELIVERED, provider_state=label, fact_state=state, **base)
        fact = bounce_class in _FACT_CLASSES
        return Observation(
            kind=Kind.FAILED,
            provider_state=label,
            fact_state=state if fact else None,
            category_state=None if fact else state,
            provider_status=status,
            **text,
            **base,
        )

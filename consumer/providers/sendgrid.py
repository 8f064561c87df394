"""SendGrid Event Webhook: a JSON array of events, one recipient each.

Suppression semantics (delivery-events.md 4.2): ``bounce`` with ``type=bounce`` means
SendGrid added the address to its bounce list (Bounce); ``type=blocked`` means it did
not (Blocked).  ``dropped`` events never reached a receiver: the drop reason decides.
"""

from __future__ import annotations

from typing import Any

from consumer.models import Kind, Observation, RecipientState, Scope, Status
from consumer.providers.base import Obj, Parsed, normalize_email, parse_time, synthetic_id

__all__ = ["SendGrid"]

_IGNORED = frozenset(
    {"processed", "open", "click", "account_status_change", "group_resubscribe_noop"}
)

#: bounce_classification -> the provider's category (step 4 of the evidence order).
_CLASSIFICATION = {
    "Invalid Address": RecipientState.HARD_BOUNCE,
    "Mailbox Unavailable": RecipientState.SOFT_BOUNCE_GENERAL,
    "Technical Failure": RecipientState.SOFT_BOUNCE_GENERAL,
    "Content": RecipientState.MAIL_BLOCK_SPAM_DETECTED,
    "Reputation": RecipientState.MAIL_BLOCK_KNOWN_SPAMMER,
    "Frequency or Volume Too High": RecipientState.SOFT_BOUNCE_GENERAL,
    "Unclassified": RecipientState.SOFT_BOUNCE_UNDETERMINED,
}

#: dropped reason -> (definitive state, status).
_DROPS = {
    "bounced address": (RecipientState.SUPPRESSED, Status.BOUNCE),
    "unsubscribed address": (RecipientState.SUPPRESSED, Status.BOUNCE),
    "spam reporting address": (RecipientState.SUPPRESSED, Status.BOUNCE),
    "invalid": (RecipientState.HARD_BOUNCE, Status.BOUNCE),
    "spam content": (RecipientState.MAIL_BLOCK_SPAM_DETECTED, Status.BLOCKED),
    "invalid smtpapi header": (RecipientState.UNHANDLED_STATE, Status.BLOCKED),
    "recipient list over package quota": (RecipientState.UNHANDLED_STATE, Status.BLOCKED),
}


def _is_event(item: Any) -> bool:
    return (
        isinstance(item, dict)
        and "event" in item
        and ("sg_event_id" in item or "sg_message_id" in item or "smtp-id" in item)
    )


class SendGrid:
    name = "sendgrid"

    def matches(self, payload: Any) -> bool:
        if isinstance(payload, list):
            return bool(payload) and all(_is_event(item) for item in payload)
        return _is_event(payload)

    def parse(self, payload: Any, received_at: str) -> Parsed:
        items = payload if isinstance(payload, list) else [payload]
        observations: list[Observation] = []
        ignored = 0
        for index, item in enumerate(items):
            observation = self._one(Obj(item, f"$[{index}]"))
            if observation is None:
                ignored += 1
            else:
                observations.append(observation)
        return Parsed(tuple(observations), ignored)

    def _one(self, event: Obj) -> Observation | None:
        name = event.req("event").lower()
        if name in _IGNORED or name not in _HANDLED:
            return None
        email = normalize_email(event.raw("email"), f"{event.path}.email")
        occurred = parse_time(event.raw("timestamp"), f"{event.path}.timestamp")
        message_id = event.ident("sg_message_id") or event.text("smtp-id")
        event_id = event.ident("sg_event_id") or synthetic_id(message_id, email, name, occurred)
        categories = event.raw("category")
        campaign = event.ident("marketing_campaign_id") or (
            categories if isinstance(categories, str) else None
        )
        common: dict[str, Any] = {
            "provider": self.name,
            "email": email,
            "occurred_at": occurred,
            "provider_event_id": event_id,
            "message_id": message_id,
            "campaign_id": campaign,
            "template_id": event.ident("template_id"),
        }
        if name == "delivered":
            return Observation(
                kind=Kind.DELIVERED,
                provider_state="delivered",
                diagnostic=event.text("response"),
                **common,
            )
        if name == "deferred":
            return Observation(
                kind=Kind.DEFERRED,
                provider_state="deferred",
                diagnostic=event.text("response"),
                **common,
            )
        if name == "bounce":
            kind = (event.text("type") or "bounce").lower()
            classification = event.text("bounce_classification")
            return Observation(
                kind=Kind.FAILED,
                provider_state=f"bounce/{kind}" + (f"/{classification}" if classification else ""),
                diagnostic=event.text("reason"),
                enhanced_code=event.text("status"),
                category_state=_CLASSIFICATION.get(classification or ""),
                provider_status=Status.BLOCKED if kind == "blocked" else Status.BOUNCE,
                **common,
            )
        if name == "dropped":
            reason = event.text("reason") or ""
            state, status = _DROPS.get(
                reason.lower(), (RecipientState.UNHANDLED_STATE, Status.BLOCKED)
            )
            return Observation(
                kind=Kind.FAILED,
                provider_state=f"dropped/{reason}",
                fact_state=state,
                provider_status=status,
                **common,
            )
        if name == "spamreport":
            return Observation(
                kind=Kind.SUPPRESS,
                provider_state="spamreport",
                suppression_reason="Complaint",
                **common,
            )
        if name == "unsubscribe":
            return Observation(
                kind=Kind.SUPPRESS,
                provider_state="unsubscribe",
                suppression_reason="Unsubscribe",
                **common,
            )
        group = event.ident("asm_group_id")
        scope = Scope("group", group) if group else None
        if name == "group_unsubscribe":
            return Observation(
                kind=Kind.SUPPRESS,
                provider_state="group_unsubscribe",
                suppression_reason="Unsubscribe",
                scope=scope,
                **common,
            )
        return Observation(
            kind=Kind.UNSUPPRESS,
            provider_state="group_resubscribe",
            suppression_reason="Resubscribe",
            scope=scope,
            **common,
        )


_HANDLED = frozenset(
    {
        "delivered",
        "deferred",
        "bounce",
        "dropped",
        "spamreport",
        "unsubscribe",
        "group_unsubscribe",
        "group_resubscribe",
    }
)

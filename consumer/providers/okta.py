"""Okta System Log ``system.email.delivery`` events (also as an API array or inside an
Event Hook envelope).  Okta sends through SendGrid and reports its four statuses in
``outcome``; the remote reply is in ``debugContext.debugData.providerMessage``.
"""

from __future__ import annotations

from typing import Any

from consumer.errors import ParseError
from consumer.models import Kind, Observation, RecipientState, Status
from consumer.providers.base import Obj, Parsed, normalize_email, parse_time

__all__ = ["Okta"]

_EVENT = "system.email.delivery"


def _is_event(item: Any) -> bool:
    return isinstance(item, dict) and item.get("eventType") == _EVENT and "outcome" in item


def _is_hook(payload: Any) -> bool:
    return (
        isinstance(payload, dict)
        and payload.get("eventType") == "com.okta.event_hook"
        and isinstance(payload.get("data"), dict)
    )


class Okta:
    name = "okta"

    def matches(self, payload: Any) -> bool:
        if isinstance(payload, list):
            return bool(payload) and all(_is_event(item) for item in payload)
        return _is_event(payload) or _is_hook(payload)

    def parse(self, payload: Any, received_at: str) -> Parsed:
        if _is_hook(payload):
            items = Obj(payload, "$").req_obj("data").array("events")
            prefix = "$.data.events"
        else:
            items = payload if isinstance(payload, list) else [payload]
            prefix = "$"
        observations: list[Observation] = []
        ignored = 0
        for index, item in enumerate(items):
            event = Obj(item, f"{prefix}[{index}]")
            if event.text("eventType") != _EVENT:
                ignored += 1
                continue
            observations.append(self._one(event))
        return Parsed(tuple(observations), ignored)

    def _one(self, event: Obj) -> Observation:
        outcome = event.req_obj("outcome")
        result = (outcome.text("result") or "").upper()
        reason = (outcome.text("reason") or "").lower()
        debug = event.obj("debugContext")
        data = debug.obj("debugData") if debug else None
        message = data.text("providerMessage") if data else None
        email = self._recipient(event)
        base: dict[str, Any] = {
            "provider": self.name,
            "email": email,
            "occurred_at": parse_time(event.raw("published"), f"{event.path}.published"),
            "provider_event_id": event.req("uuid"),
            "message_id": (event.obj("transaction") or event).ident("id"),
            "provider_state": f"{result}/{outcome.text('reason') or ''}".rstrip("/"),
            "diagnostic": message,
        }
        if result == "SUCCESS":
            return Observation(kind=Kind.DELIVERED, **base)
        if reason == "deferred":
            return Observation(
                kind=Kind.DEFERRED, category_state=RecipientState.SOFT_BOUNCE_GENERAL, **base
            )
        if reason == "bounce":
            return Observation(
                kind=Kind.FAILED,
                category_state=RecipientState.HARD_BOUNCE,
                provider_status=Status.BOUNCE,
                **base,
            )
        if reason == "blocked":
            return Observation(
                kind=Kind.FAILED,
                category_state=RecipientState.MAIL_BLOCK_GENERAL,
                provider_status=Status.BLOCKED,
                **base,
            )
        if reason == "dropped":
            return Observation(
                kind=Kind.FAILED,
                fact_state=RecipientState.SUPPRESSED,
                provider_status=Status.BOUNCE,
                **base,
            )
        if reason in {"spamreport", "unsubscribe"}:
            return Observation(
                kind=Kind.SUPPRESS,
                suppression_reason="Complaint" if reason == "spamreport" else "Unsubscribe",
                **base,
            )
        return Observation(
            kind=Kind.FAILED,
            fact_state=RecipientState.UNHANDLED_STATE,
            provider_status=Status.BLOCKED,
            **base,
        )

    def _recipient(self, event: Obj) -> str:
        for index, item in enumerate(event.array("target")):
            target = Obj(item, f"{event.path}.target[{index}]")
            if target.text("type") == "User" and target.has("alternateId"):
                return normalize_email(target.raw("alternateId"), f"{target.path}.alternateId")
        raise ParseError(f"{event.path}.target: no User target with an email address")

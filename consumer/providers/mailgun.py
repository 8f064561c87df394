"""Mailgun webhooks (``{"signature": ..., "event-data": ...}``) and Events API items.

``severity`` tells whether Mailgun still retries (temporary) or gave up (permanent);
``reason`` and ``delivery-status.bounce-type`` carry its suppression semantics
(delivery-events.md 4.4).  Codes 498/499/602/605-607 are Mailgun pseudo-codes, never
SMTP replies.
"""

from __future__ import annotations

from typing import Any

from consumer.models import Kind, Observation, RecipientState, Status
from consumer.providers.base import Obj, Parsed, normalize_email, parse_time, synthetic_id

__all__ = ["Mailgun"]

_IGNORED = frozenset(
    {"accepted", "opened", "clicked", "stored", "rejected", "list_member_uploaded"}
)

#: permanent ``reason`` -> (definitive fact, category, provider status).
_PERMANENT: dict[str, tuple[RecipientState | None, RecipientState | None, Status | None]] = {
    "suppress-bounce": (RecipientState.SUPPRESSED, None, Status.BOUNCE),
    "suppress-unsubscribe": (RecipientState.SUPPRESSED, None, Status.BOUNCE),
    "suppress-complaint": (RecipientState.SUPPRESSED, None, Status.BOUNCE),
    "espblock": (None, RecipientState.MAIL_BLOCK_KNOWN_SPAMMER, Status.BLOCKED),
    "blacklisted": (None, RecipientState.MAIL_BLOCK_KNOWN_SPAMMER, Status.BLOCKED),
    "old": (None, RecipientState.SOFT_BOUNCE_TIMEOUT, Status.BLOCKED),
    "hardfail": (None, RecipientState.HARD_BOUNCE, Status.BOUNCE),
    "generic": (None, None, None),
}

_PSEUDO_CODES = {498: "no MX for the domain", 499: "could not connect to any MX"}


class Mailgun:
    name = "mailgun"

    def matches(self, payload: Any) -> bool:
        if not isinstance(payload, dict):
            return False
        if isinstance(payload.get("event-data"), dict):
            return True
        return (
            "event" in payload
            and "id" in payload
            and "log-level" in payload
            and isinstance(payload.get("timestamp"), int | float)
        )

    def parse(self, payload: Any, received_at: str) -> Parsed:
        root = Obj(payload, "$")
        data = root.obj("event-data") or root
        name = data.req("event").lower()
        if name in _IGNORED:
            return Parsed((), 1)
        email = normalize_email(data.raw("recipient"), f"{data.path}.recipient")
        occurred = parse_time(data.raw("timestamp"), f"{data.path}.timestamp")
        message = data.obj("message")
        headers = message.obj("headers") if message else None
        message_id = headers.text("message-id") if headers else None
        event_id = data.ident("id") or synthetic_id(message_id, email, name, occurred)
        campaigns = data.array("campaigns")
        campaign = None
        if campaigns and isinstance(campaigns[0], dict):
            campaign = str(campaigns[0].get("id") or "") or None
        base: dict[str, Any] = {
            "provider": self.name,
            "email": email,
            "occurred_at": occurred,
            "provider_event_id": f"{event_id}:{occurred}",
            "message_id": message_id,
            "campaign_id": campaign,
        }
        status_obj = data.obj("delivery-status")
        diagnostic = None
        code = None
        enhanced = None
        remote = None
        bounce_type = None
        if status_obj is not None:
            diagnostic = status_obj.text("message") or status_obj.text("description") or None
            code = status_obj.integer("code")
            enhanced = status_obj.text("enhanced-code")
            remote = status_obj.text("mx-host")
            bounce_type = status_obj.text("bounce-type")
        if name == "delivered":
            return Parsed(
                (
                    Observation(
                        kind=Kind.DELIVERED,
                        provider_state="delivered",
                        diagnostic=diagnostic,
                        remote_mta=remote,
                        **base,
                    ),
                )
            )
        if name == "complained":
            return Parsed(
                (
                    Observation(
                        kind=Kind.SUPPRESS,
                        provider_state="complained",
                        suppression_reason="Complaint",
                        **base,
                    ),
                )
            )
        if name == "unsubscribed":
            return Parsed(
                (
                    Observation(
                        kind=Kind.SUPPRESS,
                        provider_state="unsubscribed",
                        suppression_reason="Unsubscribe",
                        **base,
                    ),
                )
            )
        if name != "failed":
            return Parsed((), 1)
        severity = (data.text("severity") or "permanent").lower()
        reason = (data.text("reason") or "generic").lower()
        if code in _PSEUDO_CODES and not diagnostic:
            diagnostic = _PSEUDO_CODES[code]
        if code is not None and (code in _PSEUDO_CODES or code >= 600):
            code = None  # a Mailgun pseudo-code is not an SMTP reply class
        if severity == "temporary":
            category = {
                "espblock": RecipientState.SOFT_BOUNCE_SPAM_DETECTED,
                "greylisted": RecipientState.SOFT_BOUNCE_GENERAL,
            }.get(reason)
            return Parsed(
                (
                    Observation(
                        kind=Kind.DEFERRED,
                        provider_state=f"failed/temporary/{reason}",
                        diagnostic=diagnostic,
                        smtp_code=code,
                        enhanced_code=enhanced,
                        remote_mta=remote,
                        category_state=category,
                        **base,
                    ),
                )
            )
        fact, category, status = _PERMANENT.get(reason, (None, None, None))
        if reason == "bounce":
            if bounce_type == "hard":
                category, status = RecipientState.HARD_BOUNCE, Status.BOUNCE
            elif bounce_type == "soft":
                status = Status.BLOCKED
            else:
                category = RecipientState.HARD_BOUNCE
        return Parsed(
            (
                Observation(
                    kind=Kind.FAILED,
                    provider_state=f"failed/permanent/{reason}"
                    + (f"/{bounce_type}" if bounce_type else ""),
                    diagnostic=diagnostic,
                    smtp_code=code,
                    enhanced_code=enhanced,
                    remote_mta=remote,
                    fact_state=fact,
                    category_state=category,
                    provider_status=status,
                    **base,
                ),
            )
        )

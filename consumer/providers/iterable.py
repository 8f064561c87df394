"""Iterable ``emailBounce`` events: exported event records and system webhooks.

Iterable already labels bounces with the recipientState taxonomy; we re-classify from
``bounceMessage`` (Iterable's label is only the provider category, step 4) and keep
Iterable's label as ``providerState``.  Iterable has no provider-side suppression
flag in the payload, so the policy table decides the status.
"""

from __future__ import annotations

from typing import Any

from consumer.errors import ParseError
from consumer.models import Kind, Observation, RecipientState
from consumer.providers.base import Obj, Parsed, normalize_email, parse_time, synthetic_id

__all__ = ["Iterable"]


class Iterable:
    name = "iterable"

    def matches(self, payload: Any) -> bool:
        if not isinstance(payload, dict):
            return False
        return payload.get("eventType") == "emailBounce" or (
            payload.get("eventName") == "emailBounce"
            and isinstance(payload.get("dataFields"), dict)
        )

    def parse(self, payload: Any, received_at: str) -> Parsed:
        root = Obj(payload, "$")
        fields = root.obj("dataFields") if root.has("dataFields") else root
        assert fields is not None
        email = normalize_email(root.raw("email") or fields.raw("email"), "$.email")
        created = fields.raw("createdAt") or root.raw("createdAt")
        occurred = parse_time(created, f"{fields.path}.createdAt")
        label = fields.text("recipientState")
        category = None
        if label is not None:
            try:
                category = RecipientState(label)
            except ValueError:
                raise ParseError(f"{fields.path}.recipientState: unknown value {label!r}") from None
        message_id = fields.ident("messageId")
        return Parsed(
            (
                Observation(
                    provider=self.name,
                    kind=Kind.FAILED,
                    email=email,
                    occurred_at=occurred,
                    provider_event_id=synthetic_id(message_id, email, "emailBounce", occurred),
                    provider_state=label,
                    message_id=message_id,
                    campaign_id=fields.ident("campaignId"),
                    template_id=fields.ident("templateId"),
                    diagnostic=fields.text("bounceMessage"),
                    enhanced_code=fields.text("status"),
                    category_state=category,
                ),
            )
        )

"""Postmark webhooks: one object per POST, ``RecordType`` names the event.

``Inactive = true`` means Postmark deactivated (suppressed) the address: Bounce.  The
bounce ``Type`` string is the key, not ``TypeCode`` (Postmark's own spam-complaint
example says 512 where its table says 100001; delivery-events.md 2.5).
"""

from __future__ import annotations

from typing import Any

from consumer.models import Kind, Observation, RecipientState, Status
from consumer.providers.base import Obj, Parsed, normalize_email, parse_time, synthetic_id

__all__ = ["Postmark"]

_RECORD_TYPES = frozenset(
    {"Bounce", "Delivery", "SpamComplaint", "Open", "Click", "SubscriptionChange", "Inbound"}
)

# Bounce Type -> (kind, fact, category, default status).  Kind None: not an outcome.
_TYPES: dict[
    str, tuple[Kind | None, RecipientState | None, RecipientState | None, Status | None]
] = {
    "HardBounce": (Kind.FAILED, None, RecipientState.HARD_BOUNCE, Status.BOUNCE),
    "BadEmailAddress": (Kind.FAILED, None, RecipientState.HARD_BOUNCE, Status.BOUNCE),
    "Transient": (Kind.DEFERRED, None, RecipientState.SOFT_BOUNCE_GENERAL, None),
    "AutoResponder": (Kind.DELIVERED, RecipientState.SOFT_BOUNCE_AUTO_REPLY, None, None),
    "ChallengeVerification": (Kind.DEFERRED, RecipientState.SOFT_BOUNCE_AUTO_REPLY, None, None),
    "DnsError": (Kind.FAILED, None, RecipientState.SOFT_BOUNCE_DNS_FAILURE, Status.BLOCKED),
    "SpamNotification": (
        Kind.FAILED,
        None,
        RecipientState.MAIL_BLOCK_SPAM_DETECTED,
        Status.BLOCKED,
    ),
    "Unknown": (Kind.FAILED, None, RecipientState.SOFT_BOUNCE_UNDETERMINED, Status.BLOCKED),
    "SoftBounce": (Kind.FAILED, None, RecipientState.SOFT_BOUNCE_GENERAL, Status.BLOCKED),
    "VirusNotification": (
        Kind.FAILED,
        None,
        RecipientState.MAIL_BLOCK_ATTACHMENT_DETECTED,
        Status.BLOCKED,
    ),
    "ManuallyDeactivated": (Kind.FAILED, RecipientState.SUPPRESSED, None, Status.BOUNCE),
    "Unconfirmed": (Kind.FAILED, RecipientState.SUPPRESSED, None, Status.BOUNCE),
    "Blocked": (Kind.FAILED, None, RecipientState.MAIL_BLOCK_GENERAL, Status.BLOCKED),
    "DMARCPolicy": (Kind.FAILED, None, RecipientState.MAIL_BLOCK_GENERAL, Status.BLOCKED),
    "SMTPApiError": (Kind.FAILED, RecipientState.UNHANDLED_STATE, None, Status.BLOCKED),
    "TemplateRenderingFailed": (Kind.FAILED, RecipientState.UNHANDLED_STATE, None, Status.BLOCKED),
    "Subscribe": (None, None, None, None),
    "AddressChange": (None, None, None, None),
    "OpenRelayTest": (None, None, None, None),
    "InboundError": (None, None, None, None),
}

_SUPPRESSION_REASONS = {
    "HardBounce": "HardBounce",
    "SpamComplaint": "Complaint",
    "ManualSuppression": "ManualSuppression",
}


class Postmark:
    name = "postmark"

    def matches(self, payload: Any) -> bool:
        if not isinstance(payload, dict):
            return False
        record_type = payload.get("RecordType")
        return isinstance(record_type, str) and record_type in _RECORD_TYPES

    def parse(self, payload: Any, received_at: str) -> Parsed:
        record = Obj(payload, "$")
        record_type = record.req("RecordType")
        if record_type in {"Open", "Click", "Inbound"}:
            return Parsed((), 1)
        message_id = record.ident("MessageID") or record.ident("MessageId")
        tag = record.text("Tag")
        if record_type == "Delivery":
            email = normalize_email(record.raw("Recipient"), "$.Recipient")
            occurred = parse_time(record.raw("DeliveredAt"), "$.DeliveredAt")
            return Parsed(
                (
                    Observation(
                        provider=self.name,
                        kind=Kind.DELIVERED,
                        email=email,
                        occurred_at=occurred,
                        provider_event_id=synthetic_id(message_id, email, "delivery", occurred),
                        provider_state="Delivery",
                        message_id=message_id,
                        campaign_id=tag,
                        diagnostic=record.text("Details"),
                    ),
                )
            )
        if record_type == "SubscriptionChange":
            email = normalize_email(record.raw("Recipient"), "$.Recipient")
            occurred = parse_time(record.raw("ChangedAt"), "$.ChangedAt")
            suppress = record.flag("SuppressSending")
            reason = record.text("SuppressionReason")
            return Parsed(
                (
                    Observation(
                        provider=self.name,
                        kind=Kind.SUPPRESS if suppress else Kind.UNSUPPRESS,
                        email=email,
                        occurred_at=occurred,
                        provider_event_id=synthetic_id(
                            message_id, email, "subscription", occurred, str(suppress)
                        ),
                        provider_state=f"SubscriptionChange/{reason or 'Reactivated'}",
                        message_id=message_id,
                        campaign_id=tag,
                        suppression_reason=_SUPPRESSION_REASONS.get(
                            reason or "", "ManualSuppression"
                        )
                        if suppress
                        else "Reactivated",
                    ),
                )
            )
        email = normalize_email(record.raw("Email"), "$.Email")
        occurred = parse_time(record.raw("BouncedAt"), "$.BouncedAt")
        bounce_type = record.text("Type") or "Unknown"
        base: dict[str, Any] = {
            "provider": self.name,
            "email": email,
            "occurred_at": occurred,
            "provider_event_id": record.ident("ID")
            or synthetic_id(message_id, email, bounce_type, occurred),
            "message_id": message_id,
            "campaign_id": tag,
            "provider_state": bounce_type,
        }
        if record_type == "SpamComplaint" or bounce_type in {"SpamComplaint", "Unsubscribe"}:
            reason = "Unsubscribe" if bounce_type == "Unsubscribe" else "Complaint"
            return Parsed((Observation(kind=Kind.SUPPRESS, suppression_reason=reason, **base),))
        kind, fact, category, status = _TYPES.get(
            bounce_type,
            (Kind.FAILED, None, RecipientState.SOFT_BOUNCE_UNDETERMINED, Status.BLOCKED),
        )
        if kind is None:
            return Parsed((), 1)
        if record.flag("Inactive") and kind is Kind.FAILED:
            status = Status.BOUNCE
        return Parsed(
            (
                Observation(
                    kind=kind,
                    diagnostic=record.text("Details"),
                    fact_state=fact,
                    category_state=category,
                    provider_status=status,
                    held=bounce_type == "ChallengeVerification",
                    **base,
                ),
            )
        )

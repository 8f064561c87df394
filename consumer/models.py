"""Vocabularies and the immutable records that flow through the pipeline.

Everything that crosses a topic is a ``StrEnum`` so its JSON form is the exact
string of the published schema (schemas/*.v1.json; a contract test keeps both equal).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

__all__ = [
    "Classification",
    "ClassifiedBy",
    "DeadLetter",
    "Kind",
    "NormalizedEvent",
    "Observation",
    "Outcome",
    "RecipientState",
    "Scope",
    "SourceRef",
    "Status",
    "SuppressionAction",
    "SuppressionUpdate",
]

SCHEMA_VERSION = 1


class Status(StrEnum):
    """What happened to the address."""

    DELIVERED = "Delivered"
    BOUNCE = "Bounce"
    BLOCKED = "Blocked"
    DEFERRED = "Deferred"


class RecipientState(StrEnum):
    """Why it happened: Iterable's 19 bounce categories, spelled exactly as Iterable does."""

    DNS_FAILURE = "DNSFailure"
    HARD_BOUNCE = "HardBounce"
    MAIL_BLOCK_ATTACHMENT_DETECTED = "MailBlockAttachmentDetected"
    MAIL_BLOCK_GENERAL = "MailBlockGeneral"
    MAIL_BLOCK_KNOWN_SPAMMER = "MailBlockKnownSpammer"
    MAIL_BLOCK_RELAY_DENIED = "MailBlockRelayDenied"
    MAIL_BLOCK_SPAM_DETECTED = "MailBlockSpamDetected"
    SOFT_BOUNCE_ATTACHMENT_REJECTED = "SoftBounceAttachmentRejected"
    SOFT_BOUNCE_AUTO_REPLY = "SoftBounceAutoReply"
    SOFT_BOUNCE_CONTENT_REJECTED = "SoftBounceContentRejected"
    SOFT_BOUNCE_DNS_FAILURE = "SoftBounceDnsFailure"
    SOFT_BOUNCE_GENERAL = "SoftBounceGeneral"
    SOFT_BOUNCE_MAILBOX_FULL = "SoftBounceMailboxFull"
    SOFT_BOUNCE_MESSAGE_TOO_LARGE = "SoftBounceMessageTooLarge"
    SOFT_BOUNCE_SPAM_DETECTED = "SoftBounceSpamDetected"
    SOFT_BOUNCE_TIMEOUT = "SoftBounceTimeout"
    SOFT_BOUNCE_UNDETERMINED = "SoftBounceUndetermined"
    SUPPRESSED = "Suppressed"
    UNHANDLED_STATE = "UnhandledState"


class ClassifiedBy(StrEnum):
    """Which step of the evidence order decided the recipientState."""

    PROVIDER = "provider"
    RULE = "rule"
    ENHANCED_CODE = "enhancedCode"
    REPLY_CODE = "replyCode"
    FALLBACK = "fallback"


class Kind(StrEnum):
    """The phase of one recipient event, as the provider reports it.

    ``DEFERRED`` means the sender is still retrying; ``FAILED`` means it gave up (or never
    tried).  ``SUPPRESS``/``UNSUPPRESS`` are list changes (complaints, unsubscribes,
    reactivations) that produce a suppression update and no delivery event.
    """

    DELIVERED = "delivered"
    DEFERRED = "deferred"
    FAILED = "failed"
    SUPPRESS = "suppress"
    UNSUPPRESS = "unsuppress"


class SuppressionAction(StrEnum):
    SUPPRESS = "suppress"
    UNSUPPRESS = "unsuppress"


@dataclass(frozen=True, slots=True)
class Scope:
    """Limits a suppression to one list (a SendGrid unsubscribe group, a SES topic...)."""

    kind: str
    id: str


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where the raw record came from (a Kafka coordinate), copied into every output."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Observation:
    """One recipient event as a provider parser read it, before classification.

    Provider parsers put what the payload *says* here, and nothing they infer beyond
    their own format's documented semantics.
    """

    provider: str
    kind: Kind
    email: str
    occurred_at: str
    provider_event_id: str
    provider_state: str | None = None
    message_id: str | None = None
    campaign_id: str | None = None
    template_id: str | None = None
    diagnostic: str | None = None
    remote_mta: str | None = None
    smtp_code: int | None = None
    enhanced_code: str | None = None
    #: Step 1 of the evidence order: a definitive provider fact (a suppression-list
    #: drop, an auto-reply, a virus reject).  Beats every text rule.
    fact_state: RecipientState | None = None
    #: Step 4: the provider's own category, used when text and specific codes say nothing.
    category_state: RecipientState | None = None
    #: The provider's suppression semantics: Bounce if it suppressed the address,
    #: Blocked if it explicitly did not; ``None`` lets the policy table decide.
    provider_status: Status | None = None
    #: The message is held for a challenge-response answer (a deferral, not a delivery).
    held: bool = False
    #: For SUPPRESS/UNSUPPRESS observations: the reason and optional list scope.
    suppression_reason: str | None = None
    scope: Scope | None = None


@dataclass(frozen=True, slots=True)
class Classification:
    status: Status
    recipient_state: RecipientState | None
    classified_by: ClassifiedBy
    rule_id: str | None
    smtp_code: int | None
    enhanced_code: str | None
    #: The evidence chain, most decisive first; shown by ``bounce-consumer explain``.
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NormalizedEvent:
    event_id: str
    provider: str
    provider_event_id: str
    occurred_at: str
    email: str
    domain: str
    mailbox_provider: str
    message_id: str | None
    campaign_id: str | None
    template_id: str | None
    status: Status
    recipient_state: RecipientState | None
    provider_state: str | None
    smtp_code: int | None
    enhanced_code: str | None
    diagnostic: str | None
    remote_mta: str | None
    classified_by: ClassifiedBy
    rule_id: str | None
    source: SourceRef | None = None

    def to_json(self) -> dict[str, Any]:
        """The published JSON form (schemas/normalized-event.v1.json)."""
        return {
            "eventId": self.event_id,
            "schemaVersion": SCHEMA_VERSION,
            "provider": self.provider,
            "providerEventId": self.provider_event_id,
            "occurredAt": self.occurred_at,
            "email": self.email,
            "domain": self.domain,
            "mailboxProvider": self.mailbox_provider,
            "messageId": self.message_id,
            "campaignId": self.campaign_id,
            "templateId": self.template_id,
            "status": self.status.value,
            "recipientState": None if self.recipient_state is None else self.recipient_state.value,
            "providerState": self.provider_state,
            "smtpCode": self.smtp_code,
            "enhancedCode": self.enhanced_code,
            "diagnostic": self.diagnostic,
            "remoteMta": self.remote_mta,
            "classifiedBy": self.classified_by.value,
            "ruleId": self.rule_id,
            "source": _source_json(self.source),
        }


@dataclass(frozen=True, slots=True)
class SuppressionUpdate:
    event_id: str
    provider: str
    email: str
    action: SuppressionAction
    reason: str
    occurred_at: str
    policy_version: str
    needs_review: bool = False
    scope: Scope | None = None
    source: SourceRef | None = None
    #: Bounded group of the address's mailbox provider: complaint rates per provider.
    mailbox_provider: str = "other"

    def to_json(self) -> dict[str, Any]:
        """The published JSON form (schemas/suppression-update.v1.json)."""
        return {
            "eventId": self.event_id,
            "schemaVersion": SCHEMA_VERSION,
            "provider": self.provider,
            "email": self.email,
            "mailboxProvider": self.mailbox_provider,
            "action": self.action.value,
            "reason": self.reason,
            "needsReview": self.needs_review,
            "scope": None if self.scope is None else {"kind": self.scope.kind, "id": self.scope.id},
            "occurredAt": self.occurred_at,
            "policyVersion": self.policy_version,
            "source": _source_json(self.source),
        }


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why a record could not be processed.  Never carries the payload itself."""

    error_class: str
    kind: str
    reason: str
    payload_bytes: int
    line: int | None = None
    source: SourceRef | None = None

    def to_json(self) -> dict[str, Any]:
        """The published JSON form (schemas/dead-letter.v1.json)."""
        return {
            "schemaVersion": SCHEMA_VERSION,
            "errorClass": self.error_class,
            "errorKind": self.kind,
            "reason": self.reason,
            "payloadBytes": self.payload_bytes,
            "line": self.line,
            "source": _source_json(self.source),
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    """Everything one raw record produced: zero or more events and suppression updates.

    An empty outcome with ``ignored > 0`` is a record we recognised and chose to skip
    (opens, clicks, SNS subscription confirmations).
    """

    events: tuple[NormalizedEvent, ...] = ()
    suppressions: tuple[SuppressionUpdate, ...] = ()
    ignored: int = 0
    provider: str | None = None


def _source_json(source: SourceRef | None) -> dict[str, Any] | None:
    if source is None:
        return None
    return {"topic": source.topic, "partition": source.partition, "offset": source.offset}

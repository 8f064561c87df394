"""Amazon SES: SNS notifications (``notificationType``) and event publishing (``eventType``).

An SNS envelope carries the SES record as a JSON *string* in ``Message``; it is
unwrapped here.  ``SubscriptionConfirmation`` messages carry no events and are ignored.
SES publishes a ``Transient`` bounce only after it stopped retrying, so those are final.
"""

from __future__ import annotations

from typing import Any

import orjson

from consumer.errors import ParseError
from consumer.models import Kind, Observation, RecipientState, Scope, Status
from consumer.providers.base import Obj, Parsed, normalize_email, parse_time, synthetic_id

__all__ = ["Ses"]

_SNS_TYPES = frozenset({"Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"})
_IGNORED = frozenset({"Send", "Open", "Click", "Rendering Failure", "RenderingFailure"})

_BOUNCE_SUBTYPES = {
    "NoEmail": RecipientState.HARD_BOUNCE,
    "General": None,
    "Suppressed": RecipientState.SUPPRESSED,
    "OnAccountSuppressionList": RecipientState.SUPPRESSED,
    "OnTenantSuppressionList": RecipientState.SUPPRESSED,
    "EmailValidationSuppressed": RecipientState.SUPPRESSED,
    "UnsubscribedRecipient": RecipientState.SUPPRESSED,
    "MailboxFull": RecipientState.SOFT_BOUNCE_MAILBOX_FULL,
    "MessageTooLarge": RecipientState.SOFT_BOUNCE_MESSAGE_TOO_LARGE,
    "ContentRejected": RecipientState.SOFT_BOUNCE_CONTENT_REJECTED,
    "AttachmentRejected": RecipientState.SOFT_BOUNCE_ATTACHMENT_REJECTED,
    "CustomTimeoutExceeded": RecipientState.SOFT_BOUNCE_TIMEOUT,
    "Undetermined": RecipientState.SOFT_BOUNCE_UNDETERMINED,
}

_DELAY_TYPES = {
    "InternalFailure": RecipientState.SOFT_BOUNCE_GENERAL,
    "General": RecipientState.SOFT_BOUNCE_GENERAL,
    "MailboxFull": RecipientState.SOFT_BOUNCE_MAILBOX_FULL,
    "SpamDetected": RecipientState.SOFT_BOUNCE_SPAM_DETECTED,
    "RecipientServerError": RecipientState.SOFT_BOUNCE_GENERAL,
    "IPFailure": RecipientState.SOFT_BOUNCE_SPAM_DETECTED,
    "TransientCommunicationFailure": RecipientState.SOFT_BOUNCE_TIMEOUT,
    "BYOIPHostNameLookupUnavailable": RecipientState.SOFT_BOUNCE_DNS_FAILURE,
    "Undetermined": RecipientState.SOFT_BOUNCE_UNDETERMINED,
    "SendingDeferral": RecipientState.SOFT_BOUNCE_GENERAL,
}


def _is_sns(payload: Any) -> bool:
    return (
        isinstance(payload, dict)
        and isinstance(payload.get("Type"), str)
        and payload["Type"] in _SNS_TYPES
        and "TopicArn" in payload
        and "Message" in payload
    )


def _is_ses(payload: Any) -> bool:
    if not isinstance(payload, dict):
        return False
    mail = payload.get("mail")
    return (
        isinstance(mail, dict)
        and "messageId" in mail
        and ("notificationType" in payload or "eventType" in payload)
    )


def _is_eventbridge(payload: Any) -> bool:
    return isinstance(payload, dict) and payload.get("source") == "aws.ses" and "detail" in payload


class Ses:
    name = "ses"

    def matches(self, payload: Any) -> bool:
        return _is_sns(payload) or _is_ses(payload) or _is_eventbridge(payload)

    def parse(self, payload: Any, received_at: str) -> Parsed:
        root = Obj(payload, "$")
        if _is_sns(payload):
            if root.text("Type") != "Notification":
                return Parsed((), 1)
            message = root.req("Message")
            try:
                inner = orjson.loads(message)
            except orjson.JSONDecodeError as exc:
                raise ParseError(f"$.Message: not JSON ({exc})") from None
            root = Obj(inner, "$.Message")
        elif _is_eventbridge(payload):
            root = root.req_obj("detail")
        return self._record(root)

    def _record(self, record: Obj) -> Parsed:
        kind = record.text("eventType") or record.text("notificationType")
        if kind is None:
            raise ParseError(f"{record.path}: neither eventType nor notificationType")
        if kind in _IGNORED or kind == "AmazonSnsSubscriptionSucceeded":
            return Parsed((), 1)
        mail = record.req_obj("mail")
        message_id = mail.req("messageId")
        tags = mail.obj("tags")
        campaign = None
        if tags is not None:
            values = tags.array("campaign") or tags.array("campaignId")
            campaign = values[0] if values and isinstance(values[0], str) else None
        base: dict[str, Any] = {
            "provider": self.name,
            "message_id": message_id,
            "campaign_id": campaign,
        }
        if kind == "Bounce":
            return Parsed(self._bounces(record.req_obj("bounce"), base))
        if kind == "Delivery":
            return Parsed(self._deliveries(record.req_obj("delivery"), base))
        if kind == "DeliveryDelay":
            return Parsed(self._delays(record.req_obj("deliveryDelay"), base))
        if kind == "Complaint":
            return Parsed(self._complaints(record.req_obj("complaint"), base))
        if kind == "Reject":
            return Parsed(self._rejects(record.req_obj("reject"), mail, base))
        if kind == "Subscription":
            return Parsed(self._subscription(record.req_obj("subscription"), mail, base))
        raise ParseError(f"{record.path}: unknown SES event type {kind!r}")

    def _bounces(self, bounce: Obj, base: dict[str, Any]) -> tuple[Observation, ...]:
        bounce_type = bounce.text("bounceType") or "Undetermined"
        sub_type = bounce.text("bounceSubType") or "Undetermined"
        occurred = parse_time(bounce.raw("timestamp"), f"{bounce.path}.timestamp")
        feedback = bounce.ident("feedbackId")
        state = _BOUNCE_SUBTYPES.get(sub_type)
        suppressed_list = state is RecipientState.SUPPRESSED
        if state is None:
            state = {
                "Permanent": RecipientState.HARD_BOUNCE,
                "Transient": RecipientState.SOFT_BOUNCE_GENERAL,
            }.get(bounce_type, RecipientState.SOFT_BOUNCE_UNDETERMINED)
        status = Status.BOUNCE if bounce_type == "Permanent" else Status.BLOCKED
        remote = bounce.text("remoteMtaIp") or bounce.text("reportingMTA")
        out = []
        recipients = bounce.array("bouncedRecipients")
        if not recipients:
            raise ParseError(f"{bounce.path}.bouncedRecipients: no recipient")
        for index, item in enumerate(recipients):
            rcpt = Obj(item, f"{bounce.path}.bouncedRecipients[{index}]")
            email = normalize_email(rcpt.raw("emailAddress"), f"{rcpt.path}.emailAddress")
            out.append(
                Observation(
                    kind=Kind.FAILED,
                    email=email,
                    occurred_at=occurred,
                    provider_event_id=f"{feedback}:{email}"
                    if feedback
                    else synthetic_id(base["message_id"], email, "bounce", occurred),
                    provider_state=f"{bounce_type}/{sub_type}",
                    diagnostic=rcpt.text("diagnosticCode"),
                    enhanced_code=rcpt.text("status"),
                    remote_mta=remote,
                    fact_state=RecipientState.SUPPRESSED if suppressed_list else None,
                    category_state=None if suppressed_list else state,
                    provider_status=status,
                    **base,
                )
            )
        return tuple(out)

    def _deliveries(self, delivery: Obj, base: dict[str, Any]) -> tuple[Observation, ...]:
        occurred = parse_time(delivery.raw("timestamp"), f"{delivery.path}.timestamp")
        out = []
        for index, item in enumerate(delivery.array("recipients")):
            email = normalize_email(item, f"{delivery.path}.recipients[{index}]")
            out.append(
                Observation(
                    kind=Kind.DELIVERED,
                    email=email,
                    occurred_at=occurred,
                    provider_event_id=synthetic_id(base["message_id"], email, "delivery", occurred),
                    provider_state="Delivery",
                    diagnostic=delivery.text("smtpResponse"),
                    remote_mta=delivery.text("remoteMtaIp"),
                    **base,
                )
            )
        if not out:
            raise ParseError(f"{delivery.path}.recipients: no recipient")
        return tuple(out)

    def _delays(self, delay: Obj, base: dict[str, Any]) -> tuple[Observation, ...]:
        occurred = parse_time(delay.raw("timestamp"), f"{delay.path}.timestamp")
        delay_type = delay.text("delayType") or "Undetermined"
        out = []
        for index, item in enumerate(delay.array("delayedRecipients")):
            rcpt = Obj(item, f"{delay.path}.delayedRecipients[{index}]")
            email = normalize_email(rcpt.raw("emailAddress"), f"{rcpt.path}.emailAddress")
            out.append(
                Observation(
                    kind=Kind.DEFERRED,
                    email=email,
                    occurred_at=occurred,
                    provider_event_id=synthetic_id(base["message_id"], email, "delay", occurred),
                    provider_state=f"DeliveryDelay/{delay_type}",
                    diagnostic=rcpt.text("diagnosticCode"),
                    enhanced_code=rcpt.text("status"),
                    remote_mta=delay.text("reportingMTA"),
                    category_state=_DELAY_TYPES.get(delay_type),
                    **base,
                )
            )
        if not out:
            raise ParseError(f"{delay.path}.delayedRecipients: no recipient")
        return tuple(out)

    def _complaints(self, complaint: Obj, base: dict[str, Any]) -> tuple[Observation, ...]:
        occurred = parse_time(complaint.raw("timestamp"), f"{complaint.path}.timestamp")
        feedback = complaint.ident("feedbackId")
        sub_type = complaint.text("complaintSubType")
        out = []
        for index, item in enumerate(complaint.array("complainedRecipients")):
            rcpt = Obj(item, f"{complaint.path}.complainedRecipients[{index}]")
            email = normalize_email(rcpt.raw("emailAddress"), f"{rcpt.path}.emailAddress")
            event_id = (
                f"{feedback}:{email}"
                if feedback
                else synthetic_id(base["message_id"], email, "complaint", occurred)
            )
            if sub_type == "OnAccountSuppressionList":
                out.append(
                    Observation(
                        kind=Kind.FAILED,
                        email=email,
                        occurred_at=occurred,
                        provider_event_id=event_id,
                        provider_state="Complaint/OnAccountSuppressionList",
                        fact_state=RecipientState.SUPPRESSED,
                        provider_status=Status.BOUNCE,
                        **base,
                    )
                )
            else:
                feedback_type = complaint.text("complaintFeedbackType") or "abuse"
                out.append(
                    Observation(
                        kind=Kind.SUPPRESS,
                        email=email,
                        occurred_at=occurred,
                        provider_event_id=event_id,
                        provider_state=f"Complaint/{feedback_type}",
                        suppression_reason="Complaint",
                        **base,
                    )
                )
        if not out:
            raise ParseError(f"{complaint.path}.complainedRecipients: no recipient")
        return tuple(out)

    def _rejects(self, reject: Obj, mail: Obj, base: dict[str, Any]) -> tuple[Observation, ...]:
        occurred = parse_time(mail.raw("timestamp"), f"{mail.path}.timestamp")
        reason = reject.text("reason") or "Bad content"
        out = []
        for index, item in enumerate(mail.array("destination")):
            email = normalize_email(item, f"{mail.path}.destination[{index}]")
            out.append(
                Observation(
                    kind=Kind.FAILED,
                    email=email,
                    occurred_at=occurred,
                    provider_event_id=synthetic_id(base["message_id"], email, "reject"),
                    provider_state=f"Reject/{reason}",
                    diagnostic=None,
                    fact_state=RecipientState.MAIL_BLOCK_ATTACHMENT_DETECTED,
                    provider_status=Status.BLOCKED,
                    **base,
                )
            )
        if not out:
            raise ParseError(f"{mail.path}.destination: no recipient")
        return tuple(out)

    def _subscription(self, sub: Obj, mail: Obj, base: dict[str, Any]) -> tuple[Observation, ...]:
        """Unsubscribes are scoped to the contact list, or to the topics newly opted out."""
        occurred = parse_time(sub.raw("timestamp"), f"{sub.path}.timestamp")
        contact_list = sub.text("contactList") or "default"
        new = sub.obj("newTopicPreferences")
        old = sub.obj("oldTopicPreferences")
        scopes: list[Scope] = []
        if new is not None and new.flag("unsubscribeAll"):
            scopes.append(Scope("contactList", contact_list))
        elif new is not None:
            before = {}
            if old is not None:
                for item in old.array("topicSubscriptionStatus"):
                    topic = Obj(item, f"{old.path}.topicSubscriptionStatus")
                    before[topic.text("topicName")] = topic.text("subscriptionStatus")
            for item in new.array("topicSubscriptionStatus"):
                topic = Obj(item, f"{new.path}.topicSubscriptionStatus")
                name = topic.text("topicName")
                if topic.text("subscriptionStatus") == "OptOut" and before.get(name) != "OptOut":
                    scopes.append(Scope("topic", f"{contact_list}/{name}"))
        out = []
        for index, item in enumerate(mail.array("destination")):
            email = normalize_email(item, f"{mail.path}.destination[{index}]")
            for scope in scopes:
                out.append(
                    Observation(
                        kind=Kind.SUPPRESS,
                        email=email,
                        occurred_at=occurred,
                        provider_event_id=synthetic_id(
                            base["message_id"], email, "subscription", occurred, scope.id
                        ),
                        provider_state=f"Subscription/{scope.kind}",
                        suppression_reason="Unsubscribe",
                        scope=scope,
                        **base,
                    )
                )
        return tuple(out)

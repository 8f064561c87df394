"""Generic MTA delivery status (RFC 3464 fields as JSON), in two shapes.

* flat, camelCase, one recipient: ``finalRecipient`` + ``action`` (+ ``status``,
  ``diagnosticCode``, ``remoteMta``, ``lastAttemptDate``, ``reportingMta``, ``messageId``);
* the header-name shape of delivery-events.md 2.8: ``per-message`` and a
  ``per-recipient`` array with ``Final-Recipient``, ``Action``, ``Status`` ...

MTAs have no suppression semantics: the policy table decides Bounce or Blocked.
"""

from __future__ import annotations

from typing import Any

from consumer.errors import ParseError
from consumer.models import Kind, Observation
from consumer.providers.base import Obj, Parsed, normalize_email, parse_time, synthetic_id

__all__ = ["Dsn"]

_ACTIONS = {
    "failed": Kind.FAILED,
    "delayed": Kind.DEFERRED,
    "delivered": Kind.DELIVERED,
    "relayed": Kind.DELIVERED,
    "expanded": Kind.DELIVERED,
}

_FLAT = {
    "recipient": "finalRecipient",
    "original": "originalRecipient",
    "action": "action",
    "status": "status",
    "diagnostic": "diagnosticCode",
    "remote": "remoteMta",
    "date": "lastAttemptDate",
    "reporting": "reportingMta",
    "message": "messageId",
    "log": "finalLogId",
}
_HEADERS = {
    "recipient": "Final-Recipient",
    "original": "Original-Recipient",
    "action": "Action",
    "status": "Status",
    "diagnostic": "Diagnostic-Code",
    "remote": "Remote-MTA",
    "date": "Last-Attempt-Date",
    "reporting": "Reporting-MTA",
    "message": "Message-ID",
    "log": "Final-Log-ID",
}


def _strip_type(value: str | None) -> str | None:
    """``dns; mx.example.net`` -> ``mx.example.net`` (RFC 3464 typed fields)."""
    if value is None:
        return None
    head, sep, tail = value.partition(";")
    return tail.strip() if sep and len(head) < 16 else value.strip()


class Dsn:
    name = "dsn"

    def matches(self, payload: Any) -> bool:
        if not isinstance(payload, dict):
            return False
        if "finalRecipient" in payload and "action" in payload:
            return True
        recipients = payload.get("per-recipient")
        return (
            isinstance(recipients, list)
            and bool(recipients)
            and all(
                isinstance(r, dict) and "Final-Recipient" in r and "Action" in r for r in recipients
            )
        )

    def parse(self, payload: Any, received_at: str) -> Parsed:
        root = Obj(payload, "$")
        if "finalRecipient" in payload:
            return Parsed(
                (
                    self._one(
                        root, _FLAT, root.text("reportingMta"), root.text("messageId"), received_at
                    ),
                )
            )
        per_message = root.obj("per-message")
        reporting = per_message.text("Reporting-MTA") if per_message else None
        message_id = root.text("original-message-id")
        out = []
        for index, item in enumerate(root.array("per-recipient")):
            out.append(
                self._one(
                    Obj(item, f"$.per-recipient[{index}]"),
                    _HEADERS,
                    reporting,
                    message_id,
                    received_at,
                )
            )
        return Parsed(tuple(out))

    def _one(
        self,
        fields: Obj,
        names: dict[str, str],
        reporting: str | None,
        message_id: str | None,
        received_at: str,
    ) -> Observation:
        action_text = fields.req(names["action"]).strip().lower()
        kind = _ACTIONS.get(action_text)
        if kind is None:
            raise ParseError(f"{fields.path}.{names['action']}: unknown DSN action {action_text!r}")
        email = normalize_email(
            fields.raw(names["recipient"]), f"{fields.path}.{names['recipient']}"
        )
        date = fields.raw(names["date"])
        occurred = parse_time(date, f"{fields.path}.{names['date']}") if date else received_at
        diagnostic = fields.text(names["diagnostic"])
        event_id = fields.ident(names["log"])
        return Observation(
            provider=self.name,
            kind=kind,
            email=email,
            occurred_at=occurred,
            provider_event_id=f"{reporting}:{event_id}:{email}"
            if event_id
            else synthetic_id(reporting, message_id, email, action_text, str(date), diagnostic),
            provider_state=action_text,
            message_id=message_id or fields.text(names["message"]),
            diagnostic=diagnostic,
            enhanced_code=fields.text(names["status"]),
            remote_mta=_strip_type(fields.text(names["remote"])),
        )

"""What every provider parser shares: typed field access, addresses, times, ids.

Raw JSON stays inside ``providers/``.  Every access goes through ``Obj``, which
raises a ``ParseError`` naming the JSON path and what was wrong, so a payload of the
right provider but the wrong shape becomes one clear dead letter.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from consumer.errors import ParseError
from consumer.models import Observation

__all__ = [
    "Obj",
    "Parsed",
    "Provider",
    "as_obj",
    "format_time",
    "normalize_email",
    "parse_time",
    "synthetic_id",
]

#: Longest text field we keep; longer diagnostics are cut (classification reads far less).
MAX_TEXT = 8192


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parser's result: the recipient events, and how many events it skipped on purpose."""

    observations: tuple[Observation, ...]
    ignored: int = 0


class Provider(Protocol):
    """One input format.  ``matches`` looks at the shape only; ``parse`` reads it."""

    name: str

    def matches(self, payload: Any) -> bool: ...

    def parse(self, payload: Any, received_at: str) -> Parsed: ...


def _type_name(value: Any) -> str:
    return {
        dict: "object",
        list: "array",
        str: "string",
        bool: "boolean",
        int: "number",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


class Obj:
    """A JSON object with typed, path-aware accessors."""

    __slots__ = ("data", "path")

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise ParseError(f"{path}: expected an object, got {_type_name(data)}")
        self.data: dict[str, Any] = data
        self.path = path

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str) -> Any:
        return self.data.get(key)

    def text(self, key: str) -> str | None:
        """A string field; ``None`` when absent or null; an error for any other type."""
        value = self.data.get(key)
        if value is None or isinstance(value, str):
            return value[:MAX_TEXT] if value is not None else None
        raise ParseError(f"{self.path}.{key}: expected a string, got {_type_name(value)}")

    def req(self, key: str) -> str:
        value = self.text(key)
        if value is None or not value.strip():
            raise ParseError(f"{self.path}.{key}: missing")
        return value

    def ident(self, key: str) -> str | None:
        """An identifier that providers send as a string or a number."""
        value = self.data.get(key)
        if value is None or isinstance(value, str):
            return value[:256] if value else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise ParseError(f"{self.path}.{key}: expected a string or number, got {_type_name(value)}")

    def integer(self, key: str) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool):
            raise ParseError(f"{self.path}.{key}: expected a number, got boolean")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and value.strip().isdigit() and len(value) < 12:
            return int(value)
        raise ParseError(f"{self.path}.{key}: expected an integer, got {_type_name(value)}")

    def flag(self, key: str) -> bool | None:
        value = self.data.get(key)
        if value is None or isinstance(value, bool):
            return value
        raise ParseError(f"{self.path}.{key}: expected true or false, got {_type_name(value)}")

    def obj(self, key: str) -> Obj | None:
        value = self.data.get(key)
        return None if value is None else Obj(value, f"{self.path}.{key}")

    def req_obj(self, key: str) -> Obj:
        value = self.obj(key)
        if value is None:
            raise ParseError(f"{self.path}.{key}: missing")
        return value

    def array(self, key: str) -> list[Any]:
        value = self.data.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ParseError(f"{self.path}.{key}: expected an array, got {_type_name(value)}")
        return value


def as_obj(value: Any, path: str) -> Obj:
    return Obj(value, path)


_ADDRESS = re.compile(
    r"[^\s<>()\[\],;:\\\"@\x00-\x1f\x7f]{1,64}"
    r"@(?:[0-9a-z_\u00a0-\uffff](?:[0-9a-z_\u00a0-\uffff-]{0,61}[0-9a-z_\u00a0-\uffff])?\.)+"
    r"[a-z\u00a0-\uffff][0-9a-z\u00a0-\uffff-]{0,62}"
)


def normalize_email(value: Any, path: str) -> str:
    """Trim, drop an RFC 3464 type prefix and angle brackets, lower-case, validate.

    The whole address is lower-cased: every large mailbox provider and ESP treats local
    parts case-insensitively, and suppression keys must not split on case.
    """
    if not isinstance(value, str):
        raise ParseError(f"{path}: expected an email address, got {_type_name(value)}")
    text = value.strip()
    if ";" in text[:12]:
        text = text.split(";", 1)[1].strip()
    text = text.strip("<>").strip().lower()
    if len(text) > 254 or _ADDRESS.fullmatch(text) is None:
        raise ParseError(f"{path}: not a valid email address ({len(value)} characters)")
    return text


_MIN_TS, _MAX_TS = 946_684_800, 4_102_444_800  # 2000-01-01 .. 2100-01-01


def format_time(moment: datetime) -> str:
    """RFC 3339, UTC, milliseconds: the one time format of every output.

    ``isoformat`` is C code; ``strftime`` cost as much as classifying a text.
    """
    if moment.utcoffset():
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds")[:23] + "Z"


# The RFC 5322 date as MTAs write it ("Fri, 14 Mar 2025 09:12:05 +0000"); anything
# else (obsolete zones, missing seconds, comments) goes through ``email.utils``.
_RFC5322 = re.compile(
    r"(?:[A-Za-z]{3},\s*)?(\d{1,2})\s+([A-Za-z]{3})\s+(\d{4})\s+"
    r"(\d{2}):(\d{2}):(\d{2})\s+([+-])(\d{2})(\d{2})(?:\s+\([^()]*\))?"
)
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}


def _parse_rfc5322(text: str) -> datetime:
    found = _RFC5322.fullmatch(text)
    month = _MONTHS.get(found.group(2).lower()) if found else None
    if found is None or month is None:
        return parsedate_to_datetime(text)
    day, _, year, hour, minute, second, sign, off_h, off_m = found.groups()
    offset = timedelta(hours=int(off_h), minutes=int(off_m))
    zone = timezone(-offset if sign == "-" else offset) if offset else UTC
    return datetime(
        int(year), month, int(day), int(hour), int(minute), int(second), tzinfo=zone
    )


def parse_time(value: Any, path: str) -> str:
    """Unix seconds (number or digits), ISO 8601 or RFC 5322, to RFC 3339 UTC with ms."""
    if isinstance(value, bool):
        raise ParseError(f"{path}: expected a time, got boolean")
    if isinstance(value, str):
        text = value.strip()
        if text.replace(".", "", 1).isdigit():
            value = float(text)
        else:
            return format_time(_parse_text_time(text, path))
    if isinstance(value, int | float):
        seconds = float(value)
        if seconds > _MAX_TS * 100:  # milliseconds (Iterable campaign times)
            seconds /= 1000
        if not _MIN_TS <= seconds <= _MAX_TS:
            raise ParseError(f"{path}: timestamp {value} is out of range")
        return format_time(datetime.fromtimestamp(seconds, UTC))
    raise ParseError(f"{path}: expected a time, got {_type_name(value)}")


def _parse_text_time(text: str, path: str) -> datetime:
    if len(text) > 64:
        raise ParseError(f"{path}: not a time (too long)")
    if text[:4].isdigit():
        iso = text.replace(" +", "+").replace(" -", "-").replace("Z", "+00:00")
        if "." in iso:
            # Postmark sends 7 fraction digits; Python reads at most 6.
            head, _, rest = iso.partition(".")
            digits = len(rest) - len(rest.lstrip("0123456789"))
            iso = head + "." + rest[: min(digits, 6)] + rest[digits:]
        try:
            moment = datetime.fromisoformat(iso)
        except ValueError:
            raise ParseError(f"{path}: not an ISO 8601 time: {text!r}") from None
    else:
        try:
            moment = _parse_rfc5322(text)
        except (TypeError, ValueError, IndexError):
            raise ParseError(f"{path}: not an RFC 5322 date: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if not _MIN_TS <= moment.timestamp() <= _MAX_TS:
        raise ParseError(f"{path}: time {text!r} is out of range")
    return moment


def synthetic_id(*parts: str | None) -> str:
    """A stable id for events whose provider gives none (same parts, same id)."""
    joined = "\x1f".join(part or "" for part in parts)
    return "syn-" + hashlib.blake2b(joined.encode("utf-8", "replace"), digest_size=12).hexdigest()

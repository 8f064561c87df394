"""Extract the SMTP reply code (RFC 5321) and enhanced status code (RFC 3463) from text.

Both searches run on a bounded prefix with linear-time patterns, so a diagnostic of
megabytes costs the same as a short one.  Four-part Yahoo numbers (``4.16.55.1``)
and IP addresses are not mistaken for enhanced codes: the subject must be 0 to 7 and
the code may not continue with another ``.digit``.
"""

from __future__ import annotations

import re

__all__ = ["SCAN_LIMIT", "enhanced_code", "is_real_reply_code", "reply_code"]

#: How much of a diagnostic we read when looking for codes.  Real replies put the
#: code in the first line; multi-line replies repeat it on every line.
SCAN_LIMIT = 1024

_REPLY = re.compile(r"(?:^|[:'\"(\[=]\s*|\bsaid\s+)([245]\d\d)(?=[\s-]|$)", re.IGNORECASE)
_ENHANCED = re.compile(r"(?<![\d.])([245])\.([0-7])\.(\d{1,3})(?!\.?\d)")
_PREFIX = re.compile(r"\s*(?:smtp|x-[\w-]+)\s*;\s*", re.IGNORECASE)


def reply_code(text: str) -> int | None:
    """The basic reply code the remote server answered with, if the text has one."""
    head = text[:SCAN_LIMIT]
    prefix = _PREFIX.match(head)
    if prefix is not None:
        head = head[prefix.end() :]
    # Fast path: nearly every diagnostic starts with the code ("550 5.1.1 ...").
    if len(head) >= 3 and head[:3].isdigit() and head[0] in "245":
        if len(head) == 3 or head[3] in " -\t":
            return int(head[:3])
    match = _REPLY.search(head)
    return int(match.group(1)) if match else None


def enhanced_code(text: str) -> str | None:
    """The first RFC 3463 ``class.subject.detail`` code in the text, if any."""
    match = _ENHANCED.search(text, 0, SCAN_LIMIT)
    if match is None:
        return None
    return f"{match.group(1)}.{match.group(2)}.{int(match.group(3))}"


def is_real_reply_code(code: int) -> bool:
    """True for codes an SMTP server can send (2xx to 5xx), not ESP pseudo-codes like 605."""
    return 200 <= code <= 599

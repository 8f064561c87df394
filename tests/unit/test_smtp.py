"""Reply and enhanced code extraction from real texts."""

from __future__ import annotations

import pytest

from consumer.smtp import enhanced_code, reply_code


@pytest.mark.parametrize(
    ("text", "reply", "enhanced"),
    [
        ("smtp; 550 5.1.1 <a@example.net>: Recipient address rejected", 550, "5.1.1"),
        ("550-5.1.1 The email account that you tried to reach does not exist", 550, "5.1.1"),
        ("421 4.7.0 [TSS04] Messages temporarily deferred - 4.16.55.1", 421, "4.7.0"),
        ("451 Resources temporarily unavailable. Please try again later [#4.16.1].", 451, None),
        ("X-Postfix; host mx.example.net[203.0.113.1] said: 552 5.2.2 Mailbox full", 552, "5.2.2"),
        ("Remote Server returned '550 5.1.10 RESOLVER.ADR.RecipientNotFound'", 550, "5.1.10"),
        ("Connection timed out after 250 seconds", None, None),
        ("Sorry, no mailbox here by that name. (#5.1.1)", None, "5.1.1"),
        ("421 5.7.32 DMARC alignment missing", 421, "5.7.32"),
        ("554 IP=203.0.113.7 - A problem occurred. (BL)", 554, None),
    ],
)
def test_codes(text: str, reply: int | None, enhanced: str | None) -> None:
    """The server's codes are found; Yahoo internal numbers and IPs are not codes."""
    assert reply_code(text) == reply
    assert enhanced_code(text) == enhanced

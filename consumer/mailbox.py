"""Name the mailbox provider behind a recipient, as one of a small bounded set.

The group is a metric label and a rule narrowing, so it must never be a free-form
domain.  Evidence, most reliable first (mailbox-provider-messages.md 1.2): tokens in
the diagnostic (``gsmtp``, ``protection.outlook.com``...), which survive forwarding
and reveal business domains hosted at Google or Microsoft; the remote MTA host; the
recipient's consumer domain.
"""

from __future__ import annotations

from consumer.rules import Rules
from consumer.textmatch import TokenText

__all__ = ["mailbox_provider"]


def _host_group(rules: Rules, host: str) -> str | None:
    """The group of the longest listed suffix of ``host`` (whole labels only)."""
    labels = host.lower().rstrip(".").split(".")
    for start in range(len(labels) - 1):
        group = rules.mailbox_hosts.get(".".join(labels[start:]))
        if group is not None:
            return group
    return None


def _mta_host(remote_mta: str) -> str:
    """``dns; mx.example.com (192.0.2.1)`` -> ``mx.example.com``; "" when it names none
    (``dns;`` and other empty forms occur in real reports and in forged ones)."""
    words = remote_mta.split(";", 1)[-1].split()
    return words[0].strip("[]") if words else ""


def _domain_group(rules: Rules, domain: str) -> str | None:
    group = rules.mailbox_domains.get(domain)
    if group is not None:
        return group
    # Country variants (hotmail.co.uk, yahoo.fr, gmx.at) are listed by their stem; only
    # a public suffix may follow it, so live.example.org is not Microsoft.
    stem, _, rest = domain.partition(".")
    if rest and all(label.isalpha() and len(label) <= 3 for label in rest.split(".")):
        return rules.mailbox_domains.get(stem + ".*")
    return None


def mailbox_provider(
    rules: Rules, domain: str, remote_mta: str | None, diagnostic: TokenText | None
) -> str:
    """The bounded group for this recipient; ``other`` when nothing identifies one."""
    group = _domain_group(rules, domain)
    if group is not None:
        return group
    if remote_mta:
        host = _mta_host(remote_mta)
        group = _host_group(rules, host) if host else None
        if group is not None:
            return group
    if diagnostic is not None:
        found = rules.mailbox_tokens.numbers_in(diagnostic)
        if found:
            return rules.mailbox_token_groups[min(found)]
    return "other"

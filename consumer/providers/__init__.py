"""Provider formats and their detection order (delivery-events.md section 1).

The order matters only where shapes could overlap: SNS/SES first (an envelope carries
other JSON as a string), generic DSN last (its keys are the most generic).  An
explicit provider name (Kafka header ``provider``, CLI ``--provider``) skips detection.
"""

from __future__ import annotations

from typing import Any

from consumer.errors import UnknownProviderError
from consumer.providers.base import Parsed, Provider
from consumer.providers.dsn import Dsn
from consumer.providers.iterable import Iterable
from consumer.providers.mailgun import Mailgun
from consumer.providers.okta import Okta
from consumer.providers.postmark import Postmark
from consumer.providers.sendgrid import SendGrid
from consumer.providers.ses import Ses
from consumer.providers.sparkpost import SparkPost

__all__ = ["BY_NAME", "ORDER", "Parsed", "Provider", "detect"]

ORDER: tuple[Provider, ...] = (
    Ses(),
    Mailgun(),
    SparkPost(),
    SendGrid(),
    Postmark(),
    Iterable(),
    Okta(),
    Dsn(),
)
BY_NAME: dict[str, Provider] = {provider.name: provider for provider in ORDER}


def detect(payload: Any, explicit: str | None = None) -> Provider:
    """The provider whose format this payload has; an explicit name wins."""
    if explicit:
        provider = BY_NAME.get(explicit.strip().lower())
        if provider is None:
            raise UnknownProviderError(
                f"unknown provider {explicit!r}; known: {', '.join(sorted(BY_NAME))}"
            )
        return provider
    for provider in ORDER:
        if provider.matches(payload):
            return provider
    if isinstance(payload, dict):
        keys = ", ".join(sorted(str(k) for k in payload)[:8])
        raise UnknownProviderError(f"no known provider format has this shape (keys: {keys})")
    if isinstance(payload, list):
        raise UnknownProviderError(
            f"an array of {len(payload)} items that is neither a SendGrid, SparkPost nor Okta batch"
        )
    raise UnknownProviderError(f"a JSON {type(payload).__name__} is not a delivery event")

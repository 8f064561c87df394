"""Error hierarchy.

Two kinds of failure, handled differently (DESIGN section 8): a ``PayloadError`` is
bad input and sends the record to the dead-letter output while processing goes on;
anything else is a bug or an infrastructure fault and stops the process.
"""

__all__ = [
    "ConfigError",
    "ConsumerError",
    "DecodeError",
    "ParseError",
    "PayloadError",
    "RulesError",
    "UnknownProviderError",
]


class ConsumerError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(ConsumerError):
    """A setting is missing or invalid; raised at start-up, naming the setting."""


class RulesError(ConsumerError):
    """The rule data files are inconsistent; the process refuses to start."""


class PayloadError(ConsumerError):
    """The record cannot be processed; it goes to the dead-letter output."""

    dead_letter = True
    #: Short machine-readable reason family, used as a metric label and DLQ header.
    kind = "payload"


class DecodeError(PayloadError):
    """The bytes are not a JSON document we accept (encoding, syntax, size, depth)."""

    kind = "decode"


class UnknownProviderError(PayloadError):
    """Valid JSON, but no known provider format matches its shape."""

    kind = "unknown_provider"


class ParseError(PayloadError):
    """The provider is known but a field is missing, of the wrong type or malformed."""

    kind = "parse"

"""Structured logging: one JSON object per line, and no email address in clear.

Logs leave the process (collectors, search indexes, support tickets) and live longer
than the data they describe, so recipient addresses are personal data we must not copy
there.  Code is expected to log ``email_hash(address)`` instead of the address; the
``redact_emails`` processor is the safety net for the places that forget (an SMTP
diagnostic quoting ``<user@example.net>``, an exception message, a bound context value).

Lines are rendered with orjson because the worker logs from the event loop and the
stdlib ``json`` module is several times slower on the same dicts.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from typing import Any, TextIO

import orjson
import structlog

from consumer.errors import ConfigError

__all__ = ["LEVELS", "configure", "email_hash", "redact_emails"]

#: Accepted values of LOG_LEVEL, lowest first.
LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}

# Not a validator: wide enough to catch what providers and MTAs write, including
# non-ASCII local parts and domains (\w is Unicode-aware) and dotless domains, since
# hashing a false positive is harmless and missing an address is not.  Every repetition
# is capped and the classes around each separator are disjoint, so there is no
# backtracking blow-up on hostile input.
_EMAIL = re.compile(r"[\w.%+'=-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){0,8}")

# Fixed, public personalisation: it separates these tokens from any other blake2b use
# of the same addresses (for instance the output ids), it is not a secret key.
_PERSON = b"bounce-log-v1"

# How far into nested lists and dicts the safety net looks.  Log values are flat in
# practice; the cap keeps a deep or cyclic structure from costing more than a glance.
_MAX_DEPTH = 4


def email_hash(email: str) -> str:
    """A short token that lets log lines about one address be correlated without it.

    Case-folded first, so ``Bob@Example.net`` and ``bob@example.net`` (the same mailbox
    for every provider in practice) get one token.  48 bits are plenty to tell apart the
    addresses in one incident.  This is pseudonymisation, not anonymisation: whoever has
    a list of candidate addresses can compute their tokens and match them.
    """
    digest = hashlib.blake2b(
        email.lower().encode("utf-8", "surrogatepass"), digest_size=6, person=_PERSON
    )
    return "h:" + digest.hexdigest()


def _hash_match(match: re.Match[str]) -> str:
    return email_hash(match.group())


def _redact(value: Any, depth: int) -> Any:
    """``value`` with addresses hashed; containers are copied, never changed in place."""
    if isinstance(value, str):
        # The substring test is much cheaper than the regex and almost always false.
        return _EMAIL.sub(_hash_match, value) if "@" in value else value
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, dict):
        return {key: _redact(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(item, depth + 1) for item in value]
    return value


def redact_emails(
    logger: Any, method_name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Replace anything that looks like an email address with its ``email_hash``.

    Runs after exception formatting, so a traceback quoting an address is covered too.
    Only values are scanned, not keys: keys are written by our code, values carry data.
    """
    for key, value in event_dict.items():
        if isinstance(value, str | dict | list | tuple):
            event_dict[key] = _redact(value, 0)
    return event_dict


def _dumps(obj: Any, **kwargs: Any) -> str:
    # orjson returns bytes and PrintLogger writes text; the decode is cheaper than
    # wrapping the caller's text stream in a binary one.
    return orjson.dumps(obj, **kwargs).decode("utf-8")


def configure(level: str = "info", stream: TextIO | None = None) -> None:
    """Route every structlog logger to JSON lines on ``stream`` (stdout by default).

    Safe to call again: each call replaces the whole configuration, which is how tests
    point logging at a buffer.  Raises ``ConfigError`` for a level we do not know, at
    start-up rather than by silently logging at some default.
    """
    numeric = LEVELS.get(level.strip().lower())
    if numeric is None:
        allowed = ", ".join(LEVELS)
        raise ConfigError(f"LOG_LEVEL must be one of {allowed}, not {level!r}")
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
        structlog.processors.format_exc_info,
        redact_emails,
    ]
    _route_stdlib_logging(numeric, shared, stream)
    structlog.configure(
        processors=[*shared, structlog.processors.JSONRenderer(serializer=_dumps)],
        # Levels below the threshold become methods that return at once, so a debug
        # call in the hot path costs one function call at info.
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream if stream is not None else sys.stdout),
        # Caching would pin loggers that were already used to the configuration of
        # their first call, so a second configure() would not reach them.
        cache_logger_on_first_use=False,
    )


def _route_stdlib_logging(numeric: int, shared: list[Any], stream: TextIO | None) -> None:
    """aiokafka logs through ``logging``: render its lines as the same JSON objects.

    Its info lines (every rebalance step, every reconnect) repeat what the worker logs
    itself, so they are kept from warning up unless LOG_LEVEL is debug.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(serializer=_dumps),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(max(numeric, logging.WARNING) if numeric > logging.DEBUG else logging.DEBUG)

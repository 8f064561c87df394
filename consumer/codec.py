"""Bytes in, bytes out: JSON decoding with limits, and JSON encoding of outputs.

orjson rejects invalid UTF-8, lone surrogates and raw control characters inside strings,
and stops at 1024 levels of nesting, so a 100 000-deep array costs a bounded amount of
work.  The size limit is checked before parsing.
"""

from __future__ import annotations

from typing import Any

import orjson

from consumer.errors import DecodeError

__all__ = ["DEFAULT_MAX_BYTES", "decode", "encode"]

DEFAULT_MAX_BYTES = 1024 * 1024


def decode(raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Parse one payload; every failure is a ``DecodeError`` with a clear reason."""
    if len(raw) > max_bytes:
        raise DecodeError(f"payload of {len(raw)} bytes is over the limit of {max_bytes} bytes")
    if not raw.strip():
        raise DecodeError("empty payload")
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
        if "recursion" in message.lower() or "depth limit" in message.lower():
            raise DecodeError("JSON nested deeper than 1024 levels") from None
        if "utf-8" in message.lower() or "surrogate" in message.lower():
            raise DecodeError(f"not valid UTF-8 JSON: {message}") from None
        raise DecodeError(f"not valid JSON: {message}") from None
    if not isinstance(payload, dict | list):
        raise DecodeError(
            f"a JSON {type(payload).__name__} is not a delivery event "
            "(expected an object or an array)"
        )
    return payload


def encode(document: dict[str, Any]) -> bytes:
    return orjson.dumps(document)

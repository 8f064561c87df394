"""Bad input never crashes and never stalls: each gives a PayloadError with a clear reason."""

from __future__ import annotations

import orjson
import pytest
from corpus import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from providers.harness import RECEIVED_AT

from consumer.errors import DecodeError, ParseError, PayloadError, UnknownProviderError
from consumer.pipeline import process
from consumer.rules import Rules, load_rules

_DSN = {"finalRecipient": "rfc822; a@example.net", "action": "failed"}

BAD = [
    (b"not json at all", DecodeError, "not valid JSON"),
    (b'\xff\xfe{"a": 1}', DecodeError, "JSON"),
    (b"42", DecodeError, "not a delivery event"),
    (b'"a string"', DecodeError, "not a delivery event"),
    (b"", DecodeError, "empty"),
    (b"[" * 100_000 + b"]" * 100_000, DecodeError, "nested deeper"),
    (b'{"x": "' + b"a" * (1024 * 1024) + b'"}', DecodeError, "over the limit"),
    (b'{"a": 1}', UnknownProviderError, "no known provider"),
    (b"[1, 2, 3]", UnknownProviderError, "array of 3"),
    (orjson.dumps({**_DSN, "finalRecipient": "not-an-address"}), ParseError, "not a valid email"),
    (orjson.dumps({**_DSN, "finalRecipient": 5}), ParseError, "expected an email address"),
    (orjson.dumps({**_DSN, "finalRecipient": "a\u0000b@example.net"}), ParseError, "email"),
    (orjson.dumps({**_DSN, "action": "exploded"}), ParseError, "unknown DSN action"),
    (orjson.dumps({**_DSN, "diagnosticCode": {"nested": True}}), ParseError, "expected a string"),
    (orjson.dumps({**_DSN, "lastAttemptDate": "yesterday"}), ParseError, "RFC 5322"),
    (
        orjson.dumps(
            [{"event": "bounce", "sg_event_id": "x", "timestamp": {}, "email": "a@b.com"}]
        ),
        ParseError,
        "timestamp",
    ),
    (
        b'{"Type": "Notification", "TopicArn": "t", "Message": "{not json"}',
        ParseError,
        "Message: not JSON",
    ),
]


@pytest.mark.parametrize(
    ("raw", "error", "reason"), BAD, ids=[f"{e.__name__}-{r}" for _, e, r in BAD]
)
def test_bad_input_is_a_dead_letter(
    raw: bytes, error: type[PayloadError], reason: str, rules: Rules
) -> None:
    """Each malformed input raises its documented error with a readable reason."""
    with pytest.raises(error, match=reason):
        process(raw, rules, RECEIVED_AT)


@pytest.mark.parametrize(
    "path", sorted((FIXTURES / "invalid").glob("*.json")), ids=lambda p: p.name
)
def test_invalid_fixtures_are_dead_letters(path: object, rules: Rules) -> None:
    """Every payload of the invalid/ quarantine is refused with a PayloadError."""
    from pathlib import Path

    assert isinstance(path, Path)
    with pytest.raises(PayloadError):
        process(path.read_bytes(), rules, RECEIVED_AT)


def test_megabyte_diagnostic_is_read_on_a_bounded_prefix(rules: Rules) -> None:
    """A huge diagnostic still classifies (on its first KiB) and is cut in the output."""
    text = "550 5.1.1 user unknown " + "x" * 900_000
    raw = orjson.dumps({**_DSN, "diagnosticCode": text})
    event = process(raw, rules, RECEIVED_AT).events[0]
    assert event.recipient_state is not None and event.recipient_state.value == "HardBounce"
    assert event.diagnostic is not None and len(event.diagnostic) <= 8192


def test_control_characters_in_text_are_harmless(rules: Rules) -> None:
    """NUL and control characters inside a diagnostic neither crash nor leak raw."""
    raw = orjson.dumps({**_DSN, "diagnosticCode": "550\u0000 5.1.1\u0007 no such user\u001b[2J"})
    event = process(raw, rules, RECEIVED_AT).events[0]
    assert event.recipient_state is not None
    assert b"\\u0000" in orjson.dumps(event.to_json())


@pytest.mark.parametrize("remote", ["dns;", ";", " ; ", "dns; []", "[]", "x; y;", "\t"])
def test_remote_mta_naming_no_host_is_ignored(rules: Rules, remote: str) -> None:
    """A remoteMta with nothing after its type (``dns;``) once raised IndexError, which
    would have crashed the worker; it names no mailbox provider, the event stands."""
    raw = orjson.dumps({**_DSN, "status": "5.1.1", "remoteMta": remote})
    event = process(raw, rules, RECEIVED_AT).events[0]
    assert event.mailbox_provider == "other"
    assert event.recipient_state == "HardBounce"


_RULES = load_rules()

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "event",
                    "email",
                    "timestamp",
                    "Type",
                    "Message",
                    "mail",
                    "finalRecipient",
                    "action",
                    "RecordType",
                    "msys",
                    "event-data",
                    "eventType",
                    "outcome",
                    "sg_event_id",
                    "recipient",
                    "diagnosticCode",
                    "per-recipient",
                ]
            ),
            children,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(_json)
def test_random_json_never_escapes_as_another_error(payload: object) -> None:
    """Random shapes near every provider's keys give outputs or a PayloadError, nothing else."""
    try:
        process(orjson.dumps(payload), _RULES, RECEIVED_AT)
    except PayloadError:
        pass

"""Mutation fuzzing: every provider's real payload shapes, damaged at random.

Random JSON rarely gets past format detection; mutating real fixtures does, so these
examples reach the parsers' and the classifier's deep branches with wrong types, missing
and extra fields, hostile strings and broken bytes.  The only acceptable failure is a
``PayloadError`` (a dead letter); anything else escaping would crash the worker.  The
cost per mutated event is measured by ``bench/fuzz_cost.py``, not here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.errors import PayloadError
from consumer.pipeline import process
from consumer.rules import Rules, load_rules

FIXTURES = Path(__file__).parents[1] / "fixtures"
RECEIVED_AT = "2025-01-01T00:00:00.000Z"
_RULES: Rules = load_rules()
_PROVIDERS = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir() and p.name != "invalid")


def _valid_payloads(provider: str) -> list[Any]:
    out = []
    for path in sorted((FIXTURES / provider).glob("*.json")):
        try:
            process(path.read_bytes(), _RULES, RECEIVED_AT)
        except PayloadError:
            continue
        out.append(orjson.loads(path.read_bytes()))
    return out


_PAYLOADS = {provider: _valid_payloads(provider) for provider in _PROVIDERS}

_hostile_text = st.sampled_from(
    [
        "",
        " ",
        "\x00\x01\x02",
        "550 5.1.1 " + "A" * 100_000,
        "5" * 5000,
        "user@",
        "@example.com",
        "a@b@c.d",
        "\u202e\u0000<script>",
        "rfc822;",
        "9999-99-99T99:99:99Z",
        "Fri, 31 Feb 2025 25:61:61 +9999",
        "-1",
        "1e309",
        "NaN",
        "\ud7ff\ue000\uffff",
        "x.y.z" * 300,
    ]
) | st.text(max_size=60)
_leaf = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _hostile_text
)
_replacement = st.recursive(
    _leaf,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=12), children, max_size=3),
    max_leaves=8,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every location inside a JSON document (the root excluded)."""
    found: list[tuple[Any, ...]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((*prefix, key))
            found.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.append((*prefix, index))
            found.extend(_paths(value, (*prefix, index)))
    return found


def _mutate(document: Any, path: tuple[Any, ...], operation: str, value: Any) -> Any:
    """A deep copy of ``document`` with one change at ``path``."""
    copy = orjson.loads(orjson.dumps(document))
    parent = copy
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if operation == "delete":
        del parent[last]
    elif operation == "replace":
        parent[last] = value
    elif operation == "stringify":
        parent[last] = orjson.dumps(parent[last]).decode()
    elif operation == "wrap":
        parent[last] = [parent[last], value]
    return copy


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    provider = draw(st.sampled_from(_PROVIDERS))
    document = draw(st.sampled_from(_PAYLOADS[provider]))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(document)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        operation = draw(st.sampled_from(["delete", "replace", "stringify", "wrap"]))
        document = _mutate(document, path, operation, draw(_replacement))
    raw = orjson.dumps(document)
    if draw(st.booleans()):
        return raw
    # Byte-level damage on top: truncation, a flipped byte, an invalid UTF-8 sequence.
    cut = draw(st.integers(min_value=0, max_value=len(raw)))
    damage = draw(st.sampled_from([b"", b"\xff", b"\xc3(", b"\x00", b"]", b'"']))
    return raw[:cut] + damage + raw[cut + len(damage) :]


def test_every_provider_has_payloads_to_mutate() -> None:
    """The fuzzer starts from valid payloads of all eight formats."""
    assert len(_PROVIDERS) == 8
    assert all(_PAYLOADS[provider] for provider in _PROVIDERS)


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "800")), deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(_mutated())
def test_mutated_provider_payloads_give_outputs_or_a_dead_letter(raw: bytes) -> None:
    """A damaged real payload is processed or refused with a PayloadError, nothing else."""
    try:
        outcome = process(raw, _RULES, RECEIVED_AT)
    except PayloadError as error:
        reason = str(error)
        outcome = None
    if outcome is None:
        assert reason, "a dead letter needs a reason"
        return
    for event in outcome.events:
        assert "@" in event.email
        assert event.diagnostic is None or isinstance(event.diagnostic, str)


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_absurd_nesting_inside_a_real_payload_is_a_dead_letter_or_harmless(depth: int) -> None:
    """Deep arrays in a field of a real payload never reach Python's recursion limit."""
    document = _PAYLOADS["sendgrid"][0]
    raw = orjson.dumps(document)[:-1] + b',"extra":' + b"[" * depth + b"]" * depth + b"}"
    try:
        process(raw, _RULES, RECEIVED_AT)
    except PayloadError:
        pass

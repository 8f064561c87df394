"""The suppression stage's pure core: soft-bounce escalation, lifts, clears, replays, state.

Times are offsets (in seconds) from ``T0``; ``s``/``d``/``b`` build soft-bounce, delivery
and Bounce events directly.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.errors import RulesError
from consumer.escalation import (
    STAGE_PROVIDER,
    AddressState,
    Clear,
    EscalationPolicy,
    StageEvent,
    apply_clear,
    apply_event,
    expired,
    load_escalation_policy,
    state_from_json,
    state_to_json,
)
from consumer.models import (
    ClassifiedBy,
    NormalizedEvent,
    RecipientState,
    SourceRef,
    Status,
    SuppressionAction,
    SuppressionUpdate,
)
from consumer.pipeline import event_id

H = 3600
D = 86_400
T0 = int(datetime(2025, 3, 14, 9, 12, 5, tzinfo=UTC).timestamp())
EMAIL = "jane@example.com"
REASON = "SoftBounceEscalation"
RFC3339_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")

COUNTING = (
    RecipientState.SOFT_BOUNCE_MAILBOX_FULL,
    RecipientState.SOFT_BOUNCE_GENERAL,
    RecipientState.SOFT_BOUNCE_UNDETERMINED,
    RecipientState.SOFT_BOUNCE_DNS_FAILURE,
    RecipientState.SOFT_BOUNCE_TIMEOUT,
)
NOT_COUNTING = tuple(state for state in RecipientState if state not in COUNTING)

POLICY = load_escalation_policy()

_DEFAULTS: dict[str, Any] = {
    "soft_bounce_count": "3",
    "min_span_hours": "72",
    "window_days": "14",
    "reset_on_delivery": "true",
    "lift_on_delivery": "true",
    "reason": '"SoftBounceEscalation"',
    "soft_states": "[" + ", ".join(f'"{state.value}"' for state in COUNTING) + "]",
    "ttl_days": "30",
}


def _toml(**overrides: str | None) -> bytes:
    """A policy file: the shipped values, with ``overrides`` (TOML literals; None drops a key)."""
    values = {**_DEFAULTS, **overrides}
    lines = ["[escalation]"]
    lines += [
        f"{key} = {value}"
        for key, value in values.items()
        if key != "ttl_days" and value is not None
    ]
    lines.append("[state]")
    if values["ttl_days"] is not None:
        lines.append(f"ttl_days = {values['ttl_days']}")
    return ("\n".join(lines) + "\n").encode()


def _policy(**overrides: str | None) -> EscalationPolicy:
    return load_escalation_policy(_toml(**overrides))


def s(
    at: int,
    ident: str,
    state: RecipientState = RecipientState.SOFT_BOUNCE_MAILBOX_FULL,
    status: Status = Status.BLOCKED,
    email: str = EMAIL,
    message: str | None = None,
) -> StageEvent:
    """A soft bounce (Blocked by default) ``at`` seconds after T0, of message ``message``."""
    return StageEvent(email, status, state, T0 + at, ident, message_id=message)


def d(at: int, ident: str, email: str = EMAIL) -> StageEvent:
    """A delivery ``at`` seconds after T0."""
    return StageEvent(email, Status.DELIVERED, None, T0 + at, ident)


def b(
    at: int, ident: str, state: RecipientState | None = RecipientState.HARD_BOUNCE
) -> StageEvent:
    """A Bounce (already suppressed by the first stage) ``at`` seconds after T0."""
    return StageEvent(EMAIL, Status.BOUNCE, state, T0 + at, ident)


def clear(at: int, ident: str, reason: str = "OperatorClear") -> Clear:
    """An explicit clear ``at`` seconds after T0."""
    return Clear(EMAIL, reason, T0 + at, ident)


def run(
    items: list[StageEvent | Clear],
    policy: EscalationPolicy = POLICY,
    state: AddressState | None = None,
) -> tuple[AddressState | None, list[SuppressionUpdate | None]]:
    """Feed ``items`` in order; the final state and one output (or None) per item."""
    outputs: list[SuppressionUpdate | None] = []
    for item in items:
        if isinstance(item, Clear):
            state, update = apply_clear(state, item, policy)
        else:
            state, update = apply_event(state, item, policy)
        outputs.append(update)
    return state, outputs


def _emitted(outputs: list[SuppressionUpdate | None]) -> list[tuple[int, str, str]]:
    """(position, action, reason) of every update, for compact table expectations."""
    return [
        (index, update.action.value, update.reason)
        for index, update in enumerate(outputs)
        if update is not None
    ]


# --------------------------------------------------------------------------- the policy


def test_shipped_policy_values() -> None:
    """The shipped escalation.toml loads to the issue's numbers and a hash-based version."""
    raw = resources.files("consumer").joinpath("data/escalation.toml").read_bytes()
    assert POLICY.soft_bounce_count == 3
    assert POLICY.min_span_seconds == 72 * H
    assert POLICY.window_seconds == 14 * D
    assert POLICY.ttl_seconds == 30 * D
    assert POLICY.reset_on_delivery is True
    assert POLICY.lift_on_delivery is True
    assert POLICY.reason == REASON
    assert POLICY.soft_states == frozenset(COUNTING)
    assert POLICY.version == hashlib.sha256(raw).hexdigest()[:12]


def test_policy_helper_reproduces_shipped_values() -> None:
    """The test TOML builder with no overrides yields the same rules as the shipped file."""
    built = _policy()
    assert (built.soft_bounce_count, built.min_span_seconds, built.window_seconds) == (
        POLICY.soft_bounce_count, POLICY.min_span_seconds, POLICY.window_seconds,
    )
    assert built.soft_states == POLICY.soft_states
    assert built.ttl_seconds == POLICY.ttl_seconds


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(_toml(soft_states='["SoftBounceMailboxFull", "NoSuchState"]'), id="unknown-state"),
        pytest.param(_toml(soft_states='["softbouncemailboxfull"]'), id="state-wrong-case"),
        pytest.param(_toml(soft_states='"SoftBounceGeneral"'), id="states-not-a-list"),
        pytest.param(_toml(soft_states="[]"), id="states-empty"),
        pytest.param(_toml(soft_states='["HardBounce"]'), id="states-hard-bounce"),
        pytest.param(
            _toml(soft_states='["SoftBounceMailboxFull", "SpamDetected"]'), id="states-not-soft",
        ),
        pytest.param(_toml(soft_bounce_count=None), id="missing-count"),
        pytest.param(_toml(min_span_hours=None), id="missing-span"),
        pytest.param(_toml(window_days=None), id="missing-window"),
        pytest.param(_toml(reset_on_delivery=None), id="missing-reset"),
        pytest.param(_toml(lift_on_delivery=None), id="missing-lift"),
        pytest.param(_toml(reason=None), id="missing-reason"),
        pytest.param(_toml(soft_states=None), id="missing-states"),
        pytest.param(_toml(ttl_days=None), id="missing-ttl"),
        pytest.param(b"[escalation]\nsoft_bounce_count = 3\n", id="missing-state-table"),
        pytest.param(b"", id="empty-file"),
        pytest.param(_toml(window_days="2"), id="window-shorter-than-span"),
        pytest.param(_toml(window_days="2.999"), id="window-just-shorter-than-span"),
        pytest.param(_toml(ttl_days="13"), id="ttl-shorter-than-window"),
        pytest.param(_toml(soft_bounce_count="0"), id="count-zero"),
        pytest.param(_toml(soft_bounce_count='"three"'), id="count-not-a-number"),
        pytest.param(_toml(min_span_hours="nan"), id="span-nan"),
        pytest.param(_toml(min_span_hours="-5"), id="span-negative"),
        pytest.param(_toml(reset_on_delivery="1"), id="reset-flag-integer"),
        pytest.param(_toml(lift_on_delivery="0"), id="lift-flag-integer"),
        pytest.param(b"[escalation\n", id="toml-syntax"),
        pytest.param(b"\xff\xfe[escalation]", id="not-utf8"),
        pytest.param(b"escalation = 3\n[state]\nttl_days = 30\n", id="escalation-not-a-table"),
    ],
)
def test_loader_refuses_bad_data(data: bytes) -> None:
    """Every kind of bad policy file is refused with RulesError, never another exception."""
    with pytest.raises(RulesError, match=r"escalation\.toml"):
        load_escalation_policy(data)


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        pytest.param({"window_days": "3"}, ("window_seconds", 3 * D), id="window-equals-span"),
        pytest.param({"ttl_days": "14"}, ("ttl_seconds", 14 * D), id="ttl-equals-window"),
        pytest.param({"min_span_hours": "1.5"}, ("min_span_seconds", 5400), id="fractional-hours"),
        pytest.param({"soft_bounce_count": "1"}, ("soft_bounce_count", 1), id="count-one"),
    ],
)
def test_loader_accepts_boundary_values(
    overrides: dict[str, str], check: tuple[str, int]
) -> None:
    """Limits that are equal (window == span, ttl == window) are accepted."""
    field, expected = check
    assert getattr(_policy(**overrides), field) == expected


def test_policy_version_tracks_the_bytes() -> None:
    """Two different policy files get different versions; the same bytes the same version."""
    assert _policy().version == _policy().version
    assert _policy().version != _policy(window_days="15").version


@pytest.mark.parametrize("value", ["inf", "-inf"])
@pytest.mark.parametrize("key", ["min_span_hours", "window_days", "ttl_days"])
def test_loader_refuses_infinity(key: str, value: str) -> None:
    """An infinite duration (valid TOML) is refused with RulesError, not OverflowError."""
    with pytest.raises(RulesError, match=r"escalation\.toml"):
        load_escalation_policy(_toml(**{key: value}))


@pytest.mark.parametrize("key", ["reset_on_delivery", "lift_on_delivery"])
def test_loader_refuses_string_booleans(key: str) -> None:
    """A quoted "false" is refused rather than silently read as True."""
    with pytest.raises(RulesError, match=key):
        load_escalation_policy(_toml(**{key: '"false"'}))


def test_loader_refuses_negative_span() -> None:
    """A negative min_span_hours is refused."""
    with pytest.raises(RulesError, match="min_span_hours"):
        load_escalation_policy(_toml(min_span_hours="-5"))


@pytest.mark.parametrize("key", ["reset_on_delivery", "lift_on_delivery"])
def test_loader_reads_false_flags(key: str) -> None:
    """A real TOML ``false`` is read as False."""
    assert getattr(_policy(**{key: "false"}), key) is False


def test_loader_accepts_zero_span() -> None:
    """A zero span (count only, no minimum spread) is allowed."""
    assert _policy(min_span_hours="0").min_span_seconds == 0


# ------------------------------------------------------------------ escalation decisions

ESCALATION_CASES = [
    pytest.param(
        [s(0, "a"), s(36 * H, "b"), s(72 * H, "c")], [(2, "suppress", REASON)],
        id="three-over-exactly-72h-inclusive",
    ),
    pytest.param(
        [s(0, "a"), s(36 * H, "b"), s(72 * H - 1, "c")], [],
        id="three-over-72h-minus-1s",
    ),
    pytest.param(
        [s(0, "a"), s(20 * 60, "b"), s(40 * 60, "c")], [],
        id="three-within-an-hour",
    ),
    pytest.param(
        [s(0, "a"), s(20 * 60, "b"), s(40 * 60, "c"), s(72 * H, "e")],
        [(3, "suppress", REASON)],
        id="burst-then-fourth-at-72h",
    ),
    pytest.param(
        [s(0, "a"), s(100 * H, "b")], [],
        id="only-two",
    ),
    pytest.param(
        [s(0, "a"), s(7 * D, "b"), s(14 * D, "c")], [(2, "suppress", REASON)],
        id="first-exactly-14d-old-still-counts",
    ),
    pytest.param(
        [s(0, "a"), s(7 * D, "b"), s(14 * D + 1, "c")], [],
        id="first-14d-plus-1s-old-fell-out",
    ),
    pytest.param(
        [s(0, "a"), s(10 * D, "b"), s(15 * D, "c"), s(16 * D, "e")],
        [(3, "suppress", REASON)],
        id="fourth-after-old-one-fell-out",
    ),
    pytest.param(
        [s(0, "a"), s(40 * H, "b"), d(50 * H, "dl"), s(80 * H, "c")], [],
        id="delivery-between-resets",
    ),
    pytest.param(
        [s(0, "a"), d(1 * H, "dl"), s(40 * H, "b"), s(80 * H, "c"), s(113 * H, "e")],
        [(4, "suppress", REASON)],
        id="three-after-delivery-escalate",
    ),
    pytest.param(
        [s(80 * H, "c"), s(0, "a"), s(40 * H, "b")], [(2, "suppress", REASON)],
        id="late-older-event-completes-span",
    ),
    pytest.param(
        [s(40 * H, "b"), s(50 * H, "c"), s(0, "a")], [],
        id="late-older-event-span-too-short",
    ),
    pytest.param(
        [
            s(0, "a", RecipientState.SOFT_BOUNCE_TIMEOUT),
            s(40 * H, "b", RecipientState.SOFT_BOUNCE_DNS_FAILURE),
            s(80 * H, "c", RecipientState.SOFT_BOUNCE_UNDETERMINED),
        ],
        [(2, "suppress", REASON)],
        id="different-soft-states-add-up",
    ),
    pytest.param(
        [
            s(0, "a"),
            s(40 * H, "x", RecipientState.SOFT_BOUNCE_SPAM_DETECTED),
            s(80 * H, "b"),
        ],
        [],
        id="non-counting-state-in-between-does-not-count",
    ),
    pytest.param(
        [
            s(0, "a"),
            s(40 * H, "x", RecipientState.SOFT_BOUNCE_SPAM_DETECTED),
            s(80 * H, "b"),
            s(90 * H, "c"),
        ],
        [(3, "suppress", REASON)],
        id="non-counting-state-does-not-reset",
    ),
    pytest.param(
        [s(0, "a", state=None), s(40 * H, "b", state=None), s(80 * H, "c", state=None)],  # type: ignore[arg-type]
        [],
        id="blocked-without-state-ignored",
    ),
    pytest.param(
        [
            s(0, "a", status=Status.DEFERRED),
            s(40 * H, "b", status=Status.DEFERRED),
            s(80 * H, "c", status=Status.DEFERRED),
        ],
        [(2, "suppress", REASON)],
        id="deferred-with-soft-state-counts",
    ),
    pytest.param(
        [s(0, "a"), s(40 * H, "b"), s(80 * H, "c"), s(90 * H, "e"), s(200 * H, "f")],
        [(2, "suppress", REASON)],
        id="escalation-emitted-once",
    ),
    pytest.param(
        [
            s(0, "a"), s(40 * H, "b"), s(80 * H, "c"),
            clear(81 * H, "k1"),
            s(90 * H, "e"), s(130 * H, "f"), s(162 * H, "g"),
        ],
        [(2, "suppress", REASON), (3, "unsuppress", "OperatorClear"), (6, "suppress", REASON)],
        id="clear-then-new-bounces-escalate-again",
    ),
    pytest.param(
        [
            s(0, "a"), s(40 * H, "b"),
            clear(41 * H, "k1"),
            s(80 * H, "c"),
        ],
        [(2, "unsuppress", "OperatorClear")],
        id="clear-resets-the-count",
    ),
    pytest.param(
        [s(0, "a"), s(40 * H, "b"), s(80 * H, "c"), d(90 * H, "dl")],
        [(2, "suppress", REASON), (3, "unsuppress", "Delivered")],
        id="delivery-lifts-escalation",
    ),
    pytest.param(
        [
            s(0, "a"), s(40 * H, "b"), s(80 * H, "c"), d(90 * H, "dl"),
            s(100 * H, "e"), s(140 * H, "f"), s(172 * H, "g"),
        ],
        [(2, "suppress", REASON), (3, "unsuppress", "Delivered"), (6, "suppress", REASON)],
        id="lift-then-escalate-again",
    ),
    pytest.param(
        [d(0, "d1"), d(10 * H, "d2")], [],
        id="delivery-without-suppression-is-silent",
    ),
    pytest.param(
        [s(0, "a"), s(40 * H, "b"), b(50 * H, "hb"), s(60 * H, "c"), s(100 * H, "e"), s(140 * H, "f")],
        [],
        id="bounce-suppressed-no-escalation-on-top",
    ),
    pytest.param(
        [s(0, "a"), s(40 * H, "b"), s(80 * H, "c"), b(90 * H, "hb"), d(100 * H, "dl")],
        [(2, "suppress", REASON)],
        id="delivery-never-lifts-a-bounce",
    ),
    pytest.param(
        [b(0, "hb"), clear(1 * H, "k1"), s(2 * H, "a"), s(40 * H, "b"), s(80 * H, "c")],
        [(1, "unsuppress", "OperatorClear"), (4, "suppress", REASON)],
        id="clear-lifts-a-bounce-then-escalation-possible",
    ),
]


@pytest.mark.parametrize(("items", "expected"), ESCALATION_CASES)
def test_escalation_table(items: list[StageEvent | Clear], expected: list[tuple[int, str, str]]) -> None:
    """Each event sequence yields exactly the listed (position, action, reason) updates."""
    _, outputs = run(items)
    assert _emitted(outputs) == expected


@pytest.mark.parametrize("state", COUNTING)
def test_every_listed_soft_state_counts(state: RecipientState) -> None:
    """Each soft state listed in the policy counts toward escalation on its own."""
    _, outputs = run([s(0, "a", state), s(40 * H, "b", state), s(72 * H, "c", state)])
    assert _emitted(outputs) == [(2, "suppress", REASON)]


@pytest.mark.parametrize("state", NOT_COUNTING)
@pytest.mark.parametrize("status", [Status.BLOCKED, Status.DEFERRED])
def test_unlisted_states_never_count(state: RecipientState, status: Status) -> None:
    """States not in the policy (spam, content, attachment, blocks...) never escalate."""
    final, outputs = run([s(hours * H, f"e{hours}", state, status) for hours in range(0, 200, 20)])
    assert _emitted(outputs) == []
    assert final is not None and final.soft == ()


def test_escalation_update_fields() -> None:
    """The escalation carries the stage provider, the policy version, a deterministic id,
    the triggering event's time in RFC 3339 UTC milliseconds and its source."""
    source = SourceRef("events.normalized", 3, 1234)
    items = [s(0, "a"), s(40 * H, "b"), StageEvent(EMAIL, Status.BLOCKED,
             RecipientState.SOFT_BOUNCE_GENERAL, T0 + 72 * H, "c", source)]
    final, outputs = run(items)
    update = outputs[2]
    assert update is not None
    assert update.provider == STAGE_PROVIDER == "bounce-consumer"
    assert update.email == EMAIL
    assert update.action is SuppressionAction.SUPPRESS
    assert update.reason == REASON
    assert update.policy_version == POLICY.version
    assert update.occurred_at == "2025-03-17T09:12:05.000Z"
    assert RFC3339_MS.match(update.occurred_at)
    assert update.source == source
    assert update.needs_review is False
    assert update.event_id == event_id(STAGE_PROVIDER, "c", EMAIL, "suppress", REASON)
    assert final is not None and final.suppressed == REASON
    body = update.to_json()
    assert body["occurredAt"] == "2025-03-17T09:12:05.000Z"
    assert body["provider"] == "bounce-consumer"


def test_update_ids_are_deterministic() -> None:
    """The same inputs give the same updates (ids included) on a second, independent run."""
    items: list[StageEvent | Clear] = [
        s(0, "a"), s(40 * H, "b"), s(80 * H, "c"), d(90 * H, "dl"),
        s(100 * H, "e"), s(140 * H, "f"), s(172 * H, "g"), clear(180 * H, "k1"),
    ]
    first_state, first = run(items)
    second_state, second = run(items)
    assert first == second
    assert first_state == second_state
    ids = [update.event_id for update in first if update is not None]
    assert len(ids) == len(set(ids)) == 4


def test_update_ids_differ_per_address() -> None:
    """The same event ids on two addresses give two different update ids."""
    def escalate(email: str) -> SuppressionUpdate | None:
        items = [s(at, ident, email=email) for at, ident in ((0, "a"), (40 * H, "b"), (80 * H, "c"))]
        return run(list(items))[1][-1]

    first, second = escalate("a@example.com"), escalate("b@example.com")
    assert first is not None and second is not None
    assert first.event_id != second.event_id


def test_delivery_lift_update_fields() -> None:
    """A delivery to an escalated address writes unsuppress/Delivered at the delivery's time."""
    final, outputs = run([s(0, "a"), s(40 * H, "b"), s(80 * H, "c"), d(90 * H, "dl")])
    lift = outputs[3]
    assert lift is not None
    assert lift.action is SuppressionAction.UNSUPPRESS
    assert lift.reason == "Delivered"
    assert lift.provider == STAGE_PROVIDER
    assert lift.policy_version == POLICY.version
    assert lift.occurred_at == "2025-03-18T03:12:05.000Z"
    assert lift.event_id == event_id(STAGE_PROVIDER, "dl", EMAIL, "unsuppress", "Delivered")
    assert final == AddressState(
        soft=(), delivered=T0 + 90 * H, suppressed=None, updated=T0 + 90 * H, reset=T0 + 90 * H
    )


@pytest.mark.parametrize(
    ("overrides", "lifted", "soft_after", "reset"),
    [
        pytest.param({}, True, 0, T0 + 90 * H, id="lift-and-reset"),
        pytest.param({"lift_on_delivery": "false"}, False, 0, T0 + 90 * H, id="no-lift"),
        pytest.param({"reset_on_delivery": "false"}, True, 0, None, id="lift-without-reset"),
        pytest.param(
            {"lift_on_delivery": "false", "reset_on_delivery": "false"}, False, 3, None,
            id="neither",
        ),
    ],
)
def test_delivery_switches(
    overrides: dict[str, str], lifted: bool, soft_after: int, reset: int | None
) -> None:
    """lift_on_delivery decides the unsuppress; reset_on_delivery decides the count and the
    reset time; a lift always starts the count again (it clears the soft bounces)."""
    policy = _policy(**overrides)
    final, outputs = run([s(0, "a"), s(40 * H, "b"), s(80 * H, "c"), d(90 * H, "dl")], policy)
    assert final is not None
    assert (outputs[3] is not None) is lifted
    assert final.suppressed == (None if lifted else REASON)
    assert len(final.soft) == soft_after
    assert final.reset == reset


def test_no_reset_on_delivery_keeps_counting() -> None:
    """With reset_on_delivery off, a delivery between bounces does not stop escalation."""
    policy = _policy(reset_on_delivery="false")
    _, outputs = run([s(0, "a"), s(40 * H, "b"), d(50 * H, "dl"), s(80 * H, "c")], policy)
    assert _emitted(outputs) == [(3, "suppress", REASON)]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        pytest.param(RecipientState.HARD_BOUNCE, "HardBounce", id="hard"),
        pytest.param(RecipientState.DNS_FAILURE, "DNSFailure", id="dns"),
        pytest.param(None, "Bounce", id="no-state"),
    ],
)
def test_bounce_records_suppression_silently(state: RecipientState | None, expected: str) -> None:
    """A Bounce writes nothing, forgets the soft count and remembers why it is suppressed."""
    final, outputs = run([s(0, "a"), s(40 * H, "b"), b(50 * H, "hb", state)])
    assert outputs == [None, None, None]
    assert final == AddressState(
        soft=(), delivered=None, suppressed=expected, updated=T0 + 50 * H, reset=T0 + 50 * H
    )


# ------------------------------------------------------------------------------- clears


def test_clear_after_escalation() -> None:
    """A clear lifts the escalation (unsuppress, its own reason and id), resets the count
    and keeps the delivery time."""
    items: list[StageEvent | Clear] = [
        d(0, "d0"), s(1 * H, "a"), s(40 * H, "b"), s(80 * H, "c"), clear(100 * H, "cmd-1", "ListRemoval"),
    ]
    final, outputs = run(items)
    update = outputs[4]
    assert update is not None
    assert update.action is SuppressionAction.UNSUPPRESS
    assert update.reason == "ListRemoval"
    assert update.provider == STAGE_PROVIDER
    assert update.policy_version == POLICY.version
    assert update.occurred_at == "2025-03-18T13:12:05.000Z"
    assert update.event_id == event_id(STAGE_PROVIDER, "cmd-1", EMAIL, "unsuppress", "ListRemoval")
    assert final == AddressState(
        soft=(), delivered=T0, suppressed=None, updated=T0 + 100 * H, reset=T0 + 100 * H
    )


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(None, id="unknown-address"),
        pytest.param(AddressState(), id="empty-state"),
        pytest.param(AddressState(soft=((T0, "a"),), updated=T0), id="soft-only"),
    ],
)
def test_clear_always_writes_an_update(state: AddressState | None) -> None:
    """A clear is written even when the stage knows no suppression (first-stage ones)."""
    final, update = apply_clear(state, clear(5, "cmd"), POLICY)
    assert update.action is SuppressionAction.UNSUPPRESS
    assert final.soft == ()
    assert final.suppressed is None
    assert final.updated == T0 + 5
    assert final.reset == T0 + 5


def test_old_clear_does_not_move_updated_back() -> None:
    """A clear older than the last event keeps ``updated`` at the newest time."""
    state, _ = run([s(10 * H, "a")])
    final, _ = apply_clear(state, clear(0, "cmd"), POLICY)
    assert final.updated == T0 + 10 * H


def test_old_clear_does_not_move_reset_back() -> None:
    """A clear older than the last reset keeps the newer reset time."""
    state, _ = run([d(10 * H, "dl")])
    final, _ = apply_clear(state, clear(0, "cmd"), POLICY)
    assert final.reset == T0 + 10 * H


def test_replay_after_clear_does_not_count_again() -> None:
    """Soft bounces older than a clear never count again, e.g. when the events topic is
    replayed after the clear: the clear started the count afresh."""
    first = [s(0, "a"), s(40 * H, "b"), s(80 * H, "c")]
    state, outputs = run([*first, clear(81 * H, "k1"), *first])
    assert _emitted(outputs) == [(2, "suppress", REASON), (3, "unsuppress", "OperatorClear")]
    assert state == AddressState(soft=(), updated=T0 + 81 * H, reset=T0 + 81 * H)


def test_late_soft_bounces_older_than_a_clear_do_not_count() -> None:
    """Soft bounces arriving after a clear but dated before it are ignored; newer ones count."""
    _, outputs = run([
        clear(100 * H, "k1"), s(0, "a"), s(40 * H, "b"), s(99 * H, "c"), s(100 * H, "same-second"),
        s(101 * H, "e"), s(140 * H, "f"), s(173 * H, "g"),
    ])
    assert _emitted(outputs) == [(0, "unsuppress", "OperatorClear"), (7, "suppress", REASON)]


# ------------------------------------------------------------------------------ replays


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param([s(0, "a")], id="first-soft"),
        pytest.param([s(0, "a"), s(40 * H, "b"), s(80 * H, "c")], id="escalating-soft"),
        pytest.param([s(0, "a"), s(40 * H, "b"), s(80 * H, "c"), s(90 * H, "e")], id="soft-after-escalation"),
        pytest.param([s(0, "a"), s(40 * H, "b"), s(80 * H, "c"), d(90 * H, "dl")], id="lifting-delivery"),
        pytest.param([s(0, "a"), b(10 * H, "hb")], id="bounce"),
        pytest.param([s(0, "x", RecipientState.SOFT_BOUNCE_SPAM_DETECTED)], id="non-counting"),
    ],
)
def test_replaying_the_last_event_changes_nothing(prefix: list[StageEvent]) -> None:
    """Applying the last event a second time leaves the state alone and writes nothing."""
    state, _ = run(list(prefix))
    again, update = apply_event(state, prefix[-1], POLICY)
    assert update is None
    assert again == state


def test_replayed_soft_bounce_counts_once() -> None:
    """Three copies of two soft bounces are still only two: no escalation."""
    _, outputs = run([s(0, "a"), s(0, "a"), s(80 * H, "b"), s(0, "a"), s(80 * H, "b")])
    assert _emitted(outputs) == []


def test_retries_of_one_message_count_once() -> None:
    """Soft bounces of the same message (same messageId, different eventIds) are one problem:
    three retries of one message over 80 hours do not escalate."""
    final, outputs = run([
        s(0, "e1", message="<m1@x>"), s(40 * H, "e2", message="<m1@x>"),
        s(80 * H, "e3", message="<m1@x>"),
    ])
    assert _emitted(outputs) == []
    assert final is not None and final.soft == ((T0, "<m1@x>"),)


def test_retries_do_not_add_up_with_other_messages() -> None:
    """Two messages, one retried, count two; a third message completes the escalation."""
    _, outputs = run([
        s(0, "e1", message="<m1@x>"), s(40 * H, "e2", message="<m2@x>"),
        s(72 * H, "e3", message="<m1@x>"), s(80 * H, "e4", message="<m3@x>"),
    ])
    assert _emitted(outputs) == [(3, "suppress", REASON)]


def test_soft_bounces_without_message_id_count_per_event() -> None:
    """Without a messageId the event id identifies the soft bounce (the message is unknown)."""
    final, outputs = run([
        s(0, "e1", message="<m1@x>"), s(40 * H, "e2"), s(80 * H, "e3"),
    ])
    assert _emitted(outputs) == [(2, "suppress", REASON)]
    assert final is not None
    assert final.soft == ((T0, "<m1@x>"), (T0 + 40 * H, "e2"), (T0 + 80 * H, "e3"))


def test_retry_after_a_delivery_counts_again() -> None:
    """A retry of a message newer than a delivery counts again: the delivery forgot it."""
    final, _ = run([s(0, "e1", message="<m1@x>"), d(10 * H, "dl"), s(20 * H, "e2", message="<m1@x>")])
    assert final is not None and final.soft == ((T0 + 20 * H, "<m1@x>"),)


def test_soft_bounce_at_the_second_of_a_reset_is_ignored() -> None:
    """A reset covers its own second: a soft bounce dated exactly then does not count."""
    for reset in (d(0, "dl"), b(0, "hb"), clear(0, "k1")):
        final, _ = run([reset, s(0, "a")])
        assert final is not None and final.soft == ()


# ------------------------------------------------------ out-of-order and replay defects


def test_late_event_older_than_window_does_not_escalate() -> None:
    """The window ends at the newest soft bounce seen: a late one 30 days older than the two
    newest is outside it and is dropped."""
    final, outputs = run([s(30 * D, "a"), s(31 * D, "b"), s(0, "late")])
    assert _emitted(outputs) == []
    assert final is not None and [ident for _, ident in final.soft] == ["a", "b"]


def test_late_event_inside_window_of_newest_counts() -> None:
    """A late soft bounce exactly 14 days older than the newest still counts."""
    _, outputs = run([s(14 * D, "c"), s(10 * D, "b"), s(0, "late")])
    assert _emitted(outputs) == [(2, "suppress", REASON)]


def test_bounces_before_a_known_delivery_do_not_escalate() -> None:
    """Soft bounces that all occurred before a (previously seen) delivery do not escalate."""
    _, outputs = run([d(100 * H, "dl"), s(0, "a"), s(40 * H, "b"), s(80 * H, "c")])
    assert _emitted(outputs) == []


def test_bounces_before_a_known_hard_bounce_are_ignored() -> None:
    """Late soft bounces older than a Bounce are not remembered."""
    final, _ = run([b(100 * H, "hb"), s(0, "a"), s(40 * H, "b")])
    assert final is not None and final.soft == ()


def test_replay_after_delivery_does_not_count_again() -> None:
    """A soft bounce replayed after a later delivery does not count (it predates it)."""
    _, outputs = run([s(0, "a"), d(10 * H, "dl"), s(0, "a"), s(40 * H, "b"), s(80 * H, "c")])
    assert _emitted(outputs) == []


def test_late_old_delivery_does_not_lift() -> None:
    """A delivery that happened before the three soft bounces does not lift their escalation."""
    final, outputs = run([s(0, "a"), s(40 * H, "b"), s(80 * H, "c"), d(-10 * H, "old-dl")])
    assert _emitted(outputs) == [(2, "suppress", REASON)]
    assert final is not None and final.suppressed == REASON
    assert len(final.soft) == 3


def test_delivery_older_than_the_newest_soft_bounce_does_not_lift() -> None:
    """A late delivery between the escalating soft bounces forgets the older ones only and
    does not lift; a later delivery does."""
    final, outputs = run([
        s(0, "a"), s(40 * H, "b"), s(80 * H, "c"), d(60 * H, "late-dl"), d(90 * H, "dl"),
    ])
    assert _emitted(outputs) == [(2, "suppress", REASON), (4, "unsuppress", "Delivered")]
    assert final is not None and final.soft == () and final.reset == T0 + 90 * H


def test_late_old_delivery_keeps_later_bounces() -> None:
    """Only soft bounces before the delivery's time are forgotten."""
    _, outputs = run([s(0, "a"), s(40 * H, "b"), d(20 * H, "late-dl"), s(80 * H, "c"), s(120 * H, "e")])
    assert _emitted(outputs) == [(4, "suppress", REASON)]


def test_old_delivery_after_same_second_delivery_does_not_lift() -> None:
    """A delivery 90 hours older than the escalating soft bounce never lifts the escalation,
    whatever delivery came before it."""
    _, outputs = run([
        s(0, "a"), s(40 * H, "b"), s(80 * H, "c"), d(80 * H, "same-second"), d(-10 * H, "old-dl"),
    ])
    assert _emitted(outputs) == [(2, "suppress", REASON)]


def test_newer_retry_refreshes_updated() -> None:
    """``updated`` is the newest event time, retries of a counted message included."""
    final, _ = run([s(0, "e1", message="<m1@x>"), s(5 * D, "e2", message="<m1@x>")])
    assert final is not None and final.updated == T0 + 5 * D


# ---------------------------------------------------------------------- state lifecycle


@pytest.mark.parametrize(
    ("updated", "now", "expected"),
    [
        pytest.param(T0, T0, False, id="same-time"),
        pytest.param(T0, T0 + 30 * D - 1, False, id="just-inside"),
        pytest.param(T0, T0 + 30 * D, False, id="exactly-ttl"),
        pytest.param(T0, T0 + 30 * D + 1, True, id="ttl-plus-1s"),
        pytest.param(T0, T0 - D, False, id="clock-behind"),
    ],
)
def test_expired(updated: int, now: int, expected: bool) -> None:
    """A state expires strictly after ttl_days without events."""
    assert expired(AddressState(updated=updated), now, POLICY) is expected


def test_late_old_event_does_not_refresh_ttl() -> None:
    """``updated`` is the newest event time; an older late event does not move it back or on."""
    state, _ = run([s(10 * D, "a"), s(0, "late"), d(D, "old-dl"), b(2 * D, "hb")])
    assert state is not None and state.updated == T0 + 10 * D


STATES = [
    AddressState(),
    AddressState(soft=((T0, "a"), (T0 + 40 * H, "b")), updated=T0 + 40 * H),
    AddressState(soft=((T0, "a"),), delivered=T0 - D, suppressed=REASON, updated=T0),
    AddressState(delivered=T0, suppressed="HardBounce", updated=T0 + 5, reset=T0 + 5),
    AddressState(
        soft=((T0 + 2 * H, "<m1@x>"),), delivered=T0, updated=T0 + 2 * H, reset=T0 + H,
    ),
]


@pytest.mark.parametrize("state", STATES)
def test_state_json_round_trip(state: AddressState) -> None:
    """state_to_json -> JSON text -> state_from_json gives back the same state."""
    body = json.loads(json.dumps(state_to_json(state)))
    assert body["v"] == 1
    assert state_from_json(body) == state


def test_state_from_empty_json() -> None:
    """An empty changelog body is the empty state."""
    assert state_from_json({}) == AddressState()


def test_reset_survives_the_json_round_trip() -> None:
    """The changelog carries the reset time, so a restored state still ignores soft bounces
    older than the last reset (here a clear)."""
    state, _ = run([s(0, "a"), clear(50 * H, "k1")])
    assert state is not None
    body = json.loads(json.dumps(state_to_json(state)))
    assert body["reset"] == T0 + 50 * H
    restored = state_from_json(body)
    assert restored.reset == T0 + 50 * H
    again, _ = run([s(0, "a"), s(40 * H, "b")], state=restored)
    assert again is not None and again.soft == ()


def test_state_from_json_without_reset() -> None:
    """A changelog record written before the reset existed reads with no reset."""
    body = {"v": 1, "soft": [[T0, "a"]], "delivered": None, "suppressed": None, "updated": T0}
    assert state_from_json(body) == AddressState(soft=((T0, "a"),), updated=T0)


def test_state_restored_from_json_continues_identically() -> None:
    """Stopping after any event, round-tripping the state and going on changes nothing."""
    items: list[StageEvent | Clear] = [
        s(0, "a"), s(40 * H, "b"), s(80 * H, "c"), d(90 * H, "dl"), s(100 * H, "e"),
        clear(101 * H, "k1"), s(100 * H, "e"), s(110 * H, "f", message="<m1@x>"),
        s(150 * H, "g", message="<m1@x>"), b(160 * H, "hb"), s(150 * H, "h"),
    ]
    expected_state, expected = run(items)
    for cut in range(len(items) + 1):
        head_state, head = run(items[:cut])
        restored = None if head_state is None else state_from_json(
            json.loads(json.dumps(state_to_json(head_state)))
        )
        tail_state, tail = run(items[cut:], state=restored)
        assert head + tail == expected
        assert tail_state == expected_state


# --------------------------------------------------------------------------- from_json


def _normalized(status: Status, state: RecipientState | None, occurred_at: str) -> dict[str, Any]:
    """A real normalized event's JSON form."""
    return NormalizedEvent(
        event_id="9f1c2d3e4b5a69788796a5b4c3d2e1f0",
        provider="sendgrid",
        provider_event_id="sg-abc-123",
        occurred_at=occurred_at,
        email=EMAIL,
        domain="example.com",
        mailbox_provider="other",
        message_id="<m1@example.com>",
        campaign_id=None,
        template_id=None,
        status=status,
        recipient_state=state,
        provider_state="deferred",
        smtp_code=452,
        enhanced_code="4.2.2",
        diagnostic="452 4.2.2 mailbox full",
        remote_mta="mx.example.com",
        classified_by=ClassifiedBy.ENHANCED_CODE,
        rule_id=None,
    ).to_json()


@pytest.mark.parametrize(
    ("status", "state", "occurred_at", "epoch"),
    [
        pytest.param(
            Status.BLOCKED, RecipientState.SOFT_BOUNCE_MAILBOX_FULL,
            "2025-03-14T09:12:05.000Z", T0, id="soft-bounce",
        ),
        pytest.param(Status.DELIVERED, None, "2025-03-14T09:12:05.999Z", T0, id="delivered-ms-truncated"),
        pytest.param(
            Status.BOUNCE, RecipientState.HARD_BOUNCE, "2025-03-14T10:12:05.000+01:00", T0,
            id="bounce-with-offset",
        ),
    ],
)
def test_stage_event_from_normalized_json(
    status: Status, state: RecipientState | None, occurred_at: str, epoch: int
) -> None:
    """A normalized event's JSON (eventId, email, status, recipientState, occurredAt) reads in."""
    source = SourceRef("events.normalized", 0, 7)
    event = StageEvent.from_json(_normalized(status, state, occurred_at), source)
    assert event == StageEvent(
        EMAIL, status, state, epoch, "9f1c2d3e4b5a69788796a5b4c3d2e1f0", source,
        message_id="<m1@example.com>",
    )


@pytest.mark.parametrize("message", [None, ""], ids=["null", "empty"])
def test_stage_event_from_json_without_message_id(message: str | None) -> None:
    """A null or empty messageId reads as no message id (the event id identifies it)."""
    body = _normalized(Status.BLOCKED, RecipientState.SOFT_BOUNCE_GENERAL, "2025-03-14T09:12:05.000Z")
    body["messageId"] = message
    assert StageEvent.from_json(body).message_id is None
    del body["messageId"]
    assert StageEvent.from_json(body).message_id is None


def test_from_json_events_escalate() -> None:
    """Three normalized soft bounces three days apart, read from JSON, escalate."""
    items = []
    for index, stamp in enumerate(("2025-03-14T09:12:05.000Z", "2025-03-15T21:12:05.000Z",
                                   "2025-03-17T09:12:05.000Z")):
        body = _normalized(Status.BLOCKED, RecipientState.SOFT_BOUNCE_MAILBOX_FULL, stamp)
        body["eventId"] = f"evt-{index}"
        body["messageId"] = f"<m{index}@example.com>"
        items.append(StageEvent.from_json(body))
    _, outputs = run(list(items))
    assert _emitted(outputs) == [(2, "suppress", REASON)]
    assert outputs[2] is not None and outputs[2].occurred_at == "2025-03-17T09:12:05.000Z"


def test_from_json_retries_of_one_message_do_not_escalate() -> None:
    """Three normalized soft bounces with one messageId (retries) and three eventIds count once."""
    items = []
    for index, stamp in enumerate(("2025-03-14T09:12:05.000Z", "2025-03-15T21:12:05.000Z",
                                   "2025-03-17T09:12:05.000Z")):
        body = _normalized(Status.BLOCKED, RecipientState.SOFT_BOUNCE_MAILBOX_FULL, stamp)
        body["eventId"] = f"evt-{index}"
        items.append(StageEvent.from_json(body))
    final, outputs = run(list(items))
    assert _emitted(outputs) == []
    assert final is not None and final.soft == ((T0, "<m1@example.com>"),)


# --------------------------------------------------------------------------- properties


@dataclass(frozen=True)
class _Step:
    status: Status
    state: RecipientState | None
    hours: int
    message: str | None = None


_STEP = st.builds(
    _Step,
    status=st.sampled_from(list(Status)),
    state=st.one_of(
        st.sampled_from(COUNTING),
        st.sampled_from(NOT_COUNTING),
        st.none(),
    ),
    hours=st.integers(min_value=0, max_value=40 * 24),
    message=st.one_of(st.none(), st.sampled_from(["<m1@x>", "<m2@x>", "<m3@x>"])),
)
_ITEMS = st.lists(st.one_of(_STEP, st.just("clear")), max_size=25)


def _build(steps: list[_Step | str], messages: bool = True) -> list[StageEvent | Clear]:
    """The items; without ``messages`` every event is its own message (no retries)."""
    items: list[StageEvent | Clear] = []
    for index, step in enumerate(steps):
        if isinstance(step, _Step):
            items.append(StageEvent(
                EMAIL, step.status, step.state, T0 + step.hours * H, f"e{index}",
                message_id=step.message if messages else None,
            ))
        else:
            items.append(clear(index * H, f"k{index}"))
    return items


@settings(max_examples=300, deadline=None)
@given(_ITEMS)
def test_each_event_repeated_is_idempotent(steps: list[_Step | str]) -> None:
    """Repeating every event immediately gives the same state and updates as applying it once."""
    items = [item for item in _build(steps) if isinstance(item, StageEvent)]
    once_state, once = run(list(items))
    twice_state, twice = run([item for item in items for _ in range(2)])
    assert twice_state == once_state
    assert [update for update in twice if update is not None] == [
        update for update in once if update is not None
    ]


@settings(max_examples=300, deadline=None)
@given(_ITEMS)
def test_invariants(steps: list[_Step | str]) -> None:
    """Never two suppressions without a lift in between; stored soft bounces are listed states."""
    suppressed_by_stage = False
    state: AddressState | None = None
    for item in _build(steps):
        if isinstance(item, Clear):
            state, update = apply_clear(state, item, POLICY)
        else:
            state, update = apply_event(state, item, POLICY)
        if update is not None and update.action is SuppressionAction.SUPPRESS:
            assert not suppressed_by_stage
            suppressed_by_stage = True
        elif update is not None:
            suppressed_by_stage = False
        assert state.suppressed != REASON or suppressed_by_stage
        assert len({ident for _, ident in state.soft}) == len(state.soft)
        assert list(state.soft) == sorted(state.soft)


def _model(events: list[StageEvent]) -> list[tuple[str, str]]:
    """An independent reading of the issue for events that arrive in time order."""
    soft: list[int] = []
    suppressed: str | None = None
    out: list[tuple[str, str]] = []
    for event in events:
        if event.status is Status.DELIVERED:
            soft = []
            if suppressed == REASON:
                suppressed = None
                out.append(("unsuppress", event.event_id))
        elif event.status is Status.BOUNCE:
            soft, suppressed = [], "first-stage"
        elif event.recipient_state in COUNTING:
            soft = [t for t in soft if event.occurred - t <= 14 * D] + [event.occurred]
            if suppressed is None and len(soft) >= 3 and soft[-1] - soft[0] >= 72 * H:
                suppressed = REASON
                out.append(("suppress", event.event_id))
    return out


@settings(max_examples=300, deadline=None)
@given(_ITEMS)
def test_in_order_events_match_the_model(steps: list[_Step | str]) -> None:
    """For events arriving in time order (distinct times, distinct messages), the updates
    are exactly the issue's rule.  Same-second ties are left out: a reset covers its own
    second, and a delivery lifts only if strictly newer (tested separately)."""
    items = [
        replace(item, occurred=item.occurred + index)
        for index, item in enumerate(_build(steps, messages=False))
        if isinstance(item, StageEvent)
    ]
    items.sort(key=lambda event: event.occurred)
    _, outputs = run(list(items))
    got = [(u.action.value, u.event_id) for u in outputs if u is not None]
    expected = [
        (action, event_id(STAGE_PROVIDER, ident, EMAIL, action, REASON if action == "suppress" else "Delivered"))
        for action, ident in _model(items)
    ]
    assert got == expected

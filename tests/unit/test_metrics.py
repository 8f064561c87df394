"""Metrics: counts per outcome and event, bounded label values, no addresses."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from consumer.errors import PayloadError
from consumer.metrics import Metrics
from consumer.pipeline import process
from consumer.rules import Rules

FIXTURES = Path(__file__).parents[1] / "fixtures"


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def test_outcomes_count_events_suppressions_and_age(rules: Rules) -> None:
    """A hard bounce counts one ok record, one Bounce event, one suppression and its age."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    outcome = process((FIXTURES / "sendgrid/bounce-unclassified-5-1-1.json").read_bytes(), rules,
                      "2025-01-01T00:00:00.000Z")
    event = outcome.events[0]
    metrics.observe_outcome(outcome, now=2_000_000_000)
    assert _value(registry, "mailevents_records_total", outcome="ok") == 1
    assert _value(
        registry, "mailevents_events_total", provider="sendgrid", status="Bounce",
        recipient_state="HardBounce", mailbox_provider=event.mailbox_provider,
    ) == 1
    assert _value(registry, "mailevents_suppressions_total", provider="sendgrid",
                  mailbox_provider=event.mailbox_provider, action="suppress",
                  reason="HardBounce") == 1
    assert _value(registry, "mailevents_event_age_seconds_count") == 1


def test_dead_letters_and_ignored_records_are_counted_apart(rules: Rules) -> None:
    """Dead letters count by error kind; an ignored record is not ok."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.observe_dead_letter("decode")
    metrics.observe_outcome(process((FIXTURES / "sendgrid/click.json").read_bytes(), rules,
                                    "2025-01-01T00:00:00.000Z"), now=0)
    assert _value(registry, "mailevents_records_total", outcome="dead_letter") == 1
    assert _value(registry, "mailevents_dead_letters_total", reason="decode") == 1
    assert _value(registry, "mailevents_records_total", outcome="ignored") == 1


def test_no_address_or_domain_reaches_a_label(rules: Rules) -> None:
    """After every fixture is counted, the exposition holds no '@' and no recipient domain."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    domains: set[str] = set()
    for path in sorted(FIXTURES.glob("*/*.json")):
        try:
            outcome = process(path.read_bytes(), rules, "2025-01-01T00:00:00.000Z")
        except PayloadError:  # invalid fixtures are dead letters, not under test here
            continue
        metrics.observe_outcome(outcome, now=0)
        domains.update(event.domain for event in outcome.events)
    page = generate_latest(registry).decode()
    assert "@" not in page
    leaked = [domain for domain in domains if f'"{domain}"' in page]
    assert leaked == []


def test_counting_a_batch_equals_counting_its_records_one_by_one(rules: Rules) -> None:
    """observe_batch sums per series first; the exposition is the same as record by record."""
    outcomes, kinds = [], []
    for path in sorted(FIXTURES.glob("*/*.json")):
        try:
            outcomes.append(process(path.read_bytes(), rules, "2025-01-01T00:00:00.000Z"))
        except PayloadError as error:
            kinds.append(error.kind)
    one_by_one, batched = Metrics(CollectorRegistry()), Metrics(CollectorRegistry())
    for outcome in outcomes:
        one_by_one.observe_outcome(outcome, now=1_800_000_000)
    for kind in kinds:
        one_by_one.observe_dead_letter(kind)
    batched.observe_batch(outcomes, kinds, now=1_800_000_000)
    assert _without_created(batched) == _without_created(one_by_one)
    assert b'mailevents_records_total{outcome="dead_letter"} 26.0' in generate_latest(
        batched.registry
    )


def _without_created(metrics: Metrics) -> list[str]:
    """The exposition minus the *_created timestamps, which differ between registries."""
    page = generate_latest(metrics.registry).decode()
    return [line for line in page.splitlines() if "_created" not in line]

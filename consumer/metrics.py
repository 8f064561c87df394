"""Every Prometheus metric of the worker, created on an injected registry.

The worker makes one ``Metrics`` on the default registry; tests make their own on a
fresh ``CollectorRegistry``, so nothing leaks between them.  Label values come only from
bounded sets (provider, status, recipientState, mailbox-provider group, outcome,
error kind, partition): never an address, a domain or a rule id, which would make
series without bound and put personal data into the monitoring system.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter

from consumer.health import Probe
from consumer.models import Outcome, SuppressionUpdate

__all__ = ["Metrics"]

_PREFIX = "mailevents_"
# A batch of 500 records takes ~0.1 s to classify; the long tail is produce retries.
_BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Delivery events reach us seconds (webhooks) to days (DSNs of long retry queues) late.
_AGE_BUCKETS = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 3 * 24 * 3600)


class Metrics:
    """The worker's metrics; ``observe_outcome`` counts everything one record produced."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.records = PromCounter(
            _PREFIX + "records",
            "Input records by outcome: ok (at least one output), ignored (opens, clicks, "
            "nothing to report) or dead_letter.",
            ["outcome"],
            registry=registry,
        )
        self.dead_letters = PromCounter(
            _PREFIX + "dead_letters",
            "Records sent to the dead-letter topic, by error kind.",
            ["reason"],
            registry=registry,
        )
        self.events = PromCounter(
            _PREFIX + "events",
            "Normalized recipient events by provider, status, recipientState and "
            "mailbox-provider group.",
            ["provider", "status", "recipient_state", "mailbox_provider"],
            registry=registry,
        )
        self.classified = PromCounter(
            _PREFIX + "classified",
            "Normalized events by the evidence that decided the recipientState.",
            ["classified_by"],
            registry=registry,
        )
        self.suppressions = PromCounter(
            _PREFIX + "suppressions",
            "Suppression updates by provider, mailbox-provider group, action and reason "
            "(a recipientState, Complaint, Unsubscribe, ...).",
            ["provider", "mailbox_provider", "action", "reason"],
            registry=registry,
        )
        self.commit_failures = PromCounter(
            _PREFIX + "commit_failures",
            "Offset commits that failed; the records will be redelivered.",
            registry=registry,
        )
        self.produce_failures = PromCounter(
            _PREFIX + "produce_failures",
            "Batches whose outputs were not all acknowledged; the batch is retried.",
            registry=registry,
        )
        self.rebalances = PromCounter(
            _PREFIX + "rebalances",
            "Partition assignment changes of this worker, by kind (assigned, revoked).",
            ["kind"],
            registry=registry,
        )
        self.batch_seconds = Histogram(
            _PREFIX + "batch_seconds",
            "Time from a batch's poll to its commit: classify, produce, acknowledge.",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.event_age = Histogram(
            _PREFIX + "event_age_seconds",
            "Age of each event when processed: occurredAt to now.",
            buckets=_AGE_BUCKETS,
            registry=registry,
        )
        self.lag = Gauge(
            _PREFIX + "consumer_lag_records",
            "Records behind the end of each assigned input partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.lag_seconds = Gauge(
            _PREFIX + "consumer_lag_seconds",
            "Age of the last record consumed from each input partition while records wait "
            "behind it (0 when caught up): how far behind the worker is in time.",
            ["topic", "partition"],
            registry=registry,
        )
        self.in_flight = Gauge(
            _PREFIX + "in_flight_records",
            "Input records polled but not yet committed.",
            registry=registry,
        )
        self.ready = Gauge(
            _PREFIX + "ready",
            "1 when the worker is connected and has partitions assigned.",
            registry=registry,
        )
        self.tracked_addresses = Gauge(
            _PREFIX + "suppression_state_addresses",
            "Addresses whose state the suppression stage keeps, per input partition.",
            ["partition"],
            registry=registry,
        )
        self.restore_seconds = Gauge(
            _PREFIX + "suppression_state_restore_seconds",
            "Time the suppression stage took to restore a partition's state from its changelog.",
            ["partition"],
            registry=registry,
        )
        self.expired_addresses = PromCounter(
            _PREFIX + "suppression_state_expired",
            "Addresses the suppression stage forgot after the state's time to live.",
            registry=registry,
        )
        self.build_info = Gauge(
            _PREFIX + "build_info",
            "Constant 1, labelled with the worker version and the rules and policy versions.",
            ["version", "rules_version", "policy_version"],
            registry=registry,
        )

        # Series that alerts divide by or test for must exist at 0 before the first event.
        for outcome in ("ok", "ignored", "dead_letter"):
            self.records.labels(outcome)
        for kind in ("assigned", "revoked"):
            self.rebalances.labels(kind)
        for reason in ("decode", "unknown_provider", "parse"):
            self.dead_letters.labels(reason)

    def follow(self, probe: Probe, in_flight: Callable[[], int]) -> None:
        """Compute ``ready`` and ``in_flight`` at scrape time from what the workers say.

        ``probe`` answers /readyz (one worker's ``Health``, or a ``HealthGroup`` when
        both stages share the process) and ``in_flight`` counts the records their
        batches hold: one source each, so two workers never overwrite one gauge and
        the gauge never disagrees with the probe.
        """
        self.ready.set_function(lambda: 1.0 if probe.ready()[0] else 0.0)
        self.in_flight.set_function(lambda: float(in_flight()))

    def observe_batch(
        self, outcomes: Iterable[Outcome], dead_letter_kinds: Iterable[str], now: float
    ) -> None:
        """Count a batch's records and outputs (``now``: Unix seconds).

        Sums per label set first and increments each series once: a ``labels().inc()``
        per event cost 5 % of the worker's time.
        """
        records: Counter[str] = Counter()
        events: Counter[tuple[str, str, str, str]] = Counter()
        classified: Counter[str] = Counter()
        suppressions: Counter[tuple[str, str, str, str]] = Counter()
        for outcome in outcomes:
            records["ok" if outcome.events or outcome.suppressions else "ignored"] += 1
            for event in outcome.events:
                state = event.recipient_state.value if event.recipient_state else "none"
                events[event.provider, event.status.value, state, event.mailbox_provider] += 1
                classified[event.classified_by.value] += 1
                occurred = datetime.fromisoformat(event.occurred_at).timestamp()
                self.event_age.observe(max(0.0, now - occurred))
            for update in outcome.suppressions:
                suppressions[
                    update.provider, update.mailbox_provider, update.action.value, update.reason
                ] += 1
        for kind, count in Counter(dead_letter_kinds).items():
            records["dead_letter"] += count
            self.dead_letters.labels(kind).inc(count)
        _add(self.records, records)
        _add(self.events, events)
        _add(self.classified, classified)
        _add(self.suppressions, suppressions)

    def observe_suppressions(self, updates: Iterable[SuppressionUpdate]) -> None:
        """Count the suppression stage's own updates (it has no input-record outcome)."""
        counts: Counter[tuple[str, str, str, str]] = Counter(
            (u.provider, u.mailbox_provider, u.action.value, u.reason) for u in updates
        )
        _add(self.suppressions, counts)

    def observe_outcome(self, outcome: Outcome, now: float) -> None:
        """Count one processed record and every output it gave."""
        self.observe_batch((outcome,), (), now)

    def observe_dead_letter(self, kind: str) -> None:
        self.observe_batch((), (kind,), 0.0)


def _add(metric: PromCounter, counts: Mapping[Any, int]) -> None:
    for labels, count in counts.items():
        values = labels if isinstance(labels, tuple) else (labels,)
        metric.labels(*values).inc(count)

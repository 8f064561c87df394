#!/usr/bin/env python3
"""Write deploy/grafana/bounce-consumer.json, the worker's Grafana dashboard.

The dashboard is generated so that its ~40 panels share one style, one set of filters
and one datasource variable, and their ids and grid positions never collide.  Edit
this file, then run ``python deploy/grafana/build_dashboard.py`` (``--check`` only
compares); tests/deploy/test_grafana.py fails when the committed JSON differs.

Every query uses the worker's raw metrics with ``rate()``/``increase()`` (no recording
rule), so the dashboard works whatever recording rules a Prometheus has loaded.  The
ratios are defined as in deploy/prometheus/rules.yaml, so that a panel shows the number
an alert fired on: bounce, block, hard-bounce and spam-block rates divide by final
events (status other than Deferred: one per message; a deferred message reports a
Deferred event per retry), the deferral rate by all events, the complaint rate
complaints by delivered events.  tests/deploy/test_grafana.py checks the selectors
against the rules file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUTPUT = Path(__file__).with_name("bounce-consumer.json")
UID = "bounce-consumer"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"

# Filters: every worker metric carries the scrape's job; events and suppressions also
# carry provider and mailbox_provider.
JOB = 'job=~"$job"'
EVENTS = f'{JOB}, provider=~"$provider", mailbox_provider=~"$mailbox_provider"'

# One event per message: the denominator of the outcome ratios.
FINAL = 'status!="Deferred"'
# Hard bounces: the address or its domain does not exist.
HARD_BOUNCES = ('status="Bounce"', 'recipient_state=~"HardBounce|DNSFailure"')
# Spam blocks: the mailbox provider refused the message as spam or the sender as a known
# spammer (MailBlockAttachmentDetected is a content block, not counted).
SPAM_STATES = "MailBlockSpamDetected|MailBlockKnownSpammer|SoftBounceSpamDetected"
SPAM_BLOCKS = ('status="Blocked"', f'recipient_state=~"{SPAM_STATES}"')
# recipientState values the classifier could not explain.
UNDETERMINED_STATES = "SoftBounceUndetermined|UnhandledState"
PER_POD = "pod, instance"
POD_LEGEND = "{{pod}} {{instance}}"

# Thresholds: (colour, from value) after a green base.
GMAIL_YAHOO = [("yellow", 0.001), ("red", 0.003)]  # bulk-sender spam-rate limits
HARD_BOUNCE = [("yellow", 0.01), ("red", 0.02)]
BOUNCE = [("yellow", 0.02), ("red", 0.05)]
BLOCK = [("yellow", 0.01), ("red", 0.03)]
DEFERRAL = [("yellow", 0.05), ("red", 0.15)]
UNDETERMINED = [("yellow", 0.05), ("red", 0.15)]


def events(*matchers: str) -> str:
    """The events counter under the dashboard's filters and ``matchers``."""
    return "mailevents_events_total{" + ", ".join((EVENTS, *matchers)) + "}"


def suppressions(*matchers: str) -> str:
    return "mailevents_suppressions_total{" + ", ".join((EVENTS, *matchers)) + "}"


def metric(name: str, *matchers: str) -> str:
    return name + "{" + ", ".join((JOB, *matchers)) + "}"


def ratio(numerator: str, denominator: str, by: str = "") -> str:
    """sum(rate(numerator)) / sum(rate(denominator)) like the recording rules do it.

    0 (not absent) where the denominator has traffic but the numerator none; no sample
    (not NaN) where the denominator is 0.
    """
    agg = f"sum by ({by}) " if by else "sum"
    top = f"{agg}(rate({numerator}[{RATE}]))"
    bottom = f"{agg}(rate({denominator}[{RATE}]))"
    return f"(\n  {top}\n  or\n  0 * {bottom}\n)\n/\n({bottom} > 0)"


def status_ratio(status: str, by: str = "") -> str:
    """Events of ``status`` / final events; deferrals / all events."""
    denominator = events() if status == "Deferred" else events(FINAL)
    return ratio(events(f'status="{status}"'), denominator, by)


def hard_bounce_ratio(by: str = "") -> str:
    return ratio(events(*HARD_BOUNCES), events(FINAL), by)


def spam_block_ratio(by: str = "") -> str:
    return ratio(events(*SPAM_BLOCKS), events(FINAL), by)


def complaint_ratio(by: str = "") -> str:
    """Complaints per delivered message: how Gmail and Yahoo compute the spam rate."""
    return ratio(
        suppressions('action="suppress"', 'reason="Complaint"'), events('status="Delivered"'), by
    )


def undetermined_ratio(by: str = "") -> str:
    return ratio(
        events(f'recipient_state=~"{UNDETERMINED_STATES}"'), events('recipient_state!="none"'), by
    )


def quantile(q: float, histogram: str) -> str:
    return f"histogram_quantile({q}, sum by (le) (rate({metric(histogram + '_bucket')}[{RATE}])))"


def target(expr: str, legend: str = "__auto", **extra: Any) -> dict[str, Any]:
    return {"expr": expr, "legendFormat": legend, **extra}


def thresholds(steps: list[tuple[str, float]], base: str = "green") -> dict[str, Any]:
    return {
        "mode": "absolute",
        "steps": [{"color": base, "value": None}]
        + [{"color": color, "value": value} for color, value in steps],
    }


def timeseries(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    *,
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    stack: bool = False,
    steps: list[tuple[str, float]] | None = None,
    soft_max: float | None = None,
    max_value: float | None = None,
    decimals: int | None = None,
) -> dict[str, Any]:
    """A time series panel; ``steps`` are also drawn as dashed lines."""
    custom: dict[str, Any] = {
        "drawStyle": "line",
        "lineInterpolation": "linear",
        "lineWidth": 1,
        "fillOpacity": 60 if stack else 10,
        "gradientMode": "none",
        "showPoints": "never",
        "spanNulls": False,
        "axisSoftMin": 0,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "dashed" if steps else "off"},
    }
    if soft_max is not None:
        custom["axisSoftMax"] = soft_max
    defaults: dict[str, Any] = {
        "unit": unit,
        "min": 0,
        "color": {"mode": "palette-classic"},
        "custom": custom,
        "thresholds": thresholds(steps or []),
    }
    if max_value is not None:
        defaults["max"] = max_value
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "size": (width, height),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {
                "showLegend": True,
                "displayMode": "table",
                "placement": "bottom",
                "calcs": ["mean", "max", "lastNotNull"],
                "sortBy": "Last *",
                "sortDesc": True,
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": targets,
    }


def stat(
    title: str,
    description: str,
    expr: str,
    *,
    unit: str = "short",
    steps: list[tuple[str, float]] | None = None,
    base: str = "green",
    decimals: int | None = None,
    instant: bool = False,
) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": "thresholds"},
        "thresholds": thresholds(steps or [], base),
        "mappings": [],
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    extra = {"instant": True, "range": False} if instant else {}
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "size": (4, 4),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none" if instant else "area",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "value",
            "wideLayout": True,
            "showPercentChange": False,
        },
        "targets": [target(expr, "", **extra)],
    }


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def overview() -> list[dict[str, Any]]:
    return [
        row("Overview (selected providers and mailbox groups)"),
        stat(
            "Events / s",
            "Normalized recipient events per second (every status).",
            f"sum(rate({events()}[{RATE}]))",
            decimals=1,
        ),
        stat(
            "Bounce rate",
            "Events with status Bounce / final events (every status but Deferred: one per "
            "message).",
            status_ratio("Bounce"),
            unit="percentunit",
            steps=BOUNCE,
            decimals=2,
        ),
        stat(
            "Block rate",
            "Events with status Blocked / final events (every status but Deferred: one per "
            "message).",
            status_ratio("Blocked"),
            unit="percentunit",
            steps=BLOCK,
            decimals=2,
        ),
        stat(
            "Deferral rate",
            "Events with status Deferred / all events (a deferred message reports one per retry).",
            status_ratio("Deferred"),
            unit="percentunit",
            steps=DEFERRAL,
            decimals=2,
        ),
        stat(
            "Hard-bounce rate",
            "Hard bounces (status Bounce, recipientState HardBounce or DNSFailure) / final "
            "events; ESPs act on more than 2%, Amazon SES reviews accounts at 5%.",
            hard_bounce_ratio(),
            unit="percentunit",
            steps=HARD_BOUNCE,
            decimals=2,
        ),
        stat(
            "Spam-block rate",
            f"Spam blocks (status Blocked, recipientState {SPAM_STATES.replace('|', ', ')}) "
            "/ final events; against the Gmail/Yahoo bulk-sender limits of 0.1% and 0.3%.",
            spam_block_ratio(),
            unit="percentunit",
            steps=GMAIL_YAHOO,
            decimals=3,
        ),
        stat(
            "Complaint rate",
            "Complaint suppressions / delivered events; Gmail and Yahoo require bulk senders "
            "to stay below 0.1% and never reach 0.3%.",
            complaint_ratio(),
            unit="percentunit",
            steps=GMAIL_YAHOO,
            decimals=3,
        ),
        stat(
            "Undetermined share",
            "Events the classifier could not explain (SoftBounceUndetermined + "
            "UnhandledState) / events with a recipientState. Rising: a provider changed "
            "its wording or format; see the classification rules.",
            undetermined_ratio(),
            unit="percentunit",
            steps=UNDETERMINED,
            decimals=2,
        ),
        stat(
            "Dead letters (time range)",
            "Records sent to the dead-letter topic over the dashboard's time range.",
            f"sum(increase({metric('mailevents_dead_letters_total')}[$__range]))",
            steps=[("yellow", 1), ("red", 100)],
            decimals=0,
            instant=True,
        ),
        stat(
            "Consumer lag (records)",
            "Records behind the end of the input partitions, all partitions together.",
            f"sum(max by (topic, partition) ({metric('mailevents_consumer_lag_records')}))",
            steps=[("yellow", 10_000), ("red", 100_000)],
            decimals=0,
        ),
        stat(
            "Consumer lag (seconds)",
            "The worst partition's lag in time: age of the last record consumed while "
            "records wait behind it (0 when caught up).",
            f"max({metric('mailevents_consumer_lag_seconds')})",
            unit="s",
            steps=[("yellow", 60), ("red", 300)],
        ),
        stat(
            "Ready workers",
            "Workers reporting ready: connected to the brokers, with partitions assigned. "
            "Red: none is.",
            f"sum({metric('mailevents_ready')})",
            steps=[("green", 1)],
            base="red",
            decimals=0,
        ),
    ]


def rates() -> list[dict[str, Any]]:
    panels: list[dict[str, Any]] = [row("Bounce, block and deferral rates")]
    for status, name, steps, denominator in (
        ("Bounce", "Bounce", BOUNCE, "final events (every status but Deferred)"),
        ("Blocked", "Block", BLOCK, "final events (every status but Deferred)"),
        ("Deferred", "Deferral", DEFERRAL, "all events"),
    ):
        for by, legend, what in (
            ("provider", "{{provider}}", "sending provider (ESP or MTA)"),
            ("mailbox_provider", "{{mailbox_provider}}", "recipient's mailbox-provider group"),
        ):
            panels.append(
                timeseries(
                    f"{name} rate by {'provider' if by == 'provider' else 'mailbox group'}",
                    f"Events with status {status} / {denominator}, per {what}.",
                    [target(status_ratio(status, by), legend)],
                    unit="percentunit",
                    steps=steps,
                )
            )
    panels += [
        timeseries(
            "Events / s by status",
            "Normalized recipient events per second, stacked by status.",
            [target(f"sum by (status) (rate({events()}[{RATE}]))", "{{status}}")],
            stack=True,
        ),
        timeseries(
            "Events / s by provider",
            "Normalized recipient events per second, stacked by sending provider.",
            [target(f"sum by (provider) (rate({events()}[{RATE}]))", "{{provider}}")],
            stack=True,
        ),
    ]
    return panels


def reputation() -> list[dict[str, Any]]:
    return [
        row("Reputation against mailbox-provider limits"),
        timeseries(
            "Hard-bounce rate by mailbox group",
            "Hard bounces (status Bounce, recipientState HardBounce or DNSFailure) / final "
            "events. Above 2% ESPs treat the sender as a list-hygiene problem (the "
            "HardBounceRateHigh alert, per provider over 1h): clean the list.",
            [target(hard_bounce_ratio("mailbox_provider"), "{{mailbox_provider}}")],
            unit="percentunit",
            width=8,
            steps=HARD_BOUNCE,
            soft_max=0.025,
        ),
        timeseries(
            "Spam-block rate by mailbox group",
            f"Spam blocks (status Blocked, recipientState {SPAM_STATES.replace('|', ', ')}) "
            "/ final events. Dashed: the Gmail/Yahoo bulk-sender limits of 0.1% and 0.3% "
            "(the SpamBlockRateHigh alert uses 1h windows).",
            [target(spam_block_ratio("mailbox_provider"), "{{mailbox_provider}}")],
            unit="percentunit",
            width=8,
            steps=GMAIL_YAHOO,
            soft_max=0.004,
        ),
        timeseries(
            "Complaint rate by mailbox group",
            "Complaint suppressions / delivered events (Gmail's and Yahoo's definition of "
            "the spam rate). Dashed: their bulk-sender limits, 0.1% (stay below) and 0.3% "
            "(never reach); they measure per day, as the ComplaintRateAboveGmailYahooLimit "
            "alert does.",
            [target(complaint_ratio("mailbox_provider"), "{{mailbox_provider}}")],
            unit="percentunit",
            width=8,
            steps=GMAIL_YAHOO,
            soft_max=0.004,
        ),
    ]


def classification() -> list[dict[str, Any]]:
    mix = events('recipient_state!="none"')
    classified = metric("mailevents_classified_total")
    return [
        row("Classification"),
        timeseries(
            "recipientState mix",
            "Events per second by Iterable recipientState (events without one, such as "
            "deliveries, left out), stacked.",
            [target(f"sum by (recipient_state) (rate({mix}[{RATE}]))", "{{recipient_state}}")],
            stack=True,
        ),
        {
            "type": "bargauge",
            "title": "recipientState over the time range",
            "description": "Events per recipientState over the dashboard's time range.",
            "size": (12, 8),
            "fieldConfig": {
                "defaults": {
                    "unit": "short",
                    "decimals": 0,
                    "min": 0,
                    "color": {"mode": "palette-classic"},
                    "thresholds": thresholds([]),
                },
                "overrides": [],
            },
            "options": {
                "displayMode": "gradient",
                "orientation": "horizontal",
                "showUnfilled": True,
                "valueMode": "color",
                "namePlacement": "auto",
                "sizing": "auto",
                "minVizHeight": 10,
                "minVizWidth": 0,
                "maxVizHeight": 300,
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            },
            "targets": [
                target(
                    f"sort_desc(sum by (recipient_state) (increase({mix}[$__range])))",
                    "{{recipient_state}}",
                    instant=True,
                    range=False,
                )
            ],
        },
        timeseries(
            "Classified by (share)",
            "Which evidence decided each event's recipientState: the provider's own "
            "classification, a text rule, the enhanced status code, the SMTP reply code or "
            "the fallback. All providers (this counter has no provider label).",
            [
                target(
                    f"sum by (classified_by) (rate({classified}[{RATE}]))\n"
                    f"/ on () group_left ()\nsum(rate({classified}[{RATE}]))",
                    "{{classified_by}}",
                )
            ],
            unit="percentunit",
            stack=True,
            max_value=1,
        ),
        timeseries(
            "Undetermined share by provider",
            "SoftBounceUndetermined + UnhandledState / events with a recipientState, per "
            "provider: where the rules fail to explain what providers send.",
            [target(undetermined_ratio("provider"), "{{provider}}")],
            unit="percentunit",
            steps=UNDETERMINED,
        ),
    ]


def suppression_panels() -> list[dict[str, Any]]:
    return [
        row("Suppressions"),
        timeseries(
            "Suppressions / s by action and reason",
            "Suppression-list updates per second: suppress for hard bounces (by "
            "recipientState), complaints and unsubscribes; unsuppress for resubscribes and "
            "reactivations.",
            [
                target(
                    f"sum by (action, reason) (rate({suppressions()}[{RATE}]))",
                    "{{action}} {{reason}}",
                )
            ],
            stack=True,
        ),
        timeseries(
            "Suppressions / s by mailbox group and action",
            "Suppression-list updates per second per recipient mailbox-provider group.",
            [
                target(
                    f"sum by (mailbox_provider, action) (rate({suppressions()}[{RATE}]))",
                    "{{mailbox_provider}} {{action}}",
                )
            ],
            stack=True,
        ),
    ]


def pipeline() -> list[dict[str, Any]]:
    return [
        row("Pipeline: records, dead letters, lag and latency (all providers)"),
        timeseries(
            "Records / s by outcome",
            "Input records per second: ok (at least one output), ignored (opens, clicks, "
            "nothing to report) or dead_letter.",
            [
                target(
                    f"sum by (outcome) (rate({metric('mailevents_records_total')}[{RATE}]))",
                    "{{outcome}}",
                )
            ],
            width=8,
            stack=True,
        ),
        timeseries(
            "Dead letters / s by reason",
            "Records sent to the dead-letter topic per second: decode (not JSON, empty, "
            "too large), unknown_provider (no parser recognises it), parse (a known shape "
            "with missing or wrong fields).",
            [
                target(
                    f"sum by (reason) (rate({metric('mailevents_dead_letters_total')}[{RATE}]))",
                    "{{reason}}",
                )
            ],
            width=8,
            stack=True,
            steps=[("red", 0.01)],
        ),
        timeseries(
            "Commit and produce failures",
            "Failed offset commits (records redelivered) and batches whose outputs were not "
            "all acknowledged (batch retried), per rate interval. Any is worth a look.",
            [
                target(
                    f"sum(increase({metric('mailevents_commit_failures_total')}[{RATE}]))",
                    "commit failures",
                ),
                target(
                    f"sum(increase({metric('mailevents_produce_failures_total')}[{RATE}]))",
                    "produce failures",
                ),
            ],
            width=8,
            steps=[("red", 1)],
            decimals=0,
        ),
        timeseries(
            "Consumer lag (records) per partition",
            "Records behind the end of each input partition, as reported by the worker "
            "that owns it.",
            [
                target(
                    f"max by (topic, partition) ({metric('mailevents_consumer_lag_records')})",
                    "{{topic}}/{{partition}}",
                )
            ],
            steps=[("yellow", 10_000), ("red", 100_000)],
        ),
        timeseries(
            "Consumer lag (seconds) per partition",
            "Age of the last record consumed from each partition while records wait behind "
            "it (0 when caught up): how far behind the worker is in time.",
            [
                target(
                    f"max by (topic, partition) ({metric('mailevents_consumer_lag_seconds')})",
                    "{{topic}}/{{partition}}",
                )
            ],
            unit="s",
            steps=[("yellow", 60), ("red", 300)],
        ),
        timeseries(
            "Batch latency",
            "Time from a batch's poll to its commit (classify, produce, acknowledge), all "
            "workers: p50 and p99.",
            [
                target(quantile(0.5, "mailevents_batch_seconds"), "p50"),
                target(quantile(0.99, "mailevents_batch_seconds"), "p99"),
            ],
            unit="s",
            width=8,
            steps=[("yellow", 5), ("red", 30)],
        ),
        timeseries(
            "Event age when processed",
            "occurredAt to processing, p50 and p99: webhooks arrive in seconds, DSNs of long "
            "retry queues days late; a rise of p50 with a growing lag means the worker "
            "falls behind.",
            [
                target(quantile(0.5, "mailevents_event_age_seconds"), "p50"),
                target(quantile(0.99, "mailevents_event_age_seconds"), "p99"),
            ],
            unit="s",
            width=8,
        ),
        timeseries(
            "In-flight records per pod",
            "Input records polled but not yet committed, per worker.",
            [
                target(
                    f"sum by ({PER_POD}) ({metric('mailevents_in_flight_records')})",
                    POD_LEGEND,
                )
            ],
            width=8,
            decimals=0,
        ),
        timeseries(
            "Suppression stage: tracked addresses",
            "Addresses whose soft-bounce history or suppression the suppression stage keeps, "
            "per partition (memory grows with it), and how many it forgets per hour after "
            "the policy's ttl_days of silence.",
            [
                target(
                    f"sum by (partition) ({metric('mailevents_suppression_state_addresses')})",
                    "partition {{partition}}",
                ),
                target(
                    f"sum(increase({metric('mailevents_suppression_state_expired_total')}[1h]))",
                    "expired in the last hour",
                ),
            ],
            width=12,
            decimals=0,
        ),
        timeseries(
            "Suppression stage: state restore time",
            "Seconds the last restore of each partition's state from the changelog took; "
            "the stage is not ready while it restores.",
            [
                target(
                    f"max by (partition) "
                    f"({metric('mailevents_suppression_state_restore_seconds')})",
                    "partition {{partition}}",
                )
            ],
            unit="s",
            width=12,
        ),
    ]


def workers() -> list[dict[str, Any]]:
    return [
        row("Workers"),
        {
            "type": "state-timeline",
            "title": "Ready and up per pod",
            "description": "up: Prometheus scraped the pod. ready: the worker is connected "
            "and has partitions assigned (what /readyz reports).",
            "size": (12, 8),
            "fieldConfig": {
                "defaults": {
                    "color": {"mode": "thresholds"},
                    "thresholds": thresholds([("green", 1)], base="red"),
                    "mappings": [
                        {
                            "type": "value",
                            "options": {
                                "0": {"text": "no", "color": "red", "index": 0},
                                "1": {"text": "yes", "color": "green", "index": 1},
                            },
                        }
                    ],
                    "custom": {"fillOpacity": 70, "lineWidth": 0},
                },
                "overrides": [],
            },
            "options": {
                "showValue": "never",
                "mergeValues": True,
                "alignValue": "left",
                "rowHeight": 0.9,
                "legend": {"showLegend": False, "displayMode": "list", "placement": "bottom"},
                "tooltip": {"mode": "single", "sort": "none"},
            },
            "targets": [
                target(f"max by ({PER_POD}) (up{{{JOB}}})", f"up {POD_LEGEND}"),
                target(f"max by ({PER_POD}) ({metric('mailevents_ready')})", f"ready {POD_LEGEND}"),
            ],
        },
        timeseries(
            "Rebalances",
            "Partition assignment changes per rate interval, by kind (assigned, revoked). "
            "Steady rebalancing: pods restarting, or batches slower than the poll interval.",
            [
                target(
                    f"sum by (kind) (increase({metric('mailevents_rebalances_total')}[{RATE}]))",
                    "{{kind}}",
                )
            ],
            width=6,
            decimals=0,
        ),
        {
            "type": "table",
            "title": "Build info",
            "description": "Pods per worker version, rules version and policy version: "
            "more than one line during a rollout.",
            "size": (6, 8),
            "fieldConfig": {
                "defaults": {
                    "color": {"mode": "thresholds"},
                    "thresholds": thresholds([]),
                    "custom": {"align": "auto", "cellOptions": {"type": "auto"}},
                },
                "overrides": [],
            },
            "options": {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}},
            "transformations": [
                {
                    "id": "organize",
                    "options": {
                        "excludeByName": {"Time": True},
                        "renameByName": {
                            "version": "version",
                            "rules_version": "rules",
                            "policy_version": "policy",
                            "Value": "pods",
                        },
                    },
                }
            ],
            "targets": [
                target(
                    "count by (version, rules_version, policy_version) "
                    f"({metric('mailevents_build_info')})",
                    "",
                    format="table",
                    instant=True,
                    range=False,
                )
            ],
        },
        timeseries(
            "CPU per pod",
            "CPU seconds per second (cores) each worker process uses.",
            [
                target(
                    f"sum by ({PER_POD}) (rate({metric('process_cpu_seconds_total')}[{RATE}]))",
                    POD_LEGEND,
                )
            ],
            decimals=2,
        ),
        timeseries(
            "Resident memory per pod",
            "Resident set size of each worker process.",
            [
                target(
                    f"sum by ({PER_POD}) ({metric('process_resident_memory_bytes')})",
                    POD_LEGEND,
                )
            ],
            unit="bytes",
        ),
    ]


def layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Give each panel an id, the datasource and a grid position, left to right."""
    x = y = line_height = 0
    out = []
    for number, spec in enumerate(panels, start=1):
        panel = {"id": number, **spec}
        if panel["type"] == "row":
            if x:
                x, y = 0, y + line_height
            panel["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": y}
            y += 1
            line_height = 0
            out.append(panel)
            continue
        width, height = panel.pop("size")
        if x + width > 24:
            x, y, line_height = 0, y + line_height, 0
        panel["gridPos"] = {"h": height, "w": width, "x": x, "y": y}
        x += width
        line_height = max(line_height, height)
        panel["datasource"] = DATASOURCE
        panel["targets"] = [
            {"datasource": DATASOURCE, "refId": chr(ord("A") + index), "editorMode": "code",
             "range": True, **query}
            for index, query in enumerate(panel["targets"])
        ]  # fmt: skip
        out.append(panel)
    return out


def variable(name: str, label: str, query: str, *, all_value: str | None) -> dict[str, Any]:
    """A multi-value query variable with "All" (``all_value`` ``None``: every value listed)."""
    out: dict[str, Any] = {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "definition": query,
        "query": {
            "qryType": 1,
            "query": query,
            "refId": "PrometheusVariableQueryEditor-VariableQuery",
        },
        "refresh": 2,
        "regex": "",
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "hide": 0,
    }
    if all_value is not None:
        out["allValue"] = all_value
    return out


def dashboard() -> dict[str, Any]:
    panels = layout(
        overview()
        + rates()
        + reputation()
        + classification()
        + suppression_panels()
        + pipeline()
        + workers()
    )
    return {
        "uid": UID,
        "title": "bounce-consumer",
        "description": "Email delivery events classified by bounce-consumer: bounce, block, "
        "deferral, complaint and spam-block rates by provider and mailbox group, "
        "recipientState mix, suppressions, dead letters, lag, latency. Generated by "
        "deploy/grafana/build_dashboard.py.",
        "tags": ["bounce-consumer", "email", "kafka"],
        "editable": True,
        "graphTooltip": 1,
        "fiscalYearStartMonth": 0,
        "id": None,
        "links": [],
        "liveNow": False,
        "refresh": "1m",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "",
        "weekStart": "",
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "templating": {
            "list": [
                {
                    "type": "datasource",
                    "name": "datasource",
                    "label": "Data source",
                    "query": "prometheus",
                    "regex": "",
                    "refresh": 1,
                    "current": {},
                    "options": [],
                    "hide": 0,
                    "includeAll": False,
                    "multi": False,
                },
                variable("job", "Job", "label_values(mailevents_build_info, job)", all_value=None),
                variable(
                    "provider",
                    "Provider",
                    f"label_values(mailevents_events_total{{{JOB}}}, provider)",
                    all_value=".*",
                ),
                variable(
                    "mailbox_provider",
                    "Mailbox group",
                    "label_values(mailevents_events_total"
                    f'{{{JOB}, provider=~"$provider"}}, mailbox_provider)',
                    all_value=".*",
                ),
            ]
        },
        "panels": panels,
    }


def render() -> str:
    """The dashboard as the committed file's text."""
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

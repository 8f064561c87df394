"""Every metric that the Grafana dashboard and the Prometheus rules query is one that the
real worker exports: read from the /metrics page of a worker process that has handled
every bundled sample payload (the invalid ones too) through a real broker."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from kafkatools import Topics, produce
from prometheus_client.parser import text_string_to_metric_families
from promql_names import metric_names, yaml_fields
from workers import (
    ChildWorker,
    free_port,
    fully_committed,
    http_get,
    wait_until,
    worker_env,
)

pytestmark = pytest.mark.kafka

REPO = Path(__file__).parents[2]
FIXTURES = REPO / "tests" / "fixtures"
GRAFANA = REPO / "deploy" / "grafana"
RULES = REPO / "deploy" / "prometheus" / "rules.yaml"
# Series that Prometheus itself makes: per scrape target, and for alerts.
SCRAPE_GENERATED = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})


def _get(port: int, path: str) -> str:
    status, body = http_get(port, path)
    assert status == 200, f"GET {path}: {status}"
    return body


def _page_names(page: str) -> set[str]:
    """Names a /metrics page declares: every sample name (``x_total``, ``x_bucket``, ...)
    and every family, also one whose labelled series have no child yet (the suppression
    stage's per-partition gauges on a classify worker)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(page):
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def _records_done(page: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
        if sample.name == "mailevents_records_total"
    )


def _dashboard_exprs() -> dict[str, list[str]]:
    """Every PromQL expression of every dashboard file, by file name."""
    found: dict[str, list[str]] = {}
    for path in sorted(GRAFANA.glob("*.json")):
        dashboard = json.loads(path.read_text())
        exprs: list[str] = []
        panels = [*dashboard.get("panels", [])]
        panels += [inner for panel in panels for inner in panel.get("panels", [])]
        for panel in panels:
            exprs += [target["expr"] for target in panel.get("targets", []) if "expr" in target]
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable.get("type") != "query":
                continue
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            match = re.fullmatch(r"\s*label_values\((.+),\s*\w+\s*\)\s*", text)
            assert match, f"{path.name}: variable {variable['name']}: unexpected query {text!r}"
            exprs.append(match.group(1))
        found[path.name] = exprs
    return found


def _unknown(exprs: list[str], known: set[str]) -> dict[str, set[str]]:
    """Expression -> the names in it that are neither exported nor known otherwise."""
    unknown = {}
    for expr in exprs:
        names = {
            name
            for name in metric_names(expr)
            if name not in known and not name.startswith("scrape_")
        }
        if names:
            unknown[expr] = names
    return unknown


async def test_dashboard_and_rules_query_only_metrics_the_worker_exports(
    kafka_bootstrap: str, topics: Topics, group_id: str, tmp_path: Path
) -> None:
    """The names in the dashboard's and the rules' PromQL all appear on a live /metrics page."""
    dashboards = _dashboard_exprs()
    assert dashboards, f"no dashboard in {GRAFANA}"
    assert RULES.is_file(), f"{RULES} is missing"
    fields = yaml_fields(RULES.read_text())
    recorded = {value for key, value in fields if key == "record"}
    rule_exprs = [value for key, value in fields if key == "expr"]
    assert rule_exprs, f"no expr in {RULES}"

    files = sorted(FIXTURES.glob("*/*.json"))
    assert any(path.parent.name == "invalid" for path in files)
    await produce(kafka_bootstrap, topics.raw, [path.read_bytes() for path in files])
    port = free_port()
    worker = ChildWorker(
        worker_env(kafka_bootstrap, topics, group_id, HTTP_PORT=str(port)),
        tmp_path / "worker.log",
    )
    try:
        await wait_until(
            lambda: fully_committed(kafka_bootstrap, group_id, topics.raw), 120, "all committed"
        )
        page = await asyncio.to_thread(_get, port, "/metrics")
        assert worker.process.poll() is None, worker.log()[-3000:]
    finally:
        worker.ensure_stopped()

    exported = _page_names(page)
    assert _records_done(page) >= len(files), "every sample payload counted"
    # The series the payloads must have created: the dashboard's panels need them.
    for name in (
        "mailevents_events_total",
        "mailevents_suppressions_total",
        "mailevents_classified_total",
        "mailevents_dead_letters_total",
        "mailevents_consumer_lag_records",
        "mailevents_consumer_lag_seconds",
        "mailevents_batch_seconds_bucket",
        "mailevents_event_age_seconds_bucket",
        "mailevents_build_info",
        "process_cpu_seconds_total",
    ):
        assert name in exported, f"{name} is not on the /metrics page"

    known = exported | recorded | SCRAPE_GENERATED
    for name, exprs in dashboards.items():
        used = set().union(*(metric_names(expr) for expr in exprs))
        assert len(used & exported) >= 10, f"{name}: suspiciously few metric names found"
        assert _unknown(exprs, known) == {}, f"{name} queries metrics the worker does not export"
    assert _unknown(rule_exprs, known) == {}, f"{RULES.name} queries unknown metrics"
    # Recording rules may build on each other, but every chain must end at real metrics.
    assert set().union(*(metric_names(expr) for expr in rule_exprs)) & exported

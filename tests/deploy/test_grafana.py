"""The Grafana dashboard (deploy/grafana/): importable, one datasource variable for every
panel, PromQL that is sound and uses only the metrics and labels the worker defines, and
exactly what its generator writes.  Also unit tests of the PromQL name extraction that
tests/integration/test_metric_names.py relies on."""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from integration.promql_names import grafana_variables, metric_names, strip_literals, yaml_fields
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.metrics import MetricWrapperBase

from consumer.metrics import Metrics

REPO = Path(__file__).parents[2]
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "bounce-consumer.json"
GENERATOR = GRAFANA / "build_dashboard.py"
RULES = REPO / "deploy" / "prometheus" / "rules.yaml"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
# Labels Prometheus attaches to every scraped series (pod and namespace: Kubernetes
# service discovery, as the ServiceMonitor sets them).
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod"})
# Series Prometheus makes itself for each scrape target.
SCRAPE_SERIES = {"up": TARGET_LABELS}
GRAFANA_GLOBALS = frozenset(
    {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms"}
)
RANGE_FUNCTIONS = frozenset(
    {"rate", "irate", "increase", "delta", "idelta", "deriv", "changes", "resets",
     "predict_linear", "holt_winters", "double_exponential_smoothing"}
)  # fmt: skip
UNITS = frozenset({"percentunit", "s", "short", "bytes"})

_SELECTOR = re.compile(r"(?P<name>[A-Za-z_:][\w:]*)?\s*\{(?P<body>[^{}]*)\}")
_MATCHER = re.compile(r'\s*(?P<label>[A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*""\s*')
_CLAUSE = re.compile(
    r"\b(?P<kind>by|without|on|ignoring|group_left|group_right)\s*\((?P<labels>[^()]*)\)"
)
_LEGEND_LABEL = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")
_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")


# --- the dashboard as data ---------------------------------------------------------


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboard", GENERATOR)
    assert spec is not None and spec.loader is not None, f"{GENERATOR} is missing"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    """The committed dashboard JSON."""
    assert DASHBOARD.is_file(), f"{DASHBOARD} is missing"
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels of collapsed rows included."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _data_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [panel for panel in _panels(dashboard) if panel["type"] != "row"]


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(panel title, target) of every query of every panel."""
    return [
        (panel["title"], target)
        for panel in _data_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def _variable(dashboard: dict[str, Any], name: str) -> dict[str, Any]:
    for variable in dashboard["templating"]["list"]:
        if variable["name"] == name:
            return dict(variable)
    raise AssertionError(f"no template variable {name!r}")


def _variable_selector(variable: dict[str, Any]) -> tuple[str, str]:
    """(series selector, label) of a ``label_values(selector, label)`` variable."""
    query = variable["query"]
    text = query["query"] if isinstance(query, dict) else query
    match = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\s*\)\s*", text)
    assert match, f"variable {variable['name']}: not a label_values() query: {text!r}"
    return match.group(1), match.group(2)


# --- what the worker exports ---------------------------------------------------------


def exported_labels() -> dict[str, frozenset[str]]:
    """Every sample name of the worker's /metrics page and its label names.

    The worker's own metrics come from a fresh ``Metrics``: labelled families have no
    samples until first used, so their label names are read from the metric objects.
    The process, platform and GC collectors that the default registry adds are
    collected for real.
    """
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    names: dict[str, frozenset[str]] = {}
    for item in vars(metrics).values():
        if not isinstance(item, MetricWrapperBase):
            continue
        labels = frozenset(item._labelnames)
        if item._type == "counter":
            names[item._name + "_total"] = labels
        elif item._type == "histogram":
            names[item._name + "_bucket"] = labels | {"le"}
            names[item._name + "_sum"] = labels
            names[item._name + "_count"] = labels
        else:
            names[item._name] = labels
    defaults = CollectorRegistry()
    ProcessCollector(registry=defaults)
    PlatformCollector(registry=defaults)
    GCCollector(registry=defaults)
    for family in defaults.collect():
        for sample in family.samples:
            names[sample.name] = names.get(sample.name, frozenset()) | frozenset(sample.labels)
    return names


EXPORTED = exported_labels()
KNOWN = {**EXPORTED, **SCRAPE_SERIES}


# --- PromQL checks -------------------------------------------------------------------


def _balanced_problems(expr: str) -> list[str]:
    text = strip_literals(expr)
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in text:
        if char in "([{":
            stack.append(char)
        elif char in pairs:
            if not stack or stack.pop() != pairs[char]:
                return [f"unbalanced {char!r}"]
    return [f"unclosed {stack[-1]!r}"] if stack else []


def _group(text: str, start: int) -> str:
    """The text inside the parentheses opening at ``text[start]``."""
    depth = 0
    for index in range(start, len(text)):
        if text[index] == "(":
            depth += 1
        elif text[index] == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1 : index]
    raise AssertionError(f"unbalanced parentheses in {text!r}")


def _group_before(text: str, end: int) -> str:
    """The text inside the parentheses closing at ``text[end]``."""
    depth = 0
    for index in range(end, -1, -1):
        if text[index] == ")":
            depth += 1
        elif text[index] == "(":
            depth -= 1
            if depth == 0:
                return text[index + 1 : end]
    raise AssertionError(f"unbalanced parentheses in {text!r}")


def _labels_of(expr: str) -> frozenset[str]:
    """Labels the series of ``expr``'s metrics may carry."""
    found = set(TARGET_LABELS)
    for name in metric_names(expr):
        found |= KNOWN.get(name, frozenset())
    return frozenset(found)


def _split(labels: str) -> set[str]:
    return {label.strip() for label in labels.split(",") if label.strip()}


def _promql_problems(expr: str, variables: set[str]) -> list[str]:
    """Why ``expr`` (a dashboard query) looks wrong; empty if it looks fine."""
    problems = _balanced_problems(expr)
    if problems:
        return problems
    for name in grafana_variables(expr) - variables - GRAFANA_GLOBALS:
        problems.append(f"unknown variable ${name}")
    text = strip_literals(expr)
    for name in sorted(metric_names(expr) - KNOWN.keys()):
        problems.append(f"metric {name} is not exported by the worker")
    for selector in _SELECTOR.finditer(text):
        name, body = selector.group("name"), selector.group("body")
        if not body.strip():
            problems.append(f"empty selector {selector.group(0)!r}")
        allowed = TARGET_LABELS | KNOWN.get(name or "", frozenset())
        for matcher in body.split(","):
            parsed = _MATCHER.fullmatch(matcher)
            if parsed is None:
                problems.append(f"bad label matcher {matcher!r} in {name}")
            elif name in KNOWN and parsed.group("label") not in allowed:
                problems.append(f"{name} has no label {parsed.group('label')!r}")
    for clause in _CLAUSE.finditer(text):
        labels = _split(clause.group("labels"))
        if clause.group("kind") in {"by", "without"}:
            after = clause.end()
            while after < len(text) and text[after].isspace():
                after += 1
            if after < len(text) and text[after] == "(":
                scope = _group(text, after)
            else:
                before = clause.start() - 1
                while before >= 0 and text[before].isspace():
                    before -= 1
                scope = _group_before(text, before)
        else:
            scope = text
        for label in sorted(labels - _labels_of(scope)):
            problems.append(f"{clause.group('kind')} ({label}): no metric there has it")
    for call in _CALL.finditer(text):
        function = call.group(1)
        argument = _group(text, call.end() - 1)
        if (function in RANGE_FUNCTIONS or function.endswith("_over_time")) and (
            "[" not in argument
        ):
            problems.append(f"{function}() without a range")
        if function == "histogram_quantile" and not (
            "_bucket" in argument and re.search(r"\bby\s*\([^()]*\ble\b", argument)
        ):
            problems.append("histogram_quantile() of something other than buckets by le")
    if "$__rate_interval" in expr and not re.search(r"\[\$__rate_interval\]", expr):
        problems.append("$__rate_interval outside a range selector")
    return problems


def _legend_problems(expr: str, legend: str) -> list[str]:
    """Legend labels that the series of ``expr`` cannot carry."""
    text = strip_literals(expr)
    grouped = [
        _split(clause.group("labels"))
        for clause in _CLAUSE.finditer(text)
        if clause.group("kind") == "by"
    ]
    available = set.union(*grouped) if grouped else set(_labels_of(text))
    return [
        f"legend label {label!r} is not on the series"
        for label in _LEGEND_LABEL.findall(legend)
        if label not in available
    ]


# --- the dashboard -------------------------------------------------------------------


def test_committed_json_is_the_generators_output() -> None:
    """deploy/grafana/bounce-consumer.json is exactly what build_dashboard.py writes."""
    generator = _load_generator()
    assert DASHBOARD.read_text() == generator.render(), (
        "the dashboard JSON is stale: run python deploy/grafana/build_dashboard.py"
    )


def test_dashboard_is_an_importable_grafana_dashboard(dashboard: dict[str, Any]) -> None:
    """The JSON has a fixed uid, the title, a current schema version and panels."""
    assert dashboard["uid"] == "bounce-consumer"
    assert dashboard["title"] == "bounce-consumer"
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["id"] is None, "an exported id would clash with the importing Grafana's"
    assert dashboard["description"]
    assert len(_data_panels(dashboard)) >= 30


def test_datasource_is_a_variable_that_every_panel_and_query_uses(
    dashboard: dict[str, Any],
) -> None:
    """Every panel, query and query variable reads from the ``${datasource}`` variable."""
    variable = _variable(dashboard, "datasource")
    assert variable["type"] == "datasource"
    assert variable["query"] == "prometheus"
    for panel in _data_panels(dashboard):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            assert variable["datasource"] == DATASOURCE, variable["name"]
    builtin = {"type": "grafana", "uid": "-- Grafana --"}
    for annotation in dashboard["annotations"]["list"]:
        assert annotation["datasource"] in (DATASOURCE, builtin), annotation["name"]


@pytest.mark.parametrize("name", ["provider", "mailbox_provider"])
def test_filter_variables_are_multi_value_label_queries(
    dashboard: dict[str, Any], name: str
) -> None:
    """provider and mailbox_provider are multi-value label_values variables with All."""
    variable = _variable(dashboard, name)
    assert variable["type"] == "query"
    assert variable["multi"] is True
    assert variable["includeAll"] is True
    selector, label = _variable_selector(variable)
    assert label == name
    assert metric_names(selector) == {"mailevents_events_total"}


def test_variable_queries_name_real_metrics_and_labels(dashboard: dict[str, Any]) -> None:
    """Every label_values() variable asks for a label its metric really has."""
    names = {variable["name"] for variable in dashboard["templating"]["list"]}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] != "query":
            continue
        selector, label = _variable_selector(variable)
        assert _promql_problems(selector, names) == [], variable["name"]
        (metric,) = metric_names(selector)
        assert label in KNOWN[metric] | TARGET_LABELS, variable["name"]


def test_panel_ids_are_unique_and_the_grid_has_no_overlap(dashboard: dict[str, Any]) -> None:
    """Panel ids are unique and no two panels share a grid cell of the 24-column grid."""
    panels = list(_panels(dashboard))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    taken: dict[tuple[int, int], str] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_every_panel_has_a_description_a_unit_and_queries(dashboard: dict[str, Any]) -> None:
    """Each panel explains itself, has a known unit and non-empty, distinct queries."""
    titles = [panel["title"] for panel in _data_panels(dashboard)]
    assert len(titles) == len(set(titles))
    for panel in _data_panels(dashboard):
        assert panel.get("description", "").strip(), panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), panel["title"]
        if panel["type"] in {"timeseries", "stat"}:
            unit = panel["fieldConfig"]["defaults"]["unit"]
            assert unit in UNITS, panel["title"]
            if re.search(r"\brate\b|share", panel["title"], re.IGNORECASE):
                assert unit == "percentunit", panel["title"]


def test_every_expression_is_sound_promql_over_real_labels(dashboard: dict[str, Any]) -> None:
    """Every query parses superficially and uses only exported metrics and their labels."""
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    problems = [
        f"{title} [{target['refId']}]: {problem}"
        for title, target in _queries(dashboard)
        for problem in _promql_problems(target["expr"], variables)
        + _legend_problems(target["expr"], target.get("legendFormat", ""))
    ]
    assert problems == []


def test_every_worker_metric_is_on_the_dashboard(dashboard: dict[str, Any]) -> None:
    """Each of the worker's own metrics appears in at least one panel."""
    used = set().union(*(metric_names(target["expr"]) for _, target in _queries(dashboard)))
    registry = CollectorRegistry()
    Metrics(registry)
    families = {family.name for family in registry.collect()}
    missing = {
        family
        for family in families
        if not any(name == family or name.startswith(family + "_") for name in used)
    }
    assert missing == set()
    assert "up" in used


def test_reputation_panels_show_the_gmail_and_yahoo_limits(dashboard: dict[str, Any]) -> None:
    """Complaint and spam-block rates carry the 0.1% and 0.3% limits as thresholds."""
    for title in ("Complaint rate by mailbox group", "Spam-block rate by mailbox group"):
        (panel,) = [p for p in _data_panels(dashboard) if p["title"] == title]
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["unit"] == "percentunit"
        steps = [step["value"] for step in defaults["thresholds"]["steps"]]
        assert steps == [None, 0.001, 0.003]
        assert defaults["custom"]["thresholdsStyle"]["mode"] != "off"
        assert "sum by (mailbox_provider)" in panel["targets"][0]["expr"]


def test_recording_rules_the_dashboard_uses_exist() -> None:
    """A recording rule named in a query (a name with a colon) is defined in the rules file."""
    dashboard = json.loads(DASHBOARD.read_text())
    used = {
        name
        for _, target in _queries(dashboard)
        for name in metric_names(target["expr"])
        if ":" in name
    }
    if used:
        assert RULES.is_file(), f"the dashboard uses recording rules but {RULES} is missing"
        defined = {value for key, value in yaml_fields(RULES.read_text()) if key == "record"}
        assert used <= defined


def _selectors(expr: str, metric: str) -> list[frozenset[str]]:
    """The matchers of each ``metric{...}`` selector, without the dashboard's filters."""
    found = []
    for body in re.findall(rf"\b{metric}\s*\{{([^{{}}]*)\}}", expr):
        matchers = {re.sub(r"\s+", "", matcher) for matcher in body.split(",")}
        found.append(frozenset(m for m in matchers if m and '"$' not in m))
    return found


def _recording_rules() -> dict[str, str]:
    """Recording rule name -> expression, from deploy/prometheus/rules.yaml."""
    assert RULES.is_file(), f"{RULES} is missing"
    fields = yaml_fields(RULES.read_text(), frozenset({"record", "alert", "expr"}))
    rules: dict[str, str] = {}
    for (key, name), (next_key, expr) in itertools.pairwise([*fields, ("", "")]):
        if key == "record":
            assert next_key == "expr", f"record {name} is not followed by its expr"
            rules[name] = expr
    return rules


@pytest.mark.parametrize(
    ("panel", "rule", "metric"),
    [
        ("Hard-bounce rate by mailbox group", "mailevents_hard_bounces:rate5m",
         "mailevents_events_total"),
        ("Spam-block rate by mailbox group", "mailevents_spam_blocks:rate5m",
         "mailevents_events_total"),
        ("Complaint rate by mailbox group", "mailevents_complaints:rate1h",
         "mailevents_suppressions_total"),
    ],
)  # fmt: skip
def test_rate_panels_count_what_the_recording_rules_count(
    dashboard: dict[str, Any], panel: str, rule: str, metric: str
) -> None:
    """The hard-bounce, spam-block and complaint panels select the rules' numerators."""
    rules = _recording_rules()
    names = [name for name in rules if name.endswith(":" + rule)]
    assert names, f"no recording rule *:{rule} in {RULES}: update this test and the panel"
    (expr,) = [
        t["expr"] for p in _data_panels(dashboard) if p["title"] == panel for t in p["targets"]
    ]
    for name in names:
        (numerator,) = _selectors(rules[name], metric)
        assert numerator in _selectors(expr, metric), f"{panel} does not count what {name} does"
    if metric == "mailevents_events_total":
        assert frozenset({'status!="Deferred"'}) in _selectors(expr, metric), (
            f"{panel} must divide by final events, as the rules do"
        )


# --- PromQL name extraction ----------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (provider, status) (rate(a_total{status="Bounce", provider=~"$provider"}'
            "[$__rate_interval])) / on () group_left () sum(rate(b_total[5m]))",
            {"a_total", "b_total"},
        ),
        (
            'label_replace(up{job="a"}, "dst", "rate(fake_metric)", "src", "(.*)") > bool 0',
            {"up"},
        ),
        ("foo # bar_metric is only a comment\n+ baz", {"foo", "baz"}),
        ("a > bool 0 and ignoring (l) b offset 1h30m unless c @ end()", {"a", "b", "c"}),
        ("max_over_time(deriv(x[1h:5m])[10m:1m])", {"x"}),
        ('{__name__="abc_total", job="j"} or on (job) def', {"abc_total", "def"}),
        (
            "provider_mailbox:mailevents_bounce_rate:ratio_rate5m > 0.02",
            {"provider_mailbox:mailevents_bounce_rate:ratio_rate5m"},
        ),
        ("sum(x) by (job) / count without (a) (y)", {"x", "y"}),
        ("1e-3 * x + 0x1F - Inf + NaN * 2.5e+3", {"x"}),
        ("a * on (instance) group_left (version) b", {"a", "b"}),
        ("a * ignoring (kind) group_right c", {"a", "c"}),
        ('topk(5, sum by (le) (z)) + count_values("version", w)', {"z", "w"}),
        ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m])))", {"h_bucket"}),
        ("x * $__interval_ms / ${scale} + [[legacy]]", {"x"}),
        ("sum by(rate, sum) (rate(on_off{by='x'}[5m]))", {"on_off"}),
        ('absent(y{a="}"}) and vector(1)', {"y"}),
    ],
)
def test_metric_names_of_tricky_expressions(expr: str, names: set[str]) -> None:
    """Functions, keywords, label lists, strings, comments and numbers are no metric names."""
    assert metric_names(expr) == names


def test_grafana_variables_in_every_syntax() -> None:
    """$x, ${x}, ${x:format} and [[x]] all name the variable x."""
    expr = 'rate(x{a=~"${provider:regex}", b="$job"}[$__rate_interval]) * [[old]] / ${n}'
    assert grafana_variables(expr) == {"provider", "job", "__rate_interval", "old", "n"}


def test_yaml_fields_reads_rule_names_and_expressions_in_order() -> None:
    """Names and expressions come out per rule, in file order; annotations are not read."""
    text = """\
groups:
  - name: rates
    rules:
      - record: provider:bounce:ratio_rate5m
        expr: |
          sum by (provider) (rate(a_total{status="Bounce"}[5m]))
      - alert: Down
        expr: up == 0
        annotations:
          description: "expr: not_a_metric"
"""
    assert yaml_fields(text, frozenset({"record", "alert", "expr"})) == [
        ("record", "provider:bounce:ratio_rate5m"),
        ("expr", 'sum by (provider) (rate(a_total{status="Bounce"}[5m]))'),
        ("alert", "Down"),
        ("expr", "up == 0"),
    ]


def test_expression_checks_catch_typical_mistakes() -> None:
    """The dashboard checks flag unknown labels, variables, metrics and broken syntax."""
    variables = {"job"}
    assert (
        _promql_problems(
            'sum by (le) (rate(mailevents_batch_seconds_bucket{job=~"$job"}[$__rate_interval]))',
            variables,
        )
        == []
    )
    assert _promql_problems("sum(rate(mailevents_records_total[$__rate_interval])", variables)
    assert _promql_problems("rate(mailevents_records_total[$__rate_intervall])", variables)
    assert _promql_problems('mailevents_classified_total{provider="ses"}', variables)
    assert _promql_problems("sum by (provider) (mailevents_records_total)", variables)
    assert _promql_problems("rate(mailevents_records_total)", variables)
    assert _promql_problems("mailevents_record_total", variables)
    assert _promql_problems('mailevents_records_total{outcome~="ok"}', variables)
    assert _promql_problems(
        "histogram_quantile(0.9, rate(mailevents_batch_seconds_sum[5m]))", variables
    )
    assert _legend_problems("sum by (outcome) (mailevents_records_total)", "{{reason}}")

"""The Prometheus rules in deploy/prometheus: promtool accepts them, their unit tests pass,
and every alert carries what on-call needs (severity, summary, description, a runbook
section that exists in docs/alerts.md).

promtool comes from ``deploy/prometheus/fetch-prometheus`` (PATH, the cache, or Debian's
``prometheus`` package).  If it cannot be had, these tests fail: they never skip.

The project has no YAML library, so the structural checks read the rule and test files
with the small YAML-subset reader below; ``test_reader_sees_every_rule`` checks it
against promtool's own count.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
FETCH = PROMETHEUS_DIR / "fetch-prometheus"
RULES = PROMETHEUS_DIR / "rules.yaml"
RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*.yaml"))
ALERTS_DOC = REPO / "docs" / "alerts.md"
RUNBOOK_PREFIX = "docs/alerts.md#"
SEVERITIES = {"warning", "critical"}


# --- promtool ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def promtool() -> Path:
    """promtool's path from fetch-prometheus; the test fails when it cannot be fetched."""
    result = subprocess.run([str(FETCH)], capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        pytest.fail(
            f"{FETCH.relative_to(REPO)} exited {result.returncode}; promtool is required, "
            f"these tests never skip:\n{result.stderr}",
            pytrace=False,
        )
    tool = Path(result.stdout.strip()) / "promtool"
    assert tool.is_file(), f"fetch-prometheus printed {result.stdout!r}, no promtool there"
    return tool


def _promtool(promtool: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=False,
    )


def _output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def test_promtool_check_rules(promtool: Path) -> None:
    """promtool check rules accepts rules.yaml: YAML, PromQL, templates, no duplicates."""
    result = _promtool(promtool, "check", "rules", RULES.relative_to(REPO))
    assert result.returncode == 0, _output(result)
    assert "SUCCESS" in result.stdout, _output(result)


def test_promtool_unit_tests(promtool: Path) -> None:
    """Every promtool unit test in deploy/prometheus/tests passes."""
    assert RULE_TESTS, "no promtool unit tests in deploy/prometheus/tests"
    result = _promtool(promtool, "test", "rules", *(p.relative_to(REPO) for p in RULE_TESTS))
    assert result.returncode == 0, _output(result)


def test_reader_sees_every_rule(promtool: Path) -> None:
    """The rules these tests inspect are all the rules promtool loads."""
    result = _promtool(promtool, "check", "rules", RULES.relative_to(REPO))
    found = re.search(r"SUCCESS: (\d+) rules found", result.stdout)
    assert found, _output(result)
    assert len(_rules()) == int(found.group(1))


# --- what every alert must carry ----------------------------------------------------


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    """Every alert has for, a warning|critical severity, summary, description and runbook_url."""
    alerts = _alerts()
    assert alerts, "rules.yaml has no alert"
    problems = []
    for rule in alerts:
        name = rule["alert"]
        labels = rule.get("labels") or {}
        annotations = rule.get("annotations") or {}
        if labels.get("severity") not in SEVERITIES:
            problems.append(f"{name}: severity {labels.get('severity')!r}")
        if not rule.get("for"):
            problems.append(f"{name}: no 'for:'")
        for key in ("summary", "description", "runbook_url"):
            if not str(annotations.get(key, "")).strip():
                problems.append(f"{name}: no {key}")
        runbook = str(annotations.get("runbook_url", ""))
        if runbook != RUNBOOK_PREFIX + name.lower():
            problems.append(f"{name}: runbook_url {runbook!r}, not {RUNBOOK_PREFIX}{name.lower()}")
    assert not problems, "\n".join(problems)


def test_every_runbook_anchor_is_a_heading_of_alerts_doc() -> None:
    """Each runbook_url anchor is the anchor of a heading in docs/alerts.md."""
    anchors = _heading_anchors(ALERTS_DOC.read_text(encoding="utf-8"))
    missing = sorted(
        {
            rule["annotations"]["runbook_url"].partition("#")[2]
            for rule in _alerts()
            if rule["annotations"]["runbook_url"].partition("#")[2] not in anchors
        }
    )
    assert not missing, f"no heading in {ALERTS_DOC.relative_to(REPO)} for: {missing}"


def test_every_alert_and_severity_is_unit_tested_firing_and_silent() -> None:
    """Each alert has a promtool case where it fires (per severity) and one where it must not."""
    fired: set[tuple[str, str]] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text(encoding="utf-8")).get("tests") or []:
            for check in case.get("alert_rule_test") or []:
                expected = check.get("exp_alerts") or []
                if not expected:
                    silent.add(check["alertname"])
                for alert in expected:
                    fired.add((check["alertname"], alert["exp_labels"]["severity"]))
    wanted = {(rule["alert"], rule["labels"]["severity"]) for rule in _alerts()}
    assert not wanted - fired, f"never tested firing: {sorted(wanted - fired)}"
    names = {name for name, _ in wanted}
    assert not names - silent, f"never tested not firing: {sorted(names - silent)}"


def test_heading_anchor_slugs() -> None:
    """The anchor computation follows GitHub's: lower case, punctuation dropped, spaces to dashes."""
    text = (
        "# Alerts\n## HardBounceRateHigh\n```\n## not a heading\n```\n### Before you rely on it?\n"
    )
    assert _heading_anchors(text) == {"alerts", "hardbounceratehigh", "before-you-rely-on-it"}


# --- helpers ------------------------------------------------------------------------


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the ATX headings of ``markdown`` (outside code fences)."""
    anchors: set[str] = set()
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading and not fenced:
            text = re.sub(r"[^\w\- ]", "", heading.group(1).lower())
            anchors.add(text.replace(" ", "-"))
    return anchors

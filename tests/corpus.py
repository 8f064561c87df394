"""Shared loaders for the test tables (fixtures and diagnostic corpus)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
DIAGNOSTICS = HERE / "data" / "diagnostics"
SCHEMAS = HERE.parent / "schemas"


def diagnostic_cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = []
    for path in sorted(DIAGNOSTICS.glob("*.toml")):
        for case in tomllib.loads(path.read_text("utf-8"))["case"]:
            case["file"] = path.stem
            cases.append(case)
    return cases


def as_generic_event(case: dict[str, Any]) -> bytes:
    """A corpus case in the generic MTA form (input format 8)."""
    event: dict[str, Any] = {
        "finalRecipient": f"rfc822; {case['recipient']}",
        "action": case["action"],
        "diagnosticCode": case["diagnostic"],
        "lastAttemptDate": "Fri, 14 Mar 2025 09:12:05 +0000",
    }
    if "dsn_status" in case:
        event["status"] = case["dsn_status"]
    if "remote_mta" in case:
        event["remoteMta"] = case["remote_mta"]
    return orjson.dumps(event)


def fixture_table() -> list[dict[str, Any]]:
    return list(tomllib.loads((FIXTURES / "expected.toml").read_text("utf-8"))["fixture"])

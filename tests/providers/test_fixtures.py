"""Every provider fixture against its expected (status, recipientState, suppression) table."""

from __future__ import annotations

from typing import Any

import pytest
from corpus import FIXTURES, fixture_table
from providers.harness import run

from consumer.providers import ORDER
from consumer.rules import Rules

TABLE = fixture_table()


def _event_view(event: Any) -> dict[str, Any]:
    view = {"email": event.email, "status": event.status.value}
    if event.recipient_state is not None:
        view["recipientState"] = event.recipient_state.value
    return view


def _suppression_view(update: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "email": update.email,
        "action": update.action.value,
        "reason": update.reason,
    }
    if update.scope is not None:
        view["scope"] = {"kind": update.scope.kind, "id": update.scope.id}
    if update.needs_review:
        view["needsReview"] = True
    return view


@pytest.mark.parametrize("entry", TABLE, ids=[entry["file"] for entry in TABLE])
def test_fixture_classifies_as_expected(entry: dict[str, Any], rules: Rules) -> None:
    """A fixture yields exactly the expected events and suppression updates, in order."""
    outcome = run((FIXTURES / entry["file"]).read_bytes(), rules)
    assert [_event_view(e) for e in outcome.events] == entry["events"], entry.get("note")
    assert [_suppression_view(s) for s in outcome.suppressions] == entry["suppressions"], entry.get(
        "note"
    )
    assert outcome.provider == entry["file"].split("/")[0]


def test_every_fixture_file_is_in_the_table() -> None:
    """No fixture is left without an expectation."""
    listed = {entry["file"] for entry in TABLE}
    on_disk = {
        str(p.relative_to(FIXTURES))
        for p in FIXTURES.glob("*/*.json")
        if p.parent.name != "invalid"
    }
    assert on_disk == listed


@pytest.mark.parametrize("entry", TABLE, ids=[entry["file"] for entry in TABLE])
def test_fixture_matches_exactly_one_provider(entry: dict[str, Any]) -> None:
    """Detection is unambiguous: one provider format, and the right one."""
    import orjson

    payload = orjson.loads((FIXTURES / entry["file"]).read_bytes())
    matching = [p.name for p in ORDER if p.matches(payload)]
    assert matching == [entry["file"].split("/")[0]]

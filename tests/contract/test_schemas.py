"""Outputs validate against schemas/*.v1.json, and the schemas' enums match the code."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from corpus import FIXTURES, SCHEMAS, as_generic_event, diagnostic_cases, fixture_table
from jsonschema import Draft202012Validator
from providers.harness import RECEIVED_AT

from consumer.errors import PayloadError
from consumer.models import ClassifiedBy, DeadLetter, RecipientState, SourceRef, Status
from consumer.pipeline import process
from consumer.providers import BY_NAME
from consumer.rules import Rules


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


EVENT = _validator("normalized-event.v1.json")
UPDATE = _validator("suppression-update.v1.json")
LETTER = _validator("dead-letter.v1.json")


def test_enums_match_the_code(rules: Rules) -> None:
    """Status, recipientState, classifiedBy, provider and mailbox groups agree with models."""
    props: dict[str, Any] = EVENT.schema["properties"]
    assert props["status"]["enum"] == [s.value for s in Status]
    assert props["recipientState"]["enum"] == [s.value for s in RecipientState] + [None]
    assert props["classifiedBy"]["enum"] == [c.value for c in ClassifiedBy]
    assert sorted(props["provider"]["enum"]) == sorted(BY_NAME)
    assert props["mailboxProvider"]["enum"] == list(rules.mailbox_groups)


def test_every_output_validates(rules: Rules) -> None:
    """All events and updates of every fixture and corpus text are valid v1 documents."""
    source = SourceRef("mail.raw", 2, 41)
    raws = [(FIXTURES / e["file"]).read_bytes() for e in fixture_table()]
    raws += [as_generic_event(case) for case in diagnostic_cases()]
    count = 0
    for raw in raws:
        outcome = process(raw, rules, RECEIVED_AT, source=source)
        for event in outcome.events:
            EVENT.validate(orjson.loads(orjson.dumps(event.to_json())))
            count += 1
        for update in outcome.suppressions:
            UPDATE.validate(orjson.loads(orjson.dumps(update.to_json())))
    assert count > 900


@pytest.mark.parametrize(
    "path", sorted((FIXTURES / "invalid").glob("*.json")), ids=lambda p: p.name
)
def test_dead_letters_validate(path: Any, rules: Rules) -> None:
    """A dead letter for every invalid fixture is a valid v1 document."""
    raw = path.read_bytes()
    with pytest.raises(PayloadError) as caught:
        process(raw, rules, RECEIVED_AT)
    letter = DeadLetter(
        type(caught.value).__name__, caught.value.kind, str(caught.value), len(raw), line=1
    )
    LETTER.validate(letter.to_json())

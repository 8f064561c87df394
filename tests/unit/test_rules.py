"""The rule data: every rule wins on its own example; the loader refuses bad data."""

from __future__ import annotations

import pytest

from consumer.errors import RulesError
from consumer.rules import Rules, load_rules
from consumer.smtp import enhanced_code, reply_code
from consumer.textmatch import tokenize

_RULE = """
[[rule]]
id = "{id}"
state = "{state}"
any = [{any}]
example = "{example}"
"""


def _messages(*rules: str) -> dict[str, bytes]:
    return {"messages.toml": "\n".join(rules).encode()}


def test_every_rule_wins_on_its_example(rules: Rules) -> None:
    """Each rule's real example text classifies to that rule (and so to its state)."""
    for rule in rules.messages.rules:
        mailbox = rule.providers[0] if rule.providers else "other"
        for example in rule.examples:
            winner = rules.messages.match(
                tokenize(example), reply_code(example), enhanced_code(example), mailbox
            )
            assert winner is rule, (rule.id, example)


def test_rules_have_sources_and_unique_ids(rules: Rules) -> None:
    """Ids are unique and every rule says where its wording comes from."""
    ids = [rule.id for rule in rules.messages.rules]
    assert len(ids) == len(set(ids))
    assert all(rule.source for rule in rules.messages.rules)
    assert len(ids) >= 100


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            _messages(_RULE.format(id="a", state="NoSuchState", any='"x"', example="x")),
            "unknown recipientState",
        ),
        (
            _messages(_RULE.format(id="a", state="HardBounce", any='"  "', example="x")),
            "empty pattern",
        ),
        (
            _messages(
                _RULE.format(
                    id="a", state="HardBounce", any='"user unknown"', example="user unknown"
                ),
                _RULE.format(
                    id="a", state="HardBounce", any='"no such user"', example="no such user"
                ),
            ),
            "duplicate id",
        ),
        (
            _messages(
                _RULE.format(
                    id="a", state="HardBounce", any='"user unknown"', example="user unknown"
                ),
                _RULE.format(
                    id="b",
                    state="HardBounce",
                    any='"user unknown here"',
                    example="user unknown here",
                ),
            ),
            "shadowed",
        ),
        (
            _messages(
                _RULE.format(
                    id="a", state="HardBounce", any='"user unknown"', example="mailbox full"
                )
            ),
            "its example is matched by",
        ),
    ],
    ids=["unknown-state", "empty-pattern", "duplicate-id", "shadowed", "example-mismatch"],
)
def test_loader_refuses_bad_rules(data: dict[str, bytes], message: str) -> None:
    """Inconsistent rule data stops start-up with a message naming the problem."""
    with pytest.raises(RulesError, match=message):
        load_rules(data)


def test_policy_version_is_a_hash_of_the_policy(rules: Rules) -> None:
    """policyVersion changes when policy.toml changes, and only then."""
    changed = load_rules({"policy.toml": b"# comment\n" + _policy_bytes()})
    assert changed.policy.version != rules.policy.version
    assert load_rules().policy.version == rules.policy.version


def _policy_bytes() -> bytes:
    from importlib import resources

    return resources.files("consumer.data").joinpath("policy.toml").read_bytes()

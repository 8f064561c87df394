"""Load and validate the classification data once, at start-up.

The data files live in ``consumer/data`` and ship with the package:

* ``messages.toml``: ordered message rules (first match wins), each with the real
  text it was written for;
* ``status_codes.toml``: RFC 3463 enhanced codes and RFC 5321 reply codes;
* ``policy.toml``: the one table that turns a recipientState and the phase into a
  status, the temporary family of each state, and which suppressions are firm;
* ``mailbox_providers.toml``: the bounded groups reported as ``mailboxProvider``.

Validation refuses to start on an unknown recipientState, an empty or duplicate
pattern, a duplicate id, a phrase shadowed by an earlier unconditional rule, or a
rule whose own example does not classify to it.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from consumer.errors import RulesError
from consumer.models import RecipientState, Status
from consumer.smtp import enhanced_code, reply_code
from consumer.textmatch import Phrase, PhraseIndex, TokenText, compile_phrase, tokenize

__all__ = ["CodeEntry", "Policy", "Rule", "RuleSet", "Rules", "load_rules"]

DATA_FILES = ("messages.toml", "status_codes.toml", "policy.toml", "mailbox_providers.toml")


@dataclass(frozen=True, slots=True)
class Rule:
    """One message rule.  ``any``: one phrase must occur; ``all``: every one must;
    ``unless``: none may; ``codes`` and ``providers`` narrow where it applies."""

    id: str
    state: RecipientState
    retrying: RecipientState | None
    any: tuple[Phrase, ...]
    all: tuple[Phrase, ...]
    unless: tuple[Phrase, ...]
    codes: tuple[str, ...]
    providers: tuple[str, ...]
    #: The text says retrying cannot help (Yahoo "permanently deferred"): keep the
    #: final state even under a 4xx reply.
    permanent: bool
    #: Delivery is held, not refused (challenge-response): a deferral.
    held: bool
    examples: tuple[str, ...]
    source: str
    order: int

    @property
    def unconditional(self) -> bool:
        return not (self.all or self.unless or self.codes or self.providers)

    def narrowing_holds(
        self, text: TokenText, reply: int | None, enhanced: str | None, mailbox: str
    ) -> bool:
        """The conditions beyond ``any``: ``all``, ``unless``, ``providers``, ``codes``."""
        if self.all and not all(phrase.found_in(text) for phrase in self.all):
            return False
        if self.unless and any(phrase.found_in(text) for phrase in self.unless):
            return False
        if self.providers and mailbox not in self.providers:
            return False
        return not self.codes or any(_code_fits(c, reply, enhanced) for c in self.codes)


def _code_fits(pattern: str, reply: int | None, enhanced: str | None) -> bool:
    """``550`` a reply code; ``5.7.1`` an enhanced code; ``x.7.1`` either class; ``5xx`` a class."""
    if pattern.endswith("xx"):
        if reply is not None:
            return str(reply)[0] == pattern[0]
        return enhanced is not None and enhanced[0] == pattern[0]
    if "." in pattern:
        if enhanced is None:
            return False
        if pattern.startswith("x."):
            return enhanced[1:] == pattern[1:]
        return enhanced == pattern
    return reply is not None and str(reply) == pattern


class RuleSet:
    """The ordered message rules behind a token-anchor index (see ``textmatch``)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self._index = PhraseIndex(
            [(phrase, number) for number, rule in enumerate(self.rules) for phrase in rule.any]
        )

    @property
    def index(self) -> PhraseIndex:
        """The phrase index behind ``match`` (exported to the compiled fast path)."""
        return self._index

    def match(
        self, prepared: TokenText, reply: int | None, enhanced: str | None, mailbox: str
    ) -> Rule | None:
        """The first rule, in file order, that accepts the text; ``None`` if none does.

        A rule becomes a candidate when one of its ``any`` phrases is found; then its
        narrowing conditions decide.
        """
        for number in sorted(self._index.numbers_in(prepared)):
            rule = self.rules[number]
            if rule.narrowing_holds(prepared, reply, enhanced, mailbox):
                return rule
        return None


@dataclass(frozen=True, slots=True)
class CodeEntry:
    """The reading of one enhanced or reply code: state when final and when retrying.

    ``weak`` codes (``X.0.0``, ``X.7.1``, ...) say little about the cause; they rank
    below the provider's own category.
    """

    code: str
    final: RecipientState
    retrying: RecipientState
    weak: bool
    meaning: str


@dataclass(frozen=True, slots=True)
class Policy:
    """Status and suppression decisions as data (``policy.toml``)."""

    final_status: Mapping[RecipientState, Status]
    temporary: Mapping[RecipientState, RecipientState]
    firm_suppression: frozenset[RecipientState]
    version: str


@dataclass(frozen=True, slots=True)
class Rules:
    """Everything classification needs, loaded and checked once."""

    messages: RuleSet
    enhanced: Mapping[str, CodeEntry]
    reply: Mapping[str, CodeEntry]
    policy: Policy
    mailbox_domains: Mapping[str, str]
    mailbox_hosts: Mapping[str, str]
    mailbox_tokens: PhraseIndex
    mailbox_token_groups: tuple[str, ...]
    mailbox_groups: tuple[str, ...]
    version: str

    def enhanced_entry(self, code: str | None) -> CodeEntry | None:
        """The most specific table entry for a code: ``5.7.26`` before ``X.7.26``."""
        if code is None:
            return None
        entry = self.enhanced.get(code)
        if entry is None:
            entry = self.enhanced.get("X" + code[1:])
        return entry

    def reply_entry(self, code: int | None) -> CodeEntry | None:
        if code is None:
            return None
        text = str(code)
        return self.reply.get(text) or self.reply.get(text[0] + "xx")


def _state(value: Any, where: str) -> RecipientState:
    try:
        return RecipientState(value)
    except ValueError:
        raise RulesError(f"{where}: unknown recipientState {value!r}") from None


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RulesError(f"{where}: expected a string or a list of strings")
    for item in value:
        if not item.strip(" *"):
            raise RulesError(f"{where}: empty pattern")
    return tuple(value)


def _phrases(value: Any, where: str) -> tuple[Phrase, ...]:
    try:
        return tuple(compile_phrase(p) for p in _strings(value, where))
    except ValueError as exc:
        raise RulesError(f"{where}: {exc}") from None


def _parse_rules(doc: Mapping[str, Any], groups: Sequence[str]) -> list[Rule]:
    rules: list[Rule] = []
    seen_ids: set[str] = set()
    allowed = {
        "id",
        "state",
        "retrying",
        "any",
        "all",
        "unless",
        "codes",
        "providers",
        "permanent",
        "held",
        "example",
        "source",
    }
    for order, raw in enumerate(doc.get("rule", [])):
        rule_id = raw.get("id")
        where = f"messages.toml rule {rule_id or order}"
        if not isinstance(rule_id, str) or not rule_id:
            raise RulesError(f"{where}: missing id")
        if rule_id in seen_ids:
            raise RulesError(f"{where}: duplicate id")
        seen_ids.add(rule_id)
        unknown = set(raw) - allowed
        if unknown:
            raise RulesError(f"{where}: unknown keys {sorted(unknown)}")
        any_ = _phrases(raw.get("any"), where)
        if not any_:
            raise RulesError(f"{where}: needs at least one phrase in 'any'")
        if len({p.needle for p in any_}) != len(any_):
            raise RulesError(f"{where}: duplicate pattern")
        examples = _strings(raw.get("example"), where)
        if not examples:
            raise RulesError(f"{where}: needs an example (the real text the rule was written for)")
        providers = _strings(raw.get("providers"), where)
        for provider in providers:
            if provider not in groups:
                raise RulesError(f"{where}: unknown mailbox provider {provider!r}")
        rules.append(
            Rule(
                id=rule_id,
                state=_state(raw.get("state"), where),
                retrying=None if raw.get("retrying") is None else _state(raw["retrying"], where),
                any=any_,
                all=_phrases(raw.get("all"), where),
                unless=_phrases(raw.get("unless"), where),
                codes=_strings(raw.get("codes"), where),
                providers=providers,
                permanent=bool(raw.get("permanent", False)),
                held=bool(raw.get("held", False)),
                examples=examples,
                source=str(raw.get("source", "")),
                order=order,
            )
        )
    _check_shadowing(rules)
    return rules


def _check_shadowing(rules: Sequence[Rule]) -> None:
    """A phrase that contains an earlier unconditional rule's phrase can never fire."""
    earlier: list[tuple[Phrase, Rule]] = []
    for rule in rules:
        for phrase in rule.any:
            for prior, owner in earlier:
                if prior.needle in phrase.needle:
                    raise RulesError(
                        f"messages.toml rule {rule.id}: phrase {phrase.source!r} is shadowed "
                        f"by {prior.source!r} of earlier rule {owner.id}"
                    )
        if rule.unconditional:
            earlier.extend((phrase, rule) for phrase in rule.any)


def _parse_codes(entries: Sequence[Mapping[str, Any]], where: str) -> dict[str, CodeEntry]:
    table: dict[str, CodeEntry] = {}
    for raw in entries:
        code = raw.get("code")
        if not isinstance(code, str) or code in table:
            raise RulesError(f"{where}: missing or duplicate code {code!r}")
        table[code] = CodeEntry(
            code=code,
            final=_state(raw.get("final"), f"{where} {code}"),
            retrying=_state(raw.get("retrying"), f"{where} {code}"),
            weak=bool(raw.get("weak", False)),
            meaning=str(raw.get("meaning", "")),
        )
    return table


def _parse_policy(doc: Mapping[str, Any], digest: str) -> Policy:
    final_status: dict[RecipientState, Status] = {}
    for key, value in doc.get("final_status", {}).items():
        try:
            final_status[_state(key, "policy.toml final_status")] = Status(value)
        except ValueError:
            raise RulesError(f"policy.toml final_status: unknown status {value!r}") from None
    missing = set(RecipientState) - set(final_status)
    if missing:
        raise RulesError(f"policy.toml final_status: no status for {sorted(missing)}")
    temporary = {
        _state(k, "policy.toml temporary"): _state(v, "policy.toml temporary")
        for k, v in doc.get("temporary", {}).items()
    }
    firm = frozenset(
        _state(s, "policy.toml suppression") for s in doc.get("suppression", {}).get("firm", [])
    )
    return Policy(
        final_status=final_status, temporary=temporary, firm_suppression=firm, version=digest
    )


def _read(name: str) -> bytes:
    return resources.files("consumer.data").joinpath(name).read_bytes()


def load_rules(overrides: Mapping[str, bytes] | None = None) -> Rules:
    """Load every data file (``overrides`` replaces a file's bytes, for tests)."""
    raw = {name: (overrides or {}).get(name) or _read(name) for name in DATA_FILES}
    docs = {}
    for name, data in raw.items():
        try:
            docs[name] = tomllib.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise RulesError(f"{name}: {exc}") from None
    boxes = docs["mailbox_providers.toml"]
    groups = tuple(boxes.get("groups", []))
    if "other" not in groups:
        raise RulesError("mailbox_providers.toml: the groups must include 'other'")
    domains: dict[str, str] = {}
    hosts: dict[str, str] = {}
    tokens: list[tuple[Phrase, int]] = []
    token_groups: list[str] = []
    for group, spec in boxes.get("provider", {}).items():
        if group not in groups:
            raise RulesError(f"mailbox_providers.toml: {group!r} is not in groups")
        for domain in spec.get("domains", []):
            domains[domain.lower()] = group
        for host in spec.get("hosts", []):
            hosts.setdefault(host.lower(), group)
        for token in spec.get("tokens", []):
            tokens.append((compile_phrase(token), len(token_groups)))
            token_groups.append(group)
    codes = docs["status_codes.toml"]
    rules = Rules(
        messages=RuleSet(_parse_rules(docs["messages.toml"], groups)),
        enhanced=_parse_codes(codes.get("enhanced", []), "status_codes.toml enhanced"),
        reply=_parse_codes(codes.get("reply", []), "status_codes.toml reply"),
        policy=_parse_policy(docs["policy.toml"], _digest(raw["policy.toml"])),
        mailbox_domains=domains,
        mailbox_hosts=hosts,
        mailbox_tokens=PhraseIndex(tokens),
        mailbox_token_groups=tuple(token_groups),
        mailbox_groups=groups,
        version=_digest(b"".join(raw[name] for name in DATA_FILES)),
    )
    for state in RecipientState:
        if state not in rules.policy.temporary:
            raise RulesError(f"policy.toml temporary: no temporary form for {state.value}")
    _check_examples(rules.messages)
    return rules


def _check_examples(rule_set: RuleSet) -> None:
    """Every rule must win on its own example text, or it is dead or mis-ordered."""
    for rule in rule_set.rules:
        mailbox = rule.providers[0] if rule.providers else "other"
        for example in rule.examples:
            winner = rule_set.match(
                tokenize(example), reply_code(example), enhanced_code(example), mailbox
            )
            if winner is not rule:
                raise RulesError(
                    f"messages.toml rule {rule.id}: its example is matched by "
                    f"{winner.id if winner else 'no rule'}: {example[:120]!r}"
                )


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]

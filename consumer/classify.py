"""Decide ``status`` and ``recipientState`` for one observation (DESIGN section 6).

Two questions, answered separately.  The *cause* (recipientState) comes from the
first step of the evidence order that gives an answer:

1. a definitive provider fact (suppression-list drop, auto-reply, virus reject);
2. the message rules (``data/messages.toml``), because receivers reuse generic codes;
3. a specific RFC 3463 enhanced code (``data/status_codes.toml``);
4. the provider's own category (SES sub-type, SparkPost bounce class, ...);
5. a weak enhanced code (``X.0.0``, ``X.7.1``) or the RFC 5321 reply code;
6. a fallback.

Measured on the test tables, specific enhanced codes beat provider categories (the
code is the receiver's own word, the category the ESP's guess), while weak codes lose
to them.  The *status* then follows from the cause, whether the failure is temporary
(the reply code decides, then the enhanced code, then the phase) and the provider's
suppression facts, through ``data/policy.toml``.
"""

from __future__ import annotations

from consumer.models import Classification, ClassifiedBy, Kind, Observation, RecipientState, Status
from consumer.rules import Rules
from consumer.smtp import enhanced_code, is_real_reply_code, reply_code
from consumer.textmatch import TokenText

__all__ = ["classify", "codes_of"]

_AUTO_REPLY = RecipientState.SOFT_BOUNCE_AUTO_REPLY


def codes_of(observation: Observation) -> tuple[int | None, str | None]:
    """Reply and enhanced code: the remote server's own text wins over provider fields."""
    text = observation.diagnostic or ""
    reply = reply_code(text) if text else None
    if reply is None and observation.smtp_code is not None:
        reply = observation.smtp_code if is_real_reply_code(observation.smtp_code) else None
    enhanced = enhanced_code(text) if text else None
    if enhanced is None and observation.enhanced_code:
        enhanced = enhanced_code(observation.enhanced_code)
    return reply, enhanced


def _is_temporary(kind: Kind, reply: int | None, enhanced: str | None) -> bool:
    """Whether the last answer was a temporary refusal (the reply code decides first)."""
    if kind is Kind.DEFERRED:
        return True
    if reply is not None and reply >= 400:
        return reply < 500
    if enhanced is not None and enhanced[0] in "45":
        return enhanced[0] == "4"
    return False


def classify(
    observation: Observation,
    rules: Rules,
    text: TokenText | None,
    mailbox: str,
    explain: bool = False,
) -> Classification:
    """Classify one observation; ``text`` is its tokenised diagnostic, if it has one."""
    reply, enhanced = codes_of(observation)
    evidence: list[str] = []
    if observation.kind is Kind.DELIVERED:
        return _delivered(observation, rules, text, mailbox, reply, enhanced, explain)

    temporary = _is_temporary(observation.kind, reply, enhanced)
    rule = None
    rule_id: str | None = None
    keep_final = False
    held = observation.held
    retrying_override: RecipientState | None = None
    state: RecipientState
    if observation.fact_state is not None:
        state, by = observation.fact_state, ClassifiedBy.PROVIDER
        if explain:
            evidence.append(f"provider fact: {state.value} ({observation.provider_state})")
    elif text is not None and (rule := rules.messages.match(text, reply, enhanced, mailbox)):
        state, by, rule_id = rule.state, ClassifiedBy.RULE, rule.id
        keep_final, held, retrying_override = rule.permanent, held or rule.held, rule.retrying
        if explain:
            evidence.append(f"rule {rule.id}: {state.value}")
    else:
        entry = rules.enhanced_entry(enhanced)
        if entry is not None and not entry.weak:
            state, by = entry.final, ClassifiedBy.ENHANCED_CODE
            retrying_override = entry.retrying
            if explain:
                evidence.append(f"enhanced code {enhanced}: {entry.meaning}")
        elif observation.category_state is not None:
            state, by = observation.category_state, ClassifiedBy.PROVIDER
            if explain:
                evidence.append(f"provider category: {state.value} ({observation.provider_state})")
        elif entry is not None:
            state, by, retrying_override = entry.final, ClassifiedBy.ENHANCED_CODE, entry.retrying
            if explain:
                evidence.append(f"weak enhanced code {enhanced}: {entry.meaning}")
        elif (reply_entry := rules.reply_entry(reply)) is not None:
            state, by, retrying_override = (
                reply_entry.final,
                ClassifiedBy.REPLY_CODE,
                reply_entry.retrying,
            )
            if explain:
                evidence.append(f"reply code {reply}: {reply_entry.meaning}")
        else:
            informative = bool(observation.diagnostic) or observation.kind is Kind.DEFERRED
            state = (
                RecipientState.SOFT_BOUNCE_UNDETERMINED
                if informative
                else RecipientState.UNHANDLED_STATE
            )
            by = ClassifiedBy.FALLBACK
            if explain:
                evidence.append("no decisive evidence: fallback")

    if temporary and not keep_final and state is not _AUTO_REPLY:
        state = retrying_override or rules.policy.temporary[state]
        if explain:
            evidence.append(
                f"temporary failure (reply {reply}, enhanced {enhanced}): {state.value}"
            )

    status = _status(observation, rules, state, held)
    if explain:
        evidence.append(
            f"status {status.value}: phase {observation.kind.value}, "
            f"provider status {observation.provider_status}"
        )
    return Classification(status, state, by, rule_id, reply, enhanced, tuple(evidence))


def _delivered(
    observation: Observation,
    rules: Rules,
    text: TokenText | None,
    mailbox: str,
    reply: int | None,
    enhanced: str | None,
    explain: bool,
) -> Classification:
    """Accepted.  Only an auto-reply text (an MTA reporting the away message of a
    delivered mail) adds a state; any other rule would contradict the delivery."""
    state, by, rule_id = observation.fact_state, ClassifiedBy.PROVIDER, None
    if state is None and text is not None:
        rule = rules.messages.match(text, reply, enhanced, mailbox)
        if rule is not None and rule.state is _AUTO_REPLY:
            state, by, rule_id = _AUTO_REPLY, ClassifiedBy.RULE, rule.id
    evidence = (f"provider reports a delivery ({observation.provider_state})",) if explain else ()
    return Classification(Status.DELIVERED, state, by, rule_id, reply, enhanced, evidence)


def _status(observation: Observation, rules: Rules, state: RecipientState, held: bool) -> Status:
    if state is _AUTO_REPLY:
        return Status.DEFERRED if held else Status.DELIVERED
    if observation.kind is Kind.DEFERRED:
        return Status.DEFERRED
    if observation.provider_status is not None:
        return observation.provider_status
    return rules.policy.final_status[state]

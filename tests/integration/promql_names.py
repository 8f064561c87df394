"""Find the metric names a PromQL expression refers to, without a full PromQL parser.

Good enough for the expressions of our dashboard and rules: string literals, comments,
label matchers ``{...}``, range and subquery brackets ``[...]``, Grafana variables and
the label lists of ``by``/``without``/``on``/``ignoring``/``group_left``/``group_right``
are removed first; what is left is tokenized, and an identifier is a metric name unless
it is a keyword or a binary operator word, or a function: an identifier followed by
``(``, which also covers aggregations such as ``sum by (x) (...)`` once the clause is
gone.  A selector of the form ``{__name__="x"}`` names ``x``.

``yaml_fields`` lists the ``record:``/``alert:`` names and ``expr:`` values of a
Prometheus rules file.
"""

from __future__ import annotations

import re

import yaml

__all__ = ["KEYWORDS", "grafana_variables", "metric_names", "strip_literals", "yaml_fields"]

# Words of PromQL that stand where a metric name could but are none.
KEYWORDS = frozenset(
    {
        "and", "or", "unless", "atan2", "bool", "offset", "by", "without", "on",
        "ignoring", "group_left", "group_right", "inf", "nan",
    }
)  # fmt: skip

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', re.DOTALL)
_COMMENT = re.compile(r"#[^\n]*")
_PLACEHOLDER = re.compile(r'"(\d+)"')
_NAME_MATCHER = re.compile(r'__name__\s*=\s*"(\d+)"')
_SELECTOR = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
# ${var}, ${var:format}, $var, $__rate_interval, and the old [[var]] syntax.
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[[^\]]*\]\]")
_CLAUSE = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_TOKEN = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*|\d[\w.]*|\S")


def _hide_strings(expr: str) -> tuple[str, list[str]]:
    """``expr`` with comments removed and each string literal replaced by ``"<index>"``."""
    out: list[str] = []
    strings: list[str] = []
    pos = 0
    while pos < len(expr):
        string = _STRING.match(expr, pos)
        if string:
            out.append(f'"{len(strings)}"')
            strings.append(string.group(0)[1:-1])
            pos = string.end()
            continue
        comment = _COMMENT.match(expr, pos)
        if comment:
            pos = comment.end()
            continue
        out.append(expr[pos])
        pos += 1
    return "".join(out), strings


def strip_literals(expr: str) -> str:
    """``expr`` with every string literal emptied (``""``) and its comments removed."""
    text, _ = _hide_strings(expr)
    return _PLACEHOLDER.sub('""', text)


def grafana_variables(expr: str) -> set[str]:
    """Names of the Grafana variables ``expr`` uses (``$x``, ``${x}``, ``${x:fmt}``, ``[[x]]``)."""
    return {match.group(0).strip("$[]{}").split(":", 1)[0] for match in _VARIABLE.finditer(expr)}


def metric_names(expr: str) -> set[str]:
    """The metric (or recording rule) names that the PromQL ``expr`` selects."""
    text, strings = _hide_strings(expr)
    names = {
        strings[int(match.group(1))]
        for selector in _SELECTOR.finditer(text)
        for match in _NAME_MATCHER.finditer(selector.group(0))
    }
    text = _PLACEHOLDER.sub(" ", text)
    text = _VARIABLE.sub(" ", text)
    text = _SELECTOR.sub(" ", text)
    while _RANGE.search(text):  # nested subqueries: strip inner brackets first
        text = _RANGE.sub(" ", text)
    text = _CLAUSE.sub(" ", text)
    tokens = _TOKEN.findall(text)
    for index, token in enumerate(tokens):
        if not (token[0].isalpha() or token[0] in "_:"):
            continue  # a number, a duration or an operator
        if token.lower() in KEYWORDS:
            continue
        if index + 1 < len(tokens) and tokens[index + 1] == "(":
            continue  # a function or an aggregation
        names.add(token)
    return names


def yaml_fields(
    text: str, keys: frozenset[str] = frozenset({"record", "expr"})
) -> list[tuple[str, str]]:
    """Every ``record``/``alert``/``expr`` value of a rules file whose key is in ``keys``.

    In file order, per rule: name first, then its expression.
    """
    document = yaml.safe_load(text) or {}
    found: list[tuple[str, str]] = []
    for group in document.get("groups", []):
        for rule in group.get("rules", []):
            for key in ("record", "alert", "expr"):
                if key in keys and key in rule:
                    found.append((key, str(rule[key]).strip()))
    return found

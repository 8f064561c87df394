"""The compiled fast path (native/, ``consumer_native``) against the pure Python path.

For every line it accepts, its event and suppression update must be byte-identical to
``orjson.dumps(...to_json())`` of ``pipeline.process``; a line it declines must be one
the Python path handles (the CLI test compares whole runs, dead letters included).
The corpora: the diagnostic corpus as generic events in many field variants, the
benchmark generator's output, every fixture sample, hand-picked hostile lines, and
hypothesis-built texts and mutations aimed at the engine's Unicode and parsing edges.

Without the extension these tests skip locally; with CI=true they fail, so CI always
tests the fast path it builds.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest
from corpus import FIXTURES, as_generic_event, diagnostic_cases
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer import fastpath
from consumer.codec import DEFAULT_MAX_BYTES
from consumer.errors import PayloadError
from consumer.fastpath import NativeClassifier
from consumer.pipeline import process
from consumer.rules import Rules, load_rules

RECEIVED_AT = "2025-01-01T00:00:00.000Z"
ROOT = Path(__file__).parents[2]
_RULES = load_rules()
_NATIVE = fastpath.build(_RULES)
_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "800"))


def _native() -> NativeClassifier:
    """The extension, or a skip (locally) / a failure (CI=true) saying it is missing."""
    if _NATIVE is None:
        reason = "consumer_native is not installed (pip install ./native, or make install)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must test the compiled fast path")
        pytest.skip(reason)
    return _NATIVE


def _expected(line: bytes, rules: Rules) -> tuple[bytes, bytes | None] | None:
    """The Python path's outputs for a line of one event, or None for a dead letter."""
    try:
        outcome = process(line, rules, RECEIVED_AT, None, None, DEFAULT_MAX_BYTES)
    except PayloadError:
        return None
    assert len(outcome.events) == 1, line
    assert len(outcome.suppressions) <= 1, line
    update = orjson.dumps(outcome.suppressions[0].to_json()) if outcome.suppressions else None
    return orjson.dumps(outcome.events[0].to_json()), update


def _compare(lines: list[bytes], rules: Rules = _RULES, native: Any = None) -> int:
    """Assert byte identity on every accepted line; the number of lines declined."""
    native = native or _native()
    events, updates, declined = native.process_lines(lines, RECEIVED_AT, DEFAULT_MAX_BYTES)
    assert len(events) == len(updates) == len(lines)
    assert declined == [index for index, event in enumerate(events) if event is None]
    for line, event, update in zip(lines, events, updates, strict=True):
        if event is None:
            assert update is None
            continue
        expected = _expected(line, rules)
        assert expected is not None, f"accepted a dead letter: {line!r}"
        assert (event, update) == expected, f"differs on {line!r}"
    return len(declined)


# --- Corpora -------------------------------------------------------------------------

_DOMAINS = [
    "example.net", "Example.NET", "gmail.com", "googlemail.com", "hotmail.co.uk", "live.fr",
    "live.example.org", "outlook.com", "yahoo.co.jp", "yahoo.fr", "aol.com", "icloud.com",
    "gmx.de", "web.de", "mail.ru", "yandex.ru", "comcast.net", "orange.fr", "t-online.de",
    "zoho.com", "qq.com", "corp.example.com", "sub_domain.example.io", "x.y.z.example.museum",
]
_RECIPIENTS = [
    "rfc822; {a}", "{a}", "<{a}>", "RFC822;<{A}>", "  rfc822;  {a}  ", "{A}", "rfc822;{a}",
    "x-unknown-address-type; {a}", "{a}>", "<<{a}",
]
_DATES: list[Any] = [
    "Fri, 14 Mar 2025 09:12:05 +0000", "14 Mar 2025 09:12:05 -0500",
    "Mon, 3 Feb 2025 23:59:59 +0130 (CET)", "Mon,  3 feb 2025 23:59:59 +0130", "2025-03-14T09:12:05Z",
    "2025-03-14T09:12:05.123456+02:00", "2025-03-14 09:12:05", "2025-03-14T09:12:05.1234567Z",
    "2025-03-14 09:12:05 -04:30", "2025-03-14T09:12:05.5", "", None, "1741943525", "1741943525.5",
    "Fri, 14 Mar 2025 09:12 +0000", "14 Mar 2025 09:12:05 GMT", "yesterday",
    "Sat, 1 Jan 2000 00:00:00 +0000", "31 Dec 1999 23:59:59 +0000", "1 Jan 2100 00:00:00 +0000",
    "1 Jan 2100 00:00:01 +0000", "31 Dec 2099 23:30:00 -0100", "29 Feb 2024 12:00:00 +0000",
    "29 Feb 2025 12:00:00 +0000", " Fri, 14 Mar 2025 09:12:05 +0000 ", "2100-01-01T00:00:00Z",
    "2100-01-01T00:00:00.001Z", "2025-02-30T00:00:00Z", "2025-03-14T24:00:00Z", "14 Mar 2025 9:12:05 +0000",
    "Fri, 14 Mar 2025 09:12:05 +2359", "Fri, 14 Mar 2025 09:12:05 +0099", "Fri, 14 Mar 2025 09:12:05 +0000 (a) b",
    "2025-03-14T09:12:05 Z", "2025-03-14T09:12:05+0000", "2025-03-14t09:12:05", "Fri, 14 Mär 2025 09:12:05 +0000",
    "\u0662025-03-14T09:12:05Z", "Fri,\t14 Mar 2025 09:12:05 +0000",
]
_REMOTES: list[Any] = [
    None, "dns; mx.example.net", "mx1.google.com", "dns; gmail-smtp-in.l.google.com.", "[203.0.113.5]",
    "dns;", "", "  ", "dns; [mx.yahoodns.net] extra", "a-very-long-type-name; mx.outlook.com",
    "DNS; MX.Hotmail.COM", "dns; mx.t-online.de", "dns; mx\u00e9.example.net", "dns;  mx.qq.com.  ",
]
_STATUSES: list[Any] = [None, "5.1.1", "4.2.2", "5.0.0", "2.0.0", "", "5.7.26 (dmarc)", "x", "4.4.7", "5.7.1"]
_LOG_IDS: list[Any] = [None, "", "4Vx2kT0Zq1z9", "x" * 256, "x" * 257, "\u00e9" * 10]
_REPORTING: list[Any] = [None, "dns; mta.example.com", "", "\u00e9 mta \"q\" \\ /", "line\nbreak"]
_MESSAGES: list[Any] = [None, "<a@b>", "", "<\u00fc@b>", "tab\there"]
_ABSENT = object()


# The forms MTAs commonly write: the fast path should accept (nearly) all of these.
_COMMON: dict[str, list[Any]] = {
    "recipient": _RECIPIENTS[:7],
    "lastAttemptDate": [d for d in _DATES[:9] if d],
    "remoteMta": [None, "dns; mx.example.net", "mx1.google.com", "[203.0.113.5]", "DNS; MX.Hotmail.COM"],
    "status": [None, "5.1.1", "4.2.2", "5.0.0", "2.0.0", "4.4.7"],
    "finalLogId": [None, "4Vx2kT0Zq1z9", "x" * 300],
    "reportingMta": _REPORTING,
    "messageId": _MESSAGES,
}


def _variant(case: dict[str, Any], rng: random.Random, common: bool = False) -> bytes:
    """The case as a generic event with randomly chosen field forms (``common``: only
    forms MTAs commonly write)."""
    local = case["recipient"].split("@")[0] if rng.random() < 0.5 else f"u{rng.randrange(10**6)}.x"
    address = f"{local}@{rng.choice(_DOMAINS)}"
    recipients = _COMMON["recipient"] if common else _RECIPIENTS
    event: dict[str, Any] = {
        "finalRecipient": rng.choice(recipients).format(a=address, A=address.upper()),
        "action": rng.choice([case["action"], case["action"].upper(), f" {case['action']} "]),
        "diagnosticCode": case["diagnostic"],
    }
    for key, values in [
        ("lastAttemptDate", _COMMON["lastAttemptDate"] if common else _DATES),
        ("remoteMta", [*(_COMMON["remoteMta"] if common else _REMOTES), case.get("remote_mta")]),
        ("status", [*(_COMMON["status"] if common else _STATUSES), case.get("dsn_status")]),
        ("finalLogId", _COMMON["finalLogId"] if common else _LOG_IDS),
        ("reportingMta", _REPORTING),
        ("messageId", _MESSAGES),
        ("originalRecipient", [None, "rfc822; other@example.org"]),
    ]:
        value = rng.choice([_ABSENT, *values])
        if value is not _ABSENT:
            event[key] = value
    keys = list(event)
    rng.shuffle(keys)
    event = {key: event[key] for key in keys}
    if rng.random() < 0.3:
        return json.dumps(event, ensure_ascii=rng.random() < 0.5).encode()
    return orjson.dumps(event)


def _corpus_variants(per_case: int = 4, common: bool = False) -> list[bytes]:
    rng = random.Random(20261123)  # noqa: S311  (repeatable test data, not secrets)
    return [_variant(case, rng, common) for case in diagnostic_cases() for _ in range(per_case)]


def _generated(count: int) -> list[bytes]:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gen_generic.py"), str(count)],
        capture_output=True, check=True, timeout=120,
    )
    return result.stdout.splitlines(keepends=True)


def _fixture_lines() -> list[bytes]:
    """Every sample payload, compact on one line and also as written (with newlines)."""
    lines = []
    for path in sorted(FIXTURES.rglob("*.json")):
        raw = path.read_bytes()
        lines.append(raw)
        try:
            lines.append(orjson.dumps(orjson.loads(raw)))
        except orjson.JSONDecodeError:
            pass
    return lines


_BASE = {
    "finalRecipient": "rfc822; someone@example.net",
    "action": "failed",
    "status": "5.1.1",
    "diagnosticCode": "smtp; 550 5.1.1 <someone@example.net>: Recipient address rejected: User unknown",
    "remoteMta": "dns; mx.example.net",
    "lastAttemptDate": "Fri, 14 Mar 2025 09:12:05 +0000",
}


def _with(**changes: Any) -> bytes:
    event = {**_BASE, **changes}
    return orjson.dumps({k: v for k, v in event.items() if v is not _ABSENT})


_DIAG = _BASE["diagnosticCode"]
HOSTILE: list[bytes] = [
    b"", b"\n", b"   \t\r\n", b"{}", b"[]", b"null", b"42", b'"x"', b"{", b"}", b"\xef\xbb\xbf" + _with(),
    _with()[:-1], _with() + b"x", _with() + b" \r\n", b" \t" + _with(), _with() + b",",
    _with().replace(b'"action"', b'"act\\u0069on"'),
    _with().replace(b"{", b'{"action":"delayed",', 1),
    _with().replace(b"{", b'{"finalRecipient":"a@b.cd",', 1),
    _with(extra="x"), _with(action=None), _with(action=5), _with(action=""), _with(action="  "),
    _with(action="exploded"), _with(action="Failed\t"), _with(action="f\u00e4iled"),
    _with(finalRecipient=None), _with(finalRecipient=5), _with(finalRecipient=["a@b.cd"]),
    _with(finalRecipient="not-an-address"), _with(finalRecipient="a\u0000b@example.net"),
    _with(finalRecipient="rfc822; " + "a" * 64 + "@example.net"),
    _with(finalRecipient="rfc822; " + "a" * 65 + "@example.net"),
    _with(finalRecipient="a@" + "b" * 63 + ".com"), _with(finalRecipient="a@" + "b" * 64 + ".com"),
    _with(finalRecipient="a@" + ".".join(["abcdefgh"] * 27) + ".com"),
    _with(finalRecipient="a@" + ".".join(["abcdefgh"] * 28) + ".com"),
    _with(finalRecipient="\u00e9@example.net"), _with(finalRecipient="a@\u00e9xample.net"),
    _with(finalRecipient="a@b.c_m"), _with(finalRecipient="a@b.1com"), _with(finalRecipient="a.@b.co-"),
    _with(finalRecipient="rfc822 ;a@b.cd"), _with(finalRecipient="verylongprefix; a@b.cd"),
    _with(finalRecipient="a;b@c.de"), _with(finalRecipient="\u00a0a@b.cd"),
    _with(diagnosticCode=None), _with(diagnosticCode=""), _with(diagnosticCode=" "),
    _with(diagnosticCode=5), _with(diagnosticCode={"nested": True}), _with(diagnosticCode=[_DIAG]),
    _with(diagnosticCode=_DIAG + "\n" + _DIAG), _with(diagnosticCode="550\n5.1.1 user unknown"),
    _with(diagnosticCode="\x00\x01\x1c\x1f\x7f550 5.1.1"), _with(diagnosticCode="550 " + "A" * 100_000),
    _with(diagnosticCode="550 5.1.1 " + "a" * 8182), _with(diagnosticCode="550 5.1.1 " + "a" * 8183),
    _with(diagnosticCode="x" * 4095 + "\u00e9 user unknown"), _with(diagnosticCode="x" * 1023 + "\u00a0550"),
    _with(diagnosticCode="x" * 4096 + "\u03a3 user unknown"), _with(diagnosticCode="x" * 1022 + ": 550 x"),
    _with(diagnosticCode="\u00e9" * 8191 + "abc"), _with(diagnosticCode="550 " + "\u00e9" * 9000),
    _with(reportingMta="r" * 9000, messageId="\u00fc" * 8193, status="5.1.1" + " " * 9000),
    _with(finalLogId="\u00e9" * 300), _with(finalLogId="x" * 255 + "\U0001f600x"),
    _with(diagnosticCode="550 " + "a" * 20_000 + " user unknown"),
    _with(diagnosticCode="5" * 5000), _with(diagnosticCode="x.y.z" * 300), _with(diagnosticCode="\ud7ff\ue000\uffff"),
    _with(diagnosticCode="\u202e<script>"), _with(diagnosticCode="550 5.1.1 \U0001f600 unknown"),
    _with(diagnosticCode="\u0130NVALID mailbox 550"), _with(diagnosticCode="\u017faid 550 no"),
    _with(diagnosticCode="host said\u00a0550 user unknown"), _with(diagnosticCode="\u0665\u0665\u0660 user unknown"),
    _with(diagnosticCode="\uff15\uff15\uff10 5.1.1"), _with(diagnosticCode="5\u00b250 5.1.1"),
    _with(diagnosticCode="x-\u00e9t\u00e9; 550 5.1.1"), _with(diagnosticCode="\u2028smtp;550 5.1.1"),
    _with(diagnosticCode="MAILBOX FULL \u00c4\u00d6\u00dc \u1e9e \u01c5"), _with(diagnosticCode="\u212a 550"),
    _with(status=5), _with(status="5.1.1\u00e9"), _with(remoteMta=5), _with(remoteMta="dns; mx.example.net\t"),
    _with(lastAttemptDate=1741943525), _with(lastAttemptDate=0), _with(lastAttemptDate=True),
    _with(lastAttemptDate=[]), _with(lastAttemptDate={}), _with(finalLogId=17), _with(finalLogId=1.5),
    _with(finalLogId=True), _with(reportingMta=5), _with(messageId=["x"]), _with(originalRecipient=5),
    _with(lastAttemptDate="Fri, 14 Mar 2025 09:12:05 +0000\u0000"),
    b'{"finalRecipient":"a@b.cd","action":"failed","diagnosticCode":"\\ud800"}',
    b'{"finalRecipient":"a@b.cd","action":"failed","diagnosticCode":"\\udc00\\ud800"}',
    b'{"finalRecipient":"a@b.cd","action":"failed","diagnosticCode":"\\ud83d\\ude00 550 5.1.1"}',
    b'{"finalRecipient":"a@b.cd","action":"failed","diagnosticCode":"550\\u00a05.1.1 \\u0000 x\\/y"}',
    b'{"finalRecipient":"a@b.cd","action":"failed","diagnosticCode":"bad \\x escape"}',
    b'{"finalRecipient":"a@b.cd","action":"failed","diagnosticCode":"raw \x01 control"}',
    b'{"finalRecipient":"a@b.cd","action":"failed","diagnosticCode":"\xff\xfe"}',
    b'{"finalRecipient":"a@b.cd","action":"failed","diagnosticCode":"\xc3("}',
    b'{"finalRecipient":"a@b.cd","action":"failed"',
    b'{"finalRecipient":"a@b.cd","action":"failed",}',
    b'{"finalRecipient":"a@b.cd" "action":"failed"}',
    b'{"finalRecipient":"a@b.cd","action":nul}',
    b'{"finalRecipient":"a@b.cd","action":"failed","status":null,"remoteMta":null,"diagnosticCode":null,'
    b'"lastAttemptDate":null,"reportingMta":null,"messageId":null,"finalLogId":null,"originalRecipient":null}',
    b'{ "finalRecipient" : "a@b.cd" ,\t"action"\n:\r"failed" }',
    b'{"finalRecipient":"a@b.cd","action":"failed","extra":' + b"[" * 2000 + b"]" * 2000 + b"}",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"x": "' + b"a" * (DEFAULT_MAX_BYTES + 1) + b'"}',
    b'{"finalRecipient":"a@b.cd","action":"failed","diagnosticCode":"' + b"a" * (DEFAULT_MAX_BYTES) + b'"}',
]


# --- Tests ---------------------------------------------------------------------------


def test_the_extension_is_there_in_ci() -> None:
    """CI builds native/ (make install); a missing or stale build must fail there."""
    _native()
    module = __import__("consumer_native")
    assert module.INTERFACE == fastpath.INTERFACE


def test_diagnostic_corpus_as_plain_generic_events() -> None:
    """Every corpus text in the plain generic form: identical, and nearly all accepted."""
    lines = [as_generic_event(case) + b"\n" for case in diagnostic_cases()]
    declined = _compare(lines)
    assert declined <= len(lines) * 0.02, f"{declined} of {len(lines)} declined"


def test_diagnostic_corpus_in_many_field_forms() -> None:
    """Addresses, dates, remote MTAs, codes, ids and JSON spellings varied per case,
    odd and invalid forms included (those are declined: dead letters, Unix times,
    obsolete date forms...)."""
    _compare(_corpus_variants())


def test_diagnostic_corpus_in_common_field_forms_is_accepted() -> None:
    """The forms MTAs commonly write: identical, and at least 97 % accepted."""
    lines = _corpus_variants(common=True)
    declined = _compare(lines)
    assert declined <= len(lines) * 0.03, f"{declined} of {len(lines)} declined"


def test_a_line_python_cannot_take_is_declined() -> None:
    """mailbox.py raises IndexError on a remote MTA like "x; y;" (nothing after the
    second ';'); the fast path must not answer for it either."""
    _, _, declined = _native().process_lines(
        [_with(remoteMta="x; y;"), _with(remoteMta="dns; ;")], RECEIVED_AT, DEFAULT_MAX_BYTES
    )
    assert declined == [0, 1]


def test_benchmark_generator_output() -> None:
    """What bench/classify.sh measures: identical, and (nearly) all of it accepted."""
    lines = _generated(3000)
    assert _compare(lines) <= len(lines) * 0.01


def test_fixture_samples_of_every_provider() -> None:
    """Other providers' shapes and the DSN report shape are declined; flat DSN accepted."""
    lines = _fixture_lines()
    declined = _compare(lines)
    assert declined < len(lines)
    events, _, _ = _native().process_lines(lines, RECEIVED_AT, DEFAULT_MAX_BYTES)
    for line, event in zip(lines, events, strict=True):
        if event is not None:
            assert b'"finalRecipient"' in line


def test_hostile_lines() -> None:
    """Broken JSON, wrong types, limits, control characters, Unicode edge cases."""
    _compare(HOSTILE)


def test_texts_full_of_phrase_words() -> None:
    """Texts made of every word of every phrase (the most work per text), repeated
    anchors and codes: identical, and accepted."""
    words = sorted({w for _, needle, _ in _RULES.messages.index.table() for w in needle.split()})
    text = b" ".join(words).decode()
    lines = [
        _with(diagnosticCode=(text * 3)[:9000]),
        _with(diagnosticCode="user " * 2000),
        _with(diagnosticCode="said 550 " * 1000),
        _with(diagnosticCode="5.5.5." * 1500),
        _with(diagnosticCode=b" ".join(reversed(words)).decode(), action="delayed"),
    ]
    assert _compare(lines) == 0


def test_limits_are_respected() -> None:
    """A line over max_bytes and items that are not bytes are declined, not classified."""
    native = _native()
    line = _with()
    _, _, declined = native.process_lines([line, line, b"x", line], RECEIVED_AT, len(line) - 1)
    assert declined == [0, 1, 2, 3]
    events, _, declined = native.process_lines(
        [line, "text", None, bytearray(line), line], RECEIVED_AT, DEFAULT_MAX_BYTES  # type: ignore[list-item]
    )
    assert declined == [1, 2, 3]
    assert events[0] == events[4] and events[0] is not None
    assert native.process_lines([], RECEIVED_AT, 1) == ([], [], [])


def test_received_at_stands_in_for_a_missing_date() -> None:
    """Absent, null and empty dates take the receive time, as in Python."""
    lines = [_with(lastAttemptDate=_ABSENT), _with(lastAttemptDate=None), _with(lastAttemptDate="")]
    assert _compare(lines) == 0
    events, _, _ = _native().process_lines(lines, "2031-07-01T10:00:00.000Z", DEFAULT_MAX_BYTES)
    assert all(b'"occurredAt":"2031-07-01T10:00:00.000Z"' in (e or b"") for e in events)


def test_a_rule_added_to_the_data_works_on_both_paths() -> None:
    """Rules are data: a new rule in messages.toml reaches the engine with no Rust change."""
    _native()
    data = (ROOT / "consumer" / "data" / "messages.toml").read_text("utf-8")
    rule = (
        '\n[[rule]]\nid = "test.zebra"\nstate = "MailBlockGeneral"\n'
        'any = ["zebra crossing forbidden"]\nall = ["striped"]\nunless = ["horse"]\ncodes = ["5xx"]\n'
        'example = "550 striped zebra crossing forbidden here"\nsource = "test"\n'
    )
    rules = load_rules({"messages.toml": (rule + "\n" + data).encode()})
    native = fastpath.build(rules)
    assert native is not None
    texts = [
        "550 striped zebra crossing forbidden here",
        "550 zebra crossing forbidden",
        "550 striped zebra crossing forbidden, horse too",
        "450 striped zebra crossing forbidden",
    ]
    lines = [_with(diagnosticCode=text, status=_ABSENT) for text in texts]
    assert _compare(lines, rules, native) == 0
    events, _, _ = native.process_lines(lines, RECEIVED_AT, DEFAULT_MAX_BYTES)
    ids = [orjson.loads(e or b"{}")["ruleId"] for e in events]
    assert ids[0] == "test.zebra"
    assert "test.zebra" not in ids[1:]  # no "striped"; "horse"; not a 5xx reply


def test_chunks_hold_the_same_outputs_as_lines() -> None:
    """``process_chunk`` (the CLI's form) joins exactly what ``process_lines`` gives."""
    native = _native()
    lines = [*_corpus_variants(1)[:400], *HOSTILE[:40]]
    events, updates, declined = native.process_lines(lines, RECEIVED_AT, DEFAULT_MAX_BYTES)
    chunk_events, chunk_updates, chunk_declined, event_cuts, update_cuts = native.process_chunk(
        lines, RECEIVED_AT, DEFAULT_MAX_BYTES
    )
    assert chunk_declined == declined
    assert chunk_events == b"".join(e + b"\n" for e in events if e is not None)
    assert chunk_updates == b"".join(u + b"\n" for u in updates if u is not None)
    for k, index in enumerate(declined):
        before = [e for e in events[:index] if e is not None]
        assert event_cuts[k] == sum(len(e) + 1 for e in before)
        assert update_cuts[k] == sum(len(u) + 1 for u in updates[:index] if u is not None)
    assert native.process_chunk([], RECEIVED_AT, 1) == (b"", b"", [], [], [])


def test_no_panic_happened() -> None:
    """The engine declines by returning, never by panicking (panics are counted)."""
    _compare(HOSTILE)
    assert __import__("consumer_native").panics() == 0


# Pieces of remote-server replies around the places the engine reads closely: codes,
# the "smtp;" prefix, "said", word boundaries, and characters whose lower case, digit,
# space or case-insensitive reading differs between ASCII and Unicode.
_PIECES = [
    "550", "5.1.1", "4.2.2", "5.7.1", "421", "250", "2.0.0", "5.7.001", "4.16.55.1", " ", "  ", "\t",
    "\n", "\x1c", "\x00", "\x7f", "\u00a0", "\u2003", "\u2028", "said", "SAID", "\u017faid", "unsaid",
    ":", "(", "[", "=", "'", '"', "-", ";", ".", "smtp", "SMTP", "x-", "x-postfix", "\u00e9", "\u00c9",
    "\u212a", "\u0130", "\u0131", "\u03a3", "\u03c3", "\u03c2", "\u0665", "\uff15", "\u00b2", "\u2460",
    "\u1e9e", "\u01c5", "\U0001f600", "user unknown", "mailbox full", "gsmtp", "greylisted", "spam",
    "over quota", "r\u00e9ponse automatique", "abwesenheitsnotiz", "Out of Office", "blocked",
    "5xx", "0", "7", "12", "p=NoSuchUser", "support.google.com", "protection.outlook.com", "mwinf",
    "ofr_", "\u00e4", "\u00df", "\u0410\u0432\u0442\u043e",
]


@settings(max_examples=_EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(_PIECES), max_size=24).map("".join),
    st.sampled_from(["failed", "delayed", "delivered"]),
    st.sampled_from([_ABSENT, "5.1.1", "4.4.1", "", "2.0.0"]),
    st.sampled_from(["example.net", "gmail.com", "yandex.ru"]),
)
def test_texts_built_from_tricky_pieces(text: str, action: str, status: Any, domain: str) -> None:
    """Diagnostics assembled from the pieces the code and phrase readers care about."""
    _compare([_with(diagnosticCode=text, action=action, status=status,
                    finalRecipient=f"a@{domain}", remoteMta=_ABSENT)])


_HOSTILE_VALUES = st.sampled_from(
    [None, True, 0, -1, 2**63 - 1, 1.5, 1e300, "", " ", "\x00", "\u00e9", "\ud7ff", "a@b.cd", "rfc822;", "550 5.1.1",
     "failed", "DELAYED", "5.1.1", "dns; mx.google.com", "Fri, 14 Mar 2025 09:12:05 +0000", "x" * 300,
     [], {}, ["x"], {"a": "b"}]
) | st.text(max_size=40)
_KEYS = st.sampled_from(
    ["finalRecipient", "action", "status", "diagnosticCode", "remoteMta", "lastAttemptDate",
     "reportingMta", "messageId", "finalLogId", "originalRecipient", "extra", "Final-Recipient"]
)


@settings(max_examples=_EXAMPLES, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(_corpus_variants(1)[:200]),
    st.lists(st.tuples(st.sampled_from(["replace", "delete"]), _KEYS, _HOSTILE_VALUES), max_size=3),
    st.integers(min_value=0, max_value=10_000),
    st.sampled_from([b"", b"", b"\xff", b"\xc3(", b"\x00", b"]", b'"', b"\\", b"\n", b",", b"}"]),
)
def test_mutated_generic_events(
    base: bytes, changes: list[tuple[str, str, Any]], cut: int, damage: bytes
) -> None:
    """Real generic events with fields replaced or deleted, then damaged at byte level."""
    document = orjson.loads(base)
    for operation, key, value in changes:
        if operation == "delete":
            document.pop(key, None)
        else:
            document[key] = value
    raw = orjson.dumps(document)
    if damage:
        cut %= len(raw) + 1
        raw = raw[:cut] + damage + raw[cut + len(damage):]
    _compare([raw])

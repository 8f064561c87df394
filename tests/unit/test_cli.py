"""The offline CLI: order, dead letters with line numbers, suppressions file, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
from corpus import FIXTURES

from consumer.cli import main


def _lines(*payloads: bytes) -> bytes:
    return b"\n".join(payloads) + b"\n"


def test_classify_keeps_order_and_reports_bad_lines(tmp_path: Path, capsysbinary: object) -> None:
    """Events come out in input order; each bad line gives one dead letter naming its line."""
    bounce = orjson.dumps(orjson.loads((FIXTURES / "sendgrid/bounce.json").read_bytes()))
    delivered = orjson.dumps(orjson.loads((FIXTURES / "postmark/delivery.json").read_bytes()))
    source = tmp_path / "in.jsonl"
    source.write_bytes(_lines(bounce, b"{broken", delivered, b"[1]"))
    errors, suppressions = tmp_path / "err.jsonl", tmp_path / "sup.jsonl"
    code = main(
        ["classify", str(source), "--errors", str(errors), "--suppressions", str(suppressions)]
    )
    out = capsysbinary.readouterr().out  # type: ignore[attr-defined]
    assert code == 0
    events = [orjson.loads(line) for line in out.splitlines()]
    assert [e["status"] for e in events] == ["Bounce", "Delivered"]
    letters = [orjson.loads(line) for line in errors.read_bytes().splitlines()]
    assert [(d["line"], d["errorClass"]) for d in letters] == [
        (2, "DecodeError"),
        (4, "UnknownProviderError"),
    ]
    updates = [orjson.loads(line) for line in suppressions.read_bytes().splitlines()]
    assert [(u["action"], u["reason"]) for u in updates] == [("suppress", "HardBounce")]


def test_unreadable_input_exits_non_zero(tmp_path: Path) -> None:
    """A missing input file is an I/O failure: exit status 1 and a message."""
    assert main(["classify", str(tmp_path / "missing.jsonl")]) == 1


def test_console_script_explains_a_text() -> None:
    """`bounce-consumer explain` prints the decision, the rule and its example."""
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "explain", "550 5.1.1 <a@example.net>: user unknown"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "status:          Bounce" in result.stdout
    assert "recipientState:  HardBounce" in result.stdout
    assert "rule:            generic.user-unknown" in result.stdout


def test_stdin_input(tmp_path: Path) -> None:
    """`classify -` reads standard input."""
    payload = orjson.dumps(
        {
            "finalRecipient": "a@example.net",
            "action": "delayed",
            "diagnosticCode": "452 4.2.2 Mailbox full",
        }
    )
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "classify", "-"],
        input=payload,
        capture_output=True,
        check=True,
    )
    event = orjson.loads(result.stdout)
    assert (event["status"], event["recipientState"]) == ("Deferred", "SoftBounceMailboxFull")


def test_run_help_lists_every_setting() -> None:
    """`bounce-consumer run --help` documents each environment variable with its default."""
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "run", "--help"],
        capture_output=True, text=True, check=True, timeout=60,
    )
    from consumer.config import VARIABLES

    for variable in VARIABLES:
        assert variable.name in result.stdout


def test_run_refuses_a_bad_setting_naming_the_variable() -> None:
    """A bad environment value stops the worker before it connects, exit 2, variable named."""
    import os

    env = {**os.environ, "MAX_BATCH_RECORDS": "lots", "KAFKA_SASL_PASSWORD": "pw-never-shown"}
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "run"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert "MAX_BATCH_RECORDS" in result.stderr
    assert "pw-never-shown" not in result.stderr + result.stdout


def test_suppression_clear_refuses_a_bad_address_before_connecting() -> None:
    """`suppression clear` checks the address and reason first: exit 1 with the reason."""
    result = subprocess.run(
        [sys.executable, "-m", "consumer", "suppression", "clear", "not-an-address",
         "--reason", "x"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 1
    assert "not a valid email address" in result.stderr

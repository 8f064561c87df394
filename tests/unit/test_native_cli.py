"""`bounce-consumer classify` with and without the compiled fast path: same bytes out.

Whole runs over a file mixing every kind of line (generic events the fast path takes,
other providers' payloads, DSN reports, blank lines, broken and hostile lines) must give
the same stdout, suppressions file and dead letters (with their line numbers) either way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from test_native_differential import HOSTILE, _corpus_variants, _fixture_lines, _generated, _native

from consumer import fastpath
from consumer.cli import main
from consumer.rules import load_rules


def _mixed_input(path: Path) -> None:
    lines = [*_generated(600), *_corpus_variants(1), *HOSTILE, *_fixture_lines()]
    # Interleave so runs of accepted lines alternate with declined ones in every chunk.
    mixed = [line for pair in zip(lines[::2], lines[1::2], strict=False) for line in pair]
    body = b"".join(
        line if line.endswith(b"\n") else line.replace(b"\n", b" ") + b"\n" for line in mixed
    )
    path.write_bytes(body + b"\n\n" + lines[0])  # blank lines, and no final newline


def _run(
    source: Path, out: Path, *extra: str, capsysbinary: pytest.CaptureFixture[bytes]
) -> tuple[bytes, bytes, bytes]:
    errors, suppressions = out / "errors.jsonl", out / "suppressions.jsonl"
    out.mkdir()
    code = main(["classify", str(source), "--errors", str(errors),
                 "--suppressions", str(suppressions), *extra])
    assert code == 0
    stdout = capsysbinary.readouterr().out
    return stdout, suppressions.read_bytes(), errors.read_bytes()


def test_same_outputs_with_and_without_the_fast_path(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events, suppression updates and dead letters are byte-identical, in order."""
    _native()
    source = tmp_path / "in.jsonl"
    _mixed_input(source)
    monkeypatch.setattr("consumer.cli._CHUNK_BYTES", 64 * 1024)  # many chunks
    monkeypatch.setattr("consumer.cli._now", lambda: "2025-06-01T12:00:00.000Z")
    native = _run(source, tmp_path / "native", capsysbinary=capsysbinary)
    python = _run(source, tmp_path / "python", "--no-native", capsysbinary=capsysbinary)
    assert native == python
    events, updates, letters = native
    assert len(events.splitlines()) > 1000
    assert updates and letters
    numbers = [orjson.loads(letter)["line"] for letter in letters.splitlines()]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)


@pytest.mark.parametrize("limit", ["-1", "0", "300", str(10**30)])
def test_odd_size_limits(
    limit: str, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--max-bytes below zero, tiny or beyond any machine integer: the same on both paths."""
    _native()
    source = tmp_path / "in.jsonl"
    source.write_bytes(b"".join(_generated(20)) + b"\n{}\n")
    monkeypatch.setattr("consumer.cli._now", lambda: "2025-06-01T12:00:00.000Z")
    native = _run(source, tmp_path / "native", "--max-bytes", limit, capsysbinary=capsysbinary)
    python = _run(source, tmp_path / "python", "--max-bytes", limit, "--no-native",
                  capsysbinary=capsysbinary)
    assert native == python


def test_environment_switch_forces_the_python_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """BOUNCE_NATIVE=0 turns the fast path off; other providers never use it."""
    rules = load_rules()
    monkeypatch.setenv(fastpath.ENV, "0")
    assert fastpath.load(rules) is None
    monkeypatch.setenv(fastpath.ENV, "1")
    assert fastpath.load(rules, "sendgrid") is None
    if fastpath.build(rules) is not None:
        assert fastpath.load(rules) is not None
        assert fastpath.load(rules, "dsn") is not None


def test_stdin_and_a_forced_provider(tmp_path: Path) -> None:
    """`classify -` and `--provider dsn` give the same bytes on both paths."""
    _native()
    # Every line has its own date (the receive time differs from run to run).
    lines = b"".join([*_generated(300), b"{broken\n", b"[1]\n", *_generated(50)])
    outputs = []
    for env in ({fastpath.ENV: "1"}, {fastpath.ENV: "0"}):
        result = subprocess.run(
            [sys.executable, "-m", "consumer", "classify", "-", "--provider", "dsn"],
            input=lines, capture_output=True, check=True, timeout=120,
            env={**os.environ, **env},
        )
        outputs.append((result.stdout, result.stderr))
    assert outputs[0] == outputs[1]
    assert outputs[0][0].count(b"\n") == 350
    assert outputs[0][1].count(b"\n") == 2

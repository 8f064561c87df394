"""Command line: ``run`` (the worker), ``demo``, ``classify`` and ``explain``.

``classify`` is the offline twin of the worker: the same pure pipeline over JSON Lines,
normalized events on stdout in input order, one dead-letter line per bad input line
(and processing goes on).  ``explain`` shows how one text or payload is decided.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import orjson
from aiokafka.errors import KafkaError
from prometheus_client import REGISTRY

from consumer import __version__, fastpath
from consumer.classify import classify
from consumer.codec import DEFAULT_MAX_BYTES
from consumer.config import STAGES, describe, from_env
from consumer.control import send_clear
from consumer.demo import run_demo
from consumer.errors import ConfigError, PayloadError, RulesError
from consumer.logs import configure as configure_logs
from consumer.mailbox import mailbox_provider
from consumer.models import DeadLetter, Kind, Observation
from consumer.pipeline import process
from consumer.providers import BY_NAME, detect
from consumer.providers.base import format_time
from consumer.rules import Rules, load_rules
from consumer.runner import run_worker
from consumer.textmatch import tokenize

__all__ = ["main"]

_FLUSH_EVERY = 512
#: Input handed to the compiled fast path at a time: a few thousand lines, so the cost
#: of crossing into Rust and back is spread thin.
_CHUNK_BYTES = 1 << 20


def _now() -> str:
    return format_time(datetime.now(UTC))


class _Progress:
    """A one-line progress bar on stderr, redrawn at most ten times a second."""

    def __init__(self, stream: IO[str], total: int) -> None:
        self.stream, self.total, self.last = stream, max(total, 1), 0.0

    def update(self, done: int, lines: int, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < 0.1:
            return
        self.last = now
        share = min(done / self.total, 1.0)
        bar = "#" * int(share * 30)
        self.stream.write(f"\r[{bar:<30}] {share:6.1%} {lines:,} lines")
        if force:
            self.stream.write("\n")
        self.stream.flush()


class _Outputs:
    """What ``classify`` writes, in input order: events on stdout and suppression updates
    (the Python path's buffered and written ``_FLUSH_EVERY`` at a time, the fast path's
    written as they come, after what is buffered), dead letters at once."""

    def __init__(
        self,
        out: IO[bytes],
        suppressions: IO[bytes] | None,
        errors: IO[bytes],
        progress: _Progress | None,
    ) -> None:
        self.out, self.suppressions, self.errors = out, suppressions, errors
        self.progress = progress
        self.events: list[bytes] = []
        self.updates: list[bytes] = []

    def python_path(
        self, line: bytes, number: int, rules: Rules, received_at: str, args: argparse.Namespace
    ) -> None:
        """The reference path for one line: its outputs, or its one dead letter."""
        dumps = orjson.dumps
        try:
            outcome = process(line, rules, received_at, args.provider, None, args.max_bytes)
        except PayloadError as exc:
            letter = DeadLetter(type(exc).__name__, exc.kind, str(exc), len(line), number)
            self.errors.write(dumps(letter.to_json()) + b"\n")
            return
        for event in outcome.events:
            self.events.append(dumps(event.to_json()))
        if self.suppressions is not None:
            for update in outcome.suppressions:
                self.updates.append(dumps(update.to_json()))

    def native(self, events: memoryview, updates: memoryview) -> None:
        """A run of the fast path's outputs (each line already ends in a newline),
        written after whatever the Python path buffered before it, without copies."""
        if events:
            if self.events:
                self.out.write(b"\n".join(self.events) + b"\n")
                self.events.clear()
            self.out.write(events)
        if updates and self.suppressions is not None:
            if self.updates:
                self.suppressions.write(b"\n".join(self.updates) + b"\n")
                self.updates.clear()
            self.suppressions.write(updates)

    def flush_full(self, done: int, lines: int) -> None:
        if len(self.events) >= _FLUSH_EVERY:
            self.out.write(b"\n".join(self.events) + b"\n")
            self.events.clear()
            if self.progress is not None:
                self.progress.update(done, lines)
        if len(self.updates) >= _FLUSH_EVERY and self.suppressions is not None:
            self.suppressions.write(b"\n".join(self.updates) + b"\n")
            self.updates.clear()

    def flush_rest(self) -> None:
        if self.events:
            self.out.write(b"\n".join(self.events) + b"\n")
        if self.updates and self.suppressions is not None:
            self.suppressions.write(b"\n".join(self.updates) + b"\n")
        self.out.flush()


def _classify(args: argparse.Namespace, rules: Rules) -> int:
    source = args.input
    try:
        stream: IO[bytes] = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
    except OSError as exc:
        print(f"bounce-consumer: cannot read {source}: {exc.strerror}", file=sys.stderr)
        return 1
    errors_out: IO[bytes] = open(args.errors, "wb") if args.errors else sys.stderr.buffer  # noqa: SIM115
    suppressions_out: IO[bytes] | None = (
        open(args.suppressions, "wb") if args.suppressions else None  # noqa: SIM115
    )
    progress = None
    if source != "-" and sys.stderr.isatty():
        progress = _Progress(sys.stderr, Path(source).stat().st_size)
    sink = _Outputs(sys.stdout.buffer, suppressions_out, errors_out, progress)
    fast = None if args.no_native else fastpath.load(rules, args.provider)
    received_at = _now()
    done = lines = 0
    try:
        if fast is None:
            for lines, line in enumerate(stream, 1):
                done += len(line)
                if not line.strip():
                    continue
                sink.python_path(line, lines, rules, received_at, args)
                sink.flush_full(done, lines)
        else:
            # Whole chunks to the compiled path; the lines it declines (anything but a
            # plain generic MTA event, blank lines too) go through the Python path in
            # their place, so the output order and the dead letters are the same.
            # (The extension takes a machine-size limit; it declines what Python refuses.)
            limit = max(0, min(args.max_bytes, 1 << 62))
            while chunk := stream.readlines(_CHUNK_BYTES):
                found, suppressed, declined, event_cuts, update_cuts = fast.process_chunk(
                    chunk, received_at, limit
                )
                events, updates = memoryview(found), memoryview(suppressed)
                event_at = update_at = 0
                for index, event_cut, update_cut in zip(
                    declined, event_cuts, update_cuts, strict=True
                ):
                    sink.native(events[event_at:event_cut], updates[update_at:update_cut])
                    line = chunk[index]
                    if line.strip():
                        sink.python_path(line, lines + index + 1, rules, received_at, args)
                        sink.flush_full(done, lines + index + 1)
                    event_at, update_at = event_cut, update_cut
                sink.native(events[event_at:], updates[update_at:])
                lines += len(chunk)
                done += sum(map(len, chunk))
                if progress is not None:
                    progress.update(done, lines)
        sink.flush_rest()
    except OSError as exc:
        print(f"bounce-consumer: I/O error: {exc}", file=sys.stderr)
        return 1
    finally:
        if progress is not None:
            progress.update(done, lines, force=True)
        if stream is not sys.stdin.buffer:
            stream.close()
        if suppressions_out is not None:
            suppressions_out.close()
        if errors_out is not sys.stderr.buffer:
            errors_out.close()
    return 0


def _explain(args: argparse.Namespace, rules: Rules) -> int:
    text = args.text
    if text.lstrip().startswith(("{", "[")):
        try:
            outcome = process(text.encode(), rules, _now(), args.provider)
        except PayloadError as exc:
            print(f"dead letter ({type(exc).__name__}): {exc}")
            return 0
        payload = orjson.loads(text)
        observations = detect(payload, args.provider).parse(payload, _now()).observations
        if not observations:
            print(f"{outcome.provider}: recognised and ignored (not a delivery outcome)")
        for observation in observations:
            _print_explanation(observation, rules)
        for update in outcome.suppressions:
            print(
                f"suppression: {update.action.value} {update.reason}"
                + (" (needs review)" if update.needs_review else "")
            )
        return 0
    kind = {"failed": Kind.FAILED, "delayed": Kind.DEFERRED}[args.action]
    observation = Observation(
        provider="dsn",
        kind=kind,
        email="someone@example.com",
        occurred_at=_now(),
        provider_event_id="explain",
        provider_state=args.action,
        diagnostic=text,
    )
    _print_explanation(observation, rules)
    return 0


def _print_explanation(observation: Observation, rules: Rules) -> None:
    if observation.kind in (Kind.SUPPRESS, Kind.UNSUPPRESS):
        print(
            f"{observation.provider} {observation.provider_state}: "
            f"{observation.kind.value} ({observation.suppression_reason})"
        )
        return
    text = tokenize(observation.diagnostic) if observation.diagnostic else None
    domain = observation.email.rpartition("@")[2]
    mailbox = mailbox_provider(rules, domain, observation.remote_mta, text)
    result = classify(observation, rules, text, mailbox, explain=True)
    state = result.recipient_state
    print(f"status:          {result.status.value}")
    print(f"recipientState:  {state.value if state else 'null'}")
    print(f"classifiedBy:    {result.classified_by.value}")
    print(f"mailboxProvider: {mailbox}")
    print(f"smtpCode:        {result.smtp_code}   enhancedCode: {result.enhanced_code}")
    if result.rule_id:
        rule = next(r for r in rules.messages.rules if r.id == result.rule_id)
        print(f"rule:            {rule.id}")
        print(f"  written for:   {rule.examples[0]}")
        print(f"  source:        {rule.source}")
    print("evidence:")
    for step in result.evidence:
        print(f"  - {step}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bounce-consumer",
        description="Classify email delivery events (SendGrid, SES, Mailgun, SparkPost, "
        "Postmark, Iterable, Okta, MTA DSN) into status and recipientState.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    classify = sub.add_parser(
        "classify",
        help="classify JSON Lines of raw payloads",
        description="Read JSON Lines (one raw payload or provider batch per line); write "
        "normalized events as JSON Lines on stdout, in input order. Bad lines give one "
        "dead-letter line each on stderr (or --errors) and processing goes on.",
    )
    classify.add_argument("input", nargs="?", default="-", help="a file, or - for stdin (default)")
    classify.add_argument(
        "--provider",
        choices=sorted(BY_NAME),
        help="skip format detection: every line is of this provider",
    )
    classify.add_argument(
        "--suppressions", metavar="FILE", help="write suppression updates as JSON Lines to FILE"
    )
    classify.add_argument("--errors", metavar="FILE", help="write dead letters to FILE, not stderr")
    classify.add_argument(
        "--no-native",
        action="store_true",
        help="use the pure Python path only, not the compiled fast path for generic MTA "
        f"events (as {fastpath.ENV}=0 does); the output is the same",
    )
    classify.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        metavar="N",
        help=f"payload size limit in bytes (default {DEFAULT_MAX_BYTES})",
    )
    explain = sub.add_parser(
        "explain",
        help="show how a diagnostic text or a payload is classified",
        description="TEXT is a remote server reply (e.g. '550 5.1.1 user unknown') or a whole "
        "JSON payload.",
    )
    explain.add_argument("text", metavar="TEXT-or-PAYLOAD")
    explain.add_argument(
        "--action",
        choices=["failed", "delayed"],
        default="failed",
        help="for a bare text: the DSN action (default failed)",
    )
    explain.add_argument("--provider", choices=sorted(BY_NAME), help="skip format detection")
    run = sub.add_parser(
        "run",
        help="run the worker (settings from environment variables)",
        description="Consume raw delivery events from Kafka and produce normalized events, "
        "suppression updates and dead letters. Every setting is an environment variable:",
        epilog=describe(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--stage",
        choices=STAGES,
        help="which stage to run: all = both in this process (default: $STAGE, else classify)",
    )
    suppression = sub.add_parser(
        "suppression", help="operator commands for the suppression stage"
    ).add_subparsers(dest="action", required=True)
    clear = suppression.add_parser(
        "clear",
        help="lift an address's suppression (writes a command to CONTROL_TOPIC)",
        description="The suppression stage reads the command, writes an unsuppress update "
        "and starts the address's soft-bounce count again. Broker settings come from the "
        "same environment variables as `run`.",
    )
    clear.add_argument("address", help="the email address")
    clear.add_argument("--reason", required=True, help="why (kept in the unsuppress update)")
    demo = sub.add_parser(
        "demo",
        help="run the whole job once on a broker with the bundled sample payloads",
        description="Create fresh topics, feed every sample payload, run the worker until "
        "all are processed, show the outputs and bounce rates, delete the topics.",
    )
    demo.add_argument(
        "--bootstrap",
        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        help="broker address (default: $KAFKA_BOOTSTRAP_SERVERS or 127.0.0.1:9092)",
    )
    demo.add_argument(
        "--samples",
        type=Path,
        default=Path("tests/fixtures"),
        help="directory of sample payloads, one JSON document per *.json file",
    )
    return parser


def _run(args: argparse.Namespace, rules: Rules) -> int:
    try:
        settings = from_env()
        if args.stage:
            settings = dataclasses.replace(settings, stage=args.stage)
        configure_logs(settings.log_level)
    except ConfigError as exc:
        print(f"bounce-consumer: configuration error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(run_worker(settings, rules, REGISTRY))


def _suppression(args: argparse.Namespace, rules: Rules) -> int:
    try:
        settings = from_env()
    except ConfigError as exc:
        print(f"bounce-consumer: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        command_id = asyncio.run(send_clear(settings, args.address, args.reason))
    except (ValueError, KafkaError) as exc:
        print(f"bounce-consumer suppression clear: {exc}", file=sys.stderr)
        return 1
    print(f"clear requested for {args.address} (command {command_id}) on {settings.control_topic}")
    return 0


def _demo(args: argparse.Namespace, rules: Rules) -> int:
    configure_logs("error", sys.stderr)
    try:
        return asyncio.run(run_demo(args.bootstrap, args.samples, rules))
    except KafkaError as exc:
        print(
            f"bounce-consumer demo: no broker at {args.bootstrap} ({exc}); start one with "
            "deploy/kafka/local-kafka start, or use `make demo`",
            file=sys.stderr,
        )
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        rules = load_rules()
    except RulesError as exc:
        print(f"bounce-consumer: rule data is invalid: {exc}", file=sys.stderr)
        return 2
    handlers: dict[str, Any] = {
        "classify": _classify,
        "explain": _explain,
        "run": _run,
        "demo": _demo,
        "suppression": _suppression,
    }
    result: int = handlers[args.command](args, rules)
    return result


if __name__ == "__main__":
    sys.exit(main())

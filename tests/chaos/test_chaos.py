"""The CI-sized fault-injection run (``tests/chaos/run.py``), both guarantee modes.

8 000 mixed inputs per mode (every provider, generic DSN, ~5 % poison) through real
worker processes on a broker of the run's own, while a worker is killed with SIGKILL
mid-batch, another stopped with SIGTERM, a third joins and leaves, the broker is stopped
for 10 s (30 s in the by-hand run, ``bench/chaos.sh``) and killed while outputs and, in
exactly_once mode, transactions are in flight.  Then every input offset must be
accounted for: nothing lost, one dead letter per poison input, no duplicate in
exactly_once mode.  The run is a child process, as by hand, and reports in JSON.

In exactly_once mode a duplicate anywhere is a failure, the broker kill included: the
worker resumes only from stable offsets (consumer/stable_offsets.py) and a worker the
group has dropped cannot commit (consumer/fenced_offsets.py).  The one loss not counted
against the worker is Kafka's own: a commit that the broker completes without writing
its markers while the partitions have no leader (the broker's log says so, naming the
partitions); the run reports those outputs apart (docs/reliability.md).  When that
fault leaves worse behind (a transaction that never ends, so the group's offsets stay
pending and the workers rightly wait), the run fails, and only then, with that line in
the broker's log, is it run again, at most twice; the spoiled attempts are printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from run import skipped_marker_lines

pytestmark = pytest.mark.kafka

RUN = Path(__file__).with_name("run.py")
EVENTS = 8000
OUTAGE_SECONDS = 10


#: Attempts in all when a run fails and the broker's log shows Kafka's own fault of
#: completing a commit without its markers (docs/reliability.md, "a commit without
#: markers"): lost records or a hanging transaction then say nothing about the worker.
ATTEMPTS = 3


def _run_once(work: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    report_path = work / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            str(RUN),
            "--events",
            str(EVENTS),
            "--mode",
            "both",
            "--outage",
            str(OUTAGE_SECONDS),
            "--json",
            str(report_path),
            "--work-dir",
            str(work / "run"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    return result, report_path


def _broker_skipped_markers(work: Path) -> int:
    return len(skipped_marker_lines(work / "run" / "kafka" / "kafka.log"))


@pytest.fixture(scope="module")
def chaos_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The run's report; repeated (at most ATTEMPTS runs) only when it failed *and* the
    broker's log shows that the broker completed commits without their markers.  A
    failure without that line is the worker's and is reported at once."""
    spoiled: list[str] = []
    for attempt in range(1, ATTEMPTS + 1):
        work = tmp_path_factory.mktemp(f"chaos-{attempt}")
        result, report_path = _run_once(work)
        print(result.stdout)
        skipped = _broker_skipped_markers(work)
        if result.returncode != 0 and skipped and attempt < ATTEMPTS:
            spoiled.append(
                f"attempt {attempt}: exit {result.returncode}, the broker completed {skipped} "
                f"commit(s) without markers; logs in {work}"
            )
            print(f"chaos run spoiled by the broker's fault, running again: {spoiled[-1]}")
            continue
        break
    if not report_path.exists():
        pytest.fail(
            f"the chaos run wrote no report (exit {result.returncode}; earlier attempts: "
            f"{spoiled}):\n{result.stderr[-6000:]}",
            pytrace=False,
        )
    report = json.loads(report_path.read_text())
    report["stdout"] = result.stdout + "".join(f"\n{line}" for line in spoiled)
    report["stderr_tail"] = result.stderr[-6000:]
    report["returncode"] = result.returncode
    report["spoiled_attempts"] = spoiled
    return report


def _mode(report: dict, mode: str) -> dict:
    found = [m for m in report["modes"] if m["mode"] == mode]
    assert found, f"no {mode} result:\n{report['stderr_tail']}"
    return found[0]


@pytest.mark.parametrize("mode", ["at_least_once", "exactly_once"])
def test_nothing_lost_under_faults(chaos_report: dict, mode: str) -> None:
    result = _mode(chaos_report, mode)
    context = f"{chaos_report['stdout']}\n{chaos_report['stderr_tail']}"
    assert result["problems"] == [], context
    assert result["events"] == EVENTS
    assert result["raw_records"] >= EVENTS  # the feeder may write one twice: an extra input
    assert result["poison"] > 0
    # Outputs lost only because the broker completed their transaction without writing
    # its markers (a Kafka fault the worker cannot see, docs/reliability.md) are counted
    # apart, and only when the broker's log names their partitions; any other loss fails.
    assert result["lost"] == result["lost_to_unmarked_commits"], context
    assert result["lost_to_unmarked_commits"] <= result["lost"]
    if result["lost_to_unmarked_commits"]:
        assert result["broker_skipped_markers"] > 0, context
    assert result["dead_letters"] == result["poison"], context
    assert result["unexpected"] == 0, context
    assert result["dead_letters_altered"] == 0, context
    assert all(code == 0 for code in result["sigterm_exit_codes"].values()), context
    if mode == "exactly_once":
        assert result["duplicates"] == 0, context
        assert result["open_transactions_at_end"] == 0, context


@pytest.mark.parametrize("mode", ["at_least_once", "exactly_once"])
def test_every_fault_was_injected_and_recovered(chaos_report: dict, mode: str) -> None:
    faults = _mode(chaos_report, mode)["faults"]
    names = " | ".join(fault["name"] for fault in faults)
    for expected in ("kill -9", "SIGTERM", "joins", "leaves", "broker stopped", "broker kill"):
        assert expected in names, names
    for fault in faults:
        assert fault["ready_s"] is not None and fault["progress_s"] is not None, fault


def test_the_run_exits_zero(chaos_report: dict) -> None:
    assert chaos_report["returncode"] == 0, chaos_report["stderr_tail"]
    assert chaos_report["exit_code"] == 0

"""Fixtures for the integration tests: a real Apache Kafka broker, no mocks.

``kafka_bootstrap`` (session) is the broker every test shares:

* ``KAFKA_BOOTSTRAP_SERVERS`` set: that broker, after checking it answers
  within 30 s.  If it does not, the tests fail: a broker test must never pass
  (or be skipped) because its broker is missing, in CI or locally.
* unset: a throw-away broker started with ``deploy/kafka/local-kafka`` on free
  ports with its data in the session's temp dir, stopped at session end.  It
  takes 10-20 s (the first run also fetches the Kafka jars with Maven), so the
  progress goes to the terminal instead of being captured.

Per test, ``topics`` and ``group_id`` give fresh names so tests never see each
other's records or offsets; ``dedicated_broker`` is a second broker of the
test's own, for tests that stop and restart it.  The plumbing lives in
``kafkatools`` (no pytest) so that benchmark scripts can use it too.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest

# Like tests/conftest.py does for corpus.py: the tests here import kafkatools as a
# top-level module, whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).parent))

from kafkatools import (
    BrokerUnavailableError,
    LocalBroker,
    LocalBrokerError,
    Topics,
    create_topic_set,
    delete_topics,
    unique_name,
    wait_for_broker,
)

BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP_SERVERS"
BROKER_CHECK_TIMEOUT = 30.0


@contextmanager
def _on_terminal(config: pytest.Config) -> Iterator[Callable[[str], None]]:
    """Suspend output capture, so that local-kafka's stderr reaches the terminal too.

    Yields a function that writes one line through pytest's terminal reporter.
    """
    capman: Any = config.pluginmanager.getplugin("capturemanager")
    reporter: Any = config.pluginmanager.getplugin("terminalreporter")

    def say(message: str) -> None:
        if reporter is not None:
            reporter.write_line(f"kafka: {message}")
        else:
            print(f"kafka: {message}", file=sys.stderr, flush=True)

    with capman.global_and_fixture_disabled() if capman is not None else nullcontext():
        yield say


def _start(broker: LocalBroker, config: pytest.Config, what: str) -> None:
    with _on_terminal(config) as say:
        say(f"starting {what} on {broker.bootstrap} (data in {broker.data_dir}) ...")
        error: LocalBrokerError | None = None
        try:
            broker.start()
        except LocalBrokerError as exc:
            error = exc
        if error is not None:  # outside the except block: no chained traceback
            pytest.fail(f"could not start {what}: {error}", pytrace=False)
        say(f"{what} ready on {broker.bootstrap} in {broker.last_start_seconds or 0:.1f} s")


def _stop(broker: LocalBroker, config: pytest.Config, what: str) -> None:
    with _on_terminal(config) as say:
        say(f"stopping {what} on {broker.bootstrap}")
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``host:port`` of a live broker: ``$KAFKA_BOOTSTRAP_SERVERS`` or one started here."""
    configured = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if configured:
        error: BrokerUnavailableError | None = None
        try:
            # A sync fixture runs outside pytest-asyncio's loops: its own loop is fine.
            asyncio.run(wait_for_broker(configured, timeout=BROKER_CHECK_TIMEOUT))
        except BrokerUnavailableError as exc:
            error = exc
        if error is not None:
            pytest.fail(
                f"{BOOTSTRAP_ENV}={configured!r} is set but {error}. Start that broker, or "
                f"unset {BOOTSTRAP_ENV} to let the tests start their own with "
                "deploy/kafka/local-kafka.",
                pytrace=False,
            )
        yield configured
        return

    broker = LocalBroker(tmp_path_factory.mktemp("kafka"))
    _start(broker, request.config, "the test broker")
    try:
        yield broker.bootstrap
    finally:
        _stop(broker, request.config, "the test broker")


@pytest.fixture
def dedicated_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalBroker]:
    """A started broker of this test's own (own ports and data), stopped at teardown.

    For tests that stop and restart a broker (``await broker.stop_async()``,
    ``await broker.start_async()``: same address and data) without disturbing
    the shared one.  Costs a broker start (~10 s) per test.
    """
    broker = LocalBroker(tmp_path / "kafka")
    _start(broker, request.config, "a dedicated broker")
    try:
        yield broker
    finally:
        _stop(broker, request.config, "the dedicated broker")


@pytest.fixture
async def topics(kafka_bootstrap: str) -> AsyncIterator[Topics]:
    """Fresh raw/events/suppressions(compacted)/dlq topics, 3 partitions each, deleted after."""
    created = await create_topic_set(kafka_bootstrap)
    try:
        yield created
    finally:
        await delete_topics(kafka_bootstrap, created.names)


@pytest.fixture
def group_id() -> str:
    """A consumer group id no other test uses."""
    return unique_name("it-group")

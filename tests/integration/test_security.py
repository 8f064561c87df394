"""The worker over TLS with SASL/SCRAM against a real broker, and what it does with bad
credentials, an untrusted certificate or a principal without ACLs.

One broker for the module (``local-kafka start`` with ``KAFKA_SASL_SSL_PORT``): its
PLAINTEXT listener serves the test's own admin, produce and consume helpers, its
SASL_SSL listener (SCRAM-SHA-256/512, a server certificate for 127.0.0.1 signed by a CA
made here with openssl) serves the worker under test.  The authorizer is on
(``KAFKA_SUPER_USERS``): the worker's user is a super user, a second user has no ACL.
Every secret is random per run and has a recognisable prefix, so "not in the log" is a
meaningful grep.

What the worker does on bad credentials, an untrusted CA and missing ACLs is described
in docs/security.md ("Bad credentials ...").
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import orjson
import pytest
from kafkatools import (
    LocalBrokerError,
    Topics,
    committed_offsets,
    consume_all,
    create_topic_set,
    delete_topics,
    produce,
    unique_name,
)
from tlsbroker import SecureBroker, make_ca, secure_broker
from workers import (
    ChildWorker,
    dsn_payload,
    free_port,
    fully_committed,
    http_get,
    in_process_worker,
    wait_until,
    worker_env,
)

from consumer.rules import Rules

pytestmark = pytest.mark.kafka

USER = "bounce-worker"
# token_hex: only characters local-kafka accepts in KAFKA_SCRAM_USERS.
PASSWORD = f"pw-right-{secrets.token_hex(12)}"
WRONG_PASSWORD = f"pw-wrong-{secrets.token_hex(12)}"
# Authenticates fine, but has no ACL (the broker runs the StandardAuthorizer).
INTRUDER = "intruder"
INTRUDER_PASSWORD = f"pw-intruder-{secrets.token_hex(12)}"
DOMAIN = "security-test.example"


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    """A started broker with a SASL_SSL SCRAM listener, ``USER`` (super user) and ``INTRUDER``."""
    made = secure_broker(
        tmp_path_factory.mktemp("secure-kafka"),
        {USER: PASSWORD, INTRUDER: INTRUDER_PASSWORD},
        extra_env={"KAFKA_SUPER_USERS": USER},  # ACLs enforced: INTRUDER may do nothing
    )
    error: LocalBrokerError | None = None
    try:
        made.broker.start()
    except LocalBrokerError as exc:
        error = exc
    if error is not None:  # outside the except block: no chained traceback
        pytest.fail(f"could not start the SASL_SSL broker: {error}", pytrace=False)
    try:
        yield made
    finally:
        made.broker.stop()


@pytest.fixture
async def secure_topics(secure: SecureBroker) -> AsyncIterator[Topics]:
    created = await create_topic_set(secure.bootstrap, prefix="sec")
    try:
        yield created
    finally:
        await delete_topics(secure.bootstrap, created.names)


def _dsn(i: int) -> bytes:
    """Alternately a 5.1.1 hard bounce (an event and a suppression) and a delivery."""
    return dsn_payload(f"user{i}@{DOMAIN}", bounced=i % 2 == 0, message_id=f"<m{i}@mta.{DOMAIN}>")


async def _get(port: int, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(http_get, port, path)


def _start_failures(log: str) -> int:
    """Start attempts the worker has logged as failed (one warning per attempt)."""
    return sum(
        1 for line in log.splitlines() if '"level":"warning"' in line and '"retry_in"' in line
    )


# --- (a) the happy path ----------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-512", "SCRAM-SHA-256"])
async def test_worker_processes_records_over_sasl_ssl(
    secure: SecureBroker, secure_topics: Topics, rules: Rules, mechanism: str
) -> None:
    """SASL_SSL with SCRAM: records go through end to end and their offsets are committed."""
    count = 20
    group = unique_name("sec-group")
    await produce(secure.bootstrap, secure_topics.raw, [_dsn(i) for i in range(count)])
    env = worker_env(
        secure.secure_bootstrap, secure_topics, group,
        **secure.client_env(USER, PASSWORD, mechanism),
    )  # fmt: skip
    async with in_process_worker(env, rules) as worker:
        await wait_until(lambda: worker.records_done() >= count, 60, f"{count} records done")
        await wait_until(
            lambda: fully_committed(secure.bootstrap, group, secure_topics.raw), 30, "committed"
        )
        await wait_until(lambda: worker.health.ready()[0], 30, "ready")
    events = await consume_all(secure.bootstrap, secure_topics.events, expect=count, settle=0.5)
    assert len(events) == count
    assert {orjson.loads(r.value)["email"] for r in events} == {
        f"user{i}@{DOMAIN}" for i in range(count)
    }
    suppressions = await consume_all(
        secure.bootstrap, secure_topics.suppressions, expect=count // 2, settle=0.5
    )
    assert len(suppressions) == count // 2
    assert await consume_all(secure.bootstrap, secure_topics.dlq, expect=1, timeout=1) == []


# --- (b) wrong password ----------------------------------------------------------------

async def test_wrong_password_keeps_the_worker_up_not_ready_and_quiet_about_it(
    secure: SecureBroker, secure_topics: Topics, tmp_path: Path
) -> None:
    """Refused credentials: no exit, no crash loop, not ready, the cause in the log, no secret."""
    await produce(secure.bootstrap, secure_topics.raw, [_dsn(i) for i in range(4)])
    group = unique_name("sec-group")
    port = free_port()
    env = worker_env(
        secure.secure_bootstrap, secure_topics, group,
        **secure.client_env(USER, WRONG_PASSWORD),
        LOG_LEVEL="info", HTTP_PORT=str(port), RETRY_BACKOFF_MAX_SECONDS="1",
    )  # fmt: skip
    worker = ChildWorker(env, tmp_path / "worker.log")
    try:
        await wait_until(lambda: _start_failures(worker.log()) >= 3, 60, "three failed attempts")
        assert worker.process.poll() is None, "the worker exited:\n" + worker.log()[-3000:]
        status, body = await _get(port, "/readyz")
        assert status == 503, body
        assert "unreachable" in body or "authentication" in body, body
        assert (await _get(port, "/healthz"))[0] == 200
        _status, metrics = await _get(port, "/metrics")
        assert "mailevents_ready 0.0" in metrics
        # SIGTERM during the backoff: a prompt, clean exit.
        assert worker.terminate(30) == 0, worker.log()[-3000:]
    finally:
        worker.ensure_stopped()
    log = worker.log()
    # The broker's own words reach the operator (through aiokafka's error line).
    assert "SaslAuthenticationFailed" in log, log[-3000:]
    assert "invalid credentials" in log
    assert '"KAFKA_SASL_PASSWORD":"***"' in log  # the redacted start-up settings
    for secret in (WRONG_PASSWORD, PASSWORD):
        assert secret not in log
        assert secret not in body
        assert secret not in metrics
    assert await committed_offsets(secure.bootstrap, group, secure_topics.raw) == {}


async def test_wrong_password_readiness_names_authentication(
    secure: SecureBroker, secure_topics: Topics, rules: Rules
) -> None:
    """/readyz's reason says the credentials were refused, not just "unreachable"."""
    env = worker_env(
        secure.secure_bootstrap, secure_topics, unique_name("sec-group"),
        **secure.client_env(USER, WRONG_PASSWORD), RETRY_BACKOFF_MAX_SECONDS="1",
    )  # fmt: skip
    async with in_process_worker(env, rules) as worker:
        await wait_until(lambda: worker.health.ready()[1] != "starting", 30, "a readiness reason")
        ready, reason = worker.health.ready()
        assert not ready
        assert WRONG_PASSWORD not in reason
        assert "authentication" in reason.lower(), reason


# --- (c) a certificate from a CA the worker does not trust -----------------------------


async def test_unknown_ca_fails_tls_verification_without_a_crash_loop(
    secure: SecureBroker, secure_topics: Topics, tmp_path: Path
) -> None:
    """The broker's certificate is not signed by the worker's CA: refused, reported, retried."""
    other_ca = make_ca(tmp_path / "other-ca", name="some other CA")
    port = free_port()
    env = worker_env(
        secure.secure_bootstrap, secure_topics, unique_name("sec-group"),
        **secure.client_env(USER, PASSWORD, ca_file=other_ca.cert),
        LOG_LEVEL="info", HTTP_PORT=str(port), RETRY_BACKOFF_MAX_SECONDS="1",
    )  # fmt: skip
    worker = ChildWorker(env, tmp_path / "worker.log")
    try:
        await wait_until(lambda: _start_failures(worker.log()) >= 3, 60, "three failed attempts")
        assert worker.process.poll() is None, "the worker exited:\n" + worker.log()[-3000:]
        status, body = await _get(port, "/readyz")
        assert status == 503, body
        assert worker.terminate(30) == 0, worker.log()[-3000:]
    finally:
        worker.ensure_stopped()
    log = worker.log()
    assert "CERTIFICATE_VERIFY_FAILED" in log, log[-3000:]
    assert PASSWORD not in log


async def test_unknown_ca_readiness_names_the_certificate(
    secure: SecureBroker, secure_topics: Topics, rules: Rules, tmp_path: Path
) -> None:
    """/readyz's reason says the certificate was not trusted, not just "unreachable"."""
    other_ca = make_ca(tmp_path / "other-ca", name="some other CA")
    env = worker_env(
        secure.secure_bootstrap, secure_topics, unique_name("sec-group"),
        **secure.client_env(USER, PASSWORD, ca_file=other_ca.cert),
        RETRY_BACKOFF_MAX_SECONDS="1",
    )  # fmt: skip
    async with in_process_worker(env, rules) as worker:
        await wait_until(lambda: worker.health.ready()[1] != "starting", 30, "a readiness reason")
        ready, reason = worker.health.ready()
        assert not ready
        assert "certificate" in reason.lower(), reason


# --- authenticated, but not authorised -------------------------------------------------


async def test_authenticated_principal_without_acls_is_refused_with_a_clear_reason(
    secure: SecureBroker, secure_topics: Topics, tmp_path: Path
) -> None:
    """Right password, no ACL: nothing read or committed, the refusal named, exit 3 intended."""
    await produce(secure.bootstrap, secure_topics.raw, [_dsn(i) for i in range(4)])
    group = unique_name("sec-group")
    env = worker_env(
        secure.secure_bootstrap, secure_topics, group,
        **secure.client_env(INTRUDER, INTRUDER_PASSWORD),
        LOG_LEVEL="info", KAFKA_REQUEST_TIMEOUT_MS="5000", RETRY_BACKOFF_MAX_SECONDS="1",
    )  # fmt: skip
    worker = ChildWorker(env, tmp_path / "worker.log")
    try:
        await wait_until(
            lambda: worker.process.poll() is not None or _start_failures(worker.log()) >= 3,
            60,
            "an exit or three failed attempts",
        )
        code = worker.process.poll()
    finally:
        worker.ensure_stopped()
    log = worker.log()
    assert "AuthorizationFailed" in log, log[-3000:]
    assert INTRUDER_PASSWORD not in log
    assert await committed_offsets(secure.bootstrap, group, secure_topics.raw) == {}
    assert code == 3, log[-3000:]


# --- (d) no secret and no address on /metrics or in the log of a working worker ---------


async def test_running_secure_worker_never_shows_the_password_or_addresses(
    secure: SecureBroker, secure_topics: Topics, tmp_path: Path
) -> None:
    """A busy SASL_SSL worker at debug level: no password, no clear address, anywhere."""
    count = 40
    group = unique_name("sec-group")
    await produce(secure.bootstrap, secure_topics.raw, [_dsn(i) for i in range(count)])
    port = free_port()
    env = worker_env(
        secure.secure_bootstrap, secure_topics, group,
        **secure.client_env(USER, PASSWORD),
        LOG_LEVEL="debug", HTTP_PORT=str(port),
    )  # fmt: skip
    worker = ChildWorker(env, tmp_path / "worker.log")
    try:
        await wait_until(
            lambda: fully_committed(secure.bootstrap, group, secure_topics.raw), 60, "committed"
        )
        await wait_until(lambda: _get_ok(port, "/readyz"), 30, "/readyz 200")
        pages = {path: (await _get(port, path))[1] for path in ("/metrics", "/readyz", "/healthz")}
        assert 'mailevents_records_total{outcome="ok"} 40.0' in pages["/metrics"]
        assert worker.terminate(30) == 0, worker.log()[-3000:]
    finally:
        worker.ensure_stopped()
    log = worker.log()
    assert "Authenticated as bounce-worker via SCRAM-SHA-512" in log  # debug really was on
    assert '"KAFKA_SASL_PASSWORD":"***"' in log
    for where, text in {**pages, "log": log}.items():
        assert PASSWORD not in text, f"the SASL password appears in {where}"
        assert f"@{DOMAIN}" not in text, f"an address appears in clear in {where}"


async def _get_ok(port: int, path: str) -> bool:
    return (await _get(port, path))[0] == 200

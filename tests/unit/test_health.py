"""The health port, spoken to over a real socket with a plain asyncio client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry, Counter

from consumer.health import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_READ_TIMEOUT,
    Health,
    HealthGroup,
    serve,
)

HOST = "127.0.0.1"


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


def parse(data: bytes) -> Reply:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("ascii").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(int(status_line.split(" ")[1]), headers, body)


async def read_all(port: int, raw: bytes) -> bytes:
    """Send ``raw``, read until the server closes; b"" if it reset the connection."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    except ConnectionError:
        return b""
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def request(port: int, raw: bytes) -> Reply:
    data = await read_all(port, raw)
    assert data, "server closed without answering"
    return parse(data)


async def get(port: int, path: str, method: str = "GET") -> Reply:
    return await request(port, f"{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())


@pytest.fixture
def clock() -> FakeClock:
    """A clock that only moves when the test says so."""
    return FakeClock()


@pytest.fixture
def health(clock: FakeClock) -> Health:
    """Health state with a 30 s stall limit on the fake clock."""
    return Health(stall_seconds=30.0, clock=clock)


@pytest.fixture
def registry() -> CollectorRegistry:
    """A private registry with one counter, so the test sees exactly what it put in."""
    registry = CollectorRegistry()
    counter = Counter("bounce_test_records", "Records seen by the test.", registry=registry)
    counter.inc(3)
    return registry


async def start(
    health: Health,
    registry: CollectorRegistry,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> asyncio.Server:
    return await serve(
        health, registry, HOST, 0, read_timeout=read_timeout, max_connections=max_connections
    )


def port_of(server: asyncio.Server) -> int:
    port: int = server.sockets[0].getsockname()[1]
    return port


@pytest.fixture
async def port(health: Health, registry: CollectorRegistry) -> AsyncIterator[int]:
    """A real server on a free port of 127.0.0.1, closed after the test."""
    server = await serve(health, registry, HOST, 0)
    try:
        yield port_of(server)
    finally:
        server.close()
        await server.wait_closed()


async def test_metrics_page_lists_counter(port: int) -> None:
    """GET /metrics renders the registry in the Prometheus text format."""
    reply = await get(port, "/metrics")
    assert reply.status == 200
    assert reply.headers["content-type"] == prometheus_client.CONTENT_TYPE_LATEST
    assert reply.headers["connection"] == "close"
    assert int(reply.headers["content-length"]) == len(reply.body)
    assert b"bounce_test_records_total 3.0" in reply.body


async def test_healthz_ok_then_stalled(port: int, health: Health, clock: FakeClock) -> None:
    """Liveness is 200 while the loop ticks and 503 once it has not for over stall_seconds."""
    health.tick()
    clock.now += 29
    reply = await get(port, "/healthz")
    assert (reply.status, reply.body) == (200, b"ok: last poll 29.0s ago\n")
    clock.now += 2
    reply = await get(port, "/healthz")
    assert reply.status == 503
    assert reply.body == b"stalled: last poll 31.0s ago (limit 30s)\n"
    health.tick()
    assert (await get(port, "/healthz")).status == 200


async def test_readyz_follows_set_ready_and_liveness(
    port: int, health: Health, clock: FakeClock
) -> None:
    """Readiness is 503 before set_ready, 200 after, and 503 again when not alive."""
    health.tick()
    assert (await get(port, "/readyz")).status == 503
    health.set_ready(True, "assigned 3 partitions")
    reply = await get(port, "/readyz")
    assert (reply.status, reply.body) == (200, b"ready: assigned 3 partitions\n")
    clock.now += 31
    reply = await get(port, "/readyz")
    assert reply.status == 503
    assert reply.body.startswith(b"not ready: last poll 31.0s ago")
    health.tick()
    health.set_ready(False, "broker unreachable: connection refused")
    reply = await get(port, "/readyz")
    assert (reply.status, reply.body) == (503, b"not ready: broker unreachable: connection refused\n")


def test_alive_counts_from_construction_before_first_tick(
    health: Health, clock: FakeClock
) -> None:
    """A worker that never reaches its first poll becomes stalled too."""
    assert health.alive() == (True, "no poll yet, started 0.0s ago")
    clock.now += 30.5
    assert health.alive() == (False, "no poll yet, started 30.5s ago (limit 30s)")


def test_stall_seconds_must_be_positive() -> None:
    """A zero stall limit would make the worker permanently dead, so it is refused."""
    with pytest.raises(ValueError, match="stall_seconds"):
        Health(stall_seconds=0)


async def test_query_string_is_ignored(port: int, health: Health) -> None:
    """The query string does not change which endpoint answers."""
    health.tick()
    assert (await get(port, "/healthz?verbose=1")).status == 200


class BrokenCollector:
    """A custom collector that fails the way a bug in one would."""

    def collect(self) -> list[object]:
        raise RuntimeError("collector bug")


async def test_failing_collector_gives_500_and_keeps_serving(
    health: Health, registry: CollectorRegistry
) -> None:
    """A collector that raises yields a 500 without its traceback, and probes still answer."""
    registry.register(BrokenCollector())  # type: ignore[arg-type]
    health.tick()
    server = await start(health, registry)
    try:
        reply = await get(port_of(server), "/metrics")
        assert (reply.status, reply.body) == (500, b"internal error\n")
        assert (await get(port_of(server), "/healthz")).status == 200
    finally:
        server.close()
        await server.wait_closed()


async def test_unknown_path_is_404(port: int) -> None:
    """Any path other than the three endpoints is not found."""
    reply = await get(port, "/admin")
    assert reply.status == 404
    assert int(reply.headers["content-length"]) == len(reply.body)


async def test_other_method_is_405(port: int) -> None:
    """Methods other than GET and HEAD are refused with an Allow header."""
    reply = await get(port, "/metrics", method="POST")
    assert reply.status == 405
    assert reply.headers["allow"] == "GET, HEAD"


async def test_answer_survives_unread_request_body(port: int) -> None:
    """A body the server never reads does not turn the close into a reset that eats the answer."""
    body = b"x" * 32768
    head = f"POST /metrics HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(head)
        await writer.drain()
        # The body arrives after the server has answered, as it does over a real network.
        await asyncio.sleep(0.05)
        writer.write(body)
        writer.write_eof()
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    assert parse(data).status == 405


@pytest.mark.parametrize(
    "raw",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
        b"GET /healthz\r\n\r\n",
        b"GET healthz HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/2.0\r\n\r\n",
        b"get /healthz HTTP/1.1\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\n",
    ],
    ids=["binary", "no-version", "no-slash", "http2", "lowercase", "bad-header", "eof"],
)
async def test_malformed_request_is_400(port: int, raw: bytes) -> None:
    """A request head that is not HTTP/1.x gets 400 and the connection is closed."""
    if raw.endswith(b"HTTP/1.1\r\n"):
        # Half a head, then EOF: the server sees the request cut short.
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(raw)
        writer.write_eof()
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await writer.wait_closed()
        reply = parse(data)
    else:
        reply = await request(port, raw)
    assert reply.status == 400
    assert reply.headers["connection"] == "close"


async def test_lenient_request_forms_are_accepted(port: int, health: Health) -> None:
    """HTTP/1.0, bare LF line ends and a leading blank line are all understood."""
    health.tick()
    assert (await request(port, b"GET /healthz HTTP/1.0\r\n\r\n")).status == 200
    assert (await request(port, b"GET /healthz HTTP/1.1\nHost: x\n\n")).status == 200
    assert (await request(port, b"\r\nGET /healthz HTTP/1.1\r\n\r\n")).status == 200


async def test_head_has_headers_but_no_body(port: int) -> None:
    """HEAD announces the same Content-Length as GET and sends no body."""
    full = await get(port, "/metrics")
    head = await get(port, "/metrics", method="HEAD")
    assert head.status == 200
    assert head.body == b""
    assert head.headers["content-length"] == str(len(full.body))


async def test_oversized_request_line_is_refused(port: int, health: Health) -> None:
    """An endless request line is cut off after the size limit instead of being buffered."""
    ceiling = 64 * 1024 * 1024
    chunk = b"a" * 65536
    sent = 0
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(b"GET /")
        with contextlib.suppress(ConnectionError):
            while sent < ceiling:
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), 5)
                sent += len(chunk)
                # Let the server run between chunks, as it would on another host.
                await asyncio.sleep(0)
        try:
            data = await asyncio.wait_for(reader.read(), 5)
        except ConnectionError:
            data = b""  # reset while we were still sending: the 400 may be lost
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    # A server that kept reading would have taken all 64 MiB.
    assert sent < ceiling
    assert data == b"" or parse(data).status == 400
    health.tick()
    assert (await get(port, "/healthz")).status == 200


async def test_too_many_headers_is_400(port: int) -> None:
    """Many short header lines are capped by the total head size, not only by line length."""
    raw = b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: 0123456789\r\n" * 1000 + b"\r\n"
    data = await read_all(port, raw)
    assert data == b"" or parse(data).status == 400


async def test_slow_client_gets_408(health: Health, registry: CollectorRegistry) -> None:
    """A client that does not finish its request head in time is answered and dropped."""
    server = await start(health, registry, read_timeout=0.3)
    try:
        reader, writer = await asyncio.open_connection(HOST, port_of(server))
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nX-Drip: ")
            # Dripping a byte at a time does not extend the deadline: 0.5 s of bytes,
            # 0.05 s apart, still run into the 0.3 s limit on the whole head.
            with contextlib.suppress(ConnectionError):
                for _ in range(10):
                    await asyncio.sleep(0.05)
                    writer.write(b"a")
                    await writer.drain()
            data = await asyncio.wait_for(reader.read(), 5)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
    finally:
        server.close()
        await server.wait_closed()
    assert parse(data).status == 408


async def test_connection_cap_refuses_extra_clients(
    health: Health, registry: CollectorRegistry
) -> None:
    """Past max_connections a new connection is closed at once, and served again later."""
    health.tick()
    server = await start(health, registry, max_connections=1)
    port = port_of(server)
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)  # let the server accept the first connection
            assert await read_all(port, b"GET /healthz HTTP/1.1\r\n\r\n") == b""
            writer.write(b"\r\n")
            assert parse(await asyncio.wait_for(reader.read(), 5)).status == 200
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        for _ in range(50):  # the slot frees once the server has finished closing
            data = await read_all(port, b"GET /healthz HTTP/1.1\r\n\r\n")
            if data:
                break
            await asyncio.sleep(0.02)
        assert parse(data).status == 200
    finally:
        server.close()
        await server.wait_closed()


def test_group_is_ready_and_alive_only_when_every_stage_is() -> None:
    """STAGE=all: one port for two workers; either one failing fails the probe."""
    clock = FakeClock()
    classify, suppression = Health(30, clock), Health(30, clock)
    group = HealthGroup({"classify": classify, "suppression": suppression})
    classify.tick()
    suppression.tick()
    classify.set_ready(True, "assigned 3 partitions")
    suppression.set_ready(False, "restoring state")
    assert group.ready() == (
        False, "classify: assigned 3 partitions; suppression: restoring state"
    )
    suppression.set_ready(True, "assigned 3 partitions")
    assert group.ready()[0] is True
    clock.now += 20
    classify.tick()
    clock.now += 15  # suppression has not polled for 35 s
    alive, reason = group.alive()
    assert alive is False and reason.startswith("classify: last poll 15.0s ago; suppression:")
    assert group.ready()[0] is False

"""The worker's one HTTP port: ``/metrics``, ``/healthz`` and ``/readyz``.

Three fixed GET endpoints do not justify a web framework or a new dependency, and
serving them from the worker's own event loop needs no locks around ``Health``.  If the
loop blocks, the probes go unanswered and time out, which the orchestrator counts as a
failure: the right verdict.  So this is a minimal HTTP/1.1 responder on
``asyncio.start_server``: one request per connection, ``Connection: close``, request
bodies ignored.  Because it shares the loop with the consumer, a slow or hostile client
must not be able to hold memory or time: the request head is size-capped and must arrive
within a deadline, writing and the closing handshake have limits too, and the number of
open connections is capped.

Liveness (``/healthz``) means "the poll loop is still turning": the loop calls
``Health.tick`` on every poll, idle or not, so a stuck loop (a deadlock, a blocking call,
a hung commit) shows as a growing age and the orchestrator restarts the pod.  Readiness
(``/readyz``) additionally needs the worker to have said it is ready (partitions
assigned, broker reachable); a stalled worker is never ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol

import prometheus_client
import structlog

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_HEAD_BYTES",
    "DEFAULT_READ_TIMEOUT",
    "Health",
    "HealthGroup",
    "Probe",
    "serve",
]

#: Request line plus headers.  Probes and Prometheus send a few hundred bytes.
DEFAULT_MAX_HEAD_BYTES = 8 * 1024
#: Deadline for the whole request head, not per read, so dripping bytes does not help.
DEFAULT_READ_TIMEOUT = 5.0
#: Probes and scrapes come one at a time; anything beyond this is a leak or an attack.
DEFAULT_MAX_CONNECTIONS = 32

_WRITE_TIMEOUT = 5.0
# After answering, how long and how much of what the client still sends is read and
# dropped before closing (see _linger).
_LINGER_SECONDS = 1.0
_LINGER_BYTES = 64 * 1024
_TEXT = "text/plain; charset=utf-8"

_log = structlog.get_logger(__name__)


class Health:
    """Liveness and readiness as the worker loop reports them.

    Plain attribute updates, no lock: the loop and the HTTP handlers run on the same
    event loop thread.  The clock is injectable so tests can move time without sleeping.
    """

    def __init__(
        self, stall_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not stall_seconds > 0:
            raise ValueError(f"stall_seconds must be positive, not {stall_seconds!r}")
        self._stall_seconds = stall_seconds
        self._clock = clock
        # Until the first tick, the age counts from construction: a worker that never
        # reaches its first poll is as stuck as one that stopped polling.
        self._last_tick = clock()
        self._ticked = False
        self._ready = False
        self._ready_reason = "starting"

    def tick(self) -> None:
        """Record that the poll loop turned; called on every poll, even an empty one."""
        self._last_tick = self._clock()
        self._ticked = True

    def set_ready(self, ready: bool, reason: str) -> None:
        """Record whether the worker can do useful work, and why, for the probe's body."""
        self._ready = ready
        self._ready_reason = reason

    def alive(self) -> tuple[bool, str]:
        """False once the loop has not polled for more than ``stall_seconds``."""
        age = self._clock() - self._last_tick
        if self._ticked:
            reason = f"last poll {age:.1f}s ago"
        else:
            reason = f"no poll yet, started {age:.1f}s ago"
        if age > self._stall_seconds:
            return False, f"{reason} (limit {self._stall_seconds:g}s)"
        return True, reason

    def ready(self) -> tuple[bool, str]:
        """True only if the last ``set_ready`` said so and the loop is alive."""
        alive, alive_reason = self.alive()
        if not alive:
            return False, alive_reason
        return self._ready, self._ready_reason


class Probe(Protocol):
    """What /healthz and /readyz ask: a ``Health``, or a ``HealthGroup`` of several."""

    def alive(self) -> tuple[bool, str]: ...

    def ready(self) -> tuple[bool, str]: ...


class HealthGroup:
    """Both stages in one process (``STAGE=all``): alive and ready only if each one is.

    One port answers for the pod, so a stage that stalls or loses its partitions must
    fail the probe even while the other works; the reason names each stage.
    """

    def __init__(self, parts: Mapping[str, Health]) -> None:
        self._parts = dict(parts)

    def alive(self) -> tuple[bool, str]:
        return self._combine({name: part.alive() for name, part in self._parts.items()})

    def ready(self) -> tuple[bool, str]:
        return self._combine({name: part.ready() for name, part in self._parts.items()})

    @staticmethod
    def _combine(answers: dict[str, tuple[bool, str]]) -> tuple[bool, str]:
        ok = all(good for good, _ in answers.values())
        return ok, "; ".join(f"{name}: {reason}" for name, (_, reason) in answers.items())


@dataclass(frozen=True, slots=True)
class _Response:
    status: HTTPStatus
    body: bytes
    content_type: str = _TEXT
    headers: tuple[str, ...] = ()

    def encode(self, head_only: bool) -> bytes:
        """The whole response; HEAD gets the same headers (same Content-Length), no body."""
        lines = [
            f"HTTP/1.1 {self.status.value} {self.status.phrase}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Cache-Control: no-store",
            "Connection: close",
            *self.headers,
        ]
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")
        return head if head_only else head + self.body


def _text(status: HTTPStatus, text: str, headers: tuple[str, ...] = ()) -> _Response:
    # Reasons can quote exception messages; never let an odd character turn a probe
    # answer into a 500.
    return _Response(status, (text + "\n").encode("utf-8", "replace"), headers=headers)


class _BadRequestError(Exception):
    """The request head is not HTTP we accept; the message goes into the 400 body."""


async def _read_head(reader: asyncio.StreamReader, max_bytes: int) -> tuple[str, str]:
    """Method and target of the request; the headers are read (and counted) then dropped.

    The reader was created with ``limit=max_bytes``, so one line can never buffer more
    than about that much; the running total caps the number of header lines.
    """
    used = 0
    request_line: bytes | None = None
    while True:
        try:
            line = await reader.readline()
        except ValueError:  # one line longer than the reader's limit
            raise _BadRequestError("request head too large") from None
        used += len(line)
        if used > max_bytes:
            raise _BadRequestError("request head too large")
        if not line.endswith(b"\n"):
            raise _BadRequestError("request head incomplete")
        line = line.rstrip(b"\r\n")
        if request_line is None:
            # RFC 9112 asks servers to skip blank lines before the request line.
            if line:
                request_line = line
            continue
        if not line:
            break
        if b":" not in line:
            raise _BadRequestError("malformed header line")
    parts = request_line.split(b" ")
    if len(parts) != 3:
        raise _BadRequestError("malformed request line")
    method, target, version = parts
    if not (method.isalpha() and method.isupper()):
        raise _BadRequestError("malformed method")
    if version not in (b"HTTP/1.0", b"HTTP/1.1"):
        raise _BadRequestError("unsupported HTTP version")
    if not target.startswith(b"/") or not target.isascii():
        raise _BadRequestError("malformed target")
    return method.decode("ascii"), target.decode("ascii")


def _probe(ok: bool, reason: str, good: str, bad: str) -> _Response:
    if ok:
        return _text(HTTPStatus.OK, f"{good}: {reason}")
    return _text(HTTPStatus.SERVICE_UNAVAILABLE, f"{bad}: {reason}")


def _route(
    method: str, target: str, health: Probe, registry: prometheus_client.CollectorRegistry
) -> _Response:
    if method not in ("GET", "HEAD"):
        return _text(
            HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed", headers=("Allow: GET, HEAD",)
        )
    path = target.partition("?")[0]
    if path == "/metrics":
        # Rendered inline: our registry is small (well under a millisecond to render),
        # and collectors may read state owned by the loop, which a worker thread
        # should not touch.
        return _Response(
            HTTPStatus.OK,
            prometheus_client.generate_latest(registry),
            content_type=prometheus_client.CONTENT_TYPE_LATEST,
        )
    if path == "/healthz":
        return _probe(*health.alive(), good="ok", bad="stalled")
    if path == "/readyz":
        return _probe(*health.ready(), good="ready", bad="not ready")
    return _text(HTTPStatus.NOT_FOUND, "not found")


async def _answer(
    reader: asyncio.StreamReader,
    health: Probe,
    registry: prometheus_client.CollectorRegistry,
    read_timeout: float,
    max_head_bytes: int,
) -> bytes:
    """The bytes to send back for whatever the client sent (or failed to send)."""
    try:
        async with asyncio.timeout(read_timeout):
            method, target = await _read_head(reader, max_head_bytes)
    except TimeoutError:
        return _text(HTTPStatus.REQUEST_TIMEOUT, "request timeout").encode(head_only=False)
    except _BadRequestError as exc:
        return _text(HTTPStatus.BAD_REQUEST, f"bad request: {exc}").encode(head_only=False)
    try:
        response = _route(method, target, health, registry)
    except Exception:
        # A broken collector must not take the probes down with it, nor show its
        # traceback to whoever can reach the port.
        _log.exception("health endpoint failed", target=target)
        response = _text(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")
    return response.encode(head_only=method == "HEAD")


async def _linger(reader: asyncio.StreamReader) -> None:
    """Read and drop what the client still sends, until it closes or a small budget is spent.

    Closing a socket with unread input makes the kernel send a reset, and a reset can
    destroy our answer in the client's buffers before it is read: exactly the 400 or
    408 sent to a client that was still writing, or any answer to a request with a
    body.  So the answer is followed by a FIN (write_eof) and the input is drained for
    a bounded time and size, as HTTP servers do in a "lingering close".
    """
    dropped = 0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_LINGER_SECONDS):
            while dropped < _LINGER_BYTES:
                chunk = await reader.read(_LINGER_BYTES)
                if not chunk:
                    return
                dropped += len(chunk)


async def _handle(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    health: Probe,
    registry: prometheus_client.CollectorRegistry,
    read_timeout: float,
    max_head_bytes: int,
) -> None:
    """Answer one request and close the connection, whatever the client does."""
    try:
        writer.write(await _answer(reader, health, registry, read_timeout, max_head_bytes))
        async with asyncio.timeout(_WRITE_TIMEOUT):
            await writer.drain()
        writer.write_eof()
        await _linger(reader)
    except OSError:
        # The client went away (ConnectionError) or stopped reading (TimeoutError, an
        # OSError too): drop its buffered bytes now rather than let close() wait for a
        # peer that will never take them.
        writer.transport.abort()
    finally:
        writer.close()
        # An error here only repeats how the connection was lost; nothing is left open.
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def serve(
    health: Probe,
    registry: prometheus_client.CollectorRegistry,
    host: str,
    port: int,
    *,
    read_timeout: float = DEFAULT_READ_TIMEOUT,
    max_head_bytes: int = DEFAULT_MAX_HEAD_BYTES,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> asyncio.Server:
    """Start serving and return the server; the caller closes it.

    ``port=0`` binds a free port, read back from ``server.sockets[0].getsockname()[1]``.
    """
    active = 0

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal active
        if active >= max_connections:
            # Refuse at once: no read, no buffer, no task kept alive.
            writer.transport.abort()
            writer.close()
            return
        active += 1
        try:
            await _handle(reader, writer, health, registry, read_timeout, max_head_bytes)
        finally:
            active -= 1

    return await asyncio.start_server(on_connect, host, port, limit=max_head_bytes)

"""Helpers for the local-backend tests: a tiny HTTP server, a keep-alive client, binomial bounds.

The client speaks raw HTTP/1.1 over a few keep-alive connections, each sending its requests one
after another, so the tests can show that the proxy picks a backend per request, not per
connection, and can run thousands of requests in about a second.
"""

from __future__ import annotations

import asyncio
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from pytest_abtraffic._local import LocalBackend

BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'

# Fault scenarios under Locust load (test_chaos_local.py, test_phases_local.py): the recovery phase's
# length, and the post-recovery tolerance. That window is ~4-5 s of load (thousands of requests here,
# but perhaps ~1,500 on a slow CI machine), not a full verification run: at 1,500 requests the 99.9%
# interval of a 50% share is +-4.2 points, so the +-2 point default could not be shown; +-8 points
# still catches a split that did not come back (a variant stuck at 0% or 100%) with a wide margin.
RECOVERY_S = 5.0
POST_RECOVERY_TOLERANCE = 0.08


@pytest.fixture(scope="module", name="backend")
def seeded_backend() -> Iterator[LocalBackend]:
    """One seeded LocalBackend per module (import it into a test module to use it as ``backend``)."""
    b = LocalBackend(seed=11)
    try:
        yield b
    finally:
        b.close()


# ---------------------------------------------------------------------------------------------
# statistics


def _log_pmf(k: int, n: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)


def binomial_bounds(n: int, p: float, alpha: float = 1e-6) -> tuple[int, int]:
    """Smallest lo and largest hi with P(X < lo) <= alpha/2 and P(X > hi) <= alpha/2, X ~ Bin(n, p)."""
    pmf = [math.exp(_log_pmf(k, n, p)) for k in range(n + 1)]
    lo, acc = 0, 0.0
    while lo < n and acc + pmf[lo] <= alpha / 2:
        acc += pmf[lo]
        lo += 1
    hi, acc = n, 0.0
    while hi > 0 and acc + pmf[hi] <= alpha / 2:
        acc += pmf[hi]
        hi -= 1
    return lo, hi


# ---------------------------------------------------------------------------------------------
# a tiny backend


@dataclass
class TinyServer:
    """An HTTP/1.1 server in a background thread answering every request with ``x-model-version``.

    ``status`` may be an int or a callable returning one; ``delay_s`` delays each answer;
    ``chunked`` answers with a chunked body. ``stop()`` closes the listener and every connection,
    like a killed process (new connections are refused).
    """

    name: str
    status: int | Callable[[], int] = 200
    delay_s: float = 0.0
    chunked: bool = False
    port: int = 0
    requests: int = 0
    bodies: list[int] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _server: asyncio.base_events.Server | None = None
    _transports: set[asyncio.Transport] = field(default_factory=set)

    def start(self) -> TinyServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                loop.create_server(lambda: _TinyProto(self), "127.0.0.1", self.port))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name=f"tiny-{self.name}")
        self._thread.start()
        assert ready.wait(5)
        return self

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return
        done = threading.Event()

        def close() -> None:
            if self._server is not None:
                self._server.close()
            for t in list(self._transports):
                t.abort()  # schedules the socket close; stop the loop only after it ran
            loop.call_soon(loop.stop)
            done.set()

        loop.call_soon_threadsafe(close)
        done.wait(5)
        self._thread.join(5)
        self._loop = None


class _TinyProto(asyncio.Protocol):
    def __init__(self, server: TinyServer) -> None:
        self.server = server
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.server._transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            he = self.buf.find(b"\r\n\r\n")
            if he < 0:
                return
            head = self.buf[:he].lower()
            length = 0
            i = head.find(b"content-length:")
            if i >= 0:
                j = head.find(b"\r\n", i)
                length = int(head[i + 15:j if j >= 0 else len(head)].strip())
            if len(self.buf) < he + 4 + length:
                return
            self.buf = self.buf[he + 4 + length:]
            srv = self.server
            srv.requests += 1
            srv.bodies.append(length)
            status = srv.status() if callable(srv.status) else srv.status
            if srv.delay_s:
                loop = asyncio.get_running_loop()
                loop.call_later(srv.delay_s, self._answer, status)
            else:
                self._answer(status)

    def _answer(self, status: int) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        body = b'{"version": "%s"}' % self.server.name.encode()
        version = self.server.name.encode()
        if self.server.chunked:
            half = len(body) // 2
            payload = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half], len(body) - half, body[half:])
            head = b"HTTP/1.1 %d X\r\ntransfer-encoding: chunked\r\nx-model-version: %s\r\n\r\n" % (status, version)
        else:
            payload = body
            head = b"HTTP/1.1 %d X\r\ncontent-length: %d\r\nx-model-version: %s\r\n\r\n" % (status, len(body), version)
        self.transport.write(head + payload)


# ---------------------------------------------------------------------------------------------
# a keep-alive client


@dataclass(frozen=True)
class Result:
    conn: int
    status: int
    headers: dict[str, str]
    elapsed_s: float
    started_s: float

    @property
    def version(self) -> str | None:
        return self.headers.get("x-model-version")


def _request(port: int, body: bytes, path: str) -> bytes:
    return (b"POST %s HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (path.encode(), port, len(body), body))


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").endswith("chunked"):
        chunks = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            data = await reader.readexactly(size + 2)
            if size == 0:
                break
            chunks.append(data[:-2])
        return status, headers, b"".join(chunks)
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def _drive(port: int, n: int, conns: int, body: bytes, path: str, duration_s: float | None,
                 timeout_s: float) -> list[Result]:
    results: list[Result] = []
    remaining = [n]
    t_start = time.perf_counter()
    request = _request(port, body, path)

    async def one(idx: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while remaining[0] > 0:
                now = time.perf_counter()
                if duration_s is not None and now - t_start >= duration_s:
                    return
                remaining[0] -= 1
                writer.write(request)
                status, headers, _ = await _read_response(reader)
                results.append(Result(idx, status, headers, time.perf_counter() - now, now - t_start))
                if headers.get("connection", "").lower() == "close":
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(conns))), timeout_s)
    return results


def send(port: int, n: int, *, conns: int = 8, body: bytes = BODY, path: str = "/predict",
         duration_s: float | None = None, timeout_s: float = 30.0) -> list[Result]:
    """Send up to ``n`` POSTs over ``conns`` keep-alive connections (stop early after ``duration_s``)."""
    return asyncio.run(_drive(port, n, conns, body, path, duration_s, timeout_s))


def seeded_status(rate: float, seed: int, bad: int = 500) -> Callable[[], int]:
    rng = random.Random(seed)
    return lambda: bad if rng.random() < rate else 200


# ---------------------------------------------------------------------------------------------
# leftovers


def marked_processes() -> dict[int, str]:
    """Live processes carrying ``ABTRAFFIC_LOCAL_MARKER``: pid -> marker."""
    from pathlib import Path

    prefix = b"ABTRAFFIC_LOCAL_MARKER="
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state == "Z":
            continue
        for item in environ.split(b"\0"):
            if item.startswith(prefix):
                found[int(entry.name)] = item[len(prefix):].decode(errors="replace")
    return found


def processes_with_marker(marker: str) -> list[int]:
    """Pids of live processes whose environment carries ``ABTRAFFIC_LOCAL_MARKER=<marker>``."""
    return sorted(pid for pid, m in marked_processes().items() if m == marker)

"""The local outbound proxy: what a meshed client's Linkerd proxy does to an A/B split.

Run as its own process: ``python -m pytest_abtraffic._local._proxy --config CONFIG.json
--port-file PORTS.json [--parent-pid PID]``. It binds two loopback ports, a data port (send the
load here) and a control port (a small JSON API), and writes them to the port file.

Behaviour, each taken from linkerd-facts.md and cited in docs/local-backend.md:

* the distributor picks a backend per request, weighted random, among backends that are ready
  (gate open); re-picking for every retry;
* each backend balances over its ready endpoints (P2C on in-flight requests), dropping endpoints
  that are not ready (discovery) or that refuse connections (reconnect backoff);
* a backend with no usable endpoint queues requests; after the fail-fast timeout queued requests
  fail with 504 and the backend's gate shuts, so the distributor skips it until an endpoint is
  usable again; no ready backend at all answers 503 (load shed); a backend naming no Service
  answers 500;
* consecutive-failures accrual per endpoint (eject, backoff, single-request probation);
* retries on status conditions, request timeouts, per-backend counters;
* every proxy-made response carries ``l5d-proxy-error``.

The data path is plain ``asyncio.Protocol`` callbacks (no task per request) and forwards
messages byte for byte over pooled keep-alive connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import re
import signal
import sys
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

from ._http import (
    HEAD_END,
    MAX_HEAD_BYTES,
    ParseError,
    RequestHead,
    ResponseHead,
    chunked_end,
    parse_request_head,
    parse_response_head,
    simple_response,
    without_connection_header,
)

# linkerd policy-controller queue defaults (linkerd-facts.md: capacity 100, fail-fast 3 s).
DEFAULT_FAIL_FAST_TIMEOUT_S = 3.0
DEFAULT_QUEUE_CAPACITY = 100
# Linkerd does not retry requests whose body is over 64 KiB (linkerd-facts.md, retries).
MAX_RETRYABLE_BODY = 64 * 1024
MAX_REQUEST_BYTES = 16 * 1024 * 1024
# Endpoints that refuse connections sit out this exponential backoff (ours; Linkerd reconnects
# with a backoff too, but the numbers are not part of the facts).
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 2.0
MAX_PIPELINED = 64
PARENT_CHECK_S = 0.5

# One receive buffer for every connection: asyncio calls get_buffer, recv_into and buffer_updated
# back to back on the loop thread, and buffer_updated copies the bytes out at once. This avoids
# the 256 KiB allocation a plain Protocol's recv() makes per read (~10 us, twice per request).
_RECV_BUFFER = memoryview(bytearray(256 * 1024))

# Endpoint breaker states (linkerd2-proxy consecutive_failures.rs: open / shut / probation).
OPEN, SHUT, PROBATION = 0, 1, 2
_STATE_NAMES = {OPEN: "open", SHUT: "ejected", PROBATION: "probation"}

# Error kinds (keys of BackendCounters.proxy_errors) and the l5d-proxy-error texts.
FAIL_FAST = "fail_fast"
LOAD_SHED = "load_shed"
SERVICE_NOT_FOUND = "service_not_found"
REQUEST_TIMEOUT = "request_timeout"
RESPONSE_TIMEOUT = "response_timeout"
CONNECTION_ERROR = "connection_error"
BAD_REQUEST = "bad_request"

_RETRY_TOKEN = re.compile(r"^(5xx|gateway-error|[1-5]\d\d(-[1-5]\d\d)?)$")


def parse_retry_conditions(text: str) -> frozenset[int]:
    """Statuses named by ``retry.linkerd.io/http`` (``5xx``, ``gateway-error``, ``500-504``, ``503``)."""
    out: set[int] = set()
    for raw in text.split(","):
        cond = raw.strip()
        if not _RETRY_TOKEN.match(cond):
            raise ValueError(f"invalid retry condition {cond!r}")
        if cond == "5xx":
            out.update(range(500, 600))
        elif cond == "gateway-error":
            out.update((502, 503, 504))
        elif "-" in cond:
            low, high = (int(p) for p in cond.split("-"))
            if low > high:
                raise ValueError(f"invalid retry range {cond!r}")
            out.update(range(low, high + 1))
        else:
            out.add(int(cond))
    return frozenset(out)


@dataclass(frozen=True)
class AccrualConfig:
    max_failures: int = 7
    min_penalty_s: float = 1.0
    max_penalty_s: float = 60.0
    jitter_ratio: float = 0.5

    def penalty(self, iteration: int, rng: random.Random) -> float:
        """linkerd exp-backoff: base = min * 2^i capped at max, plus up to base * jitter (capped at max)."""
        base = min(self.min_penalty_s * float(2 ** min(iteration, 62)), self.max_penalty_s)
        jitter = 0.0 if self.jitter_ratio == 0 else min(base * self.jitter_ratio * rng.random(),
                                                       self.max_penalty_s - base)
        return base + jitter


@dataclass(frozen=True)
class RetryConfig:
    conditions: str = "5xx"
    limit: int = 1
    timeout_s: float | None = None
    statuses: frozenset[int] = field(default=frozenset(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "statuses", parse_retry_conditions(self.conditions))


@dataclass(frozen=True)
class ProxyConfig:
    """Everything the proxy needs; JSON-serialisable so the parent can pass it in a file."""

    weights: Mapping[str, float]
    services: tuple[str, ...]
    endpoints: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    fail_fast_timeout_s: float = DEFAULT_FAIL_FAST_TIMEOUT_S
    queue_capacity: int = DEFAULT_QUEUE_CAPACITY
    request_timeout_s: float | None = None
    retry: RetryConfig | None = None
    accrual: AccrualConfig | None = None
    seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "weights": dict(self.weights),
            "services": list(self.services),
            "endpoints": {k: list(v) for k, v in self.endpoints.items()},
            "fail_fast_timeout_s": self.fail_fast_timeout_s,
            "queue_capacity": self.queue_capacity,
            "request_timeout_s": self.request_timeout_s,
            "retry": None if self.retry is None else {
                "conditions": self.retry.conditions, "limit": self.retry.limit, "timeout_s": self.retry.timeout_s},
            "accrual": None if self.accrual is None else {
                "max_failures": self.accrual.max_failures, "min_penalty_s": self.accrual.min_penalty_s,
                "max_penalty_s": self.accrual.max_penalty_s, "jitter_ratio": self.accrual.jitter_ratio},
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ProxyConfig:
        retry = doc.get("retry")
        accrual = doc.get("accrual")
        return cls(
            weights=parse_weights(doc.get("weights", {})),
            services=tuple(str(s) for s in doc.get("services", ())),
            endpoints={str(k): tuple(str(a) for a in v) for k, v in dict(doc.get("endpoints") or {}).items()},
            fail_fast_timeout_s=float(doc.get("fail_fast_timeout_s", DEFAULT_FAIL_FAST_TIMEOUT_S)),
            queue_capacity=int(doc.get("queue_capacity", DEFAULT_QUEUE_CAPACITY)),
            request_timeout_s=None if doc.get("request_timeout_s") is None else float(doc["request_timeout_s"]),
            retry=None if not retry else RetryConfig(
                conditions=str(retry.get("conditions", "5xx")), limit=int(retry.get("limit", 1)),
                timeout_s=None if retry.get("timeout_s") is None else float(retry["timeout_s"])),
            accrual=None if not accrual else AccrualConfig(
                max_failures=int(accrual.get("max_failures", 7)),
                min_penalty_s=float(accrual.get("min_penalty_s", 1.0)),
                max_penalty_s=float(accrual.get("max_penalty_s", 60.0)),
                jitter_ratio=float(accrual.get("jitter_ratio", 0.5))),
            seed=None if doc.get("seed") is None else int(doc["seed"]),
        )


def parse_weights(raw: object) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        raise ValueError("weights must be a mapping of backend name to number")
    out: dict[str, float] = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or value != value:
            raise ValueError(f"weight of {name!r} must be a non-negative number, got {value!r}")
        out[str(name)] = float(value)
    return out


def parse_addr(addr: str) -> tuple[str, int]:
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"endpoint address must be HOST:PORT, got {addr!r}")
    return host.strip("[]"), int(port)


# ---------------------------------------------------------------------------------------------
# counters


class Counters:
    """``outbound_http_route_backend_requests_total`` / ``..._response_statuses_total`` for one backend."""

    __slots__ = ("errors", "requests", "statuses")

    def __init__(self) -> None:
        self.requests = 0
        self.statuses: dict[int, int] = {}
        self.errors: dict[str, int] = {}

    def status(self, code: int) -> None:
        self.statuses[code] = self.statuses.get(code, 0) + 1

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "responses_by_status": {str(k): v for k, v in sorted(self.statuses.items())},
            "proxy_errors": dict(sorted(self.errors.items())),
        }


# ---------------------------------------------------------------------------------------------
# the request being proxied


class Exchange:
    """One client request, across its attempts (retries) until one response goes back."""

    __slots__ = ("attempt", "attempt_timer", "backend", "client", "deadline", "done", "endpoint", "head",
                 "queued", "raw", "retries_left", "retryable", "transparent_retry", "upstream")

    def __init__(self, client: ClientConn, raw: bytes, head: RequestHead, body_len: int, retries: int) -> None:
        self.client = client
        self.raw = raw
        self.head = head
        self.retries_left = retries
        self.retryable = body_len <= MAX_RETRYABLE_BODY
        self.attempt = 0
        self.done = False
        self.backend: Backend | None = None
        self.endpoint: Endpoint | None = None
        self.upstream: UpstreamConn | None = None
        self.queued: Backend | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.attempt_timer: asyncio.TimerHandle | None = None
        self.transparent_retry = False


# ---------------------------------------------------------------------------------------------
# upstream side: endpoints and their pooled connections


class UpstreamConn(asyncio.BufferedProtocol):
    """A keep-alive connection to one endpoint, carrying one request at a time."""

    __slots__ = ("body_start", "buf", "chunk_pos", "closed", "endpoint", "ex", "got_bytes", "head", "need",
                 "reused", "transport")

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.ex: Exchange | None = None
        self.buf = b""
        self.head: ResponseHead | None = None
        self.body_start = 0
        self.chunk_pos = 0
        self.need = 0
        self.closed = False
        self.got_bytes = False
        self.reused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same interface.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, ex: Exchange) -> None:
        self.ex = ex
        ex.upstream = self
        self.got_bytes = False
        assert self.transport is not None
        self.transport.write(ex.raw)

    def abort(self) -> None:
        """Drop the request in flight (timeout, client gone): the connection cannot be reused."""
        self.ex = None
        self.closed = True
        self.endpoint.forget(self)
        if self.transport is not None:
            self.transport.abort()

    def get_buffer(self, sizehint: int) -> memoryview:
        return _RECV_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(_RECV_BUFFER[:nbytes]))

    def data_received(self, data: bytes) -> None:
        ex = self.ex
        if ex is None:  # bytes nobody asked for: the connection is out of sync
            self.closed = True
            self.endpoint.forget(self)
            if self.transport is not None:
                self.transport.close()
            return
        self.got_bytes = True
        buf = self.buf + data if self.buf else data
        try:
            while True:
                head = self.head
                if head is None:
                    he = buf.find(HEAD_END)
                    if he < 0:
                        if len(buf) > MAX_HEAD_BYTES:
                            raise ParseError(502, "response head from the backend is too large")
                        self.buf = buf
                        return
                    head = parse_response_head(buf[:he], ex.head.is_head)
                    if head.status < 200:
                        if head.status == 101:
                            raise ParseError(502, "backend switched protocols, which the local proxy does not do")
                        buf = buf[he + 4:]  # 100 Continue and other interim answers: not forwarded
                        continue
                    self.head = head
                    self.body_start = he + 4
                    self.chunk_pos = he + 4
                    self.need = he + 4 + head.content_length
                if head.until_close:
                    self.buf = buf
                    return
                if head.chunked:
                    end, self.chunk_pos = chunked_end(buf, self.chunk_pos)
                    if end < 0:
                        self.buf = buf
                        return
                else:
                    end = self.need
                    if len(buf) < end:
                        self.buf = buf
                        return
                break
        except ParseError as exc:
            self.buf = b""
            self.head = None
            self._failed(exc.message)
            return
        extra = len(buf) > end
        raw = buf[:end] if extra else buf
        self.buf = b""
        self.head = None
        self._complete(head, raw, self.body_start - 4, reusable=head.keep_alive and not extra)

    def _complete(self, head: ResponseHead, raw: bytes, head_end: int, reusable: bool) -> None:
        ex = self.ex
        assert ex is not None
        self.ex = None
        ex.upstream = None
        ep = self.endpoint
        ep.inflight -= 1
        close_client = not raw.startswith(b"HTTP/1.1")
        if not head.keep_alive and not close_client and not head.until_close:
            # "connection: close" is hop-by-hop: the backend closes this connection, not the client's.
            raw = without_connection_header(raw, head_end)
        if head.until_close:
            close_client = True
        if reusable and not ep.removed and not self.closed:
            self.reused = True
            ep.idle.append(self)
        else:
            self.closed = True
            ep.forget(self)
            if self.transport is not None:
                self.transport.close()
        ep.backend.router.on_response(ex, ep, head.status, raw, close_client)

    def _failed(self, reason: str) -> None:
        ex = self.ex
        self.ex = None
        self.closed = True
        self.endpoint.forget(self)
        if self.transport is not None:
            self.transport.abort()
        if ex is not None:
            ex.upstream = None
            self.endpoint.inflight -= 1
            self.endpoint.backend.router.on_upstream_error(ex, self.endpoint, reason)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ep = self.endpoint
        ep.forget(self)
        ex = self.ex
        if ex is None:
            return
        self.ex = None
        ex.upstream = None
        head = self.head
        if head is not None and head.until_close:
            # A body delimited by the close: the response is complete now.
            self.head = None
            raw, self.buf = self.buf, b""
            self.ex = ex
            self._complete(head, raw, self.body_start - 4, reusable=False)
            return
        ep.inflight -= 1
        if self.reused and not self.got_bytes and not ex.transparent_retry:
            # The backend closed an idle pooled connection just as it was reused: nothing was
            # processed, so send the request again on a fresh connection (not a retry). Its
            # other idle connections are most likely closed too (restart, kill): drop them.
            ex.transparent_retry = True
            ex.endpoint = None
            ep.drop_idle()
            ep.backend.dispatch(ex)
            return
        ep.backend.router.on_upstream_error(ex, ep, "connection closed by the backend before the response completed")


class Endpoint:
    """One ready address of a backend, with its connection pool and breaker state."""

    __slots__ = ("addr", "backend", "connect_failures", "down", "ejections", "failures", "host", "idle",
                 "inflight", "port", "probe_inflight", "removed", "state", "timer")

    def __init__(self, backend: Backend, addr: str) -> None:
        self.backend = backend
        self.addr = addr
        self.host, self.port = parse_addr(addr)
        self.idle: list[UpstreamConn] = []
        self.inflight = 0
        self.state = OPEN
        self.failures = 0
        self.ejections = 0
        self.probe_inflight = False
        self.down = False
        self.connect_failures = 0
        self.removed = False
        self.timer: asyncio.TimerHandle | None = None

    @property
    def available(self) -> bool:
        if self.removed or self.down:
            return False
        if self.state == OPEN:
            return True
        return self.state == PROBATION and not self.probe_inflight

    def dispatch(self, ex: Exchange) -> None:
        if self.state == PROBATION:
            # Probation admits a single request (consecutive_failures.rs).
            self.probe_inflight = True
            self.backend.dirty = True
        self.inflight += 1
        ex.endpoint = self
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.send(ex)
                return
        self._connect(ex, ex.attempt)

    def _connect(self, ex: Exchange, attempt: int) -> None:
        router = self.backend.router
        task = router.loop.create_task(
            router.loop.create_connection(partial(UpstreamConn, self), self.host, self.port))
        router.tasks.add(task)
        task.add_done_callback(partial(self._connected, ex, attempt))

    def _connected(self, ex: Exchange, attempt: int, task: asyncio.Task[tuple[asyncio.BaseTransport, Any]]) -> None:
        router = self.backend.router
        router.tasks.discard(task)
        if task.cancelled():
            self.inflight -= 1
            return
        exc = task.exception()
        stale = ex.done or ex.attempt != attempt or ex.endpoint is not self
        if exc is not None:
            self.inflight -= 1
            self.release_probe()
            self.connect_failed()
            if not stale:
                ex.endpoint = None
                self.backend.dispatch(ex)  # the request never left: try another endpoint or queue
            return
        self.connect_failures = 0
        _, conn = task.result()
        assert isinstance(conn, UpstreamConn)
        if stale:
            self.inflight -= 1
            if conn.closed or self.removed:
                if conn.transport is not None:
                    conn.transport.close()
            else:
                self.idle.append(conn)
            return
        conn.send(ex)

    def release_probe(self) -> None:
        """A probation request ended without a response: let another one probe."""
        if self.state == PROBATION and self.probe_inflight:
            self.probe_inflight = False
            self.backend.dirty = True

    def drop_idle(self) -> None:
        for conn in self.idle:
            conn.closed = True
            if conn.transport is not None:
                conn.transport.close()
        self.idle.clear()

    def forget(self, conn: UpstreamConn) -> None:
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)

    def connect_failed(self) -> None:
        """A refused connection takes the endpoint out of balancing for a growing backoff."""
        if self.removed or self.down:
            return
        self.down = True
        self.connect_failures += 1
        delay = min(RECONNECT_MIN_S * 2 ** min(self.connect_failures - 1, 10), RECONNECT_MAX_S)
        self.backend.dirty = True
        self.backend.router.loop.call_later(delay, self._reconnect_ready)

    def _reconnect_ready(self) -> None:
        if self.removed:
            return
        self.down = False
        self.backend.dirty = True
        self.backend.endpoint_available()

    # -- failure accrual (linkerd2-proxy consecutive_failures.rs) ------------------------------
    def observe(self, success: bool) -> None:
        accrual = self.backend.router.config.accrual
        if accrual is None:
            return
        if self.state == OPEN:
            if success:
                self.failures = 0
            else:
                self.failures += 1
                if self.failures >= accrual.max_failures:
                    self._shut(accrual, 0)
        elif self.state == PROBATION:
            self.probe_inflight = False
            if success:
                self.state = OPEN
                self.failures = 0
                self.backend.dirty = True
            else:
                self._shut(accrual, self.ejections + 1)
        # SHUT: responses are ignored while ejected.

    def _shut(self, accrual: AccrualConfig, iteration: int) -> None:
        self.state = SHUT
        self.ejections = iteration
        self.probe_inflight = False
        self.backend.dirty = True
        router = self.backend.router
        router.ejections += 1
        penalty = accrual.penalty(iteration, router.rng)
        self.timer = router.loop.call_later(penalty, self._probation)

    def _probation(self) -> None:
        self.timer = None
        if self.removed:
            return
        self.state = PROBATION
        self.probe_inflight = False
        self.backend.dirty = True
        self.backend.endpoint_available()

    def remove(self) -> None:
        """Gone from discovery: no new requests; in-flight ones finish on their connections."""
        self.removed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.drop_idle()

    def to_json(self) -> dict[str, Any]:
        return {"addr": self.addr, "state": _STATE_NAMES[self.state], "consecutive_failures": self.failures,
                "inflight": self.inflight, "idle_connections": len(self.idle), "refusing": self.down,
                "available": self.available}


class Backend:
    """One backendRef: a Service's endpoints behind a queue with a fail-fast gate."""

    __slots__ = ("_ready", "counters", "dirty", "endpoints", "exists", "failfast", "ff_timer", "name", "queue",
                 "router")

    def __init__(self, router: Router, name: str, exists: bool) -> None:
        self.router = router
        self.name = name
        self.exists = exists
        self.endpoints: dict[str, Endpoint] = {}
        self.queue: deque[Exchange] = deque()
        self.failfast = False
        self.ff_timer: asyncio.TimerHandle | None = None
        self.counters = Counters()
        self.dirty = True
        self._ready: list[Endpoint] = []

    @property
    def gate_open(self) -> bool:
        """Whether the distributor may pick this backend (its queue's readiness)."""
        if not self.exists:
            return True  # a missing Service keeps its weight and answers 500 (no failover)
        return not self.failfast and len(self.queue) < self.router.config.queue_capacity

    def pick_endpoint(self) -> Endpoint | None:
        if self.dirty:
            self._ready = [e for e in self.endpoints.values() if e.available]
            self.dirty = False
        ready = self._ready
        n = len(ready)
        if n == 0:
            return None
        if n == 1:
            return ready[0]
        # Power of two choices on in-flight requests (Linkerd uses P2C over PeakEWMA latency).
        rnd = self.router.rng.random
        i = int(rnd() * n)
        j = int(rnd() * (n - 1))
        if j >= i:
            j += 1
        a, b = ready[i], ready[j]
        return a if a.inflight <= b.inflight else b

    def dispatch(self, ex: Exchange) -> None:
        ep = self.pick_endpoint()
        if ep is not None:
            ep.dispatch(ex)
            return
        if self.failfast:
            self.router.on_fail_fast(ex, self)
            return
        ex.queued = self
        self.queue.append(ex)
        self.router.dirty = True
        if self.ff_timer is None:
            self.ff_timer = self.router.loop.call_later(self.router.config.fail_fast_timeout_s, self._enter_failfast)

    def unqueue(self, ex: Exchange) -> None:
        with contextlib.suppress(ValueError):
            self.queue.remove(ex)
        ex.queued = None
        self.router.dirty = True

    def _enter_failfast(self) -> None:
        """The queue waited fail_fast_timeout for a usable endpoint: fail everything and shut the gate."""
        self.ff_timer = None
        if self.pick_endpoint() is not None:
            self.endpoint_available()
            return
        self.failfast = True
        self.router.failfast_entered += 1
        self.router.dirty = True
        queued, self.queue = self.queue, deque()
        for ex in queued:
            ex.queued = None
            self.router.on_fail_fast(ex, self)

    def endpoint_available(self) -> None:
        """An endpoint became usable: leave fail-fast, open the gate and drain the queue."""
        if self.pick_endpoint() is None:
            return
        if self.ff_timer is not None:
            self.ff_timer.cancel()
            self.ff_timer = None
        if self.failfast:
            self.failfast = False
            self.router.dirty = True
        queue = self.queue
        while queue:
            ep = self.pick_endpoint()
            if ep is None:
                break
            ex = queue.popleft()
            ex.queued = None
            ep.dispatch(ex)
        self.router.dirty = True
        if queue and self.ff_timer is None:
            self.ff_timer = self.router.loop.call_later(self.router.config.fail_fast_timeout_s, self._enter_failfast)

    def set_endpoints(self, addrs: Iterable[str]) -> None:
        wanted = list(dict.fromkeys(addrs))
        for addr in wanted:
            parse_addr(addr)
        keep = set(wanted)
        for addr in list(self.endpoints):
            if addr not in keep:
                self.endpoints.pop(addr).remove()
        for addr in wanted:
            if addr not in self.endpoints:
                self.endpoints[addr] = Endpoint(self, addr)
        self.dirty = True
        self.endpoint_available()

    def close(self) -> None:
        if self.ff_timer is not None:
            self.ff_timer.cancel()
            self.ff_timer = None
        for ep in self.endpoints.values():
            ep.remove()

    def to_json(self) -> dict[str, Any]:
        return {"service_exists": self.exists, "weight": self.router.weights.get(self.name, 0.0),
                "failfast": self.failfast, "gate_open": self.gate_open, "queued": len(self.queue),
                "endpoints": [e.to_json() for e in self.endpoints.values()]}


# ---------------------------------------------------------------------------------------------
# the route: distributor, retries, timeouts


class Router:
    def __init__(self, loop: asyncio.AbstractEventLoop, config: ProxyConfig) -> None:
        self.loop = loop
        self.config = config
        self.rng = random.Random(config.seed)
        self.backends: dict[str, Backend] = {}
        self.weights: dict[str, float] = {}
        self.services = set(config.services)
        self.route = Counters()
        self.retries = 0
        self.ejections = 0
        self.failfast_entered = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        self.clients: set[ClientConn] = set()
        self.dirty = True
        self._choices: list[Backend] = []
        self._cum: list[float] = []
        self._total = 0.0
        for name in config.services:
            self._backend(name)
        self.set_weights(config.weights)
        for name, addrs in config.endpoints.items():
            self.set_endpoints(name, addrs)

    # -- configuration -------------------------------------------------------------------------
    def _backend(self, name: str) -> Backend:
        b = self.backends.get(name)
        if b is None:
            b = self.backends[name] = Backend(self, name, name in self.services)
        return b

    def set_weights(self, weights: Mapping[str, float]) -> None:
        if not any(w > 0 for w in weights.values()):
            raise ValueError("at least one weight must be positive")
        self.weights = dict(weights)
        for name in self.weights:
            self._backend(name)
        self.dirty = True

    def set_endpoints(self, name: str, addrs: Iterable[str]) -> None:
        if name not in self.services:
            raise ValueError(f"no Service {name!r}: endpoints can only be set for {sorted(self.services)}")
        self._backend(name).set_endpoints(addrs)

    # -- distributor (linkerd2-proxy distribute/src/service/random.rs) -------------------------
    def _rebuild(self) -> None:
        choices: list[Backend] = []
        cum: list[float] = []
        total = 0.0
        for name, weight in self.weights.items():
            if weight <= 0:
                continue
            b = self.backends[name]
            if b.gate_open:
                total += weight
                choices.append(b)
                cum.append(total)
        self._choices, self._cum, self._total = choices, cum, total
        self.dirty = False

    def pick(self) -> Backend | None:
        """Weighted random among backends whose gate is open; None: none is (load shed)."""
        if self.dirty:
            self._rebuild()
        choices = self._choices
        if not choices:
            return None
        if len(choices) == 1:
            return choices[0]
        i = bisect_right(self._cum, self.rng.random() * self._total)
        return choices[i if i < len(choices) else -1]

    # -- request lifecycle ---------------------------------------------------------------------
    def start(self, ex: Exchange) -> None:
        self.route.requests += 1
        timeout = self.config.request_timeout_s
        if timeout is not None:
            ex.deadline = self.loop.call_later(timeout, self._on_request_timeout, ex)
        self._attempt(ex)

    def _attempt(self, ex: Exchange) -> None:
        ex.attempt += 1
        ex.endpoint = None
        ex.transparent_retry = False
        b = self.pick()
        if b is None:
            # LoadShed: not retryable.
            self._fail(ex, 503, "no backend available: every backend is in fail-fast (load shed)", LOAD_SHED)
            return
        ex.backend = b
        b.counters.requests += 1
        if not b.exists:
            b.counters.error(SERVICE_NOT_FOUND)
            self._attempt_failed(ex, 500, f"Service not found: {b.name}", SERVICE_NOT_FOUND)
            return
        retry = self.config.retry
        if retry is not None and retry.timeout_s is not None:
            ex.attempt_timer = self.loop.call_later(retry.timeout_s, self._on_attempt_timeout, ex, ex.attempt)
        b.dispatch(ex)

    def _can_retry(self, ex: Exchange, status: int) -> bool:
        retry = self.config.retry
        return (retry is not None and ex.retries_left > 0 and ex.retryable and not ex.done
                and status in retry.statuses)

    def _retry(self, ex: Exchange) -> None:
        ex.retries_left -= 1
        self.retries += 1
        self._attempt(ex)  # a retry goes through the distributor again: it may pick another backend

    def _end_attempt(self, ex: Exchange) -> None:
        if ex.attempt_timer is not None:
            ex.attempt_timer.cancel()
            ex.attempt_timer = None

    def on_response(self, ex: Exchange, ep: Endpoint, status: int, raw: bytes, close_client: bool) -> None:
        ep.backend.counters.status(status)
        ep.observe(status < 500)
        if ex.done:
            return
        self._end_attempt(ex)
        ex.endpoint = None
        if status >= 500 and self._can_retry(ex, status):
            self._retry(ex)
            return
        self._finish(ex, raw, status, close_client)

    def on_upstream_error(self, ex: Exchange, ep: Endpoint, reason: str) -> None:
        ep.backend.counters.error(CONNECTION_ERROR)
        ep.observe(False)
        if ex.done:
            return
        self._end_attempt(ex)
        ex.endpoint = None
        self._attempt_failed(ex, 502, reason, CONNECTION_ERROR)

    def on_fail_fast(self, ex: Exchange, b: Backend) -> None:
        b.counters.error(FAIL_FAST)
        if ex.done:
            return
        self._end_attempt(ex)
        # FailFast errors are retryable (linkerd-facts.md, retries).
        self._attempt_failed(ex, 504, f"logical service {b.name} in fail-fast: no ready endpoints", FAIL_FAST)

    def _attempt_failed(self, ex: Exchange, status: int, reason: str, kind: str) -> None:
        if self._can_retry(ex, status):
            self._retry(ex)
            return
        self._fail(ex, status, reason, kind)

    def _abort_attempt(self, ex: Exchange) -> Endpoint | None:
        if ex.queued is not None:
            ex.queued.unqueue(ex)
        ep = ex.endpoint
        up = ex.upstream
        if up is not None:
            ex.upstream = None
            if up.endpoint is not None:
                up.endpoint.inflight -= 1
            up.abort()
        ex.endpoint = None
        return ep

    def _on_attempt_timeout(self, ex: Exchange, attempt: int) -> None:
        ex.attempt_timer = None
        if ex.done or ex.attempt != attempt:
            return
        ep = self._abort_attempt(ex)
        if ex.backend is not None:
            ex.backend.counters.error(RESPONSE_TIMEOUT)
        if ep is not None:
            ep.observe(False)
        self._attempt_failed(ex, 504, "response timed out (retry.linkerd.io/timeout)", RESPONSE_TIMEOUT)

    def _on_request_timeout(self, ex: Exchange) -> None:
        ex.deadline = None
        if ex.done:
            return
        ep = self._abort_attempt(ex)
        if ep is not None:
            ep.observe(False)  # no answer in time counts against the endpoint
        if ex.backend is not None:
            ex.backend.counters.error(REQUEST_TIMEOUT)
        self._fail(ex, 504, "request timed out (timeout.linkerd.io/request)", REQUEST_TIMEOUT)

    def cancel(self, ex: Exchange) -> None:
        """The client went away: drop the request wherever it is."""
        if not self._close(ex):
            return
        ep = self._abort_attempt(ex)
        if ep is not None:
            ep.release_probe()
            ep.backend.endpoint_available()

    def _fail(self, ex: Exchange, status: int, reason: str, kind: str) -> None:
        if kind in (LOAD_SHED, REQUEST_TIMEOUT, BAD_REQUEST):
            self.route.error(kind)
        body = f"{reason}\n".encode()
        raw = simple_response(status, body, [("l5d-proxy-error", reason)])
        self._finish(ex, raw, status, False)

    def _close(self, ex: Exchange) -> bool:
        """Mark the exchange done (once): end its attempt and drop its deadline. False if it already was."""
        if ex.done:
            return False
        ex.done = True
        self._end_attempt(ex)
        if ex.deadline is not None:
            ex.deadline.cancel()
            ex.deadline = None
        return True

    def _finish(self, ex: Exchange, raw: bytes, status: int, close_client: bool) -> None:
        if not self._close(ex):
            return
        self.route.status(status)
        ex.client.respond(ex, raw, close_client)

    # -- reporting -----------------------------------------------------------------------------
    def counters_json(self) -> dict[str, Any]:
        route = self.route.to_json()
        route["errors"] = route.pop("proxy_errors")
        route["retries"] = self.retries
        route["failure_accrual_ejections"] = self.ejections
        route["failfast_entered"] = self.failfast_entered
        return {"backends": {name: b.counters.to_json() for name, b in self.backends.items()}, "route": route}

    def reset_counters(self) -> None:
        self.route = Counters()
        self.retries = self.ejections = self.failfast_entered = 0
        for b in self.backends.values():
            b.counters = Counters()

    def state_json(self) -> dict[str, Any]:
        return {"config": self.config.to_json(), "weights": self.weights, "services": sorted(self.services),
                "backends": {name: b.to_json() for name, b in self.backends.items()},
                "clients": len(self.clients)}

    def metrics_text(self) -> str:
        """Prometheus text in the spirit of the proxy's outbound route-backend metrics."""
        lines = ["# TYPE outbound_http_route_backend_requests_total counter"]
        for name, b in sorted(self.backends.items()):
            lines.append(f'outbound_http_route_backend_requests_total{{backend_name="{name}"}} {b.counters.requests}')
        lines.append("# TYPE outbound_http_route_backend_response_statuses_total counter")
        for name, b in sorted(self.backends.items()):
            for code, n in sorted(b.counters.statuses.items()):
                lines.append("outbound_http_route_backend_response_statuses_total"
                             f'{{backend_name="{name}",http_status="{code}",error=""}} {n}')
            for kind, n in sorted(b.counters.errors.items()):
                lines.append("outbound_http_route_backend_response_statuses_total"
                             f'{{backend_name="{name}",http_status="",error="{kind.upper()}"}} {n}')
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        for b in self.backends.values():
            b.close()
        for task in list(self.tasks):
            task.cancel()
        for client in list(self.clients):
            client.close()


# ---------------------------------------------------------------------------------------------
# client side


class ClientConn(asyncio.BufferedProtocol):
    """A client connection to the data port: requests in order, one in flight at a time."""

    __slots__ = ("body_start", "buf", "chunk_pos", "closed", "continue_sent", "current", "eof", "head", "need",
                 "paused", "pending", "router", "transport")

    def __init__(self, router: Router) -> None:
        self.router = router
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.head: RequestHead | None = None
        self.body_start = 0
        self.chunk_pos = 0
        self.need = 0
        self.continue_sent = False
        self.current: Exchange | None = None
        self.pending: deque[Exchange] = deque()
        self.closed = False
        self.paused = False
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same interface.
        self.transport = cast(asyncio.Transport, transport)
        self.router.clients.add(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _RECV_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(_RECV_BUFFER[:nbytes]))

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        buf = self.buf + data if self.buf else data
        while buf:
            head = self.head
            if head is None:
                he = buf.find(HEAD_END)
                if he < 0:
                    if len(buf) > MAX_HEAD_BYTES:
                        self._reject(431, "request head too large")
                        return
                    break
                try:
                    head = parse_request_head(buf[:he])
                except ParseError as exc:
                    self._reject(exc.status, exc.message)
                    return
                if head.content_length > MAX_REQUEST_BYTES:
                    self._reject(413, "request body too large for the local proxy")
                    return
                self.head = head
                self.body_start = self.chunk_pos = he + 4
                self.need = he + 4 + head.content_length
                self.continue_sent = False
            if head.chunked:
                try:
                    end, self.chunk_pos = chunked_end(buf, self.chunk_pos)
                except ParseError as exc:
                    self._reject(exc.status, exc.message)
                    return
                if end < 0 and len(buf) > MAX_REQUEST_BYTES:
                    self._reject(413, "request body too large for the local proxy")
                    return
            else:
                end = self.need if len(buf) >= self.need else -1
            if end < 0:
                if head.expect_continue and not self.continue_sent and self.transport is not None:
                    self.continue_sent = True
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                break
            raw = buf if end == len(buf) else buf[:end]
            ex = Exchange(self, raw, head, end - self.body_start,
                          self.router.config.retry.limit if self.router.config.retry is not None else 0)
            self.head = None
            buf = buf[end:]
            if self.current is None:
                self.current = ex
                self.router.start(ex)
            else:
                self.pending.append(ex)
                if len(self.pending) >= MAX_PIPELINED and not self.paused and self.transport is not None:
                    self.paused = True
                    self.transport.pause_reading()
            if self.closed:
                return
        self.buf = buf

    def _reject(self, status: int, message: str) -> None:
        self.router.route.error(BAD_REQUEST)
        self.router.route.status(status)
        if self.transport is not None:
            self.transport.write(simple_response(status, f"{message}\n".encode(),
                                                 [("l5d-proxy-error", message)], close=True))
        self.close()

    def respond(self, ex: Exchange, raw: bytes, close_after: bool) -> None:
        if self.closed or self.transport is None:
            return
        self.transport.write(raw)
        if close_after or not ex.head.keep_alive or (self.eof and not self.pending):
            self.close()
            return
        self.current = None
        if self.pending:
            nxt = self.pending.popleft()
            self.current = nxt
            if self.paused and len(self.pending) < MAX_PIPELINED // 2:
                self.paused = False
                self.transport.resume_reading()
            self.router.start(nxt)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._drop()
        if self.transport is not None:
            self.transport.close()

    def _drop(self) -> None:
        self.router.clients.discard(self)
        if self.current is not None:
            self.router.cancel(self.current)
            self.current = None
        self.pending.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._drop()

    def eof_received(self) -> bool | None:
        # Half-closed by the client: finish what is in flight, then close.
        if self.current is None:
            return None
        self.eof = True
        return True


# ---------------------------------------------------------------------------------------------
# control API


class ControlApi:
    """JSON over HTTP/1.1 on a loopback port; one request per connection."""

    def __init__(self, router: Router, stop: Callable[[], None]) -> None:
        self.router = router
        self.stop = stop

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(HEAD_END)
            request_line, _, rest = head.partition(b"\r\n")
            parts = request_line.split(b" ")
            if len(parts) != 3:
                raise ParseError(400, "malformed request line")
            method, path = parts[0].decode("latin-1"), parts[1].decode("latin-1")
            match = re.search(rb"\r\ncontent-length:\s*(\d+)", b"\r\n" + rest.lower())
            length = int(match.group(1)) if match else 0
            if length > 1024 * 1024:
                raise ParseError(413, "control request too large")
            body = await reader.readexactly(length) if length else b""
            status, payload = self.dispatch(method, path.split("?", 1)[0], body)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        except ParseError as exc:
            status, payload = exc.status, {"error": exc.message}
        if isinstance(payload, str):
            data, ctype = payload.encode(), "text/plain; version=0.0.4"
        else:
            data, ctype = json.dumps(payload).encode(), "application/json"
        writer.write(simple_response(status, data, close=True, content_type=ctype))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def dispatch(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        r = self.router
        try:
            doc: Any = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            return 400, {"error": f"body is not JSON: {exc}"}
        try:
            if path == "/healthz" and method == "GET":
                return 200, {"status": "ok", "pid": os.getpid()}
            if path == "/state" and method == "GET":
                return 200, r.state_json()
            if path == "/counters" and method == "GET":
                return 200, r.counters_json()
            if path == "/counters/reset" and method == "POST":
                r.reset_counters()
                return 200, r.counters_json()
            if path == "/metrics" and method == "GET":
                return 200, r.metrics_text()
            if path == "/weights" and method == "PUT":
                r.set_weights(parse_weights(doc.get("weights")))
                return 200, {"weights": r.weights}
            if path == "/seed" and method == "PUT":
                seed = doc.get("seed")
                if isinstance(seed, bool) or not isinstance(seed, int):
                    return 400, {"error": 'expected {"seed": <integer>}'}
                r.rng.seed(seed)
                return 200, {"seed": seed}
            if path == "/endpoints" and method == "PUT":
                endpoints = doc.get("endpoints")
                if not isinstance(endpoints, Mapping):
                    return 400, {"error": 'expected {"endpoints": {"<backend>": ["127.0.0.1:PORT", ...]}}'}
                for name in endpoints:
                    if name not in r.services:
                        return 400, {"error": f"no Service {name!r}; known: {sorted(r.services)}"}
                for name, addrs in endpoints.items():
                    r.set_endpoints(str(name), [str(a) for a in addrs])
                return 200, {"endpoints": {n: list(b.endpoints) for n, b in r.backends.items() if b.exists}}
            if path == "/shutdown" and method == "POST":
                r.loop.call_soon(self.stop)
                return 200, {"status": "stopping"}
        except (ValueError, TypeError, AttributeError) as exc:
            return 400, {"error": str(exc)}
        return 404, {"error": f"no route {method} {path}; the control API has GET /healthz, GET /state, "
                     "GET /counters, POST /counters/reset, GET /metrics, PUT /weights, PUT /seed, PUT /endpoints, "
                     "POST /shutdown"}


# ---------------------------------------------------------------------------------------------
# process entry point


async def serve(config: ProxyConfig, *, port: int = 0, control_port: int = 0, port_file: str | None = None,
                parent_pid: int | None = None) -> None:
    loop = asyncio.get_running_loop()
    router = Router(loop, config)
    stopped = asyncio.Event()
    api = ControlApi(router, stopped.set)
    server = await loop.create_server(lambda: ClientConn(router), "127.0.0.1", port, backlog=2048,
                                      reuse_address=True)
    control = await asyncio.start_server(api.handle, "127.0.0.1", control_port, limit=MAX_HEAD_BYTES)
    data_port = server.sockets[0].getsockname()[1]
    ctl_port = control.sockets[0].getsockname()[1]
    if port_file is not None:
        tmp = f"{port_file}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"port": data_port, "control_port": ctl_port, "pid": os.getpid()}, fh)
        os.replace(tmp, port_file)
    print(f"abtraffic proxy pid={os.getpid()} data=127.0.0.1:{data_port} control=127.0.0.1:{ctl_port}",
          flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)

    async def watch_parent() -> None:
        # Last line of defence: if whoever started us is gone, nobody will stop us.
        while True:
            await asyncio.sleep(PARENT_CHECK_S)
            if parent_pid is not None and os.getppid() != parent_pid:
                print("abtraffic proxy: parent process is gone; exiting", file=sys.stderr, flush=True)
                stopped.set()
                return

    watcher = loop.create_task(watch_parent())
    gc.collect()
    gc.freeze()  # long-lived objects out of the collector's way: fewer pauses on the data path
    try:
        await stopped.wait()
    finally:
        watcher.cancel()
        server.close()
        control.close()
        router.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1.0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pytest_abtraffic._local._proxy",
                                description="Local emulation of a Linkerd outbound proxy for an A/B split.")
    p.add_argument("--config", required=True, help="JSON file with the proxy configuration")
    p.add_argument("--port", type=int, default=0, help="data port on 127.0.0.1 (default: any free port)")
    p.add_argument("--control-port", type=int, default=0, help="control API port on 127.0.0.1 (default: any)")
    p.add_argument("--port-file", help="write the bound ports here as JSON once listening")
    p.add_argument("--parent-pid", type=int, help="exit when this process is no longer our parent")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with open(args.config, encoding="utf-8") as fh:
            config = ProxyConfig.from_json(json.load(fh))
        if args.parent_pid is not None and os.getppid() != args.parent_pid:
            print("abtraffic proxy: parent already gone", file=sys.stderr)
            return 1
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        print(f"abtraffic proxy: bad configuration: {exc}", file=sys.stderr)
        return 2
    gc.set_threshold(50_000, 50, 50)
    coro = serve(config, port=args.port, control_port=args.control_port, port_file=args.port_file,
                 parent_pid=args.parent_pid)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(coro)
    return 0


__all__ = [
    "DEFAULT_FAIL_FAST_TIMEOUT_S",
    "DEFAULT_QUEUE_CAPACITY",
    "MAX_RETRYABLE_BODY",
    "AccrualConfig",
    "ProxyConfig",
    "RetryConfig",
    "Router",
    "build_parser",
    "main",
    "parse_retry_conditions",
    "serve",
]

if __name__ == "__main__":
    raise SystemExit(main())

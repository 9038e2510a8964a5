"""Endpoints: one ready address of a backend, its connection pool, reconnect backoff and breaker state."""

from __future__ import annotations

import asyncio
import contextlib
from functools import partial
from typing import Any

from ._config import AccrualConfig, parse_addr
from ._exchange import BackendSide, Exchange, UpstreamSide
from ._upstream import UpstreamConn

# Endpoints that refuse connections sit out this exponential backoff (ours; Linkerd reconnects
# with a backoff too, but the numbers are not part of the facts).
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 2.0

# Endpoint breaker states (linkerd2-proxy consecutive_failures.rs: open / shut / probation).
OPEN, SHUT, PROBATION = 0, 1, 2
_STATE_NAMES = {OPEN: "open", SHUT: "ejected", PROBATION: "probation"}


class Endpoint:
    """One ready address of a backend, with its connection pool and breaker state."""

    __slots__ = ("addr", "backend", "connect_failures", "down", "ejections", "failures", "host", "idle",
                 "inflight", "port", "probe_inflight", "removed", "state", "timer")

    def __init__(self, backend: BackendSide, addr: str) -> None:
        self.backend = backend
        self.addr = addr
        self.host, self.port = parse_addr(addr)
        self.idle: list[UpstreamSide] = []
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

    def forget(self, conn: UpstreamSide) -> None:
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


__all__ = ["OPEN", "PROBATION", "SHUT", "Endpoint"]

"""Backends: a backendRef's endpoints, balanced by P2C, behind a queue with a fail-fast gate."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable
from typing import Any

from ._config import parse_addr
from ._endpoint import Endpoint
from ._exchange import Counters, Exchange, RouteSide


class Backend:
    """One backendRef: a Service's endpoints behind a queue with a fail-fast gate."""

    __slots__ = ("_ready", "counters", "dirty", "endpoints", "exists", "failfast", "ff_timer", "name", "queue",
                 "router")

    def __init__(self, router: RouteSide, name: str, exists: bool) -> None:
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



__all__ = ["Backend"]

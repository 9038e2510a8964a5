"""The route: the distributor over backends, the request lifecycle with retries, timeouts and fail-fast."""

from __future__ import annotations

import asyncio
import random
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from typing import Any

from ..._routes import header_map, select_rule
from ._balancer import Backend
from ._codec import request_line_and_headers, simple_response
from ._config import ProxyConfig
from ._exchange import (
    BAD_REQUEST,
    CONNECTION_ERROR,
    FAIL_FAST,
    LOAD_SHED,
    REQUEST_TIMEOUT,
    RESPONSE_TIMEOUT,
    SERVICE_NOT_FOUND,
    BackendSide,
    ClientSide,
    Counters,
    EndpointSide,
    Exchange,
)


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
        self.clients: set[ClientSide] = set()
        self.dirty = True
        self._choices: list[Backend] = []
        self._cum: list[float] = []
        self._total = 0.0
        for name in config.services:
            self._backend(name)
        self.rules = () if config.ignore_matches else config.routes
        self._rule_backends = [self._backend(rule.backend) for rule in self.rules]
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

    def _select_rule(self, ex: Exchange) -> int:
        """The header rule serving this request (Gateway API precedence), -1 for the default rule."""
        method, path, headers = request_line_and_headers(ex.raw)
        index = select_rule(self.rules, method, path, header_map(headers))
        return -1 if index is None else index

    def _pick_for(self, ex: Exchange) -> Backend | None:
        if ex.rule < 0:
            return self.pick()
        b = self._rule_backends[ex.rule]  # a rule with one backendRef: no choice, but the gate counts
        return b if b.gate_open else None

    # -- request lifecycle ---------------------------------------------------------------------
    def start(self, ex: Exchange) -> None:
        self.route.requests += 1
        if self.rules:
            ex.rule = self._select_rule(ex)
        timeout = self.config.request_timeout_s
        if timeout is not None:
            ex.deadline = self.loop.call_later(timeout, self._on_request_timeout, ex)
        self._attempt(ex)

    def _attempt(self, ex: Exchange) -> None:
        ex.attempt += 1
        ex.endpoint = None
        ex.transparent_retry = False
        b = self._pick_for(ex)
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

    def on_response(self, ex: Exchange, ep: EndpointSide, status: int, raw: bytes, close_client: bool) -> None:
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

    def on_upstream_error(self, ex: Exchange, ep: EndpointSide, reason: str) -> None:
        ep.backend.counters.error(CONNECTION_ERROR)
        ep.observe(False)
        if ex.done:
            return
        self._end_attempt(ex)
        ex.endpoint = None
        self._attempt_failed(ex, 502, reason, CONNECTION_ERROR)

    def on_fail_fast(self, ex: Exchange, b: BackendSide) -> None:
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

    def _abort_attempt(self, ex: Exchange) -> EndpointSide | None:
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

    def close(self) -> None:
        for b in self.backends.values():
            b.close()
        for task in list(self.tasks):
            task.cancel()
        for client in list(self.clients):
            client.close()


__all__ = ["Router"]

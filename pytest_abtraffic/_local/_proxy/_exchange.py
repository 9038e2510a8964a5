"""The request being proxied, the counters, and what each layer of the data path needs from the one above.

The data path is layered: a client connection hands an exchange to the router, the router picks a
backend, the backend an endpoint, the endpoint an upstream connection, and answers travel back up.
Each layer calls up through the small protocols below, so the modules import only downwards.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Protocol

from ._codec import RequestHead
from ._config import ProxyConfig

# Linkerd does not retry requests whose body is over 64 KiB (linkerd-facts.md, retries).
MAX_RETRYABLE_BODY = 64 * 1024

# Error kinds (keys of BackendCounters.proxy_errors) and the l5d-proxy-error texts.
FAIL_FAST = "fail_fast"
LOAD_SHED = "load_shed"
SERVICE_NOT_FOUND = "service_not_found"
REQUEST_TIMEOUT = "request_timeout"
RESPONSE_TIMEOUT = "response_timeout"
CONNECTION_ERROR = "connection_error"
BAD_REQUEST = "bad_request"


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



class ClientSide(Protocol):
    """The client connection an exchange came in on, as the router sees it."""

    def respond(self, ex: Exchange, raw: bytes, close_after: bool) -> None: ...

    def close(self) -> None: ...


class RouteSide(Protocol):
    """The router, as its backends, endpoints and upstream connections see it."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...

    @property
    def config(self) -> ProxyConfig: ...

    @property
    def rng(self) -> random.Random: ...

    @property
    def tasks(self) -> set[asyncio.Task[Any]]: ...

    @property
    def weights(self) -> dict[str, float]: ...

    dirty: bool
    ejections: int
    failfast_entered: int

    def on_response(self, ex: Exchange, ep: EndpointSide, status: int, raw: bytes, close_client: bool) -> None: ...

    def on_upstream_error(self, ex: Exchange, ep: EndpointSide, reason: str) -> None: ...

    def on_fail_fast(self, ex: Exchange, b: BackendSide) -> None: ...


class BackendSide(Protocol):
    """A backend, as its endpoints and the router's exchange bookkeeping see it."""

    @property
    def name(self) -> str: ...

    @property
    def router(self) -> RouteSide: ...

    @property
    def counters(self) -> Counters: ...

    dirty: bool

    def dispatch(self, ex: Exchange) -> None: ...

    def unqueue(self, ex: Exchange) -> None: ...

    def endpoint_available(self) -> None: ...


class EndpointSide(Protocol):
    """An endpoint, as its upstream connections and the router see it."""

    @property
    def backend(self) -> BackendSide: ...

    @property
    def removed(self) -> bool: ...

    @property
    def idle(self) -> list[UpstreamSide]: ...

    inflight: int

    def forget(self, conn: UpstreamSide) -> None: ...

    def drop_idle(self) -> None: ...

    def observe(self, success: bool) -> None: ...

    def release_probe(self) -> None: ...


class UpstreamSide(Protocol):
    """A pooled upstream connection, as its endpoint and the router see it."""

    @property
    def endpoint(self) -> EndpointSide: ...

    @property
    def transport(self) -> asyncio.Transport | None: ...

    closed: bool

    def send(self, ex: Exchange) -> None: ...

    def abort(self) -> None: ...


class Exchange:
    """One client request, across its attempts (retries) until one response goes back."""

    __slots__ = ("attempt", "attempt_timer", "backend", "client", "deadline", "done", "endpoint", "head",
                 "queued", "raw", "retries_left", "retryable", "rule", "transparent_retry", "upstream")

    def __init__(self, client: ClientSide, raw: bytes, head: RequestHead, body_len: int, retries: int) -> None:
        self.client = client
        self.raw = raw
        self.head = head
        self.retries_left = retries
        self.retryable = body_len <= MAX_RETRYABLE_BODY
        self.attempt = 0
        self.done = False
        self.backend: BackendSide | None = None
        self.endpoint: EndpointSide | None = None
        self.upstream: UpstreamSide | None = None
        self.queued: BackendSide | None = None
        self.deadline: asyncio.TimerHandle | None = None
        self.attempt_timer: asyncio.TimerHandle | None = None
        self.transparent_retry = False
        self.rule = -1  # index of the header rule that serves it; -1: the weighted default rule



__all__ = [
    "BAD_REQUEST",
    "CONNECTION_ERROR",
    "FAIL_FAST",
    "LOAD_SHED",
    "MAX_RETRYABLE_BODY",
    "REQUEST_TIMEOUT",
    "RESPONSE_TIMEOUT",
    "SERVICE_NOT_FOUND",
    "BackendSide",
    "ClientSide",
    "Counters",
    "EndpointSide",
    "Exchange",
    "RouteSide",
    "UpstreamSide",
]

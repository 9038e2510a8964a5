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

Modules, each importing only the ones listed before it:

* ``_codec``: HTTP/1.1 message framing shared by both connection sides;
* ``_config``: ``ProxyConfig`` and its parsers (all the parent process needs);
* ``_exchange``: the request being proxied, the counters, the protocols each layer calls up through;
* ``_upstream``: keep-alive connections to one endpoint;
* ``_endpoint``: an endpoint's pool, reconnect backoff and failure-accrual breaker;
* ``_balancer``: a backend: P2C over its endpoints, its queue and fail-fast gate;
* ``_router``: the distributor over backends and the request lifecycle (retries, timeouts);
* ``_client``: connections to the data port;
* ``_api``: the control API and the router's reports;
* ``_serve``: the process entry point (``__main__``).
"""

from __future__ import annotations

from ._config import (
    DEFAULT_FAIL_FAST_TIMEOUT_S,
    DEFAULT_QUEUE_CAPACITY,
    AccrualConfig,
    ProxyConfig,
    RetryConfig,
    parse_retry_conditions,
)
from ._exchange import MAX_RETRYABLE_BODY
from ._router import Router
from ._serve import build_parser, main, serve

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

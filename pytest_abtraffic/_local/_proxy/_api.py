"""The control API (JSON over HTTP/1.1 on a loopback port) and the router's reports it serves."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
from collections.abc import Callable, Mapping
from typing import Any

from ._codec import HEAD_END, ParseError, simple_response
from ._config import parse_weights
from ._exchange import Counters
from ._router import Router


def counters_json(router: Router) -> dict[str, Any]:
    route = router.route.to_json()
    route["errors"] = route.pop("proxy_errors")
    route["retries"] = router.retries
    route["failure_accrual_ejections"] = router.ejections
    route["failfast_entered"] = router.failfast_entered
    return {"backends": {name: b.counters.to_json() for name, b in router.backends.items()}, "route": route}



def reset_counters(router: Router) -> None:
    router.route = Counters()
    router.retries = router.ejections = router.failfast_entered = 0
    for b in router.backends.values():
        b.counters = Counters()



def state_json(router: Router) -> dict[str, Any]:
    return {"config": router.config.to_json(), "weights": router.weights, "services": sorted(router.services),
            "backends": {name: b.to_json() for name, b in router.backends.items()},
            "clients": len(router.clients)}



def metrics_text(router: Router) -> str:
    """Prometheus text in the spirit of the proxy's outbound route-backend metrics."""
    lines = ["# TYPE outbound_http_route_backend_requests_total counter"]
    for name, b in sorted(router.backends.items()):
        lines.append(f'outbound_http_route_backend_requests_total{{backend_name="{name}"}} {b.counters.requests}')
    lines.append("# TYPE outbound_http_route_backend_response_statuses_total counter")
    for name, b in sorted(router.backends.items()):
        for code, n in sorted(b.counters.statuses.items()):
            lines.append("outbound_http_route_backend_response_statuses_total"
                         f'{{backend_name="{name}",http_status="{code}",error=""}} {n}')
        for kind, n in sorted(b.counters.errors.items()):
            lines.append("outbound_http_route_backend_response_statuses_total"
                         f'{{backend_name="{name}",http_status="",error="{kind.upper()}"}} {n}')
    return "\n".join(lines) + "\n"


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
                return 200, state_json(r)
            if path == "/counters" and method == "GET":
                return 200, counters_json(r)
            if path == "/counters/reset" and method == "POST":
                reset_counters(r)
                return 200, counters_json(r)
            if path == "/metrics" and method == "GET":
                return 200, metrics_text(r)
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


__all__ = ["ControlApi", "counters_json", "metrics_text", "reset_counters", "state_json"]

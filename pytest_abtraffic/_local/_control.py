"""Start the proxy process and talk to its control API (JSON over HTTP on a loopback port).

Control API (all JSON; one request per connection):

=======  ====================  ==========================================================
GET      /healthz              ``{"status": "ok", "pid": N}``
GET      /state                config, weights, each backend's gate/queue/endpoints/breakers
GET      /counters             per-backend ``requests``/``responses_by_status``/``proxy_errors``
                               and route-level totals (requests, statuses, errors, retries)
POST     /counters/reset       zero every counter
GET      /metrics              Prometheus text (``outbound_http_route_backend_*``)
PUT      /weights              ``{"weights": {"v1": 90, "v2": 10}}``; a name that is not a
                               Service becomes a backend that answers 500 "Service not found"
PUT      /endpoints            ``{"endpoints": {"v1": ["127.0.0.1:PORT", ...]}}``: the full
                               ready set of each named backend (what Endpoints would list)
POST     /shutdown             stop the proxy
=======  ====================  ==========================================================
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._errors import BackendError
from ._proxy import ProxyConfig
from ._supervisor import MARKER_ENV, ManagedProcess, log_tail

_PACKAGE_PARENT = str(Path(__file__).resolve().parents[2])


class ProxyProcess:
    """The proxy as a child process, plus a small client for its control API."""

    def __init__(self, workdir: Path, config: ProxyConfig, marker: str, *, start_timeout_s: float = 15.0,
                 port: int = 0) -> None:
        self.workdir = workdir
        self.config = config
        self.marker = marker
        self.start_timeout_s = start_timeout_s
        self.requested_port = port
        self.process: ManagedProcess | None = None
        self._launched_at = 0.0
        self.port = 0
        self.control_port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "proxy.log"

    def start(self) -> None:
        self.launch()
        self.wait_started()

    def launch(self) -> None:
        """Start the proxy process; ``wait_started`` then waits for its ports (other processes may
        start in between: the proxy's start-up then overlaps theirs)."""
        config_path = self.workdir / "proxy-config.json"
        port_file = self.workdir / "proxy-ports.json"
        port_file.unlink(missing_ok=True)
        config_path.write_text(json.dumps(self.config.to_json(), indent=1), encoding="utf-8")
        argv = [sys.executable, "-m", "pytest_abtraffic._local._proxy", "--config", str(config_path),
                "--port-file", str(port_file), "--port", str(self.requested_port),
                "--parent-pid", str(os.getpid())]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_PARENT, env.get("PYTHONPATH", "")) if p)
        env[MARKER_ENV] = self.marker
        env["PYTHONUNBUFFERED"] = "1"
        try:
            self.process = ManagedProcess(argv, env, self.log_path, "proxy")
        except OSError as exc:
            raise BackendError(f"cannot start the local proxy: {exc}") from None
        self._launched_at = time.monotonic()

    def wait_started(self) -> None:
        if self.process is None:
            raise BackendError("the local proxy was not launched")
        port_file = self.workdir / "proxy-ports.json"
        deadline = self._launched_at + self.start_timeout_s
        while True:
            if port_file.exists():
                ports = json.loads(port_file.read_text(encoding="utf-8"))
                self.port, self.control_port = int(ports["port"]), int(ports["control_port"])
                return
            if not self.process.alive:
                raise BackendError(f"the local proxy exited with status {self.process.returncode} while starting; "
                                   f"log tail:\n{log_tail(self.log_path)}")
            if time.monotonic() > deadline:
                raise BackendError(f"the local proxy did not start within {self.start_timeout_s:g}s; "
                                   f"log tail:\n{log_tail(self.log_path)}")
            time.sleep(0.01)

    # -- control API ---------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, timeout_s: float = 10.0) -> Any:
        if not self.control_port:
            raise BackendError("the local proxy is not running")
        data = None if body is None else json.dumps(body).encode()
        conn = http.client.HTTPConnection("127.0.0.1", self.control_port, timeout=timeout_s)
        try:
            conn.request(method, path, body=data, headers={"content-type": "application/json"})
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            alive = self.process is not None and self.process.alive
            raise BackendError(f"local proxy control API {method} {path} failed: {exc}"
                               + ("" if alive else f"; the proxy is not running; log tail:\n{log_tail(self.log_path)}")
                               ) from None
        finally:
            conn.close()
        text = raw.decode(errors="replace")
        if resp.status != 200:
            raise BackendError(f"local proxy control API {method} {path} answered {resp.status}: {text}")
        if resp.getheader("content-type", "").startswith("application/json"):
            return json.loads(text)
        return text

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/healthz")
        return result

    def state(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/state")
        return result

    def counters(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/counters")
        return result

    def reset_counters(self) -> None:
        self.request("POST", "/counters/reset")

    def metrics(self) -> str:
        return str(self.request("GET", "/metrics"))

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Raw weights: names that are not Services become 500 "Service not found" backends."""
        self.request("PUT", "/weights", {"weights": {str(k): float(v) for k, v in weights.items()}})

    def reseed(self, seed: int) -> None:
        """Restart the proxy's random stream (weighted choice, penalty jitter) from ``seed``."""
        self.request("PUT", "/seed", {"seed": int(seed)})

    def set_endpoints(self, endpoints: Mapping[str, tuple[str, ...] | list[str]]) -> None:
        self.request("PUT", "/endpoints", {"endpoints": {k: list(v) for k, v in endpoints.items()}})

    def stop(self, grace_s: float = 2.0) -> None:
        if self.process is None:
            return
        with contextlib.suppress(BackendError):
            self.process.stop(grace_s)


__all__ = ["ProxyProcess"]

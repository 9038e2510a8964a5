"""``LocalBackend``: an experiment as local processes behind a Linkerd-like outbound proxy.

Each deployment gets its own temp dir (logs, proxy config), its own proxy process and
``replicas`` processes per variant. Load goes to the proxy (``target_url()``), which applies the
split the way a meshed client's Linkerd proxy would (see docs/local-backend.md).
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._backend import CLEAR_FAULTS, BackendCounters, FaultSettings, teardown_all
from .._errors import BackendError
from .._result import ServedWeights
from ._control import ProxyProcess
from ._proxy import AccrualConfig, ProxyConfig, RetryConfig
from ._supervisor import (
    REGISTRY,
    Supervisor,
    make_workdir,
    owner_token,
    reap_orphans,
)

if TYPE_CHECKING:
    from .._load import LoadObserver, LoadPlan, LoadResult
    from .._load._driver import WarmLocust
    from .._spec import ExperimentSpec


def proxy_config(spec: ExperimentSpec, *, seed: int | None = None, ignore_route_matches: bool = False) -> ProxyConfig:
    """The proxy configuration that emulates ``spec``'s split, header routes and failure policy.

    ``ignore_route_matches`` is for tests only: a proxy that does not implement matches.
    """
    fp = spec.failure_policy
    retry = None
    if fp.retries is not None:
        retry = RetryConfig(conditions=fp.retries.conditions, limit=fp.retries.limit, timeout_s=fp.retries.timeout_s)
    accrual = None
    if fp.failure_accrual is not None:
        fa = fp.failure_accrual
        accrual = AccrualConfig(max_failures=fa.max_failures, min_penalty_s=fa.min_penalty_s,
                                max_penalty_s=fa.max_penalty_s, jitter_ratio=fa.jitter_ratio)
    return ProxyConfig(
        weights={name: float(w) for name, w in spec.exact_weights().items()},
        services=spec.variant_names,
        fail_fast_timeout_s=fp.fail_fast_timeout_s,
        request_timeout_s=fp.request_timeout_s,
        retry=retry,
        accrual=accrual,
        seed=seed,
        routes=spec.routes,
        ignore_matches=ignore_route_matches,
    )


class LocalDeployment:
    """One experiment running locally. Implements ``pytest_abtraffic._backend.Deployment``.

    Local extras: ``proxy`` (the control client: raw weights that may name a missing Service,
    ``state()``, ``metrics()``), ``marker`` (in every child's environment as
    ``ABTRAFFIC_LOCAL_MARKER``), ``workdir``, ``pids()`` and ``ports()``.
    """

    backend_name = "local"

    def __init__(self, spec: ExperimentSpec, namespace: str, *, ready_timeout_s: float = 30.0,
                 stop_grace_s: float = 5.0, teardown_grace_s: float = 0.5, probe_period_s: float = 0.25,
                 seed: int | None = None, proxy_port: int = 0, ignore_route_matches: bool = False) -> None:
        self._deployed_spec = spec
        self._spec = spec
        self._namespace = namespace
        self.ready_timeout_s = ready_timeout_s
        self.stop_grace_s = stop_grace_s
        self.teardown_grace_s = teardown_grace_s
        self.id = uuid.uuid4().hex[:10]
        self.marker = f"{owner_token()}:{self.id}"
        self.workdir: Path = make_workdir(self.id)
        self._seed = seed
        config = proxy_config(spec, seed=seed, ignore_route_matches=ignore_route_matches)
        self.proxy = ProxyProcess(self.workdir, config, self.marker, port=proxy_port)
        self.supervisor = Supervisor(spec, self.workdir, self.marker, self.proxy.set_endpoints,
                                     probe_period_s=probe_period_s)
        self._lock = threading.RLock()
        self._torn_down = False
        self._started_at = time.time()
        #: A locust process started before this deployment was ready (``LocalBackend.prestart_load``),
        #: for the first load run that launches the same way.
        self.warm_load: WarmLocust | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        # The proxy and the model servers start side by side; probing (which publishes ready
        # endpoints to the proxy) begins once the proxy is up.
        self.proxy.launch()
        for v in self._spec.variants:
            for _ in range(v.replicas):
                self.supervisor.start_replica(v.name)
        self.proxy.wait_started()
        self.supervisor.start()
        self.supervisor.wait_ready({v.name: v.replicas for v in self._spec.variants}, self.ready_timeout_s)

    def teardown(self) -> None:
        with self._lock:
            if self._torn_down:
                return
            self._torn_down = True
        errors: list[str] = []
        warm, self.warm_load = self.warm_load, None
        if warm is not None:
            warm.close()
        try:
            self.proxy.stop(grace_s=1.0)
        except Exception as exc:
            errors.append(f"proxy: {exc}")
        try:
            self.supervisor.shutdown(self.teardown_grace_s)
        except Exception as exc:
            errors.append(f"replicas: {exc}")
        REGISTRY.remove_dir(str(self.workdir))
        if errors:
            raise BackendError(f"teardown of local deployment {self.id} was incomplete: {'; '.join(errors)}")

    def _check_live(self) -> None:
        if self._torn_down:
            raise BackendError(f"local deployment {self.id} ({self._namespace}) was torn down")

    # -- Deployment protocol -------------------------------------------------------------------
    @property
    def spec(self) -> ExperimentSpec:
        return self._spec

    @property
    def namespace(self) -> str:
        return self._namespace

    def target_url(self) -> str:
        return self.proxy.url

    def run_load(self, plan: LoadPlan, observer: LoadObserver | None = None) -> LoadResult:
        self._check_live()
        from .._load import run_locust  # lazy: keeps Locust's import chain out of the backend

        if self._seed is not None:
            # Each load run replays the same random stream, whatever ran on this deployment before.
            self.proxy.reseed(self._seed)
        warm, self.warm_load = self.warm_load, None
        return run_locust(self.target_url(), plan, observer, warm=warm)

    def kill(self, variant: str, count: int | None = None) -> int:
        self._check_live()
        self._spec.variant(variant)
        return self.supervisor.kill(variant, count)

    def scale(self, variant: str, replicas: int) -> None:
        self._check_live()
        self._spec.variant(variant)
        if isinstance(replicas, bool) or not isinstance(replicas, int) or not 0 <= replicas <= 100:
            raise BackendError(f"replicas must be an integer in 0..100, got {replicas!r}")
        self.supervisor.scale(variant, replicas, grace_s=self.stop_grace_s, ready_timeout_s=self.ready_timeout_s)

    def set_fault(self, variant: str, fault: FaultSettings) -> None:
        self._check_live()
        self._spec.variant(variant)
        self.supervisor.set_fault(variant, fault.to_json())

    def served_weights(self) -> ServedWeights:
        """Declared (the spec) vs programmed (what the proxy's control API says it routes by)."""
        declared = {name: float(w) for name, w in self._spec.exact_weights().items()}
        state = self.proxy.state()
        programmed = {str(k): float(v) for k, v in dict(state.get("weights") or {}).items()}
        # The local proxy applies a weight change synchronously (PUT /weights answers after it).
        return ServedWeights(declared, programmed, "local proxy control API (GET /state)", 0.0)

    def set_weights(self, weights: Mapping[str, int | str]) -> None:
        self._check_live()
        new_spec = self._spec.with_weights(weights)  # validates names and the split API's weight form
        self.proxy.set_weights({name: float(w) for name, w in new_spec.exact_weights().items()})
        self._spec = new_spec

    def restore(self) -> None:
        self._check_live()
        for v in self._deployed_spec.variants:
            self.supervisor.scale(v.name, v.replicas, grace_s=self.stop_grace_s, ready_timeout_s=self.ready_timeout_s)
        for v in self._deployed_spec.variants:
            if v.admin_port is not None:
                self.supervisor.set_fault(v.name, CLEAR_FAULTS.to_json())
        weights = {name: float(w) for name, w in self._deployed_spec.exact_weights().items()}
        self.proxy.set_weights(weights)
        self._spec = self._deployed_spec
        # Cleared "unready" faults show up at the next probe; wait so restore() returns a whole split.
        self.supervisor.wait_ready({v.name: v.replicas for v in self._deployed_spec.variants}, self.ready_timeout_s,
                                   what="restore")

    def ready_endpoints(self, variant: str) -> int:
        self._spec.variant(variant)
        if self._torn_down:
            return 0
        return self.supervisor.published(variant)

    def mesh_counters(self) -> dict[str, BackendCounters]:
        self._check_live()
        return counters_from_json(self.proxy.counters())

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "local",
            "id": self.id,
            "namespace": self._namespace,
            "target_url": self.proxy.url if self.proxy.port else None,
            "proxy": {"pid": self.proxy.process.pid if self.proxy.process else None, "port": self.proxy.port,
                      "control_port": self.proxy.control_port, "log": str(self.proxy.log_path)},
            "weights": {k: str(v) for k, v in self._spec.exact_weights().items()},
            "shares": self._spec.shares(),
            "failure_policy": {"fail_fast_timeout_s": self._spec.failure_policy.fail_fast_timeout_s,
                               "request_timeout_s": self._spec.failure_policy.request_timeout_s,
                               "retries": self._spec.failure_policy.retries is not None,
                               "failure_accrual": self._spec.failure_policy.failure_accrual is not None},
            "replicas": self.supervisor.describe(),
            "workdir": str(self.workdir),
            "marker": self.marker,
            "torn_down": self._torn_down,
        }

    # -- local extras --------------------------------------------------------------------------
    def pids(self) -> list[int]:
        pids = [r["pid"] for reps in self.supervisor.describe().values() for r in reps]
        if self.proxy.process is not None:
            pids.append(self.proxy.process.pid)
        return pids

    def ports(self) -> list[int]:
        ports = [self.proxy.port, self.proxy.control_port]
        for reps in self.supervisor.describe().values():
            for r in reps:
                ports.append(r["port"])
                if r["admin_port"] is not None:
                    ports.append(r["admin_port"])
        return [p for p in ports if p]


def counters_from_json(doc: Mapping[str, Any]) -> dict[str, BackendCounters]:
    out: dict[str, BackendCounters] = {}
    for name, c in dict(doc.get("backends", {})).items():
        out[str(name)] = BackendCounters(
            requests=int(c.get("requests", 0)),
            responses_by_status={int(k): int(v) for k, v in dict(c.get("responses_by_status", {})).items()},
            proxy_errors={str(k): int(v) for k, v in dict(c.get("proxy_errors", {})).items()},
        )
    return out


class LocalBackend:
    """Runs experiments as local processes. Implements ``pytest_abtraffic._backend.Backend``.

    Creating one installs the cleanup hooks (atexit; SIGTERM -> KeyboardInterrupt when no other
    SIGTERM handler is set) and reaps processes left by earlier runs whose owner died.
    """

    name = "local"

    def __init__(self, *, ready_timeout_s: float = 30.0, stop_grace_s: float = 5.0, teardown_grace_s: float = 0.5,
                 probe_period_s: float = 0.25, seed: int | None = None, ignore_route_matches: bool = False) -> None:
        # ignore_route_matches: tests only, a proxy that serves every request by the weighted rule.
        self.ignore_route_matches = ignore_route_matches
        self.ready_timeout_s = ready_timeout_s
        self.stop_grace_s = stop_grace_s
        self.teardown_grace_s = teardown_grace_s
        self.probe_period_s = probe_period_s
        self.seed = seed
        self._deployments: list[LocalDeployment] = []
        self._lock = threading.Lock()
        self._closed = False
        self._warm: WarmLocust | None = None
        REGISTRY.install_hooks()
        with contextlib.suppress(OSError):
            reap_orphans()

    def deploy(self, spec: ExperimentSpec, *, namespace: str | None = None) -> LocalDeployment:
        if self._closed:
            raise BackendError("this LocalBackend was closed")
        spec.check_backend("local")
        dep = LocalDeployment(spec, namespace or spec.default_namespace, ready_timeout_s=self.ready_timeout_s,
                              stop_grace_s=self.stop_grace_s, teardown_grace_s=self.teardown_grace_s,
                              probe_period_s=self.probe_period_s, seed=self.seed,
                              ignore_route_matches=self.ignore_route_matches)
        with self._lock:
            self._deployments.append(dep)
            dep.warm_load, self._warm = self._warm, None
        try:
            dep.start()
        except BaseException:
            # Nothing half-started stays behind: the other variants' processes and the proxy go too.
            with contextlib.suppress(Exception):
                dep.teardown()
            with self._lock:
                self._deployments.remove(dep)
            raise
        return dep

    def prestart_load(self, plan: LoadPlan) -> None:
        """Start Locust for ``plan`` now, before the next ``deploy``, so its start-up overlaps the
        deploy; that deployment's first load run with the same launch settings uses it."""
        if self._closed:
            raise BackendError("this LocalBackend was closed")
        from .._load._driver import WarmLocust  # lazy: keeps the driver out of the backend's import

        warm = WarmLocust(plan)
        with self._lock:
            old, self._warm = self._warm, warm
        if old is not None:
            old.close()

    @property
    def deployments(self) -> list[LocalDeployment]:
        with self._lock:
            return list(self._deployments)

    def describe(self) -> dict[str, Any]:
        return {"backend": "local", "deployments": [d.describe() for d in self.deployments],
                "closed": self._closed}

    def close(self) -> None:
        self._closed = True
        with self._lock:
            warm, self._warm = self._warm, None
        if warm is not None:
            warm.close()
        try:
            teardown_all(self.deployments)
        finally:
            with self._lock:
                self._deployments.clear()


__all__ = ["LocalBackend", "LocalDeployment", "counters_from_json", "proxy_config"]

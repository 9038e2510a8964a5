"""The backend interface: one Protocol that the local, kind and existing-cluster backends implement.

A *backend* is the place experiments run (a set of local processes, a kind cluster, a cluster the
user names). ``deploy`` returns a *deployment*: one experiment in its own namespace, with the load
entry point, the chaos primitives and the mesh-level counters. The compliance test in
``tests/integration/test_backend_compliance.py`` runs over every backend that can run here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ._errors import BackendError, SpecError

if TYPE_CHECKING:
    from ._load import LoadObserver, LoadPlan, LoadResult
    from ._spec import ExperimentSpec


@dataclass(frozen=True)
class FaultSettings:
    """Fault knobs of the reference model server's admin API (``PUT /faults``).

    ``None`` means "leave as is". Only variants with an ``admin_port`` support them.
    """

    error_rate: float | None = None
    error_status: int | None = None
    latency_ms: float | None = None
    latency_jitter_ms: float | None = None
    unready: bool | None = None
    crash_on_next: bool | None = None

    def __post_init__(self) -> None:
        if self.error_rate is not None and not 0.0 <= self.error_rate <= 1.0:
            raise SpecError("fault.error_rate", f"must be between 0 and 1, got {self.error_rate!r}")
        if self.error_status is not None and not 500 <= self.error_status <= 599:
            raise SpecError("fault.error_status", f"must be a 5xx status, got {self.error_status!r}")
        for name in ("latency_ms", "latency_jitter_ms"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise SpecError(f"fault.{name}", f"must not be negative, got {value!r}")

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


CLEAR_FAULTS = FaultSettings(error_rate=0.0, latency_ms=0.0, latency_jitter_ms=0.0, unready=False,
                             crash_on_next=False)


@dataclass(frozen=True)
class BackendCounters:
    """Mesh-level counts for one backend (variant), like the proxy's
    ``outbound_http_route_backend_requests_total`` / ``..._response_statuses_total``."""

    requests: int = 0
    responses_by_status: Mapping[int, int] = field(default_factory=dict)
    # Requests the proxy answered itself without reaching the backend (fail-fast 504, 500 no service).
    proxy_errors: Mapping[str, int] = field(default_factory=dict)


@runtime_checkable
class Deployment(Protocol):
    """One deployed experiment. Every method is safe to call after a failure."""

    @property
    def spec(self) -> ExperimentSpec:
        """The experiment as currently configured (weights change with ``set_weights``)."""
        ...

    @property
    def namespace(self) -> str: ...

    @property
    def backend_name(self) -> str: ...

    def target_url(self) -> str:
        """Where load must be sent for the split to apply (the proxy, or the apex Service in-cluster)."""
        ...

    def run_load(self, plan: LoadPlan, observer: LoadObserver | None = None) -> LoadResult:
        """Drive load at the split from where the split is applied (a meshed client)."""
        ...

    # -- chaos primitives ------------------------------------------------------------------
    def kill(self, variant: str, count: int | None = None) -> int:
        """Kill ``count`` replicas of ``variant`` abruptly (all when ``None``); they stay down until
        ``scale``/``restore``. Returns how many were killed."""
        ...

    def scale(self, variant: str, replicas: int) -> None:
        """Set the replica count (graceful: removed replicas drain first)."""
        ...

    def set_fault(self, variant: str, fault: FaultSettings) -> None:
        """Set fault knobs on every replica of ``variant``."""
        ...

    def set_weights(self, weights: Mapping[str, int | str]) -> None:
        """Change the split while running (a canary step)."""
        ...

    def restore(self) -> None:
        """Undo every chaos change: replicas, faults and weights back to the deployed spec."""
        ...

    def ready_endpoints(self, variant: str) -> int:
        """Replicas of ``variant`` currently ready (what Endpoints would list)."""
        ...

    def mesh_counters(self) -> dict[str, BackendCounters]:
        """Mesh-level counts per variant since deploy."""
        ...

    def describe(self) -> dict[str, Any]:
        """What was deployed, for reports and diagnostics."""
        ...

    def teardown(self) -> None:
        """Remove everything this deployment created. Idempotent."""
        ...


@runtime_checkable
class Backend(Protocol):
    """Where experiments run. One per test session; ``close`` releases everything."""

    @property
    def name(self) -> str: ...

    def deploy(self, spec: ExperimentSpec, *, namespace: str | None = None) -> Deployment:
        """Deploy ``spec`` and wait until every variant with replicas > 0 is ready."""
        ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None:
        """Tear down every deployment and whatever the backend started. Idempotent."""
        ...


def teardown_all(deployments: Iterable[Deployment]) -> None:
    """Tear down every deployment even when some fail, then report all failures in one BackendError."""
    errors = []
    for deployment in list(deployments):
        try:
            deployment.teardown()
        except Exception as exc:  # keep going: one stuck namespace must not leak the others
            errors.append(f"{deployment.namespace}: {exc}")
    if errors:
        raise BackendError(f"teardown incomplete: {'; '.join(errors)}")


__all__ = ["CLEAR_FAULTS", "Backend", "BackendCounters", "Deployment", "FaultSettings", "teardown_all"]

"""One compliance test, run over every backend that can run here.

It uses only the ``Backend``/``Deployment`` protocols (load through ``run_load``, so for cluster
backends it comes from a meshed pod). ``local`` always runs; ``kind`` and ``existing`` carry the
``e2e`` marker (skipped unless ``--run-e2e``) and are skipped when their prerequisites are missing
(``existing`` also needs ``ABTRAFFIC_CONTEXT`` naming a kube context with Linkerd).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from pytest_abtraffic._backend import Backend, BackendCounters, Deployment, FaultSettings
from pytest_abtraffic._errors import PrerequisiteError
from pytest_abtraffic._load import LoadPlan
from pytest_abtraffic._spec import default_spec

BACKENDS = [
    pytest.param("local", id="local"),
    pytest.param("kind", id="kind", marks=pytest.mark.e2e),
    pytest.param("existing", id="existing", marks=pytest.mark.e2e),
]


def _make(name: str) -> Backend:
    if name == "local":
        from pytest_abtraffic._local import LocalBackend

        return LocalBackend(teardown_grace_s=0.2)
    from pytest_abtraffic._cluster import ClusterSettings, make_cluster_backend

    if name == "existing":
        context = os.environ.get("ABTRAFFIC_CONTEXT")
        if not context:
            pytest.skip("existing backend: set ABTRAFFIC_CONTEXT to a kube context with Linkerd installed")
        settings = ClusterSettings(context=context, allow_chaos=True)
    else:
        settings = ClusterSettings()
    try:
        return make_cluster_backend(name, settings, default_spec())
    except PrerequisiteError as exc:
        pytest.skip(f"{name} backend not available here: {exc}")


@pytest.fixture(params=BACKENDS)
def any_backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    backend = _make(request.param)
    try:
        yield backend
    finally:
        backend.close()


def _wait_for(check: object, timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False


def test_backend_compliance(any_backend: Backend) -> None:
    spec = default_spec()
    assert isinstance(any_backend, Backend)
    dep = any_backend.deploy(spec)
    try:
        assert isinstance(dep, Deployment)
        assert dep.backend_name == any_backend.name
        assert dep.spec == spec and isinstance(dep.namespace, str) and dep.target_url()
        assert (dep.ready_endpoints("v1"), dep.ready_endpoints("v2")) == (1, 1)

        result = dep.run_load(LoadPlan(users=4, spawn_rate=100, max_requests=300, duration_s=60))
        counts = result.counts()
        assert set(counts) == {"v1", "v2"} and all(n > 0 for n in counts.values()), counts
        assert result.failures() == {}
        mesh = dep.mesh_counters()
        assert all(isinstance(c, BackendCounters) for c in mesh.values())
        assert mesh["v1"].requests >= counts["v1"] and mesh["v2"].requests >= counts["v2"]

        dep.set_weights({"v1": 100, "v2": 0})
        assert dep.spec.shares() == {"v1": 1.0, "v2": 0.0}
        only_v1 = dep.run_load(LoadPlan(users=2, spawn_rate=100, max_requests=100, duration_s=60))
        assert set(only_v1.counts()) == {"v1"}

        assert dep.kill("v2") == 1
        assert _wait_for(lambda: dep.ready_endpoints("v2") == 0)
        dep.set_fault("v1", FaultSettings(latency_ms=0.0))

        dep.restore()
        assert dep.spec == spec
        assert _wait_for(lambda: (dep.ready_endpoints("v1"), dep.ready_endpoints("v2")) == (1, 1))
        assert isinstance(dep.describe(), dict)
    finally:
        dep.teardown()
    dep.teardown()  # idempotent

"""LocalBackend with the reference model server: the split behaves as Linkerd's would.

One test per emulated behaviour; each docstring names the fact it follows (linkerd-facts.md; the
sources are listed in docs/local-backend.md). Requests go over keep-alive connections from a raw
client (no Locust here), so every test runs in about a second.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _local_testkit import binomial_bounds, marked_processes, processes_with_marker, send

from pytest_abtraffic._backend import Backend, Deployment, FaultSettings
from pytest_abtraffic._errors import BackendError, NotReadyError, SpecError
from pytest_abtraffic._local import LocalBackend, LocalDeployment
from pytest_abtraffic._local._supervisor import owner_token, port_is_free
from pytest_abtraffic._spec import ExperimentSpec, FailureAccrual, FailurePolicy, RetryPolicy, default_spec

Deploy = Callable[..., LocalDeployment]


def _seeded(spec: ExperimentSpec, seed: int = 7) -> ExperimentSpec:
    """The reference server draws injected errors from MODEL_SEED: seed every replica."""
    variants = tuple(
        dataclasses.replace(v, local_env={**v.local_env, "MODEL_SEED": str(seed + i)})
        for i, v in enumerate(spec.variants))
    return spec.replace(variants=variants)


def reference(*, weights: dict[str, int] | None = None, **policy: object) -> ExperimentSpec:
    spec = default_spec(failure_policy=FailurePolicy(**policy))  # type: ignore[arg-type]
    if weights is not None:
        spec = spec.with_weights(weights)
    return _seeded(spec)


@pytest.fixture(scope="module")
def backend() -> Iterator[LocalBackend]:
    b = LocalBackend(seed=20240501, teardown_grace_s=0.2)
    yield b
    b.close()


@pytest.fixture
def deploy(backend: LocalBackend) -> Iterator[Deploy]:
    made: list[LocalDeployment] = []

    def make(spec: ExperimentSpec) -> LocalDeployment:
        dep = backend.deploy(spec)
        made.append(dep)
        return dep

    yield make
    for dep in made:
        dep.teardown()
        assert processes_with_marker(dep.marker) == []


def versions(results: list) -> Counter[str | None]:  # type: ignore[type-arg]
    return Counter(r.version for r in results)


# ---------------------------------------------------------------------------------------------
# the split


def test_weights_honoured_per_request_within_exact_binomial_bound(deploy: Deploy) -> None:
    """The client proxy picks a backend per request, weighted random; keep-alive connections do
    not pin a backend (linkerd2-proxy linkerd/distribute/src/service/random.rs)."""
    dep = deploy(reference(weights={"v1": 80, "v2": 20}))
    n = 5000
    results = send(dep.proxy.port, n, conns=8)
    assert Counter(r.status for r in results) == {200: n}
    counts = versions(results)
    lo, hi = binomial_bounds(n, 0.2, alpha=1e-6)
    assert lo <= counts["v2"] <= hi, (counts, lo, hi)
    per_conn: dict[int, set[str | None]] = {}
    for r in results:
        per_conn.setdefault(r.conn, set()).add(r.version)
    assert all(seen == {"v1", "v2"} for seen in per_conn.values()), per_conn  # no pinning
    mesh = dep.mesh_counters()
    assert {k: c.requests for k, c in mesh.items()} == {"v1": counts["v1"], "v2": counts["v2"]}
    assert mesh["v2"].responses_by_status == {200: counts["v2"]}


def test_weight_change_at_run_time_takes_effect(deploy: Deploy) -> None:
    """Weights are client-side policy the proxy picks up while running (HTTPRoute backendRefs
    weights / TrafficSplit updates; a canary step)."""
    dep = deploy(reference())
    dep.set_weights({"v1": 90, "v2": 10})
    assert dep.spec.shares() == {"v1": 0.9, "v2": 0.1}
    n = 3000
    counts = versions(send(dep.proxy.port, n, conns=8))
    lo, hi = binomial_bounds(n, 0.1, alpha=1e-6)
    assert lo <= counts["v2"] <= hi, counts
    dep.set_weights({"v1": 0, "v2": 1})
    assert versions(send(dep.proxy.port, 300, conns=4)) == {"v2": 300}
    with pytest.raises(SpecError):
        dep.set_weights({"v1": 1, "v3": 1})  # the Protocol's set_weights names variants only


# ---------------------------------------------------------------------------------------------
# failing backends


def test_fail_fast_504_then_share_shifts(deploy: Deploy) -> None:
    """A backend with no ready endpoints: requests routed to it wait up to the fail-fast timeout,
    fail with 504, then the distributor skips it and its share goes to the others
    (edge-23.1.1 / linkerd2#5360; linkerd2-proxy balance queue failfast)."""
    dep = deploy(reference(fail_fast_timeout_s=0.5))
    assert dep.kill("v2") == 1
    assert dep.ready_endpoints("v2") == 0
    first = send(dep.proxy.port, 100_000, conns=8, duration_s=1.2)
    failed = [r for r in first if r.status != 200]
    assert failed, "requests routed to the dead backend must fail fast first"
    for r in failed:
        assert r.status == 504
        assert "fail-fast" in r.headers["l5d-proxy-error"]
        assert r.version is None
    # The timer starts with the first queued request; that one waited the whole fail-fast timeout.
    assert max(r.elapsed_s for r in failed) >= 0.45
    assert {r.version for r in first if r.status == 200} == {"v1"}
    after = send(dep.proxy.port, 1000, conns=8)
    assert Counter((r.status, r.version) for r in after) == {(200, "v1"): 1000}
    mesh = dep.mesh_counters()
    assert mesh["v2"].proxy_errors == {"fail_fast": len(failed)}
    assert mesh["v2"].responses_by_status == {}


def test_fail_fast_timeout_default_is_3s(deploy: Deploy) -> None:
    """The queue fail-fast timeout defaults to 3 s (policy-controller default); the local proxy is
    configured with it unless the spec says otherwise (the 3 s wait itself is exercised in
    test_local_proxy.py::test_fail_fast_timeout_defaults_to_3s_then_load_shed_503)."""
    assert FailurePolicy().fail_fast_timeout_s == 3.0
    dep = deploy(default_spec())
    assert dep.proxy.state()["config"]["fail_fast_timeout_s"] == 3.0
    assert dep.describe()["failure_policy"]["fail_fast_timeout_s"] == 3.0


def test_503_when_no_backend_is_available(deploy: Deploy) -> None:
    """When no backend at all is available the answer is 503 (LoadShed), with l5d-proxy-error."""
    dep = deploy(reference(fail_fast_timeout_s=0.3))
    dep.kill("v1")
    dep.kill("v2")
    results = send(dep.proxy.port, 30, conns=1)
    statuses = [r.status for r in results]
    n504 = statuses.count(504)
    assert 1 <= n504 <= 2 and statuses[:n504] == [504] * n504  # each backend fails fast once
    shed = results[n504:]
    assert [r.status for r in shed] == [503] * len(shed)
    assert all("load shed" in r.headers["l5d-proxy-error"] and r.version is None for r in shed)
    dep.restore()
    assert Counter(r.status for r in send(dep.proxy.port, 200, conns=4)) == {200: 200}


def test_500_for_a_backend_naming_no_service(deploy: Deploy) -> None:
    """A backendRef naming a Service that does not exist keeps its weight and answers 500
    ("Service not found"): no failover. Locally: raw proxy weights naming a backend that is
    not one of the experiment's Services (deployment.proxy.set_weights)."""
    dep = deploy(reference(fail_fast_timeout_s=0.3))
    dep.proxy.set_weights({"v1": 1, "v2": 0, "ghost": 1})
    n = 1000
    lo, hi = binomial_bounds(n, 0.5, alpha=1e-6)
    for _ in range(2):  # and it stays that way past the fail-fast timeout
        results = send(dep.proxy.port, n, conns=8)
        bad = [r for r in results if r.status != 200]
        assert lo <= len(bad) <= hi
        assert {r.status for r in bad} == {500}
        assert all(r.headers["l5d-proxy-error"] == "Service not found: ghost" and r.version is None for r in bad)
        time.sleep(0.4)
    assert dep.mesh_counters()["ghost"].proxy_errors == {"service_not_found": dep.mesh_counters()["ghost"].requests}


def test_circuit_breaking_ejects_an_always_failing_variant(deploy: Deploy) -> None:
    """Failure accrual (balancer.linkerd.io/failure-accrual: consecutive): an endpoint that fails
    max_failures times in a row is ejected; when every endpoint of a backend is ejected the backend
    is unavailable and another is selected. Without accrual the failing variant keeps its share."""
    fault = FaultSettings(error_rate=1.0)
    plain = deploy(reference())
    plain.set_fault("v2", fault)
    control = versions(send(plain.proxy.port, 1000, conns=8))
    lo, _ = binomial_bounds(1000, 0.5, alpha=1e-6)
    assert control["v2"] >= lo  # v2 keeps half the traffic, all of it failing

    dep = deploy(reference(fail_fast_timeout_s=0.3,
                           failure_accrual=FailureAccrual(max_failures=5, min_penalty_s=1.0, max_penalty_s=10.0)))
    dep.set_fault("v2", fault)
    # One connection: requests go one at a time, so none is still in flight to v2 when the breaker
    # trips (with N connections up to N-1 already dispatched ones would complete on v2 as well).
    results = send(dep.proxy.port, 100_000, conns=1, duration_s=1.5)
    counts = versions(results)
    share_v2 = counts["v2"] / len(results)
    assert share_v2 < 0.05, (counts, len(results))  # far below its 50% weight
    # 5 failures trip the breaker; within 1.5 s at most two probes follow (1 s + jitter, then 2 s+).
    assert counts["v2"] <= 5 + 2, counts
    assert dep.proxy.counters()["route"]["failure_accrual_ejections"] >= 1
    assert {r.status for r in results if r.version == "v1"} == {200}


def test_retries_repick_and_raise_the_success_rate(deploy: Deploy) -> None:
    """Retries on 5xx (retry.linkerd.io/http, limit 1) re-pick the backend: with v2 failing 20%
    of requests at 50/50, failures drop from ~10% to ~1% (0.1 x 0.1; a retry pinned to the same
    backend would give 2%)."""
    fault = FaultSettings(error_rate=0.2)
    n = 3000
    without = deploy(reference())
    without.set_fault("v2", fault)
    failed_without = sum(r.status != 200 for r in send(without.proxy.port, n, conns=8))
    lo, hi = binomial_bounds(n, 0.1, alpha=1e-6)
    assert lo <= failed_without <= hi

    dep = deploy(reference(retries=RetryPolicy(conditions="5xx", limit=1)))
    dep.set_fault("v2", fault)
    failed = sum(r.status != 200 for r in send(dep.proxy.port, n, conns=8))
    _, hi_1pct = binomial_bounds(n, 0.01, alpha=1e-6)
    assert failed <= hi_1pct and failed / n < 0.02, failed
    assert dep.proxy.counters()["route"]["retries"] > 0


def test_retry_goes_through_the_distributor_again(deploy: Deploy) -> None:
    """"Each retry ... can potentially get sent to a different backend": with v2 failing every
    request, a retried request succeeds whenever the re-pick lands on v1, so 25% fail (50% if
    the retry stayed on v2)."""
    dep = deploy(reference(retries=RetryPolicy(conditions="5xx", limit=1)))
    dep.set_fault("v2", FaultSettings(error_rate=1.0))
    n = 2000
    results = send(dep.proxy.port, n, conns=8)
    failed = sum(r.status != 200 for r in results)
    lo, hi = binomial_bounds(n, 0.25, alpha=1e-6)
    assert lo <= failed <= hi, failed
    assert {r.version for r in results if r.status == 200} == {"v1"}


def test_request_timeout_answers_504(deploy: Deploy) -> None:
    """Request timeouts (timeout.linkerd.io/request, HTTPRoute timeouts.request) end a slow
    request with a proxy-made 504."""
    dep = deploy(reference(request_timeout_s=0.3))
    dep.set_fault("v2", FaultSettings(latency_ms=2000))
    results = send(dep.proxy.port, 64, conns=8)
    slow = [r for r in results if r.status != 200]
    assert slow and {r.status for r in slow} == {504}
    assert all("request timed out" in r.headers["l5d-proxy-error"] and r.version is None for r in slow)
    assert all(r.elapsed_s >= 0.28 for r in slow)
    assert {r.version for r in results if r.status == 200} == {"v1"}
    assert dep.mesh_counters()["v2"].proxy_errors == {"request_timeout": len(slow)}
    dep.restore()  # clears the latency fault
    assert Counter(r.status for r in send(dep.proxy.port, 200, conns=8)) == {200: 200}


# ---------------------------------------------------------------------------------------------
# the backend itself


def test_implements_the_backend_protocols(backend: LocalBackend, deploy: Deploy) -> None:
    dep = deploy(default_spec())
    assert isinstance(backend, Backend) and backend.name == "local"
    assert isinstance(dep, Deployment) and dep.backend_name == "local"
    assert dep.namespace == default_spec().default_namespace
    assert dep.target_url() == f"http://127.0.0.1:{dep.proxy.port}"
    info = dep.describe()
    assert info["replicas"]["v1"][0]["ready"] is True and info["target_url"] == dep.target_url()
    assert dep.id in str(backend.describe())


def test_kill_scale_restore_and_ready_endpoints(deploy: Deploy) -> None:
    spec = default_spec()
    spec = spec.replace(variants=(dataclasses.replace(spec.variants[0], replicas=2), spec.variants[1]))
    dep = deploy(spec)
    assert (dep.ready_endpoints("v1"), dep.ready_endpoints("v2")) == (2, 1)
    assert dep.kill("v1", 1) == 1
    assert dep.ready_endpoints("v1") == 1
    dep.scale("v1", 3)
    assert dep.ready_endpoints("v1") == 3
    old = {r["pid"] for r in dep.describe()["replicas"]["v1"]}
    dep.scale("v1", 1)  # graceful: out of the endpoints, SIGTERM, reaped
    assert dep.ready_endpoints("v1") == 1
    assert len(dep.describe()["replicas"]["v1"]) == 1
    dep.kill("v2")
    dep.restore()
    assert (dep.ready_endpoints("v1"), dep.ready_endpoints("v2")) == (2, 1)
    assert old & {r["pid"] for r in dep.describe()["replicas"]["v1"]}  # kept one, started one
    assert Counter(r.status for r in send(dep.proxy.port, 200, conns=4)) == {200: 200}


def test_unready_fault_removes_the_endpoint(deploy: Deploy) -> None:
    """Readiness feeds Endpoints: an unready replica leaves the split (kubelet readiness probe)."""
    dep = deploy(reference(fail_fast_timeout_s=0.3))
    dep.set_fault("v2", FaultSettings(unready=True))
    deadline = time.monotonic() + 5
    while dep.ready_endpoints("v2") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dep.ready_endpoints("v2") == 0
    dep.restore()
    assert dep.ready_endpoints("v2") == 1


def test_placeholders_in_command_and_env(deploy: Deploy) -> None:
    spec = default_spec()
    v2 = dataclasses.replace(spec.variants[1], env={"MODEL_VERSION": "{version}-on-{port}"})
    dep = deploy(spec.replace(variants=(spec.variants[0], v2)))
    port = dep.describe()["replicas"]["v2"][0]["port"]
    assert f"v2-on-{port}" in {r.version for r in send(dep.proxy.port, 100, conns=4)}


def test_set_fault_needs_an_admin_port(deploy: Deploy) -> None:
    spec = default_spec()
    dep = deploy(spec.replace(variants=(spec.variants[0], dataclasses.replace(spec.variants[1], admin_port=None))))
    with pytest.raises(BackendError, match="admin_port"):
        dep.set_fault("v2", FaultSettings(error_rate=0.5))
    dep.set_fault("v1", FaultSettings(error_rate=0.0))


def test_variant_that_never_gets_ready_cleans_up_everything(backend: LocalBackend, tmp_path: Path) -> None:
    """Setup errors leave nothing: the ready variant's processes and the proxy are killed too."""
    spec = default_spec()
    crash = ("{python}", "-c", "import sys; print('boom'); sys.exit(3)")
    crashing = dataclasses.replace(spec.variants[1], command=crash)
    before = set(backend.deployments)
    live_markers = {d.marker for d in before}

    def strays() -> dict[int, str]:
        mine = f"{owner_token()}:"
        return {pid: m for pid, m in marked_processes().items() if m.startswith(mine) and m not in live_markers}

    with pytest.raises(NotReadyError, match=r"(?s)'v2'.*boom"):
        backend.deploy(spec.replace(variants=(spec.variants[0], crashing)))
    assert set(backend.deployments) == before
    assert strays() == {}  # v1's server and the proxy went down with the failed deploy

    quick = LocalBackend(ready_timeout_s=1.0, teardown_grace_s=0.1)
    never = dataclasses.replace(spec.variants[1], ready_path="/no-such-path")
    with pytest.raises(NotReadyError, match=r"'v2' has 0/1 replicas ready"):
        quick.deploy(spec.replace(variants=(spec.variants[0], never)))
    assert quick.deployments == []
    assert strays() == {}
    quick.close()


def test_teardown_releases_processes_ports_and_files(backend: LocalBackend) -> None:
    dep = backend.deploy(default_spec())
    pids, ports, workdir = dep.pids(), dep.ports(), dep.workdir
    assert processes_with_marker(dep.marker) and workdir.is_dir()
    dep.teardown()
    dep.teardown()  # idempotent
    assert processes_with_marker(dep.marker) == []
    assert all(port_is_free(p) for p in ports), ports
    assert not workdir.exists()
    assert pids
    with pytest.raises(BackendError, match="torn down"):
        dep.kill("v1")


def test_teardown_stops_replicas_at_once_without_their_drain() -> None:
    """Teardown sends SIGINT (stop now), not SIGTERM: the proxy is already gone, so a drain would only
    hold teardown until the SIGKILL (docs/local-backend.md, "Leaving nothing behind"). With a 60 s
    drain configured and a 10 s grace, a SIGTERM would end in SIGKILL (-9); SIGINT ends in exit 0."""
    spec = default_spec()
    spec = spec.replace(variants=tuple(
        dataclasses.replace(v, local_env={**v.local_env, "MODEL_DRAIN_SECONDS": "60"}) for v in spec.variants))
    backend = LocalBackend(teardown_grace_s=10.0)
    try:
        dep = backend.deploy(spec)
        procs = [r.process for reps in dep.supervisor.replicas.values() for r in reps]
        assert len(procs) == 2
        dep.teardown()
        assert [p.returncode for p in procs] == [0, 0]
        assert processes_with_marker(dep.marker) == []
    finally:
        backend.close()


def test_prestarted_load_serves_the_first_matching_run_and_never_outlives_the_backend() -> None:
    """``prestart_load`` starts Locust before ``deploy`` (the start-ups overlap); the deployment's
    first load run that launches the same way takes it, and an unused one goes with the backend."""
    from pytest_abtraffic._load import LoadPlan

    backend = LocalBackend(teardown_grace_s=0.2)
    try:
        plan = LoadPlan(users=2, max_requests=200, duration_s=30)
        backend.prestart_load(plan)
        dep = backend.deploy(default_spec())
        warm = dep.warm_load
        assert warm is not None and warm.proc is not None
        result = dep.run_load(plan)
        assert warm.used and dep.warm_load is None
        assert result.stop_reason == "budget" and set(result.counts()) == {"v1", "v2"}
        assert warm.proc.poll() is not None
        backend.prestart_load(plan)  # never deployed for: closed with the backend
        unused = backend._warm
        assert unused is not None and unused.proc is not None
    finally:
        backend.close()
    assert unused.proc.poll() is not None and not unused.workdir.exists()
    assert processes_with_marker(dep.marker) == []


def test_variant_with_zero_replicas_is_not_a_missing_service(deploy: Deploy) -> None:
    """replicas == 0 is a Service without endpoints (fail-fast, then skipped), not a missing one."""
    spec = reference(fail_fast_timeout_s=0.3)
    spec = spec.replace(variants=(spec.variants[0], dataclasses.replace(spec.variants[1], replicas=0)))
    dep = deploy(spec)
    send(dep.proxy.port, 100_000, conns=4, duration_s=0.6)
    mesh = dep.mesh_counters()
    assert "service_not_found" not in mesh["v2"].proxy_errors
    assert mesh["v2"].proxy_errors.get("fail_fast", 0) >= 1
    assert Counter(r.status for r in send(dep.proxy.port, 200, conns=4)) == {200: 200}

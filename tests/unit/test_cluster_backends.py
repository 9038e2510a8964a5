"""The cluster backends end to end against an in-memory API (no cluster): deploy, load through the
meshed Job (records and the proxy's counters read back from its log), chaos, restore, teardown."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from _fake_kube import FakeKube, linkerd_objects
from test_prereq import Factory, write_kubeconfig

from pytest_abtraffic._backend import Backend, Deployment, FaultSettings
from pytest_abtraffic._cluster import ClusterSettings, _deployment
from pytest_abtraffic._cluster._existing import ExistingClusterBackend
from pytest_abtraffic._cluster._jobentry import METRICS_BEGIN, METRICS_END, RECORDS_READY
from pytest_abtraffic._cluster._plan import RUN_LABEL
from pytest_abtraffic._errors import BackendError, LoadError, NotReadyError, UsageError
from pytest_abtraffic._load import LoadPlan, LoadResult, LoadSnapshot, RequestRecord
from pytest_abtraffic._load.incluster import records_block
from pytest_abtraffic._spec import default_spec, reference_variant

NS = "abt-unit"


def job_log(counts: dict[str, int], *, mesh: dict[str, int] | None = None, error: str | None = None) -> str:
    records = []
    t = 0.0
    for i in range(max(counts.values())):
        for version, n in counts.items():
            if i < n:
                t += 0.01
                records.append(RequestRecord(t, version, 200, 3.0, f"u{i % 4}"))
    result = LoadResult(records=tuple(records), duration_s=t, stopped_early=False, stop_reason="budget")
    mesh = counts if mesh is None else mesh
    metrics = "\n".join(
        f'outbound_http_route_backend_response_statuses_total{{backend_kind="Service",backend_namespace="{NS}",'
        f'backend_name="ai-model-service-{v}",http_status="200",error=""}} {n}' for v, n in mesh.items())
    lines = ["abtraffic: locust started",
             "abtraffic: 1.0s 10 requests (10/s) ok={'v1': 5, 'v2': 5} failures=0",
             # The records go to a file (read back by exec, see FakeKube.exec_stream), not to this log.
             records_block(None, error=error) if error else records_block(result),
             f"{RECORDS_READY} /tmp/abtraffic-records.jsonl.gz (1234 bytes)",
             METRICS_BEGIN, metrics, METRICS_END]
    return "\n".join(lines) + "\n"


@pytest.fixture
def cluster(tmp_path: Path) -> tuple[FakeKube, Path]:
    fake = FakeKube(linkerd_objects(smi=True), job_log=lambda pod: job_log({"v1": 150, "v2": 50}))
    return fake, write_kubeconfig(tmp_path / "kubeconfig", ["dev"])


# The reference model image as a user pushed it: an existing cluster cannot pull the unpublished one.
PUSHED = "registry.example/ai-model:0.1.0"


def make(fake: FakeKube, config: Path, tmp_path: Path, **changes: Any) -> ExistingClusterBackend:
    changes.setdefault("model_image", PUSHED)
    settings = ClusterSettings(kubeconfig=str(config), context="dev", report_dir=str(tmp_path / "report"),
                               ready_timeout_s=5.0, **changes)
    return ExistingClusterBackend(settings, default_spec(), api_factory=Factory(fake), policy_query=fake.policy_json)


def test_protocols(cluster: tuple[FakeKube, Path], tmp_path: Path) -> None:
    fake, config = cluster
    backend = make(fake, config, tmp_path)
    assert isinstance(backend, Backend)
    deployment = backend.deploy(default_spec(), namespace=NS)
    assert isinstance(deployment, Deployment)
    backend.close()


@pytest.mark.parametrize("split_api", ["httproute", "smi-v1alpha1", "smi-v1alpha2"])
def test_deploy_checks_first_then_writes_namespace_then_workload(cluster: tuple[FakeKube, Path], tmp_path: Path,
                                                                 split_api: str) -> None:
    fake, config = cluster
    backend = make(fake, config, tmp_path)
    spec = default_spec(split_api=split_api)
    deployment = backend.deploy(spec, namespace=NS)
    writes = fake.kinds_written()
    assert writes[0] == f"apply None/{NS}"  # the Namespace first
    first_write = fake.calls.index(fake.writes[0])
    reads = [c for c in fake.calls[:first_write] if c[0] == "get"]
    assert ("get", "Namespace", None, NS) in reads  # checked absent before creating it
    assert ("get", "ConfigMap", "linkerd", "linkerd-config") in reads
    ns = fake.objects[("Namespace", None, NS)]
    assert ns["metadata"]["labels"][RUN_LABEL] == backend.run_id
    assert deployment.target_url() == f"http://ai-model-service.{NS}.svc.cluster.local:80"
    assert deployment.ready_endpoints("v1") == 1 and deployment.ready_endpoints("v2") == 1
    backend.close()
    assert ("Namespace", None, NS) not in fake.objects
    assert fake.writes[-1][:4] == ("delete", "Namespace", None, NS)


def test_load_runs_in_a_meshed_job_and_is_cross_checked(cluster: tuple[FakeKube, Path], tmp_path: Path) -> None:
    fake, config = cluster
    backend = make(fake, config, tmp_path)
    deployment = backend.deploy(default_spec(), namespace=NS)
    result = deployment.run_load(LoadPlan(max_requests=200, duration_s=10))
    assert result.counts() == {"v1": 150, "v2": 50}
    check = (result.locust_stats or {})["abtraffic_mesh_check"]
    assert check["ok"] and check["source"] == "route-backend"
    assert deployment.mesh_counters()["v1"].responses_by_status == {200: 150}
    assert not any(k in ("Job", "ConfigMap") for (k, ns, _) in fake.objects if ns == NS)  # deleted after reading
    applied = [c for c in fake.calls if c[0] == "apply" and c[1] == "Job"]
    assert applied == [("apply", "Job", NS, "abtraffic-load-1")]
    assert [c for c in fake.calls if c[0] == "delete" and c[1] in ("Job", "ConfigMap")] != []
    # A second run accumulates the mesh counters.
    deployment.run_load(LoadPlan(max_requests=200, duration_s=10))
    assert deployment.mesh_counters()["v2"].responses_by_status == {200: 100}
    backend.close()


def test_mesh_disagreement_is_reported(tmp_path: Path) -> None:
    fake = FakeKube(linkerd_objects(), job_log=lambda pod: job_log({"v1": 150, "v2": 50}, mesh={"v1": 100, "v2": 100}))
    backend = make(fake, write_kubeconfig(tmp_path / "k", ["dev"]), tmp_path)
    deployment = backend.deploy(default_spec(), namespace=NS)
    result = deployment.run_load(LoadPlan(max_requests=200))
    check = (result.locust_stats or {})["abtraffic_mesh_check"]
    assert not check["ok"]
    assert "the app saw 150 responses from it, the client proxy 100" in check["problems"][0]
    assert deployment.describe()["mesh_checks"][0]["ok"] is False
    backend.close()


def test_unmeshed_load_pod_is_refused(tmp_path: Path) -> None:
    fake = FakeKube(linkerd_objects(), job_log=lambda pod: job_log({"v1": 1, "v2": 1}), pods_meshed=False)
    backend = make(fake, write_kubeconfig(tmp_path / "k", ["dev"]), tmp_path)
    deployment = backend.deploy(default_spec(), namespace=NS)
    with pytest.raises(BackendError, match="not injected with the Linkerd proxy"):
        deployment.run_load(LoadPlan(max_requests=2))
    bundles = list((tmp_path / "report" / "diagnostics").iterdir())
    assert len(bundles) == 1
    assert {p.name for p in bundles[0].iterdir()} >= {"reason.txt", "manifests.yaml", "events.txt", "pods.txt"}
    backend.close()


def test_failed_load_run_says_why(tmp_path: Path) -> None:
    fake = FakeKube(linkerd_objects(), job_log=lambda pod: job_log({"v1": 1}, error="locust exited 2"))
    backend = make(fake, write_kubeconfig(tmp_path / "k", ["dev"]), tmp_path)
    deployment = backend.deploy(default_spec(), namespace=NS)
    with pytest.raises(LoadError, match="locust exited 2"):
        deployment.run_load(LoadPlan(max_requests=2))
    backend.close()


class StopAt:
    """Asks to stop once ``n`` requests were seen (like the sequential test's verdict)."""

    stop_reason = "verdict"

    def __init__(self, n: int) -> None:
        self.n = n
        self.started = 0
        self.seen: list[int] = []

    def on_start(self) -> None:
        self.started += 1

    def on_progress(self, snapshot: LoadSnapshot, records: Sequence[RequestRecord]) -> bool:
        self.seen.append(len(records))
        return len(records) >= self.n


def test_observer_is_fed_live_then_replayed_and_the_result_cut_where_it_stopped(
        cluster: tuple[FakeKube, Path], tmp_path: Path) -> None:
    fake, config = cluster
    backend = make(fake, config, tmp_path)
    deployment = backend.deploy(default_spec(), namespace=NS)
    observer = StopAt(60)
    result = deployment.run_load(LoadPlan(max_requests=200, progress_interval_s=0.1), observer)
    assert observer.started == 1
    assert observer.seen[0] == 0  # the live progress line carries no records
    assert result.stopped_early and result.stop_reason == "verdict"
    assert 60 <= result.requests < 200
    notes = (result.locust_stats or {})["abtraffic_in_cluster"]
    assert notes["observer_replayed"] and notes["records_dropped_after_stop"] == 200 - result.requests
    assert 0.0 <= notes["time_shift_s"] < 10
    # The mesh cross-check uses every request that was sent.
    assert (result.locust_stats or {})["abtraffic_mesh_check"]["ok"]
    backend.close()


def test_chaos_needs_allow_chaos_on_existing(cluster: tuple[FakeKube, Path], tmp_path: Path) -> None:
    fake, config = cluster
    backend = make(fake, config, tmp_path)
    deployment = backend.deploy(default_spec(), namespace=NS)
    before = len(fake.writes)
    for action in (lambda: deployment.kill("v2"), lambda: deployment.scale("v2", 0),
                   lambda: deployment.set_fault("v2", FaultSettings(error_rate=1.0)),
                   lambda: deployment.set_weights({"v1": 1, "v2": 0})):
        with pytest.raises(UsageError, match="allow_chaos"):
            action()
    assert len(fake.writes) == before
    deployment.restore()  # nothing changed: nothing to do, no error
    backend.close()


def test_chaos_primitives_and_restore(cluster: tuple[FakeKube, Path], tmp_path: Path) -> None:
    fake, config = cluster
    backend = make(fake, config, tmp_path, allow_chaos=True)
    spec = default_spec(variants=(dataclasses.replace(reference_variant("v1", 50), replicas=3),
                                  reference_variant("v2", 50)))
    deployment = backend.deploy(spec, namespace=NS)
    assert deployment.ready_endpoints("v1") == 3

    # kill one of three: scale to 2 first, then delete the pod the ReplicaSet picked, no grace period.
    assert deployment.kill("v1", 1) == 1
    patches = [c for c in fake.calls if c[0] == "patch"]
    assert patches[-1][4] == {"spec": {"replicas": 2}}
    deletes = [c for c in fake.calls if c[0] == "delete" and c[1] == "Pod"]
    assert deletes == [("delete", "Pod", NS, "ai-model-v1-pod2", 0)]
    assert deployment.ready_endpoints("v1") == 2

    # kill all of v2: scaled to 0 so they stay down.
    assert deployment.kill("v2") == 1
    assert fake.objects[("Deployment", NS, "ai-model-v2")]["spec"]["replicas"] == 0
    assert deployment.ready_endpoints("v2") == 0

    deployment.set_fault("v1", FaultSettings(error_rate=0.5, error_status=503))
    puts = [argv for _, argv in fake.exec_calls if argv[-1] == "PUT"]
    assert len(puts) == 2 and puts[0][-3] == "http://127.0.0.1:9901/faults"
    assert puts[0][-2] == '{"error_rate": 0.5, "error_status": 503}'

    deployment.set_weights({"v1": 90, "v2": 10})
    route = fake.objects[("HTTPRoute", NS, "ai-model-route")]
    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [90, 10]
    assert deployment.spec.exact_weights()["v1"] == 90

    deployment.restore()
    route = fake.objects[("HTTPRoute", NS, "ai-model-route")]
    assert [b["weight"] for b in route["spec"]["rules"][0]["backendRefs"]] == [50, 50]
    assert fake.objects[("Deployment", NS, "ai-model-v1")]["spec"]["replicas"] == 3
    assert fake.objects[("Deployment", NS, "ai-model-v2")]["spec"]["replicas"] == 1
    resets = [argv for _, argv in fake.exec_calls if argv[-1] == "POST"]
    assert resets and all(a[-3].endswith("/faults/reset") for a in resets)
    assert deployment.ready_endpoints("v2") == 1
    no_admin = default_spec(variants=tuple(dataclasses.replace(v, admin_port=None) for v in spec.variants))
    d2 = backend.deploy(no_admin, namespace="abt-b")
    with pytest.raises(UsageError, match="admin_port"):
        d2.set_fault("v1", FaultSettings(error_rate=1.0))
    backend.close()
    assert not any(k == "Namespace" and n in (NS, "abt-b") for (k, _, n) in fake.objects)


def test_smi_set_weights_waits_for_the_service_profile(cluster: tuple[FakeKube, Path], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    fake, config = cluster
    monkeypatch.setattr(_deployment, "CHAOS_TIMEOUT_S", 0.0)
    backend = make(fake, config, tmp_path, allow_chaos=True)
    deployment = backend.deploy(default_spec(split_api="smi-v1alpha1"), namespace=NS)
    deployment.set_weights({"v1": 9, "v2": 1})
    profile = fake.objects[("ServiceProfile", NS, f"ai-model-service.{NS}.svc.cluster.local")]
    assert [d["weight"] for d in profile["spec"]["dstOverrides"]] == ["900m", "100m"]
    # An adaptor that never catches up makes set_weights fail with what is not ready.
    fake.auto_ready = False
    with pytest.raises(NotReadyError, match="do not match the TrafficSplit"):
        deployment.set_weights({"v1": 1, "v2": 1})
    backend.close()


def test_port_forward_method_is_refused(cluster: tuple[FakeKube, Path], tmp_path: Path) -> None:
    fake, config = cluster
    backend = make(fake, config, tmp_path)
    deployment = backend.deploy(default_spec(), namespace=NS)
    with pytest.raises(BackendError, match="linkerd2#2352"):
        deployment.port_forward()  # type: ignore[attr-defined]
    backend.close()


def test_a_refollowed_log_stream_is_not_replayed_to_the_observer() -> None:
    from pytest_abtraffic._cluster._deployment import _LiveObserver

    class Recorder(StopAt):
        def __init__(self) -> None:
            super().__init__(10**9)
            self.elapsed: list[float] = []

        def on_progress(self, snapshot: LoadSnapshot, records: Sequence[RequestRecord]) -> bool:
            self.elapsed.append(snapshot.elapsed_s)
            return False

    lines = ["2030-01-01T00:00:00.000000001Z abtraffic: locust started",
             "2030-01-01T00:00:05.0Z abtraffic: 5.0s 50 requests (10/s) ok={'v1': 25, 'v2': 25} failures=0",
             "2030-01-01T00:00:10.0Z abtraffic: 10.0s 100 requests (10/s) ok={'v1': 50, 'v2': 50} failures=0"]
    observer = Recorder()
    live = _LiveObserver(observer)
    live.new_stream()
    for line in lines[:2]:
        live.on_line(line)
    live.new_stream()  # the stream dropped; the new one starts from the first line again
    for line in lines:
        live.on_line(line)
    assert observer.started == 1
    assert observer.elapsed == [5.0, 10.0]
    assert live.shift_s == 0.0  # a timestamp in the future is not a plausible clock shift

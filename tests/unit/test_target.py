"""A live split verified read-only (``verify --backend existing --target NS/SVC``) against the recording
fake API: the split is read, the load runs from the kit's own namespace, and no run (pass, fail, raise,
interrupt, SIGTERM) writes outside that namespace. Chaos is refused without ``--allow-chaos``; with it,
every changed object is restored and read back.

Route applicability follows linkerd-facts.md ("A route in the Service's own namespace applies to every
client; a route in another namespace applies only to clients in that namespace", from the Linkerd docs
on HTTPRoute / Gateway API mesh routing).
"""

from __future__ import annotations

import copy
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from _fake_kube import FakeKube, linkerd_objects
from test_cluster_backends import NS as UNIT_NS
from test_cluster_backends import job_log
from test_prereq import Factory, write_kubeconfig

from pytest_abtraffic import _cli
from pytest_abtraffic._cluster import ClusterSettings
from pytest_abtraffic._cluster import _existing as existing_module
from pytest_abtraffic._cluster._existing import ExistingClusterBackend
from pytest_abtraffic._cluster._jobentry import METRICS_BEGIN, METRICS_END
from pytest_abtraffic._cluster._target import LiveTargetExperiment, TargetDeployment, read_target
from pytest_abtraffic._errors import UsageError
from pytest_abtraffic._load import LoadResult, RequestRecord
from pytest_abtraffic._load.incluster import records_block

DATA = Path(__file__).resolve().parents[1] / "data"
TARGET_NS = "staging"


def staging_objects(*, weights: tuple[str, str] = ("900m", "100m")) -> list[dict[str, Any]]:
    objects = [dict(d) for d in yaml.safe_load_all((DATA / "mended_starting_point" / "ai-model.yaml").read_text())
               if d]
    for obj in objects:
        obj["metadata"]["namespace"] = TARGET_NS
        obj["metadata"]["resourceVersion"] = "42"
        if obj["kind"] == "Deployment":
            n = obj["spec"]["replicas"]
            obj["status"] = {"replicas": n, "availableReplicas": n, "updatedReplicas": n}
        if obj["kind"] == "TrafficSplit":
            obj["spec"]["backends"][0]["weight"], obj["spec"]["backends"][1]["weight"] = weights
    return objects


def consumer_route() -> dict[str, Any]:
    return {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
            "metadata": {"name": "frontend-override", "namespace": "frontend"},
            "spec": {"parentRefs": [{"name": "ai-model-service", "namespace": TARGET_NS, "kind": "Service",
                                     "group": "core", "port": 80}],
                     "rules": [{"backendRefs": [{"name": "ai-model-service-v1", "namespace": TARGET_NS,
                                                 "port": 80}]}]}}


def mixed_log(every: int, n: int = 10_000) -> str:
    """A load pod's log: v2 answers every ``every``-th request (10 -> 90/10), spread over the run, and the
    client proxy's counters for the backends in the target namespace."""
    records = tuple(RequestRecord(0.001 * i, "v2" if i % every == every - 1 else "v1", 200, 3.0, f"u{i % 4}")
                    for i in range(n))
    result = LoadResult(records=records, duration_s=0.001 * n, stopped_early=False, stop_reason="budget")
    v2 = sum(1 for r in records if r.version == "v2")
    metrics = "\n".join(
        f'outbound_http_route_backend_response_statuses_total{{backend_kind="Service",backend_namespace="{TARGET_NS}",'
        f'backend_name="ai-model-service-{v}",http_status="200",error=""}} {count}'
        for v, count in (("v1", n - v2), ("v2", v2)))
    return "\n".join(["abtraffic: locust started", records_block(result), METRICS_BEGIN, metrics, METRICS_END]) + "\n"


def cluster(every: int = 10, *, extra: list[dict[str, Any]] | None = None, log: Any = None) -> FakeKube:
    fake = FakeKube([*linkerd_objects(smi=True), *staging_objects(), consumer_route(), *(extra or [])],
                    job_log=log or (lambda pod: mixed_log(every)))
    assert UNIT_NS != TARGET_NS
    return fake


def snapshot(fake: FakeKube) -> dict[Any, Any]:
    return {k: copy.deepcopy(v) for k, v in fake.objects.items() if k[1] in (TARGET_NS, "frontend")}


def foreign_writes(fake: FakeKube) -> list[tuple[Any, ...]]:
    """Writes outside the kit's namespace (the first Namespace the kit applied)."""
    kit = next(c[3] for c in fake.calls if c[0] == "apply" and c[1] == "Namespace")
    return [c for c in fake.writes if not (c[2] == kit or (c[1] == "Namespace" and c[3] == kit))]


def kit_namespace(fake: FakeKube) -> str:
    return str(next(c[3] for c in fake.calls if c[0] == "apply" and c[1] == "Namespace"))


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", ["staging-ctx"])


def run_cli(fake: FakeKube, kubeconfig: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> int:
    monkeypatch.setattr(existing_module.Kube, "from_kubeconfig", classmethod(lambda cls, *a, **k: fake))
    return _cli.main(["verify", "--backend", "existing", "--context", "staging-ctx", "--kubeconfig", str(kubeconfig),
                      "--target", f"{TARGET_NS}/ai-model-service", "--requests", "10000", "--quiet", *extra])


# -- reading the live split -------------------------------------------------------------------------


def test_read_target_takes_weights_backends_and_route_applicability() -> None:
    fake = cluster()
    spec = read_target(fake, f"{TARGET_NS}/ai-model-service")
    assert isinstance(spec, LiveTargetExperiment)
    assert spec.target_namespace == TARGET_NS and spec.split_kind == "TrafficSplit"
    assert spec.shares() == pytest.approx({"v1": 0.9, "v2": 0.1})
    assert [spec.deployment_name(v) for v in spec.variant_names] == ["ai-model-v1", "ai-model-v2"]
    notes = {(n.kind, n.namespace, n.name): n.applies for n in spec.route_notes}
    assert notes == {("TrafficSplit", TARGET_NS, "ai-model-split"): True,
                     ("HTTPRoute", "frontend", "frontend-override"): False}
    assert fake.writes == []  # reading is get and list only


def test_producer_httproute_applies_to_the_load_pod() -> None:
    route = consumer_route()
    route["metadata"]["namespace"] = TARGET_NS
    route["spec"]["rules"][0]["backendRefs"] = [
        {"name": "ai-model-service-v1", "port": 80, "weight": 75}, {"name": "ai-model-service-v2", "port": 80,
                                                                      "weight": 25}]
    objects = [o for o in staging_objects() if o["kind"] != "TrafficSplit"]
    fake = FakeKube([*linkerd_objects(), *objects, route])
    spec = read_target(fake, f"{TARGET_NS}/ai-model-service")
    assert spec.split_kind == "HTTPRoute" and spec.shares() == pytest.approx({"v1": 0.75, "v2": 0.25})
    assert [str(n) for n in spec.route_notes] == [
        f"HTTPRoute {TARGET_NS}/frontend-override: applies to the load pod (a route in the Service's own namespace "
        "applies to every client)"]


def test_no_split_for_the_apex_says_what_was_found() -> None:
    objects = [o for o in staging_objects() if o["kind"] != "TrafficSplit"]
    other = {"apiVersion": "split.smi-spec.io/v1alpha1", "kind": "TrafficSplit",
             "metadata": {"name": "other-split", "namespace": TARGET_NS},
             "spec": {"service": "other-service", "backends": []}}
    fake = FakeKube([*linkerd_objects(), *objects, other, consumer_route()])
    with pytest.raises(UsageError) as err:
        read_target(fake, f"{TARGET_NS}/ai-model-service")
    message = str(err.value)
    assert message.startswith(f"no TrafficSplit or HTTPRoute has apex ai-model-service in namespace {TARGET_NS}; "
                              "found: TrafficSplit/other-split (apex other-service)")
    assert "frontend/frontend-override: does not apply" in message


def test_two_splits_for_one_apex_backend_without_deployment_and_missing_service() -> None:
    route = consumer_route()
    route["metadata"]["namespace"] = TARGET_NS
    fake = FakeKube([*linkerd_objects(), *staging_objects(), route])
    with pytest.raises(UsageError, match="2 split objects have apex staging/ai-model-service: "
                       "TrafficSplit/ai-model-split, HTTPRoute/frontend-override"):
        read_target(fake, f"{TARGET_NS}/ai-model-service")
    no_v2 = [o for o in staging_objects() if o["metadata"]["name"] != "ai-model-v2"]
    with pytest.raises(UsageError, match="no Deployment behind backend Service 'ai-model-service-v2'"):
        read_target(FakeKube([*linkerd_objects(), *no_v2]), f"{TARGET_NS}/ai-model-service")
    with pytest.raises(UsageError, match="Service 'nope' not found in namespace 'staging'"):
        read_target(FakeKube(staging_objects()), f"{TARGET_NS}/nope")
    with pytest.raises(UsageError, match="expected NAMESPACE/SERVICE"):
        read_target(FakeKube(), "ai-model-service")


# -- runs: no write outside the kit's namespace ----------------------------------------------------


def test_passing_run_writes_only_the_kits_namespace(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    fake = cluster()
    before = snapshot(fake)
    assert run_cli(fake, kubeconfig, monkeypatch) == 0
    out, err = capsys.readouterr()
    assert "live-split [PASS]" in out or "[PASS]" in out, out
    assert "frontend/frontend-override: does not apply to the load pod" in err
    assert foreign_writes(fake) == []
    assert snapshot(fake) == before
    kit = kit_namespace(fake)
    job = next(c for c in fake.calls if c[0] == "apply" and c[1] == "Job")
    assert job[2] == kit
    assert ("Namespace", None, kit) not in fake.objects  # deleted at the end


def test_job_is_aimed_at_the_apex_fqdn(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = cluster()
    applied: list[dict[str, Any]] = []
    real_apply = fake.apply

    def spy(obj: Any) -> Any:
        applied.append(copy.deepcopy(dict(obj)))
        return real_apply(obj)

    monkeypatch.setattr(fake, "apply", spy)
    assert run_cli(fake, kubeconfig, monkeypatch) == 0
    job = next(o for o in applied if o["kind"] == "Job")
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--host") + 1] == f"http://ai-model-service.{TARGET_NS}.svc.cluster.local:80"
    assert job["spec"]["template"]["metadata"]["annotations"]["linkerd.io/inject"] == "enabled"


def test_failing_run_writes_only_the_kits_namespace(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    fake = cluster(2)
    before = snapshot(fake)
    assert run_cli(fake, kubeconfig, monkeypatch) == 1
    assert "[FAIL: " in capsys.readouterr().out
    assert foreign_writes(fake) == [] and snapshot(fake) == before


def test_expect_overrides_the_weights_read(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = cluster(2)
    assert run_cli(fake, kubeconfig, monkeypatch, "--expect", "v1=50,v2=50") == 0
    assert foreign_writes(fake) == []


def test_raising_run_writes_only_the_kits_namespace(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = cluster(log=lambda pod: job_log({"v1": 1}, error="locust crashed"))
    before = snapshot(fake)
    assert run_cli(fake, kubeconfig, monkeypatch) == 3
    assert foreign_writes(fake) == [] and snapshot(fake) == before
    assert not any(k[0] == "Namespace" and k[2].startswith("abt-") for k in fake.objects)


@pytest.mark.parametrize("how", ["KeyboardInterrupt", "SIGTERM"])
def test_interrupted_run_writes_only_the_kits_namespace(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch,
                                                        how: str) -> None:
    fake = cluster()
    before = snapshot(fake)

    def interrupted(*args: Any, **kwargs: Any) -> None:
        if how == "SIGTERM":
            os.kill(os.getpid(), signal.SIGTERM)  # the CLI turns it into KeyboardInterrupt
        raise KeyboardInterrupt

    monkeypatch.setattr(fake, "follow_pod_log", interrupted)
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert run_cli(fake, kubeconfig, monkeypatch) == 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert foreign_writes(fake) == [] and snapshot(fake) == before
    assert not any(k[0] == "Namespace" and k[2].startswith("abt-") for k in fake.objects)


# -- chaos on a live target ------------------------------------------------------------------------


def _backend(fake: FakeKube, kubeconfig: Path, tmp_path: Path, *, allow_chaos: bool) -> ExistingClusterBackend:
    settings = ClusterSettings(kubeconfig=str(kubeconfig), context="staging-ctx", report_dir=str(tmp_path / "r"),
                               ready_timeout_s=5.0, allow_chaos=allow_chaos)
    return ExistingClusterBackend(settings, None, api_factory=Factory(fake))


def test_chaos_is_refused_without_allow_chaos(kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    fake = cluster()
    backend = _backend(fake, kubeconfig, tmp_path, allow_chaos=False)
    deployment = backend.deploy(read_target(fake, f"{TARGET_NS}/ai-model-service"))
    assert isinstance(deployment, TargetDeployment)
    with pytest.raises(UsageError, match="read-only unless --allow-chaos"):
        deployment.scale("v2", 0)
    with pytest.raises(UsageError, match="read-only unless --allow-chaos"):
        deployment.set_weights({"v1": "1", "v2": "0"})
    backend.close()
    assert foreign_writes(fake) == []
    fake = cluster()
    assert run_cli(fake, kubeconfig, monkeypatch, "--fallback", "scale-zero:v2") == 2
    assert "add --allow-chaos" in capsys.readouterr().err
    assert fake.writes == []


def test_with_allow_chaos_every_changed_object_is_restored_and_read_back(kubeconfig: Path, tmp_path: Path) -> None:
    fake = cluster()
    before = snapshot(fake)
    backend = _backend(fake, kubeconfig, tmp_path, allow_chaos=True)
    deployment = backend.deploy(read_target(fake, f"{TARGET_NS}/ai-model-service"))
    assert isinstance(deployment, TargetDeployment)
    with pytest.raises(UsageError, match="only scale"):
        deployment.kill("v2")
    deployment.scale("v2", 0)
    deployment.set_weights({"v1": "1", "v2": "0"})
    assert fake.objects[("Deployment", TARGET_NS, "ai-model-v2")]["spec"]["replicas"] == 0
    assert [b["weight"] for b in fake.objects[("TrafficSplit", TARGET_NS, "ai-model-split")]["spec"]["backends"]] \
        == ["1", "0"]
    reads_before_close = len(fake.calls)
    backend.close()
    assert sorted(deployment.restored) == [f"Deployment {TARGET_NS}/ai-model-v2",
                                           f"TrafficSplit {TARGET_NS}/ai-model-split"]
    after = fake.calls[reads_before_close:]
    for kind, name in (("Deployment", "ai-model-v2"), ("TrafficSplit", "ai-model-split")):
        patch_at = next(i for i, c in enumerate(after) if c[0] == "patch" and c[1] == kind and c[3] == name)
        assert ("get", kind, TARGET_NS, name) in after[patch_at:]  # read back after the restore
    restored = snapshot(fake)
    for key, obj in before.items():
        assert restored[key]["spec"] == obj["spec"], key
    # The only writes outside the kit's namespace are the changes and their restores, on those two objects.
    assert {(c[0], c[1], c[3]) for c in foreign_writes(fake)} == {("patch", "Deployment", "ai-model-v2"),
                                                                  ("patch", "TrafficSplit", "ai-model-split")}


def test_a_restore_that_does_not_read_back_is_an_error(kubeconfig: Path, tmp_path: Path) -> None:
    fake = cluster()
    backend = _backend(fake, kubeconfig, tmp_path, allow_chaos=True)
    deployment = backend.deploy(read_target(fake, f"{TARGET_NS}/ai-model-service"))
    deployment.scale("v1", 3)
    real_patch = fake.patch

    def stuck(api_version: str, kind: str, name: str, namespace: str | None, body: Any) -> Any:
        if body == {"spec": {"replicas": 1}}:  # an admission webhook that ignores the restore
            return fake.objects[(kind, namespace, name)]
        return real_patch(api_version, kind, name, namespace, body)

    fake.patch = stuck  # type: ignore[method-assign]
    with pytest.raises(Exception, match="restoring the live target failed; fix these by hand: Deployment "
                       "staging/ai-model-v1: read back"):
        backend.close()
    assert not any(k[0] == "Namespace" and k[2].startswith("abt-") for k in fake.objects)  # kit ns still deleted


def test_plan_target_prints_the_read_only_steps(capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["plan", "--backend", "existing", "--context", "staging-ctx", "--target",
                      f"{TARGET_NS}/ai-model-service"]) == 0
    out = capsys.readouterr().out
    assert f"read Service {TARGET_NS}/ai-model-service (get)" in out
    assert "a route in another namespace applies only to clients in that namespace" in out
    assert f"aimed at the apex FQDN http://ai-model-service.{TARGET_NS}.svc.cluster.local" in out
    assert "no write outside" in out
    assert _cli.main(["plan", "--backend", "kind", "--target", "a/b"]) == 2


def test_interrupt_during_chaos_restores_the_target(kubeconfig: Path, tmp_path: Path) -> None:
    """Ctrl-C (or SIGTERM, which the CLI and the local backend turn into KeyboardInterrupt) mid-run: the
    backend's close in the unwinding ``finally`` restores every changed object."""
    from pytest_abtraffic._load import LoadPlan

    fake = cluster()
    before = snapshot(fake)
    backend = _backend(fake, kubeconfig, tmp_path, allow_chaos=True)
    try:
        deployment = backend.deploy(read_target(fake, f"{TARGET_NS}/ai-model-service"))
        deployment.scale("v2", 0)
        deployment.set_weights({"v1": "1", "v2": "0"})

        def interrupted(*args: Any, **kwargs: Any) -> None:
            raise KeyboardInterrupt

        fake.follow_pod_log = interrupted  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            deployment.run_load(LoadPlan.from_spec(deployment.spec, max_requests=100))
    finally:
        backend.close()
    after = snapshot(fake)  # (the fake's ReplicaSet controller made new pods for the restored replicas)
    assert {key: after[key]["spec"] for key in before} == {key: obj["spec"] for key, obj in before.items()}
    assert not any(k[0] == "Namespace" and k[2].startswith("abt-") for k in fake.objects)


def test_with_allow_chaos_sigterm_unwinds_through_the_restore(kubeconfig: Path, tmp_path: Path) -> None:
    """Under pytest (no CLI handler) a SIGTERM must not end the process with the target changed."""
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    fake = cluster()
    before = snapshot(fake)
    backend = _backend(fake, kubeconfig, tmp_path, allow_chaos=True)
    try:
        deployment = backend.deploy(read_target(fake, f"{TARGET_NS}/ai-model-service"))
        deployment.scale("v1", 0)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            signal.pthread_sigmask(signal.SIG_BLOCK, [])  # let the handler run
    finally:
        backend.close()
        signal.signal(signal.SIGTERM, previous)
    after = snapshot(fake)
    assert {key: after[key]["spec"] for key in before} == {key: obj["spec"] for key, obj in before.items()}


def test_bad_targets_exit_2_before_any_write(kubeconfig: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    no_split = FakeKube([*linkerd_objects(smi=True), *[o for o in staging_objects() if o["kind"] != "TrafficSplit"]])
    assert run_cli(no_split, kubeconfig, monkeypatch) == 2
    assert "no TrafficSplit or HTTPRoute has apex ai-model-service in namespace staging" in capsys.readouterr().err
    assert no_split.writes == []
    no_deployment = FakeKube([*linkerd_objects(smi=True),
                              *[o for o in staging_objects() if o["metadata"]["name"] != "ai-model-v1"]])
    assert run_cli(no_deployment, kubeconfig, monkeypatch) == 2
    assert "no Deployment behind backend Service 'ai-model-service-v1'" in capsys.readouterr().err
    assert no_deployment.writes == []
    assert _cli.main(["verify", "--target", "staging/ai-model-service"]) == 2
    assert "needs --backend existing" in capsys.readouterr().err

"""The kind/existing step plans against the facts (linkerd-facts.md, the Linkerd and kind CLIs),
and the executor that runs them."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from _fake_kube import FakeKube
from test_prereq import GOOD_VERSIONS, RecordingRunner, fake_which

from pytest_abtraffic._cluster import ClusterSettings, format_plan, plan
from pytest_abtraffic._cluster._kind import ClusterLease, KindBackend
from pytest_abtraffic._cluster._plan import (
    RUN_LABEL,
    Step,
    StepExecutor,
    image_steps,
    kind_cluster_steps,
    kind_layout,
    marker_steps,
    mesh_steps,
    smi_steps,
)
from pytest_abtraffic._cluster._podcode import LOCUST_IMAGE
from pytest_abtraffic._cluster._settings import GATEWAY_API_URL, KIND_NODE_IMAGE, parse_linkerd_version
from pytest_abtraffic._errors import BackendError, UsageError
from pytest_abtraffic._spec import REFERENCE_IMAGE, default_spec

SMI = default_spec(split_api="smi-v1alpha2")
ROUTE = default_spec()


def idx(steps: Sequence[Step], pred: Any) -> int:
    for i, s in enumerate(steps):
        if pred(s):
            return i
    raise AssertionError("no such step:\n" + format_plan(steps))


def argv_has(*words: str) -> Any:
    return lambda s: s.kind == "command" and all(w in s.argv for w in words)


def cmd(*prefix: str) -> Any:
    return lambda s: s.kind == "command" and tuple(s.argv[: len(prefix)]) == prefix


@pytest.fixture
def settings(tmp_path: Path) -> ClusterSettings:
    return ClusterSettings(work_dir=str(tmp_path / "work"))


def test_kind_smi_plan_order(settings: ClusterSettings) -> None:
    steps = plan("kind", SMI, settings)
    create = idx(steps, cmd("kind", "create", "cluster"))
    first_image = idx(steps, lambda s: s.phase == "images")
    crds = idx(steps, argv_has("install", "--crds"))
    apply_crds = idx(steps, lambda s: s.stdin_from == "linkerd-crds")
    cp = idx(steps, lambda s: s.id == "linkerd-cp")
    apply_cp = idx(steps, lambda s: s.stdin_from == "linkerd-cp")
    established = idx(steps, argv_has("--for=condition=Established"))
    check = idx(steps, argv_has("linkerd", "check"))
    smi = idx(steps, argv_has("smi", "install"))
    smi_apply = idx(steps, lambda s: s.stdin_from == "smi-render")
    smi_check = idx(steps, argv_has("smi", "check"))
    workload = idx(steps, lambda s: s.kind == "apply" and s.phase == "deploy")
    load = idx(steps, lambda s: s.phase == "load")
    teardown = idx(steps, lambda s: s.phase == "teardown")
    delete = idx(steps, cmd("kind", "delete", "cluster"))
    assert create < first_image < crds < apply_crds < established < cp < apply_cp < check
    assert check < smi < smi_apply < smi_check < workload
    assert workload < load < teardown < delete == len(steps) - 1
    # Images are built before they are loaded, and loaded before any workload is applied.
    builds = [i for i, s in enumerate(steps) if cmd("docker", "build")(s)]
    loads = [i for i, s in enumerate(steps) if cmd("kind", "load", "docker-image")(s)]
    assert builds and loads and max(builds) < min(loads) and max(loads) < workload
    assert {steps[i].argv[3] for i in loads} == {REFERENCE_IMAGE, settings.load_image}


def test_every_cluster_command_uses_the_own_kubeconfig(settings: ClusterSettings) -> None:
    layout = kind_layout(settings)
    assert layout.kubeconfig == Path(settings.work_dir or "", "kubeconfig").resolve()
    home_config = (Path.home() / ".kube" / "config").resolve()
    for step in plan("kind", SMI, settings):
        if step.kind != "command" or step.argv[0] not in ("kind", "kubectl", "linkerd"):
            continue
        if step.argv[:2] in (("kind", "version"), ("kind", "load")) or step.phase == "prereq":
            continue  # read-only or node-level: no kubeconfig involved
        assert "--kubeconfig" in step.argv, step.argv
        assert step.argv[step.argv.index("--kubeconfig") + 1] == str(layout.kubeconfig)
        assert str(home_config) not in step.argv
        assert dict(step.env)["KUBECONFIG"] == str(layout.kubeconfig)
        if step.argv[0] in ("kubectl", "linkerd"):
            assert step.argv[step.argv.index("--context") + 1] == f"kind-{layout.name}"


def test_kind_create_pins_config_and_node_image(settings: ClusterSettings) -> None:
    layout = kind_layout(settings)
    (create,) = kind_cluster_steps(layout, settings)
    assert create.argv[:3] == ("kind", "create", "cluster")
    args = dict(zip(create.argv[3::2], create.argv[4::2], strict=False))
    assert args["--name"] == layout.name
    assert args["--image"] == KIND_NODE_IMAGE and "@sha256:" in KIND_NODE_IMAGE
    assert args["--config"].endswith("manifests/kind-cluster.yaml") and Path(args["--config"]).is_file()


def test_linkerd_smi_only_for_smi(settings: ClusterSettings) -> None:
    route = plan("kind", ROUTE, settings)
    assert not any("smi" in s.argv for s in route)
    assert not any(s.phase == "smi" for s in route)
    assert not any(s.argv[:1] == ("linkerd-smi",) for s in route)
    smi = plan("kind", SMI, settings)
    assert any(s.argv[:2] == ("linkerd-smi", "version") for s in smi)
    assert sum(1 for s in smi if s.phase == "smi") == 3


@pytest.mark.parametrize(("version", "explicit"), [
    ("edge-25.4.4", True), ("edge-25.4.1", True), ("edge-25.9.4", True), ("edge-26.6.3", True),
    ("edge-25.3.3", False), ("edge-24.11.8", False), ("stable-2.14.10", False),
])
def test_gateway_api_crds_only_for_versions_that_need_them(tmp_path: Path, version: str, explicit: bool) -> None:
    s = ClusterSettings(linkerd_version=version, work_dir=str(tmp_path))
    assert parse_linkerd_version(version).gateway_api_explicit is explicit
    steps = mesh_steps(kind_layout(s), s)
    crds = next(st for st in steps if st.id == "linkerd-crds")
    assert ("installGatewayAPI=true" in crds.argv) is explicit
    assert not any(st.downloads for st in steps)  # never a download unless opted in


def test_edge_25_3_4_needs_the_gateway_api_crds_installed_first(tmp_path: Path) -> None:
    """linkerd2 edge-25.3.4 ``cli/cmd/install.go`` ``renderCRDs``: with no Gateway API CRDs on the
    cluster it returns "The Gateway API CRDs must be installed prior to installing Linkerd" whatever
    the values say; ``validateFinalValues`` (honouring ``installGatewayAPI=true``) arrives in
    edge-25.4.1; edge-25.3.3 still renders them by default."""
    assert parse_linkerd_version("edge-25.3.4").gateway_api_explicit
    assert not parse_linkerd_version("edge-25.3.4").bundles_gateway_api
    assert parse_linkerd_version("edge-25.4.1").bundles_gateway_api
    with pytest.raises(UsageError, match=r"installed before `linkerd install --crds`.*gateway_api='upstream'"):
        ClusterSettings(linkerd_version="edge-25.3.4", work_dir=str(tmp_path))
    s = ClusterSettings(linkerd_version="edge-25.3.4", gateway_api="upstream", work_dir=str(tmp_path))
    steps = mesh_steps(kind_layout(s), s)
    gw = idx(steps, lambda st: st.downloads == GATEWAY_API_URL)
    crds = idx(steps, lambda st: st.id == "linkerd-crds")
    assert gw < crds and "installGatewayAPI=true" not in steps[crds].argv


@pytest.mark.parametrize("version", ["stable-2.15.0", "stable-2.18.1", "enterprise-2.17.2", "enterprise-2.14.0"])
def test_vendor_only_releases_are_refused_with_what_to_use(version: str) -> None:
    """Only edge releases and open-source stable releases up to 2.14 publish CLI binaries
    (linkerd/linkerd2 GitHub releases); stable-2.15+ and enterprise-* are Buoyant's builds."""
    with pytest.raises(UsageError, match="vendor build") as info:
        parse_linkerd_version(version)
    assert "edge-25.4.4" in str(info.value)
    with pytest.raises(UsageError, match="vendor build"):
        ClusterSettings(linkerd_version=version)
    assert parse_linkerd_version("stable-2.14.10").minor == 14


def test_upstream_gateway_api_is_an_opt_in_download_before_the_crds(tmp_path: Path) -> None:
    s = ClusterSettings(gateway_api="upstream", work_dir=str(tmp_path))
    steps = mesh_steps(kind_layout(s), s)
    gw = idx(steps, lambda st: st.downloads == GATEWAY_API_URL)
    assert steps[gw].argv[-4:] == ("apply", "--server-side", "-f", GATEWAY_API_URL)
    assert "DOWNLOADS" in steps[gw].description
    crds = idx(steps, lambda st: st.id == "linkerd-crds")
    assert gw < crds and "installGatewayAPI=true" not in steps[crds].argv
    assert "downloads at run time: " + GATEWAY_API_URL in format_plan(steps)
    # Older Linkerd installs them itself: no upstream step even when asked.
    old = ClusterSettings(gateway_api="upstream", linkerd_version="stable-2.14.10", work_dir=str(tmp_path))
    assert not any(st.downloads for st in mesh_steps(kind_layout(old), old))


def test_default_plans_download_nothing(settings: ClusterSettings) -> None:
    for spec in (SMI, ROUTE):
        for backend in ("kind", "existing"):
            s = ClusterSettings(work_dir=settings.work_dir, context="dev", model_image="registry.example/m:1.0.0")
            assert not any(st.downloads for st in plan(backend, spec, s))


def test_gateway_v1_routes_need_linkerd_218(tmp_path: Path) -> None:
    old = ClusterSettings(linkerd_version="stable-2.14.10", work_dir=str(tmp_path))
    with pytest.raises(UsageError, match=re.escape("needs Linkerd 2.18")):
        plan("kind", ROUTE, old)
    assert plan("kind", ROUTE.replace(route_group="policy.linkerd.io"), old)


def test_load_job_is_meshed_and_aimed_at_the_apex(settings: ClusterSettings) -> None:
    steps = plan("kind", ROUTE, settings, namespace="abt-x")
    load = next(s for s in steps if s.id == "load-job")
    job = next(o for o in load.objects if o["kind"] == "Job")
    annotations = job["spec"]["template"]["metadata"]["annotations"]
    assert annotations["linkerd.io/inject"] == "enabled"
    assert annotations["config.linkerd.io/proxy-admin-shutdown"] == "enabled"
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--host") + 1] == "http://ai-model-service.abt-x.svc.cluster.local:80"
    assert "port-forward" not in " ".join(command)
    assert load.phase == "load" and steps.index(load) > idx(steps, lambda s: s.id == "split")


def test_existing_plan_checks_first_and_cleans_only_its_namespace() -> None:
    s = ClusterSettings(context="prod", model_image="registry.example/m:1.0.0")
    steps = plan("existing", SMI, s, namespace="abt-y", run_id="r1")
    first_write = idx(steps, lambda st: st.kind in ("apply", "delete", "command"))
    checks = [st.check_for for st in steps[:first_write]]
    assert checks == ["context", "linkerd", "linkerd-smi", "namespace-absent"]
    assert not any(st.kind == "command" for st in steps)  # no kind, docker or CLI on a user's cluster
    ns = steps[first_write].objects[0]
    assert ns["kind"] == "Namespace" and ns["metadata"]["labels"][RUN_LABEL] == "r1"
    last = steps[-1]
    assert last.kind == "delete" and last.objects[0]["kind"] == "Namespace"
    assert last.params["run_id"] == "r1" and "only when it carries" in last.description
    route_checks = [st.check_for for st in plan("existing", ROUTE, s) if st.kind == "check"]
    assert "gateway-api" in route_checks and "linkerd-smi" not in route_checks


def test_existing_plan_needs_a_context() -> None:
    with pytest.raises(UsageError, match="context"):
        plan("existing", ROUTE, ClusterSettings())


def test_cluster_delete_unless_keep(tmp_path: Path) -> None:
    keep = ClusterSettings(keep=True, work_dir=str(tmp_path))
    assert not any(cmd("kind", "delete")(s) for s in plan("kind", ROUTE, keep))
    assert plan("kind", ROUTE, keep)[-1].phase == "teardown"


def test_cluster_name_from_config_and_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", "run-a")
    a1 = kind_layout(ClusterSettings(work_dir=str(tmp_path)))
    a2 = kind_layout(ClusterSettings(work_dir=str(tmp_path)))  # another worker of the same run
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", "run-b")
    b = kind_layout(ClusterSettings(work_dir=str(tmp_path)))
    reuse_b = kind_layout(ClusterSettings(reuse=True, work_dir=str(tmp_path)))
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", "run-c")
    reuse_c = kind_layout(ClusterSettings(reuse=True, work_dir=str(tmp_path)))
    other_linkerd = kind_layout(ClusterSettings(reuse=True, linkerd_version="edge-25.9.4", work_dir=str(tmp_path)))
    assert a1.name == a2.name != b.name
    assert reuse_b.name == reuse_c.name != other_linkerd.name
    for layout in (a1, b, reuse_b, other_linkerd):
        assert layout.name.startswith("abtraffic-") and len(layout.name) <= 50
    assert kind_layout(ClusterSettings(cluster_name="mine", work_dir=str(tmp_path))).name == "mine"
    with pytest.raises(UsageError):
        ClusterSettings(cluster_name="Bad_Name")


def test_kind_backend_never_writes_the_users_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(UsageError, match="never the default one"):
        kind_layout(ClusterSettings(kubeconfig=str(tmp_path / ".kube" / "config")))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "work.yaml"))
    with pytest.raises(UsageError):
        kind_layout(ClusterSettings(kubeconfig=str(tmp_path / "work.yaml")))


def test_format_plan_shows_pipes_and_objects(settings: ClusterSettings) -> None:
    text = format_plan(plan("kind", SMI, settings))
    assert "<output of step" in text and "| kubectl --kubeconfig" in text
    assert "linkerd install --crds --set installGatewayAPI=true" in text
    assert "objects -n abtraffic-ai-model: Deployment/ai-model-v1" in text
    assert "pod annotations: linkerd.io/inject: enabled" in text
    assert text.splitlines()[0] == "# prereq"


# -- executor -------------------------------------------------------------------------------------------


def test_executor_pipes_rendered_output_and_sets_kubeconfig(settings: ClusterSettings) -> None:
    layout = kind_layout(settings)
    seen: list[tuple[list[str], str | None, str | None]] = []

    def runner(argv: list[str], *, timeout: float, input_text: str | None = None, env: Any = None,
               check: bool = True, cwd: str | None = None) -> Any:
        seen.append((argv, input_text, (env or {}).get("KUBECONFIG")))
        from pytest_abtraffic._proc import Completed

        return Completed(tuple(argv), 0, f"rendered by {argv[1]}\n", "")

    StepExecutor(runner=runner).run(mesh_steps(layout, settings))
    kubectl = ["kubectl", "--kubeconfig"]
    assert [a[0][:2] for a in seen] == [["linkerd", "install"], kubectl, kubectl, ["linkerd", "install"], kubectl,
                                        ["linkerd", "check"]]
    assert "--for=condition=Established" in seen[2][0]
    assert seen[1][1] == "rendered by install\n"  # kubectl apply -f - got linkerd's output on stdin
    assert all(kc == str(layout.kubeconfig) for _, _, kc in seen)


def test_executor_skips_loading_an_image_that_is_not_local(settings: ClusterSettings) -> None:
    spec = default_spec(variants=(default_spec().variants[0],
                                  default_spec().variants[1].__class__(name="v2", weight=50, image="registry/x:1")))
    layout = kind_layout(settings)
    steps = [s for s in image_steps(layout, spec, ClusterSettings(build_images=False)) if s.when]
    assert {s.params["image"] for s in steps} == {REFERENCE_IMAGE, "registry/x:1", LOCUST_IMAGE}
    runner = RecordingRunner()

    def inspect_fails(argv: list[str], **kw: Any) -> Any:
        if argv[:3] == ["docker", "image", "inspect"]:
            from pytest_abtraffic._proc import Completed

            runner.calls.append(argv)
            return Completed(tuple(argv), 1, "", "No such image")
        return runner(argv, **kw)

    StepExecutor(runner=inspect_fails).run(steps)
    assert not any(c[:2] == ["kind", "load"] for c in runner.calls)


def test_executor_refuses_to_delete_a_namespace_without_its_run_label() -> None:
    fake = FakeKube([{"apiVersion": "v1", "kind": "Namespace",
                      "metadata": {"name": "shared", "labels": {RUN_LABEL: "someone-else"}}}])
    from pytest_abtraffic._cluster._plan import teardown_steps

    with pytest.raises(BackendError, match="did not create it"):
        StepExecutor(api_factory=lambda: fake).run(teardown_steps("shared", run_id="me", guarded=True))
    assert not any(c[0] == "delete" for c in fake.calls)
    StepExecutor(api_factory=lambda: fake).run(teardown_steps("gone", run_id="me", guarded=True))
    assert not any(c[0] == "delete" for c in fake.calls)


# -- the kind backend runs the same steps the plan prints ------------------------------------------------


def test_kind_backend_executes_the_printed_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", "same-run")
    settings = ClusterSettings(work_dir=str(tmp_path / "work"))
    runner = RecordingRunner({**GOOD_VERSIONS, "linkerd": "edge-25.4.4\n"})
    fake = FakeKube()
    backend = KindBackend(settings, SMI, runner=runner, which=fake_which("/opt/bin"), api_factory=lambda _: fake,
                          lease=ClusterLease("x", tmp_path / "locks", timeout_s=5))
    backend.start()
    printed = [s for s in plan("kind", SMI, settings) if s.phase in ("cluster", "images", "mesh", "smi")]
    ran = [c for c in runner.calls if c[0] in ("kind", "kubectl", "linkerd", "docker")
           and c[:2] != ["kind", "get"] and c[1:2] != ["version"] and c[:3] != ["docker", "image", "inspect"]]
    assert ran == [list(s.argv) for s in printed]
    marker = fake.objects[("ConfigMap", "default", "pytest-abtraffic-cluster")]["data"]
    assert marker["linkerd-version"] == "edge-25.4.4" and marker["linkerd-smi-version"] == "v0.2.7"
    assert marker["config-hash"] == backend.layout.config_hash
    # Last one out deletes the cluster.
    backend.close()
    assert runner.calls[-1] == ["kind", "delete", "cluster", "--name", backend.layout.name, "--kubeconfig",
                                str(backend.layout.kubeconfig)]


def test_second_worker_joins_and_last_out_deletes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", "run-2")
    settings = ClusterSettings(work_dir=str(tmp_path / "work"))
    fake = FakeKube()
    r1, r2 = RecordingRunner(GOOD_VERSIONS), RecordingRunner(GOOD_VERSIONS)
    alive = {1, 2}

    def make(runner: RecordingRunner, holder: int) -> KindBackend:
        lease = ClusterLease("c", tmp_path / "locks", timeout_s=5, holder=holder, alive=lambda p: p in alive)
        return KindBackend(settings, ROUTE, runner=runner, which=fake_which("/opt/bin"), api_factory=lambda _: fake,
                           lease=lease)

    first, second = make(r1, 1), make(r2, 2)
    first.start()
    # The second worker sees the cluster (kind get clusters) but only joins: no create, no install.
    r2.answers["kind"] = first.layout.name + "\n"
    second.start()
    assert any(c[:3] == ["kind", "create", "cluster"] for c in r1.calls)
    assert not any(c[:3] == ["kind", "create", "cluster"] or c[:2] == ["linkerd", "install"] for c in r2.calls)
    first.close()
    assert not any(c[:3] == ["kind", "delete", "cluster"] for c in r1.calls + r2.calls)
    second.close()
    assert r2.calls[-1][:3] == ["kind", "delete", "cluster"]
    state = json.loads((tmp_path / "locks" / "c.json").read_text())
    assert state["holders"] == [] and "ready_for" not in state


def test_existing_cluster_is_refused_unless_reuse_and_matching(tmp_path: Path) -> None:
    settings = ClusterSettings(work_dir=str(tmp_path / "w"), cluster_name="left-over")
    runner = RecordingRunner({**GOOD_VERSIONS, "kind": "left-over\n"})  # `kind get clusters` lists it
    backend = KindBackend(settings, ROUTE, runner=runner, which=lambda n: f"/opt/bin/{n}",
                          api_factory=lambda _: FakeKube(), lease=ClusterLease("l", tmp_path / "l", timeout_s=5))
    backend._checked = True  # tools checked elsewhere; this test is about the cluster
    with pytest.raises(BackendError, match="already exists"):
        backend.start()
    # reuse with a marker from another Linkerd version: refused with the difference.
    reuse = ClusterSettings(work_dir=str(tmp_path / "w"), cluster_name="left-over", reuse=True)
    layout = kind_layout(reuse)
    other = ClusterSettings(work_dir=str(tmp_path / "w"), cluster_name="left-over", linkerd_version="edge-25.9.4")
    fake = FakeKube([marker_steps(kind_layout(other), other, smi_installed=False)[0].objects[0]])
    b2 = KindBackend(reuse, ROUTE, runner=runner, api_factory=lambda _: fake,
                     lease=ClusterLease("l2", tmp_path / "l", timeout_s=5))
    b2._checked = True
    with pytest.raises(BackendError, match=re.escape("linkerd-version: cluster has 'edge-25.9.4'")):
        b2.start()
    assert not any(c[:3] == ["kind", "create", "cluster"] for c in runner.calls)
    # A matching marker is reused: kubeconfig exported, nothing created or installed.
    good = FakeKube([marker_steps(layout, reuse, smi_installed=False)[0].objects[0]])
    runner.calls.clear()
    b3 = KindBackend(reuse, ROUTE, runner=runner, api_factory=lambda _: good,
                     lease=ClusterLease("l3", tmp_path / "l", timeout_s=5))
    b3._checked = True
    b3.start()
    export = ["kind", "export", "kubeconfig", "--name", "left-over", "--kubeconfig", str(layout.kubeconfig)]
    assert export in runner.calls
    assert not any(c[:2] in (["kind", "create"], ["linkerd", "install"]) for c in runner.calls)
    b3.close()


def test_smi_installed_on_first_smi_deploy_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", "run-smi")
    settings = ClusterSettings(work_dir=str(tmp_path / "work"))
    fake = FakeKube()
    runner = RecordingRunner(GOOD_VERSIONS)
    backend = KindBackend(settings, ROUTE, runner=runner, which=fake_which("/opt/bin"), api_factory=lambda _: fake,
                          lease=ClusterLease("s", tmp_path / "locks", timeout_s=5))
    backend.start()
    assert not any(c[1:3] == ["smi", "install"] for c in runner.calls)
    layout = kind_layout(settings)
    backend._ensure_for(SMI)
    assert [c for c in runner.calls if c[1:3] == ["smi", "install"]] == [list(smi_steps(layout, settings)[0].argv)]
    assert fake.objects[("ConfigMap", "default", "pytest-abtraffic-cluster")]["data"]["linkerd-smi-version"] == "v0.2.7"
    runner.calls.clear()
    backend._ensure_for(SMI)
    assert not any(c[1:3] == ["smi", "install"] for c in runner.calls)
    backend.close()


def test_images_not_loaded_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", "run-img")
    settings = ClusterSettings(work_dir=str(tmp_path / "work"))
    runner = RecordingRunner(GOOD_VERSIONS)
    backend = KindBackend(settings, ROUTE, runner=runner, which=fake_which("/opt/bin"),
                          api_factory=lambda _: FakeKube(),
                          lease=ClusterLease("i", tmp_path / "locks", timeout_s=5))
    backend.start()
    loads = [c for c in runner.calls if c[:2] == ["kind", "load"]]
    assert len(loads) == 2
    runner.calls.clear()
    backend._ensure_for(SMI.replace(split_api="httproute"))
    assert not any(c[:2] in (["kind", "load"], ["docker", "build"]) for c in runner.calls)
    backend.close()


def test_failed_setup_deletes_the_half_made_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTEST_XDIST_TESTRUNUID", "run-fail")
    settings = ClusterSettings(work_dir=str(tmp_path / "work"), report_dir=str(tmp_path / "report"))

    class Failing(RecordingRunner):
        def __call__(self, argv: list[str], **kw: Any) -> Any:
            if argv[:2] == ["linkerd", "check"]:
                from pytest_abtraffic._errors import CommandError

                self.calls.append(argv)
                raise CommandError(argv, 1, "control plane pods not ready")
            return super().__call__(argv, **kw)

    runner = Failing(GOOD_VERSIONS)
    backend = KindBackend(settings, ROUTE, runner=runner, which=fake_which("/opt/bin"),
                          api_factory=lambda _: FakeKube(),
                          lease=ClusterLease("f", tmp_path / "locks", timeout_s=5))
    with pytest.raises(Exception, match="control plane pods not ready"):
        backend.start()
    assert runner.calls[-1][:3] == ["kind", "delete", "cluster"]
    bundles = list((tmp_path / "report" / "diagnostics").iterdir())
    assert len(bundles) == 1 and "control plane pods not ready" in (bundles[0] / "reason.txt").read_text()
    layout_name = kind_layout(settings).name
    assert layout_name in (bundles[0] / "describe.json").read_text()


# -- images: nothing of the kit's own to push; kind#3795 fallback; existing refuses the unpublished image --


def test_kind_plan_builds_only_from_wheel_files_and_pulls_pinned_public_images(settings: ClusterSettings) -> None:
    from pytest_abtraffic._resources import fixtures_dir

    steps = plan("kind", ROUTE, settings)
    builds = [s for s in steps if cmd("docker", "build")(s)]
    assert [(s.argv[3], s.argv[4]) for s in builds] == [(REFERENCE_IMAGE, str(fixtures_dir()))]
    job = next(o for s in steps if s.kind == "apply" for o in s.objects if o["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == LOCUST_IMAGE
    assert "pytest-abtraffic/load" not in format_plan(steps)


def test_image_load_falls_back_to_an_archive_when_kind_load_fails(settings: ClusterSettings) -> None:
    """kind v0.27.0 ``pkg/cmd/kind/load/docker-image/docker-image.go`` imports with
    ``ctr images import --all-platforms --digests``, which fails on Docker's containerd image store
    (kubernetes-sigs/kind#3795); ``kind load image-archive`` of a ``docker save`` works."""
    layout = kind_layout(settings)
    layout.work_dir.mkdir(parents=True)
    step = next(s for s in image_steps(layout, ROUTE, settings) if s.id == f"load-{REFERENCE_IMAGE}")
    archive = step.params["archive"]
    assert step.fallback == (("docker", "save", REFERENCE_IMAGE, "-o", archive),
                             ("kind", "load", "image-archive", archive, "--name", layout.name))
    assert "kind#3795" in format_plan([step]) and "image-archive" in format_plan([step])
    calls: list[list[str]] = []

    def runner(argv: list[str], **kw: Any) -> Any:
        from pytest_abtraffic._errors import CommandError
        from pytest_abtraffic._proc import Completed

        calls.append(argv)
        if argv[:3] == ["kind", "load", "docker-image"]:
            raise CommandError(argv, 1, "ctr: content digest sha256:abc: not found")
        if argv[:2] == ["docker", "save"]:
            Path(argv[-1]).write_bytes(b"tar")
        return Completed(tuple(argv), 0, "", "")

    log: list[str] = []
    StepExecutor(runner=runner, log=log.append).run_step(step)
    assert [c[:3] for c in calls] == [["kind", "load", "docker-image"], ["docker", "save", REFERENCE_IMAGE],
                                      ["kind", "load", "image-archive"]]
    assert any("content digest" in line for line in log)
    assert not Path(archive).exists()  # the archive is removed afterwards

    def both_fail(argv: list[str], **kw: Any) -> Any:
        from pytest_abtraffic._errors import CommandError

        raise CommandError(argv, 1, "boom")

    from pytest_abtraffic._errors import CommandError

    with pytest.raises(CommandError, match="docker save"):
        StepExecutor(runner=both_fail).run_step(step)


def test_existing_refuses_the_unpublished_reference_image_naming_how_to_push_it() -> None:
    s = ClusterSettings(context="prod")
    with pytest.raises(UsageError) as info:
        plan("existing", ROUTE, s)
    text = str(info.value)
    assert REFERENCE_IMAGE in text and "docker build -t" in text and "docker push" in text
    assert "--abtraffic-model-image" in text
    pushed = ClusterSettings(context="prod", model_image="registry.example/ai-model:0.1.0")
    steps = plan("existing", ROUTE, pushed)
    images = {c["image"] for st in steps if st.kind == "apply" for o in st.objects if o["kind"] in ("Deployment", "Job")
              for c in o["spec"]["template"]["spec"]["containers"]}
    assert images == {"registry.example/ai-model:0.1.0", LOCUST_IMAGE}

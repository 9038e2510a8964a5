"""Every object the cluster backends create validates against the Kubernetes schemas, and the load
Job is what the facts require (meshed, aimed at the apex, ends when Locust ends)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_abtraffic._cluster import ClusterSettings, _jobentry, check_load_target, plan, refuse_port_forward
from pytest_abtraffic._cluster._loadjob import apex_url, extract_proxy_metrics, load_job_objects
from pytest_abtraffic._cluster._plan import deploy_steps, kind_layout, marker_object
from pytest_abtraffic._errors import BackendError, LoadError
from pytest_abtraffic._load import LoadPlan
from pytest_abtraffic._load.incluster import _parser, plan_from_args
from pytest_abtraffic._manifests import render_experiment, validate_objects
from pytest_abtraffic._resources import manifests_dir
from pytest_abtraffic._spec import default_spec

ROOT = Path(__file__).resolve().parents[2]
SPLITS = ("smi-v1alpha1", "smi-v1alpha2", "httproute")


def applied_objects(backend: str, split_api: str, **spec_changes: Any) -> list[dict[str, Any]]:
    spec = default_spec(split_api=split_api, **spec_changes)
    steps = plan(backend, spec, ClusterSettings(context="dev", work_dir="/tmp/abt-test-unused",
                                                model_image="registry.example/ai-model:0.1.0"))
    return [dict(o) for s in steps if s.kind == "apply" for o in s.objects]


@pytest.mark.parametrize("backend", ["kind", "existing"])
@pytest.mark.parametrize("split_api", SPLITS)
def test_everything_applied_validates(backend: str, split_api: str) -> None:
    objects = applied_objects(backend, split_api)
    kinds = sorted({o["kind"] for o in objects})
    expected = {"ConfigMap", "Deployment", "Job", "Namespace", "Service", "ServiceAccount"}
    expected.add("HTTPRoute" if split_api == "httproute" else "TrafficSplit")
    assert set(kinds) == expected
    assert validate_objects(objects) == []


def test_policy_group_route_validates() -> None:
    objects = applied_objects("existing", "httproute", route_group="policy.linkerd.io")
    assert validate_objects(objects) == []


def test_validation_is_strict_enough_to_fail() -> None:
    job = next(o for o in applied_objects("kind", "httproute") if o["kind"] == "Job")
    job["spec"]["template"]["spec"]["containers"][0]["comand"] = ["typo"]
    problems = validate_objects([job])
    assert problems and "comand" in problems[0]


def test_load_job_with_payloads_and_locustfile_validates(tmp_path: Path) -> None:
    locustfile = tmp_path / "mine.py"
    locustfile.write_text("from locust import HttpUser\n")
    spec = default_spec()
    plan_ = LoadPlan.from_spec(spec, payloads=({"x": [1, 2]},), locustfile=str(locustfile), max_requests=500)
    objects = load_job_objects(spec, "abt-z", plan_, job_name="abtraffic-load-7", image="reg/load:1")
    assert validate_objects(objects) == []
    sa, cm, job = objects
    assert sa["kind"] == "ServiceAccount" and cm["kind"] == "ConfigMap" and job["kind"] == "Job"
    assert json.loads(cm["data"]["payloads.json"]) == [{"x": [1, 2]}]
    assert cm["data"]["locustfile.py"] == "from locust import HttpUser\n"
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]
    assert pod["volumes"][0]["configMap"]["name"] == cm["metadata"]["name"]


def test_load_job_shape() -> None:
    spec = default_spec()
    plan_ = LoadPlan.from_spec(spec, duration_s=30.0, max_requests=2000)
    job = load_job_objects(spec, "abt-q", plan_, job_name="abtraffic-load-1", image="locustio/locust:2.47.0")[2]
    tmpl = job["spec"]["template"]
    assert job["spec"]["backoffLimit"] == 0  # a retried run would count twice
    assert tmpl["spec"]["restartPolicy"] == "Never"
    assert tmpl["metadata"]["annotations"] == {
        "linkerd.io/inject": "enabled",
        "config.linkerd.io/proxy-admin-shutdown": "enabled",
        "config.linkerd.io/proxy-await": "enabled",
    }
    container = tmpl["spec"]["containers"][0]
    assert container["imagePullPolicy"] == "IfNotPresent"
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and isinstance(sc["runAsUser"], int) and sc["runAsUser"] > 0
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    command = container["command"]
    assert command[:3] == ["python", "-m", "pytest_abtraffic._cluster._jobentry"]
    deadline = float(command[command.index("--deadline") + 1])
    assert job["spec"]["activeDeadlineSeconds"] > deadline > plan_.duration_s


def test_job_arguments_are_accepted_by_the_in_cluster_entry() -> None:
    spec = default_spec()
    plan_ = LoadPlan.from_spec(spec, payloads=({"a": 1},), max_requests=1234, users=7)
    job = load_job_objects(spec, "abt-q", plan_, job_name="j", image="i")[2]
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    load_args = command[command.index("--") + 1:]
    args = _parser().parse_args(load_args)
    assert args.host == apex_url(spec, "abt-q") == "http://ai-model-service.abt-q.svc.cluster.local:80"
    assert args.payloads_file == "/etc/abtraffic/payloads.json"
    args.payloads_file = None  # mounted from the ConfigMap in the pod
    parsed = plan_from_args(args)
    assert parsed.max_requests == 1234 and parsed.users == 7 and parsed.version_header == "x-model-version"


def test_payloads_too_big_for_a_configmap() -> None:
    spec = default_spec()
    big = LoadPlan.from_spec(spec, payloads=("x" * 1_000_000,))
    with pytest.raises(LoadError, match="ConfigMap"):
        load_job_objects(spec, "abt", big, job_name="j", image="i")


def test_namespace_carries_run_label_and_injection() -> None:
    spec = default_spec()
    steps = deploy_steps(spec, "abt-n", render_experiment(spec, namespace="abt-n"), run_id="run-1", timeout_s=5)
    ns = steps[0].objects[0]
    assert ns["metadata"]["labels"]["pytest-abtraffic/run"] == "run-1"
    assert ns["metadata"]["annotations"]["linkerd.io/inject"] == "enabled"
    assert validate_objects([ns]) == []


def test_marker_configmap_validates(tmp_path: Path) -> None:
    s = ClusterSettings(work_dir=str(tmp_path))
    marker = marker_object(kind_layout(s), s, smi_installed=True)
    assert validate_objects([marker]) == []
    assert marker["data"]["linkerd-version"] == "edge-25.4.4"


def test_port_forward_is_refused_with_the_reason() -> None:
    with pytest.raises(BackendError) as info:
        refuse_port_forward("svc/ai-model-service")
    text = str(info.value)
    assert "linkerd2#2352" in text and "meshed" in text
    for url in ("http://127.0.0.1:8080", "http://localhost:80/predict", "http://[::1]:80"):
        with pytest.raises(BackendError, match="port-forward"):
            check_load_target(url)
    check_load_target("http://ai-model-service.abt.svc.cluster.local:80")


def test_kind_cluster_config() -> None:
    doc = yaml.safe_load((manifests_dir() / "kind-cluster.yaml").read_text())
    assert doc["kind"] == "Cluster" and doc["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [n["role"] for n in doc["nodes"]] == ["control-plane"]
    assert doc["networking"]["apiServerAddress"] == "127.0.0.1"
    assert "name" not in doc  # the name comes from --name


def test_reference_model_dockerfile_pins_its_base_image() -> None:
    """The one image the kit builds (from files the wheel carries) starts from an exact Python release."""
    from pytest_abtraffic._resources import fixtures_dir

    text = (fixtures_dir() / "Dockerfile").read_text()
    froms = [ln.split()[1] for ln in text.splitlines() if ln.startswith("FROM ")]
    assert froms and all(re.fullmatch(r"python:3\.\d+\.\d+-slim(@sha256:[0-9a-f]{64})?", f) for f in froms), froms
    user = [ln for ln in text.splitlines() if ln.startswith("USER ")]
    assert len(user) == 1 and re.fullmatch(r"USER [1-9]\d*:[1-9]\d*", user[0])
    assert "curl" not in text and "wget" not in text  # nothing but pip downloads at build time


def test_load_runs_on_the_official_locust_image_at_the_required_version() -> None:
    """No image of the kit's own: ``locustio/locust`` (Locust docs, "Running in Docker") at the version
    the kit is tested with, which must satisfy the kit's own ``locust`` requirement."""
    import tomllib

    from pytest_abtraffic._cluster._podcode import LOCUST_IMAGE, LOCUST_VERSION
    from pytest_abtraffic._cluster._settings import LOAD_IMAGE

    assert LOAD_IMAGE == LOCUST_IMAGE == f"locustio/locust:{LOCUST_VERSION}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", LOCUST_VERSION)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    req = next(d for d in deps if re.match(r"locust\b", d))
    low = re.search(r">=\s*([\d.]+)", req)
    assert low is not None
    as_tuple = lambda v: tuple(int(p) for p in v.split("."))  # noqa: E731
    assert as_tuple(LOCUST_VERSION) >= as_tuple(low[1])
    high = re.search(r"<\s*([\d.]+)", req)
    assert high is None or as_tuple(LOCUST_VERSION) < as_tuple(high[1])
    job = load_job_objects(default_spec(), "abt", LoadPlan.from_spec(default_spec()), job_name="j",
                           image=ClusterSettings().load_image)[2]
    assert job["spec"]["template"]["spec"]["containers"][0]["image"] == LOCUST_IMAGE


def test_pod_code_imports_only_the_standard_library_and_locust() -> None:
    from pytest_abtraffic._cluster import _podcode

    assert _podcode.check_pod_imports() == []
    files = _podcode.pod_code()
    assert all(re.fullmatch(r"[-._a-zA-Z0-9]+", key) for key in files)  # ConfigMap key syntax
    paths = {path for path, _ in files.values()}
    assert "code/pytest_abtraffic/_cluster/_jobentry.py" in paths and "code/pytest_abtraffic/__init__.py" in paths


def test_pod_import_check_can_fail(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pytest_abtraffic._cluster import _podcode

    (tmp_path / "_load").mkdir()
    (tmp_path / "_load" / "x.py").write_text("import httpx\nfrom .._spec import ExperimentSpec\nimport locust\n")
    monkeypatch.setattr(_podcode, "_PACKAGE", tmp_path)
    monkeypatch.setattr(_podcode, "POD_MODULES", ("_load/x.py",))
    problems = _podcode.check_pod_imports()
    assert any("httpx" in p for p in problems) and any("pytest_abtraffic._spec" in p for p in problems)
    assert not any("locust" in p for p in problems)


# -- the Job's entry: metrics read from inside the pod, then the proxy is told to shut down ---------------


class _FakeProxy(BaseHTTPRequestHandler):
    shutdowns: list[str] = []

    def do_GET(self) -> None:
        body = b"outbound_http_route_backend_requests_total{backend_name=\"a\"} 3\n"
        self.send_response(200 if self.path == "/metrics" else 404)
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        _FakeProxy.shutdowns.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"shutdown\n")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_proxy() -> Iterator[int]:
    _FakeProxy.shutdowns = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeProxy)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class _Child:
    def __init__(self, argv: list[str]) -> None:
        self.argv = argv

    def wait(self, timeout: float | None = None) -> int:
        return 3

    def send_signal(self, signum: int) -> None:
        pass


def test_jobentry_prints_metrics_and_stops_the_proxy(fake_proxy: int, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    children: list[_Child] = []

    def popen(argv: list[str]) -> _Child:
        children.append(_Child(argv))
        return children[-1]

    monkeypatch.setattr(_jobentry.subprocess, "Popen", popen)
    monkeypatch.setattr(_jobentry.signal, "signal", lambda *a: None)
    code = _jobentry.main(["--deadline", "5", "--admin-port", str(fake_proxy), "--", "--host", "http://apex:80"])
    assert code == 3  # Locust's exit code is the Job's
    assert children[0].argv[1:] == ["-m", "pytest_abtraffic._load.incluster", "--host", "http://apex:80"]
    out = capsys.readouterr().out
    assert extract_proxy_metrics(out) == 'outbound_http_route_backend_requests_total{backend_name="a"} 3\n'
    assert _FakeProxy.shutdowns == ["/shutdown"]


def test_jobentry_without_a_proxy_still_exits(monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(_jobentry.subprocess, "Popen", lambda argv: _Child(argv))
    monkeypatch.setattr(_jobentry.signal, "signal", lambda *a: None)
    # Port 9 on loopback: nothing listens (connection refused quickly).
    assert _jobentry.main(["--deadline", "5", "--admin-port", "9", "--", "--host", "http://x"]) == 3
    captured = capsys.readouterr()
    metrics = extract_proxy_metrics(captured.out)
    assert metrics is not None and metrics.startswith("# error: cannot read the proxy metrics")
    assert "proxy shutdown request failed" in captured.err


# -- distributed load: a master Job, its Service and a Job of meshed worker pods ---------------------------


def test_load_objects_for_three_workers_validate_and_wire_the_workers_to_the_master() -> None:
    """Locust's distributed mode (``--master --expect-workers N``, ``--worker --master-host H --master-port P``;
    master port 5557) with every pod meshed; the ZeroMQ port is opaque to Linkerd
    (``config.linkerd.io/opaque-ports``, linkerd2 edge-25.4.4 ``pkg/k8s/labels.go``)."""
    spec = default_spec()
    plan_ = LoadPlan.from_spec(spec, max_requests=30_000, users=30, workers=3)
    objects = load_job_objects(spec, "abt-w", plan_, job_name="abtraffic-load-1", image="locustio/locust:2.47.0")
    assert [o["kind"] for o in objects] == ["ServiceAccount", "ConfigMap", "Service", "Job", "Job"]
    assert validate_objects(objects) == []
    _, _, service, master, workers = objects
    assert workers["metadata"]["name"] == "abtraffic-load-1-workers"
    assert workers["spec"]["parallelism"] == workers["spec"]["completions"] == 3
    for job in (master, workers):
        annotations = job["spec"]["template"]["metadata"]["annotations"]
        assert annotations["linkerd.io/inject"] == "enabled"  # every load pod is meshed
        assert annotations["config.linkerd.io/opaque-ports"] == "5557"
    assert service["spec"]["selector"] == {"job-name": "abtraffic-load-1", "abtraffic-load-role": "master"}
    assert master["spec"]["template"]["metadata"]["labels"]["abtraffic-load-role"] == "master"
    assert service["spec"]["ports"][0]["port"] == 5557
    master_cmd = master["spec"]["template"]["spec"]["containers"][0]["command"]
    worker_cmd = workers["spec"]["template"]["spec"]["containers"][0]["command"]
    master_args = _parser().parse_args(master_cmd[master_cmd.index("--") + 1:])
    worker_args = _parser().parse_args(worker_cmd[worker_cmd.index("--") + 1:])
    assert master_args.worker_of is None
    assert worker_args.worker_of == "abtraffic-load-1-master.abt-w.svc.cluster.local:5557"
    assert json.loads(master_args.plan)["workers"] == 3 and json.loads(master_args.plan)["worker_mode"] == "pods"
    from pytest_abtraffic._load._driver import build_command, worker_command

    parsed = LoadPlan.from_dict(json.loads(master_args.plan))
    argv = build_command("http://apex:80", parsed, Path("f.py"), Path("/tmp"))
    assert argv[argv.index("--master"):argv.index("--master") + 5] == ["--master", "--expect-workers", "3",
                                                                      "--master-bind-port", "5557"]
    assert worker_command(Path("f.py"), worker_args.worker_of)[-7:-2] == [
        "--worker", "--master-host", "abtraffic-load-1-master.abt-w.svc.cluster.local", "--master-port", "5557"]

"""Missing tools, missing Linkerd and a wrong context each fail clearly, before any side effect."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from _fake_kube import FakeKube, linkerd_objects

from pytest_abtraffic._cluster import ClusterSettings, make_cluster_backend
from pytest_abtraffic._cluster._existing import ExistingClusterBackend
from pytest_abtraffic._cluster._kind import ClusterLease, KindBackend
from pytest_abtraffic._cluster._prereq import check_prerequisites
from pytest_abtraffic._errors import CommandError, PrerequisiteError, UsageError
from pytest_abtraffic._proc import Completed
from pytest_abtraffic._spec import default_spec


class RecordingRunner:
    """Stands in for ``_proc.run``: records argv, answers from a table, runs nothing."""

    def __init__(self, answers: dict[str, str] | None = None, fail: dict[str, str] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.answers = dict(answers or {})
        self.fail = fail or {}

    def __call__(self, argv: list[str], *, timeout: float, input_text: str | None = None,
                 env: Any = None, check: bool = True, cwd: str | None = None) -> Completed:
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        tool = Path(argv[0]).name
        if tool in self.fail:
            raise CommandError(argv, 1, self.fail[tool])
        return Completed(tuple(argv), 0, self.answers.get(tool, ""), "")


# The reference model image as a user pushed it (an existing cluster cannot pull the unpublished one).
PUSHED = "registry.example/ai-model:0.1.0"


def dev_settings(config: Path) -> ClusterSettings:
    return ClusterSettings(kubeconfig=str(config), context="dev", model_image=PUSHED)

GOOD_VERSIONS = {
    "docker": "27.5.1\n",
    "kind": "kind v0.27.0 go1.23.6 linux/amd64\n",
    "kubectl": '{"clientVersion": {"gitVersion": "v1.32.2"}}',
    "linkerd": "edge-25.4.4\n",
    "linkerd-smi": "v0.2.7\n",
}


def fake_which(path: str | None) -> Any:
    return lambda name: f"/opt/bin/{name}" if path else None


@pytest.fixture
def empty_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))


@pytest.fixture
def lease(tmp_path: Path) -> Any:
    return lambda name: ClusterLease(name, tmp_path / "locks", timeout_s=5)


def test_missing_binaries_are_all_named_with_install_hints_and_nothing_runs(empty_path: None) -> None:
    runner = RecordingRunner()
    with pytest.raises(PrerequisiteError) as info:
        check_prerequisites("kind", ClusterSettings(), needs_smi=True, runner=runner)
    text = str(info.value)
    for tool in ("docker", "kind", "kubectl", "linkerd", "linkerd-smi"):
        assert f"- {tool} (" in text
    assert "https://kind.sigs.k8s.io/docs/user/quick-start/#installation" in text
    assert "kind v0.27.0" in text
    assert "LINKERD2_VERSION=edge-25.4.4" in text
    assert "linkerd-smi-0.2.7-linux-amd64" in text
    assert "never downloads" in text
    assert runner.calls == []


def test_smi_cli_is_only_required_for_smi(empty_path: None) -> None:
    with pytest.raises(PrerequisiteError) as info:
        check_prerequisites("kind", ClusterSettings(), needs_smi=False, runner=RecordingRunner())
    assert "linkerd-smi" not in str(info.value)


def test_kind_backend_checks_tools_before_any_side_effect(empty_path: None, tmp_path: Path, lease: Any) -> None:
    runner = RecordingRunner()
    settings = ClusterSettings(work_dir=str(tmp_path / "work"))
    backend = KindBackend(settings, default_spec(), runner=runner, lease=lease("x"))
    with pytest.raises(PrerequisiteError):
        backend.deploy(default_spec())
    assert runner.calls == []
    assert not (tmp_path / "work").exists()
    assert not (tmp_path / "locks").exists()


def test_make_cluster_backend_checks_kind_prerequisites_up_front(empty_path: None, tmp_path: Path) -> None:
    with pytest.raises(PrerequisiteError, match="not found on PATH"):
        make_cluster_backend("kind", ClusterSettings(work_dir=str(tmp_path / "w")), default_spec())


def test_version_commands_are_the_only_thing_run_and_pass_when_pinned() -> None:
    runner = RecordingRunner(GOOD_VERSIONS)
    found = check_prerequisites("kind", ClusterSettings(), needs_smi=True, which=fake_which("/opt/bin"),
                                runner=runner)
    assert found["linkerd"].version == "edge-25.4.4"
    assert found["kubectl"].version == "v1.32.2"
    assert found["kind"].version == "v0.27.0"
    assert [c[1:] for c in runner.calls] == [
        ["version", "--format", "{{.Server.Version}}"], ["version"], ["version", "--client", "-o", "json"],
        ["version", "--client", "--short"], ["version"]]


def test_wrong_linkerd_cli_version_is_refused_with_the_pinned_one() -> None:
    runner = RecordingRunner({**GOOD_VERSIONS, "linkerd": "edge-25.10.7\n"})
    with pytest.raises(PrerequisiteError) as info:
        check_prerequisites("kind", ClusterSettings(), needs_smi=False, which=fake_which("/opt/bin"), runner=runner)
    assert "edge-25.10.7" in str(info.value)
    assert "pins edge-25.4.4" in str(info.value)


def test_old_kind_is_refused_for_the_pinned_node_image() -> None:
    runner = RecordingRunner({**GOOD_VERSIONS, "kind": "kind v0.20.0 go1.20 linux/amd64"})
    with pytest.raises(PrerequisiteError, match=re.escape("older than v0.27.0")):
        check_prerequisites("kind", ClusterSettings(), needs_smi=False, which=fake_which("/opt/bin"), runner=runner)


def test_docker_engine_not_running() -> None:
    runner = RecordingRunner(GOOD_VERSIONS, fail={"docker": "Cannot connect to the Docker daemon"})
    with pytest.raises(PrerequisiteError) as info:
        check_prerequisites("kind", ClusterSettings(), needs_smi=False, which=fake_which("/opt/bin"), runner=runner)
    assert "engine is not reachable" in str(info.value)
    assert "Cannot connect to the Docker daemon" in str(info.value)


def test_the_real_runner_reports_a_broken_binary(tmp_path: Path) -> None:
    # An executable that exits 1, found on PATH: the real _proc.run path, no network.
    script = tmp_path / "docker"
    script.write_text("#!/bin/sh\necho 'daemon down' >&2\nexit 1\n")
    script.chmod(0o755)
    for name, out in GOOD_VERSIONS.items():
        if name in ("docker", "linkerd-smi"):
            continue
        path = tmp_path / name
        path.write_text(f"#!/bin/sh\ncat <<'EOF'\n{out}\nEOF\n")
        path.chmod(0o755)
    assert subprocess.run([str(script)], capture_output=True, check=False).returncode == 1
    with pytest.raises(PrerequisiteError, match="daemon down"):
        check_prerequisites("kind", ClusterSettings(), needs_smi=False,
                            which=lambda n: str(tmp_path / n) if (tmp_path / n).exists() else None)


# -- existing backend ----------------------------------------------------------------------------------


def write_kubeconfig(path: Path, contexts: list[str]) -> Path:
    lines = ["apiVersion: v1", "kind: Config", "clusters:", "- name: c", "  cluster: {server: 'https://127.0.0.1:1'}",
             "users:", "- name: u", "  user: {token: x}", "contexts:"]
    for ctx in contexts:
        lines += [f"- name: {ctx}", "  context: {cluster: c, user: u}"]
    lines.append(f"current-context: {contexts[0]}")
    path.write_text("\n".join(lines) + "\n")
    return path


class Factory:
    def __init__(self, fake: FakeKube) -> None:
        self.fake = fake
        self.calls: list[tuple[str | None, str]] = []

    def __call__(self, path: str | None, context: str) -> FakeKube:
        self.calls.append((path, context))
        return self.fake


def test_wrong_context_fails_before_a_client_is_made(tmp_path: Path) -> None:
    config = write_kubeconfig(tmp_path / "kubeconfig", ["dev", "staging"])
    before = config.read_text()
    factory = Factory(FakeKube(linkerd_objects()))
    settings = ClusterSettings(kubeconfig=str(config), context="prod", work_dir=str(tmp_path / "w"), model_image=PUSHED)
    with pytest.raises(PrerequisiteError) as info:
        ExistingClusterBackend(settings, default_spec(), api_factory=factory)
    assert "'prod' not found" in str(info.value)
    assert "available contexts: dev, staging" in str(info.value)
    assert factory.calls == []
    assert config.read_text() == before


def test_context_is_required(tmp_path: Path) -> None:
    factory = Factory(FakeKube(linkerd_objects()))
    with pytest.raises(UsageError, match="needs the kubeconfig context"):
        ExistingClusterBackend(ClusterSettings(kubeconfig=str(tmp_path / "k")), api_factory=factory)
    assert factory.calls == []


def test_kubeconfig_from_env_with_several_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write_kubeconfig(tmp_path / "a", ["one"])
    b = write_kubeconfig(tmp_path / "b", ["two"])
    monkeypatch.setenv("KUBECONFIG", f"{a}:{b}")
    fake = FakeKube(linkerd_objects())
    backend = ExistingClusterBackend(ClusterSettings(context="two"), api_factory=Factory(fake))
    assert backend.describe()["context"] == "two"
    backend.close()


def test_missing_linkerd_fails_read_only(tmp_path: Path) -> None:
    config = write_kubeconfig(tmp_path / "kubeconfig", ["dev"])
    fake = FakeKube([])  # an empty cluster
    with pytest.raises(PrerequisiteError) as info:
        ExistingClusterBackend(dev_settings(config), default_spec(),
                               api_factory=Factory(fake))
    assert "Linkerd is not installed" in str(info.value)
    assert "linkerd install --crds" in str(info.value)
    assert fake.writes == []
    assert fake.closed


def test_missing_linkerd_config_map_and_crds(tmp_path: Path) -> None:
    config = write_kubeconfig(tmp_path / "kubeconfig", ["dev"])
    only_ns = FakeKube([linkerd_objects()[0]])
    with pytest.raises(PrerequisiteError, match="linkerd/linkerd-config"):
        ExistingClusterBackend(dev_settings(config), api_factory=Factory(only_ns))
    no_crds = FakeKube(linkerd_objects()[:2])
    with pytest.raises(PrerequisiteError, match=re.escape("servers.policy.linkerd.io")):
        ExistingClusterBackend(dev_settings(config), api_factory=Factory(no_crds))
    assert only_ns.writes == [] and no_crds.writes == []


def test_missing_linkerd_smi_for_an_smi_split(tmp_path: Path) -> None:
    config = write_kubeconfig(tmp_path / "kubeconfig", ["dev"])
    fake = FakeKube(linkerd_objects(smi=False))
    with pytest.raises(PrerequisiteError, match="linkerd-smi is not installed"):
        ExistingClusterBackend(dev_settings(config),
                               default_spec(split_api="smi-v1alpha2"), api_factory=Factory(fake))
    assert fake.writes == []
    # The same cluster is fine for an HTTPRoute split.
    ok = ExistingClusterBackend(dev_settings(config), default_spec(),
                                api_factory=Factory(FakeKube(linkerd_objects(smi=False))))
    ok.close()


def test_smi_checked_again_per_deploy(tmp_path: Path) -> None:
    config = write_kubeconfig(tmp_path / "kubeconfig", ["dev"])
    fake = FakeKube(linkerd_objects(smi=False))
    backend = ExistingClusterBackend(dev_settings(config), default_spec(),
                                     api_factory=Factory(fake))
    with pytest.raises(PrerequisiteError, match="linkerd-smi"):
        backend.deploy(default_spec(split_api="smi-v1alpha1"), namespace="abt-smi")
    assert fake.writes == []
    backend.close()


def test_gateway_api_v1_required_for_gateway_routes(tmp_path: Path) -> None:
    config = write_kubeconfig(tmp_path / "kubeconfig", ["dev"])
    fake = FakeKube(linkerd_objects(gateway_v1=False))
    backend = ExistingClusterBackend(dev_settings(config),
                                     api_factory=Factory(fake))
    with pytest.raises(PrerequisiteError, match=re.escape("gateway.networking.k8s.io/v1")):
        backend.deploy(default_spec(), namespace="abt-gw")
    assert fake.writes == []
    backend.close()


def test_refuses_a_namespace_it_did_not_create(tmp_path: Path) -> None:
    config = write_kubeconfig(tmp_path / "kubeconfig", ["dev"])
    theirs = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments"}}
    fake = FakeKube([*linkerd_objects(), theirs])
    backend = ExistingClusterBackend(dev_settings(config),
                                     api_factory=Factory(fake))
    with pytest.raises(Exception, match="namespace payments already exists"):
        backend.deploy(default_spec(), namespace="payments")
    assert fake.writes == []
    backend.close()
    assert ("Namespace", None, "payments") in fake.objects

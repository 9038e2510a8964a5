"""`abtraffic verify --manifests/--pulumi` stops at lint findings and bad input before anything starts.

Every test here makes starting a process (or creating a backend) fail the test, so "nothing was
started" is checked, not assumed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from pytest_abtraffic import _cli, plugin
from pytest_abtraffic._local import _supervisor

DATA = Path(__file__).resolve().parents[1] / "data"
SPEC = DATA / "mended_starting_point" / "spec.yaml"
MENDED = DATA / "mended_starting_point" / "ai-model.yaml"


class Started(AssertionError):
    pass


@pytest.fixture
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail on any backend, model-server/proxy process or (unless allowed) any subprocess."""
    attempts: list[str] = []

    def no_backend(*args: Any, **kwargs: Any) -> Any:
        attempts.append("backend")
        raise Started("a backend was created")

    def no_process(self: Any, argv: list[str], *args: Any, **kwargs: Any) -> None:
        attempts.append(f"process {argv}")
        raise Started(f"a process was started: {argv}")

    monkeypatch.setattr(plugin, "make_backend", no_backend)
    monkeypatch.setattr(_supervisor.ManagedProcess, "__init__", no_process)
    return attempts


def _no_subprocess(monkeypatch: pytest.MonkeyPatch, attempts: list[str]) -> None:
    def refuse(self: Any, args: Any, *rest: Any, **kwargs: Any) -> None:
        attempts.append(f"subprocess {args}")
        raise Started(f"subprocess started: {args}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


def test_unmended_objects_exit_1_with_lints_findings_and_start_nothing(
        nothing_starts: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    _no_subprocess(monkeypatch, nothing_starts)
    assert _cli.main(["lint", str(DATA / "starting_point.yaml")]) == 1
    lint_out = capsys.readouterr().out
    rc = _cli.main(["verify", str(SPEC), "--manifests", str(DATA / "starting_point.yaml")])
    out, err = capsys.readouterr()
    assert rc == 1
    assert out == lint_out and len(out.splitlines()) == 3  # printed as `lint` prints them
    assert "3 problem(s) found" in err and "nothing was started" in err
    assert nothing_starts == []


def test_pulumi_starting_point_exits_1_with_the_seven_findings(
        nothing_starts: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pulumi")
    rc = _cli.main(["verify", str(SPEC), "--pulumi", str(DATA / "pulumi_starting_point")])
    out, err = capsys.readouterr()
    assert rc == 1, err
    assert len(out.splitlines()) == 7 and "7 problem(s) found" in err
    assert "pulumi-auto-named" not in out and "Set metadata.name='ai-model-service-v1'" in out
    assert nothing_starts == []


def test_pulumi_program_that_raises(nothing_starts: list[str], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("pulumi")
    program = tmp_path / "__main__.py"
    program.write_text("raise RuntimeError('cannot reach the config service')\n")
    rc = _cli.main(["verify", str(SPEC), "--pulumi", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(program) in err and "failed under mocks" in err and "cannot reach the config service" in err
    assert nothing_starts == []


@pytest.mark.parametrize(("text", "expected"), [
    ("replicaCount: 3\n", "document 1 is not a Kubernetes object"),
    ("kind: Service\n  spec: [\n", "not valid YAML at line"),
])
def test_manifest_that_is_not_kubernetes_yaml(nothing_starts: list[str], tmp_path: Path, text: str, expected: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "values.yaml"
    bad.write_text(text)
    assert _cli.main(["verify", str(SPEC), "--manifests", str(MENDED), str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and expected in err
    assert nothing_starts == []


def test_image_without_local_command_is_exit_2_naming_each_image(
        nothing_starts: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("version_header: x-model-version\n")
    assert _cli.main(["verify", str(spec), "--manifests", str(MENDED)]) == 2
    err = capsys.readouterr().err
    assert "my_model_v1:latest" in err and "my_model_v2:latest" in err and "local_commands:" in err
    assert nothing_starts == []


def test_two_splits_for_one_apex_and_no_split(nothing_starts: list[str], tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    text = MENDED.read_text()
    second = tmp_path / "second.yaml"
    second.write_text(text.split("---")[-1].replace("name: ai-model-split", "name: ai-model-split-2"))
    assert _cli.main(["verify", str(SPEC), "--manifests", str(MENDED), str(second)]) == 2
    err = capsys.readouterr().err
    assert "2 split objects have apex Service 'ai-model-service'" in err and "ai-model-split-2" in err
    no_split = tmp_path / "no-split.yaml"
    no_split.write_text("---".join(text.split("---")[:-1]))
    assert _cli.main(["verify", str(SPEC), "--manifests", str(no_split)]) == 2
    assert "no TrafficSplit" in capsys.readouterr().err
    assert nothing_starts == []


def test_weights_cannot_override_the_objects(nothing_starts: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert _cli.main(["verify", str(SPEC), "--manifests", str(MENDED), "--weights", "v1=1,v2=1"]) == 2
    assert "--weights cannot be combined with --manifests" in capsys.readouterr().err
    assert nothing_starts == []


def test_plan_with_manifests_lists_the_users_objects(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert _cli.main(["plan", "--backend", "kind", str(SPEC), "--manifests", str(MENDED)]) == 0
    out = capsys.readouterr().out
    assert ("apply the experiment: Deployment/ai-model-v1, Deployment/ai-model-v2, Service/ai-model-service-v1, "
            "Service/ai-model-service-v2, Service/ai-model-service, TrafficSplit/ai-model-split") in out
    assert "load image my_model_v1:latest into the kind nodes" in out


def test_lint_reads_standard_input(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO((DATA / "starting_point.yaml").read_text()))
    assert _cli.main(["lint", "-"]) == 1
    out = capsys.readouterr().out
    assert len(out.splitlines()) == 3 and all(line.startswith("<stdin>: ") for line in out.splitlines())

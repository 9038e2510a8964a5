"""Offline checks of ``fixtures/Dockerfile``: no Docker daemon needed.

The image is built with ``fixtures/`` as the build context, so every COPY source must exist
there; it must run as a numeric non-root user (Kubernetes ``runAsNonRoot`` can only verify
numeric UIDs), listen where the manifests expect, and install only pinned requirements.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
DOCKERFILE = FIXTURES / "Dockerfile"
CONTAINER_PORT = 8080


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):
            continue  # comment lines inside a continuation are ignored by Docker too
        if not buf:
            start = number
        if line.endswith("\\"):
            buf.append(line[:-1].strip())
            continue
        buf.append(line)
        joined = " ".join(part for part in buf if part)
        keyword, _, args = joined.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
        buf = []
    assert not buf, "Dockerfile ends inside a line continuation"
    return out


INSTRUCTIONS = parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def _all(keyword: str) -> list[Instruction]:
    return [i for i in INSTRUCTIONS if i.keyword == keyword]


def _one(keyword: str) -> Instruction:
    found = _all(keyword)
    assert len(found) == 1, f"expected exactly one {keyword}, found {len(found)}"
    return found[0]


def _exec_form(instruction: Instruction) -> list[str]:
    args = json.loads(instruction.args)
    assert isinstance(args, list) and all(isinstance(a, str) for a in args), instruction
    return args


def _copy_sources(instruction: Instruction) -> list[str]:
    words = instruction.args.split()
    assert not any(w.startswith("--from") for w in words), "multi-stage COPY is not expected here"
    words = [w for w in words if not w.startswith("--")]
    assert len(words) >= 2, instruction
    return words[:-1]


def _env_pairs() -> dict[str, str]:
    pairs: dict[str, str] = {}
    for inst in _all("ENV"):
        for item in inst.args.split():
            key, sep, value = item.partition("=")
            assert sep, f"use ENV KEY=value (line {inst.line})"
            pairs[key] = value.strip('"')
    return pairs


def _dockerignore_patterns() -> list[str]:
    path = FIXTURES / ".dockerignore"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def test_base_image_is_an_exact_python_3_11_slim_release() -> None:
    # Pinned to a patch release: the plan of an installed wheel uses no floating public tag.
    assert re.fullmatch(r"python:3\.11\.\d+-slim", _one("FROM").args)


def test_every_copy_source_exists_in_the_build_context() -> None:
    copies = _all("COPY") + _all("ADD")
    assert copies, "the image must copy the server in"
    assert not _all("ADD"), "use COPY: ADD can fetch URLs and unpack archives"
    ignored = _dockerignore_patterns()
    for inst in copies:
        for src in _copy_sources(inst):
            assert not Path(src).is_absolute() and ".." not in Path(src).parts, src
            assert (FIXTURES / src).exists(), f"COPY source {src!r} (line {inst.line}) is not in fixtures/"
            assert not any(fnmatch.fnmatch(src, pat) for pat in ignored), f"{src} is excluded by .dockerignore"


def test_runs_as_numeric_non_root_user() -> None:
    users = _all("USER")
    assert users, "no USER: the container would run as root"
    last = users[-1]
    uid, _, gid = last.args.partition(":")
    assert uid.isdigit() and int(uid) != 0, f"USER must be a numeric non-zero UID, got {last.args!r}"
    if gid:
        assert gid.isdigit() and int(gid) != 0, f"group must be a numeric non-zero GID, got {gid!r}"
    # Nothing may run as root after the switch (the switch must be the last privilege change).
    assert all(i.line < last.line for i in _all("RUN"))


def test_user_matches_the_manifests_security_context() -> None:
    manifests = pytest.importorskip("pytest_abtraffic._manifests")
    run_as = getattr(manifests, "RUN_AS_USER", None)
    if run_as is None:
        pytest.skip("the manifest generator sets no runAsUser")
    assert _all("USER")[-1].args.partition(":")[0] == str(run_as)


def test_exposes_the_port_the_server_listens_on() -> None:
    assert _one("EXPOSE").args.split() == [str(CONTAINER_PORT)]
    cmd = _exec_form(_one("CMD"))
    assert cmd[cmd.index("--port") + 1] == str(CONTAINER_PORT)
    # Bound to all interfaces inside the pod, or the Linkerd proxy and kubelet probes cannot reach it.
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0"


def test_port_matches_the_reference_variant_and_manifests() -> None:
    spec = pytest.importorskip("pytest_abtraffic._spec")
    if hasattr(spec, "reference_variant"):
        assert spec.reference_variant("v1").port == CONTAINER_PORT
    ports: set[int] = set()
    for path in (ROOT / "manifests").rglob("*.y*ml"):
        ports.update(int(p) for p in re.findall(r"containerPort:\s*(\d+)", path.read_text(encoding="utf-8")))
    if ports:
        assert CONTAINER_PORT in ports


def test_cmd_runs_the_ai_model_module() -> None:
    cmd = _exec_form(_one("CMD"))
    assert cmd[:3] == ["python", "-m", "ai_model"]
    assert (FIXTURES / "ai_model" / "__main__.py").is_file()
    assert any(src.rstrip("/") == "ai_model" for inst in _all("COPY") for src in _copy_sources(inst))


def test_default_version_and_python_path() -> None:
    env = _env_pairs()
    assert env["MODEL_VERSION"] == "v1"
    workdir = _one("WORKDIR").args
    assert env.get("PYTHONPATH", workdir) == workdir


def test_healthcheck_uses_python_urllib_on_healthz() -> None:
    inst = _one("HEALTHCHECK")
    _, _, exec_part = inst.args.partition("CMD ")
    argv = json.loads(exec_part)
    assert argv[:2] == ["python", "-c"]
    assert "urllib.request" in argv[2]
    assert f"127.0.0.1:{CONTAINER_PORT}/healthz" in argv[2]
    compile(argv[2], "<healthcheck>", "exec")  # the one-liner is valid Python


def test_requirements_are_pinned() -> None:
    lines = (FIXTURES / "requirements.txt").read_text(encoding="utf-8").splitlines()
    reqs = [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    names = set()
    for req in reqs:
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([0-9][A-Za-z0-9.+!-]*)", req)
        assert match, f"requirement {req!r} is not pinned with =="
        names.add(match.group(1).lower())
    assert {"uvicorn", "httptools"} <= names
    assert not names & {"numpy", "scikit-learn", "scipy", "uvloop"}, "inference must stay pure Python"
    assert any("requirements.txt" in i.args for i in _all("RUN")), "requirements.txt is never installed"


def test_server_imports_only_stdlib_and_pinned_packages() -> None:
    reqs = (FIXTURES / "requirements.txt").read_text(encoding="utf-8")
    pinned = {m.lower() for m in re.findall(r"^([A-Za-z0-9_.-]+)==", reqs, flags=re.MULTILINE)}
    for path in (FIXTURES / "ai_model").glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                assert top in sys.stdlib_module_names or top.lower() in pinned, f"{path.name} imports {top}"

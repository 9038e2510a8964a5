"""Which command-line tools the kind backend needs, and a clear error when one is missing.

Nothing is ever downloaded by the kit: a missing or wrong-version tool is a PrerequisiteError that
says what to install and where from. The check runs before any side effect: first every binary is
looked up on PATH (all missing ones are reported at once, nothing is run), then each one's version
command runs (read-only) and is compared with the pinned version where the kit depends on it.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .._errors import CommandError, PrerequisiteError
from .._proc import Completed
from .._proc import run as default_run
from ._settings import KIND_NODE_IMAGE, KIND_VERSION, KUBECTL_VERSION, ClusterSettings

Runner = Callable[..., Completed]
Which = Callable[[str], str | None]
VERSION_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Tool:
    """One binary the kit runs: how to ask its version and how to install it."""

    name: str
    version_argv: tuple[str, ...]
    purpose: str

    def install_hint(self, settings: ClusterSettings) -> str:
        return _HINTS[self.name](settings)


@dataclass(frozen=True)
class ToolInfo:
    name: str
    path: str
    version: str


def _linkerd_hint(settings: ClusterSettings) -> str:
    v = settings.linkerd_version
    channel = "edge" if v.startswith("edge-") else "stable"
    return (f"install the Linkerd CLI {v}: curl --proto '=https' --tlsv1.2 -sSfL https://run.linkerd.io/install-{channel}"
            f" | LINKERD2_VERSION={v} sh  (or the release binary https://github.com/linkerd/linkerd2/releases/"
            f"download/{v}/linkerd2-cli-{v}-linux-amd64), then add ~/.linkerd2/bin to PATH")


def _smi_hint(settings: ClusterSettings) -> str:
    v = settings.smi_version
    return (f"install the linkerd-smi CLI {v}: the release binary https://github.com/linkerd/linkerd-smi/releases/"
            f"download/{v}/linkerd-smi-{v.removeprefix('v')}-linux-amd64 saved as 'linkerd-smi' on PATH "
            "(the 'linkerd smi' command runs it)")


_HINTS: dict[str, Callable[[ClusterSettings], str]] = {
    "docker": lambda s: "install Docker Engine and start it: https://docs.docker.com/engine/install/",
    "kind": lambda s: (f"install kind {KIND_VERSION}: https://kind.sigs.k8s.io/docs/user/quick-start/#installation "
                       f"(curl -Lo ./kind https://kind.sigs.k8s.io/dl/{KIND_VERSION}/kind-linux-amd64)"),
    "kubectl": lambda s: (f"install kubectl {KUBECTL_VERSION}: https://kubernetes.io/docs/tasks/tools/#kubectl "
                          f"(curl -LO https://dl.k8s.io/release/{KUBECTL_VERSION}/bin/linux/amd64/kubectl)"),
    "linkerd": _linkerd_hint,
    "linkerd-smi": _smi_hint,
}

DOCKER = Tool("docker", ("docker", "version", "--format", "{{.Server.Version}}"),
              "builds the images and runs the kind nodes")
KIND = Tool("kind", ("kind", "version"), "creates the cluster and loads images into it")
KUBECTL = Tool("kubectl", ("kubectl", "version", "--client", "-o", "json"), "applies Linkerd's install manifests")
LINKERD = Tool("linkerd", ("linkerd", "version", "--client", "--short"), "renders and checks the Linkerd install")
LINKERD_SMI = Tool("linkerd-smi", ("linkerd-smi", "version"), "renders and checks linkerd-smi (SMI TrafficSplit)")


def required_tools(backend: str, *, needs_smi: bool) -> list[Tool]:
    """Binaries ``backend`` runs. The existing backend talks to the API only (no binary)."""
    if backend != "kind":
        return []
    tools = [DOCKER, KIND, KUBECTL, LINKERD]
    if needs_smi:
        tools.append(LINKERD_SMI)
    return tools


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def _parse(tool: Tool, out: str) -> str:
    text = out.strip()
    if tool.name == "kind":
        match = re.search(r"kind (v\d+\.\d+\.\d+\S*)", text)
        return match[1] if match else text
    if tool.name == "kubectl":
        try:
            return str(json.loads(text)["clientVersion"]["gitVersion"])
        except (ValueError, KeyError, TypeError):
            return text.splitlines()[0] if text else ""
    return text.splitlines()[0].strip() if text else ""


def check_prerequisites(
    backend: str,
    settings: ClusterSettings,
    *,
    needs_smi: bool,
    which: Which = shutil.which,
    runner: Runner = default_run,
) -> dict[str, ToolInfo]:
    """Look every tool up, then check the versions that matter. Raise one PrerequisiteError
    listing every problem, each with how to fix it."""
    tools = required_tools(backend, needs_smi=needs_smi)
    paths = {tool.name: which(tool.name) for tool in tools}
    missing = [tool for tool in tools if paths[tool.name] is None]
    if missing:
        lines = [f"- {tool.name} ({tool.purpose}): {tool.install_hint(settings)}" for tool in missing]
        raise PrerequisiteError(
            f"the {backend} backend needs {', '.join(t.name for t in missing)}, not found on PATH. "
            "The kit never downloads tools itself:\n" + "\n".join(lines))
    found: dict[str, ToolInfo] = {}
    problems: list[str] = []
    for tool in tools:
        path = paths[tool.name]
        assert path is not None
        try:
            done = runner([path, *tool.version_argv[1:]], timeout=VERSION_TIMEOUT_S)
        except CommandError as exc:
            if tool.name == "docker":
                problems.append("- docker: the Docker engine is not reachable (is it running? is DOCKER_HOST "
                                f"right?): {exc.stderr_tail or exc}")
            else:
                problems.append(f"- {tool.name}: '{' '.join(tool.version_argv)}' failed: {exc}")
            continue
        version = _parse(tool, done.stdout)
        found[tool.name] = ToolInfo(tool.name, path, version)
        problems.extend(_version_problems(tool, version, settings))
    if problems:
        raise PrerequisiteError(f"the {backend} backend cannot run with the tools found:\n" + "\n".join(problems))
    return found


def _version_problems(tool: Tool, version: str, settings: ClusterSettings) -> list[str]:
    if tool.name == "linkerd" and version != settings.linkerd_version:
        # The CLI installs its own release: a different CLI would install a different Linkerd.
        return [f"- linkerd: the CLI is {version or 'of unknown version'} but the kit pins "
                f"{settings.linkerd_version} (set linkerd_version to use another release); "
                f"{tool.install_hint(settings)}"]
    if tool.name == "linkerd-smi" and version.lstrip("v") != settings.smi_version.lstrip("v"):
        return [f"- linkerd-smi: the CLI is {version or 'of unknown version'} but the kit pins "
                f"{settings.smi_version}; {tool.install_hint(settings)}"]
    if tool.name == "kind" and _version_tuple(version) < _version_tuple(KIND_VERSION) and \
            settings.kind_node_image == KIND_NODE_IMAGE:
        # Node images are built for a kind release; older kind may not boot the pinned one.
        return [f"- kind: {version} is older than {KIND_VERSION}, which the pinned node image "
                f"{KIND_NODE_IMAGE.split('@')[0]} needs; {tool.install_hint(settings)}"]
    return []


def version_steps_argv(backend: str, *, needs_smi: bool) -> list[tuple[str, Sequence[str]]]:
    """(tool, argv) of the read-only version commands, for the printed plan."""
    return [(tool.name, tool.version_argv) for tool in required_tools(backend, needs_smi=needs_smi)]


__all__ = [
    "DOCKER",
    "KIND",
    "KUBECTL",
    "LINKERD",
    "LINKERD_SMI",
    "Tool",
    "ToolInfo",
    "check_prerequisites",
    "required_tools",
    "version_steps_argv",
]

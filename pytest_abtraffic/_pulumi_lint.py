"""Lint a Pulumi (Python, pulumi_kubernetes) program without a Pulumi engine, CLI, cloud or cluster.

The program runs in a subprocess under Pulumi's own mocks (``pulumi.runtime.set_mocks``). Every resource it
registers is recorded with its type, resource name and inputs, and turned into the Kubernetes object Pulumi
would send: a resource without ``metadata.name`` gets the auto-name ``<resource name>-<random suffix>`` and
the ``pulumi.com/autonamed`` annotation, as pulumi-kubernetes does. The objects then go through
``lint_objects`` plus one Pulumi-only check, ``pulumi-auto-named``: a split that refers to an auto-named
Service (or Deployment) by its resource name, a name that will not exist on the cluster.

Run as ``python -m pytest_abtraffic._pulumi_lint PROGRAM OUTPUT.json`` it is the collector itself.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import runpy
import string
import sys
import tempfile
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ._errors import CommandError, PrerequisiteError, UsageError
from ._lint import Finding, analyse, sorted_findings
from ._proc import run, tail

AUTONAMED_ANNOTATION = "pulumi.com/autonamed"
PULUMI_CODE = "pulumi-auto-named"
DEFAULT_TIMEOUT_S = 120.0
_INSTALL_HINT = "pip install pytest-abtraffic[pulumi]"
_EXIT_NO_PULUMI = 3
_EXIT_PROGRAM_FAILED = 4


@dataclass(frozen=True)
class PulumiResource:
    """One resource the program registered."""

    type: str
    name: str
    inputs: Mapping[str, Any]
    autonamed: bool

    @property
    def is_kubernetes_object(self) -> bool:
        return self.type.startswith("kubernetes:") and not self.type.startswith("kubernetes:yaml")


# ---------------------------------------------------------------------------------------------------
# Parent side


def program_entry(program: str | Path) -> Path:
    """The Python file Pulumi would run for ``program`` (a file, or a project directory)."""
    path = Path(program)
    if path.is_file():
        return path
    if not path.is_dir():
        raise UsageError(f"{path}: no such Pulumi program (give a project directory or a .py file)")
    main_dir = path
    project = next((p for p in (path / "Pulumi.yaml", path / "Pulumi.yml") if p.is_file()), None)
    if project is not None:
        try:
            data = yaml.safe_load(project.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"{project}: cannot read the Pulumi project file: {exc}") from None
        main = data.get("main") if isinstance(data, Mapping) else None
        if isinstance(main, str) and main:
            main_dir = path / main
            if main_dir.is_file():
                return main_dir
    entry = main_dir / "__main__.py"
    if not entry.is_file():
        raise UsageError(f"{path}: no __main__.py found; give the program's .py file or its project directory")
    return entry


def collect_resources(program: str | Path, *, timeout: float = DEFAULT_TIMEOUT_S) -> list[PulumiResource]:
    """Run ``program`` under Pulumi mocks in a subprocess and return what it registered, in order."""
    entry = program_entry(program)
    if importlib.util.find_spec("pulumi") is None:
        raise PrerequisiteError(f"linting a Pulumi program needs the pulumi and pulumi-kubernetes packages; "
                                f"install them with `{_INSTALL_HINT}`")
    package_parent = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([package_parent, *filter(None, [env.get("PYTHONPATH")])])
    with tempfile.TemporaryDirectory(prefix="abtraffic-pulumi-") as tmp:
        out = Path(tmp) / "resources.json"
        argv = [sys.executable, "-m", "pytest_abtraffic._pulumi_lint", str(entry.resolve()), str(out)]
        done = run(argv, timeout=timeout, env=env, check=False, cwd=str(entry.resolve().parent))
        if done.returncode == _EXIT_NO_PULUMI:
            raise PrerequisiteError(f"{tail(done.stderr)}; install with `{_INSTALL_HINT}`")
        if done.returncode == _EXIT_PROGRAM_FAILED:
            raise UsageError(f"{entry}: the Pulumi program failed under mocks:\n{tail(done.stderr)}")
        if done.returncode != 0 or not out.is_file():
            raise CommandError(argv, done.returncode, tail(done.stderr or done.stdout),
                               note="collecting Pulumi resources")
        records = json.loads(out.read_text(encoding="utf-8"))
    return [PulumiResource(r["type"], r["name"], r["inputs"], bool(r["autonamed"])) for r in records]


def to_object(resource: PulumiResource) -> dict[str, Any]:
    """The Kubernetes object a pulumi_kubernetes resource stands for."""
    obj = dict(resource.inputs)
    if "apiVersion" not in obj or "kind" not in obj:
        # Type token kubernetes:<group>/<version>:<Kind>; the core group is written "core".
        _, _, rest = resource.type.partition(":")
        group_version, _, kind = rest.rpartition(":")
        obj.setdefault("apiVersion", group_version.removeprefix("core/"))
        obj.setdefault("kind", kind)
    return obj


def _autoname_findings(path: str, resources: list[PulumiResource], indexes: list[int],
                       model_refs: list[Any]) -> list[tuple[int, int, Finding]]:
    out: list[tuple[int, int, Finding]] = []
    by_resource_name: dict[str, list[tuple[int, PulumiResource]]] = {}
    for index, res in zip(indexes, resources, strict=True):
        if res.autonamed:
            by_resource_name.setdefault(res.name, []).append((index, res))
    seen: set[tuple[int, str]] = set()
    for ref in model_refs:
        for index, res in by_resource_name.get(ref.target_name, []):
            kind = str(res.inputs.get("kind") or res.type.rpartition(":")[2])
            actual = str(res.inputs.get("metadata", {}).get("name", ""))
            if actual == ref.target_name or (index, ref.source.label) in seen:
                continue
            seen.add((index, ref.source.label))
            message = (f"Pulumi resource {res.name!r} has no metadata.name, so Pulumi names the {kind} {actual!r}; "
                       f"{ref.source.label} refers to it as {ref.target_name!r} ({ref.field}), which will not "
                       f"exist. Set metadata.name={ref.target_name!r} on the resource")
            out.append((index, 10_000 + len(out), Finding(path, kind, actual, message, PULUMI_CODE)))
    return out


def lint_pulumi_program(program: str | Path, *, timeout: float = DEFAULT_TIMEOUT_S) -> list[Finding]:
    """Findings for a Pulumi Python program: ``lint_objects`` checks plus ``pulumi-auto-named``.

    Findings carry the program's entry file as their path. Raises PrerequisiteError when pulumi is not
    installed and UsageError when the program is missing or fails under mocks.
    """
    entry = program_entry(program)
    path = str(entry)
    kube = [r for r in collect_resources(entry, timeout=timeout) if r.is_kubernetes_object]
    objects = [to_object(r) for r in kube]
    # The resource name is what the user meant a split to refer to: checks of pods and ports follow it.
    intended = {i: r.name for i, r in enumerate(kube) if r.autonamed}
    model = analyse([(path, obj) for obj in objects], intended_names=intended)
    extra = _autoname_findings(path, kube, list(range(len(kube))), model.references)
    return sorted_findings([*model.findings, *extra])


# ---------------------------------------------------------------------------------------------------
# Child side: runs inside the subprocess


def _plain_numbers(value: Any) -> Any:
    """Pulumi's wire format turns every number into a float; give whole numbers back their int type."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _plain_numbers(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain_numbers(v) for v in value]
    return value


def _suffix(type_token: str, name: str) -> str:
    # Pulumi draws a random suffix; seed it from the resource so repeated runs agree.
    rng = random.Random(f"{type_token}::{name}")
    return "".join(rng.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def _collect_main(argv: list[str]) -> int:
    program, out_path = argv
    # Imported by name so the module type-checks the same with and without pulumi installed.
    try:
        pulumi: Any = importlib.import_module("pulumi")
        stack: Any = importlib.import_module("pulumi.runtime.stack")
        sync_await: Any = importlib.import_module("pulumi.runtime.sync_await")
    except ImportError as exc:
        print(f"cannot import pulumi: {exc}", file=sys.stderr)
        return _EXIT_NO_PULUMI

    records: list[dict[str, Any]] = []

    def new_resource(self: Any, args: Any) -> tuple[str, dict[str, Any]]:
        inputs = _plain_numbers(dict(args.inputs))
        autonamed = False
        if args.typ.startswith("kubernetes:") and not args.typ.startswith("kubernetes:yaml"):
            meta = dict(inputs.get("metadata") or {})
            if not meta.get("name") and not meta.get("generateName"):
                # What pulumi-kubernetes does: <resource name>-<random suffix>, annotated.
                meta["name"] = f"{args.name}-{_suffix(args.typ, args.name)}"
                meta["annotations"] = {**dict(meta.get("annotations") or {}), AUTONAMED_ANNOTATION: "true"}
                autonamed = True
            inputs["metadata"] = meta
        records.append({"type": args.typ, "name": args.name, "inputs": inputs, "autonamed": autonamed})
        return (f"{args.name}-id", inputs)

    def call(self: Any, args: Any) -> dict[str, Any]:
        if args.token == "kubernetes:yaml:decode":  # noqa: S105 - an invoke token, not a secret
            # Lets pulumi_kubernetes.yaml.ConfigFile expand its YAML without the provider.
            return {"result": [d for d in yaml.safe_load_all(args.args.get("text", "")) if d]}
        return {}

    mocks_class = type("RecordingMocks", (pulumi.runtime.Mocks,), {"new_resource": new_resource, "call": call})
    pulumi.runtime.set_mocks(mocks_class(), preview=False)
    # Mocks see registrations in whatever order the event loop runs them; stack transformations run
    # in the resource constructors, so they give the program's own order.
    created: list[tuple[str, str]] = []

    def remember(args: Any) -> None:
        created.append((args.type_, args.name))

    pulumi.runtime.register_stack_transformation(remember)
    sys.path.insert(0, str(Path(program).parent))

    def run_program() -> None:
        runpy.run_path(program, run_name="__main__")

    try:
        sync_await._sync_await(stack.run_pulumi_func(run_program))
    except BaseException as exc:  # the user's program: report whatever it raised
        traceback.print_exception(exc, file=sys.stderr)
        return _EXIT_PROGRAM_FAILED
    positions: dict[tuple[str, str], list[int]] = {}
    for position, key in enumerate(created):
        positions.setdefault(key, []).append(position)

    def program_order(record: dict[str, Any]) -> int:
        slots = positions.get((record["type"], record["name"]))
        return slots.pop(0) if slots else len(created)

    records.sort(key=program_order)
    Path(out_path).write_text(json.dumps(records, default=str), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_collect_main(sys.argv[1:]))


__all__ = ["PulumiResource", "collect_resources", "lint_pulumi_program", "program_entry", "to_object"]

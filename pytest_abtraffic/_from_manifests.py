"""Experiments from the user's own objects: plain YAML, ``helm template``/``kustomize build`` output or a
Pulumi program.

The kit reads what the objects already say: the apex Service, the split (SMI TrafficSplit v1alpha1 /
v1alpha2 or an HTTPRoute with weighted Service backendRefs) and its weights, each backend Service and the
one Deployment its selector picks, that Deployment's image, container port and replicas. A variant is
named by its pods' ``version`` label (else its backend Service's name): the value the model server must
send in the version header. What objects cannot say (the version header, the load, failure-policy checks,
scenarios and, for the local backend, how to run an image as a process) comes from an optional SPEC file.

On a cluster the objects are applied as they are, with only their namespace fields rewritten to the kit's
own namespace; locally the same split, apex and weights run as processes through ``local_commands``.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

from ._errors import SpecError, UsageError
from ._lint import (
    ROUTE_GROUPS,
    SMI_GROUP,
    SMI_SERVED,
    WORKLOAD_KINDS,
    Finding,
    analyse,
    sorted_findings,
)
from ._spec import ExperimentSpec, Variant, parse_weight, spec_from_mapping

STDIN = "-"
CORE_GROUPS = (None, "", "core")
# Keys of a SPEC file that only make sense with manifests (the rest is an ordinary spec).
LOCAL_COMMANDS_KEY = "local_commands"
# What the objects declare, so a SPEC file must not (it would silently disagree with them).
_FROM_OBJECTS = ("variants", "split", "model", "service_port", "namespace")
# Kinds that are not namespaced: the kit applies only into its own namespace, so it refuses them.
CLUSTER_SCOPED = frozenset({
    "Namespace", "Node", "PersistentVolume", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "StorageClass", "PriorityClass", "IngressClass", "RuntimeClass", "APIService", "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration", "GatewayClass",
})
_PLACEHOLDER_HELP = "{python}, {host}, {port}, {version}"


class ManifestLintError(UsageError):
    """The objects have lint findings: nothing is started until they are fixed."""

    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings = list(findings)
        lines = "\n".join(str(f) for f in self.findings)
        super().__init__(f"{len(self.findings)} problem(s) found in the objects; nothing was started "
                         f"(`abtraffic lint --fix` prints them with the mechanical mends):\n{lines}")


# ---------------------------------------------------------------------------------------------------
# Reading objects


@dataclass(frozen=True)
class SourceObject:
    """One Kubernetes object and where it came from (a file path, ``<stdin>`` or a Pulumi program)."""

    source: str
    obj: Mapping[str, Any]


def _yaml_error(where: str, exc: yaml.YAMLError) -> UsageError:
    mark = getattr(exc, "problem_mark", None)
    at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return UsageError(f"{where}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}")


def parse_objects(text: str, where: str) -> list[Mapping[str, Any]]:
    """Kubernetes objects of a multi-document YAML text (``kind: List`` expanded, empty documents skipped).

    A document that is not a Kubernetes object (no ``apiVersion``/``kind``) is an error naming ``where``
    and the document number: a values file or a typo must not silently drop out of the experiment.
    """
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise _yaml_error(where, exc) from None
    out: list[Mapping[str, Any]] = []
    for number, doc in enumerate(docs, 1):
        if doc is None:
            continue  # `---` separators and comment-only documents, as helm template prints them
        items = doc.get("items") if isinstance(doc, Mapping) and doc.get("kind") == "List" else [doc]
        for item in items if isinstance(items, list) else [doc]:
            if (not isinstance(item, Mapping) or not isinstance(item.get("apiVersion"), str)
                    or not isinstance(item.get("kind"), str) or not item.get("kind")):
                shown = type(item).__name__ if not isinstance(item, Mapping) else \
                    "a mapping without apiVersion and kind"
                raise UsageError(f"{where}: document {number} is not a Kubernetes object ({shown}); "
                                 "give Kubernetes YAML (objects with apiVersion, kind and metadata)")
            out.append(item)
    return out


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json") and p.is_file())
        if not found:
            raise UsageError(f"{path}: directory has no .yaml, .yml or .json files")
        return found
    if path.is_file():
        return [path]
    raise UsageError(f"{path}: no such file or directory")


def read_manifests(paths: Sequence[str | Path], *, stdin: IO[str] | None = None) -> list[SourceObject]:
    """Objects of files, directories (searched recursively) and ``-`` (standard input), in order."""
    if not paths:
        raise UsageError("no manifests given: pass YAML files, directories or '-' for standard input")
    out: list[SourceObject] = []
    read_stdin = False
    for given in paths:
        if str(given) == STDIN:
            if read_stdin:
                raise UsageError("'-' (standard input) given twice")
            read_stdin = True
            text = (stdin or sys.stdin).read()
            out.extend(SourceObject("<stdin>", obj) for obj in parse_objects(text, "<stdin>"))
            continue
        for file in _files(Path(given)):
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"{file}: cannot read: {exc}") from None
            out.extend(SourceObject(str(file), obj) for obj in parse_objects(text, str(file)))
    if not out:
        raise UsageError(f"no Kubernetes objects found in {', '.join(str(p) for p in paths)}")
    return out


@dataclass(frozen=True)
class PulumiObjects:
    """What a Pulumi program registers, as Kubernetes objects, with its lint findings (one run)."""

    entry: str
    objects: tuple[SourceObject, ...]
    findings: tuple[Finding, ...]
    # Object index -> the Pulumi resource name of an auto-named object (what the author meant to call it).
    intended_names: Mapping[int, str] = field(default_factory=dict)


def read_pulumi(program: str | Path) -> PulumiObjects:
    """Run the program under Pulumi's mocks once: its objects and the findings ``lint --pulumi`` prints."""
    from ._pulumi_lint import _autoname_findings, collect_resources, program_entry, to_object

    entry = program_entry(program)
    kube = [r for r in collect_resources(entry) if r.is_kubernetes_object]
    objects = [to_object(r) for r in kube]
    intended = {i: r.name for i, r in enumerate(kube) if r.autonamed}
    model = analyse([(str(entry), obj) for obj in objects], intended_names=intended)
    extra = _autoname_findings(str(entry), kube, list(range(len(kube))), model.references)
    findings = sorted_findings([*model.findings, *extra])
    return PulumiObjects(str(entry), tuple(SourceObject(str(entry), o) for o in objects), tuple(findings),
                         intended)


def lint_source_objects(objects: Sequence[SourceObject]) -> list[Finding]:
    return sorted_findings(analyse([(o.source, o.obj) for o in objects]).findings)


# ---------------------------------------------------------------------------------------------------
# The experiment the objects declare


def _get(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _labels(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, Mapping) else {}


def _name(obj: Mapping[str, Any]) -> str:
    return str(_get(obj, "metadata", "name") or "")


def _ns(obj: Mapping[str, Any]) -> str | None:
    value = _get(obj, "metadata", "namespace")
    return str(value) if value else None


def _label(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('kind')}/{_name(obj) or '<no name>'}"


@dataclass(frozen=True)
class ManifestExperiment(ExperimentSpec):
    """An ``ExperimentSpec`` whose names and objects come from the user's manifests.

    ``apex_service``, ``service_name`` and ``deployment_name`` give the objects' own names; ``objects``
    are the user's objects as given (the cluster backends apply them, namespace rewritten).
    """

    apex: str = ""
    backend_services: Mapping[str, str] = field(default_factory=dict)
    deployments: Mapping[str, str] = field(default_factory=dict)
    pod_selectors: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    split_kind: str = ""
    split_name: str = ""
    objects: tuple[SourceObject, ...] = ()
    # Variant -> image of variants that have no local command (the local backend refuses them).
    images: Mapping[str, str] = field(default_factory=dict)

    @property
    def apex_service(self) -> str:
        return self.apex or super().apex_service

    def service_name(self, variant: str) -> str:
        return self.backend_services.get(variant) or super().service_name(variant)

    def deployment_name(self, variant: str) -> str:
        return self.deployments.get(variant) or super().deployment_name(variant)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(o.source for o in self.objects))

    def describe_source(self) -> str:
        return (f"{self.split_kind}/{self.split_name} -> apex Service {self.apex_service} "
                f"from {', '.join(self.sources)}")


@dataclass
class _Split:
    obj: Mapping[str, Any]
    apex: str
    namespace: str | None
    port: int | None
    backends: Sequence[tuple[str, Any, int | None]]  # (Service name, raw weight, backendRef port)
    split_api: str
    route_group: str = "gateway.networking.k8s.io"


def _splits(objects: Sequence[Mapping[str, Any]]) -> list[_Split]:
    found: list[_Split] = []
    for obj in objects:
        api_version = str(obj.get("apiVersion") or "")
        group, _, version = api_version.rpartition("/")
        spec = obj.get("spec")
        if obj.get("kind") == "TrafficSplit" and group == SMI_GROUP:
            if version not in SMI_SERVED:
                raise SpecError(_label(obj), f"{api_version} is not served by linkerd-smi (only "
                                f"{', '.join(SMI_SERVED)}); use an HTTPRoute for header matches")
            smi: list[tuple[str, Any, int | None]] = [(str(_get(b, "service") or ""), _get(b, "weight"), None)
                                                      for b in _list(_get(spec, "backends"))]
            found.append(_Split(obj, str(_get(spec, "service") or ""), _ns(obj), None, smi, f"smi-{version}"))
        elif obj.get("kind") == "HTTPRoute" and group in ROUTE_GROUPS:
            for parent in _list(_get(spec, "parentRefs")):
                if _get(parent, "kind") != "Service" or _get(parent, "group") not in CORE_GROUPS:
                    continue
                rules = _list(_get(spec, "rules"))
                defaults = [r for r in rules if not _list(_get(r, "matches"))]
                if len(rules) != 1 and len(defaults) != 1:
                    raise SpecError(_label(obj), f"has {len(rules)} rules; the kit verifies the weights of one "
                                    "rule: give the route a single rule, or exactly one rule without matches")
                rule = rules[0] if len(rules) == 1 else defaults[0]
                backends: list[tuple[str, Any, int | None]] = []
                for ref in _list(_get(rule, "backendRefs")):
                    if _get(ref, "group") not in CORE_GROUPS or _get(ref, "kind") not in (None, "Service"):
                        raise SpecError(_label(obj), f"backendRef {_get(ref, 'name')!r} is not a Service; the kit "
                                        "verifies splits between Services")
                    weight = _get(ref, "weight")
                    backends.append((str(_get(ref, "name") or ""), 1 if weight is None else weight,
                                     _get(ref, "port")))
                port = _get(parent, "port")
                found.append(_Split(obj, str(_get(parent, "name") or ""), _get(parent, "namespace") or _ns(obj),
                                    port if isinstance(port, int) else None, backends, "httproute", group))
    return found


def _find(objects: Sequence[Mapping[str, Any]], kind: str, name: str,
          namespace: str | None) -> Mapping[str, Any] | None:
    for obj in objects:
        if obj.get("kind") == kind and _name(obj) == name and (namespace is None or _ns(obj) in (None, namespace)):
            return obj
    return None


def _template(obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    template = _get(obj, "spec", "template")
    return template if isinstance(template, Mapping) else None


def _workloads_for(objects: Sequence[Mapping[str, Any]], selector: Mapping[str, str],
                   namespace: str | None) -> list[Mapping[str, Any]]:
    out = []
    for obj in objects:
        if obj.get("kind") not in WORKLOAD_KINDS or obj.get("kind") in ("Pod", "Job", "CronJob"):
            continue
        labels = _labels(_get(_template(obj), "metadata", "labels"))
        if namespace is not None and _ns(obj) not in (None, namespace):
            continue
        if selector and all(labels.get(k) == v for k, v in selector.items()):
            out.append(obj)
    return out


def _container_and_port(workload: Mapping[str, Any], target: Any) -> tuple[Mapping[str, Any], int]:
    containers = [c for c in _list(_get(_template(workload), "spec", "containers")) if isinstance(c, Mapping)]
    if not containers:
        raise SpecError(_label(workload), "has no containers")
    for container in containers:
        for port in _list(container.get("ports")):
            if not isinstance(port, Mapping):
                continue
            if (isinstance(target, str) and port.get("name") == target) or port.get("containerPort") == target:
                return container, int(port["containerPort"])
    if isinstance(target, int):
        return containers[0], target
    if isinstance(target, str) and target.isdigit():
        return containers[0], int(target)
    raise SpecError(_label(workload), f"no container port named {target!r}")


def _ready_path(container: Mapping[str, Any]) -> str:
    # Kubernetes counts a container without a readiness probe as ready once it runs; locally the kit
    # still has to probe something, so it takes the probe's path when there is one and '/' otherwise.
    for probe in ("readinessProbe", "livenessProbe"):
        path = _get(container, probe, "httpGet", "path")
        if isinstance(path, str) and path.startswith("/"):
            return path
    return "/"


def _command_for(local_commands: Mapping[str, Sequence[str]], image: str, deployment: str) -> tuple[str, ...] | None:
    for key in (image, deployment):
        if key in local_commands:
            return tuple(local_commands[key])
    return None


def derive_experiment(objects: Sequence[SourceObject], base: ExperimentSpec | None = None, *,
                      local_commands: Mapping[str, Sequence[str]] | None = None) -> ManifestExperiment:
    """The experiment ``objects`` declare, with ``base``'s version header, load, failure policy and
    scenarios. Raises SpecError naming the object for a split the kit cannot verify."""
    base = base or ExperimentSpec(variants=(Variant("a"), Variant("b")))
    commands = dict(local_commands or {})
    raw = [o.obj for o in objects]
    splits = _splits(raw)
    if not splits:
        kinds = sorted({_label(o) for o in raw})
        raise SpecError("manifests", "no TrafficSplit (split.smi-spec.io) or HTTPRoute with a Service parent in "
                        f"{', '.join(dict.fromkeys(o.source for o in objects))}; found: {', '.join(kinds)}")
    apexes = {(s.apex, s.namespace) for s in splits}
    if len(apexes) > 1:
        shown = ", ".join(sorted(f"{a} ({_label(s.obj)})" for s in splits for a in [s.apex]))
        raise SpecError("manifests", f"the objects split {len(apexes)} apex Services ({shown}); verify one "
                        "experiment at a time: pass only that experiment's objects")
    if len(splits) > 1:
        shown = ", ".join(_label(s.obj) for s in splits)
        raise SpecError("manifests", f"{len(splits)} split objects have apex Service {splits[0].apex!r}: {shown}; "
                        "Linkerd applies one (a ServiceProfile from a TrafficSplit takes precedence over "
                        "HTTPRoutes): declare the split once")
    split = splits[0]
    apex = _find(raw, "Service", split.apex, split.namespace)
    if apex is None:
        raise SpecError(_label(split.obj), f"apex Service {split.apex!r} is not among the objects; create it "
                        "(`abtraffic lint --fix` adds one)")
    apex_ports = [p.get("port") for p in _list(_get(apex, "spec", "ports")) if isinstance(p, Mapping)]
    service_port = split.port or next((p for p in apex_ports if isinstance(p, int)), None)
    if service_port is None:
        raise SpecError(_label(apex), "the apex Service exposes no port")
    variants: list[Variant] = []
    services: dict[str, str] = {}
    deployments: dict[str, str] = {}
    selectors: dict[str, dict[str, str]] = {}
    images: dict[str, str] = {}
    for index, (service_name, weight, ref_port) in enumerate(split.backends):
        where = f"{_label(split.obj)} backend {index + 1}"
        service = _find(raw, "Service", service_name, split.namespace)
        if service is None:
            raise SpecError(where, f"backend Service {service_name!r} is not among the objects")
        selector = _labels(_get(service, "spec", "selector"))
        workloads = _workloads_for(raw, selector, split.namespace)
        text = ",".join(f"{k}={v}" for k, v in selector.items()) or "(none)"
        if not workloads:
            raise SpecError(_label(service), f"no Deployment behind backend Service {service_name!r}: its selector "
                            f"{text} matches no pod template among the objects")
        if len(workloads) > 1:
            raise SpecError(_label(service), f"selector {text} matches {len(workloads)} workloads "
                            f"({', '.join(_label(w) for w in workloads)}); a variant is one Deployment")
        workload = workloads[0]
        ports = [p for p in _list(_get(service, "spec", "ports")) if isinstance(p, Mapping)]
        wanted = ref_port if ref_port is not None else service_port
        service_entry = next((p for p in ports if p.get("port") == wanted), ports[0] if ports else {})
        target = service_entry.get("targetPort", service_entry.get("port", wanted))
        container, container_port = _container_and_port(workload, target)
        pod_labels = _labels(_get(_template(workload), "metadata", "labels"))
        name = pod_labels.get("version") or service_name
        image = str(container.get("image") or "")
        replicas = _get(workload, "spec", "replicas")
        variant = Variant(
            name=name,
            weight=weight if isinstance(weight, int | str) and not isinstance(weight, bool) else str(weight),
            replicas=int(replicas) if isinstance(replicas, int) and not isinstance(replicas, bool) else 1,
            port=container_port,
            image=image or None,
            command=_command_for(commands, image, _name(workload)),
            ready_path=_ready_path(container),
            live_path=_ready_path(container),
        )
        parse_weight(variant.weight, field_name=f"{where} ({service_name}).weight", split_api=split.split_api)
        variants.append(variant)
        services[name] = service_name
        deployments[name] = _name(workload)
        selectors[name] = selector
        images[name] = image
    pod_app = {v for s in selectors.values() for k, v in s.items() if k == "app"}
    model = next(iter(pod_app)) if len(pod_app) == 1 else split.apex
    changes: dict[str, Any] = {f.name: getattr(base, f.name) for f in dataclasses.fields(ExperimentSpec)}
    changes.update(model=model, variants=tuple(variants), namespace=None, split_api=split.split_api,
                   route_group=split.route_group, service_port=service_port, scenarios=())
    try:
        spec = ManifestExperiment(**changes, apex=split.apex, backend_services=services, deployments=deployments,
                                  pod_selectors=selectors, split_kind=str(split.obj.get("kind")),
                                  split_name=_name(split.obj), objects=tuple(objects), images=images)
    except SpecError as exc:
        raise SpecError(f"{_label(split.obj)}: {exc.field}", exc.message) from None
    if base.scenarios:
        from ._chaos import scenario_from_spec

        spec = dataclasses.replace(spec, scenarios=base.scenarios)
        scenario_from_spec(spec)  # validated against the variants the objects declare
    return spec


def check_local_commands(spec: ExperimentSpec) -> None:
    """The local backend runs every variant as a process: name every image without a local command."""
    if not isinstance(spec, ManifestExperiment):
        return
    missing = [v for v in spec.variants if not v.command]
    if not missing:
        return
    lines = "\n".join(f"    {spec.images.get(v.name) or spec.deployment_name(v.name)}: "
                      f"[\"{{python}}\", \"my_server.py\", \"--port\", \"{{port}}\"]   # variant {v.name}, "
                      f"Deployment {spec.deployment_name(v.name)}" for v in missing)
    images = ", ".join(spec.images.get(v.name) or f"(no image; Deployment {spec.deployment_name(v.name)})"
                       for v in missing)
    raise SpecError(LOCAL_COMMANDS_KEY, f"the local backend runs each image as a process, and no local command is "
                    f"given for {images}. Add them to the SPEC file (argv lists, placeholders {_PLACEHOLDER_HELP}; "
                    f"keys are images or Deployment names):\n  {LOCAL_COMMANDS_KEY}:\n{lines}")


# ---------------------------------------------------------------------------------------------------
# SPEC files that go with manifests


@dataclass(frozen=True)
class ManifestSettings:
    """A SPEC file read for manifests: the spec part and the local commands."""

    base: ExperimentSpec
    local_commands: Mapping[str, tuple[str, ...]]


def _commands(value: object) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(LOCAL_COMMANDS_KEY, "must be a mapping of image (or Deployment name) to an argv list")
    out: dict[str, tuple[str, ...]] = {}
    for key, argv in value.items():
        where = f"{LOCAL_COMMANDS_KEY}.{key}"
        if isinstance(argv, str):
            raise SpecError(where, "must be a list of arguments, not a shell string (the kit never runs commands "
                            "through a shell)")
        if not isinstance(argv, list | tuple) or not argv:
            raise SpecError(where, f"must be a non-empty list of arguments (placeholders {_PLACEHOLDER_HELP})")
        args = tuple(str(a) if isinstance(a, int | float) and not isinstance(a, bool) else a for a in argv)
        if not all(isinstance(a, str) and a for a in args):
            raise SpecError(where, "every argument must be a non-empty string")
        out[str(key)] = args
    return out


def manifest_settings_from_mapping(data: object) -> ManifestSettings:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SpecError("spec", f"must be a mapping, got {type(data).__name__}")
    rest = dict(data)
    commands = _commands(rest.pop(LOCAL_COMMANDS_KEY, None))
    given = [k for k in _FROM_OBJECTS if k in rest]
    if given:
        raise SpecError(given[0], "comes from the objects when verifying manifests; remove it from the SPEC file")
    scenarios = rest.pop("scenarios", rest.pop("fallback", None))
    base = spec_from_mapping(rest)
    if scenarios is not None:
        # Checked against the variants the objects declare, once they are known.
        if not isinstance(scenarios, list) or not all(isinstance(s, Mapping) for s in scenarios):
            raise SpecError("scenarios", "must be a list of fault scenario steps (mappings)")
        base = base.replace(scenarios=tuple(dict(s) for s in scenarios))
    return ManifestSettings(base, commands)


def load_manifest_settings(path: str | Path | None) -> ManifestSettings:
    """Read a SPEC file meant for manifests (``local_commands`` allowed; variants/split come from objects)."""
    if path is None:
        return manifest_settings_from_mapping({})
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("spec", f"spec file {str(p)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError("spec", f"cannot read spec file {str(p)!r}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError("spec", str(_yaml_error(str(p), exc))) from None
    return manifest_settings_from_mapping(data)


def spec_from_manifests(paths: str | Path | Sequence[str | Path], base: ExperimentSpec | None = None, *,
                        local_commands: Mapping[str, Sequence[str]] | None = None,
                        lint: bool = True, stdin: IO[str] | None = None) -> ManifestExperiment:
    """The experiment that the manifests at ``paths`` declare (files, directories, ``-`` for stdin).

    ``base`` supplies what objects cannot say: ``version_header``, ``load``, ``failure_policy`` and
    ``scenarios``; ``local_commands`` maps an image (or Deployment name) to the argv that runs it locally.
    With ``lint`` (the default) lint findings raise ``ManifestLintError`` before anything else.
    """
    given = [paths] if isinstance(paths, str | Path) else list(paths)
    objects = read_manifests(given, stdin=stdin)
    if lint:
        findings = lint_source_objects(objects)
        if findings:
            raise ManifestLintError(findings)
    return derive_experiment(objects, base, local_commands=local_commands)


def spec_from_pulumi(program: str | Path, base: ExperimentSpec | None = None, *,
                     local_commands: Mapping[str, Sequence[str]] | None = None) -> ManifestExperiment:
    """Like ``spec_from_manifests`` for a Pulumi Python program (run under Pulumi's mocks)."""
    pulumi = read_pulumi(program)
    if pulumi.findings:
        raise ManifestLintError(pulumi.findings)
    return derive_experiment(pulumi.objects, base, local_commands=local_commands)


# ---------------------------------------------------------------------------------------------------
# Objects for a cluster: exactly the user's, in the kit's namespace


def _rewrite_refs(refs: Any, original: str | None, namespace: str) -> None:
    for ref in _list(refs):
        if isinstance(ref, dict) and "namespace" in ref and ref["namespace"] == original:
            ref["namespace"] = namespace


def cluster_objects(spec: ManifestExperiment, namespace: str) -> list[dict[str, Any]]:
    """The user's objects with their namespace fields set to ``namespace``, nothing else changed.

    A Namespace object of the user's is replaced by the kit's namespace (first in the list) carrying the
    user's annotations, so namespace-level injection stays what the user declared.
    """
    originals = {ns for o in spec.objects if o.obj.get("kind") != "Namespace" for ns in [_ns(o.obj)] if ns}
    if len(originals) > 1:
        raise SpecError("manifests", f"the objects live in several namespaces ({', '.join(sorted(originals))}); "
                        "the kit deploys an experiment into one namespace of its own")
    original = next(iter(originals), None)
    ns_obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    out: list[dict[str, Any]] = []
    for item in spec.objects:
        obj = copy.deepcopy(dict(item.obj))
        kind = str(obj.get("kind"))
        if kind == "Namespace":
            annotations = _get(obj, "metadata", "annotations")
            if isinstance(annotations, Mapping):
                ns_obj["metadata"]["annotations"] = dict(annotations)
            continue
        if kind in CLUSTER_SCOPED:
            raise SpecError(_label(obj), f"{kind} is cluster-scoped; the kit applies objects only into its own "
                            "namespace: leave it out of the experiment's objects")
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = namespace
        if kind == "HTTPRoute":
            _rewrite_refs(_get(obj, "spec", "parentRefs"), original, namespace)
            for rule in _list(_get(obj, "spec", "rules")):
                _rewrite_refs(_get(rule, "backendRefs"), original, namespace)
        out.append(obj)
    return [ns_obj, *out]


def split_with_weights(spec: ManifestExperiment, namespace: str) -> dict[str, Any]:
    """The user's split object in ``namespace`` with ``spec``'s current weights (a canary step)."""
    split = next(o for o in cluster_objects(spec, namespace)
                 if o.get("kind") == spec.split_kind and _name(o) == spec.split_name)
    by_service = {spec.service_name(v.name): v.weight for v in spec.variants}
    if split["kind"] == "TrafficSplit":
        for backend in split["spec"]["backends"]:
            backend["weight"] = by_service.get(backend["service"], backend.get("weight"))
    else:
        for rule in split["spec"].get("rules") or []:
            for ref in rule.get("backendRefs") or []:
                if ref.get("name") in by_service:
                    ref["weight"] = by_service[ref["name"]]
    return split


def experiment_objects(spec: ExperimentSpec, namespace: str) -> list[dict[str, Any]]:
    """What a cluster backend applies: the user's objects for a manifest experiment, else the rendering."""
    if isinstance(spec, ManifestExperiment):
        return cluster_objects(spec, namespace)
    from ._manifests import render_experiment

    return render_experiment(spec, namespace=namespace)


def experiment_split_object(spec: ExperimentSpec, namespace: str) -> dict[str, Any]:
    if isinstance(spec, ManifestExperiment):
        return split_with_weights(spec, namespace)
    from ._manifests import split_object

    return split_object(spec, namespace)


def variant_pod_labels(spec: ExperimentSpec, variant: str) -> dict[str, str]:
    """The labels that select ``variant``'s pods (its backend Service's selector for manifests)."""
    if isinstance(spec, ManifestExperiment) and variant in spec.pod_selectors:
        return dict(spec.pod_selectors[variant])
    return {"app": spec.model, "version": variant}


def dump_objects(objects: Iterable[Mapping[str, Any]]) -> str:
    from ._manifests import dump_yaml

    return dump_yaml(objects)


__all__ = [
    "ManifestExperiment",
    "ManifestLintError",
    "ManifestSettings",
    "SourceObject",
    "check_local_commands",
    "cluster_objects",
    "derive_experiment",
    "experiment_objects",
    "load_manifest_settings",
    "read_manifests",
    "read_pulumi",
    "spec_from_manifests",
    "spec_from_pulumi",
]

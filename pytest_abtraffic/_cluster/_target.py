"""A live split on an existing cluster, judged read-only (pre-release verification).

``--target NAMESPACE/SERVICE`` names the apex Service of a split that is already configured. The kit
reads (never writes) the split objects whose apex it is, their backend Services and the Deployments
behind them, then creates only its own namespace with the meshed load Job aimed at the apex FQDN, and
judges the observed shares against the weights it read.

Which routes apply to the load pod (linkerd-facts.md, "HTTPRoute with weighted backendRefs"): a route in
the Service's own namespace is a producer route and applies to every client; a route in another
namespace applies only to clients in that namespace, so never to the load pod in the kit's namespace.

Writes outside the kit's namespace happen only with ``allow_chaos`` and only as reversible steps:
``scale`` (a backend Deployment's ``spec.replicas``) and ``set_weights`` (the split's weights). Each
object is snapshotted before its first change, restored in ``restore``/``teardown`` (so on pass, fail,
error and Ctrl-C/SIGTERM alike) and read back to verify the restore.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import re
import signal
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._errors import BackendError, SpecError, UsageError
from .._from_manifests import ManifestExperiment, SourceObject, derive_experiment
from ._deployment import ClusterDeployment
from ._kube import KubeApi, name_of, ready_endpoint_count
from ._plan import RUN_LABEL, Step, _with_labels, run_labels

if TYPE_CHECKING:
    from .._backend import FaultSettings
    from .._load import LoadResult
    from ._metrics import MeshCheck
    from ._settings import ClusterSettings

logger = logging.getLogger("pytest_abtraffic.cluster")

SMI_API = "split.smi-spec.io/v1alpha1"  # linkerd-smi's storage version: weights as quantities
ROUTE_APIS = ("gateway.networking.k8s.io/v1", "policy.linkerd.io/v1beta3")
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
CORE_GROUPS = (None, "", "core")


def parse_target(text: str) -> tuple[str, str]:
    """``NAMESPACE/SERVICE`` -> (namespace, service)."""
    namespace, sep, service = str(text).partition("/")
    if not sep or not _LABEL.match(namespace) or not _LABEL.match(service) or len(namespace) > 63 \
            or len(service) > 63:
        raise UsageError(f"--target: expected NAMESPACE/SERVICE (DNS-1123 labels), got {text!r}")
    return namespace, service


@dataclass(frozen=True)
class RouteNote:
    """A split object that names the apex Service, and whether it applies to the load pod."""

    kind: str
    name: str
    namespace: str
    applies: bool
    why: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}: {'applies' if self.applies else 'does not apply'} " \
               f"to the load pod ({self.why})"


@dataclass(frozen=True)
class LiveTargetExperiment(ManifestExperiment):
    """The experiment a live split declares. ``objects`` are the objects as read (never applied)."""

    target_namespace: str = ""
    route_notes: tuple[RouteNote, ...] = ()  # which routes apply to the load pod


def _list(api: KubeApi, api_version: str, kind: str, namespace: str | None) -> tuple[list[dict[str, Any]], str]:
    """Objects, and a note when they could not be listed (CRD not served, no permission)."""
    try:
        return api.list_objects(api_version, kind, namespace), ""
    except Exception as exc:  # not served or not allowed: say so in the result, do not guess
        return [], f"{kind} {api_version}{f' in {namespace}' if namespace else ''} not listed: {exc}"


def _service_parents(route: Mapping[str, Any], service: str, namespace: str) -> bool:
    own = (route.get("metadata") or {}).get("namespace")
    for parent in (route.get("spec") or {}).get("parentRefs") or []:
        if (parent.get("kind") == "Service" and parent.get("group") in CORE_GROUPS and parent.get("name") == service
                and (parent.get("namespace") or own) == namespace):
            return True
    return False


def _strip(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object as the user wrote it: server-set metadata and status dropped."""
    out = copy.deepcopy(dict(obj))
    out.pop("status", None)
    meta = out.get("metadata") or {}
    out["metadata"] = {k: v for k, v in meta.items() if k in ("name", "namespace", "labels", "annotations")}
    return out


def read_target(api: KubeApi, target: str) -> LiveTargetExperiment:
    """Read the live split whose apex is ``target`` (``NAMESPACE/SERVICE``). Only get and list calls."""
    namespace, service = parse_target(target)
    apex = api.get("v1", "Service", service, namespace)
    if apex is None:
        raise UsageError(f"--target: Service {service!r} not found in namespace {namespace!r}")
    notes: list[str] = []
    splits, note = _list(api, SMI_API, "TrafficSplit", namespace)
    notes += [note] if note else []
    routes: list[dict[str, Any]] = []
    for api_version in ROUTE_APIS:
        found, note = _list(api, api_version, "HTTPRoute", None)
        if note:  # no cluster-wide list permission: the Service's own namespace still tells the producer routes
            notes.append(note)
            found, note = _list(api, api_version, "HTTPRoute", namespace)
            notes += [note] if note else []
        group = api_version.rpartition("/")[0]
        # Each group is its own resource (gateway.networking.k8s.io vs policy.linkerd.io HTTPRoutes).
        routes += [r for r in found if str(r.get("apiVersion", "")).rpartition("/")[0] == group]
    ours = [ts for ts in splits if (ts.get("spec") or {}).get("service") == service]
    producer = [r for r in routes if _service_parents(r, service, namespace)
                and (r.get("metadata") or {}).get("namespace") == namespace]
    consumer = [r for r in routes if _service_parents(r, service, namespace) and r not in producer]
    route_notes = [RouteNote("TrafficSplit", name_of(ts), namespace, True,
                             "linkerd-smi turns it into the apex's ServiceProfile, which every meshed client uses")
                   for ts in ours]
    route_notes += [RouteNote("HTTPRoute", name_of(r), namespace, True,
                              "a route in the Service's own namespace applies to every client") for r in producer]
    route_notes += [RouteNote("HTTPRoute", name_of(r), str((r.get("metadata") or {}).get("namespace")), False,
                              "a route in another namespace applies only to clients in that namespace")
                    for r in consumer]
    applying = [*ours, *producer]
    if not applying:
        seen = [f"TrafficSplit/{name_of(ts)} (apex {(ts.get('spec') or {}).get('service')})" for ts in splits]
        seen += [f"HTTPRoute/{name_of(r)}" for r in routes if (r.get("metadata") or {}).get("namespace") == namespace]
        seen += [str(n) for n in route_notes]
        seen += notes
        raise UsageError(f"no TrafficSplit or HTTPRoute has apex {service} in namespace {namespace}; found: "
                         f"{'; '.join(seen) or 'no split objects'}")
    if len(applying) > 1:
        shown = ", ".join(f"{o.get('kind')}/{name_of(o)}" for o in applying)
        raise UsageError(f"{len(applying)} split objects have apex {namespace}/{service}: {shown}; Linkerd applies "
                         "one (a TrafficSplit's ServiceProfile takes precedence over HTTPRoutes), so the split to "
                         "verify is ambiguous: remove all but one")
    split = applying[0]
    objects = [_strip(apex), _strip(split)]
    backend_names: list[str] = []
    if split.get("kind") == "TrafficSplit":
        backend_names = [str(b.get("service")) for b in (split.get("spec") or {}).get("backends") or []]
    else:
        backend_names = [str(ref.get("name")) for rule in (split.get("spec") or {}).get("rules") or []
                         for ref in rule.get("backendRefs") or []]
    for name in dict.fromkeys(backend_names):
        backend = api.get("v1", "Service", name, namespace)
        if backend is None:
            raise UsageError(f"{split.get('kind')}/{name_of(split)} in {namespace}: backend Service {name!r} does not "
                             "exist (Linkerd answers its share with 500s)")
        objects.append(_strip(backend))
    deployments, note = _list(api, "apps/v1", "Deployment", namespace)
    if note:
        raise UsageError(f"cannot read the backends' Deployments: {note}")
    objects += [_strip(d) for d in deployments]
    try:
        derived = derive_experiment([SourceObject(f"live:{namespace}", o) for o in objects])
    except SpecError as exc:
        raise UsageError(f"live split {namespace}/{service}: {exc}") from None
    values = {f.name: getattr(derived, f.name) for f in dataclasses.fields(ManifestExperiment)}
    return LiveTargetExperiment(**values, target_namespace=namespace, route_notes=tuple(route_notes))


class TargetDeployment(ClusterDeployment):
    """The load side of a live target: the kit's own namespace with the load Job; the split is the user's."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        spec = kwargs["spec"]
        if not isinstance(spec, LiveTargetExperiment):
            raise BackendError("a TargetDeployment needs the experiment read from the live target")
        self.target: LiveTargetExperiment = spec
        self._snapshots: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.restored: list[str] = []

    # -- identity -------------------------------------------------------------------------------
    def target_url(self) -> str:
        t = self.target
        return f"http://{t.apex_service}.{t.target_namespace}.svc.{self._cluster_domain}:{t.service_port}"

    def deploy(self) -> None:
        """Only the kit's own namespace; nothing is applied to the target."""
        if self._allow_chaos:
            _sigterm_unwinds()
        ns_obj = _with_labels({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self._namespace}},
                              run_labels(self._run_id))
        step = Step("apply", f"create the kit's own namespace {self._namespace} (labelled {RUN_LABEL}={self._run_id})",
                    "deploy", id="namespace", objects=(ns_obj,))
        self._applied.append(ns_obj)
        try:
            self._executor.run_step(step)
        except BaseException:
            self.teardown()
            raise

    def _mesh_check(self, job_name: str, logs: Sequence[str], result: LoadResult) -> MeshCheck | None:
        # The backends live in the target namespace, not the kit's; counters add up across load pods.
        from ._loadjob import extract_proxy_metrics
        from ._metrics import add_counters, backend_counters, compare_with_app, parse_prometheus

        texts = [t for t in (extract_proxy_metrics(log) for log in logs) if t is not None]
        if not texts:
            return None
        self._load_metrics[job_name] = "".join(texts)
        services = {v.name: self.target.service_name(v.name) for v in self.target.variants}
        try:
            samples = [sample for t in texts for sample in parse_prometheus(t)]
            counts = backend_counters(samples, namespace=self.target.target_namespace, services=services)
        except ValueError as exc:
            logger.warning("cannot parse the load pod's proxy metrics: %s", exc)
            return None
        from .._backend import BackendCounters

        with self._lock:
            for variant, counters in counts.counters.items():
                self._mesh_totals[variant] = add_counters(self._mesh_totals.get(variant, BackendCounters()), counters)
        check = compare_with_app(Counter(r.version for r in result.records if r.version), counts,
                                 retries=self.target.failure_policy.retries is not None)
        self._mesh_checks.append(check)
        return check

    # -- reversible chaos only ------------------------------------------------------------------
    def _chaos(self, what: str) -> None:
        if not self._allow_chaos:
            raise UsageError(f"{what} would change the live target {self.target.target_namespace}; it is read-only "
                             "unless --allow-chaos (--abtraffic-allow-chaos) is given")
        self._touched = True

    def kill(self, variant: str, count: int | None = None) -> int:
        raise UsageError("kill deletes pods of a live target, which cannot be put back as they were; on a live "
                         "target only scale (a backend Deployment's replicas) and set_weights are allowed")

    def set_fault(self, variant: str, fault: FaultSettings) -> None:
        raise UsageError("faults need the kit's reference server; on a live target only scale and set_weights "
                         "are allowed")

    def _snapshot(self, api_version: str, kind: str, name: str, fields: tuple[str, ...]) -> dict[str, Any]:
        key = (api_version, kind, name)
        if key not in self._snapshots:
            live = self._api.get(api_version, kind, name, self.target.target_namespace)
            if live is None:
                raise BackendError(f"{kind} {self.target.target_namespace}/{name} disappeared")
            spec = live.get("spec") or {}
            self._snapshots[key] = {"spec": {f: copy.deepcopy(spec.get(f)) for f in fields}}
        return self._snapshots[key]

    def scale(self, variant: str, replicas: int) -> None:
        self._chaos("scale")
        name = self.target.deployment_name(self.target.variant(variant).name)
        self._snapshot("apps/v1", "Deployment", name, ("replicas",))
        self._api.patch("apps/v1", "Deployment", name, self.target.target_namespace,
                        {"spec": {"replicas": int(replicas)}})

    def _split_ref(self) -> tuple[str, str, str]:
        t = self.target
        obj = next(o.obj for o in t.objects if o.obj.get("kind") == t.split_kind and
                   (o.obj.get("metadata") or {}).get("name") == t.split_name)
        return str(obj.get("apiVersion")), t.split_kind, t.split_name

    def set_weights(self, weights: Mapping[str, int | str]) -> None:
        self._chaos("set_weights")
        new = self._spec.with_weights(weights)
        api_version, kind, name = self._split_ref()
        field = "backends" if kind == "TrafficSplit" else "rules"
        before = self._snapshot(api_version, kind, name, (field,))["spec"][field]
        by_service = {new.service_name(v.name): v.weight for v in new.variants}
        changed = copy.deepcopy(before)
        if kind == "TrafficSplit":
            for backend in changed:
                backend["weight"] = by_service.get(backend.get("service"), backend.get("weight"))
        else:
            for rule in changed:
                for ref in rule.get("backendRefs") or []:
                    if ref.get("name") in by_service:
                        ref["weight"] = by_service[ref["name"]]
        self._api.patch(api_version, kind, name, self.target.target_namespace, {"spec": {field: changed}})
        self._spec = new

    def restore(self) -> None:
        """Every snapshotted object back, then read back: a restore that did not take is an error."""
        if not self._snapshots:
            self._touched = False
            return
        failed: list[str] = []
        ns = self.target.target_namespace
        for (api_version, kind, name), snapshot in list(self._snapshots.items()):
            try:
                self._api.patch(api_version, kind, name, ns, snapshot)
                live = self._api.get(api_version, kind, name, ns) or {}
                spec = live.get("spec") or {}
                if any(spec.get(k) != v for k, v in snapshot["spec"].items()):
                    failed.append(f"{kind} {ns}/{name}: read back {spec} instead of {snapshot['spec']}")
                    continue
            except Exception as exc:  # keep restoring the others; report all
                failed.append(f"{kind} {ns}/{name}: {exc}")
                continue
            del self._snapshots[(api_version, kind, name)]
            self.restored.append(f"{kind} {ns}/{name}")
        self._spec = self._deployed
        self._touched = bool(self._snapshots)
        if failed:
            raise BackendError("restoring the live target failed; fix these by hand: " + "; ".join(failed))

    def ready_endpoints(self, variant: str) -> int:
        self._spec.variant(variant)
        return ready_endpoint_count(self._api, self.target.target_namespace, self.target.service_name(variant))

    def teardown(self) -> None:
        try:
            self.restore()
        finally:
            super().teardown()

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update({"target": f"{self.target.target_namespace}/{self.target.apex_service}",
                    "split": f"{self.target.split_kind}/{self.target.split_name}",
                    "routes": [str(r) for r in self.target.route_notes], "restored": list(self.restored)})
        return out


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt("SIGTERM received: restoring the live target and cleaning up")


def _sigterm_unwinds() -> None:
    """SIGTERM unwinds like Ctrl-C (so teardown restores the target) when nobody else handles it; the
    default action would end the process with the target still changed."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_interrupt)


def deployment_class(spec: object) -> type[ClusterDeployment]:
    """The ``ClusterDeployment`` class for ``spec`` (the existing backend's one hook)."""
    return TargetDeployment if isinstance(spec, LiveTargetExperiment) else ClusterDeployment


def target_plan(settings: ClusterSettings, target: str, namespace: str) -> list[Step]:
    """The steps of ``verify --backend existing --target NS/SVC``: reads, then the kit's namespace only."""
    ns, service = parse_target(target)
    linkerd = settings.linkerd_namespace
    fqdn = f"http://{service}.{ns}.svc.cluster.local:<port of Service {ns}/{service}>"
    return [
        Step("check", f"kubeconfig context {settings.context!r} exists (read, never written)", "checks"),
        Step("check", f"Linkerd is installed: namespace {linkerd}, ConfigMap {linkerd}/linkerd-config, its CRDs "
             "(get)", "checks"),
        Step("check", f"read Service {ns}/{service} (get)", "read"),
        Step("check", f"list TrafficSplits ({SMI_API}) in {ns} whose spec.service is {service}", "read"),
        Step("check", f"list HTTPRoutes ({', '.join(ROUTE_APIS)}) in every namespace with a Service parentRef to "
             f"{ns}/{service}: a route in {ns} applies to every client (the load pod included); a route in another "
             "namespace applies only to clients in that namespace (not the load pod)", "read"),
        Step("check", "exactly one split applies (TrafficSplit or HTTPRoute); read its backends and weights", "read"),
        Step("check", f"read each backend Service in {ns} and the one Deployment its selector picks (image, "
             "replicas, pods' version label = the variant's name)", "read"),
        Step("check", f"namespace {namespace} does not exist (get)", "checks"),
        Step("apply", f"create the kit's own namespace {namespace} (labelled {RUN_LABEL}=<run id>)", "deploy"),
        Step("apply", f"start the meshed load Job in {namespace} (linkerd.io/inject: enabled) aimed at the apex "
             f"FQDN {fqdn}", "load"),
        Step("wait", "wait for the load container to exit and read its log (records + the client proxy's "
             "per-backend metrics)", "load"),
        Step("check", "judge the observed shares against the weights read (or --expect)", "verdict"),
        Step("delete", f"delete namespace {namespace} (only when it carries {RUN_LABEL}=<run id>)", "teardown"),
        Step("check", f"no write outside {namespace}: chaos on the target is refused unless --allow-chaos; then only "
             "scale (Deployment spec.replicas) and weight changes, each object snapshotted first, restored in "
             "teardown and on SIGINT/SIGTERM, and read back", "guarantees"),
    ]


__all__ = ["LiveTargetExperiment", "RouteNote", "TargetDeployment", "parse_target", "read_target", "target_plan"]

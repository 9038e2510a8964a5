"""Kubernetes API access for the cluster backends, and the waits built on it.

``KubeApi`` is the small interface every other module of the cluster engine uses; ``Kube`` is the
real implementation on the official ``kubernetes`` client (imported lazily), and unit tests pass a
fake. Objects are plain dicts in and out. Writes use server-side apply with the field manager
``pytest-abtraffic``.

The waits poll (bounded) and, on timeout, raise NotReadyError saying what is not ready, why (pod
waiting reasons, route conditions) and the recent events of the objects involved.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, cast

from .._errors import BackendError, NotReadyError, PrerequisiteError

FIELD_MANAGER = "pytest-abtraffic"
POLICY_CONTROLLER = "linkerd.io/policy-controller"
PROXY_CONTAINER = "linkerd-proxy"
PROXY_ADMIN_PORT = 4191
EVENTS_SHOWN = 15

Obj = dict[str, Any]


class KubeApi(Protocol):
    """What the cluster engine needs from the Kubernetes API."""

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        """The object, or None when it does not exist."""
        ...

    def list_objects(self, api_version: str, kind: str, namespace: str | None = None, *,
                     label_selector: str | None = None) -> list[Obj]: ...

    def apply(self, obj: Mapping[str, Any]) -> Obj:
        """Server-side apply (create or update)."""
        ...

    def patch(self, api_version: str, kind: str, name: str, namespace: str | None, body: Mapping[str, Any]) -> Obj:
        """JSON merge patch."""
        ...

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
               grace_period_s: int | None = None) -> bool:
        """Delete (background propagation); False when it did not exist."""
        ...

    def pod_log(self, name: str, namespace: str, *, container: str | None = None, tail_lines: int | None = None,
                timestamps: bool = False) -> str: ...

    def follow_pod_log(self, name: str, namespace: str, *, container: str, on_line: Callable[[str], bool],
                       timeout_s: float) -> None:
        """Call ``on_line`` for each line (with its kubelet timestamp) until the container exits,
        ``on_line`` returns True, or ``timeout_s`` passes."""
        ...

    def exec(self, name: str, namespace: str, *, container: str, argv: list[str], timeout_s: float) -> tuple[int, str]:
        """Run ``argv`` in the container; (exit code, stdout + stderr)."""
        ...

    def proxy_get(self, name: str, namespace: str, *, port: int, path: str, timeout_s: float) -> str:
        """GET through the API server's pod proxy (``pods/<name>:<port>/proxy/<path>``)."""
        ...

    def exec_stream(self, name: str, namespace: str, *, container: str, argv: list[str],
                    on_stdout: Callable[[str], None], timeout_s: float) -> tuple[int, str]:
        """Run ``argv`` in the container, handing stdout to ``on_stdout`` as it arrives; (exit code, stderr)."""
        ...

    def close(self) -> None: ...


def _api_path_parts(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


class Kube:
    """``KubeApi`` on the official client. One instance per kubeconfig file + context."""

    def __init__(self, api_client: Any, *, cache_dir: Path | None = None) -> None:
        from kubernetes import client, dynamic

        self._api_client = api_client
        # Per process: pytest-xdist workers share the work dir and would write the same file at once.
        cache_file = str(cache_dir / f"discovery-{os.getpid()}.json") if cache_dir is not None else None
        dynamic_client: Any = dynamic.DynamicClient  # untyped in the client
        self._dyn = dynamic_client(api_client, cache_file=cache_file)
        self._core: Any = client.CoreV1Api(api_client)

    @classmethod
    def from_kubeconfig(cls, path: str | None, context: str | None, *, cache_dir: Path | None = None) -> Kube:
        """A client for ``context`` of the kubeconfig file ``path``. The file is never written
        (``persist_config=False``: the loader would otherwise save refreshed tokens into it)."""
        try:
            from kubernetes import config
        except ImportError as exc:  # pragma: no cover - kubernetes is a dependency
            raise PrerequisiteError(f"the kubernetes Python client is missing ({exc}): pip install kubernetes") \
                from None
        new_client: Any = config.new_client_from_config  # untyped in the client
        api_client = new_client(config_file=path, context=context, persist_config=False)
        return cls(api_client, cache_dir=cache_dir)

    def _resource(self, api_version: str, kind: str) -> Any:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return self._dyn.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            # A CRD installed a moment ago: refresh discovery once.
            self._dyn.resources.invalidate_cache()
            try:
                return self._dyn.resources.get(api_version=api_version, kind=kind)
            except ResourceNotFoundError:
                raise BackendError(f"the cluster does not serve {kind} {api_version} (is its CRD installed?)") from None

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            found = self._resource(api_version, kind).get(name=name, namespace=namespace)
        except NotFoundError:
            return None
        return cast(Obj, found.to_dict())

    def list_objects(self, api_version: str, kind: str, namespace: str | None = None, *,
                     label_selector: str | None = None) -> list[Obj]:
        found = self._resource(api_version, kind).get(namespace=namespace, label_selector=label_selector)
        return cast(list[Obj], found.to_dict().get("items") or [])

    def apply(self, obj: Mapping[str, Any]) -> Obj:
        body = dict(obj)
        meta = body.get("metadata") or {}
        res = self._resource(str(body["apiVersion"]), str(body["kind"]))
        done = res.server_side_apply(body=body, name=meta.get("name"), namespace=meta.get("namespace"),
                                     field_manager=FIELD_MANAGER, force_conflicts=True)
        return cast(Obj, done.to_dict())

    def patch(self, api_version: str, kind: str, name: str, namespace: str | None, body: Mapping[str, Any]) -> Obj:
        res = self._resource(api_version, kind)
        done = res.patch(body=dict(body), name=name, namespace=namespace,
                         content_type="application/merge-patch+json", field_manager=FIELD_MANAGER)
        return cast(Obj, done.to_dict())

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
               grace_period_s: int | None = None) -> bool:
        from kubernetes.dynamic.exceptions import NotFoundError

        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if grace_period_s is not None:
            body["gracePeriodSeconds"] = grace_period_s
        try:
            self._resource(api_version, kind).delete(name=name, namespace=namespace, body=body)
        except NotFoundError:
            return False
        return True

    def pod_log(self, name: str, namespace: str, *, container: str | None = None, tail_lines: int | None = None,
                timestamps: bool = False) -> str:
        text = self._core.read_namespaced_pod_log(name, namespace, container=container, tail_lines=tail_lines,
                                                  timestamps=timestamps or None, _request_timeout=60)
        return str(text)

    def follow_pod_log(self, name: str, namespace: str, *, container: str, on_line: Callable[[str], bool],
                       timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        resp = self._core.read_namespaced_pod_log(name, namespace, container=container, follow=True, timestamps=True,
                                                  _preload_content=False, _request_timeout=(10, 30))
        rest = b""
        try:
            for chunk in resp.stream(4096):
                rest += chunk
                *lines, rest = rest.split(b"\n")
                for line in lines:
                    if on_line(line.decode("utf-8", "replace")):
                        return
                if time.monotonic() > deadline:
                    return
        except Exception:  # a dropped stream ends the follow; the caller polls the Job
            return
        finally:
            resp.release_conn()

    def exec(self, name: str, namespace: str, *, container: str, argv: list[str], timeout_s: float) -> tuple[int, str]:
        from kubernetes.stream import stream

        ws = stream(self._core.connect_get_namespaced_pod_exec, name, namespace, container=container, command=argv,
                    stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
        try:
            ws.run_forever(timeout=timeout_s)
            out = str(ws.read_stdout() or "") + str(ws.read_stderr() or "")
            code = ws.returncode
        finally:
            ws.close()
        if code is None:
            raise BackendError(f"exec {argv[:2]} in pod {namespace}/{name} did not finish within {timeout_s:g}s")
        return int(code), out

    def exec_stream(self, name: str, namespace: str, *, container: str, argv: list[str],
                    on_stdout: Callable[[str], None], timeout_s: float) -> tuple[int, str]:
        from kubernetes.stream import stream

        ws = stream(self._core.connect_get_namespaced_pod_exec, name, namespace, container=container, command=argv,
                    stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
        deadline = time.monotonic() + timeout_s
        errors: list[str] = []
        try:
            while True:
                ws.update(timeout=1)
                if ws.peek_stdout():
                    on_stdout(str(ws.read_stdout()))
                if ws.peek_stderr():
                    errors.append(str(ws.read_stderr()))
                if not ws.is_open():
                    break
                if time.monotonic() > deadline:
                    raise BackendError(f"exec {argv[:2]} in pod {namespace}/{name} did not finish within "
                                       f"{timeout_s:g}s")
            code = ws.returncode
        finally:
            ws.close()
        return (int(code) if code is not None else -1), "".join(errors)

    def proxy_get(self, name: str, namespace: str, *, port: int, path: str, timeout_s: float) -> str:
        text = self._core.connect_get_namespaced_pod_proxy_with_path(f"{name}:{port}", namespace, path.lstrip("/"),
                                                                     _request_timeout=timeout_s)
        return str(text)

    def close(self) -> None:
        self._api_client.close()


# ---------------------------------------------------------------------------------------------------
# Small helpers on plain objects


def meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    value = obj.get("metadata")
    return value if isinstance(value, Mapping) else {}


def name_of(obj: Mapping[str, Any]) -> str:
    return str(meta(obj).get("name", ""))


def ref(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('kind', '?')}/{name_of(obj)}"


def selector_string(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def is_terminating(pod: Mapping[str, Any]) -> bool:
    return bool(meta(pod).get("deletionTimestamp"))


def pod_is_meshed(pod: Mapping[str, Any]) -> bool:
    """True when Linkerd injected its proxy (a sidecar, or a native-sidecar init container)."""
    spec = pod.get("spec") or {}
    names = [c.get("name") for c in (spec.get("containers") or [])]
    names += [c.get("name") for c in (spec.get("initContainers") or [])]
    return PROXY_CONTAINER in names


def parse_quantity(value: object) -> Fraction:
    """A TrafficSplit weight: an int, or a quantity like ``"500m"``/``"1"``."""
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int):
        return Fraction(value)
    text = str(value).strip()
    if text.endswith("m"):
        return Fraction(text[:-1]) / 1000
    return Fraction(text)


# ---------------------------------------------------------------------------------------------------
# Readiness checks: (ready, detail)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    detail: str


def pod_problems(api: KubeApi, namespace: str, selector: str) -> list[str]:
    """Why the pods of ``selector`` are not ready: waiting reasons, restarts, unready containers."""
    out: list[str] = []
    for pod in api.list_objects("v1", "Pod", namespace, label_selector=selector):
        status = pod.get("status") or {}
        statuses = list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or [])
        reasons = []
        for cs in statuses:
            state = cs.get("state") or {}
            waiting = state.get("waiting") or {}
            terminated = state.get("terminated") or {}
            if waiting.get("reason") and waiting.get("reason") != "PodInitializing":
                reasons.append(f"{cs.get('name')}: {waiting['reason']} {waiting.get('message') or ''}".strip())
            elif terminated.get("reason") and terminated.get("exitCode") not in (0, None):
                reasons.append(f"{cs.get('name')}: exited {terminated.get('exitCode')} ({terminated.get('reason')})")
            elif state.get("running") and not cs.get("ready"):
                reasons.append(f"{cs.get('name')}: running, not ready")
            if cs.get("restartCount"):
                reasons.append(f"{cs.get('name')}: {cs['restartCount']} restart(s)")
        if not statuses:
            conditions = {c.get("type"): c for c in status.get("conditions") or []}
            sched = conditions.get("PodScheduled") or {}
            if sched.get("status") == "False":
                reasons.append(f"not scheduled: {sched.get('message') or sched.get('reason')}")
            else:
                reasons.append(f"phase {status.get('phase', 'Pending')}")
        if reasons:
            out.append(f"pod {name_of(pod)}: " + "; ".join(reasons))
    return out


def deployment_ready(api: KubeApi, namespace: str, name: str) -> Readiness:
    dep = api.get("apps/v1", "Deployment", name, namespace)
    if dep is None:
        return Readiness(False, f"Deployment {name} does not exist")
    spec, status = dep.get("spec") or {}, dep.get("status") or {}
    want = int(spec.get("replicas", 1))
    generation = int(meta(dep).get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    total = int(status.get("replicas") or 0)
    if observed >= generation and updated == want and available == want and total == want:
        return Readiness(True, f"Deployment {name}: {available}/{want} available")
    detail = f"Deployment {name}: {available}/{want} available, {updated} updated, {total} total"
    labels = (spec.get("selector") or {}).get("matchLabels") or {}
    if labels:
        problems = pod_problems(api, namespace, selector_string(labels))
        if problems:
            detail += " (" + "; ".join(problems[:4]) + ")"
    return Readiness(False, detail)


def ready_endpoint_count(api: KubeApi, namespace: str, service: str) -> int:
    """Ready endpoints of ``service`` according to its EndpointSlices (``ready`` unset counts as ready)."""
    slices = api.list_objects("discovery.k8s.io/v1", "EndpointSlice", namespace,
                      label_selector=f"kubernetes.io/service-name={service}")
    addresses: set[str] = set()
    for sl in slices:
        for ep in sl.get("endpoints") or []:
            conditions = ep.get("conditions") or {}
            if conditions.get("ready") is False or conditions.get("terminating") is True:
                continue
            for address in ep.get("addresses") or []:
                addresses.add(str(address))
    return len(addresses)


def endpoints_ready(api: KubeApi, namespace: str, service: str, want: int) -> Readiness:
    have = ready_endpoint_count(api, namespace, service)
    return Readiness(have >= want, f"Service {service}: {have}/{want} ready endpoints")


def route_ready(api: KubeApi, namespace: str, route: Mapping[str, Any]) -> Readiness:
    """HTTPRoute accepted and resolved by Linkerd's policy controller, for its current generation."""
    name = name_of(route)
    live = api.get(str(route["apiVersion"]), "HTTPRoute", name, namespace)
    if live is None:
        return Readiness(False, f"HTTPRoute {name} does not exist")
    generation = int(meta(live).get("generation") or 0)
    parents = ((live.get("status") or {}).get("parents")) or []
    ours = [p for p in parents if p.get("controllerName") == POLICY_CONTROLLER]
    if not ours:
        seen = sorted({str(p.get("controllerName")) for p in parents}) or ["none"]
        return Readiness(False, f"HTTPRoute {name}: no status from {POLICY_CONTROLLER} yet (controllers: "
                                f"{', '.join(seen)}); is Linkerd's policy controller running?")
    problems = []
    for parent in ours:
        conds = {c.get("type"): c for c in parent.get("conditions") or []}
        for wanted in ("Accepted", "ResolvedRefs"):
            cond = conds.get(wanted)
            if cond is None:
                problems.append(f"{wanted} missing")
            elif cond.get("status") != "True":
                problems.append(f"{wanted}={cond.get('status')} ({cond.get('reason')}: {cond.get('message')})")
            elif int(cond.get("observedGeneration") or generation) < generation:
                problems.append(f"{wanted} is for generation {cond.get('observedGeneration')} < {generation}")
    if problems:
        return Readiness(False, f"HTTPRoute {name}: " + "; ".join(problems))
    return Readiness(True, f"HTTPRoute {name}: Accepted and ResolvedRefs by {POLICY_CONTROLLER}")


def profile_name(apex: str, namespace: str, cluster_domain: str = "cluster.local") -> str:
    return f"{apex}.{namespace}.svc.{cluster_domain}"


def smi_profile_ready(api: KubeApi, namespace: str, split: Mapping[str, Any],
                      cluster_domain: str = "cluster.local") -> Readiness:
    """linkerd-smi turned the TrafficSplit into a ServiceProfile whose dstOverrides carry its weights."""
    spec = split.get("spec") or {}
    apex = str(spec.get("service"))
    name = profile_name(apex, namespace, cluster_domain)
    profile = api.get("linkerd.io/v1alpha2", "ServiceProfile", name, namespace)
    if profile is None:
        return Readiness(False, f"ServiceProfile {name} not created yet by linkerd-smi's adaptor "
                                "(is the smi-adaptor running in namespace linkerd-smi?)")
    want: dict[str, Fraction] = {}
    for backend in spec.get("backends") or []:
        want[f"{backend['service']}.{namespace}.svc.{cluster_domain}"] = parse_quantity(backend["weight"])
    have: dict[str, Fraction] = {}
    for dst in (profile.get("spec") or {}).get("dstOverrides") or []:
        authority = str(dst.get("authority", "")).rsplit(":", 1)[0] if ":" in str(dst.get("authority", "")) \
            else str(dst.get("authority", ""))
        have[authority] = parse_quantity(dst.get("weight", 0))
    if _shares(have) != _shares(want):
        return Readiness(False, f"ServiceProfile {name}: dstOverrides {_fmt(have)} do not match the "
                                f"TrafficSplit's backends {_fmt(want)} yet")
    return Readiness(True, f"ServiceProfile {name}: dstOverrides match the TrafficSplit")


def _shares(weights: Mapping[str, Fraction]) -> dict[str, Fraction]:
    total = sum(weights.values())
    return {k: (v / total if total else Fraction(0)) for k, v in weights.items()}


def _fmt(weights: Mapping[str, Fraction]) -> str:
    return "{" + ", ".join(f"{k.split('.')[0]}: {float(v):g}" for k, v in sorted(weights.items())) + "}"


@dataclass(frozen=True)
class JobState:
    finished: bool
    succeeded: bool
    detail: str


def job_state(api: KubeApi, namespace: str, name: str) -> JobState:
    job = api.get("batch/v1", "Job", name, namespace)
    if job is None:
        return JobState(True, False, f"Job {name} does not exist")
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return JobState(True, True, f"Job {name} complete")
        if cond.get("type") == "Failed":
            return JobState(True, False, f"Job {name} failed: {cond.get('reason')}: {cond.get('message')}")
    return JobState(False, False, f"Job {name}: active={status.get('active', 0)} "
                                  f"succeeded={status.get('succeeded', 0)} failed={status.get('failed', 0)}")


def load_exited(api: KubeApi, namespace: str, job: str, container: str) -> Readiness:
    """The Job's load container has exited (or the Job is finished). Its log is complete then,
    whether or not the proxy has shut down yet."""
    for pod in api.list_objects("v1", "Pod", namespace, label_selector=f"job-name={job}"):
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (cs.get("state") or {}).get("terminated")
            if cs.get("name") == container and terminated:
                return Readiness(True, f"pod {name_of(pod)}: {container} exited {terminated.get('exitCode')}")
    state = job_state(api, namespace, job)
    if state.finished:
        return Readiness(True, state.detail)
    problems = pod_problems(api, namespace, f"job-name={job}")
    return Readiness(False, f"{state.detail}; {container} still running" + (f" ({'; '.join(problems)})"
                                                                           if problems else ""))


# ---------------------------------------------------------------------------------------------------
# Pods that will not start: fail the wait early, with the image and the kubelet's event


#: Waiting reasons of a container that will not get better by waiting: kubernetes v1.32
#: ``pkg/kubelet/images/types.go`` (``ErrImagePull``, ``ImagePullBackOff``, ``ErrImageNeverPull``,
#: ``InvalidImageName``) and ``pkg/kubelet/container/sync_result.go`` (``CrashLoopBackOff``).
FATAL_WAITING = {"ErrImagePull": "pull", "ImagePullBackOff": "pull", "ErrImageNeverPull": "pull",
                 "InvalidImageName": "name", "CrashLoopBackOff": "crash"}
#: How long a pull/crash problem must persist before the wait fails (a registry hiccup clears in
#: one retry; the kubelet's pull back-off starts at 10 s). InvalidImageName fails at once.
FATAL_GRACE_S = 15.0


class PodFailureWatch:
    """Called on every poll of a wait; raises NotReadyError once a pod of ``selector`` is stuck.

    ``ErrImagePull`` and ``ImagePullBackOff`` alternate while the kubelet retries, so they count as
    one problem; the timer restarts only when the container leaves the fatal state.
    """

    def __init__(self, api: KubeApi, namespace: str, selector: str, *, grace_s: float = FATAL_GRACE_S) -> None:
        self.api = api
        self.namespace = namespace
        self.selector = selector
        self.grace_s = grace_s
        self._since: dict[tuple[str, str, str], float] = {}

    def __call__(self, now: float) -> None:
        seen: set[tuple[str, str, str]] = set()
        for pod in self.api.list_objects("v1", "Pod", self.namespace, label_selector=self.selector):
            status = pod.get("status") or {}
            images = {c.get("name"): c.get("image") for c in ((pod.get("spec") or {}).get("containers") or [])
                      + ((pod.get("spec") or {}).get("initContainers") or [])}
            for cs in list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or []):
                waiting = (cs.get("state") or {}).get("waiting") or {}
                family = FATAL_WAITING.get(str(waiting.get("reason")))
                if family is None:
                    continue
                key = (name_of(pod), str(cs.get("name")), family)
                seen.add(key)
                first = self._since.setdefault(key, now)
                if family == "name" or now - first >= self.grace_s:
                    self._fail(pod, cs, waiting, images.get(cs.get("name")) or cs.get("image"), now - first)
        self._since = {k: v for k, v in self._since.items() if k in seen}

    def _fail(self, pod: Mapping[str, Any], cs: Mapping[str, Any], waiting: Mapping[str, Any], image: object,
              stuck_s: float) -> None:
        pod_name = name_of(pod)
        events = [line for line in recent_events(self.api, self.namespace, [pod_name])
                  if " Normal " not in f" {line} "]
        reason = waiting.get("reason")
        hint = ("the node cannot pull it: check the name and tag, that the registry is reachable from the nodes "
                "and any imagePullSecrets; on kind, that the image was loaded") if reason != "CrashLoopBackOff" \
            else "the container keeps exiting: see its log (kubectl logs --previous)"
        shown = "\n".join(f"  {line}" for line in events) or "  (no events)"
        raise NotReadyError(f"pod {self.namespace}/{pod_name} container {cs.get('name')} (image {image}) is in "
                            f"{reason} for {stuck_s:.0f}s: {waiting.get('message') or ''}".rstrip(": ")
                            + f"\n{hint}\npod events:\n{shown}")


# ---------------------------------------------------------------------------------------------------
# Events and the generic wait


def recent_events(api: KubeApi, namespace: str, names: Iterable[str] | None = None,
                  limit: int = EVENTS_SHOWN) -> list[str]:
    """The last events of the namespace (of the objects whose names start with one of ``names``)."""
    try:
        events = api.list_objects("v1", "Event", namespace)
    except Exception as exc:  # events are diagnostics, never the failure
        return [f"(events unavailable: {exc})"]
    prefixes = tuple(names) if names is not None else None

    def when(ev: Mapping[str, Any]) -> str:
        return str(ev.get("lastTimestamp") or ev.get("eventTime") or ev.get("firstTimestamp")
                   or meta(ev).get("creationTimestamp") or "")

    lines = []
    for ev in sorted(events, key=when):
        involved = ev.get("involvedObject") or {}
        obj_name = str(involved.get("name", ""))
        if prefixes is not None and not obj_name.startswith(prefixes):
            continue
        count = f" (x{ev['count']})" if (ev.get("count") or 1) > 1 else ""
        lines.append(f"{when(ev)} {ev.get('type', '')} {ev.get('reason', '')} {involved.get('kind', '')}/{obj_name}: "
                     f"{str(ev.get('message', '')).strip()}{count}")
    return lines[-limit:]


def wait_until(
    check: Callable[[], Readiness],
    *,
    what: str,
    timeout_s: float,
    api: KubeApi,
    namespace: str,
    involved: Iterable[str] = (),
    interval_s: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    watch: Callable[[float], None] | None = None,
) -> Readiness:
    """Poll ``check`` until ready; on timeout a NotReadyError with the last detail and the events.

    ``watch(now)`` runs before every check and may fail the wait early (``PodFailureWatch``)."""
    deadline = clock() + timeout_s
    while True:
        if watch is not None:
            watch(clock())
        last = check()
        if last.ready:
            return last
        if clock() >= deadline:
            events = recent_events(api, namespace, list(involved) or None)
            shown = "\n".join(f"  {line}" for line in events) or "  (no events)"
            raise NotReadyError(f"{what} not ready after {timeout_s:g}s in namespace {namespace}: {last.detail}\n"
                                f"recent events:\n{shown}")
        sleep(interval_s)


__all__ = [
    "FATAL_WAITING",
    "FIELD_MANAGER",
    "POLICY_CONTROLLER",
    "PROXY_ADMIN_PORT",
    "PROXY_CONTAINER",
    "JobState",
    "Kube",
    "KubeApi",
    "PodFailureWatch",
    "Readiness",
    "deployment_ready",
    "endpoints_ready",
    "is_terminating",
    "job_state",
    "load_exited",
    "name_of",
    "parse_quantity",
    "pod_is_meshed",
    "pod_problems",
    "profile_name",
    "ready_endpoint_count",
    "recent_events",
    "ref",
    "route_ready",
    "selector_string",
    "smi_profile_ready",
    "wait_until",
]

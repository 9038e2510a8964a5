"""One experiment deployed in one namespace of a real cluster (kind or existing).

Load runs as a meshed Job (``_loadjob``); chaos goes through the Kubernetes API: ``kill`` scales the
variant down first (so the ReplicaSet does not bring pods back) and then deletes the pods with a
grace period of 0; fault knobs are set by exec into each model pod, calling the reference server's
admin API on the pod's loopback (``PUT /faults``); ``set_weights`` re-applies the split object.
``restore`` undoes all of it and waits until the experiment is ready again.

Observer semantics of an in-cluster run (the run cannot be steered from outside the pod):

- ``on_start`` is called live, when the pod logs that Locust started. Record times are shifted by
  the delay between that log line (kubelet timestamp) and the call, so they line up with the
  observer's clock (kind nodes share the host clock; on other clusters the clocks must be synced).
- ``on_progress`` is called live with the pod's progress lines (every few seconds) and no records.
- After the run, ``on_progress`` is replayed over the records in ``plan.progress_interval_s``
  steps. The first time the observer asks to stop (live or in the replay), the records after that
  point are dropped and the result says ``stopped_early``: the same data a live stop would have
  kept. The extra requests were sent anyway; the mesh cross-check uses all of them.
"""

from __future__ import annotations

import ast
import dataclasses
import datetime as _dt
import json
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._backend import BackendCounters, FaultSettings
from .._errors import AbTrafficError, BackendError, LoadError, UsageError
from ._converge import Convergence
from ._jobentry import RECORDS_READY
from ._kube import (
    KubeApi,
    PodFailureWatch,
    Readiness,
    deployment_ready,
    is_terminating,
    load_exited,
    name_of,
    pod_is_meshed,
    ready_endpoint_count,
    selector_string,
    wait_until,
)
from ._loadjob import LOAD_CONTAINER, apex_url, extract_proxy_metrics, refuse_port_forward
from ._metrics import MeshCheck, add_counters, backend_counters, compare_with_app, parse_prometheus
from ._plan import RUN_LABEL, StepExecutor, deploy_steps, load_steps, teardown_steps, weight_change_steps

if TYPE_CHECKING:
    from .._load import LoadObserver, LoadPlan, LoadResult, RequestRecord
    from .._spec import ExperimentSpec

logger = logging.getLogger("pytest_abtraffic.cluster")

MODEL_CONTAINER = "model"
CHAOS_TIMEOUT_S = 60.0
EXEC_TIMEOUT_S = 20.0
MAX_CLOCK_SHIFT_S = 10.0
_STARTED = "abtraffic: locust started"
_PROGRESS = re.compile(r"abtraffic: (?P<elapsed>[\d.]+)s (?P<requests>\d+) requests \((?P<rps>[\d.]+)/s\) "
                       r"ok=(?P<ok>\{.*?\}) failures=(?P<failures>\d+)")
_FAULT_SCRIPT = (
    "import sys, urllib.request as u\n"
    "o = u.build_opener(u.ProxyHandler({}))\n"
    "r = u.Request(sys.argv[1], data=sys.argv[2].encode(), method=sys.argv[3],"
    " headers={'content-type': 'application/json'})\n"
    "print(o.open(r, timeout=5).read().decode())\n"
)


def _parse_kubelet_line(line: str) -> tuple[float | None, str]:
    """(epoch seconds, text) of a log line read with ``timestamps=True``."""
    stamp, sep, text = line.partition(" ")
    if not sep or not stamp.endswith("Z") or "T" not in stamp:
        return None, line
    try:
        main, _, frac = stamp[:-1].partition(".")
        when = _dt.datetime.fromisoformat(main).replace(tzinfo=_dt.UTC).timestamp()
        return when + (float(f"0.{frac}") if frac.isdigit() else 0.0), text
    except ValueError:
        return None, line


class LiveDeployments(list["ClusterDeployment"]):
    """A backend's deployments; pass ``forget`` as ``on_teardown`` so torn-down ones drop out."""

    def forget(self, deployment: ClusterDeployment) -> None:
        if deployment in self:
            self.remove(deployment)


class ClusterDeployment:
    """``Deployment`` on a cluster namespace. Created by ``KindBackend``/``ExistingClusterBackend``."""

    def __init__(
        self,
        *,
        backend_name: str,
        spec: ExperimentSpec,
        namespace: str,
        api: KubeApi,
        executor: StepExecutor,
        run_id: str,
        load_image: str,
        report_root: Path,
        ready_timeout_s: float,
        allow_chaos: bool,
        cluster_domain: str = "cluster.local",
        describe_extra: Mapping[str, Any] | None = None,
        on_teardown: Callable[[ClusterDeployment], None] | None = None,
    ) -> None:
        self._backend_name = backend_name
        self._deployed = spec
        self._spec = spec
        self._namespace = namespace
        self._api = api
        self._executor = executor
        self._run_id = run_id
        self._load_image = load_image
        self._report_root = report_root
        self._ready_timeout_s = ready_timeout_s
        self._allow_chaos = allow_chaos
        self._cluster_domain = cluster_domain
        self._describe_extra = dict(describe_extra or {})
        self._on_teardown = on_teardown
        self._lock = threading.RLock()
        self._applied: list[Mapping[str, Any]] = []
        self._loads = 0
        self._mesh_totals: dict[str, BackendCounters] = {}
        self._mesh_checks: list[MeshCheck] = []
        self._load_logs: dict[str, str] = {}
        self._load_metrics: dict[str, str] = {}
        self._faulted: set[str] = set()
        self._touched = False
        self._torn_down = False
        self.diagnostics: list[Path] = []

    # -- Deployment protocol: identity ----------------------------------------------------------------
    @property
    def spec(self) -> ExperimentSpec:
        return self._spec

    @property
    def namespace(self) -> str:
        return self._namespace

    @property
    def backend_name(self) -> str:
        return self._backend_name

    def target_url(self) -> str:
        """The apex Service, reachable (and split) from meshed pods of the cluster only."""
        return apex_url(self._spec, self._namespace, self._cluster_domain)

    def port_forward(self, *args: Any, **kwargs: Any) -> None:
        """Refused: a port-forward bypasses the proxy that applies the split (linkerd2#2352)."""
        refuse_port_forward(self.target_url())

    # -- deploy ---------------------------------------------------------------------------------------
    def deploy(self) -> None:
        """Apply the experiment and wait until it is ready. Diagnostics and cleanup on failure."""
        from .._from_manifests import experiment_objects  # the user's objects, or the kit's rendering

        objects = experiment_objects(self._spec, self._namespace)
        steps = deploy_steps(self._spec, self._namespace, objects, run_id=self._run_id,
                             timeout_s=self._ready_timeout_s, cluster_domain=self._cluster_domain)
        try:
            for step in steps:
                if step.kind == "apply":
                    self._applied.extend(step.objects)
                self._executor.run_step(step)
        except BaseException as exc:
            self.save_diagnostics(f"deploy failed: {exc}")
            try:
                self.teardown()
            except Exception as cleanup:  # report the deploy error, not the cleanup's
                logger.warning("cleanup after a failed deploy of %s failed: %s", self._namespace, cleanup)
            raise

    # -- load -------------------------------------------------------------------------------------------
    def run_load(self, plan: LoadPlan, observer: LoadObserver | None = None) -> LoadResult:
        with self._lock:
            self._loads += 1
            job_name = f"abtraffic-load-{self._loads}"
        apply_step, wait_step, delete_step = load_steps(
            self._spec, self._namespace, plan, image=self._load_image, job_name=job_name,
            cluster_domain=self._cluster_domain, run_id=self._run_id, host=self.target_url())
        self._applied.extend(apply_step.objects)
        try:
            self._executor.run_step(apply_step)
            pod = self._wait_for_load_pod(job_name)
            live = _LiveObserver(observer)
            deadline = time.monotonic() + float(wait_step.timeout_s)
            while True:
                live.new_stream()
                self._api.follow_pod_log(pod, self._namespace, container=LOAD_CONTAINER, on_line=live.on_line,
                                         timeout_s=max(1.0, deadline - time.monotonic()))
                if live.records_ready or load_exited(self._api, self._namespace, job_name, LOAD_CONTAINER).ready \
                        or time.monotonic() >= deadline:
                    break
                time.sleep(1.0)  # the log stream dropped while Locust runs: follow again (old lines are skipped)
            full = self._collect_records(pod, job_name)
            worker_logs: list[str] = []
            if plan.workers > 1:
                full, worker_logs = self._collect_workers(job_name, plan, full, deadline)
            self._executor.run_step(wait_step)
            log = self._api.pod_log(pod, self._namespace, container=LOAD_CONTAINER)
            self._load_logs[job_name] = log
            # The meshed clients are the worker pods when distributed: their proxies counted the requests.
            check = self._mesh_check(job_name, worker_logs or [log], full)
            result = live.finish(full, plan)
            from ._kube import job_state

            # Complete once the proxy honoured /shutdown; otherwise it ends at activeDeadlineSeconds.
            job = job_state(self._api, self._namespace, job_name).detail
            extra = {"abtraffic_in_cluster": {**live.notes(), "job": job_name, "pod": pod, "job_state": job},
                     "abtraffic_mesh_check": check.as_dict() if check is not None else None}
            return dataclasses.replace(result, locust_stats={**(result.locust_stats or {}), **extra})
        except BaseException as exc:
            self.save_diagnostics(f"load run {job_name} failed: {exc}")
            raise
        finally:
            try:
                self._executor.run_step(delete_step)
            except Exception as exc:  # the namespace teardown removes it anyway
                logger.warning("could not delete load Job %s: %s", job_name, exc)

    def _collect_records(self, pod: str, job_name: str) -> LoadResult:
        """Stream the records file out of the still-running load container (``_load/_recordsfile``).

        The exec also creates the marker the job entry waits for, so the proxy stops only afterwards.
        A stream that ends early or does not match its trailer is a LoadError, never fewer records."""
        from .._load._logparse import result_from_lines
        from .._load._recordsfile import READ_SCRIPT, RecordsStreamReader
        from ._kube import job_state
        from ._loadjob import COLLECT_TIMEOUT_S, COLLECTED_MARKER, RECORDS_FILE

        reader = RecordsStreamReader(f"records file {RECORDS_FILE} of pod {pod}")
        try:
            code, err = self._api.exec_stream(pod, self._namespace, container=LOAD_CONTAINER,
                                              argv=["python", "-c", READ_SCRIPT, RECORDS_FILE, COLLECTED_MARKER],
                                              on_stdout=reader.feed, timeout_s=COLLECT_TIMEOUT_S)
        except Exception as exc:  # the container is gone (crashed, deadline): say where the run stood
            state = job_state(self._api, self._namespace, job_name)
            tail = self._log_tail(pod)
            raise LoadError(f"cannot read the load records from pod {pod} ({exc}); {state.detail}\nlog tail:\n{tail}") \
                from None
        if code != 0:
            state = job_state(self._api, self._namespace, job_name)
            raise LoadError(f"reading {RECORDS_FILE} in pod {pod} failed (exit {code}): {err.strip()[-500:]}; "
                            f"{state.detail}\nlog tail:\n{self._log_tail(pod)}")
        return result_from_lines(reader.finish())

    def _log_tail(self, pod: str) -> str:
        try:
            return self._api.pod_log(pod, self._namespace, container=LOAD_CONTAINER, tail_lines=20)
        except Exception as exc:
            return f"(log unavailable: {exc})"

    def _wait_for_load_pod(self, job_name: str) -> str:
        found: dict[str, str] = {}

        def check() -> Readiness:
            pods = self._api.list_objects("v1", "Pod", self._namespace, label_selector=f"job-name={job_name}")
            if not pods:
                return Readiness(False, f"no pod for Job {job_name} yet")
            pod = pods[0]
            if not pod_is_meshed(pod):
                raise BackendError(
                    f"the load pod {name_of(pod)} was not injected with the Linkerd proxy, so the split would not "
                    "apply to its requests. Is the proxy injector healthy (linkerd check)? Is injection disabled "
                    "for the namespace?")
            statuses = (pod.get("status") or {}).get("containerStatuses") or []
            state = next((s.get("state") or {} for s in statuses if s.get("name") == LOAD_CONTAINER), {})
            if state.get("running") or state.get("terminated"):
                found["pod"] = name_of(pod)
                return Readiness(True, f"pod {name_of(pod)} started")
            from ._kube import pod_problems

            problems = pod_problems(self._api, self._namespace, f"job-name={job_name}")
            return Readiness(False, "; ".join(problems) or f"pod {name_of(pod)} not started")

        wait_until(check, what=f"load pod of Job {job_name}", timeout_s=self._ready_timeout_s, api=self._api,
                   namespace=self._namespace, involved=[job_name],
                   watch=PodFailureWatch(self._api, self._namespace, f"job-name={job_name}"))
        return found["pod"]

    def _collect_workers(self, job_name: str, plan: LoadPlan, master: LoadResult,
                         deadline: float) -> tuple[LoadResult, list[str]]:
        """Read every worker pod's records (each announces them when its Locust worker is done) and
        merge them on one time axis (each pod counts from its own start: aligned by the start epochs)."""
        from .._load import LoadResult, RequestRecord
        from .._load._logparse import merge_results
        from ._loadjob import workers_job_name

        job = workers_job_name(job_name)
        results: dict[str, LoadResult] = {}
        while len(results) < plan.workers:
            pods = self._api.list_objects("v1", "Pod", self._namespace, label_selector=f"job-name={job}")
            for pod in sorted(pods, key=name_of):
                name = name_of(pod)
                if name in results:
                    continue
                text = self._api.pod_log(name, self._namespace, container=LOAD_CONTAINER)
                if any(line.split(" ", 1)[-1].startswith(RECORDS_READY) or line.startswith(RECORDS_READY)
                       for line in text.splitlines()):
                    results[name] = self._collect_records(name, job)
                elif _container_exited(pod, LOAD_CONTAINER):
                    raise LoadError(f"load worker pod {name} exited without announcing its records; log tail:\n"
                                    f"{chr(10).join(text.splitlines()[-20:])}")
            if len(results) >= plan.workers:
                break
            if time.monotonic() >= deadline:
                raise LoadError(f"only {len(results)} of {plan.workers} load worker pods of Job {job} delivered "
                                "their records before the deadline")
            time.sleep(1.0)
        starts = [float((r.locust_stats or {}).get("start_epoch") or 0.0) for r in results.values()]
        origin = min(starts)
        shifted = [LoadResult(records=tuple(RequestRecord(x.t + start - origin, x.version, x.status, x.latency_ms,
                                                          x.connection, x.error) for x in r.records),
                              duration_s=r.duration_s + start - origin, stopped_early=r.stopped_early,
                              stop_reason=r.stop_reason, locust_stats=r.locust_stats, predictions=r.predictions)
                   for r, start in zip(results.values(), starts, strict=True)]
        merged = merge_results(shifted) if len(shifted) > 1 else shifted[0]
        merged = dataclasses.replace(merged, locust_stats={"master": master.locust_stats,
                                                           "workers": [r.locust_stats for r in shifted]})
        logs = []
        for name in results:  # each worker dumps its proxy's metrics after its records were read
            end = time.monotonic() + 60.0
            while time.monotonic() < end:
                live = self._api.get("v1", "Pod", name, self._namespace)
                if live is None or _container_exited(live, LOAD_CONTAINER):
                    break
                time.sleep(1.0)
            logs.append(self._api.pod_log(name, self._namespace, container=LOAD_CONTAINER))
        return merged, logs

    def _mesh_check(self, job_name: str, logs: Sequence[str], result: LoadResult) -> MeshCheck | None:
        texts = [t for t in (extract_proxy_metrics(log) for log in logs) if t is not None]
        if not texts:
            return None
        text = "".join(texts)
        self._load_metrics[job_name] = text
        services = {v.name: self._spec.service_name(v.name) for v in self._spec.variants}
        try:
            samples = [sample for t in texts for sample in parse_prometheus(t)]  # counters add up across pods
            counts = backend_counters(samples, namespace=self._namespace, services=services)
        except ValueError as exc:
            logger.warning("cannot parse the load pod's proxy metrics: %s", exc)
            return None
        with self._lock:
            for variant, counters in counts.counters.items():
                before = self._mesh_totals.get(variant, BackendCounters())
                self._mesh_totals[variant] = add_counters(before, counters)
        app = Counter(r.version for r in result.records if r.version)
        check = compare_with_app(app, counts, retries=self._spec.failure_policy.retries is not None)
        self._mesh_checks.append(check)
        if not check.ok:
            logger.warning("%s", check.format())
        return check

    # -- chaos ------------------------------------------------------------------------------------------
    def _chaos(self, what: str) -> None:
        if not self._allow_chaos:
            raise UsageError(f"{what} changes the cluster; on an existing cluster chaos needs allow_chaos=True "
                             "(--abtraffic-allow-chaos)")
        self._touched = True

    def _selector(self, variant: str) -> str:
        self._spec.variant(variant)
        from .._from_manifests import variant_pod_labels

        return selector_string(variant_pod_labels(self._spec, variant))

    def _live_pods(self, variant: str) -> list[dict[str, Any]]:
        pods = self._api.list_objects("v1", "Pod", self._namespace, label_selector=self._selector(variant))
        return sorted((p for p in pods if not is_terminating(p)), key=name_of)

    def _set_replicas(self, variant: str, replicas: int) -> None:
        self._api.patch("apps/v1", "Deployment", self._spec.deployment_name(variant), self._namespace,
                        {"spec": {"replicas": int(replicas)}})

    def kill(self, variant: str, count: int | None = None) -> int:
        self._chaos("kill")
        pods = self._live_pods(variant)
        n = len(pods) if count is None else max(0, min(int(count), len(pods)))
        if n == 0:
            return 0
        dep = self._api.get("apps/v1", "Deployment", self._spec.deployment_name(variant), self._namespace) or {}
        current = int((dep.get("spec") or {}).get("replicas", len(pods)))
        # Scale first so the ReplicaSet does not replace them; then no grace period.
        self._set_replicas(variant, 0 if count is None else max(0, current - n))
        if count is None:
            victims = [name_of(p) for p in pods]
        else:
            victims = self._pods_marked_for_deletion(variant, n) or [name_of(p) for p in pods[:n]]
        for pod in victims:
            self._api.delete("v1", "Pod", pod, self._namespace, grace_period_s=0)
        return n

    def _pods_marked_for_deletion(self, variant: str, n: int, timeout_s: float = 5.0) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while True:
            pods = self._api.list_objects("v1", "Pod", self._namespace, label_selector=self._selector(variant))
            marked = sorted(name_of(p) for p in pods if is_terminating(p))
            if len(marked) >= n or time.monotonic() >= deadline:
                return marked[:n]
            time.sleep(0.1)

    def scale(self, variant: str, replicas: int) -> None:
        self._chaos("scale")
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            raise UsageError(f"replicas must be a non-negative integer, got {replicas!r}")
        self._set_replicas(variant, replicas)

    def set_fault(self, variant: str, fault: FaultSettings) -> None:
        self._chaos("set_fault")
        v = self._spec.variant(variant)
        if v.admin_port is None:
            raise UsageError(f"variant {variant!r} has no admin_port: fault knobs need the reference model "
                             "server's admin API")
        self._faulted.add(variant)
        body = json.dumps(fault.to_json())
        for pod in self._live_pods(variant):
            self._admin_call(name_of(pod), v.admin_port, "/faults", "PUT", body)

    def _admin_call(self, pod: str, port: int, path: str, method: str, body: str) -> str:
        argv = ["python", "-c", _FAULT_SCRIPT, f"http://127.0.0.1:{port}{path}", body, method]
        code, out = self._api.exec(pod, self._namespace, container=MODEL_CONTAINER, argv=argv,
                                   timeout_s=EXEC_TIMEOUT_S)
        if code != 0:
            raise BackendError(f"{method} {path} on the admin API of pod {pod} failed (exit {code}): {out.strip()}")
        return out

    def set_weights(self, weights: Mapping[str, int | str]) -> None:
        self._chaos("set_weights")
        new = self._spec.with_weights(weights)
        self._apply_split(new)
        self._spec = new

    def _apply_split(self, spec: ExperimentSpec) -> None:
        """Re-apply the split and run the convergence gate again: no sampling before it is served."""
        steps = weight_change_steps(spec, self._namespace, timeout_s=CHAOS_TIMEOUT_S,
                                    cluster_domain=self._cluster_domain)
        self._applied.extend(steps[0].objects)
        self._executor.run(steps)

    def served_weights(self) -> Convergence | None:
        """Declared vs programmed weights of the last convergence gate (after deploy or a weight change)."""
        return self._executor.convergence

    def restore(self) -> None:
        """Replicas, faults and weights back to the deployed spec; waits until ready."""
        if not self._touched:
            return
        deployed = self._deployed
        for variant in sorted(self._faulted):
            admin = deployed.variant(variant).admin_port
            for pod in self._live_pods(variant):
                try:
                    self._admin_call(name_of(pod), int(admin or 0), "/faults/reset", "POST", "{}")
                except AbTrafficError as exc:  # a pod that is going away; new pods start clean
                    logger.info("fault reset on %s skipped: %s", name_of(pod), exc)
        self._faulted.clear()
        if self._spec.exact_weights() != deployed.exact_weights():
            self._apply_split(deployed)
            self._spec = deployed
        for v in deployed.variants:
            self._set_replicas(v.name, v.replicas)
        for v in deployed.variants:
            self._wait_ready(deployed.deployment_name(v.name), deployed.service_name(v.name), v.replicas)
        self._touched = False

    def _wait_ready(self, deployment: str, service: str, replicas: int) -> None:
        def rollout() -> Readiness:
            return deployment_ready(self._api, self._namespace, deployment)

        def endpoints() -> Readiness:
            have = ready_endpoint_count(self._api, self._namespace, service)
            return Readiness(have >= replicas, f"Service {service}: {have}/{replicas} ready endpoints")

        variant = next((v.name for v in self._deployed.variants
                        if self._deployed.deployment_name(v.name) == deployment), None)
        wait_until(rollout, what=f"Deployment {deployment} after restore", timeout_s=self._ready_timeout_s,
                   api=self._api, namespace=self._namespace, involved=[deployment],
                   watch=PodFailureWatch(self._api, self._namespace, self._selector(variant)) if variant else None)
        if replicas:
            wait_until(endpoints, what=f"Service {service} after restore", timeout_s=self._ready_timeout_s,
                       api=self._api, namespace=self._namespace, involved=[service])

    def ready_endpoints(self, variant: str) -> int:
        self._spec.variant(variant)
        return ready_endpoint_count(self._api, self._namespace, self._spec.service_name(variant))

    def mesh_counters(self) -> dict[str, BackendCounters]:
        with self._lock:
            return dict(self._mesh_totals)

    @property
    def mesh_checks(self) -> list[MeshCheck]:
        return list(self._mesh_checks)

    # -- reporting and teardown -----------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        return {
            "backend": self._backend_name,
            "namespace": self._namespace,
            "target_url": self.target_url(),
            "run_label": f"{RUN_LABEL}={self._run_id}",
            "model": self._spec.model,
            "split_api": self._spec.split_api,
            "weights": {v.name: v.weight for v in self._spec.variants},
            "load_image": self._load_image,
            "load_runs": self._loads,
            "convergence": c.to_dict() if (c := self._executor.convergence) is not None else None,
            "mesh_checks": [c.as_dict() for c in self._mesh_checks],
            "diagnostics": [str(p) for p in self.diagnostics],
            **self._describe_extra,
        }

    def save_diagnostics(self, reason: str) -> Path | None:
        """Write a diagnostics bundle under the report directory; never raises."""
        from ._diagnostics import write_diagnostics

        try:
            path = write_diagnostics(self._report_root, namespace=self._namespace, reason=reason, api=self._api,
                                     applied=self._applied, describe=self.describe(), load_logs=self._load_logs,
                                     load_metrics=self._load_metrics)
        except Exception as exc:  # diagnostics must not hide the original error
            logger.warning("could not write diagnostics for %s: %s", self._namespace, exc)
            return None
        self.diagnostics.append(path)
        logger.warning("diagnostics for %s written to %s", self._namespace, path)
        return path

    def teardown(self) -> None:
        if self._torn_down:
            return
        self._torn_down = True
        try:
            self._executor.run(teardown_steps(self._namespace, run_id=self._run_id, guarded=True))
        finally:
            if self._on_teardown is not None:
                self._on_teardown(self)


class _LiveObserver:
    """Feeds an observer from the pod log during the run and replays it over the records after."""

    def __init__(self, observer: LoadObserver | None) -> None:
        self.observer = observer
        self.shift_s = 0.0
        self.started = False
        self.stop_at: float | None = None
        self.replayed = False
        self.dropped = 0
        self.lines_seen = 0
        self.records_ready = False
        self._index = 0

    def new_stream(self) -> None:
        self._index = 0

    def on_line(self, line: str) -> bool:
        stamp, text = _parse_kubelet_line(line)
        if text.startswith(RECORDS_READY):
            self.records_ready = True  # the job entry waits for the records to be read: stop following
            return True
        if self.observer is None:
            return False
        # A re-followed stream starts from the beginning again: skip the lines already seen.
        self._index += 1
        if self._index <= self.lines_seen:
            return False
        self.lines_seen = self._index
        if not self.started and _STARTED in text:
            self.started = True
            self.observer.on_start()
            if stamp is not None:
                shift = time.time() - stamp
                self.shift_s = shift if 0.0 <= shift <= MAX_CLOCK_SHIFT_S else 0.0
            return False
        match = _PROGRESS.search(text)
        if match and self.started and self.stop_at is None:
            from .._load import LoadSnapshot

            try:
                counts = ast.literal_eval(match["ok"])
            except (ValueError, SyntaxError):
                counts = {}
            elapsed = max(0.0, float(match["elapsed"]) - self.shift_s)
            snap = LoadSnapshot(elapsed_s=elapsed, requests=int(match["requests"]), counts=dict(counts),
                                failures=int(match["failures"]), rps=float(match["rps"]))
            if self.observer.on_progress(snap, ()):
                self.stop_at = elapsed
        return False

    def finish(self, result: LoadResult, plan: LoadPlan) -> LoadResult:
        from .._load import LoadResult, RequestRecord

        records = tuple(RequestRecord(max(0.0, r.t - self.shift_s), r.version, r.status, r.latency_ms,
                                      r.connection, r.error) for r in result.records)
        if self.observer is None:
            return dataclasses.replace(result, records=records)
        if not self.started:
            self.observer.on_start()
        stop_at = self.stop_at
        if stop_at is None:
            self.replayed = True
            stop_at = _replay(self.observer, records, result.duration_s, plan.progress_interval_s)
        if stop_at is None:
            return dataclasses.replace(result, records=records)
        kept = tuple(r for r in records if r.t <= stop_at)
        self.dropped = len(records) - len(kept)
        reason = str(getattr(self.observer, "stop_reason", None) or "observer")
        return LoadResult(records=kept, duration_s=min(result.duration_s, stop_at), stopped_early=True,
                          stop_reason=reason, locust_stats=result.locust_stats, predictions=result.predictions)

    def notes(self) -> dict[str, Any]:
        return {"time_shift_s": round(self.shift_s, 4), "observer_replayed": self.replayed,
                "records_dropped_after_stop": self.dropped}


def _container_exited(pod: Mapping[str, Any], container: str) -> bool:
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        if cs.get("name") == container and (cs.get("state") or {}).get("terminated"):
            return True
    return False


def _replay(observer: LoadObserver, records: Sequence[RequestRecord], duration_s: float,
            interval_s: float) -> float | None:
    from .._load import LoadSnapshot

    ordered = sorted(records, key=lambda r: r.t)
    counts: dict[str, int] = {}
    failures = 0
    i = 0
    t = interval_s
    end = max(duration_s, ordered[-1].t if ordered else 0.0)
    while t <= end + interval_s:
        while i < len(ordered) and ordered[i].t <= t:
            r = ordered[i]
            if r.ok:
                counts[r.version] = counts.get(r.version, 0) + 1
            else:
                failures += 1
            i += 1
        snap = LoadSnapshot(elapsed_s=t, requests=i, counts=dict(counts), failures=failures,
                            rps=i / t if t > 0 else 0.0)
        if observer.on_progress(snap, ordered[:i]):
            return t
        t += interval_s
    return None


__all__ = ["ClusterDeployment", "LiveDeployments"]

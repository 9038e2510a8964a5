"""The meshed load Job: Locust runs inside the mesh, aimed at the apex Service.

Linkerd applies a split in the *client's* outbound proxy, and only for requests addressed to the
apex Service (linkerd-facts.md). ``kubectl port-forward`` and the API-server proxy skip the proxy
entirely (linkerd2#2352), so the kit never measures a split through them: the load runs as a Job
whose pod carries ``linkerd.io/inject: enabled`` and targets
``http://<apex>.<namespace>.svc.<cluster domain>:<port>``.

Objects: a ServiceAccount (its own mesh identity, no RBAC: the pod never calls the API), a
ConfigMap with the payloads, the user's locustfile and the kit's pod code (``_podcode``), and the
Job (no retries: a retried run would count twice). The container runs on the official Locust image
(no image of the kit's own) with ``PYTHONPATH`` on the mounted code: ``_jobentry`` wraps
``_load.incluster`` and stops the proxy at the end.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

from .._errors import BackendError, LoadError
from .._load._driver import MASTER_PORT
from ._jobentry import METRICS_BEGIN, METRICS_END
from ._podcode import CODE_DIR, pod_code

if TYPE_CHECKING:
    from .._load import LoadPlan
    from .._spec import ExperimentSpec

MANAGED_BY = {"app.kubernetes.io/managed-by": "pytest-abtraffic"}
LOAD_CONTAINER = "load"
LOAD_SERVICE_ACCOUNT = "abtraffic-load"
LOAD_APP_LABEL = {"app.kubernetes.io/name": "abtraffic-load"}
CONFIG_MOUNT = "/etc/abtraffic"
WORK_MOUNT = "/tmp"  # noqa: S108 - a path inside the load container (an emptyDir), not on this host
PAYLOADS_KEY = "payloads.json"
LOCUSTFILE_KEY = "locustfile.py"
RUN_AS = 10001
# ConfigMaps are limited to 1 MiB in total; leave room for the metadata.
CONFIGMAP_MAX_BYTES = 900 * 1024
# Start-up allowance on top of the planned duration: image pull, proxy start, Locust start.
STARTUP_ALLOWANCE_S = 120.0
DEADLINE_ALLOWANCE_S = 300.0
# Records file on the emptyDir, read back by exec (``_load/_recordsfile``), and the marker the read creates.
RECORDS_FILE = f"{WORK_MOUNT}/abtraffic-records.jsonl.gz"
COLLECTED_MARKER = f"{WORK_MOUNT}/abtraffic-records.collected"
COLLECT_TIMEOUT_S = 300.0
INJECT_ANNOTATIONS = {
    "linkerd.io/inject": "enabled",
    # The proxy's /shutdown endpoint is off by default since Linkerd 2.16; _jobentry calls it.
    "config.linkerd.io/proxy-admin-shutdown": "enabled",
    # Default already, stated for clarity: the load container starts once the proxy is ready.
    "config.linkerd.io/proxy-await": "enabled",
}
PORT_FORWARD_REASON = (
    "a port-forward (or the API-server proxy) to the apex Service bypasses the Linkerd proxy, so the split is "
    "never applied and kube-proxy picks a pod per connection (linkerd2#2352, closed as won't fix). Load must "
    "come from a meshed pod: the cluster backends run it as a meshed Job (Deployment.run_load)."
)


def refuse_port_forward(target: str | None = None) -> NoReturn:
    """Always raises: port-forwarding is not a way to test a Linkerd split."""
    where = f" ({target})" if target else ""
    raise BackendError(f"refusing to send load through a port-forward{where}: {PORT_FORWARD_REASON}")


def check_load_target(url: str) -> None:
    """For ``target_url()`` consumers: refuse a loopback URL (a port-forward) for a cluster split."""
    host = (urlsplit(url).hostname or "").lower()
    if host in ("localhost", "127.0.0.1", "::1") or host.startswith("127."):
        refuse_port_forward(url)


def apex_url(spec: ExperimentSpec, namespace: str, cluster_domain: str = "cluster.local") -> str:
    return f"http://{spec.apex_service}.{namespace}.svc.{cluster_domain}:{spec.service_port}"


def _deadline_s(plan: LoadPlan) -> float:
    return float(plan.duration_s) + STARTUP_ALLOWANCE_S


def load_job_objects(
    spec: ExperimentSpec,
    namespace: str,
    plan: LoadPlan,
    *,
    job_name: str,
    image: str,
    cluster_domain: str = "cluster.local",
    image_pull_policy: str = "IfNotPresent",
    labels: Mapping[str, str] | None = None,
    host: str | None = None,
) -> list[dict[str, Any]]:
    """ServiceAccount, ConfigMap and Job of one load run; with ``plan.workers`` > 1 also the master's
    Service and a Job of N meshed worker pods (Locust's distributed mode, ``worker_mode="pods"``).
    ``host``: the URL load is aimed at (default: the experiment's apex Service in ``namespace``; a live
    target's apex lives in another namespace)."""
    if plan.workers > 1 and plan.worker_mode != "pods":
        plan = dataclasses.replace(plan, worker_mode="pods")
    common = {**MANAGED_BY, **LOAD_APP_LABEL, **(labels or {})}
    plan_dict = plan.to_dict()
    payloads = plan_dict.pop("payloads", None)
    data: dict[str, str] = {}
    items: list[dict[str, str]] = []
    for key, (mount_path, text) in pod_code().items():
        data[key] = text
        items.append({"key": key, "path": mount_path})
    if payloads is not None:
        data[PAYLOADS_KEY] = json.dumps(payloads, separators=(",", ":"))
        items.append({"key": PAYLOADS_KEY, "path": PAYLOADS_KEY})
    if plan.locustfile:
        path = Path(plan.locustfile)
        try:
            data[LOCUSTFILE_KEY] = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise LoadError(f"cannot read the locustfile {str(path)!r} to ship it to the load Job: {exc}") from None
        items.append({"key": LOCUSTFILE_KEY, "path": LOCUSTFILE_KEY})
        plan_dict["locustfile"] = f"{CONFIG_MOUNT}/{LOCUSTFILE_KEY}"
    size = sum(len(v.encode("utf-8")) for v in data.values())
    if size > CONFIGMAP_MAX_BYTES:
        raise LoadError(f"payloads, locustfile and the kit's pod code take {size:,} bytes; a ConfigMap holds at "
                        "most about "
                        f"{CONFIGMAP_MAX_BYTES:,}: use fewer or smaller payloads")
    deadline = _deadline_s(plan)
    load_args = ["--host", host or apex_url(spec, namespace, cluster_domain),
                 "--plan", json.dumps(plan_dict, separators=(",", ":"), sort_keys=True),
                 "--timeout", f"{deadline:g}", "--workdir", f"{WORK_MOUNT}/abtraffic", "--records-file", RECORDS_FILE]
    if payloads is not None:
        load_args += ["--payloads-file", f"{CONFIG_MOUNT}/{PAYLOADS_KEY}"]
    command = ["python", "-m", "pytest_abtraffic._cluster._jobentry", "--deadline", f"{deadline + 60:g}",
               "--records-file", RECORDS_FILE, "--collected-marker", COLLECTED_MARKER,
               "--collect-timeout", f"{COLLECT_TIMEOUT_S:g}", "--", *load_args]
    service_account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": LOAD_SERVICE_ACCOUNT, "namespace": namespace, "labels": dict(common)},
    }
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": job_name, "namespace": namespace, "labels": dict(common)},
        "data": data,
    }
    container = {
        "name": LOAD_CONTAINER,
        "image": image,
        "imagePullPolicy": image_pull_policy,
        "command": command,
        "env": [
            {"name": "PYTHONUNBUFFERED", "value": "1"},
            {"name": "HOME", "value": WORK_MOUNT},
            # The kit's pod code from the ConfigMap; nothing is written next to it (read-only mount).
            {"name": "PYTHONPATH", "value": f"{CONFIG_MOUNT}/{CODE_DIR}"},
            {"name": "PYTHONDONTWRITEBYTECODE", "value": "1"},
        ],
        "resources": {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": True},
            {"name": "work", "mountPath": WORK_MOUNT},
        ],
        # Container level: Linkerd's injected init container brings its own security context.
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job_name, "namespace": namespace, "labels": dict(common)},
        "spec": {
            "backoffLimit": 0,
            "activeDeadlineSeconds": int(deadline + COLLECT_TIMEOUT_S + DEADLINE_ALLOWANCE_S),
            "ttlSecondsAfterFinished": 3600,
            "template": {
                "metadata": {"labels": dict(common), "annotations": dict(INJECT_ANNOTATIONS)},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": LOAD_SERVICE_ACCOUNT,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 30,
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": job_name, "items": items}},
                        {"name": "work", "emptyDir": {}},
                    ],
                },
            },
        },
    }
    if plan.workers <= 1:
        return [service_account, config_map, job]
    return [service_account, config_map, *_distributed_objects(job, namespace, plan, job_name=job_name,
                                                                cluster_domain=cluster_domain, common=common)]


def workers_job_name(job_name: str) -> str:
    return f"{job_name}-workers"


def master_service_name(job_name: str) -> str:
    return f"{job_name}-master"


def _distributed_objects(master: dict[str, Any], namespace: str, plan: LoadPlan, *, job_name: str,
                         cluster_domain: str, common: Mapping[str, str]) -> list[dict[str, Any]]:
    """The master Service and the worker Job next to the (master) load Job.

    Locust's workers connect to the master's ``--master-bind-port`` (5557, ZeroMQ): the port is
    marked opaque for Linkerd (``config.linkerd.io/opaque-ports``, linkerd2 edge-25.4.4
    ``pkg/k8s/labels.go``) on the Service and both pod templates, so the proxies do not try to detect
    HTTP on it. Every worker pod is meshed: the split applies to the requests it sends.
    """
    import copy

    opaque = {"config.linkerd.io/opaque-ports": str(MASTER_PORT)}
    master_pod = master["spec"]["template"]
    master_pod["metadata"]["annotations"].update(opaque)
    master_pod["metadata"]["labels"]["abtraffic-load-role"] = "master"
    master_pod["spec"]["containers"][0]["ports"] = [{"name": "locust-master", "containerPort": MASTER_PORT}]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": master_service_name(job_name), "namespace": namespace, "labels": dict(common),
                     "annotations": dict(opaque)},
        "spec": {"selector": {"job-name": job_name, "abtraffic-load-role": "master"},
                 "ports": [{"name": "locust-master", "port": MASTER_PORT, "targetPort": MASTER_PORT}]},
    }
    workers = copy.deepcopy(master)
    workers["metadata"]["name"] = workers_job_name(job_name)
    workers["spec"]["parallelism"] = plan.workers
    workers["spec"]["completions"] = plan.workers
    pod = workers["spec"]["template"]
    pod["metadata"]["labels"]["abtraffic-load-role"] = "worker"
    container = pod["spec"]["containers"][0]
    container.pop("ports", None)
    command = list(container["command"])
    at = command.index("--") + 1
    address = f"{master_service_name(job_name)}.{namespace}.svc.{cluster_domain}:{MASTER_PORT}"
    container["command"] = [*command[:at], "--worker-of", address, *command[at:]]
    return [service, master, workers]


def extract_proxy_metrics(log_text: str) -> str | None:
    """The proxy metrics block ``_jobentry`` printed, or None when there is none."""
    lines: list[str] | None = None
    for line in log_text.splitlines():
        if lines is None:
            if line.strip() == METRICS_BEGIN:
                lines = []
            continue
        if line.strip() == METRICS_END:
            return "\n".join(lines) + "\n"
        lines.append(line)
    return None


__all__ = [
    "INJECT_ANNOTATIONS",
    "LOAD_CONTAINER",
    "LOAD_SERVICE_ACCOUNT",
    "PORT_FORWARD_REASON",
    "apex_url",
    "check_load_target",
    "extract_proxy_metrics",
    "load_job_objects",
    "master_service_name",
    "refuse_port_forward",
    "workers_job_name",
]

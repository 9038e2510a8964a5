"""A diagnostics bundle written when something on a cluster fails.

Layout under ``<report dir>/diagnostics/<namespace>-<UTC time>/``:

- ``reason.txt``: what failed (the exception text);
- ``describe.json``: the deployment's description (spec, names, mesh checks, load runs);
- ``manifests.yaml``: every object the kit applied;
- ``events.txt``: the namespace's events, oldest first;
- ``pods.txt``: each pod's phase, containers and waiting reasons;
- ``logs/<pod>.<container>.log``: model and proxy containers (last lines);
- ``proxy-metrics/<pod>.prom``: each meshed pod's proxy ``/metrics`` (via the API-server pod proxy);
- ``load/<job>.log`` and ``load/<job>.proxy.prom``: load Job logs (Locust records) and the load
  pod's own proxy metrics, as captured;
- ``errors.txt``: parts that could not be collected (collecting never raises).
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ._kube import PROXY_ADMIN_PORT, KubeApi, name_of, pod_is_meshed, pod_problems, recent_events

LOG_TAIL_LINES = 2000
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe(name: str) -> str:
    return _SAFE.sub("_", name)[:120] or "_"


def write_diagnostics(
    out_root: Path,
    *,
    namespace: str,
    reason: str,
    api: KubeApi | None,
    applied: Sequence[Mapping[str, Any]] = (),
    describe: Mapping[str, Any] | None = None,
    load_logs: Mapping[str, str] | None = None,
    load_metrics: Mapping[str, str] | None = None,
) -> Path:
    """Write the bundle and return its directory. Never raises for a part that fails."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    out = out_root / "diagnostics" / f"{_safe(namespace)}-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []

    def write(rel: str, text: str) -> None:
        path = out / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            errors.append(f"{rel}: {exc}")

    write("reason.txt", reason.rstrip() + "\n")
    if describe is not None:
        write("describe.json", json.dumps(describe, indent=2, sort_keys=True, default=str) + "\n")
    if applied:
        try:
            from .._manifests import dump_yaml

            write("manifests.yaml", dump_yaml(applied))
        except Exception as exc:
            errors.append(f"manifests.yaml: {exc}")
    for job, text in (load_logs or {}).items():
        write(f"load/{_safe(job)}.log", text)
    for job, text in (load_metrics or {}).items():
        write(f"load/{_safe(job)}.proxy.prom", text)
    if api is not None:
        _collect_cluster(api, namespace, write, errors)
    if errors:
        write("errors.txt", "\n".join(errors) + "\n")
    return out


def _collect_cluster(api: KubeApi, namespace: str, write: Any, errors: list[str]) -> None:
    try:
        events = recent_events(api, namespace, None, limit=500)
        write("events.txt", "\n".join(events) + "\n")
    except Exception as exc:
        errors.append(f"events: {exc}")
    try:
        pods = api.list_objects("v1", "Pod", namespace)
    except Exception as exc:
        errors.append(f"pods: {exc}")
        return
    lines = []
    for pod in pods:
        status = pod.get("status") or {}
        containers = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        lines.append(f"{name_of(pod)}: phase={status.get('phase')} containers={containers} "
                     f"meshed={pod_is_meshed(pod)}")
    try:
        lines += pod_problems(api, namespace, "")
    except Exception as exc:
        errors.append(f"pod problems: {exc}")
    write("pods.txt", "\n".join(lines) + "\n")
    for pod in pods:
        pod_name = name_of(pod)
        spec = pod.get("spec") or {}
        names = [str(c.get("name")) for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])]
        for container in names:
            try:
                text = api.pod_log(pod_name, namespace, container=container, tail_lines=LOG_TAIL_LINES)
            except Exception as exc:  # e.g. a container that never started
                errors.append(f"logs {pod_name}/{container}: {exc}")
                continue
            write(f"logs/{_safe(pod_name)}.{_safe(container)}.log", text)
        if pod_is_meshed(pod) and (pod.get("status") or {}).get("phase") == "Running":
            try:
                text = api.proxy_get(pod_name, namespace, port=PROXY_ADMIN_PORT, path="metrics", timeout_s=10.0)
            except Exception as exc:
                errors.append(f"proxy metrics {pod_name}: {exc}")
                continue
            write(f"proxy-metrics/{_safe(pod_name)}.prom", text)


__all__ = ["write_diagnostics"]

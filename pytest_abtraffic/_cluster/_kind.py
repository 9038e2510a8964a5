"""The kind backend: a throw-away (or kept, or reused) kind cluster with Linkerd.

Every kind/kubectl/linkerd call gets the cluster's own kubeconfig file (``--kubeconfig`` and
``KUBECONFIG``), and the Python client is built from that file: the user's ``~/.kube/config`` is
never read or written. One cluster serves a whole test session, also under pytest-xdist: workers
share a lock file and a holders file keyed by the cluster name (``filelock``). The first worker
creates (or reuses) the cluster; the others wait on the lock and reuse it; the last one out
deletes it (unless ``keep``). Holders are process ids, and dead ones are pruned, so a crashed
worker does not keep the cluster forever.

Everything the backend runs comes from the step builders in ``_plan`` (the same ones
``abtraffic plan --backend kind`` prints).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._backend import teardown_all
from .._errors import AbTrafficError, BackendError
from .._proc import Completed
from .._proc import run as default_run
from ._kube import Kube, KubeApi
from ._plan import (
    MARKER_NAME,
    MARKER_NAMESPACE,
    KindLayout,
    StepExecutor,
    check_spec_against_linkerd,
    image_steps,
    images_in_use,
    kind_cleanup_steps,
    kind_cluster_steps,
    kind_layout,
    marker_steps,
    mesh_steps,
    needs_smi,
    run_token,
    smi_steps,
)
from ._prereq import check_prerequisites
from ._settings import ClusterSettings, default_work_root

if TYPE_CHECKING:
    from .._spec import ExperimentSpec
    from ._deployment import ClusterDeployment

logger = logging.getLogger("pytest_abtraffic.cluster")

Runner = Callable[..., Completed]
LOCK_TIMEOUT_S = 3600.0  # the first worker may take ~5-10 minutes to create and mesh the cluster


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ClusterLease:
    """Cross-process reference count of a cluster, in ``<locks>/<name>.json`` under a file lock."""

    def __init__(self, name: str, lock_dir: Path | None = None, *, timeout_s: float = LOCK_TIMEOUT_S,
                 holder: int | None = None, alive: Callable[[int], bool] = _alive) -> None:
        self.lock_dir = lock_dir or default_work_root() / "locks"
        self.lock_path = self.lock_dir / f"{name}.lock"
        self.state_path = self.lock_dir / f"{name}.json"
        self.timeout_s = timeout_s
        self.holder = os.getpid() if holder is None else holder
        self._alive = alive
        self.held = False

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """The shared state under the lock; changes to the dict are saved on exit."""
        from filelock import FileLock

        self.lock_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.lock_path), timeout=self.timeout_s):
            state = self._read()
            state["holders"] = [p for p in state.get("holders", []) if isinstance(p, int) and self._alive(p)]
            yield state
            self.state_path.write_text(json.dumps(state, sort_keys=True), encoding="utf-8")

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def acquire(self, setup: Callable[[dict[str, Any]], None]) -> None:
        """Join; the first holder runs ``setup(state)`` (under the lock) before joining."""
        with self.locked() as state:
            if not state["holders"]:
                setup(state)
            state["holders"].append(self.holder)
        self.held = True

    def release(self, last_out: Callable[[], None]) -> None:
        """Leave; the last holder runs ``last_out()`` (under the lock)."""
        if not self.held:
            return
        self.held = False
        with self.locked() as state:
            state["holders"] = [p for p in state["holders"] if p != self.holder]
            if not state["holders"]:
                last_out()
                state.pop("ready_for", None)
                state["images"] = []


def worker_id() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


class KindBackend:
    """``Backend`` on a kind cluster. ``start()`` checks tools and creates/joins the cluster;
    ``deploy`` calls it when needed; ``close`` leaves (and deletes the cluster when last out)."""

    def __init__(
        self,
        settings: ClusterSettings | None = None,
        spec: ExperimentSpec | None = None,
        *,
        runner: Runner = default_run,
        which: Callable[[str], str | None] = shutil.which,
        api_factory: Callable[[KindLayout], KubeApi] | None = None,
        log: Callable[[str], None] | None = None,
        lease: ClusterLease | None = None,
    ) -> None:
        self.settings = settings or ClusterSettings()
        self._session_spec = spec
        if spec is not None:
            spec.check_backend("kind")
            check_spec_against_linkerd(spec, self.settings)
        self.layout = kind_layout(self.settings)
        self._runner = runner
        self._which = which
        self._api_factory = api_factory
        self._log = log or logger.info
        self._lease = lease or ClusterLease(self.layout.name)
        self._api: KubeApi | None = None
        self._checked_smi = False
        self._checked = False
        self._started = False
        self._closed = False
        from ._deployment import LiveDeployments

        self._deployments = LiveDeployments()
        self._count = 0
        self.run_id = f"{run_token()[:16]}-{worker_id()}"[:63].rstrip("-_.")

    @property
    def name(self) -> str:
        return "kind"

    # -- helpers ----------------------------------------------------------------------------------------
    def check_prerequisites(self, *, needs_smi_cli: bool | None = None) -> None:
        """Tools on PATH with the pinned versions; nothing else runs before this passes."""
        want_smi = needs_smi_cli if needs_smi_cli is not None else (
            self._session_spec is not None and needs_smi(self._session_spec))
        if self._checked and (self._checked_smi or not want_smi):
            return
        check_prerequisites("kind", self.settings, needs_smi=want_smi, which=self._which, runner=self._runner)
        self._checked = True
        self._checked_smi = self._checked_smi or want_smi

    def _executor(self) -> StepExecutor:
        from ._converge import cli_policy_query

        query = cli_policy_query(self._runner, kubeconfig=str(self.layout.kubeconfig), context=self.layout.context,
                                 linkerd_namespace=self.settings.linkerd_namespace,
                                 env={**os.environ, **dict(self.layout.env)})
        return StepExecutor(runner=self._runner, api_factory=lambda: self.api, log=self._log, policy_query=query)

    @property
    def api(self) -> KubeApi:
        if self._api is None:
            if self._api_factory is not None:
                self._api = self._api_factory(self.layout)
            else:
                self._api = Kube.from_kubeconfig(str(self.layout.kubeconfig), self.layout.context,
                                                 cache_dir=self.layout.work_dir)
        return self._api

    def _report_root(self) -> Path:
        return Path(self.settings.report_dir) if self.settings.report_dir else self.layout.work_dir

    def _cluster_exists(self) -> bool:
        done = self._runner(["kind", "get", "clusters"], timeout=60.0)
        return self.layout.name in done.stdout.split()

    def _read_marker(self) -> dict[str, str] | None:
        cm = self.api.get("v1", "ConfigMap", MARKER_NAME, MARKER_NAMESPACE)
        return {str(k): str(v) for k, v in (cm.get("data") or {}).items()} if cm else None

    # -- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._started:
            return
        if self._closed:
            raise BackendError("this kind backend is closed")
        self.check_prerequisites()
        self.layout.work_dir.mkdir(parents=True, exist_ok=True)
        self._lease.acquire(self._setup)
        self._started = True

    def _setup(self, state: dict[str, Any]) -> None:
        """First holder: create the cluster (or check the one to reuse), mesh it, load images."""
        executor = self._executor()
        spec = self._session_spec
        exists = self._cluster_exists()
        if exists and state.get("ready_for") == run_token():
            # Set up earlier in this same run by a worker that has since exited (crash or restart).
            self._log(f"joining kind cluster {self.layout.name}, set up earlier in this run")
        elif exists:
            if not self.settings.reuse:
                raise BackendError(
                    f"a kind cluster named {self.layout.name} already exists (left over from an earlier run?). "
                    f"Delete it with `kind delete cluster --name {self.layout.name}` or pass reuse=True "
                    "(--abtraffic-reuse-cluster) to use it when its config and versions match")
            self._runner(["kind", "export", "kubeconfig", "--name", self.layout.name,
                          "--kubeconfig", str(self.layout.kubeconfig)], timeout=60.0,
                         env={**os.environ, **dict(self.layout.env)})
            self._check_reusable()
            self._log(f"reusing kind cluster {self.layout.name} (config and versions match)")
            state["images"] = []  # images may have changed since that cluster was set up: load them again
        else:
            state["images"] = []
            try:
                executor.run(kind_cluster_steps(self.layout, self.settings))
                if spec is not None:  # same order as the printed plan: images, then Linkerd
                    self._load_images(spec, state, executor)
                executor.run(mesh_steps(self.layout, self.settings))
                smi = spec is not None and needs_smi(spec)
                if smi:
                    executor.run(smi_steps(self.layout, self.settings))
                executor.run(marker_steps(self.layout, self.settings, smi_installed=smi))
            except BaseException as exc:
                self._cluster_diagnostics(f"cluster setup failed: {exc}")
                self._delete_after_failed_setup()
                raise
        state["ready_for"] = run_token()
        if spec is not None:
            self._load_images(spec, state, executor)  # no-op when loaded above

    def _check_reusable(self) -> None:
        marker = self._read_marker()
        if marker is None:
            raise BackendError(f"kind cluster {self.layout.name} was not created by pytest-abtraffic (no ConfigMap "
                               f"{MARKER_NAMESPACE}/{MARKER_NAME}); refusing to reuse it")
        want = {"config-hash": self.layout.config_hash, "linkerd-version": self.settings.linkerd_version,
                "node-image": self.settings.kind_node_image, "gateway-api": self.settings.gateway_api}
        diff = [f"{k}: cluster has {marker.get(k)!r}, this run wants {v!r}" for k, v in want.items()
                if marker.get(k) != v]
        smi = marker.get("linkerd-smi-version", "")
        if smi and smi != self.settings.smi_version:
            diff.append(f"linkerd-smi-version: cluster has {smi!r}, this run wants {self.settings.smi_version!r}")
        if diff:
            raise BackendError(f"kind cluster {self.layout.name} does not match this run, so it is not reused:\n  "
                               + "\n  ".join(diff) + f"\nDelete it with `kind delete cluster --name {self.layout.name}`"
                               " or use another cluster name")

    def _delete_after_failed_setup(self) -> None:
        if self.settings.keep:
            return
        try:
            self._executor().run(kind_cleanup_steps(self.layout, self.settings))
        except AbTrafficError as exc:
            logger.warning("could not delete the half-created cluster %s: %s", self.layout.name, exc)

    def _cluster_diagnostics(self, reason: str) -> None:
        from ._diagnostics import write_diagnostics

        api = None
        with contextlib.suppress(Exception):
            api = self.api
        try:
            path = write_diagnostics(self._report_root(), namespace=self.settings.linkerd_namespace, reason=reason,
                                     api=api, describe=self.describe())
            self._log(f"diagnostics written to {path}")
        except Exception as exc:
            logger.warning("could not write cluster diagnostics: %s", exc)

    def _load_images(self, spec: ExperimentSpec, state: dict[str, Any], executor: StepExecutor) -> None:
        loaded = set(state.get("images", []))
        wanted = images_in_use(spec, self.settings)
        if set(wanted) <= loaded:
            return
        steps = [s for s in image_steps(self.layout, spec, self.settings) if s.params.get("image") not in loaded]
        executor.run(steps)
        state["images"] = sorted(loaded | set(wanted))

    def _ensure_for(self, spec: ExperimentSpec) -> None:
        """Per deploy, under the lock: linkerd-smi on first SMI use, images not loaded yet."""
        with self._lease.locked() as state:
            executor = self._executor()
            if needs_smi(spec):
                marker = self._read_marker() or {}
                if marker.get("linkerd-smi-version") != self.settings.smi_version:
                    self.check_prerequisites(needs_smi_cli=True)
                    try:
                        executor.run(smi_steps(self.layout, self.settings))
                    except BaseException as exc:
                        self._cluster_diagnostics(f"linkerd-smi install failed: {exc}")
                        raise
                    executor.run(marker_steps(self.layout, self.settings, smi_installed=True))
            self._load_images(spec, state, executor)

    def deploy(self, spec: ExperimentSpec, *, namespace: str | None = None) -> ClusterDeployment:
        from ._deployment import ClusterDeployment

        spec.check_backend("kind")
        check_spec_against_linkerd(spec, self.settings)
        if needs_smi(spec):
            self.check_prerequisites(needs_smi_cli=True)
        self.start()
        self._ensure_for(spec)
        self._count += 1
        ns = namespace or spec.namespace or _namespace_name(spec.model, self.run_id, self._count)
        deployment = ClusterDeployment(
            backend_name="kind", spec=spec, namespace=ns, api=self.api, executor=self._executor(),
            run_id=self.run_id, load_image=self.settings.load_image, report_root=self._report_root(),
            ready_timeout_s=self.settings.ready_timeout_s, allow_chaos=True,
            describe_extra={"cluster": self.layout.name, "kubeconfig": str(self.layout.kubeconfig),
                            "linkerd_version": self.settings.linkerd_version},
            on_teardown=self._deployments.forget,
        )
        deployment.deploy()
        self._deployments.append(deployment)
        return deployment

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "kind",
            "cluster": self.layout.name,
            "kubeconfig": str(self.layout.kubeconfig),
            "context": self.layout.context,
            "node_image": self.settings.kind_node_image,
            "linkerd_version": self.settings.linkerd_version,
            "linkerd_smi_version": self.settings.smi_version,
            "gateway_api": self.settings.gateway_api,
            "keep": self.settings.keep,
            "reuse": self.settings.reuse,
            "deployments": [d.namespace for d in self._deployments],
        }

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            teardown_all(self._deployments)
        finally:  # leave the cluster (delete it when last out) even when a namespace is stuck
            if self._started:
                self._lease.release(self._last_out)
            if self._api is not None:
                with contextlib.suppress(Exception):
                    self._api.close()

    def _last_out(self) -> None:
        if self.settings.keep:
            self._log(f"keeping kind cluster {self.layout.name} (kubeconfig {self.layout.kubeconfig}); delete it "
                      f"with `kind delete cluster --name {self.layout.name}`")
            return
        self._executor().run(kind_cleanup_steps(self.layout, self.settings))


def _namespace_name(model: str, run_id: str, count: int) -> str:
    # run_id differs per xdist worker; a digest keeps the name short and DNS-1123.
    suffix = f"-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}-{count}"
    return f"abt-{model}"[: 63 - len(suffix)].rstrip("-") + suffix


__all__ = ["ClusterLease", "KindBackend", "worker_id"]

"""The existing-cluster backend: a cluster the user names by kubeconfig context.

Before anything touches the cluster it checks, read-only: the context exists in the kubeconfig
(which is read, never written), Linkerd is installed (namespace, ``linkerd-config`` ConfigMap, its
policy CRDs), the Gateway API HTTPRoute CRD serves v1 when the split uses it, linkerd-smi is
installed and ready when the split is SMI, and the namespace to use does not exist. The kit
installs nothing here: a missing piece is a PrerequisiteError saying how to install it.

It creates its own namespace (labelled with this run's id), deletes only a namespace carrying that
label, and never touches objects outside it. Chaos (kill, scale, faults, weight changes) runs only
with ``allow_chaos=True``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .._backend import teardown_all
from .._errors import BackendError, PrerequisiteError, UsageError
from .._proc import run as default_run
from ._converge import PolicyQuery, cli_policy_query
from ._kube import Kube, KubeApi
from ._plan import Step, StepExecutor, existing_check_steps, existing_images, needs_smi, run_token
from ._settings import ClusterSettings, default_work_root

if TYPE_CHECKING:
    from .._spec import ExperimentSpec
    from ._deployment import ClusterDeployment

logger = logging.getLogger("pytest_abtraffic.cluster")
ApiFactory = Callable[[str | None, str], KubeApi]
CRD = ("apiextensions.k8s.io/v1", "CustomResourceDefinition")
LINKERD_CRDS = ("servers.policy.linkerd.io", "httproutes.policy.linkerd.io")
GATEWAY_HTTPROUTE_CRD = "httproutes.gateway.networking.k8s.io"
SMI_CRD = "trafficsplits.split.smi-spec.io"
SMI_NAMESPACE = "linkerd-smi"
SMI_ADAPTOR = "smi-adaptor"
_INSTALL_LINKERD = ("install it first (the kit installs nothing on an existing cluster): "
                    "https://linkerd.io/2/tasks/install/ (`linkerd install --crds | kubectl apply -f -`, "
                    "`linkerd install | kubectl apply -f -`, `linkerd check`)")
_INSTALL_SMI = ("install linkerd-smi first: `linkerd smi install | kubectl apply -f -` then `linkerd smi check` "
                "(https://github.com/linkerd/linkerd-smi)")


def kubeconfig_files(path: str | None) -> list[Path]:
    """The kubeconfig file(s) kubectl would read: ``path``, else ``$KUBECONFIG``, else ``~/.kube/config``."""
    if path:
        return [Path(path).expanduser()]
    env = os.environ.get("KUBECONFIG", "")
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return [Path.home() / ".kube" / "config"]


def kubeconfig_contexts(files: list[Path]) -> list[str]:
    names: list[str] = []
    readable = False
    for file in files:
        try:
            doc = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            continue
        except (OSError, yaml.YAMLError) as exc:
            raise PrerequisiteError(f"cannot read kubeconfig {file}: {exc}") from None
        readable = True
        for ctx in doc.get("contexts") or [] if isinstance(doc, dict) else []:
            if isinstance(ctx, dict) and ctx.get("name") and ctx["name"] not in names:
                names.append(str(ctx["name"]))
    if not readable:
        raise PrerequisiteError(f"no kubeconfig found at {', '.join(str(f) for f in files)}; pass kubeconfig "
                                "(--abtraffic-kubeconfig) pointing at the cluster's kubeconfig")
    return names


def check_context(settings: ClusterSettings) -> str | None:
    """The kubeconfig path to load (None: the client's default lookup); raises when the context is missing."""
    if not settings.context:
        raise UsageError("the existing backend needs the kubeconfig context to use (context=..., "
                         "--abtraffic-context): the kit never picks the current context for you")
    files = kubeconfig_files(settings.kubeconfig)
    names = kubeconfig_contexts(files)
    if settings.context not in names:
        shown = ", ".join(names) if names else "none"
        raise PrerequisiteError(f"kubeconfig context {settings.context!r} not found in "
                                f"{', '.join(str(f) for f in files)}; available contexts: {shown}")
    return str(files[0]) if settings.kubeconfig else None


def _get(api: KubeApi, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
    try:
        return api.get(api_version, kind, name, namespace)
    except Exception as exc:  # permissions, connectivity: say what could not be read
        where = f"{namespace}/" if namespace else ""
        raise PrerequisiteError(f"cannot read {kind} {where}{name} on the cluster: {exc}") from None


class ExistingClusterBackend:
    """``Backend`` on a cluster the user names. The constructor checks before anything else."""

    def __init__(
        self,
        settings: ClusterSettings,
        spec: ExperimentSpec | None = None,
        *,
        api_factory: ApiFactory | None = None,
        log: Callable[[str], None] | None = None,
        policy_query: PolicyQuery | None = None,
    ) -> None:
        self.settings = settings
        self._log = log or logger.info
        self._kubeconfig = check_context(settings)
        if policy_query is None and shutil.which("linkerd"):
            # The convergence gate reads the served policy with the CLI (read-only, a port-forward to
            # linkerd-destination); without the CLI the gate says how to get it when it is needed.
            policy_query = cli_policy_query(default_run, kubeconfig=self._kubeconfig, context=settings.context,
                                            linkerd_namespace=settings.linkerd_namespace)
        self._policy_query = policy_query
        context = str(settings.context)
        self._work_dir = Path(settings.work_dir) if settings.work_dir else default_work_root() / (
            "existing-" + hashlib.sha256(context.encode()).hexdigest()[:8])
        if api_factory is not None:
            self.api = api_factory(self._kubeconfig, context)
        else:
            self._work_dir.mkdir(parents=True, exist_ok=True)
            self.api = Kube.from_kubeconfig(self._kubeconfig, context, cache_dir=self._work_dir)
        self.run_id = f"{run_token()[:16]}-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"[:63]
        from ._deployment import LiveDeployments

        self._deployments = LiveDeployments()
        self._count = 0
        self._closed = False
        self._checks: dict[str, Callable[[Step], None]] = {
            "context": lambda step: None,  # done above, before the client was created
            "linkerd": self._check_linkerd,
            "gateway-api": self._check_gateway_api,
            "linkerd-smi": self._check_smi,
            "namespace-absent": self._check_namespace_absent,
        }
        try:
            self._check_linkerd(None)
            if spec is not None:
                spec.check_backend("existing")
                existing_images(spec, settings)
                if needs_smi(spec):
                    self._check_smi(None)
        except BaseException:
            self.api.close()
            raise

    @property
    def name(self) -> str:
        return "existing"

    def _executor(self) -> StepExecutor:
        return StepExecutor(api_factory=lambda: self.api, checks=self._checks, log=self._log,
                            policy_query=self._policy_query)

    # -- checks (read-only) ---------------------------------------------------------------------------
    def _check_linkerd(self, step: Step | None) -> None:
        ns = self.settings.linkerd_namespace
        if _get(self.api, "v1", "Namespace", ns) is None:
            raise PrerequisiteError(f"Linkerd is not installed on context {self.settings.context!r}: no namespace "
                                    f"{ns!r}; {_INSTALL_LINKERD}")
        if _get(self.api, "v1", "ConfigMap", "linkerd-config", ns) is None:
            raise PrerequisiteError(f"Linkerd is not installed on context {self.settings.context!r}: no ConfigMap "
                                    f"{ns}/linkerd-config; {_INSTALL_LINKERD}")
        missing = [crd for crd in LINKERD_CRDS if _get(self.api, *CRD, crd) is None]
        if missing:
            raise PrerequisiteError(f"Linkerd's CRDs are missing on context {self.settings.context!r}: "
                                    f"{', '.join(missing)}; {_INSTALL_LINKERD}")

    def _check_gateway_api(self, step: Step | None) -> None:
        crd = _get(self.api, *CRD, GATEWAY_HTTPROUTE_CRD)
        versions = [v.get("name") for v in ((crd or {}).get("spec") or {}).get("versions") or [] if v.get("served")]
        if "v1" not in versions:
            found = f"served versions {versions}" if crd is not None else "not installed"
            raise PrerequisiteError(f"the Gateway API HTTPRoute CRD ({GATEWAY_HTTPROUTE_CRD}) is {found}; the split "
                                    "needs gateway.networking.k8s.io/v1 (Gateway API 1.1.1-1.2.1 for Linkerd 2.18), "
                                    "or use route_group 'policy.linkerd.io'")

    def _check_smi(self, step: Step | None) -> None:
        if _get(self.api, *CRD, SMI_CRD) is None:
            raise PrerequisiteError(f"linkerd-smi is not installed (no CRD {SMI_CRD}); {_INSTALL_SMI}")
        adaptor = _get(self.api, "apps/v1", "Deployment", SMI_ADAPTOR, SMI_NAMESPACE)
        if adaptor is None or int((adaptor.get("status") or {}).get("availableReplicas") or 0) < 1:
            raise PrerequisiteError(f"linkerd-smi's adaptor ({SMI_NAMESPACE}/{SMI_ADAPTOR}) is not running, so "
                                    f"TrafficSplits would have no effect; {_INSTALL_SMI}")

    def _check_namespace_absent(self, step: Step | None) -> None:
        ns = step.namespace if step is not None else None
        if ns and _get(self.api, "v1", "Namespace", ns) is not None:
            raise BackendError(f"namespace {ns} already exists; the existing backend only uses namespaces it creates "
                               "(and deletes only those, by label). Choose another namespace")

    # -- Backend protocol -----------------------------------------------------------------------------
    def deploy(self, spec: ExperimentSpec, *, namespace: str | None = None) -> ClusterDeployment:

        if self._closed:
            raise BackendError("this backend is closed")
        spec.check_backend("existing")
        spec = existing_images(spec, self.settings)
        self._count += 1
        ns = namespace or spec.namespace or _namespace_name(spec.model, self.run_id, self._count)
        executor = self._executor()
        # Every check before the first write; the context was checked in the constructor.
        executor.run([s for s in existing_check_steps(spec, self.settings, ns) if s.check_for != "context"])
        from ._target import deployment_class  # a live target gets the read-only TargetDeployment

        deployment = deployment_class(spec)(
            backend_name="existing", spec=spec, namespace=ns, api=self.api, executor=executor, run_id=self.run_id,
            load_image=self.settings.load_image, report_root=Path(self.settings.report_dir or self._work_dir),
            ready_timeout_s=self.settings.ready_timeout_s, allow_chaos=self.settings.allow_chaos,
            describe_extra={"context": self.settings.context}, on_teardown=self._deployments.forget,
        )
        deployment.deploy()
        self._deployments.append(deployment)
        return deployment

    def describe(self) -> dict[str, Any]:
        return {"backend": "existing", "context": self.settings.context,
                "kubeconfig": self._kubeconfig or "(default lookup)",
                "linkerd_namespace": self.settings.linkerd_namespace, "allow_chaos": self.settings.allow_chaos,
                "deployments": [d.namespace for d in self._deployments]}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            teardown_all(self._deployments)
        finally:
            try:
                self.api.close()
            except Exception as exc:
                logger.debug("closing the API client failed: %s", exc)


def _namespace_name(model: str, run_id: str, count: int) -> str:
    suffix = f"-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}-{count}"
    return f"abt-{model}"[: 63 - len(suffix)].rstrip("-") + suffix


__all__ = ["ExistingClusterBackend", "check_context", "kubeconfig_contexts", "kubeconfig_files"]

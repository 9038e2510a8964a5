"""The ordered step plan of the cluster backends, and the executor that runs it.

One source of truth: ``abtraffic plan --backend kind|existing`` prints the steps these builders
return, and the backends execute the very same steps through ``StepExecutor`` (``command`` steps
with ``_proc.run``, ``apply``/``wait``/``delete``/``check`` steps with the Kubernetes client).

Order on kind (each rule is from linkerd-facts.md or the Linkerd CLI's own behaviour):
tools checked -> cluster created with its own kubeconfig -> images built and loaded -> (opt-in
upstream Gateway API CRDs) -> Linkerd CRDs -> control plane -> ``linkerd check`` -> linkerd-smi
(only for SMI) -> ``linkerd smi check`` -> cluster marker -> namespace -> workload -> waits ->
meshed load Job -> namespace deleted -> cluster deleted (unless kept).
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .._errors import BackendError, CommandError, UsageError
from .._proc import Completed
from .._proc import run as default_run
from .._resources import fixtures_dir, manifests_dir
from .._spec import REFERENCE_IMAGE
from ._converge import Convergence, ConvergenceGate, PolicyQuery
from ._kube import (
    KubeApi,
    PodFailureWatch,
    Readiness,
    deployment_ready,
    endpoints_ready,
    name_of,
    ref,
    route_ready,
    selector_string,
    smi_profile_ready,
    wait_until,
)
from ._prereq import version_steps_argv
from ._settings import (
    GATEWAY_API_URL,
    GATEWAY_API_VERSION,
    ClusterSettings,
    check_kind_name,
    default_work_root,
    user_default_kubeconfigs,
)

if TYPE_CHECKING:
    from .._load import LoadPlan
    from .._spec import ExperimentSpec

StepKind = Literal["command", "apply", "wait", "delete", "check"]
Runner = Callable[..., Completed]
RUN_LABEL = "pytest-abtraffic/run"
MARKER_NAME = "pytest-abtraffic-cluster"
MARKER_NAMESPACE = "default"
KIND_CONFIG = "kind-cluster.yaml"
_PROCESS_TOKEN = uuid.uuid4().hex


@dataclass(frozen=True)
class Step:
    """One thing a backend does.

    ``command`` steps carry ``argv`` (never a shell); ``stdin_from`` names the ``id`` of an earlier
    step whose captured stdout is fed as input (``linkerd install --crds | kubectl apply -f -`` is
    two steps). ``apply``/``wait``/``delete``/``check`` steps carry Kubernetes ``objects``.
    ``when`` is a guard the executor evaluates (``image-present``); ``downloads`` names a URL the
    step fetches at run time (only ever in opt-in steps); ``fallback`` commands run, in order, when
    ``argv`` fails (the failure is logged, and raised only when the fallback fails too).
    """

    kind: StepKind
    description: str
    phase: str
    id: str = ""
    argv: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    stdin_from: str | None = None
    capture: bool = False
    objects: tuple[Mapping[str, Any], ...] = field(default=(), compare=False)
    namespace: str | None = None
    wait_for: str | None = None
    check_for: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict, compare=False)
    timeout_s: float = 300.0
    when: str | None = None
    downloads: str | None = None
    fallback: tuple[tuple[str, ...], ...] = ()

    def __hash__(self) -> int:
        return hash((self.kind, self.phase, self.id, self.argv, self.description))


# ---------------------------------------------------------------------------------------------------
# kind layout: name, work dir, own kubeconfig


@dataclass(frozen=True)
class KindLayout:
    name: str
    work_dir: Path
    kubeconfig: Path
    config_file: Path
    config_hash: str

    @property
    def context(self) -> str:
        return f"kind-{self.name}"

    @property
    def env(self) -> tuple[tuple[str, str], ...]:
        return (("KUBECONFIG", str(self.kubeconfig)),)

    def kubectl(self, *args: str) -> tuple[str, ...]:
        return ("kubectl", "--kubeconfig", str(self.kubeconfig), "--context", self.context, *args)

    def linkerd(self, *args: str) -> tuple[str, ...]:
        # Flags after the (sub)command: `linkerd smi ...` refuses flags before the extension name.
        return ("linkerd", *args, "--kubeconfig", str(self.kubeconfig), "--context", self.context)


def kind_config_path() -> Path:
    return manifests_dir() / KIND_CONFIG


def config_hash(settings: ClusterSettings, config_text: str) -> str:
    """What makes two clusters interchangeable: the kind config, node image, Linkerd and how the
    Gateway API got in. linkerd-smi is recorded separately (installed on first need)."""
    doc = json.dumps({"kind_config": config_text, "node_image": settings.kind_node_image,
                      "linkerd": settings.linkerd_version, "gateway_api": settings.gateway_api}, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()


def run_token() -> str:
    """Same for every pytest-xdist worker of one run (they share PYTEST_XDIST_TESTRUNUID)."""
    return os.environ.get("PYTEST_XDIST_TESTRUNUID") or _PROCESS_TOKEN


def kind_layout(settings: ClusterSettings) -> KindLayout:
    config_file = kind_config_path()
    try:
        text = config_file.read_text(encoding="utf-8")
    except OSError as exc:
        raise BackendError(f"cannot read the kind cluster config {config_file}: {exc}") from None
    digest = config_hash(settings, text)
    if settings.cluster_name:
        name = check_kind_name(settings.cluster_name)
    else:
        # Reuse needs a name the next run finds again; otherwise the name is per run.
        token = "" if settings.reuse else run_token()
        name = "abtraffic-" + hashlib.sha256(f"{digest}/{token}".encode()).hexdigest()[:8]
    work_dir = Path(settings.work_dir) if settings.work_dir else default_work_root() / name
    kubeconfig = Path(settings.kubeconfig) if settings.kubeconfig else work_dir / "kubeconfig"
    resolved = kubeconfig.expanduser().resolve()
    if resolved in user_default_kubeconfigs():
        raise UsageError(f"the kind backend writes its own kubeconfig and never the default one ({resolved}); "
                         "leave kubeconfig unset or point it at a new file")
    return KindLayout(name=name, work_dir=work_dir, kubeconfig=resolved, config_file=config_file,
                      config_hash=digest)


def needs_smi(spec: ExperimentSpec) -> bool:
    return spec.split_api.startswith("smi-")


def check_spec_against_linkerd(spec: ExperimentSpec, settings: ClusterSettings) -> None:
    """Refuse combinations the pinned Linkerd cannot serve, before anything runs."""
    if spec.split_api == "httproute" and spec.route_group == "gateway.networking.k8s.io" \
            and not settings.linkerd.serves_gateway_v1_routes:
        raise UsageError(f"HTTPRoute {spec.route_api_version} needs Linkerd 2.18+ (edge-25.4.1+); "
                         f"{settings.linkerd_version} bundles Gateway API 0.7 (v1beta1). Use route_group "
                         "'policy.linkerd.io' or a newer Linkerd")


def existing_images(spec: ExperimentSpec, settings: ClusterSettings) -> ExperimentSpec:
    """The spec an existing cluster runs: the reference image replaced by ``settings.model_image``.

    Refuses, before any side effect, a spec whose pods would wait for an image nobody publishes:
    the reference model image is built from the files the wheel carries (on kind, straight into the
    nodes); an existing cluster's nodes can only pull it from a registry the user pushed it to. It
    needs uvicorn, so it cannot run on a plain public Python image from a ConfigMap either.
    """
    unpublished = [v.name for v in spec.variants if v.image == REFERENCE_IMAGE]
    if not unpublished:
        return spec
    if settings.model_image:
        from dataclasses import replace

        return spec.replace(variants=tuple(replace(v, image=settings.model_image) if v.image == REFERENCE_IMAGE
                                           else v for v in spec.variants))
    raise UsageError(
        f"variant(s) {', '.join(unpublished)} use the reference model image {REFERENCE_IMAGE}, which is not "
        "published: an existing cluster's nodes cannot pull it. Build it from the files the wheel carries and push "
        f"it to a registry your nodes pull from:\n  docker build -t REGISTRY/ai-model:0.1.0 {fixtures_dir()}\n"
        "  docker push REGISTRY/ai-model:0.1.0\nthen pass it as model_image (--abtraffic-model-image, "
        "abtraffic --model-image), or set the variants' own images in the spec, or use the kind backend, which "
        "builds and loads it itself")


# ---------------------------------------------------------------------------------------------------
# Step builders


def prereq_steps(backend: str, spec: ExperimentSpec) -> list[Step]:
    return [Step("command", f"check {tool} is installed (read-only version command)", "prereq",
                 id=f"version-{tool}", argv=tuple(argv), timeout_s=30.0)
            for tool, argv in version_steps_argv(backend, needs_smi=needs_smi(spec))]


def kind_cluster_steps(layout: KindLayout, settings: ClusterSettings) -> list[Step]:
    return [Step(
        "command",
        f"create kind cluster {layout.name} ({settings.kind_node_image.split('@')[0]}) with its own kubeconfig "
        f"{layout.kubeconfig} (never ~/.kube/config)",
        "cluster", id="kind-create",
        argv=("kind", "create", "cluster", "--name", layout.name, "--config", str(layout.config_file),
              "--image", settings.kind_node_image, "--kubeconfig", str(layout.kubeconfig), "--wait", "120s"),
        env=layout.env, timeout_s=600.0,
    )]


def images_in_use(spec: ExperimentSpec, settings: ClusterSettings) -> list[str]:
    images = [v.image for v in spec.variants if v.image]
    images.append(settings.load_image)
    return list(dict.fromkeys(images))


def image_archive(layout: KindLayout, image: str) -> Path:
    return layout.work_dir / f"image-{hashlib.sha256(image.encode()).hexdigest()[:12]}.tar"


def image_steps(layout: KindLayout, spec: ExperimentSpec, settings: ClusterSettings) -> list[Step]:
    """Build what the wheel carries (the reference model), load it; public images the node pulls.

    ``kind load docker-image`` runs ``ctr images import --all-platforms --digests`` on the node,
    which fails with "content digest ... not found" when Docker uses the containerd image store
    (kind#3795): the step then falls back to ``docker save`` + ``kind load image-archive``.
    """
    in_use = images_in_use(spec, settings)
    steps: list[Step] = []
    built: set[str] = set()
    for image, context in settings.images_to_build(set(in_use), fixtures_dir()):
        what = "the reference model server image from the files the wheel carries" if image == REFERENCE_IMAGE \
            else "a user image"
        steps.append(Step("command", f"build {what}: {image}", "images", id=f"build-{image}",
                          argv=("docker", "build", "-t", image, str(context)), params={"image": image},
                          timeout_s=1200.0))
        built.add(image)
    for image in in_use:
        archive = str(image_archive(layout, image))
        steps.append(Step(
            "command", f"load image {image} into the kind nodes"
            + ("" if image in built else " (when present in the local Docker; otherwise the node pulls it)"),
            "images", id=f"load-{image}", argv=("kind", "load", "docker-image", image, "--name", layout.name),
            params={"image": image, "archive": archive}, timeout_s=900.0,
            when=None if image in built else "image-present",
            fallback=(("docker", "save", image, "-o", archive),
                      ("kind", "load", "image-archive", archive, "--name", layout.name)),
        ))
    return steps


def mesh_steps(layout: KindLayout, settings: ClusterSettings) -> list[Step]:
    version = settings.linkerd
    steps: list[Step] = []
    crd_argv: tuple[str, ...] = ("install", "--crds")
    if version.gateway_api_explicit:
        if settings.gateway_api == "upstream":
            steps.append(Step(
                "command",
                f"install the Gateway API {GATEWAY_API_VERSION} CRDs from the upstream release: DOWNLOADS "
                f"{GATEWAY_API_URL} at run time (gateway_api='upstream' opt-in)",
                "mesh", id="gateway-api", argv=layout.kubectl("apply", "--server-side", "-f", GATEWAY_API_URL),
                env=layout.env, timeout_s=300.0, downloads=GATEWAY_API_URL))
        else:
            # 2.18+ only renders the Gateway API CRDs it bundles (v1.1.1) when asked; no download.
            crd_argv = (*crd_argv, "--set", "installGatewayAPI=true")
    crd_note = (" (with the Gateway API CRDs it bundles)" if version.gateway_api_explicit
                and settings.gateway_api == "bundled" else "")
    steps += [
        Step("command", f"render the Linkerd {settings.linkerd_version} CRDs{crd_note}", "mesh", id="linkerd-crds",
             argv=layout.linkerd(*crd_argv), env=layout.env, capture=True, timeout_s=120.0),
        Step("command", "apply the Linkerd CRDs (before the control plane)", "mesh", id="apply-linkerd-crds",
             argv=layout.kubectl("apply", "-f", "-"), env=layout.env, stdin_from="linkerd-crds", timeout_s=300.0),
        # The control plane's manifests include custom resources: their CRDs must be served first.
        Step("command", "wait until the CRDs are established", "mesh", id="crds-established",
             argv=layout.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=120s"),
             env=layout.env, timeout_s=150.0),
        Step("command", f"render the Linkerd {settings.linkerd_version} control plane (identity certificates "
             "generated by the CLI)", "mesh", id="linkerd-cp", argv=layout.linkerd("install"), env=layout.env,
             capture=True, timeout_s=120.0),
        Step("command", "apply the Linkerd control plane", "mesh", id="apply-linkerd-cp",
             argv=layout.kubectl("apply", "-f", "-"), env=layout.env, stdin_from="linkerd-cp", timeout_s=300.0),
        Step("command", "linkerd check: wait until the control plane is healthy (before any workload)", "mesh",
             id="linkerd-check", argv=layout.linkerd("check", "--wait", "5m0s"), env=layout.env, timeout_s=420.0),
    ]
    return steps


def smi_steps(layout: KindLayout, settings: ClusterSettings) -> list[Step]:
    return [
        Step("command", f"render linkerd-smi {settings.smi_version} (SMI TrafficSplit -> ServiceProfile adaptor)",
             "smi", id="smi-render", argv=layout.linkerd("smi", "install"), env=layout.env, capture=True,
             timeout_s=420.0),
        Step("command", "apply linkerd-smi", "smi", id="apply-smi", argv=layout.kubectl("apply", "-f", "-"),
             env=layout.env, stdin_from="smi-render", timeout_s=300.0),
        Step("command", "linkerd smi check: wait until the SMI adaptor is healthy", "smi", id="smi-check",
             argv=layout.linkerd("smi", "check", "--wait", "5m0s"), env=layout.env, timeout_s=420.0),
    ]


def marker_object(layout: KindLayout, settings: ClusterSettings, *, smi_installed: bool) -> dict[str, Any]:
    from .._version import __version__

    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": MARKER_NAME, "namespace": MARKER_NAMESPACE,
                     "labels": {"app.kubernetes.io/managed-by": "pytest-abtraffic"}},
        "data": {
            "config-hash": layout.config_hash,
            "linkerd-version": settings.linkerd_version,
            "linkerd-smi-version": settings.smi_version if smi_installed else "",
            "node-image": settings.kind_node_image,
            "gateway-api": settings.gateway_api,
            "kit-version": __version__,
        },
    }


def marker_steps(layout: KindLayout, settings: ClusterSettings, *, smi_installed: bool) -> list[Step]:
    return [Step("apply", f"record config hash and versions in ConfigMap {MARKER_NAMESPACE}/{MARKER_NAME} "
                 "(what --reuse compares)", "marker", id="marker",
                 objects=(marker_object(layout, settings, smi_installed=smi_installed),))]


def run_labels(run_id: str) -> dict[str, str]:
    return {RUN_LABEL: run_id}


def deploy_steps(spec: ExperimentSpec, namespace: str, objects: Sequence[Mapping[str, Any]], *, run_id: str,
                 timeout_s: float, cluster_domain: str = "cluster.local") -> list[Step]:
    """Namespace, workload, then waits: rollouts, ready Endpoints, the split accepted."""
    ns_obj = next((o for o in objects if o.get("kind") == "Namespace"), None)
    if ns_obj is None:
        ns_obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    ns_obj = _with_labels(ns_obj, run_labels(run_id))
    rest = tuple(o for o in objects if o.get("kind") != "Namespace")
    deployments = tuple(o for o in rest if o.get("kind") == "Deployment")
    split = tuple(o for o in rest if o.get("kind") in ("HTTPRoute", "TrafficSplit"))
    want = {spec.service_name(v.name): v.replicas for v in spec.variants if v.replicas > 0}
    services = tuple(o for o in rest if o.get("kind") == "Service" and name_of(o) in want)
    steps = [
        Step("apply", f"create namespace {namespace} (labelled {RUN_LABEL}={run_id}"
             + (", linkerd.io/inject: enabled)" if _injects(ns_obj) else "; injection as the objects declare it)"),
             "deploy", id="namespace", objects=(ns_obj,)),
        Step("apply", "apply the experiment: " + ", ".join(ref(o) for o in rest), "deploy", id="workload",
             objects=rest, namespace=namespace),
        Step("wait", "wait for rollouts: " + ", ".join(ref(o) for o in deployments), "deploy", id="rollout",
             objects=deployments, namespace=namespace, wait_for="rollout", timeout_s=timeout_s),
        Step("wait", "wait for ready Endpoints: " + ", ".join(f"{s} >= {n}" for s, n in want.items()), "deploy",
             id="endpoints", objects=services, namespace=namespace, wait_for="endpoints",
             params={"min_ready": dict(want)}, timeout_s=timeout_s),
    ]
    for obj in split:
        if obj.get("kind") == "HTTPRoute":
            text = (f"wait for {ref(obj)} conditions Accepted and ResolvedRefs from controller "
                    "linkerd.io/policy-controller")
        else:
            text = (f"wait for linkerd-smi to turn {ref(obj)} into ServiceProfile "
                    f"{spec.apex_service}.{namespace}.svc.{cluster_domain} with matching dstOverrides")
        steps.append(Step("wait", text, "deploy", id="split", objects=(obj,), namespace=namespace,
                          wait_for="split", params={"cluster_domain": cluster_domain}, timeout_s=timeout_s))
        steps.append(converge_step(spec, namespace, obj, timeout_s=timeout_s, cluster_domain=cluster_domain,
                                   phase="deploy"))
    return steps


def converge_step(spec: ExperimentSpec, namespace: str, split: Mapping[str, Any], *, timeout_s: float,
                  cluster_domain: str = "cluster.local", phase: str = "deploy") -> Step:
    """The convergence gate (``_converge``): the control plane serves the declared weights."""
    declared = ", ".join(f"{k}={v}" for k, v in spec.rendered_weights().items())
    if split.get("kind") == "HTTPRoute":
        how = (f"`linkerd diagnostics policy -n {namespace} svc/{spec.apex_service} {spec.service_port} -o json` "
               f"shows {ref(split)} with backends {declared} (route status alone has no observedGeneration)")
    else:
        how = (f"ServiceProfile {spec.apex_service}.{namespace}.svc.{cluster_domain} dstOverrides carry "
               f"{declared}")
    return Step("wait", f"convergence gate: wait until the control plane serves the declared weights: {how}; "
                "records converged_after_s", phase, id="converge", objects=(split,), namespace=namespace,
                wait_for="converged", params={"spec": spec, "cluster_domain": cluster_domain}, timeout_s=timeout_s)


def weight_change_steps(spec: ExperimentSpec, namespace: str, *, timeout_s: float,
                        cluster_domain: str = "cluster.local", phase: str = "chaos") -> list[Step]:
    """What ``set_weights``/``restore`` run: re-apply the split, wait for its status, then the gate.

    The split is the experiment's own: the kit's rendering, or the user's object with new weights."""
    from .._from_manifests import experiment_split_object

    obj = experiment_split_object(spec, namespace)
    return [
        Step("apply", f"apply {obj['kind']} {name_of(obj)} with weights {dict(spec.rendered_weights())}", phase,
             id="weights", objects=(obj,), namespace=namespace),
        Step("wait", f"wait for {ref(obj)} to be accepted", phase, id="weights-split", objects=(obj,),
             namespace=namespace, wait_for="split", params={"cluster_domain": cluster_domain}, timeout_s=timeout_s),
        converge_step(spec, namespace, obj, timeout_s=timeout_s, cluster_domain=cluster_domain, phase=phase),
    ]


def load_steps(spec: ExperimentSpec, namespace: str, plan: LoadPlan, *, image: str, job_name: str,
               cluster_domain: str = "cluster.local", run_id: str = "", host: str | None = None) -> list[Step]:
    from ._loadjob import apex_url, load_job_objects

    objects = load_job_objects(spec, namespace, plan, job_name=job_name, image=image, cluster_domain=cluster_domain,
                               labels=run_labels(run_id) if run_id else None, host=host)
    job = next(o for o in objects if o["kind"] == "Job" and name_of(o) == job_name)  # the master, when distributed
    workers = [o for o in objects if o["kind"] == "Job" and o is not job]
    how = (f"; Locust's distributed mode: a master and {plan.workers} meshed worker pods (Job "
           f"{name_of(workers[0])}), each worker's records read back by exec and merged" if workers else "")
    return [
        Step("apply", f"start the meshed load Job {job_name} (linkerd.io/inject: enabled) aimed at the apex Service "
             f"{host or apex_url(spec, namespace, cluster_domain)}{how}: " + ", ".join(ref(o) for o in objects),
             "load", id="load-job", objects=tuple(objects), namespace=namespace),
        Step("wait", f"wait for the load container of Job {job_name} to exit (it then stops the proxy, so the Job "
             "completes), and read its log: records + the client proxy's per-backend metrics", "load",
             id="load-wait", objects=(job,), namespace=namespace, wait_for="load-exit",
             timeout_s=float(job["spec"]["activeDeadlineSeconds"]) + 60.0),
        Step("delete", f"delete Job {job_name} and its ConfigMap" + (", the workers and the master Service"
                                                                    if workers else ""), "load", id="load-delete",
             objects=tuple(o for o in objects if o["kind"] in ("Job", "ConfigMap", "Service")), namespace=namespace),
    ]


def teardown_steps(namespace: str, *, run_id: str, guarded: bool) -> list[Step]:
    text = f"delete namespace {namespace}"
    if guarded:
        text += f" (only when it carries {RUN_LABEL}={run_id}: never a namespace the kit did not create)"
    obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    return [Step("delete", text, "teardown", id="namespace-delete", objects=(obj,), params={"run_id": run_id})]


def kind_cleanup_steps(layout: KindLayout, settings: ClusterSettings) -> list[Step]:
    if settings.keep:
        return []
    return [Step("command", f"delete kind cluster {layout.name} (the last pytest-xdist worker out; "
                 "kept instead with keep=True)", "cleanup", id="kind-delete",
                 argv=("kind", "delete", "cluster", "--name", layout.name, "--kubeconfig", str(layout.kubeconfig)),
                 env=layout.env, timeout_s=300.0)]


def existing_check_steps(spec: ExperimentSpec, settings: ClusterSettings, namespace: str) -> list[Step]:
    ns = settings.linkerd_namespace
    steps = [
        Step("check", f"kubeconfig context {settings.context!r} exists in "
             f"{settings.kubeconfig or '$KUBECONFIG or ~/.kube/config'} (read, never written)", "checks",
             id="context", check_for="context"),
        Step("check", f"Linkerd is installed: namespace {ns}, ConfigMap {ns}/linkerd-config, the policy.linkerd.io "
             "CRDs", "checks", id="linkerd", check_for="linkerd"),
    ]
    if spec.split_api == "httproute" and spec.route_group == "gateway.networking.k8s.io":
        steps.append(Step("check", "the Gateway API HTTPRoute CRD serves v1", "checks", id="gateway-api",
                          check_for="gateway-api"))
    if needs_smi(spec):
        steps.append(Step("check", "linkerd-smi is installed: CRD trafficsplits.split.smi-spec.io and a ready "
                          "smi-adaptor in namespace linkerd-smi", "checks", id="linkerd-smi", check_for="linkerd-smi"))
    steps.append(Step("check", f"namespace {namespace} does not exist yet (the kit only uses namespaces it creates)",
                      "checks", id="namespace-absent", check_for="namespace-absent", namespace=namespace))
    return steps


def _injects(namespace: Mapping[str, Any]) -> bool:
    return bool(((namespace.get("metadata") or {}).get("annotations") or {}).get("linkerd.io/inject") == "enabled")


def _with_labels(obj: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    out = json.loads(json.dumps(obj))
    out.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
    return dict(out)


# ---------------------------------------------------------------------------------------------------
# The whole plan (what `abtraffic plan` prints)


def plan(backend: str, spec: ExperimentSpec, settings: ClusterSettings, *, namespace: str | None = None,
         run_id: str = "<run id>") -> list[Step]:
    """Every step ``backend`` would run for ``spec``, in order, without running anything."""
    from .._from_manifests import experiment_objects
    from .._load import LoadPlan

    if backend not in ("kind", "existing"):
        raise UsageError(f"plan is for the cluster backends (kind, existing), not {backend!r}")
    spec.check_backend(backend)
    check_spec_against_linkerd(spec, settings)
    if backend == "existing":
        if not settings.context:
            raise UsageError("the existing backend needs a kubeconfig context (settings.context)")
        spec = existing_images(spec, settings)
    ns = namespace or spec.default_namespace
    objects = experiment_objects(spec, ns)
    load_plan = LoadPlan.from_spec(spec)
    steps: list[Step] = []
    if backend == "kind":
        layout = kind_layout(settings)
        steps += prereq_steps("kind", spec)
        steps += kind_cluster_steps(layout, settings)
        steps += image_steps(layout, spec, settings)
        steps += mesh_steps(layout, settings)
        if needs_smi(spec):
            steps += smi_steps(layout, settings)
        steps += marker_steps(layout, settings, smi_installed=needs_smi(spec))
    else:
        steps += existing_check_steps(spec, settings, ns)
    steps += deploy_steps(spec, ns, objects, run_id=run_id, timeout_s=settings.ready_timeout_s)
    steps += load_steps(spec, ns, load_plan, image=settings.load_image, job_name="abtraffic-load-1", run_id=run_id)
    # A weight change (a scenario's set_weights, and restore() after it) re-runs the gate each time.
    steps += weight_change_steps(spec, ns, timeout_s=60.0, phase="on each weight change (set_weights, restore)")
    steps += teardown_steps(ns, run_id=run_id, guarded=True)
    if backend == "kind":
        steps += kind_cleanup_steps(kind_layout(settings), settings)
    return steps


def _quote(arg: str) -> str:
    if arg and all(c.isalnum() or c in "-_./:=@,+{}" for c in arg):
        return arg
    return "'" + arg.replace("'", "'\"'\"'") + "'"


def _images_of(objects: Sequence[Mapping[str, Any]]) -> list[str]:
    """Container images of the workload objects (Deployments, Jobs), in order, once each."""
    out: list[str] = []
    for obj in objects:
        pod = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
        for c in list(pod.get("initContainers") or []) + list(pod.get("containers") or []):
            if c.get("image") and c["image"] not in out:
                out.append(str(c["image"]))
    return out


def format_plan(steps: Sequence[Step]) -> str:
    """Numbered, grouped by phase: commands as shell-quoted argv, objects as Kind/name lists."""
    lines: list[str] = []
    phase = None
    ids = {s.id: i for i, s in enumerate(steps, 1) if s.id}
    for i, step in enumerate(steps, 1):
        if step.phase != phase:
            phase = step.phase
            lines.append(f"# {phase}")
        lines.append(f"{i:>3}. [{step.kind}] {step.description}")
        if step.argv:
            cmd = " ".join(_quote(a) for a in step.argv)
            if len(cmd) > 400:  # the --plan JSON of a load Job can be long
                cmd = cmd[:400] + " ..."
            if step.stdin_from:
                cmd = f"<output of step {ids.get(step.stdin_from, step.stdin_from)}> | {cmd}"
            lines.append(f"       $ {cmd}")
        if step.kind in ("apply", "delete") and step.objects:
            where = f" -n {step.namespace}" if step.namespace else ""
            lines.append(f"       objects{where}: " + ", ".join(ref(o) for o in step.objects))
        if step.kind == "apply":
            images = _images_of(step.objects)
            if images:
                lines.append("       images: " + ", ".join(images))
            for obj in step.objects:
                if obj.get("kind") == "Job":
                    pod = obj["spec"]["template"]
                    container = pod["spec"]["containers"][0]
                    cmd = " ".join(_quote(str(a)) for a in container.get("command") or [])
                    notes = ", ".join(f"{k}: {v}" for k, v in (pod["metadata"].get("annotations") or {}).items())
                    lines.append(f"       pod annotations: {notes}")
                    lines.append(f"       runs ({container['image']}): {cmd[:300]}{' ...' if len(cmd) > 300 else ''}")
        if step.fallback:
            lines.append("       if that fails (kind#3795, containerd image store):")
            lines.extend(f"       $ {' '.join(_quote(a) for a in argv)}" for argv in step.fallback)
        if step.when:
            lines.append(f"       only when: {step.when}")
        if step.downloads:
            lines.append(f"       downloads at run time: {step.downloads}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Executor


CheckFn = Callable[[Step], None]


def _pod_watch(api: KubeApi, namespace: str, step: Step, obj: Mapping[str, Any]) -> PodFailureWatch | None:
    """The pods a wait depends on, watched for image-pull and crash-loop failures."""
    labels: Mapping[str, Any] = {}
    if step.wait_for == "rollout":
        labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    elif step.wait_for == "endpoints":
        labels = (obj.get("spec") or {}).get("selector") or {}
    elif step.wait_for == "load-exit":
        labels = {"job-name": name_of(obj)}
    if not labels:
        return None
    return PodFailureWatch(api, namespace, selector_string({str(k): str(v) for k, v in labels.items()}))


class StepExecutor:
    """Runs steps: commands with ``_proc.run`` (or an injected runner), the rest with the client.

    ``api_factory`` is called on the first step that needs the API (the cluster may not exist
    before). ``log`` receives one line per step.
    """

    def __init__(self, *, runner: Runner = default_run, api_factory: Callable[[], KubeApi] | None = None,
                 checks: Mapping[str, CheckFn] | None = None, log: Callable[[str], None] | None = None,
                 interval_s: float = 1.0, policy_query: PolicyQuery | None = None) -> None:
        self._runner = runner
        self._api_factory = api_factory
        self._api: KubeApi | None = None
        self._checks = dict(checks or {})
        self._log = log or (lambda line: None)
        self._interval_s = interval_s
        self.outputs: dict[str, str] = {}
        self.history: list[Step] = []
        self._policy_query = policy_query
        #: The last convergence gate's outcome (declared and programmed weights, converged_after_s).
        self.convergence: Convergence | None = None

    @property
    def api(self) -> KubeApi:
        if self._api is None:
            if self._api_factory is None:
                raise BackendError("this step needs the Kubernetes API but no client was configured")
            self._api = self._api_factory()
        return self._api

    def run(self, steps: Sequence[Step]) -> None:
        for step in steps:
            self.run_step(step)

    def run_step(self, step: Step) -> None:
        self._log(f"[{step.phase}] {step.description}")
        if step.kind == "command":
            self._command(step)
        elif step.kind == "apply":
            for obj in step.objects:
                self.api.apply(obj)
        elif step.kind == "delete":
            for obj in step.objects:
                self._delete(step, obj)
        elif step.kind == "wait":
            self._wait(step)
        elif step.kind == "check":
            fn = self._checks.get(step.check_for or "")
            if fn is None:
                raise BackendError(f"no check named {step.check_for!r} is available for: {step.description}")
            fn(step)
        self.history.append(step)

    def _command(self, step: Step) -> None:
        if step.when == "image-present":
            image = step.argv[3]
            probe = self._runner(["docker", "image", "inspect", "--format", "{{.Id}}", image], timeout=60.0,
                                 check=False)
            if probe.returncode != 0:
                self._log(f"  skipped: {image} is not in the local Docker; the node will pull it")
                return
        input_text = None
        if step.stdin_from is not None:
            if step.stdin_from not in self.outputs:
                raise BackendError(f"step {step.id!r} reads the output of {step.stdin_from!r}, which has not run")
            input_text = self.outputs[step.stdin_from]
        env = {**os.environ, **dict(step.env)} if step.env else None
        if step.fallback:
            self._command_with_fallback(step, env)
            return
        done = self._runner(list(step.argv), timeout=step.timeout_s, input_text=input_text, env=env)
        if step.capture:
            self.outputs[step.id] = done.stdout

    def _command_with_fallback(self, step: Step, env: Mapping[str, str] | None) -> None:
        try:
            self._runner(list(step.argv), timeout=step.timeout_s, env=env)
            return
        except CommandError as exc:
            self._log(f"  {' '.join(step.argv[:3])} failed ({exc}); trying: "
                      + " && ".join(" ".join(a) for a in step.fallback))
        archive = step.params.get("archive")
        try:
            for argv in step.fallback:
                self._runner(list(argv), timeout=step.timeout_s, env=env)
        finally:
            if archive:
                Path(str(archive)).unlink(missing_ok=True)

    def _delete(self, step: Step, obj: Mapping[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        api_version, kind, name = str(obj["apiVersion"]), str(obj["kind"]), str(meta.get("name"))
        run_id = step.params.get("run_id")
        if kind == "Namespace" and run_id:
            live = self.api.get(api_version, kind, name)
            if live is None:
                return
            labels = (live.get("metadata") or {}).get("labels") or {}
            if labels.get(RUN_LABEL) != run_id:
                raise BackendError(f"refusing to delete namespace {name}: it is not labelled {RUN_LABEL}={run_id} "
                                   f"(found {labels.get(RUN_LABEL)!r}), so this run did not create it")
        self.api.delete(api_version, kind, name, meta.get("namespace"))

    def _wait(self, step: Step) -> None:
        api, ns = self.api, step.namespace or ""
        if step.wait_for == "converged":
            gate = ConvergenceGate(api, ns, policy_query=self._policy_query,
                                   cluster_domain=str(step.params.get("cluster_domain", "cluster.local")),
                                   interval_s=self._interval_s)
            self.convergence = gate.wait(step.params["spec"], step.objects[0], timeout_s=step.timeout_s)
            self._log(f"  converged after {self.convergence.converged_after_s:g}s: programmed "
                      f"{dict(self.convergence.programmed or {})}")
            return
        for obj in step.objects:
            name = name_of(obj)
            check: Callable[[], Readiness]
            if step.wait_for == "rollout":
                def check(name: str = name) -> Readiness:
                    return deployment_ready(api, ns, name)
            elif step.wait_for == "endpoints":
                want = int(dict(step.params.get("min_ready", {})).get(name, 1))

                def check(name: str = name, want: int = want) -> Readiness:
                    return endpoints_ready(api, ns, name, want)
            elif step.wait_for == "split":
                domain = str(step.params.get("cluster_domain", "cluster.local"))
                if obj.get("kind") == "HTTPRoute":
                    def check(obj: Mapping[str, Any] = obj) -> Readiness:
                        return route_ready(api, ns, obj)
                else:
                    def check(obj: Mapping[str, Any] = obj, domain: str = domain) -> Readiness:
                        return smi_profile_ready(api, ns, obj, domain)
            elif step.wait_for == "load-exit":
                from ._kube import load_exited
                from ._loadjob import LOAD_CONTAINER

                def check(name: str = name) -> Readiness:
                    return load_exited(api, ns, name, LOAD_CONTAINER)
            else:
                raise BackendError(f"unknown wait {step.wait_for!r}")
            wait_until(check, what=ref(obj), timeout_s=step.timeout_s, api=api, namespace=ns,
                       involved=[name, name.split(".")[0]], interval_s=self._interval_s,
                       watch=_pod_watch(api, ns, step, obj))


__all__ = [
    "MARKER_NAME",
    "MARKER_NAMESPACE",
    "RUN_LABEL",
    "KindLayout",
    "Step",
    "StepExecutor",
    "check_spec_against_linkerd",
    "converge_step",
    "deploy_steps",
    "existing_check_steps",
    "existing_images",
    "format_plan",
    "image_archive",
    "image_steps",
    "images_in_use",
    "kind_cleanup_steps",
    "kind_cluster_steps",
    "kind_layout",
    "load_steps",
    "marker_object",
    "marker_steps",
    "mesh_steps",
    "needs_smi",
    "plan",
    "prereq_steps",
    "smi_steps",
    "teardown_steps",
    "weight_change_steps",
]

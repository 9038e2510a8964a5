"""Settings and pinned versions of the cluster backends (kind and existing).

Everything the real-cluster engine pins lives here, so the plan, the prerequisite checks, the CI
workflow and the docs agree. Versions were taken from the projects' own sources:

- kind v0.27.0 ships ``kindest/node:v1.32.2@sha256:f226...`` as its default node image
  (``pkg/apis/config/defaults/image.go``); Linkerd edge-25.4.4 (2.18) is tested on Kubernetes
  1.23-1.32 (its integration workflow), so the node is not newer than that.
- Linkerd no longer installs the Gateway API CRDs by default from edge-25.3.4 (linkerd2
  ``cli/cmd/install.go`` ``renderCRDs``: "The Gateway API CRDs must be installed prior to installing
  Linkerd" when none are present). In edge-25.3.4 that refusal ignores ``--set installGatewayAPI=true``:
  the CRDs must be installed first (``gateway_api="upstream"``). From edge-25.4.1 ``validateFinalValues``
  accepts ``--set installGatewayAPI=true`` (the bundled v1.1.1 CRDs, HTTPRoute v1). edge-25.3.3 and
  earlier install them with the Linkerd CRDs.
- Only edge releases, and the open-source stable releases up to 2.14, have CLI binaries on GitHub;
  ``stable-2.15+`` and ``enterprise-*`` are vendor builds: refused, with what to use instead.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .._errors import UsageError
from .._spec import REFERENCE_IMAGE
from ._podcode import LOCUST_IMAGE

KIND_VERSION = "v0.27.0"
KIND_NODE_IMAGE = "kindest/node:v1.32.2@sha256:f226345927d7e348497136874b6d207e0b32cc52154ad8323129352923a3142f"
KUBECTL_VERSION = "v1.32.2"
DEFAULT_LINKERD_VERSION = "edge-25.4.4"
DEFAULT_SMI_VERSION = "v0.2.7"
#: The load Job's image: the official Locust image (the kit's code comes in a ConfigMap).
LOAD_IMAGE = LOCUST_IMAGE
GATEWAY_API_VERSION = "v1.2.1"
GATEWAY_API_URL = (
    f"https://github.com/kubernetes-sigs/gateway-api/releases/download/{GATEWAY_API_VERSION}/standard-install.yaml"
)
#: "bundled": ``linkerd install --crds --set installGatewayAPI=true`` (no download at run time);
#: "upstream": ``kubectl apply --server-side -f GATEWAY_API_URL`` first (a download; opt-in only).
GATEWAY_API_SOURCES: tuple[str, ...] = ("bundled", "upstream")
KIND_NAME_MAX = 50  # kind warns above this (pkg/cluster/internal/create/create.go clusterNameMax)
_KIND_NAME = re.compile(r"^[a-z0-9.-]+$")  # kind's validNameRE
_EDGE = re.compile(r"^edge-(\d{2})\.(\d{1,2})\.(\d{1,3})$")
_STABLE = re.compile(r"^(?:stable|enterprise)-2\.(\d{1,2})\.(\d{1,3})$")
# First release whose `install --crds` no longer renders the Gateway API CRDs unasked (cli/cmd/install.go).
_EXPLICIT_GATEWAY_EDGE = (25, 3, 4)
# First release that renders its bundled Gateway API CRDs on `--set installGatewayAPI=true` (validateFinalValues).
_BUNDLED_GATEWAY_EDGE = (25, 4, 1)
# 2.18 = edge-25.4.x: the first release serving gateway.networking.k8s.io/v1 HTTPRoutes.
_GATEWAY_V1_EDGE = (25, 4, 1)
_EXPLICIT_GATEWAY_MINOR = 18
_LAST_OPEN_SOURCE_STABLE_MINOR = 14


@dataclass(frozen=True, order=True)
class LinkerdVersion:
    """A Linkerd release name, comparable within its channel family.

    ``edge`` is (year, month, n) of an edge release; ``minor`` the x of a stable-2.x.y release.
    """

    edge: tuple[int, int, int] | None
    minor: int | None
    text: str = field(compare=False)

    @property
    def gateway_api_explicit(self) -> bool:
        """True when ``linkerd install --crds`` installs the Gateway API CRDs only when asked."""
        if self.edge is not None:
            return self.edge >= _EXPLICIT_GATEWAY_EDGE
        return self.minor is None or self.minor >= _EXPLICIT_GATEWAY_MINOR

    @property
    def bundles_gateway_api(self) -> bool:
        """``linkerd install --crds --set installGatewayAPI=true`` renders the CRDs on a cluster without them."""
        return self.edge is None or self.edge >= _BUNDLED_GATEWAY_EDGE

    @property
    def serves_gateway_v1_routes(self) -> bool:
        """2.18+ serves ``gateway.networking.k8s.io/v1`` HTTPRoutes; 2.14-2.17 bundle Gateway API 0.7 (v1beta1)."""
        if self.edge is not None:
            return self.edge >= _GATEWAY_V1_EDGE
        return self.minor is None or self.minor >= _EXPLICIT_GATEWAY_MINOR


def parse_linkerd_version(text: str) -> LinkerdVersion:
    """``edge-25.4.4`` or ``stable-2.14.10``; a UsageError for anything else."""
    value = text.strip()
    match = _EDGE.match(value)
    if match:
        edge = (int(match[1]), int(match[2]), int(match[3]))
        return LinkerdVersion(edge=edge, minor=None, text=value)
    match = _STABLE.match(value)
    if match:
        if value.startswith("enterprise-") or int(match[1]) > _LAST_OPEN_SOURCE_STABLE_MINOR:
            raise UsageError(
                f"Linkerd {value} is a vendor build (Buoyant Enterprise for Linkerd): only edge releases and the "
                f"open-source stable releases up to 2.{_LAST_OPEN_SOURCE_STABLE_MINOR} publish the CLI binary the kit "
                "runs. Use the matching edge release instead (2.18 = edge-25.4.4, 2.19 = edge-25.10.7), or, on an "
                "existing cluster, install that vendor's CLI yourself and pass its edge-equivalent version")
        return LinkerdVersion(edge=None, minor=int(match[1]), text=value)
    raise UsageError(f"Linkerd version {text!r} is not a release name like 'edge-25.4.4' or 'stable-2.14.10'; "
                     "the kit pins one release because the CLI binary is per release")


def normalize_smi_version(text: str) -> str:
    value = text.strip()
    if not re.match(r"^v?\d+\.\d+\.\d+$", value):
        raise UsageError(f"linkerd-smi version {text!r} is not like 'v0.2.7'")
    return value if value.startswith("v") else f"v{value}"


def default_work_root() -> Path:
    """Shared by every pytest-xdist worker of a run (same temp dir, same cluster name)."""
    return Path(tempfile.gettempdir()) / "pytest-abtraffic"


@dataclass(frozen=True)
class ClusterSettings:
    """How the kind and existing backends run. Every field has a safe default.

    - ``cluster_name``: kind cluster name; default ``abtraffic-<hash>`` derived from the config
      and, unless ``reuse``, from the test run (pytest-xdist workers share it).
    - ``kubeconfig``: existing backend: the kubeconfig to read (never written; default
      ``$KUBECONFIG`` or ``~/.kube/config``). kind backend: where to write the cluster's own
      kubeconfig (default ``<work_dir>/kubeconfig``); never the user's default kubeconfig.
    - ``context``: existing backend: the context to use (required). kind: always ``kind-<name>``.
    - ``reuse``: kind: use a cluster of that name when its recorded config and versions match.
    - ``keep``: kind: do not delete the cluster at the end (print how to delete it).
    - ``report_dir``: where failure diagnostics go (default ``<work_dir>/diagnostics``).
    - ``allow_chaos``: existing backend: allow kill/scale/fault/weight changes (kind: always).
    - ``build_images``: kind: ``docker build`` the reference model image from the files the wheel
      carries (``pytest_abtraffic/_bundled/fixtures``). The load runs on a public image: nothing to build.
    - ``work_dir``: kubeconfig, locks and diagnostics (default ``$TMPDIR/pytest-abtraffic/<name>``).
    - ``gateway_api``: ``bundled`` (Linkerd's own CRD bundle, no download) or ``upstream``
      (``kubectl apply --server-side -f`` the Gateway API v1.2.1 release URL: downloads at run time).
    - ``load_image``: the load Job's image (default the official ``locustio/locust`` at the pinned
      Locust version; a mirror or a digest-pinned reference may be given). It needs ``python`` with
      Locust installed; the kit's code is mounted from a ConfigMap.
    - ``model_image``: existing backend: the reference model image as you pushed it to a registry
      the nodes pull from (``REGISTRY/ai-model:0.1.0``); replaces the unpublished reference image.
    - ``build_contexts``: extra ``(image, directory)`` pairs to ``docker build`` and load into kind.
    """

    cluster_name: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    reuse: bool = False
    keep: bool = False
    linkerd_version: str = DEFAULT_LINKERD_VERSION
    linkerd_smi_version: str = DEFAULT_SMI_VERSION
    kind_node_image: str = KIND_NODE_IMAGE
    report_dir: str | None = None
    allow_chaos: bool = False
    build_images: bool = True
    work_dir: str | None = None
    gateway_api: str = "bundled"
    load_image: str = LOAD_IMAGE
    model_image: str | None = None
    build_contexts: tuple[tuple[str, str], ...] = ()
    linkerd_namespace: str = "linkerd"
    ready_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        parse_linkerd_version(self.linkerd_version)
        normalize_smi_version(self.linkerd_smi_version)
        if self.gateway_api not in GATEWAY_API_SOURCES:
            raise UsageError(f"gateway_api must be one of {', '.join(GATEWAY_API_SOURCES)}, got {self.gateway_api!r}")
        version = parse_linkerd_version(self.linkerd_version)
        if version.gateway_api_explicit and not version.bundles_gateway_api and self.gateway_api == "bundled":
            raise UsageError(
                f"Linkerd {self.linkerd_version} needs the Gateway API CRDs installed before `linkerd install --crds` "
                "(its renderCRDs refuses otherwise, and ignores --set installGatewayAPI=true): pass "
                f"gateway_api='upstream' (applies {GATEWAY_API_URL}; a download at run time) or use edge-25.4.1+")
        if self.cluster_name is not None:
            check_kind_name(self.cluster_name)
        if not self.kind_node_image or any(c.isspace() for c in self.kind_node_image):
            raise UsageError(f"kind_node_image {self.kind_node_image!r} is not an image reference")
        if not self.load_image or any(c.isspace() for c in self.load_image):
            raise UsageError(f"load_image {self.load_image!r} is not an image reference")
        if self.model_image is not None and (not self.model_image or any(c.isspace() for c in self.model_image)):
            raise UsageError(f"model_image {self.model_image!r} is not an image reference")
        if not self.ready_timeout_s > 0:
            raise UsageError(f"ready_timeout_s must be positive, got {self.ready_timeout_s!r}")
        for pair in self.build_contexts:
            if len(pair) != 2 or not all(isinstance(p, str) and p for p in pair):
                raise UsageError(f"build_contexts entries must be (image, directory) pairs, got {pair!r}")

    @property
    def linkerd(self) -> LinkerdVersion:
        return parse_linkerd_version(self.linkerd_version)

    @property
    def smi_version(self) -> str:
        return normalize_smi_version(self.linkerd_smi_version)

    def images_to_build(self, images_in_use: set[str], fixtures: Path) -> list[tuple[str, Path]]:
        """``(image, build context)`` pairs ``docker build`` makes for the images in use."""
        out: list[tuple[str, Path]] = []
        if not self.build_images:
            return out
        if REFERENCE_IMAGE in images_in_use:
            out.append((REFERENCE_IMAGE, fixtures))
        for image, directory in self.build_contexts:
            if image in images_in_use and image not in dict(out):
                out.append((image, Path(directory)))
        return out


def check_kind_name(name: str) -> str:
    if not _KIND_NAME.match(name) or len(name) > KIND_NAME_MAX or name.startswith(("-", ".")):
        raise UsageError(f"kind cluster name {name!r} must be lowercase letters, digits, '-' and '.', "
                         f"at most {KIND_NAME_MAX} characters")
    return name


def user_default_kubeconfigs() -> list[Path]:
    """The kubeconfig files kubectl would use by default: the kind backend never writes these."""
    paths = [Path.home() / ".kube" / "config"]
    env = os.environ.get("KUBECONFIG", "")
    paths.extend(Path(p) for p in env.split(os.pathsep) if p)
    return [p.expanduser().resolve() for p in paths]


__all__ = [
    "DEFAULT_LINKERD_VERSION",
    "DEFAULT_SMI_VERSION",
    "GATEWAY_API_SOURCES",
    "GATEWAY_API_URL",
    "KIND_NODE_IMAGE",
    "KIND_VERSION",
    "KUBECTL_VERSION",
    "LOAD_IMAGE",
    "ClusterSettings",
    "LinkerdVersion",
    "check_kind_name",
    "default_work_root",
    "normalize_smi_version",
    "parse_linkerd_version",
    "user_default_kubeconfigs",
]

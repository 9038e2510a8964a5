"""The real-cluster engine: kind and existing-cluster backends with Linkerd.

Import-light on purpose: the load Job's entry (``_jobentry``) lives in this package and runs in the
load image, so the heavier modules (the Kubernetes client, the backends) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._settings import ClusterSettings

if TYPE_CHECKING:
    from .._backend import Backend
    from .._spec import ExperimentSpec
    from ._existing import ExistingClusterBackend
    from ._kind import KindBackend
    from ._loadjob import check_load_target, refuse_port_forward
    from ._plan import Step, format_plan, plan

_LAZY = {
    "KindBackend": "._kind",
    "ExistingClusterBackend": "._existing",
    "Step": "._plan",
    "plan": "._plan",
    "format_plan": "._plan",
    "refuse_port_forward": "._loadjob",
    "check_load_target": "._loadjob",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)


def make_cluster_backend(backend: str, settings: ClusterSettings, spec: ExperimentSpec | None = None) -> Backend:
    """The ``kind`` or ``existing`` backend. Prerequisites are checked here, before any side effect:
    kind checks its tools (PATH and versions); existing checks the context and that Linkerd is there."""
    if backend == "kind":
        from ._kind import KindBackend

        kind = KindBackend(settings, spec)
        kind.check_prerequisites()
        return kind
    if backend == "existing":
        from ._existing import ExistingClusterBackend

        return ExistingClusterBackend(settings, spec)
    from .._errors import UsageError

    raise UsageError(f"unknown cluster backend {backend!r}; choose kind or existing")


__all__ = [
    "ClusterSettings",
    "ExistingClusterBackend",
    "KindBackend",
    "Step",
    "check_load_target",
    "format_plan",
    "make_cluster_backend",
    "plan",
    "refuse_port_forward",
]

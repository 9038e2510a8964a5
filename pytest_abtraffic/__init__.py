"""pytest-abtraffic: prove that an A/B traffic split between model versions behaves as configured.

The public API is what ``__all__`` names; everything in ``_``-prefixed modules may change.
Backends, the load driver and chaos are imported on first use so that ``import pytest_abtraffic``
(which pytest does for every run through the ``pytest11`` entry point) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._backend import Backend, BackendCounters, Deployment, FaultSettings
from ._errors import (
    AbTrafficAssertionError,
    AbTrafficError,
    BackendError,
    CommandError,
    ComparisonError,
    FallbackAssertionError,
    LoadError,
    NotReadyError,
    PrerequisiteError,
    ProgrammedWeightsError,
    SloViolationError,
    SpecError,
    SplitMismatchError,
    UsageError,
)
from ._result import ExperimentResult, FaultWindow, ServedWeights
from ._spec import (
    ExperimentSpec,
    FailureAccrual,
    FailurePolicy,
    LoadSettings,
    RetryPolicy,
    Variant,
    default_spec,
    load_spec,
    reference_variant,
)
from ._stats import (
    SequentialSplitTest,
    SplitResult,
    assert_split,
    check_split,
    plan_sample_size,
    srm_test,
)

if TYPE_CHECKING:
    from ._chaos import FallbackExpectation, FallbackReport, FaultStep, Scenario, parse_scenario
    from ._from_manifests import ManifestExperiment, ManifestLintError, spec_from_manifests, spec_from_pulumi
    from ._load import LoadPlan, LoadResult
    from ._local import LocalBackend
    from ._runner import VerifySettings, run_scenario, verify_split

from ._version import __version__

_LAZY = {
    "LocalBackend": "._local",
    "LoadPlan": "._load",
    "LoadResult": "._load",
    "Scenario": "._chaos",
    "FaultStep": "._chaos",
    "FallbackExpectation": "._chaos",
    "FallbackReport": "._chaos",
    "parse_scenario": "._chaos",
    "VerifySettings": "._runner",
    "verify_split": "._runner",
    "run_scenario": "._runner",
    "spec_from_manifests": "._from_manifests",
    "spec_from_pulumi": "._from_manifests",
    "ManifestExperiment": "._from_manifests",
    "ManifestLintError": "._from_manifests",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_abtraffic' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


__all__ = [
    "AbTrafficAssertionError",
    "AbTrafficError",
    "Backend",
    "BackendCounters",
    "BackendError",
    "CommandError",
    "ComparisonError",
    "Deployment",
    "ExperimentResult",
    "ExperimentSpec",
    "FailureAccrual",
    "FailurePolicy",
    "FallbackAssertionError",
    "FallbackExpectation",
    "FallbackReport",
    "FaultSettings",
    "FaultStep",
    "FaultWindow",
    "LoadError",
    "LoadPlan",
    "LoadResult",
    "LoadSettings",
    "LocalBackend",
    "ManifestExperiment",
    "ManifestLintError",
    "NotReadyError",
    "PrerequisiteError",
    "ProgrammedWeightsError",
    "RetryPolicy",
    "Scenario",
    "SequentialSplitTest",
    "ServedWeights",
    "SloViolationError",
    "SpecError",
    "SplitMismatchError",
    "SplitResult",
    "UsageError",
    "Variant",
    "VerifySettings",
    "__version__",
    "assert_split",
    "check_split",
    "default_spec",
    "load_spec",
    "parse_scenario",
    "plan_sample_size",
    "reference_variant",
    "run_scenario",
    "spec_from_manifests",
    "spec_from_pulumi",
    "srm_test",
    "verify_split",
]

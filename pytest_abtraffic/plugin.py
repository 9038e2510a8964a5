"""The pytest plugin: options, markers, fixtures, header line, terminal summary and reports.

Fixture names all start with ``abtraffic`` so they never clash with Locust's own pytest plugin
(which defines ``session`` and ``fastsession``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ._errors import AbTrafficError, SpecError
from ._spec import BACKENDS, SPLIT_APIS, ExperimentSpec, default_spec, load_spec, parse_weight_option

if TYPE_CHECKING:
    from ._backend import Backend, Deployment
    from ._chaos import FallbackExpectation, Scenario
    from ._load import LoadPlan, LoadResult
    from ._result import ExperimentResult
    from ._runner import VerifySettings
    from ._stats import SplitResult

_RESULTS_KEY = pytest.StashKey[list["ExperimentResult"]]()
_CONFIG_KEY = pytest.StashKey["AbTrafficConfig"]()
_MANIFEST_SPEC_KEY = pytest.StashKey[ExperimentSpec]()

_OPTIONS: tuple[tuple[str, str, str, Any], ...] = (
    # (name, type, help, default)
    ("backend", "choice", "where experiments run: local (embedded default, no Docker), kind, existing", "local"),
    ("spec", "path", "experiment spec YAML (default: the built-in ai-model v1/v2 50/50 experiment)", None),
    ("kubeconfig", "path", "kubeconfig for the existing backend (never written by the kit)", None),
    ("context", "str", "kubeconfig context for the existing backend", None),
    ("reuse-cluster", "bool", "kind: reuse a cluster of the same name when its config and versions match", False),
    ("keep-cluster", "bool", "kind: keep the cluster after the run", False),
    ("linkerd-version", "str", "Linkerd release to install on kind (pinned)", "edge-25.4.4"),
    ("requests", "int", "request budget per split verification (default: planned by the statistics engine)", None),
    ("tolerance", "float", "allowed deviation of each share, as a fraction (0.02 = 2 points)", 0.02),
    ("confidence", "float", "confidence of the tolerance (equivalence) test", 0.999),
    ("report-dir", "path", "write a JSON and an HTML report per experiment here", None),
    ("allow-chaos", "bool", "existing backend: allow fault scenarios (they kill and scale pods)", False),
    ("load-image", "str", "cluster backends: the load Job's image (default: the official Locust image, pinned)",
     None),
    ("model-image", "str", "existing backend: the reference model image as pushed to your registry", None),
    ("workers", "int", "load worker processes: >1 runs Locust's distributed mode (local: --processes N)", None),
    ("seed", "int", "local backend: seed the proxy's weighted random choice, for reproducible runs", None),
    ("target", "str", "existing backend: verify the live split whose apex is NAMESPACE/SERVICE, read-only", None),
)


@dataclass(frozen=True)
class AbTrafficConfig:
    """The run's settings, from command-line options, then ini keys, then defaults."""

    backend: str = "local"
    spec_path: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    reuse_cluster: bool = False
    keep_cluster: bool = False
    linkerd_version: str = "edge-25.4.4"
    requests: int | None = None
    tolerance: float = 0.02
    confidence: float = 0.999
    report_dir: str | None = None
    allow_chaos: bool = False
    seed: int | None = None
    worker_id: str = "main"
    # The user's own objects to verify (files, directories), resolved; empty: the spec's experiment.
    manifests: tuple[str, ...] = ()
    # NAMESPACE/SERVICE of a live split to verify read-only (existing backend).
    target: str | None = None
    load_image: str | None = None
    model_image: str | None = None
    workers: int | None = None


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("abtraffic", "A/B traffic split verification (pytest-abtraffic)")
    for name, kind, help_text, default in _OPTIONS:
        dest = "abtraffic_" + name.replace("-", "_")
        flag = f"--abtraffic-{name}"
        if kind == "bool":
            group.addoption(flag, action="store_true", default=None, dest=dest, help=help_text)
            parser.addini(dest, help_text, type="bool", default=default)
        elif kind == "choice":
            group.addoption(flag, choices=BACKENDS, default=None, dest=dest, help=f"{help_text} (default: {default})")
            parser.addini(dest, help_text, default=default)
        else:
            group.addoption(flag, default=None, dest=dest, metavar=name.upper().replace("-", "_"),
                            help=help_text + (f" (default: {default})" if default is not None else ""))
            parser.addini(dest, help_text, default=None if default is None else str(default))
    manifests_help = ("verify the experiment the user's own objects declare (YAML files or directories; the SPEC "
                      "then gives version_header, load, failure_policy, scenarios, local_commands)")
    group.addoption("--abtraffic-manifests", default=None, dest="abtraffic_manifests", metavar="PATHS",
                    help=manifests_help + "; several paths separated by spaces")
    parser.addini("abtraffic_manifests", manifests_help + " (relative to the ini file)", type="args", default=[])


def _value(config: pytest.Config, name: str) -> Any:
    dest = "abtraffic_" + name.replace("-", "_")
    cli = config.getoption(dest)
    if cli is not None:
        return cli
    return config.getini(dest)


def _number(config: pytest.Config, name: str, cast: Callable[[str], Any], low: float, high: float | None) -> Any:
    raw = _value(config, name)
    if raw in (None, ""):
        return None
    try:
        number = cast(str(raw))
    except ValueError:
        raise pytest.UsageError(f"--abtraffic-{name}: expected a number, got {raw!r}") from None
    if number < low or (high is not None and number >= high):
        bound = f">= {low:g}" if high is None else f"in [{low:g}, {high:g})"
        raise pytest.UsageError(f"--abtraffic-{name}: must be {bound}, got {raw!r}")
    return number


def config_from_pytest(config: pytest.Config) -> AbTrafficConfig:
    """Read and validate options; bad values stop the run before anything starts."""
    backend = str(_value(config, "backend") or "local")
    if backend not in BACKENDS:
        choices = ", ".join(BACKENDS)
        raise pytest.UsageError(f"abtraffic_backend: unknown backend {backend!r}; choose one of {choices}")
    tolerance = _number(config, "tolerance", float, 1e-6, 1.0)
    confidence = _number(config, "confidence", float, 0.5, 1.0)
    requests = _number(config, "requests", int, 1, None)
    spec_path = _value(config, "spec") or None
    if spec_path is not None and not Path(str(spec_path)).is_file():
        raise pytest.UsageError(f"--abtraffic-spec: file {str(spec_path)!r} does not exist")
    kubeconfig = _value(config, "kubeconfig") or None
    context = _value(config, "context") or None
    if backend == "existing" and not context:
        raise pytest.UsageError("--abtraffic-backend=existing needs --abtraffic-context "
                                "(the kubeconfig context to use)")
    if backend != "existing" and (context or kubeconfig):
        raise pytest.UsageError("--abtraffic-context/--abtraffic-kubeconfig apply only to --abtraffic-backend=existing")
    reuse, keep = bool(_value(config, "reuse-cluster")), bool(_value(config, "keep-cluster"))
    if backend != "kind" and (reuse or keep):
        raise pytest.UsageError("--abtraffic-reuse-cluster/--abtraffic-keep-cluster apply only to the kind backend")
    linkerd_version = str(_value(config, "linkerd-version") or "edge-25.4.4")
    if not re.fullmatch(r"(edge-\d{2}\.\d{1,2}\.\d{1,2}|stable-2\.\d+\.\d+)", linkerd_version):
        raise pytest.UsageError(f"--abtraffic-linkerd-version: {linkerd_version!r} is not like 'edge-25.4.4'")
    if backend != "local":
        from ._cluster._settings import parse_linkerd_version
        from ._errors import UsageError

        try:
            parse_linkerd_version(linkerd_version)
        except UsageError as exc:  # vendor-only releases (stable-2.15+, enterprise-*)
            raise pytest.UsageError(f"--abtraffic-linkerd-version: {exc}") from None
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    from ._plugin_manifests import resolve, split_paths

    cli_manifests = config.getoption("abtraffic_manifests")
    if cli_manifests:
        manifests = resolve(split_paths(cli_manifests), Path(config.invocation_params.dir))
    else:
        ini_base = config.inipath.parent if config.inipath is not None else config.rootpath
        manifests = resolve(split_paths(list(config.getini("abtraffic_manifests"))), ini_base)
    target = str(_value(config, "target") or "") or None
    if target is not None:
        from ._cluster._target import parse_target

        if backend != "existing":
            raise pytest.UsageError("--abtraffic-target reads a live split: it needs --abtraffic-backend=existing")
        if manifests:
            raise pytest.UsageError("--abtraffic-target and abtraffic_manifests cannot be combined")
        try:
            parse_target(target)
        except AbTrafficError as exc:
            raise pytest.UsageError(f"--abtraffic-target: {exc}") from None
    return AbTrafficConfig(
        target=target,
        manifests=tuple(manifests),
        backend=backend,
        spec_path=str(spec_path) if spec_path else None,
        kubeconfig=str(kubeconfig) if kubeconfig else None,
        context=str(context) if context else None,
        reuse_cluster=reuse,
        keep_cluster=keep,
        linkerd_version=linkerd_version,
        requests=requests,
        tolerance=tolerance if tolerance is not None else 0.02,
        confidence=confidence if confidence is not None else 0.999,
        report_dir=str(_value(config, "report-dir")) if _value(config, "report-dir") else None,
        allow_chaos=bool(_value(config, "allow-chaos")),
        load_image=str(_value(config, "load-image")) if _value(config, "load-image") else None,
        model_image=str(_value(config, "model-image")) if _value(config, "model-image") else None,
        seed=_number(config, "seed", int, 0, None),
        workers=_number(config, "workers", int, 1, 65),
        worker_id=worker,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "abtraffic(weights=None, expect=None, split_api=None, tolerance=None, confidence=None, requests=None, "
        "users=None, scenario=None, manifests=None, target_rps=None): per-test overrides of the A/B experiment "
        "and its assertions",
    )
    config.stash[_CONFIG_KEY] = config_from_pytest(config)
    config.stash[_RESULTS_KEY] = []
    cfg = config.stash[_CONFIG_KEY]
    from ._plugin_manifests import is_manifest_spec_file

    if cfg.manifests:
        # Lint gates the run: findings stop it before any backend starts.
        from ._plugin_manifests import manifest_experiment, settings_for

        try:
            config.stash[_MANIFEST_SPEC_KEY] = manifest_experiment(cfg.manifests, settings_for(cfg.spec_path),
                                                                   cfg.backend)
        except AbTrafficError as exc:
            raise pytest.UsageError(f"abtraffic_manifests: {exc}") from None
    elif cfg.spec_path:
        try:
            if is_manifest_spec_file(cfg.spec_path):
                from ._plugin_manifests import settings_for

                settings_for(cfg.spec_path)
            else:
                load_spec(cfg.spec_path)
        except SpecError as exc:
            raise pytest.UsageError(f"--abtraffic-spec: {exc}") from None


def pytest_report_header(config: pytest.Config) -> str | None:
    cfg = config.stash.get(_CONFIG_KEY, None)
    if cfg is None:
        return None
    manifest_spec = config.stash.get(_MANIFEST_SPEC_KEY, None)
    try:
        spec = manifest_spec if manifest_spec is not None else load_spec(cfg.spec_path)
    except AbTrafficError:
        return f"abtraffic: backend={cfg.backend}"
    weights = " ".join(f"{v.name}={v.weight}" for v in spec.variants)
    source = cfg.spec_path or "built-in default unless a conftest overrides abtraffic_base_spec"
    if manifest_spec is not None:
        source = "objects: " + " ".join(cfg.manifests)
    return (f"abtraffic: backend={cfg.backend}, experiment {spec.model} {weights} ({spec.split_api}) "
            f"[{source}], tolerance={cfg.tolerance:g}, confidence={cfg.confidence:g}"
            + (f", seed={cfg.seed}" if cfg.seed is not None else ""))


# ------------------------------------------------------------------------------------------
# markers


_MARKER_KEYS = {"weights", "expect", "split_api", "tolerance", "confidence", "requests", "users", "scenario",
                "workers", "fail_fast_timeout", "early_stop", "manifests", "slo", "compare", "target_rps"}


def _marker_options(node: pytest.Item | pytest.Collector) -> dict[str, Any]:
    """Merge ``@pytest.mark.abtraffic(...)`` kwargs, closest marker wins."""
    merged: dict[str, Any] = {}
    for marker in reversed(list(node.iter_markers("abtraffic"))):
        if marker.args:
            raise pytest.UsageError(f"{node.nodeid}: @pytest.mark.abtraffic takes keyword arguments only")
        unknown = set(marker.kwargs) - _MARKER_KEYS
        if unknown:
            raise pytest.UsageError(f"{node.nodeid}: unknown @pytest.mark.abtraffic option(s) {sorted(unknown)}; "
                                    f"allowed: {', '.join(sorted(_MARKER_KEYS))}")
        merged.update(marker.kwargs)
    return merged


def _weights_arg(value: Any, field_name: str) -> dict[str, Any]:
    if isinstance(value, str):
        return dict(parse_weight_option(value, field_name))
    if isinstance(value, Mapping):
        return dict(value)
    raise SpecError(field_name, f"expected a mapping or 'v1=90,v2=10', got {value!r}")


def apply_overrides(spec: ExperimentSpec, options: Mapping[str, Any]) -> ExperimentSpec:
    """A spec with marker/CLI overrides applied (validated like a spec file)."""
    if options.get("split_api") is not None:
        if options["split_api"] not in SPLIT_APIS:
            raise SpecError("split_api", f"unknown split API {options['split_api']!r}; "
                            f"choose one of {', '.join(SPLIT_APIS)}")
        spec = spec.replace(split_api=options["split_api"])
    if options.get("weights") is not None:
        spec = spec.with_weights(_weights_arg(options["weights"], "weights"))
    if options.get("workers") is not None:
        workers = options["workers"]
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise SpecError("load.workers", f"must be an integer, got {workers!r}")
        spec = spec.replace(load=dataclasses.replace(spec.load, workers=workers))
    if options.get("target_rps") is not None:  # user sizing for slow models (docs/slow-models.md)
        spec = spec.replace(load=dataclasses.replace(spec.load, target_rps=options["target_rps"]))
    if options.get("fail_fast_timeout") is not None:
        spec = spec.replace(failure_policy=dataclasses.replace(
            spec.failure_policy, fail_fast_timeout_s=float(options["fail_fast_timeout"])))
    return spec


# ------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="session")
def abtraffic_config(request: pytest.FixtureRequest) -> AbTrafficConfig:
    """The run's abtraffic settings (options and ini keys)."""
    return request.config.stash[_CONFIG_KEY]


@pytest.fixture(scope="session")
def abtraffic_base_spec(abtraffic_config: AbTrafficConfig, request: pytest.FixtureRequest) -> ExperimentSpec:
    """The experiment before per-test overrides: ``--abtraffic-spec`` or the default.

    Override this fixture in a model repository's ``conftest.py`` to describe your own model
    servers (a start command for the local backend, an image for clusters).
    """
    manifest_spec = request.config.stash.get(_MANIFEST_SPEC_KEY, None)
    if manifest_spec is not None:
        return manifest_spec
    if abtraffic_config.target:
        return _live_target_spec(abtraffic_config)
    if abtraffic_config.spec_path:
        from ._plugin_manifests import is_manifest_spec_file, settings_for

        if is_manifest_spec_file(abtraffic_config.spec_path):
            return settings_for(abtraffic_config.spec_path).base
        return load_spec(abtraffic_config.spec_path)
    return default_spec()


def _live_target_spec(cfg: AbTrafficConfig) -> ExperimentSpec:
    """The live split ``--abtraffic-target`` names, read (get/list only) with a short-lived client."""
    from ._cluster._target import read_target
    from ._from_manifests import load_manifest_settings

    reader: Any = make_backend(cfg, None)
    try:
        spec = read_target(reader.api, str(cfg.target))
    finally:
        reader.close()
    base = load_manifest_settings(cfg.spec_path).base
    return dataclasses.replace(spec, version_header=base.version_header, load=base.load)


def make_backend(cfg: AbTrafficConfig, spec: ExperimentSpec | None = None) -> Backend:
    """The backend ``cfg`` names. Cluster backends check their prerequisites here."""
    if cfg.backend == "local":
        from ._local import LocalBackend

        return LocalBackend(seed=cfg.seed)
    from ._cluster import ClusterSettings, make_cluster_backend
    from ._cluster._settings import LOAD_IMAGE

    settings = ClusterSettings(
        kubeconfig=cfg.kubeconfig, context=cfg.context, reuse=cfg.reuse_cluster, keep=cfg.keep_cluster,
        linkerd_version=cfg.linkerd_version, report_dir=cfg.report_dir, allow_chaos=cfg.allow_chaos,
        model_image=cfg.model_image, load_image=cfg.load_image or LOAD_IMAGE,
    )
    return make_cluster_backend(cfg.backend, settings, spec)


@pytest.fixture(scope="session")
def abtraffic_backend(abtraffic_config: AbTrafficConfig, abtraffic_base_spec: ExperimentSpec) -> Iterator[Backend]:
    """One backend for the whole session (one kind cluster, reused); closed at the end."""
    backend = make_backend(abtraffic_config, abtraffic_base_spec)
    try:
        yield backend
    finally:
        backend.close()


class _DeploymentPool:
    """Deployments shared by the tests of a module that use the same experiment.

    Deploying is the slow part on a cluster, so tests with an identical spec reuse one deployment
    (restored between tests); a test with different weights or split API gets its own.
    """

    def __init__(self, backend: Backend, namespace_prefix: str,
                 announce: Callable[[str], None] | None = None) -> None:
        self._backend = backend
        self._prefix = namespace_prefix
        self._announce = announce
        self._deployments: dict[str, Deployment] = {}

    def get(self, spec: ExperimentSpec) -> Deployment:
        key = repr(spec)
        deployment = self._deployments.get(key)
        if deployment is None:
            namespace = _namespace(self._prefix, len(self._deployments))
            deployment = self._backend.deploy(spec, namespace=namespace)
            self._deployments[key] = deployment
            if self._announce is not None:
                weights = ", ".join(f"{v.name}={v.weight}" for v in spec.variants)
                self._announce(f"deployed {spec.model} ({weights}, {spec.split_api}) on backend "
                               f"{self._backend.name}, namespace {deployment.namespace}")
        return deployment

    def close(self) -> None:
        from ._backend import teardown_all

        try:
            teardown_all(self._deployments.values())
        finally:
            self._deployments.clear()


def _namespace(prefix: str, index: int) -> str:
    """A DNS-1123 namespace name per worker/module/experiment (kubetest#154: long test names)."""
    import hashlib

    digest = hashlib.sha1(f"{prefix}-{index}".encode(), usedforsecurity=False).hexdigest()[:6]
    base = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")[:40].strip("-") or "exp"
    return f"abt-{base}-{digest}"


@pytest.fixture(scope="module")
def abtraffic_pool(abtraffic_backend: Backend, abtraffic_config: AbTrafficConfig,
                   request: pytest.FixtureRequest) -> Iterator[_DeploymentPool]:
    module = getattr(request.module, "__name__", "module").rsplit(".", 1)[-1]
    pool = _DeploymentPool(abtraffic_backend, f"{abtraffic_config.worker_id}-{module}",
                           _progress_writer(request.config))
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def abtraffic_spec(abtraffic_base_spec: ExperimentSpec, request: pytest.FixtureRequest) -> ExperimentSpec:
    """The experiment for this test: the base spec with ``@pytest.mark.abtraffic`` overrides."""
    options = _marker_options(request.node)
    if options.get("manifests") is not None:
        return _marker_manifest_spec(options, request)
    try:
        cfg: AbTrafficConfig = request.getfixturevalue("abtraffic_config")
        options = dict(_marker_options(request.node))
        if cfg.workers is not None and "workers" not in options:
            options["workers"] = cfg.workers  # --abtraffic-workers; a marker's own value wins
        return apply_overrides(abtraffic_base_spec, options)
    except SpecError as exc:
        raise pytest.UsageError(f"{request.node.nodeid}: @pytest.mark.abtraffic {exc}") from None


def _marker_manifest_spec(options: Mapping[str, Any], request: pytest.FixtureRequest) -> ExperimentSpec:
    """``@pytest.mark.abtraffic(manifests=...)``: the experiment of those objects (paths relative to the test
    file). Lint findings fail the test before anything is deployed."""
    from ._plugin_manifests import manifest_experiment, resolve, settings_for, split_paths

    clash = sorted(k for k in ("weights", "split_api") if options.get(k) is not None)
    if clash:
        raise pytest.UsageError(f"{request.node.nodeid}: @pytest.mark.abtraffic {', '.join(clash)} cannot be combined "
                                "with manifests: the objects declare the split (use expect= to assert other shares)")
    cfg: AbTrafficConfig = request.config.stash[_CONFIG_KEY]
    try:
        paths = resolve(split_paths(options["manifests"]), Path(str(request.node.path)).parent)
        return manifest_experiment(paths, settings_for(cfg.spec_path), cfg.backend)
    except (AbTrafficError, TypeError) as exc:
        pytest.fail(f"@pytest.mark.abtraffic(manifests=...): {exc}", pytrace=False)


@pytest.fixture
def abtraffic_deployment(abtraffic_pool: _DeploymentPool, abtraffic_spec: ExperimentSpec) -> Iterator[Deployment]:
    """The deployed experiment (its own namespace), restored after the test whatever happened."""
    deployment = abtraffic_pool.get(abtraffic_spec)
    try:
        yield deployment
    finally:
        deployment.restore()


class AbTraffic:
    """What a test uses: run load, assert the split, run fallback scenarios.

    Results are collected for the terminal summary and the report directory.
    """

    def __init__(self, deployment: Deployment, settings: VerifySettings, options: Mapping[str, Any],
                 request: pytest.FixtureRequest, sink: list[ExperimentResult],
                 progress: Callable[[str], None] | None, report_dir: str | None) -> None:
        self.deployment = deployment
        self.settings = settings
        self._options = dict(options)
        self._request = request
        self._sink = sink
        self._progress = progress
        self._report_dir = report_dir
        self.results: list[ExperimentResult] = []

    @property
    def spec(self) -> ExperimentSpec:
        return self.deployment.spec

    def _record(self, result: ExperimentResult) -> ExperimentResult:
        self.results.append(result)
        self._sink.append(result)
        try:
            from ._report import junit_properties, write_html, write_json

            for key, value in junit_properties(result):
                self._request.node.user_properties.append((key, value))
            if self._report_dir:
                write_json(result, self._report_dir)
                write_html(result, self._report_dir)
        except ImportError:  # pragma: no cover
            pass
        return result

    def _name(self, suffix: str) -> str:
        return f"{self._request.node.nodeid}::{suffix}"

    def load(self, plan: LoadPlan | None = None, **overrides: Any) -> LoadResult:
        """Drive load at the split and return what was observed (no assertion)."""
        from ._load import LoadPlan

        base = plan or LoadPlan.from_spec(self.spec)
        return self.deployment.run_load(dataclasses.replace(base, **overrides) if overrides else base)

    def verify_split(self, expected: Mapping[str, Any] | str | None = None, **settings: Any) -> ExperimentResult:
        """Drive load and assert the observed split matches ``expected`` (default: the deployed weights)."""
        from ._runner import verify_split
        from ._stats import normalize_weights

        expect = expected if expected is not None else self._options.get("expect")
        shares = None
        if expect is not None:
            raw = _weights_arg(expect, "expect")
            shares = normalize_weights({k: float(v) for k, v in raw.items()})
        verify_settings = dataclasses.replace(self.settings, **settings) if settings else self.settings
        result = self._record(verify_split(self.deployment, expected=shares, settings=verify_settings,
                                           name=self._name("split"), progress=self._progress))
        assert result.split is not None
        if result.routes is not None:
            result.routes.raise_if_failed()
        result.split.raise_if_failed()
        for judgment in (result.slo, result.compare):
            if judgment is not None:
                judgment.raise_if_failed()
        return result

    def assert_split(self, counts: Mapping[str, int], weights: Mapping[str, float] | None = None,
                     **kwargs: Any) -> SplitResult:
        """Judge counts you collected yourself against the weights (default: the deployed ones)."""
        from ._stats import assert_split

        kwargs.setdefault("tolerance", self.settings.tolerance)
        kwargs.setdefault("confidence", self.settings.confidence)
        kwargs.setdefault("alpha", self.settings.alpha)
        return assert_split(counts, weights if weights is not None else self.spec.shares(), **kwargs)

    def run_scenario(self, scenario: Scenario | str | None = None,
                     expectation: FallbackExpectation | None = None, **settings: Any) -> ExperimentResult:
        """Run a fault scenario under load and assert the fallback (and recovery)."""
        from ._chaos import Scenario, parse_scenario
        from ._runner import run_scenario

        chosen = scenario if scenario is not None else self._options.get("scenario")
        if chosen is None:
            raise SpecError("scenario", "no scenario given (pass one or use @pytest.mark.abtraffic(scenario=...))")
        parsed = chosen if isinstance(chosen, Scenario) else parse_scenario(chosen, self.spec)
        verify_settings = dataclasses.replace(self.settings, **settings) if settings else self.settings
        result = self._record(run_scenario(self.deployment, parsed, settings=verify_settings,
                                           expectation=expectation, name=self._name(f"fallback:{parsed.name}"),
                                           progress=self._progress))
        assert result.fallback is not None
        result.fallback.raise_if_failed()
        return result


def _progress_writer(config: pytest.Config) -> Callable[[str], None] | None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capman = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or config.getoption("verbose", 0) < 0:
        return None

    def write(line: str) -> None:
        ctx = capman.global_and_fixture_disabled() if capman is not None else contextlib.nullcontext()
        with ctx:
            reporter.write_line(f"[abtraffic] {line}")

    return write


@pytest.fixture
def abtraffic(abtraffic_deployment: Deployment, abtraffic_config: AbTrafficConfig,
              request: pytest.FixtureRequest) -> AbTraffic:
    """The main fixture: ``abtraffic.verify_split()``, ``abtraffic.run_scenario("kill")``, ``abtraffic.load()``."""
    from ._runner import VerifySettings

    options = _marker_options(request.node)
    try:
        settings = VerifySettings(
            tolerance=float(options.get("tolerance", abtraffic_config.tolerance)),
            confidence=float(options.get("confidence", abtraffic_config.confidence)),
            requests=options.get("requests", abtraffic_config.requests),
            users=options.get("users"),
            early_stop=bool(options.get("early_stop", True)),
            slo=options.get("slo", ()),
            compare=options.get("compare"),
        )
    except SpecError as exc:
        raise pytest.UsageError(f"{request.node.nodeid}: @pytest.mark.abtraffic {exc}") from None
    return AbTraffic(abtraffic_deployment, settings, options, request, request.config.stash[_RESULTS_KEY],
                     _progress_writer(request.config), abtraffic_config.report_dir)


@pytest.fixture
def abtraffic_assert_split(abtraffic_config: AbTrafficConfig) -> Callable[..., SplitResult]:
    """``abtraffic_assert_split(counts, weights)``: the statistics engine's assertion, no cluster needed."""
    from ._stats import assert_split

    def check(counts: Mapping[str, int], weights: Mapping[str, float], **kwargs: Any) -> SplitResult:
        kwargs.setdefault("tolerance", abtraffic_config.tolerance)
        kwargs.setdefault("confidence", abtraffic_config.confidence)
        return assert_split(counts, weights, **kwargs)

    return check


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    results = config.stash.get(_RESULTS_KEY, [])
    if not results:
        return
    from ._report import format_summary

    terminalreporter.section("abtraffic summary")
    for line in format_summary(results).splitlines():
        terminalreporter.write_line(line)
    cfg = config.stash.get(_CONFIG_KEY, None)
    if cfg is not None and cfg.report_dir:
        terminalreporter.write_line(f"reports written to {cfg.report_dir}")


__all__ = ["AbTraffic", "AbTrafficConfig", "apply_overrides", "config_from_pytest", "make_backend"]

if "gevent" in sys.modules:  # pragma: no cover - diagnostic for users who import locust in conftest
    sys.stderr.write("pytest-abtraffic: gevent is imported in the pytest process; Locust must run in a subprocess\n")


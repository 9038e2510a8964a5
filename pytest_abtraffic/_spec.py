"""The experiment spec: one typed, validated description of an A/B experiment.

Everything else (manifests, backends, the local proxy, load, statistics) reads this object, so a
split is described once. Validation happens here, before any side effect, and every error names
the field it is about (``variants[1].weight``).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import yaml

from ._compare import CompareSpec, parse_compare
from ._errors import SpecError
from ._pointer import check_pointer
from ._routes import Cohort, RouteRule, parse_cohorts, parse_routes, select_rule, shadowed_rules
from ._slo import SloLimit, parse_slo
from ._units import check_float as _check_float
from ._units import parse_duration

SplitApi = Literal["smi-v1alpha1", "smi-v1alpha2", "httproute"]
SPLIT_APIS: tuple[str, ...] = ("smi-v1alpha1", "smi-v1alpha2", "httproute")
BackendName = Literal["local", "kind", "existing"]
BACKENDS: tuple[str, ...] = ("local", "kind", "existing")

# HTTPRoute flavours Linkerd's policy controller serves (linkerd-facts.md): the group picks the
# apiVersion. Linkerd 2.18+ (our pinned default) serves gateway.networking.k8s.io/v1.
ROUTE_API_VERSIONS: dict[str, str] = {
    "gateway.networking.k8s.io": "gateway.networking.k8s.io/v1",
    "policy.linkerd.io": "policy.linkerd.io/v1beta3",
}

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# Kubernetes quantity forms a TrafficSplit v1alpha1 weight takes in practice: "500m", "1", "1.5".
QUANTITY = re.compile(r"^(?P<num>\d+(\.\d+)?)(?P<milli>m)?$")

REFERENCE_IMAGE = "pytest-abtraffic/ai-model:0.1.0"
REFERENCE_COMMAND: tuple[str, ...] = ("{python}", "-m", "ai_model", "--host", "{host}", "--port", "{port}")
REFERENCE_ADMIN_PORT = 9901
EXTRA_LATENCY_ENV = "MODEL_EXTRA_LATENCY_MS"  # read by the reference server (fixtures/ai_model/server.py)
_RETRY_ONE = r"(5xx|gateway-error|[1-5]\d\d(-[1-5]\d\d)?)"
RETRY_CONDITION = re.compile(rf"^{_RETRY_ONE}(,{_RETRY_ONE})*$")


def parse_weight(value: object, *, field_name: str, split_api: str) -> Fraction:
    """Weight as an exact number, checking the form the split API accepts.

    TrafficSplit v1alpha1 takes Kubernetes quantities (``"500m"``); v1alpha2 and HTTPRoute take
    whole numbers only (smi-spec; Gateway API ``backendRefs[].weight`` is an int32).
    """
    if isinstance(value, bool) or value is None:
        raise SpecError(field_name, f"weight must be a number, got {value!r}")
    if isinstance(value, int):
        number = Fraction(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise SpecError(field_name, f"weight must be a finite number, got {value!r}")
        if split_api != "smi-v1alpha1" and not value.is_integer():
            raise SpecError(field_name, f"weight {value!r} is not a whole number, which {split_api} requires")
        number = Fraction(str(value))
    elif isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            number = Fraction(int(text))
        else:
            match = QUANTITY.match(text)
            if match is None:
                raise SpecError(
                    field_name,
                    f"weight {value!r} is not a number or a Kubernetes quantity like '500m'",
                )
            if split_api != "smi-v1alpha1":
                raise SpecError(
                    field_name,
                    f"weight {value!r} is a Kubernetes quantity; {split_api} accepts whole numbers only "
                    "(quantities are for split.smi-spec.io/v1alpha1)",
                )
            number = Fraction(match["num"]) / (1000 if match["milli"] else 1)
    else:
        raise SpecError(field_name, f"weight must be a number, got {type(value).__name__} {value!r}")
    if number < 0:
        raise SpecError(field_name, f"weight must not be negative, got {value!r}")
    return number


def _check_name(value: object, field_name: str, what: str = "name") -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(field_name, f"{what} must be a non-empty string, got {value!r}")
    if len(value) > 63 or not DNS1123_LABEL.match(value):
        raise SpecError(
            field_name,
            f"{what} {value!r} is not a valid DNS-1123 label (lowercase letters, digits and '-', "
            "starting and ending with a letter or digit, at most 63 characters)",
        )
    return value


def _check_port(value: object, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(field_name, f"port must be an integer, got {value!r}")
    if not 1 <= value <= 65535:
        raise SpecError(field_name, f"port {value} is out of range 1-65535")
    return value


def _check_int(value: object, field_name: str, *, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(field_name, f"must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise SpecError(field_name, f"must be {bound}, got {value}")
    return value


def format_duration(seconds: float) -> str:
    """Linkerd annotation form of a duration."""
    millis = round(seconds * 1000)
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


@dataclass(frozen=True)
class Variant:
    """One model version: a Deployment + Service on a cluster, a set of processes locally."""

    name: str
    weight: int | str = 1
    replicas: int = 1
    port: int = 8080
    image: str | None = None
    command: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    local_env: Mapping[str, str] = field(default_factory=dict)
    admin_port: int | None = None
    image_pull_policy: str = "IfNotPresent"
    ready_path: str = "/readyz"
    live_path: str = "/healthz"
    # Configured slowness of the reference model server (MODEL_EXTRA_LATENCY_MS), e.g. to show a
    # slower candidate failing a comparison; merged into ``env`` so every backend passes it on.
    extra_latency_ms: float = 0.0

    def __post_init__(self) -> None:
        extra = self.extra_latency_ms
        if isinstance(extra, bool) or not isinstance(extra, int | float) or not 0 <= extra <= 60_000:
            raise SpecError(f"variants[{self.name}].extra_latency_ms",
                            f"must be a number of milliseconds from 0 to 60000, got {extra!r}")
        if extra:
            object.__setattr__(self, "env", {**dict(self.env), EXTRA_LATENCY_ENV: f"{float(extra):g}"})


@dataclass(frozen=True)
class FailureAccrual:
    """Linkerd consecutive-failures circuit breaker (``balancer.linkerd.io/failure-accrual``)."""

    max_failures: int = 7
    min_penalty_s: float = 1.0
    max_penalty_s: float = 60.0
    jitter_ratio: float = 0.5


@dataclass(frozen=True)
class RetryPolicy:
    """Linkerd 2.16+ retry annotations (``retry.linkerd.io/http``, ``/limit``, ``/timeout``)."""

    conditions: str = "5xx"
    limit: int = 1
    timeout_s: float | None = None


@dataclass(frozen=True)
class FailurePolicy:
    """How the mesh treats failing backends. Everything off by default, as in Linkerd."""

    failure_accrual: FailureAccrual | None = None
    retries: RetryPolicy | None = None
    request_timeout_s: float | None = None
    # Not an annotation: the policy controller's queue fail-fast timeout (default 3 s).
    fail_fast_timeout_s: float = 3.0

    def annotations(self) -> dict[str, str]:
        """Linkerd annotations for the apex Service, in their documented spelling."""
        out: dict[str, str] = {}
        if self.failure_accrual is not None:
            fa = self.failure_accrual
            out["balancer.linkerd.io/failure-accrual"] = "consecutive"
            out["balancer.linkerd.io/failure-accrual-consecutive-max-failures"] = str(fa.max_failures)
            out["balancer.linkerd.io/failure-accrual-consecutive-min-penalty"] = format_duration(fa.min_penalty_s)
            out["balancer.linkerd.io/failure-accrual-consecutive-max-penalty"] = format_duration(fa.max_penalty_s)
            out["balancer.linkerd.io/failure-accrual-consecutive-jitter-ratio"] = f"{fa.jitter_ratio:g}"
        if self.retries is not None:
            out["retry.linkerd.io/http"] = self.retries.conditions
            out["retry.linkerd.io/limit"] = str(self.retries.limit)
            if self.retries.timeout_s is not None:
                out["retry.linkerd.io/timeout"] = format_duration(self.retries.timeout_s)
        if self.request_timeout_s is not None:
            out["timeout.linkerd.io/request"] = format_duration(self.request_timeout_s)
        return out


@dataclass(frozen=True)
class LoadSettings:
    """How load is driven. ``requests=None`` lets the statistics engine plan the budget."""

    users: int = 10
    spawn_rate: float = 10.0
    requests: int | None = None
    duration_s: float = 120.0
    path: str = "/predict"
    payloads: tuple[Any, ...] | None = None
    unit: Literal["requests", "connections"] = "requests"
    early_stop: bool = True
    locustfile: str | None = None
    cohorts: tuple[Cohort, ...] = ()  # header lines some requests carry (header routes), see _routes
    #: Load processes: 1 = one Locust process; N > 1 = Locust's own distributed mode with N workers
    #: (local: ``locust --processes N``), for rates one load process cannot reach.
    workers: int = 1
    #: JSON pointer to each response's prediction (prediction agreement, ``disagreement<=``); None:
    #: recorded only when a comparison asks for it, at the reference server's pointer.
    prediction_field: str | None = None
    #: Slow models (docs/slow-models.md): ramp the users toward this rate while latency and errors
    #: stay flat, up to ``max_users``; None: ``users`` throughout.
    target_rps: float | None = None
    max_users: int = 100
    #: A ``prediction_share`` of requests POSTs the payloads to ``prediction_path``; the others GET
    #: the cheap ``path`` (same route rule). None: every request POSTs to ``path``.
    prediction_path: str = "/predict"
    prediction_share: float | None = None


@dataclass(frozen=True)
class ExperimentSpec:
    """An A/B experiment: model, variants with weights, how the split is declared and observed."""

    model: str = "ai-model"
    variants: tuple[Variant, ...] = ()
    namespace: str | None = None
    split_api: str = "httproute"
    route_group: str = "gateway.networking.k8s.io"
    service_port: int = 80
    version_header: str = "x-model-version"
    failure_policy: FailurePolicy = field(default_factory=FailurePolicy)
    load: LoadSettings = field(default_factory=LoadSettings)
    scenarios: tuple[Mapping[str, Any], ...] = ()
    routes: tuple[RouteRule, ...] = ()  # header (cohort) rules before the weighted default rule
    # Judgments beyond the ratio (docs/judgments.md): per-version SLOs, candidate vs baseline.
    slo: tuple[SloLimit, ...] = ()
    compare: CompareSpec | None = None

    def __post_init__(self) -> None:
        validate(self)

    # -- names (the user's starting point: ai-model-v1, ai-model-service-v1, ai-model-service) --
    @property
    def apex_service(self) -> str:
        return f"{self.model}-service"

    def service_name(self, variant: str) -> str:
        return f"{self.model}-service-{variant}"

    def deployment_name(self, variant: str) -> str:
        return f"{self.model}-{variant}"

    @property
    def default_namespace(self) -> str:
        return self.namespace or f"abtraffic-{self.model}"[:63].rstrip("-")

    @property
    def route_api_version(self) -> str:
        return ROUTE_API_VERSIONS[self.route_group]

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        known = ", ".join(v.name for v in self.variants)
        raise SpecError("variant", f"unknown variant {name!r}; the experiment has {known}")

    @property
    def variant_names(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.variants)

    def exact_weights(self) -> dict[str, Fraction]:
        return {
            v.name: parse_weight(v.weight, field_name=f"variants[{i}].weight", split_api=self.split_api)
            for i, v in enumerate(self.variants)
        }

    def shares(self) -> dict[str, float]:
        """Configured share of each variant (sums to 1)."""
        exact = self.exact_weights()
        total = sum(exact.values())
        return {name: float(w / total) for name, w in exact.items()}

    def rendered_weights(self) -> dict[str, int | str]:
        """Weights in the form the split API wants.

        v1alpha1 gets quantities; whole-number weights become thousandths of the total when that is
        exact (50/50 -> "500m"/"500m"), which is how SMI examples write them.
        """
        exact = self.exact_weights()
        if self.split_api != "smi-v1alpha1":
            return {name: int(w) for name, w in exact.items()}
        total = sum(exact.values())
        millis = {name: w * 1000 / total for name, w in exact.items()}
        if all(m.denominator == 1 for m in millis.values()):
            return {name: f"{int(m)}m" for name, m in millis.items()}
        return {v.name: _quantity_text(exact[v.name]) for v in self.variants}

    def with_weights(self, weights: Mapping[str, int | str]) -> ExperimentSpec:
        unknown = set(weights) - set(self.variant_names)
        if unknown:
            raise SpecError("weights", f"unknown variant(s) {sorted(unknown)}; known: {list(self.variant_names)}")
        missing = set(self.variant_names) - set(weights)
        if missing:
            raise SpecError("weights", f"no weight given for variant(s) {sorted(missing)}")
        new = dataclasses.replace(
            self, variants=tuple(dataclasses.replace(v, weight=weights[v.name]) for v in self.variants)
        )
        # A weight of 0 is legal ("must get no traffic"); all of them at 0 would route nowhere.
        if sum(new.exact_weights().values()) == 0:
            raise SpecError("weights", "all weights are zero: the split would send traffic nowhere")
        return new

    def replace(self, **changes: Any) -> ExperimentSpec:
        return dataclasses.replace(self, **changes)

    def check_backend(self, backend: str) -> None:
        """Fields a backend needs: an image on clusters, a start command locally."""
        if backend not in BACKENDS:
            raise SpecError("backend", f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        for i, v in enumerate(self.variants):
            if backend == "local" and not v.command:
                raise SpecError(f"variants[{i}].command", f"variant {v.name!r} has no start command, "
                                "which the local backend needs to run it as a process")
            if backend in ("kind", "existing") and not v.image:
                raise SpecError(f"variants[{i}].image", f"variant {v.name!r} has no image, "
                                f"which the {backend} backend needs to run it as a pod")


def _quantity_text(value: Fraction) -> str:
    if value.denominator == 1:
        return str(value.numerator)
    millis = value * 1000
    if millis.denominator == 1:
        return f"{millis.numerator}m"
    return f"{float(value):g}"


def validate(spec: ExperimentSpec) -> None:
    _check_name(spec.model, "model")
    if spec.compare is not None and spec.compare.baseline not in spec.variant_names:
        raise SpecError("compare.baseline", f"unknown variant {spec.compare.baseline!r}; "
                        f"the experiment has {', '.join(spec.variant_names)}")
    if spec.namespace is not None:
        _check_name(spec.namespace, "namespace")
    for name in (spec.apex_service, *(spec.service_name(v.name) for v in spec.variants)):
        if len(name) > 63:
            raise SpecError("model", f"derived Service name {name!r} is longer than 63 characters")
    if spec.split_api not in SPLIT_APIS:
        raise SpecError("split.api", f"unknown split API {spec.split_api!r}; choose one of {', '.join(SPLIT_APIS)}")
    if spec.route_group not in ROUTE_API_VERSIONS:
        raise SpecError("split.route_group", f"unknown HTTPRoute group {spec.route_group!r}; "
                        f"choose one of {', '.join(ROUTE_API_VERSIONS)}")
    _check_port(spec.service_port, "service_port")
    if not isinstance(spec.version_header, str) or not HEADER_NAME.match(spec.version_header):
        raise SpecError("version_header", f"{spec.version_header!r} is not a valid HTTP header name")
    if len(spec.variants) < 2:
        raise SpecError("variants", f"an A/B experiment needs at least 2 variants, got {len(spec.variants)}")
    seen: set[str] = set()
    for i, v in enumerate(spec.variants):
        where = f"variants[{i}]"
        _check_name(v.name, f"{where}.name", "variant name")
        if v.name in seen:
            raise SpecError(f"{where}.name", f"duplicate variant name {v.name!r}")
        seen.add(v.name)
        parse_weight(v.weight, field_name=f"{where}.weight", split_api=spec.split_api)
        _check_int(v.replicas, f"{where}.replicas", low=0, high=100)
        _check_port(v.port, f"{where}.port")
        if v.admin_port is not None:
            _check_port(v.admin_port, f"{where}.admin_port")
            if v.admin_port == v.port:
                raise SpecError(f"{where}.admin_port", "must differ from the serving port")
        if v.image is not None and (not isinstance(v.image, str) or not v.image or any(c.isspace() for c in v.image)):
            raise SpecError(f"{where}.image", f"invalid image reference {v.image!r}")
        if v.command is not None and (
            not v.command or not all(isinstance(a, str) and a for a in v.command)
        ):
            raise SpecError(f"{where}.command", "must be a non-empty list of non-empty strings")
        for env_field in ("env", "local_env"):
            for key, val in dict(getattr(v, env_field)).items():
                if not isinstance(key, str) or not ENV_NAME.match(key):
                    raise SpecError(f"{where}.{env_field}", f"invalid environment variable name {key!r}")
                if not isinstance(val, str):
                    raise SpecError(f"{where}.{env_field}.{key}", f"value must be a string, got {val!r}")
        if v.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise SpecError(f"{where}.image_pull_policy",
                            f"must be Always, IfNotPresent or Never, got {v.image_pull_policy!r}")
        for path_field in ("ready_path", "live_path"):
            if not str(getattr(v, path_field)).startswith("/"):
                raise SpecError(f"{where}.{path_field}", "must start with '/'")
    weights = spec.exact_weights()
    if sum(weights.values()) == 0:
        raise SpecError("variants", "all weights are zero: the split would send traffic nowhere")
    fp = spec.failure_policy
    if fp.failure_accrual is not None:
        fa = fp.failure_accrual
        _check_int(fa.max_failures, "failure_policy.failure_accrual.max_failures", low=1)
        _check_float(fa.min_penalty_s, "failure_policy.failure_accrual.min_penalty", low=0.0, low_open=True)
        _check_float(fa.max_penalty_s, "failure_policy.failure_accrual.max_penalty", low=fa.min_penalty_s)
        _check_float(fa.jitter_ratio, "failure_policy.failure_accrual.jitter_ratio", low=0.0, high=100.0)
    if fp.retries is not None:
        if not isinstance(fp.retries.conditions, str) or not RETRY_CONDITION.match(fp.retries.conditions):
            raise SpecError("failure_policy.retries.on", f"{fp.retries.conditions!r} is not a Linkerd retry "
                            "condition list like '5xx', 'gateway-error' or '500-504'")
        _check_int(fp.retries.limit, "failure_policy.retries.limit", low=1, high=10)
    if fp.request_timeout_s is not None:
        _check_float(fp.request_timeout_s, "failure_policy.timeouts.request", low=0.0, low_open=True)
    _check_float(fp.fail_fast_timeout_s, "failure_policy.fail_fast_timeout", low=0.0, low_open=True)
    if spec.split_api.startswith("smi-") and fp.annotations():
        # linkerd-smi turns the TrafficSplit into a ServiceProfile, and a ServiceProfile disables
        # circuit breaking and annotation retries/timeouts on that Service (linkerd-facts.md): the
        # cluster would ignore the policy while the local backend applied it.
        set_fields = [name for name, value in (("failure_accrual", fp.failure_accrual), ("retries", fp.retries),
                                               ("timeouts.request", fp.request_timeout_s)) if value is not None]
        raise SpecError("failure_policy", f"{', '.join(set_fields)} cannot be used with split.api {spec.split_api}: "
                        "linkerd-smi creates a ServiceProfile for the apex Service, which disables circuit breaking "
                        "and annotation retries/timeouts; use split.api httproute for a failure policy")
    _validate_routes(spec)
    ld = spec.load
    _check_int(ld.users, "load.users", low=1, high=10_000)
    _check_float(ld.spawn_rate, "load.spawn_rate", low=0.0, low_open=True)
    if ld.requests is not None:
        _check_int(ld.requests, "load.requests", low=1)
    _check_float(ld.duration_s, "load.duration", low=0.0, low_open=True)
    if not isinstance(ld.path, str) or not ld.path.startswith("/"):
        raise SpecError("load.path", f"must start with '/', got {ld.path!r}")
    if ld.unit not in ("requests", "connections"):
        raise SpecError("load.unit", f"must be 'requests' or 'connections', got {ld.unit!r}")
    _validate_slow_load(spec)


def _validate_slow_load(spec: ExperimentSpec) -> None:
    """User sizing and the cheap ratio path (the load plan checks the rest when it is built)."""
    ld = spec.load
    _check_int(ld.max_users, "load.max_users", low=1, high=10_000)
    if ld.target_rps is not None:
        _check_float(ld.target_rps, "load.target_rps", low=0.0, low_open=True)
        if ld.max_users < ld.users:
            raise SpecError("load.max_users", f"must be at least load.users ({ld.users}), got {ld.max_users}")
        if ld.locustfile is not None:
            raise SpecError("load.target_rps", "user sizing drives the built-in locustfile; with your own "
                            "locustfile set load.users (or a LoadTestShape) yourself")
    if ld.prediction_share is None:
        return
    if ld.locustfile is not None:
        raise SpecError("load.prediction_share", "the prediction sample is the built-in locustfile's; your own "
                        "locustfile chooses its own paths")
    _check_float(ld.prediction_share, "load.prediction_share", low=0.0, low_open=True)
    if not ld.prediction_share < 1.0:
        raise SpecError("load.prediction_share", f"must be below 1, got {ld.prediction_share!r}")
    if not isinstance(ld.prediction_path, str) or not ld.prediction_path.startswith("/"):
        raise SpecError("load.prediction_path", f"must start with '/', got {ld.prediction_path!r}")
    if ld.path == ld.prediction_path:
        raise SpecError("load.prediction_share", f"needs a cheap load.path other than load.prediction_path "
                        f"({ld.prediction_path}), e.g. /healthz")
    # The cheap path measures the split only if the rule that serves it is the predictions' rule.
    header_sets = [()] + [c.headers for c in ld.cohorts]
    for headers in header_sets:
        lowered = {n.lower(): v for n, v in headers}
        served = {(method, path): select_rule(spec.routes, method, path, lowered)
                  for method in ("GET", "POST") for path in (ld.path, ld.prediction_path)}
        if len(set(served.values())) > 1:
            names: dict[int | None, str] = {i: f"rule {r.name!r}" for i, r in enumerate(spec.routes)}
            names[None] = "the weighted default rule"
            seen = "; ".join(f"{m} {p} -> {names[i]}" for (m, p), i in served.items())
            who = f" with {'; '.join(f'{n}: {v}' for n, v in headers)}" if headers else ""
            raise SpecError("load.path", f"the cheap path {ld.path} and the prediction path {ld.prediction_path} "
                            f"must be served by the same route rule, or the cheap requests do not measure the "
                            f"predictions' split{who}: {seen}")


def _validate_routes(spec: ExperimentSpec) -> None:
    if not spec.routes:
        return
    if spec.split_api.startswith("smi-"):
        raise SpecError("routes", f"header routes cannot be used with split.api {spec.split_api}: an SMI "
                        "TrafficSplit has no matches (linkerd-smi serves none); use split.api httproute")
    for i, rule in enumerate(spec.routes):
        if rule.backend not in spec.variant_names:
            raise SpecError(f"routes[{i}].backend", f"unknown variant {rule.backend!r}; the experiment has "
                            f"{', '.join(spec.variant_names)}")
    for i, earlier in shadowed_rules(spec.routes):
        raise SpecError(f"routes[{i}].matches", f"rule {spec.routes[i].name!r} can never match: each of its matches "
                        f"is also in an earlier rule ({', '.join(spec.routes[j].name for j in earlier)}), which "
                        "wins the tie (Gateway API match precedence)")


def reference_variant(name: str, weight: int | str = 50) -> Variant:
    """A variant served by the kit's reference model server from ``fixtures/``."""
    return Variant(
        name=name,
        weight=weight,
        image=REFERENCE_IMAGE,
        command=REFERENCE_COMMAND,
        env={"MODEL_VERSION": name},
        local_env={"PYTHONPATH": "{fixtures}"},
        admin_port=REFERENCE_ADMIN_PORT,
        image_pull_policy="IfNotPresent",
    )


def default_spec(**changes: Any) -> ExperimentSpec:
    """The common starting point: model ``ai-model``, ``v1`` and ``v2`` at 50/50, reference server."""
    base = ExperimentSpec(model="ai-model", variants=(reference_variant("v1"), reference_variant("v2")))
    return dataclasses.replace(base, **changes) if changes else base


# ---------------------------------------------------------------------------------------------
# YAML / mapping loader

_TOP_KEYS = {"model", "namespace", "variants", "split", "service_port", "version_header",
             "failure_policy", "load", "scenarios", "fallback", "routes", "slo", "compare"}
_VARIANT_KEYS = {"name", "weight", "replicas", "port", "image", "command", "env", "local_env",
                 "admin_port", "image_pull_policy", "ready_path", "live_path", "reference", "extra_latency_ms"}
_SPLIT_KEYS = {"api", "route_group"}
_POLICY_KEYS = {"failure_accrual", "retries", "timeouts", "fail_fast_timeout"}
_ACCRUAL_KEYS = {"max_failures", "min_penalty", "max_penalty", "jitter_ratio"}
_RETRY_KEYS = {"on", "limit", "timeout"}
_TIMEOUT_KEYS = {"request"}
_LOAD_KEYS = {"users", "spawn_rate", "requests", "duration", "path", "payloads", "prediction_field", "unit",
              "early_stop", "locustfile", "cohorts", "workers", "target_rps", "max_users", "prediction_path",
              "prediction_share"}


def _mapping(value: object, field_name: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise SpecError(field_name or "spec", f"must be a mapping, got {type(value).__name__}")
    unknown = sorted(str(k) for k in value if k not in allowed)
    if unknown:
        prefix = f"{field_name}." if field_name else ""
        raise SpecError(f"{prefix}{unknown[0]}", f"unknown key; allowed keys: {', '.join(sorted(allowed))}")
    return dict(value)


def _str_map(value: object, field_name: str) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise SpecError(field_name, f"must be a mapping of names to strings, got {type(value).__name__}")
    out: dict[str, str] = {}
    for key, val in value.items():
        if isinstance(val, bool) or not isinstance(val, str | int | float):
            raise SpecError(f"{field_name}.{key}", f"value must be a string, got {val!r}")
        out[str(key)] = str(val)
    return out


def spec_from_mapping(data: object) -> ExperimentSpec:
    """Build and validate a spec from parsed YAML/JSON. Missing keys take the defaults."""
    if data is None:
        data = {}
    top = _mapping(data, "", _TOP_KEYS)
    kwargs: dict[str, Any] = {}
    for key in ("model", "namespace", "service_port", "version_header"):
        if key in top:
            kwargs[key] = top[key]
    if "split" in top:
        split = _mapping(top["split"], "split", _SPLIT_KEYS)
        if "api" in split:
            kwargs["split_api"] = split["api"]
        if "route_group" in split:
            kwargs["route_group"] = split["route_group"]
    if "variants" in top:
        raw_variants = top["variants"]
        if not isinstance(raw_variants, Sequence) or isinstance(raw_variants, str | bytes):
            raise SpecError("variants", "must be a list of variants")
        kwargs["variants"] = tuple(_variant(item, f"variants[{i}]") for i, item in enumerate(raw_variants))
    else:
        kwargs["variants"] = default_spec().variants
    if "failure_policy" in top:
        kwargs["failure_policy"] = _failure_policy(top["failure_policy"])
    if "load" in top:
        kwargs["load"] = _load(top["load"])
    if "routes" in top:
        kwargs["routes"] = parse_routes(top["routes"])
    if "slo" in top:
        kwargs["slo"] = parse_slo(top["slo"], "slo")
    if "compare" in top:
        kwargs["compare"] = parse_compare(top["compare"], "compare")
    scenarios = top.get("scenarios", top.get("fallback"))
    if scenarios is not None:
        if not isinstance(scenarios, Sequence) or isinstance(scenarios, str | bytes):
            raise SpecError("scenarios", "must be a list of fault scenario steps")
        for i, step in enumerate(scenarios):
            if not isinstance(step, Mapping):
                raise SpecError(f"scenarios[{i}]", "must be a mapping")
        kwargs["scenarios"] = tuple(dict(s) for s in scenarios)
    spec = ExperimentSpec(**kwargs)
    if spec.scenarios:
        from ._scenario_grammar import scenario_from_spec  # the scenario grammar owns the step syntax

        scenario_from_spec(spec)
    return spec


def _variant(item: object, where: str) -> Variant:
    raw = _mapping(item, where, _VARIANT_KEYS)
    if "name" not in raw:
        raise SpecError(f"{where}.name", "is required")
    name = raw["name"]
    _check_name(name, f"{where}.name", "variant name")
    base = reference_variant(name) if raw.pop("reference", False) else Variant(name=name)
    changes: dict[str, Any] = {}
    for key in ("weight", "replicas", "port", "image", "admin_port", "image_pull_policy", "ready_path", "live_path",
                "extra_latency_ms"):
        if key in raw:
            changes[key] = raw[key]
    if "command" in raw:
        cmd = raw["command"]
        if isinstance(cmd, str):
            raise SpecError(f"{where}.command", "must be a list of arguments, not a shell string "
                            "(the kit never runs commands through a shell)")
        if not isinstance(cmd, Sequence):
            raise SpecError(f"{where}.command", "must be a list of arguments")
        changes["command"] = tuple(str(a) if isinstance(a, int | float) and not isinstance(a, bool) else a
                                   for a in cmd)
    for key in ("env", "local_env"):
        if key in raw:
            changes[key] = _str_map(raw[key], f"{where}.{key}")
    if "weight" not in raw:
        raise SpecError(f"{where}.weight", "is required")
    return dataclasses.replace(base, **changes)


def _failure_policy(value: object) -> FailurePolicy:
    raw = _mapping(value, "failure_policy", _POLICY_KEYS)
    accrual = None
    if raw.get("failure_accrual") not in (None, False):
        fa_raw = raw["failure_accrual"]
        fa_map = {} if fa_raw is True else _mapping(fa_raw, "failure_policy.failure_accrual", _ACCRUAL_KEYS)
        base = FailureAccrual()
        accrual = FailureAccrual(
            max_failures=fa_map.get("max_failures", base.max_failures),
            min_penalty_s=parse_duration(fa_map["min_penalty"], "failure_policy.failure_accrual.min_penalty")
            if "min_penalty" in fa_map else base.min_penalty_s,
            max_penalty_s=parse_duration(fa_map["max_penalty"], "failure_policy.failure_accrual.max_penalty")
            if "max_penalty" in fa_map else base.max_penalty_s,
            jitter_ratio=fa_map.get("jitter_ratio", base.jitter_ratio),
        )
    retries = None
    if raw.get("retries") not in (None, False):
        r_raw = raw["retries"]
        if isinstance(r_raw, Mapping) and True in r_raw:
            # YAML 1.1 reads an unquoted `on:` key as the boolean true.
            r_raw = {("on" if k is True else k): v for k, v in r_raw.items()}
        r_map = {} if r_raw is True else _mapping(r_raw, "failure_policy.retries", _RETRY_KEYS)
        retries = RetryPolicy(
            conditions=r_map.get("on", "5xx"),
            limit=r_map.get("limit", 1),
            timeout_s=(parse_duration(r_map["timeout"], "failure_policy.retries.timeout")
                       if "timeout" in r_map else None),
        )
    request_timeout = None
    if "timeouts" in raw and raw["timeouts"] is not None:
        t_map = _mapping(raw["timeouts"], "failure_policy.timeouts", _TIMEOUT_KEYS)
        if "request" in t_map:
            request_timeout = parse_duration(t_map["request"], "failure_policy.timeouts.request")
    fail_fast = (parse_duration(raw["fail_fast_timeout"], "failure_policy.fail_fast_timeout")
                 if "fail_fast_timeout" in raw else 3.0)
    return FailurePolicy(failure_accrual=accrual, retries=retries, request_timeout_s=request_timeout,
                         fail_fast_timeout_s=fail_fast)


def _load(value: object) -> LoadSettings:
    raw = _mapping(value, "load", _LOAD_KEYS)
    changes: dict[str, Any] = {}
    for key in ("users", "spawn_rate", "requests", "path", "unit", "early_stop", "locustfile", "workers",
                "target_rps", "max_users", "prediction_path", "prediction_share"):
        if key in raw:
            changes[key] = raw[key]
    if "duration" in raw:
        changes["duration_s"] = parse_duration(raw["duration"], "load.duration")
    if "payloads" in raw:
        payloads = raw["payloads"]
        if not isinstance(payloads, Sequence) or isinstance(payloads, str | bytes) or not payloads:
            raise SpecError("load.payloads", "must be a non-empty list of JSON request bodies")
        changes["payloads"] = tuple(payloads)
    if "cohorts" in raw:
        changes["cohorts"] = parse_cohorts(raw["cohorts"])
    if raw.get("prediction_field") is not None:
        changes["prediction_field"] = check_pointer(raw["prediction_field"], "load.prediction_field")
    workers = changes.get("workers", 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 64:
        raise SpecError("load.workers", f"must be an integer from 1 to 64, got {workers!r}")
    if "early_stop" in changes and not isinstance(changes["early_stop"], bool):
        raise SpecError("load.early_stop", f"must be true or false, got {changes['early_stop']!r}")
    return LoadSettings(**changes)


def load_spec(path: str | Path | None = None) -> ExperimentSpec:
    """Read a spec from a YAML file; ``None`` gives the default experiment."""
    if path is None:
        return default_spec()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError("spec", f"spec file {str(p)!r} does not exist") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise SpecError("spec", f"cannot read spec file {str(p)!r}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise SpecError("spec", f"{p} is not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    return spec_from_mapping(data)


def parse_weight_option(text: str, option: str = "--weights") -> dict[str, str]:
    """``v1=90,v2=10`` -> ``{"v1": "90", "v2": "10"}`` (validated later against the spec)."""
    out: dict[str, str] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise SpecError(option, f"expected NAME=WEIGHT[,NAME=WEIGHT...], got {text!r}")
        if name in out:
            raise SpecError(option, f"variant {name!r} given twice")
        out[name] = value
    return out


__all__ = [
    "BACKENDS",
    "ROUTE_API_VERSIONS",
    "SPLIT_APIS",
    "ExperimentSpec",
    "FailureAccrual",
    "FailurePolicy",
    "LoadSettings",
    "RetryPolicy",
    "Variant",
    "default_spec",
    "load_spec",
    "parse_duration",
    "parse_weight",
    "parse_weight_option",
    "reference_variant",
    "spec_from_mapping",
]

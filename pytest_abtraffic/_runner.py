"""The main job: drive load at a deployed split, judge the ratio, and run fallback scenarios.

Shared by the pytest fixtures and ``abtraffic verify`` so both judge a split the same way.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ._errors import SpecError
from ._result import ExperimentResult, FaultWindow, ServedWeights

if TYPE_CHECKING:
    from ._backend import Deployment
    from ._chaos import FallbackExpectation, Scenario, ScenarioObserver, ScenarioRunner
    from ._compare import CompareSpec
    from ._load import LoadPlan, LoadResult, LoadSnapshot, RequestRecord
    from ._load._sizing import SizingStep
    from ._phases import AdaptivePhases
    from ._slo import SloLimit
    from ._spec import ExperimentSpec
    from ._stats import RunningTally, SequentialState, Unit

ProgressCallback = Callable[[str], None]
# How often an adaptive fault run looks at the records (a decided phase ends within about this).
PHASE_POLL_S = 0.1


@dataclass(frozen=True)
class VerifySettings:
    """How a split is judged. Defaults follow the experimentation platforms (SRM at p < 0.001)
    and the issue's tolerance (+-2 percentage points at 99.9% confidence)."""

    tolerance: float = 0.02
    confidence: float = 0.999
    alpha: float = 0.001
    # The request cap is planned so that a correct split that reaches it still passes with this
    # probability: a CI gate must almost never fail a correct split. Early stopping keeps the typical
    # run far below the cap (median ~14k requests at 50/50 vs a cap of ~32k).
    power: float = 0.9999
    requests: int | None = None
    early_stop: bool = True
    users: int | None = None
    duration_s: float | None = None
    recovery_s: float = 6.0
    progress_interval_s: float = 1.0
    # Per-version SLOs and candidate vs baseline (docs/judgments.md); strings are parsed here
    # (``"p99_ms<=250"``, ``"baseline=v1,latency_p95_ratio<=1.1"``). Empty: the spec's, if any.
    slo: tuple[SloLimit, ...] = ()
    compare: CompareSpec | None = None

    def __post_init__(self) -> None:
        from ._compare import parse_compare
        from ._slo import parse_slo

        object.__setattr__(self, "slo", parse_slo(self.slo))
        object.__setattr__(self, "compare", parse_compare(self.compare))
        if not 0 < self.tolerance < 1:
            raise SpecError("tolerance", f"must be between 0 and 1 (a share, 0.02 = 2 points), got {self.tolerance!r}")
        if not 0.5 <= self.confidence < 1:
            raise SpecError("confidence", f"must be in [0.5, 1), got {self.confidence!r}")
        if not 0.5 <= self.power < 1:
            raise SpecError("power", f"must be in [0.5, 1), got {self.power!r}")
        if not 0 < self.alpha < 0.5:
            raise SpecError("alpha", f"must be in (0, 0.5), got {self.alpha!r}")
        if self.requests is not None and (isinstance(self.requests, bool) or self.requests < 1):
            raise SpecError("requests", f"must be a positive integer, got {self.requests!r}")
        if self.users is not None and self.users < 1:
            raise SpecError("users", f"must be a positive integer, got {self.users!r}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise SpecError("duration", f"must be positive, got {self.duration_s!r}")


def planned_budget(expected: Mapping[str, float], settings: VerifySettings) -> int:
    """Requests the fixed test needs (the statistics engine's planner), unless given."""
    if settings.requests is not None:
        return settings.requests
    from ._stats import default_request_budget

    return default_request_budget(expected, tolerance=settings.tolerance, confidence=settings.confidence,
                                  power=settings.power)


def _successful_counts(records: Sequence[RequestRecord], unit: str, known: Sequence[str]) -> dict[str, int]:
    from ._stats import counts_by_unit

    ok = [(r.version or "unknown", r.connection) for r in records if r.ok]
    counts = counts_by_unit(ok, "connections" if unit == "connections" else "requests")
    return {**dict.fromkeys(known, 0), **counts}


class _RunningCounts:
    """``_successful_counts`` at every poll, counting only the records that arrived since the last.

    Recounting every record at each poll cost the main process about a second of CPU per main job,
    taken from the load and the proxy on a 2-core box.
    """

    def __init__(self, unit: str, known: Sequence[str]) -> None:
        self._unit: Unit = "connections" if unit == "connections" else "requests"
        self._known = list(known)
        self._seen = 0
        self._tally = self._new_tally()

    def _new_tally(self) -> RunningTally:
        from ._stats import RunningTally

        return RunningTally(self._unit)

    def update(self, records: Sequence[RequestRecord]) -> dict[str, int]:
        if len(records) < self._seen:  # not the same growing stream: count again from the start
            self._seen = 0
            self._tally = self._new_tally()
        self._tally.add((r.version, r.connection) for r in records[self._seen:] if r.ok)
        self._seen = len(records)
        return {**dict.fromkeys(self._known, 0), **self._tally.counts}


class _SplitObserver:
    """Feeds the sequential test during load; asks the driver to stop once it has a verdict."""

    def __init__(self, expected: Mapping[str, float], settings: VerifySettings, unit: str,
                 variants: Sequence[str], progress: ProgressCallback | None,
                 judged: Callable[[Sequence[RequestRecord]], Sequence[RequestRecord]] | None = None,
                 min_total: int = 0, budget: int | None = None, sizing: bool = False) -> None:
        from ._stats import SequentialSplitTest

        self._test = SequentialSplitTest(expected, alpha=settings.alpha, tolerance=settings.tolerance,
                                         confidence=settings.confidence)
        self._settings = settings
        self._unit = unit
        self._variants = list(variants)
        self._progress = progress
        self._judged = judged  # header routes: only the default rule's records are split by the weights
        self._last_print = 0.0
        # SLO and comparison checks need this many units before the run may stop early.
        self._min_total = min_total
        self.state: SequentialState | None = None
        # The counts the sequential test decided on; records that arrive while load stops are not judged.
        self.decided_counts: dict[str, int] | None = None
        self._running = _RunningCounts(unit, self._variants)
        # Slow models: the up-front warning once the rate is known (after sizing has settled).
        self._budget = budget
        self._sizing_done = not sizing
        self._rate_from: tuple[float, int] | None = None
        self.slow_warning: str | None = None

    def on_start(self) -> None:
        self._last_print = time.monotonic()

    def on_sizing(self, step: SizingStep) -> None:
        """A user sizing step (``_load._sizing.SizingStep``): printed; the rate is measured after the last."""
        if step.settled:
            self._sizing_done = True
            self._rate_from = None
        if self._progress is not None:
            self._progress(step.describe())

    def _check_rate(self, snapshot: LoadSnapshot) -> None:
        from ._load._sizing import RATE_WINDOW_S, SIZING_WARN_AFTER_S, WARMUP_S, budget_time_warning

        if self._budget is None or self.slow_warning is not None:
            return
        if not self._sizing_done and snapshot.elapsed_s < SIZING_WARN_AFTER_S:
            return  # the rate is still growing (or the observer in front forwards no sizing steps)
        if self._rate_from is None:
            if snapshot.elapsed_s >= WARMUP_S:
                self._rate_from = (snapshot.elapsed_s, snapshot.requests)
            return
        t0, n0 = self._rate_from
        if snapshot.elapsed_s - t0 < RATE_WINDOW_S:
            return
        rate = (snapshot.requests - n0) / (snapshot.elapsed_s - t0)
        warning = budget_time_warning(rate, self._budget)
        if warning is not None:
            self.slow_warning = warning
            if self._progress is not None:
                self._progress(f"WARNING: {warning}")
            else:
                import warnings

                warnings.warn(warning, UserWarning, stacklevel=2)
        else:
            self.slow_warning = ""  # checked: fast enough

    def on_progress(self, snapshot: LoadSnapshot, records: Sequence[RequestRecord]) -> bool:
        self._check_rate(snapshot)
        if self._judged is not None:  # header routes: the judged subset is re-derived from all records
            counts = _successful_counts(self._judged(records), self._unit, self._variants)
        else:
            counts = self._running.update(records)
        if sum(counts.values()) > 0 and self.decided_counts is None:
            self.state = self._test.update(counts)
            if self.state.decided and self._settings.early_stop and sum(counts.values()) >= self._min_total:
                self.decided_counts = counts
        verdict = self.state.verdict if self.state is not None else "undecided"
        _report_progress(self._progress, snapshot, counts, verdict, self)
        return self.decided_counts is not None


def _report_progress(progress: ProgressCallback | None, snapshot: LoadSnapshot, counts: Mapping[str, int],
                     verdict: str, holder: Any) -> None:
    if progress is None:
        return
    now = time.monotonic()
    if now - holder._last_print < holder._settings.progress_interval_s:
        return
    holder._last_print = now
    total = sum(counts.values())
    shares = {k: (v / total if total else 0.0) for k, v in counts.items()}
    try:
        from ._report import format_progress

        line = format_progress(snapshot.elapsed_s, snapshot.requests, snapshot.rps, shares, verdict)
    except ImportError:  # pragma: no cover - report module always ships; keep progress robust
        parts = "  ".join(f"{k} {v:.1%}" for k, v in shares.items())
        line = f"{snapshot.elapsed_s:6.1f}s {snapshot.requests:,} req {snapshot.rps:,.0f} rps  {parts}  {verdict}"
    progress(line)


@dataclass
class SplitRun:
    """A split verification prepared for one load run: what ``verify_split`` runs and then judges."""

    shares: Mapping[str, float]
    budget: int
    settings: VerifySettings
    plan: LoadPlan
    observer: _SplitObserver
    slo: tuple[SloLimit, ...] = ()
    compare: CompareSpec | None = None
    positive: tuple[str, ...] = ()  # versions with a share above zero (a zero-weight one gets no traffic)


def prepare_split(deployment: Deployment, *, expected: Mapping[str, float] | None, settings: VerifySettings,
                  progress: ProgressCallback | None, plan: LoadPlan | None) -> SplitRun:
    """Shares, planned budget, load plan and the sequential observer of a split verification."""
    from ._stats import normalize_weights

    spec = deployment.spec
    if not spec.load.early_stop:  # the spec's `load.early_stop: false` turns it off as --no-early-stop does
        settings = replace(settings, early_stop=False)
    # Normalised once here; the planner, the sequential and the fixed test take them as they are.
    shares = normalize_weights(expected if expected is not None else spec.shares())
    budget = planned_budget(shares, settings)
    slo_limits = settings.slo or spec.slo
    compare = settings.compare or spec.compare
    positive = tuple(name for name, share in shares.items() if share > 0.0)
    load_plan = split_launch_plan(spec, settings, plan)
    min_total = _judgment_min_total(slo_limits, compare, shares, settings.confidence, len(_payloads(load_plan) or ()))
    if compare is not None and compare.baseline not in shares:
        raise SpecError("compare.baseline", f"unknown variant {compare.baseline!r}; known: {', '.join(shares)}")
    if load_plan.prediction_share is not None:  # SLOs and comparisons are judged on the prediction sample
        min_total = math.ceil(min_total / load_plan.prediction_share)
    if settings.requests is None:
        budget = max(budget, min_total)
    judged = None
    if spec.routes:
        from ._route_check import default_rule_share, split_by_rule

        # The planned budget is for the weighted rule; cohort traffic comes on top of it.
        share = default_rule_share(spec.routes, spec.load.cohorts, load_plan.path)
        budget = math.ceil(budget / share) if share > 0 else budget
        path = load_plan.path
        judged = lambda records: split_by_rule(records, spec.routes, path)[1]  # noqa: E731
    overrides: dict[str, Any] = {"max_requests": budget}
    if settings.duration_s is not None:
        overrides["duration_s"] = settings.duration_s
    load_plan = replace(load_plan, **overrides)
    observer = _SplitObserver(shares, settings, load_plan.unit, list(shares), progress, judged, min_total,
                              budget=budget, sizing=load_plan.target_rps is not None)
    return SplitRun(shares, budget, settings, load_plan, observer, tuple(slo_limits), compare, positive)


def finish_split(deployment: Deployment, run: SplitRun, load: LoadResult, *, name: str, started: str,
                 t0: float) -> ExperimentResult:
    """Judge the split on the counts the sequential test decided on (or all of them)."""
    from ._stats import check_split

    spec = deployment.spec
    settings, shares, observer = run.settings, run.shares, run.observer
    routes = None
    judged_records: Sequence[RequestRecord] = load.records
    if spec.routes:
        from ._route_check import check_routes

        routes, judged_records = check_routes(load.records, spec.routes, spec.load.cohorts, run.plan.path)
    all_counts = _successful_counts(judged_records, run.plan.unit, list(shares))
    counts = observer.decided_counts if observer.decided_counts is not None else all_counts
    split = check_split(counts, shares, tolerance=settings.tolerance, confidence=settings.confidence,
                        alpha=settings.alpha, unit=run.plan.unit)
    notes = []
    if observer.state is not None and observer.state.decided:
        notes.append(f"sequential test stopped at n={observer.state.n:,} with verdict {observer.state.verdict!r} "
                     f"(planned fixed budget {run.budget:,})")
    late = sum(all_counts.values()) - sum(counts.values())
    if late:
        notes.append(f"{late:,} responses arrived after the decision while load stopped; they are not judged")
    failed = sum(1 for r in load.records if not r.ok)
    if failed:
        notes.append(f"{failed:,} of {len(load.records):,} requests failed and are not counted in the split")
    notes.extend(_slow_model_notes(run, load))
    if routes is not None:
        notes.append(f"header routes: {len(load.records) - routes.default_requests:,} requests matched a rule; "
                     f"the split is judged on the {routes.default_requests:,} that matched none")
    if run.plan.unit == "requests":  # a per-connection unit already expects sticky connections
        from ._connections import diagnose_connections

        diagnosis = diagnose_connections(judged_records, list(run.positive), alpha=settings.alpha)
        if diagnosis is not None and diagnosis.fired:
            notes.append(diagnosis.message)
    extra: dict[str, Any] = {}
    # Latency and error judgments are about predictions: with a cheap ratio path, the sample's.
    sampled = _prediction_records(load.records, run.plan)
    if run.slo:
        from ._slo import check_slo

        extra["slo"] = check_slo(sampled, run.slo, confidence=settings.confidence, versions=list(run.positive))
    if run.compare is not None:
        from ._compare import check_compare

        extra["compare"] = check_compare(sampled, run.compare, confidence=settings.confidence,
                                         candidates=[n for n in run.positive if n != run.compare.baseline],
                                         predictions=load.predictions,
                                         payloads=_payloads(run.plan),
                                         prediction_field=run.plan.prediction_field or "")
    return _result(deployment, name, shares, load, started, t0, split=split, sequential=observer.state,
                   notes=tuple(notes), routes=routes, **extra)


def split_launch_plan(spec: ExperimentSpec, settings: VerifySettings, plan: LoadPlan | None = None) -> LoadPlan:
    """The load plan a split run launches, before its budget and duration: what ``prepare_split``
    runs and what ``abtraffic verify`` pre-starts Locust for (a warm process is taken over only when
    the two launch the same way)."""
    from ._load import LoadPlan

    load_plan = with_prediction_field(plan or LoadPlan.from_spec(spec), settings.compare or spec.compare)
    return load_plan if settings.users is None else replace(load_plan, users=settings.users)


def with_prediction_field(plan: LoadPlan, compare: CompareSpec | None) -> LoadPlan:
    """The plan, noting predictions at the reference server's pointer when ``disagreement<=`` needs
    them and the plan names no pointer of its own."""
    if compare is None or compare.disagreement is None or plan.prediction_field is not None:
        return plan
    from ._pointer import DEFAULT_PREDICTION_FIELD

    return replace(plan, prediction_field=DEFAULT_PREDICTION_FIELD)


def _payloads(plan: LoadPlan) -> Sequence[Any] | None:
    """Request bodies the load cycles (the built-in ones unless ``load.payloads``); None for a user
    locustfile, which sends what it likes."""
    if plan.payloads is not None:
        return plan.payloads
    if plan.locustfile is not None:
        return None
    from ._load._protocol import DEFAULT_PAYLOADS

    return DEFAULT_PAYLOADS


def _prediction_records(records: Sequence[RequestRecord], plan: LoadPlan) -> Sequence[RequestRecord]:
    """The records of predictions: all of them, or the prediction sample's (``prediction_share``)."""
    if plan.prediction_share is None:
        return records
    return [r for r in records if r.path == plan.prediction_path]


def _slow_model_notes(run: SplitRun, load: LoadResult) -> list[str]:
    notes = []
    if run.observer.slow_warning:
        notes.append(run.observer.slow_warning)
    if load.sizing:
        last = load.sizing[-1]
        notes.append(f"user sizing toward {run.plan.target_rps:,.0f} rps: {len(load.sizing)} steps, "
                     f"{last['users']} users at the end ({last['reason']})")
    if run.plan.prediction_share is not None:
        sample = len(_prediction_records(load.records, run.plan))
        notes.append(f"prediction sample: {sample:,} of {len(load.records):,} requests went to "
                     f"{run.plan.prediction_path} (share {run.plan.prediction_share:g}), the others to "
                     f"{run.plan.path}; the ratio counts both (same route rule), SLOs and comparisons the sample")
    return notes


def _judgment_min_total(slo_limits: Sequence[SloLimit], compare: CompareSpec | None, shares: Mapping[str, float],
                        confidence: float, payloads: int = 0) -> int:
    """Units a run needs before SLO/comparison bounds can clear their limits for every version.

    Twice the fewest per version for a bound to exist at all (so it is not the sample's maximum),
    divided by the smallest positive share.
    """
    per_version = 0
    if slo_limits:
        from ._slo import slo_min_requests

        per_version = slo_min_requests(slo_limits, confidence)
    if compare is not None:
        from ._compare import compare_min_requests

        per_version = max(per_version, compare_min_requests(compare, confidence, payloads))
    positive = [s for s in shares.values() if s > 0.0]
    if not per_version or not positive:
        return 0
    return math.ceil(2 * per_version / min(positive))


def verify_split(
    deployment: Deployment,
    *,
    expected: Mapping[str, float] | None = None,
    settings: VerifySettings | None = None,
    name: str = "split",
    progress: ProgressCallback | None = None,
    plan: LoadPlan | None = None,
) -> ExperimentResult:
    """Drive load until the sequential test decides (or the budget runs out) and judge the split.

    The sequential test is the stopping rule (anytime-valid, so peeking is safe); the final table
    is the fixed SRM + tolerance test on everything observed.
    """
    run = prepare_split(deployment, expected=expected, settings=settings or VerifySettings(), progress=progress,
                        plan=plan)
    check_programmed(deployment)  # its own failure, before any load or statistics
    started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    t0 = time.monotonic()
    load = deployment.run_load(run.plan, run.observer)
    return finish_split(deployment, run, load, name=name, started=started, t0=t0)


class _ScenarioProgress:
    """Wraps the chaos module's observer to add the live progress line."""

    def __init__(self, inner: ScenarioObserver, settings: VerifySettings, variants: Sequence[str], unit: str,
                 progress: ProgressCallback | None) -> None:
        self.inner = inner
        self._settings = settings
        self._variants = list(variants)
        self._unit = unit
        self._progress = progress
        self._last_print = 0.0
        self._running = _RunningCounts(unit, self._variants)

    def load_started(self, monotonic: float) -> None:
        self.inner.load_started(monotonic)

    def on_start(self) -> None:
        self._last_print = time.monotonic()
        self.inner.on_start()

    def on_progress(self, snapshot: LoadSnapshot, records: Sequence[RequestRecord]) -> bool:
        counts = self._running.update(records)
        _report_progress(self._progress, snapshot, counts, f"fault scenario {self.inner.runner.scenario.name}", self)
        return self.inner.on_progress(snapshot, records)


@dataclass
class ScenarioRun:
    """A fault scenario prepared for one load run: its runner, observer, expectation and phases."""

    scenario: Scenario
    settings: VerifySettings
    plan: LoadPlan
    expectation: FallbackExpectation
    runner: ScenarioRunner
    observer: _ScenarioProgress
    phases: AdaptivePhases | None
    phase_notes: list[str]


def prepare_scenario(deployment: Deployment, scenario: Scenario, *, settings: VerifySettings,
                     expectation: FallbackExpectation | None, progress: ProgressCallback | None,
                     plan: LoadPlan | None) -> ScenarioRun:
    """Expectation, adaptive phases (unless the fixed timeline applies), runner and observer."""
    from ._chaos import ScenarioObserver, ScenarioRunner, default_expectation
    from ._load import LoadPlan
    from ._phases import AdaptivePhases, fixed_timeline_reason

    spec = deployment.spec
    load_plan = plan or LoadPlan.from_spec(spec)
    total_s = scenario.end_s() + settings.recovery_s
    load_plan = replace(load_plan, max_requests=None, duration_s=total_s + 10.0)
    if settings.users is not None:
        load_plan = replace(load_plan, users=settings.users)
    exp = expectation if expectation is not None else default_expectation(spec, scenario)
    phases: AdaptivePhases | None = None
    phase_notes: list[str] = []
    if not settings.early_stop:
        fixed_reason: str | None = "early stop is off (--no-early-stop)"
    elif not spec.load.early_stop:
        fixed_reason = "early stop is off (load.early_stop: false)"
    else:
        fixed_reason = fixed_timeline_reason(scenario, exp)
    if fixed_reason is None:
        phases = AdaptivePhases(scenario, spec, exp, users=load_plan.users, recovery_s=settings.recovery_s,
                                progress=progress)
        # Decisions are taken between polls of the records: poll often so a decided phase ends promptly.
        load_plan = replace(load_plan, progress_interval_s=min(load_plan.progress_interval_s, PHASE_POLL_S))
    else:
        phase_notes.append(f"fixed timeline: {fixed_reason}")
    runner = ScenarioRunner(scenario)
    observer = _ScenarioProgress(ScenarioObserver(runner, deployment, settings.recovery_s, phases=phases), settings,
                                 spec.variant_names, load_plan.unit, progress)
    return ScenarioRun(scenario, settings, load_plan, exp, runner, observer, phases, phase_notes)


def finish_scenario(deployment: Deployment, run: ScenarioRun, load: LoadResult, windows: Sequence[FaultWindow], *,
                    name: str | None, started: str, t0: float) -> ExperimentResult:
    """Evaluate the fallback on the run's records and the windows the runner recorded."""
    from ._chaos import evaluate_fallback

    spec = deployment.spec
    notes = list(run.phase_notes)
    if run.phases is not None:
        notes.extend(run.phases.notes)
    report = evaluate_fallback(load, run.scenario, windows, spec, run.expectation,
                               post_recovery=run.phases.decision if run.phases is not None else None,
                               phase_notes=notes)
    return _result(deployment, name or f"fallback:{run.scenario.name}", spec.shares(), load, started, t0,
                   fallback=report, fault_windows=tuple(windows))


def run_scenario(
    deployment: Deployment,
    scenario: Scenario,
    *,
    settings: VerifySettings | None = None,
    expectation: FallbackExpectation | None = None,
    name: str | None = None,
    progress: ProgressCallback | None = None,
    plan: LoadPlan | None = None,
) -> ExperimentResult:
    """Run ``scenario`` under load and evaluate the fallback. Always restores the deployment.

    With ``settings.early_stop`` (the default) a one-step fault scenario runs its phases adaptively
    (``_phases``): each ends once decided, the planned times stay the deadlines.
    """
    run = prepare_scenario(deployment, scenario, settings=settings or VerifySettings(), expectation=expectation,
                           progress=progress, plan=plan)
    check_programmed(deployment)
    started = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    t0 = time.monotonic()
    try:
        load: LoadResult = deployment.run_load(run.plan, run.observer)
    finally:
        windows = run.runner.stop()  # restores the deployment, re-raises step errors
    return finish_scenario(deployment, run, load, windows, name=name, started=started, t0=t0)


def served_weights(deployment: Deployment) -> ServedWeights | None:
    """Declared vs programmed weights, when the backend can tell (``served_weights()``)."""
    query = getattr(deployment, "served_weights", None)
    if query is None:
        return None
    served = query()
    return served if isinstance(served, ServedWeights) else None


def check_programmed(deployment: Deployment) -> ServedWeights | None:
    """Raise ProgrammedWeightsError when the mesh serves other weights than the objects declare."""
    served = served_weights(deployment)
    if served is not None and not served.agree:
        from ._errors import ProgrammedWeightsError

        def fmt(weights: Mapping[str, float]) -> str:
            return ", ".join(f"{k}={v:g}" for k, v in weights.items())

        raise ProgrammedWeightsError(
            f"{deployment.backend_name} serves other weights than the split declares (namespace "
            f"{deployment.namespace}); no traffic was measured:\n  declared:   {fmt(served.declared)}\n"
            f"  programmed: {fmt(served.programmed or {})} (from {served.source})",
            declared=served.declared, programmed=served.programmed or {})
    return served


def _result(deployment: Deployment, name: str, shares: Mapping[str, float], load: LoadResult, started: str,
            t0: float, **judgements: Any) -> ExperimentResult:
    """An ExperimentResult with what every run records about where and when it ran."""
    spec = deployment.spec
    judgements.setdefault("weights", _safe_served(deployment))
    return ExperimentResult(
        name=name,
        backend=deployment.backend_name,
        namespace=deployment.namespace,
        variants=spec.variant_names,
        expected_shares=shares,
        split_api=spec.split_api,
        load=load,
        mesh_counters=_safe_counters(deployment),
        started_at=started,
        duration_s=time.monotonic() - t0,
        **judgements,
    )


def _safe_served(deployment: Deployment) -> ServedWeights | None:
    try:
        return served_weights(deployment)
    except Exception:  # informative once the verdict is in
        return None


def _safe_counters(deployment: Deployment) -> dict[str, Any]:
    # Mesh counters are informative; a backend that cannot read them must not fail the verdict.
    try:
        return dict(deployment.mesh_counters())
    except Exception:
        return {}


__all__ = ["FaultWindow", "VerifySettings", "check_programmed", "planned_budget", "run_scenario", "served_weights",
           "verify_split"]

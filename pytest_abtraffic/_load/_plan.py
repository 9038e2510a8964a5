"""How to drive load (LoadPlan) and how to watch it (LoadObserver)."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from .._errors import SpecError, UsageError
from .._pointer import check_pointer
from ._results import UNITS, LoadSnapshot, RequestRecord

if TYPE_CHECKING:
    from .._spec import ExperimentSpec

_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")


MAX_WORKERS = 64
#: User sizing's cap when the spec gives none (greenlets are cheap; the servers are the limit).
DEFAULT_MAX_USERS = 100
MAX_USERS_LIMIT = 10_000
#: ``processes``: ``locust --processes N`` in one place (local); ``pods``: a ``--master`` expecting N
#: remote ``--worker`` processes (the cluster backends' worker pods).
WORKER_MODES = ("processes", "pods")


@dataclass(frozen=True)
class LoadPlan:
    """One load run.

    The run ends at whichever comes first: ``max_requests`` recorded requests, ``duration_s``
    seconds after Locust started its users, or the observer asking to stop.

    ``payloads`` are JSON request bodies cycled by the built-in locustfile (default: iris batches).
    ``locustfile`` replaces the built-in one; it must call
    ``pytest_abtraffic._load.locust_support.record_version()`` so requests are recorded.
    ``connection_close`` sends ``Connection: close`` (one connection per request).
    ``unit`` says how the split is meant to be counted (requests, or connections for
    per-connection routing); the driver records both, the statistics use this.
    ``wait_s`` is the pause after each request of each user (0: as fast as the target answers).
    ``workers`` > 1 runs Locust's distributed mode (``--processes N`` locally, ``worker_mode="pods"``:
    a master and N worker pods on a cluster); records are merged.
    ``prediction_field`` (a JSON pointer, see ``_protocol.resolve_pointer``): when set, the built-in
    locustfile records what each version answered to each payload (``LoadResult.predictions``).

    User sizing (slow models, docs/slow-models.md): ``target_rps`` set, the run starts at ``users``
    and the driver ramps the user count toward the users that rate needs at the observed latency
    (Little's law), while latency and errors stay flat, up to ``max_users``; built-in locustfile,
    one host. Prediction sample: ``prediction_share`` set, ``path`` is a cheap GET route (e.g.
    ``/healthz``) for the ratio, and that share of requests POSTs the payloads to
    ``prediction_path``; both must be served by the same route rule (checked against the spec).
    """

    users: int = 10
    spawn_rate: float = 10.0
    max_requests: int | None = None
    duration_s: float = 120.0
    path: str = "/predict"
    payloads: tuple[Any, ...] | None = None
    version_header: str = "x-model-version"
    unit: Literal["requests", "connections"] = "requests"
    locustfile: str | None = None
    connection_close: bool = False
    progress_interval_s: float = 0.5
    wait_s: float = 0.0
    # (header lines, share): that share of requests carries those headers (header routes).
    cohorts: tuple[tuple[str, float], ...] = ()
    workers: int = 1
    worker_mode: Literal["processes", "pods"] = "processes"
    prediction_field: str | None = None
    target_rps: float | None = None
    max_users: int = DEFAULT_MAX_USERS
    prediction_path: str = "/predict"
    prediction_share: float | None = None

    def __post_init__(self) -> None:
        def positive_number(name: str, value: object, *, allow_zero: bool = False) -> None:
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and (
                value >= 0 if allow_zero else value > 0)
            if not ok:
                bound = ">= 0" if allow_zero else "> 0"
                raise SpecError(f"load.{name}", f"must be a number {bound}, got {value!r}")

        if isinstance(self.users, bool) or not isinstance(self.users, int) or self.users < 1:
            raise SpecError("load.users", f"must be an integer >= 1, got {self.users!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or not 1 <= self.workers <= MAX_WORKERS:
            raise SpecError("load.workers", f"must be an integer from 1 to {MAX_WORKERS}, got {self.workers!r}")
        if self.workers > self.users:
            raise SpecError("load.workers", f"{self.workers} workers need at least as many users, got "
                                            f"users={self.users}")
        if self.worker_mode not in WORKER_MODES:
            raise SpecError("load.worker_mode", f"must be one of {', '.join(WORKER_MODES)}, got {self.worker_mode!r}")
        positive_number("spawn_rate", self.spawn_rate)
        if self.max_requests is not None and (
            isinstance(self.max_requests, bool) or not isinstance(self.max_requests, int) or self.max_requests < 1
        ):
            raise SpecError("load.requests", f"must be an integer >= 1 or null, got {self.max_requests!r}")
        positive_number("duration_s", self.duration_s)
        positive_number("progress_interval_s", self.progress_interval_s)
        positive_number("wait_s", self.wait_s, allow_zero=True)
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise SpecError("load.path", f"must start with '/', got {self.path!r}")
        if not isinstance(self.version_header, str) or not _HEADER_NAME.match(self.version_header):
            raise SpecError("version_header", f"{self.version_header!r} is not a valid HTTP header name")
        if self.unit not in UNITS:
            raise SpecError("load.unit", f"must be one of {', '.join(UNITS)}, got {self.unit!r}")
        if self.payloads is not None:
            if isinstance(self.payloads, str | bytes) or not isinstance(self.payloads, Sequence) or not self.payloads:
                raise SpecError("load.payloads", "must be a non-empty list of JSON request bodies")
            try:
                json.dumps(list(self.payloads))
            except (TypeError, ValueError) as exc:
                raise SpecError("load.payloads", f"must be JSON-serialisable: {exc}") from None
        if self.prediction_field is not None:
            check_pointer(self.prediction_field, "load.prediction_field")
        if self.locustfile is not None and (not isinstance(self.locustfile, str) or not self.locustfile):
            raise SpecError("load.locustfile", f"must be a path, got {self.locustfile!r}")
        self._check_slow_model_options(positive_number)

    def _check_slow_model_options(self, positive_number: Callable[[str, object], None]) -> None:
        """target_rps/max_users (user sizing) and prediction_path/prediction_share (cheap ratio path)."""
        mu = self.max_users
        if isinstance(mu, bool) or not isinstance(mu, int) or not 1 <= mu <= MAX_USERS_LIMIT:
            raise SpecError("load.max_users", f"must be an integer from 1 to {MAX_USERS_LIMIT}, got {mu!r}")
        if self.target_rps is not None:
            positive_number("target_rps", self.target_rps)
            if mu < self.users:
                raise SpecError("load.max_users", f"must be at least load.users ({self.users}), got {mu}")
            if self.locustfile is not None:
                raise SpecError("load.target_rps", "user sizing drives the built-in locustfile; with your own "
                                                   "locustfile set load.users (or a LoadTestShape) yourself")
            if self.workers > 1 and self.worker_mode == "pods":
                raise SpecError("load.target_rps", "user sizing runs on the local backend's load process; with "
                                                   "worker pods set load.users instead")
        if not isinstance(self.prediction_path, str) or not self.prediction_path.startswith("/"):
            raise SpecError("load.prediction_path", f"must start with '/', got {self.prediction_path!r}")
        share = self.prediction_share
        if share is not None:
            ok = isinstance(share, int | float) and not isinstance(share, bool) and 0.0 < share < 1.0
            if not ok:
                raise SpecError("load.prediction_share", f"must be a number in (0, 1), got {share!r}")
            if self.path.split("?", 1)[0] == self.prediction_path.split("?", 1)[0]:
                raise SpecError("load.prediction_share", f"needs a cheap load.path other than load.prediction_path "
                                                         f"({self.prediction_path}), e.g. /healthz")
            if self.locustfile is not None:
                raise SpecError("load.prediction_share", "the prediction sample is the built-in locustfile's; "
                                                         "your own locustfile chooses its own paths")

    @classmethod
    def from_spec(cls, spec: ExperimentSpec, **overrides: Any) -> LoadPlan:
        """The plan ``spec.load`` describes (``requests`` becomes ``max_requests``), with the spec's
        version header; keyword arguments override single fields."""
        load = spec.load
        values: dict[str, Any] = {
            "users": load.users,
            "spawn_rate": load.spawn_rate,
            "max_requests": load.requests,
            "duration_s": load.duration_s,
            "path": load.path,
            "payloads": load.payloads,
            "version_header": spec.version_header,
            "unit": load.unit,
            "locustfile": load.locustfile,
            "cohorts": tuple((c.label, c.share) for c in load.cohorts),
            "workers": load.workers,
            "prediction_field": load.prediction_field,
            "target_rps": load.target_rps,
            "max_users": load.max_users,
            "prediction_path": load.prediction_path,
            "prediction_share": load.prediction_share,
        }
        return cls.from_dict({**values, **overrides})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (e.g. for the in-cluster load Job's ``--plan``)."""
        out = dataclasses.asdict(self)
        out["payloads"] = list(self.payloads) if self.payloads is not None else None
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LoadPlan:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UsageError(f"unknown load plan field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        values = dict(d)
        if isinstance(values.get("payloads"), list):
            values["payloads"] = tuple(values["payloads"])
        if isinstance(values.get("cohorts"), list | tuple):
            values["cohorts"] = tuple((str(label), float(share)) for label, share in values["cohorts"])
        return cls(**values)


@runtime_checkable
class LoadObserver(Protocol):
    """Watches a running load and may stop it (sequential testing, chaos timelines).

    An observer may also have a ``stop_reason`` attribute (e.g. ``"verdict"``); the run's
    ``stop_reason`` is then that string instead of ``"observer"`` when it asks to stop. An observer
    that keeps its own clock may have a ``load_started(monotonic)`` method: called just before
    ``on_start`` with the ``time.monotonic()`` value of the instant the records' times count from,
    so its clock and the records' agree (the driver notices the start a poll or more later).
    With user sizing (``LoadPlan.target_rps``) an ``on_sizing(step)`` method, if any, gets each
    sizing decision (``_sizing.SizingStep``) as it is taken.
    """

    def on_start(self) -> None:
        """Called once, when Locust has started its users."""
        ...

    def on_progress(self, snapshot: LoadSnapshot, records: Sequence[RequestRecord]) -> bool:
        """Called every ``progress_interval_s`` with every record so far; return True to stop now."""
        ...


__all__ = ["LoadObserver", "LoadPlan"]

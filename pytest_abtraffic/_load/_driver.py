"""Run Locust in a subprocess and collect what it recorded.

Locust is never imported here: ``import locust`` monkey-patches the importing process with gevent,
which inside pytest turns threads into greenlets and can freeze the run (load-and-stats-facts.md).
The locust process appends one JSON line per request to a records file (see ``_protocol``); this
side tails that file, enforces the budget and the duration, asks the observer whether to stop, and
always leaves no process behind (locust runs in its own session; the whole group is killed when it
does not exit in time).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from .._errors import LoadError
from .._proc import tail
from . import _protocol as proto
from ._plan import LoadObserver, LoadPlan
from ._results import LoadResult, LoadSnapshot, RequestRecord, sorted_predictions
from ._sizing import Sizer

POLL_INTERVAL_S = 0.05
# Locust writes its reports on SIGTERM within a fraction of a second; past this the group is killed.
STOP_GRACE_S = 3.0
# From launch to Locust starting its users (import + start-up, ~0.5-2 s here).
STARTUP_TIMEOUT_S = 60.0
STDERR_TAIL_BYTES = 64 * 1024
RUN_TIME_MARGIN_S = 2
STATS_BASENAME = "locust_stats"  # Locust appends ".json"
MASTER_PORT = 5557  # Locust's default --master-bind-port
ENV_MASTER_PORT = "ABTRAFFIC_MASTER_PORT"  # another port, for running a master and workers on one host
# Worker pods start one by one (image pull, proxy): the master waits for all of them first.
POD_STARTUP_TIMEOUT_S = 300.0

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent


def locustfile_path() -> Path:
    """The built-in locustfile (a FastHttpUser posting JSON payloads, recording the served version)."""
    return Path(__file__).resolve().parent / "locustfile.py"


class _RecordsTail:
    """Incremental reader of the records file (complete lines only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[bytes] | None = None
        self._rest = b""
        self.parsed = proto.ParsedLines(rows=[])
        self.records: list[RequestRecord] = []

    def poll(self) -> list[RequestRecord]:
        if self._fh is None:
            try:
                self._fh = open(self.path, "rb")  # noqa: SIM115 - closed in close()
            except FileNotFoundError:
                return []
        chunk = self._fh.read()
        if not chunk:
            return []
        data = self._rest + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            self._rest = data
            return []
        self._rest = data[cut + 1:]
        lines = data[:cut].decode("utf-8", errors="replace").splitlines()
        new = [RequestRecord(*row) for row in proto.iter_rows(lines, self.parsed)]
        self.records.extend(new)
        return new

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class _Counters:
    """Running totals for snapshots, updated per new record (not recomputed)."""

    def __init__(self) -> None:
        self.requests = 0
        self.failures = 0
        self.counts: dict[str, int] = {}

    def add(self, records: list[RequestRecord]) -> None:
        for r in records:
            self.requests += 1
            if r.ok:
                self.counts[r.version] = self.counts.get(r.version, 0) + 1
            else:
                self.failures += 1

    def snapshot(self, elapsed_s: float) -> LoadSnapshot:
        return LoadSnapshot(elapsed_s=elapsed_s, requests=self.requests, counts=dict(self.counts),
                            failures=self.failures, rps=self.requests / elapsed_s if elapsed_s > 0 else 0.0)


def _check_target(target_url: str, argv: list[str]) -> None:
    parts = urlsplit(target_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoadError(
            f"cannot send load to {target_url!r}: the target must be an http:// or https:// URL with a host\n"
            f"command: {shlex.join(argv)}"
        )


def _resolve_locustfile(plan: LoadPlan) -> Path:
    if plan.locustfile is None:
        return locustfile_path()
    path = Path(plan.locustfile).expanduser().resolve()
    if not path.exists():
        raise LoadError(f"locustfile {plan.locustfile!r} does not exist (resolved to {path})")
    return path


def _child_env(plan: LoadPlan, records: Path, payloads: Path | None) -> dict[str, str]:
    # LOCUST_* variables from the caller's environment would override nothing we pass on the
    # command line but could add options (processes, autostart); start from a clean slate.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOCUST_", "ABTRAFFIC_"))}
    env[proto.ENV_RECORDS] = str(records)
    env[proto.ENV_VERSION_HEADER] = plan.version_header
    env[proto.ENV_PATH] = plan.path
    env[proto.ENV_WAIT_S] = repr(float(plan.wait_s))
    env[proto.ENV_PARENT_PID] = str(os.getpid())
    if plan.max_requests is not None and plan.workers == 1:
        # With several workers each would count only its own requests: the driver enforces the budget.
        env[proto.ENV_MAX_REQUESTS] = str(plan.max_requests)
    if plan.workers > 1 and plan.worker_mode == "processes":
        env[proto.ENV_PROCESSES] = str(plan.workers)
        env[proto.ENV_EPOCH_FILE] = str(records.with_name("epoch"))
    if plan.connection_close:
        env[proto.ENV_CONNECTION_CLOSE] = "1"
    if payloads is not None:
        env[proto.ENV_PAYLOADS] = str(payloads)
    if plan.prediction_field is not None:
        env[proto.ENV_PREDICTION_FIELD] = plan.prediction_field
    if plan.cohorts:
        env[proto.ENV_COHORTS] = json.dumps([list(c) for c in plan.cohorts])
    if plan.target_rps is not None:
        env[proto.ENV_USERS_FILE] = str(records.with_name("users"))
    if plan.prediction_share is not None:
        env[proto.ENV_PREDICTION_SHARE] = repr(float(plan.prediction_share))
        env[proto.ENV_PREDICTION_PATH] = plan.prediction_path
    # The locust process imports pytest_abtraffic._load.locust_support: make sure it finds this copy.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def worker_command(locustfile: Path, master: str) -> list[str]:
    """A Locust worker of a master at ``host:port`` (the cluster backends' worker pods)."""
    host, _, port = master.rpartition(":")
    if not host or not port.isdigit():
        raise LoadError(f"the Locust master address must be HOST:PORT, got {master!r}")
    return [sys.executable, "-m", "locust", "-f", str(locustfile), "--worker", "--master-host", host,
            "--master-port", port, "--loglevel", "WARNING"]


def _run_time_s(plan: LoadPlan) -> int:
    # The driver ends the run at duration_s itself (from Locust's test_start, to the poll interval).
    # -t is only a backstop for an orphaned locust: it takes whole seconds, and its timer can fire
    # ~0.5 s early (gevent's cached loop time is stale after the start-up imports).
    return math.ceil(plan.duration_s) + RUN_TIME_MARGIN_S


def build_command(target_url: str | None, plan: LoadPlan, locustfile: Path, workdir: Path) -> list[str]:
    """The locust command line (exposed for error messages and the in-cluster entry). Without a
    target (a warm start), the host and the run time come through the gate file instead."""
    target = ["-H", target_url, "-t", f"{_run_time_s(plan)}s"] if target_url is not None else []
    return [
        sys.executable, "-m", "locust",
        "-f", str(locustfile),
        "--headless",
        "-u", str(plan.users),
        "-r", f"{plan.spawn_rate:g}",
        *target,
        "--json-file", str(workdir / STATS_BASENAME),
        "--exit-code-on-error", "0",
        "--only-summary",
        "--loglevel", "WARNING",
        *_distributed_args(plan),
    ]


def _distributed_args(plan: LoadPlan) -> list[str]:
    if plan.workers <= 1:
        return []
    if plan.worker_mode == "pods":
        # The master of N worker pods: Locust starts the users once they are all connected.
        port = os.environ.get(ENV_MASTER_PORT) or str(MASTER_PORT)
        return ["--master", "--expect-workers", str(plan.workers), "--master-bind-port", port]
    # Locust's distributed mode in one command: a master and N forked workers (Locust >= 2.19).
    return ["--processes", str(plan.workers)]


def _read_tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - STDERR_TAIL_BYTES))
            return tail(fh.read().decode("utf-8", errors="replace"))
    except OSError:
        return ""


def _read_locust_stats(workdir: Path, exit_code: int | None) -> dict[str, Any] | None:
    path = workdir / f"{STATS_BASENAME}.json"
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(entries, list):
        return None
    keep = ("name", "method", "num_requests", "num_failures", "min_response_time", "max_response_time",
            "total_response_time", "start_time", "last_request_timestamp")
    slim = []
    for e in entries:
        if isinstance(e, dict):
            item = {k: e.get(k) for k in keep}
            n = e.get("num_requests") or 0
            item["avg_response_time"] = (e.get("total_response_time") or 0.0) / n if n else 0.0
            slim.append(item)
    return {"entries": slim, "exit_code": exit_code}


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _stop_process(proc: subprocess.Popen[bytes], *, term: bool, grace_s: float) -> None:
    """Ask locust to stop (SIGTERM: it still writes its reports), then kill its whole group."""
    if proc.poll() is None:
        if term:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)
    # Whatever the locustfile started in locust's session goes too.
    _kill_group(proc.pid)


def _launch_key(plan: LoadPlan) -> LoadPlan:
    """The plan without what a warm process learns at the gate (limits) or never needs (the poll)."""
    return dataclasses.replace(plan, duration_s=1.0, max_requests=None, progress_interval_s=1.0)


class WarmLocust:
    """A locust process started before its target is ready, held in Locust's ``init`` event.

    Importing and initialising Locust takes about as long as deploying the local backend; started
    first, it overlaps the deploy. ``run_locust(..., warm=...)`` opens the gate when the plan it
    runs launches the same way (``_launch_key``), else closes this one and starts afresh. Whoever
    holds it calls ``close()`` (idempotent) if it is never used; the process also quits at the gate
    when its parent is gone.
    """

    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        self.key = _launch_key(plan)
        self.workdir = Path(tempfile.mkdtemp(prefix="abtraffic-load-"))
        self.gate = self.workdir / "gate.json"
        self.used = False
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            run = _Run(None, self.key, None, self.workdir, None)
            run.env[proto.ENV_GATE_FILE] = str(self.gate)
            run.launch()
        except BaseException:
            self.close()
            raise
        self.run = run
        self.proc = run.proc

    def accepts(self, plan: LoadPlan, worker_of: str | None) -> bool:
        return (not self.used and worker_of is None and plan.workers == 1 and _launch_key(plan) == self.key
                and self.proc is not None and self.proc.poll() is None)

    def close(self) -> None:
        if self.proc is not None and not self.used:
            _stop_process(self.proc, term=True, grace_s=STOP_GRACE_S)
        if not self.used:
            shutil.rmtree(self.workdir, ignore_errors=True)


class _Run:
    def __init__(self, target_url: str | None, plan: LoadPlan, observer: LoadObserver | None, workdir: Path,
                 timeout_s: float | None, worker_of: str | None = None) -> None:
        pods = plan.workers > 1 and plan.worker_mode == "pods"
        #: The master of worker pods records nothing itself (requests fire on the workers).
        self.master = pods and worker_of is None
        self.worker_of = worker_of
        if worker_of is not None and plan.max_requests is not None:
            # Each worker pod stops at its share; the master quits when the last one has.
            plan = dataclasses.replace(plan, max_requests=max(1, math.ceil(plan.max_requests / plan.workers)))
        self.startup_timeout_s = POD_STARTUP_TIMEOUT_S if pods else STARTUP_TIMEOUT_S
        self.plan = plan
        self.observer = observer
        self.workdir = workdir
        self.records_path = workdir / "records.jsonl"
        self.stdout_path = workdir / "locust.stdout"
        self.stderr_path = workdir / "locust.stderr"
        payloads_path: Path | None = None
        if plan.payloads is not None:
            payloads_path = workdir / "payloads.json"
            payloads_path.write_text(json.dumps(list(plan.payloads)), encoding="utf-8")
        self.locustfile = _resolve_locustfile(plan)
        self.argv = (worker_command(self.locustfile, worker_of) if worker_of is not None
                     else build_command(target_url, plan, self.locustfile, workdir))
        if target_url is not None:
            _check_target(target_url, self.argv)
        self.env = _child_env(plan if not self.master else dataclasses.replace(plan, max_requests=None),
                              self.records_path, payloads_path)
        #: User sizing (plan.target_rps): the driver decides, the locustfile follows the users file.
        self.sizer = (Sizer(plan.users, target_rps=plan.target_rps, max_users=plan.max_users, wait_s=plan.wait_s)
                      if plan.target_rps is not None and worker_of is None else None)
        self.users_path = self.records_path.with_name("users")
        self.timeout_s = timeout_s if timeout_s is not None else plan.duration_s + self.startup_timeout_s + 30.0
        self.proc: subprocess.Popen[bytes] | None = None
        self.gate_note = ""

    def describe_command(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(self.env.items()) if k.startswith("ABTRAFFIC_"))
        return f"{env} {shlex.join(self.argv)}{self.gate_note}"

    def error(self, what: str) -> LoadError:
        stderr = _read_tail(self.stderr_path) or _read_tail(self.stdout_path)
        text = f"{what}\ncommand: {self.describe_command()}"
        text += f"\nstderr tail:\n{stderr}" if stderr else "\n(locust wrote nothing to stderr)"
        return LoadError(text)

    def hint(self) -> str:
        if self.plan.locustfile is None:
            return ""
        return " (does the locustfile call pytest_abtraffic._load.locust_support.record_version()?)"

    def launch(self) -> None:
        # Start from an empty records file, also when a workdir is reused.
        self.records_path.write_bytes(b"")
        self.records_path.with_name("epoch").unlink(missing_ok=True)  # distributed mode's shared origin
        if self.sizer is not None:  # (a warm start's process reads the file its launch wrote)
            self._write_users(self.plan.users)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                self.argv, cwd=self.workdir, env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True,
            )

    def open_gate(self, warm: WarmLocust, target_url: str) -> None:
        """Run this plan on ``warm``'s waiting process: same command, this target and these limits."""
        self.argv, self.env, self.proc = warm.run.argv, warm.run.env, warm.proc
        self.gate_note = f" (warm start: the gate gave -H {target_url} -t {_run_time_s(self.plan)}s)"
        _check_target(target_url, self.argv)
        tmp = warm.gate.with_suffix(".tmp")
        tmp.write_text(json.dumps({"host": target_url, "run_time_s": _run_time_s(self.plan),
                                   "max_requests": self.plan.max_requests}), encoding="utf-8")
        tmp.replace(warm.gate)  # atomic: the process never reads half a gate file
        warm.used = True

    def execute(self) -> LoadResult:
        if self.proc is None:
            self.launch()
        assert self.proc is not None
        records_tail = _RecordsTail(self.records_path)
        counters = _Counters()
        proc = self.proc
        launched = time.monotonic()
        started = False
        next_progress = math.inf
        reason: str | None = None
        stop_epoch: float | None = None
        try:
            while True:
                new = records_tail.poll()
                counters.add(new)
                if self.sizer is not None:
                    self.sizer.add(new)
                start_epoch = records_tail.parsed.start_epoch
                now_mono = time.monotonic()
                if start_epoch is not None and not started:
                    started = True
                    if self.observer is not None:
                        align = getattr(self.observer, "load_started", None)
                        if callable(align):
                            # The records count from start_epoch; give the observer that instant.
                            align(now_mono - max(0.0, time.time() - start_epoch))
                        self.observer.on_start()
                    next_progress = now_mono + self.plan.progress_interval_s
                if proc.poll() is not None:
                    break
                elapsed = time.time() - start_epoch if start_epoch is not None else 0.0
                if started and self.sizer is not None and self.sizer.due(elapsed):
                    self._size(elapsed)
                if self.plan.max_requests is not None and counters.requests >= self.plan.max_requests:
                    reason = "budget"
                elif started and elapsed >= self.plan.duration_s:
                    reason = "duration"
                elif self.observer is not None and started and now_mono >= next_progress:
                    next_progress = now_mono + self.plan.progress_interval_s
                    if self.observer.on_progress(counters.snapshot(elapsed), tuple(records_tail.records)):
                        reason = str(getattr(self.observer, "stop_reason", None) or "observer")
                if reason is not None:
                    stop_epoch = time.time()
                    break
                if not started and now_mono - launched > self.startup_timeout_s:
                    raise self.error(f"locust did not start sending within {self.startup_timeout_s:g}s{self.hint()}")
                if now_mono - launched > self.timeout_s:
                    raise self.error(f"locust did not finish within the timeout of {self.timeout_s:g}s")
                time.sleep(POLL_INTERVAL_S)
            # The locust side stops itself at the budget; give it a moment before signalling.
            if reason == "budget" and records_tail.parsed.stop == "budget":
                _stop_process(proc, term=False, grace_s=1.0)
            _stop_process(proc, term=True, grace_s=STOP_GRACE_S)
            counters.add(records_tail.poll())
        finally:
            if self.proc is not None:
                _stop_process(self.proc, term=True, grace_s=STOP_GRACE_S)
            records_tail.close()
        return self.finish(records_tail, reason, stop_epoch)

    def _write_users(self, users: int) -> None:
        # Replaced in one step, so the locustfile never reads half a number.
        tmp = self.users_path.with_name("users.tmp")
        tmp.write_text(str(users), encoding="ascii")
        os.replace(tmp, self.users_path)

    def _size(self, elapsed: float) -> None:
        assert self.sizer is not None
        step = self.sizer.decide(elapsed)
        if step.users != step.users_before:
            self._write_users(step.users)
        report = getattr(self.observer, "on_sizing", None)
        if callable(report):
            report(step)

    def finish(self, records_tail: _RecordsTail, reason: str | None, stop_epoch: float | None) -> LoadResult:
        assert self.proc is not None
        exit_code = self.proc.returncode
        records = tuple(records_tail.records)
        parsed = records_tail.parsed
        if reason is None:
            # Locust exited by itself.
            if exit_code != 0:
                raise self.error(f"locust exited with code {exit_code} after {len(records)} recorded requests")
            if parsed.stop == "budget":
                reason = "budget"
            elif parsed.start_epoch is not None and time.time() - parsed.start_epoch >= self.plan.duration_s - 0.5:
                reason = "duration"
            else:
                reason = "exited"
        if not records and not self.master:
            raise self.error(f"locust exited with code {exit_code} and recorded no requests{self.hint()}")
        start = parsed.start_epoch if parsed.start_epoch is not None else 0.0
        stats = _read_locust_stats(self.workdir, exit_code)
        if self.worker_of is not None or self.master:
            # Record times count from this process's own start: the backend aligns pods by these epochs.
            stats = {**(stats or {}), "start_epoch": start, "role": "worker" if self.worker_of else "master"}
        # Parent-side stop: when it decided; self-stop: when the last request ended.
        last_end = max((r.t + r.latency_ms / 1000.0 for r in records), default=0.0)
        duration = stop_epoch - start if stop_epoch is not None else last_end
        return LoadResult(
            records=records,
            duration_s=max(duration, 0.0),
            stopped_early=reason in ("verdict", "observer"),
            stop_reason=reason,
            locust_stats=stats,
            predictions=sorted_predictions(parsed.predictions),
            sizing=tuple(step.to_json() for step in self.sizer.steps) if self.sizer is not None else (),
        )


def run_locust(
    target_url: str,
    plan: LoadPlan,
    observer: LoadObserver | None = None,
    *,
    workdir: Path | None = None,
    timeout_s: float | None = None,
    worker_of: str | None = None,
    warm: WarmLocust | None = None,
) -> LoadResult:
    """Drive ``plan`` at ``target_url`` with Locust in a subprocess; return every recorded request.

    Raises LoadError (with the command and the stderr tail) when Locust fails to start, dies, or
    records nothing. ``workdir`` keeps the records file, Locust's JSON stats and its output
    (a temporary directory, removed afterwards, when None). ``timeout_s`` bounds the whole call
    (default: the plan's duration plus start-up allowance). No process is left running on return,
    error or KeyboardInterrupt. ``worker_of="host:port"`` runs a Locust worker of that master instead
    (``plan.worker_mode="pods"``): it records its own requests and stops at its share of the budget.
    ``warm``: a :class:`WarmLocust` to run on when it launched the same way; used or not, it is
    closed by the time this returns.
    """
    if warm is not None and not (workdir is None and warm.accepts(plan, worker_of)):
        warm.close()
        warm = None
    own_dir = workdir is None
    if warm is not None:
        wd = warm.workdir
    else:
        wd = Path(tempfile.mkdtemp(prefix="abtraffic-load-")) if workdir is None else Path(workdir).resolve()
        wd.mkdir(parents=True, exist_ok=True)
    try:
        run = _Run(target_url, plan, observer, wd, timeout_s, worker_of)
        if warm is not None:
            run.open_gate(warm, target_url)
        return run.execute()
    finally:
        if warm is not None and not warm.used:
            warm.close()
        if own_dir:
            shutil.rmtree(wd, ignore_errors=True)


def child_environment_preview(plan: LoadPlan) -> Mapping[str, str]:
    """The ABTRAFFIC_* variables a run of ``plan`` sets (for docs and manifests)."""
    env = _child_env(plan, Path("records.jsonl"), Path("payloads.json") if plan.payloads is not None else None)
    return {k: v for k, v in env.items() if k.startswith("ABTRAFFIC_")}


__all__ = ["MASTER_PORT", "build_command", "child_environment_preview", "locustfile_path", "run_locust",
           "worker_command"]

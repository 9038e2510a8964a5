"""Version recording for Locust: import this in a locustfile, never in the pytest process.

Importing it imports ``locust``, which monkey-patches the whole process with gevent, so it is only
ever imported inside the locust subprocess (or an in-cluster load pod). The built-in locustfile
uses it, and so can yours::

    # my_locustfile.py
    from locust import HttpUser, task
    from pytest_abtraffic._load.locust_support import name_by_version, record_version

    record_version()  # every request of every user class is recorded for pytest-abtraffic

    class MyUser(HttpUser):
        @task
        def predict(self):
            with self.client.post("/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]},
                                  catch_response=True) as resp:
                name_by_version(resp, "/predict")  # optional: Locust's own stats per version

``record_version`` hooks Locust's ``request`` event, so it sees requests of any user class
(``HttpUser``, ``FastHttpUser``, or custom clients that fire the event). Outside a pytest-abtraffic
run (no ``ABTRAFFIC_RECORDS_FILE`` in the environment) it does nothing, so the locustfile still
runs under plain ``locust``.

Connection ids: a ``FastHttpUser`` (and an ``HttpUser``) keeps one keep-alive connection per user,
so the per-user id recorded here is also the connection id, unless the server closes connections
or ``Connection: close`` mode is on. A request can name its connection explicitly with
``context={"abtraffic_connection": "..."}`` (the built-in locustfile does so in that mode).
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import time
import weakref
from collections.abc import Callable
from typing import Any

import gevent
from locust import events

from ._protocol import (
    DEFAULT_VERSION_HEADER,
    ENV_EPOCH_FILE,
    ENV_GATE_FILE,
    ENV_MAX_REQUESTS,
    ENV_PARENT_PID,
    ENV_PREDICTION_FIELD,
    ENV_PROCESSES,
    ENV_RECORDS,
    ENV_VERSION_HEADER,
    FLUSH_INTERVAL_S,
    GATE_POLL_S,
    PointerMiss,
    canonical_answer,
    encode_event,
    encode_record,
    parse_pointer,
    resolve_pointer,
)

CONNECTION_CONTEXT_KEY = "abtraffic_connection"
# The cohort (header lines) a request carried, recorded with it (load.cohorts, header routes).
COHORT_CONTEXT_KEY = "abtraffic_cohort"
# The path a request took, recorded with it when the run samples predictions (load.prediction_share).
PATH_CONTEXT_KEY = "abtraffic_path"
MAX_ERROR_CHARS = 200


def response_version(response: Any, header: str | None = None) -> str:
    """The served version named by ``header`` on a Locust response; "" when absent."""
    name = header or os.environ.get(ENV_VERSION_HEADER) or DEFAULT_VERSION_HEADER
    headers = getattr(response, "headers", None)
    if not headers:
        return ""
    try:
        value = headers.get(name)
    except Exception:  # some header containers raise on odd lookups; treat as absent
        return ""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return str(value).strip()


def name_by_version(response: Any, base_name: str, header: str | None = None) -> str:
    """Inside a ``catch_response=True`` block: file the request under ``"{base_name} [{version}]"``
    in Locust's own statistics, so they come out per version. Returns the version."""
    version = response_version(response, header)
    meta = getattr(response, "request_meta", None)
    if isinstance(meta, dict):
        meta["name"] = f"{base_name} [{version}]"
    return version


class _Recorder:
    """Appends one line per request to the records file; flushed every FLUSH_INTERVAL_S."""

    def __init__(self, path: str, header: str, max_requests: int | None,
                 include: Callable[[str, str], bool] | None, parent_pid: int | None = None) -> None:
        self.header = header
        self.parent_pid = parent_pid
        self.max_requests = max_requests
        self.include = include
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the process
        self._buffer: list[str] = []
        self._t0: float | None = None
        self._count = 0
        self.stopping = False
        self._closed = False
        self._environment: Any = None
        self._user_ids: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._user_numbers = itertools.count(1)  # never reused, unlike len() of a weak mapping
        self._flusher: Any = None
        self.epoch_file = os.environ.get(ENV_EPOCH_FILE) if int(os.environ.get(ENV_PROCESSES) or 1) > 1 else None

    # -- Locust event listeners ---------------------------------------------------------
    def on_init(self, environment: Any, **_: Any) -> None:
        self._environment = environment
        gate = os.environ.get(ENV_GATE_FILE)
        if gate:
            self._wait_at_gate(gate, environment)

    def _wait_at_gate(self, gate: str, environment: Any) -> None:
        """Warm start: hold Locust here (before it starts any user) until the driver opens the gate
        with the target and the run's limits; quit if the driver goes away first."""
        while not os.path.exists(gate):
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                os._exit(0)  # nothing started yet: no records, no reports to write
            gevent.sleep(GATE_POLL_S)
        with open(gate, encoding="utf-8") as fh:
            opened = json.load(fh)
        environment.host = str(opened["host"])
        options = getattr(environment, "parsed_options", None)
        if options is not None:
            options.host = environment.host
            options.run_time = int(opened["run_time_s"])
        limit = opened.get("max_requests")
        self.max_requests = int(limit) if limit is not None else None

    def on_test_start(self, environment: Any, **_: Any) -> None:
        self._environment = environment
        if self.epoch_file:
            # After Locust forked (--processes): this process's parent is the Locust master.
            self.parent_pid = os.getppid()
        self._mark_start(time.time())
        if self._flusher is None:
            self._flusher = gevent.spawn(self._flush_loop)

    def on_request(self, request_type: str = "", name: str = "", response_time: float | None = None,
                   response_length: int = 0, response: Any = None, context: Any = None,
                   exception: BaseException | None = None, start_time: float | None = None,
                   url: str | None = None, **_: Any) -> None:
        if self._closed:
            return
        if self.include is not None and not self.include(request_type, url or name):
            return
        latency = float(response_time or 0.0)
        began = start_time if start_time is not None else time.time() - latency / 1000.0
        if self._t0 is None:
            self._mark_start(began)
        status = getattr(response, "status_code", None)
        status = int(status) if isinstance(status, int) else 0
        conn = context.get(CONNECTION_CONTEXT_KEY) if isinstance(context, dict) else None
        if conn is None:
            conn = self._user_id()
        if self.epoch_file:
            conn = f"p{os.getpid()}/{conn}"  # user ids repeat across worker processes
        error = ""
        if exception is not None:
            error = f"{type(exception).__name__}: {exception}"[:MAX_ERROR_CHARS]
        assert self._t0 is not None
        cohort = context.get(COHORT_CONTEXT_KEY, "") if isinstance(context, dict) else ""
        path = context.get(PATH_CONTEXT_KEY, "") if isinstance(context, dict) else ""
        self._buffer.append(encode_record(began - self._t0, response_version(response, self.header), status,
                                          latency, str(conn), error, str(cohort), str(path)))
        self._count += 1
        if self.max_requests is not None and self._count >= self.max_requests and not self.stopping:
            self.stopping = True
            self._buffer.append(encode_event(stop="budget"))
            self.flush()
            gevent.spawn(self._quit)

    def on_quitting(self, **_: Any) -> None:
        # Flush, don't close: on SIGTERM Locust fires ``quitting`` before it stops the users, and
        # requests ending in between are in its stats, so they must be in the records too.
        self.flush()

    # -- internals ----------------------------------------------------------------------
    def _mark_start(self, epoch: float) -> None:
        if self._t0 is not None:
            return
        if self.epoch_file:
            shared = _shared_epoch(self.epoch_file, epoch)
            self._t0 = shared
            if shared != epoch:
                return  # another process of this run wrote the start event
        self._t0 = epoch
        self._buffer.append(encode_event(start=epoch, pid=os.getpid()))
        self.flush()

    def _user_id(self) -> str:
        # Each Locust user runs in its own greenlet: the greenlet identifies the user.
        current = gevent.getcurrent()
        uid = self._user_ids.get(current)
        if uid is None:
            uid = f"u{next(self._user_numbers)}"
            self._user_ids[current] = uid
        return uid

    def _quit(self) -> None:
        runner = getattr(self._environment, "runner", None)
        if runner is not None:
            runner.quit()

    def _flush_loop(self) -> None:
        while not self._closed:
            gevent.sleep(FLUSH_INTERVAL_S)
            self.flush()
            if self.parent_pid is not None and os.getppid() != self.parent_pid and not self.stopping:
                # The driver is gone (killed without cleaning up): don't run on as an orphan.
                self.stopping = True
                self._quit()

    def flush(self) -> None:
        if self._buffer and not self._closed:
            data = "".join(self._buffer)
            self._buffer.clear()
            self._file.write(data)
            self._file.flush()

    def close(self) -> None:
        if self._closed:
            return
        self.flush()
        self._closed = True
        self._file.close()


def _shared_epoch(path: str, mine: float) -> float:
    """The run's common time origin: the first process to get here writes ``mine``; others read it."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            with open(path, encoding="ascii") as fh:
                text = fh.read().strip()
            if text:
                try:
                    return float(text)
                except ValueError:
                    pass  # still being written
            time.sleep(0.01)
        return mine
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(repr(mine))
    return mine


_recorder: _Recorder | None = None


class PredictionNotes:
    """Notes what each version answered to each payload: one ``prediction`` event per distinct
    (payload, version, answer), written with the records (a killed run keeps what was flushed).

    A response body already seen for that payload and version is skipped before any parsing, so a
    deterministic model costs one set lookup per request once every answer is known.
    """

    MAX_SEEN = 200_000  # bounds memory for models whose bodies never repeat (e.g. timestamps)

    def __init__(self, pointer: str) -> None:
        self.tokens = parse_pointer(pointer)
        self._bodies: set[tuple[int, str, bytes]] = set()
        self._answers: set[tuple[int, str, str | None]] = set()

    def note(self, payload: int, version: str, response: Any) -> None:
        status = getattr(response, "status_code", 0)
        if _recorder is None or not isinstance(status, int) or not 200 <= status < 400:
            return
        body = getattr(response, "content", None) or b""
        key = (payload, version, body if isinstance(body, bytes) else str(body).encode())
        if key in self._bodies:
            return
        if len(self._bodies) < self.MAX_SEEN:
            self._bodies.add(key)
        try:
            answer: Any = resolve_pointer(json.loads(key[2]), self.tokens)
            seen: str | None = canonical_answer(answer)
        except (ValueError, PointerMiss):
            answer = seen = None
        if (payload, version, seen) in self._answers:
            return
        if len(self._answers) < self.MAX_SEEN:
            self._answers.add((payload, version, seen))
        _recorder._buffer.append(encode_event(prediction=[payload, version, answer]))


def prediction_notes() -> PredictionNotes | None:
    """The notes for ``$ABTRAFFIC_PREDICTION_FIELD`` (None when it is not set: nothing is parsed)."""
    pointer = os.environ.get(ENV_PREDICTION_FIELD)
    return PredictionNotes(pointer) if pointer is not None and os.environ.get(ENV_RECORDS) else None


def budget_reached() -> bool:
    """True once ``max_requests`` requests were recorded. Locust is then being stopped; a user can
    check this before each request to add nothing more than what is already in flight."""
    return _recorder is not None and _recorder.stopping


def record_version(header: str | None = None, *, include: Callable[[str, str], bool] | None = None) -> bool:
    """Record every request (time, served version, status, latency, connection, error) for
    pytest-abtraffic. Call once at module level in a locustfile; later calls are ignored.

    ``header`` defaults to ``$ABTRAFFIC_VERSION_HEADER`` or ``x-model-version``. ``include``
    (``(request_type, url) -> bool``) limits recording to some requests, e.g. to skip a login call.
    Returns False when not running under pytest-abtraffic (nothing is recorded then).
    """
    global _recorder
    if _recorder is not None:
        return True
    path = os.environ.get(ENV_RECORDS)
    if not path:
        return False
    budget_text = os.environ.get(ENV_MAX_REQUESTS, "")
    max_requests = int(budget_text) if budget_text.strip() else None
    parent_text = os.environ.get(ENV_PARENT_PID, "")
    recorder = _Recorder(path, header or os.environ.get(ENV_VERSION_HEADER) or DEFAULT_VERSION_HEADER,
                         max_requests, include, int(parent_text) if parent_text.strip() else None)
    hooks: list[tuple[Any, Callable[..., None]]] = [
        (events.init, recorder.on_init),
        (events.test_start, recorder.on_test_start),
        (events.request, recorder.on_request),
        (events.quitting, recorder.on_quitting),
    ]
    for hook, listener in hooks:
        hook.add_listener(listener)
    atexit.register(recorder.close)
    _recorder = recorder
    return True


__all__ = ["COHORT_CONTEXT_KEY", "CONNECTION_CONTEXT_KEY", "PATH_CONTEXT_KEY", "PredictionNotes", "budget_reached",
           "name_by_version", "prediction_notes", "record_version", "response_version"]

"""The built-in locustfile: POSTs JSON payloads at the target and records the served version.

Runs only inside the locust subprocess (or an in-cluster load pod); never import it elsewhere,
because importing ``locust`` monkey-patches the process with gevent.

Settings come from the environment (the driver sets them):

- ``ABTRAFFIC_PATH`` (``/predict``), ``ABTRAFFIC_PAYLOADS_FILE`` (a JSON list of request bodies,
  cycled; default: a few iris batches), ``ABTRAFFIC_VERSION_HEADER`` (``x-model-version``),
- ``ABTRAFFIC_CONNECTION_CLOSE=1``: send ``Connection: close`` so every request opens a new
  connection (per-request routing even through per-connection balancers),
- ``ABTRAFFIC_WAIT_S``: pause after each request (default 0: as fast as the target answers),
- ``ABTRAFFIC_COHORTS``: ``[["x-cohort: beta", 0.2], ...]``: that share of requests, drawn at
  random per request, carries those headers, and the record says which cohort it was.
- ``ABTRAFFIC_PREDICTION_FIELD``: a JSON pointer to each response's prediction; each distinct
  (payload index, version, answer) is recorded once (prediction agreement, ``disagreement<=``).
- ``ABTRAFFIC_USERS_FILE`` (user sizing): the user count the driver wants; looked at every 0.1 s.
- ``ABTRAFFIC_PREDICTION_SHARE`` / ``ABTRAFFIC_PREDICTION_PATH`` (prediction sample): that share of
  requests POSTs the payloads to the prediction path, the rest GETs the cheap ``ABTRAFFIC_PATH``;
  every record then names the path it took.

Each ``FastHttpUser`` keeps one keep-alive connection, so the recorded user id is the connection id;
in ``Connection: close`` mode every request gets its own connection id (``u3.17``).
"""

from __future__ import annotations

import itertools
import json
import os
import random
from typing import Any

import gevent
from locust import FastHttpUser, constant, events, task
from locust.runners import WorkerRunner

from pytest_abtraffic._load._protocol import (
    DEFAULT_PATH,
    DEFAULT_PAYLOADS,
    ENV_COHORTS,
    ENV_CONNECTION_CLOSE,
    ENV_PATH,
    ENV_PAYLOADS,
    ENV_PREDICTION_PATH,
    ENV_PREDICTION_SHARE,
    ENV_USERS_FILE,
    ENV_WAIT_S,
    USERS_POLL_S,
)
from pytest_abtraffic._load.locust_support import (
    COHORT_CONTEXT_KEY,
    CONNECTION_CONTEXT_KEY,
    PATH_CONTEXT_KEY,
    budget_reached,
    name_by_version,
    prediction_notes,
    record_version,
)


def _payloads() -> list[str]:
    path = os.environ.get(ENV_PAYLOADS)
    if path:
        with open(path, encoding="utf-8") as fh:
            items = json.load(fh)
        if not isinstance(items, list) or not items:
            raise ValueError(f"{ENV_PAYLOADS}={path}: expected a non-empty JSON list of request bodies")
    else:
        items = list(DEFAULT_PAYLOADS)
    # Encode once: json.dumps per request would cost more than the request bookkeeping.
    return [json.dumps(item, separators=(",", ":")) for item in items]


PATH = os.environ.get(ENV_PATH) or DEFAULT_PATH
BODIES = _payloads()
CONNECTION_CLOSE = os.environ.get(ENV_CONNECTION_CLOSE, "") == "1"
WAIT_S = float(os.environ.get(ENV_WAIT_S) or 0.0)
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}
if CONNECTION_CLOSE:
    HEADERS["Connection"] = "close"


def _cohorts() -> list[tuple[float, str, dict[str, str]]]:
    """(cumulative share, label, headers) per cohort."""
    out, total = [], 0.0
    for label, share in json.loads(os.environ.get(ENV_COHORTS) or "[]"):
        total += float(share)
        headers = dict((n.strip(), v.strip()) for n, _, v in (p.partition(":") for p in str(label).split(";")))
        out.append((total, str(label), {**HEADERS, **headers}))
    return out


COHORTS = _cohorts()
PREDICTIONS = prediction_notes()  # None unless prediction agreement is asked for

# -- slow models (docs/slow-models.md): user sizing and the prediction sample --------------------
PREDICTION_SHARE = float(os.environ.get(ENV_PREDICTION_SHARE) or 0.0)
PREDICTION_PATH = os.environ.get(ENV_PREDICTION_PATH) or DEFAULT_PATH
USERS_FILE = os.environ.get(ENV_USERS_FILE)


def _wanted_users() -> int | None:
    try:
        with open(USERS_FILE or "", encoding="ascii") as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None  # not there yet, or being replaced


def _follow_users_file(environment: Any) -> None:
    """Change the running user count to what the driver wrote (the runner's own ``start``)."""
    applied = _wanted_users()
    while True:
        gevent.sleep(USERS_POLL_S)
        wanted = _wanted_users()
        runner = environment.runner
        if wanted is None or wanted == applied or runner is None or budget_reached():
            continue
        if runner.state not in ("spawning", "running"):
            continue
        applied = wanted
        # start() of a running runner adds or stops users; it blocks while spawning, so not here.
        gevent.spawn(runner.start, wanted, max(float(wanted), 100.0))


def _start_sizing(environment: Any, **_: Any) -> None:
    if not isinstance(environment.runner, WorkerRunner):  # the master (or the only process) decides
        gevent.spawn(_follow_users_file, environment)


if USERS_FILE:
    test_start: Any = events.test_start
    test_start.add_listener(_start_sizing)
# ------------------------------------------------------------------------------------------------

record_version()
_user_numbers = itertools.count(1)


class AbTrafficUser(FastHttpUser):
    """One simulated client with one keep-alive connection (or one connection per request)."""

    wait_time = constant(WAIT_S)

    def on_start(self) -> None:
        number = next(_user_numbers)
        self.uid = f"u{number}"
        self.sent = 0
        # Users start at different payloads so a small list still mixes at any instant.
        start = number % len(BODIES)
        self.payloads = itertools.cycle([*range(start, len(BODIES)), *range(start)])
        self.rng = random.Random(number)  # cohort draws: reproducible per user, independent of timing

    @task
    def predict(self) -> None:
        if budget_reached():
            # Locust is being stopped; start nothing past the budget meanwhile. (StopUser would
            # make Locust log an error for every user while it stops them.)
            gevent.sleep(1.0)
            return
        self.sent += 1
        conn = f"{self.uid}.{self.sent}" if CONNECTION_CLOSE else self.uid
        headers, context = HEADERS, {CONNECTION_CONTEXT_KEY: conn}
        if COHORTS:
            draw = self.rng.random()
            for upto, label, cohort_headers in COHORTS:
                if draw < upto:
                    headers, context = cohort_headers, {**context, COHORT_CONTEXT_KEY: label}
                    break
        path = PATH
        if PREDICTION_SHARE:
            # Prediction sample: one draw per request, a prediction (payloads, POST) or the cheap
            # path (GET, no body); the record names the path.
            path = PREDICTION_PATH if self.rng.random() < PREDICTION_SHARE else PATH
            context = {**context, PATH_CONTEXT_KEY: path}
            if path == PATH:
                with self.client.get(path, headers=headers, catch_response=True, context=context) as resp:
                    name_by_version(resp, path)
                return
        payload = next(self.payloads)
        with self.client.post(path, data=BODIES[payload], headers=headers, catch_response=True,
                              context=context) as resp:
            version = name_by_version(resp, path)
            if PREDICTIONS is not None:
                PREDICTIONS.note(payload, version, resp)

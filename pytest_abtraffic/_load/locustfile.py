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

Each ``FastHttpUser`` keeps one keep-alive connection, so the recorded user id is the connection id;
in ``Connection: close`` mode every request gets its own connection id (``u3.17``).
"""

from __future__ import annotations

import itertools
import json
import os
import random

import gevent
from locust import FastHttpUser, constant, task

from pytest_abtraffic._load._protocol import (
    DEFAULT_PATH,
    DEFAULT_PAYLOADS,
    ENV_COHORTS,
    ENV_CONNECTION_CLOSE,
    ENV_PATH,
    ENV_PAYLOADS,
    ENV_WAIT_S,
)
from pytest_abtraffic._load.locust_support import (
    COHORT_CONTEXT_KEY,
    CONNECTION_CONTEXT_KEY,
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
        payload = next(self.payloads)
        with self.client.post(PATH, data=BODIES[payload], headers=headers, catch_response=True,
                              context=context) as resp:
            version = name_by_version(resp, PATH)
            if PREDICTIONS is not None:
                PREDICTIONS.note(payload, version, resp)

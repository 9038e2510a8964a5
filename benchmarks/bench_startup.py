"""Start-up and teardown around a load run on the local backend: Locust started after the deploy
(cold) against Locust pre-started while the deploy runs (warm, ``LocalBackend.prestart_load``, what
``abtraffic verify`` does). Each round runs both, alternating, with the same fixed 3,000-request
plan; prints the medians of: deploy, deploy-to-first-request, the whole run from a new backend to
its closed state, and the ratios warm/cold. Run it with the machine otherwise idle.

    python benchmarks/bench_startup.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from pytest_abtraffic import LocalBackend, default_spec
from pytest_abtraffic._load import LoadPlan

PLAN = LoadPlan(users=10, max_requests=3000, duration_s=60)


def one(warm: bool) -> dict[str, float]:
    t0 = time.monotonic()
    backend = LocalBackend()
    try:
        if warm:
            backend.prestart_load(PLAN)
        deployment = backend.deploy(default_spec())
        t_deployed = time.monotonic()
        result = deployment.run_load(PLAN)
        t_loaded = time.monotonic()
    finally:
        backend.close()
    t_closed = time.monotonic()
    # The load's own span (first request start to its stop) is the same work in both modes.
    span = result.duration_s
    return {"deploy_s": t_deployed - t0, "to_first_request_s": (t_loaded - t_deployed) - span,
            "teardown_s": t_closed - t_loaded, "total_s": t_closed - t0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    one(False)  # warm the file cache so the first measured round is not the odd one out
    runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
    for _ in range(args.rounds):
        for warm in (False, True):
            runs[warm].append(one(warm))
    med = {warm: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for warm, rs in runs.items()}
    print(f"local backend, 3,000-request load run, median of {args.rounds} alternating rounds")
    print(f"  {'':34s} {'cold':>8s} {'warm':>8s} {'warm/cold':>10s}")
    for key, label in (("deploy_s", "deploy"), ("to_first_request_s", "deploy done -> load running (+stop)"),
                       ("teardown_s", "teardown"), ("total_s", "new backend -> closed")):
        cold, warm = med[False][key], med[True][key]
        print(f"  {label:34s} {cold:7.2f}s {warm:7.2f}s {warm / cold if cold else float('nan'):10.2f}")


if __name__ == "__main__":
    main()

"""Slow models: time to verdict of the split with user sizing vs fixed 10 users, in one run.

Local backend, both versions of the reference model server with 50 ms of added latency on /predict
(``extra_latency_ms``, configuration, not a fault). The same deployment verifies the 50/50 split
twice, with the default judgment (+-2 points at 99.9%, sequential stop): once at the fixed
10 users (the baseline: ~10 / 0.05 s = ~200 requests/s by Little's law), once with
``target_rps`` (user sizing ramps the users while latency and errors stay flat). Also once with
the cheap ratio path (``/healthz``, 5% predictions) at 10 users. Prints wall times, rates, users
reached and the ratios; run it with the machine otherwise idle.

    python benchmarks/bench_slow_models.py [--latency-ms 50] [--target-rps 2000]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

from pytest_abtraffic import LocalBackend, default_spec
from pytest_abtraffic._load import LoadPlan
from pytest_abtraffic._runner import VerifySettings, verify_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--target-rps", type=float, default=2000.0)
    parser.add_argument("--max-users", type=int, default=200)
    args = parser.parse_args()
    spec = default_spec()
    spec = spec.replace(variants=tuple(dataclasses.replace(v, extra_latency_ms=args.latency_ms)
                                       for v in spec.variants))
    base = LoadPlan.from_spec(spec)
    plans = {
        "fixed 10 users": base,
        "sizing": dataclasses.replace(base, target_rps=args.target_rps, max_users=args.max_users),
        "cheap path, 10 users": dataclasses.replace(base, path="/healthz", prediction_share=0.05),
    }
    rows = {}
    backend = LocalBackend()
    try:
        deployment = backend.deploy(spec)
        for name, plan in plans.items():
            lines: list[str] = []
            t0 = time.monotonic()
            result = verify_split(deployment, settings=VerifySettings(), plan=plan, progress=lines.append)
            wall = time.monotonic() - t0
            assert result.ok, f"{name}: a correct split should pass"
            n = len(result.load.records)
            users = result.load.sizing[-1]["users"] if result.load.sizing else plan.users
            warned = any(line.startswith("WARNING") for line in lines)
            rows[name] = (wall, n, n / result.load.duration_s, users, warned)
            for line in lines:
                if "user sizing" in line or line.startswith("WARNING"):
                    print(f"  [{name}] {line}")
    finally:
        backend.close()
    print(f"slow models: 50/50 split, both versions +{args.latency_ms:g} ms on /predict, local backend, one run")
    for name, (wall, n, rps, users, warned) in rows.items():
        print(f"  {name:22s} time to verdict {wall:6.1f} s  {n:7,} requests  {rps:6,.0f} rps  "
              f"{users:4} users{'  (warned)' if warned else ''}")
    fixed, sized, cheap = (rows[k][0] for k in plans)
    # The sequential test's N varies from run to run; the rate ratio does not depend on it.
    print(f"  ratio fixed 10 users / sizing       {fixed / sized:.2f}  (time to verdict; rate "
          f"{rows['sizing'][2] / rows['fixed 10 users'][2]:.2f})")
    print(f"  ratio fixed 10 users / cheap path   {fixed / cheap:.2f}  (time to verdict; rate "
          f"{rows['cheap path, 10 users'][2] / rows['fixed 10 users'][2]:.2f})")


if __name__ == "__main__":
    main()

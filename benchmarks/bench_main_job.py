"""Time to verdict of the main job on the local backend (default experiment + kill:v2 fallback).

Baseline in the same run: the same split verification with early stopping off (the fixed planned
budget). Prints wall times and their ratio; run it with the machine otherwise idle.

    python benchmarks/bench_main_job.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from pytest_abtraffic import LocalBackend, default_spec
from pytest_abtraffic._chaos import parse_scenario
from pytest_abtraffic._runner import VerifySettings, run_scenario, verify_split


def one_run() -> dict[str, float]:
    spec = default_spec()
    t0 = time.monotonic()
    backend = LocalBackend()
    try:
        deployment = backend.deploy(spec)
        t_deployed = time.monotonic()
        sequential = verify_split(deployment, settings=VerifySettings())
        t_split = time.monotonic()
        fallback = run_scenario(deployment, parse_scenario("kill:v2", spec))
        t_fallback = time.monotonic()
        fixed = verify_split(deployment, settings=VerifySettings(early_stop=False))
        t_fixed = time.monotonic()
    finally:
        backend.close()
    assert sequential.ok and fallback.ok and fixed.ok, "the main job should pass on a correct split"
    return {
        "deploy_s": t_deployed - t0,
        "split_sequential_s": t_split - t_deployed,
        "fallback_s": t_fallback - t_split,
        "main_job_s": t_fallback - t0,
        "split_fixed_s": t_fixed - t_fallback,
        "sequential_n": float(len(sequential.load.records)),
        "fixed_n": float(len(fixed.load.records)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run() for _ in range(args.runs)]
    med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    print(f"main job on the local backend, median of {args.runs} runs")
    print(f"  deploy                     {med['deploy_s']:6.1f} s")
    print(f"  split (sequential stop)    {med['split_sequential_s']:6.1f} s  ({med['sequential_n']:,.0f} requests)")
    print(f"  fallback kill:v2           {med['fallback_s']:6.1f} s")
    print(f"  main job total             {med['main_job_s']:6.1f} s")
    print(f"  baseline: split, fixed N   {med['split_fixed_s']:6.1f} s  ({med['fixed_n']:,.0f} requests)")
    print(f"  ratio sequential/fixed     time {med['split_sequential_s'] / med['split_fixed_s']:.2f}, "
          f"requests {med['sequential_n'] / med['fixed_n']:.2f}")


if __name__ == "__main__":
    main()

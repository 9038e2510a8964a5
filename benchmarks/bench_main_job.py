"""Time to verdict of the main job on the local backend (default experiment + kill:v2 fallback).

The main job runs as `abtraffic verify` runs it: split and kill:v2 in one load run
(`_mainjob`), phases that end when decided; also split and fallback in two runs. Baselines in the
same run: the split verification with early stopping off (the fixed planned budget), and the
kill:v2 fallback on its fixed timeline (2 s baseline, 6 s fault, 6 s recovery: the main job
before the phases ended when decided). Also times the main job as `make verify` runs it
(`abtraffic verify --fallback kill:v2 --report-dir ...`, a subprocess). Prints wall times and their
ratios; run it with the machine otherwise idle.

    python benchmarks/bench_main_job.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_abtraffic import LocalBackend, default_spec
from pytest_abtraffic._chaos import parse_scenario
from pytest_abtraffic._mainjob import run_split_then_scenario
from pytest_abtraffic._runner import VerifySettings, run_scenario, verify_split


def one_run() -> dict[str, float]:
    spec = default_spec()
    t0 = time.monotonic()
    backend = LocalBackend()
    try:
        deployment = backend.deploy(spec)
        t_deployed = time.monotonic()
        # The main job as `abtraffic verify --fallback kill:v2` runs it: one load run, adaptive phases.
        split_one, fallback_one = run_split_then_scenario(deployment, parse_scenario("kill:v2", spec))
        t_one = time.monotonic()
        # Split and fallback in two load runs, adaptive phases.
        sequential = verify_split(deployment, settings=VerifySettings())
        t_split = time.monotonic()
        fallback = run_scenario(deployment, parse_scenario("kill:v2", spec))
        t_fallback = time.monotonic()
        # Baselines: the fallback on its fixed timeline (the main job before), and the split at fixed N.
        fixed_fallback = run_scenario(deployment, parse_scenario("kill:v2", spec),
                                      settings=VerifySettings(early_stop=False))
        t_fixed_fallback = time.monotonic()
        fixed = verify_split(deployment, settings=VerifySettings(early_stop=False))
        t_fixed = time.monotonic()
    finally:
        backend.close()
    assert all(r.ok for r in (split_one, fallback_one, sequential, fallback, fixed, fixed_fallback)), \
        "the main job should pass on a correct split"
    deploy = t_deployed - t0
    cli = cli_run()
    return {
        "deploy_s": deploy,
        "main_job_one_run_s": deploy + (t_one - t_deployed),
        "split_sequential_s": t_split - t_one,
        "fallback_s": t_fallback - t_split,
        "fallback_fixed_s": t_fixed_fallback - t_fallback,
        "main_job_two_runs_s": deploy + (t_fallback - t_one),
        "main_job_fixed_timeline_s": deploy + (t_split - t_one) + (t_fixed_fallback - t_fallback),
        "split_fixed_s": t_fixed - t_fixed_fallback,
        "sequential_n": float(len(sequential.load.records)),
        "fixed_n": float(len(fixed.load.records)),
        "fallback_report_one_run_s": fallback_one.duration_s,
        **cli,
    }


def cli_run() -> dict[str, float]:
    """The main job as `make verify` runs it; the fallback report's own duration_s too."""
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(sys.executable).with_name("abtraffic")
        t0 = time.monotonic()
        subprocess.run([str(exe), "verify", "--fallback", "kill:v2", "--report-dir", tmp], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
        wall = time.monotonic() - t0
        report = json.loads((Path(tmp) / "fallback-kill-v2.json").read_text(encoding="utf-8"))
    return {"cli_main_job_s": wall, "cli_fallback_report_s": float(report["duration_s"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run() for _ in range(args.runs)]
    med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    print(f"main job on the local backend, median of {args.runs} runs")
    print(f"  deploy                          {med['deploy_s']:6.1f} s")
    print(f"  split (sequential stop)         {med['split_sequential_s']:6.1f} s  "
          f"({med['sequential_n']:,.0f} requests)")
    print(f"  fallback kill:v2 (phases)       {med['fallback_s']:6.1f} s")
    print(f"  main job, one load run          {med['main_job_one_run_s']:6.1f} s  (fallback report duration_s "
          f"{med['fallback_report_one_run_s']:.1f} s)")
    print(f"  main job, two load runs         {med['main_job_two_runs_s']:6.1f} s")
    print(f"  baseline: fallback, fixed       {med['fallback_fixed_s']:6.1f} s  (2 s + 6 s + 6 s timeline)")
    print(f"  baseline: main job, fixed       {med['main_job_fixed_timeline_s']:6.1f} s  (split + fixed fallback)")
    print(f"  baseline: split, fixed N        {med['split_fixed_s']:6.1f} s  ({med['fixed_n']:,.0f} requests)")
    print(f"  ratio sequential/fixed split    time {med['split_sequential_s'] / med['split_fixed_s']:.2f}, "
          f"requests {med['sequential_n'] / med['fixed_n']:.2f}")
    print(f"  ratio fallback phases/fixed     {med['fallback_s'] / med['fallback_fixed_s']:.2f}")
    print(f"  ratio main job one run/fixed    {med['main_job_one_run_s'] / med['main_job_fixed_timeline_s']:.2f}")
    walls = ", ".join(f"{r['cli_main_job_s']:.1f}" for r in runs)
    print(f"  `abtraffic verify --fallback kill:v2` wall {med['cli_main_job_s']:6.1f} s "
          f"(runs: {walls}); fallback report duration_s "
          f"{med['cli_fallback_report_s']:.1f} s")


if __name__ == "__main__":
    main()

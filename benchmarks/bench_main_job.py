"""Time to verdict of the main job on the local backend (default experiment + kill:v2 fallback).

Baselines in the same run: the split verification with early stopping off (the fixed planned
budget), and the kill:v2 fallback on its fixed timeline (2 s baseline, 6 s fault, 6 s recovery, as
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
        fixed_fallback = run_scenario(deployment, parse_scenario("kill:v2", spec),
                                      settings=VerifySettings(early_stop=False))
        t_fixed_fallback = time.monotonic()
        fixed = verify_split(deployment, settings=VerifySettings(early_stop=False))
        t_fixed = time.monotonic()
    finally:
        backend.close()
    assert sequential.ok and fallback.ok and fixed.ok and fixed_fallback.ok, "the main job should pass"
    cli = cli_run()
    return {
        "deploy_s": t_deployed - t0,
        "split_sequential_s": t_split - t_deployed,
        "fallback_s": t_fallback - t_split,
        "fallback_fixed_s": t_fixed_fallback - t_fallback,
        "main_job_s": t_fallback - t0,
        "main_job_fixed_timeline_s": t_fallback - t0 - (t_fallback - t_split) + (t_fixed_fallback - t_fallback),
        "split_fixed_s": t_fixed - t_fixed_fallback,
        "sequential_n": float(len(sequential.load.records)),
        "fixed_n": float(len(fixed.load.records)),
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
    print(f"  deploy                     {med['deploy_s']:6.1f} s")
    print(f"  split (sequential stop)    {med['split_sequential_s']:6.1f} s  ({med['sequential_n']:,.0f} requests)")
    print(f"  fallback kill:v2 (phases)  {med['fallback_s']:6.1f} s")
    print(f"  main job total             {med['main_job_s']:6.1f} s")
    print(f"  baseline: split, fixed N   {med['split_fixed_s']:6.1f} s  ({med['fixed_n']:,.0f} requests)")
    print(f"  baseline: fallback, fixed  {med['fallback_fixed_s']:6.1f} s  (2 s + 6 s + 6 s timeline)")
    print(f"  ratio sequential/fixed     time {med['split_sequential_s'] / med['split_fixed_s']:.2f}, "
          f"requests {med['sequential_n'] / med['fixed_n']:.2f}")
    print(f"  ratio fallback phases/fixed timeline  {med['fallback_s'] / med['fallback_fixed_s']:.2f}")
    print(f"  ratio main job phases/fixed timeline  {med['main_job_s'] / med['main_job_fixed_timeline_s']:.2f}")
    walls = ", ".join(f"{r['cli_main_job_s']:.1f}" for r in runs)
    print(f"  `abtraffic verify --fallback kill:v2` wall {med['cli_main_job_s']:6.1f} s "
          f"(runs: {walls}); fallback report duration_s "
          f"{med['cli_fallback_report_s']:.1f} s")


if __name__ == "__main__":
    main()

"""Audit a proxy seed for the suite's judged runs (docs/flakiness-budget.md, "Status").

For each split the suite verifies, replay the local proxy's weighted choice from ``Random(seed)``
(the same arithmetic as ``_local/_proxy/_router.Router.pick``), feed the sequential test every ``--step``
requests up to the planned cap, and report: whether it ever says "mismatch", where it first says
"holds", and how many n from there to the cap would fail the fixed check (0 means the verdict is
"holds" and the table passes wherever the peeks fall). Then scan post-recovery windows of a 50/50
stream at the fallback tolerance: fixed windows, and the adaptive recovery phase's (the sequential
test decides from each start; the fixed check judges the decided counts).

    python benchmarks/audit_seed.py [--seed 11] [--step 10]
"""

from __future__ import annotations

import argparse
import random
from bisect import bisect_right

from pytest_abtraffic._stats import SequentialSplitTest, check_split, default_request_budget

# 70/30: the mended starting-point objects (tests/data/mended_starting_point, issue 13) as 700m/300m.
SPLITS = ({"v1": 50, "v2": 50}, {"v1": 90, "v2": 10}, {"v1": 80, "v2": 20}, {"v1": 0.7, "v2": 0.3})


def audit_split(seed: int, weights: dict[str, int], step: int) -> str:
    names = list(weights)
    total = float(sum(weights.values()))
    cum, running = [], 0.0
    for name in names:
        running += weights[name]
        cum.append(running)
    shares = {k: v / total for k, v in weights.items()}
    cap = default_request_budget(shares, power=0.9999)
    rng = random.Random(seed)
    counts = dict.fromkeys(names, 0)
    dense = SequentialSplitTest(shares)
    first_holds, failures_after, mismatch = None, 0, False
    for i in range(1, cap + 1):
        j = bisect_right(cum, rng.random() * total)
        counts[names[min(j, len(names) - 1)]] += 1
        if i % step or i < 100:
            continue
        state = dense.update(counts)
        if state.verdict == "mismatch" or SequentialSplitTest(shares).update(counts).verdict == "mismatch":
            mismatch = True
        if state.verdict == "holds" and first_holds is None:
            first_holds = i
        if first_holds is not None and not check_split(counts, shares).ok:
            failures_after += 1
    return (f"{weights}: cap {cap:,}, mismatch ever: {mismatch}, first holds at {first_holds}, "
            f"fixed-check failures from there to the cap: {failures_after}, at the cap ok: "
            f"{check_split(counts, shares).ok}")


def scan_windows(seed: int, tolerance: float, min_n: int) -> str:
    rng = random.Random(seed)
    prefix = [0]
    for _ in range(90_000):
        prefix.append(prefix[-1] + (1 if rng.random() * 100 < 50 else 0))
    bad = total = bad_large = 0
    for start in range(0, 60_000, 250):
        for n in range(2_000, 30_001, 500):
            v1 = prefix[start + n] - prefix[start]
            total += 1
            if not check_split({"v1": v1, "v2": n - v1}, {"v1": 0.5, "v2": 0.5}, tolerance=tolerance).ok:
                bad += 1
                bad_large += n >= min_n
    return (f"post-recovery windows at tolerance {tolerance}: {bad} of {total} fail, "
            f"{bad_large} of them with n >= {min_n:,}")


def scan_sequential_windows(seed: int, tolerance: float, step: int, last_start: int = 60_000,
                            power: float = 0.9999) -> str:
    """The adaptive recovery phase: from each window start, feed the sequential test every ``step``
    picks until it decides (or the cap), then judge the decided counts with the fixed check, as
    ``evaluate_fallback`` does with the phase's decision."""
    shares = {"v1": 0.5, "v2": 0.5}
    cap = default_request_budget(shares, tolerance=tolerance, confidence=0.999, power=power)
    rng = random.Random(seed)
    picks = [rng.random() * 100 < 50 for _ in range(last_start + cap + 1)]
    starts = failed = mismatches = capped = 0
    stops: list[int] = []
    for start in range(0, last_start, 250):
        starts += 1
        test = SequentialSplitTest(shares, alpha=0.001, tolerance=tolerance, confidence=0.999)
        v1 = n = 0
        while True:
            for pick in picks[start + n:start + n + step]:
                v1 += pick
            n += step
            state = test.update({"v1": v1, "v2": n - v1})
            if state.decided or n >= cap:
                break
        stops.append(n)
        capped += not state.decided
        mismatches += state.verdict == "mismatch"
        ok = check_split({"v1": v1, "v2": n - v1}, shares, tolerance=tolerance, confidence=0.999, alpha=0.001).ok
        failed += not ok
    stops.sort()
    return (f"adaptive post-recovery windows at tolerance {tolerance} (looks every {step}): {starts} starts, "
            f"{failed} fail the fixed check on the decided counts, {mismatches} mismatch, {capped} reach the cap "
            f"{cap:,}; stop n median {stops[len(stops) // 2]:,}, max {stops[-1]:,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--step", type=int, default=10)
    args = parser.parse_args()
    for weights in SPLITS:
        print(audit_split(args.seed, weights, args.step))
    print(scan_windows(args.seed, 0.05, 5_000))
    for tolerance in (0.05, 0.08):
        for step in (50, 200):
            print(scan_sequential_windows(args.seed, tolerance, step))


if __name__ == "__main__":
    main()

"""How many requests does the anytime-valid sequential test need, compared with a fixed-N test?

Run: ``python benchmarks/bench_sequential.py [--runs 1000] [--seed 2024] [--step 100]``

Each run draws traffic in batches of ``--step`` requests and updates a SequentialSplitTest after
every batch, stopping at the first verdict.  The fixed-N test always spends its planned N:
``default_request_budget`` for a correct split (so the tolerance check passes with power 0.99),
``plan_sample_size(p0, p1=...)`` for a 10% -> 12% mismatch (power 0.99 at alpha 0.001).  The ratio
is median sequential requests / fixed N.  Standard library only; seeded; well under a minute.
"""

from __future__ import annotations

import argparse
import bisect
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pytest_abtraffic._stats import (  # after the path tweak: works from a source checkout
    DEFAULT_CONCENTRATION,
    SequentialSplitTest,
    check_split,
    default_request_budget,
    normalize_weights,
    plan_sample_size,
)


class BinomialSampler:
    """Exact Binomial(n, p) draws by inverting a cached CDF table (one uniform + a bisection)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._tables: dict[tuple[int, float], list[float]] = {}

    def _table(self, n: int, p: float) -> list[float]:
        key = (n, p)
        table = self._tables.get(key)
        if table is None:
            # pmf by the ratio recurrence from the mode outwards, so nothing underflows for large n
            mode = int((n + 1) * p)
            pmf = [0.0] * (n + 1)
            pmf[mode] = 1.0
            odds = p / (1.0 - p)
            for i in range(mode, n):
                pmf[i + 1] = pmf[i] * (n - i) / (i + 1) * odds
            for i in range(mode, 0, -1):
                pmf[i - 1] = pmf[i] * i / (n - i + 1) / odds
            total = sum(pmf)
            table, acc = [], 0.0
            for value in pmf:
                acc += value / total
                table.append(acc)
            table[-1] = 1.0
            self._tables[key] = table
        return table

    def draw(self, n: int, p: float) -> int:
        if n == 0 or p <= 0.0:
            return 0
        if p >= 1.0:
            return n
        return bisect.bisect_right(self._table(n, p), self.rng.random())

    def multinomial(self, n: int, probs: Sequence[float]) -> list[int]:
        """Conditional binomials: exact for any number of cells."""
        out, left, rest = [], n, 1.0
        for p in probs[:-1]:
            x = self.draw(left, min(1.0, p / rest)) if rest > 0 else 0
            out.append(x)
            left -= x
            rest -= p
        out.append(left)
        return out


@dataclass(frozen=True)
class Scenario:
    label: str
    weights: dict[str, float]
    truth: list[float]
    fixed_n: int
    expected: str  # the verdict a correct answer gives


def run_scenario(
    s: Scenario, runs: int, step: int, horizon: int, concentration: float, sampler: BinomialSampler
) -> dict[str, float]:
    names = list(s.weights)
    stops: list[int] = []
    verdicts = {"mismatch": 0, "holds": 0, "undecided": 0}
    for _ in range(runs):
        test = SequentialSplitTest(s.weights, concentration=concentration)
        counts = [0] * len(names)
        state = test.state
        while state.n < horizon:
            for i, x in enumerate(sampler.multinomial(step, s.truth)):
                counts[i] += x
            state = test.update(dict(zip(names, counts, strict=True)))
            if state.decided:
                break
        stops.append(state.n)
        verdicts[state.verdict] += 1
    # the fixed-N test on fresh draws of its planned N, for its decision rate
    fixed_right = 0
    for _ in range(runs):
        observed = dict(zip(names, sampler.multinomial(s.fixed_n, s.truth), strict=True))
        ok = check_split(observed, s.weights).ok
        fixed_right += ok == (s.expected == "holds")
    median = statistics.median(stops)
    return {
        "median": median,
        "p90": statistics.quantiles(stops, n=10)[-1],
        "ratio": median / s.fixed_n,
        "right": verdicts[s.expected] / runs,
        "wrong": verdicts["holds" if s.expected == "mismatch" else "mismatch"] / runs,
        "fixed_right": fixed_right / runs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=1_000, help="simulated load runs per scenario")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--step", type=int, default=100, help="requests between updates")
    parser.add_argument("--horizon", type=int, default=60_000, help="give up after this many requests")
    parser.add_argument("--concentration", type=float, default=DEFAULT_CONCENTRATION)
    args = parser.parse_args(argv)

    half = {"v1": 50.0, "v2": 50.0}
    canary = {"v1": 90.0, "v2": 10.0}
    three = {"v1": 50.0, "v2": 30.0, "v3": 20.0}
    scenarios = [
        Scenario("correct 50/50", half, [0.5, 0.5], default_request_budget(half), "holds"),
        Scenario("correct 90/10", canary, [0.9, 0.1], default_request_budget(canary), "holds"),
        Scenario("correct 50/30/20", three, list(normalize_weights(three).values()),
                 default_request_budget(three), "holds"),
        Scenario("10% configured, 12% served", canary, [0.88, 0.12],
                 plan_sample_size(0.10, p1=0.12, alpha=0.001, power=0.99), "mismatch"),
        Scenario("50% configured, 52% served", half, [0.48, 0.52],
                 plan_sample_size(0.50, p1=0.52, alpha=0.001, power=0.99), "mismatch"),
    ]  # fmt: skip
    sampler = BinomialSampler(random.Random(args.seed))
    print(
        f"sequential vs fixed-N split test: {args.runs} seeded runs each (seed {args.seed}), "
        f"update every {args.step} requests, c = {args.concentration:g}, alpha = 0.001, "
        "tolerance ± 2.0 pp at 99.9%"
    )
    header = (
        f"{'scenario':<28} {'verdict':>8} {'seq. median N':>13} {'seq. p90 N':>10} {'fixed N':>8} "
        f"{'ratio':>6} {'seq. right':>10} {'seq. wrong':>10} {'fixed right':>11}"
    )
    print(header)
    print("-" * len(header))
    started = time.perf_counter()
    for s in scenarios:
        r = run_scenario(s, args.runs, args.step, args.horizon, args.concentration, sampler)
        print(
            f"{s.label:<28} {s.expected:>8} {r['median']:>13,.0f} {r['p90']:>10,.0f} {s.fixed_n:>8,} "
            f"{r['ratio']:>6.2f} {r['right']:>10.1%} {r['wrong']:>10.1%} {r['fixed_right']:>11.1%}"
        )
    print(f"({time.perf_counter() - started:.1f} s)  ratio = sequential median N / fixed N")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

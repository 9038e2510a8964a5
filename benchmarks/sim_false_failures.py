"""Expected false-failure rate of the default test suite's random checks (docs/flakiness-budget.md).

Run: ``.venv/bin/python benchmarks/sim_false_failures.py [--runs 30000] [--seed 20240611] [--quick]``
(about 80 s on two busy cores; ``--quick`` about 35 s; ``--tail-study 150000`` is a separate,
slower run of part 1 only).

Six parts, every number seeded (numpy ``default_rng`` for simulated traffic, ``random.Random``
where the code under test uses it):

1. **verify_split** on a correct split, as ``pytest_abtraffic._runner.verify_split`` runs it on the
   local backend: Locust's records arrive at ``rps`` (10 users spawned at 10/s, so a 1 s ramp), the
   driver polls every 50 ms and calls the observer every 0.5 s (``LoadPlan.progress_interval_s``);
   the observer feeds cumulative counts to ``SequentialSplitTest`` and stops the run at the first
   verdict; the driver stops at the planned budget (``default_request_budget``) first if a poll
   sees it (the budget check precedes the observer call, and Locust itself stops at the budget).
   Requests still recorded between the stop decision and Locust's exit (``--tail-s``) are added.
   The final ``check_split`` (SRM p < alpha, or a 99.9% Wilson interval outside +-tolerance)
   decides pass/fail, exactly as ``AbTraffic.verify_split`` raises.  A false failure is a failed
   final check on a correct split.  Also: the ``abtraffic verify --weights v1=70,v2=30 --expect
   v1=80,v2=20`` run that must fail with a "split mismatch" verdict.
2. **Post-recovery split checks** of fallback scenarios (``_fallback.evaluate_fallback``): a
   fixed ``check_split`` at tolerance 0.05 (default) or 0.08 (tests/integration/test_chaos_local.py)
   on the ``n`` requests after recovery.  Exact: summed over the binomial outcomes, no simulation.
3. **Seeded proxy streams**: the local proxy picks backends with ``random.Random(seed)`` and only
   draws while two or more backends are selectable, so a window of ``n`` picks starting at pick
   ``a`` is a fixed slice of a fixed stream.  For the chaos tests (``LocalBackend(seed=11)``) the
   post-recovery window's (a, n) depends on timing; the script scans a range of (a, n) and reports
   the share of slices that would fail and the smallest SRM p-value.  For test_local_backend.py
   (``seed=20240501``, model servers ``MODEL_SEED=7/8``) the counts the tests see are computed
   exactly and compared with their bounds.
4. The exact-binomial bounds (alpha 1e-6) used by the unseeded or order-dependent raw-client tests,
   for the table.
5. Fix A, seeding: with a seeded proxy that starts each judged run at pick 0, every n at which a
   peek could stop the run and every final count after it (plus 2,000 late records, +-2 for
   out-of-order completion) is judged; a seed is "safe" when all of them pass (and the 70/30
   mismatch run always ends with "split mismatch").
6. Fix B, bounds: alpha 1e-6 and twice the planned budget, unseeded (simulation plus the exact
   fixed-check failure probability at the budget and the largest |z| at which "holds" can stop).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from bisect import bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from _local_testkit import binomial_bounds  # noqa: E402  (the integration tests' own bound)

from pytest_abtraffic._stats import (  # noqa: E402
    SequentialSplitTest,
    check_split,
    default_request_budget,
    normalize_weights,
)

POLL_S = 0.05  # _load/_driver.py POLL_INTERVAL_S
PEEK_S = 0.5  # LoadPlan.progress_interval_s default (VerifySettings.progress_interval_s only paces printing)
RAMP_S = 1.0  # 10 users at spawn_rate 10/s
DURATION_S = 120.0  # LoadSettings.duration_s default


# ---------------------------------------------------------------------------------------------
# 1. verify_split on a correct split


@dataclass
class VerifyOutcome:
    runs: int = 0
    holds: int = 0
    mismatch: int = 0
    budget: int = 0
    duration: int = 0
    fail: int = 0
    fail_after_holds: int = 0
    fail_after_mismatch: int = 0
    fail_at_budget: int = 0
    fail_srm: int = 0
    fail_tolerance: int = 0
    mismatch_verdicts: int = 0  # final verdict starts with "split mismatch"
    min_srm_p_after_holds: float = 1.0  # margin: smallest final SRM p-value among runs stopped by "holds"

    @property
    def rate(self) -> float:
        return self.fail / self.runs


def _expected_arrivals(rps: float) -> np.ndarray:
    """Expected records in each 50 ms poll (linear ramp to ``rps`` over RAMP_S) up to DURATION_S."""
    edges = np.arange(0.0, DURATION_S + POLL_S / 2, POLL_S)
    cum = np.where(edges < RAMP_S, rps * edges**2 / (2 * RAMP_S), rps * (edges - RAMP_S / 2))
    return np.diff(cum)


def _poll_totals(lam: np.ndarray, budget: int, rng: np.random.Generator) -> tuple[list[int], bool]:
    """Cumulative recorded requests at each observer call (only calls that see fewer than
    ``budget``), and whether the budget (True) or the duration ends the run without a verdict."""
    totals = np.cumsum(rng.poisson(lam))
    polls_per_peek = round(PEEK_S / POLL_S)
    over = np.flatnonzero(totals >= budget)
    end = int(over[0]) if over.size else len(totals)
    # poll j (0-based) is at (j + 1) * POLL_S; the observer is called on every polls_per_peek-th poll
    peeks = totals[polls_per_peek - 1:end:polls_per_peek].tolist()
    return peeks, bool(over.size)


def simulate_verify(weights: Mapping[str, float], truth: Sequence[float], *, tolerance: float, rps: float,
                    tail_s: float, runs: int, rng: np.random.Generator, confidence: float = 0.999,
                    alpha: float = 0.001, budget: int | None = None) -> VerifyOutcome:
    shares = normalize_weights(weights)
    names = list(shares)
    if len(names) != 2:
        raise ValueError("two variants only (binomial draws)")
    p = float(truth[0])
    if budget is None:
        budget = default_request_budget(shares, tolerance=tolerance, confidence=confidence)
    out = VerifyOutcome()
    lam = _expected_arrivals(rps)
    for _ in range(runs):
        peeks, by_budget = _poll_totals(lam, budget, rng)
        test = SequentialSplitTest(shares, alpha=alpha, tolerance=tolerance, confidence=confidence)
        x = n = 0
        stop = "budget" if by_budget else "duration"
        for total in peeks:
            if total > n:
                x += int(rng.binomial(total - n, p))
                n = total
            if n == 0:
                continue
            state = test.update({names[0]: x, names[1]: n - x})
            if state.decided:
                stop = state.verdict
                break
        if stop in ("holds", "mismatch"):
            extra = int(rng.poisson(rps * rng.uniform(0.0, tail_s)))
            final = min(n + extra, budget)
        elif stop == "budget":
            final = budget
        else:
            final = n
        if final > n:
            x += int(rng.binomial(final - n, p))
            n = final
        result = check_split({names[0]: x, names[1]: n - x}, shares, tolerance=tolerance, confidence=confidence,
                             alpha=alpha)
        out.runs += 1
        setattr(out, stop, getattr(out, stop) + 1)
        out.mismatch_verdicts += result.verdict.startswith("split mismatch")
        if stop == "holds":
            out.min_srm_p_after_holds = min(out.min_srm_p_after_holds, result.srm.p_value)
        if not result.ok:
            out.fail += 1
            out.fail_srm += not result.srm_ok
            out.fail_tolerance += not result.tolerance_ok
            if stop == "holds":
                out.fail_after_holds += 1
            elif stop == "mismatch":
                out.fail_after_mismatch += 1
            else:
                out.fail_at_budget += 1
    return out


def clopper_pearson_upper(k: int, n: int, conf: float = 0.95) -> float:
    """One-sided upper confidence bound for a binomial rate (bisection on the exact tail)."""
    if k >= n:
        return 1.0

    def tail(p: float) -> float:  # P(X <= k | p)
        if n < 200:
            return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))
        return _poisson_tail(k, n, p)

    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if tail(mid) > 1 - conf:
            lo = mid
        else:
            hi = mid
    return hi


def _poisson_tail(k: int, n: int, p: float) -> float:
    # Poisson approximation is what matters here (small rates, large n): P(Poisson(np) <= k)
    lam = n * p
    term = math.exp(-lam)
    total = term
    for i in range(1, k + 1):
        term *= lam / i
        total += term
    return total


def max_z_at_holds(weights: Mapping[str, float], budget: int, *, tolerance: float = 0.02, confidence: float = 0.999,
                   alpha: float = 0.001, step: int = 250) -> tuple[float, int]:
    """Largest |z| of the SRM statistic at counts where a run can stop with "holds" (n <= budget):
    the sequential verdict at a stop depends on that peek's counts only, so scan, for n on a grid,
    the outcomes x around the expected count for which a fresh test says "holds".  A final SRM
    rejection after "holds" needs |z| >= z(1 - alpha/2)."""
    shares = normalize_weights(weights)
    names = list(shares)
    w = shares[names[1]]
    worst, where = 0.0, 0
    for n in range(step, budget + 1, step):
        mean, sd = n * w, math.sqrt(n * w * (1 - w))
        for direction in (1, -1):
            x = round(mean)
            last_holding = None
            while 0 <= x <= n:
                state = SequentialSplitTest(shares, alpha=alpha, tolerance=tolerance,
                                            confidence=confidence).update({names[0]: n - x, names[1]: x})
                if state.verdict != "holds":
                    break
                last_holding = x
                x += direction
            if last_holding is not None:
                z = abs(last_holding - mean) / sd
                if z > worst:
                    worst, where = z, n
    return worst, where


# ---------------------------------------------------------------------------------------------
# 2. post-recovery split check, exact


def _log_pmf(k: int, n: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)


def fixed_check_fail_probability(n: int, weights: Mapping[str, float], *, tolerance: float,
                                 confidence: float = 0.999, alpha: float = 0.001) -> tuple[float, float, float]:
    """Exact P(check_split fails) for a correct two-variant split at n units: (total, SRM part,
    tolerance part); the parts overlap."""
    shares = normalize_weights(weights)
    names = list(shares)
    p = shares[names[0]]
    sd = math.sqrt(n * p * (1 - p))
    lo = max(0, math.floor(n * p - 12 * sd))
    hi = min(n, math.ceil(n * p + 12 * sd))
    total = srm = tol = 0.0
    inside = 0.0
    for x in range(lo, hi + 1):
        pm = math.exp(_log_pmf(x, n, p))
        inside += pm
        r = check_split({names[0]: x, names[1]: n - x}, shares, tolerance=tolerance, confidence=confidence,
                        alpha=alpha)
        if not r.ok:
            total += pm
            srm += pm * (not r.srm_ok)
            tol += pm * (not r.tolerance_ok)
    outside = max(0.0, 1.0 - inside)  # beyond 12 sd: fails, and is negligible
    return total + outside, srm + outside, tol + outside


# ---------------------------------------------------------------------------------------------
# 3. seeded proxy streams


def proxy_stream(seed: int, weights: Mapping[str, float], count: int, skip: int = 0) -> list[int]:
    """Indices the local proxy's Router.pick returns for ``count`` picks (after ``skip`` draws)
    with these raw weights (zero weights are not selectable)."""
    rng = random.Random(seed)
    for _ in range(skip):
        rng.random()
    cum: list[float] = []
    total = 0.0
    for w in weights.values():
        if w > 0:
            total += float(w)
            cum.append(total)
    out = []
    for _ in range(count):
        i = bisect_right(cum, rng.random() * total)
        out.append(i if i < len(cum) else len(cum) - 1)
    return out


def errors_among(seed: int, k: int, rate: float) -> int:
    """Injected errors among the first k /predict requests of a reference server with MODEL_SEED=seed."""
    rng = random.Random(seed)
    return sum(rng.random() < rate for _ in range(k))


def slice_scan(seed: int, a_range: range, n_range: range, *, tolerance: float, alpha: float = 0.001,
               confidence: float = 0.999) -> dict[str, float]:
    """For a 50/50 split served from ``Random(seed)``: every window [a, a+n) in the ranges, judged by
    check_split's two-variant rules (chi-square SRM, Wilson intervals)."""
    length = a_range.stop + n_range.stop + 1
    v2 = np.array(proxy_stream(seed, {"v1": 50.0, "v2": 50.0}, length), dtype=np.int64)
    prefix = np.concatenate([[0], np.cumsum(v2)])
    a = np.arange(a_range.start, a_range.stop, a_range.step)[:, None]
    n = np.arange(n_range.start, n_range.stop, n_range.step)[None, :]
    x = prefix[a + n] - prefix[a]  # v2 count in the window
    stat = (2 * x - n) ** 2 / n  # Pearson chi-square, 2 cells at 50/50
    p_srm = np.vectorize(lambda s: math.erfc(math.sqrt(s / 2.0)))(stat)
    z = statistics_z(confidence)
    share = x / n
    center = (2 * n * share + z * z) / (2 * (n + z * z))
    delta = z / (2 * (n + z * z)) * np.sqrt(4 * n * share * (1 - share) + z * z)
    inside = (center - delta >= 0.5 - tolerance) & (center + delta <= 0.5 + tolerance)  # v2; v1 is symmetric
    fail = (p_srm < alpha) | ~inside
    rows = np.flatnonzero(fail.any(axis=1))
    return {"windows": float(fail.size), "fail_share": float(fail.mean()), "min_p": float(p_srm.min()),
            "max_abs_dev_pp": float(np.abs(share - 0.5).max() * 100),
            "first_fail_a": float(a[rows[0], 0]) if rows.size else math.inf}


def statistics_z(confidence: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2)


# ---------------------------------------------------------------------------------------------
# 5. seeded verify_split: is a seed safe for every possible timing?


@dataclass
class SeedAudit:
    first_stop: int | None  # smallest n at which a peek could stop the run (sequential verdict decided)
    stop_points: int  # how many n could be a stop point (a peek landing there would stop)
    min_srm_p: float  # smallest final-check SRM p-value over every final count that can occur
    all_pass: bool  # every possible final check passes (correct split) / says "split mismatch" (wrong split)


def audit_seed(seed: int, served: Mapping[str, float], expected: Mapping[str, float], *, tolerance: float = 0.02,
               confidence: float = 0.999, alpha: float = 0.001, must_fail: bool = False, slack: int = 2,
               tail: int = 2_000, users: int = 10) -> SeedAudit:
    """A seeded local proxy serves the same picks in every run; timing only decides where the
    observer's peeks and the stop fall.  The run stops at the first peek whose counts give a
    decided sequential verdict, which depends on those counts alone (nothing was decided before),
    so every n with a decided verdict is a possible stop point, and so is the budget.  The final
    check sees the counts at the stop plus up to ``tail`` requests recorded before Locust exits (at
    most budget + users).  Records complete slightly out of pick order, so the second variant's
    count is taken anywhere in prefix +- ``slack``."""
    shares = normalize_weights(expected)
    names = list(shares)
    budget = default_request_budget(shares, tolerance=tolerance, confidence=confidence)
    last = budget + users
    cum = np.concatenate([[0], np.cumsum(proxy_stream(seed, served, last))])
    shifts = range(-slack, slack + 1)

    def counts_at(n: int, shift: int) -> dict[str, int]:
        xs = min(n, max(0, int(cum[n]) + shift))
        return {names[0]: n - xs, names[1]: xs}

    decided = np.zeros(last + 1, dtype=bool)
    for n in range(1, budget + 1):
        decided[n] = any(SequentialSplitTest(shares, alpha=alpha, tolerance=tolerance, confidence=confidence)
                         .update(counts_at(n, shift)).decided for shift in shifts)
    first = int(np.argmax(decided)) if decided.any() else budget
    good = np.ones(last + 1, dtype=bool)  # final check acceptable at n for every shift
    min_p = 1.0
    for n in range(first, last + 1):
        for shift in shifts:
            r = check_split(counts_at(n, shift), shares, tolerance=tolerance, confidence=confidence, alpha=alpha)
            good[n] &= (not r.ok and r.verdict.startswith("split mismatch")) if must_fail else r.ok
            if n >= budget or decided[n]:
                min_p = min(min_p, r.srm.p_value)
    stops = [*np.flatnonzero(decided[: budget + 1]).tolist(), budget]
    bad = np.concatenate([[0], np.cumsum(~good)])  # bad[m] = failing final counts among n < m
    all_pass = True
    for n in stops:
        hi = min(last, n + tail) if n < budget else last
        all_pass &= bool(bad[hi + 1] - bad[n] == 0)
    # (min_p is over the stop points themselves; the windows after them are covered by all_pass)
    return SeedAudit(stops[0], len(stops), min_p, all_pass)


# ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=30_000, help="simulated verify_split runs per configuration")
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--tail-s", type=float, default=0.1,
                        help="records still arriving after the stop decision, in seconds of load (uniform 0..this)")
    parser.add_argument("--quick", action="store_true", help="3,000 runs per configuration (smoke test)")
    parser.add_argument("--tail-study", type=int, default=0, metavar="RUNS",
                        help="only: RUNS verify_split runs per split at 4,000 rps, counting failures caused by the "
                        "records that land after a 'holds' stop (slow: ~1 min per 100,000 runs)")
    args = parser.parse_args(argv)
    if args.tail_study:
        rng = np.random.default_rng(args.seed + 1)
        for label, weights in (("50/50", {"v1": 50.0, "v2": 50.0}), ("90/10", {"v1": 90.0, "v2": 10.0}),
                               ("80/20", {"v1": 80.0, "v2": 20.0})):
            shares = list(normalize_weights(weights).values())
            o = simulate_verify(weights, shares, tolerance=0.02, rps=4000.0, tail_s=args.tail_s,
                                runs=args.tail_study, rng=rng)
            upper = clopper_pearson_upper(o.fail_after_holds, o.runs)
            print(f"{label} at 4,000 rps, tail {args.tail_s:g} s: {o.runs} runs, {o.holds} stopped on holds, "
                  f"{o.fail_after_holds} of them failed the final check "
                  f"({o.fail_after_holds / o.runs:.1e} per run, 95% upper {upper:.1e})")
        return 0
    runs = 3_000 if args.quick else args.runs
    rng = np.random.default_rng(args.seed)
    t_start = time.perf_counter()

    print("== 1. verify_split on correct splits (tolerance 0.02, 99.9%, alpha 0.001, planned budget)")
    configs = [
        ("50/50", {"v1": 50.0, "v2": 50.0}, 1000.0),
        ("50/50", {"v1": 50.0, "v2": 50.0}, 4000.0),
        ("90/10", {"v1": 90.0, "v2": 10.0}, 1000.0),
        ("90/10", {"v1": 90.0, "v2": 10.0}, 4000.0),
        ("80/20", {"v1": 80.0, "v2": 20.0}, 1000.0),
        ("80/20", {"v1": 80.0, "v2": 20.0}, 4000.0),
    ]
    print(f"{'split':6s} {'rps':>5s} {'budget':>6s} {'runs':>6s} {'holds':>7s} {'mismatch':>8s} {'budget':>7s} "
          f"{'P(fail)':>8s} {'95% up':>8s} {'|holds':>6s} {'|mism':>6s} {'|budg':>6s} {'srm':>5s} {'tol':>5s}")
    for label, weights, rps in configs:
        shares = list(normalize_weights(weights).values())
        t0 = time.perf_counter()
        o = simulate_verify(weights, shares, tolerance=0.02, rps=rps, tail_s=args.tail_s, runs=runs, rng=rng)
        budget = default_request_budget(weights)
        print(f"{label:6s} {rps:5.0f} {budget:6d} {o.runs:6d} {o.holds / o.runs:7.4f} {o.mismatch / o.runs:8.5f} "
              f"{o.budget / o.runs:7.4f} {o.rate:8.5f} {clopper_pearson_upper(o.fail, o.runs):8.5f} "
              f"{o.fail_after_holds:6d} {o.fail_after_mismatch:6d} {o.fail_at_budget:6d} {o.fail_srm:5d} "
              f"{o.fail_tolerance:5d}  min SRM p after holds {o.min_srm_p_after_holds:.1e}  "
              f"({time.perf_counter() - t0:.1f} s)")

    from statistics import NormalDist

    z_crit = NormalDist().inv_cdf(1 - 0.001 / 2)
    for label, weights, _ in configs[::2]:
        z, at = max_z_at_holds(weights, default_request_budget(weights))
        print(f"{label}: largest |z| at which a run can stop on 'holds' (n <= budget): {z:.2f} at n={at:,} "
              f"(SRM at alpha 0.001 rejects from |z| = {z_crit:.2f})")

    # The CLI test that must fail: deployed 70/30, expected 80/20.
    o = simulate_verify({"v1": 80.0, "v2": 20.0}, [0.7, 0.3], tolerance=0.02, rps=1000.0, tail_s=args.tail_s,
                        runs=max(1000, runs // 10), rng=rng)
    print(f"cli mismatch 70/30 vs 80/20: {o.runs} runs, stopped on mismatch {o.mismatch}, final check failed "
          f"{o.fail}, verdict 'split mismatch' {o.mismatch_verdicts} (test needs all)")

    print("\n== 2. post-recovery split check, exact P(fail) on a correct 50/50 split (99.9%, alpha 0.001)")
    print(f"{'n':>6s} {'tol':>5s} {'P(fail)':>10s} {'SRM':>10s} {'tolerance':>10s}")
    for tol in (0.05, 0.08):
        for n in (1_100, 1_500, 2_000, 3_000, 5_000, 10_000, 15_000):
            total, srm, tolp = fixed_check_fail_probability(n, {"v1": 50, "v2": 50}, tolerance=tol)
            print(f"{n:6d} {tol:5.2f} {total:10.3e} {srm:10.3e} {tolp:10.3e}")

    print("\n== 3a. seeded post-recovery windows: every slice [a, a+n) of Random(11) at 50/50")
    print("       (test_chaos_local.py uses LocalBackend(seed=11) and tolerance 0.08; 0.05 is the default)")
    for tol in (0.08, 0.05):
        for n_lo, n_hi in ((1_500, 3_000), (3_000, 6_000), (6_000, 12_000), (12_000, 30_000)):
            near = slice_scan(11, range(0, 60_000, 10), range(n_lo, n_hi, 10), tolerance=tol)
            far = slice_scan(11, range(0, 150_000, 20), range(n_lo, n_hi, 20), tolerance=tol)
            print(f"tol {tol:.2f}, n {n_lo:>6,}-{n_hi:>6,}: a < 60,000: failing share {near['fail_share']:.2e} "
                  f"of {near['windows']:,.0f}, min SRM p {near['min_p']:.1e}; a < 150,000: failing share "
                  f"{far['fail_share']:.2e}, first failing a {far['first_fail_a']:,.0f}")

    print("\n== 3b. test_local_backend.py: exact counts from LocalBackend(seed=20240501), MODEL_SEED 7/8")
    seed = 20240501
    v2 = sum(proxy_stream(seed, {"v1": 80, "v2": 20}, 5000))
    lo, hi = binomial_bounds(5000, 0.2, 1e-6)
    print(f"weights 80/20, 5000 picks: v2 = {v2}, bound [{lo}, {hi}] -> {'pass' if lo <= v2 <= hi else 'FAIL'}")
    v2 = sum(proxy_stream(seed, {"v1": 90, "v2": 10}, 3000))
    lo, hi = binomial_bounds(3000, 0.1, 1e-6)
    print(f"weights 90/10, 3000 picks: v2 = {v2}, bound [{lo}, {hi}] -> {'pass' if lo <= v2 <= hi else 'FAIL'}")
    ghost = proxy_stream(seed, {"v1": 1, "v2": 0, "ghost": 1}, 2000)
    lo, hi = binomial_bounds(1000, 0.5, 1e-6)
    first, second = sum(ghost[:1000]), sum(ghost[1000:])
    print(f"ghost 1:1, 2 x 1000 picks: 500s = {first}, {second}, bound [{lo}, {hi}] -> "
          f"{'pass' if lo <= first <= hi and lo <= second <= hi else 'FAIL'}")
    v2 = sum(proxy_stream(seed, {"v1": 50, "v2": 50}, 1000))
    lo, _ = binomial_bounds(1000, 0.5, 1e-6)
    print(f"accrual control 50/50, 1000 picks: v2 = {v2} >= {lo} -> {'pass' if v2 >= lo else 'FAIL'}")
    k = sum(proxy_stream(seed, {"v1": 50, "v2": 50}, 3000))
    failed = errors_among(8, k, 0.2)
    lo, hi = binomial_bounds(3000, 0.1, 1e-6)
    print(f"retries off, 3000 picks: v2 = {k}, injected 500s (MODEL_SEED=8) = {failed}, bound [{lo}, {hi}] -> "
          f"{'pass' if lo <= failed <= hi else 'FAIL'}")
    seed3 = proxy_stream(3, {"v1": 50, "v2": 50}, 61)
    print(f"test_chaos_local pytester (seed 3): first pick {'v1' if seed3[0] == 0 else 'v2'} (v1 needed for the "
          f"inner 500); next 60 picks v2 = {sum(seed3[1:])} (both versions needed)")

    draws = random.Random(20240611)
    u = [draws.random() for _ in range(2040)]
    injected = sum(v < 0.2 for v in u[:2000])
    lo, hi = binomial_bounds(2000, 0.2, 1e-6)
    print(f"test_model_server.py chaos server MODEL_SEED=20240611: 2000 requests at 20% -> {injected} errors, "
          f"bound [{lo}, {hi}] -> {'pass' if lo <= injected <= hi else 'FAIL'}; after 20 more draws "
          f"(error_status knob at rate 1.0) the 20 jitter draws reach {10 + 80 * max(u[2020:2040]):.0f} ms "
          f"(>= 50 needed)")

    print("\n== 4. exact-binomial bounds at alpha 1e-6: P(outside) for a correct rate")
    for n, p in ((5000, 0.2), (3000, 0.1), (1000, 0.5), (3000, 0.01), (2000, 0.25), (2000, 0.2)):
        lo, hi = binomial_bounds(n, p, 1e-6)
        below = sum(math.exp(_log_pmf(i, n, p)) for i in range(0, lo))
        above = sum(math.exp(_log_pmf(i, n, p)) for i in range(hi + 1, n + 1))
        print(f"Bin({n}, {p}): accept [{lo}, {hi}], P(below) {below:.2e}, P(above) {above:.2e}")

    print("\n== 5. seeded local proxy (a fix): each judged run of the suite, every possible stop point")
    runs_of_suite = [
        ("50/50", {"v1": 50.0, "v2": 50.0}, {"v1": 50.0, "v2": 50.0}, False),
        ("90/10", {"v1": 90.0, "v2": 10.0}, {"v1": 90.0, "v2": 10.0}, False),
        ("80/20", {"v1": 80.0, "v2": 20.0}, {"v1": 80.0, "v2": 20.0}, False),
        ("70/30 expected 80/20 (must fail)", {"v1": 70.0, "v2": 30.0}, {"v1": 80.0, "v2": 20.0}, True),
    ]
    for seed in (11, 20240501):
        verdicts = []
        for label, served, expected, must_fail in runs_of_suite:
            a = audit_seed(seed, served, expected, must_fail=must_fail)
            verdicts.append(a.all_pass)
            print(f"seed {seed:>8d} {label:33s}: first possible stop {a.first_stop:>6,}, {a.stop_points:>6,} possible "
                  f"stop points, min SRM p at them {a.min_srm_p:.2e} -> {'safe' if a.all_pass else 'NOT SAFE'}")
        print(f"seed {seed}: {'every run safe at any timing' if all(verdicts) else 'not usable'}")

    print("\n== 6. unseeded alternative (a fix): alpha 1e-6 and twice the planned budget (requests=...)")
    for label, weights, rps in configs[::2]:
        shares = list(normalize_weights(weights).values())
        budget = 2 * default_request_budget(weights)
        o = simulate_verify(weights, shares, tolerance=0.02, rps=rps, tail_s=args.tail_s, runs=runs // 3, rng=rng,
                            alpha=1e-6, budget=budget)
        _, _, tol_at_budget = fixed_check_fail_probability(budget, weights, tolerance=0.02, alpha=1e-6)
        print(f"{label} budget {budget}: {o.runs} runs, holds {o.holds}, mismatch {o.mismatch}, reached budget "
              f"{o.budget}, failed {o.fail}; min SRM p after holds {o.min_srm_p_after_holds:.1e}; "
              f"exact P(fixed check fails at the budget) {tol_at_budget:.1e}")
    o = simulate_verify({"v1": 80.0, "v2": 20.0}, [0.7, 0.3], tolerance=0.02, rps=1000.0, tail_s=args.tail_s,
                        runs=max(1000, runs // 10), rng=rng, alpha=1e-6, budget=2 * default_request_budget(
                            {"v1": 80.0, "v2": 20.0}))
    print(f"cli mismatch at alpha 1e-6: {o.runs} runs, verdict 'split mismatch' {o.mismatch_verdicts}")
    z_crit = NormalDist().inv_cdf(1 - 1e-6 / 2)
    for label, weights, _ in configs[::2]:
        z, at = max_z_at_holds(weights, 2 * default_request_budget(weights), alpha=1e-6, step=500)
        print(f"{label}: largest |z| at which a run can stop on 'holds' (n <= 2 x budget): {z:.2f} at n={at:,} "
              f"(SRM at alpha 1e-6 rejects from |z| = {z_crit:.2f})")
    for n in (2_000, 3_000, 5_000, 10_000):
        total, srm, tolp = fixed_check_fail_probability(n, {"v1": 50, "v2": 50}, tolerance=0.08, alpha=1e-6)
        print(f"post-recovery check at alpha 1e-6, tolerance 0.08, n {n:,}: P(fail) {total:.2e} "
              f"(SRM {srm:.2e}, tolerance {tolp:.2e})")

    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

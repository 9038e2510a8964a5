"""`abtraffic verify` on the local backend for the judgments beyond the ratio (issue 15).

Zero weights ("must get no traffic"), per-version SLOs and candidate vs baseline: exit codes and
the lines that name what failed.  The proxy is seeded (docs/flakiness-budget.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def _verify(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pytest_abtraffic", "verify", "--quiet", "--seed", "11", *args]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=240, check=False)


def _out(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout[-3000:] + proc.stderr[-3000:]


def test_zero_weight_variant_getting_nothing_passes_with_reports(tmp_path: Path) -> None:
    proc = _verify("--weights", "v1=100,v2=0", "--report-dir", "out", cwd=tmp_path)
    assert proc.returncode == 0, _out(proc)
    assert "split [PASS]" in proc.stdout and "zero-weight v2 got no requests" in proc.stdout
    (doc,) = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")]
    assert doc["expected_shares"] == {"v1": 1.0, "v2": 0.0}
    assert doc["split"]["zero_weight_traffic"] == []


def test_asserting_50_50_on_a_100_0_split_fails(tmp_path: Path) -> None:
    proc = _verify("--weights", "v1=100,v2=0", "--expect", "v1=50,v2=50", cwd=tmp_path)
    assert proc.returncode == 1, _out(proc)
    assert "split [FAIL: split]" in proc.stdout and "configured 50.0% ± 2.0 pp" in proc.stdout


def test_zero_weight_variant_that_receives_traffic_fails_naming_it(tmp_path: Path) -> None:
    # deployed 50/50, asserted 100/0: v2 serves about half and is named
    proc = _verify("--weights", "v1=50,v2=50", "--expect", "v1=100,v2=0", cwd=tmp_path)
    assert proc.returncode == 1, _out(proc)
    assert "v2 is configured at weight 0 (must get no traffic) but served" in proc.stdout


def test_all_zero_weights_are_bad_input(tmp_path: Path) -> None:
    proc = _verify("--weights", "v1=0,v2=0", cwd=tmp_path)
    assert proc.returncode == 2 and "all weights are zero" in proc.stderr
    proc = _verify("--expect", "v1=0,v2=0", cwd=tmp_path)
    assert proc.returncode == 2 and "all weights are zero" in proc.stderr


def test_impossible_slo_exits_1_naming_p99_and_the_version(tmp_path: Path) -> None:
    # A limit no server can meet is clear at once; +-5 points on the split keep the run short.
    proc = _verify("--slo", "p99_ms<=0.01", "--tolerance", "0.05", "--report-dir", "out", cwd=tmp_path)
    assert proc.returncode == 1, _out(proc)
    assert "slo violated: v1 p99_ms <= 0.01 ms: violated; observed " in proc.stdout
    assert "v2 p99_ms <= 0.01 ms: violated" in proc.stdout and "slo [FAIL]" in proc.stdout
    assert "split [FAIL: slo]" in proc.stdout  # the heading names what failed: the split itself held
    (doc,) = [json.loads(p.read_text()) for p in (tmp_path / "out").glob("*.json")]
    assert doc["ok"] is False and doc["split"]["ok"] is True
    assert {c["scope"] for c in doc["slo"]["checks"] if c["status"] == "fail"} == {"v1", "v2", "overall"}
    (html,) = (tmp_path / "out").glob("*.html")
    assert 'id="slo"' in html.read_text()


def test_generous_slo_passes(tmp_path: Path) -> None:
    proc = _verify("--slo", "p50_ms<=2000,p99_ms<=5000,error_rate<=0.01", cwd=tmp_path)
    assert proc.returncode == 0, _out(proc)
    assert "slo holds: p50_ms<=2000, p99_ms<=5000, error_rate<=0.01 hold for every version and overall" in proc.stdout


def test_two_healthy_versions_pass_the_error_rate_comparison(tmp_path: Path) -> None:
    proc = _verify("--compare", "baseline=v1,error_rate_delta<=0.01", cwd=tmp_path)
    assert proc.returncode == 0, _out(proc)
    assert "comparison holds: baseline=v1,error_rate_delta<=0.01 for every candidate" in proc.stdout


def test_candidate_slower_by_configuration_fails_the_latency_ratio(tmp_path: Path) -> None:
    spec = tmp_path / "slow.yaml"
    spec.write_text("model: ai-model\nvariants:\n  - {name: v1, weight: 50, reference: true}\n"
                    "  - {name: v2, weight: 50, reference: true, extra_latency_ms: 20}\n")
    # The split is not what this test is about: +-5 points decide it in ~2,000 requests, not ~14,000.
    proc = _verify(str(spec), "--compare", "baseline=v1,latency_p95_ratio<=1.10", "--tolerance", "0.05",
                   cwd=tmp_path)
    assert proc.returncode == 1, _out(proc)
    assert "comparison violated: v2 vs v1 latency_p95_ratio <= 1.1: violated; p95 v2 " in proc.stdout
    line = proc.stdout.split("comparison violated: ", 1)[1].splitlines()[0]
    assert " ms vs v1 " in line and "Mann-Whitney effect size" in line  # both quantiles named


def test_unknown_compare_baseline_is_bad_input(tmp_path: Path) -> None:
    proc = _verify("--compare", "baseline=v9,error_rate_delta<=0.01", cwd=tmp_path)
    assert proc.returncode == 2 and "unknown baseline 'v9'" in proc.stderr


def test_marker_slo_fails_the_test_with_the_slo_error(pytester: pytest.Pytester) -> None:
    """The marker key and the fixture: a violated SLO is a test failure (SloViolationError), not an error."""
    pytester.makepyfile(test_inner=textwrap.dedent("""
        import pytest

        @pytest.mark.abtraffic(slo="p99_ms<=0.01", requests=3000, tolerance=0.05)
        def test_slo(abtraffic):
            abtraffic.verify_split()

        @pytest.mark.abtraffic(requests=3000, tolerance=0.05)
        def test_compare_kwarg(abtraffic):
            abtraffic.verify_split(compare="baseline=v1,error_rate_delta<=0.01", slo="p99_ms<=5000")
    """))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--abtraffic-seed", "11", timeout=180)
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*SloViolationError: slo violated: v1 p99_ms <= 0.01 ms: violated*"])

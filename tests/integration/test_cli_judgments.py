"""`abtraffic verify` on the local backend for the judgments beyond the ratio (issue 15).

Zero weights ("must get no traffic"), per-version SLOs and candidate vs baseline: exit codes and
the lines that name what failed.  The proxy is seeded (docs/flakiness-budget.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


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
    assert "split [FAIL]" in proc.stdout and "configured 50.0% ± 2.0 pp" in proc.stdout


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

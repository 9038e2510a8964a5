"""`abtraffic verify` end to end on the local backend: exit codes and the table naming the mismatch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _verify(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # Seeded proxy: a reproducible stream, audited in docs/flakiness-budget.md.
    argv = [sys.executable, "-m", "pytest_abtraffic", "verify", "--quiet", "--seed", "11", *args]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=240, check=False)


def test_mismatch_exits_1_and_prints_the_table(tmp_path: Path) -> None:
    proc = _verify("--weights", "v1=70,v2=30", "--expect", "v1=80,v2=20", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "split [FAIL: split]" in proc.stdout
    assert "split mismatch: v" in proc.stdout and "configured 20.0% ± 2.0 pp" in proc.stdout
    assert "variant  weight" in proc.stdout


def test_canary_split_exits_0_with_report(tmp_path: Path) -> None:
    proc = _verify("--weights", "v1=90,v2=10", "--report-dir", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "split [PASS]" in proc.stdout
    assert sorted(p.suffix for p in (tmp_path / "out").iterdir()) == [".html", ".json"]

"""``load.workers: N`` on the local backend: Locust's distributed mode in one command
(``locust --processes N``, Locust >= 2.19; the pinned 2.47.0 documents it in ``locust --help``):
a master and N forked workers, every worker's requests recorded, one merged result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_cli_workers_2_gives_one_merged_result_with_both_processes_records(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run([sys.executable, "-m", "pytest_abtraffic._cli", "verify", "--workers", "2", "--users", "4",
                           "--requests", "1200", "--tolerance", "0.1", "--no-early-stop", "--seed", "11", "--quiet",
                           "--report-dir", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (report,) = [p for p in tmp_path.glob("*.json")]
    doc = json.loads(report.read_text())
    records = doc["load"]["records"]
    assert len(records) >= 1200
    processes = {r[4].split("/")[0] for r in records}
    assert len(processes) == 2 and all(p.startswith("p") for p in processes), processes
    # One time origin for both processes: records interleave from the start instead of forming two runs.
    by_process = {p: sorted(r[0] for r in records if r[4].startswith(p + "/")) for p in processes}
    assert all(ts[0] < 2.0 for ts in by_process.values()), {p: ts[0] for p, ts in by_process.items()}
    assert doc["split"]["ok"] is True

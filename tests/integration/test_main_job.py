"""The main job (`make verify`): the split, then kill:v2, in one load run on the local backend.

The split phase is judged on the counts its sequential test decided on, as `verify_split` does;
the fallback on the records from its baseline on (the last second of the split phase), with its
own clock. Both reports are written; the seeded proxy makes the judged streams the audited ones.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("locust") is None, reason="needs locust"),
]

ABTRAFFIC = str(Path(sys.executable).with_name("abtraffic"))


def test_main_job_verifies_the_split_then_the_fallback_in_one_load_run(tmp_path: Path) -> None:
    proc = subprocess.run([ABTRAFFIC, "verify", "--fallback", "kill:v2", "--report-dir", str(tmp_path),
                           "--seed", "11"], capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "split, then fault scenario kill:v2 in the same load run" in proc.stderr
    split = json.loads((tmp_path / "split.json").read_text(encoding="utf-8"))
    fallback = json.loads((tmp_path / "fallback-kill-v2.json").read_text(encoding="utf-8"))
    assert split["ok"] and fallback["ok"]
    assert any("one load run with kill:v2" in n for n in split["notes"])
    # The split is judged on what its sequential test decided on, not on the records of the fault.
    assert split["sequential"]["decided"] and split["sequential"]["verdict"] == "holds"
    assert split["split"]["total"] == split["sequential"]["n"]
    report = fallback["fallback"]
    notes = " | ".join(report["notes"])
    assert "baseline ended" in notes and "fault phase ended" in notes and "recovery phase ended" in notes, notes
    (window,) = fallback["fault_windows"]
    # The scenario's clock starts one second before the switch: that second of the split is its
    # baseline, so the fault starts as soon as the phase rule allows (>= 0.75 s), before the planned 2 s.
    assert 0.75 <= window["start_s"] < 2.0
    assert report["time_to_fallback_s"] is not None and report["time_to_fallback_s"] >= 2.9  # the 3 s fail-fast
    records = fallback["load"]["records"]
    before = [r for r in records if r[0] + r[3] / 1000.0 < window["start_s"]]
    assert len(before) >= 100 and {r[1] for r in before if 200 <= r[2] < 400} == {"v1", "v2"}
    assert min(r[0] for r in records) > -1.0  # only the baseline second of the split, not all of it

"""Terminal summary, live progress line and JUnit properties."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from pytest_abtraffic._report import format_progress, format_summary, junit_properties
from pytest_abtraffic._report._sample import sample_fallback_result
from pytest_abtraffic._result import ExperimentResult


def test_progress_line_format() -> None:
    line = format_progress(12.34, 4210, 842.4, {"v1": 0.502, "v2": 0.498}, "undecided")
    assert line == "  12.3s  4,210 req  842 rps  v1 50.2%  v2 49.8%  verdict: undecided"
    assert "\n" not in line


def test_progress_line_survives_odd_input() -> None:
    line = format_progress(0.0, 0, math.nan, {"": 1.0}, "holds")
    assert line == "   0.0s  0 req  0 rps  (no version) 100.0%  verdict: holds"


def _line(text: str, start: str) -> str:
    found = [line for line in text.splitlines() if line.strip().startswith(start)]
    assert len(found) == 1, (start, text)
    return found[0]


def test_summary_table_for_a_split(split_result: ExperimentResult) -> None:
    text = format_summary([split_result])
    assert text.startswith("canary 90/10 [PASS]")
    header = _line(text, "variant")
    for column in ("weight", "observed", "99.9% interval", "p-value", "p50 ms", "p99 ms", "errors"):
        assert column in header
    assert split_result.split is not None
    failures = split_result.load.failures()
    for row in split_result.split.rows:
        line = _line(text, row.name + " ")
        assert f"{100 * row.weight:.1f}%" in line and f"{100 * row.share:.1f}%" in line
        assert f"[{100 * row.ci_low:.1f}%, {100 * row.ci_high:.1f}%]" in line
        assert row.p_value is not None and f"{row.p_value:.3f}" in line
        errors = sum(failures.get(row.name, {}).values())
        assert line.rstrip().split("  ")[-1].startswith(f"{errors:,}")
        p99 = split_result.load.latency_percentiles(row.name)["p99"]
        assert f"{p99:.1f}" in line or f"{p99:.2f}" in line
    assert "SRM chi2 p = " in text and "sequential test: holds" in text
    assert "fallback" not in text


def test_summary_for_a_fallback_scenario(fallback_result: ExperimentResult) -> None:
    fb = fallback_result.fallback
    assert fb is not None and fb.time_to_fallback_s is not None and fb.time_to_recover_s is not None
    text = format_summary([fallback_result])
    line = _line(text, "fallback kill:v2 [PASS]")
    assert f"time to fallback {fb.time_to_fallback_s:.2f} s" in line
    assert f"time to recover {fb.time_to_recover_s:.2f} s" in line
    assert "504x" in line and f"{100 * fb.error_rate_during_fault:.1f}%" in line
    assert "failed check" not in text


def test_summary_lists_failed_checks_and_separates_experiments(split_result: ExperimentResult) -> None:
    broken = sample_fallback_result(recovers=False)
    text = format_summary([split_result, broken])
    blocks = text.split("\n\n")
    assert len(blocks) == 2 and blocks[1].startswith("fallback:kill:v2 [FAIL: fallback]")
    assert broken.fallback is not None
    failed = [c.name for c in broken.fallback.checks if not c.ok]
    assert failed
    for name in failed:
        assert f"failed check {name}:" in blocks[1]
    assert "time to recover -" in blocks[1]
    assert format_summary([]) == "no A/B traffic experiments ran"


def test_junit_properties_for_a_split(split_result: ExperimentResult) -> None:
    props = junit_properties(replace(split_result, name="canary 90 10"))
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in props)
    names = [k for k, _ in props]
    assert len(names) == len(set(names))
    d = dict(props)
    assert d["abtraffic.canary_90_10.ok"] == "true"
    assert split_result.split is not None
    assert float(d["abtraffic.canary_90_10.p_value"]) == pytest.approx(split_result.split.srm.p_value, rel=1e-5)
    for row in split_result.split.rows:
        assert float(d[f"abtraffic.canary_90_10.share.{row.name}"]) == pytest.approx(row.share, rel=1e-5)
        assert float(d[f"abtraffic.canary_90_10.weight.{row.name}"]) == pytest.approx(row.weight)
        low, high = map(float, d[f"abtraffic.canary_90_10.share_ci.{row.name}"].split(","))
        assert low == pytest.approx(row.ci_low, rel=1e-5) and high == pytest.approx(row.ci_high, rel=1e-5)
    assert "abtraffic.canary_90_10.time_to_fallback_s" not in d


def test_junit_properties_for_a_fallback(fallback_result: ExperimentResult) -> None:
    d = dict(junit_properties(fallback_result))
    fb = fallback_result.fallback
    assert fb is not None and fb.time_to_fallback_s is not None
    prefix = "abtraffic.fallback:kill:v2"
    assert float(d[f"{prefix}.time_to_fallback_s"]) == pytest.approx(fb.time_to_fallback_s, rel=1e-5)
    assert d[f"{prefix}.fallback.ok"] == "true" and d[f"{prefix}.fallback.scenario"] == "kill:v2"
    assert f"{prefix}.p_value" not in d
    broken = dict(junit_properties(sample_fallback_result(recovers=False)))
    assert broken[f"{prefix}.time_to_recover_s"] == "none" and broken[f"{prefix}.ok"] == "false"


def test_heading_names_the_judgments_that_failed() -> None:
    from pytest_abtraffic._report._sample import sample_split_result

    skewed = sample_split_result(skew=0.04)
    assert skewed.failed_parts == ("split",) and skewed.status == "FAIL: split"
    assert format_summary([skewed]).splitlines()[0].split("  ")[0].endswith("[FAIL: split]")
    broken = sample_fallback_result(recovers=False)
    assert broken.status == "FAIL: fallback"
    assert sample_split_result().status == "PASS"

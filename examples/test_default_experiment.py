"""The default experiment: ai-model v1 and v2 at 50/50 on the local backend."""

from __future__ import annotations


def test_split_holds(abtraffic):
    result = abtraffic.verify_split()
    assert result.split is not None and result.split.ok


def test_killing_v2_falls_back_to_v1(abtraffic):
    result = abtraffic.run_scenario("kill:v2")
    assert result.fallback is not None and result.fallback.ok

"""A 90/10 canary: assert the deployed weights, and a canary step made while running."""

from __future__ import annotations

import pytest


@pytest.mark.abtraffic(weights="v1=90,v2=10")
def test_canary_split_holds(abtraffic):
    abtraffic.verify_split()


@pytest.mark.abtraffic(weights="v1=90,v2=10")
def test_canary_step_to_50_50(abtraffic):
    abtraffic.deployment.set_weights({"v1": 50, "v2": 50})
    abtraffic.verify_split(expected={"v1": 50, "v2": 50})

"""Fixtures shared by the unit tests."""

from __future__ import annotations

import pytest

from pytest_abtraffic._report._sample import sample_fallback_result, sample_split_result
from pytest_abtraffic._result import ExperimentResult


@pytest.fixture(scope="session")
def split_result() -> ExperimentResult:
    """A realistic 90/10 split run built from seeded synthetic records (the report tests' input)."""
    return sample_split_result()


@pytest.fixture(scope="session")
def fallback_result() -> ExperimentResult:
    """A realistic kill:v2 run on 50/50, judged by the real fallback evaluation."""
    return sample_fallback_result()

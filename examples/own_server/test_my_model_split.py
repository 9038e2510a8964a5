"""The split between my two model versions holds at 80/20."""

from __future__ import annotations


def test_my_split_holds(abtraffic):
    result = abtraffic.verify_split()
    assert result.split is not None
    assert {row.name for row in result.split.rows} == {"v1", "v2"}

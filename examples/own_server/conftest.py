"""Describe your own model server once; every abtraffic fixture in this directory uses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_abtraffic import ExperimentSpec, Variant

SERVER = str(Path(__file__).with_name("my_model_server.py"))


@pytest.fixture(scope="session")
def abtraffic_base_spec() -> ExperimentSpec:
    command = ("{python}", SERVER, "--port", "{port}")
    return ExperimentSpec(
        model="my-model",
        variants=(
            Variant("v1", weight=80, command=command, env={"MODEL_VERSION": "v1"}, image="my_model_v1:latest"),
            Variant("v2", weight=20, command=command, env={"MODEL_VERSION": "v2"}, image="my_model_v2:latest"),
        ),
    )

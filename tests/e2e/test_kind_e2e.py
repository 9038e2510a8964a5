"""The real thing: kind + Linkerd (pinned), the default experiment split with SMI and with an
HTTPRoute, load from a meshed Locust Job, and the kill-v2 fallback.

Needs Docker, kind, kubectl, the linkerd CLI (and linkerd-smi for SMI) on PATH at the pinned
versions; skipped unless ``pytest --run-e2e tests/e2e`` (see .github/workflows/e2e.yml, which
installs them). Environment knobs: ``ABTRAFFIC_LINKERD_VERSION`` (default edge-25.4.4),
``ABTRAFFIC_REPORT_DIR`` (diagnostics and reports, default reports/e2e), ``ABTRAFFIC_KEEP_CLUSTER=1``.

These tests also confirm what linkerd-facts.md marks "inferred from code": which proxy metric
family counts SMI (ServiceProfile) and HTTPRoute backends, and the fail-fast fallback on kill.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_abtraffic._backend import Backend
from pytest_abtraffic._chaos import parse_scenario
from pytest_abtraffic._cluster import ClusterSettings, make_cluster_backend
from pytest_abtraffic._report import format_experiment, write_html, write_json
from pytest_abtraffic._result import ExperimentResult
from pytest_abtraffic._runner import VerifySettings, run_scenario, verify_split
from pytest_abtraffic._spec import default_spec

pytestmark = pytest.mark.e2e

REPORT_DIR = Path(os.environ.get("ABTRAFFIC_REPORT_DIR", "reports/e2e"))
VERIFY = VerifySettings(duration_s=300.0)


@pytest.fixture(scope="module")
def kind_backend() -> Iterator[Backend]:
    settings = ClusterSettings(
        linkerd_version=os.environ.get("ABTRAFFIC_LINKERD_VERSION", "edge-25.4.4"),
        report_dir=str(REPORT_DIR),
        keep=os.environ.get("ABTRAFFIC_KEEP_CLUSTER") == "1",
    )
    # The session spec is SMI, so linkerd-smi is installed with the cluster; HTTPRoute needs nothing more.
    backend = make_cluster_backend("kind", settings, default_spec(split_api="smi-v1alpha2"))
    try:
        yield backend
    finally:
        backend.close()


def _save(result: ExperimentResult) -> str:
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    write_json(result, str(REPORT_DIR))
    write_html(result, str(REPORT_DIR))
    return format_experiment(result)


def _mesh_check(result: ExperimentResult) -> dict[str, Any]:
    stats = result.load.locust_stats if result.load is not None else None
    check = (stats or {}).get("abtraffic_mesh_check")
    assert check is not None, "the load Job printed no proxy metrics block"
    return dict(check)


@pytest.mark.parametrize(("split_api", "metric_source"), [
    ("smi-v1alpha2", "legacy-endpoint"),  # ServiceProfile path: per-endpoint response_total{dst_service}
    ("httproute", "route-backend"),  # policy path: outbound_http_route_backend_*
])
def test_default_split_holds(kind_backend: Backend, split_api: str, metric_source: str) -> None:
    spec = default_spec(split_api=split_api)
    deployment = kind_backend.deploy(spec)
    try:
        assert deployment.target_url().startswith(f"http://{spec.apex_service}.{deployment.namespace}.svc")
        result = verify_split(deployment, settings=VERIFY, name=f"e2e-{split_api}")
        text = _save(result)
        assert result.split is not None and result.split.ok, text
        # The convergence gate read what the control plane serves (HTTPRoute: `linkerd diagnostics policy`;
        # SMI: the ServiceProfile's dstOverrides) and it matched the declared weights before any sample.
        assert result.weights is not None and result.weights.programmed is not None, text
        assert result.weights.agree and result.weights.converged_after_s is not None, result.weights
        check = _mesh_check(result)
        assert check["ok"], f"mesh cross-check: {check}\n{text}"
        assert check["source"] == metric_source, check
        counters = deployment.mesh_counters()
        assert set(counters) == {"v1", "v2"} and all(c.requests > 0 for c in counters.values()), counters
    except BaseException:
        deployment.save_diagnostics(f"e2e {split_api} failed")  # type: ignore[attr-defined]
        raise
    finally:
        deployment.teardown()


def test_kill_v2_falls_back_to_v1(kind_backend: Backend) -> None:
    spec = default_spec()
    deployment = kind_backend.deploy(spec)
    try:
        result = run_scenario(deployment, parse_scenario("kill:v2", spec), settings=VERIFY, name="e2e-kill-v2")
        text = _save(result)
        assert result.fallback is not None and result.fallback.ok, text
        assert deployment.ready_endpoints("v2") == 1  # restored after the scenario
    except BaseException:
        deployment.save_diagnostics("e2e kill-v2 failed")  # type: ignore[attr-defined]
        raise
    finally:
        deployment.teardown()

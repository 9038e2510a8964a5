"""``--abtraffic-target NS/SVC`` in pytest: the live split is read and verified from the kit's own
namespace; a passing and a failing test session both leave every object outside it untouched."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

UNIT = Path(__file__).resolve().parents[1] / "unit"

CONFTEST = f'''
import sys
sys.path.insert(0, {str(UNIT)!r})
import pytest
import test_target
from pytest_abtraffic._cluster import _existing

FAKE = test_target.cluster(EVERY)
_existing.Kube.from_kubeconfig = classmethod(lambda cls, *a, **k: FAKE)


@pytest.fixture(scope="session")
def fake_cluster():
    return FAKE
'''

TESTS = '''
def test_live_split(abtraffic, fake_cluster):
    assert abtraffic.spec.target_namespace == "staging"
    assert abtraffic.deployment.target_url() == "http://ai-model-service.staging.svc.cluster.local:80"
    abtraffic.verify_split(requests=10_000)


def test_no_write_outside_the_kits_namespace(fake_cluster):
    import test_target

    assert test_target.foreign_writes(fake_cluster) == []
'''


@pytest.mark.parametrize(("every", "outcome"), [(10, {"passed": 2}), (2, {"passed": 1, "failed": 1})])
def test_target_session(pytester: pytest.Pytester, tmp_path: Path, every: int, outcome: dict[str, int]) -> None:
    import sys

    sys.path.insert(0, str(UNIT))
    from test_prereq import write_kubeconfig

    config = write_kubeconfig(tmp_path / "kubeconfig", ["staging-ctx"])
    pytester.makeconftest(CONFTEST.replace("EVERY", str(every)))
    pytester.makepyfile(TESTS)
    result = pytester.runpytest_subprocess("--abtraffic-backend", "existing", "--abtraffic-context", "staging-ctx",
                                           "--abtraffic-kubeconfig", str(config), "--abtraffic-target",
                                           "staging/ai-model-service", "-p", "no:cacheprovider")
    result.assert_outcomes(**outcome)


def test_target_needs_the_existing_backend(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--abtraffic-target", "staging/ai-model-service")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--abtraffic-target reads a live split: it needs --abtraffic-backend=existing*"])

"""The plugin as pytest sees it: options, ini keys, header line, usage errors, markers."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_help_lists_the_option_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*A/B traffic split verification (pytest-abtraffic)*"])
    for option in ("--abtraffic-backend", "--abtraffic-spec", "--abtraffic-kubeconfig", "--abtraffic-context",
                   "--abtraffic-reuse-cluster", "--abtraffic-keep-cluster", "--abtraffic-linkerd-version",
                   "--abtraffic-requests", "--abtraffic-tolerance", "--abtraffic-confidence",
                   "--abtraffic-report-dir", "--abtraffic-allow-chaos", "--abtraffic-seed"):
        result.stdout.fnmatch_lines([f"*{option}*"])
    result.stdout.fnmatch_lines(["*abtraffic_backend*"])  # ini key


def test_header_names_backend_and_versions(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["abtraffic: backend=local, experiment ai-model v1=50 v2=50 (httproute)*"])
    assert result.ret == 0


def test_header_follows_spec_file_and_ini(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", spec="model: fraud\nsplit: {api: smi-v1alpha1}\nvariants:\n"
                      "  - {name: a, weight: 900m, reference: true}\n  - {name: b, weight: 100m, reference: true}\n")
    pytester.makeini("[pytest]\nabtraffic_tolerance = 0.03\n")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--abtraffic-spec", "spec.yaml")
    result.stdout.fnmatch_lines(["abtraffic: backend=local, experiment fraud a=900m b=100m (smi-v1alpha1) "
                                 "[[]spec.yaml[]], tolerance=0.03*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--abtraffic-backend", "minikube"], "*invalid choice*minikube*"),
        (["--abtraffic-tolerance", "abc"], "*--abtraffic-tolerance: expected a number*"),
        (["--abtraffic-tolerance", "2"], "*--abtraffic-tolerance: must be in*"),
        (["--abtraffic-confidence", "0.2"], "*--abtraffic-confidence: must be in*"),
        (["--abtraffic-requests", "-5"], "*--abtraffic-requests: must be >= 1*"),
        (["--abtraffic-requests", "many"], "*--abtraffic-requests: expected a number*"),
        (["--abtraffic-spec", "missing.yaml"], "*--abtraffic-spec: file 'missing.yaml' does not exist*"),
        (["--abtraffic-backend", "existing"], "*needs --abtraffic-context*"),
        (["--abtraffic-context", "prod"], "*apply only to --abtraffic-backend=existing*"),
        (["--abtraffic-keep-cluster"], "*apply only to the kind backend*"),
        (["--abtraffic-linkerd-version", "latest"], "*is not like 'edge-25.4.4'*"),
        (["--abtraffic-seed", "x"], "*--abtraffic-seed: expected a number*"),
    ],
)
def test_bad_options_are_usage_errors(pytester: pytest.Pytester, args: list[str], message: str) -> None:
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_bad_spec_file_is_a_usage_error_naming_the_field(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", spec="split: {api: smi-v1alpha2}\nvariants:\n"
                      "  - {name: v1, weight: 500m, reference: true}\n  - {name: v2, weight: 500m, reference: true}\n")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest("--abtraffic-spec", "spec.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--abtraffic-spec: variants[[]0[]].weight: weight '500m' is a Kubernetes quantity*"])


def test_marker_is_registered_and_validated(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.abtraffic(weights="v1=90,v2=10", split_api="smi-v1alpha1")
        def test_spec_follows_marker(abtraffic_spec):
            assert abtraffic_spec.rendered_weights() == {"v1": "900m", "v2": "100m"}

        @pytest.mark.abtraffic(wieghts="v1=90,v2=10")
        def test_typo(abtraffic_spec):
            pass

        @pytest.mark.abtraffic(weights="v1=90,v3=10")
        def test_unknown_variant(abtraffic_spec):
            pass
        """
    )
    result = pytester.runpytest("--strict-markers", "-p", "no:randomly")
    result.stdout.fnmatch_lines([
        "*test_typo: unknown @pytest.mark.abtraffic option(s) [[]'wieghts'[]]*",
        "*test_unknown_variant: @pytest.mark.abtraffic weights: unknown variant(s) [[]'v3'[]]*",
    ])
    result.assert_outcomes(passed=1, errors=2)


def test_assert_split_fixture_fails_with_a_table(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_counts_match(abtraffic_assert_split):
            abtraffic_assert_split({"v1": 5021, "v2": 4979}, {"v1": 0.5, "v2": 0.5})

        def test_counts_do_not_match(abtraffic_assert_split):
            abtraffic_assert_split({"v1": 7000, "v2": 3000}, {"v1": 0.8, "v2": 0.2})
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*SplitMismatchError*", "*variant*weight*count*share*"])


def test_manifests_with_lint_findings_stop_the_session_before_anything_starts(pytester: pytest.Pytester) -> None:
    from pathlib import Path

    data = Path(__file__).resolve().parents[1] / "data"
    pytester.makefile(".yaml", objects=(data / "starting_point.yaml").read_text())
    pytester.makepyfile("def test_split(abtraffic):\n    raise AssertionError('must not run')\n")
    result = pytester.runpytest("--abtraffic-manifests", "objects.yaml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*abtraffic_manifests: 3 problem(s) found in the objects; nothing was started*",
                                 "*apex Service 'ai-model-service' (spec.service) is not defined*"])


def test_marker_manifests_with_findings_fail_the_test_only(pytester: pytest.Pytester) -> None:
    from pathlib import Path

    data = Path(__file__).resolve().parents[1] / "data"
    pytester.makefile(".yaml", objects=(data / "starting_point.yaml").read_text())
    pytester.makepyfile("""
        import pytest

        @pytest.mark.abtraffic(manifests="objects.yaml")
        def test_split(abtraffic):
            raise AssertionError('must not run')

        def test_other():
            pass
    """)
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*@pytest.mark.abtraffic(manifests=...): 3 problem(s) found*"])
    assert "must not run" not in result.stdout.str()


def test_workers_option_and_marker_reach_the_spec(pytester: pytest.Pytester) -> None:
    pytester.makepyfile('''
import pytest


def test_from_option(abtraffic_spec):
    assert abtraffic_spec.load.workers == 3


@pytest.mark.abtraffic(workers=2)
def test_marker_wins(abtraffic_spec):
    assert abtraffic_spec.load.workers == 2
''')
    result = pytester.runpytest("--abtraffic-workers", "3", "-p", "no:locust")
    result.assert_outcomes(passed=2)
    bad = pytester.runpytest("--abtraffic-workers", "0", "-p", "no:locust")
    assert bad.ret != 0
    assert "--abtraffic-workers: must be in [1, 65)" in bad.stderr.str()

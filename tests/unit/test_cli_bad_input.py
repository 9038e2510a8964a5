"""Bad input matrix: every case is a clear error naming what is wrong, exit code 2, and no side effect."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_abtraffic import _cli, plugin

SPECS = {
    "malformed.yaml": "variants: [\n  {name: v1\n",
    "unknown-key.yaml": "modle: ai-model\n",
    "quantity-v1alpha2.yaml": "split: {api: smi-v1alpha2}\nvariants:\n  - {name: v1, weight: 500m, reference: true}\n"
                              "  - {name: v2, weight: 500m, reference: true}\n",
    "negative.yaml": "variants:\n  - {name: v1, weight: -5, reference: true}\n"
                     "  - {name: v2, weight: 5, reference: true}\n",
    "zero.yaml": "variants:\n  - {name: v1, weight: 0, reference: true}\n  - {name: v2, weight: 0, reference: true}\n",
    "dup.yaml": "variants:\n  - {name: v1, weight: 1, reference: true}\n  - {name: v1, weight: 1, reference: true}\n",
    "bad-port.yaml": "variants:\n  - {name: v1, weight: 1, port: 99999, reference: true}\n"
                     "  - {name: v2, weight: 1, reference: true}\n",
    "no-command.yaml": "variants:\n  - {name: v1, weight: 1, image: a:1}\n  - {name: v2, weight: 1, image: b:1}\n",
    "list.yaml": "- just\n- a list\n",
    "bad-api.yaml": "split: {api: traffic-split}\n",
    "bad-duration.yaml": "load: {duration: forever}\n",
    "bad-scenario.yaml": "scenarios: [7]\n",
    "bad-pointer.yaml": "load: {prediction_field: predictions/label}\n",
    "cheap-path-own-rule.yaml": "variants:\n  - {name: v1, weight: 1, reference: true}\n"
                                "  - {name: v2, weight: 1, reference: true}\n"
                                "routes: [{name: probes, backend: v1, matches: [{path: /healthz}]}]\n"
                                "load: {path: /healthz, prediction_share: 0.1}\n",
}

CASES: list[tuple[str, list[str], str]] = [
    ("no subcommand", [], "required: command"),
    ("unknown subcommand", ["deploy"], "invalid choice: 'deploy'"),
    ("unknown option", ["render", "--split", "x"], "unrecognized arguments"),
    ("unknown split api", ["render", "--split-api", "smi-v1alpha3"], "invalid choice: 'smi-v1alpha3'"),
    ("missing spec file", ["render", "missing.yaml"], "spec: spec file 'missing.yaml' does not exist"),
    ("spec is a directory", ["render", "."], "cannot read spec file"),
    ("malformed yaml", ["render", "malformed.yaml"], "not valid YAML at line"),
    ("unknown spec key", ["render", "unknown-key.yaml"], "modle: unknown key"),
    ("quantity in v1alpha2", ["render", "quantity-v1alpha2.yaml"], "variants[0].weight: weight '500m'"),
    ("quantity via option", ["render", "--split-api", "httproute", "--weights", "v1=500m,v2=500m"],
     "variants[0].weight: weight '500m' is a Kubernetes quantity"),
    ("negative weight", ["render", "negative.yaml"], "variants[0].weight: weight must not be negative"),
    ("zero-sum weights", ["render", "zero.yaml"], "variants: all weights are zero"),
    ("duplicate names", ["render", "dup.yaml"], "variants[1].name: duplicate variant name 'v1'"),
    ("port out of range", ["render", "bad-port.yaml"], "variants[0].port: port 99999 is out of range"),
    ("spec not a mapping", ["render", "list.yaml"], "spec: must be a mapping"),
    ("unknown split api in file", ["render", "bad-api.yaml"], "split.api: unknown split API 'traffic-split'"),
    ("bad duration", ["render", "bad-duration.yaml"], "load.duration: duration 'forever'"),
    ("bad scenario entry", ["render", "bad-scenario.yaml"], "scenarios[0]: must be a mapping"),
    ("malformed weights option", ["render", "--weights", "v1:90"], "--weights: expected NAME=WEIGHT"),
    ("weights for unknown variant", ["render", "--weights", "v1=90,v3=10"], "weights: unknown variant(s) ['v3']"),
    ("missing weight for a variant", ["render", "--weights", "v1=90"], "weights: no weight given for variant(s)"),
    ("non-numeric weight option", ["render", "--weights", "v1=lots,v2=1"], "variants[0].weight: weight 'lots'"),
    ("unknown backend", ["verify", "--backend", "minikube"], "invalid choice: 'minikube'"),
    ("local backend without command", ["verify", "no-command.yaml"], "variants[0].command"),
    ("tolerance not a number", ["verify", "--tolerance", "tight"], "--tolerance: expected a number"),
    ("tolerance out of range", ["verify", "--tolerance", "1.5"], "--tolerance: must be between 0 and 1"),
    ("confidence out of range", ["verify", "--confidence", "0.1"], "--confidence: must be between 0.5 and 1"),
    ("requests zero", ["verify", "--requests", "0"], "--requests: must be at least 1"),
    ("target rps zero", ["verify", "--target-rps", "0"], "--target-rps: must be at least 1"),
    ("users above max_users with sizing", ["verify", "--target-rps", "500", "--users", "500"],
     "load.max_users: must be at least load.users (500)"),
    ("cheap path on its own route rule", ["verify", "cheap-path-own-rule.yaml"],
     "load.path: the cheap path /healthz and the prediction path /predict must be served by the same route rule"),
    ("requests not a number", ["verify", "--requests", "lots"], "--requests: expected a whole number"),
    ("expect unknown variant", ["verify", "--expect", "v1=50,v9=50"], "--expect: unknown variant(s) ['v9']"),
    ("expect malformed", ["verify", "--expect", "v1"], "--expect: expected NAME=WEIGHT"),
    ("prediction field not a pointer", ["verify", "--prediction-field", "predictions"],
     "--prediction-field: a JSON pointer starts with '/'"),
    ("prediction field bad escape", ["verify", "--prediction-field", "/a~2b"], "'~' must be followed by 0 or 1"),
    ("prediction field in the spec", ["verify", "bad-pointer.yaml"], "load.prediction_field: a JSON pointer starts"),
    ("disagreement out of range", ["verify", "--compare", "baseline=v1,disagreement<=1.5"],
     "disagreement must be a fraction in [0, 1)"),
    ("unknown fallback scenario", ["verify", "--fallback", "meteor"], "meteor"),
    ("fallback unknown variant", ["verify", "--fallback", "kill:v7"], "v7"),
    ("existing without context", ["verify", "--backend", "existing"], "needs --context"),
    ("context on local backend", ["verify", "--context", "prod"], "apply only to --backend existing"),
    ("chaos on existing without permission", ["verify", "--backend", "existing", "--context", "c", "--fallback",
                                              "kill"], "add --allow-chaos"),
    ("lint without input", ["lint"], "give at least one YAML path"),
    ("lint missing file", ["lint", "missing.yaml"], "missing.yaml"),
    ("lint malformed yaml", ["lint", "malformed.yaml"], "malformed.yaml"),
    ("plan unknown backend", ["plan", "--backend", "local"], "invalid choice: 'local'"),
    ("plan existing without context", ["plan", "--backend", "existing"], "needs --context"),
    ("sample-size without target", ["sample-size", "--weight", "0.1"], "one of the arguments"),
    ("sample-size weight out of range", ["sample-size", "--weight", "1.2", "--tolerance", "0.02"],
     "--weight: must be between 0 and 1"),
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, text in SPECS.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)

    def no_backend(*args: object, **kwargs: object) -> None:
        raise AssertionError("a backend was created for bad input: side effect before validation")

    monkeypatch.setattr(plugin, "make_backend", no_backend)
    return tmp_path


@pytest.mark.parametrize(("case", "argv", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_a_clear_message(workdir: Path, capsys: pytest.CaptureFixture[str], case: str,
                                                argv: list[str], message: str) -> None:
    before = sorted(p.name for p in workdir.iterdir())
    try:
        code = _cli.main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, f"{case}: exit {code}\nstdout: {out}\nstderr: {err}"
    assert message in err, f"{case}: {message!r} not in stderr:\n{err}"
    assert sorted(p.name for p in workdir.iterdir()) == before, "bad input created files"


def test_the_matrix_is_large_enough() -> None:
    assert len(CASES) >= 30

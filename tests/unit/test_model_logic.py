"""The reference model server's logic, in-process: models, request validation, fault knobs, settings.

``fixtures/`` is put on sys.path so ``ai_model`` imports exactly as the server process does.
Nothing here needs scikit-learn except the optional check that ``train.py`` reproduces the
committed weights.
"""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
if str(FIXTURES) not in sys.path:
    sys.path.insert(0, str(FIXTURES))

from ai_model import MODEL_KINDS, default_kind_for_version, load_model  # noqa: E402
from ai_model.app import MAX_BATCH, RequestError, parse_instances  # noqa: E402
from ai_model.faults import FaultError, Faults, ignored_fault_vars, make_rng  # noqa: E402
from ai_model.model import load_iris, load_weights_document, model_from_dict  # noqa: E402
from ai_model.server import ConfigError, _bind, resolve_settings  # noqa: E402

# Iris rows where v1 (logreg) and v2 (mlp) disagree, found offline by comparing both models
# over the data set. They sit on the versicolor/virginica boundary; the tuple is
# (instance, v1 label, v2 label). The integration tests send the same inputs over HTTP.
DISAGREE = [
    ([5.9, 3.2, 4.8, 1.8], "virginica", "versicolor"),
    ([6.7, 3.0, 5.0, 1.7], "virginica", "versicolor"),
    ([4.9, 2.5, 4.5, 1.7], "versicolor", "virginica"),
    ([6.1, 2.6, 5.6, 1.4], "versicolor", "virginica"),
]
# Clear cases both get right.
AGREE = [
    ([5.1, 3.5, 1.4, 0.2], "setosa"),
    ([5.7, 2.8, 4.1, 1.3], "versicolor"),
    ([6.3, 3.3, 6.0, 2.5], "virginica"),
]


def _accuracy(kind: str) -> float:
    model = load_model(kind)
    rows, targets, _ = load_iris()
    hits = sum(model.predict(x).class_index == t for x, t in zip(rows, targets, strict=True))
    return hits / len(targets)


# -- models -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_accuracy_on_iris_above_0_9(kind: str) -> None:
    acc = _accuracy(kind)
    assert acc > 0.9
    # The pure-Python forward pass reproduces what scikit-learn scored at training time.
    assert acc == pytest.approx(load_weights_document(kind)["training"]["accuracy_all"])


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_holdout_accuracy_recorded_at_training_above_0_9(kind: str) -> None:
    training = load_weights_document(kind)["training"]
    assert training["holdout_accuracy"] > 0.9
    assert training["random_state"] == 0


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_probabilities_match_scikit_learn(kind: str) -> None:
    doc = load_weights_document(kind)
    model = load_model(kind)
    assert len(doc["checks"]) >= 10
    for check in doc["checks"]:
        got = model.predict_proba(check["instance"])
        assert got == pytest.approx(check["probabilities"], abs=1e-9), check["instance"]


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_probabilities_are_a_distribution(kind: str) -> None:
    model = load_model(kind)
    for x in ([0.0] * 4, [1e6, -1e6, 1e6, -1e6], [5.0, 3.0, 4.0, 1.0]):
        proba = model.predict_proba(x)
        assert len(proba) == 3
        assert all(0.0 <= p <= 1.0 and math.isfinite(p) for p in proba)
        assert math.fsum(proba) == pytest.approx(1.0)


def test_the_two_versions_are_different_models() -> None:
    v1, v2 = load_weights_document("logreg"), load_weights_document("mlp")
    assert (v1["kind"], v2["kind"]) == ("logreg", "mlp")
    assert len(v1["layers"]) == 1  # linear
    assert len(v2["layers"]) == 2 and v2["layers"][0]["activation"] == "tanh"  # non-linear
    assert v1["classes"] == v2["classes"] == ["setosa", "versicolor", "virginica"]


@pytest.mark.parametrize(("instance", "v1_label", "v2_label"), DISAGREE)
def test_versions_disagree_near_the_boundary(instance: list[float], v1_label: str, v2_label: str) -> None:
    p1, p2 = load_model("logreg").predict(instance), load_model("mlp").predict(instance)
    assert (p1.label, p2.label) == (v1_label, v2_label)
    # Not a coin flip that float noise could turn over.
    for p in (p1, p2):
        ranked = sorted(p.probabilities, reverse=True)
        assert ranked[0] - ranked[1] > 0.02


@pytest.mark.parametrize(("instance", "label"), AGREE)
def test_versions_agree_on_clear_cases(instance: list[float], label: str) -> None:
    assert load_model("logreg").predict(instance).label == label
    assert load_model("mlp").predict(instance).label == label


def test_default_kind_by_version() -> None:
    assert default_kind_for_version("v1") == "logreg"
    assert default_kind_for_version("v2") == "mlp"
    assert default_kind_for_version("canary") == "logreg"


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown model kind 'forest'"):
        load_model("forest")


def test_malformed_weights_are_refused(tmp_path: Path) -> None:
    doc = load_weights_document("logreg")
    bad_shape = json.loads(json.dumps(doc))
    bad_shape["layers"][0]["weights"][0].append(1.0)
    with pytest.raises(ValueError, match="rows of 4"):
        model_from_dict(bad_shape)
    bad_value = json.loads(json.dumps(doc))
    bad_value["scaler"]["mean"][0] = "x"
    with pytest.raises(ValueError, match="finite numbers"):
        model_from_dict(bad_value)
    missing = {k: v for k, v in doc.items() if k != "layers"}
    with pytest.raises(ValueError, match="malformed"):
        model_from_dict(missing)
    (tmp_path / "logreg.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_model("logreg", weights_dir=tmp_path)


def test_shipped_iris_matches_scikit_learn() -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    iris = datasets.load_iris()
    rows, targets, classes = load_iris()
    assert rows == iris.data.tolist()
    assert targets == iris.target.tolist()
    assert classes == list(iris.target_names)


@pytest.mark.slow
def test_train_script_reproduces_committed_files(tmp_path: Path) -> None:
    sklearn = pytest.importorskip("sklearn")
    recorded = load_weights_document("logreg")["training"]["sklearn_version"]
    if sklearn.__version__ != recorded:
        pytest.skip(f"weights were trained with scikit-learn {recorded}, this is {sklearn.__version__}")
    subprocess.run(
        [sys.executable, str(FIXTURES / "train.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    for rel in ("weights/logreg.json", "weights/mlp.json", "data/iris.json"):
        assert (tmp_path / "ai_model" / rel).read_bytes() == (FIXTURES / "ai_model" / rel).read_bytes(), rel


# -- request validation ------------------------------------------------------------------

FEATURES = load_model("logreg").features


def _body(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def test_parse_instances_accepts_ints_and_floats() -> None:
    assert parse_instances(_body({"instances": [[5, 3.5, 1.4, 0], [1.0, 2.0, 3.0, 4.0]]}), FEATURES) == [
        [5, 3.5, 1.4, 0],
        [1.0, 2.0, 3.0, 4.0],
    ]


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"", 400, "empty"),
        (b"{nope", 400, "not valid JSON"),
        (b"\xff\xfe\x00", 400, "not valid JSON"),
        (b"[" * 100_000, 400, "not valid JSON"),
        (_body([[1, 2, 3, 4]]), 400, "must be a JSON object, got an array"),
        (_body({"inputs": [[1, 2, 3, 4]]}), 400, 'missing field "instances"'),
        (_body({"instances": "1,2,3,4"}), 400, '"instances" must be an array, got a string'),
        (_body({"instances": []}), 400, '"instances" is empty'),
        (_body({"instances": [[1, 2, 3, 4]] * (MAX_BATCH + 1)}), 413, "exceeds the limit of 256"),
        (_body({"instances": [1, 2, 3, 4]}), 400, "instances[0] must be an array of 4 numbers"),
        (_body({"instances": [[1, 2, 3]]}), 400, "instances[0] has 3 features; expected 4"),
        (_body({"instances": [[1, 2, 3, 4], [1, 2, 3, 4, 5]]}), 400, "instances[1] has 5 features"),
        (_body({"instances": [[1, 2, 3, "4"]]}), 400, "instances[0][3] (petal_width_cm) must be a number"),
        (_body({"instances": [[1, 2, True, 4]]}), 400, "got a boolean"),
        (_body({"instances": [[1, None, 3, 4]]}), 400, "got null"),
        (_body({"instances": [[1, [2], 3, 4]]}), 400, "got an array"),
        (b'{"instances": [[1, 2, NaN, 4]]}', 400, "is nan; features must be finite"),
        (b'{"instances": [[1, 2, Infinity, 4]]}', 400, "is inf"),
        (_body({"instances": [[1, 2, 3, 1e300]]}), 400, "within"),
        (b'{"instances": [[1, 2, 3, 1' + b"0" * 5000 + b"]]}", 400, "not valid JSON"),
    ],
)
def test_parse_instances_rejects_with_a_clear_message(body: bytes, status: int, fragment: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_instances(body, FEATURES)
    assert info.value.status == status
    assert fragment in info.value.message


# -- fault knobs --------------------------------------------------------------------------


def test_faults_default_off() -> None:
    assert Faults().as_dict() == {
        "error_rate": 0.0,
        "error_status": 500,
        "latency_ms": 0.0,
        "latency_jitter_ms": 0.0,
        "unready": False,
        "crash_on_next": False,
    }


def test_faults_partial_update_and_reset() -> None:
    faults = Faults()
    faults.update({"error_rate": 0.25, "unready": True})
    faults.update({"latency_ms": 10})
    assert (faults.error_rate, faults.unready, faults.latency_ms, faults.error_status) == (0.25, True, 10.0, 500)
    faults.reset()
    assert faults == Faults()


@pytest.mark.parametrize(
    "change",
    [
        {"error_rate": 1.5},
        {"error_rate": -0.1},
        {"error_rate": "0.5"},
        {"error_rate": True},
        {"error_rate": float("nan")},
        {"error_status": 200},
        {"error_status": 500.0},
        {"error_status": 600},
        {"latency_ms": -1},
        {"latency_ms": 1e9},
        {"latency_jitter_ms": None},
        {"unready": 1},
        {"crash_on_next": "yes"},
        {"colour": "red"},
    ],
)
def test_faults_bad_update_changes_nothing(change: dict[str, Any]) -> None:
    faults = Faults()
    with pytest.raises(FaultError):
        faults.update({"latency_ms": 5.0, **change})
    assert faults == Faults()


def test_faults_from_env() -> None:
    env = {
        "MODEL_ERROR_RATE": "0.2",
        "MODEL_ERROR_STATUS": "503",
        "MODEL_LATENCY_MS": "15",
        "MODEL_LATENCY_JITTER_MS": "5.5",
        "MODEL_UNREADY": "true",
        "MODEL_CRASH_ON_NEXT": "0",
    }
    assert Faults.from_env(env) == Faults(0.2, 503, 15.0, 5.5, True, False)
    assert Faults.from_env({}) == Faults()
    with pytest.raises(FaultError, match="MODEL_ERROR_RATE"):
        Faults.from_env({"MODEL_ERROR_RATE": "lots"})
    with pytest.raises(FaultError, match="MODEL_UNREADY"):
        Faults.from_env({"MODEL_UNREADY": "maybe"})
    with pytest.raises(FaultError, match="MODEL_ERROR_STATUS"):
        Faults.from_env({"MODEL_ERROR_STATUS": "200"})


def test_fault_vars_are_reported_as_ignored_without_the_switch() -> None:
    env = {"MODEL_ERROR_RATE": "1", "MODEL_ADMIN_PORT": "9000"}
    assert ignored_fault_vars(env) == ["MODEL_ERROR_RATE", "MODEL_ADMIN_PORT"]
    assert ignored_fault_vars({**env, "ABTRAFFIC_FAULTS": "1"}) == []


def test_seeded_rng_is_reproducible() -> None:
    a, b = make_rng({"MODEL_SEED": "7"}), make_rng({"MODEL_SEED": "7"})
    assert [a.random() for _ in range(5)] == [b.random() for _ in range(5)]
    with pytest.raises(FaultError, match="MODEL_SEED"):
        make_rng({"MODEL_SEED": "abc"})


# -- settings ------------------------------------------------------------------------------


def test_settings_defaults_and_precedence() -> None:
    s = resolve_settings([], {})
    assert (s.host, s.port, s.version, s.kind, s.admin_port, s.faults_enabled) == (
        "127.0.0.1",
        8080,
        "v1",
        "logreg",
        None,
        False,
    )
    s = resolve_settings(["--port", "9001", "--version", "v2"], {"MODEL_VERSION": "v1", "MODEL_PORT": "9000"})
    assert (s.port, s.version, s.kind) == (9001, "v2", "mlp")
    s = resolve_settings([], {"MODEL_VERSION": "canary", "MODEL_KIND": "mlp"})
    assert (s.version, s.kind) == ("canary", "mlp")


def test_admin_port_needs_the_faults_switch() -> None:
    off = resolve_settings(["--admin-port", "9100"], {})
    assert (off.admin_port, off.admin_ignored) == (None, True)
    on = resolve_settings(["--admin-port", "9100"], {"ABTRAFFIC_FAULTS": "1"})
    assert (on.admin_port, on.admin_host) == (9100, "127.0.0.1")
    assert resolve_settings([], {"ABTRAFFIC_FAULTS": "1", "MODEL_ADMIN_PORT": "9101"}).admin_port == 9101


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        ([], {"MODEL_KIND": "forest"}, "MODEL_KIND"),
        (["--version", "v1\r\nx-evil: 1"], {}, "version name"),
        (["--port", "http"], {}, "integer port"),
        (["--port", "70000"], {}, "between 1 and 65535"),
        (["--port", "9000", "--admin-port", "9000"], {"ABTRAFFIC_FAULTS": "1"}, "must differ"),
        (["--drain-seconds", "-1"], {}, "between 0 and 300"),
    ],
)
def test_bad_settings_are_refused(argv: list[str], env: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        resolve_settings(argv, env)


def test_listener_is_created_as_tcp_so_asyncio_sets_nodelay() -> None:
    # With proto 0 asyncio skips TCP_NODELAY on accepted sockets, and Nagle plus delayed
    # ACKs then add ~40 ms to each keep-alive response.
    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()


def test_extra_latency_is_configuration_not_a_fault() -> None:
    # honoured without ABTRAFFIC_FAULTS: a slower candidate on purpose (issue 15 item 3)
    assert resolve_settings([], {}).extra_latency_ms == 0.0
    assert resolve_settings([], {"MODEL_EXTRA_LATENCY_MS": "20"}).extra_latency_ms == 20.0
    assert resolve_settings(["--extra-latency-ms", "5"], {"MODEL_EXTRA_LATENCY_MS": "20"}).extra_latency_ms == 5.0
    for bad in ("-1", "abc", "nan", "70000"):
        with pytest.raises(ConfigError, match="MODEL_EXTRA_LATENCY_MS"):
            resolve_settings([], {"MODEL_EXTRA_LATENCY_MS": bad})

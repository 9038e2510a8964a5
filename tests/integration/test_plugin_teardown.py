"""Nothing is left running after a pytest run that uses the plugin's fixtures, however it ends.

Each case runs a test file in a pytest subprocess (pytester) that uses ``abtraffic`` fixtures on the
local backend and records its deployment's marker, ports and work dir. Afterwards the outer test checks
that no model server, proxy or Locust process remains, every port is free and the work dir is gone:
after a pass, an assertion failure, an error in a fixture, KeyboardInterrupt and SIGTERM during load,
and under ``pytest -n 2``.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pytest
from _local_testkit import processes_with_marker

from pytest_abtraffic._local._supervisor import port_is_free

RECORD = '''
import json, os, signal, threading, time
import pytest

INFO_DIR = {info_dir!r}


def record(abtraffic):
    dep = abtraffic.deployment
    name = os.environ.get("PYTEST_XDIST_WORKER", "main") + "-" + str(time.monotonic_ns())
    with open(os.path.join(INFO_DIR, name + ".json"), "w") as fh:
        json.dump({{"marker": dep.marker, "ports": dep.ports(), "workdir": str(dep.workdir)}}, fh)


def signal_soon(sig, delay=1.5):
    if sig == signal.SIGINT:
        # Like Ctrl-C in a terminal, even when the runner started us with SIGINT ignored
        # (background jobs of a non-interactive shell, as in some CI set-ups).
        signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Timer(delay, os.kill, (os.getpid(), sig)).start()
'''

BODIES = {
    "pass": '''
def test_load(abtraffic):
    record(abtraffic)
    result = abtraffic.load(max_requests=300)
    assert sum(result.counts().values()) > 0
''',
    "failure": '''
def test_load(abtraffic):
    record(abtraffic)
    abtraffic.load(max_requests=200)
    assert False, "deliberate failure"
''',
    "fixture-error": '''
@pytest.fixture
def broken(abtraffic):
    record(abtraffic)
    raise RuntimeError("deliberate fixture error")


def test_load(broken):
    pass
''',
    "sigint": '''
def test_load(abtraffic):
    record(abtraffic)
    signal_soon(signal.SIGINT)
    abtraffic.load(max_requests=10_000_000, duration_s=60)
''',
    "sigterm": '''
def test_load(abtraffic):
    record(abtraffic)
    signal_soon(signal.SIGTERM)
    abtraffic.load(max_requests=10_000_000, duration_s=60)
''',
}


def _locust_pids() -> set[int]:
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"locust" in cmdline and b"pytest" not in cmdline:
            pids.add(int(entry.name))
    return pids


def _check_nothing_left(info_dir: Path, locust_before: set[int], expected_deployments: int) -> None:
    infos = [json.loads(p.read_text()) for p in sorted(info_dir.glob("*.json"))]
    assert len(infos) == expected_deployments, infos
    # Processes the run's end signalled (the proxy exits when its parent dies) may still be on their
    # way out: a dying process drops its environ (so it no longer looks marked) before its sockets.
    def anything_left() -> bool:
        return bool(_locust_pids() - locust_before) or any(
            processes_with_marker(i["marker"]) or not all(port_is_free(int(p)) for p in i["ports"]) for i in infos
        )

    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and anything_left():
        time.sleep(0.1)
    assert not (_locust_pids() - locust_before), "a Locust process outlived the run"
    for info in infos:
        assert processes_with_marker(info["marker"]) == [], info
        busy = [p for p in info["ports"] if not port_is_free(int(p))]
        assert not busy, f"ports still bound: {busy}"
        assert not Path(info["workdir"]).exists(), info["workdir"]


def _run(pytester: pytest.Pytester, body: str, *args: str, files: int = 1) -> tuple[pytest.RunResult, Path]:
    info_dir = pytester.path / "info"
    info_dir.mkdir()
    for i in range(files):
        pytester.makepyfile(**{f"test_inner_{i}": textwrap.dedent(RECORD.format(info_dir=str(info_dir))) + body})
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=180)
    return result, info_dir


@pytest.mark.parametrize(
    ("how", "outcome"),
    [("pass", {"passed": 1}), ("failure", {"failed": 1}), ("fixture-error", {"errors": 1})],
)
def test_nothing_left_after_a_normal_end(pytester: pytest.Pytester, how: str, outcome: dict[str, int]) -> None:
    before = _locust_pids()
    result, info_dir = _run(pytester, BODIES[how])
    result.assert_outcomes(**outcome)
    _check_nothing_left(info_dir, before, expected_deployments=1)


@pytest.mark.parametrize("how", ["sigint", "sigterm"])
def test_nothing_left_after_an_interrupt_during_load(pytester: pytest.Pytester, how: str) -> None:
    before = _locust_pids()
    result, info_dir = _run(pytester, BODIES[how])
    assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str()[-2000:]
    _check_nothing_left(info_dir, before, expected_deployments=1)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="pytest -n 2 needs two cores")
def test_nothing_left_under_xdist(pytester: pytest.Pytester) -> None:
    """Two workers, each with its own deployment (own ports, own namespace), both cleaned up."""
    before = _locust_pids()
    result, info_dir = _run(pytester, BODIES["pass"], "-n", "2", files=2)
    result.assert_outcomes(passed=2)
    _check_nothing_left(info_dir, before, expected_deployments=2)
    infos = [json.loads(p.read_text()) for p in info_dir.glob("*.json")]
    assert len({i["marker"] for i in infos}) == 2
    assert not set(infos[0]["ports"]) & set(infos[1]["ports"])

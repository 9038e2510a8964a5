"""The local backend leaves nothing behind, however the test run ends.

Each case runs a small test file in a pytest subprocess (pytester) whose fixture deploys the
default experiment with LocalBackend and records the deployment's marker, ports and temp dir;
the outer test then checks that no process carrying the marker is left, every port is free and
the temp dir is gone.
"""

from __future__ import annotations

import json
import signal
import textwrap
import time
from pathlib import Path

import pytest
from _local_testkit import processes_with_marker

from pytest_abtraffic._local import LocalBackend
from pytest_abtraffic._local._supervisor import port_is_free

INNER = """
import json, os, signal, time
import pytest
from pytest_abtraffic._local import LocalBackend
from pytest_abtraffic._spec import default_spec

INFO = {info!r}

@pytest.fixture
def deployment():
    backend = LocalBackend(teardown_grace_s=0.2)
    dep = backend.deploy(default_spec())
    with open(INFO, "w") as fh:
        json.dump({{"marker": dep.marker, "ports": dep.ports(), "workdir": str(dep.workdir),
                    "pids": dep.pids()}}, fh)
    yield dep
    backend.close()

def test_split(deployment):
    {body}
"""

BODIES = {
    "failure": "assert False, 'deliberate failure'",
    # Like Ctrl-C in a terminal: a runner that starts us with SIGINT ignored (a background CI job)
    # would otherwise make the signal a no-op.
    "sigint": "signal.signal(signal.SIGINT, signal.default_int_handler); os.kill(os.getpid(), signal.SIGINT); "
              "time.sleep(30)",
    "sigterm": "os.kill(os.getpid(), signal.SIGTERM); time.sleep(30)",
}


def _run(pytester: pytest.Pytester, body: str) -> tuple[pytest.RunResult, dict[str, object]]:
    info = pytester.path / "deployment.json"
    pytester.makepyfile(test_inner=textwrap.dedent(INNER.format(info=str(info), body=body)))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:locust", timeout=90)
    assert info.exists(), result.stdout.str()
    data: dict[str, object] = json.loads(info.read_text())
    return result, data


def _assert_nothing_left(data: dict[str, object], *, wait_s: float = 0.0) -> None:
    marker = str(data["marker"])
    deadline = time.monotonic() + wait_s
    while processes_with_marker(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with_marker(marker) == []
    ports = [int(p) for p in data["ports"]]  # type: ignore[attr-defined]
    assert len(ports) >= 4  # proxy data + control, a model port and an admin port per variant
    assert all(port_is_free(p) for p in ports), [p for p in ports if not port_is_free(p)]
    assert not Path(str(data["workdir"])).exists()


@pytest.mark.parametrize("how", ["failure", "sigint", "sigterm"])
def test_nothing_left_after(pytester: pytest.Pytester, how: str) -> None:
    """(a) a failing test, (b) KeyboardInterrupt from SIGINT, (c) SIGTERM to the pytest process:
    teardown runs (SIGTERM becomes KeyboardInterrupt, see _supervisor.install_signal_handlers)."""
    result, data = _run(pytester, BODIES[how])
    if how == "failure":
        result.assert_outcomes(failed=1)
    else:
        assert result.ret == pytest.ExitCode.INTERRUPTED, result.stdout.str()
        result.stdout.fnmatch_lines(["*KeyboardInterrupt*"])
    _assert_nothing_left(data)


def test_sigkilled_owner_is_cleaned_up_by_the_next_backend(pytester: pytest.Pytester) -> None:
    """SIGKILL runs no handler: the proxy exits on its own when its parent dies, and the next
    LocalBackend reaps the model servers (their ABTRAFFIC_LOCAL_MARKER names a dead owner)."""
    result, data = _run(pytester, "os.kill(os.getpid(), signal.SIGKILL)")
    assert result.ret == -signal.SIGKILL
    marker = str(data["marker"])
    proxy_pid = int(data["pids"][-1])  # type: ignore[index]
    deadline = time.monotonic() + 5
    while proxy_pid in processes_with_marker(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proxy_pid not in processes_with_marker(marker)
    LocalBackend().close()  # reaps orphans whose owner is gone
    _assert_nothing_left(data, wait_s=5.0)


ORPHAN = """
import socket, sys, time
socks = []
for _ in range(2):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0)); s.listen(16); socks.append(s)
# A large heap makes the kernel's teardown of the address space slow, which widens the window in
# which a SIGKILLed process no longer shows its environ but still holds its sockets.
ballast = bytearray(400 * 1024 * 1024)
for i in range(0, len(ballast), 4096):
    ballast[i] = 1
print(" ".join(str(s.getsockname()[1]) for s in socks), flush=True)
time.sleep(60)
"""


def test_reap_orphans_returns_once_the_orphans_sockets_are_released(tmp_path: Path) -> None:
    """The CI failure this guards against: ports still bound right after ``LocalBackend().close()``
    because SIGKILL had been sent but the process had not finished exiting."""
    import os
    import subprocess
    import sys

    from pytest_abtraffic._local._supervisor import MARKER_ENV, reap_orphans

    # An owner token naming a pid that cannot exist marks the process as an orphan.
    env = {**os.environ, MARKER_ENV: "999999999-1:reaptest"}
    orphan = subprocess.Popen([sys.executable, "-c", ORPHAN], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert orphan.stdout is not None
        ports = [int(p) for p in orphan.stdout.readline().split()]
        assert len(ports) == 2 and not any(port_is_free(p) for p in ports)
        killed = reap_orphans()
        assert orphan.pid in killed
        # Our child stays a zombie until we wait for it; its sockets must be released already.
        assert all(port_is_free(p) for p in ports), [p for p in ports if not port_is_free(p)]
    finally:
        orphan.kill()
        orphan.wait(timeout=10)
        if orphan.stdout is not None:
            orphan.stdout.close()


def test_a_zombie_counts_as_exited() -> None:
    import subprocess
    import sys

    from pytest_abtraffic._local._supervisor import _has_exited

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not _has_exited(child.pid)
        child.kill()
        deadline = time.monotonic() + 10
        while not _has_exited(child.pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _has_exited(child.pid)
        assert Path(f"/proc/{child.pid}").exists()  # not yet waited for: a zombie, not gone
    finally:
        child.kill()
        child.wait(timeout=10)

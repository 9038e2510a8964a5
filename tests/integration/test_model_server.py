"""The reference model server as real processes on loopback ports.

Each server is ``python -m ai_model`` with ``fixtures/`` on PYTHONPATH, exactly as the local
backend runs it. Every process started here is killed in teardown, pass or fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from math import comb
from pathlib import Path
from statistics import median

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
START_TIMEOUT_S = 15.0
# Features of a clear setosa; a valid /predict body.
SETOSA = [5.1, 3.5, 1.4, 0.2]
# Iris rows on the versicolor/virginica boundary where v1 (logreg) and v2 (mlp) disagree;
# found offline by running both models over the data set (see tests/unit/test_model_logic.py).
DISAGREE = [
    ([5.9, 3.2, 4.8, 1.8], "virginica", "versicolor"),
    ([6.7, 3.0, 5.0, 1.7], "virginica", "versicolor"),
    ([4.9, 2.5, 4.5, 1.7], "versicolor", "virginica"),
    ([6.1, 2.6, 5.6, 1.4], "versicolor", "virginica"),
]
AGREE = [([5.1, 3.5, 1.4, 0.2], "setosa"), ([5.7, 2.8, 4.1, 1.3], "versicolor"), ([6.3, 3.3, 6.0, 2.5], "virginica")]


# -- helper: one server process --------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    proc: subprocess.Popen[bytes]
    port: int
    admin_port: int | None
    log_dir: Path
    listening_line: str = ""
    clients: list[httpx.Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        assert self.admin_port is not None
        return f"http://127.0.0.1:{self.admin_port}"

    def client(self) -> httpx.Client:
        c = httpx.Client(base_url=self.url, timeout=10.0)
        self.clients.append(c)
        return c

    def admin(self) -> httpx.Client:
        c = httpx.Client(base_url=self.admin_url, timeout=10.0)
        self.clients.append(c)
        return c

    def stderr(self) -> str:
        return (self.log_dir / "stderr").read_text(errors="replace")

    def wait_exit(self, timeout: float = 10.0) -> int:
        return self.proc.wait(timeout=timeout)


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    # The developer's own fault/model variables must not leak into the server under test.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_") and k not in ("ABTRAFFIC_FAULTS",)}
    env["PYTHONPATH"] = str(FIXTURES)
    env["MODEL_DRAIN_SECONDS"] = "0"  # overridden where draining is under test
    env.update(extra)
    return env


@contextlib.contextmanager
def model_server(
    tmp_path: Path,
    *,
    version: str = "v1",
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    admin: bool = False,
    ready: bool = True,
) -> Iterator[ServerProcess]:
    """Start a server, wait until it listens (and is ready, when ``ready``), kill it afterwards."""
    server: ServerProcess | None = None
    try:
        for attempt in range(3):
            server = _spawn(tmp_path, version, env or {}, args, admin, attempt)
            if _wait_started(server, ready):
                break
            # Exit 1 = a port was taken between free_port() and the bind: try other ports.
        else:
            pytest.fail(f"could not find free ports for the server:\n{server.stderr() if server else ''}")
        yield server
    finally:
        if server is not None:
            for c in server.clients:
                c.close()
            if server.proc.poll() is None:
                server.proc.kill()
            server.proc.wait(timeout=10)


def _spawn(
    tmp_path: Path, version: str, env: Mapping[str, str], args: Sequence[str], admin: bool, attempt: int
) -> ServerProcess:
    port = free_port()
    admin_port = None
    while admin and admin_port in (None, port):
        admin_port = free_port()
    argv = [sys.executable, "-m", "ai_model", "--port", str(port), "--version", version, *args]
    if admin_port is not None:
        argv += ["--admin-port", str(admin_port)]
    log_dir = tmp_path / f"server-{version}-{port}-{attempt}"
    log_dir.mkdir()
    with open(log_dir / "stdout", "wb") as out, open(log_dir / "stderr", "wb") as err:
        proc = subprocess.Popen(argv, env=_clean_env(env), stdout=out, stderr=err, cwd=tmp_path)
    return ServerProcess(proc, port, admin_port, log_dir)


def _wait_started(server: ServerProcess, ready: bool) -> bool:
    """True once started; False if it could not bind its port; fails the test otherwise."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(base_url=server.url, timeout=1.0) as client:
        while time.monotonic() < deadline:
            if server.proc.poll() is not None:
                if server.proc.returncode == 1 and "cannot listen" in server.stderr():
                    return False
                pytest.fail(f"server exited with {server.proc.returncode}:\n{server.stderr()}")
            lines = (server.log_dir / "stdout").read_text().splitlines()
            if lines:
                server.listening_line = lines[0]
                with contextlib.suppress(httpx.TransportError):
                    if not ready or client.get("/readyz").status_code == 200:
                        return True
            time.sleep(0.02)
    pytest.fail(f"server did not become ready within {START_TIMEOUT_S}s:\n{server.stderr()}")


def predict(client: httpx.Client, *instances: list[float]) -> httpx.Response:
    return client.post("/predict", json={"instances": list(instances)})


def binomial_acceptance(n: int, p: float, alpha: float) -> tuple[int, int]:
    """Smallest/largest count whose exact two-sided tail probability is still above alpha."""
    pf, a = Fraction(str(p)), Fraction(str(alpha)) / 2
    pmf = [comb(n, k) * pf**k * (1 - pf) ** (n - k) for k in range(n + 1)]
    low, tail = 0, pmf[0]
    while tail <= a:
        low += 1
        tail += pmf[low]
    high, tail = n, pmf[n]
    while tail <= a:
        high -= 1
        tail += pmf[high]
    return low, high


def _listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1.0):
        return True
    return False


# -- shared servers ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    tmp = tmp_path_factory.mktemp("model-servers")
    with contextlib.ExitStack() as stack:
        yield {
            "v1": stack.enter_context(model_server(tmp, version="v1")),
            "v2": stack.enter_context(model_server(tmp, version="v2")),
            "chaos": stack.enter_context(
                model_server(tmp, version="v1", admin=True, env={"ABTRAFFIC_FAULTS": "1", "MODEL_SEED": "20240611"})
            ),
        }


@pytest.fixture
def chaos(servers: dict[str, ServerProcess]) -> Iterator[ServerProcess]:
    """The fault-enabled server, with faults reset before and after each test."""
    server = servers["chaos"]
    with httpx.Client(base_url=server.admin_url, timeout=10.0) as admin:
        assert admin.post("/faults/reset").status_code == 200
        yield server
        if server.proc.poll() is None:
            admin.post("/faults/reset")


# -- versions and models -----------------------------------------------------------------------


@pytest.mark.parametrize(("version", "kind"), [("v1", "logreg"), ("v2", "mlp")])
def test_each_version_serves_its_model(servers: dict[str, ServerProcess], version: str, kind: str) -> None:
    server = servers[version]
    assert server.listening_line.startswith("ai_model listening")
    assert f"version={version}" in server.listening_line
    with server.client() as c:
        r = predict(c, SETOSA, [6.3, 3.3, 6.0, 2.5])
        assert r.status_code == 200
        assert r.headers["x-model-version"] == version
        doc = r.json()
        assert (doc["version"], doc["model"]) == (version, kind)
        assert [p["label"] for p in doc["predictions"]] == ["setosa", "virginica"]
        assert [p["class"] for p in doc["predictions"]] == [0, 2]
        for p in doc["predictions"]:
            assert len(p["probabilities"]) == 3
            assert sum(p["probabilities"]) == pytest.approx(1.0)
        info = c.get("/info").json()
        assert (info["version"], info["model"], info["max_batch"]) == (version, kind, 256)


def test_versions_disagree_near_the_decision_boundary(servers: dict[str, ServerProcess]) -> None:
    instances = [x for x, _, _ in DISAGREE] + [x for x, _ in AGREE]
    with servers["v1"].client() as c1, servers["v2"].client() as c2:
        p1 = [p["label"] for p in predict(c1, *instances).json()["predictions"]]
        p2 = [p["label"] for p in predict(c2, *instances).json()["predictions"]]
    n = len(DISAGREE)
    assert p1[:n] == [a for _, a, _ in DISAGREE]
    assert p2[:n] == [b for _, _, b in DISAGREE]
    assert all(a != b for a, b in zip(p1[:n], p2[:n], strict=True))
    assert p1[n:] == p2[n:] == [label for _, label in AGREE]


def test_model_kind_and_version_can_be_chosen(tmp_path: Path) -> None:
    with (
        model_server(tmp_path, version="canary") as default_kind,
        model_server(tmp_path, version="canary-2", env={"MODEL_KIND": "mlp"}) as mlp,
    ):
        with default_kind.client() as c:
            r = predict(c, SETOSA)
            assert (r.headers["x-model-version"], r.json()["model"]) == ("canary", "logreg")
        with mlp.client() as c:
            r = predict(c, SETOSA)
            assert (r.headers["x-model-version"], r.json()["model"]) == ("canary-2", "mlp")


def test_health_endpoints(servers: dict[str, ServerProcess]) -> None:
    with servers["v2"].client() as c:
        for path in ("/healthz", "/readyz"):
            r = c.get(path)
            assert r.status_code == 200
            assert r.headers["x-model-version"] == "v2"
            assert r.json()["status"] == "ok"


# -- bad requests ----------------------------------------------------------------------------------


def _chunks() -> Iterator[bytes]:
    yield b'{"instances": ['
    for _ in range(80):  # 80 x 14,000 bytes: past the 1 MiB limit
        yield b"[1, 2, 3, 4], " * 1000


@pytest.mark.parametrize(
    ("method", "path", "content", "status", "fragment"),
    [
        ("POST", "/predict", b"{not json", 400, "not valid JSON"),
        ("POST", "/predict", b"", 400, "empty"),
        ("POST", "/predict", b"\xff\xfe\xfa", 400, "not valid JSON"),
        ("POST", "/predict", b"[" * 200_000, 400, "not valid JSON"),
        ("POST", "/predict", b'"instances"', 400, "must be a JSON object"),
        ("POST", "/predict", b'{"inputs": []}', 400, 'missing field "instances"'),
        ("POST", "/predict", b'{"instances": []}', 400, '"instances" is empty'),
        ("POST", "/predict", b'{"instances": {"a": 1}}', 400, "must be an array, got an object"),
        ("POST", "/predict", b'{"instances": [[1, 2, 3]]}', 400, "has 3 features; expected 4"),
        ("POST", "/predict", b'{"instances": [[1, 2, 3, 4, 5]]}', 400, "has 5 features; expected 4"),
        ("POST", "/predict", b'{"instances": [[1, 2, "three", 4]]}', 400, "must be a number, got a string"),
        ("POST", "/predict", b'{"instances": [[1, 2, null, 4]]}', 400, "got null"),
        ("POST", "/predict", b'{"instances": [[1, 2, false, 4]]}', 400, "got a boolean"),
        ("POST", "/predict", b'{"instances": [[1, 2, NaN, 4]]}', 400, "finite"),
        ("POST", "/predict", json.dumps({"instances": [SETOSA] * 257}).encode(), 413, "limit of 256"),
        ("POST", "/predict", b" " * (1024 * 1024 + 1), 413, "exceeds the 1048576-byte limit"),
        # No Content-Length (chunked upload): the limit is enforced while reading.
        ("POST", "/predict", _chunks, 413, "exceeds the 1048576-byte limit"),
        ("GET", "/predict", None, 405, "use POST"),
        ("PUT", "/healthz", b"{}", 405, "use GET"),
        ("GET", "/nope", None, 404, "no route GET /nope"),
        ("GET", "/faults", None, 404, "no route"),
        ("PUT", "/faults", b'{"error_rate": 1}', 404, "no route"),
        ("POST", "/faults/reset", b"", 404, "no route"),
    ],
)
def test_bad_request_gets_4xx_with_message(
    servers: dict[str, ServerProcess],
    method: str,
    path: str,
    content: bytes | Callable[[], Iterator[bytes]] | None,
    status: int,
    fragment: str,
) -> None:
    server = servers["v1"]
    body = content() if callable(content) else content
    with server.client() as c:
        r = c.request(method, path, content=body, headers={"content-type": "application/json"})
        assert r.status_code == status, r.text
        assert r.headers["x-model-version"] == "v1"
        assert fragment in r.json()["error"]
        # The server is unharmed and still answers on a fresh connection.
        assert predict(c, SETOSA).status_code == 200
    assert server.proc.poll() is None


def test_main_port_never_exposes_the_admin_api(chaos: ServerProcess) -> None:
    with chaos.client() as c:
        assert c.put("/faults", json={"error_rate": 1.0}).status_code == 404
        assert c.get("/faults").status_code == 404
        assert predict(c, SETOSA).status_code == 200
    with chaos.admin() as admin:
        assert admin.get("/faults").json()["error_rate"] == 0.0
        # and the admin port serves no model API
        assert admin.post("/predict", json={"instances": [SETOSA]}).status_code == 404


# -- fault knobs --------------------------------------------------------------------------------------


def test_error_rate_share_within_exact_binomial_bound(chaos: ServerProcess) -> None:
    n, rate = 2000, 0.2
    with chaos.admin() as admin:
        assert admin.put("/faults", json={"error_rate": rate}).json()["error_rate"] == rate
    statuses: dict[int, int] = {}
    injected = 0
    with chaos.client() as c:
        for _ in range(n):
            r = predict(c, SETOSA)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code != 200:
                assert r.headers["x-model-version"] == "v1"
                assert r.headers["x-abtraffic-fault"] == "error"
                assert r.json()["injected"] is True
                injected += 1
    assert set(statuses) <= {200, 500}
    low, high = binomial_acceptance(n, rate, 1e-6)
    assert low <= injected <= high, f"{injected} errors in {n} at rate {rate}; accept {low}..{high}"


def test_error_status_knob(chaos: ServerProcess) -> None:
    with chaos.admin() as admin:
        admin.put("/faults", json={"error_rate": 1.0, "error_status": 503})
    with chaos.client() as c:
        codes = {predict(c, SETOSA).status_code for _ in range(20)}
        assert codes == {503}
        assert c.get("/readyz").status_code == 200  # errors do not touch health
    with chaos.admin() as admin:
        admin.put("/faults", json={"error_rate": 0.0})
    with chaos.client() as c:
        assert predict(c, SETOSA).status_code == 200


def _latencies(client: httpx.Client, count: int) -> list[float]:
    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        assert predict(client, SETOSA).status_code == 200
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def test_latency_knob_adds_delay(chaos: ServerProcess) -> None:
    with chaos.admin() as admin:
        admin.put("/faults", json={"latency_ms": 60})
    with chaos.client() as c:
        slow = _latencies(c, 11)
        assert median(slow) >= 60.0
        assert c.get("/healthz").status_code == 200  # latency is for /predict only
    with chaos.admin() as admin:
        admin.put("/faults", json={"latency_ms": 10, "latency_jitter_ms": 80})
    with chaos.client() as c:
        jittered = _latencies(c, 20)
    assert min(jittered) >= 10.0
    # Uniform 0..80 ms extra: all 20 draws below 40 ms has probability 2**-20.
    assert max(jittered) >= 50.0


def test_unready_knob_flips_readiness_only(chaos: ServerProcess) -> None:
    with chaos.admin() as admin, chaos.client() as c:
        assert admin.put("/faults", json={"unready": True}).json()["unready"] is True
        r = c.get("/readyz")
        assert (r.status_code, r.json()["status"], r.headers["x-model-version"]) == (503, "unready", "v1")
        assert c.get("/healthz").status_code == 200
        assert predict(c, SETOSA).status_code == 200
        admin.put("/faults", json={"unready": False})
        assert c.get("/readyz").status_code == 200


def test_admin_api_validates_and_updates_partially(chaos: ServerProcess) -> None:
    with chaos.admin() as admin:
        r = admin.put("/faults", json={"latency_ms": 5, "unready": False})
        assert r.status_code == 200
        assert r.headers["x-model-version"] == "v1"
        assert admin.put("/faults", json={"error_status": 502}).json()["latency_ms"] == 5.0
        for bad, fragment in [
            ({"error_rate": 1.5}, "between 0 and 1"),
            ({"error_rate": "high"}, "must be a number"),
            ({"error_status": 200}, "400 to 599"),
            ({"latency_ms": -3}, "between 0"),
            ({"unready": "yes"}, "true or false"),
            ({"crash_on_next": 1}, "true or false"),
            ({"latency_ms": 1, "bogus": True}, "unknown fault field"),
        ]:
            r = admin.put("/faults", json=bad)
            assert r.status_code == 400, bad
            assert fragment in r.json()["error"]
        for body in (b"[1]", b"{bad json"):
            assert admin.put("/faults", content=body).status_code == 400
        assert admin.delete("/faults").status_code == 405
        assert admin.get("/faults/other").status_code == 404
        state = admin.get("/faults").json()
        # A rejected update changes nothing, not even its valid fields.
        assert state == {
            "error_rate": 0.0,
            "error_status": 502,
            "latency_ms": 5.0,
            "latency_jitter_ms": 0.0,
            "unready": False,
            "crash_on_next": False,
        }
        reset = admin.post("/faults/reset").json()
        assert (reset["error_status"], reset["latency_ms"]) == (500, 0.0)


def _listen_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a LISTEN socket on ``port``, from /proc/net/tcp."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        cols = line.split()
        addr, hex_port = cols[1].split(":")
        if int(hex_port, 16) == port and cols[3] == "0A":  # 0A = TCP_LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_admin_binds_loopback_only(chaos: ServerProcess) -> None:
    assert chaos.admin_port is not None
    assert _listen_addresses(chaos.admin_port) == {"127.0.0.1"}
    # 127.0.0.2 is loopback too; a wildcard bind would accept there.
    assert not _listening("127.0.0.2", chaos.admin_port)
    assert _listening("127.0.0.1", chaos.admin_port)


def test_admin_host_can_be_overridden_with_a_warning(tmp_path: Path) -> None:
    with model_server(
        tmp_path, admin=True, args=["--admin-host", "127.0.0.2"], env={"ABTRAFFIC_FAULTS": "1"}
    ) as server:
        assert server.admin_port is not None
        assert _listening("127.0.0.2", server.admin_port)
        assert not _listening("127.0.0.1", server.admin_port)
        assert "WARNING: fault admin API bound to 127.0.0.2" in server.stderr()


def test_faults_and_admin_ignored_without_the_switch(tmp_path: Path) -> None:
    env = {
        "MODEL_ERROR_RATE": "1",
        "MODEL_LATENCY_MS": "500",
        "MODEL_UNREADY": "1",
        "MODEL_CRASH_ON_NEXT": "1",
    }
    with model_server(tmp_path, admin=True, env=env) as server:  # ready=True: MODEL_UNREADY was ignored
        assert server.admin_port is not None
        assert not _listening("127.0.0.1", server.admin_port)
        with server.client() as c:
            for _ in range(20):
                assert predict(c, SETOSA).status_code == 200
        assert server.proc.poll() is None  # MODEL_CRASH_ON_NEXT was ignored too
        assert "ignoring MODEL_ERROR_RATE" in server.stderr()
        assert "--admin-port: fault knobs and the admin API need ABTRAFFIC_FAULTS=1" in server.stderr()
        assert "admin" not in server.listening_line


def test_faults_from_environment_then_crash_via_admin(tmp_path: Path) -> None:
    env = {
        "ABTRAFFIC_FAULTS": "1",
        "MODEL_UNREADY": "1",
        "MODEL_ERROR_RATE": "1",
        "MODEL_ERROR_STATUS": "502",
        "MODEL_LATENCY_MS": "1",
    }
    with model_server(tmp_path, admin=True, env=env, ready=False) as server:
        assert f"admin=http://127.0.0.1:{server.admin_port}" in server.listening_line
        with server.client() as c, server.admin() as admin:
            assert c.get("/readyz").status_code == 503
            assert c.get("/healthz").status_code == 200
            r = predict(c, SETOSA)
            assert (r.status_code, r.headers["x-model-version"]) == (502, "v1")
            state = admin.get("/faults").json()
            assert (state["unready"], state["error_rate"], state["error_status"], state["latency_ms"]) == (
                True,
                1.0,
                502,
                1.0,
            )
            assert admin.put("/faults", json={"crash_on_next": True}).status_code == 200
            assert c.get("/healthz").status_code == 200  # only /predict triggers the crash
            with pytest.raises(httpx.TransportError):
                predict(c, SETOSA)
        assert server.wait_exit() == 3
        assert "crash_on_next" in server.stderr()


def test_crash_on_next_from_environment(tmp_path: Path) -> None:
    with model_server(tmp_path, env={"ABTRAFFIC_FAULTS": "1", "MODEL_CRASH_ON_NEXT": "1"}) as server:
        with server.client() as c:
            assert c.get("/readyz").status_code == 200
            with pytest.raises(httpx.TransportError):
                predict(c, SETOSA)
        assert server.wait_exit() == 3


def test_bad_fault_environment_fails_fast(tmp_path: Path) -> None:
    for env, fragment in [
        ({"ABTRAFFIC_FAULTS": "1", "MODEL_ERROR_RATE": "2"}, "MODEL_ERROR_RATE"),
        ({"MODEL_KIND": "forest"}, "MODEL_KIND"),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "ai_model", "--port", str(free_port())],
            env=_clean_env(env),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 2
        assert fragment in done.stderr


# -- lifecycle ---------------------------------------------------------------------------------------


def _recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_sigterm_drains_then_exits_zero(tmp_path: Path) -> None:
    env = {"ABTRAFFIC_FAULTS": "1", "MODEL_LATENCY_MS": "1500", "MODEL_DRAIN_SECONDS": "0.5"}
    with model_server(tmp_path, version="v2", env=env) as server:
        body = json.dumps({"instances": [SETOSA]}).encode()
        request = (
            f"POST /predict HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode() + body
        # Sent before the signal, so it is in flight (sleeping 1.5 s in the server) during shutdown.
        with socket.create_connection(("127.0.0.1", server.port), timeout=15) as in_flight:
            in_flight.sendall(request)
            time.sleep(0.2)
            server.proc.send_signal(signal.SIGTERM)
            # The signal is handled asynchronously: poll until readiness flips (bounded).
            seen: list[httpx.Response] = []
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                with httpx.Client(base_url=server.url, timeout=5.0) as c:
                    r = c.get("/readyz")
                    seen.append(r)
                    if r.status_code == 503:
                        assert c.get("/healthz").status_code == 200  # still alive while draining
                        break
                time.sleep(0.01)
            last = seen[-1]
            assert (last.status_code, last.json()["status"]) == (503, "draining")
            assert last.headers["x-model-version"] == "v2"
            assert last.headers["connection"] == "close"
            # The drain (0.5 s) ends before the 1.5 s request does: it must still complete.
            raw = _recv_all(in_flight)
        head, _, payload = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), raw[:200]
        assert json.loads(payload)["predictions"][0]["label"] == "setosa"
        assert server.wait_exit() == 0
        assert "draining" in server.stderr()

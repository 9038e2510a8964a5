"""The load driver against real HTTP servers on 127.0.0.1: Locust runs in a subprocess.

The target is a tiny asyncio HTTP/1.1 server defined here (weighted versions, optional 500s,
connection counting); one test also uses the reference model server from ``fixtures/ai_model``
when it is there. Each Locust run starts in ~0.5-1 s; budgets are small.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from pytest_abtraffic import LoadError
from pytest_abtraffic._load import (
    LoadPlan,
    LoadResult,
    LoadSnapshot,
    RequestRecord,
    parse_records_from_log,
    run_locust,
)
from pytest_abtraffic._resources import fixtures_dir

GEVENT_LOADED_BEFORE = "gevent" in sys.modules


# -- a tiny model server -------------------------------------------------------------------------

class TinyServer:
    """Answers every request with a version chosen by weight, in a header; 500 with probability
    ``error_rates[version]``; honours ``Connection: close``; counts accepted connections."""

    def __init__(self, weights: Mapping[str, float] | None = None, error_rates: Mapping[str, float] | None = None,
                 header: str = "x-model-version", seed: int = 1) -> None:
        self.weights = dict(weights or {"v1": 0.8, "v2": 0.2})
        self.error_rates = dict(error_rates or {})
        self.header = header.encode()
        self.rng = random.Random(seed)
        self.connections = 0
        self.requests: list[tuple[str, str, bytes]] = []  # (method, path, body), first 200 only
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def _pick(self) -> str:
        x = self.rng.random() * sum(self.weights.values())
        for name, w in self.weights.items():
            x -= w
            if x < 0:
                return name
        return next(iter(self.weights))

    def _protocol(self) -> asyncio.Protocol:
        server = self

        class Proto(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                assert isinstance(transport, asyncio.Transport)
                self.transport = transport
                self.buf = b""
                server.connections += 1

            def data_received(self, data: bytes) -> None:
                self.buf += data
                while (end := self.buf.find(b"\r\n\r\n")) >= 0:
                    head = self.buf[:end].decode("latin-1").split("\r\n")
                    fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
                    length = int(fields.get("content-length", "0"))
                    if len(self.buf) < end + 4 + length:
                        return
                    body = self.buf[end + 4:end + 4 + length]
                    self.buf = self.buf[end + 4 + length:]
                    method, path, _ = head[0].split(" ", 2)
                    if len(server.requests) < 200:
                        server.requests.append((method, path, body))
                    close = fields.get("connection", "").lower() == "close"
                    self.answer(method, close)
                    if close:
                        self.transport.close()
                        return

            def answer(self, method: str, close: bool) -> None:
                version = server._pick() if method == "POST" else "healthcheck"
                failed = server.rng.random() < server.error_rates.get(version, 0.0)
                body = b'{"error":"injected"}' if failed else b'{"predictions":[0]}'
                status = b"500 Internal Server Error" if failed else b"200 OK"
                self.transport.write(
                    b"HTTP/1.1 " + status + b"\r\n" + server.header + b": " + version.encode() + b"\r\n"
                    + b"content-type: application/json\r\ncontent-length: " + str(len(body)).encode() + b"\r\n"
                    + (b"connection: close\r\n" if close else b"") + b"\r\n" + body
                )

        return Proto()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        srv = self._loop.run_until_complete(self._loop.create_server(self._protocol, "127.0.0.1", 0))
        self.port = srv.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            srv.close()
            self._loop.run_until_complete(srv.wait_closed())
            self._loop.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> TinyServer:
        self._thread.start()
        assert self._ready.wait(5), "tiny server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


@pytest.fixture
def server() -> Iterator[TinyServer]:
    with TinyServer() as srv:
        yield srv


# -- process bookkeeping -------------------------------------------------------------------------

def children_of(pid: int) -> set[int]:
    """Direct children of ``pid`` from /proc (psutil is not a dependency)."""
    out = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(entry.name))
    return out


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    before = children_of(os.getpid())
    yield
    leftover = children_of(os.getpid()) - before
    assert not leftover, f"processes left running after the test: {sorted(leftover)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class StopAfter:
    """Observer that stops once ``n`` requests are in, remembering what it saw."""

    def __init__(self, n: int, reason: str | None = None) -> None:
        self.n = n
        self.started = 0
        self.snapshots: list[LoadSnapshot] = []
        self.seen: list[int] = []
        if reason is not None:
            self.stop_reason = reason

    def on_start(self) -> None:
        self.started += 1

    def on_progress(self, snapshot: LoadSnapshot, records: Sequence[RequestRecord]) -> bool:
        assert self.started == 1
        self.snapshots.append(snapshot)
        self.seen.append(len(records))
        return snapshot.requests >= self.n


# -- tests ---------------------------------------------------------------------------------------

def test_budget_stop_records_every_request_with_its_version(server: TinyServer) -> None:
    plan = LoadPlan(users=4, spawn_rate=100, max_requests=400, duration_s=30)
    result = run_locust(server.url, plan)
    assert result.stop_reason == "budget"
    assert not result.stopped_early
    # The locust side stops itself at the budget: only requests already in flight can add to it.
    assert 400 <= result.requests <= 400 + plan.users
    counts = result.counts()
    assert set(counts) == {"v1", "v2"}
    assert sum(counts.values()) == result.requests
    assert counts["v1"] > counts["v2"]  # 80/20 server-side
    assert all(r.status == 200 and r.error == "" and r.latency_ms > 0 for r in result.records)
    # FastHttpUser: one keep-alive connection per user, and the server saw exactly those.
    assert {r.connection for r in result.records} == {f"u{i}" for i in range(1, plan.users + 1)}
    assert server.connections == plan.users
    assert result.counts("connections") == {"v1": plan.users, "v2": plan.users}
    # Locust's own stats are per version and agree with the records.
    assert result.locust_stats is not None
    per_name = {e["name"]: e["num_requests"] for e in result.locust_stats["entries"]}
    assert per_name == {"/predict [v1]": counts["v1"], "/predict [v2]": counts["v2"]}
    ts = result.timeseries(0.1)
    assert sum(b.total for b in ts) == result.requests
    assert result.duration_s > 0
    # Default payloads are iris batches posted as JSON.
    method, path, body = server.requests[0]
    assert (method, path) == ("POST", "/predict")
    assert json.loads(body)["instances"][0] and len(json.loads(body)["instances"][0]) == 4


def test_observer_stops_the_run_early(server: TinyServer) -> None:
    observer = StopAfter(300)
    result = run_locust(server.url, LoadPlan(users=3, duration_s=60, progress_interval_s=0.1), observer)
    assert result.stop_reason == "observer"
    assert result.stopped_early
    assert observer.started == 1
    assert len(observer.snapshots) >= 1
    last = observer.snapshots[-1]
    assert last.requests >= 300
    assert result.requests >= last.requests  # in-flight requests still land
    assert observer.seen == sorted(observer.seen)
    assert all(s.failures == 0 and (s.rps > 0) == (s.requests > 0) for s in observer.snapshots)
    assert sum(last.counts.values()) == last.requests
    # It stopped long before the 60 s duration.
    assert result.duration_s < 60


def test_observer_stop_reason_attribute_is_reported(server: TinyServer) -> None:
    result = run_locust(server.url, LoadPlan(users=2, duration_s=60, progress_interval_s=0.1),
                        StopAfter(50, reason="verdict"))
    assert (result.stop_reason, result.stopped_early) == ("verdict", True)


def test_duration_stop_with_pacing(server: TinyServer) -> None:
    plan = LoadPlan(users=2, duration_s=1.2, wait_s=0.05)
    result = run_locust(server.url, plan)
    assert result.stop_reason == "duration"
    assert result.duration_s >= 1.2
    # Pacing holds each user to at most one request per 50 ms.
    assert 0 < result.requests <= plan.users * (result.duration_s / 0.05 + 2)


def test_failure_statuses_are_recorded_per_version() -> None:
    with TinyServer(weights={"v1": 0.5, "v2": 0.5}, error_rates={"v2": 0.5}, seed=5) as srv:
        result = run_locust(srv.url, LoadPlan(users=3, max_requests=400, duration_s=30))
    failures = result.failures()
    assert set(failures) == {"v2"}
    assert set(failures["v2"]) == {500}
    assert failures["v2"][500] > 0
    assert all(r.error for r in result.records if not r.ok)
    assert sum(result.counts().values()) + failures["v2"][500] == result.requests
    assert sum(sum(b.errors.values()) for b in result.timeseries()) == failures["v2"][500]
    assert result.locust_stats is not None
    stats = {e["name"]: e for e in result.locust_stats["entries"]}
    assert stats["/predict [v2]"]["num_failures"] == failures["v2"][500]
    assert stats["/predict [v1]"]["num_failures"] == 0


def test_connection_errors_are_status_zero() -> None:
    result = run_locust(f"http://127.0.0.1:{free_port()}", LoadPlan(users=2, max_requests=50, duration_s=20))
    assert result.requests >= 50
    assert result.counts() == {}
    assert set(result.failures()) == {""}
    assert set(result.failures()[""]) == {0}
    assert all(r.status == 0 and r.version == "" and r.error for r in result.records)


def test_connection_close_mode_opens_a_connection_per_request(server: TinyServer) -> None:
    result = run_locust(server.url, LoadPlan(users=2, max_requests=120, duration_s=20, connection_close=True))
    assert len({r.connection for r in result.records}) == result.requests
    assert result.counts("connections") == result.counts("requests")
    assert server.connections >= result.requests


def test_custom_path_header_and_payloads(tmp_path: Path) -> None:
    payloads = ({"instances": [[1.0, 2.0, 3.0, 4.0]]}, {"instances": [[4.0, 3.0, 2.0, 1.0]]})
    plan = LoadPlan(users=1, max_requests=20, duration_s=20, path="/v2/infer", payloads=payloads,
                    version_header="x-served-by")
    with TinyServer(weights={"blue": 1.0}, header="x-served-by") as srv:
        result = run_locust(srv.url, plan, workdir=tmp_path)
    assert result.counts() == {"blue": result.requests}
    assert {p for _, p, _ in srv.requests} == {"/v2/infer"}
    bodies = [json.loads(b) for _, _, b in srv.requests[:4]]
    assert bodies[0] != bodies[1] and bodies[0] == bodies[2]  # cycles through the list
    assert all(b in list(payloads) for b in bodies)
    # The workdir keeps what the run produced.
    assert (tmp_path / "records.jsonl").stat().st_size > 0
    assert (tmp_path / "locust_stats.json").is_file()


OWN_LOCUSTFILE = '''
from locust import HttpUser, constant, task

from pytest_abtraffic._load.locust_support import name_by_version, record_version

record_version(include=lambda request_type, url: request_type == "POST")


class MyUser(HttpUser):
    wait_time = constant(0)

    @task
    def predict(self):
        self.client.get("/healthz")
        with self.client.post("/predict", json={"instances": [[5.1, 3.5, 1.4, 0.2]]}, catch_response=True) as resp:
            name_by_version(resp, "/predict")
'''


def test_own_locustfile_with_the_support_helper(server: TinyServer, tmp_path: Path) -> None:
    locustfile = tmp_path / "my_locustfile.py"
    locustfile.write_text(OWN_LOCUSTFILE)
    result = run_locust(server.url, LoadPlan(users=2, max_requests=100, duration_s=20, locustfile=str(locustfile)))
    assert result.stop_reason == "budget"
    assert set(result.counts()) == {"v1", "v2"}  # GET /healthz ("healthcheck") was not recorded
    assert {r.connection for r in result.records} == {"u1", "u2"}  # one id per user greenlet
    assert result.locust_stats is not None
    names = {e["name"] for e in result.locust_stats["entries"]}
    assert {"/healthz", "/predict [v1]", "/predict [v2]"} <= names


def test_broken_locustfile_raises_load_error_with_stderr_tail(tmp_path: Path) -> None:
    locustfile = tmp_path / "broken.py"
    locustfile.write_text("import abtraffic_missing_module\n")
    with pytest.raises(LoadError) as info:
        run_locust("http://127.0.0.1:9", LoadPlan(users=1, duration_s=5, locustfile=str(locustfile)))
    text = str(info.value)
    assert "-m locust" in text and str(locustfile) in text
    assert "No module named 'abtraffic_missing_module'" in text


def test_locustfile_without_recording_raises_load_error(server: TinyServer, tmp_path: Path) -> None:
    locustfile = tmp_path / "silent.py"
    locustfile.write_text("from locust import FastHttpUser, task\n\n"
                          "class U(FastHttpUser):\n    @task\n    def t(self):\n        self.client.get('/')\n")
    with pytest.raises(LoadError, match=r"recorded no requests \(does the locustfile call"):
        run_locust(server.url, LoadPlan(users=1, duration_s=1, locustfile=str(locustfile)))


@pytest.mark.parametrize("target", ["127.0.0.1:8080", "ftp://127.0.0.1", "http://"])
def test_bad_target_raises_load_error(target: str) -> None:
    with pytest.raises(LoadError, match="must be an http:// or https:// URL") as info:
        run_locust(target, LoadPlan(users=1, duration_s=1))
    assert "-m locust" in str(info.value)


def test_missing_locustfile_raises_load_error(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="does not exist"):
        run_locust("http://127.0.0.1:9", LoadPlan(locustfile=str(tmp_path / "nope.py")))


def test_timeout_bounds_the_whole_call(server: TinyServer) -> None:
    with pytest.raises(LoadError, match="did not finish within the timeout of 2s"):
        run_locust(server.url, LoadPlan(users=1, duration_s=60, wait_s=0.1), timeout_s=2)


def test_locust_dying_mid_run_raises_load_error(server: TinyServer) -> None:
    class Killer:
        def on_start(self) -> None:
            pass

        def on_progress(self, snapshot: LoadSnapshot, records: Sequence[RequestRecord]) -> bool:
            for pid in children_of(os.getpid()):
                os.kill(pid, signal.SIGKILL)
            return False

    with pytest.raises(LoadError, match=r"locust exited with code -9 after \d+ recorded requests"):
        run_locust(server.url, LoadPlan(users=1, duration_s=30, progress_interval_s=0.1), Killer())


@pytest.mark.parametrize("exc", [KeyboardInterrupt, RuntimeError])
def test_nothing_left_running_after_interrupt_or_observer_error(server: TinyServer,
                                                                exc: type[BaseException]) -> None:
    seen: set[int] = set()

    class Interrupt:
        def on_start(self) -> None:
            seen.update(children_of(os.getpid()))

        def on_progress(self, snapshot: LoadSnapshot, records: Sequence[RequestRecord]) -> bool:
            raise exc("stop")

    with pytest.raises(exc):
        run_locust(server.url, LoadPlan(users=2, duration_s=30, progress_interval_s=0.1), Interrupt())
    assert seen, "locust was not a child process of the caller"
    assert not any(Path(f"/proc/{pid}").exists() for pid in seen)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_locust_quits_when_the_driver_is_killed(server: TinyServer, tmp_path: Path) -> None:
    script = ("import sys; from pathlib import Path; from pytest_abtraffic._load import LoadPlan, run_locust; "
              "run_locust(sys.argv[1], LoadPlan(users=1, duration_s=60, wait_s=0.05), workdir=Path(sys.argv[2]))")
    driver = subprocess.Popen([sys.executable, "-c", script, server.url, str(tmp_path)])
    locust_pid = None
    try:
        for _ in range(300):  # up to ~30 s for locust to start
            records = tmp_path / "records.jsonl"
            lines = records.read_text().splitlines() if records.exists() else []
            if lines and lines[0].startswith('{"start"'):
                locust_pid = int(json.loads(lines[0])["pid"])
                break
            time.sleep(0.1)
        assert locust_pid is not None, "locust did not start"
        driver.kill()  # no cleanup in the driver: locust must notice it is orphaned
        driver.wait(10)
        for _ in range(100):  # up to ~10 s
            if not _alive(locust_pid):
                break
            time.sleep(0.1)
        assert not _alive(locust_pid), "locust kept running after its driver was killed"
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(10)
        if locust_pid is not None and _alive(locust_pid):
            os.killpg(locust_pid, signal.SIGKILL)


# -- warm start: Locust started before the target is ready, held at the gate -------------------

def test_warm_locust_waits_at_the_gate_then_runs_the_plan(server: TinyServer) -> None:
    """The warm process sends nothing before the gate opens; then it runs this plan's target and
    budget (given at the gate) and the run is recorded as a cold start's would be."""
    from pytest_abtraffic._load._driver import WarmLocust

    plan = LoadPlan(users=3, spawn_rate=100, max_requests=300, duration_s=30)
    warm = WarmLocust(dataclasses.replace(plan, max_requests=None, duration_s=5.0))
    assert warm.proc is not None
    workdir = warm.workdir
    time.sleep(1.0)  # long enough for Locust to reach its init event; nothing may be sent meanwhile
    assert server.connections == 0 and warm.proc.poll() is None
    assert (workdir / "records.jsonl").read_text() == ""
    result = run_locust(server.url, plan, warm=warm)
    assert warm.used
    assert result.stop_reason == "budget"
    assert 300 <= result.requests <= 300 + plan.users
    assert set(result.counts()) == {"v1", "v2"}
    assert {r.connection for r in result.records} == {"u1", "u2", "u3"}
    assert warm.proc.poll() is not None and not workdir.exists()


def test_warm_locust_that_launched_differently_is_closed_and_the_run_starts_cold(server: TinyServer) -> None:
    from pytest_abtraffic._load._driver import WarmLocust

    warm = WarmLocust(LoadPlan(users=2, duration_s=5.0))
    assert warm.proc is not None
    result = run_locust(server.url, LoadPlan(users=3, max_requests=60, duration_s=30), warm=warm)
    assert not warm.used and warm.proc.poll() is not None and not warm.workdir.exists()
    assert {r.connection for r in result.records} == {"u1", "u2", "u3"}


def test_unused_warm_locust_is_gone_after_close_and_quits_when_orphaned(server: TinyServer,
                                                                       tmp_path: Path) -> None:
    from pytest_abtraffic._load._driver import WarmLocust

    warm = WarmLocust(LoadPlan(users=1, duration_s=5.0))
    assert warm.proc is not None
    warm.close()
    warm.close()  # idempotent
    assert warm.proc.poll() is not None and not warm.workdir.exists()
    # A driver killed while its warm process waits: the process notices at the gate and quits.
    script = ("import sys; from pytest_abtraffic._load import LoadPlan; "
              "from pytest_abtraffic._load._driver import WarmLocust; "
              "w = WarmLocust(LoadPlan(users=1, duration_s=5.0)); print(w.proc.pid, flush=True); "
              "import time; time.sleep(60)")
    driver = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    locust_pid = None
    try:
        assert driver.stdout is not None
        locust_pid = int(driver.stdout.readline())
        driver.kill()
        driver.wait(10)
        for _ in range(300):  # up to ~30 s: the gate checks its parent every few ms once Locust is up
            if not _alive(locust_pid):
                break
            time.sleep(0.1)
        assert not _alive(locust_pid), "a warm locust kept waiting after its driver was killed"
        assert server.connections == 0
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(10)
        if driver.stdout is not None:
            driver.stdout.close()
        if locust_pid is not None and _alive(locust_pid):
            os.killpg(locust_pid, signal.SIGKILL)


def test_gevent_does_not_patch_the_calling_process(server: TinyServer) -> None:
    result = run_locust(server.url, LoadPlan(users=2, max_requests=50, duration_s=20))
    assert result.requests >= 50
    assert "locust" not in sys.modules
    if not GEVENT_LOADED_BEFORE:  # something outside this kit may have imported gevent itself
        assert "gevent" not in sys.modules
    assert threading.Thread.__module__ == "threading"
    assert socket.socket.__module__ == "socket"
    assert time.sleep.__module__ == "time"
    # Real threads still run in parallel with the caller.
    done = threading.Event()
    threading.Thread(target=done.set).start()
    assert done.wait(5)


def test_incluster_entry_prints_records_the_parser_reads(server: TinyServer) -> None:
    base = [sys.executable, "-m", "pytest_abtraffic._load.incluster", "--host", server.url]
    plan = json.dumps(LoadPlan(users=2, max_requests=80, duration_s=20).to_dict())
    out = subprocess.run([*base, "--plan", plan, "--gzip"], capture_output=True, text=True, timeout=60, check=True)
    result = parse_records_from_log(out.stderr + out.stdout)
    assert isinstance(result, LoadResult)
    assert result.stop_reason == "budget"
    assert result.requests >= 80
    assert set(result.counts()) == {"v1", "v2"}
    assert "abtraffic: done" in out.stderr

    bad = subprocess.run([*base[:-1], "not-a-url", "--users", "1", "--duration", "1"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert bad.returncode == 1
    with pytest.raises(LoadError, match="in-cluster load run failed: cannot send load to 'not-a-url'"):
        parse_records_from_log(bad.stdout)


def test_reference_model_server_when_available() -> None:
    try:
        fixtures = fixtures_dir()
    except FileNotFoundError:
        pytest.skip("fixtures directory not available")
    if not (fixtures / "ai_model" / "__main__.py").is_file():
        pytest.skip("reference model server fixtures/ai_model is not there yet")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(fixtures), "MODEL_VERSION": "v1"}
    proc = subprocess.Popen([sys.executable, "-m", "ai_model", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):  # up to ~10 s
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=1):
                    break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"reference server exited: {proc.stderr.read().decode() if proc.stderr else ''}")
                time.sleep(0.1)
        else:
            pytest.fail("reference server did not answer /healthz")
        result = run_locust(url, LoadPlan(users=3, max_requests=60, duration_s=30))
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()
    assert result.failures() == {}
    assert result.counts() == {"v1": result.requests}


# -- the load pod's code, as the ConfigMap lays it out (no kit installed, no kit image) --------------

_POD_RUNNER = r'''
import importlib.abc, runpy, sys
FORBIDDEN = {"httpx", "yaml", "kubernetes", "uvicorn", "filelock", "pytest", "_pytest", "jsonschema"}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError(f"the load pod has no {name}")
        return None

sys.meta_path.insert(0, Block())
sys.argv = ["incluster", *sys.argv[1:]]
runpy.run_module("pytest_abtraffic._load.incluster", run_name="__main__")
'''


def test_pod_code_from_the_configmap_runs_the_load_without_the_kit(server: TinyServer, tmp_path: Path) -> None:
    """The load Job's ConfigMap items, written out as the kubelet mounts them, run the load with only
    the standard library and Locust importable (the official Locust image has nothing else)."""
    from pytest_abtraffic._cluster._loadjob import CONFIG_MOUNT, load_job_objects
    from pytest_abtraffic._spec import default_spec

    spec = default_spec()
    plan = LoadPlan(users=2, max_requests=60, duration_s=20)
    _, config_map, job = load_job_objects(spec, "abt", plan, job_name="j", image="locustio/locust:2.47.0")
    mount = tmp_path / "etc-abtraffic"
    volume = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    for item in volume["configMap"]["items"]:
        target = mount / item["path"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(config_map["data"][item["key"]])
    container = job["spec"]["template"]["spec"]["containers"][0]
    pythonpath = next(e["value"] for e in container["env"] if e["name"] == "PYTHONPATH")
    code = mount / Path(pythonpath).relative_to(CONFIG_MOUNT)
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONDONTWRITEBYTECODE": "1"}
    probe = subprocess.run([sys.executable, "-c", "import pytest_abtraffic._load.incluster as m; print(m.__file__)"],
                           env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
    assert probe.stdout.strip().startswith(str(code)), "the kit under test, not the mounted code, was imported"
    out = subprocess.run([sys.executable, "-c", _POD_RUNNER, "--host", server.url,
                          "--plan", json.dumps(plan.to_dict()), "--workdir", str(tmp_path / "work")],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=90, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = parse_records_from_log(out.stdout)
    assert result.requests >= 60 and set(result.counts()) == {"v1", "v2"}

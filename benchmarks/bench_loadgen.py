"""Throughput of the built-in locustfile (per-request recording) against a plain FastHttpUser.

Both run as one Locust process each, in alternating rounds, against the same server, with the
same command line. A probe locustfile loaded next to each (``-f probe.py,LOCUSTFILE``) counts
requests and reads the process CPU time between Locust's ``test_start`` and ``quitting``, so each
run reports requests/s and CPU microseconds per request. On a shared machine the CPU cost per
request is the steadier figure; its inverse is what one dedicated core could do.

It also measures the driver itself through ``run_locust``: launch-to-first-request start-up time
and the CPU the calling process spends tailing the records file.

    .venv/bin/python benchmarks/bench_loadgen.py                     # a fast asyncio server here
    .venv/bin/python benchmarks/bench_loadgen.py --server reference  # fixtures/ai_model
    .venv/bin/python benchmarks/bench_loadgen.py --target http://127.0.0.1:4140  # e.g. through a proxy
    .venv/bin/python benchmarks/bench_loadgen.py --server reference --predictions  # + prediction notes

``--predictions`` adds a third side: the built-in locustfile noting each response's prediction
(``ABTRAFFIC_PREDICTION_FIELD``, as ``disagreement<=`` does), and prints its req/s against the
built-in locustfile's without it.

The local server runs in its own process, so Locust and the server do not share a GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_abtraffic._load import LoadPlan, LoadSnapshot, locustfile_path, run_locust  # noqa: E402
from pytest_abtraffic._load import _protocol as proto  # noqa: E402

PLAIN_LOCUSTFILE = '''
from locust import FastHttpUser, constant, task

BODY = '{"instances":[[5.1,3.5,1.4,0.2]]}'
HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


class Plain(FastHttpUser):
    wait_time = constant(0)

    @task
    def predict(self):
        self.client.post("/predict", data=BODY, headers=HEADERS)
'''

PROBE_LOCUSTFILE = '''
import json
import os
import time

from locust import events

_state = {"n": 0}


@events.test_start.add_listener
def _start(**_):
    _state["cpu0"], _state["wall0"] = time.process_time(), time.time()


@events.request.add_listener
def _count(**_):
    _state["n"] += 1


@events.quitting.add_listener
def _done(**_):
    with open(os.environ["BENCH_PROBE_OUT"], "w") as fh:
        json.dump({"n": _state["n"], "cpu_s": time.process_time() - _state["cpu0"],
                   "wall_s": time.time() - _state["wall0"]}, fh)
'''


# -- a fast local server (only used with --server tiny) ---------------------------------------------

class _Proto(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buf = b""
        self.n = 0

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = self.buf[:end].lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length:]
            self.n += 1
            version = b"v2" if self.n % 10 == 0 else b"v1"
            body = b'{"predictions":[0]}'
            self.transport.write(b"HTTP/1.1 200 OK\r\nx-model-version: " + version
                                 + b"\r\ncontent-type: application/json\r\ncontent-length: "
                                 + str(len(body)).encode() + b"\r\n\r\n" + body)


def serve(port: int) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Proto, "127.0.0.1", port)
        await server.serve_forever()

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def local_server(kind: str) -> Iterator[str]:
    port = _free_port()
    if kind == "tiny":
        argv = [sys.executable, __file__, "--serve", str(port)]
        env = dict(os.environ)
    else:
        argv = [sys.executable, "-m", "ai_model", "--host", "127.0.0.1", "--port", str(port)]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "fixtures"), "MODEL_VERSION": "v1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                req = urllib.request.Request(f"{url}/predict", data=b'{"instances":[[5.1,3.5,1.4,0.2]]}',
                                             headers={"content-type": "application/json"})
                with urllib.request.urlopen(req, timeout=1):
                    break
            except OSError:
                if proc.poll() is not None:
                    raise SystemExit(f"{kind} server exited with {proc.returncode}") from None
                time.sleep(0.1)
        else:
            raise SystemExit(f"{kind} server did not answer on {url}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# -- measurements ------------------------------------------------------------------------------------

def run_probed(url: str, locustfile: Path, users: int, duration: float, workdir: Path,
               env_extra: dict[str, str]) -> dict[str, float]:
    """One locust process with the probe: requests, req/s and CPU us per request."""
    out = workdir / "probe.json"
    out.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "locust", "-f", f"{workdir / 'probe.py'},{locustfile}", "--headless",
            "-u", str(users), "-r", str(users), "-H", url, "-t", f"{max(1, round(duration))}s",
            "--json-file", str(workdir / "stats"), "--exit-code-on-error", "0", "--only-summary",
            "--loglevel", "ERROR"]
    env = {**os.environ, "BENCH_PROBE_OUT": str(out), "PYTHONPATH": str(ROOT), **env_extra}
    subprocess.run(argv, cwd=workdir, env=env, check=True, timeout=duration + 60, stdout=subprocess.DEVNULL)
    d = json.loads(out.read_text())
    return {"n": d["n"], "rps": d["n"] / d["wall_s"], "cpu_us": d["cpu_s"] / d["n"] * 1e6}


class _StartClock:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.started = float("nan")

    def on_start(self) -> None:
        self.started = time.monotonic() - self.t0

    def on_progress(self, snapshot: LoadSnapshot, records: Any) -> bool:
        return False


def run_driver(url: str, users: int, duration: float) -> dict[str, float]:
    """Through run_locust: start-up seconds, req/s, and the caller's CPU us per record."""
    clock = _StartClock()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    result = run_locust(url, LoadPlan(users=users, spawn_rate=users, duration_s=duration), clock)
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return {"startup_s": clock.started, "rps": result.requests / result.duration_s,
            "parent_cpu_us": cpu / result.requests * 1e6, "n": result.requests}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", help="send load here instead of starting a server")
    p.add_argument("--server", choices=("tiny", "reference"), default="tiny")
    p.add_argument("--users", type=int, default=10)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--predictions", action="store_true",
                   help="also run the built-in locustfile with prediction notes (load.prediction_field)")
    p.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve)
        return 0

    @contextmanager
    def target() -> Iterator[str]:
        if args.target:
            yield args.target
        else:
            with local_server(args.server) as url:
                yield url

    builtin: list[dict[str, float]] = []
    plain: list[dict[str, float]] = []
    driver: list[dict[str, float]] = []
    noting: list[dict[str, float]] = []
    with target() as url, tempfile.TemporaryDirectory(prefix="bench-loadgen-") as tmp:
        wd = Path(tmp)
        (wd / "probe.py").write_text(PROBE_LOCUSTFILE)
        (wd / "plain.py").write_text(PLAIN_LOCUSTFILE)
        recording = {proto.ENV_RECORDS: str(wd / "records.jsonl")}
        print(f"target {url}, {args.users} users, {args.duration:g}s per run, {args.rounds} rounds, "
              f"cpus={os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
        for i in range(args.rounds):
            # Alternate the order so drift on a shared machine hits both sides alike.
            pair = [("built-in", locustfile_path(), recording, builtin), ("plain", wd / "plain.py", {}, plain)]
            if args.predictions:
                pair.insert(1, ("noting", locustfile_path(),
                                {**recording, proto.ENV_PREDICTION_FIELD: proto.DEFAULT_PREDICTION_FIELD}, noting))
            for name, lf, env, sink in pair if i % 2 == 0 else pair[::-1]:
                m = run_probed(url, lf, args.users, args.duration, wd, env)
                sink.append(m)
                print(f"round {i + 1} {name:8s}: {m['rps']:7.0f} req/s  {m['cpu_us']:6.1f} CPU us/request  "
                      f"({m['n']:.0f} requests)")
            driver.append(run_driver(url, args.users, args.duration))
            d = driver[-1]
            print(f"round {i + 1} run_locust: {d['rps']:7.0f} req/s  start-up {d['startup_s']:.2f}s  "
                  f"caller {d['parent_cpu_us']:.1f} CPU us/record")

    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    b_rps, p_rps = med(builtin, "rps"), med(plain, "rps")
    b_cpu, p_cpu = med(builtin, "cpu_us"), med(plain, "cpu_us")
    print(f"median req/s: built-in {b_rps:.0f}, plain {p_rps:.0f}; ratio built-in/plain {b_rps / p_rps:.3f}")
    print(f"median CPU us/request: built-in {b_cpu:.1f}, plain {p_cpu:.1f}; "
          f"throughput ratio from CPU cost {p_cpu / b_cpu:.3f} (one dedicated core: built-in ~{1e6 / b_cpu:.0f} "
          f"req/s, plain ~{1e6 / p_cpu:.0f} req/s)")
    if noting:
        n_rps, n_cpu = med(noting, "rps"), med(noting, "cpu_us")
        print(f"prediction notes: median req/s {n_rps:.0f} vs built-in {b_rps:.0f}, ratio {n_rps / b_rps:.3f}; "
              f"CPU us/request {n_cpu:.1f} vs {b_cpu:.1f} (ratio from CPU cost {b_cpu / n_cpu:.3f})")
    print(f"run_locust: start-up (launch -> first test_start) median {med(driver, 'startup_s'):.2f}s, "
          f"caller CPU {med(driver, 'parent_cpu_us'):.1f} us per record")
    return 0




if __name__ == "__main__":
    raise SystemExit(main())

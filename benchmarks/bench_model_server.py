"""Throughput and latency of one reference model server process on one core.

Run: ``python benchmarks/bench_model_server.py [--runs 5] [--duration 5] [--connections 8] [--check]``

Each run starts a fresh ``python -m ai_model`` pinned to CPU 0 (``taskset``, or
``sched_setaffinity`` right after start), pins this load client to CPU 1, and drives
``/predict`` over keep-alive HTTP/1.1 connections (asyncio raw streams, one request in flight
per connection) with batches of 1-4 iris instances drawn from a seeded generator. After a short
warm-up it measures for ``--duration`` seconds and prints requests/s, predictions/s, p50/p99
latency and the CPU share each side used: a server near 100% of its core with the client below
that means the server, not the client, is what was measured. The last line gives the median
over the runs. ``--check`` exits 1 if the median is below 2,000 predictions/s.

Loopback only; every run is bounded in time and the server is always killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
TARGET_PREDICTIONS_PER_S = 2000.0
WARMUP_S = 0.5
SERVER_CPU = 0
CLIENT_CPU = 1


@dataclass(frozen=True)
class RunResult:
    requests_per_s: float
    predictions_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu: float | None  # share of one core, 0..1
    client_cpu: float  # share of one core, 0..1

    def line(self) -> str:
        server = "n/a"
        if self.server_cpu is not None and self.requests_per_s > 0:
            # CPU time per request: a throughput figure that survives other load on the machine.
            server = f"{self.server_cpu:.0%} ({self.server_cpu * 1e6 / self.requests_per_s:.0f} us/req)"
        return (
            f"{self.requests_per_s:8.0f} req/s {self.predictions_per_s:8.0f} pred/s "
            f"p50 {self.p50_ms:6.2f} ms  p99 {self.p99_ms:6.2f} ms  errors {self.errors}  "
            f"cpu server {server} client {self.client_cpu:.0%}"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _requests(seed: int, count: int = 512) -> list[tuple[bytes, int]]:
    """Pre-encoded POST /predict requests with 1-4 instances each, and their batch sizes."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        batch = [
            [
                round(rng.uniform(4.3, 7.9), 1),
                round(rng.uniform(2.0, 4.4), 1),
                round(rng.uniform(1.0, 6.9), 1),
                round(rng.uniform(0.1, 2.5), 1),
            ]
            for _ in range(rng.randint(1, 4))
        ]
        body = json.dumps({"instances": batch}).encode()
        head = (
            f"POST /predict HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n"
        ).encode()
        out.append((head + body, len(batch)))
    return out


def _proc_cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime and stime are fields 14 and 15 of stat(5); index 11/12 after the comm field.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def _server(version: str, pin: bool) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = _free_port()
    argv = [sys.executable, "-m", "ai_model", "--port", str(port), "--version", version]
    taskset = shutil.which("taskset")
    if pin and taskset:
        argv = [taskset, "-c", str(SERVER_CPU), *argv]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_") and k != "ABTRAFFIC_FAULTS"}
    env["PYTHONPATH"] = str(FIXTURES)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        if pin and not taskset:
            os.sched_setaffinity(proc.pid, {SERVER_CPU})
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()  # the server prints one line once it listens
        if "listening" not in line:
            raise RuntimeError(f"server did not start (exit {proc.poll()}): {line!r}")
        yield proc, port
    finally:
        proc.kill()
        proc.wait(timeout=10)


async def _connection(
    port: int,
    requests: list[tuple[bytes, int]],
    offset: int,
    warm_until: float,
    stop_at: float,
    latencies: list[int],
    counts: list[int],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    i = offset
    n = len(requests)
    perf = time.perf_counter_ns
    try:
        while True:
            data, batch = requests[i % n]
            i += 1
            t0 = perf()
            writer.write(data)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            t1 = perf()
            if t0 >= warm_until:
                if t1 > stop_at:
                    return
                latencies.append(t1 - t0)
                counts[0] += batch
                if head[9:12] != b"200":
                    counts[1] += 1
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _drive(port: int, connections: int, duration: float, seed: int) -> tuple[list[int], int, int, float]:
    requests = _requests(seed)
    now = time.perf_counter_ns()
    warm_until = now + int(WARMUP_S * 1e9)
    stop_at = warm_until + int(duration * 1e9)
    latencies: list[int] = []
    counts = [0, 0]  # predictions, errors
    await asyncio.gather(
        *(_connection(port, requests, k * 37, warm_until, stop_at, latencies, counts) for k in range(connections))
    )
    return latencies, counts[0], counts[1], duration


def _percentile(sorted_ns: Sequence[int], q: float) -> float:
    # Nearest-rank percentile: the ceil(q*n)-th smallest sample.
    rank = min(len(sorted_ns), max(1, math.ceil(q * len(sorted_ns))))
    return sorted_ns[rank - 1] / 1e6


def run_once(version: str, connections: int, duration: float, seed: int, pin: bool) -> RunResult:
    with _server(version, pin) as (proc, port):
        # Sample CPU over the measured window only (after the warm-up).
        async def main() -> tuple[list[int], int, int, float, float | None, float]:
            task = asyncio.create_task(_drive(port, connections, duration, seed))
            await asyncio.sleep(WARMUP_S)
            s0, c0 = _proc_cpu_seconds(proc.pid), _self_cpu_seconds()
            latencies, predictions, errors, window = await task
            s1, c1 = _proc_cpu_seconds(proc.pid), _self_cpu_seconds()
            server_cpu = (s1 - s0) / window if s0 is not None and s1 is not None else None
            return latencies, predictions, errors, window, server_cpu, (c1 - c0) / window

        latencies, predictions, errors, window, server_cpu, client_cpu = asyncio.run(main())
    latencies.sort()
    return RunResult(
        requests_per_s=len(latencies) / window,
        predictions_per_s=predictions / window,
        p50_ms=_percentile(latencies, 0.50),
        p99_ms=_percentile(latencies, 0.99),
        errors=errors,
        server_cpu=server_cpu,
        client_cpu=client_cpu,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per run (max 60)")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections (default 8)")
    parser.add_argument("--version", default="v2", help="v1 (logreg) or v2 (mlp, the heavier model)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client to CPUs")
    parser.add_argument("--check", action="store_true", help="exit 1 if median < 2,000 predictions/s")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 60 or not 1 <= args.runs <= 20 or not 1 <= args.connections <= 256:
        parser.error("need 0 < --duration <= 60, 1 <= --runs <= 20, 1 <= --connections <= 256")

    pin = not args.no_pin and hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2
    if pin:
        os.sched_setaffinity(0, {CLIENT_CPU})
    where = f"server on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU}" if pin else "not pinned"
    print(
        f"model server {args.version}: {args.runs} runs x {args.duration:g}s, {args.connections} connections, "
        f"batches of 1-4, {where}"
    )
    results = []
    for run in range(1, args.runs + 1):
        result = run_once(args.version, args.connections, args.duration, args.seed + run, pin)
        results.append(result)
        print(f"run {run}: {result.line()}", flush=True)

    med = RunResult(
        requests_per_s=statistics.median(r.requests_per_s for r in results),
        predictions_per_s=statistics.median(r.predictions_per_s for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        errors=sum(r.errors for r in results),
        server_cpu=(
            statistics.median(r.server_cpu for r in results if r.server_cpu is not None)
            if all(r.server_cpu is not None for r in results)
            else None
        ),
        client_cpu=statistics.median(r.client_cpu for r in results),
    )
    print(f"median: {med.line()}")
    if med.server_cpu is not None and med.client_cpu >= 0.9 and med.client_cpu > med.server_cpu:
        print("note: the client used more CPU than the server; the numbers are a lower bound")
    if args.check and (med.predictions_per_s < TARGET_PREDICTIONS_PER_S or med.errors):
        print(f"FAIL: below {TARGET_PREDICTIONS_PER_S:.0f} predictions/s or errors seen", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How much the local proxy costs: one reference model server, direct vs through the proxy.

    .venv/bin/python benchmarks/bench_proxy.py [--duration 3] [--concurrency 16] [--rounds 3] [--json]

The same client (a keep-alive asyncio client in its own process, pre-built POST /predict) drives
the server directly and through the proxy, alternating in one run so drift hits both. Two
measurements per target and round:

* latency at concurrency 1 (one closed-loop connection): the proxy's added p50/p99;
* throughput at ``--concurrency`` connections: requests/s, and the ratio proxy/direct;
* CPU time per request of the proxy and of the model server (from /proc), which other load on
  the machine does not distort the way it distorts requests/s.

Printed figures are the median over the rounds of each per-round ratio or difference.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BODY = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'


def _request(port: int) -> bytes:
    return (b"POST /predict HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (port, len(BODY), BODY))


class _Conn(asyncio.Protocol):
    def __init__(self, request: bytes, latencies: list[int], stop_at: float, done: asyncio.Future[None]) -> None:
        self.request = request
        self.latencies = latencies
        self.stop_at = stop_at
        self.done = done
        self.buf = b""
        self.t0 = 0
        self.errors = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.t0 = time.perf_counter_ns()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        he = buf.find(b"\r\n\r\n")
        if he < 0:
            self.buf = buf
            return
        lower = buf[:he].lower()
        i = lower.find(b"content-length:")
        length = int(lower[i + 15:lower.find(b"\r\n", i) if lower.find(b"\r\n", i) > 0 else he].strip())
        if len(buf) < he + 4 + length:
            self.buf = buf
            return
        if not buf.startswith(b"HTTP/1.1 200"):
            self.errors += 1
        self.latencies.append(time.perf_counter_ns() - self.t0)
        self.buf = buf[he + 4 + length:]
        if time.perf_counter() < self.stop_at:
            self._send()
        else:
            assert self.transport is not None
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def _drive(port: int, concurrency: int, duration: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    request = _request(port)
    latencies: list[int] = []
    # Warm-up: open the connections and the proxy's upstream pool before timing.
    warm_stop = time.perf_counter() + 0.3
    warm: list[int] = []
    dones = [loop.create_future() for _ in range(concurrency)]
    for d in dones:
        await loop.create_connection(lambda d=d: _Conn(request, warm, warm_stop, d), "127.0.0.1", port)
    await asyncio.gather(*dones)
    start = time.perf_counter()
    stop_at = start + duration
    dones = [loop.create_future() for _ in range(concurrency)]
    conns: list[_Conn] = []
    for d in dones:
        _, proto = await loop.create_connection(lambda d=d: _Conn(request, latencies, stop_at, d), "127.0.0.1", port)
        conns.append(proto)
    await asyncio.gather(*dones)
    elapsed = time.perf_counter() - start
    lat = sorted(latencies)
    n = len(lat)
    return {
        "requests": n,
        "total_requests": n + len(warm),
        "errors": sum(c.errors for c in conns),
        "rps": n / elapsed,
        "p50_ms": lat[n // 2] / 1e6 if n else float("nan"),
        "p99_ms": lat[min(n - 1, int(n * 0.99))] / 1e6 if n else float("nan"),
    }


def client_main(port: int, concurrency: int, duration: float) -> None:
    import resource

    t0 = resource.getrusage(resource.RUSAGE_SELF)
    result = asyncio.run(_drive(port, concurrency, duration))
    t1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (t1.ru_utime + t1.ru_stime) - (t0.ru_utime + t0.ru_stime)
    result["client_cpu_us_per_req"] = cpu / max(1, result["total_requests"]) * 1e6
    print(json.dumps(result))


def _cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run_client(port: int, concurrency: int, duration: float, pids: dict[str, int]) -> dict[str, Any]:
    before = {name: _cpu_s(pid) for name, pid in pids.items()}
    out = subprocess.run(
        [sys.executable, __file__, "--client", str(port), "--concurrency", str(concurrency),
         "--duration", str(duration)],
        capture_output=True, text=True, timeout=duration + 60, check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    for name, pid in pids.items():
        # CPU time per request is robust to other load on the machine, unlike requests/s.
        result[f"{name}_cpu_us_per_req"] = (_cpu_s(pid) - before[name]) / result["total_requests"] * 1e6
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true", help="print the raw results as JSON too")
    p.add_argument("--client", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client is not None:
        client_main(args.client, args.concurrency, args.duration)
        return 0

    from pytest_abtraffic._local import LocalBackend
    from pytest_abtraffic._spec import default_spec, reference_variant

    # One replica of v1 gets every request; v2 exists (a Service) but has no replicas.
    spec = default_spec(variants=(reference_variant("v1", 1),
                                  dataclasses.replace(reference_variant("v2", 0), replicas=0)))
    backend = LocalBackend()
    rounds: list[dict[str, Any]] = []
    try:
        dep = backend.deploy(spec)
        server = dep.supervisor.live("v1")[0]
        direct_port, proxy_port = server.port, dep.proxy.port
        assert dep.proxy.process is not None
        pids = {"server": server.process.pid, "proxy": dep.proxy.process.pid}
        for i in range(args.rounds):
            r: dict[str, Any] = {}
            for name, port in (("direct", direct_port), ("proxy", proxy_port)):
                r[f"{name}_c1"] = _run_client(port, 1, args.duration, pids)
                r[f"{name}_load"] = _run_client(port, args.concurrency, args.duration, pids)
            r["throughput_ratio"] = r["proxy_load"]["rps"] / r["direct_load"]["rps"]
            r["added_p50_ms"] = r["proxy_c1"]["p50_ms"] - r["direct_c1"]["p50_ms"]
            r["added_p99_ms"] = r["proxy_c1"]["p99_ms"] - r["direct_c1"]["p99_ms"]
            r["added_p50_ms_loaded"] = r["proxy_load"]["p50_ms"] - r["direct_load"]["p50_ms"]
            r["proxy_cpu_us_per_req"] = r["proxy_load"]["proxy_cpu_us_per_req"]
            r["server_cpu_us_per_req"] = r["direct_load"]["server_cpu_us_per_req"]
            r["client_cpu_us_per_req"] = r["direct_load"]["client_cpu_us_per_req"]
            # If client, server and proxy were all CPU-bound on shared cores, throughput would
            # scale with 1 / (CPU per request of the whole path): a noise-free model of the ratio.
            direct_cpu = r["server_cpu_us_per_req"] + r["client_cpu_us_per_req"]
            r["cpu_model_ratio"] = direct_cpu / (direct_cpu + r["proxy_cpu_us_per_req"])
            rounds.append(r)
            errors = sum(r[k]["errors"] for k in r if k.endswith(("c1", "load")))
            print(f"round {i + 1}: direct {r['direct_load']['rps']:.0f} rps, proxy {r['proxy_load']['rps']:.0f} rps "
                  f"(ratio {r['throughput_ratio']:.2f}); c=1 p50 {r['direct_c1']['p50_ms']:.3f} -> "
                  f"{r['proxy_c1']['p50_ms']:.3f} ms, p99 {r['direct_c1']['p99_ms']:.3f} -> "
                  f"{r['proxy_c1']['p99_ms']:.3f} ms; CPU/request proxy {r['proxy_cpu_us_per_req']:.0f} us, "
                  f"server {r['server_cpu_us_per_req']:.0f} us, client {r['client_cpu_us_per_req']:.0f} us; "
                  f"errors {errors}", flush=True)
        counters = dep.mesh_counters()
    finally:
        backend.close()

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    print(f"\nmedian of {len(rounds)} rounds: throughput ratio {med('throughput_ratio'):.2f} "
          f"(target >= 0.70), added p50 {med('added_p50_ms'):.3f} ms (target <= 1 ms), "
          f"added p99 {med('added_p99_ms'):.3f} ms, added p50 under load {med('added_p50_ms_loaded'):.3f} ms; "
          f"CPU per request: proxy {med('proxy_cpu_us_per_req'):.0f} us, model server "
          f"{med('server_cpu_us_per_req'):.0f} us, client {med('client_cpu_us_per_req'):.0f} us "
          f"(CPU-bound model of the ratio: {med('cpu_model_ratio'):.2f})")
    print(f"proxy counters: { {k: v.requests for k, v in counters.items()} }")
    if args.json:
        print(json.dumps(rounds, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

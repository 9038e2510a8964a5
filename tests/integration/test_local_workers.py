"""``load.workers: N`` on the local backend: Locust's distributed mode in one command
(``locust --processes N``, Locust >= 2.19; the pinned 2.47.0 documents it in ``locust --help``):
a master and N forked workers, every worker's requests recorded, one merged result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_cli_workers_2_gives_one_merged_result_with_both_processes_records(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    proc = subprocess.run([sys.executable, "-m", "pytest_abtraffic._cli", "verify", "--workers", "2", "--users", "4",
                           "--requests", "1200", "--tolerance", "0.1", "--no-early-stop", "--seed", "11", "--quiet",
                           "--report-dir", str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (report,) = [p for p in tmp_path.glob("*.json")]
    doc = json.loads(report.read_text())
    records = doc["load"]["records"]
    assert len(records) >= 1200
    processes = {r[4].split("/")[0] for r in records}
    assert len(processes) == 2 and all(p.startswith("p") for p in processes), processes
    # One time origin for both processes: records interleave from the start instead of forming two runs.
    by_process = {p: sorted(r[0] for r in records if r[4].startswith(p + "/")) for p in processes}
    assert all(ts[0] < 2.0 for ts in by_process.values()), {p: ts[0] for p, ts in by_process.items()}
    assert doc["split"]["ok"] is True


def test_cluster_master_and_worker_pods_code_runs_as_processes(tmp_path: Path) -> None:
    """What the load pods run in distributed mode (``worker_mode="pods"``), as local processes: the master
    (``--master --expect-workers 2``) and two workers (``--worker-of host:port``), each writing its own
    records file; the workers' records hold every request, the master's none (Locust fires the request
    event where the request is made)."""
    import base64
    import socket

    sys.path.insert(0, str(Path(__file__).parent))
    from test_load_driver import TinyServer

    from pytest_abtraffic._load import LoadPlan
    from pytest_abtraffic._load._logparse import result_from_lines
    from pytest_abtraffic._load._recordsfile import RecordsStreamReader

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}, "ABTRAFFIC_MASTER_PORT": str(port)}
    plan = json.dumps(LoadPlan(users=4, max_requests=400, duration_s=30, workers=2, worker_mode="pods").to_dict())
    with TinyServer() as srv:
        base = [sys.executable, "-m", "pytest_abtraffic._load.incluster", "--host", srv.url, "--plan", plan]
        roles = {"master": [], "w0": ["--worker-of", f"127.0.0.1:{port}"], "w1": ["--worker-of", f"127.0.0.1:{port}"]}
        procs = {name: subprocess.Popen([*base, *extra, "--workdir", str(tmp_path / name),
                                         "--records-file", str(tmp_path / f"{name}.gz")], env=env, cwd=tmp_path,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for name, extra in roles.items()}
        try:
            errors = {name: p.communicate(timeout=120)[1] for name, p in procs.items()}
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
    assert all(p.returncode == 0 for p in procs.values()), errors
    results = {}
    for name in roles:
        reader = RecordsStreamReader()
        reader.feed(base64.encodebytes((tmp_path / f"{name}.gz").read_bytes()).decode())
        results[name] = result_from_lines(reader.finish())
    assert results["master"].requests == 0 and results["master"].locust_stats["role"] == "master"
    for name in ("w0", "w1"):
        assert results[name].requests > 0 and results[name].locust_stats["role"] == "worker"
        assert results[name].locust_stats["start_epoch"] > 0
    assert results["w0"].requests + results["w1"].requests >= 400

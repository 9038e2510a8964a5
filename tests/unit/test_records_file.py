"""Records that cannot be lost: the pod's gzip records file, read back by exec, checked by its trailer.

Why not the pod log: the kubelet rotates container logs at ``containerLogMaxSize`` (10 MiB by
default; kubernetes v1.32 ``pkg/kubelet/logs/container_log_manager.go``) and the log API returns only
the current file (linkerd-facts.md, "Checked against source"). Exec output arrives in websocket
frames of arbitrary size (kubernetes-client/python ``kubernetes/stream/ws_client.py``), which the
reader must reassemble.
"""

from __future__ import annotations

import base64
import gzip
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pytest_abtraffic._cluster._jobentry import RECORDS_READY, wait_for_collection
from pytest_abtraffic._errors import LoadError
from pytest_abtraffic._load import LoadResult, RequestRecord
from pytest_abtraffic._load import _protocol as proto
from pytest_abtraffic._load._logparse import result_from_lines
from pytest_abtraffic._load._recordsfile import READ_SCRIPT, RecordsStreamReader, write_records_file
from pytest_abtraffic._load.incluster import record_lines


def stream(path: Path) -> str:
    return base64.encodebytes(path.read_bytes()).decode("ascii")


def feed_in_frames(reader: RecordsStreamReader, data: str, seed: int = 3) -> None:
    rng = random.Random(seed)
    i = 0
    while i < len(data):
        n = rng.randint(1, 70_000)  # websocket frames of any size, base64 groups split anywhere
        reader.feed(data[i:i + n])
        i += n


def test_500k_records_round_trip_through_the_exec_reader(tmp_path: Path) -> None:
    """The lines as the in-cluster entry encodes them (``_protocol.encode_record``), through the file,
    base64 frames and the reader, back to the same rows (the reader itself takes ~0.2 s of this)."""
    n = 500_000
    lines = [proto.encode_record(i * 1e-4, "v2" if i % 10 == 0 else "v1", 503 if i % 997 == 0 else 200,
                                 1.0 + i % 50 / 10, f"u{i % 64}", "boom" if i % 997 == 0 else "") for i in range(n)]
    lines.append(proto.encode_event(summary={"duration_s": 50.0, "stop_reason": "budget"}))
    path = tmp_path / "records.jsonl.gz"
    count, _ = write_records_file(path, lines)
    assert count == n + 1
    reader = RecordsStreamReader()
    feed_in_frames(reader, stream(path))
    back = reader.finish()
    assert back == lines  # every line, in order (the trailer's sha256 was checked too)
    parsed = proto.parse_lines(back)
    assert len(parsed.rows) == n and parsed.summary == {"duration_s": 50.0, "stop_reason": "budget"}
    assert sum(1 for r in parsed.rows if r[1] == "v2") == n // 10
    assert sum(1 for r in parsed.rows if r[2] != 200) == len(range(0, n, 997))


def test_records_file_gives_back_the_load_result(tmp_path: Path) -> None:
    records = tuple(RequestRecord(i / 64, "v2" if i % 4 == 0 else "v1", 200, 2.0, f"u{i % 8}", "")
                    for i in range(2000))
    result = LoadResult(records=records, duration_s=20.0, stopped_early=True, stop_reason="observer")
    path = tmp_path / "r.gz"
    write_records_file(path, record_lines(result))
    reader = RecordsStreamReader()
    reader.feed(stream(path))
    back = result_from_lines(reader.finish())
    assert back.records == records and back.stop_reason == "observer" and back.stopped_early
    error = tmp_path / "e.gz"
    write_records_file(error, record_lines(None, error="locust exited 2"))
    reader = RecordsStreamReader()
    reader.feed(stream(error))
    with pytest.raises(LoadError, match="in-cluster load run failed: locust exited 2"):
        result_from_lines(reader.finish())


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    path = tmp_path / "r.gz"
    lines = [json.dumps([i * 0.01, "v1", 200, 1.0, "u0", ""]) + "\n" for i in range(5000)]
    write_records_file(path, [*lines, json.dumps({"summary": {"duration_s": 50.0}}) + "\n"])
    return path


@pytest.mark.parametrize("keep", [0.0, 0.3, 0.97, 0.9995])
def test_a_truncated_stream_is_a_clear_load_error(small_file: Path, keep: float) -> None:
    data = stream(small_file)
    reader = RecordsStreamReader("records file /tmp/r.gz of pod p")
    feed_in_frames(reader, data[: int(len(data) * keep)])
    with pytest.raises(LoadError, match="truncated") as info:
        reader.finish()
    assert "records file /tmp/r.gz of pod p" in str(info.value)


def test_a_wrong_count_or_checksum_in_the_trailer_is_caught(tmp_path: Path) -> None:
    body = [json.dumps([0.1, "v1", 200, 1.0, "u0", ""]) + "\n"] * 3
    for trailer, expected in (({"count": 4, "sha256": "0" * 64}, "trailer says 4 lines but 3"),
                              ({"count": 3, "sha256": "0" * 64}, "checksum does not match")):
        path = tmp_path / "bad.gz"
        path.write_bytes(gzip.compress(("".join(body) + json.dumps({"trailer": trailer}) + "\n").encode()))
        reader = RecordsStreamReader()
        reader.feed(stream(path))
        with pytest.raises(LoadError, match=expected):
            reader.finish()
    reader = RecordsStreamReader()
    with pytest.raises(LoadError, match="corrupt"):
        reader.feed("not base64 at all!")


def test_the_read_script_streams_the_file_and_marks_it_collected(small_file: Path, tmp_path: Path) -> None:
    """What the backend runs in the pod by exec (stdlib only: the pod's python)."""
    marker = tmp_path / "collected"
    out = subprocess.run([sys.executable, "-c", READ_SCRIPT, str(small_file), str(marker)], capture_output=True,
                         text=True, timeout=30, check=True)
    reader = RecordsStreamReader()
    reader.feed(out.stdout)
    assert len(reader.finish()) == 5001 and marker.exists()


def test_job_entry_announces_the_file_and_waits_for_the_backend(small_file: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "collected"
    threading.Timer(0.3, marker.touch).start()
    started = time.monotonic()
    assert wait_for_collection(small_file, marker, timeout_s=10, poll_s=0.02)
    assert 0.25 <= time.monotonic() - started < 10
    assert capsys.readouterr().out.startswith(RECORDS_READY)
    assert not wait_for_collection(small_file, tmp_path / "never", timeout_s=0.1, poll_s=0.02)
    assert not wait_for_collection(tmp_path / "missing.gz", marker, timeout_s=0.1)


def test_cluster_load_reads_records_by_exec_and_fails_clearly_on_a_cut_stream(tmp_path: Path) -> None:
    from _fake_kube import FakeKube, linkerd_objects
    from test_cluster_backends import NS, job_log, make
    from test_prereq import write_kubeconfig

    from pytest_abtraffic._load import LoadPlan
    from pytest_abtraffic._spec import default_spec

    fake = FakeKube(linkerd_objects(), job_log=lambda pod: job_log({"v1": 300, "v2": 100}))
    backend = make(fake, write_kubeconfig(tmp_path / "kubeconfig", ["dev"]), tmp_path)
    dep = backend.deploy(default_spec(), namespace=NS)
    result = dep.run_load(LoadPlan(max_requests=400))
    assert result.counts() == {"v1": 300, "v2": 100}
    reads = [argv for _, argv in fake.exec_calls if argv[:2] == ["python", "-c"] and argv[2] == READ_SCRIPT]
    assert reads and reads[-1][3:] == ["/tmp/abtraffic-records.jsonl.gz", "/tmp/abtraffic-records.collected"]
    fake.records_cut_at = 200
    with pytest.raises(LoadError, match="truncated"):
        dep.run_load(LoadPlan(max_requests=400))
    backend.close()


def test_distributed_cluster_load_merges_every_worker_pods_records(tmp_path: Path) -> None:
    """Master pod (no records of its own: requests fire on the workers) + 2 worker pods, each with its
    own records file read by exec; times aligned by each pod's start epoch; mesh counters summed."""
    from _fake_kube import FakeKube, linkerd_objects
    from test_cluster_backends import NS, job_log, make
    from test_prereq import write_kubeconfig

    from pytest_abtraffic._load import LoadPlan
    from pytest_abtraffic._load.incluster import records_block
    from pytest_abtraffic._spec import default_spec

    def log(pod: str) -> str:
        if "-workers-" not in pod:  # the master
            master = LoadResult(records=(), duration_s=3.0, stopped_early=False, stop_reason="exited",
                                locust_stats={"role": "master", "start_epoch": 1000.0})
            return "\n".join(["abtraffic: locust started", records_block(master),
                              f"{RECORDS_READY} /tmp/abtraffic-records.jsonl.gz (10 bytes)"]) + "\n"
        counts = {"v1": 120, "v2": 40} if pod.endswith("abcde") else {"v1": 60, "v2": 20}
        text = job_log(counts)
        start = 1000.5 if pod.endswith("abcde") else 1001.0
        block_start = text.index("=== ABTRAFFIC RECORDS BEGIN")
        block_end = text.index("=== ABTRAFFIC RECORDS END ===") + len("=== ABTRAFFIC RECORDS END ===\n")
        records = tuple(RequestRecord(0.01 * (i + 1), "v1" if i % 4 else "v2", 200, 1.0, f"u{i % 3}")
                        for i in range(sum(counts.values())))
        worker = LoadResult(records=records, duration_s=2.0, stopped_early=False, stop_reason="budget",
                            locust_stats={"role": "worker", "start_epoch": start})
        return text[:block_start] + records_block(worker) + text[block_end:]

    fake = FakeKube(linkerd_objects(), job_log=log)
    backend = make(fake, write_kubeconfig(tmp_path / "kubeconfig", ["dev"]), tmp_path)
    dep = backend.deploy(default_spec(), namespace=NS)
    result = dep.run_load(LoadPlan(max_requests=240, users=4, workers=2))
    assert result.requests == 160 + 80
    prefixes = {r.connection.split("/")[0] for r in result.records}
    assert prefixes == {"p0", "p1"}
    # Pods in name order: p0 = ...-abcd1 (started at 1001.0), p1 = ...-abcde (started 0.5 s earlier).
    first = min(r.t for r in result.records if r.connection.startswith("p0/"))
    assert first == pytest.approx(0.5 + 0.01)  # the later pod's times moved by its later start
    assert min(r.t for r in result.records if r.connection.startswith("p1/")) == pytest.approx(0.01)
    assert result.locust_stats is not None and result.locust_stats["abtraffic_in_cluster"]["pod"]
    mesh = dep.mesh_counters()  # both workers' proxies counted: 120 + 60 and 40 + 20
    assert {k: sum(c.responses_by_status.values()) for k, c in mesh.items()} == {"v1": 180, "v2": 60}
    objects = [c for c in fake.calls if c[0] == "apply"]
    assert any(c[1] == "Service" and c[3].endswith("-master") for c in objects)
    assert any(c[1] == "Job" and c[3].endswith("-workers") for c in objects)
    reads = [name for name, argv in fake.exec_calls if argv[:3] == ["python", "-c", READ_SCRIPT]]
    assert len(reads) == 3  # the master and both workers
    backend.close()

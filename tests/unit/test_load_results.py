"""LoadResult arithmetic, LoadPlan validation, the records protocol and the pod-log parser.

Pure Python: nothing here starts Locust.
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import pytest

from pytest_abtraffic import LoadError, SpecError, UsageError
from pytest_abtraffic._load import (
    LoadPlan,
    LoadResult,
    RequestRecord,
    locustfile_path,
    parse_records_from_log,
)
from pytest_abtraffic._load import _protocol as proto
from pytest_abtraffic._load._driver import _RecordsTail, build_command
from pytest_abtraffic._load.incluster import records_block
from pytest_abtraffic._spec import ExperimentSpec, LoadSettings, Variant


def rec(t: float, version: str, status: int = 200, latency: float = 1.0, conn: str = "u1",
        error: str = "") -> RequestRecord:
    return RequestRecord(t=t, version=version, status=status, latency_ms=latency, connection=conn, error=error)


def result(records: list[RequestRecord], duration: float = 10.0, reason: str = "budget") -> LoadResult:
    return LoadResult(records=tuple(records), duration_s=duration, stopped_early=False, stop_reason=reason)


def synthetic(seed: int = 7, n: int = 2000) -> LoadResult:
    rng = random.Random(seed)
    records = []
    for i in range(n):
        version = "v2" if rng.random() < 0.1 else "v1"
        status = 200 if rng.random() < 0.95 else rng.choice([500, 503, 0])
        # Rounded like the records file (microseconds, 3 decimals of a ms), so round trips are exact.
        records.append(rec(t=round(i * 0.005, 6), version=version if status else "", status=status,
                           latency=round(rng.uniform(1, 50), 3), conn=f"u{i % 7}",
                           error="" if status == 200 else "boom"))
    return result(records, duration=n * 0.005)


# -- RequestRecord / counts -------------------------------------------------------------------

@pytest.mark.parametrize(("status", "ok"), [(0, False), (199, False), (200, True), (302, True), (399, True),
                                            (400, False), (500, False)])
def test_record_ok_is_status_2xx_or_3xx(status: int, ok: bool) -> None:
    assert rec(0.0, "v1", status).ok is ok


def test_counts_by_request_exclude_failures() -> None:
    r = result([rec(0, "v1"), rec(0.1, "v1"), rec(0.2, "v2"), rec(0.3, "v2", 500), rec(0.4, "", 0)])
    assert r.counts() == {"v1": 2, "v2": 1}
    assert r.counts("requests") == r.counts()
    assert r.requests == 5


def test_counts_by_connection_are_distinct_connection_version_pairs() -> None:
    r = result([
        rec(0, "v1", conn="a"), rec(1, "v1", conn="a"), rec(2, "v1", conn="a"),  # a: v1 only
        rec(0, "v2", conn="b"), rec(1, "v1", conn="b"),  # b saw both versions: counts for both
        rec(0, "v2", conn="c"), rec(1, "v2", 500, conn="c"),
        rec(0, "v2", 503, conn="d"),  # d never succeeded
    ])
    assert r.counts("connections") == {"v1": 2, "v2": 2}
    assert r.counts("requests") == {"v1": 4, "v2": 2}


def test_counts_success_without_version_is_unknown() -> None:
    assert result([rec(0, ""), rec(1, "v1")]).counts() == {"unknown": 1, "v1": 1}


def test_counts_unknown_unit_raises() -> None:
    with pytest.raises(ValueError, match="unknown counting unit 'bytes'"):
        result([rec(0, "v1")]).counts("bytes")


def test_failures_group_by_version_then_status() -> None:
    r = result([rec(0, "v1"), rec(0, "v2", 500), rec(0, "v2", 500), rec(0, "v2", 503), rec(0, "", 0),
                rec(0, "v1", 404)])
    assert r.failures() == {"v2": {500: 2, 503: 1}, "": {0: 1}, "v1": {404: 1}}


def test_failures_and_counts_cover_every_record() -> None:
    r = synthetic()
    total = sum(r.counts().values()) + sum(n for by in r.failures().values() for n in by.values())
    assert total == r.requests


# -- latency percentiles ------------------------------------------------------------------------

def test_latency_percentiles_interpolate_linearly() -> None:
    r = result([rec(i, "v1", latency=float(i)) for i in range(1, 101)] + [rec(0, "v2", latency=7.0)])
    p = r.latency_percentiles("v1")
    assert p["p50"] == pytest.approx(50.5)
    assert p["p90"] == pytest.approx(90.1)
    assert p["p99"] == pytest.approx(99.01)
    assert p["max"] == 100.0
    assert r.latency_percentiles("v2") == {"p50": 7.0, "p90": 7.0, "p99": 7.0, "max": 7.0}
    # all versions together: 101 values, median is the 51st smallest (50)
    assert r.latency_percentiles()["p50"] == pytest.approx(50.0)


def test_latency_percentiles_match_numpy_linear_on_random_data() -> None:
    rng = random.Random(3)
    values = [rng.expovariate(0.1) for _ in range(999)]
    r = result([rec(i, "v1", latency=v) for i, v in enumerate(values)])
    ordered = sorted(values)

    def linear(q: float) -> float:  # textbook definition, written independently of the code under test
        h = (len(ordered) - 1) * q
        lo = int(h)
        return ordered[lo] + (h - lo) * (ordered[min(lo + 1, len(ordered) - 1)] - ordered[lo])

    p = r.latency_percentiles()
    for key, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        assert p[key] == pytest.approx(linear(q))
    assert p["p50"] < p["p90"] < p["p99"] < p["max"]


def test_latency_percentiles_of_unknown_version_are_nan() -> None:
    p = result([rec(0, "v1")]).latency_percentiles("v9")
    assert set(p) == {"p50", "p90", "p99", "max"}
    assert all(math.isnan(v) for v in p.values())


# -- time series ---------------------------------------------------------------------------------

def test_timeseries_buckets_keep_gaps_and_errors() -> None:
    r = result([rec(0.1, "v1"), rec(0.9, "v2"), rec(1.0, "v1"), rec(1.5, "v1", 500), rec(3.2, "", 0)],
               duration=4.0)
    ts = r.timeseries(1.0)
    assert [b.start_s for b in ts] == [0.0, 1.0, 2.0, 3.0]
    assert [dict(b.counts) for b in ts] == [{"v1": 1, "v2": 1}, {"v1": 1, "v2": 0}, {"v1": 0, "v2": 0},
                                            {"v1": 0, "v2": 0}]
    assert [dict(b.errors) for b in ts] == [{}, {500: 1}, {}, {0: 1}]
    assert [b.total for b in ts] == [2, 2, 0, 1]


def test_timeseries_covers_duration_and_late_records() -> None:
    r = result([rec(0.2, "v1"), rec(5.4, "v1")], duration=3.0)  # a record after the nominal end
    ts = r.timeseries(0.5)
    assert len(ts) == 11  # 0.0 .. 5.0
    assert ts[-1].start_s == pytest.approx(5.0)
    assert sum(b.total for b in ts) == 2
    assert len(result([rec(0.2, "v1")], duration=3.0).timeseries(0.5)) == 6


def test_timeseries_totals_add_up() -> None:
    r = synthetic()
    ts = r.timeseries(0.25)
    assert sum(b.total for b in ts) == r.requests
    assert sum(sum(b.counts.values()) for b in ts) == sum(r.counts().values())
    with pytest.raises(ValueError, match="bucket_s"):
        r.timeseries(0)


# -- windows -------------------------------------------------------------------------------------

def test_window_is_half_open_and_keeps_absolute_times() -> None:
    r = result([rec(0.0, "v1"), rec(1.0, "v2"), rec(1.999, "v1"), rec(2.0, "v1")], duration=3.0)
    w = r.window(1.0, 2.0)
    assert [x.t for x in w.records] == [1.0, 1.999]
    assert w.counts() == {"v1": 1, "v2": 1}
    assert w.duration_s == pytest.approx(1.0)
    assert w.stop_reason == r.stop_reason
    assert r.window(2.5, 10.0).duration_s == pytest.approx(0.5)  # clipped at the run's end
    with pytest.raises(ValueError, match="before its start"):
        r.window(2.0, 1.0)


def test_windows_partition_the_records() -> None:
    r = synthetic()
    parts = [r.window(a, a + 1.0) for a in range(math.ceil(r.duration_s) + 1)]
    assert sum(p.requests for p in parts) == r.requests


# -- serialisation -------------------------------------------------------------------------------

def test_to_dict_from_dict_round_trip_through_json() -> None:
    r = LoadResult(records=synthetic().records, duration_s=10.0, stopped_early=True, stop_reason="verdict",
                   locust_stats={"entries": [{"name": "/predict [v1]", "num_requests": 3}], "exit_code": 0})
    d = json.loads(json.dumps(r.to_dict()))
    back = LoadResult.from_dict(d)
    assert back == r
    assert d["counts"] == r.counts()
    assert d["failures"]["v1"] == {str(k): v for k, v in r.failures()["v1"].items()}


def test_from_dict_accepts_record_mappings_and_rejects_other_formats() -> None:
    d = {"duration_s": 1, "stopped_early": False, "stop_reason": "duration",
         "records": [{"t": 0.5, "version": "v1", "status": 200, "latency_ms": 2, "connection": "u1"}]}
    back = LoadResult.from_dict(d)
    assert back.records == (rec(0.5, "v1", latency=2.0),)
    assert back.locust_stats is None
    with pytest.raises(ValueError, match="unsupported load result format"):
        LoadResult.from_dict({**d, "format": "something/9"})


# -- LoadPlan ------------------------------------------------------------------------------------

def test_plan_from_spec_maps_load_settings_and_version_header() -> None:
    spec = ExperimentSpec(
        variants=(Variant("v1", 90), Variant("v2", 10)),
        version_header="x-served-by",
        load=LoadSettings(users=4, spawn_rate=2.0, requests=500, duration_s=30.0, path="/v1/predict",
                          payloads=({"instances": [[1, 2, 3, 4]]},), unit="connections", locustfile="lf.py"),
    )
    plan = LoadPlan.from_spec(spec, users=8, connection_close=True)
    assert plan == LoadPlan(users=8, spawn_rate=2.0, max_requests=500, duration_s=30.0, path="/v1/predict",
                            payloads=({"instances": [[1, 2, 3, 4]]},), version_header="x-served-by",
                            unit="connections", locustfile="lf.py", connection_close=True)
    with pytest.raises(UsageError, match="unknown load plan field"):
        LoadPlan.from_spec(spec, userz=3)


def test_plan_dict_round_trip() -> None:
    plan = LoadPlan(users=3, max_requests=10, payloads=({"a": 1}, [1, 2]), wait_s=0.5)
    assert LoadPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


@pytest.mark.parametrize(("change", "field"), [
    ({"users": 0}, "load.users"),
    ({"users": True}, "load.users"),
    ({"spawn_rate": 0}, "load.spawn_rate"),
    ({"max_requests": 0}, "load.requests"),
    ({"duration_s": -1}, "load.duration_s"),
    ({"duration_s": math.inf}, "load.duration_s"),
    ({"path": "predict"}, "load.path"),
    ({"version_header": "bad header"}, "version_header"),
    ({"unit": "bytes"}, "load.unit"),
    ({"payloads": ()}, "load.payloads"),
    ({"payloads": ({1, 2},)}, "load.payloads"),
    ({"progress_interval_s": 0}, "load.progress_interval_s"),
    ({"wait_s": -0.1}, "load.wait_s"),
])
def test_plan_validation_names_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(SpecError) as info:
        LoadPlan(**change)  # type: ignore[arg-type]
    assert info.value.field == field


def test_build_command_runs_locust_headless_in_a_subprocess(tmp_path: Path) -> None:
    argv = build_command("http://127.0.0.1:9", LoadPlan(users=3, spawn_rate=1.5, duration_s=2.2),
                         locustfile_path(), tmp_path)
    assert argv[1:3] == ["-m", "locust"]
    text = " ".join(argv)
    for part in ("--headless", "-u 3", "-r 1.5", "-H http://127.0.0.1:9", "-t 5s", "--exit-code-on-error 0",
                 "--loglevel WARNING", "--only-summary"):
        assert part in text
    assert locustfile_path().name == "locustfile.py" and locustfile_path().is_file()


# -- records protocol ----------------------------------------------------------------------------

def test_records_tail_reads_complete_lines_only(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    tail = _RecordsTail(path)
    assert tail.poll() == []  # file not there yet
    line1 = proto.encode_record(0.25, "v1", 200, 1.5, "u1", "")
    line2 = proto.encode_record(0.5, "", 0, 3.0, "u2", "ConnectionRefusedError: [Errno 111]")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(proto.encode_event(start=1000.0, pid=1) + line1 + line2[:10])
        fh.flush()
        assert tail.poll() == [rec(0.25, "v1", latency=1.5)]
        assert tail.parsed.start_epoch == 1000.0
        fh.write(line2[10:] + proto.encode_event(stop="budget"))
        fh.flush()
        assert tail.poll() == [rec(0.5, "", 0, 3.0, "u2", "ConnectionRefusedError: [Errno 111]")]
    assert tail.parsed.stop == "budget"
    tail.close()


def test_parse_lines_skips_garbage() -> None:
    parsed = proto.parse_lines(["", "not json", "[1,2]", proto.encode_record(1, "v1", 200, 1, "u1", "")])
    assert parsed.rows == [(1.0, "v1", 200, 1.0, "u1", "")]


# -- pod logs ------------------------------------------------------------------------------------

def test_parse_records_from_log_plain_block_between_other_output() -> None:
    r = synthetic(n=50)
    log = "abtraffic: locust started\nsome noise\n" + records_block(r) + "trailing line\n"
    back = parse_records_from_log(log)
    assert back.records == r.records
    assert back.duration_s == r.duration_s
    assert back.stop_reason == r.stop_reason


def test_parse_records_from_log_strips_kubectl_prefixes_and_reads_gzip() -> None:
    r = synthetic(n=300)
    prefixed = "".join(f"[pod/load-abc/locust] {line}\n" for line in records_block(r).splitlines())
    assert parse_records_from_log("[pod/load-abc/locust] starting\n" + prefixed).records == r.records
    packed = records_block(r, compress=True)
    assert len(packed) < len(records_block(r))
    assert re.search(r"BEGIN gzip", packed)
    assert parse_records_from_log(packed).records == r.records


def test_parse_records_from_log_merges_pods_keeping_connections_apart() -> None:
    a = result([rec(0.1, "v1", conn="u1"), rec(0.3, "v2", conn="u1")], duration=2.0, reason="duration")
    b = result([rec(0.2, "v1", conn="u1")], duration=3.0, reason="duration")
    merged = parse_records_from_log(records_block(a) + records_block(b))
    assert [x.t for x in merged.records] == [0.1, 0.2, 0.3]
    assert merged.counts("connections") == {"v1": 2, "v2": 1}
    assert merged.duration_s == 3.0
    assert merged.stop_reason == "duration"


def test_parse_records_from_log_errors() -> None:
    with pytest.raises(LoadError, match="no records block"):
        parse_records_from_log("pod started\npod crashed\n")
    cut = records_block(synthetic(n=10)).splitlines()[:-3]
    with pytest.raises(LoadError, match="ends inside a records block"):
        parse_records_from_log("\n".join(cut))
    with pytest.raises(LoadError, match="in-cluster load run failed: locust exited with code 1"):
        parse_records_from_log(records_block(None, error="locust exited with code 1"))


# -- isolation -----------------------------------------------------------------------------------

def test_only_the_locust_side_modules_import_locust_or_gevent() -> None:
    package = Path(locustfile_path()).parent.parent
    allowed = {"locustfile.py", "locust_support.py"}
    pattern = re.compile(r"^\s*(import|from)\s+(locust|gevent|geventhttpclient)\b", re.MULTILINE)
    offenders = [str(p.relative_to(package)) for p in package.rglob("*.py")
                 if p.name not in allowed and pattern.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_incluster_progress_lines_keep_the_shape_the_cluster_backend_parses() -> None:
    import io

    from pytest_abtraffic._load import LoadSnapshot
    from pytest_abtraffic._load.incluster import _ProgressLog

    out = io.StringIO()
    log = _ProgressLog(out, every_s=0.0)
    log.on_start()
    assert log.on_progress(LoadSnapshot(2.25, 120, {"v1": 100, "v2": 15}, 5, 53.3), ()) is False
    lines = out.getvalue().splitlines()
    assert lines[0] == "abtraffic: locust started"
    assert lines[1] == "abtraffic: 2.2s 120 requests (53/s) ok={'v1': 100, 'v2': 15} failures=5"


# -- load.workers: Locust's distributed mode -------------------------------------------------------------


def test_workers_in_spec_plan_and_locust_command(tmp_path: Path) -> None:
    from pytest_abtraffic._errors import SpecError
    from pytest_abtraffic._load import LoadPlan
    from pytest_abtraffic._load._driver import _child_env, build_command
    from pytest_abtraffic._load._protocol import ENV_EPOCH_FILE, ENV_MAX_REQUESTS, ENV_PROCESSES
    from pytest_abtraffic._spec import default_spec, spec_from_mapping

    spec = spec_from_mapping({"load": {"workers": 3, "users": 6}})
    plan = LoadPlan.from_spec(spec, max_requests=900)
    assert plan.workers == 3 and LoadPlan.from_dict(plan.to_dict()).workers == 3
    argv = build_command("http://127.0.0.1:1", plan, tmp_path / "f.py", tmp_path)
    assert argv[argv.index("--processes") + 1] == "3"
    env = _child_env(plan, tmp_path / "records.jsonl", None)
    assert env[ENV_PROCESSES] == "3" and env[ENV_EPOCH_FILE] == str(tmp_path / "epoch")
    assert ENV_MAX_REQUESTS not in env  # the driver counts the budget over all workers
    single = LoadPlan.from_spec(default_spec(), max_requests=900)
    assert "--processes" not in build_command("http://127.0.0.1:1", single, tmp_path / "f.py", tmp_path)
    assert _child_env(single, tmp_path / "records.jsonl", None)[ENV_MAX_REQUESTS] == "900"
    for bad in (0, 65, True, 2.5):
        with pytest.raises(SpecError, match=r"load\.workers"):
            LoadPlan(workers=bad, users=100)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="at least as many users"):
        LoadPlan(workers=4, users=2)
    with pytest.raises(SpecError, match="worker_mode"):
        LoadPlan(workers=2, users=4, worker_mode="threads")  # type: ignore[arg-type]

"""Entry point of the in-cluster load Job: ``python -m pytest_abtraffic._load.incluster --host URL``.

Runs the same driver as the local backends (Locust in a subprocess, never imported here) against
``--host`` from inside the mesh, logs progress to stderr, and at the end prints the records to
stdout between ``=== ABTRAFFIC RECORDS BEGIN ===`` and ``=== ABTRAFFIC RECORDS END ===`` so the
backend reads them from the pod log with ``parse_records_from_log``. On failure the block holds
``{"error": ...}`` and the exit code is 1.

The plan comes from ``--plan JSON`` (or ``$ABTRAFFIC_PLAN``; ``LoadPlan.to_dict()`` form), and
single flags override its fields. ``--gzip`` prints base64(gzip(lines)) instead of plain lines,
for runs whose plain records would exceed the kubelet's log rotation size (10 MiB by default;
about 40 bytes per request).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

from .._errors import AbTrafficError
from . import _protocol as proto
from ._driver import run_locust
from ._plan import LoadPlan
from ._recordsfile import write_records_file
from ._results import LoadResult, LoadSnapshot, RequestRecord

ENV_PLAN = "ABTRAFFIC_PLAN"
LOG_EVERY_S = 1.0
B64_LINE = 76


class _ProgressLog:
    """Observer that only logs (never stops the run).

    The kind/existing backends follow the pod log and parse these two line shapes
    (``_cluster/_deployment.py``: ``_STARTED``, ``_PROGRESS``) to drive a live observer: keep them.
    """

    def __init__(self, stream: TextIO, every_s: float = LOG_EVERY_S) -> None:
        self.stream = stream
        self.every_s = every_s
        self.last = -math.inf

    def on_start(self) -> None:
        print("abtraffic: locust started", file=self.stream, flush=True)

    def on_progress(self, snapshot: LoadSnapshot, records: Sequence[RequestRecord]) -> bool:
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            print(f"abtraffic: {snapshot.elapsed_s:.1f}s {snapshot.requests} requests "
                  f"({snapshot.rps:.0f}/s) ok={dict(snapshot.counts)} failures={snapshot.failures}",
                  file=self.stream, flush=True)
        return False


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pytest_abtraffic._load.incluster",
                                description="Run pytest-abtraffic's load against HOST and print the records.")
    p.add_argument("--host", required=True, help="target base URL, e.g. http://ai-model-service.ns.svc:80")
    p.add_argument("--plan", default=os.environ.get(ENV_PLAN), help=f"LoadPlan as JSON (default ${ENV_PLAN})")
    p.add_argument("--users", type=int)
    p.add_argument("--spawn-rate", type=float)
    p.add_argument("--max-requests", type=int)
    p.add_argument("--duration", type=float, help="seconds")
    p.add_argument("--path")
    p.add_argument("--version-header")
    p.add_argument("--payloads-file", help="JSON list of request bodies")
    p.add_argument("--locustfile")
    p.add_argument("--connection-close", action="store_true", default=None)
    p.add_argument("--wait", type=float, help="pause after each request, seconds")
    p.add_argument("--timeout", type=float, help="bound on the whole run, seconds")
    p.add_argument("--workdir", help="where to keep the records file and Locust output (default: a temp dir)")
    p.add_argument("--gzip", action="store_true", help="print base64(gzip(records)) instead of plain lines")
    p.add_argument("--worker-of", metavar="HOST:PORT",
                   help="run as a Locust worker of that master (plan.worker_mode 'pods'); --host is then unused")
    p.add_argument("--records-file", help="write the records here (gzip, with a count + sha256 trailer) instead of "
                                          "printing them; the cluster backends read it back by exec")
    p.add_argument("--log-every", type=float, default=LOG_EVERY_S, help="seconds between progress lines on stderr")
    return p


def plan_from_args(args: argparse.Namespace) -> LoadPlan:
    values: dict[str, Any] = json.loads(args.plan) if args.plan else {}
    if not isinstance(values, dict):
        raise ValueError("--plan must be a JSON object")
    flags = {
        "users": args.users, "spawn_rate": args.spawn_rate, "max_requests": args.max_requests,
        "duration_s": args.duration, "path": args.path, "version_header": args.version_header,
        "locustfile": args.locustfile, "connection_close": args.connection_close, "wait_s": args.wait,
    }
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.payloads_file:
        values["payloads"] = json.loads(Path(args.payloads_file).read_text(encoding="utf-8"))
    return LoadPlan.from_dict(values)


def record_lines(result: LoadResult | None, *, error: str | None = None) -> Iterator[str]:
    """The records stream: one line per request, then the summary (or only an error event)."""
    if error is not None:
        yield proto.encode_event(error=error)
        return
    assert result is not None
    for r in result.records:
        yield proto.encode_record(r.t, r.version, r.status, r.latency_ms, r.connection, r.error)
    for payload, version, answer in result.predictions:
        yield proto.encode_event(prediction=[payload, version, None if answer is None else json.loads(answer)])
    yield proto.encode_event(summary={"duration_s": result.duration_s, "stop_reason": result.stop_reason,
                                      "stopped_early": result.stopped_early, "locust_stats": result.locust_stats})


def _emit(result: LoadResult | None, args: argparse.Namespace, *, error: str | None = None) -> None:
    if args.records_file:
        count, sha = write_records_file(Path(args.records_file), record_lines(result, error=error))
        print(f"abtraffic: {count} record lines written to {args.records_file} (sha256 {sha})", file=sys.stderr,
              flush=True)
        return
    sys.stdout.write(records_block(result, error=error, compress=args.gzip))
    sys.stdout.flush()


def records_block(result: LoadResult | None, *, error: str | None = None, compress: bool = False) -> str:
    """The text printed to stdout: markers around records and a summary (or an error)."""
    body = "".join(record_lines(result, error=error))
    if compress:
        packed = base64.b64encode(gzip.compress(body.encode("utf-8"))).decode("ascii")
        lines = "\n".join(packed[i:i + B64_LINE] for i in range(0, len(packed), B64_LINE))
        return f"{proto.BEGIN_MARKER_GZIP}\n{lines}\n{proto.END_MARKER}\n"
    return f"{proto.BEGIN_MARKER}\n{body}{proto.END_MARKER}\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        plan = plan_from_args(args)
        result = run_locust(args.host, plan, _ProgressLog(sys.stderr, args.log_every),
                            workdir=Path(args.workdir) if args.workdir else None, timeout_s=args.timeout,
                            worker_of=args.worker_of)
    except (AbTrafficError, ValueError, OSError) as exc:
        print(f"abtraffic: load failed: {exc}", file=sys.stderr, flush=True)
        _emit(None, args, error=str(exc))
        return 1
    print(f"abtraffic: done, {result.requests} requests in {result.duration_s:.1f}s "
          f"(stop: {result.stop_reason})", file=sys.stderr, flush=True)
    _emit(result, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

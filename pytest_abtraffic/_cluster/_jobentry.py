"""Entry of the meshed load Job's container: ``python -m pytest_abtraffic._cluster._jobentry``.

Runs ``python -m pytest_abtraffic._load.incluster ARGS`` (Locust against the apex Service; with
``--records-file`` the records go to a gzip file on the pod's emptyDir, ``_load/_recordsfile``), then,
from inside the pod:

0. prints ``abtraffic: records ready`` and waits (at most ``--collect-timeout``) until the backend
   has read the file by exec, which creates ``--collected-marker``: the proxy and the container stay
   up while the records are read, and nothing goes through the rotated pod log;

1. prints the pod's own Linkerd proxy metrics (admin port ``/metrics``) between
   ``=== ABTRAFFIC PROXY METRICS BEGIN ===`` / ``END`` markers: the client proxy's per-backend
   counters for the mesh-level cross-check, read before the proxy goes away;
2. asks the proxy to shut down (``POST /shutdown`` on the admin port), so the Job completes.

Why ``/shutdown`` and not native sidecars: an injected proxy runs until it is told to stop, which
keeps a Job pod alive after its main container exits. Linkerd offers two ways out: the proxy's
``/shutdown`` admin endpoint (what ``linkerd-await --shutdown`` calls; disabled by default since
Linkerd 2.16, enabled per pod by the ``config.linkerd.io/proxy-admin-shutdown: enabled``
annotation, and accepted only from the pod's loopback), or native sidecars
(``config.alpha.linkerd.io/proxy-enable-native-sidecar``, renamed ``config.beta...`` later), which
need Kubernetes 1.29+. The endpoint works on every Kubernetes version an existing cluster may run
and needs no extra binary in the image; the metrics must be read from inside the pod anyway.

Only the standard library is used: this runs in the load image, and nothing here should import
the kit's heavier modules before Locust's subprocess starts.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

RECORDS_READY = "abtraffic: records ready"
METRICS_BEGIN = "=== ABTRAFFIC PROXY METRICS BEGIN ==="
METRICS_END = "=== ABTRAFFIC PROXY METRICS END ==="
DEFAULT_ADMIN_PORT = 4191
ADMIN_TIMEOUT_S = 5.0
# Exit code when the load run outlived its deadline (as timeout(1) does).
EXIT_TIMEOUT = 124


def _opener() -> urllib.request.OpenerDirector:
    # Loopback only: ignore any HTTP(S)_PROXY variable the pod may inherit.
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


def proxy_metrics(port: int) -> str:
    with _opener().open(f"http://127.0.0.1:{port}/metrics", timeout=ADMIN_TIMEOUT_S) as resp:
        return str(resp.read().decode("utf-8", "replace"))


def proxy_shutdown(port: int) -> str:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/shutdown", data=b"", method="POST")
    with _opener().open(req, timeout=ADMIN_TIMEOUT_S) as resp:
        return f"{resp.status}"


def wait_for_collection(records: Path, marker: Path, timeout_s: float, *, poll_s: float = 0.2) -> bool:
    """Announce the records file and wait until the backend has read it (True) or the timeout (False)."""
    if not records.is_file():
        print(f"abtraffic: no records file at {records}", file=sys.stderr, flush=True)
        return False
    print(f"{RECORDS_READY} {records} ({records.stat().st_size} bytes)", flush=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if marker.exists():
            return True
        time.sleep(poll_s)
    print(f"abtraffic: nobody collected {records} within {timeout_s:g}s; stopping anyway", file=sys.stderr,
          flush=True)
    return False


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pytest_abtraffic._cluster._jobentry",
                                description="Run the in-cluster load, dump the proxy metrics, stop the proxy.")
    p.add_argument("--deadline", type=float, required=True, help="seconds the load run may take at most")
    p.add_argument("--admin-port", type=int, default=DEFAULT_ADMIN_PORT, help="the Linkerd proxy's admin port")
    p.add_argument("--records-file", help="the records file the load writes (announced, then waited on)")
    p.add_argument("--collected-marker", help="created by the backend's exec once it has read the records file")
    p.add_argument("--collect-timeout", type=float, default=300.0, help="seconds to wait for the marker")
    p.add_argument("load_args", nargs=argparse.REMAINDER, help="-- then the arguments of _load.incluster")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    load_args = list(args.load_args)
    if load_args and load_args[0] == "--":
        load_args = load_args[1:]
    # Streamed, not captured: the records and progress go straight into the pod log. Bounded by
    # --deadline below (and by the Job's activeDeadlineSeconds).
    child = subprocess.Popen([sys.executable, "-m", "pytest_abtraffic._load.incluster", *load_args])

    def forward(signum: int, frame: FrameType | None) -> None:
        child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        code = child.wait(timeout=args.deadline)
    except subprocess.TimeoutExpired:
        print(f"abtraffic: the load run exceeded its deadline of {args.deadline:g}s; killing it",
              file=sys.stderr, flush=True)
        child.kill()
        child.wait(timeout=30)
        code = EXIT_TIMEOUT
    if args.records_file and args.collected_marker:
        wait_for_collection(Path(args.records_file), Path(args.collected_marker), args.collect_timeout)
    try:
        text = proxy_metrics(args.admin_port)
    except (OSError, urllib.error.URLError) as exc:
        text = f"# error: cannot read the proxy metrics on 127.0.0.1:{args.admin_port} ({exc}); is the pod meshed?\n"
    sys.stdout.write(f"{METRICS_BEGIN}\n{text.rstrip()}\n{METRICS_END}\n")
    sys.stdout.flush()
    try:
        proxy_shutdown(args.admin_port)
    except (OSError, urllib.error.URLError) as exc:
        print(f"abtraffic: proxy shutdown request failed ({exc}); without a proxy that is expected, "
              "otherwise the Job ends at its activeDeadlineSeconds",
              file=sys.stderr, flush=True)
    return int(code)


if __name__ == "__main__":
    raise SystemExit(main())

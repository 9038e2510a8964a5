"""Child processes of the local backend: start, watch, probe, stop, and never leave one behind.

Every child (model server replica or proxy) starts in its own session (``start_new_session``),
so a terminal's Ctrl-C reaches only the test process, which then tears down in order. Children
are tracked in a process-wide registry that is emptied:

* by ``teardown``/``close`` (pass, failure, error in setup);
* by an ``atexit`` hook (interpreter exit, including after KeyboardInterrupt);
* on SIGTERM: if the test process has no SIGTERM handler of its own, ``install_signal_handlers``
  installs one that raises KeyboardInterrupt in the main thread, so pytest unwinds, runs fixture
  teardown and exits (a second SIGTERM kills every child at once and exits with 143);
* after a SIGKILL of the test process: every child carries ``ABTRAFFIC_LOCAL_MARKER`` in its
  environment, naming its owner's pid and start time; the next LocalBackend reaps children and
  temp dirs whose owner is gone (``reap_orphans``). The proxy also exits when its parent dies.

A replica's readiness is probed like a kubelet readiness probe feeding Endpoints: GET
``ready_path``, 200-399 is ready, one failure is unready (kubelet's default threshold is 3 at
10 s periods; here the period is 0.25 s). A process that exits is removed from the endpoints at
once (like a terminated pod).
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import BackendError, NotReadyError
from .._proc import tail

if TYPE_CHECKING:
    from .._spec import ExperimentSpec, Variant

MARKER_ENV = "ABTRAFFIC_LOCAL_MARKER"
TEMP_PREFIX = "abtraffic-local-"
LOG_TAIL_LINES = 25
_PLACEHOLDER = re.compile(r"\{(python|host|port|fixtures|version|admin_port)\}")
_PORT_IN_USE = re.compile(r"address already in use|errno 98|eaddrinuse", re.IGNORECASE)
MAX_PORT_RETRIES = 2


# ---------------------------------------------------------------------------------------------
# owner identity, ports


def _start_time(pid: int) -> str | None:
    """Process start time (clock ticks since boot) from /proc, to tell a pid from its reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def owner_token() -> str:
    pid = os.getpid()
    return f"{pid}-{_start_time(pid) or '0'}"


def _owner_alive(token: str) -> bool:
    pid_text, _, start = token.partition("-")
    if not pid_text.isdigit():
        return True  # not ours to judge
    pid = int(pid_text)
    current = _start_time(pid)
    if current is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return start == "0"
    return start in ("0", current)


_PORT_LOCK = threading.Lock()
_RECENT_PORTS: deque[int] = deque(maxlen=512)


def free_port() -> int:
    """A free loopback TCP port, not handed out recently by this process."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        with _PORT_LOCK:
            if port not in _RECENT_PORTS:
                _RECENT_PORTS.append(port)
                return port
    raise BackendError("could not find a free loopback port")


def port_is_free(port: int) -> bool:
    """Whether a server could listen on ``port`` now (SO_REUSEADDR, as servers bind: connections
    lingering in TIME_WAIT do not hold a port, a listener or a live connection's owner does)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
        except OSError:
            return False
    return True


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16 * 1024))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return tail(text, lines)


# ---------------------------------------------------------------------------------------------
# managed processes and the registry


class ManagedProcess:
    """A child in its own session/process group, reaped by a waiter thread.

    The waiter waits without reaping (``waitid(WNOWAIT)``), kills what is left of the group
    while the leader's pid still pins the group id, then reaps: no grandchild outlives it and no
    signal can hit a recycled pid.
    """

    def __init__(self, argv: list[str], env: Mapping[str, str], log_path: Path, label: str,
                 on_exit: Callable[[ManagedProcess], None] | None = None) -> None:
        self.argv = argv
        self.label = label
        self.log_path = log_path
        self.exited = threading.Event()
        self.returncode: int | None = None
        self._lock = threading.Lock()
        self._on_exit = on_exit
        with open(log_path, "ab") as log:
            self.popen = subprocess.Popen(  # argument list, never a shell
                argv, env=dict(env), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, close_fds=True,
            )
        self.pid = self.popen.pid
        REGISTRY.add(self)
        self._thread = threading.Thread(target=self._wait, name=f"abtraffic-wait-{label}", daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOWAIT)
        with self._lock:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                self.popen.wait()
            self.returncode = self.popen.returncode
            self.exited.set()
        REGISTRY.discard(self)
        if self._on_exit is not None:
            try:
                self._on_exit(self)
            except Exception as exc:  # a callback bug must not kill the waiter silently
                print(f"pytest-abtraffic: exit callback for {self.label} failed: {exc!r}", file=sys.stderr)

    @property
    def alive(self) -> bool:
        return not self.exited.is_set()

    def signal(self, sig: int) -> None:
        with self._lock:
            if self.exited.is_set():
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def stop(self, grace_s: float) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; returns once reaped."""
        self.signal(signal.SIGTERM)
        if not self.exited.wait(grace_s):
            self.kill()

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if not self.exited.wait(10.0):
            raise BackendError(f"process {self.label} (pid {self.pid}) did not exit after SIGKILL")


class _Registry:
    """Every child and temp dir the local backend created in this process."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._procs: dict[int, ManagedProcess] = {}
        self._dirs: set[str] = set()
        self._hooks = False
        self._sigterms = 0

    def add(self, proc: ManagedProcess) -> None:
        with self._lock:
            self._procs[proc.pid] = proc

    def discard(self, proc: ManagedProcess) -> None:
        with self._lock:
            self._procs.pop(proc.pid, None)

    def add_dir(self, path: str) -> None:
        with self._lock:
            self._dirs.add(path)

    def remove_dir(self, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)
        with self._lock:
            self._dirs.discard(path)

    def live(self) -> list[ManagedProcess]:
        with self._lock:
            return list(self._procs.values())

    def kill_all(self) -> None:
        """SIGKILL every child still running and delete every temp dir. Safe to call repeatedly."""
        procs = self.live()
        for proc in procs:
            proc.signal(signal.SIGKILL)
        for proc in procs:
            if not proc.exited.wait(5.0):
                with contextlib.suppress(Exception):
                    proc.popen.wait(timeout=2.0)
        with self._lock:
            dirs = list(self._dirs)
        for path in dirs:
            self.remove_dir(path)

    def install_hooks(self) -> None:
        with self._lock:
            if self._hooks:
                return
            self._hooks = True
        atexit.register(self.kill_all)
        install_signal_handlers()

    def on_sigterm(self, signum: int, frame: object) -> None:
        self._sigterms += 1
        if self._sigterms > 1:
            self.kill_all()
            os._exit(128 + signal.SIGTERM)
        # Unwind like Ctrl-C: pytest stops the session and runs fixture teardown; atexit follows.
        raise KeyboardInterrupt("SIGTERM received: stopping and cleaning up local processes")


REGISTRY = _Registry()


def install_signal_handlers() -> bool:
    """Turn SIGTERM into KeyboardInterrupt, only from the main thread and only if nobody else
    handles SIGTERM (the default action would end the process without atexit or teardown)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    signal.signal(signal.SIGTERM, REGISTRY.on_sigterm)
    return True


def reap_orphans() -> list[int]:
    """Kill children and delete temp dirs left by local-backend owners that no longer exist."""
    killed: list[int] = []
    proc_root = Path("/proc")
    if proc_root.is_dir():
        needle = MARKER_ENV.encode() + b"="
        me = os.getpid()
        for entry in proc_root.iterdir():
            if not entry.name.isdigit() or int(entry.name) == me:
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            start = environ.find(needle)
            if start < 0:
                continue
            end = environ.find(b"\0", start)
            value = environ[start + len(needle):end if end >= 0 else None].decode(errors="replace")
            token = value.split(":", 1)[0]
            if _owner_alive(token):
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
        # SIGKILL is asynchronous: a dying process has already lost its environ (so it no longer
        # looks marked) while it may still hold its sockets. Return once they are released.
        _wait_exited(killed, timeout_s=5.0)
    base = Path(tempfile.gettempdir())
    for path in base.glob(f"{TEMP_PREFIX}*"):
        token = path.name[len(TEMP_PREFIX):].split("_", 1)[0]
        if path.is_dir() and not _owner_alive(token):
            shutil.rmtree(path, ignore_errors=True)
    return killed


def _has_exited(pid: int) -> bool:
    """Gone, or a zombie: the kernel closes a process's files before it becomes a zombie."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state follows the parenthesised command name, which may itself contain ") ".
    return status[status.rfind(")") + 2:][:1] in ("Z", "X")


def _wait_exited(pids: list[int], *, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(pids)
    while pending and time.monotonic() < deadline:
        pending = [pid for pid in pending if not _has_exited(pid)]
        if pending:
            time.sleep(0.02)


def make_workdir(deployment_id: str) -> Path:
    path = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{owner_token()}_{deployment_id}_")
    REGISTRY.add_dir(path)
    return Path(path)


# ---------------------------------------------------------------------------------------------
# replicas of one experiment


@dataclass(eq=False)
class Replica:
    variant: str
    index: int
    port: int
    admin_port: int | None
    process: ManagedProcess
    started_at: float = field(default_factory=time.monotonic)
    ready: bool = False
    ever_ready: bool = False
    stopping: bool = False
    killed: bool = False
    port_retries: int = 0
    next_probe: float = 0.0

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "pid": self.process.pid, "port": self.port, "admin_port": self.admin_port,
                "ready": self.ready, "alive": self.process.alive, "returncode": self.process.returncode,
                "log": str(self.process.log_path)}


Publish = Callable[[Mapping[str, tuple[str, ...]]], None]


class Supervisor:
    """Runs the replicas of every variant and keeps the proxy's endpoints in line with readiness."""

    def __init__(self, spec: ExperimentSpec, workdir: Path, marker: str, publish: Publish, *,
                 probe_period_s: float = 0.25, startup_probe_period_s: float = 0.05,
                 probe_timeout_s: float = 1.0) -> None:
        self.spec = spec
        self.workdir = workdir
        self.marker = marker
        self._publish = publish
        self.probe_period_s = probe_period_s
        self.startup_probe_period_s = startup_probe_period_s
        self.probe_timeout_s = probe_timeout_s
        self._lock = threading.RLock()
        self._publish_lock = threading.Lock()
        self.replicas: dict[str, list[Replica]] = {v.name: [] for v in spec.variants}
        self._published: dict[str, tuple[str, ...]] = {}
        self._counter: dict[str, int] = {v.name: 0 for v in spec.variants}
        self._failures: dict[str, list[str]] = {v.name: [] for v in spec.variants}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.publish_errors: list[str] = []
        self._thread = threading.Thread(target=self._probe_loop, name="abtraffic-probe", daemon=True)

    # -- processes -----------------------------------------------------------------------------
    def _variant(self, name: str) -> Variant:
        return self.spec.variant(name)

    def _render(self, text: str, values: Mapping[str, str]) -> str:
        def sub(match: re.Match[str]) -> str:
            key = match.group(1)
            if key == "fixtures":
                from .._resources import fixtures_dir

                return str(fixtures_dir())
            if key not in values:
                raise BackendError(f"placeholder {{{key}}} has no value for this variant")
            return values[key]

        return _PLACEHOLDER.sub(sub, text)

    def start_replica(self, variant: str, *, port_retries: int = 0) -> Replica:
        v = self._variant(variant)
        if not v.command:
            raise BackendError(f"variant {variant!r} has no command to start")
        port = free_port()
        admin = free_port() if v.admin_port is not None else None
        values = {"python": sys.executable, "host": "127.0.0.1", "port": str(port), "version": v.name}
        if admin is not None:
            values["admin_port"] = str(admin)
        argv = [self._render(arg, values) for arg in v.command]
        env = dict(os.environ)
        env.update({k: self._render(val, values) for k, val in v.env.items()})
        env.update({k: self._render(val, values) for k, val in v.local_env.items()})
        if admin is not None:
            # How the reference server enables its fault admin API.
            env["MODEL_ADMIN_PORT"] = str(admin)
            env["ABTRAFFIC_FAULTS"] = "1"
        env.setdefault("PYTHONUNBUFFERED", "1")
        env[MARKER_ENV] = self.marker
        with self._lock:
            index = self._counter[variant]
            self._counter[variant] += 1
        label = f"{variant}-{index}"
        # Hold the lock until the replica is listed, so an instant exit still finds it in _on_exit.
        with self._lock:
            try:
                proc = ManagedProcess(argv, env, self.workdir / f"{label}.log", label, on_exit=self._on_exit)
            except OSError as exc:
                raise BackendError(f"cannot start variant {variant!r}: {argv[0]!r}: {exc}") from None
            replica = Replica(variant, index, port, admin, proc, port_retries=port_retries)
            self.replicas[variant].append(replica)
        self._wake.set()
        return replica

    def _find(self, proc: ManagedProcess) -> Replica | None:
        for reps in self.replicas.values():
            for r in reps:
                if r.process is proc:
                    return r
        return None

    def _on_exit(self, proc: ManagedProcess) -> None:
        with self._lock:
            replica = self._find(proc)
            if replica is None:
                return
            replica.ready = False
            self.replicas[replica.variant].remove(replica)
            unexpected = not replica.stopping and not replica.killed and not self._stop.is_set()
        self.sync_endpoints()  # a dead process leaves the endpoints at once
        if not unexpected:
            return
        log = log_tail(proc.log_path)
        if not replica.ever_ready and replica.port_retries < MAX_PORT_RETRIES and _PORT_IN_USE.search(log):
            # Lost a race for the port we picked: start again on another one.
            with contextlib.suppress(BackendError):
                self.start_replica(replica.variant, port_retries=replica.port_retries + 1)
            return
        with self._lock:
            self._failures[replica.variant].append(
                f"replica {replica.variant}-{replica.index} (pid {proc.pid}, port {replica.port}) exited with "
                f"status {proc.returncode}{'' if replica.ever_ready else ' before becoming ready'}; "
                f"log tail ({proc.log_path.name}):\n{log}")

    def live(self, variant: str) -> list[Replica]:
        with self._lock:
            return [r for r in self.replicas[variant] if not r.stopping and r.process.alive]

    # -- readiness probing ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def _probe(self, replica: Replica, path: str) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", replica.port, timeout=self.probe_timeout_s)
        try:
            conn.request("GET", path, headers={"user-agent": "abtraffic-readiness-probe"})
            status = conn.getresponse().status
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()
        return 200 <= status < 400

    def _probe_loop(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                due = [r for reps in self.replicas.values() for r in reps
                       if not r.stopping and r.process.alive and r.next_probe <= now]
            changed = False
            for r in due:
                ok = self._probe(r, self._variant(r.variant).ready_path)
                with self._lock:
                    period = self.probe_period_s if (r.ever_ready or ok) else self.startup_probe_period_s
                    r.next_probe = time.monotonic() + period
                    if r.stopping or not r.process.alive:
                        ok = False
                    if ok != r.ready:
                        r.ready = ok
                        changed = True
                    if ok:
                        r.ever_ready = True
            if changed:
                self.sync_endpoints()
            self._wake.wait(self.startup_probe_period_s)
            self._wake.clear()

    def sync_endpoints(self) -> None:
        """Publish each variant's ready addresses to the proxy when they changed."""
        with self._publish_lock:
            with self._lock:
                current = {name: tuple(r.addr for r in reps if r.ready and not r.stopping and r.process.alive)
                           for name, reps in self.replicas.items()}
                changed = {name: addrs for name, addrs in current.items() if self._published.get(name) != addrs}
            if not changed:
                return
            try:
                self._publish(changed)
            except Exception as exc:
                self.publish_errors.append(str(exc))
                return
            with self._lock:
                self._published.update(changed)

    def published(self, variant: str) -> int:
        with self._lock:
            return len(self._published.get(variant, ()))

    def ready_count(self, variant: str) -> int:
        with self._lock:
            return sum(1 for r in self.replicas[variant] if r.ready and not r.stopping and r.process.alive)

    # -- waiting -------------------------------------------------------------------------------
    def wait_ready(self, wanted: Mapping[str, int], timeout_s: float, what: str = "deploy") -> None:
        """Wait until each variant has ``wanted[v]`` ready replicas known to the proxy."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                failures = {v: list(self._failures[v]) for v in wanted if self._failures[v]}
                pending = {v: n for v, n in wanted.items()
                           if n > 0 and (self.ready_count(v) < n or len(self._published.get(v, ())) < n)}
            if failures:
                name = next(iter(failures))
                raise NotReadyError(f"{what}: variant {name!r} did not become ready: {failures[name][0]}")
            if not pending:
                return
            if time.monotonic() >= deadline:
                raise NotReadyError(f"{what}: {self._not_ready_report(pending, timeout_s)}")
            time.sleep(0.02)

    def _not_ready_report(self, pending: Mapping[str, int], timeout_s: float) -> str:
        parts = []
        for name, n in pending.items():
            with self._lock:
                reps = list(self.replicas[name])
                ready = sum(1 for r in reps if r.ready)
            path = self._variant(name).ready_path
            text = (f"variant {name!r} has {ready}/{n} replicas ready after {timeout_s:g}s "
                    f"(readiness probe GET {path})")
            not_ready = [r for r in reps if not r.ready]
            if not_ready:
                r = not_ready[0]
                text += (f"; replica {name}-{r.index} (pid {r.process.pid}, port {r.port}) log tail "
                         f"({r.process.log_path.name}):\n{log_tail(r.process.log_path)}")
            parts.append(text)
        if self.publish_errors:
            parts.append(f"the proxy did not take endpoint updates: {self.publish_errors[-1]}")
        return "\n".join(parts)

    def clear_failures(self, variant: str) -> None:
        with self._lock:
            self._failures[variant].clear()

    # -- chaos ---------------------------------------------------------------------------------
    def kill(self, variant: str, count: int | None) -> int:
        live = self.live(variant)
        victims = live if count is None else live[:max(0, count)]
        with self._lock:
            for r in victims:
                r.killed = True
        for r in victims:
            r.process.signal(signal.SIGKILL)
        for r in victims:
            r.process.exited.wait(10.0)
        self.sync_endpoints()
        return len(victims)

    def stop_replicas(self, victims: list[Replica], grace_s: float) -> None:
        """Graceful stop: out of the endpoints first (like a terminating pod), then SIGTERM, then SIGKILL."""
        if not victims:
            return
        with self._lock:
            for r in victims:
                r.stopping = True
                r.ready = False
        self.sync_endpoints()
        for r in victims:
            r.process.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for r in victims:
            if not r.process.exited.wait(max(0.0, deadline - time.monotonic())):
                r.process.kill()
        for r in victims:
            r.process.exited.wait(10.0)

    def scale(self, variant: str, replicas: int, *, grace_s: float, ready_timeout_s: float) -> None:
        live = self.live(variant)
        if replicas > len(live):
            self.clear_failures(variant)
            for _ in range(replicas - len(live)):
                self.start_replica(variant)
            self.wait_ready({variant: replicas}, ready_timeout_s, what=f"scale {variant} to {replicas}")
        elif replicas < len(live):
            self.stop_replicas(live[replicas:], grace_s)

    def set_fault(self, variant: str, body: Mapping[str, Any]) -> int:
        v = self._variant(variant)
        if v.admin_port is None:
            raise BackendError(f"variant {variant!r} has no admin_port, so it has no fault admin API; "
                               "faults need a server like the reference one (ABTRAFFIC_FAULTS=1, MODEL_ADMIN_PORT)")
        data = json.dumps(dict(body)).encode()
        done = 0
        for r in self.live(variant):
            assert r.admin_port is not None
            conn = http.client.HTTPConnection("127.0.0.1", r.admin_port, timeout=5.0)
            try:
                conn.request("PUT", "/faults", body=data, headers={"content-type": "application/json"})
                resp = conn.getresponse()
                text = resp.read().decode(errors="replace")
            except (OSError, http.client.HTTPException) as exc:
                raise BackendError(f"PUT /faults on replica {variant}-{r.index} (admin port {r.admin_port}) "
                                   f"failed: {exc}") from None
            finally:
                conn.close()
            if not 200 <= resp.status < 300:
                raise BackendError(f"PUT /faults on replica {variant}-{r.index} answered {resp.status}: {text}")
            done += 1
        self._wake.set()
        return done

    def shutdown(self, grace_s: float) -> None:
        """Stop probing and stop every replica (SIGINT in parallel, SIGKILL after ``grace_s``).

        Teardown, not a pod deletion: the proxy is already stopped, so no request can reach a
        replica and no drain is owed. SIGINT asks a server to stop now (the reference server drains
        on SIGTERM, which would only hold teardown for its ``--drain-seconds``); a process that
        ignores it is killed after ``grace_s``.
        """
        self._stop.set()
        self._wake.set()
        with self._lock:
            everyone = [r for reps in self.replicas.values() for r in reps]
            for r in everyone:
                r.stopping = True
        for r in everyone:
            r.process.signal(signal.SIGINT if grace_s > 0 else signal.SIGKILL)
        deadline = time.monotonic() + grace_s
        for r in everyone:
            if not r.process.exited.wait(max(0.0, deadline - time.monotonic())):
                with contextlib.suppress(BackendError):
                    r.process.kill()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {name: [r.describe() for r in reps] for name, reps in self.replicas.items()}


__all__ = [
    "MARKER_ENV",
    "REGISTRY",
    "ManagedProcess",
    "Replica",
    "Supervisor",
    "free_port",
    "install_signal_handlers",
    "log_tail",
    "make_workdir",
    "owner_token",
    "port_is_free",
    "reap_orphans",
]

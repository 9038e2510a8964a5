"""The proxy process: bind the data and control ports, serve until stopped or orphaned."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import sys

from ._api import ControlApi
from ._client import ClientConn
from ._codec import MAX_HEAD_BYTES
from ._config import ProxyConfig
from ._router import Router

PARENT_CHECK_S = 0.5


async def serve(config: ProxyConfig, *, port: int = 0, control_port: int = 0, port_file: str | None = None,
                parent_pid: int | None = None) -> None:
    loop = asyncio.get_running_loop()
    router = Router(loop, config)
    stopped = asyncio.Event()
    api = ControlApi(router, stopped.set)
    server = await loop.create_server(lambda: ClientConn(router), "127.0.0.1", port, backlog=2048,
                                      reuse_address=True)
    control = await asyncio.start_server(api.handle, "127.0.0.1", control_port, limit=MAX_HEAD_BYTES)
    data_port = server.sockets[0].getsockname()[1]
    ctl_port = control.sockets[0].getsockname()[1]
    if port_file is not None:
        tmp = f"{port_file}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"port": data_port, "control_port": ctl_port, "pid": os.getpid()}, fh)
        os.replace(tmp, port_file)
    print(f"abtraffic proxy pid={os.getpid()} data=127.0.0.1:{data_port} control=127.0.0.1:{ctl_port}",
          flush=True)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)

    async def watch_parent() -> None:
        # Last line of defence: if whoever started us is gone, nobody will stop us.
        while True:
            await asyncio.sleep(PARENT_CHECK_S)
            if parent_pid is not None and os.getppid() != parent_pid:
                print("abtraffic proxy: parent process is gone; exiting", file=sys.stderr, flush=True)
                stopped.set()
                return

    watcher = loop.create_task(watch_parent())
    gc.collect()
    gc.freeze()  # long-lived objects out of the collector's way: fewer pauses on the data path
    try:
        await stopped.wait()
    finally:
        watcher.cancel()
        server.close()
        control.close()
        router.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 1.0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pytest_abtraffic._local._proxy",
                                description="Local emulation of a Linkerd outbound proxy for an A/B split.")
    p.add_argument("--config", required=True, help="JSON file with the proxy configuration")
    p.add_argument("--port", type=int, default=0, help="data port on 127.0.0.1 (default: any free port)")
    p.add_argument("--control-port", type=int, default=0, help="control API port on 127.0.0.1 (default: any)")
    p.add_argument("--port-file", help="write the bound ports here as JSON once listening")
    p.add_argument("--parent-pid", type=int, help="exit when this process is no longer our parent")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with open(args.config, encoding="utf-8") as fh:
            config = ProxyConfig.from_json(json.load(fh))
        if args.parent_pid is not None and os.getppid() != args.parent_pid:
            print("abtraffic proxy: parent already gone", file=sys.stderr)
            return 1
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        print(f"abtraffic proxy: bad configuration: {exc}", file=sys.stderr)
        return 2
    gc.set_threshold(50_000, 50, 50)
    coro = serve(config, port=args.port, control_port=args.control_port, port_file=args.port_file,
                 parent_pid=args.parent_pid)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(coro)
    return 0


__all__ = ["build_parser", "main", "serve"]

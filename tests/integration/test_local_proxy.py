"""The local proxy process on its own, against tiny in-test backends.

Each test names the Linkerd fact (docs: /work/shared/docs/linkerd-facts.md, repeated with sources
in docs/local-backend.md) it checks. The split-level acceptance tests against the reference model
server are in test_local_backend.py.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _local_testkit import TinyServer, send

from pytest_abtraffic._errors import BackendError
from pytest_abtraffic._local._control import ProxyProcess
from pytest_abtraffic._local._proxy import (
    DEFAULT_FAIL_FAST_TIMEOUT_S,
    AccrualConfig,
    ProxyConfig,
    RetryConfig,
    parse_retry_conditions,
)
from pytest_abtraffic._local._supervisor import owner_token

MakeProxy = Callable[..., ProxyProcess]
MakeServer = Callable[..., TinyServer]


@pytest.fixture
def servers() -> Iterator[MakeServer]:
    started: list[TinyServer] = []

    def make(name: str, **kw: object) -> TinyServer:
        srv = TinyServer(name, **kw).start()  # type: ignore[arg-type]
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


@pytest.fixture
def make_proxy(tmp_path: Path) -> Iterator[MakeProxy]:
    procs: list[ProxyProcess] = []

    def make(**config: object) -> ProxyProcess:
        workdir = tmp_path / f"proxy{len(procs)}"
        workdir.mkdir()
        proxy = ProxyProcess(workdir, ProxyConfig(**config), f"{owner_token()}:test-{uuid.uuid4().hex[:6]}")  # type: ignore[arg-type]
        procs.append(proxy)
        proxy.start()
        return proxy

    yield make
    for proxy in procs:
        proxy.stop(grace_s=2.0)
        assert proxy.process is not None and not proxy.process.alive


def test_retry_conditions_parse_like_linkerd_annotations() -> None:
    """retry.linkerd.io/http takes `5xx`, `gateway-error` (502-504) and ranges like `500-504`."""
    assert parse_retry_conditions("5xx") == frozenset(range(500, 600))
    assert parse_retry_conditions("gateway-error") == {502, 503, 504}
    assert parse_retry_conditions("500-502,504") == {500, 501, 502, 504}
    with pytest.raises(ValueError):
        parse_retry_conditions("4xx")


def test_balances_over_ready_endpoints_and_drops_refusing_ones(make_proxy: MakeProxy, servers: MakeServer) -> None:
    """Inside a backend the proxy balances over the Service's ready endpoints and stops using an
    endpoint that refuses connections (linkerd2-proxy balancer; P2C here, see docs)."""
    a, b = servers("v1"), servers("v1")
    proxy = make_proxy(weights={"v1": 1}, services=("v1",), endpoints={"v1": (a.addr, b.addr)}, seed=3)
    results = send(proxy.port, 1000, conns=8)
    assert Counter(r.status for r in results) == {200: 1000}
    assert a.requests > 200 and b.requests > 200, (a.requests, b.requests)

    b.stop()  # like a killed pod whose Endpoints update has not arrived yet: connections are refused
    before = a.requests
    results = send(proxy.port, 500, conns=8)
    assert Counter(r.status for r in results) == {200: 500}
    assert a.requests - before == 500
    eps = {e["addr"]: e for e in proxy.state()["backends"]["v1"]["endpoints"]}
    assert eps[b.addr]["refusing"] is True

    proxy.set_endpoints({"v1": [a.addr]})  # discovery catches up
    assert [e["addr"] for e in proxy.state()["backends"]["v1"]["endpoints"]] == [a.addr]


def test_queued_request_is_served_when_an_endpoint_appears(make_proxy: MakeProxy, servers: MakeServer) -> None:
    """A backend without ready endpoints queues requests up to the fail-fast timeout; an endpoint
    that becomes ready in time serves them (linkerd2-proxy balance queue; 504 only after the timeout)."""
    srv = servers("v1")
    proxy = make_proxy(weights={"v1": 1}, services=("v1",), fail_fast_timeout_s=5.0)

    async def scenario() -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        pending = loop.run_in_executor(None, lambda: send(proxy.port, 1, conns=1)[0])
        await asyncio.sleep(0.3)
        await loop.run_in_executor(None, proxy.set_endpoints, {"v1": [srv.addr]})
        result = await pending
        return result.status, result.elapsed_s

    status, elapsed = asyncio.run(scenario())
    assert status == 200
    assert elapsed >= 0.25  # it really waited in the queue
    assert proxy.counters()["backends"]["v1"]["proxy_errors"] == {}


def test_fail_fast_timeout_defaults_to_3s_then_load_shed_503(make_proxy: MakeProxy, servers: MakeServer) -> None:
    """The policy controller's queue fail-fast timeout defaults to 3 s: requests buffered for a
    backend with no endpoints fail with 504 after it; with no backend available the answer is 503
    (LoadShed). Proxy-made answers carry `l5d-proxy-error` and no version header
    (linkerd-facts.md "When a backend fails"; linkerd2-proxy balance/queue failfast.rs)."""
    assert DEFAULT_FAIL_FAST_TIMEOUT_S == 3.0
    proxy = make_proxy(weights={"v1": 1}, services=("v1",))
    assert proxy.state()["config"]["fail_fast_timeout_s"] == 3.0

    first = send(proxy.port, 1, conns=1)[0]
    assert first.status == 504
    assert first.elapsed_s >= 2.9
    assert "fail-fast" in first.headers["l5d-proxy-error"]
    assert first.version is None

    shed = send(proxy.port, 3, conns=1)
    assert [r.status for r in shed] == [503, 503, 503]
    assert all("load shed" in r.headers["l5d-proxy-error"] and r.version is None for r in shed)
    assert max(r.elapsed_s for r in shed) < first.elapsed_s  # answered at once, not after a wait

    srv = servers("v1")
    proxy.set_endpoints({"v1": [srv.addr]})  # ready again: the gate opens
    assert [r.status for r in send(proxy.port, 5, conns=1)] == [200] * 5
    counters = proxy.counters()
    assert counters["backends"]["v1"]["proxy_errors"] == {"fail_fast": 1}
    assert counters["route"]["errors"] == {"load_shed": 3}


def test_circuit_breaker_ejects_failing_endpoint_with_probation(make_proxy: MakeProxy, servers: MakeServer) -> None:
    """Consecutive-failures accrual: after max_failures failures in a row an endpoint is ejected
    for a backoff (min_penalty doubling to max_penalty), then admits one probe request
    (balancer.linkerd.io/failure-accrual; linkerd2-proxy consecutive_failures.rs). Same shape as
    Linkerd's own test: one good and one bad endpoint behind one Service."""
    good, bad = servers("v1"), servers("v1", status=500)
    proxy = make_proxy(weights={"v1": 1}, services=("v1",), endpoints={"v1": (good.addr, bad.addr)},
                       accrual=AccrualConfig(max_failures=3, min_penalty_s=0.4, max_penalty_s=1.0, jitter_ratio=0.0),
                       seed=5)
    t0 = time.perf_counter()
    results = send(proxy.port, 100_000, conns=4, duration_s=1.0)
    elapsed = time.perf_counter() - t0
    statuses = Counter(r.status for r in results)
    # 3 failures trip it; then at most one probe per penalty (0.4 s, 0.8 s, 1.0 s, ...).
    max_probes = 2 + int(elapsed / 0.4)
    assert bad.requests <= 3 + max_probes, (bad.requests, elapsed)
    assert bad.requests >= 4  # after the first 0.4 s penalty a probe was let through (and failed)
    assert statuses[500] == bad.requests
    assert statuses[200] == len(results) - bad.requests
    assert proxy.counters()["route"]["failure_accrual_ejections"] >= 1
    state = {e["addr"]: e for e in proxy.state()["backends"]["v1"]["endpoints"]}
    assert state[good.addr]["state"] == "open"


def test_retry_skips_bodies_over_64k(make_proxy: MakeProxy, servers: MakeServer) -> None:
    """Retries (retry.linkerd.io/http=5xx, limit 1) are not attempted for request bodies over
    64 KiB (linkerd-facts.md, retries)."""
    srv = servers("v1", status=503)
    proxy = make_proxy(weights={"v1": 1}, services=("v1",), endpoints={"v1": (srv.addr,)},
                       retry=RetryConfig(conditions="5xx", limit=1))
    small = send(proxy.port, 1, conns=1, body=b"{}")[0]
    assert small.status == 503
    assert srv.requests == 2  # first attempt + one retry
    big = send(proxy.port, 1, conns=1, body=b"x" * (64 * 1024 + 1))[0]
    assert big.status == 503
    assert srv.requests == 3  # no retry
    assert srv.bodies[-1] == 64 * 1024 + 1
    assert proxy.counters()["route"]["retries"] == 1


def test_fail_fast_is_retryable_and_the_retry_goes_elsewhere(make_proxy: MakeProxy, servers: MakeServer) -> None:
    """FailFast errors are retryable and a retry re-picks the backend: with v2 empty, requests
    first routed to v2 wait for the fail-fast timeout, fail fast, and the retry lands on v1
    (linkerd-facts.md, retries; distributor re-pick)."""
    srv = servers("v1")
    proxy = make_proxy(weights={"v1": 1, "v2": 1}, services=("v1", "v2"), endpoints={"v1": (srv.addr,)},
                       fail_fast_timeout_s=0.3, retry=RetryConfig(conditions="gateway-error", limit=1), seed=11)
    results = send(proxy.port, 300, conns=4)
    assert Counter(r.status for r in results) == {200: 300}
    counters = proxy.counters()
    assert counters["backends"]["v2"]["proxy_errors"]["fail_fast"] >= 1
    assert counters["route"]["retries"] == counters["backends"]["v2"]["proxy_errors"]["fail_fast"]


def test_framing_chunked_pipelined_and_head(make_proxy: MakeProxy, servers: MakeServer) -> None:
    """Transport details the split must survive: pipelined requests answered in order, chunked
    request and response bodies forwarded intact, HEAD answered without a body."""
    srv = servers("v1", chunked=True)
    proxy = make_proxy(weights={"v1": 1}, services=("v1",), endpoints={"v1": (srv.addr,)})

    async def scenario() -> list[tuple[int, dict[str, str], bytes]]:
        from _local_testkit import _read_response

        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        writer.write(
            b"POST /predict HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n"
            b"GET /info HTTP/1.1\r\nhost: x\r\n\r\n"
            b"HEAD /info HTTP/1.1\r\nhost: x\r\n\r\n")
        out = [await _read_response(reader), await _read_response(reader)]
        head = await reader.readuntil(b"\r\n\r\n")
        out.append((int(head.split(b" ")[1]), {}, b""))
        writer.close()
        return out

    out = asyncio.run(scenario())
    assert [o[0] for o in out] == [200, 200, 200]
    assert out[0][2] == b'{"version": "v1"}' and out[1][1]["x-model-version"] == "v1"
    assert srv.bodies[:1] == [0]  # the tiny server saw the chunked request (no content-length)


def test_control_api_rejects_bad_input(make_proxy: MakeProxy) -> None:
    """The control API validates its input and reports per-backend metrics in the shape of the
    proxy's outbound_http_route_backend_* series."""
    proxy = make_proxy(weights={"v1": 1}, services=("v1",))
    with pytest.raises(BackendError, match="400"):
        proxy.request("PUT", "/weights", {"weights": {"v1": -1}})
    with pytest.raises(BackendError, match="400"):
        proxy.request("PUT", "/weights", {"weights": {"v1": 0}})
    with pytest.raises(BackendError, match="no Service 'v9'"):
        proxy.set_endpoints({"v9": ["127.0.0.1:1"]})
    with pytest.raises(BackendError, match="404"):
        proxy.request("GET", "/nope")
    assert "outbound_http_route_backend_requests_total" in proxy.metrics()
    assert json.loads(json.dumps(proxy.health()))["status"] == "ok"

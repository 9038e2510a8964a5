"""The client side: a connection to the data port, framing requests into exchanges for the router."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import cast

from ._codec import (
    HEAD_END,
    MAX_HEAD_BYTES,
    RECV_BUFFER,
    ParseError,
    RequestHead,
    chunked_end,
    parse_request_head,
    simple_response,
)
from ._exchange import BAD_REQUEST, Exchange
from ._router import Router

MAX_REQUEST_BYTES = 16 * 1024 * 1024
MAX_PIPELINED = 64


class ClientConn(asyncio.BufferedProtocol):
    """A client connection to the data port: requests in order, one in flight at a time."""

    __slots__ = ("body_start", "buf", "chunk_pos", "closed", "continue_sent", "current", "eof", "head", "need",
                 "paused", "pending", "router", "transport")

    def __init__(self, router: Router) -> None:
        self.router = router
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.head: RequestHead | None = None
        self.body_start = 0
        self.chunk_pos = 0
        self.need = 0
        self.continue_sent = False
        self.current: Exchange | None = None
        self.pending: deque[Exchange] = deque()
        self.closed = False
        self.paused = False
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same interface.
        self.transport = cast(asyncio.Transport, transport)
        self.router.clients.add(self)

    def get_buffer(self, sizehint: int) -> memoryview:
        return RECV_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(RECV_BUFFER[:nbytes]))

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        buf = self.buf + data if self.buf else data
        while buf:
            head = self.head
            if head is None:
                he = buf.find(HEAD_END)
                if he < 0:
                    if len(buf) > MAX_HEAD_BYTES:
                        self._reject(431, "request head too large")
                        return
                    break
                try:
                    head = parse_request_head(buf[:he])
                except ParseError as exc:
                    self._reject(exc.status, exc.message)
                    return
                if head.content_length > MAX_REQUEST_BYTES:
                    self._reject(413, "request body too large for the local proxy")
                    return
                self.head = head
                self.body_start = self.chunk_pos = he + 4
                self.need = he + 4 + head.content_length
                self.continue_sent = False
            if head.chunked:
                try:
                    end, self.chunk_pos = chunked_end(buf, self.chunk_pos)
                except ParseError as exc:
                    self._reject(exc.status, exc.message)
                    return
                if end < 0 and len(buf) > MAX_REQUEST_BYTES:
                    self._reject(413, "request body too large for the local proxy")
                    return
            else:
                end = self.need if len(buf) >= self.need else -1
            if end < 0:
                if head.expect_continue and not self.continue_sent and self.transport is not None:
                    self.continue_sent = True
                    self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                break
            raw = buf if end == len(buf) else buf[:end]
            ex = Exchange(self, raw, head, end - self.body_start,
                          self.router.config.retry.limit if self.router.config.retry is not None else 0)
            self.head = None
            buf = buf[end:]
            if self.current is None:
                self.current = ex
                self.router.start(ex)
            else:
                self.pending.append(ex)
                if len(self.pending) >= MAX_PIPELINED and not self.paused and self.transport is not None:
                    self.paused = True
                    self.transport.pause_reading()
            if self.closed:
                return
        self.buf = buf

    def _reject(self, status: int, message: str) -> None:
        self.router.route.error(BAD_REQUEST)
        self.router.route.status(status)
        if self.transport is not None:
            self.transport.write(simple_response(status, f"{message}\n".encode(),
                                                 [("l5d-proxy-error", message)], close=True))
        self.close()

    def respond(self, ex: Exchange, raw: bytes, close_after: bool) -> None:
        if self.closed or self.transport is None:
            return
        self.transport.write(raw)
        if close_after or not ex.head.keep_alive or (self.eof and not self.pending):
            self.close()
            return
        self.current = None
        if self.pending:
            nxt = self.pending.popleft()
            self.current = nxt
            if self.paused and len(self.pending) < MAX_PIPELINED // 2:
                self.paused = False
                self.transport.resume_reading()
            self.router.start(nxt)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._drop()
        if self.transport is not None:
            self.transport.close()

    def _drop(self) -> None:
        self.router.clients.discard(self)
        if self.current is not None:
            self.router.cancel(self.current)
            self.current = None
        self.pending.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._drop()

    def eof_received(self) -> bool | None:
        # Half-closed by the client: finish what is in flight, then close.
        if self.current is None:
            return None
        self.eof = True
        return True


__all__ = ["ClientConn"]

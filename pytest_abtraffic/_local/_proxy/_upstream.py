"""Upstream connections: a keep-alive connection to one endpoint, framing the responses that come back."""

from __future__ import annotations

import asyncio
from typing import cast

from ._codec import (
    HEAD_END,
    MAX_HEAD_BYTES,
    RECV_BUFFER,
    ParseError,
    ResponseHead,
    chunked_end,
    parse_response_head,
    without_connection_header,
)
from ._exchange import EndpointSide, Exchange


class UpstreamConn(asyncio.BufferedProtocol):
    """A keep-alive connection to one endpoint, carrying one request at a time."""

    __slots__ = ("body_start", "buf", "chunk_pos", "closed", "endpoint", "ex", "got_bytes", "head", "need",
                 "reused", "transport")

    def __init__(self, endpoint: EndpointSide) -> None:
        self.endpoint = endpoint
        self.transport: asyncio.Transport | None = None
        self.ex: Exchange | None = None
        self.buf = b""
        self.head: ResponseHead | None = None
        self.body_start = 0
        self.chunk_pos = 0
        self.need = 0
        self.closed = False
        self.got_bytes = False
        self.reused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same interface.
        self.transport = cast(asyncio.Transport, transport)

    def send(self, ex: Exchange) -> None:
        self.ex = ex
        ex.upstream = self
        self.got_bytes = False
        assert self.transport is not None
        self.transport.write(ex.raw)

    def abort(self) -> None:
        """Drop the request in flight (timeout, client gone): the connection cannot be reused."""
        self.ex = None
        self.closed = True
        self.endpoint.forget(self)
        if self.transport is not None:
            self.transport.abort()

    def get_buffer(self, sizehint: int) -> memoryview:
        return RECV_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(bytes(RECV_BUFFER[:nbytes]))

    def data_received(self, data: bytes) -> None:
        ex = self.ex
        if ex is None:  # bytes nobody asked for: the connection is out of sync
            self.closed = True
            self.endpoint.forget(self)
            if self.transport is not None:
                self.transport.close()
            return
        self.got_bytes = True
        buf = self.buf + data if self.buf else data
        try:
            while True:
                head = self.head
                if head is None:
                    he = buf.find(HEAD_END)
                    if he < 0:
                        if len(buf) > MAX_HEAD_BYTES:
                            raise ParseError(502, "response head from the backend is too large")
                        self.buf = buf
                        return
                    head = parse_response_head(buf[:he], ex.head.is_head)
                    if head.status < 200:
                        if head.status == 101:
                            raise ParseError(502, "backend switched protocols, which the local proxy does not do")
                        buf = buf[he + 4:]  # 100 Continue and other interim answers: not forwarded
                        continue
                    self.head = head
                    self.body_start = he + 4
                    self.chunk_pos = he + 4
                    self.need = he + 4 + head.content_length
                if head.until_close:
                    self.buf = buf
                    return
                if head.chunked:
                    end, self.chunk_pos = chunked_end(buf, self.chunk_pos)
                    if end < 0:
                        self.buf = buf
                        return
                else:
                    end = self.need
                    if len(buf) < end:
                        self.buf = buf
                        return
                break
        except ParseError as exc:
            self.buf = b""
            self.head = None
            self._failed(exc.message)
            return
        extra = len(buf) > end
        raw = buf[:end] if extra else buf
        self.buf = b""
        self.head = None
        self._complete(head, raw, self.body_start - 4, reusable=head.keep_alive and not extra)

    def _complete(self, head: ResponseHead, raw: bytes, head_end: int, reusable: bool) -> None:
        ex = self.ex
        assert ex is not None
        self.ex = None
        ex.upstream = None
        ep = self.endpoint
        ep.inflight -= 1
        close_client = not raw.startswith(b"HTTP/1.1")
        if not head.keep_alive and not close_client and not head.until_close:
            # "connection: close" is hop-by-hop: the backend closes this connection, not the client's.
            raw = without_connection_header(raw, head_end)
        if head.until_close:
            close_client = True
        if reusable and not ep.removed and not self.closed:
            self.reused = True
            ep.idle.append(self)
        else:
            self.closed = True
            ep.forget(self)
            if self.transport is not None:
                self.transport.close()
        ep.backend.router.on_response(ex, ep, head.status, raw, close_client)

    def _failed(self, reason: str) -> None:
        ex = self.ex
        self.ex = None
        self.closed = True
        self.endpoint.forget(self)
        if self.transport is not None:
            self.transport.abort()
        if ex is not None:
            ex.upstream = None
            self.endpoint.inflight -= 1
            self.endpoint.backend.router.on_upstream_error(ex, self.endpoint, reason)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        ep = self.endpoint
        ep.forget(self)
        ex = self.ex
        if ex is None:
            return
        self.ex = None
        ex.upstream = None
        head = self.head
        if head is not None and head.until_close:
            # A body delimited by the close: the response is complete now.
            self.head = None
            raw, self.buf = self.buf, b""
            self.ex = ex
            self._complete(head, raw, self.body_start - 4, reusable=False)
            return
        ep.inflight -= 1
        if self.reused and not self.got_bytes and not ex.transparent_retry:
            # The backend closed an idle pooled connection just as it was reused: nothing was
            # processed, so send the request again on a fresh connection (not a retry). Its
            # other idle connections are most likely closed too (restart, kill): drop them.
            ex.transparent_retry = True
            ex.endpoint = None
            ep.drop_idle()
            ep.backend.dispatch(ex)
            return
        ep.backend.router.on_upstream_error(ex, ep, "connection closed by the backend before the response completed")


__all__ = ["UpstreamConn"]

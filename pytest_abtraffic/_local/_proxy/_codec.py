"""HTTP/1.x message framing for the local proxy (the codec both connection sides use).

The proxy forwards messages byte for byte, so all it needs from a message is where it ends and
the few hop-by-hop facts that decide connection reuse. That is found with ``bytes.find`` on the
lower-cased head, which keeps exact message boundaries (pipelined requests, verbatim forwarding)
and costs a few hundred nanoseconds per message. Content-Length and chunked bodies are framed;
a response without either is read until the connection closes.
"""

from __future__ import annotations

MAX_HEAD_BYTES = 64 * 1024
HEAD_END = b"\r\n\r\n"

_CONTENT_LENGTH = b"\r\ncontent-length:"
_TRANSFER_ENCODING = b"\r\ntransfer-encoding:"
_CONNECTION = b"\r\nconnection:"
_EXPECT = b"\r\nexpect:"

REASONS = {
    100: "Continue",
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Payload Too Large",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


class ParseError(Exception):
    """A message the proxy cannot frame; answered with ``status`` (requests) or a 502 (responses)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _header_value(lower_head: bytes, needle: bytes) -> bytes | None:
    """Value of the header whose ``\\r\\nname:`` is ``needle``; several occurrences are comma-joined."""
    i = lower_head.find(needle)
    if i < 0:
        return None
    values: list[bytes] = []
    while i >= 0:
        start = i + len(needle)
        end = lower_head.find(b"\r\n", start)
        if end < 0:
            end = len(lower_head)
        values.append(lower_head[start:end].strip())
        i = lower_head.find(needle, end)
    return values[0] if len(values) == 1 else b",".join(values)


def _content_length(lower_head: bytes, status: int) -> int:
    i = lower_head.find(_CONTENT_LENGTH)
    if i < 0:
        return -1
    start = i + 17
    end = lower_head.find(b"\r\n", start)
    if end < 0:
        end = len(lower_head)
    value = lower_head[start:end].strip()
    if lower_head.find(_CONTENT_LENGTH, end) >= 0:
        # Repeated headers (or a list) must all agree (RFC 9112 section 6.3).
        raw = _header_value(lower_head, _CONTENT_LENGTH) or b""
        parts = {p.strip() for p in raw.split(b",")}
        if len(parts) != 1:
            raise ParseError(status, "conflicting Content-Length headers")
        (value,) = parts
    if not value.isdigit():
        raise ParseError(status, "invalid Content-Length header")
    return int(value)


def _is_chunked(lower_head: bytes, status: int) -> bool:
    if lower_head.find(_TRANSFER_ENCODING) < 0:
        return False
    raw = _header_value(lower_head, _TRANSFER_ENCODING) or b""
    codings = [c.strip() for c in raw.split(b",")]
    if codings[-1] != b"chunked":
        raise ParseError(status, "unsupported Transfer-Encoding (chunked must be the final coding)")
    return True


class RequestHead:
    """What the proxy needs from a request head."""

    __slots__ = ("chunked", "content_length", "expect_continue", "is_head", "keep_alive", "method")

    def __init__(self, method: bytes, keep_alive: bool, content_length: int, chunked: bool,
                 expect_continue: bool) -> None:
        self.method = method
        self.is_head = method == b"HEAD"
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.expect_continue = expect_continue


def parse_request_head(head: bytes) -> RequestHead:
    """Parse ``head`` (request line and headers, without the final blank line)."""
    line_end = head.find(b"\r\n")
    request_line = head if line_end < 0 else head[:line_end]
    sp = request_line.find(b" ")
    method = request_line[:sp] if sp > 0 else b""
    version = request_line[-8:]
    if sp <= 0 or request_line.find(b" ", sp + 1) < 0 or not version.startswith(b"HTTP/1."):
        raise ParseError(400, "malformed request line")
    if method == b"CONNECT" or (request_line[sp + 1:sp + 2] == b"*" and method != b"OPTIONS"):
        raise ParseError(501, f"{method.decode('latin-1')} is not supported by the local proxy")
    if line_end < 0:
        return RequestHead(method, version == b"HTTP/1.1", 0, False, False)
    if b"\r\n " in head or b"\r\n\t" in head:
        raise ParseError(400, "obsolete header line folding is not accepted")
    lower = head.lower()
    keep_alive = version == b"HTTP/1.1"
    if lower.find(_CONNECTION) >= 0:
        connection = _header_value(lower, _CONNECTION) or b""
        keep_alive = b"close" not in connection if keep_alive else b"keep-alive" in connection
        if b"upgrade" in connection:
            raise ParseError(501, "protocol upgrades are not supported by the local proxy")
    chunked = _is_chunked(lower, 400)
    length = _content_length(lower, 400)
    if chunked:
        if length >= 0:
            raise ParseError(400, "both Transfer-Encoding and Content-Length are set")
    elif length < 0:
        length = 0
    expect = lower.find(_EXPECT) >= 0 and _header_value(lower, _EXPECT) == b"100-continue"
    return RequestHead(method, keep_alive, length, chunked, expect)


def request_line_and_headers(raw: bytes) -> tuple[str, str, list[tuple[str, str]]]:
    """Method, path and headers (in order) of a request already framed by ``parse_request_head``;
    only routing by header matches needs them, so the hot path does not pay for this."""
    head = raw[:raw.find(HEAD_END)].decode("latin-1")
    request_line, *lines = head.split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    headers = []
    for line in lines:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return method, target.split("?", 1)[0], headers


class ResponseHead:
    """What the proxy needs from a response head. ``content_length`` -1: see ``chunked``/``until_close``."""

    __slots__ = ("chunked", "content_length", "keep_alive", "status", "until_close")

    def __init__(self, status: int, keep_alive: bool, content_length: int, chunked: bool,
                 until_close: bool) -> None:
        self.status = status
        self.keep_alive = keep_alive
        self.content_length = content_length
        self.chunked = chunked
        self.until_close = until_close


def parse_response_head(head: bytes, request_is_head: bool) -> ResponseHead:
    if head[:7] != b"HTTP/1." or head[12:13] not in (b" ", b"\r", b"") or len(head) < 12:
        raise ParseError(502, "malformed status line from the backend")
    digits = head[9:12]
    if not digits.isdigit():
        raise ParseError(502, "malformed status code from the backend")
    status = int(digits)
    lower = head.lower()
    keep_alive = head[7:8] == b"1"
    if lower.find(_CONNECTION) >= 0:
        connection = _header_value(lower, _CONNECTION) or b""
        keep_alive = b"close" not in connection if keep_alive else b"keep-alive" in connection
    if request_is_head or status < 200 or status in (204, 304):
        return ResponseHead(status, keep_alive, 0, False, False)
    if _is_chunked(lower, 502):
        return ResponseHead(status, keep_alive, -1, True, False)
    length = _content_length(lower, 502)
    if length < 0:
        return ResponseHead(status, False, -1, False, True)
    return ResponseHead(status, keep_alive, length, False, False)


def chunked_end(buf: bytes | bytearray, pos: int) -> tuple[int, int]:
    """Scan a chunked body starting at ``pos`` (the start of a chunk-size line).

    Returns ``(end, resume)``: ``end`` is the offset just past the message, or -1 when more data is
    needed, in which case scanning can resume at ``resume`` once more bytes arrive.
    """
    n = len(buf)
    while True:
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            if n - pos > 1024:
                raise ParseError(400, "chunk-size line too long")
            return -1, pos
        size_field = bytes(buf[pos:line_end]).split(b";", 1)[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError:
            raise ParseError(400, "invalid chunk size") from None
        if size < 0:
            raise ParseError(400, "invalid chunk size")
        if size == 0:
            if n < line_end + 4:
                return -1, pos
            if buf[line_end + 2:line_end + 4] == b"\r\n":
                return line_end + 4, pos
            trailer_end = buf.find(HEAD_END, line_end)
            if trailer_end < 0:
                return -1, pos
            return trailer_end + 4, pos
        nxt = line_end + 2 + size + 2
        if nxt > n:
            return -1, pos
        if buf[nxt - 2:nxt] != b"\r\n":
            raise ParseError(400, "chunk data not followed by CRLF")
        pos = nxt


def without_connection_header(raw: bytes, head_end: int) -> bytes:
    """``raw`` with its Connection header lines removed (hop-by-hop: not forwarded to the client)."""
    head = raw[:head_end]
    lines = head.split(b"\r\n")
    kept = [lines[0], *(ln for ln in lines[1:] if not ln.lower().startswith(b"connection:"))]
    return b"\r\n".join(kept) + raw[head_end:]


def simple_response(status: int, body: bytes, headers: list[tuple[str, str]] | None = None,
                    close: bool = False, content_type: str = "text/plain; charset=utf-8") -> bytes:
    """A complete HTTP/1.1 response with a Content-Length body."""
    reason = REASONS.get(status, "Unknown")
    lines = [f"HTTP/1.1 {status} {reason}", f"content-type: {content_type}", f"content-length: {len(body)}"]
    for name, value in headers or ():
        lines.append(f"{name}: {value}")
    if close:
        lines.append("connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# One receive buffer for every connection: asyncio calls get_buffer, recv_into and buffer_updated
# back to back on the loop thread, and buffer_updated copies the bytes out at once. This avoids
# the 256 KiB allocation a plain Protocol's recv() makes per read (~10 us, twice per request).
RECV_BUFFER = memoryview(bytearray(256 * 1024))


__all__ = [
    "HEAD_END",
    "MAX_HEAD_BYTES",
    "RECV_BUFFER",
    "ParseError",
    "RequestHead",
    "ResponseHead",
    "chunked_end",
    "parse_request_head",
    "parse_response_head",
    "request_line_and_headers",
    "simple_response",
    "without_connection_header",
]


"""Records that cannot be lost: a compressed file in the load pod, read back by exec, with a trailer.

Pod logs are rotated by the kubelet at ``containerLogMaxSize`` (10 MiB by default) and
``read_namespaced_pod_log`` returns only the current file (linkerd-facts.md, "Checked against
source"), so a long run lost its END marker. The in-cluster entry therefore writes the records
lines (``_protocol``: rows, then ``{"summary": ...}`` or ``{"error": ...}``) to a gzip file on the
pod's emptyDir and ends it with a trailer line ``{"trailer": {"count": N, "sha256": HEX}}`` over
the N lines before it. The backend reads the file with an exec that prints it base64-encoded
(``READ_SCRIPT``; exec channels carry text) while the pod waits, and ``RecordsStreamReader``
decodes, decompresses and checks it incrementally: a stream that ends early, a wrong count or a
wrong checksum is a LoadError, never a silently shorter result.

Standard library only: this module runs in the load pod too.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._errors import LoadError

TRAILER_KEY = "trailer"
_TRAILER_START = b'\n{"' + TRAILER_KEY.encode() + b'"'
#: Run in the pod by exec: print the file base64-encoded, then create the "collected" marker.
READ_SCRIPT = (
    "import base64, sys\n"
    "with open(sys.argv[1], 'rb') as f:\n"
    "    base64.encode(f, sys.stdout.buffer)\n"
    "sys.stdout.buffer.flush()\n"
    "open(sys.argv[2], 'w').close()\n"
)


def write_records_file(path: Path, lines: Iterable[str]) -> tuple[int, str]:
    """Write ``lines`` (each ending in a newline) gzip-compressed, then the trailer; (count, sha256)."""
    digest = hashlib.sha256()
    count = 0
    tmp = path.with_name(path.name + ".part")
    with gzip.open(tmp, "wb", compresslevel=1) as out:
        batch: list[str] = []
        for line in lines:
            batch.append(line)
            if len(batch) >= 4096:
                count += len(batch)
                _write(out, digest, batch)
                batch = []
        count += len(batch)
        _write(out, digest, batch)
        out.write((json.dumps({TRAILER_KEY: {"count": count, "sha256": digest.hexdigest()}}) + "\n").encode())
    tmp.replace(path)  # readers never see a half-written file
    return count, digest.hexdigest()


def _write(out: gzip.GzipFile, digest: Any, batch: list[str]) -> None:
    data = "".join(batch).encode("utf-8")
    digest.update(data)
    out.write(data)


class RecordsStreamReader:
    """Feed the exec's stdout (base64 text, any chunking); ``finish()`` returns the checked lines."""

    def __init__(self, what: str = "records file") -> None:
        self.what = what
        self._b64 = b""
        self._inflate = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._rest = b""
        self._digest = hashlib.sha256()
        self._lines: list[str] = []
        self._trailer: dict[str, object] | None = None
        self.bytes_read = 0

    def feed(self, chunk: bytes | str) -> None:
        data = chunk.encode("ascii") if isinstance(chunk, str) else chunk
        self.bytes_read += len(data)
        self._b64 += data.replace(b"\n", b"").replace(b"\r", b"")
        usable = len(self._b64) - len(self._b64) % 4
        if not usable:
            return
        block, self._b64 = self._b64[:usable], self._b64[usable:]
        try:
            raw = base64.b64decode(block, validate=True)
            self._take(self._inflate.decompress(raw))
        except (binascii.Error, zlib.error) as exc:
            raise LoadError(f"the {self.what} stream is corrupt after {self.bytes_read:,} bytes: {exc}") from None

    def _take(self, data: bytes) -> None:
        buf = self._rest + data
        cut = buf.rfind(b"\n") + 1
        complete, self._rest = buf[:cut], buf[cut:]
        if not complete:
            return
        if self._trailer is not None:
            if complete.strip():
                raise LoadError(f"the {self.what} has data after its trailer")
            return
        # ``complete`` always starts at a line start (a partial line waits in ``_rest``).
        at = complete.find(_TRAILER_START)
        if complete.startswith(_TRAILER_START[1:]):
            body, tail = b"", complete
        elif at >= 0:
            body, tail = complete[:at + 1], complete[at + 1:]
        else:
            body, tail = complete, b""
        if body:
            self._digest.update(body)
            self._lines.extend(body.decode("utf-8").splitlines(keepends=True))
        if tail:
            first, _, after = tail.partition(b"\n")
            self._trailer = json.loads(first)[TRAILER_KEY]
            if after.strip():
                raise LoadError(f"the {self.what} has data after its trailer")

    def finish(self) -> list[str]:
        if self._b64:
            raise LoadError(f"the {self.what} stream ends in the middle of a base64 group "
                            f"({self.bytes_read:,} bytes read): truncated")
        if not self._inflate.eof:
            raise LoadError(f"the {self.what} stream is truncated: the gzip data ends early after "
                            f"{len(self._lines):,} complete lines and {self.bytes_read:,} bytes (no trailer)")
        if self._trailer is None:
            raise LoadError(f"the {self.what} has no trailer after {len(self._lines):,} lines: truncated")
        count, sha = self._trailer.get("count"), self._trailer.get("sha256")
        if count != len(self._lines):
            raise LoadError(f"the {self.what} trailer says {count} lines but {len(self._lines):,} arrived: truncated "
                            "or corrupt")
        if sha != self._digest.hexdigest():
            raise LoadError(f"the {self.what} checksum does not match its trailer (sha256 {sha} expected, "
                            f"{self._digest.hexdigest()} computed)")
        return self._lines


__all__ = ["READ_SCRIPT", "RecordsStreamReader", "write_records_file"]

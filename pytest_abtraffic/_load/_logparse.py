"""Read a load run back from pod logs (the in-cluster load Job prints its records between markers)."""

from __future__ import annotations

import base64
import binascii
import gzip
from collections import Counter

from .._errors import LoadError
from .._proc import tail
from . import _protocol as proto
from ._results import LoadResult, RequestRecord, sorted_predictions


def _blocks(text: str) -> list[tuple[bool, list[str]]]:
    """(gzipped, lines) per marker block. Lines may carry a prefix (``kubectl logs --prefix``,
    timestamps); whatever precedes the BEGIN marker is stripped from the block's lines."""
    blocks: list[tuple[bool, list[str]]] = []
    current: list[str] | None = None
    prefix = ""
    gzipped = False
    for raw in text.splitlines():
        if current is None:
            at = max(raw.find(proto.BEGIN_MARKER), raw.find(proto.BEGIN_MARKER_GZIP))
            if at < 0:
                continue
            prefix = raw[:at]
            gzipped = raw[at:].strip() == proto.BEGIN_MARKER_GZIP
            current = []
            continue
        line = raw[len(prefix):] if prefix and raw.startswith(prefix) else raw
        if line.strip() == proto.END_MARKER:
            blocks.append((gzipped, current))
            current = None
            continue
        current.append(line)
    if current is not None:
        raise LoadError(f"the log ends inside a records block ({len(current)} lines after "
                        f"{proto.BEGIN_MARKER!r}, no {proto.END_MARKER!r}): was the log truncated or the pod killed?")
    return blocks


def _block_lines(gzipped: bool, lines: list[str]) -> list[str]:
    if not gzipped:
        return lines
    try:
        data = gzip.decompress(base64.b64decode("".join(s.strip() for s in lines), validate=True))
    except (binascii.Error, OSError, EOFError) as exc:
        raise LoadError(f"the gzip records block in the log is corrupt: {exc}") from None
    return data.decode("utf-8").splitlines()


def parse_records_from_log(text: str) -> LoadResult:
    """The LoadResult the in-cluster entry (``python -m pytest_abtraffic._load.incluster``) printed.

    Several blocks (several load pods) are merged: connection ids get a ``p{i}/`` prefix so they stay
    distinct, and the duration is the longest one. Raises LoadError when there is no block, a block
    is cut off, or the pod reported an error instead of records.
    """
    blocks = _blocks(text)
    if not blocks:
        raise LoadError(f"no records block ({proto.BEGIN_MARKER!r} ... {proto.END_MARKER!r}) in the load log; "
                        f"log tail:\n{tail(text)}")
    return merge_results([result_from_lines(_block_lines(gzipped, lines)) for gzipped, lines in blocks])


def result_from_lines(content: list[str]) -> LoadResult:
    """The LoadResult of one records stream (rows, then a summary or an error event)."""
    parsed = proto.parse_lines(content)
    if parsed.error is not None:
        raise LoadError(f"the in-cluster load run failed: {parsed.error}")
    summary = parsed.summary or {}
    records = tuple(RequestRecord(*row) for row in parsed.rows)
    duration = float(summary.get("duration_s", max((r.t for r in records), default=0.0)))
    reason = str(summary.get("stop_reason", "exited"))
    stats = summary.get("locust_stats")
    return LoadResult(records=records, duration_s=duration, stopped_early=bool(summary.get("stopped_early", False)),
                      stop_reason=reason, locust_stats=stats if isinstance(stats, dict) else None,
                      predictions=sorted_predictions(parsed.predictions))


def merge_results(results: list[LoadResult]) -> LoadResult:
    """One result from several load pods: connection ids get a ``p{i}/`` prefix, the longest duration."""
    if len(results) == 1:
        return results[0]
    merged = sorted(
        (RequestRecord(r.t, r.version, r.status, r.latency_ms, f"p{i}/{r.connection}", r.error)
         for i, res in enumerate(results) for r in res.records),
        key=lambda r: r.t,
    )
    reasons = Counter(res.stop_reason for res in results)
    return LoadResult(
        records=tuple(merged),
        duration_s=max(res.duration_s for res in results),
        stopped_early=any(res.stopped_early for res in results),
        stop_reason=reasons.most_common(1)[0][0],
        locust_stats={"pods": [res.locust_stats for res in results]},
        predictions=sorted_predictions(p for res in results for p in res.predictions),
    )


__all__ = ["merge_results", "parse_records_from_log", "result_from_lines"]

"""Where report files go and how they are written (atomically: a reader never sees half a file)."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def slugify(name: str, *, max_len: int = 100) -> str:
    """A file-name-safe form of an experiment name (``fallback:kill v2`` -> ``fallback-kill-v2``)."""
    slug = _UNSAFE.sub("-", name).strip("-.")[:max_len].strip("-.")
    return slug or "experiment"


def report_path(name: str, report_dir: str | Path, suffix: str, *, stem: str | None = None) -> Path:
    directory = Path(report_dir)
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{slugify(stem if stem is not None else name)}{suffix}"


def write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; reports are meant to be shared (CI artifacts)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["report_path", "slugify", "write_text_atomic"]

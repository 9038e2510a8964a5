"""The one way the kit runs a subprocess: argument list, timeout, errors with context."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._errors import CommandError, PrerequisiteError

STDERR_TAIL_LINES = 20


def tail(text: str, lines: int = STDERR_TAIL_LINES) -> str:
    """The last ``lines`` lines of ``text``, for error messages."""
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass(frozen=True)
class Completed:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def which_or_raise(binary: str, how_to_get: str) -> str:
    """Absolute path of ``binary`` or a PrerequisiteError saying how to install it."""
    path = shutil.which(binary)
    if path is None:
        raise PrerequisiteError(f"'{binary}' was not found on PATH. {how_to_get}")
    return path


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    cwd: str | None = None,
) -> Completed:
    """Run ``argv`` (never through a shell). Raise CommandError on failure or timeout."""
    args = [str(a) for a in argv]
    try:
        proc = subprocess.run(
            args,
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise CommandError(args, None, tail(err), note=f"timeout {timeout:g}s") from None
    except FileNotFoundError:
        raise PrerequisiteError(f"'{args[0]}' was not found; cannot run {' '.join(args)!r}") from None
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, tail(proc.stderr or proc.stdout))
    return Completed(tuple(args), proc.returncode, proc.stdout, proc.stderr)

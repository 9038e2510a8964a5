"""One error root for the kit, split by what the user should do about it."""

from __future__ import annotations

from collections.abc import Mapping


class AbTrafficError(Exception):
    """Root of every error the kit raises on purpose."""


class SpecError(AbTrafficError, ValueError):
    """The experiment description is invalid. ``field`` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class UsageError(AbTrafficError, ValueError):
    """A command-line option or pytest option/marker is invalid (CLI exit code 2)."""


class PrerequisiteError(AbTrafficError):
    """A required binary, cluster component or permission is missing. Says how to get it."""


class CommandError(AbTrafficError):
    """A subprocess failed. Carries the command, its exit code and the tail of its stderr."""

    def __init__(self, argv: list[str], returncode: int | None, stderr_tail: str, note: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr_tail = stderr_tail
        what = "timed out" if returncode is None else f"exited with {returncode}"
        text = f"command {' '.join(argv)!r} {what}"
        if note:
            text += f" ({note})"
        if stderr_tail:
            text += f"; stderr tail:\n{stderr_tail}"
        super().__init__(text)


class BackendError(AbTrafficError):
    """A backend could not deploy, reach or tear down an experiment."""


class NotReadyError(BackendError):
    """Something did not become ready in time. The message says what and shows why."""


class LoadError(AbTrafficError):
    """The load generator failed to start, died or produced no usable results."""


class AbTrafficAssertionError(AssertionError):
    """Root of the kit's assertion failures: pytest reports them as test failures, not errors."""


class SplitMismatchError(AbTrafficAssertionError):
    """The observed traffic split does not match the configured one. The message is a table."""


class ProgrammedWeightsError(AbTrafficAssertionError):
    """The mesh serves other weights than the split objects declare: its own failure, before statistics."""

    def __init__(self, message: str, *, declared: Mapping[str, float], programmed: Mapping[str, float]) -> None:
        super().__init__(message)
        self.declared = dict(declared)
        self.programmed = dict(programmed)


class FallbackAssertionError(AbTrafficAssertionError):
    """Traffic did not fall back (or recover) as expected. The message holds the timeline."""


class RouteMismatchError(AbTrafficAssertionError):
    """Traffic a header rule matched did not all reach the rule's backend. The message names rule and version."""


class SloViolationError(AbTrafficAssertionError):
    """A per-version SLO is not shown to hold (violated, or not enough requests to tell)."""


class ComparisonError(AbTrafficAssertionError):
    """The candidate is not shown to be within the allowed margin of the baseline."""


__all__ = [
    "AbTrafficAssertionError",
    "AbTrafficError",
    "BackendError",
    "CommandError",
    "ComparisonError",
    "FallbackAssertionError",
    "LoadError",
    "NotReadyError",
    "PrerequisiteError",
    "ProgrammedWeightsError",
    "RouteMismatchError",
    "SloViolationError",
    "SpecError",
    "SplitMismatchError",
    "UsageError",
]

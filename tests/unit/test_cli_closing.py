"""`abtraffic verify` writes its reports while the backend tears down (`_cli._Closing`)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from pytest_abtraffic._cli import _Closing
from pytest_abtraffic._errors import BackendError


class _Backend:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.release = threading.Event()
        self.closed_in: list[str] = []

    def close(self) -> None:
        self.release.wait(10.0)
        self.closed_in.append(threading.current_thread().name)
        if self.error is not None:
            raise self.error


def test_close_runs_beside_the_caller_and_join_waits_for_it() -> None:
    backend = _Backend()
    closing = _Closing(backend)  # type: ignore[arg-type]
    assert backend.closed_in == []  # still closing: the caller goes on meanwhile
    backend.release.set()
    closing.join()
    assert backend.closed_in == ["abtraffic-teardown"]


@pytest.mark.parametrize("error", [BackendError("teardown incomplete: x"), KeyboardInterrupt()])
def test_join_raises_what_close_raised(error: Any) -> None:
    backend = _Backend(error)
    backend.release.set()
    closing = _Closing(backend)  # type: ignore[arg-type]
    with pytest.raises(type(error)):
        closing.join()

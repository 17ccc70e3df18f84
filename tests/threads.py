"""Background threads for tests whose failures are not lost.

An exception that ends a plain `threading.Thread` only becomes a warning (pytest's
PytestUnhandledThreadExceptionWarning) while the test goes on with less load than it
thinks, or times out later with a misleading message. A CheckedThread keeps the
exception and raises it in the thread that checks or joins it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class BackgroundThreadError(AssertionError):
    """A test's background thread died (or did not stop); the cause is chained."""


class CheckedThread(threading.Thread):
    def __init__(self, target: Callable[..., object], *args: Any, name: str | None = None) -> None:
        # Daemon: a thread stuck in a network call must not keep the test run alive; join()
        # reports it instead.
        super().__init__(target=target, args=args, name=name, daemon=True)
        self.exception: BaseException | None = None

    def run(self) -> None:
        try:
            super().run()
        except BaseException as exc:  # kept for check()/join(), not printed and forgotten
            self.exception = exc

    def check(self) -> None:
        """Raise BackgroundThreadError if the thread died of an exception."""
        if self.exception is not None:
            raise BackgroundThreadError(
                f"background thread {self.name!r} died: {self.exception!r}"
            ) from self.exception

    def join(self, timeout: float | None = None) -> None:
        """Join; raise if the thread died, or if it is still running after `timeout`."""
        super().join(timeout)
        self.check()
        if self.is_alive():
            raise BackgroundThreadError(f"background thread {self.name!r} did not stop")

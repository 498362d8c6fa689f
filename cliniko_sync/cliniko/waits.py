"""What the client is waiting for, for people to see (progress bars, -v logs), and the stop that cuts a wait short.

Every wait of the client (a rate-limit pause, a retry back-off, the shared limiter's throttle) is an Event.wait on
the run's stop event, so Ctrl-C or SIGTERM ends it within a moment instead of after the full wait.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Literal, TypeVar

from cliniko_sync.errors import PartialRunError

WaitKind = Literal["rate_limit", "retry", "throttle"]
T = TypeVar("T")


@dataclass(frozen=True)
class Wait:
    """One wait before the next request.

    kind: 'rate_limit' (Cliniko answered 429), 'retry' (a failed attempt, backing off) or 'throttle' (the client's
    own limiter keeps the key under its rate limit). attempt/max_attempts: the number of the try that follows the
    wait and how many tries a failure gets (None for rate limits, which do not use up tries). reason: why, e.g.
    'HTTP 502', 'unreachable', 'timed out'.
    """

    kind: WaitKind
    seconds: float
    attempt: int | None = None
    max_attempts: int | None = None
    reason: str | None = None

    def describe(self, remaining: float | None = None) -> str:
        """A short phrase for a progress bar or a log line; `remaining` counts down (default: the whole wait)."""
        left = self.seconds if remaining is None else remaining
        seconds = f"{max(0, round(left))} s"
        tries = f"{self.attempt}/{self.max_attempts}" if self.attempt and self.max_attempts else ""
        if self.kind == "rate_limit":
            return f"waiting {seconds} for Cliniko's rate limit (HTTP 429)"
        if self.kind == "throttle":
            return f"waiting {seconds} for Cliniko's rate limit"
        if self.reason == "unreachable":
            return (
                f"Cliniko unreachable, retry {tries} in {seconds}"
                if left > 0
                else f"Cliniko unreachable, retry {tries}"
            )
        return f"retry {tries} in {seconds} after {self.reason}" if left > 0 else f"retry {tries} after {self.reason}"


class StopRequested(PartialRunError):
    """A signal or --max-runtime stopped the run after a checkpoint (or cut a wait short)."""


WAIT_STOPPED = "stopped by a signal during a wait; the next run resumes from the last committed page"

OnWait = Callable[[Wait], None]


# How long a thread waits for another before it looks at signals again.
SIGNAL_CHECK_SECONDS = 0.25


def join(thread: threading.Thread) -> None:
    """Wait for `thread` to end, in short waits. Python runs a signal's handler in the main thread, and only when that
    thread runs Python code; the kernel may hand SIGINT to another thread, which does not wake a main thread blocked
    in one long join: Ctrl-C (even a second one, the abort) would wait for the thread, for as long as Cliniko hangs."""
    while thread.is_alive():
        thread.join(SIGNAL_CHECK_SECONDS)


def result(future: Future[T]) -> T:
    """A future's result, waited for in short waits (see join)."""
    while True:
        try:
            return future.result(SIGNAL_CHECK_SECONDS)
        except FutureTimeout:
            continue


def pause(seconds: float, stop: threading.Event | None) -> None:
    """Sleep `seconds`, or raise StopRequested as soon as `stop` is set."""
    if stop is None:
        time.sleep(seconds)
        return
    if stop.wait(max(0.0, seconds)):
        raise StopRequested(WAIT_STOPPED)

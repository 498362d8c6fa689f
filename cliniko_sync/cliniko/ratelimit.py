"""A client-side sliding-window limiter per API key, so the tool stays under Cliniko's 200 requests a minute."""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from cliniko_sync.cliniko.waits import WAIT_STOPPED, OnWait, StopRequested, Wait

# Waits are cut into slices this long so that a stop request is seen promptly (a Condition cannot also wait on an
# Event), and throttle waits shorter than REPORTED_THROTTLE are not announced (they happen on every busy page).
STOP_POLL_SECONDS = 0.2
REPORTED_THROTTLE = 1.0


class _Slot:
    """One granted request; it holds its window place until `finished_at` + window."""

    __slots__ = ("finished_at",)

    def __init__(self) -> None:
        self.finished_at: float | None = None


class SlidingWindowLimiter:
    """At most `limit` requests in any `window` seconds, across every thread that shares this limiter.

    A request counts from when it is granted until `window` seconds after its response arrived: the server sees the
    request somewhere in between, so spacing by completion time keeps the server's own count under the limit even
    when one request is slower than the next.
    """

    def __init__(self, limit: int, window: float) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a rate limit needs limit >= 1 and window > 0")
        self.limit = limit
        self.window = window
        self._slots: deque[_Slot] = deque()
        self._condition = threading.Condition()

    def _free_expired(self, now: float) -> None:
        while self._slots:
            finished_at = self._slots[0].finished_at
            if finished_at is None or finished_at + self.window > now:
                return
            self._slots.popleft()

    def acquire(
        self,
        *,
        stop: threading.Event | None = None,
        on_wait: OnWait | None = None,
        reserve: Callable[[], int] | None = None,
    ) -> tuple[_Slot, float]:
        """Block until a request may start; returns its slot (pass it to `release`) and the seconds spent waiting.

        Raises StopRequested soon after `stop` is set; tells `on_wait` once when it must wait a noticeable time.
        `reserve`: how many slots this request leaves to others (asked anew at each try): a request that yields to
        more urgent ones waits while fewer than that many are free.
        """
        started = time.monotonic()
        announced = False
        with self._condition:
            while True:
                now = time.monotonic()
                self._free_expired(now)
                if len(self._slots) < self.limit - (reserve() if reserve else 0):
                    slot = _Slot()
                    self._slots.append(slot)
                    return slot, now - started
                if stop is not None and stop.is_set():
                    raise StopRequested(WAIT_STOPPED)
                oldest = self._slots[0].finished_at
                # An oldest request still in flight frees its slot only when it finishes: release() wakes us.
                timeout = None if oldest is None else oldest + self.window - now
                if on_wait is not None and not announced and timeout is not None and timeout >= REPORTED_THROTTLE:
                    announced = True
                    on_wait(Wait("throttle", timeout))
                if stop is not None or reserve is not None:  # a stop, or a reserve that may have gone, is polled
                    timeout = STOP_POLL_SECONDS if timeout is None else min(timeout, STOP_POLL_SECONDS)
                self._condition.wait(timeout)

    def release(self, slot: _Slot) -> None:
        """Mark the request as answered (or failed); its slot frees `window` seconds from now."""
        with self._condition:
            slot.finished_at = time.monotonic()
            self._condition.notify_all()

    @contextmanager
    def request(
        self,
        *,
        stop: threading.Event | None = None,
        on_wait: OnWait | None = None,
        reserve: Callable[[], int] | None = None,
    ) -> Iterator[float]:
        """Hold a slot for the duration of one request; yields the seconds spent waiting for it."""
        slot, waited = self.acquire(stop=stop, on_wait=on_wait, reserve=reserve)
        try:
            yield waited
        finally:
            self.release(slot)


_registry: dict[tuple[str, int, float], SlidingWindowLimiter] = {}
_registry_lock = threading.Lock()


def limiter_for(api_key: str, limit: int, window: float) -> SlidingWindowLimiter:
    """The process-wide limiter of this API key and limit: every client and thread using the key shares it.

    Keyed by a hash, so the registry never holds the key itself.
    """
    fingerprint = hashlib.sha256(api_key.encode()).hexdigest()
    with _registry_lock:
        limiter = _registry.get((fingerprint, limit, window))
        if limiter is None:
            limiter = _registry[(fingerprint, limit, window)] = SlidingWindowLimiter(limit, window)
        return limiter

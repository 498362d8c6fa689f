"""The per-key sliding-window limiter: never more than N requests in any window, across threads and clients."""

from __future__ import annotations

import threading
import time

import pytest
import responses

from cliniko_sync.cliniko import ratelimit
from cliniko_sync.cliniko.client import ClinikoClient
from cliniko_sync.cliniko.ratelimit import SlidingWindowLimiter, limiter_for
from cliniko_sync.cliniko.waits import StopRequested


def most_in_any_window(times: list[float], window: float) -> int:
    """The largest number of `times` inside any half-open interval [t, t + window)."""
    times = sorted(times)
    return max(sum(1 for other in times[index:] if other < start + window) for index, start in enumerate(times))


def test_never_more_than_the_limit_in_any_window_across_threads() -> None:
    limiter = SlidingWindowLimiter(5, 0.3)
    started: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(4):
            with limiter.request():
                with lock:
                    started.append(time.monotonic())
                time.sleep(0.005)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(started) == 20
    assert most_in_any_window(started, 0.3) <= 5


def test_a_slot_frees_a_window_after_its_request_finished() -> None:
    limiter = SlidingWindowLimiter(1, 0.1)
    slot, waited = limiter.acquire()
    assert waited < 0.1
    granted: list[float] = []
    waiter = threading.Thread(target=lambda: granted.append(limiter.acquire()[1]))
    waiter.start()
    time.sleep(0.15)
    # The first request is still in flight: its window has not even started, so the waiter is still waiting.
    assert not granted
    released_at = time.monotonic()
    limiter.release(slot)
    waiter.join()
    assert granted and granted[0] >= 0.15
    assert time.monotonic() - released_at >= 0.1


def test_the_wait_is_reported() -> None:
    limiter = SlidingWindowLimiter(2, 0.2)
    waits = []
    for _ in range(3):
        with limiter.request() as waited:
            waits.append(waited)
    assert waits[:2] == [pytest.approx(0, abs=0.05)] * 2
    assert waits[2] > 0


@pytest.mark.parametrize(("limit", "window"), [(0, 1.0), (-1, 1.0), (5, 0.0), (5, -1.0)])
def test_bad_limits(limit: int, window: float) -> None:
    with pytest.raises(ValueError):
        SlidingWindowLimiter(limit, window)


def test_registry_shares_one_limiter_per_key_without_holding_the_key() -> None:
    key = "registry-test-secret-key-au1"
    first = limiter_for(key, 200, 60.0)
    assert limiter_for(key, 200, 60.0) is first
    assert limiter_for("another-registry-key-au1", 200, 60.0) is not first
    assert not any(key in str(registry_key) for registry_key in ratelimit._registry)


def test_clients_with_the_same_key_share_the_limit() -> None:
    key = "shared-limit-test-key-au3"
    url = "https://api.au3.cliniko.com/v1/patients"
    window = 1.0
    first = ClinikoClient(key, contact_email="ops@clinic.example", rate_limit=2, rate_window=window)
    second = ClinikoClient(key, contact_email="ops@clinic.example", rate_limit=2, rate_window=window)
    other = ClinikoClient(
        "other-limit-test-key-au3", contact_email="ops@clinic.example", rate_limit=2, rate_window=window
    )
    with responses.RequestsMock() as mocked:
        mocked.get(url, json={"patients": [], "total_entries": 0, "links": {"self": url}})
        started = time.monotonic()
        first.list_page("patients")
        first.list_page("patients")
        other.list_page("patients")
        asked = time.monotonic()
        second.list_page("patients")
    # The second client had to wait for the first one's first request to leave the window (however long the first
    # requests took on a loaded host); the first client and the other key never waited.
    assert asked - started < window / 2, "three mocked requests took half a second: the test proves nothing"
    assert second.stats.throttle_wait_seconds >= window - (asked - started) - 0.02
    assert first.stats.throttle_wait_seconds < 0.01
    assert other.stats.throttle_wait_seconds < 0.01


def test_no_limit_means_no_waiting() -> None:
    client = ClinikoClient("unlimited-test-key-au1", contact_email="ops@clinic.example", rate_limit=None)
    url = "https://api.au1.cliniko.com/v1/patients"
    with responses.RequestsMock() as mocked:
        mocked.get(url, json={"patients": [], "total_entries": 0, "links": {"self": url}})
        for _ in range(5):
            client.list_page("patients")
    assert client.stats.throttle_wait_seconds == 0
    assert client.stats.requests == 5


def test_a_request_that_yields_leaves_its_reserve_to_the_others() -> None:
    limiter = SlidingWindowLimiter(3, 60.0)
    reserve = 1
    limiter.acquire(reserve=lambda: reserve)  # 0 of 3 taken: granted
    limiter.acquire()
    stopped = threading.Event()
    stopped.set()  # a request that cannot start now raises StopRequested at once instead of waiting
    with pytest.raises(StopRequested):
        limiter.acquire(stop=stopped, reserve=lambda: reserve)  # 2 taken, 1 free: left to the others
    reserve = 0  # asked anew at each try: the window reads ended
    limiter.acquire(stop=stopped, reserve=lambda: reserve)
    with pytest.raises(StopRequested):
        limiter.acquire(stop=stopped)

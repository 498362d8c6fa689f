"""The client's waiting and retrying: 429 headers, odd waits, 5xx, timeouts, broken bodies, budgets (no real sleeps)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import responses

from cliniko_sync.cliniko.client import MIN_RATE_LIMIT_WAIT, ClinikoClient
from cliniko_sync.errors import ClinikoAPIError, ClinikoUnavailableError

KEY = "MxJrZXkiOiI1Njd1amJmZTQ1NyJ9-au2"
BASE = "https://api.au2.cliniko.com/v1"
URL = f"{BASE}/patients"
OK = {"patients": [{"id": "1"}], "total_entries": 1, "links": {"self": URL}}


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


class Recorder:
    """Stands in for the client's sleep: records each wait instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def waits() -> Recorder:
    return Recorder()


@pytest.fixture
def client(waits: Recorder) -> Iterator[ClinikoClient]:
    with ClinikoClient(KEY, contact_email="ops@clinic.example", rate_limit=None) as client:
        client.sleep = waits
        yield client


def rate_limited(mocked: responses.RequestsMock, headers: dict[str, str], times: int = 1) -> None:
    for _ in range(times):
        mocked.get(URL, status=429, json={"message": "Too many requests"}, headers=headers)
    mocked.get(URL, json=OK)


# -- 429 ------------------------------------------------------------------------------------------------------


def test_429_waits_until_the_reset_time(mocked: responses.RequestsMock, client: ClinikoClient, waits: Recorder) -> None:
    rate_limited(mocked, {"X-RateLimit-Reset": str(int(time.time()) + 10)})
    assert client.list_page("patients").records == [{"id": "1"}]
    [wait] = waits.waits
    assert 8.9 < wait <= 10.6
    assert client.stats.rate_limited == 1
    assert client.stats.rate_limit_wait_seconds == pytest.approx(wait)
    assert client.stats.requests == 2


def test_429_prefers_the_reset_header_over_retry_after(
    mocked: responses.RequestsMock, client: ClinikoClient, waits: Recorder
) -> None:
    rate_limited(mocked, {"X-RateLimit-Reset": str(int(time.time()) + 30), "Retry-After": "2"})
    client.list_page("patients")
    assert waits.waits[0] > 28


def test_429_with_retry_after_seconds(mocked: responses.RequestsMock, client: ClinikoClient, waits: Recorder) -> None:
    rate_limited(mocked, {"Retry-After": "7"})
    client.list_page("patients")
    assert 7 <= waits.waits[0] <= 7.5


def test_429_with_retry_after_date(mocked: responses.RequestsMock, client: ClinikoClient, waits: Recorder) -> None:
    rate_limited(mocked, {"Retry-After": format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)})
    client.list_page("patients")
    assert 18 < waits.waits[0] <= 20.6


def test_429_without_headers_backs_off_exponentially(
    mocked: responses.RequestsMock, client: ClinikoClient, waits: Recorder
) -> None:
    rate_limited(mocked, {}, times=4)
    client.list_page("patients")
    assert waits.waits == [0.5, 1.0, 2.0, 4.0]
    assert client.stats.rate_limited == 4


@pytest.mark.parametrize(
    "headers",
    [
        {"X-RateLimit-Reset": "0"},
        {"X-RateLimit-Reset": str(int(time.time()) - 3600)},
        {"X-RateLimit-Reset": "soon"},
        {"Retry-After": "0"},
        {"Retry-After": "-5"},
        {"Retry-After": "Mon, 01 Jan 2001 00:00:00 GMT"},
        {"Retry-After": "whenever"},
    ],
)
def test_zero_negative_or_garbled_waits_never_spin(
    mocked: responses.RequestsMock, client: ClinikoClient, waits: Recorder, headers: dict[str, str]
) -> None:
    rate_limited(mocked, headers, times=3)
    client.list_page("patients")
    assert len(waits.waits) == 3
    assert all(wait >= MIN_RATE_LIMIT_WAIT for wait in waits.waits)
    # A past reset time repeated 429 after 429 backs off further each time.
    assert waits.waits[0] < waits.waits[1] < waits.waits[2]


@pytest.mark.parametrize(
    "headers",
    [
        {"X-RateLimit-Reset": str(int(time.time()) + 86400)},
        {"X-RateLimit-Reset": str(int(time.time() * 1000))},  # milliseconds by mistake
        {"Retry-After": "999999"},
        {"Retry-After": format_datetime(datetime.now(UTC) + timedelta(days=3), usegmt=True)},
    ],
)
def test_absurd_waits_are_capped(
    mocked: responses.RequestsMock, client: ClinikoClient, waits: Recorder, headers: dict[str, str]
) -> None:
    rate_limited(mocked, headers)
    client.list_page("patients")
    assert waits.waits == [client.max_wait]


def test_relative_reset_header_reads_as_seconds(
    mocked: responses.RequestsMock, client: ClinikoClient, waits: Recorder
) -> None:
    rate_limited(mocked, {"X-RateLimit-Reset": "5"})
    client.list_page("patients")
    assert 5 <= waits.waits[0] <= 5.5


def test_a_429_storm_does_not_use_up_the_ordinary_attempts(
    mocked: responses.RequestsMock, client: ClinikoClient, waits: Recorder
) -> None:
    # Thirty 429s in a row: far more than max_attempts, and the page still arrives. The reset time stays ahead for
    # the whole test (a reset one second ahead passed mid-test on a loaded machine, and a past reset backs off
    # exponentially until the time budget ends the storm: the cases tested above and below).
    rate_limited(mocked, {"X-RateLimit-Reset": str(int(time.time()) + 10)}, times=30)
    assert client.list_page("patients").records == [{"id": "1"}]
    assert client.stats.rate_limited == 30
    assert len(waits.waits) == 30


def test_an_endless_429_storm_ends_within_the_time_budget(
    mocked: responses.RequestsMock, client: ClinikoClient, waits: Recorder
) -> None:
    mocked.get(URL, status=429, headers={"Retry-After": "100"})
    with pytest.raises(ClinikoUnavailableError, match="429") as raised:
        client.list_page("patients", page=4)
    assert raised.value.exit_code == 69
    assert "https://api.au2.cliniko.com/v1/patients (page 4)" in str(raised.value)
    assert sum(waits.waits) <= client.max_total_retry_seconds
    assert len(waits.waits) >= 8


# -- 5xx, timeouts, connection errors, broken bodies ---------------------------------------------------------


def test_5xx_then_success(mocked: responses.RequestsMock, client: ClinikoClient, waits: Recorder) -> None:
    for status in (500, 502, 503):
        mocked.get(URL, status=status)
    mocked.get(URL, json=OK)
    assert client.list_page("patients").records == [{"id": "1"}]
    assert len(waits.waits) == 3
    assert waits.waits[0] < waits.waits[1] < waits.waits[2]
    assert client.stats.retries == 3
    assert client.stats.rate_limited == 0


def test_retries_exhausted_on_5xx(mocked: responses.RequestsMock, client: ClinikoClient, waits: Recorder) -> None:
    mocked.get(URL, status=503)
    with pytest.raises(ClinikoUnavailableError) as raised:
        client.list_page("patients", page=7)
    assert str(raised.value) == (
        "Cliniko did not answer GET https://api.au2.cliniko.com/v1/patients (page 7) after 6 attempts: HTTP 503"
    )
    assert raised.value.exit_code == 69
    assert len(mocked.calls) == 6
    assert len(waits.waits) == 5
    assert waits.waits == sorted(waits.waits)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (requests.exceptions.ReadTimeout("read timed out"), "timed out"),
        (requests.exceptions.ConnectTimeout("connect timed out"), "timed out"),
        (requests.exceptions.ConnectionError("refused"), "connection failed"),
    ],
)
def test_network_failures_retry_then_give_up(
    mocked: responses.RequestsMock, client: ClinikoClient, error: Exception, reason: str
) -> None:
    mocked.get(URL, body=error)
    with pytest.raises(ClinikoUnavailableError, match=f"after 6 attempts: {reason}"):
        client.list_page("patients")
    assert client.stats.requests == 6


def test_a_timeout_then_success(mocked: responses.RequestsMock, client: ClinikoClient) -> None:
    mocked.get(URL, body=requests.exceptions.ReadTimeout())
    mocked.get(URL, json=OK)
    assert client.list_page("patients").total_entries == 1


@pytest.mark.parametrize(
    "body",
    [
        '{"patients": [{"id": "1"}], "total_en',  # cut short
        "<html>502 Bad Gateway</html>",
        "",
        b"\xff\xfe\x00garbage",
    ],
)
def test_broken_bodies_retry_then_succeed(
    mocked: responses.RequestsMock, client: ClinikoClient, body: str | bytes
) -> None:
    mocked.get(URL, body=body, content_type="application/json")
    mocked.get(URL, json=OK)
    assert client.list_page("patients").records == [{"id": "1"}]
    assert client.stats.retries == 1


def test_broken_bodies_after_all_attempts_are_an_api_error(
    mocked: responses.RequestsMock, client: ClinikoClient
) -> None:
    mocked.get(URL, body='{"patients": [{"id": "1", "first_name": "Zo', content_type="application/json")
    with pytest.raises(ClinikoAPIError) as raised:
        client.list_page("patients", page=2)
    message = str(raised.value)
    assert message == (
        "Cliniko sent a body that is not valid JSON for GET https://api.au2.cliniko.com/v1/patients (page 2) "
        "(6 attempts)"
    )
    assert "Zo" not in message
    assert not isinstance(raised.value, ClinikoUnavailableError)


def test_a_connection_cut_mid_body_retries(mocked: responses.RequestsMock, client: ClinikoClient) -> None:
    mocked.get(URL, body=requests.exceptions.ChunkedEncodingError("IncompleteRead(10 bytes read, 90 more expected)"))
    mocked.get(URL, json=OK)
    assert client.list_page("patients").records == [{"id": "1"}]


def test_a_twenty_percent_error_rate_still_completes(mocked: responses.RequestsMock, client: ClinikoClient) -> None:
    rng = random.Random(20)
    total = 60

    def answer(request: requests.PreparedRequest) -> tuple[int, dict, str]:
        if rng.random() < 0.2:
            return rng.choice([500, 502, 503]), {}, "oops"
        page = int(dict(parse_qsl(urlsplit(request.url or "").query))["page"])
        links = {"self": URL}
        if page < total:
            links["next"] = f"{URL}?page={page + 1}&per_page=1"
        body = {"patients": [{"id": str(page)}], "total_entries": total, "links": links}
        return 200, {}, json.dumps(body)

    mocked.add_callback(responses.GET, URL, callback=answer)
    ids = [
        record["id"]
        for page in range(1, total + 1)
        for record in client.list_page("patients", page=page, per_page=1).records
    ]
    assert ids == [str(number) for number in range(1, total + 1)]
    assert client.stats.retries > 0


def test_max_attempts_is_configurable(mocked: responses.RequestsMock, waits: Recorder) -> None:
    mocked.get(URL, status=500)
    with ClinikoClient(KEY, contact_email="ops@clinic.example", rate_limit=None, max_attempts=2) as client:
        client.sleep = waits
        with pytest.raises(ClinikoUnavailableError, match="after 2 attempts"):
            client.list_page("patients")
    assert len(mocked.calls) == 2


def test_ordinary_waits_are_capped_by_max_wait(mocked: responses.RequestsMock, waits: Recorder) -> None:
    mocked.get(URL, status=500)
    client = ClinikoClient(KEY, contact_email="ops@clinic.example", rate_limit=None, max_attempts=10, max_wait=3.0)
    with client:
        client.sleep = waits
        with pytest.raises(ClinikoUnavailableError):
            client.list_page("patients")
    assert max(waits.waits) == 3.0

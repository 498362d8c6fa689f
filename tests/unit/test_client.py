"""The Cliniko client against canned HTTP answers: shards, URLs, headers, filters, pagination, errors, redaction."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qsl, urlsplit

import pytest
import requests
import responses

from cliniko_sync import __version__
from cliniko_sync.cliniko.client import (
    ClinikoClient,
    Filter,
    base_url_for,
    check_api_url,
    key_hint,
    shard_for_key,
    validate_api_key_shape,
)
from cliniko_sync.errors import ClinikoAPIError, ConfigError, CredentialsRejectedError, UsageError

# The example key from Cliniko's docs, with the Authorization header the docs give for it.
DOCS_KEY = "MxJrZXkiOiI1Njd1amJmZTQ1NyJ9-au2"
DOCS_AUTH = "Basic TXhKclpYa2lPaUkxTmpkMWFtSm1aVFExTnlKOS1hdTI6"
BASE = "https://api.au2.cliniko.com/v1"
EMAIL = "ops@clinic.example"


@pytest.fixture
def mocked() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def client() -> Iterator[ClinikoClient]:
    with ClinikoClient(DOCS_KEY, contact_email=EMAIL, rate_limit=None) as client:
        client.sleep = lambda seconds: None
        yield client


def listing(resource: str, ids: list[str], *, total: int | None, next_url: str | None = None) -> dict:
    body: dict = {resource: [{"id": record_id} for record_id in ids], "links": {"self": f"{BASE}/{resource}"}}
    if total is not None:
        body["total_entries"] = total
    if next_url:
        body["links"]["next"] = next_url
    return body


def query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query)


# -- shards, URLs, key shape ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "shard"),
    [
        ("abcdefgh-au4", "au4"),
        ("abc-def-ghi-uk2", "uk2"),
        ("ABCDEFGH-CA1", "ca1"),
        ("abcdefgh-eu1", "eu1"),
        ("abcdefgh-au12", "au12"),
        ("abcdefghijklmnop", "au1"),
    ],
)
def test_shard_from_key_suffix(key: str, shard: str) -> None:
    assert shard_for_key(key) == shard
    assert base_url_for(key) == f"https://api.{shard}.cliniko.com/v1"


@pytest.mark.parametrize("key", ["abcdefgh-australia", "abcdefgh-a1", "abcdefgh-au123", "abcdefgh-", "abcdefgh-1au"])
def test_bad_shard_suffix_is_refused_without_showing_the_key(key: str) -> None:
    with pytest.raises(UsageError, match="shard suffix") as raised:
        shard_for_key(key)
    assert "abcdefgh" not in str(raised.value)


def test_api_url_overrides_the_shard() -> None:
    assert base_url_for(DOCS_KEY, "http://127.0.0.1:8765/v1/") == "http://127.0.0.1:8765/v1"
    assert base_url_for(DOCS_KEY, "https://api.au4.cliniko.com/v1") == "https://api.au4.cliniko.com/v1"
    client = ClinikoClient(DOCS_KEY, contact_email=EMAIL, api_url="http://localhost:9/v1", rate_limit=None)
    assert (client.base_url, client.shard) == ("http://localhost:9/v1", "au2")


@pytest.mark.parametrize(
    "url",
    [
        "https://api.au1.cliniko.com/v1",
        "https://cliniko.internal.example:8443/v1",
        "http://127.0.0.1:8765/v1",
        "http://127.9.9.9/v1",
        "http://[::1]:8765/v1",
        "http://localhost:8765/v1",
    ],
)
def test_allowed_api_urls(url: str) -> None:
    check_api_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://api.au1.cliniko.com/v1",
        "http://10.0.0.5:8765/v1",
        "http://127.0.0.1.evil.example/v1",
        "http://localhost.evil.example/v1",
        "ftp://127.0.0.1/v1",
        "api.au1.cliniko.com/v1",
        "https://user:secret@api.au1.cliniko.com/v1",
        "https://api.au1.cliniko.com/v1?key=secret",
        "https://api.au1.cliniko.com:notaport/v1",
        "",
    ],
)
def test_refused_api_urls(url: str) -> None:
    with pytest.raises(UsageError) as raised:
        check_api_url(url)
    assert "secret" not in str(raised.value)


def test_client_refuses_plain_http_to_a_remote_host() -> None:
    with pytest.raises(UsageError, match="https"):
        ClinikoClient(DOCS_KEY, contact_email=EMAIL, api_url="http://cliniko.example/v1")


@pytest.mark.parametrize("key", ["", "abc def-au1", "abcdefgh\n-au1", "abcdefgh\t", "abcdéfgh-au1", "abc\x00defgh"])
def test_key_shape_refuses_blank_and_control_characters(key: str) -> None:
    with pytest.raises(UsageError):
        validate_api_key_shape(key)


def test_key_shape_accepts_real_looking_keys() -> None:
    validate_api_key_shape(DOCS_KEY)
    validate_api_key_shape("MxJrZXkiOiI1Njd1amJmZTQ1NyJ9")


def test_key_hint_shows_only_the_last_four_characters() -> None:
    assert key_hint(DOCS_KEY) == "…NyJ9-au2"  # the body's last four and the shard, never more
    assert key_hint("short") == "…"
    assert key_hint("short-au1") == "…-au1"
    assert key_hint("bGVnYWN5LWtleS13aXRob3V0LXNoYXJk") == "…YXJk"


@pytest.mark.parametrize("email", ["", "no-at-sign", "ops@clinic.example\r\nX-Injected: 1", "ops @clinic.example"])
def test_client_needs_a_contact_email(email: str) -> None:
    with pytest.raises(ConfigError):
        ClinikoClient(DOCS_KEY, contact_email=email)


# -- filters --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "rendered"),
    [
        (Filter("updated_at", ">=", datetime(2025, 6, 1, tzinfo=UTC)), "updated_at:>=2025-06-01T00:00:00Z"),
        # Brisbane time, with a fraction: converted to UTC and floored to the second.
        (
            Filter("starts_at", "<", datetime(2025, 6, 1, 10, 0, 0, 999999, tzinfo=timezone(timedelta(hours=10)))),
            "starts_at:<2025-06-01T00:00:00Z",
        ),
        (Filter("id", "=", ["1386591894061983172", "2", 3]), "id:=1386591894061983172,2,3"),
        (Filter("id", ">", 1386591894061983172), "id:>1386591894061983172"),
        (Filter("did_not_arrive", "=", True), "did_not_arrive:=true"),
        (Filter("archived_at", "*"), "archived_at:*"),
        (Filter("cancelled_at", "?"), "cancelled_at:?"),
        (Filter("deleted_at", "!?"), "deleted_at:!?"),
        (Filter("last_name", "~~", "O'Con%"), "last_name:~~O'Con%"),
        (Filter("email", "~", "example.test"), "email:~example.test"),
    ],
)
def test_filter_rendering(condition: Filter, rendered: str) -> None:
    assert condition.render() == rendered
    assert str(condition) == rendered


def test_filters_are_hashable_values() -> None:
    ids = ["1", "2"]
    condition = Filter("id", "=", ids)
    ids.append("3")
    assert condition.render() == "id:=1,2"
    assert condition == Filter("id", "=", ("1", "2"))
    assert len({condition, Filter("id", "=", ["1", "2"]), Filter("archived_at", "*")}) == 2


@pytest.mark.parametrize(
    ("field", "op", "value"),
    [
        ("Email", "=", "x"),
        ("email;drop", "=", "x"),
        ("", "=", "x"),
        ("email", "like", "x"),
        ("email", "==", "x"),
        ("email", "=", None),
        ("archived_at", "*", "x"),
        ("updated_at", ">", datetime(2025, 1, 1)),
        ("id", "=", []),
        ("id", "=", ["1,2"]),
        ("id", "=", [""]),
        ("email", "=", "a\nb"),
        ("id", "=", 1.5),
    ],
)
def test_filter_validation(field: str, op: str, value: object) -> None:
    with pytest.raises(ValueError):
        Filter(field, op, value)  # type: ignore[arg-type]


def test_filters_sort_and_page_size_go_in_the_query(mocked: responses.RequestsMock, client: ClinikoClient) -> None:
    mocked.get(f"{BASE}/individual_appointments", json=listing("individual_appointments", ["1"], total=1))
    client.list_page(
        "individual_appointments",
        filters=[Filter("updated_at", ">=", datetime(2025, 6, 1, tzinfo=UTC)), Filter("cancelled_at", "*")],
        sort="updated_at,id",
        page=3,
        per_page=100,
    )
    url = mocked.calls[0].request.url
    assert url is not None
    assert "q%5B%5D=updated_at%3A%3E%3D2025-06-01T00%3A00%3A00Z" in url
    assert query(url) == [
        ("page", "3"),
        ("per_page", "100"),
        ("sort", "updated_at,id"),
        ("q[]", "updated_at:>=2025-06-01T00:00:00Z"),
        ("q[]", "cancelled_at:*"),
    ]


@pytest.mark.parametrize(
    "kwargs",
    [{"per_page": 0}, {"per_page": 101}, {"page": 0}, {"sort": "updated_at;drop"}, {"sort": "updated_at:sideways"}],
)
def test_listing_arguments_are_validated(client: ClinikoClient, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        client.list_page("patients", **kwargs)


def test_resource_names_are_validated(client: ClinikoClient) -> None:
    with pytest.raises(ValueError):
        client.list_page("../admin")
    with pytest.raises(ValueError):
        client.get("patients", "12/../../admin")


# -- headers --------------------------------------------------------------------------------------------------


def test_headers(mocked: responses.RequestsMock, client: ClinikoClient) -> None:
    mocked.get(f"{BASE}/patients", json=listing("patients", [], total=0))
    client.list_page("patients")
    headers = mocked.calls[0].request.headers
    assert headers["Authorization"] == DOCS_AUTH
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"] == f"cliniko-sync/{__version__} ({EMAIL})"


# -- pagination -----------------------------------------------------------------------------------------------

UPDATED_SINCE = Filter("updated_at", ">=", datetime(2025, 6, 1, tzinfo=UTC))
ECHOED = "per_page=2&sort=updated_at%2Cid&q%5B%5D=updated_at%3A%3E%3D2025-06-01T00%3A00%3A00Z"


def crawl(client: ClinikoClient) -> list[str]:
    pages = client.iter_pages("patients", filters=[UPDATED_SINCE], sort="updated_at,id", per_page=2)
    return [record["id"] for page in pages for record in page.records]


def test_pagination_follows_links_that_keep_the_query(mocked: responses.RequestsMock, client: ClinikoClient) -> None:
    mocked.get(
        f"{BASE}/patients", json=listing("patients", ["1", "2"], total=5, next_url=f"{BASE}/patients?page=2&{ECHOED}")
    )
    mocked.get(
        f"{BASE}/patients", json=listing("patients", ["3", "4"], total=5, next_url=f"{BASE}/patients?{ECHOED}&page=3")
    )
    mocked.get(f"{BASE}/patients", json=listing("patients", ["5"], total=5))
    assert crawl(client) == ["1", "2", "3", "4", "5"]
    assert [call.request.url for call in mocked.calls][1:] == [
        f"{BASE}/patients?page=2&{ECHOED}",
        f"{BASE}/patients?{ECHOED}&page=3",
    ]
    assert client.stats.requests == 3


@pytest.mark.parametrize(
    "next_query",
    [
        "page=2&per_page=2",  # filters and sort dropped
        "page=2",  # nothing kept
        f"page=2&{ECHOED}".replace("per_page=2", "per_page=50"),  # another page size
        f"page=2&{ECHOED}&q%5B%5D=archived_at%3A%2A",  # an extra filter
    ],
)
def test_pagination_reissues_its_own_query_when_the_link_drops_it(
    mocked: responses.RequestsMock, client: ClinikoClient, next_query: str
) -> None:
    mocked.get(
        f"{BASE}/patients", json=listing("patients", ["1", "2"], total=3, next_url=f"{BASE}/patients?{next_query}")
    )
    mocked.get(f"{BASE}/patients", json=listing("patients", ["3"], total=3))
    assert crawl(client) == ["1", "2", "3"]
    second = mocked.calls[1].request.url
    assert second is not None
    assert sorted(query(second)) == sorted(
        [("page", "2"), ("per_page", "2"), ("sort", "updated_at,id"), ("q[]", "updated_at:>=2025-06-01T00:00:00Z")]
    )


def test_pagination_stops_without_next(mocked: responses.RequestsMock, client: ClinikoClient) -> None:
    mocked.get(f"{BASE}/patients", json=listing("patients", ["1", "2"], total=2))
    assert crawl(client) == ["1", "2"]
    assert len(mocked.calls) == 1


def test_pagination_without_total_entries(mocked: responses.RequestsMock, client: ClinikoClient) -> None:
    mocked.get(f"{BASE}/patients", json=listing("patients", ["1", "2"], total=None))
    pages = list(client.iter_pages("patients"))
    assert pages[0].total_entries is None
    assert pages[0].number == 1


def test_endless_next_links_stop_at_the_total(mocked: responses.RequestsMock, client: ClinikoClient) -> None:
    mocked.get(f"{BASE}/patients", json=listing("patients", ["1"], total=3, next_url=f"{BASE}/patients?page=1"))
    with pytest.raises(ClinikoAPIError, match="held 4 or more"):
        list(client.iter_pages("patients", per_page=1))
    assert len(mocked.calls) == 4


@pytest.mark.parametrize("read", [["1", "2", "3"], ["1"]])
def test_total_mismatch_fails_the_listing(mocked: responses.RequestsMock, client: ClinikoClient, read: list) -> None:
    mocked.get(f"{BASE}/patients", json=listing("patients", read[:2], total=2, next_url=f"{BASE}/patients?page=2"))
    mocked.get(f"{BASE}/patients", json=listing("patients", read[2:], total=2))
    if len(read) == 1:
        mocked.replace(responses.GET, f"{BASE}/patients", json=listing("patients", read, total=2))
    with pytest.raises(ClinikoAPIError, match=f"listed 2 patients .* held {len(read)}"):
        crawl(client)


def test_next_link_to_another_host_is_refused(mocked: responses.RequestsMock, client: ClinikoClient) -> None:
    for evil in ("https://evil.example/v1/patients?page=2", "http://api.au2.cliniko.com/v1/patients?page=2"):
        mocked.get(f"{BASE}/patients", json=listing("patients", ["1"], total=2, next_url=evil))
        with pytest.raises(ClinikoAPIError, match="refusing"):
            list(client.iter_pages("patients", per_page=1))
    with pytest.raises(ClinikoAPIError, match="refusing"):
        client.follow("https://api.au2.cliniko.com:8443/v1/patients?page=2")
    with pytest.raises(ClinikoAPIError, match="refusing"):
        client.follow("https://api.au2.cliniko.com/v2/patients?page=2")
    assert all(urlsplit(call.request.url).hostname == "api.au2.cliniko.com" for call in mocked.calls)
    assert all(urlsplit(call.request.url).scheme == "https" for call in mocked.calls)


def test_follow_accepts_an_explicit_default_port(mocked: responses.RequestsMock, client: ClinikoClient) -> None:
    mocked.get("https://api.au2.cliniko.com:443/v1/attendees", json=listing("attendees", ["9"], total=1))
    page = client.follow("https://api.au2.cliniko.com:443/v1/attendees?page=4&per_page=100")
    assert (page.number, page.records) == (4, [{"id": "9"}])


def test_next_link_that_goes_backwards_is_refused(mocked: responses.RequestsMock, client: ClinikoClient) -> None:
    mocked.get(
        f"{BASE}/patients", json=listing("patients", ["1"], total=9, next_url=f"{BASE}/patients?page=3&per_page=1")
    )
    mocked.get(
        f"{BASE}/patients", json=listing("patients", ["2"], total=9, next_url=f"{BASE}/patients?page=2&per_page=1")
    )
    with pytest.raises(ClinikoAPIError, match="went back"):
        list(client.iter_pages("patients", per_page=1))


# -- single records -------------------------------------------------------------------------------------------


def test_get_one_record(mocked: responses.RequestsMock, client: ClinikoClient) -> None:
    mocked.get(f"{BASE}/patients/1386591894061983172", json={"id": "1386591894061983172", "first_name": "Zoë"})
    record = client.get("patients", "1386591894061983172", filters=[Filter("archived_at", "*")])
    assert record["first_name"] == "Zoë"
    assert query(mocked.calls[0].request.url or "") == [("q[]", "archived_at:*")]


def test_get_with_an_unexpected_body(mocked: responses.RequestsMock, client: ClinikoClient) -> None:
    mocked.get(f"{BASE}/patients/5", json={"patients": []})
    with pytest.raises(ClinikoAPIError, match="unexpected body"):
        client.get("patients", "5")


# -- errors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_rejected_credentials_fail_at_once(mocked: responses.RequestsMock, client: ClinikoClient, status: int) -> None:
    mocked.get(f"{BASE}/patients", status=status, body="HTTP Basic: Access denied.")
    with pytest.raises(CredentialsRejectedError) as raised:
        client.list_page("patients")
    assert (
        str(raised.value) == f"Cliniko rejected the API key …NyJ9-au2 (HTTP {status}) for https://api.au2.cliniko.com"
    )
    assert raised.value.exit_code == 77
    assert len(mocked.calls) == 1


def test_not_found(mocked: responses.RequestsMock, client: ClinikoClient) -> None:
    mocked.get(f"{BASE}/patients/404", status=404, json={"message": "not found"})
    with pytest.raises(ClinikoAPIError, match="not found: GET https://api.au2.cliniko.com/v1/patients/404") as raised:
        client.get("patients", "404")
    assert raised.value.exit_code == 1
    assert len(mocked.calls) == 1


def test_validation_error_names_fields_not_values(mocked: responses.RequestsMock, client: ClinikoClient) -> None:
    body = {"message": "Validation Failed", "errors": {"email": "jo@example.test is not valid", "q": "bad filter"}}
    mocked.get(f"{BASE}/patients", status=422, json=body)
    with pytest.raises(ClinikoAPIError) as raised:
        client.list_page("patients", filters=[Filter("email", "=", "jo@example.test")])
    message = str(raised.value)
    assert "invalid email, q" in message
    assert "jo@example.test" not in message
    assert "not valid" not in message


@pytest.mark.parametrize("body", ["not json", '{"errors": ["a"]}', "[]"])
def test_validation_error_with_odd_bodies(mocked: responses.RequestsMock, client: ClinikoClient, body: str) -> None:
    mocked.get(f"{BASE}/patients", status=422, body=body)
    with pytest.raises(ClinikoAPIError, match=r"HTTP 422\)$"):
        client.list_page("patients")


@pytest.mark.parametrize("status", [400, 405, 409, 418])
def test_other_client_errors(mocked: responses.RequestsMock, client: ClinikoClient, status: int) -> None:
    mocked.get(f"{BASE}/patients", status=status)
    with pytest.raises(ClinikoAPIError, match=f"HTTP {status}"):
        client.list_page("patients")
    assert len(mocked.calls) == 1


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_not_followed(mocked: responses.RequestsMock, client: ClinikoClient, status: int) -> None:
    mocked.get(f"{BASE}/patients", status=status, headers={"Location": "https://api.cliniko.com/v1/patients"})
    mocked.get("https://api.cliniko.com/v1/patients", json=listing("patients", [], total=0))
    with pytest.raises(
        ClinikoAPIError, match=f"redirected GET https://api.au2.cliniko.com/v1/patients .*HTTP {status}"
    ):
        client.list_page("patients")
    assert [call.request.url for call in mocked.calls] == [f"{BASE}/patients?page=1&per_page=100"]


@pytest.mark.parametrize(
    "body",
    [
        {"individual_appointments": []},  # the wrong resource
        {"patients": {"id": "1"}},  # not a list
        {"patients": ["1", "2"]},  # not records
        [{"id": "1"}],  # not an envelope
        "patients",
    ],
)
def test_unexpected_envelopes_fail(mocked: responses.RequestsMock, client: ClinikoClient, body: object) -> None:
    mocked.get(f"{BASE}/patients", json=body)
    with pytest.raises(ClinikoAPIError, match=r"GET https://api.au2.cliniko.com/v1/patients \(page 2\)"):
        client.list_page("patients", page=2)


# -- redaction ------------------------------------------------------------------------------------------------


def test_the_key_never_shows(
    mocked: responses.RequestsMock, client: ClinikoClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    email_filter = Filter("email", "=", "jo.private@example.test")
    mocked.get(f"{BASE}/patients", json=listing("patients", ["1"], total=1))
    mocked.get(f"{BASE}/patients/1", status=401)
    mocked.get(f"{BASE}/patients/2", status=503)
    client.list_page("patients", filters=[email_filter])
    errors = []
    for record_id in ("1", "2"):
        with pytest.raises(Exception) as raised:
            client.get("patients", record_id, filters=[email_filter])
        errors.append(raised.value)
    secret = DOCS_KEY[:-4]
    texts = [str(error) for error in errors] + [repr(error) for error in errors] + [caplog.text, repr(client)]
    texts.append(repr(client._session.auth))
    for text in texts:
        assert secret not in text
        assert DOCS_AUTH.split()[1] not in text
        assert "jo.private" not in text
    assert "GET /v1/patients -> 200" in caplog.text
    assert "…NyJ9-au2" in repr(client)


def test_connection_errors_do_not_leak_the_query(mocked: responses.RequestsMock, client: ClinikoClient) -> None:
    mocked.get(f"{BASE}/patients", body=requests.exceptions.ConnectionError("boom at /v1/patients?q=jo@example.test"))
    with pytest.raises(Exception) as raised:
        client.list_page("patients", filters=[Filter("email", "=", "jo@example.test")])
    assert "jo@example.test" not in str(raised.value)
    assert raised.value.__cause__ is None

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
from cliniko_sync.cliniko.endpoints import UndocumentedParameterError
from cliniko_sync.errors import (
    ClinikoAPIError,
    ClinikoRefusedError,
    ConfigError,
    CredentialsRejectedError,
    UsageError,
)

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


# -- headers --------------------------------------------------------------------------------------------------


def test_headers(mocked: responses.RequestsMock, client: ClinikoClient) -> None:
    mocked.get(f"{BASE}/patients", json=listing("patients", [], total=0))
    client.list_page("patients")
    headers = mocked.calls[0].request.headers
    assert headers["Authorization"] == DOCS_AUTH
    assert headers["Accept"] == "application/json"
    assert headers["User-Agent"] == f"cliniko-sync/{__version__} ({EMAIL})"


# -- documented parameters only, next links as a signal ------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "filters", "sort"),
    [
        ("practitioners", [Filter("archived_at", "*")], None),  # the first release's bug: Cliniko answers 400
        ("practitioners/inactive", [Filter("deleted_at", "*")], None),
        ("patients", [Filter("deleted_at", "*")], None),  # patients document no deleted_at filter
        ("patients", [Filter("updated_at", "=", "2025-01-01")], None),  # date-times have no `=`
        ("group_appointments", [Filter("cancelled_at", "*")], None),
        ("patients", [], "name"),
        ("group_appointments", [], "patient_ids"),  # an array is not a sort column
        ("bookings_and_more", [], None),
    ],
)
def test_undocumented_parameters_are_never_sent(
    mocked: responses.RequestsMock, client: ClinikoClient, path: str, filters: list[Filter], sort: str | None
) -> None:
    with pytest.raises(UndocumentedParameterError):
        client.list_page(path, filters=filters, sort=sort)
    assert len(mocked.calls) == 0


def test_inactive_practitioners_use_the_practitioners_envelope(
    mocked: responses.RequestsMock, client: ClinikoClient
) -> None:
    mocked.get(f"{BASE}/practitioners/inactive", json=listing("practitioners", ["7"], total=1))
    page = client.list_page("practitioners/inactive")
    assert [record["id"] for record in page.records] == ["7"]


@pytest.mark.parametrize(
    ("body", "more"),
    [
        (listing("patients", ["1", "2"], total=5, next_url=f"{BASE}/patients?page=2"), True),
        (listing("patients", ["1", "2"], total=5), True),  # no links at all: the total says more
        (listing("patients", ["1", "2"], total=2), False),
        (listing("patients", ["1", "2"], total=None), False),
        (listing("patients", [], total=9), False),
    ],
)
def test_more_pages_signal(mocked: responses.RequestsMock, client: ClinikoClient, body: dict, more: bool) -> None:
    mocked.get(f"{BASE}/patients", json=body)
    assert client.list_page("patients", per_page=2).has_more() is more


def test_a_next_link_is_never_followed(mocked: responses.RequestsMock, client: ClinikoClient) -> None:
    """Next links may carry only `page` (or point anywhere): the client only ever requests its own URL."""
    evil = "https://evil.example/v1/patients?page=2"
    mocked.get(f"{BASE}/patients", json=listing("patients", ["1"], total=2, next_url=evil))
    page = client.list_page("patients", filters=[Filter("archived_at", "*")], sort="updated_at,id", per_page=1)
    assert page.has_more()
    assert not hasattr(client, "follow")
    assert [urlsplit(call.request.url or "").hostname for call in mocked.calls] == ["api.au2.cliniko.com"]


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
    mocked.get(f"{BASE}/patients", status=404, json={"message": "not found"})
    with pytest.raises(ClinikoAPIError, match="not found: GET https://api.au2.cliniko.com/v1/patients") as raised:
        client.list_page("patients")
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


def test_no_inactive_practitioners_endpoint_names_the_assumption(
    mocked: responses.RequestsMock, client: ClinikoClient
) -> None:
    mocked.get(f"{BASE}/practitioners/inactive", status=404, json={"message": "Not Found"})
    with pytest.raises(ClinikoAPIError, match=r"breaks the assumption inactive_practitioners .*--deep"):
        client.list_page("practitioners/inactive")


@pytest.mark.parametrize("status", [400, 422])
def test_a_refusal_names_the_endpoint_and_clinikos_message(
    mocked: responses.RequestsMock, client: ClinikoClient, status: int
) -> None:
    mocked.get(f"{BASE}/practitioners/inactive", status=status, json={"message": "This column is not searchable."})
    with pytest.raises(ClinikoRefusedError) as raised:
        client.list_page(
            "practitioners/inactive", filters=[Filter("updated_at", ">=", datetime(2025, 1, 1, tzinfo=UTC))]
        )
    message = str(raised.value)
    assert f"GET /practitioners/inactive (HTTP {status}: This column is not searchable.)" in message
    assert "check-credentials --deep" in message
    assert DOCS_KEY not in message and DOCS_KEY[-8:] not in message
    assert raised.value.path == "practitioners/inactive"
    assert raised.value.exit_code == 1
    assert len(mocked.calls) == 1  # a refusal is not retried


@pytest.mark.parametrize("body", ["not json", '{"errors": ["a"]}', "[]"])
def test_validation_error_with_odd_bodies(mocked: responses.RequestsMock, client: ClinikoClient, body: str) -> None:
    mocked.get(f"{BASE}/patients", status=422, body=body)
    with pytest.raises(ClinikoAPIError, match=r"GET /patients \(HTTP 422\);"):
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
    mocked.get(f"{BASE}/patients", status=401)
    mocked.get(f"{BASE}/patients", status=503)
    mocked.get(f"{BASE}/patients", status=400, json={"message": "This column is not searchable."})
    client.list_page("patients", filters=[email_filter])
    errors = []
    for _ in range(3):
        with pytest.raises(Exception) as raised:
            client.list_page("patients", filters=[email_filter])
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


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ('{"patients": [{"id": "1", "first_name": "Zoë \\u00e9"}], "total_entries": 1}'.encode(), "same"),
        ('\ufeff{"patients": [{"id": "1"}], "total_entries": 1}'.encode(), None),  # a byte-order mark
        ('{"patients": [{"id": "1"}], "total_entries": 1}'.encode("utf-16"), None),  # json.loads reads UTF-16 too
    ],
    ids=["utf-8", "byte-order-mark", "utf-16"],
)
def test_a_page_keeps_its_body_text_only_when_postgresql_reads_it_as_json_loads_did(
    mocked: responses.RequestsMock, client: ClinikoClient, content: bytes, text: str | None
) -> None:
    mocked.get(f"{BASE}/patients", body=content, content_type="application/json")
    page = client.list_page("patients")
    assert [record["id"] for record in page.records] == ["1"]
    assert page.text == (content.decode() if text == "same" else None)

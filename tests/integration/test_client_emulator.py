"""The Cliniko client against the real emulator over loopback HTTP: complete and filtered crawls, rate limits,
faults, credentials and the record parsers on the emulator's JSON."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from emulator_fixtures import EMULATOR_API_KEY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cliniko_sync.cliniko.client import ClinikoClient, Filter, key_hint
from cliniko_sync.cliniko.endpoints import UndocumentedParameterError
from cliniko_sync.cliniko.records import (
    DENY_LIST,
    attendee_row,
    group_appointment_row,
    individual_appointment_row,
    parse_time,
    patient_row,
)
from cliniko_sync.emulator import Clinic, EmulatorServer, Faults, generate_clinic
from cliniko_sync.emulator.render import RENDERERS
from cliniko_sync.errors import CredentialsRejectedError
from cliniko_sync.logs import setup_logging

CONTACT = "ops@clinic.example"
# What each listing leaves out unless a filter names the field (cliniko-api.md §4, §11).
HIDDEN_UNLESS_NAMED = {
    "patients": ("archived_at",),
    "individual_appointments": ("archived_at", "cancelled_at", "deleted_at"),
    "group_appointments": ("archived_at", "deleted_at"),
    "attendees": ("archived_at", "cancelled_at", "deleted_at"),
    "appointment_types": ("archived_at",),
    "practitioners": (),  # never archived: inactive ones are listed by /practitioners/inactive
    "businesses": ("archived_at",),
}


def connect(server: EmulatorServer, key: str = EMULATOR_API_KEY, **options: Any) -> ClinikoClient:
    """A client for `server` (no client-side limit unless asked)."""
    options.setdefault("rate_limit", None)
    return ClinikoClient(key, contact_email=CONTACT, api_url=server.base_url, **options)


@pytest.fixture
def client(emulator: EmulatorServer) -> Iterator[ClinikoClient]:
    with connect(emulator) as client:
        yield client


def everything(resource: str) -> list[Filter]:
    return [Filter(name, "*") for name in HIDDEN_UNLESS_NAMED[resource]]


def crawl(client: ClinikoClient, resource: str, filters: list[Filter], **options: Any) -> list[dict]:
    """Every page of a listing by page number, with our own parameters (next links are only a signal)."""
    records: list[dict] = []
    number = 1
    while True:
        page = client.list_page(resource, filters=filters, page=number, **options)
        records += page.records
        if not page.has_more():
            return records
        number += 1


def dataset(clinic: Clinic, resource: str, base_url: str) -> list[dict]:
    """The clinic's records as the API renders them, every one the API can list."""
    with clinic.lock:
        return [
            RENDERERS[resource](record, base_url, clinic)
            for table in clinic.listed_tables(resource)
            for record in table.iter_listed()
        ]


def by_id(records: list[dict]) -> dict[str, dict]:
    return {record["id"]: record for record in records}


@pytest.mark.parametrize("resource", list(HIDDEN_UNLESS_NAMED))
def test_full_crawl_equals_the_dataset(
    client: ClinikoClient, clinic: Clinic, emulator: EmulatorServer, resource: str
) -> None:
    paths = [resource, f"{resource}/inactive"] if resource == "practitioners" else [resource]
    records = [record for path in paths for record in crawl(client, path, everything(resource), sort="updated_at,id")]
    expected = dataset(clinic, resource, emulator.base_url)
    assert len(records) == len({record["id"] for record in records}) == len(expected)
    assert by_id(records) == by_id(expected)
    assert all(isinstance(record["id"], str) for record in records)
    # Σ ceil(records/100) per endpoint: one request per page and no more.
    assert client.stats.requests == sum(max(1, -(-len(crawl(client, p, everything(resource))) // 100)) for p in paths)


def test_default_listing_leaves_retired_records_out(client: ClinikoClient, clinic: Clinic) -> None:
    shown = crawl(client, "individual_appointments", [])
    assert shown
    assert all(record[name] is None for record in shown for name in ("archived_at", "cancelled_at", "deleted_at"))
    assert len(shown) < len(clinic.individual_appointments)


def test_emulator_json_parses_into_rows_without_denied_fields(
    client: ClinikoClient, clinic: Clinic, emulator: EmulatorServer
) -> None:
    builders: dict[str, Callable[[dict], dict]] = {
        "patients": lambda raw: patient_row(raw, default_region="AU"),
        "individual_appointments": individual_appointment_row,
        "group_appointments": group_appointment_row,
        "attendees": attendee_row,
    }
    for resource, build in builders.items():
        records = crawl(client, resource, everything(resource))
        rows = [build(raw) for raw in records]
        assert [row["id"] for row in rows] == [raw["id"] for raw in records]
        for row in rows:
            assert row["updated_at"] is not None
            assert not set(row["raw"]) & DENY_LIST[resource]
    patients = [patient_row(raw, default_region="AU") for raw in crawl(client, "patients", everything("patients"))]
    assert any(row["phone_valid"] for row in patients)
    assert any(not row["phone_valid"] for row in patients)
    assert all(row["phone"] is None or row["phone"].startswith("+") for row in patients)
    appointments = [individual_appointment_row(raw) for raw in crawl(client, "individual_appointments", [])]
    with clinic.lock:
        patient_ids = {str(patient_id) for patient_id in clinic.patients.records}
    assert {row["patient_id"] for row in appointments} <= patient_ids


# -- filtered crawls against a brute-force filter of the dataset -----------------------------------------------


def brute_force(records: list[dict], resource: str, conditions: list[Filter]) -> list[dict]:
    named = {condition.field for condition in conditions}
    hidden = [name for name in HIDDEN_UNLESS_NAMED[resource] if name not in named]
    return [
        record
        for record in records
        if all(record[name] is None for name in hidden) and all(matches(record, condition) for condition in conditions)
    ]


def matches(record: dict, condition: Filter) -> bool:
    if condition.op == "*":
        return True
    if condition.field == "patient_id":
        assert isinstance(condition.value, tuple)
        return record["patient"]["links"]["self"].rsplit("/", 1)[-1] in {str(value) for value in condition.value}
    if condition.field == "id":
        assert isinstance(condition.value, int)
        return compare(int(record["id"]), condition.op, condition.value)
    if condition.field == "did_not_arrive":
        return record["did_not_arrive"] is condition.value
    value = parse_time(record[condition.field])
    if condition.op == "?":
        return value is not None
    if condition.op == "!?":
        return value is None
    assert isinstance(condition.value, datetime)
    return value is not None and compare(value, condition.op, condition.value.replace(microsecond=0))


def compare(left: Any, op: str, right: Any) -> bool:
    return {">=": left >= right, ">": left > right, "<=": left <= right, "<": left < right, "=": left == right}[op]


@pytest.fixture
def appointments_json(clinic: Clinic, emulator: EmulatorServer) -> list[dict]:
    return dataset(clinic, "individual_appointments", emulator.base_url)


def time_filters(field: str) -> st.SearchStrategy[Filter]:
    start = datetime(2019, 1, 1, tzinfo=UTC)
    moments = st.integers(0, 9 * 365 * 86400).map(lambda seconds: start + timedelta(seconds=seconds, microseconds=7))
    return st.one_of(
        st.builds(Filter, st.just(field), st.sampled_from([">=", ">", "<=", "<"]), moments),
        st.builds(Filter, st.just(field), st.sampled_from(["?", "!?", "*"])),
    )


appointment_conditions = st.lists(
    st.one_of(
        time_filters("updated_at"),
        time_filters("starts_at"),
        time_filters("cancelled_at"),
        time_filters("archived_at"),
        st.builds(Filter, st.just("deleted_at"), st.sampled_from(["*", "?", "!?"])),
        st.builds(Filter, st.just("did_not_arrive"), st.just("="), st.booleans()),
    ),
    max_size=4,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conditions=appointment_conditions, sort=st.sampled_from([None, "updated_at,id", "starts_at:desc,id"]))
def test_filtered_crawls_equal_a_brute_force_filter(
    client: ClinikoClient, appointments_json: list[dict], conditions: list[Filter], sort: str | None
) -> None:
    got = crawl(client, "individual_appointments", conditions, sort=sort)
    expected = brute_force(appointments_json, "individual_appointments", conditions)
    assert sorted(record["id"] for record in got) == sorted(record["id"] for record in expected)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_patient_and_keyset_filters(client: ClinikoClient, appointments_json: list[dict], data: st.DataObject) -> None:
    patient_links = sorted({record["patient"]["links"]["self"] for record in appointments_json})
    chosen = data.draw(st.lists(st.sampled_from(patient_links), min_size=1, max_size=3, unique=True))
    ids = [int(link.rsplit("/", 1)[-1]) for link in chosen]
    after = data.draw(st.sampled_from(sorted(int(record["id"]) for record in appointments_json)))
    conditions = [Filter("patient_id", "=", ids), Filter("id", ">", after), *everything("individual_appointments")]
    got = crawl(client, "individual_appointments", conditions, sort="id", per_page=5)
    expected = brute_force(appointments_json, "individual_appointments", conditions)
    assert [record["id"] for record in got] == sorted((record["id"] for record in expected), key=int)


# -- rate limits ---------------------------------------------------------------------------------------------


def most_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((sum(1 for other in times[i:] if other < start + window) for i, start in enumerate(times)), default=0)


def test_client_limiter_keeps_the_server_under_its_limit(
    make_emulator: Callable[..., EmulatorServer], clinic: Clinic
) -> None:
    server = make_emulator(rate_limit=20, rate_window=2.0)
    with connect(server, rate_limit=20, rate_window=2.0) as client:
        records = crawl(client, "patients", everything("patients"), per_page=8)
    assert by_id(records) == by_id(dataset(clinic, "patients", server.base_url))
    log = server.requests_for(EMULATOR_API_KEY)
    assert len(log) == len(records) // 8 + 1 > 20
    assert all(entry.status == 200 for entry in log)
    assert most_in_any_window([entry.time for entry in log], 2.0) <= 20
    assert client.stats.rate_limited == 0
    assert client.stats.throttle_wait_seconds > 0


def test_server_429s_are_waited_out(make_emulator: Callable[..., EmulatorServer], clinic: Clinic) -> None:
    server = make_emulator(rate_limit=10, rate_window=1.0)
    with connect(server) as client:
        records = crawl(client, "patients", everything("patients"), per_page=10)
    assert by_id(records) == by_id(dataset(clinic, "patients", server.base_url))
    assert client.stats.rate_limited > 0
    assert client.stats.rate_limit_wait_seconds > 0
    assert any(entry.status == 429 for entry in server.requests_for(EMULATOR_API_KEY))


# A short 429 burst first, so a 429 comes however slowly a loaded machine sends the requests.
@pytest.mark.parametrize(
    "faults",
    [
        Faults(retry_after=True, reset_header=False, rate_limit_burst_seconds=0.2),
        Faults(reset_header=False, rate_limit_burst_seconds=0.2),
    ],
)
def test_429_without_the_reset_header(
    make_emulator: Callable[..., EmulatorServer], clinic: Clinic, faults: Faults
) -> None:
    server = make_emulator(rate_limit=10, rate_window=1.0, faults=faults)
    with connect(server) as client:
        records = crawl(client, "patients", everything("patients"), per_page=15)
    assert len(records) == len(dataset(clinic, "patients", server.base_url))
    assert client.stats.rate_limited > 0


# -- faults, credentials, single records -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "faults",
    [
        Faults(error_rate=0.2, seed=1),
        Faults(malformed_rate=0.2, seed=2),
        Faults(truncated_rate=0.2, seed=3),
        Faults(error_rate=0.1, malformed_rate=0.05, truncated_rate=0.05, seed=4),
    ],
)
def test_crawl_completes_through_faults(
    make_emulator: Callable[..., EmulatorServer], clinic: Clinic, faults: Faults
) -> None:
    server = make_emulator(faults=faults)
    with connect(server) as client:
        client.sleep = lambda seconds: None
        records = crawl(client, "individual_appointments", everything("individual_appointments"))
    assert by_id(records) == by_id(dataset(clinic, "individual_appointments", server.base_url))
    assert client.stats.retries > 0


def test_hanging_requests_time_out_and_retry(make_emulator: Callable[..., EmulatorServer], clinic: Clinic) -> None:
    server = make_emulator(faults=Faults(hang_rate=0.3, hang_seconds=0.6, seed=5))
    with connect(server, timeout=0.3) as client:
        client.sleep = lambda seconds: None
        records = crawl(client, "patients", everything("patients"), per_page=20)
    assert len(records) == len(dataset(clinic, "patients", server.base_url))
    assert client.stats.retries > 0


@pytest.mark.parametrize("key", ["unknown-test-key-au1", "emulator-test-key-au2"])
def test_rejected_keys(emulator: EmulatorServer, key: str) -> None:
    with connect(emulator, key) as client, pytest.raises(CredentialsRejectedError) as raised:
        client.list_page("patients")
    assert str(raised.value) == (
        f"Cliniko rejected the API key {key_hint(key)} (HTTP 401) for http://127.0.0.1:{emulator.port}"
    )
    assert key[:-4] not in str(raised.value)


def test_key_without_its_shard_suffix_is_accepted(make_emulator: Callable[..., EmulatorServer]) -> None:
    server = make_emulator(api_keys=["MxJrZXkiOiI1Njd1amJmZTQ1NyJ9-au1"])
    bare = "MxJrZXkiOiI1Njd1amJmZTQ1NyJ9"
    with connect(server, bare) as client:
        assert client.shard == "au1"
        assert client.list_page("patients", per_page=1).total_entries


def test_revoked_key_is_rejected_mid_run(client: ClinikoClient, emulator: EmulatorServer) -> None:
    client.list_page("patients", per_page=1)
    emulator.revoke_key(EMULATOR_API_KEY)
    with pytest.raises(CredentialsRejectedError):
        client.list_page("patients", page=2, per_page=1)


def test_archived_patients_are_listed_by_id_only_with_archived_at_star(client: ClinikoClient, clinic: Clinic) -> None:
    with clinic.lock:
        archived = next(patient for patient in clinic.patients.iter_listed() if patient.archived_at is not None)
    by_id = Filter("id", "=", [str(archived.id)])
    assert client.list_page("patients", filters=[by_id]).records == []
    records = client.list_page("patients", filters=[by_id, Filter("archived_at", "*")]).records
    assert [record["id"] for record in records] == [str(archived.id)]
    assert records[0]["archived_at"]


def test_group_attendees_sub_listing(client: ClinikoClient, clinic: Clinic) -> None:
    with clinic.lock:
        group = next(iter(clinic.group_appointments.iter_listed()))
    attendees = crawl(client, "attendees", [Filter("booking_id", "=", group.id), *everything("attendees")])
    assert attendees
    assert {attendee_row(raw)["group_appointment_id"] for raw in attendees} == {str(group.id)}


def test_an_undocumented_filter_is_never_sent(client: ClinikoClient, emulator: EmulatorServer) -> None:
    before = len(emulator.request_log)
    with pytest.raises(UndocumentedParameterError):
        client.list_page("practitioners", filters=[Filter("archived_at", "*")])
    assert len(emulator.request_log) == before


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_debug_logs_hold_neither_key_nor_filter_values(
    client: ClinikoClient, capsys: pytest.CaptureFixture[str], log_format: str
) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("urllib3").level)
    setup_logging(verbose=2, quiet=False, log_format=log_format)
    try:
        client.list_page("patients", filters=[Filter("email", "=", "private.person@example.test")])
    finally:
        root.handlers[:], level, urllib3_level = saved
        root.setLevel(level)
        logging.getLogger("urllib3").setLevel(urllib3_level)
    logged = capsys.readouterr().err
    assert "/v1/patients" in logged
    assert "private.person" not in logged
    assert EMULATOR_API_KEY not in logged
    assert EMULATOR_API_KEY[:-4] not in logged


@pytest.mark.slow
def test_ten_thousand_patient_clinic_reads_every_record_once(make_emulator: Callable[..., EmulatorServer]) -> None:
    big = generate_clinic(patients=10_000, seed=7)
    server = make_emulator(big)
    with connect(server) as client:
        for resource in ("patients", "individual_appointments", "attendees"):
            ids = [record["id"] for record in crawl(client, resource, everything(resource), sort="updated_at,id")]
            with big.lock:  # /attendees lists individual appointments' attendee records too
                expected = {str(r.id) for table in big.listed_tables(resource) for r in table.iter_listed()}
            assert len(ids) == len(set(ids)) == len(expected)
            assert set(ids) == expected

"""The Cliniko emulator over real loopback HTTP: auth, envelopes and links, q[] filters, exclusions, sort, by-id.

These run on the strict defaults (the real API's behaviour); tests/integration/test_emulator_strict.py covers the
strict behaviours and each quirk in depth.
"""

from __future__ import annotations

import base64
import http.client
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
from emulator_fixtures import EMULATOR_API_KEY, USER_AGENT
from emulator_fixtures import emulator_get as get

from cliniko_sync.emulator import Clinic, EmulatorServer, Quirks
from cliniko_sync.emulator.records import iso, micros_of, whole_second

TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
ALL_APPOINTMENTS = ["archived_at:*", "cancelled_at:*", "deleted_at:*"]

Get = Callable[..., requests.Response]


def ids(response: requests.Response, resource: str) -> list[str]:
    assert response.status_code == 200, response.text
    return [record["id"] for record in response.json()[resource]]


def crawl(server: EmulatorServer, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every record of a listing: while links.next is there, the same parameters with the next page (the links
    carry only page and per_page, as Cliniko's do)."""
    resource = "practitioners" if path.startswith("/practitioners") else path.strip("/").split("/")[-1]
    records: list[dict[str, Any]] = []
    page = 1
    while True:
        response = get(server, path, per_page=100, page=page, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        records += body[resource]
        if "next" not in body["links"]:
            return records
        page += 1


def follow_next_links(server: EmulatorServer, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every record a client gets by following links.next as given."""
    response = get(server, path, per_page=100, **params)
    records: list[dict[str, Any]] = []
    while True:
        assert response.status_code == 200, response.text
        body = response.json()
        records += body[path.strip("/")]
        if "next" not in body["links"]:
            return records
        response = requests.get(
            body["links"]["next"], auth=(EMULATOR_API_KEY, ""), headers={"User-Agent": USER_AGENT}, timeout=10
        )


def listed_patients(clinic: Clinic, *, archived: bool = False) -> set[str]:
    return {
        str(p.id)
        for p in clinic.patients.records.values()
        if p.deleted_at is None and (archived or p.archived_at is None)
    }


# --- authentication ---------------------------------------------------------------------------------------------


def test_key_is_accepted_with_or_without_its_shard_suffix(emulator: EmulatorServer) -> None:
    assert get(emulator, "/patients", key=EMULATOR_API_KEY).status_code == 200
    assert get(emulator, "/patients", key=EMULATOR_API_KEY.removesuffix("-au1")).status_code == 200


@pytest.mark.parametrize("key", [EMULATOR_API_KEY.replace("-au1", "-au2"), "someone-elses-key-au1", "", "-au1"])
def test_wrong_shard_or_unknown_key_is_401_access_denied(emulator: EmulatorServer, key: str) -> None:
    response = get(emulator, "/patients", key=key)
    assert response.status_code == 401
    assert response.text.strip() == "HTTP Basic: Access denied."


def test_a_request_addressed_to_another_shards_host_is_401(emulator: EmulatorServer) -> None:
    """As if DNS sent api.au2.cliniko.com to this au1 server: the key does not live on that shard."""
    auth, headers = (EMULATOR_API_KEY, ""), {"User-Agent": USER_AGENT}
    wrong = requests.get(emulator.base_url + "/patients", auth=auth, headers={**headers, "Host": "api.au2.cliniko.com"})
    assert wrong.status_code == 401
    right = requests.get(emulator.base_url + "/patients", auth=auth, headers={**headers, "Host": "api.au1.cliniko.com"})
    assert right.status_code == 200
    assert right.json()["links"]["self"].startswith("http://api.au1.cliniko.com/v1/patients?")


def test_missing_or_garbled_authorization_is_401(emulator: EmulatorServer) -> None:
    headers = {"User-Agent": USER_AGENT}
    assert requests.get(emulator.base_url + "/patients", headers=headers, timeout=10).status_code == 401
    garbled = {**headers, "Authorization": "Basic not-base64!"}
    assert requests.get(emulator.base_url + "/patients", headers=garbled, timeout=10).status_code == 401
    bearer = {**headers, "Authorization": f"Bearer {EMULATOR_API_KEY}"}
    assert requests.get(emulator.base_url + "/patients", headers=bearer, timeout=10).status_code == 401


def test_missing_user_agent_is_403_unless_not_required(make_emulator: Callable[..., EmulatorServer]) -> None:
    strict, lenient = make_emulator(), make_emulator(require_user_agent=False)
    token = base64.b64encode(f"{EMULATOR_API_KEY}:".encode()).decode()
    for server, expected in ((strict, 403), (lenient, 200)):
        # http.client sends no User-Agent unless told to (requests/urllib3 always add one)
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/v1/patients", headers={"Authorization": f"Basic {token}"})
        response = connection.getresponse()
        body = response.read().decode()
        connection.close()
        assert response.status == expected
        if expected == 403:
            assert "user agent" in body.lower()


def test_accept_header_other_than_json_is_tolerated(emulator: EmulatorServer) -> None:
    response = requests.get(
        emulator.base_url + "/patients",
        auth=(EMULATOR_API_KEY, ""),
        headers={"User-Agent": USER_AGENT, "Accept": "text/html"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")


def test_revoked_key_is_refused_until_added_again(emulator: EmulatorServer) -> None:
    emulator.revoke_key(EMULATOR_API_KEY)
    assert get(emulator, "/patients").status_code == 401
    emulator.add_key(EMULATOR_API_KEY.removesuffix("-au1"))
    assert get(emulator, "/patients").status_code == 200


def test_request_log_records_a_fingerprint_never_the_key(emulator: EmulatorServer) -> None:
    get(emulator, "/patients", per_page=5)
    get(emulator, "/patients", key="wrong-key")
    entries = emulator.request_log
    assert [(e.method, e.status) for e in entries] == [("GET", 200), ("GET", 401)]
    assert entries[0].path == "/v1/patients?per_page=5"
    assert entries[0].key_fingerprint and entries[1].key_fingerprint is None
    assert EMULATOR_API_KEY not in repr(entries) and "emulator-test-key" not in repr(entries)
    assert len(emulator.requests_for(EMULATOR_API_KEY)) == 1


def test_non_get_is_405_and_unknown_paths_are_404_json(emulator: EmulatorServer) -> None:
    response = requests.post(
        emulator.base_url + "/patients", auth=(EMULATOR_API_KEY, ""), headers={"User-Agent": USER_AGENT}, timeout=10
    )
    assert response.status_code == 405
    for path in ("/invoices", "/patients/123/nope", "/../etc/passwd"):
        response = get(emulator, path)
        assert response.status_code == 404
        assert response.json()["message"]


# --- envelope, links, paging ------------------------------------------------------------------------------------


def test_envelope_and_links_on_first_middle_and_last_page(emulator: EmulatorServer, clinic: Clinic) -> None:
    expected_total = len(listed_patients(clinic))
    first = get(emulator, "/patients", per_page=40).json()
    assert set(first) == {"patients", "total_entries", "links"}
    assert first["total_entries"] == expected_total
    assert len(first["patients"]) == 40
    assert set(first["links"]) == {"self", "next"}
    assert first["links"]["self"] == f"{emulator.base_url}/patients?page=1&per_page=40"
    assert first["links"]["next"] == f"{emulator.base_url}/patients?page=2&per_page=40"
    middle = get(emulator, "/patients", per_page=40, page=2).json()
    assert middle["links"]["previous"] == f"{emulator.base_url}/patients?page=1&per_page=40"
    last_page = -(-expected_total // 40)
    last = get(emulator, "/patients", per_page=40, page=last_page).json()
    assert "next" not in last["links"] and "previous" in last["links"]
    assert len(last["patients"]) == expected_total - 40 * (last_page - 1)


def test_links_carry_page_and_per_page_only(emulator: EmulatorServer) -> None:
    """As in Cliniko's documented examples: a link does not repeat the request's q[] or sort."""
    body = get(
        emulator,
        "/individual_appointments",
        per_page=10,
        page=2,
        q=["starts_at:>=2020-01-01T00:00:00Z", "cancelled_at:*"],
        sort="updated_at,id:desc",
    ).json()
    base = f"{emulator.base_url}/individual_appointments"
    assert body["links"] == {
        "self": f"{base}?page=2&per_page=10",
        "previous": f"{base}?page=1&per_page=10",
        "next": f"{base}?page=3&per_page=10",
    }


def test_following_next_links_reads_every_record_once(emulator: EmulatorServer, clinic: Clinic) -> None:
    """Without filters, the bare links are enough to read a listing once each."""
    records = follow_next_links(emulator, "/patients")
    assert len(records) == len({r["id"] for r in records}) == len(listed_patients(clinic))


def test_default_per_page_is_50_and_out_of_range_values_are_400(emulator: EmulatorServer) -> None:
    assert len(get(emulator, "/patients").json()["patients"]) == 50
    assert len(get(emulator, "/patients", per_page=100).json()["patients"]) == 100
    for bad in ("101", "0", "-1", "ten"):
        response = get(emulator, "/patients", per_page=bad)
        assert response.status_code == 400
        assert set(response.json()) == {"message"} and "per_page" in response.json()["message"]
    assert get(emulator, "/patients", page="0").status_code == 400


def test_page_past_the_end_is_an_empty_list(emulator: EmulatorServer, clinic: Clinic) -> None:
    body = get(emulator, "/patients", per_page=100, page=50).json()
    assert body["patients"] == []
    assert body["total_entries"] == len(listed_patients(clinic))
    assert "next" not in body["links"]


def test_ids_are_19_digit_strings_and_times_are_whole_seconds_utc(emulator: EmulatorServer) -> None:
    for resource in ("patients", "individual_appointments", "group_appointments", "attendees", "practitioners"):
        for record in get(emulator, f"/{resource}", per_page=20).json()[resource]:
            assert isinstance(record["id"], str) and re.fullmatch(r"\d{19}", record["id"])
            for name in ("created_at", "updated_at"):
                assert TIMESTAMP.fullmatch(record[name])


def test_relations_are_links_on_the_base_url(emulator: EmulatorServer, clinic: Clinic) -> None:
    appointment = get(emulator, "/individual_appointments", per_page=1).json()["individual_appointments"][0]
    assert "patient_id" not in appointment
    patient_url = appointment["patient"]["links"]["self"]
    assert patient_url.startswith(f"{emulator.base_url}/patients/")
    record = clinic.individual_appointments.records[int(appointment["id"])]
    assert patient_url.rsplit("/", 1)[1] == str(record.patient_id)
    attendee = get(emulator, "/attendees", per_page=1).json()["attendees"][0]
    assert attendee["booking"]["links"]["self"].startswith(f"{emulator.base_url}/bookings/")


# --- filters ----------------------------------------------------------------------------------------------------


def test_date_time_operators(emulator: EmulatorServer, clinic: Clinic) -> None:
    """Compared with the stored value: `>T` also holds records shown as T whose hidden fraction is not zero."""
    patients = [p for p in clinic.patients.records.values() if p.deleted_at is None and p.archived_at is None]
    middle = whole_second(sorted(p.updated_at for p in patients)[len(patients) // 2])
    cases = {
        ">=": lambda t: t >= middle,
        ">": lambda t: t > middle,
        "<=": lambda t: t <= middle,
        "<": lambda t: t < middle,
    }
    for operator, keep in cases.items():
        found = {r["id"] for r in crawl(emulator, "/patients", q=[f"updated_at:{operator}{iso(middle)}"])}
        assert found == {str(p.id) for p in patients if keep(p.updated_at)}, operator
    archived = {r["id"] for r in crawl(emulator, "/patients", q=["archived_at:?"])}
    assert archived == listed_patients(clinic, archived=True) - listed_patients(clinic)
    assert {r["id"] for r in crawl(emulator, "/patients", q=["archived_at:!?"])} == listed_patients(clinic)


@pytest.mark.parametrize(
    "bad",
    [
        "updated_at:=2024-01-01T00:00:00Z",  # date-times have no =
        "updated_at:>=2024-01-01",
        "updated_at:>=2024-01-01T00:00:00+10:00",
        "updated_at:>=",
        "id:=abc",
        "id:~1",
        "first_name:>Zoe",
        "accepted_privacy_policy:=yes",
        "archived_at:*now",
        "updated_at:>=2024-01-01T00:00:00.000Z",  # whole seconds only (the stricter reading)
        "nonsense",
        "no_such_field:=1",
    ],
)
def test_malformed_filters_are_400_with_a_message(emulator: EmulatorServer, bad: str) -> None:
    response = get(emulator, "/patients", q=[bad])
    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"message"} and body["message"]


def test_numeric_operators_and_comma_lists(emulator: EmulatorServer, clinic: Clinic) -> None:
    all_ids = sorted(int(i) for i in listed_patients(clinic))
    some = [str(i) for i in all_ids[3:6]]
    assert sorted(ids(get(emulator, "/patients", q=[f"id:={','.join(some)}"]), "patients")) == some
    above = {r["id"] for r in crawl(emulator, "/patients", q=[f"id:>{all_ids[10]}"])}
    assert above == {str(i) for i in all_ids[11:]}
    at_most = {r["id"] for r in crawl(emulator, "/patients", q=[f"id:<={all_ids[10]}"])}
    assert at_most == {str(i) for i in all_ids[:11]}
    not_one = {r["id"] for r in crawl(emulator, "/patients", q=[f"id:!={all_ids[0]}"])}
    assert not_one == {str(i) for i in all_ids[1:]}


def test_patient_id_filter_on_appointments_and_attendees(emulator: EmulatorServer, clinic: Clinic) -> None:
    appointment = next(iter(clinic.individual_appointments.records.values()))
    patient_id = appointment.patient_id
    found = crawl(emulator, "/individual_appointments", q=[f"patient_id:={patient_id}", *ALL_APPOINTMENTS])
    expected = {str(a.id) for a in clinic.individual_appointments.records.values() if a.patient_id == patient_id}
    assert {r["id"] for r in found} == expected
    attendee = next(iter(clinic.attendees.records.values()))
    found = crawl(emulator, "/attendees", q=[f"patient_id:={attendee.patient_id}", *ALL_APPOINTMENTS])
    assert str(attendee.id) in {r["id"] for r in found}
    by_booking = crawl(emulator, "/attendees", q=[f"booking_id:={attendee.booking_id}", *ALL_APPOINTMENTS])
    assert {r["id"] for r in by_booking} == {
        str(i) for i in clinic.group_appointments.records[attendee.booking_id].attendee_ids
    }


def test_string_operators(emulator: EmulatorServer, clinic: Clinic) -> None:
    patient_id = clinic.add_patient(first_name="Zoë", last_name="O'Connor-Testperson", email="Zoe.OConnor@Example.TEST")
    exact = ids(get(emulator, "/patients", q=["last_name:=O'Connor-Testperson"]), "patients")
    assert exact == [patient_id]
    assert ids(get(emulator, "/patients", q=["last_name:~connor-testp"]), "patients") == [patient_id]
    assert ids(get(emulator, "/patients", q=["last_name:~~O'C%testperson"]), "patients") == [patient_id]
    assert ids(get(emulator, "/patients", q=["last_name:~~Connor%"]), "patients") == []  # ~~ matches the whole value
    assert patient_id not in {r["id"] for r in crawl(emulator, "/patients", q=["last_name:!=O'Connor-Testperson"])}
    without_email = {r["id"] for r in crawl(emulator, "/patients", q=["email:!?"])}
    assert without_email == {str(p.id) for p in clinic.patients.records.values() if p.email is None} & listed_patients(
        clinic
    )
    assert patient_id in {r["id"] for r in crawl(emulator, "/patients", q=["email:?"])}


def test_boolean_operator(emulator: EmulatorServer, clinic: Clinic) -> None:
    no_shows = {
        r["id"] for r in crawl(emulator, "/individual_appointments", q=["did_not_arrive:=true", *ALL_APPOINTMENTS])
    }
    expected = {str(a.id) for a in clinic.individual_appointments.records.values() if a.did_not_arrive}
    assert no_shows == expected and expected
    others = {
        r["id"] for r in crawl(emulator, "/individual_appointments", q=["did_not_arrive:!=true", *ALL_APPOINTMENTS])
    }
    assert len(others) + len(no_shows) == len(clinic.individual_appointments.records)


def test_array_contains_operator(emulator: EmulatorServer, clinic: Clinic) -> None:
    group = next(g for g in clinic.group_appointments.records.values() if clinic.group_patient_ids(g))
    patient_id = clinic.group_patient_ids(group)[0]
    found = crawl(emulator, "/group_appointments", q=[f"patient_ids:~{patient_id}", "archived_at:*", "deleted_at:*"])
    assert str(group.id) in {r["id"] for r in found}
    assert all(patient_id in r["patient_ids"] for r in found)


def test_date_operator_with_wildcards(emulator: EmulatorServer, clinic: Clinic) -> None:
    may = {r["id"] for r in crawl(emulator, "/patients", q=["date_of_birth:=****-05-**"])}
    expected = {
        str(p.id) for p in clinic.patients.records.values() if p.date_of_birth and p.date_of_birth[5:7] == "05"
    } & listed_patients(clinic)
    assert may == expected and expected
    older = {r["id"] for r in crawl(emulator, "/patients", q=["date_of_birth:<1960-01-01"])}
    assert all(clinic.patients.records[int(i)].date_of_birth < "1960-01-01" for i in older)  # type: ignore[operator]


def test_filters_combine_with_and(emulator: EmulatorServer, clinic: Clinic) -> None:
    start, end = "2024-01-01T00:00:00Z", "2024-07-01T00:00:00Z"
    both = {
        r["id"] for r in crawl(emulator, "/individual_appointments", q=[f"starts_at:>={start}", f"starts_at:<{end}"])
    }
    after = {r["id"] for r in crawl(emulator, "/individual_appointments", q=[f"starts_at:>={start}"])}
    before = {r["id"] for r in crawl(emulator, "/individual_appointments", q=[f"starts_at:<{end}"])}
    assert both == after & before and both


def test_an_updated_at_crawl_beside_a_starts_at_range_lists_what_a_scan_finds_and_follows_edits(
    emulator: EmulatorServer, clinic: Clinic
) -> None:
    """The crawl's query with the window's `starts_at:>=` (or a backfill's `starts_at:<`) beside its updated_at
    bound, less an id, sorted by updated_at: every page and total_entries as a scan of the records gives them, and
    again after appointments are booked, cancelled and moved across the bound between two reads."""
    table = clinic.individual_appointments
    starts = sorted(whole_second(a.starts_at) for a in table.records.values())
    bound = starts[len(starts) * 2 // 3]
    since = sorted(whole_second(a.updated_at) for a in table.records.values())[len(starts) // 4]

    def scan(before: bool, skipped: int) -> list[str]:
        found = [
            a for a in table.iter_listed()
            if (a.starts_at < bound) == before and a.updated_at >= since and a.id != skipped
        ]  # fmt: skip
        return [str(a.id) for a in sorted(found, key=lambda a: (a.updated_at, a.id))]

    def listed(before: bool, skipped: int) -> tuple[list[str], int]:
        q = [*ALL_APPOINTMENTS, f"starts_at:{'<' if before else '>='}{iso(bound)}", f"updated_at:>={iso(since)}",
             f"id:!={skipped}"]  # fmt: skip
        first = get(emulator, "/individual_appointments", per_page=100, sort="updated_at,id", q=q)
        records = crawl(emulator, "/individual_appointments", sort="updated_at,id", q=q)
        return [r["id"] for r in records], first.json()["total_entries"]

    def check() -> None:
        for before in (True, False):
            expected = scan(before, skip)
            assert listed(before, skip) == (expected, len(expected))

    skip = int(scan(True, 0)[3])
    check()
    clinic.cancel_appointment(scan(True, 0)[0])  # moves to the end of the updated_at order
    clinic.cancel_appointment(scan(False, 0)[1])
    check()
    patient = next(iter(clinic.patients.iter_listed())).id
    clinic.book(patient, datetime.fromtimestamp(bound - 86_400, UTC))
    clinic.book(patient, datetime.fromtimestamp(bound + 86_400, UTC))
    check()
    assert len(scan(True, skip)) > 100 and len(scan(False, skip)) > 100  # more than one page each way


# --- default exclusions -----------------------------------------------------------------------------------------


def test_archived_merged_and_deleted_patients_are_left_out_by_default(emulator: EmulatorServer, clinic: Clinic) -> None:
    default = {r["id"] for r in crawl(emulator, "/patients")}
    everyone = {r["id"] for r in crawl(emulator, "/patients", q=["archived_at:*"])}
    records = clinic.patients.records.values()
    archived = {str(p.id) for p in records if p.archived_at is not None and p.deleted_at is None}
    merged = {str(p.id) for p in records if p.merged_at is not None and p.deleted_at is None}
    deleted = {str(p.id) for p in records if p.deleted_at is not None}
    assert archived and merged and deleted
    assert not default & (archived | merged | deleted)
    assert archived | merged <= everyone
    assert not everyone & deleted


@pytest.mark.parametrize(
    ("resource", "hidden"),
    [
        ("individual_appointments", ("archived_at", "cancelled_at", "deleted_at")),
        ("attendees", ("archived_at", "cancelled_at", "deleted_at")),
        ("group_appointments", ("archived_at", "deleted_at")),
    ],
)
def test_archived_cancelled_deleted_records_appear_only_when_a_filter_names_the_field(
    emulator: EmulatorServer, clinic: Clinic, resource: str, hidden: tuple[str, ...]
) -> None:
    records = [record for table in clinic.listed_tables(resource) for record in table.records.values()]
    default = {r["id"] for r in crawl(emulator, f"/{resource}")}
    assert default == {str(r.id) for r in records if all(getattr(r, name) is None for name in hidden)}
    everything = crawl(emulator, f"/{resource}", q=[f"{name}:*" for name in hidden])
    assert len(everything) == len(records)
    for name in hidden:
        lifted = {r["id"] for r in crawl(emulator, f"/{resource}", q=[f"{name}:*"])}
        others = [other for other in hidden if other != name]
        assert lifted == {str(r.id) for r in records if all(getattr(r, other) is None for other in others)}
        only = {r["id"] for r in crawl(emulator, f"/{resource}", q=[f"{name}:?", *[f"{o}:*" for o in others]])}
        assert only == {str(r.id) for r in records if getattr(r, name) is not None} and only


# --- sort -------------------------------------------------------------------------------------------------------


def test_default_sort_is_stored_created_at_then_numeric_id(emulator: EmulatorServer, clinic: Clinic) -> None:
    records = crawl(emulator, "/patients", q=["archived_at:*"])
    stored = clinic.patients.records
    keys = [(stored[int(r["id"])].created_at, int(r["id"])) for r in records]
    assert keys == sorted(keys)
    shown = [r["created_at"] for r in records]
    assert shown == sorted(shown)


def test_sort_by_updated_at_breaks_ties_by_numeric_id_with_whole_second_storage(
    make_emulator: Callable[..., EmulatorServer],
) -> None:
    server = make_emulator(quirks=Quirks(whole_second_storage=True))
    records = crawl(server, "/individual_appointments", q=ALL_APPOINTMENTS, sort="updated_at,id")
    keys = [(r["updated_at"], int(r["id"])) for r in records]
    assert keys == sorted(keys)
    assert len({r["updated_at"] for r in records}) < len(records)  # ties exist and were ordered


def test_sort_descending_and_multiple_columns(emulator: EmulatorServer) -> None:
    records = crawl(emulator, "/individual_appointments", sort="starts_at:desc,id")
    starts = [r["starts_at"] for r in records]
    assert starts == sorted(starts, reverse=True)
    assert get(emulator, "/patients", sort="shoe_size").json() == {"message": "This column is not searchable."}
    assert get(emulator, "/patients", sort="shoe_size").status_code == 400
    assert get(emulator, "/patients", sort="id:sideways").status_code == 400


def test_keyset_paging_inside_one_updated_at(emulator: EmulatorServer, clinic: Clinic) -> None:
    """The tie query a crawl uses when more than a page share one updated_at: always page 1, id > last."""
    ties: dict[int, list[int]] = {}
    for patient in clinic.patients.records.values():
        if patient.archived_at is None and patient.deleted_at is None:
            ties.setdefault(whole_second(patient.updated_at), []).append(patient.id)
    moment, tied = max(ties.items(), key=lambda item: len(item[1]))
    assert len(tied) >= 101
    seen: list[str] = []
    last = 0
    while True:
        page = ids(
            get(
                emulator,
                "/patients",
                per_page=100,
                sort="id",
                q=[f"updated_at:>={iso(moment)}", f"updated_at:<{iso(moment + 1)}", f"id:>{last}"],
            ),
            "patients",
        )
        if not page:
            break
        seen += page
        last = int(page[-1])
    assert seen == [str(i) for i in sorted(tied)]


# --- by id and sub-resources ------------------------------------------------------------------------------------


def test_get_by_id(emulator: EmulatorServer, clinic: Clinic) -> None:
    patient = next(p for p in clinic.patients.records.values() if p.archived_at is None and p.deleted_at is None)
    body = get(emulator, f"/patients/{patient.id}").json()
    assert body["id"] == str(patient.id) and body["first_name"] == patient.first_name
    assert get(emulator, "/patients/1000000000000000000").status_code == 404
    assert get(emulator, "/patients/not-a-number").status_code == 404
    appointment = next(iter(clinic.individual_appointments.records.values()))
    assert get(emulator, f"/individual_appointments/{appointment.id}", q=ALL_APPOINTMENTS).status_code == 200


def test_archived_patient_by_id_is_404_unless_archived_records_are_included(
    emulator: EmulatorServer, clinic: Clinic
) -> None:
    archived = next(p for p in clinic.patients.records.values() if p.archived_at and p.deleted_at is None)
    assert get(emulator, f"/patients/{archived.id}").status_code == 404
    response = get(emulator, f"/patients/{archived.id}", q=["archived_at:*"])
    assert response.status_code == 200
    assert response.json()["archived_at"] == iso(archived.archived_at)
    deleted = next(p for p in clinic.patients.records.values() if p.deleted_at)
    assert get(emulator, f"/patients/{deleted.id}", q=["archived_at:*"]).status_code == 404


def test_group_appointment_attendees_sub_resource(emulator: EmulatorServer, clinic: Clinic) -> None:
    group = max(clinic.group_appointments.records.values(), key=lambda g: len(g.attendee_ids))
    found = crawl(emulator, f"/group_appointments/{group.id}/attendees", q=ALL_APPOINTMENTS)
    assert {r["id"] for r in found} == {str(i) for i in group.attendee_ids}
    assert get(emulator, "/group_appointments/1000000000000000000/attendees").status_code == 404
    assert get(emulator, "/patients/1000000000000000000/attendees").status_code == 404


# --- mutations are visible ---------------------------------------------------------------------------------------


def test_new_and_edited_patients_show_up_in_an_updated_at_crawl(emulator: EmulatorServer, clinic: Clinic) -> None:
    clinic.advance_clock(timedelta(hours=1))
    since = iso(int(clinic.now.timestamp()))
    new_id = clinic.add_patient(first_name="Łukasz", last_name="Nguyễn")
    existing = next(p for p in clinic.patients.records.values() if p.archived_at is None and p.deleted_at is None)
    clinic.edit_patient(existing.id, email="new.address@example.test", notes="Synthetic: edited")
    changed = crawl(emulator, "/patients", q=[f"updated_at:>={since}"], sort="updated_at,id")
    assert {r["id"] for r in changed} == {new_id, str(existing.id)}
    edited = next(r for r in changed if r["id"] == str(existing.id))
    assert edited["email"] == "new.address@example.test" and edited["notes"] == "Synthetic: edited"
    assert edited["updated_at"] == since


def test_archive_merge_delete_patient(emulator: EmulatorServer, clinic: Clinic) -> None:
    alive = [p for p in clinic.patients.records.values() if p.archived_at is None and p.deleted_at is None]
    first, second, third = (str(p.id) for p in alive[:3])
    clinic.archive_patient(first)
    clinic.merge_patient(second, third)
    clinic.delete_patient(third)
    default = {r["id"] for r in crawl(emulator, "/patients")}
    assert not {first, second, third} & default
    everyone = {r["id"]: r for r in crawl(emulator, "/patients", q=["archived_at:*"])}
    assert everyone[first]["archived_at"] == iso(int(clinic.now.timestamp()))
    merged = everyone[second]
    assert merged["merged_at"] and merged["merged_with_patient"]["links"]["self"].endswith(f"/patients/{third}")
    assert third not in everyone
    assert get(emulator, f"/patients/{third}", q=["archived_at:*"]).status_code == 404


def test_appointment_mutations(emulator: EmulatorServer, clinic: Clinic) -> None:
    patient = next(p for p in clinic.patients.records.values() if p.archived_at is None and p.deleted_at is None)
    booked = [clinic.book(patient.id, clinic.now + timedelta(days=day)) for day in range(1, 5)]
    visible = {r["id"] for r in crawl(emulator, "/individual_appointments", q=[f"patient_id:={patient.id}"])}
    assert set(booked) <= visible
    clinic.cancel_appointment(booked[0])
    clinic.archive_appointment(booked[1])
    clinic.delete_appointment(booked[2])
    clinic.mark_did_not_arrive(booked[3])
    visible = {r["id"] for r in crawl(emulator, "/individual_appointments", q=[f"patient_id:={patient.id}"])}
    assert not set(booked[:3]) & visible and booked[3] in visible
    cancelled = get(emulator, f"/individual_appointments/{booked[0]}", q=["cancelled_at:*"]).json()
    assert cancelled["cancelled_at"] and cancelled["cancellation_reason"] == 50
    assert get(emulator, f"/individual_appointments/{booked[3]}").json()["did_not_arrive"] is True


def test_attendee_mutations_change_the_class(emulator: EmulatorServer, clinic: Clinic) -> None:
    group = next(
        g for g in clinic.group_appointments.records.values() if g.archived_at is None and g.deleted_at is None
    )
    patient = next(p for p in clinic.patients.records.values() if p.archived_at is None and p.deleted_at is None)
    clinic.advance_clock(timedelta(minutes=5))
    attendee_id = clinic.add_attendee(group.id, patient.id)
    body = get(emulator, f"/group_appointments/{group.id}").json()
    assert str(patient.id) in body["patient_ids"]
    assert body["updated_at"] == iso(int(clinic.now.timestamp()))
    clinic.cancel_attendee(attendee_id)
    assert get(emulator, f"/attendees/{attendee_id}").status_code == 404
    assert get(emulator, f"/attendees/{attendee_id}", q=["cancelled_at:*"]).json()["cancelled_at"]
    assert str(patient.id) not in get(emulator, f"/group_appointments/{group.id}").json()["patient_ids"]


def test_updated_at_never_goes_backwards(clinic: Clinic) -> None:
    """Each change moves the stored value forward (by at least 1 µs, as consecutive transactions' now() do)."""
    patient = next(iter(clinic.patients.records.values()))
    clinic.touch("patients", patient.id)
    stamped = patient.updated_at
    assert whole_second(stamped) == int(clinic.now.timestamp())
    clinic.set_clock(clinic.now - timedelta(days=30))
    clinic.touch("patients", patient.id)
    assert micros_of(patient.updated_at) == micros_of(stamped) + 1
    clinic.advance_clock(timedelta(days=31))
    clinic.touch("patients", str(patient.id))
    assert whole_second(patient.updated_at) == whole_second(stamped) + 86400
    with pytest.raises(KeyError):
        clinic.touch("patients", "1")

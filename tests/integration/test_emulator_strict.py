"""The emulator's strict defaults (what the real Cliniko API does, per cliniko-api.md) and each Quirk that loosens
or breaks one of them, over real loopback HTTP with `requests`."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import requests
from emulator_fixtures import emulator_get as get

from cliniko_sync.emulator import Clinic, EmulatorServer, Quirks
from cliniko_sync.emulator.records import iso, whole_second

NOT_SEARCHABLE = {"message": "This column is not searchable."}
EVERYTHING = {
    "patients": ["archived_at:*"],
    "individual_appointments": ["archived_at:*", "cancelled_at:*", "deleted_at:*"],
    "group_appointments": ["archived_at:*", "deleted_at:*"],
    "attendees": ["archived_at:*", "cancelled_at:*", "deleted_at:*"],
    "practitioners": [],
    "appointment_types": ["archived_at:*"],
    "businesses": ["archived_at:*"],
}
MakeEmulator = Callable[..., EmulatorServer]


def records_of(server: EmulatorServer, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every record of a listing: the same parameters page after page while links.next is there."""
    resource = path.strip("/").split("/")[0]
    found: list[dict[str, Any]] = []
    page = 1
    while True:
        response = get(server, path, per_page=100, page=page, **params)
        assert response.status_code == 200, response.text
        body = response.json()
        found += body[resource]
        if "next" not in body["links"]:
            return found
        page += 1


def ids(records: list[dict[str, Any]]) -> list[str]:
    return [record["id"] for record in records]


def crowded_second(clinic: Clinic) -> int:
    """The shown second the most listed patients were last changed in (the bulk import)."""
    counts = Counter(whole_second(p.updated_at) for p in clinic.patients.iter_listed())
    second, size = counts.most_common(1)[0]
    assert size > 100
    return second


# --- documented filters only ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "condition"),
    [
        ("/practitioners", "archived_at:*"),
        ("/practitioners/inactive", "archived_at:*"),
        ("/practitioners", "deleted_at:!?"),
        ("/practitioners", "first_name:=Amara"),
        ("/patients", "deleted_at:*"),
        ("/patients", "phone:~0412"),
        ("/group_appointments", "cancelled_at:*"),
        ("/attendees", "did_not_arrive:=true"),
        ("/individual_appointments", "patient_ids:~1"),
        ("/appointment_types", "name:=Standard Consultation"),
        ("/businesses", "business_name:~physio"),
        ("/group_appointments/{group}/attendees", "did_not_arrive:=true"),
    ],
)
def test_an_undocumented_filter_is_400_not_searchable(
    emulator: EmulatorServer, clinic: Clinic, path: str, condition: str
) -> None:
    group = next(iter(clinic.group_appointments.records))
    response = get(emulator, path.format(group=group), q=[condition])
    assert response.status_code == 400
    assert response.json() == NOT_SEARCHABLE


@pytest.mark.parametrize(
    ("path", "sort"),
    [
        ("/practitioners", "archived_at"),
        ("/practitioners/inactive", "last_name"),
        ("/patients", "deleted_at:desc"),
        ("/patients", "updated_at,phone"),
        ("/group_appointments", "cancelled_at"),
        ("/group_appointments", "patient_ids"),  # an array is filterable with ~ but not sortable
        ("/appointment_types", "name"),
    ],
)
def test_an_undocumented_sort_column_is_400_not_searchable(emulator: EmulatorServer, path: str, sort: str) -> None:
    response = get(emulator, path, sort=sort)
    assert response.status_code == 400
    assert response.json() == NOT_SEARCHABLE


@pytest.mark.parametrize(
    ("path", "conditions", "sort"),
    [
        ("/practitioners", ["active:=true", "show_in_online_bookings:=true", "user_id:!?"], "updated_at,id"),
        ("/practitioners/inactive", ["created_at:>2000-01-01T00:00:00Z", "id:>1"], "created_at:desc"),
        ("/patients", ["accepted_privacy_policy:!=false", "old_reference_id:!?", "email:~example"], "last_name"),
        ("/individual_appointments", ["did_not_arrive:=false", "repeated_from_id:!?", "cancelled_at:*"], "starts_at"),
        ("/group_appointments", ["patient_ids:~1", "deleted_at:*"], "ends_at:desc"),
        ("/attendees", ["appointment_id:?", "patient_case_id:!?", "booking_id:>1"], "booking_id"),
        ("/appointment_types", ["category:~physio", "online_payments_mode:?", "show_in_online_bookings:=true"], "id"),
        ("/businesses", ["deleted_at:*", "appointment_type_ids:~1", "show_in_online_bookings:=true"], "id"),
    ],
)
def test_documented_fields_are_accepted(emulator: EmulatorServer, path: str, conditions: list[str], sort: str) -> None:
    assert get(emulator, path, q=conditions, sort=sort).status_code == 200


@pytest.mark.parametrize(
    "condition",
    [
        "updated_at:=2024-01-01T00:00:00Z",
        "updated_at:>2024-01-01T00:00:00.000Z",
        "active:=maybe",
        "active:>true",
        "id:>1.5",
    ],
)
def test_a_malformed_value_or_wrong_operator_is_400(emulator: EmulatorServer, condition: str) -> None:
    response = get(emulator, "/practitioners", q=[condition])
    assert response.status_code == 400
    assert set(response.json()) == {"message"}


def test_a_refusal_never_echoes_the_filter_value(emulator: EmulatorServer) -> None:
    response = get(emulator, "/patients", q=["email:>mia.hartley@example.test"])
    assert response.status_code == 400
    assert "mia" not in response.text and "example.test" not in response.text


def test_the_old_bare_q_parameter_is_ignored(emulator: EmulatorServer, clinic: Clinic) -> None:
    """Only q[] is documented today; a bare q= filters nothing (the stricter reading of an open question)."""
    response = requests.get(
        emulator.base_url + "/patients",
        params={"q": "id:=1"},
        auth=("emulator-test-key-au1", ""),
        headers={"User-Agent": "cliniko-sync tests (tests@cliniko-sync.example)"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.json()["total_entries"] == len([p for p in clinic.patients.iter_listed() if not p.archived_at])


# --- practitioners ----------------------------------------------------------------------------------------------


def test_practitioners_are_split_into_active_and_inactive(emulator: EmulatorServer, clinic: Clinic) -> None:
    active = records_of(emulator, "/practitioners")
    inactive = records_of(emulator, "/practitioners/inactive")
    everyone = clinic.practitioners.records.values()
    assert set(ids(active)) == {str(p.id) for p in everyone if p.active}
    assert set(ids(inactive)) == {str(p.id) for p in everyone if not p.active} and inactive
    for record in active + inactive:
        assert record["active"] is (record in active)
        assert "archived_at" not in record and "deleted_at" not in record
        assert re.fullmatch(r"\d{19}", record["id"])
    body = get(emulator, "/practitioners/inactive").json()
    assert set(body) == {"practitioners", "total_entries", "links"}
    assert body["links"]["self"] == f"{emulator.base_url}/practitioners/inactive?page=1&per_page=50"
    # GET by id answers for both, and an inactive practitioner's past appointments still name them.
    gone = inactive[0]["id"]
    assert get(emulator, f"/practitioners/{gone}").json()["active"] is False
    theirs = [
        a
        for a in records_of(emulator, "/individual_appointments", q=[f"practitioner_id:={gone}"])
        if a["practitioner"]["links"]["self"].endswith(f"/practitioners/{gone}")
    ]
    assert theirs


def test_a_filter_applies_inside_each_practitioner_list(emulator: EmulatorServer) -> None:
    assert get(emulator, "/practitioners", q=["active:=false"]).json()["practitioners"] == []
    assert get(emulator, "/practitioners/inactive", q=["active:=false"]).json()["total_entries"] >= 1


# --- hidden sub-second timestamps -------------------------------------------------------------------------------


def test_times_are_shown_in_whole_seconds(emulator: EmulatorServer, clinic: Clinic) -> None:
    for resource in EVERYTHING:
        for record in get(emulator, f"/{resource}", per_page=100, q=EVERYTHING[resource]).json()[resource]:
            for name in ("created_at", "updated_at"):
                assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", record[name]), record[name]
            stored = clinic.stored(resource, int(record["id"]))
            assert record["updated_at"] == iso(stored.updated_at)


def test_greater_than_a_shown_second_also_returns_records_shown_as_it(emulator: EmulatorServer, clinic: Clinic) -> None:
    second = crowded_second(clinic)
    shown = iso(second)
    after = records_of(emulator, "/patients", q=[f"updated_at:>{shown}", "archived_at:*"])
    assert any(record["updated_at"] == shown for record in after)
    stored = {str(p.id) for p in clinic.patients.iter_listed() if p.updated_at > second}
    assert set(ids(after)) == stored


def test_one_shown_second_is_exactly_ge_t_and_lt_t_plus_one(emulator: EmulatorServer, clinic: Clinic) -> None:
    second = crowded_second(clinic)
    inside = records_of(
        emulator, "/patients", q=[f"updated_at:>={iso(second)}", f"updated_at:<{iso(second + 1)}", "archived_at:*"]
    )
    assert {r["updated_at"] for r in inside} == {iso(second)}
    assert set(ids(inside)) == {
        str(p.id) for p in clinic.patients.iter_listed() if whole_second(p.updated_at) == second
    }


def test_inside_one_shown_second_the_stored_fraction_orders_not_the_id(
    emulator: EmulatorServer, clinic: Clinic
) -> None:
    second = crowded_second(clinic)
    page = get(
        emulator, "/patients", per_page=100, sort="updated_at,id", q=[f"updated_at:>={iso(second)}", "archived_at:*"]
    ).json()["patients"]
    same = [int(r["id"]) for r in page if r["updated_at"] == iso(second)]
    assert len(same) > 50
    assert same != sorted(same)
    stored = clinic.patients.records
    assert [stored[i].updated_at for i in same] == sorted(stored[i].updated_at for i in same)


def test_crowded_second_keyset_reads_it_in_id_order_across_pages(emulator: EmulatorServer, clinic: Clinic) -> None:
    second = crowded_second(clinic)
    window = [f"updated_at:>={iso(second)}", f"updated_at:<{iso(second + 1)}", "archived_at:*"]
    seen: list[int] = []
    while True:
        page = get(emulator, "/patients", per_page=40, sort="id", q=[*window, f"id:>{seen[-1] if seen else 0}"])
        batch = [int(i) for i in ids(page.json()["patients"])]
        if not batch:
            break
        seen += batch
    expected = sorted(p.id for p in clinic.patients.iter_listed() if whole_second(p.updated_at) == second)
    assert seen == expected


def test_not_equal_filters_on_id_leave_those_records_out(emulator: EmulatorServer, clinic: Clinic) -> None:
    """Several `id:!=` conditions are ANDed; the page and total_entries both leave the excluded records out."""
    second = crowded_second(clinic)
    since = [f"updated_at:>={iso(second)}", "archived_at:*"]
    first = get(emulator, "/patients", per_page=100, sort="updated_at,id", q=since).json()
    left_out = ids(first["patients"])[:5] + ["9999999999999999999"]  # one id that is not there at all
    again = get(
        emulator, "/patients", per_page=100, sort="updated_at,id", q=[*since, *(f"id:!={i}" for i in left_out)]
    ).json()
    assert not set(ids(again["patients"])) & set(left_out)
    assert ids(again["patients"])[:95] == ids(first["patients"])[5:]
    assert again["total_entries"] == first["total_entries"] - 5


def test_a_change_lands_after_every_record_of_its_shown_second(emulator: EmulatorServer, clinic: Clinic) -> None:
    """Mutations stamp the clock's second with a fraction of their own, and never move a record backwards."""
    patients = [p for p in clinic.patients.iter_listed() if p.archived_at is None]
    before = patients[0].updated_at
    clinic.edit_patient(patients[0].id, email="changed@example.test")
    clinic.edit_patient(patients[1].id, email="changed2@example.test")
    now = iso(int(clinic.now.timestamp()))
    changed = records_of(emulator, "/patients", q=[f"updated_at:>={now}"], sort="updated_at,id")
    assert set(ids(changed)) >= {str(patients[0].id), str(patients[1].id)}
    assert all(record["updated_at"] == now for record in changed)
    assert patients[0].updated_at > before


# --- links, attendees, ids --------------------------------------------------------------------------------------


def test_next_link_has_page_and_per_page_only_even_with_filters_and_sort(emulator: EmulatorServer) -> None:
    body = get(emulator, "/patients", per_page=20, q=["archived_at:*", "id:>1"], sort="updated_at,id").json()
    assert body["links"]["next"] == f"{emulator.base_url}/patients?page=2&per_page=20"
    assert "q%5B%5D" not in body["links"]["self"] and "sort" not in body["links"]["self"]


def test_attendees_carry_arrived_not_did_not_arrive(emulator: EmulatorServer) -> None:
    attendees = records_of(emulator, "/attendees", q=EVERYTHING["attendees"])
    assert attendees
    assert all("arrived" in a and "did_not_arrive" not in a for a in attendees)
    assert {a["arrived"] for a in attendees} == {True, False, None}


def test_ids_and_patient_ids_are_strings(emulator: EmulatorServer) -> None:
    groups = records_of(emulator, "/group_appointments", q=EVERYTHING["group_appointments"])
    assert all(isinstance(g["id"], str) for g in groups)
    assert all(isinstance(i, str) and re.fullmatch(r"\d{19}", i) for g in groups for i in g["patient_ids"])
    assert isinstance(get(emulator, "/patients").json()["total_entries"], int)


# --- quirks -----------------------------------------------------------------------------------------------------


def test_quirk_accept_undocumented_filters(make_emulator: MakeEmulator, clinic: Clinic) -> None:
    server = make_emulator(quirks=Quirks(accept_undocumented_filters=True))
    everyone = get(server, "/practitioners", q=["archived_at:*"], sort="last_name")
    assert everyone.status_code == 200
    assert len(everyone.json()["practitioners"]) == sum(p.active for p in clinic.practitioners.records.values())
    kind = get(server, "/appointment_types", q=["name:=Standard Consultation"]).json()["appointment_types"]
    assert [t["name"] for t in kind] == ["Standard Consultation"]
    assert get(server, "/practitioners", q=["archived_at:?"]).json()["practitioners"] == []
    assert get(server, "/patients", q=["no_such_field:=1"]).json() == NOT_SEARCHABLE


def test_quirk_refused_status(make_emulator: MakeEmulator) -> None:
    server = make_emulator(quirks=Quirks(refused_status=422))
    for response in (get(server, "/practitioners", q=["archived_at:*"]), get(server, "/patients", sort="phone")):
        assert response.status_code == 422
        assert response.json() == NOT_SEARCHABLE
    assert get(server, "/patients", q=["id:=abc"]).status_code == 400  # a malformed value stays 400


def test_quirk_next_links_keep_query(make_emulator: MakeEmulator) -> None:
    server = make_emulator(quirks=Quirks(next_links_keep_query=True))
    body = get(server, "/patients", per_page=10, q=["archived_at:*"], sort="updated_at,id").json()
    assert body["links"]["next"] == (
        f"{server.base_url}/patients?page=2&per_page=10&q%5B%5D=archived_at%3A%2A&sort=updated_at%2Cid"
    )


def test_quirk_whole_second_storage(make_emulator: MakeEmulator, clinic: Clinic) -> None:
    server = make_emulator(quirks=Quirks(whole_second_storage=True))
    second = crowded_second(clinic)
    assert all(p.updated_at == int(p.updated_at) for p in clinic.patients.records.values())
    after = records_of(server, "/patients", q=[f"updated_at:>{iso(second)}", "archived_at:*"])
    assert after and all(record["updated_at"] > iso(second) for record in after)
    page = get(server, "/patients", per_page=100, sort="updated_at,id", q=[f"updated_at:>={iso(second)}"]).json()
    same = [int(r["id"]) for r in page["patients"] if r["updated_at"] == iso(second)]
    assert len(same) > 50 and same == sorted(same)
    patient = next(clinic.patients.iter_listed())
    clinic.touch("patients", patient.id)
    assert patient.updated_at == int(clinic.now.timestamp())


def test_quirk_ignore_sort(make_emulator: MakeEmulator, clinic: Clinic) -> None:
    server = make_emulator(quirks=Quirks(ignore_sort=True))
    ordered = records_of(server, "/patients", sort="id:desc")
    stored = clinic.patients.records
    keys = [(stored[int(r["id"])].created_at, int(r["id"])) for r in ordered]
    assert keys == sorted(keys)
    assert get(server, "/patients", sort="not_a_column").status_code == 200


def test_quirk_ignore_filters(make_emulator: MakeEmulator, clinic: Clinic) -> None:
    server = make_emulator(quirks=Quirks(ignore_filters=("archived_at", "id")))
    listed = {str(p.id) for p in clinic.patients.iter_listed() if p.archived_at is None}
    # the ignored archived_at:* does not count as naming the field: archived patients stay out
    assert set(ids(records_of(server, "/patients", q=["archived_at:*", "id:=1"]))) == listed
    assert get(server, "/patients", q=["updated_at:>2999-01-01T00:00:00Z"]).json()["patients"] == []


def test_quirk_refuse_filters(make_emulator: MakeEmulator) -> None:
    server = make_emulator(quirks=Quirks(refuse_filters=(("patients", "archived_at"), ("practitioners/inactive", "*"))))
    assert get(server, "/patients", q=["archived_at:*"]).json() == NOT_SEARCHABLE
    assert get(server, "/patients", q=["updated_at:>2020-01-01T00:00:00Z"]).status_code == 200
    assert get(server, "/practitioners/inactive", q=["updated_at:>2020-01-01T00:00:00Z"]).status_code == 400
    assert get(server, "/practitioners/inactive").status_code == 200
    assert get(server, "/practitioners", q=["updated_at:>2020-01-01T00:00:00Z"]).status_code == 200


def test_quirk_ids_as_numbers(make_emulator: MakeEmulator, clinic: Clinic) -> None:
    server = make_emulator(quirks=Quirks(ids_as_numbers=True))
    groups = get(server, "/group_appointments", per_page=100).json()["group_appointments"]
    assert all(isinstance(g["id"], int) for g in groups)
    assert any(g["patient_ids"] for g in groups)
    assert all(isinstance(i, int) for g in groups for i in g["patient_ids"])
    patient = next(clinic.patients.iter_listed())
    assert get(server, f"/patients/{patient.id}", q=["archived_at:*"]).json()["id"] == patient.id


def test_quirk_no_inactive_practitioners_endpoint(make_emulator: MakeEmulator) -> None:
    server = make_emulator(quirks=Quirks(no_inactive_practitioners_endpoint=True))
    assert get(server, "/practitioners/inactive").status_code == 404
    assert get(server, "/practitioners").status_code == 200


def test_quirk_attendee_did_not_arrive(make_emulator: MakeEmulator) -> None:
    server = make_emulator(quirks=Quirks(attendee_did_not_arrive=True))
    attendees = records_of(server, "/attendees", q=EVERYTHING["attendees"])
    assert all(a["did_not_arrive"] is (a["arrived"] is False) for a in attendees)
    assert any(a["did_not_arrive"] for a in attendees)


def test_quirk_fractional_seconds_rendered(make_emulator: MakeEmulator, clinic: Clinic) -> None:
    server = make_emulator(quirks=Quirks(fractional_seconds_rendered=True))
    for record in get(server, "/patients", per_page=100).json()["patients"]:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z", record["updated_at"])
        stored = clinic.patients.records[int(record["id"])].updated_at
        assert record["updated_at"].startswith(iso(stored)[:-1] + ".")  # type: ignore[index]

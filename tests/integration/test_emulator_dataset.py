"""The emulator's synthetic clinic: size, realism, determinism, the active-patient oracle and thread-safe edits."""

from __future__ import annotations

import re
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import requests
from emulator_fixtures import EMULATOR_API_KEY

from cliniko_sync.emulator import Clinic, EmulatorServer, active_patient_ids, generate_clinic
from cliniko_sync.emulator.records import micros_of, whole_second

NOW = datetime(2026, 3, 2, 4, 5, 6, tzinfo=UTC)


@pytest.fixture(scope="module")
def default_clinic() -> Clinic:
    """The default size, read-only in these tests."""
    return generate_clinic(now=NOW)


def all_ids(clinic: Clinic) -> list[int]:
    return [record_id for table in clinic.tables.values() for record_id in table.records]


def test_default_size_and_about_45_to_50_active_patients(default_clinic: Clinic) -> None:
    assert len(default_clinic.patients.records) == 630
    assert len(default_clinic.individual_appointments.records) + len(default_clinic.attendees.records) == 6300
    assert default_clinic.now == NOW
    assert 45 <= len(active_patient_ids(default_clinic, NOW)) <= 50


@pytest.mark.parametrize("seed", [2, 3, 11])
def test_other_seeds_also_give_45_to_50_active(seed: int) -> None:
    clinic = generate_clinic(seed=seed, now=NOW)
    assert 45 <= len(active_patient_ids(clinic, NOW)) <= 50


def test_appointments_sets_the_total_of_individual_and_group_attendances() -> None:
    clinic = generate_clinic(patients=1000, appointments=20000, seed=5, now=NOW)
    assert len(clinic.patients.records) == 1000
    assert len(clinic.individual_appointments.records) + len(clinic.attendees.records) == 20000
    assert 60 <= len(active_patient_ids(clinic, NOW)) <= 90


@pytest.mark.parametrize(("patients", "appointments"), [(0, 0), (1, 0), (3, 2), (10, None)])
def test_tiny_clinics_are_generated(patients: int, appointments: int | None) -> None:
    clinic = generate_clinic(patients=patients, appointments=appointments, now=NOW)
    assert len(clinic.patients.records) == patients
    expected = patients * 10 if appointments is None else appointments
    assert len(clinic.individual_appointments.records) + len(clinic.attendees.records) == expected


def test_same_seed_same_clinic_other_seed_other_ids(default_clinic: Clinic) -> None:
    again = generate_clinic(now=NOW)
    for name, table in default_clinic.tables.items():
        assert [repr(r) for r in table.records.values()] == [repr(r) for r in again.tables[name].records.values()]
    assert not set(all_ids(default_clinic)) & set(all_ids(generate_clinic(seed=2, now=NOW)))


def test_ids_are_unique_19_digit_numbers(default_clinic: Clinic) -> None:
    ids = all_ids(default_clinic)
    assert len(ids) == len(set(ids))
    assert all(10**18 <= record_id < 9 * 10**18 for record_id in ids)


def test_a_bulk_import_left_hundreds_of_records_on_one_shown_updated_at(default_clinic: Clinic) -> None:
    """Hundreds share one shown second, each with its own hidden fraction, so they have an order inside it."""
    listed = [p for p in default_clinic.patients.records.values() if p.archived_at is None and p.deleted_at is None]
    second, tied = Counter(whole_second(p.updated_at) for p in listed).most_common(1)[0]
    assert tied >= 250
    stored = [p.updated_at for p in listed if whole_second(p.updated_at) == second]
    assert len(set(stored)) >= 0.95 * tied
    appointments = default_clinic.individual_appointments.records.values()
    assert Counter(whole_second(a.updated_at) for a in appointments).most_common(1)[0][1] > 100


def test_small_crowds_share_a_shown_second(default_clinic: Clinic) -> None:
    """Besides the bulk import, some seconds hold 2 to 5 changes (with distinct hidden fractions)."""
    for table in (default_clinic.patients, default_clinic.individual_appointments):
        crowds = Counter(whole_second(r.updated_at) for r in table.records.values())
        small = [second for second, size in crowds.items() if 2 <= size <= 5]
        assert small, table
        for second in small:
            stored = [r.updated_at for r in table.records.values() if whole_second(r.updated_at) == second]
            assert len(set(stored)) == len(stored)


def test_created_and_updated_at_carry_hidden_fractions(default_clinic: Clinic) -> None:
    for table in default_clinic.tables.values():
        records = list(table.records.values())
        assert all(r.created_at <= r.updated_at for r in records)
        assert sum(micros_of(r.updated_at) % 1_000_000 != 0 for r in records) >= 0.99 * len(records)


def test_history_spans_years_and_future_bookings_exist(default_clinic: Clinic) -> None:
    starts = [a.starts_at for a in default_clinic.individual_appointments.records.values()]
    now = int(NOW.timestamp())
    assert min(starts) < now - 4 * 365 * 86400
    assert any(start > now for start in starts)
    assert all(
        whole_second(a.created_at) <= now and whole_second(a.updated_at) <= now
        for a in default_clinic.individual_appointments.records.values()
    )


def test_names_are_international(default_clinic: Clinic) -> None:
    names = [f"{p.first_name} {p.last_name}" for p in default_clinic.patients.records.values()]
    assert any(not name.isascii() for name in names)
    assert any("'" in name for name in names)


def test_phones_come_in_every_shape(default_clinic: Clinic) -> None:
    patients = list(default_clinic.patients.records.values())
    numbers = [number for p in patients for _, number in p.patient_phone_numbers or []]
    shapes = {
        "local mobile": r"04\d{2} \d{3} \d{3}|04\d{8}",
        "international mobile": r"\+61 4\d{2} \d{3} \d{3}",
        "landline": r"\(0\d\) \d{4} \d{4}|0\d \d{4} \d{4}",
        "foreign": r"\+(44|1|64|49) .*",
    }
    for shape, pattern in shapes.items():
        assert any(re.fullmatch(pattern, number) for number in numbers), shape
    assert any(len(re.sub(r"\D", "", number)) < 6 for number in numbers)  # junk such as "call mum"
    assert any(p.patient_phone_numbers is None for p in patients)
    assert any(p.patient_phone_numbers == [] for p in patients)
    kinds = {kind for p in patients for kind, _ in p.patient_phone_numbers or []}
    assert kinds == {"Mobile", "Home", "Work", "Other", "Fax"}


def test_families_share_phones_and_emails_and_emails_come_in_mixed_case(default_clinic: Clinic) -> None:
    patients = list(default_clinic.patients.records.values())
    mobiles = Counter(n for p in patients for kind, n in p.patient_phone_numbers or [] if kind == "Mobile")
    emails = Counter(p.email for p in patients if p.email)
    assert max(mobiles.values()) >= 2
    assert max(emails.values()) >= 2
    assert any(email != email.lower() for email in emails)
    assert all(
        email.lower().endswith((".example.com", "@example.com", "example.net", "example.org", "example.test"))
        for email in emails
    )


def test_retired_patients_and_every_appointment_status_are_present(default_clinic: Clinic) -> None:
    patients = default_clinic.patients.records
    merged = [p for p in patients.values() if p.merged_at]
    assert merged and all(p.merged_with_patient_id in patients and p.archived_at for p in merged)
    assert any(p.archived_at and not p.merged_at for p in patients.values())
    assert any(p.deleted_at for p in patients.values())
    appointments = list(default_clinic.individual_appointments.records.values())
    for status in ("cancelled_at", "archived_at", "deleted_at"):
        assert any(getattr(a, status) for a in appointments), status
    assert any(a.did_not_arrive for a in appointments)
    practitioners = default_clinic.practitioners.records.values()
    assert {a.practitioner_id for a in appointments} >= {p.id for p in practitioners}
    inactive = {p.id for p in practitioners if not p.active}
    # someone who left the clinic: made inactive (not archived), with past appointments that still name them
    assert inactive and all(not hasattr(p, "archived_at") for p in practitioners)
    assert any(a.practitioner_id in inactive and a.starts_at < int(NOW.timestamp()) for a in appointments)
    assert not any(a.practitioner_id in inactive and a.starts_at > int(NOW.timestamp()) for a in appointments)
    attendees = list(default_clinic.attendees.records.values())
    groups = default_clinic.group_appointments.records
    assert all(a.id in groups[a.booking_id].attendee_ids for a in attendees)
    assert any(a.cancelled_at for a in attendees) and any(a.archived_at for a in attendees)
    assert any(g.archived_at for g in groups.values())


def test_active_patients_never_include_retired_patients(default_clinic: Clinic) -> None:
    """Some archived, merged or deleted patients have recent qualifying bookings; they still are not active."""
    now = int(NOW.timestamp())
    retired = {p.id for p in default_clinic.patients.records.values() if p.archived_at or p.merged_at or p.deleted_at}
    recent = {
        a.patient_id
        for a in default_clinic.individual_appointments.records.values()
        if now - 45 * 86400 <= a.starts_at <= now and not (a.cancelled_at or a.archived_at or a.deleted_at)
    }
    assert retired & recent
    assert not {int(i) for i in active_patient_ids(default_clinic, NOW)} & retired


def test_window_edges_upcoming_and_longer_windows(default_clinic: Clinic) -> None:
    active = active_patient_ids(default_clinic, NOW)
    assert active_patient_ids(default_clinic, NOW + timedelta(seconds=1)) < active  # one booking sat on the edge
    assert active_patient_ids(default_clinic, NOW, include_upcoming=True) > active
    assert active_patient_ids(default_clinic, NOW, window_days=60) > active
    assert active_patient_ids(default_clinic, NOW, window_days=45) == active


def test_mutations_change_the_active_set(clinic: Clinic) -> None:
    now = clinic.now
    active = active_patient_ids(clinic, now)
    inactive = next(
        str(p.id)
        for p in clinic.patients.records.values()
        if str(p.id) not in active and p.archived_at is None and p.deleted_at is None
    )
    booking = clinic.book(inactive, now - timedelta(days=3))
    assert active_patient_ids(clinic, now) == active | {inactive}
    clinic.cancel_appointment(booking)
    assert active_patient_ids(clinic, now) == active
    someone = sorted(active)[0]
    clinic.archive_patient(someone)
    assert active_patient_ids(clinic, now) == active - {someone}


def test_new_patient_gets_the_clock_and_given_fields(clinic: Clinic) -> None:
    clinic.set_clock(NOW)
    patient_id = clinic.add_patient(first_name="Siobhán", last_name="D'Angelo", email=None, custom_fields={"x": 1})
    patient = clinic.patients.records[int(patient_id)]
    assert (patient.first_name, patient.last_name, patient.email) == ("Siobhán", "D'Angelo", None)
    assert patient.created_at == patient.updated_at
    assert whole_second(patient.created_at) == int(NOW.timestamp())
    assert patient.extra == {"custom_fields": {"x": 1}}
    with pytest.raises(ValueError):
        clinic.edit_patient(patient_id, updated_at=0)


def test_reads_during_concurrent_edits_stay_consistent(clinic: Clinic, emulator: EmulatorServer) -> None:
    patient_ids = [p.id for p in clinic.patients.records.values() if p.archived_at is None and p.deleted_at is None]
    stop = threading.Event()

    def edit() -> None:
        day = 0
        while not stop.is_set():
            day += 1
            appointment = clinic.book(patient_ids[day % len(patient_ids)], clinic.now + timedelta(days=day % 30))
            clinic.cancel_appointment(appointment)
            clinic.touch("patients", patient_ids[(day * 7) % len(patient_ids)])

    writer = threading.Thread(target=edit)
    writer.start()
    try:
        session = requests.Session()
        session.auth = (EMULATOR_API_KEY, "")
        session.headers["User-Agent"] = "cliniko-sync tests (tests@cliniko-sync.example)"
        for _ in range(30):
            response = session.get(
                f"{emulator.base_url}/individual_appointments",
                params={"per_page": 100, "q[]": ["cancelled_at:*"], "sort": "updated_at,id"},
                timeout=10,
            )
            assert response.status_code == 200
            body = response.json()
            assert len(body["individual_appointments"]) == 100 and body["total_entries"] >= 100
    finally:
        stop.set()
        writer.join()


@pytest.mark.slow
def test_the_largest_benchmark_clinic_is_generated() -> None:
    clinic = generate_clinic(patients=100_000, appointments=1_000_000, seed=1, now=NOW)
    assert len(clinic.individual_appointments.records) + len(clinic.attendees.records) == 1_000_000
    assert 7000 <= len(active_patient_ids(clinic, NOW)) <= 8000

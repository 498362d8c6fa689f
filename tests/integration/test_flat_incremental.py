"""What a no-change incremental run still does, against the emulator and a real PostgreSQL (issue 13 item 3): an as_of
move recomputes exactly the patients with an appointment that crossed a window edge, and a run that wrote no patient
reports the phone share it counted last, while one that changed a patient counts again.

Expected values come from the emulator's own records (tests/sync_helpers), not from the sync's SQL.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from emulator_fixtures import EMULATOR_API_KEY
from sync_helpers import active_rows, expected_active, expected_phone, setup_org

from cliniko_sync.sync.pipeline import sync_organization

pytestmark = pytest.mark.usefixtures("sync_environment")


def crossing_patients(clinic: Any, before: datetime, after: datetime, window_days: int = 45) -> set[str]:
    """Patients with an appointment (whatever its status) starting between the two as_of, or between the two window
    starts: the only ones whose results can depend on the move."""
    low, high = sorted((before.timestamp(), after.timestamp()))
    window = window_days * 86400

    def crosses(starts_at: float) -> bool:
        return low <= starts_at <= high or low - window <= starts_at <= high - window

    found = {str(a.patient_id) for a in clinic.individual_appointments.records.values() if crosses(a.starts_at)}
    groups = clinic.group_appointments.records
    found |= {str(t.patient_id) for t in clinic.attendees.records.values() if crosses(groups[t.booking_id].starts_at)}
    return found


def share_by_hand(clinic: Any) -> float:
    current = [p for p in clinic.patients.records.values() if not (p.archived_at or p.merged_at or p.deleted_at)]
    with_phone = [p for p in current if expected_phone(p.patient_phone_numbers)]
    return round(len(with_phone) / len(current), 4)


def last_log(conn: psycopg.Connection, org: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT status, stats FROM sync_log WHERE organization_id = %s ORDER BY id DESC LIMIT 1", (org,)
    ).fetchone()
    assert row is not None and row["status"] == "success"
    return row["stats"]


@pytest.mark.parametrize("move", [timedelta(minutes=15), timedelta(days=3), -timedelta(days=2)])
def test_moving_as_of_recomputes_exactly_the_crossing_patients(
    conn: psycopg.Connection, database_url: str, emulator: Any, clinic: Any, move: timedelta
) -> None:
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    assert sync_organization(database_url, org, as_of=clinic.now).status == "success"
    later = clinic.now + move
    result = sync_organization(database_url, org, as_of=later)
    assert result.status == "success", result.error
    crossing = crossing_patients(clinic, clinic.now, later)
    assert result.stats["recomputed"] == {"everything": False, "written": 0, "crossing": len(crossing)}
    if move >= timedelta(days=1):
        assert crossing  # the clinic has appointments every day: a move of days crosses some
    # And the list is what DESIGN §2 gives at the new as_of, every row carrying its bounds.
    expected = expected_active(clinic, later)
    rows = active_rows(conn, org)
    assert set(rows) == set(expected)
    for patient_id, want in expected.items():
        row = rows[patient_id]
        assert row["recent_appointment_count"] == want["recent_appointment_count"], patient_id
        assert [(a["id"], a["kind"]) for a in row["recent_appointments"]] == want["recent_ids"]
        assert (row["search_date_from"], row["search_date_to"]) == (later - timedelta(days=45), later)


def test_a_run_that_wrote_no_patient_reuses_the_phone_share(
    conn: psycopg.Connection, database_url: str, emulator: Any, clinic: Any
) -> None:
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    assert sync_organization(database_url, org, as_of=clinic.now).status == "success"
    first = last_log(conn, org)["valid_phone_share"]
    assert first == share_by_hand(clinic)

    assert sync_organization(database_url, org, as_of=clinic.now).status == "success"
    unchanged = last_log(conn, org)
    assert unchanged["recomputed"]["written"] == 0
    assert unchanged["valid_phone_share"] == first

    # A patient gains a valid phone (or loses it): the next run writes that patient and counts again.
    patient = next(p for p in clinic.patients.records.values() if not (p.archived_at or p.merged_at or p.deleted_at))
    had_phone = expected_phone(patient.patient_phone_numbers) is not None
    clinic.advance_clock(timedelta(minutes=1))
    clinic.edit_patient(patient.id, patient_phone_numbers=None if had_phone else [("Mobile", "0412 345 678")])
    assert sync_organization(database_url, org, as_of=clinic.now).status == "success"
    changed = last_log(conn, org)
    assert changed["recomputed"]["written"] >= 1
    assert changed["valid_phone_share"] == share_by_hand(clinic) != first

    # The new count is the one kept: the next run, which writes nothing, reports it.
    assert sync_organization(database_url, org, as_of=clinic.now).status == "success"
    again = last_log(conn, org)
    assert again["recomputed"]["written"] == 0 and again["valid_phone_share"] == share_by_hand(clinic)


def test_statistics_are_refreshed_after_a_first_sync_and_left_alone_when_nothing_changed(
    conn: psycopg.Connection, database_url: str, emulator: Any, clinic: Any
) -> None:
    """The recompute reads each patient's rows by index: it needs planner statistics that know the tables are not
    empty, which a first sync provides itself instead of waiting for autovacuum."""
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    first = sync_organization(database_url, org, as_of=clinic.now)
    assert first.status == "success", first.error
    assert {"cliniko_patients", "cliniko_individual_appointments"} <= set(first.stats["analyzed"])
    known = conn.execute(
        "SELECT relname, reltuples FROM pg_class WHERE relname = ANY (%s)",
        (["cliniko_patients", "cliniko_individual_appointments"],),
    ).fetchall()
    assert all(row["reltuples"] > 0 for row in known) and len(known) == 2
    again = sync_organization(database_url, org, as_of=clinic.now)
    assert again.status == "success" and again.stats["analyzed"] == []

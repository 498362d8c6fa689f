"""Incremental recompute (issue 13): after any changes and as_of moves, recomputing only the patients who can have
changed leaves active_patients and contacts exactly as recomputing everyone does.

Records are rendered as Cliniko shows them by the emulator's own renderer and written through the mirror's real
upsert (which records the dirty patients); the recompute runs on the real PostgreSQL.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sync_helpers import expected_active

from cliniko_sync import db
from cliniko_sync.cliniko.records import listing_row
from cliniko_sync.emulator import generate_clinic
from cliniko_sync.emulator.render import render
from cliniko_sync.orgs import add_organization
from cliniko_sync.sync.active import recompute_active_patients, take_changed_patients
from cliniko_sync.sync.contacts import match_contacts
from cliniko_sync.sync.mirror import WriteCounts, remove_unseen, write_rows
from cliniko_sync.sync.streams import STREAMS, STREAMS_BY_NAME

BASE = "http://127.0.0.1:1/v1"
BOOKKEEPING = ("id", "created_at", "updated_at")  # differ between any two runs, full or not
_organizations = itertools.count(1)


class Mirror:
    """One organization's mirror fed from an emulator clinic: what changed in the clinic is written page-wise."""

    def __init__(self, conn: db.DictConnection, clinic: Any, org: str) -> None:
        self.conn, self.clinic, self.org = conn, clinic, org
        self.written: dict[tuple[str, int], float] = {}
        self.passes = itertools.count(1)
        self.counts: list[WriteCounts | int] = []  # what each write reported (an int: rows a full pass removed)

    def write_changes(self) -> None:
        for stream in STREAMS:
            table = self.clinic.tables[stream.name]
            changed = [r for r in table.iter_listed() if self.written.get((stream.name, r.id)) != r.updated_at]
            rows = [listing_row(render(stream.name, r, BASE, self.clinic)) for r in changed]
            for start in range(0, len(rows), 100):
                with self.conn.transaction():
                    self.counts.append(write_rows(self.conn, stream, self.org, rows[start : start + 100], None))
            self.written.update({(stream.name, r.id): r.updated_at for r in changed})

    def full_pass_of_patients(self) -> None:
        """A complete full pass: deleted patients are no longer listed, so the pass removes them."""
        stream, pass_id = STREAMS_BY_NAME["patients"], next(self.passes)
        rows = [listing_row(render("patients", r, BASE, self.clinic)) for r in self.clinic.patients.iter_listed()]
        with self.conn.transaction():
            self.counts.append(write_rows(self.conn, stream, self.org, rows, pass_id))
            self.counts.append(remove_unseen(self.conn, stream, self.org, pass_id))

    def recompute(self, as_of: datetime, include_upcoming: bool, *, everything: bool) -> None:
        with self.conn.transaction():
            scope = take_changed_patients(
                self.conn, self.org, as_of=as_of, window_days=45, include_upcoming=include_upcoming,
                everything=everything,
            )  # fmt: skip
            match_contacts(self.conn, self.org, scope)
            recompute_active_patients(
                self.conn, self.org, as_of=as_of, window_days=45, include_upcoming=include_upcoming, scope=scope
            )

    def results(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        active = self.conn.execute(
            "SELECT * FROM active_patients WHERE organization_id = %s ORDER BY cliniko_patient_id", (self.org,)
        ).fetchall()
        contacts = self.conn.execute(
            "SELECT cliniko_patient_id, name, email, phone, created_by FROM contacts WHERE organization_id = %s "
            "ORDER BY cliniko_patient_id",
            (self.org,),
        ).fetchall()
        return [{k: v for k, v in row.items() if k not in BOOKKEEPING} for row in active], contacts

    def full_results(self, as_of: datetime, include_upcoming: bool) -> tuple[list[dict[str, Any]], ...]:
        """What recomputing everyone would leave (rolled back afterwards)."""
        with self.conn.transaction(force_rollback=True):
            self.recompute(as_of, include_upcoming, everything=True)
            return self.results()


def _pick(records: dict[int, Any], index: int) -> Any:
    ids = sorted(records)
    return records[ids[index % len(ids)]]


def apply_change(clinic: Any, change: tuple[str, int, int]) -> bool:
    """Apply one change to the clinic; True when it deleted a patient (only a full pass sees that)."""
    kind, first, second = change
    patients, appointments = clinic.patients.records, clinic.individual_appointments.records
    groups, attendees = clinic.group_appointments.records, clinic.attendees.records
    patient = _pick(patients, first)
    if kind == "book":
        clinic.book(patient.id, clinic.now + timedelta(days=second - 60, hours=first % 24))
    elif kind == "cancel":
        clinic.cancel_appointment(_pick(appointments, first).id)
    elif kind == "move_appointment":  # booked for another patient: the patient it leaves changes too
        moved = _pick(appointments, first)
        moved.patient_id = _pick(patients, second).id
        clinic.touch("individual_appointments", moved.id)
    elif kind == "archive_appointment":
        clinic.archive_appointment(_pick(appointments, first).id)
    elif kind == "delete_appointment":
        clinic.delete_appointment(_pick(appointments, first).id)
    elif kind == "archive_patient":
        clinic.archive_patient(patient.id)
    elif kind == "merge":
        other = _pick(patients, second)
        if other.id != patient.id:
            clinic.merge_patient(patient.id, other.id)
    elif kind == "edit_patient":
        clinic.edit_patient(patient.id, first_name=f"Edited{second}", email=f"edited{second}@example.com")
    elif kind == "attend":
        clinic.add_attendee(_pick(groups, second).id, patient.id)
    elif kind == "cancel_attendee":
        clinic.cancel_attendee(_pick(attendees, first).id)
    elif kind == "delete_patient" and patient.deleted_at is None:
        clinic.delete_patient(patient.id)
        return True
    return False


CHANGE = st.tuples(
    st.sampled_from(
        ["book", "cancel", "move_appointment", "archive_appointment", "delete_appointment", "archive_patient",
         "merge", "edit_patient", "attend", "cancel_attendee", "delete_patient"]
    ),
    st.integers(0, 10_000),
    st.integers(0, 120),
)  # fmt: skip
# One round: some changes, then as_of moves (days and hours, forward or backward for audits), then a sync.
ROUND = st.tuples(st.lists(CHANGE, max_size=6), st.integers(-50, 50), st.integers(0, 23))


@pytest.mark.parametrize("include_upcoming", [False, True])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(ROUND, min_size=1, max_size=4), seed=st.integers(1, 50))
def test_incremental_recompute_equals_full(
    database_url: str, include_upcoming: bool, rounds: list[tuple[list[tuple[str, int, int]], int, int]], seed: int
) -> None:
    clinic = generate_clinic(patients=25, appointments=220, seed=seed)
    org = f"incremental-{next(_organizations)}"
    with db.connect(database_url, autocommit=True) as conn:
        add_organization(conn, org, name="Incremental", include_upcoming=include_upcoming)
        mirror = Mirror(conn, clinic, org)
        mirror.write_changes()
        as_of = clinic.now
        mirror.recompute(as_of, include_upcoming, everything=False)
        assert mirror.results() == mirror.full_results(as_of, include_upcoming)
        for changes, days, hours in rounds:
            deleted = [apply_change(clinic, change) for change in changes]
            clinic.advance_clock(timedelta(minutes=5))
            mirror.write_changes()
            if any(deleted):
                mirror.full_pass_of_patients()
            as_of += timedelta(days=days, hours=hours)
            mirror.recompute(as_of, include_upcoming, everything=False)
            assert mirror.results() == mirror.full_results(as_of, include_upcoming)


def by_hand(clinic: Any, as_of: datetime, include_upcoming: bool) -> dict[str, dict[str, Any]]:
    """DESIGN §2 applied to the emulator's records, in the shape of the active_patients columns it fixes."""
    return {
        patient_id: {
            "recent_appointment_count": row["recent_appointment_count"],
            "upcoming_appointment_count": row["upcoming_appointment_count"],
            "total_appointment_count": row["total_appointment_count"],
            "last_appointment_date": row["last_appointment_date"],
            "recent": row["recent_ids"],
            "upcoming": row["upcoming_ids"],
        }
        for patient_id, row in expected_active(clinic, as_of, include_upcoming=include_upcoming).items()
    }


def as_recomputed(conn: db.DictConnection, org: str) -> dict[str, dict[str, Any]]:
    rows = conn.execute("SELECT * FROM active_patients WHERE organization_id = %s", (org,)).fetchall()
    last = "%Y-%m-%dT%H:%M:%SZ"
    return {
        row["cliniko_patient_id"]: {
            "recent_appointment_count": row["recent_appointment_count"],
            "upcoming_appointment_count": row["upcoming_appointment_count"],
            "total_appointment_count": row["total_appointment_count"],
            "last_appointment_date": row["last_appointment_date"] and row["last_appointment_date"].strftime(last),
            "recent": [(item["id"], item["kind"]) for item in row["recent_appointments"]],
            "upcoming": [(item["id"], item["kind"]) for item in row["upcoming_appointments"]],
        }
        for row in rows
    }


@pytest.mark.parametrize("include_upcoming", [False, True])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(ROUND, min_size=1, max_size=3), seed=st.integers(1, 50))
def test_recomputing_everyone_follows_the_definitions(
    database_url: str, include_upcoming: bool, rounds: list[tuple[list[tuple[str, int, int]], int, int]], seed: int
) -> None:
    """The reference the property above compares with: recomputing everyone (candidates from the window, then each
    one's appointments by patient) gives what DESIGN §2 says, worked out by hand from the clinic's records."""
    clinic = generate_clinic(patients=25, appointments=220, seed=seed)
    org = f"by-hand-{next(_organizations)}"
    with db.connect(database_url, autocommit=True) as conn:
        add_organization(conn, org, name="By hand", include_upcoming=include_upcoming)
        mirror = Mirror(conn, clinic, org)
        mirror.write_changes()
        as_of = clinic.now
        for changes, days, hours in [([], 0, 0), *rounds]:
            deleted = [apply_change(clinic, change) for change in changes]
            clinic.advance_clock(timedelta(minutes=5))
            mirror.write_changes()
            if any(deleted):
                mirror.full_pass_of_patients()
            as_of += timedelta(days=days, hours=hours)
            mirror.recompute(as_of, include_upcoming, everything=True)
            assert as_recomputed(conn, org) == by_hand(clinic, as_of, include_upcoming)


def test_a_run_killed_before_its_recompute_loses_no_dirty_patient(database_url: str) -> None:
    """The dirty patients are committed with the page: a recompute in a later transaction still finds them."""
    clinic = generate_clinic(patients=25, appointments=220, seed=3)
    org = "killed-before-recompute"
    with db.connect(database_url, autocommit=True) as conn:
        add_organization(conn, org, name="Killed")
        mirror = Mirror(conn, clinic, org)
        mirror.write_changes()
        mirror.recompute(clinic.now, False, everything=False)
        patient = next(iter(sorted(clinic.patients.records)))
        clinic.book(patient, clinic.now - timedelta(days=1))
        mirror.write_changes()  # the pages are committed; the run dies here
    with db.connect(database_url, autocommit=True) as conn:
        dirty = conn.execute(
            "SELECT patient_id FROM active_dirty_patients WHERE organization_id = %s", (org,)
        ).fetchall()
        assert [row["patient_id"] for row in dirty] == [str(patient)]
        mirror = Mirror(conn, clinic, org)
        mirror.recompute(clinic.now, False, everything=False)
        assert mirror.results() == mirror.full_results(clinic.now, False)
        active = conn.execute(
            "SELECT recent_appointment_count FROM active_patients WHERE organization_id = %s "
            "AND cliniko_patient_id = %s",
            (org, str(patient)),
        ).fetchone()
        assert active is not None and active["recent_appointment_count"] >= 1
        left = conn.execute("SELECT count(*) AS n FROM active_dirty_patients WHERE organization_id = %s", (org,))
        assert left.fetchone() == {"n": 0}


def test_settings_change_recomputes_everyone(database_url: str) -> None:
    clinic = generate_clinic(patients=25, appointments=220, seed=5)
    org = "settings-change"
    with db.connect(database_url, autocommit=True) as conn:
        add_organization(conn, org, name="Settings")
        mirror = Mirror(conn, clinic, org)
        mirror.write_changes()
        mirror.recompute(clinic.now, False, everything=False)
        with conn.transaction():
            scope = take_changed_patients(conn, org, as_of=clinic.now, window_days=60, include_upcoming=False)
            assert scope.everything
            recompute_active_patients(conn, org, as_of=clinic.now, window_days=60, include_upcoming=False, scope=scope)
        wide = conn.execute(
            "SELECT DISTINCT search_date_from FROM active_patients WHERE organization_id = %s", (org,)
        ).fetchall()
        assert [row["search_date_from"] for row in wide] == [clinic.now - timedelta(days=60)]
        with conn.transaction():
            scope = take_changed_patients(conn, org, as_of=clinic.now, window_days=60, include_upcoming=False)
            assert not scope.everything and scope.written == 0 and scope.crossing == 0
            recompute_active_patients(conn, org, as_of=clinic.now, window_days=60, include_upcoming=False, scope=scope)


def test_a_renamed_practitioner_recomputes_everyone(database_url: str) -> None:
    """Names appear in every active patient's JSON details: a changed reference list means a full recompute."""
    clinic = generate_clinic(patients=25, appointments=220, seed=9)
    org = "renamed-practitioner"
    with db.connect(database_url, autocommit=True) as conn:
        add_organization(conn, org, name="Renamed")
        mirror = Mirror(conn, clinic, org)
        mirror.write_changes()
        mirror.recompute(clinic.now, False, everything=False)
        practitioner = next(iter(clinic.practitioners.records.values()))
        practitioner.last_name = "Renamed"
        clinic.touch("practitioners", practitioner.id)
        mirror.write_changes()
        with conn.transaction():
            assert take_changed_patients(conn, org, as_of=clinic.now, window_days=45, include_upcoming=False).everything
            recompute_active_patients(conn, org, as_of=clinic.now, window_days=45, include_upcoming=False)
        assert mirror.results() == mirror.full_results(clinic.now, False)


def test_bad_timestamp_fails_the_page_with_a_clear_error(database_url: str) -> None:
    from cliniko_sync.errors import ClinikoAPIError

    clinic = generate_clinic(patients=3, appointments=10, seed=2)
    with db.connect(database_url, autocommit=True) as conn:
        add_organization(conn, "bad-time", name="Bad time")
        record = render("individual_appointments", next(iter(clinic.individual_appointments.records.values())),
                        BASE, clinic)  # fmt: skip
        record["starts_at"] = "next tuesday"
        with pytest.raises(ClinikoAPIError, match="individual_appointments record"), conn.transaction():
            write_rows(conn, STREAMS_BY_NAME["individual_appointments"], "bad-time", [listing_row(record)], None)
        count = conn.execute("SELECT count(*) AS n FROM cliniko_individual_appointments").fetchone()
        assert count == {"n": 0}

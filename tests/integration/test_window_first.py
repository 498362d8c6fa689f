"""Window first (issue 12): a new organization's first active list comes from the window pass, provisional until the
history is backfilled; it equals a full sync's list in every field but total_appointment_count, stays current
through refreshes while the backfill goes on, and becomes exact when the backfill completes."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from emulator_fixtures import EMULATOR_API_KEY
from sync_helpers import active_rows, expected_active, fresh_sync_snapshot, setup_org, snapshot

from cliniko_sync.sync.pipeline import sync_organization

ORG = "window-clinic"


pytestmark = pytest.mark.usefixtures("sync_environment")


class StopAtBackfill:
    """Progress that stops the run as the window reads end (the backfill's passes that started beside them stop at
    their next checkpoint): the provisional list is committed, the history is not complete."""

    def __init__(self) -> None:
        self.stop = threading.Event()

    def stream_started(self, organization_id: str, stream: str, mode: str) -> None:
        pass

    def page_done(self, organization_id: str, stream: str, fetched: int, total: int | None) -> None:
        pass

    def stream_finished(self, organization_id: str, stream: str) -> None:
        if stream == "window":
            self.stop.set()


def provisional_run(url: str, as_of: Any) -> Any:
    progress = StopAtBackfill()
    result = sync_organization(url, ORG, as_of=as_of, progress=progress, stop=progress.stop)
    assert result.status == "partial", result.error
    assert result.history_complete is False
    return result


def without_total(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    skip = {"total_appointment_count", "history_complete", "contact_id", "created_at", "updated_at", "id"}
    return {pid: {k: v for k, v in row.items() if k not in skip} for pid, row in rows.items()}


def test_the_provisional_list_equals_a_full_syncs_but_for_the_total(
    conn: psycopg.Connection, database_url: str, emulator: Any, clinic: Any, make_database: Any
) -> None:
    setup_org(conn, emulator.base_url, EMULATOR_API_KEY, ORG)
    first = provisional_run(database_url, clinic.now)
    provisional = active_rows(conn, ORG)
    assert provisional and all(row["history_complete"] is False for row in provisional.values())
    window = first.stats["window"]
    assert window["mode"] == "window" and window["first_active_requests"] < first.requests + 1
    assert first.stats["backfill_records"] > 0

    fresh_url = make_database()
    with psycopg.connect(fresh_url, autocommit=True, row_factory=psycopg.rows.dict_row) as fresh:
        setup_org(fresh, emulator.base_url, EMULATOR_API_KEY, ORG)
        full = sync_organization(fresh_url, ORG, as_of=clinic.now)
        assert full.status == "success" and full.history_complete is True
        exact = active_rows(fresh, ORG)
        assert without_total(provisional) == without_total(exact)
        assert all(provisional[p]["total_appointment_count"] <= exact[p]["total_appointment_count"] for p in exact)
        assert any(provisional[p]["total_appointment_count"] < exact[p]["total_appointment_count"] for p in exact)

        # The backfill completes on the next run: the list is exact, and the database equals a plain full sync's.
        done = sync_organization(database_url, ORG, as_of=clinic.now)
        assert done.status == "success" and done.history_complete is True
        assert done.stats["window"]["mode"] == "window refresh"  # it began with the history incomplete
        assert all(row["history_complete"] for row in active_rows(conn, ORG).values())
        assert snapshot(conn, ORG) == snapshot(fresh, ORG)


def test_refreshes_keep_the_provisional_list_current_while_the_backfill_goes_on(
    conn: psycopg.Connection, database_url: str, emulator: Any, clinic: Any
) -> None:
    setup_org(conn, emulator.base_url, EMULATOR_API_KEY, ORG)
    provisional_run(database_url, clinic.now)
    active = sorted(active_rows(conn, ORG))
    current = [p for p in clinic.patients.records.values() if not (p.archived_at or p.merged_at or p.deleted_at)]
    newcomer = next(p for p in current if str(p.id) not in active)
    clinic.advance_clock(timedelta(hours=3))
    clinic.book(newcomer.id, clinic.now - timedelta(hours=1))  # joins the list
    clinic.archive_patient(active[0])  # leaves it
    now = int(clinic.now.timestamp())
    in_window = [a for a in clinic.individual_appointments.records.values()
                 if str(a.patient_id) == active[1] and not (a.cancelled_at or a.archived_at or a.deleted_at)
                 and now - 45 * 86400 <= a.starts_at <= now]  # fmt: skip
    for appointment in in_window:
        clinic.cancel_appointment(appointment.id)  # may leave it, unless a group class keeps it active

    refreshed = provisional_run(database_url, clinic.now)
    assert refreshed.stats["window"]["mode"] == "window refresh"
    assert set(active_rows(conn, ORG)) == set(expected_active(clinic, clinic.now))
    assert refreshed.stats["window"]["requests"] < 15  # changes only, not the window again

    done = sync_organization(database_url, ORG, as_of=clinic.now)
    assert done.status == "success" and done.history_complete is True
    assert set(active_rows(conn, ORG)) == set(expected_active(clinic, clinic.now))
    state = conn.execute("SELECT count(*) AS n FROM sync_state WHERE stream = 'window'").fetchone()
    assert state["n"] == 0  # the window's cursor is dropped once the history is complete


def test_a_named_patient_cliniko_no_longer_has_is_treated_as_deleted(
    conn: psycopg.Connection, database_url: str, emulator: Any, clinic: Any
) -> None:
    gone = sorted(expected_active(clinic, clinic.now))[0]
    clinic.delete_patient(gone)  # its appointments are still listed, it is not
    setup_org(conn, emulator.base_url, EMULATOR_API_KEY, ORG)
    first = provisional_run(database_url, clinic.now)
    assert first.stats["window"]["missing_patients"] >= 1
    assert gone not in active_rows(conn, ORG)
    assert set(active_rows(conn, ORG)) == set(expected_active(clinic, clinic.now))


def test_status_and_list_active_say_the_list_is_provisional(
    conn: psycopg.Connection, database_url: str, emulator: Any, clinic: Any, cli: Any
) -> None:
    import json

    setup_org(conn, emulator.base_url, EMULATOR_API_KEY, ORG)
    provisional_run(database_url, clinic.now)
    listed = json.loads(cli("list-active", ORG, "--format", "json").stdout)
    assert listed and all(row["history_complete"] is False for row in listed)
    status = json.loads(cli("status", ORG, "--format", "json").stdout)[0]
    assert status["history_complete"] is False and status["backfill_records"] > 0
    table = cli("status", ORG, "--wide", env={"COLUMNS": "200"}).stdout
    assert "backfill:" in table


class MoveAtBackfill:
    """Progress that moves a group class into the window as the backfill starts (before any backfill request)."""

    def __init__(self, clinic: Any, group_id: int, starts_at: Any) -> None:
        self.clinic, self.group_id, self.starts_at = clinic, group_id, starts_at
        self.window_read = False
        self.moved = False

    def stream_started(self, organization_id: str, stream: str, mode: str) -> None:
        if self.window_read and not self.moved:
            self.clinic.move_class(self.group_id, self.starts_at)
            self.moved = True

    def page_done(self, organization_id: str, stream: str, fetched: int, total: int | None) -> None:
        pass

    def stream_finished(self, organization_id: str, stream: str) -> None:
        self.window_read = self.window_read or stream == "window"


def class_before_the_window(clinic: Any) -> Any:
    """A class before the window (45 days) with an attendee whose patient is current."""
    now = int(clinic.now.timestamp())
    current = {p.id for p in clinic.patients.records.values() if not (p.archived_at or p.merged_at or p.deleted_at)}
    attended = {t.booking_id for t in clinic.attendees.records.values() if t.patient_id in current}
    before = range(now - 90 * 86400, now - 50 * 86400)
    return next(
        g for g in sorted(clinic.group_appointments.records.values(), key=lambda g: g.id)
        if g.id in attended and not (g.archived_at or g.deleted_at) and g.starts_at in before
    )  # fmt: skip


@pytest.mark.parametrize("when", ["during the first run's backfill", "between runs (a window refresh reads it)"])
def test_a_class_moved_into_the_window_during_the_backfill_keeps_its_attendees(
    conn: psycopg.Connection, database_url: str, emulator: Any, clinic: Any, make_database: Any, when: str
) -> None:
    """The backfill reads the attendees of the classes before the window; a class that moved into the window after
    the first window read took the class list is read by the backfill too (issue 21)."""
    moved = class_before_the_window(clinic)
    into_window = clinic.now - timedelta(days=3)
    setup_org(conn, emulator.base_url, EMULATOR_API_KEY, ORG)
    if when.startswith("during"):
        progress = MoveAtBackfill(clinic, moved.id, into_window)
        assert sync_organization(database_url, ORG, as_of=clinic.now, progress=progress).status == "success"
        assert progress.moved
    else:
        provisional_run(database_url, clinic.now)
        clinic.move_class(moved.id, into_window)
        assert sync_organization(database_url, ORG, as_of=clinic.now).status == "success"
    assert sync_organization(database_url, ORG, as_of=clinic.now).mode == "incremental"
    kept = conn.execute(
        "SELECT count(*) AS n FROM cliniko_attendees WHERE organization_id = %s AND group_appointment_id = %s",
        (ORG, str(moved.id)),
    ).fetchone()
    assert kept["n"] == len(moved.attendee_ids)
    assert snapshot(conn, ORG) == fresh_sync_snapshot(make_database, emulator.base_url, ORG, clinic.now)
    assert set(active_rows(conn, ORG)) == set(expected_active(clinic, clinic.now))

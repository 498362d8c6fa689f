"""The sync against the emulator over loopback and a real PostgreSQL: definitions, incremental == full, run control.

Expected values come from the emulator's own records (tests/sync_helpers.expected_active), not from the sync's SQL.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from emulator_fixtures import EMULATOR_API_KEY
from sync_helpers import active_rows, expected_active, expected_phone, setup_org, snapshot

from cliniko_sync.errors import LockedError
from cliniko_sync.sync.pipeline import LOCK_NAMESPACE, sync_organization
from cliniko_sync.sync.streams import STREAMS_BY_NAME

pytestmark = pytest.mark.usefixtures("sync_environment")


def assert_matches_definitions(conn: psycopg.Connection, org: str, clinic: Any, *, window_days: int = 45,
                               include_upcoming: bool = False) -> None:  # fmt: skip
    expected = expected_active(clinic, clinic.now, window_days=window_days, include_upcoming=include_upcoming)
    rows = active_rows(conn, org)
    assert set(rows) == set(expected)
    for patient_id, want in expected.items():
        row = rows[patient_id]
        for key in ("recent_appointment_count", "upcoming_appointment_count", "total_appointment_count"):
            assert row[key] == want[key], (patient_id, key)
        last = row["last_appointment_date"]
        assert (last.strftime("%Y-%m-%dT%H:%M:%SZ") if last else None) == want["last_appointment_date"]
        assert [(a["id"], a["kind"]) for a in row["recent_appointments"]] == want["recent_ids"]
        assert [(a["id"], a["kind"]) for a in row["upcoming_appointments"]] == want["upcoming_ids"]
        assert row["contact_id"] is not None
        assert row["search_date_to"] == clinic.now
        assert row["search_date_from"] == clinic.now - timedelta(days=window_days)


def test_first_sync_matches_the_definitions(conn: psycopg.Connection, database_url: str, emulator: Any,
                                            clinic: Any) -> None:  # fmt: skip
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    result = sync_organization(database_url, org, as_of=clinic.now)
    assert result.status == "success", result.error
    assert result.mode == "full"
    assert result.active_patients == len(expected_active(clinic, clinic.now))
    assert_matches_definitions(conn, org, clinic)

    # Contacts: every current patient has exactly one, with its email lower-cased and its phone in E.164.
    contacts = {
        row["cliniko_patient_id"]: row
        for row in conn.execute("SELECT * FROM contacts WHERE organization_id = %s", (org,)).fetchall()
    }
    current = [p for p in clinic.patients.records.values() if not (p.archived_at or p.merged_at or p.deleted_at)]
    assert set(contacts) == {str(p.id) for p in current}
    for patient in current:
        contact = contacts[str(patient.id)]
        assert contact["created_by"] == "cliniko-sync"
        assert contact["email"] == (patient.email.strip().lower() if patient.email else None)
        assert contact["phone"] == expected_phone(patient.patient_phone_numbers)

    log = conn.execute("SELECT * FROM sync_log WHERE organization_id = %s", (org,)).fetchall()
    assert len(log) == 1
    assert log[0]["status"] == "success" and log[0]["mode"] == "full"
    assert log[0]["as_of"] == clinic.now and log[0]["window_days"] == 45
    # The window reads and the backfill's patients pass beside them read each patient once between them.
    stats = log[0]["stats"]
    mirrored = conn.execute("SELECT count(*) AS n FROM cliniko_patients WHERE organization_id = %s", (org,))
    assert mirrored.fetchone()["n"] == len(clinic.patients)
    inserted = stats["streams"]["patients"]["inserted"] + stats["window"]["inserted"].get("patients", 0)
    assert stats["window"]["records"] > 0 and inserted == len(clinic.patients)
    assert stats["history_complete"] is True and result.history_complete is True
    assert log[0]["stats"]["active_patients"] == result.active_patients
    assert 0 < log[0]["stats"]["valid_phone_share"] <= 1


def test_deny_listed_fields_never_reach_the_database(conn: psycopg.Connection, database_url: str, emulator: Any,
                                                     clinic: Any) -> None:  # fmt: skip
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    assert sync_organization(database_url, org).status == "success"
    for table, key in (("cliniko_patients", "notes"), ("cliniko_patients", "medical_alerts"),
                       ("cliniko_individual_appointments", "notes"),
                       ("cliniko_individual_appointments", "cancellation_note"),
                       ("cliniko_individual_appointments", "telehealth_url")):  # fmt: skip
        found = conn.execute(f"SELECT count(*) AS n FROM {table} WHERE raw ? %s", (key,)).fetchone()
        assert found["n"] == 0, (table, key)


def mutate(clinic: Any) -> None:
    """A week in a clinic: bookings, cancellations, DNAs, archivals, edits, new patients, the clock moving on."""
    active_now = sorted(expected_active(clinic, clinic.now))
    current = [p for p in clinic.patients.records.values() if not (p.archived_at or p.merged_at or p.deleted_at)]
    inactive = [p for p in current if str(p.id) not in active_now]
    clinic.advance_clock(timedelta(days=3))
    clinic.book(inactive[0].id, clinic.now - timedelta(days=1))  # enters the window
    clinic.book(inactive[1].id, clinic.now + timedelta(days=7))  # only upcoming: not active by default
    clinic.archive_patient(active_now[0])
    clinic.edit_patient(active_now[1], email="New.Address@Example.test")
    now = int(clinic.now.timestamp())
    recent = [
        a
        for a in clinic.individual_appointments.records.values()
        if str(a.patient_id) in active_now[2:]
        and not (a.cancelled_at or a.archived_at or a.deleted_at)
        and now - 40 * 86400 <= a.starts_at <= now
    ]
    clinic.cancel_appointment(recent[0].id)
    clinic.mark_did_not_arrive(recent[1].id)
    clinic.archive_appointment(recent[2].id)
    newcomer = clinic.add_patient(first_name="Zoë", last_name="O'Connor")
    clinic.book(newcomer, clinic.now - timedelta(hours=2))
    clinic.advance_clock(timedelta(days=20))  # patients leave the window
    clinic.book(inactive[2].id, clinic.now - timedelta(days=2))


def test_incremental_sync_equals_a_fresh_full_sync(conn: psycopg.Connection, database_url: str, emulator: Any,
                                                   clinic: Any, make_database: Any) -> None:  # fmt: skip
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    assert sync_organization(database_url, org, as_of=clinic.now).status == "success"
    mutate(clinic)
    result = sync_organization(database_url, org, as_of=clinic.now)
    assert result.status == "success", result.error
    assert result.mode == "incremental"
    assert_matches_definitions(conn, org, clinic)

    fresh_url = make_database()
    with psycopg.connect(fresh_url, autocommit=True, row_factory=psycopg.rows.dict_row) as fresh:
        setup_org(fresh, emulator.base_url, EMULATOR_API_KEY)
        assert sync_organization(fresh_url, org, as_of=clinic.now).status == "success"
        assert snapshot(conn, org) == snapshot(fresh, org)


def test_no_change_incremental_makes_one_request_per_stream(conn: psycopg.Connection, database_url: str,
                                                            emulator: Any, clinic: Any) -> None:  # fmt: skip
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    assert sync_organization(database_url, org, as_of=clinic.now).status == "success"
    second = sync_organization(database_url, org, as_of=clinic.now)
    assert second.status == "success"
    per_stream = {name: s["requests"] for name, s in second.stats["streams"].items()}
    # One request per endpoint: practitioners are read from /practitioners and /practitioners/inactive.
    assert all(count <= len(STREAMS_BY_NAME[name].paths) for name, count in per_stream.items()), per_stream


def test_full_sync_soft_deletes_what_cliniko_no_longer_has(conn: psycopg.Connection, database_url: str,
                                                           emulator: Any, clinic: Any) -> None:  # fmt: skip
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    assert sync_organization(database_url, org, as_of=clinic.now).status == "success"
    victim = sorted(expected_active(clinic, clinic.now))[0]
    clinic.delete_patient(victim)  # Cliniko has no deleted-patient filter: only a full pass can notice
    assert sync_organization(database_url, org, as_of=clinic.now).status == "success"
    assert victim in active_rows(conn, org)
    result = sync_organization(database_url, org, as_of=clinic.now, full=True)
    assert result.status == "success" and result.mode == "full"
    assert victim not in active_rows(conn, org)
    row = conn.execute(
        "SELECT removed_at FROM cliniko_patients WHERE organization_id = %s AND id = %s", (org, victim)
    ).fetchone()
    assert row["removed_at"] is not None


def test_dry_run_changes_nothing(conn: psycopg.Connection, database_url: str, emulator: Any, clinic: Any) -> None:
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    result = sync_organization(database_url, org, dry_run=True)
    assert result.status == "success" and result.dry_run
    assert result.active_patients == len(expected_active(clinic, clinic.now))
    patients = result.stats["streams"]["patients"]["inserted"] + result.stats["window"]["inserted"].get("patients", 0)
    assert patients == len(clinic.patients)
    for table in ("cliniko_patients", "contacts", "active_patients", "sync_log", "sync_state"):
        assert conn.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"] == 0, table


def test_second_concurrent_sync_is_refused_with_75(conn: psycopg.Connection, database_url: str,
                                                   emulator: Any) -> None:  # fmt: skip
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (LOCK_NAMESPACE, org))
        with pytest.raises(LockedError) as raised:
            sync_organization(database_url, org)
        assert raised.value.exit_code == 75
    statuses = [r["status"] for r in conn.execute("SELECT status FROM sync_log").fetchall()]
    assert statuses == ["skipped"]


def test_a_dead_running_row_is_closed_as_abandoned(conn: psycopg.Connection, database_url: str,
                                                   emulator: Any) -> None:  # fmt: skip
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    conn.execute(
        "INSERT INTO sync_log (organization_id, status, as_of, window_days) VALUES (%s, 'running', now(), 45)", (org,)
    )
    assert sync_organization(database_url, org).status == "success"
    statuses = [r["status"] for r in conn.execute("SELECT status FROM sync_log ORDER BY id").fetchall()]
    assert statuses == ["abandoned", "success"]


def test_stop_request_checkpoints_and_the_next_run_resumes(conn: psycopg.Connection, database_url: str,
                                                           emulator: Any, clinic: Any,
                                                           make_database: Any) -> None:  # fmt: skip
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    stop = threading.Event()

    class StopAfterTheWindow:
        def stream_started(self, organization_id: str, stream: str, mode: str) -> None:
            pass

        def page_done(self, organization_id: str, stream: str, fetched: int, total: int | None) -> None:
            pass

        def stream_finished(self, organization_id: str, stream: str) -> None:
            if stream == "window":  # the backfill's passes stop at their next checkpoint
                stop.set()

    partial = sync_organization(database_url, org, as_of=clinic.now, progress=StopAfterTheWindow(), stop=stop)
    assert partial.status == "partial" and partial.exit_code == 3
    # The window pass came first: the provisional active list is there, marked so, before the history is.
    provisional = active_rows(conn, org)
    assert set(provisional) == set(expected_active(clinic, clinic.now))
    assert partial.history_complete is False and all(not row["history_complete"] for row in provisional.values())
    resumed = sync_organization(database_url, org, as_of=clinic.now)
    assert resumed.status == "success"
    assert resumed.stats["streams"]["patients"]["inserted"] < len(clinic.patients)  # resumed, not restarted
    assert_matches_definitions(conn, org, clinic)


def test_two_organizations_with_overlapping_ids_never_mix(conn: psycopg.Connection, database_url: str,
                                                          emulator: Any, make_emulator: Any,
                                                          clinic: Any) -> None:  # fmt: skip
    from cliniko_sync.emulator.dataset import generate_clinic

    other_clinic = generate_clinic(patients=150, seed=clinic.seed, now=clinic.now)  # same seed: same ids
    other = make_emulator(other_clinic)
    first = setup_org(conn, emulator.base_url, EMULATOR_API_KEY, "clinic-one")
    second = setup_org(conn, other.base_url, EMULATOR_API_KEY, "clinic-two")
    assert sync_organization(database_url, first, as_of=clinic.now).status == "success"
    assert sync_organization(database_url, second, as_of=clinic.now).status == "success"
    assert set(active_rows(conn, first)) == set(expected_active(clinic, clinic.now))
    assert set(active_rows(conn, second)) == set(expected_active(other_clinic, clinic.now))
    mixed = conn.execute(
        """
        SELECT count(*) AS n FROM active_patients ap JOIN contacts c ON c.id = ap.contact_id
        WHERE c.organization_id <> ap.organization_id
        """
    ).fetchone()
    assert mixed["n"] == 0


def test_hostile_patient_fields_are_stored_safely(conn: psycopg.Connection, database_url: str, emulator: Any,
                                                  clinic: Any) -> None:  # fmt: skip
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    victim = sorted(expected_active(clinic, clinic.now))[0]
    hostile = "Robert'); DROP TABLE contacts;--\x00 \u202eemoji 🦘 " + "x" * 10_000
    clinic.edit_patient(victim, first_name=hostile, email="Bobby\x00Tables@Example.test")
    result = sync_organization(database_url, org, as_of=clinic.now)
    assert result.status == "success", result.error
    contact = conn.execute(
        "SELECT name, email FROM contacts WHERE organization_id = %s AND cliniko_patient_id = %s", (org, victim)
    ).fetchone()
    assert contact["name"].startswith("Robert'); DROP TABLE contacts;-- \u202eemoji 🦘 xxx")
    assert "\x00" not in contact["name"]
    assert contact["email"] == "bobbytables@example.test"
    assert conn.execute("SELECT count(*) AS n FROM contacts").fetchone()["n"] > 1  # nothing was dropped


@pytest.mark.parametrize(("window_days", "include_upcoming"), [(60, False), (45, True), (7, True)])
def test_window_and_include_upcoming_per_organization(conn: psycopg.Connection, database_url: str, emulator: Any,
                                                      clinic: Any, window_days: int,
                                                      include_upcoming: bool) -> None:  # fmt: skip
    org = setup_org(
        conn, emulator.base_url, EMULATOR_API_KEY, window_days=window_days, include_upcoming=include_upcoming
    )
    result = sync_organization(database_url, org, as_of=clinic.now)
    assert result.status == "success", result.error
    assert_matches_definitions(conn, org, clinic, window_days=window_days, include_upcoming=include_upcoming)
    log = conn.execute("SELECT window_days, include_upcoming FROM sync_log").fetchone()
    assert (log["window_days"], log["include_upcoming"]) == (window_days, include_upcoming)


def test_as_of_in_the_past_for_audits(conn: psycopg.Connection, database_url: str, emulator: Any,
                                      clinic: Any) -> None:  # fmt: skip
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    audit = clinic.now - timedelta(days=200)
    assert sync_organization(database_url, org, as_of=audit).status == "success"
    assert set(active_rows(conn, org)) == set(expected_active(clinic, audit))
    assert all(row["search_date_to"] == audit for row in active_rows(conn, org).values())

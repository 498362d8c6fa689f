"""The sync against the emulator on its strict defaults (the real API's behaviour): hidden sub-second timestamps,
records changing mid-crawl, crowded seconds across page boundaries, runs stopped after any committed page, and
practitioners who have left the clinic. Incremental from any checkpoint must equal a fresh full pass."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from emulator_fixtures import EMULATOR_API_KEY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sync_helpers import active_rows, expected_active, fresh_sync_snapshot, setup_org, snapshot

from cliniko_sync.emulator import Faults, generate_clinic
from cliniko_sync.emulator.quirks import Quirks
from cliniko_sync.sync.pipeline import sync_organization

ORG = "strict-clinic"


pytestmark = pytest.mark.usefixtures("sync_environment")


class StopAfter:
    """Progress that asks the run to stop after `pages` committed pages (as SIGTERM would), or never with None."""

    def __init__(self, pages: int | None) -> None:
        self.pages = pages
        self.done = 0
        self.stop = threading.Event()

    def stream_started(self, organization_id: str, stream: str, mode: str) -> None:
        pass

    def page_done(self, organization_id: str, stream: str, fetched: int, total: int | None) -> None:
        self.done += 1
        if self.pages is not None and self.done >= self.pages:
            self.stop.set()

    def stream_finished(self, organization_id: str, stream: str) -> None:
        pass


def run(url: str, as_of: Any, stop_after: int | None = None) -> Any:
    progress = StopAfter(stop_after)
    result = sync_organization(url, ORG, as_of=as_of, progress=progress, stop=progress.stop)
    assert result.status in ("success", "partial"), result.error
    return result


def sync_until_done(url: str, as_of: Any, stop_after: int | None) -> list[Any]:
    results = [run(url, as_of, stop_after)]
    while results[-1].status != "success":
        results.append(run(url, as_of))
        assert len(results) < 10
    return results


def crowd_one_second(clinic: Any, count: int) -> None:
    """`count` appointments edited inside one shown second (hidden fractions tell them apart): more than a page."""
    with clinic.lock:
        ids = sorted(clinic.individual_appointments.records)[:count]
    for record_id in ids:
        clinic.touch("individual_appointments", record_id)


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    seed=st.integers(1, 10_000),
    crowded=st.integers(101, 260),
    mutate_every=st.sampled_from([0, 3, 7]),
    first_stop=st.one_of(st.none(), st.integers(1, 12)),
    second_stop=st.one_of(st.none(), st.integers(1, 6)),
)
def test_property_incremental_from_any_checkpoint_equals_a_fresh_full_pass(
    make_database: Any,
    make_emulator: Any,
    seed: int,
    crowded: int,
    mutate_every: int,
    first_stop: int | None,
    second_stop: int | None,
) -> None:
    clinic = generate_clinic(patients=40, seed=seed)
    crowd_one_second(clinic, crowded)
    server = make_emulator(clinic, faults=Faults(mutate_every=mutate_every, seed=seed))
    url = make_database()
    with psycopg.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        setup_org(conn, server.base_url, EMULATOR_API_KEY, ORG)
        first = sync_until_done(url, clinic.now, first_stop)
        if mutate_every == 0:
            # Nothing changed while the pass ran: every record went into the mirror once, none was read again as
            # an update, however often the pass was stopped.
            for table, stream in (("cliniko_individual_appointments", "individual_appointments"),
                                  ("cliniko_patients", "patients")):  # fmt: skip
                rows = conn.execute(f"SELECT count(*) AS n FROM {table} WHERE organization_id = %s", (ORG,))
                inserted = sum(r.stats["streams"].get(stream, {}).get("inserted", 0) for r in first)
                inserted += sum(r.stats.get("window", {}).get("inserted", {}).get(stream, 0) for r in first)
                updated = sum(r.stats["streams"].get(stream, {}).get("updated", 0) for r in first)
                assert (inserted, updated) == (rows.fetchone()["n"], 0)

        # A day in the clinic, partly inside the second the cursor stands at.
        patients = sorted(clinic.patients.records)
        clinic.book(patients[0], clinic.now - timedelta(days=1))
        clinic.edit_patient(patients[1], email="moved@example.test")
        crowd_one_second(clinic, crowded // 2)
        clinic.advance_clock(timedelta(hours=2))
        clinic.book(patients[2], clinic.now - timedelta(hours=1))
        sync_until_done(url, clinic.now, second_stop)

        # Catch up on whatever the mid-crawl edits changed behind the crawl, then compare with a fresh full pass.
        server.set_faults(Faults())
        assert run(url, clinic.now).mode == "incremental"
        fresh_url = make_database()
        with psycopg.connect(fresh_url, autocommit=True, row_factory=psycopg.rows.dict_row) as fresh:
            setup_org(fresh, server.base_url, EMULATOR_API_KEY, ORG)
            assert sync_organization(fresh_url, ORG, as_of=clinic.now).status == "success"
            assert snapshot(conn, ORG) == snapshot(fresh, ORG)


def test_an_inactive_practitioner_is_still_named_in_the_details(
    conn: psycopg.Connection, database_url: str, emulator: Any, clinic: Any
) -> None:
    with clinic.lock:
        left = next(p for p in clinic.practitioners.records.values() if not p.active)
        patient = next(iter(sorted(clinic.patients.records)))
    booked = clinic.book(patient, clinic.now - timedelta(days=3), practitioner_id=left.id)
    setup_org(conn, emulator.base_url, EMULATOR_API_KEY, ORG)
    assert sync_organization(database_url, ORG, as_of=clinic.now).status == "success"

    mirrored = conn.execute(
        "SELECT raw->>'active' AS active FROM cliniko_practitioners WHERE organization_id = %s AND id = %s",
        (ORG, str(left.id)),
    ).fetchone()
    assert mirrored is not None and mirrored["active"] == "false"
    details = {a["id"]: a for a in active_rows(conn, ORG)[str(patient)]["recent_appointments"]}
    name = " ".join(part for part in (left.first_name, left.last_name) if part)
    assert details[booked]["practitioner"] in (name, getattr(left, "display_name", None), getattr(left, "label", None))
    paths = [entry.path.split("?")[0] for entry in emulator.request_log]
    assert "/v1/practitioners" in paths and "/v1/practitioners/inactive" in paths
    assert not any("practitioners" in entry.path and "archived_at" in entry.path for entry in emulator.request_log)


def test_appointment_details_name_the_business(
    conn: psycopg.Connection, database_url: str, emulator: Any, clinic: Any
) -> None:
    """A clinic with two locations: each appointment in the JSON details says where it is."""
    with clinic.lock:
        first = next(iter(clinic.businesses.records.values()))
        second = replace(first, id=first.id + 1, business_name="Northside Rehab (synthetic)")
        clinic.businesses.add(second)
    patient = sorted(expected_active(clinic, clinic.now))[0]
    booked = clinic.book(patient, clinic.now - timedelta(days=2), business_id=second.id)
    setup_org(conn, emulator.base_url, EMULATOR_API_KEY, ORG)
    assert sync_organization(database_url, ORG, as_of=clinic.now).status == "success"
    with clinic.lock:
        names = {str(b.id): b.business_name for b in clinic.businesses.records.values()}
        where = {str(a.id): names[str(a.business_id)] for a in clinic.individual_appointments.records.values()}
        groups = {g.id: names[str(g.business_id)] for g in clinic.group_appointments.records.values()}
        where |= {str(t.id): groups[t.booking_id] for t in clinic.attendees.records.values()}
    mirrored = conn.execute("SELECT count(*) AS n FROM cliniko_businesses WHERE organization_id = %s", (ORG,))
    assert mirrored.fetchone()["n"] == len(names)
    details = [a for row in active_rows(conn, ORG).values() for a in row["recent_appointments"]]
    assert details and all(a["business"] == where[a["id"]] for a in details)
    assert {a["business"] for a in details if a["id"] == booked} == {"Northside Rehab (synthetic)"}
    assert len({a["business"] for a in details}) == 2


class EditWhileListing:
    """Edits the clinic while a sync reads it: on every `every`-th listing the emulator answers, the next of `edits`
    (classes booked, moved and deleted, patients added to and cancelled from classes, appointments booked and
    cancelled),
    during the window reads and the backfill alike. The emulator looks up a resource's tables once per listing."""

    def __init__(self, clinic: Any, edits: list[tuple[str, int]], every: int) -> None:
        self.clinic, self.edits, self.every, self.listings = clinic, list(edits), every, 0
        self.listed_tables = clinic.listed_tables
        clinic.listed_tables = self.listing

    def listing(self, resource: str) -> Any:
        self.listings += 1
        if self.edits and self.listings % self.every == 0:
            self.edit(*self.edits.pop(0))
        return self.listed_tables(resource)

    def edit(self, kind: str, number: int) -> None:
        clinic = self.clinic
        patients = sorted(clinic.patients.records)
        patient = patients[number % len(patients)]
        groups = sorted(clinic.group_appointments.records)
        attendees = sorted(clinic.attendees.records)
        appointments = sorted(clinic.individual_appointments.records)
        # Inside the window or before it (the backfill's side), in turn.
        when = clinic.now - timedelta(days=(number % 90) + 1)
        if kind == "class":
            clinic.add_attendee(clinic.add_class(when), patient)
        elif kind == "attend" and groups:
            clinic.add_attendee(groups[number % len(groups)], patient)
        elif kind == "cancel_attendee" and attendees:
            clinic.cancel_attendee(attendees[number % len(attendees)])
        elif kind == "delete_class" and groups:
            clinic.delete_class(groups[number % len(groups)])
        elif kind == "move_class" and groups:
            clinic.move_class(groups[number % len(groups)], when)
        elif kind == "book":
            clinic.book(patient, when)
        elif kind == "cancel" and appointments:
            clinic.cancel_appointment(appointments[number % len(appointments)])

    def stop(self) -> None:
        self.edits.clear()


EDIT = st.tuples(
    st.sampled_from(["class", "attend", "cancel_attendee", "delete_class", "move_class", "book", "cancel"]),
    st.integers(0, 10_000),
)


@pytest.mark.parametrize("group_attendees_only", [False, True])
@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    seed=st.integers(1, 10_000),
    edits=st.lists(EDIT, min_size=1, max_size=8),
    every=st.integers(1, 6),
    first_stop=st.one_of(st.none(), st.integers(1, 20)),
    second_stop=st.one_of(st.none(), st.integers(1, 8)),
)
def test_property_edits_during_the_window_reads_and_the_backfill_leave_nothing_behind(
    make_database: Any,
    make_emulator: Any,
    group_attendees_only: bool,
    seed: int,
    edits: list[tuple[str, int]],
    every: int,
    first_stop: int | None,
    second_stop: int | None,
) -> None:
    """A new clinic's first sync (window reads, then the backfill), stopped after any committed page of either and
    resumed, with classes and appointments booked, cancelled and deleted while it reads; then edits between runs and
    an incremental sync stopped anywhere: the result equals a fresh full sync's, whether /attendees lists
    individual appointments' attendee records or not."""
    clinic = generate_clinic(patients=40, seed=seed)
    server = make_emulator(clinic, quirks=Quirks(group_attendees_only=group_attendees_only))
    editor = EditWhileListing(clinic, edits, every)
    url = make_database()
    with psycopg.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        setup_org(conn, server.base_url, EMULATOR_API_KEY, ORG)
        sync_until_done(url, clinic.now, first_stop)
        editor.edits = list(reversed(edits))
        clinic.advance_clock(timedelta(minutes=30))
        editor.edit("class", seed)
        editor.edit("cancel_attendee", seed)
        sync_until_done(url, clinic.now, second_stop)
        editor.stop()
        assert run(url, clinic.now).mode == "incremental"
        attendees = conn.execute(
            "SELECT count(*) AS n FROM cliniko_attendees t JOIN cliniko_individual_appointments i"
            " ON i.organization_id = t.organization_id AND i.id = t.group_appointment_id WHERE t.organization_id = %s",
            (ORG,),
        ).fetchone()
        assert attendees["n"] == 0  # individual appointments' attendee records are never kept
        assert snapshot(conn, ORG) == fresh_sync_snapshot(make_database, server.base_url, ORG, clinic.now)
        assert set(active_rows(conn, ORG)) == set(expected_active(clinic, clinic.now))

"""PostgreSQL 15 to 18 give the same results. The mirror's upsert reads each row's previous version from RETURNING old
on 18 and by a probe in the same statement on older servers (sync/mirror.py): both ways write the same mirror rows,
mark the same patients dirty, report the same counts and lead to the same active patients.

The probe is forced on a newer server by raising mirror.RETURNING_OLD_SINCE, so these tests compare the two ways on
the embedded 18; on an older server (.ci/pg-cluster) both sides take the probe, which the property tests of
test_active_incremental.py then check against recomputing everyone.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from emulator_fixtures import EMULATOR_API_KEY
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sync_helpers import setup_org, snapshot, sync, sync_env  # noqa: F401 (fixture)
from test_active_incremental import ROUND, Mirror, apply_change

from cliniko_sync import db
from cliniko_sync.emulator import generate_clinic
from cliniko_sync.orgs import add_organization
from cliniko_sync.sync import mirror
from cliniko_sync.sync.streams import STREAMS

WAYS = {"returning old": True, "probe": False}
MIRROR_TABLES = sorted({stream.table for stream in STREAMS})
_organizations = itertools.count(1)


@contextlib.contextmanager
def upsert_with(returning_old: bool) -> Iterator[None]:
    """The mirror's upsert as the server decides (RETURNING old on 18 and later), or the probe whatever the server."""
    with pytest.MonkeyPatch.context() as patch:
        if not returning_old:
            patch.setattr(mirror, "RETURNING_OLD_SINCE", sys.maxsize)
        yield


def written_state(conn: db.DictConnection, org: str) -> dict[str, Any]:
    """Everything the upsert decides for one organization: every mirror column (removal as a flag: its time is the
    transaction's), the dirty marks and whether everyone must be recomputed."""
    state: dict[str, Any] = {}
    for table in MIRROR_TABLES:
        rows = conn.execute(f"SELECT * FROM {table} WHERE organization_id = %s ORDER BY id", (org,)).fetchall()
        state[table] = [
            {**{k: v for k, v in row.items() if k not in ("organization_id", "synced_at", "removed_at")},
             "removed": row["removed_at"] is not None}
            for row in rows
        ]  # fmt: skip
    state["dirty"] = conn.execute(
        "SELECT patient_id FROM active_dirty_patients WHERE organization_id = %s ORDER BY patient_id", (org,)
    ).fetchall()
    state["recompute"] = conn.execute(
        "SELECT recompute_all FROM active_recompute_state WHERE organization_id = %s", (org,)
    ).fetchall()
    return state


def outcome(found: Mirror) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The active patients and contacts, without the organization and the contacts' own ids."""
    active, contacts = found.results()
    return [{k: v for k, v in row.items() if k not in ("organization_id", "contact_id")} for row in active], contacts


def test_the_way_follows_the_server_version(database_url: str) -> None:
    with db.connect(database_url) as conn:
        assert mirror.returns_old(conn) == (conn.info.server_version >= 180000)
        with upsert_with(False):
            assert not mirror.returns_old(conn)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rounds=st.lists(ROUND, min_size=1, max_size=4), seed=st.integers(1, 50))
def test_returning_old_and_the_probe_write_the_same(
    database_url: str, rounds: list[tuple[list[tuple[str, int, int]], int, int]], seed: int
) -> None:
    """The same pages written both ways, after each round of changes (bookings, cancellations, archivals, merges,
    deletions found by a full pass): the same rows, dirty marks and counts, then the same active patients."""
    clinic = generate_clinic(patients=25, appointments=220, seed=seed)
    with db.connect(database_url, autocommit=True) as conn:
        mirrors: dict[bool, Mirror] = {}
        for name, returning_old in WAYS.items():
            org = f"{name.replace(' ', '-')}-{next(_organizations)}"
            add_organization(conn, org, name=name)
            mirrors[returning_old] = Mirror(conn, clinic, org)
        as_of = clinic.now
        for changes, days, hours in [([], 0, 0), *rounds]:
            deleted = [apply_change(clinic, change) for change in changes]
            clinic.advance_clock(timedelta(minutes=5))
            as_of += timedelta(days=days, hours=hours)
            for returning_old, each in mirrors.items():
                with upsert_with(returning_old):
                    each.write_changes()
                    if any(deleted):
                        each.full_pass_of_patients()
            with_old, probed = mirrors[True], mirrors[False]
            assert with_old.counts == probed.counts
            assert written_state(conn, with_old.org) == written_state(conn, probed.org)
            for each in mirrors.values():
                each.recompute(as_of, False, everything=False)
            assert outcome(with_old) == outcome(probed)


@pytest.mark.usefixtures("sync_environment")
def test_a_full_then_an_incremental_sync_end_the_same_both_ways(
    make_database: Any, emulator: Any, clinic: Any, env: dict[str, str]
) -> None:
    """Whole syncs through the emulator, both ways: the same database afterwards and the same counts per stream."""
    as_of = clinic.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    urls = {returning_old: make_database() for returning_old in WAYS.values()}
    results: dict[bool, list[Any]] = {returning_old: [] for returning_old in WAYS.values()}
    for round_number in range(2):
        if round_number:
            patients = sorted(clinic.patients.records)
            clinic.book(patients[0], clinic.now - timedelta(days=2))
            clinic.cancel_appointment(sorted(clinic.individual_appointments.records)[3])
            clinic.archive_patient(patients[5])
            clinic.edit_patient(patients[7], first_name="Edited", email="edited@example.com")
            clinic.advance_clock(timedelta(minutes=5))
        for returning_old, url in urls.items():
            with psycopg.connect(url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
                if not round_number:
                    setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
                with upsert_with(returning_old):
                    ran = sync({**env, "DATABASE_URL": url}, "surf-rehab", "--as-of", as_of)
                assert ran.returncode == 0, ran.stderr
                log = conn.execute("SELECT stats FROM sync_log ORDER BY id DESC LIMIT 1").fetchone()
                assert log is not None
                # A first sync's window reads and backfill run at once: which of them reads a record first (an
                # insert) and which again (unchanged) varies from run to run; only the inserts are fixed.
                kinds = ("inserted", "updated", "unchanged") if round_number else ("inserted",)
                streams = {
                    name: {key: counts[key] for key in kinds} for name, counts in log["stats"]["streams"].items()
                }
                results[returning_old].append((snapshot(conn, "surf-rehab"), streams, log["stats"]["active_patients"]))
    assert results[True] == results[False]
    second = results[True][1][1]
    assert second["patients"]["updated"] and second["individual_appointments"]["inserted"]  # it saw the changes

"""A new clinic added to a database that already holds a big one: its first recompute and contact matching must not
crawl.

PostgreSQL's statistics are gathered now and then; between two gatherings, a clinic that had no rows when they were
taken is estimated at about one row whatever it holds. A bench run caught the first recompute of such a clinic
choosing nested loops over its patients, appointments and group classes: minutes instead of milliseconds (a first
sync's window pass then took 132 s instead of 4). Rows are inserted with SQL here (no emulator) to keep the test fast;
the timeouts turn that stall into a failure instead of a hang.
"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from cliniko_sync import db
from cliniko_sync.orgs import add_organization
from cliniko_sync.sync.active import recompute_active_patients, refresh_statistics
from cliniko_sync.sync.contacts import match_contacts

AS_OF = datetime(2026, 11, 1, tzinfo=UTC)
TABLES = (
    "cliniko_patients", "cliniko_individual_appointments", "cliniko_group_appointments", "cliniko_attendees", "contacts"
)  # fmt: skip


def _clinic(conn: psycopg.Connection, org: str, patients: int, *, appointments: bool = True) -> None:
    """`patients` patients with an email each, five individual appointments each (one a week before AS_OF, four a
    year before), and one group class for every five patients, each attended by three patients a month before."""
    add_organization(conn, org, name=org)  # type: ignore[arg-type]
    conn.execute(
        "INSERT INTO cliniko_patients (organization_id, id, name, email, updated_at, raw) "
        "SELECT %(org)s, p::text, 'Patient ' || p, 'patient' || p || '@example.test', now(), '{}' "
        "FROM generate_series(1, %(n)s) p",
        {"org": org, "n": patients},
    )
    if not appointments:
        return
    conn.execute(
        "INSERT INTO cliniko_individual_appointments (organization_id, id, patient_id, starts_at, updated_at, raw) "
        "SELECT %(org)s, (p * 10 + k)::text, p::text, "
        "       %(as_of)s - CASE WHEN k = 0 THEN interval '7 days' ELSE interval '365 days' END, now(), '{}' "
        "FROM generate_series(1, %(n)s) p, generate_series(0, 4) k",
        {"org": org, "n": patients, "as_of": AS_OF},
    )
    conn.execute(
        "INSERT INTO cliniko_group_appointments (organization_id, id, starts_at, updated_at, raw) "
        "SELECT %(org)s, g::text, %(as_of)s - interval '30 days', now(), '{}' FROM generate_series(1, %(n)s / 5) g",
        {"org": org, "n": patients, "as_of": AS_OF},
    )
    conn.execute(
        "INSERT INTO cliniko_attendees (organization_id, id, patient_id, group_appointment_id, updated_at, raw) "
        "SELECT %(org)s, (g * 10 + k)::text, ((g * 3 + k) %% %(n)s + 1)::text, g::text, now(), '{}' "
        "FROM generate_series(1, %(n)s / 5) g, generate_series(0, 2) k",
        {"org": org, "n": patients},
    )


def test_the_first_recompute_of_a_clinic_the_statistics_have_not_seen_is_not_a_nested_loop(
    conn: psycopg.Connection, database_url: str
) -> None:
    for table in TABLES:  # no statistics gathered behind the test's back
        conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    _clinic(conn, "big-clinic", 3_000)
    for table in TABLES:
        conn.execute(f"ANALYZE {table}")
    _clinic(conn, "new-clinic", 3_000)  # after the statistics: they say it has no rows

    with db.connect(database_url, autocommit=True) as work:
        work.execute("SET statement_timeout = '60s'")  # nested loops here run for many minutes; the fix, < 1 s
        # As the sync does before its recompute: the tables that do not know this clinic are analyzed.
        analyzed = refresh_statistics(work, "new-clinic")
        with work.transaction():
            counts = recompute_active_patients(work, "new-clinic", as_of=AS_OF, window_days=45, include_upcoming=False)

    assert {"cliniko_patients", "cliniko_individual_appointments", "cliniko_attendees"} <= set(analyzed)
    assert counts.active == 3_000  # everyone had an appointment a week ago
    row = conn.execute(
        "SELECT count(*) AS n, sum(total_appointment_count) AS total FROM active_patients "
        "WHERE organization_id = 'new-clinic'"
    ).fetchone()
    assert row is not None
    assert (row["n"], row["total"]) == (3_000, 3_000 * 5 + 600 * 3)


def test_the_first_contact_matching_of_a_clinic_the_statistics_have_not_seen_is_not_a_nested_loop(
    conn: psycopg.Connection, database_url: str
) -> None:
    for table in TABLES:
        conn.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    _clinic(conn, "big-clinic", 12_000, appointments=False)
    with db.connect(database_url, autocommit=True) as work, work.transaction():
        match_contacts(work, "big-clinic")
    for table in TABLES:
        conn.execute(f"ANALYZE {table}")
    _clinic(conn, "new-clinic", 12_000, appointments=False)
    conn.execute(  # the clinic's own contact list knows half its patients by email
        "INSERT INTO contacts (organization_id, name, email, created_by) "
        "SELECT 'new-clinic', 'Known ' || p, 'patient' || p || '@example.test', 'crm' FROM generate_series(1, 6000) p"
    )

    with db.connect(database_url, autocommit=True) as work:
        work.execute("SET statement_timeout = '30s'")  # nested loops here run for minutes; the fix, about a second
        with work.transaction():
            counts = match_contacts(work, "new-clinic")

    assert (counts.linked_by_email, counts.created) == (6_000, 6_000)
    row = conn.execute(
        "SELECT count(*) AS linked, count(DISTINCT cliniko_patient_id) AS patients FROM contacts "
        "WHERE organization_id = 'new-clinic' AND cliniko_patient_id IS NOT NULL"
    ).fetchone()
    assert row is not None
    assert (row["linked"], row["patients"]) == (12_000, 12_000)

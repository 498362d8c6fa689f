"""Recomputing an organization's active_patients from the mirror, set-based, in the caller's transaction.

Incremental: only the patients who can have changed are recomputed, with exactly the result of recomputing everyone.
Those are the dirty patients (the mirror's upserts record them with each page, sql/queries/mirror_dirty_*.sql) and
the patients with an appointment that crossed a window edge since the last recompute. Everyone is recomputed when
asked (--full), when the window settings changed, when a reference list changed, or when there was no recompute yet.
Recomputing everyone reads the appointments in the window (by the starts_at indexes) to find who can be active,
then only those patients' appointments, by patient: never every appointment of the organization.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg import sql

from cliniko_sync.db import DictConnection, query


@dataclass
class ActiveCounts:
    active: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0


@dataclass(frozen=True)
class RecomputeScope:
    """Whom this transaction recomputes: everyone, or the patients in the temp table recompute_patients (written:
    the dirty ones, whose contacts are matched too; crossing: a window edge moved over one of their appointments)."""

    everything: bool
    written: int = 0
    crossing: int = 0
    moved: bool = False  # as_of differs from the last recompute's: every active row's window bounds change

    @contextmanager
    def planned(self, conn: DictConnection) -> Iterator[None]:
        """Contact matching over everyone joins whole-organization sets, which must hash or merge: statistics taken
        while the organization had no rows yet (a new clinic in a database that holds others) put it at about one
        row, and the planner's nested loops over its patients and contacts then run for minutes instead of
        milliseconds. A few patients (the incremental scope) are best probed by index, as planned."""
        if not self.everything:
            yield
            return
        conn.execute("SET LOCAL enable_nestloop = off")
        yield  # on an error the transaction rolls back, and the setting with it
        conn.execute("SET LOCAL enable_nestloop = DEFAULT")

    def appointments(self, patients: str, *, in_window: bool = False) -> sql.Composable:
        """The qualifying appointments (as q) of the patients in the temp table `patients` (patient_id column), each
        patient's by index, through LATERAL: a plain join or IN does not reach into the view's UNION ALL, and hashes
        every appointment of the organization. OFFSET 0 keeps the subquery a subquery: pulled up into a join, its
        patient condition became a join filter or a hash over the whole organization (130 ms for two patients at S,
        whatever the statistics said). The same fence keeps outer conditions out, so `in_window` (from the window's
        start on) is stated inside, where it narrows each patient's index range."""
        since = sql.SQL(" AND v.starts_at >= %(window_from)s" if in_window else "")
        return sql.SQL(
            "{} n CROSS JOIN LATERAL (SELECT * FROM qualifying_appointments v "
            "WHERE v.organization_id = %(org)s AND v.patient_id = n.patient_id{} OFFSET 0) q"
        ).format(sql.Identifier(patients), since)

    def patients(self, column: str) -> sql.Composable:
        """A condition on `column` (a Cliniko patient id) that holds for the patients in scope."""
        if self.everything:
            return sql.SQL("TRUE")
        return sql.SQL("{} IN (SELECT patient_id FROM recompute_patients)").format(sql.SQL(column))

    def written_patients(self, column: str) -> sql.Composable:
        """A condition on `column` that holds for the patients whose records or appointments were written."""
        if self.everything:
            return sql.SQL("TRUE")
        return sql.SQL("{} IN (SELECT patient_id FROM recompute_patients WHERE written)").format(sql.SQL(column))


def take_changed_patients(
    conn: DictConnection,
    organization_id: str,
    *,
    as_of: datetime,
    window_days: int,
    include_upcoming: bool,
    everything: bool = False,
) -> RecomputeScope:
    """Drain the dirty patients into this transaction's scope and decide whether everyone must be recomputed."""
    state = conn.execute(
        "SELECT as_of, window_days, include_upcoming, recompute_all FROM active_recompute_state "
        "WHERE organization_id = %s FOR UPDATE",
        (organization_id,),
    ).fetchone()
    everything = (
        everything
        or state is None
        or state["as_of"] is None
        or state["recompute_all"]
        or (state["window_days"], state["include_upcoming"]) != (window_days, include_upcoming)
    )
    params = {"org": organization_id}
    if everything:
        conn.execute("DELETE FROM active_dirty_patients WHERE organization_id = %(org)s", params)
        return RecomputeScope(everything=True)
    _create_scope_table(conn)
    written = conn.execute(query("active_scope_drain"), params).rowcount
    crossing = 0
    assert state is not None
    if state["as_of"] != as_of:
        near_low, near_high = sorted((state["as_of"], as_of))
        window = timedelta(days=window_days)
        edges = {
            "near_low": near_low,
            "near_high": near_high,
            "far_low": near_low - window,
            "far_high": near_high - window,
        }
        crossing = conn.execute(query("active_scope_crossing"), {**params, **edges}).rowcount
    conn.execute("ANALYZE recompute_patients")  # a few rows: let the planner probe by patient, not scan
    return RecomputeScope(everything=False, written=written, crossing=crossing, moved=state["as_of"] != as_of)


RECOMPUTE_TABLES = (
    "cliniko_patients", "cliniko_individual_appointments", "cliniko_group_appointments", "cliniko_attendees",
    "contacts", "active_patients",
)  # fmt: skip


ORGANIZATION_ROWS_PROBED = 1_000  # an organization with this many rows must not be planned as "about none"
ORGANIZATION_ROWS_PROBE_CAP = 100_000  # beyond this the probe would cost more than the plan it protects


def refresh_statistics(conn: DictConnection, organization_id: str) -> list[str]:
    """ANALYZE the tables the recompute reads when their statistics are missing or stale (after a first sync or a
    big backfill, before autovacuum comes round), or do not know this organization: the recompute reads each
    patient's rows by index, and a planner that believes a table (or the organization's part of it) empty probes
    it with a scan per patient (20 minutes instead of a second at L). Statistics are table-wide, so a new clinic in
    a database that holds big ones stays "about none" until the tenth of the table autovacuum waits for has changed.
    Nothing to do on a quiet incremental run. Outside the recompute's transaction: its lock is then held only
    briefly."""
    # This connection wrote the run's pages; its change counts reach the statistics only when it flushes them (at most
    # once a second, or when it ends). Flushed now, before the counters are read and ANALYZE resets them: otherwise
    # counts flushed after the ANALYZE would make the next quiet run see the table as changed, and analyze it again.
    conn.execute("SELECT pg_stat_force_next_flush()")
    stale = {row["name"] for row in conn.execute(query("statistics_stale"), {"tables": list(RECOMPUTE_TABLES)})}
    for name in RECOMPUTE_TABLES:
        if name not in stale and _unknown_organization(conn, name, organization_id):
            stale.add(name)
    for name in sorted(stale):
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(name)))
    return sorted(stale)


def _unknown_organization(conn: DictConnection, table: str, organization_id: str) -> bool:
    """The planner estimates this organization's rows at under a tenth of what it has: counted only up to ten times
    the estimate (an index range, never the table), and not at all once that bound passes the cap. Deterministic,
    unlike the table-wide change counters, which other connections report to the statistics a moment late."""
    rows_of = sql.SQL("SELECT 1 FROM {} WHERE organization_id = %(org)s").format(sql.Identifier(table))
    plan = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + rows_of, {"org": organization_id}).fetchone()
    estimate = float(plan["QUERY PLAN"][0]["Plan"]["Plan Rows"]) if plan else 0.0
    enough = max(ORGANIZATION_ROWS_PROBED, int(estimate * 10) + 1)
    if enough > ORGANIZATION_ROWS_PROBE_CAP:
        return False
    counted = sql.SQL("SELECT count(*) AS rows FROM ({} LIMIT %(enough)s) t").format(rows_of)
    row = conn.execute(counted, {"org": organization_id, "enough": enough}).fetchone()
    rows = int(row["rows"]) if row else 0
    return rows >= ORGANIZATION_ROWS_PROBED and rows > estimate * 10


def _create_scope_table(conn: DictConnection) -> None:
    conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS recompute_patients (patient_id text PRIMARY KEY, written boolean NOT NULL)"
        " ON COMMIT DROP"
    )


def recompute_active_patients(
    conn: DictConnection,
    organization_id: str,
    *,
    as_of: datetime,
    window_days: int,
    include_upcoming: bool,
    scope: RecomputeScope | None = None,
) -> ActiveCounts:
    """Make active_patients hold exactly the patients active as of `as_of`; the caller commits.

    `scope` comes from take_changed_patients in the same transaction; without one, everyone is recomputed.
    """
    if scope is None:
        scope = take_changed_patients(
            conn, organization_id, as_of=as_of, window_days=window_days, include_upcoming=include_upcoming,
            everything=True,
        )  # fmt: skip
    params = {
        "org": organization_id,
        "as_of": as_of,
        "window_from": as_of - timedelta(days=window_days),
        "include_upcoming": include_upcoming,
        "window_days": window_days,
    }
    if scope.everything:
        # Everyone: the candidates come from the window (active_scope_window.sql); the rest of the organization
        # cannot be active and is only removed (active_remove with scope TRUE).
        _create_scope_table(conn)
        conn.execute(query("active_scope_window"), params)
        conn.execute("ANALYZE recompute_patients")
    conn.execute("SET LOCAL work_mem = '128MB'")  # the per-patient aggregate stays in memory
    conn.execute(sql.SQL(query("active_counts")).format(appointments=scope.appointments("recompute_patients")), params)
    conn.execute(
        sql.SQL(query("active_details")).format(appointments=scope.appointments("active_now", in_window=True)), params
    )
    inserted = [row["inserted"] for row in conn.execute(query("active_apply"), params).fetchall()]
    remove = sql.SQL(query("active_remove")).format(scope=scope.patients("ap.cliniko_patient_id"))
    removed = conn.execute(remove, params).rowcount
    if scope.moved:
        # Only when as_of moved: otherwise every row already carries this recompute's bounds (reading them all to
        # find none to change cost more than the rest of a no-change recompute at L).
        conn.execute(query("active_search_dates"), params)
    conn.execute(query("active_state_save"), params)
    conn.execute("DROP TABLE active_now, active_details, recompute_patients")
    added = sum(1 for flag in inserted if flag)
    # active_apply returns only the rows it wrote (unchanged ones are left alone): count the table.
    active = _count_active(conn, organization_id)
    return ActiveCounts(active=active, added=added, updated=len(inserted) - added, removed=removed)


def _count_active(conn: DictConnection, organization_id: str) -> int:
    row = conn.execute(
        "SELECT count(*) AS active FROM active_patients WHERE organization_id = %s", (organization_id,)
    ).fetchone()
    return row["active"] if row else 0

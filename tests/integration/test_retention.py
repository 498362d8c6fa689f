"""Retention (issue 23): `db prune` deletes old sync_log runs and long-removed mirror rows in batches, keeps every run
that status and `sync --due` read, and never changes active patients, contacts or what a later sync does."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from emulator_fixtures import EMULATOR_API_KEY
from sync_helpers import (  # noqa: F401 (fixtures)
    clean_run_snapshot,
    in_process_env,
    setup_org,
    snapshot,
    sync,
    sync_env,
)

from cliniko_sync import db, retention
from cliniko_sync.orgs import add_organization, update_organization
from cliniko_sync.sync.run_log import SyncLocks
from cliniko_sync.sync.schedule import Claimer

DAY = 86400


def add_run(conn: Any, org: str, status: str, days_ago: float, mode: str | None = "incremental") -> None:
    conn.execute(
        "INSERT INTO sync_log (organization_id, status, mode, started_at, heartbeat_at, finished_at, as_of,"
        " window_days, error_class, error_message)"
        " SELECT %(org)s, %(status)s, %(mode)s, t, t, CASE WHEN %(status)s <> 'running' THEN t + interval '30 s' END,"
        " t, 45, e, e FROM (SELECT now() - %(ago)s * interval '1 second' AS t,"
        " CASE WHEN %(status)s <> 'success' THEN 'Error ' || %(status)s END AS e) AS s",
        {"org": org, "status": status, "mode": None if status == "skipped" else mode, "ago": days_ago * DAY},
    )
    if status == "skipped":  # counted as sync_log_skipped.sql counts it
        conn.execute("UPDATE organizations SET skipped_runs = skipped_runs + 1 WHERE id = %s", (org,))


@pytest.fixture
def history(conn: Any) -> Any:
    """Three organizations, 200 days of runs: one still synced daily (its latest full run and skipped run are old),
    one disabled 100 days ago, one whose last process died mid-run 100 days ago."""
    for org in ("busy", "quiet", "dead"):
        add_organization(conn, org, name=org.title())
    update_organization(conn, "quiet", enabled=False)
    for day in range(200, 0, -1):
        kind = {3: "failed", 5: "partial", 7: "skipped", 9: "abandoned"}.get(day % 10, "success")
        full = day % 30 == 0 and day > 100
        add_run(conn, "busy", "success" if full else kind, day + 0.5, "full" if full else "incremental")
        if day > 100:
            add_run(conn, "quiet", kind, day + 0.25, "full" if day % 30 == 0 else "incremental")
    add_run(conn, "busy", "skipped", 96)
    add_run(conn, "dead", "success", 150, "full")
    add_run(conn, "dead", "running", 100)
    return conn


def readings(cli: Any, url: str) -> dict[str, Any]:
    """What status and --due show: every figure of status --format json (less the ages and checked_at, which move
    with the clock between two readings: the times the ages count from are compared), the Prometheus text, the due
    list."""
    status = [
        {key: value for key, value in row.items() if not key.endswith("_age_seconds") and key != "checked_at"}
        for row in json.loads(cli("status", "--format", "json").stdout)
    ]
    prometheus = cli("status", "--format", "prometheus")
    with SyncLocks(url) as locks:
        due = Claimer(locks).due(exclude=[])
    return {"status": status, "prometheus": prometheus.stdout, "due": due}


def kept_by_hand(runs: list[dict[str, Any]], cutoff: Any) -> set[int]:
    """The issue's rule, applied in Python: every run since the cutoff, every running one, and per organization its
    latest run, success, failure, failed run, full run, full success, finished run and skipped run."""
    kept = {r["id"] for r in runs if r["started_at"] >= cutoff or r["status"] == "running"}
    latest = {
        "run": lambda r: r["status"] != "skipped",
        "success": lambda r: r["status"] == "success",
        "failure": lambda r: r["status"] in ("failed", "partial", "abandoned"),
        "failed": lambda r: r["status"] == "failed",
        "full": lambda r: r["mode"] == "full",
        "full success": lambda r: r["mode"] == "full" and r["status"] == "success",
        "finished": lambda r: r["status"] in ("success", "failed"),
        "skipped": lambda r: r["status"] == "skipped",
    }
    for org in {r["organization_id"] for r in runs}:
        mine = [r for r in runs if r["organization_id"] == org]
        for wanted in latest.values():
            matching = [r for r in mine if wanted(r)]
            if matching:
                kept.add(max(matching, key=lambda r: (r["started_at"], r["id"]))["id"])
    return kept


def test_prune_keeps_what_status_and_due_read(database_url: str, history: Any, cli: Any) -> None:
    runs = history.execute("SELECT id, organization_id, status, mode, started_at FROM sync_log").fetchall()
    cutoff = history.execute("SELECT now() - interval '90 days' AS t").fetchone()["t"]
    before = readings(cli, database_url)
    assert before["status"][0]["skipped_runs"] > 1

    pruned = cli("db", "prune", "--format", "json")

    assert pruned.returncode == 0, pruned.stderr
    result = json.loads(pruned.stdout)
    left = {r["id"] for r in history.execute("SELECT id FROM sync_log").fetchall()}
    assert left == kept_by_hand(runs, cutoff)
    assert result["sync_log_deleted"] == len(runs) - len(left) > 100
    assert result["complete"] is True
    assert result["keep_sync_log_seconds"] == 90 * DAY
    assert readings(cli, database_url) == before
    again = json.loads(cli("db", "prune", "--format", "json").stdout)
    assert again["sync_log_deleted"] == 0


def test_prune_works_in_batches_and_stops_at_its_budget(database_url: str, history: Any, cli: Any) -> None:
    before = readings(cli, database_url)
    with psycopg.connect(database_url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        first = retention.prune(conn, batch=10, max_batches=2)
        assert (first.sync_log, first.complete) == (20, False)
        rest = retention.prune(conn, batch=10)
    assert rest.complete and rest.sync_log > 100
    assert readings(cli, database_url) == before


def test_periods_are_stored_and_bad_ones_refused(cli: Any, conn: Any) -> None:
    for option, value in (("--keep-sync-log", "-5d"), ("--keep-removed", "0d"), ("--keep-sync-log", "3 weeks"),
                          ("--keep-removed", "1y"), ("--keep-removed", "")):  # fmt: skip
        refused = cli("db", "prune", "--keep-sync-log", "1d", option, value)
        assert refused.returncode == 2, (option, value)
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr, refused.stderr
    row = conn.execute("SELECT keep_sync_log, keep_removed FROM retention_settings").fetchone()
    assert (row["keep_sync_log"], row["keep_removed"]) == (timedelta(days=90), timedelta(days=30))

    stored = cli("db", "prune", "--keep-sync-log", "30d", "--keep-removed", "12h", "--format", "json")
    assert stored.returncode == 0, stored.stderr
    later = json.loads(cli("db", "prune", "--format", "json").stdout)
    assert (later["keep_sync_log_seconds"], later["keep_removed_seconds"]) == (30 * DAY, 12 * 3600)


def without_removed(state: dict[str, Any]) -> dict[str, Any]:
    """A snapshot less the mirror rows marked removed (a fresh database never holds them)."""
    return {table: [r for r in rows if not r.get("removed")] for table, rows in state.items()}


def age_removed_rows(conn: Any, org: str, days: int) -> None:
    for table in retention.PRUNED_MIRRORS:
        conn.execute(
            f"UPDATE {table} SET removed_at = removed_at - %s * interval '1 day'"
            " WHERE organization_id = %s AND removed_at IS NOT NULL",
            (days, org),
        )


@pytest.mark.usefixtures("sync_environment")
def test_removed_rows_go_and_nothing_a_sync_decides_changes(
    conn: Any, database_url: str, emulator: Any, clinic: Any, make_database: Any, env: dict[str, str]
) -> None:
    env = {**env, "DATABASE_URL": database_url}
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    as_of = clinic.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert sync(env, org, "--as-of", as_of).returncode == 0
    patients = sorted(clinic.patients.records)
    for patient_id in patients[:3]:
        clinic.delete_patient(patient_id)  # gone from Cliniko: the next full pass marks their rows removed
    assert sync(env, org, "--full", "--as-of", as_of).returncode == 0
    age_removed_rows(conn, org, 31)
    clinic.delete_patient(patients[3])
    assert sync(env, org, "--full", "--as-of", as_of).returncode == 0  # removed today: kept by the prune
    # A record a full pass missed that Cliniko shows again later: removed long ago, then seen again below.
    appointment = conn.execute(
        "UPDATE cliniko_individual_appointments SET removed_at = now() - interval '40 days'"
        " WHERE organization_id = %s AND id = (SELECT min(id) FROM cliniko_individual_appointments"
        "  WHERE organization_id = %s AND removed_at IS NULL) RETURNING id",
        (org, org),
    ).fetchone()["id"]
    before = snapshot(conn, org)

    pruned = json.loads(sync_cli_prune(env))

    assert pruned["cliniko_patients_deleted"] == 3 and pruned["cliniko_individual_appointments_deleted"] == 1
    after = snapshot(conn, org)
    assert after["active_patients"] == before["active_patients"]
    assert after["contacts"] == before["contacts"]
    assert {r["id"] for r in after["cliniko_patients"]} == {r["id"] for r in before["cliniko_patients"]} - {
        str(p) for p in patients[:3]
    }
    assert [r["id"] for r in after["cliniko_patients"] if r["removed"]] == [str(patients[3])]

    clinic.touch("individual_appointments", appointment)  # seen again: inserted afresh by an incremental run
    assert sync(env, org, "--as-of", as_of).returncode == 0
    clean = clean_run_snapshot(make_database, emulator.base_url, env, org, as_of)
    assert without_removed(snapshot(conn, org)) == clean

    clinic.delete_patient(patients[4])  # and a full pass still marks what it did not see
    assert sync(env, org, "--full", "--as-of", as_of).returncode == 0
    removed = conn.execute(
        "SELECT id FROM cliniko_patients WHERE organization_id = %s AND removed_at IS NOT NULL ORDER BY id", (org,)
    ).fetchall()
    assert sorted(r["id"] for r in removed) == sorted([str(patients[3]), str(patients[4])])
    assert without_removed(snapshot(conn, org)) == clean_run_snapshot(make_database, emulator.base_url, env, org, as_of)


def sync_cli_prune(env: dict[str, str]) -> str:
    from conftest import run_cli_in_process

    result = run_cli_in_process(["db", "prune", "--format", "json"], env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_skipped_runs_counted_before_012_are_carried_over(empty_database_url: str, monkeypatch: Any) -> None:
    """012 stores the skipped-run count: an installation's skipped rows and 010's count of pruned ones, added up."""
    before_012 = tuple(m for m in db.migrations() if m.name < "012")
    monkeypatch.setattr(db, "migrations", lambda: before_012)
    db.upgrade(empty_database_url)
    with psycopg.connect(empty_database_url, autocommit=True, row_factory=psycopg.rows.dict_row) as conn:
        for org in ("busy", "never"):
            add_organization(conn, org, name=org.title())
        conn.execute("UPDATE organizations SET pruned_skipped_runs = 40 WHERE id = 'busy'")
        for days_ago in (3, 2, 1):
            conn.execute(
                "INSERT INTO sync_log (organization_id, status, started_at, as_of, window_days)"
                " VALUES ('busy', 'skipped', now() - %s * interval '1 day', now(), 45)",
                (days_ago,),
            )
        monkeypatch.undo()
        assert "012_skipped_runs.sql" in db.upgrade(empty_database_url)
        counts = conn.execute("SELECT id, skipped_runs FROM organizations ORDER BY id").fetchall()
    assert [(row["id"], row["skipped_runs"]) for row in counts] == [("busy", 43), ("never", 0)]

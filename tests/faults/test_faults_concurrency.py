"""Overlapping runs: five syncs of one organization at once, and `--all --jobs 4` over ten organizations with one
broken."""

from __future__ import annotations

import json
from typing import Any

import psycopg
from emulator_fixtures import EMULATOR_API_KEY
from fault_helpers import (  # noqa: F401 (fixtures)
    CLINIC_SEED,
    ScenarioResult,
    clean_run_snapshot,
    fault_clinic,
    fault_report_fixture,
    in_process_env,
    iso,
    lost_and_duplicated,
    start_sync,
    sync,
    sync_env,
)
from sync_helpers import setup_org, snapshot

from cliniko_sync.emulator import generate_clinic

ORG = "surf-rehab"


def test_five_concurrent_syncs_of_one_organization(conn: psycopg.Connection, env: dict[str, str], make_emulator: Any,
                                                   clinic: Any, make_database: Any,
                                                   fault_report: Any) -> None:  # fmt: skip
    slow = make_emulator(latency_ms=30)
    setup_org(conn, slow.base_url, EMULATOR_API_KEY, ORG)
    as_of = iso(clinic.now)
    processes = [start_sync(env, ORG, "--as-of", as_of) for _ in range(5)]
    outcomes = [(process.wait(timeout=300), process.stderr.read() if process.stderr else "") for process in processes]
    codes = sorted(code for code, _ in outcomes)
    assert set(codes) <= {0, 75}, outcomes
    assert 0 in codes
    for code, stderr in outcomes:
        if code == 75:
            assert "another sync" in stderr and "Traceback" not in stderr
    runs = conn.execute(
        "SELECT status, started_at, finished_at FROM sync_log WHERE organization_id = %s AND status <> 'skipped' "
        "ORDER BY started_at",
        (ORG,),
    ).fetchall()
    assert [run["status"] for run in runs] == ["success"] * codes.count(0)
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert earlier["finished_at"] <= later["started_at"]  # exactly one did the work at a time
    skipped = conn.execute(
        "SELECT count(*) AS n FROM sync_log WHERE organization_id = %s AND status = 'skipped'", (ORG,)
    ).fetchone()
    assert skipped is not None and skipped["n"] == codes.count(75)
    lost, duplicated = lost_and_duplicated(conn, clinic, ORG, clinic.now)
    slow.latency_ms = 0  # the latency only kept the five runs overlapping; the clean run to compare with needs none
    clean = clean_run_snapshot(make_database, slow.base_url, env, ORG, as_of)
    exits = ", ".join(f"{codes.count(code)} × exit {code}" for code in sorted(set(codes)))
    fault_report(ScenarioResult("5 concurrent syncs of one organization", 5, lost, duplicated,
                                snapshot(conn, ORG) == clean, exits))  # fmt: skip


def test_all_jobs_4_over_ten_organizations_with_one_broken(conn: psycopg.Connection, env: dict[str, str],
                                                          make_emulator: Any, make_database: Any,
                                                          fault_report: Any) -> None:  # fmt: skip
    # Ten organizations and four jobs are the point here, not the clinic's size: a small one keeps it quick.
    clinic = generate_clinic(patients=60, appointments=600, seed=CLINIC_SEED)
    emulator = make_emulator(clinic)
    organizations = [f"clinic-{n:02d}" for n in range(10)]
    for org in organizations:
        setup_org(conn, emulator.base_url, EMULATOR_API_KEY if org != "clinic-03" else "revoked-key-au1", org)
    as_of = iso(clinic.now)
    result = sync(env, "--all", "--jobs", "4", "--as-of", as_of, "--format", "json")
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    summaries = {s["organization_id"]: s for s in json.loads(result.stdout)}  # --all --format json: one array
    assert {org: s["exit_code"] for org, s in summaries.items()} == {
        org: 77 if org == "clinic-03" else 0 for org in organizations
    }
    assert "clinic-03" in result.stderr
    clean = clean_run_snapshot(make_database, emulator.base_url, env, "clinic-00", as_of)
    lost = duplicated = 0
    equal = True
    for org in organizations:
        if org == "clinic-03":
            continue
        org_lost, org_duplicated = lost_and_duplicated(conn, clinic, org, clinic.now)
        lost, duplicated = lost + org_lost, duplicated + org_duplicated
        equal = equal and snapshot(conn, org) == clean  # snapshots carry no organization id
    empty = conn.execute("SELECT count(*) AS n FROM cliniko_patients WHERE organization_id = 'clinic-03'").fetchone()
    assert empty is not None and empty["n"] == 0
    fault_report(ScenarioResult("--all --jobs 4, ten organizations, one with a rejected key", 1, lost, duplicated,
                                equal, "exit 3, nine succeeded, the broken one exited 77"))  # fmt: skip

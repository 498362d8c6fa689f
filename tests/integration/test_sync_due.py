"""`cliniko-sync sync --due` as cron runs it on many hosts: concurrent processes claiming due organizations, a killed
process whose organizations the others pick up, sync_interval and full_sync_interval, exit codes and JSON output."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest
from conftest import run_cli_in_process
from emulator_fixtures import EMULATOR_API_KEY
from sync_helpers import SYNC_ENV, setup_org

from cliniko_sync.emulator import generate_clinic
from cliniko_sync.sync.pipeline import LOCK_NAMESPACE
from cliniko_sync.sync.schedule import CLAIM_NAMESPACE

ORGS = [f"clinic-{n:02d}" for n in range(30)]


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    return {**cli_env, **SYNC_ENV, "CLINIKO_SYNC_HTTP_TIMEOUT": "5"}


@pytest.fixture(autouse=True)
def in_process_env(monkeypatch: pytest.MonkeyPatch, cli_env: dict[str, str]) -> None:
    for name in ("CREDENTIALS_ENCRYPTION_KEY", "CLINIKO_SYNC_CONTACT_EMAIL"):
        monkeypatch.setenv(name, cli_env[name])


@pytest.fixture
def small_emulator(make_emulator: Any) -> Any:
    """One emulator serving a small clinic; every organization of these tests uses it with the same key."""
    return make_emulator(generate_clinic(patients=12, seed=5))


def add_orgs(conn: psycopg.Connection, base_url: str, orgs: list[str]) -> None:
    for org in orgs:
        setup_org(conn, base_url, EMULATOR_API_KEY, org)


def start_due(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "cliniko_sync", "sync", "--due", "--format", "json", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def finish(process: subprocess.Popen[str]) -> tuple[int, list[dict[str, Any]], str]:
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, json.loads(stdout), stderr


def due(env: dict[str, str], *args: str) -> tuple[int, list[dict[str, Any]], str]:
    """`sync --due` in this process, for what a run decides (what is due, which mode), not how processes share."""
    result = run_cli_in_process(["sync", "--due", "--format", "json", *args], env)
    return result.returncode, json.loads(result.stdout), result.stderr


def runs(conn: psycopg.Connection) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT organization_id, status, mode, started_at, finished_at, pid FROM sync_log ORDER BY organization_id, id"
    ).fetchall()


def assert_never_overlapping(rows: list[dict[str, Any]]) -> None:
    """No two runs of one organization overlap: each starts after the previous one finished."""
    by_org: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_org.setdefault(row["organization_id"], []).append(row)
    for org, org_runs in by_org.items():
        for earlier, later in zip(org_runs, org_runs[1:], strict=False):
            assert earlier["finished_at"] is not None, (org, earlier)
            assert later["started_at"] >= earlier["finished_at"], (org, earlier, later)


def time_passes(conn: psycopg.Connection, interval: str) -> None:
    """Move every recorded run back in time, as if `interval` had passed since."""
    conn.execute(
        "UPDATE sync_log SET started_at = started_at - %s::interval, finished_at = finished_at - %s::interval,"
        " heartbeat_at = heartbeat_at - %s::interval",
        (interval, interval, interval),
    )


def test_three_processes_sync_each_due_organization_once_per_interval(
    conn: psycopg.Connection, env: dict[str, str], small_emulator: Any
) -> None:
    add_orgs(conn, small_emulator.base_url, ORGS)
    processes = [start_due(env, "--jobs", "2") for _ in range(3)]
    outcomes = [finish(p) for p in processes]
    for code, _, stderr in outcomes:
        assert code == 0, stderr
    synced = [row["organization_id"] for _, results, _ in outcomes for row in results]
    assert sorted(synced) == ORGS  # each organization by exactly one process
    assert all(row["status"] == "success" and row["mode"] == "full" for _, results, _ in outcomes for row in results)
    rows = runs(conn)
    assert [row["organization_id"] for row in rows] == ORGS
    assert {row["status"] for row in rows} == {"success"}  # no 'skipped': nobody tried a taken organization
    assert len({row["pid"] for row in rows}) >= 2  # the work was shared

    # Within the interval nothing is due: each later run says so with an empty array, and adds no row.
    again = [due(env) for _ in range(2)]
    assert [(code, results) for code, results, _ in again] == [(0, []), (0, [])]
    assert len(runs(conn)) == 30

    # 20 minutes later (sync_interval 15m): one incremental run each; a day later: one full run each.
    time_passes(conn, "20 minutes")
    outcomes = [finish(p) for p in [start_due(env, "--jobs", "2") for _ in range(3)]]
    assert sorted(r["organization_id"] for _, results, _ in outcomes for r in results) == ORGS
    assert {r["mode"] for _, results, _ in outcomes for r in results} == {"incremental"}
    time_passes(conn, "1 day")
    outcomes = [finish(p) for p in [start_due(env, "--jobs", "2") for _ in range(3)]]
    assert sorted(r["organization_id"] for _, results, _ in outcomes for r in results) == ORGS
    assert {r["mode"] for _, results, _ in outcomes for r in results} == {"full"}
    rows = runs(conn)
    assert len(rows) == 90 and {row["status"] for row in rows} == {"success"}
    assert_never_overlapping(rows)


def claims_held(conn: psycopg.Connection) -> int:
    row = conn.execute(
        "SELECT count(*) AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
        " WHERE l.locktype = 'advisory' AND l.classid IN (%s::oid, %s::oid) AND d.datname = current_database()",
        (CLAIM_NAMESPACE, LOCK_NAMESPACE),
    ).fetchone()
    assert row is not None
    return int(row["n"])


def test_a_killed_process_holds_nothing_and_the_others_take_its_organizations(
    conn: psycopg.Connection, env: dict[str, str], make_emulator: Any
) -> None:
    slow = make_emulator(generate_clinic(patients=12, seed=5), latency_ms=150)
    add_orgs(conn, slow.base_url, ORGS[:12])
    victim = start_due(env, "--jobs", "3")
    deadline = time.monotonic() + 60
    held: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(held) < 3:
        held = conn.execute("SELECT organization_id FROM sync_log WHERE status = 'running' AND pid = %s",
                            (victim.pid,)).fetchall()  # fmt: skip
        time.sleep(0.05)
    assert len(held) == 3, "the first process never had three syncs running"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    victim.stdout.close()  # type: ignore[union-attr]
    victim.stderr.close()  # type: ignore[union-attr]
    deadline = time.monotonic() + 30
    while claims_held(conn) and time.monotonic() < deadline:
        time.sleep(0.05)  # the server notices the closed connections and lets their locks go
    assert claims_held(conn) == 0
    slow.latency_ms = 0  # the latency only kept the victim's syncs running until the kill; the others need none
    outcomes = [finish(p) for p in [start_due(env, "--jobs", "2") for _ in range(2)]]
    for code, _, stderr in outcomes:
        assert code == 0, stderr
    taken_over = {row["organization_id"] for row in held}
    synced = [r["organization_id"] for _, results, _ in outcomes for r in results]
    assert taken_over <= set(synced) and len(synced) == len(set(synced))
    rows = runs(conn)
    for org in ORGS[:12]:
        statuses = [row["status"] for row in rows if row["organization_id"] == org]
        assert statuses[-1] == "success", (org, statuses)
        # The killed process's runs are closed as abandoned by whichever process took the organization over.
        assert statuses[:-1] == (["abandoned"] if org in taken_over else [])
    assert not [row for row in rows if row["status"] == "success" and row["pid"] == victim.pid and
                row["organization_id"] in taken_over]  # fmt: skip
    assert_never_overlapping(rows)


def test_an_organization_being_synced_by_another_command_is_left_alone(
    conn: psycopg.Connection, env: dict[str, str], small_emulator: Any, pg_admin_url: str
) -> None:
    add_orgs(conn, small_emulator.base_url, ORGS[:3])
    conn.execute("UPDATE organizations SET enabled = false WHERE id = %s", (ORGS[2],))
    with psycopg.connect(env["DATABASE_URL"], autocommit=True) as other:  # a `sync clinic-00` from a per-org cron line
        other.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (LOCK_NAMESPACE, ORGS[0]))
        code, results, stderr = due(env)
    assert code == 0, stderr
    assert [r["organization_id"] for r in results] == [ORGS[1]]  # not the locked one, not the disabled one
    assert [(row["organization_id"], row["status"]) for row in runs(conn)] == [(ORGS[1], "success")]
    code, results, _ = due(env)
    assert (code, [r["organization_id"] for r in results]) == (0, [ORGS[0]])


def test_a_failure_before_the_run_is_recorded_and_waits_its_interval(
    conn: psycopg.Connection, env: dict[str, str], small_emulator: Any
) -> None:
    add_orgs(conn, small_emulator.base_url, ORGS[:1])
    conn.execute(
        "INSERT INTO organizations (id, name, sync_interval) VALUES ('no-key', 'No key', '1 hour');"
        "INSERT INTO organization_services (organization_id, service) VALUES ('no-key', 'cliniko')"
    )
    code, results, stderr = due(env)
    assert code == 3
    by_org = {r["organization_id"]: r for r in results}
    assert by_org[ORGS[0]]["status"] == "success"
    assert (by_org["no-key"]["status"], by_org["no-key"]["exit_code"]) == ("failed", 78)
    assert "no-key: failed: no Cliniko API key stored for no-key" in stderr
    failed = conn.execute("SELECT status, error_class, error_message FROM sync_log WHERE organization_id = 'no-key'")
    row = failed.fetchone()
    assert row is not None and row["status"] == "failed" and row["error_class"] == "ConfigError"
    assert "credentials set no-key" in row["error_message"]
    # `status` shows the reason, and the next minute's process does not try again within the interval.
    assert run_cli_in_process(["status", "no-key", "--format", "json"], env).returncode == 0
    assert due(env)[:2] == (0, [])
    time_passes(conn, "61 minutes")
    code, results, _ = due(env)
    assert code == 3 and sorted(r["organization_id"] for r in results) == [ORGS[0], "no-key"]


def test_per_organization_intervals_decide_what_is_due_and_what_is_full(
    conn: psycopg.Connection, env: dict[str, str], small_emulator: Any
) -> None:
    add_orgs(conn, small_emulator.base_url, ORGS[:2])
    assert (
        run_cli_in_process(
            ["org", "set", ORGS[1], "--sync-interval", "2h", "--full-sync-interval", "30m"], env
        ).returncode
        == 0
    )
    assert due(env, "--jobs", "2")[0] == 0
    time_passes(conn, "40 minutes")  # clinic-00 (15m) is due, incremental; clinic-01 (2h) is not
    code, results, _ = due(env)
    assert (code, [(r["organization_id"], r["mode"]) for r in results]) == (0, [(ORGS[0], "incremental")])
    time_passes(conn, "2 hours")  # both due; clinic-01's full interval (30m) has passed, clinic-00's (1d) has not
    code, results, _ = due(env)
    assert sorted((r["organization_id"], r["mode"]) for r in results) == [(ORGS[0], "incremental"), (ORGS[1], "full")]
    code, results, _ = due(env, "--full")  # nothing due: --full does not make anything due
    assert (code, results) == (0, [])


def test_a_partial_run_is_due_again_at_once(conn: psycopg.Connection, env: dict[str, str], small_emulator: Any) -> None:
    add_orgs(conn, small_emulator.base_url, ORGS[:1])
    assert due(env)[0] == 0
    time_passes(conn, "20 minutes")
    conn.execute("UPDATE sync_log SET status = 'partial'")  # the last run was stopped by --max-runtime
    code, results, _ = due(env)
    assert (code, [r["organization_id"] for r in results]) == (0, [ORGS[0]])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sync", "--due", "clinic-00"], "give one organization id, or --all, or --due"),
        (["sync", "--all", "--due"], "give one organization id, or --all, or --due"),
        (["sync", "clinic-00", "--jobs", "2"], "--jobs only applies with --all or --due"),
        (["sync", "--due", "--max-runtime", "soon"], "invalid duration 'soon'"),
        (["sync", "--due", "--max-runtime", "0"], "--max-runtime must be at least 1 second"),
        (["org", "set", "clinic-00", "--sync-interval", "30s"], "--sync-interval must be from 1m to 30d"),
        (["org", "set", "clinic-00", "--full-sync-interval", "400d"], "--full-sync-interval must be from 1m to 365d"),
        (["org", "add", "x", "--name", "X", "--sync-interval", "15"], "invalid duration '15'"),
    ],
)
def test_usage_errors(conn: psycopg.Connection, env: dict[str, str], args: list[str], message: str) -> None:
    setup_org(conn, "http://127.0.0.1:9", EMULATOR_API_KEY, "clinic-00")
    result = run_cli_in_process(args, env)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert result.stdout == ""


def test_org_show_and_list_give_intervals_as_durations(conn: psycopg.Connection, env: dict[str, str]) -> None:
    added = run_cli_in_process(
        ["org", "add", "big-clinic", "--name", "Big", "--sync-interval", "90m", "--format", "json"], env
    )
    assert added.returncode == 0, added.stderr
    assert {k: json.loads(added.stdout)[k] for k in ("sync_interval", "full_sync_interval")} == {
        "sync_interval": "90m",
        "full_sync_interval": "1d",
    }
    changed = run_cli_in_process(["org", "set", "big-clinic", "--full-sync-interval", "168h", "--format", "json"], env)
    assert json.loads(changed.stdout)["full_sync_interval"] == "7d"
    listed = json.loads(run_cli_in_process(["org", "list", "--format", "json"], env).stdout)
    assert [(o["id"], o["sync_interval"], o["full_sync_interval"]) for o in listed] == [("big-clinic", "90m", "7d")]
    row = conn.execute("SELECT sync_interval, full_sync_interval FROM organizations").fetchone()
    assert row is not None and (row["sync_interval"].total_seconds(), row["full_sync_interval"].days) == (5400, 7)


def test_max_runtime_takes_a_duration_and_plain_seconds(
    conn: psycopg.Connection, env: dict[str, str], small_emulator: Any
) -> None:
    add_orgs(conn, small_emulator.base_url, ORGS[:1])
    for value in ("10m", "600"):
        result = run_cli_in_process(["sync", ORGS[0], "--max-runtime", value, "--format", "json"], env)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["status"] == "success"

"""PgBouncer in front of the database (issue 20). Session mode: everything works as on a direct connection, a second
sync of an organization gets 75, a killed sync's lock goes with its client. Transaction and statement modes lend a
client's server session to others between transactions, so a session-level advisory lock would not stay held:
`sync` refuses them with one line and exit 78, before taking any lock or writing anything. `db upgrade` holds
nothing beyond its one transaction: it works in transaction mode, and statement mode (no transaction blocks) refuses
it the same way."""

from __future__ import annotations

import signal
import time
from typing import Any

import psycopg
import pytest
from conftest import CliResult, run_cli_in_process
from emulator_fixtures import EMULATOR_API_KEY
from psycopg.rows import dict_row
from sync_helpers import SYNC_ENV, setup_org, start_sync

from cliniko_sync.emulator import generate_clinic

pytestmark = pytest.mark.usefixtures("sync_environment")

ORG = "surf-rehab"
REFUSAL = "use a session-mode pooler or a direct connection"


def cli(env: dict[str, str], url: str, *args: str) -> CliResult:
    return run_cli_in_process(list(args), {**env, **SYNC_ENV, "DATABASE_URL": url})


def wait_for_running(conn: psycopg.Connection) -> None:
    deadline = time.monotonic() + 60
    while not conn.execute("SELECT 1 FROM sync_log WHERE status = 'running'").fetchone():
        assert time.monotonic() < deadline, "the sync never started"
        time.sleep(0.05)


def advisory_locks_held(conn: psycopg.Connection) -> int:
    """Advisory locks held in this test's database (another test's syncs on a shared server hold their own)."""
    row = conn.execute(
        "SELECT count(*) AS n FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
        " WHERE l.locktype = 'advisory' AND d.datname = current_database()"
    ).fetchone()
    assert row is not None
    return int(row["n"])


def wait_for_the_lock_to_go(conn: psycopg.Connection) -> None:
    deadline = time.monotonic() + 30
    while advisory_locks_held(conn):
        assert time.monotonic() < deadline, "the killed sync's lock was never released"
        time.sleep(0.05)


def test_everything_works_through_pgbouncer_in_session_mode(
    make_pgbouncer: Any, empty_database_url: str, cli_env: dict[str, str], make_emulator: Any
) -> None:
    pooled = make_pgbouncer("session").url(empty_database_url)
    upgraded = cli(cli_env, pooled, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    slow = make_emulator(generate_clinic(patients=150, seed=11), latency_ms=40)
    with psycopg.connect(empty_database_url, autocommit=True, row_factory=dict_row) as conn:
        setup_org(conn, slow.base_url, EMULATOR_API_KEY, ORG)
        env = {**cli_env, **SYNC_ENV, "DATABASE_URL": pooled}

        # A sync holds the organization's lock through the pooler: a second one gets 75; kill -9 lets the lock go
        # (the pooler resets the server session its client left), and the next run resumes and closes the row.
        first = start_sync(env, ORG)
        wait_for_running(conn)
        second = cli(cli_env, pooled, "sync", ORG)
        assert second.returncode == 75, second.stderr
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
        wait_for_the_lock_to_go(conn)  # the pooler resets the server session in its own time, not at once
        slow.latency_ms = 0
        for _ in range(2):  # the resumed full sync, then an incremental one
            synced = cli(cli_env, pooled, "sync", ORG)
            assert synced.returncode == 0, synced.stderr
        rows = conn.execute("SELECT status, mode FROM sync_log ORDER BY id").fetchall()
        assert [row["status"] for row in rows] == ["abandoned", "skipped", "success", "success"]
        assert rows[-1]["mode"] == "incremental"
        assert conn.execute("SELECT count(*) AS n FROM active_patients").fetchone()["n"] > 0

    status = cli(cli_env, pooled, "status", "--format", "json")
    assert status.returncode == 0, status.stderr
    assert '"surf-rehab"' in status.stdout
    due = cli(cli_env, pooled, "sync", "--due", "--jobs", "2")
    assert due.returncode == 0, due.stderr


@pytest.mark.parametrize("mode", ["transaction", "statement"])
def test_a_pooler_that_does_not_keep_sessions_is_refused(
    mode: str, make_pgbouncer: Any, database_url: str, conn: psycopg.Connection, cli_env: dict[str, str],
    emulator: Any,
) -> None:  # fmt: skip
    setup_org(conn, emulator.base_url, EMULATOR_API_KEY, ORG)
    pooled = make_pgbouncer(mode).url(database_url)
    syncs = [["sync", ORG], ["sync", "--all", "--jobs", "3"], ["sync", "--due"]]
    for command in [["db", "upgrade"], *syncs] if mode == "statement" else syncs:
        result = cli(cli_env, pooled, *command)
        assert result.returncode == 78, (command, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and REFUSAL in lines[0], (command, result.stderr)
    # Refused before anything was locked or written.
    assert conn.execute("SELECT count(*) AS n FROM sync_log").fetchone() == {"n": 0}
    assert advisory_locks_held(conn) == 0


def test_db_upgrade_works_through_a_transaction_mode_pooler(
    make_pgbouncer: Any, empty_database_url: str, cli_env: dict[str, str]
) -> None:
    """db upgrade relies on nothing beyond its one transaction (its lock is the transaction's): a server session lent
    to others between transactions cannot hurt it, so it needs no session-mode pooler."""
    pooled = make_pgbouncer("transaction").url(empty_database_url)
    for said in ("applied", "nothing pending"):
        upgraded = cli(cli_env, pooled, "db", "upgrade")
        assert upgraded.returncode == 0 and said in upgraded.stdout, upgraded.stderr
    assert cli(cli_env, pooled, "db", "status").returncode == 0

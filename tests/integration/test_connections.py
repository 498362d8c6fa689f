"""How many database connections a sync holds (DESIGN §5, §10): at most 2 for one organization's sync, at most N + 1
for `sync --all --jobs N` and `sync --due --jobs N`, counted in pg_stat_activity while the syncs run, with the
streams' requests still overlapping Cliniko's latency; `db upgrade` opens one."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from emulator_fixtures import EMULATOR_API_KEY
from sync_helpers import setup_org, start_sync

from cliniko_sync.emulator import generate_clinic

LATENCY_MS = 40
ORGS = [f"clinic-{n:02d}" for n in range(6)]

pytestmark = pytest.mark.usefixtures("sync_environment")


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    return {**cli_env, "CLINIKO_SYNC_RATE_LIMIT": "off", "CLINIKO_SYNC_HTTP_TIMEOUT": "10"}


@pytest.fixture
def slow_emulator(make_emulator: Any) -> Any:
    """A clinic served with Cliniko-like latency, so that a sync lasts long enough to be sampled many times."""
    return make_emulator(generate_clinic(patients=150, seed=11), latency_ms=LATENCY_MS)


@contextmanager
def connections_counted(database_url: str) -> Iterator[list[int]]:
    """Sample, until the block ends, how many connections the tool holds to the database (its application_name
    starts with cliniko-sync); yields the list the samples go into."""
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        with psycopg.connect(database_url, autocommit=True) as watcher:
            while not done.is_set():
                row = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name LIKE 'cliniko-sync%%'"
                ).fetchone()
                samples.append(row[0] if row else 0)
                done.wait(0.005)

    thread = threading.Thread(target=sample, name="count-connections")
    thread.start()
    try:
        yield samples
    finally:
        done.set()
        thread.join()


def run_counted(database_url: str, env: dict[str, str], *args: str) -> list[int]:
    with connections_counted(database_url) as samples:
        process = start_sync(env, *args)
        _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    return samples


def requests_overlapped(server: Any) -> bool:
    """Whether two list requests were answered less than the latency apart: one at a time, each answer comes at least
    the latency after the previous one."""
    times = sorted(entry.time for entry in server.requests_for(EMULATOR_API_KEY))
    return any(later - earlier < LATENCY_MS / 1000 / 2 for earlier, later in zip(times, times[1:], strict=False))


def test_one_organization_holds_at_most_two_connections_and_its_streams_overlap(
    conn: psycopg.Connection, database_url: str, env: dict[str, str], slow_emulator: Any
) -> None:
    setup_org(conn, slow_emulator.base_url, EMULATOR_API_KEY, ORGS[0])
    samples = run_counted(database_url, env, ORGS[0])
    assert max(samples) == 2, f"connections sampled {len(samples)} times: max {max(samples)}"
    assert requests_overlapped(slow_emulator)  # the four big streams still wait for Cliniko at the same time


def test_db_upgrade_holds_one_connection(empty_database_url: str, cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted as they open (too short-lived for the sampler to be sure of): a new schema's whole upgrade, its checks
    (server version, search_path, privileges, the pooler's mode) included, opens one connection and no other."""
    opened: list[psycopg.Connection[Any]] = []
    real_connect = psycopg.connect

    def counting_connect(*args: Any, **kwargs: Any) -> psycopg.Connection[Any]:
        opened.append(real_connect(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(psycopg, "connect", counting_connect)
    upgraded = cli("db", "upgrade", env={"DATABASE_URL": empty_database_url})
    assert upgraded.returncode == 0 and "applied" in upgraded.stdout, upgraded.stderr
    assert len(opened) == 1


@pytest.mark.parametrize("args", [["--all", "--jobs", "4"], ["--due", "--jobs", "3"]], ids=["all", "due"])
def test_n_jobs_hold_at_most_n_plus_one_connections(
    args: list[str], conn: psycopg.Connection, database_url: str, env: dict[str, str], slow_emulator: Any
) -> None:
    for org in ORGS:
        setup_org(conn, slow_emulator.base_url, EMULATOR_API_KEY, org)
    samples = run_counted(database_url, env, *args)
    jobs = int(args[-1])
    assert 3 <= max(samples) <= jobs + 1, f"connections sampled {len(samples)} times: max {max(samples)}"
    assert conn.execute("SELECT count(*) AS n FROM sync_log WHERE status = 'success'").fetchone() == {"n": len(ORGS)}


def test_a_run_whose_lock_connection_is_lost_stops(
    conn: psycopg.Connection, database_url: str, emulator: Any, clinic: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock goes with its connection: a run that can no longer be sure it holds it stops at its next checkpoint
    (exit 69) instead of writing on beside another run that took the lock meanwhile; the next run resumes."""
    from cliniko_sync.sync import run_log
    from cliniko_sync.sync.pipeline import sync_organization

    monkeypatch.setattr(run_log, "HEARTBEAT_SECONDS", 0.05)  # the heartbeat notices within moments
    setup_org(conn, emulator.base_url, EMULATOR_API_KEY, ORGS[0])
    locks = run_log.SyncLocks(database_url)

    class LoseTheLockConnection:
        def stream_started(self, organization_id: str, stream: str, mode: str) -> None:
            pass

        def page_done(self, organization_id: str, stream: str, fetched: int, total: int | None) -> None:
            if stream == "patients" and not locks.lost.is_set():
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = 'cliniko-sync locks'"
                )
                assert locks.lost.wait(10)

        def stream_finished(self, organization_id: str, stream: str) -> None:
            pass

    try:
        lost = sync_organization(database_url, ORGS[0], as_of=clinic.now, progress=LoseTheLockConnection(),
                                 locks=locks)  # fmt: skip
    finally:
        locks.close()
    assert (lost.status, lost.exit_code) == ("failed", 69)
    assert lost.error is not None and "lost the database connection that held" in lost.error
    resumed = sync_organization(database_url, ORGS[0], as_of=clinic.now)
    assert resumed.status == "success"
    assert resumed.stats["streams"]["patients"]["inserted"] < len(clinic.patients)  # resumed, not restarted
    statuses = [row["status"] for row in conn.execute("SELECT status FROM sync_log ORDER BY id").fetchall()]
    assert statuses == ["abandoned", "success"]

"""`cliniko-sync sync` as cron and operators run it: subprocesses, signals, SIGKILL, faults, --all, JSON output."""

from __future__ import annotations

import json
import random
import re
import signal
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest
from conftest import run_cli
from emulator_fixtures import EMULATOR_API_KEY
from psycopg.rows import dict_row
from sync_helpers import SYNC_ENV, active_rows, expected_active, setup_org, snapshot

from cliniko_sync.emulator.server import Faults

SUMMARY_KEYS = {"organization_id", "status", "mode", "as_of", "requests", "active_patients", "exit_code"}


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    return {**cli_env, **SYNC_ENV, "CLINIKO_SYNC_HTTP_TIMEOUT": "2"}


@pytest.fixture(autouse=True)
def in_process_env(monkeypatch: pytest.MonkeyPatch, cli_env: dict[str, str]) -> None:
    for name in ("CREDENTIALS_ENCRYPTION_KEY", "CLINIKO_SYNC_CONTACT_EMAIL"):
        monkeypatch.setenv(name, cli_env[name])


def sync_cli(env: dict[str, str], *args: str) -> Any:
    return run_cli(["sync", *args], env, timeout=300)


def statuses(conn: psycopg.Connection) -> list[str]:
    return [row["status"] for row in conn.execute("SELECT status FROM sync_log ORDER BY id").fetchall()]


def clean_run_snapshot(make_database: Any, base_url: str, env: dict[str, str], org: str, as_of: str) -> Any:
    url = make_database()
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as fresh:
        setup_org(fresh, base_url, EMULATOR_API_KEY, org)
        result = sync_cli({**env, "DATABASE_URL": url}, org, "--as-of", as_of)
        assert result.returncode == 0, result.stderr
        return snapshot(fresh, org)


def test_json_summary_on_stdout_and_silence_on_success(conn: psycopg.Connection, env: dict[str, str],
                                                      emulator: Any, clinic: Any) -> None:  # fmt: skip
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    result = sync_cli(env, org, "--format", "json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary) >= SUMMARY_KEYS
    assert summary["status"] == "success" and summary["exit_code"] == 0 and summary["mode"] == "full"
    assert summary["as_of"].endswith("Z")
    assert summary["active_patients"] == len(expected_active(clinic, clinic.now))
    plain = sync_cli(env, org)  # default: the run's one summary line on stderr, nothing on stdout (not a tty)
    assert plain.returncode == 0 and plain.stdout == ""
    (line,) = plain.stderr.splitlines()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z NOTICE cliniko_sync.sync: surf-rehab: sync success in [\d.]+s: "
        r"\d+ requests, \d+ records, \d+ active patients",
        line,
    )
    quiet = run_cli(["-q", "sync", org], env)  # -q: nothing on stdout or stderr when all is well
    assert quiet.returncode == 0
    assert quiet.stdout == "" and quiet.stderr == ""


def test_usage_errors(env: dict[str, str]) -> None:
    assert sync_cli(env).returncode == 2
    bad_time = sync_cli(env, "surf-rehab", "--as-of", "yesterday")
    assert bad_time.returncode == 2 and "--as-of" in bad_time.stderr
    naive = sync_cli(env, "surf-rehab", "--as-of", "2026-11-24T03:00:00")
    assert naive.returncode == 2 and "time zone" in naive.stderr
    unknown = sync_cli(env, "no-such-clinic")
    assert unknown.returncode == 78 and "Traceback" not in unknown.stderr


def test_no_contact_email_is_a_configuration_error(conn: psycopg.Connection, env: dict[str, str],
                                                   emulator: Any) -> None:  # fmt: skip
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    result = sync_cli({**env, "CLINIKO_SYNC_CONTACT_EMAIL": ""}, org)
    assert result.returncode == 78
    assert "CLINIKO_SYNC_CONTACT_EMAIL" in result.stderr


def test_sigkill_at_random_moments_then_one_run_equals_a_clean_run(
    conn: psycopg.Connection, env: dict[str, str], make_emulator: Any, clinic: Any, make_database: Any
) -> None:
    slow = make_emulator(latency_ms=15)
    org = setup_org(conn, slow.base_url, EMULATOR_API_KEY)
    as_of = clinic.now.strftime("%Y-%m-%dT%H:%M:%SZ")
    rng = random.Random(20261124)
    for _ in range(10):
        proc = subprocess.Popen(
            [sys.executable, "-m", "cliniko_sync", "sync", org, "--as-of", as_of],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(rng.uniform(0.4, 2.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    final = sync_cli(env, org, "--as-of", as_of)
    assert final.returncode == 0, final.stderr
    assert "running" not in statuses(conn)
    assert statuses(conn)[-1] == "success"
    assert snapshot(conn, org) == clean_run_snapshot(make_database, slow.base_url, env, org, as_of)


def test_sigterm_stops_after_a_checkpoint_with_exit_3(conn: psycopg.Connection, env: dict[str, str],
                                                      make_emulator: Any, clinic: Any) -> None:  # fmt: skip
    slow = make_emulator(latency_ms=60)
    org = setup_org(conn, slow.base_url, EMULATOR_API_KEY)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cliniko_sync", "sync", org], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    # Signal once the crawl has committed its first appointments page: mid-crawl, whatever the machine's speed.
    deadline = time.monotonic() + 60
    while conn.execute("SELECT count(*) AS n FROM cliniko_individual_appointments").fetchone()["n"] == 0:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 3, stderr
    assert "partial" in stderr and "Traceback" not in stderr
    assert statuses(conn) == ["partial"]
    resumed = sync_cli(env, org)
    assert resumed.returncode == 0
    assert set(active_rows(conn, org)) == set(expected_active(clinic, clinic.now))


def test_max_runtime_stops_with_exit_3(conn: psycopg.Connection, env: dict[str, str], make_emulator: Any) -> None:
    slow = make_emulator(latency_ms=60)
    org = setup_org(conn, slow.base_url, EMULATOR_API_KEY)
    result = sync_cli(env, org, "--max-runtime", "1", "--format", "json")
    assert result.returncode == 3
    assert json.loads(result.stdout)["status"] == "partial"


def test_429_storm_and_5xx_bursts_still_complete(conn: psycopg.Connection, env: dict[str, str], emulator: Any,
                                                 clinic: Any) -> None:  # fmt: skip
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    emulator.set_faults(Faults(rate_limit_burst_seconds=3, error_rate=0.2, seed=5))
    result = sync_cli(env, org, "--format", "json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["stats"]["rate_limited"] > 0
    assert summary["stats"]["retries"] > summary["stats"]["rate_limited"]
    assert set(active_rows(conn, org)) == set(expected_active(clinic, clinic.now))


def test_a_page_that_keeps_failing_fails_the_run_and_keeps_the_previous_results(
    conn: psycopg.Connection, env: dict[str, str], emulator: Any, clinic: Any
) -> None:
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    assert sync_cli(env, org).returncode == 0
    before = active_rows(conn, org)
    emulator.set_faults(Faults(error_rate=1.0))
    failed = sync_cli(env, org, "--format", "json")
    assert failed.returncode == 69
    assert json.loads(failed.stdout)["status"] == "failed"
    # The run's summary line, then the one error line.
    assert failed.stderr.count("\n") == 2 and "Traceback" not in failed.stderr
    assert " sync failed in " in failed.stderr.splitlines()[0]
    assert active_rows(conn, org) == before
    row = conn.execute("SELECT * FROM sync_log ORDER BY id DESC LIMIT 1").fetchone()
    assert row["status"] == "failed" and row["error_class"] and row["error_message"]
    emulator.set_faults(Faults())
    assert sync_cli(env, org).returncode == 0
    assert statuses(conn) == ["success", "failed", "success"]


def test_all_with_one_broken_organization(conn: psycopg.Connection, env: dict[str, str], emulator: Any,
                                          clinic: Any) -> None:  # fmt: skip
    for org in ("clinic-a", "clinic-b", "clinic-c"):
        setup_org(conn, emulator.base_url, EMULATOR_API_KEY, org)
    conn.execute("DELETE FROM api_credentials WHERE organization_id = 'clinic-b'")
    result = sync_cli(env, "--all", "--jobs", "2", "--format", "json")
    assert result.returncode == 3
    summaries = {s["organization_id"]: s for s in json.loads(result.stdout)}  # one JSON array, failures included
    assert {k: v["exit_code"] for k, v in summaries.items()} == {"clinic-a": 0, "clinic-b": 78, "clinic-c": 0}
    assert "clinic-b" in result.stderr
    for org in ("clinic-a", "clinic-c"):
        assert set(active_rows(conn, org)) == set(expected_active(clinic, clinic.now))


def test_rejected_key_exits_77(conn: psycopg.Connection, env: dict[str, str], emulator: Any) -> None:
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    emulator.revoke_key(EMULATOR_API_KEY)
    result = sync_cli(env, org)
    assert result.returncode == 77
    assert EMULATOR_API_KEY not in result.stderr + result.stdout
    assert statuses(conn) == ["failed"]


def test_dry_run_prints_what_would_change(conn: psycopg.Connection, env: dict[str, str], emulator: Any) -> None:
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    result = sync_cli(env, org, "--dry-run", "--format", "table")
    assert result.returncode == 0, result.stderr
    assert "Dry run" in result.stdout
    assert conn.execute("SELECT count(*) AS n FROM cliniko_patients").fetchone()["n"] == 0

"""`cliniko-sync sync` as cron and operators run it: JSON output, usage and configuration errors, faults, --all,
run control. In this process, except where the process is what is tested: SIGTERM and exit statuses at the OS
boundary (a SIGKILL at aimed moments is tests/faults/test_faults_crashes.py)."""

from __future__ import annotations

import json
import re
import signal
import time
from typing import Any

import psycopg
import pytest
from conftest import run_cli
from emulator_fixtures import EMULATOR_API_KEY
from sync_helpers import (  # noqa: F401 (fixtures)
    active_rows,
    expected_active,
    in_process_env,
    quick_retries,
    setup_org,
    start_sync,
    statuses,
    sync,
    sync_env,
)

from cliniko_sync.emulator.server import Faults

SUMMARY_KEYS = {"organization_id", "status", "mode", "as_of", "requests", "active_patients", "exit_code"}


def test_json_summary_on_stdout_and_silence_on_success(conn: psycopg.Connection, env: dict[str, str],
                                                      emulator: Any, clinic: Any) -> None:  # fmt: skip
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    result = sync(env, org, "--format", "json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary) >= SUMMARY_KEYS
    assert summary["status"] == "success" and summary["exit_code"] == 0 and summary["mode"] == "full"
    assert summary["as_of"].endswith("Z")
    assert summary["active_patients"] == len(expected_active(clinic, clinic.now))
    plain = sync(env, org)  # default: the run's one summary line on stderr, nothing on stdout (not a tty)
    assert plain.returncode == 0 and plain.stdout == ""
    (line,) = plain.stderr.splitlines()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z NOTICE cliniko_sync.sync: surf-rehab: sync success in [\d.]+s: "
        r"\d+ requests, \d+ records, \d+ active patients",
        line,
    )
    quiet = run_cli(["-q", "sync", org], env)  # -q: nothing on stdout or stderr when all is well, as its own process
    assert quiet.returncode == 0
    assert quiet.stdout == "" and quiet.stderr == ""


def test_usage_errors(env: dict[str, str]) -> None:
    assert sync(env).returncode == 2
    bad_time = sync(env, "surf-rehab", "--as-of", "yesterday")
    assert bad_time.returncode == 2 and "--as-of" in bad_time.stderr
    naive = sync(env, "surf-rehab", "--as-of", "2026-11-24T03:00:00")
    assert naive.returncode == 2 and "time zone" in naive.stderr
    unknown = sync(env, "no-such-clinic")
    assert unknown.returncode == 78 and "Traceback" not in unknown.stderr


def test_no_contact_email_is_a_configuration_error(conn: psycopg.Connection, env: dict[str, str],
                                                   emulator: Any) -> None:  # fmt: skip
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    result = sync({**env, "CLINIKO_SYNC_CONTACT_EMAIL": ""}, org)
    assert result.returncode == 78
    assert "CLINIKO_SYNC_CONTACT_EMAIL" in result.stderr


def test_sigterm_stops_after_a_checkpoint_with_exit_3(conn: psycopg.Connection, env: dict[str, str],
                                                      make_emulator: Any, clinic: Any) -> None:  # fmt: skip
    slow = make_emulator(latency_ms=60)
    org = setup_org(conn, slow.base_url, EMULATOR_API_KEY)
    proc = start_sync(env, org)
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
    slow.latency_ms = 0  # the latency only kept the crawl going until the signal; resuming needs none
    resumed = sync(env, org)
    assert resumed.returncode == 0
    assert set(active_rows(conn, org)) == set(expected_active(clinic, clinic.now))


def test_max_runtime_stops_with_exit_3(conn: psycopg.Connection, env: dict[str, str], make_emulator: Any) -> None:
    slow = make_emulator(latency_ms=60)
    org = setup_org(conn, slow.base_url, EMULATOR_API_KEY)
    result = sync(env, org, "--max-runtime", "1", "--format", "json")
    assert result.returncode == 3
    assert json.loads(result.stdout)["status"] == "partial"


@pytest.mark.usefixtures("quick_retries")
def test_429_storm_and_5xx_bursts_still_complete(conn: psycopg.Connection, env: dict[str, str], emulator: Any,
                                                 clinic: Any) -> None:  # fmt: skip
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    emulator.set_faults(Faults(rate_limit_burst_seconds=1, error_rate=0.2, seed=5))
    result = sync(env, org, "--format", "json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["stats"]["rate_limited"] > 0
    assert summary["stats"]["retries"] > summary["stats"]["rate_limited"]
    assert set(active_rows(conn, org)) == set(expected_active(clinic, clinic.now))


@pytest.mark.usefixtures("quick_retries")
def test_a_page_that_keeps_failing_fails_the_run_and_keeps_the_previous_results(
    conn: psycopg.Connection, env: dict[str, str], emulator: Any, clinic: Any
) -> None:
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    assert sync(env, org).returncode == 0
    before = active_rows(conn, org)
    emulator.set_faults(Faults(error_rate=1.0))
    failed = sync(env, org, "--format", "json")
    assert failed.returncode == 69
    assert json.loads(failed.stdout)["status"] == "failed"
    # The run's summary line, then the one error line.
    assert failed.stderr.count("\n") == 2 and "Traceback" not in failed.stderr
    assert " sync failed in " in failed.stderr.splitlines()[0]
    assert active_rows(conn, org) == before
    row = conn.execute("SELECT * FROM sync_log ORDER BY id DESC LIMIT 1").fetchone()
    assert row["status"] == "failed" and row["error_class"] and row["error_message"]
    emulator.set_faults(Faults())
    assert sync(env, org).returncode == 0
    assert statuses(conn) == ["success", "failed", "success"]


def test_all_with_one_broken_organization(conn: psycopg.Connection, env: dict[str, str], emulator: Any,
                                          clinic: Any) -> None:  # fmt: skip
    for org in ("clinic-a", "clinic-b", "clinic-c"):
        setup_org(conn, emulator.base_url, EMULATOR_API_KEY, org)
    conn.execute("DELETE FROM api_credentials WHERE organization_id = 'clinic-b'")
    result = sync(env, "--all", "--jobs", "2", "--format", "json")
    assert result.returncode == 3
    summaries = {s["organization_id"]: s for s in json.loads(result.stdout)}  # one JSON array, failures included
    assert {k: v["exit_code"] for k, v in summaries.items()} == {"clinic-a": 0, "clinic-b": 78, "clinic-c": 0}
    assert "clinic-b" in result.stderr
    for org in ("clinic-a", "clinic-c"):
        assert set(active_rows(conn, org)) == set(expected_active(clinic, clinic.now))


def test_rejected_key_exits_77(conn: psycopg.Connection, env: dict[str, str], emulator: Any) -> None:
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    emulator.revoke_key(EMULATOR_API_KEY)
    result = sync(env, org)
    assert result.returncode == 77
    assert EMULATOR_API_KEY not in result.stderr + result.stdout
    assert statuses(conn) == ["failed"]


def test_dry_run_prints_what_would_change(conn: psycopg.Connection, env: dict[str, str], emulator: Any) -> None:
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    result = sync(env, org, "--dry-run", "--format", "table")
    assert result.returncode == 0, result.stderr
    assert "Dry run" in result.stdout
    assert conn.execute("SELECT count(*) AS n FROM cliniko_patients").fetchone()["n"] == 0

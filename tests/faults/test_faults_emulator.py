"""Cliniko misbehaving: 429 storms, 5xx, hangs past the client timeout, broken pages, duplicates and shuffles,
a skewed clock, records changing mid-crawl. Every sync must end with nothing lost or doubled."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from emulator_fixtures import EMULATOR_API_KEY
from fault_helpers import (  # noqa: F401 (fixtures)
    ScenarioResult,
    clean_run_snapshot,
    fault_clinic,
    fault_report_fixture,
    in_process_env,
    iso,
    lost_and_duplicated,
    statuses,
    sync,
    sync_env,
)
from sync_helpers import quick_retries, setup_org, snapshot  # noqa: F401 (fixture)

from cliniko_sync.emulator.server import Faults

ORG = "surf-rehab"


def burst_seconds(config: pytest.Config) -> float:
    """DESIGN asks for 30 s of 429s; CI scales it to 3 s (--runslow runs the full 30 s): the same one Retry-After
    wait that spans the whole burst, at a tenth of the time."""
    return 30.0 if config.getoption("--runslow") else 3.0


FAULTS = {
    "5xx_20_percent": (Faults(error_rate=0.2, seed=1), {}),
    "hangs_past_the_client_timeout": (
        Faults(hang_rate=0.1, hang_seconds=2.0, seed=2),
        {"CLINIKO_SYNC_HTTP_TIMEOUT": "0.5"},
    ),
    "malformed_and_truncated_pages": (Faults(malformed_rate=0.1, truncated_rate=0.1, seed=3), {}),
    "duplicate_and_out_of_order_records": (Faults(duplicate_rate=0.5, shuffle=0.25, seed=4), {}),
}


def _finish(conn: psycopg.Connection, clinic: Any, emulator: Any, make_database: Any, env: dict[str, str],
            faults: str, runs: int, note: str = "") -> ScenarioResult:  # fmt: skip
    emulator.set_faults(Faults())
    lost, duplicated = lost_and_duplicated(conn, clinic, ORG, clinic.now)
    clean = clean_run_snapshot(make_database, emulator.base_url, env, ORG, iso(clinic.now))
    return ScenarioResult(faults, runs, lost, duplicated, snapshot(conn, ORG) == clean, note)


@pytest.mark.usefixtures("quick_retries")
@pytest.mark.parametrize("name", sorted(FAULTS))
def test_faulty_api_still_completes(name: str, conn: psycopg.Connection, env: dict[str, str], emulator: Any,
                                    clinic: Any, make_database: Any, fault_report: Any) -> None:  # fmt: skip
    faults, extra_env = FAULTS[name]
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY, ORG)
    emulator.set_faults(faults)
    result = sync({**env, **extra_env}, org, "--as-of", iso(clinic.now), "--format", "json")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads(result.stdout)
    retried = summary["stats"]["retries"]
    if name != "duplicate_and_out_of_order_records":
        assert retried > 0  # the faults really happened
    fault_report(_finish(conn, clinic, emulator, make_database, env, name.replace("_", " "), 1, f"{retried} retries"))


def test_429_storm(request: pytest.FixtureRequest, conn: psycopg.Connection, env: dict[str, str], emulator: Any,
                   clinic: Any, make_database: Any, fault_report: Any) -> None:  # fmt: skip
    seconds = burst_seconds(request.config)
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY, ORG)
    emulator.set_faults(Faults(rate_limit_burst_seconds=seconds, retry_after=True))
    result = sync(env, org, "--as-of", iso(clinic.now), "--format", "json")
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)["stats"]
    assert stats["rate_limited"] > 0
    # It waited as the server asked instead of hammering it: a handful of 429s, not hundreds.
    assert stats["rate_limited"] <= 10
    fault_report(_finish(conn, clinic, emulator, make_database, env, f"429 for {seconds:g} s", 1,
                         f"{stats['rate_limited']} × 429"))  # fmt: skip


@pytest.mark.parametrize("offset_hours", [6, -6])
def test_cliniko_clock_ahead_or_behind_the_host(offset_hours: int, conn: psycopg.Connection, env: dict[str, str],
                                                emulator: Any, clinic: Any, make_database: Any,
                                                fault_report: Any) -> None:  # fmt: skip
    """Cliniko stamps updated_at with its own clock; the host's clock (as_of) differs by hours. Incremental syncs
    every two hours of clinic time, with bookings, cancellations, edits and archivals in between."""
    if offset_hours < 0:
        # The host is ahead: Cliniko's clock must still read at least its newest updated_at (it never runs backwards).
        clinic.advance_clock(timedelta(hours=-offset_hours))
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY, ORG)
    emulator.set_faults(Faults(clock_offset_seconds=offset_hours * 3600))
    assert sync(env, org, "--as-of", iso(clinic.now)).returncode == 0
    patients = sorted(int(i) for i in clinic.patients.records)[:40]
    appointments = sorted(clinic.individual_appointments.records)[-40:]
    for round_number in range(4):
        clinic.advance_clock(timedelta(hours=2))
        patient = patients[round_number * 10]
        clinic.book(patient, clinic.now + timedelta(days=1))
        clinic.book(patients[round_number * 10 + 1], clinic.now - timedelta(hours=1))
        clinic.cancel_appointment(appointments[round_number * 10])
        clinic.edit_patient(patients[round_number * 10 + 2], email=f"changed{round_number}@example.test")
        clinic.archive_patient(patients[round_number * 10 + 3])
        result = sync(env, org, "--as-of", iso(clinic.now))
        assert result.returncode == 0, result.stderr
    direction = "ahead of" if offset_hours > 0 else "behind"
    fault_report(_finish(conn, clinic, emulator, make_database, env, f"Cliniko's clock {abs(offset_hours)} h "
                         f"{direction} the host, changes between runs", 5))  # fmt: skip


def test_records_updated_during_the_crawl(conn: psycopg.Connection, env: dict[str, str], emulator: Any, clinic: Any,
                                          make_database: Any, fault_report: Any) -> None:  # fmt: skip
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY, ORG)
    emulator.set_faults(Faults(mutate_every=3, seed=6))
    first = sync(env, org, "--as-of", iso(clinic.now))
    assert first.returncode == 0, first.stderr
    lost, duplicated = lost_and_duplicated(conn, clinic, ORG, clinic.now)
    assert (lost, duplicated) == (0, 0)  # nothing missed by the run the changes happened under
    emulator.set_faults(Faults())
    second = sync(env, org, "--as-of", iso(clinic.now))
    assert second.returncode == 0, second.stderr
    assert statuses(conn, org) == ["success", "success"]
    fault_report(_finish(conn, clinic, emulator, make_database, env, "a record touched every 3 list requests", 2))

"""Fixtures and helpers for the fault scenarios: the clinic, the summary line, rows lost or duplicated, a clean run.

Each test module imports the fixtures (named fault_*, in_process_env): a conftest.py in this folder would take the
`conftest` module name the other test folders import from.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import pytest
from conftest import CliResult, run_cli
from emulator_fixtures import EMULATOR_API_KEY
from psycopg.rows import dict_row
from sync_helpers import SYNC_ENV, active_rows, expected_active, setup_org, snapshot

from cliniko_sync.emulator import Clinic, generate_clinic
from cliniko_sync.sync.streams import STREAMS

INCREMENTAL = [stream for stream in STREAMS if stream.incremental]
CI_SIZE = (300, 3_000)  # S (1,000 / 20,000) would take the whole suite past its six-minute budget on two cores
S_SIZE = (1_000, 20_000)
CLINIC_SEED = 20261124


@dataclass
class ScenarioResult:
    faults: str
    runs: int
    lost: int
    duplicated: int
    equal_to_clean_run: bool
    note: str = ""

    def line(self) -> str:
        equal = "yes" if self.equal_to_clean_run else "NO"
        note = f"; {self.note}" if self.note else ""
        return (
            f"faults: {self.faults}; runs: {self.runs}; rows lost: {self.lost}; rows duplicated: {self.duplicated}; "
            f"equal to a clean run: {equal}{note}"
        )


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def sync_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "cliniko_sync", "sync", *args]


def start_sync(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(sync_command(*args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def sync(env: dict[str, str], *args: str) -> CliResult:
    return run_cli(["sync", *args], env, timeout=300)


def listed_ids(clinic: Any, resource: str) -> set[str]:
    """Ids the API lists with archived, cancelled and deleted records included."""
    with clinic.lock:
        return {str(record_id) for _, record_id in clinic.tables[resource].indexes["id"].entries}


def lost_and_duplicated(conn: psycopg.Connection, clinic: Any, org: str, as_of: datetime) -> tuple[int, int]:
    """Rows lost: records Cliniko lists that the mirror lacks, active patients missing, current patients without a
    contact. Rows duplicated: mirror rows Cliniko does not list, extra active patients, patients with two contacts."""
    lost = duplicated = 0
    for stream in INCREMENTAL:
        mirrored = {
            row["id"]
            for row in conn.execute(
                f"SELECT id FROM {stream.table} WHERE organization_id = %s AND removed_at IS NULL", (org,)
            ).fetchall()
        }
        listed = listed_ids(clinic, stream.paths[0])
        lost += len(listed - mirrored)
        duplicated += len(mirrored - listed)
    expected, actual = set(expected_active(clinic, as_of)), set(active_rows(conn, org))
    lost += len(expected - actual)
    duplicated += len(actual - expected)
    contacts = conn.execute(
        """
        SELECT count(*) FILTER (WHERE c.id IS NULL) AS missing,
               (SELECT count(*) - count(DISTINCT cliniko_patient_id) FROM contacts
                WHERE organization_id = %(org)s AND cliniko_patient_id IS NOT NULL) AS doubled
        FROM current_patients p
        LEFT JOIN contacts c ON c.organization_id = p.organization_id AND c.cliniko_patient_id = p.id
        WHERE p.organization_id = %(org)s
        """,
        {"org": org},
    ).fetchone()
    assert contacts is not None
    return lost + contacts["missing"], duplicated + contacts["doubled"]


def clean_run_snapshot(make_database: Any, base_url: str, env: dict[str, str], org: str, as_of: str) -> Any:
    """What one uninterrupted sync of the emulator's current data leaves in a fresh database."""
    url = make_database()
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as fresh:
        setup_org(fresh, base_url, EMULATOR_API_KEY, org)
        result = sync({**env, "DATABASE_URL": url}, org, "--as-of", as_of)
        assert result.returncode == 0, result.stderr
        return snapshot(fresh, org)


def statuses(conn: psycopg.Connection, org: str) -> list[str]:
    rows = conn.execute("SELECT status FROM sync_log WHERE organization_id = %s ORDER BY id", (org,)).fetchall()
    return [row["status"] for row in rows]


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(name="clinic")
def fault_clinic(request: pytest.FixtureRequest) -> Clinic:
    """The fault scenarios' clinic: 300 patients / 3,000 appointments, or size S with --runslow."""
    patients, appointments = S_SIZE if request.config.getoption("--runslow") else CI_SIZE
    return generate_clinic(patients=patients, appointments=appointments, seed=CLINIC_SEED)


@pytest.fixture(autouse=True)
def in_process_env(monkeypatch: pytest.MonkeyPatch, cli_env: dict[str, str]) -> None:
    """Setting organizations up in-process encrypts credentials with the same key the CLI subprocesses use."""
    for name in ("CREDENTIALS_ENCRYPTION_KEY", "CLINIKO_SYNC_CONTACT_EMAIL"):
        monkeypatch.setenv(name, cli_env[name])


@pytest.fixture(name="fault_report")
def fault_report_fixture(request: pytest.FixtureRequest) -> Callable[[ScenarioResult], None]:
    """Record a scenario's line (printed now for -s, and again in the terminal summary), then assert it."""

    manager = request.config.pluginmanager
    if not manager.has_plugin("cliniko-sync-fault-summary"):
        manager.register(_SummaryPlugin(), "cliniko-sync-fault-summary")

    def report(result: ScenarioResult) -> None:
        line = f"{request.node.name}: {result.line()}"
        print(line)
        _SummaryPlugin.lines.append(line)
        assert result.lost == 0, line
        assert result.duplicated == 0, line
        assert result.equal_to_clean_run, line

    return report


class _SummaryPlugin:
    """Registered by the first scenario: prints every scenario's line in pytest's terminal summary."""

    lines: list[str] = []

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        terminalreporter.write_sep("=", "fault scenarios")
        for line in self.lines:
            terminalreporter.write_line(line)


@pytest.fixture(name="env")
def fault_env(cli_env: dict[str, str]) -> dict[str, str]:
    """The CLI's environment for syncs: no client-side rate limit (the emulator's faults decide), 2 s HTTP timeout."""
    return {**cli_env, **SYNC_ENV, "CLINIKO_SYNC_HTTP_TIMEOUT": "2"}

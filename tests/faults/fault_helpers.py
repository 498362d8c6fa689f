"""Fixtures and helpers for the fault scenarios: the clinic, the summary line, rows lost or duplicated. Running the
sync, the environment and a clean run's snapshot are shared with the CLI tests (tests/sync_helpers.py).

Each test module imports the fixtures (fault_*, and sync_env and in_process_env from sync_helpers): a conftest.py
in this folder would take the `conftest` module name the other test folders import from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
import pytest
from conftest import FAULT_SCENARIO
from sync_helpers import (  # noqa: F401 (re-exported for the scenarios)
    active_rows,
    clean_run_snapshot,
    expected_active,
    in_process_env,
    start_sync,
    statuses,
    sync,
    sync_env,
)

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


# --- fixtures ---------------------------------------------------------------------------------------------


@pytest.fixture(name="clinic")
def fault_clinic(request: pytest.FixtureRequest) -> Clinic:
    """The fault scenarios' clinic: 300 patients / 3,000 appointments, or size S with --runslow."""
    patients, appointments = S_SIZE if request.config.getoption("--runslow") else CI_SIZE
    return generate_clinic(patients=patients, appointments=appointments, seed=CLINIC_SEED)


@pytest.fixture(name="fault_report")
def fault_report_fixture(request: pytest.FixtureRequest) -> Callable[[ScenarioResult], None]:
    """Record a scenario's line (printed now for -s, and again in the terminal summary), then assert it."""

    def report(result: ScenarioResult) -> None:
        line = f"{request.node.name}: {result.line()}"
        print(line)
        # Carried on the test's report (also from pytest-xdist's workers) to the terminal summary (tests/conftest.py).
        request.node.user_properties.append((FAULT_SCENARIO, line))
        assert result.lost == 0, line
        assert result.duplicated == 0, line
        assert result.equal_to_clean_run, line

    return report

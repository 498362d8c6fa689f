"""`cliniko-sync demo` end to end: zero configuration, the emulator, a full sync, run twice. On a fresh machine in a
subprocess (the embedded PostgreSQL lives as long as the process); the rest in this process."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli, run_cli_in_process

DEMO_ORG = "demo-clinic"


def demo_runs(conn: Any) -> list[dict[str, Any]]:
    return conn.execute(
        "SELECT status, mode, stats FROM sync_log WHERE organization_id = %s ORDER BY id", (DEMO_ORG,)
    ).fetchall()


def test_demo_syncs_the_emulator_into_the_given_database_twice(conn: Any, cli: Any, cli_env: dict[str, str]) -> None:
    first = cli("demo")
    assert first.returncode == 0, first.stderr
    assert "Active patients of demo-clinic" in first.stdout and "Sync status" in first.stdout
    assert "created organization demo-clinic" in first.stderr
    # The operator's key and contact email are used as they are: no demo key is made.
    assert "demo-only key" not in first.stderr and "is not set" not in first.stderr
    assert not (Path(cli_env["CLINIKO_SYNC_DATA_DIR"]) / "demo-encryption.key").exists()

    active = conn.execute("SELECT count(*) AS n FROM active_patients WHERE organization_id = %s", (DEMO_ORG,))
    count = active.fetchone()["n"]
    assert 40 <= count <= 55
    assert conn.execute("SELECT enabled FROM organizations WHERE id = %s", (DEMO_ORG,)).fetchone()["enabled"] is False
    assert [(run["status"], run["mode"]) for run in demo_runs(conn)] == [("success", "full")]

    second = cli("demo")
    assert second.returncode == 0, second.stderr
    assert "organization demo-clinic exists: syncing it again" in second.stderr
    assert [run["status"] for run in demo_runs(conn)] == ["success", "success"]
    listed = json.loads(cli("list-active", DEMO_ORG, "--format", "json").stdout)
    assert 40 <= len(listed) <= 55
    assert all(row["organization_id"] == DEMO_ORG and row["recent_appointment_count"] >= 1 for row in listed)


@pytest.fixture
def fresh_machine() -> Iterator[dict[str, str]]:
    """An environment with nothing configured: no DATABASE_URL, no key, no contact email, an empty data dir."""
    root = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    directory = Path(tempfile.mkdtemp(prefix="cliniko-sync-demo-", dir=root))
    os.chmod(directory, 0o755)  # the embedded server runs as an unprivileged user when the tests run as root
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CLINIKO_SYNC_", "CREDENTIALS_")) and k not in ("DATABASE_URL", "TEST_DATABASE_URL")
    }
    env.update(CLINIKO_SYNC_DATA_DIR=str(directory / "data"), COLUMNS="200")
    yield env
    shutil.rmtree(directory, ignore_errors=True)


def test_demo_on_a_fresh_machine_needs_no_configuration(fresh_machine: dict[str, str]) -> None:
    data = Path(fresh_machine["CLINIKO_SYNC_DATA_DIR"])
    first = run_cli(["demo"], fresh_machine, timeout=300)
    assert first.returncode == 0, first.stderr
    assert f"using a demo-only key stored in {data / 'demo-encryption.key'}" in first.stderr
    assert "CLINIKO_SYNC_CONTACT_EMAIL is not set" in first.stderr
    assert "starting the embedded PostgreSQL" in first.stderr
    assert "Active patients of demo-clinic" in first.stdout
    key_file = data / "demo-encryption.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text()

    second = run_cli(["demo"], fresh_machine, timeout=300)
    assert second.returncode == 0, second.stderr
    assert "exists: syncing it again" in second.stderr
    assert key_file.read_text() == key

    status = run_cli(["status", DEMO_ORG, "--history", "5", "--format", "json"], fresh_machine)
    assert status.returncode == 0, status.stderr
    assert [run["status"] for run in json.loads(status.stdout)] == ["success", "success"]


def test_demo_with_an_unreachable_database_is_one_line_and_exit_69(fresh_machine: dict[str, str]) -> None:
    result = run_cli_in_process(["demo"], {**fresh_machine, "DATABASE_URL": "postgresql://demo@127.0.0.1:1/nowhere"})
    assert result.returncode == 69
    assert result.stderr.splitlines()[-1].startswith("cliniko-sync: error: cannot connect to the database")
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_demo_with_an_unusable_data_dir_is_a_configuration_error(fresh_machine: dict[str, str]) -> None:
    result = run_cli_in_process(["demo"], {**fresh_machine, "CLINIKO_SYNC_DATA_DIR": "/dev/null/cliniko-sync"})
    assert result.returncode == 78
    assert result.stderr.startswith("cliniko-sync: error: cannot write the demo key")
    assert len(result.stderr.splitlines()) == 1 and result.stdout == ""

"""Hostile input: organization ids, --search text and Cliniko fields holding SQL metacharacters, quotes, 10 kB
strings, NUL bytes, emoji and right-to-left text; wrong and truncated encryption keys. No traceback, nothing written
half-way, no SQL injected."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from conftest import TEST_ENCRYPTION_KEY
from conftest import run_cli_in_process as run_cli
from emulator_fixtures import EMULATOR_API_KEY
from fault_helpers import (  # noqa: F401 (fixtures)
    ScenarioResult,
    clean_run_snapshot,
    fault_clinic,
    fault_report_fixture,
    in_process_env,
    iso,
    lost_and_duplicated,
    sync,
    sync_env,
)
from sync_helpers import expected_active, setup_org, snapshot

ORG = "surf-rehab"
HOSTILE = [
    "x'; DROP TABLE organizations; --",
    "quote\"s and 'apostrophes'",
    "100% _wild_ \\escaped\\",
    "a" * 10_240,
    "🦷 clinic 🦷",
    "מרפאה \u202eevil\u202c",
    "Robert'); DELETE FROM contacts WHERE ('1'='1",
]
ANOTHER_VALID_KEY = "Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyMDE="
TABLES = ("organizations", "api_credentials", "contacts", "active_patients", "sync_log", "cliniko_patients")


def table_counts(conn: psycopg.Connection) -> dict[str, int]:
    return {table: conn.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"] for table in TABLES}


def assert_clean_refusal(result: Any, *codes: int) -> None:
    assert result.returncode in codes, (result.returncode, result.stderr[:500])
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("cliniko-sync: error:") or result.stderr.startswith("Usage:"), result.stderr[:500]


@pytest.mark.parametrize("org_id", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_organization_ids_are_refused(org_id: str, conn: psycopg.Connection, env: dict[str, str],
                                              emulator: Any) -> None:  # fmt: skip
    setup_org(conn, emulator.base_url, EMULATOR_API_KEY, ORG)
    before = table_counts(conn)
    for args, stdin in (
        (["org", "add", org_id, "--name", "Hostile"], None),
        (["credentials", "set", org_id, "--api-url", emulator.base_url], EMULATOR_API_KEY + "\n"),
        (["sync", org_id], None),
        (["list-active", org_id], None),
        (["status", org_id], None),
    ):
        assert_clean_refusal(run_cli(args, env, input=stdin), 2, 78)
    assert table_counts(conn) == before


def test_hostile_organization_names(conn: psycopg.Connection, env: dict[str, str]) -> None:
    before = table_counts(conn)
    assert_clean_refusal(run_cli(["org", "add", "long-name", "--name", "n" * 10_240], env), 2)
    assert table_counts(conn) == before
    for number, name in enumerate(HOSTILE[:3] + HOSTILE[4:]):
        result = run_cli(["org", "add", f"clinic-{number}", "--name", name], env)
        assert result.returncode == 0, result.stderr
        stored = conn.execute("SELECT name FROM organizations WHERE id = %s", (f"clinic-{number}",)).fetchone()
        assert stored is not None and stored["name"] == name.strip()


def test_hostile_search_text_is_a_literal_substring(conn: psycopg.Connection, env: dict[str, str], emulator: Any,
                                                    clinic: Any) -> None:  # fmt: skip
    setup_org(conn, emulator.base_url, EMULATOR_API_KEY, ORG)
    active = sorted(expected_active(clinic, clinic.now))
    # Give a few active patients hostile names, so some searches have something to find.
    for patient_id, name in zip(active, HOSTILE, strict=False):
        clinic.edit_patient(patient_id, last_name=name)
    assert sync(env, ORG, "--as-of", iso(clinic.now)).returncode == 0
    listed = run_cli(["list-active", ORG, "--format", "json"], env)
    rows = json.loads(listed.stdout)
    before = table_counts(conn)
    for text in [*HOSTILE, "%", "_", "\\", "'", "🦷", "\u202e"]:
        result = run_cli(["list-active", ORG, "--search", text, "--format", "json"], env)
        assert result.returncode == 0, result.stderr[:500]
        wanted = {
            row["cliniko_patient_id"]
            for row in rows
            if any(text.lower() in (row[field] or "").lower() for field in ("name", "email", "phone"))
        }
        assert {row["cliniko_patient_id"] for row in json.loads(result.stdout)} == wanted, text[:40]
    assert table_counts(conn) == before
    assert any(text.lower() in row["name"].lower() for row in rows for text in HOSTILE[:3])


def test_hostile_cliniko_fields_are_stored_verbatim(conn: psycopg.Connection, env: dict[str, str], emulator: Any,
                                                    clinic: Any, make_database: Any,
                                                    fault_report: Any) -> None:  # fmt: skip
    setup_org(conn, emulator.base_url, EMULATOR_API_KEY, ORG)
    patients = sorted(expected_active(clinic, clinic.now))
    for patient_id, text in zip(patients, HOSTILE, strict=False):
        clinic.edit_patient(patient_id, first_name=text, email=f"o'hara+{len(text)}@example.test")
    result = sync(env, ORG, "--as-of", iso(clinic.now))
    assert result.returncode == 0, result.stderr[:500]
    for patient_id, text in zip(patients, HOSTILE, strict=False):
        row = conn.execute(
            "SELECT first_name, email FROM cliniko_patients WHERE organization_id = %s AND id = %s", (ORG, patient_id)
        ).fetchone()
        assert row is not None and row["first_name"] == text
        contact = conn.execute(
            "SELECT name FROM contacts WHERE organization_id = %s AND cliniko_patient_id = %s", (ORG, patient_id)
        ).fetchone()
        assert contact is not None and text in contact["name"]
    lost, duplicated = lost_and_duplicated(conn, clinic, ORG, clinic.now)
    clean = clean_run_snapshot(make_database, emulator.base_url, env, ORG, iso(clinic.now))
    fault_report(ScenarioResult("patient names/emails with SQL, quotes, 10 kB, emoji, RTL", 1, lost, duplicated,
                                snapshot(conn, ORG) == clean))  # fmt: skip


def test_nul_bytes_in_cliniko_fields(conn: psycopg.Connection, env: dict[str, str], emulator: Any, clinic: Any,
                                     make_database: Any, fault_report: Any) -> None:  # fmt: skip
    """PostgreSQL text and jsonb cannot hold U+0000; one patient's name carrying it must not stop the clinic's sync."""
    setup_org(conn, emulator.base_url, EMULATOR_API_KEY, ORG)
    patient_id = sorted(expected_active(clinic, clinic.now))[0]
    clinic.edit_patient(patient_id, first_name="Nul\x00l", last_name="\x00")
    result = sync(env, ORG, "--as-of", iso(clinic.now))
    assert "Traceback" not in result.stderr
    assert result.returncode == 0, result.stderr[:500]
    lost, duplicated = lost_and_duplicated(conn, clinic, ORG, clinic.now)
    clean = clean_run_snapshot(make_database, emulator.base_url, env, ORG, iso(clinic.now))
    fault_report(ScenarioResult("a NUL byte in a patient's name", 1, lost, duplicated, snapshot(conn, ORG) == clean))


@pytest.mark.parametrize(
    "key",
    [ANOTHER_VALID_KEY, TEST_ENCRYPTION_KEY[:20], "", "not a key at all"],
    ids=["another-valid-key", "truncated", "empty", "garbage"],
)
def test_wrong_encryption_keys_exit_78_and_write_nothing(key: str, conn: psycopg.Connection, env: dict[str, str],
                                                         emulator: Any) -> None:  # fmt: skip
    setup_org(conn, emulator.base_url, EMULATOR_API_KEY, ORG)
    before = table_counts(conn)
    wrong = {**env, "CREDENTIALS_ENCRYPTION_KEY": key}
    commands: list[tuple[list[str], str | None]] = [(["sync", ORG], None)]
    if key != ANOTHER_VALID_KEY:  # `credentials set` decrypts nothing: any well-formed key can encrypt
        commands.append((["credentials", "set", ORG], EMULATOR_API_KEY + "\n"))
    for args, stdin in commands:
        result = run_cli(args, wrong, input=stdin)
        assert_clean_refusal(result, 78)
        assert result.stderr.count("\n") == 1
        assert EMULATOR_API_KEY not in result.stderr + result.stdout
        assert not key or key not in result.stderr
    assert table_counts(conn) == before
    assert sync(env, ORG).returncode == 0  # the right key still works: nothing was overwritten

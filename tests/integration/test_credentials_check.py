"""`check-credentials` against the Cliniko emulator over loopback: accepted, revoked, unreachable, misconfigured."""

from __future__ import annotations

import json

import pytest
import requests
from emulator_fixtures import EMULATOR_API_KEY
from sync_helpers import quick_retries  # noqa: F401 (fixture)

from cliniko_sync.credential_check import worst_exit_code

ORG = "surf-rehab"


def listed_patients(emulator) -> int:  # type: ignore[no-untyped-def]
    """How many patients the emulator says the clinic has, asked directly over HTTP."""
    response = requests.get(
        f"{emulator.base_url}/patients",
        params={"per_page": 1},
        auth=(EMULATOR_API_KEY, ""),
        headers={"Accept": "application/json", "User-Agent": "test (tests@cliniko-sync.example)"},
        timeout=30,
    )
    response.raise_for_status()
    total: int = response.json()["total_entries"]
    return total


def validation(conn, org_id: str = ORG) -> dict:  # type: ignore[no-untyped-def]
    row: dict = conn.execute(
        "SELECT last_validated_at, last_validation_error FROM organization_services WHERE organization_id = %s",
        (org_id,),
    ).fetchone()
    return row


@pytest.fixture
def org_with_key(cli, emulator) -> str:  # type: ignore[no-untyped-def]
    assert cli("org", "add", ORG, "--name", "Surf Rehab").returncode == 0
    stored = cli("credentials", "set", ORG, "--api-url", emulator.base_url, input=EMULATOR_API_KEY)
    assert stored.returncode == 0, stored.stderr
    return ORG


def test_accepted_key_exits_0_with_the_clinic_patient_count(cli, emulator, org_with_key: str, conn) -> None:
    result = cli("check-credentials", org_with_key, "--format", "json")

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    [row] = json.loads(result.stdout)
    assert row["ok"] is True
    assert row["exit_code"] == 0
    assert row["error"] is None
    assert row["patient_count"] == listed_patients(emulator) > 0
    assert row["api_host"] == emulator.base_url.split("/")[2]
    assert row["key_hint"] == "…-key-au1"  # the last four of "emulator-test-key" and the shard
    assert isinstance(row["latency_ms"], int)
    recorded = validation(conn)
    assert recorded["last_validated_at"] is not None
    assert recorded["last_validation_error"] is None


def test_revoked_key_exits_77_and_the_error_is_recorded(cli, emulator, org_with_key: str, conn) -> None:
    emulator.revoke_key(EMULATOR_API_KEY)

    result = cli("check-credentials", org_with_key, "--format", "json")

    assert result.returncode == 77, result.stderr
    [row] = json.loads(result.stdout)
    assert (row["ok"], row["exit_code"], row["patient_count"]) == (False, 77, None)
    assert "rejected" in row["error"]
    assert result.stderr.splitlines() == [f"cliniko-sync: error: {org_with_key}: {row['error']}"]
    assert validation(conn)["last_validation_error"] == row["error"]


def test_a_later_success_clears_the_recorded_error(cli, emulator, org_with_key: str, conn) -> None:
    emulator.revoke_key(EMULATOR_API_KEY)
    assert cli("check-credentials", org_with_key).returncode == 77
    emulator.add_key(EMULATOR_API_KEY)

    assert cli("check-credentials", org_with_key).returncode == 0
    assert validation(conn)["last_validation_error"] is None


@pytest.mark.usefixtures("quick_retries")  # the wait before giving up is not what is checked
def test_stopped_emulator_exits_69(cli, emulator, org_with_key: str) -> None:
    emulator.stop()

    result = cli("check-credentials", org_with_key, "--format", "json")

    assert result.returncode == 69, result.stderr
    [row] = json.loads(result.stdout)
    assert row["exit_code"] == 69
    assert row["shard"] == "au1"


def test_no_contact_email_exits_78_without_calling_cliniko(cli, emulator, org_with_key: str) -> None:
    requests_before = len(emulator.request_log)

    result = cli("check-credentials", org_with_key, "--format", "json", env={"CLINIKO_SYNC_CONTACT_EMAIL": ""})

    assert result.returncode == 78, result.stderr
    assert "CLINIKO_SYNC_CONTACT_EMAIL" in json.loads(result.stdout)[0]["error"]
    assert len(emulator.request_log) == requests_before


def test_all_reports_each_organization_and_exits_with_the_worst(cli, emulator, org_with_key: str) -> None:
    cli("org", "add", "wrong-key", "--name", "Wrong Key")
    cli("credentials", "set", "wrong-key", "--api-url", emulator.base_url, input="bm90LWEta25vd24ta2V5-au1")

    rejected = cli("check-credentials", "--all", "--format", "jsonl")
    cli("org", "add", "no-key", "--name", "No Key")
    misconfigured = cli("check-credentials", "--all", "--format", "jsonl")

    assert rejected.returncode == 77
    assert {r["organization_id"]: r["exit_code"] for r in map(json.loads, rejected.stdout.splitlines())} == {
        org_with_key: 0,
        "wrong-key": 77,
    }
    assert misconfigured.returncode == 78
    assert [json.loads(line)["exit_code"] for line in misconfigured.stdout.splitlines()] == [78, 0, 77]


@pytest.mark.parametrize(
    ("codes", "worst"),
    [
        ([], 0),
        ([0, 0], 0),
        ([0, 69], 69),
        ([69, 1], 1),
        ([69, 77, 1], 77),
        ([77, 78, 69, 0], 78),
        ([0, 2], 2),
    ],
)
def test_worst_exit_code_order(codes: list[int], worst: int) -> None:
    assert worst_exit_code(codes) == worst

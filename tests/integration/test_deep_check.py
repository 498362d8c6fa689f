"""`check-credentials --deep` against the emulator over loopback: every assumption held on the strict defaults, and
each emulator quirk that breaks one assumption makes exactly that one `violated` with exit 1."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
from emulator_fixtures import EMULATOR_API_KEY
from sync_helpers import SYNC_ENV, quick_retries, setup_org  # noqa: F401 (fixture)

from cliniko_sync.assumptions import ASSUMPTIONS
from cliniko_sync.deep_check import COLUMNS, INFORMATION
from cliniko_sync.emulator.quirks import Quirks
from cliniko_sync.emulator.server import Faults

ORG = "surf-rehab"
NAMES = [assumption.name for assumption in (*ASSUMPTIONS, *INFORMATION)]
# Held on the strict emulator; the other two are unknown there by design (no 429 is ever provoked; every small list
# of the seeded clinic is read by page number, so offset_pages is tested: it must be held too).
UNTESTABLE_ON_EMULATOR = {"rate_limit_reset"}


def deep(cli: Any, *args: str) -> Any:
    return cli("check-credentials", *args, "--deep", env=SYNC_ENV)


def rows_by_name(stdout: str) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in json.loads(stdout)}


@pytest.fixture(autouse=True)
def encryption_key(cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Organizations are set up in-process (setup_org), with the key the CLI subprocesses get."""
    monkeypatch.setenv("CREDENTIALS_ENCRYPTION_KEY", cli_env["CREDENTIALS_ENCRYPTION_KEY"])


@pytest.fixture
def org(conn: psycopg.Connection, emulator: Any) -> str:
    return setup_org(conn, emulator.base_url, EMULATOR_API_KEY, ORG)


def test_every_assumption_holds_on_the_strict_emulator(cli: Any, emulator: Any, org: str) -> None:
    before = len(emulator.request_log)

    result = deep(cli, org, "--format", "json")

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    rows = json.loads(result.stdout)
    assert [row["name"] for row in rows] == NAMES
    assert {row["organization_id"] for row in rows} == {org}
    assert {row["name"]: row["status"] for row in rows} == {
        **{name: "unknown" if name in UNTESTABLE_ON_EMULATOR else "held" for name in NAMES},
        "individual_attendees": "info",
    }
    assert rows[-1]["detail"].startswith("yes: ")
    assert all(set(row) == set(COLUMNS) and row["source"] in ("spec", "issue tracker", "inferred") for row in rows)
    assert 10 <= len(emulator.request_log) - before <= 27


def test_requests_are_small_and_read_only(cli: Any, emulator: Any, org: str) -> None:
    before = len(emulator.request_log)

    assert deep(cli, org).returncode == 0

    asked = emulator.request_log[before:]
    assert {entry.method for entry in asked} == {"GET"}
    assert all(1 <= int(parse_qs(urlsplit(entry.path).query)["per_page"][0]) <= 5 for entry in asked)


def test_no_patient_data_in_any_format(cli: Any, clinic: Any, org: str) -> None:
    outputs = [deep(cli, org, "--format", fmt) for fmt in ("table", "json", "jsonl", "csv")]

    patients = list(clinic.patients.records.values())
    private = {value for p in patients for value in (p.first_name, p.last_name, p.email) if value and len(value) > 3}
    for output in outputs:
        assert output.returncode == 0, output.stderr
        assert not [value for value in private if value in output.stdout + output.stderr]
    table, _, jsonl, csv_text = (output.stdout for output in outputs)
    assert "Cliniko API assumptions" in table and "documented_filters" in table and "held" in table
    assert [json.loads(line)["name"] for line in jsonl.splitlines()] == NAMES
    assert list(csv.DictReader(io.StringIO(csv_text)))[0]["status"] == "held"


def test_a_rejected_key_stops_before_the_assumptions_with_77(cli: Any, emulator: Any, org: str) -> None:
    emulator.revoke_key(EMULATOR_API_KEY)
    before = len(emulator.request_log)

    result = deep(cli, org, "--format", "json")

    assert result.returncode == 77
    assert len(emulator.request_log) - before == 1
    rows = json.loads(result.stdout)
    assert {row["status"] for row in rows} == {"unknown"}  # the information too: nothing could be told
    assert rows[0]["detail"] == "not tested: the key check failed (exit 77)"
    assert "rejected the API key" in result.stderr and EMULATOR_API_KEY[:-4] not in result.stderr


@pytest.mark.usefixtures("quick_retries")  # the wait before giving up is not what is checked
def test_an_unreachable_cliniko_exits_69(cli: Any, emulator: Any, org: str) -> None:
    emulator.stop()

    result = deep(cli, org, "--format", "json")

    assert result.returncode == 69
    assert {row["status"] for row in json.loads(result.stdout)} == {"unknown"}


def test_no_key_stored_exits_78(cli: Any, conn: psycopg.Connection, emulator: Any) -> None:
    assert cli("org", "add", "no-key", "--name", "No Key").returncode == 0

    result = deep(cli, "no-key")

    assert result.returncode == 78
    assert "credentials set no-key" in result.stderr


def org_on(conn: psycopg.Connection, server: Any, org_id: str = ORG) -> str:
    return setup_org(conn, server.base_url, EMULATOR_API_KEY, org_id)


# Each quirk breaks one assumption; `exactly`: no other row may be violated (False where the break shows through
# more than one assumption, e.g. an ignored sort also scrambles the by-id order of one second).
BROKEN = [
    pytest.param(Quirks(refuse_filters=(("patients", "archived_at"),)), "documented_filters", True, id="refused"),
    pytest.param(
        Quirks(refuse_filters=(("attendees", "updated_at"),), refused_status=422), "documented_filters", True, id="422"
    ),
    pytest.param(Quirks(ignore_sort=True), "sorted", False, id="sort-ignored"),
    pytest.param(Quirks(ids_as_numbers=True), "string_ids", True, id="numeric-ids"),
    pytest.param(Quirks(no_inactive_practitioners_endpoint=True), "inactive_practitioners", True, id="no-inactive"),
    pytest.param(Quirks(ignore_filters=("updated_at",)), "updated_since", False, id="updated-at-ignored"),
    pytest.param(Quirks(ignore_filters=("id",)), "large_ids", True, id="id-ignored"),
    pytest.param(Quirks(fractional_seconds_rendered=True), "whole_second_times", True, id="fractions-shown"),
]


@pytest.mark.parametrize(("quirks", "broken", "exactly"), BROKEN)
def test_a_broken_assumption_is_violated_and_exits_1(
    cli: Any, conn: psycopg.Connection, make_emulator: Any, org: str, quirks: Quirks, broken: str, exactly: bool
) -> None:
    org_on(conn, make_emulator(quirks=quirks), "quirky")

    result = deep(cli, "quirky", "--format", "json")

    assert result.returncode == 1, result.stderr
    rows = rows_by_name(result.stdout)
    violated = {name for name, row in rows.items() if row["status"] == "violated"}
    assert broken in violated
    if exactly:
        assert violated == {broken}
    assert f"quirky: assumption {broken} violated" in result.stderr
    assert f"what depends on it: {rows[broken]['relies']}" in result.stderr


def test_a_refusal_names_the_refused_filter_and_endpoint(
    cli: Any, conn: psycopg.Connection, make_emulator: Any
) -> None:
    org_on(conn, make_emulator(quirks=Quirks(refuse_filters=(("patients", "archived_at"),))))

    row = rows_by_name(deep(cli, ORG, "--format", "json").stdout)["documented_filters"]

    assert row["detail"] == (
        "1 of 1 refused (HTTP 400: This column is not searchable.); refused alone: archived_at (/patients)"
    )


def test_the_sync_error_names_the_row_that_check_credentials_deep_shows(
    cli: Any, conn: psycopg.Connection, make_emulator: Any
) -> None:
    org_on(conn, make_emulator(quirks=Quirks(refuse_filters=(("patients", "archived_at"),))))

    synced = cli("sync", ORG, env=SYNC_ENV)
    checked = rows_by_name(deep(cli, ORG, "--format", "json").stdout)

    assert synced.returncode == 1
    assert "assumption documented_filters (" in synced.stderr and "check-credentials --deep" in synced.stderr
    assert checked["documented_filters"]["status"] == "violated"


@pytest.mark.parametrize(
    ("quirks", "name", "detail"),
    [
        (Quirks(next_links_keep_query=True), "more_pages", "links.next keeps q[] and sort (informational"),
        (Quirks(), "more_pages", "links.next drops q[] or sort (informational"),
        (Quirks(whole_second_storage=True), "one_second", "one shown second only, ids ascending"),
        (Quirks(accept_undocumented_filters=True), "documented_filters", "all accepted"),
        # An ignored archived_at:* cannot be told from "nothing archived": the row says where it was not testable.
        (Quirks(ignore_filters=("archived_at",)), "default_exclusions", "untested: 189 with field:*, 189 without"),
    ],
)
def test_harmless_differences_keep_exit_0(
    cli: Any, conn: psycopg.Connection, make_emulator: Any, quirks: Quirks, name: str, detail: str
) -> None:
    org_on(conn, make_emulator(quirks=quirks))

    result = deep(cli, ORG, "--format", "json")

    assert result.returncode == 0, result.stderr
    row = rows_by_name(result.stdout)[name]
    assert row["status"] == "held" and detail in row["detail"]


def test_all_checks_every_organization_and_exits_with_the_worst(
    cli: Any, conn: psycopg.Connection, emulator: Any, make_emulator: Any, org: str
) -> None:
    org_on(conn, make_emulator(quirks=Quirks(ids_as_numbers=True)), "numeric-ids")

    violated = deep(cli, "--all", "--format", "jsonl")
    emulator.revoke_key(EMULATOR_API_KEY)  # the strict emulator now rejects surf-rehab's key
    rejected = deep(cli, "--all", "--format", "jsonl")

    assert violated.returncode == 1
    rows = [json.loads(line) for line in violated.stdout.splitlines()]
    assert [row["organization_id"] for row in rows] == ["numeric-ids"] * len(NAMES) + [ORG] * len(NAMES)
    assert {row["organization_id"] for row in rows if row["status"] == "violated"} == {"numeric-ids"}
    assert rejected.returncode == 77


@pytest.mark.parametrize(
    ("faults", "status", "detail"),
    [
        (Faults(), "held", "a 429 came with X-RateLimit-Reset"),
        (Faults(reset_header=False, retry_after=True), "violated", "a 429 came with Retry-After"),
    ],
)
def test_a_429_that_happens_is_waited_out_and_its_headers_reported(
    cli: Any, conn: psycopg.Connection, make_emulator: Any, faults: Faults, status: str, detail: str
) -> None:
    # A tight server-side limit (a sync on the same key would have the same effect); the check itself is not
    # throttled here (CLINIKO_SYNC_RATE_LIMIT=off), so it meets the 429 that the limit gives: about 28 requests
    # against 20 per 2 s, so one 429 and one wait.
    org_on(conn, make_emulator(rate_limit=20, rate_window=2.0, faults=faults))

    result = deep(cli, ORG, "--format", "json")

    row = rows_by_name(result.stdout)["rate_limit_reset"]
    assert (row["status"], row["detail"]) == (status, detail)
    assert result.returncode == (0 if status == "held" else 1), result.stderr


def test_the_docs_explain_every_row() -> None:
    commands = (Path(__file__).parents[2] / "docs" / "commands.md").read_text()
    assert [name for name in NAMES if f"| `{name}` |" not in commands] == []


def test_it_says_whether_attendees_lists_individual_appointments(
    cli: Any, conn: psycopg.Connection, make_emulator: Any
) -> None:
    """Information, never a violation: the sync reads classes' attendees by their ids either way."""
    org_on(conn, make_emulator(quirks=Quirks(group_attendees_only=True)))

    result = deep(cli, ORG, "--format", "json")

    row = rows_by_name(result.stdout)["individual_attendees"]
    assert (row["status"], row["detail"][:4], result.returncode) == ("info", "no: ", 0)

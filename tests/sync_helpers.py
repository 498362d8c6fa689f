"""Helpers shared by the sync, fault and CLI tests: set an organization up against an emulator, compute the
expected active patients straight from the emulator's dataset (independently of the sync's SQL), run `sync` the way
cron does (in this process, or in a subprocess where the process matters), and snapshot what a sync leaves in the
database so two runs can be compared."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import phonenumbers
import psycopg
import pytest
from conftest import CliResult, run_cli, run_cli_in_process
from emulator_fixtures import EMULATOR_API_KEY
from psycopg.rows import dict_row

from cliniko_sync.crypto import store_credentials
from cliniko_sync.orgs import add_organization

SYNC_ENV = {"CLINIKO_SYNC_RATE_LIMIT": "off"}


@pytest.fixture(autouse=True)
def in_process_env(monkeypatch: pytest.MonkeyPatch, cli_env: dict[str, str]) -> None:
    """Organizations set up in this process get credentials encrypted with the key the CLI runs use (autouse in the
    modules that import it)."""
    for name in ("CREDENTIALS_ENCRYPTION_KEY", "CLINIKO_SYNC_CONTACT_EMAIL"):
        monkeypatch.setenv(name, cli_env[name])


@pytest.fixture(name="env")
def sync_env(cli_env: dict[str, str]) -> dict[str, str]:
    """The CLI's environment for syncs: no client-side rate limit (the emulator decides), a 2 s HTTP timeout."""
    return {**cli_env, **SYNC_ENV, "CLINIKO_SYNC_HTTP_TIMEOUT": "2"}


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backoff between retries of failed attempts (5xx, timeouts, broken pages) cut to 10 ms for syncs run in this
    process: these tests check that a run recovers, or fails, once the retries are spent, not how long it waited in
    between (the client's unit tests check the waits). A 429's wait is left as the server asked: where a test meets
    429s, waiting them out is part of what it checks."""
    from tenacity import RetryCallState

    from cliniko_sync.cliniko import client

    policy_wait = client._Attempts.wait

    def quick_wait(self: client._Attempts, retry_state: RetryCallState) -> float:
        seconds = policy_wait(self, retry_state)
        error = retry_state.outcome.exception() if retry_state.outcome else None
        return seconds if isinstance(error, client._RateLimited) else min(seconds, 0.01)

    monkeypatch.setattr(client._Attempts, "wait", quick_wait)


def sync(env: dict[str, str], *args: str) -> CliResult:
    """`cliniko-sync sync ARGS` in this process."""
    return run_cli_in_process(["sync", *args], env)


def sync_in_subprocess(env: dict[str, str], *args: str) -> CliResult:
    """`cliniko-sync sync ARGS` as its own process, for exit statuses at the OS boundary."""
    return run_cli(["sync", *args], env, timeout=300)


def start_sync(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """A sync running in its own process, to signal or kill."""
    command = [sys.executable, "-m", "cliniko_sync", "sync", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def statuses(conn: psycopg.Connection, org: str | None = None) -> list[str]:
    """The sync_log statuses, oldest first (of one organization, or all)."""
    rows = conn.execute(
        "SELECT status FROM sync_log WHERE organization_id = %(org)s OR %(org)s::text IS NULL ORDER BY id",
        {"org": org},
    ).fetchall()
    return [row["status"] for row in rows]


def clean_run_snapshot(make_database: Any, base_url: str, env: dict[str, str], org: str, as_of: str) -> Any:
    """What one uninterrupted sync of the emulator's current data leaves in a fresh database."""
    url = make_database()
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as fresh:
        setup_org(fresh, base_url, EMULATOR_API_KEY, org)
        result = sync({**env, "DATABASE_URL": url}, org, "--as-of", as_of)
        assert result.returncode == 0, result.stderr
        return snapshot(fresh, org)


def fresh_sync_snapshot(make_database: Any, base_url: str, org: str, as_of: datetime) -> Any:
    """What one sync of the emulator's current data, in this process, leaves in a fresh database."""
    from cliniko_sync.sync.pipeline import sync_organization

    url = make_database()
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as fresh:
        setup_org(fresh, base_url, EMULATOR_API_KEY, org)
        assert sync_organization(url, org, as_of=as_of).status == "success"
        return snapshot(fresh, org)


def setup_org(
    conn: psycopg.Connection,
    base_url: str,
    api_key: str,
    org_id: str = "surf-rehab",
    *,
    window_days: int = 45,
    include_upcoming: bool = False,
    country: str = "AU",
) -> str:
    add_organization(
        conn, org_id, name=f"Synthetic {org_id}", country=country, window_days=window_days,
        include_upcoming=include_upcoming,
    )  # fmt: skip
    store_credentials(conn, org_id, api_key, api_url=base_url)
    return org_id


def _epoch(moment: datetime) -> int:
    return int(moment.timestamp())


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expected_active(
    clinic: Any, as_of: datetime, *, window_days: int = 45, include_upcoming: bool = False
) -> dict[str, dict[str, Any]]:
    """DESIGN §2 applied by hand to the emulator's own records."""
    now = _epoch(as_of)
    window_start = now - window_days * 86400
    eligible = {p.id for p in clinic.patients.records.values() if not (p.archived_at or p.merged_at or p.deleted_at)}
    groups = clinic.group_appointments.records
    bookings: dict[int, list[tuple[int, str, str]]] = {}
    for a in clinic.individual_appointments.records.values():
        if not (a.cancelled_at or a.archived_at or a.deleted_at):
            bookings.setdefault(a.patient_id, []).append((a.starts_at, str(a.id), "individual"))
    for t in clinic.attendees.records.values():
        group = groups.get(t.booking_id)
        if group is None or t.cancelled_at or t.archived_at or t.deleted_at or group.archived_at or group.deleted_at:
            continue
        bookings.setdefault(t.patient_id, []).append((group.starts_at, str(t.id), "group"))
    expected: dict[str, dict[str, Any]] = {}
    for patient_id, items in bookings.items():
        if patient_id not in eligible:
            continue
        items.sort()
        recent = [i for i in items if window_start <= i[0] <= now]
        upcoming = [i for i in items if i[0] > now]
        if not recent and not (include_upcoming and upcoming):
            continue
        past = [i[0] for i in items if i[0] <= now]
        expected[str(patient_id)] = {
            "recent_appointment_count": len(recent),
            "upcoming_appointment_count": len(upcoming),
            "total_appointment_count": len(items),
            "last_appointment_date": _iso(max(past)) if past else None,
            "recent_ids": [(i[1], i[2]) for i in recent],
            "upcoming_ids": [(i[1], i[2]) for i in upcoming],
        }
    return expected


def expected_phone(numbers: list[tuple[str, str]] | None, region: str = "AU") -> str | None:
    """The Mobile number first, then any other valid one, in E.164."""
    if not numbers:
        return None
    ordered = [n for n in numbers if n[0] == "Mobile"] + [n for n in numbers if n[0] != "Mobile"]
    for _, number in ordered:
        try:
            parsed = phonenumbers.parse(number, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(parsed):
            return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    return None


def active_rows(conn: psycopg.Connection, org_id: str) -> dict[str, dict[str, Any]]:
    rows = conn.execute(
        "SELECT * FROM active_patients WHERE organization_id = %s ORDER BY cliniko_patient_id", (org_id,)
    ).fetchall()
    return {row["cliniko_patient_id"]: row for row in rows}


def snapshot(conn: psycopg.Connection, org_id: str) -> dict[str, Any]:
    """Everything a sync decides, without bookkeeping that legitimately differs between runs."""
    state: dict[str, Any] = {}
    for table in (
        "cliniko_patients", "cliniko_individual_appointments", "cliniko_group_appointments", "cliniko_attendees",
        "cliniko_appointment_types", "cliniko_practitioners", "cliniko_businesses",
    ):  # fmt: skip
        state[table] = conn.execute(
            f"SELECT id, updated_at, raw, removed_at IS NOT NULL AS removed FROM {table} "
            "WHERE organization_id = %s ORDER BY id",
            (org_id,),
        ).fetchall()
    # Contacts of current patients, and unlinked ones. A contact made for a patient who was later archived or merged
    # is kept (the address book is never pruned), so an incremental history legitimately has more of those.
    state["contacts"] = conn.execute(
        """
        SELECT c.cliniko_patient_id, c.name, c.email, c.phone, c.created_by
        FROM contacts c
        LEFT JOIN current_patients p ON p.organization_id = c.organization_id AND p.id = c.cliniko_patient_id
        WHERE c.organization_id = %s AND (c.cliniko_patient_id IS NULL OR p.id IS NOT NULL)
        ORDER BY c.cliniko_patient_id NULLS LAST, c.name, c.email, c.phone
        """,
        (org_id,),
    ).fetchall()
    state["active_patients"] = conn.execute(
        """
        SELECT ap.cliniko_patient_id, c.cliniko_patient_id AS contact_patient, ap.recent_appointment_count,
               ap.upcoming_appointment_count, ap.total_appointment_count, ap.last_appointment_date,
               ap.next_appointment_date, ap.recent_appointments, ap.upcoming_appointments, ap.search_date_from,
               ap.search_date_to
        FROM active_patients ap LEFT JOIN contacts c ON c.id = ap.contact_id
        WHERE ap.organization_id = %s ORDER BY ap.cliniko_patient_id
        """,
        (org_id,),
    ).fetchall()
    return state

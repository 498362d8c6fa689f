"""`cliniko-sync list-active`: filters, sorting, paging and every output format, against rows in a real database."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from cliniko_sync import db
from cliniko_sync.orgs import add_organization
from cliniko_sync.reports import list_active

ORG = "surf-rehab"
AS_OF = datetime(2024, 6, 1, tzinfo=UTC)
ISO_Z = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
REQUIRED_KEYS = {
    "organization_id": str,
    "cliniko_patient_id": str,
    "contact_id": (str, type(None)),
    "name": (str, type(None)),
    "phone": (str, type(None)),
    "email": (str, type(None)),
    "recent_appointment_count": int,
    "upcoming_appointment_count": int,
    "total_appointment_count": int,
    "last_appointment_date": (str, type(None)),
    "next_appointment_date": (str, type(None)),
    "recent_appointments": list,
    "upcoming_appointments": list,
}
APPOINTMENT_KEYS = {"id", "kind", "starts_at", "ends_at", "appointment_type", "practitioner", "did_not_arrive"}


def appointment(appointment_id: str, starts_at: datetime, *, kind: str = "individual") -> dict[str, Any]:
    return {
        "id": appointment_id,
        "kind": kind,
        "starts_at": starts_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ends_at": (starts_at + timedelta(minutes=45)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "appointment_type": "Standard consult",
        "practitioner": "Dr Synthetic",
        "did_not_arrive": False,
    }


def add_active_patient(
    conn: Any,
    patient_id: str,
    *,
    name: str | None,
    email: str | None = None,
    phone: str | None = None,
    recent: int = 1,
    upcoming: int = 0,
    last_days_ago: int | None = 5,
    organization_id: str = ORG,
    with_contact: bool = True,
) -> None:
    """A contact and its active_patients row, as the sync would leave them."""
    contact_id = None
    if with_contact:
        contact_id = conn.execute(
            "INSERT INTO contacts (organization_id, cliniko_patient_id, name, email, phone, created_by)"
            " VALUES (%s, %s, %s, %s, %s, 'cliniko-sync') RETURNING id",
            (organization_id, patient_id, name, email, phone),
        ).fetchone()["id"]
    last = AS_OF - timedelta(days=last_days_ago) if last_days_ago is not None else None
    following = AS_OF + timedelta(days=7) if upcoming else None
    recent_list = [appointment(f"{patient_id}0{i}", (last or AS_OF) - timedelta(days=i)) for i in range(recent)]
    upcoming_list = [appointment(f"{patient_id}9{i}", AS_OF + timedelta(days=7 + i)) for i in range(upcoming)]
    conn.execute(
        "INSERT INTO active_patients (organization_id, contact_id, cliniko_patient_id, recent_appointment_count,"
        " upcoming_appointment_count, total_appointment_count, last_appointment_date, next_appointment_date,"
        " recent_appointments, upcoming_appointments, search_date_from, search_date_to)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            organization_id,
            contact_id,
            patient_id,
            recent,
            upcoming,
            recent + upcoming + 2,
            last,
            following,
            Jsonb(recent_list),
            Jsonb(upcoming_list),
            AS_OF - timedelta(days=45),
            AS_OF,
        ),
    )


@pytest.fixture
def clinic(conn: Any) -> Any:
    """Two organizations; surf-rehab has six active patients with awkward names, the other one has one."""
    add_organization(conn, ORG, name="Surf Rehab")
    add_organization(conn, "other-clinic", name="Other Clinic")
    add_active_patient(
        conn, "1000000000000000001", name="Zoë O'Connor", email="zoe@example.com", phone="+61412345678", recent=3,
        upcoming=1, last_days_ago=2,
    )  # fmt: skip
    add_active_patient(
        conn, "1000000000000000002", name="Nguyễn Văn An", email="an_nguyen@example.com", phone="+61298765432",
        recent=1, last_days_ago=30,
    )  # fmt: skip
    add_active_patient(
        conn, "1000000000000000003", name="Łukasz 100% Kowalski", email="lk@example.com", recent=2, last_days_ago=10
    )
    add_active_patient(conn, "1000000000000000004", name="🙂 Emoji Smith", email="emoji@example.com", last_days_ago=20)
    add_active_patient(conn, "1000000000000000005", name="مريم الحسن", phone="+61400000005", recent=5, last_days_ago=1)
    add_active_patient(conn, "1000000000000000006", name=None, upcoming=2, last_days_ago=None)
    add_active_patient(conn, "2000000000000000001", name="Other Person", organization_id="other-clinic")
    return conn


def listed(cli: Any, *args: str) -> list[dict[str, Any]]:
    result = cli("list-active", ORG, "--format", "json", *args)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def ids(rows: list[dict[str, Any]]) -> list[str]:
    return [row["cliniko_patient_id"][-1] for row in rows]


def test_json_rows_have_the_documented_shape(clinic: Any, cli: Any) -> None:
    rows = listed(cli)
    assert len(rows) == 6
    assert {row["organization_id"] for row in rows} == {ORG}
    for row in rows:
        for key, kind in REQUIRED_KEYS.items():
            assert isinstance(row[key], kind), (key, row[key])
        for key in ("last_appointment_date", "next_appointment_date"):
            assert row[key] is None or ISO_Z.match(row[key]), row[key]
        for item in row["recent_appointments"] + row["upcoming_appointments"]:
            assert set(item) >= APPOINTMENT_KEYS
            assert isinstance(item["id"], str) and ISO_Z.match(item["starts_at"])
    zoe = next(row for row in rows if row["name"] == "Zoë O'Connor")
    assert zoe["phone"] == "+61412345678"
    assert zoe["email"] == "zoe@example.com"
    assert zoe["last_appointment_date"] == "2024-05-30T00:00:00Z"
    assert zoe["next_appointment_date"] == "2024-06-08T00:00:00Z"
    assert (zoe["recent_appointment_count"], len(zoe["recent_appointments"])) == (3, 3)
    assert (zoe["upcoming_appointment_count"], len(zoe["upcoming_appointments"])) == (1, 1)
    assert zoe["total_appointment_count"] == 6
    assert re.fullmatch(r"[0-9a-f-]{36}", zoe["contact_id"])


def test_default_sort_is_last_appointment_oldest_first_and_desc_reverses(clinic: Any, cli: Any) -> None:
    # Patient 6 has only upcoming appointments (no last appointment): last, and first when reversed.
    assert ids(listed(cli)) == ["2", "4", "3", "1", "5", "6"]
    assert ids(listed(cli, "--desc")) == ["6", "5", "1", "3", "4", "2"]


def test_sort_by_name_and_by_recent(clinic: Any, cli: Any) -> None:
    names = [row["name"] for row in listed(cli, "--sort", "name")]
    assert names[-1] is None and names[:-1] == sorted(names[:-1])
    assert [row["name"] for row in listed(cli, "--sort", "name", "--desc")] == names[::-1]
    assert ids(listed(cli, "--sort", "recent", "--desc"))[:3] == ["5", "1", "3"]
    recent = [row["recent_appointment_count"] for row in listed(cli, "--sort", "recent")]
    assert recent == sorted(recent)


def test_limit_and_offset_page_through_every_row_once(clinic: Any, cli: Any) -> None:
    everything = ids(listed(cli, "--sort", "name"))
    pages = [ids(listed(cli, "--sort", "name", "--limit", "4", "--offset", str(start))) for start in (0, 4, 8)]
    assert pages[0] + pages[1] == everything
    assert pages[2] == []
    assert listed(cli, "--limit", "0") == []


def test_min_recent_filters_on_recent_appointments(clinic: Any, cli: Any) -> None:
    assert sorted(ids(listed(cli, "--min-recent", "2"))) == ["1", "3", "5"]
    assert listed(cli, "--min-recent", "99") == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("o'connor", ["1"]),  # case-insensitive, apostrophe taken literally
        ("EXAMPLE.COM", ["1", "2", "3", "4"]),  # email
        ("+614123", ["1"]),  # phone
        ("%", ["3"]),  # only the name that really contains a percent sign
        ("_", ["2"]),  # only the email that really contains an underscore
        ("100%", ["3"]),
        ("\\", []),
        ("'; DROP TABLE contacts; --", []),
        ("🙂", ["4"]),
        ("الحسن", ["5"]),
        ("Nguyễn", ["2"]),
        ("ZOË", ["1"]),  # case folding beyond ASCII
        ("nobody at all", []),
    ],
)
def test_search_is_a_literal_case_insensitive_substring(clinic: Any, cli: Any, text: str, expected: list[str]) -> None:
    assert sorted(ids(listed(cli, "--search", text))) == expected
    assert clinic.execute("SELECT count(*) AS n FROM contacts").fetchone()["n"] == 7


def test_search_never_leaves_the_organization(clinic: Any, cli: Any) -> None:
    assert listed(cli, "--search", "Other Person") == []


def test_nul_byte_in_search_is_a_one_line_usage_error(clinic: Any, cli: Any) -> None:
    # A shell's argv cannot carry a NUL byte; the entry point, run in this process, can be given one.
    result = cli("list-active", "surf-rehab", "--search", "a\x00b")
    assert result.returncode == 2
    assert result.stderr == "cliniko-sync: error: --search must not contain a NUL byte\n"
    assert result.stdout == ""


def test_csv_parses_with_one_row_per_patient(clinic: Any, cli: Any) -> None:
    result = cli("list-active", ORG, "--format", "csv", "--sort", "name")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 6
    assert list(rows[0]) == [
        "organization_id", "cliniko_patient_id", "contact_id", "name", "phone", "email", "recent_appointment_count",
        "upcoming_appointment_count", "total_appointment_count", "last_appointment_date", "next_appointment_date",
        "history_complete",
    ]  # fmt: skip
    by_id = {row["cliniko_patient_id"]: row for row in rows}
    assert by_id["1000000000000000003"]["name"] == "Łukasz 100% Kowalski"
    assert by_id["1000000000000000001"]["last_appointment_date"] == "2024-05-30T00:00:00Z"
    assert by_id["1000000000000000006"]["last_appointment_date"] == ""
    assert {row["history_complete"] for row in rows} == {"true"}


def test_jsonl_is_one_object_per_line(clinic: Any, cli: Any) -> None:
    result = cli("list-active", ORG, "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 6
    assert all(set(json.loads(line)) >= set(REQUIRED_KEYS) for line in lines)


def test_table_shows_names_and_phones(clinic: Any, cli: Any) -> None:
    result = cli("list-active", ORG)
    assert result.returncode == 0, result.stderr
    assert "Active patients of surf-rehab" in result.stdout
    assert "Zoë O'Connor" in result.stdout and "+61412345678" in result.stdout
    assert "Other Person" not in result.stdout


def test_an_empty_organization_lists_nothing(clinic: Any, cli: Any) -> None:
    add_organization(clinic, "empty-clinic", name="Empty")
    result = cli("list-active", "empty-clinic", "--format", "json")
    assert (result.returncode, json.loads(result.stdout)) == (0, [])
    result = cli("list-active", "empty-clinic", "--format", "csv")
    assert result.stdout.splitlines()[0].startswith("organization_id,")


def test_a_patient_whose_contact_was_deleted_is_still_listed_from_the_mirror(clinic: Any, cli: Any) -> None:
    clinic.execute(
        "INSERT INTO cliniko_patients (organization_id, id, name, email, phone, phone_valid, updated_at, raw)"
        " VALUES (%s, '1000000000000000002', 'Nguyễn Văn An', 'an_nguyen@example.com', '+61298765432', true, now(),"
        " '{}')",
        (ORG,),
    )
    clinic.execute("DELETE FROM contacts WHERE cliniko_patient_id = '1000000000000000002'")
    row = next(row for row in listed(cli) if row["cliniko_patient_id"] == "1000000000000000002")
    assert (row["contact_id"], row["name"], row["phone"]) == (None, "Nguyễn Văn An", "+61298765432")


def test_every_row_is_listed_without_a_limit(conn: Any, cli: Any) -> None:
    add_organization(conn, ORG, name="Surf Rehab")
    conn.execute(
        "WITH new_contacts AS ("
        "  INSERT INTO contacts (organization_id, cliniko_patient_id, name, created_by)"
        "  SELECT %(org)s, (3000000000000000000 + n)::text, 'Patient ' || n, 'cliniko-sync'"
        "  FROM generate_series(1, 4500) AS n RETURNING id, cliniko_patient_id)"
        " INSERT INTO active_patients (organization_id, contact_id, cliniko_patient_id, recent_appointment_count,"
        "  last_appointment_date, search_date_from, search_date_to)"
        " SELECT %(org)s, id, cliniko_patient_id, 1, %(as_of)s, %(as_of)s, %(as_of)s FROM new_contacts",
        {"org": ORG, "as_of": AS_OF},
    )
    result = cli("list-active", ORG, "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    patient_ids = [json.loads(line)["cliniko_patient_id"] for line in result.stdout.splitlines()]
    assert len(patient_ids) == len(set(patient_ids)) == 4500


def test_unknown_organization_is_a_configuration_error(clinic: Any, cli: Any) -> None:
    result = cli("list-active", "no-such-clinic")
    assert result.returncode == 78
    assert result.stdout == ""
    assert result.stderr.startswith("cliniko-sync: error: unknown organization no-such-clinic")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ["--limit", "-1"],
        ["--offset", "-5"],
        ["--min-recent", "-1"],
        ["--sort", "email"],
        ["--format", "xml"],
        ["--limit", "ten"],
    ],
)
def test_bad_options_are_usage_errors(clinic: Any, cli: Any, args: list[str]) -> None:
    result = cli("list-active", ORG, *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert "Traceback" not in result.stderr


def test_a_malformed_organization_id_is_a_usage_error(clinic: Any, cli: Any) -> None:
    result = cli("list-active", "Surf Rehab; DROP")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "invalid organization id" in result.stderr


def test_a_backslash_is_matched_literally(clinic: Any, cli: Any) -> None:
    add_active_patient(clinic, "1000000000000000007", name="Back\\slash 50%_off", email="bs@example.com")
    assert ids(listed(cli, "--search", "\\")) == ["7"]
    assert ids(listed(cli, "--search", "k\\s")) == ["7"]
    assert ids(listed(cli, "--search", "%_")) == ["7"]
    assert listed(cli, "--search", "\\%") == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30), data=st.data())
def test_any_substring_of_a_name_finds_it(database_url: str, name: str, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(name) - 1))
    end = data.draw(st.integers(start + 1, len(name)))
    with db.connect(database_url) as conn:
        conn.execute("INSERT INTO organizations (id, name) VALUES ('prop', 'Property') ON CONFLICT DO NOTHING")
        add_active_patient(conn, "1", name=name, organization_id="prop")
        found = list(list_active(conn, "prop", search=name[start:end]))
        conn.rollback()
    assert [row["name"] for row in found] == [name]


@pytest.mark.parametrize("command", [["list-active", ORG], ["status"]])
def test_a_database_without_the_schema_is_a_configuration_error(
    cli: Any, empty_database_url: str, command: list[str]
) -> None:
    result = cli(*command, env={"DATABASE_URL": empty_database_url})
    assert result.returncode == 78
    assert (
        result.stderr == "cliniko-sync: error: the database schema is not up to date: run `cliniko-sync db upgrade`\n"
    )

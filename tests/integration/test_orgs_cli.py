"""`cliniko-sync org add | list | show | set` as an operator runs them: exit codes, stdout data, one-line errors."""

from __future__ import annotations

import csv
import io
import json

import pytest

ERROR_PREFIX = "cliniko-sync: error: "


def assert_one_line_error(result, code: int, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == code, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(ERROR_PREFIX)
    assert fragment in lines[0]


def test_add_then_show_as_json(cli) -> None:
    added = cli(
        "org", "add", "surf-rehab", "--name", "Surf Rehab", "--time-zone", "Australia/Brisbane", "--format", "json"
    )
    assert added.returncode == 0, added.stderr

    shown = cli("org", "show", "surf-rehab", "--format", "json")

    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record == json.loads(added.stdout)
    assert {k: record[k] for k in ("id", "name", "country", "time_zone", "window_days", "include_upcoming")} == {
        "id": "surf-rehab",
        "name": "Surf Rehab",
        "country": "AU",
        "time_zone": "Australia/Brisbane",
        "window_days": 45,
        "include_upcoming": False,
    }
    assert record["enabled"] is True
    assert record["credentials_stored"] is False
    assert record["last_validated_at"] is None
    assert record["created_at"].endswith("Z")


def test_list_in_every_format(cli) -> None:
    cli("org", "add", "surf-rehab", "--name", "Surf Rehab")
    cli("org", "add", "city-physio", "--name", "City Physio", "--country", "nz", "--time-zone", "Pacific/Auckland")

    as_json = json.loads(cli("org", "list", "--format", "json").stdout)
    as_jsonl = [json.loads(line) for line in cli("org", "list", "--format", "jsonl").stdout.splitlines()]
    as_csv = list(csv.DictReader(io.StringIO(cli("org", "list", "--format", "csv").stdout)))
    table = cli("org", "list")

    assert [o["id"] for o in as_json] == ["city-physio", "surf-rehab"]
    assert as_jsonl == as_json
    assert [(r["id"], r["country"]) for r in as_csv] == [("city-physio", "NZ"), ("surf-rehab", "AU")]
    assert table.returncode == 0
    assert "City Physio" in table.stdout and "Surf Rehab" in table.stdout


def test_list_of_nothing_is_an_empty_array(cli) -> None:
    result = cli("org", "list", "--format", "json")

    assert result.returncode == 0
    assert json.loads(result.stdout) == []


def test_set_changes_only_the_options_given(cli) -> None:
    cli("org", "add", "surf-rehab", "--name", "Surf Rehab", "--include-upcoming")

    result = cli("org", "set", "surf-rehab", "--window-days", "60", "--disabled", "--format", "json")

    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert (record["window_days"], record["enabled"], record["include_upcoming"], record["name"]) == (
        60,
        False,
        True,
        "Surf Rehab",
    )
    again = json.loads(cli("org", "set", "surf-rehab", "--enabled", "--no-include-upcoming", "--format", "json").stdout)
    assert (again["window_days"], again["enabled"], again["include_upcoming"]) == (60, True, False)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["org", "add", "Surf_Rehab", "--name", "Surf"], "invalid organization id"),
        (["org", "add", "surf", "--name", ""], "must not be empty"),
        (["org", "add", "surf", "--name", "x" * 201], "at most 200"),
        (["org", "add", "surf", "--name", "two\nlines"], "control characters"),
        (["org", "add", "surf", "--name", "Surf", "--country", "XX"], "unknown country"),
        (["org", "add", "surf", "--name", "Surf", "--time-zone", "Mars/Olympus"], "unknown time zone"),
        (["org", "add", "surf", "--name", "Surf", "--window-days", "0"], "1 to 3650"),
        (["org", "add", "surf", "--name", "Surf", "--window-days", "3651"], "1 to 3650"),
    ],
)
def test_bad_values_exit_2_with_one_line(cli, conn, args: list[str], fragment: str) -> None:
    assert_one_line_error(cli(*args), 2, fragment)
    assert conn.execute("SELECT count(*) AS n FROM organizations").fetchone()["n"] == 0


def test_duplicate_add_exits_2(cli) -> None:
    cli("org", "add", "surf-rehab", "--name", "Surf Rehab")

    assert_one_line_error(cli("org", "add", "surf-rehab", "--name", "Again"), 2, "already exists")


def test_bad_set_exits_2_and_changes_nothing(cli) -> None:
    cli("org", "add", "surf-rehab", "--name", "Surf Rehab")

    assert_one_line_error(cli("org", "set", "surf-rehab", "--window-days", "99999"), 2, "1 to 3650")
    assert json.loads(cli("org", "show", "surf-rehab", "--format", "json").stdout)["window_days"] == 45


@pytest.mark.parametrize("args", [["org", "show", "ghost"], ["org", "set", "ghost", "--window-days", "10"]])
def test_unknown_organization_exits_78_naming_org_add(cli, args: list[str]) -> None:
    assert_one_line_error(cli(*args), 78, "org add ghost")


def test_missing_name_is_a_usage_error(cli) -> None:
    result = cli("org", "add", "surf-rehab")

    assert result.returncode == 2
    assert "--name" in result.stderr


def test_schema_not_upgraded_exits_78(cli, empty_database_url: str) -> None:
    result = cli("org", "list", env={"DATABASE_URL": empty_database_url})

    assert_one_line_error(result, 78, "db upgrade")

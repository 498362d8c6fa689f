"""`cliniko-sync status`: runs, liveness, staleness (--max-age), history, and the Prometheus textfile format."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from cliniko_sync.orgs import add_organization, update_organization


def add_run(
    conn: Any,
    organization_id: str,
    status: str,
    *,
    started: str,
    finished: str | None = None,
    heartbeat: str | None = None,
    mode: str = "incremental",
    stats: dict[str, Any] | None = None,
    error_class: str | None = None,
) -> None:
    """A sync_log row; times are SQL intervals before now(), e.g. '10 minutes'."""
    conn.execute(
        "INSERT INTO sync_log (organization_id, status, mode, started_at, heartbeat_at, finished_at, as_of,"
        " window_days, stats, error_class)"
        " VALUES (%(org)s, %(status)s, %(mode)s, now() - %(started)s::interval,"
        " now() - coalesce(%(heartbeat)s, %(finished)s, %(started)s)::interval,"
        " now() - %(finished)s::interval, now() - %(started)s::interval, 45, %(stats)s, %(error_class)s)",
        {
            "org": organization_id,
            "status": status,
            "mode": mode,
            "started": started,
            "finished": finished,
            "heartbeat": heartbeat,
            "stats": Jsonb(stats or {}),
            "error_class": error_class,
        },
    )


def add_active_rows(conn: Any, organization_id: str, count: int) -> None:
    conn.execute(
        "INSERT INTO active_patients (organization_id, cliniko_patient_id, search_date_from, search_date_to)"
        " SELECT %s, n::text, now(), now() FROM generate_series(1, %s) AS n",
        (organization_id, count),
    )


@pytest.fixture
def clinics(conn: Any) -> Any:
    """One organization in each state a monitor cares about."""
    for org_id in ("fresh", "failed", "never", "running", "dead", "disabled"):
        add_organization(conn, org_id, name=f"{org_id.title()} Clinic")
    update_organization(conn, "disabled", enabled=False)
    add_run(conn, "fresh", "success", started="3 hours", finished="3 hours", mode="full")
    add_run(
        conn, "fresh", "success", started="11 minutes", finished="10 minutes", stats={"requests": 12, "rate_limited": 2}
    )
    add_active_rows(conn, "fresh", 3)
    conn.execute(
        "INSERT INTO sync_state (organization_id, stream, cursor_updated_at, updated_at) VALUES"
        " ('fresh', 'patients', now() - interval '2 hours', now()),"
        " ('fresh', 'practitioners', NULL, now() - interval '30 minutes')"
    )
    add_run(conn, "failed", "success", started="181 minutes", finished="3 hours")
    add_run(conn, "failed", "failed", started="1 hour", finished="59 minutes", error_class="ClinikoUnavailableError")
    add_run(conn, "running", "success", started="21 minutes", finished="20 minutes")
    add_run(conn, "running", "running", started="1 minute", heartbeat="5 seconds", mode="full")
    add_run(conn, "dead", "running", started="1 hour", heartbeat="10 minutes")
    return conn


def status_rows(cli: Any, *args: str) -> dict[str, dict[str, Any]]:
    result = cli("status", "--format", "json", *args)
    assert result.returncode == 0, result.stderr
    return {row["organization_id"]: row for row in json.loads(result.stdout)}


def test_status_with_no_organizations_is_empty(cli: Any) -> None:
    result = cli("status", "--format", "json")
    assert (result.returncode, json.loads(result.stdout)) == (0, [])
    assert cli("status", "--max-age", "1h").returncode == 0


def test_an_organization_that_never_ran(clinics: Any, cli: Any) -> None:
    row = status_rows(cli, "never")["never"]
    assert row["last_run_status"] is None and row["last_success_at"] is None
    assert (row["running"], row["active_patients"], row["enabled"]) == (False, 0, True)
    assert row["oldest_cursor_at"] is None


def test_last_run_last_success_counts_and_cursor_age(clinics: Any, cli: Any) -> None:
    rows = status_rows(cli)
    assert list(rows) == ["dead", "disabled", "failed", "fresh", "never", "running"]
    fresh = rows["fresh"]
    assert (fresh["last_run_status"], fresh["last_run_mode"]) == ("success", "incremental")
    assert fresh["last_run_duration_seconds"] == pytest.approx(60, abs=1)
    assert (fresh["last_run_requests"], fresh["last_run_rate_limited"]) == (12, 2)
    assert fresh["active_patients"] == 3
    # The stream whose state moved least recently, not the oldest Cliniko timestamp a cursor holds.
    assert fresh["oldest_cursor_age_seconds"] == pytest.approx(1800, abs=60)
    assert fresh["last_success_age_seconds"] == pytest.approx(600, abs=60)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", fresh["last_success_at"])
    assert isinstance(fresh["last_run_id"], str)
    failed = rows["failed"]
    assert (failed["last_run_status"], failed["last_run_error_class"]) == ("failed", "ClinikoUnavailableError")
    assert failed["last_success_age_seconds"] == pytest.approx(3 * 3600, abs=60)


def test_running_needs_a_fresh_heartbeat(clinics: Any, cli: Any) -> None:
    rows = status_rows(cli)
    assert rows["running"]["running"] is True
    assert rows["running"]["last_run_status"] == "running"
    assert rows["running"]["last_run_duration_seconds"] is None
    # A 'running' row whose process stopped beating ten minutes ago is not a sync in progress.
    assert rows["dead"]["running"] is False
    assert rows["dead"]["last_run_status"] == "running"
    assert not any(row["running"] for name, row in rows.items() if name != "running")


@pytest.mark.parametrize(
    ("args", "code", "stale"),
    [
        (["fresh", "--max-age", "30m"], 0, []),
        (["fresh", "--max-age", "90s"], 1, ["fresh"]),
        (["failed", "--max-age", "2h"], 1, ["failed"]),
        (["failed", "--max-age", "1d"], 0, []),
        (["never", "--max-age", "1d"], 1, ["never"]),
        (["dead", "--max-age", "1d"], 1, ["dead"]),
        (["disabled", "--max-age", "90s"], 0, []),
        (["--max-age", "1d"], 1, ["dead", "never"]),
        (["--max-age", "2h"], 1, ["dead", "failed", "never"]),
    ],
)
def test_max_age_exit_codes(clinics: Any, cli: Any, args: list[str], code: int, stale: list[str]) -> None:
    result = cli("status", "--format", "json", *args)
    assert result.returncode == code, result.stderr
    rows = json.loads(result.stdout)  # the report is printed either way
    assert sorted(row["organization_id"] for row in rows if row["stale"]) == stale
    if stale:
        assert result.stderr.startswith("cliniko-sync: error: stale: ")
        assert len(result.stderr.splitlines()) == 1
        assert all(name in result.stderr for name in stale)
        if "never" in stale:
            assert "never (never succeeded)" in result.stderr
    else:
        assert result.stderr == ""


@pytest.mark.parametrize("duration", ["2", "2x", "h", "-1h", "0s", "1.5h", "", "2 hours", "1h30m"])
def test_a_bad_duration_is_a_usage_error(clinics: Any, cli: Any, duration: str) -> None:
    result = cli("status", "--max-age", duration)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("cliniko-sync: error: invalid duration")


def test_without_max_age_stale_is_null_and_the_exit_code_zero(clinics: Any, cli: Any) -> None:
    assert all(row["stale"] is None for row in status_rows(cli).values())


def test_history_lists_the_latest_runs_newest_first(clinics: Any, cli: Any) -> None:
    result = cli("status", "fresh", "--history", "5", "--format", "json")
    assert result.returncode == 0, result.stderr
    runs = json.loads(result.stdout)
    assert [(run["status"], run["mode"]) for run in runs] == [("success", "incremental"), ("success", "full")]
    assert runs[0]["requests"] == 12 and runs[0]["rate_limited"] == 2
    assert runs[1]["requests"] is None
    result = cli("status", "--history", "3", "--format", "json")
    assert [run["organization_id"] for run in json.loads(result.stdout)] == ["running", "fresh", "running"]


def test_history_csv_and_table(clinics: Any, cli: Any) -> None:
    result = cli("status", "--history", "10", "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 7
    assert rows[0]["id"] and rows[0]["started_at"].endswith("Z")
    result = cli("status", "failed", "--history", "1", "--format", "json")
    assert result.returncode == 0 and json.loads(result.stdout)[0]["error_class"] == "ClinikoUnavailableError"


def test_table_and_csv_summaries(clinics: Any, cli: Any) -> None:
    result = cli("status")
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in ("fresh", "failed", "never", "running", "dead", "disabled"))
    result = cli("status", "--format", "csv")
    rows = {row["organization_id"]: row for row in csv.DictReader(io.StringIO(result.stdout))}
    assert rows["fresh"]["active_patients"] == "3"
    assert rows["fresh"]["oldest_cursor_at"].endswith("Z")
    assert rows["never"]["last_success_at"] == ""


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["no-such-clinic"], 78, "cliniko-sync: error: unknown organization no-such-clinic"),
        (["no-such-clinic", "--history", "3"], 78, "cliniko-sync: error: unknown organization no-such-clinic"),
        (["--history", "0"], 2, ""),
        (["--history", "2", "--format", "prometheus"], 2, "cliniko-sync: error: --history cannot be combined"),
        (["--format", "yaml"], 2, ""),
    ],
)
def test_bad_arguments(clinics: Any, cli: Any, args: list[str], code: int, message: str) -> None:
    result = cli("status", *args)
    assert result.returncode == code
    assert result.stdout == ""
    assert result.stderr.startswith(message) and "Traceback" not in result.stderr


# --- Prometheus --------------------------------------------------------------------------------------------

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[a-zA-Z_]\w*="(?:[^"\\]|\\.)*",?)*)\} (\S+)$')
LABEL = re.compile(r'([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> tuple[dict[str, str], dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    """A small parser for the text exposition format: metric types, and samples keyed by name and labels."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
        elif line.startswith("# HELP "):
            assert len(line.split(" ", 3)) == 4
        else:
            match = SAMPLE.match(line)
            assert match, line
            name, labels, value = match.groups()
            assert name in types, f"{name} has no TYPE line before its samples"
            key = (name, frozenset(LABEL.findall(labels)))
            assert key not in samples, f"duplicate sample {line}"
            samples[key] = float(value)
    return types, samples


def test_prometheus_textfile_parses_back(clinics: Any, cli: Any) -> None:
    result = cli("status", "--format", "prometheus")
    assert result.returncode == 0, result.stderr
    types, samples = parse_prometheus(result.stdout)
    assert all(name.startswith("cliniko_sync_") for name in types)
    assert {name for name, kind in types.items() if kind != "gauge"} == {"cliniko_sync_skipped_runs_total"}
    assert types["cliniko_sync_skipped_runs_total"] == "counter"

    def value(name: str, org: str, **labels: str) -> float | None:
        return samples.get((name, frozenset({("organization", org), *labels.items()})))

    last_success = value("cliniko_sync_last_success_timestamp_seconds", "fresh")
    assert last_success is not None
    assert abs(datetime.now(UTC).timestamp() - 600 - last_success) < 120
    assert value("cliniko_sync_last_success_timestamp_seconds", "never") == 0
    assert value("cliniko_sync_last_run_duration_seconds", "fresh") == pytest.approx(60, abs=1)
    assert value("cliniko_sync_last_run_status", "fresh", status="success") == 1
    assert value("cliniko_sync_last_run_status", "fresh", status="failed") == 0
    assert value("cliniko_sync_last_run_status", "failed", status="failed") == 1
    assert value("cliniko_sync_last_run_status", "never", status="success") is None
    assert value("cliniko_sync_active_patients", "fresh") == 3
    assert value("cliniko_sync_active_patients", "never") == 0
    assert value("cliniko_sync_last_run_api_requests", "fresh") == 12
    assert value("cliniko_sync_last_run_rate_limited_responses", "fresh") == 2
    assert value("cliniko_sync_running", "running") == 1
    assert value("cliniko_sync_running", "dead") == 0
    assert value("cliniko_sync_enabled", "disabled") == 0
    organizations = {dict(labels)["organization"] for _, labels in samples}
    assert organizations == {"fresh", "failed", "never", "running", "dead", "disabled"}


def test_prometheus_for_one_organization_with_max_age(clinics: Any, cli: Any) -> None:
    result = cli("status", "failed", "--format", "prometheus", "--max-age", "2h")
    assert result.returncode == 1
    _, samples = parse_prometheus(result.stdout)
    assert {dict(labels)["organization"] for _, labels in samples} == {"failed"}
    assert result.stderr.startswith("cliniko-sync: error: stale: failed")


def test_prometheus_with_no_organizations_still_declares_the_metrics(cli: Any) -> None:
    result = cli("status", "--format", "prometheus")
    assert result.returncode == 0
    types, samples = parse_prometheus(result.stdout)
    assert "cliniko_sync_last_success_timestamp_seconds" in types and samples == {}


def test_max_age_also_guards_the_history_listing(clinics: Any, cli: Any) -> None:
    result = cli("status", "never", "--history", "5", "--max-age", "1h", "--format", "json")
    assert (result.returncode, json.loads(result.stdout)) == (1, [])
    assert result.stderr == "cliniko-sync: error: stale: never (never succeeded)\n"

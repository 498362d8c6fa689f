"""What an operator sees (issue 11): 80-column tables, honest status, cron logs, visible and interruptible waits,
clean scripting, one-line usage errors, failure reasons, org remove, credentials, progress totals, small things.

Most tests run the CLI in-process through cliniko_sync.cli.main (the same error handling as the console script);
the process boundary is used only where it matters: broken pipes, signals and a pseudo-terminal.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from conftest import TEST_CONTACT_EMAIL, run_cli, run_cli_in_process
from emulator_fixtures import EMULATOR_API_KEY
from psycopg.types.json import Jsonb
from schema_helpers import errors
from sync_helpers import SYNC_ENV, setup_org

from cliniko_sync import cli
from cliniko_sync.cliniko.client import ClinikoClient
from cliniko_sync.cliniko.waits import StopRequested, Wait
from cliniko_sync.emulator.server import Faults
from cliniko_sync.orgs import add_organization, update_organization
from cliniko_sync.sync.pipeline import LOCK_NAMESPACE

REAL_LOOKING_KEY = "MS0xMjM0NTY3ODkwMTIzNDU2h7Qz-au1"


@dataclass
class Seen:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def run(cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """`run("status", columns=80)`: the CLI in this process (conftest.run_cli_in_process), as a user would run it,
    with COLUMNS set and no client-side rate limit. Organizations set up in the test use the same key."""
    for name in ("DATABASE_URL", "CREDENTIALS_ENCRYPTION_KEY", "CLINIKO_SYNC_CONTACT_EMAIL"):
        monkeypatch.setenv(name, cli_env[name])

    def invoke(*args: str, columns: int = 200, stdin: str | None = None) -> Seen:
        env = {**cli_env, "CLINIKO_SYNC_RATE_LIMIT": "off", "COLUMNS": str(columns)}
        result = run_cli_in_process(list(args), env, input=stdin)
        return Seen(result.returncode, result.stdout, result.stderr)

    return invoke


def table_cells(text: str) -> list[list[str]]:
    """The cells of every body line of a rich table (lines drawn with │)."""
    return [[cell.strip() for cell in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]


def assert_fits(text: str, width: int = 80) -> None:
    too_wide = [line for line in text.splitlines() if len(line) > width]
    assert not too_wide, "\n".join(too_wide)


# --- 1. 80-column terminals ---------------------------------------------------------------------------------


@pytest.fixture
def synced(conn: psycopg.Connection, emulator: Any, run: Callable[..., Seen]) -> str:
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    for other in ("harbour-physio-and-sports-medicine", "disabled-clinic"):
        add_organization(conn, other, name=f"{other} with a long name")
    update_organization(conn, "disabled-clinic", enabled=False)
    assert run("sync", org).code == 0
    return org


def test_tables_fit_80_columns_with_ids_and_dates_whole(synced: str, run: Callable[..., Seen], conn: Any) -> None:
    for args in (["status"], ["org", "list"], ["list-active", synced], ["status", "--history", "5"]):
        seen = run(*args, columns=80)
        assert seen.code == 0, seen.stderr
        assert_fits(seen.stdout)
        assert "--wide shows them" in seen.stdout or len(table_cells(seen.stdout)[0]) > 0
    status = run("status", columns=80).stdout
    # Ids and booleans are never cut in two (`Fals`/`e`): each sits whole in one cell.
    cells = {cell for row in table_cells(status) for cell in row}
    assert {"harbour-physio-and-sports-medicine", "disabled-clinic", "surf-rehab"} <= cells
    org_cells = {cell for row in table_cells(run("org", "list", columns=80).stdout) for cell in row}
    assert {"true", "false"} <= org_cells  # the enabled column, whole
    listing = run("list-active", synced, columns=80).stdout
    listed = {cell for row in table_cells(listing) for cell in row}
    dates = [row["last_appointment_date"] for row in json.loads(run("list-active", synced, "--format", "json").stdout)]
    assert {re.sub(r"\+00:00$", "Z", d) for d in dates} <= listed  # dates whole, in one cell each
    assert "hidden to fit 80 columns" in listing and "(--wide shows them)" in listing


def test_wide_shows_every_column(synced: str, run: Callable[..., Seen]) -> None:
    wide = run("status", "--wide", columns=80).stdout
    for header in ("429s", "requests", "cursor", "skipped", "failure"):
        assert header in wide
    assert "hidden to fit" not in wide
    assert max(len(line) for line in wide.splitlines()) > 80


def test_sync_summary_table_fits_and_q_keeps_it(conn: Any, emulator: Any, run: Callable[..., Seen]) -> None:
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    seen = run("-q", "sync", org, "--format", "table", columns=80)
    assert seen.code == 0
    assert seen.stderr == ""  # -q silences stderr only...
    assert "surf-rehab" in seen.stdout and "success" in seen.stdout  # ...the summary on stdout is data: it stays
    assert_fits(seen.stdout)


# --- 2. honest status -----------------------------------------------------------------------------------------


def test_a_locked_run_is_counted_apart_and_never_becomes_the_last_run(
    conn: Any, emulator: Any, run: Callable[..., Seen], database_url: str
) -> None:
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    assert run("sync", org).code == 0
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (LOCK_NAMESPACE, org))
        locked = run("sync", org)
    assert locked.code == 75
    rows = json.loads(run("status", "--format", "json").stdout)
    assert errors("status", rows) == []  # its schema, which never lets a skipped run be the last run
    (row,) = rows
    assert (row["last_run_status"], row["skipped_runs"]) == ("success", 1)
    assert errors("status", [{**row, "last_run_status": "skipped"}])
    assert row["last_run_requests"] > 0 and row["last_run_duration_seconds"] > 0
    assert row["last_success_at"] is not None and row["last_skipped_at"] is not None
    metrics = run("status", "--format", "prometheus").stdout
    assert f'cliniko_sync_last_run_status{{organization="{org}",status="success"}} 1' in metrics
    assert f'cliniko_sync_skipped_runs_total{{organization="{org}"}} 1' in metrics
    assert "# TYPE cliniko_sync_skipped_runs_total counter" in metrics
    stamp = re.search(rf'cliniko_sync_last_success_timestamp_seconds{{organization="{org}"}} (\d+)', metrics)
    assert stamp and int(stamp.group(1)) > 1_700_000_000
    assert re.search(rf'cliniko_sync_last_run_api_requests{{organization="{org}"}} [1-9]', metrics)


# --- 3. cron logs ---------------------------------------------------------------------------------------------

JSON_KEYS = {"timestamp", "level", "organization", "event", "message"}


def test_json_logs_every_stderr_line_is_an_object_including_the_error(
    conn: Any, emulator: Any, run: Callable[..., Seen]
) -> None:
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    seen = run("-v", "--log-format", "json", "sync", org)
    assert seen.code == 0
    lines = [json.loads(line) for line in seen.stderr.splitlines()]
    assert lines and all(set(line) == JSON_KEYS for line in lines)
    events = [line["event"] for line in lines]
    assert "stream_started" in events and "stream_done" in events
    (summary,) = [line for line in lines if line["event"] == "sync_finished"]
    assert summary["organization"] == org and summary["level"] == "notice"
    assert re.fullmatch(r"sync success in [\d.]+s: \d+ requests, \d+ records, \d+ active patients", summary["message"])
    emulator.revoke_key(EMULATOR_API_KEY)
    failed = run("--log-format", "json", "sync", org)
    assert failed.code == 77
    lines = [json.loads(line) for line in failed.stderr.splitlines()]  # the final error line too
    assert all(set(line) == JSON_KEYS for line in lines)
    assert lines[-1]["level"] == "error" and lines[-1]["organization"] == org
    assert "rejected the API key" in lines[-1]["message"]
    usage = run("--log-format", "json", "status", "no-such-clinic")
    (error,) = [json.loads(line) for line in usage.stderr.splitlines()]
    assert (error["level"], error["event"]) == ("error", "error") and "unknown organization" in error["message"]


def test_text_logs_carry_iso_timestamps_when_stderr_is_not_a_terminal(
    conn: Any, emulator: Any, run: Callable[..., Seen]
) -> None:
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    seen = run("-v", "sync", org)
    assert seen.code == 0
    lines = seen.stderr.splitlines()
    assert lines and all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|NOTICE) ", line) for line in lines)
    assert any("patients: done" in line for line in lines)


def test_crontab_example_logs_what_really_happens() -> None:
    from pathlib import Path

    crontab = (Path(__file__).resolve().parents[2] / "crontab.example").read_text(encoding="utf-8")
    for name in ("CLINIKO_SYNC_DATA_DIR", "DATABASE_URL", "CREDENTIALS_ENCRYPTION_KEY", "CLINIKO_SYNC_CONTACT_EMAIL"):
        assert name in crontab
    sync_lines = [line for line in crontab.splitlines() if " sync " in line and not line.startswith("#")]
    assert sync_lines and all("--log-format json" in line and " -q " not in line for line in sync_lines)


# --- 4 and 5. waits are visible, Ctrl-C within a second -------------------------------------------------------


def test_the_client_reports_each_retry_and_why(emulator: Any) -> None:
    emulator.set_faults(Faults(error_rate=1.0))
    waits: list[Wait] = []
    client = ClinikoClient(
        EMULATOR_API_KEY, contact_email=TEST_CONTACT_EMAIL, api_url=emulator.base_url, rate_limit=None,
        max_attempts=3, on_wait=waits.append,
    )  # fmt: skip
    client.sleep = lambda seconds: None
    with client, pytest.raises(Exception, match="after 3 attempts"):
        client.list_page("patients")
    assert [(w.kind, w.attempt, w.max_attempts) for w in waits] == [("retry", 2, 3), ("retry", 3, 3)]
    assert re.fullmatch(r"retry 2/3 in \d+ s after HTTP 50[023]", waits[0].describe())


def test_an_unreachable_cliniko_is_named_in_the_wait() -> None:
    waits: list[Wait] = []
    client = ClinikoClient(
        EMULATOR_API_KEY, contact_email=TEST_CONTACT_EMAIL, api_url="http://127.0.0.1:9/v1", rate_limit=None,
        max_attempts=2, on_wait=waits.append,
    )  # fmt: skip
    client.sleep = lambda seconds: None
    with client, pytest.raises(Exception, match="connection failed"):
        client.list_page("patients")
    assert [w.describe(0) for w in waits] == ["Cliniko unreachable, retry 2/2"]
    assert Wait("rate_limit", 23.2).describe() == "waiting 23 s for Cliniko's rate limit (HTTP 429)"
    assert Wait("throttle", 4).describe() == "waiting 4 s for Cliniko's rate limit"


def test_a_stop_cuts_a_rate_limit_wait_short(emulator: Any) -> None:
    import threading

    emulator.set_faults(Faults(rate_limit_burst_seconds=60))
    stop = threading.Event()
    waits: list[Wait] = []

    def on_wait(wait: Wait) -> None:
        waits.append(wait)
        stop.set()  # as Ctrl-C would, while the client is about to wait about a minute

    client = ClinikoClient(
        EMULATOR_API_KEY, contact_email=TEST_CONTACT_EMAIL, api_url=emulator.base_url, rate_limit=None,
        stop=stop, on_wait=on_wait,
    )  # fmt: skip
    started = time.monotonic()
    with client, pytest.raises(StopRequested):
        client.list_page("patients")
    assert waits[0].kind == "rate_limit" and waits[0].seconds > 30
    assert time.monotonic() - started < waits[0].seconds / 2  # it did not sit out the wait


def _read_until(fd: int, pattern: str, deadline: float) -> str:
    """Read a pseudo-terminal until `pattern` appears (ANSI codes stripped) or the deadline passes."""
    seen = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 65536).decode(errors="replace")
            except OSError:
                break
            seen += re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", chunk)
            if re.search(pattern, seen):
                break
    return seen


@pytest.fixture
def terminal_sync(conn: Any, emulator: Any, cli_env: dict[str, str]) -> Iterator[Callable[..., Any]]:
    """Start `cliniko-sync sync ORG` on a pseudo-terminal; yields (process, master fd)."""
    started: list[Any] = []

    def start(*args: str) -> tuple[subprocess.Popen[bytes], int]:
        master, slave = pty.openpty()
        env = {**cli_env, **SYNC_ENV, "COLUMNS": "120", "TERM": "xterm"}
        process = subprocess.Popen(
            [sys.executable, "-m", "cliniko_sync", "sync", *args], stdin=slave, stdout=slave, stderr=slave, env=env
        )
        os.close(slave)
        started.append((process, master))
        return process, master

    yield start
    for process, master in started:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)


def test_ctrl_c_during_a_rate_limit_wait_stops_within_a_second(
    conn: Any, emulator: Any, terminal_sync: Callable[..., Any], run: Any
) -> None:
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    emulator.set_faults(Faults(rate_limit_burst_seconds=120))
    process, master = terminal_sync(org)
    screen = _read_until(master, r"waiting \d+ s for Cliniko's rate", time.monotonic() + 60)
    assert re.search(r"waiting \d+ s for Cliniko's rate", screen), screen[-2000:]  # the bar says so, counting down
    process.send_signal(signal.SIGINT)
    interrupted = time.monotonic()
    rest = _read_until(master, r"\$nothing", time.monotonic() + 10)
    process.wait(timeout=30)
    assert time.monotonic() - interrupted < 5  # not the minute the wait had left
    assert process.returncode == 3
    assert "stopping after the current page" in rest
    assert conn.execute("SELECT status FROM sync_log ORDER BY id DESC LIMIT 1").fetchone()["status"] == "partial"


def test_a_second_ctrl_c_aborts_at_once_saying_what_was_kept(
    conn: Any, emulator: Any, terminal_sync: Callable[..., Any], run: Any
) -> None:
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    emulator.set_faults(Faults(hang_rate=1.0, hang_seconds=30))  # every answer takes 30 s: only an abort is quick
    process, master = terminal_sync(org)
    _read_until(master, r"appointment_types", time.monotonic() + 30)  # its bar shows as its first page is asked for
    process.send_signal(signal.SIGINT)
    _read_until(master, r"stopping after the current page", time.monotonic() + 10)
    process.send_signal(signal.SIGINT)
    # Read on until the terminal closes: the first stop's lines say "the next run resumes" too, and a terminal left
    # unread fills up, so the abort's own line could never be written.
    rest = _read_until(master, r"\$never", time.monotonic() + 10)
    process.wait(timeout=10)
    assert process.returncode == 130
    said = re.sub(r"\s*\r?\n", " ", rest)  # the terminal wraps long lines
    assert "cliniko-sync: error: aborted: kept every page committed so far" in said
    assert "the next run resumes from there" in said


# --- 6. scripting ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["table", "json", "jsonl", "csv"])
def test_list_active_into_head_exits_0_quietly(conn: Any, cli_env: dict[str, str], fmt: str) -> None:
    add_organization(conn, "big-clinic", name="Big Clinic")
    conn.execute(
        "INSERT INTO active_patients (organization_id, cliniko_patient_id, search_date_from, search_date_to,"
        " recent_appointment_count, last_appointment_date)"
        " SELECT 'big-clinic', n::text, now(), now(), 1, now() - n * interval '1 minute'"
        " FROM generate_series(1, 1500) AS n"
    )  # over 64 KiB in every format, more than a pipe holds, so the reader's going away is felt
    process = subprocess.Popen(
        [sys.executable, "-m", "cliniko_sync", "list-active", "big-clinic", "--format", fmt],
        env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    head = [process.stdout.readline() for _ in range(3)]  # `| head -3`
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 0
    assert stderr == b""
    assert all(head)


def test_csv_booleans_are_true_and_false(conn: Any, run: Callable[..., Seen]) -> None:
    add_organization(conn, "surf-rehab", name="Surf Rehab")
    seen = run("org", "list", "--format", "csv")
    header, row = seen.stdout.splitlines()[:2]
    values = dict(zip(header.split(","), row.split(","), strict=True))
    assert (values["enabled"], values["include_upcoming"], values["credentials_stored"]) == ("true", "false", "false")


def test_sync_json_is_one_object_even_when_the_run_failed(conn: Any, emulator: Any, run: Callable[..., Seen]) -> None:
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    emulator.revoke_key(EMULATOR_API_KEY)
    seen = run("sync", org, "--format", "json")
    assert seen.code == 77
    assert json.loads(seen.stdout)["status"] == "failed"  # a run started: stdout carries its object
    nothing = run("sync", "no-such-clinic", "--format", "json")
    assert (nothing.code, nothing.stdout) == (78, "")  # no run started: stdout is empty


# --- 7. usage errors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["list-active", "x", "--format", "xml"], "invalid --format 'xml' (choose table, json, jsonl, csv)"),
        (["db", "grants", "--format", "prometheus"], "invalid --format 'prometheus' (choose table, json, jsonl, csv)"),
        (["list-active", "x", "--limit", "abc"], "invalid --limit 'abc' (a whole number of at least 0)"),
        (["sync", "--all", "--jobs", "99"], "invalid --jobs '99' (a whole number from 1 to 16)"),
        (["emulator", "--port", "99999"], "invalid --port '99999' (a whole number from 0 to 65535)"),
        (["sync", "surf-rehab", "-q"],
         "-q is a global option: global options go before the command, e.g. cliniko-sync -q sync ORG"),
        (["sync", "surf-rehab", "--jobs", "2"],
         "--jobs only applies with --all or --due (one organization is synced by one job)"),
        (["list-active"], "missing ORG (see cliniko-sync list-active --help)"),
        (["nosuch"], "no such command 'nosuch' (see cliniko-sync --help)"),
        (["org", "set", "surf-rehab"], "nothing to change: give at least one of --name, --country, --time-zone, "
         "--window-days, --include-upcoming/--no-include-upcoming, --enabled/--disabled, --sync-interval, "
         "--full-sync-interval"),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line_and_exit_2(run: Callable[..., Seen], conn: Any, args: list[str], line: str) -> None:
    add_organization(conn, "surf-rehab", name="Surf Rehab")
    seen = run(*args)
    assert (seen.code, seen.stdout, seen.stderr) == (2, "", f"cliniko-sync: error: {line}\n")


def test_help_has_no_fake_metavars_and_ends_with_examples(run: Callable[..., Seen]) -> None:
    import typer.main

    top = run("--help", columns=80).stdout
    assert "-v, --verbose" in top and "repeatable" in top
    for path, _ in _commands(typer.main.get_command(cli.app)):
        text = run(*path, "--help", columns=80).stdout
        assert not re.search(r"<(int|bool|str|float|list)[^>]*>|--[\w-]+ <", text), (path, text)  # Typer's own
        assert "{" not in text.split("\n", 1)[0]  # the usage line: ORG or [ORG], not {ORG}
        if not getattr(_, "commands", None):
            examples = text.rstrip().rsplit("Examples:", 1)
            assert len(examples) == 2, path
            shown = [line.strip() for line in examples[1].strip().splitlines()]
            assert 2 <= len(shown) <= 3 and all("cliniko-sync " in line for line in shown), (path, shown)


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        yield (*path, name), sub
        yield from _commands(sub, (*path, name))


def test_shell_completion_prints_a_script_for_the_shell_it_runs_in(cli_env: dict[str, str]) -> None:
    # The shell is found among the command's parent processes, so it runs as a child of bash, as a user's would
    # (the `exit` keeps bash from replacing itself with the command).
    seen = subprocess.run(
        ["bash", "--norc", "-c", f"{sys.executable} -m cliniko_sync --show-completion; exit $?"],
        env=cli_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert seen.returncode == 0, seen.stderr
    assert "_CLINIKO_SYNC_COMPLETE" in seen.stdout and "complete " in seen.stdout


# --- 8. why a run failed ----------------------------------------------------------------------------------------


def test_status_shows_the_last_failure_message_and_history_reads_well(conn: Any, run: Callable[..., Seen]) -> None:
    add_organization(conn, "surf-rehab", name="Surf Rehab")
    message = "Cliniko did not answer GET /patients after 6 attempts: HTTP 502"
    conn.execute(
        "INSERT INTO sync_log (organization_id, status, mode, started_at, finished_at, as_of, window_days, stats,"
        " error_class, error_message) VALUES ('surf-rehab', 'failed', 'full', now() - interval '2 hours',"
        " now() - interval '2 hours', now(), 45, %s, 'ClinikoUnavailableError', %s)",
        (Jsonb({}), message),
    )
    status = run("status", columns=80).stdout
    assert_fits(status)
    words = " ".join(cell for row in table_cells(status) for cell in row if cell)
    assert "2h ago: Cliniko did not" in words and "HTTP 502" in words  # wrapped at spaces, never inside a word
    history = run("status", "--history", "3", columns=120).stdout
    assert "ClinikoUnavailableError" not in history and "HTTP 502" in history
    (row,) = json.loads(run("status", "--history", "3", "--format", "json").stdout)
    assert (row["error_class"], row["error_message"]) == ("ClinikoUnavailableError", message)


def test_a_failed_organizations_bar_stops_and_shows_why(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from cliniko_sync.progress import RichProgress

    screen = io.StringIO()
    monkeypatch.setattr(sys, "stderr", screen)
    monkeypatch.setenv("COLUMNS", "160")
    with RichProgress() as progress:
        progress.stream_started("surf-rehab", "patients", "full")
        progress.page_done("surf-rehab", "patients", 100, 400)
        progress.stream_started("harbour", "patients", "full")
        progress.organization_failed("surf-rehab", "failed: Cliniko rejected the API key …h7Qz-au1 (HTTP 401)")
        progress.page_done("harbour", "patients", 100, 100)
        progress.stream_finished("harbour", "patients")
    shown = screen.getvalue()
    assert re.search(r"surf-rehab patients \(full\).*100/400.*failed: Cliniko rejected the API key", shown)
    assert re.search(r"harbour patients \(full\).*100/100", shown)


# --- 9. org remove --------------------------------------------------------------------------------------------


def _rows_of(conn: Any, org: str) -> dict[str, int]:
    tables = [
        row["table_name"]
        for row in conn.execute(
            "SELECT table_name FROM information_schema.columns WHERE column_name = 'organization_id'"
            " AND table_schema = current_schema() AND table_name IN (SELECT table_name FROM information_schema.tables"
            " WHERE table_type = 'BASE TABLE')"
        )
    ]
    return {t: conn.execute(f"SELECT count(*) AS n FROM {t} WHERE organization_id = %s", (org,)).fetchone()["n"]
            for t in tables}  # fmt: skip


def test_org_remove_deletes_every_row_of_the_organization(conn: Any, emulator: Any, run: Callable[..., Seen]) -> None:
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    other = setup_org(conn, emulator.base_url, EMULATOR_API_KEY, "other-clinic")
    assert run("sync", org).code == 0 and run("sync", other).code == 0
    before_other = _rows_of(conn, other)
    seen = run("org", "remove", org, "--yes", "--format", "json")
    assert seen.code == 0, seen.stderr
    removal = json.loads(seen.stdout)
    assert removal["removed"]["organizations"] == 1 and removal["organization_kept"] is False
    assert removal["removed"]["cliniko_patients"] > 0 and removal["removed"]["sync_log"] == 1
    assert set(_rows_of(conn, org).values()) == {0}
    assert conn.execute("SELECT count(*) AS n FROM organizations WHERE id = %s", (org,)).fetchone()["n"] == 0
    assert _rows_of(conn, other) == before_other  # nobody else's rows


def test_org_remove_keeps_other_systems_contacts_unlinked(conn: Any, emulator: Any, run: Callable[..., Seen]) -> None:
    org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    assert run("sync", org).code == 0
    patient = conn.execute("SELECT id FROM cliniko_patients WHERE organization_id = %s LIMIT 1", (org,)).fetchone()
    conn.execute("DELETE FROM contacts WHERE organization_id = %s AND cliniko_patient_id = %s", (org, patient["id"]))
    conn.execute(
        "INSERT INTO contacts (organization_id, cliniko_patient_id, name, created_by) VALUES (%s, %s, 'CRM', 'crm')",
        (org, patient["id"]),
    )
    seen = run("org", "remove", org, "--yes")
    assert seen.code == 0
    assert "contacts of other systems (unlinked, kept)" in seen.stdout
    assert f"kept {org}, disabled" in seen.stderr
    rows = conn.execute("SELECT cliniko_patient_id, created_by FROM contacts WHERE organization_id = %s", (org,))
    assert [(r["cliniko_patient_id"], r["created_by"]) for r in rows] == [(None, "crm")]
    assert conn.execute("SELECT enabled FROM organizations WHERE id = %s", (org,)).fetchone()["enabled"] is False


def test_org_remove_without_yes_refuses_when_it_cannot_ask(conn: Any, run: Callable[..., Seen]) -> None:
    add_organization(conn, "demo-clinic", name="Demo")
    seen = run("org", "remove", "demo-clinic", stdin="y\n")
    assert (seen.code, seen.stdout) == (2, "")
    assert seen.stderr == (
        "cliniko-sync: error: not removing demo-clinic: confirm with --yes (stdin is not a terminal to ask on)\n"
    )
    assert conn.execute("SELECT count(*) AS n FROM organizations").fetchone()["n"] == 1


def test_check_credentials_all_skips_disabled_organizations(conn: Any, emulator: Any, run: Callable[..., Seen]) -> None:
    setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
    add_organization(conn, "paused-clinic", name="Paused")
    update_organization(conn, "paused-clinic", enabled=False)
    seen = run("check-credentials", "--all", "--format", "json")
    assert seen.code == 0, seen.stderr
    assert [row["organization_id"] for row in json.loads(seen.stdout)] == ["surf-rehab"]


# --- 10. credentials ----------------------------------------------------------------------------------------


def test_credentials_set_refuses_a_malformed_key_offline(conn: Any, run: Callable[..., Seen]) -> None:
    add_organization(conn, "surf-rehab", name="Surf Rehab")
    seen = run("credentials", "set", "surf-rehab", stdin="notakey\n")
    assert seen.code == 2 and seen.stdout == ""
    assert seen.stderr.startswith("cliniko-sync: error: API key … is too short to be a Cliniko API key")
    assert "notakey" not in seen.stderr
    assert conn.execute("SELECT count(*) AS n FROM api_credentials").fetchone()["n"] == 0


def test_credentials_set_keeps_the_stored_api_url_and_shows_a_short_hint(conn: Any, run: Callable[..., Seen]) -> None:
    add_organization(conn, "surf-rehab", name="Surf Rehab")
    first = run("credentials", "set", "surf-rehab", "--api-url", "http://127.0.0.1:8765/v1", stdin="demo-key-au1\n")
    assert first.code == 0, first.stderr
    second = run("credentials", "set", "surf-rehab", stdin=REAL_LOOKING_KEY + "\n")
    assert second.code == 0, second.stderr
    assert "stored Cliniko API key …h7Qz-au1 for surf-rehab" in second.stdout
    assert "http://127.0.0.1:8765/v1" in second.stdout  # the earlier --api-url is still in force
    assert REAL_LOOKING_KEY[:-8] not in second.stdout + second.stderr


# --- 11. progress totals ------------------------------------------------------------------------------------


def test_a_bar_never_shows_more_done_than_its_total(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from cliniko_sync.progress import RichProgress

    screen = io.StringIO()
    monkeypatch.setattr(sys, "stderr", screen)
    with RichProgress() as progress:
        progress.stream_started("surf-rehab", "individual_appointments", "incremental")
        for _ in range(5):  # a resumed pass: Cliniko's total counts only what is left to list
            progress.page_done("surf-rehab", "individual_appointments", 100, 461)
        task = progress._progress.tasks[0]
        assert task.total is not None and task.total >= task.completed == 500
    counts = [tuple(map(int, m)) for m in re.findall(r"(\d+)/(\d+)", screen.getvalue())]
    assert counts and all(done <= total for done, total in counts)


# --- 12. smaller things -----------------------------------------------------------------------------------------


def test_unknown_organization_names_the_database(run: Callable[..., Seen], database_url: str) -> None:
    seen = run("status", "no-such-clinic")
    assert seen.code == 78
    dbname = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]
    assert re.fullmatch(
        rf"cliniko-sync: error: unknown organization no-such-clinic in postgresql://\w+@[^ ]+:\d+/{dbname}: "
        r"add it with `cliniko-sync org add no-such-clinic --name NAME`\n",
        seen.stderr,
    )
    password = psycopg.conninfo.conninfo_to_dict(database_url).get("password")
    assert not password or password not in seen.stderr


def test_the_embedded_database_is_named_by_its_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from cliniko_sync.config import Settings, set_current_settings
    from cliniko_sync.orgs import unknown_organization

    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("CLINIKO_SYNC_DATA_DIR", str(tmp_path / "cron-data"))
    set_current_settings(Settings())
    try:
        message = str(unknown_organization("surf-rehab"))
    finally:
        set_current_settings(Settings())
    assert f"unknown organization surf-rehab in the embedded database in {tmp_path / 'cron-data'}" in message


def test_the_example_env_file_lists_the_database_settings() -> None:
    from pathlib import Path

    example = (Path(__file__).resolve().parents[2] / "cliniko-sync.env.example").read_text(encoding="utf-8")
    for name in ("DATABASE_URL", "CLINIKO_SYNC_DATA_DIR", "CREDENTIALS_ENCRYPTION_KEY", "CLINIKO_SYNC_CONTACT_EMAIL"):
        assert re.search(rf"^#? ?{name}=", example, flags=re.MULTILINE), name


def test_process_boundary_usage_error_is_exit_2(cli_env: dict[str, str]) -> None:
    result = run_cli(["list-active", "x", "--format", "xml"], cli_env)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "cliniko-sync: error: invalid --format 'xml' (choose table, json, jsonl, csv)\n"

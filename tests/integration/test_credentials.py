"""Encrypted credentials: round trips, wrong keys, rotation, and the API key never showing up anywhere."""

from __future__ import annotations

import json

import pytest
from conftest import TEST_ENCRYPTION_KEY
from cryptography.fernet import Fernet
from emulator_fixtures import EMULATOR_API_KEY
from sync_helpers import quick_retries  # noqa: F401 (fixture)

from cliniko_sync.config import ENV_ENCRYPTION_KEY
from cliniko_sync.crypto import load_credentials, load_keys, rotate_credentials, store_credentials
from cliniko_sync.errors import EXIT_CONFIG, EXIT_USAGE, ConfigError, UsageError
from cliniko_sync.orgs import add_organization, get_organization

API_KEY = "MS0xMjM0NTY3ODkwMTIzNDU2Nzg5MC1zZWNyZXQtdGVzdC1rZXk-au4"
OTHER_API_KEY = "T3RoZXJLZXlGb3JUZXN0aW5nT25seVBsZWFzZQ-uk1"
OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()
ERROR_PREFIX = "cliniko-sync: error: "


@pytest.fixture
def encryption_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(ENV_ENCRYPTION_KEY, OLD_KEY)
    return OLD_KEY


@pytest.fixture
def org(conn) -> str:
    add_organization(conn, "surf-rehab", name="Surf Rehab")
    return "surf-rehab"


def stored_token(conn, org_id: str) -> str:  # type: ignore[no-untyped-def]
    return conn.execute("SELECT token FROM api_credentials WHERE organization_id = %s", (org_id,)).fetchone()["token"]


def assert_one_line_error(result, code: int, fragment: str) -> None:  # type: ignore[no-untyped-def]
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(ERROR_PREFIX)
    assert fragment in lines[0]


# --- the plain functions -----------------------------------------------------------------------------------


def test_round_trip_keeps_key_shard_and_url(conn, org: str, encryption_key: str) -> None:
    stored = store_credentials(conn, org, API_KEY)

    loaded = load_credentials(conn, get_organization(conn, org))

    assert loaded == stored
    assert (loaded.api_key, loaded.shard, loaded.api_url) == (API_KEY, "au4", None)
    token = stored_token(conn, org)
    payload = json.loads(Fernet(encryption_key.encode()).decrypt(token.encode()))
    assert payload == {"api_key": API_KEY, "shard": "au4", "api_url": None}


def test_a_token_stored_by_0_1_0_names_the_shard_region(conn, org: str, encryption_key: str) -> None:
    payload = {"api_key": API_KEY, "region": "au4", "api_url": None}
    token = Fernet(encryption_key.encode()).encrypt(json.dumps(payload).encode()).decode()
    conn.execute(
        "INSERT INTO api_credentials (organization_id, service, token) VALUES (%s, 'cliniko', %s)", (org, token)
    )

    loaded = load_credentials(conn, get_organization(conn, org))

    assert (loaded.api_key, loaded.shard, loaded.api_url) == (API_KEY, "au4", None)


def test_storing_again_replaces_the_key(conn, org: str, encryption_key: str) -> None:
    store_credentials(conn, org, API_KEY)
    store_credentials(conn, org, OTHER_API_KEY, api_url="http://127.0.0.1:8765/v1")

    loaded = load_credentials(conn, org)

    assert (loaded.api_key, loaded.shard, loaded.api_url) == (OTHER_API_KEY, "uk1", "http://127.0.0.1:8765/v1")
    assert conn.execute("SELECT count(*) AS n FROM api_credentials").fetchone()["n"] == 1


def test_a_key_without_suffix_belongs_to_au1(conn, org: str, encryption_key: str) -> None:
    assert store_credentials(conn, org, "bGVnYWN5LWtleS13aXRob3V0LXNoYXJk").shard == "au1"


def test_wrong_encryption_key_is_a_configuration_error(
    conn, org: str, encryption_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_credentials(conn, org, API_KEY)
    monkeypatch.setenv(ENV_ENCRYPTION_KEY, NEW_KEY)

    with pytest.raises(ConfigError, match="cannot decrypt") as caught:
        load_credentials(conn, org)

    assert caught.value.exit_code == EXIT_CONFIG
    assert API_KEY not in str(caught.value)


def test_rotation_old_and_new_then_new_alone(
    conn, org: str, encryption_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_organization(conn, "city-physio", name="City Physio")
    store_credentials(conn, org, API_KEY)
    store_credentials(conn, "city-physio", OTHER_API_KEY)
    monkeypatch.setenv(ENV_ENCRYPTION_KEY, f"{NEW_KEY},{OLD_KEY}")
    assert load_credentials(conn, org).api_key == API_KEY  # the old key still decrypts during rotation

    assert rotate_credentials(conn, load_keys()) == 2

    monkeypatch.setenv(ENV_ENCRYPTION_KEY, NEW_KEY)
    assert load_credentials(conn, org).api_key == API_KEY
    assert load_credentials(conn, "city-physio").api_key == OTHER_API_KEY
    monkeypatch.setenv(ENV_ENCRYPTION_KEY, OLD_KEY)
    with pytest.raises(ConfigError, match="cannot decrypt"):
        load_credentials(conn, org)


def test_rotation_without_the_old_key_changes_nothing(
    conn, org: str, encryption_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_credentials(conn, org, API_KEY)
    before = stored_token(conn, org)
    monkeypatch.setenv(ENV_ENCRYPTION_KEY, NEW_KEY)

    with pytest.raises(ConfigError, match="nothing was rotated"):
        rotate_credentials(conn, load_keys())

    assert stored_token(conn, org) == before


def test_rotation_of_nothing_counts_zero(conn, encryption_key: str) -> None:
    assert rotate_credentials(conn, load_keys()) == 0


def test_unknown_organization(conn, encryption_key: str) -> None:
    with pytest.raises(ConfigError, match="unknown organization ghost"):
        load_credentials(conn, "ghost")
    with pytest.raises(ConfigError, match="unknown organization ghost"):
        store_credentials(conn, "ghost", API_KEY)


def test_missing_credentials_say_how_to_set_them(conn, org: str, encryption_key: str) -> None:
    with pytest.raises(ConfigError, match="credentials set surf-rehab") as caught:
        load_credentials(conn, org)

    assert caught.value.exit_code == EXIT_CONFIG


@pytest.mark.parametrize(
    "api_key",
    ["", "has space-au1", "tab\there", "line\nbreak", "nul\x00byte", "abc-zz999", "abc-au1x", "abc-12"],
)
def test_malformed_keys_are_refused_and_not_stored(conn, org: str, encryption_key: str, api_key: str) -> None:
    with pytest.raises(UsageError) as caught:
        store_credentials(conn, org, api_key)

    assert caught.value.exit_code == EXIT_USAGE
    assert conn.execute("SELECT count(*) AS n FROM api_credentials").fetchone()["n"] == 0


@pytest.mark.parametrize(
    "api_url", ["http://api.au1.cliniko.com/v1", "http://10.0.0.5:8765/v1", "ftp://127.0.0.1/v1", "not a url"]
)
def test_insecure_api_urls_are_refused(conn, org: str, encryption_key: str, api_url: str) -> None:
    with pytest.raises(UsageError):
        store_credentials(conn, org, API_KEY, api_url=api_url)

    assert conn.execute("SELECT count(*) AS n FROM api_credentials").fetchone()["n"] == 0


@pytest.mark.parametrize(
    "api_url", ["https://api.au4.cliniko.com/v1", "http://127.0.0.1:8765/v1", "http://localhost:8765/v1"]
)
def test_https_and_loopback_api_urls_are_accepted(conn, org: str, encryption_key: str, api_url: str) -> None:
    assert store_credentials(conn, org, API_KEY, api_url=api_url).api_url == api_url
    assert load_credentials(conn, org).api_url == api_url


# --- the commands ------------------------------------------------------------------------------------------


@pytest.fixture
def cli_org(cli) -> str:  # type: ignore[no-untyped-def]
    result = cli("org", "add", "surf-rehab", "--name", "Surf Rehab")
    assert result.returncode == 0, result.stderr
    return "surf-rehab"


def test_set_reads_the_key_from_stdin_and_confirms_on_one_line(
    cli, cli_org: str, conn, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = cli("credentials", "set", cli_org, input=API_KEY + "\n")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1
    assert "surf-rehab" in lines[0] and "au4" in lines[0] and "api.au4.cliniko.com" in lines[0]
    assert "…rZXk-au4" in lines[0]
    monkeypatch.setenv(ENV_ENCRYPTION_KEY, TEST_ENCRYPTION_KEY)
    assert load_credentials(conn, cli_org).api_key == API_KEY
    shown = json.loads(cli("org", "show", cli_org, "--format", "json").stdout)
    assert shown["credentials_stored"] is True


def test_set_refuses_the_key_as_an_argument(cli, cli_org: str, conn) -> None:
    result = cli("credentials", "set", cli_org, API_KEY, input="")

    assert result.returncode == 2
    assert conn.execute("SELECT count(*) AS n FROM api_credentials").fetchone()["n"] == 0


@pytest.mark.parametrize(
    ("stdin", "fragment"), [("", "no API key"), ("   \n", "no API key"), ("two words-au1\n", "API key")]
)
def test_set_with_a_bad_key_exits_2(cli, cli_org: str, stdin: str, fragment: str) -> None:
    assert_one_line_error(cli("credentials", "set", cli_org, input=stdin), 2, fragment)


def test_set_refuses_plain_http_to_another_host(cli, cli_org: str, conn) -> None:
    result = cli("credentials", "set", cli_org, "--api-url", "http://api.au4.cliniko.com/v1", input=API_KEY)

    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert conn.execute("SELECT count(*) AS n FROM api_credentials").fetchone()["n"] == 0


def test_set_for_unknown_organization_exits_78(cli) -> None:
    assert_one_line_error(cli("credentials", "set", "ghost", input=API_KEY), 78, "org add ghost")


@pytest.mark.parametrize("value", ["", "not-a-fernet-key"])
def test_set_without_a_usable_encryption_key_exits_78(cli, cli_org: str, value: str) -> None:
    result = cli("credentials", "set", cli_org, input=API_KEY, env={ENV_ENCRYPTION_KEY: value})

    assert_one_line_error(result, 78, "cliniko-sync keygen")


def test_rotate_command_counts_rows_and_new_key_alone_then_works(cli, cli_org: str, conn) -> None:
    cli("credentials", "set", cli_org, input=API_KEY)
    new_key = Fernet.generate_key().decode()

    rotated = cli("credentials", "rotate", env={ENV_ENCRYPTION_KEY: f"{new_key},{TEST_ENCRYPTION_KEY}"})

    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 1 stored credential " in rotated.stdout
    payload = json.loads(Fernet(new_key.encode()).decrypt(stored_token(conn, cli_org).encode()))
    assert payload["api_key"] == API_KEY
    old_alone = cli("check-credentials", cli_org, "--format", "json")
    assert old_alone.returncode == 78
    assert "cannot decrypt" in json.loads(old_alone.stdout)[0]["error"]


def test_rotate_with_the_wrong_key_exits_78(cli, cli_org: str) -> None:
    cli("credentials", "set", cli_org, input=API_KEY)

    result = cli("credentials", "rotate", env={ENV_ENCRYPTION_KEY: NEW_KEY})

    assert_one_line_error(result, 78, "nothing was rotated")


def _every_text_value(conn) -> list[str]:  # type: ignore[no-untyped-def]
    """Every text, varchar, char and jsonb value in every table of the schema, as text."""
    from psycopg import sql

    columns = conn.execute(
        "SELECT table_name, column_name FROM information_schema.columns"
        " WHERE table_schema = 'public' AND data_type IN ('text', 'character varying', 'character', 'jsonb', 'ARRAY')"
    ).fetchall()
    values: list[str] = []
    for column in columns:
        query = sql.SQL("SELECT {}::text AS value FROM {}").format(
            sql.Identifier(column["column_name"]), sql.Identifier(column["table_name"])
        )
        values.extend(row["value"] for row in conn.execute(query) if row["value"] is not None)
    return values


@pytest.mark.usefixtures("quick_retries")  # the wait before giving up is not what is checked
def test_the_api_key_appears_nowhere(cli, cli_org: str, conn, emulator) -> None:
    # API_KEY names shard au4, so the (au1) emulator rejects it; EMULATOR_API_KEY is accepted.
    cli("org", "add", "demo", "--name", "Demo")
    outputs = []
    for flags in (["-v"], ["--debug", "-vv", "--log-format", "json"]):
        for org_id, api_key in ((cli_org, API_KEY), ("demo", EMULATOR_API_KEY)):
            outputs.append(cli(*flags, "credentials", "set", org_id, "--api-url", emulator.base_url, input=api_key))
            outputs.append(cli(*flags, "credentials", "set", org_id, input=api_key + " oops"))
            outputs.append(cli(*flags, "credentials", "set", org_id, "--api-url", "http://example.com", input=api_key))
        outputs.append(cli(*flags, "org", "show", cli_org, "--format", "json"))
        outputs.append(cli(*flags, "org", "list", "--format", "csv"))
        outputs.append(cli(*flags, "credentials", "rotate"))
        outputs.append(cli(*flags, "check-credentials", "demo"))
        outputs.append(cli(*flags, "check-credentials", "--all", "--format", "jsonl"))
        outputs.append(cli(*flags, "check-credentials", cli_org, env={"CLINIKO_SYNC_CONTACT_EMAIL": ""}))
        outputs.append(cli(*flags, "check-credentials", "--all", env={ENV_ENCRYPTION_KEY: NEW_KEY}))
    emulator.stop()
    outputs.append(cli("--debug", "-vv", "check-credentials", "--all"))

    assert {0, 2, 69, 77, 78} <= {result.returncode for result in outputs}
    for result in outputs:
        for secret in (API_KEY[:-4], EMULATOR_API_KEY[:-4]):
            assert secret not in result.stdout + result.stderr
    values = _every_text_value(conn)
    assert any(value.startswith("gAAAA") for value in values)  # the Fernet tokens are there…
    for secret in (API_KEY[4:-4], EMULATOR_API_KEY[4:-4]):  # …and the keys are not, in any column
        assert not [value for value in values if secret in value]
    assert conn.execute("SELECT count(*) AS n FROM sync_log").fetchone()["n"] == 0


def test_set_from_a_terminal_prompts_without_echoing_the_key(cli_env: dict[str, str], cli_org: str, conn) -> None:
    import os
    import pty
    import select
    import subprocess
    import sys

    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "cliniko_sync", "credentials", "set", cli_org],
        stdin=terminal,
        stderr=terminal,
        stdout=subprocess.PIPE,
        env=cli_env,
        start_new_session=True,
    )
    os.close(terminal)
    seen = b""

    def read_until(marker: bytes) -> None:
        nonlocal seen
        while marker not in seen:
            ready, _, _ = select.select([controller], [], [], 60)
            assert ready, f"no prompt: {seen!r}"
            try:
                chunk = os.read(controller, 1024)
            except OSError:  # the child closed the terminal
                return
            if not chunk:
                return
            seen += chunk

    read_until(b"Cliniko API key: ")  # getpass prints the final space after turning echo off
    os.write(controller, API_KEY.encode() + b"\n")
    stdout, _ = process.communicate(timeout=60)
    read_until(b"\x00never")
    os.close(controller)

    assert process.returncode == 0, seen
    assert API_KEY.encode() not in seen
    assert b"-au4" in stdout
    assert conn.execute("SELECT count(*) AS n FROM api_credentials").fetchone()["n"] == 1


def test_check_all_reports_every_organization_and_exits_with_the_worst(cli, cli_org: str) -> None:
    import socket

    cli("org", "add", "city-physio", "--name", "City Physio")
    with socket.socket() as unreachable:  # bound but not listening: connections are refused at once
        unreachable.bind(("127.0.0.1", 0))
        port = unreachable.getsockname()[1]
        cli("credentials", "set", cli_org, "--api-url", f"http://127.0.0.1:{port}/v1", input=API_KEY)

        result = cli("check-credentials", "--all", "--format", "json")

    assert result.returncode == 78, result.stderr
    rows = {row["organization_id"]: row for row in json.loads(result.stdout)}
    assert (rows["city-physio"]["exit_code"], rows["city-physio"]["ok"]) == (78, False)
    assert "credentials set city-physio" in rows["city-physio"]["error"]
    assert (rows[cli_org]["exit_code"], rows[cli_org]["shard"], rows[cli_org]["key_hint"]) == (69, "au4", "…rZXk-au4")
    assert rows[cli_org]["api_host"] == f"127.0.0.1:{port}"
    errors = sorted(result.stderr.splitlines())
    assert len(errors) == 2
    assert errors[0].startswith("cliniko-sync: error: city-physio: ")
    assert errors[1].startswith(f"cliniko-sync: error: {cli_org}: ")


@pytest.mark.parametrize("args", [["check-credentials"], ["check-credentials", "surf-rehab", "--all"]])
def test_check_needs_one_organization_or_all(cli, args: list[str]) -> None:
    assert_one_line_error(cli(*args), 2, "--all")


def test_check_of_an_unknown_organization_exits_78(cli) -> None:
    assert_one_line_error(cli("check-credentials", "ghost"), 78, "org add ghost")

"""The database password the libpq way, as the systemd units pass it (contrib/systemd/): DATABASE_URL names a service
(`service=cliniko-sync`) whose host, port, database and user live in PGSERVICEFILE, and the password comes from
PGPASSFILE (a systemd credential), never from the URL or the unit. Against a real password-protected (SCRAM) role on
the TCP test server of test_reader_roles; the last test runs the units' own commands with the environment systemd
would give them (Environment=, EnvironmentFile=, LoadCredential= into $CREDENTIALS_DIRECTORY, %d, %S)."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import TEST_CONTACT_EMAIL, TEST_ENCRYPTION_KEY, CliResult, drop_database, run_cli_in_process
from emulator_fixtures import EMULATOR_API_KEY
from psycopg import sql
from systemd_helpers import UNITS, settings, values
from test_reader_roles import Roles, roles, tcp_admin_url  # noqa: F401 (fixtures)

SERVICE = "cliniko-sync"
PASSWORD = "s3cret-Owner!"


@pytest.fixture
def owner(roles: Roles, tcp_admin_url: str) -> Iterator[dict[str, str]]:  # noqa: F811
    """A login role with a password that owns a fresh, empty database (not a superuser)."""
    role, _ = roles.login(PASSWORD)
    dbname = f"cliniko_sync_libpq_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(tcp_admin_url, autocommit=True) as admin:
        # Before PostgreSQL 16 a CREATEROLE owner that is not a superuser names another role the owner only as its
        # member.
        admin.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(role)))
    params = psycopg.conninfo.conninfo_to_dict(tcp_admin_url)
    yield {"user": role, "dbname": dbname, "port": str(params["port"]), "host": "127.0.0.1"}
    drop_database(tcp_admin_url, dbname)


@pytest.fixture
def libpq_files(owner: dict[str, str], tmp_path: Path) -> dict[str, str]:
    service_file = tmp_path / "pg_service.conf"
    service_file.write_text(f"[{SERVICE}]\n" + "".join(f"{key}={value}\n" for key, value in owner.items()))
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"{owner['host']}:{owner['port']}:{owner['dbname']}:{owner['user']}:{PASSWORD}\n")
    passfile.chmod(0o600)  # libpq ignores a password file others may read
    return {"PGSERVICEFILE": str(service_file), "PGPASSFILE": str(passfile)}


def cli(env: dict[str, str], *args: str) -> CliResult:
    """The CLI with only what a systemd unit would give it (no PG* leaking in from the test process)."""
    return run_cli_in_process(list(args), {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", **env})


def test_a_service_name_and_a_password_file_reach_a_password_protected_role(libpq_files: dict[str, str]) -> None:
    env = {**libpq_files, "DATABASE_URL": f"service={SERVICE}"}
    upgraded = cli(env, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    migrations = json.loads(cli(env, "db", "status", "--format", "json").stdout)
    assert {row["status"] for row in migrations} == {"applied"}
    assert json.loads(cli(env, "status", "--format", "json").stdout) == []


def test_a_url_without_a_password_takes_it_from_the_password_file(
    owner: dict[str, str], libpq_files: dict[str, str]
) -> None:
    url = f"postgresql://{owner['user']}@{owner['host']}:{owner['port']}/{owner['dbname']}"
    result = cli({"PGPASSFILE": libpq_files["PGPASSFILE"], "DATABASE_URL": url}, "db", "upgrade")
    assert result.returncode == 0, result.stderr


def test_without_the_password_file_the_error_names_the_service_and_no_secret(libpq_files: dict[str, str]) -> None:
    result = cli({"PGSERVICEFILE": libpq_files["PGSERVICEFILE"], "DATABASE_URL": f"service={SERVICE}"}, "db", "upgrade")
    assert result.returncode == 78  # no password to give: the configuration is to fix
    (line,) = result.stderr.splitlines()
    assert f"service {SERVICE}" in line and PASSWORD not in line


def test_the_test_server_really_asks_for_the_password(owner: dict[str, str], tcp_admin_url: str) -> None:  # noqa: F811
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(host=owner["host"], port=owner["port"], dbname=owner["dbname"], user=owner["user"],
                        passfile="/nonexistent")  # fmt: skip


def as_systemd_runs(unit: Path, root: Path) -> tuple[list[str], dict[str, str]]:
    """ExecStart's arguments and the environment systemd would give them, with /etc/cliniko-sync and /var/lib moved
    under `root`: Environment= and EnvironmentFile= settings, each LoadCredential= copied (mode 0400) into the
    credentials directory that %d and $CREDENTIALS_DIRECTORY name, StateDirectory= made under %S."""
    credentials, state = root / "credentials" / unit.stem, root / "var/lib"
    credentials.mkdir(parents=True)

    def expand(text: str) -> str:
        text = text.replace("%d", str(credentials)).replace("%S", str(state))
        return text.replace("/etc/cliniko-sync", str(root / "etc")).replace("/var/lib", str(state))

    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "CREDENTIALS_DIRECTORY": str(credentials)}
    for key, value in settings(unit):
        if key == "Environment":
            name, _, assigned = value.strip('"').partition("=")
            env[name] = expand(assigned)
        elif key == "EnvironmentFile":
            env.update(line.split("=", 1) for line in Path(expand(value)).read_text().splitlines() if "=" in line)
        elif key == "LoadCredential":
            name, _, source = value.partition(":")
            shutil.copy(expand(source), credentials / name)
            (credentials / name).chmod(0o400)
        elif key == "StateDirectory":
            for directory in value.split():
                (state / directory).mkdir(parents=True, exist_ok=True)
    (command,) = values(unit, "ExecStart")
    return [expand(argument) for argument in command.split()[1:]], env


def test_the_units_commands_run_with_the_units_environment(
    libpq_files: dict[str, str], tmp_path: Path, emulator: Any
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    shutil.copy(libpq_files["PGSERVICEFILE"], etc / "pg_service.conf")
    shutil.copy(libpq_files["PGPASSFILE"], etc / "pgpass")
    (etc / "encryption.key").write_text(TEST_ENCRYPTION_KEY + "\n")
    (etc / "cliniko-sync.conf").write_text(f"CLINIKO_SYNC_CONTACT_EMAIL={TEST_CONTACT_EMAIL}\n")
    sync, sync_env = as_systemd_runs(UNITS / "cliniko-sync.service", tmp_path)
    assert "CREDENTIALS_ENCRYPTION_KEY" not in sync_env and "PGPASSWORD" not in sync_env
    setup = [
        (["db", "upgrade"], None),
        (["org", "add", "surf-rehab", "--name", "Surf Rehab"], None),
        (["credentials", "set", "surf-rehab", "--api-url", emulator.base_url], EMULATOR_API_KEY),
    ]
    for step, stdin in setup:
        done = run_cli_in_process(step, sync_env, input=stdin)
        assert done.returncode == 0, (step, done.stderr)

    synced = run_cli_in_process(sync, sync_env)
    assert synced.returncode == 0, synced.stderr
    assert "synced 1 due organizations (1 success)" in synced.stderr  # JSON log lines, for the journal

    metrics, metrics_env = as_systemd_runs(UNITS / "cliniko-sync-metrics.service", tmp_path)
    written = run_cli_in_process(metrics, metrics_env)
    assert (written.returncode, written.stdout, written.stderr) == (0, "", "")
    textfile = tmp_path / "var/lib/cliniko-sync-metrics/cliniko_sync.prom"
    assert 'cliniko_sync_last_run_status{organization="surf-rehab",status="success"} 1' in textfile.read_text()

"""The database password the libpq way, as the systemd units pass it (contrib/systemd/): DATABASE_URL names a service
(`service=cliniko-sync`) whose host, port, database and user live in PGSERVICEFILE, and the password comes from
PGPASSFILE (a systemd credential), never from the URL or the unit. Against a real password-protected (SCRAM) role on
the TCP test server of test_reader_roles."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from conftest import CliResult, run_cli_in_process, url_for_database
from psycopg import sql
from test_reader_roles import Roles, roles, tcp_admin_url  # noqa: F401 (fixtures)

SERVICE = "cliniko-sync"
PASSWORD = "s3cret-Owner!"


@pytest.fixture
def owner(roles: Roles, tcp_admin_url: str) -> Iterator[dict[str, str]]:  # noqa: F811
    """A login role with a password that owns a fresh, empty database (not a superuser)."""
    role, _ = roles.login(PASSWORD)
    dbname = f"cliniko_sync_libpq_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(tcp_admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(role)))
    params = psycopg.conninfo.conninfo_to_dict(tcp_admin_url)
    yield {"user": role, "dbname": dbname, "port": str(params["port"]), "host": "127.0.0.1"}
    with psycopg.connect(tcp_admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


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
    assert result.returncode == 69
    (line,) = result.stderr.splitlines()
    assert f"service {SERVICE}" in line and PASSWORD not in line


def test_the_test_server_really_asks_for_the_password(owner: dict[str, str], tcp_admin_url: str) -> None:  # noqa: F811
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(url_for_database(tcp_admin_url, owner["dbname"]).replace("postgres@", f"{owner['user']}@"),
                        host="127.0.0.1", passfile="/nonexistent")  # fmt: skip

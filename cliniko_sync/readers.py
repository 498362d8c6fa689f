"""Reader roles (DESIGN §5): database roles granted read access to chosen organizations, and nothing more.

The mapping lives in `reader_grants`, which only the tool's own role (the tables' owner) can write; every tenant
table's row-level security policy admits a row only when its organization is mapped to the querying role or to a
role it is a member of (sql/migrations/002_reader_roles.sql).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from cliniko_sync.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from cliniko_sync.db import DictConnection

# What a reader may read: the tool's results, the definitions' views, and how fresh the data is. The tables only where
# row-level security guards them: not a contacts table the tool adopted from another system
# (sql/migrations/008_contacts.sql; unless `db upgrade --contacts-row-security`), whose rows readers reach through
# CONTACTS_VIEW, which applies the grants itself.
READER_TABLES = ("active_patients", "contacts")
READER_VIEWS = ("current_patients", "qualifying_appointments")
CONTACTS_VIEW = "reader_contacts"
# sync_log without error_message (free text from exceptions) and without the sync host's name and pid.
SYNC_LOG_COLUMNS = (
    "id",
    "organization_id",
    "status",
    "mode",
    "started_at",
    "heartbeat_at",
    "finished_at",
    "as_of",
    "window_days",
    "include_upcoming",
    "stats",
    "error_class",
)
MIRROR_PREFIX = "cliniko_"
MAX_ROLE_NAME_BYTES = 63  # PostgreSQL's NAMEDATALEN - 1; longer names would be silently truncated
PASSWORD_ALGORITHM = b"scram-sha-256"


@dataclass(frozen=True)
class GrantResult:
    role: str
    organizations: list[str]
    relations: list[str]
    created: bool


@dataclass(frozen=True)
class RevokeResult:
    role: str
    organizations: list[str]  # the grants removed
    remaining: list[str]  # organizations the role may still read
    privileges_revoked: bool


def validate_role_name(role: str) -> str:
    """A role name as PostgreSQL stores it (case-sensitive, no quoting); refused when it cannot name a reader."""
    if not role or "\x00" in role:
        raise UsageError("the role name must not be empty")
    if len(role.encode()) > MAX_ROLE_NAME_BYTES:
        raise UsageError(f"the role name must be at most {MAX_ROLE_NAME_BYTES} bytes")
    if role.lower() == "public" or role.startswith("pg_"):
        raise UsageError(f"{role!r} is reserved by PostgreSQL; name a role of your own")
    return role


def _schema(conn: DictConnection) -> str:
    row = conn.execute("SELECT current_schema() AS name").fetchone()
    assert row is not None
    return str(row["name"])


def mirror_tables(conn: DictConnection) -> list[str]:
    """The cliniko_* mirror tables of this schema, from the catalog (so a new mirror is covered without a list)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace "
        "AND c.relkind IN ('r', 'p') AND starts_with(c.relname, %s) ORDER BY 1",
        (MIRROR_PREFIX,),
    ).fetchall()
    return [row["relname"] for row in rows]


def _view_columns(conn: DictConnection) -> dict[str, list[str]]:
    """Table columns the reader-facing views read: the views run as the invoker, so the reader needs these."""
    from cliniko_sync.db import query

    columns: dict[str, list[str]] = {}
    for row in conn.execute(query("reader_view_columns"), {"views": list(READER_VIEWS)}):
        columns.setdefault(row["table_name"], []).append(row["column_name"])
    return columns


def _select_on(table: str, columns: Iterable[str] | None, role: str) -> sql.Composed:
    target = (
        sql.SQL("SELECT")
        if columns is None
        else sql.SQL("SELECT ({})").format(sql.SQL(", ").join(map(sql.Identifier, columns)))
    )
    return sql.SQL("GRANT {} ON {} TO {}").format(target, sql.Identifier(table), sql.Identifier(role))


def _reader_tables(conn: DictConnection) -> list[str]:
    """READER_TABLES that row-level security guards (not an adopted one, unless asked for), then CONTACTS_VIEW."""
    unguarded = conn.execute("SELECT table_name FROM adopted_tables WHERE NOT row_security").fetchall()
    return [*(name for name in READER_TABLES if name not in {row["table_name"] for row in unguarded}), CONTACTS_VIEW]


def _grant_statements(conn: DictConnection, role: str, *, with_mirrors: bool) -> tuple[list[sql.Composed], list[str]]:
    """The GRANTs that give `role` read access, and the relations named for the operator."""
    statements = [sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(_schema(conn)), sql.Identifier(role))]
    tables = _reader_tables(conn)
    statements += [_select_on(name, None, role) for name in (*tables, *READER_VIEWS)]
    statements.append(_select_on("sync_log", SYNC_LOG_COLUMNS, role))
    relations = [*tables, *READER_VIEWS, "sync_log (without error_message, hostname, pid)"]
    mirrors = mirror_tables(conn) if with_mirrors else []
    statements += [_select_on(name, None, role) for name in mirrors]
    relations += mirrors
    # Without the mirrors, only the mirror columns the views read (never `raw`).
    for table, columns in _view_columns(conn).items():
        if table not in mirrors:
            statements.append(_select_on(table, columns, role))
    return statements, relations


def _revoke_statements(conn: DictConnection, role: str) -> list[sql.Composed]:
    """Undo every GRANT that db grant can make; revoking a table's SELECT also revokes its column grants. An adopted
    contacts table keeps what its owner granted."""
    tables = [*_reader_tables(conn), *READER_VIEWS, "sync_log", *mirror_tables(conn)]
    return [
        sql.SQL("REVOKE SELECT ON {} FROM {}").format(
            sql.SQL(", ").join(map(sql.Identifier, tables)), sql.Identifier(role)
        ),
        sql.SQL("REVOKE USAGE ON SCHEMA {} FROM {}").format(sql.Identifier(_schema(conn)), sql.Identifier(role)),
    ]


def _role(conn: DictConnection, role: str) -> dict[str, Any] | None:
    from cliniko_sync.db import query

    return conn.execute(query("reader_role"), {"role": role}).fetchone()


def _can_create_roles(conn: DictConnection) -> bool:
    row = conn.execute(
        "SELECT rolcreaterole OR rolsuper AS allowed FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    return bool(row and row["allowed"])


def _require_owner(conn: DictConnection, action: str) -> None:
    """Only the tables' owner can write the grants and GRANT on its tables: say so before trying."""
    row = conn.execute(
        "SELECT pg_has_role(current_user, relowner, 'MEMBER') AS owner FROM pg_class "
        "WHERE oid = 'reader_grants'::regclass"
    ).fetchone()
    if not (row and row["owner"]):
        raise ConfigError(
            f"cannot {action}: run it as the role that owns cliniko-sync's tables "
            "(the one that ran `cliniko-sync db upgrade`)"
        )


def _create_login_role(conn: DictConnection, role: str, read_password: Callable[[], str]) -> None:
    """CREATE ROLE … LOGIN with a SCRAM verifier computed here, so the password itself never reaches the server."""
    if not _can_create_roles(conn):
        raise ConfigError(
            f"cannot create role {role}: the database role cliniko-sync connects as lacks the CREATEROLE privilege "
            f"(ask an administrator for `ALTER ROLE … CREATEROLE`, or create {role} yourself and drop --create)"
        )
    password = read_password()
    if not password:
        raise UsageError("no password given: pipe it on stdin or type it at the prompt")
    verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), PASSWORD_ALGORITHM).decode()
    statement = sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(role), sql.Literal(verifier))
    try:
        conn.execute(statement)
    except psycopg.errors.InsufficientPrivilege:
        raise ConfigError(
            f"cannot create role {role}: the database refused (the CREATEROLE privilege is needed)"
        ) from None


def grant(
    conn: DictConnection,
    role: str,
    organization_ids: list[str],
    *,
    with_mirrors: bool = False,
    read_password: Callable[[], str] | None = None,
) -> GrantResult:
    """Let `role` read `organization_ids` (added to what it may already read); with read_password, create it first.

    One transaction: the role (when created), its privileges and its grants all commit together or not at all.
    """
    from cliniko_sync.orgs import get_organization, validate_org_id

    validate_role_name(role)
    if not organization_ids:
        raise UsageError("name at least one organization with --org")
    wanted = list(dict.fromkeys(validate_org_id(org) for org in organization_ids))
    with conn.transaction():
        _require_owner(conn, f"grant {role} read access")
        for org in wanted:
            get_organization(conn, org)
        existing = _role(conn, role)
        if read_password is not None:
            if existing is not None:
                raise ConfigError(f"role {role} already exists: drop --create to grant it read access")
            _create_login_role(conn, role, read_password)
        elif existing is None:
            raise ConfigError(f"role {role} does not exist: create it first, or add --create to make a login role")
        elif existing["bypasses_rls"]:
            raise ConfigError(
                f"role {role} is a superuser, has BYPASSRLS or owns the tables: row-level security cannot restrict "
                "it, so a grant would mean nothing; use a role of its own for the reader"
            )
        statements, relations = _grant_statements(conn, role, with_mirrors=with_mirrors)
        for statement in statements:
            conn.execute(statement)
        conn.cursor().executemany(
            "INSERT INTO reader_grants (organization_id, role_name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [(org, role) for org in wanted],
        )
    return GrantResult(role, wanted, relations, created=read_password is not None)


def revoke(conn: DictConnection, role: str, organization_ids: list[str] | None = None) -> RevokeResult:
    """Take `organization_ids` (default: all) away from `role`; with none left, also revoke its privileges.

    Policies read the grants on every query, so the reader's next query already sees the change.
    """
    from cliniko_sync.orgs import validate_org_id

    validate_role_name(role)
    wanted = None if organization_ids is None else list(dict.fromkeys(map(validate_org_id, organization_ids)))
    with conn.transaction():
        _require_owner(conn, f"revoke {role}'s read access")
        existing = _role(conn, role)
        held = [
            row["organization_id"]
            for row in conn.execute(
                "SELECT organization_id FROM reader_grants WHERE role_name = %s ORDER BY 1", (role,)
            )
        ]
        if existing is None and not held:
            raise ConfigError(f"role {role} does not exist and has no grants")
        removed = [org for org in held if wanted is None or org in wanted]
        conn.execute("DELETE FROM reader_grants WHERE role_name = %s AND organization_id = ANY (%s)", (role, removed))
        remaining = [org for org in held if org not in removed]
        revoke_privileges = not remaining and existing is not None
        if revoke_privileges:
            for statement in _revoke_statements(conn, role):
                conn.execute(statement)
    return RevokeResult(role, removed, remaining, revoke_privileges)


def list_grants(conn: DictConnection) -> list[dict[str, Any]]:
    """One row per (role, organization), with the role's state in the catalog."""
    from cliniko_sync.db import query

    return conn.execute(query("reader_grants_list")).fetchall()

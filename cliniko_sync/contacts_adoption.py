"""Whether a `contacts` table another system owns can be adopted (sql/migrations/008_contacts.sql), checked before
`db upgrade` applies anything: a table 008 cannot adopt stops the upgrade with one line and nothing applied.

008 adds what the tool needs and changes nothing else, so what can stop it is only what it cannot add: a needed column
of another type, a row it would have to invent a value for, a table the tool's role may not alter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cliniko_sync.errors import ConfigError

if TYPE_CHECKING:
    from cliniko_sync.db import DictConnection

ADOPTING_MIGRATION = "008_contacts.sql"
_TEXT = ("text", "character varying")
_TIME = ("timestamp with time zone", "timestamp without time zone")
# The columns the tool reads and writes, with the types it can use (008 adds a missing one as the first).
NEEDED_COLUMNS = {
    "id": ("uuid",),
    "organization_id": _TEXT,
    "cliniko_patient_id": _TEXT,
    "name": _TEXT,
    "email": _TEXT,
    "phone": _TEXT,
    "created_by": _TEXT,
    "created_at": _TIME,
    "updated_at": _TIME,
}
_REQUIRED = frozenset({"id"})  # needed columns 008 cannot add without writing every row

_TABLE = """
SELECT c.relkind, pg_get_userbyid(c.relowner) AS owner,
       pg_has_role(current_user, c.relowner, 'USAGE') AS may_alter,
       to_regclass('active_patients') IS NOT NULL AND EXISTS (
           SELECT 1 FROM pg_constraint f
           WHERE f.conrelid = to_regclass('active_patients') AND f.confrelid = c.oid AND f.contype = 'f'
       ) AS ours
FROM pg_class c
WHERE c.oid = to_regclass('contacts')
"""

_COLUMNS = """
SELECT a.attname AS name, format_type(a.atttypid, NULL) AS type, a.attnotnull AS not_null,
       a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '' AS has_default
FROM pg_attribute a
WHERE a.attrelid = to_regclass('contacts') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""

_SHARED_PATIENT_IDS = """
SELECT count(*) AS n FROM (
    SELECT 1 FROM contacts WHERE cliniko_patient_id IS NOT NULL
    GROUP BY organization_id, cliniko_patient_id HAVING count(*) > 1
) AS shared
"""


def check_adoptable(conn: DictConnection) -> None:
    """Refuse (exit 78), naming the cause, a contacts table of another system that 008 could not adopt; nothing when
    there is no contacts table or it is the tool's own."""
    table = conn.execute(_TABLE).fetchone()
    if table is None or table["ours"]:
        return
    if table["relkind"] not in ("r", "p"):
        raise ConfigError("contacts exists but is not a table: cliniko-sync can adopt only a table (or use --schema)")
    if not table["may_alter"]:
        raise ConfigError(
            f"cannot add cliniko-sync's columns to the existing contacts table: it belongs to role {table['owner']}, "
            f"and the role cliniko-sync connects as is not a member of it (GRANT {table['owner']} TO <that role>)"
        )
    columns = {row["name"]: row for row in conn.execute(_COLUMNS)}
    for name, types in NEEDED_COLUMNS.items():
        column = columns.get(name)
        if column is None and name in _REQUIRED:
            raise ConfigError(f"the existing contacts table has no column {name}; cliniko-sync needs {name} {types[0]}")
        if column is not None and column["type"] not in types:
            raise ConfigError(
                f"the existing contacts table's column {name} is {column['type']}; cliniko-sync needs "
                f"{' or '.join(types)} (change the column, or use --schema for a schema of the tool's own)"
            )
    for column in columns.values():
        if column["not_null"] and not column["has_default"] and column["name"] not in NEEDED_COLUMNS:
            raise ConfigError(
                f"the existing contacts table's column {column['name']} is NOT NULL without a default, so "
                "cliniko-sync could not add contacts: give it a default"
            )
    if "cliniko_patient_id" in columns and "organization_id" in columns:
        shared = conn.execute(_SHARED_PATIENT_IDS).fetchone()
        if shared and shared["n"]:
            raise ConfigError(
                f"the existing contacts table links {shared['n']} Cliniko patient id(s) to more than one contact of "
                "an organization; cliniko-sync needs (organization_id, cliniko_patient_id) unique"
            )


def protect_adopted_contacts(conn: DictConnection) -> None:
    """Ask for row-level security on an adopted contacts table (`db upgrade --contacts-row-security`), which
    sql/views/40_tenant_isolation.sql then gives it; nothing changes where contacts is the tool's own table (it always
    has it)."""
    conn.execute("UPDATE adopted_tables SET row_security = true WHERE table_name = 'contacts' AND NOT row_security")

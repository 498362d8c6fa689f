"""A `contacts` table the clinic's CRM already has: `db upgrade` adopts it (sql/migrations/008_contacts.sql) without
changing what the CRM's roles see, matching links the CRM's rows, and readers reach them only through reader_contacts.
A table that cannot be adopted stops the upgrade with one line and nothing applied."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import LoginRoles
from emulator_fixtures import EMULATOR_API_KEY
from psycopg.rows import dict_row
from sync_helpers import SYNC_ENV, expected_phone, setup_org
from test_contacts import current_with

from cliniko_sync import db
from cliniko_sync.errors import ConfigError

pytestmark = pytest.mark.usefixtures("sync_environment")

ORG = "surf-rehab"
OTHER_ORGS = ("other-clinic", "third-clinic")
CRM_COLUMNS = ("id", "organization_id", "name", "phone", "email", "lifecycle_stage", "notes", "created_at")
FILLER_ROWS = 3000
BEFORE_008 = Path(__file__).parent / "before_008"


def create_crm_table(conn: psycopg.Connection, *, email_type: str = "text", extra: str = "") -> None:
    """The CRM's own table, seed-shaped: uuid ids, an organization_id, a few columns of its own."""
    conn.execute(
        f"""
        CREATE TABLE contacts (
            id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
            organization_id text NOT NULL,
            name            text,
            phone           text,
            email           {email_type},
            lifecycle_stage text NOT NULL DEFAULT 'lead',
            notes           text,
            created_at      timestamptz NOT NULL DEFAULT now(){extra}
        )
        """
    )


def seed_crm(conn: psycopg.Connection, clinic: Any) -> dict[str, list[Any]]:
    """A few thousand CRM rows over three organizations, some sharing an email (in another case) or a phone with the
    clinic's patients: in the synced organization, and in the others (never to be linked)."""
    conn.execute(
        "INSERT INTO contacts (organization_id, name, email, phone, lifecycle_stage, notes) "
        "SELECT (ARRAY[%s, %s, %s])[1 + n %% 3], 'CRM person ' || n, 'crm-' || n || '@crm.example', "
        "'+6129' || lpad(n::text, 7, '0'), 'customer', 'note ' || n FROM generate_series(1, %s) AS n",
        (ORG, *OTHER_ORGS, FILLER_ROWS),
    )
    with_email = current_with(clinic, email=True, phone=False)
    by_email = with_email[:8]
    by_phone = [p for p in current_with(clinic, email=False, phone=True) if p not in with_email][:8]
    for patient in by_email:  # the CRM kept the address in its own case, and no name
        for org in (ORG, OTHER_ORGS[0]):
            conn.execute(
                "INSERT INTO contacts (organization_id, email, notes) VALUES (%s, %s, 'vip')",
                (org, patient.email.upper()),
            )
    for patient in by_phone:
        conn.execute(
            "INSERT INTO contacts (organization_id, name, phone) VALUES (%s, 'Known by phone', %s)",
            (ORG, expected_phone(patient.patient_phone_numbers)),
        )
    return {"email": by_email, "phone": by_phone}


def crm_view(conn: psycopg.Connection) -> dict[str, dict[str, Any]]:
    """What the CRM's columns hold, row by row."""
    rows = conn.execute(f"SELECT {', '.join(CRM_COLUMNS)} FROM contacts").fetchall()
    return {str(row["id"]): row for row in rows}


def table_shape(conn: psycopg.Connection, table: str) -> dict[str, Any]:
    columns = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) AS type, attnotnull, pg_get_expr(d.adbin, d.adrelid) AS def "
        "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (table,),
    ).fetchall()
    rls = conn.execute("SELECT relrowsecurity FROM pg_class WHERE oid = %s::regclass", (table,)).fetchone()
    policies = conn.execute("SELECT policyname FROM pg_policies WHERE tablename = %s", (table,)).fetchall()
    return {"columns": columns, "rls": rls, "policies": policies}


@pytest.fixture
def crm(empty_database_url: str, login_roles: LoginRoles) -> tuple[psycopg.Connection, str]:
    """The CRM's database before cliniko-sync arrives: its contacts table and a role of its own that reads it."""
    with psycopg.connect(empty_database_url, autocommit=True, row_factory=dict_row) as conn:
        create_crm_table(conn)
        role = login_roles.role()
        conn.execute(f'GRANT SELECT ON contacts TO "{role}"')
    return empty_database_url, role


def test_an_existing_contacts_table_is_adopted_and_its_rows_linked_not_duplicated(
    crm: tuple[str, str], login_roles: LoginRoles, cli: Any, make_emulator: Any, clinic: Any
) -> None:
    url, crm_role = crm
    env = {"DATABASE_URL": url, **SYNC_ENV}
    owner = psycopg.connect(url, autocommit=True, row_factory=dict_row)
    crm_reader = login_roles.connect_as(crm_role, url)
    crm_reader.row_factory = dict_row
    with owner, crm_reader:
        matching = seed_crm(owner, clinic)
        before = crm_view(crm_reader)
        shape_before = table_shape(owner, "contacts")
        assert len(before) == FILLER_ROWS + 24

        upgraded = cli("db", "upgrade", env=env)
        assert upgraded.returncode == 0, upgraded.stderr
        assert crm_view(crm_reader) == before  # same rows, same values, as the CRM's own role sees them
        shape = table_shape(owner, "contacts")
        assert shape["columns"][: len(CRM_COLUMNS)] == shape_before["columns"]  # its columns intact, in place
        added = [column["attname"] for column in shape["columns"][len(CRM_COLUMNS) :]]
        assert added == ["cliniko_patient_id", "created_by", "updated_at"]
        assert shape["rls"] == {"relrowsecurity": False} and shape["policies"] == []

        server = make_emulator()
        setup_org(owner, server.base_url, EMULATOR_API_KEY, ORG)
        synced = cli("sync", ORG, "--as-of", clinic.now.strftime("%Y-%m-%dT%H:%M:%SZ"), env=env)
        assert synced.returncode == 0, synced.stderr

        after = crm_view(crm_reader)
        assert set(before) <= set(after)
        for contact_id, row in before.items():  # the CRM's values stay; only empty fields were filled
            changed = {key for key in CRM_COLUMNS if after[contact_id][key] != row[key]}
            assert all(row[key] is None for key in changed) and changed <= {"name", "email", "phone"}, changed
        links = owner.execute(
            "SELECT cliniko_patient_id, count(*) AS n, array_agg(id::text) AS ids, bool_and(created_by = 'external') "
            "AS theirs FROM contacts WHERE organization_id = %s AND cliniko_patient_id IS NOT NULL GROUP BY 1",
            (ORG,),
        ).fetchall()
        by_patient = {row["cliniko_patient_id"]: row for row in links}
        current = [p for p in clinic.patients.records.values() if not (p.archived_at or p.merged_at or p.deleted_at)]
        assert set(by_patient) == {str(p.id) for p in current} and {row["n"] for row in links} == {1}
        for kind, patients in matching.items():
            for patient in patients:
                link = by_patient[str(patient.id)]
                assert link["theirs"], (kind, patient.id)  # the CRM's row, not a new one
                row = after[link["ids"][0]]
                assert row["organization_id"] == ORG
                if kind == "email":
                    assert row["email"] == patient.email.upper() and row["name"] and row["notes"] == "vip"
                else:
                    assert row["name"] == "Known by phone"
        others = owner.execute(
            "SELECT count(*) AS n FROM contacts WHERE organization_id <> %s AND (cliniko_patient_id IS NOT NULL "
            "OR created_by <> 'external' OR updated_at IS NOT NULL)",
            (ORG,),
        ).fetchone()
        assert others == {"n": 0}  # other organizations' rows untouched
        created = len(after) - len(before)
        assert created == len(current) - sum(len(patients) for patients in matching.values())

        listed = json.loads(cli("list-active", ORG, "--format", "json", env=env).stdout)
        assert listed and all(row["contact_id"] and row["name"] for row in listed)
        assert crm_view(crm_reader).keys() == after.keys()  # the CRM's role still sees every row

        # Removing the organization takes the contacts the tool made and unlinks the CRM's, which stay as they were.
        assert cli("org", "remove", ORG, "--yes", env=env).returncode == 0
        assert crm_view(crm_reader) == {contact_id: after[contact_id] for contact_id in before}
        linked = owner.execute("SELECT count(*) AS n FROM contacts WHERE cliniko_patient_id IS NOT NULL").fetchone()
        assert linked == {"n": 0}


def test_readers_reach_an_adopted_table_only_through_reader_contacts(
    crm: tuple[str, str], login_roles: LoginRoles, cli: Any
) -> None:
    url, crm_role = crm
    env = {"DATABASE_URL": url}
    with psycopg.connect(url, autocommit=True) as owner:
        owner.execute(
            "INSERT INTO contacts (organization_id, name, notes) SELECT o, 'Person of ' || o, 'private' "
            "FROM unnest(%s::text[]) AS o",
            ([ORG, *OTHER_ORGS],),
        )
        assert cli("db", "upgrade", env=env).returncode == 0
        owner.execute("INSERT INTO organizations (id, name) VALUES (%s, 'Surf Rehab')", (ORG,))
    reader = login_roles.role()
    granted = cli("db", "grant", reader, "--org", ORG, env=env)
    assert granted.returncode == 0, granted.stderr
    relations = granted.stdout.strip().split(" in: ")[1].split(", ")
    assert "reader_contacts" in relations and "contacts" not in relations
    with login_roles.connect_as(reader, url) as conn:
        assert conn.execute("SELECT organization_id, name FROM reader_contacts").fetchall() == [
            (ORG, f"Person of {ORG}")
        ]
        columns = [column.name for column in conn.execute("SELECT * FROM reader_contacts LIMIT 0").description or []]
        assert "notes" not in columns and "lifecycle_stage" not in columns
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM contacts")
    revoked = cli("db", "revoke", reader, env=env)
    assert revoked.returncode == 0, revoked.stderr
    with login_roles.connect_as(crm_role, url) as conn:  # the CRM's own grant survives the reader's revoke
        assert conn.execute("SELECT count(*) FROM contacts").fetchone() == (3,)


def test_row_level_security_on_an_adopted_table_only_when_asked(
    crm: tuple[str, str], login_roles: LoginRoles, cli: Any
) -> None:
    url, crm_role = crm
    env = {"DATABASE_URL": url}
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as owner:
        owner.execute(
            "INSERT INTO contacts (organization_id, name) SELECT o, 'Person of ' || o FROM unnest(%s::text[]) AS o",
            ([ORG, *OTHER_ORGS],),
        )
        assert cli("db", "upgrade", env=env).returncode == 0
        owner.execute("INSERT INTO organizations (id, name) VALUES (%s, 'Surf Rehab')", (ORG,))
        assert table_shape(owner, "contacts")["rls"] == {"relrowsecurity": False}
        asked = cli("db", "upgrade", "--contacts-row-security", env=env)
        assert asked.returncode == 0, asked.stderr
        for _ in range(2):  # and it stays on at the next upgrade without the option
            shape = table_shape(owner, "contacts")
            assert shape["rls"] == {"relrowsecurity": True}
            assert shape["policies"] == [{"policyname": "tenant_isolation"}]
            assert cli("db", "upgrade", env=env).returncode == 0
    reader = login_roles.role()
    assert cli("db", "grant", reader, "--org", ORG, env=env).returncode == 0
    with login_roles.connect_as(reader, url) as conn:
        for relation in ("contacts", "reader_contacts"):
            assert conn.execute(f"SELECT organization_id FROM {relation}").fetchall() == [(ORG,)], relation
    with login_roles.connect_as(crm_role, url) as conn:  # what the docs warn of: the CRM's role needs a policy now
        assert conn.execute("SELECT count(*) FROM contacts").fetchone() == (0,)


def test_a_needed_column_of_another_type_stops_the_upgrade_with_nothing_applied(
    empty_database_url: str, cli: Any
) -> None:
    with psycopg.connect(empty_database_url, autocommit=True, row_factory=dict_row) as conn:
        create_crm_table(conn, email_type="integer")
        conn.execute("INSERT INTO contacts (organization_id, name, email) VALUES ('crm', 'Someone', 42)")
        shape = table_shape(conn, "contacts")
        result = cli("db", "upgrade", env={"DATABASE_URL": empty_database_url})
        assert result.returncode == 78, result.stderr
        assert result.stderr.count("\n") == 1 and "column email is integer" in result.stderr, result.stderr
        assert table_shape(conn, "contacts") == shape
        tables = conn.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace"
        )
        assert tables.fetchall() == [{"relname": "contacts"}]  # not even schema_migrations


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("CREATE VIEW contacts AS SELECT 1 AS id", "contacts exists but is not a table"),
        ("CREATE TABLE contacts (id bigint PRIMARY KEY, organization_id text)", "column id is bigint"),
        ("CREATE TABLE contacts (organization_id text, email text)", "has no column id"),
        ("CREATE TABLE contacts (id uuid, owner text NOT NULL)", "column owner is NOT NULL without a default"),
        (
            "CREATE TABLE contacts (id uuid, organization_id text, cliniko_patient_id text);"
            "INSERT INTO contacts VALUES (gen_random_uuid(), 'o', '7'), (gen_random_uuid(), 'o', '7')",
            "links 1 Cliniko patient id(s) to more than one contact",
        ),
    ],
)
def test_a_table_that_cannot_be_adopted_is_refused_with_one_line(empty_database_url: str, setup: str,
                                                                  message: str) -> None:  # fmt: skip
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(setup)
    with pytest.raises(ConfigError, match=re.escape(message)):
        db.upgrade(empty_database_url)
    assert db.status(empty_database_url)[0].applied_at is None


# What a schema is made of, to compare two databases.
CATALOG = {
    "columns": "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
    "WHERE table_schema = 'public' ORDER BY 1, 2",
    "constraints": "SELECT conrelid::regclass::text AS t, conname, pg_get_constraintdef(oid) AS d FROM pg_constraint "
    "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
    "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1",
    "policies": "SELECT tablename, policyname, qual FROM pg_policies ORDER BY 1, 2",
    "rls": "SELECT relname FROM pg_class WHERE relrowsecurity AND relnamespace = 'public'::regnamespace ORDER BY 1",
    "views": "SELECT viewname, definition FROM pg_views WHERE schemaname = 'public' ORDER BY 1",
}


def catalog(url: str) -> dict[str, list[Any]]:
    with psycopg.connect(url) as conn:
        return {name: conn.execute(statement).fetchall() for name, statement in CATALOG.items()}


def test_an_installation_made_before_008_keeps_its_contacts_and_ends_like_a_new_one(
    empty_database_url: str, database_url: str
) -> None:
    """001 and 002 as released (tests/integration/before_008) are still accepted; 008 keeps the contacts table 001
    made, with its rows, and the schema ends as a new installation's."""
    old = {path.name: path.read_text(encoding="utf-8") for path in sorted(BEFORE_008.glob("*.sql"))}
    for name, text in old.items():
        checksum = db.Migration(name, text).checksum
        assert checksum in db.SUPERSEDED_CHECKSUMS[name]
    with psycopg.connect(empty_database_url, autocommit=True) as conn:
        conn.execute(db._CREATE_MIGRATIONS_TABLE)
        for migration in db.migrations():
            if migration.name >= "008":
                break
            released = db.Migration(migration.name, old.get(migration.name, migration.sql))
            conn.execute(released.sql.encode())
            conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (released.name, released.checksum))
        conn.execute("INSERT INTO organizations (id, name) VALUES ('org-a', 'A')")
        conn.execute("INSERT INTO contacts (organization_id, name, created_by) VALUES ('org-a', 'Kept', 'crm')")
    assert db.upgrade(empty_database_url) == [m.name for m in db.migrations() if m.name >= "008"]
    assert catalog(empty_database_url) == catalog(database_url)
    with psycopg.connect(empty_database_url) as conn:
        assert conn.execute("SELECT name, created_by FROM contacts").fetchall() == [("Kept", "crm")]
        assert conn.execute("SELECT count(*) FROM adopted_tables").fetchone() == (0,)

"""`--schema NAME` / CLINIKO_SYNC_SCHEMA: every table, view, function and sequence of the tool in a schema of its own,
so that two installations share one database without seeing each other's rows."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from emulator_fixtures import EMULATOR_API_KEY
from psycopg import sql
from psycopg.rows import dict_row
from sync_helpers import SYNC_ENV, expected_active

from cliniko_sync import config, db
from cliniko_sync.emulator import generate_clinic
from cliniko_sync.errors import ConfigError

ERROR = "cliniko-sync: error: "
ORG = "surf-rehab"  # the same organization id in both installations

# The tool's objects per schema: relations (tables, views, sequences, indexes) and functions.
OBJECTS = """
SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS kind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
UNION ALL
SELECT n.nspname, p.proname, 'function'
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY 1, 2
"""


def objects_by_schema(url: str) -> dict[str, set[str]]:
    with psycopg.connect(url, row_factory=dict_row) as conn:
        found: dict[str, set[str]] = {}
        for row in conn.execute(OBJECTS):
            found.setdefault(row["schema"], set()).add(row["name"])
        return found


def test_a_bad_schema_name_is_refused_with_one_line_and_nothing_created(cli: Any, empty_database_url: str) -> None:
    env = {"DATABASE_URL": empty_database_url}
    for name in ("Clinic", "two words", "pg_clinic", "x" * 64, "a-b", "information_schema", ""):
        result = cli("--schema", name, "db", "upgrade", env=env)
        assert result.returncode == 2, (name, result.stderr)
        assert result.stderr.startswith(f"{ERROR}invalid --schema") and result.stderr.count("\n") == 1, result.stderr
    result = cli("db", "upgrade", env={**env, "CLINIKO_SYNC_SCHEMA": "Clinic;DROP"})
    assert result.returncode == 78 and result.stderr.startswith(f"{ERROR}invalid CLINIKO_SYNC_SCHEMA"), result.stderr
    assert result.stderr.count("\n") == 1
    assert objects_by_schema(empty_database_url) == {}


def test_upgrade_puts_every_object_in_the_schema_and_creates_it(cli: Any, empty_database_url: str) -> None:
    env = {"DATABASE_URL": empty_database_url}
    first = cli("--schema", "clinic_a", "db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    found = objects_by_schema(empty_database_url)
    assert set(found) == {"clinic_a"}  # nothing in public
    expected = {"schema_migrations", "contacts", "reader_contacts", "current_patients", "sync_log_id_seq",
                "apply_tenant_isolation", "cliniko_time", "adopted_tables"}  # fmt: skip
    assert expected <= found["clinic_a"]
    # The environment variable names the same schema; without either, the tool looks where it always did.
    assert "nothing pending" in cli("db", "upgrade", env={**env, "CLINIKO_SYNC_SCHEMA": "clinic_a"}).stdout
    status = cli("db", "status", "--format", "json", env=env)
    assert {row["status"] for row in json.loads(status.stdout)} == {"pending"}
    behind = cli("org", "list", env=env)
    assert behind.returncode == 78 and "db upgrade" in behind.stderr
    with psycopg.connect(empty_database_url, row_factory=dict_row) as conn:
        policies = conn.execute("SELECT DISTINCT schemaname FROM pg_policies").fetchall()
        assert policies == [{"schemaname": "clinic_a"}]


def test_a_schema_made_by_an_administrator_needs_only_create_on_it(
    cli: Any, empty_database_url: str, login_roles: Any
) -> None:
    """A role without CREATE on the database: told so in one line when the schema is missing; upgrades once an
    administrator made the schema for it, and is told when it may not create tables in it."""
    tool = login_roles.role()
    env = {"DATABASE_URL": login_roles.url_as(tool, empty_database_url)}
    missing = cli("--schema", "clinic_a", "db", "upgrade", env=env)
    assert missing.returncode == 78 and missing.stderr.count("\n") == 1, missing.stderr
    assert "cannot create schema clinic_a: the role lacks CREATE on the database" in missing.stderr
    with psycopg.connect(empty_database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(tool)))  # to name it the owner
        admin.execute("CREATE SCHEMA clinic_b")
        admin.execute(sql.SQL("CREATE SCHEMA clinic_a AUTHORIZATION {}").format(sql.Identifier(tool)))
    refused = cli("--schema", "clinic_b", "db", "upgrade", env=env)
    assert refused.returncode == 78 and "cannot create tables in schema clinic_b" in refused.stderr, refused.stderr
    upgraded = cli("--schema", "clinic_a", "db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert set(objects_by_schema(empty_database_url)) == {"clinic_a"}


def test_two_installations_in_two_schemas_never_see_each_others_rows(
    cli: Any, empty_database_url: str, make_emulator: Any
) -> None:
    clinics = {"clinic_a": generate_clinic(patients=120, seed=11), "clinic_b": generate_clinic(patients=60, seed=12)}
    env = {"DATABASE_URL": empty_database_url, **SYNC_ENV}
    for schema, clinic in clinics.items():
        server = make_emulator(clinic)

        def run(*args: str, input: str | None = None, schema: str = schema) -> Any:
            result = cli("--schema", schema, *args, input=input, env=env)
            assert result.returncode == 0, (args, result.stderr)
            return result

        run("db", "upgrade")
        run("org", "add", ORG, "--name", f"Clinic of {schema}")
        run("credentials", "set", ORG, "--api-url", server.base_url, input=EMULATOR_API_KEY + "\n")
        as_of = clinic.now.strftime("%Y-%m-%dT%H:%M:%SZ")
        run("sync", ORG, "--as-of", as_of)
    for schema, clinic in clinics.items():
        listed = json.loads(cli("--schema", schema, "list-active", ORG, "--format", "json", env=env).stdout)
        assert {row["cliniko_patient_id"] for row in listed} == set(expected_active(clinic, clinic.now))
        orgs = json.loads(cli("--schema", schema, "org", "list", "--format", "json", env=env).stdout)
        assert [(row["id"], row["name"]) for row in orgs] == [(ORG, f"Clinic of {schema}")]
        status = json.loads(cli("--schema", schema, "status", "--format", "json", env=env).stdout)
        assert [row["organization_id"] for row in status] == [ORG]
        with psycopg.connect(db.with_schema(empty_database_url, schema)) as conn:
            patients = conn.execute("SELECT count(*) FROM cliniko_patients").fetchone()
            contacts = conn.execute("SELECT count(*) FROM contacts WHERE cliniko_patient_id IS NOT NULL").fetchone()
            runs = conn.execute("SELECT count(*) FROM sync_log").fetchone()
        assert patients == (sum(1 for p in clinic.patients.records.values() if not p.deleted_at),)
        assert contacts is not None and 0 < contacts[0] <= len(clinic.patients.records)
        assert runs == (1,)
    # The default (no schema) is a third, empty place: the role's search_path, where nothing was upgraded.
    assert cli("org", "list", env=env).returncode == 78


def test_db_grant_in_a_schema_grants_usage_on_it_and_only_its_rows(
    cli: Any, empty_database_url: str, login_roles: Any
) -> None:
    env = {"DATABASE_URL": empty_database_url}
    for schema in ("clinic_a", "clinic_b"):
        assert cli("--schema", schema, "db", "upgrade", env=env).returncode == 0
        with psycopg.connect(db.with_schema(empty_database_url, schema), autocommit=True) as conn:
            for org in ("org-a", "org-b"):
                conn.execute("INSERT INTO organizations (id, name) VALUES (%s, %s)", (org, f"{org} in {schema}"))
                conn.execute(
                    "INSERT INTO contacts (organization_id, name, created_by) VALUES (%s, %s, 'crm')",
                    (org, f"Synthetic {schema}"),
                )
    reader = login_roles.role()
    granted = cli("--schema", "clinic_a", "db", "grant", reader, "--org", "org-a", env=env)
    assert granted.returncode == 0, granted.stderr
    with psycopg.connect(empty_database_url) as conn:
        usage = conn.execute(
            "SELECT has_schema_privilege(%(r)s, 'clinic_a', 'USAGE'), has_schema_privilege(%(r)s, 'clinic_b', 'USAGE')",
            {"r": reader},
        ).fetchone()
    assert usage == (True, False)
    with login_roles.connect_as(reader, db.with_schema(empty_database_url, "clinic_a")) as conn:
        for relation in ("contacts", "reader_contacts"):
            seen = conn.execute(
                sql.SQL("SELECT organization_id, name FROM {}").format(sql.Identifier(relation))
            ).fetchall()
            assert seen == [("org-a", "Synthetic clinic_a")], relation
    with (
        login_roles.connect_as(reader, db.with_schema(empty_database_url, "clinic_b")) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("SELECT * FROM clinic_b.contacts")
    grants = json.loads(cli("--schema", "clinic_b", "db", "grants", "--format", "json", env=env).stdout)
    assert grants == []


def test_a_session_without_the_schema_on_its_search_path_is_refused(
    empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a pooler that drops the options startup parameter would leave: refused, never the wrong schema."""
    monkeypatch.setattr(config, "_current", config.Settings(schema="clinic_a"))
    with db.connect(empty_database_url) as conn, pytest.raises(ConfigError, match="search_path=clinic_a"):
        db.require_current_schema(conn)  # what every command checks first, sync's connections included
    with pytest.raises(ConfigError, match="search_path=clinic_a"):
        db.upgrade(empty_database_url, "clinic_a")
    with db.connect(db.with_schema(empty_database_url, "clinic_a")) as conn:
        db.require_search_path(conn, "clinic_a")


def test_the_schema_is_added_to_options_the_url_already_has() -> None:
    url = db.with_schema("postgresql://u@h/d?options=-c%20statement_timeout%3D5s", "clinic_a")
    options = psycopg.conninfo.conninfo_to_dict(url)["options"]
    assert options == "-c statement_timeout=5s -c search_path=clinic_a"
    assert db.with_schema("postgresql://u@h/d", None) == "postgresql://u@h/d"

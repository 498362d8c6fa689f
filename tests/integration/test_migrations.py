"""Schema migrations against a real PostgreSQL: apply, re-apply, concurrency, edits, row-level security."""

from __future__ import annotations

import subprocess
import sys
import uuid

import psycopg
import pytest

from cliniko_sync import db
from cliniko_sync.errors import ConfigError, SchemaNotReadyError

TENANT_TABLES = [
    "organization_services",
    "api_credentials",
    "contacts",
    "cliniko_patients",
    "cliniko_individual_appointments",
    "cliniko_group_appointments",
    "cliniko_attendees",
    "cliniko_appointment_types",
    "cliniko_practitioners",
    "cliniko_businesses",
    "sync_state",
    "sync_log",
    "active_patients",
]


def test_upgrade_on_empty_database_applies_every_file_then_nothing(empty_database_url: str) -> None:
    applied = db.upgrade(empty_database_url)
    assert applied == [m.name for m in db.migrations()]
    assert db.upgrade(empty_database_url) == []
    assert all(m.applied_at is not None for m in db.status(empty_database_url))


def test_cli_upgrade_twice_says_what_it_did(empty_database_url: str, cli) -> None:  # type: ignore[no-untyped-def]
    env = {"DATABASE_URL": empty_database_url}
    first = cli("db", "upgrade", env=env)
    assert first.returncode == 0, first.stderr
    assert "applied 001_initial.sql" in first.stdout
    second = cli("db", "upgrade", env=env)
    assert second.returncode == 0
    assert "nothing pending" in second.stdout
    status = cli("db", "status", "--format", "json", env=env)
    assert '"status": "applied"' in status.stdout


def test_two_concurrent_upgrades_are_safe(empty_database_url: str, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "DATABASE_URL": empty_database_url}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "cliniko_sync", "db", "upgrade"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    stdout = "".join(out for out, _ in outputs)
    assert stdout.count("applied 001_initial.sql") == 1
    assert "nothing pending" in stdout
    with psycopg.connect(empty_database_url) as conn:
        rows = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert rows == (len(db.migrations()),)


def test_edited_applied_migration_is_refused(database_url: str, cli) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE name = '001_initial.sql'")
    with pytest.raises(ConfigError, match="edited"):
        db.upgrade(database_url)
    result = cli("db", "upgrade")
    assert result.returncode == 78
    assert "001_initial.sql was edited" in result.stderr
    assert "Traceback" not in result.stderr


def test_schema_newer_than_the_tool_is_refused(database_url: str, cli) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_migrations (name, checksum) VALUES ('999_future.sql', 'x')")
    result = cli("db", "upgrade")
    assert result.returncode == 78
    assert "newer than this cliniko-sync" in result.stderr


def test_commands_refuse_a_database_that_is_behind(empty_database_url: str) -> None:
    with db.connect(empty_database_url) as conn, pytest.raises(SchemaNotReadyError, match="db upgrade"):
        db.require_current_schema(conn)


def test_every_tenant_table_has_rls_and_org_in_unique_keys(conn: psycopg.Connection) -> None:
    for table in TENANT_TABLES:
        row = conn.execute("SELECT relrowsecurity FROM pg_class WHERE relname = %s", (table,)).fetchone()
        assert row and row["relrowsecurity"], table
    uniques = conn.execute(
        """
        SELECT c.conrelid::regclass::text AS tbl, c.conname,
               array_agg(a.attname::text) AS cols
        FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
        WHERE c.contype IN ('u', 'p') AND c.conrelid::regclass::text = ANY (%s)
        GROUP BY 1, 2
        """,
        (TENANT_TABLES,),
    ).fetchall()
    for row in uniques:
        if row["cols"] == ["id"] and row["tbl"] in (
            "api_credentials",
            "contacts",
            "sync_log",
            "active_patients",
        ):
            continue  # surrogate primary keys; each table also has a unique key that includes organization_id
        assert "organization_id" in row["cols"], row


def test_reader_role_sees_only_its_granted_organizations(conn: psycopg.Connection, database_url: str) -> None:
    """The setting alone opens nothing; a grant does, and the setting only narrows it (tests/…/test_reader_roles)."""
    role = f"reader_{uuid.uuid4().hex[:8]}"
    for org in ("org-a", "org-b"):
        conn.execute("INSERT INTO organizations (id, name) VALUES (%s, %s)", (org, org.upper()))
        conn.execute(
            "INSERT INTO contacts (organization_id, name, created_by) VALUES (%s, 'Synthetic Person', 'external')",
            (org,),
        )
        conn.execute(
            "INSERT INTO cliniko_patients (organization_id, id, updated_at, raw) VALUES (%s, '1', now(), '{}')", (org,)
        )
    conn.execute(f"CREATE ROLE {role} LOGIN")
    conn.execute(f"GRANT {role} TO current_user")  # SET ROLE: a role that is not a superuser must be a member
    try:
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
        with psycopg.connect(database_url, autocommit=True) as reader:
            reader.execute(f"SET ROLE {role}")
            reader.execute("SELECT set_config('cliniko_sync.organization_id', 'org-a', false)")
            assert reader.execute("SELECT count(*) FROM contacts").fetchone() == (0,)  # no grant, no rows
            conn.execute("INSERT INTO reader_grants (organization_id, role_name) VALUES ('org-a', %s)", (role,))
            orgs = reader.execute("SELECT DISTINCT organization_id FROM contacts").fetchall()
            assert orgs == [("org-a",)]
            assert reader.execute("SELECT id FROM organizations").fetchall() == [("org-a",)]
            # The definitions' views run as the reader, so they stay under row-level security too.
            assert reader.execute("SELECT DISTINCT organization_id FROM current_patients").fetchall() == [("org-a",)]
            reader.execute("SELECT set_config('cliniko_sync.organization_id', 'org-b', false)")
            assert reader.execute("SELECT count(*) FROM contacts").fetchone() == (0,)  # narrows, never widens
            reader.execute("RESET ROLE")
    finally:
        conn.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        conn.execute(f"DROP ROLE {role}")


def test_upgrade_reapplies_the_definitions_in_sql_views(database_url: str, conn: psycopg.Connection) -> None:
    """The views and functions live in sql/views and every `db upgrade` re-applies them: a definition changes in its
    one file, a dropped view comes back, and a new tenant table gets its policy."""
    conn.execute("DROP VIEW qualifying_appointments")
    conn.execute("CREATE TABLE cliniko_later_table (organization_id text NOT NULL, id text)")
    assert db.upgrade(database_url) == []  # no migration was pending
    names = {row["viewname"] for row in conn.execute("SELECT viewname FROM pg_views WHERE schemaname = 'public'")}
    assert {"current_patients", "qualifying_appointments", "reader_organizations"} <= names
    definition = conn.execute("SELECT pg_get_viewdef('current_patients') AS sql").fetchone()["sql"]
    assert "removed_at IS NULL" in definition and "raw" not in definition
    policies = conn.execute("SELECT tablename FROM pg_policies WHERE policyname = 'tenant_isolation'").fetchall()
    assert "cliniko_later_table" in {row["tablename"] for row in policies}  # a new tenant table gets the policy


def test_a_server_older_than_postgresql_15_is_refused_with_one_line() -> None:
    # No older server is at hand here: the rule itself, with the message `db upgrade` exits 78 with.
    for supported in (150000, 150020, 160004, 170006, 180006, 190000):
        assert db.server_version_problem(supported) is None
    problem = db.server_version_problem(140019)
    assert problem == (
        "cliniko-sync needs PostgreSQL 15 or later; this server is 14.19: upgrade it, or leave DATABASE_URL unset "
        "for the embedded one"
    )

"""The JSON Schemas shipped in cliniko_sync/schemas/ against what the CLI really prints, run against the emulator and
the test database: every document `--format json` prints is validated, success and failure shapes alike (a failed
organization in `sync --all`, a partial run, a never-synced organization, a violated assumption). The schemas are
strict about what the tool prints today (every key required, exact types, timestamps with Z) and open to new keys
(additionalProperties is never false): a key that disappears or changes type fails here, a new key does not break a
reader but fails these tests until the schema names it (docs/json-output.md)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from emulator_fixtures import EMULATOR_API_KEY
from jsonschema import Draft202012Validator, ValidationError
from psycopg import sql
from schema_helpers import SCHEMAS, errors, validator
from sync_helpers import SYNC_ENV, in_process_env, setup_org  # noqa: F401 (fixture)

from cliniko_sync.emulator.quirks import Quirks
from cliniko_sync.reports import RUN_STATUSES

DOCUMENTS = sorted(name.removesuffix(".schema.json") for name in SCHEMAS if name != "common.schema.json")
GOOD, BAD = "surf-rehab", "bad-clinic"


class Checked:
    """Validates each command's stdout against its schema and remembers which schemas saw which outputs."""

    def __init__(self, cli: Any) -> None:
        self.cli = cli
        self.documents: dict[str, list[Any]] = {}

    def __call__(self, schema: str, *args: str, exit_code: int = 0, env: dict[str, str] | None = None) -> Any:
        result = self.cli(*args, env={**SYNC_ENV, **(env or {})})
        assert result.returncode == exit_code, (args, result.stderr)
        # jsonl: each line is one document of the row schema
        documents = (
            [json.loads(line) for line in result.stdout.splitlines()]
            if "jsonl" in args
            else [json.loads(result.stdout)]
        )
        for document in documents:
            assert errors(schema, document) == [], (args, result.stdout[:2000])
        self.documents.setdefault(schema, []).extend(documents)
        return documents if "jsonl" in args else documents[0]


@pytest.fixture
def check(cli: Any) -> Checked:
    return Checked(cli)


@pytest.fixture
def orgs(conn: psycopg.Connection, emulator: Any) -> None:
    setup_org(conn, emulator.base_url, EMULATOR_API_KEY, GOOD)
    setup_org(conn, emulator.base_url, "rejected-key-au1", BAD)


@pytest.fixture
def reader_role(conn: psycopg.Connection) -> Iterator[str]:
    """A role to grant to (the cluster is shared by the session: dropped with its privileges afterwards)."""
    role = f"csr_schema_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    yield role
    # A CREATEROLE owner that is not a superuser drops what a role owns only as its member.
    conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))
    conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
    conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def top_level_rows(document: Any) -> list[dict[str, Any]]:
    return document if isinstance(document, list) else [document]


def row_schema(name: str) -> dict[str, Any]:
    """The object schema a document's rows follow (an array schema's items, or the schema itself)."""
    schema = SCHEMAS[f"{name}.schema.json"]
    return SCHEMAS[schema["items"]["$ref"]] if schema["type"] == "array" else schema


def assert_strict(name: str, documents: list[Any]) -> None:
    """Every key printed is in the schema; dropping any key, or giving it another type, fails validation."""
    rows = [row for document in documents for row in top_level_rows(document)]
    assert rows, f"{name}: no row to check"
    properties = row_schema(name)["properties"]
    for row in rows:
        assert set(row) <= set(properties), f"{name}: printed but not in the schema: {set(row) - set(properties)}"
    sample = rows[0]
    wrap = (lambda row: [row]) if SCHEMAS[f"{name}.schema.json"]["type"] == "array" else (lambda row: row)
    for key, value in sample.items():
        without = {k: v for k, v in sample.items() if k != key}
        assert errors(name, wrap(without)), f"{name}: still valid without {key}"
        retyped = {**sample, key: [] if isinstance(value, dict) else {"retyped": True}}
        assert errors(name, wrap(retyped)), f"{name}: still valid with {key} of another type"


def test_sync_status_listings_and_organizations_follow_their_schemas(
    check: Checked, orgs: None, conn: psycopg.Connection, make_emulator: Any
) -> None:
    # Both organizations are due on a fresh database; the rejected key fails in the array, with its own exit code.
    due = check("sync-results", "sync", "--due", "--format", "json", exit_code=3)
    assert {row["organization_id"]: row["status"] for row in due} == {GOOD: "success", BAD: "failed"}
    check("sync-results", "sync", "--due", "--format", "json")  # nothing due: []
    every = check("sync-results", "sync", "--all", "--format", "json", exit_code=3)
    assert [row["exit_code"] for row in every] == [77, 0]
    check("sync-result", "sync", GOOD, "--format", "json")
    check("sync-result", "sync", GOOD, "--full", "--dry-run", "--format", "json")
    failed = check("sync-result", "sync", BAD, "--format", "json", exit_code=77)
    assert failed["status"] == "failed" and failed["error"]
    slow = make_emulator(latency_ms=60)
    setup_org(conn, slow.base_url, EMULATOR_API_KEY, "slow-clinic")
    partial = check("sync-result", "sync", "slow-clinic", "--max-runtime", "1", "--format", "json", exit_code=3)
    assert partial["status"] == "partial"

    check("organization", "org", "add", "never-synced", "--name", "Never Synced", "--format", "json")
    check("organization", "org", "set", "never-synced", "--window-days", "30", "--format", "json")
    check("organization", "org", "show", GOOD, "--format", "json")
    check("organizations", "org", "list", "--format", "json")
    active = check("list-active", "list-active", GOOD, "--format", "json")
    assert active and any(row["upcoming_appointments"] for row in active)
    rows = check("status", "status", "--format", "json")
    assert {row["organization_id"]: row["last_run_status"] for row in rows}["never-synced"] is None
    check("status", "status", "--max-age", "2h", "--format", "json", exit_code=1)  # stale ones: exit 1
    check("status-history", "status", "--history", "20", "--format", "json")
    check("status-row", "status", "--format", "jsonl")
    check("status-history-row", "status", "--history", "3", "--format", "jsonl")
    check("list-active-row", "list-active", GOOD, "--format", "jsonl")
    check("sync-result", "sync", "--all", "--format", "jsonl", exit_code=3)
    check("check-credentials-row", "check-credentials", GOOD, "--format", "jsonl")
    check("db-status-row", "db", "status", "--format", "jsonl")
    check("check-credentials", "check-credentials", "--all", "--format", "json", exit_code=78)  # no key: 78
    check("org-remove", "org", "remove", "never-synced", "--yes", "--format", "json")
    check("db-status", "db", "status", "--format", "json")

    for name, documents in check.documents.items():
        assert_strict(name, documents)
    elsewhere = {"check-credentials-deep", "check-credentials-deep-row", "db-grants", "db-grants-row"}
    assert set(check.documents) == set(DOCUMENTS) - elsewhere


def test_deep_check_follows_its_schema(
    check: Checked, orgs: None, conn: psycopg.Connection, make_emulator: Any
) -> None:
    held = check("check-credentials-deep", "check-credentials", GOOD, "--deep", "--format", "json")
    assert {row["status"] for row in held} >= {"held"}
    rejected = check("check-credentials-deep", "check-credentials", BAD, "--deep", "--format", "json", exit_code=77)
    assert {row["status"] for row in rejected} == {"unknown"}
    setup_org(conn, make_emulator(quirks=Quirks(ids_as_numbers=True)).base_url, EMULATOR_API_KEY, "quirky")
    violated = check("check-credentials-deep", "check-credentials", "quirky", "--deep", "--format", "json", exit_code=1)
    assert "violated" in {row["status"] for row in violated}
    check("check-credentials-deep-row", "check-credentials", GOOD, "--deep", "--format", "jsonl")
    assert_strict("check-credentials-deep", check.documents["check-credentials-deep"])
    assert_strict("check-credentials-deep-row", check.documents["check-credentials-deep-row"])


def test_db_grants_follow_their_schema(check: Checked, cli: Any, orgs: None, reader_role: str) -> None:
    check("db-grants", "db", "grants", "--format", "json")  # none yet: []
    assert cli("db", "grant", reader_role, "--org", GOOD).returncode == 0
    (grant,) = check("db-grants", "db", "grants", "--format", "json")
    assert grant["role"] == reader_role and grant["login"] is False
    check("db-grants-row", "db", "grants", "--format", "jsonl")
    for name in ("db-grants", "db-grants-row"):
        assert_strict(name, check.documents[name])
    assert cli("db", "revoke", reader_role).returncode == 0


def test_every_document_has_a_strict_open_schema() -> None:
    """Valid draft 2020-12; each object names every key it prints as required; none forbids new keys."""
    assert len(DOCUMENTS) >= 18
    for name, schema in SCHEMAS.items():
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema", name
        assert "false" not in json.dumps(schema.get("additionalProperties", True)), name
    for name in DOCUMENTS:
        schema = SCHEMAS[f"{name}.schema.json"]
        if schema["type"] == "array":
            assert schema["items"]["$ref"] in SCHEMAS, name
        else:
            assert schema["required"] == list(schema["properties"]), f"{name}: every printed key is required"


def test_a_timestamp_without_z_or_a_missing_key_fails() -> None:
    row = {"name": "001_initial.sql", "status": "applied", "applied_at": "2026-11-24T10:25:06Z"}
    assert errors("db-status", [row]) == []
    assert errors("db-status", [{**row, "applied_at": "2026-11-24T10:25:06+00:00"}])
    assert errors("db-status", [{**row, "applied_at": "2026-11-24 10:25:06Z"}])
    assert errors("db-status", [{k: v for k, v in row.items() if k != "applied_at"}])
    assert errors("db-status", [{**row, "new_key": 1}]) == []  # new keys may appear without notice
    with pytest.raises(ValidationError):
        validator("db-status").validate({"not": "an array"})


def test_a_skipped_run_is_never_the_last_run_in_status() -> None:
    """status, its schema and its Prometheus metrics agree on what a last run can be (docs/json-output.md)."""
    statuses = SCHEMAS["status-row.schema.json"]["properties"]["last_run_status"]["enum"]
    assert statuses == [*RUN_STATUSES, None]
    assert "skipped" in SCHEMAS["common.schema.json"]["$defs"]["run_status"]["enum"]  # a --history row may be one


def test_a_successful_run_carries_its_figures_and_a_crashed_one_need_not() -> None:
    crashed = {"organization_id": "surf-rehab", "status": "failed", "mode": None, "as_of": None, "dry_run": False,
               "requests": 0, "active_patients": None, "history_complete": None, "exit_code": 1,
               "error": "unexpected RuntimeError", "sync_log_id": None, "stats": {}}  # fmt: skip
    assert errors("sync-result", crashed) == []
    assert errors("sync-result", {**crashed, "error": None})  # a failure always says why
    succeeded = {**crashed, "status": "success", "mode": "full", "exit_code": 0, "error": None, "active_patients": 3,
                 "history_complete": True}  # fmt: skip
    assert any("required" in error for error in errors("sync-result", succeeded))

"""`cliniko-sync org add | list | show | set`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from cliniko_sync.output import Format

if TYPE_CHECKING:
    from cliniko_sync.orgs import Organization

app = typer.Typer(help="Manage organizations (clinics).", no_args_is_help=True)

TABLE_COLUMNS = [
    "id",
    "name",
    "country",
    "time_zone",
    "window_days",
    "include_upcoming",
    "enabled",
    "credentials_stored",
]
COLUMNS = [
    *TABLE_COLUMNS,
    "last_validated_at",
    "last_validation_error",
    "created_at",
    "updated_at",
]
FORMAT_OPTION = typer.Option(Format.table, "--format", help="Output format: table, json, jsonl or csv.")
_NO_STATUS = {"credentials_stored": False, "last_validated_at": None, "last_validation_error": None}


def _rows(organizations: list[Organization], statuses: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**org.as_dict(), **statuses.get(org.id, _NO_STATUS)} for org in organizations]


def _show(org_id: str, fmt: Format) -> None:
    from cliniko_sync import db, orgs
    from cliniko_sync.config import current_settings
    from cliniko_sync.output import render_object

    with db.session(current_settings()) as conn:
        row = _rows([orgs.get_organization(conn, org_id)], orgs.credential_status(conn))[0]
    render_object({column: row[column] for column in COLUMNS}, fmt, title=f"Organization {org_id}")


@app.command("add")
def add(
    org_id: str = typer.Argument(..., metavar="ORG", help="Organization id: a slug such as surf-rehab."),
    name: str = typer.Option(..., "--name", help="The clinic's name (1–200 characters)."),
    country: str = typer.Option("AU", "--country", help="ISO 3166-1 alpha-2 code; the default region for phones."),
    time_zone: str = typer.Option("Australia/Sydney", "--time-zone", help="IANA time zone of the clinic."),
    window_days: int = typer.Option(45, "--window-days", help="Active-patient window in days (1–3650)."),
    include_upcoming: bool = typer.Option(
        False, "--include-upcoming", help="Also count patients with only future appointments as active."
    ),
    fmt: Format = FORMAT_OPTION,
) -> None:
    """Add an organization (clinic); then store its API key with `credentials set ORG`."""
    from cliniko_sync import db, orgs
    from cliniko_sync.config import current_settings

    with db.session(current_settings()) as conn:
        orgs.add_organization(
            conn,
            org_id,
            name=name,
            country=country,
            time_zone=time_zone,
            window_days=window_days,
            include_upcoming=include_upcoming,
        )
    _show(org_id, fmt)


@app.command("list")
def list_(fmt: Format = FORMAT_OPTION) -> None:
    """List every organization."""
    from cliniko_sync import db, orgs
    from cliniko_sync.config import current_settings
    from cliniko_sync.output import render

    with db.session(current_settings()) as conn:
        rows = _rows(orgs.list_organizations(conn), orgs.credential_status(conn))
    render(rows, COLUMNS, fmt, title="Organizations", table_columns=TABLE_COLUMNS)


@app.command("show")
def show(
    org_id: str = typer.Argument(..., metavar="ORG", help="Organization id."),
    fmt: Format = FORMAT_OPTION,
) -> None:
    """Show one organization's settings and whether its API key is stored and was last accepted."""
    _show(org_id, fmt)


@app.command("set")
def set_(
    org_id: str = typer.Argument(..., metavar="ORG", help="Organization id."),
    name: str | None = typer.Option(None, "--name", help="New name (1–200 characters)."),
    country: str | None = typer.Option(None, "--country", help="ISO 3166-1 alpha-2 code."),
    time_zone: str | None = typer.Option(None, "--time-zone", help="IANA time zone."),
    window_days: int | None = typer.Option(None, "--window-days", help="Active-patient window in days (1–3650)."),
    include_upcoming: bool | None = typer.Option(
        None, "--include-upcoming/--no-include-upcoming", help="Count patients with only future appointments."
    ),
    enabled: bool | None = typer.Option(None, "--enabled/--disabled", help="Whether `sync --all` includes it."),
    fmt: Format = FORMAT_OPTION,
) -> None:
    """Change an organization's settings; options not given stay as they are."""
    from cliniko_sync import db, orgs
    from cliniko_sync.config import current_settings

    with db.session(current_settings()) as conn:
        orgs.update_organization(
            conn,
            org_id,
            name=name,
            country=country,
            time_zone=time_zone,
            window_days=window_days,
            include_upcoming=include_upcoming,
            enabled=enabled,
        )
    _show(org_id, fmt)

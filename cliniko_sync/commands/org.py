"""`cliniko-sync org add | list | show | set`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from cliniko_sync.cli_help import FORMAT_OPTION, examples
from cliniko_sync.output import Format, RowFormat

if TYPE_CHECKING:
    from cliniko_sync.orgs import Organization

app = typer.Typer(help="Manage organizations (clinics).", no_args_is_help=True)

ORG_ARGUMENT = typer.Argument(..., metavar="ORG", help="Organization id.")

TABLE_COLUMNS = [
    "id",
    "name",
    "country",
    "time_zone",
    "window_days",
    "include_upcoming",
    "enabled",
    "sync_interval",
    "full_sync_interval",
    "credentials_stored",
]
COLUMNS = [
    *TABLE_COLUMNS,
    "last_validated_at",
    "last_validation_error",
    "created_at",
    "updated_at",
]
# What `org list` drops first to fit the terminal (--wide keeps all).
DROP_FIRST = (
    "full_sync_interval",
    "sync_interval",
    "include_upcoming",
    "time_zone",
    "window_days",
    "country",
    "credentials_stored",
)
SYNC_INTERVAL_HELP = "How often `sync --due` syncs it: 90s, 15m, 2h, 1d (1m to 30d; default 15m)."
FULL_SYNC_INTERVAL_HELP = "How often that sync is a full one: 15m, 12h, 1d, 7d (1m to 365d; default 1d)."
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


@app.command(
    "add",
    epilog=examples(
        'cliniko-sync org add surf-rehab --name "Surf Rehab"',
        'cliniko-sync org add harbour-physio --name "Harbour Physio" --country NZ --time-zone Pacific/Auckland',
        'cliniko-sync org add big-clinic --name "Big Clinic" --sync-interval 30m --full-sync-interval 7d',
    ),
)
def add(
    org_id: str = typer.Argument(..., metavar="ORG", help="Organization id: a slug such as surf-rehab."),
    name: str = typer.Option(..., "--name", metavar="NAME", help="The clinic's name (1–200 characters)."),
    country: str = typer.Option(
        "AU", "--country", metavar="CC", help="ISO 3166-1 alpha-2 code; the default region for phones."
    ),
    time_zone: str = typer.Option(
        "Australia/Sydney", "--time-zone", metavar="ZONE", help="IANA time zone of the clinic."
    ),
    window_days: int = typer.Option(
        45, "--window-days", metavar="DAYS", help="Active-patient window in days (1–3650)."
    ),
    include_upcoming: bool = typer.Option(
        False, "--include-upcoming", help="Also count patients with only future appointments as active."
    ),
    sync_interval: str = typer.Option("15m", "--sync-interval", metavar="DURATION", help=SYNC_INTERVAL_HELP),
    full_sync_interval: str = typer.Option(
        "1d", "--full-sync-interval", metavar="DURATION", help=FULL_SYNC_INTERVAL_HELP
    ),
    fmt: RowFormat = FORMAT_OPTION,
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
            sync_interval=sync_interval,
            full_sync_interval=full_sync_interval,
        )
    _show(org_id, fmt)


@app.command(
    "list",
    epilog=examples("cliniko-sync org list", "cliniko-sync org list --wide", "cliniko-sync org list --format csv"),
)
def list_(
    fmt: RowFormat = FORMAT_OPTION,
    wide: bool = typer.Option(False, "--wide", help="Table: every column (default: fit the terminal)."),
) -> None:
    """List every organization."""
    from cliniko_sync import db, orgs
    from cliniko_sync.config import current_settings
    from cliniko_sync.output import render

    with db.session(current_settings()) as conn:
        rows = _rows(orgs.list_organizations(conn), orgs.credential_status(conn))
    render(rows, COLUMNS, fmt, title="Organizations", table_columns=TABLE_COLUMNS, drop_first=DROP_FIRST, wide=wide)


@app.command(
    "show", epilog=examples("cliniko-sync org show surf-rehab", "cliniko-sync org show surf-rehab --format json")
)
def show(
    org_id: str = ORG_ARGUMENT,
    fmt: RowFormat = FORMAT_OPTION,
) -> None:
    """Show one organization's settings and whether its API key is stored and was last accepted."""
    _show(org_id, fmt)


@app.command(
    "set",
    epilog=examples(
        "cliniko-sync org set surf-rehab --disabled",
        "cliniko-sync org set surf-rehab --window-days 60 --include-upcoming --time-zone Australia/Brisbane",
        "cliniko-sync org set surf-rehab --sync-interval 30m --full-sync-interval 7d",
    ),
)
def set_(
    org_id: str = ORG_ARGUMENT,
    name: str | None = typer.Option(None, "--name", metavar="NAME", help="New name (1–200 characters)."),
    country: str | None = typer.Option(None, "--country", metavar="CC", help="ISO 3166-1 alpha-2 code."),
    time_zone: str | None = typer.Option(None, "--time-zone", metavar="ZONE", help="IANA time zone."),
    window_days: int | None = typer.Option(
        None, "--window-days", metavar="DAYS", help="Active-patient window in days (1–3650)."
    ),
    include_upcoming: bool | None = typer.Option(
        None, "--include-upcoming/--no-include-upcoming", help="Count patients with only future appointments."
    ),
    enabled: bool | None = typer.Option(
        None, "--enabled/--disabled", help="Whether `sync --all` and `sync --due` include it."
    ),
    sync_interval: str | None = typer.Option(None, "--sync-interval", metavar="DURATION", help=SYNC_INTERVAL_HELP),
    full_sync_interval: str | None = typer.Option(
        None, "--full-sync-interval", metavar="DURATION", help=FULL_SYNC_INTERVAL_HELP
    ),
    fmt: RowFormat = FORMAT_OPTION,
) -> None:
    """Change an organization's settings; options not given stay as they are."""
    from cliniko_sync import db, orgs
    from cliniko_sync.config import current_settings
    from cliniko_sync.errors import UsageError

    changes = {
        "name": name,
        "country": country,
        "time_zone": time_zone,
        "window_days": window_days,
        "include_upcoming": include_upcoming,
        "enabled": enabled,
        "sync_interval": sync_interval,
        "full_sync_interval": full_sync_interval,
    }
    if all(value is None for value in changes.values()):
        raise UsageError(
            "nothing to change: give at least one of --name, --country, --time-zone, --window-days, "
            "--include-upcoming/--no-include-upcoming, --enabled/--disabled, --sync-interval, --full-sync-interval"
        )
    with db.session(current_settings()) as conn:
        orgs.update_organization(conn, org_id, **changes)
    _show(org_id, fmt)


@app.command(
    "remove",
    epilog=examples("cliniko-sync org remove demo-clinic", "cliniko-sync org remove old-clinic --yes --format json"),
)
def remove(
    org_id: str = ORG_ARGUMENT,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation (for scripts)."),
    fmt: RowFormat = FORMAT_OPTION,
) -> None:
    """Remove an organization and all its rows, in one transaction.

    Deletes its mirror, sync history, active patients, credentials and the contacts cliniko-sync created; contacts
    other systems own only lose their link to Cliniko (and keep the organization, disabled, as their home).
    Without --yes it shows what would go and asks; with stdin not a terminal it refuses (exit 2).
    """
    import sys

    from cliniko_sync import db, orgs
    from cliniko_sync.config import current_settings
    from cliniko_sync.errors import UsageError
    from cliniko_sync.output import render, render_object

    with db.session(current_settings(), autocommit=True) as conn:
        orgs.get_organization(conn, org_id)
        if not yes:
            if sys.stdin is None or not sys.stdin.isatty():
                raise UsageError(f"not removing {org_id}: confirm with --yes (stdin is not a terminal to ask on)")
            preview = orgs.remove_organization(conn, org_id, dry_run=True)
            counts = ", ".join(f"{n} {table}" for table, n in preview.removed.items() if n)
            typer.echo(f"org remove {org_id} would delete: {counts or 'only the organization'}", err=True)
            if not typer.confirm(f"Remove organization {org_id}?", default=False, err=True):
                typer.echo("nothing removed", err=True)
                raise typer.Exit(1)
        removal = orgs.remove_organization(conn, org_id)
    if fmt is Format.table:
        rows = [{"table": table, "rows_removed": n} for table, n in removal.removed.items()]
        rows.append({"table": "contacts of other systems (unlinked, kept)", "rows_removed": removal.contacts_unlinked})
        render(rows, ["table", "rows_removed"], fmt, title=f"Removed {org_id}")
    else:
        render_object(removal.as_dict(), fmt)
    if removal.organization_kept:
        typer.echo(f"kept {org_id}, disabled: contacts created by other systems belong to it", err=True)

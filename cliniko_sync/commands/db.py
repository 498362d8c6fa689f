"""`cliniko-sync db upgrade | status | grant | revoke | grants`."""

from __future__ import annotations

from typing import Any

import typer

from cliniko_sync.cli_help import FORMAT_OPTION, examples
from cliniko_sync.output import RowFormat

app = typer.Typer(help="Create and upgrade the database schema; grant reader roles.", no_args_is_help=True)


@app.command(
    "upgrade",
    epilog=examples("cliniko-sync db upgrade", "DATABASE_URL=postgresql://sync@db/clinics cliniko-sync db upgrade"),
)
def upgrade(
    contacts_row_security: bool = typer.Option(
        False,
        "--contacts-row-security",
        help="Also give a contacts table adopted from another system row-level security, from now on: its roles "
        "that do not own it then see none of its rows without a policy of their own (see the docs' database page).",
    ),
) -> None:
    """Apply pending schema migrations (idempotent; safe to run concurrently)."""
    from cliniko_sync import db
    from cliniko_sync.config import current_settings

    settings = current_settings()
    applied = db.upgrade(
        db.database_url(settings), settings.resolved_schema(), contacts_row_security=contacts_row_security
    )
    if applied:
        for name in applied:
            typer.echo(f"applied {name}")
    else:
        typer.echo("schema is up to date: nothing pending")


@app.command("status", epilog=examples("cliniko-sync db status", "cliniko-sync db status --format json"))
def status(
    fmt: RowFormat = FORMAT_OPTION,
) -> None:
    """List applied and pending schema migrations."""
    from cliniko_sync import db
    from cliniko_sync.config import current_settings
    from cliniko_sync.output import render

    url = db.database_url(current_settings())
    rows = [
        {"name": m.name, "status": "applied" if m.applied_at else "pending", "applied_at": m.applied_at}
        for m in db.status(url)
    ]
    render(rows, ["name", "status", "applied_at"], fmt, title="Schema migrations")


ROLE_ARGUMENT = typer.Argument(..., metavar="ROLE", help="A PostgreSQL role name, exactly as stored (case-sensitive).")
GRANT_COLUMNS = ["role", "organization_id", "role_exists", "login", "mirrors", "granted_at"]


def _read_password() -> str:
    """The new role's password from stdin when it is piped in, else a hidden prompt typed twice: never from argv."""
    import sys

    if sys.stdin is not None and not sys.stdin.isatty():
        return sys.stdin.read().rstrip("\r\n")
    password: str = typer.prompt("Password for the new role", hide_input=True, confirmation_prompt=True, err=True)
    return password


@app.command(
    "grant",
    epilog=examples(
        "cliniko-sync db grant crm_reader --org surf-rehab",
        "cliniko-sync db grant bi_dashboard --org surf-rehab --org harbour-physio --with-mirrors",
        'echo "$PASSWORD" | cliniko-sync db grant frontdesk --org surf-rehab --create',
    ),
)
def grant(
    role: str = ROLE_ARGUMENT,
    orgs: list[str] = typer.Option(..., "--org", metavar="ORG", help="An organization ROLE may read; repeatable."),
    with_mirrors: bool = typer.Option(
        False, "--with-mirrors", help="Also grant the cliniko_* mirror tables (Cliniko's raw records)."
    ),
    create: bool = typer.Option(
        False,
        "--create",
        help="Create ROLE as a login role first; password from stdin or a hidden prompt (needs CREATEROLE).",
    ),
) -> None:
    """Let a database role read the given organizations' rows (active_patients, contacts, views, sync_log)."""
    from cliniko_sync import db, readers
    from cliniko_sync.config import current_settings

    with db.session(current_settings(), autocommit=True) as conn:
        result = readers.grant(
            conn, role, orgs, with_mirrors=with_mirrors, read_password=_read_password if create else None
        )
    created = f"created login role {result.role}; " if result.created else ""
    typer.echo(f"{created}{result.role} may read {', '.join(result.organizations)} in: {', '.join(result.relations)}")


@app.command(
    "revoke",
    epilog=examples("cliniko-sync db revoke crm_reader --org surf-rehab", "cliniko-sync db revoke bi_dashboard"),
)
def revoke(
    role: str = ROLE_ARGUMENT,
    orgs: list[str] = typer.Option(
        None, "--org", metavar="ORG", help="An organization to take away; repeatable (default: all of them)."
    ),
) -> None:
    """Take organizations away from a reader role; with none left, also revoke its privileges."""
    from cliniko_sync import db, readers
    from cliniko_sync.config import current_settings

    with db.session(current_settings(), autocommit=True) as conn:
        result = readers.revoke(conn, role, orgs or None)
    removed = ", ".join(result.organizations) if result.organizations else "nothing (no such grant)"
    if result.remaining:
        after = f"it may still read {', '.join(result.remaining)}"
    elif result.privileges_revoked:
        after = "it has no grants left and its privileges on cliniko-sync's tables were revoked"
    else:
        after = "it has no grants left"
    typer.echo(f"revoked from {result.role}: {removed}; {after}")


@app.command("grants", epilog=examples("cliniko-sync db grants", "cliniko-sync db grants --format json"))
def grants(
    fmt: RowFormat = FORMAT_OPTION,
) -> None:
    """List reader roles and the organizations each may read."""
    from cliniko_sync import db, readers
    from cliniko_sync.config import current_settings
    from cliniko_sync.output import render

    with db.session(current_settings(), autocommit=True) as conn:
        rows = readers.list_grants(conn)
    render(rows, GRANT_COLUMNS, fmt, title="Reader grants")


PRUNE_EXAMPLES = examples(
    "cliniko-sync db prune",
    "cliniko-sync db prune --keep-sync-log 180d --keep-removed 30d",
    "cliniko-sync db prune --format json",
)


@app.command("prune", epilog=PRUNE_EXAMPLES)
def prune(
    keep_sync_log: str | None = typer.Option(
        None,
        "--keep-sync-log",
        metavar="DURATION",
        help="Keep sync_log runs this long (90s, 30m, 2h, 90d); stored for every later prune (default 90d).",
    ),
    keep_removed: str | None = typer.Option(
        None,
        "--keep-removed",
        metavar="DURATION",
        help="Keep mirror rows removed from Cliniko this long; stored for every later prune (default 30d).",
    ),
    fmt: RowFormat = FORMAT_OPTION,
) -> None:
    """Delete sync_log runs and removed mirror rows older than the installation's retention periods.

    Each organization's latest success, failure, full run and skipped run are always kept, so status and sync --due
    read the same afterwards. Works in batches of a few thousand rows, each its own short transaction: safe to run
    from cron while syncs run.
    """
    from cliniko_sync import db, retention
    from cliniko_sync.config import current_settings
    from cliniko_sync.output import render_object

    periods = {
        "keep_sync_log": _period(keep_sync_log, "--keep-sync-log"),
        "keep_removed": _period(keep_removed, "--keep-removed"),
    }
    with db.session(current_settings(), autocommit=True) as conn:
        retention.periods(conn, **periods)
        result = retention.prune(conn)
    render_object(result.as_dict(), fmt, title="Pruned")


def _period(text: str | None, option: str) -> Any:
    """A retention period given on the command line (a duration like --max-age's), or None when not given."""
    from cliniko_sync.durations import parse_duration
    from cliniko_sync.errors import UsageError

    if text is None:
        return None
    try:
        return parse_duration(text)
    except UsageError as exc:
        raise UsageError(f"{option}: {exc}") from None

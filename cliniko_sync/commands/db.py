"""`cliniko-sync db upgrade | status`."""

from __future__ import annotations

import typer

from cliniko_sync.output import Format

app = typer.Typer(help="Create and upgrade the database schema.", no_args_is_help=True)


@app.command("upgrade")
def upgrade() -> None:
    """Apply pending schema migrations (idempotent; safe to run concurrently)."""
    from cliniko_sync import db
    from cliniko_sync.config import current_settings

    url = db.database_url(current_settings())
    applied = db.upgrade(url)
    if applied:
        for name in applied:
            typer.echo(f"applied {name}")
    else:
        typer.echo("schema is up to date: nothing pending")


@app.command("status")
def status(
    fmt: Format = typer.Option(Format.table, "--format", help="Output format."),
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

"""`cliniko-sync org add | list | show | set`."""

from __future__ import annotations

import typer

app = typer.Typer(help="Manage organizations (clinics).", no_args_is_help=True)

"""`cliniko-sync keygen`, `credentials set | rotate`, `check-credentials`."""

from __future__ import annotations

import typer

app = typer.Typer(help="Store and rotate encrypted Cliniko API keys.", no_args_is_help=True)


def keygen() -> None:
    """Print a new Fernet key for CREDENTIALS_ENCRYPTION_KEY."""
    from cryptography.fernet import Fernet

    typer.echo(Fernet.generate_key().decode())


def check_credentials() -> None:
    """Check stored API keys against Cliniko (being built)."""
    from cliniko_sync.errors import ClinikoSyncError

    raise ClinikoSyncError("check-credentials is not built yet")

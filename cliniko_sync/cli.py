"""The command line: global options, command registration, and the one place errors become exit codes.

Commands live in cliniko_sync.commands.* and stay thin; heavy modules are imported inside them so that
`cliniko-sync --help` stays fast.
"""

from __future__ import annotations

import signal
import sys
import traceback
from enum import Enum

import typer

from cliniko_sync import __version__
from cliniko_sync.config import Settings, current_settings, set_current_settings
from cliniko_sync.errors import EXIT_FAILURE, ClinikoSyncError

app = typer.Typer(
    name="cliniko-sync",
    help="Sync Cliniko patients and appointments into PostgreSQL and compute each clinic's active patients.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class LogFormat(str, Enum):
    text = "text"
    json = "json"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cliniko-sync {__version__}")
        raise typer.Exit()


@app.callback()
def global_options(
    database_url: str = typer.Option(
        None, "--database-url", help="PostgreSQL URL (default: $DATABASE_URL, else the embedded database)."
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More logging on stderr (-vv for debug)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors on stderr."),
    log_format: LogFormat = typer.Option(LogFormat.text, "--log-format", help="Log lines as text or JSON."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Global options come before the command, e.g. `cliniko-sync -v sync surf-rehab`."""
    from cliniko_sync.logs import setup_logging

    settings = Settings(
        database_url=database_url, verbose=verbose, quiet=quiet, log_format=log_format.value, debug=debug
    )
    set_current_settings(settings)
    setup_logging(verbose=verbose, quiet=quiet, log_format=log_format.value)


def _register() -> None:
    from cliniko_sync.commands import credentials, db, emulator, org, report, sync

    app.add_typer(db.app, name="db")
    app.command("keygen")(credentials.keygen)
    app.add_typer(org.app, name="org")
    app.add_typer(credentials.app, name="credentials")
    app.command("check-credentials")(credentials.check_credentials)
    app.command("sync")(sync.sync)
    app.command("list-active")(report.list_active)
    app.command("status")(report.status)
    app.command("emulator")(emulator.emulator)
    app.command("demo")(emulator.demo)


_register()


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def error_line(message: str) -> None:
    sys.stderr.write(f"cliniko-sync: error: {message}\n")
    sys.stderr.flush()


def main() -> None:
    """Entry point: run the app and turn the tool's exceptions into one line on stderr and an exit code."""
    signal.signal(signal.SIGTERM, _on_sigterm)  # so atexit hooks (the embedded database) still run
    try:
        app()
    except ClinikoSyncError as exc:
        if current_settings().debug:
            traceback.print_exc()
        error_line(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        error_line("interrupted")
        sys.exit(130)
    except Exception as exc:  # an unexpected bug: never print its message, it may hold patient data
        if current_settings().debug:
            traceback.print_exc()
            error_line(f"unexpected {type(exc).__name__}")
        else:
            error_line(f"unexpected {type(exc).__name__} (run with --debug for a traceback)")
        sys.exit(EXIT_FAILURE)

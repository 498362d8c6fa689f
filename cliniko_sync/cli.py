"""The command line: global options, command registration, and the one place errors become exit codes.

Commands live in cliniko_sync.commands.* and stay thin; heavy modules are imported inside them so that
`cliniko-sync --help` stays fast.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from enum import Enum
from functools import cache
from typing import Any, NoReturn, TextIO, cast

import typer
import typer.main

from cliniko_sync import __version__
from cliniko_sync.config import Settings, current_settings, set_current_settings, validate_schema_name
from cliniko_sync.errors import EXIT_FAILURE, EXIT_USAGE, ClinikoSyncError, UsageError

app = typer.Typer(
    name="cliniko-sync",
    help="Sync Cliniko patients and appointments into PostgreSQL and compute each clinic's active patients.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    # Plain click help: flags without type placeholders, nothing truncated, no boxes (the same look as errors).
    rich_markup_mode=None,
    add_completion=True,
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
        None,
        "--database-url",
        metavar="URL",
        help="PostgreSQL URL (default: $DATABASE_URL, else the embedded database).",
    ),
    schema: str = typer.Option(
        None,
        "--schema",
        metavar="NAME",
        help="Keep every table, view and function of the tool in this schema, created by `db upgrade` "
        "(default: $CLINIKO_SYNC_SCHEMA, else the role's search_path, usually public).",
    ),
    verbose: int = typer.Option(
        0,
        "--verbose",
        "-v",
        count=True,
        show_default=False,
        help="More logging on stderr; repeatable: -v progress and waits, -vv debug.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No logs or progress on stderr except errors."),
    log_format: LogFormat = typer.Option(
        LogFormat.text, "--log-format", metavar="[text|json]", help="Log lines as text or one JSON object each."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Global options (below) go before the command, e.g. `cliniko-sync -v sync surf-rehab`."""
    from cliniko_sync.logs import setup_logging

    settings = Settings(
        database_url=database_url, verbose=verbose, quiet=quiet, log_format=log_format.value, debug=debug, schema=schema
    )
    set_current_settings(settings)
    if schema is not None:
        validate_schema_name(schema, "--schema", UsageError)  # before any command runs
    setup_logging(verbose=verbose, quiet=quiet, log_format=log_format.value)


def _register() -> None:
    from cliniko_sync.commands import credentials, db, emulator, org, report, sync

    app.add_typer(db.app, name="db")
    app.command("keygen", epilog=credentials.KEYGEN_EXAMPLES)(credentials.keygen)
    app.add_typer(org.app, name="org")
    app.add_typer(credentials.app, name="credentials")
    app.command("check-credentials", epilog=credentials.CHECK_EXAMPLES)(credentials.check_credentials)
    app.command("sync", epilog=sync.EXAMPLES)(sync.sync)
    app.command("list-active", epilog=report.LIST_EXAMPLES)(report.list_active)
    app.command("status", epilog=report.STATUS_EXAMPLES)(report.status)
    app.command("emulator", epilog=emulator.EMULATOR_EXAMPLES)(emulator.emulator)
    app.command("demo", epilog=emulator.DEMO_EXAMPLES)(emulator.demo)


_register()


# Options of the top level, which click only accepts before the command.
GLOBAL_OPTIONS = frozenset({"--database-url", "--schema", "--verbose", "-v", "-vv", "-vvv", "--quiet", "-q",
                            "--log-format", "--debug", "--version"})  # fmt: skip


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def error_line(message: str) -> None:
    """The final error: one line, plain or (with --log-format json) one JSON object."""
    from cliniko_sync.logs import stderr_line

    stderr_line(message)


class StdoutClosed(BaseException):
    """The reader of stdout went away (`| head`): not an error, the command just has nobody left to tell.

    A BaseException so that no `except Exception` on the way turns it into a failure."""


class _PipeSafeStdout:
    """sys.stdout that turns a broken pipe into StdoutClosed, after pointing fd 1 at /dev/null so that the
    interpreter's last flush at exit has nowhere to fail (Python's documented recipe for EPIPE)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def _closed(self) -> NoReturn:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
        except (OSError, ValueError):
            pass
        raise StdoutClosed

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._closed()

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._closed()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _given_value(args: list[str], opts: list[str]) -> str | None:
    """What the user typed for an option (`--x v` or `--x=v`), to quote it back in the error."""
    for index, word in enumerate(args):
        for opt in opts:
            if word == opt and index + 1 < len(args):
                return args[index + 1]
            if word.startswith(opt + "="):
                return word[len(opt) + 1 :]
    return None


def _expected(param: Any) -> str:
    """What a parameter accepts, in words."""
    descriptor = getattr(param, "type_descriptor", None)
    choices = getattr(descriptor, "choices", None)
    if choices:
        return "choose " + ", ".join(str(getattr(c, "value", c)) for c in choices)
    annotation = getattr(descriptor, "annotation", None)
    low, high = getattr(param, "min", None), getattr(param, "max", None)
    kind = "a whole number" if annotation is int else "a number" if annotation is float else "a valid value"
    if low is not None and high is not None:
        return f"{kind} from {low} to {high}"
    if low is not None:
        return f"{kind} of at least {low}"
    if high is not None:
        return f"{kind} of at most {high}"
    return kind


def usage_message(error: Any, args: list[str]) -> str:
    """One line for a click usage error, in the tool's own words (no validation-library wording)."""
    from typer._click import exceptions as click_errors

    if isinstance(error, click_errors.NoSuchOption):
        if error.option_name in GLOBAL_OPTIONS or error.option_name.startswith("-vv"):
            return (
                f"{error.option_name} is a global option: global options go before the command, "
                f"e.g. cliniko-sync {error.option_name} sync ORG"
            )
        return f"no such option {error.option_name}"
    if isinstance(error, click_errors.BadOptionUsage):  # e.g. an option given without its value
        return error.message.rstrip(".")
    if isinstance(error, click_errors.MissingParameter) and error.param is not None:
        param = error.param
        name = param.opts[0] if param.param_type_name == "option" else param.display_name_raw.strip("[]")
        path = error.ctx.command_path if error.ctx else "cliniko-sync"
        return f"missing {name} (see {path} --help)"
    if isinstance(error, click_errors.BadParameter) and error.param is not None:
        param = error.param
        name = param.opts[0] if param.param_type_name == "option" else param.display_name_raw.strip("[]")
        value = _given_value(args, list(param.opts)) if param.param_type_name == "option" else None
        if value is None:
            cause = error.__cause__
            errors = cause.errors() if cause is not None and hasattr(cause, "errors") else []
            value = str(errors[0].get("input")) if errors else None
        shown = f" {value[:60]!r}" if value is not None else ""
        return f"invalid {name}{shown} ({_expected(param)})"
    if isinstance(error, click_errors.UsageError) and "No such command" in error.message:
        return error.message.replace("No such command", "no such command").rstrip(".") + " (see cliniko-sync --help)"
    return str(error.format_message())


@cache  # built once per process: Typer reads every command's signature and type hints (~6 ms)
def command() -> Any:
    """The click command tree, with arguments shown as plain names: `ORG`, `[ORG]` (not `{ORG}`, `ORG <str>`)."""
    root = typer.main.get_command(app)

    def tidy(cmd: Any) -> None:
        for param in cmd.params:
            if param.param_type_name == "argument":
                name = (param.metavar or param.name.upper()).strip("[]")
                param.display_type_rich = lambda ctx: None
                param._usage_display_name = (lambda n=name: n) if param.required else (lambda n=name: f"[{n}]")
        for sub in (getattr(cmd, "commands", None) or {}).values():
            tidy(sub)

    tidy(root)
    return root


def _run(args: list[str]) -> int:
    """Run the command tree; every way it can end becomes an exit code (and at most one line on stderr)."""
    from typer._click import exceptions as click_errors

    try:
        code = command().main(args, prog_name="cliniko-sync", standalone_mode=False)
        sys.stdout.flush()
        return code if isinstance(code, int) else 0
    except StdoutClosed:
        return 0
    except typer.Exit as exc:
        return exc.exit_code
    except click_errors.NoArgsIsHelpError as exc:  # a command group given alone: its help, as a usage error
        sys.stderr.write(exc.format_message() + "\n")
        return EXIT_USAGE
    except click_errors.UsageError as exc:
        error_line(usage_message(exc, args))
        return EXIT_USAGE
    except typer.Abort:  # Ctrl-C or end of input at a prompt
        sys.stderr.write("\n")
        error_line("aborted")
        return 130
    except ClinikoSyncError as exc:
        if current_settings().debug:
            traceback.print_exc()
        error_line(str(exc))
        return exc.exit_code
    except KeyboardInterrupt:
        error_line("interrupted")
        return 130
    except Exception as exc:  # an unexpected bug: never print its message, it may hold patient data
        if current_settings().debug:
            traceback.print_exc()
            error_line(f"unexpected {type(exc).__name__}")
        else:
            error_line(f"unexpected {type(exc).__name__} (run with --debug for a traceback)")
        return EXIT_FAILURE


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and turn every error into one line on stderr and an exit code (DESIGN §7)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if argv is None:
        signal.signal(signal.SIGTERM, _on_sigterm)  # so atexit hooks (the embedded database) still run
    real_stdout = sys.stdout
    sys.stdout = cast(TextIO, _PipeSafeStdout(real_stdout))
    try:
        code = _run(args)
    finally:
        sys.stdout = real_stdout
    sys.exit(code)

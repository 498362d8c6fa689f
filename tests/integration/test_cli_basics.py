"""The command line's global behaviour: version, help, unreachable databases, tracebacks only with --debug."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from conftest import run_cli_in_process

from cliniko_sync import __version__

UNREACHABLE = "postgresql://syncer:sup3r-secret@127.0.0.1:1/clinic"


def test_version(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"cliniko-sync {__version__}"


def test_version_is_the_one_written_in_pyproject() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert __version__ == pyproject["project"]["version"]


def test_help_lists_every_command(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("--help")
    assert result.returncode == 0
    for command in ("db", "keygen", "org", "credentials", "check-credentials", "sync", "list-active", "status",
                    "emulator", "demo"):  # fmt: skip
        assert command in result.stdout


def test_console_script_and_module_agree(cli_env: dict[str, str]) -> None:
    script = subprocess.run(
        [sys.executable, "-c", "from cliniko_sync.cli import main; main()", "--version"],
        env=cli_env, capture_output=True, text=True,
    )  # fmt: skip
    assert script.stdout.strip() == f"cliniko-sync {__version__}"


def test_unreachable_database_is_one_line_and_exit_69(cli_env: dict[str, str]) -> None:
    result = run_cli_in_process(["--database-url", UNREACHABLE, "db", "status"], cli_env)
    assert result.returncode == 69
    assert result.stderr.strip().splitlines() == [
        "cliniko-sync: error: cannot connect to the database at 127.0.0.1:1/clinic"
    ]
    assert "sup3r-secret" not in result.stderr + result.stdout


def test_database_url_from_environment(cli_env: dict[str, str]) -> None:
    result = run_cli_in_process(["db", "status"], {**cli_env, "DATABASE_URL": UNREACHABLE})
    assert result.returncode == 69
    assert "127.0.0.1:1" in result.stderr


def test_debug_shows_a_traceback(cli_env: dict[str, str]) -> None:
    result = run_cli_in_process(["--debug", "--database-url", UNREACHABLE, "db", "status"], cli_env)
    assert result.returncode == 69
    assert "Traceback" in result.stderr
    assert "sup3r-secret" not in result.stderr


def test_unknown_option_is_a_usage_error(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("db", "upgrade", "--no-such-option")
    assert result.returncode == 2
    assert result.stderr == "cliniko-sync: error: no such option --no-such-option\n"


def test_schema_behind_is_exit_78(cli, empty_database_url: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("org", "list", env={"DATABASE_URL": empty_database_url})
    assert result.returncode == 78
    assert "cliniko-sync db upgrade" in result.stderr
    assert "Traceback" not in result.stderr


def test_json_logs_on_stderr_keep_stdout_clean(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("-vv", "--log-format", "json", "db", "upgrade")
    assert result.returncode == 0
    assert result.stdout.strip() == "schema is up to date: nothing pending"

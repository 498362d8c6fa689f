"""The README is short and its set-up commands are what CI runs; the manual is the docs site (docs/), where every
command, option, exit code and environment variable the CLI has is documented."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main

from cliniko_sync import config, errors
from cliniko_sync.cli import app

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
DOCS = ROOT / "docs"
COMMANDS_PAGE = (DOCS / "commands.md").read_text(encoding="utf-8")
CONFIGURATION_PAGE = (DOCS / "configuration.md").read_text(encoding="utf-8")


def walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every visible command of the Typer app, with its path from the root (the root's path is empty)."""
    yield path, command
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        if not sub.hidden:
            yield from walk(sub, (*path, name))


COMMANDS = list(walk(typer.main.get_command(app)))
OPTIONS = sorted(
    {
        (" ".join(path), name)
        for path, command in COMMANDS
        for param in command.params
        if param.param_type_name == "option" and not param.hidden
        for name in (*param.opts, *param.secondary_opts)
    }
)


def test_the_walk_sees_the_whole_command_tree() -> None:
    paths = {" ".join(path) for path, _ in COMMANDS}
    assert {"sync", "list-active", "status", "org add", "credentials set", "db upgrade", "demo"} <= paths
    assert ("list-active", "--search") in OPTIONS


@pytest.mark.parametrize("path", [" ".join(path) for path, _ in COMMANDS if path])
def test_every_command_is_in_the_commands_page(path: str) -> None:
    assert f"cliniko-sync {path}" in COMMANDS_PAGE, f"`cliniko-sync {path}` is not documented in docs/commands.md"


@pytest.mark.parametrize(("path", "option"), OPTIONS)
def test_every_option_is_in_the_commands_page(path: str, option: str) -> None:
    where = f"cliniko-sync {path}".strip()
    pattern = rf"(?<![\w-]){re.escape(option)}(?![\w-])"
    assert re.search(pattern, COMMANDS_PAGE), f"{option} of `{where}` is not in docs/commands.md"


def test_every_exit_code_is_in_the_exit_code_table() -> None:
    codes = {value for name, value in vars(errors).items() if name.startswith("EXIT_")}
    section = COMMANDS_PAGE.split("\n## Exit codes", 1)[1].split("\n## ", 1)[0]
    table = {int(code) for code in re.findall(r"^\| (\d+) \|", section, flags=re.MULTILINE)}
    assert codes <= table


def readme_block_after(heading_text: str) -> str:
    """The first fenced code block after the line containing heading_text."""
    after = README[README.index(heading_text) :]
    match = re.search(r"```\w*\n(.*?)```", after, flags=re.DOTALL)
    assert match, f"no code block after {heading_text!r}"
    return match.group(1).strip()


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    command = readme_block_after("Run the tests")
    assert "\n" not in command and "pytest" in command
    ci_lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert command in ci_lines


def test_the_first_set_up_command_runs_the_demo() -> None:
    assert readme_block_after("Set-up on a fresh machine").endswith("cliniko-sync demo")


def cron_invocations() -> list[list[str]]:
    """The argument lists after `cliniko-sync` in every job line of crontab.example, the commented-out alternatives
    (`#0,30 * * * * …`) included: they must work when uncommented."""
    invocations = []
    for text in (ROOT / "crontab.example").read_text(encoding="utf-8").splitlines():
        line = re.sub(r"^#(?=[\d*])", "", text)
        if not line.strip() or line.startswith("#") or re.match(r"^[A-Z_]+=", line):
            continue
        assert len(line.split()) > 5, f"not a cron job line: {line}"
        command = line.split("cliniko-sync ", 1)[1]
        invocations.append(re.split(r"\s+", re.split(r"\s*(?:>>?|&&|\|)", command)[0].strip()))
    return invocations


def test_crontab_example_uses_real_commands_and_options() -> None:
    invocations = cron_invocations()
    assert len(invocations) >= 4
    paths = {" ".join(path) for path, _ in COMMANDS}
    for words in invocations:
        positional = [w for w in words if not w.startswith("-")]
        command = next(w for w in positional if w in paths)
        for word in (w for w in words if w.startswith("-")):
            assert (command, word) in OPTIONS or ("", word) in OPTIONS, f"{word} is not an option of {command}"
    assert any(words[-6:] == ["sync", "--due", "--jobs", "4", "--max-runtime", "10m"] for words in invocations)
    assert any("--max-age" in words for words in invocations)
    assert any("--full" in words for words in invocations)
    assert any(words[-2:] == ["--format", "prometheus"] for words in invocations)


def test_every_environment_variable_is_in_the_configuration_page() -> None:
    names = {value for name, value in vars(config).items() if name.startswith("ENV_")}
    assert {"DATABASE_URL", "CREDENTIALS_ENCRYPTION_KEY", "CLINIKO_SYNC_CONTACT_EMAIL"} <= names
    assert not [name for name in sorted(names) if f"| `{name}` |" not in CONFIGURATION_PAGE]


def test_the_readme_is_short_and_its_links_resolve() -> None:
    assert len(README.splitlines()) <= 200
    targets = re.findall(r"\]\(((?!https?://)[^)#]+)(?:#[^)]*)?\)", README)
    assert "docs/commands.md" in targets
    assert [target for target in targets if not (ROOT / target).exists()] == []

"""The generated part of docs/commands.md: every command's `--help`, rendered from the Typer app.

The page holds one block per command between markers that name it; everything outside the markers is written by
hand. `python -m cliniko_sync.docs_reference --write` renders the blocks again; without `--write` it only checks,
and exits 1 naming the stale ones (tests/test_docs_reference.py fails the same way). A block looks like this:

    <!-- reference: cliniko-sync org add -->
    ```text
    Usage: cliniko-sync org add [OPTIONS] ORG
    …
    ```
    <!-- /reference -->

A section with several commands puts each block in a content tab (`=== "org add"`), indented by four spaces: the
block keeps the indentation of its opening marker.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cliniko_sync import cli

PAGE = Path(__file__).resolve().parent.parent / "docs" / "commands.md"
REGENERATE = "python -m cliniko_sync.docs_reference --write"
# Wide enough that most options and their help fit on one line, narrow enough for a page's code block.
WIDTH = 100
# A block may be indented (inside a content tab): its lines keep the indentation of its first marker.
BLOCK = re.compile(
    r"^(?P<indent>[ ]*)(?P<open><!-- reference: (?P<command>[a-z -]+?) -->\n)(?P<body>.*?)"
    r"(?P<close>^(?P=indent)<!-- /reference -->)",
    re.DOTALL | re.MULTILINE,
)


def commands(command: Any, parent: Any = None) -> Iterator[tuple[str, Any, Any]]:
    """Every visible command as (its full name, e.g. `cliniko-sync org add`; the command; a context that renders its
    help). Typer brings its own click, hence Any."""
    ctx = command.make_context(
        "cliniko-sync" if parent is None else command.name,
        [],
        parent=parent,
        resilient_parsing=True,
        terminal_width=WIDTH,
        max_content_width=WIDTH,
    )
    yield ctx.command_path, command, ctx
    for sub in (getattr(command, "commands", None) or {}).values():
        if not sub.hidden:
            yield from commands(sub, ctx)


def helps() -> dict[str, str]:
    """The block of every command the page must show: the root (the global options) and every command that runs
    something (a group's help only lists its commands, which the root's and their own blocks show)."""
    return {
        name: "```text\n" + "\n".join(line.rstrip() for line in command.get_help(ctx).splitlines()) + "\n```\n"
        for name, command, ctx in commands(cli.command())
        if name == "cliniko-sync" or not hasattr(command, "commands")
    }


def indented(block: str, indent: str) -> str:
    return "".join(indent + line if line.strip() else line for line in block.splitlines(keepends=True))


def regenerate(page: str) -> str:
    """The page with every block rendered again from the app, the hand-written text untouched."""
    blocks = helps()

    def render(match: re.Match[str]) -> str:
        body = indented(blocks[match.group("command")], match.group("indent"))
        return match.group("indent") + match.group("open") + body + match.group("close")

    return BLOCK.sub(render, page)


def stale_blocks(page: str) -> list[str]:
    """The commands whose block is missing, unknown or differs from what the app renders now."""
    blocks = helps()
    shown = {m.group("command"): (m.group("body"), m.group("indent")) for m in BLOCK.finditer(page)}
    return sorted(
        name
        for name in blocks.keys() | shown.keys()
        if name not in blocks or name not in shown or indented(blocks[name], shown[name][1]) != shown[name][0]
    )


def stale_message(stale: list[str]) -> str:
    return (
        f"docs/commands.md is stale for {', '.join(stale)}: run `{REGENERATE}` (a new command first needs its"
        " `<!-- reference: NAME -->` and `<!-- /reference -->` lines in its section of the page; a removed one, its"
        " block removed)"
    )


def main(argv: list[str]) -> int:
    page = PAGE.read_text(encoding="utf-8")
    if argv == ["--write"]:
        PAGE.write_text(regenerate(page), encoding="utf-8")
        argv = []
    if argv:
        print(f"usage: {REGENERATE}   (without --write: check only)", file=sys.stderr)
        return 2
    stale = stale_blocks(PAGE.read_text(encoding="utf-8"))
    if stale:
        print(stale_message(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

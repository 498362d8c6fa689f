"""The import graph runs one way: the command line (cli.py, commands/, and docs_reference.py, which renders its help
into the docs) uses the library, and nothing in the library imports the command line back (rendering lives in
output.py, which both use)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).parents[2] / "cliniko_sync"
COMMAND_LINE = ("cli.py", "__main__.py", "commands", "docs_reference.py")


def imported(path: Path) -> Iterator[str]:
    """Every module name `path` imports, with `from a import b` also giving a.b (b may be a module)."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def is_command_line(module: str) -> bool:
    return module in (
        "cliniko_sync.cli",
        "cliniko_sync.commands",
        "cliniko_sync.__main__",
        "cliniko_sync.docs_reference",
    ) or module.startswith(("cliniko_sync.cli.", "cliniko_sync.commands."))


def test_the_library_never_imports_the_command_line() -> None:
    library = [path for path in PACKAGE.rglob("*.py") if path.relative_to(PACKAGE).parts[0] not in COMMAND_LINE]
    assert len(library) > 20
    upward = [f"{path.relative_to(PACKAGE)} imports {module}" for path in library for module in imported(path)
              if is_command_line(module)]  # fmt: skip
    assert upward == []

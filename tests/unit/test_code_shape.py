"""The shape of the code a maintainer reads: no function in cliniko_sync/ longer than 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import cliniko_sync

PACKAGE = Path(cliniko_sync.__file__).parent
MAX_LINES = 60


def long_functions() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                length = node.end_lineno - node.lineno + 1
                if length > MAX_LINES:
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_longer_than_60_lines() -> None:
    assert long_functions() == []

"""Help-text helpers shared by the commands (kept apart from cli.py, which imports the commands)."""

from __future__ import annotations


def examples(*lines: str) -> str:
    """A help epilog of real invocations, kept as written: the \\b line stops click from re-flowing them."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)

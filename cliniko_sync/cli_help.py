"""Help-text helpers shared by the commands (kept apart from cli.py, which imports the commands)."""

from __future__ import annotations

import typer

from cliniko_sync.output import Format

# --format of every command that prints rows (its parameter typed output.RowFormat).
FORMAT_OPTION = typer.Option(
    Format.table, "--format", metavar="[table|json|jsonl|csv]", help="Output format: table, json, jsonl or csv."
)


def examples(*lines: str) -> str:
    """A help epilog of real invocations, kept as written: the \\b line stops click from re-flowing them."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)

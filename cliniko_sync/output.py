"""Rendering rows for people (rich tables) and for programs (json, jsonl, csv) on stdout."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any, TextIO
from uuid import UUID


class Format(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"


def iso_utc(value: datetime) -> str:
    """ISO 8601 in UTC with a Z, to the second (microseconds kept only when present)."""
    from datetime import UTC

    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    text = value.astimezone(UTC).isoformat()
    return text.replace("+00:00", "Z")


def to_jsonable(value: Any) -> Any:
    """Plain JSON types: datetimes as ISO UTC with Z, UUIDs and ids as strings."""
    if value is None or type(value) in (str, int, bool, float):  # most values: nothing to convert
        return value
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value), ensure_ascii=False)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, list | dict):
        return json.dumps(to_jsonable(value), ensure_ascii=False)
    return str(value)


def render(
    rows: Iterable[dict[str, Any]],
    columns: Sequence[str],
    fmt: Format | str,
    *,
    title: str | None = None,
    table_columns: Sequence[str] | None = None,
    stream: TextIO | None = None,
) -> int:
    """Write rows to stdout in the chosen format; returns how many rows were written.

    json and jsonl carry every key of each row; csv carries `columns`; the table shows `table_columns`
    (default `columns`). Rows are streamed for jsonl and csv, so memory stays flat on long listings.
    """
    out = stream or sys.stdout
    fmt = Format(fmt)
    count = 0
    if fmt is Format.json:
        out.write("[")
        for row in rows:
            out.write(("," if count else "") + "\n  " + dumps(row))
            count += 1
        out.write("\n]\n" if count else "]\n")
    elif fmt is Format.jsonl:
        for row in rows:
            out.write(dumps(row) + "\n")
            count += 1
    elif fmt is Format.csv:
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_cell(row.get(c)) for c in columns])
            count += 1
    else:
        from rich.console import Console
        from rich.table import Table

        shown = list(table_columns or columns)
        table = Table(title=title, show_lines=False)
        for name in shown:
            table.add_column(name.replace("_", " "), overflow="fold")
        for row in rows:
            table.add_row(*(_cell(row.get(c)) for c in shown))
            count += 1
        # In a terminal the table fits the window; piped to a file or a cron mail it is not squeezed into 80 columns.
        width = None if out.isatty() else 240
        Console(file=out, soft_wrap=False, width=width).print(table)
    out.flush()
    return count


def render_object(value: dict[str, Any], fmt: Format | str, *, title: str | None = None) -> None:
    """One record: a two-column table for people, an object for programs."""
    fmt = Format(fmt)
    if fmt in (Format.json, Format.jsonl):
        sys.stdout.write(dumps(value) + "\n")
        return
    if fmt is Format.csv:
        render([value], list(value), fmt)
        return
    render(({"field": k, "value": v} for k, v in value.items()), ["field", "value"], Format.table, title=title)

"""Rendering rows for people (rich tables) and for programs (json, jsonl, csv) on stdout."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from datetime import date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any, Literal, TextIO
from uuid import UUID

from cliniko_sync.errors import ConfigError


class Format(str, Enum):
    """Every format the tool writes on stdout; each command offers the subset below that fits its data."""

    table = "table"
    json = "json"
    jsonl = "jsonl"
    csv = "csv"
    prometheus = "prometheus"


# What `--format` offers, per kind of command (Typer takes the Literal's members as the choices).
RowFormat = Literal[Format.table, Format.json, Format.jsonl, Format.csv]  # listings: list-active, org list|show
StatusFormat = Literal[Format.table, Format.json, Format.jsonl, Format.csv, Format.prometheus]  # status
SummaryFormat = Literal[Format.table, Format.json, Format.jsonl]  # sync's summary, one object per organization

# Tables for people: short headers over the same rows (json and csv keep the full column names).
TableView = dict[str, Callable[[dict[str, Any]], Any]]


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
    if isinstance(value, bool):  # like JSON, so scripts read the same word in every format
        return "true" if value else "false"
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
    drop_first: Sequence[str] = (),
    wide: bool = False,
) -> int:
    """Write rows to stdout in the chosen format; returns how many rows were written.

    json and jsonl carry every key of each row; csv carries `columns`; the table shows `table_columns`
    (default `columns`), dropping the `drop_first` columns, in that order, while it is wider than the terminal
    (unless `wide`). Rows are streamed for jsonl and csv, so memory stays flat on long listings.
    """
    out = stream or sys.stdout
    fmt = Format(fmt)
    if fmt is Format.prometheus:
        raise ValueError("rows have no Prometheus rendering: status writes its own metrics")
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
        table_rows = [[_cell(row.get(c)) for c in (table_columns or columns)] for row in rows]
        count = len(table_rows)
        print_table(table_rows, list(table_columns or columns), out, title=title, drop_first=drop_first, wide=wide)
    out.flush()
    return count


# Columns whose cells are single tokens (ids, dates, numbers, slugs): never wrapped, so they stay whole.
_TEXT_HEADERS = frozenset({"name", "email", "error", "last failure", "message", "value", "title", "detail"})


TEXT_MIN_WIDTH = 20
TEXT_MAX_WORD = 24  # a free-text column grows to hold words up to this long whole; longer ones end in …


def table_width(out: TextIO) -> int:
    """The width to fit: the terminal's, or $COLUMNS; piped to a file or cron mail without COLUMNS, 240 columns."""
    if "COLUMNS" in os.environ:
        try:
            return max(40, int(os.environ["COLUMNS"]))
        except ValueError:
            pass
    if out.isatty():
        return os.get_terminal_size(out.fileno()).columns
    return 240


def _needed(header: str, cells: Iterable[str]) -> int:
    """A column's natural width: its longest cell, and its header (whole for token columns, which never wrap; by its
    longest word for free text)."""
    head = max((len(word) for word in header.split()), default=0) if header in _TEXT_HEADERS else len(header)
    return max([head, *(len(cell) for cell in cells)])


def print_table(
    rows: list[list[str]],
    headers: list[str],
    out: TextIO,
    *,
    title: str | None = None,
    drop_first: Sequence[str] = (),
    wide: bool = False,
) -> None:
    """A rich table that fits the width: ids and dates stay whole, lower-priority columns go first (named in
    `drop_first`), and only free text (names, emails, messages) wraps, at spaces."""
    from rich.console import Console
    from rich.table import Table

    width = table_width(out)
    shown = list(range(len(headers)))
    needed = {i: _needed(headers[i].replace("_", " "), (row[i] for row in rows)) for i in shown}

    longest_word = {i: max((len(word) for row in rows for word in row[i].split()), default=0) for i in shown}

    def least(i: int) -> int:  # free text wraps at spaces: a readable minimum is enough, but no word is cut
        if headers[i].replace("_", " ") in _TEXT_HEADERS:
            return min(needed[i], max(TEXT_MIN_WIDTH, min(longest_word[i], TEXT_MAX_WORD)))
        return needed[i]

    def total() -> int:  # rich's default box: a border before every column and after the last, one space each side
        return sum(least(i) + 3 for i in shown) + 1

    hidden: list[str] = []
    if not wide:
        for name in drop_first:
            if total() <= width:
                break
            if name in headers and headers.index(name) in shown:
                shown.remove(headers.index(name))
                hidden.append(name.replace("_", " "))
    caption = f"hidden to fit {width} columns: {', '.join(hidden)} (--wide shows them)" if hidden else None
    table = Table(title=title, caption=caption, show_lines=False)
    for i in shown:
        header = headers[i].replace("_", " ")
        if header in _TEXT_HEADERS:
            table.add_column(header, min_width=least(i), overflow="ellipsis")  # wraps at spaces
        else:
            table.add_column(header, no_wrap=True, min_width=needed[i], overflow="ellipsis")
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    Console(file=out, soft_wrap=False, width=max(width, total() + 1) if wide else width).print(table)


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


def table_rows(rows: Iterable[dict[str, Any]], view: TableView) -> Iterator[dict[str, Any]]:
    """Each row as the view's short headers over its cells."""
    for row in rows:
        yield {header: cell(row) for header, cell in view.items()}


def render_report(
    rows: Iterable[dict[str, Any]],
    columns: Sequence[str],
    view: TableView,
    fmt: Format | str,
    *,
    title: str,
    drop_first: Sequence[str] = (),
    wide: bool = False,
) -> None:
    """Tables show the short view, fitted to the terminal; json, jsonl and csv carry the full column names."""
    if Format(fmt) is Format.table:
        render(table_rows(rows, view), list(view), Format.table, title=title, drop_first=drop_first, wide=wide)
    else:
        render(rows, columns, fmt)


@contextmanager
def stdout_or_file(path: Path | None) -> Iterator[None]:
    """What the block writes on stdout goes there, or with `path` replaces that file atomically: it is written to a
    hidden temporary file beside it (no `.prom` suffix, so node_exporter's textfile collector skips it), flushed to
    disk, made world-readable (0644: the collector runs as another user) and renamed over `path`. A reader never sees
    half a file, and a block that fails leaves the old file as it was and no temporary file behind."""
    if path is None:
        yield
        return
    import tempfile

    try:
        descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise ConfigError(f"cannot write {path} ({exc.strerror or type(exc).__name__})") from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream, redirect_stdout(stream):
            yield
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise

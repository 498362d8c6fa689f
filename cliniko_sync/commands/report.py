"""`cliniko-sync list-active` and `status`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cliniko_sync.cli_help import FORMAT_OPTION, examples
from cliniko_sync.output import Format, RowFormat, StatusFormat, render_report, stdout_or_file
from cliniko_sync.reports import SortKey

LIST_EXAMPLES = examples(
    "cliniko-sync list-active surf-rehab",
    "cliniko-sync list-active surf-rehab --sort recent --desc --limit 20",
    "cliniko-sync list-active surf-rehab --format csv > active.csv",
)
STATUS_EXAMPLES = examples(
    "cliniko-sync status surf-rehab --history 10",
    "cliniko-sync status --max-age 2h",
    "cliniko-sync status --format prometheus --output /var/lib/node_exporter/textfile/cliniko_sync.prom",
)

WIDE_OPTION = typer.Option(False, "--wide", help="Tables: every column, however wide (default: fit the terminal).")


def list_active(
    organization: str = typer.Argument(..., metavar="ORG", help="Organization id, e.g. surf-rehab."),
    sort: SortKey = typer.Option(
        SortKey.last_appointment, "--sort", metavar="[last_appointment|name|recent]", help="Sort by this, ascending."
    ),
    desc: bool = typer.Option(False, "--desc", help="Sort descending instead."),
    limit: int | None = typer.Option(None, "--limit", metavar="N", min=0, help="At most N rows (default: every row)."),
    offset: int = typer.Option(0, "--offset", metavar="N", min=0, help="Skip the first N rows."),
    min_recent: int = typer.Option(
        0, "--min-recent", metavar="N", min=0, help="Only patients with at least N appointments in the window."
    ),
    search: str | None = typer.Option(
        None, "--search", metavar="TEXT", help="Case-insensitive literal text in the name, email or phone."
    ),
    fmt: RowFormat = FORMAT_OPTION,
    wide: bool = WIDE_OPTION,
) -> None:
    """List an organization's active patients.

    Each row: contact details and appointment counts (recent, upcoming, total), last and next appointment.
    """
    from cliniko_sync import db, reports
    from cliniko_sync.config import current_settings

    with db.session(current_settings()) as conn:
        rows = reports.list_active(
            conn,
            organization,
            sort=sort,
            descending=desc,
            limit=limit,
            offset=offset,
            min_recent=min_recent,
            search=search,
        )
        render_report(
            rows,
            reports.LIST_COLUMNS,
            reports.LIST_TABLE,
            fmt,
            title=f"Active patients of {organization}",
            drop_first=reports.LIST_DROP_FIRST,
            wide=wide,
        )


def status(
    organization: str | None = typer.Argument(None, metavar="ORG", help="Only this organization."),
    history: int | None = typer.Option(None, "--history", metavar="N", min=1, help="List the last N runs instead."),
    max_age: str | None = typer.Option(
        None,
        "--max-age",
        metavar="AGE",
        help="Exit 1 when an enabled organization's last success is older (90s, 30m, 2h, 1d).",
    ),
    fmt: StatusFormat = typer.Option(
        Format.table, "--format", metavar="[table|json|jsonl|csv|prometheus]", help="Output format."
    ),
    wide: bool = WIDE_OPTION,
    output: Path | None = typer.Option(
        None,
        "--output",
        metavar="FILE",
        dir_okay=False,
        help="Write to FILE instead of stdout, atomically (a temporary file beside it, then renamed over it).",
    ),
) -> None:
    """Show each organization's sync health.

    The last run (skipped runs, which found the organization locked, are counted apart), the last success, the last
    failure's message, active patients, and whether a sync is running.
    """

    from cliniko_sync import db, reports
    from cliniko_sync.config import current_settings
    from cliniko_sync.durations import parse_duration
    from cliniko_sync.errors import ClinikoSyncError, UsageError

    limit = parse_duration(max_age) if max_age is not None else None
    if history is not None and fmt is Format.prometheus:
        raise UsageError("--history cannot be combined with --format prometheus")
    with db.session(current_settings()) as conn:
        rows = reports.organization_status(conn, organization, max_age=limit)
        runs = reports.run_history(conn, organization, history) if history is not None else None
    with stdout_or_file(output):
        _print_status(rows, runs, fmt, stale_column=limit is not None, wide=wide)
    stale = reports.stale_summary(rows)
    if stale:
        raise ClinikoSyncError(stale)


def _print_status(
    rows: list[dict[str, Any]], runs: list[dict[str, Any]] | None, fmt: Format, *, stale_column: bool, wide: bool
) -> None:
    """The status report on stdout: Prometheus metrics, the organizations' rows, or the runs of --history."""
    import sys

    from cliniko_sync import reports

    if fmt is Format.prometheus:
        sys.stdout.write(reports.prometheus_text(rows))
    elif runs is None:
        view = {**reports.STATUS_TABLE, **(reports.STALE_COLUMN if stale_column else {})}
        render_report(
            rows,
            reports.STATUS_COLUMNS,
            view,
            fmt,
            title="Sync status",
            drop_first=reports.STATUS_DROP_FIRST,
            wide=wide,
        )
    else:
        render_report(
            runs,
            reports.HISTORY_COLUMNS,
            reports.HISTORY_TABLE,
            fmt,
            title="Sync runs",
            drop_first=reports.HISTORY_DROP_FIRST,
            wide=wide,
        )

"""`cliniko-sync sync ORG | --all`: pull from Cliniko, match contacts, recompute active patients."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Any

import typer


class SyncFormat(str, Enum):
    table = "table"
    json = "json"
    jsonl = "jsonl"


def sync(
    organization: str = typer.Argument(None, metavar="[ORG]", help="Organization id (omit with --all)."),
    all_organizations: bool = typer.Option(False, "--all", help="Sync every enabled organization."),
    full: bool = typer.Option(False, "--full", help="Re-read everything; soft-delete what Cliniko no longer has."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Call Cliniko, report what would change, keep nothing."),
    jobs: int = typer.Option(
        1, "--jobs", min=1, max=16, help="With --all: organizations synced at once (each uses up to 6 connections)."
    ),
    as_of: str = typer.Option(None, "--as-of", help="Compute active patients as of this ISO 8601 time (Z/offset)."),
    max_runtime: float = typer.Option(
        None, "--max-runtime", min=1, help="Stop after a checkpoint once this many seconds have passed (exit 3)."
    ),
    fmt: SyncFormat = typer.Option(
        None, "--format", help="Summary format (default: a table when stdout is a terminal, else nothing)."
    ),
) -> None:
    """Sync organizations from Cliniko into PostgreSQL."""
    from cliniko_sync import db
    from cliniko_sync.config import current_settings
    from cliniko_sync.errors import UsageError

    if bool(organization) == all_organizations:
        raise UsageError("give one organization id, or --all")
    when = parse_as_of(as_of) if as_of else None
    settings = current_settings()
    url = db.database_url(settings)
    _install_stop_handlers()
    with _progress(settings.quiet) as progress:
        if all_organizations:
            results = _sync_all(
                url, progress, jobs=jobs, full=full, dry_run=dry_run, as_of=when, max_runtime=max_runtime
            )
        else:
            from cliniko_sync.orgs import validate_org_id

            org_id = validate_org_id(organization)
            results = [_sync_one(url, progress, org_id, full, dry_run, when, max_runtime, bubble=True)]
    _print_summary(results, fmt, quiet=settings.quiet)
    from cliniko_sync.sync.pipeline import exit_code_for_all

    code = exit_code_for_all(results) if all_organizations else results[0].exit_code
    for result in results:
        if result.error:
            sys.stderr.write(f"cliniko-sync: {result.organization_id}: {result.status}: {result.error}\n")
    raise typer.Exit(code)


def parse_as_of(text: str) -> Any:
    """ISO 8601 with Z or an explicit offset; anything else is a usage error."""
    from datetime import UTC, datetime

    from cliniko_sync.errors import UsageError

    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--as-of must be ISO 8601 with Z or an offset, e.g. 2026-11-24T03:00:00Z (got {text!r})"
        ) from None
    if value.tzinfo is None:
        raise UsageError("--as-of needs a time zone: end it with Z or an offset like +10:00")
    return value.astimezone(UTC)


def _install_stop_handlers() -> None:
    """First SIGTERM/SIGINT: finish the current page, checkpoint, stop (exit 3). A second one stops at once."""
    import signal

    from cliniko_sync.sync.pipeline import STOP_REQUESTED

    def handler(signum: int, frame: object) -> None:
        if STOP_REQUESTED.is_set():
            raise KeyboardInterrupt
        STOP_REQUESTED.set()
        sys.stderr.write("cliniko-sync: stopping after the current page (signal again to abort)\n")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@contextmanager
def _progress(quiet: bool) -> Iterator[Any]:
    """One set of progress bars for the whole command (on stderr, only when it is a terminal)."""
    from cliniko_sync.progress import RichProgress, wanted

    if not wanted(quiet):
        yield None
        return
    with RichProgress() as progress:
        yield progress


def _sync_one(
    url: str,
    progress: Any,
    organization_id: str,
    full: bool,
    dry_run: bool,
    as_of: Any,
    max_runtime: float | None,
    *,
    bubble: bool,
) -> Any:
    from cliniko_sync.errors import ClinikoSyncError
    from cliniko_sync.sync.pipeline import SyncResult, sync_organization

    try:
        return sync_organization(
            url, organization_id, full=full, dry_run=dry_run, as_of=as_of, max_runtime=max_runtime, progress=progress
        )
    except ClinikoSyncError as exc:
        if bubble:
            raise
        status = "skipped" if exc.exit_code == 75 else "failed"
        return SyncResult(organization_id, status, None, as_of, exit_code=exc.exit_code, error=str(exc))


def _sync_all(
    url: str, progress: Any, *, jobs: int, full: bool, dry_run: bool, as_of: Any, max_runtime: float | None
) -> list[Any]:
    from concurrent.futures import ThreadPoolExecutor

    from cliniko_sync import db
    from cliniko_sync.orgs import list_organizations

    with db.connect(url) as conn:
        db.require_current_schema(conn)
        organizations = [org.id for org in list_organizations(conn, enabled_only=True)]
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="sync") as pool:
        futures = [
            pool.submit(_sync_one, url, progress, org_id, full, dry_run, as_of, max_runtime, bubble=False)
            for org_id in organizations
        ]
        return [
            _result_or_failure(future, org_id, as_of) for future, org_id in zip(futures, organizations, strict=True)
        ]


def _result_or_failure(future: Any, organization_id: str, as_of: Any) -> Any:
    """One organization's unexpected crash never stops the others: it becomes a failed result."""
    from cliniko_sync.sync.pipeline import SyncResult, redact

    try:
        return future.result()
    except Exception as exc:
        return SyncResult(organization_id, "failed", None, as_of, exit_code=1, error=redact(exc))


SUMMARY_KEYS = ("organization_id", "status", "mode", "as_of", "dry_run", "requests", "active_patients", "exit_code",
                "error", "sync_log_id", "stats")  # fmt: skip


def _print_summary(results: list[Any], fmt: SyncFormat | None, *, quiet: bool) -> None:
    from cliniko_sync.output import Format, dumps, render

    if fmt is None:
        if quiet or not sys.stdout.isatty():
            return
        fmt = SyncFormat.table
    rows = [{key: result.as_dict()[key] for key in SUMMARY_KEYS} for result in results]
    if fmt in (SyncFormat.json, SyncFormat.jsonl):
        for row in rows:  # one object per organization, one per line
            sys.stdout.write(dumps(row) + "\n")
        return
    table_rows = []
    for row in rows:
        streams = row["stats"].get("streams", {})
        table_rows.append(
            {
                **row,
                "fetched": sum(s["fetched"] for s in streams.values()),
                "inserted": sum(s["inserted"] for s in streams.values()),
                "updated": sum(s["updated"] for s in streams.values()),
                "deleted": sum(s["deleted"] for s in streams.values()),
                "duration_s": row["stats"].get("duration_seconds"),
                "active_added": row["stats"].get("active_added"),
                "active_removed": row["stats"].get("active_removed"),
            }
        )
    columns = ["organization_id", "status", "mode", "requests", "fetched", "inserted", "updated", "deleted",
               "active_patients", "active_added", "active_removed", "duration_s"]  # fmt: skip
    title = "Dry run: what would change (nothing was kept)" if any(r["dry_run"] for r in rows) else "Sync"
    render(table_rows, columns, Format.table, title=title)

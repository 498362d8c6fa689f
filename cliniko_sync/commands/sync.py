"""`cliniko-sync sync ORG | --all | --due`: pull from Cliniko, match contacts, recompute active patients."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import typer

from cliniko_sync.cli_help import examples
from cliniko_sync.output import Format, SummaryFormat

# Set by the first SIGTERM/SIGINT: every running sync stops after its current page (passed to each run).
STOP = threading.Event()

EXAMPLES = examples(
    "cliniko-sync -v sync --all --jobs 4 --max-runtime 50m",
    "cliniko-sync --log-format json sync --due --jobs 4 --max-runtime 10m",
    "cliniko-sync sync surf-rehab --dry-run --format json",
)


JOBS_HELP = (
    "With --all or --due: organizations synced at once, 1 to 16 (default 1; each uses one database connection, and "
    "the process one more)."
)
DUE_HELP = (
    "Claim and sync the enabled organizations whose sync interval has passed, until none is due; for cron every "
    "minute on any number of hosts."
)


def sync(
    organization: str = typer.Argument(None, metavar="ORG", help="Organization id (omit with --all or --due)."),
    all_organizations: bool = typer.Option(False, "--all", help="Sync every enabled organization."),
    due: bool = typer.Option(False, "--due", help=DUE_HELP),
    full: bool = typer.Option(False, "--full", help="Re-read everything; soft-delete what Cliniko no longer has."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Call Cliniko, report what would change, keep nothing."),
    jobs: int | None = typer.Option(None, "--jobs", metavar="N", min=1, max=16, help=JOBS_HELP),
    as_of: str = typer.Option(
        None, "--as-of", metavar="TIME", help="Compute active patients as of this ISO 8601 time (Z/offset)."
    ),
    max_runtime_text: str = typer.Option(
        None,
        "--max-runtime",
        metavar="DURATION",
        help="Stop after a checkpoint once this long has passed: seconds (600) or 90s, 10m, 1h (exit 3; with --due "
        "claim nothing after it, exit 0).",
    ),
    fmt: SummaryFormat = typer.Option(
        None,
        "--format",
        metavar="[table|json|jsonl]",
        help="Summary on stdout (default: a table when stdout is a terminal, else nothing). json: one object, or "
        "with --all or --due one array; jsonl: one object per organization per line.",
    ),
    wide: bool = typer.Option(False, "--wide", help="Summary table: every column (default: fit the terminal)."),
) -> None:
    """Sync organizations from Cliniko into PostgreSQL."""
    from cliniko_sync import db
    from cliniko_sync.config import current_settings
    from cliniko_sync.sync.pipeline import limit_malloc_arenas
    from cliniko_sync.sync.run_log import SyncLocks

    _check_targets(organization, all_organizations, due, jobs)
    limit_malloc_arenas()  # before any thread: a long --due or --all process's RSS stays flat
    when = parse_as_of(as_of) if as_of else None
    max_runtime = parse_max_runtime(max_runtime_text) if max_runtime_text is not None else None
    settings = current_settings()
    url = db.database_url(settings)
    _install_stop_handlers()
    if organization:
        from cliniko_sync.orgs import validate_org_id

        organization = validate_org_id(organization)
    # One connection for every lock of the process (its syncs', and --due's claims), beside one per job.
    with SyncLocks(url) as locks:
        if due:
            _sync_due(locks, settings.quiet, jobs=jobs or 1, full=full, dry_run=dry_run, as_of=when,
                      max_runtime=max_runtime, fmt=fmt, wide=wide)  # fmt: skip
        with _progress(settings.quiet) as progress:
            if all_organizations:
                results = _sync_all(
                    locks, progress, jobs=jobs or 1, full=full, dry_run=dry_run, as_of=when, max_runtime=max_runtime
                )
            else:
                results = [
                    _sync_one(locks, None, progress, organization, full, dry_run, when, max_runtime, bubble=True)
                ]
    _print_summary(results, fmt, as_array=all_organizations, wide=wide)
    _exit_with(results, all_organizations)


def _check_targets(organization: str | None, all_organizations: bool, due: bool, jobs: int | None) -> None:
    from cliniko_sync.errors import UsageError

    if [bool(organization), all_organizations, due].count(True) != 1:
        raise UsageError("give one organization id, or --all, or --due")
    if jobs is not None and not (all_organizations or due):
        raise UsageError("--jobs only applies with --all or --due (one organization is synced by one job)")


def _exit_with(results: list[Any], all_organizations: bool) -> None:
    from cliniko_sync.logs import stderr_line
    from cliniko_sync.sync.pipeline import exit_code_for_all

    code = exit_code_for_all(results) if all_organizations else results[0].exit_code
    for result in results:
        if result.error:  # also on stderr, so cron mails the reason even when stdout goes to a file
            stderr_line(f"{result.status}: {result.error}", organization=result.organization_id, event="sync_failed")
    raise typer.Exit(code)


def parse_max_runtime(text: str) -> float:
    """Seconds as a plain number (the option's first form, kept for existing crontabs), or a duration: 90s, 10m, 1h."""
    from cliniko_sync.durations import parse_duration
    from cliniko_sync.errors import UsageError

    try:
        seconds = float(text)
    except ValueError:
        return parse_duration(text).total_seconds()
    if not 1 <= seconds < float("inf"):
        raise UsageError(f"--max-runtime must be at least 1 second (got {text[:40]!r})")
    return seconds


def _sync_due(
    locks: Any,
    quiet: bool,
    *,
    jobs: int,
    full: bool,
    dry_run: bool,
    as_of: Any,
    max_runtime: float | None,
    fmt: SummaryFormat | None,
    wide: bool,
) -> None:
    """`sync --due`: always exits (typer.Exit) with the code exit_code_for_due decides."""
    import logging

    from cliniko_sync.logs import NOTICE, log_extra, stderr_line
    from cliniko_sync.sync import schedule

    with _progress(quiet) as progress:

        def sync_one(organization_id: str, full_due: bool, runtime_left: float | None, job: Any) -> Any:
            return _sync_one(locks, job, progress, organization_id, full or full_due, dry_run, as_of, runtime_left,
                             bubble=False)  # fmt: skip

        run = schedule.sync_due(
            locks, sync_one, jobs=jobs, max_runtime=max_runtime, dry_run=dry_run, as_of=as_of, stop=STOP
        )
    _print_summary(run.results, fmt, as_array=True, wide=wide)
    # Nothing due is the usual minute: say so only with -v, so a cron log is not a line a minute of nothing.
    level = NOTICE if run.results else logging.INFO
    logging.getLogger("cliniko_sync.sync").log(level, schedule.summary_line(run), extra=log_extra(None, "due_finished"))
    for result in run.failures():
        stderr_line(f"{result.status}: {result.error}", organization=result.organization_id, event="sync_failed")
    if run.error is not None:
        raise run.error
    raise typer.Exit(schedule.exit_code_for_due(run))


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


ABORTED = (
    "aborted: kept every page committed so far (the last committed page of each stream); "
    "the next run resumes from there"
)


def _install_stop_handlers() -> None:
    """First SIGTERM/SIGINT: every wait ends at once; the current page is committed, then the run stops (exit 3).
    A second one aborts at once (exit 130), saying what was kept: an uncommitted page is rolled back by PostgreSQL
    when the connection drops, and the run's sync_log row is marked abandoned by the next run."""
    import os
    import signal

    from cliniko_sync.logs import operator_line, stderr_line

    def handler(signum: int, frame: object) -> None:
        if STOP.is_set():
            # Straight to the file descriptor: the handler may have interrupted this very thread inside a write to
            # sys.stderr, whose buffer lock a second write cannot take (the abort would then never happen).
            try:
                os.write(2, operator_line(ABORTED, event="aborted").encode())
            finally:
                os._exit(130)  # at once: worker threads may be inside an HTTP request that would hold the exit up
        STOP.set()
        stderr_line("stopping after the current page (Ctrl-C again to abort at once)", level="notice", event="stop")

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@contextmanager
def _progress(quiet: bool) -> Iterator[Any]:
    """One set of progress bars for the whole command (on stderr, only when it is a terminal)."""
    from cliniko_sync.progress import Both, LogProgress, RichProgress, wanted

    if not wanted(quiet):
        yield Both(LogProgress())
        return
    with RichProgress() as bars:
        yield Both(bars, LogProgress())


def _sync_one(
    locks: Any,
    job: Any,
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
    from cliniko_sync.sync.pipeline import SyncResult, SyncSettings, sync_organization

    try:
        result = sync_organization(
            locks.url,
            organization_id,
            full=full,
            dry_run=dry_run,
            as_of=as_of,
            max_runtime=max_runtime,
            progress=progress,
            stop=STOP,
            settings=SyncSettings.from_environment(),
            locks=locks,
            work=job.get() if job else None,  # the job's connection, else the run's own
        )
    except ClinikoSyncError as exc:
        if progress is not None:
            progress.organization_failed(organization_id, str(exc))
        if bubble:
            raise
        status = "skipped" if exc.exit_code == 75 else "failed"
        return SyncResult(organization_id, status, None, as_of, exit_code=exc.exit_code, error=str(exc),
                          stats={"error_class": type(exc).__name__})  # fmt: skip
    if progress is not None and result.status != "success":
        progress.organization_failed(organization_id, f"{result.status}: {result.error}")
    log_summary(result)
    return result


def log_summary(result: Any) -> None:
    """The run's one line in the log at the default level: what a cron log needs to tell runs apart."""
    import logging

    from cliniko_sync.logs import NOTICE, log_extra

    streams = result.stats.get("streams", {}).values()
    records = sum(s["fetched"] for s in streams)
    duration = result.stats.get("duration_seconds")
    active = "n/a" if result.active_patients is None else result.active_patients
    logging.getLogger("cliniko_sync.sync").log(
        NOTICE,
        "sync %s%s in %ss: %d requests, %d records, %s active patients",
        result.status,
        " (dry run)" if result.dry_run else "",
        duration if duration is not None else "?",
        result.requests,
        records,
        active,
        extra=log_extra(result.organization_id, "sync_finished"),
    )


def _sync_all(
    locks: Any, progress: Any, *, jobs: int, full: bool, dry_run: bool, as_of: Any, max_runtime: float | None
) -> list[Any]:
    import queue
    from concurrent.futures import ThreadPoolExecutor

    from cliniko_sync.orgs import list_organizations
    from cliniko_sync.sync.pipeline import JobConnection

    with locks.connection() as conn:
        organizations = [org.id for org in list_organizations(conn, enabled_only=True)]
    idle: queue.SimpleQueue[JobConnection] = queue.SimpleQueue()  # one connection per job, each used by one at a time
    connections = [JobConnection(locks.url) for _ in range(min(jobs, len(organizations)))]
    for job in connections:
        idle.put(job)
    if connections:
        locks.check_pooling(connections[0].get())  # a pooler that cannot keep locks: one line, before any sync

    def sync_one(org_id: str) -> Any:
        job = idle.get()
        try:
            return _sync_one(locks, job, progress, org_id, full, dry_run, as_of, max_runtime, bubble=False)
        finally:
            idle.put(job)

    try:
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="sync") as pool:
            futures = [pool.submit(sync_one, org_id) for org_id in organizations]
            return [
                _result_or_failure(future, org_id, as_of) for future, org_id in zip(futures, organizations, strict=True)
            ]
    finally:
        for job in connections:
            job.close()


def _result_or_failure(future: Any, organization_id: str, as_of: Any) -> Any:
    """One organization's unexpected crash never stops the others: it becomes a failed result."""
    from cliniko_sync.cliniko.waits import result
    from cliniko_sync.sync.pipeline import SyncResult, redact

    try:
        return result(future)
    except Exception as exc:
        return SyncResult(organization_id, "failed", None, as_of, exit_code=1, error=redact(exc))


SUMMARY_KEYS = ("organization_id", "status", "mode", "as_of", "dry_run", "requests", "active_patients",
                "history_complete", "exit_code", "error", "sync_log_id", "stats")  # fmt: skip


def _summary_row(result: Any) -> dict[str, Any]:
    # One asdict per result: it deep-copies the stats, and under --all with hundreds of organizations doing it once
    # per key cost seconds.
    values = result.as_dict()
    return {key: values[key] for key in SUMMARY_KEYS}


def _print_summary(results: list[Any], fmt: SummaryFormat | None, *, as_array: bool, wide: bool) -> None:
    """The summary is data, so it goes to stdout whatever -q says (-q silences stderr only).

    json: one object per run that started (failed and partial runs included), or under --all one array of them;
    jsonl: one object per line.
    """
    from cliniko_sync.output import dumps, render

    if fmt is None:
        if not sys.stdout.isatty():
            return
        fmt = Format.table
    rows = [_summary_row(result) for result in results]
    if fmt is Format.jsonl:
        for row in rows:
            sys.stdout.write(dumps(row) + "\n")
        return
    if fmt is Format.json:
        if as_array:
            render(rows, list(SUMMARY_KEYS), Format.json)
        else:
            sys.stdout.write(dumps(rows[0]) + "\n")
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
    render(table_rows, columns, Format.table, title=title, drop_first=SUMMARY_DROP_FIRST, wide=wide)


# What the summary table drops first at 80 columns (--wide keeps all).
SUMMARY_DROP_FIRST = ("active_removed", "active_added", "deleted", "updated", "inserted", "mode", "requests")

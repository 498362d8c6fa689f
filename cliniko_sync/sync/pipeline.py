"""One organization's sync run, as named steps (DESIGN §3):

plan → lock and log → crawl the streams → contacts → active patients → finish.

Each step takes what it needs as arguments: the stop event and the settings come from the caller (the CLI), never
from module globals.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from typing import Any

import psycopg

from cliniko_sync import db
from cliniko_sync.cliniko.waits import StopRequested
from cliniko_sync.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_PARTIAL,
    ClinikoSyncError,
    DatabaseUnavailableError,
    LockedError,
)
from cliniko_sync.sync import run_log, window
from cliniko_sync.sync.active import recompute_active_patients, refresh_statistics, take_changed_patients
from cliniko_sync.sync.contacts import match_contacts, valid_phone_share
from cliniko_sync.sync.passes import Backfill
from cliniko_sync.sync.run_log import LOCK_NAMESPACE
from cliniko_sync.sync.stream_pass import Progress, RunContext, RunTally, check_stop, crawl_stream, crawl_streams
from cliniko_sync.sync.streams import STREAMS, Stream

log = logging.getLogger(__name__)

__all__ = ["LOCK_NAMESPACE", "Progress", "SyncResult", "SyncSettings", "StopRequested", "sync_organization"]

DRY_RUN_PASS_ID = -1
# The backfill's passes that need nothing from the window reads: they start at once with them.
EARLY_BACKFILL = ("patients", "individual_appointments")


@dataclass(frozen=True)
class SyncSettings:
    """The process-wide settings a run needs, read once by the caller."""

    contact_email: str
    rate_limit: int | None = 200
    rate_window: float = 60.0
    http_timeout: float = 30.0
    debug: bool = False

    @classmethod
    def from_environment(cls) -> SyncSettings:
        """From the environment and the CLI's global options (cliniko_sync.config)."""
        from cliniko_sync import config

        rate_limit, rate_window = config.rate_limit_setting()
        return cls(
            config.contact_email(), rate_limit, rate_window, config.http_timeout(), config.current_settings().debug
        )


@dataclass
class SyncResult:
    organization_id: str
    status: str
    mode: str | None
    as_of: datetime | None
    requests: int = 0
    active_patients: int | None = None
    exit_code: int = EXIT_OK
    sync_log_id: int | None = None
    dry_run: bool = False
    error: str | None = None
    history_complete: bool | None = None  # False: active_patients is provisional (window read, history backfilling)
    stats: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Plan:
    """What the run will do, settled before it takes the lock."""

    organization: Any
    as_of: datetime
    make_client: Callable[[], Any]


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def peak_memory_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
MALLOC_ARENAS = 2


def limit_malloc_arenas() -> None:
    """Before a process syncs on threads: at most MALLOC_ARENAS glibc malloc arenas (default: 8 per core).

    glibc gives a thread that allocates while another holds an arena an arena of its own, and returns little of an
    arena's freed memory to the system; each organization's sync runs on threads of its own, so every round of full
    syncs left the RSS of a long `sync --due` or `--all` process a few MB higher (bench.soak: 53 to 85 MB over 90
    days). The GIL leaves Python threads little to gain from more arenas. Nothing changes off glibc, or when
    MALLOC_ARENA_MAX is set (glibc read it at start)."""
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a libc without mallopt
        return
    mallopt(M_ARENA_MAX, MALLOC_ARENAS)


def redact(exc: BaseException) -> str:
    """What may go into sync_log and stderr: our own messages are written to be safe; others only by class."""
    if isinstance(exc, ClinikoSyncError):
        return str(exc)
    return f"unexpected {type(exc).__name__}"


def sync_organization(
    url: str,
    organization_id: str,
    *,
    full: bool = False,
    dry_run: bool = False,
    as_of: datetime | None = None,
    max_runtime: float | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    settings: SyncSettings | None = None,
    locks: run_log.SyncLocks | None = None,
    work: db.DictConnection | None = None,
) -> SyncResult:
    """Sync one organization on one connection (`work`: the job's; else one of its own), holding its lock on `locks`
    (the process's lock connection, shared by its jobs; else one of its own): two connections at most. Returns its
    result; raises only for errors before a run could start (configuration, lock) — those carry their exit code — and
    for unexpected bugs."""
    settings = settings or SyncSettings.from_environment()
    stop = stop or threading.Event()
    started = time.monotonic()
    try:
        with contextlib.ExitStack() as cleanup:
            if locks is None:
                locks = cleanup.enter_context(run_log.SyncLocks(url))
            application = f"cliniko-sync {organization_id}"
            if work is None:
                work = cleanup.enter_context(db.connect(url, autocommit=True, application=application))
            else:
                work.execute("SELECT set_config('application_name', %s, false)", (application,))
            # The organization, its key, its sync_log row: a privilege missing there is one line (exit 78).
            with db.privileges_needed(work, f"the sync of {organization_id} did not start"):
                locks.check_pooling(work)
                plan = _plan(work, organization_id, settings, as_of=as_of, stop=stop, progress=progress)
                mode, sync_log_id = _lock_and_log(locks, work, organization_id, plan, full=full, dry_run=dry_run)
            cleanup.callback(run_log.unlock, locks, organization_id)  # after the sync_log row is final
            context = RunContext(
                url=url,
                organization_id=organization_id,
                country=plan.organization.country,
                full=full,
                dry_run=dry_run,
                pass_id=sync_log_id if sync_log_id is not None else DRY_RUN_PASS_ID,
                started=started,
                deadline=started + max_runtime if max_runtime else None,
                stop=stop,
                progress=progress,
                make_client=plan.make_client,
                lock_lost=locks.lost,
            )
            result = SyncResult(organization_id, "running", mode, plan.as_of, sync_log_id=sync_log_id, dry_run=dry_run)
            _run_logged(locks, work, context, plan, result, settings)
            result.stats.update(duration_seconds=round(time.monotonic() - started, 3), peak_memory_mb=peak_memory_mb())
            result.requests = result.stats.get("requests", 0)
            if sync_log_id is not None:
                run_log.finish_run(locks, sync_log_id, status=result.status, stats=result.stats, error=result.error)
            return result
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailableError(f"lost the database at {db.describe_url(url)}") from exc


class JobConnection:
    """One job's connection, kept from one organization's sync to the next (one opened per organization would have
    the previous one's backend still exiting beside it for a moment), and opened again once it broke."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: db.DictConnection | None = None

    def get(self) -> db.DictConnection:
        if self._conn is None or self._conn.broken or self._conn.closed:
            if self._conn is not None:
                self._conn.close()
            self._conn = db.connect(self.url, autocommit=True)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def _plan(
    conn: db.DictConnection,
    organization_id: str,
    settings: SyncSettings,
    *,
    as_of: datetime | None,
    stop: threading.Event,
    progress: Progress | None,
) -> _Plan:
    """Check the schema, the organization and its key, and build the client factory: a bad contact email or API URL
    fails here, before anything is logged."""
    from cliniko_sync.cliniko.client import ClinikoClient
    from cliniko_sync.crypto import load_credentials
    from cliniko_sync.orgs import get_organization
    from cliniko_sync.progress import wait_reporter

    db.require_current_schema(conn)
    organization = get_organization(conn, organization_id)
    credentials = load_credentials(conn, organization)
    make_client = partial(
        ClinikoClient,
        credentials.api_key,
        contact_email=settings.contact_email,
        api_url=credentials.api_url,
        rate_limit=settings.rate_limit,
        rate_window=settings.rate_window,
        timeout=settings.http_timeout,
        # Waits (rate limit, retry back-off) end at once on a stop request, and are shown and logged.
        stop=stop,
        on_wait=wait_reporter(organization_id, progress),
    )
    make_client().close()
    return _Plan(organization, as_of or utc_now(), make_client)


def _lock_and_log(
    locks: run_log.SyncLocks, work: db.DictConnection, organization_id: str, plan: _Plan, *, full: bool, dry_run: bool
) -> tuple[str, int | None]:
    """Take the organization's lock (or log a skipped run and raise LockedError), then open its sync_log row."""
    if not run_log.try_lock(locks, organization_id):
        if not dry_run:
            run_log.log_skipped(locks, organization_id, plan.organization, plan.as_of)
        raise LockedError(f"another sync of {organization_id} is running; try again later")
    try:
        mode = "full" if full else _run_mode(work, organization_id)
        if dry_run:
            return mode, None
        return mode, run_log.start_run(locks, organization_id, plan.organization, plan.as_of, mode)
    except BaseException:
        run_log.unlock(locks, organization_id)
        raise


def _run_mode(conn: db.DictConnection, organization_id: str) -> str:
    streams = [stream.name for stream in STREAMS if stream.incremental]
    row = conn.execute(db.query("sync_mode"), {"org": organization_id, "streams": streams}).fetchone()
    return "incremental" if row and row["incremental"] else "full"


def _run_logged(
    locks: run_log.SyncLocks,
    work: db.DictConnection,
    context: RunContext,
    plan: _Plan,
    result: SyncResult,
    settings: SyncSettings,
) -> None:
    """The run's work with its heartbeat; any failure becomes the result's status, exit code and safe message."""
    heartbeat = None
    if result.sync_log_id is not None:
        heartbeat = run_log.Heartbeat(locks, result.sync_log_id)
    tally = RunTally()
    try:
        _work(context, tally, plan, result, work)
    except BaseException as exc:
        _record_failure(result, exc, context, settings, work)
        if not isinstance(exc, Exception):
            raise  # SystemExit or an unhandled KeyboardInterrupt: the next run marks this one abandoned
    finally:
        if heartbeat:
            heartbeat.stop()
        result.stats.update(tally.stats())


def _record_failure(
    result: SyncResult, exc: BaseException, context: RunContext, settings: SyncSettings, work: db.DictConnection
) -> None:
    result.status = "partial" if isinstance(exc, StopRequested) else "failed"
    if isinstance(exc, psycopg.OperationalError):
        exc = DatabaseUnavailableError(f"lost the database at {db.describe_url(context.url)} during the sync")
    elif isinstance(exc, psycopg.errors.InsufficientPrivilege):  # revoked since db upgrade (a DBA's change): exit 78
        exc = db.missing_privilege(work, "the sync stopped", exc)
    result.exit_code = exc.exit_code if isinstance(exc, ClinikoSyncError) else EXIT_FAILURE
    result.error = redact(exc)
    result.stats.setdefault("error_class", type(exc).__name__)
    if not isinstance(exc, ClinikoSyncError) and settings.debug:
        log.error("sync of %s failed", context.organization_id, exc_info=exc)  # --debug asked for the traceback


def _work(context: RunContext, tally: RunTally, plan: _Plan, result: SyncResult, work: db.DictConnection) -> None:
    """Crawl, then contacts and active patients, on the run's own connection; a dry run in one rolled-back
    transaction (Cliniko is read, nothing is kept)."""
    if context.dry_run:
        with work.transaction(force_rollback=True):
            _crawl_and_compute(context, tally, plan, result, work)
    else:
        _crawl_and_compute(context, tally, plan, result, work)
    result.status, result.exit_code = "success", EXIT_OK


def _crawl_and_compute(
    context: RunContext, tally: RunTally, plan: _Plan, result: SyncResult, work: db.DictConnection
) -> None:
    # The small reference lists beside the first reads (the big streams', or the window's).
    references = partial(_reference_lists, context, tally, work)
    was_complete = window.history_complete(work, context.organization_id)
    streams = [stream for stream in STREAMS if stream.incremental]
    if was_complete:
        crawl_streams(context, tally, streams, work, beside=references)
    else:
        _window_and_backfill(context, tally, plan, result, work, streams, references)
    check_stop(context, tally)
    complete = was_complete or window.history_complete(work, context.organization_id)
    if complete and not was_complete:
        window.forget_window(work, context.organization_id)
    _contacts_and_active(work, context, plan, result, history_complete=complete)


def _window_and_backfill(
    context: RunContext,
    tally: RunTally,
    plan: _Plan,
    result: SyncResult,
    work: db.DictConnection,
    streams: list[Stream],
    references: Callable[[], None],
) -> None:
    """The window reads, then the provisional list beside the rest of the backfill. The backfill's passes that do
    not depend on the window (patients; individual appointments before its start) start at once with it, yielding
    the limiter's slots to its reads: under the rate limit the requests beyond the first window's worth wait for the
    earliest to age out, so the earlier they go out the sooner the sync ends, and the window is not slowed."""
    organization = plan.organization
    edge = window.backfill_edge(work, context.organization_id, as_of=plan.as_of, window_days=organization.window_days)
    reading = threading.Event()
    reading.set()
    early = [stream for stream in streams if stream.name in EARLY_BACKFILL]
    early_context = replace(context, backfill=Backfill(edge, None) if edge else None, yields_to=reading)

    def window_then_the_rest() -> None:
        try:
            seen = _read_window(context, tally, plan, result, work, references)
        finally:
            reading.clear()
        provisional = partial(_provisional_list, context, tally, plan, result, work)
        rest = [stream for stream in streams if stream.name not in EARLY_BACKFILL and stream.name not in seen.whole]
        crawl_streams(replace(context, backfill=seen.backfill), tally, rest, work, beside=provisional)

    crawl_streams(early_context, tally, early, work, beside=window_then_the_rest)


def _reference_lists(context: RunContext, tally: RunTally, work: db.DictConnection) -> None:
    for stream in STREAMS:
        if not stream.incremental:
            crawl_stream(context, tally, stream, work)


def _read_window(
    context: RunContext,
    tally: RunTally,
    plan: _Plan,
    result: SyncResult,
    work: db.DictConnection,
    references: Callable[[], None],
) -> window.WindowRead:
    """No complete history yet: read the window (and the reference lists meanwhile), which the backfill then leaves
    to the window reads (with the passes it ran whole)."""
    seen = window.WindowRead()
    days = plan.organization.window_days
    try:
        window.read_window(context, tally, work, seen, as_of=plan.as_of, window_days=days, beside=references)
    finally:  # a run stopped halfway says what it read
        result.stats["window"] = {
            "mode": seen.mode,
            "records": seen.records,
            "requests": seen.requests,
            "missing_patients": seen.missing_patients,
            "inserted": seen.inserted,
            # What the list needed: the window's and the reference lists' requests (the backfill's first requests
            # go out beside them).
            "first_active_requests": seen.requests
            + sum(tally.streams[s.name].requests for s in STREAMS if not s.incremental and s.name in tally.streams),
        }
    return seen


def _provisional_list(
    context: RunContext, tally: RunTally, plan: _Plan, result: SyncResult, work: db.DictConnection
) -> None:
    """The provisional active list from the window's reads, committed beside the backfill's first requests (holding
    the run's connection meanwhile)."""
    with tally.connection_turn:
        _contacts_and_active(work, context, plan, result, history_complete=False)
    result.stats["window"]["first_active_seconds"] = round(time.monotonic() - context.started, 3)


def _contacts_and_active(
    work: db.DictConnection, context: RunContext, plan: _Plan, result: SyncResult, *, history_complete: bool
) -> None:
    """Match contacts and recompute active patients in one transaction: readers never see one without the other.
    Without the complete history the list is provisional: total_appointment_count is then a lower bound."""
    organization = plan.organization
    # A dry run analyzes inside its one transaction (ANALYZE samples the rows it wrote; the rollback undoes both).
    result.stats.setdefault("analyzed", []).extend(refresh_statistics(work, context.organization_id))
    with work.transaction():
        # Only the patients who can have changed: drained from active_dirty_patients, plus window-edge crossings
        # since the last recompute; everyone on --full (and on a settings change or a first run).
        scope = take_changed_patients(
            work,
            context.organization_id,
            as_of=plan.as_of,
            window_days=organization.window_days,
            include_upcoming=organization.include_upcoming,
            everything=context.full,
        )
        contacts = match_contacts(work, context.organization_id, scope)
        active = recompute_active_patients(
            work,
            context.organization_id,
            as_of=plan.as_of,
            window_days=organization.window_days,
            include_upcoming=organization.include_upcoming,
            scope=scope,
        )
        share = valid_phone_share(work, context.organization_id, scope)
        # Exact rows once the history is complete (a no-op found by index in the steady state); else provisional.
        marks = "active_history_complete" if history_complete else "active_provisional"
        work.execute(db.query(marks), {"org": context.organization_id})
    result.active_patients = active.active
    result.history_complete = history_complete
    if not history_complete:
        result.stats["backfill_records"] = window.backfill_records(work, context.organization_id)
    done = result.stats.get("contacts", {})  # the provisional list's matching, when there was one
    result.stats.update(
        contacts={name: done.get(name, 0) + count for name, count in asdict(contacts).items()},
        active_patients=active.active,
        active_added=active.added,
        active_updated=active.updated,
        active_removed=active.removed,
        valid_phone_share=share,
        recomputed=dict(everything=scope.everything, written=scope.written, crossing=scope.crossing),
        history_complete=history_complete,
    )


def exit_code_for_all(results: list[SyncResult]) -> int:
    """Under --all: 0 when every organization succeeded, else 3 (DESIGN §7)."""
    return EXIT_OK if all(r.exit_code == EXIT_OK for r in results) else EXIT_PARTIAL

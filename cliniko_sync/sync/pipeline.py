"""One organization's sync run: lock, sync_log, the stream crawls, contacts, active patients (DESIGN §3)."""

from __future__ import annotations

import logging
import os
import resource
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol

import psycopg

from cliniko_sync import db
from cliniko_sync.cliniko import records
from cliniko_sync.cliniko.waits import StopRequested
from cliniko_sync.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_PARTIAL,
    ClinikoSyncError,
    DatabaseUnavailableError,
    LockedError,
)
from cliniko_sync.sync import crawl
from cliniko_sync.sync.active import recompute_active_patients, take_changed_patients
from cliniko_sync.sync.contacts import match_contacts, valid_phone_share
from cliniko_sync.sync.mirror import StreamState, load_state, remove_unseen, save_state, write_rows
from cliniko_sync.sync.streams import STREAMS, Stream

log = logging.getLogger(__name__)

LOCK_NAMESPACE = 0x434C5359  # first half of the two-int advisory lock key; the second is hashtext(org id)
OVERLAP = timedelta(minutes=5)  # incremental passes re-read this much before the cursor (late commits upstream)
HEARTBEAT_SECONDS = 15.0
DRY_RUN_PASS_ID = -1

# Set by the CLI's SIGTERM/SIGINT handler: every running sync checkpoints after its current page and stops.
STOP_REQUESTED = threading.Event()


class _SiblingFailed(StopRequested):
    """Another stream of the same run failed: this one stopped after a checkpoint too."""


class Progress(Protocol):
    def stream_started(self, organization_id: str, stream: str, mode: str) -> None: ...
    def page_done(self, organization_id: str, stream: str, fetched: int, total: int | None) -> None: ...
    def stream_finished(self, organization_id: str, stream: str) -> None: ...


@dataclass
class StreamStats:
    mode: str = "full"
    requests: int = 0
    pages: int = 0
    fetched: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0


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
    stats: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def peak_memory_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def redact(exc: BaseException) -> str:
    """What may go into sync_log and stderr: our own messages are written to be safe; others only by class."""
    if isinstance(exc, ClinikoSyncError):
        return str(exc)
    return f"unexpected {type(exc).__name__}"


# --- the run -----------------------------------------------------------------------------------------------


@dataclass
class _Run:
    url: str
    organization_id: str
    full: bool
    dry_run: bool
    as_of: datetime
    deadline: float | None
    progress: Progress | None
    stop: threading.Event
    work: db.DictConnection
    make_client: Callable[[], Any]
    region: str = "AU"
    pass_id: int = DRY_RUN_PASS_ID
    streams: dict[str, StreamStats] = field(default_factory=dict)
    clients: list[Any] = field(default_factory=list)
    db_write_seconds: float = 0.0  # summed over the streams' writers
    db_write_wall_seconds: float = 0.0  # time during which at least one writer was writing
    records_written: int = 0
    writers: int = 0
    writing_since: float = 0.0
    aborted: threading.Event = field(default_factory=threading.Event)
    tally: threading.Lock = field(default_factory=threading.Lock)

    def client(self) -> Any:
        """A new client for one crawl; clients of the same key share its rate limiter."""
        client = self.make_client()
        with self.tally:
            self.clients.append(client)
        return client

    def _writer_starts(self) -> float:
        with self.tally:
            now = time.perf_counter()
            if self.writers == 0:
                self.writing_since = now
            self.writers += 1
            return now

    def _writer_ends(self, started: float, rows: int) -> None:
        with self.tally:
            now = time.perf_counter()
            self.writers -= 1
            if self.writers == 0:
                self.db_write_wall_seconds += now - self.writing_since
            self.db_write_seconds += now - started
            self.records_written += rows

    def check_stop(self) -> None:
        if self.aborted.is_set():
            raise _SiblingFailed("another stream of this run failed")
        if self.stop.is_set() or STOP_REQUESTED.is_set():
            raise StopRequested("stopped by a signal after a checkpoint; the next run resumes from there")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise StopRequested("stopped by --max-runtime after a checkpoint; the next run resumes from there")

    def crawl_streams(self, streams: list[Stream]) -> None:
        """Crawl streams one after the other on the run's connection (dry runs keep everything in its one
        transaction), or at once, each on its own connection: Cliniko's latency then overlaps instead of adding up,
        and the key's shared limiter still keeps the total under the rate limit."""
        if self.dry_run or len(streams) < 2:
            for stream in streams:
                self.crawl_stream(stream, self.work)
            return
        errors: list[BaseException] = []

        def crawl_alone(stream: Stream) -> None:
            try:
                with db.connect(self.url, autocommit=True, application=f"cliniko-sync {self.organization_id}") as conn:
                    self.crawl_stream(stream, conn)
            except BaseException as exc:
                if not isinstance(exc, _SiblingFailed):
                    self.aborted.set()  # the others stop after their current page
                errors.append(exc)

        threads = [threading.Thread(target=crawl_alone, args=(s,), name=f"sync-{s.name}") for s in streams]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            # The cause, not its echo: a real failure first, then a signal or --max-runtime, then a sibling's stop.
            raise min(errors, key=lambda e: 2 if isinstance(e, _SiblingFailed) else int(isinstance(e, StopRequested)))

    def crawl_stream(self, stream: Stream, work: db.DictConnection) -> StreamStats:
        state = load_state(work, self.organization_id, stream)
        mode, pass_id, position = self._plan_pass(stream, state)
        stats = StreamStats(mode=mode)
        self.streams[stream.name] = stats
        if self.progress:
            self.progress.stream_started(self.organization_id, stream.name, mode)
        with self.client() as client:
            total: int | None = None
            listing = crawl.pages(
                stream,
                position,
                fetch=lambda request: client.list_page(
                    request.path, filters=request.filters, sort=request.sort, page=request.page
                ),
                parse=records.listing_row,  # [ingest] id and updated_at only: the mirror's SQL reads the rest
            )
            self.check_stop()
            for page, step in listing:
                if total is None:
                    total = page.total_entries
                started = self._writer_starts()
                with work.transaction():
                    counts = write_rows(
                        work,
                        stream,
                        self.organization_id,
                        step.new_rows,
                        pass_id if mode == "full" else None,
                        region=self.region,  # [ingest] patients' local phone numbers
                    )
                    new_state = StreamState(pass_id, mode, step.complete, step.position, state.cursor_updated_at)
                    if step.complete:
                        if mode == "full":
                            stats.deleted += remove_unseen(work, stream, self.organization_id, pass_id)
                        reached = step.position.updated_at
                        if reached is not None and (
                            state.cursor_updated_at is None or reached > state.cursor_updated_at
                        ):
                            new_state.cursor_updated_at = reached
                    save_state(work, self.organization_id, stream, new_state)
                self._writer_ends(started, len(step.new_rows))
                stats.pages += 1
                stats.fetched += len(page.records)
                stats.inserted += counts.inserted
                stats.updated += counts.updated
                stats.unchanged += counts.unchanged
                stats.requests = client.stats.requests
                if self.progress:
                    self.progress.page_done(self.organization_id, stream.name, len(page.records), total)
                if not step.complete:
                    self.check_stop()
            if self.progress:
                self.progress.stream_finished(self.organization_id, stream.name)
            return stats

    def _plan_pass(self, stream: Stream, state: StreamState) -> tuple[str, int, crawl.Position]:
        """Resume an unfinished pass, else start a full or an incremental one."""
        unfinished = state.pass_id is not None and not state.pass_complete
        if stream.incremental and unfinished and not (self.full and state.pass_mode != "full"):
            assert state.pass_id is not None and state.pass_mode is not None
            return state.pass_mode, state.pass_id, state.position
        if not stream.incremental or self.full or state.cursor_updated_at is None:
            return "full", self.pass_id, crawl.Position()
        return "incremental", self.pass_id, crawl.Position(state.cursor_updated_at - OVERLAP)


def _run_mode(conn: db.DictConnection, organization_id: str, full: bool) -> str:
    if full:
        return "full"
    rows = conn.execute(
        "SELECT stream, cursor_updated_at, pass_mode, pass_complete FROM sync_state WHERE organization_id = %s",
        (organization_id,),
    ).fetchall()
    by_stream = {row["stream"]: row for row in rows}
    for stream in STREAMS:
        row = by_stream.get(stream.name)
        if not stream.incremental:
            continue
        if row is None or row["cursor_updated_at"] is None:
            return "full"
        if row["pass_mode"] == "full" and not row["pass_complete"]:
            return "full"
    return "incremental"


class _Heartbeat:
    """Keeps sync_log.heartbeat_at fresh from a thread, on the connection that holds the lock."""

    def __init__(self, conn: db.DictConnection, guard: threading.Lock, sync_log_id: int) -> None:
        self._conn, self._guard, self._id = conn, guard, sync_log_id
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="sync-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._done.wait(HEARTBEAT_SECONDS):
            try:
                with self._guard:
                    self._conn.execute("UPDATE sync_log SET heartbeat_at = now() WHERE id = %s", (self._id,))
            except psycopg.Error:
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join(timeout=5)


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
) -> SyncResult:
    """Sync one organization. Returns its result; raises only for errors before a run could start
    (configuration, lock) — those carry their exit code — and for unexpected bugs."""
    from cliniko_sync import config
    from cliniko_sync.cliniko.client import ClinikoClient
    from cliniko_sync.crypto import load_credentials
    from cliniko_sync.orgs import get_organization
    from cliniko_sync.progress import wait_reporter

    started = time.monotonic()
    deadline = started + max_runtime if max_runtime else None
    lock_conn = db.connect(url, autocommit=True, application=f"cliniko-sync {organization_id}")
    guard = threading.Lock()
    try:
        db.require_current_schema(lock_conn)
        organization = get_organization(lock_conn, organization_id)
        credentials = load_credentials(lock_conn, organization_id)
        rate_limit, rate_window = config.rate_limit_setting()
        make_client = partial(
            ClinikoClient,
            credentials.api_key,
            contact_email=config.contact_email(),
            api_url=credentials.api_url,
            rate_limit=rate_limit,
            rate_window=rate_window,
            timeout=config.http_timeout(),
            # Waits (rate limit, retry back-off) end at once on a stop request, and are shown and logged.
            stop=stop if stop is not None else STOP_REQUESTED,
            on_wait=wait_reporter(organization_id, progress),
        )
        make_client().close()  # a bad contact email or API URL fails here, before the run is logged
        locked = lock_conn.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s)) AS ok", (LOCK_NAMESPACE, organization_id)
        ).fetchone()
        run_as_of = as_of or utc_now()
        if not locked or not locked["ok"]:
            if not dry_run:
                lock_conn.execute(
                    """
                    INSERT INTO sync_log (organization_id, status, as_of, window_days, include_upcoming, finished_at,
                                          hostname, pid, error_class, error_message)
                    VALUES (%s, 'skipped', %s, %s, %s, now(), %s, %s, 'LockedError', %s)
                    """,
                    (organization_id, run_as_of, organization.window_days, organization.include_upcoming,
                     socket.gethostname(), os.getpid(), "another sync of this organization was running"),
                )  # fmt: skip
            raise LockedError(f"another sync of {organization_id} is running; try again later")
        mode = _run_mode(lock_conn, organization_id, full)
        sync_log_id: int | None = None
        if not dry_run:
            lock_conn.execute(
                """
                UPDATE sync_log SET status = 'abandoned', finished_at = now(), error_class = 'Abandoned',
                       error_message = 'the process running this sync stopped before finishing'
                WHERE organization_id = %s AND status = 'running'
                """,
                (organization_id,),
            )
            row = lock_conn.execute(
                """
                INSERT INTO sync_log (organization_id, status, mode, as_of, window_days, include_upcoming, hostname,
                                      pid)
                VALUES (%s, 'running', %s, %s, %s, %s, %s, %s) RETURNING id
                """,
                (organization_id, mode, run_as_of, organization.window_days, organization.include_upcoming,
                 socket.gethostname(), os.getpid()),
            ).fetchone()  # fmt: skip
            assert row is not None
            sync_log_id = row["id"]
        heartbeat = _Heartbeat(lock_conn, guard, sync_log_id) if sync_log_id is not None else None
        run: _Run | None = None
        result = SyncResult(organization_id, "running", mode, run_as_of, sync_log_id=sync_log_id, dry_run=dry_run)
        try:
            with db.connect(url, autocommit=True, application=f"cliniko-sync {organization_id}") as work:
                run = _Run(
                    url=url,
                    organization_id=organization_id,
                    full=full,
                    dry_run=dry_run,
                    as_of=run_as_of,
                    deadline=deadline,
                    progress=progress,
                    stop=stop or threading.Event(),
                    work=work,
                    make_client=make_client,
                    region=organization.country,
                    pass_id=sync_log_id if sync_log_id is not None else DRY_RUN_PASS_ID,
                )
                _execute(run, organization, result)
        except BaseException as exc:
            result.status = "partial" if isinstance(exc, StopRequested) else "failed"
            if isinstance(exc, psycopg.OperationalError):
                exc = DatabaseUnavailableError(f"lost the database at {db.describe_url(url)} during the sync")
            result.exit_code = exc.exit_code if isinstance(exc, ClinikoSyncError) else EXIT_FAILURE
            result.error = redact(exc)
            result.stats.setdefault("error_class", type(exc).__name__)
            if not isinstance(exc, ClinikoSyncError) and config.current_settings().debug:
                log.error("sync of %s failed", organization_id, exc_info=True)  # --debug asked for the traceback
            if not isinstance(exc, Exception):
                raise  # SystemExit or an unhandled KeyboardInterrupt: the next run marks this one abandoned
        finally:
            if heartbeat:
                heartbeat.stop()
        result.stats.update(_run_stats(run, started))
        result.requests = result.stats["requests"]
        if sync_log_id is not None:
            _finish_log(lock_conn, guard, sync_log_id, result)
        return result
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailableError(f"lost the database at {db.describe_url(url)}") from exc
    finally:
        _release(lock_conn)


def _release(lock_conn: db.DictConnection) -> None:
    """Unlock before closing: a closed connection's backend lets go of its locks only once it has exited, which a
    sync started right after this one could still see as "another sync is running"."""
    try:
        lock_conn.execute("SELECT pg_advisory_unlock_all()")
    except psycopg.Error:
        pass  # the connection is gone, and its locks with it
    finally:
        lock_conn.close()


def _execute(run: _Run, organization: Any, result: SyncResult) -> None:
    def body() -> None:
        # The small reference lists first, on the run's connection; then the big streams at once.
        for stream in STREAMS:
            if not stream.incremental:
                run.crawl_stream(stream, run.work)
        run.crawl_streams([stream for stream in STREAMS if stream.incremental])
        run.check_stop()
        with run.work.transaction():
            # [ingest] Only the patients who can have changed: drained from active_dirty_patients, plus window-edge
            # crossings since the last recompute; everyone on --full (and on a settings change or a first run).
            scope = take_changed_patients(
                run.work,
                run.organization_id,
                as_of=run.as_of,
                window_days=organization.window_days,
                include_upcoming=organization.include_upcoming,
                everything=run.full,
            )
            contacts = match_contacts(run.work, run.organization_id, scope)
            active = recompute_active_patients(
                run.work,
                run.organization_id,
                as_of=run.as_of,
                window_days=organization.window_days,
                include_upcoming=organization.include_upcoming,
                scope=scope,
            )
            share = valid_phone_share(run.work, run.organization_id)
        result.active_patients = active.active
        result.stats.update(
            contacts=asdict(contacts),
            active_patients=active.active,
            active_added=active.added,
            active_updated=active.updated,
            active_removed=active.removed,
            # [ingest] how much the recompute had to look at
            recomputed=dict(everything=scope.everything, written=scope.written, crossing=scope.crossing),
            valid_phone_share=share,
        )

    if run.dry_run:
        # Everything happens in one transaction that is rolled back: Cliniko is read, nothing is kept.
        with run.work.transaction(force_rollback=True):
            body()
    else:
        body()
    result.status = "success"
    result.exit_code = EXIT_OK


def _run_stats(run: _Run | None, started: float) -> dict[str, Any]:
    clients = run.clients if run is not None else []
    stats: dict[str, Any] = {
        "requests": sum(c.stats.requests for c in clients),
        "retries": sum(c.stats.retries for c in clients),
        "rate_limited": sum(c.stats.rate_limited for c in clients),
        "rate_limit_wait_seconds": round(sum(c.stats.rate_limit_wait_seconds for c in clients), 3),
        "throttle_wait_seconds": round(sum(c.stats.throttle_wait_seconds for c in clients), 3),
        "duration_seconds": round(time.monotonic() - started, 3),
        "peak_memory_mb": peak_memory_mb(),
    }
    if run is not None:
        stats["streams"] = {name: asdict(s) for name, s in run.streams.items()}
        stats["db_write_seconds"] = round(run.db_write_seconds, 3)
        stats["db_write_wall_seconds"] = round(run.db_write_wall_seconds, 3)
        stats["records_written"] = run.records_written
    return stats


def _finish_log(conn: db.DictConnection, guard: threading.Lock, sync_log_id: int, result: SyncResult) -> None:
    from psycopg.types.json import Jsonb

    from cliniko_sync.output import to_jsonable

    try:
        with guard:
            conn.execute(
                """
                UPDATE sync_log SET status = %s, finished_at = now(), heartbeat_at = now(), stats = %s,
                       error_class = %s, error_message = %s
                WHERE id = %s
                """,
                (
                    result.status,
                    Jsonb(to_jsonable(result.stats)),
                    result.stats.get("error_class") if result.error else None,
                    result.error,
                    sync_log_id,
                ),
            )
    except psycopg.Error:
        log.warning("could not record the end of sync %s; the next run will mark it abandoned", sync_log_id)


def exit_code_for_all(results: list[SyncResult]) -> int:
    """Under --all: 0 when every organization succeeded, else 3 (DESIGN §7)."""
    return EXIT_OK if all(r.exit_code == EXIT_OK for r in results) else EXIT_PARTIAL

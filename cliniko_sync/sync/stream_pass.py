"""One pass over one stream: plan where it starts, page through Cliniko, write each page with its checkpoint; and
the four big streams at once, taking turns on the run's one connection to write (DESIGN §3, §5)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any, Protocol

from cliniko_sync import db
from cliniko_sync.cliniko import records
from cliniko_sync.cliniko.waits import StopRequested, join
from cliniko_sync.errors import ClinikoSyncError, DatabaseUnavailableError
from cliniko_sync.sync import crawl, passes
from cliniko_sync.sync.mirror import (
    PageRows,
    StreamState,
    WriteCounts,
    load_state,
    page_rows,
    remove_unseen,
    save_state,
    write_pages,
)
from cliniko_sync.sync.streams import Stream

OVERLAP = timedelta(minutes=5)  # incremental passes re-read this much before the cursor (late commits upstream)
# Pages written per transaction, with the position after the last of them: one statement over more rows spreads
# PostgreSQL's per-statement work (planning, the round trip, the commit). A crash re-reads at most this many pages.
# Each of the four streams holds this many pages until they are written (ten took the sync's peak RSS at M from 78
# to 105 MB).
PAGES_PER_TRANSACTION = 5
# The share of the key's limiter that requests yielding to the window reads leave to them: the passes started beside
# the window take at most the rest of the first minute's burst, so the first active list is hardly later.
WINDOW_SHARE = 0.75


class SiblingFailed(StopRequested):
    """Another stream of the same run failed: this one stopped after a checkpoint too."""


class LockLost(DatabaseUnavailableError):
    """The connection holding the organization's sync lock failed: the lock is gone, so the run stops at once."""


class Progress(Protocol):
    def stream_started(self, organization_id: str, stream: str, mode: str) -> None: ...
    def page_done(self, organization_id: str, stream: str, fetched: int, total: int | None) -> None: ...
    def stream_finished(self, organization_id: str, stream: str) -> None: ...


@dataclass(frozen=True)
class RunContext:
    """What every stream of one run needs to know, fixed when the run starts."""

    url: str
    organization_id: str
    country: str  # the clinic's country: the default region for its patients' phone numbers
    full: bool
    dry_run: bool
    pass_id: int  # the sync_log id: marks the rows a full pass saw
    started: float  # time.monotonic() when the run started
    deadline: float | None  # time.monotonic() after which the run stops at its next checkpoint
    stop: threading.Event  # a signal asked the run to stop at its next checkpoint
    progress: Progress | None
    make_client: Callable[[], Any]
    lock_lost: threading.Event = field(default_factory=threading.Event)  # set when the lock's connection failed
    backfill: passes.Backfill | None = None  # set after window reads, while the history backfills
    # Set while the window reads run: this context's requests then leave WINDOW_SHARE of the limiter's slots to them.
    yields_to: threading.Event | None = None


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
class RunTally:
    """What the run's streams did, added up from their threads under one lock."""

    streams: dict[str, StreamStats] = field(default_factory=dict)
    clients: list[Any] = field(default_factory=list)
    db_write_seconds: float = 0.0  # summed over the streams' writers
    db_write_wall_seconds: float = 0.0  # time during which at least one writer was writing
    records_written: int = 0
    aborted: threading.Event = field(default_factory=threading.Event)  # a stream failed: the others stop
    # The run's one connection, held by one stream at a time for a checkpoint's transaction (or reading its state):
    # the streams' requests overlap, their writes take turns.
    connection_turn: threading.Lock = field(default_factory=threading.Lock)
    _writers: int = 0
    _writing_since: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def new_client(self, context: RunContext) -> Any:
        """A new client for one crawl; clients of the same key share its rate limiter."""
        client = context.make_client()
        reading = context.yields_to
        if reading is not None:
            reserved = int(client.rate_limit_slots * WINDOW_SHARE)
            client.reserve = lambda: reserved if reading.is_set() else 0
        with self._lock:
            self.clients.append(client)
        return client

    def writer_starts(self) -> float:
        with self._lock:
            now = time.perf_counter()
            if self._writers == 0:
                self._writing_since = now
            self._writers += 1
            return now

    def writer_ends(self, started: float, rows: int) -> None:
        with self._lock:
            now = time.perf_counter()
            self._writers -= 1
            if self._writers == 0:
                self.db_write_wall_seconds += now - self._writing_since
            self.db_write_seconds += now - started
            self.records_written += rows

    def stats(self) -> dict[str, Any]:
        clients = self.clients
        return {
            "requests": sum(c.stats.requests for c in clients),
            "retries": sum(c.stats.retries for c in clients),
            "rate_limited": sum(c.stats.rate_limited for c in clients),
            "rate_limit_wait_seconds": round(sum(c.stats.rate_limit_wait_seconds for c in clients), 3),
            "throttle_wait_seconds": round(sum(c.stats.throttle_wait_seconds for c in clients), 3),
            "streams": {name: asdict(s) for name, s in self.streams.items()},
            "db_write_seconds": round(self.db_write_seconds, 3),
            "db_write_wall_seconds": round(self.db_write_wall_seconds, 3),
            "records_written": self.records_written,
        }


def _stop_reason(context: RunContext, tally: RunTally) -> ClinikoSyncError | None:
    """Why the run must end at this checkpoint, if it must."""
    if context.lock_lost.is_set():
        return LockLost("lost the database connection that held this organization's sync lock; stopped")
    if tally.aborted.is_set():
        return SiblingFailed("another stream of this run failed")
    if context.stop.is_set():
        return StopRequested("stopped by a signal after a checkpoint; the next run resumes from there")
    if context.deadline is not None and time.monotonic() >= context.deadline:
        return StopRequested("stopped by --max-runtime after a checkpoint; the next run resumes from there")
    return None


def check_stop(context: RunContext, tally: RunTally) -> None:
    """Raise StopRequested when the run must end at this checkpoint."""
    reason = _stop_reason(context, tally)
    if reason is not None:
        raise reason


def plan_pass(stream: Stream, state: StreamState, *, full: bool, pass_id: int) -> tuple[str, int, crawl.Position]:
    """Resume an unfinished pass, else start a full or an incremental one: (mode, pass id, position)."""
    unfinished = state.pass_id is not None and not state.pass_complete
    if stream.incremental and unfinished and not (full and state.pass_mode != "full"):
        assert state.pass_id is not None and state.pass_mode is not None
        return state.pass_mode, state.pass_id, state.position
    if not stream.incremental or full or state.cursor_updated_at is None:
        return "full", pass_id, crawl.Position()
    return "incremental", pass_id, crawl.Position(state.cursor_updated_at - OVERLAP)


@dataclass
class _Batch:
    """Pages read but not yet written: what to write of each, and the step of the last one (where the pass stands)."""

    pages: list[PageRows] = field(default_factory=list)
    fetched: int = 0  # records Cliniko sent
    last: crawl.Step | None = None

    def add(self, stream: Stream, page: crawl.Listing, step: crawl.Step) -> None:
        # The rows hold the very record objects of the page, so identity says which records the crawl dropped.
        new = {id(row["raw"]) for row in step.new_rows}
        skipped = tuple(position for position, raw in enumerate(page.records) if id(raw) not in new)
        body = page.text if len(page.records) - len(skipped) == len(step.new_rows) else None
        self.pages.append(page_rows(stream, step.new_rows, body, skipped))
        self.fetched, self.last = self.fetched + len(page.records), step


def _checkpoint(work: db.DictConnection, context: RunContext, stream: Stream, state: StreamState, batch: _Batch,
                mode: str, pass_id: int, stats: StreamStats) -> WriteCounts:  # fmt: skip
    """A batch of pages' rows and the stream's position after the last of them, in one transaction."""
    step = batch.last
    assert step is not None
    with work.transaction():
        # Rows and position commit together, so a commit lost in a crash of PostgreSQL or the host (the last few,
        # at most) loses both: the next run reads those pages again. The run's last commit (sync_log) waits for the
        # WAL as usual, and with it for every page before it.
        work.execute("SET LOCAL synchronous_commit = off")
        full_pass = pass_id if mode == "full" else None
        counts = write_pages(work, stream, context.organization_id, batch.pages, full_pass, region=context.country)
        new_state = StreamState(pass_id, mode, step.complete, step.position, state.cursor_updated_at)
        if step.complete:
            if mode == "full":
                window_from = context.backfill.window_from if context.backfill else None
                stats.deleted += remove_unseen(work, stream, context.organization_id, pass_id, window_from)
            reached = step.position.updated_at
            if reached is not None and (state.cursor_updated_at is None or reached > state.cursor_updated_at):
                new_state.cursor_updated_at = reached
        save_state(work, context.organization_id, stream, new_state)
    return counts


def crawl_stream(context: RunContext, tally: RunTally, stream: Stream, work: db.DictConnection) -> StreamStats:
    """Read one stream from where its pass stands to its end, checkpointing every few pages (and at once when the
    run is asked to stop)."""
    with tally.connection_turn:
        state = load_state(work, context.organization_id, stream)
    mode, pass_id, position = plan_pass(stream, state, full=context.full, pass_id=context.pass_id)
    stats = tally.streams[stream.name] = StreamStats(mode=mode)
    progress, org = context.progress, context.organization_id
    if progress:
        progress.stream_started(org, stream.name, mode)
    with tally.new_client(context) as client:
        total: int | None = None
        with tally.connection_turn:  # a backfill's pager reads the classes it asks for
            pager = passes.pass_pager(
                stream, mode, position, work=work, organization_id=org, client=client, backfill=context.backfill
            )
        # Parsed to id and updated_at only: the mirror's SQL reads the rest.
        listing = crawl.run(pager, fetch=crawl.fetcher(client), parse=records.listing_row, ask_again=stream.incremental)
        check_stop(context, tally)
        batch = _Batch()

        def write_batch() -> None:
            nonlocal batch
            with tally.connection_turn:
                started = tally.writer_starts()
                counts = _checkpoint(work, context, stream, state, batch, mode, pass_id, stats)
                tally.writer_ends(
                    started, counts.inserted + counts.updated + counts.unchanged
                )  # what reached the mirror
            stats.pages, stats.fetched = stats.pages + len(batch.pages), stats.fetched + batch.fetched
            stats.inserted, stats.updated = stats.inserted + counts.inserted, stats.updated + counts.updated
            stats.unchanged, stats.requests = stats.unchanged + counts.unchanged, client.stats.requests
            if progress:
                progress.page_done(org, stream.name, batch.fetched, total)
            batch = _Batch()

        pages = iter(listing)
        while True:
            try:
                page, step = next(pages)
            except StopIteration:
                break
            except Exception:
                # A page that failed (after its retries, or breaking an assumption) fails the run, and the pages
                # read before it are kept. Should writing them fail too, the page's error is still the run's.
                if batch.pages:
                    with contextlib.suppress(Exception):
                        write_batch()
                raise
            total = page.total_entries if total is None else total
            batch.add(stream, page, step)
            if len(batch.pages) < PAGES_PER_TRANSACTION and not step.complete and _stop_reason(context, tally) is None:
                continue
            write_batch()
            if not step.complete:
                check_stop(context, tally)
        if progress:
            progress.stream_finished(org, stream.name)
        return stats


def _lanes(streams: list[Stream]) -> list[list[Stream]]:
    """Streams that run one after the other: a stream read by another's ids (attendees by their classes) after it."""
    names = {stream.name for stream in streams}
    lanes = {stream.name: [stream] for stream in streams if stream.classes_of not in names}
    for stream in streams:
        if stream.classes_of in names:
            lanes[stream.classes_of].append(stream)
    return list(lanes.values())


def crawl_streams(
    context: RunContext,
    tally: RunTally,
    streams: list[Stream],
    work: db.DictConnection,
    beside: Callable[[], object] | None = None,
) -> None:
    """Crawl streams at once, a lane of them in a thread of its own (a stream read by another's ids after it:
    attendees after their classes), writing on the run's one connection in turn (a dry run's pages too, inside its
    one transaction): Cliniko's latency then overlaps instead of adding up, the key's shared limiter still keeps the
    total under the rate limit, and the run holds no more connections than one. `beside`: one more job meanwhile
    (it takes the connection's turn itself)."""

    def crawl_lane(lane: list[Stream]) -> None:
        for stream in lane:
            crawl_stream(context, tally, stream, work)

    jobs: list[Callable[[], object]] = [partial(crawl_lane, lane) for lane in _lanes(streams)]
    at_once(tally, [beside, *jobs] if beside else jobs)


def at_once(tally: RunTally, jobs: Sequence[Callable[[], object]]) -> None:
    """Run jobs at once, each in its own thread: Cliniko's latency overlaps instead of adding up, and the key's
    shared limiter keeps the total under the rate limit. A failed job stops the others after their current page."""
    errors: list[BaseException] = []

    def run(job: Callable[[], object]) -> None:
        try:
            job()
        except BaseException as exc:
            if not isinstance(exc, SiblingFailed):
                tally.aborted.set()  # the others stop after their current page
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,), name="sync-crawl") for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        join(thread)
    if errors:
        # The cause, not its echo: a real failure first, then a signal or --max-runtime, then a sibling's stop.
        raise min(errors, key=lambda e: 2 if isinstance(e, SiblingFailed) else int(isinstance(e, StopRequested)))

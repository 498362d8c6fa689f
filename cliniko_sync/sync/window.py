"""A big clinic's first active list in minutes: until an organization's history is complete, each run first reads
only what the active list needs (the window), then backfills the history with the normal full pass.

First window pass: the individual appointments starting on or after `as_of − window_days` (cancelled, archived and
deleted ones included, so they can be ruled out), in updated_at order: where that read ends is a lower bound on
Cliniko's clock as the reads after it begin, the window's cursor (no separate reading of the clock). Then the whole
group class list, as the stream's own full pass (classes are few beside appointments, and a list read in two parts
would cost a part-filled page more), the attendees of the classes in the window (by booking id, 100 at a time), and
the patients all of them name (by id, 100 at a time, archived ones included); a named patient that Cliniko does not
return is deleted. Later runs, while the backfill goes on, refresh it: every record of those four streams changed
since the window's cursor (minus the usual overlap), in updated_at order, plus any newly named patient. The cursor
comes from Cliniko's own timestamps, never from this host's clock.

The backfill leaves the window's records to these reads (passes.py): its appointment passes ask only for those
starting before the window's start (kept from the first pass), its attendees pass for the classes before it and for
any class changed since the first pass took the class list (it may have moved into the window after its attendees
were left to the backfill); once the history is complete, the streams' cursors go back to the last window read's, so
that changes to the window's records since it began are read by the next incremental passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from cliniko_sync import db
from cliniko_sync.cliniko import records
from cliniko_sync.cliniko.client import Filter
from cliniko_sync.sync import crawl, passes
from cliniko_sync.sync.mirror import load_state, write_rows
from cliniko_sync.sync.stream_pass import (
    OVERLAP,
    RunContext,
    RunTally,
    at_once,
    check_stop,
    crawl_stream,
)
from cliniko_sync.sync.streams import STREAMS, STREAMS_BY_NAME, Stream

APPOINTMENTS = ("individual_appointments", "group_appointments")
PATIENT_READS = 4  # named patients are read by id, this many requests at once
WINDOW_STREAMS = (*APPOINTMENTS, "attendees")  # the streams whose backfill leaves records to the window reads
INCREMENTAL = [stream.name for stream in STREAMS if stream.incremental]


@dataclass
class WindowRead:
    """What one window read saw: for the patients to fetch, the cursor to keep, and the run's statistics."""

    mode: str = "window"  # "window" (first pass) or "window refresh"
    records: int = 0
    requests: int = 0  # the reads' (and a refresh's clock reading)
    patient_ids: set[str] = field(default_factory=set)
    read_ids: set[str] = field(default_factory=set)  # every record id read (for the patients asked for by id)
    inserted: dict[str, int] = field(default_factory=dict)  # new mirror rows per stream
    missing_patients: int = 0
    newest: datetime | None = None  # Cliniko's clock as the read began (a lower bound): the next read's cursor
    classes_since: datetime | None = None  # Cliniko's clock as the first pass had read every class
    whole: tuple[str, ...] = ()  # the streams whose whole pass this read ran (the backfill does not run them again)
    backfill: passes.Backfill | None = None  # what the backfill leaves to the window reads (None: a window read
    # before the window's start was kept reads everything again)

    def note(self, rows: list[dict[str, Any]]) -> None:
        self.records += len(rows)
        for row in rows:
            patient_id = records.link_id(row["raw"].get("patient"))
            if patient_id:
                self.patient_ids.add(patient_id)


def history_complete(conn: db.DictConnection, organization_id: str) -> bool:
    row = conn.execute(db.query("history_complete"), {"org": organization_id, "streams": INCREMENTAL}).fetchone()
    return bool(row and row["complete"])


def backfill_records(conn: db.DictConnection, organization_id: str) -> int:
    row = conn.execute(db.query("backfill_progress"), {"org": organization_id}).fetchone()
    return int(row["records"]) if row else 0


def backfill_edge(
    conn: db.DictConnection, organization_id: str, *, as_of: datetime, window_days: int
) -> datetime | None:
    """The window's start, where the backfill's appointment passes stop: kept from the first window pass, or the one
    the first window pass is about to take (None: a window read before the start was kept; the backfill reads all)."""
    found = conn.execute(db.query("window_state_load"), {"org": organization_id}).fetchone()
    if found is None or found["cursor_updated_at"] is None:
        return window_start(as_of, window_days)
    start: datetime | None = found["window_from"]
    return start


def window_start(as_of: datetime, window_days: int) -> datetime:
    """The start of the window a first window pass reads (whole seconds, as Cliniko shows times)."""
    return crawl.whole_second(as_of - timedelta(days=window_days))


def read_window(
    context: RunContext,
    tally: RunTally,
    work: db.DictConnection,
    seen: WindowRead,
    *,
    as_of: datetime,
    window_days: int,
    beside: Callable[[], object],
) -> None:
    """The first window pass, or a refresh of it, noted in `seen` as it goes (a run stopped halfway keeps what it
    did): afterwards the mirror holds everything the active list needs. `beside`: a job run at once with the first
    reads (the reference lists; it takes the connection's turn itself)."""
    with tally.connection_turn:  # the run's connection is shared with the backfill's first passes
        found = work.execute(db.query("window_state_load"), {"org": context.organization_id}).fetchone()
    cursor = found["cursor_updated_at"] if found else None
    window_from = found["window_from"] if found else None
    classes_since = found["window_classes_since"] if found else None
    progress, org = context.progress, context.organization_id
    if progress:
        progress.stream_started(org, "window", "first pass" if cursor is None else "refresh")
    if cursor is None:
        window_from = window_start(as_of, window_days)
        _first_pass(context, tally, work, window_from, seen, beside)
    else:
        seen.mode = "window refresh"
        _refresh(context, tally, work, cursor - OVERLAP, seen, beside)
    _fetch_patients(context, tally, work, seen)
    classes_since = classes_since or seen.classes_since
    params = {
        "org": context.organization_id,
        "cursor": seen.newest or cursor,
        "window_from": window_from,
        "classes_since": classes_since,
    }
    with tally.connection_turn, work.transaction():
        work.execute(db.query("window_state_save"), params)
    if progress:
        progress.stream_finished(org, "window")
    if window_from is not None:
        clock = max(filter(None, (seen.newest, cursor)), default=None)
        seen.backfill = passes.Backfill(window_from, clock, classes_since)


def forget_window(conn: db.DictConnection, organization_id: str) -> None:
    conn.execute(db.query("window_state_drop"), {"org": organization_id, "streams": list(WINDOW_STREAMS)})


def _first_pass(
    context: RunContext,
    tally: RunTally,
    work: db.DictConnection,
    window_from: datetime,
    seen: WindowRead,
    beside: Callable[[], object],
) -> None:
    """One read after another, each starting after the last ended: the individual appointments' read, in updated_at
    order, ends at a lower bound on Cliniko's clock as every later read begins (the window's cursor)."""
    individual = STREAMS_BY_NAME["individual_appointments"]
    pager = crawl.UpdatedAtPager(individual, crawl.Position(), (Filter("starts_at", ">=", window_from),))

    def read_individual() -> None:
        seen.newest = _read(context, tally, work, individual, pager, seen).updated_at

    at_once(tally, [beside, read_individual])
    if seen.newest is None:  # no appointment in the window: read the clock
        seen.newest = _clock_probe(context, tally)
        seen.requests += 1
    classes = STREAMS_BY_NAME["group_appointments"]
    read = crawl_stream(context, tally, classes, work)
    seen.requests, seen.records = seen.requests + read.requests, seen.records + read.fetched
    seen.whole = (classes.name,)
    # A class changed after its pass ended carries an updated_at at or after both clocks read so far.
    params = {"org": context.organization_id, "window_from": window_from}
    with tally.connection_turn:
        clock = load_state(work, context.organization_id, classes).cursor_updated_at
        in_window = tuple(row["id"] for row in work.execute(db.query("window_classes"), params).fetchall())
    seen.classes_since = max(filter(None, (clock, seen.newest)), default=None)
    if in_window:
        attendees = STREAMS_BY_NAME["attendees"]
        start = crawl.Position(tie_after_id=crawl.SECOND_START)
        by_class = crawl.BookingListPager(attendees.paths[0], attendees.include_filters, in_window, start)
        _read(context, tally, work, attendees, by_class, seen)


def _refresh(
    context: RunContext,
    tally: RunTally,
    work: db.DictConnection,
    since: datetime,
    seen: WindowRead,
    beside: Callable[[], object],
) -> None:
    seen.requests += 1
    seen.newest = _clock_probe(context, tally)
    reads: list[Callable[[], object]] = [beside]
    for name in (*APPOINTMENTS, "attendees", "patients"):
        stream = STREAMS_BY_NAME[name]
        reads.append(
            partial(_read, context, tally, work, stream, crawl.keyset_pager(stream, crawl.Position(since)), seen)
        )
    at_once(tally, reads)


def _clock_probe(context: RunContext, tally: RunTally) -> datetime | None:
    """The newest updated_at among appointments now: a lower bound on Cliniko's clock as the window read begins."""
    with tally.new_client(context) as client:
        return passes.clock_probe(client, STREAMS_BY_NAME["individual_appointments"])


def _fetch_patients(context: RunContext, tally: RunTally, work: db.DictConnection, seen: WindowRead) -> None:
    """The named patients the mirror does not hold yet, archived ones included; the ones Cliniko no longer has are
    marked deleted."""
    wanted = sorted(seen.patient_ids, key=crawl.id_order)
    params = {"org": context.organization_id, "ids": wanted}
    with tally.connection_turn:
        unknown = [row["id"] for row in work.execute(db.query("window_unknown_patients"), params).fetchall()]
    if not unknown:
        return
    stream = STREAMS_BY_NAME["patients"]
    returned = WindowRead(seen.mode)
    size = crawl.ID_LIST_SIZE
    chunks = [tuple(unknown[first : first + size]) for first in range(0, len(unknown), size)]

    def read_chunks(lane: list[tuple[str, ...]]) -> None:
        for chunk in lane:
            pager = crawl.IdOrderPager("patients", stream.include_filters, ("id", chunk))
            _read(context, tally, work, stream, pager, returned)

    lanes = min(PATIENT_READS, len(chunks))
    at_once(tally, [partial(read_chunks, chunks[lane::lanes]) for lane in range(lanes)])
    seen.records += returned.records
    seen.requests += returned.requests
    seen.inserted["patients"] = seen.inserted.get("patients", 0) + returned.inserted.get("patients", 0)
    missing = sorted(set(unknown) - returned.read_ids)
    with tally.connection_turn, work.transaction():
        work.execute(db.query("window_missing_patients"), {"org": context.organization_id, "ids": missing})
    seen.missing_patients = len(missing)


def _read(
    context: RunContext, tally: RunTally, work: db.DictConnection, stream: Stream, pager: crawl.Pager, seen: WindowRead
) -> crawl.Position:
    """Run one pager to its end, writing each page into the mirror in its own transaction (no full-pass marks), and
    say where it ended. Reads running at once share the run's connection and `seen`, one page at a time."""
    position = crawl.Position()
    with tally.new_client(context) as client:
        listing = crawl.run(
            pager,
            fetch=crawl.fetcher(client),
            parse=records.listing_row,
        )
        for _page, step in listing:
            position = step.position
            with tally.connection_turn:
                started = tally.writer_starts()
                with work.transaction():
                    counts = write_rows(
                        work, stream, context.organization_id, step.new_rows, None, region=context.country
                    )
                seen.inserted[stream.name] = seen.inserted.get(stream.name, 0) + counts.inserted
                tally.writer_ends(started, len(step.new_rows))
                seen.note(step.new_rows)
                seen.read_ids.update(row["id"] for row in step.new_rows)
                if context.progress:
                    context.progress.page_done(context.organization_id, "window", len(step.new_rows), None)
            if not step.complete:
                check_stop(context, tally)
        with tally.connection_turn:
            seen.requests += client.stats.requests
    return position

"""A big clinic's first active list in minutes: until an organization's history is complete, each run first reads
only what the active list needs (the window), then backfills the history with the normal full pass.

First window pass: individual and group appointments starting on or after `as_of − window_days` (cancelled, archived
and deleted ones included, so they can be ruled out), the attendees of those group appointments (by booking id, 100
at a time), and the patients all of them name (by id, 100 at a time, archived ones included); a named patient that
Cliniko does not return is deleted. Later runs, while the backfill goes on, refresh it: every record of those four
streams changed since the window's cursor (minus the usual overlap), in updated_at order, plus any newly named
patient. The cursor comes from Cliniko's own timestamps, never from this host's clock.

The backfill leaves the window's records to these reads (passes.py): its appointment passes ask only for those
starting before the window's start (kept from the first pass), its attendees pass for the classes before it; once
the history is complete, the streams' cursors go back to the last window read's, so that changes to the window's
records since it began are read by the next incremental passes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from cliniko_sync import db
from cliniko_sync.cliniko import records
from cliniko_sync.cliniko.client import Filter
from cliniko_sync.sync import crawl, passes
from cliniko_sync.sync.mirror import write_rows
from cliniko_sync.sync.stream_pass import OVERLAP, RunContext, RunTally, at_once, check_stop
from cliniko_sync.sync.streams import STREAMS, STREAMS_BY_NAME, Stream

APPOINTMENTS = ("individual_appointments", "group_appointments")
PATIENT_READS = 4  # named patients are read by id, this many requests at once
WINDOW_STREAMS = (*APPOINTMENTS, "attendees")  # the streams whose backfill leaves records to the window reads
INCREMENTAL = [stream.name for stream in STREAMS if stream.incremental]


@dataclass
class WindowRead:
    """What one window read saw: for the patients to fetch, the cursor to keep, and the run's statistics."""

    mode: str  # "window" (first pass) or "window refresh"
    records: int = 0
    requests: int = 0  # the clock probe's and the reads'
    patient_ids: set[str] = field(default_factory=set)
    group_ids: set[str] = field(default_factory=set)
    read_ids: set[str] = field(default_factory=set)  # every record id read (for the patients asked for by id)
    inserted: dict[str, int] = field(default_factory=dict)  # new mirror rows per stream
    missing_patients: int = 0
    newest: datetime | None = None  # Cliniko's clock as the read began (a lower bound): the next read's cursor
    backfill: passes.Backfill | None = None  # what the backfill leaves to the window reads (None: a window read
    # before the window's start was kept reads everything again)
    lock: threading.Lock = field(default_factory=threading.Lock)  # reads at once write one page at a time

    def note(self, stream: Stream, rows: list[dict[str, Any]]) -> None:
        self.records += len(rows)
        for row in rows:
            patient_id = records.link_id(row["raw"].get("patient"))
            if patient_id:
                self.patient_ids.add(patient_id)
            if stream.name == "group_appointments":
                self.group_ids.add(row["id"])


def history_complete(conn: db.DictConnection, organization_id: str) -> bool:
    row = conn.execute(db.query("history_complete"), {"org": organization_id, "streams": INCREMENTAL}).fetchone()
    return bool(row and row["complete"])


def backfill_records(conn: db.DictConnection, organization_id: str) -> int:
    row = conn.execute(db.query("backfill_progress"), {"org": organization_id}).fetchone()
    return int(row["records"]) if row else 0


def read_window(
    context: RunContext, tally: RunTally, work: db.DictConnection, *, as_of: datetime, window_days: int
) -> WindowRead:
    """The first window pass, or a refresh of it: afterwards the mirror holds everything the active list needs."""
    found = work.execute(db.query("window_state_load"), {"org": context.organization_id}).fetchone()
    cursor = found["cursor_updated_at"] if found else None
    window_from = found["window_from"] if found else None
    progress, org = context.progress, context.organization_id
    if progress:
        progress.stream_started(org, "window", "first pass" if cursor is None else "refresh")
    if cursor is None:
        window_from = crawl.whole_second(as_of - timedelta(days=window_days))
        seen = _first_pass(context, tally, work, window_from)
    else:
        seen = _refresh(context, tally, work, cursor - OVERLAP)
    _fetch_patients(context, tally, work, seen)
    params = {"org": context.organization_id, "cursor": seen.newest or cursor, "window_from": window_from}
    with work.transaction():
        work.execute(db.query("window_state_save"), params)
    if progress:
        progress.stream_finished(org, "window")
    if window_from is not None:
        seen.backfill = passes.Backfill(window_from, max(filter(None, (seen.newest, cursor)), default=None))
    return seen


def forget_window(conn: db.DictConnection, organization_id: str) -> None:
    conn.execute(db.query("window_state_drop"), {"org": organization_id, "streams": list(WINDOW_STREAMS)})


def _first_pass(context: RunContext, tally: RunTally, work: db.DictConnection, window_from: datetime) -> WindowRead:
    seen = WindowRead("window", requests=1)
    seen.newest = _clock_probe(context, tally)  # changes after this read carry a later updated_at
    since = Filter("starts_at", ">=", window_from)

    def appointments(name: str) -> Callable[[], None]:
        stream = STREAMS_BY_NAME[name]
        pager = crawl.IdOrderPager(stream.paths[0], (*stream.include_filters, since))
        return partial(_read, context, tally, work, stream, pager, seen)

    def classes_then_attendees() -> None:
        appointments("group_appointments")()
        attendees = STREAMS_BY_NAME["attendees"]
        if seen.group_ids:
            start = crawl.Position(tie_after_id=crawl.SECOND_START)
            pager = crawl.BookingListPager("attendees", attendees.include_filters, tuple(seen.group_ids), start)
            _read(context, tally, work, attendees, pager, seen)

    at_once(tally, [appointments("individual_appointments"), classes_then_attendees])
    return seen


def _refresh(context: RunContext, tally: RunTally, work: db.DictConnection, since: datetime) -> WindowRead:
    seen = WindowRead("window refresh", requests=1)
    seen.newest = _clock_probe(context, tally)
    reads: list[Callable[[], None]] = []
    for name in (*APPOINTMENTS, "attendees", "patients"):
        stream = STREAMS_BY_NAME[name]
        reads.append(
            partial(_read, context, tally, work, stream, crawl.keyset_pager(stream, crawl.Position(since)), seen)
        )
    at_once(tally, reads)
    return seen


def _clock_probe(context: RunContext, tally: RunTally) -> datetime | None:
    """The newest updated_at among appointments now: a lower bound on Cliniko's clock as the window read begins."""
    with tally.new_client(context) as client:
        return passes.clock_probe(client, STREAMS_BY_NAME["individual_appointments"])


def _fetch_patients(context: RunContext, tally: RunTally, work: db.DictConnection, seen: WindowRead) -> None:
    """The named patients the mirror does not hold yet, archived ones included; the ones Cliniko no longer has are
    marked deleted."""
    wanted = sorted(seen.patient_ids, key=crawl.id_order)
    params = {"org": context.organization_id, "ids": wanted}
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
    with work.transaction():
        work.execute(db.query("window_missing_patients"), {"org": context.organization_id, "ids": missing})
    seen.missing_patients = len(missing)


def _read(
    context: RunContext, tally: RunTally, work: db.DictConnection, stream: Stream, pager: crawl.Pager, seen: WindowRead
) -> None:
    """Run one pager to its end, writing each page into the mirror in its own transaction (no full-pass marks).
    Reads running at once share the run's connection and `seen`, one page at a time (seen.lock)."""
    with tally.new_client(context) as client:
        listing = crawl.run(
            pager,
            fetch=crawl.fetcher(client),
            parse=records.listing_row,
        )
        for _page, step in listing:
            with seen.lock:
                started = tally.writer_starts()
                with work.transaction():
                    counts = write_rows(
                        work, stream, context.organization_id, step.new_rows, None, region=context.country
                    )
                seen.inserted[stream.name] = seen.inserted.get(stream.name, 0) + counts.inserted
                tally.writer_ends(started, len(step.new_rows))
                seen.note(stream, step.new_rows)
                seen.read_ids.update(row["id"] for row in step.new_rows)
                if context.progress:
                    context.progress.page_done(context.organization_id, "window", len(step.new_rows), None)
            if not step.complete:
                check_stop(context, tally)
        with seen.lock:
            seen.requests += client.stats.requests

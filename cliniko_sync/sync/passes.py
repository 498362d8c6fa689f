"""What one stream's pass asks Cliniko for: the pager that runs it, from the stream's declaration, the pass's mode
and where it stands.

- Attendees' full passes read the group classes' attendees by the classes' ids (crawl.BookingListPager), never the
  attendee record Cliniko keeps for every individual appointment (cliniko-api.md §4, Attendees).
- While the history backfills after window reads (window.py), full passes leave the window's records to them:
  appointments ask only for those starting before the window (`starts_at:<`), attendees for the classes the first
  window read left to the backfill (before the window, or changed since it took the class list).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cliniko_sync import db
from cliniko_sync.cliniko import records
from cliniko_sync.cliniko.client import Filter
from cliniko_sync.sync import crawl
from cliniko_sync.sync.streams import Stream


@dataclass(frozen=True)
class Backfill:
    """The history is backfilling after window reads: the window's start, Cliniko's clock as the last window read
    began (a lower bound: where an attendees pass by class ids starts its cursor), and as the first one had read
    every class (None: unknown)."""

    window_from: datetime
    clock: datetime | None
    classes_since: datetime | None = None


def clock_probe(client: Any, stream: Stream) -> datetime | None:
    """The newest updated_at in a stream's list now (one request): a lower bound on Cliniko's clock."""
    page = client.list_page(stream.paths[0], filters=stream.include_filters, sort="updated_at:desc", per_page=1)
    rows = [records.listing_row(raw) for raw in page.records]
    return crawl.whole_second(rows[0]["updated_at"]) if rows else None


def class_ids(work: db.DictConnection, organization_id: str, backfill: Backfill | None) -> tuple[str, ...]:
    """The group classes in the mirror whose attendees a full pass reads: all, or while the history backfills those
    the first window read left to it (backfill_bookings.sql)."""
    params = {
        "org": organization_id,
        "window_from": backfill.window_from if backfill else None,
        "classes_since": backfill.classes_since if backfill else None,
    }
    return tuple(row["id"] for row in work.execute(db.query("backfill_bookings"), params).fetchall())


def pass_pager(
    stream: Stream,
    mode: str,
    position: crawl.Position,
    *,
    work: db.DictConnection,
    organization_id: str,
    client: Any,
    backfill: Backfill | None,
) -> crawl.Pager:
    """The pager that runs (or resumes) a stream's pass."""
    if not stream.incremental:
        return crawl.ReferencePager(stream)
    window_from = backfill.window_from if backfill is not None and mode == "full" else None
    if stream.classes_of is not None and mode == "full":
        if position.tie_after_id is None:  # a new pass: read the clock first (the cursor it will leave)
            clock = backfill.clock if backfill is not None else clock_probe(client, stream)
            position = crawl.Position(clock, frozenset(), crawl.SECOND_START)
        classes = class_ids(work, organization_id, backfill)
        return crawl.BookingListPager(stream.paths[0], stream.include_filters, classes, position)
    scope = (Filter(stream.timed_by, "<", window_from),) if window_from and stream.timed_by else ()
    return crawl.keyset_pager(stream, position, scope)

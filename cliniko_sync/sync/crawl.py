"""How one stream is paged: one small pager per mode, and the loop that runs them with the next request in flight.

- UpdatedAtPager: page 1 of `updated_at >= the second we stand at`, sorted `updated_at,id`. Always page 1, so records
  that change while we crawl (and move to the end of the listing) never shift an unread record past us.
- CrowdedSecondPager: when one shown second holds more records than a page, that second alone, by `id > last id`.
- ReferencePager: a small list, read whole by page number from each of its endpoints.

Cliniko shows updated_at in whole seconds but stores and sorts it finer (cliniko-api.md §9): inside one shown second
records come in the hidden order, not by id, and `updated_at:>=T` returns every record shown as T. So order is checked
on whole seconds only, a second is re-read from its start, and the records already read in it are skipped by id.
Every request is built from our own parameters: next links are only a "more pages" signal (they may carry only
`page`, without our filters and sort).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Protocol

from cliniko_sync.assumptions import BOOKING_LISTS, FILTERED, LARGE_IDS, OFFSET_PAGES, ONE_SECOND_ONLY, SORTED
from cliniko_sync.cliniko import records
from cliniko_sync.cliniko.client import Filter
from cliniko_sync.cliniko.waits import join
from cliniko_sync.errors import AssumptionViolatedError, ClinikoRefusedError
from cliniko_sync.sync.streams import Stream

log = logging.getLogger(__name__)
ONE_SECOND = timedelta(seconds=1)
# A page whose last shown second holds this many records (and more pages follow) switches to paging that second by id.
TIE_THRESHOLD = 50
# Ids per `field:=a,b,…` request (Cliniko pages at 100 records; more ids than that would need paging anyway).
ID_LIST_SIZE = 100
# Up to this many records already read in the second a page starts at are excluded by `id:!=` instead of re-read.
MAX_EXCLUDED_IDS = 10
# tie_after_id of a crowded second read from its start (ids are positive integers).
SECOND_START = "0"
NO_ID = "0"  # an id no record has
# A small list read by page number that came up short (records moved while we paged) is read again this often.
REFERENCE_RELISTS = 3
# A page that breaks an assumption (out of order, outside the filter) is asked for again this often before the run
# fails: one glitch is survivable, a server that really ignores the sort or a filter is not.
ASK_AGAIN = 8


def whole_second(value: datetime) -> datetime:
    return value.replace(microsecond=0)


def id_order(record_id: str) -> tuple[int, str]:
    """Cliniko ids are decimal strings of 64-bit integers: order them as numbers."""
    return (int(record_id), record_id) if record_id.isdigit() else (-1, record_id)


@dataclass(frozen=True)
class Position:
    """How far a pass has read: the shown second it stands at (None: the beginning), the ids already read in that
    second, and inside a crowded second the last id read by id order (SECOND_START: none yet)."""

    updated_at: datetime | None = None
    ids: frozenset[str] = field(default_factory=frozenset)
    tie_after_id: str | None = None

    def already_read(self, row: dict[str, Any]) -> bool:
        if self.updated_at is None:
            return False
        second = whole_second(row["updated_at"])
        return second < self.updated_at or (second == self.updated_at and row["id"] in self.ids)


@dataclass(frozen=True)
class Request:
    """One list request, built from the tool's own parameters."""

    path: str
    filters: tuple[Filter, ...]
    sort: str | None = None
    page: int = 1


@dataclass(frozen=True)
class Step:
    """What one page did: the rows not read before, where the pass now stands, and whether it is complete."""

    new_rows: list[dict[str, Any]]
    position: Position
    complete: bool


class Listing(Protocol):
    """What the crawl needs from a Cliniko client page."""

    records: list[dict[str, Any]]
    total_entries: int | None
    text: str | None  # the body as it came (client.Page.text), for the mirror's SQL to read

    def has_more(self) -> bool: ...


class Pager(Protocol):
    def request(self) -> Request: ...
    def advance(self, page: Listing, rows: list[dict[str, Any]]) -> Step: ...
    def following(self, step: Step) -> Pager: ...
    def refused(self, error: ClinikoRefusedError) -> bool: ...


class UpdatedAtPager:
    """Page 1 of everything from the position's second on, in (shown second, hidden fraction) order. `scope`: more
    filters the whole pass keeps (a backfill's `starts_at:<` the window)."""

    def __init__(self, stream: Stream, position: Position, scope: tuple[Filter, ...] = ()) -> None:
        self.stream, self.position, self.scope = stream, position, scope

    def request(self) -> Request:
        filters = [*self.stream.include_filters, *self.scope]
        if self.position.updated_at is not None:
            filters.append(Filter("updated_at", ">=", self.position.updated_at))
            if len(self.position.ids) <= MAX_EXCLUDED_IDS:
                # The few records already read in this second are left out rather than read again.
                filters += [Filter("id", "!=", record_id) for record_id in sorted(self.position.ids, key=id_order)]
        return Request(self.stream.paths[0], tuple(filters), "updated_at,id")

    def advance(self, page: Listing, rows: list[dict[str, Any]]) -> Step:
        path, position, more = self.stream.paths[0], self.position, page.has_more()
        seconds = [whole_second(row["updated_at"]) for row in rows]
        if any(later < earlier for earlier, later in zip(seconds, seconds[1:], strict=False)):
            raise AssumptionViolatedError(path, SORTED, "a page went back in time")
        if position.updated_at is not None and seconds and seconds[0] < position.updated_at:
            raise AssumptionViolatedError(path, FILTERED, "a record from before the asked second came back")
        new_rows = [row for row in rows if not position.already_read(row)]
        if not rows:
            if more:
                raise AssumptionViolatedError(path, SORTED, "an empty page said more pages follow")
            return Step(new_rows, position, complete=True)
        top = seconds[-1]
        ids_at_top = {row["id"] for row, second in zip(rows, seconds, strict=True) if second == top}
        if top == position.updated_at:
            ids_at_top |= position.ids
        crowded = more and (len(ids_at_top) >= TIE_THRESHOLD or top == position.updated_at)
        moved = Position(top, frozenset(ids_at_top), SECOND_START if crowded else None)
        return Step(new_rows, moved, complete=not more)

    def following(self, step: Step) -> Pager:
        return keyset_pager(self.stream, step.position, self.scope)

    def refused(self, error: ClinikoRefusedError) -> bool:
        return False


class CrowdedSecondPager:
    """One shown second with more records than a page, read by id; then the crawl carries on after that second."""

    def __init__(self, stream: Stream, position: Position, scope: tuple[Filter, ...] = ()) -> None:
        assert position.updated_at is not None and position.tie_after_id is not None
        self.stream, self.position, self.scope = stream, position, scope
        self.second: datetime = position.updated_at
        self.after: str = position.tie_after_id

    def request(self) -> Request:
        filters = [
            *self.stream.include_filters,
            *self.scope,
            Filter("updated_at", ">=", self.second),
            Filter("updated_at", "<", self.second + ONE_SECOND),
        ]
        if self.after != SECOND_START:
            filters.append(Filter("id", ">", self.after))
        return Request(self.stream.paths[0], tuple(filters), "id")

    def advance(self, page: Listing, rows: list[dict[str, Any]]) -> Step:
        path, position = self.stream.paths[0], self.position
        ids = [id_order(row["id"]) for row in rows]
        if any(whole_second(row["updated_at"]) != self.second for row in rows):
            raise AssumptionViolatedError(path, ONE_SECOND_ONLY, "a record from another second came back")
        if ids and self.after != SECOND_START and ids[0] <= id_order(self.after):
            raise AssumptionViolatedError(path, LARGE_IDS, "a record at or below the asked id came back")
        if any(later <= earlier for earlier, later in zip(ids, ids[1:], strict=False)):
            raise AssumptionViolatedError(path, ONE_SECOND_ONLY, "ids did not ascend")
        new_rows = [row for row in rows if row["id"] not in position.ids]
        if not page.has_more():
            # The crowded second is exhausted: carry on after it.
            return Step(new_rows, Position(self.second + ONE_SECOND), complete=False)
        if not rows:
            raise AssumptionViolatedError(path, ONE_SECOND_ONLY, "an empty page said more pages follow")
        return Step(new_rows, Position(self.second, position.ids, rows[-1]["id"]), complete=False)

    def following(self, step: Step) -> Pager:
        return keyset_pager(self.stream, step.position, self.scope)

    def refused(self, error: ClinikoRefusedError) -> bool:
        return False


class ReferencePager:
    """A small list read whole: each endpoint of the stream in turn, page after page with our own parameters."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.include = stream.include_filters
        self.path_index = 0
        self.page_number = 1
        self.relists = REFERENCE_RELISTS
        self.seen: set[str] = set()  # every id this pass has read, all endpoints
        self.listed: set[str] = set()  # the ids of the current endpoint's listing

    def request(self) -> Request:
        return Request(self.stream.paths[self.path_index], self.include, None, self.page_number)

    def advance(self, page: Listing, rows: list[dict[str, Any]]) -> Step:
        new_rows = [row for row in rows if row["id"] not in self.seen]
        ids = {row["id"] for row in rows}
        fresh = not ids <= self.listed  # a page of nothing but repeats ends the listing (no paging forever)
        self.seen |= ids
        self.listed |= ids
        if page.has_more() and fresh:
            self.page_number += 1
            return Step(new_rows, Position(), complete=False)
        if page.total_entries is not None and len(self.listed) < page.total_entries:
            if not self.relists:
                raise AssumptionViolatedError(self.request().path, OFFSET_PAGES, "records were missing every time")
            self.relists -= 1  # records moved while we paged: read this endpoint again from page 1
        else:
            self.path_index += 1
        self.page_number = 1
        self.listed.clear()
        return Step(new_rows, Position(), complete=self.path_index == len(self.stream.paths))

    def following(self, step: Step) -> Pager:
        return self

    def refused(self, error: ClinikoRefusedError) -> bool:
        """A refused wish (e.g. `archived_at:*`): read the list without it, as the stream's declaration allows."""
        if not self.include:
            return False
        log.warning(
            "Cliniko refused the filters of /%s (%s); reading it without them",
            error.path,
            error.cliniko_message or f"HTTP {error.status}",
        )
        self.include = ()
        self.page_number = 1
        self.listed.clear()
        return True


class IdOrderPager:
    """Every record matching fixed filters, page 1 of `id > the last id read` sorted by id: the window pass's reads.

    Ids never change, so records edited while we read cannot shift an unread one past us. With `id_list` (a field
    and its ids, e.g. booking_id and group appointment ids), the ids are asked for 100 at a time (`field:=a,b,…`).
    """

    def __init__(
        self, path: str, filters: tuple[Filter, ...], id_list: tuple[str, tuple[str, ...]] | None = None,
        after: str = SECOND_START,
    ) -> None:  # fmt: skip
        self.path, self.filters, self.id_list, self.after = path, filters, id_list, after

    def _chunk(self) -> tuple[Filter, ...]:
        if self.id_list is None:
            return ()
        field_name, ids = self.id_list
        return (Filter(field_name, "=", ids[:ID_LIST_SIZE]),)

    def request(self) -> Request:
        after = (Filter("id", ">", self.after),) if self.after != SECOND_START else ()
        return Request(self.path, (*self.filters, *self._chunk(), *after), "id")

    def advance(self, page: Listing, rows: list[dict[str, Any]]) -> Step:
        ids = [id_order(row["id"]) for row in rows]
        if any(later <= earlier for earlier, later in zip([id_order(self.after), *ids], ids, strict=False)):
            raise AssumptionViolatedError(self.path, LARGE_IDS, "ids did not ascend past the last one read")
        if page.has_more():
            if not rows:
                raise AssumptionViolatedError(self.path, LARGE_IDS, "an empty page said more pages follow")
            return Step(rows, Position(tie_after_id=rows[-1]["id"]), complete=False)
        rest = self.id_list[1][ID_LIST_SIZE:] if self.id_list else ()
        return Step(rows, Position(tie_after_id=SECOND_START), complete=not rest)

    def following(self, step: Step) -> Pager:
        assert step.position.tie_after_id is not None
        if step.position.tie_after_id != SECOND_START or self.id_list is None:
            return IdOrderPager(self.path, self.filters, self.id_list, step.position.tie_after_id)
        field_name, ids = self.id_list
        return IdOrderPager(self.path, self.filters, (field_name, ids[ID_LIST_SIZE:]))

    def refused(self, error: ClinikoRefusedError) -> bool:
        return False


class BookingListPager:
    """The attendees of given bookings (group classes), 100 booking ids a request (`booking_id:=a,b,…`), sorted by
    booking then id: never the attendee records Cliniko keeps for individual appointments.

    A full page ends inside a booking, so the next request starts at that booking again, leaving out the few records
    already read in it by `id:!=` (or, past MAX_EXCLUDED_IDS of them, reading that booking alone by `id:>`): no page
    holds a record already read, and no page comes back short before the last. The position: `tie_after_id` the
    booking the pass stands at (SECOND_START: the first), `ids` the attendees read in it, `updated_at` the clock
    reading taken before the pass began (the stream's cursor once it completes).
    """

    def __init__(self, path: str, filters: tuple[Filter, ...], bookings: tuple[str, ...], position: Position) -> None:
        assert position.tie_after_id is not None
        self.path, self.filters, self.position = path, filters, position
        ordered = sorted(bookings, key=id_order)
        start = position.tie_after_id
        if start != SECOND_START:
            ordered = [booking for booking in ordered if id_order(booking) >= id_order(start)]
        self.bookings = tuple(ordered)
        self.alone = len(position.ids) > MAX_EXCLUDED_IDS and bool(self.bookings) and self.bookings[0] == start

    def _asked(self) -> tuple[str, ...]:
        # No class at all: one request for an id none has (ids are positive), so the pass still ends on a page.
        return self.bookings[:1] if self.alone else self.bookings[:ID_LIST_SIZE] or (NO_ID,)

    def request(self) -> Request:
        filters = [*self.filters, Filter("booking_id", "=", self._asked())]
        if self.alone:
            filters.append(Filter("id", ">", max(self.position.ids, key=id_order)))
            return Request(self.path, tuple(filters), "id")
        if self.bookings and self.bookings[0] == self.position.tie_after_id:
            filters += [Filter("id", "!=", record_id) for record_id in sorted(self.position.ids, key=id_order)]
        return Request(self.path, tuple(filters), "booking_id,id")

    def advance(self, page: Listing, rows: list[dict[str, Any]]) -> Step:
        asked = self._asked()
        rank = {booking: n for n, booking in enumerate(asked)}
        keys = []
        for row in rows:
            booking = records.link_id(row["raw"].get("booking"))
            if booking not in rank or row["id"] in self.position.ids:
                raise AssumptionViolatedError(self.path, BOOKING_LISTS, "a record of another booking came back")
            keys.append((rank[booking], id_order(row["id"])))
        if any(later <= earlier for earlier, later in zip(keys, keys[1:], strict=False)):
            raise AssumptionViolatedError(self.path, BOOKING_LISTS, "records were not in booking and id order")
        clock = self.position.updated_at
        if not page.has_more():
            following = self.bookings[len(asked) :]
            if not following:
                return Step(rows, Position(clock, frozenset(), SECOND_START), complete=True)
            return Step(rows, Position(clock, frozenset(), following[0]), complete=False)
        if not rows:
            raise AssumptionViolatedError(self.path, BOOKING_LISTS, "an empty page said more pages follow")
        last = asked[keys[-1][0]]
        read = {row["id"] for row, key in zip(rows, keys, strict=True) if key[0] == keys[-1][0]}
        if last == self.position.tie_after_id:
            read |= self.position.ids
        return Step(rows, Position(clock, frozenset(read), last), complete=False)

    def following(self, step: Step) -> Pager:
        return BookingListPager(self.path, self.filters, self.bookings, step.position)

    def refused(self, error: ClinikoRefusedError) -> bool:
        return False


def fetcher(client: Any) -> Callable[[Request], Listing]:
    """The crawl's `fetch` for a Cliniko client: each Request sent exactly as the pager built it."""

    def fetch(request: Request) -> Listing:
        page: Listing = client.list_page(request.path, filters=request.filters, sort=request.sort, page=request.page)
        return page

    return fetch


def keyset_pager(stream: Stream, position: Position, scope: tuple[Filter, ...] = ()) -> Pager:
    if position.tie_after_id is not None and position.updated_at is not None:
        return CrowdedSecondPager(stream, position, scope)
    return UpdatedAtPager(stream, position, scope)


def pager_for(stream: Stream, position: Position) -> Pager:
    """The pager that continues `stream` from `position`."""
    return keyset_pager(stream, position) if stream.incremental else ReferencePager(stream)


class _Prefetch:
    """One request running in a daemon thread while the caller writes the previous page to the database.

    A daemon thread, so a run stopped by a signal never waits for a request still retrying in the background.
    """

    def __init__(self, request: Callable[[], Listing]) -> None:
        self._request = request
        self._page: Listing | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="cliniko-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._page = self._request()
        except BaseException as exc:  # handed to the caller's thread by result()
            self._error = exc

    def result(self) -> Listing:
        join(self._thread)
        if self._error is not None:
            raise self._error
        assert self._page is not None
        return self._page


def pages(
    stream: Stream,
    position: Position,
    *,
    fetch: Callable[[Request], Listing],
    parse: Callable[[dict[str, Any]], dict[str, Any]],
) -> Iterator[tuple[Listing, Step]]:
    """Crawl one stream from `position`, yielding each page with its step. The caller writes the step's rows and
    position in one transaction before asking for the next page; the crawl ends after a step marked complete.

    The next request is already on its way while the caller writes (its position is known once a page is parsed),
    so database time overlaps Cliniko's latency instead of adding to it.
    """
    return run(pager_for(stream, position), fetch=fetch, parse=parse, ask_again=stream.incremental)


def run(
    pager: Pager,
    *,
    fetch: Callable[[Request], Listing],
    parse: Callable[[dict[str, Any]], dict[str, Any]],
    ask_again: bool = True,
) -> Iterator[tuple[Listing, Step]]:
    """Run a pager to its end (see pages()); a page that breaks an assumption is asked for again when `ask_again`
    (a reference list reads itself again instead)."""
    pending = _Prefetch(partial(fetch, pager.request()))
    doubts = 0  # pages in a row that broke an assumption: a glitch is asked again, a server that means it is not
    last_wrong: tuple[str, ...] | None = None
    while True:
        try:
            page = pending.result()
            step = pager.advance(page, [parse(raw) for raw in page.records])
        except ClinikoRefusedError as error:
            if not pager.refused(error):
                raise
            pending = _Prefetch(partial(fetch, pager.request()))
            continue
        except AssumptionViolatedError as error:
            doubts += 1
            answer = tuple(str(raw.get("id")) for raw in page.records)
            # The same wrong page twice is a server that means it; a different one each time is a glitch.
            if doubts > ASK_AGAIN or not ask_again or answer == last_wrong:
                raise
            last_wrong = answer
            log.warning("%s; asking again", error.what_happened_on)
            pending = _Prefetch(partial(fetch, pager.request()))
            continue
        doubts, last_wrong = 0, None
        if not step.complete:
            pager = pager.following(step)
            pending = _Prefetch(partial(fetch, pager.request()))
        yield page, step
        if step.complete:
            return

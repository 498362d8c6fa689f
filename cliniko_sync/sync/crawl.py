"""Where a stream's crawl stands, and how one page moves it on: keyset paging over (updated_at, id).

Every request asks for page 1 of `updated_at >= position`, so records that change while we crawl (and move to the
end of the listing) can never shift an unread record onto a page we already read. When more records share one
updated_at than a page holds, the crawl pages through that second by id (`id > last id`) instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from cliniko_sync.cliniko.client import Filter
from cliniko_sync.errors import ClinikoValidationError
from cliniko_sync.sync.streams import Stream

log = logging.getLogger(__name__)
ONE_SECOND = timedelta(seconds=1)
# Ids already read at the position's updated_at are re-fetched by the next request; past this many, page by id.
TIE_THRESHOLD = 50
# A server that ignores the sort is read by offset pages; a listing that comes up short is read again this often.
UNORDERED_RELISTS = 3


def whole_second(value: datetime) -> datetime:
    return value.replace(microsecond=0)


def _id_key(record_id: str) -> tuple[int, str]:
    """Cliniko ids are decimal strings of 64-bit integers: order them as numbers."""
    return (int(record_id), record_id) if record_id.isdigit() else (-1, record_id)


def _record_key(row: dict[str, Any]) -> tuple[datetime, tuple[int, str]]:
    return (row["updated_at"], _id_key(row["id"]))


@dataclass(frozen=True)
class Position:
    """How far a pass has read. updated_at None means the beginning of the listing."""

    updated_at: datetime | None = None
    ids: frozenset[str] = field(default_factory=frozenset)
    tie_after_id: str | None = None

    def already_read(self, row: dict[str, Any]) -> bool:
        if self.updated_at is None:
            return False
        if self.tie_after_id is not None and whole_second(row["updated_at"]) == whole_second(self.updated_at):
            return _id_key(row["id"]) <= _id_key(self.tie_after_id) or row["id"] in self.ids
        return row["updated_at"] < self.updated_at or (row["updated_at"] == self.updated_at and row["id"] in self.ids)


@dataclass(frozen=True)
class Step:
    new_rows: list[dict[str, Any]]
    position: Position
    complete: bool
    progressed: bool


def request_for(stream: Stream, position: Position) -> tuple[list[Filter], str | None]:
    """The q[] filters and sort of the next request."""
    filters = list(stream.include_filters)
    if not stream.incremental:
        return filters, None
    if position.tie_after_id is not None and position.updated_at is not None:
        second = whole_second(position.updated_at)
        filters += [
            Filter("updated_at", ">=", second),
            Filter("updated_at", "<", second + ONE_SECOND),
            Filter("id", ">", position.tie_after_id),
        ]
        return filters, "id"
    if position.updated_at is not None:
        filters.append(Filter("updated_at", ">=", whole_second(position.updated_at)))
    return filters, "updated_at,id"


def advance(position: Position, rows: list[dict[str, Any]], *, has_next: bool) -> Step:
    """Fold one page into the position: which rows are new, where the next request starts, whether we are done."""
    new_rows = [row for row in rows if not position.already_read(row)]
    if position.tie_after_id is not None and position.updated_at is not None:
        return _advance_in_tie(position, rows, new_rows, has_next=has_next)
    if not rows:
        return Step(new_rows, position, complete=not has_next, progressed=False)
    top = max(rows, key=_record_key)
    top_time = top["updated_at"]
    ids_at_top = {row["id"] for row in rows if row["updated_at"] == top_time}
    if position.updated_at == top_time:
        ids_at_top |= position.ids
    moved = Position(top_time, frozenset(ids_at_top))
    if has_next and len(ids_at_top) >= TIE_THRESHOLD:
        moved = Position(top_time, moved.ids, tie_after_id=max(ids_at_top, key=_id_key))
    return Step(new_rows, moved, complete=not has_next, progressed=bool(new_rows) or moved != position)


def _in_requested_order(position: Position, rows: list[dict[str, Any]]) -> bool:
    """Whether a page came back in the order the request asked for: by id inside a crowded second, else by
    (updated_at, id)."""
    if position.tie_after_id is not None:
        keys: list[Any] = [_id_key(row["id"]) for row in rows]
    else:
        keys = [_record_key(row) for row in rows]
    return all(a <= b for a, b in zip(keys, keys[1:], strict=False))


def _advance_in_tie(position: Position, rows: list[dict[str, Any]], new_rows: list[dict[str, Any]], *,
                    has_next: bool) -> Step:  # fmt: skip
    assert position.updated_at is not None and position.tie_after_id is not None
    if not has_next:
        # The crowded second is exhausted: carry on after it.
        after = Position(whole_second(position.updated_at) + ONE_SECOND)
        return Step(new_rows, after, complete=False, progressed=True)
    last_id = max((row["id"] for row in rows), key=_id_key, default=position.tie_after_id)
    moved = Position(position.updated_at, position.ids, tie_after_id=max(last_id, position.tie_after_id, key=_id_key))
    return Step(new_rows, moved, complete=False, progressed=moved != position)


class Listing(Protocol):
    """What the crawl needs from a Cliniko client page."""

    records: list[dict[str, Any]]
    next_url: str | None
    total_entries: int | None


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
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._page is not None
        return self._page


def pages(
    stream: Stream,
    position: Position,
    *,
    fetch: Callable[[list[Filter], str | None], Listing],
    follow: Callable[[str], Listing],
    parse: Callable[[dict[str, Any]], dict[str, Any]],
) -> Iterator[tuple[Listing, Step]]:
    """Crawl one stream from `position`, yielding each page with its step. The caller writes the step's rows and
    position in one transaction before asking for the next page; the crawl ends after a step marked complete.

    The next request is already on its way while the caller writes (its position is known once a page is parsed),
    so database time overlaps Cliniko's latency instead of adding to it.
    """

    def request(at: Position, follow_url: str | None) -> _Prefetch:
        if follow_url:
            return _Prefetch(lambda: follow(follow_url))
        filters, sort = request_for(stream, at)
        return _Prefetch(lambda: fetch(filters, sort))

    pending = request(position, None)
    unordered: Position | None = None  # where the pass stood when the server turned out not to sort
    newest: dict[str, Any] | None = None  # the newest record read since then
    listed: set[str] = set()  # ids read by the current plain listing (only on that fallback path)
    relists = UNORDERED_RELISTS
    while True:
        try:
            page = pending.result()
        except ClinikoValidationError:
            if stream.incremental or not stream.include_filters:
                raise
            log.warning("Cliniko refused the filters of %s; reading it without them", stream.name)
            stream = replace(stream, include_filters=())
            pending = request(position, None)
            continue
        rows = [parse(raw) for raw in page.records]
        has_next = page.next_url is not None
        if stream.incremental and unordered is None and not _in_requested_order(position, rows):
            # Keyset paging needs the sort we asked for. Without it, read everything from where the pass stands with
            # one plain `updated_at >=` listing and its next links, keep the committed position there (a crash
            # restarts from it) and move it once, when that listing is complete.
            log.warning("Cliniko did not sort %s as asked; reading it page by page instead", stream.name)
            unordered = Position(position.updated_at)
            pending = request(unordered, None)
            yield page, Step(rows, unordered, complete=False, progressed=False)
            position = unordered
            continue
        if unordered is not None:
            newest = max([*rows, *([newest] if newest else [])], key=_record_key, default=None)
            listed.update(row["id"] for row in rows)
            if not has_next and page.total_entries is not None and len(listed) < page.total_entries and relists:
                # Fewer distinct records than the listing holds: records that changed meanwhile shifted the
                # offset pages past some. Read the listing again (a few times at most).
                relists -= 1
                listed.clear()
                pending = request(unordered, None)
                yield page, Step(rows, unordered, complete=False, progressed=False)
                continue
            done = Position(newest["updated_at"], frozenset({newest["id"]})) if newest else unordered
            step = Step(rows, unordered if has_next else done, complete=not has_next, progressed=False)
        elif stream.incremental:
            step = advance(position, rows, has_next=has_next)
        else:
            step = Step(rows, position, complete=not has_next, progressed=False)
        if not step.complete:
            # Reference streams follow next links; a server that ignores our filters or sort makes no keyset
            # progress, so the crawl falls back to its own next link until it does.
            pending = request(step.position, page.next_url if not step.progressed else None)
        yield page, step
        if step.complete:
            return
        position = step.position

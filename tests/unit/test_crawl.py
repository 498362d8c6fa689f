"""The keyset crawl against a simulated Cliniko listing that changes while it is read.

The listing below follows the documented semantics (q[] updated_at/id filters, sort, page 1 of 100, links.next);
records are touched between requests, which moves them to the end of an updated_at crawl.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from cliniko_sync.cliniko.client import Filter
from cliniko_sync.sync import crawl
from cliniko_sync.sync.streams import STREAMS_BY_NAME

PATIENTS = STREAMS_BY_NAME["patients"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class FakePage:
    records: list[dict[str, Any]]
    next_url: str | None
    total_entries: int | None


class Listing:
    """An in-memory /patients listing: {id: updated_at}, honouring >=, <, > filters and the sort."""

    def __init__(self, updated: dict[str, datetime], *, honour_sort: bool = True, honour_id_sort: bool = True) -> None:
        self.updated = dict(updated)
        self.honour_id_sort = honour_id_sort
        self.shuffle: random.Random | None = None
        self.clock = max(updated.values(), default=T0)
        self.requests = 0
        self.honour_sort = honour_sort
        self.on_request: Any = None

    def touch(self, record_id: str) -> None:
        self.clock += timedelta(seconds=1)
        self.updated[record_id] = self.clock

    def _matching(self, filters: list[Filter], sort: str | None) -> list[dict[str, Any]]:
        rows = [{"id": i, "updated_at": u} for i, u in self.updated.items()]
        for f in filters:
            if f.field == "updated_at" and f.op == ">=":
                rows = [r for r in rows if r["updated_at"] >= f.value]
            elif f.field == "updated_at" and f.op == "<":
                rows = [r for r in rows if r["updated_at"] < f.value]
            elif f.field == "id" and f.op == ">":
                rows = [r for r in rows if int(r["id"]) > int(str(f.value))]
        if not self.honour_sort:
            rows.sort(key=lambda r: (r["updated_at"], int(r["id"])), reverse=True)  # e.g. newest first, always
        elif sort == "id":
            rows.sort(key=lambda r: int(r["id"]), reverse=not self.honour_id_sort)
        else:
            rows.sort(key=lambda r: (r["updated_at"], int(r["id"])))
        return rows

    def fetch(self, filters: list[Filter], sort: str | None, page: int = 1) -> FakePage:
        self.requests += 1
        if self.on_request:
            self.on_request(self)
        rows = self._matching(filters, sort)
        chunk = rows[(page - 1) * 100 : page * 100]
        if self.shuffle is not None and self.shuffle.random() < 0.3:
            self.shuffle.shuffle(chunk)  # this page comes back out of order
        more = len(rows) > page * 100
        return FakePage(chunk, f"page={page + 1}" if more else None, len(rows))


def run_crawl(listing: Listing, position: crawl.Position | None = None) -> tuple[dict[str, datetime], int]:
    """Crawl to the end; return the newest updated_at seen per id and the number of steps."""
    seen: dict[str, datetime] = {}
    last_query: list[Any] = []

    def fetch(filters: list[Filter], sort: str | None) -> FakePage:
        last_query[:] = [filters, sort, 1]
        return listing.fetch(filters, sort)

    def follow(url: str) -> FakePage:
        last_query[2] += 1
        return listing.fetch(last_query[0], last_query[1], page=last_query[2])

    steps = 0
    for _page, step in crawl.pages(
        PATIENTS, position or crawl.Position(), fetch=fetch, follow=follow, parse=lambda raw: raw
    ):
        steps += 1
        for row in step.new_rows:
            if row["id"] not in seen or row["updated_at"] > seen[row["id"]]:
                seen[row["id"]] = row["updated_at"]
        assert steps < 10_000, "the crawl does not terminate"
    return seen, steps


def make_ids(n: int, rng: random.Random) -> list[str]:
    return [str(rng.randrange(10**18, 9 * 10**18)) for _ in range(n)]


def test_full_crawl_reads_every_record_once_in_minimum_requests() -> None:
    rng = random.Random(1)
    listing = Listing({i: T0 + timedelta(minutes=k) for k, i in enumerate(make_ids(1000, rng))})
    seen, steps = run_crawl(listing)
    assert seen == listing.updated
    assert listing.requests <= 11  # ceil(1000/100) + the empty-tail request at most


def test_tie_group_larger_than_a_page_is_read_completely() -> None:
    rng = random.Random(2)
    ids = make_ids(760, rng)
    updated = {i: T0 for i in ids[:350]}  # a bulk import: 350 records share one second
    updated |= {i: T0 + timedelta(seconds=k + 1) for k, i in enumerate(ids[350:])}
    listing = Listing(updated)
    seen, _ = run_crawl(listing)
    assert seen == updated
    assert listing.requests <= 12


def test_records_updated_during_the_crawl_are_not_missed() -> None:
    rng = random.Random(3)
    ids = make_ids(900, rng)
    listing = Listing({i: T0 + timedelta(seconds=k // 3) for k, i in enumerate(ids)})
    original = dict(listing.updated)

    def touch_something(server: Listing) -> None:
        for _ in range(3):
            server.touch(rng.choice(ids))

    listing.on_request = touch_something
    seen, _ = run_crawl(listing)
    assert set(seen) == set(original)
    assert all(seen[i] >= original[i] for i in original)


def test_server_ignoring_the_sort_still_reads_everything_via_next_links() -> None:
    rng = random.Random(4)
    listing = Listing({i: T0 + timedelta(seconds=k) for k, i in enumerate(make_ids(350, rng))}, honour_sort=False)
    positions: list[crawl.Position] = []
    seen: dict[str, datetime] = {}
    for _page, step in crawl.pages(
        PATIENTS,
        crawl.Position(),
        fetch=lambda filters, sort: listing.fetch(filters, sort),
        follow=lambda url: listing.fetch([], None, page=int(url.split("=")[1])),
        parse=lambda raw: raw,
    ):
        positions.append(step.position)
        seen.update((row["id"], row["updated_at"]) for row in step.new_rows)
    assert seen == listing.updated
    # Until the listing is complete the committed position does not move (a crash restarts the pass), then it
    # jumps to the newest record read.
    assert all(p == crawl.Position() for p in positions[:-1])
    assert positions[-1].updated_at == max(listing.updated.values())


def test_incremental_crawl_starts_at_the_position() -> None:
    rng = random.Random(5)
    listing = Listing({i: T0 + timedelta(minutes=k) for k, i in enumerate(make_ids(300, rng))})
    start = T0 + timedelta(minutes=250)
    seen, _ = run_crawl(listing, crawl.Position(start))
    assert set(seen) == {i for i, u in listing.updated.items() if u >= start}
    assert listing.requests == 1


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=1, max_value=260), min_size=1, max_size=8),
    touches=st.integers(min_value=0, max_value=6),
    seed=st.integers(min_value=0, max_value=10_000),
    shuffled=st.booleans(),
)
def test_property_nothing_missed_under_ties_and_concurrent_updates(sizes: list[int], touches: int, seed: int,
                                                                  shuffled: bool) -> None:  # fmt: skip
    """Any mix of tie groups, with records touched between requests (and pages sometimes out of order): every
    record is read, none older than it was."""
    rng = random.Random(seed)
    updated: dict[str, datetime] = {}
    for group, size in enumerate(sizes):
        for record_id in make_ids(size, rng):
            updated[record_id] = T0 + timedelta(seconds=group)
    listing = Listing(updated)
    listing.shuffle = random.Random(seed) if shuffled else None
    ids = list(updated)
    listing.on_request = lambda server: [server.touch(rng.choice(ids)) for _ in range(touches)]
    seen, _ = run_crawl(listing)
    assert set(seen) == set(updated)
    assert all(seen[i] >= updated[i] for i in updated)


def test_reference_list_is_read_without_filters_cliniko_refuses() -> None:
    from cliniko_sync.errors import ClinikoValidationError

    asked: list[list[Filter]] = []

    def fetch(filters: list[Filter], sort: str | None) -> FakePage:
        asked.append(filters)
        if filters:
            raise ClinikoValidationError("Cliniko refused GET /appointment_types (HTTP 422): archived_at")
        return FakePage([{"id": "1", "updated_at": T0}], None, 1)

    steps = list(
        crawl.pages(
            STREAMS_BY_NAME["appointment_types"], crawl.Position(), fetch=fetch, follow=fetch, parse=lambda r: r
        )  # type: ignore[arg-type]
    )
    assert [f.render() for f in asked[0]] == ["archived_at:*"]
    assert asked[1] == []
    assert len(steps) == 1 and steps[0][1].complete


def test_incremental_streams_never_drop_their_filters() -> None:
    import pytest

    from cliniko_sync.errors import ClinikoValidationError

    def fetch(filters: list[Filter], sort: str | None) -> FakePage:
        raise ClinikoValidationError("Cliniko refused GET /patients (HTTP 422): archived_at")

    with pytest.raises(ClinikoValidationError):
        list(crawl.pages(PATIENTS, crawl.Position(), fetch=fetch, follow=fetch, parse=lambda r: r))  # type: ignore[arg-type]


def test_server_ignoring_the_id_sort_inside_a_crowded_second_still_reads_everything() -> None:
    rng = random.Random(6)
    ids = make_ids(650, rng)
    updated = {i: T0 for i in ids[:350]} | {i: T0 + timedelta(seconds=k + 1) for k, i in enumerate(ids[350:])}
    listing = Listing(updated, honour_id_sort=False)
    seen, _ = run_crawl(listing)
    assert seen == updated

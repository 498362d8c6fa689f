"""The pagers against an in-memory listing that behaves as Cliniko documents (cliniko-api.md §4, §9).

The listing stores updated_at to the microsecond and shows whole seconds; filters and sorts use the stored value;
next links carry only `page`. Records are touched between requests, which moves them to the end of an updated_at
crawl. Every request the crawl builds is checked against the documented endpoint table.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cliniko_sync.cliniko.client import MAX_PER_PAGE, ClinikoClient, Filter
from cliniko_sync.cliniko.endpoints import endpoint
from cliniko_sync.errors import AssumptionViolatedError, ClinikoRefusedError
from cliniko_sync.sync import crawl
from cliniko_sync.sync.streams import STREAMS, STREAMS_BY_NAME

PATIENTS = STREAMS_BY_NAME["patients"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class FakePage:
    records: list[dict[str, Any]]
    total_entries: int | None
    next_url: str | None
    number: int = 1
    per_page: int = MAX_PER_PAGE

    def has_more(self) -> bool:
        return self.next_url is not None


class StrictListing:
    """One endpoint's records: id → stored updated_at (microseconds); shown in whole seconds."""

    def __init__(self, stored: dict[str, datetime], *, ignore_sort: bool = False, ignore_updated_at: bool = False):
        self.stored = dict(stored)
        self.clock = max(stored.values(), default=T0)
        self.rng = random.Random(7)
        self.requests: list[crawl.Request] = []
        self.ignore_sort = ignore_sort
        self.ignore_updated_at = ignore_updated_at
        self.on_request: Any = None

    def touch(self, record_id: str) -> None:
        """An edit: a new stored stamp, often inside the same shown second as the last one."""
        self.clock += timedelta(microseconds=self.rng.choice([1, 250_000, 999_999, 3_000_000]))
        self.stored[record_id] = self.clock

    def fetch(self, request: crawl.Request) -> FakePage:
        listing = endpoint(request.path)  # a request the real API would answer with 400 fails here
        for item in request.filters:
            listing.check_filter(item.field, item.op)
        if request.sort:
            listing.check_sort(request.sort)
        self.requests.append(request)
        if self.on_request:
            self.on_request(self)
        rows = list(self.stored.items())
        for item in request.filters:
            value = item.value
            if item.field == "updated_at" and not self.ignore_updated_at:
                assert isinstance(value, datetime) and value.microsecond == 0, "filter values are whole seconds"
                if item.op == ">=":
                    rows = [r for r in rows if r[1] >= value]
                elif item.op == ">":
                    rows = [r for r in rows if r[1] > value]
                elif item.op == "<":
                    rows = [r for r in rows if r[1] < value]
            elif item.field == "id" and item.op == ">":
                rows = [r for r in rows if int(r[0]) > int(str(value))]
            elif item.field == "id" and item.op == "!=":
                rows = [r for r in rows if r[0] != value]
        if request.sort == "id" and not self.ignore_sort:
            rows.sort(key=lambda r: int(r[0]))
        elif request.sort == "updated_at,id" and not self.ignore_sort:
            rows.sort(key=lambda r: (r[1], int(r[0])))
        else:
            rows.sort(key=lambda r: int(r[0]) % 97)  # some order of the server's own
        start = (request.page - 1) * MAX_PER_PAGE
        chunk = rows[start : start + MAX_PER_PAGE]
        more = len(rows) > start + MAX_PER_PAGE
        shown = [{"id": i, "updated_at": u.replace(microsecond=0)} for i, u in chunk]
        return FakePage(shown, len(rows), f"https://x/v1/patients?page={request.page + 1}" if more else None)


def run_crawl(
    listing: StrictListing, position: crawl.Position | None = None, *, stop_after: int | None = None
) -> tuple[dict[str, list[datetime]], crawl.Position, bool]:
    """Crawl (to the end, or `stop_after` pages, as a killed run would); every new row per id, the committed
    position, and whether the pass completed."""
    seen: dict[str, list[datetime]] = {}
    position = position or crawl.Position()
    for steps, (_page, step) in enumerate(crawl.pages(PATIENTS, position, fetch=listing.fetch, parse=lambda r: r), 1):
        for row in step.new_rows:
            seen.setdefault(row["id"], []).append(row["updated_at"])
        position = step.position
        if step.complete:
            return seen, position, True
        assert steps < 5_000, "the crawl does not terminate"
        if stop_after is not None and steps >= stop_after:
            return seen, position, False
    raise AssertionError("the crawl ended without a complete step")


def ids(n: int, rng: random.Random) -> list[str]:
    return [str(rng.randrange(10**18, 9 * 10**18)) for _ in range(n)]


def hidden(second: datetime, rng: random.Random) -> datetime:
    return second + timedelta(microseconds=rng.randrange(1_000_000))


def test_full_crawl_reads_every_record_once_in_the_minimum_of_requests() -> None:
    rng = random.Random(1)
    listing = StrictListing({i: hidden(T0 + timedelta(minutes=k), rng) for k, i in enumerate(ids(1000, rng))})
    seen, _, complete = run_crawl(listing)
    assert complete
    assert set(seen) == set(listing.stored) and all(len(v) == 1 for v in seen.values())
    assert len(listing.requests) <= 11


def test_records_sharing_a_shown_second_in_hidden_order_are_neither_lost_nor_read_twice() -> None:
    rng = random.Random(2)
    record_ids = ids(900, rng)
    # Seconds shared by 2–7 records whose hidden fractions order them against their ids.
    stored = {i: hidden(T0 + timedelta(seconds=k // rng.randint(2, 7)), rng) for k, i in enumerate(record_ids)}
    listing = StrictListing(stored)
    seen, _, _ = run_crawl(listing)
    assert set(seen) == set(stored) and all(len(v) == 1 for v in seen.values())
    assert len(listing.requests) <= 1.02 * 9 + 3
    assert all(r.sort == "updated_at,id" for r in listing.requests), "no fallback, no crowded second needed"


def test_a_crowded_second_larger_than_a_page_is_read_by_id_completely() -> None:
    rng = random.Random(3)
    record_ids = ids(760, rng)
    stored = {i: hidden(T0, rng) for i in record_ids[:350]}  # a bulk import: 350 records shown at one second
    stored |= {i: hidden(T0 + timedelta(seconds=k + 1), rng) for k, i in enumerate(record_ids[350:])}
    listing = StrictListing(stored)
    seen, position, _ = run_crawl(listing)
    assert set(seen) == set(stored) and all(len(v) == 1 for v in seen.values())
    crowded = [r for r in listing.requests if r.sort == "id"]
    assert crowded and all({f.field for f in r.filters} >= {"updated_at"} for r in crowded)
    assert len(listing.requests) <= 1.02 * 8 + 3
    assert position.updated_at == max(stored.values()).replace(microsecond=0)


def test_a_second_crowded_across_page_boundaries_mid_listing() -> None:
    rng = random.Random(4)
    record_ids = ids(500, rng)
    stored = {i: hidden(T0 + timedelta(seconds=k), rng) for k, i in enumerate(record_ids[:70])}
    stored |= {i: hidden(T0 + timedelta(hours=1), rng) for i in record_ids[70:300]}
    stored |= {i: hidden(T0 + timedelta(hours=2, seconds=k), rng) for k, i in enumerate(record_ids[300:])}
    seen, _, _ = run_crawl(StrictListing(stored))
    assert set(seen) == set(stored) and all(len(v) == 1 for v in seen.values())


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    count=st.integers(1, 450),
    seconds=st.integers(1, 40),
    touch_every=st.integers(0, 4),
    kill_after=st.one_of(st.none(), st.integers(1, 8)),
)
def test_property_crawl_from_any_checkpoint_misses_nothing(
    seed: int, count: int, seconds: int, touch_every: int, kill_after: int | None
) -> None:
    """Hidden fractions, few shown seconds (so many records share one across pages), edits during the crawl, and a
    run killed after any committed page: resuming from the committed position reads every record at (at least) the
    version it had when the crawl began, and without edits reads each exactly once."""
    rng = random.Random(seed)
    stored = {i: hidden(T0 + timedelta(seconds=rng.randrange(seconds)), rng) for i in ids(count, rng)}
    listing = StrictListing(stored)
    before = dict(listing.stored)
    if touch_every:
        calls = [0]

        def edit(server: StrictListing) -> None:
            calls[0] += 1
            if calls[0] % touch_every == 0:
                server.touch(rng.choice(sorted(server.stored)))

        listing.on_request = edit
    seen, position, complete = run_crawl(listing, stop_after=kill_after)
    if not complete:
        more, position, complete = run_crawl(listing, position)
        for record_id, versions in more.items():
            seen.setdefault(record_id, []).extend(versions)
    assert complete
    for record_id, stamp in before.items():
        assert record_id in seen, "a record was lost"
        assert max(seen[record_id]) >= stamp.replace(microsecond=0)
    if not touch_every:
        assert all(len(v) == 1 for v in seen.values()), "a record was read twice into the mirror"


def test_incremental_from_the_cursor_sees_changes_shown_in_the_cursor_second() -> None:
    rng = random.Random(5)
    stored = {i: hidden(T0 + timedelta(seconds=k), rng) for k, i in enumerate(ids(250, rng))}
    listing = StrictListing(stored)
    _, position, _ = run_crawl(listing)
    cursor = position.updated_at
    assert cursor is not None
    changed = sorted(stored)[:3]
    listing.clock = cursor  # edits land inside the cursor's own shown second
    for record_id in changed:
        listing.touch(record_id)
    seen, _, _ = run_crawl(listing, crawl.Position(cursor))
    assert set(changed) <= set(seen)


def test_a_server_that_ignores_the_sort_fails_naming_the_assumption() -> None:
    rng = random.Random(6)
    listing = StrictListing({i: hidden(T0 + timedelta(minutes=k), rng) for k, i in enumerate(ids(300, rng))})
    listing.ignore_sort = True
    with pytest.raises(AssumptionViolatedError, match=r"sort=updated_at,id.*check-credentials --deep"):
        run_crawl(listing)


def test_one_page_out_of_order_is_asked_for_again(caplog: pytest.LogCaptureFixture) -> None:
    rng = random.Random(8)
    listing = StrictListing({i: hidden(T0 + timedelta(minutes=k), rng) for k, i in enumerate(ids(300, rng))})
    clean = StrictListing(listing.stored)
    run_crawl(clean)
    calls = [0]

    def glitch_once(server: StrictListing) -> None:
        calls[0] += 1
        server.ignore_sort = calls[0] == 2  # only the second request comes back unsorted

    listing.ignore_sort = False
    listing.on_request = glitch_once
    seen, _, complete = run_crawl(listing)
    assert complete and set(seen) == set(listing.stored) and all(len(v) == 1 for v in seen.values())
    assert len(listing.requests) == len(clean.requests) + 1
    said = "broke the assumption sorted (sort=updated_at,id returns non-decreasing shown seconds): a page went back"
    assert f"{said} in time; asking again" in caplog.text


def test_a_server_that_ignores_the_updated_at_filter_fails_naming_the_assumption() -> None:
    rng = random.Random(7)
    listing = StrictListing({i: hidden(T0 + timedelta(minutes=k), rng) for k, i in enumerate(ids(300, rng))})
    listing.ignore_updated_at = True
    with pytest.raises(AssumptionViolatedError, match="updated_at:>=T"):
        run_crawl(listing, crawl.Position(T0 + timedelta(minutes=150)))


def test_a_refused_wish_on_a_reference_list_is_dropped_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    stream = STREAMS_BY_NAME["appointment_types"]
    asked: list[crawl.Request] = []

    def fetch(request: crawl.Request) -> FakePage:
        asked.append(request)
        if request.filters:
            raise ClinikoRefusedError(request.path, 400, "This column is not searchable.")
        return FakePage([{"id": "1", "updated_at": T0}], 1, None)

    steps = [step for _, step in crawl.pages(stream, crawl.Position(), fetch=fetch, parse=lambda r: r)]
    assert [row["id"] for step in steps for row in step.new_rows] == ["1"] and steps[-1].complete
    assert [bool(r.filters) for r in asked] == [True, False]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["Cliniko refused the filters of /appointment_types (This column is not searchable.); "
                        "reading it without them"]  # fmt: skip


def test_an_incremental_stream_has_no_fallback_for_a_refusal() -> None:
    def fetch(request: crawl.Request) -> FakePage:
        raise ClinikoRefusedError(request.path, 400, "This column is not searchable.")

    with pytest.raises(ClinikoRefusedError):
        list(crawl.pages(PATIENTS, crawl.Position(), fetch=fetch, parse=lambda r: r))


def test_practitioners_are_read_from_both_endpoints_without_archived_at() -> None:
    stream = STREAMS_BY_NAME["practitioners"]
    lists = {"practitioners": ["1", "2"], "practitioners/inactive": ["3"]}
    asked: list[crawl.Request] = []

    def fetch(request: crawl.Request) -> FakePage:
        asked.append(request)
        return FakePage([{"id": i, "updated_at": T0} for i in lists[request.path]], len(lists[request.path]), None)

    steps = [step for _, step in crawl.pages(stream, crawl.Position(), fetch=fetch, parse=lambda r: r)]
    assert [row["id"] for step in steps for row in step.new_rows] == ["1", "2", "3"]
    assert [step.complete for step in steps] == [False, True]
    assert [(r.path, r.filters) for r in asked] == [("practitioners", ()), ("practitioners/inactive", ())]


def test_a_reference_list_that_came_up_short_is_read_again() -> None:
    stream = STREAMS_BY_NAME["appointment_types"]
    answers = iter(
        [
            FakePage([{"id": str(i), "updated_at": T0} for i in range(100)], 201, "next"),
            FakePage([{"id": str(i), "updated_at": T0} for i in range(100, 200)], 201, None, number=2),  # 1 short
            FakePage([{"id": str(i), "updated_at": T0} for i in range(100)], 201, "next"),
            FakePage([{"id": str(i), "updated_at": T0} for i in range(100, 200)], 201, "next", number=2),
            FakePage([{"id": "200", "updated_at": T0}], 201, None, number=3),
        ]
    )
    steps = [
        step for _, step in crawl.pages(stream, crawl.Position(), fetch=lambda r: next(answers), parse=lambda r: r)
    ]
    assert sorted(int(row["id"]) for step in steps for row in step.new_rows) == list(range(201))
    assert steps[-1].complete


def test_id_lists_are_asked_100_at_a_time_and_paged_by_id() -> None:
    wanted = [str(10**18 + n) for n in range(250)]
    listed = {i for i in wanted if int(i) % 7}  # the others Cliniko no longer has
    asked: list[crawl.Request] = []

    def fetch(request: crawl.Request) -> FakePage:
        asked.append(request)
        chunk = next(f.value for f in request.filters if f.field == "id" and f.op == "=")
        after = next((int(str(f.value)) for f in request.filters if f.field == "id" and f.op == ">"), 0)
        assert isinstance(chunk, tuple) and len(chunk) <= 100
        rows = sorted((i for i in chunk if i in listed and int(i) > after), key=int)
        page = [{"id": i, "updated_at": T0} for i in rows[:40]]
        return FakePage(page, len(rows), "next" if len(rows) > 40 else None)

    pager = crawl.IdOrderPager("patients", PATIENTS.include_filters, ("id", tuple(wanted)))
    read = [row["id"] for _, step in crawl.run(pager, fetch=fetch, parse=lambda r: r) for row in step.new_rows]
    assert read == sorted(listed, key=int)
    assert len(asked) == 3 + 3 + 2  # three chunks (100, 100, 50 ids), each paged 40 at a time by id


# -- every request of every stream in every mode is documented --------------------------------------------------

T = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
POSITIONS = {
    "full": crawl.Position(),
    "incremental": crawl.Position(T),
    "after a page": crawl.Position(T, frozenset({"11", "12"})),
    "after a page ending in a busy second": crawl.Position(T, frozenset(str(n) for n in range(11, 40))),
    "crowded second, start": crawl.Position(T, frozenset({"11"}), crawl.SECOND_START),
    "crowded second, by id": crawl.Position(T, frozenset({"11"}), "1234567890123456789"),
}


def every_request() -> list[tuple[str, crawl.Request]]:
    requests: list[tuple[str, crawl.Request]] = []
    for stream in STREAMS:
        if stream.incremental:
            requests += [
                (f"{stream.name} {mode}", crawl.pager_for(stream, p).request()) for mode, p in POSITIONS.items()
            ]
            continue
        pager = crawl.ReferencePager(stream)
        for path_index in range(len(stream.paths)):
            pager.path_index = path_index
            requests.append((f"{stream.name} reference", pager.request()))
            pager.include = ()  # the documented fallback after a refusal
            requests.append((f"{stream.name} reference without filters", pager.request()))
            pager.include = stream.include_filters
    return requests


def window_requests() -> list[tuple[str, crawl.Request]]:
    """What the window pass sends (sync/window.py): appointments from a start time, attendees by booking, patients
    by id, each paged by id; and its clock probe, the newest appointment."""
    by = STREAMS_BY_NAME
    since = Filter("starts_at", ">=", T)
    requests = [
        (f"window {name}", crawl.IdOrderPager(name, (*by[name].include_filters, since)).request())
        for name in ("individual_appointments", "group_appointments")
    ]
    attendees = crawl.IdOrderPager("attendees", by["attendees"].include_filters, ("booking_id", ("1", "2")), "5")
    patients = crawl.IdOrderPager("patients", by["patients"].include_filters, ("id", ("3", "4")))
    probe = crawl.Request("individual_appointments", by["individual_appointments"].include_filters, "updated_at:desc")
    return [*requests, ("window attendees", attendees.request()), ("window patients", patients.request()),
            ("window clock probe", probe)]  # fmt: skip


ALL_REQUESTS = every_request() + window_requests()


@pytest.mark.parametrize(("mode", "request_"), ALL_REQUESTS, ids=[name for name, _ in ALL_REQUESTS])
def test_every_request_the_sync_builds_is_documented(mode: str, request_: crawl.Request) -> None:
    listing = endpoint(request_.path)
    for item in request_.filters:
        assert item.field in listing.fields, f"{mode}: {item.field} is not documented for /{request_.path}"
        listing.check_filter(item.field, item.op)
    if request_.sort is not None:
        listing.check_sort(request_.sort)
    # The client builds it without complaint (it refuses anything undocumented).
    ClinikoClient._listing_params(listing, request_.filters, request_.sort, MAX_PER_PAGE)


def _attendees(sizes: list[int], seed: int) -> dict[str, str]:
    """Attendee id → class id, for classes of the given sizes; ids are random 19-digit strings."""
    rng = random.Random(seed)
    classes = [str(rng.randrange(10**18, 9 * 10**18)) for _ in sizes]
    return {
        str(rng.randrange(10**18, 9 * 10**18)): group
        for group, size in zip(classes, sizes, strict=True)
        for _ in range(size)
    }


def _by_booking(attendees: dict[str, str]) -> Any:
    """`/attendees` as documented: booking_id:= lists, id:!= and id:> filters, sort booking_id,id or id."""
    requests: list[crawl.Request] = []

    def fetch(request: crawl.Request) -> FakePage:
        listing = endpoint(request.path)
        for item in request.filters:
            listing.check_filter(item.field, item.op)
        assert request.sort is not None
        listing.check_sort(request.sort)
        requests.append(request)
        found = list(attendees.items())
        for item in request.filters:
            if item.field == "booking_id":
                found = [(a, b) for a, b in found if b in item.value]
            elif item.field == "id" and item.op == "!=":
                found = [(a, b) for a, b in found if a != item.value]
            elif item.field == "id" and item.op == ">":
                found = [(a, b) for a, b in found if int(a) > int(item.value)]
        key = (lambda r: int(r[0])) if request.sort == "id" else (lambda r: (int(r[1]), int(r[0])))
        found.sort(key=key)
        page = [
            {"id": a, "updated_at": T0, "raw": {"booking": {"links": {"self": f"https://x/bookings/{b}"}}}}
            for a, b in found[:MAX_PER_PAGE]
        ]
        return FakePage(page, len(found), "next" if len(found) > MAX_PER_PAGE else None)

    return fetch, requests


def _read_by_booking(attendees: dict[str, str]) -> tuple[list[str], list[crawl.Request]]:
    fetch, requests = _by_booking(attendees)
    pager = crawl.BookingListPager(
        "attendees", (), tuple(set(attendees.values())), crawl.Position(T0, frozenset(), crawl.SECOND_START)
    )
    read = [row["id"] for _, step in crawl.run(pager, fetch=fetch, parse=lambda r: r) for row in step.new_rows]
    return read, requests


def test_attendees_by_class_ids_fill_every_page_but_the_last() -> None:
    attendees = _attendees([random.Random(n).randint(0, 9) for n in range(400)], seed=3)
    read, requests = _read_by_booking(attendees)
    assert sorted(read) == sorted(attendees)
    assert len(requests) == -(-len(attendees) // MAX_PER_PAGE)  # Σ ceil(records/100): no short page before the last
    assert all(len(r.filters[0].value) <= crawl.ID_LIST_SIZE for r in requests)


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(0, 260), max_size=30), seed=st.integers(0, 1000))
def test_attendees_by_class_ids_read_each_record_once(sizes: list[int], seed: int) -> None:
    """Classes of any size (more than a page, more than MAX_EXCLUDED_IDS read in one) come out whole, once."""
    attendees = _attendees(sizes, seed)
    read, _ = _read_by_booking(attendees)
    assert len(read) == len(set(read)) and set(read) == set(attendees)

"""`check-credentials --deep`: about 25 small read-only requests that test, on the clinic's own Cliniko, every
assumption the sync makes about the API (cliniko_sync/assumptions.py), each reported as held, violated or unknown
(or info: told, never a violation).

The requests are the sync's own, built by its pagers for every stream and mode, with per_page 5 or less, plus three
probes per stream that give them meaningful values: the newest record (sort descending), a second between the oldest
and the newest, and a count without the `field:*` filters. Nothing is written to Cliniko and nothing of a record is
shown: only counts, field names and the shape of values (digits masked).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from cliniko_sync import assumptions
from cliniko_sync.assumptions import ASSUMPTIONS, Assumption
from cliniko_sync.cliniko.client import Filter
from cliniko_sync.cliniko.records import parse_time
from cliniko_sync.credential_check import CHECK_CLIENT_OPTIONS, check_credentials, worst_exit_code
from cliniko_sync.errors import EXIT_FAILURE, EXIT_OK, ClinikoAPIError, ClinikoRefusedError, ClinikoSyncError
from cliniko_sync.sync.crawl import Position, ReferencePager, Request, pager_for, whole_second
from cliniko_sync.sync.streams import STREAMS, STREAMS_BY_NAME, Stream

if TYPE_CHECKING:
    from cliniko_sync.cliniko.client import ClinikoClient, Page
    from cliniko_sync.db import DictConnection
    from cliniko_sync.orgs import Organization
    from cliniko_sync.output import Format

HELD, VIOLATED, UNKNOWN, INFO = "held", "violated", "unknown", "info"
# Records per request: enough to see an order, few enough that the check stays light on the clinic's rate limit.
PER_PAGE = 5
# Small lists are read 2 at a time, so a second page exists (to test page numbers) on most accounts.
REFERENCE_PER_PAGE = 2
# The smallest 19-digit number: an id:> filter is always tested with a value this large (Cliniko's ids are int64).
NINETEEN_DIGITS = 10**18
WHOLE_SECOND_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
DESCENDING = "updated_at:desc,id"

# Fail fast on an unreachable Cliniko like the key check, but sit out a 429 (a sync using the same key may have
# spent the minute's budget): the check's own verdict on the rate-limit headers needs that answer anyway.
DEEP_CLIENT_OPTIONS: dict[str, Any] = {**CHECK_CLIENT_OPTIONS, "max_wait": 65.0, "max_total_retry_seconds": 150.0}

COLUMNS = ("organization_id", "name", "status", "assumption", "detail", "source", "relies")
# The table leaves out the statement and what relies on it (in json, jsonl and csv): the README lists them by name.
TABLE_COLUMNS = ("organization_id", "name", "status", "detail", "source")


@dataclass(frozen=True)
class Outcome:
    """One assumption's verdict for one organization."""

    organization_id: str
    name: str
    status: str
    assumption: str
    detail: str
    source: str
    relies: str

    def as_dict(self) -> dict[str, Any]:
        return {column: getattr(self, column) for column in COLUMNS}


@dataclass(frozen=True)
class DeepResult:
    organization_id: str
    outcomes: list[Outcome]
    exit_code: int
    error: str | None
    requests: int

    def violated(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.status == VIOLATED]


class Evidence:
    """Notes for each assumption, by status, each with the endpoints it was seen on."""

    def __init__(self) -> None:
        self._notes: dict[str, dict[str, dict[str, list[str]]]] = {
            assumption.name: {HELD: {}, VIOLATED: {}, UNKNOWN: {}} for assumption in ASSUMPTIONS
        }
        self.individual_attendees: str | None = None  # what /attendees showed of individual appointments (INFO)

    def add(self, assumption: Assumption, status: str, note: str, path: str | None = None) -> None:
        where = self._notes[assumption.name][status].setdefault(note, [])
        if path is not None and f"/{path}" not in where:
            where.append(f"/{path}")

    def has(self, assumption: Assumption, status: str) -> bool:
        return bool(self._notes[assumption.name][status])

    def verdict(self, assumption: Assumption, untested: str) -> tuple[str, str]:
        """Violated wins over held, held over unknown; the detail joins the notes of the winning status."""
        notes = self._notes[assumption.name]
        for status in (VIOLATED, HELD, UNKNOWN):
            if notes[status]:
                detail = self._join(notes[status])
                if status == HELD and notes[UNKNOWN]:  # say where it could not be told, e.g. no excluded records
                    detail += f"; untested: {self._join(notes[UNKNOWN])}"
                return status, detail
        return UNKNOWN, untested

    @staticmethod
    def _join(notes: dict[str, list[str]]) -> str:
        return "; ".join(f"{note} ({', '.join(where)})" if where else note for note, where in notes.items())


def _asked(request: Request) -> frozenset[str]:
    """What a request named: its filter fields and its sort, to point at the likely culprit of a refusal."""
    return frozenset({item.field for item in request.filters} | ({f"sort {request.sort}"} if request.sort else set()))


def _mask(value: object) -> str:
    """The shape of a value without its content: digits become 9, e.g. 9999-99-99T99:99:99.999Z."""
    return re.sub(r"\d", "9", value) if isinstance(value, str) else f"a JSON {type(value).__name__}"


def _second(raw: dict[str, Any]) -> datetime | None:
    try:
        moment = parse_time(raw.get("updated_at"))
    except ClinikoAPIError:
        return None
    return whole_second(moment) if moment is not None else None


def _id_number(raw: dict[str, Any]) -> int | None:
    value = raw.get("id")
    text = str(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else ""
    return int(text) if text.isdigit() else None


def _ascending(values: Sequence[Any]) -> bool:
    return all(earlier <= later for earlier, later in zip(values, values[1:], strict=False))


@dataclass
class Sample:
    """What the first requests on one incremental stream showed; the steps test the assumptions on it."""

    stream: Stream
    path: str
    oldest: Page
    plain: Page | None
    latest_record: dict[str, Any] | None  # the newest record (None: no records, or the probe was refused)
    seconds: list[datetime]  # the oldest records' shown seconds
    one_second: Page | None = None  # the newest second read alone by id (_one_second, read by _large_ids)
    after: int = NINETEEN_DIGITS  # the id that request asked to go past

    @property
    def latest(self) -> datetime | None:
        return _second(self.latest_record) if self.latest_record is not None else None

    @property
    def latest_id(self) -> int | None:
        return _id_number(self.latest_record) if self.latest_record is not None else None

    def testable(self, evidence: Evidence, assumption: Assumption) -> bool:
        """Whether the sample has records to test with (else that is noted); a record without a readable
        updated_at leaves the assumption untested, silently."""
        if self.latest_record is None:
            evidence.add(assumption, UNKNOWN, "no records", self.path)
            return False
        return bool(self.seconds) and self.latest is not None


class DeepCheck:
    """The requests of one deep check, on one client, and what their answers showed."""

    def __init__(self, client: ClinikoClient) -> None:
        self.client = client
        self.evidence = Evidence()
        self.accepted: dict[str, list[frozenset[str]]] = {}
        self.refused: dict[str, list[tuple[frozenset[str], str]]] = {}
        self.culprits: dict[str, frozenset[str]] = {}  # what each endpoint refused when asked for it alone
        self.next_links_keep_query: set[bool] = set()
        self.offset_tested = False
        self.individual_appointment: str | None = None  # the id of one, for _individual_attendees
        # Timestamps not shaped as whole-second UTC: masked shape -> field names, endpoints.
        self.odd_times: dict[str, tuple[set[str], list[str]]] = {}

    def run(self) -> None:
        for stream in STREAMS:
            if stream.incremental:
                self._incremental(stream)
            else:
                self._reference(stream)
        self._individual_attendees()
        self._conclude()

    def _individual_attendees(self) -> None:
        """Whether /attendees lists the attendee record of an individual appointment (information: the sync reads
        group classes' attendees by their ids either way): one request by the booking id of the oldest one."""
        if self.individual_appointment is None:
            self.evidence.individual_attendees = "not tested: no individual appointments"
            return
        attendees = STREAMS_BY_NAME["attendees"]
        booking = Filter("booking_id", "=", (self.individual_appointment,))
        page = self._fetch(Request("attendees", (*attendees.include_filters, booking)), 1)
        if page is None or page.total_entries is None:
            self.evidence.individual_attendees = "not tested: the request was refused or unusable"
        elif page.total_entries:
            self.evidence.individual_attendees = "yes: an individual appointment has an attendee record (left out)"
        else:
            self.evidence.individual_attendees = "no: an individual appointment has no attendee record"

    # -- requests ---------------------------------------------------------------------------------------------

    def _fetch(self, request: Request, per_page: int, *, probe: Assumption | None = None) -> Page | None:
        """One request; a refusal or an unusable answer is noted and gives None. `probe`: the assumption a request
        the sync itself never sends is for (its refusal leaves that assumption untested, not the sync's filters)."""
        try:
            page = self.client.list_page(
                request.path, filters=request.filters, sort=request.sort, page=request.page, per_page=per_page
            )
        except ClinikoRefusedError as error:
            said = f"HTTP {error.status}" + (f": {error.cliniko_message}" if error.cliniko_message else "")
            if probe:
                self.evidence.add(probe, UNKNOWN, f"the probe was refused ({said})", request.path)
            else:
                first = request.path not in self.refused
                self.refused.setdefault(request.path, []).append((_asked(request), said))
                if first:
                    self._pinpoint(request)
            return None
        except ClinikoAPIError as error:
            unusable = assumptions.INACTIVE_PRACTITIONERS if request.path == "practitioners/inactive" else None
            self.evidence.add(unusable or assumptions.ENVELOPE, VIOLATED, str(error))
            return None
        if not probe:
            self.accepted.setdefault(request.path, []).append(_asked(request))
        self._inspect(request, page, per_page)
        return page

    def _pinpoint(self, refused: Request) -> None:
        """Ask again with each filter, and the sort, alone (per_page 1): the ones refused alone are the culprits.
        Only after a refusal, so a healthy account never pays for it."""
        alone = [Request(refused.path, (item,)) for item in refused.filters]
        if refused.sort:
            alone.append(Request(refused.path, (), refused.sort))
        if len(alone) < 2:
            self.culprits[refused.path] = _asked(refused)
            return
        culprits: set[str] = set()
        for request in alone:
            try:
                self.client.list_page(request.path, filters=request.filters, sort=request.sort, per_page=1)
            except ClinikoRefusedError:
                culprits |= _asked(request)
        self.culprits[refused.path] = frozenset(culprits)

    def _incremental(self, stream: Stream) -> None:
        """A stream's sample (the full listing's first page, a count without the `field:*` filters, the newest
        record), then one step per assumption it can test (STREAM_STEPS)."""
        sample = self._sample(stream)
        if sample is not None:
            for step in STREAM_STEPS:
                step(self, sample)

    def _sample(self, stream: Stream) -> Sample | None:
        path = stream.paths[0]
        full = pager_for(stream, Position()).request()
        oldest = self._fetch(full, PER_PAGE)
        plain = self._fetch(Request(path, ()), 1, probe=assumptions.DEFAULT_EXCLUSIONS)
        if oldest is None:
            return None
        if stream.name == "individual_appointments" and oldest.records:
            self.individual_appointment = str(oldest.records[0].get("id"))
        newest = self._fetch(replace(full, sort=DESCENDING), 1, probe=assumptions.SORTED)
        latest_record = newest.records[0] if newest is not None and newest.records and oldest.records else None
        seconds = [second for second in map(_second, oldest.records) if second is not None]
        return Sample(stream, path, oldest, plain, latest_record, seconds)

    # -- one step per assumption, on one stream's sample (STREAM_STEPS) ---------------------------------------

    def _default_exclusions(self, sample: Sample) -> None:
        with_all, plain, path = sample.oldest, sample.plain, sample.path
        if plain is None or with_all.total_entries is None or plain.total_entries is None:
            return
        counts = f"{with_all.total_entries} with field:*, {plain.total_entries} without"
        if with_all.total_entries > plain.total_entries:
            self.evidence.add(assumptions.DEFAULT_EXCLUSIONS, HELD, counts, path)
        elif with_all.total_entries < plain.total_entries:
            self.evidence.add(assumptions.DEFAULT_EXCLUSIONS, VIOLATED, counts, path)
        else:
            self.evidence.add(
                assumptions.DEFAULT_EXCLUSIONS, UNKNOWN, f"{counts}: no excluded records to tell by", path
            )

    def _sorted(self, sample: Sample) -> None:
        if not sample.testable(self.evidence, assumptions.SORTED):
            return
        assert sample.latest is not None
        self._order(sample.path, sample.seconds, "the oldest records")
        if sample.latest < max(sample.seconds):
            self.evidence.add(
                assumptions.SORTED, VIOLATED, "the newest record by updated_at came before older ones", sample.path
            )

    def _updated_since(self, sample: Sample) -> None:
        """An incremental page from a second halfway between the oldest record and the newest."""
        if not sample.testable(self.evidence, assumptions.FILTERED):
            return
        assert sample.latest is not None
        path, first = sample.path, sample.seconds[0]
        since = whole_second(first + (sample.latest - first) / 2)
        page = self._fetch(pager_for(sample.stream, Position(since)).request(), PER_PAGE)
        if page is None:
            return
        seconds = [second for second in map(_second, page.records) if second is not None]
        if any(second < since for second in seconds):
            self.evidence.add(assumptions.FILTERED, VIOLATED, "records from before the asked second came back", path)
        elif not seconds:
            self.evidence.add(assumptions.FILTERED, VIOLATED, "no records although a newer one exists", path)
        else:
            self.evidence.add(assumptions.FILTERED, HELD, "only records from the asked second on", path)
        self._order(path, seconds, "records since a middle second")

    def _one_second(self, sample: Sample) -> None:
        """The newest shown second read alone by id, after a 19-digit id: the newest record's id minus one when that
        has 19 digits (it must come first), else 10^18 (it must not come back). _large_ids reads the same page."""
        if not sample.testable(self.evidence, assumptions.ONE_SECOND_ONLY) or sample.latest_id is None:
            return
        after = max(sample.latest_id - 1, NINETEEN_DIGITS)
        request = pager_for(sample.stream, Position(sample.latest, frozenset(), str(after))).request()
        sample.after, sample.one_second = after, self._fetch(request, PER_PAGE)
        page = sample.one_second
        if page is None:
            return
        shown = [_second(raw) for raw in page.records]
        ids = [_id_number(raw) for raw in page.records]
        path = sample.path
        if any(each != sample.latest for each in shown):
            self.evidence.add(assumptions.ONE_SECOND_ONLY, VIOLATED, "records from another second came back", path)
        elif None in ids or not _ascending(ids):
            self.evidence.add(assumptions.ONE_SECOND_ONLY, VIOLATED, "ids did not ascend", path)
        elif page.records:
            self.evidence.add(assumptions.ONE_SECOND_ONLY, HELD, "one shown second only, ids ascending", path)

    def _large_ids(self, sample: Sample) -> None:
        """What the one-second request (id:> a 19-digit id) showed of id comparison."""
        if not sample.testable(self.evidence, assumptions.LARGE_IDS):
            return
        path, latest_id, page, after = sample.path, sample.latest_id, sample.one_second, sample.after
        if latest_id is None:
            self.evidence.add(assumptions.LARGE_IDS, UNKNOWN, "ids are not decimal digits", path)
            return
        if page is None:
            return
        known = [each for each in map(_id_number, page.records) if each is not None]
        if any(each <= after for each in known):
            self.evidence.add(assumptions.LARGE_IDS, VIOLATED, "records at or below the asked id came back", path)
        elif latest_id > after and (not known or known[0] != latest_id):
            self.evidence.add(assumptions.LARGE_IDS, VIOLATED, "the record just above the asked id is missing", path)
        else:
            self.evidence.add(assumptions.LARGE_IDS, HELD, "id:> with a 19-digit id filtered as asked", path)

    def _order(self, path: str, seconds: list[datetime], which: str) -> None:
        if not _ascending(seconds):
            self.evidence.add(assumptions.SORTED, VIOLATED, f"{which} came out of updated_at order", path)
        elif len(set(seconds)) > 1:
            self.evidence.add(assumptions.SORTED, HELD, "pages in updated_at order", path)

    def _reference(self, stream: Stream) -> None:
        pager = ReferencePager(stream)
        for index, path in enumerate(stream.paths):
            pager.path_index = index
            request = pager.request()
            first = self._fetch(request, REFERENCE_PER_PAGE)
            if first is None:
                continue
            if path == "practitioners/inactive":
                self._inactive_practitioners(path, first)
            if first.has_more() and not self.offset_tested:
                self.offset_tested = True
                second = self._fetch(replace(request, page=2), REFERENCE_PER_PAGE)
                if second is not None:
                    self._offset_pages(path, first, second)

    def _inactive_practitioners(self, path: str, first: Page) -> None:
        active = sum(1 for raw in first.records if raw.get("active") is True)
        if active:
            self.evidence.add(
                assumptions.INACTIVE_PRACTITIONERS, VIOLATED, f"{active} listed practitioners are active", path
            )
        else:
            self.evidence.add(assumptions.INACTIVE_PRACTITIONERS, HELD, f"answered, {first.total_entries} listed", path)

    def _offset_pages(self, path: str, first: Page, second: Page) -> None:
        ids_first = {str(raw.get("id")) for raw in first.records}
        ids_second = {str(raw.get("id")) for raw in second.records}
        if ids_first & ids_second:
            self.evidence.add(assumptions.OFFSET_PAGES, VIOLATED, "pages 1 and 2 share records", path)
        elif not ids_second:
            self.evidence.add(assumptions.OFFSET_PAGES, VIOLATED, "page 2 is empty although more were announced", path)
        else:
            self.evidence.add(assumptions.OFFSET_PAGES, HELD, "pages 1 and 2 hold different records", path)

    # -- what every answer shows ------------------------------------------------------------------------------

    def _inspect(self, request: Request, page: Page, per_page: int) -> None:
        path, evidence = request.path, self.evidence
        read = (page.number - 1) * per_page + len(page.records)
        if page.total_entries is None:
            evidence.add(assumptions.ENVELOPE, VIOLATED, "no integer total_entries", path)
        elif page.total_entries < read:
            evidence.add(assumptions.ENVELOPE, VIOLATED, "total_entries is below the records listed", path)
        else:
            evidence.add(assumptions.ENVELOPE, HELD, "envelope key and total_entries")
        if page.next_url is not None and (request.filters or request.sort):
            query = parse_qs(urlsplit(page.next_url).query)
            kept = len(query.get("q[]", [])) == len(request.filters) and ("sort" in query) == bool(request.sort)
            self.next_links_keep_query.add(kept)
        if page.total_entries is not None and (page.next_url is not None) != (page.total_entries > read):
            said = "links.next missing although total_entries" if page.next_url is None else "links.next present but"
            evidence.add(assumptions.MORE_PAGES, VIOLATED, f"{said} says {page.total_entries} in all", path)
        elif page.total_entries is not None:
            evidence.add(assumptions.MORE_PAGES, HELD, "links.next agrees with total_entries")
        self._records(path, page.records)

    def _records(self, path: str, records: Iterable[dict[str, Any]]) -> None:
        evidence = self.evidence
        for raw in records:
            record_id = raw.get("id")
            if isinstance(record_id, str) and record_id.isdigit():
                evidence.add(assumptions.STRING_IDS, HELD, "string ids")
            else:
                evidence.add(assumptions.STRING_IDS, VIOLATED, f"ids are {_mask(record_id)}", path)
            for field, value in raw.items():
                if field.endswith("_at") and value not in (None, ""):
                    if isinstance(value, str) and WHOLE_SECOND_UTC.fullmatch(value):
                        evidence.add(assumptions.WHOLE_SECOND_TIMES, HELD, "whole-second UTC timestamps")
                    else:
                        names, paths = self.odd_times.setdefault(_mask(value), (set(), []))
                        names.add(field)
                        if path not in paths:
                            paths.append(path)

    # -- verdicts that need every answer ----------------------------------------------------------------------

    def _conclude(self) -> None:
        for step in CONCLUSIONS:
            step(self)

    def _documented_filters(self) -> None:
        evidence = self.evidence
        for path, refusals in self.refused.items():
            asked = len(refusals) + len(self.accepted.get(path, []))
            culprits = self.culprits.get(path, frozenset())
            blamed = f"; refused alone: {', '.join(sorted(culprits))}" if culprits else ""
            messages = ", ".join(sorted({said for _, said in refusals}))
            note = f"{len(refusals)} of {asked} refused ({messages}){blamed}"
            evidence.add(assumptions.DOCUMENTED_FILTERS, VIOLATED, note, path)
        accepted = sum(len(each) for each in self.accepted.values())
        if accepted and not self.refused:
            evidence.add(
                assumptions.DOCUMENTED_FILTERS,
                HELD,
                f"{accepted} requests as the sync builds them, on {len(self.accepted)} endpoints, all accepted",
            )

    def _whole_second_times(self) -> None:
        for shape, (names, paths) in self.odd_times.items():
            for path in paths:
                self.evidence.add(
                    assumptions.WHOLE_SECOND_TIMES, VIOLATED, f"{', '.join(sorted(names))} shaped {shape}", path
                )

    def _more_pages(self) -> None:
        if self.evidence.has(assumptions.MORE_PAGES, HELD) and self.next_links_keep_query:
            kept = "keeps q[] and sort" if self.next_links_keep_query == {True} else "drops q[] or sort"
            self.evidence.add(assumptions.MORE_PAGES, HELD, f"links.next {kept} (informational: never followed)")

    def _rate_limit_reset(self) -> None:
        stats = self.client.stats
        if stats.rate_limited:
            headers = ", ".join(stats.rate_limit_headers) or "no rate-limit header"
            status = HELD if "X-RateLimit-Reset" in stats.rate_limit_headers else VIOLATED
            self.evidence.add(assumptions.RATE_LIMIT_RESET, status, f"a 429 came with {headers}")


# The steps run on each incremental stream's sample, one per assumption, in this order.
STREAM_STEPS: tuple[Callable[[DeepCheck, Sample], None], ...] = (
    DeepCheck._default_exclusions,
    DeepCheck._sorted,
    DeepCheck._updated_since,
    DeepCheck._one_second,
    DeepCheck._large_ids,
)

# The verdicts that need every answer, one per assumption, after the requests.
CONCLUSIONS: tuple[Callable[[DeepCheck], None], ...] = (
    DeepCheck._documented_filters,
    DeepCheck._whole_second_times,
    DeepCheck._more_pages,
    DeepCheck._rate_limit_reset,
)

UNTESTED = {
    assumptions.RATE_LIMIT_RESET.name: "no 429 during the check (it never provokes one)",
    assumptions.OFFSET_PAGES.name: f"every small list fits on one page of {REFERENCE_PER_PAGE}",
}


INDIVIDUAL_ATTENDEES = Assumption(
    "individual_attendees",
    "/attendees lists an attendee record for every individual appointment (information, never a violation)",
    assumptions.INFERRED,
    "nothing: group classes' attendees are read by their ids, individual appointments' records left out",
)
INFORMATION = (INDIVIDUAL_ATTENDEES,)  # rows after the assumptions', with the status INFO


def outcomes(org_id: str, evidence: Evidence, stopped: str | None = None) -> list[Outcome]:
    rows = []
    for assumption in ASSUMPTIONS:
        untested = f"not tested: {stopped}" if stopped else UNTESTED.get(assumption.name, "no records to test with")
        status, detail = evidence.verdict(assumption, untested)
        rows.append(
            Outcome(
                organization_id=org_id,
                name=assumption.name,
                status=status,
                assumption=assumption.statement,
                detail=detail,
                source=assumption.source,
                relies=assumption.relies,
            )
        )
    seen = evidence.individual_attendees or f"not tested: {stopped or 'no records to test with'}"
    told = UNKNOWN if seen.startswith("not tested") else INFO  # like an assumption that could not be tested
    info = INDIVIDUAL_ATTENDEES
    rows.append(Outcome(org_id, info.name, told, info.statement, seen, info.source, info.relies))
    return rows


def deep_check(conn: DictConnection, organization: Organization) -> DeepResult:
    """The key check (recorded as `check-credentials` records it), then the assumption requests with the same key.

    A key, configuration or network problem stops the check with its exit code; assumptions not reached are unknown.
    """
    from cliniko_sync import config
    from cliniko_sync.cliniko.client import ClinikoClient
    from cliniko_sync.crypto import load_credentials

    org_id = organization.id
    key = check_credentials(conn, organization)
    if not key.ok:
        stopped = f"the key check failed (exit {key.exit_code})"
        return DeepResult(org_id, outcomes(org_id, Evidence(), stopped), key.exit_code, key.error, 1)
    check: DeepCheck | None = None
    try:
        credentials = load_credentials(conn, organization)
        rate_limit, rate_window = config.rate_limit_setting()
        with ClinikoClient(
            credentials.api_key,
            contact_email=config.contact_email(),
            api_url=credentials.api_url,
            rate_limit=rate_limit,
            rate_window=rate_window,
            **DEEP_CLIENT_OPTIONS,
        ) as client:
            check = DeepCheck(client)
            check.run()
    except ClinikoSyncError as exc:  # the tool's messages are safe: no key, no patient data
        evidence = check.evidence if check else Evidence()
        requests = 1 + (check.client.stats.requests if check else 0)
        stopped = f"the check stopped (exit {exc.exit_code})"
        return DeepResult(org_id, outcomes(org_id, evidence, stopped), exc.exit_code, str(exc), requests)
    rows = outcomes(org_id, check.evidence)
    code = EXIT_FAILURE if any(row.status == VIOLATED for row in rows) else EXIT_OK
    return DeepResult(org_id, rows, code, None, 1 + check.client.stats.requests)


def report(results: list[DeepResult], fmt: Format) -> int:
    """Print every organization's rows, one stderr line per problem (cron mails them); the exit code for them all."""
    from cliniko_sync.output import render

    render(
        (outcome.as_dict() for result in results for outcome in result.outcomes),
        COLUMNS,
        fmt,
        title="Cliniko API assumptions",
        table_columns=TABLE_COLUMNS,
    )
    for result in results:
        if result.error:
            print(f"cliniko-sync: error: {result.organization_id}: {result.error}", file=sys.stderr)
        for outcome in result.violated():
            print(
                f"cliniko-sync: error: {result.organization_id}: assumption {outcome.name} violated "
                f"({outcome.assumption}): {outcome.detail}; what depends on it: {outcome.relies}",
                file=sys.stderr,
            )
    return worst_exit_code([result.exit_code for result in results])

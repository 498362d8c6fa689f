"""What cliniko-sync assumes about the Cliniko API: one list, shared by the crawl's checks, the sync's error messages
and `check-credentials --deep`, so an operator can match a sync error to the check row with the same name.

Each assumption says where it comes from (Cliniko's OpenAPI spec, Cliniko's public issue tracker, or inferred by us;
../shared/cliniko-api.md gives the references) and which sync behaviour breaks when it does not hold.
"""

from __future__ import annotations

from dataclasses import dataclass

SPEC, ISSUE_TRACKER, INFERRED = "spec", "issue tracker", "inferred"


@dataclass(frozen=True)
class Assumption:
    name: str  # short and stable: the `name` of a check row, quoted in sync errors
    statement: str  # what is assumed, in the words the sync's errors use
    source: str  # SPEC, ISSUE_TRACKER or INFERRED
    relies: str  # the sync behaviour that depends on it

    def __str__(self) -> str:
        return f"{self.name} ({self.statement})"


DOCUMENTED_FILTERS = Assumption(
    "documented_filters",
    "each endpoint accepts the filters and sort the sync sends",
    SPEC,
    "every sync request: a refused filter fails the run (a small list is read without its archived_at:* wish)",
)
SORTED = Assumption(
    "sorted",
    "sort=updated_at,id returns non-decreasing shown seconds",
    SPEC,
    "the incremental crawl reads page 1 from its cursor and moves the cursor to the last second read",
)
FILTERED = Assumption(
    "updated_since",
    "updated_at:>=T returns only records shown at T or later",
    SPEC,
    "an incremental sync asks only for what changed since its cursor",
)
ONE_SECOND_ONLY = Assumption(
    "one_second",
    "updated_at:>=T&updated_at:<T+1s returns only records shown as T, sorted by id",
    INFERRED,
    "a second shared by more records than a page holds is read alone, by id",
)
LARGE_IDS = Assumption(
    "large_ids",
    "id:>N filters correctly with 19-digit ids",
    ISSUE_TRACKER,
    "a crowded second is paged by id:> the last id read",
)
DEFAULT_EXCLUSIONS = Assumption(
    "default_exclusions",
    "field:* lifts the default exclusions (archived, cancelled, deleted records are listed)",
    SPEC,
    "archived, cancelled and deleted records reach the mirror, so they stop counting towards active patients",
)
INACTIVE_PRACTITIONERS = Assumption(
    "inactive_practitioners",
    "/practitioners/inactive lists the practitioners /practitioners leaves out",
    SPEC,
    "appointments with a practitioner made inactive still name that practitioner",
)
OFFSET_PAGES = Assumption(
    "offset_pages",
    "page numbers of a small list, read with the same parameters, hold every record once",
    INFERRED,
    "appointment types and practitioners are read whole, page by page",
)
MORE_PAGES = Assumption(
    "more_pages",
    "links.next and total_entries agree on whether more pages follow (next links are never followed)",
    SPEC,
    "a listing ends when neither links.next nor total_entries says more records follow",
)
RATE_LIMIT_RESET = Assumption(
    "rate_limit_reset",
    "a 429 answer carries X-RateLimit-Reset (Unix time)",
    SPEC,
    "after a 429 the sync waits until the reset time (otherwise Retry-After, then exponential backoff)",
)
STRING_IDS = Assumption(
    "string_ids",
    "ids are JSON strings of decimal digits",
    SPEC,
    "mirror keys and id:> filters use the id text as sent, never a float",
)
WHOLE_SECOND_TIMES = Assumption(
    "whole_second_times",
    "timestamps are whole-second UTC with Z (YYYY-MM-DDTHH:MM:SSZ)",
    SPEC,
    "the crawl checks order and keeps its cursor on whole shown seconds",
)
ENVELOPE = Assumption(
    "envelope",
    "a listing holds its records under the endpoint's envelope key, with an integer total_entries",
    SPEC,
    "records are read from the envelope; total_entries drives progress and the small-list completeness check",
)
BOOKING_LISTS = Assumption(
    "booking_lists",
    "attendees?q[]=booking_id:=a,b,… sorted by booking_id,id returns exactly those bookings' attendees, in that order",
    SPEC,
    "group-class attendees are read by their classes' ids, never the individual appointments' attendee records",
)

ASSUMPTIONS: tuple[Assumption, ...] = (
    DOCUMENTED_FILTERS,
    SORTED,
    FILTERED,
    ONE_SECOND_ONLY,
    LARGE_IDS,
    DEFAULT_EXCLUSIONS,
    INACTIVE_PRACTITIONERS,
    OFFSET_PAGES,
    MORE_PAGES,
    RATE_LIMIT_RESET,
    STRING_IDS,
    WHOLE_SECOND_TIMES,
    ENVELOPE,
)

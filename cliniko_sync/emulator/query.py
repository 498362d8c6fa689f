"""Cliniko's list semantics: `q[]` filters typed per field, default exclusions, `sort`, and page/per_page.

SPECS is the documented table (docs/cliniko-api.md §4, from Cliniko's OpenAPI spec): a `q[]` field or `sort` column
an endpoint does not list is refused (HTTP 400 "This column is not searchable."), as the real API does. Malformed
values, an operator a field's type does not take, and bad page/per_page are refused with 400 too (inferred).

Crawl queries (`updated_at`/`created_at`/`id` ranges in index order, and the crowded-second query
`updated_at:>=T&updated_at:<T+1&id:>N` sorted by id) are answered from the sorted indexes in O(log n + page);
anything else falls back to a scan of the narrowest index range.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from datetime import datetime
from functools import cache
from typing import Any

from cliniko_sync.emulator import records as record_types
from cliniko_sync.emulator.dataset import Clinic
from cliniko_sync.emulator.store import SortedIndex, Table

DATETIME, NUMERIC, STRING, BOOLEAN, ARRAY, DATE = "date-time", "numeric", "string", "boolean", "array", "date"

OPERATORS = {
    DATETIME: (">=", ">", "<=", "<", "?", "!?", "*"),
    NUMERIC: ("=", "!=", ">=", ">", "<=", "<", "?", "!?"),
    STRING: ("=", "!=", "~", "~~", "?", "!?"),
    BOOLEAN: ("=", "!="),
    ARRAY: ("~",),
    DATE: ("=", ">=", ">", "<=", "<", "?", "!?"),
}
VALUELESS = ("?", "!?", "*")
RANGE_OPERATORS = (">=", ">", "<=", "<")
FILTER_SYNTAX = re.compile(r"(?P<field>[a-z_]+):(?P<operator>>=|<=|!=|!\?|~~|>|<|=|~|\?|\*)(?P<value>.*)", re.DOTALL)
# Whole seconds only: whether Cliniko accepts `.000Z` is unverified, so the stricter reading refuses it.
DATETIME_SYNTAX = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
DATE_SYNTAX = re.compile(r"[\d*]{4}-[\d*]{2}-[\d*]{2}")
DEFAULT_PER_PAGE = 50
MAX_PER_PAGE = 100
NOT_SEARCHABLE = "This column is not searchable."

Getter = Callable[[Any, Clinic], Any]


@dataclass(frozen=True)
class ResourceSpec:
    """What the API lets a client filter and sort on, and what it leaves out unless a filter names it."""

    name: str
    fields: dict[str, str]
    hidden_unless_named: tuple[str, ...]
    getters: dict[str, Getter] = field(default_factory=dict)

    def getter(self, name: str) -> Getter:
        if name in self.getters:
            return self.getters[name]
        return lambda record, clinic: getattr(record, name)


def _always_none(record: Any, clinic: Clinic) -> None:
    return None


def _always_true(record: Any, clinic: Clinic) -> bool:
    return True


def _group_patient_ids(record: Any, clinic: Clinic) -> list[int]:
    return [int(patient_id) for patient_id in clinic.group_patient_ids(record)]


def _business_type_ids(record: Any, clinic: Clinic) -> list[int]:
    return list(clinic.appointment_types.records)


_TIMES = {name: DATETIME for name in ("archived_at", "created_at", "updated_at")}
_APPOINTMENT_FIELDS = {
    **_TIMES,
    **{name: NUMERIC for name in ("appointment_type_id", "business_id", "id", "practitioner_id", "repeated_from_id")},
    **{name: DATETIME for name in ("deleted_at", "ends_at", "starts_at")},
}
# Exactly the filterable fields of cliniko-api.md §4 per endpoint (appointment types' three `*_template_ids` arrays
# are left out: the notes do not name them). Getters stand in for documented fields the emulator does not model.
SPECS = {
    spec.name: spec
    for spec in (
        ResourceSpec(
            "patients",
            {
                **_TIMES,
                "accepted_privacy_policy": BOOLEAN,
                "date_of_birth": DATE,
                "id": NUMERIC,
                **{name: STRING for name in ("email", "first_name", "last_name", "preferred_first_name")},
                "old_reference_id": STRING,
            },
            ("archived_at",),
        ),
        ResourceSpec(
            "individual_appointments",
            {**_APPOINTMENT_FIELDS, "patient_id": NUMERIC, "cancelled_at": DATETIME, "did_not_arrive": BOOLEAN},
            ("archived_at", "cancelled_at", "deleted_at"),
            {"repeated_from_id": _always_none},
        ),
        ResourceSpec(
            "group_appointments",
            {**_APPOINTMENT_FIELDS, "patient_ids": ARRAY},
            ("archived_at", "deleted_at"),
            {"repeated_from_id": _always_none, "patient_ids": _group_patient_ids},
        ),
        ResourceSpec(
            "attendees",
            {
                **_TIMES,
                **{name: NUMERIC for name in ("appointment_id", "booking_id", "id", "patient_case_id", "patient_id")},
                "cancelled_at": DATETIME,
                "deleted_at": DATETIME,
            },
            ("archived_at", "cancelled_at", "deleted_at"),
            # `appointment_id` is undocumented; the emulator reads it as the booking (group appointment) id.
            {"appointment_id": lambda record, clinic: record.booking_id, "patient_case_id": _always_none},
        ),
        ResourceSpec(
            "appointment_types",
            {
                **_TIMES,
                "id": NUMERIC,
                "category": STRING,
                "online_payments_mode": STRING,
                "show_in_online_bookings": BOOLEAN,
            },
            ("archived_at",),
            {
                "online_payments_mode": lambda record, clinic: "no_online_payment",
                "show_in_online_bookings": _always_true,
            },
        ),
        # /practitioners (active) and /practitioners/inactive share this list; there is no archived_at.
        ResourceSpec(
            "practitioners",
            {
                "active": BOOLEAN,
                "show_in_online_bookings": BOOLEAN,
                "created_at": DATETIME,
                "updated_at": DATETIME,
                "id": NUMERIC,
                "user_id": NUMERIC,
            },
            (),
            {"show_in_online_bookings": _always_true, "user_id": _always_none},
        ),
        ResourceSpec(
            "businesses",
            {
                **_TIMES,
                "deleted_at": DATETIME,
                "id": NUMERIC,
                "show_in_online_bookings": BOOLEAN,
                "appointment_type_ids": ARRAY,
            },
            ("archived_at",),
            {"show_in_online_bookings": _always_true, "appointment_type_ids": _business_type_ids},
        ),
    )
}
RECORD_TYPES: dict[str, type] = {
    "patients": record_types.Patient,
    "individual_appointments": record_types.IndividualAppointment,
    "group_appointments": record_types.GroupAppointment,
    "attendees": record_types.Attendee,
    "appointment_types": record_types.AppointmentType,
    "practitioners": record_types.Practitioner,
    "businesses": record_types.Business,
}


@cache
def permissive_spec(resource: str) -> ResourceSpec:
    """The old permissive table (the accept_undocumented_filters quirk): the documented fields plus every field of the
    record, typed by its name and annotation, plus archived_at/deleted_at (always null) where a record has none."""
    spec = SPECS[resource]
    kinds = dict(spec.fields)
    getters = dict(spec.getters)
    for item in dataclass_fields(RECORD_TYPES[resource]):
        # The records module postpones annotations, so each type is its source text ("str | None", "bool", ...).
        hint = item.type if isinstance(item.type, str) else getattr(item.type, "__name__", "")
        if item.name in kinds:
            continue
        if item.name.endswith("_at"):
            kinds[item.name] = DATETIME
        elif item.name == "id" or item.name.endswith("_id") or hint.startswith("int"):
            kinds[item.name] = NUMERIC
        elif "bool" in hint:
            kinds[item.name] = BOOLEAN
        elif hint.startswith("str"):
            kinds[item.name] = STRING
    for name in ("archived_at", "deleted_at"):
        if name not in kinds:
            kinds[name] = DATETIME
            getters[name] = _always_none
    return ResourceSpec(resource, kinds, spec.hidden_unless_named, getters)


class QueryError(Exception):
    """A request the API refuses with 400. `unsearchable`: a field or sort column the endpoint does not list (its
    status is a quirk, 400 by default, and its body is always {"message": "This column is not searchable."})."""

    def __init__(self, message: str, *, unsearchable: bool = False) -> None:
        super().__init__(message)
        self.message = NOT_SEARCHABLE if unsearchable else message
        self.unsearchable = unsearchable


@dataclass(frozen=True)
class QueryRules:
    """How one endpoint treats a request's parameters besides its spec (set from the server's quirks)."""

    ignored: frozenset[str] = frozenset()  # q[] fields accepted but not applied
    refused: frozenset[str] = frozenset()  # q[] fields (or "*": any) refused as unsearchable although documented
    ignore_sort: bool = False  # `sort`/`order` accepted but the default order used


DEFAULT_RULES = QueryRules()


@dataclass(frozen=True)
class Condition:
    """One parsed `q[]` condition, as the emulator checks it against stored records (the client's side is Filter)."""

    field: str
    operator: str
    kind: str
    values: tuple[Any, ...]

    def matches(self, value: Any) -> bool:
        operator = self.operator
        if operator == "*":
            return True
        if operator == "?":
            return value is not None
        if operator == "!?":
            return value is None
        if value is None:
            return False
        target = self.values[0]
        if operator == "=":
            if self.kind == DATE:
                return bool(target.fullmatch(value))
            return value in self.values
        if operator == "!=":
            return bool(value != target)
        if operator == ">=":
            return bool(value >= target)
        if operator == ">":
            return bool(value > target)
        if operator == "<=":
            return bool(value <= target)
        if operator == "<":
            return bool(value < target)
        if operator == "~":
            return target in value if self.kind == ARRAY else target in value.lower()
        return bool(target.fullmatch(value))  # ~~


def _parse_datetime(text: str) -> float:
    if not DATETIME_SYNTAX.fullmatch(text):
        raise ValueError("must be a UTC date-time in whole seconds like 2024-05-01T00:00:00Z")
    return datetime.fromisoformat(text).timestamp()


def _parse_value(kind: str, operator: str, text: str) -> tuple[Any, ...]:
    if kind == DATETIME:
        return (_parse_datetime(text),)
    if kind in (NUMERIC, ARRAY):
        parts = text.split(",") if operator == "=" else [text]
        if not all(part.isdigit() for part in parts):
            raise ValueError(
                "must be an integer id" + (" or a comma-separated list of them" if operator == "=" else "")
            )
        return tuple(int(part) for part in parts)
    if kind == BOOLEAN:
        if text not in ("true", "false"):
            raise ValueError("must be true or false")
        return (text == "true",)
    if kind == DATE:
        if not DATE_SYNTAX.fullmatch(text) or ("*" in text and operator != "="):
            raise ValueError("must be a date like 1990-05-17 (`*` wildcards only with `=`)")
        return (re.compile(text.replace("*", r"\d")),) if operator == "=" else (text,)
    if operator == "~":
        return (text.lower(),)
    if operator == "~~":
        pattern = ".*".join(re.escape(part) for part in text.split("%"))
        return (re.compile(pattern, re.IGNORECASE | re.DOTALL),)
    return (text,)


def parse_condition(text: str, spec: ResourceSpec, refused: frozenset[str] = frozenset()) -> Condition:
    """One `q[]` condition. Error messages name the column and operator, never the value (it may be an email)."""
    match = FILTER_SYNTAX.fullmatch(text)
    if not match:
        raise QueryError("Invalid filter: expected q[]=field:operator value")
    name, operator, value = match["field"], match["operator"], match["value"]
    kind = spec.fields.get(name)
    if kind is None or name in refused or "*" in refused:
        raise QueryError(f"{name} is not searchable on {spec.name}", unsearchable=True)
    if operator not in OPERATORS[kind]:
        raise QueryError(f"Invalid filter on {name}: operator {operator} is not allowed on a {kind} column")
    if operator in VALUELESS:
        if value:
            raise QueryError(f"Invalid filter on {name}: operator {operator} takes no value")
        return Condition(name, operator, kind, ())
    if not value:
        raise QueryError(f"Invalid filter on {name}: operator {operator} needs a value")
    try:
        return Condition(name, operator, kind, _parse_value(kind, operator, value))
    except ValueError as exc:
        raise QueryError(f"Invalid filter on {name}: the value {exc}") from None


def filter_field(text: str) -> str | None:
    """The column a `q[]` condition names, if it is well formed enough to tell."""
    match = FILTER_SYNTAX.fullmatch(text)
    return match["field"] if match else None


@dataclass(frozen=True)
class ListQuery:
    """A parsed list request. `filter_texts`/`sort_text` can be echoed in the envelope's links (a quirk)."""

    filters: tuple[Condition, ...]
    sort: tuple[tuple[str, bool], ...]  # (field, descending), always ending with id
    page: int
    per_page: int
    filter_texts: tuple[str, ...]
    sort_text: str | None


def _positive_int(name: str, text: str | None, default: int, maximum: int | None = None) -> int:
    if text is None:
        return default
    if not text.isdigit() or int(text) < 1 or (maximum is not None and int(text) > maximum):
        limit = f" and at most {maximum}" if maximum else ""
        raise QueryError(f"Invalid {name}: must be a whole number of at least 1{limit}")
    return int(text)


DEFAULT_SORT = (("created_at", False), ("id", False))


def parse_list_query(
    params: Sequence[tuple[str, str]], spec: ResourceSpec, rules: QueryRules = DEFAULT_RULES
) -> ListQuery:
    """Parse `page`, `per_page` (1..100), `q[]`, `sort` and the deprecated `order`; anything refused raises QueryError.

    The old bare `q=` (one filter without brackets) is not in today's docs; whether it still works is unverified, so
    the stricter reading applies: it is ignored like any unknown parameter.
    """
    values: dict[str, str] = {}
    filter_texts: list[str] = []
    for name, value in params:
        if name == "q[]":
            filter_texts.append(value)
        else:
            values[name] = value
    applied = [text for text in filter_texts if filter_field(text) not in rules.ignored]
    filters = tuple(parse_condition(text, spec, rules.refused) for text in applied)
    sort_text = values.get("sort")
    sort: list[tuple[str, bool]] = []
    if rules.ignore_sort:
        sort = list(DEFAULT_SORT)
    else:
        descending_default = values.get("order", "asc").lower() == "desc"
        for part in (sort_text or "created_at").split(","):
            name, _, direction = part.strip().partition(":")
            if name not in spec.fields or spec.fields[name] == ARRAY or name in rules.refused:
                raise QueryError(f"cannot sort {spec.name} by {name}", unsearchable=True)
            if direction not in ("", "asc", "desc"):
                raise QueryError(f"Invalid sort: unknown direction {direction!r} for {name}")
            sort.append((name, direction == "desc" if direction else descending_default))
        if "id" not in (name for name, _ in sort):
            sort.append(("id", False))
    return ListQuery(
        filters=filters,
        sort=tuple(sort),
        page=_positive_int("page", values.get("page"), 1),
        per_page=_positive_int("per_page", values.get("per_page"), DEFAULT_PER_PAGE, MAX_PER_PAGE),
        filter_texts=tuple(filter_texts),
        sort_text=sort_text,
    )


def visibility_conditions(spec: ResourceSpec, filters: Iterable[Condition]) -> tuple[Condition, ...]:
    """The default exclusions left in force: a field is hidden-when-set unless some filter names it."""
    named = {f.field for f in filters}
    return tuple(Condition(name, "!?", spec.fields[name], ()) for name in spec.hidden_unless_named if name not in named)


@dataclass
class _Source:
    """A slice [lo, hi) of one index, the filters it already satisfies, and whether it is in the requested order."""

    index: SortedIndex
    lo: int
    hi: int
    covered: set[int]
    ordered: bool = False

    def __len__(self) -> int:
        return max(0, self.hi - self.lo)


def _range_source(index: SortedIndex, filters: Sequence[Condition]) -> _Source:
    """The slice of an index the range filters on its field allow (all of it when there are none)."""
    source = _Source(index, 0, len(index.entries), set())
    for position, f in enumerate(filters):
        if f.field != index.field or f.operator not in RANGE_OPERATORS:
            continue
        operator, bound = f.operator, f.values[0]
        if index.shown:
            # Keyed by the shown second: narrow to a superset, and count the filter as applied only where the
            # second bounds are exact (`>=T`, `<T` with whole-second T); the record test checks the others.
            operator, bound, exact = _shown_bound(operator, bound)
            if exact:
                source.covered.add(position)
        else:
            source.covered.add(position)
        _narrow(source, operator, (bound, -1), (bound, math.inf))
    entries = index.entries
    if index.field != "id" and source.lo < source.hi and entries[source.lo][0] == entries[source.hi - 1][0]:
        # One shared key: entries are in id order, so id bounds narrow the slice too (the crowded-second query).
        value = entries[source.lo][0]
        for position, f in enumerate(filters):
            if f.field == "id" and f.operator in RANGE_OPERATORS:
                source.covered.add(position)
                _narrow(source, f.operator, (value, f.values[0]), (value, f.values[0]))
    return source


def _shown_bound(operator: str, bound: float) -> tuple[str, float, bool]:
    """A bound on a stored time as a bound on its shown (floored) second: (operator, second, exact?)."""
    whole = bound == math.floor(bound)
    if operator in (">=", ">"):
        return ">=", math.floor(bound), operator == ">=" and whole
    if operator == "<":
        return "<", math.ceil(bound), whole
    return "<=", math.floor(bound), False


def _narrow(source: _Source, operator: str, first: tuple[Any, Any], last: tuple[Any, Any]) -> None:
    """Apply one range operator; `first`/`last` are the lowest and highest index keys equal to the bound."""
    entries = source.index.entries
    if operator == ">=":
        source.lo = max(source.lo, bisect_left(entries, first))
    elif operator == ">":
        source.lo = max(source.lo, bisect_right(entries, last))
    elif operator == "<=":
        source.hi = min(source.hi, bisect_right(entries, last))
    else:
        source.hi = min(source.hi, bisect_left(entries, first))


def _in_order(source: _Source, sort: tuple[tuple[str, bool], ...]) -> bool:
    entries = source.index.entries
    field = source.index.field
    single_key = bool(len(source)) and entries[source.lo][0] == entries[source.hi - 1][0]
    if source.index.shown:
        # Shown seconds are not the stored order: only one second's slice is in a requested order (by id).
        return single_key and sort == (("id", False),)
    if field == "id":
        return sort == (("id", False),)
    natural: tuple[tuple[tuple[str, bool], ...], ...] = (((field, False), ("id", False)),)
    if single_key:
        natural += ((("id", False),), ((field, True), ("id", False)))
    return sort in natural


def run_list_query(
    clinic: Clinic, table: Table[Any], spec: ResourceSpec, query: ListQuery, extra: Sequence[Condition] = ()
) -> tuple[list[Any], int]:
    """The page of records and total_entries. Call with clinic.lock held."""
    filters = (*query.filters, *extra)
    checks = (*filters, *visibility_conditions(spec, filters))
    offset = (query.page - 1) * query.per_page
    records = table.records
    # `field:=a,b,…` on an indexed field (ids, attendees' booking ids): the listed values are looked up.
    indexes = table.indexes
    id_lists = [f for f in filters if f.field in indexes and f.operator == "=" and not indexes[f.field].shown]
    sources = [_range_source(index, filters) for index in table.indexes.values()]
    for source in sources:
        source.ordered = _in_order(source, query.sort)
    exact = [s for s in sources if s.ordered and len(checks) == len(s.covered) + _match_all(checks)]
    if exact and not id_lists:
        source = exact[0]
        start = source.lo + offset
        page = [
            records[record_id] for _, record_id in source.index.entries[start : min(start + query.per_page, source.hi)]
        ]
        return page, len(source)
    excluded = {p for p, f in enumerate(checks) if f.field == "id" and f.operator == "!="}
    skips = [s for s in sources if s.ordered and len(checks) == len(s.covered | excluded) + _match_all(checks)]
    if excluded and skips and not id_lists:
        return _page_skipping(skips[0], records, {checks[p].values[0] for p in excluded}, offset, query.per_page)
    pairs = [
        (chosen, other)
        for chosen in sources
        if chosen.ordered
        for other in sources
        if other is not chosen
        and not other.index.shown
        and len(checks) == len(chosen.covered | other.covered | excluded) + _match_all(checks)
    ]
    if pairs and not id_lists:
        return _page_of_two_ranges(*pairs[0], records, {checks[p].values[0] for p in excluded}, offset, query.per_page)
    ordered = [s for s in sources if s.ordered]
    walk_in_order = bool(ordered) and not id_lists and len(ordered[0]) <= 2 * min(map(len, sources)) + 10_000
    chosen = ordered[0] if walk_in_order else min(sources, key=len)
    candidates: Iterable[Any]
    if id_lists:
        candidates = _records_with(table, id_lists[0])
        wanted = _predicate(spec, clinic, checks, set())
    else:
        candidates = _records_in(chosen, records)
        wanted = _predicate(spec, clinic, checks, chosen.covered)
    if walk_in_order:
        # Walk the range in order: the page comes out as it is met; the rest is only counted.
        page, total = [], 0
        for record in candidates:
            if wanted(record):
                if offset <= total < offset + query.per_page:
                    page.append(record)
                total += 1
        return page, total
    found = [record for record in candidates if record is not None and wanted(record)]
    found = sort_records(found, spec, clinic, query)
    return found[offset : offset + query.per_page], len(found)


def _page_of_two_ranges(
    chosen: _Source, other: _Source, records: dict[int, Any], skipped: set[int], offset: int, per_page: int
) -> tuple[list[Any], int]:
    """A range on one index in order, narrowed by a range on another (an updated_at crawl with the window's
    `starts_at:>=`, or a backfill's `starts_at:<`), less a few ids: O(log n + page + skipped ids) from the ordered
    index's entries whose records lie in the other range. That list is built once, O(n), and kept on the other index
    until either index changes: a crawl's pages differ only in their updated_at bound."""
    key = (chosen.index.field, chosen.index.shown, chosen.index.changes, other.index.changes, other.lo, other.hi)
    inside = other.index.derived.get(key)
    if inside is None:
        ids = {record_id for _, record_id in other.index.entries[other.lo : other.hi]}
        inside = [entry for entry in chosen.index.entries if entry[1] in ids]
        if len(other.index.derived) >= 4:
            other.index.derived.clear()
        other.index.derived[key] = inside
    if not len(chosen):
        return [], 0
    entries = chosen.index.entries
    first, last = bisect_left(inside, entries[chosen.lo]), bisect_right(inside, entries[chosen.hi - 1])
    return _entries_without(inside, first, last, chosen.index, records, skipped, offset, per_page)


def sort_records(found: list[Any], spec: ResourceSpec, clinic: Clinic, query: ListQuery) -> list[Any]:
    """Records in the query's order (stable sorts, last key first)."""
    for name, descending in reversed(query.sort):
        found.sort(key=_sort_key(spec.getter(name), clinic), reverse=descending)
    return found


def _records_with(table: Table[Any], condition: Condition) -> Iterable[Any]:
    """The listed records whose indexed field equals one of the condition's values."""
    if condition.field == "id":
        return (table.get(record_id) for record_id in sorted(set(condition.values)))
    entries = table.indexes[condition.field].entries
    return (
        table.records[entries[position][1]]
        for value in sorted(set(condition.values))
        for position in range(bisect_left(entries, (value, -1)), bisect_right(entries, (value, math.inf)))
    )


def _page_skipping(
    source: _Source, records: dict[int, Any], skipped: set[int], offset: int, per_page: int
) -> tuple[list[Any], int]:
    """An index range in order without a few ids (`id:!=` filters): O(log n + page + skipped ids)."""
    return _entries_without(
        source.index.entries, source.lo, source.hi, source.index, records, skipped, offset, per_page
    )


def _entries_without(
    entries: list[tuple[float, int]],
    lo: int,
    hi: int,
    index: SortedIndex,
    records: dict[int, Any],
    skipped: set[int],
    offset: int,
    per_page: int,
) -> tuple[list[Any], int]:
    """The page of entries[lo:hi] (index's (key, id) pairs, in order) without the skipped ids, and how many are left
    without them."""
    page: list[Any] = []
    seen = 0
    position = lo
    while position < hi and len(page) < per_page:
        record_id = entries[position][1]
        if record_id not in skipped:
            if seen >= offset:
                page.append(records[record_id])
            seen += 1
        position += 1
    present = 0
    for record_id in skipped:
        record = records.get(record_id)
        if record is not None:
            key = (index.key(getattr(record, index.field)), record_id)
            found = bisect_left(entries, key, lo, hi)
            present += found < hi and entries[found] == key
    return page, hi - lo - present


def _predicate(
    spec: ResourceSpec, clinic: Clinic, checks: Sequence[Condition], satisfied: set[int]
) -> Callable[[Any], bool]:
    """A record test for the checks the index range has not already satisfied (positions in `satisfied`)."""
    remaining = [f for position, f in enumerate(checks) if position not in satisfied and f.operator != "*"]
    # Plain "field is null" checks (the default exclusions) are the common case in scans: test them directly.
    must_be_null = [f.field for f in remaining if f.operator == "!?" and f.field not in spec.getters]
    general = [(spec.getter(f.field), f) for f in remaining if f.operator != "!?" or f.field in spec.getters]

    def wanted(record: Any) -> bool:
        for name in must_be_null:
            if getattr(record, name) is not None:
                return False
        return all(f.matches(get(record, clinic)) for get, f in general)

    return wanted


def _records_in(source: _Source, records: dict[int, Any]) -> Iterable[Any]:
    entries = source.index.entries
    return (records[entries[position][1]] for position in range(source.lo, source.hi))


def _match_all(checks: Sequence[Condition]) -> int:
    return sum(1 for f in checks if f.operator == "*")


def _sort_key(get: Getter, clinic: Clinic) -> Callable[[Any], tuple[bool, Any]]:
    """Nulls sort last ascending and first descending, as in PostgreSQL."""

    def key(record: Any) -> tuple[bool, Any]:
        value = get(record, clinic)
        return (value is None, value)

    return key


def find_record(
    clinic: Clinic, table: Table[Any], spec: ResourceSpec, record_id: str, filters: Sequence[Condition]
) -> Any:
    """GET by id: the record, or None when unknown or left out by the default exclusions (an archived patient)."""
    if not record_id.isdigit():
        return None
    record = table.get(int(record_id))
    if record is None:
        return None
    checks = (*filters, *visibility_conditions(spec, filters))
    if all(f.matches(spec.getter(f.field)(record, clinic)) for f in checks):
        return record
    return None

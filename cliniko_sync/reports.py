"""Read-only reports: an organization's active patients (list-active) and sync health (status, Prometheus)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from enum import Enum
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from cliniko_sync.errors import UsageError
from cliniko_sync.output import TableView

if TYPE_CHECKING:
    from cliniko_sync.db import DictConnection


class SortKey(str, Enum):
    last_appointment = "last_appointment"
    name = "name"
    recent = "recent"


# Each sort ends on the patient id so that --limit/--offset pages never overlap or skip rows.
_SORT_COLUMNS = {
    SortKey.last_appointment: ("ap.last_appointment_date", "ap.cliniko_patient_id"),
    SortKey.name: ("coalesce(c.name, p.name)", "ap.cliniko_patient_id"),
    SortKey.recent: ("ap.recent_appointment_count", "ap.last_appointment_date", "ap.cliniko_patient_id"),
}

LIST_COLUMNS = (
    "organization_id",
    "cliniko_patient_id",
    "contact_id",
    "name",
    "phone",
    "email",
    "recent_appointment_count",
    "upcoming_appointment_count",
    "total_appointment_count",
    "last_appointment_date",
    "next_appointment_date",
    "history_complete",
)
FETCH_SIZE = 2000

# Tables for people: short headers over the same rows (json and csv keep the full column names).
LIST_TABLE: TableView = {
    "name": itemgetter("name"),
    "phone": itemgetter("phone"),
    "email": itemgetter("email"),
    "patient id": itemgetter("cliniko_patient_id"),
    "recent": itemgetter("recent_appointment_count"),
    "upcoming": itemgetter("upcoming_appointment_count"),
    "total": itemgetter("total_appointment_count"),
    "last appointment": itemgetter("last_appointment_date"),
    "next appointment": itemgetter("next_appointment_date"),
}


def search_pattern(text: str) -> str:
    """An ILIKE pattern matching `text` literally anywhere: %, _ and the escape character lose their meaning."""
    if "\x00" in text:
        raise UsageError("--search must not contain a NUL byte")
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _order_by(sort: SortKey, descending: bool) -> Any:
    from psycopg import sql

    # PostgreSQL's defaults (ASC NULLS LAST, DESC NULLS FIRST) make --desc the exact reverse and match the indexes.
    direction = sql.SQL(" DESC" if descending else " ASC")
    return sql.SQL(", ").join(sql.SQL(column) + direction for column in _SORT_COLUMNS[sort])


def _check_not_negative(**values: int | None) -> None:
    for option, value in values.items():
        if value is not None and value < 0:
            raise UsageError(f"--{option.replace('_', '-')} must be 0 or more (got {value})")


def list_active(
    conn: DictConnection,
    organization_id: str,
    *,
    sort: SortKey = SortKey.last_appointment,
    descending: bool = False,
    limit: int | None = None,
    offset: int = 0,
    min_recent: int = 0,
    search: str | None = None,
) -> Iterator[dict[str, Any]]:
    """The organization's active patients with their contact details, streamed through a server-side cursor.

    Arguments and the organization are checked before this returns (UsageError, ConfigError); rows are read as the
    iterator is consumed, inside the connection's transaction.
    """
    from psycopg import sql

    from cliniko_sync.db import query
    from cliniko_sync.orgs import get_organization

    _check_not_negative(limit=limit, offset=offset, min_recent=min_recent)
    params = {
        "organization_id": organization_id,
        "min_recent": min_recent,
        "pattern": search_pattern(search) if search else None,
        "limit": limit,
        "offset": offset,
    }
    get_organization(conn, organization_id)
    statement = sql.SQL(query("list_active")).format(order_by=_order_by(SortKey(sort), descending))
    return _stream(conn, statement, params)


def _stream(conn: DictConnection, statement: Any, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
    with conn.cursor(name="list_active") as cursor:
        cursor.itersize = FETCH_SIZE
        cursor.execute(statement, params)
        yield from cursor


# --- status ------------------------------------------------------------------------------------------------

# What a "last run" can be: skipped runs (the organization was locked, nothing was done) are counted apart.
RUN_STATUSES = ("running", "success", "failed", "partial", "abandoned")

STATUS_COLUMNS = (
    "organization_id",
    "enabled",
    "running",
    "last_run_status",
    "last_run_mode",
    "last_run_started_at",
    "last_run_duration_seconds",
    "last_run_requests",
    "last_run_rate_limited",
    "last_success_at",
    "last_failure_at",
    "last_failure_status",
    "last_failure_message",
    "skipped_runs",
    "last_skipped_at",
    "active_patients",
    "history_complete",
    "backfill_records",
    "oldest_cursor_at",
    "stale",
)
HISTORY_COLUMNS = (
    "id",
    "organization_id",
    "status",
    "mode",
    "started_at",
    "finished_at",
    "duration_seconds",
    "requests",
    "rate_limited",
    "error_class",
    "error_message",
)
# Keys of sync_log.stats that the sync records for its API traffic.
STAT_REQUESTS = "requests"
STAT_RATE_LIMITED = "rate_limited"


def _age_of(key: str, suffix: str = "") -> Callable[[dict[str, Any]], str | None]:
    return lambda row: None if row[key] is None else f"{human_age(row[key])}{suffix}"


def _seconds(key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda row: None if row[key] is None else round(row[key], 1)


def _last_failure(row: dict[str, Any]) -> str | None:
    """`3h ago: <message>`: the latest failed, partial or abandoned run, by its one-line message."""
    if row["last_failure_at"] is None:
        return None
    message = row["last_failure_message"] or row["last_failure_status"]
    return f"{human_age(row['last_failure_age_seconds'])} ago: {message}"


def _history(row: dict[str, Any]) -> str | None:
    """Whether the active list is exact, or provisional while the history is backfilled (and how far along)."""
    if row["history_complete"] is None:
        return None
    if row["history_complete"]:
        return "complete"
    records = row["backfill_records"]
    return f"backfill: {records:,} read" if records is not None else "backfilling"


STATUS_TABLE: TableView = {
    "organization": itemgetter("organization_id"),
    "enabled": itemgetter("enabled"),
    "running": itemgetter("running"),
    "last run": itemgetter("last_run_status"),
    "mode": itemgetter("last_run_mode"),
    "started": _age_of("last_run_age_seconds", " ago"),
    "seconds": _seconds("last_run_duration_seconds"),
    "requests": itemgetter("last_run_requests"),
    "429s": itemgetter("last_run_rate_limited"),
    "last success": _age_of("last_success_age_seconds", " ago"),
    "active": itemgetter("active_patients"),
    "history": _history,
    "skipped": itemgetter("skipped_runs"),
    "cursor age": _age_of("oldest_cursor_age_seconds"),
    "last failure": _last_failure,
}
# What goes first when the table is wider than the terminal (--wide keeps every column).
STATUS_DROP_FIRST = ("429s", "requests", "cursor age", "mode", "seconds", "skipped", "history", "enabled", "started",
                     "running", "last failure", "last success")  # fmt: skip
STALE_COLUMN: TableView = {"stale": itemgetter("stale")}
HISTORY_TABLE: TableView = {
    "run": itemgetter("id"),
    "organization": itemgetter("organization_id"),
    "status": itemgetter("status"),
    "mode": itemgetter("mode"),
    "started": itemgetter("started_at"),
    "seconds": _seconds("duration_seconds"),
    "requests": itemgetter("requests"),
    "429s": itemgetter("rate_limited"),
    "error": itemgetter("error_message"),
}
HISTORY_DROP_FIRST = ("429s", "requests", "mode", "organization", "seconds")
LIST_DROP_FIRST = ("total", "upcoming", "next appointment", "recent", "email", "patient id")


def human_age(seconds: float | None) -> str | None:
    """A compact age for tables: 45s, 12m, 3h, 2d."""
    if seconds is None:
        return None
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(int(seconds), 0)}s"


def _stat(stats: dict[str, Any] | None, key: str) -> int | None:
    value = (stats or {}).get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def organization_status(
    conn: DictConnection, organization_id: str | None = None, *, max_age: timedelta | None = None
) -> list[dict[str, Any]]:
    """One row per organization (or only `organization_id`, ConfigError if unknown), by id.

    With `max_age`, each row's `stale` says whether an enabled organization's last success is older or missing;
    otherwise `stale` is None.
    """
    from cliniko_sync.db import query
    from cliniko_sync.orgs import get_organization

    if organization_id is not None:
        get_organization(conn, organization_id)
    rows = conn.execute(query("status"), {"organization_id": organization_id}).fetchall()
    for row in rows:
        row["last_run_requests"] = _stat(row["last_run_stats"], STAT_REQUESTS)
        row["last_run_rate_limited"] = _stat(row["last_run_stats"], STAT_RATE_LIMITED)
        history = (row["last_run_stats"] or {}).get("history_complete")
        row["history_complete"] = history if isinstance(history, bool) else None
        row["backfill_records"] = None if history is not False else _stat(row["last_run_stats"], "backfill_records")
        row["stale"] = None if max_age is None else is_stale(row, max_age)
    return rows


def is_stale(row: dict[str, Any], max_age: timedelta) -> bool:
    """An enabled organization whose last success is older than max_age, or that never succeeded."""
    if not row["enabled"]:
        return False
    age = row["last_success_age_seconds"]
    return age is None or age > max_age.total_seconds()


def stale_summary(rows: Iterable[dict[str, Any]]) -> str | None:
    """One line naming the stale organizations, or None when every organization is fresh."""
    stale = [f"{row['organization_id']} ({_last_success_phrase(row)})" for row in rows if row["stale"]]
    return f"stale: {', '.join(stale)}" if stale else None


def _last_success_phrase(row: dict[str, Any]) -> str:
    if row["last_success_at"] is None:
        return "never succeeded"
    return f"last success {human_age(row['last_success_age_seconds'])} ago"


def run_history(conn: DictConnection, organization_id: str | None, limit: int) -> list[dict[str, Any]]:
    """The latest `limit` runs, newest first, for one organization (ConfigError if unknown) or all of them."""
    from cliniko_sync.db import query
    from cliniko_sync.orgs import get_organization

    _check_not_negative(history=limit)
    if organization_id is not None:
        get_organization(conn, organization_id)
    rows = conn.execute(query("status_history"), {"organization_id": organization_id, "limit": limit}).fetchall()
    for row in rows:
        row["requests"] = _stat(row["stats"], STAT_REQUESTS)
        row["rate_limited"] = _stat(row["stats"], STAT_RATE_LIMITED)
    return rows


# --- Prometheus (node_exporter textfile collector) ---------------------------------------------------------

_METRICS: tuple[tuple[str, str], ...] = (
    ("cliniko_sync_enabled", "1 when the organization is enabled for scheduled syncs."),
    ("cliniko_sync_running", "1 when a sync of the organization is running now (fresh heartbeat)."),
    ("cliniko_sync_last_success_timestamp_seconds", "Unix time the last successful sync finished; 0 when never."),
    ("cliniko_sync_last_run_duration_seconds", "Wall time of the last finished run."),
    ("cliniko_sync_last_run_status", "1 for the status of the latest run, 0 for the other statuses."),
    ("cliniko_sync_last_run_api_requests", "Cliniko API requests made by the latest run."),
    ("cliniko_sync_last_run_rate_limited_responses", "HTTP 429 answers the latest run received from Cliniko."),
    ("cliniko_sync_active_patients", "Rows in active_patients for the organization."),
    ("cliniko_sync_oldest_cursor_age_seconds", "Seconds since the least recently advanced stream cursor moved."),
    ("cliniko_sync_skipped_runs_total", "Runs that found the organization locked by another sync (exit 75)."),
    (
        "cliniko_sync_last_run_credentials_rejected",
        "1 when the latest run failed because Cliniko rejected the API key.",
    ),
    (
        "cliniko_sync_last_run_assumption_violated",
        "1 when the latest run failed because Cliniko's answer broke an API assumption (check-credentials --deep).",
    ),
)
_COUNTERS = frozenset({"cliniko_sync_skipped_runs_total"})
# The error classes (sync_log.error_class) behind the two failure gauges: a rejected key (exit 77), and Cliniko
# answering against an assumption of cliniko_sync/assumptions.py (a refused filter is the documented_filters one).
CREDENTIALS_REJECTED_ERRORS = frozenset({"CredentialsRejectedError"})
ASSUMPTION_ERRORS = frozenset({"AssumptionViolatedError", "ClinikoRefusedError"})


def _label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float | int | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _samples(row: dict[str, Any]) -> Iterator[tuple[str, dict[str, str], float | int | bool]]:
    """(metric, extra labels, value) for one organization; unknown values are left out rather than guessed."""
    yield "cliniko_sync_enabled", {}, row["enabled"]
    yield "cliniko_sync_running", {}, row["running"]
    last_success = row["last_success_at"]
    yield "cliniko_sync_last_success_timestamp_seconds", {}, last_success.timestamp() if last_success else 0
    if row["last_run_duration_seconds"] is not None:
        yield "cliniko_sync_last_run_duration_seconds", {}, row["last_run_duration_seconds"]
    if row["last_run_status"] is not None:
        for status in RUN_STATUSES:
            yield "cliniko_sync_last_run_status", {"status": status}, row["last_run_status"] == status
        error_class = row["last_run_error_class"]
        yield "cliniko_sync_last_run_credentials_rejected", {}, error_class in CREDENTIALS_REJECTED_ERRORS
        yield "cliniko_sync_last_run_assumption_violated", {}, error_class in ASSUMPTION_ERRORS
    if row["last_run_requests"] is not None:
        yield "cliniko_sync_last_run_api_requests", {}, row["last_run_requests"]
    if row["last_run_rate_limited"] is not None:
        yield "cliniko_sync_last_run_rate_limited_responses", {}, row["last_run_rate_limited"]
    yield "cliniko_sync_active_patients", {}, row["active_patients"]
    if row["oldest_cursor_age_seconds"] is not None:
        yield "cliniko_sync_oldest_cursor_age_seconds", {}, row["oldest_cursor_age_seconds"]
    yield "cliniko_sync_skipped_runs_total", {}, row["skipped_runs"]


def prometheus_text(rows: Iterable[dict[str, Any]]) -> str:
    """The node_exporter textfile format: one sample per organization (and status); gauges, and one counter."""
    by_metric: dict[str, list[str]] = {name: [] for name, _ in _METRICS}
    for row in rows:
        for metric, extra, value in _samples(row):
            labels = {"organization": row["organization_id"], **extra}
            rendered = ",".join(f'{key}="{_label_value(text)}"' for key, text in labels.items())
            by_metric[metric].append(f"{metric}{{{rendered}}} {_number(value)}")
    lines: list[str] = []
    for name, help_text in _METRICS:
        kind = "counter" if name in _COUNTERS else "gauge"
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *by_metric[name]]
    return "\n".join(lines) + "\n"

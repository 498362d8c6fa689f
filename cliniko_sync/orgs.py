"""Organizations (clinics): validated settings stored in the `organizations` table (DESIGN §2, §7)."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from cliniko_sync.durations import format_duration, parse_duration
from cliniko_sync.errors import ConfigError, LockedError, UsageError

if TYPE_CHECKING:
    from cliniko_sync.db import DictConnection

SERVICE = "cliniko"
MAX_NAME_LENGTH = 200
MIN_WINDOW_DAYS = 1
MAX_WINDOW_DAYS = 3650
_ORG_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# phonenumbers knows a few regions that are not ISO 3166-1 countries (Ascension, Tristan da Cunha, Kosovo).
_NOT_ISO_3166 = frozenset({"AC", "TA", "XK"})
UPDATABLE = ("name", "country", "time_zone", "window_days", "include_upcoming", "enabled", "sync_interval",
             "full_sync_interval")  # fmt: skip
DEFAULT_SYNC_INTERVAL = timedelta(minutes=15)
DEFAULT_FULL_SYNC_INTERVAL = timedelta(days=1)
# The bounds the schema enforces (004_schedule.sql): cron runs `sync --due` once a minute, so finer means nothing.
SYNC_INTERVAL_RANGE = (timedelta(minutes=1), timedelta(days=30))
FULL_SYNC_INTERVAL_RANGE = (timedelta(minutes=1), timedelta(days=365))


@dataclass(frozen=True)
class Organization:
    id: str
    name: str
    country: str
    time_zone: str
    window_days: int
    include_upcoming: bool
    enabled: bool
    created_at: datetime
    updated_at: datetime
    sync_interval: timedelta = DEFAULT_SYNC_INTERVAL
    full_sync_interval: timedelta = DEFAULT_FULL_SYNC_INTERVAL

    def as_dict(self) -> dict[str, Any]:
        """Intervals as the duration text the options take (`15m`, `1d`), so what `org show` prints can be given
        back to `org set`."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {name: format_duration(v) if isinstance(v, timedelta) else v for name, v in values.items()}


COLUMNS = tuple(f.name for f in fields(Organization))


def _shown(value: str, limit: int = 40) -> str:
    """A user's value made safe for a one-line message: escaped, and cut when long."""
    text = value if len(value) <= limit else value[:limit] + "…"
    return repr(text)


def validate_org_id(value: str) -> str:
    """An organization id is a slug: lower-case letters, digits and hyphens, 1–63 characters, not starting with '-'."""
    if not _ORG_ID.fullmatch(value):
        raise UsageError(
            f"invalid organization id {_shown(value)}: use 1–63 lower-case letters, digits and hyphens, "
            "starting with a letter or digit (e.g. surf-rehab)"
        )
    return value


def validate_name(value: str) -> str:
    name = value.strip()
    if not name:
        raise UsageError("organization name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise UsageError(f"organization name must be at most {MAX_NAME_LENGTH} characters (got {len(name)})")
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise UsageError("organization name must not contain control characters (newlines, tabs, NUL, …)")
    return name


@cache
def _countries() -> frozenset[str]:
    import phonenumbers

    return frozenset(phonenumbers.SUPPORTED_REGIONS) - _NOT_ISO_3166


def validate_country(value: str) -> str:
    """An ISO 3166-1 alpha-2 code that phonenumbers can use as the default region for local numbers."""
    country = value.strip().upper()
    if country not in _countries():
        raise UsageError(f"unknown country {_shown(value)}: use an ISO 3166-1 alpha-2 code such as AU, NZ or GB")
    return country


@cache
def _time_zones() -> frozenset[str]:
    # Listing the zones walks the tz database on disk (about 20 ms); every organization added or changed asks.
    import zoneinfo

    return frozenset(zoneinfo.available_timezones())


def validate_time_zone(value: str) -> str:
    if value not in _time_zones():
        raise UsageError(f"unknown time zone {_shown(value)}: use an IANA name such as Australia/Brisbane")
    return value


def validate_window_days(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_WINDOW_DAYS <= value <= MAX_WINDOW_DAYS:
        raise UsageError(f"window days must be a whole number from {MIN_WINDOW_DAYS} to {MAX_WINDOW_DAYS}")
    return value


def _interval_validator(option: str, bounds: tuple[timedelta, timedelta]) -> Callable[[Any], timedelta]:
    """Durations as `status --max-age` takes them (`90s`, `15m`, `2h`, `1d`), or a timedelta, within bounds."""

    def validate(value: Any) -> timedelta:
        interval = value if isinstance(value, timedelta) else parse_duration(str(value))
        low, high = bounds
        if not low <= interval <= high:
            raise UsageError(f"{option} must be from {format_duration(low)} to {format_duration(high)}")
        return interval

    return validate


validate_sync_interval = _interval_validator("--sync-interval", SYNC_INTERVAL_RANGE)
validate_full_sync_interval = _interval_validator("--full-sync-interval", FULL_SYNC_INTERVAL_RANGE)


def _validate_flag(name: str, value: bool) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{name} must be true or false")
    return value


_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "name": validate_name,
    "country": validate_country,
    "time_zone": validate_time_zone,
    "window_days": validate_window_days,
    "include_upcoming": lambda value: _validate_flag("include_upcoming", value),
    "enabled": lambda value: _validate_flag("enabled", value),
    "sync_interval": validate_sync_interval,
    "full_sync_interval": validate_full_sync_interval,
}


def _from_row(row: dict[str, Any]) -> Organization:
    return Organization(**{name: row[name] for name in COLUMNS})


def add_organization(
    conn: DictConnection,
    org_id: str,
    *,
    name: str,
    country: str = "AU",
    time_zone: str = "Australia/Sydney",
    window_days: int = 45,
    include_upcoming: bool = False,
    sync_interval: timedelta | str = DEFAULT_SYNC_INTERVAL,
    full_sync_interval: timedelta | str = DEFAULT_FULL_SYNC_INTERVAL,
) -> Organization:
    """Create an organization and its Cliniko service row; an existing id is a usage error."""
    import psycopg

    from cliniko_sync.db import query

    values = {
        "id": validate_org_id(org_id),
        "name": validate_name(name),
        "country": validate_country(country),
        "time_zone": validate_time_zone(time_zone),
        "window_days": validate_window_days(window_days),
        "include_upcoming": _validate_flag("include_upcoming", include_upcoming),
        "sync_interval": validate_sync_interval(sync_interval),
        "full_sync_interval": validate_full_sync_interval(full_sync_interval),
    }
    try:
        with conn.transaction():
            row = conn.execute(query("organization_add"), values).fetchone()
            conn.execute(
                "INSERT INTO organization_services (organization_id, service) VALUES (%s, %s)", (org_id, SERVICE)
            )
    except psycopg.errors.UniqueViolation:
        raise UsageError(f"organization {org_id} already exists (change it with `cliniko-sync org set`)") from None
    assert row is not None
    return _from_row(row)


def database_in_use(conn: DictConnection | None = None) -> str:
    """The database a command looked in, for messages: the URL without its password, or "the embedded database in
    <dir>". Cron jobs whose environment file lacks DATABASE_URL or CLINIKO_SYNC_DATA_DIR then see where they looked."""
    from cliniko_sync.config import current_settings, data_dir

    if current_settings().resolved_database_url() is None:
        return f"the embedded database in {data_dir()}"
    if conn is None:
        return "the database"
    info = conn.info
    user = f"{info.user}@" if info.user else ""
    host = info.host if not info.host.startswith("/") else f"[{info.host}]"
    return f"postgresql://{user}{host}:{info.port}/{info.dbname}"


def unknown_organization(org_id: str, conn: DictConnection | None = None) -> ConfigError:
    return ConfigError(
        f"unknown organization {org_id} in {database_in_use(conn)}: "
        f"add it with `cliniko-sync org add {org_id} --name NAME`"
    )


def get_organization(conn: DictConnection, org_id: str) -> Organization:
    """The organization with this id; unknown → ConfigError (exit 78)."""
    validate_org_id(org_id)
    row = conn.execute("SELECT * FROM organizations WHERE id = %s", (org_id,)).fetchone()
    if row is None:
        raise unknown_organization(org_id, conn)
    return _from_row(row)


def list_organizations(conn: DictConnection, *, enabled_only: bool = False) -> list[Organization]:
    """Every organization (or only the enabled ones), by id."""
    rows = conn.execute("SELECT * FROM organizations WHERE enabled OR NOT %s ORDER BY id", (enabled_only,)).fetchall()
    return [_from_row(row) for row in rows]


def update_organization(conn: DictConnection, org_id: str, **changes: Any) -> Organization:
    """Change some of the UPDATABLE settings; None values are ignored."""
    from psycopg import sql

    unknown = sorted(set(changes) - set(UPDATABLE))
    if unknown:
        raise UsageError(f"cannot change {', '.join(unknown)} (changeable: {', '.join(UPDATABLE)})")
    values = {key: _VALIDATORS[key](value) for key, value in changes.items() if value is not None}
    if not values:
        return get_organization(conn, org_id)
    validate_org_id(org_id)
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(key), sql.Placeholder(key)) for key in values
    )
    statement = sql.SQL("UPDATE organizations SET {}, updated_at = now() WHERE id = %(org_id)s RETURNING *").format(
        assignments
    )
    with conn.transaction():
        row = conn.execute(statement, {**values, "org_id": org_id}).fetchone()
    if row is None:
        raise unknown_organization(org_id, conn)
    return _from_row(row)


def credential_status(conn: DictConnection) -> dict[str, dict[str, Any]]:
    """Per organization: whether a Cliniko key is stored, and the last `check-credentials` result."""
    from cliniko_sync.db import query

    rows = conn.execute(query("credential_status"), {"service": SERVICE}).fetchall()
    return {row.pop("organization_id"): row for row in rows}


# --- removal -----------------------------------------------------------------------------------------------

CREATED_BY_US = "cliniko-sync"


@dataclass
class Removal:
    """What `org remove` deleted (or, before confirmation, would delete): rows per table."""

    organization_id: str
    removed: dict[str, int]
    contacts_unlinked: int
    organization_kept: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _deletion_order(tables: dict[str, list[str]]) -> list[str]:
    """Referencing tables before the tables they reference (depth-first), `organizations` itself last."""
    ordered: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in ordered or name in path:
            return
        for child in sorted(t for t, refs in tables.items() if name in refs):
            visit(child, (*path, name))
        ordered.append(name)

    for name in sorted(tables):
        visit(name, ())
    return ordered


def remove_organization(conn: DictConnection, org_id: str, *, dry_run: bool = False) -> Removal:
    """Delete the organization's rows from every table with an organization_id column, in one transaction.

    Contacts cliniko-sync created go; contacts other systems own lose their link to Cliniko (cliniko_patient_id) and
    stay, and so does the organization row they belong to (disabled, without credentials), since removing it would
    delete them too. With `dry_run` the counts are computed and everything is rolled back.
    """
    from psycopg import sql

    from cliniko_sync.db import query
    from cliniko_sync.sync.run_log import LOCK_NAMESPACE

    get_organization(conn, org_id)
    removed: dict[str, int] = {}
    with conn.transaction(force_rollback=dry_run):
        # Never delete under a running sync: take its lock (the same key) for this transaction, or refuse.
        locked = conn.execute(
            "SELECT pg_try_advisory_xact_lock(%s, hashtext(%s)) AS ok", (LOCK_NAMESPACE, org_id)
        ).fetchone()
        if not locked or not locked["ok"]:
            raise LockedError(f"a sync of {org_id} is running; remove it when the sync is over")
        tables = {row["table_name"]: list(row["references_tables"]) for row in conn.execute(query("org_tables"))}
        foreign = conn.execute(
            "SELECT count(*) AS n FROM contacts WHERE organization_id = %s AND created_by <> %s",
            (org_id, CREATED_BY_US),
        ).fetchone()
        keep_organization = bool(foreign and foreign["n"])
        unlinked = conn.execute(query("contacts_unlink_foreign"), {"org": org_id, "us": CREATED_BY_US}).rowcount
        for table in _deletion_order(tables):
            extra: sql.Composable = sql.SQL("")
            if table == "contacts":
                extra = sql.SQL(" AND created_by = {}").format(sql.Literal(CREATED_BY_US))
            statement = sql.SQL("DELETE FROM {} WHERE organization_id = %s{}").format(sql.Identifier(table), extra)
            removed[table] = conn.execute(statement, (org_id,)).rowcount
        if keep_organization:
            conn.execute("UPDATE organizations SET enabled = false, updated_at = now() WHERE id = %s", (org_id,))
            removed["organizations"] = 0
        else:
            removed["organizations"] = conn.execute("DELETE FROM organizations WHERE id = %s", (org_id,)).rowcount
    return Removal(org_id, removed, unlinked, keep_organization)

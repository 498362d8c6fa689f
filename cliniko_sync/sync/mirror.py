"""Writing pages into the mirror tables and the crawl state into sync_state (always inside the caller's transaction)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import psycopg
from psycopg import sql

from cliniko_sync.cliniko import records
from cliniko_sync.cliniko.endpoints import endpoint
from cliniko_sync.db import DictConnection, query
from cliniko_sync.errors import ClinikoAPIError
from cliniko_sync.sync.crawl import Position
from cliniko_sync.sync.streams import Stream


@dataclass
class WriteCounts:
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0


@dataclass(frozen=True)
class _Shape:
    """How one stream's records become mirror rows: the SQL that types them (mirror_rows_*.sql), the column holding
    the patient a row belongs to, which patients a changed row makes dirty (mirror_dirty_*.sql), and the values only
    Python works out (phonenumbers, name rules), handed to SQL beside the records."""

    rows: str
    patient_column: str | None
    dirty: str
    derive: Callable[[dict[str, Any], str], list[Any]] | None = None
    backfilled: str = "true"  # the rows a backfill pass reads (window.py): those the window reads do not
    after: str | None = None  # what else the upsert's new rows settle (mirror_after_*.sql)
    # Writers of these streams take turns per organization (BOOKINGS_LOCK): an attendee record of an individual
    # appointment is either left out (its appointment is in the mirror) or dropped when the appointment arrives.
    bookings: bool = False


# The transaction-level advisory lock (this namespace, hashtext(organization id)) that individual appointments' and
# attendees' writers take before writing: each then sees what the other committed.
BOOKINGS_LOCK = 0x434C4241


_BEFORE_WINDOW = "starts_at < %(window_from)s"
_CLASSES_BEFORE_WINDOW = (
    "group_appointment_id IN (SELECT g.id FROM cliniko_group_appointments g"
    " WHERE g.organization_id = %(org)s AND g.starts_at < %(window_from)s)"
)


def _patient_values(raw: dict[str, Any], region: str) -> list[Any]:
    return list(records.patient_contact(raw, region))


_SHAPES: dict[str, _Shape] = {
    "patients": _Shape("mirror_rows_patients", None, "mirror_dirty_patients", _patient_values),
    "individual_appointments": _Shape(
        "mirror_rows_individual_appointments",
        "patient_id",
        "mirror_dirty_bookings",
        backfilled=_BEFORE_WINDOW,
        after="mirror_after_individual_appointments",
        bookings=True,
    ),
    "group_appointments": _Shape(
        "mirror_rows_group_appointments", None, "mirror_dirty_group_appointments", backfilled=_BEFORE_WINDOW
    ),
    "attendees": _Shape(
        "mirror_rows_attendees", "patient_id", "mirror_dirty_bookings", backfilled=_CLASSES_BEFORE_WINDOW, bookings=True
    ),
    "appointment_types": _Shape(
        "mirror_rows_reference", None, "mirror_dirty_reference", lambda raw, _: [records.appointment_type_name(raw)]
    ),
    "practitioners": _Shape(
        "mirror_rows_reference", None, "mirror_dirty_reference", lambda raw, _: [records.practitioner_name(raw)]
    ),
    "businesses": _Shape(
        "mirror_rows_reference", None, "mirror_dirty_reference", lambda raw, _: [records.business_name(raw)]
    ),
}


# The server version (server_version_num) from which the upsert reads each row's previous version from its own
# RETURNING old; older servers read it with a probe in the same statement (mirror_previous_probe.sql). A test raises
# it to run the probe on a newer server.
RETURNING_OLD_SINCE = 180000


def returns_old(conn: DictConnection) -> bool:
    """Whether this connection's server has RETURNING old (known from the connection's start: no round trip)."""
    return conn.info.server_version >= RETURNING_OLD_SINCE


@cache
def _upsert_statement(stream: Stream, returning_old: bool) -> bytes:
    """The stream's upsert (reading the previous rows from RETURNING old, or by the probe), composed once: composing
    it takes longer than PostgreSQL takes to plan it. The names are our own ASCII identifiers, so no connection's
    encoding is needed to quote them."""
    shape = _SHAPES[stream.name]
    table = sql.Identifier(stream.table)
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in stream.columns)
    newer = sql.SQL("EXCLUDED.updated_at >= {table}.updated_at").format(table=table)
    assignments = sql.SQL(", ").join(
        sql.SQL("{col} = CASE WHEN {newer} THEN EXCLUDED.{col} ELSE {table}.{col} END").format(
            col=sql.Identifier(c), newer=newer, table=table
        )
        for c in stream.columns
        if c != "id"
    )
    patient = (
        sql.SQL("old.{}").format(sql.Identifier(shape.patient_column)) if shape.patient_column else sql.SQL("NULL")
    )
    dirty = sql.SQL(query(shape.dirty))  # our own files: inserted as they are, never formatted
    returning: sql.Composable
    previous: sql.Composable
    if returning_old:
        returning = sql.SQL(query("mirror_returning_old")).format(old_patient=patient)
        previous = sql.SQL("SELECT * FROM written")
    else:
        returning = sql.SQL("id, organization_id, raw")
        previous = sql.SQL(query("mirror_previous_probe")).format(table=table, old_patient=patient)
    upsert = sql.SQL(query("mirror_upsert")).format(
        table=table,
        columns=columns,
        assignments=assignments,
        rows=sql.SQL(query(shape.rows)),
        returning=returning,
        previous=previous,
        dirty=dirty,
        after=sql.SQL(query(shape.after) if shape.after else ""),
    )
    return upsert.as_bytes(None)


@cache
def _remove_statement(stream: Stream) -> bytes:
    """The stream's soft-delete statement (mirror_remove_unseen.sql), composed once."""
    shape = _SHAPES[stream.name]
    patient = sql.Identifier(shape.patient_column) if shape.patient_column else sql.SQL("NULL::text")
    remove = sql.SQL(query("mirror_remove_unseen")).format(
        table=sql.Identifier(stream.table),
        patient=patient,
        dirty=sql.SQL(query(shape.dirty)),
        backfilled=sql.SQL(shape.backfilled),
    )
    return remove.as_bytes(None)


def _without_nul(value: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold U+0000: drop it (hostile or broken data must not fail the sync)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


def _page_json(raws: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The records as one JSON array, and the records it holds. One json.dumps per page, not per row; a page with
    U+0000 anywhere (a rare, hostile page) is rebuilt without it. A false alarm (an escaped backslash before
    "u0000") only costs the rebuild."""
    text = _to_json(raws)
    if "\\u0000" in text:
        raws = _without_nul(raws)
        text = _to_json(raws)
    return text, raws


def _to_json(value: Any) -> str:
    # Records parsed from Cliniko's JSON hold no cycles: skipping the check halves json.dumps' time.
    return json.dumps(value, separators=(",", ":"), check_circular=False)


@dataclass(frozen=True)
class PageRows:
    """One page's records to write (make one with page_rows): the listing rows Python parsed, or, when PostgreSQL
    can read the records itself, the page's JSON body as Cliniko sent it (client.Page.text) less the records at the
    `skipped` positions (from 0: records the crawl had already read), with those records' count and top-level keys
    (the deny-list is worked out from them)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    body: str | None = None
    skipped: tuple[int, ...] = ()
    count: int = 0
    keys: frozenset[str] = frozenset()


def page_rows(stream: Stream, rows: list[dict[str, Any]], body: str | None = None,
              skipped: tuple[int, ...] = ()) -> PageRows:  # fmt: skip
    """What to keep of a page until its batch is written: `rows` (records.listing_row of each record written), and
    `body` when it holds those records and the ones at the `skipped` positions, in order. A page PostgreSQL reads
    from its body keeps no parsed record, so a batch of them costs little memory."""
    # Values derived in Python go beside the records in their order, so those streams' records go through Python's
    # JSON; so does a body holding an escaped U+0000 (PostgreSQL refuses it; _page_json drops it).
    if body is None or _SHAPES[stream.name].derive is not None or "\\u0000" in body:
        return PageRows(rows)
    return PageRows(body=body, skipped=skipped, count=len(rows), keys=frozenset().union(*(row["raw"] for row in rows)))


def write_rows(
    conn: DictConnection,
    stream: Stream,
    organization_id: str,
    rows: list[dict[str, Any]],
    full_pass: int | None,
    *,
    region: str = "AU",
) -> WriteCounts:
    """Upsert listing rows (records.listing_row: the Cliniko record under "raw"): write_pages with one page."""
    return write_pages(conn, stream, organization_id, [PageRows(rows)], full_pass, region=region)


def write_pages(
    conn: DictConnection,
    stream: Stream,
    organization_id: str,
    pages: list[PageRows],
    full_pass: int | None,
    *,
    region: str = "AU",
) -> WriteCounts:
    """Upsert the rows of several pages in one statement: PostgreSQL gets the batch's JSON as one parameter and
    types it itself. Returns what changed. `region` reads patients' local phone numbers. A record whose fields
    PostgreSQL cannot read as Cliniko documents them fails the batch."""
    shape = _SHAPES[stream.name]
    envelope = endpoint(stream.paths[0]).envelope
    bodies: list[str] = []
    raws: list[dict[str, Any]] = []
    keys: set[str] = set()
    skip_pages: list[int] = []
    skip_items: list[int] = []
    for page in pages:
        if page.body is not None and page.count:
            bodies.append(page.body)
            keys |= page.keys
            skip_pages += [len(bodies)] * len(page.skipped)
            skip_items += [position + 1 for position in page.skipped]
        elif page.rows:
            text, page_raws = _page_json([row["raw"] for row in page.rows])
            bodies.append(f"{{{_to_json(envelope)}:{text}}}")
            keys = keys.union(*page_raws)
            raws += page_raws
    if not bodies:
        return WriteCounts()
    # Only pages that went through Python carry derived values (page_rows), so `raws` is every record then.
    derived = "[]" if shape.derive is None else _to_json([shape.derive(raw, region) for raw in raws])
    params = {
        "org": organization_id,
        "pass": full_pass,
        "pages": f"[{','.join(bodies)}]",
        "envelope": envelope,
        "skip_pages": skip_pages,
        "skip_items": skip_items,
        "derived": derived,
        "denied": records.denied_keys(stream.name, keys),
    }
    # Planned afresh for every batch (prepared: parsed once): a plan cached while the table was small (a first
    # sync) would go on scanning it when it is big.
    conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
    if shape.bookings:
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (BOOKINGS_LOCK, organization_id))
    try:
        result = conn.execute(_upsert_statement(stream, returns_old(conn)), params, prepare=True).fetchone()
    except psycopg.DataError as exc:
        raise ClinikoAPIError(f"Cliniko sent a {stream.name} record with a field that cannot be read") from exc
    assert result is not None
    return WriteCounts(
        inserted=result["inserted"],
        updated=result["updated"],
        unchanged=result["total"] - result["inserted"] - result["updated"],
    )


def remove_unseen(
    conn: DictConnection, stream: Stream, organization_id: str, full_pass: int, window_from: datetime | None = None
) -> int:
    """After a complete full pass: soft-delete mirror rows that the pass did not see (their patients go dirty). A
    backfill pass (`window_from`: the start of the window the window reads read) answers only for the rows before it."""
    params = {"org": organization_id, "pass": full_pass, "window_from": window_from}
    row = conn.execute(_remove_statement(stream), params).fetchone()
    return row["removed"] if row else 0


# --- crawl state -------------------------------------------------------------------------------------------


@dataclass
class StreamState:
    """One sync_state row."""

    pass_id: int | None = None
    pass_mode: str | None = None
    pass_complete: bool = False
    position: Position = Position()
    cursor_updated_at: datetime | None = None


def load_state(conn: DictConnection, organization_id: str, stream: Stream) -> StreamState:
    row = conn.execute(
        "SELECT * FROM sync_state WHERE organization_id = %s AND stream = %s", (organization_id, stream.name)
    ).fetchone()
    if row is None:
        return StreamState()
    return StreamState(
        pass_id=row["pass_id"],
        pass_mode=row["pass_mode"],
        pass_complete=row["pass_complete"],
        position=Position(row["position_updated_at"], frozenset(row["position_ids"] or ()), row["tie_after_id"]),
        cursor_updated_at=row["cursor_updated_at"],
    )


def save_state(conn: DictConnection, organization_id: str, stream: Stream, state: StreamState) -> None:
    conn.execute(
        query("sync_state_save"),
        {
            "org": organization_id,
            "stream": stream.name,
            "pass_id": state.pass_id,
            "mode": state.pass_mode,
            "complete": state.pass_complete,
            "pos_at": state.position.updated_at,
            "pos_ids": sorted(state.position.ids),
            "tie": state.position.tie_after_id,
            "cursor": state.cursor_updated_at,
        },
    )

"""Several pages in one write, and PostgreSQL reading a page's body as Cliniko sent it (mirror.write_pages): the
mirror ends up exactly as if Python had handed over the parsed records, and the counts stay exact."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from cliniko_sync import db
from cliniko_sync.cliniko import records
from cliniko_sync.emulator import generate_clinic
from cliniko_sync.emulator.render import render
from cliniko_sync.errors import ClinikoAPIError
from cliniko_sync.orgs import add_organization
from cliniko_sync.sync.mirror import PageRows, WriteCounts, page_rows, write_pages, write_rows
from cliniko_sync.sync.streams import STREAMS_BY_NAME, Stream

BASE = "http://127.0.0.1:1/v1"
BODY_STREAMS = ["individual_appointments", "group_appointments", "attendees"]  # no values derived in Python
APPOINTMENTS = STREAMS_BY_NAME["individual_appointments"]


def body(stream: Stream, raws: list[dict[str, Any]], **dumps: Any) -> str:
    """A listing body the way Cliniko sends one: the records under the envelope, a total and links."""
    return json.dumps({stream.name: raws, "total_entries": len(raws), "links": {"self": f"{BASE}/x"}}, **dumps)


def page(stream: Stream, raws: list[dict[str, Any]], **dumps: Any) -> PageRows:
    """The page as the client gives it (records parsed from its text) and as the stream pass hands it over."""
    text = body(stream, raws, **dumps)
    parsed = json.loads(text)[stream.name]
    return page_rows(stream, [records.listing_row(raw) for raw in parsed], text)


def stored(conn: db.DictConnection, stream: Stream, org: str) -> dict[str, dict[str, Any]]:
    rows = conn.execute(f"SELECT * FROM {stream.table} WHERE organization_id = %s", (org,)).fetchall()
    return {row["id"]: {k: v for k, v in row.items() if k not in ("organization_id", "synced_at")} for row in rows}


def odd(raw: dict[str, Any], index: int) -> dict[str, Any]:
    """The record with text that JSON escapes, non-ASCII text, numbers and nested values (all kept in raw)."""
    changed = copy.deepcopy(raw)
    changed["id"] = f"8{index}{raw['id']}"
    changed["cancellation_reason_description"] = ['quote " and \\ back', "Zoë 名前 🙂", "tab\there", None][index % 4]
    changed["invoice_status"] = [1, 2.5, 10**20, {"nested": [1, "two"]}][index % 4]
    return changed


@pytest.mark.parametrize("stream_name", BODY_STREAMS)
def test_a_page_body_is_stored_exactly_as_its_parsed_records(database_url: str, stream_name: str) -> None:
    stream = STREAMS_BY_NAME[stream_name]
    clinic = generate_clinic(patients=20, appointments=120, seed=5)
    raws = [render(stream.name, record, BASE, clinic) for record in clinic.tables[stream.name].iter_listed()]
    raws += [odd(raw, index) for index, raw in enumerate(raws)]
    chunks = [raws[start : start + 37] for start in range(0, len(raws), 37)]
    with db.connect(database_url, autocommit=True) as conn:
        add_organization(conn, "from-text", name="From text")
        add_organization(conn, "from-python", name="From Python")
        with conn.transaction():
            # Cliniko's own spacing and escapes vary: PostgreSQL reads whatever came.
            pages = [page(stream, chunk, ensure_ascii=bool(n % 2), indent=n % 3 or None) for n, chunk in
                     enumerate(chunks)]  # fmt: skip
            from_text = write_pages(conn, stream, "from-text", pages, None)
        with conn.transaction():
            from_python = write_rows(conn, stream, "from-python", [records.listing_row(raw) for raw in raws], None)
        assert from_text == from_python == WriteCounts(inserted=len(raws))
        assert stored(conn, stream, "from-text") == stored(conn, stream, "from-python")
        assert len(stored(conn, stream, "from-text")) == len(raws)


def appointment(record_id: str, updated_at: str, patient: str, note: str = "") -> dict[str, Any]:
    return {
        "id": record_id,
        "starts_at": "2026-01-05T01:00:00Z",
        "updated_at": updated_at,
        "created_at": "2025-12-01T00:00:00Z",
        "patient": {"links": {"self": f"{BASE}/patients/{patient}"}},
        "notes": "clinical free text",
        "cancellation_reason_description": note,
    }


def test_a_batch_of_pages_counts_each_record_once_and_keeps_the_newest(database_url: str) -> None:
    with db.connect(database_url, autocommit=True) as conn:
        add_organization(conn, "batch", name="Batch")
        # Record 1 changed while the pages were read: it comes again, newer, two pages later.
        first = [
            page(APPOINTMENTS, [appointment("1", "2026-01-01T00:00:00Z", "10"),
                                appointment("2", "2026-01-01T00:00:01Z", "20")]),
            page(APPOINTMENTS, [appointment("3", "2026-01-01T00:00:02Z", "30")]),
            page(APPOINTMENTS, [appointment("1", "2026-01-01T00:00:09Z", "11")]),
        ]  # fmt: skip
        with conn.transaction():
            assert write_pages(conn, APPOINTMENTS, "batch", first, 1) == WriteCounts(inserted=3)
        rows = stored(conn, APPOINTMENTS, "batch")
        assert rows["1"]["patient_id"] == "11" and rows["1"]["updated_at"].second == 9
        assert "notes" not in rows["1"]["raw"]  # the deny-list applies to bodies too
        with conn.transaction():
            assert write_pages(conn, APPOINTMENTS, "batch", first, 1) == WriteCounts(unchanged=3)
        # An older version never replaces a newer row; a newer one is an update.
        later = [
            page(APPOINTMENTS, [appointment("1", "2026-01-01T00:00:00Z", "99")]),
            page(APPOINTMENTS, [appointment("2", "2026-01-02T00:00:00Z", "21", note="moved")]),
        ]
        with conn.transaction():
            assert write_pages(conn, APPOINTMENTS, "batch", later, None) == WriteCounts(updated=1, unchanged=1)
        rows = stored(conn, APPOINTMENTS, "batch")
        assert rows["1"]["patient_id"] == "11"
        assert rows["2"]["patient_id"] == "21" and rows["2"]["raw"]["cancellation_reason_description"] == "moved"
        # A row a full pass removed comes back as an update when Cliniko lists it again.
        conn.execute("UPDATE cliniko_individual_appointments SET removed_at = now() WHERE id = '3'")
        again = [page(APPOINTMENTS, [appointment("3", "2026-01-01T00:00:02Z", "30")])]
        with conn.transaction():
            assert write_pages(conn, APPOINTMENTS, "batch", again, None) == WriteCounts(updated=1)
        assert stored(conn, APPOINTMENTS, "batch")["3"]["removed_at"] is None


def test_changed_bookings_in_a_batch_mark_old_and_new_patients_dirty(database_url: str) -> None:
    with db.connect(database_url, autocommit=True) as conn:
        add_organization(conn, "dirty", name="Dirty")
        booked = [appointment("1", "2026-01-01T00:00:00Z", "10"), appointment("2", "2026-01-01T00:00:00Z", "20")]
        with conn.transaction():
            write_pages(conn, APPOINTMENTS, "dirty", [page(APPOINTMENTS, booked)], None)
        # A recompute happened: from now on only changed patients are marked.
        conn.execute("INSERT INTO active_recompute_state (organization_id, as_of) VALUES ('dirty', now())")
        moved = [
            page(APPOINTMENTS, [appointment("1", "2026-01-03T00:00:00Z", "11")]),  # booking moved to patient 11
            page(APPOINTMENTS, [appointment("2", "2026-01-01T00:00:00Z", "20")]),  # unchanged
        ]
        with conn.transaction():
            assert write_pages(conn, APPOINTMENTS, "dirty", moved, None) == WriteCounts(updated=1, unchanged=1)
        dirty = conn.execute("SELECT patient_id FROM active_dirty_patients WHERE organization_id = 'dirty'").fetchall()
        assert sorted(row["patient_id"] for row in dirty) == ["10", "11"]


def test_a_body_with_an_escaped_nul_is_stored_without_it(database_url: str) -> None:
    """PostgreSQL jsonb refuses U+0000: such a page goes through Python, which drops it, and the sync goes on."""
    with db.connect(database_url, autocommit=True) as conn:
        add_organization(conn, "nul", name="Nul")
        pages = [page(APPOINTMENTS, [appointment("1", "2026-01-01T00:00:00Z", "10", note="Nul\x00l")]),
                 page(APPOINTMENTS, [appointment("2", "2026-01-01T00:00:00Z", "20", note="plain")])]  # fmt: skip
        assert pages[0].body is None and pages[1].body is not None  # the first goes through Python
        with conn.transaction():
            assert write_pages(conn, APPOINTMENTS, "nul", pages, None) == WriteCounts(inserted=2)
        rows = stored(conn, APPOINTMENTS, "nul")
        assert rows["1"]["raw"]["cancellation_reason_description"] == "Null"
        assert rows["2"]["raw"]["cancellation_reason_description"] == "plain"


def test_a_body_with_an_unreadable_time_fails_the_whole_batch_with_one_line(database_url: str) -> None:
    with db.connect(database_url, autocommit=True) as conn:
        add_organization(conn, "bad", name="Bad")
        broken = appointment("2", "2026-01-01T00:00:00Z", "20")
        broken["starts_at"] = "next Tuesday"
        pages = [page(APPOINTMENTS, [appointment("1", "2026-01-01T00:00:00Z", "10")]), page(APPOINTMENTS, [broken])]
        with pytest.raises(ClinikoAPIError) as raised, conn.transaction():
            write_pages(conn, APPOINTMENTS, "bad", pages, None)
        assert str(raised.value) == "Cliniko sent a individual_appointments record with a field that cannot be read"
        assert stored(conn, APPOINTMENTS, "bad") == {}


def test_records_skipped_in_a_body_are_not_written(database_url: str) -> None:
    """The crawl drops records it already read from a page; the body still holds them, and they stay out."""
    with db.connect(database_url, autocommit=True) as conn:
        add_organization(conn, "skip", name="Skip")
        raws = [appointment(str(n), "2026-01-01T00:00:00Z", f"{n}0") for n in range(1, 6)]
        kept = [records.listing_row(raws[n]) for n in (0, 2, 4)]
        pages = [page(APPOINTMENTS, [appointment("9", "2026-01-01T00:00:00Z", "90")]),
                 page_rows(APPOINTMENTS, kept, body(APPOINTMENTS, raws), skipped=(1, 3))]  # fmt: skip
        assert pages[1] == PageRows(body=body(APPOINTMENTS, raws), skipped=(1, 3), count=3, keys=frozenset(raws[0]))
        with conn.transaction():
            assert write_pages(conn, APPOINTMENTS, "skip", pages, None) == WriteCounts(inserted=4)
        assert sorted(stored(conn, APPOINTMENTS, "skip")) == ["1", "3", "5", "9"]

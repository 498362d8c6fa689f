"""The mirror's SQL reads Cliniko's JSON (sql/queries/mirror_rows_*.sql) exactly as records.py defines each column:
every typed column and the scrubbed raw JSON, for the emulator's records and for odd but valid shapes."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from cliniko_sync import db
from cliniko_sync.cliniko import records
from cliniko_sync.emulator import generate_clinic
from cliniko_sync.emulator.render import render
from cliniko_sync.orgs import add_organization
from cliniko_sync.sync.mirror import write_rows
from cliniko_sync.sync.streams import STREAMS

BASE = "http://127.0.0.1:1/v1"
PYTHON_ROWS = {stream.name: stream.parse for stream in STREAMS}

ODD_TIMES = ["2025-03-04T05:06:07Z", "2025-03-04T05:06:07.123456Z", "2025-03-04T15:06:07+10:00", "2025-03-04T05:06:07",
             "2025-03-04 05:06:07+0530", "2025-03-04", "", None]  # fmt: skip
ODD_LINKS: list[Any] = [
    {"links": {"self": f"{BASE}/patients/77/"}},
    {"links": {"self": f"{BASE}/patients/78?x=1"}},
    {"links": {"self": 79}},
    {"links": []},
    "not a link",
    None,
]


def _variants(stream_name: str, raw: dict[str, Any], index: int) -> dict[str, Any]:
    """The record with some fields swapped for odd but valid shapes."""
    odd = copy.deepcopy(raw)
    odd["id"] = int(odd["id"]) if index % 3 == 0 else odd["id"]
    for field in ("starts_at", "ends_at", "cancelled_at", "archived_at", "merged_at"):
        if field in odd:
            odd[field] = ODD_TIMES[(index + len(field)) % len(ODD_TIMES)]
    for field in ("patient", "practitioner", "booking", "appointment_type"):
        if field in odd and index % 2:
            odd[field] = ODD_LINKS[index % len(ODD_LINKS)]
    if "max_attendees" in odd:
        odd["max_attendees"] = [5, 5.0, "5", True, None][index % 5]
    if "arrived" in odd:
        odd["arrived"] = [True, False, None, "yes"][index % 4]
    if "did_not_arrive" in odd:
        odd["did_not_arrive"] = [True, False, 1, None][index % 4]
    return odd


@pytest.mark.parametrize("stream", STREAMS, ids=lambda s: s.name)
def test_sql_columns_equal_the_python_definitions(database_url: str, stream: Any) -> None:
    clinic = generate_clinic(patients=20, appointments=120, seed=4)
    table = clinic.tables[stream.name]
    raws = [render(stream.name, record, BASE, clinic) for record in table.iter_listed()]
    raws += [_variants(stream.name, raw, index) for index, raw in enumerate(raws)]
    for index, raw in enumerate(raws[len(raws) // 2 :]):
        raw["id"] = f"9{index}{raw['id']}"  # the variants are records of their own
    org = "mirror-sql"
    with db.connect(database_url, autocommit=True) as conn:
        add_organization(conn, org, name="Mirror SQL", country="AU")
        with conn.transaction():
            write_rows(conn, stream, org, [records.listing_row(raw) for raw in raws], None, region="AU")
        stored = {
            row["id"]: row
            for row in conn.execute(f"SELECT * FROM {stream.table} WHERE organization_id = %s", (org,)).fetchall()
        }
    assert len(stored) == len(raws)
    for raw in raws:
        expected = PYTHON_ROWS[stream.name](raw, "AU")
        row = stored[expected["id"]]
        assert {column: row[column] for column in stream.columns} == expected, expected["id"]

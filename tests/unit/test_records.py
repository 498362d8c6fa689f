"""Parsing Cliniko records into mirror rows: timestamps, links, phones, names, emails and the deny-list."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from cliniko_sync.cliniko import records
from cliniko_sync.cliniko.records import (
    DENY_LIST,
    appointment_type_row,
    attendee_row,
    group_appointment_row,
    individual_appointment_row,
    link_id,
    normalize_phone,
    parse_time,
    patient_row,
    practitioner_row,
    scrub,
)
from cliniko_sync.errors import ClinikoAPIError

BASE = "https://api.au2.cliniko.com/v1"
PATIENT_ID = "1386591894061983172"


def link(path: str) -> dict:
    return {"links": {"self": f"{BASE}/{path}"}}


def patient(**fields: object) -> dict:
    raw: dict = {
        "id": PATIENT_ID,
        "first_name": "Zoë",
        "last_name": "O'Connor",
        "preferred_first_name": None,
        "label": None,
        "email": "Zoe.OConnor@Example.TEST",
        "patient_phone_numbers": [
            {"phone_type": "Mobile", "number": "0412 555 019", "normalized_number": "61412555019"},
        ],
        "archived_at": None,
        "deleted_at": None,
        "merged_at": None,
        "created_at": "2023-02-11T23:04:51Z",
        "updated_at": "2025-05-30T06:12:09Z",
        "links": {"self": f"{BASE}/patients/{PATIENT_ID}"},
    }
    raw.update(fields)
    return raw


def appointment(**fields: object) -> dict:
    raw: dict = {
        "id": "1402277310938471530",
        "starts_at": "2025-06-02T23:30:00Z",
        "ends_at": "2025-06-03T00:15:00Z",
        "patient_name": "Zoë O'Connor",
        "patient": link(f"patients/{PATIENT_ID}"),
        "practitioner": link("practitioners/1386590001234567001"),
        "appointment_type": link("appointment_types/1386590001234567101"),
        "business": link("businesses/1386590001234567201"),
        "did_not_arrive": False,
        "cancelled_at": None,
        "cancellation_note": "moving house",
        "notes": "left knee worse",
        "telehealth_url": "https://video.example.test/room/1",
        "archived_at": None,
        "deleted_at": None,
        "created_at": "2025-05-20T01:02:03Z",
        "updated_at": "2025-06-03T00:20:41Z",
        "links": {"self": f"{BASE}/individual_appointments/1402277310938471530"},
    }
    raw.update(fields)
    return raw


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-05-30T06:12:09Z", datetime(2025, 5, 30, 6, 12, 9, tzinfo=UTC)),
        ("2025-05-30T06:12:09.250Z", datetime(2025, 5, 30, 6, 12, 9, 250000, tzinfo=UTC)),
        ("2025-05-30T16:12:09+10:00", datetime(2025, 5, 30, 6, 12, 9, tzinfo=UTC)),
        ("2025-05-30T06:12:09", datetime(2025, 5, 30, 6, 12, 9, tzinfo=UTC)),
        ("2025-05-29T20:12:09.5-10:00", datetime(2025, 5, 30, 6, 12, 9, 500000, tzinfo=UTC)),
    ],
)
def test_parse_time_gives_aware_utc(text: str, expected: datetime) -> None:
    parsed = parse_time(text)
    assert parsed == expected
    assert parsed is not None and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("empty", [None, ""])
def test_parse_time_reads_empty_as_none(empty: object) -> None:
    assert parse_time(empty) is None


def test_parse_time_converts_datetimes_to_utc() -> None:
    brisbane = timezone(timedelta(hours=10))
    assert parse_time(datetime(2025, 1, 1, 10, tzinfo=brisbane)) == datetime(2025, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("bad", ["yesterday", "2025-13-01T00:00:00Z", 1717200000, ["2025-01-01"]])
def test_parse_time_rejects_garbage(bad: object) -> None:
    with pytest.raises(ClinikoAPIError):
        parse_time(bad)


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (link("patients/123"), "123"),
        (link("patients/123/"), "123"),
        ({"links": {"self": f"{BASE}/bookings/987?q%5B%5D=archived_at%3A%2A"}}, "987"),
        (None, None),
        ({}, None),
        ({"links": None}, None),
        ({"links": {"self": None}}, None),
        ({"links": {"self": ""}}, None),
        ("123", None),
    ],
)
def test_link_id(obj: object, expected: str | None) -> None:
    assert link_id(obj) == expected


@pytest.mark.parametrize(
    ("numbers", "expected"),
    [
        ([{"phone_type": "Mobile", "number": "0412 345 678"}], "+61412345678"),
        ([{"phone_type": "Mobile", "number": "+61 412 345 678"}], "+61412345678"),
        ([{"phone_type": "Mobile", "number": "(04) 1234-5678"}], "+61412345678"),
        ([{"phone_type": "Home", "number": "(02) 9123 4567"}], "+61291234567"),
        ([{"phone_type": "Work", "number": "+44 20 7946 0958"}], "+442079460958"),
        # The Mobile number wins over an earlier landline...
        (
            [{"phone_type": "Home", "number": "(02) 9123 4567"}, {"phone_type": "Mobile", "number": "0412 345 678"}],
            "+61412345678",
        ),
        # ...unless it is invalid: then the first other valid number, in order.
        (
            [
                {"phone_type": "Mobile", "number": "call mum"},
                {"phone_type": "Fax", "number": "12"},
                {"phone_type": "Work", "number": "(03) 9123 4567"},
                {"phone_type": "Home", "number": "(02) 9123 4567"},
            ],
            "+61391234567",
        ),
        # Only the number as typed counts, not Cliniko's normalized digits.
        ([{"phone_type": "Mobile", "number": "mob: see notes", "normalized_number": "61412345678"}], None),
        ([{"phone_type": "Mobile", "number": 412345678}], None),
        ([{"phone_type": "Mobile", "number": "call mum"}], None),
        ([{"phone_type": "Mobile", "number": ""}, {"phone_type": "Home", "number": None}], None),
        ([{"phone_type": "Mobile"}], None),
        (["0412 345 678", None, 7], None),
        ([], None),
        (None, None),
    ],
)
def test_normalize_phone(numbers: list | None, expected: str | None) -> None:
    assert normalize_phone(numbers, "AU") == expected


def test_normalize_phone_reads_local_numbers_in_the_clinic_country() -> None:
    numbers = [{"phone_type": "Mobile", "number": "07911 123456"}]
    assert normalize_phone(numbers, "GB") == "+447911123456"
    assert normalize_phone(numbers, "gb") == "+447911123456"
    assert normalize_phone(numbers, "AU") is None


def test_patient_row_columns() -> None:
    row = patient_row(patient(), default_region="AU")
    assert row == {
        "id": PATIENT_ID,
        "first_name": "Zoë",
        "last_name": "O'Connor",
        "name": "Zoë O'Connor",
        "email": "zoe.oconnor@example.test",
        "phone": "+61412555019",
        "phone_valid": True,
        "created_at": datetime(2023, 2, 11, 23, 4, 51, tzinfo=UTC),
        "updated_at": datetime(2025, 5, 30, 6, 12, 9, tzinfo=UTC),
        "archived_at": None,
        "deleted_at": None,
        "merged_at": None,
        "raw": patient(),
    }


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"label": "Dr Zoë O'Connor"}, "Dr Zoë O'Connor"),
        ({"label": "  ", "preferred_first_name": "Zee"}, "Zee O'Connor"),
        ({"last_name": None}, "Zoë"),
        ({"first_name": "", "last_name": " Nguyễn "}, "Nguyễn"),
        ({"first_name": None, "last_name": None}, None),
    ],
)
def test_patient_name(fields: dict, name: str | None) -> None:
    assert patient_row(patient(**fields), default_region="AU")["name"] == name


@pytest.mark.parametrize(("email", "expected"), [("  MIXED@Case.Test ", "mixed@case.test"), ("", None), ("  ", None)])
def test_patient_email_is_stripped_and_lowered(email: str, expected: str | None) -> None:
    assert patient_row(patient(email=email), default_region="AU")["email"] == expected


def test_patient_without_valid_phone() -> None:
    row = patient_row(patient(patient_phone_numbers=None), default_region="AU")
    assert row["phone"] is None
    assert row["phone_valid"] is False


def test_retired_patient_times_and_empty_strings() -> None:
    row = patient_row(
        patient(archived_at="2025-01-02T03:04:05Z", merged_at="", deleted_at="2025-02-03T04:05:06Z"),
        default_region="AU",
    )
    assert row["archived_at"] == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert row["merged_at"] is None
    assert row["deleted_at"] == datetime(2025, 2, 3, 4, 5, 6, tzinfo=UTC)


def test_ids_are_strings_even_when_cliniko_sends_numbers() -> None:
    row = patient_row(patient(id=9223372036854775807), default_region="AU")
    assert row["id"] == "9223372036854775807"


@pytest.mark.parametrize("bad_id", [None, "", True])
def test_record_without_id_is_refused(bad_id: object) -> None:
    with pytest.raises(ClinikoAPIError, match="without an id"):
        patient_row(patient(id=bad_id), default_region="AU")


def test_updated_at_falls_back_to_created_at() -> None:
    row = appointment_type_row({"id": "5", "name": "Initial", "created_at": "2024-01-01T00:00:00Z", "updated_at": ""})
    assert row["updated_at"] == datetime(2024, 1, 1, tzinfo=UTC)


def test_record_without_any_time_is_refused() -> None:
    with pytest.raises(ClinikoAPIError, match="without updated_at"):
        practitioner_row({"id": "5", "first_name": "Ana", "updated_at": None})


def test_individual_appointment_row() -> None:
    row = individual_appointment_row(appointment())
    expected_raw = {k: v for k, v in appointment().items() if k not in {"notes", "cancellation_note", "telehealth_url"}}
    assert row == {
        "id": "1402277310938471530",
        "patient_id": PATIENT_ID,
        "practitioner_id": "1386590001234567001",
        "appointment_type_id": "1386590001234567101",
        "business_id": "1386590001234567201",
        "starts_at": datetime(2025, 6, 2, 23, 30, tzinfo=UTC),
        "ends_at": datetime(2025, 6, 3, 0, 15, tzinfo=UTC),
        "did_not_arrive": False,
        "cancelled_at": None,
        "archived_at": None,
        "deleted_at": None,
        "created_at": datetime(2025, 5, 20, 1, 2, 3, tzinfo=UTC),
        "updated_at": datetime(2025, 6, 3, 0, 20, 41, tzinfo=UTC),
        "raw": expected_raw,
    }


@pytest.mark.parametrize(("value", "expected"), [(True, True), (False, False), (None, False), ("true", False)])
def test_did_not_arrive_is_a_strict_flag(value: object, expected: bool) -> None:
    assert individual_appointment_row(appointment(did_not_arrive=value))["did_not_arrive"] is expected
    assert attendee_row(appointment(did_not_arrive=value))["did_not_arrive"] is expected


def test_cancelled_appointment_without_links() -> None:
    row = individual_appointment_row(appointment(cancelled_at="2025-06-01T00:00:00Z", patient=None, business={}))
    assert row["cancelled_at"] == datetime(2025, 6, 1, tzinfo=UTC)
    assert row["patient_id"] is None
    assert row["business_id"] is None


def test_group_appointment_row() -> None:
    raw = {
        "id": "1011",
        "starts_at": "2025-06-04T07:00:00Z",
        "ends_at": "2025-06-04T08:00:00Z",
        "max_attendees": 12,
        "patient_ids": ["1", "2"],
        "practitioner": link("practitioners/7"),
        "appointment_type": link("appointment_types/8"),
        "business": link("businesses/9"),
        "notes": "bring mats",
        "archived_at": None,
        "deleted_at": "2025-06-05T00:00:00Z",
        "created_at": "2025-05-01T00:00:00Z",
        "updated_at": "2025-06-05T00:00:00Z",
    }
    row = group_appointment_row(raw)
    assert row["max_attendees"] == 12
    assert (row["practitioner_id"], row["appointment_type_id"], row["business_id"]) == ("7", "8", "9")
    assert row["deleted_at"] == datetime(2025, 6, 5, tzinfo=UTC)
    assert "notes" not in row["raw"]
    assert row["raw"]["patient_ids"] == ["1", "2"]
    assert group_appointment_row({**raw, "max_attendees": None})["max_attendees"] is None
    assert group_appointment_row({**raw, "max_attendees": "12"})["max_attendees"] is None


@pytest.mark.parametrize(
    ("links", "group_id"),
    [
        ({"booking": link("bookings/1011"), "appointment": link("group_appointments/2")}, "1011"),
        ({"group_appointment": link("group_appointments/1012")}, "1012"),
        ({"appointment": link("group_appointments/1013")}, "1013"),
        ({}, None),
    ],
)
def test_attendee_group_link(links: dict, group_id: str | None) -> None:
    raw = {"id": "55", "patient": link("patients/3"), "updated_at": "2025-06-05T00:00:00Z", **links}
    row = attendee_row(raw)
    assert row["group_appointment_id"] == group_id
    assert row["patient_id"] == "3"


@pytest.mark.parametrize(("arrived", "expected"), [(True, True), (False, False), (None, None), ("yes", None)])
def test_attendee_arrived_keeps_unknown(arrived: object, expected: bool | None) -> None:
    row = attendee_row({"id": "55", "arrived": arrived, "updated_at": "2025-06-05T00:00:00Z"})
    assert row["arrived"] is expected


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ({"display_name": "Dr Ana", "label": "Ana Silva", "first_name": "Ana", "last_name": "Silva"}, "Dr Ana"),
        ({"display_name": "", "label": "Ana Silva"}, "Ana Silva"),
        ({"first_name": "Ana", "last_name": "Silva"}, "Ana Silva"),
        ({}, None),
    ],
)
def test_practitioner_name(raw: dict, name: str | None) -> None:
    assert practitioner_row({"id": "7", "updated_at": "2025-01-01T00:00:00Z", **raw})["name"] == name


def test_appointment_type_row() -> None:
    raw = {"id": 8, "name": " Initial consult ", "created_at": "2024-01-01T00:00Z", "updated_at": "2024-02-01T00:00Z"}
    row = appointment_type_row(raw)
    assert (row["id"], row["name"], row["archived_at"]) == ("8", "Initial consult", None)


SENSITIVE_PATIENT_FIELDS = {
    "notes": "anxious about needles",
    "appointment_notes": "prefers mornings",
    "medical_alerts": {"links": {"self": f"{BASE}/patients/1/medical_alerts"}},
    "custom_fields": {"sections": []},
    "occupation": "pilot",
    "emergency_contact": "Mum 0400 000 000",
    "emergency_contact_phone": "0400 000 000",
    "medicare": "2123 45670 1",
    "medicare_reference_number": "1",
    "dva_card_number": "NX123456",
    "health_fund_name": "Example Fund",
    "health_fund_member_number": "998877",
    "healthfund_provider": "Example Fund",
    "insurance_policy_number": "P-1",
    "private_insurance": "yes",
}


def test_deny_list_drops_clinical_text_and_identifiers_from_patients() -> None:
    raw = patient(**SENSITIVE_PATIENT_FIELDS, advanced_directive_on_file=True, unknown_new_field=1)
    kept = patient_row(raw, default_region="AU")["raw"]
    assert not set(SENSITIVE_PATIENT_FIELDS) & set(kept)
    # Unknown fields survive; "advanced" is not a DVA identifier.
    assert kept["unknown_new_field"] == 1
    assert kept["advanced_directive_on_file"] is True
    assert kept["patient_phone_numbers"] == raw["patient_phone_numbers"]
    # The caller's dict is left as it was.
    assert raw["notes"] == "anxious about needles"


@pytest.mark.parametrize(
    ("resource", "build"),
    [
        ("individual_appointments", individual_appointment_row),
        ("attendees", attendee_row),
        ("group_appointments", group_appointment_row),
    ],
)
def test_deny_list_drops_appointment_free_text(resource: str, build: object) -> None:
    raw = appointment(booking_ip_address="203.0.113.9")
    assert callable(build)
    kept = build(raw)["raw"]
    for key in ("notes", "cancellation_note", "telehealth_url", "booking_ip_address"):
        assert key not in kept, (resource, key)
    assert kept["patient"] == raw["patient"]


def test_scrub_is_top_level_and_per_resource() -> None:
    raw = {"id": "1", "notes": "x", "nested": {"notes": "kept"}}
    assert scrub("patients", raw) == {"id": "1", "nested": {"notes": "kept"}}
    assert scrub("practitioners", {"id": "1", "occupation": "physio"}) == {"id": "1", "occupation": "physio"}


def test_scrub_refuses_unknown_resource() -> None:
    with pytest.raises(ValueError, match="no deny-list"):
        scrub("invoices", {"id": "1"})


def test_every_mirrored_resource_has_a_deny_list() -> None:
    mirrored = {"patients", "individual_appointments", "group_appointments", "attendees", "appointment_types"}
    assert mirrored | {"practitioners"} <= set(DENY_LIST)
    assert {"notes", "appointment_notes", "medical_alerts", "custom_fields", "occupation"} <= DENY_LIST["patients"]
    assert {"notes", "cancellation_note", "telehealth_url"} <= DENY_LIST["individual_appointments"]


def test_scrub_verdict_cache_is_bounded() -> None:
    for index in range(records._VERDICT_CACHE_LIMIT + 50):
        scrub("businesses", {f"field_{index}": index})
    assert len(records._verdicts["businesses"]) <= records._VERDICT_CACHE_LIMIT
    assert scrub("businesses", {"zz_medicare_extra": 1, "zz_plain": 2}) == {"zz_plain": 2}
